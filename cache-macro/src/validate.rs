//! Every check of the two attributes, between parsing (`args.rs`, which
//! only turns tokens into values) and code generation (`expand.rs`, which
//! cannot fail): the function's form, each option's value, the names that
//! `skip` and `key` use, the namespace. Errors are at the offending token,
//! several combined where they are independent.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Error, Expr, Ident, Path, Result, Type};

use crate::args::{
    CachePutArgs, CachedArgs, InvalidatesArgs, KeySpec, Local, NsName, TagSpec, Timed, did_you_mean,
};
use crate::model::{Func, Ret, is_impl_trait, reference_in};

/// What a `#[cached]` function's key is made of.
pub(crate) enum Key {
    /// `key = <expr>`.
    Expr(Box<Expr>),
    /// These arguments (or `self`), in order: `key(a, b)`, or every
    /// argument `skip` does not name.
    Args(Vec<Ident>),
}

/// The options a `#[cached]` call passes to the runtime (`None`: the
/// cache's default).
pub(crate) struct Options {
    pub ttl: Option<Duration>,
    pub stale: Option<Duration>,
    pub lock: Option<bool>,
    pub lock_wait: Option<Duration>,
    pub lease: Option<Duration>,
    pub early_refresh: Option<f64>,
    /// Local tier TTL; zero for `local = false`.
    pub local: Option<Duration>,
    /// `fail_safe = "1h"`: serve the last good value when the body fails.
    pub fail_safe: Option<Duration>,
    /// `timeout = "2s"`: how long the body may run when a fail-safe value
    /// is at hand.
    pub timeout: Option<Duration>,
    /// `compress`: whether large values are stored compressed.
    pub compress: Option<crate::args::Compress>,
    /// `verify`: the share of hits the consistency probe recomputes.
    pub verify: Option<f64>,
}

/// How one argument gets into a refresh in the background, which owns
/// copies of every argument.
pub(crate) enum Copy {
    /// `x: &T` (or `&self`): `ToOwned`, when the refresh starts.
    Borrowed,
    /// `x: T` (or `self`, `self: Arc<Self>`): `Clone`, before the body's
    /// future takes the argument.
    Owned,
}

/// How a `#[cached]` fn with `stale` or `early_refresh` refreshes.
pub(crate) enum Refresh {
    /// The caller that wins a refresh runs the body (no `stale` or
    /// `early_refresh`, or `refresh = "inline"`).
    Inline,
    /// In a task of its own, from copies of these arguments (`self` for the
    /// receiver).
    Background(Vec<(Ident, Copy)>),
}

/// A `#[cached]` fn's namespace.
pub(crate) enum Ns {
    /// `ns = "..."` or `ns = CONST`.
    Named(NsName),
    /// None given: the fn's path (`module::fn`, or `module::Type::fn` for an
    /// associated fn), made a namespace name by the runtime.
    Default,
}

/// A checked `#[cached]`.
pub(crate) struct Cached {
    pub func: Func,
    pub krate: TokenStream,
    pub ns: Ns,
    /// `version = N`; `None`: the default (see the runtime's `schema.rs`).
    pub version: Option<u32>,
    /// The type parameters, part of the schema.
    pub generics: Vec<Ident>,
    pub refresh: Refresh,
    pub options: Options,
    pub key: Key,
    pub cache: Option<Expr>,
    pub unless: Option<Expr>,
    /// `ttl = f`: the TTL of each value, from the value.
    pub ttl_of: Option<Expr>,
    /// The cached type (`T` of `Result<T, E>`), and the declared return type.
    pub value_ty: Type,
    pub ret_ty: Type,
    pub is_result: bool,
    /// `tags(..)`: each entry's tags.
    pub tags: Vec<TagSpec>,
    /// `keep_decoded`: the local tier keeps decoded values (its span, for
    /// the value type's bound).
    pub keep_decoded: Option<Span>,
}

/// What a checked `#[invalidates]` invalidates.
pub(crate) enum Target {
    /// Every entry of these namespaces.
    Namespaces(Vec<NsName>),
    /// One entry of one namespace (and the entries of its `tags`).
    Key { ns: NsName, key: Key },
    /// The entries of these tag values of one namespace (`tag(..)` only).
    Tags { ns: NsName },
}

