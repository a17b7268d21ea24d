//! Large values, measured, interleaved. Compression: for each value, the
//! bytes Redis holds, a hit's p50 and a store's p50 (a `refresh` scope:
//! recompute and store over the entry) with compression off and on (LZ4
//! above 0 bytes, the same process and run). The values: the example's
//! `routes/top` (10 and 100 rows, airport names from its data), a 1 MiB
//! JSON document (an API response: every airport of the example's data
//! with varying numbers) and 1 MiB of random bytes (an image:
//! incompressible, so stored plain after a try). Bytes: a 1 MiB `Vec<u8>`
//! as serde's sequence of `u8`s (what the by-hand API stores) and as bytes
//! (what `#[cached]` stores), encode and decode in process and a hit
//! through Redis. Writes a table into BENCHMARKS.md.
//!
//! `cargo bench --bench compress` (`COMPRESS_CALLS`, default 2000 per contender)

mod common;

use std::time::{Duration, Instant};

use cache_aside::codec::{Codec, Postcard, RawBytes};
use cache_aside::{Cache, Namespace, cached, refresh};
use common::{p50, redis_url, us, write_section};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The example's `RouteCount` (examples/flight_db/queries.rs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RouteCount {
    to: String,
    name: String,
    city: String,
    country: String,
    flights: i64,
    seats: i64,
}

/// `n` rows of top routes, named after the example's first airports.
fn routes(n: usize) -> Vec<RouteCount> {
    let csv = include_str!("../examples/flight_db/data/airports.csv");
    csv.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() > 4 && !f[3].is_empty()).then(|| (f[0], f[2], f[3], f[4]))
        })
        .take(n)
        .enumerate()
        .map(|(i, (to, name, city, country))| RouteCount {
            to: to.into(),
            name: name.into(),
            city: city.into(),
            country: country.into(),
            flights: 900 - 7 * i as i64,
            seats: 160_000 - 1_100 * i as i64,
        })
        .collect()
}

/// About 1 MiB of JSON: every airport of the example's data as a route
/// row, with numbers that vary, over and over.
fn document() -> String {
    let csv = include_str!("../examples/flight_db/data/airports.csv");
    let mut s = String::from("[");
    let mut n: i64 = 0;
    'fill: loop {
        for l in csv.lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() < 7 {
                continue;
            }
            n += 1;
            s.push_str(&format!(
                "{{\"to\":\"{}\",\"name\":\"{}\",\"city\":\"{}\",\"country\":\"{}\",\"lat\":{},\"lon\":{},\"flights\":{},\"seats\":{}}},",
                f[0], f[2], f[3], f[4], f[5], f[6], (n * 7919) % 1000, (n * 104_729) % 200_000
            ));
            if s.len() >= 1 << 20 {
                break 'fill;
            }
        }
    }
    s.truncate(1 << 20);
    s
}

/// 1 MiB that does not compress (xorshift).
fn noise() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cached(ns = "bc_image", ttl = "1h", cache = cache, skip(cache))]
async fn image(cache: &Cache, id: u32) -> Vec<u8> {
    let _ = id;
    noise()
}

/// A 1 MiB `Vec<u8>` through postcard: as a sequence and as [`RawBytes`]
/// (encode, decode, p50 of `rounds` each, interleaved), and a Redis hit of
/// each (the by-hand API stores a sequence, `#[cached]` bytes).
async fn bytes_rows(cache: &Cache, rounds: usize) -> Vec<(String, [Duration; 2])> {
    let blob = noise();
    let raw = RawBytes(blob.clone());
    let (mut enc, mut dec): ([Vec<Duration>; 2], [Vec<Duration>; 2]) = Default::default();
    let mut buf = Vec::with_capacity(2 << 20);
    for _ in 0..rounds {
        buf.clear();
        let t = Instant::now();
        Postcard::encode(&blob, &mut buf).expect("encode");
        enc[0].push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(Postcard::decode::<Vec<u8>>(&buf).expect("decode"));
        dec[0].push(t.elapsed());
        buf.clear();
        let t = Instant::now();
        Postcard::encode(&raw, &mut buf).expect("encode");
        enc[1].push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(Postcard::decode::<RawBytes>(&buf).expect("decode"));
        dec[1].push(t.elapsed());
    }
    let by_hand = cache.namespace("bc_image_seq");
    let _: Vec<u8> = by_hand.get_or_compute(&1u32, async { noise() }).await;
    image(cache, 1).await;
    let mut hit: [Vec<Duration>; 2] = Default::default();
    for _ in 0..rounds {
        let t = Instant::now();
        let v: Vec<u8> = by_hand
            .get_or_compute(&1u32, async { unreachable!() })
            .await;
        hit[0].push(t.elapsed());
        std::hint::black_box(v);
        let t = Instant::now();
        std::hint::black_box(image(cache, 1).await);
        hit[1].push(t.elapsed());
    }
    let [mut e0, mut e1] = enc;
    let [mut d0, mut d1] = dec;
    let [mut h0, mut h1] = hit;
    vec![
        ("postcard encode".into(), [p50(&mut e0), p50(&mut e1)]),
        ("postcard decode".into(), [p50(&mut d0), p50(&mut d1)]),
        (
            "Redis hit (`GET` + decode)".into(),
            [p50(&mut h0), p50(&mut h1)],
        ),
    ]
}

