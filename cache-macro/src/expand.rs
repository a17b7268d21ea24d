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
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Expr, Ident};

use crate::args::{Compress, NsName, TagSpec};
use crate::validate::{
    Batch, CachePut, Cached, Copy, Invalidates, Key, KeysForm, Ns, Options, Refresh, Target,
};

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
        use #krate::__private::{ValueBytes as _, ValueErrDe as _, ValueErrSer as _, ValueOk as _};
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

fn call_options(
    krate: &TokenStream,
    o: &Options,
    version: Option<u32>,
    tags: &[TagSpec],
) -> TokenStream {
    let tag_names = tags.iter().map(|t| t.name.unraw().to_string());
    let ttl = duration(o.ttl);
    let stale = duration(o.stale);
    let lock_wait = duration(o.lock_wait);
    let lease = duration(o.lease);
    let local = duration(o.local);
    let lock = option(o.lock);
    let early = option(o.early_refresh);
    let version = option(version);
    let fail_safe = duration(o.fail_safe);
    let timeout = duration(o.timeout);
    let verify = option(o.verify);
    let compress = option(o.compress.map(|c| match c {
        Compress::On => quote!(#krate::__private::Compress::On),
        Compress::Off => quote!(#krate::__private::Compress::Never),
        Compress::Above(n) => quote!(#krate::__private::Compress::Above(#n)),
    }));
    quote!(#krate::__private::CallOptions {
        ttl: #ttl,
        stale: #stale,
        lock: #lock,
        lock_wait: #lock_wait,
        lease: #lease,
        early_refresh: #early,
        local: #local,
        version: #version,
        fail_safe: #fail_safe,
        timeout: #timeout,
        tags: &[#(#tag_names),*],
        compress: #compress,
        verify: #verify,
    })
}

/// Each tag's value, as a reference (the argument of the tag's name, or
/// its expression), with the tag's name.
fn tag_values(tags: &[TagSpec]) -> Vec<(String, TokenStream, Span)> {
    tags.iter()
        .map(|t| {
            let name = t.name.unraw().to_string();
            match &t.value {
                Some(e) => (name, quote!(&(#e)), e.span()),
                None => {
                    let arg = &t.name;
                    (name, quote!(&#arg), t.name.span())
                }
            }
        })
        .collect()
}

/// `self` in the body, renamed so that a refresh in the background can
/// bind it to its own copy (a block cannot rebind `self`).
fn rename_self(tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Ident(i) if i == "self" => {
                TokenTree::Ident(Ident::new("__cache_aside_self", i.span()))
            }
            TokenTree::Group(g) => {
                let mut group = Group::new(g.delimiter(), rename_self(g.stream()));
                group.set_span(g.span());
                TokenTree::Group(group)
            }
            tt => tt,
        })
        .collect()
}

/// Does `tokens` (a body) name `name` anywhere, macro arguments included?
fn mentions(tokens: &TokenStream, name: &Ident) -> bool {
    tokens.clone().into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == *name,
        TokenTree::Group(g) => mentions(&g.stream(), name),
        _ => false,
    })
}

/// The refresher handed to the runtime: `Inline`, or a `Background`
/// closure that makes the body's future from copies of the arguments
/// (the statements before it clone the owned ones, before the body's own
/// future takes them).
fn refresher(c: &Cached, stored: &TokenStream) -> (TokenStream, TokenStream) {
    let krate = &c.krate;
    let Refresh::Background(copies) = &c.refresh else {
        return (TokenStream::new(), quote!(#krate::__private::Inline));
    };
    let own = |name: &Ident| Ident::new(&format!("__cache_aside_own_{name}"), Span::mixed_site());
    let bind = |name: &Ident| {
        if name == "self" {
            Ident::new("__cache_aside_self", Span::call_site())
        } else {
            name.clone()
        }
    };
    let block = &c.func.item.block;
    let block_tokens = quote!(#block);
    let (mut eager, mut lazy, mut binds) = (Vec::new(), Vec::new(), Vec::new());
    // Only what the body names (`self` included) is copied.
    for (name, how) in copies.iter().filter(|(n, _)| mentions(&block_tokens, n)) {
        let (o, b) = (own(name), bind(name));
        match how {
            Copy::Owned => {
                let method = Ident::new("__cache_aside_clone", name.span());
                eager.push(quote!(let #o = (&#krate::__private::CloneProbe(&#name)).#method();));
                binds.push(quote!(let #b = #o;));
            }
            Copy::Borrowed => {
                let method = Ident::new("__cache_aside_copy", name.span());
                lazy.push(quote!(let #o = (&#krate::__private::CopyProbe(#name)).#method();));
                binds.push(quote!(let #b = #o.get();));
            }
        }
    }
    let out = Ident::new("__cache_aside_out", Span::mixed_site());
    let ret_ty = &c.ret_ty;
    let body = if c.func.receiver.is_some() {
        rename_self(block_tokens)
    } else {
        block_tokens
    };
    let holder = Ident::new("__cache_aside_refresh", Span::mixed_site());
    (
        quote! {
            let #holder = {
                #[allow(unused_imports)]
                use #krate::__private::{CloneErr as _, CloneOk as _, CopyErr as _, CopyOk as _};
                #(#eager)*
                #krate::__private::Background(move || {
                    #[allow(unused_imports)]
                    use #krate::__private::{CopyErr as _, CopyOk as _};
                    #(#lazy)*
                    async move {
                        #(#binds)*
                        let #out: #ret_ty = async move #body.await;
                        #stored
                    }
                })
            };
        },
        quote!(#holder),
    )
}

pub(crate) fn cached(c: &Cached) -> TokenStream {
    let krate = &c.krate;
    let (attrs, vis, sig, block) = (
        &c.func.item.attrs,
        &c.func.item.vis,
        &c.func.item.sig,
        &c.func.item.block,
    );
    // The `type_name` of a closure in the body: the fn's path with every
    // generic argument filled in (the impl's, the trait's, the fn's own).
    let instance = Ident::new("__cache_aside_instance", Span::mixed_site());
    let instance_binding = quote! {
        let #instance: &'static str = {
            let here = || ();
            ::core::any::type_name_of_val(&here)
        };
    };
    let ns = match &c.ns {
        Ns::Named(name) => ns_tokens(krate, name),
        // The fn's path: its crate's and module's and, for an associated fn,
        // its type's (and trait's), so that same-named fns never share a
        // namespace: from the `type_name` of a closure in the body, which
        // names them all (`module_path!` lacks the type, and `Self` cannot be
        // named in a free fn). Made a namespace name once per site.
        Ns::Default => quote! {{
            static __CACHE_ASIDE_NS: ::std::sync::OnceLock<::std::string::String> =
                ::std::sync::OnceLock::new();
            __CACHE_ASIDE_NS
                .get_or_init(|| #krate::__private::default_ns(#instance))
                .as_str()
        }},
    };
    let key_expr = key_expr(krate, &c.key);
    let opts = call_options(krate, &c.options, c.version, &c.tags);
    // `.tag(name, &value)` per tag; a value that is not `Serialize` is
    // reported at it (the `TagArg` bound).
    let tag_calls = tag_values(&c.tags).into_iter().map(|(name, value, span)| {
        let method = Ident::new("tag", span);
        quote_spanned!(span=> .#method(#name, #value))
    });
    // Part of the schema: the fn's instance when it has generic arguments
    // (of the impl, the trait or the fn: two instantiations share a
    // namespace, never entries), and the fn's type parameters.
    let type_params = &c.generics;
    let generics = quote!(&[
        #krate::__private::instance(#instance),
        #(::core::any::type_name::<#type_params>()),*
    ]);
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
    // `ttl = f`: the filter also gives each value its TTL; a wrong `f` is
    // reported at `f` (a local name, as for `unless`).
    let (ttl_support, unless) = match &c.ttl_of {
        Some(f) => {
            let path = respan(quote!(__cache_aside_ttl_of::<#value_ty, _>), f.span());
            (
                quote!(use #krate::__private::ttl_of as __cache_aside_ttl_of;),
                quote_spanned! {f.span()=> #path(#unless, #f) },
            )
        }
        None => (TokenStream::new(), unless),
    };
    let call = Ident::new("__cache_aside_call", Span::mixed_site());
    let out = Ident::new("__cache_aside_out", Span::mixed_site());
    let into = Ident::new("__cache_aside_into", Span::mixed_site());
    let from = Ident::new("__cache_aside_from", Span::mixed_site());
    let filter = Ident::new("__cache_aside_unless", Span::mixed_site());
    let keep = Ident::new("__cache_aside_keep", Span::mixed_site());
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
    // `keep_decoded`: the local tier keeps the decoded value; the value
    // type's bound (`Clone + Send + Sync + 'static`) is reported there.
    let keeper = match c.keep_decoded {
        Some(span) => {
            let path = respan(quote!(#krate::__private::keeper), span);
            quote!(#path(&#into))
        }
        None => quote!(::core::option::Option::None),
    };
    let key_support = key_support(krate);
    let value_support = value_support(krate);
    let (refresh_binding, refresh) = refresher(c, &stored);
    let site = site(krate, Some(&c.key));
    quote! {
        #(#attrs)*
        #vis #sig {
            #instance_binding
            #cache_binding
            let #call = {
                #key_support
                static __CACHE_ASIDE_SLOT: #krate::__private::NsSlot = #krate::__private::NsSlot::new();
                #krate::__private::call(
                    ::core::option::Option::Some(&__CACHE_ASIDE_SLOT),
                    #site,
                    #cache,
                    #ns,
                    #key_expr,
                )
                #(#tag_calls)*
            };
            // `unless` is passed in braces, for one error span (see `__private::unless_arg`).
            #[allow(unused_braces)]
            let (#into, #from, #filter) = {
                #value_support
                #filter_support
                #ttl_support
                (&&&&#krate::__private::Value::<#value_ty>::NEW).#dispatch(#unless)
            };
            #refresh_binding
            // Pinned here, once: the runtime's layers pass a pointer down
            // instead of each holding (and moving) the whole body future,
            // which would multiply a nested cached call's size per layer.
            let #keep = #keeper;
            let #out = #call.#method(#opts, #generics, #filter, #share #keep, #refresh, ::core::pin::pin!(async move {
                // Its own async block: a `return` in the body leaves the body
                // (with its type), not the conversion after it.
                let #out: #ret_ty = async move #block.await;
                #stored
            }))
            .await;
            #returned
        }
    }
}

/// A namespace's expression: a string as it is; a constant's path checked
/// at compile time (the `const` item fails with the reason when the name
/// cannot be a namespace) and typed `&'static str` at the path.
fn ns_tokens(krate: &TokenStream, ns: &NsName) -> TokenStream {
    match ns {
        NsName::Lit(l) => quote!(#l),
        NsName::Const(p) => {
            let check = respan(quote!(#krate::__private::valid_ns), p.span());
            // A `const` item is evaluated by `cargo check` too; an inline
            // `const` block (evaluated when the fn is compiled to code) where
            // the path may start at a type (`Self::NS`, `T::NS`), which an
            // item inside the fn cannot name.
            let at_type = p.segments.len() > 1
                && p.segments.first().is_some_and(|s| {
                    s.ident
                        .to_string()
                        .starts_with(|c: char| c.is_ascii_uppercase())
                });
            if at_type {
                quote_spanned! {p.span()=> const { #check(#p) } }
            } else {
                quote_spanned! {p.span()=> {
                    const __CACHE_ASIDE_NS: &str = #check(#p);
                    __CACHE_ASIDE_NS
                }}
            }
        }
    }
}

/// The call site, for the runtime's link checks (`cache/links.rs`): the
/// fn, by the `type_name` of an item declared in its body, and its key's
/// number of parts when the macro can count them.
fn site(krate: &TokenStream, key: Option<&Key>) -> TokenStream {
    let parts = match key {
        Some(Key::Args(names)) => {
            let n = names.len();
            quote!(::core::option::Option::Some(#n))
        }
        _ => quote!(::core::option::Option::None),
    };
    quote! {
        #krate::__private::Site {
            fn_raw: {
                fn __cache_aside_here() {}
                ::core::any::type_name_of_val(&__cache_aside_here)
            },
            parts: #parts,
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
        Target::Key { ns, key } => {
            let ns = ns_tokens(krate, ns);
            let site = site(krate, Some(key));
            let key_expr = key_expr(krate, key);
            let key_support = key_support(krate);
            (
                quote! {
                    let #target = {
                        #key_support
                        #krate::__private::call(
                            ::core::option::Option::None,
                            #site,
                            #cache_var,
                            #ns,
                            #key_expr,
                        )
                    };
                },
                quote!(#target.invalidate().await;),
            )
        }
        Target::Tags { .. } => (TokenStream::new(), TokenStream::new()),
        Target::Namespaces(namespaces) => (TokenStream::new(), {
            let namespaces = namespaces.iter().map(|n| ns_tokens(krate, n));
            let site = site(krate, None);
            quote!(#krate::__private::invalidate_namespaces(#cache_var, #site, &[#(#namespaces),*]).await;)
        }),
    };
    // A write inside a database transaction invalidates before its COMMIT:
    // a reader in between caches the old value. A warning at the argument
    // (through a deprecated item: proc macros have no warnings of their
    // own) unless the fn says `scoped`, which is then checked at run time.
    let transaction_warning = inv.transaction_arg.as_ref().map(|ty| {
        let use_it = quote_spanned!(ty.span()=> let () = __cache_aside_transaction_arg;);
        quote! {
            #[deprecated(note = "this #[invalidates] fn takes a database transaction, so it \
                invalidates before the caller's COMMIT and a read in between caches the old \
                value: call it inside `cache_aside::transaction(async { .. })` and add \
                `scoped` to the attribute (checked at run time), or invalidate after the commit")]
            #[allow(non_upper_case_globals)]
            const __cache_aside_transaction_arg: () = ();
            #use_it
        }
    });
    // `tag(..)`: the tag keys are built before the body takes the
    // arguments, and invalidated after it succeeded.
    let tags_var = Ident::new("__cache_aside_tags", Span::mixed_site());
    let (prepare, invalidate) = match (&inv.target, inv.tags.is_empty()) {
        (Target::Key { ns, .. } | Target::Tags { ns }, false) => {
            let site = site(krate, None);
            // A method call at the value, so that a value that is not
            // `Serialize` is reported there (the `TagArg` bound).
            let targets = tag_values(&inv.tags)
                .into_iter()
                .map(|(name, value, span)| {
                    let ns = ns_tokens(krate, ns);
                    let method = Ident::new("tag", span);
                    let call = quote_spanned!(span=> .#method(#name, #value));
                    quote!(#krate::__private::TagIn(#cache_var, #ns) #call)
                });
            (
                quote! {
                    #prepare
                    let #tags_var = [#(#targets),*];
                },
                quote! {
                    #invalidate
                    for __cache_aside_tag in #tags_var {
                        __cache_aside_tag.invalidate(#site).await;
                    }
                },
            )
        }
        _ => (prepare, invalidate),
    };
    let scope_check = inv.scoped.then(|| {
        let site = site(krate, None);
        quote!(#krate::__private::expect_scope(#site);)
    });
    let succeeded = match &inv.func.ret {
        crate::model::Ret::Result { .. } => quote!(::core::result::Result::is_ok(&#out)),
        _ => quote!(true),
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #transaction_warning
            #cache_binding
            let #cache_var = #cache;
            #prepare
            let #out: #ret_ty = async move {
                let #out: #ret_ty = #block;
                #out
            }
            .await;
            if #succeeded {
                #scope_check
                #invalidate
            }
            #out
        }
    }
}

pub(crate) fn cache_put(p: &CachePut) -> TokenStream {
    let krate = &p.krate;
    let (attrs, vis, sig, block) = (
        &p.func.item.attrs,
        &p.func.item.vis,
        &p.func.item.sig,
        &p.func.item.block,
    );
    let (cache_binding, cache) = cache_expr(krate, p.cache.as_ref());
    let ns = ns_tokens(krate, &p.ns);
    let site = site(krate, Some(&p.key));
    let key_expr = key_expr(krate, &p.key);
    let key_support = key_support(krate);
    let value_support = value_support(krate);
    let opts = call_options(
        krate,
        &Options {
            ttl: p.ttl,
            stale: None,
            lock: None,
            lock_wait: None,
            lease: p.lease,
            early_refresh: None,
            local: None,
            fail_safe: None,
            timeout: None,
            compress: p.compress,
            verify: None,
        },
        p.version,
        &[],
    );
    let (value_ty, ret_ty) = (&p.value_ty, &p.ret_ty);
    // `ttl = f`, as for `#[cached]`: reported at `f` when it does not fit.
    let (ttl_support, filter_expr) = match &p.ttl_of {
        Some(f) => {
            let path = respan(quote!(__cache_aside_ttl_of::<#value_ty, _>), f.span());
            (
                quote!(use #krate::__private::ttl_of as __cache_aside_ttl_of;),
                quote_spanned! {f.span()=> #path(#krate::__private::NoFilter, #f) },
            )
        }
        None => (TokenStream::new(), quote!(#krate::__private::NoFilter)),
    };
    let filter = Ident::new("__cache_aside_unless", Span::mixed_site());
    let call = Ident::new("__cache_aside_call", Span::mixed_site());
    let out = Ident::new("__cache_aside_out", Span::mixed_site());
    let into = Ident::new("__cache_aside_into", Span::mixed_site());
    let from = Ident::new("__cache_aside_from", Span::mixed_site());
    // A value type that cannot be stored is reported at the return type.
    let dispatch = Ident::new("__cache_aside_value", value_ty.span());
    let (method, stored, returned) = if p.is_result {
        (
            Ident::new("put_result", value_ty.span()),
            quote!(::core::result::Result::map(#out, #into)),
            quote!(::core::result::Result::map(#out, #from)),
        )
    } else {
        (
            Ident::new("put_value", value_ty.span()),
            quote!(#into(#out)),
            quote!(#from(#out)),
        )
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #cache_binding
            let #call = {
                #key_support
                #krate::__private::call(
                    ::core::option::Option::None,
                    #site,
                    #cache,
                    #ns,
                    #key_expr,
                )
            };
            let (#into, #from, #filter) = {
                #value_support
                #ttl_support
                (&&&&#krate::__private::Value::<#value_ty>::NEW).#dispatch(#filter_expr)
            };
            let #out = #call.#method(#opts, #filter, ::core::pin::pin!(async move {
                // Its own async block: a `return` in the body leaves the body
                // (with its type), not the conversion after it.
                let #out: #ret_ty = async move #block.await;
                #stored
            }))
            .await;
            #returned
        }
    }
}

/// `#[cached(ns = .., batch)]`: the keys' entries read at once, the body
/// run with the missing keys only (in the keys argument's own form), and
/// the map it returns merged with the hits.
pub(crate) fn batch(b: &Batch) -> TokenStream {
    let krate = &b.krate;
    let (attrs, vis, sig, block) = (
        &b.func.item.attrs,
        &b.func.item.vis,
        &b.func.item.sig,
        &b.func.item.block,
    );
    let (cache_binding, cache) = cache_expr(krate, b.cache.as_ref());
    let ns = ns_tokens(krate, &b.ns);
    let opts = call_options(krate, &b.options, b.version, &[]);
    let site = site(krate, Some(&Key::Args(vec![b.keys.clone()])));
    let (keys, key_ty, value_ty, ret_ty) = (&b.keys, &b.key_ty, &b.value_ty, &b.ret_ty);
    let missing = Ident::new("__cache_aside_missing", Span::mixed_site());
    let out = Ident::new("__cache_aside_out", Span::mixed_site());
    let rebind = match b.keys_form {
        KeysForm::Slice => quote!(let #keys: &[#key_ty] = &#missing[..];),
        KeysForm::VecRef => quote!(let #keys: &::std::vec::Vec<#key_ty> = &#missing;),
        KeysForm::Vec => quote!(let #keys: ::std::vec::Vec<#key_ty> = #missing;),
    };
    // Each value through the value dispatcher, as a single-key fn's: the
    // same stored form (a `Vec<u8>` as bytes), and a type that cannot be
    // cached reported once, at `V`.
    let (into, from) = (
        Ident::new("__cache_aside_into", Span::mixed_site()),
        Ident::new("__cache_aside_from", Span::mixed_site()),
    );
    let dispatch = Ident::new("__cache_aside_value", value_ty.span());
    let value_support = value_support(krate);
    let stored = quote!(::core::result::Result::map(#out, |m| {
        m.into_iter().map(|(k, v)| (k, #into(v))).collect::<::std::collections::HashMap<_, _>>()
    }));
    let returned = quote!(::core::result::Result::map(#out, |m| {
        m.into_iter().map(|(k, v)| (k, #from(v))).collect::<::std::collections::HashMap<_, _>>()
    }));
    let (to_result, from_result) = if b.is_result {
        (stored, returned)
    } else {
        (
            quote!({
                let #out = ::core::result::Result::<_, ::core::convert::Infallible>::Ok(#out);
                #stored
            }),
            quote!(match #returned {
                ::core::result::Result::Ok(map) => map,
                ::core::result::Result::Err(never) => match never {},
            }),
        )
    };
    // The key type's bound, reported at it.
    let key_check = respan(quote!(__cache_aside_batch_key::<#key_ty>), key_ty.span());
    quote! {
        #(#attrs)*
        #vis #sig {
            #cache_binding
            {
                use #krate::__private::batch_key as __cache_aside_batch_key;
                #key_check();
            }
            let (#into, #from, _) = {
                #value_support
                (&&&&#krate::__private::Value::<#value_ty>::NEW).#dispatch(#krate::__private::NoFilter)
            };
            static __CACHE_ASIDE_SLOT: #krate::__private::NsSlot = #krate::__private::NsSlot::new();
            let #out = #krate::__private::batch(
                #cache,
                &__CACHE_ASIDE_SLOT,
                #site,
                #ns,
                #opts,
                &(#keys)[..],
                |#missing: ::std::vec::Vec<#key_ty>| async move {
                    #rebind
                    // Its own async block: a `return` in the body leaves the body
                    // (with its type), not the conversion after it.
                    let #out: #ret_ty = async move #block.await;
                    #to_result
                },
            )
            .await;
            #from_result
        }
    }
}
