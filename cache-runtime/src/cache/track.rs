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
//! instead, so any key change of that namespace reaches it. That swap is
//! made only with an any-key value known to have held before each of the
//! buckets was read (read in the same round trip as each of them, or one
//! an inner computation collapsed to); otherwise the value is not stored.
//! A token the body saw with two values (it read both sides of an
//! invalidation) also stores nothing.
//! So a key invalidation of airport X makes a miss of every outer entry
//! that read X, of those whose other airports share a bucket with X (1 in
//! 256 per airport read), and of those that read more than 16 buckets of
//! airports; never of one that read no airport.
//!
//! Bounds: an entry depends on at most 1 + 16 tokens per inner namespace
//! (its generation and its buckets, or the any-key token) whatever the
//! number of entries read, plus tags; at most [`MAX_DEPS`] in all. Past
//! that, or when a token could not be known (an inner read under a
//! namespace, key or tag fence, a coalesced, stale or fail-safe inner
//! value, an outage), the outer value is returned and
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
    /// Generations an inner read found missing (and the entry key of that
    /// read), which its own claim makes: recorded when that call computes
    /// under one, else the value is not stored. Another call's record of
    /// the same generation does not stand for it: it may come after an
    /// invalidation the first call's value predates.
    pending: Vec<(String, String)>,
    /// Per inner namespace (`"{prefix}:{ns}:#k:"`) with bucket deps: an
    /// any-key token value that held no later than every one of them was
    /// read (`None`: not known), which alone may replace them.
    cover: Vec<(String, Option<Vec<u8>>)>,
    /// A dep could not be known: the value must not be stored.
    unknown: bool,
}

impl Track {
    /// Records that the body read under `key` holding `value` (a
    /// generation, a tag, or a dep of an entry it read). The same key
    /// seen with two values was invalidated while the body ran: the value
    /// is not stored.
    pub(crate) fn record(&self, key: &str, value: &[u8]) {
        lock(&self.inner).record(key, value, None);
    }

    /// Records a read of the bucket token `key` holding `value`, with the
    /// namespace's any-key token read in the same round trip as `any`.
    pub(crate) fn record_bucket(&self, key: &str, value: &[u8], any: &[u8]) {
        lock(&self.inner).record(key, value, Some(any));
    }

    /// An inner read of `entry_key` found no generation under `key`: the
    /// same call must record one (its claim's, or a later read's) before
    /// the value may be stored.
    pub(crate) fn pending(&self, key: &str, entry_key: &str) {
        let mut d = lock(&self.inner);
        if !d.pending.iter().any(|(k, e)| k == key && e == entry_key) {
            d.pending.push((key.to_owned(), entry_key.to_owned()));
        }
    }

    /// [`record`](Self::record) of the generation `key` by the call that
    /// reads `entry_key` (its claim's, or one it read): settles that
    /// call's pending generation.
    pub(crate) fn record_by(&self, key: &str, value: &[u8], entry_key: &str) {
        let mut d = lock(&self.inner);
        d.pending.retain(|(k, e)| !(k == key && e == entry_key));
        d.record(key, value, None);
    }

    /// A dep the body read cannot be known: its value is not stored.
    pub(crate) fn unknown(&self) {
        lock(&self.inner).unknown = true;
    }

    /// Adds an inner computation's deps (its entry's, which the outer one
    /// inherits), its buckets with the cover it knew for them.
    pub(crate) fn merge(&self, other: &Track) {
        let o = {
            let o = lock(&other.inner);
            Deps {
                list: o.list.clone(),
                pending: o.pending.clone(),
                cover: o.cover.clone(),
                unknown: o.unknown,
            }
        };
        let mut d = lock(&self.inner);
        if o.unknown || !o.pending.is_empty() {
            d.unknown = true;
        }
        for (k, v) in &o.list {
            let cover = bucket_ns(k).and_then(|ns| o.cover_of(ns));
            d.record(k, v, cover);
        }
    }

    /// The deps, or `None` if one could not be known.
    pub(crate) fn deps(&self) -> Option<Vec<(String, Vec<u8>)>> {
        let d = lock(&self.inner);
        (!d.unknown && d.pending.is_empty()).then(|| d.list.clone())
    }
}

