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

use core::fmt::Display;

use serde::Serialize;
use serde::ser;

use encoder::{Encoder, HexCase, push_hex};

mod encoder;
pub(crate) mod layout;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

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
pub(crate) const HASHED_PREFIX_LEN: usize = 64;

/// How many bytes of the BLAKE3 hash are written (as hex) in a hashed encoding.
pub(crate) const HASH_BYTES: usize = 16;

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build a cache key: {message}")]
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
pub(crate) fn write_args<K: Serialize + ?Sized>(
    out: &mut String,
    args: &K,
) -> Result<(), KeyError> {
    let start = out.len();
    let result = args.serialize(&mut Encoder::top(out));
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

/// Appends the full encoding of `value`, without the length bound (for
/// fingerprints, which are hashed whole).
pub(crate) fn write_unbounded<K: Serialize + ?Sized>(
    out: &mut String,
    value: &K,
) -> Result<(), KeyError> {
    value.serialize(&mut Encoder::top(out))
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
