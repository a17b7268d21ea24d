//! Redis backend: kept multiplexed RESP3 connections made by deadpool-redis.
//!
//! deadpool-redis recycles a connection with `UNWATCH` + `PING` on every
//! `pool.get()`, which would double the cost of a hit. A redis-rs
//! multiplexed connection is shared by any number of tasks, so the backend
//! keeps a few connections in slots and the hit path clones one (an `Arc`
//! clone) and pays exactly one round trip. Each connection is made by its
//! own deadpool-redis `Manager` (with the connect and response timeouts and
//! a push handler that knows which connection it serves), subscribes to the
//! invalidation channel (see `channel.rs`), and lives in its slot until it
//! breaks; then the slot is refilled in a background task, so a caller never
//! waits for a reconnect longer than the operation timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_redis::{Manager, Pool, Runtime};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, Script};
use tokio::sync::Notify;

use super::{Acquire, Backend, BackendError, Expect, Fetched, Notice, Result, Store};
use crate::channel::{ConnSink, Hub, token_value};
use crate::entry::{self, Token};

/// Compare-and-set store. KEYS: entry, generation. ARGV: expect mode ("0":
/// key must be empty, "1": key must start with ARGV[2], "2": key must be
/// exactly ARGV[2]), expected bytes, generation seen before computing
/// ("" = none), fresh generation, PX milliseconds, entry tail. Returns 1
/// when stored, 0 when refused. The key keeps at least its remaining life.
const STORE_SCRIPT: &str = r"
local g = redis.call('GET', KEYS[2])
if g and string.len(g) ~= 16 then g = false end
if not g then
  if ARGV[3] ~= '' then return 0 end
  redis.call('SET', KEYS[2], ARGV[4])
  g = ARGV[4]
elseif g ~= ARGV[3] then
  return 0
end
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if cur then return 0 end
elseif ARGV[1] == '2' then
  if cur ~= ARGV[2] then return 0 end
elseif (not cur) or string.sub(cur, 1, string.len(ARGV[2])) ~= ARGV[2] then
  return 0
end
local px = math.max(tonumber(ARGV[5]), redis.call('PTTL', KEYS[1]))
redis.call('SET', KEYS[1], '\202' .. g .. ARGV[6], 'PX', px)
return 1
";

/// Takes an entry's lease. KEYS: entry. ARGV: expect mode ("0": empty,
/// "1": starts with ARGV[2]), expected prefix, lease, PX milliseconds.
/// Returns 1 (acquired) or 0 (the key changed since it was read).
const ACQUIRE_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
local ok
if ARGV[1] == '0' then
  ok = not cur
else
  ok = cur and string.sub(cur, 1, string.len(ARGV[2])) == ARGV[2]
end
if not ok then return 0 end
local px = math.max(tonumber(ARGV[4]), redis.call('PTTL', KEYS[1]))
redis.call('SET', KEYS[1], ARGV[3], 'PX', px)
return 1
";

/// Replaces the caller's lease with a tombstone. KEYS: entry. ARGV: lease,
/// tombstone, PX milliseconds.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local px = math.max(tonumber(ARGV[3]), redis.call('PTTL', KEYS[1]))
  redis.call('SET', KEYS[1], ARGV[2], 'PX', px)
end
return 1
";

/// Key invalidation: a tombstone over whatever is there, and its notice.
/// KEYS: entry. ARGV: tombstone, PX milliseconds, channel, message.
/// Returns 1, or 0 when the notice was refused (an ACL without the channel).
const TOMBSTONE_SCRIPT: &str = r"
local px = math.max(tonumber(ARGV[2]), redis.call('PTTL', KEYS[1]))
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
if type(redis.pcall('PUBLISH', ARGV[3], ARGV[4])) == 'table' then return 0 end
return 1
";

/// Namespace invalidation: a new generation, and its notice. KEYS:
/// generation. ARGV: token, channel, message. Returns 1, or 0 when the
/// notice was refused.
const GENERATION_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
if type(redis.pcall('PUBLISH', ARGV[2], ARGV[3])) == 'table' then return 0 end
return 1
";

