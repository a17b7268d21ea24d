use std::fmt;

/// Why a [`Cache`](crate::Cache) could not be built. Cache *operations*
/// never fail: they fall back to running the function uncached.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A builder setting is invalid; the message names it and says what is allowed.
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "cache-aside: invalid cache configuration: {msg}"),
        }
    }
}

impl std::error::Error for Error {}
