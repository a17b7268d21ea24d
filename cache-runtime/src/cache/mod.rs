//! [`Cache`]: the handle every cached call goes through, and what it holds.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the handle: its settings, `ping`, `stats`, the entry key |
//! | `builder.rs` | [`CacheBuilder`]: settings, checked once, no I/O |
//! | `namespace.rs` | [`Namespace`]: the by-hand API |
//! | `options.rs` | the options of one call, and `unless` filters |
//! | `registry.rs` | per-namespace state, and the `#[cached]` call sites' slots |
//! | `links.rs` | which fns read and write each namespace, and the links that cannot be right |
//! | `lookup.rs` | one call: the hit path (start here) |
//! | `batch.rs` | many keys of one namespace: one read, the misses' bodies in one call |
//! | `miss.rs` | one call past its read: coalescing, the lease, compute, store |
//! | `payload.rs` | a payload as stored (compressed or not) and as the codec reads it |
//! | `refresh.rs` | a refresh in the background (`stale`, `early_refresh`, `verify`) |
//! | `invalidate.rs` | invalidations and their retry queue |
//! | `put.rs` | write-through (`#[cache_put]`): a writer's lease, its store or tombstone |
//! | `scope.rs` | transaction scopes: fences held until the transaction ends |

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::{AnyBackend, Backend, BackendError};
use crate::breaker::Breaker;
use crate::codec::CodecKind;
use crate::coherence::Hub;
use crate::entry;
use crate::error::Unreachable;
use crate::flight::Flights;
use crate::key::{self, layout};
use crate::stats::{self, Stats, Status, bump};

pub(crate) mod batch;
mod builder;
mod invalidate;
mod links;
mod lookup;
mod miss;
mod namespace;
mod options;
mod payload;
mod put;
mod refresh;
mod registry;
pub(crate) mod scope;
mod tags;
mod track;

pub(crate) use batch::BatchTarget;
pub use builder::CacheBuilder;
pub use invalidate::Invalidation;
use invalidate::RetryQueue;
use links::Links;
pub use links::{LinkProblem, Site};
pub use lookup::Refresh;
pub use lookup::{Keeper, Sharer};
pub(crate) use lookup::{Shape, Target};
pub use namespace::Namespace;
pub use options::{CallOptions, Compress, Filter, NoFilter, WithTtl};
pub use refresh::{Background, Inline};
pub use registry::NsSlot;
use registry::{NsState, Registry};
pub use scope::{Committed, transaction};

/// A handle to a cache: cheap to clone (an `Arc`), shared by every task.
///
/// Build one with [`Cache::builder`], then either [`install`](crate::install)
/// it for the macros or pass it explicitly (`#[cached(cache = &self.cache)]`,
/// or the by-hand API of [`Cache::namespace`]).
///
/// ```
/// # async fn demo() {
/// use cache_aside::Cache;
/// use std::time::Duration;
///
/// let cache = Cache::builder().memory().prefix("docs").build().unwrap();
/// let flights = cache.namespace("flight_count").ttl(Duration::from_secs(60));
/// let n: i64 = flights.get_or_compute(&("FRA", "JFK"), async { 1234 }).await;
/// assert_eq!(n, 1234);
/// // Second call: served from the cache, the future is never polled.
/// let n: i64 = flights.get_or_compute(&("FRA", "JFK"), async { unreachable!() }).await;
/// assert_eq!(n, 1234);
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    /// Process-unique, for [`NsSlot`].
    id: u64,
    backend: AnyBackend,
    breaker: Breaker,
    prefix: String,
    default_ttl: Duration,
    codec: CodecKind,
    guard_ttl: Duration,
    max_value_bytes: usize,
    /// Encodings at least this long are compressed (`compress_above`).
    compress_above: Option<usize>,
    /// Every call in a span (`trace_calls`).
    trace_calls: bool,
    retry_for: Duration,
    description: String,
    hub: Arc<Hub>,
    registry: Registry,
    /// The fns met per namespace (`links.rs`).
    links: Links,
    local_ttl: Option<Duration>,
    retry: Mutex<RetryQueue>,
    /// The retry queue's length, stored under its lock after each change:
    /// reads check it without the lock.
    queued: std::sync::atomic::AtomicUsize,
    /// Writers' invalidation tasks still running (`Cache::shutdown`).
    in_flight: std::sync::atomic::AtomicUsize,
    flights: Flights,
    lock_wait: Duration,
    max_lease: Duration,
    /// How long a transaction scope's fence stands without a renewal.
    fence_ttl: Duration,
    /// The life of a namespace's generation key.
    generation_ttl: Duration,
}

impl Inner {
    /// The circuit breaker in front of a namespace's keys: its own in
    /// Cluster mode (one node holds them), else the cache's one.
    #[inline]
    fn breaker<'a>(&'a self, state: &'a NsState) -> &'a Breaker {
        state.breaker.as_ref().unwrap_or(&self.breaker)
    }

