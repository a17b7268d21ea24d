//! The local (L1) tier: a bounded moka cache of encoded values (and, for
//! `Clone` value types of `#[cached]` fns, the decoded value, kept by the
//! first local hit) in front of Redis, opt-in per call (`#[cached(local = "10s")]`) or per cache
//! ([`CacheBuilder::local`](crate::CacheBuilder::local)).
//!
//! An entry is served only while all of these hold:
//! * its local TTL (short, by design) and the entry's own TTL have not
//!   passed;
//! * no invalidation of its namespace arrived since the read that produced
//!   it (the namespace's `local_epoch`);
//! * no subscription was lost since then (the hub's flush epoch): while no
//!   connection is subscribed, nothing new is inserted, and what was there
//!   was flushed when the subscription dropped.
//!
//! Key invalidations remove the key. A read that misses L1 notes the
//! namespace's `local_seq` *before* it goes to Redis, and inserts only if no
//! invalidation of the namespace arrived since (checked again after the
//! insert): the placeholder that keeps a miss in flight from inserting a
//! value an invalidation already replaced.

use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moka::sync::Cache as Moka;

/// One locally cached value.
pub(crate) struct LocalEntry {
    /// The codec payload.
    pub payload: Box<[u8]>,
    /// The value decoded, kept by the first local hit of a `Clone` value
    /// type (see `Keeper`): later hits clone it instead of decoding.
    pub decoded: OnceLock<Arc<dyn Any + Send + Sync>>,
    /// Inserted by a call that keeps decoded values (weighed for it).
    kept: bool,
    /// The schema it was stored under (see `schema.rs`).
    pub schema: u64,
    epoch: u64,
    flushes: u64,
    expires: Instant,
}

/// What a read noted before it went to Redis: where the namespace and the
/// channel stood.
#[derive(Clone, Copy)]
pub(crate) struct Ticket {
    pub seq: u64,
    pub epoch: u64,
    pub flushes: u64,
}

struct PerEntry;

impl moka::Expiry<String, Arc<LocalEntry>> for PerEntry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<LocalEntry>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.expires.saturating_duration_since(created_at))
    }
}

/// The bounded local cache (weighed in bytes).
pub(crate) struct Local {
    map: Option<Moka<String, Arc<LocalEntry>>>,
}

impl Local {
    pub(crate) fn new(max_bytes: u64) -> Local {
        let map = (max_bytes > 0).then(|| {
            Moka::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &Arc<LocalEntry>| {
                    // An entry that keeps its decoded value (`kept`) counts
                    // its payload twice: a rough guess at the value's size.
                    let payload = v.payload.len() * if v.kept { 2 } else { 1 };
                    u32::try_from(k.len() + payload + 64).unwrap_or(u32::MAX)
                })
                .expire_after(PerEntry)
                .build()
        });
        Local { map }
    }

    /// A live entry for `key`, if its epochs still hold.
    pub(crate) fn get(&self, key: &str, epoch: u64, flushes: u64) -> Option<Arc<LocalEntry>> {
        let e = self.map.as_ref()?.get(key)?;
        (e.epoch == epoch && e.flushes == flushes && Instant::now() < e.expires).then_some(e)
    }

    pub(crate) fn insert(
        &self,
        key: &str,
        payload: &[u8],
        schema: u64,
        ticket: Ticket,
        ttl: Duration,
        kept: bool,
    ) -> bool {
        let Some(map) = &self.map else {
            return false;
        };
        let Some(expires) = Instant::now().checked_add(ttl) else {
            return false;
        };
        map.insert(
            key.to_owned(),
            Arc::new(LocalEntry {
                payload: payload.into(),
                decoded: OnceLock::new(),
                kept,
                schema,
                epoch: ticket.epoch,
                flushes: ticket.flushes,
                expires,
            }),
        );
        true
    }

    pub(crate) fn remove(&self, key: &str) {
        if let Some(map) = &self.map {
            map.invalidate(key);
        }
    }

    pub(crate) fn clear(&self) {
        if let Some(map) = &self.map {
            map.invalidate_all();
        }
    }
}
