//! Throughput of cache hits with 1, 16 and 64 concurrent tasks, against the
//! machine's Redis on loopback: raw redis-rs GET + decode on one
//! multiplexed connection (the reference), cache-aside's `#[cached]`, the
//! `cached` crate's `#[concurrent_cached]` and a naive deadpool checkout per
//! call. Writes a table into BENCHMARKS.md.
//!
//! `cargo bench --bench throughput` (`THROUGHPUT_SECONDS`: each contender's
//! time over all rounds, default 6; `THROUGHPUT_ROUNDS`, default 15: one
//! round's ratio moves by about ±9%, a median of 15 by about ±3%)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_aside::Cache;
use common::{
    RAW_KEY, cache_aside_flight, cached_crate_flight, deadpool_hit, raw_connection, raw_hit,
    redis_url, write_section,
};

#[derive(Clone, Copy, Debug)]
enum Contender {
    Raw,
    RawClone,
    RawMget,
    CacheAside,
    CachedCrate,
    Deadpool,
}

const ALL: [Contender; 6] = [
    Contender::Raw,
    Contender::RawClone,
    Contender::RawMget,
    Contender::CacheAside,
    Contender::CachedCrate,
    Contender::Deadpool,
];

#[derive(Clone)]
struct Clients {
    cache: Cache,
    raw: redis::aio::MultiplexedConnection,
    pool: deadpool_redis::Pool,
}

async fn one(who: Contender, c: &mut Clients) {
    let f = match who {
        Contender::Raw => raw_hit(&mut c.raw, RAW_KEY).await,
        // What a shared client handle does: clone the connection per call.
        Contender::RawClone => raw_hit(&mut c.raw.clone(), RAW_KEY).await,
        Contender::RawMget => {
            // The protocol floor of cache-aside's read: entry and generation in one MGET.
            let (bytes, _g): (Vec<u8>, Option<Vec<u8>>) = redis::cmd("MGET")
                .arg(RAW_KEY)
                .arg("cache-aside-bench:{bench_flight}:gen")
                .query_async(&mut c.raw)
                .await
                .expect("MGET");
            postcard::from_bytes(&bytes).expect("decode")
        }
        Contender::CacheAside => cache_aside_flight(&c.cache, 7).await,
        Contender::CachedCrate => cached_crate_flight(7).await.expect("hit"),
        Contender::Deadpool => deadpool_hit(&c.pool, RAW_KEY).await,
    };
    assert_eq!(f.id, 1_000_007);
}

