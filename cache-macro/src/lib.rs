//! The `#[cached]`, `#[invalidates]` and `#[cache_put]` attributes of
//! [cache-aside](https://docs.rs/cache-aside). Use them through the `cache-aside` crate,
//! which documents them; this crate only parses, validates and expands.
//!
//! Parse, validate, expand: `model` reads the annotated function (keeping
//! the spans of its parts) and `args` the options (tokens to values,
//! rejecting unknown and duplicated ones at their token); `validate` makes
//! every check and returns a checked plan; `expand` turns the plan into code
//! and cannot fail. On any error the original function is emitted unchanged
//! next to the error, so one mistake does not cascade into errors at every
//! call site.
#![forbid(unsafe_code)]

mod args;
mod expand;
mod model;
mod validate;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;

/// Parse, validate, expand; on an error, the error and the item unchanged.
fn run(
    attr: TokenStream,
    item: TokenStream,
    name: &str,
    plan: impl FnOnce(TokenStream2, model::Func) -> syn::Result<TokenStream2>,
) -> TokenStream {
    let item = TokenStream2::from(item);
    let out = model::parse_item(item.clone(), name).and_then(|func| plan(attr.into(), func));
    match out {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(item);
            out.into()
        }
    }
}

/// Caches the output of an `async fn` in the cache (Redis or memory):
/// cache-aside with a TTL, keyed by the function's arguments.
///
/// ```
/// use cache_aside::{cached, Cache};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct Airport { iata: String, name: String }
///
/// struct Db; // a pool or handle: not part of the key
///
/// // Key: "{prefix}:{airport}:FRA". `None` (unknown code) is cached too,
/// // so unknown codes do not reach the database again and again.
/// #[cached(ns = "airport", ttl = "10m", skip(db))]
/// async fn airport(db: &Db, code: &str) -> Result<Option<Airport>, std::io::Error> {
///     Ok((code == "FRA").then(|| Airport { iata: code.into(), name: "Frankfurt".into() }))
/// }
///
/// struct Service { cache: Cache }
///
/// impl Service {
///     // `self` is not part of the key; the cache comes from a field.
///     #[cached(ns = "top_routes", ttl = 60, cache = &self.cache, unless = Vec::is_empty)]
///     async fn top_routes(&self, from: &str, limit: u32) -> Vec<String> {
///         vec![format!("{from}-JFK")]
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = Service { cache: Cache::builder().memory().build().unwrap() };
/// assert_eq!(svc.top_routes("FRA", 10).await, ["FRA-JFK"]);
/// assert!(airport(&Db, "FRA").await.unwrap().is_some()); // no cache installed: Status::NoCache
/// # }
/// ```
///
/// | option | meaning |
/// |---|---|
/// | `ns = "name"` / `ns = CONST` | namespace: a string, or the path of a `&str` constant (checked at compile time) that writers can share; default: the function's path with its crate (`app.flights.count`; `app.repo.Repo.by_id` for an associated fn, `app.repo.Store.Users.get` in a trait impl). Give one to anything you invalidate or share across builds |
/// | `ttl = "90s"` / `ttl = 300` | humantime string or whole seconds; default: the cache's `default_ttl` |
/// | `ttl = f` / `ttl = \|v: &T\| ..` | the TTL from the value: a fn path or a closure without captures, `fn(&T) -> Duration` (`T`: the `Ok` type of a `Result`); a zero TTL is not stored (a refresh that gets one leaves the entry it read); `stale` and the jitter apply on top; for a `Duration` constant write `ttl = \|_\| MY_TTL` |
/// | `skip(a, b)` | arguments left out of the key; a `self` receiver is never part of the key unless `key` names it |
/// | `key = <expr>` | custom key: any `Serialize` expression over the arguments; replaces the default (all non-skipped arguments, in order) |
/// | `cache = <expr>` | the cache to use: an expression of type `&Cache` (e.g. `&self.cache`), `Cache` or `Arc<Cache>` (`self.cache` would move the field: write `&self.cache`); default: the installed one (none installed: the call runs uncached as `Status::NoCache`, and the first such call logs an error) |
/// | `version = N` | part of the entry's schema (default 1): bump it when the value's meaning changes but not its shape (a change of shape is noticed without it) |
/// | `unless = <path or closure>` | `fn(&T) -> bool`: a value for which it returns true is returned but not stored |
/// | `stale = "30s"` | stale-while-revalidate window after the TTL (`Status::Stale`; one caller refreshes, across processes) |
/// | `lock = false` | no cross-process lease (default on; in-process coalescing stays) |
/// | `lock_wait = "3s"` | longest wait for another caller's computation (default: the cache's) |
/// | `lease = "10s"` | lease time of a miss (default: the cache's, at most the TTL) |
/// | `early_refresh` / `early_refresh = 1.5` | XFetch early refresh with this beta (1.0 when bare) |
/// | `local = "10s"` / `local = false` | keep hits in this process's local (L1) tier for this long, evicted across processes by the invalidation channel (default: the cache's, off unless `CacheBuilder::local`) |
/// | `refresh = "background"` / `"inline"` | with `stale` or `early_refresh`: the caller that wins a refresh returns the entry it read while the body runs in a task of its own (default), or runs the body itself |
/// | `fail_safe = "1h"` | keep entries this long past their TTL (and `stale`): when the body returns `Err` (or outlasts `timeout`), the last good value is returned instead, as `Status::FailSafe` (logged once per namespace and outage); never an invalidated entry; without an old entry the error is returned |
/// | `timeout = "2s"` | with `fail_safe`: how long the body may run when a fail-safe value is at hand before that value is returned (the body is dropped); without one, the call waits for the body |
/// | `tags(user, shop = <expr>)` | each entry carries the tokens of these tag values (a bare name: that argument's value; `name = expr`: any `Serialize` expression over the arguments; at most 16); `#[invalidates(ns = .., tag(user))]` or `Namespace::invalidate_tag` then invalidates every entry of one tag value, O(1). A hit reads the tags' tokens with the entry (one `MGET`, in the entry's slot) |
/// | `crate = path` | path of the `cache-aside` crate if it is renamed (default `::cache_aside`) |
///
/// `Result<T, E>` caches `Ok` only and returns `Err` unchanged; any other
/// return type is cached as it is (`()` is refused: nothing would run for a
/// TTL). The value type needs `Serialize + DeserializeOwned`, key arguments
/// `Serialize`. Keys are injective over the *values* of the key arguments
/// as serde sees them: `1i64`, `1u32` and `"1"` give one key, and struct
/// field names are not part of it. A cache that is unavailable never fails
/// the call: the body runs uncached. A body that calls other `#[cached]`
/// fns (in its own task) depends on what they read: an invalidation of an
/// inner entry, key, tag or namespace makes the outer entry a miss too (the
/// README's "Nested caching" says how, and its bounds).
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    run(attr, item, "cached", |attr, func| {
        let args = syn::parse2::<args::CachedArgs>(attr)?;
        if args.batch.is_some() {
            return Ok(expand::batch(&validate::batch(args, func)?));
        }
        Ok(expand::cached(&validate::cached(args, func)?))
    })
}

