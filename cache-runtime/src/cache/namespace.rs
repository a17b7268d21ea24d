//! [`Namespace`]: the by-hand form of `#[cached]` and `#[invalidates]`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use super::Cache;
use super::batch::BatchTarget;
use super::invalidate::Invalidation;
use super::lookup::{Shape, Target};
use super::options::{CallOptions, Filter, NoFilter};
use super::refresh::Inline;
use super::scope;

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
    opts: CallOptions,
    unless: U,
}

impl<U> fmt::Debug for Namespace<'_, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .field("options", &self.opts)
            .finish_non_exhaustive()
    }
}

impl<'c> Namespace<'c> {
    /// A handle on `name` with every option at the cache's default.
    pub(super) fn new(cache: &'c Cache, name: &'c str) -> Self {
        Namespace {
            cache,
            name,
            opts: CallOptions::DEFAULT,
            unless: NoFilter,
        }
    }
}

impl<'c, U> Namespace<'c, U> {
    fn target<K: Serialize + ?Sized>(&self, key: &K) -> Target<'c> {
        Target {
            ns: self.name,
            slot: None,
            site: None,
            key: self.cache.entry_key(self.name, key),
            generics: &[],
            tags: Ok(Vec::new()),
        }
    }

    /// Time to live of stored entries (default: the cache's `default_ttl`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.opts.ttl = Some(ttl);
        self
    }

    /// Stale-while-revalidate: after the TTL, an entry may still be served
    /// for this long ([`Status::Stale`](crate::Status::Stale)) while exactly one caller, across
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

    /// Fail-safe: keep entries this long past their TTL (and `stale`), and
    /// when a computation fails (an `Err` of
    /// [`get_or_try_compute`](Self::get_or_try_compute)), return the last
    /// good value instead, with [`Status::FailSafe`](crate::Status::FailSafe).
    /// An invalidated entry is never served.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let cache = cache_aside::Cache::builder().memory().build().unwrap();
    /// let rates = cache.namespace("rates").fail_safe(Duration::from_secs(3600));
    /// ```
    pub fn fail_safe(mut self, window: Duration) -> Self {
        self.opts.fail_safe = Some(window);
        self
    }

    /// With [`fail_safe`](Self::fail_safe): how long a computation may run
    /// when a fail-safe value is at hand before that value is returned (the
    /// computation is dropped); without one, the call waits for it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.timeout = Some(timeout);
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

    /// Schema version (default 1). Every entry is checked against the value
    /// type's shape (traced from its `Deserialize`), the codec and this
    /// version, so a changed shape is noticed without it: bump it when the
    /// meaning of the values changes while their shape stays, or to vouch
    /// for a type whose shape cannot be traced (see the README, "Schema").
    /// Not part of the key: an invalidation reaches the entry whatever the
    /// version.
    pub fn version(mut self, version: u32) -> Self {
        self.opts.version = Some(version);
        self
    }

    /// Stores this namespace's values LZ4-compressed when their encoding is
    /// at least `bytes` long (overrides
    /// [`CacheBuilder::compress_above`](crate::CacheBuilder::compress_above);
    /// `usize::MAX`: never).
    ///
    /// ```
    /// # async fn demo() {
    /// let cache = cache_aside::Cache::builder().memory().build().unwrap();
    /// let blobs = cache.namespace("blob").compress(1024);
    /// let b: Vec<u8> = blobs.get_or_compute(&7, async { vec![0u8; 100_000] }).await;
    /// assert_eq!(b.len(), 100_000);
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
    /// ```
    pub fn compress(mut self, bytes: usize) -> Self {
        self.opts.compress = Some(super::Compress::Above(bytes));
        self
    }

    /// Values for which `filter` returns `true` are returned but not stored.
    pub fn unless<F>(self, filter: F) -> Namespace<'c, F> {
        Namespace {
            cache: self.cache,
            name: self.name,
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
        self.cache
            .run_key(
                self.target(key),
                &self.opts,
                &self.unless,
                compute,
                Inline,
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
        self.cache
            .run_key(
                self.target(key),
                &self.opts,
                &self.unless,
                compute,
                Inline,
                Shape::result(None),
            )
            .await
    }

    /// Many keys at once (a batch read): each key is its own entry, the one
    /// [`get_or_compute`](Self::get_or_compute) reads and writes for it.
    /// Every entry is read in one round trip; the keys that miss go the
    /// single-key way (leases, coalescing, the same compare-and-set), and
    /// `compute` runs once with all of them in the common case (again for
    /// keys that another caller held up; see README, "Batch reads"). A key
    /// `compute` leaves out of its map is not stored, and not in the result.
    /// Duplicate keys are read once. The entries' TTL and options are the
    /// namespace's; the local tier and `unless` are not used.
    ///
    /// ```
    /// # async fn demo() {
    /// use std::collections::HashMap;
    /// let cache = cache_aside::Cache::builder().memory().build().unwrap();
    /// let airports = cache.namespace("airport_name");
    /// let one: String = airports.get_or_compute(&"FRA", async { "Frankfurt".into() }).await;
    /// let names: HashMap<&str, String> = airports
    ///     .get_or_compute_many(&["FRA", "JFK"], |missing| async move {
    ///         assert_eq!(missing, ["JFK"]); // FRA is a hit
    ///         missing.into_iter().map(|c| (c, format!("{c} airport"))).collect()
    ///     })
    ///     .await;
    /// assert_eq!(names["FRA"], one);
    /// assert_eq!(names["JFK"], "JFK airport");
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
    /// ```
    pub async fn get_or_compute_many<K, T, F, Fut>(&self, keys: &[K], compute: F) -> HashMap<K, T>
    where
        K: Serialize + Eq + Hash + Clone,
        T: Serialize + DeserializeOwned,
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = HashMap<K, T>>,
    {
        let out = self
            .get_or_try_compute_many(keys, |missing| {
                let fut = compute(missing);
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            })
            .await;
        match out {
            Ok(map) => map,
            Err(never) => match never {},
        }
    }

    /// [`get_or_compute_many`](Self::get_or_compute_many) for a fallible
    /// `compute`: an `Err` is returned once every key's call has finished,
    /// and nothing it was asked for is stored.
    pub async fn get_or_try_compute_many<K, T, E, F, Fut>(
        &self,
        keys: &[K],
        compute: F,
    ) -> Result<HashMap<K, T>, E>
    where
        K: Serialize + Eq + Hash + Clone,
        T: Serialize + DeserializeOwned,
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, T>, E>>,
    {
        let target = BatchTarget {
            ns: self.name,
            slot: None,
            site: None,
            one_arg: false,
        };
        self.cache.run_many(target, &self.opts, keys, compute).await
    }

    /// Invalidates every entry of the namespace, in every process sharing
    /// the Redis: one `SET` of a fresh generation token, O(1). Inside a
    /// [`transaction`](crate::transaction) scope, the namespace is fenced
    /// until the scope ends.
    pub async fn invalidate(&self) -> Invalidation {
        match self.cache.state(self.name) {
            Some(state) => {
                let scope = scope::current();
                self.cache
                    .invalidate_namespace(&state, scope.as_deref())
                    .await
            }
            None => Invalidation::Done,
        }
    }

    /// Invalidates the one entry a get with the same `key` uses.
    pub async fn invalidate_key<K: Serialize + ?Sized>(&self, key: &K) -> Invalidation {
        let entry_key = self.cache.entry_key(self.name, key);
        let scope = scope::current();
        self.cache
            .invalidate_key_encoded(self.name, entry_key, scope.as_deref())
            .await
    }

    /// Invalidates every entry of the namespace whose tag `tag` has `value`
    /// (see `tags(..)` on [`#[cached]`](crate::cached)), in every process:
    /// one `SET` of the tag's token, O(1), no scan; entries of other values
    /// stay. `value` is encoded as the fn's argument is (`7u32` and `&7u32`
    /// are one value; `7u32` and `7u64` are too, as in keys). Inside a
    /// [`transaction`](crate::transaction) scope, it is invalidated again
    /// when the scope ends. A `tag` that is no tag name (letters, digits,
    /// `_`, `.`, `-`), or a value that cannot be encoded, invalidates the
    /// whole namespace.
    ///
    /// ```
    /// # async fn demo() {
    /// use cache_aside::{Cache, cached, with_status, Status};
    ///
    /// #[cached(ns = "orders", tags(user), cache = cache, skip(cache))]
    /// async fn orders(cache: &Cache, user: u32, day: u32) -> Vec<u64> { vec![u64::from(user * 100 + day)] }
    ///
    /// let cache = Cache::builder().memory().build().unwrap();
    /// orders(&cache, 7, 1).await;
    /// orders(&cache, 8, 1).await;
    /// cache.namespace("orders").invalidate_tag("user", &7u32).await;
    /// assert_eq!(with_status(orders(&cache, 7, 1)).await.1, Status::Miss);
    /// assert_eq!(with_status(orders(&cache, 8, 1)).await.1, Status::Hit);
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
    /// ```
    pub async fn invalidate_tag<V: Serialize + ?Sized>(
        &self,
        tag: &str,
        value: &V,
    ) -> Invalidation {
        let scope = scope::current();
        self.cache
            .invalidate_tag_value(self.name, tag, value, scope.as_deref())
            .await
    }
}
