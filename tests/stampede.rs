//! Stampedes and stale sets: in-process single-flight, the cross-process
//! lease (several `Cache` instances, and several OS processes: this test
//! binary re-executing itself), lease expiry, stale-while-revalidate and
//! early refresh, and a randomized checker of read-after-invalidation.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Status, cached, with_status};
use redis::AsyncCommands;
use support::checker::check_linearizable;
use support::{Backend, cache, connected, raw, redis_url, unique_prefix};

on_every_backend!(
    concurrent_misses_run_the_body_once,
    a_clone_error_is_shared_and_not_cached,
    a_dropped_leader_does_not_strand_its_followers,
);

#[cached(ns = "slow", cache = cache, skip(cache, calls))]
async fn slow(cache: &Cache, calls: &AtomicUsize, id: u32) -> Result<u64, String> {
    calls.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(u64::from(id) * 10)
}

async fn concurrent_misses_run_the_body_once(b: Backend) {
    let c = cache(b, "single_flight").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..50 {
        let (c, calls) = (c.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            with_status(slow(&c, &calls, 7)).await
        }));
    }
    let mut statuses = vec![];
    for t in tasks {
        let (v, s) = t.await.unwrap();
        assert_eq!(v, Ok(70));
        statuses.push(s);
    }
    assert_eq!(
        calls.load(SeqCst),
        1,
        "one body run for 50 concurrent callers"
    );
    assert_eq!(statuses.iter().filter(|s| **s == Status::Miss).count(), 1);
    let st = c.stats().namespaces["slow"];
    assert_eq!((st.misses, st.coalesced), (1, 49));
}

#[derive(Debug, Clone, PartialEq)]
struct Flaky(&'static str);

#[cached(ns = "failing", cache = cache, skip(cache, calls))]
async fn failing(cache: &Cache, calls: &AtomicUsize) -> Result<u64, Flaky> {
    calls.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Err(Flaky("db down"))
}

async fn a_clone_error_is_shared_and_not_cached(b: Backend) {
    let c = cache(b, "shared_error").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..20 {
        let (c, calls) = (c.clone(), calls.clone());
        tasks.push(tokio::spawn(async move { failing(&c, &calls).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(Flaky("db down")));
    }
    assert_eq!(
        calls.load(SeqCst),
        1,
        "the followers got the leader's error"
    );
    assert_eq!(failing(&c, &calls).await, Err(Flaky("db down")));
    assert_eq!(calls.load(SeqCst), 2, "errors are not cached");
}

async fn a_dropped_leader_does_not_strand_its_followers(b: Backend) {
    let c = cache(b, "dropped_leader").await;
    let calls = Arc::new(AtomicUsize::new(0));
    // The leader gives up after 50 ms (its client went away) ...
    let leader = {
        let (c, calls) = (c.clone(), calls.clone());
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(50), slow(&c, &calls, 3)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut followers = vec![];
    for _ in 0..10 {
        let (c, calls) = (c.clone(), calls.clone());
        followers.push(tokio::spawn(async move { slow(&c, &calls, 3).await }));
    }
    assert!(leader.await.unwrap().is_err(), "the leader timed out");
    // ... and its followers still get the value: one of them leads.
    for f in followers {
        assert_eq!(f.await.unwrap(), Ok(30));
    }
    assert_eq!(
        calls.load(SeqCst),
        2,
        "the dropped leader's run and one more"
    );
}

/// P `Cache` instances sharing a prefix stand for P processes: no
/// in-process coalescing between them, only the Redis lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_prefix_run_the_body_once() {
    let prefix = unique_prefix("instances");
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for _ in 0..4 {
        let c = Cache::builder()
            .redis_url(redis_url())
            .prefix(&prefix)
            .build()
            .unwrap();
        connected(&c).await;
        for _ in 0..50 {
            let (c, calls) = (c.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                with_status(slow(&c, &calls, 9)).await
            }));
        }
    }
    let mut hits = 0;
    for t in tasks {
        let (v, s) = t.await.unwrap();
        assert_eq!(v, Ok(90));
        hits += usize::from(s.is_hit());
    }
    assert_eq!(
        calls.load(SeqCst),
        1,
        "one body run across 4 instances x 50 tasks"
    );
    assert_eq!(hits, 199);
}

const CHILD: &str = "CACHE_ASIDE_STAMPEDE_CHILD";

/// The workload of one child process (run only when re-executed by the
/// test below): 50 tasks call a cold key whose body sleeps 200 ms and
/// increments a Redis counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of four_processes_run_the_body_once"]
async fn stampede_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.split(' ');
    let (prefix, start_ms) = (parts.next().unwrap(), parts.next().unwrap());
    let start: u64 = start_ms.parse().unwrap();
    let c = Cache::builder()
        .redis_url(redis_url())
        .prefix(prefix)
        .build()
        .unwrap();
    connected(&c).await;
    // Start together with the other processes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(start.saturating_sub(now))).await;
    let counter = format!("{prefix}:body_runs");
    let mut tasks = vec![];
    for _ in 0..50 {
        let (c, counter) = (c.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            c.namespace("cold")
                .get_or_compute(&1, async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let mut conn = raw(&redis_url()).await;
                    let n: u64 = conn.incr(&counter, 1).await.unwrap();
                    n
                })
                .await
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            1,
            "every task sees the one computed value"
        );
    }
}

