//! A fixed number of cache hits, for counting what one hit costs with
//! valgrind (allocations with DHAT, instructions with callgrind): run it
//! twice with different counts and divide the difference, so that start-up
//! and connection set-up cancel out. `benches/per_hit.sh` does that.
//!
//! `HITS=n MODE=redis|local|local-fn|kept-fn|raw cargo bench --bench per_hit`

mod common;

use std::time::Duration;

use cache_aside::Cache;
use common::{
    RAW_KEY, cache_aside_flight, cache_aside_kept_flight, cache_aside_local_flight, flight,
    raw_connection, raw_hit, redis_url,
};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `cargo bench -- --list`
    }
    let hits: u64 = std::env::var("HITS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mode = std::env::var("MODE").unwrap_or_else(|_| "redis".into());
    // One worker thread: the count does not depend on scheduling.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let url = redis_url();
        let cache = Cache::builder()
            .redis_url(&url)
            .prefix("cache-aside-bench")
            .connections(1)
            .op_timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("cache");
        let mut raw = raw_connection().await;
        let raw_key = RAW_KEY;
        let local = Duration::from_secs(if mode == "local" { 3600 } else { 0 });
        let ns = cache
            .namespace("bench_per_hit")
            .ttl(Duration::from_secs(3600))
            .local(local);
        let call = || ns.get_or_compute(&7i64, async { flight(7) });
        // Warm: connect, learn the generation, fill the local tier.
        for _ in 0..3 {
            assert_eq!(call().await, flight(7));
        }
        assert_eq!(cache_aside_flight(&cache, 7).await, flight(7));
        for _ in 0..3 {
            assert_eq!(cache_aside_local_flight(&cache, 7).await, flight(7));
            assert_eq!(cache_aside_kept_flight(&cache, 7).await, flight(7));
        }
        for _ in 0..hits {
            let f = match mode.as_str() {
                "raw" => raw_hit(&mut raw, raw_key).await,
                // What users write: a `#[cached]` fn.
                "redis" => cache_aside_flight(&cache, 7).await,
                // A `#[cached(local = ..)]` fn's local hit.
                "local-fn" => cache_aside_local_flight(&cache, 7).await,
                // The same with `keep_decoded`.
                "kept-fn" => cache_aside_kept_flight(&cache, 7).await,
                _ => call().await,
            };
            std::hint::black_box(f);
        }
        let st = cache.stats().total;
        if mode != "raw" {
            assert!(st.hits >= hits, "every call was a hit: {st:?}");
        }
    });
}
