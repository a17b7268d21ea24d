//! Cache keys: `{prefix}:{ns}:v{version}:{args}`.
//!
//! The `{args}` part is produced by a small [`serde::Serializer`] of our own
//! that writes a readable, ASCII-only, injective and stable text form of the
//! function arguments. "Injective" means: two *different* values of the *same*
//! Rust type never encode to the same text. "Stable" means: the text depends
//! only on the value, never on the process, the build, the platform or the
//! compiler (no `std::hash`, no `Debug` output, no pointers, no map iteration
//! order).
//!
//! # Grammar
//!
//! | value | encoding |
//! |---|---|
//! | top-level tuple `(a, b, c)` | `a:b:c` (elements joined with `:`) |
//! | top-level non-tuple `x` | `x` (one element) |
//! | top-level `()` | empty |
//! | string, char, bytes | bytes in `[A-Za-z0-9_.-]` as is, every other byte as `%XX` (uppercase hex) |
//! | empty string / empty bytes | `%-` (escapes are always `%` + two hex digits, so `%-` is unambiguous) |
//! | integers (all widths) | decimal, e.g. `42`, `-7` |
//! | `bool` | `true` / `false` |
//! | `f32` / `f64` | shortest round-trip decimal (`1.5`, `1`, `-0`), `NaN`, `inf`, `-inf` |
//! | `()`, unit struct (not at top level) | `()` |
//! | `None` | `~` |
//! | `Some(x)` | `x`, or `!x` when `x` itself starts with `~` or `!` (`Some(None)` is `!~`) |
//! | sequence | `[a,b,c]` |
//! | nested tuple, tuple struct, struct | `(a,b)` (field values in declaration order, no names) |
//! | struct field skipped by `skip_serializing_if` | an empty slot: `(a,,c)` |
//! | map | `{k=v,k2=v2}`, entries sorted by their encoded bytes |
//! | newtype struct | the inner value (transparent) |
//! | unit variant | `Name` |
//! | newtype / tuple / struct variant | `Name(x)` / `Name(a,b)` / `Name(a,b)` |
//!
//! Strings never produce any of `: , ( ) [ ] { } = ~ ! # %` unescaped, and no
//! value except the top-level `()` encodes to the empty text, which is what
//! makes the whole encoding decodable, hence injective.
//!
//! If the encoding is longer than [`MAX_ARGS_LEN`] bytes, it is replaced by its
//! first 64 bytes, `#`, and 32 lowercase hex characters: the first 16 bytes of
//! the BLAKE3 hash of the *full* encoding. `#` never occurs in an unhashed
//! encoding, so the two forms cannot collide.
//!
//! # Limits of injectivity
//!
//! The encoding is injective as long as the type's `Serialize` impl is: a
//! `#[serde(untagged)]` enum whose variants `A(String)` and `B(u32)` serialize
//! `"42"` and `42` identically gives them the same key, and every `NaN` encodes
//! as `NaN`.

use core::fmt::{self, Display, Write as _};

use serde::Serialize;
use serde::ser::{self, Serializer};

/// The longest `{args}` part, in bytes, that is written as is.
///
/// Longer encodings are shortened to 97 bytes: the first 64 bytes of the
/// encoding, `#`, and 32 hex characters of a BLAKE3 hash of the whole encoding.
///
/// ```
/// use cache_aside_runtime::key::{MAX_ARGS_LEN, encode_args};
///
/// let long = "x".repeat(1000);
/// assert!(encode_args(&long).unwrap().len() <= MAX_ARGS_LEN);
/// ```
pub const MAX_ARGS_LEN: usize = 128;

/// How many bytes of a too-long encoding are kept in front of the hash.
const HASHED_PREFIX_LEN: usize = 64;

/// How many bytes of the BLAKE3 hash are written (as hex) in a hashed encoding.
const HASH_BYTES: usize = 16;

/// The longest prefix or namespace name accepted by [`validate_name`].
const MAX_NAME_LEN: usize = 64;

/// The arguments of a cached call could not be turned into a cache key.
///
/// This happens only when the arguments' `Serialize` impl itself returns an
/// error (or a `Display` impl used through `collect_str` fails).
///
/// ```
/// use cache_aside_runtime::key::KeyError;
/// use serde::ser::Error as _;
///
/// let err = KeyError::custom("no");
/// assert_eq!(err.to_string(), "cannot build a cache key: no");
/// assert_eq!(err.message(), "no");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    message: String,
}

