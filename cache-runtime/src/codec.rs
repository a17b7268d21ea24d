//! Value codecs: how a cached value becomes the bytes stored in Redis.
//!
//! Three built-in codecs, each behind a cargo feature of the `cache-aside` crate:
//!
//! | codec | feature | notes |
//! |---|---|---|
//! | [`Postcard`] | `postcard` (default) | compact, fastest decode on the example's types (see BENCHMARKS.md) |
//! | [`Bincode`] | `bincode` | bincode 1.3.3; upstream considers it complete and has stopped development (RUSTSEC-2025-0141) |
//! | [`Json`] | `json` | readable with `redis-cli GET`, larger and slower |
//!
//! The codec is chosen on the builder with [`CacheBuilder::codec`](crate::CacheBuilder::codec).
//! The set is closed ([`Codec`] is sealed): the hit path dispatches over a small
//! enum instead of a boxed trait object, and every codec a cache can use is
//! covered by the same test suite.
//!
//! None of these formats is self-describing enough to notice every change of a
//! type's shape: bump `version` in `#[cached(version = N)]` when the return
//! type changes. A value that fails to decode is a miss, is counted in
//! [`Counts::decode_errors`](crate::Counts::decode_errors) and is overwritten.
//!
//! ## Compression
//!
//! Large values can be stored LZ4-compressed ([`CacheBuilder::compress_above`](crate::CacheBuilder::compress_above),
//! `#[cached(compress)]`): the codec's bytes, compressed with
//! [lz4_flex](https://docs.rs/lz4_flex) (pure, safe Rust; the LZ4 block
//! format with the plain length in front). Whether an entry's payload is
//! compressed is a flag in the entry's header, not a setting: a reader
//! decodes both, whatever it would write.

use serde::{Serialize, de::DeserializeOwned};
use std::fmt;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone)]
pub struct CodecError {
    codec: &'static str,
    message: String,
}

impl CodecError {
    fn new(codec: &'static str, err: impl fmt::Display) -> Self {
        Self {
            codec,
            message: err.to_string(),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} codec: {}", self.codec, self.message)
    }
}

impl std::error::Error for CodecError {}

/// A `Vec<u8>` as a `#[cached]` or `#[cache_put]` fn stores it: through
/// the codec's bytes form (`serialize_bytes`: postcard and bincode write the
/// length and copy the bytes) instead of serde's sequence of `u8`s, which
/// every codec encodes and decodes one element at a time. The generated code
/// wraps a `Vec<u8>` value in it (see BENCHMARKS.md, "Large values").
///
/// Its entries are not those of a `Vec<u8>` stored as a sequence (the
/// by-hand [`Namespace`](crate::Namespace) API, a generic fn): their
/// schemas differ, so each reads the other's entries as misses, never as
/// wrong bytes. (`bytes::Bytes`, with its `serde` feature, already
/// serializes as bytes.)
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBytes(pub Vec<u8>);

