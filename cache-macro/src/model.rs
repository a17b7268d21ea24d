//! A typed view of the annotated function: its arguments (with their
//! spans), its receiver, and what kind of value it returns.

use crate::args::did_you_mean;
use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Error, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, Result, ReturnType, Type,
};

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
}

pub(crate) struct Func {
    pub item: ItemFn,
    pub receiver: Option<Span>,
    pub args: Vec<Arg>,
    pub ret: Ret,
}

impl Func {
    pub(crate) fn new(item: ItemFn, attr: &str) -> Result<Func> {
        let sig = &item.sig;
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
            ReturnType::Type(_, ty) => classify_return(ty, attr)?,
        };
        Ok(Func {
            item,
            receiver,
            args,
            ret,
        })
    }

    pub(crate) fn arg(&self, name: &Ident) -> Option<&Arg> {
        self.args.iter().find(|a| a.name.as_ref() == Some(name))
    }

    /// The names a `skip(...)` or `key(...)` list may use.
    pub(crate) fn check_names(&self, names: &[Ident], option: &str) -> Result<()> {
        let mut errors: Option<Error> = None;
        for name in names {
            let known = if name == "self" {
                self.receiver.is_some()
            } else {
                self.arg(name).is_some()
            };
            if !known {
                let mut available: Vec<String> = self
                    .args
                    .iter()
                    .filter_map(|a| a.name.as_ref().map(ToString::to_string))
                    .collect();
                if self.receiver.is_some() {
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
                    format!("`{option}({name})` names no argument of this function: {hint}"),
                );
                match &mut errors {
                    Some(all) => all.combine(e),
                    None => errors = Some(e),
                }
            }
        }
        errors.map_or(Ok(()), Err)
    }
}

pub(crate) fn strip(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => strip(&p.elem),
        Type::Group(g) => strip(&g.elem),
        t => t,
    }
}

fn classify_return(ty: &Type, attr: &str) -> Result<Ret> {
    let ty = strip(ty);
    if let Type::ImplTrait(_) = ty {
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
    if let Type::Path(tp) = ty
        && tp.qself.is_none()
        && let Some(last) = tp.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(ab) = &last.arguments
        && let Some(GenericArgument::Type(ok)) = ab.args.first()
    {
        return Ok(Ret::Result { ok: ok.clone() });
    }
    Ok(Ret::Value(ty.clone()))
}

pub(crate) fn is_impl_trait(ty: &Type) -> bool {
    match strip(ty) {
        Type::ImplTrait(_) => true,
        Type::Reference(r) => is_impl_trait(&r.elem),
        _ => false,
    }
}