impl KeyError {
    /// The reason reported by the `Serialize` impl (without the
    /// "cannot build a cache key" preamble of the `Display` output).
    ///
    /// ```
    /// use cache_aside_runtime::key::KeyError;
    /// use serde::ser::Error as _;
    ///
    /// assert_eq!(KeyError::custom("bad input").message(), "bad input");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot build a cache key: {}", self.message)
    }
}

impl std::error::Error for KeyError {}

impl ser::Error for KeyError {
    fn custom<T: Display>(msg: T) -> Self {
        KeyError {
            message: msg.to_string(),
        }
    }
}

/// Encodes a key argument tuple or value (see the [module docs](self) for the
/// grammar), including the length bound of [`MAX_ARGS_LEN`].
///
/// ```
/// use cache_aside_runtime::key::encode_args;
///
/// assert_eq!(encode_args(&("FRA", "JFK")).unwrap(), "FRA:JFK");
/// assert_eq!(encode_args(&42u32).unwrap(), "42");
/// assert_eq!(encode_args(&("a:b", Some(""), None::<u8>)).unwrap(), "a%3Ab:%-:~");
/// assert_eq!(encode_args(&()).unwrap(), "");
/// ```
pub fn encode_args<K: Serialize + ?Sized>(args: &K) -> Result<String, KeyError> {
    let mut out = String::new();
    write_args(&mut out, args)?;
    Ok(out)
}

/// Appends the encoded args to `out`, exactly as [`encode_args`] would return
/// them. On error, `out` is left as it was.
///
/// ```
/// use cache_aside_runtime::key::{entry_key_prefix, write_args};
///
/// let mut key = entry_key_prefix("app", "flights", 3);
/// write_args(&mut key, &("FRA", "JFK")).unwrap();
/// assert_eq!(key, "app:{flights}:v3:FRA:JFK");
/// ```
pub fn write_args<K: Serialize + ?Sized>(out: &mut String, args: &K) -> Result<(), KeyError> {
    let start = out.len();
    let result = args.serialize(&mut Encoder {
        out: &mut *out,
        top: true,
    });
    if let Err(err) = result {
        out.truncate(start);
        return Err(err);
    }
    if out.len().saturating_sub(start) > MAX_ARGS_LEN
        && let Err(err) = shorten(out, start)
    {
        out.truncate(start);
        return Err(err);
    }
    Ok(())
}

/// Replaces the over-long encoding `out[start..]` with its hashed form.
fn shorten(out: &mut String, start: usize) -> Result<(), KeyError> {
    let hash = match out.get(start..) {
        Some(encoded) => blake3::hash(encoded.as_bytes()),
        None => return Err(internal_error()),
    };
    let cut = start.saturating_add(HASHED_PREFIX_LEN);
    // Everything after `start` is ASCII, so this always holds; checked anyway.
    if !out.is_char_boundary(cut) {
        return Err(internal_error());
    }
    out.truncate(cut);
    out.push('#');
    for &byte in hash.as_bytes().iter().take(HASH_BYTES) {
        push_hex(out, byte, HexCase::Lower);
    }
    Ok(())
}

fn internal_error() -> KeyError {
    KeyError {
        message: "internal error: encoded arguments are not ASCII".to_owned(),
    }
}

