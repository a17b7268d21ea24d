//! Nested caching: a `#[cached]` fn whose body calls other `#[cached]` fns
//! depends on what they read. An invalidation of an inner entry (by key,
//! by namespace, by tag, by a put, inside a transaction) makes every outer
//! entry built from it a miss, on every instance, at any depth; an
//! unrelated namespace's invalidation does not. The randomized checker
//! with nested reads finds no stale outer read.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Status, cache_put, cached, invalidates, transaction, with_status};
use support::{Backend, cache};

on_every_backend!(
    an_outer_entry_follows_a_key_invalidation_of_what_it_read,
    an_outer_entry_follows_a_namespace_invalidation_of_what_it_read,
    an_unrelated_invalidation_leaves_the_outer_entry,
    two_levels_deep,
    a_put_and_a_tag_reach_the_outer_entry,
    an_inner_write_inside_a_transaction,
    a_wide_outer_fn_is_bounded,
    a_bypass_inside_an_outer_body_is_not_stored,
    a_collapse_after_a_concurrent_invalidation_is_not_stored,
    a_fail_safe_outer_value_is_not_handed_on_after_an_inner_invalidation,
    a_refreshed_inner_entry_reaches_the_outer_entry,
);

/// Airports: a name and a version per code.
#[derive(Default)]
struct Db {
    airports: Mutex<HashMap<u32, u64>>,
    reads: AtomicU64,
}

impl Db {
    fn name(&self, code: u32) -> String {
        self.reads.fetch_add(1, SeqCst);
        let v = self
            .airports
            .lock()
            .unwrap()
            .get(&code)
            .copied()
            .unwrap_or(0);
        format!("{code}v{v}")
    }
    fn rename(&self, code: u32) -> u64 {
        let mut a = self.airports.lock().unwrap();
        let v = a.entry(code).or_insert(0);
        *v += 1;
        *v
    }
}

/// The version of `code` in a name or route built from names.
fn version_in(s: &str, code: u32) -> u64 {
    s.split('-')
        .find_map(|part| {
            let (c, v) = part.split_once('v')?;
            (c.parse::<u32>().ok()? == code).then(|| v.parse().ok())?
        })
        .unwrap_or(0)
}

#[cached(ns = "n_airport", ttl = "5m", cache = cache, skip(cache, db))]
async fn airport(cache: &Cache, db: &Db, code: u32) -> Result<String, String> {
    Ok(db.name(code))
}

#[cached(ns = "n_route", ttl = "5m", cache = cache, skip(cache, db))]
async fn route(cache: &Cache, db: &Db, from: u32, to: u32) -> Result<String, String> {
    let a = airport(cache, db, from).await?;
    let b = airport(cache, db, to).await?;
    Ok(format!("{a}-{b}"))
}

#[cached(ns = "n_trip", ttl = "5m", cache = cache, skip(cache, db))]
async fn trip(cache: &Cache, db: &Db, a: u32, b: u32, c: u32) -> Result<String, String> {
    let first = route(cache, db, a, b).await?;
    let second = route(cache, db, b, c).await?;
    Ok(format!("{first}-{second}"))
}

#[cached(ns = "n_other", ttl = "5m", cache = cache, skip(cache))]
async fn other(cache: &Cache, id: u32) -> u32 {
    id
}

#[invalidates(ns = "n_airport", key(code), cache = cache)]
async fn rename(cache: &Cache, db: &Db, code: u32) -> Result<(), String> {
    db.rename(code);
    Ok(())
}

#[invalidates("n_airport", cache = cache)]
async fn rename_everything(cache: &Cache, db: &Db, code: u32) -> Result<(), String> {
    db.rename(code);
    Ok(())
}

#[invalidates("n_other", cache = cache)]
async fn touch_other(cache: &Cache) {}

async fn st(c: &Cache, db: &Db, from: u32, to: u32) -> (Result<String, String>, Status) {
    with_status(route(c, db, from, to)).await
}

async fn an_outer_entry_follows_a_key_invalidation_of_what_it_read(b: Backend) {
    let c = cache(b, "nested-key").await;
    let db = Db::default();
    assert_eq!(
        st(&c, &db, 1, 2).await,
        (Ok("1v0-2v0".into()), Status::Miss)
    );
    assert_eq!(st(&c, &db, 1, 2).await.1, Status::Hit);
    rename(&c, &db, 2).await.unwrap();
    assert_eq!(
        st(&c, &db, 1, 2).await,
        (Ok("1v0-2v1".into()), Status::Miss)
    );
    assert_eq!(st(&c, &db, 1, 2).await.1, Status::Hit, "stored again");
    // The inner entry of 1 was not invalidated: a hit inside the recompute.
    assert_eq!(with_status(airport(&c, &db, 1)).await.1, Status::Hit);
}

