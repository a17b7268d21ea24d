//! Property tests of the key encoder: it never panics, is injective
//! (checked by decoding every key back with the strict grammar decoder
//! below), and keeps every key inside its prefix with only the characters
//! the module docs allow.

use std::collections::BTreeMap;
use std::fmt::Debug;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde::{Serialize, Serializer};

use super::layout::{entry_key_prefix, generation_key, validate_name};
use super::{HASH_BYTES, HASHED_PREFIX_LEN, MAX_ARGS_LEN, encode_args, write_args};
use crate::strategies::{PIECES, config, int, nasty_char, nasty_string, tiny_string};

/// A hashed encoding: the first bytes, `#`, and the hash in lowercase hex.
const HASH_HEX_LEN: usize = 2 * HASH_BYTES;

// ===========================================================================
// Argument types
// ===========================================================================

/// A byte string that serializes with `serialize_bytes` (not as a sequence).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

/// An `f64` compared by bits, with every NaN equal (the key encoding writes
/// every NaN as `NaN`, see the `key` module docs).
#[derive(Clone, Copy, Debug)]
struct F(f64);

impl PartialEq for F {
    fn eq(&self, other: &Self) -> bool {
        (self.0.is_nan() && other.0.is_nan()) || self.0.to_bits() == other.0.to_bits()
    }
}

impl Serialize for F {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
enum Shape {
    Empty,
    Circle(F),
    Rect(u8, i16),
    Named { id: u16, name: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Rec {
    a: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    b: Option<String>,
    c: Vec<Bytes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    d: Option<Option<i32>>,
}

/// Near-collisions: two strings, often equal, often differing only in where
/// a separator or an escape-like piece sits.
type Pair = (String, String);
/// Every scalar kind at the top level (no sequences or maps).
type Flat = (String, Bytes, i64, u128, Option<Option<String>>, bool, char);
/// Sequences, nested tuples, floats, maps.
type Nested = (
    Vec<Option<String>>,
    (String, (i128, char)),
    F,
    BTreeMap<String, Option<u16>>,
);
/// Structs with skipped fields, enums.
type Structs = (Rec, Shape, Option<Shape>, Vec<Shape>);

// ===========================================================================
// A strict decoder for the key grammar (test only)
// ===========================================================================
//
// It accepts exactly the canonical encodings of the `key` module docs and
// rebuilds the value. `decode(encode(v)) == v` for every unhashed key proves
// that no two different values of the type share that key.

struct Input<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// A number, `true`/`false`, or a float word: `[0-9A-Za-z.-]+`.
    fn word(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        {
            self.pos += 1;
        }
        let w = core::str::from_utf8(self.s.get(start..self.pos)?).ok()?;
        (!w.is_empty()).then_some(w)
    }

    /// An escaped string/bytes atom: `%-`, or safe bytes and `%XX` escapes of
    /// unsafe bytes (an escaped safe byte is not canonical and rejected).
    fn escaped(&mut self) -> Option<Vec<u8>> {
        if self.s.get(self.pos..self.pos + 2) == Some(b"%-") {
            self.pos += 2;
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Some(b) if is_safe_byte(b) => {
                    out.push(b);
                    self.pos += 1;
                }
                Some(b'%') => {
                    let hi = upper_hex(*self.s.get(self.pos + 1)?)?;
                    let lo = upper_hex(*self.s.get(self.pos + 2)?)?;
                    let byte = (hi << 4) | lo;
                    if is_safe_byte(byte) {
                        return None;
                    }
                    out.push(byte);
                    self.pos += 3;
                }
                _ => break,
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

fn is_safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn upper_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

trait Decode: Sized {
    fn decode(inp: &mut Input<'_>) -> Option<Self>;
}

/// How a value decodes when it is the whole argument list: tuples are joined
/// with `:`, anything else is one element.
trait DecodeTop: Sized {
    fn decode_top(inp: &mut Input<'_>) -> Option<Self>;
}

/// Decodes a whole args text, requiring that all of it is used.
fn decode_args<T: DecodeTop>(text: &str) -> Option<T> {
    let mut inp = Input {
        s: text.as_bytes(),
        pos: 0,
    };
    let v = T::decode_top(&mut inp)?;
    (inp.pos == text.len()).then_some(v)
}

impl Decode for String {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        String::from_utf8(inp.escaped()?).ok()
    }
}

impl Decode for Bytes {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        inp.escaped().map(Bytes)
    }
}

impl Decode for char {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        let s = String::decode(inp)?;
        let mut chars = s.chars();
        let c = chars.next()?;
        chars.next().is_none().then_some(c)
    }
}

impl Decode for bool {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        match inp.word()? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

macro_rules! decode_int {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(inp: &mut Input<'_>) -> Option<Self> {
                let w = inp.word()?;
                let v: $t = w.parse().ok()?;
                (v.to_string() == w).then_some(v)
            }
        }
    )*};
}
decode_int!(u8, u16, i16, i32, i64, u128, i128);

/// The float text the module docs promise.
fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        String::from(if v < 0.0 { "-inf" } else { "inf" })
    } else if v == 0.0 {
        String::from(if v.is_sign_negative() { "-0" } else { "0" })
    } else {
        v.to_string()
    }
}

