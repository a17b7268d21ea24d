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
//! A key's bucket token (`{prefix}:{ns}:#k:<0..256>`, in the inner
//! namespace's slot) and the namespace's any-key token (`..:#k:*`) get a
//! fresh value whenever a key of that bucket (of the namespace) is
//! invalidated, fenced, or written by a put (`tombstone.lua`, `claim.lua`,
//! `store.lua`), where they exist; a tracked read makes them where they are
//! missing. An outer entry depends on the buckets of the keys it read, up
//! to [`MAX_BUCKETS`] per inner namespace; past that on the any-key token
//! instead (as first read), so any key change of that namespace reaches it.
//! So a key invalidation of airport X makes a miss of every outer entry
//! that read X, of those whose other airports share a bucket with X (1 in
//! 256 per airport read), and of those that read more than 16 buckets of
//! airports; never of one that read no airport.
//!
//! Bounds: an entry depends on at most 1 + 16 tokens per inner namespace
//! (its generation and its buckets, or the any-key token) whatever the
//! number of entries read, plus tags; at most [`MAX_DEPS`] in all. Past
//! that, or when a token could
//! not be known (an inner read under a namespace fence, a coalesced, stale
//! or fail-safe inner value, an outage), the outer value is returned and
//! not stored. Calls in a task the body spawns are not tracked.

use std::sync::{Arc, Mutex};

use super::registry::NsState;
use crate::backend::Buckets;
use crate::sync::lock;

/// Key buckets per namespace.
pub(crate) const BUCKETS: u64 = 256;

/// The most bucket tokens an entry depends on per inner namespace; past
/// it, the namespace's any-key token.
pub(crate) const MAX_BUCKETS: usize = 16;

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
    /// Per inner namespace, its any-key token as first read.
    any: Vec<(String, Vec<u8>)>,
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
        if let Some(ns) = key.strip_suffix('*').filter(|p| p.ends_with("#k:")) {
            // An any-key dep (merged from an inner computation): it covers
            // the namespace's buckets, as first read.
            let value = d.first_any(key).unwrap_or(value).to_vec();
            d.list.retain(|(k, _)| !k.starts_with(ns));
            d.list.push((key.to_owned(), value));
        } else if let Some(ns) = bucket_ns(key) {
            let any = format!("{ns}*");
            if d.list.iter().any(|(k, _)| *k == any) {
                return;
            }
            let n = d.list.iter().filter(|(k, _)| k.starts_with(ns)).count();
            if n >= MAX_BUCKETS {
                let Some(first) = d.first_any(&any).map(<[u8]>::to_vec) else {
                    d.unknown = true;
                    return;
                };
                d.list.retain(|(k, _)| !k.starts_with(ns));
                d.list.push((any, first));
                return;
            }
            d.list.push((key.to_owned(), value.to_vec()));
        } else {
            d.list.push((key.to_owned(), value.to_vec()));
        }
        if d.list.len() > MAX_DEPS {
            d.unknown = true;
        }
    }

    /// A tracked read saw the namespace's any-key token `key` with
    /// `value`: kept if it is the first.
    pub(crate) fn note_any(&self, key: &str, value: &[u8]) {
        let mut d = lock(&self.inner);
        if d.first_any(key).is_none() {
            d.any.push((key.to_owned(), value.to_vec()));
        }
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
        let (list, any, unknown) = {
            let o = lock(&other.inner);
            (
                o.list.clone(),
                o.any.clone(),
                o.unknown || !o.pending.is_empty(),
            )
        };
        if unknown {
            self.unknown();
        }
        for (k, v) in any {
            self.note_any(&k, &v);
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

impl Deps {
    fn first_any(&self, key: &str) -> Option<&[u8]> {
        self.any
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// `"{prefix}:{ns}:#k:"` of a bucket token key.
fn bucket_ns(key: &str) -> Option<&str> {
    let at = key.rfind("#k:")? + 3;
    key[at..]
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| &key[..at])
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

/// The token keys a change of `entry_key` bumps: its bucket's and the
/// namespace's any-key token (in the namespace's slot).
pub(crate) struct KeyTokens {
    pub(crate) bucket: String,
    pub(crate) any: String,
}

impl KeyTokens {
    pub(crate) fn of(state: &NsState, entry_key: &str) -> KeyTokens {
        let prefix = state
            .generation_key
            .strip_suffix("#gen")
            .unwrap_or(&state.generation_key);
        let h = blake3::hash(entry_key.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&h.as_bytes()[..8]);
        KeyTokens {
            bucket: format!("{prefix}#k:{}", u64::from_be_bytes(first) % BUCKETS),
            any: format!("{prefix}#k:*"),
        }
    }

    pub(crate) fn buckets(&self) -> Buckets<'_> {
        Buckets {
            key: &self.bucket,
            any: &self.any,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_16_buckets_of_a_namespace_the_any_key_token() {
        let t = Track::default();
        t.note_any("p:{a}:#k:*", b"any1");
        t.record("p:{a}:#gen", b"g");
        for b in 0..MAX_BUCKETS {
            t.record(&format!("p:{{a}}:#k:{b}"), b"t");
        }
        t.note_any("p:{a}:#k:*", b"any2");
        assert_eq!(t.deps().unwrap().len(), 1 + MAX_BUCKETS);
        t.record("p:{a}:#k:200", b"t");
        let deps = t.deps().unwrap();
        assert_eq!(
            deps,
            vec![
                ("p:{a}:#gen".to_owned(), b"g".to_vec()),
                ("p:{a}:#k:*".to_owned(), b"any1".to_vec())
            ],
            "the any-key token as first read replaces the buckets"
        );
        t.record("p:{a}:#k:201", b"t");
        assert_eq!(t.deps().unwrap().len(), 2);
        // Another namespace keeps its buckets.
        t.record("p:{b}:#k:3", b"t");
        assert_eq!(t.deps().unwrap().len(), 3);
        // A collapse without a known any-key token: not stored.
        let u = Track::default();
        for b in 0..=MAX_BUCKETS {
            u.record(&format!("p:{{c}}:#k:{b}"), b"t");
        }
        assert!(u.deps().is_none());
    }
}