/// A checked `#[invalidates]`.
pub(crate) struct Invalidates {
    pub func: Func,
    pub krate: TokenStream,
    pub cache: Option<Expr>,
    pub target: Target,
    /// `scoped`: check at run time that a transaction scope is open.
    pub scoped: bool,
    /// Without `scoped`, the type of an argument that looks like a database
    /// transaction: warned about there.
    pub transaction_arg: Option<Type>,
    /// `tag(..)`: the tag values whose entries are invalidated.
    pub tags: Vec<TagSpec>,
}

pub(crate) fn cached(args: CachedArgs, func: Func) -> Result<Cached> {
    check_fn(&func, "cached")?;
    if let Some(ns) = &args.ns {
        check_ns(ns)?;
    }
    let ttl = duration("ttl", args.ttl)?;
    let stale = duration("stale", args.stale)?;
    let lock_wait = duration("lock_wait", args.lock_wait)?;
    let lease = duration("lease", args.lease)?;
    let fail_safe = duration("fail_safe", args.fail_safe)?;
    let timeout = duration("timeout", args.timeout)?;
    if let (Some(t), None) = (&args.timeout, fail_safe) {
        return Err(Error::new(
            t.span,
            "`timeout` bounds the body only when a fail-safe value can be served instead: add \
             `fail_safe = \"1h\"` (how long past its TTL the last good value may be served)",
        ));
    }
    let early_refresh = match args.early_refresh {
        Some((beta, span)) if !(beta > 0.0 && beta.is_finite()) => {
            return Err(Error::new(
                span,
                "early_refresh: beta must be a positive number (1.0 is the usual choice)",
            ));
        }
        other => other.map(|(beta, _)| beta),
    };
    let local = match args.local {
        Some(Local::True(span)) => {
            return Err(Error::new(
                span,
                "`local = true` needs a duration: write `local = \"10s\"` (how long a hit stays in this process), or `local = false`",
            ));
        }
        Some(Local::Off) => Some(Duration::ZERO),
        Some(Local::Ttl(t)) => duration("local", Some(t))?,
        None => None,
    };
    if let (Some(span), Some(Duration::ZERO)) = (args.keep_decoded, local) {
        return Err(Error::new(
            span,
            "`keep_decoded` keeps values in the local tier, which `local = false` turns off: \
             remove one of them",
        ));
    }
    let skip: &[Ident] = args.skip.as_ref().map_or(&[], |(_, names)| names);
    check_names(&func, skip, "skip", "")?;
    if let (Some(_), Some((span, _))) = (&args.key, &args.skip) {
        return Err(Error::new(
            *span,
            "`skip` has no effect when `key` is given: the key is exactly what `key` names; \
             remove `skip(..)`",
        ));
    }
    let verify = match args.verify {
        Some((share, span)) if !(share > 0.0 && share <= 1.0) => {
            return Err(Error::new(
                span,
                "verify: the share of hits to recompute is a number in (0, 1], such as 0.001 \
                 (one hit in a thousand)",
            ));
        }
        other => other.map(|(share, _)| share),
    };
    let refresh = refresh(&func, &args)?;
    let tags = match args.tags {
        Some((span, specs)) => {
            check_tags(&func, &specs, "tags")?;
            if specs.len() > MAX_TAGS {
                return Err(Error::new(
                    span,
                    format!("at most {MAX_TAGS} tags: each entry carries one token per tag"),
                ));
            }
            specs
        }
        None => Vec::new(),
    };
    let key = key(&func, args.key.map(|(_, k)| k), skip)?;
    let ns = match args.ns {
        Some(ns) => Ns::Named(ns),
        None => {
            check_default_ns(&func)?;
            Ns::Default
        }
    };
    let (value_ty, ret_ty, is_result) = match &func.ret {
        Ret::Result { ok } => (ok.clone(), func.return_type(), true),
        Ret::Value(t) => (t.clone(), t.clone(), false),
        Ret::Unit => {
            return Err(Error::new(
                func.item.sig.paren_token.span.close(),
                UNIT_RETURN,
            ));
        }
        // Rejected by `check_fn`.
        Ret::Opaque(t) => (t.clone(), t.clone(), false),
    };
    if is_unit(&value_ty) {
        return Err(Error::new_spanned(&value_ty, UNIT_RETURN));
    }
    if let Some(r) = reference_in(&value_ty) {
        return Err(Error::new_spanned(
            r,
            "a cached function cannot return a reference: a cached value is deserialized into a \
             new value that it cannot borrow from, so return an owned type (`String` for \
             `&str`, `Vec<T>` for `&[T]`)",
        ));
    }
    let generics = func
        .item
        .sig
        .generics
        .type_params()
        .map(|p| p.ident.clone())
        .collect();
    Ok(Cached {
        krate: krate(args.krate),
        ns,
        version: args.version,
        generics,
        refresh,
        options: Options {
            ttl,
            stale,
            lock: args.lock,
            lock_wait,
            lease,
            early_refresh,
            local,
            fail_safe,
            timeout,
            compress: args.compress,
            verify,
        },
        key,
        cache: args.cache,
        unless: args.unless,
        ttl_of: args.ttl_of,
        value_ty,
        ret_ty,
        is_result,
        tags,
        keep_decoded: args.keep_decoded,
        func,
    })
}

