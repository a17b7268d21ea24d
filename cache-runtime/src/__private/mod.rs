//! Support for the code `#[cached]`, `#[cache_put]` and `#[invalidates]` generate. Not
//! public API.

use std::future::Future;

use serde::{Serialize, de::DeserializeOwned};

pub use crate::cache::{
    Background, CallOptions, Compress, Inline, Keeper, NsSlot, Refresh, Sharer, Site, WithTtl,
};
use crate::cache::{Shape, Target, scope};
use crate::key::KeyError;
use crate::{Cache, Filter, global};

pub use crate::NoFilter;
pub use dispatch::*;

mod dispatch;

/// The cache a macro call uses: the explicit one, else the installed one.
#[inline]
pub fn resolve(explicit: Option<&Cache>) -> Option<&Cache> {
    match explicit {
        Some(c) => Some(c),
        None => global::installed_or_warn(),
    }
}

/// The namespace of a `#[cached]` fn without `ns`, from the `type_name` of a
/// closure in its body: its path (`key::layout::fn_path`) as a namespace
/// name (`key::layout::namespace_name`).
pub fn default_ns(instance: &str) -> String {
    use crate::key::layout;
    layout::namespace_name(&layout::fn_path(instance)).into_owned()
}

/// The part of a `#[cached]` fn's schema that tells its instantiations
/// apart: the closure `type_name` of [`default_ns`] when it has generic
/// arguments (of the impl, a trait or the fn), else nothing.
pub fn instance(instance: &'static str) -> &'static str {
    if instance.contains('<') { instance } else { "" }
}

/// `ns = CONST`: checked when the generated code is compiled (the rule of
/// `key::layout::validate_name`, in a `const` context).
pub const fn valid_ns(ns: &'static str) -> &'static str {
    let b = ns.as_bytes();
    if b.is_empty() || b.len() > 64 {
        panic!("a namespace has 1 to 64 characters: this constant cannot be one");
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-') {
            panic!(
                "a namespace has only ASCII letters, digits, `_`, `.` and `-`: this constant cannot be one"
            );
        }
        i += 1;
    }
    ns
}

/// One call of a `#[cached]` function, or the target of a key
/// invalidation: the key is built before the body's future takes
/// ownership of the arguments.
pub struct Call<'c> {
    cache: Option<&'c Cache>,
    ns: &'static str,
    slot: Option<&'static NsSlot>,
    site: Site,
    entry_key: Result<String, KeyError>,
    tags: Result<Vec<String>, KeyError>,
}

/// Builds the entry key (only when there is a cache to use). `slot`: the
/// `#[cached]` call site's (a key invalidation has none).
#[inline]
pub fn call<'c, K: Serialize + ?Sized>(
    slot: Option<&'static NsSlot>,
    site: Site,
    cache: Option<&'c Cache>,
    ns: &'static str,
    key: &K,
) -> Call<'c> {
    let entry_key = match (cache, slot) {
        (Some(c), Some(s)) => c.entry_key_at(s, ns, key),
        (Some(c), None) => c.entry_key(ns, key),
        (None, _) => Ok(String::new()),
    };
    Call {
        cache,
        ns,
        slot,
        site,
        entry_key,
        tags: Ok(Vec::new()),
    }
}

