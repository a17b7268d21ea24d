//! Code generation. The body stays where it is, wrapped in an `async move`
//! block that is handed to the runtime, so `self`, generics, lifetimes and
//! `return`/`?` inside the body keep working. Every runtime item is reached
//! through `{crate}::__private` (default `::cachet`). Internal bindings are
//! prefixed `__cachet_`, so user arguments named `key` or `cache` cannot
//! collide.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Error, Expr, Ident, ItemFn, Path, Type};

use crate::args::{CachedArgs, InvalidatesArgs, KeySpec};
use crate::model::{Func, Ret, is_impl_trait};

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
    let item: ItemFn = syn::parse2(item).map_err(|e| {
        Error::new(
            e.span(),
            format!("#[{attr}] applies to an `async fn` (a free function or a method)"),
        )
    })?;
    Func::new(item, attr)
}

fn krate(p: Option<Path>) -> TokenStream {
    p.map_or_else(|| quote!(::cachet), ToTokens::into_token_stream)
}

fn cache_expr(krate: &TokenStream, cache: Option<&Expr>) -> TokenStream {
    match cache {
        Some(e) => quote_spanned! {e.span()=>
            #krate::__private::resolve(::core::option::Option::Some(
                #krate::__private::as_cache(#e)
            ))
        },
        None => quote!(#krate::__private::resolve(::core::option::Option::None)),
    }
}

/// The key tuple expression and the type checks for its parts.
fn key_parts(
    func: &Func,
    krate: &TokenStream,
    key: Option<&KeySpec>,
    skip: &[Ident],
) -> syn::Result<(TokenStream, TokenStream)> {
    match key {
        Some(KeySpec::Expr(e)) => {
            let check = quote_spanned! {e.span()=> #krate::__private::assert_key_arg(&(#e)); };
            Ok((quote!(&(#e)), check))
        }
        Some(KeySpec::Args(names)) => {
            func.check_names(names, "key")?;
            let mut parts = Vec::new();
            let mut checks = TokenStream::new();
            for name in names {
                if name == "self" {
                    parts.push(quote!(self));
                    continue;
                }
                let arg = func
                    .arg(name)
                    .ok_or_else(|| Error::new(name.span(), "unknown argument"))?;
                checks.extend(arg_check(krate, name, &arg.ty)?);
                parts.push(quote!(#name));
            }
            Ok((quote!(&(#(&#parts,)*)), checks))
        }
        None => {
            let mut parts = Vec::new();
            let mut checks = TokenStream::new();
            let mut errors: Option<Error> = None;
            for arg in &func.args {
                if arg.name.as_ref().is_some_and(|n| skip.contains(n)) {
                    continue;
                }
                let checked = match &arg.name {
                    None => Err(Error::new(
                        arg.pat_span,
                        "a key argument needs a plain name: bind it to a name and destructure it \
                         in the body, or leave it out of the key with `skip(..)`",
                    )),
                    Some(name) => arg_check(krate, name, &arg.ty).map(|c| {
                        checks.extend(c);
                        parts.push(name.clone());
                    }),
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
            Ok((quote!(&(#(&#parts,)*)), checks))
        }
    }
}

fn arg_check(krate: &TokenStream, name: &Ident, ty: &Type) -> syn::Result<TokenStream> {
    if is_impl_trait(ty) {
        return Err(Error::new(
            ty.span(),
            format!(
                "`impl Trait` argument `{name}` cannot be part of the cache key: leave it out with \
                 `skip({name})`, or give it a concrete type that implements Serialize"
            ),
        ));
    }
    Ok(quote_spanned! {ty.span()=> #krate::__private::assert_key_arg(&#name); })
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
    func.check_names(&args.skip, "skip")?;
    if let (Some((span, _)), Some(first)) = (&args.key, args.skip.first()) {
        let mut e = Error::new(first.span(), "`skip` has no effect when `key` is given");
        e.combine(Error::new(*span, "`key` replaces the default key here"));
        return Err(e);
    }
    let (key_expr, checks) =
        key_parts(&func, &krate, args.key.as_ref().map(|(_, k)| k), &args.skip)?;
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
    let ttl = ttl_tokens(args.ttl);
    let cache = cache_expr(&krate, args.cache.as_ref());
    let (value_ty, ret_ty, method) = match &func.ret {
        Ret::Result { ok } => (ok.clone(), return_type(&func), quote!(result)),
        Ret::Value(t) => (t.clone(), t.clone(), quote!(value)),
        Ret::Unit => (unit_type(), unit_type(), quote!(value)),
    };
    let value_check = quote_spanned! {value_ty.span()=>
        #krate::__private::assert_cacheable::<#value_ty>();
    };
    let unless = match &args.unless {
        Some(u) => quote_spanned! {u.span()=> #krate::__private::filter::<#value_ty, _>(#u) },
        None => quote!(#krate::__private::NoFilter),
    };
    let call = Ident::new("__cachet_call", Span::mixed_site());
    let out = Ident::new("__cachet_out", Span::mixed_site());
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #checks
            #value_check
            let #call = #krate::__private::call(#cache, #ns, #version, #key_expr);
            #call.#method(#ttl, #unless, async move {
                let #out: #ret_ty = #block;
                #out
            })
            .await
        }
    })
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
    let cache_var = Ident::new("__cachet_cache", Span::mixed_site());
    let out = Ident::new("__cachet_out", Span::mixed_site());
    let target = Ident::new("__cachet_target", Span::mixed_site());
    let cache = cache_expr(&krate, args.cache.as_ref());
    let version = args.version.unwrap_or(1);
    let (prepare, invalidate) = match &args.key {
        Some((_, spec)) => {
            let ns = &args.namespaces[0];
            let (key_expr, checks) = key_parts(&func, &krate, Some(spec), &[])?;
            (
                quote! {
                    #checks
                    let #target = #krate::__private::call(#cache_var, #ns, #version, #key_expr);
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