/// The most tags one `#[cached]` fn may have.
const MAX_TAGS: usize = 16;

/// A tag without a value names an argument of the fn.
fn check_tags(func: &Func, specs: &[TagSpec], option: &str) -> Result<()> {
    let bare: Vec<Ident> = specs
        .iter()
        .filter(|t| t.value.is_none())
        .map(|t| t.name.clone())
        .collect();
    let hint = format!("; a tag of another value names it: `{option}(user = order.user_id)`");
    check_names(func, &bare, option, &hint)
}

const UNIT_RETURN: &str = "#[cached] on a function that returns `()` would skip its body for a \
whole TTL after the first call, and return nothing in its place: cache a function that returns \
the value it computes; a function run for its effect (a write) wants `#[invalidates]`, or no \
attribute";

fn is_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(t) => t.elems.is_empty(),
        Type::Paren(p) => is_unit(&p.elem),
        Type::Group(g) => is_unit(&g.elem),
        _ => false,
    }
}

pub(crate) fn invalidates(args: InvalidatesArgs, func: Func) -> Result<Invalidates> {
    check_fn(&func, "invalidates")?;
    if let Some(span) = args.version {
        return Err(Error::new(
            span,
            "`version` is not needed here: neither the version nor the type is part of a key, so \
             a key invalidation reaches the entry whatever `version` the cached fn has; remove it",
        ));
    }
    let mut namespaces: Vec<NsName> = Vec::new();
    for ns in args.namespaces {
        check_ns(&ns)?;
        if namespaces.iter().any(|n| same_ns(n, &ns)) {
            return Err(Error::new(ns.span(), "this namespace is listed twice"));
        }
        namespaces.push(ns);
    }
    if let (Some(span), true) = (args.tag_span, namespaces.len() != 1) {
        return Err(Error::new(
            span,
            "`tag(..)` invalidates the entries of one namespace with that tag value: name it \
             with `ns = \"orders\"`",
        ));
    }
    check_tags(&func, &args.tags, "tag")?;
    if namespaces.is_empty() {
        return Err(Error::new(
            Span::call_site(),
            "#[invalidates] needs a namespace: #[invalidates(\"flight_count\")] for a whole \
             namespace, or #[invalidates(ns = \"airport\", key(code))] for one entry",
        ));
    }
    let target = match args.key {
        Some((span, _)) if namespaces.len() != 1 => {
            return Err(Error::new(
                span,
                "`key` invalidates one entry of one namespace: name exactly one namespace",
            ));
        }
        Some((_, spec)) => Target::Key {
            ns: namespaces.remove(0),
            key: key(&func, Some(spec), &[])?,
        },
        None if !args.tags.is_empty() => Target::Tags {
            ns: namespaces.remove(0),
        },
        None => Target::Namespaces(namespaces),
    };
    let transaction_arg = if args.scoped {
        None
    } else {
        // A reference: the caller keeps the transaction, and commits it
        // after this fn returned. (One taken by value is committed inside.)
        func.args
            .iter()
            .find(|a| matches!(&a.ty, Type::Reference(r) if is_transaction(&r.elem)))
            .map(|a| a.ty.clone())
    };
    Ok(Invalidates {
        krate: krate(args.krate),
        cache: args.cache,
        target,
        scoped: args.scoped,
        transaction_arg,
        tags: args.tags,
        func,
    })
}

