//! Fault injection (issue #6): the cache under a steady load while Redis is
//! killed and restarted, answers 2 s late, cuts replies in the middle, is
//! unreachable for an invalidation, or is full and evicting. Faults between
//! the cache and Redis come from `support::proxy`.
//!
//! Every call of a load is checked against the value its key determines and
//! is bounded in time; hit ratios are measured in 100 ms windows from the
//! `Status` of each call. The tests take turns (`SERIAL`): they measure
//! timings and should not share two cores with another load.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Invalidation, Status, cached, with_status};
use support::proxy::{Accept, End, Proxy};
use support::{RedisServer, connected, raw, unique_prefix};
use tokio::task::block_in_place;
use tokio::time::sleep;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Concurrent callers in a load.
const TASKS: u32 = 16;
/// Keys of the standard load.
const KEYS: u32 = 64;
/// Pause of each caller between calls: a steady load, not a flood.
const PACE: Duration = Duration::from_millis(2);
/// A call that takes longer than this counts as failed.
const CALL_BOUND: Duration = Duration::from_secs(2);
/// Hit ratios are measured per window of this length.
const WINDOW: Duration = Duration::from_millis(100);
/// Time the cached body takes.
const BODY: Duration = Duration::from_millis(1);

/// The value a key determines, which every call must return. About 1 KB,
/// so that a reply cut in half is cut inside the value.
fn expected(key: u32) -> String {
    format!("value-{key:04}|").repeat(64)
}

#[cached(ns = "load", cache = cache, skip(cache))]
async fn value(cache: &Cache, key: u32) -> String {
    sleep(BODY).await;
    expected(key)
}

/// One call of a load.
#[derive(Debug, Clone, Copy)]
struct Sample {
    key: u32,
    at: Instant,
    took: Duration,
    status: Status,
    /// Returned the expected value within `CALL_BOUND`.
    correct: bool,
}

/// `TASKS` callers calling in a loop until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl Load {
    /// Caller `t` calls `call(key_of(i))` for i = t * 97, t * 97 + 1, ...;
    /// `call` says whether the value was the expected one.
    fn start<F, Fut>(key_of: fn(u32) -> u32, call: F) -> Load
    where
        F: Fn(u32) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..TASKS)
            .map(|t| {
                let (stop, call) = (Arc::clone(&stop), call.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut i = t * 97;
                    while !stop.load(Relaxed) {
                        let key = key_of(i);
                        i += 1;
                        let at = Instant::now();
                        let r = tokio::time::timeout(CALL_BOUND, with_status(call(key))).await;
                        let (correct, status) = r.unwrap_or((false, Status::Bypass));
                        samples.push(Sample {
                            key,
                            at,
                            took: at.elapsed(),
                            status,
                            correct,
                        });
                        sleep(PACE).await;
                    }
                    samples
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// The standard load: `value` over `KEYS` keys.
    fn standard(cache: &Cache) -> Load {
        let cache = cache.clone();
        Load::start(
            |i| i % KEYS,
            move |key| {
                let cache = cache.clone();
                async move { value(&cache, key).await == expected(key) }
            },
        )
    }

    /// Stops the callers; every call they made, by start time.
    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("a caller panicked"));
        }
        all.sort_by_key(|s| s.at);
        all
    }
}

/// The calls that started in `[from, to)`.
fn between(samples: &[Sample], from: Instant, to: Instant) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .copied()
        .collect()
}

fn hit_ratio(samples: &[Sample]) -> f64 {
    let hits = samples.iter().filter(|s| s.status.is_hit()).count();
    hits as f64 / samples.len().max(1) as f64
}

/// Hit ratio of each whole `WINDOW` in `[from, to)`; `None`: no call started.
fn window_ratios(samples: &[Sample], from: Instant, to: Instant) -> Vec<Option<f64>> {
    let n = (to - from).as_millis() / WINDOW.as_millis();
    (0..n as u32)
        .map(|w| {
            let s = between(samples, from + WINDOW * w, from + WINDOW * (w + 1));
            (!s.is_empty()).then(|| hit_ratio(&s))
        })
        .collect()
}

