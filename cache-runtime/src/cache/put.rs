//! Write-through: a `#[cache_put]` call. Its value becomes the entry the
//! namespace's reader reads under the same key, as safely as an
//! invalidation:
//!
//! ```text
//! claim the key as a writer (whatever it holds but a live fence), notice published   1 round trip
//! run the body (readers wait for the writer's lease, as for a reader's)
//!   Ok(value), the key still holds this lease, generation unchanged .... store      +1
//!   Ok(value), anything else (another writer, a lapsed lease taken over) tombstone  +1
//!   Err, or the put dropped before it settled .......................... a tombstone
//! inside a transaction scope: fence the key, run the body, and store the value when
//! the scope ends after a commit, if nothing else wrote the key (see `tombstone.lua`)
//! ```
//!
//! Why the order is safe: a writer stores only if its lease is still on the
//! key, so no other writer claimed the key after it, and every writer that
//! finished before it had finished (committed) before its claim. Whichever
//! writer finishes last either stores the last committed value or leaves a
//! tombstone. A reader's store needs its own lease, which a writer's claim
//! replaced, so a slow reader never overwrites a put.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use super::lookup::{Shape, Target};
use super::options::{CallOptions, Compress, Filter};
use super::payload;
use super::registry::NsState;
use super::scope::{self, PendingPut};
use super::{Cache, jitter, track};
use crate::backend::{Backend, Claim, Claimed, Expect, GenValue, Notice, Store};
use crate::control::{self, Mode};
use crate::entry::{self, Meta};
use crate::schema;
use crate::stats::bump;

/// How a put stores: its options, the TTL from the value (`ttl = f`, in a
/// [`Filter`]), the schema of its value type.
struct Put<'a, U> {
    opts: &'a CallOptions,
    ttl_of: &'a U,
    schema: u64,
}

/// A put's value, encoded as an entry's tail, and how long the key keeps
/// it: its TTL, and the stale and fail-safe windows of the namespace's
/// reader.
struct Encoded {
    tail: Vec<u8>,
    px: Duration,
}

/// A put that has not settled its key yet: dropped before it stored (or
/// invalidated) it, it invalidates the key in a task of its own, whatever
/// the key holds (its lease, or a reader's value computed while the write
/// ran after its lease lapsed).
struct Unsettled {
    target: Option<(Cache, Arc<NsState>, String)>,
}

impl Unsettled {
    fn new(cache: &Cache, state: &Arc<NsState>, key: &str) -> Unsettled {
        Unsettled {
            target: Some((cache.clone(), Arc::clone(state), key.to_owned())),
        }
    }

    /// The put settles its key itself.
    fn settle(mut self) {
        self.target = None;
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if let Some((cache, state, key)) = self.target.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let work = cache.invalidation_in_flight();
            rt.spawn(async move {
                let _work = work;
                cache.invalidate_entry(&state, key, None).await
            });
        }
    }
}

