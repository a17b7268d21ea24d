//! The paths of a [`Lookup`] past its read (see `lookup.rs` for the map):
//! coalescing in process, the claim of the key across processes, computing,
//! and the compare-and-set store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use super::lookup::{Lookup, Read, Seen, StoreAs};
use super::options::Filter;
use super::payload;
use super::track::{self, Track};
use super::{Cache, jitter};
use crate::backend::{Backend, Claim, Claimed, Expect, GenValue, Generation, Store};
use crate::entry::{self, IDENTITY_LEN, LEASE_MAGIC, Meta, Why};
use crate::flight::{self, Outcome, Role};
use crate::stats::{self, Status, bump};
use tracing::Instrument;

/// How many times a claim may find the key changed before the call
/// computes without storing.
const MAX_CHANGES: u32 = 3;

impl<T, R, U> Lookup<'_, T, R, U>
where
    T: Serialize + DeserializeOwned,
    U: Filter<T>,
{
    /// A miss: coalesce in process, claim the key (or wait for the caller
    /// that holds it), compute, store, and hand the value to whoever waited.
    pub(super) async fn miss<Fut: Future<Output = R>>(&self, fut: Fut, mut seen: Seen) -> R {
        let inner = &*self.cache.inner;
        let state = self.state;
        let now = Instant::now();
        let deadline = now
            .checked_add(self.policy.lock_wait)
            .unwrap_or(now + Duration::from_secs(86_400));
        // In process: one leader per key; the others wait for its outcome.
        let flight_key = self.flight_key(&seen.generation, seen.expect.as_deref());
        let mut leader = loop {
            match inner.flights.join(&flight_key) {
                Role::Leader(l) => break l,
                Role::Follower(rx) => {
                    if let Some(t) = track::current() {
                        // The leader's deps are not known here.
                        t.unknown();
                    }
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
                        Some(Outcome::FailSafe(bytes)) => {
                            if let Ok(value) = inner.codec.decode::<T>(bytes) {
                                bump(&state.counters.fail_safe_served);
                                stats::report(Status::FailSafe);
                                return (self.shape.from_value)(value);
                            }
                        }
                        Some(Outcome::Abandoned) => continue,
                        Some(Outcome::Recompute) | None => {}
                    }
                    // No usable outcome: compute without waiting more (and
                    // without storing: this call holds no claim).
                    return self.compute(fut, None, None, None, None).await;
                }
            }
        };
        // Across processes: claim the key, or wait for the caller that holds it.
        let mut changes = 0;
        let mut waited = false;
        let mut pause = Duration::from_millis(2);
        let claimed = loop {
            let (nonce, fresh) = (entry::token(), entry::token());
            // Callers in this process that read this lease (under the
            // generation it will be stored under) join us. Registered
            // before the lease is written, so no reader can see the lease
            // before it leads them here. A namespace without a generation
            // gets `fresh` from this claim, unless another caller's claim
            // made one first (then those readers wait for the lease).
            let mut lease_id = vec![LEASE_MAGIC];
            lease_id.extend_from_slice(&nonce);
            let under = match &seen.generation {
                Generation::Absent => Generation::Current(GenValue {
                    token: fresh,
                    life: None,
                }),
                g => *g,
            };
            leader.alias(self.flight_key(&under, Some(&lease_id)));
            let claim = Claim {
                entry_key: &self.key,
                generation_key: &state.generation_key,
                expect: match &seen.expect {
                    Some(p) => Expect::Prefix(p),
                    None => Expect::Absent,
                },
                nonce,
                others_wait: self.policy.lock,
                lease: self.policy.lease,
                hold: inner.guard_ttl.max(self.policy.lease),
                fresh_generation: fresh,
                generation_ttl: inner.generation_ttl,
                writer: None,
                buckets: None,
            };
            let changed = match inner.backend.claim(claim).await {
                Ok(Claimed::Taken {
                    generation,
                    lease,
                    replaced_read,
                }) => {
                    if under.current().map(|g| g.token) != Some(generation.token) {
                        leader.alias(
                            self.flight_key(&Generation::Current(generation), Some(&lease_id)),
                        );
                    }
                    break Some((generation, lease, replaced_read));
                }
                Ok(Claimed::Fenced) => {
                    bump(&state.counters.fenced);
                    if let Some(t) = track::current() {
                        // A scope that dies before its end leaves the
                        // key's bucket as its fence made it: an outer
                        // value computed now could outlive it.
                        t.unknown();
                    }
                    break None;
                }
                Ok(Claimed::Held) if self.policy.lock && Instant::now() < deadline => {
                    if !waited {
                        waited = true;
                        bump(&state.counters.lease_waits);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_millis(25));
                    false
                }
                // lock = false, or waited long enough: compute, do not store.
                Ok(Claimed::Held) => break None,
                Ok(Claimed::Changed) if changes < MAX_CHANGES => {
                    changes += 1;
                    true
                }
                Ok(Claimed::Changed) => break None,
                Err(e) => {
                    inner.note_failure(state, &e);
                    bump(&state.counters.errors);
                    break None;
                }
            };
            // The key moved on (or its owner may have stored): read it again.
            let Ok(snap) = self.read().await else {
                break None;
            };
            match snap.read {
                // A refresh scope serves nothing cached, and never claims
                // over a live entry (a failed body would leave a tombstone):
                // it recomputes and stores over exactly that entry.
                Read::Live { entry, .. } if self.policy.force => {
                    let to = StoreAs::over(&entry, &snap.generation);
                    return self.compute(fut, to, None, Some(leader), None).await;
                }
                Read::Live { entry, meta } if entry::unix_ms() <= meta.expires_at_ms => {
                    leader = match self.serve(leader, &entry) {
                        Ok(out) => return out,
                        Err(l) => l,
                    };
                    seen.expect = entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec);
                    seen.why = Why::Dead;
                }
                Read::Live { entry, .. } => {
                    seen.expect = entry.get(..IDENTITY_LEN).map(<[u8]>::to_vec);
                    seen.why = Why::Dead;
                }
                Read::Miss { expect, why } => {
                    if !changed && why != Why::Leased {
                        // The lease we waited for is gone: claim at once.
                        pause = Duration::from_millis(2);
                    }
                    seen.expect = expect;
                    seen.why = why;
                }
            }
            seen.generation = snap.generation;
        };
        if claimed.is_none()
            && let Some(t) = track::current()
        {
            // Computed without a claim (a lease held, perhaps a writer's
            // that dies before its store bumps the key again; an error; a
            // fence): the tokens this call read may not cover its value.
            t.unknown();
        }
        let lease = claimed.as_ref().map(|(_, lease, _)| {
            LeaseHeld::new(self.cache.clone(), self.key.clone(), lease.clone())
        });
        let to = claimed.as_ref().map(|(generation, lease, _)| StoreAs {
            expect: Expect::Exactly(lease),
            generation: *generation,
        });
        // A fail-safe entry only if the lease replaced exactly it (no
        // invalidation in between), under the generation it carries.
        let fallback = match (&claimed, seen.fallback.as_deref()) {
            (Some((generation, _, true)), Some(f))
                if f.get(..IDENTITY_LEN) == seen.expect.as_deref()
                    && f.get(1..1 + entry::TOKEN_LEN) == Some(&generation.token[..]) =>
            {
                Some(f)
            }
            _ => None,
        };
        self.compute(fut, to, lease.as_ref(), Some(leader), fallback)
            .await
    }

    /// The in-process flight of this key: keyed by what its leader read.
    fn flight_key(&self, generation: &Generation, read: Option<&[u8]>) -> String {
        let g: Option<&[u8]> = match generation {
            Generation::Current(g) => Some(&g.token),
            Generation::Fenced(t) => Some(t),
            Generation::Absent => None,
        };
        let mut k = flight::flight_key(&self.key, g, read);
        if let Some(tags) = &self.tags {
            // A caller that read newer tag tokens never joins an older read.
            tags.extend_flight_key(&mut k);
        }
        if self.policy.force {
            // A refresh scope's callers share computations among
            // themselves only: never an older one, never with plain calls.
            k.push_str("\nrefresh");
        }
        k
    }

    /// A live entry found while leading (another process computed it): its
    /// value, also handed to this process's followers; or, if it does not
    /// decode, the leadership back.
    fn serve<'l>(&self, leader: flight::Leader<'l>, entry: &[u8]) -> Result<R, flight::Leader<'l>> {
        let inner = &*self.cache.inner;
        let payload = entry.get(self.payload_at(entry)..).unwrap_or_default();
        let decoded = payload::unpack(payload, entry::is_compressed(entry), inner.max_value_bytes)
            .and_then(|plain| Ok((inner.codec.decode::<T>(&plain)?, plain)));
        match decoded {
            Ok((value, plain)) => {
                if leader.has_followers() {
                    leader.finish(Outcome::Value(Arc::from(&*plain)));
                }
                bump(&self.state.counters.hits);
                stats::report(Status::Hit);
                Ok((self.shape.from_value)(value))
            }
            Err(_) => Err(leader),
        }
    }

    /// Runs the body, stores its value (where `to` allows), hands the
    /// outcome to the waiters. With a `fallback` (an expired entry within
    /// its fail-safe window, which `lease` replaced), a failed or timed-out
    /// body serves that entry instead, and puts it back.
    pub(super) async fn compute<Fut: Future<Output = R>>(
        &self,
        fut: Fut,
        to: Option<StoreAs<'_>>,
        lease: Option<&LeaseHeld>,
        leader: Option<flight::Leader<'_>>,
        fallback: Option<&[u8]>,
    ) -> R {
        let inner = &*self.cache.inner;
        let state = self.state;
        bump(&state.counters.misses);
        let started = Instant::now();
        // What the body's own cached calls read (see `track.rs`); an outer
        // body's tracking, if this call is inside one.
        let parent = track::current();
        if let (Some(p), Some(to)) = (&parent, &to) {
            // The generation this value is computed under (which a claim
            // may just have made).
            p.record_by(&state.generation_key, &to.generation.bytes(), &self.key);
        }
        let tracked = Arc::new(Track::default());
        // The body runs in this span (its own spans and events are its
        // children); what became of its value is recorded at the end.
        let span = tracing::info_span!(
            target: "cache_aside",
            "cache_aside.compute",
            otel.kind = "internal",
            cache_aside.namespace = %state.name,
            cache_aside.key = %self.key,
            cache_aside.refresh = self.policy.force || to.as_ref().is_some_and(|t| matches!(t.expect, Expect::Prefix(_))),
            cache_aside.stored = tracing::field::Empty,
            cache_aside.value_bytes = tracing::field::Empty,
            cache_aside.fail_safe = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let fut = track::scope(Arc::clone(&tracked), fut).instrument(span.clone());
        let mut fut = std::pin::pin!(fut);
        let first = match self.policy.timeout.filter(|_| fallback.is_some()) {
            Some(t) => tokio::time::timeout(t, fut.as_mut()).await.ok(),
            None => Some(fut.as_mut().await),
        };
        let failed = first
            .as_ref()
            .is_none_or(|o| (self.shape.value_of)(o).is_none());
        if failed {
            span.record(
                "error.type",
                if first.is_none() {
                    "timeout"
                } else {
                    "body_error"
                },
            );
        }
        if failed
            && let (Some(f), Some(l), Some(to)) = (fallback, lease, to.as_ref())
            && let Some((value, payload)) = self.fail_safe(f, l, to.generation).await
        {
            span.record("cache_aside.fail_safe", true);
            if let Some(p) = &parent {
                p.unknown();
            }
            if let Some(leader) = leader {
                // An entry computed from other entries is not handed to
                // those who joined meanwhile (one may have started after an
                // invalidation of what it read): they read it back, which
                // checks its deps.
                leader.finish(if entry::deps_len(f) == 0 {
                    Outcome::FailSafe(payload)
                } else {
                    Outcome::Abandoned
                });
            }
            return (self.shape.from_value)(value);
        }
        let out = match first {
            Some(out) => out,
            // Timed out and nothing to serve: wait for the body after all.
            None => fut.as_mut().await,
        };
        let elapsed = started.elapsed();
        if (self.shape.value_of)(&out).is_some() {
            state.fail_safe_logged.store(false, Relaxed);
        }
        if let Some(p) = &parent {
            // The outer value depends on what this one was computed from.
            p.merge(&tracked);
        }
        let deps = tracked.deps();
        let with_deps = deps.as_ref().is_some_and(|d| !d.is_empty());
        let mut stored = false;
        // A store was tried under the call's claim, and refused.
        let mut refused = false;
        // The call holds a claim (a lease, or the entry it refreshes).
        let claimed = to.is_some();
        let mut outcome = Outcome::Abandoned;
        if let Some(value) = (self.shape.value_of)(&out) {
            // `ttl = f`: the value's own TTL (zero: not stored).
            let chosen = self.unless.ttl(value).unwrap_or(self.policy.ttl);
            let ttl = jitter(chosen);
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            // The store stamps the end on its own clock; this process's
            // estimate of it is for the local tier only.
            let expires_at_ms = entry::unix_ms().saturating_add(ttl_ms);
            let meta = Meta {
                expires_at_ms: ttl_ms,
                compute_ms: u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
                schema: self.schema,
            };
            let mut tail = entry::entry_tail(meta, 64);
            // What the body's cached calls read (a dep not known: nothing
            // stored), then, with tags, the tokens read before the body ran
            // (none read: nothing stored).
            let to = match &deps {
                None => None,
                Some(d) if !d.is_empty() => to.filter(|_| entry::write_deps(&mut tail, d)),
                Some(_) => to,
            };
            let to = match &self.tags {
                Some(tags) => to.filter(|_| tags.write_section(&mut tail)),
                None => to,
            };
            let payload_at = tail.len();
            match inner.codec.encode(value, &mut tail) {
                Ok(()) => {
                    // Stored compressed where the call asks and it saves;
                    // the local tier and the waiters get the codec's bytes.
                    let packed = payload::pack(&tail, payload_at, self.policy.compress_above);
                    let stored_tail = packed.as_deref().unwrap_or(&tail);
                    state
                        .histograms
                        .miss(elapsed, stored_tail.len() - payload_at);
                    span.record("cache_aside.value_bytes", stored_tail.len() - payload_at);
                    if let Some(to) = to
                        && !chosen.is_zero()
                        && !self.unless.skip(value)
                    {
                        let linger = self.policy.stale + self.policy.fail_safe;
                        let linger_ms = u64::try_from(linger.as_millis()).unwrap_or(u64::MAX);
                        state.reader_linger_ms.store(linger_ms, Relaxed);
                        let px = ttl + linger;
                        stored = self.store(to, px, elapsed, stored_tail, with_deps).await;
                        refused = !stored;
                        if stored && with_deps {
                            state.has_deps.store(true, Relaxed);
                        }
                        if stored && self.policy.force {
                            // Readers that read the replaced entry must not
                            // put it in the local tier after this store.
                            inner.hub.local_key_invalidated(&state.coherence, &self.key);
                        } else if stored && !with_deps {
                            // (An entry with deps is checked on every read:
                            // never in the local tier.)
                            self.local_insert(&tail[payload_at..], expires_at_ms);
                        }
                    }
                    // A value computed from other entries is not handed to
                    // the callers that joined meanwhile: one of them may have
                    // started after an invalidation of what this body read
                    // (which does not touch this key). They read the stored
                    // entry instead, which checks its deps.
                    let from_entries = deps.as_ref().is_none_or(|d| !d.is_empty());
                    // Nor a value whose store was refused, or computed with
                    // no claim to guard it: the key may have changed while
                    // the body ran, and a caller that joined may have read
                    // it after the change (an invalidation whose tombstone
                    // is gone again, evicted or deleted on a full Redis,
                    // looks like the empty key the leader read).
                    if !from_entries && leader.as_ref().is_some_and(flight::Leader::has_followers) {
                        outcome = if claimed && !refused {
                            Outcome::Value(Arc::from(&tail[payload_at..]))
                        } else {
                            // Not one after the other: each at once.
                            Outcome::Recompute
                        };
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
                    inner.note_failure(state, &e);
                }
            }
        }
        if let Some(leader) = leader {
            leader.finish(outcome);
        }
        span.record("cache_aside.stored", stored);
        stats::report(Status::Miss);
        out
    }

    /// The body failed (or timed out) and `lease` replaced `entry`, an
    /// expired entry within its fail-safe window: put it back as it was
    /// (over exactly the lease, under its generation: an invalidation since
    /// refuses it) and serve its value, with [`Status::FailSafe`].
    async fn fail_safe(
        &self,
        entry: &[u8],
        lease: &LeaseHeld,
        generation: GenValue,
    ) -> Option<(T, Arc<[u8]>)> {
        let inner = &*self.cache.inner;
        let state = self.state;
        let entry::Found::Live { meta, .. } =
            entry::classify(Some(entry), Some(&generation.token), self.schema)
        else {
            return None;
        };
        let payload = entry.get(self.payload_at(entry)..)?;
        let plain = payload::unpack(payload, meta.compressed(), inner.max_value_bytes).ok()?;
        let ends = meta
            .expires_at_ms
            .saturating_add(self.policy.stale.as_millis() as u64)
            .saturating_add(self.policy.fail_safe.as_millis() as u64);
        let left = ends.checked_sub(entry::unix_ms()).filter(|ms| *ms > 0)?;
        let value = inner.codec.decode::<T>(&plain).ok()?;
        let store = Store {
            entry_key: &self.key,
            generation_key: &state.generation_key,
            expect: Expect::Exactly(lease.token()),
            generation,
            ttl: Duration::from_millis(left),
            tail: entry,
            restore: true,
            deps: false,
            bump: None,
        };
        match inner.backend.store(store).await {
            Ok(true) => lease.disarm(),
            Ok(false) => return None,
            Err(e) => {
                inner.note_failure(state, &e);
                return None;
            }
        }
        bump(&state.counters.fail_safe_served);
        stats::report(Status::FailSafe);
        if !state.fail_safe_logged.swap(true, Relaxed) {
            tracing::warn!(
                namespace = state.name,
                "cache-aside: the body failed; serving the last good values (fail-safe) until it succeeds again"
            );
        }
        Some((value, Arc::from(&*plain)))
    }

    /// Stores `tail` under the entry key if the guards allow; true if stored.
    async fn store(
        &self,
        to: StoreAs<'_>,
        px: Duration,
        elapsed: Duration,
        tail: &[u8],
        deps: bool,
    ) -> bool {
        let inner = &*self.cache.inner;
        let state = self.state;
        if elapsed >= inner.guard_ttl {
            // A computation this long is not trusted to have seen every
            // write: the invalidation guard's promise.
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
        // A refresh scope replaces a live value on purpose (its source
        // changed): outer entries built from the old one read as misses.
        // Not inside another cached body: that body recorded the token as
        // this call read it, and a bump would leave its own entry dead.
        let tokens = (self.policy.force && track::current().is_none())
            .then(|| track::KeyTokens::of(state, &self.key));
        let store = Store {
            entry_key: &self.key,
            generation_key: &state.generation_key,
            expect: to.expect,
            generation: to.generation,
            ttl: px,
            tail,
            restore: false,
            deps,
            bump: tokens.as_ref().map(|t| (t.buckets(), entry::token())),
        };
        match inner.backend.store(store).await {
            Ok(true) => {
                bump(&state.counters.stores);
                true
            }
            Ok(false) => {
                bump(&state.counters.stores_rejected);
                // A refusal may mean the generation changed without a
                // notice reaching this connection (evicted and made again):
                // forget the views, so the next read learns it (an MGET).
                inner.hub.forget_views(&state.coherence);
                false
            }
            Err(e) => {
                inner.note_failure(state, &e);
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

impl LeaseHeld {
    fn new(cache: Cache, entry_key: String, token: Vec<u8>) -> LeaseHeld {
        LeaseHeld {
            cache,
            entry_key,
            token,
            armed: AtomicBool::new(true),
        }
    }

    fn token(&self) -> &[u8] {
        &self.token
    }

    /// The owner stored, or took care of the key itself.
    fn disarm(&self) {
        self.armed.store(false, Relaxed);
    }
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
