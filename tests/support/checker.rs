//! The randomized stale-read checker: readers and writers on random keys,
//! random delays inside the bodies; every read that starts after a write's
//! invalidation returned must see that write or a later one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside::Cache;

/// What a run checked.
#[derive(Debug)]
pub struct Checked {
    pub reads: u64,
    pub violations: u64,
    pub local_hits: u64,
    /// The writer's invalidations that could not land at once (queued).
    pub queued: u64,
}

/// 8 readers on `c` and 2 writers on `writer` (the same cache, or another
/// instance sharing the prefix, as another process would be) for
/// `$CHECKER_SECONDS` (default 5) over 20 keys; readers keep hits in the
/// local tier for `local` if given.
pub async fn run(c: Cache, writer: Cache, local: Option<Duration>) -> Checked {
    const KEYS: usize = 20;
    let db: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    // Per key: the newest version whose invalidation has returned.
    let floor: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let seconds: u64 = std::env::var("CHECKER_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let reads = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for r in 0..8u64 {
        let (c, db, floor, reads, violations) = (
            c.clone(),
            db.clone(),
            floor.clone(),
            reads.clone(),
            violations.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = rng(r + 1);
            while Instant::now() < deadline {
                let k = (rng() % KEYS as u64) as usize;
                let before = floor[k].load(SeqCst);
                let (d1, d2) = (rng() % 3, rng() % 3);
                let db = db.clone();
                let mut ns = c.namespace("checker").ttl(Duration::from_secs(30));
                if let Some(l) = local {
                    ns = ns.local(l);
                }
                let v = ns
                    .get_or_compute(&k, async move {
                        tokio::time::sleep(Duration::from_millis(d1)).await;
                        let v = db[k].load(SeqCst);
                        tokio::time::sleep(Duration::from_millis(d2)).await;
                        v
                    })
                    .await;
                reads.fetch_add(1, SeqCst);
                if v < before {
                    violations.fetch_add(1, SeqCst);
                }
            }
        }));
    }
    for w in 0..2u64 {
        let (c, db, floor) = (writer.clone(), db.clone(), floor.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rng(100 + w);
            while Instant::now() < deadline {
                let k = (rng() % KEYS as u64) as usize;
                let v = db[k].fetch_add(1, SeqCst) + 1;
                if rng().is_multiple_of(2) {
                    c.namespace("checker").invalidate_key(&k).await;
                } else {
                    c.namespace("checker").invalidate().await;
                }
                floor[k].fetch_max(v, SeqCst);
                tokio::time::sleep(Duration::from_millis(rng() % 5)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Checked {
        reads: reads.load(SeqCst),
        violations: violations.load(SeqCst),
        local_hits: c.stats().total.local_hits,
        queued: writer.stats().total.invalidations_queued,
    }
}

/// Runs the checker and asserts that it checked something and found nothing.
pub async fn check_linearizable(c: Cache, writer: Cache, local: Option<Duration>) {
    let got = run(c, writer, local).await;
    println!(
        "randomized checker: {} reads checked, {} violations ({} local hits)",
        got.reads, got.violations, got.local_hits
    );
    if local.is_some() {
        assert!(got.local_hits > 0, "the local tier served: {got:?}");
    }
    assert!(
        got.reads > 1000,
        "the checker checked something: {}",
        got.reads
    );
    assert_eq!(
        got.violations, 0,
        "{} stale reads out of {}",
        got.violations, got.reads
    );
}

/// A small xorshift generator (tests need no better randomness).
pub fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