impl Call<'_> {
    /// `tags(name)` / `tags(name = expr)` of `#[cached]`: one tag's value,
    /// in the order of `CallOptions::tags`.
    #[inline]
    pub fn tag<V: TagArg + ?Sized>(mut self, name: &'static str, value: &V) -> Self {
        if let (Some(c), Ok(keys)) = (self.cache, &mut self.tags) {
            match value.__cache_aside_tag_key(c, self.ns, name) {
                Ok(k) => keys.push(k),
                Err(e) => self.tags = Err(e),
            }
        }
        self
    }

    fn target<'g>(self, generics: &'g [&'static str]) -> Target<'g> {
        Target {
            ns: self.ns,
            slot: self.slot,
            site: Some(self.site),
            key: self.entry_key,
            generics,
            tags: self.tags,
        }
    }

    /// `#[cached]` on a function that does not return `Result`. `generics`:
    /// the `type_name` of each type parameter of a generic fn.
    #[inline]
    pub async fn value<T, U, Fut, Rf>(
        self,
        opts: CallOptions,
        generics: &[&'static str],
        unless: U,
        keep: Option<Keeper<T>>,
        refresh: Rf,
        fut: Fut,
    ) -> T
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = T>,
        Rf: Refresh<T, T, U>,
    {
        match self.cache {
            Some(c) => {
                let target = self.target(generics);
                let shape = Shape::plain().kept(keep);
                c.run_key(target, &opts, &unless, fut, refresh, shape).await
            }
            None => uncached(fut).await,
        }
    }

    /// `#[cached]` on a function that returns `Result<T, E>`: only `Ok` is
    /// cached; with a `Clone` error, callers that waited for a failed
    /// computation get its error (`share`, from [`ShareProbe`]).
    #[inline]
    // Called only by the expansion, which passes each part as it finds it.
    #[allow(clippy::too_many_arguments)]
    pub async fn result<T, E, U, Fut, Rf>(
        self,
        opts: CallOptions,
        generics: &[&'static str],
        unless: U,
        share: Option<Sharer<Result<T, E>>>,
        keep: Option<Keeper<T>>,
        refresh: Rf,
        fut: Fut,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = Result<T, E>>,
        Rf: Refresh<T, Result<T, E>, U>,
    {
        match self.cache {
            Some(c) => {
                let target = self.target(generics);
                let shape = Shape::result(share).kept(keep);
                c.run_key(target, &opts, &unless, fut, refresh, shape).await
            }
            None => uncached(fut).await,
        }
    }

    /// `#[cache_put]` on a function that does not return `Result`. `ttl`:
    /// the TTL from the value (`ttl = f`), or [`NoFilter`].
    #[inline]
    pub async fn put_value<T, U, Fut>(self, opts: CallOptions, ttl: U, fut: Fut) -> T
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = T>,
    {
        match self.cache {
            Some(c) => {
                let target = self.target(&[]);
                c.put_key(target, &opts, &ttl, fut, Shape::plain()).await
            }
            None => fut.await,
        }
    }

    /// `#[cache_put]` on a function that returns `Result<T, E>`: `Ok` is
    /// stored; after an `Err` the key is left as the write's lease left it
    /// (a tombstone).
    #[inline]
    pub async fn put_result<T, E, U, Fut>(self, opts: CallOptions, ttl: U, fut: Fut) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.cache {
            Some(c) => {
                let target = self.target(&[]);
                c.put_key(target, &opts, &ttl, fut, Shape::result(None))
                    .await
            }
            None => fut.await,
        }
    }

    /// `#[invalidates(ns = "..", key(..))]`.
    /// Runs in a task of its own, so that a caller dropped after its write
    /// (a client gone, a timeout) does not lose the invalidation.
    pub async fn invalidate(self) {
        if let Some(c) = self.cache {
            c.note_key_writer(self.ns, self.site);
            let (c, ns, key) = (c.clone(), self.ns, self.entry_key);
            // The scope is the caller task's: taken before the spawn.
            let scope = scope::current();
            let work = c.invalidation_in_flight();
            let task = tokio::spawn(async move {
                let _work = work;
                c.invalidate_key_encoded(ns, key, scope.as_deref()).await
            });
            let _ = task.await;
        }
    }
}

/// `#[cached(ns = .., batch)]`: a batch read of `keys` (see `cache/batch.rs`).
#[allow(clippy::too_many_arguments)]
pub async fn batch<K, T, E, F, Fut>(
    cache: Option<&Cache>,
    slot: &'static NsSlot,
    site: Site,
    ns: &'static str,
    opts: CallOptions,
    keys: &[K],
    compute: F,
) -> Result<std::collections::HashMap<K, T>, E>
where
    K: Serialize + Eq + std::hash::Hash + Clone,
    T: Serialize + DeserializeOwned,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<std::collections::HashMap<K, T>, E>>,
{
    match cache {
        Some(c) => {
            let target = crate::cache::BatchTarget {
                ns,
                slot: Some(slot),
                site: Some(site),
                one_arg: true,
            };
            c.run_many(target, &opts, keys, compute).await
        }
        None => uncached(compute(keys.to_vec())).await,
    }
}

/// The bound of a batch fn's key type, reported at it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the key of a batch fn: it needs `Serialize + Eq + Hash + Clone`",
    label = "the key type"
)]
pub trait BatchKey: Serialize + Eq + std::hash::Hash + Clone {}
impl<K: Serialize + Eq + std::hash::Hash + Clone> BatchKey for K {}

