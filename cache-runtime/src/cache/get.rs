//! One cached call, from the read to the store.
//!
//! ```text
//! local tier (opt-in): live, same epochs ................ hit, no round trip
//! read (GET entry, or MGET entry + generation)       1 round trip
//!   live, fresh ........................................ hit
//!   live, fresh, XFetch says refresh, won refresh lock .. recompute, store
//!   live, past TTL, within `stale`, won refresh lock .... recompute, store
//!   live, past TTL, within `stale` ..................... stale (no wait)
//!   otherwise: miss
//! miss
//!   a concurrent call in this process computes ........ wait for its value
//!   take the entry's lease                             +1 round trip
//!     taken ............................................ compute, store (+1)
//!     another process holds it ......................... poll for its entry
//!   (lock_wait passed: compute without the lease)
//! ```

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use super::{Cache, CallOptions, Filter, NsSlot, NsState, bypass, jitter, lock};
use crate::backend::{Acquire, Backend, BackendError, Expect, Store};
use crate::entry::{self, Found, HEADER_LEN, IDENTITY_LEN, Meta, Token};
use crate::flight::{self, Outcome, Role};
use crate::key::KeyError;
use crate::local::Ticket;
use crate::stats::{self, Status, bump};

/// How an output relates to its cacheable value.
pub(crate) struct Shape<T, R> {
    value_of: fn(&R) -> Option<&T>,
    from_value: fn(T) -> R,
    share: Option<Sharer<R>>,
}

impl<T> Shape<T, T> {
    pub(crate) fn plain() -> Self {
        Shape {
            value_of: |v| Some(v),
            from_value: std::convert::identity,
            share: None,
        }
    }
}

impl<T, E> Shape<T, Result<T, E>> {
    pub(crate) fn result(share: Option<Sharer<Result<T, E>>>) -> Self {
        Shape {
            value_of: |r| r.as_ref().ok(),
            from_value: Ok,
            share,
        }
    }
}

/// How a non-cached output (an `Err`) is handed to the callers that waited
/// for it: needs a `Clone` error. Without one, the next waiter computes.
#[doc(hidden)]
pub struct Sharer<R> {
    pub to_shared: fn(&R) -> Option<Arc<dyn Any + Send + Sync>>,
    pub from_shared: fn(&(dyn Any + Send + Sync)) -> Option<R>,
}

impl<R> Clone for Sharer<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Sharer<R> {}

/// The options of one call, with the cache's defaults filled in.
struct Policy {
    ttl: Duration,
    stale: Duration,
    lock: bool,
    lock_wait: Duration,
    lease: Duration,
    early_refresh: Option<f64>,
    /// Local tier TTL (zero: off) and where the channel stood before the read.
    local: Duration,
    ticket: Option<Ticket>,
}

/// What one read found, owned.
enum Read {
    Live {
        entry: Vec<u8>,
        meta: Meta,
    },
    Miss {
        expect: Option<Vec<u8>>,
        leased: bool,
    },
}

struct Snapshot {
    read: Read,
    generation: Option<Token>,
}

impl Cache {
    fn policy(&self, o: &CallOptions) -> Policy {
        let inner = &*self.inner;
        let ttl = o.ttl.unwrap_or(inner.default_ttl);
        Policy {
            ttl,
            stale: o.stale.unwrap_or(Duration::ZERO),
            lock: o.lock.unwrap_or(true),
            lock_wait: o.lock_wait.unwrap_or(inner.lock_wait),
            lease: o
                .lease
                .unwrap_or(inner.max_lease)
                .min(ttl)
                .max(Duration::from_millis(1)),
            early_refresh: o.early_refresh.filter(|b| *b > 0.0),
            local: o.local.or(inner.local_ttl).unwrap_or(Duration::ZERO),
            ticket: None,
        }
    }