impl Decode for F {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        let w = inp.word()?;
        let v: f64 = match w {
            "NaN" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            // Rust would also parse "nan", "infinity", "1e5": not canonical.
            _ if w.bytes().any(|b| b.is_ascii_alphabetic()) => return None,
            _ => w.parse().ok()?,
        };
        (float_text(v) == w).then_some(F(v))
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        if inp.eat(b'~') {
            return Some(None);
        }
        // `!` only in front of a value that itself starts with `~` or `!`.
        if inp.eat(b'!') && !matches!(inp.peek(), Some(b'~' | b'!')) {
            return None;
        }
        T::decode(inp).map(Some)
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        inp.expect(b'[')?;
        let mut out = Vec::new();
        if inp.eat(b']') {
            return Some(out);
        }
        loop {
            out.push(T::decode(inp)?);
            if inp.eat(b']') {
                return Some(out);
            }
            inp.expect(b',')?;
        }
    }
}

impl<K: Decode + Ord, V: Decode> Decode for BTreeMap<K, V> {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        inp.expect(b'{')?;
        let mut out = BTreeMap::new();
        if inp.eat(b'}') {
            return Some(out);
        }
        let mut previous: Option<&[u8]> = None;
        loop {
            let start = inp.pos;
            let k = K::decode(inp)?;
            inp.expect(b'=')?;
            let v = V::decode(inp)?;
            // Entries are sorted by their encoded text, each key once.
            let text = inp.s.get(start..inp.pos)?;
            if previous.is_some_and(|p| p >= text) || out.insert(k, v).is_some() {
                return None;
            }
            previous = Some(text);
            if inp.eat(b'}') {
                return Some(out);
            }
            inp.expect(b',')?;
        }
    }
}

macro_rules! decode_tuple {
    ($first:ident $(, $rest:ident)*) => {
        impl<$first: Decode $(, $rest: Decode)*> Decode for ($first, $($rest,)*) {
            #[allow(non_snake_case)]
            fn decode(inp: &mut Input<'_>) -> Option<Self> {
                inp.expect(b'(')?;
                let $first = $first::decode(inp)?;
                $(inp.expect(b',')?; let $rest = $rest::decode(inp)?;)*
                inp.expect(b')')?;
                Some(($first, $($rest,)*))
            }
        }

        impl<$first: Decode $(, $rest: Decode)*> DecodeTop for ($first, $($rest,)*) {
            #[allow(non_snake_case)]
            fn decode_top(inp: &mut Input<'_>) -> Option<Self> {
                let $first = $first::decode(inp)?;
                $(inp.expect(b':')?; let $rest = $rest::decode(inp)?;)*
                Some(($first, $($rest,)*))
            }
        }
    };
}
decode_tuple!(A, B);
decode_tuple!(A, B, C, D);
decode_tuple!(A, B, C, D, E, G, H);

impl DecodeTop for String {
    fn decode_top(inp: &mut Input<'_>) -> Option<Self> {
        String::decode(inp)
    }
}

impl<T: Decode> DecodeTop for Option<T> {
    fn decode_top(inp: &mut Input<'_>) -> Option<Self> {
        Option::<T>::decode(inp)
    }
}