/// A checked `#[cache_put]`.
pub(crate) struct CachePut {
    pub func: Func,
    pub krate: TokenStream,
    pub cache: Option<Expr>,
    pub ns: NsName,
    pub key: Key,
    pub ttl: Option<Duration>,
    /// `ttl = f`: the TTL from the value (zero: not stored, invalidated).
    pub ttl_of: Option<Expr>,
    pub lease: Option<Duration>,
    pub compress: Option<crate::args::Compress>,
    pub version: Option<u32>,
    /// The stored type (`T` of `Result<T, E>`), and the declared return type.
    pub value_ty: Type,
    pub ret_ty: Type,
    pub is_result: bool,
}

pub(crate) fn cache_put(args: CachePutArgs, func: Func) -> Result<CachePut> {
    check_fn(&func, "cache_put")?;
    let Some(ns) = args.ns else {
        return Err(Error::new(
            Span::call_site(),
            "#[cache_put] needs the namespace of the #[cached] fn whose entry it writes: \
             #[cache_put(ns = \"airport\", key(code))]",
        ));
    };
    check_ns(&ns)?;
    let Some((_, spec)) = args.key else {
        return Err(Error::new(
            ns.span(),
            "#[cache_put] writes one entry: name the arguments that make its key, as many as \
             the reader's key has, with `key(code)` (or `key = <expr>`)",
        ));
    };
    let ttl = duration("ttl", args.ttl)?;
    let lease = duration("lease", args.lease)?;
    let key = key(&func, Some(spec), &[])?;
    let (value_ty, ret_ty, is_result) = match &func.ret {
        Ret::Result { ok } => (ok.clone(), func.return_type(), true),
        Ret::Value(t) | Ret::Opaque(t) => (t.clone(), t.clone(), false),
        Ret::Unit => {
            return Err(Error::new(
                func.item.sig.paren_token.span.close(),
                PUT_UNIT_RETURN,
            ));
        }
    };
    if is_unit(&value_ty) {
        return Err(Error::new_spanned(&value_ty, PUT_UNIT_RETURN));
    }
    if let Some(r) = reference_in(&value_ty) {
        return Err(Error::new_spanned(
            r,
            "#[cache_put] stores the value the function returns, and a reference cannot be \
             stored: return the owned value the #[cached] reader returns",
        ));
    }
    Ok(CachePut {
        krate: krate(args.krate),
        cache: args.cache,
        ns,
        key,
        ttl,
        ttl_of: args.ttl_of,
        lease,
        compress: args.compress,
        version: args.version,
        value_ty,
        ret_ty,
        is_result,
        func,
    })
}

const PUT_UNIT_RETURN: &str = "#[cache_put] stores the value the function returns as the entry \
its #[cached] reader reads: return that value (`Result<Airport, E>` from an `UPDATE .. \
RETURNING`); a write that returns nothing wants `#[invalidates(ns = .., key(..))]`";

/// Does `ty` look like a database transaction (`&mut Transaction<'_, Pg>`,
/// `&DatabaseTransaction`): a path whose last segment ends in `Transaction`?
fn is_transaction(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => is_transaction(&r.elem),
        Type::Paren(p) => is_transaction(&p.elem),
        Type::Group(g) => is_transaction(&g.elem),
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident.to_string().ends_with("Transaction")),
        _ => false,
    }
}

