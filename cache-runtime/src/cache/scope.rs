//! Transaction scopes: [`transaction`]. A write inside a database
//! transaction becomes visible at COMMIT, after the write fn (and its
//! `#[invalidates]`) returned. Inside a scope, an invalidation fences what
//! it invalidates instead: the namespace's generation (or the entry) is
//! replaced with a fence, under which no reader stores, and the scope holds
//! it, renewed in the background, until it ends; then each target is
//! invalidated once more and the fence lifted (if no other scope holds it).
//! A scope whose future is dropped ends in a task of its own; a process that
//! dies leaves fences that lapse after the cache's
//! [`transaction_fence`](crate::CacheBuilder::transaction_fence) time,
//! judged on the server's clock, after which readers replace them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::Cache;
use super::registry::NsState;
use crate::backend::Change;
use crate::entry::{self, Token};
use crate::sync::lock;

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// Runs `fut` (a database transaction, from `begin` to `commit` or
/// rollback) as one scope for the invalidations inside it, in every cache:
/// when it returns, every read that starts afterwards, in any process,
/// sees what the transaction committed, and no value computed from the
/// data before the commit survives it. Reads while the transaction runs
/// compute from the database and do not store. Nested scopes are one
/// scope; outside a scope nothing changes. The output is returned as it
/// is (an `Err` after a rollback too: its invalidations were harmless).
///
/// ```
/// # async fn demo() -> Result<(), std::io::Error> {
/// use cache_aside::{Cache, cached, invalidates};
///
/// #[cached(ns = "count", cache = cache, skip(cache))]
/// async fn count(cache: &Cache) -> u64 { 1 }
///
/// #[invalidates("count", cache = cache)]
/// async fn add(cache: &Cache) -> Result<(), std::io::Error> { Ok(()) } // INSERT inside the transaction
///
/// let cache = Cache::builder().memory().build().unwrap();
/// cache_aside::transaction(async {
///     // let mut tx = pool.begin().await?;
///     add(&cache).await?;
///     // tx.commit().await?;
///     Ok::<_, std::io::Error>(())
/// })
/// .await?;
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
/// ```
pub async fn transaction<F: Future>(fut: F) -> F::Output {
    if SCOPE.try_with(|_| ()).is_ok() {
        return fut.await;
    }
    let scope = Arc::new_cyclic(|me| Scope {
        holder: entry::token(),
        held: Mutex::new(Vec::new()),
        renewing: AtomicBool::new(false),
        me: me.clone(),
    });
    let mut guard = EndOnDrop(Some(Arc::clone(&scope)));
    let out = SCOPE.scope(Arc::clone(&scope), fut).await;
    if let Some(scope) = guard.0.take() {
        // In a task of its own, so that dropping this future now does not
        // leave the fences to lapse.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let _ = rt.spawn(async move { scope.end().await }).await;
            }
            Err(_) => scope.end().await,
        }
    }
    out
}

/// The scope the current task runs in, if any.
pub(crate) fn current() -> Option<Arc<Scope>> {
    SCOPE.try_with(Arc::clone).ok()
}

/// One transaction scope: what it fences, under its holder id.
pub(crate) struct Scope {
    holder: Token,
    held: Mutex<Vec<Held>>,
    renewing: AtomicBool,
    me: Weak<Scope>,
}

/// One fenced target.
#[derive(Clone)]
struct Held {
    cache: Cache,
    state: Arc<NsState>,
    key: Option<String>,
}

impl Scope {
    /// Registers `key` of `state` (or the whole namespace) as fenced by
    /// this scope; returns the change that fences it.
    pub(crate) fn hold(
        &self,
        cache: &Cache,
        state: &Arc<NsState>,
        key: Option<&str>,
    ) -> Change<'_> {
        {
            let mut held = lock(&self.held);
            let known = held.iter().any(|h| {
                h.cache.inner.id == cache.inner.id
                    && h.state.name == state.name
                    && h.key.as_deref() == key
            });
            if !known {
                held.push(Held {
                    cache: cache.clone(),
                    state: Arc::clone(state),
                    key: key.map(str::to_owned),
                });
            }
        }
        let ttl = cache.inner.fence_ttl;
        if !self.renewing.swap(true, SeqCst)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(renew(self.me.clone(), ttl / 3));
        }
        Change::Fence {
            holder: &self.holder,
            ttl,
        }
    }

    /// Invalidates every target once more and lets go of its fence.
    async fn end(&self) {
        let held = std::mem::take(&mut *lock(&self.held));
        for h in held {
            h.cache.end_hold(&h.state, h.key, &self.holder).await;
        }
    }
}

/// Renews the scope's fences every `every` while the scope lives.
async fn renew(scope: Weak<Scope>, every: Duration) {
    loop {
        tokio::time::sleep(every.max(Duration::from_millis(1))).await;
        let Some(scope) = scope.upgrade() else {
            return;
        };
        let held = lock(&scope.held).clone();
        if held.is_empty() {
            continue;
        }
        for h in held {
            let change = Change::Renew {
                holder: &scope.holder,
                ttl: h.cache.inner.fence_ttl,
            };
            h.cache.send(&h.state, h.key.as_deref(), change).await;
        }
    }
}

/// Ends a scope whose future was dropped, in a task of its own.
struct EndOnDrop(Option<Arc<Scope>>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(scope) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move { scope.end().await });
        }
    }
}
