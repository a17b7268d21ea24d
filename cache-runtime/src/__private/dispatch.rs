//! Dispatchers for the generated code. A type error in a key argument, the
//! cached value type, `unless` or `cache = ..` is reported once, at the
//! user's token, with no follow-on errors inside the expansion: method
//! resolution (autoref specialization) picks a pass-through method when the
//! type is what the runtime needs, and otherwise a fallback whose bound fails
//! at the method name (spanned at the user's token) and whose result keeps
//! the runtime calls well-typed. Every fallback carries a failing bound, so a
//! program that compiles always takes the pass-through path. The generated
//! code brings the dispatch traits into scope with `use .. as _` in blocks
//! that do not contain the function's body; their methods are
//! `__cache_aside_*`.

use std::any::Any;
use std::convert::identity;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};

use crate::cache::{Keeper, Sharer};
use crate::codec::RawBytes;
use crate::key::KeyError;
use crate::{Cache, Filter, NoFilter};

/// The bound of a key part: `Serialize`, with a message at the argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key: it does not implement `serde::Serialize`",
    label = "used in the cache key",
    note = "leave the argument out of the key with `skip(<argument>)`, or derive or implement `Serialize` for its type (a type parameter: bound it by `serde::Serialize`)"
)]
pub trait KeyArg {}
// Not recommended: rustc then reports `KeyArg` with the message above, not
// the nested `Serialize` bound with its list of every `Serialize` type.
#[diagnostic::do_not_recommend]
impl<T: Serialize + ?Sized> KeyArg for T {}

/// The bound of a tag's value: `Serialize`, with a message at the value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a tag's value: it does not implement `serde::Serialize`",
    label = "the tag's value",
    note = "derive or implement `Serialize` for its type, or tag with a value that has it: `tags(user = order.user_id)`"
)]
pub trait TagArg {
    /// The tag's token key.
    fn __cache_aside_tag_key(&self, cache: &Cache, ns: &str, tag: &str)
    -> Result<String, KeyError>;
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + ?Sized> TagArg for T {
    fn __cache_aside_tag_key(
        &self,
        cache: &Cache,
        ns: &str,
        tag: &str,
    ) -> Result<String, KeyError> {
        cache.tag_key(ns, tag, self)
    }
}

/// The bound of the cached value: `Serialize + DeserializeOwned`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    label = "the cached value type",
    note = "derive `Serialize` and `Deserialize` for it (for `Result<T, E>` only `T` is cached)"
)]
pub trait Cacheable {}
impl<T: Serialize + DeserializeOwned> Cacheable for T {}

/// `Serialize` with the message of [`Cacheable`]: the bound that fails once
/// for a value type that is not even `Serialize`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    label = "the cached value type",
    note = "derive `Serialize` and `Deserialize` for it (for `Result<T, E>` only `T` is cached)"
)]
pub trait ValueSerialize {}
#[diagnostic::do_not_recommend]
impl<T: Serialize> ValueSerialize for T {}

/// One key part: `(&KeyPart(&x)).__cache_aside_key_part()` is `&x` when the type
/// of `x` is `Serialize` ([`KeyPartOk`]), and otherwise `()` through a
/// failing [`KeyArg`] bound ([`KeyPartErr`]), which keeps the key `Serialize`.
pub struct KeyPart<'a, T: ?Sized>(pub &'a T);

/// See [`KeyPart`].
pub trait KeyPartOk<'a, T: ?Sized> {
    /// Returns the key part.
    fn __cache_aside_key_part(&self) -> &'a T;
}

impl<'a, T: KeyArg + ?Sized> KeyPartOk<'a, T> for KeyPart<'a, T> {
    #[inline(always)]
    fn __cache_aside_key_part(&self) -> &'a T {
        self.0
    }
}

/// See [`KeyPart`].
pub trait KeyPartErr<T: ?Sized> {
    /// Never called: its bound fails.
    fn __cache_aside_key_part(&self)
    where
        T: KeyArg;
}

impl<T: ?Sized> KeyPartErr<T> for &KeyPart<'_, T> {
    fn __cache_aside_key_part(&self)
    where
        T: KeyArg,
    {
    }
}

/// The conversions of the value (into and out of what the runtime stores)
/// and the `unless` filter, as [`Value`] hands them to the runtime.
pub type ValueParts<T, S, U> = (fn(T) -> S, fn(S) -> T, U);

