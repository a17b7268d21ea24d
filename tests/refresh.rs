//! Refreshes in the background: with `stale`, every caller inside the
//! window gets the stale entry at once and one task, across processes,
//! recomputes it; a refresh that fails keeps the entry.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Status, cached, with_status};
use support::{connected, redis_url, unique_prefix};

// The TTL (which bounds the refresh lock, as it bounds a lease) well above
// the body's 300 ms: a refresh slowed down by a loaded machine must not
// outlive its lock, or a second caller wins a second refresh.
#[cached(ns = "bg", ttl = "900ms", stale = "10s", cache = cache, skip(cache, runs))]
async fn slow_count(cache: &Cache, runs: &Arc<AtomicUsize>, id: u32) -> usize {
    tokio::time::sleep(Duration::from_millis(300)).await;
    runs.fetch_add(1, SeqCst) + 1 + id as usize
}

async fn instance(prefix: &str) -> Cache {
    let c = Cache::builder()
        .redis_url(redis_url())
        .prefix(prefix)
        .build()
        .unwrap();
    connected(&c).await;
    c
}

/// 20 callers on two instances (two processes, as far as the cache can
/// tell) inside the stale window: all are served the stale value at once,
/// the body runs once, and the refreshed value is served afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_in_the_window_are_served_at_once_and_the_body_runs_once() {
    let prefix = unique_prefix("bg_refresh");
    let (a, b) = (instance(&prefix).await, instance(&prefix).await);
    let runs = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        with_status(slow_count(&a, &runs, 0)).await,
        (1, Status::Miss)
    );
    tokio::time::sleep(Duration::from_millis(1000)).await; // past the TTL, inside `stale`
    let mut tasks = vec![];
    for i in 0..20 {
        let (c, runs) = (if i % 2 == 0 { a.clone() } else { b.clone() }, runs.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let out = with_status(slow_count(&c, &runs, 0)).await;
            (out, t.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (out, took) = t.await.unwrap();
        assert_eq!(
            out,
            (1, Status::Stale),
            "every caller in the window gets the stale value"
        );
        slowest = slowest.max(took);
    }
    eprintln!("slowest of 20 callers in the stale window: {slowest:?} (the body takes 300 ms)");
    assert!(slowest < Duration::from_millis(150), "{slowest:?}");
    // The refresh lands in the background: then everyone reads the new value.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (v, s) = with_status(slow_count(&b, &runs, 0)).await;
        if (v, s) == (2, Status::Hit) {
            break;
        }
        assert_eq!(v, 1, "stale until the refresh landed");
        assert!(Instant::now() < deadline, "the refresh never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runs.load(SeqCst), 2, "the first miss and one refresh");
    assert_eq!(
        with_status(slow_count(&a, &runs, 0)).await,
        (2, Status::Hit)
    );
    let refreshes = a.stats().total.refreshes + b.stats().total.refreshes;
    assert_eq!(refreshes, 1);
}

#[cached(ns = "bg_fail", ttl = "200ms", stale = "10s", cache = cache, skip(cache, runs))]
async fn flaky(cache: &Cache, runs: &Arc<AtomicUsize>) -> Result<u32, String> {
    if runs.fetch_add(1, SeqCst) == 0 {
        Ok(7)
    } else {
        Err("the database is down".into())
    }
}

/// A refresh whose body fails keeps the stale entry, and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_entry() {
    let c = instance(&unique_prefix("bg_fail")).await;
    let runs = Arc::new(AtomicUsize::new(0));
    assert_eq!(flaky(&c, &runs).await, Ok(7));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(with_status(flaky(&c, &runs)).await, (Ok(7), Status::Stale));
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.stats().total.refresh_errors == 0 {
        assert!(Instant::now() < deadline, "the refresh never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(runs.load(SeqCst), 2);
    assert_eq!(with_status(flaky(&c, &runs)).await, (Ok(7), Status::Stale));
}
