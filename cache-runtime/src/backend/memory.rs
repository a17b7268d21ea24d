//! In-process backend: a mutex-protected map with lazy expiry, running the
//! same protocol as the Redis scripts (`redis/*.lua`), with this process's
//! clock as the store's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::{
    Backend, Buckets, Change, Claim, Claimed, Expect, Fetched, FetchedTagged, GenValue, Generation,
    KeyChanged, Notice, Result, Store,
};
use crate::entry::{self, FENCE_MAGIC, LEASE_LEN, LEASE_MAGIC, TOKEN_LEN, Token};

/// The first byte of a fenced tag token (as of a fenced generation).
const TAG_FENCE: u8 = b'F';

struct Value {
    bytes: Vec<u8>,
    expires: Option<Instant>,
}

impl Value {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

#[derive(Default)]
struct Map {
    values: HashMap<String, Value>,
    writes_since_sweep: usize,
}

impl Map {
    fn get(&self, key: &str, now: Instant) -> Option<&[u8]> {
        self.values
            .get(key)
            .filter(|v| v.live(now))
            .map(|v| v.bytes.as_slice())
    }

    /// Sets a value whose life is at least what is left of the old one's
    /// (the Redis scripts' `max(PX, PTTL)`).
    fn replace(&mut self, key: &str, bytes: Vec<u8>, ttl: Duration, now: Instant) {
        let left = self
            .values
            .get(key)
            .filter(|v| v.live(now))
            .and_then(|v| v.expires)
            .map_or(Duration::ZERO, |e| e.saturating_duration_since(now));
        self.set(key, bytes, Some(ttl.max(left)), now);
    }

    /// The value under a key given as bytes (an entry's dep), owned.
    fn get_bytes(&self, key: &[u8], now: Instant) -> Option<Vec<u8>> {
        let key = std::str::from_utf8(key).ok()?;
        self.get(key, now).map(<[u8]>::to_vec)
    }

    /// `SET key token XX KEEPTTL`: a token that exists gets a new value.
    fn bump(&mut self, key: &str, token: &[u8], now: Instant) {
        if let Some(v) = self.values.get_mut(key).filter(|v| v.live(now)) {
            v.bytes = token.to_vec();
        }
    }

    fn set(&mut self, key: &str, bytes: Vec<u8>, ttl: Option<Duration>, now: Instant) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep > 1024 && self.writes_since_sweep > self.values.len() / 2 {
            self.values.retain(|_, v| v.live(now));
            self.writes_since_sweep = 0;
        }
        let expires = ttl.and_then(|t| now.checked_add(t));
        self.values.insert(key.to_owned(), Value { bytes, expires });
    }
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct MemoryBackend {
    map: Mutex<Map>,
}

impl MemoryBackend {
    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        crate::sync::lock(&self.map)
    }
}

/// A fence's holders (see `lib.lua`): "<holder>:<expires_at_ms>;" each,
/// after the 17-byte head.
fn holders(v: &[u8]) -> BTreeMap<String, u64> {
    let text = v
        .get(1 + TOKEN_LEN..)
        .and_then(|t| std::str::from_utf8(t).ok());
    text.into_iter()
        .flat_map(|t| t.split(';'))
        .filter_map(|h| {
            let (id, exp) = h.split_once(':')?;
            Some((id.to_owned(), exp.parse().ok()?))
        })
        .collect()
}

fn live(hs: &BTreeMap<String, u64>, now: u64) -> bool {
    hs.values().any(|&e| e > now)
}

fn fence(head: &[u8], hs: &BTreeMap<String, u64>, now: u64) -> Vec<u8> {
    let mut v = head.to_vec();
    for (id, e) in hs.iter().filter(|&(_, &e)| e > now) {
        v.extend_from_slice(format!("{id}:{e};").as_bytes());
    }
    v
}