async fn ops_per_second(who: Contender, tasks: usize, seconds: f64, clients: &Clients) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut handles = vec![];
    for _ in 0..tasks {
        let (stop, count, mut c) = (stop.clone(), count.clone(), clients.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Relaxed) {
                one(who, &mut c).await;
                n += 1;
            }
            count.fetch_add(n, Relaxed);
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Relaxed);
    for h in handles {
        h.await.expect("task");
    }
    count.load(Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// One contender's cell: median ops/s, the median of its ratios to the raw
/// runs around it, and those raw runs.
struct Sample {
    ops: f64,
    ratio: f64,
    raw: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `rounds` rounds of `raw, a, raw, b, raw, ...` (the order of the
/// others rotating per round), each run `cell` seconds. The machine's speed
/// drifts over seconds (2 cores shared with Redis and other services), so a
/// contender is compared with the raw runs right before and after it.
async fn sandwiched(
    others: &[Contender],
    tasks: usize,
    rounds: usize,
    cell: f64,
    clients: &Clients,
    verbose: bool,
) -> Vec<Sample> {
    let mut ops = vec![vec![]; others.len()];
    let mut ratios = vec![vec![]; others.len()];
    let mut raws = vec![vec![]; others.len()];
    for round in 0..rounds {
        let mut before = ops_per_second(Contender::Raw, tasks, cell, clients).await;
        for k in 0..others.len() {
            let i = (k + round) % others.len();
            let o = ops_per_second(others[i], tasks, cell, clients).await;
            let after = ops_per_second(Contender::Raw, tasks, cell, clients).await;
            if verbose {
                eprintln!(
                    "round {round}: raw {before:.0}, {:?} {o:.0}, raw {after:.0}",
                    others[i]
                );
            }
            ops[i].push(o);
            ratios[i].push(o / ((before + after) / 2.0));
            raws[i].extend([before, after]);
            before = after;
        }
    }
    ops.into_iter()
        .zip(ratios)
        .zip(raws)
        .map(|((o, r), raw)| Sample {
            ops: median(o),
            ratio: median(r),
            raw,
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `cargo bench -- --list`
    }
    let seconds: f64 = std::env::var("THROUGHPUT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6.0);
    let url = redis_url();
    // `CACHE_ASIDE_CONNECTIONS`: kept connections (default: the cache's default).
    let mut builder = Cache::builder();
    if let Some(n) = std::env::var("CACHE_ASIDE_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        builder = builder.connections(n);
    }
    let clients = Clients {
        cache: builder
            .redis_url(&url)
            .prefix("cache-aside-bench")
            .build()
            .expect("cache"),
        raw: raw_connection().await,
        pool: deadpool_redis::Config::from_url(url.as_str())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("pool"),
    };
    let mut warm = clients.clone();
    for who in ALL {
        one(who, &mut warm).await;
    }
    let rounds: usize = std::env::var("THROUGHPUT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    // `THROUGHPUT_ONLY=CacheAside,CachedCrate` (contenders' names): 64 tasks of
    // only those (and raw), each round printed. Nothing is written.
    if let Ok(only) = std::env::var("THROUGHPUT_ONLY") {
        let picked: Vec<Contender> = only
            .split(',')
            .filter_map(|name| ALL.iter().copied().find(|w| format!("{w:?}") == name))
            .filter(|w| !matches!(w, Contender::Raw))
            .collect();
        let cell = seconds / rounds as f64;
        for (who, s) in picked
            .iter()
            .zip(sandwiched(&picked, 64, rounds, cell, &clients, true).await)
        {
            eprintln!(
                "64 tasks {who:?}: {:.0} ops/s, {:.3}x raw (medians)",
                s.ops, s.ratio
            );
        }
        return;
    }
    let others = &ALL[1..];
    let cell = seconds / rounds as f64;
    let mut rows = String::new();
    for tasks in [1, 16, 64] {
        let results = sandwiched(others, tasks, rounds, cell, &clients, false).await;
        let raw_ops = median(results.iter().flat_map(|s| s.raw.iter().copied()).collect());
        let mut cells = vec![format!("{raw_ops:.0} (1.00)")];
        for (who, s) in others.iter().zip(&results) {
            eprintln!(
                "{tasks:>3} tasks {who:?}: {:.0} ops/s, {:.3}x raw (medians of {rounds})",
                s.ops, s.ratio
            );
            cells.push(format!("{:.0} ({:.2})", s.ops, s.ratio));
        }
        rows.push_str(&format!("| {tasks} | {} |\n", cells.join(" | ")));
    }
    let table = format!(
        "Cache hits of the same ~200-byte record, 2 tokio workers. {rounds} rounds; in each, \
         every contender runs {cell:.1} s between two {cell:.1} s runs of raw redis-rs, in an \
         order that rotates per round. Per cell: the median ops/s and, in parentheses, the \
         median over rounds of the contender's ops/s divided by the mean of the two raw runs \
         around it (the raw column: the median of all raw runs).\n\n\
         ```sh\ncargo bench --bench throughput\n```\n\n\
         | tasks | raw redis-rs GET + decode | raw, connection cloned per call | raw MGET (entry + generation: a hit without views) + decode | cache-aside `#[cached]` | cached 4.1 `#[concurrent_cached]` | deadpool `pool.get()` + GET |\n\
         |---|---|---|---|---|---|---|\n{rows}"
    );
    println!("{table}");
    write_section("throughput", &table).expect("write BENCHMARKS.md");
}
