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
use crate::backend::{Change, PutAtEnd};
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
/// scope, except that the puts inside a nested scope whose output says it
/// did not commit (a savepoint rolled back) are not stored; outside a
/// scope nothing changes. The output is returned as it is (an `Err` after
/// a rollback too: its invalidations were harmless).
///
/// A [`#[cache_put]`](crate::cache_put) inside the scope fences its key
/// like a key invalidation and stores its value when the scope ends, if
/// the output says the transaction committed ([`Committed`]: `Ok`, `Some`
/// or `()`) and nothing else wrote the key meanwhile (no other write of
/// the key in the scope overlapped it, and none came after it); otherwise
/// the key is invalidated.
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
pub async fn transaction<F>(fut: F) -> F::Output
where
    F: Future,
    F::Output: Committed,
{
    if let Some(outer) = current() {
        // A nested scope (a savepoint): part of the outer one, but what it
        // rolled back must not be stored when the outer one commits.
        let mark = outer.mark();
        let out = fut.await;
        if !out.committed() {
            outer.discard_since(mark);
        }
        return out;
    }
    let scope = Arc::new_cyclic(|me| Scope {
        holder: entry::token(),
        held: Mutex::new(Holds::default()),
        renewing: AtomicBool::new(false),
        me: me.clone(),
    });
    let mut guard = EndOnDrop(Some(Arc::clone(&scope)));
    let out = SCOPE.scope(Arc::clone(&scope), fut).await;
    let committed = out.committed();
    if let Some(scope) = guard.0.take() {
        // In a task of its own, so that dropping this future now does not
        // leave the fences to lapse.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let _ = rt.spawn(async move { scope.end(committed).await }).await;
            }
            Err(_) => scope.end(committed).await,
        }
    }
    out
}

/// What a [`transaction`] scope's output says about its transaction: did
/// it commit? Only then do the puts inside the scope store their values.
///
/// ```
/// use cache_aside::Committed;
///
/// assert!(Ok::<u64, std::io::Error>(3).committed());
/// assert!(!None::<u64>.committed());
/// assert!(().committed());
/// ```
pub trait Committed {
    /// `true` if the transaction committed.
    fn committed(&self) -> bool;
}

impl<T, E> Committed for Result<T, E> {
    fn committed(&self) -> bool {
        self.is_ok()
    }
}

impl<T> Committed for Option<T> {
    fn committed(&self) -> bool {
        self.is_some()
    }
}

/// A scope that returns nothing says nothing went wrong.
impl Committed for () {
    fn committed(&self) -> bool {
        true
    }
}

/// The scope the current task runs in, if any.
pub(crate) fn current() -> Option<Arc<Scope>> {
    SCOPE.try_with(Arc::clone).ok()
}

/// One transaction scope: what it fences, under its holder id.
pub(crate) struct Scope {
    holder: Token,
    held: Mutex<Holds>,
    renewing: AtomicBool,
    me: Weak<Scope>,
}

/// What a scope fences, and the number of puts it recorded so far (a
/// nested scope that rolls back discards those recorded after its start).
#[derive(Default)]
struct Holds {
    targets: Vec<Held>,
    /// Tags invalidated inside the scope: fenced until it ends (`tag.lua`).
    tags: Vec<(Cache, Arc<NsState>, String)>,
    records: u64,
}

/// One fenced target.
#[derive(Clone)]
struct Held {
    cache: Cache,
    state: Arc<NsState>,
    key: Option<String>,
    /// Writes of this target so far (every hold, and every put that ended
    /// without a value): a put's value is the key's only if no write came
    /// after the put's own hold.
    writes: u64,
    /// Puts of this key whose write is running.
    running: u32,
    /// The value a put of this key left, to store when the scope ends,
    /// and the record number it was recorded under.
    put: Option<(Arc<PendingPut>, u64)>,
}

/// A put's place in its scope, from its hold until it records its value
/// ([`Scope::put`]); dropped without recording (the write failed, or its
/// future was dropped), it counts as a write of unknown outcome, so that
/// no put running beside it stores its value.
pub(crate) struct PutTicket<'a> {
    scope: &'a Scope,
    cache: &'a Cache,
    state: &'a NsState,
    key: &'a str,
    writes: u64,
    recorded: bool,
}

impl Drop for PutTicket<'_> {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        let mut holds = lock(&self.scope.held);
        if let Some(h) = holds.find(self.cache, self.state, Some(self.key)) {
            h.running = h.running.saturating_sub(1);
            h.writes += 1;
            h.put = None;
        }
    }
}

/// A put inside a scope: what it stores when the scope ends, and what the
/// key and the namespace held after its fence (see `tombstone.lua`).
pub(crate) struct PendingPut {
    pub(crate) head: Vec<u8>,
    pub(crate) generation: Vec<u8>,
    pub(crate) tail: Vec<u8>,
    pub(crate) ttl: Duration,
}

