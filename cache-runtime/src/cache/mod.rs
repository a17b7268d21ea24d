//! [`Cache`], its builder, and the [`Namespace`] handle that gets, computes
//! and invalidates entries.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use crate::backend::memory::MemoryBackend;
use crate::backend::redis::{RedisBackend, RedisConfig};
use crate::backend::{AnyBackend, Backend, Notice};
use crate::breaker::Breaker;
use crate::channel::{Hub, Message};
use crate::codec::{Codec, CodecKind};
use crate::entry;
use crate::error::Error;
use crate::key;
use crate::local::Local;

mod get;

use crate::flight::Flights;
use crate::stats::{self, Counters, Stats, Status, bump};
pub(crate) use get::Shape;
pub use get::Sharer;

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
    retry_for: Duration,
    description: String,
    hub: Arc<Hub>,
    local_ttl: Option<Duration>,
    retry: Mutex<RetryQueue>,
    flights: Flights,
    lock_wait: Duration,
    max_lease: Duration,
}

impl Inner {
    /// A failed Redis operation: an outage feeds the circuit breaker; a
    /// failed command (e.g. WRONGTYPE from a foreign value) only is logged.
    fn note_failure(&self, e: &crate::backend::BackendError) {
        if e.is_outage() {
            self.breaker.failure(e);
        } else {
            tracing::debug!(error = %e, "cache-aside: Redis command failed");
        }
    }
}

/// Where a `#[cached]` call site keeps the state of its namespace in the
/// first cache it is called with. Not public API.
#[doc(hidden)]
pub struct NsSlot {
    cell: std::sync::OnceLock<(u64, Arc<NsState>)>,
    /// The site's entry-key prefix (`prefix:{ns}:v1:`) in that cache.
    key_prefix: std::sync::OnceLock<(u64, Box<str>)>,
}

impl NsSlot {
    /// An empty slot (a `static` in the generated code).
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        NsSlot {
            cell: std::sync::OnceLock::new(),
            key_prefix: std::sync::OnceLock::new(),
        }
    }
}

/// A namespace's state, from a call site's slot or from the cache's map.
pub(crate) enum StateRef {
    Static(&'static Arc<NsState>),
    Owned(Arc<NsState>),
}

impl std::ops::Deref for StateRef {
    type Target = NsState;
    fn deref(&self) -> &NsState {
        match self {
            StateRef::Static(s) => s,
            StateRef::Owned(s) => s,
        }
    }
}

/// Per-namespace state shared by every call of the namespace.
pub(crate) struct NsState {
    name: String,
    generation_key: String,
    counters: Counters,
    /// A namespace invalidation is queued for retry: reads bypass the cache.
    pending_namespace: AtomicBool,
    /// Number of queued key invalidations of this namespace.
    pending_keys: AtomicUsize,
    /// The generation Redis holds, as each connection slot knows it (0:
    /// unknown); see `channel.rs`.
    pub(crate) views: Box<[AtomicU64]>,
    /// Bumped by every invalidation of the namespace (local tier placeholder).
    pub(crate) local_seq: AtomicU64,
    /// Bumped by namespace invalidations: older local entries are dead.
    pub(crate) local_epoch: AtomicU64,
}

#[derive(Default)]
struct RetryQueue {
    namespaces: HashMap<String, Pending>,
    keys: HashMap<String, Pending>,
    seq: u64,
    worker: bool,
}

/// A queued invalidation. `seq` changes when the same target is queued
/// again, so the worker never removes an invalidation queued while it was
/// sending an older one; `since` bounds how long each one is retried.
#[derive(Clone)]
struct Pending {
    state: Arc<NsState>,
    seq: u64,
    since: Instant,
}

const MAX_QUEUED_KEYS: usize = 10_000;

/// [`Cache::ping`] got no answer.
#[derive(Debug, Clone)]
pub struct Unreachable {
    backend: String,
    reason: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not reachable: {}", self.backend, self.reason)
    }
}

impl std::error::Error for Unreachable {}

