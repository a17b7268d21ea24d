//! The serializer behind [`write_args`](super::write_args): the grammar of
//! the [module docs](super), one `serialize_*` method per serde data model
//! type, and the escaping of strings and bytes.

use core::fmt::{self, Display, Write as _};

use serde::Serialize;
use serde::ser::{self, Serializer};

use super::KeyError;

/// Pushes `v` in decimal, as `Display` would (without the formatting
/// machinery: keys are built on every call).
pub(super) fn push_u64(out: &mut String, mut v: u64) {
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
pub(super) fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

// ---------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------

fn is_safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Pushes `byte` as two hex digits, upper- or lowercase.
pub(super) fn push_hex(out: &mut String, byte: u8, case: HexCase) {
    out.push(hex_digit(byte >> 4, case));
    out.push(hex_digit(byte & 0x0f, case));
}

#[derive(Clone, Copy)]
pub(super) enum HexCase {
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
pub(super) struct Encoder<'a> {
    out: &'a mut String,
    /// True only for the value passed to `write_args` (and newtype structs
    /// around it): a tuple there is joined with `:`, a unit is empty.
    top: bool,
}

impl Encoder<'_> {
    /// The encoder of the whole argument list.
    pub(super) fn top(out: &mut String) -> Encoder<'_> {
        Encoder { out, top: true }
    }

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
pub(super) struct Compound<'a> {
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
pub(super) struct MapEncoder<'a> {
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
