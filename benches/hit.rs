//! Latency of one call, sequential, against the machine's Redis on
//! loopback: the hit path of a `#[cached]` fn against a hand-written
//! cache-aside hit (GET + postcard decode on a redis-rs multiplexed
//! connection: the floor), a naive deadpool checkout per call, and the
//! `cached` crate's Redis-backed `#[concurrent_cached]`; the miss path
//! against a hand-written miss; and key building.
//!
//! `cargo bench --bench hit` then `python3 benches/report.py hit miss key`

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use cache_aside::Cache;
use common::{
    RAW_KEY, cache_aside_flight, cache_aside_kept_flight, cache_aside_local_flight,
    cached_crate_flight, deadpool_hit, flight, raw_connection, raw_hit, redis_url,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let url = redis_url();
    let (cache, mut raw, pool) = rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(&url)
            .prefix("cache-aside-bench")
            .build()
            .expect("cache");
        let raw = raw_connection().await;
        let pool = deadpool_redis::Config::from_url(url.as_str())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("pool");
        (cache, raw, pool)
    });
    // Warm every contender: each has the same record stored under its key.
    let raw_key = RAW_KEY;
    rt.block_on(async {
        assert_eq!(cache_aside_flight(&cache, 7).await, flight(7));
        assert_eq!(cached_crate_flight(7).await, Ok(flight(7)));
        assert_eq!(raw_hit(&mut raw, raw_key).await, flight(7));
        assert_eq!(deadpool_hit(&pool, raw_key).await, flight(7));
    });

    let mut g = c.benchmark_group("hit");
    g.bench_function("raw GET + decode (floor)", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = raw.clone();
            async move { black_box(raw_hit(&mut conn, raw_key).await) }
        })
    });
    g.bench_function("cache-aside #[cached]", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cache_aside_flight(&cache, 7).await) })
    });
    g.bench_function("cached 4.1 #[concurrent_cached]", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cached_crate_flight(7).await) })
    });
    g.bench_function("deadpool pool.get() + GET", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(deadpool_hit(&pool, raw_key).await) })
    });
    g.finish();

    // The local tier against a Redis hit, by hand (same key, same record).
    let local = rt.block_on(async {
        let local = Cache::builder()
            .redis_url(&url)
            .prefix("cache-aside-bench")
            .local(Duration::from_secs(3600))
            .build()
            .expect("cache");
        local.ping().await.expect("Redis answers");
        for _ in 0..3 {
            assert_eq!(
                local_flight(&local, Duration::from_secs(3600)).await,
                flight(7)
            );
        }
        assert_eq!(local.stats().total.local_hits, 2, "served locally");
        local
    });
    let mut g = c.benchmark_group("local");
    g.bench_function("cache-aside Redis hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(local_flight(&local, Duration::ZERO).await) })
    });
    g.bench_function("cache-aside local hit (L1)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(local_flight(&local, Duration::from_secs(3600)).await) })
    });
    rt.block_on(async {
        for _ in 0..2 {
            assert_eq!(cache_aside_local_flight(&local, 7).await, flight(7));
        }
    });
    g.bench_function("cache-aside #[cached(local)] hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cache_aside_local_flight(&local, 7).await) })
    });
    rt.block_on(async {
        for _ in 0..2 {
            assert_eq!(cache_aside_kept_flight(&local, 7).await, flight(7));
        }
    });
    g.bench_function("cache-aside #[cached(local, keep_decoded)] hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cache_aside_kept_flight(&local, 7).await) })
    });
    g.finish();

    // Misses: a fresh key per iteration, also across runs (keys live 60 s).
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let n = AtomicI64::new(run.saturating_mul(1000));
    let mut g = c.benchmark_group("miss");
    g.bench_function("raw GET + SET PX", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = raw.clone();
            let i = n.fetch_add(1, Relaxed);
            async move {
                let key = format!("cache-aside-bench:raw:miss:{i}");
                let got: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .expect("GET");
                assert!(got.is_none());
                let bytes = postcard::to_allocvec(&flight(i)).expect("encode");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(bytes)
                    .arg("PX")
                    .arg(60_000)
                    .query_async(&mut conn)
                    .await
                    .expect("SET");
            }
        })
    });
    g.bench_function("cache-aside (lease + store)", |b| {
        b.to_async(&rt).iter(|| {
            let i = n.fetch_add(1, Relaxed);
            let cache = &cache;
            async move {
                cache
                    .namespace("bench_miss")
                    .ttl(Duration::from_secs(60))
                    .get_or_compute(&i, async move { flight(i) })
                    .await
            }
        })
    });
    g.bench_function("cache-aside lock = false (claim, no waiting)", |b| {
        b.to_async(&rt).iter(|| {
            let i = n.fetch_add(1, Relaxed);
            let cache = &cache;
            async move {
                cache
                    .namespace("bench_miss")
                    .ttl(Duration::from_secs(60))
                    .lock(false)
                    .get_or_compute(&i, async move { flight(i) })
                    .await
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("key");
    g.bench_function(BenchmarkId::new("args", 0), |b| {
        b.iter(|| cache.entry_key("flight_count", black_box(&())))
    });
    g.bench_function(BenchmarkId::new("args", 2), |b| {
        b.iter(|| cache.entry_key("flight_count", black_box(&("FRA", "JFK"))))
    });
    g.bench_function(BenchmarkId::new("args", 6), |b| {
        b.iter(|| {
            cache.entry_key(
                "flight_search",
                black_box(&("FRA", "JFK", 2026_u16, Some("LH"), 3_u8, true)),
            )
        })
    });
    g.finish();
}

/// One flight through the by-hand API; `local` zero: Redis only.
async fn local_flight(cache: &Cache, local: Duration) -> common::Flight {
    cache
        .namespace("bench_local")
        .ttl(Duration::from_secs(3600))
        .local(local)
        .get_or_compute(&7i64, async { flight(7) })
        .await
}

criterion_group! {
    name = group;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = benches
}
criterion_main!(group);
