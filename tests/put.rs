//! Write-through (`#[cache_put]`): the value becomes the reader's entry;
//! concurrent writers in any commit order never leave the older value; a
//! slow reader never overwrites a put; inside a transaction scope the value
//! is stored when the scope ends after a commit, and only then.

mod support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use cache_aside::{Cache, Status, cache_put, cached, invalidates, transaction, with_status};
use support::{Backend, cache};

on_every_backend!(
    a_put_is_the_next_reads_hit,
    a_failed_put_leaves_a_miss,
    a_put_of_another_type_invalidates,
    a_put_in_a_committed_scope_stores_at_its_end,
    a_put_in_a_rolled_back_scope_stores_nothing,
    a_write_during_the_scope_wins_over_its_put,
    a_put_dropped_after_its_write_leaves_no_old_value,
    overlapping_puts_in_one_scope_store_nothing,
    sequential_puts_in_one_scope_store_the_last,
    a_put_in_a_rolled_back_savepoint_stores_nothing,
    a_failed_put_without_a_claim_invalidates,
);

/// A "database" of one value per id; a write may pause before and after
/// its commit (the assignment), a read after it read.
#[derive(Default)]
struct Db {
    rows: Mutex<std::collections::HashMap<u32, u64>>,
    reads: AtomicU64,
}

impl Db {
    fn get(&self, id: u32) -> u64 {
        self.reads.fetch_add(1, SeqCst);
        self.rows.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
    fn set(&self, id: u32, v: u64) {
        self.rows.lock().unwrap().insert(id, v);
    }
}

#[cached(ns = "put_value", ttl = "5m", cache = cache, skip(cache, db, pause))]
async fn read(cache: &Cache, db: &Db, id: u32, pause: u64) -> Result<u64, String> {
    let v = db.get(id);
    tokio::time::sleep(Duration::from_millis(pause)).await;
    Ok(v)
}

#[cache_put(ns = "put_value", key(id), ttl = "5m", cache = cache)]
async fn write(cache: &Cache, db: &Db, id: u32, v: u64, pauses: (u64, u64)) -> Result<u64, String> {
    tokio::time::sleep(Duration::from_millis(pauses.0)).await;
    db.set(id, v);
    tokio::time::sleep(Duration::from_millis(pauses.1)).await;
    Ok(v)
}

/// `write` with a short lease: a body slower than 50 ms loses the key to
/// the readers that come after.
#[cache_put(ns = "put_value", key(id), ttl = "5m", lease = "50ms", cache = cache)]
async fn write_leased(
    cache: &Cache,
    db: &Db,
    id: u32,
    v: u64,
    pauses: (u64, u64),
) -> Result<u64, String> {
    tokio::time::sleep(Duration::from_millis(pauses.0)).await;
    db.set(id, v);
    tokio::time::sleep(Duration::from_millis(pauses.1)).await;
    Ok(v)
}

#[cache_put(ns = "put_value", key(id), cache = cache)]
async fn failed_write(cache: &Cache, id: u32) -> Result<u64, String> {
    Err(format!("no row {id}"))
}

#[cache_put(ns = "put_value", key(id), cache = cache)]
async fn write_text(cache: &Cache, id: u32) -> Result<String, String> {
    Ok(format!("row {id}"))
}

#[invalidates(ns = "put_value", key(id), cache = cache)]
async fn touch(cache: &Cache, id: u32) -> Result<(), String> {
    Ok(())
}

async fn a_put_is_the_next_reads_hit(b: Backend) {
    let c = cache(b, "put-hit").await;
    let db = Db::default();
    db.set(1, 10);
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(10), Status::Miss)
    );
    assert_eq!(write(&c, &db, 1, 11, (0, 0)).await, Ok(11));
    let reads = db.reads.load(SeqCst);
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(11), Status::Hit)
    );
    assert_eq!(db.reads.load(SeqCst), reads, "served from the put's entry");
    // Over an empty key too.
    assert_eq!(write(&c, &db, 2, 20, (0, 0)).await, Ok(20));
    assert_eq!(
        with_status(read(&c, &db, 2, 0)).await,
        (Ok(20), Status::Hit)
    );
    let t = c.stats().total;
    assert_eq!((t.puts, t.invalidations), (2, 0));
}

