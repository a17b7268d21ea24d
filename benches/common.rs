//! What the benches share: the ~200-byte flight record, the Redis URL, and
//! the contenders' clients.
#![allow(dead_code)]

use std::time::Duration;

use cache_aside::{Cache, cached};
use cached::AsyncRedisCache;
use cached::macros::concurrent_cached;
use serde::{Deserialize, Serialize};

/// A flight as the example returns it (about 200 bytes as JSON, 138 as postcard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flight {
    pub id: i64,
    pub airline: String,
    pub airline_name: String,
    pub flight_no: String,
    pub from: String,
    pub from_name: String,
    pub to: String,
    pub to_name: String,
    pub departure: String,
    pub arrival: String,
    pub seats: u16,
    pub booked: u16,
}

pub fn flight(i: i64) -> Flight {
    Flight {
        id: 1_000_000 + i,
        airline: "LH".into(),
        airline_name: "Lufthansa".into(),
        flight_no: format!("LH{}", 400 + i % 600),
        from: "FRA".into(),
        from_name: "Frankfurt am Main Airport".into(),
        to: "JFK".into(),
        to_name: "John F Kennedy International Airport".into(),
        departure: "2026-12-01T10:05:00Z".into(),
        arrival: "2026-12-01T18:40:00Z".into(),
        seats: 293,
        booked: (i % 293) as u16,
    }
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The floor: a hand-written cache-aside hit on a redis-rs multiplexed
/// connection, GET + postcard decode.
pub async fn raw_hit(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Flight {
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .expect("GET");
    postcard::from_bytes(&bytes).expect("decode")
}

/// Where the hand-written contenders keep the record.
pub const RAW_KEY: &str = "cache-aside-bench:raw:flight:7";

/// A redis-rs multiplexed connection with the record stored under
/// [`RAW_KEY`], as a hand-written cache-aside would have it after a miss.
pub async fn raw_connection() -> redis::aio::MultiplexedConnection {
    let mut raw = redis::Client::open(redis_url().as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let bytes = postcard::to_allocvec(&flight(7)).expect("encode");
    let _: () = redis::cmd("SET")
        .arg(RAW_KEY)
        .arg(bytes)
        .query_async(&mut raw)
        .await
        .expect("SET");
    raw
}

/// A naive deadpool-redis checkout per call, then GET + decode.
pub async fn deadpool_hit(pool: &deadpool_redis::Pool, key: &str) -> Flight {
    let mut conn = pool.get().await.expect("checkout");
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    postcard::from_bytes(&bytes).expect("decode")
}

/// cache-aside's contender: a `#[cached]` fn.
#[cached(ns = "bench_flight", ttl = "1h", cache = cache, skip(cache))]
pub async fn cache_aside_flight(cache: &Cache, id: i64) -> Flight {
    flight(id)
}

/// The same with the local tier: what a local hit costs users.
#[cached(ns = "bench_flight_local", ttl = "1h", local = "1h", cache = cache, skip(cache))]
pub async fn cache_aside_local_flight(cache: &Cache, id: i64) -> Flight {
    flight(id)
}

/// The same, keeping the decoded record in the local tier.
#[cached(ns = "bench_flight_kept", ttl = "1h", local = "1h", keep_decoded, cache = cache, skip(cache))]
pub async fn cache_aside_kept_flight(cache: &Cache, id: i64) -> Flight {
    flight(id)
}

/// The `cached` crate's Redis-backed `#[concurrent_cached]`.
#[concurrent_cached(
    ty = "cached::AsyncRedisCache<i64, Flight>",
    create = r##"{
        AsyncRedisCache::builder("cache_aside_bench_cached_crate")
            .ttl(Duration::from_secs(3600))
            .connection_string(&redis_url())
            .build()
            .await
            .expect("the cached crate's Redis cache")
    }"##,
    map_error = r##"|e| format!("{e:?}")"##
)]
pub async fn cached_crate_flight(id: i64) -> Result<Flight, String> {
    Ok(flight(id))
}

/// Replaces (or appends) the section between `<!-- {name} -->` markers.
pub fn write_section(name: &str, body: &str) -> std::io::Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = (
        format!("<!-- {name} begin -->"),
        format!("<!-- {name} end -->"),
    );
    let section = format!("{begin}\n{body}{end}");
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    std::fs::write(path, new)
}

/// An interleaved bench's set-up: `None` when cargo only lists or tests
/// the bench target (nothing to measure); else the count from `$var`
/// (default `default`) and a 2-worker tokio runtime.
pub fn interleaved(var: &str, default: usize) -> Option<(usize, tokio::runtime::Runtime)> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return None;
    }
    let n = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    Some((n, rt))
}

/// The median of `v` (sorted in place).
pub fn p50(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Microseconds, for tables.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
