//! The bytes stored under an entry key and a namespace's generation key,
//! and the random tokens that make invalidation safe (see ARCHITECTURE.md,
//! "Invariants", and the README, "Consistency").
//!
//! ```text
//! entry       0xCA | generation (16 hex) | nonce (16 hex) | expires_at_ms (u64 BE) | compute_ms (u32 BE) | schema (u64 BE) | codec payload
//! with deps   0xCE | the same header | deps length (u16 BE) | deps | codec payload
//! tombstone   0xCB | nonce (16 hex)
//! lease       0xCC | nonce (16 hex) | expires_at_ms (16 decimal digits, server clock) | 'w' (others wait) or 'n' (they do not)
//! key fence   0xCD | token (16 hex) | holders: "<holder, 16 hex>:<expires_at_ms, server clock>;" each
//! generation  a token (16 hex), or a namespace fence: 'F' | token (16 hex) | holders
//! ```
//!
//! * The generation is the namespace generation the reader saw *before* it
//!   computed the value, and a real token: a reader that finds none makes
//!   one before computing (the claim script), and a store never makes one.
//!   A namespace invalidation replaces the token, so every older entry reads
//!   as a miss and a reader that started before it cannot store.
//! * A key invalidation overwrites the entry (or a reader's lease) with a
//!   tombstone carrying a fresh nonce.
//! * A reader never stores over what it merely found. It first *claims* the
//!   key: replaces what it read (compared by identity) with its lease, and
//!   stores only over exactly that lease. So a store can never expect an
//!   empty key, and a key that goes empty behind the reader's back (an
//!   evicted tombstone or lease, a flush) refuses the store. Other readers,
//!   in any process, see a lease (`'w'`) and wait for its owner; leases and
//!   fences are judged live or expired by the server's clock, in the scripts.
//! * A fence is what a write inside a transaction scope leaves: while one
//!   of its holders is live, nobody stores under it; once all have expired
//!   (their scopes died), the next claim replaces it.
//! * `schema` identifies the value's type (its serde shape, the codec, the
//!   `version`; see `schema.rs`): an entry of another schema is a miss.
//!   Its top bit is no part of the identity (schemas are 63 bits): set, the
//!   codec payload is LZ4-compressed (`codec::compress`). Builds from
//!   before the flag compute other schemas, so they read such entries as
//!   misses, never as bytes of their codec.
//! * An entry with deps (`0xCE`, see `cache/track.rs`) was computed from
//!   other cached entries: `deps` lists, as `key length (u8) | key | value
//!   length (u8) | value` each, the tokens (inner generations, key buckets,
//!   tags) as they were when the body read them; the entry is live only
//!   while each key still holds its value. (With tags, their section comes
//!   after the deps.)
//! * `expires_at_ms` is the end of the TTL, stamped by the store on its
//!   clock (Redis's, in `store.lua`), so a writer whose clock is off does
//!   not move it; readers compare it with their own clock to tell fresh
//!   from stale. Redis's `PX` is the TTL plus the stale-while-revalidate
//!   window. `compute_ms`
//!   feeds early refresh (XFetch). Neither decides consistency.

#[cfg(test)]
mod proptests;
mod token;

pub(crate) use token::{TOKEN_LEN, Token, token, token_bytes, token_value, unit_random};

pub(crate) const ENTRY_MAGIC: u8 = 0xCA;
pub(crate) const TOMBSTONE_MAGIC: u8 = 0xCB;
pub(crate) const LEASE_MAGIC: u8 = 0xCC;
pub(crate) const FENCE_MAGIC: u8 = 0xCD;
pub(crate) const DEPS_MAGIC: u8 = 0xCE;
/// magic, nonce, 16 expiry digits, kind.
pub(crate) const LEASE_LEN: usize = 1 + TOKEN_LEN + 16 + 1;
/// magic + generation + nonce: what identifies one stored entry.
pub(crate) const IDENTITY_LEN: usize = 1 + 2 * TOKEN_LEN;
pub(crate) const HEADER_LEN: usize = IDENTITY_LEN + 8 + 4 + 8;
/// The schema field's flag: the payload is compressed (see the module docs).
pub(crate) const COMPRESSED: u64 = 1 << 63;
/// Where the schema field starts in an entry's tail (after the nonce, the
/// expiry and the compute time).
const TAIL_SCHEMA_AT: usize = TOKEN_LEN + 8 + 4;