async fn a_failed_put_leaves_a_miss(b: Backend) {
    let c = cache(b, "put-err").await;
    let db = Db::default();
    db.set(1, 10);
    read(&c, &db, 1, 0).await.unwrap();
    assert!(failed_write(&c, 1).await.is_err());
    // The claim took the old entry away: the next read recomputes, at once
    // (the lease became a tombstone, nobody waits for it).
    let started = std::time::Instant::now();
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(10), Status::Miss)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(c.stats().total.puts, 0);
}

async fn a_put_of_another_type_invalidates(b: Backend) {
    let c = cache(b, "put-type").await;
    let db = Db::default();
    db.set(1, 10);
    read(&c, &db, 1, 0).await.unwrap();
    // The reader reads `u64`s; a `String` entry would be a miss for ever.
    assert_eq!(write_text(&c, 1).await.unwrap(), "row 1");
    let t = c.stats().total;
    assert_eq!((t.puts, t.schema_mismatches), (0, 1));
    db.set(1, 12);
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(12), Status::Miss)
    );
}

async fn a_put_in_a_committed_scope_stores_at_its_end(b: Backend) {
    let c = cache(b, "put-scope").await;
    let db = Db::default();
    db.set(1, 10);
    read(&c, &db, 1, 0).await.unwrap();
    let out = transaction(async {
        write(&c, &db, 1, 11, (0, 0)).await?;
        // Before the COMMIT: readers compute and store nothing.
        assert_eq!(
            with_status(read(&c, &db, 1, 0)).await,
            (Ok(11), Status::Miss)
        );
        assert_eq!(
            with_status(read(&c, &db, 1, 0)).await,
            (Ok(11), Status::Miss)
        );
        assert_eq!(c.stats().total.puts, 0, "not before the scope ends");
        Ok::<_, String>(())
    })
    .await;
    assert_eq!(out, Ok(()));
    assert_eq!(c.stats().total.puts, 1);
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(11), Status::Hit)
    );
}

async fn a_put_in_a_rolled_back_scope_stores_nothing(b: Backend) {
    let c = cache(b, "put-rollback").await;
    let db = Db::default();
    db.set(1, 10);
    read(&c, &db, 1, 0).await.unwrap();
    let out = transaction(async {
        write(&c, &db, 1, 11, (0, 0)).await?;
        db.set(1, 10); // ROLLBACK
        Err::<(), _>("rolled back".to_owned())
    })
    .await;
    assert!(out.is_err());
    assert_eq!(c.stats().total.puts, 0);
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(10), Status::Miss)
    );
}

async fn a_write_during_the_scope_wins_over_its_put(b: Backend) {
    let c = cache(b, "put-interfered").await;
    let db = Db::default();
    db.set(1, 10);
    read(&c, &db, 1, 0).await.unwrap();
    transaction(async {
        write(&c, &db, 1, 11, (0, 0)).await?;
        // Another writer, in a task outside the scope, after this one.
        let (c2, db2) = (c.clone(), &db);
        db2.set(1, 12);
        tokio::spawn(async move { touch(&c2, 1).await })
            .await
            .unwrap()?;
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    assert_eq!(c.stats().total.puts, 0, "the put's value is not the last");
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(12), Status::Miss)
    );
}

/// A put whose caller gives up after its write committed, once its lease
/// lapsed and a reader stored what it read before the commit: the key is
/// invalidated all the same (its guard), so the old value does not stay.
async fn a_put_dropped_after_its_write_leaves_no_old_value(b: Backend) {
    let c = cache(b, "put-dropped").await;
    let db = std::sync::Arc::new(Db::default());
    db.set(1, 10);
    read(&c, &db, 1, 0).await.unwrap();
    // The write claims the key (lease 50 ms) and commits at 120 ms; its
    // caller gives up at 200 ms.
    let put = {
        let (c, db) = (c.clone(), db.clone());
        tokio::spawn(async move {
            let write = write_leased(&c, &db, 1, 11, (120, 10_000));
            tokio::time::timeout(Duration::from_millis(200), write).await
        })
    };
    // A reader after the lease lapsed: reads the old row at 70 ms and
    // stores it at 150 ms, over its own lease.
    tokio::time::sleep(Duration::from_millis(70)).await;
    assert_eq!(
        with_status(read(&c, &db, 1, 80)).await,
        (Ok(10), Status::Miss)
    );
    assert!(put.await.unwrap().is_err(), "the put was dropped");
    assert_eq!(c.shutdown(Duration::from_secs(5)).await, 0);
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(11), Status::Miss),
        "the reader's old value was invalidated"
    );
}

