//! The consistency probe (`#[cached(verify = p)]`): a sampled share of hits
//! is recomputed in the background and compared with what was served. An
//! entry made stale behind the library's back (a write to the database
//! that invalidates nothing) is detected; a correct cache reports none; an
//! entry invalidated before the probe compares is not counted (the cache
//! already knew).

mod support;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Counts, cached, invalidates};
use support::{Backend, Calls, cache};

/// A "database": one count per route, written directly by the tests.
#[derive(Default)]
struct Db {
    rows: Mutex<std::collections::HashMap<String, u64>>,
    /// How long a read takes (to let an invalidation land during a probe).
    delay_ms: AtomicU64,
}

impl Db {
    async fn count(&self, route: &str) -> u64 {
        let delay = self.delay_ms.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.rows.lock().unwrap().get(route).copied().unwrap_or(0)
    }
    fn set(&self, route: &str, n: u64) {
        self.rows.lock().unwrap().insert(route.into(), n);
    }
}

#[cached(ns = "verify_count", ttl = "5m", verify = 1.0, cache = cache, skip(cache, db, calls))]
async fn count(
    cache: &Cache,
    db: &Arc<Db>,
    calls: &Arc<Calls>,
    route: &str,
) -> Result<u64, String> {
    calls.hit();
    Ok(db.count(route).await)
}

#[invalidates("verify_count", key(route), cache = cache)]
async fn invalidate(cache: &Cache, route: &str) {
    let _ = route;
}

/// Waits (at most 5 s) until the namespace's counts satisfy `done`.
async fn until(c: &Cache, done: impl Fn(&Counts) -> bool) -> Counts {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = c.stats().total;
        if done(&counts) || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_invalidates_nothing_is_detected() {
    let c = cache(Backend::Redis, "verify_stale").await;
    let (db, calls) = (Arc::new(Db::default()), Arc::new(Calls::default()));
    db.set("FRA-JFK", 10);
    assert_eq!(count(&c, &db, &calls, "FRA-JFK").await, Ok(10));
    // A hit, probed: the cache is right.
    assert_eq!(count(&c, &db, &calls, "FRA-JFK").await, Ok(10));
    let counts = until(&c, |n| n.verified >= 1).await;
    assert_eq!((counts.verified, counts.stale_detected), (1, 0));
    // Behind the library's back: the entry is now stale.
    db.set("FRA-JFK", 11);
    assert_eq!(count(&c, &db, &calls, "FRA-JFK").await, Ok(10));
    let counts = until(&c, |n| n.verified >= 2).await;
    assert_eq!((counts.verified, counts.stale_detected), (2, 1));
    // The probe reports; it does not repair (a measurement, not a fix).
    assert_eq!(count(&c, &db, &calls, "FRA-JFK").await, Ok(10));
    until(&c, |n| n.verified >= 3).await;
    // The probes' bodies ran in tasks of their own (calls: one miss, three probes).
    assert_eq!(calls.get(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_invalidated_during_the_probe_is_not_counted() {
    let c = cache(Backend::Redis, "verify_race").await;
    let (db, calls) = (Arc::new(Db::default()), Arc::new(Calls::default()));
    db.set("FRA-LHR", 1);
    count(&c, &db, &calls, "FRA-LHR").await.unwrap();
    // The write and its invalidation happen while the probe's body runs:
    // the probe sees the new value, but the entry it compared is gone.
    db.delay_ms.store(300, SeqCst);
    assert_eq!(count(&c, &db, &calls, "FRA-LHR").await, Ok(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    db.set("FRA-LHR", 2);
    invalidate(&c, "FRA-LHR").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counts = c.stats().total;
    assert_eq!(
        (counts.verified, counts.stale_detected),
        (0, 0),
        "{counts:?}"
    );
    db.delay_ms.store(0, SeqCst);
    assert_eq!(count(&c, &db, &calls, "FRA-LHR").await, Ok(2));
}
