//! Redis-only behaviour: several `Cache` instances sharing a Redis (as
//! several processes would), failing open when the server is stopped,
//! refusing or frozen, foreign bytes under a key, codecs, and the prefix
//! being the only thing the cache touches. Tests that hurt the server start
//! their own `redis-server` on a free loopback port.

mod support;

use std::time::{Duration, Instant};

use cache_aside::{Cache, Invalidation, Status, cached, with_status};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use support::{Calls, RedisServer, connected, raw, redis_url, unique_prefix};

fn cache_at(url: &str, prefix: &str) -> Cache {
    Cache::builder()
        .redis_url(url)
        .prefix(prefix)
        .build()
        .unwrap()
}

#[cached(ns = "shared", cache = cache, skip(cache, calls))]
async fn shared(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.hit();
    id * 2
}

#[tokio::test]
async fn two_instances_share_entries_and_invalidations() {
    let prefix = unique_prefix("two_instances");
    let (a, b) = (
        cache_at(&redis_url(), &prefix),
        cache_at(&redis_url(), &prefix),
    );
    connected(&a).await;
    connected(&b).await;
    let calls = Calls::default();
    shared(&a, &calls, 1).await;
    shared(&a, &calls, 2).await;
    assert_eq!(with_status(shared(&b, &calls, 1)).await.1, Status::Hit);
    // A namespace invalidation from the other instance.
    assert_eq!(b.namespace("shared").invalidate().await, Invalidation::Done);
    assert_eq!(with_status(shared(&a, &calls, 1)).await.1, Status::Miss);
    assert_eq!(with_status(shared(&a, &calls, 2)).await.1, Status::Miss);
    // A key invalidation from the other instance.
    b.namespace("shared").invalidate_key(&(2u32,)).await;
    assert_eq!(with_status(shared(&a, &calls, 1)).await.1, Status::Hit);
    assert_eq!(with_status(shared(&a, &calls, 2)).await.1, Status::Miss);
    assert_eq!(calls.get(), 5);
}

