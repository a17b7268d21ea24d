//! Unit tests of the key encoder and the key layout.

use super::encoder::{push_i64, push_u64};
use super::layout::{entry_key_prefix, generation_key, validate_name};
use super::*;
use serde::ser;
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, HashMap, HashSet};

fn enc<K: Serialize + ?Sized>(args: &K) -> String {
    match encode_args(args) {
        Ok(s) => s,
        Err(e) => panic!("encoding failed: {e}"),
    }
}

/// Serializes its content with `serialize_bytes`.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Always fails to serialize.
struct Failing;

impl Serialize for Failing {
    fn serialize<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        Err(ser::Error::custom("refusing to serialize"))
    }
}

#[derive(Serialize)]
struct Unit;

#[derive(Serialize)]
struct Newtype(String);

#[derive(Serialize)]
struct Pair(u8, String);

#[derive(Serialize)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Serialize)]
struct WithSkips {
    a: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    b: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(skip)]
    _d: u8,
}

#[derive(Serialize)]
enum Shape {
    Empty,
    Circle(f64),
    Rect(u32, u32),
    Poly { sides: u8, name: String },
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Cabin {
    FirstClass,
}

// --- top level -------------------------------------------------------

#[test]
fn readable_simple_args() {
    assert_eq!(enc(&("FRA", "JFK")), "FRA:JFK");
    assert_eq!(enc(&42u32), "42");
    assert_eq!(enc(&-7i64), "-7");
    assert_eq!(enc(&true), "true");
    assert_eq!(enc(&false), "false");
    assert_eq!(enc(&("LHR",)), "LHR");
    assert_eq!(enc(&"LHR"), "LHR");
    assert_eq!(enc(&()), "");
    assert_eq!(enc(&(1u8, "x", false)), "1:x:false");
}

#[test]
fn only_top_level_joins_with_colon() {
    assert_eq!(enc(&(("a", "b"), "c")), "(a,b):c");
    assert_eq!(enc(&("a", "b", "c")), "a:b:c");
    assert_ne!(enc(&(("a", "b"), "c")), enc(&("a", "b", "c")));
    assert_eq!(enc(&((),)), "()");
    assert_eq!(enc(&Some(("a", "b"))), "(a,b)");
    assert_eq!(enc(&Newtype("x".into())), "x");
}

#[test]
fn write_args_appends_and_restores_on_error() {
    let mut key = entry_key_prefix("p", "ns");
    assert!(write_args(&mut key, &("a", 1u8)).is_ok());
    assert_eq!(key, "p:{ns}:a:1");

    let mut key = entry_key_prefix("p", "ns");
    assert!(write_args(&mut key, &("a", Failing)).is_err());
    assert_eq!(key, "p:{ns}:");
}

// --- scalars ----------------------------------------------------------

#[test]
fn integers() {
    assert_eq!(enc(&0u8), "0");
    assert_eq!(enc(&i8::MIN), "-128");
    assert_eq!(enc(&u16::MAX), "65535");
    assert_eq!(enc(&i32::MIN), "-2147483648");
    assert_eq!(enc(&u64::MAX), "18446744073709551615");
    assert_eq!(enc(&i128::MIN), "-170141183460469231731687303715884105728");
    assert_eq!(enc(&u128::MAX), "340282366920938463463374607431768211455");
    assert_eq!(enc(&7usize), "7");
    assert_eq!(enc(&-7isize), "-7");
}

#[test]
fn floats() {
    assert_eq!(enc(&1.5f64), "1.5");
    assert_eq!(enc(&1.0f64), "1");
    assert_eq!(enc(&0.1f64), "0.1");
    assert_eq!(enc(&0.1f32), "0.1");
    assert_eq!(enc(&0.0f64), "0");
    assert_eq!(enc(&-0.0f64), "-0");
    assert_eq!(enc(&-0.0f32), "-0");
    assert_eq!(enc(&f64::NAN), "NaN");
    assert_eq!(enc(&f32::NAN), "NaN");
    assert_eq!(enc(&f64::INFINITY), "inf");
    assert_eq!(enc(&f64::NEG_INFINITY), "-inf");
    assert_eq!(enc(&f32::NEG_INFINITY), "-inf");
    assert_eq!(enc(&-2.25f32), "-2.25");
    assert_ne!(enc(&0.1f64), enc(&(0.1f64 + f64::EPSILON)));
    assert_eq!(enc(&1e-7f64), "0.0000001");
}

#[test]
fn strings_are_escaped() {
    assert_eq!(enc(&"a:b"), "a%3Ab");
    assert_eq!(enc(&"é"), "%C3%A9");
    assert_eq!(enc(&"a b"), "a%20b");
    assert_eq!(enc(&"A-z_0.9"), "A-z_0.9");
    assert_eq!(enc(&"*"), "%2A");
    assert_eq!(enc(&"{x}"), "%7Bx%7D");
    assert_eq!(enc(&"\n"), "%0A");
    assert_eq!(enc(&"\0"), "%00");
    assert_eq!(enc(&"%"), "%25");
    assert_eq!(enc(&"%-"), "%25-");
    assert_eq!(enc(&'x'), "x");
    assert_eq!(enc(&':'), "%3A");
    assert_eq!(enc(&'€'), "%E2%82%AC");
    for special in ":,()[]{}=~!#% *\"'/\\?&".chars() {
        let s = enc(&special.to_string());
        assert!(s.starts_with('%') && s.len() == 3, "{special:?} -> {s}");
    }
}

#[test]
fn empty_string_marker() {
    assert_eq!(enc(&""), "%-");
    assert_eq!(enc(&String::new()), "%-");
    assert_eq!(enc(&("", "")), "%-:%-");
    assert_eq!(enc(&Bytes(b"")), "%-");
    assert_ne!(enc(&("", "a")), enc(&("a", "")));
}

#[test]
fn bytes_including_invalid_utf8() {
    assert_eq!(enc(&Bytes(b"ab")), "ab");
    assert_eq!(enc(&Bytes(&[0xff, 0xfe, b'a', 0])), "%FF%FEa%00");
    assert_ne!(enc(&Bytes(&[0xff])), enc(&Bytes(&[0xfe])));
}

#[test]
fn collect_str_is_escaped() {
    struct Shown(&'static str);
    impl Serialize for Shown {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self.0)
        }
    }
    assert_eq!(enc(&Shown("a:b")), "a%3Ab");
    assert_eq!(enc(&Shown("")), "%-");
    let ip: std::net::IpAddr = std::net::Ipv4Addr::new(10, 0, 0, 1).into();
    assert_eq!(enc(&ip), "10.0.0.1");
}

