//! The Redis backend: the protocol's reads and scripts over kept
//! multiplexed RESP3 connections (one server) or one redis-rs cluster
//! connection (Redis Cluster).
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`RedisBackend`]: the [`Backend`] operations, each one command or script |
//! | `config.rs` | URLs, RESP3, timeouts, TLS: how connections are made; password redaction |
//! | `conn.rs` | the kept connections: slots, background reconnects, cluster repair |
//! | `handle.rs` | one borrowed connection, and the hit's `GET` with its reused timer |
//! | `spare.rs` | per-thread spare clones of the kept connections |
//! | `push.rs` | the push handler: channel messages to the coherence layer |
//! | `life.rs`, `life.lua` | restarts: the life token of the server's run |
//! | `scripts.rs`, `*.lua` | the Lua scripts of the protocol |
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
//! `coherence`), and every hit reads entry and generation with one `MGET`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Duration;

use super::{
    Backend, BackendError, Buckets, Change, Claim, Claimed, Fetched, FetchedTagged, GenValue,
    Generation, KeyChanged, Notice, Result, Store,
};
use crate::coherence::Hub;
use crate::entry::{self, Token, token_bytes, token_value};
use crate::error::Error;
use crate::key::layout;
use conn::{Borrowed, Connections, millis};
use handle::bounded;
use life::Life;
use scripts::Scripts;

mod config;
mod conn;
mod handle;
mod life;
mod push;
mod scripts;
mod spare;

pub(crate) use config::{RedisConfig, redact};

pub(crate) struct RedisBackend {
    conns: Connections,
    scripts: Scripts,
    /// A notice was refused once (logged once).
    notice_refused: AtomicBool,
    /// `durable_invalidations`: the connections invalidations run on, and
    /// how many replicas they wait for.
    durable: Option<DurableSet>,
}

/// Invalidations that return once `replicas` replicas have them (`WAIT`),
/// so a replica promoted in a failover right after cannot bring back what
/// they replaced. They run on connections of their own, whose handles send
/// each script in one pipeline with its `WAIT` (`handle::Durable`): a
/// `WAIT` holds up every command behind it on its connection, and hits must
/// not queue behind it.
struct DurableSet {
    conns: Connections,
    wait: Arc<handle::Durable>,
    /// Too few replicas answered once (logged once).
    short: AtomicBool,
    /// One durable invalidation at a time: Redis runs nothing else of a
    /// connection while its `WAIT` blocks, so a second script sent behind
    /// it would time out unsent (and count as an outage); and `wait.acked`
    /// is the one in flight's.
    one: tokio::sync::Mutex<()>,
}

impl RedisBackend {
    /// Checks the URL(s) and sets the connections up; no I/O.
    /// Connected to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.conns.is_cluster()
    }

    pub(crate) fn new(cfg: RedisConfig, hub: Arc<Hub>) -> std::result::Result<Self, Error> {
        let (mode, n) = cfg.mode(cfg.op_timeout)?;
        let life = || Life {
            key: layout::life_key(&cfg.prefix),
            script: redis::Script::new(include_str!("life.lua")),
            op_timeout: cfg.op_timeout,
        };
        let timeouts = (cfg.connect_timeout, cfg.op_timeout);
        let durable = match cfg.durable {
            Some((replicas, timeout)) => {
                let wait = Arc::new(handle::Durable {
                    replicas,
                    timeout,
                    acked: AtomicI64::new(-1),
                });
                // One connection: invalidations are few, and take turns.
                let (mode, _) = cfg.mode(cfg.op_timeout.saturating_add(timeout))?;
                let on = Some(Arc::clone(&wait));
                let conns = Connections::new(mode, 1, Arc::clone(&hub), life(), on, timeouts);
                Some(DurableSet {
                    conns,
                    wait,
                    short: AtomicBool::new(false),
                    one: tokio::sync::Mutex::new(()),
                })
            }
            None => None,
        };
        Ok(RedisBackend {
            conns: Connections::new(mode, n, hub, life(), None, timeouts),
            scripts: Scripts::new(),
            notice_refused: AtomicBool::new(false),
            durable,
        })
    }

    /// The invalidation landed but Redis refused its notice (an ACL without
    /// the channel). Processes that can subscribe would keep their views and
    /// local tiers: say so, loudly, once.
    fn notice_refused(&self, published: i64, notice: Notice<'_>) {
        if published == 0 && !self.notice_refused.swap(true, Relaxed) {
            tracing::error!(
                channel = notice.channel,
                "cache-aside: Redis refused to publish an invalidation notice (ACL): \
                 processes allowed to subscribe may serve invalidated entries from their \
                 views and local tiers; grant every cache user `&<prefix>:*`"
            );
        }
    }

    /// Runs one command or script on a lent connection, bounded by the
    /// operation timeout (node connections have no response timeout of
    /// their own, see `handle.rs`).
    async fn run<'a, T, F, Fut>(&'a self, op: F) -> Result<T>
    where
        F: FnOnce(Borrowed<'a>) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (slot, conn) = self.conns.lend().await?;
        let epoch = conn.epoch();
        match bounded(self.conns.op_timeout(), op(conn)).await {
            Ok(v) => {
                self.conns.ok();
                Ok(v)
            }
            Err(e) => {
                self.conns.check(slot, epoch, &e);
                Err(e.into())
            }
        }
    }
}

