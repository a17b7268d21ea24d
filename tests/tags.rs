//! Tags (`#[cached(tags(..))]`, `#[invalidates(tag(..))]`,
//! `Namespace::invalidate_tag`): a tag invalidation recomputes every entry
//! of that tag value, in every instance, and no entry of another value;
//! O(1) in Redis (one token); inside a transaction scope too; and the
//! randomized stale-read checker finds no read that starts after a tag
//! invalidation returned and sees the old value.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Invalidation, Status, cached, invalidates, transaction, with_status};
use serde::Serialize;
use support::{Backend, cache};

on_every_backend!(
    a_tag_invalidation_recomputes_that_value_only,
    a_tag_from_an_expression,
    a_tag_invalidated_by_hand,
    two_tags_on_one_fn,
    a_tag_invalidated_inside_a_transaction_scope,
    a_key_invalidation_still_reaches_a_tagged_entry,
);

/// Orders per (user, day): the value says which version of the user's
/// orders it was computed from.
#[derive(Default)]
struct Db {
    version: std::sync::Mutex<std::collections::HashMap<u32, u64>>,
    reads: AtomicU64,
}

impl Db {
    fn get(&self, user: u32) -> u64 {
        self.reads.fetch_add(1, SeqCst);
        *self.version.lock().unwrap().get(&user).unwrap_or(&0)
    }
    fn bump(&self, user: u32) -> u64 {
        let mut v = self.version.lock().unwrap();
        let e = v.entry(user).or_insert(0);
        *e += 1;
        *e
    }
}

#[cached(ns = "orders", ttl = "5m", tags(user), cache = cache, skip(cache, db))]
async fn orders(cache: &Cache, db: &Db, user: u32, day: u32) -> Result<(u64, u32), String> {
    Ok((db.get(user), day))
}

#[invalidates(ns = "orders", tag(user), cache = cache)]
async fn add_order(cache: &Cache, db: &Db, user: u32) -> Result<(), String> {
    db.bump(user);
    Ok(())
}

#[derive(Serialize)]
struct Order {
    id: u64,
    user_id: u32,
}

#[invalidates(ns = "orders", tag(user = order.user_id), cache = cache)]
async fn cancel(cache: &Cache, db: &Db, order: &Order) -> Result<(), String> {
    db.bump(order.user_id);
    Ok(())
}

async fn status(c: &Cache, db: &Db, user: u32, day: u32) -> Status {
    with_status(orders(c, db, user, day)).await.1
}

async fn a_tag_invalidation_recomputes_that_value_only(b: Backend) {
    let c = cache(b, "tags-one").await;
    let db = Db::default();
    for (user, day) in [(7, 1), (7, 2), (8, 1)] {
        assert_eq!(status(&c, &db, user, day).await, Status::Miss);
        assert_eq!(status(&c, &db, user, day).await, Status::Hit);
    }
    add_order(&c, &db, 7).await.unwrap();
    assert_eq!(
        with_status(orders(&c, &db, 7, 1)).await,
        (Ok((1, 1)), Status::Miss)
    );
    assert_eq!(status(&c, &db, 7, 2).await, Status::Miss);
    assert_eq!(
        status(&c, &db, 8, 1).await,
        Status::Hit,
        "another user's entry stays"
    );
    assert_eq!(status(&c, &db, 7, 1).await, Status::Hit, "stored again");
}

async fn a_tag_from_an_expression(b: Backend) {
    let c = cache(b, "tags-expr").await;
    let db = Db::default();
    orders(&c, &db, 7, 1).await.unwrap();
    orders(&c, &db, 8, 1).await.unwrap();
    cancel(&c, &db, &Order { id: 1, user_id: 8 }).await.unwrap();
    assert_eq!(status(&c, &db, 7, 1).await, Status::Hit);
    assert_eq!(
        with_status(orders(&c, &db, 8, 1)).await,
        (Ok((1, 1)), Status::Miss)
    );
}

