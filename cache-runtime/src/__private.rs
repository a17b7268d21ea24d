//! Support for the code `#[cached]` and `#[invalidates]` generate. Not
//! public API.

use std::convert::identity;
use std::future::Future;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::cache::{ok_value, plain_value};
use crate::key::KeyError;
use crate::{Cache, Filter, global};

pub use crate::NoFilter;

/// The cache a macro call uses: the explicit one, else the installed one.
#[inline]
pub fn resolve(explicit: Option<&Cache>) -> Option<&Cache> {
    match explicit {
        Some(c) => Some(c),
        None => global::installed_or_warn(),
    }
}

/// `cache = <expr>` takes a `&Cache`, a `Cache` (e.g. `self.cache.clone()`
/// where `self` is moved into the body) or an `Arc<Cache>`.
#[inline]
pub fn as_cache<C: AsRef<Cache> + ?Sized>(c: &C) -> &Cache {
    c.as_ref()
}

/// Helps closure type inference for `unless = |v| ...`.
#[inline]
pub fn filter<T, F: Fn(&T) -> bool>(f: F) -> F {
    f
}

/// One call of a `#[cached]` function, or the target of a key
/// invalidation: the key is built before the body's future takes
/// ownership of the arguments.
pub struct Call<'c> {
    cache: Option<&'c Cache>,
    ns: &'static str,
    entry_key: Result<String, KeyError>,
}

/// Builds the entry key (only when there is a cache to use).
#[inline]
pub fn call<'c, K: Serialize + ?Sized>(
    cache: Option<&'c Cache>,
    ns: &'static str,
    version: u32,
    key: &K,
) -> Call<'c> {
    let entry_key = match cache {
        Some(c) => c.entry_key(ns, version, key),
        None => Ok(String::new()),
    };
    Call {
        cache,
        ns,
        entry_key,
    }
}

impl Call<'_> {
    /// `#[cached]` on a function that does not return `Result`.
    #[inline]
    pub async fn value<T, U, Fut>(self, ttl: Option<Duration>, unless: U, fut: Fut) -> T
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = T>,
    {
        match self.cache {
            Some(c) => {
                c.run_key(
                    self.ns,
                    self.entry_key,
                    ttl,
                    &unless,
                    fut,
                    plain_value,
                    identity,
                )
                .await
            }
            None => uncached(fut).await,
        }
    }

    /// `#[cached]` on a function that returns `Result<T, E>`: only `Ok` is cached.
    #[inline]
    pub async fn result<T, E, U, Fut>(
        self,
        ttl: Option<Duration>,
        unless: U,
        fut: Fut,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.cache {
            Some(c) => {
                c.run_key(self.ns, self.entry_key, ttl, &unless, fut, ok_value, Ok)
                    .await
            }
            None => uncached(fut).await,
        }
    }

    /// `#[invalidates(ns = "..", key(..))]`.
    pub async fn invalidate(self) {
        if let Some(c) = self.cache {
            c.invalidate_key_encoded(self.ns, self.entry_key).await;
        }
    }
}

async fn uncached<R>(fut: impl Future<Output = R>) -> R {
    let out = fut.await;
    crate::stats::report(crate::Status::Bypass);
    out
}

/// `#[invalidates("a", "b")]`.
pub async fn invalidate_namespaces(cache: Option<&Cache>, namespaces: &[&str]) {
    if let Some(c) = cache {
        for ns in namespaces {
            c.namespace(ns).invalidate().await;
        }
    }
}

/// Type check emitted at a key argument's span, so that a non-`Serialize`
/// argument is reported at the argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key: it does not implement `serde::Serialize`",
    label = "used in the cache key",
    note = "leave the argument out of the key with `skip(<argument>)`, or derive or implement `Serialize` for its type"
)]
pub trait KeyArg {}
impl<T: Serialize + ?Sized> KeyArg for T {}

/// Emitted at a key argument's span.
#[inline(always)]
pub fn assert_key_arg<T: KeyArg + ?Sized>(_: &T) {}

/// Type check emitted at the return type's span.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    label = "the cached value type",
    note = "derive `Serialize` and `Deserialize` for it (for `Result<T, E>` only `T` is cached)"
)]
pub trait Cacheable {}
impl<T: Serialize + DeserializeOwned> Cacheable for T {}

/// Emitted at the return type's span.
#[inline(always)]
pub fn assert_cacheable<T: Cacheable>() {}