impl Serialize for RawBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RawBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<RawBytes, E> {
                Ok(RawBytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<RawBytes, E> {
                Ok(RawBytes(v))
            }
            // JSON writes bytes as an array of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawBytes, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(RawBytes(v))
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

/// The threshold `#[cached(compress)]` uses on a cache built without
/// [`CacheBuilder::compress_above`](crate::CacheBuilder::compress_above): encodings of at least 1 KiB are compressed.
pub const DEFAULT_COMPRESS_ABOVE: usize = 1024;

/// LZ4 compresses at most about 255:1, so no entry that was stored under a
/// limit of `max` bytes decompresses to more than this: a larger length in
/// front of a payload is corruption, refused before anything is allocated.
const LZ4_MAX_RATIO: usize = 256;

/// `plain`, LZ4-compressed with its length in front (4 bytes, little
/// endian); `None` when that would not be smaller, or `plain` does not fit
/// a `u32` length.
pub(crate) fn compress(plain: &[u8]) -> Option<Vec<u8>> {
    u32::try_from(plain.len()).ok()?;
    let packed = lz4_flex::block::compress_prepend_size(plain);
    (packed.len() < plain.len()).then_some(packed)
}

/// The bytes [`compress`] packed; an error for a length over
/// `max_stored * 256`, for bytes that do not decompress, or for a length
/// that does not match.
pub(crate) fn decompress(packed: &[u8], max_stored: usize) -> Result<Vec<u8>, CodecError> {
    const NAME: &str = "lz4";
    let Some((len, body)) = packed.split_first_chunk::<4>() else {
        return Err(CodecError::new(NAME, "no length"));
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > max_stored.saturating_mul(LZ4_MAX_RATIO) {
        return Err(CodecError::new(
            NAME,
            format_args!("length {len} too large"),
        ));
    }
    let plain = lz4_flex::block::decompress(body, len).map_err(|e| CodecError::new(NAME, e))?;
    if plain.len() != len {
        return Err(CodecError::new(
            NAME,
            format_args!("{} bytes, not {len}", plain.len()),
        ));
    }
    Ok(plain)
}

mod sealed {
    pub trait Sealed {}
}

/// A serialization format for cached values. Implemented by [`Postcard`],
/// [`Bincode`] and [`Json`] (each behind its feature); sealed.
///
/// ```
/// # #[cfg(feature = "postcard")] {
/// use cache_aside_runtime::codec::{Codec, Postcard};
///
/// let mut bytes = Vec::new();
/// Postcard::encode(&("FRA", 1234_i64), &mut bytes).unwrap();
/// let back: (String, i64) = Postcard::decode(&bytes).unwrap();
/// assert_eq!(back, ("FRA".to_string(), 1234));
/// # }
/// ```
pub trait Codec: sealed::Sealed + Copy + Send + Sync + fmt::Debug + 'static {
    /// Short name used in logs and stats.
    const NAME: &'static str;
    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;
    /// Decodes a whole value; trailing bytes are an error.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
    #[doc(hidden)]
    fn kind() -> CodecKind;
}

/// The codec a cache was built with (see [`Codec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecKind {
    /// [`Postcard`]
    #[cfg(feature = "postcard")]
    Postcard,
    /// [`Bincode`]
    #[cfg(feature = "bincode")]
    Bincode,
    /// [`Json`]
    #[cfg(feature = "json")]
    Json,
}

#[cfg(not(any(feature = "postcard", feature = "bincode", feature = "json")))]
compile_error!(
    "cache-aside needs a codec: enable one of the features `postcard` (default), `bincode`, `json`"
);

impl Default for CodecKind {
    #[allow(unreachable_code)]
    fn default() -> Self {
        #[cfg(feature = "postcard")]
        return CodecKind::Postcard;
        #[cfg(feature = "bincode")]
        return CodecKind::Bincode;
        #[cfg(feature = "json")]
        return CodecKind::Json;
    }
}

impl CodecKind {
    /// The codec's short name.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "postcard")]
            CodecKind::Postcard => Postcard::NAME,
            #[cfg(feature = "bincode")]
            CodecKind::Bincode => Bincode::NAME,
            #[cfg(feature = "json")]
            CodecKind::Json => Json::NAME,
        }
    }

    #[inline]
    pub(crate) fn encode<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match self {
            #[cfg(feature = "postcard")]
            CodecKind::Postcard => Postcard::encode(value, out),
            #[cfg(feature = "bincode")]
            CodecKind::Bincode => Bincode::encode(value, out),
            #[cfg(feature = "json")]
            CodecKind::Json => Json::encode(value, out),
        }
    }

    #[inline]
    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            #[cfg(feature = "postcard")]
            CodecKind::Postcard => Postcard::decode(bytes),
            #[cfg(feature = "bincode")]
            CodecKind::Bincode => Bincode::decode(bytes),
            #[cfg(feature = "json")]
            CodecKind::Json => Json::decode(bytes),
        }
    }
}

/// [postcard](https://docs.rs/postcard) 1.x: compact varint encoding; the default.
#[cfg(feature = "postcard")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

#[cfg(feature = "postcard")]
impl sealed::Sealed for Postcard {}

#[cfg(feature = "postcard")]
impl Codec for Postcard {
    const NAME: &'static str = "postcard";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let buf = std::mem::take(out);
        *out = postcard::to_extend(value, buf).map_err(|e| CodecError::new(Self::NAME, e))?;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| CodecError::new(Self::NAME, e))?;
        if rest.is_empty() {
            Ok(value)
        } else {
            Err(CodecError::new(
                Self::NAME,
                format_args!("{} trailing bytes", rest.len()),
            ))
        }
    }

    fn kind() -> CodecKind {
        CodecKind::Postcard
    }
}