/// How the fn refreshes; for a refresh in the background, how each
/// argument is copied (each must be a plain name, and none `&mut`).
fn refresh(func: &Func, args: &CachedArgs) -> Result<Refresh> {
    let refreshes = args.stale.is_some() || args.early_refresh.is_some();
    if let (Some(lit), Some(_)) = (&args.refresh, &args.verify)
        && lit.value() == "inline"
    {
        return Err(Error::new(
            lit.span(),
            "`verify` recomputes sampled hits in a task of its own, from copies of the \
             arguments, and so refreshes in the background too: remove `refresh = \"inline\"` \
             (or `verify`)",
        ));
    }
    let refreshes_in_background = refreshes || args.verify.is_some();
    match &args.refresh {
        Some(lit) if !refreshes => {
            return Err(Error::new(
                lit.span(),
                "`refresh` has no effect without `stale` or `early_refresh`: remove it",
            ));
        }
        Some(lit) if lit.value() == "inline" => return Ok(Refresh::Inline),
        _ if !refreshes_in_background => return Ok(Refresh::Inline),
        _ => {}
    }
    let inline_hint = "or refresh inline with `refresh = \"inline\"` (the caller that wins a \
                       refresh then runs the body and waits for it)";
    let mut copies = Vec::new();
    // `func.args` holds the typed arguments in order.
    let mut typed = func.args.iter();
    for input in &func.item.sig.inputs {
        match input {
            syn::FnArg::Receiver(r) => {
                let how = match &r.kind {
                    syn::ReceiverKind::Reference(_, _, None) => Some(Copy::Borrowed),
                    syn::ReceiverKind::Reference(_, _, Some(_)) => None,
                    syn::ReceiverKind::Typed(_, ty) => match crate::model::strip(ty) {
                        Type::Reference(r) if r.mutability.is_some() => None,
                        Type::Reference(_) => Some(Copy::Borrowed),
                        _ => Some(Copy::Owned),
                    },
                    _ => Some(Copy::Owned),
                };
                let Some(how) = how else {
                    return Err(Error::new_spanned(
                        r,
                        format!(
                            "a refresh in the background (`stale`, `early_refresh`, `verify`) runs the body \
                             on a copy of `self` in a task of its own, and cannot copy a `&mut self`: \
                             take `&self`, {inline_hint}"
                        ),
                    ));
                };
                copies.push((Ident::new("self", r.self_token.span), how));
            }
            syn::FnArg::Typed(pt) => {
                let Some(name) = typed.next().and_then(|a| a.name.clone()) else {
                    return Err(Error::new_spanned(
                        &pt.pat,
                        format!(
                            "a refresh in the background (`stale`, `early_refresh`, `verify`) copies every \
                             argument, and cannot copy a pattern: bind it to a name and destructure \
                             it in the body, {inline_hint}"
                        ),
                    ));
                };
                let how = match crate::model::strip(&pt.ty) {
                    Type::Reference(r) if r.mutability.is_some() => {
                        return Err(Error::new_spanned(
                            &pt.ty,
                            format!(
                                "a refresh in the background (`stale`, `early_refresh`, `verify`) runs the \
                                 body on copies of the arguments in a task of its own, and cannot \
                                 copy `{name}`, a `&mut`: take a shared reference, {inline_hint}"
                            ),
                        ));
                    }
                    Type::Reference(_) => Copy::Borrowed,
                    _ => Copy::Owned,
                };
                copies.push((name, how));
            }
        }
    }
    Ok(Refresh::Background(copies))
}

fn krate(p: Option<Path>) -> TokenStream {
    p.map_or_else(|| quote!(::cache_aside), ToTokens::into_token_stream)
}

/// The function's own form: an `async fn`, not `const` or variadic, not
/// returning `impl Trait`.
fn check_fn(func: &Func, attr: &str) -> Result<()> {
    let sig = &func.item.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span,
            format!(
                "#[{attr}] needs an `async fn`: add `async` (cache-aside wraps the future the function returns)"
            ),
        ));
    }
    if let Some(c) = &sig.constness {
        return Err(Error::new(
            c.span,
            format!("#[{attr}] cannot be used on a `const fn`"),
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(Error::new(
            v.span(),
            format!("#[{attr}] cannot be used on a variadic fn"),
        ));
    }
    if let Ret::Opaque(ty) = &func.ret {
        let what = if attr == "cached" {
            "that implements Serialize and Deserialize"
        } else {
            "instead"
        };
        return Err(Error::new_spanned(
            ty,
            format!(
                "#[{attr}] cannot be used on a function that returns `impl Trait`: return a concrete type {what}"
            ),
        ));
    }
    Ok(())
}

/// Is `c` allowed in a namespace? (The runtime's rule, `key/layout.rs`.)
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn same_ns(a: &NsName, b: &NsName) -> bool {
    match (a, b) {
        (NsName::Lit(a), NsName::Lit(b)) => a.value() == b.value(),
        (NsName::Const(a), NsName::Const(b)) => {
            // `syn::Path: PartialEq` needs syn's `extra-traits`; compare tokens.
            quote::ToTokens::to_token_stream(a).to_string()
                == quote::ToTokens::to_token_stream(b).to_string()
        }
        _ => false,
    }
}

/// A string is checked here; a constant when the generated code is
/// compiled (`__private::valid_ns` in a `const` item).
fn check_ns(ns: &NsName) -> Result<()> {
    let NsName::Lit(ns) = ns else {
        return Ok(());
    };
    let v = ns.value();
    if !v.is_empty() && v.len() <= 64 && v.chars().all(is_name_char) {
        return Ok(());
    }
    Err(Error::new(
        ns.span(),
        format!(
            "invalid namespace \"{v}\": use 1 to 64 characters of letters, digits, `_`, `.` or `-`"
        ),
    ))
}

/// The namespace a function without `ns` gets: its name, if that is one.
/// A fn without `ns` gets its path as namespace: its name must fit one.
fn check_default_ns(func: &Func) -> Result<()> {
    let ident = &func.item.sig.ident;
    let name = ident.unraw().to_string();
    if let Some(bad) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(Error::new(
            ident.span(),
            format!(
                "the namespace is the function's path by default, and `{name}` has {bad:?}, \
                 which a namespace cannot have (only ASCII letters, digits, `_`, `.` and `-`): \
                 give one with `ns = \"...\"`"
            ),
        ));
    }
    Ok(())
}