    /// Puts a value read or stored by this call into the local tier, unless
    /// an invalidation of the namespace (or a lost subscription) came in
    /// since the call's ticket; checked again after the insert, so a racing
    /// invalidation either sees the entry or is seen.
    fn local_insert(
        &self,
        state: &NsState,
        key: &str,
        payload: &[u8],
        policy: &Policy,
        expires_at_ms: u64,
    ) {
        let Some(ticket) = policy.ticket else {
            return;
        };
        let hub = &self.inner.hub;
        let unchanged =
            || state.local_seq.load(SeqCst) == ticket.seq && hub.flushes() == ticket.flushes;
        let left = Duration::from_millis(expires_at_ms.saturating_sub(entry::unix_ms()));
        let ttl = policy.local.min(left);
        if ttl.is_zero() || !unchanged() {
            return;
        }
        if hub.local.insert(key, payload, ticket, ttl) && !unchanged() {
            hub.local.remove(key);
        }
    }

    async fn read(&self, state: &NsState, entry_key: &str) -> Result<Snapshot, BackendError> {
        let inner = &*self.inner;
        match inner
            .backend
            .fetch(entry_key, &state.generation_key, &state.views)
            .await
        {
            Ok(fetched) => {
                inner.breaker.success();
                let generation = fetched.generation;
                let read = match entry::classify(fetched.entry.as_deref(), as_slice(&generation)) {
                    Found::Live { meta, .. } => Read::Live {
                        entry: fetched.entry.unwrap_or_default(),
                        meta,
                    },
                    Found::Miss {
                        expect,
                        corrupt,
                        leased,
                    } => {
                        if corrupt {
                            tracing::debug!(
                                key = entry_key,
                                "cache-aside: foreign bytes under a cache key; recomputing"
                            );
                            bump(&state.counters.decode_errors);
                        }
                        Read::Miss {
                            expect: expect.map(<[u8]>::to_vec),
                            leased,
                        }
                    }
                };
                Ok(Snapshot { read, generation })
            }
            Err(e) => {
                inner.note_failure(&e);
                bump(&state.counters.errors);
                Err(e)
            }
        }
    }

