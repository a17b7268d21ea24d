//! Storage backends behind one trait: Redis (the default) and an in-process
//! memory store with the same semantics, for unit tests of user code and for
//! machines without Redis. Both run the same protocol (see `entry.rs`): a
//! read returns the entry and the namespace generation together; a store is
//! a compare-and-set on both.

pub(crate) mod memory;
pub(crate) mod redis;

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::entry::Token;

/// What one read returned: the entry bytes and the namespace generation.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub entry: Option<Vec<u8>>,
    /// The namespace generation (`None`: absent, or not a token).
    pub generation: Option<Token>,
}

/// What a key must hold for a compare-and-set to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect<'a> {
    /// Nothing.
    Absent,
    /// A value starting with these bytes (an entry's identity, a tombstone).
    Prefix(&'a [u8]),
    /// Exactly these bytes (the caller's lease).
    Exactly(&'a [u8]),
}

impl<'a> Expect<'a> {
    pub(crate) fn matches(self, current: Option<&[u8]>) -> bool {
        match (self, current) {
            (Expect::Absent, None) => true,
            (Expect::Prefix(p), Some(cur)) => cur.starts_with(p),
            (Expect::Exactly(l), Some(cur)) => cur == l,
            _ => false,
        }
    }

    /// (mode, bytes) as the Lua scripts take them.
    pub(crate) fn script_args(self) -> (&'static str, &'a [u8]) {
        match self {
            Expect::Absent => ("0", b""),
            Expect::Prefix(p) => ("1", p),
            Expect::Exactly(l) => ("2", l),
        }
    }
}

/// The outcome of trying to take an entry's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// The lease is ours: compute and store.
    Acquired,
    /// The key changed since it was read (another lease, a new entry, a
    /// tombstone): read again.
    Changed,
}

/// The message an invalidation publishes (in the same script), for the
/// other processes' generation views and local tiers (see `coherence`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notice<'a> {
    pub channel: &'a str,
    pub message: &'a [u8],
}

/// A compare-and-set store of one entry.
pub(crate) struct Store<'a> {
    pub entry_key: &'a str,
    pub generation_key: &'a str,
    /// What the entry key must still hold.
    pub expect: Expect<'a>,
    /// The generation the reader saw before computing (`None`: there was none).
    pub seen_generation: Option<&'a [u8]>,
    /// Installed as the generation when there is none yet.
    pub fresh_generation: Token,
    pub ttl: Duration,
    /// Entry bytes after magic and generation.
    pub tail: &'a [u8],
}

/// A Redis operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    /// Redis answered with an error, or the connection failed.
    #[error("{0}")]
    Redis(::redis::RedisError),
    /// No answer within the operation timeout.
    #[error("operation timed out")]
    Timeout,
    /// No connection (the reason, with the server's words if it gave any).
    #[error("{0}")]
    Unavailable(Cow<'static, str>),
}

impl From<::redis::RedisError> for BackendError {
    fn from(e: ::redis::RedisError) -> Self {
        if e.is_timeout() {
            BackendError::Timeout
        } else {
            BackendError::Redis(e)
        }
    }
}