// --- option, unit -----------------------------------------------------

#[test]
fn options() {
    assert_eq!(enc(&None::<String>), "~");
    assert_eq!(enc(&Some("")), "%-");
    assert_eq!(enc(&Some("x")), "x");
    assert_eq!(enc(&Some(None::<u8>)), "!~");
    assert_eq!(enc(&Some(Some(None::<u8>))), "!!~");
    assert_eq!(enc(&Some(Some(Some(3u8)))), "3");
    assert_eq!(enc(&Some(Some("~"))), "%7E");
    assert_ne!(enc(&Some("")), enc(&None::<&str>));
    assert_ne!(enc(&Some(None::<u8>)), enc(&None::<Option<u8>>));
    assert_eq!(enc(&(None::<u8>, Some(None::<u8>))), "~:!~");
    assert_eq!(enc(&vec![Some(None::<u8>), None]), "[!~,~]");
}

#[test]
fn units() {
    assert_eq!(enc(&Unit), "()");
    assert_eq!(enc(&((), 1u8)), "():1");
    assert_eq!(enc(&Some(())), "()");
    assert_eq!(enc(&vec![(), ()]), "[(),()]");
}

// --- compounds --------------------------------------------------------

#[test]
fn sequences_and_tuples() {
    assert_eq!(enc(&vec!["a", "b"]), "[a,b]");
    assert_eq!(enc(&vec!["a,b"]), "[a%2Cb]");
    assert_ne!(enc(&vec!["a,b"]), enc(&vec!["a", "b"]));
    assert_eq!(enc(&Vec::<u8>::new()), "[]");
    assert_eq!(enc(&vec![""]), "[%-]");
    // Arrays serialize as tuples: joined at the top level, `(..)` below.
    assert_eq!(enc(&[1u8, 2, 3]), "1:2:3");
    assert_eq!(enc(&([1u8, 2, 3],)), "(1,2,3)");
    assert_eq!(enc(&&[1u8, 2, 3][..]), "[1,2,3]");
    assert_eq!(enc(&(vec![vec![1u8], vec![]],)), "[[1],[]]");
    assert_eq!(enc(&(1u8, (2u8, (3u8,)))), "1:(2,(3))");
}

