//! The invalidation channel: every invalidation publishes a message on
//! `{prefix}:invalidations` from inside the script that applies it, and
//! every kept Redis connection subscribes to it (RESP3, so the same
//! connection also serves commands).
//!
//! Redis writes a published message into each subscriber's output stream
//! before it answers the publisher, and a connection's stream is one ordered
//! sequence of pushes and replies. redis-rs hands pushes to [`ConnSink`]
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

use redis::aio::AsyncPushSender;
use redis::{PushInfo, PushKind, Value};

use crate::cache::NsState;
use crate::entry::{TOKEN_LEN, Token};
use crate::local::Local;

/// A namespace generation token as a number (0: unknown). Tokens are 16
/// lowercase hex digits; anything else (a foreign value) is not learnable.
pub(crate) fn token_value(bytes: &[u8]) -> u64 {
    if bytes.len() != TOKEN_LEN {
        return 0;
    }
    // Eight digits at a time: this runs on every hit.
    match (hex8(bytes.get(..8)), hex8(bytes.get(8..))) {
        (Some(hi), Some(lo)) => (u64::from(hi) << 32) | u64::from(lo),
        _ => 0,
    }
}

/// Eight lowercase hex digits as a number, `None` if any byte is not one.
/// All bytes are looked at at once: with every byte below 0x80, adding a
/// constant below 0x80 sets a byte's top bit exactly when the byte is at
/// least 0x80 minus the constant, and never carries into the next byte.
fn hex8(digits: Option<&[u8]>) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOP: u64 = ONES * 0x80;
    let x = u64::from_be_bytes(digits?.try_into().ok()?);
    if x & TOP != 0 {
        return None;
    }
    let at_least = |c: u64| x + ONES * (0x80 - c);
    let digit = at_least(0x30) & !at_least(0x3a);
    let letter = at_least(0x61) & !at_least(0x67);
    if (digit | letter) & TOP != TOP {
        return None;
    }
    // Each byte's value ('a' is 0x61: low nibble 1, plus 9), then the
    // nibbles packed, first digit highest.
    let v = (x & (ONES * 0x0f)) + ((letter & TOP) >> 7) * 9;
    let v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    let v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    let v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
    u32::try_from(v).ok()
}

/// The 16 lowercase hex digits of a token value (the inverse of
/// [`token_value`]).
pub(crate) fn token_bytes(v: u64) -> Token {
    let mut t = [0u8; TOKEN_LEN];
    for (i, b) in t.iter_mut().enumerate() {
        let d = ((v >> (60 - 4 * i)) & 0xf) as u8;
        *b = if d < 10 { b'0' + d } else { b'a' + d - 10 };
    }
    t
}

/// State shared by the cache and the push handlers of its connections.
pub(crate) struct Hub {
    channel: String,
    pub(crate) namespaces: RwLock<HashMap<String, Arc<NsState>>>,
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

/// One invalidation, as published.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// `g <ns> <token>`: the namespace has a new generation.
    Generation { ns: &'a str, token: u64 },
    /// `k <ns> <entry key>`: one entry was invalidated.
    Key { ns: &'a str, key: &'a str },
}

impl Message<'_> {
    pub(crate) fn generation(ns: &str, token: &Token) -> Vec<u8> {
        let mut m = Vec::with_capacity(3 + ns.len() + TOKEN_LEN);
        m.extend_from_slice(b"g ");
        m.extend_from_slice(ns.as_bytes());
        m.push(b' ');
        m.extend_from_slice(token);
        m
    }

    pub(crate) fn key(ns: &str, key: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(3 + ns.len() + key.len());
        m.extend_from_slice(b"k ");
        m.extend_from_slice(ns.as_bytes());
        m.push(b' ');
        m.extend_from_slice(key.as_bytes());
        m
    }

    pub(crate) fn parse(bytes: &[u8]) -> Option<Message<'_>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (kind, rest) = text.split_once(' ')?;
        let (ns, arg) = rest.split_once(' ')?;
        match kind {
            "g" => Some(Message::Generation {
                ns,
                token: token_value(arg.as_bytes()),
            }),
            "k" => Some(Message::Key { ns, key: arg }),
            _ => None,
        }
    }
}

