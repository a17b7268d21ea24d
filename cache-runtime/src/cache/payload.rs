//! An entry's payload as stored and as the codec reads it: compressed on
//! the way in when the call asks for it and it saves, decompressed on the
//! way out when the entry's flag says so (whatever this process would write).

use std::borrow::Cow;

use crate::codec::{self, CodecError};
use crate::entry;

/// `tail` (the header and sections, then the codec's bytes from
/// `payload_at`) with its payload compressed, when the encoding is at
/// least `above` bytes and compression makes it smaller; `None`: store
/// `tail` as it is.
pub(super) fn pack(tail: &[u8], payload_at: usize, above: Option<usize>) -> Option<Vec<u8>> {
    let plain = tail.get(payload_at..)?;
    if above.is_none_or(|n| plain.len() < n) {
        return None;
    }
    let packed = codec::compress(plain)?;
    let mut out = Vec::with_capacity(payload_at + packed.len());
    out.extend_from_slice(&tail[..payload_at]);
    entry::mark_compressed(&mut out);
    out.extend_from_slice(&packed);
    Some(out)
}

/// The codec's bytes of a stored payload: as stored, or decompressed
/// (bounded by what an entry under `max_stored` can hold).
pub(super) fn unpack(
    payload: &[u8],
    compressed: bool,
    max_stored: usize,
) -> Result<Cow<'_, [u8]>, CodecError> {
    if compressed {
        codec::decompress(payload, max_stored).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Meta, assemble, entry_tail, is_compressed, token};

    #[test]
    fn packs_above_the_threshold_only_and_unpacks_what_it_packed() {
        let meta = Meta {
            expires_at_ms: 1000,
            compute_ms: 1,
            schema: 9,
        };
        let mut tail = entry_tail(meta, 0);
        let at = tail.len();
        tail.extend_from_slice(&"airport FRA ".repeat(100).into_bytes());
        assert_eq!(pack(&tail, at, None), None);
        assert_eq!(pack(&tail, at, Some(tail.len())), None);
        let packed = pack(&tail, at, Some(64)).unwrap();
        assert!(packed.len() < tail.len() / 4);
        let e = assemble(&token(), &packed);
        assert!(is_compressed(&e));
        let plain = unpack(&packed[at..], true, 1 << 20).unwrap();
        assert_eq!(&plain[..], &tail[at..]);
        assert!(matches!(
            unpack(&tail[at..], false, 0),
            Ok(Cow::Borrowed(_))
        ));
    }
}
