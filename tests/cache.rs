//! The core behaviour of `#[cached]` and `#[invalidates]`, run on the Redis
//! backend (the machine's redis-server, each test under its own prefix) and
//! on the memory backend: the same scenarios, the same assertions.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cache_aside::{Cache, Status, cached, invalidates, with_status};
use serde::{Deserialize, Serialize};
use support::{Backend, Calls, cache};

on_every_backend!(
    miss_then_hit,
    str_and_string_share_a_key,
    errors_are_returned_unchanged_and_not_cached,
    option_values_and_unless,
    version_is_part_of_the_schema,
    ttl_expiry,
    methods_with_self_and_explicit_cache,
    skip_and_custom_key,
    namespace_invalidation,
    key_invalidation,
    failed_write_does_not_invalidate,
    stale_set_race_namespace,
    stale_set_race_key,
    colliding_looking_arguments_get_distinct_entries,
    stats_per_namespace,
    by_hand_api,
    large_values_are_not_stored,
    generic_functions_and_arc_self,
    aba_a_released_lease_does_not_reopen_the_key,
    aba_a_caller_after_an_invalidation_does_not_join_an_older_flight,
    aba_an_expired_entry_does_not_reopen_the_key,
    a_const_namespace_links_reader_and_writers,
    ttl_from_the_value,
);

#[cached(ns = "count", ttl = "5m", cache = cache, skip(cache, calls))]
async fn count(cache: &Cache, calls: &Calls, from: &str, to: &str) -> Result<i64, String> {
    calls.hit();
    Ok((from.len() * 100 + to.len()) as i64)
}

async fn miss_then_hit(b: Backend) {
    let c = cache(b, "miss_then_hit").await;
    let calls = Calls::default();
    let (r, s) = with_status(count(&c, &calls, "FRA", "JFK")).await;
    assert_eq!((r, s), (Ok(303), Status::Miss));
    let (r, s) = with_status(count(&c, &calls, "FRA", "JFK")).await;
    assert_eq!((r, s), (Ok(303), Status::Hit));
    assert_eq!(calls.get(), 1, "the body ran once");
    let (_, s) = with_status(count(&c, &calls, "FRA", "LHR")).await;
    assert_eq!(s, Status::Miss, "other arguments, other entry");
}

#[cached(ns = "owned", cache = cache, skip(cache, calls))]
async fn by_string(cache: &Cache, calls: &Calls, code: String) -> usize {
    calls.hit();
    code.len()
}

#[cached(ns = "owned", cache = cache, skip(cache, calls))]
async fn by_str(cache: &Cache, calls: &Calls, code: &str) -> usize {
    calls.hit();
    code.len()
}

async fn str_and_string_share_a_key(b: Backend) {
    let c = cache(b, "str_string").await;
    let calls = Calls::default();
    assert_eq!(by_string(&c, &calls, "FRA".to_string()).await, 3);
    let (v, s) = with_status(by_str(&c, &calls, "FRA")).await;
    assert_eq!((v, s), (3, Status::Hit), "&str finds what String stored");
    assert_eq!(calls.get(), 1);
}

