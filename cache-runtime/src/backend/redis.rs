//! Redis backend: kept multiplexed RESP3 connections made by deadpool-redis,
//! or (cluster mode) one redis-rs cluster connection.
//!
//! deadpool-redis recycles a connection with `UNWATCH` + `PING` on every
//! `pool.get()`, which would double the cost of a hit. A redis-rs
//! multiplexed connection is shared by any number of tasks, so the backend
//! keeps a few connections in slots and the hit path clones one (an `Arc`
//! clone) and pays exactly one round trip. Each connection is made by its
//! own deadpool-redis `Manager` (with the connect timeout and a push handler
//! that knows which connection it serves), subscribes to the invalidation
//! channel (see `channel.rs`), and lives in its slot until it breaks; then
//! the slot is refilled in a background task, so a caller never waits for a
//! reconnect longer than the operation timeout.
//!
//! Every command is bounded by the operation timeout here rather than by
//! redis-rs's response timeout, which makes and tears down a tokio timer per
//! command: about a tenth of the throughput at 64 tasks. A hit's `GET`
//! reuses the lent handle's timer (moved forward per request; remade when
//! the handle is used on another runtime than the timer's), everything
//! else takes a `tokio::time::timeout`.
//!
//! **Cluster mode** keeps one slot holding one redis-rs `ClusterConnection`
//! (one multiplexed connection per node behind a routing task, cheap to
//! clone), made with `ClusterClientBuilder` and its connect, response and
//! overall timeouts, so no call waits longer than the operation timeout.
//! deadpool-redis's `cluster` feature is not used: its `Manager` takes no
//! timeouts, retries or TLS certificates, and its recycle `PING`s every
//! master on each `pool.get()`. Every key a command or script touches carries
//! the namespace's hash tag (`prefix:{ns}:...`), so an `MGET` of entry and
//! generation, and every script, run on the one master of that slot (never
//! `CROSSSLOT`). The cluster connection does not deliver pushes in order with
//! replies (they take a channel of their own inside redis-rs), so it does not
//! subscribe: generation views and the local tier stay off (see
//! `channel.rs`), and every hit reads entry and generation with one `MGET`.
//! It repairs itself (node reconnects, slot map refreshes, the seeds again);
//! it is replaced, in the background while it keeps serving, only when it
//! has not answered a single call for `REPLACE_AFTER`.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use deadpool_redis::{Manager, Pool, Runtime};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, ProtocolVersion,
    RedisFuture, Script, Value,
};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::spare::{self, Lent};
use super::{Acquire, Backend, BackendError, Expect, Fetched, Notice, Result, Store};
use crate::channel::{ConnSink, Hub, token_bytes, token_value};
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
    /// The server's URL, or (cluster mode) the seed nodes' URLs.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub connections: usize,
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
    /// PEM of the CA(s) to trust for `rediss://` (none: the system's roots).
    pub tls_root_cert: Option<Vec<u8>>,
    pub hub: Arc<Hub>,
}

/// Cluster mode: a connection that has not answered one call for this long
/// (or the connect timeout twice, if longer) while calls kept failing is
/// replaced; at most one replacement per such period.
const REPLACE_AFTER: Duration = Duration::from_secs(2);

/// Retries of one request inside the cluster connection (MOVED, ASK,
/// TRYAGAIN, a node reconnecting), and their waits, all within the overall
/// response timeout (the operation timeout).
const CLUSTER_RETRIES: u32 = 2;
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (10, 100);

/// How connections are made.
enum Mode {
    /// One server: deadpool-redis makes each slot's connection.
    Node {
        info: ConnectionInfo,
        conn_config: AsyncConnectionConfig,
    },
    /// Redis Cluster: one slot, one cluster connection.
    Cluster { client: ClusterClient },
}

/// A kept connection, cloned per call.
#[derive(Clone)]
pub(crate) enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A clone of a kept connection as calls borrow it, with the command
/// buffer and the timer its `GET`s reuse. Boxed: lending one moves a
/// pointer.
pub(crate) struct Handle {
    conn: Conn,
    get: Cmd,
    /// The `GET`'s deadline, with the runtime whose timer it is on: one
    /// timer per handle, moved forward per request, instead of one made and
    /// torn down per request. Made by the first `GET`.
    deadline: Option<(tokio::runtime::Id, Pin<Box<Sleep>>)>,
}

fn handle(conn: Conn) -> Box<Handle> {
    Box::new(Handle {
        conn,
        get: Cmd::new(),
        deadline: None,
    })
}

/// What a command that ran out of time fails with (a timeout, to `check`
/// and the breaker, like redis-rs's own response timeout).
fn timed_out() -> redis::RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
}