/// [bincode](https://docs.rs/bincode/1.3.3) 1.3.3 with its default options.
#[cfg(feature = "bincode")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

#[cfg(feature = "bincode")]
impl sealed::Sealed for Bincode {}

#[cfg(feature = "bincode")]
impl Codec for Bincode {
    const NAME: &'static str = "bincode";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        bincode::serialize_into(out, value).map_err(|e| CodecError::new(Self::NAME, e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        use bincode::Options;
        // The same options as `bincode::deserialize`, but trailing bytes are rejected.
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .reject_trailing_bytes()
            .deserialize(bytes)
            .map_err(|e| CodecError::new(Self::NAME, e))
    }

    fn kind() -> CodecKind {
        CodecKind::Bincode
    }
}

/// JSON via [serde_json](https://docs.rs/serde_json): readable in `redis-cli`.
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl sealed::Sealed for Json {}

#[cfg(feature = "json")]
impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, value).map_err(|e| CodecError::new(Self::NAME, e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::new(Self::NAME, e))
    }

    fn kind() -> CodecKind {
        CodecKind::Json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Flight {
        id: i64,
        airline: String,
        from: String,
        to: String,
        seats: Option<u16>,
    }

    fn sample() -> Flight {
        Flight {
            id: 7,
            airline: "LH".into(),
            from: "FRA".into(),
            to: "JFK".into(),
            seats: Some(180),
        }
    }

    fn all() -> Vec<CodecKind> {
        vec![
            #[cfg(feature = "postcard")]
            CodecKind::Postcard,
            #[cfg(feature = "bincode")]
            CodecKind::Bincode,
            #[cfg(feature = "json")]
            CodecKind::Json,
        ]
    }

    #[test]
    fn every_codec_round_trips_and_rejects_garbage() {
        for codec in all() {
            let mut out = vec![];
            codec.encode(&sample(), &mut out).unwrap();
            assert_eq!(codec.decode::<Flight>(&out).unwrap(), sample(), "{codec:?}");
            // Trailing bytes and truncation are errors, not a silently wrong value.
            let mut longer = out.clone();
            longer.push(0);
            assert!(
                codec.decode::<Flight>(&longer).is_err(),
                "{codec:?} trailing"
            );
            assert!(
                codec.decode::<Flight>(&out[..out.len() - 2]).is_err(),
                "{codec:?} truncated"
            );
            assert!(codec.decode::<Flight>(b"\xff\xfe").is_err(), "{codec:?}");
        }
    }

    #[test]
    fn compression_round_trips_and_refuses_what_it_did_not_write() {
        let plain = "FRA-JFK LH 180 seats; ".repeat(200).into_bytes();
        let packed = compress(&plain).unwrap();
        assert!(packed.len() * 4 < plain.len(), "{}", packed.len());
        assert_eq!(decompress(&packed, plain.len()).unwrap(), plain);
        // Incompressible or tiny: not packed.
        assert_eq!(compress(b"ab"), None);
        // A length past the bound is refused before allocating.
        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decompress(&huge, 1024).is_err());
        // A wrong length, a truncated body, nothing at all: errors, not panics.
        let mut off = packed.clone();
        off[..4].copy_from_slice(&(plain.len() as u32 + 1).to_le_bytes());
        assert!(decompress(&off, plain.len()).is_err());
        assert!(decompress(&packed[..packed.len() / 2], plain.len()).is_err());
        assert!(decompress(b"\x01", 10).is_err());
    }

    #[test]
    fn raw_bytes_round_trip_in_every_codec() {
        let blob = RawBytes((0..=255u8).cycle().take(10_000).collect());
        for codec in all() {
            let mut out = vec![];
            codec.encode(&blob, &mut out).unwrap();
            assert_eq!(codec.decode::<RawBytes>(&out).unwrap(), blob, "{codec:?}");
            assert!(codec.decode::<RawBytes>(&out[..out.len() - 1]).is_err());
        }
    }

    #[test]
    fn encode_appends() {
        for codec in all() {
            let mut out = b"head".to_vec();
            codec.encode(&1u8, &mut out).unwrap();
            assert!(out.starts_with(b"head"), "{codec:?}");
            assert_eq!(codec.decode::<u8>(&out[4..]).unwrap(), 1);
        }
    }
}
