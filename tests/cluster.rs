//! Redis Cluster mode (`CacheBuilder::cluster`) against private clusters of
//! `redis-server` processes (`support::cluster`): the core behaviour, keys
//! of a namespace on the master of its hash tag's slot, and failing open
//! while a master fails over or is down, then caching again.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Invalidation, Status, with_status};
use support::cluster::RedisCluster;
use support::{Calls, connected, unique_prefix};

fn cluster_cache(cluster: &RedisCluster, prefix: &str) -> Cache {
    Cache::builder()
        .cluster(cluster.urls())
        .prefix(prefix)
        .build()
        .expect("valid cluster config")
}

/// Namespace names whose slots (their hash tag) are served by `want`
/// different masters, one name per master.
fn namespaces_on_distinct_masters(cluster: &RedisCluster, want: usize) -> Vec<(String, usize)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for i in 0.. {
        let ns = format!("ns{i}");
        let master = cluster.master_of_slot(RedisCluster::slot(ns.as_bytes()));
        if seen.insert(master) {
            out.push((ns, master));
            if out.len() == want {
                return out;
            }
        }
    }
    unreachable!()
}

/// Miss and hit, both invalidations, two caches sharing a prefix, a
/// stampede, namespaces on different masters, and no local tier: all on a
/// 3-master cluster, with no failed Redis operation (no CROSSSLOT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_behaviour_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let prefix = unique_prefix("cluster");
    let a = cluster_cache(&cluster, &prefix);
    let b = cluster_cache(&cluster, &prefix);
    connected(&a).await;
    connected(&b).await;
    assert!(format!("{a:?}").contains("Cluster"), "{a:?}");

    // Miss, hit; namespace and key invalidation from the other instance.
    let ns = a.namespace("flight").ttl(Duration::from_secs(60));
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 10u32 })).await,
        (10, Status::Miss)
    );
    assert_eq!(
        with_status(ns.get_or_compute(&2, async { 20u32 })).await,
        (20, Status::Miss)
    );
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 11u32 })).await,
        (10, Status::Hit)
    );
    let other = b.namespace("flight").ttl(Duration::from_secs(60));
    assert_eq!(
        with_status(other.get_or_compute(&1, async { 12u32 })).await,
        (10, Status::Hit)
    );
    assert_eq!(other.invalidate().await, Invalidation::Done);
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 13u32 })).await,
        (13, Status::Miss)
    );
    assert_eq!(
        with_status(ns.get_or_compute(&2, async { 21u32 })).await,
        (21, Status::Miss)
    );
    assert_eq!(other.invalidate_key(&2).await, Invalidation::Done);
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 14u32 })).await,
        (13, Status::Hit)
    );
    assert_eq!(
        with_status(ns.get_or_compute(&2, async { 22u32 })).await,
        (22, Status::Miss)
    );

    // Stampede: 50 callers in two instances on a cold key run the body once.
    let calls = Arc::new(Calls::default());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            c.namespace("stampede")
                .get_or_compute(&"cold", async {
                    calls.hit();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    7u64
                })
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 7);
    }
    assert_eq!(calls.get(), 1, "the body ran once for 50 callers");

    // A namespace lives on the master of its hash tag's slot; namespaces
    // spread over the masters.
    let spread = namespaces_on_distinct_masters(&cluster, 3);
    for (name, master) in &spread {
        a.namespace(name).get_or_compute(&1, async { 1u8 }).await;
        let key = a.entry_key(name, &1).unwrap();
        let generation = format!("{prefix}:{{{name}}}:#gen");
        for k in [&key, &generation] {
            let slot = RedisCluster::slot(k.as_bytes());
            assert_eq!(slot, RedisCluster::slot(name.as_bytes()), "{k}");
            let exists = cluster.command(*master, &["EXISTS", k]).unwrap();
            assert_eq!(exists, "1", "{k} on node {master}");
        }
    }
    assert_eq!(
        spread
            .iter()
            .map(|(_, m)| *m)
            .collect::<BTreeSet<_>>()
            .len(),
        3
    );

    // No local tier in cluster mode: every hit reads Redis, so another
    // instance's invalidation is seen at once.
    let local = Cache::builder()
        .cluster(cluster.urls())
        .prefix(&prefix)
        .local(Duration::from_secs(60))
        .build()
        .unwrap();
    connected(&local).await;
    let lns = local.namespace("flight");
    assert_eq!(lns.get_or_compute(&1, async { 0u32 }).await, 13);
    assert_eq!(
        with_status(lns.get_or_compute(&1, async { 0u32 })).await,
        (13, Status::Hit)
    );
    assert_eq!(other.invalidate_key(&1).await, Invalidation::Done);
    assert_eq!(
        with_status(lns.get_or_compute(&1, async { 15u32 })).await,
        (15, Status::Miss)
    );
    assert_eq!(local.stats().total.local_hits, 0);

    // A Redis ACL user limited to the prefix (set on every node: ACLs are
    // per node) is enough; the cluster client also needs `CLUSTER SLOTS`.
    for i in 0..cluster.len() {
        let mut args = vec!["ACL", "SETUSER", "cache-aside", "on", ">s3cret", "-@all"];
        let keys = format!("~{prefix}:*");
        let channels = format!("&{prefix}:*");
        args.extend([keys.as_str(), channels.as_str()]);
        args.extend([
            "+get",
            "+set",
            "+mget",
            "+pttl",
            "+ping",
            "+evalsha",
            "+eval",
            "+script|load",
            "+publish",
            "+time",
            "+cluster|slots",
        ]);
        assert_eq!(cluster.command(i, &args).unwrap(), "OK");
    }
    let acl_urls: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.replace("redis://", "redis://cache-aside:s3cret@"))
        .collect();
    let acl = Cache::builder()
        .cluster(acl_urls)
        .prefix(&prefix)
        .build()
        .unwrap();
    assert!(!format!("{acl:?}").contains("s3cret"), "{acl:?}");
    // The restricted user can PING.
    connected(&acl).await;
    let ans = acl.namespace("acl");
    assert_eq!(ans.get_or_compute(&1, async { 1u8 }).await, 1);
    assert_eq!(
        with_status(ans.get_or_compute(&1, async { 2u8 })).await,
        (1, Status::Hit)
    );
    assert_eq!(ans.invalidate_key(&1).await, Invalidation::Done);
    assert_eq!(ans.invalidate().await, Invalidation::Done);
    assert_eq!(
        with_status(ans.get_or_compute(&1, async { 3u8 })).await,
        (3, Status::Miss)
    );

    // Tags: the tag's token lives in the entry's slot (read with it in one
    // MGET, no CROSSSLOT); a tag invalidation from the other instance
    // recomputes that user's entries only.
    for user in [7, 8] {
        assert_eq!(
            with_status(tagged(&a, user, 1)).await,
            (u64::from(user), Status::Miss)
        );
        assert_eq!(with_status(tagged(&b, user, 1)).await.1, Status::Hit);
    }
    assert_eq!(
        b.namespace("tagged").invalidate_tag("user", &7u32).await,
        Invalidation::Done
    );
    assert_eq!(with_status(tagged(&a, 7, 1)).await.1, Status::Miss);
    assert_eq!(with_status(tagged(&a, 8, 1)).await.1, Status::Hit);
    let tag_key = format!("{prefix}:{{tagged}}:#t:user:7");
    let master = cluster.master_of_slot(RedisCluster::slot(b"tagged"));
    assert_eq!(cluster.command(master, &["EXISTS", &tag_key]).unwrap(), "1");

    // Nested: an outer entry whose deps live in other slots (the inner
    // namespaces' own), checked without a cross-slot error, follows an
    // inner key invalidation from the other instance.
    assert_eq!(with_status(outer(&a, 1)).await, (1, Status::Miss));
    assert_eq!(with_status(outer(&a, 1)).await, (1, Status::Hit));
    assert_eq!(with_status(outer(&b, 1)).await, (1, Status::Hit));
    assert_eq!(
        b.namespace("tagged").invalidate_tag("user", &1u32).await,
        Invalidation::Done
    );
    assert_eq!(with_status(outer(&a, 1)).await.1, Status::Miss);
    assert_eq!(
        b.namespace("inner_flight").invalidate_key(&1).await,
        Invalidation::Done
    );
    assert_eq!(with_status(outer(&a, 1)).await.1, Status::Miss);
    assert_eq!(with_status(outer(&b, 1)).await.1, Status::Hit);

    for c in [&a, &b, &local, &acl] {
        let st = c.stats().total;
        assert_eq!(
            (st.errors, st.bypasses, st.decode_errors),
            (0, 0, 0),
            "{st:?}"
        );
    }
}

