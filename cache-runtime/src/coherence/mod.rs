//! Cross-process coherence: the invalidation channel, the generation views
//! it keeps current, and the epochs of the local tier. This layer knows no
//! `Cache` and no Redis client: the Redis backend hands it each push it
//! decodes ([`Hub::on_message`], [`Hub::on_disconnect`]), and the cache
//! reads views and epochs through [`NsCoherence`].
//!
//! The invalidation channel: every invalidation publishes a message on
//! `{prefix}:invalidations` from inside the script that applies it, and
//! every kept Redis connection subscribes to it (RESP3, so the same
//! connection also serves commands).
//!
//! Redis writes a published message into each subscriber's output stream
//! before it answers the publisher, and a connection's stream is one ordered
//! sequence of pushes and replies. redis-rs hands pushes to the connection's push handler (`backend/redis/push.rs`)
//! synchronously, in stream order, before it completes any later reply on
//! that connection. So once a reply arrives on connection `c`, every
//! invalidation that Redis applied before it executed that command has
//! already been applied to `c`'s view. Two things are built on that:
//!
//! * **Generation views.** Per namespace and connection, the generation
//!   Redis holds, learned from an `MGET` (entry + generation) and then kept
//!   current by the pushes. While a view is known, a hit reads only the
//!   entry (`GET`: the same one round trip and server work as a hand-written
//!   cache-aside) and compares its generation with the view, read *after*
//!   the reply. A view is only learned when no push arrived on the
//!   connection while the `MGET` was in flight, and it is forgotten when the
//!   connection goes away, so it can be unknown (one `MGET` more) but never
//!   older than the reply it is compared with.
//! * **The local (L1) tier.** See [`crate::local`]: pushes evict it.
//!
//! **Cluster mode** has neither. redis-rs's cluster connection hands pushes
//! over through a channel of its own, not in order with replies (measured:
//! 20% of replies arrived before a push Redis wrote ahead of them), so a
//! view could be older than the reply it is compared with: the hub is built
//! with `ordered: false`, and `learn`, `is_live` and the pushes never set a
//! view. The local tier needs less (a read takes its ticket before it reads,
//! so pushes only have to arrive, and a lost subscription must be noticed),
//! but cluster pub/sub cannot promise even that: a message is relayed over
//! the cluster bus to the node that holds the subscription, and is lost
//! without any sign to the subscriber when that node is partitioned or
//! failed over (its connection may stay open, redis-rs re-subscribes only
//! after it refreshes its slot map, and a disconnection push does not say
//! which node it was about). So cluster connections do not subscribe at all,
//! no connection is ever `subscribed`, and the local tier takes no entries.
//! Invalidations still publish their messages (the cluster broadcasts them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};

use crate::local::Local;
use crate::sync::{lock, read, write};

mod message;

pub(crate) use message::Message;

/// What the channel keeps per namespace.
pub(crate) struct NsCoherence {
    /// The generation Redis holds, as each connection slot knows it (0:
    /// unknown): the hit path's view (see the module docs).
    pub(crate) views: Box<[AtomicU64]>,
    /// Bumped by every invalidation of the namespace: a read that noted an
    /// older value does not insert into the local tier.
    pub(crate) local_seq: AtomicU64,
    /// Bumped by namespace invalidations: older local entries are dead.
    pub(crate) local_epoch: AtomicU64,
}

/// State shared by the cache and the push handlers of its connections.
pub(crate) struct Hub {
    channel: String,
    namespaces: RwLock<HashMap<String, Arc<NsCoherence>>>,
    slots: Box<[SlotSync]>,
    /// Bumped whenever a subscription is lost: local entries from before
    /// are not served (messages may have been missed).
    flushes: AtomicU64,
    /// Connections whose subscription is confirmed and still up.
    subscribed: AtomicUsize,
    /// In-process backend: every invalidation is applied locally, so the
    /// local tier needs no channel.
    in_process: bool,
    /// Pushes arrive in order with replies on each connection (one server):
    /// generation views may be learned. False in cluster mode.
    ordered: bool,
    pub(crate) local: Local,
}

/// Per connection slot: which connection's pushes count, and a counter of
/// pushes that learners compare to detect a race.
struct SlotSync {
    lock: Mutex<()>,
    pushes: AtomicU64,
    conn: AtomicU64,
    subscribed: AtomicBool,
}

