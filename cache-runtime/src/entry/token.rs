//! Random tokens: the namespace generations, the nonces of entries and
//! tombstones, the leases. A token is a 64-bit random value written as 16
//! lowercase hex digits (what Redis stores and the channel's notices carry),
//! and read back as a number on every hit.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Length of a token in bytes (hex digits).
pub(crate) const TOKEN_LEN: usize = 16;

/// A 64-bit random token as 16 lowercase hex digits.
pub(crate) type Token = [u8; TOKEN_LEN];

/// A fresh random token.
pub(crate) fn token() -> Token {
    token_bytes(random_u64())
}

/// A random 64-bit number: a per-process seed from the OS, advanced with
/// splitmix64 (unique within a process, unpredictable across processes).
fn random_u64() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: fall back to time and pid, still unique per process.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            bytes = (nanos ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
        }
        u64::from_le_bytes(bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform random number in (0, 1].
pub(crate) fn unit_random() -> f64 {
    ((random_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// A namespace generation token as a number (0: unknown). Tokens are 16
/// lowercase hex digits; anything else (a foreign value) is not learnable.
pub(crate) fn token_value(bytes: &[u8]) -> u64 {
    if bytes.len() != TOKEN_LEN {
        return 0;
    }
    // Eight digits at a time: this runs on every hit.
    match (hex8(bytes.get(..8)), hex8(bytes.get(8..))) {
        (Some(hi), Some(lo)) => (u64::from(hi) << 32) | u64::from(lo),
        _ => 0,
    }
}

/// Eight lowercase hex digits as a number, `None` if any byte is not one.
/// All bytes are looked at at once: with every byte below 0x80, adding a
/// constant below 0x80 sets a byte's top bit exactly when the byte is at
/// least 0x80 minus the constant, and never carries into the next byte.
fn hex8(digits: Option<&[u8]>) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOP: u64 = ONES * 0x80;
    let x = u64::from_be_bytes(digits?.try_into().ok()?);
    if x & TOP != 0 {
        return None;
    }
    let at_least = |c: u64| x + ONES * (0x80 - c);
    let digit = at_least(0x30) & !at_least(0x3a);
    let letter = at_least(0x61) & !at_least(0x67);
    if (digit | letter) & TOP != TOP {
        return None;
    }
    // Each byte's value ('a' is 0x61: low nibble 1, plus 9), then the
    // nibbles packed, first digit highest.
    let v = (x & (ONES * 0x0f)) + ((letter & TOP) >> 7) * 9;
    let v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    let v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    let v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
    u32::try_from(v).ok()
}

/// The 16 lowercase hex digits of a token value (the inverse of
/// [`token_value`]).
pub(crate) fn token_bytes(v: u64) -> Token {
    let mut t = [0u8; TOKEN_LEN];
    for (i, b) in t.iter_mut().enumerate() {
        let d = ((v >> (60 - 4 * i)) & 0xf) as u8;
        *b = if d < 10 { b'0' + d } else { b'a' + d - 10 };
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hex_and_distinct() {
        let a = token();
        let b = token();
        assert_ne!(a, b);
        assert!(
            a.iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let many: std::collections::HashSet<_> = (0..10_000).map(|_| token()).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn token_values() {
        assert_eq!(token_value(b"000000000000000a"), 10);
        assert_eq!(token_value(b"ffffffffffffffff"), u64::MAX);
        assert_eq!(token_value(b"000000000000000A"), 0);
        assert_eq!(token_value(b"short"), 0);
        assert_eq!(token_value(b"0123456789abcdef"), 0x0123_4567_89ab_cdef);
        // Any byte that is not a lowercase hex digit, at any position.
        let valid = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        for pos in 0..TOKEN_LEN {
            for c in 0..=255u8 {
                let mut t = *b"0123456789abcdef";
                t[pos] = c;
                let expect = if valid(c) {
                    u64::from_str_radix(std::str::from_utf8(&t).unwrap(), 16).unwrap()
                } else {
                    0
                };
                assert_eq!(token_value(&t), expect, "byte {c:#x} at {pos}");
            }
        }
        for _ in 0..1000 {
            let t = token();
            assert_eq!(token_bytes(token_value(&t)), t);
        }
    }

    #[test]
    fn unit_random_is_in_range() {
        for _ in 0..1000 {
            let r = unit_random();
            assert!(r > 0.0 && r <= 1.0, "{r}");
        }
    }
}
