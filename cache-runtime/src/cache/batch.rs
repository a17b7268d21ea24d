//! Batch reads: many keys of one namespace, each its own entry (the entry a
//! single-key call of the same namespace reads and writes).
//!
//! 1. One `MGET` of every entry and the namespace's generation (a
//!    namespace's keys share one Cluster slot). A live, fresh entry of the
//!    call's schema without deps is a hit, decoded here.
//!    (Inside another cached body there is no such read: every key goes
//!    the single-key way, which records what the outer body depends on.)
//! 2. Every other key (missing, expired, stale, leased, tombstoned, with
//!    deps, or pending an invalidation) goes the single-key way
//!    ([`Cache::run_key`]), all of them at once: claims, leases, in-process
//!    coalescing, stores under the same compare-and-set. Their bodies are
//!    one batch body: each key whose call gets as far as computing joins a
//!    round, and a round runs the batch's body once with the keys that
//!    joined it. A round starts when every key's call has either finished
//!    or joined, or when nothing has moved for [`GATHER`] (a key waiting
//!    for another process's lease, or for a key of another batch in this
//!    process, must not hold up the others: waits across batches would
//!    otherwise wait for each other). A key that joins later gets a round of
//!    its own.
//!
//! So a batch is one round trip when everything hits, and with misses one
//! body call for all of them in the common case.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::Notify;

use super::lookup::{Shape, Target};
use super::options::{CallOptions, NoFilter};
use super::payload;
use super::refresh::Inline;
use super::track::{self, Track};
use super::{Cache, NsSlot, Site};
use crate::backend::Backend;
use crate::control::{self, Mode};
use crate::entry::{self, Found};
use crate::stats::{self, Status, bump};
use crate::sync::lock;

/// How long a round waits for keys that have not joined, once nothing moves.
const GATHER: Duration = Duration::from_millis(5);

/// Which namespace a batch reads, and from where (a `#[cached(batch)]` call
/// site's slot, or none for the by-hand API).
pub(crate) struct BatchTarget<'a> {
    pub(crate) ns: &'a str,
    pub(crate) slot: Option<&'static NsSlot>,
    pub(crate) site: Option<Site>,
    /// Each key is the single argument of a `#[cached]` fn's key, a
    /// 1-tuple (`(k,)`: a tuple key encodes as one element, as the
    /// single-key fn's does); else the key as the by-hand API takes it.
    pub(crate) one_arg: bool,
}

/// The keys' rounds: who has joined, and what each round returned.
struct Rounds<K, T, E> {
    state: Mutex<RoundsState<K, T, E>>,
    moved: Notify,
}

struct RoundsState<K, T, E> {
    /// Keys whose call has neither finished nor joined a round.
    undecided: usize,
    /// Keys waiting for the next round.
    joined: Vec<K>,
    /// What rounds computed, taken by each key's call, with what its
    /// round's body read (see `track.rs`).
    ready: HashMap<K, (Option<T>, Arc<Track>)>,
    /// The first error a round's body returned.
    error: Option<E>,
}

impl<K: Eq + Hash + Clone, T, E> Rounds<K, T, E> {
    fn new(keys: usize) -> Self {
        Rounds {
            state: Mutex::new(RoundsState {
                undecided: keys,
                joined: Vec::new(),
                ready: HashMap::new(),
                error: None,
            }),
            moved: Notify::new(),
        }
    }

    /// A key's call finished without computing (a hit, a coalesced call).
    fn decided(&self) {
        lock(&self.state).undecided -= 1;
        self.moved.notify_waiters();
    }

    /// A key's call computes: joins the next round and waits for its value.
    async fn join(&self, key: K) -> Option<T> {
        {
            let mut s = lock(&self.state);
            s.undecided -= 1;
            s.joined.push(key.clone());
        }
        self.moved.notify_waiters();
        loop {
            let notified = self.moved.notified();
            let got = lock(&self.state).ready.remove(&key);
            if let Some((v, read)) = got {
                // The key's entry depends on everything its round's body
                // read (more than its own part of it: safe).
                if let Some(t) = track::current() {
                    t.merge(&read);
                }
                return v;
            }
            notified.await;
        }
    }

    /// Runs rounds until every key's call has finished (`done`).
    async fn drive<F, Fut>(&self, compute: &F, done: &AtomicBool)
    where
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, T>, E>>,
    {
        loop {
            let notified = self.moved.notified();
            let keys = {
                let mut s = lock(&self.state);
                if s.undecided == 0 && !s.joined.is_empty() {
                    Some(std::mem::take(&mut s.joined))
                } else {
                    None
                }
            };
            let keys = match keys {
                Some(k) => k,
                None if done.load(Relaxed) => return,
                None => {
                    if tokio::time::timeout(GATHER, notified).await.is_ok() {
                        continue;
                    }
                    // Nothing moved: run the keys that joined.
                    let mut s = lock(&self.state);
                    if s.joined.is_empty() {
                        continue;
                    }
                    std::mem::take(&mut s.joined)
                }
            };
            // The round's body is tracked like a single-key body: the
            // entries it fills carry what it read.
            let read = Arc::new(Track::default());
            let out = track::scope(Arc::clone(&read), compute(keys.clone())).await;
            {
                let mut s = lock(&self.state);
                match out {
                    Ok(mut values) => {
                        for k in keys {
                            let v = values.remove(&k);
                            s.ready.insert(k, (v, Arc::clone(&read)));
                        }
                    }
                    Err(e) => {
                        for k in keys {
                            s.ready.insert(k, (None, Arc::clone(&read)));
                        }
                        s.error.get_or_insert(e);
                    }
                }
            }
            self.moved.notify_waiters();
        }
    }
}