/// A command other than the hit's `GET`, bounded by `timeout`.
async fn bounded<T>(
    timeout: Duration,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(timeout, command)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

impl Handle {
    /// `GET key`, the hit's one command, bounded by `timeout`. Cheaper than
    /// `query_async`, which every hand-written cache-aside pays: the command
    /// buffer and the timer are reused, and a node connection is called
    /// directly (no boxed future).
    async fn get(&mut self, key: &str, timeout: Duration) -> redis::RedisResult<Option<Vec<u8>>> {
        let Handle {
            conn,
            get,
            deadline,
        } = self;
        get.clear();
        get.arg("GET").arg(key);
        // A timer is polled only on the runtime it belongs to: another
        // one, on which the handle was used before, may have shut down since.
        let here = tokio::runtime::Handle::try_current()
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Client, "cache-aside needs a tokio runtime"))
            })?
            .id();
        let deadline = match deadline {
            Some((runtime, sleep)) if *runtime == here => {
                sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
                sleep
            }
            _ => {
                &mut deadline
                    .insert((here, Box::pin(tokio::time::sleep(timeout))))
                    .1
            }
        };
        let send = async {
            match conn {
                Conn::Node(c) => c.send_packed_command(get).await,
                Conn::Cluster(c) => c.req_packed_command(get).await,
            }
        };
        let mut send = pin!(send);
        let value = poll_fn(|cx| {
            if let Poll::Ready(v) = send.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            deadline.as_mut().poll(cx).map(|()| Err(timed_out()))
        })
        .await?;
        match value {
            Value::BulkString(bytes) => Ok(Some(bytes)),
            Value::Nil => Ok(None),
            other => Ok(redis::from_redis_value(other.extract_error()?)?),
        }
    }
}

impl ConnectionLike for Lent<'_, Box<Handle>> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        (**self).conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        (**self).conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        (**self).conn.get_db()
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            // Routed by the command's keys: the first key's slot for
            // EVALSHA, one node for an MGET within one slot.
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

spare::spares!(SPARES, Box<Handle>);

struct Slot {
    /// (epoch, connection): the epoch tells a stale "this broke" report from
    /// one about the current connection.
    conn: RwLock<Option<(u64, Conn)>>,
    /// Process-unique id, for the per-thread spare clones (`spare.rs`).
    id: u64,
    /// The epoch of the connection in `conn` (0: none), readable without the lock.
    current: AtomicU64,
    connecting: AtomicBool,
    /// Woken when a connect attempt for this slot ends.
    connected: Notify,
}