#[test]
fn structs() {
    assert_eq!(enc(&Point { x: 1, y: -2 }), "(1,-2)");
    assert_eq!(enc(&Pair(1, "a b".into())), "(1,a%20b)");
    assert_eq!(enc(&(Point { x: 0, y: 0 }, "z")), "(0,0):z");
    assert_eq!(enc(&Newtype("n".into())), "n");
}

#[test]
fn skipped_fields_keep_their_slot() {
    let w = |b: Option<&str>, c: Option<&str>| WithSkips {
        a: 1,
        b: b.map(str::to_owned),
        c: c.map(str::to_owned),
        _d: 9,
    };
    assert_eq!(enc(&w(None, None)), "(1,,)");
    assert_eq!(enc(&w(Some("x"), None)), "(1,x,)");
    assert_eq!(enc(&w(None, Some("x"))), "(1,,x)");
    assert_eq!(enc(&w(Some("x"), Some("y"))), "(1,x,y)");
    assert_ne!(enc(&w(Some("x"), None)), enc(&w(None, Some("x"))));
}

#[test]
fn enums() {
    assert_eq!(enc(&Shape::Empty), "Empty");
    assert_eq!(enc(&Shape::Circle(1.5)), "Circle(1.5)");
    assert_eq!(enc(&Shape::Rect(2, 3)), "Rect(2,3)");
    assert_eq!(
        enc(&Shape::Poly {
            sides: 5,
            name: "pent".into()
        }),
        "Poly(5,pent)"
    );
    assert_eq!(enc(&Cabin::FirstClass), "first_class");
    assert_eq!(enc(&(Shape::Empty, Some(Shape::Empty))), "Empty:Empty");
    assert_eq!(enc(&Some(Some(Shape::Empty))), "Empty");
}

#[test]
fn maps_are_sorted() {
    let mut hm = HashMap::new();
    let mut bt = BTreeMap::new();
    for (k, v) in [("b", 2u32), ("a", 1), ("c:", 3), ("", 0)] {
        hm.insert(k.to_owned(), v);
        bt.insert(k.to_owned(), v);
    }
    assert_eq!(enc(&bt), "{%-=0,a=1,b=2,c%3A=3}");
    assert_eq!(enc(&hm), enc(&bt));

    // Many entries, so HashMap iteration order surely differs.
    let hm: HashMap<u32, Vec<u8>> = (0..200).map(|i| (i, vec![i as u8])).collect();
    let bt: BTreeMap<u32, Vec<u8>> = hm.clone().into_iter().collect();
    assert_eq!(enc(&hm), enc(&bt));
    let hm2: HashMap<u32, Vec<u8>> = bt.clone().into_iter().rev().collect();
    assert_eq!(enc(&hm), enc(&hm2));

    assert_eq!(enc(&BTreeMap::<u8, u8>::new()), "{}");
    let nested: BTreeMap<(u8, u8), Option<u8>> = [((1, 2), None), ((0, 1), Some(3))].into();
    assert_eq!(enc(&nested), "{(0,1)=3,(1,2)=~}");
}

