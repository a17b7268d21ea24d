//! The bytes stored under an entry key, and the random tokens that make
//! invalidation safe (see the README, "Consistency").
//!
//! ```text
//! entry      0xCA | generation (16 hex) | nonce (16 hex) | expires_at_ms (u64 BE) | compute_ms (u32 BE) | codec payload
//! tombstone  0xCB | nonce (16 hex)
//! lease      0xCC | token (16 hex) | expires_at_ms (u64 BE)
//! ```
//!
//! A key's physical life never shortens: every write to an entry key keeps
//! at least the `PTTL` of what it replaces, and what a value means (a live
//! entry, an expired lease) is decided by the times inside it. So a key
//! that held a tombstone cannot become empty again (and look like the empty
//! key a slow reader saw before an invalidation) until the invalidation
//! guard has passed, by when such a reader's store is refused anyway.
//!
//! * The generation is the namespace generation the reader saw *before* it
//!   computed the value. A namespace invalidation replaces the generation
//!   token, so every older entry reads as a miss, and a slow reader that
//!   started before the invalidation can only store an entry that is already
//!   dead.
//! * A key invalidation overwrites the entry with a tombstone carrying a fresh
//!   nonce. A reader stores only if the key still holds exactly what it read
//!   (nothing, the same tombstone, or the same dead entry: compared by the
//!   33-byte identity prefix), so a reader that missed before the invalidation
//!   cannot put its old value back (compare-and-set in one Lua script).
//! * A reader that misses takes a lease: it replaces what it read with a
//!   lease value (compare-and-set, `PX` = the lease time). Other readers, in
//!   any process, see the lease and wait for the owner's entry instead of
//!   computing too. The owner stores only while the key still holds its
//!   lease (or nothing: the lease expired untouched); a key invalidation
//!   overwrites the lease with a tombstone, so the owner's store fails.
//! * `expires_at_ms` (wall clock) is the end of the TTL; Redis's `PX` is the
//!   TTL plus the stale-while-revalidate window. `compute_ms` feeds early
//!   refresh (XFetch).

#[cfg(test)]
mod proptests;
mod token;

pub(crate) use token::{TOKEN_LEN, Token, token, token_bytes, token_value, unit_random};

pub(crate) const ENTRY_MAGIC: u8 = 0xCA;
pub(crate) const TOMBSTONE_MAGIC: u8 = 0xCB;
pub(crate) const LEASE_MAGIC: u8 = 0xCC;
pub(crate) const LEASE_LEN: usize = 1 + TOKEN_LEN + 8;
/// magic + generation + nonce: what identifies one stored entry.
pub(crate) const IDENTITY_LEN: usize = 1 + 2 * TOKEN_LEN;
pub(crate) const HEADER_LEN: usize = IDENTITY_LEN + 8 + 4;

/// What a read found under an entry key, judged against the namespace generation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'a> {
    /// A live entry: the codec payload and the metadata.
    Live { payload: &'a [u8], meta: Meta },
    /// Nothing usable. `expect` is what the key must still hold for a store to
    /// go through: `None` for an empty key, else the identity prefix.
    /// `leased`: another reader holds a lease on it and is computing.
    Miss {
        expect: Option<&'a [u8]>,
        corrupt: bool,
        leased: bool,
    },
}

/// Metadata stored with every entry.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) struct Meta {
    pub expires_at_ms: u64,
    pub compute_ms: u32,
}

/// Classifies the stored bytes. `generation` is the namespace's current
/// generation token (None when the key does not exist).
pub(crate) fn classify<'a>(stored: Option<&'a [u8]>, generation: Option<&[u8]>) -> Found<'a> {
    let Some(bytes) = stored else {
        return Found::Miss {
            expect: None,
            corrupt: false,
            leased: false,
        };
    };
    let identity_len = bytes.len().min(IDENTITY_LEN);
    let expect = Some(&bytes[..identity_len]);
    match bytes.first() {
        Some(&ENTRY_MAGIC) if bytes.len() >= HEADER_LEN => {
            let live = generation.is_some_and(|g| g == &bytes[1..1 + TOKEN_LEN]);
            if !live {
                return Found::Miss {
                    expect,
                    corrupt: false,
                    leased: false,
                };
            }
            let mut expires = [0u8; 8];
            expires.copy_from_slice(&bytes[IDENTITY_LEN..IDENTITY_LEN + 8]);
            let mut compute = [0u8; 4];
            compute.copy_from_slice(&bytes[IDENTITY_LEN + 8..HEADER_LEN]);
            Found::Live {
                payload: &bytes[HEADER_LEN..],
                meta: Meta {
                    expires_at_ms: u64::from_be_bytes(expires),
                    compute_ms: u32::from_be_bytes(compute),
                },
            }
        }
        Some(&TOMBSTONE_MAGIC) if bytes.len() == 1 + TOKEN_LEN => Found::Miss {
            expect,
            corrupt: false,
            leased: false,
        },
        Some(&LEASE_MAGIC) if bytes.len() == LEASE_LEN => Found::Miss {
            expect: Some(bytes),
            corrupt: false,
            // Past its own expiry a lease is just a marker: take it over.
            leased: lease_expiry(bytes) > unix_ms(),
        },
        // Foreign bytes, a truncated entry, or a format we do not know.
        _ => Found::Miss {
            expect,
            corrupt: true,
            leased: false,
        },
    }
}