/// What an invalidation did. It never fails the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// It reached the cache: no reader will see the old entries.
    Done,
    /// The cache could not be reached; the invalidation is queued and retried
    /// in the background. Until it lands, this process reads the affected
    /// entries from the source, and other processes may serve old entries
    /// for at most their TTL.
    Queued,
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
        Namespace {
            cache: self,
            name,
            version: 1,
            opts: CallOptions::DEFAULT,
            unless: NoFilter,
        }
    }

    /// The Redis key an entry of `ns` with this key value and schema version
    /// is stored under (`{prefix}:{{ns}}:v{version}:{args}`), for inspection
    /// with `redis-cli`.
    ///
    /// ```
    /// let cache = cache_aside::Cache::builder().memory().prefix("flightdb").build().unwrap();
    /// let key = cache.entry_key("flight_count", 1, &("FRA", "JFK")).unwrap();
    /// assert_eq!(key, "flightdb:{flight_count}:v1:FRA:JFK");
    /// ```
    pub fn entry_key<K: Serialize + ?Sized>(
        &self,
        ns: &str,
        version: u32,
        key: &K,
    ) -> Result<String, key::KeyError> {
        let mut out = key::entry_key_prefix(&self.inner.prefix, ns, version);
        key::write_args(&mut out, key)?;
        Ok(out)
    }

    /// [`Cache::entry_key`] from a `#[cached]` call site: the prefix, fixed
    /// per site (namespace and version), is built once.
    pub(crate) fn entry_key_at<K: Serialize + ?Sized>(
        &self,
        slot: &NsSlot,
        ns: &str,
        version: u32,
        key: &K,
    ) -> Result<String, key::KeyError> {
        let mut out = match slot.key_prefix.get() {
            Some((id, p)) if *id == self.inner.id => {
                let mut out = String::with_capacity(p.len() + 32);
                out.push_str(p);
                out
            }
            _ => {
                let p = key::entry_key_prefix(&self.inner.prefix, ns, version);
                let _ = slot.key_prefix.set((self.inner.id, p.as_str().into()));
                p
            }
        };
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
        let map = read(&self.inner.hub.namespaces);
        Stats::from_namespaces(
            map.values()
                .map(|ns| (ns.name.clone(), ns.counters.snapshot()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    /// Are invalidations waiting to be retried? (They are retried in the
    /// background until they land or the retry period ends.)
    pub fn has_queued_invalidations(&self) -> bool {
        let q = lock(&self.inner.retry);
        !q.namespaces.is_empty() || !q.keys.is_empty()
    }

    /// The namespace's state; through `slot` (one per `#[cached]` call
    /// site) without a lock or a reference count once the site has seen
    /// this cache.
    fn state_at(&self, ns: &str, slot: Option<&'static NsSlot>) -> Option<StateRef> {
        if let Some((id, state)) = slot.and_then(|s| s.cell.get())
            && *id == self.inner.id
        {
            return Some(StateRef::Static(state));
        }
        let state = self.state(ns)?;
        if let Some(s) = slot {
            // The first cache a call site sees keeps the fast path.
            let _ = s.cell.set((self.inner.id, Arc::clone(&state)));
        }
        Some(StateRef::Owned(state))
    }

    fn state(&self, ns: &str) -> Option<Arc<NsState>> {
        if let Some(s) = read(&self.inner.hub.namespaces).get(ns) {
            return Some(Arc::clone(s));
        }
        if let Err(msg) = key::validate_name("namespace", ns) {
            tracing::error!("cache-aside: {msg}; the call bypasses the cache");
            return None;
        }
        let mut map = self
            .inner
            .hub
            .namespaces
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let state = map.entry(ns.to_owned()).or_insert_with(|| {
            Arc::new(NsState {
                name: ns.to_owned(),
                generation_key: key::generation_key(&self.inner.prefix, ns),
                counters: Counters::default(),
                pending_namespace: AtomicBool::new(false),
                pending_keys: AtomicUsize::new(0),
                views: (0..self.inner.hub.slots())
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                local_seq: AtomicU64::new(0),
                local_epoch: AtomicU64::new(0),
            })
        });
        Some(Arc::clone(state))
    }

    async fn invalidate_namespace(&self, state: &Arc<NsState>) -> Invalidation {
        let inner = &*self.inner;
        let done = inner.breaker.allow() && self.send_namespace(state).await;
        // Also when queued: this process must not serve what it invalidated.
        inner.hub.local_namespace_invalidated(state);
        if done {
            bump(&state.counters.invalidations);
            return Invalidation::Done;
        }
        self.enqueue(state, None)
    }

    async fn invalidate_entry(&self, state: &Arc<NsState>, entry_key: String) -> Invalidation {
        let inner = &*self.inner;
        let done = inner.breaker.allow() && self.send_key(state, &entry_key).await;
        inner.hub.local_key_invalidated(state, &entry_key);
        if done {
            bump(&state.counters.invalidations);
            return Invalidation::Done;
        }
        self.enqueue(state, Some(entry_key))
    }

    /// A new namespace generation, published on the channel; true if it landed.
    async fn send_namespace(&self, state: &NsState) -> bool {
        let inner = &*self.inner;
        let token = entry::token();
        let message = Message::generation(&state.name, &token);
        let notice = Notice {
            channel: inner.hub.channel(),
            message: &message,
        };
        match inner
            .backend
            .set_generation(&state.generation_key, &token, notice)
            .await
        {
            Ok(()) => {
                inner.breaker.success();
                true
            }
            Err(e) => {
                inner.note_failure(&e);
                bump(&state.counters.errors);
                false
            }
        }
    }

    /// A tombstone over one entry, published on the channel; true if it landed.
    async fn send_key(&self, state: &NsState, entry_key: &str) -> bool {
        let inner = &*self.inner;
        let message = Message::key(&state.name, entry_key);
        let notice = Notice {
            channel: inner.hub.channel(),
            message: &message,
        };
        match inner
            .backend
            .put_tombstone(entry_key, &entry::tombstone(), inner.guard_ttl, notice)
            .await
        {
            Ok(()) => {
                inner.breaker.success();
                true
            }
            Err(e) => {
                inner.note_failure(&e);
                bump(&state.counters.errors);
                false
            }
        }
    }

    /// Queues an invalidation (of the namespace, or of one entry key) and
    /// makes sure a retry worker runs.
    fn enqueue(&self, state: &Arc<NsState>, entry_key: Option<String>) -> Invalidation {
        let mut q = lock(&self.inner.retry);
        q.seq += 1;
        let seq = q.seq;
        let now = Instant::now();
        let pending = |since: Option<Instant>| Pending {
            state: Arc::clone(state),
            seq,
            since: since.unwrap_or(now),
        };
        match entry_key {
            Some(k) if q.keys.len() < MAX_QUEUED_KEYS || q.keys.contains_key(&k) => {
                let since = q.keys.get(&k).map(|p| p.since);
                if q.keys.insert(k, pending(since)).is_none() {
                    state.pending_keys.fetch_add(1, Relaxed);
                }
            }
            Some(_) | None => {
                // Too many queued keys: invalidating the whole namespace is
                // the bounded-memory equivalent.
                state.pending_namespace.store(true, Relaxed);
                let since = q.namespaces.get(&state.name).map(|p| p.since);
                q.namespaces.insert(state.name.clone(), pending(since));
            }
        }
        bump(&state.counters.invalidations_queued);
        if !q.worker {
            q.worker = true;
            tracing::warn!(
                namespace = %state.name,
                "cache-aside: invalidation could not reach Redis; queued and retrying in the background"
            );
            let cache = self.clone();
            tokio::spawn(async move { cache.retry_worker().await });
        }
        Invalidation::Queued
    }

    async fn retry_worker(self) {
        let inner = &*self.inner;
        let mut backoff = Duration::from_millis(25);
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            let (namespaces, keys): (Vec<_>, Vec<_>) = {
                let q = lock(&inner.retry);
                (
                    q.namespaces
                        .iter()
                        .map(|(n, p)| (n.clone(), p.clone()))
                        .collect(),
                    q.keys.iter().map(|(k, p)| (k.clone(), p.clone())).collect(),
                )
            };
            for (name, p) in namespaces {
                bump(&p.state.counters.invalidation_retries);
                let sent = self.send_namespace(&p.state).await;
                let mut q = lock(&inner.retry);
                if sent {
                    bump(&p.state.counters.invalidations);
                    tracing::info!(namespace = %name, "cache-aside: queued namespace invalidation landed");
                    if q.namespaces.get(&name).is_some_and(|cur| cur.seq == p.seq) {
                        q.namespaces.remove(&name);
                        p.state.pending_namespace.store(false, Relaxed);
                    }
                } else if p.since.elapsed() >= inner.retry_for
                    && q.namespaces.get(&name).is_some_and(|cur| cur.seq == p.seq)
                {
                    q.namespaces.remove(&name);
                    p.state.pending_namespace.store(false, Relaxed);
                    bump(&p.state.counters.invalidations_dropped);
                    tracing::error!(namespace = %name, retry_for = ?inner.retry_for,
                        "cache-aside: gave up a queued namespace invalidation; its entries expire by their TTL");
                }
            }
            for (key, p) in keys {
                bump(&p.state.counters.invalidation_retries);
                let sent = self.send_key(&p.state, &key).await;
                let mut q = lock(&inner.retry);
                let current = q.keys.get(&key).is_some_and(|cur| cur.seq == p.seq);
                if sent {
                    bump(&p.state.counters.invalidations);
                } else if p.since.elapsed() >= inner.retry_for && current {
                    bump(&p.state.counters.invalidations_dropped);
                    tracing::error!(key = %key, retry_for = ?inner.retry_for,
                        "cache-aside: gave up a queued key invalidation; the entry expires by its TTL");
                } else {
                    continue;
                }
                if current {
                    q.keys.remove(&key);
                    p.state.pending_keys.fetch_sub(1, Relaxed);
                }
            }
            let mut q = lock(&inner.retry);
            if q.namespaces.is_empty() && q.keys.is_empty() {
                q.worker = false;
                return;
            }
        }
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
    let out = fut.await;
    stats::report(Status::Bypass);
    out
}

/// Shortens a TTL by up to 5% so entries written together do not expire together.
pub(crate) fn jitter(ttl: Duration) -> Duration {
    let t = entry::token();
    let r = t.iter().fold(0u32, |acc, &c| {
        acc.wrapping_mul(31).wrapping_add(u32::from(c))
    });
    let permille = u64::from(r % 51); // 0..=50
    let ms = ttl.as_millis() as u64;
    Duration::from_millis(ms - ms * permille / 1000).max(Duration::from_millis(1))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

/// Per-call options: what `#[cached(...)]` and the [`Namespace`] builder
/// set; `None` takes the cache's default.
#[derive(Debug, Clone, Copy, PartialEq)]
#[doc(hidden)]
pub struct CallOptions {
    pub ttl: Option<Duration>,
    pub stale: Option<Duration>,
    pub lock: Option<bool>,
    pub lock_wait: Option<Duration>,
    pub lease: Option<Duration>,
    pub early_refresh: Option<f64>,
    pub local: Option<Duration>,
}

impl CallOptions {
    /// Every option at the cache's default.
    pub const DEFAULT: CallOptions = CallOptions {
        ttl: None,
        stale: None,
        lock: None,
        lock_wait: None,
        lease: None,
        early_refresh: None,
        local: None,
    };
}

/// Decides which computed values are *not* stored (`unless`).
pub trait Filter<T: ?Sized> {
    /// `true`: return the value but do not store it.
    fn skip(&self, value: &T) -> bool;
}

/// The default [`Filter`]: every value is stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFilter;

impl<T: ?Sized> Filter<T> for NoFilter {
    #[inline]
    fn skip(&self, _: &T) -> bool {
        false
    }
}

impl<T: ?Sized, F: Fn(&T) -> bool> Filter<T> for F {
    #[inline]
    fn skip(&self, value: &T) -> bool {
        self(value)
    }
}

/// One namespace of a [`Cache`], with the options of a call: the by-hand
/// form of `#[cached]` and `#[invalidates]`. From [`Cache::namespace`].
///
/// ```
/// # async fn demo() -> Result<(), std::io::Error> {
/// use std::time::Duration;
/// let cache = cache_aside::Cache::builder().memory().build().unwrap();
/// let top = cache
///     .namespace("top_routes")
///     .ttl(Duration::from_secs(30))
///     .version(2)
///     .unless(|routes: &Vec<String>| routes.is_empty());
/// let routes = top
///     .get_or_try_compute(&("FRA", 10), async { Ok::<_, std::io::Error>(vec!["JFK".to_string()]) })
///     .await?;
/// assert_eq!(routes, ["JFK"]);
/// cache.namespace("top_routes").invalidate().await;
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone, Copy)]
pub struct Namespace<'c, U = NoFilter> {
    cache: &'c Cache,
    name: &'c str,
    version: u32,
    opts: CallOptions,
    unless: U,
}

impl<U> fmt::Debug for Namespace<'_, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<'c, U> Namespace<'c, U> {
    /// Time to live of stored entries (default: the cache's `default_ttl`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.opts.ttl = Some(ttl);
        self
    }

    /// Stale-while-revalidate: after the TTL, an entry may still be served
    /// for this long ([`Status::Stale`]) while exactly one caller, across
    /// processes, recomputes it. The other callers do not wait.
    pub fn stale(mut self, window: Duration) -> Self {
        self.opts.stale = Some(window);
        self
    }

    /// Cross-process stampede protection (default on): a miss takes a lease
    /// on the entry, and misses elsewhere wait for its value. `false` opts
    /// out (in-process coalescing stays).
    pub fn lock(mut self, on: bool) -> Self {
        self.opts.lock = Some(on);
        self
    }

    /// How long a miss waits for another caller's computation before it
    /// computes itself (default: the cache's, 3 s).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.opts.lock_wait = Some(wait);
        self
    }

    /// How long a miss's lease lasts if its owner never stores (a crash):
    /// default the cache's maximum (10 s), never longer than the TTL.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.opts.lease = Some(lease);
        self
    }

    /// Probabilistic early refresh (XFetch, Vattani et al., VLDB 2015):
    /// a hit recomputes the entry before its TTL ends with a probability
    /// that grows as expiry nears and with the stored compute time; `beta`
    /// 1.0 is the paper's default, larger refreshes earlier. One caller
    /// refreshes per entry and window, across processes.
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.opts.early_refresh = Some(beta);
        self
    }

    /// Keeps hits in this process's local (L1) tier for up to `ttl` (zero:
    /// off), in front of Redis: a local hit costs no round trip. Other
    /// processes' invalidations evict it through the invalidation channel
    /// (within milliseconds); while the channel is down nothing new enters
    /// it and nothing is served past `ttl`. Keep `ttl` short.
    ///
    /// ```
    /// # async fn demo() {
    /// use std::time::Duration;
    /// let cache = cache_aside::Cache::builder().memory().build().unwrap();
    /// let airports = cache.namespace("airport").local(Duration::from_secs(10));
    /// let name: String = airports.get_or_compute(&"FRA", async { "Frankfurt".into() }).await;
    /// // Served from this process's memory, no round trip:
    /// let again: String = airports.get_or_compute(&"FRA", async { unreachable!() }).await;
    /// assert_eq!((name.as_str(), again.as_str()), ("Frankfurt", "Frankfurt"));
    /// assert_eq!(cache.stats().total.local_hits, 1);
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
    /// ```
    pub fn local(mut self, ttl: Duration) -> Self {
        self.opts.local = Some(ttl);
        self
    }

    /// Sets all call options at once (what `#[cached]` generates).
    #[doc(hidden)]
    pub fn options(mut self, opts: CallOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Schema version, part of every key (default 1): bump it when the
    /// value's type changes shape.
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Values for which `filter` returns `true` are returned but not stored.
    pub fn unless<F>(self, filter: F) -> Namespace<'c, F> {
        Namespace {
            cache: self.cache,
            name: self.name,
            version: self.version,
            opts: self.opts,
            unless: filter,
        }
    }

    /// The value for `key`: from the cache, or by awaiting `compute` and
    /// storing its output. Never fails: if the cache is unavailable,
    /// `compute` runs uncached.
    pub async fn get_or_compute<K, T, Fut>(&self, key: &K, compute: Fut) -> T
    where
        K: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = T>,
    {
        let entry_key = self.cache.entry_key(self.name, self.version, key);
        self.cache
            .run_key(
                self.name,
                None,
                entry_key,
                &self.opts,
                &self.unless,
                compute,
                Shape::plain(),
            )
            .await
    }

    /// Like [`get_or_compute`](Self::get_or_compute) for a fallible
    /// computation: `Ok` values are cached, errors are returned as they are
    /// and never cached.
    pub async fn get_or_try_compute<K, T, E, Fut>(&self, key: &K, compute: Fut) -> Result<T, E>
    where
        K: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = Result<T, E>>,
    {
        let entry_key = self.cache.entry_key(self.name, self.version, key);
        self.cache
            .run_key(
                self.name,
                None,
                entry_key,
                &self.opts,
                &self.unless,
                compute,
                Shape::result(None),
            )
            .await
    }

    /// Invalidates every entry of the namespace, in every process sharing
    /// the Redis: one `SET` of a fresh generation token, O(1).
    pub async fn invalidate(&self) -> Invalidation {
        match self.cache.state(self.name) {
            Some(state) => self.cache.invalidate_namespace(&state).await,
            None => Invalidation::Done,
        }
    }

    /// Invalidates the one entry a get with the same `key` (and version) uses.
    pub async fn invalidate_key<K: Serialize + ?Sized>(&self, key: &K) -> Invalidation {
        let entry_key = self.cache.entry_key(self.name, self.version, key);
        self.cache
            .invalidate_key_encoded(self.name, entry_key)
            .await
    }
}