/// The cached value type: `(&&&&Value::<T>::NEW).__cache_aside_value(unless)`
/// finds, in this order: [`ValueBytes`] for a `Vec<u8>` (stored as
/// [`RawBytes`]); [`ValueOk`] when `T` is `Serialize + DeserializeOwned`
/// (identity conversions, `unless` unchanged); [`ValueErrDe`] when `T` is
/// only `Serialize` (its [`Cacheable`] bound fails once, on
/// `Deserialize`); [`ValueErrSer`] otherwise (its [`ValueSerialize`] bound
/// fails once, on `Serialize`). The fallbacks convert the value to `()`
/// and drop the filter, so the runtime calls stay well-typed.
pub struct Value<T>(PhantomData<fn() -> T>);

impl<T> Value<T> {
    /// The dispatcher for `T`.
    pub const NEW: Self = Value(PhantomData);
}

/// See [`Value`].
pub trait ValueOk<T> {
    /// The identity conversions and `unless`.
    fn __cache_aside_value<U>(&self, unless: U) -> ValueParts<T, T, U>;
}

impl<T: Cacheable> ValueOk<T> for &&Value<T> {
    #[inline(always)]
    fn __cache_aside_value<U>(&self, unless: U) -> ValueParts<T, T, U> {
        (identity, identity, unless)
    }
}

/// See [`Value`]: a `Vec<u8>` is stored as [`RawBytes`] (chosen before
/// [`ValueOk`]), with `unless` and `ttl = f` seeing the `Vec<u8>`.
pub trait ValueBytes {
    /// The conversions to and from [`RawBytes`], and the filter on them.
    fn __cache_aside_value<U>(&self, unless: U) -> ValueParts<Vec<u8>, RawBytes, OnBytes<U>>;
}

impl ValueBytes for &&&Value<Vec<u8>> {
    #[inline(always)]
    fn __cache_aside_value<U>(&self, unless: U) -> ValueParts<Vec<u8>, RawBytes, OnBytes<U>> {
        (RawBytes, |r| r.0, OnBytes(unless))
    }
}

/// A filter on a `Vec<u8>` (`unless`, `ttl = f`) as one on its [`RawBytes`].
#[derive(Clone)]
pub struct OnBytes<U>(U);

impl<U: Filter<Vec<u8>>> Filter<RawBytes> for OnBytes<U> {
    #[inline]
    fn skip(&self, value: &RawBytes) -> bool {
        self.0.skip(&value.0)
    }

    #[inline]
    fn ttl(&self, value: &RawBytes) -> Option<std::time::Duration> {
        self.0.ttl(&value.0)
    }
}

/// See [`Value`].
pub trait ValueErrDe<T> {
    /// Never called: its bound fails.
    fn __cache_aside_value<U>(&self, unless: U) -> ValueParts<T, (), NoFilter>
    where
        T: Cacheable;
}

impl<T: KeyArg> ValueErrDe<T> for &Value<T> {
    fn __cache_aside_value<U>(&self, _: U) -> ValueParts<T, (), NoFilter>
    where
        T: Cacheable,
    {
        (drop, |()| unreachable!(), NoFilter)
    }
}

/// See [`Value`].
pub trait ValueErrSer<T> {
    /// Never called: its bound fails.
    fn __cache_aside_value<U>(&self, unless: U) -> ValueParts<T, (), NoFilter>
    where
        T: ValueSerialize;
}

impl<T> ValueErrSer<T> for Value<T> {
    fn __cache_aside_value<U>(&self, _: U) -> ValueParts<T, (), NoFilter>
    where
        T: ValueSerialize,
    {
        (drop, |()| unreachable!(), NoFilter)
    }
}

/// `#[cached(ttl = f)]`: `f` (a fn path or a closure without captures) as
/// the TTL of each value; a wrong signature is reported at `f` (the
/// generated call has its span).
#[inline(always)]
pub fn ttl_of<T, U>(unless: U, f: fn(&T) -> std::time::Duration) -> crate::cache::WithTtl<U, T> {
    crate::cache::WithTtl::new(unless, f)
}

/// `unless_arg::<T, _, _>({ f })` gives a closure its argument type and
/// reports a wrong argument type at `f` (the generated call has the span of
/// `f`).
#[inline(always)]
pub fn unless_arg<T, R, U: Fn(&T) -> R>(unless: U) -> U {
    unless
}

