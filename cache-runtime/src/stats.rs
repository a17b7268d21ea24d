//! Counters per namespace, and [`Status`] / [`with_status`] for handlers
//! that want to say whether an answer came from the cache.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a cached call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Served from the cache; the function body did not run.
    Hit,
    /// Not in the cache (or not valid any more): the body ran, and its value
    /// was stored unless `unless` rejected it or it was an `Err`.
    Miss,
    /// The cache was not used: Redis unavailable or too slow, no cache
    /// installed, or a key that could not be built. The body ran.
    Bypass,
    /// Served from the cache after its TTL, within the `stale` window,
    /// while one caller (in some process) refreshes it.
    Stale,
}

impl Status {
    /// `true` for [`Status::Hit`] and [`Status::Stale`]: the answer came
    /// from the cache (or from a concurrent caller's computation) and the
    /// body did not run.
    pub fn is_hit(self) -> bool {
        matches!(self, Status::Hit | Status::Stale)
    }
}

tokio::task_local! {
    static STATUS: Cell<Option<Status>>;
}

/// Runs `fut` and also returns the [`Status`] of the cached call inside it:
/// the last `#[cached]` call (or [`Namespace`](crate::Namespace) get) that
/// *completed* while `fut` ran, in the same task. Nested calls report the
/// outermost one, because it completes last. If no cached call ran, the
/// status is [`Status::Bypass`].
///
/// ```
/// # async fn demo() {
/// use cachet::{cached, with_status, Status};
///
/// #[cached(ns = "answer")]
/// async fn answer() -> u32 { 42 }
///
/// let (value, status) = with_status(answer()).await;
/// assert_eq!(value, 42);
/// // No cache was installed in this example, so the call bypassed it.
/// assert_eq!(status, Status::Bypass);
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
/// ```
pub async fn with_status<F: Future>(fut: F) -> (F::Output, Status) {
    STATUS
        .scope(Cell::new(None), async move {
            let out = fut.await;
            let status = STATUS.with(Cell::get).unwrap_or(Status::Bypass);
            (out, status)
        })
        .await
}

#[inline]
pub(crate) fn report(status: Status) {
    let _ = STATUS.try_with(|s| s.set(Some(status)));
}

/// Atomic counters of one namespace.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bypasses: AtomicU64,
    pub errors: AtomicU64,
    pub decode_errors: AtomicU64,
    pub stores: AtomicU64,
    pub stores_rejected: AtomicU64,
    pub invalidations: AtomicU64,
    pub invalidations_queued: AtomicU64,
    pub invalidation_retries: AtomicU64,
    pub invalidations_dropped: AtomicU64,
    pub coalesced: AtomicU64,
    pub lease_waits: AtomicU64,
    pub stale_served: AtomicU64,
    pub refreshes: AtomicU64,
    pub early_refreshes: AtomicU64,
    pub local_hits: AtomicU64,
    pub too_large: AtomicU64,
}

#[inline]
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Counts {
        Counts {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            bypasses: self.bypasses.load(Relaxed),
            errors: self.errors.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            stores: self.stores.load(Relaxed),
            stores_rejected: self.stores_rejected.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            invalidations_queued: self.invalidations_queued.load(Relaxed),
            invalidation_retries: self.invalidation_retries.load(Relaxed),
            invalidations_dropped: self.invalidations_dropped.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            lease_waits: self.lease_waits.load(Relaxed),
            stale_served: self.stale_served.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            early_refreshes: self.early_refreshes.load(Relaxed),
            local_hits: self.local_hits.load(Relaxed),
            too_large: self.too_large.load(Relaxed),
        }
    }
}