/// A change of a fence or invalidation (`generation.lua`, `tombstone.lua`)
/// applied to `cur`: the value to write, or `None` to leave it. `magic`
/// tells fences of this kind; `invalidated` is what an invalidation leaves.
fn change(
    cur: Option<&[u8]>,
    magic: u8,
    change: Change<'_>,
    invalidated: Vec<u8>,
) -> Option<Vec<u8>> {
    let now = entry::unix_ms();
    let fenced = cur.filter(|c| c.first() == Some(&magic));
    let mut hs = fenced.map(holders).unwrap_or_default();
    let up = live(&hs, now);
    // A new token whenever a holder comes or goes (see `generation.lua`).
    let renew = matches!(change, Change::Renew { .. });
    let head = match fenced {
        Some(c) if up && renew => c[..1 + TOKEN_LEN].to_vec(),
        _ => {
            let mut h = vec![magic];
            h.extend_from_slice(&entry::token());
            h
        }
    };
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match change {
        // Under a live key fence, a new head: a put inside a scope that
        // holds it then stores nothing when the scope ends.
        Change::Invalidate if up && magic == FENCE_MAGIC => Some(fence(&head, &hs, now)),
        Change::Invalidate if up => None,
        Change::Invalidate => Some(invalidated),
        // A renewal that lands after its holder ended fences nothing.
        Change::Renew { holder, .. } if !hs.contains_key(&*String::from_utf8_lossy(holder)) => None,
        Change::Fence { holder, ttl } | Change::Renew { holder, ttl } => {
            let id = String::from_utf8_lossy(holder).into_owned();
            hs.insert(id, now.saturating_add(ms(ttl)));
            Some(fence(&head, &hs, now))
        }
        Change::End { holder } | Change::EndPut { holder, .. } => {
            hs.remove(&*String::from_utf8_lossy(holder));
            Some(if live(&hs, now) {
                fence(&head, &hs, now)
            } else {
                invalidated
            })
        }
    }
}

impl Backend for MemoryBackend {
    async fn fetch(
        &self,
        entry_key: &str,
        generation_key: &str,
        _views: &[AtomicU64],
    ) -> Result<Fetched> {
        let map = self.lock();
        let now = Instant::now();
        Ok(Fetched {
            entry: map.get(entry_key, now).map(<[u8]>::to_vec),
            generation: Generation::parse(map.get(generation_key, now), None),
        })
    }

    async fn claim(&self, c: Claim<'_>) -> Result<Claimed> {
        let mut map = self.lock();
        let now = Instant::now();
        let now_ms = entry::unix_ms();
        let generation = match Generation::parse(map.get(c.generation_key, now), None) {
            Generation::Current(g) => g,
            Generation::Fenced(_)
                if map
                    .get(c.generation_key, now)
                    .is_some_and(|g| live(&holders(g), now_ms)) =>
            {
                return Ok(Claimed::Fenced);
            }
            _ => {
                let g = GenValue {
                    token: c.fresh_generation,
                    life: None,
                };
                map.set(c.generation_key, g.bytes(), Some(c.generation_ttl), now);
                g
            }
        };
        let cur = map.get(c.entry_key, now);
        let mut take = false;
        match cur {
            // A writer takes the key whatever it holds, but a live fence.
            Some(f) if c.writer.is_some() && f.first() == Some(&FENCE_MAGIC) => {
                if live(&holders(f), now_ms) {
                    return Ok(Claimed::Fenced);
                }
                take = true;
            }
            _ if c.writer.is_some() => take = true,
            Some(l) if l.first() == Some(&LEASE_MAGIC) && l.len() == LEASE_LEN => {
                let live_lease = entry::lease_expiry(l) > now_ms;
                if live_lease && l.last() == Some(&b'w') {
                    return Ok(Claimed::Held);
                }
                take = !live_lease;
            }
            Some(f) if f.first() == Some(&FENCE_MAGIC) => {
                if live(&holders(f), now_ms) {
                    return Ok(Claimed::Fenced);
                }
                take = true;
            }
            _ => {}
        }
        if !take && !c.expect.matches(cur) {
            return Ok(Claimed::Changed);
        }
        let lease_ms = u64::try_from(c.lease.as_millis()).unwrap_or(u64::MAX);
        let replaced_read = matches!(c.expect, Expect::Prefix(_)) && c.expect.matches(cur);
        let lease = entry::lease(&c.nonce, now_ms.saturating_add(lease_ms), c.others_wait);
        map.replace(c.entry_key, lease.clone(), c.hold, now);
        if let (Some(_), Some(b)) = (c.writer, c.buckets) {
            map.bump(b.key, &c.nonce, now);
            map.bump(b.any, &c.nonce, now);
        }
        Ok(Claimed::Taken {
            generation,
            lease,
            replaced_read,
        })
    }

