//! Per-call control: `bypass` and `refresh` scopes, on the Redis backend and
//! the memory backend, and across two `Cache` instances sharing a prefix.

mod support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use cache_aside::{Cache, Status, bypass, cached, invalidates, refresh, with_status};
use support::{Backend, Calls, cache};

on_every_backend!(
    bypass_reads_and_writes_nothing,
    refresh_recomputes_and_stores,
    scopes_nest_and_reach_nested_calls_and_methods,
    a_failed_refresh_keeps_the_entry,
    an_invalidation_during_a_refresh_wins,
    a_refresh_replaces_the_local_tier_copy,
    a_refresh_does_not_join_an_older_computation,
);

/// A tiny "database" whose value changes without any invalidation, as an
/// out-of-band write (or a warm-up after a deploy) would.
#[derive(Default)]
struct Db {
    value: Mutex<u32>,
    fail: AtomicBool,
}

impl Db {
    fn set(&self, v: u32) {
        *self.value.lock().unwrap() = v;
    }
    fn get(&self) -> Result<u32, String> {
        if self.fail.load(SeqCst) {
            return Err("database down".into());
        }
        Ok(*self.value.lock().unwrap())
    }
}

#[cached(ns = "value", ttl = "5m", cache = cache, skip(cache, db, calls))]
async fn value(cache: &Cache, db: &Db, calls: &Calls, id: u32) -> Result<u32, String> {
    calls.hit();
    Ok(db.get()? + id)
}

async fn bypass_reads_and_writes_nothing(b: Backend) {
    let c = cache(b, "bypass").await;
    let (db, calls) = (Db::default(), Calls::default());
    db.set(10);
    // On an empty key: the body runs, nothing is stored.
    let (v, s) = with_status(bypass(value(&c, &db, &calls, 1))).await;
    assert_eq!((v, s), (Ok(11), Status::Bypass));
    let (v, s) = with_status(value(&c, &db, &calls, 1)).await;
    assert_eq!((v, s), (Ok(11), Status::Miss), "the bypass stored nothing");
    // Over a live entry: the body runs and sees the database, the entry stays.
    db.set(20);
    let (v, s) = with_status(bypass(value(&c, &db, &calls, 1))).await;
    assert_eq!((v, s), (Ok(21), Status::Bypass), "computed now, not read");
    let (v, s) = with_status(value(&c, &db, &calls, 1)).await;
    assert_eq!(
        (v, s),
        (Ok(11), Status::Hit),
        "the bypass did not overwrite"
    );
    assert_eq!(calls.get(), 3);
    let t = c.stats().total;
    assert_eq!((t.skipped, t.bypasses, t.hits, t.misses), (2, 0, 1, 1));
    assert_eq!(t.hit_ratio(), 0.5, "skipped calls are not in the hit ratio");
}

async fn refresh_recomputes_and_stores(b: Backend) {
    let c = cache(b, "refresh").await;
    let (db, calls) = (Db::default(), Calls::default());
    db.set(10);
    // On an empty key: an ordinary miss.
    let (v, s) = with_status(refresh(value(&c, &db, &calls, 1))).await;
    assert_eq!((v, s), (Ok(11), Status::Miss));
    assert_eq!(with_status(value(&c, &db, &calls, 1)).await.1, Status::Hit);
    db.set(20);
    assert_eq!(value(&c, &db, &calls, 1).await, Ok(11), "cached, stale");
    // Over a live entry: recomputed and stored.
    let (v, s) = with_status(refresh(value(&c, &db, &calls, 1))).await;
    assert_eq!((v, s), (Ok(21), Status::Miss));
    let (v, s) = with_status(value(&c, &db, &calls, 1)).await;
    assert_eq!(
        (v, s),
        (Ok(21), Status::Hit),
        "the refreshed value was stored"
    );
    assert_eq!(calls.get(), 2);
    let t = c.stats().total;
    assert_eq!((t.misses, t.forced_refreshes, t.stores), (2, 1, 2));
}

#[cached(ns = "inner", ttl = "5m", cache = cache, skip(cache, db, calls))]
async fn inner(cache: &Cache, db: &Db, calls: &Calls) -> Result<u32, String> {
    calls.hit();
    db.get()
}

#[cached(ns = "outer", ttl = "5m", cache = cache, skip(cache, db, calls))]
async fn outer(cache: &Cache, db: &Db, calls: &Calls) -> Result<u32, String> {
    calls.hit();
    Ok(inner(cache, db, calls).await? * 100)
}

struct Repo {
    cache: Cache,
    db: Db,
}

impl Repo {
    #[cached(ns = "repo", ttl = "5m", cache = &self.cache)]
    async fn get(&self) -> Result<u32, String> {
        self.db.get()
    }
}