#[tokio::test]
async fn keys_are_readable_and_carry_the_prefix() {
    let server = RedisServer::start();
    let prefix = "flightdb";
    let c = cache_at(&server.url(), prefix);
    connected(&c).await;
    shared(&c, &Calls::default(), 7).await;
    c.namespace("airport")
        .get_or_compute(&"FRA", async { "Frankfurt".to_string() })
        .await;
    c.namespace("airport").invalidate_key(&"MUC").await;
    c.namespace("routes").invalidate().await;
    let mut conn = raw(&server.url()).await;
    let mut keys: Vec<String> = conn.keys("*").await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "flightdb:#life",
            "flightdb:{airport}:#gen",
            "flightdb:{airport}:FRA",
            "flightdb:{airport}:MUC",
            "flightdb:{routes}:#gen",
            "flightdb:{shared}:#gen",
            "flightdb:{shared}:7",
        ],
        "the cache wrote only under its prefix, with readable keys"
    );
    let ttl: i64 = conn.pttl("flightdb:{shared}:7").await.unwrap();
    assert!(
        ttl > 280_000 && ttl <= 300_000,
        "default TTL with jitter: {ttl}"
    );
    let gen_ttl: i64 = conn.pttl("flightdb:{shared}:#gen").await.unwrap();
    let month = 30 * 86_400_000;
    assert!(
        gen_ttl > month - 60_000 && gen_ttl <= month,
        "generation keys live a month: {gen_ttl}"
    );
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Flight {
    id: i64,
    from: String,
    to: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Other {
    names: Vec<String>,
    flag: bool,
}

#[tokio::test]
async fn foreign_bytes_and_old_schemas_are_misses_and_get_overwritten() {
    let prefix = unique_prefix("foreign");
    let c = cache_at(&redis_url(), &prefix);
    connected(&c).await;
    let mut conn = raw(&redis_url()).await;
    let ns = c.namespace("flight");
    let key = c.entry_key("flight", &7).unwrap();
    let flight = || async {
        Flight {
            id: 7,
            from: "FRA".into(),
            to: "JFK".into(),
        }
    };
    for garbage in [&b"hello"[..], b"", &[0xCA; 100], &[0xCB; 17]] {
        let _: () = conn.set(&key, garbage).await.unwrap();
        let (v, s) = with_status(ns.get_or_compute(&7, flight())).await;
        assert_eq!((v.id, s), (7, Status::Miss), "{garbage:?}");
        let (_, s) = with_status(ns.get_or_compute(&7, flight())).await;
        assert_eq!(s, Status::Hit, "overwritten after {garbage:?}");
    }
    // A value stored by a function of another type under the same key.
    c.namespace("other").invalidate().await;
    let key_other = c.entry_key("other", &1).unwrap();
    let _: () = conn.del(&key_other).await.unwrap();
    let o = c.namespace("other");
    o.get_or_compute(&1, async {
        Other {
            names: vec!["x".into(); 3],
            flag: true,
        }
    })
    .await;
    let (v, s) = with_status(o.get_or_compute(&1, async { 99u8 })).await;
    assert_eq!(
        (v, s),
        (99, Status::Miss),
        "another type: miss, not an error"
    );
    let (v, s) = with_status(o.get_or_compute(&1, async { 0u8 })).await;
    assert_eq!((v, s), (99, Status::Hit));
    let st = c.stats();
    // "hello" and "" are foreign; 0xCA.. parses as an entry of a dead
    // generation and 0xCB.. as a tombstone: plain misses.
    assert_eq!(st.namespaces["flight"].decode_errors, 2);
    // Another type's entry is told by its schema, before any decoding.
    assert_eq!(st.namespaces["other"].decode_errors, 0);
    assert_eq!(st.namespaces["other"].schema_mismatches, 1);
    assert_eq!(st.total.errors, 0);
}

#[cached(ns = "outage", cache = cache, skip(cache, calls))]
async fn outage(cache: &Cache, calls: &Calls, id: u32) -> Result<u32, String> {
    calls.hit();
    Ok(id)
}

/// Calls `outage` for ids 0..n and returns the slowest call.
async fn run_calls(c: &Cache, calls: &Calls, n: u32) -> (Duration, Vec<Status>) {
    let mut slowest = Duration::ZERO;
    let mut statuses = vec![];
    for id in 0..n {
        let started = Instant::now();
        let (r, s) = with_status(outage(c, calls, id % 4)).await;
        assert_eq!(r, Ok(id % 4), "a cache problem never fails the call");
        slowest = slowest.max(started.elapsed());
        statuses.push(s);
    }
    (slowest, statuses)
}

#[tokio::test]
async fn fails_open_when_redis_is_killed_and_recovers_after_restart() {
    let mut server = RedisServer::start();
    let c = cache_at(&server.url(), "outage");
    connected(&c).await;
    let calls = Calls::default();
    let (_, s) = run_calls(&c, &calls, 8).await;
    assert_eq!(s.iter().filter(|s| **s == Status::Hit).count(), 4);

    server.kill();
    let (slowest, s) = run_calls(&c, &calls, 50).await;
    assert!(s.iter().all(|s| *s == Status::Bypass), "{s:?}");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    let st = c.stats().namespaces["outage"];
    assert!(
        st.errors <= 5,
        "the breaker stops trying: {} errors",
        st.errors
    );

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, s) = run_calls(&c, &calls, 8).await;
        if s[4..].iter().all(|s| *s == Status::Hit) {
            break;
        }
        assert!(Instant::now() < deadline, "caching did not resume: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn fails_open_when_nothing_listens() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = cache_at(&format!("redis://127.0.0.1:{port}"), "refused");
    let calls = Calls::default();
    let started = Instant::now();
    let (_, s) = run_calls(&c, &calls, 100).await;
    assert!(s.iter().all(|s| *s == Status::Bypass));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.get(), 100);
    // The outage is a bypass, not a failure of invalidation either.
    assert_eq!(
        c.namespace("outage").invalidate().await,
        Invalidation::Queued
    );
}

