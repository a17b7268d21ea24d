//! A write's cost, interleaved: a hand-written `SET` of an entry-sized
//! value, then a `#[invalidates(ns, key(..))]` key invalidation, then a
//! `#[cache_put]` of the same value (write-through: the writer's claim,
//! then its store), and again. The write bodies do nothing, so the times
//! are the cache's own. Writes a table into BENCHMARKS.md.
//!
//! `cargo bench --bench write` (`WRITE_CALLS`, default 5000 per contender)

mod common;

use std::time::{Duration, Instant};

use cache_aside::{Cache, cache_put, cached, invalidates};
use common::{Flight, flight, raw_connection, redis_url, write_section};
use redis::AsyncCommands;

#[cached(ns = "bench_write", ttl = "1h", cache = cache, skip(cache))]
async fn read(cache: &Cache, id: i64) -> Flight {
    flight(id)
}

#[invalidates(ns = "bench_write", key(id), cache = cache)]
async fn invalidate(cache: &Cache, id: i64) {}

#[cache_put(ns = "bench_write", key(id), ttl = "1h", cache = cache)]
async fn put(cache: &Cache, id: i64) -> Flight {
    flight(id)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let calls: usize = std::env::var("WRITE_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut s = rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(redis_url())
            .prefix("cache-aside-bench-write")
            .build()
            .expect("cache");
        let mut raw = raw_connection().await;
        let bytes = postcard::to_allocvec(&flight(7)).expect("encode");
        // The reader has run (its schema is known), and both keys exist.
        for id in [1, 2] {
            read(&cache, id).await;
        }
        for _ in 0..500 {
            let _: () = raw
                .set("cache-aside-bench-write:raw", &bytes)
                .await
                .expect("SET");
            invalidate(&cache, 2).await;
            put(&cache, 1).await;
        }
        let mut s: [Vec<Duration>; 3] = [vec![], vec![], vec![]];
        for _ in 0..calls {
            let t = Instant::now();
            let _: () = raw
                .set("cache-aside-bench-write:raw", &bytes)
                .await
                .expect("SET");
            s[0].push(t.elapsed());
            let t = Instant::now();
            invalidate(&cache, 2).await;
            s[1].push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(put(&cache, 1).await);
            s[2].push(t.elapsed());
        }
        let t = cache.stats().total;
        assert!(t.puts >= calls as u64, "every put stored: {}", t.puts);
        s
    });
    let names = [
        "hand-written `SET`",
        "`#[invalidates(ns, key(..))]`",
        "`#[cache_put]` (claim + store)",
    ];
    let p50: Vec<Duration> = s.iter_mut().map(|v| pct(v, 0.5)).collect();
    let mut body = format!(
        "{calls} calls per contender, interleaved, 2 tokio workers, loopback Redis.\n\n\
         | write | p50 (µs) | p99 (µs) | p50 / `SET` |\n|---|---|---|---|\n"
    );
    for (i, name) in names.iter().enumerate() {
        let p99 = pct(&mut s[i], 0.99);
        body.push_str(&format!(
            "| {name} | {:.1} | {:.1} | {:.2} |\n",
            us(p50[i]),
            us(p99),
            p50[i].as_secs_f64() / p50[0].as_secs_f64()
        ));
    }
    body.push_str(&format!(
        "\nA put costs {:.2}x a key invalidation (p50), and the next read is a hit instead of a miss.\n\n\
         ```\ncargo bench --bench write\n```\n",
        p50[2].as_secs_f64() / p50[1].as_secs_f64()
    ));
    print!("{body}");
    write_section("write", &body).expect("BENCHMARKS.md");
}
