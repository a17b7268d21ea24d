//! What an entry is checked against besides its generation: the identity
//! of the type whose bytes it holds, so that a build in which the type
//! changed shape never decodes the bytes of another (postcard and bincode
//! are not self-describing: swapped fields of one type, or a `u64` that
//! became an `i64`, decode without an error into wrong values).
//!
//! The identity (the entry's `schema`, 64 bits) covers:
//! * the **shape** of the value type as serde sees it: field and variant
//!   names, their order, and their types, nested types included, traced from
//!   its `Deserialize` impl with serde-reflection, once per type and process;
//!   the names of the types it is made of are part of it, their modules are
//!   not, so moving a type keeps its entries (renaming it does not), and a
//!   build that changed nothing keeps them;
//! * the codec (postcard bytes are no JSON);
//! * `version` (default 1), for a change of meaning that keeps the shape
//!   (cents that became dollars);
//! * the type parameters of a generic `#[cached]` fn (`type_name` of each),
//!   so that its instantiations never read each other's entries.
//!
//! A type that cannot be traced (a `Deserialize` that needs
//! `deserialize_any`, as untagged enums, flattened structs and
//! `serde_json::Value` do, or one that validates what it reads, as most
//! date, time and decimal types do) falls back to something conservative:
//! its `type_name` and the identity of the running executable (a hash of
//! its file), so entries of such a type live as long as one build, unless
//! the call gives a `version` explicitly, which then stands for the shape
//! (`type_name` and `version`): the caller takes on bumping it.

use std::any::TypeId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::de::DeserializeOwned;
use serde_reflection::{FormatHolder, Tracer, TracerConfig};

use crate::codec::CodecKind;
use crate::sync::lock;

/// The shape of one type, as far as it could be traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fingerprint {
    /// A hash of the traced serde format.
    Traced(u64),
    /// Not traceable: a hash of the type's name.
    Untraced(u64),
}

/// The shape of `T`, traced once per process (then one map lookup per
/// thread).
pub(crate) fn fingerprint<T: DeserializeOwned>() -> Fingerprint {
    thread_local! {
        static SEEN: RefCell<HashMap<TypeId, Fingerprint>> = RefCell::new(HashMap::new());
    }
    static TRACED: Mutex<Option<HashMap<TypeId, Fingerprint>>> = Mutex::new(None);
    let id = typeid::of::<T>();
    if let Ok(Some(s)) = SEEN.try_with(|m| m.borrow().get(&id).copied()) {
        return s;
    }
    let s = *lock(&TRACED)
        .get_or_insert_with(HashMap::new)
        .entry(id)
        .or_insert_with(trace::<T>);
    let _ = SEEN.try_with(|m| m.borrow_mut().insert(id, s));
    s
}

/// Traces `T`'s `Deserialize`: the root format and every container it
/// names, written with the key encoder (stable and injective) and hashed.
fn trace<T: DeserializeOwned>() -> Fingerprint {
    let traced = (|| {
        let mut tracer = Tracer::new(TracerConfig::default());
        let (mut format, _) = tracer.trace_simple_type::<T>().ok()?;
        format.normalize().ok()?;
        let registry = tracer.registry().ok()?;
        let mut text = String::new();
        crate::key::write_unbounded(&mut text, &(&format, &registry)).ok()?;
        Some(hash(text.as_bytes()))
    })();
    match traced {
        Some(h) => Fingerprint::Traced(h),
        None => {
            let name = std::any::type_name::<T>();
            tracing::debug!(
                r#type = name,
                "cache-aside: the type's serde shape cannot be traced; its entries live for one build \
                 unless the call gives a `version`"
            );
            Fingerprint::Untraced(hash(name.as_bytes()))
        }
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let h = blake3::hash(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// The identity of the running executable, for types that cannot be
/// traced: a hash of its file, read once per process (or, if it cannot be
/// read, a random value: this process's entries of such types are its own).
fn build() -> u64 {
    static BUILD: OnceLock<u64> = OnceLock::new();
    *BUILD.get_or_init(|| {
        let file = std::env::current_exe().and_then(std::fs::read);
        match file {
            Ok(bytes) => hash(&bytes),
            Err(_) => u64::from_be_bytes(crate::entry::token()[..8].try_into().unwrap_or([0; 8])),
        }
    })
}

/// What the identity of a call's entries is made of.
pub(crate) struct Parts<'a> {
    pub fingerprint: Fingerprint,
    pub codec: CodecKind,
    /// The call's `version`, if it gave one.
    pub version: Option<u32>,
    /// `type_name` of each type parameter of a generic fn.
    pub generics: &'a [&'static str],
    /// The names of the fn's tags (`tags(..)`): its entries carry their
    /// tokens, which entries without tags do not.
    pub tags: &'a [&'static str],
}