pub(crate) struct RedisConfig {
    pub url: String,
    pub connections: usize,
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
    pub hub: Arc<Hub>,
}

struct Slot {
    /// (epoch, connection): the epoch tells a stale "this broke" report from
    /// one about the current connection.
    conn: RwLock<Option<(u64, MultiplexedConnection)>>,
    connecting: AtomicBool,
    /// Woken when a connect attempt for this slot ends.
    connected: Notify,
}

struct Shared {
    info: ConnectionInfo,
    conn_config: AsyncConnectionConfig,
    hub: Arc<Hub>,
    slots: Box<[Slot]>,
    epoch: AtomicU64,
    connect_timeout: Duration,
    /// A subscription was refused once (logged once).
    refused: AtomicBool,
    /// A notice was refused once (logged once).
    notice_refused: AtomicBool,
}

pub(crate) struct RedisBackend {
    shared: Arc<Shared>,
    next: AtomicUsize,
    op_timeout: Duration,
    store_script: Script,
    acquire_script: Script,
    release_script: Script,
    tombstone_script: Script,
    generation_script: Script,
}

impl RedisBackend {
    /// Checks the URL and sets the connections up; no I/O.
    pub(crate) fn new(cfg: RedisConfig) -> std::result::Result<Self, String> {
        let info = cfg
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("invalid Redis URL: {e}"))?;
        // RESP3: the connections that serve commands also receive the
        // invalidation channel's messages, in order with the replies.
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.op_timeout));
        let connections = cfg.connections.max(1);
        let slots = (0..connections)
            .map(|_| Slot {
                conn: RwLock::new(None),
                connecting: AtomicBool::new(false),
                connected: Notify::new(),
            })
            .collect();
        Ok(RedisBackend {
            shared: Arc::new(Shared {
                info,
                conn_config,
                hub: cfg.hub,
                slots,
                epoch: AtomicU64::new(0),
                connect_timeout: cfg.connect_timeout,
                refused: AtomicBool::new(false),
                notice_refused: AtomicBool::new(false),
            }),
            next: AtomicUsize::new(0),
            op_timeout: cfg.op_timeout,
            store_script: Script::new(STORE_SCRIPT),
            acquire_script: Script::new(ACQUIRE_SCRIPT),
            release_script: Script::new(RELEASE_SCRIPT),
            tombstone_script: Script::new(TOMBSTONE_SCRIPT),
            generation_script: Script::new(GENERATION_SCRIPT),
        })
    }

    /// A connection from a slot: a clone of a kept multiplexed connection, or
    /// (slot empty) one being established in the background, waited for at
    /// most the operation timeout.
    async fn conn(&self) -> Result<(usize, u64, MultiplexedConnection)> {
        let n = self.shared.slots.len();
        let i = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Relaxed) % n
        };
        if let Some((epoch, c)) = read_slot(&self.shared.slots[i]) {
            return Ok((i, epoch, c));
        }
        self.reconnect(i).await
    }

    async fn reconnect(&self, i: usize) -> Result<(usize, u64, MultiplexedConnection)> {
        let slot = &self.shared.slots[i];
        if slot
            .connecting
            .compare_exchange(false, true, Relaxed, Relaxed)
            .is_err()
        {
            // Another caller is connecting this slot: wait for it (bounded).
            let notified = slot.connected.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if slot.connecting.load(Relaxed) {
                let _ = tokio::time::timeout(self.op_timeout, notified).await;
            }
            return read_slot(slot)
                .map(|(epoch, c)| (i, epoch, c))
                .ok_or(BackendError::Unavailable("cannot connect to Redis"));
        }
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let epoch = shared.epoch.fetch_add(1, Relaxed) + 1;
            let got = tokio::time::timeout(shared.connect_timeout, shared.connect(i, epoch)).await;
            let slot = &shared.slots[i];
            let result = match got {
                Ok(Ok(conn)) => {
                    if let Ok(mut w) = slot.conn.write() {
                        *w = Some((epoch, conn.clone()));
                    }
                    Ok((i, epoch, conn))
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(BackendError::Timeout),
            };
            slot.connecting.store(false, Relaxed);
            slot.connected.notify_waiters();
            result
        });
        match tokio::time::timeout(self.op_timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(_join)) => Err(BackendError::Unavailable("connect task failed")),
            Err(_) => Err(BackendError::Timeout),
        }
    }

    /// Forgets a connection that broke (so the next call reconnects).
    fn check(&self, slot: usize, epoch: u64, err: &redis::RedisError) {
        // A response timeout leaves the multiplexed connection usable: keep it.
        if err.is_timeout()
            || !(err.is_unrecoverable_error() || err.is_connection_dropped() || err.is_io_error())
        {
            return;
        }
        if let Ok(mut w) = self.shared.slots[slot].conn.write()
            && w.as_ref().is_some_and(|(e, _)| *e == epoch)
        {
            *w = None;
            tracing::debug!(slot, error = %err, "cachet: dropped a broken Redis connection");
        }
    }

    /// The invalidation landed but Redis refused its notice (an ACL without
    /// the channel). Processes that can subscribe would keep their views and
    /// local tiers: say so, loudly, once.
    fn notice_refused(&self, published: i64, notice: Notice<'_>) {
        if published == 0 && !self.shared.notice_refused.swap(true, Relaxed) {
            tracing::error!(
                channel = notice.channel,
                "cachet: Redis refused to publish an invalidation notice (ACL): \
                 processes allowed to subscribe may serve invalidated entries from their \
                 views and local tiers; grant every cache user `&<prefix>:*`"
            );
        }
    }

    async fn run<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (slot, epoch, conn) = self.conn().await?;
        match op(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.check(slot, epoch, &e);
                Err(e.into())
            }
        }
    }
}