impl RedisBackend {
    /// Runs an invalidation's script (`change`; else as [`run`](Self::run)
    /// does): with durable invalidations, on their connection, where the
    /// script and its `WAIT` go in one pipeline to one connection; too few
    /// replicas in time is an error, so the invalidation is queued and sent
    /// again, and does not report `Done`.
    async fn run_change<'a, T, F, Fut>(&'a self, change: bool, op: F) -> Result<T>
    where
        F: FnOnce(Borrowed<'a>) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (Some(d), true) = (&self.durable, change) else {
            return self.run(op).await;
        };
        let wait = &d.wait;
        // A script's first use on a server is two pipelines (`NOSCRIPT`,
        // then loaded and sent again), so two `WAIT`s.
        let waited = d
            .conns
            .op_timeout()
            .saturating_add(wait.timeout.saturating_mul(2));
        // Waiting for the others is bounded like one of them; past it, this
        // one is queued (not an outage: the master answers).
        let Ok(_turn) = tokio::time::timeout(waited, d.one.lock()).await else {
            return Err(BackendError::Unreplicated {
                acked: 0,
                wanted: wait.replicas,
            });
        };
        wait.acked.store(-1, SeqCst);
        let (slot, conn) = d.conns.lend().await?;
        let epoch = conn.epoch();
        let done = bounded(waited, op(conn)).await.map_err(|e| {
            d.conns.check(slot, epoch, &e);
            BackendError::from(e)
        })?;
        d.conns.ok();
        let acked = wait.acked.load(SeqCst);
        if acked < i64::from(wait.replicas) {
            if !d.short.swap(true, Relaxed) {
                tracing::warn!(
                    acked,
                    wanted = wait.replicas,
                    timeout_ms = millis(wait.timeout),
                    "cache-aside: too few replicas acknowledged an invalidation in time: it is \
                     queued and sent again (durable_invalidations)"
                );
            }
            return Err(BackendError::Unreplicated {
                acked: acked.max(0),
                wanted: wait.replicas,
            });
        }
        Ok(done)
    }
}

impl Backend for RedisBackend {
    async fn fetch(
        &self,
        entry_key: &str,
        generation_key: &str,
        views: &[AtomicU64],
    ) -> Result<Fetched> {
        let (slot, mut conn) = self.conns.lend().await?;
        let epoch = conn.epoch();
        let hub = self.conns.hub();
        // Cluster mode: pushes are not ordered with replies, so no views
        // (the hub, built unordered, would never learn one either).
        let view = if self.conns.is_cluster() {
            None
        } else {
            views.get(slot)
        };
        if view.is_some_and(|v| v.load(SeqCst) != 0) {
            // The generation is known on this connection: read the entry only.
            let entry = conn
                .get(entry_key, self.conns.op_timeout())
                .await
                .map_err(|e| {
                    self.conns.check(slot, epoch, &e);
                    BackendError::from(e)
                })?;
            // Read after the reply: every push before it has been applied.
            let known = view.map_or(0, |v| v.load(SeqCst));
            if known != 0 && hub.is_live(slot, epoch) {
                let mut known_ok = true;
                match entry.as_deref().map(entry::generation_of) {
                    // An entry of the known generation: a hit (or stale).
                    // Nothing, a tombstone, a lease or foreign bytes: a miss
                    // whatever the generation, which is the known one.
                    Some(Some(g)) if token_value(g) == known => {}
                    None | Some(None) => {}
                    // An entry of another generation: the view may be behind
                    // a generation Redis made without a notice (evicted and
                    // re-created by a claim), so read both.
                    Some(Some(_)) => known_ok = false,
                }
                if known_ok {
                    let generation = Generation::Current(GenValue {
                        token: token_bytes(known),
                        life: conn.life,
                    });
                    return Ok(Fetched { entry, generation });
                }
            }
            // Read both, which also (re-)learns the view.
        }
        let pushes_before = hub.pushes(slot);
        type Both = (Option<Vec<u8>>, Option<Vec<u8>>);
        let mut mget = redis::cmd("MGET");
        mget.arg(entry_key).arg(generation_key);
        let got = bounded(self.conns.op_timeout(), mget.query_async::<Both>(&mut conn)).await;
        let (entry, generation) = got.map_err(|e| {
            self.conns.check(slot, epoch, &e);
            BackendError::from(e)
        })?;
        self.conns.ok();
        let generation = Generation::parse(generation.as_deref(), conn.life.as_ref());
        if let (Some(v), Generation::Current(g)) = (view, &generation) {
            hub.learn(slot, epoch, pushes_before, v, token_value(&g.token));
        }
        Ok(Fetched { entry, generation })
    }

