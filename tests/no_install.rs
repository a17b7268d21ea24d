//! Without an installed cache (and no `cache = ...`), cached functions run
//! uncached and report `Status::Bypass`. Its own test binary: nothing is
//! installed in this process.

use cache_aside::{Status, cached, invalidates, with_status};

static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[cached(ns = "plain")]
async fn plain(x: u32) -> u32 {
    CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    x + 1
}

#[invalidates("plain")]
async fn write() -> Result<(), String> {
    Ok(())
}

#[tokio::test]
async fn runs_uncached_as_bypass() {
    assert!(cache_aside::installed().is_none());
    for _ in 0..3 {
        assert_eq!(with_status(plain(1)).await, (2, Status::Bypass));
    }
    assert_eq!(CALLS.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(write().await, Ok(()));
}
