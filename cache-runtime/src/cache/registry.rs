//! The namespaces a cache has met, and their state: counters, queued
//! invalidations, the channel's per-namespace state. A `#[cached]` call site
//! finds it through its [`NsSlot`] without a lock or a reference count;
//! everything else through the cache's map.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;

use super::{Cache, Site};
use crate::coherence::NsCoherence;
use crate::key::{self, KeyError, layout};
use crate::stats::{Counters, Counts, Histograms};
use crate::sync::{read, write};

/// Per-namespace state shared by every call of the namespace.
pub(crate) struct NsState {
    pub(crate) name: String,
    pub(crate) generation_key: String,
    pub(crate) counters: Counters,
    /// Compute time and value size (reported with the `metrics` feature).
    pub(crate) histograms: Histograms,
    /// A namespace invalidation is queued for retry: reads bypass the cache.
    pub(crate) pending_namespace: AtomicBool,
    /// Number of queued key invalidations of this namespace.
    pub(crate) pending_keys: AtomicUsize,
    /// What the invalidation channel keeps for the namespace (views, local
    /// tier epochs).
    pub(crate) coherence: Arc<NsCoherence>,
    /// The schema of the namespace's last `#[cached]` reader in this
    /// process (0: none yet), which a put's value must have.
    pub(crate) reader_schema: AtomicU64,
    /// The stale and fail-safe windows of that reader, in ms: a put's
    /// entry stays in Redis for its TTL plus these, as a reader's does.
    pub(crate) reader_linger_ms: AtomicU64,
    /// Entries of this namespace have deps (nested caching): its reads
    /// fetch the deps' values with the entry (`deps.lua`).
    pub(crate) has_deps: AtomicBool,
    /// A put of another schema was logged.
    pub(crate) put_mismatch_logged: AtomicBool,
    /// A fail-safe value was served since the body last succeeded (logged).
    pub(crate) fail_safe_logged: AtomicBool,
    /// In Cluster mode, the namespace's own circuit breaker: its keys share
    /// one slot, so one node, and a failing node must not pause the
    /// namespaces of the healthy ones (`None`: the cache's one breaker).
    pub(crate) breaker: Option<crate::breaker::Breaker>,
}

