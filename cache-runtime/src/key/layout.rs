//! Where things live in Redis: a namespace's entry keys and generation key,
//! the invalidation channel, and the names (prefix, namespace) they are
//! built from. This is the storage format's contract with every process
//! that shares a prefix, so it is crate-private: never part of the API.

use crate::error::{Error, NameProblem};

/// The longest prefix or namespace name accepted by [`validate_name`].
const MAX_NAME_LEN: usize = 64;

/// Is `c` allowed in a prefix or namespace name?
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Checks a prefix or namespace name: 1 to 64 bytes of `A-Z`, `a-z`, `0-9`,
/// `_`, `.`, `-`. `what` names the checked thing in the error (`"prefix"`
/// or `"namespace"`).
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        NameProblem::Empty
    } else if name.len() > MAX_NAME_LEN {
        NameProblem::TooLong { bytes: name.len() }
    } else if let Some(bad) = name.chars().find(|&c| !is_name_char(c)) {
        NameProblem::Char(bad)
    } else {
        return Ok(());
    };
    Err(Error::Name {
        what,
        name: name.to_owned(),
        problem,
    })
}

/// The path of a fn, from the `type_name_of_val` of an item fn the macro
/// declares in its body (`..::count::__cache_aside_here`): the
/// module path and, for an associated fn (with or without `self`), the
/// impl's type, without generic arguments (one namespace for every
/// instantiation: the schema tells them apart) or the trait of a trait impl.
pub(crate) fn fn_path(raw: &str) -> String {
    let raw = raw.strip_suffix("::__cache_aside_here").unwrap_or(raw);
    // `<a::Repo<_> as a::Tr>::m` -> `a::Repo<_>::m`.
    let raw = match raw.strip_prefix('<') {
        Some(rest) => {
            let (mut depth, mut ty_end, mut close) = (0usize, None, None);
            for (i, c) in rest.char_indices() {
                match c {
                    '<' => depth += 1,
                    '>' if depth == 0 => {
                        close = Some(i);
                        break;
                    }
                    '>' => depth -= 1,
                    ' ' if depth == 0 && ty_end.is_none() => ty_end = Some(i),
                    _ => {}
                }
            }
            match close {
                Some(close) => {
                    format!("{}{}", &rest[..ty_end.unwrap_or(close)], &rest[close + 1..])
                }
                None => raw.to_owned(),
            }
        }
        None => raw.to_owned(),
    };
    let mut out = String::with_capacity(raw.len());
    let mut depth = 0usize;
    for c in raw.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.replace("::{{closure}}", "")
}

/// The namespace a name stands for: a valid name as it is; a path (a
/// `#[cached]` fn without `ns`: `module::fn`, `module::Type::fn`) with its
/// `::` as `.`, any other character outside the allowed ones as `_`, and,
/// when that is not valid as it is or is over 64 bytes, its last 47 bytes
/// after a hash of the whole path (readable, and still one per path).
/// Other names stay as they are (and are refused where they are used).
pub(crate) fn namespace_name(raw: &str) -> std::borrow::Cow<'_, str> {
    if validate_name("namespace", raw).is_ok() || !raw.contains("::") {
        return raw.into();
    }
    let dotted = raw.replace("::", ".");
    if dotted.len() <= MAX_NAME_LEN && dotted.chars().all(is_name_char) {
        return dotted.into();
    }
    let clean: String = dotted
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect();
    let hash = blake3::hash(raw.as_bytes()).to_hex();
    let tail = &clean[clean.len().saturating_sub(MAX_NAME_LEN - 17)..];
    format!("{}.{tail}", &hash[..16]).into()
}

/// `"{prefix}:{{ns}}:"`: the part of an entry key before the args.
///
/// The namespace is a Redis Cluster hash tag: every key of a namespace (its
/// entries and its generation) lives in one slot, so the multi-key reads
/// and scripts never cross slots. Namespace names cannot contain braces and
/// the prefix cannot either, so no argument can move a key to another slot.
/// Neither the schema nor the version is part of the key (they are checked
/// in the entry, see `schema.rs`), so a key invalidation reaches the entry
/// whatever build or type wrote it.
pub(crate) fn entry_key_prefix(prefix: &str, ns: &str) -> String {
    let mut key =
        String::with_capacity(prefix.len().saturating_add(ns.len()).saturating_add(4 + 32));
    key.push_str(prefix);
    key.push_str(":{");
    key.push_str(ns);
    key.push_str("}:");
    key
}

/// `"{prefix}:{{ns}}:#gen"`: the key holding the namespace's generation (in
/// the same hash slot as the namespace's entries). No argument list starts
/// with `#` (the encoding writes `#` only after 64 bytes), so no entry key
/// is a generation key.
pub(crate) fn generation_key(prefix: &str, ns: &str) -> String {
    let mut key = entry_key_prefix(prefix, ns);
    key.push_str("#gen");
    key
}

/// `"{prefix}:#life"`: which run of the server this prefix's data was last
/// checked against (see `backend/redis/life.rs`).
pub(crate) fn life_key(prefix: &str) -> String {
    format!("{prefix}:#life")
}

/// `"{prefix}:invalidations"`: the channel every invalidation's notice is
/// published on.
pub(crate) fn channel(prefix: &str) -> String {
    format!("{prefix}:invalidations")
}