    /// A failed Redis operation on a namespace's keys: an outage feeds its
    /// circuit breaker; a failed command (e.g. WRONGTYPE from a foreign
    /// value) only is logged.
    fn note_failure(&self, state: &NsState, e: &BackendError) {
        if e.is_outage() {
            self.breaker(state).failure(e);
        } else {
            tracing::debug!(error = %e, "cache-aside: Redis command failed");
        }
    }
}

impl Cache {
    /// A builder with the defaults: Redis at `$REDIS_URL` (else
    /// `redis://127.0.0.1:6379`), prefix `cache-aside`, TTL 5 minutes, operation
    /// timeout 100 ms, postcard codec.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = cache_aside::Cache::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .prefix("flightdb")
    ///     .default_ttl(Duration::from_secs(300))
    ///     .build()
    ///     .unwrap(); // no I/O yet: connects on first use
    /// assert_eq!(cache.prefix(), "flightdb");
    /// ```
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// The key prefix: every key this cache writes starts with `"{prefix}:"`.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The TTL used when a call gives none.
    pub fn default_ttl(&self) -> Duration {
        self.inner.default_ttl
    }

    /// A handle for one namespace: get-or-compute, invalidate. Cheap; make
    /// one per call. The name must be 1 to 64 characters of
    /// `[A-Za-z0-9_.-]`; calls on an invalid name bypass the cache (and log
    /// an error).
    ///
    /// ```
    /// # async fn demo() {
    /// let cache = cache_aside::Cache::builder().memory().build().unwrap();
    /// let airports = cache.namespace("airport");
    /// let name: String = airports.get_or_compute(&"FRA", async { "Frankfurt".to_string() }).await;
    /// assert_eq!(name, "Frankfurt");
    /// airports.invalidate_key(&"FRA").await;
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
    /// ```
    pub fn namespace<'c>(&'c self, name: &'c str) -> Namespace<'c> {
        Namespace::new(self, name)
    }

    /// The Redis key an entry of `ns` with this key value is stored under
    /// (`{prefix}:{{ns}}:{args}`), for inspection with `redis-cli`.
    ///
    /// ```
    /// let cache = cache_aside::Cache::builder().memory().prefix("flightdb").build().unwrap();
    /// let key = cache.entry_key("flight_count", &("FRA", "JFK")).unwrap();
    /// assert_eq!(key, "flightdb:{flight_count}:FRA:JFK");
    /// ```
    pub fn entry_key<K: Serialize + ?Sized>(
        &self,
        ns: &str,
        key: &K,
    ) -> Result<String, key::KeyError> {
        let mut out = layout::entry_key_prefix(&self.inner.prefix, ns);
        key::write_args(&mut out, key)?;
        Ok(out)
    }

    /// Checks that the backend answers: one `PING` round trip, bounded by the
    /// operation timeout (the first call also waits for the connection,
    /// bounded the same way). Returns the round-trip time. For health
    /// checks and for choosing a fallback at startup; cached calls never
    /// need it.
    ///
    /// ```
    /// # async fn demo() {
    /// let cache = cache_aside::Cache::builder().memory().build().unwrap();
    /// assert!(cache.ping().await.is_ok());
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
    /// ```
    pub async fn ping(&self) -> Result<Duration, Unreachable> {
        let started = Instant::now();
        match self.inner.backend.ping().await {
            Ok(()) => {
                self.inner.breaker.success();
                Ok(started.elapsed())
            }
            Err(e) => Err(Unreachable {
                backend: self.inner.description.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Counters of this process: hits, misses, errors and hit ratio, per
    /// namespace and in total.
    pub fn stats(&self) -> Stats {
        Stats::from_namespaces(self.inner.registry.counts())
    }
}

impl AsRef<Cache> for Cache {
    fn as_ref(&self) -> &Cache {
        self
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.inner.description)
            .field("prefix", &self.inner.prefix)
            .field("default_ttl", &self.inner.default_ttl)
            .field("codec", &self.inner.codec.name())
            .field("breaker_open", &self.inner.breaker.is_open())
            .finish_non_exhaustive()
    }
}

async fn bypass<R>(state: Option<&NsState>, fut: impl Future<Output = R>) -> R {
    if let Some(s) = state {
        bump(&s.counters.bypasses);
    }
    if let Some(t) = track::current() {
        // What the body reads here has no token to depend on.
        t.unknown();
    }
    let out = fut.await;
    stats::report(Status::Bypass);
    out
}

/// Shortens a TTL by up to 5% so entries written together do not expire together.
pub(crate) fn jitter(ttl: Duration) -> Duration {
    // 0..=50 per mille.
    let permille = ((entry::unit_random() * 51.0) as u64).min(50);
    // At most 2^53 ms (285,000 years): a TTL from the value may be
    // `Duration::MAX`, and `ms * permille` must not overflow.
    let ms = u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .min(1 << 53);
    Duration::from_millis(ms - ms * permille / 1000).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_five_percent_below() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_secs(100));
            assert!(
                j <= Duration::from_secs(100) && j >= Duration::from_secs(95),
                "{j:?}"
            );
        }
    }
}