impl Deps {
    fn cover_of(&self, ns: &str) -> Option<&[u8]> {
        self.cover
            .iter()
            .find(|(n, _)| n == ns)
            .and_then(|(_, c)| c.as_deref())
    }

    /// A bucket of `ns` enters the list, read no earlier than `cover`
    /// held: the namespace's cover stays known only if every bucket
    /// agrees on it (token values never repeat, so equal values held
    /// over one interval).
    fn cover_bucket(&mut self, ns: &str, cover: Option<&[u8]>) {
        match self.cover.iter_mut().find(|(n, _)| n == ns) {
            None => self.cover.push((ns.to_owned(), cover.map(<[u8]>::to_vec))),
            Some((_, known)) => {
                if known.as_deref() != cover {
                    *known = None;
                }
            }
        }
    }

    fn record(&mut self, key: &str, value: &[u8], cover: Option<&[u8]>) {
        if let Some((_, seen)) = self.list.iter().find(|(k, _)| k == key) {
            if seen != value {
                // Changed between two reads of the body: it read both
                // sides of an invalidation.
                self.unknown = true;
            }
            return;
        }
        if let Some(ns) = any_ns(key) {
            // An any-key dep (of an entry read, or an inner computation's):
            // it replaces the namespace's buckets only if it held before
            // each of them was read.
            if self.list.iter().any(|(k, _)| k.starts_with(ns)) {
                if self.cover_of(ns) != Some(value) {
                    self.unknown = true;
                    return;
                }
                self.list.retain(|(k, _)| !k.starts_with(ns));
            }
            self.cover.retain(|(n, _)| n != ns);
            self.cover.push((ns.to_owned(), Some(value.to_vec())));
            self.list.push((key.to_owned(), value.to_vec()));
        } else if let Some(ns) = bucket_ns(key) {
            let any = format!("{ns}*");
            if let Some((_, held)) = self.list.iter().find(|(k, _)| *k == any) {
                // Covered by the any-key dep only if that value held when
                // this bucket was read.
                if cover != Some(held.as_slice()) {
                    self.unknown = true;
                }
                return;
            }
            self.cover_bucket(ns, cover);
            let n = self.list.iter().filter(|(k, _)| k.starts_with(ns)).count();
            if n >= MAX_BUCKETS {
                let Some(first) = self.cover_of(ns).map(<[u8]>::to_vec) else {
                    self.unknown = true;
                    return;
                };
                self.list.retain(|(k, _)| !k.starts_with(ns));
                self.list.push((any, first));
                return;
            }
            self.list.push((key.to_owned(), value.to_vec()));
        } else {
            self.list.push((key.to_owned(), value.to_vec()));
        }
        if self.list.len() > MAX_DEPS {
            self.unknown = true;
        }
    }
}

/// `"{prefix}:{ns}:#k:"` of a bucket token key.
fn bucket_ns(key: &str) -> Option<&str> {
    let at = key.rfind("#k:")? + 3;
    key[at..]
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| &key[..at])
        .filter(|_| at < key.len())
}

