//! Invalidation: a namespace's new generation, or one entry's tombstone,
//! each published on the channel in the same script. An invalidation that
//! cannot reach Redis is queued and retried by one background worker per
//! cache; until it lands, this process reads the affected entries from the
//! source.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::Cache;
use super::registry::NsState;
use super::scope::{PendingPut, Scope};
use crate::backend::{Backend, Change, KeyChanged, Notice};
use crate::entry::Token;
use crate::key::KeyError;
use crate::stats::bump;
use crate::sync::lock;
use tracing::Instrument;

/// What an invalidation did. It never fails the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// It reached the cache: no reader will see the old entries.
    Done,
    /// The cache could not be reached; the invalidation is queued and retried
    /// in the background. Until it lands, this process reads the affected
    /// entries from the source, and other processes may serve old entries
    /// for at most their TTL.
    Queued,
}

/// An invalidation a writer's task is sending (see [`Cache::shutdown`]).
pub(crate) struct InFlight(Cache);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inner.in_flight.fetch_sub(1, Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct RetryQueue {
    namespaces: HashMap<String, Pending>,
    keys: HashMap<String, Pending>,
    seq: u64,
    worker: bool,
}

impl RetryQueue {
    fn len(&self) -> usize {
        self.namespaces.len() + self.keys.len()
    }
}

/// A queued invalidation. `seq` changes when the same target is queued
/// again, so the worker never removes an invalidation queued while it was
/// sending an older one; `since` bounds how long each one is retried.
#[derive(Clone)]
struct Pending {
    state: Arc<NsState>,
    seq: u64,
    since: Instant,
}

/// At most this many key invalidations are queued; past it, the namespace is.
const MAX_QUEUED_KEYS: usize = 10_000;

impl Cache {
    /// Are invalidations waiting to be retried? (They are retried in the
    /// background until they land or the retry period ends.)
    pub fn has_queued_invalidations(&self) -> bool {
        let q = lock(&self.inner.retry);
        !q.namespaces.is_empty() || !q.keys.is_empty()
    }

    /// Is an invalidation of this entry (or of its whole namespace) queued,
    /// so that the cache must not be trusted for it?
    pub(crate) fn invalidation_pending(&self, state: &NsState, entry_key: &str) -> bool {
        state.pending_namespace.load(Relaxed)
            || (state.pending_keys.load(Relaxed) > 0
                && lock(&self.inner.retry).keys.contains_key(entry_key))
            // An entry of this namespace may be built from what a queued
            // invalidation of another one has not reached yet.
            || (state.has_deps.load(Relaxed) && self.inner.queued.load(Relaxed) > 0)
    }

    /// Invalidates the namespace; inside a transaction scope (`scope`), fences
    /// it until the scope ends.
    pub(crate) async fn invalidate_namespace(
        &self,
        state: &Arc<NsState>,
        scope: Option<&Scope>,
    ) -> Invalidation {
        let span = self.invalidation_span(state, "namespace", None);
        traced(span, self.invalidate_namespace_untraced(state, scope)).await
    }

    async fn invalidate_namespace_untraced(
        &self,
        state: &Arc<NsState>,
        scope: Option<&Scope>,
    ) -> Invalidation {
        let inner = &*self.inner;
        let change = match scope {
            Some(s) => s.hold(self, state, None),
            None => Change::Invalidate,
        };
        let done = inner.breaker(state).allow() && self.send(state, None, change).await.is_some();
        // Also when queued: this process must not serve what it invalidated.
        inner.hub.local_namespace_invalidated(&state.coherence);
        if done {
            bump(&state.counters.invalidations);
            return Invalidation::Done;
        }
        self.enqueue(state, None)
    }

    /// Invalidates one entry; inside a transaction scope, fences it until
    /// the scope ends.
    pub(crate) async fn invalidate_entry(
        &self,
        state: &Arc<NsState>,
        entry_key: String,
        scope: Option<&Scope>,
    ) -> Invalidation {
        let span = self.invalidation_span(state, "key", Some(&entry_key));
        traced(
            span,
            self.invalidate_entry_untraced(state, entry_key, scope),
        )
        .await
    }

    async fn invalidate_entry_untraced(
        &self,
        state: &Arc<NsState>,
        entry_key: String,
        scope: Option<&Scope>,
    ) -> Invalidation {
        let inner = &*self.inner;
        let change = match scope {
            Some(s) => s.hold(self, state, Some(&entry_key)),
            None => Change::Invalidate,
        };
        let done = inner.breaker(state).allow()
            && self.send(state, Some(&entry_key), change).await.is_some();
        inner
            .hub
            .local_key_invalidated(&state.coherence, &entry_key);
        if done {
            bump(&state.counters.invalidations);
            return Invalidation::Done;
        }
        self.enqueue(state, Some(entry_key))
    }

    /// The span of one invalidation (`target: "cache_aside"`, INFO), with
    /// OpenTelemetry's attribute names where they exist (`otel.kind`,
    /// `db.system.name`, `db.operation.name`, `error.type`) and ours for the
    /// rest: `cache_aside.namespace`, `cache_aside.scope` (`namespace`,
    /// `key` or `tag`), `cache_aside.target` (the entry or tag key) and
    /// `cache_aside.outcome` (`done` or `queued`), recorded at its end.
    pub(super) fn invalidation_span(
        &self,
        state: &NsState,
        scope: &'static str,
        target: Option<&str>,
    ) -> tracing::Span {
        tracing::info_span!(
            target: "cache_aside",
            "cache_aside.invalidate",
            otel.kind = "client",
            db.system.name = self.inner.backend.system(),
            db.operation.name = "invalidate",
            cache_aside.namespace = %state.name,
            cache_aside.scope = scope,
            cache_aside.target = target,
            cache_aside.outcome = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    }

    /// Applies `change` to the namespace's generation, or to one entry, and
    /// publishes it on the channel; what it left if it landed.
    pub(crate) async fn send(
        &self,
        state: &NsState,
        entry_key: Option<&str>,
        change: Change<'_>,
    ) -> Option<KeyChanged> {
        let inner = &*self.inner;
        let notice = Notice {
            channel: inner.hub.channel(),
            namespace: &state.name,
        };
        let sent = match entry_key {
            None => inner
                .backend
                .change_namespace(&state.generation_key, change, inner.generation_ttl, notice)
                .await
                .map(|()| KeyChanged::default()),
            Some(key) => {
                let tokens = super::track::KeyTokens::of(state, key);
                inner
                    .backend
                    .change_key(
                        key,
                        &state.generation_key,
                        tokens.buckets(),
                        change,
                        inner.guard_ttl,
                        notice,
                    )
                    .await
            }
        };
        match sent {
            Ok(changed) => {
                inner.breaker(state).success();
                Some(changed)
            }
            Err(e) => {
                inner.note_failure(state, &e);
                bump(&state.counters.errors);
                None
            }
        }
    }

    /// The end of a transaction scope's hold on the namespace (`key: None`)
    /// or on one entry: invalidates it once more and lifts the fence unless
    /// another scope holds it; or, for a put inside a committed scope
    /// (`put`), stores its value if nothing else happened to the key.
    pub(crate) async fn end_hold(
        &self,
        state: &Arc<NsState>,
        key: Option<String>,
        holder: &Token,
        put: Option<&PendingPut>,
    ) {
        let inner = &*self.inner;
        let change = match put {
            Some(p) if key.is_some() => Change::EndPut {
                holder,
                put: p.at_end(),
            },
            _ => Change::End { holder },
        };
        let sent = match inner.breaker(state).allow() {
            true => self.send(state, key.as_deref(), change).await,
            false => None,
        };
        match &key {
            None => inner.hub.local_namespace_invalidated(&state.coherence),
            Some(k) => inner.hub.local_key_invalidated(&state.coherence, k),
        }
        match sent {
            Some(changed) if changed.stored => bump(&state.counters.puts),
            Some(_) => bump(&state.counters.invalidations),
            None => {
                self.enqueue(state, key);
            }
        }
    }

    /// Queues an invalidation (of the namespace, or of one entry key) and
    /// makes sure a retry worker runs.
    pub(super) fn enqueue(&self, state: &Arc<NsState>, entry_key: Option<String>) -> Invalidation {
        let mut q = lock(&self.inner.retry);
        q.seq += 1;
        let seq = q.seq;
        let now = Instant::now();
        let pending = |since: Option<Instant>| Pending {
            state: Arc::clone(state),
            seq,
            since: since.unwrap_or(now),
        };
        match entry_key {
            Some(k) if q.keys.len() < MAX_QUEUED_KEYS || q.keys.contains_key(&k) => {
                let since = q.keys.get(&k).map(|p| p.since);
                if q.keys.insert(k, pending(since)).is_none() {
                    state.pending_keys.fetch_add(1, Relaxed);
                }
            }
            Some(_) | None => {
                // Too many queued keys: invalidating the whole namespace is
                // the bounded-memory equivalent.
                state.pending_namespace.store(true, Relaxed);
                let since = q.namespaces.get(&state.name).map(|p| p.since);
                q.namespaces.insert(state.name.clone(), pending(since));
            }
        }
        self.inner.queued.store(q.len(), Relaxed);
        bump(&state.counters.invalidations_queued);
        if !q.worker {
            q.worker = true;
            tracing::warn!(
                namespace = %state.name,
                "cache-aside: invalidation could not reach Redis; queued and retrying in the background"
            );
            let cache = self.clone();
            tokio::spawn(async move { cache.retry_worker().await });
        }
        Invalidation::Queued
    }

    async fn retry_worker(self) {
        let mut backoff = Duration::from_millis(25);
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            self.retry_round().await;
            let mut q = lock(&self.inner.retry);
            if q.namespaces.is_empty() && q.keys.is_empty() {
                q.worker = false;
                return;
            }
        }
    }

    /// One attempt at every queued invalidation (the worker's, and
    /// [`Cache::shutdown`]'s without waiting for its backoff).
    async fn retry_round(&self) {
        let inner = &*self.inner;
        let (namespaces, keys): (Vec<_>, Vec<_>) = {
            let q = lock(&inner.retry);
            (
                q.namespaces
                    .iter()
                    .map(|(n, p)| (n.clone(), p.clone()))
                    .collect(),
                q.keys.iter().map(|(k, p)| (k.clone(), p.clone())).collect(),
            )
        };
        for (name, p) in namespaces {
            bump(&p.state.counters.invalidation_retries);
            let sent = self
                .send(&p.state, None, Change::Invalidate)
                .await
                .is_some();
            let mut q = lock(&inner.retry);
            if sent {
                bump(&p.state.counters.invalidations);
                tracing::info!(namespace = %name, "cache-aside: queued namespace invalidation landed");
                if q.namespaces.get(&name).is_some_and(|cur| cur.seq == p.seq) {
                    q.namespaces.remove(&name);
                    inner.queued.store(q.len(), Relaxed);
                    p.state.pending_namespace.store(false, Relaxed);
                }
            } else if p.since.elapsed() >= inner.retry_for
                && q.namespaces.get(&name).is_some_and(|cur| cur.seq == p.seq)
            {
                q.namespaces.remove(&name);
                inner.queued.store(q.len(), Relaxed);
                p.state.pending_namespace.store(false, Relaxed);
                bump(&p.state.counters.invalidations_dropped);
                tracing::error!(namespace = %name, retry_for = ?inner.retry_for,
                    "cache-aside: gave up a queued namespace invalidation; its entries expire by their TTL");
            }
        }
        for (key, p) in keys {
            bump(&p.state.counters.invalidation_retries);
            let sent = self
                .send(&p.state, Some(&key), Change::Invalidate)
                .await
                .is_some();
            let mut q = lock(&inner.retry);
            let current = q.keys.get(&key).is_some_and(|cur| cur.seq == p.seq);
            if sent {
                bump(&p.state.counters.invalidations);
            } else if p.since.elapsed() >= inner.retry_for && current {
                bump(&p.state.counters.invalidations_dropped);
                tracing::error!(key = %key, retry_for = ?inner.retry_for,
                    "cache-aside: gave up a queued key invalidation; the entry expires by its TTL");
            } else {
                continue;
            }
            if current {
                q.keys.remove(&key);
                inner.queued.store(q.len(), Relaxed);
                p.state.pending_keys.fetch_sub(1, Relaxed);
            }
        }
    }

    /// The number of invalidations not landed yet: queued for retry, or
    /// still being sent by a writer's task.
    fn unlanded(&self) -> usize {
        let q = lock(&self.inner.retry);
        q.len() + self.inner.in_flight.load(Relaxed)
    }

    /// Waits, at most `within`, for the invalidations this process has not
    /// landed yet: those queued while Redis was unreachable (tried again at
    /// once, then every 50 ms, not at the retry worker's backoff) and those
    /// a writer's task is still sending. Call it when the service stops
    /// (on SIGTERM, after the server stopped taking requests): a queued
    /// invalidation lost with the process leaves other processes serving
    /// the old entries until their TTL. Returns how many were left (0: all
    /// landed), and logs an error naming the count if any were.
    ///
    /// A transaction scope's closing invalidation is not waited for: its
    /// fence, which expires by itself, already keeps those entries from
    /// being stored.
    ///
    /// ```
    /// # async fn demo() {
    /// use std::time::Duration;
    /// let cache = cache_aside::Cache::builder().memory().build().unwrap();
    /// assert_eq!(cache.shutdown(Duration::from_secs(5)).await, 0);
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
    /// ```
    pub async fn shutdown(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if self.has_queued_invalidations() {
                // Bounded by the deadline, not only per command: a server
                // that takes every command and answers none would otherwise
                // hold each queued one for the operation timeout. A round cut
                // short leaves what it did not finish queued (an invalidation
                // sent twice does no harm).
                let until = tokio::time::Instant::from_std(deadline);
                let _ = tokio::time::timeout_at(until, self.retry_round()).await;
            }
            let left = self.unlanded();
            if left == 0 {
                return 0;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::error!(
                    left,
                    "cache-aside: shutting down with invalidations that did not land; other \
                     processes may serve the old entries until their TTL"
                );
                return left;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(50))).await;
        }
    }

    /// Counts a writer's invalidation task until the guard drops.
    pub(crate) fn invalidation_in_flight(&self) -> InFlight {
        self.inner.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    pub(crate) async fn invalidate_key_encoded(
        &self,
        ns: &str,
        entry_key: Result<String, KeyError>,
        scope: Option<&Scope>,
    ) -> Invalidation {
        let Some(state) = self.state(ns) else {
            return Invalidation::Done;
        };
        match entry_key {
            Ok(k) => self.invalidate_entry(&state, k, scope).await,
            Err(e) => {
                // No key can be built, so no entry can exist under one: but
                // be safe and drop the whole namespace.
                tracing::warn!(namespace = ns, error = %e, "cache-aside: invalidating the whole namespace");
                self.invalidate_namespace(&state, scope).await
            }
        }
    }
}

/// Runs one invalidation in its span, and records how it ended.
pub(super) async fn traced(
    span: tracing::Span,
    invalidation: impl Future<Output = Invalidation>,
) -> Invalidation {
    let out = invalidation.instrument(span.clone()).await;
    match out {
        Invalidation::Done => span.record("cache_aside.outcome", "done"),
        Invalidation::Queued => span
            .record("cache_aside.outcome", "queued")
            .record("error.type", "queued"),
    };
    out
}
