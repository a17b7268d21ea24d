//! Batch reads (`Namespace::get_or_compute_many`): each key is the entry a
//! single-key call reads and writes; all hits take no body call; the misses
//! take one body call with exactly the missing keys; an invalidated key is
//! recomputed alone; overlapping batches across two instances and in one
//! process compute each key once and never wait for each other; an `Err`
//! stores nothing; a batch that computes while its keys are invalidated
//! stores nothing stale.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use cache_aside::{Cache, Status, cached, invalidates, with_status};
use support::{Backend, cache, two_instances};

on_every_backend!(
    a_batch_shares_entries_with_single_key_calls,
    only_the_missing_keys_reach_the_body,
    an_invalidated_key_is_recomputed_alone,
    an_error_stores_nothing,
    a_write_during_the_batch_leaves_no_old_value,
);

/// Airport names, and how often each was read from "the database".
#[derive(Default)]
struct Db {
    names: Mutex<HashMap<String, String>>,
    reads: Mutex<BTreeMap<String, usize>>,
    calls: Mutex<Vec<Vec<String>>>,
}

impl Db {
    fn name(&self, code: &str) -> String {
        *self.reads.lock().unwrap().entry(code.into()).or_default() += 1;
        let names = self.names.lock().unwrap();
        names
            .get(code)
            .cloned()
            .unwrap_or_else(|| format!("{code} airport"))
    }
    fn set(&self, code: &str, name: &str) {
        self.names.lock().unwrap().insert(code.into(), name.into());
    }
    fn reads(&self, code: &str) -> usize {
        self.reads.lock().unwrap().get(code).copied().unwrap_or(0)
    }
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

const NS: &str = "batch_airport";

#[cached(ns = NS, ttl = "5m", cache = cache, skip(cache, db))]
async fn airport(cache: &Cache, db: &Db, code: &str) -> String {
    db.name(code)
}

#[invalidates(ns = NS, key(code), cache = cache)]
async fn rename(cache: &Cache, db: &Db, code: &str, name: &str) {
    db.set(code, name);
}

/// The batch form, by hand; `pause`: how long the body takes.
async fn airports(
    cache: &Cache,
    db: &Db,
    codes: &[&str],
    pause: Duration,
) -> HashMap<String, String> {
    let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
    cache
        .namespace(NS)
        .ttl(Duration::from_secs(300))
        .get_or_compute_many(&codes, |missing: Vec<String>| async move {
            db.calls.lock().unwrap().push(missing.clone());
            let names: Vec<(String, String)> =
                missing.iter().map(|c| (c.clone(), db.name(c))).collect();
            tokio::time::sleep(pause).await;
            names.into_iter().collect()
        })
        .await
}

fn names(codes: &[&str]) -> HashMap<String, String> {
    codes
        .iter()
        .map(|c| (c.to_string(), format!("{c} airport")))
        .collect()
}

async fn a_batch_shares_entries_with_single_key_calls(backend: Backend) {
    let c = cache(backend, "batch_share").await;
    let db = Db::default();
    for code in ["FRA", "JFK"] {
        airport(&c, &db, code).await;
    }
    // All hits: one read, no body call.
    let got = airports(&c, &db, &["FRA", "JFK", "FRA"], Duration::ZERO).await;
    assert_eq!(got, names(&["FRA", "JFK"]));
    assert!(db.calls().is_empty(), "{:?}", db.calls());
    // What the batch stores, the single-key fn hits.
    airports(&c, &db, &["LHR", "CDG"], Duration::ZERO).await;
    let (v, s) = with_status(airport(&c, &db, "CDG")).await;
    assert_eq!((v.as_str(), s), ("CDG airport", Status::Hit));
    assert_eq!(db.reads("CDG"), 1);
}

async fn only_the_missing_keys_reach_the_body(backend: Backend) {
    let c = cache(backend, "batch_missing").await;
    let db = Db::default();
    let codes: Vec<String> = (0..100).map(|i| format!("A{i:02}")).collect();
    let all: Vec<&str> = codes.iter().map(String::as_str).collect();
    for code in all.iter().filter(|c| !c.ends_with('7')) {
        airport(&c, &db, code).await;
    }
    let got = airports(&c, &db, &all, Duration::ZERO).await;
    assert_eq!(got, names(&all));
    let calls = db.calls();
    assert_eq!(calls.len(), 1, "one body call: {calls:?}");
    let mut missing = calls[0].clone();
    missing.sort();
    let want: Vec<String> = all
        .iter()
        .filter(|c| c.ends_with('7'))
        .map(|c| c.to_string())
        .collect();
    assert_eq!(missing, want);
    // And now everything hits.
    airports(&c, &db, &all, Duration::ZERO).await;
    assert_eq!(db.calls().len(), 1);
}

async fn an_invalidated_key_is_recomputed_alone(backend: Backend) {
    let c = cache(backend, "batch_invalidate").await;
    let db = Db::default();
    airports(&c, &db, &["FRA", "JFK", "LHR"], Duration::ZERO).await;
    rename(&c, &db, "JFK", "John F. Kennedy").await;
    let got = airports(&c, &db, &["FRA", "JFK", "LHR"], Duration::ZERO).await;
    assert_eq!(got["JFK"], "John F. Kennedy");
    assert_eq!(db.calls().last().unwrap(), &vec!["JFK".to_string()]);
}

async fn an_error_stores_nothing(backend: Backend) {
    let c = cache(backend, "batch_error").await;
    let ns = c.namespace(NS);
    let codes = ["FRA".to_string(), "JFK".to_string()];
    let failed: Result<HashMap<String, String>, String> = ns
        .get_or_try_compute_many(&codes, |_| async { Err("database down".to_string()) })
        .await;
    assert_eq!(failed, Err("database down".into()));
    let db = Db::default();
    let got = airports(&c, &db, &["FRA", "JFK"], Duration::ZERO).await;
    assert_eq!(got, names(&["FRA", "JFK"]));
    assert_eq!(db.calls().len(), 1);
}

async fn a_write_during_the_batch_leaves_no_old_value(backend: Backend) {
    let c = cache(backend, "batch_race").await;
    let db = Db::default();
    // The batch reads the old names, then the write and its invalidation
    // land while its body still runs.
    let batch = airports(&c, &db, &["FRA", "JFK"], Duration::from_millis(300));
    let write = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rename(&c, &db, "JFK", "John F. Kennedy").await;
    };
    let (old, ()) = tokio::join!(batch, write);
    assert_eq!(old["JFK"], "JFK airport");
    let (v, s) = with_status(airport(&c, &db, "JFK")).await;
    assert_eq!((v.as_str(), s), ("John F. Kennedy", Status::Miss));
}

