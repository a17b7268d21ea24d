//! Tags: entries that depend on more than their namespace. A `#[cached]`
//! fn with `tags(user)` stores with each entry the token of every tag
//! value it has (`{prefix}:{ns}:#t:user:<value>`, in the entry's slot), read
//! before the body ran; a read serves the entry only while each of those
//! tokens is still the one Redis holds. A tag invalidation gives the
//! token a fresh value: O(1), no scan, and every entry of that tag value,
//! in every process, reads as a miss.
//!
//! ```text
//! read (MGET entry, generation, tag tokens)          1 round trip
//!   a token missing: made (tokens.lua) ............... +1 (first read of a tag value)
//!   live entry, its tokens the ones read .............. hit
//!   live entry, another token ......................... miss (invalidated)
//! store: the entry carries the tokens read before the body ran
//! invalidate_tag: SET token XX, published as `t <ns> <key>` (tag.lua)
//!   inside a transaction scope: a fence instead; no token, nothing stored
//! ```
//!
//! Entry layout with tags (the schema includes the tag names, so entries
//! with and without tags never read each other): the header, then
//! `n (u8) | n tokens (16 bytes each, in the order of the fn's tags)`, then
//! the codec payload.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::invalidate::Invalidation;
use super::registry::NsState;
use super::scope::Scope;
use super::{Cache, Inner};
use crate::backend::{Backend, BackendError, Change, Fetched, Notice};
use crate::entry::{self, HEADER_LEN, TOKEN_LEN, Token};
use crate::key::{self, KeyError, layout};
use crate::stats::bump;
use crate::sync::lock;

/// A call's tags: the token keys, and the tokens its last read saw (which
/// the entries it stores carry).
pub(crate) struct Tags {
    keys: Vec<String>,
    seen: Mutex<Vec<Token>>,
}

impl Clone for Tags {
    fn clone(&self) -> Self {
        Tags {
            keys: self.keys.clone(),
            seen: Mutex::new(lock(&self.seen).clone()),
        }
    }
}