/// How long after `from` the hit ratio got above `ratio` for good: the end
/// of the last window (of those in `[from, to)`) at or below it, or zero.
/// `None`: the last window is still at or below it.
fn recovered_after(samples: &[Sample], from: Instant, to: Instant, ratio: f64) -> Option<Duration> {
    let windows = window_ratios(samples, from, to);
    match windows.iter().rposition(|r| r.is_none_or(|r| r <= ratio)) {
        None => Some(Duration::ZERO),
        Some(last) if last + 1 == windows.len() => None,
        Some(last) => Some(WINDOW * (last as u32 + 1)),
    }
}

fn show(windows: &[Option<f64>]) -> String {
    let parts: Vec<String> = windows
        .iter()
        .map(|r| r.map_or("-".into(), |r| format!("{r:.2}")))
        .collect();
    parts.join(" ")
}

fn assert_all_correct(samples: &[Sample], what: &str) {
    let bad: Vec<&Sample> = samples.iter().filter(|s| !s.correct).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} calls failed, hung or returned a wrong value; first: {:?}",
        bad.len(),
        samples.len(),
        bad.first()
    );
    assert!(
        samples.len() > 1000,
        "{what}: a load of {} calls",
        samples.len()
    );
}

/// After a load: every key once more, in turn (so over every connection of
/// the cache), all hits. A connection left broken would show as bypasses.
async fn assert_all_hit(cache: &Cache, what: &str) {
    for key in 0..KEYS * 2 {
        let (v, s) = with_status(value(cache, key % KEYS)).await;
        assert_eq!(v, expected(key % KEYS));
        assert_eq!(s, Status::Hit, "{what}: call {key} after the load");
    }
}

