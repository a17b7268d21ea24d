//! One cached call, from the read to the store: [`Lookup`] holds what the
//! call knows (the cache, the namespace's state, the entry key, the schema,
//! the options with the cache's defaults filled in), and its methods take
//! the call through the paths below. This file is the hit path; `miss.rs`
//! the rest, `refresh.rs` a refresh in the background.
//!
//! ```text
//! local tier (opt-in): live, same epochs ................ hit, no round trip
//! read (GET entry, or MGET entry + generation)       1 round trip
//!   live, fresh ........................................ hit
//!   live, fresh, XFetch says refresh, won refresh lock .. hit; refresh in the background
//!   live, past TTL, within `stale`, won refresh lock .... stale; refresh in the background
//!   live, past TTL, within `stale` ..................... stale (no wait)
//!   otherwise: miss                                      (miss.rs)
//! miss
//!   a concurrent call in this process computes ........ wait for its value
//!   claim the key (its lease)                          +1 round trip
//!     claimed .......................................... compute, store (+1)
//!     another process's lease .......................... wait for its entry
//!     a transaction's fence ............................ compute, do not store
//!   the body failed, an expired entry within `fail_safe` . put it back, serve it
//!   (lock_wait passed: compute, do not store)
//! ```

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use super::options::{CallOptions, Compress, Filter};
use super::payload;
use super::registry::{NsSlot, NsState};
use super::tags::Tags;
use super::track::{self, KeyTokens, Track};
use super::{Cache, Site, bypass};
use crate::backend::Fetched;
use crate::backend::{Backend, BackendError, Expect, GenValue, Generation};
use crate::control::{self, Mode};
use crate::entry::{self, Found, HEADER_LEN, IDENTITY_LEN, Meta, Why};
use crate::key::KeyError;
use crate::local::{LocalEntry, Ticket};
use crate::schema;
use crate::stats::{self, Status, bump};
use tracing::Instrument;

/// A read: the entry and generation, the extra tokens asked for, and the
/// values of the entry's deps when they were read with it.
type ReadTokens = (
    Fetched,
    Vec<Option<entry::Token>>,
    Option<Vec<Option<Vec<u8>>>>,
);

/// How an output relates to its cacheable value.
pub(crate) struct Shape<T, R> {
    pub(super) value_of: fn(&R) -> Option<&T>,
    pub(super) from_value: fn(T) -> R,
    pub(super) share: Option<Sharer<R>>,
    /// Keeps decoded values in the local tier (a `Clone` value type).
    pub(super) keep: Option<Keeper<T>>,
}

impl<T, R> Shape<T, R> {
    /// With decoded values kept in the local tier (see [`Keeper`]).
    pub(crate) fn kept(mut self, keep: Option<Keeper<T>>) -> Self {
        self.keep = keep;
        self
    }
}

/// How a local-tier entry keeps its value decoded, for a value type that
/// is `Clone + Send + Sync + 'static`: the first local hit decodes the
/// bytes and keeps the value; later ones clone it (no decode).
#[doc(hidden)]
pub struct Keeper<T> {
    pub keep: fn(&T) -> Arc<dyn Any + Send + Sync>,
    pub take: fn(&(dyn Any + Send + Sync)) -> Option<T>,
}

impl<T> Clone for Keeper<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Keeper<T> {}

impl<T, R> Clone for Shape<T, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T, R> Copy for Shape<T, R> {}

impl<T> Shape<T, T> {
    pub(crate) fn plain() -> Self {
        Shape {
            value_of: |v| Some(v),
            from_value: std::convert::identity,
            share: None,
            keep: None,
        }
    }
}

impl<T> Shape<T, Option<T>> {
    /// A batch's element: `None` when the batch's body left the key out.
    pub(crate) fn option() -> Self {
        Shape {
            value_of: Option::as_ref,
            from_value: Some,
            share: None,
            keep: None,
        }
    }
}

