//! Support for the code `#[cached]` and `#[invalidates]` generate. Not
//! public API.

use std::future::Future;

use serde::{Serialize, de::DeserializeOwned};

pub use crate::cache::{Background, CallOptions, Inline, NsSlot, Refresh, Sharer};
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

/// The path of a method without `ns`: its type's path, without the type's
/// generic arguments (one namespace for every instantiation: the schema
/// tells them apart), and the method's name.
pub fn method_path(type_name: &str, method: &str) -> String {
    let ty = type_name.split('<').next().unwrap_or(type_name);
    format!("{ty}::{method}")
}

/// One call of a `#[cached]` function, or the target of a key
/// invalidation: the key is built before the body's future takes
/// ownership of the arguments.
pub struct Call<'c> {
    cache: Option<&'c Cache>,
    ns: &'static str,
    slot: Option<&'static NsSlot>,
    entry_key: Result<String, KeyError>,
}

/// Builds the entry key (only when there is a cache to use). `slot`: the
/// `#[cached]` call site's (a key invalidation has none).
#[inline]
pub fn call<'c, K: Serialize + ?Sized>(
    slot: Option<&'static NsSlot>,
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
        entry_key,
    }
}

impl Call<'_> {
    fn target<'g>(self, generics: &'g [&'static str]) -> Target<'g> {
        Target {
            ns: self.ns,
            slot: self.slot,
            key: self.entry_key,
            generics,
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
                c.run_key(target, &opts, &unless, fut, refresh, Shape::plain())
                    .await
            }
            None => uncached(fut).await,
        }
    }

    /// `#[cached]` on a function that returns `Result<T, E>`: only `Ok` is
    /// cached; with a `Clone` error, callers that waited for a failed
    /// computation get its error (`share`, from [`ShareProbe`]).
    #[inline]
    pub async fn result<T, E, U, Fut, Rf>(
        self,
        opts: CallOptions,
        generics: &[&'static str],
        unless: U,
        share: Option<Sharer<Result<T, E>>>,
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
                let shape = Shape::result(share);
                c.run_key(target, &opts, &unless, fut, refresh, shape).await
            }
            None => uncached(fut).await,
        }
    }

    /// `#[invalidates(ns = "..", key(..))]`.
    /// Runs in a task of its own, so that a caller dropped after its write
    /// (a client gone, a timeout) does not lose the invalidation.
    pub async fn invalidate(self) {
        if let Some(c) = self.cache {
            let (c, ns, key) = (c.clone(), self.ns, self.entry_key);
            // The scope is the caller task's: taken before the spawn.
            let scope = scope::current();
            let task =
                tokio::spawn(
                    async move { c.invalidate_key_encoded(ns, key, scope.as_deref()).await },
                );
            let _ = task.await;
        }
    }
}

async fn uncached<R>(fut: impl Future<Output = R>) -> R {
    let out = fut.await;
    crate::stats::report(crate::Status::Bypass);
    out
}

/// `#[invalidates("a", "b")]`.
/// Runs in a task of its own, so that a caller dropped after its write
/// does not lose the invalidation.
pub async fn invalidate_namespaces(cache: Option<&Cache>, namespaces: &'static [&'static str]) {
    if let Some(c) = cache {
        let c = c.clone();
        let scope = scope::current();
        let task = tokio::spawn(async move {
            for ns in namespaces {
                if let Some(state) = c.state(ns) {
                    c.invalidate_namespace(&state, scope.as_deref()).await;
                }
            }
        });
        let _ = task.await;
    }
}
