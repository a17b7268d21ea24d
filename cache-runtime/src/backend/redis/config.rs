//! From the builder's settings to how connections are made ([`Mode`]):
//! the URL (or the cluster's seeds), RESP3, timeouts, TLS and its root
//! certificates, and the one function that redacts passwords in URLs.
//! No I/O.

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, ProtocolVersion};

use super::conn::Mode;
use crate::error::{Error, TlsProblem};

/// Retries of one request inside the cluster connection (MOVED, ASK,
/// TRYAGAIN, a node reconnecting), and their waits, all within the overall
/// response timeout (the operation timeout).
const CLUSTER_RETRIES: u32 = 2;
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (10, 100);

/// What the builder hands the Redis backend.
pub(crate) struct RedisConfig {
    /// The key prefix (for the life record, `life.rs`).
    pub prefix: String,
    /// The server's URL, or (cluster mode) the seed nodes' URLs.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub connections: usize,
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
    /// PEM of the CA(s) to trust for `rediss://` (none: the system's roots).
    pub tls_root_cert: Option<Vec<u8>>,
    /// `durable_invalidations(replicas, timeout)`.
    pub durable: Option<(u32, Duration)>,
}

impl RedisConfig {
    /// How connections are made, and how many are kept; `response_timeout`
    /// bounds one request of a cluster connection (the operation timeout,
    /// or more for connections that `WAIT`).
    pub(super) fn mode(&self, response_timeout: Duration) -> Result<(Mode, usize), Error> {
        let root_cert = self.tls_root_cert.as_deref();
        if self.cluster {
            let client = cluster_client(
                &self.urls,
                root_cert,
                response_timeout,
                self.connect_timeout,
            )?;
            return Ok((Mode::Cluster { client }, 1));
        }
        let url = self.urls.first().map_or("", String::as_str);
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            // Bounded per command by cache-aside (see `handle.rs`).
            .set_response_timeout(None);
        let info = node_info(url, root_cert)?;
        Ok((Mode::Node { info, conn_config }, self.connections.max(1)))
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`: every URL this
/// crate logs, prints or puts in an error goes through here.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            format!("{}{masked}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_string(),
    }
}

/// Does the URL ask for TLS?
fn is_tls_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("rediss://") || lower.starts_with("valkeys://")
}

/// TLS needs the `tls` feature; a root certificate needs a TLS URL.
fn check_tls(urls: &[String], root_cert: Option<&[u8]>) -> Result<(), TlsProblem> {
    let tls = urls.iter().any(|u| is_tls_url(u));
    if tls && !cfg!(feature = "tls") {
        return Err(TlsProblem::FeatureOff);
    }
    if root_cert.is_some() && !cfg!(feature = "tls") {
        return Err(TlsProblem::RootCertWithoutFeature);
    }
    if root_cert.is_some() && !urls.iter().all(|u| is_tls_url(u)) {
        return Err(TlsProblem::RootCertWithoutTls);
    }
    if tls {
        // redis enables rustls without a crypto provider; pick ring, once
        // per process. An `Err` means another one is installed: fine.
        #[cfg(feature = "tls")]
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Ok(())
}

/// The trusted CA(s): at least one certificate, and only well-formed ones
/// (redis-rs would take a PEM with none, and then trust nothing).
#[cfg(feature = "tls")]
fn root_certs(pem: &[u8]) -> Result<redis::TlsCertificates, TlsProblem> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| TlsProblem::BadRootCert(e.to_string()))?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsProblem::BadRootCert("no PEM certificate in it".into()));
    }
    Ok(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    })
}

/// One server's connection info: RESP3, and the trusted CA if any.
fn node_info(url: &str, root_cert: Option<&[u8]>) -> Result<ConnectionInfo, Error> {
    check_tls(&[url.to_owned()], root_cert).map_err(Error::Tls)?;
    let info = url.into_connection_info().map_err(|e| Error::Url {
        url: redact(url),
        reason: e.to_string(),
    })?;
    // RESP3: the connections that serve commands also receive the
    // invalidation channel's messages, in order with the replies.
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    #[cfg(feature = "tls")]
    if let Some(pem) = root_cert {
        // The certificates go into the `ConnectionInfo` through a `Client`
        // (PEM parsed here, so a bad one fails the build); it is handed to
        // `Manager::new_with_config` as is. deadpool-redis's `Config`
        // would drop them.
        let client = redis::Client::build_with_tls(info, root_certs(pem).map_err(Error::Tls)?)
            .map_err(|e| Error::Tls(TlsProblem::BadRootCert(e.to_string())))?;
        return Ok(client.get_connection_info().clone());
    }
    Ok(info)
}

/// The cluster client: seeds, timeouts, few and short retries (all within
/// the operation timeout), TLS. No I/O.
fn cluster_client(
    urls: &[String],
    root_cert: Option<&[u8]>,
    op_timeout: Duration,
    connect_timeout: Duration,
) -> Result<ClusterClient, Error> {
    if urls.is_empty() {
        return Err(Error::Setting {
            setting: "cluster",
            allowed: "at least one node URL".into(),
        });
    }
    check_tls(urls, root_cert).map_err(Error::Tls)?;
    let builder = ClusterClientBuilder::new(urls.iter().map(String::as_str))
        .connection_timeout(connect_timeout)
        .response_timeout(op_timeout)
        .overall_response_timeout(Some(op_timeout))
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_RETRY_WAIT_MS.0)
        .max_retry_wait(CLUSTER_RETRY_WAIT_MS.1);
    #[cfg(feature = "tls")]
    let builder = match root_cert {
        Some(pem) => builder.certs(root_certs(pem).map_err(Error::Tls)?),
        None => builder,
    };
    builder.build().map_err(|e| Error::Url {
        url: urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(","),
        reason: format!("invalid Redis Cluster configuration: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("rediss://:p%40x@h"), "rediss://:***@h");
        assert_eq!(redact("redis://token@h"), "redis://***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn tls_urls_are_recognised() {
        assert!(is_tls_url("rediss://h:6380"));
        assert!(is_tls_url("Valkeys://h"));
        assert!(!is_tls_url("redis://h"));
        assert!(!is_tls_url("valkey://h"));
    }

    #[test]
    fn tls_settings_are_checked() {
        assert!(check_tls(&urls(&["redis://h"]), None).is_ok());
        let root = Some(&b"pem"[..]);
        let err = check_tls(&urls(&["rediss://a", "redis://b"]), root)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("feature") || err.contains("rediss://"),
            "{err}"
        );
        if cfg!(feature = "tls") {
            assert!(check_tls(&urls(&["rediss://h"]), None).is_ok());
            assert!(check_tls(&urls(&["rediss://h"]), root).is_ok());
        } else {
            let err = check_tls(&urls(&["rediss://h"]), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("`tls` feature"), "{err}");
        }
    }

    #[test]
    fn a_cluster_needs_seeds_with_one_username() {
        let t = Duration::from_millis(100);
        let err = |u: &[&str]| match cluster_client(&urls(u), None, t, t) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{u:?} accepted"),
        };
        assert!(err(&[]).contains("at least one"));
        assert!(cluster_client(&urls(&["redis://a:1", "redis://b:2"]), None, t, t).is_ok());
        let e = err(&["redis://u:p@a:1", "redis://v:p@b:2"]);
        assert!(!e.contains(":p@"), "{e}");
        err(&["http://a"]);
    }
}