/// Where a `#[cached]` call site keeps the state of its namespace in the
/// first cache it is called with. Not public API.
#[doc(hidden)]
pub struct NsSlot {
    cell: OnceLock<(u64, Arc<NsState>)>,
    /// The site's entry-key prefix (`prefix:{ns}:`) in that cache.
    key_prefix: OnceLock<(u64, Box<str>)>,
    /// The site's schema in that cache, and the type parameters it is for
    /// (the first instantiation a generic site meets keeps the fast path).
    schema: OnceLock<(u64, Box<[&'static str]>, u64)>,
}

impl NsSlot {
    /// An empty slot (a `static` in the generated code).
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        NsSlot {
            cell: OnceLock::new(),
            key_prefix: OnceLock::new(),
            schema: OnceLock::new(),
        }
    }

    /// The site's schema in cache `cache_id` for these type parameters,
    /// computed once for the first ones it meets.
    pub(crate) fn schema(
        &self,
        cache_id: u64,
        generics: &[&'static str],
        compute: impl FnOnce() -> u64,
    ) -> u64 {
        let same = |kept: &[&'static str]| {
            kept.len() == generics.len()
                && kept
                    .iter()
                    .zip(generics)
                    .all(|(a, b)| std::ptr::eq(*a, *b) || a == b)
        };
        match self.schema.get() {
            Some((id, kept, schema)) if *id == cache_id && same(kept) => *schema,
            _ => {
                let schema = compute();
                let _ = self.schema.set((cache_id, generics.into(), schema));
                schema
            }
        }
    }
}

/// A namespace's state, from a call site's slot or from the cache's map.
pub(crate) enum StateRef {
    Static(&'static Arc<NsState>),
    Owned(Arc<NsState>),
}

impl StateRef {
    pub(crate) fn as_arc(&self) -> &Arc<NsState> {
        match self {
            StateRef::Static(s) => s,
            StateRef::Owned(s) => s,
        }
    }
}

impl std::ops::Deref for StateRef {
    type Target = NsState;
    fn deref(&self) -> &NsState {
        match self {
            StateRef::Static(s) => s,
            StateRef::Owned(s) => s,
        }
    }
}

/// The cache's namespaces by name.
#[derive(Default)]
pub(crate) struct Registry {
    map: RwLock<HashMap<String, Arc<NsState>>>,
}

impl Registry {
    /// Every namespace's counters.
    pub(crate) fn counts(&self) -> BTreeMap<String, Counts> {
        read(&self.map)
            .values()
            .map(|ns| (ns.name.clone(), ns.counters.snapshot()))
            .collect()
    }
}

impl Cache {
    /// The namespace's state; through `slot` (one per `#[cached]` call
    /// site) without a lock or a reference count once the site has seen
    /// this cache.
    pub(crate) fn state_at(
        &self,
        ns: &str,
        slot: Option<&'static NsSlot>,
        site: Option<Site>,
    ) -> Option<StateRef> {
        if let Some((id, state)) = slot.and_then(|s| s.cell.get())
            && *id == self.inner.id
        {
            return Some(StateRef::Static(state));
        }
        let state = self.state(ns)?;
        if let Some(site) = site {
            self.inner.links.reader(&state.name, site);
        }
        if let Some(s) = slot {
            // The first cache a call site sees keeps the fast path.
            let _ = s.cell.set((self.inner.id, Arc::clone(&state)));
        }
        Some(StateRef::Owned(state))
    }

    /// The namespace's state, made on first use; `None` (logged) for a name
    /// keys cannot carry.
    pub(crate) fn state(&self, ns: &str) -> Option<Arc<NsState>> {
        let inner = &*self.inner;
        if let Some(s) = read(&inner.registry.map).get(ns) {
            return Some(Arc::clone(s));
        }
        if let Err(e) = layout::validate_name("namespace", ns) {
            tracing::error!("cache-aside: {e}; the call bypasses the cache");
            return None;
        }
        let mut map = write(&inner.registry.map);
        let state = map.entry(ns.to_owned()).or_insert_with(|| {
            let (counters, histograms) = Counters::new(ns);
            Arc::new(NsState {
                name: ns.to_owned(),
                generation_key: layout::generation_key(&inner.prefix, ns),
                counters,
                histograms,
                pending_namespace: AtomicBool::new(false),
                pending_keys: AtomicUsize::new(0),
                coherence: inner.hub.register(ns),
                reader_schema: AtomicU64::new(0),
                reader_linger_ms: AtomicU64::new(0),
                has_deps: AtomicBool::new(false),
                put_mismatch_logged: AtomicBool::new(false),
                fail_safe_logged: AtomicBool::new(false),
                breaker: inner.backend.is_cluster().then(|| inner.breaker.like()),
            })
        });
        Some(Arc::clone(state))
    }

    /// [`Cache::entry_key`] from a `#[cached]` call site: the prefix, fixed
    /// per site, is built once.
    pub(crate) fn entry_key_at<K: Serialize + ?Sized>(
        &self,
        slot: &NsSlot,
        ns: &str,
        key: &K,
    ) -> Result<String, KeyError> {
        let mut out = match slot.key_prefix.get() {
            Some((id, p)) if *id == self.inner.id => {
                let mut out = String::with_capacity(p.len() + 32);
                out.push_str(p);
                out
            }
            _ => {
                let p = layout::entry_key_prefix(&self.inner.prefix, ns);
                let _ = slot.key_prefix.set((self.inner.id, p.as_str().into()));
                p
            }
        };
        key::write_args(&mut out, key)?;
        Ok(out)
    }
}