impl Cache {
    /// A batch read (see the module docs): the value of each of `keys`
    /// (duplicates read once), computing the missing ones with one call of
    /// `compute` in the common case. A key `compute` leaves out is not
    /// stored and not in the result. An `Err` of `compute` is returned
    /// after every key's call has finished (nothing it was asked for is
    /// stored); the hits are dropped then.
    pub(crate) async fn run_many<K, T, E, F, Fut>(
        &self,
        target: BatchTarget<'_>,
        opts: &CallOptions,
        keys: &[K],
        compute: F,
    ) -> Result<HashMap<K, T>, E>
    where
        K: Serialize + Eq + Hash + Clone,
        T: Serialize + DeserializeOwned,
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, T>, E>>,
    {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        let unique: Vec<K> = keys.iter().filter(|k| seen.insert(*k)).cloned().collect();
        let Some(state) = self.state_at(target.ns, target.slot, target.site) else {
            stats::report(Status::NoCache);
            return compute(unique).await;
        };
        let entry_key = |k: &K| match (target.slot, target.one_arg) {
            (Some(s), true) => self.entry_key_at(s, target.ns, &(k,)),
            (Some(s), false) => self.entry_key_at(s, target.ns, k),
            (None, true) => self.entry_key(target.ns, &(k,)),
            (None, false) => self.entry_key(target.ns, k),
        };
        let single = |key| Target {
            ns: target.ns,
            slot: target.slot,
            site: target.site,
            key,
            generics: &[],
            tags: Ok(Vec::new()),
        };
        let schema = self.schema_of::<T>(opts, &single(Ok(String::new())), &state);
        let mut out = HashMap::with_capacity(unique.len());
        // 1. One read of every entry, where the cache is to be used as is.
        let mut rest: Vec<(K, Result<String, crate::key::KeyError>)> = unique
            .into_iter()
            .map(|k| {
                let e = entry_key(&k);
                (k, e)
            })
            .collect();
        // Inside another cached body, every key goes the single-key way,
        // which records what the body read (see `track.rs`).
        let readable = control::mode() == Mode::Normal
            && track::current().is_none()
            && self.inner.breaker(&state).allow();
        if readable {
            // The keys read, by their index in `rest`.
            let (at, keys): (Vec<usize>, Vec<String>) = rest
                .iter()
                .enumerate()
                .filter_map(|(i, (_, e))| Some((i, e.as_ref().ok()?)))
                .filter(|(_, e)| !self.invalidation_pending(&state, e))
                .map(|(i, e)| (i, e.clone()))
                .unzip();
            match self
                .inner
                .backend
                .fetch_many(&keys, &state.generation_key)
                .await
            {
                Ok((entries, generation)) => {
                    self.inner.breaker(&state).success();
                    let token = generation.current().map(|g| g.token);
                    let mut found: Vec<Option<Vec<u8>>> = vec![None; rest.len()];
                    for (i, e) in at.into_iter().zip(entries) {
                        found[i] = e;
                    }
                    let now = entry::unix_ms();
                    let mut found = found.into_iter();
                    rest.retain(|(k, _)| {
                        let Some(bytes) = found.next().flatten() else {
                            return true;
                        };
                        let bytes = &bytes[..];
                        let Found::Live { payload, meta } =
                            entry::classify(Some(bytes), token.as_ref().map(|t| &t[..]), schema)
                        else {
                            return true;
                        };
                        if now > meta.expires_at_ms || entry::deps_len(bytes) != 0 {
                            return true;
                        }
                        let max = self.inner.max_value_bytes;
                        let value = payload::unpack(payload, meta.compressed(), max)
                            .and_then(|plain| self.inner.codec.decode::<T>(&plain));
                        match value {
                            Ok(v) => {
                                bump(&state.counters.hits);
                                out.insert(k.clone(), v);
                                false
                            }
                            // Not decodable: the single-key way recomputes and counts it.
                            Err(_) => true,
                        }
                    });
                }
                Err(e) => {
                    self.inner.note_failure(&state, &e);
                    bump(&state.counters.errors);
                }
            }
        }
        if rest.is_empty() {
            stats::report(Status::Hit);
            return Ok(out);
        }
        // 2. The rest, each the single-key way, their bodies in rounds.
        let rounds = Rounds::<K, T, E>::new(rest.len());
        let done = AtomicBool::new(false);
        let calls = rest.into_iter().map(|(k, e)| {
            let (rounds, opts) = (&rounds, opts);
            async move {
                let joined = AtomicBool::new(false);
                let body = async {
                    joined.store(true, Relaxed);
                    rounds.join(k.clone()).await
                };
                let value: Option<T> = self
                    .run_key(single(e), opts, &NoFilter, body, Inline, Shape::option())
                    .await;
                if !joined.load(Relaxed) {
                    rounds.decided();
                }
                (k, value)
            }
        });
        let all = async {
            let got = futures_util::future::join_all(calls).await;
            done.store(true, Relaxed);
            rounds.moved.notify_waiters();
            got
        };
        let (got, ()) = futures_util::future::join(all, rounds.drive(&compute, &done)).await;
        if let Some(e) = lock(&rounds.state).error.take() {
            return Err(e);
        }
        out.extend(got.into_iter().filter_map(|(k, v)| Some((k, v?))));
        stats::report(Status::Miss);
        Ok(out)
    }
}
