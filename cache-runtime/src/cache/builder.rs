//! [`CacheBuilder`]: every setting of a cache, checked once by
//! [`build`](CacheBuilder::build), which does no I/O.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::invalidate::RetryQueue;
use super::registry::Registry;
use super::{Cache, Inner};
use crate::backend::AnyBackend;
use crate::backend::memory::MemoryBackend;
use crate::backend::redis::{RedisBackend, RedisConfig, redact};
use crate::breaker::Breaker;
use crate::codec::{Codec, CodecKind};
use crate::coherence::Hub;
use crate::error::Error;
use crate::flight::Flights;
use crate::key::layout;
use crate::local::Local;

/// Configures and builds a [`Cache`]. From [`Cache::builder`].
#[derive(Clone)]
pub struct CacheBuilder {
    redis_url: Option<String>,
    cluster: Option<Vec<String>>,
    tls_root_cert: Option<Vec<u8>>,
    durable: Option<(u32, Duration)>,
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
    compress_above: Option<usize>,
    trace_calls: bool,
    retry_for: Duration,
    lock_wait: Duration,
    max_lease: Duration,
    local_ttl: Option<Duration>,
    local_capacity: u64,
    fence_ttl: Duration,
    generation_ttl: Duration,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            redis_url: None,
            cluster: None,
            tls_root_cert: None,
            durable: None,
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
            compress_above: None,
            trace_calls: false,
            retry_for: Duration::from_secs(600),
            lock_wait: Duration::from_secs(3),
            max_lease: Duration::from_secs(10),
            local_ttl: None,
            local_capacity: 64 << 20,
            fence_ttl: Duration::from_secs(5),
            generation_ttl: Duration::from_secs(30 * 86_400),
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
            .field("durable_invalidations", &self.durable)
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

    /// Invalidations return [`Done`](crate::Invalidation::Done) only once
    /// `replicas` replicas of the master that took them have them too
    /// (Redis's `WAIT`, at most `timeout`), so that a replica promoted in a
    /// failover right after cannot bring back the entries they replaced:
    /// replication is asynchronous, and a master killed a moment after
    /// acknowledging a write may take it along. (A put's claim waits the
    /// same way; when too few replicas answer, the put stores its value
    /// without its claim, as it does when the claim fails.) Ask for as many
    /// replicas as each master has: with fewer, the one promoted may be one
    /// that did not acknowledge. For Redis Cluster,
    /// where nothing else catches it. (One server with replicas behind an
    /// address that moves to the promoted one does not need it: the
    /// promoted replica is another run of the server, and its new life
    /// token makes every entry a miss once. It works there too.) The memory
    /// backend ignores it.
    ///
    /// When fewer replicas answer within `timeout` (one is down, or lags),
    /// the invalidation is treated as not landed: it returns
    /// [`Queued`](crate::Invalidation::Queued), is sent again in the
    /// background, and this process reads the entries it covers from the
    /// source until it lands. Invalidations run on a connection of their
    /// own, one at a time, so a waiting `WAIT` never holds up a hit; each
    /// script and its `WAIT` go in one pipeline on one connection (in a
    /// cluster, to the master of the script's slot; redis-rs resends the
    /// pipeline as a whole after a reconnect or a `MOVED`/`ASK` redirect),
    /// so the `WAIT` counts exactly the connection that wrote. (A resend
    /// may run a script twice: an invalidation twice, which is harmless.) The cost is the replicas' acknowledgement inside the
    /// same round trip.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = cache_aside::Cache::builder()
    ///     .cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .durable_invalidations(1, Duration::from_millis(500))
    ///     .build()
    ///     .unwrap();
    /// # drop(cache);
    /// ```
    pub fn durable_invalidations(mut self, replicas: u32, timeout: Duration) -> Self {
        self.durable = Some((replicas, timeout));
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

    /// Entries larger than this (after compression, where it applies) are
    /// not stored (default 4 MiB).
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Stores values whose encoding is at least `bytes` long LZ4-compressed,
    /// when that makes them smaller (default: no compression;
    /// `#[cached(compress = false)]` opts one fn out, `#[cached(compress)]`
    /// opts one in on a cache without it). Readers decode compressed and
    /// plain entries alike, whatever their own setting, so the threshold
    /// can change between deploys. See BENCHMARKS.md ("Compression") for
    /// what it saves and costs.
    ///
    /// ```
    /// # async fn demo() {
    /// let cache = cache_aside::Cache::builder().memory().compress_above(16 << 10).build().unwrap();
    /// let pages = cache.namespace("page");
    /// let html: String = pages.get_or_compute(&"/", async { "<p>hello</p>".repeat(5000) }).await;
    /// let again: String = pages.get_or_compute(&"/", async { unreachable!() }).await;
    /// assert_eq!(html, again);
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
    /// ```
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = Some(bytes);
        self
    }

