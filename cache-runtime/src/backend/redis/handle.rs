//! One borrowed connection: [`Conn`] (a node's multiplexed connection or
//! the cluster connection) and [`Handle`], the form calls borrow, whose
//! `GET` (the hit's one command) reuses its command buffer and its timer.
//!
//! Every command is bounded by the operation timeout here rather than by
//! redis-rs's response timeout, which makes and tears down a tokio timer per
//! command: about a tenth of the throughput at 64 tasks. A hit's `GET`
//! reuses the lent handle's timer (moved forward per request; remade when
//! the handle is used on another runtime than the timer's), everything
//! else takes a `tokio::time::timeout` ([`bounded`]).

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::task::Poll;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Arg, Cmd, Pipeline, RedisFuture, Value};
use tokio::time::Sleep;

use super::spare::Lent;
use crate::entry::Token;

/// A kept connection, cloned per call.
#[derive(Clone)]
pub(super) enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A clone of a kept connection as calls borrow it, with the command
/// buffer and the timer its `GET`s reuse. Boxed: lending one moves a
/// pointer.
pub(super) struct Handle {
    conn: Conn,
    /// Durable invalidations' connections: every script is sent with a
    /// `WAIT` behind it (see [`Durable`]).
    durable: Option<Arc<Durable>>,
    /// The life token of the server run this connection talks to (see
    /// `life.rs`).
    pub(super) life: Option<Token>,
    get: Cmd,
    /// The `GET`'s deadline, with the runtime whose timer it is on: one
    /// timer per handle, moved forward per request, instead of one made and
    /// torn down per request. Made by the first `GET`.
    deadline: Option<(tokio::runtime::Id, Pin<Box<Sleep>>)>,
}

pub(super) fn handle(
    conn: Conn,
    life: Option<Token>,
    durable: Option<Arc<Durable>>,
) -> Box<Handle> {
    Box::new(Handle {
        conn,
        durable,
        life,
        get: Cmd::new(),
        deadline: None,
    })
}

/// What a command that ran out of time fails with (a timeout, to `check`
/// and the breaker, like redis-rs's own response timeout).
pub(super) fn timed_out() -> redis::RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
}

/// A command other than the hit's `GET`, bounded by `timeout`.
pub(super) async fn bounded<T>(
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
    pub(super) async fn get(
        &mut self,
        key: &str,
        timeout: Duration,
    ) -> redis::RedisResult<Option<Vec<u8>>> {
        let Handle {
            conn,
            get,
            deadline,
            ..
        } = self;
        get.clear();
        get.arg("GET").arg(key);
        // A timer is polled only on the runtime it belongs to: another
        // one, on which the handle was used before, may have shut down since.
        let here = tokio::runtime::Handle::try_current()
            .map_err(|_| {
                redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "cache-aside needs a tokio runtime",
                ))
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

/// How the connections of durable invalidations send a script: in one
/// pipeline with `WAIT replicas timeout` behind it, on one connection (a
/// node's socket; in a cluster, the one of the master of the script's
/// first key's slot, where redis-rs resends the whole pipeline on a
/// reconnect), so the `WAIT` counts exactly the connection that ran the
/// script. The replicas it counted are left in `acked` (-1: none yet).
pub(super) struct Durable {
    pub replicas: u32,
    pub timeout: Duration,
    pub acked: AtomicI64,
}

impl Durable {
    /// The script in `cmd` (`EVALSHA`/`EVAL`) with its `WAIT`; other
    /// commands (`SCRIPT LOAD` after a `NOSCRIPT`) as they are.
    fn send<'a>(&'a self, conn: &'a mut Conn, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut args = cmd.args_iter();
            let first = match args.next() {
                Some(Arg::Simple(a)) => a.to_ascii_uppercase(),
                _ => Vec::new(),
            };
            if first != b"EVALSHA" && first != b"EVAL" {
                return conn.req_packed_command(cmd).await;
            }
            let key = match args.nth(2) {
                Some(Arg::Simple(k)) => k.to_vec(),
                _ => Vec::new(),
            };
            let mut pipe = Pipeline::new();
            pipe.add_command(cmd.clone());
            pipe.cmd("WAIT").arg(self.replicas).arg(
                u64::try_from(self.timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
            let replies = match conn {
                Conn::Node(c) => c.req_packed_commands(&pipe, 0, 2).await?,
                Conn::Cluster(c) => {
                    use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
                    let to = SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                        &key,
                        SlotAddr::Master,
                    ));
                    c.route_pipeline(pipe, 0, 2, to).await?
                }
            };
            let mut replies = replies.into_iter();
            let script = replies.next().unwrap_or(Value::Nil);
            // Anything but a count (an error) counts as no replica.
            let acked = match replies.next() {
                Some(Value::Int(n)) => n,
                _ => -1,
            };
            self.acked.store(acked, SeqCst);
            Ok(script)
        })
    }
}

impl ConnectionLike for Lent<'_, Box<Handle>> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let handle = &mut **self;
        match &handle.durable {
            Some(d) => d.send(&mut handle.conn, cmd),
            None => handle.conn.req_packed_command(cmd),
        }
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