/// Two puts of one key overlap inside one scope (`join!`): which of their
/// writes the database applied last is not known, so neither is stored.
async fn overlapping_puts_in_one_scope_store_nothing(b: Backend) {
    let c = cache(b, "put-overlap").await;
    let db = Db::default();
    db.set(1, 10);
    read(&c, &db, 1, 0).await.unwrap();
    transaction(async {
        // The second (the later fence) writes first and returns last: its
        // fence is the key's latest, yet the first one's row is the last.
        let (x, y) = tokio::join!(
            write(&c, &db, 1, 11, (20, 0)),
            write(&c, &db, 1, 12, (0, 40))
        );
        x.and(y).map(|_| ())
    })
    .await
    .unwrap();
    assert_eq!(db.rows.lock().unwrap()[&1], 11);
    assert_eq!(c.stats().total.puts, 0);
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(11), Status::Miss)
    );
}

/// Puts one after the other in one scope: the last one is stored.
async fn sequential_puts_in_one_scope_store_the_last(b: Backend) {
    let c = cache(b, "put-sequential").await;
    let db = Db::default();
    db.set(1, 10);
    read(&c, &db, 1, 0).await.unwrap();
    transaction(async {
        write(&c, &db, 1, 11, (0, 0)).await?;
        write(&c, &db, 1, 12, (0, 0)).await?;
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    assert_eq!(c.stats().total.puts, 1);
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(12), Status::Hit)
    );
}

/// A nested scope (a savepoint) that rolls back inside a scope that
/// commits: its put is not stored.
async fn a_put_in_a_rolled_back_savepoint_stores_nothing(b: Backend) {
    let c = cache(b, "put-savepoint").await;
    let db = Db::default();
    db.set(1, 10);
    db.set(2, 20);
    read(&c, &db, 1, 0).await.unwrap();
    transaction(async {
        write(&c, &db, 2, 21, (0, 0)).await?;
        let savepoint = transaction(async {
            write(&c, &db, 1, 11, (0, 0)).await?;
            db.set(1, 10); // ROLLBACK TO SAVEPOINT
            Err::<(), _>("rolled back".to_owned())
        })
        .await;
        assert!(savepoint.is_err());
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    assert_eq!(c.stats().total.puts, 1, "only the outer put");
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(10), Status::Miss)
    );
    assert_eq!(
        with_status(read(&c, &db, 2, 0)).await,
        (Ok(21), Status::Hit)
    );
}

/// A scope renews its fences in the background; a renewal that lands after
/// the scope ended must not fence a put's stored value again. Many short
/// scopes with a fence renewed every few ms, each ending with two puts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_fence_renewal_leaves_the_put_stored() {
    let c = Cache::builder()
        .prefix(support::unique_prefix("put-renew"))
        .redis_url(support::redis_url())
        .transaction_fence(Duration::from_millis(30))
        .build()
        .expect("valid test config");
    support::connected(&c).await;
    let db = Db::default();
    // The namespace's generation exists (a put in a scope of a namespace
    // that has none yet is invalidated instead).
    read(&c, &db, u32::MAX, 0).await.unwrap();
    let mut next = support::checker::rng(u64::from(std::process::id()));
    let (mut refenced, rounds) = (0, 300u32);
    for round in 0..rounds {
        let (x, y) = (round * 2, round * 2 + 1);
        transaction(async {
            write(&c, &db, x, 1, (0, 0)).await?;
            write(&c, &db, y, 1, (0, next() % 12)).await?;
            Ok::<_, String>(())
        })
        .await
        .unwrap();
        for id in [x, y] {
            if with_status(read(&c, &db, id, 0)).await.1 != Status::Hit {
                refenced += 1;
            }
        }
    }
    assert_eq!(refenced, 0, "puts fenced again after their scope ended");
}