/// An error type that is neither Serialize nor Clone: errors are passed
/// through as they are.
#[derive(Debug, PartialEq)]
struct DbError(&'static str);

#[cached(ns = "flaky", cache = cache, skip(cache, calls))]
async fn flaky(cache: &Cache, calls: &Calls, id: u32) -> Result<String, DbError> {
    if calls.hit() <= 2 {
        return Err(DbError("connection reset"));
    }
    Ok(format!("flight {id}"))
}

async fn errors_are_returned_unchanged_and_not_cached(b: Backend) {
    let c = cache(b, "errors").await;
    let calls = Calls::default();
    let (r, s) = with_status(flaky(&c, &calls, 7)).await;
    assert_eq!((r, s), (Err(DbError("connection reset")), Status::Miss));
    assert_eq!(flaky(&c, &calls, 7).await, Err(DbError("connection reset")));
    assert_eq!(flaky(&c, &calls, 7).await, Ok("flight 7".into()));
    let (r, s) = with_status(flaky(&c, &calls, 7)).await;
    assert_eq!((r, s), (Ok("flight 7".into()), Status::Hit));
    assert_eq!(calls.get(), 3, "errors were not cached, the Ok was");
    let st = c.stats().namespaces["flaky"];
    assert_eq!((st.misses, st.hits, st.stores), (3, 1, 1));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Airport {
    iata: String,
    name: String,
}

#[cached(ns = "airport", cache = cache, skip(cache, calls), unless = Option::is_none)]
async fn airport(cache: &Cache, calls: &Calls, code: &str) -> Option<Airport> {
    calls.hit();
    (code == "FRA").then(|| Airport {
        iata: code.into(),
        name: "Frankfurt".into(),
    })
}

#[cached(ns = "maybe", cache = cache, skip(cache, calls))]
async fn maybe(cache: &Cache, calls: &Calls, code: &str) -> Option<u32> {
    calls.hit();
    (code == "yes").then_some(1)
}

async fn option_values_and_unless(b: Backend) {
    let c = cache(b, "option").await;
    let calls = Calls::default();
    // unless = Option::is_none: a None is returned but not stored.
    assert_eq!(airport(&c, &calls, "XXX").await, None);
    let (v, s) = with_status(airport(&c, &calls, "XXX")).await;
    assert_eq!((v, s), (None, Status::Miss));
    assert_eq!(calls.get(), 2);
    assert!(airport(&c, &calls, "FRA").await.is_some());
    let (v, s) = with_status(airport(&c, &calls, "FRA")).await;
    assert_eq!(
        (v.map(|a| a.name), s),
        (Some("Frankfurt".into()), Status::Hit)
    );
    // Without unless, a None is a value like any other.
    let calls = Calls::default();
    assert_eq!(maybe(&c, &calls, "no").await, None);
    let (v, s) = with_status(maybe(&c, &calls, "no")).await;
    assert_eq!((v, s), (None, Status::Hit));
}

#[cached(ns = "schema", version = 1, cache = cache, skip(cache))]
async fn schema_v1(cache: &Cache, id: u32) -> u32 {
    id
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Wider {
    id: u32,
    label: String,
}

#[cached(ns = "schema", version = 2, cache = cache, skip(cache))]
async fn schema_v2(cache: &Cache, id: u32) -> Wider {
    Wider {
        id,
        label: format!("#{id}"),
    }
}

/// The version and the value's type are checked in the entry, not part of
/// the key: readers of another schema miss (and overwrite), and a key
/// invalidation that names no version reaches every one.
#[invalidates(ns = "schema", key(id), cache = cache)]
async fn touch_schema(cache: &Cache, id: u32) {}

async fn version_is_part_of_the_schema(b: Backend) {
    let c = cache(b, "version").await;
    assert_eq!(schema_v1(&c, 5).await, 5);
    let (v, s) = with_status(schema_v2(&c, 5)).await;
    assert_eq!(s, Status::Miss, "v2 does not read v1's entry");
    assert_eq!(v.label, "#5");
    assert_eq!(with_status(schema_v2(&c, 5)).await.1, Status::Hit);
    assert_eq!(
        with_status(schema_v1(&c, 5)).await.1,
        Status::Miss,
        "v1 does not read v2's entry"
    );
    assert_eq!(with_status(schema_v1(&c, 5)).await.1, Status::Hit);
    touch_schema(&c, 5).await;
    assert_eq!(with_status(schema_v1(&c, 5)).await.1, Status::Miss);
    assert_eq!(c.stats().namespaces["schema"].schema_mismatches, 2);
    assert_eq!(
        c.entry_key("schema", &(5u32,)).unwrap(),
        format!("{}:{{schema}}:5", c.prefix())
    );
}

#[cached(ns = "short", ttl = "300ms", cache = cache, skip(cache, calls))]
async fn short_lived(cache: &Cache, calls: &Calls) -> usize {
    calls.hit()
}

async fn ttl_expiry(b: Backend) {
    let c = cache(b, "ttl").await;
    let calls = Calls::default();
    assert_eq!(short_lived(&c, &calls).await, 1);
    assert_eq!(short_lived(&c, &calls).await, 1, "cached");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (v, s) = with_status(short_lived(&c, &calls)).await;
    assert_eq!((v, s), (2, Status::Miss), "expired after the TTL");
}

struct FlightService {
    cache: Cache,
    name: String,
    calls: Calls,
}

impl FlightService {
    #[cached(ns = "svc_route", cache = &self.cache)]
    async fn route(&self, from: &str, to: &str) -> String {
        self.calls.hit();
        format!("{}:{from}-{to}", self.name)
    }

    #[invalidates("svc_route", cache = &self.cache)]
    async fn reroute(&self) -> Result<(), String> {
        Ok(())
    }
}

async fn methods_with_self_and_explicit_cache(b: Backend) {
    let c = cache(b, "methods").await;
    let a = FlightService {
        cache: c.clone(),
        name: "a".into(),
        calls: Calls::default(),
    };
    let b2 = FlightService {
        cache: c.clone(),
        name: "b".into(),
        calls: Calls::default(),
    };
    assert_eq!(a.route("FRA", "JFK").await, "a:FRA-JFK");
    // `self` is not part of the key: another instance reads the same entry.
    let (v, s) = with_status(b2.route("FRA", "JFK")).await;
    assert_eq!((v.as_str(), s), ("a:FRA-JFK", Status::Hit));
    assert_eq!(b2.calls.get(), 0);
    b2.reroute().await.unwrap();
    assert_eq!(b2.route("FRA", "JFK").await, "b:FRA-JFK");
}

struct Pool(u32);

#[cached(ns = "custom_key", cache = cache, key = (from.to_uppercase(), to.to_uppercase()))]
async fn custom_key(cache: &Cache, pool: &Pool, from: &str, to: &str) -> String {
    format!("{}{from}{to}", pool.0)
}

#[cached(ns = "skipped", cache = cache, skip(cache, pool))]
async fn skipped(cache: &Cache, pool: &Pool, id: u32) -> u32 {
    pool.0 + id
}

async fn skip_and_custom_key(b: Backend) {
    let c = cache(b, "skip").await;
    assert_eq!(skipped(&c, &Pool(1), 10).await, 11);
    let (v, s) = with_status(skipped(&c, &Pool(2), 10)).await;
    assert_eq!(
        (v, s),
        (11, Status::Hit),
        "skipped arguments are not in the key"
    );
    assert_eq!(custom_key(&c, &Pool(1), "fra", "jfk").await, "1frajfk");
    let (v, s) = with_status(custom_key(&c, &Pool(9), "FRA", "JfK")).await;
    assert_eq!(
        (v.as_str(), s),
        ("1frajfk", Status::Hit),
        "the key expression decides"
    );
    let key = c
        .entry_key("custom_key", &("FRA".to_string(), "JFK".to_string()))
        .unwrap();
    assert!(key.ends_with(":{custom_key}:FRA:JFK"), "{key}");
}

#[cached(ns = "ns_a", cache = cache, skip(cache, calls))]
async fn in_a(cache: &Cache, calls: &Calls, n: u32) -> usize {
    calls.hit() + n as usize
}

#[cached(ns = "ns_b", cache = cache, skip(cache, calls))]
async fn in_b(cache: &Cache, calls: &Calls, n: u32) -> usize {
    calls.hit() + n as usize
}

#[cached(ns = "ns_c", cache = cache, skip(cache, calls))]
async fn in_c(cache: &Cache, calls: &Calls, n: u32) -> usize {
    calls.hit() + n as usize
}

#[invalidates("ns_a", "ns_b", cache = cache)]
async fn write_ab(cache: &Cache) -> Result<u32, String> {
    Ok(1)
}

async fn namespace_invalidation(b: Backend) {
    let c = cache(b, "ns_inval").await;
    let (ca, cb, cc) = (Calls::default(), Calls::default(), Calls::default());
    for n in 0..3 {
        in_a(&c, &ca, n).await;
        in_b(&c, &cb, n).await;
        in_c(&c, &cc, n).await;
    }
    assert_eq!(write_ab(&c).await, Ok(1));
    for n in 0..3 {
        assert_eq!(with_status(in_a(&c, &ca, n)).await.1, Status::Miss);
        assert_eq!(with_status(in_b(&c, &cb, n)).await.1, Status::Miss);
        assert_eq!(
            with_status(in_c(&c, &cc, n)).await.1,
            Status::Hit,
            "ns_c is not listed"
        );
    }
    assert_eq!((ca.get(), cb.get(), cc.get()), (6, 6, 3));
    assert_eq!(c.stats().namespaces["ns_a"].invalidations, 1);
}

#[cached(ns = "airport_name", cache = cache, skip(cache, db))]
async fn airport_name(cache: &Cache, db: &Db, code: &str) -> String {
    db.get(code)
}

#[invalidates(ns = "airport_name", key(code), cache = cache)]
async fn rename_airport(cache: &Cache, db: &Db, code: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    db.set(code, name);
    Ok(())
}

/// A tiny "database".
#[derive(Default)]
struct Db(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl Db {
    fn get(&self, k: &str) -> String {
        self.0.lock().unwrap().get(k).cloned().unwrap_or_default()
    }
    fn set(&self, k: &str, v: &str) {
        self.0.lock().unwrap().insert(k.into(), v.into());
    }
}

async fn key_invalidation(b: Backend) {
    let c = cache(b, "key_inval").await;
    let db = Db::default();
    db.set("FRA", "Frankfurt");
    db.set("MUC", "Munich");
    assert_eq!(airport_name(&c, &db, "FRA").await, "Frankfurt");
    assert_eq!(airport_name(&c, &db, "MUC").await, "Munich");
    rename_airport(&c, &db, "FRA", "Frankfurt am Main")
        .await
        .unwrap();
    let (v, s) = with_status(airport_name(&c, &db, "FRA")).await;
    assert_eq!((v.as_str(), s), ("Frankfurt am Main", Status::Miss));
    assert_eq!(
        with_status(airport_name(&c, &db, "FRA")).await.1,
        Status::Hit
    );
    assert_eq!(
        with_status(airport_name(&c, &db, "MUC")).await.1,
        Status::Hit,
        "only the one key was invalidated"
    );
}

async fn failed_write_does_not_invalidate(b: Backend) {
    let c = cache(b, "failed_write").await;
    let db = Db::default();
    db.set("FRA", "Frankfurt");
    airport_name(&c, &db, "FRA").await;
    assert!(rename_airport(&c, &db, "FRA", "").await.is_err());
    assert_eq!(
        with_status(airport_name(&c, &db, "FRA")).await.1,
        Status::Hit
    );
    assert_eq!(c.stats().total.invalidations, 0);
}

/// A reader that is paused inside its body, after it read the database.
struct Gate {
    read_done: tokio::sync::Notify,
    may_return: tokio::sync::Notify,
}

#[cached(ns = "race_ns", cache = cache, skip(cache, db, gate))]
async fn slow_read(cache: &Cache, db: &Db, gate: Option<&Gate>, code: &str) -> String {
    let v = db.get(code);
    if let Some(g) = gate {
        g.read_done.notify_one();
        g.may_return.notified().await;
    }
    v
}

#[invalidates("race_ns", cache = cache)]
async fn write_ns(cache: &Cache, db: &Db, code: &str, name: &str) -> Result<(), String> {
    db.set(code, name);
    Ok(())
}

/// The stale-set race, deterministically: the reader misses and reads the
/// old value; the writer writes and invalidates; the reader then stores its
/// old value. The next read must see the new value.
async fn stale_set_race_namespace(b: Backend) {
    let c = cache(b, "race_ns").await;
    let db = Arc::new(Db::default());
    db.set("FRA", "old");
    let gate = Arc::new(Gate {
        read_done: tokio::sync::Notify::new(),
        may_return: tokio::sync::Notify::new(),
    });
    let reader = {
        let (c, db, gate) = (c.clone(), db.clone(), gate.clone());
        tokio::spawn(async move { slow_read(&c, &db, Some(&gate), "FRA").await })
    };
    gate.read_done.notified().await;
    write_ns(&c, &db, "FRA", "new").await.unwrap();
    gate.may_return.notify_one();
    assert_eq!(
        reader.await.unwrap(),
        "old",
        "the reader returns what it read"
    );
    let (v, s) = with_status(slow_read(&c, &db, None, "FRA")).await;
    assert_eq!(v, "new", "no stale set: status {s:?}");
    assert_eq!(c.stats().namespaces["race_ns"].stores_rejected, 1);
}

#[cached(ns = "race_key", cache = cache, skip(cache, db, gate))]
async fn slow_read_key(cache: &Cache, db: &Db, gate: Option<&Gate>, code: &str) -> String {
    let v = db.get(code);
    if let Some(g) = gate {
        g.read_done.notify_one();
        g.may_return.notified().await;
    }
    v
}

#[invalidates(ns = "race_key", key(code), cache = cache)]
async fn write_key(cache: &Cache, db: &Db, code: &str, name: &str) -> Result<(), String> {
    db.set(code, name);
    Ok(())
}

async fn stale_set_race_key(b: Backend) {
    let c = cache(b, "race_key").await;
    let db = Arc::new(Db::default());
    db.set("FRA", "old");
    // Twice: once from an empty key, once from a key that holds a tombstone.
    for round in ["first", "second"] {
        let gate = Arc::new(Gate {
            read_done: tokio::sync::Notify::new(),
            may_return: tokio::sync::Notify::new(),
        });
        let reader = {
            let (c, db, gate) = (c.clone(), db.clone(), gate.clone());
            tokio::spawn(async move { slow_read_key(&c, &db, Some(&gate), "FRA").await })
        };
        gate.read_done.notified().await;
        let new = format!("new-{round}");
        write_key(&c, &db, "FRA", &new).await.unwrap();
        gate.may_return.notify_one();
        reader.await.unwrap();
        assert_eq!(slow_read_key(&c, &db, None, "FRA").await, new, "{round}");
        // Leave the key holding a tombstone for the second round.
        write_key(&c, &db, "FRA", &new).await.unwrap();
    }
}

#[cached(ns = "pair", cache = cache, skip(cache))]
async fn pair(cache: &Cache, a: &str, b: &str) -> String {
    format!("{a}|{b}")
}

async fn colliding_looking_arguments_get_distinct_entries(b: Backend) {
    let c = cache(b, "pairs").await;
    assert_eq!(pair(&c, "a:b", "c").await, "a:b|c");
    assert_eq!(pair(&c, "a", "b:c").await, "a|b:c");
    assert_eq!(pair(&c, "a:b", "c").await, "a:b|c");
    assert_eq!(pair(&c, "a", "b:c").await, "a|b:c");
    let long = "x".repeat(10_000);
    assert_eq!(pair(&c, &long, "1").await.len(), 10_002);
    assert_eq!(with_status(pair(&c, &long, "1")).await.1, Status::Hit);
    assert_eq!(with_status(pair(&c, &long, "2")).await.1, Status::Miss);
}

async fn stats_per_namespace(b: Backend) {
    let c = cache(b, "stats").await;
    let calls = Calls::default();
    for _ in 0..3 {
        count(&c, &calls, "A", "B").await.unwrap();
    }
    by_str(&c, &calls, "x").await;
    let s = c.stats();
    let n = s.namespaces["count"];
    assert_eq!((n.hits, n.misses, n.errors, n.stores), (2, 1, 0, 1));
    assert!((n.hit_ratio() - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(s.total.hits, 2);
    assert_eq!(s.total.misses, 2);
    assert_eq!(s.namespaces.len(), 2);
}

async fn by_hand_api(b: Backend) {
    let c = cache(b, "by_hand").await;
    let ns = c.namespace("hand").ttl(Duration::from_secs(60));
    let v: Vec<String> = ns
        .get_or_compute(&(1, "x"), async { vec!["a".into()] })
        .await;
    assert_eq!(v, ["a"]);
    let (v, s) = with_status(ns.get_or_compute(&(1, "x"), async { vec!["b".to_string()] })).await;
    assert_eq!((v, s), (vec!["a".to_string()], Status::Hit));
    assert_eq!(
        ns.invalidate_key(&(1, "x")).await,
        cache_aside::Invalidation::Done
    );
    let v: Vec<String> = ns
        .get_or_compute(&(1, "x"), async { vec!["c".into()] })
        .await;
    assert_eq!(v, ["c"]);
    assert_eq!(ns.invalidate().await, cache_aside::Invalidation::Done);
    let r: Result<u8, &str> = ns.get_or_try_compute(&2, async { Err("no") }).await;
    assert_eq!(r, Err("no"));
    // An invalid namespace name bypasses the cache instead of failing.
    let (v, s) = with_status(c.namespace("bad name").get_or_compute(&1, async { 7 })).await;
    assert_eq!((v, s), (7, Status::Bypass));
}

async fn large_values_are_not_stored(b: Backend) {
    let c = match b {
        Backend::Redis => Cache::builder().redis_url(support::redis_url()),
        Backend::Memory => Cache::builder().memory(),
    }
    .prefix(support::unique_prefix("large"))
    .max_value_bytes(1024)
    .build()
    .unwrap();
    support::connected(&c).await;
    let ns = c.namespace("big");
    let big = ns.get_or_compute(&1, async { "y".repeat(5000) }).await;
    assert_eq!(big.len(), 5000);
    let (_, s) = with_status(ns.get_or_compute(&1, async { "y".repeat(5000) })).await;
    assert_eq!(s, Status::Miss, "too large to store");
    let st = c.stats().namespaces["big"];
    assert_eq!((st.stores_rejected, st.too_large, st.stores), (2, 2, 0));
    // The default limit is 4 MiB: a 5 MiB value is not stored either, a 3 MiB one is.
    let d = cache(b, "large_default").await;
    let ns = d.namespace("big");
    assert_eq!(
        ns.get_or_compute(&5, async { vec![7u8; 5 << 20] })
            .await
            .len(),
        5 << 20
    );
    assert_eq!(
        ns.get_or_compute(&3, async { vec![7u8; 3 << 20] })
            .await
            .len(),
        3 << 20
    );
    let st = d.stats().namespaces["big"];
    assert_eq!((st.too_large, st.stores), (1, 1));
}

#[cached(ns = "generic", cache = cache, skip(cache))]
async fn generic_len<T: Serialize + Sync>(cache: &Cache, items: &[T]) -> usize {
    items.len()
}

struct ArcService {
    cache: Cache,
    calls: Calls,
}

impl ArcService {
    #[cached(ns = "arc_self", cache = self.cache.clone())]
    async fn lookup(self: Arc<Self>, id: u32) -> u32 {
        self.calls.hit();
        id + 1
    }
}

async fn generic_functions_and_arc_self(b: Backend) {
    let c = cache(b, "generic").await;
    assert_eq!(generic_len(&c, &[1u8, 2, 3]).await, 3);
    assert_eq!(
        with_status(generic_len(&c, &[1u8, 2, 3])).await,
        (3, Status::Hit)
    );
    assert_eq!(
        with_status(generic_len(&c, &["a", "b"])).await,
        (2, Status::Miss)
    );
    let svc = Arc::new(ArcService {
        cache: c.clone(),
        calls: Calls::default(),
    });
    assert_eq!(svc.clone().lookup(1).await, 2);
    assert_eq!(with_status(svc.clone().lookup(1)).await, (2, Status::Hit));
    assert_eq!(svc.calls.get(), 1);
}

/// A read of `code` through the by-hand API whose body reads the database,
/// then (with a gate) waits before returning.
async fn gated_read(
    c: &Cache,
    db: &Db,
    gate: Option<&Gate>,
    code: &str,
    lock: bool,
    ttl_ms: u64,
) -> String {
    c.namespace("aba")
        .lock(lock)
        .ttl(Duration::from_millis(ttl_ms))
        .get_or_compute(&code, async {
            let v = db.get(code);
            if let Some(g) = gate {
                g.read_done.notify_one();
                g.may_return.notified().await;
            }
            v
        })
        .await
}

fn gate() -> Arc<Gate> {
    Arc::new(Gate {
        read_done: tokio::sync::Notify::new(),
        may_return: tokio::sync::Notify::new(),
    })
}

fn spawn_gated(
    c: &Cache,
    db: &Arc<Db>,
    g: &Arc<Gate>,
    lock: bool,
    ttl_ms: u64,
) -> tokio::task::JoinHandle<String> {
    let (c, db, g) = (c.clone(), db.clone(), g.clone());
    tokio::spawn(async move { gated_read(&c, &db, Some(&g), "FRA", lock, ttl_ms).await })
}

/// R0 holds the lease and read the old value; the writer's tombstone
/// replaces R0's lease; R1 takes a lease over the tombstone and fails (its
/// lease is released). R0's store must still be refused.
async fn aba_a_released_lease_does_not_reopen_the_key(b: Backend) {
    let c = cache(b, "aba_release").await;
    let db = Arc::new(Db::default());
    db.set("FRA", "old");
    let g = gate();
    let r0 = spawn_gated(&c, &db, &g, true, 60_000);
    g.read_done.notified().await;
    db.set("FRA", "new");
    c.namespace("aba").invalidate_key(&"FRA").await;
    let r1: Result<String, &str> = c
        .namespace("aba")
        .ttl(Duration::from_secs(60))
        .get_or_try_compute(&"FRA", async { Err("db hiccup") })
        .await;
    assert!(r1.is_err());
    g.may_return.notify_one();
    assert_eq!(r0.await.unwrap(), "old");
    assert_eq!(gated_read(&c, &db, None, "FRA", true, 60_000).await, "new");
}

/// R0 leads a flight from an empty key; an invalidation returns, and R1
/// takes a lease over its tombstone and fails; R2 starts after all that and
/// must not take R0's value (by joining R0's flight in this process).
async fn aba_a_caller_after_an_invalidation_does_not_join_an_older_flight(b: Backend) {
    let c = cache(b, "aba_flight").await;
    let db = Arc::new(Db::default());
    db.set("FRA", "old");
    gated_read(&c, &db, None, "MUC", true, 60_000).await; // the namespace has a generation
    let g = gate();
    let r0 = spawn_gated(&c, &db, &g, true, 60_000);
    g.read_done.notified().await;
    db.set("FRA", "new");
    c.namespace("aba").invalidate_key(&"FRA").await;
    let r1: Result<String, &str> = c
        .namespace("aba")
        .ttl(Duration::from_secs(60))
        .lock_wait(Duration::from_millis(10))
        .get_or_try_compute(&"FRA", async { Err("db hiccup") })
        .await;
    assert!(r1.is_err());
    let r2 = {
        let (c, db) = (c.clone(), db.clone());
        tokio::spawn(async move { gated_read(&c, &db, None, "FRA", true, 60_000).await })
    };
    assert_eq!(
        r2.await.unwrap(),
        "new",
        "R2 started after the invalidation returned"
    );
    g.may_return.notify_one();
    r0.await.unwrap();
    assert_eq!(gated_read(&c, &db, None, "FRA", true, 60_000).await, "new");
}

/// Without the lease: R0 reads an empty key and the old value; the
/// invalidation's tombstone is replaced by R1's fresh entry, which then
/// expires. R0's store (expecting an empty key) must still be refused.
async fn aba_an_expired_entry_does_not_reopen_the_key(b: Backend) {
    let c = cache(b, "aba_expiry").await;
    let db = Arc::new(Db::default());
    db.set("FRA", "old");
    gated_read(&c, &db, None, "MUC", false, 60_000).await; // the namespace has a generation
    let g = gate();
    let r0 = spawn_gated(&c, &db, &g, false, 200);
    g.read_done.notified().await;
    db.set("FRA", "new");
    c.namespace("aba").invalidate_key(&"FRA").await;
    assert_eq!(gated_read(&c, &db, None, "FRA", false, 200).await, "new");
    tokio::time::sleep(Duration::from_millis(300)).await; // R1's entry expires
    g.may_return.notify_one();
    assert_eq!(r0.await.unwrap(), "old");
    assert_eq!(gated_read(&c, &db, None, "FRA", false, 200).await, "new");
}

/// The namespace as a `&str` constant: one name for the reader and both of
/// its writers (a whole-namespace and a key invalidation), so a typo is a
/// compile error instead of an invalidation that reaches nothing.
mod users {
    pub const NS: &str = "users";
}

#[cached(ns = users::NS, cache = cache, skip(cache, calls))]
async fn user_name(cache: &Cache, calls: &Calls, id: u32) -> String {
    calls.hit();
    format!("user {id} #{}", calls.get())
}

#[invalidates(users::NS, cache = cache)]
async fn rename_all(cache: &Cache) -> Result<(), String> {
    let _ = cache;
    Ok(())
}

#[invalidates(ns = users::NS, key(id), cache = cache)]
async fn rename(cache: &Cache, id: u32) -> Result<(), String> {
    let _ = (cache, id);
    Ok(())
}

async fn a_const_namespace_links_reader_and_writers(b: Backend) {
    let c = cache(b, "const_ns").await;
    let calls = Calls::default();
    let first = user_name(&c, &calls, 1).await;
    assert_eq!(
        with_status(user_name(&c, &calls, 1)).await,
        (first.clone(), Status::Hit)
    );
    rename(&c, 1).await.unwrap();
    let (second, s) = with_status(user_name(&c, &calls, 1)).await;
    assert_eq!(s, Status::Miss, "the key invalidation reached the entry");
    assert_ne!(second, first);
    rename_all(&c).await.unwrap();
    assert_eq!(with_status(user_name(&c, &calls, 1)).await.1, Status::Miss);
    assert!(c.stats().namespaces.contains_key("users"));
}

#[cached(ns = "nest_1", cache = cache, skip(cache))]
async fn nest_1(cache: &Cache) -> u32 {
    1
}

#[cached(ns = "nest_2", cache = cache, skip(cache))]
async fn nest_2(cache: &Cache) -> u32 {
    nest_1(cache).await + 1
}

#[cached(ns = "nest_3", cache = cache, skip(cache))]
async fn nest_3(cache: &Cache) -> u32 {
    nest_2(cache).await + 1
}

/// A cached fn's future holds its body once: each level of nesting adds
/// about one call's state, it does not multiply the inner future's size.
/// (When each runtime layer held the body by value, a level multiplied it
/// by 6.5, and `refresh(outer())` of two levels overflowed a test thread's
/// stack.)
#[test]
fn nesting_adds_to_a_future_and_does_not_multiply_it() {
    let c = Cache::builder().memory().build().expect("memory cache");
    let one = std::mem::size_of_val(&nest_1(&c));
    let three = std::mem::size_of_val(&nest_3(&c));
    assert!(
        three <= 4 * one,
        "three levels take {three} bytes, one level {one}"
    );
}

/// Unknown codes for 300 ms, known ones for an hour; `"skip"` not at all.
fn ttl_by_answer(found: &Option<u32>) -> Duration {
    match found {
        None => Duration::from_millis(300),
        Some(0) => Duration::ZERO,
        Some(_) => Duration::from_secs(3600),
    }
}

#[cached(ns = "ttl_of", ttl = ttl_by_answer, cache = cache, skip(cache, calls))]
async fn find(cache: &Cache, calls: &Calls, code: &str) -> Option<u32> {
    calls.hit();
    match code {
        "FRA" => Some(1),
        "skip" => Some(0),
        _ => None,
    }
}

/// With `stale` (a refresh in the background), the TTL from the value too.
/// (Counted in a static: a background refresh runs from owned copies of the
/// arguments, and each backend's test has its own code.)
static STALE_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cached(ns = "ttl_of_stale", ttl = ttl_by_answer, stale = "5s", cache = cache, skip(cache))]
async fn find_stale(cache: &Cache, code: &str) -> Option<u32> {
    STALE_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    (code == "FRA").then_some(1)
}

/// For a `Result`, on the `Ok` value; a closure works as well as a path.
#[cached(ns = "ttl_of_result", ttl = |n: &u64| Duration::from_millis(*n), cache = cache, skip(cache, calls))]
async fn wait_for(cache: &Cache, calls: &Calls, n: u64) -> Result<u64, String> {
    calls.hit();
    Ok(n)
}

async fn ttl_from_the_value(b: Backend) {
    let c = cache(b, "ttl_of").await;
    let calls = Calls::default();
    for code in ["FRA", "ZZZ", "skip"] {
        assert_eq!(
            with_status(find(&c, &calls, code)).await.1,
            Status::Miss,
            "{code}"
        );
    }
    assert_eq!(with_status(find(&c, &calls, "FRA")).await.1, Status::Hit);
    assert_eq!(with_status(find(&c, &calls, "ZZZ")).await.1, Status::Hit);
    assert_eq!(
        with_status(find(&c, &calls, "skip")).await.1,
        Status::Miss,
        "a zero TTL is not stored"
    );
    assert_eq!(with_status(wait_for(&c, &calls, 300)).await.1, Status::Miss);
    assert_eq!(
        with_status(wait_for(&c, &calls, 3_600_000)).await.1,
        Status::Miss
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        with_status(find(&c, &calls, "FRA")).await.1,
        Status::Hit,
        "an hour"
    );
    assert_eq!(
        with_status(find(&c, &calls, "ZZZ")).await.1,
        Status::Miss,
        "300 ms"
    );
    assert_eq!(
        with_status(wait_for(&c, &calls, 3_600_000)).await.1,
        Status::Hit
    );
    assert_eq!(with_status(wait_for(&c, &calls, 300)).await.1, Status::Miss);
    assert_eq!(calls.get(), 8);
    // Unknown: 300 ms, then stale for 5 s while one refresh (in the
    // background) runs the body again.
    let code = if b == Backend::Redis { "ZZR" } else { "ZZM" };
    let runs = || STALE_RUNS.load(std::sync::atomic::Ordering::SeqCst);
    let start = runs();
    assert_eq!(with_status(find_stale(&c, code)).await.1, Status::Miss);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        with_status(find_stale(&c, code)).await,
        (None, Status::Stale)
    );
    for _ in 0..200 {
        if runs() >= start + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(runs() >= start + 2, "refreshed in the background");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(with_status(find_stale(&c, code)).await.1, Status::Hit);
}
