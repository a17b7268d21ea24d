//! The `#[cached]` and `#[invalidates]` attributes of
//! [cachet](https://docs.rs/cachet). Use them through the `cachet` crate,
//! which documents them; this crate only parses, validates and expands.
//!
//! Layout: `args` parses the options (rejecting unknown and duplicated ones
//! at their token), `model` checks the annotated function and keeps the
//! spans of its parts, `expand` generates the code. On any error the
//! original function is emitted unchanged next to the error, so one mistake
//! does not cascade into errors at every call site.
#![forbid(unsafe_code)]

mod args;
mod expand;
mod model;

use proc_macro::TokenStream;

/// Caches the output of an `async fn` (see the `cachet` crate docs).
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(attr.into(), item.into()).into()
}

/// Invalidates namespaces or one entry after an `async fn` succeeds (see the
/// `cachet` crate docs).
#[proc_macro_attribute]
pub fn invalidates(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::invalidates(attr.into(), item.into()).into()
}