#[test]
fn sets_are_sequences() {
    let bt: std::collections::BTreeSet<u8> = [3, 1, 2].into();
    assert_eq!(enc(&bt), "[1,2,3]");
}

// --- equivalences -----------------------------------------------------

#[test]
fn str_string_and_references_agree() {
    let owned = String::from("a:b");
    assert_eq!(enc(&"a:b"), enc(&owned));
    assert_eq!(
        enc(&("x", "y")),
        enc(&(String::from("x"), String::from("y")))
    );
    assert_eq!(enc(&("x", &owned)), enc(&("x", owned.clone())));
    let v = vec![1u8, 2];
    assert_eq!(enc(&&&v), enc(&v));
    assert_eq!(enc(&&5u32), enc(&5u32));
    assert_eq!(enc(&(&&5u32, &"s")), enc(&(5u32, "s")));
    assert_eq!(enc(&Box::new(7u8)), enc(&7u8));
}

#[test]
fn injectivity_examples() {
    assert_ne!(enc(&("a:b", "c")), enc(&("a", "b:c")));
    assert_ne!(enc(&Some("")), enc(&None::<&str>));
    assert_ne!(enc(&Some(None::<u8>)), enc(&None::<Option<u8>>));
    assert_ne!(enc(&vec!["a,b"]), enc(&vec!["a", "b"]));
    assert_ne!(enc(&(("a", "b"), "c")), enc(&("a", ("b", "c"))));
    assert_ne!(enc(&vec![vec!["a"], vec![]]), enc(&vec![vec![], vec!["a"]]));
    assert_ne!(enc(&("%", "")), enc(&("", "%")));
    assert_ne!(enc(&"~"), enc(&None::<&str>));
}

// --- length bound -----------------------------------------------------

