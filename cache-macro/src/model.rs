//! A typed view of the annotated function: its arguments (with their
//! spans), its receiver, and what kind of value it returns. Building it
//! never fails; `validate.rs` decides what is allowed.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{Error, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Type};

pub(crate) struct Arg {
    /// `None` for a pattern that is not a plain name (`(a, b): (i32, i32)`).
    pub name: Option<Ident>,
    pub pat_span: Span,
    pub ty: Type,
}

pub(crate) enum Ret {
    /// `-> Result<T, E>` (or an alias `Result<T>`): only `Ok(T)` is cached.
    Result { ok: Type },
    /// Any other type, cached as it is.
    Value(Type),
    /// No return type: `()`.
    Unit,
    /// `-> impl Trait`.
    Opaque(Type),
}

pub(crate) struct Func {
    pub item: ItemFn,
    pub receiver: Option<Span>,
    pub args: Vec<Arg>,
    pub ret: Ret,
}

/// The annotated item as a function. Anything else is an error: a trait
/// method's declaration gets its own message, another item one that names
/// the attribute, and tokens that do not parse as an item syn's own error.
pub(crate) fn parse_item(item: TokenStream, attr: &str) -> syn::Result<Func> {
    let err = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => return Ok(Func::new(f)),
        Err(e) => e,
    };
    if let Ok(decl) = syn::parse2::<syn::TraitItemFn>(item.clone())
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
    if syn::parse2::<syn::Item>(item).is_ok() {
        return Err(Error::new(
            err.span(),
            format!("#[{attr}] can only be used on an `async fn` (a free function or a method)"),
        ));
    }
    // Not an item syn can read: its own error says where and why.
    Err(err)
}

impl Func {
    fn new(item: ItemFn) -> Func {
        let sig = &item.sig;
        let mut receiver = None;
        let mut args = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(r) => receiver = Some(r.self_token.span),
                FnArg::Typed(pt) => {
                    let name = match &*pt.pat {
                        Pat::Ident(pi) if pi.subpat.is_none() && pi.by_ref.is_none() => {
                            Some(pi.ident.clone())
                        }
                        _ => None,
                    };
                    args.push(Arg {
                        name,
                        pat_span: pt.pat.span(),
                        ty: (*pt.ty).clone(),
                    });
                }
            }
        }
        let ret = match &sig.output {
            ReturnType::Default => Ret::Unit,
            ReturnType::Type(_, ty) => classify_return(ty),
        };
        Func {
            item,
            receiver,
            args,
            ret,
        }
    }

    pub(crate) fn arg(&self, name: &Ident) -> Option<&Arg> {
        self.args.iter().find(|a| a.name.as_ref() == Some(name))
    }

    /// The declared return type (`()` when there is none).
    pub(crate) fn return_type(&self) -> Type {
        match &self.item.sig.output {
            ReturnType::Type(_, t) => (**t).clone(),
            ReturnType::Default => syn::parse_quote!(()),
        }
    }
}

pub(crate) fn strip(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => strip(&p.elem),
        Type::Group(g) => strip(&g.elem),
        t => t,
    }
}

fn classify_return(ty: &Type) -> Ret {
    let ty = strip(ty);
    if let Type::ImplTrait(_) = ty {
        return Ret::Opaque(ty.clone());
    }
    if let Type::Path(tp) = ty
        && tp.qself.is_none()
        && let Some(last) = tp.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(ab) = &last.arguments
        && let Some(GenericArgument::Type(ok)) = ab.args.first()
    {
        return Ret::Result { ok: ok.clone() };
    }
    Ret::Value(ty.clone())
}

pub(crate) fn is_impl_trait(ty: &Type) -> bool {
    match strip(ty) {
        Type::ImplTrait(_) => true,
        Type::Reference(r) => is_impl_trait(&r.elem),
        _ => false,
    }
}

/// The first reference inside `ty` (`Option<&str>`, `Vec<&T>`, `(u8, &T)`),
/// which a value read back from the cache cannot hold.
pub(crate) fn reference_in(ty: &Type) -> Option<&syn::TypeReference> {
    match strip(ty) {
        Type::Reference(r) => Some(r),
        Type::Tuple(t) => t.elems.iter().find_map(reference_in),
        Type::Array(a) => reference_in(&a.elem),
        Type::Slice(s) => reference_in(&s.elem),
        Type::Path(p) => p.path.segments.iter().find_map(|seg| match &seg.arguments {
            PathArguments::AngleBracketed(ab) => ab.args.iter().find_map(|a| match a {
                GenericArgument::Type(t) => reference_in(t),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(src: &str) -> String {
        let item: TokenStream = src.parse().expect("tokens");
        match parse_item(item, "cached") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{src} parsed as a function"),
        }
    }

    #[test]
    fn tokens_that_are_no_item_get_syns_own_error() {
        let e = error("async fn f() -> u32 { let x = ; x }");
        assert!(!e.contains("can only be used"), "{e}");
        assert!(e.contains("expected"), "{e}");
    }

    #[test]
    fn other_items_and_trait_declarations_get_the_attributes_message() {
        assert!(error("struct S;").contains("can only be used on an `async fn`"));
        assert!(error("async fn f(&self) -> u32;").contains("needs the function body"));
    }

    #[test]
    fn references_inside_the_value_type_are_found() {
        let found = |t: &str| reference_in(&syn::parse_str::<Type>(t).expect("type")).is_some();
        assert!(found("&str") && found("Option<&'static str>") && found("(u8, Vec<&T>)"));
        assert!(!found("String") && !found("Option<Vec<u8>>") && !found("[u8; 4]"));
    }
}
