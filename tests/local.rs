//! The local (L1) tier and the invalidation channel: hits served in process,
//! evicted by other processes' invalidations within milliseconds, flushed
//! when the channel drops, never served past the local TTL, and a miss in
//! flight never inserts an invalidated value. Plus the channel's other use:
//! once a connection knows a namespace's generation, a hit is one `GET`.

mod support;

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Invalidation, Status, cached, with_status};
use redis::AsyncCommands;
use support::{RedisServer, connected, raw, redis_url, unique_prefix};
use tokio::sync::Notify;

fn cache_at(url: &str, prefix: &str, local: Option<Duration>) -> Cache {
    let b = Cache::builder()
        .redis_url(url)
        .prefix(prefix)
        .op_timeout(Duration::from_millis(200));
    match local {
        Some(ttl) => b.local(ttl),
        None => b,
    }
    .build()
    .unwrap()
}

async fn get(c: &Cache, key: u32, value: u32) -> (u32, Status) {
    with_status(
        c.namespace("price")
            .get_or_compute(&key, async move { value }),
    )
    .await
}

/// `INFO commandstats` calls of one command.
async fn calls(conn: &mut redis::aio::MultiplexedConnection, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let tag = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&tag))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_hit_reads_only_the_entry_once_the_generation_is_known() {
    let server = RedisServer::start();
    let c = cache_at(&server.url(), "views", None);
    connected(&c).await;
    let mut admin = raw(&server.url()).await;
    assert_eq!(get(&c, 1, 10).await, (10, Status::Miss));
    let (get0, mget0) = (
        calls(&mut admin, "get").await,
        calls(&mut admin, "mget").await,
    );
    for _ in 0..100 {
        assert_eq!(get(&c, 1, 11).await, (10, Status::Hit));
    }
    let (gets, mgets) = (
        calls(&mut admin, "get").await - get0,
        calls(&mut admin, "mget").await - mget0,
    );
    // Each kept connection learns the generation with one MGET.
    assert!(mgets <= 2, "{mgets} MGETs");
    assert!(gets >= 98, "{gets} GETs");
    // Another instance invalidates: the very next read sees it.
    let other = cache_at(&server.url(), "views", None);
    connected(&other).await;
    assert_eq!(
        other.namespace("price").invalidate().await,
        Invalidation::Done
    );
    assert_eq!(get(&c, 1, 12).await, (12, Status::Miss));
    assert_eq!(get(&c, 1, 13).await, (12, Status::Hit));
}

#[tokio::test]
async fn local_hits_take_no_round_trip() {
    let server = RedisServer::start();
    let c = cache_at(&server.url(), "l1", Some(Duration::from_secs(10)));
    let mut admin = raw(&server.url()).await;
    connected(&c).await;
    assert_eq!(get(&c, 1, 10).await, (10, Status::Miss));
    let before = calls(&mut admin, "get").await + calls(&mut admin, "mget").await;
    for _ in 0..1000 {
        assert_eq!(get(&c, 1, 11).await, (10, Status::Hit));
    }
    let after = calls(&mut admin, "get").await + calls(&mut admin, "mget").await;
    assert_eq!(after, before, "no reads reached Redis");
    let st = c.stats().total;
    assert_eq!((st.hits, st.local_hits), (1000, 1000), "{st:?}");
    // `local = false` on a call opts out of the cache-wide default.
    let (v, s) = with_status(
        c.namespace("price")
            .local(Duration::ZERO)
            .get_or_compute(&1u32, async { 0u32 }),
    )
    .await;
    assert_eq!((v, s), (10, Status::Hit));
    assert_eq!(c.stats().total.local_hits, 1000);
}

static DECODES: AtomicUsize = AtomicUsize::new(0);

/// A value whose decoding is counted.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Counted(u64);

impl<'de> serde::Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, Relaxed);
        u64::deserialize(d).map(Counted)
    }
}

/// The same, but not `Clone`: local hits decode.
#[derive(Debug, PartialEq, serde::Serialize)]
struct Uncloned(u64);

impl<'de> serde::Deserialize<'de> for Uncloned {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, Relaxed);
        u64::deserialize(d).map(Uncloned)
    }
}

#[cached(ns = "kept", ttl = "1m", local = "1m", keep_decoded, cache = c, skip(c))]
async fn kept(c: &Cache, id: u64) -> Counted {
    Counted(id)
}

#[cached(ns = "uncloned", ttl = "1m", local = "1m", cache = c, skip(c))]
async fn uncloned(c: &Cache, id: u64) -> Uncloned {
    Uncloned(id)
}

