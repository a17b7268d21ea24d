//! Throughput of cache hits with 1, 16 and 64 concurrent tasks, against the
//! machine's Redis on loopback: raw redis-rs GET + decode on one
//! multiplexed connection (the reference), cachet's `#[cached]`, the
//! `cached` crate's `#[concurrent_cached]` and a naive deadpool checkout per
//! call. Writes a table into BENCHMARKS.md.
//!
//! `cargo bench --bench throughput` (`THROUGHPUT_SECONDS`, default 5 per cell)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cachet::Cache;
use common::{
    RAW_KEY, cached_crate_flight, cachet_flight, deadpool_hit, raw_connection, raw_hit, redis_url,
    write_section,
};

#[derive(Clone, Copy, Debug)]
enum Contender {
    Raw,
    RawClone,
    RawMget,
    Cachet,
    CachedCrate,
    Deadpool,
}

const ALL: [Contender; 6] = [
    Contender::Raw,
    Contender::RawClone,
    Contender::RawMget,
    Contender::Cachet,
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
            // The protocol floor of cachet's read: entry and generation in one MGET.
            let (bytes, _g): (Vec<u8>, Option<Vec<u8>>) = redis::cmd("MGET")
                .arg(RAW_KEY)
                .arg("cachet-bench:{bench_flight}:gen")
                .query_async(&mut c.raw)
                .await
                .expect("MGET");
            postcard::from_bytes(&bytes).expect("decode")
        }
        Contender::Cachet => cachet_flight(&c.cache, 7).await,
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `cargo bench -- --list`
    }
    let seconds: f64 = std::env::var("THROUGHPUT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let url = redis_url();
    // `CACHET_CONNECTIONS`: kept connections (default: the cache's default).
    let mut builder = Cache::builder();
    if let Some(n) = std::env::var("CACHET_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        builder = builder.connections(n);
    }
    let clients = Clients {
        cache: builder
            .redis_url(&url)
            .prefix("cachet-bench")
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
    // `THROUGHPUT_ONLY=Cachet` (a contender's name): run only it, e.g. under
    // `perf record`; nothing is written.
    if let Ok(only) = std::env::var("THROUGHPUT_ONLY") {
        for who in ALL.iter().filter(|w| format!("{w:?}") == only) {
            let ops = ops_per_second(*who, 64, seconds, &clients).await;
            eprintln!("64 tasks {who:?}: {ops:.0} ops/s");
        }
        return;
    }
    // Short cells in rounds, contenders interleaved (rotating which goes
    // first), and the median per contender: a burst of other work on the 2
    // cores then moves one cell of one round, not a whole column.
    let rounds = 5;
    let mut rows = String::new();
    for tasks in [1, 16, 64] {
        let mut samples: Vec<Vec<f64>> = vec![vec![]; ALL.len()];
        for round in 0..rounds {
            for k in 0..ALL.len() {
                let i = (k + round) % ALL.len();
                let ops = ops_per_second(ALL[i], tasks, seconds / rounds as f64, &clients).await;
                samples[i].push(ops);
            }
        }
        let medians: Vec<f64> = samples
            .iter_mut()
            .map(|v| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .collect();
        let raw = medians[0];
        let cells: Vec<String> = ALL
            .iter()
            .zip(&medians)
            .map(|(who, ops)| {
                eprintln!("{tasks:>3} tasks {who:?}: {ops:.0} ops/s (median of {rounds})");
                format!("{ops:.0} ({:.2})", ops / raw)
            })
            .collect();
        rows.push_str(&format!("| {tasks} | {} |\n", cells.join(" | ")));
    }
    let table = format!(
        "Cache hits of the same ~200-byte record, 2 tokio workers; per cell the median of \
         {rounds} rounds of {:.1} s, contenders interleaved; ops/s and, in parentheses, the \
         ratio to raw redis-rs in the same row.\n\n\
         ```sh\ncargo bench --bench throughput\n```\n\n\
         | tasks | raw redis-rs GET + decode | raw, connection cloned per call | raw MGET (entry + generation: a hit without views) + decode | cachet `#[cached]` | cached 4.1 `#[concurrent_cached]` | deadpool `pool.get()` + GET |\n\
         |---|---|---|---|---|---|---|\n{rows}",
        seconds / rounds as f64
    );
    println!("{table}");
    write_section("throughput", &table).expect("write BENCHMARKS.md");
}