/// A struct field that `skip_serializing_if` may leave out: an empty slot.
fn skippable<T: Decode>(inp: &mut Input<'_>) -> Option<Option<T>> {
    if matches!(inp.peek(), Some(b',' | b')')) {
        Some(None)
    } else {
        T::decode(inp).map(Some)
    }
}

impl Decode for Rec {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        inp.expect(b'(')?;
        let a = u8::decode(inp)?;
        inp.expect(b',')?;
        let b = skippable::<String>(inp)?;
        inp.expect(b',')?;
        let c = Vec::<Bytes>::decode(inp)?;
        inp.expect(b',')?;
        // A present `d` is `Some(_)`; a bare `~` would be a skipped `None`.
        let d = match skippable::<Option<Option<i32>>>(inp)? {
            None => None,
            Some(Some(d)) => Some(d),
            Some(None) => return None,
        };
        inp.expect(b')')?;
        Some(Rec { a, b, c, d })
    }
}

impl Decode for Shape {
    fn decode(inp: &mut Input<'_>) -> Option<Self> {
        let name = inp.escaped()?;
        match &name[..] {
            b"Empty" => Some(Shape::Empty),
            b"Circle" => {
                inp.expect(b'(')?;
                let f = F::decode(inp)?;
                inp.expect(b')')?;
                Some(Shape::Circle(f))
            }
            b"Rect" => {
                let (w, h) = <(u8, i16)>::decode(inp)?;
                Some(Shape::Rect(w, h))
            }
            b"Named" => {
                let (id, name) = <(u16, String)>::decode(inp)?;
                Some(Shape::Named { id, name })
            }
            _ => None,
        }
    }
}

/// The decoder above is the oracle of the round-trip properties: make sure it
/// rejects what the encoder never writes.
#[test]
fn grammar_decoder_is_strict() {
    assert_eq!(
        decode_args::<Pair>("a%3Ab:%-"),
        Some(("a:b".into(), String::new()))
    );
    for bad in [
        "a:b:c", "a", "a:", ":a", "a%3ab:c", "%41:b", "a:b ", "%-x:b", "a:%",
    ] {
        assert_eq!(decode_args::<Pair>(bad), None, "{bad}");
    }
    assert_eq!(
        decode_args::<Option<Option<String>>>("!~"),
        Some(Some(None))
    );
    for bad in ["!x", "!!~", "~~", ""] {
        assert_eq!(decode_args::<Option<Option<String>>>(bad), None, "{bad}");
    }
    for bad in ["(1,x)", "(01,x)", "(-0,x)", "(1,x", "[]"] {
        assert_eq!(decode_args::<(u8, String)>(bad), None, "{bad}");
        assert_eq!(decode_args::<(Vec<String>, i16)>(bad), None, "{bad}");
    }
    let map = decode_args::<Option<BTreeMap<String, Option<u16>>>>;
    assert!(map("{a=1,b=~}").is_some());
    assert_eq!(map("{b=1,a=~}"), None, "unsorted");
    assert_eq!(map("{a=1,a=1}"), None, "repeated");
    let float = decode_args::<(F, F)>;
    assert!(float("-0:NaN").is_some());
    for bad in ["1e5:0", "1.0:0", "nan:0", "+1:0", "0.10:0", "-0.0:0"] {
        assert_eq!(float(bad), None, "{bad}");
    }
}

// ===========================================================================
// Strategies
// ===========================================================================

/// A short nasty string, for slots of composite values (so that most of
/// those stay below the hashing limit and are decoded back).
fn short_string() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(nasty_char(), 0..5).prop_map(String::from_iter),
        vec(select(PIECES), 0..3).prop_map(|p| p.concat()),
    ]
}

fn bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        vec(any::<u8>(), 0..10),
        vec(
            select(&[0u8, 0xff, 0x80, b'%', b':', b'a', b'-', b'{'][..]),
            0..6
        ),
    ]
    .prop_map(Bytes)
}

fn float() -> impl Strategy<Value = F> {
    prop_oneof![
        1 => select(vec![
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::EPSILON,
            5e-324,
            0.1,
            1e-7,
            1e22,
        ]),
        // Most floats print hundreds of digits (and hash): keep many short.
        3 => -1e6..1e6f64,
        2 => (-4000..4000i32).prop_map(|i| f64::from(i) / 16.0),
        1 => any::<f64>(),
        1 => any::<u64>().prop_map(f64::from_bits),
    ]
    .prop_map(F)
}

