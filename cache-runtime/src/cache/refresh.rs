//! Refreshing an entry in the background. With `stale` (past the TTL,
//! within the window) or `early_refresh` (XFetch, before the TTL ends), the
//! one caller per window that wins the refresh lock (across processes) no
//! longer recomputes inline: it starts the recomputation in a task of its
//! own and returns the entry it read, like every other caller. The task
//! runs the body from owned copies of the call's arguments (the
//! [`Background`] closure `#[cached]` builds) and stores its value under
//! the same compare-and-set as an inline refresh: over the entry it
//! refreshes, under the generation it was read with. A refresh that fails
//! keeps the entry (it is served until it expires) and is counted
//! (`refresh_errors`).

use serde::{Serialize, de::DeserializeOwned};
use std::future::Future;

use super::lookup::{Job, Lookup, Read, Refresh, StoreAs};
use super::options::Filter;
use crate::backend::Expect;
use crate::stats::bump;

/// The caller that wins a refresh recomputes inline (the by-hand API, and
/// `#[cached(refresh = "inline")]`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Inline;

impl<T, R, U> Refresh<T, R, U> for Inline {
    fn background(&self) -> bool {
        false
    }

    fn start(self, _: Job<T, R>, _: &U) {}
}

/// A refresh in the background: the closure makes the body's future from
/// owned copies of the call's arguments.
#[doc(hidden)]
pub struct Background<F>(pub F);

impl<T, R, U, F, Fut> Refresh<T, R, U> for Background<F>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = R> + Send + 'static,
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    R: Send + 'static,
    U: Filter<T> + Clone + Send + Sync + 'static,
{
    fn background(&self) -> bool {
        true
    }

    fn start(self, job: Job<T, R>, unless: &U) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let fut = (self.0)();
        let unless = unless.clone();
        rt.spawn(job.run(fut, unless));
    }
}

impl<T, R> Job<T, R>
where
    T: Serialize + DeserializeOwned,
{
    /// Computes and stores the value (the task a refresh in the background
    /// runs); or, for the consistency probe, computes and compares.
    async fn run<Fut: Future<Output = R>, U: Filter<T>>(mut self, fut: Fut, unless: U) {
        if let Some(served) = self.verify.take() {
            return self.probe(fut, &served, &unless).await;
        }
        let lookup = Lookup {
            cache: &self.cache,
            state: &self.state,
            key: self.key,
            schema: self.schema,
            policy: self.policy,
            unless: &unless,
            shape: self.shape,
            tags: self.tags,
        };
        let to = StoreAs {
            expect: Expect::Prefix(&self.identity),
            generation: self.generation,
        };
        let out = lookup.compute(fut, Some(to), None, None, None).await;
        if (self.shape.value_of)(&out).is_none() {
            bump(&self.state.counters.refresh_errors);
            tracing::debug!(
                key = lookup.key,
                "cache-aside: a refresh in the background failed; the entry is kept"
            );
        }
    }
}

impl<T, R> Job<T, R>
where
    T: Serialize + DeserializeOwned,
{
    /// The consistency probe (`verify`): runs the body against the source
    /// (its own cached calls recompute too, as in a
    /// [`bypass`](crate::bypass) scope) and compares the encoding of its
    /// value with the bytes that were served. A difference counts as
    /// `stale_detected` only while the entry is still the one served (an
    /// invalidation since means the cache already knows); a failed body,
    /// or a value `unless` would not store, says nothing.
    async fn probe<Fut: Future<Output = R>, U: Filter<T>>(
        self,
        fut: Fut,
        served: &[u8],
        unless: &U,
    ) {
        let out = crate::control::bypass(fut).await;
        let Some(value) = (self.shape.value_of)(&out) else {
            return;
        };
        let inner = &*self.cache.inner;
        let mut now = Vec::with_capacity(served.len());
        if unless.skip(value) || inner.codec.encode(value, &mut now).is_err() {
            return;
        }
        let state = &self.state;
        if now == served {
            bump(&state.counters.verified);
            return;
        }
        let lookup = Lookup {
            cache: &self.cache,
            state: &self.state,
            key: self.key,
            schema: self.schema,
            policy: self.policy,
            unless,
            shape: self.shape,
            tags: self.tags,
        };
        let still_served = match lookup.read().await {
            Ok(snap) => match snap.read {
                Read::Live { entry, .. } => entry.starts_with(&self.identity),
                Read::Miss { .. } => false,
            },
            Err(_) => false,
        };
        if still_served {
            bump(&state.counters.verified);
            bump(&state.counters.stale_detected);
            tracing::warn!(
                namespace = state.name,
                key = lookup.key,
                "cache-aside: the consistency probe recomputed a hit and got another value: the \
                 cache served a stale entry (a write that invalidates nothing?)"
            );
        }
    }
}
