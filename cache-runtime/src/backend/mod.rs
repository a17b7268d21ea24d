//! Storage backends behind one trait: Redis (the default) and an in-process
//! memory store with the same semantics, for unit tests of user code and for
//! machines without Redis. Both run the same protocol (see `entry/mod.rs`):
//! a read returns the entry and the namespace generation together; a reader
//! claims a key before it computes; a store is a compare-and-set on the
//! generation and the claim.

pub(crate) mod memory;
pub(crate) mod redis;

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::entry::Token;

/// A namespace's generation as Redis holds it: the token that entries
/// carry, and the life token of the server run that made it (see
/// `redis/life.rs`; none in process and in cluster mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GenValue {
    pub token: Token,
    pub life: Option<Token>,
}

impl GenValue {
    /// `token`, or `token:life`.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut v = self.token.to_vec();
        if let Some(life) = &self.life {
            v.push(b':');
            v.extend_from_slice(life);
        }
        v
    }
}

/// A namespace's generation, as a read found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Generation {
    /// A generation of this server run.
    Current(GenValue),
    /// None (a new namespace, or one whose generation was evicted, flushed
    /// or made before a restart), or bytes that are no generation.
    Absent,
    /// A transaction scope's fence: nothing is stored while it stands. Its
    /// token changes whenever a scope begins or ends under it.
    Fenced(Token),
}

impl Generation {
    /// What the generation key's bytes say to a connection of life `life`.
    pub(crate) fn parse(bytes: Option<&[u8]>, life: Option<&Token>) -> Generation {
        let Some(b) = bytes else {
            return Generation::Absent;
        };
        if b.first() == Some(&b'F') {
            return match b.get(1..17).map(Token::try_from) {
                Some(Ok(t)) => Generation::Fenced(t),
                _ => Generation::Fenced([b'-'; 16]),
            };
        }
        let (token, their_life) = match (b.get(..16), b.get(16), b.get(17..)) {
            (Some(t), None, _) => (t, None),
            (Some(t), Some(b':'), Some(l)) => (t, Token::try_from(l).ok()),
            _ => return Generation::Absent,
        };
        match Token::try_from(token) {
            Ok(token) if their_life.as_ref() == life => Generation::Current(GenValue {
                token,
                life: their_life,
            }),
            _ => Generation::Absent,
        }
    }

    pub(crate) fn current(&self) -> Option<&GenValue> {
        match self {
            Generation::Current(g) => Some(g),
            _ => None,
        }
    }
}

/// What one read returned: the entry bytes and the namespace generation.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub entry: Option<Vec<u8>>,
    pub generation: Generation,
}

/// A read of an entry with tags: the entry, the generation, and each tag's
/// token (`None`: there is none).
#[derive(Debug)]
pub(crate) struct FetchedTagged {
    pub fetched: Fetched,
    pub tokens: Vec<Option<Token>>,
}

/// What a key must hold for a claim or a store to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect<'a> {
    /// Nothing (a claim of an empty key; a store never expects this).
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

/// A reader's claim of a key before it computes (see `claim.lua`).
pub(crate) struct Claim<'a> {
    pub entry_key: &'a str,
    pub generation_key: &'a str,
    /// What the reader found under the key.
    pub expect: Expect<'a>,
    /// The lease's nonce (the lease's identity: magic and nonce).
    pub nonce: Token,
    /// A lease others wait for (`lock = true`), or one they do not.
    pub others_wait: bool,
    /// Until when others wait for the lease.
    pub lease: Duration,
    /// How long the lease's key lives (longer: see `claim.lua`).
    pub hold: Duration,
    /// Installed as the generation when the namespace has none.
    pub fresh_generation: Token,
    pub generation_ttl: Duration,
    /// A writer's claim (`#[cache_put]`): the key is taken whatever it
    /// holds, but a live fence (`expect` is not compared, and nobody's
    /// lease is waited for), and its notice published (local tiers drop
    /// the old value).
    pub writer: Option<Notice<'a>>,
    /// A writer's claim also bumps the key's bucket tokens (see
    /// `cache/track.rs`).
    pub buckets: Option<Buckets<'a>>,
}

/// The tokens a change of one key bumps (see `cache/track.rs`): its
/// bucket's and its namespace's any-key token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Buckets<'a> {
    pub key: &'a str,
    pub any: &'a str,
}

/// What a claim got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// The key is this reader's: compute, and store under `generation`
    /// over exactly `lease`.
    Taken {
        generation: GenValue,
        lease: Vec<u8>,
        /// The lease replaced exactly what the reader read (`expect`), not
        /// an expired lease or fence in its place.
        replaced_read: bool,
    },
    /// Another caller's live lease is on the key: wait for its entry.
    Held,
    /// A transaction scope's fence stands: compute, do not store.
    Fenced,
    /// The key changed since it was read: read again.
    Changed,
}

/// The message an invalidation publishes (in the same script), for the
/// other processes' generation views and local tiers (see `coherence`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notice<'a> {
    pub channel: &'a str,
    pub namespace: &'a str,
}