impl Cache {
    /// One `#[cache_put]` call: `fut` is the write; its value (through
    /// `shape`, `Ok` of a `Result`) becomes the entry under `target`.
    /// Never fails the caller: whatever cannot be stored is invalidated.
    pub(crate) async fn put_key<T, R, U, Fut>(
        &self,
        target: Target<'_>,
        opts: &CallOptions,
        ttl_of: &U,
        fut: Fut,
        shape: Shape<T, R>,
    ) -> R
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = R>,
    {
        if let Some(site) = target.site {
            self.note_key_writer(target.ns, site);
        }
        let Some(state) = self.state(target.ns) else {
            return fut.await;
        };
        let key = match target.key {
            Ok(k) => k,
            Err(e) => {
                let out = fut.await;
                // Also after a failure: the write may have committed.
                {
                    let work = self.invalidation_in_flight();
                    let (c, ns) = (self.clone(), target.ns.to_owned());
                    let scope = scope::current();
                    let _ = tokio::spawn(async move {
                        let _work = work;
                        c.invalidate_key_encoded(&ns, Err(e), scope.as_deref())
                            .await
                    })
                    .await;
                }
                return out;
            }
        };
        let schema = schema::schema(&schema::Parts {
            fingerprint: schema::fingerprint::<T>(),
            codec: self.inner.codec,
            version: opts.version,
            generics: &[],
            tags: &[],
        });
        if let Some(scope) = scope::current() {
            let put = Put {
                opts,
                ttl_of,
                schema,
            };
            return self
                .put_in_scope(&scope, &state, key, put, fut, shape)
                .await;
        }
        let inner = &*self.inner;
        let usable = control::mode() != Mode::Bypass
            && inner.breaker(&state).allow()
            && !self.invalidation_pending(&state, &key);
        // From here, a put whose future is dropped (by its caller, or a
        // timeout) may have written: its key is invalidated.
        let unsettled = Unsettled::new(self, &state, &key);
        let claimed = match usable {
            true => self.claim_as_writer(&state, &key, opts).await,
            false => None,
        };
        inner.hub.local_key_invalidated(&state.coherence, &key);
        let Some((generation, lease)) = claimed else {
            // No claim (a bypass scope, an outage, a fence): the write
            // still must not leave the old value, so invalidate after it,
            // also when it failed (perhaps after it committed).
            let out = fut.await;
            unsettled.settle();
            self.invalidate_detached(&state, key).await;
            return out;
        };
        let started = Instant::now();
        let out = fut.await;
        let Some(value) = (shape.value_of)(&out) else {
            // The write failed, perhaps after it committed, and perhaps
            // after its lease lapsed and a reader took the key over: a
            // tombstone over whatever the key holds.
            unsettled.settle();
            self.invalidate_detached(&state, key).await;
            return out;
        };
        let put = Put {
            opts,
            ttl_of,
            schema,
        };
        let encoded = self.encode_put(&state, &key, &put, value, started.elapsed());
        let stored = match &encoded {
            Some(e) => self.store_put(&state, &key, &lease, generation, e).await,
            None => false,
        };
        unsettled.settle();
        if stored {
            bump(&state.counters.puts);
        } else {
            self.invalidate_detached(&state, key).await;
        }
        out
    }

    /// The writer's claim: its lease on `key` and the generation it saw.
    async fn claim_as_writer(
        &self,
        state: &NsState,
        key: &str,
        opts: &CallOptions,
    ) -> Option<(GenValue, Vec<u8>)> {
        let inner = &*self.inner;
        let lease = opts
            .lease
            .unwrap_or(inner.max_lease)
            .max(Duration::from_millis(1));
        let tokens = track::KeyTokens::of(state, key);
        let claim = Claim {
            entry_key: key,
            generation_key: &state.generation_key,
            expect: Expect::Absent,
            nonce: entry::token(),
            others_wait: true,
            lease,
            hold: inner.guard_ttl.max(lease),
            fresh_generation: entry::token(),
            generation_ttl: inner.generation_ttl,
            writer: Some(Notice {
                channel: inner.hub.channel(),
                namespace: &state.name,
            }),
            buckets: Some(tokens.buckets()),
        };
        match inner.backend.claim(claim).await {
            Ok(Claimed::Taken {
                generation, lease, ..
            }) => {
                inner.breaker(state).success();
                Some((generation, lease))
            }
            Ok(Claimed::Fenced) => {
                bump(&state.counters.fenced);
                None
            }
            Ok(_) => None,
            Err(e) => {
                inner.note_failure(state, &e);
                bump(&state.counters.errors);
                None
            }
        }
    }