/// The proxy does what the tests rely on, seen by a plain client sending
/// `PING` (reply `+PONG\r\n`, one chunk).
#[test]
fn the_proxy_injects_the_faults_it_claims() {
    use std::io::{ErrorKind, Read, Write};
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port);
    let connect = || {
        let c = std::net::TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c
    };
    let ping = |c: &mut std::net::TcpStream| -> (Vec<u8>, std::io::Result<usize>) {
        if let Err(e) = c.write_all(b"PING\r\n") {
            return (Vec::new(), Err(e)); // reset already seen
        }
        let (mut got, mut buf) = (Vec::new(), [0u8; 64]);
        loop {
            match c.read(&mut buf) {
                Ok(n) if n > 0 && got.len() + n < 7 => got.extend_from_slice(&buf[..n]),
                Ok(n) if n > 0 => {
                    got.extend_from_slice(&buf[..n]);
                    return (got, Ok(n));
                }
                end => return (got, end),
            }
        }
    };
    let is_reset = |r: &std::io::Result<usize>| match r {
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
        Ok(_) => false,
    };

    let mut c = connect();
    assert_eq!(ping(&mut c).0, b"+PONG\r\n");

    proxy.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(ping(&mut c).0, b"+PONG\r\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
    proxy.set_latency(Duration::ZERO);

    // Cut: half the reply, then a FIN (end of stream) or a RST.
    proxy.cut_replies(1, End::Close);
    let (got, end) = ping(&mut c);
    assert_eq!((&got[..], end.ok()), (&b"+PO"[..], Some(0)));
    proxy.cut_replies(1, End::Reset);
    let (got, end) = ping(&mut connect());
    assert!(b"+PO".starts_with(&got), "{got:?}");
    assert!(is_reset(&end), "{end:?}");
    proxy.cut_replies(0, End::Close);
    assert_eq!(proxy.cuts(), 2);

    let mut c = connect();
    assert_eq!(ping(&mut c).0, b"+PONG\r\n");
    proxy.drop_all();
    let (got, end) = ping(&mut c);
    assert!(got.is_empty() && is_reset(&end), "{got:?} {end:?}");

    proxy.set_accept(Accept::Refuse);
    let (got, end) = ping(&mut connect());
    assert!(got.is_empty() && is_reset(&end), "{got:?} {end:?}");

    proxy.set_accept(Accept::Blackhole);
    let mut c = connect();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let (got, end) = ping(&mut c);
    assert!(got.is_empty(), "{got:?}");
    assert!(
        matches!(&end, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "{end:?}"
    );
    proxy.drop_all();
    assert!(is_reset(&ping(&mut c).1));

    proxy.set_accept(Accept::Forward);
    assert_eq!(ping(&mut connect()).0, b"+PONG\r\n");
}

/// Redis killed (SIGKILL) under load, down 1 s, restarted empty: no call
/// fails, the hit ratio is back above 90% within 2 s of the restart, and no
/// connection stays broken (afterwards every call hits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let _turn = SERIAL.lock().await;
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix("killed"))
        .build()
        .unwrap();
    let load = Load::standard(&cache);
    sleep(Duration::from_secs(1)).await;
    block_in_place(|| server.kill());
    let killed = Instant::now();
    sleep(Duration::from_secs(1)).await;
    let restarting = Instant::now();
    block_in_place(|| server.restart()); // returns once it accepts connections
    let restarted = Instant::now();
    sleep(Duration::from_secs(3)).await;
    let end = Instant::now();
    let samples = load.stop().await;

    assert_all_correct(&samples, "kill and restart");
    let down = between(&samples, killed, restarting);
    let served: Vec<(Duration, &Sample)> = down
        .iter()
        .filter(|s| s.status != Status::Bypass)
        .map(|s| (s.at - killed, s))
        .collect();
    assert!(
        served.is_empty(),
        "{} calls after the kill were not bypasses (time after the kill, call): {served:?}",
        served.len()
    );
    let windows = window_ratios(&samples, restarted, end);
    let recovered = recovered_after(&samples, restarted, end, 0.9);
    eprintln!(
        "kill/restart: {} calls; hit ratio per {WINDOW:?} after the restart: {}; above 0.9 for good after {recovered:?}",
        samples.len(),
        show(&windows)
    );
    assert!(
        recovered.is_some_and(|d| d <= Duration::from_secs(2)),
        "hit ratio not back above 0.9 within 2 s of the restart: {}",
        show(&windows)
    );
    let last_second = between(&samples, end - Duration::from_secs(1), end);
    let not_hits: Vec<&Sample> = last_second.iter().filter(|s| !s.status.is_hit()).collect();
    assert!(
        not_hits.is_empty(),
        "{} of {} calls in the last second did not hit; first: {:?}",
        not_hits.len(),
        last_second.len(),
        not_hits.first()
    );
    assert_all_hit(&cache, "kill and restart").await;
}