/// What a read found under an entry key, judged against the namespace
/// generation and the caller's schema.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'a> {
    /// A live entry: the codec payload and the metadata.
    Live { payload: &'a [u8], meta: Meta },
    /// Nothing usable. `expect` is what the key held, as a claim compares
    /// it (`None` for an empty key, else its identity prefix).
    Miss { expect: Option<&'a [u8]>, why: Why },
}

/// Why a read is a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The key is empty.
    Empty,
    /// An entry of another generation (invalidated).
    Dead,
    /// A live entry of another schema (another build, another type).
    OtherSchema,
    /// A key invalidation's tombstone.
    Tombstone,
    /// Another caller's lease: it computes, and waits are welcome.
    Leased,
    /// Another caller computes without a lease others wait for.
    Marked,
    /// A transaction scope's fence.
    Fenced,
    /// Foreign bytes, a truncated entry, or a format this build does not know.
    Corrupt,
}

/// Metadata stored with every entry.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) struct Meta {
    pub expires_at_ms: u64,
    pub compute_ms: u32,
    pub schema: u64,
}

impl Meta {
    /// The payload is LZ4-compressed.
    pub(crate) fn compressed(&self) -> bool {
        self.schema & COMPRESSED != 0
    }
}

fn be<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(b) = bytes.get(at..at + N) {
        out.copy_from_slice(b);
    }
    out
}

/// Classifies the stored bytes. `generation` is the namespace's current
/// generation token (`None`: absent, or a fence), `schema` the caller's.
pub(crate) fn classify<'a>(
    stored: Option<&'a [u8]>,
    generation: Option<&[u8]>,
    schema: u64,
) -> Found<'a> {
    let Some(bytes) = stored else {
        return Found::Miss {
            expect: None,
            why: Why::Empty,
        };
    };
    let expect = Some(&bytes[..bytes.len().min(IDENTITY_LEN)]);
    let miss = |why| Found::Miss { expect, why };
    match bytes.first() {
        Some(&DEPS_MAGIC) if deps(bytes).is_none() => miss(Why::Corrupt),
        Some(&ENTRY_MAGIC | &DEPS_MAGIC) if bytes.len() >= HEADER_LEN => {
            if generation.is_none_or(|g| g != &bytes[1..1 + TOKEN_LEN]) {
                return miss(Why::Dead);
            }
            let meta = Meta {
                expires_at_ms: u64::from_be_bytes(be(bytes, IDENTITY_LEN)),
                compute_ms: u32::from_be_bytes(be(bytes, IDENTITY_LEN + 8)),
                schema: u64::from_be_bytes(be(bytes, IDENTITY_LEN + 12)),
            };
            if meta.schema & !COMPRESSED != schema {
                return miss(Why::OtherSchema);
            }
            Found::Live {
                payload: &bytes[HEADER_LEN..],
                meta,
            }
        }
        Some(&TOMBSTONE_MAGIC) if bytes.len() == 1 + TOKEN_LEN => miss(Why::Tombstone),
        // A lease or a fence is known by its magic and nonce (the rest is
        // written by the store's clock and its holders).
        Some(&LEASE_MAGIC) if bytes.len() == LEASE_LEN => Found::Miss {
            expect: Some(&bytes[..1 + TOKEN_LEN]),
            why: if bytes.last() == Some(&b'w') {
                Why::Leased
            } else {
                Why::Marked
            },
        },
        Some(&FENCE_MAGIC) if bytes.len() > TOKEN_LEN => Found::Miss {
            expect: Some(&bytes[..1 + TOKEN_LEN]),
            why: Why::Fenced,
        },
        _ => miss(Why::Corrupt),
    }
}

/// The generation an entry was stored under (`None`: not an entry).
pub(crate) fn generation_of(bytes: &[u8]) -> Option<&[u8]> {
    match bytes.first() {
        Some(&ENTRY_MAGIC | &DEPS_MAGIC) if bytes.len() >= HEADER_LEN => {
            Some(&bytes[1..1 + TOKEN_LEN])
        }
        _ => None,
    }
}

/// The bytes an entry's deps take after its header (0 without deps).
pub(crate) fn deps_len(bytes: &[u8]) -> usize {
    match (bytes.first(), bytes.get(HEADER_LEN..HEADER_LEN + 2)) {
        (Some(&DEPS_MAGIC), Some(n)) => 2 + usize::from(u16::from_be_bytes([n[0], n[1]])),
        _ => 0,
    }
}

/// An entry's deps: (token key, value) each; `None` for an entry with
/// deps that do not parse, empty for an entry without.
pub(crate) fn deps(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.first() != Some(&DEPS_MAGIC) {
        return Some(Vec::new());
    }
    let len = deps_len(bytes);
    let mut rest = bytes.get(HEADER_LEN + 2..HEADER_LEN + len)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (k, r) = rest.split_first()?;
        let (key, r) = r.split_at_checked(usize::from(*k))?;
        let (v, r) = r.split_first()?;
        let (value, r) = r.split_at_checked(usize::from(*v))?;
        out.push((key, value));
        rest = r;
    }
    Some(out)
}