#[tokio::test]
async fn fails_open_within_the_op_timeout_when_redis_is_frozen() {
    let server = RedisServer::start();
    let c = Cache::builder()
        .redis_url(server.url())
        .prefix("frozen")
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let calls = Calls::default();
    run_calls(&c, &calls, 8).await;
    server.freeze();
    let started = Instant::now();
    let (slowest, s) = run_calls(&c, &calls, 40).await;
    assert!(s.iter().all(|s| *s == Status::Bypass), "{s:?}");
    // Each call waits at most about one op timeout (plus scheduling slack).
    assert!(
        slowest < Duration::from_millis(400),
        "slowest call {slowest:?}"
    );
    // The breaker opened: 40 calls did not each pay the timeout.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.thaw();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, s) = run_calls(&c, &calls, 8).await;
        if s[4..].iter().all(|s| *s == Status::Hit) {
            break;
        }
        assert!(Instant::now() < deadline, "caching did not resume: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn invalidation_during_an_outage_is_queued_and_lands_later() {
    let server = RedisServer::start();
    let url = server.url();
    let writer = Cache::builder()
        .redis_url(&url)
        .prefix("queued")
        .op_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let other_process = cache_at(&url, "queued");
    connected(&writer).await;
    connected(&other_process).await;
    let calls = Calls::default();
    outage(&writer, &calls, 1).await.unwrap();
    outage(&other_process, &calls, 1).await.unwrap();
    assert_eq!(calls.get(), 1);

    server.freeze();
    let started = Instant::now();
    assert_eq!(
        writer.namespace("outage").invalidate().await,
        Invalidation::Queued,
        "the write is not failed by its invalidation"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(writer.has_queued_invalidations());
    // Until it lands, this process does not trust the namespace.
    let (_, s) = with_status(outage(&writer, &calls, 1)).await;
    assert_eq!(s, Status::Bypass);

    tokio::time::sleep(Duration::from_millis(200)).await;
    server.thaw();
    let landed_after = Instant::now();
    while writer.has_queued_invalidations() {
        assert!(
            landed_after.elapsed() < Duration::from_secs(5),
            "never landed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = writer.stats().namespaces["outage"];
    assert_eq!(st.invalidations_queued, 1);
    assert!(st.invalidation_retries >= 1);
    assert_eq!(st.invalidations, 1, "it landed");
    // Every process now misses.
    let (_, s) = with_status(outage(&other_process, &calls, 1)).await;
    assert_eq!(s, Status::Miss);
}

#[cached(ns = "q_inner", cache = cache, skip(cache, calls))]
async fn q_inner(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.hit();
    id
}

#[cached(ns = "q_outer", cache = cache, skip(cache, calls))]
async fn q_outer(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    q_inner(cache, calls, id).await + 1000
}

/// An inner namespace's invalidation is queued during an outage: until it
/// lands, this process does not serve the outer entries built from it
/// either (and after it lands they are misses).
#[tokio::test]
async fn a_queued_inner_invalidation_reaches_outer_entries() {
    let server = RedisServer::start();
    let writer = Cache::builder()
        .redis_url(server.url())
        .prefix("queued-nested")
        .op_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    connected(&writer).await;
    let calls = Calls::default();
    assert_eq!(
        with_status(q_outer(&writer, &calls, 1)).await.1,
        Status::Miss
    );
    assert_eq!(
        with_status(q_outer(&writer, &calls, 1)).await.1,
        Status::Hit
    );
    server.freeze();
    assert_eq!(
        writer.namespace("q_inner").invalidate().await,
        Invalidation::Queued
    );
    server.thaw();
    let queued = writer.has_queued_invalidations();
    let (v, s) = with_status(q_outer(&writer, &calls, 1)).await;
    assert_eq!(v, 1001);
    assert_ne!(
        s,
        Status::Hit,
        "an outer entry served while the invalidation of what it read was queued ({queued})"
    );
}

#[tokio::test]
async fn eviction_is_a_miss_never_an_error() {
    let server =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]);
    let c = cache_at(&server.url(), "evict");
    connected(&c).await;
    let ns = c.namespace("blob");
    for i in 0..400u32 {
        let v = ns
            .get_or_compute(&i, async move { vec![i as u8; 20_000] })
            .await;
        assert_eq!(v.len(), 20_000);
    }
    let st = c.stats().namespaces["blob"];
    assert_eq!(st.errors, 0);
    let mut hits = 0;
    for i in 0..400u32 {
        let (v, s) = with_status(ns.get_or_compute(&i, async move { vec![i as u8; 20_000] })).await;
        assert_eq!(v[0], i as u8);
        hits += usize::from(s == Status::Hit);
    }
    assert!(
        hits < 400,
        "2 MB cannot hold 8 MB: some entries were evicted"
    );
    assert_eq!(c.stats().namespaces["blob"].errors, 0);
}

#[cfg(feature = "json")]
#[tokio::test]
async fn json_values_are_readable_in_redis() {
    let prefix = unique_prefix("json");
    let c = Cache::builder()
        .redis_url(redis_url())
        .prefix(&prefix)
        .codec(cache_aside::codec::Json)
        .build()
        .unwrap();
    connected(&c).await;
    let f = c
        .namespace("flight")
        .get_or_compute(&7, async {
            Flight {
                id: 7,
                from: "FRA".into(),
                to: "JFK".into(),
            }
        })
        .await;
    let mut conn = raw(&redis_url()).await;
    let stored: Vec<u8> = conn.get(c.entry_key("flight", &7).unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&stored);
    assert!(
        text.ends_with(r#"{"id":7,"from":"FRA","to":"JFK"}"#),
        "{text}"
    );
    let (again, s) = with_status(
        c.namespace("flight")
            .get_or_compute(&7, async { unreachable!() }),
    )
    .await;
    assert_eq!((again, s), (f, Status::Hit));
}

#[cfg(feature = "bincode")]
#[tokio::test]
async fn bincode_round_trips_through_redis() {
    let c = Cache::builder()
        .redis_url(redis_url())
        .prefix(unique_prefix("bincode"))
        .codec(cache_aside::codec::Bincode)
        .build()
        .unwrap();
    connected(&c).await;
    let ns = c.namespace("flight");
    let f = Flight {
        id: 1,
        from: "MUC".into(),
        to: "LHR".into(),
    };
    let stored = ns.get_or_compute(&1, async { f }).await;
    let (again, s) = with_status(ns.get_or_compute(&1, async { unreachable!() })).await;
    assert_eq!((again, s), (stored, Status::Hit));
}

/// Collects what the cache logs, to count outage messages.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_outage_is_logged_once_not_per_call() {
    use tracing_subscriber::util::SubscriberInitExt;
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let _guard = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish()
        .set_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut server = RedisServer::start();
        let c = Cache::builder()
            .redis_url(server.url())
            .prefix("logged")
            .circuit_breaker(3, Duration::from_millis(50))
            .build()
            .unwrap();
        connected(&c).await;
        let calls = Calls::default();
        run_calls(&c, &calls, 4).await;
        server.kill();
        for _ in 0..10 {
            run_calls(&c, &calls, 20).await; // 200 calls over several cooldowns
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.restart();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !run_calls(&c, &calls, 8).await.1[4..]
            .iter()
            .all(|s| *s == Status::Hit)
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("Redis unavailable"), 1, "{text}");
    assert_eq!(count("Redis answers again"), 1, "{text}");
}

/// A Redis ACL user that may only touch `aclcache:*` keys and channels (and
/// run the commands a cache needs) is enough for every operation: reads,
/// leases, stores, both invalidations and their notices, stale refresh
/// locks, ping. Its password never shows in `Debug` output.
#[tokio::test]
async fn an_acl_user_restricted_to_the_prefix_is_enough() {
    let server = RedisServer::start();
    let mut admin = raw(&server.url()).await;
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "cache-aside",
                "on",
                ">s3cret-pass",
                "~aclcache:*",
                "&aclcache:*",
                "-@all",
            ][..],
        )
        .arg(
            &[
                "+get",
                "+set",
                "+mget",
                "+pttl",
                "+ping",
                "+evalsha",
                "+eval",
                "+script|load",
                "+hello",
                "+subscribe",
                "+publish",
                "+time",
                "+info",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://cache-aside:s3cret-pass@127.0.0.1:{}", server.port);
    let c = Cache::builder()
        .redis_url(&url)
        .prefix("aclcache")
        .build()
        .unwrap();
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    // The restricted user can PING.
    connected(&c).await;
    let ns = c
        .namespace("flight")
        .ttl(Duration::from_millis(300))
        .stale(Duration::from_secs(5));
    assert_eq!(ns.get_or_compute(&1, async { 10u32 }).await, 10);
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 11u32 })).await,
        (10, Status::Hit)
    );
    assert_eq!(ns.invalidate_key(&1).await, Invalidation::Done);
    assert_eq!(ns.invalidate().await, Invalidation::Done);
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 12u32 })).await,
        (12, Status::Miss)
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Past the TTL: one call wins the refresh lock (`...|r`, under the prefix).
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 13u32 })).await,
        (13, Status::Miss)
    );
    let st = c.stats().total;
    assert_eq!(
        (st.errors, st.bypasses),
        (0, 0),
        "nothing was refused: {st:?}"
    );
    // The user really is restricted: a key outside the prefix is refused.
    let mut user = raw(&url).await;
    let denied: redis::RedisResult<()> = redis::cmd("SET")
        .arg("other:key")
        .arg(1)
        .query_async(&mut user)
        .await;
    assert!(denied.is_err());
}