async fn a_tag_invalidated_by_hand(b: Backend) {
    let c = cache(b, "tags-hand").await;
    let db = Db::default();
    orders(&c, &db, 7, 1).await.unwrap();
    orders(&c, &db, 8, 1).await.unwrap();
    let orders_ns = c.namespace("orders");
    // Encoded as the argument is: `&7u32`, `7u32` and `7u64` are one value.
    assert_eq!(
        orders_ns.invalidate_tag("user", &7u64).await,
        Invalidation::Done
    );
    assert_eq!(status(&c, &db, 7, 1).await, Status::Miss);
    assert_eq!(status(&c, &db, 8, 1).await, Status::Hit);
    // A tag this namespace never used, and a name that is no tag name
    // (which invalidates the whole namespace, to be safe).
    assert_eq!(
        orders_ns.invalidate_tag("shop", &1).await,
        Invalidation::Done
    );
    assert_eq!(status(&c, &db, 8, 1).await, Status::Hit);
    assert_eq!(
        orders_ns.invalidate_tag("us:er", &8).await,
        Invalidation::Done
    );
    assert_eq!(status(&c, &db, 8, 1).await, Status::Miss);
}

/// Two tags, one of them an expression of an argument.
#[cached(ns = "visits", ttl = "5m", tags(user, shop = shop.to_lowercase()), cache = cache, skip(cache, calls))]
async fn visits(cache: &Cache, user: u32, shop: &str, calls: &AtomicU64) -> u64 {
    calls.fetch_add(1, SeqCst)
}

async fn visit(c: &Cache, user: u32, shop: &str, calls: &AtomicU64) -> Status {
    with_status(visits(c, user, shop, calls)).await.1
}

async fn two_tags_on_one_fn(b: Backend) {
    let c = cache(b, "tags-two").await;
    let calls = AtomicU64::new(0);
    for (user, shop) in [(1, "A"), (1, "B"), (2, "A")] {
        assert_eq!(visit(&c, user, shop, &calls).await, Status::Miss);
    }
    c.namespace("visits").invalidate_tag("shop", "a").await;
    assert_eq!(visit(&c, 1, "A", &calls).await, Status::Miss);
    assert_eq!(visit(&c, 2, "A", &calls).await, Status::Miss);
    assert_eq!(visit(&c, 1, "B", &calls).await, Status::Hit);
    c.namespace("visits").invalidate_tag("user", &1u32).await;
    assert_eq!(visit(&c, 1, "A", &calls).await, Status::Miss);
    assert_eq!(visit(&c, 1, "B", &calls).await, Status::Miss);
    assert_eq!(visit(&c, 2, "A", &calls).await, Status::Hit);
}