struct Shared {
    mode: Mode,
    hub: Arc<Hub>,
    slots: Box<[Slot]>,
    epoch: AtomicU64,
    connect_timeout: Duration,
    /// A subscription was refused once (logged once).
    refused: AtomicBool,
    /// A notice was refused once (logged once).
    notice_refused: AtomicBool,
    /// Cluster mode: when a call last succeeded (ms since `started`), or a
    /// replacement was last tried.
    last_ok_ms: AtomicU64,
    started: Instant,
    replace_after: Duration,
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
    /// Checks the URL(s) and sets the connections up; no I/O.
    pub(crate) fn new(cfg: RedisConfig) -> std::result::Result<Self, String> {
        let root_cert = cfg.tls_root_cert.as_deref();
        let (mode, connections) = if cfg.cluster {
            let client = cluster_client(&cfg.urls, root_cert, cfg.op_timeout, cfg.connect_timeout)?;
            (Mode::Cluster { client }, 1)
        } else {
            let url = cfg.urls.first().map_or("", String::as_str);
            let conn_config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(cfg.connect_timeout))
                // Bounded per command by cache-aside (`Handle::get`, `run`).
                .set_response_timeout(None);
            let info = node_info(url, root_cert)?;
            (Mode::Node { info, conn_config }, cfg.connections.max(1))
        };
        let slots = (0..connections)
            .map(|_| Slot {
                conn: RwLock::new(None),
                id: spare::slot_id(),
                current: AtomicU64::new(0),
                connecting: AtomicBool::new(false),
                connected: Notify::new(),
            })
            .collect();
        Ok(RedisBackend {
            shared: Arc::new(Shared {
                mode,
                hub: cfg.hub,
                slots,
                epoch: AtomicU64::new(0),
                connect_timeout: cfg.connect_timeout,
                refused: AtomicBool::new(false),
                notice_refused: AtomicBool::new(false),
                last_ok_ms: AtomicU64::new(0),
                started: Instant::now(),
                replace_after: REPLACE_AFTER.max(cfg.connect_timeout.saturating_mul(2)),
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

    fn is_cluster(&self) -> bool {
        matches!(self.shared.mode, Mode::Cluster { .. })
    }

    /// A connection from a slot: a clone of a kept multiplexed connection, or
    /// (slot empty) one being established in the background, waited for at
    /// most the operation timeout.
    async fn conn(&self) -> Result<(usize, Lent<'_, Box<Handle>>)> {
        let n = self.shared.slots.len();
        let i = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Relaxed) % n
        };
        let slot = &self.shared.slots[i];
        let lend = |epoch, c| spare::lend(&SPARES, c, slot.id, epoch, &slot.current);
        // A spare clone of this thread: no lock, no shared counter.
        let current = slot.current.load(Relaxed);
        if current != 0
            && let Some(c) = spare::take(&SPARES, slot.id, current)
        {
            return Ok((i, lend(current, c)));
        }
        if let Some((epoch, c)) = read_slot(slot) {
            return Ok((i, lend(epoch, handle(c))));
        }
        // Boxed: rare, and it would make every call's future larger.
        let (i, epoch, c) = Box::pin(self.reconnect(i)).await?;
        Ok((i, lend(epoch, handle(c))))
    }

    async fn reconnect(&self, i: usize) -> Result<(usize, u64, Conn)> {
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
        // Another caller may have filled the slot since this one found it
        // empty: use that connection rather than replace a working one.
        if let Some((epoch, c)) = read_slot(slot) {
            slot.connecting.store(false, Relaxed);
            slot.connected.notify_waiters();
            return Ok((i, epoch, c));
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
                        slot.current.store(epoch, Relaxed);
                    }
                    shared.note_ok();
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
        if self.is_cluster() {
            self.check_cluster(err);
            return;
        }
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
            self.shared.slots[slot].current.store(0, Relaxed);
            tracing::debug!(slot, error = %err, "cache-aside: dropped a broken Redis connection");
        }
    }

    /// Cluster mode: one failed call says little (a master failing over, a
    /// slot moving; the cluster connection repairs itself), so the
    /// connection is kept. Only when no call at all has succeeded for
    /// `replace_after` is a new one made, in the background, while the old
    /// one keeps serving: that covers a routing task that died or is stuck.
    fn check_cluster(&self, err: &redis::RedisError) {
        let outage = err.is_timeout()
            || err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
            || err.is_cluster_error();
        let shared = &self.shared;
        let now = shared.now_ms();
        let quiet = now.saturating_sub(shared.last_ok_ms.load(Relaxed));
        if !outage || quiet < millis(shared.replace_after) {
            return;
        }
        let slot = &shared.slots[0];
        if slot
            .connecting
            .compare_exchange(false, true, Relaxed, Relaxed)
            .is_err()
        {
            return;
        }
        // The next attempt no sooner than `replace_after` from now.
        shared.last_ok_ms.store(now, Relaxed);
        tracing::debug!(error = %err, "cache-aside: replacing the Redis Cluster connection");
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let epoch = shared.epoch.fetch_add(1, Relaxed) + 1;
            let got = tokio::time::timeout(shared.connect_timeout, shared.connect(0, epoch)).await;
            let slot = &shared.slots[0];
            if let Ok(Ok(conn)) = got
                && let Ok(mut w) = slot.conn.write()
            {
                *w = Some((epoch, conn));
                slot.current.store(epoch, Relaxed);
                shared.note_ok();
            }
            slot.connecting.store(false, Relaxed);
            slot.connected.notify_waiters();
        });
    }

    /// The invalidation landed but Redis refused its notice (an ACL without
    /// the channel). Processes that can subscribe would keep their views and
    /// local tiers: say so, loudly, once.
    fn notice_refused(&self, published: i64, notice: Notice<'_>) {
        if published == 0 && !self.shared.notice_refused.swap(true, Relaxed) {
            tracing::error!(
                channel = notice.channel,
                "cache-aside: Redis refused to publish an invalidation notice (ACL): \
                 processes allowed to subscribe may serve invalidated entries from their \
                 views and local tiers; grant every cache user `&<prefix>:*`"
            );
        }
    }

    /// Cluster mode: notes that a call succeeded.
    fn ok(&self) {
        if self.is_cluster() {
            self.shared.note_ok();
        }
    }

    async fn run<'a, T, F, Fut>(&'a self, op: F) -> Result<T>
    where
        F: FnOnce(Lent<'a, Box<Handle>>) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (slot, conn) = self.conn().await?;
        let epoch = conn.epoch();
        // Node connections have no response timeout of their own (see
        // `Handle::get`): bound the command here.
        match bounded(self.op_timeout, op(conn)).await {
            Ok(v) => {
                self.ok();
                Ok(v)
            }
            Err(e) => {
                self.check(slot, epoch, &e);
                Err(e.into())
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Threads drop their spare clones of these connections.
        spare::retire(self.slots.iter().map(|s| s.id));
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn note_ok(&self) {
        self.last_ok_ms.store(self.now_ms(), Relaxed);
    }

    /// Makes connection `epoch` for slot `i` (subscribed, on one server).
    async fn connect(&self, i: usize, epoch: u64) -> Result<Conn> {
        match &self.mode {
            Mode::Node { info, conn_config } => self
                .connect_node(info, conn_config, i, epoch)
                .await
                .map(Conn::Node),
            Mode::Cluster { client } => match client.get_async_connection().await {
                Ok(c) => Ok(Conn::Cluster(c)),
                Err(e) => {
                    tracing::debug!(error = %e, "cache-aside: cannot connect to the Redis Cluster");
                    Err(e.into())
                }
            },
        }
    }

    /// Makes connection `epoch` for slot `i` and subscribes it.
    async fn connect_node(
        &self,
        info: &ConnectionInfo,
        conn_config: &AsyncConnectionConfig,
        i: usize,
        epoch: u64,
    ) -> Result<MultiplexedConnection> {
        self.hub.begin_connection(i, epoch);
        let sink = ConnSink {
            hub: Arc::clone(&self.hub),
            slot: i,
            conn: epoch,
        };
        let manager =
            Manager::new_with_config(info.clone(), conn_config.clone().set_push_sender(sink))
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
            tracing::debug!(slot = i, error = %e, "cache-aside: cannot connect to Redis");
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
                        "cache-aside: cannot subscribe to the invalidation channel: the local tier stays off \
                         and hits read the generation too (an ACL needs `&<prefix>:*`)");
                }
            }
        }
        Ok(conn)
    }
}

