//! # cache-aside
//!
//! Redis-backed cache-aside for `async fn`s with one attribute, and
//! invalidation that stays correct under concurrency.
//!
//! ```
//! use std::time::Duration;
//! use cache_aside::{cached, invalidates, Cache};
//!
//! #[cached(ns = "flight_count", ttl = "5m", skip(db))]
//! async fn count_flights(db: &Db, from: &str, to: &str) -> Result<i64, DbError> {
//!     db.count(from, to).await // the slow query
//! }
//!
//! #[invalidates("flight_count")]
//! async fn add_flight(db: &Db, from: &str, to: &str) -> Result<(), DbError> {
//!     db.insert(from, to).await
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder()
//!     .memory() // the doc test runs without Redis; drop this line to use $REDIS_URL
//!     .prefix("flightdb")
//!     .default_ttl(Duration::from_secs(300))
//!     .build()?;
//! cache_aside::install(cache);
//!
//! let db = Db::default();
//! let (n, status) = cache_aside::with_status(count_flights(&db, "FRA", "JFK")).await;
//! assert_eq!((n?, status), (0, cache_aside::Status::Miss));
//! let (n, status) = cache_aside::with_status(count_flights(&db, "FRA", "JFK")).await;
//! assert_eq!((n?, status), (0, cache_aside::Status::Hit));
//!
//! add_flight(&db, "FRA", "JFK").await?; // invalidates "flight_count"
//! assert_eq!(count_flights(&db, "FRA", "JFK").await?, 1);
//! # Ok(()) }
//! # #[derive(Default)] struct Db(std::sync::Mutex<Vec<(String, String)>>);
//! # #[derive(Debug)] struct DbError;
//! # impl std::fmt::Display for DbError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("db") } }
//! # impl std::error::Error for DbError {}
//! # impl Db {
//! #     async fn count(&self, from: &str, to: &str) -> Result<i64, DbError> {
//! #         Ok(self.0.lock().unwrap().iter().filter(|(f, t)| f == from && t == to).count() as i64)
//! #     }
//! #     async fn insert(&self, from: &str, to: &str) -> Result<(), DbError> {
//! #         self.0.lock().unwrap().push((from.into(), to.into())); Ok(())
//! #     }
//! # }
//! ```
//!
//! * [`cached`] and [`invalidates`]: the attributes (options in their docs);
//!   [`cache_put`]: write-through, the returned value becomes the entry.
//! * [`Cache`]: configuration ([`CacheBuilder`]), the by-hand API
//!   ([`Cache::namespace`]), [`Cache::stats`].
//! * [`with_status`]: tells a handler whether the answer came from the cache.
//! * [`bypass`] / [`refresh`]: scopes whose cached calls skip the cache
//!   (`Cache-Control: no-cache`), or recompute and store (warming, "recompute now").
//! * [`transaction`]: a scope around a database transaction, so that no read
//!   caches what the transaction changes before it commits.
//! * [`Cache::check_links`]: for a test, the readers and writers that do not
//!   fit together (two fns on one namespace, a key invalidation with another
//!   key shape); [`Cache::shutdown`]: lands queued invalidations at exit.
//!
//! The README explains the consistency guarantees: a namespace invalidation
//! replaces a generation token, a key invalidation writes a tombstone, and
//! every store is a compare-and-set, so a slow reader that computed its
//! value before a write can never store it after the write's invalidation.
#![forbid(unsafe_code)]

#[doc(inline)]
pub use cache_aside_macro::{cache_put, cached, invalidates};

#[doc(inline)]
pub use cache_aside_runtime::{
    Cache, CacheBuilder, Committed, Counts, Error, Filter, Invalidation, LinkProblem, NameProblem,
    Namespace, NoFilter, Stats, Status, TlsProblem, Unreachable, bypass, install, installed,
    refresh, transaction, with_status,
};

#[doc(inline)]
pub use cache_aside_runtime::{codec, key};

#[doc(hidden)]
pub use cache_aside_runtime::__private;