fn is_hashed(s: &str) -> bool {
    s.len() == HASHED_PREFIX_LEN + 1 + 2 * HASH_BYTES
        && s.as_bytes().get(HASHED_PREFIX_LEN) == Some(&b'#')
        && s.get(HASHED_PREFIX_LEN + 1..).is_some_and(|h| {
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

#[test]
fn exactly_max_len_is_kept() {
    let s = "x".repeat(MAX_ARGS_LEN);
    assert_eq!(enc(&s), s);
    let s = "x".repeat(MAX_ARGS_LEN + 1);
    assert!(is_hashed(&enc(&s)));
}

#[test]
fn long_args_are_hashed() {
    let a = format!("{}A", "k".repeat(300));
    let b = format!("{}B", "k".repeat(300));
    let (ea, eb) = (enc(&a), enc(&b));
    assert!(is_hashed(&ea), "{ea}");
    assert!(is_hashed(&eb), "{eb}");
    assert!(ea.len() <= MAX_ARGS_LEN);
    assert!(ea.starts_with(&"k".repeat(64)));
    assert_ne!(ea, eb);

    let expected_hash = blake3::hash(a.as_bytes());
    assert!(ea.ends_with(&expected_hash.to_hex()[..32]));

    // Hashing applies to the args only, after the key prefix.
    let mut key = entry_key_prefix("p", "ns");
    assert!(write_args(&mut key, &(a.as_str(), 1u8)).is_ok());
    let args = key.strip_prefix("p:{ns}:").unwrap_or_default();
    assert!(is_hashed(args), "{args}");
    assert!(args.starts_with("kkkk"));
}

#[test]
fn one_megabyte_strings() {
    let big = "é:".repeat(1 << 19);
    assert!(big.len() >= 1 << 20);
    let e = enc(&big);
    assert!(is_hashed(&e));
    assert!(e.starts_with("%C3%A9%3A"));
    let mut other = big.clone();
    other.push('x');
    assert_ne!(enc(&other), e);
    assert!(is_hashed(&enc(&(
        "x".repeat(1 << 20),
        Bytes(&[0u8; 1 << 20])
    ))));
}

#[test]
fn output_is_ascii_and_bounded() {
    let samples = [
        enc(&"日本語:\u{1F600}\0\n\t"),
        enc(&("ü".repeat(500), vec![Some("é"), None])),
        enc(&Bytes(&(0..=255u8).collect::<Vec<_>>())),
    ];
    for s in samples {
        assert!(s.is_ascii(), "{s}");
        assert!(s.len() <= MAX_ARGS_LEN, "{s}");
    }
}

// --- errors -----------------------------------------------------------

#[test]
fn custom_errors_become_key_errors() {
    let err = encode_args(&("a", vec![Some(Failing)])).err();
    let err = err.unwrap_or_else(|| panic!("expected an error"));
    assert_eq!(err.message(), "refusing to serialize");
    assert_eq!(
        err.to_string(),
        "cannot build a cache key: refusing to serialize"
    );
    let as_dyn: &dyn std::error::Error = &err;
    assert!(as_dyn.source().is_none());

    let mut map = BTreeMap::new();
    map.insert(1u8, Failing);
    assert!(encode_args(&map).is_err());
    assert!(encode_args(&Some(Failing)).is_err());
}

// --- names and key layout ---------------------------------------------

#[test]
fn validate_name_accepts() {
    for name in ["a", "app", "my-app_2.v1", "A.B-C_d", &"x".repeat(64)] {
        assert_eq!(validate_name("prefix", name), Ok(()), "{name}");
    }
}

#[test]
fn validate_name_rejects() {
    let msg = |what, name: &str| match validate_name(what, name) {
        Err(e) => e.to_string(),
        Ok(()) => panic!("{name:?} accepted"),
    };
    let empty = msg("namespace", "");
    assert!(
        empty.contains("namespace") && empty.contains("empty"),
        "{empty}"
    );

    let long = msg("prefix", &"x".repeat(65));
    assert!(long.contains("65") && long.contains("64"), "{long}");

    for bad in ["a:b", "a b", "a*", "{a}", "é", "a\n", "a/b", "a%"] {
        let err = msg("prefix", bad);
        assert!(err.starts_with("invalid prefix"), "{err}");
        assert!(err.contains("allowed"), "{err}");
    }
    assert!(msg("prefix", "a:b").contains("':'"));
}

#[test]
fn integers_read_as_display_would_write_them() {
    for v in [
        0,
        1,
        9,
        10,
        99,
        100,
        12345,
        i64::MAX,
        i64::MIN,
        -1,
        -10,
        -987_654_321,
    ] {
        let mut out = String::new();
        push_i64(&mut out, v);
        assert_eq!(out, v.to_string());
    }
    for v in [0, 7, 10, 1_000_000, u64::MAX] {
        let mut out = String::new();
        push_u64(&mut out, v);
        assert_eq!(out, v.to_string());
    }
}

#[test]
fn paths_become_namespace_names() {
    use super::layout::namespace_name;
    assert_eq!(namespace_name("airport"), "airport");
    assert_eq!(
        namespace_name("flight_db::queries::count"),
        "flight_db.queries.count"
    );
    let long = format!("app::{}::Repo::by_id", "module".repeat(12));
    let name = namespace_name(&long);
    assert!(name.len() <= 64 && name.ends_with(".Repo.by_id"), "{name}");
    assert!(validate_name("namespace", &name).is_ok(), "{name}");
    let other_path = long.replace("by_id", "by_ie");
    let other = namespace_name(&other_path);
    assert_ne!(name, other, "one name per path");
    let odd = namespace_name("app::größe::count");
    assert!(validate_name("namespace", &odd).is_ok(), "{odd}");
    assert_eq!(namespace_name("bad name"), "bad name", "refused where used");
}

#[test]
fn key_layout() {
    assert_eq!(entry_key_prefix("app", "users"), "app:{users}:");
    assert_eq!(generation_key("app", "users"), "app:{users}:#gen");
}

// --- brute-force injectivity --------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> usize {
        usize::try_from(self.next() % n).unwrap_or(0)
    }
}

const PIECES: [&str; 16] = [
    "", ":", "%", "~", "!", ",", "(", ")", "-", "a", "%-", "[", "]", "=", "#", "%3A",
];

fn small_string(rng: &mut XorShift) -> String {
    let n = rng.below(4);
    (0..n)
        .map(|_| {
            PIECES
                .get(rng.below(PIECES.len() as u64))
                .copied()
                .unwrap_or("")
        })
        .collect()
}

type Sample = (String, Option<String>, Vec<String>);

fn sample(rng: &mut XorShift) -> Sample {
    let a = small_string(rng);
    let b = if rng.below(3) == 0 {
        None
    } else {
        Some(small_string(rng))
    };
    let c = (0..rng.below(4)).map(|_| small_string(rng)).collect();
    (a, b, c)
}

#[test]
fn brute_force_injectivity() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut values: HashSet<Sample> = HashSet::new();
    let mut keys: HashMap<String, Sample> = HashMap::new();
    for _ in 0..20_000 {
        let v = sample(&mut rng);
        let k = enc(&v);
        assert!(k.is_ascii() && k.len() <= MAX_ARGS_LEN, "{k}");
        if let Some(prev) = keys.get(&k) {
            assert_eq!(prev, &v, "collision on key {k}");
        }
        keys.insert(k, v.clone());
        values.insert(v);
    }
    assert!(values.len() > 5_000, "too few distinct samples");
    assert_eq!(keys.len(), values.len());
}