#[tokio::test]
async fn four_processes_run_the_body_once() {
    let prefix = unique_prefix("processes");
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1500;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["stampede_child", "--exact", "--ignored", "--nocapture"])
                .env(CHILD, format!("{prefix} {start}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("1 passed"),
            "the child ran its workload: {text}"
        );
    }
    let mut conn = raw(&redis_url()).await;
    let runs: u64 = conn.get(format!("{prefix}:body_runs")).await.unwrap();
    assert_eq!(
        runs, 1,
        "4 processes x 50 tasks on one cold key: one body run"
    );
}

#[tokio::test]
async fn a_crashed_owners_lease_expires_and_lock_wait_is_bounded() {
    let c = cache(Backend::Redis, "lease_expiry").await;
    let key = c.entry_key("leased", &1).unwrap();
    let mut conn = raw(&redis_url()).await;
    // A lease as a crashed process would leave it (see `entry/mod.rs`):
    // 0xCC, a nonce of 16 hex digits, the lease's end in unix ms on the
    // server's clock as 16 decimal digits, and `w` (others wait for it).
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let server_now = secs * 1000 + micros / 1000;
    let lease = |ms: u64| {
        let mut l = vec![0xCC];
        l.extend_from_slice(b"0123456789abcdef");
        l.extend_from_slice(format!("{:016}", server_now + ms).as_bytes());
        l.push(b'w');
        l
    };
    let _: () = conn.pset_ex(&key, lease(400), 400).await.unwrap();
    let started = Instant::now();
    let (v, _) = with_status(c.namespace("leased").get_or_compute(&1, async { 5u8 })).await;
    let waited = started.elapsed();
    assert_eq!(v, 5);
    assert!(
        waited >= Duration::from_millis(350),
        "it waited for the lease: {waited:?}"
    );
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    assert_eq!(c.stats().namespaces["leased"].lease_waits, 1);
    // A lease that would outlive the wait: lock_wait bounds the wait.
    let key2 = c.entry_key("leased", &2).unwrap();
    let _: () = conn.pset_ex(&key2, lease(60_000), 60_000).await.unwrap();
    let started = Instant::now();
    let v = c
        .namespace("leased")
        .lock_wait(Duration::from_millis(200))
        .get_or_compute(&2, async { 6u8 })
        .await;
    assert_eq!(v, 6);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    // lock = false: no lease, no wait.
    let key3 = c.entry_key("leased", &3).unwrap();
    let _: () = conn.pset_ex(&key3, lease(60_000), 60_000).await.unwrap();
    let started = Instant::now();
    c.namespace("leased")
        .lock(false)
        .get_or_compute(&3, async { 7u8 })
        .await;
    assert!(started.elapsed() < Duration::from_millis(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_refreshes_once_across_instances() {
    let prefix = unique_prefix("swr");
    let runs = Arc::new(AtomicUsize::new(0));
    let instances: Vec<Cache> = (0..4)
        .map(|_| {
            Cache::builder()
                .redis_url(redis_url())
                .prefix(&prefix)
                .build()
                .unwrap()
        })
        .collect();
    for c in &instances {
        connected(c).await;
    }
    let get = |c: Cache, runs: Arc<AtomicUsize>| async move {
        with_status(
            c.namespace("swr")
                .ttl(Duration::from_millis(300))
                .stale(Duration::from_secs(10))
                .get_or_compute(&1, async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    runs.fetch_add(1, SeqCst) + 1
                }),
        )
        .await
    };
    assert_eq!(
        get(instances[0].clone(), runs.clone()).await,
        (1, Status::Miss)
    );
    tokio::time::sleep(Duration::from_millis(400)).await; // past the TTL, inside the stale window
    let started = Instant::now();
    let mut tasks = vec![];
    for c in &instances {
        for _ in 0..10 {
            tasks.push(tokio::spawn(get(c.clone(), runs.clone())));
        }
    }
    let mut stale = 0;
    for t in tasks {
        let (v, s) = t.await.unwrap();
        if s == Status::Stale {
            assert_eq!(v, 1, "stale reads get the old value");
            stale += 1;
        } else {
            assert_eq!((v, s), (2, Status::Miss), "the one refresher");
        }
    }
    assert_eq!(stale, 39, "all but the refresher were served stale");
    assert_eq!(runs.load(SeqCst), 2, "exactly one refresh in the window");
    assert!(started.elapsed() < Duration::from_secs(2));
    let (v, s) = get(instances[3].clone(), runs.clone()).await;
    assert_eq!((v, s), (2, Status::Hit), "the refreshed entry is fresh");
    let refreshes: u64 = instances.iter().map(|c| c.stats().total.refreshes).sum();
    let served: u64 = instances.iter().map(|c| c.stats().total.stale_served).sum();
    assert_eq!((refreshes, served), (1, 39));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_refreshes_once_per_window_across_instances() {
    let prefix = unique_prefix("xfetch");
    let runs = Arc::new(AtomicUsize::new(0));
    let instances: Vec<Cache> = (0..4)
        .map(|_| {
            Cache::builder()
                .redis_url(redis_url())
                .prefix(&prefix)
                .build()
                .unwrap()
        })
        .collect();
    for c in &instances {
        connected(c).await;
    }
    let get = |c: Cache, runs: Arc<AtomicUsize>| async move {
        with_status(
            c.namespace("xfetch")
                .ttl(Duration::from_secs(2))
                // A huge beta: every hit wants to refresh early.
                .early_refresh(1e6)
                .get_or_compute(&1, async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    runs.fetch_add(1, SeqCst) + 1
                }),
        )
        .await
    };
    assert_eq!(
        get(instances[0].clone(), runs.clone()).await.1,
        Status::Miss
    );
    let mut tasks = vec![];
    for c in &instances {
        for _ in 0..10 {
            tasks.push(tokio::spawn(get(c.clone(), runs.clone())));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        runs.load(SeqCst),
        2,
        "one early refresh for 40 eager callers"
    );
    let early: u64 = instances
        .iter()
        .map(|c| c.stats().total.early_refreshes)
        .sum();
    assert_eq!(early, 1);
}

/// 8 readers and 2 writers for 10 s over 20 keys, random delays inside the
/// bodies: every read that starts after a write's invalidation returned
/// must see that write or a later one.
/// Readers on one cache, writers on one cache (the same, or another
/// instance sharing the prefix, as another process would): once an
/// invalidation returns, no read that starts later returns an older value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_never_see_a_write_older_than_a_returned_invalidation() {
    let c = cache(Backend::Redis, "checker").await;
    check_linearizable(c.clone(), c, None).await;
}

/// The same across two instances: readers trust their connections'
/// generation views (a hit is one GET), so this checks that a view is never
/// older than the reply it is compared with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_across_instances_never_see_an_older_write() {
    let prefix = unique_prefix("checker2");
    let instance = || {
        Cache::builder()
            .redis_url(redis_url())
            .prefix(&prefix)
            .build()
            .unwrap()
    };
    check_linearizable(instance(), instance(), None).await;
}

/// With the local tier on: in the process that invalidates, it is as strict
/// as Redis (invalidations apply to it before they return).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_with_the_local_tier_never_see_an_older_write() {
    let c = cache(Backend::Redis, "checker_local").await;
    check_linearizable(c.clone(), c, Some(Duration::from_secs(10))).await;
}

