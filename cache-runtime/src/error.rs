//! The crate's errors. Cache *operations* never fail: they fall back to
//! running the function uncached. Only building a cache can fail
//! ([`Error`]), and a health check can report that Redis does not answer
//! ([`Unreachable`]).

use std::fmt;

/// Why a [`Cache`](crate::Cache) could not be built. The `Display` text
/// names the setting and says what is allowed.
///
/// ```
/// use cache_aside_runtime::{Cache, Error};
///
/// let err = Cache::builder().prefix("my app").build().unwrap_err();
/// assert!(matches!(err, Error::Name { what: "prefix", .. }));
/// assert!(err.to_string().contains("' '"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key prefix or namespace name that keys cannot carry.
    #[error("invalid {what} {name:?}: {problem}")]
    Name {
        /// `"prefix"` or `"namespace"`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// A builder setting outside its range.
    #[error("invalid {setting}: {allowed}")]
    Setting {
        /// The builder method.
        setting: &'static str,
        /// What it accepts (and what it got).
        allowed: String,
    },
    /// A Redis URL (or a cluster seed) that cannot be used. Passwords are
    /// redacted.
    #[error("invalid Redis URL {url}: {reason}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// Why redis-rs refused it.
        reason: String,
    },
    /// TLS settings that cannot work.
    #[error("{0}")]
    Tls(TlsProblem),
}

/// What is wrong with a prefix or namespace name (see [`Error::Name`]):
/// names are 1 to 64 characters of ASCII letters, digits, `_`, `.` and `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// It is empty.
    Empty,
    /// It is longer than 64 bytes.
    TooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// It contains a character outside the allowed set.
    Char(char),
}

const ALLOWED: &str = "only ASCII letters, digits, '_', '.' and '-' are allowed";

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => write!(f, "it is empty: use 1 to 64 characters; {ALLOWED}"),
            NameProblem::TooLong { bytes } => {
                write!(f, "it is {bytes} bytes long, at most 64 are allowed")
            }
            NameProblem::Char(c) => write!(f, "it contains {c:?}, which is not allowed; {ALLOWED}"),
        }
    }
}

/// TLS settings that cannot work (see [`Error::Tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// A `rediss://` URL, but the crate was built without its `tls` feature.
    FeatureOff,
    /// [`tls_root_cert`](crate::CacheBuilder::tls_root_cert) without the `tls` feature.
    RootCertWithoutFeature,
    /// [`tls_root_cert`](crate::CacheBuilder::tls_root_cert) with a URL that is not `rediss://`.
    RootCertWithoutTls,
    /// The root certificate PEM does not parse, or holds no certificate.
    BadRootCert(String),
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsProblem::FeatureOff => f.write_str(
                "a `rediss://` URL needs TLS support: enable the `tls` feature of cache-aside",
            ),
            TlsProblem::RootCertWithoutFeature => {
                f.write_str("tls_root_cert needs the `tls` feature of cache-aside")
            }
            TlsProblem::RootCertWithoutTls => f.write_str("tls_root_cert needs `rediss://` URLs"),
            TlsProblem::BadRootCert(why) => write!(f, "invalid TLS root certificate: {why}"),
        }
    }
}

/// [`Cache::ping`](crate::Cache::ping) got no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend} is not reachable: {reason}")]
pub struct Unreachable {
    pub(crate) backend: String,
    pub(crate) reason: String,
}