    async fn store(&self, s: Store<'_>) -> Result<bool> {
        let mut map = self.lock();
        let now = Instant::now();
        if map.get(s.generation_key, now) != Some(&s.generation.bytes()[..]) {
            return Ok(false);
        }
        let cur = map.get(s.entry_key, now);
        if cur.is_none() || !s.expect.matches(cur) {
            return Ok(false);
        }
        let bytes = if s.restore {
            s.tail.to_vec()
        } else {
            let mut e = entry::assemble(
                &s.generation.token,
                &entry::stamp_expiry(s.tail, entry::unix_ms()),
            );
            if s.deps {
                e[0] = entry::DEPS_MAGIC;
            }
            e
        };
        map.replace(s.entry_key, bytes, s.ttl, now);
        if let Some((b, token)) = s.bump {
            map.bump(b.key, &token, now);
            map.bump(b.any, &token, now);
        }
        Ok(true)
    }

    async fn release(
        &self,
        entry_key: &str,
        lease: &[u8],
        tombstone: &[u8],
        ttl: Duration,
    ) -> Result<()> {
        let mut map = self.lock();
        let now = Instant::now();
        if map.get(entry_key, now) == Some(lease) {
            map.replace(entry_key, tombstone.to_vec(), ttl, now);
        }
        Ok(())
    }

    async fn try_lock(&self, key: &str, token: &[u8], ttl: Duration) -> Result<bool> {
        let mut map = self.lock();
        let now = Instant::now();
        if map.get(key, now).is_some() {
            return Ok(false);
        }
        map.set(key, token.to_vec(), Some(ttl), now);
        Ok(true)
    }

    /// In process there is no channel: the cache applies every
    /// invalidation to its local tier itself.
    async fn change_namespace(
        &self,
        generation_key: &str,
        c: Change<'_>,
        ttl: Duration,
        _notice: Notice<'_>,
    ) -> Result<()> {
        let mut map = self.lock();
        let now = Instant::now();
        let cur = map.get(generation_key, now);
        if let Some(v) = change(cur, b'F', c, entry::token().to_vec()) {
            map.set(generation_key, v, Some(ttl), now);
        }
        Ok(())
    }

    async fn change_key(
        &self,
        entry_key: &str,
        generation_key: &str,
        buckets: Buckets<'_>,
        c: Change<'_>,
        ttl: Duration,
        _notice: Notice<'_>,
    ) -> Result<KeyChanged> {
        let mut map = self.lock();
        let now = Instant::now();
        if !matches!(c, Change::Renew { .. }) {
            let t = entry::token();
            map.bump(buckets.key, &t, now);
            map.bump(buckets.any, &t, now);
        }
        let generation = map.get(generation_key, now).map(<[u8]>::to_vec);
        let cur = map.get(entry_key, now);
        let mut out = KeyChanged {
            generation: generation.clone(),
            ..KeyChanged::default()
        };
        let v = match c {
            // `tombstone.lua`'s 'p': the value, if nothing else happened to
            // the key since the put's own fence.
            Change::EndPut { holder, put } => {
                let same = cur.is_some_and(|v| {
                    v.first() == Some(&FENCE_MAGIC) && v.get(..1 + TOKEN_LEN) == Some(put.head)
                });
                let mut hs = cur
                    .filter(|v| v.first() == Some(&FENCE_MAGIC))
                    .map(holders)
                    .unwrap_or_default();
                hs.remove(&*String::from_utf8_lossy(holder));
                let g = generation.as_deref();
                let now_ms = entry::unix_ms();
                if !live(&hs, now_ms)
                    && same
                    && g == Some(put.generation)
                    && let Generation::Current(gen_value) = Generation::parse(g, None)
                {
                    out.stored = true;
                    let tail = entry::stamp_expiry(put.tail, now_ms);
                    map.replace(
                        entry_key,
                        entry::assemble(&gen_value.token, &tail),
                        put.ttl.max(ttl),
                        now,
                    );
                    return Ok(out);
                }
                change(cur, FENCE_MAGIC, Change::End { holder }, entry::tombstone())
            }
            c => change(cur, FENCE_MAGIC, c, entry::tombstone()),
        };
        if let Some(v) = v {
            if v.first() == Some(&FENCE_MAGIC) {
                out.head = v.get(..1 + TOKEN_LEN).map(<[u8]>::to_vec);
            }
            map.replace(entry_key, v, ttl, now);
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn fetch_deps(
        &self,
        entry_key: &str,
        generation_key: &str,
    ) -> Result<(Fetched, Vec<Option<Vec<u8>>>)> {
        let map = self.lock();
        let now = Instant::now();
        let entry = map.get(entry_key, now).map(<[u8]>::to_vec);
        let values = entry
            .as_deref()
            .and_then(entry::deps)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, _)| map.get_bytes(k, now))
            .collect();
        Ok((
            Fetched {
                entry,
                generation: Generation::parse(map.get(generation_key, now), None),
            },
            values,
        ))
    }