/// The randomized checker: in each round, writers on two instances put
/// one key with random pauses around their commits (so their puts land in
/// any order relative to their commits), while slow readers read it. Once
/// every writer and reader returned, a read on each instance must see the
/// last committed value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_leave_the_last_committed_value() {
    let (a, b) = support::two_instances("put-race").await;
    let seed = std::env::var("PUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ 0x9e37_79b9);
    let mut next = support::checker::rng(seed);
    let db = std::sync::Arc::new(Db::default());
    let (mut violations, rounds) = (Vec::new(), 300u32);
    for round in 0..rounds {
        let writers = 2 + next() % 2;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let c = if next().is_multiple_of(2) {
                a.clone()
            } else {
                b.clone()
            };
            let db = db.clone();
            let (v, pauses) = (u64::from(round) * 10 + w + 1, (next() % 6, next() % 6));
            tasks.push(tokio::spawn(async move {
                write(&c, &db, round, v, pauses).await.unwrap();
            }));
        }
        for _ in 0..next() % 3 {
            let c = if next().is_multiple_of(2) {
                a.clone()
            } else {
                b.clone()
            };
            let (db, start, pause) = (db.clone(), next() % 4, next() % 8);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(start)).await;
                read(&c, &db, round, pause).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let last = db.rows.lock().unwrap()[&round];
        for (name, c) in [("a", &a), ("b", &b)] {
            let seen = read(c, &db, round, 0).await.unwrap();
            if seen != last {
                violations.push(format!(
                    "round {round} on {name}: read {seen}, last committed {last}"
                ));
            }
        }
    }
    let puts = a.stats().total.puts + b.stats().total.puts;
    eprintln!(
        "seed {seed}: {rounds} rounds, {puts} puts stored, {} violations",
        violations.len()
    );
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
    assert!(
        puts > u64::from(rounds) / 4,
        "many rounds end with a stored put: {puts}"
    );
}

/// A reader that read the old row before the write and stores after the
/// put: refused, the put's value stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_does_not_overwrite_a_put() {
    let (a, b) = support::two_instances("put-slow-reader").await;
    let db = std::sync::Arc::new(Db::default());
    db.set(1, 10);
    let slow = {
        let (a, db) = (a.clone(), db.clone());
        tokio::spawn(async move { read(&a, &db, 1, 150).await })
    };
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(
        db.reads.load(SeqCst),
        1,
        "the slow reader has read the old row"
    );
    assert_eq!(write(&b, &db, 1, 11, (0, 0)).await, Ok(11));
    assert_eq!(slow.await.unwrap(), Ok(10), "it returns what it read");
    for c in [&a, &b] {
        assert_eq!(with_status(read(c, &db, 1, 0)).await, (Ok(11), Status::Hit));
    }
    assert_eq!(
        a.stats().total.stores_rejected,
        1,
        "the slow reader's store"
    );
}

/// Writes the row, then fails (as a write whose COMMIT landed and whose
/// connection broke before the answer).
#[cache_put(ns = "put_value", key(id), cache = cache)]
async fn write_then_fail(cache: &Cache, db: &Db, id: u32, v: u64) -> Result<u64, String> {
    db.set(id, v);
    Err("connection reset".into())
}

/// A put that cannot claim its key (here: in a bypass scope) and fails
/// after its write still invalidates the key.
async fn a_failed_put_without_a_claim_invalidates(b: Backend) {
    let c = cache(b, "put-err-unclaimed").await;
    let db = Db::default();
    db.set(1, 10);
    assert_eq!(read(&c, &db, 1, 0).await, Ok(10));
    assert!(
        cache_aside::bypass(write_then_fail(&c, &db, 1, 11))
            .await
            .is_err()
    );
    assert_eq!(
        with_status(read(&c, &db, 1, 0)).await,
        (Ok(11), Status::Miss),
        "the old value outlived a write that failed after it landed"
    );
}