#[cache_aside::cached(ns = "tagged", ttl = "1m", tags(user), cache = cache, skip(cache))]
async fn tagged(cache: &Cache, user: u32, day: u32) -> u64 {
    let _ = day;
    u64::from(user)
}

#[cache_aside::cached(ns = "inner_flight", ttl = "1m", cache = cache, skip(cache))]
async fn inner_flight(cache: &Cache, id: u32) -> u64 {
    u64::from(id)
}

/// Reads two namespaces (two slots, maybe two masters) and a tagged one.
#[cache_aside::cached(ns = "outer_flight", ttl = "1m", cache = cache, skip(cache))]
async fn outer(cache: &Cache, id: u32) -> u64 {
    let a = inner_flight(cache, id).await;
    let b = tagged(cache, id, 2).await;
    a.min(b)
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    wrong: AtomicU64,
    slowest_ms: AtomicU64,
}

/// `workers` tasks calling `ns` (keys 0..16) until `stop`; every value must
/// be the key's.
fn load(cache: &Cache, namespaces: &[String], stop: &Arc<AtomicBool>) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    for w in 0..4u64 {
        let (cache, stop, tally) = (cache.clone(), Arc::clone(stop), Arc::clone(&tally));
        let namespaces = namespaces.to_vec();
        tokio::spawn(async move {
            let mut n = w;
            while !stop.load(Relaxed) {
                n += 1;
                let ns = &namespaces[(n % namespaces.len() as u64) as usize];
                let key = n % 16;
                let started = Instant::now();
                let (v, status) = with_status(
                    cache
                        .namespace(ns)
                        .ttl(Duration::from_secs(60))
                        .get_or_compute(&key, async move { key * 3 }),
                )
                .await;
                let ms = started.elapsed().as_millis() as u64;
                tally.slowest_ms.fetch_max(ms, Relaxed);
                tally.calls.fetch_add(1, Relaxed);
                if v != key * 3 {
                    tally.wrong.fetch_add(1, Relaxed);
                }
                match status {
                    Status::Hit => &tally.hits,
                    Status::Miss => &tally.misses,
                    _ => &tally.bypasses,
                }
                .fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    tally
}

/// Key 1 of `ns` (TTL 60 s), computed as `v` on a miss, and its status.
fn key_one(cache: &Cache, ns: &str, v: u32) -> impl Future<Output = (u32, Status)> + use<> {
    let (cache, ns) = (cache.clone(), ns.to_owned());
    async move {
        with_status(
            cache
                .namespace(&ns)
                .ttl(Duration::from_secs(60))
                .get_or_compute(&1, async move { v }),
        )
        .await
    }
}

/// Polls `ns` until a call is a hit again (after an outage); returns how
/// long that took.
async fn until_hit(cache: &Cache, ns: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (_, status) = with_status(
            cache
                .namespace(ns)
                .ttl(Duration::from_secs(60))
                .get_or_compute(&100u64, async { 300u64 }),
        )
        .await;
        if status == Status::Hit {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{ns}: no hit within {within:?} ({:?})",
            cache.stats().total
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 3 masters with a replica each, a steady load over namespaces on every
/// master, then the master of one namespace is killed: no call fails or
/// returns a wrong value (they run uncached while the slot is down), and
/// after the failover that namespace is served from the cache again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_under_load_fails_open_and_recovers() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start_with_replicas)
        .await
        .unwrap();
    let cache = cluster_cache(&cluster, &unique_prefix("failover"));
    connected(&cache).await;
    let spread = namespaces_on_distinct_masters(&cluster, 3);
    let names: Vec<String> = spread.iter().map(|(n, _)| n.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = load(&cache, &names, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tally.hits.load(Relaxed);
    assert!(before > 0, "warm: {before} hits");

    let victim = names[0].clone();
    let killed = cluster.kill_master_of_slot(RedisCluster::slot(victim.as_bytes()));
    let killed_at = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        let took = cluster.wait_ok(Duration::from_secs(20));
        (cluster, took)
    })
    .await
    .unwrap();
    let (cluster, failover) = cluster;
    let new_master = cluster.master_of_slot(RedisCluster::slot(victim.as_bytes()));
    assert_ne!(new_master, killed);
    let recovered = until_hit(&cache, &victim, Duration::from_secs(10)).await;
    let back = killed_at.elapsed();
    // A while more of load after the failover.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t = &tally;
    let (calls, hits, misses, bypasses) = (
        t.calls.load(Relaxed),
        t.hits.load(Relaxed),
        t.misses.load(Relaxed),
        t.bypasses.load(Relaxed),
    );
    eprintln!(
        "failover: killed node {killed}, cluster ok after {failover:?}, cached again after \
         {back:?} (poll {recovered:?}); {calls} calls: {hits} hits, {misses} misses, \
         {bypasses} bypasses, slowest {} ms; stats {:?}",
        t.slowest_ms.load(Relaxed),
        cache.stats().total
    );
    assert_eq!(t.wrong.load(Relaxed), 0, "every call returned its value");
    assert!(hits > before, "hits went on");
    // Bounded: the operation timeout per Redis call, the stampede wait at
    // most (3 s by default), never a hang.
    assert!(t.slowest_ms.load(Relaxed) < 4_000);
    // Every namespace, on every master, is cached again.
    for ns in &names {
        until_hit(&cache, ns, Duration::from_secs(5)).await;
    }
}

/// 3 masters, no replicas: the master of a namespace dies (calls run
/// uncached, quickly), comes back empty, and the namespace is cached again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_returns_is_used_again() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let cache = Cache::builder()
        .cluster(cluster.urls())
        .prefix(unique_prefix("returns"))
        .circuit_breaker(3, Duration::from_millis(200))
        .build()
        .unwrap();
    connected(&cache).await;
    let ns = namespaces_on_distinct_masters(&cluster, 1).remove(0).0;
    let call = |v: u32| key_one(&cache, &ns, v);
    assert_eq!(call(1).await, (1, Status::Miss));
    assert_eq!(call(2).await, (1, Status::Hit));

    let i = cluster.kill_master_of_slot(RedisCluster::slot(ns.as_bytes()));
    let mut calls = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let t = Instant::now();
        let (v, status) = call(3).await;
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // The old entry (1) may be served until the node is seen gone.
        assert!(
            (v, status) == (3, Status::Bypass) || (v, status) == (1, Status::Hit),
            "{v} {status:?}"
        );
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(calls > 10);
    assert_eq!(call(4).await, (4, Status::Bypass), "the node is down");

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(i);
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    })
    .await
    .unwrap();
    // Back, empty: a miss, then hits.
    let until_cached = |v: u32| {
        let call = &call;
        let cache = &cache;
        async move {
            let started = Instant::now();
            loop {
                let (got, status) = call(v).await;
                if status == Status::Hit {
                    assert_eq!(got, v);
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "not cached again: {:?}",
                    cache.stats().total
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    until_cached(5).await;

    // Every node down, then back (empty): the same cache serves again.
    let mut cluster = cluster;
    for i in 0..cluster.len() {
        cluster.kill(i);
    }
    // Long enough (2.5 s) for the backend to try replacing its connection.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let t = Instant::now();
        assert_eq!(call(6).await, (6, Status::Bypass));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cluster = tokio::task::spawn_blocking(move || {
        for i in 0..cluster.len() {
            cluster.restart(i);
        }
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    })
    .await
    .unwrap();
    until_cached(7).await;
    drop(cluster);
}

/// Passwords in the seed URLs never show in `Debug` output; a cluster
/// that is not there fails open.
#[tokio::test]
async fn no_cluster_fails_open_and_hides_passwords() {
    let b = Cache::builder()
        .cluster([
            "redis://cache-aside:s3cret@127.0.0.1:1",
            "redis://cache-aside:s3cret@127.0.0.1:2",
        ])
        .prefix(unique_prefix("nocluster"))
        .connect_timeout(Duration::from_millis(200));
    assert!(!format!("{b:?}").contains("s3cret"), "{b:?}");
    let c = b.build().unwrap();
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    let started = Instant::now();
    for i in 0..5u32 {
        assert_eq!(
            with_status(c.namespace("x").get_or_compute(&i, async move { i })).await,
            (i, Status::Bypass)
        );
    }
    assert_eq!(c.namespace("x").invalidate().await, Invalidation::Queued);
    let err = c.ping().await.unwrap_err();
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        Cache::builder()
            .cluster(Vec::<String>::new())
            .build()
            .is_err()
    );
}

/// One circuit breaker per namespace in Cluster mode (a namespace's keys
/// live on one node): a node that fails opens the breaker of its own
/// namespaces only, and the namespaces of the healthy nodes keep hitting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_node_pauses_only_its_own_namespaces() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let cache = Cache::builder()
        .cluster(cluster.urls())
        .prefix(unique_prefix("breakers"))
        .circuit_breaker(3, Duration::from_secs(5))
        .build()
        .unwrap();
    connected(&cache).await;
    let mut two = namespaces_on_distinct_masters(&cluster, 2);
    let (healthy, _) = two.pop().unwrap();
    let (down, frozen) = two.pop().unwrap();
    let call = |ns: &str, v: u32| key_one(&cache, ns, v);
    for ns in [&down, &healthy] {
        assert_eq!(call(ns, 1).await, (1, Status::Miss));
        assert_eq!(call(ns, 2).await, (1, Status::Hit));
    }
    // Frozen, the node times calls out: an outage (a killed node is
    // answered for at once, by the others' MOVED).
    cluster.freeze(frozen);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(800) {
        let (v, s) = call(&down, 3).await;
        assert_eq!((v, s), (3, Status::Bypass));
    }
    for _ in 0..20 {
        assert_eq!(
            call(&healthy, 4).await,
            (1, Status::Hit),
            "{:?}",
            cache.stats().total
        );
        let t = Instant::now();
        assert_eq!(call(&down, 5).await, (5, Status::Bypass));
        assert!(
            t.elapsed() < Duration::from_millis(50),
            "its breaker is open: {:?}",
            t.elapsed()
        );
    }
    cluster.thaw(frozen);
    drop(cluster);
}

/// Replication is asynchronous: a master killed right after it acknowledged
/// an invalidation may take it along, and the replica promoted in its place
/// still holds the old generation and entries. Freeze a master's replica,
/// cut their link (`CLIENT KILL TYPE replica`), invalidate, kill the master:
/// - without `durable_invalidations`, the invalidation returns `Done` at
///   once and, after the failover, the old entry is served again;
/// - with it, the invalidation returns once the replica (thawed 500 ms
///   later) is back and has it, and after the failover the entry is a miss;
/// - with the replica frozen for longer than its timeout, it returns
///   `Queued`, and lands once the replica answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_invalidation_survives_a_failover_when_durable() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start_with_replicas)
        .await
        .unwrap();
    let prefix = unique_prefix("durable");
    let durable_cache = |timeout| {
        Cache::builder()
            .cluster(cluster.urls())
            .prefix(&prefix)
            .durable_invalidations(1, timeout)
            .build()
            .unwrap()
    };
    let plain = cluster_cache(&cluster, &prefix);
    let durable = durable_cache(Duration::from_secs(5));
    let short = durable_cache(Duration::from_millis(300));
    for c in [&plain, &durable, &short] {
        connected(c).await;
        // Durable invalidations' own connection, made before any freeze.
        assert_eq!(c.namespace("warm").invalidate().await, Invalidation::Done);
    }
    // What a durable invalidation costs on a healthy cluster (interleaved).
    let (mut plain_us, mut durable_us) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        for (cache, out) in [(&plain, &mut plain_us), (&durable, &mut durable_us)] {
            let t = Instant::now();
            assert_eq!(
                cache.namespace("cost").invalidate().await,
                Invalidation::Done
            );
            out.push(t.elapsed().as_micros());
        }
    }
    plain_us.sort_unstable();
    durable_us.sort_unstable();
    eprintln!(
        "durable: invalidation p50 {} us plain, {} us durable (50 each, interleaved)",
        plain_us[25], durable_us[25]
    );
    let three = namespaces_on_distinct_masters(&cluster, 3);
    let read = |ns: &str, v: u32| key_one(&plain, ns, v);
    // After a failover: the first read that reaches the new master (the
    // cluster client learns the new slot map in the meantime).
    let read_after = |ns: &str, v: u32| {
        let ns = ns.to_owned();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = read(&ns, v).await;
                if got.1 != Status::Bypass || Instant::now() > deadline {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let failover = |mut cluster: RedisCluster, master: usize, replica: usize| {
        tokio::task::spawn_blocking(move || {
            cluster.kill(master);
            cluster.thaw(replica);
            cluster.wait_ok(Duration::from_secs(20));
            cluster
        })
    };
    let cut = |cluster: &mut RedisCluster, master: usize| {
        let replica = cluster.replicas_of(master)[0];
        cluster.freeze(replica);
        cluster
            .command(master, &["CLIENT", "KILL", "TYPE", "replica"])
            .unwrap();
        replica
    };

    // A replica frozen past the timeout: too few acknowledgements.
    let (ns, master) = three[2].clone();
    assert_eq!(read(&ns, 1).await, (1, Status::Miss));
    let replica = cluster.replicas_of(master)[0];
    cluster.freeze(replica);
    let started = Instant::now();
    assert_eq!(
        short.namespace(&ns).invalidate().await,
        Invalidation::Queued
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(short.has_queued_invalidations());

    cluster.thaw(replica);
    let deadline = Instant::now() + Duration::from_secs(10);
    while short.has_queued_invalidations() {
        assert!(
            Instant::now() < deadline,
            "the queued invalidation never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Without: the invalidation is lost with the master.
    let (ns, master) = three[0].clone();
    assert_eq!(read(&ns, 1).await, (1, Status::Miss));
    assert_eq!(read(&ns, 2).await, (1, Status::Hit));
    let replica = cut(&mut cluster, master);
    assert_eq!(plain.namespace(&ns).invalidate().await, Invalidation::Done);
    let cluster = failover(cluster, master, replica).await.unwrap();
    assert_eq!(
        read_after(&ns, 3).await,
        (1, Status::Hit),
        "the old entry came back with the promoted replica"
    );

    // With: the invalidation waits for the replica, and survives.
    let (ns, master) = three[1].clone();
    let mut cluster = cluster;
    assert_eq!(read(&ns, 1).await, (1, Status::Miss));
    assert_eq!(read(&ns, 2).await, (1, Status::Hit));
    let replica = cut(&mut cluster, master);
    let started = Instant::now();
    let durable_ns = durable.namespace(&ns);
    let (invalidated, ()) = tokio::join!(durable_ns.invalidate(), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.thaw(replica);
    });
    let waited = started.elapsed();
    assert_eq!(invalidated, Invalidation::Done);
    assert!(waited >= Duration::from_millis(500), "{waited:?}");

    let cluster = failover(cluster, master, replica).await.unwrap();
    assert_eq!(read_after(&ns, 3).await, (3, Status::Miss));
    eprintln!("durable: the invalidation returned after {waited:?} (replica thawed at 500 ms)");
    drop(cluster);
}
