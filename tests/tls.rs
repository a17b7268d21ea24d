//! TLS (`rediss://`, `CacheBuilder::tls_root_cert`) against a private
//! TLS-only `redis-server` with a throwaway CA (`support::tls`). Needs the
//! `tls` feature (`cargo test --all-features` has it).
#![cfg(feature = "tls")]

mod support;

use std::time::{Duration, Instant};

use cache_aside::{Cache, Error, Invalidation, Status, with_status};
use support::tls::TlsRedis;
use support::{connected, unique_prefix};

fn tls_cache(url: &str, ca: Option<Vec<u8>>, prefix: &str) -> Cache {
    let b = Cache::builder().redis_url(url).prefix(prefix);
    match ca {
        Some(pem) => b.tls_root_cert(pem),
        None => b,
    }
    .build()
    .expect("valid TLS config")
}

/// Miss, hit, both invalidations, over `rediss://` trusting the test CA;
/// the entry really is in the TLS server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_the_private_ca_caches_and_invalidates() {
    let server = TlsRedis::start();
    let prefix = unique_prefix("tls");
    let c = tls_cache(&server.url(), Some(server.ca_pem()), &prefix);
    connected(&c).await;
    let ns = c.namespace("flight").ttl(Duration::from_secs(60));
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 10u32 })).await,
        (10, Status::Miss)
    );
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 11u32 })).await,
        (10, Status::Hit)
    );
    let key = c.entry_key("flight", &1).unwrap();
    let got = server.cli(&["EXISTS", &key]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "1", "{got:?}");

    assert_eq!(ns.invalidate().await, Invalidation::Done);
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 12u32 })).await,
        (12, Status::Miss)
    );
    assert_eq!(ns.invalidate_key(&1).await, Invalidation::Done);
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 13u32 })).await,
        (13, Status::Miss)
    );
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 14u32 })).await,
        (13, Status::Hit)
    );
    let st = c.stats().total;
    assert_eq!((st.errors, st.bypasses), (0, 0), "{st:?}");

    // The certificate names `localhost` too.
    let by_name = tls_cache(&server.localhost_url(), Some(server.ca_pem()), &prefix);
    connected(&by_name).await;
    assert_eq!(
        with_status(
            by_name
                .namespace("flight")
                .get_or_compute(&1, async { 15u32 })
        )
        .await,
        (13, Status::Hit)
    );
}

/// A server certificate the client does not trust (another CA, or the
/// system's roots) and plain TCP to the TLS port: every call runs uncached
/// (`Status::Bypass`, the right value, within the operation timeout) and
/// `ping` says why; nothing is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_open() {
    let server = TlsRedis::start();
    let prefix = unique_prefix("tls_untrusted");
    let caches = [
        tls_cache(&server.url(), Some(server.untrusted_ca_pem()), &prefix),
        tls_cache(&server.url(), None, &prefix),
        tls_cache(&server.plain_url(), None, &prefix),
    ];
    for c in &caches {
        let started = Instant::now();
        let ns = c.namespace("flight");
        for i in 0..5u32 {
            assert_eq!(
                with_status(ns.get_or_compute(&i, async move { i * 2 })).await,
                (i * 2, Status::Bypass),
                "{c:?}"
            );
        }
        assert_eq!(ns.invalidate().await, Invalidation::Queued);
        assert!(c.ping().await.is_err(), "{c:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    // Nothing reached the server.
    let keys = server.cli(&["--scan", "--pattern", &format!("{prefix}:*")]);
    assert!(keys.status.success(), "{keys:?}");
    assert_eq!(String::from_utf8_lossy(&keys.stdout).trim(), "");
}

/// A Redis ACL user limited to the prefix, over TLS; its password shows
/// nowhere in `Debug` output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_over_tls() {
    let server = TlsRedis::start();
    let out = server.cli(&[
        "ACL",
        "SETUSER",
        "cache-aside",
        "on",
        ">tls-s3cret",
        "~tlsacl:*",
        "&tlsacl:*",
        "-@all",
        "+get",
        "+set",
        "+mget",
        "+pttl",
        "+ping",
        "+evalsha",
        "+eval",
        "+script|load",
        "+hello",
        "+subscribe",
        "+publish",
        "+time",
        "+info",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
    let url = format!("rediss://cache-aside:tls-s3cret@127.0.0.1:{}", server.port);
    let b = Cache::builder()
        .redis_url(&url)
        .prefix("tlsacl")
        .tls_root_cert(server.ca_pem());
    assert!(!format!("{b:?}").contains("s3cret"), "{b:?}");
    let c = b.build().unwrap();
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    // The restricted user can PING over TLS.
    connected(&c).await;
    let ns = c.namespace("flight");
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 1u8 })).await,
        (1, Status::Miss)
    );
    assert_eq!(ns.invalidate_key(&1).await, Invalidation::Done);
    assert_eq!(ns.invalidate().await, Invalidation::Done);
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 2u8 })).await,
        (2, Status::Miss)
    );
    assert_eq!(
        with_status(ns.get_or_compute(&1, async { 3u8 })).await,
        (2, Status::Hit)
    );
    let st = c.stats().total;
    assert_eq!((st.errors, st.bypasses), (0, 0), "{st:?}");

    // A wrong password fails open, and the error does not echo it.
    let wrong = format!(
        "rediss://cache-aside:wrong-s3cret@127.0.0.1:{}",
        server.port
    );
    let bad = tls_cache(&wrong, Some(server.ca_pem()), "tlsacl");
    assert_eq!(
        with_status(bad.namespace("flight").get_or_compute(&1, async { 4u8 })).await,
        (4, Status::Bypass)
    );
    let err = bad.ping().await.unwrap_err();
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

/// Bad TLS settings are refused by `build`, before any I/O.
#[test]
fn bad_tls_settings_are_config_errors() {
    let err = Cache::builder()
        .redis_url("rediss://127.0.0.1:1")
        .tls_root_cert(b"not a certificate".to_vec())
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls(_)) && err.to_string().contains("certificate"),
        "{err}"
    );
    let server = TlsRedis::start();
    let err = Cache::builder()
        .redis_url("redis://127.0.0.1:1")
        .tls_root_cert(server.ca_pem())
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls(_)) && err.to_string().contains("rediss://"),
        "{err}"
    );
}