/// Appends the deps section (its length, then each dep) to a tail; `false`
/// when a key or value is longer than 255 bytes or all are longer than
/// 65535 (nothing appended: such an entry is not stored).
pub(crate) fn write_deps(tail: &mut Vec<u8>, deps: &[(String, Vec<u8>)]) -> bool {
    let total: usize = deps.iter().map(|(k, v)| 2 + k.len() + v.len()).sum();
    let (Ok(total), true) = (
        u16::try_from(total),
        deps.iter().all(|(k, v)| k.len() <= 255 && v.len() <= 255),
    ) else {
        return false;
    };
    tail.extend_from_slice(&total.to_be_bytes());
    for (k, v) in deps {
        tail.push(k.len() as u8);
        tail.extend_from_slice(k.as_bytes());
        tail.push(v.len() as u8);
        tail.extend_from_slice(v);
    }
    true
}

/// The part of an entry after magic and generation, as a store sends it:
/// the store script prepends `0xCA` and the generation it checked, and
/// turns `meta.expires_at_ms`, sent as the TTL in ms, into the entry's end
/// on the store's clock ([`stamp_expiry`]).
pub(crate) fn entry_tail(meta: Meta, payload_len: usize) -> Vec<u8> {
    let mut tail = Vec::with_capacity(TOKEN_LEN + 20 + payload_len);
    tail.extend_from_slice(&token());
    tail.extend_from_slice(&meta.expires_at_ms.to_be_bytes());
    tail.extend_from_slice(&meta.compute_ms.to_be_bytes());
    tail.extend_from_slice(&meta.schema.to_be_bytes());
    tail
}

/// A tail as the store writes it: its TTL (in the expiry field) made the
/// entry's end, `now_ms + TTL` (what `store.lua` does on the server's clock).
pub(crate) fn stamp_expiry(tail: &[u8], now_ms: u64) -> Vec<u8> {
    let mut t = tail.to_vec();
    if let Some(field) = t.get_mut(TOKEN_LEN..TOKEN_LEN + 8) {
        let ttl = u64::from_be_bytes(field.try_into().unwrap_or([0; 8]));
        field.copy_from_slice(&now_ms.saturating_add(ttl).to_be_bytes());
    }
    t
}

/// Marks a tail's payload as compressed (the flag in its schema field).
pub(crate) fn mark_compressed(tail: &mut [u8]) {
    if let Some(field) = tail.get_mut(TAIL_SCHEMA_AT..TAIL_SCHEMA_AT + 8) {
        let schema = u64::from_be_bytes(field.try_into().unwrap_or([0; 8])) | COMPRESSED;
        field.copy_from_slice(&schema.to_be_bytes());
    }
}

/// Whether a stored entry's payload is compressed.
pub(crate) fn is_compressed(entry: &[u8]) -> bool {
    u64::from_be_bytes(be(entry, IDENTITY_LEN + 12)) & COMPRESSED != 0
}

/// A lease as the claim script writes it (the memory backend builds its
/// own the same way): `expires_at_ms` on the clock of the store.
pub(crate) fn lease(nonce: &Token, expires_at_ms: u64, others_wait: bool) -> Vec<u8> {
    let mut t = Vec::with_capacity(LEASE_LEN);
    t.push(LEASE_MAGIC);
    t.extend_from_slice(nonce);
    t.extend_from_slice(format!("{:016}", expires_at_ms % 10u64.pow(16)).as_bytes());
    t.push(if others_wait { b'w' } else { b'n' });
    t
}