    /// The core of every cached call (see the module docs).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_key<T, R, U, Fut>(
        &self,
        ns: &str,
        slot: Option<&'static NsSlot>,
        entry_key: Result<String, KeyError>,
        opts: &CallOptions,
        unless: &U,
        fut: Fut,
        shape: Shape<T, R>,
    ) -> R
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = R>,
    {
        let inner = &*self.inner;
        let Some(state) = self.state_at(ns, slot) else {
            return bypass(None, fut).await;
        };
        let entry_key = match entry_key {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(namespace = ns, error = %e, "cache-aside: the call bypasses the cache");
                bump(&state.counters.errors);
                return bypass(Some(&state), fut).await;
            }
        };
        if state.pending_namespace.load(Relaxed)
            || (state.pending_keys.load(Relaxed) > 0
                && lock(&inner.retry).keys.contains_key(&entry_key))
        {
            // An invalidation of this entry has not landed yet: do not trust the cache.
            return bypass(Some(&state), fut).await;
        }
        let mut policy = self.policy(opts);
        if !policy.local.is_zero()
            && let Some(flushes) = inner.hub.local_epoch()
        {
            // The ticket is taken before the local lookup and the Redis read.
            let ticket = Ticket {
                seq: state.local_seq.load(SeqCst),
                epoch: state.local_epoch.load(SeqCst),
                flushes,
            };
            if let Some(hit) = inner.hub.local.get(&entry_key, ticket.epoch, flushes)
                && let Ok(value) = inner.codec.decode::<T>(&hit.payload)
            {
                bump(&state.counters.hits);
                bump(&state.counters.local_hits);
                stats::report(Status::Hit);
                return (shape.from_value)(value);
            }
            policy.ticket = Some(ticket);
        }
        if !inner.breaker.allow() {
            return bypass(Some(&state), fut).await;
        }
        let Ok(snap) = self.read(&state, &entry_key).await else {
            return bypass(Some(&state), fut).await;
        };
        let (read, generation) = (snap.read, snap.generation);
        let expect = match read {
            Read::Live { entry, meta } => {
                let payload = entry.get(HEADER_LEN..).unwrap_or_default();
                let identity = entry.get(..IDENTITY_LEN).unwrap_or_default();
                let now = entry::unix_ms();
                let fresh = now <= meta.expires_at_ms;
                let in_stale_window = !fresh
                    && policy.stale > Duration::ZERO
                    && now
                        <= meta
                            .expires_at_ms
                            .saturating_add(policy.stale.as_millis() as u64);
                let early = fresh
                    && policy
                        .early_refresh
                        .is_some_and(|beta| xfetch(meta, now, beta));
                if fresh || in_stale_window {
                    let refresh = (early || in_stale_window)
                        && self.win_refresh(&entry_key, policy.lease).await;
                    if refresh {
                        bump(if early {
                            &state.counters.early_refreshes
                        } else {
                            &state.counters.refreshes
                        });
                        let expect = Expect::Prefix(identity);
                        // Boxed, like the misses below: the hit path's
                        // future stays small (it is moved on every call).
                        return Box::pin(self.compute(
                            &state,
                            &entry_key,
                            &policy,
                            expect,
                            as_slice(&generation),
                            None,
                            None,
                            unless,
                            fut,
                            &shape,
                        ))
                        .await;
                    }
                    match inner.codec.decode::<T>(payload) {
                        Ok(value) => {
                            if fresh {
                                self.local_insert(
                                    &state,
                                    &entry_key,
                                    payload,
                                    &policy,
                                    meta.expires_at_ms,
                                );
                            }
                            let (counter, status) = if fresh {
                                (&state.counters.hits, Status::Hit)
                            } else {
                                (&state.counters.stale_served, Status::Stale)
                            };
                            bump(counter);
                            stats::report(status);
                            return (shape.from_value)(value);
                        }
                        Err(e) => {
                            tracing::debug!(key = %entry_key, error = %e, "cache-aside: stored value does not decode; recomputing");
                            bump(&state.counters.decode_errors);
                        }
                    }
                }
                Some(identity.to_vec())
            }
            Read::Miss { expect, leased } => {
                return Box::pin(self.miss(
                    &state, entry_key, &policy, expect, leased, generation, unless, fut, shape,
                ))
                .await;
            }
        };
        Box::pin(self.miss(
            &state, entry_key, &policy, expect, false, generation, unless, fut, shape,
        ))
        .await
    }

    /// Tries to become the one refresher of this entry for a window.
    async fn win_refresh(&self, entry_key: &str, lease: Duration) -> bool {
        let key = format!("{entry_key}|r");
        match self
            .inner
            .backend
            .try_lock(&key, &entry::token(), lease)
            .await
        {
            Ok(won) => won,
            Err(e) => {
                self.inner.note_failure(&e);
                false
            }
        }
    }

    /// A miss: coalesce in process, take the lease (or wait for its owner),
    /// compute, store, and hand the value to whoever waited.
    #[allow(clippy::too_many_arguments)]
    async fn miss<T, R, U, Fut>(
        &self,
        state: &NsState,
        entry_key: String,
        policy: &Policy,
        mut expect: Option<Vec<u8>>,
        mut leased: bool,
        mut generation: Option<Token>,
        unless: &U,
        fut: Fut,
        shape: Shape<T, R>,
    ) -> R
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = R>,
    {
        let inner = &*self.inner;
        let now = Instant::now();
        let deadline = now
            .checked_add(policy.lock_wait)
            .unwrap_or(now + Duration::from_secs(86_400));
        // In process: one leader per key; the others wait for its outcome.
        let flight_key = flight::flight_key(&entry_key, as_slice(&generation), expect.as_deref());
        let mut leader = loop {
            match inner.flights.join(&flight_key) {
                Role::Leader(l) => break l,
                Role::Follower(rx) => {
                    // The leader is in this process: wait for it as long as
                    // it computes (if it is dropped, a follower takes over).
                    // lock_wait bounds waits for other processes' leases.
                    match flight::follow(rx, None).await.as_deref() {
                        Some(Outcome::Value(bytes)) => {
                            if let Ok(value) = inner.codec.decode::<T>(bytes) {
                                bump(&state.counters.coalesced);
                                stats::report(Status::Hit);
                                return (shape.from_value)(value);
                            }
                        }
                        Some(Outcome::Shared(any)) => {
                            if let Some(out) = shape.share.and_then(|s| (s.from_shared)(&**any)) {
                                bump(&state.counters.coalesced);
                                stats::report(Status::Miss);
                                return out;
                            }
                        }
                        Some(Outcome::Abandoned) => continue,
                        None => {}
                    }
                    // No usable outcome: compute without waiting more.
                    return self
                        .compute(
                            state,
                            &entry_key,
                            policy,
                            expect_of(&expect),
                            as_slice(&generation),
                            None,
                            None,
                            unless,
                            fut,
                            &shape,
                        )
                        .await;
                }
            }
        };
        // Across processes: the entry's lease.
        let mut lease: Option<LeaseHeld> = None;
        if policy.lock {
            let mut changes = 0;
            loop {
                if leased {
                    bump(&state.counters.lease_waits);
                    match self.wait_for_owner(state, &entry_key, deadline).await {
                        Waited::Value(entry) => {
                            leader = match self.serve(state, leader, &entry, &shape) {
                                Ok(out) => return out,
                                Err(l) => l,
                            };
                            expect = entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec);
                            leased = false;
                        }
                        Waited::OwnerGone(snap) => {
                            match snap.read {
                                Read::Miss {
                                    expect: e,
                                    leased: l,
                                } => {
                                    expect = e;
                                    leased = l;
                                }
                                Read::Live { entry, .. } => {
                                    expect = entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec);
                                    leased = false;
                                }
                            }
                            generation = snap.generation;
                        }
                        Waited::TimedOut | Waited::Failed => break,
                    }
                    continue;
                }
                let token = entry::lease(policy.lease);
                // Callers that read this lease (and this generation) join us.
                // Registered before the lease is written, so no reader can
                // see the lease before it leads them here.
                leader.alias(flight::flight_key(
                    &entry_key,
                    as_slice(&generation),
                    Some(&token),
                ));
                match inner
                    .backend
                    .acquire(&entry_key, expect_of(&expect), &token, policy.lease)
                    .await
                {
                    Ok(Acquire::Acquired) => {
                        lease = Some(LeaseHeld {
                            cache: self.clone(),
                            entry_key: entry_key.clone(),
                            token,
                            armed: AtomicBool::new(true),
                        });
                        break;
                    }
                    Ok(Acquire::Changed) if changes < 3 => {
                        changes += 1;
                        let Ok(snap) = self.read(state, &entry_key).await else {
                            break;
                        };
                        generation = snap.generation;
                        match snap.read {
                            Read::Live { entry, meta }
                                if entry::unix_ms() <= meta.expires_at_ms =>
                            {
                                leader = match self.serve(state, leader, &entry, &shape) {
                                    Ok(out) => return out,
                                    Err(l) => l,
                                };
                                expect = entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec);
                            }
                            Read::Live { entry, .. } => {
                                expect = entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec);
                            }
                            Read::Miss {
                                expect: e,
                                leased: l,
                            } => {
                                expect = e;
                                leased = l;
                            }
                        }
                    }
                    Ok(Acquire::Changed) => break,
                    Err(e) => {
                        inner.note_failure(&e);
                        bump(&state.counters.errors);
                        break;
                    }
                }
            }
        }
        let store_expect = match &lease {
            Some(l) => Expect::Exactly(&l.token),
            None => expect_of(&expect),
        };
        self.compute(
            state,
            &entry_key,
            policy,
            store_expect,
            as_slice(&generation),
            lease.as_ref(),
            Some(leader),
            unless,
            fut,
            &shape,
        )
        .await
    }

    /// A live entry found while leading (another process computed it): its
    /// value, also handed to this process's followers; or, if it does not
    /// decode, the leadership back.
    fn serve<'l, T, R>(
        &self,
        state: &NsState,
        leader: flight::Leader<'l>,
        entry: &[u8],
        shape: &Shape<T, R>,
    ) -> Result<R, flight::Leader<'l>>
    where
        T: DeserializeOwned,
    {
        let payload = entry.get(HEADER_LEN..).unwrap_or_default();
        match self.inner.codec.decode::<T>(payload) {
            Ok(value) => {
                if leader.has_followers() {
                    leader.finish(Outcome::Value(Arc::from(payload)));
                }
                bump(&state.counters.hits);
                stats::report(Status::Hit);
                Ok((shape.from_value)(value))
            }
            Err(_) => Err(leader),
        }
    }

    /// Polls until the lease owner's entry appears, the lease goes away, or
    /// the deadline passes.
    async fn wait_for_owner(&self, state: &NsState, entry_key: &str, deadline: Instant) -> Waited {
        let mut pause = Duration::from_millis(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Waited::TimedOut;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(25));
            let Ok(snap) = self.read(state, entry_key).await else {
                return Waited::Failed;
            };
            match snap.read {
                Read::Live { entry, meta } if entry::unix_ms() <= meta.expires_at_ms => {
                    return Waited::Value(entry);
                }
                Read::Miss { leased: true, .. } => {}
                _ => return Waited::OwnerGone(snap),
            }
        }
    }

    /// Runs the body, stores its value, hands the outcome to the waiters.
    #[allow(clippy::too_many_arguments)]
    async fn compute<T, R, U, Fut>(
        &self,
        state: &NsState,
        entry_key: &str,
        policy: &Policy,
        expect: Expect<'_>,
        seen_generation: Option<&[u8]>,
        lease: Option<&LeaseHeld>,
        leader: Option<flight::Leader<'_>>,
        unless: &U,
        fut: Fut,
        shape: &Shape<T, R>,
    ) -> R
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = R>,
    {
        let inner = &*self.inner;
        bump(&state.counters.misses);
        let started = Instant::now();
        let out = fut.await;
        let elapsed = started.elapsed();
        let mut stored = false;
        let mut outcome = Outcome::Abandoned;
        if let Some(value) = (shape.value_of)(&out) {
            let ttl = jitter(policy.ttl);
            let meta = Meta {
                expires_at_ms: entry::unix_ms().saturating_add(ttl.as_millis() as u64),
                compute_ms: u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
            };
            let mut tail = entry::entry_tail(meta, 64);
            let payload_at = tail.len();
            match inner.codec.encode(value, &mut tail) {
                Ok(()) => {
                    if !unless.skip(value) {
                        stored = self
                            .store(
                                state,
                                entry_key,
                                expect,
                                seen_generation,
                                ttl + policy.stale,
                                elapsed,
                                &tail,
                            )
                            .await;
                        if stored {
                            let payload = &tail[payload_at..];
                            self.local_insert(
                                state,
                                entry_key,
                                payload,
                                policy,
                                meta.expires_at_ms,
                            );
                        }
                    }
                    if leader.as_ref().is_some_and(flight::Leader::has_followers) {
                        outcome = Outcome::Value(Arc::from(&tail[payload_at..]));
                    }
                }
                Err(e) => {
                    tracing::warn!(key = entry_key, error = %e, "cache-aside: value does not encode; not stored");
                    bump(&state.counters.errors);
                }
            }
        } else if let Some(shared) = shape.share.and_then(|s| (s.to_shared)(&out)) {
            outcome = Outcome::Shared(shared);
        }
        if let Some(l) = lease {
            l.armed.store(false, Relaxed);
            if !stored {
                // Nothing stored under our lease: let the next reader compute
                // now instead of waiting for the lease to expire.
                let released = inner
                    .backend
                    .release(entry_key, &l.token, &entry::tombstone(), inner.guard_ttl)
                    .await;
                if let Err(e) = released {
                    inner.note_failure(&e);
                }
            }
        }
        if let Some(leader) = leader {
            leader.finish(outcome);
        }
        stats::report(Status::Miss);
        out
    }

    /// Stores `tail` under `entry_key` if the guards allow; true if stored.
    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        state: &NsState,
        entry_key: &str,
        expect: Expect<'_>,
        seen_generation: Option<&[u8]>,
        px: Duration,
        elapsed: Duration,
        tail: &[u8],
    ) -> bool {
        let inner = &*self.inner;
        if elapsed >= inner.guard_ttl {
            // A key invalidation's tombstone lives for guard_ttl; a
            // computation that took longer cannot prove it saw no write.
            tracing::debug!(
                key = entry_key,
                ?elapsed,
                "cache-aside: not stored: computed for longer than the invalidation guard"
            );
            bump(&state.counters.stores_rejected);
            return false;
        }
        if tail.len() > inner.max_value_bytes {
            bump(&state.counters.too_large);
            tracing::debug!(
                key = entry_key,
                bytes = tail.len(),
                "cache-aside: value larger than max_value_bytes; not stored"
            );
            bump(&state.counters.stores_rejected);
            return false;
        }
        let store = Store {
            entry_key,
            generation_key: &state.generation_key,
            expect,
            seen_generation,
            fresh_generation: entry::token(),
            ttl: px,
            tail,
        };
        match inner.backend.store(store).await {
            Ok(true) => {
                bump(&state.counters.stores);
                true
            }
            Ok(false) => {
                bump(&state.counters.stores_rejected);
                // A refusal may mean the generation was evicted and made
                // again without a notice: forget the views, so the next
                // read learns it (an MGET) instead of missing forever.
                inner.hub.forget_views(state);
                false
            }
            Err(e) => {
                inner.note_failure(&e);
                bump(&state.counters.errors);
                false
            }
        }
    }
}

