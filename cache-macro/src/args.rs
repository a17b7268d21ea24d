//! Option parsing for both attributes: tokens to values, nothing more.
//! Every option is `name = value` or `name(...)`; unknown and duplicated
//! options, and values that are not of the option's form (a string that is
//! no duration, a negative number), are errors at their token. Whether the
//! values make sense together is `validate.rs`'s job.

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Error, Expr, Ident, LitInt, LitStr, Path, Result, Token, parenthesized};

const CACHED_OPTIONS: &[&str] = &[
    "ns",
    "ttl",
    "skip",
    "key",
    "cache",
    "version",
    "unless",
    "stale",
    "lock",
    "lock_wait",
    "lease",
    "early_refresh",
    "local",
    "refresh",
    "fail_safe",
    "timeout",
    "tags",
    "compress",
    "verify",
    "batch",
    "keep_decoded",
    "crate",
];
const INVALIDATES_OPTIONS: &[&str] = &["ns", "key", "tag", "cache", "scoped", "crate"];
const CACHE_PUT_OPTIONS: &[&str] = &[
    "ns", "key", "ttl", "version", "lease", "compress", "cache", "crate",
];

/// `unknown option` error at `name`, with a "did you mean" when one option
/// is close.
fn unknown_option(name: &Ident, attr: &str, options: &[&str], extra: &str) -> Error {
    let other = name.unraw().to_string();
    let list = options
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = did_you_mean(&other, options.iter().copied())
        .map(|o| format!("did you mean `{o}`? "))
        .unwrap_or_default();
    Error::new(
        name.span(),
        format!("unknown option `{other}` for #[{attr}]: {hint}the options are {extra}{list}"),
    )
}

/// The candidate closest to `name` by edit distance, if it is close enough
/// to be a typo.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let max = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, _)| d <= max)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// `key(a, b)` (names of arguments) or `key = <expr>`.
pub(crate) enum KeySpec {
    Args(Vec<Ident>),
    Expr(Box<Expr>),
}

/// One tag: `user` (the argument's value) or `user = expr`.
pub(crate) struct TagSpec {
    pub name: Ident,
    pub value: Option<Expr>,
}

/// A duration option's value, with the span of its literal.
#[derive(Clone, Copy)]
pub(crate) struct Timed {
    pub value: Duration,
    pub span: Span,
}

/// `local = "10s"`, `local = false`, or the mistake `local = true`.
#[derive(Clone, Copy)]
pub(crate) enum Local {
    Ttl(Timed),
    Off,
    True(Span),
}

/// `compress`, `compress = false`, `compress = "16KiB"` (or a number of bytes).
#[derive(Clone, Copy)]
pub(crate) enum Compress {
    On,
    Off,
    Above(usize),
}

/// A namespace as written: a string, or the path of a `&str` constant
/// (so that a reader and its writers can share one name).
#[derive(Clone)]
pub(crate) enum NsName {
    Lit(LitStr),
    Const(Path),
}

impl NsName {
    pub(crate) fn span(&self) -> Span {
        match self {
            NsName::Lit(l) => l.span(),
            NsName::Const(p) => syn::spanned::Spanned::span(p),
        }
    }
}

#[derive(Default)]
pub(crate) struct CachedArgs {
    pub ns: Option<NsName>,
    pub ttl: Option<Timed>,
    /// `ttl = <path or closure>`: the TTL computed from the value.
    pub ttl_of: Option<Expr>,
    /// The `skip` token and the names it lists.
    pub skip: Option<(Span, Vec<Ident>)>,
    pub key: Option<(Span, KeySpec)>,
    pub cache: Option<Expr>,
    pub version: Option<u32>,
    pub unless: Option<Expr>,
    pub stale: Option<Timed>,
    pub lock: Option<bool>,
    pub lock_wait: Option<Timed>,
    pub lease: Option<Timed>,
    /// The XFetch beta and its span.
    pub early_refresh: Option<(f64, Span)>,
    pub local: Option<Local>,
    /// `refresh = "inline"` or `"background"`, with the literal's span.
    pub refresh: Option<LitStr>,
    pub fail_safe: Option<Timed>,
    pub timeout: Option<Timed>,
    /// `tags(a, b = expr)`, with the span of `tags`.
    pub tags: Option<(Span, Vec<TagSpec>)>,
    pub compress: Option<Compress>,
    /// `verify = 0.001`: the share of hits the probe recomputes, with its span.
    pub verify: Option<(f64, Span)>,
    /// `batch`: the fn reads many keys at once (its span).
    pub batch: Option<Span>,
    /// `keep_decoded`: the local tier keeps the decoded value (its span).
    pub keep_decoded: Option<Span>,
    pub krate: Option<Path>,
}