/// Checks [`BatchKey`] at the key type's span.
#[inline(always)]
pub fn batch_key<K: BatchKey>() {}

async fn uncached<R>(fut: impl Future<Output = R>) -> R {
    let out = fut.await;
    crate::stats::report(crate::Status::NoCache);
    out
}

/// `#[invalidates(.., scoped)]`: the fn's callers promised a transaction
/// scope. Outside one, its invalidation lands before the caller's COMMIT,
/// so say so, once per fn.
pub fn expect_scope(site: Site) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static WARNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    if scope::current().is_some() {
        return;
    }
    let mut warned = crate::sync::lock(&WARNED);
    if warned.get_or_insert_with(HashSet::new).insert(site.fn_raw) {
        tracing::error!(
            "cache-aside: `{}` is `scoped` but was called outside `cache_aside::transaction`: \
             its invalidation lands before the transaction commits, and a read in between can \
             cache the old value",
            crate::key::layout::fn_path(site.fn_raw)
        );
    }
}

/// One `tag(..)` of `#[invalidates]`: the tag's token key, built before
/// the body takes the arguments.
pub struct TagTarget<'c> {
    cache: Option<&'c Cache>,
    ns: &'static str,
    tag_key: Result<String, KeyError>,
}

/// The cache and namespace of a `tag(..)` (see [`TagTarget`]).
pub struct TagIn<'c>(pub Option<&'c Cache>, pub &'static str);

impl<'c> TagIn<'c> {
    /// The tag `tag` with `value`.
    pub fn tag<V: TagArg + ?Sized>(self, tag: &'static str, value: &V) -> TagTarget<'c> {
        let TagIn(cache, ns) = self;
        let tag_key = match cache {
            Some(c) => value.__cache_aside_tag_key(c, ns, tag),
            None => Ok(String::new()),
        };
        TagTarget { cache, ns, tag_key }
    }
}

impl TagTarget<'_> {
    /// Invalidates the entries of the tag value. Runs in a task of its own,
    /// like a key invalidation.
    pub async fn invalidate(self, site: Site) {
        let Some(c) = self.cache else {
            return;
        };
        c.note_writer(self.ns, site);
        let Some(state) = c.state(self.ns) else {
            return;
        };
        let (c, ns, tag_key) = (c.clone(), self.ns, self.tag_key);
        let scope = scope::current();
        let work = c.invalidation_in_flight();
        let task = tokio::spawn(async move {
            let _work = work;
            match tag_key {
                Ok(k) => c.invalidate_tag_key(&state, k, scope.as_deref()).await,
                Err(e) => {
                    tracing::warn!(namespace = ns, error = %e, "cache-aside: a tag value cannot be encoded; invalidating the whole namespace");
                    c.invalidate_namespace(&state, scope.as_deref()).await
                }
            }
        });
        let _ = task.await;
    }
}

/// `#[invalidates("a", "b")]`.
/// Runs in a task of its own, so that a caller dropped after its write
/// does not lose the invalidation.
pub async fn invalidate_namespaces(
    cache: Option<&Cache>,
    site: Site,
    namespaces: &'static [&'static str],
) {
    if let Some(c) = cache {
        for ns in namespaces {
            c.note_writer(ns, site);
        }
        let c = c.clone();
        let scope = scope::current();
        let work = c.invalidation_in_flight();
        let task = tokio::spawn(async move {
            let _work = work;
            for ns in namespaces {
                if let Some(state) = c.state(ns) {
                    c.invalidate_namespace(&state, scope.as_deref()).await;
                }
            }
        });
        let _ = task.await;
    }
}
