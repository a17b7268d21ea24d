//! Fail-safe: when the source fails (an `Err`, or a body past its
//! `timeout`), the last good value within the `fail_safe` window is served
//! with `Status::FailSafe`, as often as the outage lasts; fresh values
//! again once the source is back; never an invalidated entry.

mod support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Status, cached, invalidates, with_status};
use support::{Backend, cache};

on_every_backend!(
    an_outage_is_served_from_the_last_good_values,
    without_an_old_entry_the_error_is_returned,
    an_invalidated_entry_is_never_served,
    a_slow_body_is_cut_at_its_timeout,
    past_the_window_the_error_is_returned,
);

/// A database that can go down, or become slow.
#[derive(Default)]
struct Db {
    value: Mutex<u32>,
    down: AtomicBool,
    slow: AtomicBool,
}

impl Db {
    async fn get(&self) -> Result<u32, String> {
        if self.slow.load(SeqCst) {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        if self.down.load(SeqCst) {
            return Err("connection refused".into());
        }
        Ok(*self.value.lock().unwrap())
    }
    fn set(&self, v: u32) {
        *self.value.lock().unwrap() = v;
    }
}

#[cached(ns = "rate", ttl = "300ms", fail_safe = "1h", timeout = "100ms", cache = cache, skip(cache, db))]
async fn rate(cache: &Cache, db: &Db, id: u32) -> Result<u32, String> {
    Ok(db.get().await? + id)
}

#[cached(ns = "short", ttl = "200ms", fail_safe = "300ms", cache = cache, skip(cache, db))]
async fn short(cache: &Cache, db: &Db, id: u32) -> Result<u32, String> {
    Ok(db.get().await? + id)
}

#[invalidates(ns = "rate", key(id), cache = cache)]
async fn change_rate(cache: &Cache, id: u32) -> Result<(), String> {
    Ok(())
}

#[invalidates("rate", cache = cache)]
async fn change_all(cache: &Cache) -> Result<(), String> {
    Ok(())
}

async fn past_ttl() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

async fn an_outage_is_served_from_the_last_good_values(b: Backend) {
    let c = cache(b, "failsafe").await;
    let db = Db::default();
    db.set(10);
    assert_eq!(with_status(rate(&c, &db, 1)).await, (Ok(11), Status::Miss));
    past_ttl().await;
    db.down.store(true, SeqCst);
    // Every call during the outage tries the database, and gets the
    // last good value: the entry is put back for the next one.
    for _ in 0..3 {
        assert_eq!(
            with_status(rate(&c, &db, 1)).await,
            (Ok(11), Status::FailSafe)
        );
    }
    db.down.store(false, SeqCst);
    db.set(20);
    assert_eq!(with_status(rate(&c, &db, 1)).await, (Ok(21), Status::Miss));
    assert_eq!(with_status(rate(&c, &db, 1)).await, (Ok(21), Status::Hit));
    let t = c.stats().total;
    assert_eq!((t.fail_safe_served, t.misses, t.hits), (3, 5, 1));
}

async fn without_an_old_entry_the_error_is_returned(b: Backend) {
    let c = cache(b, "failsafe-none").await;
    let db = Db::default();
    db.down.store(true, SeqCst);
    let (v, s) = with_status(rate(&c, &db, 1)).await;
    assert_eq!((v, s), (Err("connection refused".into()), Status::Miss));
}

async fn an_invalidated_entry_is_never_served(b: Backend) {
    let c = cache(b, "failsafe-inval").await;
    let db = Db::default();
    db.set(10);
    rate(&c, &db, 1).await.unwrap();
    rate(&c, &db, 2).await.unwrap();
    past_ttl().await;
    change_rate(&c, 1).await.unwrap();
    db.down.store(true, SeqCst);
    assert!(rate(&c, &db, 1).await.is_err(), "the key was invalidated");
    assert_eq!(with_status(rate(&c, &db, 2)).await.1, Status::FailSafe);
    change_all(&c).await.unwrap();
    assert!(
        rate(&c, &db, 2).await.is_err(),
        "the namespace was invalidated"
    );
}

async fn a_slow_body_is_cut_at_its_timeout(b: Backend) {
    let c = cache(b, "failsafe-slow").await;
    let db = Db::default();
    db.set(10);
    rate(&c, &db, 1).await.unwrap();
    past_ttl().await;
    db.slow.store(true, SeqCst);
    let started = Instant::now();
    assert_eq!(
        with_status(rate(&c, &db, 1)).await,
        (Ok(11), Status::FailSafe)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "served at the timeout, not after the body: {:?}",
        started.elapsed()
    );
}

async fn past_the_window_the_error_is_returned(b: Backend) {
    let c = cache(b, "failsafe-window").await;
    let db = Db::default();
    db.set(10);
    short(&c, &db, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    db.down.store(true, SeqCst);
    assert!(short(&c, &db, 1).await.is_err());
}