/// `"{prefix}:{ns}:#k:"` of an any-key token key.
fn any_ns(key: &str) -> Option<&str> {
    key.strip_suffix('*').filter(|p| p.ends_with("#k:"))
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

    fn bucket(ns: &str, b: usize) -> String {
        format!("p:{{{ns}}}:#k:{b}")
    }

    #[test]
    fn past_16_buckets_of_a_namespace_the_any_key_token() {
        let t = Track::default();
        t.record("p:{a}:#gen", b"g");
        for b in 0..MAX_BUCKETS {
            t.record_bucket(&bucket("a", b), b"t", b"any1");
        }
        assert_eq!(t.deps().unwrap().len(), 1 + MAX_BUCKETS);
        t.record_bucket(&bucket("a", 200), b"t", b"any1");
        let deps = t.deps().unwrap();
        assert_eq!(
            deps,
            vec![
                ("p:{a}:#gen".to_owned(), b"g".to_vec()),
                ("p:{a}:#k:*".to_owned(), b"any1".to_vec())
            ],
            "the any-key token replaces the buckets"
        );
        t.record_bucket(&bucket("a", 201), b"t", b"any1");
        assert_eq!(t.deps().unwrap().len(), 2);
        // Another namespace keeps its buckets.
        t.record_bucket(&bucket("b", 3), b"t", b"other");
        assert_eq!(t.deps().unwrap().len(), 3);
        // A bucket read after a key of `a` changed: not covered.
        t.record_bucket(&bucket("a", 202), b"t", b"any2");
        assert!(t.deps().is_none());
    }

    #[test]
    fn a_collapse_needs_a_cover_older_than_every_bucket() {
        // Buckets inherited from an entry's deps have no cover.
        let u = Track::default();
        for b in 0..=MAX_BUCKETS {
            u.record(&bucket("c", b), b"t");
        }
        assert!(u.deps().is_none());
        // A bucket from an entry read first, then reads after a change of
        // a key of the namespace (a newer any-key value): collapsing to the
        // newer value would hide the first bucket's invalidation.
        let t = Track::default();
        t.record(&bucket("a", 0), b"old");
        for b in 1..=MAX_BUCKETS {
            t.record_bucket(&bucket("a", b), b"t", b"after");
        }
        assert!(t.deps().is_none(), "{:?}", t.deps());
        // Two reads that disagree on the cover: no collapse either.
        let t = Track::default();
        t.record_bucket(&bucket("a", 0), b"t", b"before");
        for b in 1..=MAX_BUCKETS {
            t.record_bucket(&bucket("a", b), b"t", b"after");
        }
        assert!(t.deps().is_none());
    }

    #[test]
    fn merged_any_key_deps_must_agree_with_what_is_known() {
        // An inner computation that collapsed to `v`, merged into a body
        // whose buckets were read under `v`: the collapse stands.
        let inner = Track::default();
        for b in 0..=MAX_BUCKETS {
            inner.record_bucket(&bucket("a", b), b"t", b"v");
        }
        let outer = Track::default();
        outer.record_bucket(&bucket("a", 100), b"t", b"v");
        outer.merge(&inner);
        assert_eq!(
            outer.deps().unwrap(),
            vec![("p:{a}:#k:*".to_owned(), b"v".to_vec())]
        );
        // Under another value: not stored.
        let outer = Track::default();
        outer.record_bucket(&bucket("a", 100), b"t", b"w");
        outer.merge(&inner);
        assert!(outer.deps().is_none());
        // A bucket an inner computation read under an older any-key value
        // than the outer's any-key dep: not covered.
        let older = Track::default();
        older.record_bucket(&bucket("a", 7), b"t", b"u");
        let outer = Track::default();
        outer.merge(&inner);
        outer.merge(&older);
        assert!(outer.deps().is_none());
        // An inner merge carrying its cover: covered.
        let same = Track::default();
        same.record_bucket(&bucket("a", 7), b"t", b"v");
        let outer = Track::default();
        outer.merge(&inner);
        outer.merge(&same);
        assert_eq!(outer.deps().unwrap().len(), 1);
    }

    #[test]
    fn a_token_seen_with_two_values_stores_nothing() {
        let t = Track::default();
        t.record("p:{a}:#gen", b"g1");
        t.record("p:{a}:#gen", b"g1");
        assert!(t.deps().is_some());
        let inner = Track::default();
        inner.record("p:{a}:#gen", b"g0");
        t.merge(&inner);
        assert!(
            t.deps().is_none(),
            "the inner value was read before an invalidation"
        );
        let t = Track::default();
        t.record_bucket(&bucket("a", 1), b"x", b"v");
        t.record_bucket(&bucket("a", 1), b"y", b"w");
        assert!(t.deps().is_none());
    }

    #[test]
    fn a_pending_generation_is_settled_only_by_its_own_call() {
        let t = Track::default();
        t.pending("p:{a}:#gen", "p:{a}:x");
        t.record("p:{a}:#gen", b"g");
        t.record_by("p:{a}:#gen", b"g", "p:{a}:y");
        assert!(t.deps().is_none(), "another call's generation");
        t.record_by("p:{a}:#gen", b"g", "p:{a}:x");
        assert!(t.deps().is_some());
    }
}
