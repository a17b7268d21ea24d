//! Code generation from a checked attribute (`validate.rs`); nothing here
//! fails. The body stays where it is, wrapped in an `async move` block that
//! is handed to the runtime, so `self`, generics, lifetimes and
//! `return`/`?` inside the body keep working. Every runtime item is reached
//! through `{crate}::__private` (default `::cache_aside`). Internal bindings
//! are prefixed `__cache_aside_` and have mixed-site spans, so user arguments
//! named `key` or `cache` cannot collide.
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

use std::time::Duration;

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, Ident};

use crate::validate::{Cached, Invalidates, Key, Options, Target};

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
            let cache =
                quote_spanned! {e.span()=> __CacheAsideCacheArg::__cache_aside_cache(&#holder) };
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
fn key_expr(krate: &TokenStream, key: &Key) -> TokenStream {
    match key {
        Key::Expr(e) => {
            let part = key_part(krate, &quote!(&(#e)), e.span());
            quote!(&#part)
        }
        Key::Args(names) => {
            let parts = names
                .iter()
                .map(|name| key_part(krate, &quote!(&#name), name.span()));
            quote!(&(#(#parts,)*))
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

fn option<T: quote::ToTokens>(v: Option<T>) -> TokenStream {
    match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn duration(d: Option<Duration>) -> TokenStream {
    option(d.map(|d| {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(::core::time::Duration::new(#secs, #nanos))
    }))
}

fn call_options(krate: &TokenStream, o: &Options) -> TokenStream {
    let ttl = duration(o.ttl);
    let stale = duration(o.stale);
    let lock_wait = duration(o.lock_wait);
    let lease = duration(o.lease);
    let local = duration(o.local);
    let lock = option(o.lock);
    let early = option(o.early_refresh);
    quote!(#krate::__private::CallOptions {
        ttl: #ttl,
        stale: #stale,
        lock: #lock,
        lock_wait: #lock_wait,
        lease: #lease,
        early_refresh: #early,
        local: #local,
    })
}

pub(crate) fn cached(c: &Cached) -> TokenStream {
    let krate = &c.krate;
    let (attrs, vis, sig, block) = (
        &c.func.item.attrs,
        &c.func.item.vis,
        &c.func.item.sig,
        &c.func.item.block,
    );
    let (ns, version) = (&c.ns, c.version);
    let key_expr = key_expr(krate, &c.key);
    let opts = call_options(krate, &c.options);
    let (cache_binding, cache) = cache_expr(krate, c.cache.as_ref());
    let (value_ty, ret_ty) = (&c.value_ty, &c.ret_ty);
    // `__private::unless_arg` deduces a closure's argument type and reports
    // a mismatched `unless` at the expression; `__private::Unless` then keeps
    // the mismatch from spreading.
    let (filter_support, unless) = match &c.unless {
        Some(u) => {
            let method = Ident::new("__cache_aside_unless", u.span());
            // The whole call has the span of `unless`, so that rustc reports
            // a mismatch there (through a local name, as the crate path may
            // hold `$crate`, whose meaning depends on its span).
            let path = respan(
                quote!(__cache_aside_unless_arg::<#value_ty, _, _>),
                u.span(),
            );
            let filter = quote_spanned! {u.span()=> #path({ #u }) };
            (
                filter_support(krate),
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
    let share = if c.is_result {
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
    let (method, stored, returned) = if c.is_result {
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
    let key_support = key_support(krate);
    let value_support = value_support(krate);
    quote! {
        #(#attrs)*
        #vis #sig {
            #cache_binding
            let #call = {
                #key_support
                static __CACHE_ASIDE_SLOT: #krate::__private::NsSlot = #krate::__private::NsSlot::new();
                #krate::__private::call(
                    ::core::option::Option::Some(&__CACHE_ASIDE_SLOT),
                    #cache,
                    #ns,
                    #version,
                    #key_expr,
                )
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
    }
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

pub(crate) fn invalidates(inv: &Invalidates) -> TokenStream {
    let krate = &inv.krate;
    let (attrs, vis, sig, block) = (
        &inv.func.item.attrs,
        &inv.func.item.vis,
        &inv.func.item.sig,
        &inv.func.item.block,
    );
    let ret_ty = inv.func.return_type();
    let cache_var = Ident::new("__cache_aside_cache", Span::mixed_site());
    let out = Ident::new("__cache_aside_out", Span::mixed_site());
    let target = Ident::new("__cache_aside_target", Span::mixed_site());
    let (cache_binding, cache) = cache_expr(krate, inv.cache.as_ref());
    let (prepare, invalidate) = match &inv.target {
        Target::Key { ns, version, key } => {
            let key_expr = key_expr(krate, key);
            let key_support = key_support(krate);
            (
                quote! {
                    let #target = {
                        #key_support
                        #krate::__private::call(
                            ::core::option::Option::None,
                            #cache_var,
                            #ns,
                            #version,
                            #key_expr,
                        )
                    };
                },
                quote!(#target.invalidate().await;),
            )
        }
        Target::Namespaces(namespaces) => (
            TokenStream::new(),
            quote!(#krate::__private::invalidate_namespaces(#cache_var, &[#(#namespaces),*]).await;),
        ),
    };
    let succeeded = match &inv.func.ret {
        crate::model::Ret::Result { .. } => quote!(::core::result::Result::is_ok(&#out)),
        _ => quote!(true),
    };
    quote! {
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
    }
}
