//! `POST /flights` under load: the flight and its audit row are one
//! database transaction, run in a `cache_aside::transaction` scope. Writers
//! POST flights on one route while readers hammer its count through two
//! instances of the service (two caches on the same Redis, as two
//! replicas): every read that starts after a POST returned must count that
//! POST's flight. SQLite always; PostgreSQL when `DATABASE_URL` is set.
//!
//! The control runs do the same without the scope and must find stale reads
//! (a read between the invalidation and the COMMIT stores the old count,
//! served until the next write): so the checker can fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use cache_aside::Cache;
use flight_db::demo::call;
use flight_db::{Dataset, Db, Queries, Seeding, WriteScope, api};
use serde_json::json;

/// The API tests' dataset: a database they generated is used as it is.
const DATA: Dataset = Dataset {
    flights: 20_000,
    seed: 7,
};
/// A route of the API tests' database that no other test writes to.
const FROM: &str = "LHR";
const TO: &str = "JFK";
const WRITERS: usize = 2;
/// Per instance.
const READERS: usize = 4;
/// A run lasts this long, and until it has `MIN_POSTS` POSTs and
/// `MIN_READS` reads (a COMMIT can wait a second for a busy disk), but
/// never more than `MAX_RUN`.
const RUN: Duration = Duration::from_millis(1500);
const MIN_POSTS: u64 = 20;
const MIN_READS: u64 = 200;
const MAX_RUN: Duration = Duration::from_secs(15);

/// One run at a time: the runs share the route, and two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// A small generator for the pauses (no dependency for it).
fn random(below: u64) -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, SeqCst);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x ^ (x >> 33)) % below
}

/// The second replica: its own cache on the same Redis. Without Redis the
/// fallback memory caches would not see each other, so then both replicas
/// share the first one's.
async fn replica(first: &Cache, prefix: &str) -> Cache {
    let second = Cache::builder()
        .redis_url(redis_url())
        .prefix(prefix)
        .default_ttl(Duration::from_secs(300))
        .build();
    match second {
        Ok(c) if c.ping().await.is_ok() => c,
        _ => {
            eprintln!("no Redis: both replicas share one memory cache");
            first.clone()
        }
    }
}

struct Outcome {
    posts: u64,
    reads: u64,
    stale: u64,
}

/// The slowest call, in ms.
fn slowest(ms: &mut f64, took: f64) {
    *ms = ms.max(took);
}

