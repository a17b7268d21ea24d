//! The runtime of [cache-aside](https://docs.rs/cache-aside): everything that talks to
//! Redis. Users depend on the `cache-aside` crate, which re-exports this one
//! together with the `#[cached]` and `#[invalidates]` attributes.
//!
//! * [`Cache`] / [`CacheBuilder`]: the Redis pool (deadpool-redis) or the
//!   in-process memory backend, prefix, TTL, timeouts, codec.
//! * [`Namespace`]: get-or-compute and invalidation by hand (what the macros
//!   expand to).
//! * [`with_status`] / [`Status`]: did a call hit the cache?
//! * [`Stats`]: hits, misses, errors and hit ratio per namespace.
//! * [`key`]: the stable, injective key encoding; [`codec`]: value codecs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod breaker;
mod cache;
mod channel;
pub mod codec;
mod entry;
mod error;
mod flight;
#[cfg(test)]
mod fuzz_tests;
mod global;
pub mod key;
mod local;
mod stats;

pub use cache::{Cache, CacheBuilder, Filter, Invalidation, Namespace, NoFilter, Unreachable};
pub use error::Error;
pub use global::{install, installed};
pub use stats::{Counts, Stats, Status, with_status};

/// Not public API: what the macros expand to. May change in any release.
#[doc(hidden)]
pub mod __private;