async fn a_tag_invalidated_inside_a_transaction_scope(b: Backend) {
    let c = cache(b, "tags-scope").await;
    let db = Db::default();
    orders(&c, &db, 7, 1).await.unwrap();
    orders(&c, &db, 8, 1).await.unwrap();
    transaction(async {
        add_order(&c, &db, 7).await?;
        // Before the COMMIT: a read recomputes (and may store what it read).
        assert_eq!(status(&c, &db, 7, 1).await, Status::Miss);
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    // The scope's end invalidated the tag once more: nothing read before
    // the commit is served after it.
    assert_eq!(status(&c, &db, 7, 1).await, Status::Miss);
    assert_eq!(status(&c, &db, 8, 1).await, Status::Hit);
}

#[invalidates(ns = "orders", key(user, day), cache = cache)]
async fn fix_day(cache: &Cache, user: u32, day: u32) -> Result<(), String> {
    Ok(())
}

async fn a_key_invalidation_still_reaches_a_tagged_entry(b: Backend) {
    let c = cache(b, "tags-key").await;
    let db = Db::default();
    orders(&c, &db, 7, 1).await.unwrap();
    orders(&c, &db, 7, 2).await.unwrap();
    fix_day(&c, 7, 1).await.unwrap();
    assert_eq!(status(&c, &db, 7, 1).await, Status::Miss);
    assert_eq!(status(&c, &db, 7, 2).await, Status::Hit);
    let t = c.stats().total;
    assert_eq!((t.errors, t.decode_errors), (0, 0), "{t:?}");
}

/// A tag invalidation on one instance reaches the entries on both, and
/// only that value's; in Redis it is one token per tag value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidation_reaches_every_instance() {
    let (a, b) = support::two_instances("tags-two-instances").await;
    let db = Db::default();
    for c in [&a, &b] {
        for user in [7, 8] {
            orders(c, &db, user, 1).await.unwrap();
            assert_eq!(status(c, &db, user, 1).await, Status::Hit);
        }
    }
    add_order(&b, &db, 7).await.unwrap();
    for c in [&a, &b] {
        assert_eq!(
            with_status(orders(c, &db, 7, 1)).await.0,
            Ok((1, 1)),
            "recomputed after the tag invalidation"
        );
        assert_eq!(status(c, &db, 8, 1).await, Status::Hit);
    }
    let mut raw = support::raw(&support::redis_url()).await;
    let pattern = format!("{}:{{orders}}:#t:*", a.prefix());
    let tokens: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(tokens.len(), 2, "one token per tag value: {tokens:?}");
}

/// The randomized checker with tags: readers on two instances read random
/// (user, day) entries; writers bump a user's version and invalidate that
/// user's tag (or, now and then, one entry by key). A read that starts
/// after an invalidation of its user returned must see that version or a
/// later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_finds_no_stale_read_after_a_tag_invalidation() {
    let (a, b) = support::two_instances("tags-checker").await;
    const USERS: u32 = 6;
    let db = Arc::new(Db::default());
    let floor: Arc<Vec<AtomicU64>> = Arc::new((0..USERS).map(|_| AtomicU64::new(0)).collect());
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
                let user = (rng() % u64::from(USERS)) as u32;
                let day = (rng() % 3) as u32;
                let before = floor[user as usize].load(SeqCst);
                let (got, st) = with_status(slow_orders(&c, &db, user, day, rng() % 3)).await;
                reads.fetch_add(1, SeqCst);
                if st == Status::Hit {
                    hits.fetch_add(1, SeqCst);
                }
                if got.0 < before {
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
                let user = (rng() % u64::from(USERS)) as u32;
                let v = db.bump(user);
                if rng().is_multiple_of(4) {
                    for day in 0..3 {
                        c.namespace("slow_orders")
                            .invalidate_key(&(user, day))
                            .await;
                    }
                } else {
                    c.namespace("slow_orders")
                        .invalidate_tag("user", &user)
                        .await;
                }
                floor[user as usize].fetch_max(v, SeqCst);
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

#[cached(ns = "slow_orders", ttl = "5m", tags(user), cache = cache, skip(cache, db, pause))]
async fn slow_orders(cache: &Cache, db: &Db, user: u32, day: u32, pause: u64) -> (u64, u32) {
    let v = db.get(user);
    tokio::time::sleep(Duration::from_millis(pause)).await;
    (v, day)
}

/// With the local tier: a tag invalidation on one instance retires the
/// other's local entries of the namespace when its notice arrives (the
/// local tier's documented window), and the next read sees the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidation_reaches_the_local_tier() {
    let prefix = support::unique_prefix("tags-local");
    let make = || {
        Cache::builder()
            .prefix(prefix.clone())
            .redis_url(support::redis_url())
            .local(Duration::from_secs(30))
            .build()
            .expect("valid test config")
    };
    let (a, b) = (make(), make());
    support::connected(&a).await;
    support::connected(&b).await;
    let db = Db::default();
    orders(&a, &db, 7, 1).await.unwrap();
    orders(&a, &db, 7, 1).await.unwrap();
    assert!(
        a.stats().total.local_hits >= 1,
        "served from the local tier"
    );
    add_order(&b, &db, 7).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while orders(&a, &db, 7, 1).await.unwrap().0 != 1 {
        assert!(
            Instant::now() < deadline,
            "the local entry outlived the notice"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
