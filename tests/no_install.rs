//! Without an installed cache (and no `cache = ...`), cached functions run
//! uncached and report `Status::NoCache`, not `Bypass` (which means an
//! outage), and the first call says so on stderr. Its own test binary:
//! nothing is installed in this process.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cache_aside::{Status, cached, invalidates, with_status};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ns = "plain")]
async fn plain(x: u32) -> u32 {
    CALLS.fetch_add(1, SeqCst);
    x + 1
}

#[invalidates("plain")]
async fn write() -> Result<(), String> {
    Ok(())
}

#[tokio::test]
async fn runs_uncached_as_no_cache() {
    assert!(cache_aside::installed().is_none());
    let before = CALLS.load(SeqCst);
    for _ in 0..3 {
        assert_eq!(with_status(plain(1)).await, (2, Status::NoCache));
    }
    assert_eq!(CALLS.load(SeqCst) - before, 3);
    assert_eq!(write().await, Ok(()));
}

/// Run only when re-executed by the test below, with no `tracing`
/// subscriber: the two calls must print the error once.
#[tokio::test]
async fn child_calls_twice() {
    if std::env::var_os("CACHE_ASIDE_NO_INSTALL_CHILD").is_none() {
        return;
    }
    plain(1).await;
    plain(2).await;
}

#[test]
fn the_first_call_says_so_on_stderr() {
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "child_calls_twice",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CACHE_ASIDE_NO_INSTALL_CHILD", "1")
        .output()
        .expect("the test binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let said = stderr.matches("function was called with no").count();
    assert_eq!(said, 1, "once, on the first call:\n{stderr}");
    assert!(stderr.contains("cache_aside::install"), "{stderr}");
}
