//! Option parsing for both attributes. Every option is `name = value` or
//! `name(...)`; unknown and duplicated options are errors at their token.

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Error, Expr, Ident, LitInt, LitStr, Path, Result, Token, parenthesized};

const CACHED_OPTIONS: &str = "`ns`, `ttl`, `skip`, `key`, `cache`, `version`, `unless`, `crate`";
const INVALIDATES_OPTIONS: &str = "namespace strings, `ns`, `key`, `cache`, `version`, `crate`";

/// `key(a, b)` (names of arguments) or `key = <expr>`.
pub(crate) enum KeySpec {
    Args(Vec<Ident>),
    Expr(Box<Expr>),
}

#[derive(Default)]
pub(crate) struct CachedArgs {
    pub ns: Option<LitStr>,
    pub ttl: Option<Duration>,
    pub skip: Vec<Ident>,
    pub key: Option<(Span, KeySpec)>,
    pub cache: Option<Expr>,
    pub version: Option<u32>,
    pub unless: Option<Expr>,
    pub krate: Option<Path>,
}

#[derive(Default)]
pub(crate) struct InvalidatesArgs {
    pub namespaces: Vec<LitStr>,
    pub key: Option<(Span, KeySpec)>,
    pub cache: Option<Expr>,
    pub version: Option<u32>,
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
                "ttl" => args.ttl = Some(parse_ttl(input)?),
                "skip" => args.skip = parse_idents(input, &name)?,
                "key" => args.key = Some((name.span(), parse_key(input)?)),
                "cache" => args.cache = Some(parse_value(input, &name)?),
                "version" => args.version = Some(parse_version(input, &name)?),
                "unless" => args.unless = Some(parse_value(input, &name)?),
                "crate" => args.krate = Some(parse_crate(input, &name)?),
                other => {
                    return Err(Error::new(
                        name.span(),
                        format!(
                            "unknown option `{other}` for #[cached]; expected one of {CACHED_OPTIONS}"
                        ),
                    ));
                }
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
                let ns: LitStr = input.parse()?;
                check_ns(&ns)?;
                if args.namespaces.iter().any(|n| n.value() == ns.value()) {
                    return Err(Error::new(
                        ns.span(),
                        format!("namespace \"{}\" is listed twice", ns.value()),
                    ));
                }
                args.namespaces.push(ns);
            } else {
                let name = input.call(Ident::parse_any)?;
                seen.check(&name)?;
                match name.unraw().to_string().as_str() {
                    "ns" => {
                        let ns = parse_ns(input, &name)?;
                        if args.namespaces.iter().any(|n| n.value() == ns.value()) {
                            return Err(Error::new(
                                ns.span(),
                                format!("namespace \"{}\" is listed twice", ns.value()),
                            ));
                        }
                        args.namespaces.push(ns);
                    }
                    "key" => args.key = Some((name.span(), parse_key(input)?)),
                    "cache" => args.cache = Some(parse_value(input, &name)?),
                    "version" => args.version = Some(parse_version(input, &name)?),
                    "crate" => args.krate = Some(parse_crate(input, &name)?),
                    other => {
                        return Err(Error::new(
                            name.span(),
                            format!(
                                "unknown option `{other}` for #[invalidates]; expected {INVALIDATES_OPTIONS}"
                            ),
                        ));
                    }
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        if args.namespaces.is_empty() {
            return Err(Error::new(
                Span::call_site(),
                "#[invalidates] needs a namespace: #[invalidates(\"flight_count\")] for a whole \
                 namespace, or #[invalidates(ns = \"airport\", key(code))] for one entry",
            ));
        }
        if let Some((span, _)) = &args.key
            && args.namespaces.len() != 1
        {
            {
                return Err(Error::new(
                    *span,
                    "`key` invalidates one entry of one namespace: name exactly one namespace",
                ));
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

fn check_ns(ns: &LitStr) -> Result<()> {
    let v = ns.value();
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ns.span(),
            format!(
                "invalid namespace \"{v}\": use 1 to 64 characters of letters, digits, `_`, `.` or `-`"
            ),
        ))
    }
}

fn parse_ns(input: ParseStream<'_>, name: &Ident) -> Result<LitStr> {
    eq(input, name)?;
    let ns: LitStr = input
        .parse()
        .map_err(|e| Error::new(e.span(), "expected a string: `ns = \"flight_count\"`"))?;
    check_ns(&ns)?;
    Ok(ns)
}

fn parse_ttl(input: ParseStream<'_>) -> Result<Duration> {
    input.parse::<Token![=]>()?;
    let lookahead = input.lookahead1();
    let (ttl, span) = if lookahead.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let ttl = humantime::parse_duration(&lit.value()).map_err(|e| {
            Error::new(
                lit.span(),
                format!(
                    "invalid ttl \"{}\": {e}; write a duration such as \"90s\", \"5m\", \"1h 30m\", or whole seconds such as 300",
                    lit.value()
                ),
            )
        })?;
        (ttl, lit.span())
    } else if lookahead.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        let secs = lit.base10_parse::<u64>().map_err(|_| {
            Error::new(
                lit.span(),
                "invalid ttl: whole seconds must be a non-negative integer that fits in u64",
            )
        })?;
        (Duration::from_secs(secs), lit.span())
    } else {
        return Err(Error::new(
            lookahead.error().span(),
            "invalid ttl: write a duration string such as \"90s\" or \"5m\", or whole seconds such as 300",
        ));
    };
    if ttl < Duration::from_millis(1) {
        return Err(Error::new(span, "invalid ttl: it must be at least 1ms"));
    }
    Ok(ttl)
}

fn parse_version(input: ParseStream<'_>, name: &Ident) -> Result<u32> {
    eq(input, name)?;
    let lit: LitInt = input
        .parse()
        .map_err(|e| Error::new(e.span(), "expected an integer: `version = 2`"))?;
    lit.base10_parse::<u32>().map_err(|_| {
        Error::new(
            lit.span(),
            "version must be an integer from 0 to 4294967295",
        )
    })
}

fn parse_crate(input: ParseStream<'_>, name: &Ident) -> Result<Path> {
    eq(input, name)?;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        lit.parse::<Path>()
            .map_err(|_| Error::new(lit.span(), "expected a path such as \"::cachet\""))
    } else {
        input.call(Path::parse_mod_style)
    }
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

fn parse_key(input: ParseStream<'_>) -> Result<KeySpec> {
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
            input.span(),
            "expected `key(arg, ...)` or `key = <expression>`",
        ))
    }
}