/// A snapshot of counters, for one namespace or the total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Calls answered from the cache (also after waiting for another
    /// process's computation: see `lease_waits`).
    pub hits: u64,
    /// Calls that ran the body because the entry was absent, expired, invalidated or undecodable, or to refresh it.
    pub misses: u64,
    /// Calls that ran the body without the cache (Redis unavailable, open circuit breaker, bad key).
    pub bypasses: u64,
    /// Redis operations that failed or timed out (reads, stores, invalidations).
    pub errors: u64,
    /// Stored values that did not decode (foreign bytes, an old schema); each was a miss and is overwritten.
    pub decode_errors: u64,
    /// Values written to the cache.
    pub stores: u64,
    /// Stores refused because an invalidation happened while the value was computed (the stale-set guard), or the value was too large.
    pub stores_rejected: u64,
    /// Invalidations (of a namespace or a key) that reached the cache.
    pub invalidations: u64,
    /// Invalidations that could not reach Redis at once and were queued for retry.
    pub invalidations_queued: u64,
    /// Retry attempts for queued invalidations.
    pub invalidation_retries: u64,
    /// Queued invalidations given up after the retry period (entries still expire by TTL).
    pub invalidations_dropped: u64,
    /// Calls that waited for a concurrent identical call in this process instead of running the body.
    pub coalesced: u64,
    /// Misses that waited for another caller's lease (another process computing) instead of running the body.
    pub lease_waits: u64,
    /// Values served after their TTL within the `stale` window.
    pub stale_served: u64,
    /// Refreshes of stale entries (one caller per entry and window, across processes).
    pub refreshes: u64,
    /// Probabilistic early refreshes (XFetch) before the TTL ended.
    pub early_refreshes: u64,
    /// Of the `hits`, those served by the local (L1) tier without a Redis round trip.
    pub local_hits: u64,
    /// Values not stored because their encoding exceeded `max_value_bytes`
    /// (also counted in `stores_rejected`).
    pub too_large: u64,
}

impl Counts {
    /// Calls that did not run the body (`hits + coalesced + stale_served`)
    /// over all calls (those plus `misses + bypasses`), or 0.0 before any call.
    pub fn hit_ratio(&self) -> f64 {
        let answered = self.hits + self.coalesced + self.stale_served;
        let calls = answered + self.misses + self.bypasses;
        if calls == 0 {
            0.0
        } else {
            answered as f64 / calls as f64
        }
    }

    fn add(&mut self, o: &Counts) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.bypasses += o.bypasses;
        self.errors += o.errors;
        self.decode_errors += o.decode_errors;
        self.stores += o.stores;
        self.stores_rejected += o.stores_rejected;
        self.invalidations += o.invalidations;
        self.invalidations_queued += o.invalidations_queued;
        self.invalidation_retries += o.invalidation_retries;
        self.invalidations_dropped += o.invalidations_dropped;
        self.coalesced += o.coalesced;
        self.lease_waits += o.lease_waits;
        self.stale_served += o.stale_served;
        self.refreshes += o.refreshes;
        self.early_refreshes += o.early_refreshes;
        self.local_hits += o.local_hits;
        self.too_large += o.too_large;
    }
}

/// Counters of a [`Cache`](crate::Cache) (this process only), per namespace
/// and in total. From [`Cache::stats`](crate::Cache::stats).
///
/// ```
/// use cachet::Cache;
/// let cache = Cache::builder().memory().build().unwrap();
/// let stats = cache.stats();
/// assert_eq!(stats.total.hits, 0);
/// assert_eq!(stats.total.hit_ratio(), 0.0);
/// assert!(stats.namespaces.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Sum over all namespaces.
    pub total: Counts,
    /// Per namespace, sorted by name.
    pub namespaces: BTreeMap<String, Counts>,
}

impl Stats {
    pub(crate) fn from_namespaces(namespaces: BTreeMap<String, Counts>) -> Self {
        let mut total = Counts::default();
        for c in namespaces.values() {
            total.add(c);
        }
        Stats { total, namespaces }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn with_status_reports_the_last_completed_call() {
        let ((), s) = with_status(async {
            report(Status::Hit);
            report(Status::Miss);
        })
        .await;
        assert_eq!(s, Status::Miss);
        let ((), s) = with_status(async {}).await;
        assert_eq!(s, Status::Bypass);
        // Outside a scope, reporting is a no-op.
        report(Status::Hit);
    }

    #[test]
    fn hit_ratio() {
        let c = Counts {
            hits: 3,
            misses: 1,
            ..Counts::default()
        };
        assert_eq!(c.hit_ratio(), 0.75);
    }
}