    /// Puts every cached call, hits included, in a `tracing` span
    /// `cache_aside.call` (target `cache_aside`, INFO) with its namespace,
    /// key and the [`Status`](crate::Status) it ended with
    /// (`cache_aside.status`). Off by default: misses and invalidations
    /// have spans of their own (README, "Traces"), and a hit then pays
    /// nothing for tracing.
    ///
    /// ```
    /// let cache = cache_aside::Cache::builder().memory().trace_calls(true).build().unwrap();
    /// # let _ = cache;
    /// ```
    pub fn trace_calls(mut self, on: bool) -> Self {
        self.trace_calls = on;
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
    /// it). See [`Namespace::local`](crate::Namespace::local). Off in [cluster](Self::cluster) mode.
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

    /// How long a [`transaction`](crate::transaction) scope's fence stands
    /// without a renewal (default 5 s). A running scope renews its fences
    /// every third of this; a scope whose process died leaves fences that
    /// lapse after at most this long, judged on the server's clock: the
    /// bound on how long after such a crash reads keep going to the source
    /// uncached. No pre-commit value is served either way.
    pub fn transaction_fence(mut self, ttl: Duration) -> Self {
        self.fence_ttl = ttl;
        self
    }

    /// The life of a namespace's generation key in Redis (default 30 days),
    /// renewed by every invalidation: a prefix that is no longer used
    /// leaves nothing behind for longer. Safe at any length: a namespace
    /// whose generation is gone gets a new one at its next miss, which every
    /// older entry fails (they are misses once, not stale).
    pub fn generation_ttl(mut self, ttl: Duration) -> Self {
        self.generation_ttl = ttl;
        self
    }

    /// Validates the configuration and creates the pool. No I/O: Redis is
    /// first contacted by the first cached call.
    pub fn build(self) -> Result<Cache, Error> {
        layout::validate_name("prefix", &self.prefix)?;
        let at_least_1ms = |setting, d: Duration| {
            if d < Duration::from_millis(1) {
                return Err(Error::Setting {
                    setting,
                    allowed: format!("at least 1 ms, got {d:?}"),
                });
            }
            Ok(())
        };
        at_least_1ms("default_ttl", self.default_ttl)?;
        at_least_1ms("op_timeout", self.op_timeout)?;
        at_least_1ms("transaction_fence", self.fence_ttl)?;
        at_least_1ms("generation_ttl", self.generation_ttl)?;
        if let Some((replicas, timeout)) = self.durable {
            if replicas == 0 {
                return Err(Error::Setting {
                    setting: "durable_invalidations",
                    allowed: "at least 1 replica (0 waits for none: leave it unset)".into(),
                });
            }
            at_least_1ms("durable_invalidations", timeout)?;
        }
        if !(1..=64).contains(&self.connections) {
            return Err(Error::Setting {
                setting: "connections",
                allowed: format!("1 to 64, got {}", self.connections),
            });
        }
        let clustered = !self.memory && self.cluster.is_some();
        if clustered && self.local_ttl.is_some_and(|t| !t.is_zero()) {
            tracing::warn!(
                "cache-aside: the local tier is off in Redis Cluster mode (see CacheBuilder::cluster)"
            );
        }
        let hub = Arc::new(Hub::new(
            layout::channel(&self.prefix),
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
            let config = RedisConfig {
                prefix: self.prefix.clone(),
                urls,
                cluster: clustered,
                connections: self.connections,
                op_timeout: self.op_timeout,
                connect_timeout: self.connect_timeout,
                tls_root_cert: self.tls_root_cert.clone(),
                durable: self.durable,
            };
            let backend = RedisBackend::new(config, Arc::clone(&hub))?;
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
                compress_above: self.compress_above,
                trace_calls: self.trace_calls,
                retry_for: self.retry_for,
                description,
                hub,
                registry: Registry::default(),
                links: Default::default(),
                local_ttl: self.local_ttl,
                retry: Mutex::new(RetryQueue::default()),
                queued: Default::default(),
                in_flight: Default::default(),
                flights: Flights::default(),
                lock_wait: self.lock_wait,
                max_lease: self.max_lease,
                fence_ttl: self.fence_ttl,
                generation_ttl: self.generation_ttl,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_debug_hides_passwords() {
        let b = Cache::builder().redis_url("redis://user:hunter2@127.0.0.1:6379");
        let s = format!("{b:?}");
        assert!(!s.contains("hunter2"), "{s}");
        let c = b.build().unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn build_rejects_bad_config() {
        assert!(matches!(
            Cache::builder().prefix("a:b").build(),
            Err(Error::Name { what: "prefix", .. })
        ));
        assert!(Cache::builder().prefix("").build().is_err());
        assert!(Cache::builder().connections(0).build().is_err());
        assert!(
            Cache::builder()
                .default_ttl(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(Cache::builder().redis_url("http://nope").build().is_err());
        let durable = |n, t| Cache::builder().durable_invalidations(n, t).build();
        assert!(matches!(
            durable(0, Duration::from_secs(1)),
            Err(Error::Setting {
                setting: "durable_invalidations",
                ..
            })
        ));
        assert!(durable(1, Duration::ZERO).is_err());
        assert!(durable(1, Duration::from_millis(200)).is_ok());
    }
}
