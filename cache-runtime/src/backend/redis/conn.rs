//! The kept connections: one slot per connection (cluster mode: one slot
//! holding the cluster connection), filled in the background and lent to
//! calls without a lock or a shared reference count (per-thread spare
//! clones, `spare.rs`).
//!
//! deadpool-redis recycles a connection with `UNWATCH` + `PING` on every
//! `pool.get()`, which would double the cost of a hit. A redis-rs
//! multiplexed connection is shared by any number of tasks, so the backend
//! keeps a few connections in slots and a call borrows one and pays exactly
//! one round trip. Each connection is made by its own deadpool-redis
//! `Manager` (with the connect timeout and a push handler that knows which
//! connection it serves, `push.rs`), subscribes to the invalidation channel
//! (see `coherence`), and lives in its slot until it breaks; then the slot
//! is refilled in a background task, so a caller never waits for a
//! reconnect longer than the operation timeout.
//!
//! The cluster connection repairs itself (node reconnects, slot map
//! refreshes, the seeds again); it is replaced, in the background while it
//! keeps serving, only when it has not answered a single call for
//! [`REPLACE_AFTER`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_redis::{Manager, Pool, PoolError, Runtime};
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::{AsyncConnectionConfig, ConnectionInfo};
use tokio::sync::Notify;

use super::handle::{Conn, Durable, Handle, handle};
use super::life::Life;
use super::push::ConnSink;
use super::spare::{self, Lent};
use crate::backend::{BackendError, Result};
use crate::coherence::Hub;
use crate::entry::Token;
use crate::sync::{read, write};

/// Cluster mode: a connection that has not answered one call for this long
/// (or the connect timeout twice, if longer) while calls kept failing is
/// replaced; at most one replacement per such period.
const REPLACE_AFTER: Duration = Duration::from_secs(2);

/// How connections are made.
pub(super) enum Mode {
    /// One server: deadpool-redis makes each slot's connection.
    Node {
        info: ConnectionInfo,
        conn_config: AsyncConnectionConfig,
    },
    /// Redis Cluster: one slot, one cluster connection.
    Cluster { client: ClusterClient },
}

spare::spares!(SPARES, Box<Handle>);

/// A connection lent to one call.
pub(super) type Borrowed<'a> = Lent<'a, Box<Handle>>;

/// A kept connection: its epoch (which tells a stale "this broke" report
/// from one about the current connection), and the life token of the
/// server run it talks to.
#[derive(Clone)]
struct Kept {
    epoch: u64,
    conn: Conn,
    life: Option<Token>,
}

struct Slot {
    conn: RwLock<Option<Kept>>,
    /// Process-unique id, for the per-thread spare clones (`spare.rs`).
    id: u64,
    /// The epoch of the connection in `conn` (0: none), readable without the lock.
    current: AtomicU64,
    connecting: AtomicBool,
    /// Woken when a connect attempt for this slot ends.
    connected: Notify,
    /// Why the last attempt failed, for the callers that waited for it.
    last_failure: RwLock<Option<String>>,
}

impl Slot {
    fn get(&self) -> Option<Kept> {
        read(&self.conn).clone()
    }

    fn set(&self, kept: Kept) {
        let epoch = kept.epoch;
        *write(&self.conn) = Some(kept);
        self.current.store(epoch, Relaxed);
    }
}

/// What the background connect tasks share with the slots' users.
struct Shared {
    mode: Mode,
    hub: Arc<Hub>,
    slots: Box<[Slot]>,
    epoch: AtomicU64,
    connect_timeout: Duration,
    /// A subscription was refused once (logged once).
    refused: AtomicBool,
    /// Cluster mode: when a call last succeeded (ms since `started`), or a
    /// replacement was last tried.
    last_ok_ms: AtomicU64,
    started: Instant,
    replace_after: Duration,
    /// How a new connection learns its life token.
    life: Life,
    /// Subscribe each connection to the invalidation channel (not those
    /// kept for durable invalidations, which only write).
    subscribe: bool,
    /// Durable invalidations' connections: how their handles send scripts.
    durable: Option<Arc<Durable>>,
}

/// The slots and how to fill them.
pub(super) struct Connections {
    shared: Arc<Shared>,
    next: AtomicUsize,
    op_timeout: Duration,
}

impl Connections {
    /// `n` empty slots; no I/O. Each connection subscribes to the
    /// invalidation channel and feeds the hub, except for durable
    /// invalidations (`durable`), whose scripts each carry a `WAIT`.
    pub(super) fn new(
        mode: Mode,
        n: usize,
        hub: Arc<Hub>,
        life: Life,
        durable: Option<Arc<Durable>>,
        (connect_timeout, op_timeout): (Duration, Duration),
    ) -> Connections {
        let slots = (0..n)
            .map(|_| Slot {
                conn: RwLock::new(None),
                id: spare::slot_id(),
                current: AtomicU64::new(0),
                connecting: AtomicBool::new(false),
                connected: Notify::new(),
                last_failure: RwLock::new(None),
            })
            .collect();
        Connections {
            shared: Arc::new(Shared {
                mode,
                hub,
                slots,
                epoch: AtomicU64::new(0),
                connect_timeout,
                refused: AtomicBool::new(false),
                last_ok_ms: AtomicU64::new(0),
                started: Instant::now(),
                replace_after: REPLACE_AFTER.max(connect_timeout.saturating_mul(2)),
                life,
                subscribe: durable.is_none(),
                durable,
            }),
            next: AtomicUsize::new(0),
            op_timeout,
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.shared.mode, Mode::Cluster { .. })
    }

