//! Large values. Stored compressed: what Redis holds is smaller, readers of
//! either setting read both kinds of entry, a compressed payload that does
//! not decompress is a recomputed miss, and `max_value_bytes` bounds what is
//! stored (so compression lets a large value fit). A `Vec<u8>` is stored
//! through the codec's bytes form, with `unless` and `ttl = f` seeing the
//! `Vec<u8>`.

mod support;

use cache_aside::{Cache, Status, cached, with_status};
use redis::AsyncCommands;
use support::{Backend, Calls, cache, raw, redis_url, unique_prefix};

on_every_backend!(
    a_compressed_value_reads_back,
    a_value_below_the_threshold_is_stored_as_it_is,
    a_vec_of_bytes_round_trips_as_bytes,
);

/// A page of text: about 90 KB, very compressible.
fn page(n: u32) -> String {
    format!("<tr><td>FRA</td><td>JFK</td><td>LH{n}</td></tr>\n").repeat(2000)
}

#[cached(ns = "compress_page", ttl = "5m", cache = cache, compress = "1KiB", skip(cache, calls))]
async fn compressed(cache: &Cache, calls: &Calls, n: u32) -> String {
    calls.hit();
    page(n)
}

#[cached(ns = "compress_page", ttl = "5m", cache = cache, compress = false, skip(cache, calls))]
async fn plain(cache: &Cache, calls: &Calls, n: u32) -> String {
    calls.hit();
    page(n)
}

#[cached(ns = "compress_small", ttl = "5m", cache = cache, compress, skip(cache, calls))]
async fn small(cache: &Cache, calls: &Calls, n: u32) -> String {
    calls.hit();
    format!("LH{n}")
}

/// The entry's bytes as Redis holds them, and whether its header says
/// compressed (the top bit of the schema field, after magic, generation,
/// nonce, expiry and compute time).
async fn stored(cache: &Cache, ns: &str, n: u32) -> (Vec<u8>, bool) {
    let key = cache.entry_key(ns, &n).unwrap();
    let bytes: Vec<u8> = raw(&redis_url()).await.get(&key).await.unwrap();
    let flag = bytes[1 + 16 + 16 + 8 + 4] & 0x80 != 0;
    (bytes, flag)
}

async fn a_compressed_value_reads_back(backend: Backend) {
    let c = cache(backend, "compress_reads").await;
    let calls = Calls::default();
    assert_eq!(compressed(&c, &calls, 1).await, page(1));
    let (v, s) = with_status(compressed(&c, &calls, 1)).await;
    assert_eq!((v, s, calls.get()), (page(1), Status::Hit, 1));
    if backend == Backend::Redis {
        let (bytes, flag) = stored(&c, "compress_page", 1).await;
        assert!(flag, "the header says compressed");
        assert!(
            bytes.len() * 20 < page(1).len(),
            "{} bytes stored for {}",
            bytes.len(),
            page(1).len()
        );
    }
}

async fn a_value_below_the_threshold_is_stored_as_it_is(backend: Backend) {
    let c = cache(backend, "compress_small").await;
    let calls = Calls::default();
    assert_eq!(small(&c, &calls, 7).await, "LH7");
    let (v, s) = with_status(small(&c, &calls, 7)).await;
    assert_eq!((v.as_str(), s, calls.get()), ("LH7", Status::Hit, 1));
    if backend == Backend::Redis {
        let (bytes, flag) = stored(&c, "compress_small", 7).await;
        assert!(!flag);
        assert!(bytes.ends_with(b"LH7"), "{bytes:?}");
    }
}

/// Two processes that disagree on compression (a deploy that turns it on,
/// half rolled out) read each other's entries as hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_either_setting_read_both_kinds_of_entry() {
    let prefix = unique_prefix("compress_mixed");
    let make = |compress: bool| {
        let b = Cache::builder()
            .prefix(prefix.clone())
            .redis_url(redis_url());
        if compress { b.compress_above(1024) } else { b }
            .build()
            .unwrap()
    };
    let (on, off) = (make(true), make(false));
    support::connected(&on).await;
    support::connected(&off).await;
    let calls = Calls::default();
    // `plain` opts out whatever the cache says; `compressed` opts in.
    assert_eq!(compressed(&off, &calls, 1).await, page(1));
    assert!(stored(&off, "compress_page", 1).await.1);
    let (v, s) = with_status(plain(&on, &calls, 1)).await;
    assert_eq!((v, s, calls.get()), (page(1), Status::Hit, 1));
    assert_eq!(plain(&off, &calls, 2).await, page(2));
    assert!(!stored(&off, "compress_page", 2).await.1);
    let (v, s) = with_status(compressed(&on, &calls, 2)).await;
    assert_eq!((v, s, calls.get()), (page(2), Status::Hit, 2));
    // The cache-wide setting, through the by-hand API.
    let v: String = on
        .namespace("compress_hand")
        .get_or_compute(&3u32, async { page(3) })
        .await;
    assert!(stored(&on, "compress_hand", 3).await.1);
    let again: String = off
        .namespace("compress_hand")
        .get_or_compute(&3u32, async { unreachable!("a hit") })
        .await;
    assert_eq!(v, again);
}