/// Invalidates cached entries after an `async fn` succeeds (returns `Ok`, or
/// returns at all when it does not return a `Result`).
///
/// ```
/// use cache_aside::{cached, invalidates, Cache, Status, with_status};
///
/// #[cached(ns = "airport_name", cache = cache, skip(cache))]
/// async fn airport_name(cache: &Cache, code: &str) -> String { format!("{code} airport") }
///
/// // Every entry of both namespaces, in every process sharing the Redis.
/// #[invalidates("flight_count", "top_routes", cache = cache)]
/// async fn add_flight(cache: &Cache, from: &str, to: &str) -> Result<i64, std::io::Error> {
///     Ok(1)
/// }
///
/// // Only the entry `airport_name(cache, code)` uses.
/// #[invalidates(ns = "airport_name", key(code), cache = cache)]
/// async fn rename_airport(cache: &Cache, code: &str, name: &str) -> Result<(), std::io::Error> {
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::builder().memory().build().unwrap();
/// airport_name(&cache, "FRA").await;
/// assert_eq!(with_status(airport_name(&cache, "FRA")).await.1, Status::Hit);
/// rename_airport(&cache, "FRA", "Frankfurt am Main").await.unwrap();
/// assert_eq!(with_status(airport_name(&cache, "FRA")).await.1, Status::Miss);
/// add_flight(&cache, "FRA", "JFK").await.unwrap();
/// # }
/// ```
///
/// | option | meaning |
/// |---|---|
/// | `"a", "b"` | namespaces to invalidate entirely (one `SET` of a new generation token each) |
/// | `CONST`, `ns = "a"` / `ns = CONST` | a namespace, as a `&str` constant's path or as an option |
/// | `key(arg, ..)` / `key = <expr>` | only the entry a `#[cached]` call of that namespace with these key values uses (needs exactly one namespace); name as many arguments as the reader's key has (`Cache::check_links` finds a mismatch) |
/// | `tag(user)` / `tag(user = <expr>)` | the entries of that tag value (see `tags` on `#[cached]`), instead of the whole namespace (needs exactly one namespace; several `tag(..)` allowed; with `key`, that entry too); the value is encoded as the reader's argument is |
/// | `scoped` | callers run this fn inside [`cache_aside::transaction`](https://docs.rs/cache-aside/latest/cache_aside/fn.transaction.html); checked at run time (an error is logged once if not). A fn with an argument whose type ends in `Transaction` is warned about without it |
/// | `cache = <expr>` | as for `#[cached]` |
/// | `crate = path` | as for `#[cached]` |
///
/// An invalidation that cannot reach Redis never fails the function: it is
/// queued and retried in the background, logged and counted; until it lands
/// this process reads the affected entries from the source.
#[proc_macro_attribute]
pub fn invalidates(attr: TokenStream, item: TokenStream) -> TokenStream {
    run(attr, item, "invalidates", |attr, func| {
        let args = syn::parse2::<args::InvalidatesArgs>(attr)?;
        Ok(expand::invalidates(&validate::invalidates(args, func)?))
    })
}