impl Shared {
    /// Makes connection `epoch` for slot `i` and subscribes it.
    async fn connect(&self, i: usize, epoch: u64) -> Result<MultiplexedConnection> {
        self.hub.begin_connection(i, epoch);
        let sink = ConnSink {
            hub: Arc::clone(&self.hub),
            slot: i,
            conn: epoch,
        };
        let manager = Manager::new_with_config(
            self.info.clone(),
            self.conn_config.clone().set_push_sender(sink),
        )
        .map_err(BackendError::from)?;
        // A pool of one, for deadpool-redis's connect timeouts; the
        // connection is taken out of it and kept.
        let pool = Pool::builder(manager)
            .max_size(1)
            .create_timeout(Some(self.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|_| BackendError::Unavailable("cannot build a Redis connection pool"))?;
        let obj = pool.get().await.map_err(|e| {
            tracing::debug!(slot = i, error = %e, "cachet: cannot connect to Redis");
            BackendError::Unavailable(pool_error(&e))
        })?;
        let mut conn = deadpool_redis::Connection::take(obj);
        match conn.subscribe(self.hub.channel()).await {
            Ok(()) => self.hub.subscribed(i, epoch),
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                return Err(e.into());
            }
            Err(e) => {
                if !self.refused.swap(true, Relaxed) {
                    tracing::warn!(channel = self.hub.channel(), error = %e,
                        "cachet: cannot subscribe to the invalidation channel: the local tier stays off \
                         and hits read the generation too (an ACL needs `&<prefix>:*`)");
                }
            }
        }
        Ok(conn)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn read_slot(slot: &Slot) -> Option<(u64, MultiplexedConnection)> {
    slot.conn.read().ok()?.clone()
}

fn pool_error(e: &deadpool_redis::PoolError) -> &'static str {
    use deadpool_redis::PoolError;
    match e {
        PoolError::Timeout(_) => "timed out connecting to Redis",
        PoolError::Backend(_) => "cannot connect to Redis",
        PoolError::Closed => "the Redis pool is closed",
        PoolError::NoRuntimeSpecified => "no async runtime for the Redis pool",
        PoolError::PostCreateHook(_) => "Redis connection setup failed",
    }
}

impl Backend for RedisBackend {
    async fn fetch(
        &self,
        entry_key: &str,
        generation_key: &str,
        views: &[AtomicU64],
    ) -> Result<Fetched> {
        let (slot, epoch, mut conn) = self.conn().await?;
        let hub = &self.shared.hub;
        let view = views.get(slot);
        if view.is_some_and(|v| v.load(SeqCst) != 0) {
            // The generation is known on this connection: read the entry only.
            let got: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
                .arg(entry_key)
                .query_async(&mut conn)
                .await;
            let entry = got.map_err(|e| {
                self.check(slot, epoch, &e);
                BackendError::from(e)
            })?;
            // Read after the reply: every push before it has been applied.
            let known = view.map_or(0, |v| v.load(SeqCst));
            if known != 0
                && hub.is_live(slot, epoch)
                && let Some(g) = entry.as_deref().and_then(entry::generation_of)
                && token_value(g) == known
            {
                let generation = Some(g.to_vec());
                return Ok(Fetched { entry, generation });
            }
            // Not live by the view: read both, which also re-learns the view.
        }
        let pushes_before = hub.pushes(slot);
        type Both = (Option<Vec<u8>>, Option<Vec<u8>>);
        let got: redis::RedisResult<Both> = redis::cmd("MGET")
            .arg(entry_key)
            .arg(generation_key)
            .query_async(&mut conn)
            .await;
        let (entry, generation) = got.map_err(|e| {
            self.check(slot, epoch, &e);
            BackendError::from(e)
        })?;
        if let (Some(v), Some(g)) = (view, generation.as_deref()) {
            hub.learn(slot, epoch, pushes_before, v, token_value(g));
        }
        Ok(Fetched { entry, generation })
    }

