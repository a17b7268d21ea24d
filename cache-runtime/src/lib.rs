//! The runtime of [cache-aside](https://docs.rs/cache-aside): everything that
//! talks to Redis. Users depend on the `cache-aside` crate, which re-exports
//! this one together with the `#[cached]` and `#[invalidates]` attributes.
//!
//! * [`Cache`] / [`CacheBuilder`]: the Redis connections (or the in-process
//!   memory backend), prefix, TTL, timeouts, codec.
//! * [`Namespace`]: get-or-compute and invalidation by hand (what the macros
//!   expand to).
//! * [`with_status`] / [`Status`]: did a call hit the cache?
//! * [`bypass`] / [`refresh`]: scopes whose cached calls skip the cache, or
//!   recompute and store.
//! * [`Stats`]: hits, misses, errors and hit ratio per namespace.
//! * [`transaction`]: a scope for the invalidations of a database transaction.
//! * [`Cache::check_links`] / [`LinkProblem`]: readers and writers that do
//!   not fit together.
//! * [`key`]: the stable, injective key encoding; [`codec`]: value codecs.
//!
//! # Map
//!
//! The modules form a straight line of layers; each may use those before
//! it, never one after it (`ARCHITECTURE.md` has the whole map):
//! the storage format (`key`, `entry`, `codec`) and small leaves (`sync`,
//! `error`, `stats`, `control`, `breaker`, `flight`, `local`), then `schema` (an
//! entry's type identity), then `coherence` (the invalidation channel,
//! generation views, local-tier epochs; it knows no `Cache`), then
//! `backend` (Redis and memory behind one trait), then `cache` (the handle,
//! the builder, one call's lookup, invalidation, transaction scopes, the
//! reader/writer links), and last `global` and `__private` (what the macros
//! expand to). A hit is
//! served in `cache/lookup.rs` (`Lookup::run`): the local tier, then one
//! `GET` (`backend/redis/mod.rs`, `fetch`), judged by `entry::classify`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod breaker;
mod cache;
pub mod codec;
mod coherence;
mod control;
mod entry;
mod error;
mod flight;
mod global;
pub mod key;
mod local;
mod schema;
mod stats;
#[cfg(test)]
mod strategies;
mod sync;

pub use cache::{
    Cache, CacheBuilder, Committed, Filter, Invalidation, LinkProblem, Namespace, NoFilter,
    transaction,
};
pub use control::{bypass, refresh};
pub use error::{Error, NameProblem, TlsProblem, Unreachable};
pub use global::{install, installed};
pub use stats::{Counts, Stats, Status, with_status};

/// Not public API: what the macros expand to. May change in any release.
#[doc(hidden)]
pub mod __private;
