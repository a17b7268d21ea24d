//! Proptest strategies shared by the property tests of the key encoder
//! (`key/proptests.rs`) and of the stored-value decoders
//! (`entry/proptests.rs`). `PROPTEST_CASES=N` overrides every property's
//! case count (for a long local run); `PROPTEST_RNG_SEED=N` replays a seed.

use std::fmt::Debug;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

pub(crate) fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Characters that have a meaning somewhere: the key grammar, Redis glob
/// patterns, Cluster hash tags, whitespace and control bytes, multi-byte
/// UTF-8 — and some arbitrary unicode.
pub(crate) fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => select(vec![
            ':', '*', '?', '[', ']', '{', '}', '%', '\n', '\r', '\t', ' ', '\0', ',', '(', ')',
            '=', '~', '!', '#', '-', '_', '.', '"', '\'', '\\', '/', '^', '\u{7f}', '\u{85}',
            '\u{a0}', 'é', '€', '\u{1F600}', '\u{FEFF}', '\u{10FFFF}', 'a', 'Z', '0', '9', 'F',
        ]),
        1 => any::<char>(),
    ]
}

/// Pieces that look like the encoder's own output.
pub(crate) const PIECES: &[&str] = &[
    "", ":", "%", "%-", "%3A", "%25", "%2", "~", "!", "!~", ",", "(", ")", "()", "[", "]", "{",
    "}", "=", "#", "a", "b", "-", "NaN", "inf", "0", "-0", "true",
];

pub(crate) fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(nasty_char(), 0..12).prop_map(String::from_iter),
        2 => vec(select(PIECES), 0..5).prop_map(|p| p.concat()),
        // Long enough that some encodings are hashed.
        1 => vec(nasty_char(), 20..120).prop_map(String::from_iter),
    ]
}

/// Few distinct values, so that generated pairs often collide or nearly do.
pub(crate) fn tiny_string() -> impl Strategy<Value = String> {
    vec(
        select(&["", "a", "b", ":", "%", "%-", "%3A", "~", "!", ","][..]),
        0..3,
    )
    .prop_map(|p| p.concat())
}

/// Extremes, small numbers, and anything.
pub(crate) fn int<T: Arbitrary + Clone + Debug + 'static>(
    extremes: Vec<T>,
    small: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = T> {
    prop_oneof![select(extremes), small, any::<T>()]
}
