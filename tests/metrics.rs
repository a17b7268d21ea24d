//! The `metrics` feature: every counter and the two histograms of a
//! namespace reach the installed `metrics` recorder (read back here with
//! the Prometheus exporter, as the example serves them).
#![cfg(feature = "metrics")]

mod support;

use cache_aside::{Cache, cached};
use metrics_exporter_prometheus::PrometheusBuilder;
use support::{Backend, cache};

#[cached(ns = "metered", ttl = "5m", cache = cache, skip(cache))]
async fn metered(cache: &Cache, id: u32) -> u32 {
    id
}

/// The value of `name{namespace="metered"}` in the rendered text.
fn value(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{namespace=\"metered\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn counters_and_histograms_reach_the_recorder() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let c = cache(Backend::Redis, "metrics").await;
    for _ in 0..3 {
        assert_eq!(metered(&c, 1).await, 1);
    }
    c.namespace("metered").invalidate().await;
    assert_eq!(metered(&c, 1).await, 1);
    let text = handle.render();
    assert_eq!(value(&text, "cache_aside_hits_total"), Some(2.0), "{text}");
    assert_eq!(
        value(&text, "cache_aside_misses_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cache_aside_stores_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cache_aside_invalidations_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cache_aside_compute_seconds_count"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "cache_aside_value_bytes_count"),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains("# HELP cache_aside_hits_total Calls answered"),
        "{text}"
    );
    // The same counts as `Cache::stats`.
    let st = c.stats().namespaces["metered"];
    assert_eq!((st.hits, st.misses), (2, 2));
}