impl Hub {
    /// `channel`: the channel's name; `slots`: how many connections serve
    /// the cache.
    pub(crate) fn new(
        channel: String,
        slots: usize,
        in_process: bool,
        ordered: bool,
        local: Local,
    ) -> Hub {
        Hub {
            channel,
            namespaces: RwLock::new(HashMap::new()),
            slots: (0..slots)
                .map(|_| SlotSync {
                    lock: Mutex::new(()),
                    pushes: AtomicU64::new(0),
                    conn: AtomicU64::new(0),
                    subscribed: AtomicBool::new(false),
                })
                .collect(),
            flushes: AtomicU64::new(0),
            subscribed: AtomicUsize::new(0),
            in_process,
            ordered,
            local,
        }
    }

    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// The channel state of namespace `name`, made on first use.
    pub(crate) fn register(&self, name: &str) -> Arc<NsCoherence> {
        if let Some(ns) = read(&self.namespaces).get(name) {
            return Arc::clone(ns);
        }
        let mut map = write(&self.namespaces);
        let ns = map.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(NsCoherence {
                views: (0..self.slots.len()).map(|_| AtomicU64::new(0)).collect(),
                local_seq: AtomicU64::new(0),
                local_epoch: AtomicU64::new(0),
            })
        });
        Arc::clone(ns)
    }

    /// Can the local tier take new entries: is some connection subscribed
    /// (or is the backend in process)? Returns the flush epoch to compare
    /// at insertion.
    pub(crate) fn local_epoch(&self) -> Option<u64> {
        let flushes = self.flushes.load(SeqCst);
        (self.in_process || self.subscribed.load(SeqCst) > 0).then_some(flushes)
    }

    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(SeqCst)
    }

    fn each_namespace(&self, f: impl Fn(&NsCoherence)) {
        for ns in read(&self.namespaces).values() {
            f(ns);
        }
    }

    fn namespace(&self, name: &str) -> Option<Arc<NsCoherence>> {
        read(&self.namespaces).get(name).cloned()
    }

    /// Connection `conn` is about to serve slot `slot`: forget the views of
    /// the connection before it.
    pub(crate) fn begin_connection(&self, slot: usize, conn: u64) {
        let s = &self.slots[slot];
        let _g = lock(&s.lock);
        s.pushes.fetch_add(1, SeqCst);
        s.conn.store(conn, SeqCst);
        if s.subscribed.swap(false, SeqCst) {
            self.subscribed.fetch_sub(1, SeqCst);
            self.flush_local();
        }
        self.each_namespace(|ns| ns.views[slot].store(0, SeqCst));
    }

    /// The slot's connection confirmed its subscription.
    pub(crate) fn subscribed(&self, slot: usize, conn: u64) {
        let s = &self.slots[slot];
        let _g = lock(&s.lock);
        if s.conn.load(SeqCst) == conn && !s.subscribed.swap(true, SeqCst) {
            self.subscribed.fetch_add(1, SeqCst);
        }
    }

    /// Is `conn` the slot's current, subscribed connection, whose pushes
    /// arrive in order with its replies?
    pub(crate) fn is_live(&self, slot: usize, conn: u64) -> bool {
        let s = &self.slots[slot];
        self.ordered && s.subscribed.load(SeqCst) && s.conn.load(SeqCst) == conn
    }

    /// The push count of a slot, read before an `MGET` that may teach a view.
    pub(crate) fn pushes(&self, slot: usize) -> u64 {
        self.slots[slot].pushes.load(SeqCst)
    }

    /// Teaches `view` the generation an `MGET` on `conn` returned, if no push
    /// arrived on the slot since `pushes_before` and `conn` still serves it.
    pub(crate) fn learn(
        &self,
        slot: usize,
        conn: u64,
        pushes_before: u64,
        view: &AtomicU64,
        token: u64,
    ) {
        if token == 0 || !self.ordered {
            return;
        }
        let s = &self.slots[slot];
        let _g = lock(&s.lock);
        if s.pushes.load(SeqCst) == pushes_before
            && s.conn.load(SeqCst) == conn
            && s.subscribed.load(SeqCst)
        {
            view.store(token, SeqCst);
        }
    }

    /// Forgets the namespace's views on every slot (a store was refused for
    /// its generation): counted as a push, so no learn in flight puts the
    /// old one back.
    pub(crate) fn forget_views(&self, ns: &NsCoherence) {
        for (i, s) in self.slots.iter().enumerate() {
            let _g = lock(&s.lock);
            s.pushes.fetch_add(1, SeqCst);
            if let Some(v) = ns.views.get(i) {
                v.store(0, SeqCst);
            }
        }
    }

    fn flush_local(&self) {
        self.flushes.fetch_add(1, SeqCst);
        self.local.clear();
    }

    /// Applies an invalidation of a whole namespace to the local tier.
    pub(crate) fn local_namespace_invalidated(&self, ns: &NsCoherence) {
        ns.local_seq.fetch_add(1, SeqCst);
        ns.local_epoch.fetch_add(1, SeqCst);
    }

    /// Applies an invalidation of one entry to the local tier.
    pub(crate) fn local_key_invalidated(&self, ns: &NsCoherence, key: &str) {
        ns.local_seq.fetch_add(1, SeqCst);
        self.local.remove(key);
    }

    /// A message that connection `conn` of slot `slot` received on the
    /// channel, handed over in stream order (before any later reply on the
    /// connection completes).
    pub(crate) fn on_message(&self, slot: usize, conn: u64, payload: &[u8]) {
        let Some(msg) = Message::parse(payload) else {
            return;
        };
        let s = &self.slots[slot];
        let _g = lock(&s.lock);
        let current = s.conn.load(SeqCst) == conn;
        if current {
            s.pushes.fetch_add(1, SeqCst);
        }
        match msg {
            Message::Generation { ns, token } => {
                if let Some(state) = self.namespace(ns) {
                    if current && self.ordered {
                        state.views[slot].store(token, SeqCst);
                    }
                    self.local_namespace_invalidated(&state);
                }
            }
            Message::Key { ns, key } => {
                if let Some(state) = self.namespace(ns) {
                    self.local_key_invalidated(&state, key);
                }
            }
            // The local tier does not know which entries carry the tag.
            Message::Tag { ns } => {
                if let Some(state) = self.namespace(ns) {
                    self.local_namespace_invalidated(&state);
                }
            }
        }
    }

    /// Connection `conn` of slot `slot` is gone: messages may be lost from
    /// here on.
    pub(crate) fn on_disconnect(&self, slot: usize, conn: u64) {
        let s = &self.slots[slot];
        let _g = lock(&s.lock);
        if s.conn.load(SeqCst) == conn {
            s.pushes.fetch_add(1, SeqCst);
            // No connection serves the slot any more: a subscription
            // confirmed after this (a race) must not count.
            s.conn.store(0, SeqCst);
            if s.subscribed.swap(false, SeqCst) {
                self.subscribed.fetch_sub(1, SeqCst);
            }
            self.each_namespace(|ns| ns.views[slot].store(0, SeqCst));
        }
        self.flush_local();
    }
}