impl Tags {
    pub(super) fn new(keys: Vec<String>) -> Tags {
        Tags {
            keys,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The bytes the tokens take in an entry.
    pub(super) fn section_len(&self) -> usize {
        1 + TOKEN_LEN * self.keys.len()
    }

    /// Reads the entry, the generation and the tokens in one round trip
    /// (and the tokens under `extra`, a tracked read's key tokens); makes
    /// the missing tags' tokens (one more), before the body can run.
    pub(super) async fn read(
        &self,
        inner: &Inner,
        entry_key: &str,
        generation_key: &str,
        extra: &[&str],
    ) -> Result<(Fetched, Vec<Option<Token>>), BackendError> {
        let mut keys = self.keys.clone();
        keys.extend(extra.iter().map(|k| (*k).to_owned()));
        let mut got = inner
            .backend
            .fetch_tagged(entry_key, generation_key, &keys)
            .await?;
        let extra = got.tokens.split_off(self.keys.len().min(got.tokens.len()));
        if self.keys.is_empty() {
            return Ok((got.fetched, extra));
        }
        let tokens = match got.tokens.iter().copied().collect::<Option<Vec<Token>>>() {
            Some(all) => Some(all),
            None => {
                let fresh: Vec<Token> = self.keys.iter().map(|_| entry::token()).collect();
                let made = inner
                    .backend
                    .tokens(&self.keys, &fresh, inner.generation_ttl)
                    .await?;
                made.into_iter().collect()
            }
        };
        // A tag under a transaction scope's fence: no token, so nothing is
        // stored and no entry matches.
        *lock(&self.seen) = tokens.unwrap_or_default();
        Ok((got.fetched, extra))
    }

    /// The keys and the tokens the last read saw; `None` if a tag was
    /// fenced.
    pub(super) fn seen(&self) -> Option<Vec<(String, Token)>> {
        let seen = lock(&self.seen);
        (seen.len() == self.keys.len()).then(|| {
            self.keys
                .iter()
                .cloned()
                .zip(seen.iter().copied())
                .collect()
        })
    }

    /// Does `entry` carry exactly the tokens the last read saw? (Their
    /// section follows the header and the deps.)
    pub(super) fn carried_by(&self, entry: &[u8]) -> bool {
        let seen = lock(&self.seen);
        let at = HEADER_LEN + entry::deps_len(entry);
        let Some(section) = entry.get(at..at + self.section_len()) else {
            return false;
        };
        usize::from(section[0]) == self.keys.len()
            && seen.len() == self.keys.len()
            && section[1..]
                .chunks(TOKEN_LEN)
                .zip(seen.iter())
                .all(|(stored, read)| stored == read)
    }

    /// Appends the tokens to an entry's tail (after its header); `false`
    /// (nothing may be stored) when no read saw them.
    pub(super) fn write_section(&self, tail: &mut Vec<u8>) -> bool {
        let seen = lock(&self.seen);
        let known = seen.len() == self.keys.len();
        tail.push(u8::try_from(self.keys.len()).unwrap_or(u8::MAX));
        for i in 0..self.keys.len() {
            tail.extend_from_slice(seen.get(i).filter(|_| known).unwrap_or(&[b'-'; TOKEN_LEN]));
        }
        known
    }

    /// A flight key also names the tokens its leader read.
    pub(super) fn extend_flight_key(&self, k: &mut String) {
        let seen = lock(&self.seen);
        if seen.len() != self.keys.len() {
            // Fenced: nobody joins (the leader's value is not stored, and a
            // caller after the scope's end must not get it).
            k.push('\n');
            k.push_str(&String::from_utf8_lossy(&entry::token()));
        }
        for t in seen.iter() {
            k.push('\n');
            k.push_str(&String::from_utf8_lossy(t));
        }
    }
}

impl Cache {
    /// The token key of tag `name` = `value` in namespace `ns`.
    pub(crate) fn tag_key<V: Serialize + ?Sized>(
        &self,
        ns: &str,
        name: &str,
        value: &V,
    ) -> Result<String, KeyError> {
        let mut out = layout::tag_key_prefix(&self.inner.prefix, ns, name);
        key::write_args(&mut out, value)?;
        Ok(out)
    }

    /// Invalidates every entry of one tag value (its token key); inside a
    /// transaction scope, again when the scope ends. If Redis cannot be
    /// reached, the whole namespace's invalidation is queued instead.
    pub(crate) async fn invalidate_tag_key(
        &self,
        state: &Arc<NsState>,
        tag_key: String,
        scope: Option<&Scope>,
    ) -> Invalidation {
        let span = self.invalidation_span(state, "tag", Some(&tag_key));
        super::invalidate::traced(
            span,
            self.invalidate_tag_key_untraced(state, tag_key, scope),
        )
        .await
    }

    async fn invalidate_tag_key_untraced(
        &self,
        state: &Arc<NsState>,
        tag_key: String,
        scope: Option<&Scope>,
    ) -> Invalidation {
        let change = match scope {
            Some(s) => s.hold_tag(self, state, &tag_key),
            None => Change::Invalidate,
        };
        let done = self.change_tag(state, &tag_key, change).await;
        if done {
            bump(&state.counters.invalidations);
            return Invalidation::Done;
        }
        self.enqueue(state, None)
    }

    /// One change of a tag's token; true if it landed. This process's local
    /// tier drops the namespace either way.
    pub(super) async fn change_tag(
        &self,
        state: &NsState,
        tag_key: &str,
        change: Change<'_>,
    ) -> bool {
        let inner = &*self.inner;
        let notice = Notice {
            channel: inner.hub.channel(),
            namespace: &state.name,
        };
        let renewal = matches!(change, Change::Renew { .. });
        let done = inner.breaker(state).allow()
            && match inner
                .backend
                .change_tag(tag_key, change, inner.generation_ttl, notice)
                .await
            {
                Ok(()) => {
                    inner.breaker(state).success();
                    true
                }
                Err(e) => {
                    inner.note_failure(state, &e);
                    bump(&state.counters.errors);
                    false
                }
            };
        if !renewal {
            inner.hub.local_namespace_invalidated(&state.coherence);
        }
        done
    }

    /// [`Namespace::invalidate_tag`](super::Namespace::invalidate_tag) and
    /// `#[invalidates(tag(..))]`: a tag value that cannot be encoded, or a
    /// name that is no tag name, invalidates the whole namespace.
    pub(crate) async fn invalidate_tag_value<V: Serialize + ?Sized>(
        &self,
        ns: &str,
        name: &str,
        value: &V,
        scope: Option<&Scope>,
    ) -> Invalidation {
        let Some(state) = self.state(ns) else {
            return Invalidation::Done;
        };
        let tag_key = match layout::validate_name("tag", name) {
            Ok(()) => self.tag_key(ns, name, value),
            Err(e) => {
                tracing::warn!(namespace = ns, error = %e, "cache-aside: invalidating the whole namespace");
                return self.invalidate_namespace(&state, scope).await;
            }
        };
        match tag_key {
            Ok(k) => self.invalidate_tag_key(&state, k, scope).await,
            Err(e) => {
                tracing::warn!(namespace = ns, error = %e, "cache-aside: a tag value cannot be encoded; invalidating the whole namespace");
                self.invalidate_namespace(&state, scope).await
            }
        }
    }
}