async fn an_outer_entry_follows_a_namespace_invalidation_of_what_it_read(b: Backend) {
    let c = cache(b, "nested-ns").await;
    let db = Db::default();
    route(&c, &db, 1, 2).await.unwrap();
    rename_everything(&c, &db, 1).await.unwrap();
    assert_eq!(
        st(&c, &db, 1, 2).await,
        (Ok("1v1-2v0".into()), Status::Miss)
    );
}

async fn an_unrelated_invalidation_leaves_the_outer_entry(b: Backend) {
    let c = cache(b, "nested-unrelated").await;
    let db = Db::default();
    other(&c, 1).await;
    route(&c, &db, 1, 2).await.unwrap();
    touch_other(&c).await;
    assert_eq!(st(&c, &db, 1, 2).await.1, Status::Hit);
    assert_eq!(with_status(other(&c, 1)).await.1, Status::Miss);
}

async fn two_levels_deep(b: Backend) {
    let c = cache(b, "nested-deep").await;
    let db = Db::default();
    assert_eq!(trip(&c, &db, 1, 2, 3).await, Ok("1v0-2v0-2v0-3v0".into()));
    assert_eq!(with_status(trip(&c, &db, 1, 2, 3)).await.1, Status::Hit);
    rename(&c, &db, 3).await.unwrap();
    assert_eq!(
        with_status(trip(&c, &db, 1, 2, 3)).await,
        (Ok("1v0-2v0-2v0-3v1".into()), Status::Miss),
        "the outermost entry follows an invalidation two levels down"
    );
    // Now served from the cache again, and a hit of the middle level (not
    // recomputed) carried its deps up.
    assert_eq!(with_status(trip(&c, &db, 1, 2, 3)).await.1, Status::Hit);
    rename(&c, &db, 1).await.unwrap();
    assert_eq!(trip(&c, &db, 1, 2, 3).await, Ok("1v1-2v0-2v0-3v1".into()));
}

#[cache_put(ns = "n_airport", key(code), cache = cache)]
async fn put_airport(cache: &Cache, db: &Db, code: u32) -> Result<String, String> {
    db.rename(code);
    Ok(db.name(code))
}

#[cached(ns = "n_gate", ttl = "5m", tags(terminal), cache = cache, skip(cache, db))]
async fn gate(cache: &Cache, db: &Db, terminal: u32, gate: u32) -> Result<String, String> {
    Ok(format!("{gate}@{}", db.name(terminal)))
}

#[cached(ns = "n_board", ttl = "5m", cache = cache, skip(cache, db))]
async fn board(cache: &Cache, db: &Db, terminal: u32) -> Result<String, String> {
    gate(cache, db, terminal, 1).await
}

async fn a_put_and_a_tag_reach_the_outer_entry(b: Backend) {
    let c = cache(b, "nested-put-tag").await;
    let db = Db::default();
    route(&c, &db, 1, 2).await.unwrap();
    assert_eq!(put_airport(&c, &db, 1).await, Ok("1v1".into()));
    assert_eq!(
        st(&c, &db, 1, 2).await,
        (Ok("1v1-2v0".into()), Status::Miss)
    );
    // The inner entry is the put's value: a hit inside the recompute.
    assert_eq!(with_status(airport(&c, &db, 1)).await.1, Status::Hit);

    assert_eq!(board(&c, &db, 5).await, Ok("1@5v0".into()));
    assert_eq!(with_status(board(&c, &db, 5)).await.1, Status::Hit);
    db.rename(5);
    c.namespace("n_gate")
        .invalidate_tag("terminal", &5u32)
        .await;
    assert_eq!(
        with_status(board(&c, &db, 5)).await,
        (Ok("1@5v1".into()), Status::Miss),
        "an inner entry's tag is the outer entry's too"
    );
}

