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

/// The path of a fn, from the `type_name` the macro takes in the fn's body
/// (of an item fn, `..::count::__cache_aside_here`, or of a closure,
/// `..::count::{{closure}}`): its crate and module path and, for an
/// associated fn, the impl's type and, for a trait impl, the trait's name
/// (`app::Store::UserRepo::get`), without generic arguments (every
/// instantiation of a generic fn or impl has one namespace: their schemas
/// tell them apart).
pub(crate) fn fn_path(raw: &str) -> String {
    let raw = raw.strip_suffix("::__cache_aside_here").unwrap_or(raw);
    let raw = raw.replace("::{{closure}}", "");
    let path = match raw.strip_prefix('<').and_then(qualified) {
        // `<a::Repo<u8> as a::Tr<u16>>::m` -> `a::Repo<u8>::Tr::m`.
        Some((ty, tr, rest)) => {
            let tr = strip_generics(tr);
            let tr = tr.rsplit("::").next().unwrap_or(&tr);
            format!("{ty}::{tr}{rest}")
        }
        None => raw.clone(),
    };
    strip_generics(&path)
}

/// Depth of brackets in a type name, where `->` closes nothing.
fn bracket_depth(depth: &mut usize, prev: Option<char>, c: char) {
    match c {
        '<' | '(' | '[' => *depth += 1,
        '>' if prev == Some('-') => {}
        '>' | ')' | ']' => *depth = depth.saturating_sub(1),
        _ => {}
    }
}

/// `Ty as Tr>::rest` (after the `<`) as its three parts.
fn qualified(s: &str) -> Option<(&str, &str, &str)> {
    let (mut depth, mut prev, mut ty_end) = (0usize, None, None);
    for (i, c) in s.char_indices() {
        if depth == 0 {
            if ty_end.is_none() && s[i..].starts_with(" as ") {
                ty_end = Some(i);
            } else if c == '>' && prev != Some('-') {
                let ty_end = ty_end?;
                return Some((&s[..ty_end], &s[ty_end + 4..i], &s[i + 1..]));
            }
        }
        bracket_depth(&mut depth, prev, c);
        prev = Some(c);
    }
    None
}

/// `s` without its `<..>` groups.
fn strip_generics(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut angle, mut prev) = (0usize, None);
    for c in s.chars() {
        match c {
            '<' => angle += 1,
            '>' if prev == Some('-') => {}
            '>' => angle = angle.saturating_sub(1),
            _ if angle == 0 => out.push(c),
            _ => {}
        }
        prev = Some(c);
    }
    out
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

/// `"{prefix}:{{ns}}:#t:{tag}:"`: the part of a tag's token key before the
/// tag's value, encoded as key arguments are (in the namespace's slot, so
/// an entry and its tags' tokens are read together). No argument list
/// starts with `#`, and a tag's name has no `:`, so no entry key, no
/// generation key and no other tag's key is a tag key.
pub(crate) fn tag_key_prefix(prefix: &str, ns: &str, tag: &str) -> String {
    let mut key = entry_key_prefix(prefix, ns);
    key.push_str("#t:");
    key.push_str(tag);
    key.push(':');
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