fn pair() -> impl Strategy<Value = Pair> {
    (tiny_string(), tiny_string())
}

fn flat() -> impl Strategy<Value = Flat> {
    (
        nasty_string(),
        bytes(),
        int(vec![i64::MIN, i64::MAX, 0, -1, 1], -100..100i64),
        int(vec![u128::MAX, 0, u128::from(u64::MAX) + 1], 0..1000u128),
        prop_oneof![
            Just(None),
            Just(Some(None)),
            short_string().prop_map(|s| Some(Some(s))),
        ],
        any::<bool>(),
        nasty_char(),
    )
}

fn nested() -> impl Strategy<Value = Nested> {
    (
        vec(proptest::option::of(short_string()), 0..3),
        (
            short_string(),
            (
                int(vec![i128::MIN, i128::MAX, 0, -1], -1000..1000i128),
                nasty_char(),
            ),
        ),
        float(),
        btree_map(tiny_string(), proptest::option::of(any::<u16>()), 0..4),
    )
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Empty),
        float().prop_map(Shape::Circle),
        (any::<u8>(), any::<i16>()).prop_map(|(w, h)| Shape::Rect(w, h)),
        (any::<u16>(), short_string()).prop_map(|(id, name)| Shape::Named { id, name }),
    ]
}

fn structs() -> impl Strategy<Value = Structs> {
    let rec = (
        any::<u8>(),
        proptest::option::of(tiny_string()),
        vec(bytes(), 0..3),
        proptest::option::of(proptest::option::of(any::<i32>())),
    )
        .prop_map(|(a, b, c, d)| Rec { a, b, c, d });
    (
        rec,
        shape(),
        proptest::option::of(shape()),
        vec(shape(), 0..3),
    )
}

/// A valid prefix or namespace name, often one of a few short ones.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        select(&["a", "b", "a.b", "v1", "gen", "x-", "_", "ns"][..]).prop_map(str::to_owned),
        "[A-Za-z0-9_.-]{1,64}",
    ]
}

// ===========================================================================
// Key checks
// ===========================================================================

fn is_hashed(args: &str) -> bool {
    args.as_bytes().get(HASHED_PREFIX_LEN) == Some(&b'#')
}

/// Which structural characters a type's encoding may contain besides the
/// always-possible ones (`%`, `:`, `,`, `(`, `)`, `~`, `!`, `#`).
#[derive(Clone, Copy)]
struct Allowed {
    brackets: bool,
    braces: bool,
}

const FLAT: Allowed = Allowed {
    brackets: false,
    braces: false,
};
const ANY: Allowed = Allowed {
    brackets: true,
    braces: true,
};

/// The character-level promises for one args text of a top-level tuple with
/// `arity` elements.
fn check_args_text(args: &str, arity: usize, allowed: Allowed) -> Result<(), TestCaseError> {
    prop_assert!(args.len() <= MAX_ARGS_LEN, "too long: {args}");
    let hashed = is_hashed(args);
    let body = if hashed {
        let (body, hash) = args.split_at(HASHED_PREFIX_LEN);
        let hex = &hash[1..];
        prop_assert_eq!(hex.len(), HASH_HEX_LEN, "{}", args);
        prop_assert!(
            hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "hash is not lowercase hex: {}",
            args
        );
        body
    } else {
        args
    };
    for (i, b) in body.bytes().enumerate() {
        // No whitespace, no control bytes, no non-ASCII.
        prop_assert!(b.is_ascii_graphic(), "byte {b:#04x} at {i} in {args:?}");
        let ok = is_safe_byte(b)
            || matches!(b, b'%' | b':' | b',' | b'(' | b')' | b'~' | b'!')
            || (allowed.brackets && matches!(b, b'[' | b']'))
            || (allowed.braces && matches!(b, b'{' | b'}' | b'='));
        // Never a glob character (`*`, `?`, `\`, `^`), never a quote.
        prop_assert!(ok, "unexpected {:?} at {i} in {args:?}", char::from(b));
        if b == b'%' {
            // `%-` or `%XX` (uppercase); a hashed prefix may cut one short.
            let tail = &body.as_bytes()[i + 1..];
            let well_formed = tail.first() == Some(&b'-')
                || (tail.len() >= 2 && tail[..2].iter().all(|&h| upper_hex(h).is_some()));
            let cut = hashed && tail.len() < 2 && tail.iter().all(|&h| upper_hex(h).is_some());
            prop_assert!(well_formed || cut, "bad escape at {i} in {args:?}");
        }
    }
    // The `:` separators are exactly the top-level tuple's own.
    let colons = body.bytes().filter(|&b| b == b':').count();
    if hashed {
        prop_assert!(colons < arity.max(1), "{args}");
    } else {
        prop_assert_eq!(colons, arity.saturating_sub(1), "{}", args);
    }
    Ok(())
}

