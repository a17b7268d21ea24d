//! The paths of a [`Lookup`] past its read (see `lookup.rs` for the map):
//! coalescing in process, the entry's lease across processes, computing,
//! and the compare-and-set store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use super::lookup::{Lookup, Read, Seen, as_slice};
use super::options::Filter;
use super::{Cache, jitter};
use crate::backend::{Acquire, Backend, Expect, Store};
use crate::entry::{self, HEADER_LEN, IDENTITY_LEN, Meta};
use crate::flight::{self, Outcome, Role};
use crate::stats::{self, Status, bump};

/// How a wait for another process's lease ended.
enum Waited {
    /// Its entry appeared.
    Value(Vec<u8>),
    /// The lease went away without an entry: this is what the key holds now.
    OwnerGone(Seen),
    TimedOut,
    Failed,
}

impl<T, R, U> Lookup<'_, T, R, U>
where
    T: Serialize + DeserializeOwned,
    U: Filter<T>,
{
    /// A miss: coalesce in process, take the lease (or wait for its owner),
    /// compute, store, and hand the value to whoever waited.
    pub(super) async fn miss<Fut: Future<Output = R>>(&self, fut: Fut, mut seen: Seen) -> R {
        let inner = &*self.cache.inner;
        let state = self.state;
        let now = Instant::now();
        let deadline = now
            .checked_add(self.policy.lock_wait)
            .unwrap_or(now + Duration::from_secs(86_400));
        // In process: one leader per key; the others wait for its outcome.
        let flight_key = flight::flight_key(
            &self.key,
            as_slice(&seen.generation),
            seen.expect.as_deref(),
        );
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
                                return (self.shape.from_value)(value);
                            }
                        }
                        Some(Outcome::Shared(any)) => {
                            if let Some(out) =
                                self.shape.share.and_then(|s| (s.from_shared)(&**any))
                            {
                                bump(&state.counters.coalesced);
                                stats::report(Status::Miss);
                                return out;
                            }
                        }
                        Some(Outcome::Abandoned) => continue,
                        None => {}
                    }
                    // No usable outcome: compute without waiting more.
                    let expect = expect_of(&seen.expect);
                    return self
                        .compute(fut, expect, as_slice(&seen.generation), None, None)
                        .await;
                }
            }
        };
        // Across processes: the entry's lease.
        let mut lease: Option<LeaseHeld> = None;
        if self.policy.lock {
            let mut changes = 0;
            loop {
                if seen.leased {
                    bump(&state.counters.lease_waits);
                    match self.wait_for_owner(deadline).await {
                        Waited::Value(entry) => {
                            leader = match self.serve(leader, &entry) {
                                Ok(out) => return out,
                                Err(l) => l,
                            };
                            seen.expect = entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec);
                            seen.leased = false;
                        }
                        Waited::OwnerGone(now) => seen = now,
                        Waited::TimedOut | Waited::Failed => break,
                    }
                    continue;
                }
                let token = entry::lease(self.policy.lease);
                // Callers that read this lease (and this generation) join us.
                // Registered before the lease is written, so no reader can
                // see the lease before it leads them here.
                leader.alias(flight::flight_key(
                    &self.key,
                    as_slice(&seen.generation),
                    Some(&token),
                ));
                match inner
                    .backend
                    .acquire(
                        &self.key,
                        expect_of(&seen.expect),
                        &token,
                        self.policy.lease,
                    )
                    .await
                {
                    Ok(Acquire::Acquired) => {
                        lease = Some(LeaseHeld {
                            cache: self.cache.clone(),
                            entry_key: self.key.clone(),
                            token,
                            armed: AtomicBool::new(true),
                        });
                        break;
                    }
                    Ok(Acquire::Changed) if changes < 3 => {
                        changes += 1;
                        let Ok(snap) = self.read().await else {
                            break;
                        };
                        seen.generation = snap.generation;
                        match snap.read {
                            Read::Live { entry, meta }
                                if entry::unix_ms() <= meta.expires_at_ms =>
                            {
                                leader = match self.serve(leader, &entry) {
                                    Ok(out) => return out,
                                    Err(l) => l,
                                };
                                seen.expect = entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec);
                            }
                            Read::Live { entry, .. } => {
                                seen.expect = entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec);
                            }
                            Read::Miss { expect, leased } => {
                                seen.expect = expect;
                                seen.leased = leased;
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
            None => expect_of(&seen.expect),
        };
        self.compute(
            fut,
            store_expect,
            as_slice(&seen.generation),
            lease.as_ref(),
            Some(leader),
        )
        .await
    }

    /// A live entry found while leading (another process computed it): its
    /// value, also handed to this process's followers; or, if it does not
    /// decode, the leadership back.
    fn serve<'l>(&self, leader: flight::Leader<'l>, entry: &[u8]) -> Result<R, flight::Leader<'l>> {
        let payload = entry.get(HEADER_LEN..).unwrap_or_default();
        match self.cache.inner.codec.decode::<T>(payload) {
            Ok(value) => {
                if leader.has_followers() {
                    leader.finish(Outcome::Value(Arc::from(payload)));
                }
                bump(&self.state.counters.hits);
                stats::report(Status::Hit);
                Ok((self.shape.from_value)(value))
            }
            Err(_) => Err(leader),
        }
    }

    /// Polls until the lease owner's entry appears, the lease goes away, or
    /// the deadline passes.
    async fn wait_for_owner(&self, deadline: Instant) -> Waited {
        let mut pause = Duration::from_millis(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Waited::TimedOut;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(25));
            let Ok(snap) = self.read().await else {
                return Waited::Failed;
            };
            let generation = snap.generation;
            match snap.read {
                Read::Live { entry, meta } if entry::unix_ms() <= meta.expires_at_ms => {
                    return Waited::Value(entry);
                }
                Read::Miss { leased: true, .. } => {}
                Read::Miss { expect, leased } => {
                    return Waited::OwnerGone(Seen {
                        expect,
                        leased,
                        generation,
                    });
                }
                Read::Live { entry, .. } => {
                    return Waited::OwnerGone(Seen {
                        expect: entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec),
                        leased: false,
                        generation,
                    });
                }
            }
        }
    }

    /// Runs the body, stores its value, hands the outcome to the waiters.
    pub(super) async fn compute<Fut: Future<Output = R>>(
        &self,
        fut: Fut,
        expect: Expect<'_>,
        seen_generation: Option<&[u8]>,
        lease: Option<&LeaseHeld>,
        leader: Option<flight::Leader<'_>>,
    ) -> R {
        let inner = &*self.cache.inner;
        let state = self.state;
        bump(&state.counters.misses);
        let started = Instant::now();
        let out = fut.await;
        let elapsed = started.elapsed();
        let mut stored = false;
        let mut outcome = Outcome::Abandoned;
        if let Some(value) = (self.shape.value_of)(&out) {
            let ttl = jitter(self.policy.ttl);
            let meta = Meta {
                expires_at_ms: entry::unix_ms().saturating_add(ttl.as_millis() as u64),
                compute_ms: u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
            };
            let mut tail = entry::entry_tail(meta, 64);
            let payload_at = tail.len();
            match inner.codec.encode(value, &mut tail) {
                Ok(()) => {
                    if !self.unless.skip(value) {
                        let px = ttl + self.policy.stale;
                        stored = self
                            .store(expect, seen_generation, px, elapsed, &tail)
                            .await;
                        if stored {
                            self.local_insert(&tail[payload_at..], meta.expires_at_ms);
                        }
                    }
                    if leader.as_ref().is_some_and(flight::Leader::has_followers) {
                        outcome = Outcome::Value(Arc::from(&tail[payload_at..]));
                    }
                }
                Err(e) => {
                    tracing::warn!(key = self.key, error = %e, "cache-aside: value does not encode; not stored");
                    bump(&state.counters.errors);
                }
            }
        } else if let Some(shared) = self.shape.share.and_then(|s| (s.to_shared)(&out)) {
            outcome = Outcome::Shared(shared);
        }
        if let Some(l) = lease {
            l.armed.store(false, Relaxed);
            if !stored {
                // Nothing stored under our lease: let the next reader compute
                // now instead of waiting for the lease to expire.
                let released = inner
                    .backend
                    .release(&self.key, &l.token, &entry::tombstone(), inner.guard_ttl)
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

    /// Stores `tail` under the entry key if the guards allow; true if stored.
    async fn store(
        &self,
        expect: Expect<'_>,
        seen_generation: Option<&[u8]>,
        px: Duration,
        elapsed: Duration,
        tail: &[u8],
    ) -> bool {
        let inner = &*self.cache.inner;
        let state = self.state;
        if elapsed >= inner.guard_ttl {
            // A key invalidation's tombstone lives for guard_ttl; a
            // computation that took longer cannot prove it saw no write.
            tracing::debug!(
                key = self.key,
                ?elapsed,
                "cache-aside: not stored: computed for longer than the invalidation guard"
            );
            bump(&state.counters.stores_rejected);
            return false;
        }
        if tail.len() > inner.max_value_bytes {
            bump(&state.counters.too_large);
            tracing::debug!(
                key = self.key,
                bytes = tail.len(),
                "cache-aside: value larger than max_value_bytes; not stored"
            );
            bump(&state.counters.stores_rejected);
            return false;
        }
        let store = Store {
            entry_key: &self.key,
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
                inner.hub.forget_views(&state.coherence);
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
pub(super) struct LeaseHeld {
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

fn expect_of(expect: &Option<Vec<u8>>) -> Expect<'_> {
    match expect {
        Some(p) => Expect::Prefix(p),
        None => Expect::Absent,
    }
}