    async fn claim(&self, c: Claim<'_>) -> Result<Claimed> {
        let script = &self.scripts.claim;
        let nonce = c.nonce;
        // A writer's claim (a put) replaces the old value: an invalidation.
        self.run_change(c.writer.is_some(), |mut conn| async move {
            let (mode, expect) = match c.writer {
                Some(_) => ("3", &b""[..]),
                None => c.expect.script_args(),
            };
            let life = conn.life;
            let mut inv = script.key(c.entry_key);
            inv.key(c.generation_key)
                .arg(mode)
                .arg(expect)
                .arg(&nonce[..])
                .arg(millis(c.lease))
                .arg(if c.others_wait { "w" } else { "n" })
                .arg(&c.fresh_generation[..])
                .arg(millis(c.generation_ttl))
                .arg(life.map(|l| l.to_vec()).unwrap_or_default())
                .arg(millis(c.hold));
            if let Some(n) = c.writer {
                inv.arg(n.channel).arg(n.namespace);
            }
            if let Some(b) = c.buckets {
                inv.key(b.key).key(b.any);
            }
            let reply: (i64, Vec<u8>, Vec<u8>, i64) = inv.invoke_async(&mut conn).await?;
            if let (4, Some(n)) = (reply.0, c.writer) {
                self.notice_refused(0, n);
            }
            Ok(match reply {
                (1 | 4, g, lease, exact) => match Generation::parse(Some(&g), life.as_ref()) {
                    Generation::Current(generation) => Claimed::Taken {
                        generation,
                        lease,
                        replaced_read: exact == 1,
                    },
                    _ => Claimed::Changed,
                },
                (2, ..) => Claimed::Held,
                (3, ..) => Claimed::Fenced,
                _ => Claimed::Changed,
            })
        })
        .await
    }