    /// The value as an entry's tail, if it may be stored: `None` when it
    /// does not encode, is too large, or is not what the namespace's reader
    /// in this process reads (another type: logged once).
    fn encode_put<T: Serialize, U: Filter<T>>(
        &self,
        state: &NsState,
        key: &str,
        put: &Put<'_, U>,
        value: &T,
        elapsed: Duration,
    ) -> Option<Encoded> {
        let inner = &*self.inner;
        let schema = put.schema;
        let reader = state.reader_schema.load(Relaxed);
        if reader != 0 && reader != schema {
            bump(&state.counters.schema_mismatches);
            if !state.put_mismatch_logged.swap(true, Relaxed) {
                tracing::error!(
                    namespace = state.name,
                    "cache-aside: a #[cache_put] of this namespace returns another type (or \
                     `version`) than its #[cached] reader, which would read its values as \
                     misses: the key is invalidated instead; return the reader's type"
                );
            }
            return None;
        }
        let chosen = (put.ttl_of.ttl(value))
            .or(put.opts.ttl)
            .unwrap_or(inner.default_ttl);
        if chosen.is_zero() {
            // A zero TTL from the value: not stored (the key is invalidated).
            return None;
        }
        let ttl = jitter(chosen);
        let meta = Meta {
            expires_at_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            compute_ms: u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
            schema,
        };
        let mut tail = entry::entry_tail(meta, 64);
        let payload_at = tail.len();
        if let Err(e) = inner.codec.encode(value, &mut tail) {
            tracing::warn!(key, error = %e, "cache-aside: a put's value does not encode; the key is invalidated");
            bump(&state.counters.errors);
            return None;
        }
        let above = Compress::threshold(put.opts.compress, inner.compress_above);
        let tail = payload::pack(&tail, payload_at, above).unwrap_or(tail);
        if tail.len() > inner.max_value_bytes {
            bump(&state.counters.too_large);
            return None;
        }
        let linger = Duration::from_millis(state.reader_linger_ms.load(Relaxed));
        Some(Encoded {
            tail,
            px: ttl + linger,
        })
    }

    /// Stores over exactly the writer's lease, under the generation its
    /// claim saw; true if stored.
    async fn store_put(
        &self,
        state: &NsState,
        key: &str,
        lease: &[u8],
        generation: GenValue,
        e: &Encoded,
    ) -> bool {
        let inner = &*self.inner;
        let tokens = track::KeyTokens::of(state, key);
        let store = Store {
            entry_key: key,
            generation_key: &state.generation_key,
            expect: Expect::Exactly(lease),
            generation,
            ttl: e.px,
            tail: &e.tail,
            restore: false,
            deps: false,
            bump: Some((tokens.buckets(), entry::token())),
        };
        match inner.backend.store(store).await {
            Ok(true) => true,
            Ok(false) => {
                bump(&state.counters.stores_rejected);
                // As a reader's refused store (see `miss.rs`).
                inner.hub.forget_views(&state.coherence);
                false
            }
            Err(err) => {
                inner.note_failure(state, &err);
                bump(&state.counters.errors);
                false
            }
        }
    }

    /// Inside a transaction scope: fence the key as an invalidation does,
    /// run the write, and leave its value to the scope's end.
    async fn put_in_scope<T, R, U, Fut>(
        &self,
        scope: &scope::Scope,
        state: &Arc<NsState>,
        key: String,
        put: Put<'_, U>,
        fut: Fut,
        shape: Shape<T, R>,
    ) -> R
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = R>,
    {
        let inner = &*self.inner;
        let (change, ticket) = scope.hold_put(self, state, &key);
        let fenced = match inner.breaker(state).allow() {
            true => self.send(state, Some(&key), change).await,
            false => None,
        };
        inner.hub.local_key_invalidated(&state.coherence, &key);
        if fenced.is_none() {
            // Queued as an invalidation, which the scope's end repeats.
            self.enqueue(state, Some(key.clone()));
        }
        let started = Instant::now();
        let out = fut.await;
        if let (Some(value), Some(f)) = ((shape.value_of)(&out), fenced)
            && let (Some(head), Some(generation)) = (f.head, f.generation)
            && let Some(e) = self.encode_put(state, &key, &put, value, started.elapsed())
        {
            let put = PendingPut {
                head,
                generation,
                tail: e.tail,
                ttl: e.px,
            };
            scope.put(ticket, put);
        }
        // Otherwise the ticket drops: the key is invalidated when the scope
        // ends.
        out
    }

    /// A key invalidation that outlives its caller (a dropped caller after
    /// its write must not leave the old value).
    async fn invalidate_detached(&self, state: &Arc<NsState>, key: String) {
        let work = self.invalidation_in_flight();
        let (c, state) = (self.clone(), Arc::clone(state));
        let _ = tokio::spawn(async move {
            let _work = work;
            c.invalidate_entry(&state, key, None).await
        })
        .await;
    }
}