/// Does the URL ask for TLS?
fn is_tls_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("rediss://") || lower.starts_with("valkeys://")
}

/// TLS needs the `tls` feature; a root certificate needs a TLS URL.
fn check_tls(urls: &[String], root_cert: Option<&[u8]>) -> std::result::Result<(), String> {
    let tls = urls.iter().any(|u| is_tls_url(u));
    if tls && !cfg!(feature = "tls") {
        return Err(
            "a `rediss://` URL needs TLS support: enable the `tls` feature of cache-aside".into(),
        );
    }
    if root_cert.is_some() && !cfg!(feature = "tls") {
        return Err("tls_root_cert needs the `tls` feature of cache-aside".into());
    }
    if root_cert.is_some() && !urls.iter().all(|u| is_tls_url(u)) {
        return Err("tls_root_cert needs `rediss://` URLs".into());
    }
    if tls {
        // redis enables rustls without a crypto provider; pick ring, once
        // per process. An `Err` means another one is installed: fine.
        #[cfg(feature = "tls")]
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Ok(())
}

/// The trusted CA(s): at least one certificate, and only well-formed ones
/// (redis-rs would take a PEM with none, and then trust nothing).
#[cfg(feature = "tls")]
fn root_certs(pem: &[u8]) -> std::result::Result<redis::TlsCertificates, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| format!("invalid TLS root certificate: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("invalid TLS root certificate: no PEM certificate in it".into());
    }
    Ok(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    })
}

/// One server's connection info: RESP3, and the trusted CA if any.
fn node_info(url: &str, root_cert: Option<&[u8]>) -> std::result::Result<ConnectionInfo, String> {
    check_tls(&[url.to_owned()], root_cert)?;
    let info = url
        .into_connection_info()
        .map_err(|e| format!("invalid Redis URL: {e}"))?;
    // RESP3: the connections that serve commands also receive the
    // invalidation channel's messages, in order with the replies.
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    #[cfg(feature = "tls")]
    if let Some(pem) = root_cert {
        // The certificates go into the `ConnectionInfo` through a `Client`
        // (PEM parsed here, so a bad one fails the build); it is handed to
        // `Manager::new_with_config` as is. deadpool-redis's `Config`
        // would drop them.
        let client = redis::Client::build_with_tls(info, root_certs(pem)?)
            .map_err(|e| format!("invalid TLS root certificate: {e}"))?;
        return Ok(client.get_connection_info().clone());
    }
    Ok(info)
}