async fn an_inner_write_inside_a_transaction(b: Backend) {
    let c = cache(b, "nested-scope").await;
    let db = Db::default();
    route(&c, &db, 1, 2).await.unwrap();
    transaction(async {
        rename(&c, &db, 1).await?;
        // Before the COMMIT: computed from the database, maybe stored.
        assert_eq!(st(&c, &db, 1, 2).await.0, Ok("1v1-2v0".into()));
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    assert_eq!(
        st(&c, &db, 1, 2).await,
        (Ok("1v1-2v0".into()), Status::Miss)
    );
}

/// Reads 200 airports: at most one generation and 32 buckets of one
/// namespace, so it is stored, and follows any of their invalidations.
#[cached(ns = "n_wide", ttl = "5m", cache = cache, skip(cache, db))]
async fn wide(cache: &Cache, db: &Db, n: u32) -> Result<u64, String> {
    let mut sum = 0;
    for code in 0..n {
        sum += version_in(&airport(cache, db, code).await?, code);
    }
    Ok(sum)
}

async fn a_wide_outer_fn_is_bounded(b: Backend) {
    let c = cache(b, "nested-wide").await;
    let db = Db::default();
    assert_eq!(with_status(wide(&c, &db, 200)).await, (Ok(0), Status::Miss));
    assert_eq!(with_status(wide(&c, &db, 200)).await, (Ok(0), Status::Hit));
    rename(&c, &db, 137).await.unwrap();
    assert_eq!(with_status(wide(&c, &db, 200)).await, (Ok(1), Status::Miss));
    assert_eq!(with_status(wide(&c, &db, 200)).await.1, Status::Hit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inner_invalidation_on_another_instance() {
    let (a, b) = support::two_instances("nested-two").await;
    let db = Db::default();
    route(&a, &db, 1, 2).await.unwrap();
    assert_eq!(st(&b, &db, 1, 2).await.1, Status::Hit);
    rename(&b, &db, 1).await.unwrap();
    assert_eq!(
        st(&a, &db, 1, 2).await,
        (Ok("1v1-2v0".into()), Status::Miss)
    );
    assert_eq!(st(&b, &db, 1, 2).await, (Ok("1v1-2v0".into()), Status::Hit));
}

/// The randomized checker with nested reads: readers on two instances read
/// routes (outer entries built from two airports), now and then an airport
/// directly; writers rename airports (a key invalidation, now and then the
/// namespace's). A read that starts after a rename's invalidation returned
/// must show that airport's new version or a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_finds_no_stale_outer_read() {
    let (a, b) = support::two_instances("nested-checker").await;
    const AIRPORTS: u32 = 8;
    let db = Arc::new(Db::default());
    let floor: Arc<Vec<AtomicU64>> = Arc::new((0..AIRPORTS).map(|_| AtomicU64::new(0)).collect());
    let seconds: u64 = std::env::var("CHECKER_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (reads, violations, hits) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for r in 0..6u64 {
        let c = if r % 2 == 0 { a.clone() } else { b.clone() };
        let (db, floor, reads, violations, hits) = (
            db.clone(),
            floor.clone(),
            reads.clone(),
            violations.clone(),
            hits.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = support::checker::rng(r + 1);
            while Instant::now() < deadline {
                let (from, to) = ((rng() % u64::from(AIRPORTS)) as u32, (rng() % u64::from(AIRPORTS)) as u32);
                let before = (floor[from as usize].load(SeqCst), floor[to as usize].load(SeqCst));
                let direct = rng().is_multiple_of(5);
                let (got, status) = if direct {
                    with_status(airport(&c, &db, from)).await
                } else {
                    with_status(route(&c, &db, from, to)).await
                };
                let got = got.unwrap();
                reads.fetch_add(1, SeqCst);
                if status == Status::Hit {
                    hits.fetch_add(1, SeqCst);
                }
                // "{from}v{n}" or "{from}v{n}-{to}v{m}".
                let versions: Vec<u64> = got
                    .split('-')
                    .map(|p| p.split_once('v').and_then(|(_, v)| v.parse().ok()).unwrap_or(0))
                    .collect();
                let stale = versions[0] < before.0 || (!direct && versions[1] < before.1);
                if stale {
                    if violations.load(SeqCst) < 5 {
                        eprintln!("stale: direct {direct} {got} {status:?} floor {before:?} ({from}, {to})");
                    }
                    violations.fetch_add(1, SeqCst);
                }
            }
        }));
    }
    for w in 0..2u64 {
        let c = if w == 0 { a.clone() } else { b.clone() };
        let (db, floor) = (db.clone(), floor.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = support::checker::rng(100 + w);
            while Instant::now() < deadline {
                let code = (rng() % u64::from(AIRPORTS)) as u32;
                let v = db.rename(code);
                if rng().is_multiple_of(6) {
                    c.namespace("n_airport").invalidate().await;
                } else {
                    c.namespace("n_airport").invalidate_key(&code).await;
                }
                floor[code as usize].fetch_max(v, SeqCst);
                tokio::time::sleep(Duration::from_millis(rng() % 4)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (reads, violations, hits) = (
        reads.load(SeqCst),
        violations.load(SeqCst),
        hits.load(SeqCst),
    );
    eprintln!("{reads} reads, {hits} hits, {violations} violations");
    assert_eq!(violations, 0, "{reads} reads");
    assert!(
        hits > reads / 20,
        "the cache served hits: {hits} of {reads}"
    );
}

/// An inner call in a `bypass` scope reads the source with no token the
/// outer entry could depend on: the outer value is returned, not stored.
#[cached(ns = "n_through_bypass", ttl = "5m", cache = cache, skip(cache, db))]
async fn through_bypass(cache: &Cache, db: &Db, code: u32) -> Result<String, String> {
    cache_aside::bypass(airport(cache, db, code)).await
}

async fn a_bypass_inside_an_outer_body_is_not_stored(b: Backend) {
    let c = cache(b, "nested-bypass").await;
    let db = Db::default();
    assert_eq!(through_bypass(&c, &db, 3).await, Ok("3v0".into()));
    assert_eq!(
        with_status(through_bypass(&c, &db, 3)).await.1,
        Status::Miss
    );
    rename(&c, &db, 3).await.unwrap();
    assert_eq!(through_bypass(&c, &db, 3).await, Ok("3v1".into()));
}

/// Reads a route (an entry whose deps hold two airport buckets), then, if
/// `during` is set, lets a writer rename `from` (as a concurrent request
/// would), then reads 40 other airports: past 16 buckets, the airport
/// buckets collapse into the any-key token.
#[cached(ns = "n_collapse", ttl = "5m", cache = cache, skip(cache, db, during))]
async fn collapse(cache: &Cache, db: &Db, during: bool, from: u32) -> Result<String, String> {
    let r = route(cache, db, from, from + 1).await?;
    if during {
        rename(cache, db, from).await?;
    }
    for code in 1000..1040 {
        airport(cache, db, code).await?;
    }
    Ok(r)
}

/// The any-key value read after the rename is newer than the route's
/// buckets: collapsing them into it would hide the rename, and the next
/// call would serve the old route.
async fn a_collapse_after_a_concurrent_invalidation_is_not_stored(b: Backend) {
    let c = cache(b, "nested-collapse").await;
    let db = Db::default();
    route(&c, &db, 5, 6).await.unwrap();
    assert_eq!(collapse(&c, &db, true, 5).await, Ok("5v0-6v0".into()));
    assert_eq!(
        collapse(&c, &db, false, 5).await,
        Ok("5v1-6v0".into()),
        "an outer entry served after an invalidation of what it read returned"
    );
    assert_eq!(
        with_status(collapse(&c, &db, false, 5)).await,
        (Ok("5v1-6v0".into()), Status::Hit),
        "stored when nothing changed while it ran"
    );
}

/// A route with a fail-safe window whose body, once armed, reads its
/// airports, waits for `gate`, and fails.
#[cached(ns = "n_safe_route", ttl = "200ms", fail_safe = "1h", cache = cache, skip(cache, db, gate))]
async fn safe_route(
    cache: &Cache,
    db: &Db,
    gate: &Gate,
    from: u32,
    to: u32,
) -> Result<String, String> {
    let r = route(cache, db, from, to).await?;
    if gate.armed.swap(false, SeqCst) {
        gate.entered.notify_one();
        gate.open.notified().await;
        return Err("the database is down".into());
    }
    Ok(r)
}

#[derive(Default)]
struct Gate {
    armed: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Notify,
    open: tokio::sync::Notify,
}

/// The leader's body fails and it serves the expired outer entry
/// (fail-safe) to its own caller, who started before the rename. A caller
/// that joined its flight after the rename returned must not get it.
async fn a_fail_safe_outer_value_is_not_handed_on_after_an_inner_invalidation(b: Backend) {
    let c = cache(b, "nested-fail-safe").await;
    let db = Arc::new(Db::default());
    let gate = Arc::new(Gate::default());
    assert_eq!(safe_route(&c, &db, &gate, 7, 8).await, Ok("7v0-8v0".into()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.armed.store(true, SeqCst);
    let leader = {
        let (c, db, gate) = (c.clone(), db.clone(), gate.clone());
        tokio::spawn(async move { with_status(safe_route(&c, &db, &gate, 7, 8)).await })
    };
    gate.entered.notified().await;
    rename(&c, &db, 8).await.unwrap();
    let follower = {
        let (c, db, gate) = (c.clone(), db.clone(), gate.clone());
        tokio::spawn(async move { safe_route(&c, &db, &gate, 7, 8).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open.notify_one();
    assert_eq!(
        leader.await.unwrap(),
        (Ok("7v0-8v0".into()), Status::FailSafe)
    );
    assert_eq!(
        follower.await.unwrap(),
        Ok("7v0-8v1".into()),
        "a caller that started after the rename returned got the old route"
    );
}

/// `refresh` recomputes an inner entry whose source changed behind the
/// cache's back: the outer entries built from the old value follow.
async fn a_refreshed_inner_entry_reaches_the_outer_entry(b: Backend) {
    let c = cache(b, "nested-refresh").await;
    let db = Db::default();
    assert_eq!(route(&c, &db, 1, 2).await, Ok("1v0-2v0".into()));
    db.rename(2);
    assert_eq!(
        cache_aside::refresh(airport(&c, &db, 2)).await,
        Ok("2v1".into())
    );
    assert_eq!(
        st(&c, &db, 1, 2).await,
        (Ok("1v0-2v1".into()), Status::Miss),
        "the outer entry outlived a refresh of what it read"
    );
}
