//! Property tests of the stored-value decoders ([`classify`] and every
//! codec): they never panic on random, truncated, mutated or length-bombed
//! bytes, and never report a live entry or a decoded value for bytes that
//! are not a valid entry of the expected generation.

use std::collections::BTreeMap;
use std::fmt::Debug;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde::{Deserialize, Serialize};

use super::{
    ENTRY_MAGIC, FENCE_MAGIC, Found, HEADER_LEN, IDENTITY_LEN, LEASE_LEN, LEASE_MAGIC, Meta,
    TOKEN_LEN, TOMBSTONE_MAGIC, Why, assemble, classify, entry_tail,
};
use crate::codec::CodecKind;
use crate::strategies::{config, int, nasty_char, nasty_string, tiny_string};

// ===========================================================================
// Stored values: entry::classify
// ===========================================================================

fn token() -> impl Strategy<Value = [u8; TOKEN_LEN]> {
    proptest::array::uniform16(select(b"0123456789abcdef".to_vec()))
}

/// The generation a reader saw: usually a token, sometimes missing or junk.
fn generation() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        4 => token().prop_map(|t| Some(t.to_vec())),
        1 => Just(None),
        1 => vec(any::<u8>(), 0..20).prop_map(Some),
    ]
}

/// Random bytes, often starting with one of the magic bytes and often of one
/// of the lengths that matter.
fn stored_bytes() -> impl Strategy<Value = Vec<u8>> {
    let magic = select(vec![
        ENTRY_MAGIC,
        TOMBSTONE_MAGIC,
        LEASE_MAGIC,
        FENCE_MAGIC,
        0,
        0xff,
        b'{',
    ]);
    let len = prop_oneof![
        select(vec![
            0,
            TOKEN_LEN,
            LEASE_LEN - 1,
            LEASE_LEN - 2,
            IDENTITY_LEN - 1,
            HEADER_LEN - 2,
            HEADER_LEN - 1,
            HEADER_LEN,
        ]),
        0..80usize,
    ];
    prop_oneof![
        vec(any::<u8>(), 0..80),
        (magic, len).prop_flat_map(|(m, n)| {
            vec(any::<u8>(), n).prop_map(move |mut rest| {
                rest.insert(0, m);
                rest
            })
        }),
    ]
}