impl<T, E> Shape<T, Result<T, E>> {
    pub(crate) fn result(share: Option<Sharer<Result<T, E>>>) -> Self {
        Shape {
            value_of: |r| r.as_ref().ok(),
            from_value: Ok,
            share,
            keep: None,
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

/// Which entry a call is about: its namespace (with the call site's slot,
/// for `#[cached]`), its entry key, and the type parameters of a generic
/// fn (part of the schema).
pub(crate) struct Target<'a> {
    pub(crate) ns: &'a str,
    pub(crate) slot: Option<&'static NsSlot>,
    /// The `#[cached]` site (none for the by-hand API).
    pub(crate) site: Option<Site>,
    pub(crate) key: Result<String, KeyError>,
    pub(crate) generics: &'a [&'static str],
    /// The token keys of the call's tags (`tags(..)`, see `tags.rs`), in
    /// the order of `CallOptions::tags`.
    pub(crate) tags: Result<Vec<String>, KeyError>,
}

/// The options of one call, with the cache's defaults filled in.
#[derive(Clone)]
pub(super) struct Policy {
    pub(super) ttl: Duration,
    pub(super) stale: Duration,
    pub(super) lock: bool,
    pub(super) lock_wait: Duration,
    pub(super) lease: Duration,
    pub(super) early_refresh: Option<f64>,
    /// Local tier TTL (zero: off) and where the channel stood before the read.
    pub(super) local: Duration,
    pub(super) ticket: Option<Ticket>,
    /// Inside a [`refresh`](crate::refresh) scope: never serve what is
    /// cached, recompute and store over it.
    pub(super) force: bool,
    /// `fail_safe`: how long past the TTL and `stale` an entry is kept, to
    /// be served when the body fails; `timeout`: how long the body may run
    /// when such an entry is at hand.
    pub(super) fail_safe: Duration,
    pub(super) timeout: Option<Duration>,
    /// Encodings at least this long are stored compressed (`None`: never).
    pub(super) compress_above: Option<usize>,
    /// The share of fresh Redis hits the consistency probe recomputes.
    pub(super) verify: f64,
}

/// What one read found, owned.
pub(super) enum Read {
    Live { entry: Vec<u8>, meta: Meta },
    Miss { expect: Option<Vec<u8>>, why: Why },
}

/// A read and the namespace generation it saw.
pub(super) struct Snapshot {
    pub(super) read: Read,
    pub(super) generation: Generation,
}

/// What a miss knows of the key: what it held (`expect`: its identity, as
/// a claim compares it; `None` for an empty key), and why it is no hit.
pub(super) struct Seen {
    pub(super) expect: Option<Vec<u8>>,
    pub(super) why: Why,
    pub(super) generation: Generation,
    /// An expired entry within its fail-safe window (the whole entry as
    /// read), to serve if the body fails.
    pub(super) fallback: Option<Vec<u8>>,
}

/// One cached call (see the module docs).
pub(super) struct Lookup<'a, T, R, U> {
    pub(super) cache: &'a Cache,
    pub(super) state: &'a Arc<NsState>,
    pub(super) key: String,
    pub(super) schema: u64,
    pub(super) policy: Policy,
    pub(super) unless: &'a U,
    pub(super) shape: Shape<T, R>,
    /// A call with tags: their keys and the tokens its entries carry.
    pub(super) tags: Option<Box<Tags>>,
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
            force: false,
            fail_safe: o.fail_safe.unwrap_or(Duration::ZERO),
            timeout: o.timeout,
            compress_above: Compress::threshold(o.compress, inner.compress_above),
            verify: o.verify.unwrap_or(0.0),
        }
    }

    /// The schema of this call's entries (see `schema.rs`); for a
    /// non-generic call site, computed once and kept in its slot.
    pub(super) fn schema_of<T: DeserializeOwned>(
        &self,
        o: &CallOptions,
        target: &Target<'_>,
        state: &NsState,
    ) -> u64 {
        let compute = || {
            let s = schema::schema(&schema::Parts {
                fingerprint: schema::fingerprint::<T>(),
                codec: self.inner.codec,
                version: o.version,
                generics: target.generics,
                tags: o.tags,
            });
            // What a put of this namespace must store (see `put.rs`).
            state.reader_schema.store(s, Relaxed);
            s
        };
        match target.slot {
            Some(slot) => slot.schema(self.inner.id, target.generics, compute),
            None => compute(),
        }
    }

    /// The core of every cached call: the namespace, the key and whether an
    /// invalidation is pending decide if the cache is used at all; then
    /// [`Lookup::run`].
    pub(crate) async fn run_key<T, R, U, Fut, Rf>(
        &self,
        target: Target<'_>,
        opts: &CallOptions,
        unless: &U,
        fut: Fut,
        refresh: Rf,
        shape: Shape<T, R>,
    ) -> R
    where
        T: Serialize + DeserializeOwned,
        U: Filter<T>,
        Fut: Future<Output = R>,
        Rf: Refresh<T, R, U>,
    {
        let Some(state) = self.state_at(target.ns, target.slot, target.site) else {
            return bypass(None, fut).await;
        };
        let mode = control::mode();
        if mode == Mode::Bypass {
            // Asked for by the caller: not an outage, not in `bypasses`.
            bump(&state.counters.skipped);
            if let Some(t) = track::current() {
                // Read from the source with no token to depend on.
                t.unknown();
            }
            let out = fut.await;
            stats::report(Status::Bypass);
            return out;
        }
        let schema = self.schema_of::<T>(opts, &target, &state);
        let key = match target.key {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(namespace = target.ns, error = %e, "cache-aside: the call bypasses the cache");
                bump(&state.counters.errors);
                return bypass(Some(&state), fut).await;
            }
        };
        if self.invalidation_pending(&state, &key) {
            // An invalidation of this entry has not landed yet: do not trust the cache.
            return bypass(Some(&state), fut).await;
        }
        let tags = match target.tags {
            Ok(keys) if keys.is_empty() => None,
            Ok(keys) => Some(Box::new(Tags::new(keys))),
            Err(e) => {
                tracing::warn!(namespace = target.ns, error = %e, "cache-aside: a tag value cannot be encoded; the call bypasses the cache");
                bump(&state.counters.errors);
                return bypass(Some(&state), fut).await;
            }
        };
        let mut policy = self.policy(opts);
        policy.force = mode == Mode::Refresh;
        let lookup = Lookup {
            cache: self,
            state: state.as_arc(),
            key,
            schema,
            policy,
            unless,
            shape,
            tags,
        };
        if self.inner.trace_calls {
            // Boxed: the hit path's future stays as it is without it.
            return Box::pin(lookup.traced(fut, refresh)).await;
        }
        lookup.run(fut, refresh).await
    }
}