/// A hit's `GET` reuses its lent handle's timer. Handles are kept per
/// thread, so one can meet a runtime other than the one its timer belongs
/// to, which may have shut down since: polling that timer would panic. Here
/// the connection lives on a runtime that stays up, a thread uses the cache
/// on one short-lived runtime, drops it, and uses the cache again on
/// another.
#[test]
fn a_reused_handle_survives_the_runtime_it_was_first_used_on() {
    let prefix = unique_prefix("runtimes");
    let calls = Calls::default();
    let keeper = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let c = cache_at(&redis_url(), &prefix);
    // The kept connection is made (and driven) on `keeper`.
    keeper.block_on(connected(&c));
    assert_eq!(keeper.block_on(shared(&c, &calls, 4)), 8);
    for _ in 0..3 {
        let short = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..5 {
            assert_eq!(short.block_on(shared(&c, &calls, 4)), 8);
        }
        drop(short);
    }
    assert_eq!(calls.get(), 1, "every call after the first was a hit");
    let st = c.stats().total;
    assert_eq!((st.errors, st.bypasses), (0, 0), "{st:?}");
    drop(keeper);
}

/// A server that refuses the connection says why, in `ping`'s error and in
/// the breaker's warning: a wrong password (`WRONGPASS`), a database index
/// out of range. Not "cannot connect" alone, which reads like an outage.
#[tokio::test]
async fn a_refused_connection_carries_the_servers_words() {
    let server = RedisServer::start_with(&["--requirepass", "right-pass"]);
    let cases = [
        (
            format!("redis://:wrong-pass@127.0.0.1:{}", server.port),
            "WRONGPASS",
        ),
        (
            format!("redis://:right-pass@127.0.0.1:{}/99", server.port),
            "DB index is out of range",
        ),
    ];
    for (url, words) in cases {
        let c = Cache::builder()
            .redis_url(&url)
            .prefix("refused")
            .build()
            .unwrap();
        // Calls run uncached meanwhile (and may be waiting on the
        // connection another caller makes): every one gets its value.
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..4u32 {
            let c = c.clone();
            calls.spawn(async move {
                let v = c.namespace("n").get_or_compute(&i, async move { i }).await;
                (i, v)
            });
        }
        while let Some(done) = calls.join_next().await {
            let (i, v) = done.unwrap();
            assert_eq!(v, i);
        }
        for _ in 0..3 {
            let err = c.ping().await.unwrap_err().to_string();
            assert!(err.contains(words), "{url}: {err}");
            assert!(
                !err.contains("right-pass") && !err.contains("wrong-pass"),
                "{err}"
            );
        }
    }
}

