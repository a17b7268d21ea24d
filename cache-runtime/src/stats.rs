//! Counters per namespace, and [`Status`] / [`with_status`] for handlers
//! that want to say whether an answer came from the cache.
//!
//! With the cargo feature `metrics`, every counter is also reported
//! through the [`metrics`](https://docs.rs/metrics) facade as
//! `cache_aside_<counter>_total{namespace}` (the names of [`Counts`]'
//! fields), with two histograms per namespace: `cache_aside_compute_seconds`
//! (a miss's body) and `cache_aside_value_bytes` (a stored value's
//! encoding). Any exporter works (Prometheus, StatsD, OpenTelemetry);
//! install its recorder before the first cached call, since a namespace
//! takes its handles when it is first used.

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
    /// The cache was not used although there is one: Redis unavailable or
    /// too slow (or its circuit breaker open), or a key that could not be
    /// built, counted in [`Counts::bypasses`]; or the call ran inside a
    /// [`bypass`](crate::bypass) scope, counted in [`Counts::skipped`]. The
    /// body ran. Also what [`with_status`] reports when no cached call ran
    /// at all.
    Bypass,
    /// Served from the cache after its TTL, within the `stale` window,
    /// while one caller (in some process) refreshes it.
    Stale,
    /// The body failed (returned `Err`, or outlasted its `timeout`) and
    /// the last good value, past its TTL but within the fn's `fail_safe`
    /// window, was returned instead. Not a hit: the body ran.
    FailSafe,
    /// There is no cache to use: none was installed with
    /// [`install`](crate::install) and the function has no `cache = ...`.
    /// The body ran. Usually a mistake in the service's set-up, never an
    /// outage: the first such call logs an error (on stderr too when no
    /// `tracing` subscriber is set).
    NoCache,
}

impl Status {
    /// `true` for [`Status::Hit`] and [`Status::Stale`]: the answer came
    /// from the cache (or from a concurrent caller's computation) and the
    /// body did not run.
    pub fn is_hit(self) -> bool {
        matches!(self, Status::Hit | Status::Stale)
    }

    /// Lowercase, for span fields and labels: `hit`, `miss`, `bypass`,
    /// `stale`, `fail_safe`, `no_cache`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Bypass => "bypass",
            Status::Stale => "stale",
            Status::FailSafe => "fail_safe",
            Status::NoCache => "no_cache",
        }
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
/// use cache_aside::{cached, with_status, Status};
///
/// #[cached(ns = "answer")]
/// async fn answer() -> u32 { 42 }
///
/// let (value, status) = with_status(answer()).await;
/// assert_eq!(value, 42);
/// // No cache was installed in this example, and `answer` names none.
/// assert_eq!(status, Status::NoCache);
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
/// ```
pub fn with_status<F: Future>(fut: F) -> impl Future<Output = (F::Output, Status)> {
    // Not an `async fn`: that would hold `fut` twice (argument and scope).
    STATUS.scope(Cell::new(None), async move {
        let out = fut.await;
        let status = STATUS.with(Cell::get).unwrap_or(Status::Bypass);
        (out, status)
    })
}

/// Runs `fut` and returns the status of the cached call inside it, which
/// it also reports on to an enclosing [`with_status`] (for a span that
/// records it).
pub(crate) async fn observed<F: Future>(fut: F) -> (F::Output, Option<Status>) {
    let (out, status) = STATUS
        .scope(Cell::new(None), async move {
            let out = fut.await;
            (out, STATUS.with(Cell::get))
        })
        .await;
    if let Some(s) = status {
        report(s);
    }
    (out, status)
}

#[inline]
pub(crate) fn report(status: Status) {
    let _ = STATUS.try_with(|s| s.set(Some(status)));
}

/// Atomic counters of one namespace.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub hits: Counter,
    pub misses: Counter,
    pub bypasses: Counter,
    pub errors: Counter,
    pub decode_errors: Counter,
    pub stores: Counter,
    pub stores_rejected: Counter,
    pub invalidations: Counter,
    pub invalidations_queued: Counter,
    pub invalidation_retries: Counter,
    pub invalidations_dropped: Counter,
    pub coalesced: Counter,
    pub lease_waits: Counter,
    pub stale_served: Counter,
    pub refreshes: Counter,
    pub early_refreshes: Counter,
    pub local_hits: Counter,
    pub too_large: Counter,
    pub fenced: Counter,
    pub schema_mismatches: Counter,
    pub refresh_errors: Counter,
    pub skipped: Counter,
    pub forced_refreshes: Counter,
    pub puts: Counter,
    pub fail_safe_served: Counter,
    pub verified: Counter,
    pub stale_detected: Counter,
}

