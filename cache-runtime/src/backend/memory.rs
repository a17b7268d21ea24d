//! In-process backend: a mutex-protected map with lazy expiry, running the
//! same compare-and-set protocol as the Redis store script.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::{Acquire, Backend, Expect, Fetched, Notice, Result, Store};
use crate::entry::{self, TOKEN_LEN, Token};

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
            generation: map
                .get(generation_key, now)
                .and_then(|g| Token::try_from(g).ok()),
        })
    }

    async fn store(&self, s: Store<'_>) -> Result<bool> {
        let mut map = self.lock();
        let now = Instant::now();
        let generation = match map
            .get(s.generation_key, now)
            .filter(|g| g.len() == TOKEN_LEN)
        {
            Some(g) if Some(g) == s.seen_generation => g.to_vec(),
            Some(_) => return Ok(false),
            None if s.seen_generation.is_some() => return Ok(false),
            None => {
                let g = s.fresh_generation.to_vec();
                map.set(s.generation_key, g.clone(), None, now);
                g
            }
        };
        if !s.expect.matches(map.get(s.entry_key, now)) {
            return Ok(false);
        }
        map.replace(
            s.entry_key,
            entry::assemble(&generation, s.tail),
            s.ttl,
            now,
        );
        Ok(true)
    }

    /// In process there is no channel: the cache applies every
    /// invalidation to its local tier itself.
    async fn set_generation(
        &self,
        generation_key: &str,
        token: &Token,
        _notice: Notice<'_>,
    ) -> Result<()> {
        let mut map = self.lock();
        map.set(generation_key, token.to_vec(), None, Instant::now());
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn acquire(
        &self,
        entry_key: &str,
        expect: Expect<'_>,
        lease: &[u8],
        ttl: Duration,
    ) -> Result<Acquire> {
        let mut map = self.lock();
        let now = Instant::now();
        if expect.matches(map.get(entry_key, now)) {
            map.replace(entry_key, lease.to_vec(), ttl, now);
            return Ok(Acquire::Acquired);
        }
        Ok(Acquire::Changed)
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

    async fn put_tombstone(
        &self,
        entry_key: &str,
        tombstone: &[u8],
        ttl: Duration,
        _notice: Notice<'_>,
    ) -> Result<()> {
        let mut map = self.lock();
        map.replace(entry_key, tombstone.to_vec(), ttl, Instant::now());
        Ok(())
    }
}
