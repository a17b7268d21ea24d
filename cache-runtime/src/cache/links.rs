//! Which `#[cached]` fns read a namespace and which `#[invalidates]` fns
//! write it, as met by this cache in this process: two different fns
//! sharing one namespace, and a key invalidation whose key has another
//! number of parts than its reader's, are mistakes that compile and do
//! nothing (or worse). They are logged as errors when first met, and
//! [`Cache::check_links`] lists them for a test to assert on.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::RwLock;

use super::Cache;
use crate::key::layout;
use crate::sync::{read, write};

/// A macro call site: the fn (the raw `type_name` of an item in its body,
/// see `key::layout::fn_path`) and the number of parts its key has
/// (`None`: a `key = <expr>`, whose parts the macro cannot count).
/// Not public API.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Site {
    /// `type_name_of_val` of the site's marker fn.
    pub fn_raw: &'static str,
    /// The key's parts, when the macro knows them.
    pub parts: Option<usize>,
}

impl Site {
    fn path(&self) -> String {
        layout::fn_path(self.fn_raw)
    }
}

/// A link between a namespace's readers and writers that cannot be right
/// (see [`Cache::check_links`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkProblem {
    /// Two different `#[cached]` fns use one namespace: with keys of the
    /// same shape, one returns the other's values as hits.
    SharedNamespace {
        /// The namespace.
        namespace: String,
        /// The fns, by path.
        fns: [String; 2],
    },
    /// A key invalidation builds keys of another number of parts than the
    /// namespace's reader: it never reaches one of its entries.
    KeyParts {
        /// The namespace.
        namespace: String,
        /// The `#[cached]` fn and its key's parts.
        reader: (String, usize),
        /// The `#[invalidates(ns = .., key(..))]` fn and its key's parts.
        writer: (String, usize),
    },
    /// An invalidation of a namespace that no `#[cached]` fn of this
    /// process has read (a misspelt name, or a reader that lives in
    /// another service or has not run yet).
    NoReader {
        /// The namespace.
        namespace: String,
        /// The `#[invalidates]` fn.
        writer: String,
    },
}

impl fmt::Display for LinkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkProblem::SharedNamespace {
                namespace,
                fns: [a, b],
            } => write!(
                f,
                "`{a}` and `{b}` both cache in namespace \"{namespace}\": with keys of the same \
                 shape one serves the other's values; give each its own `ns`"
            ),
            LinkProblem::KeyParts {
                namespace,
                reader: (r, rn),
                writer: (w, wn),
            } => write!(
                f,
                "`{w}` invalidates keys of {wn} part(s) in namespace \"{namespace}\", whose reader \
                 `{r}` has keys of {rn}: it reaches none of its entries; name the same arguments \
                 in `key(..)` as the reader's key has"
            ),
            LinkProblem::NoReader { namespace, writer } => write!(
                f,
                "`{writer}` invalidates namespace \"{namespace}\", which no #[cached] fn of this \
                 process has read (a misspelt name, or a reader elsewhere)"
            ),
        }
    }
}

impl std::error::Error for LinkProblem {}

#[derive(Default)]
struct Sites {
    readers: Vec<Site>,
    key_writers: Vec<Site>,
    writers: Vec<Site>,
}

/// Every namespace's readers and writers met so far. Read-locked (and not
/// allocating) for a site already recorded, which is every call but the
/// first of a site for a namespace.
#[derive(Default)]
pub(crate) struct Links {
    by_ns: RwLock<BTreeMap<String, Sites>>,
}

fn same_fn(a: &Site, b: &Site) -> bool {
    a.fn_raw == b.fn_raw
}

impl Links {
    fn known(&self, ns: &str, site: &Site, list: fn(&Sites) -> &Vec<Site>) -> bool {
        read(&self.by_ns)
            .get(ns)
            .is_some_and(|sites| list(sites).iter().any(|s| same_fn(s, site)))
    }

    /// A `#[cached]` site met namespace `ns`.
    pub(crate) fn reader(&self, ns: &str, site: Site) {
        if self.known(ns, &site, |s| &s.readers) {
            return;
        }
        let mut map = write(&self.by_ns);
        let sites = map.entry(ns.to_owned()).or_default();
        if sites.readers.iter().any(|r| same_fn(r, &site)) {
            return;
        }
        let mut found = Vec::new();
        if let Some(other) = sites.readers.first() {
            found.push(shared(ns, other, &site));
        }
        for w in &sites.key_writers {
            found.extend(key_parts(ns, &site, w));
        }
        sites.readers.push(site);
        drop(map);
        log(&found);
    }