/// Every Redis reply delayed by 2 s for 3 s: every call still returns
/// within the operation timeout plus the body plus slack; only the calls in
/// flight when Redis slowed down and one probe per breaker cooldown pay the
/// timeout; after the latency is gone the breaker closes and calls hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_opens_the_breaker_and_it_closes_after() {
    let _turn = SERIAL.lock().await;
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port);
    let op_timeout = Duration::from_millis(100);
    let cooldown = Duration::from_millis(500);
    let cache = Cache::builder()
        .redis_url(proxy.url())
        .prefix(unique_prefix("slow"))
        .op_timeout(op_timeout)
        .circuit_breaker(3, cooldown)
        .build()
        .unwrap();
    let load = Load::standard(&cache);
    sleep(Duration::from_secs(1)).await;
    proxy.set_latency(Duration::from_secs(2));
    let slow_from = Instant::now();
    sleep(Duration::from_secs(3)).await;
    proxy.set_latency(Duration::ZERO);
    let slow_to = Instant::now();
    sleep(Duration::from_secs(2)).await;
    let end = Instant::now();
    let samples = load.stop().await;

    assert_all_correct(&samples, "latency");
    // Far below the 2 s Redis latency: the op timeout is what bounds a call.
    let slack = Duration::from_millis(400);
    let slowest = samples.iter().max_by_key(|s| s.took).unwrap();
    assert!(
        slowest.took < op_timeout + BODY + slack,
        "a call took {:?} (bound: op timeout {op_timeout:?} + body {BODY:?} + slack {slack:?}): {slowest:?}",
        slowest.took
    );
    let slow = between(&samples, slow_from, slow_to);
    assert!(
        slow.iter().all(|s| s.status == Status::Bypass),
        "no reply arrives within the op timeout while Redis is slow"
    );
    let paid = slow.iter().filter(|s| s.took >= op_timeout).count();
    // Each caller in flight when Redis slowed down pays once; then one probe
    // per cooldown (two, allowing for a probe racing a cooldown's end).
    let probes = 2 * ((slow_to - slow_from).as_millis() / cooldown.as_millis() + 1) as usize;
    let allowed = TASKS as usize + probes;
    eprintln!(
        "latency: {} calls while Redis was slow, {paid} paid the {op_timeout:?} timeout (allowed {allowed}); slowest call {:?}",
        slow.len(),
        slowest.took
    );
    assert!(
        paid <= allowed,
        "{paid} of {} calls paid the op timeout: the breaker did not stop it",
        slow.len()
    );
    let windows = window_ratios(&samples, slow_to, end);
    let recovered = recovered_after(&samples, slow_to, end, 0.9);
    eprintln!(
        "latency: hit ratio per {WINDOW:?} after the latency was removed: {}; above 0.9 for good after {recovered:?}",
        show(&windows)
    );
    assert!(
        recovered.is_some_and(|d| d <= Duration::from_secs(2)),
        "the breaker did not close within 2 s: {}",
        show(&windows)
    );
    assert_all_hit(&cache, "latency").await;
}

/// Replies cut in the middle, every 20th reply chunk, with a RST and then
/// with a FIN; then every connection reset and new ones refused for a
/// moment. No call fails and none returns a wrong value; once the faults
/// stop, caching recovers. (A short breaker cooldown keeps traffic, and so
/// cuts, coming during the faults.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_cut_mid_way_never_fail_a_call_or_return_a_wrong_value() {
    let _turn = SERIAL.lock().await;
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port);
    let cache = Cache::builder()
        .redis_url(proxy.url())
        .prefix(unique_prefix("cut"))
        .circuit_breaker(3, Duration::from_millis(100))
        .build()
        .unwrap();
    let load = Load::standard(&cache);
    sleep(Duration::from_millis(500)).await;
    let from = Instant::now();
    proxy.cut_replies(20, End::Reset);
    sleep(Duration::from_millis(1500)).await;
    let resets = proxy.cuts();
    proxy.cut_replies(20, End::Close);
    sleep(Duration::from_millis(1500)).await;
    proxy.cut_replies(0, End::Close);
    let cuts = proxy.cuts();
    proxy.set_accept(Accept::Refuse);
    proxy.drop_all();
    sleep(Duration::from_millis(300)).await;
    proxy.set_accept(Accept::Forward);
    let to = Instant::now();
    sleep(Duration::from_secs(2)).await;
    let end = Instant::now();
    let samples = load.stop().await;

    assert_all_correct(&samples, "cut replies");
    let during = between(&samples, from, to);
    let st = cache.stats().total;
    eprintln!(
        "cut replies: {resets} reset and {} closed mid-reply, {} connections accepted; {} calls during the faults, hit ratio {:.2}; stats {st:?}",
        cuts - resets,
        proxy.accepted(),
        during.len(),
        hit_ratio(&during)
    );
    assert!(
        resets >= 10 && cuts - resets >= 10,
        "faults injected: {resets} resets, {} closes",
        cuts - resets
    );
    assert!(
        during.iter().any(|s| s.status == Status::Hit),
        "the cache served hits between the cuts"
    );
    assert!(st.errors > 0, "the cuts were seen as errors");
    let windows = window_ratios(&samples, to, end);
    let recovered = recovered_after(&samples, to, end, 0.9);
    eprintln!(
        "cut replies: hit ratio per {WINDOW:?} after the faults: {}; above 0.9 for good after {recovered:?}",
        show(&windows)
    );
    assert!(
        recovered.is_some_and(|d| d <= Duration::from_secs(2)),
        "caching did not recover within 2 s: {}",
        show(&windows)
    );
    assert_all_hit(&cache, "cut replies").await;
}