impl Cache {
    pub(crate) async fn invalidate_key_encoded(
        &self,
        ns: &str,
        entry_key: Result<String, key::KeyError>,
    ) -> Invalidation {
        let Some(state) = self.state(ns) else {
            return Invalidation::Done;
        };
        match entry_key {
            Ok(k) => self.invalidate_entry(&state, k).await,
            Err(e) => {
                // No key can be built, so no entry can exist under one: but
                // be safe and drop the whole namespace.
                tracing::warn!(namespace = ns, error = %e, "cache-aside: invalidating the whole namespace");
                self.invalidate_namespace(&state).await
            }
        }
    }
}

/// Configures and builds a [`Cache`]. From [`Cache::builder`].
#[derive(Clone)]
pub struct CacheBuilder {
    redis_url: Option<String>,
    cluster: Option<Vec<String>>,
    tls_root_cert: Option<Vec<u8>>,
    memory: bool,
    prefix: String,
    default_ttl: Duration,
    op_timeout: Duration,
    connect_timeout: Duration,
    connections: usize,
    codec: CodecKind,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    guard_ttl: Duration,
    max_value_bytes: usize,
    retry_for: Duration,
    lock_wait: Duration,
    max_lease: Duration,
    local_ttl: Option<Duration>,
    local_capacity: u64,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            redis_url: None,
            cluster: None,
            tls_root_cert: None,
            memory: false,
            prefix: "cache-aside".into(),
            default_ttl: Duration::from_secs(300),
            op_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            connections: 1,
            codec: CodecKind::default(),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_millis(500),
            guard_ttl: Duration::from_secs(300),
            max_value_bytes: 4 << 20,
            retry_for: Duration::from_secs(600),
            lock_wait: Duration::from_secs(3),
            max_lease: Duration::from_secs(10),
            local_ttl: None,
            local_capacity: 64 << 20,
        }
    }
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("redis_url", &self.redis_url.as_deref().map(redact))
            .field(
                "cluster",
                &self
                    .cluster
                    .as_ref()
                    .map(|urls| urls.iter().map(|u| redact(u)).collect::<Vec<_>>()),
            )
            .field("tls_root_cert", &self.tls_root_cert.as_ref().map(|_| "set"))
            .field("memory", &self.memory)
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("op_timeout", &self.op_timeout)
            .field("codec", &self.codec.name())
            .finish_non_exhaustive()
    }
}