/// A `Clone` value is decoded by the first local hit and kept: the hits
/// after it clone it, and decode nothing. Other values decode per hit.
#[tokio::test]
async fn local_hits_of_a_clone_value_do_not_decode() {
    let server = RedisServer::start();
    let c = cache_at(&server.url(), "kept", None);
    connected(&c).await;
    for _ in 0..3 {
        assert_eq!(kept(&c, 1).await, Counted(1));
        assert_eq!(uncloned(&c, 1).await, Uncloned(1));
    }
    let local_before = c.stats().total.local_hits;
    let before = DECODES.load(Relaxed);
    for _ in 0..100 {
        assert_eq!(with_status(kept(&c, 1)).await, (Counted(1), Status::Hit));
    }
    let kept_decodes = DECODES.load(Relaxed) - before;
    for _ in 0..100 {
        assert_eq!(uncloned(&c, 1).await, Uncloned(1));
    }
    let uncloned_decodes = DECODES.load(Relaxed) - before - kept_decodes;
    assert_eq!(
        c.stats().total.local_hits - local_before,
        200,
        "all local hits"
    );
    assert_eq!(kept_decodes, 0, "kept after the first local hit");
    assert_eq!(uncloned_decodes, 100);
    // An invalidation drops the kept value with its entry.
    c.namespace("kept").invalidate().await;
    let (v, s) = with_status(kept(&c, 2)).await;
    assert_eq!((v, s), (Counted(2), Status::Miss));
}