/// `Cache::shutdown`: an invalidation queued during an outage is sent as
/// soon as Redis answers (not at the retry worker's next backoff), and
/// shutdown returns once it landed; while Redis stays away it returns the
/// number left after its bound.
#[tokio::test]
async fn shutdown_waits_for_queued_invalidations_bounded() {
    let server = RedisServer::start();
    let url = server.url();
    let writer = Cache::builder()
        .redis_url(&url)
        .prefix("shutdown")
        .op_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let other_process = cache_at(&url, "shutdown");
    connected(&writer).await;
    connected(&other_process).await;
    let calls = Calls::default();
    outage(&other_process, &calls, 1).await.unwrap();

    server.freeze();
    assert_eq!(
        writer.namespace("outage").invalidate().await,
        Invalidation::Queued
    );
    assert_eq!(
        writer.namespace("outage").invalidate_key(&7).await,
        Invalidation::Queued
    );
    let started = Instant::now();
    assert_eq!(writer.shutdown(Duration::from_millis(300)).await, 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // Redis answers again while shutdown waits: it returns once they landed.
    let thaw = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.thaw();
        server
    });
    assert_eq!(writer.shutdown(Duration::from_secs(10)).await, 0);
    let _server = thaw.await.unwrap();
    assert!(!writer.has_queued_invalidations());
    let (_, s) = with_status(outage(&other_process, &calls, 1)).await;
    assert_eq!(s, Status::Miss, "the other process sees the invalidation");
}