impl<T, R, U> Lookup<'_, T, R, U>
where
    T: Serialize + DeserializeOwned,
    U: Filter<T>,
{
    /// [`run`](Self::run) in a span of its own, for
    /// [`CacheBuilder::trace_calls`](crate::CacheBuilder::trace_calls):
    /// every call, hits included, with the status it ended with.
    async fn traced<Fut: Future<Output = R>, Rf: Refresh<T, R, U>>(
        self,
        fut: Fut,
        refresh: Rf,
    ) -> R {
        let span = tracing::info_span!(
            target: "cache_aside",
            "cache_aside.call",
            cache_aside.namespace = %self.state.name,
            cache_aside.key = %self.key,
            cache_aside.status = tracing::field::Empty,
        );
        let run = self.run(fut, refresh).instrument(span.clone());
        let (out, status) = stats::observed(run).await;
        if let Some(s) = status {
            span.record("cache_aside.status", s.name());
        }
        out
    }

    /// The hit path: the local tier, then one read; everything else is boxed
    /// out of this future (it is moved on every call).
    async fn run<Fut: Future<Output = R>, Rf: Refresh<T, R, U>>(
        mut self,
        fut: Fut,
        refresh: Rf,
    ) -> R {
        let inner = &*self.cache.inner;
        let state = self.state;
        if self.policy.force {
            // A refresh serves nothing from this process's tier either.
            inner.hub.local_key_invalidated(&state.coherence, &self.key);
        } else if !self.policy.local.is_zero()
            && track::current().is_none()
            && let Some(flushes) = inner.hub.local_epoch()
        {
            // The ticket is taken before the local lookup and the Redis read.
            let ticket = Ticket {
                seq: state.coherence.local_seq.load(SeqCst),
                epoch: state.coherence.local_epoch.load(SeqCst),
                flushes,
            };
            if let Some(hit) = inner.hub.local.get(&self.key, ticket.epoch, flushes)
                && hit.schema == self.schema
                && let Some(value) = self.local_value(&hit)
            {
                bump(&state.counters.hits);
                bump(&state.counters.local_hits);
                stats::report(Status::Hit);
                return (self.shape.from_value)(value);
            }
            self.policy.ticket = Some(ticket);
        }
        if !inner.breaker(state).allow() {
            return bypass(Some(state), fut).await;
        }
        let Ok(snap) = self.read().await else {
            return bypass(Some(state), fut).await;
        };
        let (entry, meta) = match snap.read {
            Read::Live { entry, meta } if !self.policy.force => (entry, meta),
            Read::Live { entry, .. } => {
                // A refresh scope: recompute, and store over exactly the
                // entry read (as a refresh of a stale entry does), so a
                // failed body keeps it and an invalidation meanwhile wins.
                bump(&state.counters.forced_refreshes);
                let to = StoreAs::over(&entry, &snap.generation);
                return Box::pin(self.compute(fut, to, None, None, None)).await;
            }
            Read::Miss { expect, why } => {
                let seen = Seen {
                    expect,
                    why,
                    generation: snap.generation,
                    fallback: None,
                };
                return Box::pin(self.miss(fut, seen)).await;
            }
        };
        let payload = entry.get(self.payload_at(&entry)..).unwrap_or_default();
        let identity = entry.get(..IDENTITY_LEN).unwrap_or_default();
        let now = entry::unix_ms();
        let policy = &self.policy;
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
        // `refresh` is started at most once: for a refresh, or the probe.
        let mut refresh = Some(refresh);
        if fresh || in_stale_window {
            // A live entry was read under a real generation.
            let generation = snap.generation.current().copied();
            if (early || in_stale_window)
                && let Some(generation) = generation
                && self.win_refresh().await
                && let Some(refresh) = refresh.take()
            {
                bump(if early {
                    &state.counters.early_refreshes
                } else {
                    &state.counters.refreshes
                });
                if refresh.background() {
                    refresh.start(self.job(identity, generation), self.unless);
                } else {
                    // Inline: this caller recomputes. Boxed, like the
                    // misses: the hit path's future stays small.
                    let to = StoreAs {
                        expect: Expect::Prefix(identity),
                        generation,
                    };
                    return Box::pin(self.compute(fut, Some(to), None, None, None)).await;
                }
            }
            let decoded = payload::unpack(payload, meta.compressed(), inner.max_value_bytes)
                .and_then(|plain| Ok((inner.codec.decode::<T>(&plain)?, plain)));
            match decoded {
                Ok((value, plain)) => {
                    if fresh && entry::deps_len(&entry) == 0 {
                        // (The local tier holds the codec's bytes, never
                        // compressed ones.)
                        self.local_insert(&plain, meta.expires_at_ms);
                    }
                    if fresh
                        && policy.verify > 0.0
                        && let (Some(generation), Some(r)) = (generation, refresh.take())
                        && r.background()
                        && entry::unit_random() < policy.verify
                    {
                        // The consistency probe: this hit, recomputed in a
                        // task of its own and compared.
                        let mut job = self.job(identity, generation);
                        job.verify = Some(plain.into_owned());
                        r.start(job, self.unless);
                    }
                    if !fresh && let Some(t) = track::current() {
                        // A stale value: what it was computed from may
                        // have changed.
                        t.unknown();
                    }
                    let (counter, status) = if fresh {
                        (&state.counters.hits, Status::Hit)
                    } else {
                        (&state.counters.stale_served, Status::Stale)
                    };
                    bump(counter);
                    stats::report(status);
                    return (self.shape.from_value)(value);
                }
                Err(e) => {
                    tracing::debug!(key = %self.key, error = %e, "cache-aside: stored value does not decode; recomputing");
                    bump(&state.counters.decode_errors);
                }
            }
        }
        let fail_safe_ends = meta
            .expires_at_ms
            .saturating_add(policy.stale.as_millis() as u64)
            .saturating_add(policy.fail_safe.as_millis() as u64);
        let keep = !policy.fail_safe.is_zero() && now <= fail_safe_ends;
        let seen = Seen {
            expect: Some(identity.to_vec()),
            why: Why::Dead,
            generation: snap.generation,
            fallback: keep.then(|| entry.clone()),
        };
        Box::pin(self.miss(fut, seen)).await
    }

    /// What a refresh in the background needs of this call, owned.
    fn job(&self, identity: &[u8], generation: GenValue) -> Job<T, R> {
        Job {
            cache: self.cache.clone(),
            state: Arc::clone(self.state),
            key: self.key.clone(),
            schema: self.schema,
            policy: self.policy.clone(),
            shape: self.shape,
            identity: identity.to_vec(),
            generation,
            tags: self.tags.clone(),
            verify: None,
        }
    }

    /// The read itself: the entry and the generation, with the tags'
    /// tokens and `bucket`'s when there are.
    /// (With the current values of the entry's deps, in a namespace whose
    /// entries have them.)
    async fn fetch(&self, extra: &[&str]) -> Result<ReadTokens, BackendError> {
        let inner = &*self.cache.inner;
        let state = self.state;
        match &self.tags {
            None if extra.is_empty() && state.has_deps.load(Relaxed) => inner
                .backend
                .fetch_deps(&self.key, &state.generation_key)
                .await
                .map(|(f, values)| (f, Vec::new(), Some(values))),
            None if extra.is_empty() => inner
                .backend
                .fetch(&self.key, &state.generation_key, &state.coherence.views)
                .await
                .map(|f| (f, Vec::new(), None)),
            Some(tags) => tags
                .read(inner, &self.key, &state.generation_key, extra)
                .await
                .map(|(f, t)| (f, t, None)),
            None => Tags::new(Vec::new())
                .read(inner, &self.key, &state.generation_key, extra)
                .await
                .map(|(f, t)| (f, t, None)),
        }
    }

    /// Where the codec payload starts in `entry`: after the header, the
    /// deps and, with tags, their tokens.
    pub(super) fn payload_at(&self, entry: &[u8]) -> usize {
        HEADER_LEN + entry::deps_len(entry) + self.tags.as_ref().map_or(0, |t| t.section_len())
    }

    /// An entry with deps: are they all current? `Ok(Some(deps))` if so
    /// (empty for an entry without), `Ok(None)` if one changed. One more
    /// round trip for such an entry.
    async fn check_deps(
        &self,
        inner: &super::Inner,
        entry: Option<&[u8]>,
        values: Option<Vec<Option<Vec<u8>>>>,
    ) -> Result<Option<Vec<(String, Vec<u8>)>>, BackendError> {
        let Some(list) = entry.and_then(entry::deps) else {
            return Ok(Some(Vec::new()));
        };
        if list.is_empty() {
            return Ok(Some(Vec::new()));
        }
        // From now on this namespace's reads fetch the deps' values too.
        self.state.has_deps.store(true, Relaxed);
        if inner.queued.load(Relaxed) > 0 {
            // What it was built from may be what a queued invalidation has
            // not reached yet (later reads bypass: `invalidation_pending`).
            return Ok(None);
        }
        let now = match values {
            Some(v) if v.len() == list.len() => v,
            _ => {
                let keys: Vec<&[u8]> = list.iter().map(|(k, _)| *k).collect();
                inner.backend.values(&keys).await?
            }
        };
        let current = list
            .iter()
            .zip(&now)
            .all(|((_, v), n)| n.as_deref() == Some(*v));
        Ok(current.then(|| {
            list.iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
                .collect()
        }))
    }

    /// Inside another cached body: records what this read depends on (the
    /// namespace's generation, the key's bucket, the entry's tags and
    /// deps), or that it cannot be known.
    fn record(
        &self,
        t: &Track,
        fetched: &Fetched,
        keys: &KeyTokens,
        tokens: &[Option<entry::Token>],
        deps: Option<&[(String, Vec<u8>)]>,
    ) {
        let state = self.state;
        match fetched.generation {
            Generation::Current(g) => t.record_by(&state.generation_key, &g.bytes(), &self.key),
            // Made by this call's claim, which records it (`compute`).
            Generation::Absent => t.pending(&state.generation_key, &self.key),
            Generation::Fenced(_) => t.unknown(),
        }
        match tokens {
            [Some(bucket), Some(any)] => {
                t.record_bucket(&keys.bucket, bucket, any);
            }
            _ => t.unknown(),
        }
        if let Some(tags) = &self.tags {
            match tags.seen() {
                Some(seen) => {
                    for (k, token) in seen {
                        t.record(&k, &token);
                    }
                }
                // Under a scope's fence: not known.
                None => t.unknown(),
            }
        }
        for (k, v) in deps.unwrap_or_default() {
            t.record(k, v);
        }
    }

    /// One read of the entry (and, without a view, the generation; with
    /// tags, their tokens too; inside another cached body, the key's
    /// bucket token too, and what it read is recorded there).
    pub(super) async fn read(&self) -> Result<Snapshot, BackendError> {
        let inner = &*self.cache.inner;
        let state = self.state;
        let tracking = track::current();
        let key_tokens = tracking.as_ref().map(|_| KeyTokens::of(state, &self.key));
        let extra: Vec<&str> = match &key_tokens {
            Some(k) => vec![&k.bucket, &k.any],
            None => Vec::new(),
        };
        let mut fetched = self.fetch(&extra).await;
        if let Ok((_, got, _)) = &fetched
            && got.iter().any(Option::is_none)
        {
            // A key token is missing: made, then the entry read again, so
            // that what is read is no older than the tokens.
            let keys: Vec<String> = extra.iter().map(|k| (*k).to_owned()).collect();
            let fresh: Vec<entry::Token> = keys.iter().map(|_| entry::token()).collect();
            fetched = match inner
                .backend
                .tokens(&keys, &fresh, inner.generation_ttl)
                .await
            {
                Ok(_) => self.fetch(&extra).await,
                Err(e) => Err(e),
            };
        }
        let fetched = match fetched {
            Ok((fetched, tokens, values)) => match self
                .check_deps(inner, fetched.entry.as_deref(), values)
                .await
            {
                Ok(deps) => {
                    if let (Some(t), Some(k)) = (&tracking, &key_tokens) {
                        self.record(t, &fetched, k, &tokens, deps.as_deref());
                    }
                    Ok((fetched, deps))
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match fetched {
            Ok((fetched, deps)) => {
                inner.breaker(state).success();
                let generation = fetched.generation;
                let mut found = entry::classify(
                    fetched.entry.as_deref(),
                    generation.current().map(|g| &g.token[..]),
                    self.schema,
                );
                let tags_ok = match (&self.tags, fetched.entry.as_deref()) {
                    (Some(tags), Some(e)) => tags.carried_by(e),
                    _ => true,
                };
                if let (Found::Live { .. }, Some(e)) = (&found, fetched.entry.as_deref())
                    && !(tags_ok && deps.is_some())
                {
                    // A tag, or something the entry was computed from, was
                    // invalidated since the entry was stored.
                    found = Found::Miss {
                        expect: e.get(..IDENTITY_LEN),
                        why: Why::Dead,
                    };
                }
                let read = match found {
                    Found::Live { meta, .. } => Read::Live {
                        entry: fetched.entry.unwrap_or_default(),
                        meta,
                    },
                    Found::Miss { expect, why } => {
                        match why {
                            Why::Corrupt => {
                                tracing::debug!(
                                    key = self.key,
                                    "cache-aside: foreign bytes under a cache key; recomputing"
                                );
                                bump(&state.counters.decode_errors);
                            }
                            Why::OtherSchema => bump(&state.counters.schema_mismatches),
                            _ => {}
                        }
                        Read::Miss {
                            expect: expect.map(<[u8]>::to_vec),
                            why,
                        }
                    }
                };
                Ok(Snapshot { read, generation })
            }
            Err(e) => {
                inner.note_failure(state, &e);
                bump(&state.counters.errors);
                Err(e)
            }
        }
    }

    /// Puts a value read or stored by this call into the local tier, unless
    /// an invalidation of the namespace (or a lost subscription) came in
    /// since the call's ticket; checked again after the insert, so a racing
    /// invalidation either sees the entry or is seen.
    pub(super) fn local_insert(&self, payload: &[u8], expires_at_ms: u64) {
        let Some(ticket) = self.policy.ticket else {
            return;
        };
        let hub = &self.cache.inner.hub;
        let seq = &self.state.coherence.local_seq;
        let unchanged = || seq.load(SeqCst) == ticket.seq && hub.flushes() == ticket.flushes;
        let left = Duration::from_millis(expires_at_ms.saturating_sub(entry::unix_ms()));
        let ttl = self.policy.local.min(left);
        if ttl.is_zero() || !unchanged() {
            return;
        }
        if hub.local.insert(
            &self.key,
            payload,
            self.schema,
            ticket,
            ttl,
            self.shape.keep.is_some(),
        ) && !unchanged()
        {
            hub.local.remove(&self.key);
        }
    }

    /// The value of a local-tier entry: the decoded one it keeps (cloned),
    /// else its bytes decoded (and, for a kept type, kept for next time).
    fn local_value(&self, hit: &LocalEntry) -> Option<T> {
        let keep = self.shape.keep;
        if let Some(k) = keep
            && let Some(value) = hit.decoded.get().and_then(|v| (k.take)(&**v))
        {
            return Some(value);
        }
        let value = self.cache.inner.codec.decode::<T>(&hit.payload).ok()?;
        if let Some(k) = keep {
            let _ = hit.decoded.set((k.keep)(&value));
        }
        Some(value)
    }

    /// Tries to become the one refresher of this entry for a window.
    async fn win_refresh(&self) -> bool {
        let inner = &*self.cache.inner;
        let key = format!("{}|r", self.key);
        match inner
            .backend
            .try_lock(&key, &entry::token(), self.policy.lease)
            .await
        {
            Ok(won) => won,
            Err(e) => {
                inner.note_failure(self.state, &e);
                false
            }
        }
    }
}

/// How a call refreshes its entry: inline ([`Inline`]) or in the
/// background ([`Background`]). Not public API.
#[doc(hidden)]
pub trait Refresh<T, R, U>: Send + Sized {
    /// Does this call refresh in the background?
    fn background(&self) -> bool;
    /// Starts the refresh in a task of its own.
    fn start(self, job: Job<T, R>, unless: &U);
}

/// What a refresh in the background needs of the call that started it.
#[doc(hidden)]
pub struct Job<T, R> {
    pub(super) cache: Cache,
    pub(super) state: Arc<NsState>,
    pub(super) key: String,
    pub(super) schema: u64,
    pub(super) policy: Policy,
    pub(super) shape: Shape<T, R>,
    /// The identity of the entry it refreshes, and the generation it was read with.
    pub(super) identity: Vec<u8>,
    pub(super) generation: GenValue,
    pub(super) tags: Option<Box<Tags>>,
    /// A consistency probe's job (`verify`): the codec's bytes of the value
    /// served, to compare the recomputed value with; nothing is stored.
    pub(super) verify: Option<Vec<u8>>,
}

/// Where a computed value may be stored: over what, under which generation.
#[derive(Clone, Copy)]
pub(super) struct StoreAs<'a> {
    pub(super) expect: Expect<'a>,
    pub(super) generation: GenValue,
}

impl<'a> StoreAs<'a> {
    /// Over exactly the entry read (its identity), under the generation it
    /// was read with: what a refresh replaces. `None` without a generation.
    pub(super) fn over(entry: &'a [u8], generation: &Generation) -> Option<Self> {
        generation.current().map(|&generation| StoreAs {
            expect: Expect::Prefix(entry.get(..IDENTITY_LEN).unwrap_or_default()),
            generation,
        })
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
                schema: 0,
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