/// `WRITERS` writers POST flights on the route; `READERS` readers per
/// replica GET its count, for `RUN`. A read must count at least the flights
/// there were when the run started plus the POSTs that had returned when
/// the read started (each POST adds one direct flight, and a flight from
/// FROM to TO is no leg of a FROM-TO connection).
async fn check(url: &str, scope: WriteScope) -> Outcome {
    let _turn = ONE_AT_A_TIME.lock().await;
    let db = &open(url).await;
    let name = match scope {
        WriteScope::Transaction => "consistency",
        WriteScope::Unscoped => "consistency-unscoped",
    };
    let prefix = unique_prefix(name);
    let a = flight_db::cache(&redis_url(), &prefix).await;
    let b = replica(&a, &prefix).await;
    let apps: [Router; 2] = [a, b].map(|cache| {
        api::router_with(
            Queries {
                db: db.clone(),
                cache,
            },
            scope,
        )
    });
    let q = Queries {
        db: db.clone(),
        cache: flight_db::cache(&redis_url(), &prefix).await,
    };
    let base = cache_aside::bypass(q.count_flights(FROM, TO))
        .await
        .unwrap()
        .count;
    let uri = format!("/flights/count?from={FROM}&to={TO}");
    // POSTs that returned: the floor every later read must reach.
    let returned = Arc::new(AtomicU64::new(0));
    let read = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = vec![];
    for w in 0..WRITERS {
        let (app, returned, done) = (apps[w % 2].clone(), returned.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            let (mut n, mut max_ms) = (0u64, 0f64);
            while !done.load(SeqCst) {
                let body = json!({
                    "airline": "BA",
                    "from": FROM,
                    "to": TO,
                    "departure": "2026-12-01T10:00:00Z",
                });
                let (s, v, ms) = call(&app, "POST", "/flights", Some(body)).await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
                slowest(&mut max_ms, ms);
                returned.fetch_add(1, SeqCst);
                n += 1;
                tokio::time::sleep(Duration::from_millis(random(10))).await;
            }
            (n, max_ms)
        }));
    }
    let mut readers = vec![];
    for r in 0..2 * READERS {
        let (app, returned, read, done, uri) = (
            apps[r % 2].clone(),
            returned.clone(),
            read.clone(),
            done.clone(),
            uri.clone(),
        );
        readers.push(tokio::spawn(async move {
            let (mut reads, mut stale, mut max_ms) = (0u64, 0u64, 0f64);
            while !done.load(SeqCst) {
                let floor = base + returned.load(SeqCst) as i64;
                let (s, v, ms) = call(&app, "GET", &uri, None).await;
                assert_eq!(s, StatusCode::OK, "{v}");
                slowest(&mut max_ms, ms);
                let count = v["count"].as_i64().expect("a count");
                reads += 1;
                read.fetch_add(1, SeqCst);
                if count < floor {
                    stale += 1;
                }
                tokio::time::sleep(Duration::from_millis(random(2))).await;
            }
            (reads, stale, max_ms)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(RUN).await;
    while (returned.load(SeqCst) < MIN_POSTS || read.load(SeqCst) < MIN_READS)
        && started.elapsed() < MAX_RUN
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, SeqCst);
    let (mut posts, mut post_ms) = (0, 0f64);
    for w in writers {
        let (n, ms) = w.await.unwrap();
        posts += n;
        slowest(&mut post_ms, ms);
    }
    let (mut reads, mut stale, mut read_ms) = (0, 0, 0f64);
    for r in readers {
        let (n, s, ms) = r.await.unwrap();
        reads += n;
        stale += s;
        slowest(&mut read_ms, ms);
    }
    let after = cache_aside::bypass(q.count_flights(FROM, TO))
        .await
        .unwrap()
        .count;
    assert!(after >= base + posts as i64, "every POST added its flight");
    eprintln!(
        "{:?} {scope:?}: {posts} POSTs, {reads} reads checked, {stale} stale \
         ({:.1} s; slowest POST {post_ms:.0} ms, read {read_ms:.0} ms)",
        db.kind,
        started.elapsed().as_secs_f64()
    );
    assert!(posts >= MIN_POSTS, "the writers wrote: {posts}");
    assert!(reads >= MIN_READS, "the readers read: {reads}");
    Outcome {
        posts,
        reads,
        stale,
    }
}

/// The tests own their databases: other data in them is replaced.
async fn open(url: &str) -> Db {
    let (db, _) = Db::open(url, DATA, Seeding::UnlessSame, false)
        .await
        .expect("the test database");
    db
}

/// A SQLite database in cargo's temporary directory for tests
/// (`target/tmp`): generated by the first run, kept for the next ones.
fn sqlite() -> String {
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("flightdb-consistency.sqlite3");
    format!("sqlite://{}?mode=rwc", path.display())
}

fn postgres() -> Option<String> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set: the PostgreSQL load check is not run here");
        return None;
    };
    assert!(
        url.starts_with("postgres"),
        "DATABASE_URL must be postgres://..."
    );
    Some(url)
}

fn no_stale_read(o: &Outcome) {
    assert_eq!(
        o.stale, 0,
        "{} stale reads out of {} ({} POSTs)",
        o.stale, o.reads, o.posts
    );
}

fn some_stale_reads(o: &Outcome) {
    assert!(
        o.stale > 0,
        "the checker found nothing in {} reads ({} POSTs)",
        o.reads,
        o.posts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_no_read_after_a_post_misses_its_flight() {
    no_stale_read(&check(&sqlite(), WriteScope::Transaction).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_without_the_scope_the_checker_finds_stale_reads() {
    some_stale_reads(&check(&sqlite(), WriteScope::Unscoped).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_no_read_after_a_post_misses_its_flight() {
    if let Some(url) = postgres() {
        no_stale_read(&check(&url, WriteScope::Transaction).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_the_scope_the_checker_finds_stale_reads() {
    if let Some(url) = postgres() {
        some_stale_reads(&check(&url, WriteScope::Unscoped).await);
    }
}