/// `shutdown(within)` keeps its bound when Redis takes every command and
/// answers none (a proxy holds the requests): 200 queued key invalidations,
/// each of which would wait the operation timeout, and it still returns
/// after about `within`, with the count left.
#[tokio::test]
async fn shutdown_keeps_its_bound_when_redis_answers_nothing() {
    let server = RedisServer::start();
    let proxy = support::proxy::Proxy::start(server.port);
    let writer = Cache::builder()
        .redis_url(proxy.url())
        .prefix("shutdown-bound")
        .op_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    connected(&writer).await;
    proxy.hold_requests(true);
    let ns = writer.namespace("held");
    for k in 0..200u32 {
        assert_eq!(ns.invalidate_key(&k).await, Invalidation::Queued);
    }
    let started = Instant::now();
    let left = writer.shutdown(Duration::from_millis(300)).await;
    let waited = started.elapsed();
    assert!(left > 0, "{left}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    proxy.hold_requests(false);
}

/// `durable_invalidations` on one server: with a replica attached an
/// invalidation (its script and `WAIT` in one pipeline on one connection)
/// is `Done`, also the first use of a script on the server (`NOSCRIPT`,
/// loaded, sent again); with the replica frozen it is `Queued` after the
/// timeout, and lands once the replica answers; hits go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_invalidations_wait_for_a_replica() {
    let master = RedisServer::start();
    let port = master.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let mut admin = raw(&master.url()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut admin)
            .await
            .unwrap();
        if info.contains("connected_slaves:1") && info.contains("state=online") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never synced: {info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = Cache::builder()
        .redis_url(master.url())
        .prefix(unique_prefix("durable"))
        .durable_invalidations(1, Duration::from_millis(300))
        .build()
        .unwrap();
    connected(&c).await;
    let ns = c.namespace("durable").ttl(Duration::from_secs(60));
    let read = |v: u32| with_status(ns.get_or_compute(&1u32, async move { v }));
    assert_eq!(read(1).await, (1, Status::Miss));
    // No script has run on this server yet: NOSCRIPT, then loaded.
    assert_eq!(ns.invalidate_key(&1u32).await, Invalidation::Done);
    assert_eq!(ns.invalidate().await, Invalidation::Done);
    assert_eq!(read(2).await, (2, Status::Miss));

    replica.freeze();
    let started = Instant::now();
    assert_eq!(ns.invalidate().await, Invalidation::Queued);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Queued: this process reads the namespace from the source meanwhile.
    assert_eq!(read(3).await, (3, Status::Bypass));
    replica.thaw();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.has_queued_invalidations() {
        assert!(
            Instant::now() < deadline,
            "the queued invalidation never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read(4).await, (4, Status::Miss));
    assert_eq!(read(5).await, (4, Status::Hit));
}
