//! The process-wide default cache used by `#[cached]` and `#[invalidates]`
//! when they have no `cache = ...` option.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::Cache;

static INSTALLED: OnceLock<Cache> = OnceLock::new();

/// Installs `cache` as the process-wide default used by the macros.
///
/// The first call wins and returns `true`; later calls keep the first cache,
/// log a warning and return `false`. Functions with a `cache = <expr>`
/// option do not use the installed cache.
///
/// ```
/// let cache = cache_aside::Cache::builder().memory().prefix("docs").build().unwrap();
/// cache_aside::install(cache.clone());
/// assert_eq!(cache_aside::installed().map(|c| c.prefix()), Some("docs"));
/// ```
pub fn install(cache: Cache) -> bool {
    let mut fresh = false;
    INSTALLED.get_or_init(|| {
        fresh = true;
        cache
    });
    if !fresh {
        tracing::warn!("cache_aside::install called twice: keeping the first cache");
    }
    fresh
}

/// The installed default cache, if any (see [`install`]).
pub fn installed() -> Option<&'static Cache> {
    INSTALLED.get()
}

/// The installed cache. When there is none, the first call in the process
/// says so as an error, and on stderr as well when the application has no
/// `tracing` subscriber (a forgotten `install` must not look like an outage,
/// or be silent).
pub(crate) fn installed_or_warn() -> Option<&'static Cache> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let cache = INSTALLED.get();
    if cache.is_none() && !WARNED.swap(true, Relaxed) {
        tracing::error!("{NO_CACHE}");
        // No subscriber here (neither global nor this thread's default):
        // nobody would see the line above.
        let unheard =
            tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
        if unheard {
            eprintln!("{NO_CACHE}");
        }
    }
    cache
}

const NO_CACHE: &str = "cache-aside: a #[cached] or #[invalidates] function was called with no \
cache: none was installed (cache_aside::install) and it has no `cache = ...` option. Cached \
functions run uncached (Status::NoCache) and invalidations do nothing until one is installed.";