/// Encodes `v`, checks the text, and decodes it back when it is not hashed.
fn check_key<T>(v: &T, arity: usize, allowed: Allowed) -> Result<String, TestCaseError>
where
    T: Serialize + DecodeTop + PartialEq + Debug,
{
    let args = encode_args(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
    check_args_text(&args, arity, allowed)?;
    // Deterministic, and `write_args` appends exactly the same text.
    prop_assert_eq!(&encode_args(v).ok(), &Some(args.clone()));
    let mut appended = String::from("p:n:v0:");
    prop_assert!(write_args(&mut appended, v).is_ok());
    prop_assert_eq!(appended.strip_prefix("p:n:v0:"), Some(args.as_str()));
    if !is_hashed(&args) {
        let back = decode_args::<T>(&args);
        prop_assert_eq!(back.as_ref(), Some(v), "args {:?} decode differently", args);
    }
    Ok(args)
}

/// `(a == b) == (key(a) == key(b))`, for any two values of one type.
fn check_pair<T: Serialize + PartialEq + Debug>(a: &T, b: &T) -> Result<(), TestCaseError> {
    let (ka, kb) = (encode_args(a).ok(), encode_args(b).ok());
    prop_assert!(ka.is_some() && kb.is_some());
    prop_assert_eq!(
        a == b,
        ka == kb,
        "{:?} -> {:?} vs {:?} -> {:?}",
        a,
        ka,
        b,
        kb
    );
    Ok(())
}

// ===========================================================================
// Key properties
// ===========================================================================

proptest! {
    #![proptest_config(config(10_000))]

    /// Near-collisions such as ("a:b", "c") / ("a", "b:c"), ("", "x") / ("x", "").
    #[test]
    fn key_pairs_of_strings_are_injective(a in pair(), b in pair()) {
        check_key(&a, 2, FLAT)?;
        check_key(&b, 2, FLAT)?;
        check_pair(&a, &b)?;
    }

    #[test]
    fn key_flat_tuples_round_trip(v in flat()) {
        check_key(&v, 7, FLAT)?;
    }
}

proptest! {
    #![proptest_config(config(5_000))]

    #[test]
    fn key_nested_values_round_trip(v in nested()) {
        check_key(&v, 4, ANY)?;
    }

    #[test]
    fn key_structs_and_enums_round_trip(v in structs()) {
        check_key(&v, 4, ANY)?;
    }

    #[test]
    fn key_top_level_non_tuples_round_trip(s in nasty_string(), o in proptest::option::of(nasty_string())) {
        check_key(&s, 1, FLAT)?;
        check_key(&o, 1, FLAT)?;
        // A bare value and a 1-tuple of it are written the same way.
        prop_assert_eq!(encode_args(&(s.clone(),)).ok(), encode_args(&s).ok());
    }

}

proptest! {
    #![proptest_config(config(2_000))]

    /// Pairs of values that differ a little, including hashed (long) ones,
    /// which the decoder cannot check.
    #[test]
    fn key_nearby_values_differ(
        base in vec(nasty_char(), 0..200).prop_map(String::from_iter),
        at in any::<prop::sample::Index>(),
        c in nasty_char(),
        edit in 0..3u8,
        tail in int(vec![0u64, u64::MAX], 0..10u64),
    ) {
        let mut chars: Vec<char> = base.chars().collect();
        let i = if chars.is_empty() { 0 } else { at.index(chars.len()) };
        match edit {
            0 if !chars.is_empty() => chars[i] = c,
            1 if !chars.is_empty() => { chars.remove(i); }
            _ => chars.insert(i, c),
        }
        let other: String = chars.into_iter().collect();
        check_pair(&(base.clone(), tail), &(other.clone(), tail))?;
        check_pair(&(tail, Some(base.clone())), &(tail, Some(other.clone())))?;
        check_pair(&vec![base.clone()], &vec![other.clone()])?;
        check_pair(&vec![base.clone(), other.clone()], &vec![other, base])?;
    }

    /// Two different argument lists of a few types that the grammar keeps
    /// apart even though the types differ: the arity of a string tuple, the
    /// hashed versus the unhashed form, the empty text.
    #[test]
    fn key_types_the_grammar_keeps_apart(
        a in nasty_string(), b in nasty_string(), c in nasty_string(),
    ) {
        let one = encode_args(&(a.clone(),)).ok();
        let two = encode_args(&(a.clone(), b.clone())).ok();
        let three = encode_args(&(a.clone(), b.clone(), c.clone())).ok();
        for k in [&one, &two, &three] {
            let k = k.as_deref().unwrap_or("");
            // Only the top-level `()` encodes to the empty text.
            prop_assert!(!k.is_empty());
        }
        // Arity is visible in every key, hashed or not (different `:` counts
        // unhashed; a different hash otherwise).
        prop_assert_ne!(&one, &two);
        prop_assert_ne!(&two, &three);
        prop_assert_ne!(&one, &three);
        // `#` marks the hashed form and nothing else.
        for k in [one, two, three].into_iter().flatten() {
            prop_assert_eq!(k.contains('#'), is_hashed(&k), "{}", k);
        }
    }

    /// Every key stays inside its prefix, an ACL pattern `~prefix:*` covers
    /// it, and nothing else of the cache can be named by argument values.
    #[test]
    fn key_stays_inside_its_prefix(
        prefix in name(), ns in name(), args in flat(),
    ) {
        prop_assert!(validate_name("prefix", &prefix).is_ok());
        prop_assert!(validate_name("namespace", &ns).is_ok());
        let head = entry_key_prefix(&prefix, &ns);
        let mut key = head.clone();
        prop_assert!(write_args(&mut key, &args).is_ok());
        let prefix_colon = format!("{prefix}:");
        prop_assert!(key.starts_with(&prefix_colon));
        let rest = key.strip_prefix(head.as_str());
        let expected = encode_args(&args).ok();
        prop_assert_eq!(rest, expected.as_deref());
        check_args_text(rest.unwrap_or_default(), 7, FLAT)?;
        prop_assert_ne!(key, generation_key(&prefix, &ns));
    }

    /// Keys of different prefixes or namespaces never meet, and no
    /// entry key starts with another namespace's entry-key prefix or equals a
    /// generation key.
    #[test]
    fn key_namespaces_never_overlap(
        a in (name(), name(), tiny_string(), proptest::option::of(tiny_string())),
        b in (name(), name(), tiny_string(), proptest::option::of(tiny_string())),
    ) {
        let key = |(p, ns, x, y): &(String, String, String, Option<String>)| {
            let mut k = entry_key_prefix(p, ns);
            write_args(&mut k, &(x, y)).map(|()| k).ok()
        };
        let (ka, kb) = (key(&a), key(&b));
        prop_assert!(ka.is_some() && kb.is_some());
        prop_assert_eq!(ka == kb, a == b);
        let ka = ka.unwrap_or_default();
        let same_space = (&a.0, &a.1) == (&b.0, &b.1);
        prop_assert_eq!(ka.starts_with(&entry_key_prefix(&b.0, &b.1)), same_space);
        prop_assert_ne!(&ka, &generation_key(&b.0, &b.1));
        prop_assert_eq!(
            generation_key(&a.0, &a.1) == generation_key(&b.0, &b.1),
            (&a.0, &a.1) == (&b.0, &b.1)
        );
    }
}

fn has_brace(s: &str) -> bool {
    s.contains(['{', '}'])
}

/// The part of a key Redis Cluster hashes: the text between the first `{`
/// and the first `}` after it, if that is not empty; else the whole key.
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

proptest! {
    #![proptest_config(config(2_000))]

    /// Every key of a namespace, whatever the arguments (maps included, which
    /// write raw braces), hashes to the slot of the namespace's generation
    /// key: the multi-key scripts never cross slots.
    #[test]
    fn key_hash_slot_is_the_namespace(
        prefix in name(), ns in name(), a in nested(), b in flat(),
    ) {
        let generation = generation_key(&prefix, &ns);
        for args in [encode_args(&a), encode_args(&b)] {
            let mut key = entry_key_prefix(&prefix, &ns);
            key.push_str(&args.unwrap_or_default());
            prop_assert_eq!(hash_tag(&key), hash_tag(&generation), "{}", key);
        }
    }

    /// Hash tags: in Redis Cluster the slot of a key is chosen by the first
    /// `{...}` in it, so argument values must never produce a brace. Strings,
    /// bytes, chars and enum names escape them (`%7B`, `%7D`).
    #[test]
    fn key_string_data_never_produces_braces(v in flat(), s in structs()) {
        let a = encode_args(&v).unwrap_or_default();
        prop_assert!(!has_brace(&a), "{}", a);
        // `structs()` has no maps: no braces either.
        let b = encode_args(&s).unwrap_or_default();
        prop_assert!(!has_brace(&b), "{}", b);
    }

    /// Maps are written `{k=v,...}` with raw braces today, so a map argument
    /// puts a `{...}` into the key. Harmless for the slot while the `{ns}`
    /// hash tag comes first (see `key_hash_slot_is_the_namespace`), but a
    /// key layout without it would let a map argument pick the slot. Enable
    /// this when key.rs escapes braces in maps too.
    #[test]
    #[ignore = "enable when key.rs escapes braces (maps are still written as raw `{k=v}`)"]
    fn key_args_never_contain_braces(v in nested()) {
        let a = encode_args(&v).unwrap_or_default();
        prop_assert!(!has_brace(&a), "{}", a);
    }
}

/// Explicit cases: 1 MB strings, extremes, the documented near-collisions.
#[test]
fn key_explicit_cases() {
    // 1 MiB each; hashing them is most of this test's time in a debug build.
    let big = "é:{*}%\0\n".repeat(1 << 17);
    assert!(big.len() >= 1 << 20);
    let big_bytes = Bytes((0..=255u8).cycle().take(1 << 20).collect());
    let mut other = big.clone();
    other.insert(1 << 19, 'x');
    let keys: Vec<String> = [
        encode_args(&big),
        encode_args(&other),
        encode_args(&(big.as_str(), 1u8)),
        encode_args(&(big.as_str(), 2u8)),
        encode_args(&big_bytes),
    ]
    .into_iter()
    .map(Result::unwrap_or_default)
    .collect();
    for (i, args) in keys.iter().enumerate() {
        assert!(is_hashed(args), "{args}");
        assert!(check_args_text(args, 2, FLAT).is_ok(), "{args}");
        assert!(keys[..i].iter().all(|k| k != args), "{args}");
    }
    assert!(
        keys[0].starts_with("%C3%A9%3A%7B%2A%7D%25%00%0A"),
        "{}",
        keys[0]
    );

    let distinct: &[(Pair, Pair)] = &[
        (("a:b".into(), "c".into()), ("a".into(), "b:c".into())),
        (("".into(), "x".into()), ("x".into(), "".into())),
        (("%".into(), "".into()), ("".into(), "%".into())),
        (("%-".into(), "".into()), ("".into(), "%-".into())),
        (("%3A".into(), "".into()), (":".into(), "".into())),
        (("%25".into(), "x".into()), ("%".into(), "x".into())),
        (("a%".into(), "b".into()), ("a".into(), "%b".into())),
        (("~".into(), "!".into()), ("!".into(), "~".into())),
    ];
    for (a, b) in distinct {
        assert!(check_pair(a, b).is_ok(), "{a:?} / {b:?}");
        assert!(check_key(a, 2, FLAT).is_ok(), "{a:?}");
        assert!(check_key(b, 2, FLAT).is_ok(), "{b:?}");
    }
    let extremes: Flat = (
        String::new(),
        Bytes(vec![0xff, 0xfe, 0]),
        i64::MIN,
        u128::MAX,
        Some(None),
        false,
        '\u{10FFFF}',
    );
    assert!(check_key(&extremes, 7, FLAT).is_ok());
    assert_ne!(
        encode_args(&Some(None::<String>)).ok(),
        encode_args(&None::<Option<String>>).ok()
    );
    assert_ne!(
        encode_args(&Some(String::new())).ok(),
        encode_args(&None::<String>).ok()
    );
}