    async fn values(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let map = self.lock();
        let now = Instant::now();
        Ok(keys.iter().map(|k| map.get_bytes(k, now)).collect())
    }

    async fn fetch_many(
        &self,
        entry_keys: &[String],
        generation_key: &str,
    ) -> Result<(Vec<Option<Vec<u8>>>, Generation)> {
        let map = self.lock();
        let now = Instant::now();
        let entries = entry_keys
            .iter()
            .map(|k| map.get(k, now).map(<[u8]>::to_vec))
            .collect();
        Ok((
            entries,
            Generation::parse(map.get(generation_key, now), None),
        ))
    }

    async fn fetch_tagged(
        &self,
        entry_key: &str,
        generation_key: &str,
        tag_keys: &[String],
    ) -> Result<FetchedTagged> {
        let map = self.lock();
        let now = Instant::now();
        Ok(FetchedTagged {
            fetched: Fetched {
                entry: map.get(entry_key, now).map(<[u8]>::to_vec),
                generation: Generation::parse(map.get(generation_key, now), None),
            },
            tokens: tag_keys
                .iter()
                .map(|k| map.get(k, now).and_then(|t| Token::try_from(t).ok()))
                .collect(),
        })
    }

    /// `tokens.lua`.
    async fn tokens(
        &self,
        keys: &[String],
        fresh: &[Token],
        ttl: Duration,
    ) -> Result<Vec<Option<Token>>> {
        let mut map = self.lock();
        let now = Instant::now();
        let mut out = Vec::with_capacity(keys.len());
        for (k, f) in keys.iter().zip(fresh) {
            let cur = map.get(k, now);
            if cur.is_some_and(|v| {
                v.first() == Some(&TAG_FENCE) && live(&holders(v), entry::unix_ms())
            }) {
                out.push(None);
                continue;
            }
            match cur.and_then(|t| Token::try_from(t).ok()) {
                Some(t) => out.push(Some(t)),
                None => {
                    map.set(k, f.to_vec(), Some(ttl), now);
                    out.push(Some(*f));
                }
            }
        }
        Ok(out)
    }

    /// `tag.lua`: the cache applies the invalidation to its local tier itself.
    async fn change_tag(
        &self,
        tag_key: &str,
        c: Change<'_>,
        ttl: Duration,
        _notice: Notice<'_>,
    ) -> Result<()> {
        let mut map = self.lock();
        let now = Instant::now();
        let cur = map.get(tag_key, now);
        // A missing token stays missing on an invalidation.
        if cur.is_none() && matches!(c, Change::Invalidate) {
            return Ok(());
        }
        if let Some(v) = change(cur, TAG_FENCE, c, entry::token().to_vec()) {
            map.set(tag_key, v, Some(ttl), now);
        }
        Ok(())
    }
}