/// The cluster client: seeds, timeouts, few and short retries (all within
/// the operation timeout), TLS. No I/O.
fn cluster_client(
    urls: &[String],
    root_cert: Option<&[u8]>,
    op_timeout: Duration,
    connect_timeout: Duration,
) -> std::result::Result<ClusterClient, String> {
    if urls.is_empty() {
        return Err("cluster mode needs at least one node URL".into());
    }
    check_tls(urls, root_cert)?;
    let builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
        .connection_timeout(connect_timeout)
        .response_timeout(op_timeout)
        .overall_response_timeout(Some(op_timeout))
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_RETRY_WAIT_MS.0)
        .max_retry_wait(CLUSTER_RETRY_WAIT_MS.1);
    #[cfg(feature = "tls")]
    let builder = match root_cert {
        Some(pem) => builder.certs(root_certs(pem)?),
        None => builder,
    };
    builder
        .build()
        .map_err(|e| format!("invalid Redis Cluster configuration: {e}"))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn read_slot(slot: &Slot) -> Option<(u64, Conn)> {
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
        let (slot, mut conn) = self.conn().await?;
        let epoch = conn.epoch();
        let hub = &self.shared.hub;
        // Cluster mode: pushes are not ordered with replies, so no views
        // (the hub, built unordered, would never learn one either).
        let view = if self.is_cluster() {
            None
        } else {
            views.get(slot)
        };
        if view.is_some_and(|v| v.load(SeqCst) != 0) {
            // The generation is known on this connection: read the entry only.
            let entry = conn.get(entry_key, self.op_timeout).await.map_err(|e| {
                self.check(slot, epoch, &e);
                BackendError::from(e)
            })?;
            // Read after the reply: every push before it has been applied.
            let known = view.map_or(0, |v| v.load(SeqCst));
            if known != 0 && hub.is_live(slot, epoch) {
                match entry.as_deref().map(entry::generation_of) {
                    // An entry of the known generation: a hit (or stale).
                    Some(Some(g)) if token_value(g) == known => {
                        let generation = Token::try_from(g).ok();
                        return Ok(Fetched { entry, generation });
                    }
                    // Nothing, a tombstone, a lease or foreign bytes: a miss
                    // whatever the generation, which is the known one.
                    None | Some(None) => {
                        let generation = Some(token_bytes(known));
                        return Ok(Fetched { entry, generation });
                    }
                    // An entry of another generation: the view may be behind
                    // a generation Redis made without a notice (evicted and
                    // re-created by a store), so read both.
                    Some(Some(_)) => {}
                }
            }
            // Read both, which also (re-)learns the view.
        }
        let pushes_before = hub.pushes(slot);
        type Both = (Option<Vec<u8>>, Option<Vec<u8>>);
        let mut mget = redis::cmd("MGET");
        mget.arg(entry_key).arg(generation_key);
        let got = bounded(self.op_timeout, mget.query_async::<Both>(&mut conn)).await;
        let (entry, generation) = got.map_err(|e| {
            self.check(slot, epoch, &e);
            BackendError::from(e)
        })?;
        self.ok();
        let generation = generation.and_then(|g| Token::try_from(g.as_slice()).ok());
        if let (Some(v), Some(g)) = (view, &generation) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tls_urls_are_recognised() {
        assert!(is_tls_url("rediss://h:6380"));
        assert!(is_tls_url("Valkeys://h"));
        assert!(!is_tls_url("redis://h"));
        assert!(!is_tls_url("valkey://h"));
    }

    #[test]
    fn tls_settings_are_checked() {
        assert!(check_tls(&urls(&["redis://h"]), None).is_ok());
        let root = Some(&b"pem"[..]);
        let err = check_tls(&urls(&["rediss://a", "redis://b"]), root).unwrap_err();
        assert!(
            err.contains("feature") || err.contains("rediss://"),
            "{err}"
        );
        if cfg!(feature = "tls") {
            assert!(check_tls(&urls(&["rediss://h"]), None).is_ok());
            assert!(check_tls(&urls(&["rediss://h"]), root).is_ok());
        } else {
            let err = check_tls(&urls(&["rediss://h"]), None).unwrap_err();
            assert!(err.contains("`tls` feature"), "{err}");
        }
    }

    #[test]
    fn a_cluster_needs_seeds_with_one_username() {
        let t = Duration::from_millis(100);
        assert!(
            cluster_client(&[], None, t, t)
                .unwrap_err()
                .contains("at least one")
        );
        assert!(cluster_client(&urls(&["redis://a:1", "redis://b:2"]), None, t, t).is_ok());
        let err =
            cluster_client(&urls(&["redis://u:p@a:1", "redis://v:p@b:2"]), None, t, t).unwrap_err();
        assert!(!err.contains(":p@"), "{err}");
        assert!(cluster_client(&urls(&["http://a"]), None, t, t).is_err());
    }
}