/// A counter sharded over a few cache lines: the hit path bumps one from
/// every worker thread, and one shared atomic would bounce between cores.
#[derive(Default)]
pub(crate) struct Counter {
    shards: [Shard; SHARDS],
    /// The same count, reported to the installed `metrics` recorder.
    #[cfg(feature = "metrics")]
    metric: Metric,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

/// A `metrics` handle, a no-op one until the namespace registers it.
#[cfg(feature = "metrics")]
struct Metric(metrics::Counter);

#[cfg(feature = "metrics")]
impl Default for Metric {
    fn default() -> Self {
        Metric(metrics::Counter::noop())
    }
}

const SHARDS: usize = 8;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard(AtomicU64);

impl Counter {
    pub(crate) fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// This thread's shard: threads are numbered in the order they first count.
fn shard() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

#[inline]
pub(crate) fn bump(c: &Counter) {
    c.shards[shard()].0.fetch_add(1, Relaxed);
    #[cfg(feature = "metrics")]
    c.metric.0.increment(1);
}

/// The histograms of one namespace (no-ops without the `metrics` feature).
#[derive(Default)]
pub(crate) struct Histograms {
    #[cfg(feature = "metrics")]
    compute_seconds: Option<metrics::Histogram>,
    #[cfg(feature = "metrics")]
    value_bytes: Option<metrics::Histogram>,
}

impl Histograms {
    /// A miss's body took `elapsed` and its value encoded to `bytes`.
    #[inline]
    pub(crate) fn miss(&self, elapsed: std::time::Duration, bytes: usize) {
        #[cfg(feature = "metrics")]
        {
            if let Some(h) = &self.compute_seconds {
                h.record(elapsed.as_secs_f64());
            }
            if let Some(h) = &self.value_bytes {
                h.record(bytes as f64);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (elapsed, bytes);
    }
}

impl Counters {
    /// The counters of namespace `ns`, registered with the `metrics`
    /// recorder (with the feature).
    pub(crate) fn new(ns: &str) -> (Counters, Histograms) {
        #[allow(unused_mut)]
        let mut c = Counters::default();
        #[allow(unused_mut)]
        let mut h = Histograms::default();
        #[cfg(feature = "metrics")]
        c.register(ns, &mut h);
        #[cfg(not(feature = "metrics"))]
        let _ = ns;
        (c, h)
    }

    #[cfg(feature = "metrics")]
    fn register(&mut self, ns: &str, h: &mut Histograms) {
        let all: [(&mut Counter, &str, &str); 27] = [
            (
                &mut self.hits,
                "hits",
                "Calls answered from the cache (Redis or the local tier).",
            ),
            (
                &mut self.misses,
                "misses",
                "Calls whose body ran to fill the cache.",
            ),
            (
                &mut self.bypasses,
                "bypasses",
                "Calls that ran without the cache: Redis unavailable or slow, or a key that could not be built.",
            ),
            (
                &mut self.errors,
                "errors",
                "Cache operations that failed or timed out.",
            ),
            (
                &mut self.decode_errors,
                "decode_errors",
                "Stored values that did not decode (recomputed).",
            ),
            (&mut self.stores, "stores", "Values written to the cache."),
            (
                &mut self.stores_rejected,
                "stores_rejected",
                "Stores refused by a guard (invalidated meanwhile), the size limit or the compute-time limit.",
            ),
            (
                &mut self.invalidations,
                "invalidations",
                "Invalidations that reached Redis.",
            ),
            (
                &mut self.invalidations_queued,
                "invalidations_queued",
                "Invalidations queued for retry during an outage.",
            ),
            (
                &mut self.invalidation_retries,
                "invalidation_retries",
                "Retries of queued invalidations.",
            ),
            (
                &mut self.invalidations_dropped,
                "invalidations_dropped",
                "Queued invalidations given up after retry_for.",
            ),
            (
                &mut self.coalesced,
                "coalesced",
                "Calls answered by another caller's computation in this process.",
            ),
            (
                &mut self.lease_waits,
                "lease_waits",
                "Calls that waited for another process's lease.",
            ),
            (
                &mut self.stale_served,
                "stale_served",
                "Calls answered with a value past its TTL, within `stale`.",
            ),
            (
                &mut self.refreshes,
                "refreshes",
                "Background refreshes of stale values.",
            ),
            (
                &mut self.early_refreshes,
                "early_refreshes",
                "Refreshes started before the TTL ended.",
            ),
            (
                &mut self.local_hits,
                "local_hits",
                "Hits served from the local tier.",
            ),
            (
                &mut self.too_large,
                "too_large",
                "Values larger than max_value_bytes (not stored).",
            ),
            (
                &mut self.fenced,
                "fenced",
                "Misses computed under a transaction scope's fence (not stored).",
            ),
            (
                &mut self.schema_mismatches,
                "schema_mismatches",
                "Entries of another schema (a type changed shape).",
            ),
            (
                &mut self.refresh_errors,
                "refresh_errors",
                "Background refreshes whose body failed.",
            ),
            (&mut self.skipped, "skipped", "Calls inside a bypass scope."),
            (
                &mut self.forced_refreshes,
                "forced_refreshes",
                "Calls inside a refresh scope.",
            ),
            (&mut self.puts, "puts", "Values stored by #[cache_put]."),
            (
                &mut self.fail_safe_served,
                "fail_safe_served",
                "Calls answered with the last good value after the body failed.",
            ),
            (
                &mut self.verified,
                "verified",
                "Hits recomputed by the consistency probe (`verify`).",
            ),
            (
                &mut self.stale_detected,
                "stale_detected",
                "Probed hits whose recomputed value differed from the cached one.",
            ),
        ];
        for (counter, name, help) in all {
            let name = format!("cache_aside_{name}_total");
            metrics::describe_counter!(name.clone(), help);
            counter.metric = Metric(metrics::counter!(name, "namespace" => ns.to_owned()));
        }
        metrics::describe_histogram!(
            "cache_aside_compute_seconds",
            metrics::Unit::Seconds,
            "How long a miss's body ran."
        );
        metrics::describe_histogram!(
            "cache_aside_value_bytes",
            metrics::Unit::Bytes,
            "The encoded size of a computed value."
        );
        h.compute_seconds =
            Some(metrics::histogram!("cache_aside_compute_seconds", "namespace" => ns.to_owned()));
        h.value_bytes =
            Some(metrics::histogram!("cache_aside_value_bytes", "namespace" => ns.to_owned()));
    }

    pub(crate) fn snapshot(&self) -> Counts {
        Counts {
            hits: self.hits.get(),
            misses: self.misses.get(),
            bypasses: self.bypasses.get(),
            errors: self.errors.get(),
            decode_errors: self.decode_errors.get(),
            stores: self.stores.get(),
            stores_rejected: self.stores_rejected.get(),
            invalidations: self.invalidations.get(),
            invalidations_queued: self.invalidations_queued.get(),
            invalidation_retries: self.invalidation_retries.get(),
            invalidations_dropped: self.invalidations_dropped.get(),
            coalesced: self.coalesced.get(),
            lease_waits: self.lease_waits.get(),
            stale_served: self.stale_served.get(),
            refreshes: self.refreshes.get(),
            early_refreshes: self.early_refreshes.get(),
            local_hits: self.local_hits.get(),
            too_large: self.too_large.get(),
            fenced: self.fenced.get(),
            schema_mismatches: self.schema_mismatches.get(),
            refresh_errors: self.refresh_errors.get(),
            skipped: self.skipped.get(),
            forced_refreshes: self.forced_refreshes.get(),
            puts: self.puts.get(),
            fail_safe_served: self.fail_safe_served.get(),
            verified: self.verified.get(),
            stale_detected: self.stale_detected.get(),
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
    /// Calls that ran the body without the cache ([`Status::Bypass`]): all
    /// of them, whether Redis failed or timed out on that call, the circuit
    /// breaker was open and it did not try, its key could not be built, or
    /// an invalidation of its entry was still queued. (The breaker's
    /// "caching resumed" log line counts only the calls it turned away.)
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
    /// Misses computed under a transaction scope's fence, and not stored.
    pub fenced: u64,
    /// Reads that found an entry of another schema (another build's type,
    /// another instantiation of a generic fn): misses, overwritten.
    pub schema_mismatches: u64,
    /// Refreshes in the background whose body failed (the entry was kept).
    pub refresh_errors: u64,
    /// Calls inside a [`bypass`](crate::bypass) scope: the body ran and the
    /// cache was neither read nor written. Not in `bypasses`, not in the
    /// hit ratio.
    pub skipped: u64,
    /// Of the `misses`, calls inside a [`refresh`](crate::refresh) scope
    /// that recomputed an entry that was live.
    pub forced_refreshes: u64,
    /// Values a [`#[cache_put]`](crate::cache_put) stored (write-through),
    /// at once or when its transaction scope ended. A put that could not
    /// store safely invalidated the key instead (in `invalidations`).
    pub puts: u64,
    /// Calls whose body failed and that returned the last good value
    /// instead ([`Status::FailSafe`]; in `misses` too, as the body ran).
    pub fail_safe_served: u64,
    /// Hits the consistency probe (`#[cached(verify = p)]`) recomputed in
    /// the background and compared, while the entry was still the one served.
    pub verified: u64,
    /// Of the `verified`, hits whose recomputed value was not the cached
    /// one: what the service served was stale (a write nobody invalidated,
    /// or a race the cache's guarantees do not cover). `stale_detected /
    /// verified` estimates the share of stale hits.
    pub stale_detected: u64,
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
        self.fenced += o.fenced;
        self.schema_mismatches += o.schema_mismatches;
        self.refresh_errors += o.refresh_errors;
        self.skipped += o.skipped;
        self.forced_refreshes += o.forced_refreshes;
        self.puts += o.puts;
        self.fail_safe_served += o.fail_safe_served;
        self.verified += o.verified;
        self.stale_detected += o.stale_detected;
    }
}

/// Counters of a [`Cache`](crate::Cache) (this process only), per namespace
/// and in total. From [`Cache::stats`](crate::Cache::stats).
///
/// ```
/// use cache_aside::Cache;
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