/// The end of a lease on the clock of the store (0 if the bytes are not a lease).
pub(crate) fn lease_expiry(bytes: &[u8]) -> u64 {
    bytes
        .get(1 + TOKEN_LEN..1 + TOKEN_LEN + 16)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// A fresh tombstone for a key invalidation.
pub(crate) fn tombstone() -> Vec<u8> {
    let mut t = Vec::with_capacity(1 + TOKEN_LEN);
    t.push(TOMBSTONE_MAGIC);
    t.extend_from_slice(&token());
    t
}

/// A full entry, as the store script would write it (used by the memory backend and tests).
pub(crate) fn assemble(generation: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(1 + generation.len() + tail.len());
    e.push(ENTRY_MAGIC);
    e.extend_from_slice(generation);
    e.extend_from_slice(tail);
    e
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            expires_at_ms: 1_700_000_000_000,
            compute_ms: 41,
            schema: 7,
        }
    }

    #[test]
    fn deps_round_trip_and_bad_deps_are_corrupt() {
        let g = token();
        let mut tail = entry_tail(meta(), 3);
        let list = vec![
            ("p:{airport}:#gen".to_owned(), token().to_vec()),
            ("p:{airport}:#k:7".to_owned(), b"x".to_vec()),
        ];
        assert!(write_deps(&mut tail, &list));
        tail.extend_from_slice(b"abc");
        let mut e = assemble(&g, &tail);
        e[0] = DEPS_MAGIC;
        let parsed = deps(&e).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1], (&b"p:{airport}:#k:7"[..], &b"x"[..]));
        assert_eq!(&e[HEADER_LEN + deps_len(&e)..], b"abc");
        assert!(matches!(
            classify(Some(&e), Some(&g), 7),
            Found::Live { .. }
        ));
        // A length that runs past the entry: corrupt, not a panic.
        let mut bad = e.clone();
        bad[HEADER_LEN] = 0xff;
        assert!(matches!(
            classify(Some(&bad), Some(&g), 7),
            Found::Miss {
                why: Why::Corrupt,
                ..
            }
        ));
        assert!(!write_deps(&mut Vec::new(), &[("k".repeat(300), vec![])]));
    }

    #[test]
    fn live_entry_round_trips() {
        let g = token();
        let mut tail = entry_tail(meta(), 3);
        tail.extend_from_slice(b"abc");
        let e = assemble(&g, &tail);
        assert_eq!(
            classify(Some(&e), Some(&g), 7),
            Found::Live {
                payload: b"abc",
                meta: meta()
            }
        );
        assert_eq!(
            classify(Some(&e), Some(&g), 8),
            Found::Miss {
                expect: Some(&e[..IDENTITY_LEN]),
                why: Why::OtherSchema
            }
        );
    }

    #[test]
    fn the_compressed_flag_is_no_part_of_the_schema() {
        let g = token();
        let mut tail = entry_tail(meta(), 3);
        mark_compressed(&mut tail);
        tail.extend_from_slice(b"abc");
        let e = assemble(&g, &tail);
        assert!(is_compressed(&e));
        match classify(Some(&e), Some(&g), 7) {
            Found::Live { meta, payload } => {
                assert!(meta.compressed());
                assert_eq!((meta.schema & !COMPRESSED, payload), (7, &b"abc"[..]));
            }
            f => panic!("{f:?}"),
        }
        let plain = assemble(&g, &entry_tail(meta(), 0));
        assert!(!is_compressed(&plain));
    }

    #[test]
    fn the_store_stamps_the_end_on_its_clock() {
        let sent = entry_tail(
            Meta {
                expires_at_ms: 300_000,
                ..meta()
            },
            0,
        );
        let stored = stamp_expiry(&sent, 1_700_000_000_000);
        let e = assemble(&token(), &stored);
        let g = e[1..1 + TOKEN_LEN].to_vec();
        match classify(Some(&e), Some(&g), 7) {
            Found::Live { meta, .. } => assert_eq!(meta.expires_at_ms, 1_700_000_300_000),
            f => panic!("{f:?}"),
        }
        assert_eq!(stored.len(), sent.len());
        assert_eq!(stored[..TOKEN_LEN], sent[..TOKEN_LEN]);
        assert_eq!(stored[TOKEN_LEN + 8..], sent[TOKEN_LEN + 8..]);
    }

    #[test]
    fn older_generation_or_missing_generation_is_a_miss() {
        let g = token();
        let e = assemble(&g, &entry_tail(meta(), 0));
        let other = token();
        for current in [Some(&other[..]), None] {
            assert_eq!(
                classify(Some(&e), current, 7),
                Found::Miss {
                    expect: Some(&e[..IDENTITY_LEN]),
                    why: Why::Dead
                }
            );
        }
    }

    #[test]
    fn tombstones_leases_fences_foreign_and_truncated_bytes_are_misses() {
        let miss = |bytes: &[u8]| match classify(Some(bytes), Some(&token()), 7) {
            Found::Miss { why, expect } => {
                let identity = match why {
                    Why::Leased | Why::Marked | Why::Fenced => 1 + TOKEN_LEN,
                    _ => bytes.len().min(IDENTITY_LEN),
                };
                assert_eq!(expect.map(<[u8]>::len), Some(identity));
                why
            }
            f => panic!("{f:?}"),
        };
        assert_eq!(miss(&tombstone()), Why::Tombstone);
        let l = lease(&token(), unix_ms() + 10_000, true);
        assert_eq!((l.len(), lease_expiry(&l) > unix_ms()), (LEASE_LEN, true));
        assert_eq!(miss(&l), Why::Leased);
        assert_eq!(miss(&lease(&token(), 0, false)), Why::Marked);
        let mut fence = vec![FENCE_MAGIC];
        fence.extend_from_slice(&token());
        fence.extend_from_slice(b"0123456789abcdef:1700000000000;");
        assert_eq!(miss(&fence), Why::Fenced);
        for foreign in [&b""[..], b"hello", b"\xCA short", &[0xCA; 40]] {
            assert_eq!(miss(foreign), Why::Corrupt, "{foreign:?}");
        }
        assert_eq!(
            classify(None, None, 7),
            Found::Miss {
                expect: None,
                why: Why::Empty
            }
        );
    }
}