/// The lease this call holds. If the call is dropped before it stores (its
/// caller timed out or went away), the lease is released in the background,
/// so the callers waiting for it do not wait for it to expire.
struct LeaseHeld {
    cache: Cache,
    entry_key: String,
    token: Vec<u8>,
    armed: AtomicBool,
}

impl Drop for LeaseHeld {
    fn drop(&mut self) {
        if !self.armed.load(Relaxed) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (cache, key, token) = (
                self.cache.clone(),
                std::mem::take(&mut self.entry_key),
                std::mem::take(&mut self.token),
            );
            rt.spawn(async move {
                let guard = cache.inner.guard_ttl;
                let _ = cache
                    .inner
                    .backend
                    .release(&key, &token, &entry::tombstone(), guard)
                    .await;
            });
        }
    }
}

enum Waited {
    Value(Vec<u8>),
    OwnerGone(Snapshot),
    TimedOut,
    Failed,
}

fn as_slice(generation: &Option<Token>) -> Option<&[u8]> {
    generation.as_ref().map(|g| &g[..])
}

fn expect_of(expect: &Option<Vec<u8>>) -> Expect<'_> {
    match expect {
        Some(p) => Expect::Prefix(p),
        None => Expect::Absent,
    }
}

/// XFetch: refresh early with probability rising as expiry nears:
/// `now - delta * beta * ln(rand) >= expiry`.
fn xfetch(meta: Meta, now_ms: u64, beta: f64) -> bool {
    let delta = f64::from(meta.compute_ms.max(1));
    let gap = meta.expires_at_ms.saturating_sub(now_ms) as f64;
    -delta * beta * entry::unit_random().ln() >= gap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfetch_refreshes_more_often_near_expiry_and_for_slow_computations() {
        let rate = |gap_ms: u64, compute_ms: u32| {
            let meta = Meta {
                expires_at_ms: 1_000_000 + gap_ms,
                compute_ms,
            };
            (0..10_000).filter(|_| xfetch(meta, 1_000_000, 1.0)).count()
        };
        assert!(rate(10_000, 100) < 50, "far from expiry: rare");
        assert!(
            rate(100, 100) > 3_000,
            "one compute time before expiry: often"
        );
        assert_eq!(rate(0, 100), 10_000, "at expiry: always");
        assert!(rate(1_000, 1_000) > rate(1_000, 10));
    }
}