    pub(super) fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    pub(super) fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// A connection from a slot: a clone of a kept multiplexed connection, or
    /// (slot empty) one being established in the background, waited for at
    /// most the operation timeout. Returns the slot's index too.
    pub(super) async fn lend(&self) -> Result<(usize, Borrowed<'_>)> {
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
        if let Some(k) = slot.get() {
            let durable = self.shared.durable.clone();
            return Ok((i, lend(k.epoch, handle(k.conn, k.life, durable))));
        }
        // Boxed: rare, and it would make every call's future larger.
        let k = Box::pin(self.reconnect(i)).await?;
        let durable = self.shared.durable.clone();
        Ok((i, lend(k.epoch, handle(k.conn, k.life, durable))))
    }

    async fn reconnect(&self, i: usize) -> Result<Kept> {
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
            if slot.connecting.load(Relaxed)
                && tokio::time::timeout(self.op_timeout, notified)
                    .await
                    .is_err()
            {
                // Still connecting: the reason of an earlier attempt may be
                // out of date (a password fixed since).
                return slot.get().ok_or(BackendError::Timeout);
            }
            return slot.get().ok_or_else(|| {
                let why = read(&slot.last_failure).clone();
                BackendError::Unavailable(why.map_or("cannot connect to Redis".into(), Cow::Owned))
            });
        }
        // Another caller may have filled the slot since this one found it
        // empty: use that connection rather than replace a working one.
        if let Some(got) = slot.get() {
            slot.connecting.store(false, Relaxed);
            slot.connected.notify_waiters();
            return Ok(got);
        }
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let epoch = shared.epoch.fetch_add(1, Relaxed) + 1;
            let got = tokio::time::timeout(shared.connect_timeout, shared.connect(i, epoch)).await;
            let slot = &shared.slots[i];
            let result = match got {
                Ok(Ok(kept)) => {
                    slot.set(kept.clone());
                    shared.note_ok();
                    Ok(kept)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(BackendError::Timeout),
            };
            *write(&slot.last_failure) = result.as_ref().err().map(ToString::to_string);
            slot.connecting.store(false, Relaxed);
            slot.connected.notify_waiters();
            result
        });
        match tokio::time::timeout(self.op_timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(_join)) => Err(BackendError::Unavailable("connect task failed".into())),
            Err(_) => Err(BackendError::Timeout),
        }
    }

    /// A call on connection `epoch` of slot `slot` failed with `err`: forget
    /// the connection if it broke (so the next call reconnects).
    pub(super) fn check(&self, slot: usize, epoch: u64, err: &redis::RedisError) {
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
        let s = &self.shared.slots[slot];
        let mut w = write(&s.conn);
        if w.as_ref().is_some_and(|k| k.epoch == epoch) {
            *w = None;
            s.current.store(0, Relaxed);
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
            if let Ok(Ok(kept)) = got {
                slot.set(kept);
                shared.note_ok();
            }
            slot.connecting.store(false, Relaxed);
            slot.connected.notify_waiters();
        });
    }

    /// Cluster mode: notes that a call succeeded.
    pub(super) fn ok(&self) {
        if self.is_cluster() {
            self.shared.note_ok();
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
    async fn connect(&self, i: usize, epoch: u64) -> Result<Kept> {
        match &self.mode {
            Mode::Node { info, conn_config } => {
                let (conn, life) = self.connect_node(info, conn_config, i, epoch).await?;
                Ok(Kept {
                    epoch,
                    conn: Conn::Node(conn),
                    life,
                })
            }
            Mode::Cluster { client } => match client.get_async_connection().await {
                Ok(c) => Ok(Kept {
                    epoch,
                    conn: Conn::Cluster(c),
                    life: None,
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "cache-aside: cannot connect to the Redis Cluster");
                    Err(e.into())
                }
            },
        }
    }

    /// Makes connection `epoch` for slot `i`, subscribes it (if this set
    /// subscribes), and learns its life token.
    async fn connect_node(
        &self,
        info: &ConnectionInfo,
        conn_config: &AsyncConnectionConfig,
        i: usize,
        epoch: u64,
    ) -> Result<(MultiplexedConnection, Option<Token>)> {
        let conn_config = if self.subscribe {
            self.hub.begin_connection(i, epoch);
            let sink = ConnSink {
                hub: Arc::clone(&self.hub),
                slot: i,
                conn: epoch,
            };
            conn_config.clone().set_push_sender(sink)
        } else {
            conn_config.clone()
        };
        let manager =
            Manager::new_with_config(info.clone(), conn_config).map_err(BackendError::from)?;
        // A pool of one, for deadpool-redis's connect timeouts; the
        // connection is taken out of it and kept.
        let pool = Pool::builder(manager)
            .max_size(1)
            .create_timeout(Some(self.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|_| {
                BackendError::Unavailable("cannot build a Redis connection pool".into())
            })?;
        let obj = pool.get().await.map_err(|e| {
            tracing::debug!(slot = i, error = %e, "cache-aside: cannot connect to Redis");
            BackendError::Unavailable(pool_error(e))
        })?;
        let mut conn = deadpool_redis::Connection::take(obj);
        if !self.subscribe {
            let life = self.life.token(&mut conn).await?;
            return Ok((conn, life));
        }
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
        let life = self.life.token(&mut conn).await?;
        Ok((conn, life))
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Why a connection could not be made, with the server's own words (a
/// refused password, a database index out of range) where there are some.
fn pool_error(e: PoolError) -> Cow<'static, str> {
    match e {
        PoolError::Timeout(_) => "timed out connecting to Redis".into(),
        PoolError::Backend(e) => format!("cannot connect to Redis: {e}").into(),
        PoolError::Closed => "the Redis pool is closed".into(),
        PoolError::NoRuntimeSpecified => "no async runtime for the Redis pool".into(),
        PoolError::PostCreateHook(e) => format!("Redis connection setup failed: {e}").into(),
    }
}