    async fn store(&self, s: Store<'_>) -> Result<bool> {
        let px = millis(s.ttl);
        let script = &self.scripts.store;
        self.run(|mut c| async move {
            let (mode, expect) = s.expect.script_args();
            let mut inv = script.key(s.entry_key);
            inv.key(s.generation_key)
                .arg(mode)
                .arg(expect)
                .arg(s.generation.bytes())
                .arg(px)
                .arg(s.tail)
                .arg(match (s.restore, s.deps) {
                    (true, _) => "r",
                    (false, true) => "d",
                    (false, false) => "",
                });
            if let Some((b, token)) = s.bump {
                inv.key(b.key).key(b.any).arg(&token[..]);
            }
            let stored: i64 = inv.invoke_async(&mut c).await?;
            Ok(stored == 1)
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
        let script = &self.scripts.release;
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

    async fn change_namespace(
        &self,
        generation_key: &str,
        change: Change<'_>,
        ttl: Duration,
        notice: Notice<'_>,
    ) -> Result<()> {
        let script = &self.scripts.generation;
        let published: (i64, Vec<u8>) = self
            .run_change(true, |mut c| async move {
                let life = c.life;
                change_script(script, generation_key, change, ttl, notice, life)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        self.notice_refused(published.0, notice);
        Ok(())
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
        let script = &self.scripts.tombstone;
        let (published, head, generation, stored): (i64, Vec<u8>, Vec<u8>, i64) = self
            .run_change(true, |mut c| async move {
                let mut inv = change_script(script, entry_key, change, ttl, notice, None);
                inv.key(generation_key).key(buckets.key).key(buckets.any);
                if let Change::EndPut { put, .. } = change {
                    inv.arg(put.head)
                        .arg(put.generation)
                        .arg(put.tail)
                        .arg(millis(put.ttl));
                }
                inv.invoke_async(&mut c).await
            })
            .await?;
        self.notice_refused(published, notice);
        let some = |v: Vec<u8>| (!v.is_empty()).then_some(v);
        Ok(KeyChanged {
            head: some(head),
            generation: some(generation),
            stored: stored == 1,
        })
    }

    async fn ping(&self) -> Result<()> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    async fn fetch_deps(
        &self,
        entry_key: &str,
        generation_key: &str,
    ) -> Result<(Fetched, Vec<Option<Vec<u8>>>)> {
        if self.conns.is_cluster() {
            let got = self.fetch_tagged(entry_key, generation_key, &[]).await?;
            let keys: Vec<&[u8]> = got
                .fetched
                .entry
                .as_deref()
                .and_then(entry::deps)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let values = match keys.is_empty() {
                true => Vec::new(),
                false => self.values(&keys).await?,
            };
            return Ok((got.fetched, values));
        }
        let script = &self.scripts.deps;
        self.run(|mut c| async move {
            let got: Vec<Option<Vec<u8>>> = script
                .key(entry_key)
                .key(generation_key)
                .invoke_async(&mut c)
                .await?;
            Ok(split_read(got, c.life.as_ref()))
        })
        .await
    }

    async fn values(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.run(|mut c| async move {
            let mut mget = redis::cmd("MGET");
            for k in keys {
                mget.arg(*k);
            }
            mget.query_async(&mut c).await
        })
        .await
    }

    async fn fetch_many(
        &self,
        entry_keys: &[String],
        generation_key: &str,
    ) -> Result<(Vec<Option<Vec<u8>>>, Generation)> {
        self.run(|mut c| async move {
            let mut mget = redis::cmd("MGET");
            mget.arg(generation_key).arg(entry_keys);
            let mut got: Vec<Option<Vec<u8>>> = mget.query_async(&mut c).await?;
            let entries = got.split_off(1.min(got.len()));
            let generation = got.pop().flatten();
            Ok((
                entries,
                Generation::parse(generation.as_deref(), c.life.as_ref()),
            ))
        })
        .await
    }

    async fn fetch_tagged(
        &self,
        entry_key: &str,
        generation_key: &str,
        tag_keys: &[String],
    ) -> Result<FetchedTagged> {
        self.run(|mut c| async move {
            let mut mget = redis::cmd("MGET");
            mget.arg(entry_key).arg(generation_key).arg(tag_keys);
            let got: Vec<Option<Vec<u8>>> = mget.query_async(&mut c).await?;
            let (fetched, rest) = split_read(got, c.life.as_ref());
            Ok(FetchedTagged {
                fetched,
                tokens: rest
                    .into_iter()
                    .map(|t| t.and_then(|t| Token::try_from(&t[..]).ok()))
                    .collect(),
            })
        })
        .await
    }

    async fn tokens(
        &self,
        keys: &[String],
        fresh: &[Token],
        ttl: Duration,
    ) -> Result<Vec<Option<Token>>> {
        let script = &self.scripts.tokens;
        self.run(|mut c| async move {
            let mut inv = script.prepare_invoke();
            inv.key(keys).arg(millis(ttl));
            for f in fresh {
                inv.arg(&f[..]);
            }
            let got: Vec<Vec<u8>> = inv.invoke_async(&mut c).await?;
            // '' (fenced), or anything but a token: none.
            Ok(got.iter().map(|t| Token::try_from(&t[..]).ok()).collect())
        })
        .await
    }

    async fn change_tag(
        &self,
        tag_key: &str,
        change: Change<'_>,
        ttl: Duration,
        notice: Notice<'_>,
    ) -> Result<()> {
        let script = &self.scripts.tag;
        let published: i64 = self
            .run_change(true, |mut c| async move {
                change_script(script, tag_key, change, ttl, notice, None)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        self.notice_refused(published, notice);
        Ok(())
    }
}

/// A reply of entry, generation, then more values (an `MGET` with tag
/// tokens, `deps.lua`): the read, and the rest.
fn split_read(
    mut got: Vec<Option<Vec<u8>>>,
    life: Option<&Token>,
) -> (Fetched, Vec<Option<Vec<u8>>>) {
    let rest = got.split_off(2.min(got.len()));
    let mut both = got.into_iter();
    let (entry, generation) = (both.next().flatten(), both.next().flatten());
    let fetched = Fetched {
        entry,
        generation: Generation::parse(generation.as_deref(), life),
    };
    (fetched, rest)
}

/// The invocation of `generation.lua` or `tombstone.lua` for a change of
/// `key`: they take the same arguments (`life` only the former).
fn change_script<'s>(
    script: &'s redis::Script,
    key: &str,
    change: Change<'_>,
    ttl: Duration,
    notice: Notice<'_>,
    life: Option<Token>,
) -> redis::ScriptInvocation<'s> {
    let (op, holder, fence_ms) = change.script_args();
    let mut inv = script.key(key);
    inv.arg(op)
        .arg(&entry::token()[..])
        .arg(&holder[..])
        .arg(fence_ms)
        .arg(millis(ttl))
        .arg(notice.channel)
        .arg(notice.namespace)
        .arg(life.map(|l| l.to_vec()).unwrap_or_default());
    inv
}
