//! The installed default cache is what argument-less `#[cached]` uses. Its
//! own test binary, since installation is process-wide.

mod support;

use cache_aside::{Cache, Status, cached, invalidates, with_status};

#[cached(ns = "installed", ttl = 60)]
async fn doubled(x: u32) -> u32 {
    x * 2
}

#[invalidates("installed")]
async fn reset() {}

#[tokio::test]
async fn macros_use_the_installed_cache_and_the_first_install_wins() {
    let first = Cache::builder()
        .redis_url(support::redis_url())
        .prefix(support::unique_prefix("install"))
        .build()
        .unwrap();
    support::connected(&first).await;
    assert!(cache_aside::install(first.clone()));
    let second = Cache::builder().memory().prefix("second").build().unwrap();
    assert!(!cache_aside::install(second), "the first cache stays");
    assert_eq!(
        cache_aside::installed().map(Cache::prefix),
        Some(first.prefix())
    );

    assert_eq!(with_status(doubled(4)).await, (8, Status::Miss));
    assert_eq!(with_status(doubled(4)).await, (8, Status::Hit));
    reset().await; // a function without a Result invalidates whenever it returns
    assert_eq!(with_status(doubled(4)).await, (8, Status::Miss));
    let stats = first.stats();
    assert_eq!(stats.namespaces["installed"].hits, 1);
    assert_eq!(stats.namespaces["installed"].invalidations, 1);
}