/// A compressed payload that does not decompress (foreign bytes, a
/// truncated write) is a miss that is counted and recomputed, never a panic
/// or a wrong value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_decompress_is_recomputed() {
    let c = cache(Backend::Redis, "compress_corrupt").await;
    let calls = Calls::default();
    compressed(&c, &calls, 4).await;
    let key = c.entry_key("compress_page", &4u32).unwrap();
    let (mut bytes, flag) = stored(&c, "compress_page", 4).await;
    assert!(flag);
    // Keep the header, break the LZ4 body after its length.
    let at = bytes.len() - 40;
    bytes.truncate(at);
    let mut conn = raw(&redis_url()).await;
    let _: () = conn.set_ex(&key, &bytes, 60).await.unwrap();
    let (v, s) = with_status(compressed(&c, &calls, 4)).await;
    assert_eq!((v, s, calls.get()), (page(4), Status::Miss, 2));
    assert_eq!(c.stats().total.decode_errors, 1);
    let (v, s) = with_status(compressed(&c, &calls, 4)).await;
    assert_eq!((v, s, calls.get()), (page(4), Status::Hit, 2));
}

/// `max_value_bytes` bounds what Redis would hold: a value whose plain
/// encoding is over it is stored once compressed, and not stored plain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_limit_applies_to_the_stored_bytes() {
    let c = Cache::builder()
        .prefix(unique_prefix("compress_limit"))
        .redis_url(redis_url())
        .max_value_bytes(16 << 10)
        .build()
        .unwrap();
    support::connected(&c).await;
    let calls = Calls::default();
    compressed(&c, &calls, 5).await;
    let (_, s) = with_status(compressed(&c, &calls, 5)).await;
    assert_eq!((s, calls.get()), (Status::Hit, 1));
    plain(&c, &calls, 6).await;
    let (_, s) = with_status(plain(&c, &calls, 6)).await;
    assert_eq!((s, calls.get()), (Status::Miss, 3));
    assert_eq!(c.stats().total.too_large, 2);
}

// `ttl = f` takes a `fn(&T)`, here `fn(&Vec<u8>)`.
#[allow(clippy::ptr_arg)]
fn blob_ttl(b: &Vec<u8>) -> std::time::Duration {
    std::time::Duration::from_secs(60 + b.len() as u64)
}

#[cached(ns = "large_blob", ttl = blob_ttl, unless = |b: &Vec<u8>| b.is_empty(), cache = cache, skip(cache, calls))]
async fn blob(cache: &Cache, calls: &Calls, n: u32) -> Result<Vec<u8>, String> {
    calls.hit();
    Ok((0..n).map(|i| (i * 7) as u8).collect())
}

async fn a_vec_of_bytes_round_trips_as_bytes(backend: Backend) {
    let c = cache(backend, "large_blob").await;
    let calls = Calls::default();
    let want: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(blob(&c, &calls, 100_000).await.unwrap(), want);
    let (v, s) = with_status(blob(&c, &calls, 100_000)).await;
    assert_eq!((v.unwrap(), s, calls.get()), (want, Status::Hit, 1));
    // `unless` sees the `Vec<u8>`: an empty one is not stored.
    blob(&c, &calls, 0).await.unwrap();
    let (_, s) = with_status(blob(&c, &calls, 0)).await;
    assert_eq!((s, calls.get()), (Status::Miss, 3));
    // Not the entry of a `Vec<u8>` stored as a sequence of `u8`s (what the
    // by-hand API stores): its schema says bytes, so that reader misses.
    let by_hand: Vec<u8> = c
        .namespace("large_blob")
        .get_or_compute(&100_000u32, async { vec![1] })
        .await;
    assert_eq!(by_hand, vec![1]);
    assert_eq!(c.stats().total.schema_mismatches, 1);
}