/// Eight batches at once over overlapping keys, on two instances sharing a
/// prefix: every key's body runs once, and none waits for another batch
/// (no deadlock, the whole thing in well under the lease wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_batches_compute_each_key_once() {
    let (a, b) = two_instances("batch_overlap").await;
    let db = Db::default();
    let sets: [&[&str]; 4] = [
        &["FRA", "JFK", "LHR"],
        &["JFK", "LHR", "CDG"],
        &["CDG", "FRA", "AMS"],
        &["AMS", "JFK", "FRA", "LHR", "CDG"],
    ];
    let started = std::time::Instant::now();
    let runs = sets
        .iter()
        .flat_map(|s| [&a, &b].map(|c| airports(c, &db, s, Duration::from_millis(100))));
    let got = futures_util::future::join_all(runs).await;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &names(sets[i / 2]));
    }
    for code in ["FRA", "JFK", "LHR", "CDG", "AMS"] {
        assert_eq!(db.reads(code), 1, "{code}: {:?}", db.calls());
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[cached(ns = NS, ttl = "5m", cache = cache, skip(cache, db))]
async fn slow_airport(cache: &Cache, db: &Db, code: &str) -> String {
    tokio::time::sleep(Duration::from_millis(800)).await;
    db.name(code)
}

/// A key whose lease another process holds waits for that process, as a
/// single-key call would; the batch's other keys do not wait with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_elsewhere_does_not_hold_up_the_others() {
    let (a, b) = two_instances("batch_held").await;
    let db = Db::default();
    let started = std::time::Instant::now();
    let elsewhere = slow_airport(&b, &db, "JFK");
    let batch = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let codes = ["FRA".to_string(), "JFK".to_string()];
        let first_body = Mutex::new(None);
        let got = a
            .namespace(NS)
            .get_or_compute_many(&codes, |missing: Vec<String>| {
                first_body.lock().unwrap().get_or_insert(started.elapsed());
                db.calls.lock().unwrap().push(missing.clone());
                let names: HashMap<String, String> =
                    missing.iter().map(|c| (c.clone(), db.name(c))).collect();
                async move { names }
            })
            .await;
        let first = first_body.lock().unwrap().expect("a body ran");
        (got, first)
    };
    let (jfk, (got, first)) = tokio::join!(elsewhere, batch);
    assert_eq!(got, names(&["FRA", "JFK"]));
    assert_eq!(jfk, "JFK airport");
    // FRA was computed at once, JFK came from the other process's store.
    assert_eq!(db.calls(), vec![vec!["FRA".to_string()]]);
    assert_eq!(db.reads("JFK"), 1);
    assert!(
        first < Duration::from_millis(500),
        "FRA waited for JFK: {first:?}"
    );
}

#[cached(ns = "batch_outer", ttl = "5m", cache = cache, skip(cache, db))]
async fn route_names(cache: &Cache, db: &Db, route: u32) -> Vec<String> {
    let _ = route;
    let got = airports(cache, db, &["FRA", "JFK"], Duration::ZERO).await;
    let mut names: Vec<String> = got.into_values().collect();
    names.sort();
    names
}