impl CacheBuilder {
    /// Redis URL (`redis://[user:pass@]host:port[/db]`). Default: `$REDIS_URL`,
    /// else `redis://127.0.0.1:6379`.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self.cluster = None;
        self.memory = false;
        self
    }

    /// Redis Cluster mode, with these seed nodes (`redis://host:port`, or
    /// `rediss://` with the `tls` feature; one reachable seed is enough, the
    /// others are found through it). Every key of a namespace carries the
    /// namespace as hash tag (`prefix:{ns}:...`), so a namespace lives on
    /// one master, and each read and script touches one slot.
    ///
    /// In cluster mode a hit always reads entry and generation with one
    /// `MGET` (no generation views) and the local tier is off: redis-rs's
    /// cluster connection does not order pub/sub messages with replies,
    /// and the cluster bus may lose them silently in a failover. One
    /// cluster connection (a multiplexed connection per node) serves every
    /// call; [`connections`](Self::connections) does not apply.
    ///
    /// ```
    /// let cache = cache_aside::Cache::builder()
    ///     .cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
    ///     .prefix("flightdb")
    ///     .build()
    ///     .unwrap(); // no I/O yet: connects on first use
    /// assert_eq!(cache.prefix(), "flightdb");
    /// ```
    pub fn cluster(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.cluster = Some(urls.into_iter().map(Into::into).collect());
        self.redis_url = None;
        self.memory = false;
        self
    }

    /// Trusts this CA certificate (PEM; several may be concatenated) for
    /// `rediss://` connections, instead of the system's root certificates:
    /// for servers whose certificate a private CA signed. The server's
    /// certificate must name the URL's host. Needs the `tls` feature and
    /// `rediss://` URL(s); the PEM is checked by [`build`](Self::build).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cache = cache_aside::Cache::builder()
    ///     .redis_url("rediss://cache-aside:secret@redis.internal:6380")
    ///     .tls_root_cert(std::fs::read("/etc/redis/ca.crt")?)
    ///     .build()?; // cache-aside = { features = ["tls"] }
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// Use the in-process memory backend instead of Redis: same semantics
    /// (TTL, namespaces, invalidation, stats) within one process.
    pub fn memory(mut self) -> Self {
        self.memory = true;
        self
    }

    /// Key prefix (default `cache-aside`): 1 to 64 characters of `[A-Za-z0-9_.-]`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// TTL for calls that set none (default 5 minutes).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Longest a call waits for one Redis operation before running uncached
    /// (default 100 ms): the deadline of every Redis command.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Timeout of one connection attempt (default 1 s). Connections are made
    /// in the background; callers wait at most the operation timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Number of multiplexed Redis connections kept open (default 1, 1 to 64).
    /// One pipelines every concurrent call into as few writes as possible,
    /// which is what a single-threaded Redis serves fastest; more help when
    /// one client process is CPU-bound on reading replies.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// Value codec (default [`Postcard`](crate::codec::Postcard)).
    pub fn codec<C: Codec>(mut self, _codec: C) -> Self {
        self.codec = C::kind();
        self
    }

    /// Consecutive Redis failures that open the circuit breaker (default 3),
    /// and how long it stays open before one call probes (default 500 ms).
    pub fn circuit_breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker_threshold = failures;
        self.breaker_cooldown = cooldown;
        self
    }

    /// Lifetime of a key invalidation's tombstone (default 5 minutes). A
    /// computation that takes longer than this is returned but not stored,
    /// since it cannot prove no invalidation raced it.
    pub fn invalidation_guard(mut self, guard: Duration) -> Self {
        self.guard_ttl = guard;
        self
    }

    /// Encoded values larger than this are not stored (default 4 MiB).
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// How long queued invalidations are retried (default 10 minutes).
    pub fn invalidation_retry_for(mut self, period: Duration) -> Self {
        self.retry_for = period;
        self
    }

    /// Stampede control defaults: how long a miss waits for another caller's
    /// computation (in this process or, through its lease, in another)
    /// before computing itself (default 3 s), and the longest lease a miss
    /// takes (default 10 s; never longer than the entry's TTL). A crashed
    /// owner's lease expires after that, so nobody waits forever.
    pub fn stampede(mut self, lock_wait: Duration, max_lease: Duration) -> Self {
        self.lock_wait = lock_wait;
        self.max_lease = max_lease;
        self
    }

    /// The local (L1) tier for every namespace: hits are kept in this
    /// process for up to `ttl` (default: off; a call's `local` overrides
    /// it). See [`Namespace::local`]. Off in [cluster](Self::cluster) mode.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = cache_aside::Cache::builder()
    ///     .local(Duration::from_secs(5))
    ///     .local_capacity(16 << 20)
    ///     .build()
    ///     .unwrap();
    /// # let _ = cache;
    /// ```
    pub fn local(mut self, ttl: Duration) -> Self {
        self.local_ttl = Some(ttl);
        self
    }

    /// Bound of the local tier in bytes of keys and values (default 64 MiB;
    /// 0 turns the tier off). Least recently and frequently used entries go
    /// first.
    pub fn local_capacity(mut self, bytes: u64) -> Self {
        self.local_capacity = bytes;
        self
    }

    /// Validates the configuration and creates the pool. No I/O: Redis is
    /// first contacted by the first cached call.
    pub fn build(self) -> Result<Cache, Error> {
        key::validate_name("prefix", &self.prefix).map_err(Error::Config)?;
        if self.default_ttl < Duration::from_millis(1) {
            return Err(Error::Config("default_ttl must be at least 1 ms".into()));
        }
        if self.op_timeout < Duration::from_millis(1) {
            return Err(Error::Config("op_timeout must be at least 1 ms".into()));
        }
        if !(1..=64).contains(&self.connections) {
            return Err(Error::Config(format!(
                "connections must be 1 to 64, got {}",
                self.connections
            )));
        }
        let clustered = !self.memory && self.cluster.is_some();
        if clustered && self.local_ttl.is_some_and(|t| !t.is_zero()) {
            tracing::warn!(
                "cache-aside: the local tier is off in Redis Cluster mode (see CacheBuilder::cluster)"
            );
        }
        let hub = Arc::new(Hub::new(
            &self.prefix,
            if self.memory || clustered {
                1
            } else {
                self.connections
            },
            self.memory,
            !clustered,
            Local::new(self.local_capacity),
        ));
        let (backend, description) = if self.memory {
            (
                AnyBackend::Memory(MemoryBackend::default()),
                "memory".to_string(),
            )
        } else {
            let (urls, description) = match &self.cluster {
                Some(urls) => {
                    let redacted: Vec<String> = urls.iter().map(|u| redact(u)).collect();
                    (
                        urls.clone(),
                        format!("Redis Cluster {}", redacted.join(",")),
                    )
                }
                None => {
                    let url = self
                        .redis_url
                        .clone()
                        .or_else(|| std::env::var("REDIS_URL").ok())
                        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
                    let description = redact(&url);
                    (vec![url], description)
                }
            };
            let backend = RedisBackend::new(RedisConfig {
                urls,
                cluster: clustered,
                connections: self.connections,
                op_timeout: self.op_timeout,
                connect_timeout: self.connect_timeout,
                tls_root_cert: self.tls_root_cert.clone(),
                hub: Arc::clone(&hub),
            })
            .map_err(|e| Error::Config(format!("{e} ({description})")))?;
            (AnyBackend::Redis(Box::new(backend)), description)
        };
        static IDS: AtomicU64 = AtomicU64::new(1);
        Ok(Cache {
            inner: Arc::new(Inner {
                id: IDS.fetch_add(1, Relaxed),
                backend,
                breaker: Breaker::new(self.breaker_threshold, self.breaker_cooldown),
                prefix: self.prefix,
                default_ttl: self.default_ttl,
                codec: self.codec,
                guard_ttl: self.guard_ttl,
                max_value_bytes: self.max_value_bytes,
                retry_for: self.retry_for,
                description,
                hub,
                local_ttl: self.local_ttl,
                retry: Mutex::new(RetryQueue::default()),
                flights: Flights::default(),
                lock_wait: self.lock_wait,
                max_lease: self.max_lease,
            }),
        })
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{}{masked}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("rediss://:p%40x@h"), "rediss://:***@h");
        assert_eq!(redact("redis://token@h"), "redis://***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn builder_debug_hides_passwords() {
        let b = Cache::builder().redis_url("redis://user:hunter2@127.0.0.1:6379");
        let s = format!("{b:?}");
        assert!(!s.contains("hunter2"), "{s}");
        let c = b.build().unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

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

    #[test]
    fn build_rejects_bad_config() {
        assert!(
            matches!(Cache::builder().prefix("a:b").build(), Err(Error::Config(m)) if m.contains("prefix"))
        );
        assert!(Cache::builder().prefix("").build().is_err());
        assert!(Cache::builder().connections(0).build().is_err());
        assert!(
            Cache::builder()
                .default_ttl(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(Cache::builder().redis_url("http://nope").build().is_err());
    }
}