/// The generation an entry was stored under (`None`: not an entry).
pub(crate) fn generation_of(bytes: &[u8]) -> Option<&[u8]> {
    match bytes.first() {
        Some(&ENTRY_MAGIC) if bytes.len() >= HEADER_LEN => Some(&bytes[1..1 + TOKEN_LEN]),
        _ => None,
    }
}

/// The part of an entry after magic and generation: the store script
/// prepends `0xCA` and the generation it checked.
pub(crate) fn entry_tail(meta: Meta, payload_len: usize) -> Vec<u8> {
    let mut tail = Vec::with_capacity(TOKEN_LEN + 12 + payload_len);
    tail.extend_from_slice(&token());
    tail.extend_from_slice(&meta.expires_at_ms.to_be_bytes());
    tail.extend_from_slice(&meta.compute_ms.to_be_bytes());
    tail
}

/// A fresh lease value.
pub(crate) fn lease(ttl: std::time::Duration) -> Vec<u8> {
    let mut t = Vec::with_capacity(LEASE_LEN);
    t.push(LEASE_MAGIC);
    t.extend_from_slice(&token());
    let expires = unix_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    t.extend_from_slice(&expires.to_be_bytes());
    t
}

/// The wall-clock end of a lease (0 if the bytes are not a lease).
pub(crate) fn lease_expiry(bytes: &[u8]) -> u64 {
    bytes
        .get(1 + TOKEN_LEN..LEASE_LEN)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
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
        }
    }

    #[test]
    fn live_entry_round_trips() {
        let g = token();
        let mut tail = entry_tail(meta(), 3);
        tail.extend_from_slice(b"abc");
        let e = assemble(&g, &tail);
        assert_eq!(
            classify(Some(&e), Some(&g)),
            Found::Live {
                payload: b"abc",
                meta: meta()
            }
        );
    }

    #[test]
    fn older_generation_or_missing_generation_is_a_miss() {
        let g = token();
        let e = assemble(&g, &entry_tail(meta(), 0));
        let other = token();
        for current in [Some(&other[..]), None] {
            match classify(Some(&e), current) {
                Found::Miss {
                    expect, corrupt, ..
                } => {
                    assert_eq!(expect, Some(&e[..IDENTITY_LEN]));
                    assert!(!corrupt);
                }
                f => panic!("{f:?}"),
            }
        }
    }

    #[test]
    fn tombstones_foreign_and_truncated_bytes_are_misses() {
        let t = tombstone();
        assert_eq!(
            classify(Some(&t), None),
            Found::Miss {
                expect: Some(&t[..]),
                corrupt: false,
                leased: false
            }
        );
        let l = lease(std::time::Duration::from_secs(10));
        assert_eq!(
            classify(Some(&l), None),
            Found::Miss {
                expect: Some(&l[..]),
                corrupt: false,
                leased: true
            }
        );
        let expired = lease(std::time::Duration::ZERO);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(
            classify(Some(&expired), None),
            Found::Miss {
                expect: Some(&expired[..]),
                corrupt: false,
                leased: false
            }
        );
        for foreign in [&b""[..], b"hello", b"\xCA short", &[0xCA; 40]] {
            match classify(Some(foreign), Some(&token())) {
                Found::Miss {
                    corrupt, expect, ..
                } => {
                    assert!(corrupt || foreign.len() >= HEADER_LEN, "{foreign:?}");
                    assert_eq!(
                        expect.map(<[u8]>::len),
                        Some(foreign.len().min(IDENTITY_LEN))
                    );
                }
                f => panic!("{f:?}"),
            }
        }
        assert_eq!(
            classify(None, None),
            Found::Miss {
                expect: None,
                corrupt: false,
                leased: false
            }
        );
    }
}