#[cached(ns = "swr_macro", ttl = "300ms", stale = "10s", refresh = "inline", lock_wait = "1s", lease = "5s", cache = cache, skip(cache, runs))]
async fn swr_macro(cache: &Cache, runs: &AtomicUsize) -> usize {
    runs.fetch_add(1, SeqCst) + 1
}

#[cached(ns = "unlocked", lock = false, early_refresh = 2.0, cache = cache, skip(cache))]
async fn unlocked(cache: &Cache, x: u32) -> u32 {
    x
}

#[tokio::test]
async fn the_attribute_takes_the_stampede_options() {
    let c = cache(Backend::Redis, "macro_options").await;
    let runs = AtomicUsize::new(0);
    assert_eq!(with_status(swr_macro(&c, &runs)).await, (1, Status::Miss));
    assert_eq!(with_status(swr_macro(&c, &runs)).await, (1, Status::Hit));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past the TTL: this call wins the refresh and (inline) runs the body;
    // the next is fresh again.
    assert_eq!(with_status(swr_macro(&c, &runs)).await, (2, Status::Miss));
    assert_eq!(with_status(swr_macro(&c, &runs)).await, (2, Status::Hit));
    assert_eq!(unlocked(&c, 4).await, 4);
    assert_eq!(with_status(unlocked(&c, 4)).await, (4, Status::Hit));
}
