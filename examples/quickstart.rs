//! The smallest tour of cache-aside: a miss, a hit, an invalidation, and the key
//! in Redis. Run with `cargo run --example quickstart` (Redis at
//! `$REDIS_URL`, default redis://127.0.0.1:6379; without Redis it falls back
//! to the in-process backend and says so).

use std::time::{Duration, Instant};

use cache_aside::{Cache, Status, cached, invalidates, with_status};

/// Pretend this is a slow `SELECT count(*)`.
#[cached(ns = "flight_count", ttl = "5m")]
async fn count_flights(from: &str, to: &str) -> Result<i64, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(FLIGHTS.load(std::sync::atomic::Ordering::SeqCst) + (from.len() + to.len()) as i64)
}

static FLIGHTS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1234);

#[invalidates("flight_count")]
async fn add_flight(_from: &str, _to: &str) -> Result<(), std::io::Error> {
    FLIGHTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prefix = "quickstart";
    let mut cache = Cache::builder()
        .prefix(prefix)
        .default_ttl(Duration::from_secs(300))
        .build()?;
    // Probe Redis once so the example can say what it runs against.
    if let Err(e) = cache.ping().await {
        println!("{e}: using the in-process memory backend");
        cache = Cache::builder().memory().prefix(prefix).build()?;
    }
    cache_aside::install(cache.clone());
    // Start from a clean namespace so the first call is a miss.
    cache.namespace("flight_count").invalidate().await;

    println!("{:<28} {:>6} {:>8} {:>9}", "step", "count", "status", "ms");
    for step in ["GET FRA->JFK", "GET FRA->JFK again"] {
        show(step, "FRA", "JFK").await?;
    }
    add_flight("FRA", "JFK").await?;
    println!("{:<28}", "POST flight (invalidates)");
    show("GET FRA->JFK after POST", "FRA", "JFK").await?;
    show("GET FRA->JFK again", "FRA", "JFK").await?;

    let key = cache.entry_key("flight_count", &("FRA", "JFK"))?;
    println!("\nstored under: {key}");
    println!("look at it:   redis-cli --scan --pattern '{prefix}:*'");
    let stats = cache.stats();
    println!(
        "stats: {} hits, {} misses, hit ratio {:.2}",
        stats.total.hits,
        stats.total.misses,
        stats.total.hit_ratio()
    );
    Ok(())
}

async fn show(step: &str, from: &str, to: &str) -> Result<Status, std::io::Error> {
    let started = Instant::now();
    let (count, status) = with_status(count_flights(from, to)).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "{step:<28} {:>6} {:>8} {ms:>9.2}",
        count?,
        format!("{status:?}")
    );
    Ok(status)
}