async fn scopes_nest_and_reach_nested_calls_and_methods(b: Backend) {
    let c = cache(b, "nesting").await;
    let (db, calls) = (Db::default(), Calls::default());
    db.set(1);
    assert_eq!(outer(&c, &db, &calls).await, Ok(100));
    assert_eq!(calls.get(), 2);
    db.set(2);
    // refresh reaches the nested call: both recompute, both store.
    assert_eq!(refresh(outer(&c, &db, &calls)).await, Ok(200));
    assert_eq!(calls.get(), 4);
    assert_eq!(inner(&c, &db, &calls).await, Ok(2), "inner was stored too");
    assert_eq!(calls.get(), 4);
    // The innermost scope decides.
    db.set(3);
    assert_eq!(bypass(refresh(outer(&c, &db, &calls))).await, Ok(300));
    assert_eq!(calls.get(), 6);
    let (v, s) = with_status(outer(&c, &db, &calls)).await;
    assert_eq!(
        (v, s),
        (Ok(300), Status::Hit),
        "refresh inside bypass stored"
    );
    db.set(4);
    let (v, s) = with_status(refresh(bypass(outer(&c, &db, &calls)))).await;
    assert_eq!((v, s), (Ok(400), Status::Bypass));
    assert_eq!(
        outer(&c, &db, &calls).await,
        Ok(300),
        "bypass inside refresh stored nothing"
    );
    // Methods, and the by-hand API, follow the scopes too.
    let repo = Repo {
        cache: c.clone(),
        db: Db::default(),
    };
    repo.db.set(5);
    assert_eq!(repo.get().await, Ok(5));
    repo.db.set(6);
    assert_eq!(repo.get().await, Ok(5));
    assert_eq!(
        with_status(bypass(repo.get())).await,
        (Ok(6), Status::Bypass)
    );
    assert_eq!(refresh(repo.get()).await, Ok(6));
    assert_eq!(with_status(repo.get()).await, (Ok(6), Status::Hit));
    let ns = c.namespace("by_hand");
    assert_eq!(ns.get_or_compute(&1u32, async { 1u32 }).await, 1);
    assert_eq!(refresh(ns.get_or_compute(&1u32, async { 2u32 })).await, 2);
    assert_eq!(ns.get_or_compute(&1u32, async { 3u32 }).await, 2);
}

async fn a_failed_refresh_keeps_the_entry(b: Backend) {
    let c = cache(b, "failed_refresh").await;
    let (db, calls) = (Db::default(), Calls::default());
    db.set(10);
    assert_eq!(value(&c, &db, &calls, 1).await, Ok(11));
    db.fail.store(true, SeqCst);
    let (v, s) = with_status(refresh(value(&c, &db, &calls, 1))).await;
    assert_eq!((v, s), (Err("database down".into()), Status::Miss));
    db.fail.store(false, SeqCst);
    db.set(20);
    let (v, s) = with_status(value(&c, &db, &calls, 1)).await;
    assert_eq!(
        (v, s),
        (Ok(11), Status::Hit),
        "the old entry is still there"
    );
}

/// A read paused inside its body after it read the database.
struct Gate {
    read_done: tokio::sync::Notify,
    may_return: tokio::sync::Notify,
}

#[cached(ns = "gated", ttl = "5m", cache = cache, skip(cache, db, gate))]
async fn gated(cache: &Cache, db: &Db, gate: Option<&Gate>) -> Result<u32, String> {
    let v = db.get()?;
    if let Some(g) = gate {
        g.read_done.notify_one();
        g.may_return.notified().await;
    }
    Ok(v)
}

#[invalidates(ns = "gated", cache = cache)]
async fn write(cache: &Cache, db: &Db, v: u32) -> Result<(), String> {
    db.set(v);
    Ok(())
}

async fn an_invalidation_during_a_refresh_wins(b: Backend) {
    let c = cache(b, "refresh_race").await;
    let db = std::sync::Arc::new(Db::default());
    db.set(1);
    assert_eq!(gated(&c, &db, None).await, Ok(1));
    db.set(2);
    let gate = std::sync::Arc::new(Gate {
        read_done: tokio::sync::Notify::new(),
        may_return: tokio::sync::Notify::new(),
    });
    let task = {
        let (c, db, gate) = (c.clone(), db.clone(), gate.clone());
        tokio::spawn(async move { refresh(gated(&c, &db, Some(&gate))).await })
    };
    gate.read_done.notified().await;
    // The refresh read 2; a write now changes the value and invalidates.
    write(&c, &db, 3).await.unwrap();
    gate.may_return.notify_one();
    assert_eq!(
        task.await.unwrap(),
        Ok(2),
        "the refresh returns what it read"
    );
    let (v, s) = with_status(gated(&c, &db, None)).await;
    assert_eq!(
        (v, s),
        (Ok(3), Status::Miss),
        "its store lost to the invalidation"
    );
}