/// The 64-bit identity stored in every entry (see the module docs).
pub(crate) fn schema(p: &Parts<'_>) -> u64 {
    // "2": the format with the compressed flag; the identities of builds
    // from before it are other numbers, so neither reads the other's bytes.
    let mut text = String::with_capacity(64);
    text.push_str("2:");
    let version = p.version.unwrap_or(1);
    match p.fingerprint {
        Fingerprint::Traced(h) => text.push_str(&format!("t{h:016x}")),
        // An explicit version stands for the shape; without one, the build.
        Fingerprint::Untraced(h) if p.version.is_some() => text.push_str(&format!("n{h:016x}")),
        Fingerprint::Untraced(h) => text.push_str(&format!("b{h:016x}{:016x}", build())),
    }
    text.push_str(&format!(":{}:{version}", p.codec.name()));
    // An empty part (a `#[cached]` fn without generic arguments) is none:
    // the fn, the by-hand API and a put of one type share entries.
    for g in p.generics.iter().filter(|g| !g.is_empty()) {
        text.push(':');
        text.push_str(g);
    }
    if !p.tags.is_empty() {
        text.push_str(":#tags");
        for t in p.tags {
            text.push(':');
            text.push_str(t);
        }
    }
    // The top bit is the entry's compressed flag, no part of the identity.
    hash(text.as_bytes()) & !crate::entry::COMPRESSED
}

#[cfg(test)]
#[allow(dead_code)] // the types exist to be traced, never built
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    mod a {
        #[derive(serde::Deserialize)]
        pub struct Seat {
            pub row: u32,
            pub col: u32,
        }
    }
    mod b {
        // The same fields, swapped.
        #[derive(serde::Deserialize)]
        pub struct Seat {
            pub col: u32,
            pub row: u32,
        }
    }
    mod c {
        // Another module: the same shape.
        #[derive(serde::Deserialize)]
        pub struct Seat {
            pub row: u32,
            pub col: u32,
        }
    }
    #[derive(Deserialize)]
    struct Price {
        _cents: u64,
    }
    #[derive(Deserialize)]
    struct PriceSigned {
        _cents: i64,
    }
    #[derive(Deserialize)]
    struct Renamed {
        _dollars: u64,
    }
    #[derive(Deserialize)]
    enum Kind {
        _A,
        _B(u8),
    }
    #[derive(Deserialize)]
    enum KindMore {
        _A,
        _B(u8),
        _C,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        _N(u32),
        _S(String),
    }

    fn traced<T: DeserializeOwned>() -> u64 {
        match fingerprint::<T>() {
            Fingerprint::Traced(h) => h,
            Fingerprint::Untraced(_) => panic!("{} not traced", std::any::type_name::<T>()),
        }
    }

    #[test]
    fn a_changed_shape_changes_the_fingerprint_and_a_moved_type_does_not() {
        assert_ne!(traced::<a::Seat>(), traced::<b::Seat>(), "swapped fields");
        assert_eq!(
            traced::<a::Seat>(),
            traced::<c::Seat>(),
            "moved, same shape"
        );
        assert_ne!(traced::<Price>(), traced::<PriceSigned>(), "u64 -> i64");
        assert_ne!(traced::<Price>(), traced::<Renamed>(), "renamed field");
        assert_ne!(traced::<Kind>(), traced::<KindMore>(), "a new variant");
        assert_ne!(traced::<Vec<u32>>(), traced::<Vec<u64>>());
        assert_ne!(traced::<Option<String>>(), traced::<String>());
        assert_ne!(
            traced::<BTreeMap<String, u8>>(),
            traced::<BTreeMap<String, i8>>()
        );
        assert_eq!(traced::<Vec<a::Seat>>(), traced::<Vec<c::Seat>>());
    }

    #[test]
    fn untraceable_types_fall_back_to_their_name() {
        assert!(matches!(
            fingerprint::<Untagged>(),
            Fingerprint::Untraced(_)
        ));
    }

    #[test]
    fn codec_version_and_type_parameters_are_part_of_the_schema() {
        let codec = CodecKind::default();
        let parts = |version, generics| Parts {
            fingerprint: fingerprint::<a::Seat>(),
            codec,
            version,
            generics,
            tags: &[],
        };
        let base = schema(&parts(None, &[]));
        let tagged = Parts {
            tags: &["user"],
            ..parts(None, &[])
        };
        assert_ne!(base, schema(&tagged), "tagged entries carry tokens");
        assert_eq!(base, schema(&parts(Some(1), &[])), "1 is the default");
        assert_ne!(base, schema(&parts(Some(2), &[])));
        assert_ne!(base, schema(&parts(None, &["u8"])));
        assert_ne!(
            schema(&parts(None, &["u8"])),
            schema(&parts(None, &["u16"]))
        );
        let untraced = |version| {
            schema(&Parts {
                fingerprint: fingerprint::<Untagged>(),
                codec,
                version,
                generics: &[],
                tags: &[],
            })
        };
        assert_ne!(
            untraced(None),
            untraced(Some(1)),
            "the build, or the version"
        );
    }
}