struct Row {
    name: &'static str,
    bytes: [usize; 2],
    hit: [Duration; 2],
    store: [Duration; 2],
}

/// Hits and stores of `value` under two namespaces, plain and compressed,
/// interleaved call by call.
async fn measure<T>(
    cache: &Cache,
    raw: &mut redis::aio::MultiplexedConnection,
    (id, name): (&str, &'static str),
    value: T,
    calls: usize,
) -> Row
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    let ns = [format!("bc_plain_{id}"), format!("bc_lz4_{id}")];
    let spaces: [Namespace<'_>; 2] = [
        cache.namespace(&ns[0]).compress(usize::MAX),
        cache.namespace(&ns[1]).compress(0),
    ];
    for s in &spaces {
        let v = value.clone();
        let _: T = s.get_or_compute(&1u32, async move { v }).await;
    }
    let (mut hit, mut store): ([Vec<Duration>; 2], [Vec<Duration>; 2]) = Default::default();
    for i in 0..calls {
        for (j, s) in spaces.iter().enumerate() {
            let t = Instant::now();
            let v: T = s
                .get_or_compute(&1u32, async { unreachable!("a hit") })
                .await;
            hit[j].push(t.elapsed());
            std::hint::black_box(v);
        }
        if i % 4 == 0 {
            for (j, s) in spaces.iter().enumerate() {
                let v = value.clone();
                let t = Instant::now();
                let _: T = refresh(s.get_or_compute(&1u32, async move { v })).await;
                store[j].push(t.elapsed());
            }
        }
    }
    let mut bytes = [0; 2];
    for (j, n) in ns.iter().enumerate() {
        let key = cache.entry_key(n, &1u32).expect("key");
        let v: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(raw)
            .await
            .expect("GET");
        bytes[j] = v.len();
    }
    Row {
        name,
        bytes,
        hit: [p50(&mut hit[0]), p50(&mut hit[1])],
        store: [p50(&mut store[0]), p50(&mut store[1])],
    }
}

fn main() {
    let Some((calls, rt)) = common::interleaved("COMPRESS_CALLS", 2_000) else {
        return;
    };
    let (rows, bytes) = rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(redis_url())
            .prefix(format!("cache-aside-bench-compress-{}", std::process::id()))
            .op_timeout(Duration::from_secs(2))
            .max_value_bytes(8 << 20)
            .build()
            .expect("cache");
        let mut raw = redis::Client::open(redis_url().as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection");
        let big = (calls / 10).max(100);
        let rows = vec![
            measure(
                &cache,
                &mut raw,
                ("top10", "`routes/top`, 10 rows"),
                routes(10),
                calls,
            )
            .await,
            measure(
                &cache,
                &mut raw,
                ("top100", "`routes/top`, 100 rows"),
                routes(100),
                calls,
            )
            .await,
            measure(
                &cache,
                &mut raw,
                ("json", "1 MiB JSON document"),
                document(),
                big,
            )
            .await,
            measure(
                &cache,
                &mut raw,
                ("noise", "1 MiB random bytes"),
                noise(),
                big,
            )
            .await,
        ];
        (rows, bytes_rows(&cache, big).await)
    });
    let mut body = format!(
        "{calls} hits per contender (1 MiB values: {}), interleaved, a store every 4th round, \
         2 tokio workers, loopback Redis, postcard.\n\n\
         | value | stored bytes plain | LZ4 | hit p50 plain (µs) | LZ4 | ratio | store p50 plain (µs) | LZ4 | ratio |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        (calls / 10).max(100)
    );
    for r in &rows {
        body.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} |\n",
            r.name,
            r.bytes[0],
            r.bytes[1],
            us(r.hit[0]),
            us(r.hit[1]),
            us(r.hit[1]) / us(r.hit[0]),
            us(r.store[0]),
            us(r.store[1]),
            us(r.store[1]) / us(r.store[0]),
        ));
    }
    body.push_str(&format!(
        "\nA 1 MiB `Vec<u8>` (random), {} rounds each, interleaved: as serde's sequence of `u8`s \
         and as bytes (`#[cached]` stores a `Vec<u8>` as bytes; both take 1 MiB + 3 bytes of payload \
         in postcard).\n\n\
         | step | sequence p50 (µs) | bytes p50 (µs) | ratio |\n|---|---|---|---|\n",
        (calls / 10).max(100)
    ));
    for (name, [a, b]) in &bytes {
        body.push_str(&format!(
            "| {name} | {:.1} | {:.1} | {:.3} |\n",
            us(*a),
            us(*b),
            us(*b) / us(*a)
        ));
    }
    body.push_str("\n```\ncargo bench --bench compress\n```\n");
    print!("{body}");
    if let Err(e) = write_section("compress", &body) {
        eprintln!("BENCHMARKS.md not written: {e}");
    }
}