/// Checks a prefix or namespace name: non-empty, at most 64 bytes, and only
/// `A-Z`, `a-z`, `0-9`, `_`, `.`, `-`. `kind` names the checked thing in the
/// error message (e.g. `"prefix"` or `"namespace"`).
///
/// ```
/// use cache_aside_runtime::key::validate_name;
///
/// assert!(validate_name("namespace", "flights.v2").is_ok());
/// let err = validate_name("prefix", "my app").unwrap_err();
/// assert!(err.contains("' '"));
/// ```
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    const ALLOWED: &str = "only ASCII letters, digits, '_', '.' and '-' are allowed";
    if name.is_empty() {
        return Err(format!(
            "{kind} must not be empty: use 1 to {MAX_NAME_LEN} characters; {ALLOWED}"
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{kind} is {} bytes long, at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(format!(
            "{kind} {name:?} contains {:?}, which is not allowed; {ALLOWED}",
            bad
        ));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// `"{prefix}:{{ns}}:v{version}:"` — the part of an entry key before the args.
///
/// The namespace is a Redis Cluster hash tag: every key of a namespace (its
/// entries and its generation) lives in one slot, so the multi-key reads
/// and scripts never cross slots. Namespace names cannot contain braces and
/// the prefix cannot either, so no argument can move a key to another slot.
///
/// ```
/// use cache_aside_runtime::key::entry_key_prefix;
///
/// assert_eq!(entry_key_prefix("app", "users", 7), "app:{users}:v7:");
/// ```
pub fn entry_key_prefix(prefix: &str, ns: &str, version: u32) -> String {
    // 10 digits for u32::MAX, "v", three ':'; leave room for short args too.
    let mut key = String::with_capacity(
        prefix
            .len()
            .saturating_add(ns.len())
            .saturating_add(14 + 32),
    );
    key.push_str(prefix);
    key.push_str(":{");
    key.push_str(ns);
    key.push_str("}:v");
    push_u64(&mut key, u64::from(version));
    key.push(':');
    key
}

/// Pushes `v` in decimal, as `Display` would (without the formatting
/// machinery: keys are built on every call).
fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &d in &buf[i..] {
        out.push(char::from(d));
    }
}

/// Pushes `v` in decimal, as `Display` would.
fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

/// `"{prefix}:{{ns}}:gen"` — the key holding the namespace's generation (in
/// the same hash slot as the namespace's entries).
///
/// ```
/// use cache_aside_runtime::key::generation_key;
///
/// assert_eq!(generation_key("app", "users"), "app:{users}:gen");
/// ```
pub fn generation_key(prefix: &str, ns: &str) -> String {
    let mut key = String::with_capacity(prefix.len().saturating_add(ns.len()).saturating_add(7));
    key.push_str(prefix);
    key.push_str(":{");
    key.push_str(ns);
    key.push_str("}:gen");
    key
}

// ---------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------

fn is_safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Pushes `byte` as two hex digits, upper- or lowercase.
fn push_hex(out: &mut String, byte: u8, case: HexCase) {
    out.push(hex_digit(byte >> 4, case));
    out.push(hex_digit(byte & 0x0f, case));
}

#[derive(Clone, Copy)]
enum HexCase {
    Upper,
    Lower,
}

/// The hex digit of a nibble (`0..16`).
fn hex_digit(nibble: u8, case: HexCase) -> char {
    let letters = match case {
        HexCase::Upper => b'A',
        HexCase::Lower => b'a',
    };
    char::from(match nibble {
        0..=9 => b'0'.saturating_add(nibble),
        _ => letters.saturating_add((nibble & 0x0f).saturating_sub(10)),
    })
}

/// Escapes `bytes` into `out` without the empty-string marker.
fn escape_into(out: &mut String, bytes: &[u8]) {
    if bytes.iter().all(|&b| is_safe_byte(b)) {
        // All-ASCII, so valid UTF-8; the fallback below is never taken.
        if let Ok(s) = core::str::from_utf8(bytes) {
            out.push_str(s);
            return;
        }
    }
    out.reserve(bytes.len());
    for &b in bytes {
        if is_safe_byte(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            push_hex(out, b, HexCase::Upper);
        }
    }
}

/// Escapes a string or byte string, writing `%-` for the empty one.
fn escape_bytes(out: &mut String, bytes: &[u8]) {
    if bytes.is_empty() {
        out.push_str("%-");
    } else {
        escape_into(out, bytes);
    }
}

/// A `fmt::Write` that escapes everything written to it (for `collect_str`).
struct EscapingWriter<'a> {
    out: &'a mut String,
}

impl fmt::Write for EscapingWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.out, s.as_bytes());
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The serializer
// ---------------------------------------------------------------------------

/// Writes the encoding of one value into `out`.
struct Encoder<'a> {
    out: &'a mut String,
    /// True only for the value passed to `write_args` (and newtype structs
    /// around it): a tuple there is joined with `:`, a unit is empty.
    top: bool,
}