/// A namespace invalidation while this process cannot reach Redis (its
/// connections reset, new ones blackholed) is queued, not failed; this
/// process reads from the source meanwhile; another process that still
/// reaches Redis serves the old value at most for its TTL; when Redis is
/// reachable again the invalidation lands and the other process misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_while_redis_is_unreachable_lands_when_it_returns() {
    let _turn = SERIAL.lock().await;
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port);
    let prefix = unique_prefix("queued");
    let writer = Cache::builder()
        .redis_url(proxy.url())
        .prefix(&prefix)
        .op_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let other = Cache::builder()
        .redis_url(server.url())
        .prefix(&prefix)
        .build()
        .unwrap();
    // The "database": version * 1000 + key.
    let db = AtomicU64::new(1);
    let (long_ttl, short_ttl) = (Duration::from_secs(60), Duration::from_millis(1500));
    let (long_key, short_key) = (1u64, 2u64);
    let read = |cache: &Cache, key: u64| {
        let ttl = if key == long_key { long_ttl } else { short_ttl };
        let v = db.load(Relaxed) * 1000 + key;
        let cache = cache.clone();
        async move {
            with_status(
                cache
                    .namespace("item")
                    .ttl(ttl)
                    .get_or_compute(&key, async { v }),
            )
            .await
        }
    };
    // The writer's connections are up: hits in a row.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut hits_in_a_row = 0;
    while hits_in_a_row < 4 {
        let warm = writer.namespace("warm");
        match with_status(warm.get_or_compute(&0, async { 0 })).await.1 {
            Status::Hit => hits_in_a_row += 1,
            _ => hits_in_a_row = 0,
        }
        assert!(Instant::now() < deadline, "the writer never reached Redis");
    }
    connected(&other).await;
    assert_eq!(read(&other, long_key).await, (1001, Status::Miss));
    assert_eq!(read(&other, short_key).await, (1002, Status::Miss));
    let short_stored = Instant::now();
    assert_eq!(read(&writer, long_key).await, (1001, Status::Hit));
    assert_eq!(read(&writer, short_key).await, (1002, Status::Hit));

    // The writer loses Redis, then writes.
    proxy.set_accept(Accept::Blackhole);
    proxy.drop_all();
    db.store(2, Relaxed);
    let started = Instant::now();
    let inv = writer.namespace("item").invalidate().await;
    let took = started.elapsed();
    assert_eq!(inv, Invalidation::Queued, "the write is not failed");
    assert!(
        took < Duration::from_millis(500),
        "invalidate took {took:?}"
    );
    assert!(writer.has_queued_invalidations());
    // The writer reads from the source until it lands.
    assert_eq!(read(&writer, long_key).await, (2001, Status::Bypass));

    // The other process serves the old values, the short one only until
    // its TTL (plus its read's own slack) is over.
    let ttl_over = short_stored + short_ttl + Duration::from_millis(50);
    let mut old_reads = 0;
    loop {
        let now = Instant::now();
        let (v, _) = read(&other, short_key).await;
        if v == 2002 {
            eprintln!(
                "queued invalidation: the other process served the old value of a {short_ttl:?}-TTL entry {old_reads} times, then the new one {:?} after it was stored",
                now - short_stored
            );
            break;
        }
        assert_eq!(v, 1002);
        assert!(
            now < ttl_over,
            "an old value read {:?} after its TTL ended",
            now - ttl_over
        );
        old_reads += 1;
        assert_eq!(read(&other, long_key).await.0, 1001, "within its TTL");
        sleep(Duration::from_millis(50)).await;
    }
    assert!(old_reads > 0);
    assert!(writer.has_queued_invalidations(), "still unreachable");

    proxy.set_accept(Accept::Forward);
    let back = Instant::now();
    while writer.has_queued_invalidations() {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the queued invalidation did not land within 5 s"
        );
        sleep(Duration::from_millis(5)).await;
    }
    let landed = back.elapsed();
    eprintln!("queued invalidation: landed {landed:?} after Redis was reachable again");
    let st = writer.stats().namespaces["item"];
    assert_eq!(
        (st.invalidations_queued, st.invalidations),
        (1, 1),
        "{st:?}"
    );
    // The other process misses instead of reading the old value.
    assert_eq!(read(&other, long_key).await, (2001, Status::Miss));
    let (v, _) = read(&writer, long_key).await;
    assert_eq!(v, 2001);
}

