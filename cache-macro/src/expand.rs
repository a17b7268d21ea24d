//! Code generation. The body stays where it is, wrapped in an `async move`
//! block that is handed to the runtime, so `self`, generics, lifetimes and
//! `return`/`?` inside the body keep working. Every runtime item is reached
//! through `{crate}::__private` (default `::cache_aside`). Internal bindings are
//! prefixed `__cache_aside_`, so user arguments named `key` or `cache` cannot
//! collide.
//!
//! Type errors are reported once, at the user's token. The key parts, the
//! cached value, the `unless` filter and `cache = ..` go through small
//! dispatchers declared once in `__private` (`KeyPart`, `Value`, `Unless`,
//! `CacheArg`; see there). Their traits are brought into scope with
//! `use .. as _` in blocks of the generated body that do not contain the
//! user's body (`key_support`, `value_support`, `filter_support`), and their
//! methods are named `__cache_aside_*`, so they cannot clash with the user's
//! methods. When a type is what the runtime needs, method resolution
//! (autoref specialization) picks the method that passes the value through
//! unchanged; when it is not, it picks a fallback whose bound fails with one
//! error at the argument, return type or `unless`, and whose result keeps
//! the runtime calls well-typed, so no follow-on errors are reported inside
//! the expansion. Every fallback carries a failing bound, so a program that
//! compiles always takes the pass-through path.
//!
//! Paths spanned at a user's token (so that rustc reports there) go through
//! a name imported in the block rather than `{crate}::__private::..`: the
//! crate path keeps its own spans, as it may hold `$crate`.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Error, Expr, Ident, ItemFn, Path, Type};

use crate::args::{CachedArgs, InvalidatesArgs, KeySpec};
use crate::model::{Func, Ret, is_impl_trait, strip};

pub(crate) fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    let result = parse_item(item.clone(), "cached").and_then(|f| {
        let args = syn::parse2::<CachedArgs>(attr)?;
        expand_cached(args, f)
    });
    result.unwrap_or_else(|e| fallback(e, item))
}

pub(crate) fn invalidates(attr: TokenStream, item: TokenStream) -> TokenStream {
    let result = parse_item(item.clone(), "invalidates").and_then(|f| {
        let args = syn::parse2::<InvalidatesArgs>(attr)?;
        expand_invalidates(args, f)
    });
    result.unwrap_or_else(|e| fallback(e, item))
}

/// The original item, unchanged, plus the error: the function still exists,
/// so its callers do not report errors of their own.
fn fallback(e: Error, item: TokenStream) -> TokenStream {
    let mut out = e.to_compile_error();
    out.extend(item);
    out
}

fn parse_item(item: TokenStream, attr: &str) -> syn::Result<Func> {
    let parsed: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            if let Ok(decl) = syn::parse2::<syn::TraitItemFn>(item)
                && let Some(semi) = decl.semi_token
            {
                return Err(Error::new(
                    semi.span,
                    format!(
                        "#[{attr}] needs the function body: put it on the method in each `impl`, \
                         not on the trait's declaration"
                    ),
                ));
            }
            return Err(Error::new(
                e.span(),
                format!(
                    "#[{attr}] can only be used on an `async fn` (a free function or a method)"
                ),
            ));
        }
    };
    Func::new(parsed, attr)
}

fn krate(p: Option<Path>) -> TokenStream {
    p.map_or_else(|| quote!(::cache_aside), ToTokens::into_token_stream)
}

