//! The tutorial story, end to end, through the real HTTP API (in process, no
//! socket): GET (miss) -> GET (hit) -> POST -> GET (fresh, miss) -> GET
//! (hit); then a write inside a database transaction, as `POST /flights`
//! runs it but with reads between the write and its COMMIT: they see the
//! old count and store nothing, and after the COMMIT the new count is a
//! miss, then a hit; then the TTL-only variant: stale after the POST until
//! its TTL passes, then fresh. Every step checks what the story says and
//! the demo fails if one does not hold.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::api::{NewFlightRequest, router};
use crate::data;
use crate::queries::{NewFlight, Queries};

const FROM: &str = "FRA";
const TO: &str = "JFK";

/// Sends one request to the router; returns status, JSON body and the
/// client-side time in ms.
pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value, f64) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("a valid request");
    let started = Instant::now();
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ms,
    )
}

struct Step {
    what: &'static str,
    expect: &'static str,
    /// `None` for a step that is not an HTTP request.
    status: Option<StatusCode>,
    body: Value,
    ms: f64,
    ok: bool,
}

/// The steps so far, in order.
#[derive(Default)]
struct Steps(Vec<Step>);

impl Steps {
    /// An HTTP request and whether it behaved as the story says.
    fn http(
        &mut self,
        what: &'static str,
        expect: &'static str,
        (status, body, ms): (StatusCode, Value, f64),
        ok: bool,
    ) {
        self.0.push(Step {
            what,
            expect,
            status: Some(status),
            body,
            ms,
            ok,
        });
    }

    /// A step that is not an HTTP request; it behaved if it returned.
    fn done(&mut self, what: &'static str, expect: &'static str, ms: f64) {
        self.0.push(Step {
            what,
            expect,
            status: None,
            body: Value::Null,
            ms,
            ok: true,
        });
    }
}

fn count(v: &Value) -> i64 {
    v["count"].as_i64().unwrap_or(-1)
}

fn from_cache(v: &Value) -> Option<bool> {
    v["from_cache"].as_bool()
}

fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

/// The `flight_count` reads a transaction scope's fence kept from storing.
fn fenced(queries: &Queries) -> u64 {
    queries
        .cache
        .stats()
        .namespaces
        .get("flight_count")
        .map_or(0, |c| c.fenced)
}