/// A compare-and-set store of one entry.
pub(crate) struct Store<'a> {
    pub entry_key: &'a str,
    pub generation_key: &'a str,
    /// What the entry key must still hold: the reader's lease, or (a
    /// refresh) the identity of the entry it refreshes.
    pub expect: Expect<'a>,
    /// The generation the reader claimed or read before computing.
    pub generation: GenValue,
    pub ttl: Duration,
    /// Entry bytes after magic and generation; with `restore`, the whole
    /// entry, stored as it is (its expiry included).
    pub tail: &'a [u8],
    /// A fail-safe restore: the entry the lease replaced goes back.
    pub restore: bool,
    /// An entry with deps (magic `0xCE`, see `entry/mod.rs`).
    pub deps: bool,
    /// A put's store also bumps the key's bucket tokens to this value.
    pub bump: Option<(Buckets<'a>, Token)>,
}

/// A change of a namespace's generation or of one entry (see
/// `generation.lua` and `tombstone.lua`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// Invalidate now.
    Invalidate,
    /// A transaction scope begins to hold a fence: invalidate, and let
    /// nothing be stored until it ends or `ttl` passes without a renewal.
    Fence { holder: &'a Token, ttl: Duration },
    /// The scope is still running.
    Renew { holder: &'a Token, ttl: Duration },
    /// The scope ended (after its commit or rollback): invalidate once more,
    /// and lift the fence if no other scope holds it.
    End { holder: &'a Token },
    /// The scope ended after its commit, and a put inside it left `put`:
    /// as `End`, but the value is stored instead of a tombstone if nothing
    /// else happened to the key since the put's fence (see `tombstone.lua`).
    EndPut {
        holder: &'a Token,
        put: PutAtEnd<'a>,
    },
}

/// What a put inside a transaction scope stores when the scope ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PutAtEnd<'a> {
    /// The fence's head after the put's own fence.
    pub head: &'a [u8],
    /// The namespace's generation when the put fenced the key.
    pub generation: &'a [u8],
    /// Entry bytes after magic and generation.
    pub tail: &'a [u8],
    pub ttl: Duration,
}

/// What a change of one entry left (see `tombstone.lua`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyChanged {
    /// The fence's head, when the key holds a fence.
    pub head: Option<Vec<u8>>,
    /// The namespace's generation as the change found it.
    pub generation: Option<Vec<u8>>,
    /// An [`Change::EndPut`] stored its value.
    pub stored: bool,
}