/// The `cache = <expr>` option: a statement binding the expression to a
/// local (so that an owned `Cache` or `Arc<Cache>`, e.g. `self.cache.clone()`
/// when `self` moves into the body, outlives the call that borrows it), and
/// the `Option<&Cache>` expression to use.
fn cache_expr(krate: &TokenStream, cache: Option<&Expr>) -> (TokenStream, TokenStream) {
    match cache {
        Some(e) => {
            // Spanned at the expression (a mixed-site span would move the
            // error of a wrong type to the whole attribute).
            let holder = Ident::new("cache_aside_cache_arg", e.span());
            // Called through a local name, so that the whole path has the
            // span of the expression (the crate path may hold `$crate`,
            // whose meaning depends on its span).
            let cache = quote_spanned! {e.span()=> __CacheAsideCacheArg::__cache_aside_cache(&#holder) };
            (
                quote_spanned! {e.span()=> let #holder = #e; },
                quote! {
                    #krate::__private::resolve(::core::option::Option::Some({
                        use #krate::__private::CacheArg as __CacheAsideCacheArg;
                        #cache
                    }))
                },
            )
        }
        None => (
            TokenStream::new(),
            quote!(#krate::__private::resolve(::core::option::Option::None)),
        ),
    }
}

/// The key expression handed to `__private::call` (a reference to the key).
fn key_expr(
    krate: &TokenStream,
    func: &Func,
    key: Option<&KeySpec>,
    skip: &[Ident],
) -> syn::Result<TokenStream> {
    match key {
        Some(KeySpec::Expr(e)) => {
            let part = key_part(krate, &quote!(&(#e)), e.span());
            Ok(quote!(&#part))
        }
        Some(KeySpec::Args(names)) => {
            func.check_names(names, "key")?;
            let mut parts = Vec::new();
            for name in names {
                if name == "self" {
                    parts.push(key_part(krate, &quote!(&#name), name.span()));
                    continue;
                }
                let arg = func
                    .arg(name)
                    .ok_or_else(|| Error::new(name.span(), "unknown argument"))?;
                check_key_arg(name, &arg.ty)?;
                parts.push(key_part(krate, &quote!(&#name), name.span()));
            }
            Ok(quote!(&(#(#parts,)*)))
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
                    Some(name) => check_key_arg(name, &arg.ty)
                        .map(|()| parts.push(key_part(krate, &quote!(&#name), name.span()))),
                };
                if let Err(e) = checked {
                    match &mut errors {
                        Some(all) => all.combine(e),
                        None => errors = Some(e),
                    }
                }
            }
            if let Some(e) = errors {
                return Err(e);
            }
            Ok(quote!(&(#(#parts,)*)))
        }
    }
}

/// One key part: `reference` (a `&T`) passed through the key dispatcher,
/// which returns it unchanged when `T` is `Serialize` and otherwise reports
/// the error at `span`.
fn key_part(krate: &TokenStream, reference: &TokenStream, span: Span) -> TokenStream {
    let method = Ident::new("__cache_aside_key_part", span);
    quote!((&#krate::__private::KeyPart(#reference)).#method())
}

fn check_key_arg(name: &Ident, ty: &Type) -> syn::Result<()> {
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

/// The `use` that brings the key dispatcher (`__private::KeyPart`) into
/// scope, for the block that builds the key.
fn key_support(krate: &TokenStream) -> TokenStream {
    quote! {
        #[allow(unused_imports)]
        use #krate::__private::{KeyPartErr as _, KeyPartOk as _};
    }
}

/// The `use` that brings the `unless` dispatcher (`__private::Unless`) into
/// scope, and `__private::unless_arg` under a local name, for the block that
/// prepares the value conversions.
fn filter_support(krate: &TokenStream) -> TokenStream {
    quote! {
        #[allow(unused_imports)]
        use #krate::__private::{UnlessErr as _, UnlessOk as _, unless_arg as __cache_aside_unless_arg};
    }
}

/// The `use` that brings the value dispatcher (`__private::Value`) into
/// scope, for the block that prepares the value conversions.
fn value_support(krate: &TokenStream) -> TokenStream {
    quote! {
        #[allow(unused_imports)]
        use #krate::__private::{ValueErrDe as _, ValueErrSer as _, ValueOk as _};
    }
}

fn ttl_tokens(ttl: Option<std::time::Duration>) -> TokenStream {
    match ttl {
        Some(d) => {
            let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
            quote!(::core::option::Option::Some(::core::time::Duration::new(#secs, #nanos)))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn unit_type() -> Type {
    syn::parse_quote!(())
}

fn expand_cached(args: CachedArgs, func: Func) -> syn::Result<TokenStream> {
    let krate = krate(args.krate);
    let skip: &[Ident] = args.skip.as_ref().map_or(&[], |(_, names)| names);
    func.check_names(skip, "skip")?;
    if let (Some(_), Some((span, _))) = (&args.key, &args.skip) {
        return Err(Error::new(
            *span,
            "`skip` has no effect when `key` is given: the key is exactly what `key` names; \
             remove `skip(..)`",
        ));
    }
    let key_expr = key_expr(&krate, &func, args.key.as_ref().map(|(_, k)| k), skip)?;
    let (attrs, vis, sig, block) = (
        &func.item.attrs,
        &func.item.vis,
        &func.item.sig,
        &func.item.block,
    );
    let fn_name = sig.ident.to_string();
    let ns = args.ns.as_ref().map_or_else(
        || fn_name.trim_start_matches("r#").to_string(),
        syn::LitStr::value,
    );
    if ns.len() > 64 {
        return Err(Error::new(
            sig.ident.span(),
            "the function name is longer than 64 characters: give a namespace with `ns = \"...\"`",
        ));
    }
    let version = args.version.unwrap_or(1);
    let opts = {
        let ttl = ttl_tokens(args.ttl);
        let stale = ttl_tokens(args.stale);
        let lock_wait = ttl_tokens(args.lock_wait);
        let lease = ttl_tokens(args.lease);
        let local = ttl_tokens(args.local);
        let lock = match args.lock {
            Some(b) => quote!(::core::option::Option::Some(#b)),
            None => quote!(::core::option::Option::None),
        };
        let early = match args.early_refresh {
            Some(beta) => quote!(::core::option::Option::Some(#beta)),
            None => quote!(::core::option::Option::None),
        };
        quote!(#krate::__private::CallOptions {
            ttl: #ttl,
            stale: #stale,
            lock: #lock,
            lock_wait: #lock_wait,
            lease: #lease,
            early_refresh: #early,
            local: #local,
        })
    };
    let (cache_binding, cache) = cache_expr(&krate, args.cache.as_ref());
    let (value_ty, ret_ty, is_result) = match &func.ret {
        Ret::Result { ok } => (ok.clone(), return_type(&func), true),
        Ret::Value(t) => (t.clone(), t.clone(), false),
        Ret::Unit => (unit_type(), unit_type(), false),
    };
    if let Type::Reference(r) = strip(&value_ty) {
        return Err(Error::new_spanned(
            r,
            "a cached function cannot return a reference: a cached value is deserialized into a \
             new value that it cannot borrow from, so return an owned type (`String` for \
             `&str`, `Vec<T>` for `&[T]`)",
        ));
    }
    // `__private::unless_arg` deduces a closure's argument type and reports
    // a mismatched `unless` at the expression; `__private::Unless` then keeps
    // the mismatch from spreading.
    let (filter_support, unless) = match &args.unless {
        Some(u) => {
            let method = Ident::new("__cache_aside_unless", u.span());
            // The whole call has the span of `unless`, so that rustc reports
            // a mismatch there (through a local name, as the crate path may
            // hold `$crate`, whose meaning depends on its span).
            let path = respan(quote!(__cache_aside_unless_arg::<#value_ty, _, _>), u.span());
            let filter = quote_spanned! {u.span()=> #path({ #u }) };
            (
                filter_support(&krate),
                quote!(#krate::__private::Unless::<#value_ty, _>::new(#filter).#method()),
            )
        }
        None => (TokenStream::new(), quote!(#krate::__private::NoFilter)),
    };
    let call = Ident::new("__cache_aside_call", Span::mixed_site());
    let out = Ident::new("__cache_aside_out", Span::mixed_site());
    let into = Ident::new("__cache_aside_into", Span::mixed_site());
    let from = Ident::new("__cache_aside_from", Span::mixed_site());
    let filter = Ident::new("__cache_aside_unless", Span::mixed_site());
    // The value dispatcher reports a non-cacheable type at the return type
    // (for `Result<T, E>`, at `T`).
    let dispatch = Ident::new("__cache_aside_value", value_ty.span());
    // A `Clone` error is handed to the callers that waited for the failed
    // computation (`__private::ShareProbe`); other errors are not shared.
    let share = if is_result {
        quote! {{
            #[allow(unused_imports)]
            use #krate::__private::{ShareClone as _, ShareNone as _};
            (&#krate::__private::ShareProbe::<
                <#ret_ty as #krate::__private::ResultTypes>::Err,
            >::NEW)
                .__cache_aside_sharer()
        },}
    } else {
        TokenStream::new()
    };
    let (method, stored, returned) = if is_result {
        (
            Ident::new("result", value_ty.span()),
            quote!(::core::result::Result::map(#out, #into)),
            quote!(::core::result::Result::map(#out, #from)),
        )
    } else {
        (
            Ident::new("value", value_ty.span()),
            quote!(#into(#out)),
            quote!(#from(#out)),
        )
    };
    let key_support = key_support(&krate);
    let value_support = value_support(&krate);
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #cache_binding
            let #call = {
                #key_support
                static __CACHE_ASIDE_SLOT: #krate::__private::NsSlot = #krate::__private::NsSlot::new();
                #krate::__private::call(::core::option::Option::Some(&__CACHE_ASIDE_SLOT), #cache, #ns, #version, #key_expr)
            };
            // `unless` is passed in braces, for one error span (see `__private::unless_arg`).
            #[allow(unused_braces)]
            let (#into, #from, #filter) = {
                #value_support
                #filter_support
                (&&&#krate::__private::Value::<#value_ty>::NEW).#dispatch(#unless)
            };
            let #out = #call.#method(#opts, #filter, #share async move {
                let #out: #ret_ty = #block;
                #stored
            })
            .await;
            #returned
        }
    })
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

fn return_type(func: &Func) -> Type {
    match &func.item.sig.output {
        syn::ReturnType::Type(_, t) => (**t).clone(),
        syn::ReturnType::Default => unit_type(),
    }
}

fn expand_invalidates(args: InvalidatesArgs, func: Func) -> syn::Result<TokenStream> {
    let krate = krate(args.krate);
    let (attrs, vis, sig, block) = (
        &func.item.attrs,
        &func.item.vis,
        &func.item.sig,
        &func.item.block,
    );
    let ret_ty = return_type(&func);
    let cache_var = Ident::new("__cache_aside_cache", Span::mixed_site());
    let out = Ident::new("__cache_aside_out", Span::mixed_site());
    let target = Ident::new("__cache_aside_target", Span::mixed_site());
    let (cache_binding, cache) = cache_expr(&krate, args.cache.as_ref());
    let version = args.version.unwrap_or(1);
    let (prepare, invalidate) = match &args.key {
        Some((_, spec)) => {
            let ns = &args.namespaces[0];
            let key_expr = key_expr(&krate, &func, Some(spec), &[])?;
            let key_support = key_support(&krate);
            (
                quote! {
                    let #target = {
                        #key_support
                        #krate::__private::call(::core::option::Option::None, #cache_var, #ns, #version, #key_expr)
                    };
                },
                quote!(#target.invalidate().await;),
            )
        }
        None => {
            let namespaces = &args.namespaces;
            (
                TokenStream::new(),
                quote!(#krate::__private::invalidate_namespaces(#cache_var, &[#(#namespaces),*]).await;),
            )
        }
    };
    let succeeded = match &func.ret {
        Ret::Result { .. } => quote!(::core::result::Result::is_ok(&#out)),
        _ => quote!(true),
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #cache_binding
            let #cache_var = #cache;
            #prepare
            let #out: #ret_ty = async move {
                let #out: #ret_ty = #block;
                #out
            }
            .await;
            if #succeeded {
                #invalidate
            }
            #out
        }
    })
}
