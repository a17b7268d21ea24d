//! Batch reads, measured, interleaved round by round: 100 keys (the
//! ~200-byte flight record each) read by one `#[cached(batch)]` call, by
//! 100 single-key `#[cached]` calls one after the other (a handler's loop),
//! by the same 100 calls at once (`join_all`), and, for all hits, by a
//! hand-written `MGET` + postcard decode of the same entries' values
//! stored plainly (the floor). Then all misses (the namespace invalidated
//! before each round) and 10% misses (10 keys invalidated). Writes a table
//! into BENCHMARKS.md.
//!
//! `cargo bench --bench batch` (`BATCH_ROUNDS`, default 300)

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cache_aside::{Cache, cached, invalidates};
use common::{Flight, flight, p50, redis_url, us, write_section};

const N: i64 = 100;

#[cached(ns = "bb_flight", ttl = "1h", cache = cache, skip(cache))]
async fn one(cache: &Cache, id: i64) -> Flight {
    flight(id)
}

#[cached(ns = "bb_flight", ttl = "1h", batch, cache = cache, skip(cache))]
async fn many(cache: &Cache, ids: &[i64]) -> HashMap<i64, Flight> {
    ids.iter().map(|&id| (id, flight(id))).collect()
}

#[invalidates(ns = "bb_flight", key(id), cache = cache)]
async fn touch(cache: &Cache, id: i64) {
    let _ = id;
}

/// What to do before each round: nothing, invalidate all, or 10 keys.
#[derive(Clone, Copy)]
enum Before {
    Hits,
    AllMisses,
    TenPercent,
}

async fn prepare(cache: &Cache, before: Before, round: usize) {
    match before {
        Before::Hits => {}
        Before::AllMisses => {
            cache.namespace("bb_flight").invalidate().await;
        }
        Before::TenPercent => {
            for i in 0..10 {
                touch(cache, ((round as i64) * 7 + i * 10) % N).await;
            }
        }
    }
}

fn main() {
    let Some((rounds, rt)) = common::interleaved("BATCH_ROUNDS", 300) else {
        return;
    };
    let rows = rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(redis_url())
            .prefix(format!("cache-aside-bench-batch-{}", std::process::id()))
            .op_timeout(Duration::from_secs(1))
            .build()
            .expect("cache");
        let mut raw = redis::Client::open(redis_url().as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection");
        let ids: Vec<i64> = (0..N).collect();
        // The floor's keys: the plain postcard bytes of each record.
        let raw_keys: Vec<String> = ids
            .iter()
            .map(|i| format!("bb-raw:{}:{i}", std::process::id()))
            .collect();
        for (k, id) in raw_keys.iter().zip(&ids) {
            let bytes = postcard::to_allocvec(&flight(*id)).expect("encode");
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg(bytes)
                .query_async(&mut raw)
                .await
                .expect("SET");
        }
        many(&cache, &ids).await;
        let mut rows = Vec::new();
        for (name, before) in [
            ("100 hits", Before::Hits),
            ("100 misses", Before::AllMisses),
            ("10 misses, 90 hits", Before::TenPercent),
        ] {
            let mut t: [Vec<Duration>; 4] = Default::default();
            for round in 0..rounds {
                prepare(&cache, before, round).await;
                let s = Instant::now();
                std::hint::black_box(many(&cache, &ids).await);
                t[0].push(s.elapsed());
                prepare(&cache, before, round).await;
                let s = Instant::now();
                for &id in &ids {
                    std::hint::black_box(one(&cache, id).await);
                }
                t[1].push(s.elapsed());
                prepare(&cache, before, round).await;
                let s = Instant::now();
                std::hint::black_box(
                    futures_util::future::join_all(ids.iter().map(|&id| one(&cache, id))).await,
                );
                t[2].push(s.elapsed());
                if matches!(before, Before::Hits) {
                    let s = Instant::now();
                    let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                        .arg(&raw_keys)
                        .query_async(&mut raw)
                        .await
                        .expect("MGET");
                    let flights: Vec<Flight> = got
                        .iter()
                        .map(|b| postcard::from_bytes(b.as_deref().expect("set")).expect("decode"))
                        .collect();
                    std::hint::black_box(flights);
                    t[3].push(s.elapsed());
                }
            }
            let [mut b, mut seq, mut conc, mut mget] = t;
            let mget = (!mget.is_empty()).then(|| p50(&mut mget));
            rows.push((name, p50(&mut b), p50(&mut seq), p50(&mut conc), mget));
        }
        let _: () = redis::cmd("DEL")
            .arg(&raw_keys)
            .query_async(&mut raw)
            .await
            .expect("DEL");
        rows
    });
    let mut body = format!(
        "{rounds} rounds per row, the contenders interleaved in each, 100 keys of the ~200-byte \
         flight record, 2 tokio workers, loopback Redis. Bodies construct the records (no \
         database), so a miss's cost is the cache's own.\n\n\
         | keys | `#[cached(batch)]` p50 (µs) | 100 single calls in a loop | ratio | 100 single calls at once | ratio | hand-written `MGET` + decode | ratio |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for (name, b, seq, conc, mget) in &rows {
        let (m, r) = match mget {
            Some(m) => (format!("{:.1}", us(*m)), format!("{:.2}", us(*b) / us(*m))),
            None => ("".into(), "".into()),
        };
        body.push_str(&format!(
            "| {name} | {:.1} | {:.1} | {:.3} | {:.1} | {:.3} | {m} | {r} |\n",
            us(*b),
            us(*seq),
            us(*b) / us(*seq),
            us(*conc),
            us(*b) / us(*conc),
        ));
    }
    body.push_str("\n(ratio: the batch's time over that contender's.)\n\n```\ncargo bench --bench batch\n```\n");
    print!("{body}");
    if let Err(e) = write_section("batch", &body) {
        eprintln!("BENCHMARKS.md not written: {e}");
    }
}