    async fn store(&self, s: Store<'_>) -> Result<bool> {
        let px = millis(s.ttl);
        let script = &self.store_script;
        self.run(|mut c| async move {
            let (mode, expect) = s.expect.script_args();
            let stored: i64 = script
                .key(s.entry_key)
                .key(s.generation_key)
                .arg(mode)
                .arg(expect)
                .arg(s.seen_generation.unwrap_or_default())
                .arg(&s.fresh_generation[..])
                .arg(px)
                .arg(s.tail)
                .invoke_async(&mut c)
                .await?;
            Ok(stored == 1)
        })
        .await
    }

    async fn set_generation(
        &self,
        generation_key: &str,
        token: &Token,
        notice: Notice<'_>,
    ) -> Result<()> {
        let script = &self.generation_script;
        let published = self
            .run(|mut c| async move {
                script
                    .key(generation_key)
                    .arg(&token[..])
                    .arg(notice.channel)
                    .arg(notice.message)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        self.notice_refused(published, notice);
        Ok(())
    }

    async fn acquire(
        &self,
        entry_key: &str,
        expect: Expect<'_>,
        lease: &[u8],
        ttl: Duration,
    ) -> Result<Acquire> {
        let px = millis(ttl);
        let script = &self.acquire_script;
        self.run(|mut c| async move {
            let (mode, expect) = expect.script_args();
            let r: i64 = script
                .key(entry_key)
                .arg(mode)
                .arg(expect)
                .arg(lease)
                .arg(px)
                .invoke_async(&mut c)
                .await?;
            Ok(if r == 1 {
                Acquire::Acquired
            } else {
                Acquire::Changed
            })
        })
        .await
    }

    async fn release(
        &self,
        entry_key: &str,
        lease: &[u8],
        tombstone: &[u8],
        ttl: Duration,
    ) -> Result<()> {
        let script = &self.release_script;
        let px = millis(ttl);
        self.run(|mut c| async move {
            script
                .key(entry_key)
                .arg(lease)
                .arg(tombstone)
                .arg(px)
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn try_lock(&self, key: &str, token: &[u8], ttl: Duration) -> Result<bool> {
        let px = millis(ttl);
        self.run(|mut c| async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(px)
                .query_async(&mut c)
                .await?;
            Ok(set.is_some())
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    async fn put_tombstone(
        &self,
        entry_key: &str,
        tombstone: &[u8],
        ttl: Duration,
        notice: Notice<'_>,
    ) -> Result<()> {
        let px = millis(ttl);
        let script = &self.tombstone_script;
        let published = self
            .run(|mut c| async move {
                script
                    .key(entry_key)
                    .arg(tombstone)
                    .arg(px)
                    .arg(notice.channel)
                    .arg(notice.message)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        self.notice_refused(published, notice);
        Ok(())
    }
}
