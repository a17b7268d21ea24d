//! Tags and nested caching, measured, interleaved: a plain `#[cached]` hit
//! (one `GET`), a hit with one tag (an `MGET` of entry, generation and the
//! tag's token), and a nested hit: an outer entry computed from 2 and from
//! 20 inner entries (one `EVALSHA` of `deps.lua`: the entry, the
//! generation and the entry's deps on the server); then an
//! outer miss with 1, 10 and 50 inner reads (all inner hits), against the
//! same reads without an outer fn; and the bytes each dependency takes.
//! Writes a table into BENCHMARKS.md.
//!
//! `cargo bench --bench nested` (`NESTED_CALLS`, default 5000 per contender)

mod common;

use std::time::{Duration, Instant};

use cache_aside::{Cache, cached};
use common::{Flight, flight, redis_url, write_section};

#[cached(ns = "bn_plain", ttl = "1h", cache = cache, skip(cache))]
async fn plain(cache: &Cache, id: i64) -> Flight {
    flight(id)
}

#[cached(ns = "bn_tagged", ttl = "1h", tags(airline), cache = cache, skip(cache))]
async fn tagged(cache: &Cache, airline: u32, id: i64) -> Flight {
    let _ = airline;
    flight(id)
}

#[cached(ns = "bn_inner", ttl = "1h", cache = cache, skip(cache))]
async fn inner(cache: &Cache, id: i64) -> Flight {
    flight(id)
}

/// An outer fn over `n` inner entries (`from`..`from + n`).
#[cached(ns = "bn_outer", ttl = "1h", cache = cache, skip(cache))]
async fn outer(cache: &Cache, from: i64, n: i64) -> Flight {
    let mut f = flight(from);
    for id in from..from + n {
        f.booked = f.booked.wrapping_add(inner(cache, id).await.booked);
    }
    f
}

/// The same inner reads, not cached as a whole.
async fn inner_reads(cache: &Cache, from: i64, n: i64) -> Flight {
    let mut f = flight(from);
    for id in from..from + n {
        f.booked = f.booked.wrapping_add(inner(cache, id).await.booked);
    }
    f
}

fn p50(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let calls: usize = std::env::var("NESTED_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let body = rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(redis_url())
            .prefix(format!("cache-aside-bench-nested-{}", std::process::id()))
            .build()
            .expect("cache");
        let mut raw = redis::Client::open(redis_url().as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection");
        // Everything cached, and warmed.
        for _ in 0..200 {
            plain(&cache, 7).await;
            tagged(&cache, 3, 7).await;
            outer(&cache, 0, 2).await;
            outer(&cache, 100, 20).await;
        }
        let mut hits: [Vec<Duration>; 4] = Default::default();
        for _ in 0..calls {
            let t = Instant::now();
            std::hint::black_box(plain(&cache, 7).await);
            hits[0].push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(tagged(&cache, 3, 7).await);
            hits[1].push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(outer(&cache, 0, 2).await);
            hits[2].push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(outer(&cache, 100, 20).await);
            hits[3].push(t.elapsed());
        }
        let hit_p50: Vec<Duration> = hits.iter_mut().map(|v| p50(v)).collect();
        // Misses of the outer fn over 1, 10 and 50 inner hits (each call a
        // new outer key), against the same inner reads alone.
        let rounds = (calls / 10).max(50);
        let mut miss_rows = Vec::new();
        for n in [1i64, 10, 50] {
            for id in 0..n {
                inner(&cache, 10_000 + id).await;
            }
            let (mut with, mut without) = (Vec::new(), Vec::new());
            for r in 0..rounds as i64 {
                let t = Instant::now();
                std::hint::black_box(inner_reads(&cache, 10_000, n).await);
                without.push(t.elapsed());
                // A fresh outer key per round (`from` moves the flight only
                // through its id, not what is read), so every call misses.
                let t = Instant::now();
                std::hint::black_box(outer_at(&cache, 10_000, n, r).await);
                with.push(t.elapsed());
            }
            miss_rows.push((n, p50(&mut without), p50(&mut with)));
        }
        // Bytes: the stored entries with and without deps.
        let size = |key: String| {
            let mut c = raw.clone();
            async move {
                let v: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut c).await.expect("GET");
                v.len()
            }
        };
        let plain_bytes = size(cache.entry_key("bn_plain", &7i64).unwrap()).await;
        let two = size(cache.entry_key("bn_outer", &(0i64, 2i64)).unwrap()).await;
        let twenty = size(cache.entry_key("bn_outer", &(100i64, 20i64)).unwrap()).await;
        let token: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(format!("{}:{{bn_inner}}:#k:*", cache.prefix()))
            .query_async(&mut raw)
            .await
            .unwrap_or(0);
        let mut body = format!(
            "{calls} hits per contender, interleaved, 2 tokio workers, loopback Redis.\n\n\
             | hit | p50 (µs) | p50 / plain hit |\n|---|---|---|\n"
        );
        let names = [
            "plain `#[cached]` (one `GET`)",
            "with one tag (`MGET` entry, generation, token)",
            "nested: outer over 2 inner entries (`deps.lua`: entry, generation, 3 deps)",
            "nested: outer over 20 inner entries (`deps.lua`: entry, generation, 2 deps)",
        ];
        for (i, n) in names.iter().enumerate() {
            body.push_str(&format!(
                "| {n} | {:.1} | {:.2} |\n",
                us(hit_p50[i]),
                hit_p50[i].as_secs_f64() / hit_p50[0].as_secs_f64()
            ));
        }
        body.push_str(&format!(
            "\nAn outer miss ({rounds} rounds each, interleaved): the body's inner reads, all hits, \
             without and inside an outer `#[cached]` fn (which reads each inner entry with its key \
             tokens, and stores the outer entry with its deps).\n\n\
             | inner reads | inner reads alone p50 (µs) | outer miss p50 (µs) | ratio |\n|---|---|---|---|\n"
        ));
        for (n, without, with) in miss_rows {
            body.push_str(&format!(
                "| {n} | {:.1} | {:.1} | {:.2} |\n",
                us(without),
                us(with),
                with.as_secs_f64() / without.as_secs_f64()
            ));
        }
        body.push_str(&format!(
            "\nMemory: a plain entry {plain_bytes} bytes; an outer entry over 2 inner entries \
             {two} bytes (3 deps: the inner generation, 2 key buckets), over 20 {twenty} bytes \
             (the generation and the any-key token: past 16 buckets an entry depends on the \
             namespace's any-key token instead); each dep is its key and value, about \
             {:.0} bytes. A token key takes {token} bytes in Redis (`MEMORY USAGE`), one per \
             bucket (256 per namespace at most), tag value and namespace.\n\n\
             ```\ncargo bench --bench nested\n```\n",
            (two.saturating_sub(plain_bytes) as f64 / 3.0)
        ));
        body
    });
    print!("{body}");
    write_section("nested", &body).expect("BENCHMARKS.md");
}

/// `outer` under a key of its own per round, reading the same inner entries.
#[cached(ns = "bn_outer_miss", ttl = "1h", cache = cache, skip(cache))]
async fn outer_at(cache: &Cache, from: i64, n: i64, round: i64) -> Flight {
    let _ = round;
    inner_reads(cache, from, n).await
}