fn is_live(found: &Found<'_>) -> bool {
    matches!(found, Found::Live { .. })
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

/// The schema the property tests read with.
const SCHEMA: u64 = 0x0123_4567_89ab_cdef;

/// The whole promise of `classify`: Live exactly for an entry of the current
/// generation and the caller's schema, with the payload and metadata read
/// from the right bytes; for anything else a miss that expects exactly the
/// identity (a lease's or a fence's: magic and nonce) and says why.
fn check_classify(bytes: &[u8], generation: Option<&[u8]>) -> Result<(), TestCaseError> {
    let valid_entry = (bytes.first() == Some(&ENTRY_MAGIC)
        || (bytes.first() == Some(&super::DEPS_MAGIC) && super::deps(bytes).is_some()))
        && bytes.len() >= HEADER_LEN;
    let current = valid_entry && generation == bytes.get(1..1 + TOKEN_LEN);
    let schema = valid_entry && be_u64(&bytes[IDENTITY_LEN + 12..HEADER_LEN]) == SCHEMA;
    let live_expected = current && schema;
    let is_tombstone = bytes.first() == Some(&TOMBSTONE_MAGIC) && bytes.len() == 1 + TOKEN_LEN;
    let is_lease = bytes.first() == Some(&LEASE_MAGIC) && bytes.len() == LEASE_LEN;
    let is_fence = bytes.first() == Some(&FENCE_MAGIC) && bytes.len() > TOKEN_LEN;
    match classify(Some(bytes), generation, SCHEMA) {
        Found::Live { payload, meta } => {
            prop_assert!(live_expected, "Live for {bytes:?} / {generation:?}");
            prop_assert_eq!(payload, &bytes[HEADER_LEN..]);
            prop_assert_eq!(
                meta,
                Meta {
                    expires_at_ms: be_u64(&bytes[IDENTITY_LEN..IDENTITY_LEN + 8]),
                    compute_ms: be_u32(&bytes[IDENTITY_LEN + 8..IDENTITY_LEN + 12]),
                    schema: SCHEMA,
                }
            );
        }
        Found::Miss { expect, why } => {
            prop_assert!(!live_expected, "miss for a live entry {bytes:?}");
            let identity = if is_lease || is_fence {
                1 + TOKEN_LEN
            } else {
                bytes.len().min(IDENTITY_LEN)
            };
            prop_assert_eq!(expect, Some(&bytes[..identity]));
            let expected = if valid_entry && !current {
                Why::Dead
            } else if valid_entry {
                Why::OtherSchema
            } else if is_tombstone {
                Why::Tombstone
            } else if is_lease && bytes.last() == Some(&b'w') {
                Why::Leased
            } else if is_lease {
                Why::Marked
            } else if is_fence {
                Why::Fenced
            } else {
                Why::Corrupt
            };
            prop_assert_eq!(why, expected);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn classify_arbitrary_bytes(bytes in stored_bytes(), generation in generation()) {
        check_classify(&bytes, generation.as_deref())?;
    }

    /// An entry whose generation matches except for one byte, or whose
    /// header is one byte short, is never live.
    #[test]
    fn classify_near_entries(
        g in token(),
        header in any::<bool>(),
        rest in vec(any::<u8>(), 0..40),
        at in 0..TOKEN_LEN,
        flip in 1..=255u8,
    ) {
        // Half the time a real header of the reader's schema, then bytes.
        let mut tail = if header {
            entry_tail(Meta { expires_at_ms: 1, compute_ms: 2, schema: SCHEMA }, rest.len())
        } else {
            Vec::new()
        };
        tail.extend_from_slice(&rest);
        let entry = assemble(&g, &tail);
        check_classify(&entry, Some(&g))?;
        let live = is_live(&classify(Some(&entry), Some(&g), SCHEMA));
        prop_assert_eq!(
            live,
            entry.len() >= HEADER_LEN && be_u64(&entry[IDENTITY_LEN + 12..HEADER_LEN]) == SCHEMA
        );
        let mut other = g;
        other[at] ^= flip;
        prop_assert!(!is_live(&classify(Some(&entry), Some(&other), SCHEMA)));
        prop_assert!(!is_live(&classify(Some(&entry), Some(&g[..TOKEN_LEN - 1]), SCHEMA)));
        prop_assert!(!is_live(&classify(Some(&entry), None, SCHEMA)));
        if entry.len() >= HEADER_LEN {
            prop_assert!(!is_live(&classify(Some(&entry[..HEADER_LEN - 1]), Some(&g), SCHEMA)));
        }
    }
}

// ===========================================================================
// Stored values: codecs, and the whole read path
// ===========================================================================

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    A,
    B(u16),
    C { x: i8, s: String },
}

/// A cached value with one field of every shape the codecs handle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u64,
    delta: i32,
    name: String,
    tags: Vec<String>,
    blob: Vec<u8>,
    flag: Option<bool>,
    c: char,
    kind: Kind,
    ratio: f64,
    counts: BTreeMap<String, u16>,
}

fn row() -> impl Strategy<Value = Row> {
    let kind = prop_oneof![
        Just(Kind::A),
        any::<u16>().prop_map(Kind::B),
        (any::<i8>(), nasty_string()).prop_map(|(x, s)| Kind::C { x, s }),
    ];
    (
        (
            int(vec![0u64, u64::MAX, 127, 128, 16_383, 16_384], 0..300u64),
            any::<i32>(),
            nasty_string(),
            vec(nasty_string(), 0..3),
            vec(any::<u8>(), 0..24),
        ),
        (
            proptest::option::of(any::<bool>()),
            nasty_char(),
            kind,
            any::<f64>().prop_filter("JSON has no NaN or inf", |f| f.is_finite()),
            btree_map(tiny_string(), any::<u16>(), 0..3),
        ),
    )
        .prop_map(
            |((id, delta, name, tags, blob), (flag, c, kind, ratio, counts))| Row {
                id,
                delta,
                name,
                tags,
                blob,
                flag,
                c,
                kind,
                ratio,
                counts,
            },
        )
}

fn codecs() -> Vec<CodecKind> {
    vec![
        #[cfg(feature = "postcard")]
        CodecKind::Postcard,
        #[cfg(feature = "bincode")]
        CodecKind::Bincode,
        #[cfg(feature = "json")]
        CodecKind::Json,
    ]
}

fn codec() -> impl Strategy<Value = CodecKind> {
    select(codecs())
}

/// A successful decode must come from a valid encoding of the value. Not
/// necessarily the canonical one: postcard accepts overlong varints
/// (`[0x80, 0x00]` is a valid `""`), and both binary codecs accept map
/// entries out of order or repeated (a `BTreeMap` re-sorts them, the last
/// duplicate wins). So the binary codecs must re-encode the value to bytes no
/// longer than the input that decode to a value with the very same
/// encoding; JSON re-encodes to text that decodes again (not bit-exactly:
/// see `json_round_trips_every_f64`).
fn check_decoded<T>(codec: CodecKind, bytes: &[u8], value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + serde::de::DeserializeOwned + Debug,
{
    let mut again = Vec::new();
    prop_assert!(codec.encode(value, &mut again).is_ok());
    let back = codec.decode::<T>(&again);
    if is_json(codec) {
        prop_assert!(back.is_ok(), "{codec:?}: {value:?} does not decode again");
    } else {
        prop_assert!(again.len() <= bytes.len(), "{value:?} from {bytes:?}");
        let mut third = Vec::new();
        prop_assert!(back.is_ok_and(|b| codec.encode(&b, &mut third).is_ok()));
        prop_assert_eq!(third, again, "{:?} {:?} from {:?}", codec, value, bytes);
    }
    Ok(())
}

/// Equal, floats bit for bit (JSON included: serde_json's
/// `float_roundtrip` is on; see `json_round_trips_every_f64`).
fn same_row(_codec: CodecKind, a: &Row, b: &Row) -> bool {
    a.ratio.to_bits() == b.ratio.to_bits() && {
        let mut b = b.clone();
        b.ratio = a.ratio;
        *a == b
    }
}

fn is_json(codec: CodecKind) -> bool {
    codec.name() == "json"
}

/// Tries `T` on `bytes`; a success must be a canonical encoding.
fn try_decode<T>(codec: CodecKind, bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + serde::de::DeserializeOwned + Debug,
{
    if let Ok(v) = codec.decode::<T>(bytes) {
        check_decoded(codec, bytes, &v)?;
    }
    Ok(())
}

fn try_all_types(codec: CodecKind, bytes: &[u8]) -> Result<(), TestCaseError> {
    try_decode::<Row>(codec, bytes)?;
    try_decode::<String>(codec, bytes)?;
    try_decode::<Vec<u8>>(codec, bytes)?;
    try_decode::<Vec<String>>(codec, bytes)?;
    try_decode::<(Option<bool>, char, Kind)>(codec, bytes)?;
    try_decode::<BTreeMap<String, Vec<u64>>>(codec, bytes)?;
    try_decode::<u64>(codec, bytes)?;
    Ok(())
}

#[derive(Clone, Debug)]
enum Mutation {
    None,
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    /// A length-prefix-like run: `0xFF` bytes (postcard varints, bincode u64
    /// lengths, both at their maximum) written over the payload.
    Bomb(prop::sample::Index, usize),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => Just(Mutation::None),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        4 => (any::<prop::sample::Index>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Delete),
        2 => (any::<prop::sample::Index>(), 1..10usize).prop_map(|(i, n)| Mutation::Bomb(i, n)),
        1 => vec(any::<u8>(), 1..4).prop_map(Mutation::Append),
    ]
}

/// Applies `m` to `bytes[from..]` (the header before `from` is kept).
fn mutate(bytes: &mut Vec<u8>, from: usize, m: &Mutation) {
    let span = bytes.len().saturating_sub(from);
    let pick = |i: &prop::sample::Index, n: usize| from + if n == 0 { 0 } else { i.index(n) };
    match m {
        Mutation::None => {}
        Mutation::Truncate(i) => bytes.truncate(pick(i, span)),
        Mutation::Flip(i, x) if span > 0 => bytes[pick(i, span)] ^= x,
        Mutation::Insert(i, b) => bytes.insert(pick(i, span + 1), *b),
        Mutation::Delete(i) if span > 0 => {
            bytes.remove(pick(i, span));
        }
        Mutation::Bomb(i, n) => {
            let at = pick(i, span + 1);
            let end = (at + n).min(bytes.len());
            bytes.splice(at..end, std::iter::repeat_n(0xff, *n));
        }
        Mutation::Append(extra) => bytes.extend_from_slice(extra),
        Mutation::Flip(..) | Mutation::Delete(_) => {}
    }
}

proptest! {
    #![proptest_config(config(4_000))]

    /// Real entries, unchanged, round trip; mutated (payload or the whole
    /// entry), the read path either misses, fails to decode, or returns a
    /// value whose canonical encoding is exactly the stored payload.
    #[test]
    fn read_path_on_real_and_mutated_entries(
        codec in codec(),
        g in token(),
        other in token(),
        meta in (any::<u64>(), any::<u32>()).prop_map(|(e, c)| Meta { expires_at_ms: e, compute_ms: c, schema: SCHEMA }),
        value in row(),
        m in mutation(),
        whole in any::<bool>(),
    ) {
        let mut payload = Vec::new();
        prop_assert!(codec.encode(&value, &mut payload).is_ok());
        let mut tail = entry_tail(meta, payload.len());
        tail.extend_from_slice(&payload);
        let mut entry = assemble(&g, &tail);

        match classify(Some(&entry), Some(&g), SCHEMA) {
            Found::Live { payload: p, meta: got } => {
                prop_assert_eq!(p, &payload[..]);
                prop_assert_eq!(got, meta);
                let back = codec.decode::<Row>(p);
                prop_assert!(
                    back.as_ref().is_ok_and(|b| same_row(codec, b, &value)),
                    "{codec:?}: {value:?} read back as {back:?}"
                );
            }
            f => return Err(TestCaseError::fail(format!("a fresh entry reads as {f:?}"))),
        }
        if other != g {
            prop_assert!(!is_live(&classify(Some(&entry), Some(&other), SCHEMA)));
        }

        mutate(&mut entry, if whole { 0 } else { HEADER_LEN }, &m);
        check_classify(&entry, Some(&g))?;
        if let Found::Live { payload: p, .. } = classify(Some(&entry), Some(&g), SCHEMA) {
            prop_assert_eq!(entry.first(), Some(&ENTRY_MAGIC));
            prop_assert_eq!(&entry[1..1 + TOKEN_LEN], &g[..]);
            if let Ok(v) = codec.decode::<Row>(p) {
                check_decoded(codec, p, &v)?;
            }
            try_all_types(codec, p)?;
        }
    }

    /// Arbitrary payload bytes, with a bias to length-prefix bombs.
    #[test]
    fn codecs_on_arbitrary_bytes(
        codec in codec(),
        head in prop_oneof![
            Just(Vec::new()),
            vec(Just(0xffu8), 1..12),
            select(vec![
                vec![0xff, 0xff, 0xff, 0xff, 0x0f],
                vec![0xff; 8],
                vec![0x80; 10],
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ]),
        ],
        body in prop_oneof![
            vec(any::<u8>(), 0..48),
            vec(select(&[0u8, 1, 0x7f, 0x80, 0xff, b'a'][..]), 0..48),
        ],
    ) {
        let mut bytes = head;
        bytes.extend_from_slice(&body);
        try_all_types(codec, &bytes)?;
    }
}

#[cfg(feature = "json")]
proptest! {
    #![proptest_config(config(4_000))]

    /// JSON-looking text built from tokens: escapes, surrogates, huge numbers.
    #[test]
    fn json_on_token_soup(parts in vec(select(&[
        "{", "}", "[", "]", "\"", ":", ",", "1", "-", "e", "E", ".", "0", " ",
        "18446744073709551616", "1e400", "-1e-400", "\\u0000", "\\ud800", "\\udc00",
        "\\\"", "null", "true", "\"id\"", "\"A\"", "\"B\"", "\"C\"", "\"x\"", "\"s\"",
        "\u{1F600}", "\u{0}",
    ][..]), 0..24)) {
        try_all_types(CodecKind::Json, parts.concat().as_bytes())?;
    }
}

/// Length prefixes far beyond the input must fail fast, without a panic or a
/// huge allocation; so must deeply nested JSON.
#[test]
fn codecs_reject_length_bombs() {
    let bombs: [&[u8]; 5] = [
        &[0xff, 0xff, 0xff, 0xff, 0x0f, b'a'],
        &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, b'a',
        ],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'a'],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0],
        &[0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 1, 2, 3],
    ];
    let started = std::time::Instant::now();
    for codec in codecs() {
        for bomb in bombs {
            assert!(codec.decode::<String>(bomb).is_err(), "{codec:?} {bomb:?}");
            assert!(codec.decode::<Vec<u8>>(bomb).is_err(), "{codec:?} {bomb:?}");
            assert!(codec.decode::<Vec<String>>(bomb).is_err(), "{codec:?}");
            assert!(codec.decode::<Vec<u64>>(bomb).is_err(), "{codec:?}");
            assert!(
                codec.decode::<BTreeMap<String, u8>>(bomb).is_err(),
                "{codec:?}"
            );
            assert!(codec.decode::<Row>(bomb).is_err(), "{codec:?}");
            // The same inside a live entry.
            let g = [b'0'; TOKEN_LEN];
            let mut tail = entry_tail(
                Meta {
                    expires_at_ms: 1,
                    compute_ms: 1,
                    schema: SCHEMA,
                },
                bomb.len(),
            );
            tail.extend_from_slice(bomb);
            let entry = assemble(&g, &tail);
            match classify(Some(&entry), Some(&g), SCHEMA) {
                Found::Live { payload, .. } => {
                    assert!(codec.decode::<Vec<String>>(payload).is_err());
                }
                f => panic!("{f:?}"),
            }
        }
        let deep = "[".repeat(100_000);
        assert!(codec.decode::<Vec<String>>(deep.as_bytes()).is_err());
        assert!(codec.decode::<Row>(deep.as_bytes()).is_err());
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// Without its `float_roundtrip` feature, serde_json parses some of the
/// shortest round-trip decimals it writes to a nearby `f64` (these two came
/// back 1 and 2 ulps off), so the JSON codec would return a cached `f64`
/// that differs from the computed one. The feature is on.
#[cfg(feature = "json")]
#[test]
fn json_round_trips_every_f64() {
    // Read back 1 and 2 ulps off.
    for x in [-1.401_574_878_023_500_1e138_f64, -9.407_347_743_220_297e226] {
        let mut out = Vec::new();
        assert!(CodecKind::Json.encode(&x, &mut out).is_ok());
        let back = CodecKind::Json.decode::<f64>(&out).ok();
        assert_eq!(
            back.map(f64::to_bits),
            Some(x.to_bits()),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}
