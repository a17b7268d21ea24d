//! How long another process's local (L1) tier keeps serving an entry after
//! an invalidation returns: two `Cache` instances on the machine's Redis,
//! each with its own connections (as two processes would have), the reader
//! with the local tier on. Per round the reader holds the entry locally,
//! the writer invalidates it (key and namespace invalidations alternately),
//! and a reader task polls without sleeping until its call misses. Writes a
//! table into BENCHMARKS.md.
//!
//! `cargo bench --bench propagation` (`PROPAGATION_ROUNDS`, default 500)

mod common;

use std::time::{Duration, Instant};

use cache_aside::{Cache, Status, with_status};
use common::{redis_url, write_section};

async fn read(cache: &Cache, key: u32, value: u32) -> (u32, Status) {
    with_status(
        cache
            .namespace("propagation")
            .ttl(Duration::from_secs(60))
            .get_or_compute(&key, async move { value }),
    )
    .await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `cargo bench -- --list`
    }
    let rounds: u32 = std::env::var("PROPAGATION_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (after_return, after_start) = rt.block_on(async {
        let prefix = format!("cache-aside-bench-propagation-{}", std::process::id());
        let reader = Cache::builder()
            .redis_url(redis_url())
            .prefix(&prefix)
            .local(Duration::from_secs(60))
            .build()
            .expect("cache");
        let writer = Cache::builder()
            .redis_url(redis_url())
            .prefix(&prefix)
            .build()
            .expect("cache");
        reader.ping().await.expect("Redis answers");
        writer.ping().await.expect("Redis answers");
        let (mut after_return, mut after_start) = (vec![], vec![]);
        for round in 0..rounds {
            let key = round;
            assert_eq!(read(&reader, key, 1).await, (1, Status::Miss));
            assert_eq!(read(&reader, key, 2).await, (1, Status::Hit));
            let local_before = reader.stats().total.local_hits;
            assert_eq!(read(&reader, key, 2).await, (1, Status::Hit));
            assert_eq!(reader.stats().total.local_hits, local_before + 1);
            let poller = {
                let reader = reader.clone();
                tokio::spawn(async move {
                    loop {
                        let (v, s) = read(&reader, key, 3).await;
                        if s != Status::Hit {
                            assert_eq!(v, 3);
                            return Instant::now();
                        }
                        tokio::task::yield_now().await;
                    }
                })
            };
            let started = Instant::now();
            if round % 2 == 0 {
                writer.namespace("propagation").invalidate_key(&key).await;
            } else {
                writer.namespace("propagation").invalidate().await;
            }
            let returned = Instant::now();
            let evicted = poller.await.expect("poller");
            after_return.push(evicted.saturating_duration_since(returned));
            after_start.push(evicted.saturating_duration_since(started));
        }
        (after_return, after_start)
    });
    let mut a = after_return;
    let mut s = after_start;
    a.sort_unstable();
    s.sort_unstable();
    let row = |name: &str, v: &[Duration]| {
        format!(
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs |\n",
            percentile(v, 0.5).as_secs_f64() * 1e6,
            percentile(v, 0.99).as_secs_f64() * 1e6,
            v[v.len() - 1].as_secs_f64() * 1e6,
        )
    };
    let table = format!(
        "{rounds} rounds; a second `Cache` instance (its own connections) holds the entry in its \
         local tier and polls without sleeping until it misses.\n\n\
         ```sh\ncargo bench --bench propagation\n```\n\n\
         | local entry served until | p50 | p99 | max |\n|---|---|---|---|\n{}{}",
        row("... after `invalidate` returned", &a),
        row("... after `invalidate` was called", &s),
    );
    println!("{table}");
    write_section("propagation", &table).expect("write BENCHMARKS.md");
}
