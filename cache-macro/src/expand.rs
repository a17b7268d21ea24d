//! Code generation. The body stays where it is, wrapped in an `async move`
//! block that is handed to the runtime, so `self`, generics, lifetimes and
//! `return`/`?` inside the body keep working. Every runtime item is reached
//! through `{crate}::__private` (default `::cachet`). Internal bindings are
//! prefixed `__cachet_`, so user arguments named `key` or `cache` cannot
//! collide.
//!
//! Type errors are reported once, at the user's token. The key parts, the
//! cached value and the `unless` filter go through small dispatchers declared
//! in blocks of the generated body (`key_support`, `value_support`,
//! `filter_support`; the user's body is outside those blocks, so their names
//! are not in its scope). When a type is what the runtime needs, method
//! resolution (autoref specialization) picks the method that passes the
//! value through unchanged; when it is not, it picks a fallback whose bound
//! fails with one error at the argument, return type or `unless`, and whose
//! result keeps the runtime calls well-typed, so no follow-on errors are
//! reported inside the expansion. Every fallback carries a failing bound, so
//! a program that compiles always takes the pass-through path.

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
    p.map_or_else(|| quote!(::cachet), ToTokens::into_token_stream)
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
            let holder = Ident::new("cachet_cache_arg", e.span());
            let support = quote! {
                #[diagnostic::on_unimplemented(
                    message = "`cache = ...` must be a `Cache`, a reference to one or an `Arc<Cache>`, not `{Self}`",
                    label = "not a cache"
                )]
                trait __CachetCacheArg {
                    fn __cachet_cache(&self) -> &#krate::Cache;
                }
                impl<C: ::core::convert::AsRef<#krate::Cache> + ?::core::marker::Sized>
                    __CachetCacheArg for C
                {
                    #[inline]
                    fn __cachet_cache(&self) -> &#krate::Cache {
                        #krate::__private::as_cache(self)
                    }
                }
            };
            let cache = quote_spanned! {e.span()=> __CachetCacheArg::__cachet_cache(&#holder) };
            (
                quote_spanned! {e.span()=> let #holder = #e; },
                quote! {
                    #krate::__private::resolve(::core::option::Option::Some({
                        #support
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
fn key_expr(func: &Func, key: Option<&KeySpec>, skip: &[Ident]) -> syn::Result<TokenStream> {
    match key {
        Some(KeySpec::Expr(e)) => {
            let part = key_part(&quote!(&(#e)), e.span());
            Ok(quote!(&#part))
        }
        Some(KeySpec::Args(names)) => {
            func.check_names(names, "key")?;
            let mut parts = Vec::new();
            for name in names {
                if name == "self" {
                    parts.push(key_part(&quote!(&#name), name.span()));
                    continue;
                }
                let arg = func
                    .arg(name)
                    .ok_or_else(|| Error::new(name.span(), "unknown argument"))?;
                check_key_arg(name, &arg.ty)?;
                parts.push(key_part(&quote!(&#name), name.span()));
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
                        .map(|()| parts.push(key_part(&quote!(&#name), name.span()))),
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
fn key_part(reference: &TokenStream, span: Span) -> TokenStream {
    let method = Ident::new("__cachet_key_part", span);
    quote!((&__CachetKeyPart(#reference)).#method())
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

/// The key dispatcher, declared inside the generated body. `&KeyPart(&x)`
/// finds `KeyPartOk::__cachet_key_part` (returns `&x`) when the type of `x`
/// is `Serialize`, and otherwise `KeyPartErr::__cachet_key_part`, whose
/// `KeyArg` bound fails with the message of `__private::KeyArg` and whose
/// `()` result keeps the key `Serialize`.
fn key_support(krate: &TokenStream) -> TokenStream {
    quote! {
        struct __CachetKeyPart<'a, T: ?::core::marker::Sized>(&'a T);
        trait __CachetKeyPartOk<'a, T: ?::core::marker::Sized> {
            fn __cachet_key_part(&self) -> &'a T;
        }
        impl<'a, T: ?::core::marker::Sized + #krate::__private::KeyArg> __CachetKeyPartOk<'a, T>
            for __CachetKeyPart<'a, T>
        {
            #[inline]
            fn __cachet_key_part(&self) -> &'a T {
                self.0
            }
        }
        trait __CachetKeyPartErr<T: ?::core::marker::Sized> {
            fn __cachet_key_part(&self)
            where
                T: #krate::__private::KeyArg;
        }
        impl<T: ?::core::marker::Sized> __CachetKeyPartErr<T> for &__CachetKeyPart<'_, T> {
            fn __cachet_key_part(&self)
            where
                T: #krate::__private::KeyArg,
            {
            }
        }
    }
}

/// The `unless` dispatcher, declared inside the generated body.
/// `__cachet_filter_arg::<T, _, _>({ f })` gives a closure its argument type
/// (like `__private::filter`) and reports a wrong argument type at `f`.
/// `Filter(f).__cachet_filter()` then returns `f` when it is a
/// `Fn(&T) -> bool`, and otherwise `NoFilter` through a bound that fails:
/// with the error already reported at the same span and for the same
/// predicate (which rustc reports once), or for a closure that does not
/// return `bool`, with that error.
fn filter_support(krate: &TokenStream) -> TokenStream {
    let p = quote!(#krate::__private);
    quote! {
        fn __cachet_filter_arg<T, R, U: ::core::ops::Fn(&T) -> R>(unless: U) -> U {
            unless
        }
        struct __CachetFilter<T, U>(U, ::core::marker::PhantomData<fn(&T)>);
        trait __CachetFilterOk<U> {
            fn __cachet_filter(self) -> U;
        }
        impl<T, U: ::core::ops::Fn(&T) -> bool> __CachetFilterOk<U> for __CachetFilter<T, U> {
            #[inline]
            fn __cachet_filter(self) -> U {
                self.0
            }
        }
        trait __CachetFilterErr<T, U> {
            fn __cachet_filter(self) -> #p::NoFilter
            where
                U: ::core::ops::Fn(&T) -> bool;
        }
        impl<T, U> __CachetFilterErr<T, U> for &__CachetFilter<T, U> {
            fn __cachet_filter(self) -> #p::NoFilter
            where
                U: ::core::ops::Fn(&T) -> bool,
            {
                #p::NoFilter
            }
        }
    }
}

/// The value dispatcher, declared inside the generated body.
/// `&&&Value::<T>` finds, in this order: `ValueOk` when `T` is
/// `Serialize + DeserializeOwned` (identity conversions, the `unless`
/// filter unchanged); `ValueErrDe` when `T` is only `Serialize` (its
/// `Cacheable` bound fails once, on `Deserialize`); `ValueErrSer` otherwise
/// (its bound fails once, on `Serialize`). The fallbacks convert the value
/// to `()` and drop the filter, so the runtime calls stay well-typed.
fn value_support(krate: &TokenStream) -> TokenStream {
    let p = quote!(#krate::__private);
    let fallback_ret = quote!((fn(T), fn(()) -> T, #p::NoFilter));
    let fallback_body = quote!((::core::mem::drop, |()| ::core::unreachable!(), #p::NoFilter));
    quote! {
        struct __CachetValue<T>(::core::marker::PhantomData<fn() -> T>);
        trait __CachetValueOk<T> {
            fn __cachet_value<U>(&self, unless: U) -> (fn(T) -> T, fn(T) -> T, U);
        }
        impl<T: #p::Cacheable> __CachetValueOk<T> for &&__CachetValue<T> {
            #[inline]
            fn __cachet_value<U>(&self, unless: U) -> (fn(T) -> T, fn(T) -> T, U) {
                (::core::convert::identity, ::core::convert::identity, unless)
            }
        }
        trait __CachetValueErrDe<T> {
            fn __cachet_value<U>(&self, unless: U) -> #fallback_ret
            where
                T: #p::Cacheable;
        }
        impl<T: #p::KeyArg> __CachetValueErrDe<T> for &__CachetValue<T> {
            fn __cachet_value<U>(&self, _: U) -> #fallback_ret
            where
                T: #p::Cacheable,
            {
                #fallback_body
            }
        }
        #[diagnostic::on_unimplemented(
            message = "`{Self}` cannot be cached: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
            label = "the cached value type",
            note = "derive `Serialize` and `Deserialize` for it (for `Result<T, E>` only `T` is cached)"
        )]
        trait __CachetValueSerialize {}
        impl<T: #p::KeyArg> __CachetValueSerialize for T {}
        trait __CachetValueErrSer<T> {
            fn __cachet_value<U>(&self, unless: U) -> #fallback_ret
            where
                T: __CachetValueSerialize;
        }
        impl<T> __CachetValueErrSer<T> for __CachetValue<T> {
            fn __cachet_value<U>(&self, _: U) -> #fallback_ret
            where
                T: __CachetValueSerialize,
            {
                #fallback_body
            }
        }
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
    let key_expr = key_expr(&func, args.key.as_ref().map(|(_, k)| k), skip)?;
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
    // `filter` deduces a closure's argument type and reports a mismatched
    // `unless` at the expression; the filter dispatcher then keeps the
    // mismatch from spreading (see `filter_support`).
    let (filter_support, unless) = match &args.unless {
        Some(u) => {
            let method = Ident::new("__cachet_filter", u.span());
            // The whole call has the span of `unless`, so that rustc reports
            // a mismatch there.
            let path = respan(quote!(__cachet_filter_arg::<#value_ty, _, _>), u.span());
            let filter = quote_spanned! {u.span()=> #path({ #u }) };
            (
                filter_support(&krate),
                quote!(__CachetFilter::<#value_ty, _>(#filter, ::core::marker::PhantomData).#method()),
            )
        }
        None => (TokenStream::new(), quote!(#krate::__private::NoFilter)),
    };
    let call = Ident::new("__cachet_call", Span::mixed_site());
    let out = Ident::new("__cachet_out", Span::mixed_site());
    let into = Ident::new("__cachet_into", Span::mixed_site());
    let from = Ident::new("__cachet_from", Span::mixed_site());
    let filter = Ident::new("__cachet_unless", Span::mixed_site());
    // The value dispatcher reports a non-cacheable type at the return type
    // (for `Result<T, E>`, at `T`).
    let dispatch = Ident::new("__cachet_value", value_ty.span());
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
                #krate::__private::call(#cache, #ns, #version, #key_expr)
            };
            // `unless` is passed in braces, for one error span (see `filter_support`).
            #[allow(unused_braces)]
            let (#into, #from, #filter) = {
                #value_support
                #filter_support
                (&&&__CachetValue::<#value_ty>(::core::marker::PhantomData)).#dispatch(#unless)
            };
            let #out = #call.#method(#ttl, #filter, async move {
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
    let cache_var = Ident::new("__cachet_cache", Span::mixed_site());
    let out = Ident::new("__cachet_out", Span::mixed_site());
    let target = Ident::new("__cachet_target", Span::mixed_site());
    let (cache_binding, cache) = cache_expr(&krate, args.cache.as_ref());
    let version = args.version.unwrap_or(1);
    let (prepare, invalidate) = match &args.key {
        Some((_, spec)) => {
            let ns = &args.namespaces[0];
            let key_expr = key_expr(&func, Some(spec), &[])?;
            let key_support = key_support(&krate);
            (
                quote! {
                    let #target = {
                        #key_support
                        #krate::__private::call(#cache_var, #ns, #version, #key_expr)
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