/// The `unless` filter: `Unless::<T, _>::new(f).__cache_aside_unless()` is `f`
/// when it is a `Fn(&T) -> bool` ([`UnlessOk`]), and otherwise [`NoFilter`]
/// through a failing bound ([`UnlessErr`]): for an argument type already
/// reported by [`unless_arg`] at the same span and for the same predicate
/// (which rustc reports once), or for a closure that does not return `bool`,
/// that error.
pub struct Unless<T, U>(U, PhantomData<fn(&T)>);

impl<T, U> Unless<T, U> {
    /// The dispatcher for `unless`.
    #[inline(always)]
    pub fn new(unless: U) -> Self {
        Unless(unless, PhantomData)
    }
}

/// See [`Unless`].
pub trait UnlessOk<U> {
    /// Returns the filter.
    fn __cache_aside_unless(self) -> U;
}

impl<T, U: Fn(&T) -> bool> UnlessOk<U> for Unless<T, U> {
    #[inline(always)]
    fn __cache_aside_unless(self) -> U {
        self.0
    }
}

/// See [`Unless`].
pub trait UnlessErr<T, U> {
    /// Never called: its bound fails.
    fn __cache_aside_unless(self) -> NoFilter
    where
        U: Fn(&T) -> bool;
}

impl<T, U> UnlessErr<T, U> for &Unless<T, U> {
    fn __cache_aside_unless(self) -> NoFilter
    where
        U: Fn(&T) -> bool,
    {
        NoFilter
    }
}

/// `cache = <expr>`: a `&Cache`, a `Cache` (e.g. `self.cache.clone()` where
/// `self` is moved into the body) or an `Arc<Cache>`. Called by path, at the
/// expression's span.
#[diagnostic::on_unimplemented(
    message = "`cache = ...` must be a `Cache`, a reference to one or an `Arc<Cache>`, not `{Self}`",
    label = "not a cache"
)]
pub trait CacheArg {
    /// The cache.
    fn __cache_aside_cache(&self) -> &Cache;
}

impl<C: AsRef<Cache> + ?Sized> CacheArg for C {
    #[inline(always)]
    fn __cache_aside_cache(&self) -> &Cache {
        self.as_ref()
    }
}

/// The error type of a `Result` return type, also through an alias such as
/// `io::Result<T>`.
pub trait ResultTypes {
    /// `E` of `Result<T, E>`.
    type Err;
}

impl<T, E> ResultTypes for Result<T, E> {
    type Err = E;
}

/// Finds a [`Sharer`] when the error type `E` is `Clone + Send + Sync +
/// 'static` (autoref specialization):
/// `(&ShareProbe::<E>::NEW).__cache_aside_sharer()`.
pub struct ShareProbe<E>(PhantomData<fn() -> E>);

impl<E> ShareProbe<E> {
    /// The probe.
    pub const NEW: Self = ShareProbe(PhantomData);
}

/// Chosen when the error can be cloned.
pub trait ShareClone<E> {
    /// A sharer for `Result<T, E>`.
    fn __cache_aside_sharer<T>(&self) -> Option<Sharer<Result<T, E>>>;
}

impl<E: Clone + Send + Sync + 'static> ShareClone<E> for ShareProbe<E> {
    #[inline]
    fn __cache_aside_sharer<T>(&self) -> Option<Sharer<Result<T, E>>> {
        Some(Sharer {
            to_shared: |r| {
                r.as_ref()
                    .err()
                    .map(|e| Arc::new(e.clone()) as Arc<dyn Any + Send + Sync>)
            },
            from_shared: |any| any.downcast_ref::<E>().map(|e| Err(e.clone())),
        })
    }
}

/// The fallback: no sharing (the next waiter computes).
pub trait ShareNone<E> {
    /// No sharer.
    fn __cache_aside_sharer<T>(&self) -> Option<Sharer<Result<T, E>>>;
}

impl<E> ShareNone<E> for &ShareProbe<E> {
    #[inline]
    fn __cache_aside_sharer<T>(&self) -> Option<Sharer<Result<T, E>>> {
        None
    }
}

