//! The options of one call ([`CallOptions`]) and the `unless` filter
//! ([`Filter`]): what `#[cached]` and [`Namespace`](super::Namespace) set.

use std::time::Duration;

/// Per-call options: what `#[cached(...)]` and the [`Namespace`](super::Namespace) builder
/// set; `None` takes the cache's default.
#[derive(Debug, Clone, Copy, PartialEq)]
#[doc(hidden)]
pub struct CallOptions {
    pub ttl: Option<Duration>,
    pub stale: Option<Duration>,
    pub lock: Option<bool>,
    pub lock_wait: Option<Duration>,
    pub lease: Option<Duration>,
    pub early_refresh: Option<f64>,
    pub local: Option<Duration>,
    /// `version` (part of the schema, not of the key); `None`: 1, and for a
    /// type whose shape cannot be traced, no promise by the caller.
    pub version: Option<u32>,
    /// `fail_safe`: how long past its TTL (and `stale`) an entry is kept to
    /// be served when the body fails.
    pub fail_safe: Option<Duration>,
    /// `timeout`: with a fail-safe entry at hand, how long the body may
    /// run before that entry is served instead.
    pub timeout: Option<Duration>,
    /// `tags(..)`: the names of the call's tags, in the order of the tag
    /// keys its call gives (part of the schema).
    pub tags: &'static [&'static str],
    /// `compress`: whether large values are stored compressed.
    pub compress: Option<Compress>,
    /// `verify`: the share of hits recomputed in the background and
    /// compared with the cached value (the consistency probe).
    pub verify: Option<f64>,
}

/// `#[cached(compress ..)]`, [`Namespace::compress`](super::Namespace::compress):
/// whether a call's values are stored LZ4-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[doc(hidden)]
pub enum Compress {
    /// `compress = false`: never, whatever the cache's default.
    Never,
    /// `compress`: above the cache's threshold, or
    /// [`DEFAULT_COMPRESS_ABOVE`](crate::codec::DEFAULT_COMPRESS_ABOVE) on a
    /// cache that has none.
    On,
    /// `compress = "16KiB"`: encodings of at least this many bytes.
    Above(usize),
}

impl Compress {
    /// The threshold a call compresses above (`None`: never), from its
    /// option and the cache's.
    pub(crate) fn threshold(call: Option<Compress>, cache: Option<usize>) -> Option<usize> {
        match call {
            None => cache,
            Some(Compress::Never) => None,
            Some(Compress::On) => Some(cache.unwrap_or(crate::codec::DEFAULT_COMPRESS_ABOVE)),
            Some(Compress::Above(n)) => Some(n),
        }
    }
}

impl CallOptions {
    /// Every option at the cache's default.
    pub const DEFAULT: CallOptions = CallOptions {
        ttl: None,
        stale: None,
        lock: None,
        lock_wait: None,
        lease: None,
        early_refresh: None,
        local: None,
        version: None,
        fail_safe: None,
        timeout: None,
        tags: &[],
        compress: None,
        verify: None,
    };
}

/// Decides which computed values are *not* stored (`unless`).
pub trait Filter<T: ?Sized> {
    /// `true`: return the value but do not store it.
    fn skip(&self, value: &T) -> bool;

    /// The TTL of this value, when the call takes it from the value
    /// (`#[cached(ttl = f)]`); `None`, the default: the call's TTL. A zero
    /// TTL is not stored. The `stale` window and the jitter apply on top.
    #[inline]
    fn ttl(&self, value: &T) -> Option<Duration> {
        let _ = value;
        None
    }
}

/// `#[cached(ttl = f)]`: a filter with the value's TTL from `f`.
#[doc(hidden)]
pub struct WithTtl<U, T: ?Sized> {
    unless: U,
    ttl: fn(&T) -> Duration,
}

impl<U: Clone, T: ?Sized> Clone for WithTtl<U, T> {
    fn clone(&self) -> Self {
        WithTtl {
            unless: self.unless.clone(),
            ttl: self.ttl,
        }
    }
}

impl<U, T: ?Sized> WithTtl<U, T> {
    /// `unless` (or [`NoFilter`]) with the TTL from `ttl`.
    pub fn new(unless: U, ttl: fn(&T) -> Duration) -> Self {
        WithTtl { unless, ttl }
    }
}

impl<T: ?Sized, U: Filter<T>> Filter<T> for WithTtl<U, T> {
    #[inline]
    fn skip(&self, value: &T) -> bool {
        self.unless.skip(value)
    }

    #[inline]
    fn ttl(&self, value: &T) -> Option<Duration> {
        Some((self.ttl)(value))
    }
}

/// The default [`Filter`]: every value is stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFilter;

impl<T: ?Sized> Filter<T> for NoFilter {
    #[inline]
    fn skip(&self, _: &T) -> bool {
        false
    }
}

impl<T: ?Sized, F: Fn(&T) -> bool> Filter<T> for F {
    #[inline]
    fn skip(&self, value: &T) -> bool {
        self(value)
    }
}