#[tokio::test]
async fn another_instances_invalidation_evicts_the_local_tier_within_100ms() {
    let prefix = unique_prefix("l1_evict");
    let reader = cache_at(&redis_url(), &prefix, Some(Duration::from_secs(30)));
    let writer = cache_at(&redis_url(), &prefix, None);
    connected(&reader).await;
    connected(&writer).await;
    for round in 0..20u32 {
        let (key, v) = (round, round * 10);
        assert_eq!(get(&reader, key, v).await, (v, Status::Miss));
        assert_eq!(get(&reader, key, v + 1).await, (v, Status::Hit));
        let started = Instant::now();
        if round % 2 == 0 {
            writer.namespace("price").invalidate_key(&key).await;
        } else {
            writer.namespace("price").invalidate().await;
        }
        loop {
            let (got, status) = get(&reader, key, v + 5).await;
            if status == Status::Miss {
                assert_eq!(got, v + 5);
                break;
            }
            assert_eq!(got, v, "an old value, or the new one");
            assert!(
                started.elapsed() < Duration::from_millis(100),
                "round {round}: still served after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(reader.stats().total.local_hits >= 20);
}

#[tokio::test]
async fn a_lost_channel_flushes_the_local_tier() {
    let mut server = RedisServer::start();
    let c = cache_at(&server.url(), "l1_lost", Some(Duration::from_secs(30)));
    connected(&c).await;
    assert_eq!(get(&c, 1, 10).await, (10, Status::Miss));
    assert_eq!(get(&c, 1, 11).await, (10, Status::Hit));
    server.kill();
    // The connections report the disconnect; nothing from before is served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&c, 1, 12).await, (12, Status::Bypass));
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (v, s) = get(&c, 1, 13).await;
        if s == Status::Miss {
            assert_eq!(v, 13);
            break;
        }
        assert!(Instant::now() < deadline, "caching resumes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&c, 1, 14).await, (13, Status::Hit));
    assert!(c.stats().total.local_hits >= 1);
}

#[tokio::test]
async fn a_frozen_server_is_not_trusted_past_the_local_ttl() {
    let server = RedisServer::start();
    let c = cache_at(&server.url(), "l1_frozen", Some(Duration::from_millis(400)));
    connected(&c).await;
    assert_eq!(get(&c, 1, 10).await, (10, Status::Miss));
    let stored = Instant::now();
    server.freeze();
    // A frozen server sends no disconnect: the local TTL is the bound.
    let mut served_locally = 0;
    loop {
        let (v, s) = get(&c, 1, 20).await;
        let age = stored.elapsed();
        if s == Status::Hit {
            assert_eq!(v, 10);
            assert!(
                age <= Duration::from_millis(400),
                "served {age:?} after it was stored"
            );
            served_locally += 1;
        } else {
            assert_eq!((v, s), (20, Status::Bypass));
            assert!(age >= Duration::from_millis(390), "{age:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served_locally > 0);
    server.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_in_flight_does_not_insert_an_invalidated_value() {
    let prefix = unique_prefix("l1_placeholder");
    let reader = cache_at(&redis_url(), &prefix, Some(Duration::from_secs(30)));
    let writer = cache_at(&redis_url(), &prefix, None);
    connected(&reader).await;
    connected(&writer).await;
    for namespace_wide in [false, true] {
        let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let task = {
            let (reader, started, release) = (reader.clone(), started.clone(), release.clone());
            tokio::spawn(async move {
                with_status(reader.namespace("price").get_or_compute(&7u32, async move {
                    started.notify_one();
                    release.notified().await;
                    1u32 // read from the source before the write below
                }))
                .await
            })
        };
        started.notified().await;
        // The write lands and is invalidated while the body runs.
        if namespace_wide {
            writer.namespace("price").invalidate().await;
        } else {
            writer.namespace("price").invalidate_key(&7u32).await;
        }
        release.notify_one();
        assert_eq!(task.await.unwrap(), (1, Status::Miss));
        // Neither Redis nor the local tier kept the old value.
        assert_eq!(get(&reader, 7, 2).await, (2, Status::Miss));
        assert_eq!(get(&reader, 7, 3).await, (2, Status::Hit));
        writer.namespace("price").invalidate_key(&7u32).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CHILD: &str = "CACHE_ASIDE_LOCAL_CHILD";

/// Child process of `two_processes_local_tiers_follow_invalidations`: reads
/// one key with the local tier on, and prints each new value it sees with
/// the time it saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of two_processes_local_tiers_follow_invalidations"]
async fn local_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (prefix, last) = spec.split_once(' ').unwrap();
    let last: u64 = last.parse().unwrap();
    let c = cache_at(&redis_url(), prefix, Some(Duration::from_secs(30)));
    let source = raw(&redis_url()).await;
    let source_key = format!("{prefix}:source");
    let mut seen = u64::MAX;
    let mut out = std::io::stdout();
    while seen != last {
        let (mut conn, key) = (source.clone(), source_key.clone());
        let v: u64 = c
            .namespace("price")
            .get_or_compute(&1u32, async move {
                conn.get::<_, Option<u64>>(&key).await.unwrap().unwrap_or(0)
            })
            .await;
        if v != seen {
            seen = v;
            writeln!(out, "seen {v} {}", unix_micros()).unwrap();
            out.flush().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    writeln!(out, "local_hits {}", c.stats().total.local_hits).unwrap();
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Two OS processes: the child serves a key from its local tier; the parent
/// writes the source and invalidates (key and namespace, alternately). The
/// child sees every new value within 100 ms of the invalidation returning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_local_tiers_follow_invalidations() {
    const ROUNDS: u64 = 20;
    let prefix = unique_prefix("l1_processes");
    let writer = cache_at(&redis_url(), &prefix, None);
    connected(&writer).await;
    let mut source = raw(&redis_url()).await;
    let source_key = format!("{prefix}:source");
    let _: () = source.set(&source_key, 0u64).await.unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["local_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD, format!("{prefix} {ROUNDS}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut next_seen = async |want: u64| -> u64 {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the child reports within 10 s")
                .expect("the child is running");
            if let Some(rest) = line.strip_prefix("seen ") {
                let (v, t) = rest.split_once(' ').unwrap();
                if v.parse::<u64>().unwrap() == want {
                    return t.parse().unwrap();
                }
            }
        }
    };
    next_seen(0).await;
    let mut delays = vec![];
    for round in 1..=ROUNDS {
        // Let the child serve the current value from its local tier.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let _: () = source.set(&source_key, round).await.unwrap();
        if round % 2 == 0 {
            writer.namespace("price").invalidate().await;
        } else {
            writer.namespace("price").invalidate_key(&1u32).await;
        }
        let returned = unix_micros();
        let seen = next_seen(round).await;
        delays.push(seen.saturating_sub(returned));
    }
    let mut rest = String::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(child.wait().unwrap().success(), "{rest}");
    let local_hits: u64 = rest
        .lines()
        .find_map(|l| l.strip_prefix("local_hits "))
        .and_then(|n| n.parse().ok())
        .expect("the child reports its local hits");
    delays.sort_unstable();
    eprintln!(
        "propagation to another process (1 ms polling): p50 {} us, max {} us; child local hits {local_hits}",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    assert!(
        local_hits > ROUNDS * 5,
        "the child served from its local tier"
    );
    assert!(
        delays[delays.len() - 1] < 100_000,
        "every invalidation reached the other process within 100 ms: {delays:?}"
    );
}

/// The generation key evicted (and made again by the next claim, without a
/// notice): the views learn the new one, and caching resumes at once.
#[tokio::test]
async fn an_evicted_generation_is_learned_again() {
    let server = RedisServer::start();
    let c = cache_at(&server.url(), "evicted_gen", None);
    connected(&c).await;
    let mut admin = raw(&server.url()).await;
    assert_eq!(get(&c, 1, 10).await, (10, Status::Miss));
    assert_eq!(get(&c, 1, 11).await, (10, Status::Hit));
    // What allkeys-lru could do: the generation and the entry are gone.
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut statuses = vec![];
    for v in 20..25 {
        statuses.push(get(&c, 1, v).await.1);
    }
    // The first miss's claim makes a generation and stores under it; the
    // next read finds an entry of a generation its view does not know,
    // reads both, and learns it.
    assert_eq!(
        statuses,
        [
            Status::Miss,
            Status::Hit,
            Status::Hit,
            Status::Hit,
            Status::Hit
        ]
    );
}
