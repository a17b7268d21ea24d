//! Per-call control: [`bypass`] and [`refresh`], scopes that change what
//! the cached calls inside them do (the task-local mode the lookup reads
//! once per call, in `cache/lookup.rs`).

use std::future::Future;

/// What the cached calls of the current task do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Read the cache, compute on a miss (no scope).
    Normal,
    /// Neither read nor write the cache: run the body.
    Bypass,
    /// Do not serve what is cached: run the body and store its value.
    Refresh,
}

tokio::task_local! {
    static MODE: Mode;
}

/// The mode of the innermost scope around the current task's code.
#[inline]
pub(crate) fn mode() -> Mode {
    MODE.try_with(|m| *m).unwrap_or(Mode::Normal)
}

/// Runs `fut` with the cache switched off for the cached calls inside it:
/// each runs its body, reads nothing from the cache and stores nothing (an
/// answer "computed now", say for a request with `Cache-Control:
/// no-cache`). Nested cached calls are bypassed too; invalidations inside
/// (`#[invalidates]`) still happen.
///
/// The calls report [`Status::Bypass`](crate::Status::Bypass) to
/// [`with_status`](crate::with_status) and are counted in
/// [`Counts::skipped`](crate::Counts::skipped), not in `bypasses` (which
/// counts the calls the cache failed) nor in the hit ratio.
///
/// Scopes nest: the innermost [`bypass`] or [`refresh`] decides. Like
/// [`with_status`](crate::with_status) a scope belongs to the task that
/// awaits it: a task spawned inside it runs outside it.
///
/// ```
/// # async fn demo() {
/// use cache_aside::{Cache, Status, bypass, cached, with_status};
///
/// #[cached(ns = "answer", cache = cache, skip(cache))]
/// async fn answer(cache: &Cache) -> u32 { 42 }
///
/// let cache = Cache::builder().memory().build().unwrap();
/// answer(&cache).await; // computed and stored
/// let (v, status) = with_status(bypass(answer(&cache))).await;
/// assert_eq!((v, status), (42, Status::Bypass)); // computed again, not read
/// assert_eq!(cache.stats().total.skipped, 1);
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
/// ```
pub fn bypass<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    // Not an `async fn`: that would hold `fut` twice (argument and scope).
    MODE.scope(Mode::Bypass, fut)
}

/// Runs `fut` with the cached calls inside it recomputing: each runs its
/// body even where a live entry exists, and stores the value over exactly
/// the entry it read, as the refresh of a stale entry does: an invalidation
/// (or another store) meanwhile wins, and a body that returns an `Err` (or
/// a value `unless` rejects) leaves the old entry in place. For warming a
/// cache at start-up, or an admin's "recompute now". Nested cached calls
/// are refreshed too.
///
/// A call that finds no entry claims the key like a miss; it shares a
/// computation only with other calls inside refresh scopes (never with a
/// plain miss that may have read the database before it), and when it
/// waited for another caller's lease it recomputes over the entry that
/// caller stored instead of serving it. The calls report
/// [`Status::Miss`](crate::Status::Miss) and count as `misses`, those that
/// replaced a live entry also as
/// [`Counts::forced_refreshes`](crate::Counts::forced_refreshes).
///
/// With the local tier (`local = ..`), a refresh replaces the value in this
/// process's tier; other processes' tiers keep the copy they hold for up
/// to their `local` TTL (a refresh is a store, not an invalidation: use
/// `#[invalidates]` where every process must stop serving the old value).
///
/// Scopes nest as for [`bypass`]: the innermost one decides.
///
/// ```
/// # async fn demo() {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use cache_aside::{Cache, cached, refresh};
///
/// static RUNS: AtomicU32 = AtomicU32::new(0);
///
/// #[cached(ns = "runs", cache = cache, skip(cache))]
/// async fn runs(cache: &Cache) -> u32 { RUNS.fetch_add(1, Ordering::SeqCst) + 1 }
///
/// let cache = Cache::builder().memory().build().unwrap();
/// assert_eq!(runs(&cache).await, 1);
/// assert_eq!(runs(&cache).await, 1); // a hit
/// assert_eq!(refresh(runs(&cache)).await, 2); // recomputed and stored
/// assert_eq!(runs(&cache).await, 2); // the refreshed entry
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
/// ```
pub fn refresh<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    MODE.scope(Mode::Refresh, fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_innermost_scope_decides() {
        assert_eq!(mode(), Mode::Normal);
        bypass(async {
            assert_eq!(mode(), Mode::Bypass);
            refresh(async { assert_eq!(mode(), Mode::Refresh) }).await;
            assert_eq!(mode(), Mode::Bypass);
        })
        .await;
        refresh(async {
            bypass(async { assert_eq!(mode(), Mode::Bypass) }).await;
            assert_eq!(mode(), Mode::Refresh);
        })
        .await;
        assert_eq!(mode(), Mode::Normal);
    }
}