impl PendingPut {
    pub(crate) fn at_end(&self) -> PutAtEnd<'_> {
        PutAtEnd {
            head: &self.head,
            generation: &self.generation,
            tail: &self.tail,
            ttl: self.ttl,
        }
    }
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
        self.hold_target(cache, state, key, false);
        self.fence(cache)
    }

    /// [`hold`](Self::hold) for a put of `key`: also its ticket, which
    /// records the put's value.
    pub(crate) fn hold_put<'a>(
        &'a self,
        cache: &'a Cache,
        state: &'a Arc<NsState>,
        key: &'a str,
    ) -> (Change<'a>, PutTicket<'a>) {
        let writes = self.hold_target(cache, state, Some(key), true);
        let ticket = PutTicket {
            scope: self,
            cache,
            state,
            key,
            writes,
            recorded: false,
        };
        (self.fence(cache), ticket)
    }

    /// Registers a write of the target; its write number.
    fn hold_target(
        &self,
        cache: &Cache,
        state: &Arc<NsState>,
        key: Option<&str>,
        put: bool,
    ) -> u64 {
        let mut holds = lock(&self.held);
        let h = match holds.targets.iter().position(|h| h.is(cache, state, key)) {
            Some(i) => &mut holds.targets[i],
            None => {
                holds.targets.push(Held {
                    cache: cache.clone(),
                    state: Arc::clone(state),
                    key: key.map(str::to_owned),
                    writes: 0,
                    running: 0,
                    put: None,
                });
                let last = holds.targets.len() - 1;
                &mut holds.targets[last]
            }
        };
        // Written again: a put before this write is not the value.
        h.put = None;
        h.writes += 1;
        h.running += u32::from(put);
        h.writes
    }

    /// The fence this scope's holds put up; starts renewing them.
    fn fence(&self, cache: &Cache) -> Change<'_> {
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

    /// Records the value the put of `ticket` stores when the scope ends:
    /// only if no other write of the key came after its hold or is still
    /// running (which of two overlapping writes the database applied last
    /// is not known: then the key is invalidated).
    pub(crate) fn put(&self, mut ticket: PutTicket<'_>, put: PendingPut) {
        ticket.recorded = true;
        let mut holds = lock(&self.held);
        holds.records += 1;
        let record = holds.records;
        let Some(h) = holds.find(ticket.cache, ticket.state, Some(ticket.key)) else {
            return;
        };
        h.running = h.running.saturating_sub(1);
        h.put = (h.writes == ticket.writes && h.running == 0).then(|| (Arc::new(put), record));
        if h.put.is_none() {
            h.writes += 1;
        }
    }

    /// Registers a tag invalidated inside the scope; returns the change
    /// that fences it (see `tag.lua`).
    pub(crate) fn hold_tag(
        &self,
        cache: &Cache,
        state: &Arc<NsState>,
        tag_key: &str,
    ) -> Change<'_> {
        let mut holds = lock(&self.held);
        let known = holds
            .tags
            .iter()
            .any(|(c, s, k)| c.inner.id == cache.inner.id && s.name == state.name && k == tag_key);
        if !known {
            holds
                .tags
                .push((cache.clone(), Arc::clone(state), tag_key.to_owned()));
        }
        drop(holds);
        self.fence(cache)
    }

    /// Where a nested scope starts: the puts recorded so far.
    fn mark(&self) -> u64 {
        lock(&self.held).records
    }

    /// A nested scope rolled back: the puts recorded since `mark` are not
    /// stored (their keys are invalidated when the scope ends).
    fn discard_since(&self, mark: u64) {
        let mut holds = lock(&self.held);
        for h in &mut holds.targets {
            if h.put.as_ref().is_some_and(|(_, record)| *record > mark) {
                h.put = None;
                h.writes += 1;
            }
        }
    }

    /// Invalidates every target once more and lets go of its fence; after a
    /// commit, a put's key gets its value instead, if nobody else wrote it.
    async fn end(&self, committed: bool) {
        let tags = std::mem::take(&mut lock(&self.held).tags);
        for (cache, state, tag_key) in tags {
            let end = Change::End {
                holder: &self.holder,
            };
            if !cache.change_tag(&state, &tag_key, end).await {
                cache.enqueue(&state, None);
            }
        }
        let held = std::mem::take(&mut lock(&self.held).targets);
        for h in held {
            let put = h.put.as_ref().map(|(p, _)| &**p).filter(|_| committed);
            h.cache.end_hold(&h.state, h.key, &self.holder, put).await;
        }
    }
}

impl Holds {
    fn find(&mut self, cache: &Cache, state: &NsState, key: Option<&str>) -> Option<&mut Held> {
        self.targets.iter_mut().find(|h| h.is(cache, state, key))
    }
}

impl Held {
    fn is(&self, cache: &Cache, state: &NsState, key: Option<&str>) -> bool {
        self.cache.inner.id == cache.inner.id
            && self.state.name == state.name
            && self.key.as_deref() == key
    }
}

/// Renews the scope's fences every `every` while the scope lives.
async fn renew(scope: Weak<Scope>, every: Duration) {
    loop {
        tokio::time::sleep(every.max(Duration::from_millis(1))).await;
        let Some(scope) = scope.upgrade() else {
            return;
        };
        let (held, tags) = {
            let holds = lock(&scope.held);
            (holds.targets.clone(), holds.tags.clone())
        };
        for (cache, state, tag_key) in tags {
            let change = Change::Renew {
                holder: &scope.holder,
                ttl: cache.inner.fence_ttl,
            };
            cache.change_tag(&state, &tag_key, change).await;
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
            rt.spawn(async move { scope.end(false).await });
        }
    }
}