    /// A key invalidation of `ns` from `site`.
    pub(crate) fn key_writer(&self, ns: &str, site: Site) {
        if self.known(ns, &site, |s| &s.key_writers) {
            return;
        }
        let mut map = write(&self.by_ns);
        let sites = map.entry(ns.to_owned()).or_default();
        if sites.key_writers.iter().any(|w| same_fn(w, &site)) {
            return;
        }
        let found: Vec<_> = sites
            .readers
            .iter()
            .filter_map(|r| key_parts(ns, r, &site))
            .collect();
        sites.key_writers.push(site);
        drop(map);
        log(&found);
    }

    /// A namespace invalidation of `ns` from `site`.
    pub(crate) fn writer(&self, ns: &str, site: Site) {
        if self.known(ns, &site, |s| &s.writers) {
            return;
        }
        let mut map = write(&self.by_ns);
        let sites = map.entry(ns.to_owned()).or_default();
        if !sites.writers.iter().any(|w| same_fn(w, &site)) {
            sites.writers.push(site);
        }
    }

    pub(crate) fn problems(&self) -> Vec<LinkProblem> {
        let map = read(&self.by_ns);
        let mut out = Vec::new();
        for (ns, sites) in map.iter() {
            if let [first, rest @ ..] = &sites.readers[..] {
                out.extend(rest.iter().map(|r| shared(ns, first, r)));
            }
            for w in &sites.key_writers {
                out.extend(sites.readers.iter().filter_map(|r| key_parts(ns, r, w)));
            }
            if sites.readers.is_empty() {
                out.extend(sites.writers.iter().chain(&sites.key_writers).map(|w| {
                    LinkProblem::NoReader {
                        namespace: ns.clone(),
                        writer: w.path(),
                    }
                }));
            }
        }
        out
    }
}

fn shared(ns: &str, a: &Site, b: &Site) -> LinkProblem {
    LinkProblem::SharedNamespace {
        namespace: ns.to_owned(),
        fns: [a.path(), b.path()],
    }
}

fn key_parts(ns: &str, reader: &Site, writer: &Site) -> Option<LinkProblem> {
    match (reader.parts, writer.parts) {
        (Some(r), Some(w)) if r != w => Some(LinkProblem::KeyParts {
            namespace: ns.to_owned(),
            reader: (reader.path(), r),
            writer: (writer.path(), w),
        }),
        _ => None,
    }
}

fn log(found: &[LinkProblem]) {
    for p in found {
        tracing::error!("cache-aside: {p}");
    }
}

impl Cache {
    /// A key invalidation of `ns` from `site` (the name as the macro has it).
    pub(crate) fn note_key_writer(&self, ns: &str, site: Site) {
        self.inner.links.key_writer(ns, site);
    }

    /// A namespace invalidation of `ns` from `site`.
    pub(crate) fn note_writer(&self, ns: &str, site: Site) {
        self.inner.links.writer(ns, site);
    }

    /// The links between readers and writers that cannot be right, among
    /// the `#[cached]` and `#[invalidates]` fns that have run with this
    /// cache in this process: two fns sharing one namespace, a key
    /// invalidation whose key has another number of parts than its
    /// reader's, an invalidated namespace that no fn here has read. The
    /// first two are also logged as errors when they are first met. For a
    /// test that exercises a service's reads and writes and then asserts
    /// `cache.check_links().is_ok()`.
    ///
    /// ```
    /// # async fn demo() {
    /// use cache_aside::{Cache, LinkProblem, cached, invalidates};
    ///
    /// #[cached(ns = "team", cache = c, skip(c))]
    /// async fn members(c: &Cache, team: u32, page: u32) -> Vec<String> { vec![] }
    ///
    /// // Forgot `page`: these keys have one part, the reader's two.
    /// #[invalidates(ns = "team", key(team), cache = c)]
    /// async fn rename(c: &Cache, team: u32) -> Result<(), String> { Ok(()) }
    ///
    /// let c = Cache::builder().memory().build().unwrap();
    /// members(&c, 7, 0).await;
    /// rename(&c, 7).await.unwrap();
    /// let problems = c.check_links().unwrap_err();
    /// assert!(matches!(&problems[0], LinkProblem::KeyParts { namespace, .. } if namespace == "team"));
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
    /// ```
    pub fn check_links(&self) -> Result<(), Vec<LinkProblem>> {
        let problems = self.inner.links.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