/// A duration option must be at least 1 ms.
fn duration(what: &str, t: Option<Timed>) -> Result<Option<Duration>> {
    match t {
        Some(t) if t.value < Duration::from_millis(1) => Err(Error::new(
            t.span,
            format!(
                "invalid {what}: a {what} must be at least 1ms; leave `{what}` out to use the cache's default {what}"
            ),
        )),
        t => Ok(t.map(|t| t.value)),
    }
}

/// The names a `skip(...)` or `key(...)` list uses must be arguments.
fn check_names(func: &Func, names: &[Ident], option: &str, hint_more: &str) -> Result<()> {
    let mut errors: Option<Error> = None;
    for name in names {
        let known = if name == "self" {
            func.receiver.is_some()
        } else {
            func.arg(name).is_some()
        };
        if known {
            continue;
        }
        let mut available: Vec<String> = func
            .args
            .iter()
            .filter_map(|a| a.name.as_ref().map(ToString::to_string))
            .collect();
        if func.receiver.is_some() {
            available.insert(0, "self".into());
        }
        let hint = if available.is_empty() {
            "the function has no named arguments".to_string()
        } else {
            let guess = did_you_mean(
                &name.unraw().to_string(),
                available.iter().map(String::as_str),
            )
            .map(|g| format!("did you mean `{g}`? "))
            .unwrap_or_default();
            let list: Vec<String> = available.iter().map(|a| format!("`{a}`")).collect();
            format!("{guess}the arguments are {}", list.join(", "))
        };
        let e = Error::new(
            name.span(),
            format!("`{option}({name})` names no argument of this function: {hint}{hint_more}"),
        );
        match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        }
    }
    errors.map_or(Ok(()), Err)
}

/// The key: an expression, the named arguments, or every argument not
/// skipped (each must be a plain name with a concrete type).
fn key(func: &Func, spec: Option<KeySpec>, skip: &[Ident]) -> Result<Key> {
    match spec {
        Some(KeySpec::Expr(e)) => Ok(Key::Expr(e)),
        Some(KeySpec::Args(names)) => {
            check_names(func, &names, "key", "")?;
            for name in &names {
                if let Some(arg) = func.arg(name) {
                    check_key_arg(name, &arg.ty)?;
                }
            }
            Ok(Key::Args(names))
        }
        None => {
            let mut parts = Vec::new();
            let mut errors: Option<Error> = None;
            for arg in &func.args {
                if arg.name.as_ref().is_some_and(|n| skip.contains(n)) {
                    continue;
                }
                let checked = match &arg.name {
                    None => Err(Error::new(
                        arg.pat_span,
                        "a pattern argument cannot be part of the cache key: bind it to a name \
                         (`pair: (u32, u32)`) and destructure it in the body, or set the key \
                         with `key = ...`",
                    )),
                    Some(name) => check_key_arg(name, &arg.ty).map(|()| parts.push(name.clone())),
                };
                if let Err(e) = checked {
                    match &mut errors {
                        Some(all) => all.combine(e),
                        None => errors = Some(e),
                    }
                }
            }
            errors.map_or(Ok(Key::Args(parts)), Err)
        }
    }
}