#[derive(Default)]
pub(crate) struct InvalidatesArgs {
    pub namespaces: Vec<NsName>,
    pub key: Option<(Span, KeySpec)>,
    pub cache: Option<Expr>,
    /// `version = ..`, which a key invalidation no longer needs (an error).
    pub version: Option<Span>,
    /// `scoped`: callers run the fn inside `cache_aside::transaction`.
    pub scoped: bool,
    /// Every `tag(..)` (several allowed), with the span of the first.
    pub tags: Vec<TagSpec>,
    pub tag_span: Option<Span>,
    pub krate: Option<Path>,
}

#[derive(Default)]
pub(crate) struct CachePutArgs {
    pub ns: Option<NsName>,
    pub key: Option<(Span, KeySpec)>,
    pub ttl: Option<Timed>,
    /// `ttl = f`: the TTL from the value.
    pub ttl_of: Option<Expr>,
    pub version: Option<u32>,
    pub lease: Option<Timed>,
    pub compress: Option<Compress>,
    pub cache: Option<Expr>,
    pub krate: Option<Path>,
}

/// Remembers which options were seen, to reject duplicates at the second one.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn check(&mut self, name: &Ident) -> Result<()> {
        let n = name.unraw().to_string();
        if self.0.contains(&n) {
            return Err(Error::new(
                name.span(),
                format!("duplicate option `{n}`: give each option once"),
            ));
        }
        self.0.push(n);
        Ok(())
    }
}

