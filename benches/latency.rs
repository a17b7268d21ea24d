//! Hit latency, interleaved: one hand-written GET + decode, then one cache-aside
//! `#[cached]` hit, then one `cached` 4.1 hit, and again, on 2 tokio
//! workers. Every call is timed; the table gives p50 and p99 per contender
//! and the ratio of p50s. Interleaving puts each contender in the same
//! moments of the machine's noise (a sequential criterion group does not).
//! Writes a table into BENCHMARKS.md.
//!
//! `cargo bench --bench latency` (`LATENCY_CALLS`, default 20000 per contender)

mod common;

use std::time::{Duration, Instant};

use cache_aside::Cache;
use common::{
    RAW_KEY, cache_aside_flight, cached_crate_flight, flight, raw_connection, raw_hit, redis_url,
    write_section,
};

fn pct(v: &[Duration], p: f64) -> Duration {
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let calls: usize = std::env::var("LATENCY_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let samples = rt.block_on(async {
        let url = redis_url();
        let cache = Cache::builder()
            .redis_url(&url)
            .prefix("cache-aside-bench")
            .build()
            .expect("cache");
        let mut raw = raw_connection().await;
        let raw_key = RAW_KEY;
        for _ in 0..1000 {
            assert_eq!(raw_hit(&mut raw, raw_key).await, flight(7));
            assert_eq!(cache_aside_flight(&cache, 7).await, flight(7));
            assert_eq!(cached_crate_flight(7).await, Ok(flight(7)));
        }
        let mut s: [Vec<Duration>; 3] = [vec![], vec![], vec![]];
        for _ in 0..calls {
            let t = Instant::now();
            std::hint::black_box(raw_hit(&mut raw, raw_key).await);
            s[0].push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(cache_aside_flight(&cache, 7).await);
            s[1].push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(cached_crate_flight(7).await.expect("hit"));
            s[2].push(t.elapsed());
        }
        assert!(
            cache.stats().total.hits as usize >= calls,
            "every cache-aside call hit"
        );
        s
    });
    let names = [
        "raw GET + decode (floor)",
        "cache-aside `#[cached]`",
        "cached 4.1 `#[concurrent_cached]`",
    ];
    let mut rows = String::new();
    let mut base = None;
    for (name, mut v) in names.iter().zip(samples) {
        v.sort_unstable();
        let (p50, p99) = (pct(&v, 0.5), pct(&v, 0.99));
        let b = *base.get_or_insert(p50);
        rows.push_str(&format!(
            "| {name} | {:.1} µs | {:.1} µs | {:.3} |\n",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            p50.as_secs_f64() / b.as_secs_f64()
        ));
    }
    let table = format!(
        "{calls} calls per contender, interleaved one by one, 2 tokio workers, the machine's \
         Redis on loopback.\n\n```sh\ncargo bench --bench latency\n```\n\n\
         | hit | p50 | p99 | p50 ratio |\n|---|---|---|---|\n{rows}"
    );
    println!("{table}");
    write_section("latency", &table).expect("write BENCHMARKS.md");
}
