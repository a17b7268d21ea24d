//! The HTTP API, driven in process (tower `oneshot`) against real Redis and
//! a real database: SQLite always, PostgreSQL when `DATABASE_URL` is set
//! (`.ci/run` sets it; the test resets the flight tables in that database).

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use flight_db::demo::call;
use flight_db::{Dataset, Db, Queries, Seeding, api};
use serde_json::{Value, json};
use sqlx::Row;

const DATA: Dataset = Dataset {
    flights: 20_000,
    seed: 7,
};

/// The tests own their databases: other data in them is replaced.
async fn open(url: &str) -> Db {
    let (db, _) = Db::open(url, DATA, Seeding::UnlessSame, false)
        .await
        .expect("the test database");
    db
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("flightdb-test-{}-{nanos}-{name}", std::process::id())
}

async fn app(db: &Db, name: &str) -> (Router, Queries) {
    let cache = flight_db::cache(&redis_url(), &unique_prefix(name)).await;
    let q = Queries {
        db: db.clone(),
        cache,
    };
    (api::router(q.clone()), q)
}

async fn sqlite() -> Db {
    let path = std::env::temp_dir().join(format!("flightdb-test-{}.sqlite3", std::process::id()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    open(&url).await
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (s, v, _) = call(app, "GET", uri, None).await;
    (s, v)
}

async fn audit_rows(db: &Db) -> i64 {
    sqlx::query("SELECT count(*) FROM flight_audit")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0)
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

/// Every scenario, on one database.
async fn scenarios(db: Db) {
    airports_are_cached_and_unknown_codes_do_not_reach_the_database(&db).await;
    a_new_flight_invalidates_exactly_what_it_changes(&db).await;
    bad_input_gets_a_json_4xx_and_writes_nothing(&db).await;
    renaming_an_airport_writes_through_that_airport_only(&db).await;
    a_rename_recomputes_the_outer_entries_that_show_it(&db).await;
    no_cache_bypasses_and_warming_refreshes(&db).await;
    stats_and_metrics(&db).await;
    the_tutorial_demo_behaves_as_the_story_says(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_redis() {
    scenarios(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_redis() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set: PostgreSQL scenarios not run here (.ci/run sets it)");
        return;
    };
    assert!(
        url.starts_with("postgres"),
        "DATABASE_URL must be postgres://..."
    );
    let db = open(&url).await;
    assert_eq!(db.kind, flight_db::db::Kind::Postgres);
    scenarios(db).await;
}

async fn airports_are_cached_and_unknown_codes_do_not_reach_the_database(db: &Db) {
    let (app, q) = app(db, "airports").await;
    let (s, v) = get(&app, "/airports/FRA").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["city"], "Frankfurt am Main");
    assert_eq!(v["from_cache"], false);
    let (_, v) = get(&app, "/airports/fra").await;
    assert_eq!(
        (v["iata"].as_str(), v["from_cache"].as_bool()),
        (Some("FRA"), Some(true))
    );
    for _ in 0..5 {
        let (s, v) = get(&app, "/airports/ZZZ").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(error_of(&v).contains("unknown airport \"ZZZ\""), "{v}");
    }
    let st = q.cache.stats().namespaces["airport"];
    assert_eq!(
        st.misses, 2,
        "FRA once, ZZZ once: the other 5 calls were hits"
    );
    assert!(
        st.local_hits >= 3,
        "repeated lookups came from the local tier: {st:?}"
    );
    let (s, v) = get(&app, "/airports/FRANKFURT").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&v).contains("not an IATA airport code"), "{v}");
}

async fn a_new_flight_invalidates_exactly_what_it_changes(db: &Db) {
    let (app, _) = app(db, "invalidate").await;
    let count = "/flights/count?from=FRA&to=JFK";
    let top = "/routes/top?from=FRA&limit=5";
    let stats = "/airlines/LH/stats";
    let other_airline = "/airlines/BA/stats";
    let (_, c0) = get(&app, count).await;
    assert_eq!(c0["from_cache"], false);
    assert_eq!(
        c0["count"].as_i64(),
        Some(c0["direct"].as_i64().unwrap() + c0["one_stop"].as_i64().unwrap())
    );
    let (_, t0) = get(&app, top).await;
    let (_, s0) = get(&app, stats).await;
    get(&app, other_airline).await;
    let (_, ttl0) = get(&app, "/flights/count/ttl-only?from=FRA&to=JFK").await;
    for uri in [count, top, stats, other_airline, "/airports/FRA"] {
        assert_eq!(get(&app, uri).await.1["from_cache"], true, "{uri}");
    }
    let (s, v, _) = call(
        &app,
        "POST",
        "/flights",
        Some(json!({"airline": "LH", "from": "FRA", "to": "JFK", "departure": "2026-12-01T10:00:00Z"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_i64().expect("the flight's id");
    // Its audit row, written in the same transaction.
    let audit =
        sqlx::query("SELECT flight_id, action, detail FROM flight_audit WHERE audit_id = $1")
            .bind(v["audit_id"].as_i64().expect("the audit row's id"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(audit.get::<i64, _>("flight_id"), id);
    assert_eq!(audit.get::<String, _>("action"), "flight added");
    let detail: String = audit.get("detail");
    assert!(
        detail.contains("FRA-JFK departing 2026-12-01T10:00:00Z, 180 seats"),
        "{detail}"
    );
    let (_, c1) = get(&app, count).await;
    assert_eq!(
        (c1["from_cache"].as_bool(), c1["count"].as_i64()),
        (Some(false), Some(c0["count"].as_i64().unwrap() + 1))
    );
    let (_, t1) = get(&app, top).await;
    assert_eq!(t1["from_cache"], false);
    assert_ne!(t0["routes"], Value::Null);
    let (_, s1) = get(&app, stats).await;
    assert_eq!(s1["from_cache"], false);
    assert_eq!(
        s1["flights"].as_i64(),
        Some(s0["flights"].as_i64().unwrap() + 1)
    );
    assert_eq!(
        get(&app, "/airports/FRA").await.1["from_cache"],
        true,
        "airports did not change"
    );
    assert_eq!(
        get(&app, other_airline).await.1["from_cache"],
        true,
        "another airline's statistics did not change (its tag)"
    );
    // The TTL-only namespace is not invalidated: it serves the old count until its TTL.
    let (_, ttl1) = get(&app, "/flights/count/ttl-only?from=FRA&to=JFK").await;
    assert_eq!(
        (ttl1["from_cache"].as_bool(), &ttl1["count"]),
        (Some(true), &ttl0["count"])
    );
}

async fn bad_input_gets_a_json_4xx_and_writes_nothing(db: &Db) {
    let (app, q) = app(db, "bad_input").await;
    let before = cache_aside::bypass(q.count_flights("FRA", "JFK"))
        .await
        .unwrap();
    let audit_before = audit_rows(db).await;
    let cases: Vec<(&str, &str, Option<Value>, StatusCode, &str)> = vec![
        (
            "GET",
            "/flights/count?from=FRA&to=FRA",
            None,
            StatusCode::BAD_REQUEST,
            "same airport",
        ),
        (
            "GET",
            "/flights/count?from=FRA&to=ZZZ",
            None,
            StatusCode::NOT_FOUND,
            "to: unknown airport",
        ),
        (
            "GET",
            "/flights/count?from=FRA",
            None,
            StatusCode::BAD_REQUEST,
            "to",
        ),
        (
            "GET",
            "/routes/top?from=FRA&limit=-3",
            None,
            StatusCode::BAD_REQUEST,
            "limit must be 1 to 100",
        ),
        (
            "GET",
            "/routes/top?from=FRA&limit=ten",
            None,
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "GET",
            "/airlines/XYZ/stats",
            None,
            StatusCode::BAD_REQUEST,
            "IATA airline code",
        ),
        (
            "GET",
            "/airlines/0Z/stats",
            None,
            StatusCode::NOT_FOUND,
            "unknown airline",
        ),
        (
            "POST",
            "/flights",
            Some(
                json!({"airline": "LH", "from": "FRA", "to": "FRA", "departure": "2026-12-01T10:00:00Z"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "same airport",
        ),
        (
            "POST",
            "/flights",
            Some(
                json!({"airline": "LH", "from": "FRA", "to": "ZZZ", "departure": "2026-12-01T10:00:00Z"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "to: unknown airport",
        ),
        (
            "POST",
            "/flights",
            Some(
                json!({"airline": "0Z", "from": "FRA", "to": "JFK", "departure": "2026-12-01T10:00:00Z"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown airline",
        ),
        (
            "POST",
            "/flights",
            Some(json!({"airline": "LH", "from": "FRA", "to": "JFK", "departure": "tomorrow"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "departure",
        ),
        (
            "POST",
            "/flights",
            Some(
                json!({"airline": "LH", "from": "FRA", "to": "JFK", "departure": "2026-12-01T10:00:00Z", "seats": -1}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "seats",
        ),
        (
            "POST",
            "/flights",
            Some(json!({"airline": "LH", "from": "FRA"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field",
        ),
        (
            "PATCH",
            "/airports/ZZZ",
            Some(json!({"name": "Nowhere"})),
            StatusCode::NOT_FOUND,
            "unknown airport",
        ),
        (
            "PATCH",
            "/airports/FRA",
            Some(json!({"name": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
    ];
    for (method, uri, body, want, says) in cases {
        let (s, v, _) = call(&app, method, uri, body).await;
        assert_eq!(s, want, "{method} {uri}: {v}");
        assert!(
            error_of(&v).contains(says),
            "{method} {uri}: {v} should say {says:?}"
        );
    }
    // Malformed JSON is a 400 too.
    let req = axum::http::Request::post("/flights")
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{\"airline\": \"LH\","))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        cache_aside::bypass(q.count_flights("FRA", "JFK"))
            .await
            .unwrap(),
        before,
        "nothing was written"
    );
    assert_eq!(audit_rows(db).await, audit_before, "nothing was audited");
}

/// `Cache-Control: no-cache` neither reads nor writes the cache
/// (`cache_aside::bypass`); warming recomputes and stores (`refresh`), also
/// over entries that are there.
async fn no_cache_bypasses_and_warming_refreshes(db: &Db) {
    let (app, q) = app(db, "no_cache").await;
    let uri = "/flights/count?from=FRA&to=LHR";
    let no_cache = || {
        let req = axum::http::Request::get(uri)
            .header("cache-control", "no-cache")
            .body(axum::body::Body::empty())
            .unwrap();
        tower::ServiceExt::oneshot(app.clone(), req)
    };
    let resp = no_cache().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["from_cache"], false);
    assert_eq!(
        get(&app, uri).await.1["from_cache"],
        false,
        "no-cache stored nothing"
    );
    assert_eq!(get(&app, uri).await.1["from_cache"], true);
    assert_eq!(no_cache().await.unwrap().status(), StatusCode::OK);
    let counts = |q: &Queries| q.cache.stats().namespaces["flight_count"];
    let c = counts(&q);
    assert_eq!((c.skipped, c.misses, c.hits, c.stores), (2, 1, 1, 1));

    assert_eq!(q.warm(3).await.unwrap(), 3);
    let c = counts(&q);
    assert_eq!(
        (c.misses, c.stores, c.forced_refreshes),
        (4, 4, 0),
        "three routes warmed"
    );
    assert_eq!(q.warm(3).await.unwrap(), 3);
    let c = counts(&q);
    assert_eq!(
        (c.misses, c.stores, c.forced_refreshes),
        (7, 7, 3),
        "warming again recomputes the live entries"
    );
}

async fn renaming_an_airport_writes_through_that_airport_only(db: &Db) {
    let (app, _) = app(db, "rename").await;
    let (_, before) = get(&app, "/airports/MUC").await;
    get(&app, "/airports/MUC").await;
    get(&app, "/airports/LHR").await;
    // Top routes show their destinations' names through the cached
    // `airport` (nested): from FRA, MUC is among them.
    let top = "/routes/top?from=FRA&limit=50";
    let (_, t0) = get(&app, top).await;
    let shows_muc = |t: &Value| {
        t["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["to"] == "MUC")
    };
    assert!(shows_muc(&t0), "{t0}");
    assert_eq!(get(&app, top).await.1["from_cache"], true);
    let (s, v, _) = call(
        &app,
        "PATCH",
        "/airports/MUC",
        Some(json!({"name": "Munich Franz Josef Strauss"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["name"], "Munich Franz Josef Strauss",
        "the row UPDATE .. RETURNING gave"
    );
    // Write-through: the new row is the entry, the next read a hit.
    let (_, after) = get(&app, "/airports/MUC").await;
    assert_eq!(after["name"], "Munich Franz Josef Strauss");
    assert_eq!(after["from_cache"], true);
    assert_eq!(get(&app, "/airports/LHR").await.1["from_cache"], true);
    // The top routes that show MUC follow the rename, without an
    // invalidation of their own.
    let (_, t1) = get(&app, top).await;
    assert_eq!(t1["from_cache"], false, "an outer entry that read MUC");
    let muc = t1["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["to"] == "MUC")
        .cloned();
    assert_eq!(muc.unwrap()["name"], "Munich Franz Josef Strauss");
    assert_eq!(get(&app, top).await.1["from_cache"], true, "stored again");
    let (s, _, _) = call(
        &app,
        "PATCH",
        "/airports/XXX",
        Some(json!({"name": "Nowhere"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Put the name back for the other scenarios and later runs.
    call(
        &app,
        "PATCH",
        "/airports/MUC",
        Some(json!({"name": before["name"]})),
    )
    .await;
}

/// Nested caching, measured: the top routes of 100 origins (10
/// destinations each, their names through the cached `airport`); renaming
/// one destination recomputes every list that shows it, and some that do
/// not (their airports share a key bucket with it: see `cache/track.rs`).
async fn a_rename_recomputes_the_outer_entries_that_show_it(db: &Db) {
    let (_, q) = app(db, "nested").await;
    let origins: Vec<String> = sqlx::query(
        "SELECT s.iata FROM flight f JOIN airport s ON s.airport_id = f.src
          GROUP BY s.iata ORDER BY count(*) DESC, s.iata LIMIT 100",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    for o in &origins {
        q.top_routes(o, 10).await.unwrap();
    }
    let renamed = "JFK";
    let before = q.airport(renamed).await.unwrap().expect("JFK").name;
    q.rename_airport(renamed, "Idlewild").await.unwrap();
    let (mut showing, mut needless, mut stale) = (0, 0, 0);
    for o in &origins {
        let (routes, status) = cache_aside::with_status(q.top_routes(o, 10)).await;
        let routes = routes.unwrap();
        let shows = routes.iter().find(|r| r.to == renamed);
        match (shows, status) {
            (Some(r), _) if r.name != "Idlewild" => stale += 1,
            (Some(_), cache_aside::Status::Miss) => showing += 1,
            (Some(_), _) => stale += 1,
            (None, cache_aside::Status::Miss) => needless += 1,
            (None, _) => {}
        }
    }
    q.rename_airport(renamed, &before).await.unwrap();
    eprintln!(
        "renaming {renamed}: {showing} of {} top-routes entries show it and were recomputed; \
         {needless} others recomputed needlessly (a key bucket shared with it); {stale} stale",
        origins.len()
    );
    assert_eq!(stale, 0);
    assert!(showing > 0, "some lists show {renamed}");
}

async fn stats_and_metrics(db: &Db) {
    let (app, _) = app(db, "stats").await;
    get(&app, "/airports/FRA").await;
    get(&app, "/airports/FRA").await;
    let (s, v) = get(&app, "/cache/stats").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["namespaces"]["airport"]["hits"], 1);
    assert_eq!(v["namespaces"]["airport"]["misses"], 1);
    assert_eq!(v["total"]["hit_ratio"], 0.5);
    let req = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("# TYPE cache_aside_hits_total counter"),
        "{text}"
    );
    // One recorder per process: the other tests' caches count there too.
    let hits = text
        .lines()
        .find_map(|l| l.strip_prefix("cache_aside_hits_total{namespace=\"airport\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(hits.is_some_and(|h| h >= 1), "{text}");
    assert!(
        text.contains("# TYPE cache_aside_compute_seconds summary"),
        "{text}"
    );
}

async fn the_tutorial_demo_behaves_as_the_story_says(db: &Db) {
    let cache = flight_db::cache(&redis_url(), &unique_prefix("demo")).await;
    let ok = flight_db::demo::run(Queries {
        db: db.clone(),
        cache,
    })
    .await
    .unwrap();
    assert!(ok, "the demo's steps (see the table above)");
}

#[tokio::test]
async fn without_redis_the_service_falls_back_to_memory() {
    let cache = flight_db::cache("redis://127.0.0.1:1", "flightdb-test-fallback").await;
    let started = std::time::Instant::now();
    let v: u32 = cache.namespace("x").get_or_compute(&1, async { 5 }).await;
    assert_eq!(v, 5);
    let (v, s) =
        cache_aside::with_status(cache.namespace("x").get_or_compute(&1, async { 6u32 })).await;
    assert_eq!(
        (v, s),
        (5, cache_aside::Status::Hit),
        "the memory backend caches"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}