/// A batch inside a cached body is tracked like single-key calls: the
/// outer entry follows an invalidation of one of the keys it read, also
/// when they were all hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outer_entry_follows_a_key_its_batch_read() {
    let (a, b) = two_instances("batch_nested").await;
    let db = Db::default();
    airports(&a, &db, &["FRA", "JFK"], Duration::ZERO).await;
    assert_eq!(
        route_names(&a, &db, 1).await,
        ["FRA airport", "JFK airport"]
    );
    rename(&b, &db, "JFK", "John F. Kennedy").await;
    assert_eq!(
        route_names(&a, &db, 1).await,
        ["FRA airport", "John F. Kennedy"]
    );
}

/// The batch form as an attribute: the body sees only the missing codes.
#[cached(ns = NS, ttl = "5m", batch, cache = cache, skip(cache, db))]
async fn airports_by_code(
    cache: &Cache,
    db: &Db,
    codes: &[String],
) -> Result<HashMap<String, String>, String> {
    db.calls.lock().unwrap().push(codes.to_vec());
    if codes.iter().any(|c| c == "ERR") {
        return Err("no such airport".into());
    }
    Ok(codes.iter().map(|c| (c.clone(), db.name(c))).collect())
}

/// The keys by value, a plain map.
#[cached(ns = NS, batch, cache = cache, skip(cache, db))]
async fn airports_owned(cache: &Cache, db: &Db, codes: Vec<String>) -> HashMap<String, String> {
    db.calls.lock().unwrap().push(codes.clone());
    codes
        .into_iter()
        .map(|c| {
            let n = db.name(&c);
            (c, n)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_attribute_reads_and_fills_the_single_key_entries() {
    let c = cache(Backend::Redis, "batch_attr").await;
    let db = Db::default();
    airport(&c, &db, "FRA").await;
    let codes: Vec<String> = ["FRA", "JFK", "LHR"].map(String::from).to_vec();
    let got = airports_by_code(&c, &db, &codes).await.unwrap();
    assert_eq!(got, names(&["FRA", "JFK", "LHR"]));
    let mut first = db.calls()[0].clone();
    first.sort();
    assert_eq!(first, ["JFK", "LHR"]);
    let (v, s) = with_status(airport(&c, &db, "LHR")).await;
    assert_eq!((v.as_str(), s), ("LHR airport", Status::Hit));
    // All hits now, through the other form too.
    let again = airports_owned(&c, &db, codes.clone()).await;
    assert_eq!(again, got);
    assert_eq!(db.calls().len(), 1);
    // An error is the caller's; nothing is stored for its keys.
    let bad = ["FRA".to_string(), "ERR".to_string()];
    assert_eq!(
        airports_by_code(&c, &db, &bad).await,
        Err("no such airport".into())
    );
    let (_, s) = with_status(airport(&c, &db, "ERR")).await;
    assert_eq!(s, Status::Miss);
}

#[cached(ns = "batch_country", ttl = "5m", cache = cache, skip(cache, db))]
async fn country(cache: &Cache, db: &Db, code: &str) -> String {
    db.name(code)
}

/// Airports with their country, through the cached `country` (nested).
#[cached(ns = "batch_with_country", ttl = "5m", batch, cache = cache, skip(cache, db))]
async fn with_country(cache: &Cache, db: &Db, codes: &[String]) -> HashMap<String, String> {
    let de = country(cache, db, "DE").await;
    codes
        .iter()
        .map(|c| (c.clone(), format!("{c} in {de}")))
        .collect()
}

#[cached(ns = "batch_with_country", ttl = "5m", cache = cache, skip(cache, db))]
async fn one_with_country(cache: &Cache, db: &Db, code: &str) -> String {
    let de = country(cache, db, "DE").await;
    format!("{code} in {de}")
}

#[invalidates(ns = "batch_country", key(code), cache = cache)]
async fn rename_country(cache: &Cache, db: &Db, code: &str, name: &str) {
    db.set(code, name);
}

/// What a batch's body reads through other cached fns is what each entry
/// it stores depends on: the entries follow an invalidation of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_batch_stores_follow_what_its_body_read() {
    let (a, b) = two_instances("batch_deps").await;
    let db = Db::default();
    db.set("DE", "Germany");
    let codes = vec!["FRA".to_string(), "MUC".to_string()];
    let got = with_country(&a, &db, &codes).await;
    assert_eq!(got["FRA"], "FRA in Germany");
    rename_country(&b, &db, "DE", "Deutschland").await;
    assert_eq!(one_with_country(&a, &db, "FRA").await, "FRA in Deutschland");
    assert_eq!(
        with_country(&a, &db, &codes).await["MUC"],
        "MUC in Deutschland"
    );
}