impl Change<'_> {
    /// (op, holder, fence ms) as the Lua scripts take them.
    pub(crate) fn script_args(self) -> (&'static str, Token, u64) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        match self {
            Change::Invalidate => ("i", [b'0'; 16], 0),
            Change::Fence { holder, ttl } => ("f", *holder, ms(ttl)),
            Change::Renew { holder, ttl } => ("r", *holder, ms(ttl)),
            Change::End { holder } => ("e", *holder, 0),
            Change::EndPut { holder, .. } => ("p", *holder, 0),
        }
    }
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
    /// A durable invalidation landed on the master, but fewer replicas than
    /// asked for acknowledged it in time (`durable_invalidations`).
    #[error("{acked} of {wanted} replicas acknowledged the invalidation in time")]
    Unreplicated { acked: i64, wanted: u32 },
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
            // The master answered: not an outage.
            BackendError::Unreplicated { .. } => false,
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
    /// Claims a key before computing (see [`Claim`]).
    fn claim(&self, claim: Claim<'_>) -> impl Future<Output = Result<Claimed>> + Send;
    /// Compare-and-set store; `Ok(false)` when the guard refused it.
    fn store(&self, store: Store<'_>) -> impl Future<Output = Result<bool>> + Send;
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
    /// Changes the namespace's generation (`ttl`: the generation key's
    /// life), publishing `notice`.
    fn change_namespace(
        &self,
        generation_key: &str,
        change: Change<'_>,
        ttl: Duration,
        notice: Notice<'_>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Changes one entry (`ttl`: at least this long the tombstone or fence
    /// stays), publishing `notice`.
    fn change_key(
        &self,
        entry_key: &str,
        generation_key: &str,
        buckets: Buckets<'_>,
        change: Change<'_>,
        ttl: Duration,
        notice: Notice<'_>,
    ) -> impl Future<Output = Result<KeyChanged>> + Send;
    /// The entry, the generation and the current values of the entry's
    /// deps (none for an entry without), in one round trip where the deps
    /// share the server (not in Cluster mode: two).
    fn fetch_deps(
        &self,
        entry_key: &str,
        generation_key: &str,
    ) -> impl Future<Output = Result<(Fetched, Vec<Option<Vec<u8>>>)>> + Send;
    /// The values under `keys` (an entry's deps), in one round trip.
    fn values(&self, keys: &[&[u8]]) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send;
    /// Many entries of one namespace and its generation, read together
    /// (one `MGET`: a namespace's keys share one Cluster slot).
    fn fetch_many(
        &self,
        entry_keys: &[String],
        generation_key: &str,
    ) -> impl Future<Output = Result<(Vec<Option<Vec<u8>>>, Generation)>> + Send;
    /// One round trip that touches no key (health check).
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// The entry, the generation and the tokens of the entry's tags
    /// (`tag_keys`, in the entry's slot), in one round trip (no views).
    fn fetch_tagged(
        &self,
        entry_key: &str,
        generation_key: &str,
        tag_keys: &[String],
    ) -> impl Future<Output = Result<FetchedTagged>> + Send;
    /// The tokens under `keys`, each made (from `fresh`) where there is none;
    /// `None` for a tag under a live fence (see `tokens.lua`).
    fn tokens(
        &self,
        keys: &[String],
        fresh: &[Token],
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<Option<Token>>>> + Send;
    /// Changes a tag's token (`Change::EndPut` is `End`), publishing
    /// `notice` (see `tag.lua`).
    fn change_tag(
        &self,
        tag_key: &str,
        change: Change<'_>,
        ttl: Duration,
        notice: Notice<'_>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The backend a cache was built with.
pub(crate) enum AnyBackend {
    Redis(Box<redis::RedisBackend>),
    Memory(memory::MemoryBackend),
}

impl AnyBackend {
    /// Redis Cluster: a namespace's keys live on one node of several.
    pub(crate) fn is_cluster(&self) -> bool {
        match self {
            AnyBackend::Redis(b) => b.is_cluster(),
            AnyBackend::Memory(_) => false,
        }
    }

    /// OpenTelemetry's `db.system.name` of the backend: `redis` (Valkey
    /// and Redis Cluster too), or `memory` for the in-process one.
    pub(crate) fn system(&self) -> &'static str {
        match self {
            AnyBackend::Redis(_) => "redis",
            AnyBackend::Memory(_) => "memory",
        }
    }
}

/// Forwards a call to the backend the cache was built with.
macro_rules! forward {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            AnyBackend::Redis(b) => b.$method($($arg),*).await,
            AnyBackend::Memory(b) => b.$method($($arg),*).await,
        }
    };
}

impl Backend for AnyBackend {
    async fn fetch(
        &self,
        entry_key: &str,
        generation_key: &str,
        views: &[AtomicU64],
    ) -> Result<Fetched> {
        forward!(self.fetch(entry_key, generation_key, views))
    }

    async fn claim(&self, claim: Claim<'_>) -> Result<Claimed> {
        forward!(self.claim(claim))
    }

    async fn store(&self, store: Store<'_>) -> Result<bool> {
        forward!(self.store(store))
    }

    async fn release(
        &self,
        entry_key: &str,
        lease: &[u8],
        tombstone: &[u8],
        ttl: Duration,
    ) -> Result<()> {
        forward!(self.release(entry_key, lease, tombstone, ttl))
    }

    async fn try_lock(&self, key: &str, token: &[u8], ttl: Duration) -> Result<bool> {
        forward!(self.try_lock(key, token, ttl))
    }

    async fn change_namespace(
        &self,
        generation_key: &str,
        change: Change<'_>,
        ttl: Duration,
        notice: Notice<'_>,
    ) -> Result<()> {
        forward!(self.change_namespace(generation_key, change, ttl, notice))
    }

    async fn change_key(
        &self,
        entry_key: &str,
        generation_key: &str,
        buckets: Buckets<'_>,
        change: Change<'_>,
        ttl: Duration,
        notice: Notice<'_>,
    ) -> Result<KeyChanged> {
        forward!(self.change_key(entry_key, generation_key, buckets, change, ttl, notice))
    }

    async fn values(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        forward!(self.values(keys))
    }

    async fn fetch_many(
        &self,
        entry_keys: &[String],
        generation_key: &str,
    ) -> Result<(Vec<Option<Vec<u8>>>, Generation)> {
        forward!(self.fetch_many(entry_keys, generation_key))
    }

    async fn fetch_deps(
        &self,
        entry_key: &str,
        generation_key: &str,
    ) -> Result<(Fetched, Vec<Option<Vec<u8>>>)> {
        forward!(self.fetch_deps(entry_key, generation_key))
    }

    async fn ping(&self) -> Result<()> {
        forward!(self.ping())
    }

    async fn fetch_tagged(
        &self,
        entry_key: &str,
        generation_key: &str,
        tag_keys: &[String],
    ) -> Result<FetchedTagged> {
        forward!(self.fetch_tagged(entry_key, generation_key, tag_keys))
    }

    async fn tokens(
        &self,
        keys: &[String],
        fresh: &[Token],
        ttl: Duration,
    ) -> Result<Vec<Option<Token>>> {
        forward!(self.tokens(keys, fresh, ttl))
    }

    async fn change_tag(
        &self,
        tag_key: &str,
        change: Change<'_>,
        ttl: Duration,
        notice: Notice<'_>,
    ) -> Result<()> {
        forward!(self.change_tag(tag_key, change, ttl, notice))
    }
}
