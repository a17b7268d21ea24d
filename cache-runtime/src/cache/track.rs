//! Nested caching: an entry computed from other cached entries depends on
//! what its body read. While a `#[cached]` body runs, the cached calls
//! inside it (in the same task, at any depth) record in a task-local
//! [`Track`] the tokens they read their entries under, before they read
//! them: the inner namespace's generation, the inner key's *bucket* token,
//! the inner entry's tags, and the inner entry's own deps. The outer entry
//! is stored with that list (magic `0xCE`, see `entry/mod.rs`) and is live
//! only while every token still has its value, checked on every read
//! (`Lookup::read`): an invalidation of something it read makes it a miss,
//! in every process.
//!
//! A key's bucket token (`{prefix}:{ns}:#k:<0..32>`, in the inner
//! namespace's slot) gets a fresh value whenever a key of that bucket is
//! invalidated, fenced, or written by a put (`tombstone.lua`, `claim.lua`,
//! `store.lua`), where it exists; a tracked read makes it where it is
//! missing. So a key invalidation of airport X makes a miss of every
//! outer entry that read an airport of X's bucket: 1 in 32 of the others
//! needlessly, and never one that read no airport.
//!
//! Bounds: an entry depends on at most 1 + 32 tokens per inner namespace
//! (its generation and its buckets) whatever the number of entries read,
//! plus tags; at most [`MAX_DEPS`] in all. Past that, or when a token could
//! not be known (an inner read under a namespace fence, a coalesced, stale
//! or fail-safe inner value, an outage), the outer value is returned and
//! not stored. Calls in a task the body spawns are not tracked.

use std::sync::{Arc, Mutex};

use super::registry::NsState;
use crate::sync::lock;

/// Key buckets per namespace.
pub(crate) const BUCKETS: u64 = 32;

/// The most tokens an entry depends on.
pub(crate) const MAX_DEPS: usize = 64;

tokio::task_local! {
    static TRACK: Arc<Track>;
}

/// What a body's cached calls read: the deps of the entry it computes.
#[derive(Default)]
pub(crate) struct Track {
    inner: Mutex<Deps>,
}

#[derive(Default)]
struct Deps {
    list: Vec<(String, Vec<u8>)>,
    /// Generations an inner read found missing, which its claim makes:
    /// recorded when it computes under one, else the value is not stored.
    pending: Vec<String>,
    /// A dep could not be known: the value must not be stored.
    unknown: bool,
}

impl Track {
    /// Records that the body read under `key` holding `value`; the first
    /// value recorded for a key stays (the oldest, so an invalidation
    /// between two reads still makes the entry a miss).
    pub(crate) fn record(&self, key: &str, value: &[u8]) {
        let mut d = lock(&self.inner);
        d.pending.retain(|p| p != key);
        if d.list.iter().any(|(k, _)| k == key) {
            return;
        }
        if d.list.len() >= MAX_DEPS {
            d.unknown = true;
            return;
        }
        d.list.push((key.to_owned(), value.to_vec()));
    }

    /// An inner read found no generation under `key`: it must be recorded
    /// (by the inner computation's claim) before the value may be stored.
    pub(crate) fn pending(&self, key: &str) {
        let mut d = lock(&self.inner);
        if !d.list.iter().any(|(k, _)| k == key) && !d.pending.iter().any(|p| p == key) {
            d.pending.push(key.to_owned());
        }
    }

    /// A dep the body read cannot be known: its value is not stored.
    pub(crate) fn unknown(&self) {
        lock(&self.inner).unknown = true;
    }

    /// Adds an inner computation's deps (its entry's, which the outer one
    /// inherits).
    pub(crate) fn merge(&self, other: &Track) {
        let (list, unknown) = {
            let o = lock(&other.inner);
            (o.list.clone(), o.unknown || !o.pending.is_empty())
        };
        if unknown {
            self.unknown();
        }
        for (k, v) in list {
            self.record(&k, &v);
        }
    }

    /// The deps, or `None` if one could not be known.
    pub(crate) fn deps(&self) -> Option<Vec<(String, Vec<u8>)>> {
        let d = lock(&self.inner);
        (!d.unknown && d.pending.is_empty()).then(|| d.list.clone())
    }
}

/// The tracking context of the body the current task runs, if any.
pub(crate) fn current() -> Option<Arc<Track>> {
    TRACK.try_with(Arc::clone).ok()
}

/// `fut` (a body) with `track` as its tracking context.
pub(crate) fn scope<F: std::future::Future>(
    track: Arc<Track>,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    TRACK.scope(track, fut)
}

/// The bucket token key of `entry_key` in `state`'s namespace.
pub(crate) fn bucket_key(state: &NsState, entry_key: &str) -> String {
    let prefix = state
        .generation_key
        .strip_suffix("#gen")
        .unwrap_or(&state.generation_key);
    let h = blake3::hash(entry_key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    format!("{prefix}#k:{}", u64::from_be_bytes(first) % BUCKETS)
}