/// Two instances sharing a prefix (two processes): a refresh on one is
/// what the other reads next, and a bypass on one changes nothing for either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_reaches_another_instance() {
    let (a, b) = support::two_instances("refresh_two").await;
    let (db, calls) = (Db::default(), Calls::default());
    db.set(10);
    assert_eq!(value(&a, &db, &calls, 1).await, Ok(11));
    assert_eq!(
        with_status(value(&b, &db, &calls, 1)).await,
        (Ok(11), Status::Hit)
    );
    db.set(20);
    assert_eq!(bypass(value(&a, &db, &calls, 1)).await, Ok(21));
    assert_eq!(
        with_status(value(&b, &db, &calls, 1)).await,
        (Ok(11), Status::Hit)
    );
    assert_eq!(refresh(value(&a, &db, &calls, 1)).await, Ok(21));
    assert_eq!(
        with_status(value(&b, &db, &calls, 1)).await,
        (Ok(21), Status::Hit)
    );
    assert_eq!(calls.get(), 3);
}

#[cached(ns = "local_value", ttl = "5m", local = "30s", cache = cache, skip(cache, db))]
async fn local_value(cache: &Cache, db: &Db) -> Result<u32, String> {
    db.get()
}

async fn a_refresh_replaces_the_local_tier_copy(b: Backend) {
    let c = cache(b, "refresh_local").await;
    let db = Db::default();
    db.set(1);
    assert_eq!(local_value(&c, &db).await, Ok(1));
    assert_eq!(local_value(&c, &db).await, Ok(1));
    db.set(2);
    assert_eq!(local_value(&c, &db).await, Ok(1), "cached");
    let before = c.stats().total.local_hits;
    assert_eq!(refresh(local_value(&c, &db)).await, Ok(2));
    assert_eq!(local_value(&c, &db).await, Ok(2), "not the old local copy");
    assert_eq!(local_value(&c, &db).await, Ok(2));
    assert_eq!(
        c.stats().total.local_hits,
        before + 1,
        "the new value is in the local tier"
    );
}

/// A plain miss is computing (it read the database before a write); a
/// refresh that starts now must not take that older value as its own.
async fn a_refresh_does_not_join_an_older_computation(b: Backend) {
    let c = cache(b, "refresh_flight").await;
    let db = std::sync::Arc::new(Db::default());
    db.set(1);
    let gate = std::sync::Arc::new(Gate {
        read_done: tokio::sync::Notify::new(),
        may_return: tokio::sync::Notify::new(),
    });
    let plain = {
        let (c, db, gate) = (c.clone(), db.clone(), gate.clone());
        tokio::spawn(async move { gated(&c, &db, Some(&gate)).await })
    };
    gate.read_done.notified().await;
    db.set(2);
    let forced = {
        let (c, db) = (c.clone(), db.clone());
        tokio::spawn(async move { refresh(gated(&c, &db, None)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    gate.may_return.notify_one();
    assert_eq!(plain.await.unwrap(), Ok(1));
    assert_eq!(
        forced.await.unwrap(),
        Ok(2),
        "computed by the refresh itself"
    );
    assert_eq!(
        with_status(gated(&c, &db, None)).await,
        (Ok(2), Status::Hit)
    );
}

/// Another process holds the key's lease; a refresh waits for it, finds the
/// entry it stored, and then fails: that entry must survive (claiming over
/// it and releasing would leave a tombstone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_waited_for_a_lease_and_failed_keeps_the_entry() {
    let (a, b) = support::two_instances("refresh_lease").await;
    let (db_a, db_b) = (
        std::sync::Arc::new(Db::default()),
        std::sync::Arc::new(Db::default()),
    );
    db_a.fail.store(true, SeqCst);
    db_b.set(7);
    let gate = std::sync::Arc::new(Gate {
        read_done: tokio::sync::Notify::new(),
        may_return: tokio::sync::Notify::new(),
    });
    let holder = {
        let (b, db, gate) = (b.clone(), db_b.clone(), gate.clone());
        tokio::spawn(async move { gated(&b, &db, Some(&gate)).await })
    };
    gate.read_done.notified().await;
    let forced = {
        let (a, db) = (a.clone(), db_a.clone());
        tokio::spawn(async move { refresh(gated(&a, &db, None)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    gate.may_return.notify_one();
    assert_eq!(holder.await.unwrap(), Ok(7));
    assert_eq!(forced.await.unwrap(), Err("database down".into()));
    assert_eq!(
        with_status(gated(&b, &db_b, None)).await,
        (Ok(7), Status::Hit)
    );
    assert_eq!(
        with_status(gated(&a, &db_b, None)).await,
        (Ok(7), Status::Hit)
    );
}