impl Encoder<'_> {
    fn nested(out: &mut String) -> Encoder<'_> {
        Encoder { out, top: false }
    }

    fn display<T: Display>(&mut self, v: T) -> Result<(), KeyError> {
        // Writing into a String only fails if `T`'s Display impl fails.
        write!(self.out, "{v}").map_err(|_| <KeyError as ser::Error>::custom("formatting failed"))
    }

    fn float(&mut self, v: f64, display: impl Display) -> Result<(), KeyError> {
        if v.is_nan() {
            self.out.push_str("NaN");
        } else if v.is_infinite() {
            self.out
                .push_str(if v.is_sign_negative() { "-inf" } else { "inf" });
        } else if v == 0.0 {
            self.out
                .push_str(if v.is_sign_negative() { "-0" } else { "0" });
        } else {
            self.display(display)?;
        }
        Ok(())
    }

    fn compound(&mut self, open: &'static str, close: &'static str) -> Compound<'_> {
        self.out.push_str(open);
        Compound {
            out: &mut *self.out,
            first: true,
            sep: ',',
            close,
        }
    }
}

/// Writes the elements of a sequence, tuple, struct or variant.
struct Compound<'a> {
    out: &'a mut String,
    first: bool,
    sep: char,
    close: &'static str,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        self.separate();
        value.serialize(&mut Encoder::nested(self.out))
    }

    fn separate(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.out.push(self.sep);
        }
    }

    /// A field left out by `skip_serializing_if`: an empty slot, which no
    /// value produces, so `(a,)` and `(,a)` stay distinct.
    fn skipped(&mut self) {
        self.separate();
    }

    fn finish(self) {
        self.out.push_str(self.close);
    }
}

/// Collects map entries, then writes them sorted.
struct MapEncoder<'a> {
    out: &'a mut String,
    entries: Vec<String>,
    current: Option<String>,
}

impl<'a, 'b> Serializer for &'b mut Encoder<'a> {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = Compound<'b>;
    type SerializeTuple = Compound<'b>;
    type SerializeTupleStruct = Compound<'b>;
    type SerializeTupleVariant = Compound<'b>;
    type SerializeMap = MapEncoder<'b>;
    type SerializeStruct = Compound<'b>;
    type SerializeStructVariant = Compound<'b>;