/// Write-through: after an `async fn` succeeds, the value it returns
/// becomes the entry that the namespace's `#[cached]` reader reads under
/// the same key, in every process, so the next read is a hit.
///
/// ```
/// use cache_aside::{cache_put, cached, with_status, Cache, Status};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// struct Airport { iata: String, name: String }
///
/// #[cached(ns = "airport", cache = cache, skip(cache))]
/// async fn airport(cache: &Cache, iata: &str) -> Result<Option<Airport>, std::io::Error> {
///     Ok(Some(Airport { iata: iata.into(), name: "Frankfurt".into() })) // SELECT
/// }
///
/// // The reader's namespace, key and value type: `UPDATE .. RETURNING`.
/// #[cache_put(ns = "airport", key(iata), cache = cache)]
/// async fn rename_airport(cache: &Cache, iata: &str, name: &str) -> Result<Option<Airport>, std::io::Error> {
///     Ok(Some(Airport { iata: iata.into(), name: name.into() }))
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::builder().memory().build().unwrap();
/// airport(&cache, "FRA").await.unwrap();
/// rename_airport(&cache, "FRA", "Frankfurt am Main").await.unwrap();
/// let (a, status) = with_status(airport(&cache, "FRA")).await;
/// assert_eq!(status, Status::Hit);
/// assert_eq!(a.unwrap().unwrap().name, "Frankfurt am Main");
/// # }
/// ```
///
/// | option | meaning |
/// |---|---|
/// | `ns = "name"` / `ns = CONST` | the namespace of the `#[cached]` fn that reads the entry (required) |
/// | `key(arg, ..)` / `key = <expr>` | the entry's key, built as the reader builds it: name as many arguments, of the same values, as the reader's key has (required) |
/// | `ttl = "1h"` / `ttl = 300` | the stored entry's TTL; default: the cache's `default_ttl` (give the reader's) |
/// | `version = N` | the reader's `version`, if it has one |
/// | `lease = "10s"` | how long readers wait for the write before they read the database themselves (default: the cache's) |
/// | `cache = <expr>`, `crate = path` | as for `#[cached]` |
///
/// As safe as an invalidation: the put claims the key before its body runs
/// (readers then wait for it, and a reader's or another writer's older
/// value can no longer be stored), and afterwards stores only over its own
/// claim, under the namespace generation it saw; otherwise it leaves a
/// tombstone, so two writers whose writes commit in either order never
/// leave the older value. After an `Err` the key is left empty (a
/// tombstone): the next read recomputes. Inside
/// [`cache_aside::transaction`](https://docs.rs/cache-aside/latest/cache_aside/fn.transaction.html)
/// the key is fenced until the scope ends, and the value is stored then if
/// the transaction committed and nobody else wrote the key meanwhile.
///
/// The value type must be the reader's (`T` of its `Result<T, E>`, with the
/// same `version`): an entry of another type is a miss for the reader. The
/// macro cannot see the reader, so a put whose type differs from the
/// reader's that ran in this process invalidates instead, and logs an error
/// once. A cache that is unavailable never fails the function: the key is
/// invalidated (queued and retried) instead.
#[proc_macro_attribute]
pub fn cache_put(attr: TokenStream, item: TokenStream) -> TokenStream {
    run(attr, item, "cache_put", |attr, func| {
        let args = syn::parse2::<args::CachePutArgs>(attr)?;
        Ok(expand::cache_put(&validate::cache_put(args, func)?))
    })
}