fn check_key_arg(name: &Ident, ty: &Type) -> Result<()> {
    if is_impl_trait(ty) {
        return Err(Error::new_spanned(
            ty,
            format!(
                "an `impl Trait` argument cannot be part of the cache key: leave it out with \
                 `skip({name})`, or give `{name}` a concrete type that implements Serialize"
            ),
        ));
    }
    Ok(())
}

/// A checked `#[cached(batch)]`: one argument holds the keys, the body
/// returns a map from key to value, each value is its own entry.
pub(crate) struct Batch {
    pub func: Func,
    pub krate: TokenStream,
    pub ns: NsName,
    pub version: Option<u32>,
    pub options: Options,
    pub cache: Option<Expr>,
    /// The argument with the keys, how it holds them, and the key type.
    pub keys: Ident,
    pub keys_form: KeysForm,
    pub key_ty: Type,
    /// The value type (`V` of `HashMap<K, V>`), the declared return type,
    /// and whether it is a `Result`.
    pub value_ty: Type,
    pub ret_ty: Type,
    pub is_result: bool,
}

/// How a batch fn takes its keys.
pub(crate) enum KeysForm {
    /// `&[K]`
    Slice,
    /// `&Vec<K>`
    VecRef,
    /// `Vec<K>`
    Vec,
}

const BATCH_KEYS: &str = "a batch fn takes its keys in one argument: `&[K]`, `&Vec<K>` or `Vec<K>` \
                          (the others are skipped with `skip(..)`), and each key is the key of \
                          one entry";