/// Runs the story; prints the table; `Ok(true)` when every step behaved.
pub async fn run(queries: Queries) -> Result<bool, Box<dyn std::error::Error>> {
    let app = router(queries.clone());
    // A clean start: the story begins with a cold cache.
    queries.cache.namespace("flight_count").invalidate().await;
    queries
        .cache
        .namespace("flight_count_ttl")
        .invalidate()
        .await;
    let count_uri = format!("/flights/count?from={FROM}&to={TO}");
    let ttl_uri = format!("/flights/count/ttl-only?from={FROM}&to={TO}");
    let post = serde_json::to_value(NewFlightRequest {
        airline: "LH".into(),
        from: FROM.into(),
        to: TO.into(),
        departure: "2026-12-01T10:00:00Z".into(),
        seats: Some(293),
    })?;
    // The flight the transaction step writes (POST /flights validates the
    // same fields into one of these).
    let flight = NewFlight {
        airline_id: queries
            .airline_id("LH")
            .await?
            .ok_or("airline LH is not in the database")?,
        airline: "LH".into(),
        src: queries.airport(FROM).await?.ok_or("no airport FRA")?,
        dst: queries.airport(TO).await?.ok_or("no airport JFK")?,
        departure: data::parse_iso("2026-12-01T12:00:00Z").ok_or("a valid time")?,
        seats: 293,
    };
    let mut steps = Steps::default();

    // Invalidation on write.
    let r = call(&app, "GET", &count_uri, None).await;
    let c0 = count(&r.1);
    let ok = r.0 == StatusCode::OK && from_cache(&r.1) == Some(false);
    steps.http("GET /flights/count", "miss: runs the query", r, ok);
    let r = call(&app, "GET", &count_uri, None).await;
    let ok = from_cache(&r.1) == Some(true) && count(&r.1) == c0;
    steps.http("GET /flights/count", "hit: same count", r, ok);
    let r = call(&app, "POST", "/flights", Some(post.clone())).await;
    let ok = r.0 == StatusCode::CREATED;
    steps.http("POST /flights", "201, invalidates", r, ok);
    let r = call(&app, "GET", &count_uri, None).await;
    let ok = from_cache(&r.1) == Some(false) && count(&r.1) == c0 + 1;
    steps.http("GET /flights/count", "miss: count + 1", r, ok);
    let r = call(&app, "GET", &count_uri, None).await;
    let ok = from_cache(&r.1) == Some(true) && count(&r.1) == c0 + 1;
    steps.http("GET /flights/count", "hit: count + 1", r, ok);

    // The write inside a database transaction, as POST /flights runs it
    // (in a transaction scope), with reads between the write and COMMIT.
    let c1 = c0 + 1;
    let fenced_before = fenced(&queries);
    let (write_ms, during, committing) = cache_aside::transaction(async {
        let started = Instant::now();
        let mut tx = queries.db.pool.begin().await?;
        let id = queries.add_flight(&mut tx, &flight).await?;
        let write_ms = ms_since(started);
        let during = [
            call(&app, "GET", &count_uri, None).await,
            call(&app, "GET", &count_uri, None).await,
        ];
        let committing = Instant::now();
        queries.audit_flight(&mut tx, id, &flight).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>((write_ms, during, committing))
    })
    .await?;
    // The scope has ended: the time includes its second invalidation.
    let commit_ms = ms_since(committing);
    let [r1, r2] = during;
    steps.done(
        "BEGIN; add_flight(&mut tx, ..)",
        "in scope: fences the counts",
        write_ms,
    );
    let ok = from_cache(&r1.1) == Some(false) && count(&r1.1) == c1;
    steps.http(
        "GET /flights/count",
        "before COMMIT: old, not stored",
        r1,
        ok,
    );
    // Without the scope the read above would have stored the old count,
    // and this one (and every one until the next write) would serve it.
    let ok = from_cache(&r2.1) == Some(false)
        && count(&r2.1) == c1
        && fenced(&queries) == fenced_before + 2;
    steps.http(
        "GET /flights/count",
        "miss again: nothing was stored",
        r2,
        ok,
    );
    steps.done(
        "INSERT audit; COMMIT",
        "scope ends: invalidates again",
        commit_ms,
    );
    let r = call(&app, "GET", &count_uri, None).await;
    let ok = from_cache(&r.1) == Some(false) && count(&r.1) == c1 + 1;
    steps.http("GET /flights/count", "miss: count + 1 (committed)", r, ok);
    let r = call(&app, "GET", &count_uri, None).await;
    let ok = from_cache(&r.1) == Some(true) && count(&r.1) == c1 + 1;
    steps.http("GET /flights/count", "hit: count + 1", r, ok);

    // TTL only: no invalidation, stale until the TTL passes.
    let r = call(&app, "GET", &ttl_uri, None).await;
    let t0 = count(&r.1);
    let ok = from_cache(&r.1) == Some(false);
    steps.http("GET /flights/count/ttl-only", "miss", r, ok);
    let r = call(&app, "POST", "/flights", Some(post)).await;
    let ok = r.0 == StatusCode::CREATED;
    steps.http("POST /flights", "201 (TTL-only: no invalidation)", r, ok);
    let r = call(&app, "GET", &ttl_uri, None).await;
    let ok = from_cache(&r.1) == Some(true) && count(&r.1) == t0;
    steps.http("GET /flights/count/ttl-only", "hit: STALE old count", r, ok);
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let r = call(&app, "GET", &ttl_uri, None).await;
    let ok = from_cache(&r.1) == Some(false) && count(&r.1) == t0 + 1;
    steps.http(
        "(5 s later) GET .../ttl-only",
        "miss: TTL passed, fresh",
        r,
        ok,
    );

    println!("\nroute {FROM} -> {TO} (count = direct flights + one-stop connections)\n");
    println!(
        "{:<32} {:<32} {:>6} {:>10} {:>8} {:>9}  ok",
        "step", "the story says", "status", "from_cache", "count", "ms"
    );
    for s in &steps.0 {
        let fc = from_cache(&s.body).map_or("-".to_string(), |b| b.to_string());
        let n = s.body["count"]
            .as_i64()
            .or(s.body["id"].as_i64().map(|_| -1))
            .map_or(
                "-".into(),
                |c| if c < 0 { "-".into() } else { c.to_string() },
            );
        println!(
            "{:<32} {:<32} {:>6} {:>10} {:>8} {:>9.2}  {}",
            s.what,
            s.expect,
            s.status.map_or("-".into(), |c| c.as_u16().to_string()),
            fc,
            n,
            s.ms,
            if s.ok { "yes" } else { "NO" }
        );
    }
    let all = steps.0.iter().all(|s| s.ok);
    let stats = queries.cache.stats();
    println!(
        "\ncache: {} hits, {} misses, {} fenced, hit ratio {:.2}; {}",
        stats.total.hits,
        stats.total.misses,
        stats.total.fenced,
        stats.total.hit_ratio(),
        if all {
            "every step behaved as the story says"
        } else {
            "SOME STEPS DID NOT BEHAVE AS THE STORY SAYS"
        }
    );
    Ok(all)
}