    fn serialize_bool(self, v: bool) -> Result<(), KeyError> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), KeyError> {
        push_i64(self.out, i64::from(v));
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<(), KeyError> {
        push_i64(self.out, i64::from(v));
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<(), KeyError> {
        push_i64(self.out, i64::from(v));
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<(), KeyError> {
        push_i64(self.out, v);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), KeyError> {
        self.display(v)
    }

    fn serialize_u8(self, v: u8) -> Result<(), KeyError> {
        push_u64(self.out, u64::from(v));
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<(), KeyError> {
        push_u64(self.out, u64::from(v));
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<(), KeyError> {
        push_u64(self.out, u64::from(v));
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<(), KeyError> {
        push_u64(self.out, v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), KeyError> {
        self.display(v)
    }

    fn serialize_f32(self, v: f32) -> Result<(), KeyError> {
        self.float(f64::from(v), v)
    }

    fn serialize_f64(self, v: f64) -> Result<(), KeyError> {
        self.float(v, v)
    }

    fn serialize_char(self, v: char) -> Result<(), KeyError> {
        let mut buf = [0u8; 4];
        escape_bytes(self.out, v.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), KeyError> {
        escape_bytes(self.out, v.as_bytes());
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), KeyError> {
        escape_bytes(self.out, v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), KeyError> {
        self.out.push('~');
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), KeyError> {
        let start = self.out.len();
        value.serialize(&mut Encoder::nested(self.out))?;
        // Only a nested Option (a `~`/`!` chain, always short) needs the
        // marker, so this insert never moves much.
        if matches!(self.out.as_bytes().get(start), Some(b'~') | Some(b'!')) {
            self.out.insert(start, '!');
        }
        Ok(())
    }

    fn serialize_unit(self) -> Result<(), KeyError> {
        if !self.top {
            self.out.push_str("()");
        }
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), KeyError> {
        self.out.push_str("()");
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), KeyError> {
        escape_bytes(self.out, variant.as_bytes());
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        escape_bytes(self.out, variant.as_bytes());
        self.out.push('(');
        value.serialize(&mut Encoder::nested(self.out))?;
        self.out.push(')');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'b>, KeyError> {
        Ok(self.compound("[", "]"))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Compound<'b>, KeyError> {
        if self.top {
            Ok(Compound {
                out: &mut *self.out,
                first: true,
                sep: ':',
                close: "",
            })
        } else {
            Ok(self.compound("(", ")"))
        }
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'b>, KeyError> {
        Ok(self.compound("(", ")"))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'b>, KeyError> {
        escape_bytes(self.out, variant.as_bytes());
        Ok(self.compound("(", ")"))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<MapEncoder<'b>, KeyError> {
        Ok(MapEncoder {
            out: &mut *self.out,
            entries: Vec::with_capacity(len.unwrap_or(0).min(1024)),
            current: None,
        })
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Compound<'b>, KeyError> {
        Ok(self.compound("(", ")"))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'b>, KeyError> {
        escape_bytes(self.out, variant.as_bytes());
        Ok(self.compound("(", ")"))
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<(), KeyError> {
        let start = self.out.len();
        write!(EscapingWriter { out: self.out }, "{value}")
            .map_err(|_| <KeyError as ser::Error>::custom("a Display impl failed"))?;
        if self.out.len() == start {
            self.out.push_str("%-");
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = KeyError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        self.element(value)
    }

    fn end(self) -> Result<(), KeyError> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = KeyError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        self.element(value)
    }

    fn end(self) -> Result<(), KeyError> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = KeyError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        self.element(value)
    }

    fn end(self) -> Result<(), KeyError> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = KeyError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        self.element(value)
    }

    fn end(self) -> Result<(), KeyError> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = KeyError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        self.element(value)
    }

    fn skip_field(&mut self, _key: &'static str) -> Result<(), KeyError> {
        self.skipped();
        Ok(())
    }

    fn end(self) -> Result<(), KeyError> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = KeyError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        self.element(value)
    }

    fn skip_field(&mut self, _key: &'static str) -> Result<(), KeyError> {
        self.skipped();
        Ok(())
    }

    fn end(self) -> Result<(), KeyError> {
        self.finish();
        Ok(())
    }
}

impl ser::SerializeMap for MapEncoder<'_> {
    type Ok = ();
    type Error = KeyError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), KeyError> {
        let mut entry = String::new();
        key.serialize(&mut Encoder::nested(&mut entry))?;
        entry.push('=');
        self.current = Some(entry);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        let Some(mut entry) = self.current.take() else {
            return Err(<KeyError as ser::Error>::custom(
                "map value serialized before its key",
            ));
        };
        value.serialize(&mut Encoder::nested(&mut entry))?;
        self.entries.push(entry);
        Ok(())
    }

    fn end(mut self) -> Result<(), KeyError> {
        if self.current.is_some() {
            return Err(<KeyError as ser::Error>::custom(
                "map key serialized without a value",
            ));
        }
        self.entries.sort_unstable();
        self.out.push('{');
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(entry);
        }
        self.out.push('}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
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
        let mut key = entry_key_prefix("p", "ns", 1);
        assert!(write_args(&mut key, &("a", 1u8)).is_ok());
        assert_eq!(key, "p:{ns}:v1:a:1");

        let mut key = entry_key_prefix("p", "ns", 1);
        assert!(write_args(&mut key, &("a", Failing)).is_err());
        assert_eq!(key, "p:{ns}:v1:");
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
        let mut key = entry_key_prefix("p", "ns", 2);
        assert!(write_args(&mut key, &(a.as_str(), 1u8)).is_ok());
        let args = key.strip_prefix("p:{ns}:v2:").unwrap_or_default();
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
        let empty = validate_name("namespace", "").unwrap_err();
        assert!(
            empty.contains("namespace") && empty.contains("empty"),
            "{empty}"
        );

        let long = validate_name("prefix", &"x".repeat(65)).unwrap_err();
        assert!(long.contains("65") && long.contains("64"), "{long}");

        for bad in ["a:b", "a b", "a*", "{a}", "é", "a\n", "a/b", "a%"] {
            let err = validate_name("prefix", bad).unwrap_err();
            assert!(err.starts_with("prefix"), "{err}");
            assert!(err.contains("allowed"), "{err}");
        }
        assert!(validate_name("prefix", "a:b").unwrap_err().contains("':'"));
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
    fn key_layout() {
        assert_eq!(entry_key_prefix("app", "users", 0), "app:{users}:v0:");
        assert_eq!(
            entry_key_prefix("app", "users", u32::MAX),
            "app:{users}:v4294967295:"
        );
        assert_eq!(generation_key("app", "users"), "app:{users}:gen");
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
}