#[test]
fn brute_force_nested_options_and_tuples() {
    type Nested = (Option<Option<String>>, (String, Vec<Option<String>>));
    let mut rng = XorShift(42);
    let mut values: HashSet<Nested> = HashSet::new();
    let mut keys: HashSet<String> = HashSet::new();
    for _ in 0..10_000 {
        let oo = match rng.below(3) {
            0 => None,
            1 => Some(None),
            _ => Some(Some(small_string(&mut rng))),
        };
        let s = small_string(&mut rng);
        let v = (0..rng.below(3))
            .map(|_| (rng.below(2) == 0).then(|| small_string(&mut rng)))
            .collect();
        let value = (oo, (s, v));
        keys.insert(enc(&value));
        values.insert(value);
    }
    assert_eq!(keys.len(), values.len());
}

#[test]
fn fn_paths_keep_module_type_and_trait_and_drop_generics_and_closures() {
    use super::layout::fn_path;
    let cases = [
        ("app::users::count::__cache_aside_here", "app::users::count"),
        (
            "app::users::count::{{closure}}::{{closure}}",
            "app::users::count",
        ),
        (
            "app::repo::Repo<_>::by_id::{{closure}}::__cache_aside_here",
            "app::repo::Repo::by_id",
        ),
        (
            "<app::repo::Repo<u8, alloc::vec::Vec<u8>> as app::Named>::name::{{closure}}",
            "app::repo::Repo::Named::name",
        ),
        (
            "<app::Store as app::UserRepo>::get::{{closure}}",
            "app::Store::UserRepo::get",
        ),
        (
            "<app::Store as app::OrderRepo>::get::{{closure}}",
            "app::Store::OrderRepo::get",
        ),
        ("<app::A as app::Tr<u8>>::m::{{closure}}", "app::A::Tr::m"),
        (
            "<(app::A, app::B) as app::Tr>::m::{{closure}}",
            "(app::A, app::B)::Tr::m",
        ),
        ("app::Repo<fn() -> u8>::m::{{closure}}", "app::Repo::m"),
        ("app::W<u8>::gn<u16>::{{closure}}", "app::W::gn"),
        (
            "app::Wrapper<app::Inner<u8>>::get::__cache_aside_here",
            "app::Wrapper::get",
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(fn_path(raw), want, "{raw}");
    }
}
