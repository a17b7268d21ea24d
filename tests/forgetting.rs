//! Correct when Redis forgets: a key the protocol relies on (a tombstone,
//! a lease, a namespace's generation) disappears without a notice (evicted
//! under `maxmemory`, flushed), a store reaches Redis late (a stalled
//! connection), the server restarts from an older snapshot, or the owner of
//! a lease has a clock that is wrong. Each schedule runs on a private
//! `redis-server`, with a writer instance and a slow reader instance
//! sharing a prefix; the randomized checker runs under eviction too.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_aside::{Cache, Status, cached, with_status};
use redis::AsyncCommands;
use support::proxy::Proxy;
use support::{RedisServer, connected, raw, scratch_dir};
use tokio::sync::{Mutex, oneshot};

fn builder(url: &str, prefix: &str) -> cache_aside::CacheBuilder {
    Cache::builder().redis_url(url).prefix(prefix)
}

async fn instance(url: &str, prefix: &str) -> Cache {
    let c = builder(url, prefix).build().unwrap();
    connected(&c).await;
    c
}

/// A slow reader of key 1: its body reads the database, says so, and
/// returns the value only when told to (the stale-set race's reader).
fn slow_read(
    c: &Cache,
    lock: bool,
    db: &Arc<Mutex<String>>,
) -> (
    tokio::task::JoinHandle<String>,
    oneshot::Receiver<()>,
    oneshot::Sender<()>,
) {
    let (read_tx, read_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (c, db) = (c.clone(), db.clone());
    let task = tokio::spawn(async move {
        c.namespace("forget")
            .lock(lock)
            .get_or_compute(&1, async move {
                let v = db.lock().await.clone();
                let _ = read_tx.send(());
                let _ = go_rx.await;
                v
            })
            .await
    });
    (task, read_rx, go_tx)
}

/// How a test makes Redis forget.
#[derive(Debug, Clone, Copy)]
enum Forget {
    /// `maxmemory` far below what is stored, under `volatile-lru`: Redis
    /// evicts every key with a TTL (tombstones, leases, generations).
    Evict,
    /// `FLUSHALL`.
    Flush,
    /// `DEL` of one key.
    Del,
}

async fn forget(conn: &mut redis::aio::MultiplexedConnection, how: Forget, key: &str) {
    match how {
        Forget::Evict => {
            let _: () = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory-policy", "volatile-lru"][..])
                .query_async(conn)
                .await
                .unwrap();
            let _: () = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory", "1"][..])
                .query_async(conn)
                .await
                .unwrap();
            // Any write makes Redis evict (this one is refused: nothing
            // volatile is left to evict below 1 byte).
            let _: redis::RedisResult<()> = conn.set("junk", "x").await;
            let _: () = redis::cmd("CONFIG")
                .arg(&["SET", "maxmemory", "0"][..])
                .query_async(conn)
                .await
                .unwrap();
            let evicted: u64 = info_field(conn, "evicted_keys").await;
            assert!(evicted > 0, "Redis evicted nothing");
        }
        Forget::Flush => {
            let _: () = redis::cmd("FLUSHALL").query_async(conn).await.unwrap();
        }
        Forget::Del => {
            let _: () = conn.del(key).await.unwrap();
        }
    }
    let exists: bool = conn.exists(key).await.unwrap();
    assert!(!exists, "{key} is still there after {how:?}");
}

async fn info_field(conn: &mut redis::aio::MultiplexedConnection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").query_async(conn).await.unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A reader claims an empty key and reads the database; the write commits
/// and its key invalidation returns; the tombstone is forgotten; the reader
/// stores. Its store must be refused: every later read sees the write.
async fn a_forgotten_tombstone(lock: bool, how: Forget) {
    let server = RedisServer::start();
    let prefix = "forget";
    let (reader, writer) = (
        instance(&server.url(), prefix).await,
        instance(&server.url(), prefix).await,
    );
    let mut conn = raw(&server.url()).await;
    let db = Arc::new(Mutex::new("old".to_string()));
    let (task, read, go) = slow_read(&reader, lock, &db);
    read.await.unwrap();
    *db.lock().await = "new".into(); // COMMIT
    writer.namespace("forget").invalidate_key(&1).await;
    let key = writer.entry_key("forget", &1).unwrap();
    forget(&mut conn, how, &key).await;
    let _ = go.send(());
    assert_eq!(task.await.unwrap(), "old", "it read before the write");
    for c in [&reader, &writer] {
        let (v, _) = with_status(
            c.namespace("forget")
                .get_or_compute(&1, async { db.lock().await.clone() }),
        )
        .await;
        assert_eq!(
            v, "new",
            "lock = {lock}, {how:?}: a value from before the write came back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_tombstone_lets_no_old_value_back() {
    for lock in [false, true] {
        a_forgotten_tombstone(lock, Forget::Evict).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_tombstone_lets_no_old_value_back() {
    for lock in [false, true] {
        a_forgotten_tombstone(lock, Forget::Flush).await;
        a_forgotten_tombstone(lock, Forget::Del).await;
    }
}

/// The namespace has no generation; a reader claims and reads the
/// database; a namespace invalidation returns; its generation is forgotten;
/// the reader stores. Refused: the reader's claim made the generation it
/// stores under, and that one is gone.
async fn a_forgotten_generation(how: Forget) {
    let server = RedisServer::start();
    let prefix = "forget_gen";
    let (reader, writer) = (
        instance(&server.url(), prefix).await,
        instance(&server.url(), prefix).await,
    );
    let mut conn = raw(&server.url()).await;
    let db = Arc::new(Mutex::new("old".to_string()));
    let (task, read, go) = slow_read(&reader, true, &db);
    read.await.unwrap();
    *db.lock().await = "new".into();
    writer.namespace("forget").invalidate().await;
    forget(&mut conn, how, &format!("{prefix}:{{forget}}:#gen")).await;
    let _ = go.send(());
    assert_eq!(task.await.unwrap(), "old");
    let (v, _) = with_status(
        writer
            .namespace("forget")
            .get_or_compute(&1, async { db.lock().await.clone() }),
    )
    .await;
    assert_eq!(v, "new", "{how:?}: a value from before the write came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_generation_lets_no_old_value_back() {
    for how in [Forget::Evict, Forget::Flush, Forget::Del] {
        a_forgotten_generation(how).await;
    }
}

/// A reader's store is sent, and its connection stalls past the operation
/// timeout (which does not cancel a sent command) and past the tombstone's
/// life: the bytes reach Redis when the key is empty. Refused: a store
/// expects its own claim, never an empty key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_arrives_late_is_refused() {
    for lock in [false, true] {
        let server = RedisServer::start();
        let proxy = Proxy::start(server.port);
        let prefix = "forget_late";
        let guard = Duration::from_millis(300);
        let reader = builder(&proxy.url(), prefix)
            .invalidation_guard(guard)
            .build()
            .unwrap();
        connected(&reader).await;
        let writer = builder(&server.url(), prefix)
            .invalidation_guard(guard)
            .build()
            .unwrap();
        connected(&writer).await;
        // The scripts are loaded (a first EVALSHA would come back NOSCRIPT,
        // too late to be sent again as EVAL).
        let warm = reader.namespace("forget").lock(lock);
        assert_eq!(
            warm.get_or_compute(&2, async { "warm".to_string() }).await,
            "warm"
        );
        let db = Arc::new(Mutex::new("old".to_string()));
        let (task, read, go) = slow_read(&reader, lock, &db);
        read.await.unwrap();
        proxy.hold_requests(true);
        let _ = go.send(());
        // The reader gives up on its store after the operation timeout.
        assert_eq!(task.await.unwrap(), "old");
        *db.lock().await = "new".into();
        writer.namespace("forget").invalidate_key(&1).await;
        // The tombstone (and whatever the reader's claim left) expires.
        let key = writer.entry_key("forget", &1).unwrap();
        let mut conn = raw(&server.url()).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while conn.exists::<_, bool>(&key).await.unwrap() {
            assert!(Instant::now() < deadline, "{key} never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy.hold_requests(false);
        tokio::time::sleep(Duration::from_millis(200)).await; // the store lands
        let (v, _) = with_status(
            writer
                .namespace("forget")
                .get_or_compute(&1, async { db.lock().await.clone() }),
        )
        .await;
        assert_eq!(v, "new", "lock = {lock}: the late store was taken");
    }
}

#[cached(ns = "restart", cache = cache, skip(cache, db))]
async fn airport(cache: &Cache, db: &Mutex<String>, code: &str) -> String {
    format!("{code}: {}", db.lock().await)
}

/// An entry is cached, Redis saves a snapshot, an invalidation returns,
/// and Redis restarts from the snapshot, with the old generation and the
/// old entry: a fresh process must not serve them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_a_snapshot_brings_no_invalidated_entry_back() {
    for by_key in [true, false] {
        let dir = scratch_dir("rdb");
        let dir = dir.display().to_string();
        let mut server = RedisServer::start_with(&["--dir", &dir, "--dbfilename", "dump.rdb"]);
        let prefix = "restart";
        let c = instance(&server.url(), prefix).await;
        let db = Mutex::new("Frankfurt".to_string());
        assert_eq!(with_status(airport(&c, &db, "FRA")).await.1, Status::Miss);
        assert_eq!(with_status(airport(&c, &db, "FRA")).await.1, Status::Hit);
        let mut conn = raw(&server.url()).await;
        let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
        *db.lock().await = "Frankfurt am Main".into();
        if by_key {
            c.namespace("restart").invalidate_key(&("FRA",)).await;
        } else {
            c.namespace("restart").invalidate().await;
        }
        drop(c);
        server.restart(); // loads dump.rdb: the entry and its generation are back
        let fresh = instance(&server.url(), prefix).await;
        let (v, s) = with_status(airport(&fresh, &db, "FRA")).await;
        assert_eq!(
            (v.as_str(), s),
            ("FRA: Frankfurt am Main", Status::Miss),
            "by key: {by_key}"
        );
        assert_eq!(
            with_status(airport(&fresh, &db, "FRA")).await.1,
            Status::Hit
        );
    }
}

#[cached(cache = cache, skip(cache))]
async fn default_of<T: Default + std::fmt::Debug>(cache: &Cache, id: u32) -> String {
    format!("{:?}#{id}", T::default())
}

/// The instantiations of a generic fn never share entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instantiations_of_a_generic_fn_do_not_share_entries() {
    let server = RedisServer::start();
    let c = instance(&server.url(), "generic").await;
    assert_eq!(default_of::<u8>(&c, 1).await, "0#1");
    assert_eq!(default_of::<String>(&c, 1).await, "\"\"#1");
    assert_eq!(default_of::<Vec<u64>>(&c, 1).await, "[]#1");
    assert_eq!(
        with_status(default_of::<u8>(&c, 1)).await,
        ("0#1".into(), Status::Miss)
    );
    assert_eq!(
        with_status(default_of::<u8>(&c, 1)).await,
        ("0#1".into(), Status::Hit)
    );
}

mod users {
    use super::*;

    #[cached(cache = cache, skip(cache))]
    pub async fn count(cache: &Cache, id: u32) -> String {
        format!("user {id}")
    }
}

mod orders {
    use super::*;

    #[cached(cache = cache, skip(cache))]
    pub async fn count(cache: &Cache, id: u32) -> String {
        format!("order {id}")
    }
}

/// Two fns of the same name in different modules get different default
/// namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_named_fns_in_two_modules_do_not_share_entries() {
    let server = RedisServer::start();
    let c = instance(&server.url(), "modules").await;
    assert_eq!(users::count(&c, 1).await, "user 1");
    assert_eq!(
        with_status(orders::count(&c, 1)).await,
        ("order 1".into(), Status::Miss)
    );
    assert_eq!(
        with_status(users::count(&c, 1)).await,
        ("user 1".into(), Status::Hit)
    );
    let names: Vec<String> = c.stats().namespaces.keys().cloned().collect();
    assert_eq!(names, ["forgetting.orders.count", "forgetting.users.count"]);
}

mod repos {
    use super::*;

    pub struct UserRepo {
        pub cache: Cache,
    }
    pub struct OrderRepo {
        pub cache: Cache,
    }

    impl UserRepo {
        #[cached(cache = &self.cache)]
        pub async fn by_id(&self, id: u32) -> Option<String> {
            Some(format!("user {id}"))
        }

        #[cached(cache = cache, skip(cache))]
        pub async fn lookup(cache: &Cache, id: u32) -> Option<String> {
            Some(format!("user {id}"))
        }
    }

    impl OrderRepo {
        #[cached(cache = &self.cache)]
        pub async fn by_id(&self, id: u32) -> Option<String> {
            Some(format!("order {id}"))
        }

        #[cached(cache = cache, skip(cache))]
        pub async fn lookup(cache: &Cache, id: u32) -> Option<String> {
            Some(format!("order {id}"))
        }
    }

    /// One type, two traits with a method of one name.
    pub struct Store {
        pub cache: Cache,
    }
    pub trait Users {
        async fn get(&self, id: u32) -> String;
    }
    pub trait Orders {
        async fn get(&self, id: u32) -> String;
    }
    impl Users for Store {
        #[cached(cache = &self.cache)]
        async fn get(&self, id: u32) -> String {
            format!("user {id}")
        }
    }
    impl Orders for Store {
        #[cached(cache = &self.cache)]
        async fn get(&self, id: u32) -> String {
            format!("order {id}")
        }
    }

    /// A generic impl whose instantiations' values differ (no receiver).
    pub struct Table<T>(std::marker::PhantomData<T>);
    pub trait Named {
        const NAME: &'static str;
    }
    pub struct Users2;
    pub struct Orders2;
    impl Named for Users2 {
        const NAME: &'static str = "user";
    }
    impl Named for Orders2 {
        const NAME: &'static str = "order";
    }
    impl<T: Named> Table<T> {
        #[cached(cache = cache, skip(cache))]
        pub async fn row(cache: &Cache, id: u32) -> String {
            format!("{} {id}", T::NAME)
        }
    }
}

/// Issue 20's case and its relatives: same-named associated fns of two
/// types in one module (with `self` and without), of two traits on one
/// type, and of two instantiations of a generic impl, all returning the
/// same type. Each gets its own entries; before, the second returned the
/// first's value as a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_named_associated_fns_do_not_share_entries() {
    use repos::{OrderRepo, Orders, Orders2, Store, Table, UserRepo, Users, Users2};
    let server = RedisServer::start();
    let c = instance(&server.url(), "repos").await;
    let (users, orders) = (
        UserRepo { cache: c.clone() },
        OrderRepo { cache: c.clone() },
    );
    let store = Store { cache: c.clone() };
    for _ in 0..2 {
        assert_eq!(users.by_id(1).await.as_deref(), Some("user 1"));
        assert_eq!(orders.by_id(1).await.as_deref(), Some("order 1"));
        assert_eq!(UserRepo::lookup(&c, 1).await.as_deref(), Some("user 1"));
        assert_eq!(OrderRepo::lookup(&c, 1).await.as_deref(), Some("order 1"));
        assert_eq!(Users::get(&store, 1).await, "user 1");
        assert_eq!(Orders::get(&store, 1).await, "order 1");
        assert_eq!(Table::<Users2>::row(&c, 1).await, "user 1");
        assert_eq!(Table::<Orders2>::row(&c, 1).await, "order 1");
    }
    let names: Vec<String> = c.stats().namespaces.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "forgetting.repos.OrderRepo.by_id",
            "forgetting.repos.OrderRepo.lookup",
            "forgetting.repos.Store.Orders.get",
            "forgetting.repos.Store.Users.get",
            // One namespace for a generic impl; the schema keeps its
            // instantiations apart.
            "forgetting.repos.Table.row",
            "forgetting.repos.UserRepo.by_id",
            "forgetting.repos.UserRepo.lookup",
        ]
    );
    // Six fns hit on the second round. The two instantiations share a key
    // and take turns: each finds the other's schema, a miss (never the
    // other's value).
    let st = c.stats().total;
    assert_eq!(
        (st.misses, st.hits, st.schema_mismatches),
        (10, 6, 3),
        "{st:?}"
    );
    assert_eq!(c.check_links(), Ok(()));
}

/// Readers of memory pressure: a private server with a small `maxmemory`,
/// filled by other keys while the randomized checker runs.
async fn checker_under_eviction(policy: &str) {
    let server = RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", policy]);
    let prefix = format!("evict-{policy}");
    let (a, b) = (
        instance(&server.url(), &prefix).await,
        instance(&server.url(), &prefix).await,
    );
    let url = server.url();
    let filling = tokio::spawn(async move {
        let mut conn = raw(&url).await;
        let blob = vec![b'x'; 4096];
        for i in 0u64.. {
            // Volatile filler, so that `volatile-*` policies have victims
            // besides the cache's own keys.
            let _: redis::RedisResult<()> = conn.pset_ex(format!("fill:{i}"), &blob, 600_000).await;
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let got = support::checker::run(a, b, None).await;
    filling.abort();
    let mut conn = raw(&server.url()).await;
    let evicted = info_field(&mut conn, "evicted_keys").await;
    println!(
        "{policy}: {} reads checked, {} violations, {evicted} keys evicted, {} invalidations queued",
        got.reads, got.violations, got.queued
    );
    if policy == "noeviction" {
        // Nothing is evicted: writes past the limit fail (OOM), the
        // cache's too, and the calls run uncached instead.
        assert_eq!(evicted, 0, "noeviction evicted {evicted} keys");
        let errors: String = redis::cmd("INFO")
            .arg("errorstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(errors.contains("errorstat_OOM"), "never full: {errors}");
    } else {
        assert!(evicted > 1000, "memory pressure: {evicted} evictions");
    }
    assert!(
        got.reads > 1000,
        "the checker checked something: {}",
        got.reads
    );
    assert_eq!(
        got.violations, 0,
        "{policy}: {} stale reads of {}",
        got.violations, got.reads
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_under_allkeys_lru_never_see_an_older_write() {
    checker_under_eviction("allkeys-lru").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_under_volatile_lru_never_see_an_older_write() {
    checker_under_eviction("volatile-lru").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_under_allkeys_lfu_never_see_an_older_write() {
    checker_under_eviction("allkeys-lfu").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_under_allkeys_random_never_see_an_older_write() {
    checker_under_eviction("allkeys-random").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_under_volatile_lfu_never_see_an_older_write() {
    checker_under_eviction("volatile-lfu").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_under_volatile_ttl_never_see_an_older_write() {
    checker_under_eviction("volatile-ttl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_under_volatile_random_never_see_an_older_write() {
    checker_under_eviction("volatile-random").await;
}

/// Full and nothing to evict: every write fails with OOM, and no call does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_under_noeviction_never_see_an_older_write() {
    checker_under_eviction("noeviction").await;
}

/// The body of `skewed`, run by whoever holds the key's lease: counts its
/// runs in Redis (both processes see them) and takes a while.
async fn skewed_body(url: &str, prefix: &str) -> u64 {
    let mut conn = raw(url).await;
    let _: () = conn.set(format!("{prefix}:started"), 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    conn.incr(format!("{prefix}:runs"), 1).await.unwrap()
}

const SKEW_CHILD: &str = "CACHE_ASIDE_SKEW_CHILD";

/// Run only when re-executed by the test below, under `faketime`: a clock
/// an hour behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of a_lease_owner_with_a_slow_clock_is_still_waited_for"]
async fn skew_child() {
    let Ok(spec) = std::env::var(SKEW_CHILD) else {
        return;
    };
    let (url, prefix) = spec.split_once(' ').unwrap();
    let c = instance(url, prefix).await;
    let v = c
        .namespace("skewed")
        .get_or_compute(&1, skewed_body(url, prefix))
        .await;
    assert_eq!(v, 1);
}

/// A lease's end is judged by the server's clock: an owner whose clock is
/// an hour behind still holds its lease, and others wait for its value
/// instead of running the body too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_owner_with_a_slow_clock_is_still_waited_for() {
    assert!(
        std::process::Command::new("faketime")
            .arg("-h")
            .output()
            .is_ok(),
        "faketime is not on PATH: install it (Debian/Ubuntu: apt-get install faketime), or run scripts/test, which installs it"
    );
    let server = RedisServer::start();
    let prefix = "skew";
    let child = std::process::Command::new("faketime")
        .arg("-f")
        .arg("-1h")
        .arg(std::env::current_exe().unwrap())
        .args(["skew_child", "--exact", "--ignored", "--nocapture"])
        .env(SKEW_CHILD, format!("{} {prefix}", server.url()))
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = raw(&server.url()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !conn
        .exists::<_, bool>(format!("{prefix}:started"))
        .await
        .unwrap()
    {
        assert!(
            Instant::now() < deadline,
            "the child never started its body"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let c = instance(&server.url(), prefix).await;
    let v = c
        .namespace("skewed")
        .get_or_compute(&1, skewed_body(&server.url(), prefix))
        .await;
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "child: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v, 1, "the value of the owner's one run");
    let runs: u64 = conn.get(format!("{prefix}:runs")).await.unwrap();
    assert_eq!(runs, 1, "nobody ran the body beside the owner");
}