/// What `#[cached(keep_decoded)]` needs of the value type: a local-tier
/// hit clones the kept value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be kept decoded in the local tier (`keep_decoded`)",
    label = "must be `Clone + Send + Sync + 'static`",
    note = "remove `keep_decoded` (local hits then decode the stored bytes), or derive `Clone`"
)]
pub trait Keep: Clone + Send + Sync + 'static {}

impl<T: Clone + Send + Sync + 'static> Keep for T {}

/// `#[cached(keep_decoded)]`: the [`Keeper`] of what `into` (from
/// [`Value`]) stores.
#[inline]
pub fn keeper<T, S: Keep>(_into: &fn(T) -> S) -> Option<Keeper<S>> {
    Some(Keeper {
        keep: |v| Arc::new(v.clone()) as Arc<dyn Any + Send + Sync>,
        take: |any| any.downcast_ref::<S>().cloned(),
    })
}

/// What a refresh in the background (`stale`, `early_refresh`, `verify`) copies of
/// each argument: `ToOwned` (for a `Clone` type, its clone).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be copied for a refresh in the background (`stale`, `early_refresh`, `verify`)",
    label = "copied for the refresh",
    note = "implement or derive `Clone` for it, or refresh inline with `refresh = \"inline\"`"
)]
pub trait RefreshCopy: ToOwned {}
impl<T: ToOwned + ?Sized> RefreshCopy for T {}

/// An owned copy of a borrowed argument, lent to the refreshing body as
/// the reference it had.
pub struct Owned<T: ToOwned + ?Sized>(T::Owned);

impl<T: ToOwned + ?Sized> Owned<T> {
    /// The reference the body takes.
    #[inline]
    pub fn get(&self) -> &T {
        std::borrow::Borrow::borrow(&self.0)
    }
}

/// The fallback of [`CopyProbe`]: never built (its bound fails), only there
/// so that the body still type-checks.
pub struct NoCopy<T: ?Sized>(PhantomData<fn() -> Box<T>>);

impl<T: ?Sized> NoCopy<T> {
    /// Never called.
    pub fn get(&self) -> &T {
        unreachable!()
    }
}

/// A borrowed argument copied for a refresh in the background:
/// `(&CopyProbe(x)).__cache_aside_copy()` is an [`Owned`] when `T: ToOwned`
/// ([`CopyOk`]), and otherwise fails once, at the argument, on
/// [`RefreshCopy`] ([`CopyErr`]).
pub struct CopyProbe<'a, T: ?Sized>(pub &'a T);

/// See [`CopyProbe`].
pub trait CopyOk<T: ToOwned + ?Sized> {
    /// The copy.
    fn __cache_aside_copy(&self) -> Owned<T>;
}

impl<T: ToOwned + ?Sized> CopyOk<T> for CopyProbe<'_, T> {
    #[inline]
    fn __cache_aside_copy(&self) -> Owned<T> {
        Owned(self.0.to_owned())
    }
}

/// See [`CopyProbe`].
pub trait CopyErr<T: ?Sized> {
    /// Never called: its bound fails.
    fn __cache_aside_copy(&self) -> NoCopy<T>
    where
        T: RefreshCopy;
}

impl<T: ?Sized> CopyErr<T> for &CopyProbe<'_, T> {
    fn __cache_aside_copy(&self) -> NoCopy<T>
    where
        T: RefreshCopy,
    {
        NoCopy(PhantomData)
    }
}

/// An owned argument cloned for a refresh in the background:
/// `(&CloneProbe(&x)).__cache_aside_clone()` is the clone when `T: Clone`
/// ([`CloneOk`]), and otherwise fails once, at the argument ([`CloneErr`]).
pub struct CloneProbe<'a, T>(pub &'a T);

/// See [`CloneProbe`].
pub trait CloneOk<T> {
    /// The clone.
    fn __cache_aside_clone(&self) -> T;
}

impl<T: Clone> CloneOk<T> for CloneProbe<'_, T> {
    #[inline]
    fn __cache_aside_clone(&self) -> T {
        self.0.clone()
    }
}

/// See [`CloneProbe`].
pub trait CloneErr<T> {
    /// Never called: its bound fails.
    fn __cache_aside_clone(&self) -> T
    where
        T: RefreshCopy<Owned = T>;
}

impl<T> CloneErr<T> for &CloneProbe<'_, T> {
    fn __cache_aside_clone(&self) -> T
    where
        T: RefreshCopy<Owned = T>,
    {
        unreachable!()
    }
}