/// `Vec<T>` (or `std::vec::Vec<T>`): `T`.
fn vec_elem(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = crate::model::strip(ty) else {
        return None;
    };
    let last = p.path.segments.last()?;
    if last.ident != "Vec" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(a) if a.args.len() == 1 => match a.args.first() {
            Some(syn::GenericArgument::Type(t)) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// `HashMap<K, V>` (any path ending in `HashMap`): `V`.
fn map_value(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = crate::model::strip(ty) else {
        return None;
    };
    let last = p.path.segments.last()?;
    if last.ident != "HashMap" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(a) => {
            let types: Vec<&Type> = a
                .args
                .iter()
                .filter_map(|g| match g {
                    syn::GenericArgument::Type(t) => Some(t),
                    _ => None,
                })
                .collect();
            (types.len() == 2).then(|| types[1])
        }
        _ => None,
    }
}

pub(crate) fn batch(args: CachedArgs, func: Func) -> Result<Batch> {
    check_fn(&func, "cached")?;
    let batch_span = args.batch.unwrap_or_else(Span::call_site);
    let Some(ns) = args.ns.clone() else {
        return Err(Error::new(
            batch_span,
            "a batch fn shares its entries with the namespace's single-key fn: name the \
             namespace, `#[cached(ns = \"airport\", batch)]`",
        ));
    };
    check_ns(&ns)?;
    // What a batch does not do (yet), each at its token where there is one.
    let not_with = |what: &str, span: Option<Span>| -> Result<()> {
        match span {
            Some(s) => Err(Error::new(
                s,
                format!(
                    "`{what}` cannot be used with `batch`: remove it (a batch reads and stores each key as a plain single-key call would)"
                ),
            )),
            None => Ok(()),
        }
    };
    not_with("key", args.key.as_ref().map(|(s, _)| *s))?;
    not_with("tags", args.tags.as_ref().map(|(s, _)| *s))?;
    not_with("stale", args.stale.map(|t| t.span))?;
    not_with("early_refresh", args.early_refresh.map(|(_, s)| s))?;
    not_with("refresh", args.refresh.as_ref().map(syn::LitStr::span))?;
    not_with("fail_safe", args.fail_safe.map(|t| t.span))?;
    not_with("timeout", args.timeout.map(|t| t.span))?;
    not_with("verify", args.verify.map(|(_, s)| s))?;
    not_with("keep_decoded", args.keep_decoded)?;
    not_with(
        "unless",
        args.unless.as_ref().map(syn::spanned::Spanned::span),
    )?;
    not_with(
        "ttl = f",
        args.ttl_of.as_ref().map(syn::spanned::Spanned::span),
    )?;
    not_with(
        "local",
        args.local.as_ref().map(|l| match l {
            Local::Ttl(t) => t.span,
            Local::Off | Local::True(_) => batch_span,
        }),
    )?;
    if let Some(g) = func.item.sig.generics.type_params().next() {
        return Err(Error::new_spanned(
            g,
            "a batch fn cannot be generic yet: write one for each type",
        ));
    }
    let skip: &[Ident] = args.skip.as_ref().map_or(&[], |(_, names)| names);
    check_names(&func, skip, "skip", "")?;
    // The receiver and every other argument are shared by each round of
    // the body: references only.
    let by_ref = "a batch fn's body may run more than once (once per round of missing keys), \
                  so its other arguments are taken by shared reference: take `&T`";
    if let Some(syn::FnArg::Receiver(r)) = func.item.sig.inputs.first() {
        let shared = match &r.kind {
            syn::ReceiverKind::Reference(_, _, None) => true,
            syn::ReceiverKind::Typed(_, ty) => matches!(
                crate::model::strip(ty),
                Type::Reference(t) if t.mutability.is_none()
            ),
            _ => false,
        };
        if !shared {
            return Err(Error::new_spanned(r, format!("{by_ref} (`&self`)")));
        }
    }
    let mut keys = None;
    for arg in &func.args {
        let Some(name) = &arg.name else {
            return Err(Error::new(arg.pat_span, BATCH_KEYS));
        };
        if skip.contains(name) {
            match crate::model::strip(&arg.ty) {
                Type::Reference(r) if r.mutability.is_none() => {}
                _ => return Err(Error::new_spanned(&arg.ty, by_ref)),
            }
            continue;
        }
        if keys.is_some() {
            return Err(Error::new(name.span(), BATCH_KEYS));
        }
        keys = Some((name.clone(), &arg.ty));
    }
    let Some((keys, keys_ty)) = keys else {
        return Err(Error::new(
            func.item.sig.paren_token.span.join(),
            BATCH_KEYS,
        ));
    };
    let (keys_form, key_ty) = match crate::model::strip(keys_ty) {
        Type::Reference(r) if r.mutability.is_none() => match crate::model::strip(&r.elem) {
            Type::Slice(s) => (KeysForm::Slice, (*s.elem).clone()),
            t => match vec_elem(t) {
                Some(k) => (KeysForm::VecRef, k.clone()),
                None => return Err(Error::new_spanned(keys_ty, BATCH_KEYS)),
            },
        },
        t => match vec_elem(t) {
            Some(k) => (KeysForm::Vec, k.clone()),
            None => return Err(Error::new_spanned(keys_ty, BATCH_KEYS)),
        },
    };
    const BATCH_RET: &str = "a batch fn returns the values by key: `HashMap<K, V>` or \
                             `Result<HashMap<K, V>, E>` (a key left out is not stored)";
    let (map_ty, ret_ty, is_result) = match &func.ret {
        Ret::Result { ok } => (ok.clone(), func.return_type(), true),
        Ret::Value(t) => (t.clone(), t.clone(), false),
        Ret::Opaque(t) => return Err(Error::new_spanned(t, BATCH_RET)),
        Ret::Unit => {
            return Err(Error::new(
                func.item.sig.paren_token.span.close(),
                BATCH_RET,
            ));
        }
    };
    let Some(value_ty) = map_value(&map_ty).cloned() else {
        return Err(Error::new_spanned(&map_ty, BATCH_RET));
    };
    let ttl = duration("ttl", args.ttl)?;
    let lock_wait = duration("lock_wait", args.lock_wait)?;
    let lease = duration("lease", args.lease)?;
    Ok(Batch {
        krate: krate(args.krate),
        ns,
        version: args.version,
        options: Options {
            ttl,
            stale: None,
            lock: args.lock,
            lock_wait,
            lease,
            early_refresh: None,
            local: None,
            fail_safe: None,
            timeout: None,
            compress: args.compress,
            verify: None,
        },
        cache: args.cache,
        keys,
        keys_form,
        key_ty,
        value_ty,
        ret_ty,
        is_result,
        func,
    })
}