/// `maxmemory 2mb` with `allkeys-lru` under a load that needs about 4 MB:
/// 8 hot keys read all the time and 400 cold keys, 10 KB each. Evictions
/// happen; each is a miss, never an error or a wrong value, and the hot
/// keys mostly stay cached. (`tests/redis.rs` covers eviction of sequential
/// writes; this is the concurrent version, with leases and coalesced
/// callers on keys being evicted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_under_load_is_a_miss_never_an_error() {
    const HOT: u32 = 8;
    const COLD: u32 = 400;
    fn blob(key: u32) -> String {
        format!("blob-{key:05}|").repeat(910) // 10,010 bytes
    }
    let _turn = SERIAL.lock().await;
    let server =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]);
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix(unique_prefix("evict"))
        // Eviction is under test, not timeouts on a loaded machine.
        .op_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let c = cache.clone();
    let load = Load::start(
        |i| {
            if i % 2 == 0 {
                i / 2 % HOT
            } else {
                HOT + i / 2 % COLD
            }
        },
        move |key| {
            let c = c.clone();
            async move {
                let v = c
                    .namespace("blob")
                    .get_or_compute(&key, async move { blob(key) })
                    .await;
                v == blob(key)
            }
        },
    );
    sleep(Duration::from_secs(3)).await;
    let samples = load.stop().await;

    assert_all_correct(&samples, "eviction");
    let st = cache.stats().namespaces["blob"];
    assert_eq!(
        (st.errors, st.decode_errors, st.bypasses),
        (0, 0, 0),
        "{st:?}"
    );
    let mut conn = raw(&server.url()).await;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let evicted: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("evicted_keys in INFO stats");
    let mut misses_per_key = std::collections::HashMap::<u32, u32>::new();
    for s in samples.iter().filter(|s| s.status == Status::Miss) {
        *misses_per_key.entry(s.key).or_default() += 1;
    }
    let recomputed = misses_per_key.values().filter(|&&n| n > 1).count();
    let (hot, cold): (Vec<Sample>, Vec<Sample>) = samples.iter().partition(|s| s.key < HOT);
    eprintln!(
        "eviction: {} calls, {evicted} keys evicted, {recomputed} keys computed again after eviction; hit ratio hot {:.2}, cold {:.2}; stats {st:?}",
        samples.len(),
        hit_ratio(&hot),
        hit_ratio(&cold)
    );
    assert!(evicted > 0, "Redis evicted keys");
    assert!(
        recomputed > 0,
        "evicted entries were misses, computed again"
    );
    // Redis's LRU is approximate (sampled, with a 1 s clock), and an
    // evicted generation token makes every entry of the namespace a miss:
    // the hot keys are evicted now and then, but mostly stay cached.
    assert!(
        hit_ratio(&hot) > 0.5,
        "caching still works under memory pressure: hot hit ratio {:.2}",
        hit_ratio(&hot)
    );
}