impl Hub {
    pub(crate) fn new(
        prefix: &str,
        slots: usize,
        in_process: bool,
        ordered: bool,
        local: Local,
    ) -> Hub {
        Hub {
            channel: format!("{prefix}:invalidations"),
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

    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
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

    fn each_namespace(&self, f: impl Fn(&NsState)) {
        let map = self.namespaces.read().unwrap_or_else(|p| p.into_inner());
        for ns in map.values() {
            f(ns);
        }
    }

    fn namespace(&self, name: &str) -> Option<Arc<NsState>> {
        let map = self.namespaces.read().unwrap_or_else(|p| p.into_inner());
        map.get(name).cloned()
    }

    /// Connection `conn` is about to serve slot `slot`: forget the views of
    /// the connection before it.
    pub(crate) fn begin_connection(&self, slot: usize, conn: u64) {
        let s = &self.slots[slot];
        let _g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
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
        let _g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
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
        let _g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
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
    pub(crate) fn forget_views(&self, ns: &NsState) {
        for (i, s) in self.slots.iter().enumerate() {
            let _g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
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
    pub(crate) fn local_namespace_invalidated(&self, ns: &NsState) {
        ns.local_seq.fetch_add(1, SeqCst);
        ns.local_epoch.fetch_add(1, SeqCst);
    }

    /// Applies an invalidation of one entry to the local tier.
    pub(crate) fn local_key_invalidated(&self, ns: &NsState, key: &str) {
        ns.local_seq.fetch_add(1, SeqCst);
        self.local.remove(key);
    }

    fn on_push(&self, slot: usize, conn: u64, info: PushInfo) {
        let s = &self.slots[slot];
        match info.kind {
            PushKind::Message => {
                let payload = match info.data.as_slice() {
                    [_channel, Value::BulkString(p)] => p,
                    _ => return,
                };
                let Some(msg) = Message::parse(payload) else {
                    return;
                };
                let _g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
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
                }
            }
            PushKind::Disconnection => {
                let _g = s.lock.lock().unwrap_or_else(|p| p.into_inner());
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
            _ => {}
        }
    }
}

/// The push handler of one connection: knows its slot and connection id, so
/// pushes of a replaced connection never touch its successor's views.
pub(crate) struct ConnSink {
    pub(crate) hub: Arc<Hub>,
    pub(crate) slot: usize,
    pub(crate) conn: u64,
}

impl AsyncPushSender for ConnSink {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        self.hub.on_push(self.slot, self.conn, info);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let t = crate::entry::token();
        let g = Message::generation("flight_count", &t);
        assert_eq!(
            Message::parse(&g),
            Some(Message::Generation {
                ns: "flight_count",
                token: token_value(&t)
            })
        );
        let k = Message::key("airport", "app:{airport}:v1:F R A");
        assert_eq!(
            Message::parse(&k),
            Some(Message::Key {
                ns: "airport",
                key: "app:{airport}:v1:F R A"
            })
        );
        assert_eq!(Message::parse(b"x y z"), None);
        assert_eq!(Message::parse(b"g"), None);
        assert_eq!(Message::parse(&[0xff, b' ', b'a', b' ', b'b']), None);
    }

    #[test]
    fn token_values() {
        assert_eq!(token_value(b"000000000000000a"), 10);
        assert_eq!(token_value(b"ffffffffffffffff"), u64::MAX);
        assert_eq!(token_value(b"000000000000000A"), 0);
        assert_eq!(token_value(b"short"), 0);
        assert_eq!(token_value(b"0123456789abcdef"), 0x0123_4567_89ab_cdef);
        // Any byte that is not a lowercase hex digit, at any position.
        let valid = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        for pos in 0..TOKEN_LEN {
            for c in 0..=255u8 {
                let mut t = *b"0123456789abcdef";
                t[pos] = c;
                let expect = if valid(c) {
                    u64::from_str_radix(std::str::from_utf8(&t).unwrap(), 16).unwrap()
                } else {
                    0
                };
                assert_eq!(token_value(&t), expect, "byte {c:#x} at {pos}");
            }
        }
        for _ in 0..1000 {
            let t = crate::entry::token();
            assert_eq!(token_bytes(token_value(&t)), t);
        }
    }
}