impl BackendError {
    /// Does this say Redis is unreachable or too slow (which the circuit
    /// breaker counts), rather than that one command failed (a foreign
    /// value of another type under a key, say)?
    pub(crate) fn is_outage(&self) -> bool {
        match self {
            BackendError::Timeout | BackendError::Unavailable(_) => true,
            BackendError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
            }
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, BackendError>;

/// The operations the cache needs from a store.
pub(crate) trait Backend: Send + Sync {
    /// The entry and the generation, in one round trip. `views` are the
    /// namespace's generation views, one per connection slot (see
    /// `coherence`): while one is known, only the entry is read.
    fn fetch(
        &self,
        entry_key: &str,
        generation_key: &str,
        views: &[AtomicU64],
    ) -> impl Future<Output = Result<Fetched>> + Send;
    /// Compare-and-set store; `Ok(false)` when the guard refused it.
    fn store(&self, store: Store<'_>) -> impl Future<Output = Result<bool>> + Send;
    /// Replaces the namespace generation (namespace invalidation).
    fn set_generation(
        &self,
        generation_key: &str,
        token: &Token,
        notice: Notice<'_>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// One round trip that touches no key (health check).
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// Replaces what a reader saw (`expect`: absent or an identity prefix)
    /// with its lease, unless another lease is there or the key changed.
    fn acquire(
        &self,
        entry_key: &str,
        expect: Expect<'_>,
        lease: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<Acquire>> + Send;
    /// Replaces a lease that is still this one with `tombstone` (the owner
    /// stores nothing): waiters stop waiting, and the key does not go empty.
    fn release(
        &self,
        entry_key: &str,
        lease: &[u8],
        tombstone: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;
    /// `SET key token NX PX ttl`: one refresher per window across processes.
    fn try_lock(
        &self,
        key: &str,
        token: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Overwrites one entry with a tombstone (key invalidation), keeping at
    /// least the key's remaining life.
    fn put_tombstone(
        &self,
        entry_key: &str,
        tombstone: &[u8],
        ttl: Duration,
        notice: Notice<'_>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The backend a cache was built with.
pub(crate) enum AnyBackend {
    Redis(Box<redis::RedisBackend>),
    Memory(memory::MemoryBackend),
}

impl Backend for AnyBackend {
    async fn fetch(
        &self,
        entry_key: &str,
        generation_key: &str,
        views: &[AtomicU64],
    ) -> Result<Fetched> {
        match self {
            AnyBackend::Redis(b) => b.fetch(entry_key, generation_key, views).await,
            AnyBackend::Memory(b) => b.fetch(entry_key, generation_key, views).await,
        }
    }

    async fn store(&self, store: Store<'_>) -> Result<bool> {
        match self {
            AnyBackend::Redis(b) => b.store(store).await,
            AnyBackend::Memory(b) => b.store(store).await,
        }
    }

    async fn set_generation(
        &self,
        generation_key: &str,
        token: &Token,
        notice: Notice<'_>,
    ) -> Result<()> {
        match self {
            AnyBackend::Redis(b) => b.set_generation(generation_key, token, notice).await,
            AnyBackend::Memory(b) => b.set_generation(generation_key, token, notice).await,
        }
    }

    async fn acquire(
        &self,
        entry_key: &str,
        expect: Expect<'_>,
        lease: &[u8],
        ttl: Duration,
    ) -> Result<Acquire> {
        match self {
            AnyBackend::Redis(b) => b.acquire(entry_key, expect, lease, ttl).await,
            AnyBackend::Memory(b) => b.acquire(entry_key, expect, lease, ttl).await,
        }
    }

    async fn release(
        &self,
        entry_key: &str,
        lease: &[u8],
        tombstone: &[u8],
        ttl: Duration,
    ) -> Result<()> {
        match self {
            AnyBackend::Redis(b) => b.release(entry_key, lease, tombstone, ttl).await,
            AnyBackend::Memory(b) => b.release(entry_key, lease, tombstone, ttl).await,
        }
    }

    async fn try_lock(&self, key: &str, token: &[u8], ttl: Duration) -> Result<bool> {
        match self {
            AnyBackend::Redis(b) => b.try_lock(key, token, ttl).await,
            AnyBackend::Memory(b) => b.try_lock(key, token, ttl).await,
        }
    }

    async fn ping(&self) -> Result<()> {
        match self {
            AnyBackend::Redis(b) => b.ping().await,
            AnyBackend::Memory(b) => b.ping().await,
        }
    }

    async fn put_tombstone(
        &self,
        entry_key: &str,
        tombstone: &[u8],
        ttl: Duration,
        notice: Notice<'_>,
    ) -> Result<()> {
        match self {
            AnyBackend::Redis(b) => b.put_tombstone(entry_key, tombstone, ttl, notice).await,
            AnyBackend::Memory(b) => b.put_tombstone(entry_key, tombstone, ttl, notice).await,
        }
    }
}