impl Parse for CachedArgs {
    fn parse(input: ParseStream<'_>) -> Result<Self> {
        let mut args = CachedArgs::default();
        let mut seen = Seen::default();
        while !input.is_empty() {
            let name = input.call(Ident::parse_any)?;
            seen.check(&name)?;
            match name.unraw().to_string().as_str() {
                "ns" => args.ns = Some(parse_ns(input, &name)?),
                "ttl" => match parse_ttl_or_fn(input, &name)? {
                    Ok(t) => args.ttl = Some(t),
                    Err(f) => args.ttl_of = Some(f),
                },
                "skip" => args.skip = Some((name.span(), parse_idents(input, &name)?)),
                "key" => args.key = Some((name.span(), parse_key(input, &name)?)),
                "cache" => args.cache = Some(parse_value(input, &name)?),
                "version" => args.version = Some(parse_version(input, &name)?),
                "unless" => args.unless = Some(parse_value(input, &name)?),
                "stale" => args.stale = Some(parse_ttl(input, &name)?),
                "lock" => args.lock = Some(parse_bool(input, &name)?),
                "lock_wait" => args.lock_wait = Some(parse_ttl(input, &name)?),
                "lease" => args.lease = Some(parse_ttl(input, &name)?),
                "early_refresh" => args.early_refresh = Some(parse_beta(input, &name)?),
                "local" => args.local = Some(parse_local(input, &name)?),
                "refresh" => args.refresh = Some(parse_refresh(input, &name)?),
                "fail_safe" => args.fail_safe = Some(parse_ttl(input, &name)?),
                "timeout" => args.timeout = Some(parse_ttl(input, &name)?),
                "tags" => args.tags = Some((name.span(), parse_tags(input, &name)?)),
                "compress" => args.compress = Some(parse_compress(input)?),
                "verify" => args.verify = Some(parse_share(input, &name)?),
                "batch" => args.batch = Some(name.span()),
                "keep_decoded" => args.keep_decoded = Some(name.span()),
                "tag" => {
                    return Err(Error::new(
                        name.span(),
                        "#[cached] lists its tags in `tags(..)`: write `tags(user)` (`tag(..)` is \
                         #[invalidates]'s)",
                    ));
                }
                "crate" => args.krate = Some(parse_crate(input, &name)?),
                _ => return Err(unknown_option(&name, "cached", CACHED_OPTIONS, "")),
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

impl Parse for InvalidatesArgs {
    fn parse(input: ParseStream<'_>) -> Result<Self> {
        let mut args = InvalidatesArgs::default();
        let mut seen = Seen::default();
        while !input.is_empty() {
            if input.peek(LitStr) {
                args.namespaces.push(NsName::Lit(input.parse()?));
            } else if is_const_path(input) {
                args.namespaces.push(NsName::Const(input.parse()?));
            } else {
                let name = input.call(Ident::parse_any)?;
                if name != "tag" {
                    seen.check(&name)?;
                }
                match name.unraw().to_string().as_str() {
                    "ns" => args.namespaces.push(parse_ns(input, &name)?),
                    "tag" => {
                        args.tag_span.get_or_insert(name.span());
                        for t in parse_tags(input, &name)? {
                            if args.tags.iter().any(|o| o.name == t.name) {
                                return Err(Error::new(
                                    t.name.span(),
                                    format!("tag `{}` is listed twice", t.name),
                                ));
                            }
                            args.tags.push(t);
                        }
                    }
                    "tags" => {
                        return Err(Error::new(
                            name.span(),
                            "#[invalidates] names each tag it invalidates with `tag(..)`: write \
                             `tag(user)` or `tag(user = o.user_id)`",
                        ));
                    }
                    "key" => args.key = Some((name.span(), parse_key(input, &name)?)),
                    "cache" => args.cache = Some(parse_value(input, &name)?),
                    "scoped" => args.scoped = true,
                    "version" => {
                        parse_version(input, &name)?;
                        args.version = Some(name.span());
                    }
                    "crate" => args.krate = Some(parse_crate(input, &name)?),
                    _ => {
                        return Err(unknown_option(
                            &name,
                            "invalidates",
                            INVALIDATES_OPTIONS,
                            "namespace strings (`\"flight_count\"`), ",
                        ));
                    }
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

impl Parse for CachePutArgs {
    fn parse(input: ParseStream<'_>) -> Result<Self> {
        let mut args = CachePutArgs::default();
        let mut seen = Seen::default();
        while !input.is_empty() {
            if input.peek(LitStr) {
                let lit: LitStr = input.parse()?;
                return Err(Error::new(
                    lit.span(),
                    format!(
                        "#[cache_put] names its namespace with `ns`: write `ns = \"{}\"`",
                        lit.value()
                    ),
                ));
            }
            let name = input.call(Ident::parse_any)?;
            seen.check(&name)?;
            match name.unraw().to_string().as_str() {
                "ns" => args.ns = Some(parse_ns(input, &name)?),
                "key" => args.key = Some((name.span(), parse_key(input, &name)?)),
                "ttl" => match parse_ttl_or_fn(input, &name)? {
                    Ok(t) => args.ttl = Some(t),
                    Err(f) => args.ttl_of = Some(f),
                },
                "version" => args.version = Some(parse_version(input, &name)?),
                "lease" => args.lease = Some(parse_ttl(input, &name)?),
                "compress" => args.compress = Some(parse_compress(input)?),
                "cache" => args.cache = Some(parse_value(input, &name)?),
                "crate" => args.krate = Some(parse_crate(input, &name)?),
                _ => return Err(unknown_option(&name, "cache_put", CACHE_PUT_OPTIONS, "")),
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

fn eq(input: ParseStream<'_>, name: &Ident) -> Result<()> {
    if !input.peek(Token![=]) {
        return Err(Error::new(
            name.span(),
            format!("expected `{} = ...`", name.unraw()),
        ));
    }
    input.parse::<Token![=]>()?;
    Ok(())
}

fn parse_value(input: ParseStream<'_>, name: &Ident) -> Result<Expr> {
    eq(input, name)?;
    input.parse()
}

fn parse_ns(input: ParseStream<'_>, name: &Ident) -> Result<NsName> {
    eq(input, name)?;
    if input.peek(LitStr) {
        return Ok(NsName::Lit(input.parse()?));
    }
    input.parse().map(NsName::Const).map_err(|e| {
        Error::new(
            e.span(),
            "expected a string or the path of a `&str` constant: `ns = \"flight_count\"`, \
             `ns = FLIGHT_COUNT`",
        )
    })
}

/// A positional namespace given as a constant's path: `crate::ns::USER`,
/// `users::NS`, `Self::NS`, or one name in capitals (`USER_NS`), as
/// constants are named. A lowercase name alone is an option (a misspelt one
/// gets its "did you mean"), and `crate = ..` is the option.
fn is_const_path(input: ParseStream<'_>) -> bool {
    if input.peek(Token![::]) {
        return true;
    }
    let fork = input.fork();
    let Ok(first) = fork.call(Ident::parse_any) else {
        return false;
    };
    if fork.peek(Token![::]) {
        return true;
    }
    let name = first.unraw().to_string();
    let capitals = name.chars().any(|c| c.is_ascii_uppercase())
        && !name.chars().any(|c| c.is_ascii_lowercase());
    capitals && (fork.is_empty() || fork.peek(Token![,]))
}

const TTL_HELP: &str =
    "write a duration string such as \"90s\", \"5m\" or \"1h 30m\", or whole seconds such as 300";

/// `local = "10s"`, or `local = false` to opt out of a cache-wide default.
fn parse_local(input: ParseStream<'_>, name: &Ident) -> Result<Local> {
    if input.peek(Token![=]) && input.peek2(syn::LitBool) {
        input.parse::<Token![=]>()?;
        let lit: syn::LitBool = input.parse()?;
        return Ok(if lit.value {
            Local::True(lit.span())
        } else {
            Local::Off
        });
    }
    parse_ttl(input, name).map(Local::Ttl)
}

/// `compress` alone (or `= true`): above the cache's threshold;
/// `compress = false`: never; `compress = "16KiB"` or `compress = 16384`:
/// encodings of at least that many bytes.
fn parse_compress(input: ParseStream<'_>) -> Result<Compress> {
    const HELP: &str = "write `compress` (above the cache's threshold), `compress = false`, or a \
                        size: `compress = \"16KiB\"` (units B, KiB, MiB) or `compress = 16384` (bytes)";
    if !input.peek(Token![=]) {
        return Ok(Compress::On);
    }
    input.parse::<Token![=]>()?;
    if input.peek(syn::LitBool) {
        let lit: syn::LitBool = input.parse()?;
        return Ok(if lit.value {
            Compress::On
        } else {
            Compress::Off
        });
    }
    if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        return lit
            .base10_parse::<usize>()
            .map(Compress::Above)
            .map_err(|_| Error::new(lit.span(), HELP));
    }
    let lit: LitStr = input.parse().map_err(|e| Error::new(e.span(), HELP))?;
    parse_size(&lit.value())
        .map(Compress::Above)
        .ok_or_else(|| Error::new(lit.span(), format!("`{}` is no size: {HELP}", lit.value())))
}

/// "512B", "16KiB", "1MiB", "4096": a number of bytes.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(digits);
    let n: usize = n.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// `refresh = "inline"` or `refresh = "background"`.
fn parse_refresh(input: ParseStream<'_>, name: &Ident) -> Result<LitStr> {
    eq(input, name)?;
    let lit: LitStr = input.parse().map_err(|e| {
        Error::new(
            e.span(),
            "expected `refresh = \"background\"` (the default) or `refresh = \"inline\"`",
        )
    })?;
    match lit.value().as_str() {
        "inline" | "background" => Ok(lit),
        other => Err(Error::new(
            lit.span(),
            format!(
                "unknown refresh {other:?}: `refresh = \"background\"` (the default: the caller that \
                 wins a refresh returns the entry it read and the body runs in a task of its own) or \
                 `refresh = \"inline\"` (that caller runs the body and waits for it)"
            ),
        )),
    }
}

/// `ttl`: a duration (`Ok`), or the path of a fn or a closure that maps
/// the value to its TTL (`Err`).
fn parse_ttl_or_fn(
    input: ParseStream<'_>,
    name: &Ident,
) -> Result<std::result::Result<Timed, Expr>> {
    let fork = input.fork();
    let _ = fork.parse::<Token![=]>();
    let literal = fork.peek(LitStr) || fork.peek(LitInt);
    if literal {
        // A literal alone is a duration; followed by more, an expression.
        let _ = fork.parse::<syn::Lit>();
        // (An option's name after it: a missing comma, reported as such.)
        if fork.is_empty() || fork.peek(Token![,]) || fork.peek(Ident::peek_any) {
            return parse_ttl(input, name).map(Ok);
        }
    } else if fork.peek(Token![-]) {
        return parse_ttl(input, name).map(Ok);
    }
    eq(input, name)?;
    let f: Expr = input.parse().map_err(|e| {
        Error::new(
            e.span(),
            format!("invalid ttl: {TTL_HELP}; or the path of a fn or a closure `|value: &T| ..` that returns a `Duration`"),
        )
    })?;
    match &f {
        Expr::Path(_) | Expr::Closure(_) => Ok(Err(f)),
        other => Err(Error::new_spanned(
            other,
            format!(
                "invalid ttl: {TTL_HELP}; or the path of a fn or a closure that takes the value \
                 (`&T`, the `Ok` value for a `Result`) and returns a `Duration`, such as \
                 `ttl = |found: &Option<Row>| if found.is_some() {{ HOUR }} else {{ MINUTE }}`"
            ),
        )),
    }
}

fn parse_ttl(input: ParseStream<'_>, name: &Ident) -> Result<Timed> {
    eq(input, name)?;
    let what = name.unraw().to_string();
    if input.peek(Token![-]) {
        let msg = format!("invalid {what}: a {what} must be positive; ");
        return Err(negative(input, &msg)?);
    }
    let lookahead = input.lookahead1();
    let (ttl, span) = if lookahead.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let ttl = humantime::parse_duration(&lit.value()).map_err(|e| {
            Error::new(
                lit.span(),
                format!("invalid {what} \"{}\" ({e}): {TTL_HELP}", lit.value()),
            )
        })?;
        (ttl, lit.span())
    } else if lookahead.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        let secs = lit.base10_parse::<u64>().map_err(|_| {
            Error::new(
                lit.span(),
                format!(
                    "invalid {what} `{lit}`: whole seconds must be an integer that fits in u64"
                ),
            )
        })?;
        (Duration::from_secs(secs), lit.span())
    } else {
        return Err(Error::new(
            input.span(),
            format!("invalid {what}: {TTL_HELP}"),
        ));
    };
    Ok(Timed { value: ttl, span })
}

fn parse_bool(input: ParseStream<'_>, name: &Ident) -> Result<bool> {
    eq(input, name)?;
    let lit: syn::LitBool = input.parse().map_err(|e| {
        Error::new(
            e.span(),
            format!(
                "expected `{} = true` or `{} = false`",
                name.unraw(),
                name.unraw()
            ),
        )
    })?;
    Ok(lit.value)
}

/// `early_refresh` (beta 1.0) or `early_refresh = 1.5`.
fn parse_beta(input: ParseStream<'_>, name: &Ident) -> Result<(f64, Span)> {
    if !input.peek(Token![=]) {
        return Ok((1.0, name.span()));
    }
    input.parse::<Token![=]>()?;
    let (beta, span) = if input.peek(syn::LitFloat) {
        let lit: syn::LitFloat = input.parse()?;
        (lit.base10_parse::<f64>()?, lit.span())
    } else if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        (lit.base10_parse::<f64>()?, lit.span())
    } else {
        return Err(Error::new(
            input.span(),
            "expected `early_refresh` or `early_refresh = <beta>` with a positive number such as 1.0",
        ));
    };
    Ok((beta, span))
}

/// `verify = 0.001`: a number (checked to be a share in validate.rs).
fn parse_share(input: ParseStream<'_>, name: &Ident) -> Result<(f64, Span)> {
    const HELP: &str = "expected `verify = <share of hits>`, a number in (0, 1] such as 0.001";
    if !input.peek(Token![=]) {
        return Err(Error::new(name.span(), HELP));
    }
    input.parse::<Token![=]>()?;
    if input.peek(syn::LitFloat) {
        let lit: syn::LitFloat = input.parse()?;
        return Ok((lit.base10_parse::<f64>()?, lit.span()));
    }
    if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        return Ok((lit.base10_parse::<f64>()?, lit.span()));
    }
    Err(Error::new(input.span(), HELP))
}

/// The error for `-<number>`, spanning both tokens.
fn negative(input: ParseStream<'_>, prefix: &str) -> Result<Error> {
    let minus: Token![-] = input.parse()?;
    let lit: syn::Lit = input.parse()?;
    let text = format!("-{}", quote::ToTokens::to_token_stream(&lit));
    Ok(Error::new_spanned(
        quote::quote!(#minus #lit),
        format!("{prefix}`{text}` is negative"),
    ))
}

fn parse_version(input: ParseStream<'_>, name: &Ident) -> Result<u32> {
    eq(input, name)?;
    if input.peek(Token![-]) {
        return Err(negative(
            input,
            "invalid version: a version is an integer from 0 to 4294967295; ",
        )?);
    }
    let lit: LitInt = input
        .parse()
        .map_err(|e| Error::new(e.span(), "expected an integer: `version = 2`"))?;
    lit.base10_parse::<u32>().map_err(|_| {
        Error::new(
            lit.span(),
            "invalid version: a version is an integer from 0 to 4294967295",
        )
    })
}

fn parse_crate(input: ParseStream<'_>, name: &Ident) -> Result<Path> {
    eq(input, name)?;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        lit.parse::<Path>()
            .map_err(|_| Error::new(lit.span(), "expected a path such as \"::cache_aside\""))
    } else {
        input.call(Path::parse_mod_style)
    }
}

/// `tags(a, b = expr)` / `tag(a)`: names, each with an optional value.
fn parse_tags(input: ParseStream<'_>, name: &Ident) -> Result<Vec<TagSpec>> {
    if !input.peek(syn::token::Paren) {
        return Err(Error::new(
            name.span(),
            format!(
                "expected `{0}(user)` (the argument's value) or `{0}(user = expr)`",
                name.unraw()
            ),
        ));
    }
    let content;
    parenthesized!(content in input);
    let mut out: Vec<TagSpec> = Vec::new();
    while !content.is_empty() {
        let tag = content.call(Ident::parse_any)?;
        let value = if content.peek(Token![=]) {
            content.parse::<Token![=]>()?;
            Some(content.parse()?)
        } else {
            None
        };
        if out.iter().any(|o| o.name == tag) {
            return Err(Error::new(
                tag.span(),
                format!("tag `{tag}` is listed twice"),
            ));
        }
        out.push(TagSpec { name: tag, value });
        if !content.is_empty() {
            content.parse::<Token![,]>()?;
        }
    }
    if out.is_empty() {
        return Err(Error::new(
            name.span(),
            format!("`{}()` names no tag: write `{0}(user)`", name.unraw()),
        ));
    }
    Ok(out)
}

fn parse_idents(input: ParseStream<'_>, name: &Ident) -> Result<Vec<Ident>> {
    if !input.peek(syn::token::Paren) {
        return Err(Error::new(
            name.span(),
            format!("expected `{}(arg, ...)`", name.unraw()),
        ));
    }
    let content;
    parenthesized!(content in input);
    let list: Punctuated<Ident, Token![,]> =
        content.parse_terminated(Ident::parse_any, Token![,])?;
    if list.is_empty() {
        return Err(Error::new(
            name.span(),
            format!("`{}()` names no argument", name.unraw()),
        ));
    }
    let mut out: Vec<Ident> = Vec::new();
    for ident in list {
        if out.iter().any(|o| o == &ident) {
            return Err(Error::new(
                ident.span(),
                format!("`{ident}` is listed twice"),
            ));
        }
        out.push(ident);
    }
    Ok(out)
}

fn parse_key(input: ParseStream<'_>, name: &Ident) -> Result<KeySpec> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        Ok(KeySpec::Expr(Box::new(input.parse()?)))
    } else if input.peek(syn::token::Paren) {
        let span = input.span();
        let content;
        parenthesized!(content in input);
        let list: Punctuated<Ident, Token![,]> =
            content.parse_terminated(Ident::parse_any, Token![,])?;
        if list.is_empty() {
            return Err(Error::new(
                span,
                "`key()` names no argument: write `key(code)`",
            ));
        }
        Ok(KeySpec::Args(list.into_iter().collect()))
    } else {
        Err(Error::new(
            name.span(),
            "expected `key(arg, ...)` or `key = <expression>`",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{did_you_mean, edit_distance};

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("ttl", "ttl"), 0);
        assert_eq!(edit_distance("tll", "ttl"), 1);
        assert_eq!(edit_distance("tl", "ttl"), 1);
        assert_eq!(edit_distance("cahce", "cache"), 2);
        assert_eq!(edit_distance("", "key"), 3);
    }

    #[test]
    fn did_you_mean_suggests_only_close_names() {
        let options = ["ns", "ttl", "skip", "key", "cache", "version", "unless"];
        assert_eq!(did_you_mean("tll", options), Some("ttl"));
        assert_eq!(did_you_mean("vesion", options), Some("version"));
        assert_eq!(did_you_mean("keys", options), Some("key"));
        assert_eq!(did_you_mean("timeout", options), None);
        assert_eq!(did_you_mean("dbb", ["db", "code"]), Some("db"));
    }
}
