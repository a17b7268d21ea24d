//! The tutorial story, end to end, through the real HTTP API (in process, no
//! socket): GET (miss) -> GET (hit) -> POST -> GET (fresh, miss) -> GET
//! (hit); then the TTL-only variant: stale after the POST until its TTL
//! passes, then fresh. Every step checks what the story says and the demo
//! fails if one does not hold.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::api::{NewFlightRequest, router};
use crate::queries::Queries;

const FROM: &str = "FRA";
const TO: &str = "JFK";

/// Sends one request to the router; returns status, JSON body and the
/// client-side time in ms.
pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value, f64) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("a valid request");
    let started = Instant::now();
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ms,
    )
}

struct Step {
    what: &'static str,
    expect: &'static str,
    status: StatusCode,
    body: Value,
    ms: f64,
    ok: bool,
}

fn count(v: &Value) -> i64 {
    v["count"].as_i64().unwrap_or(-1)
}

fn from_cache(v: &Value) -> Option<bool> {
    v["from_cache"].as_bool()
}

/// Runs the story; prints the table; `Ok(true)` when every step behaved.
pub async fn run(queries: Queries) -> Result<bool, Box<dyn std::error::Error>> {
    let app = router(queries.clone());
    // A clean start: the story begins with a cold cache.
    queries.cache.namespace("flight_count").invalidate().await;
    queries
        .cache
        .namespace("flight_count_ttl")
        .invalidate()
        .await;
    let count_uri = format!("/flights/count?from={FROM}&to={TO}");
    let ttl_uri = format!("/flights/count/ttl-only?from={FROM}&to={TO}");
    let post = serde_json::to_value(NewFlightRequest {
        airline: "LH".into(),
        from: FROM.into(),
        to: TO.into(),
        departure: "2026-12-01T10:00:00Z".into(),
        seats: Some(293),
    })?;
    let mut steps = vec![];
    let mut step = |what, expect, (status, body, ms): (StatusCode, Value, f64), ok: bool| {
        steps.push(Step {
            what,
            expect,
            status,
            body,
            ms,
            ok,
        });
    };

    // Invalidation on write.
    let r = call(&app, "GET", &count_uri, None).await;
    let c0 = count(&r.1);
    let ok = r.0 == StatusCode::OK && from_cache(&r.1) == Some(false);
    step("GET /flights/count", "miss: runs the query", r, ok);
    let r = call(&app, "GET", &count_uri, None).await;
    let ok = from_cache(&r.1) == Some(true) && count(&r.1) == c0;
    step("GET /flights/count", "hit: same count", r, ok);
    let r = call(&app, "POST", "/flights", Some(post.clone())).await;
    let ok = r.0 == StatusCode::CREATED;
    step("POST /flights", "201, invalidates", r, ok);
    let r = call(&app, "GET", &count_uri, None).await;
    let ok = from_cache(&r.1) == Some(false) && count(&r.1) == c0 + 1;
    step("GET /flights/count", "miss: count + 1", r, ok);
    let r = call(&app, "GET", &count_uri, None).await;
    let ok = from_cache(&r.1) == Some(true) && count(&r.1) == c0 + 1;
    step("GET /flights/count", "hit: count + 1", r, ok);

    // TTL only: no invalidation, stale until the TTL passes.
    let r = call(&app, "GET", &ttl_uri, None).await;
    let t0 = count(&r.1);
    let ok = from_cache(&r.1) == Some(false);
    step("GET /flights/count/ttl-only", "miss", r, ok);
    let r = call(&app, "POST", "/flights", Some(post)).await;
    let ok = r.0 == StatusCode::CREATED;
    step("POST /flights", "201 (TTL-only: no invalidation)", r, ok);
    let r = call(&app, "GET", &ttl_uri, None).await;
    let ok = from_cache(&r.1) == Some(true) && count(&r.1) == t0;
    step("GET /flights/count/ttl-only", "hit: STALE old count", r, ok);
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let r = call(&app, "GET", &ttl_uri, None).await;
    let ok = from_cache(&r.1) == Some(false) && count(&r.1) == t0 + 1;
    step(
        "(5 s later) GET .../ttl-only",
        "miss: TTL passed, fresh",
        r,
        ok,
    );

    println!("\nroute {FROM} -> {TO} (count = direct flights + one-stop connections)\n");
    println!(
        "{:<32} {:<32} {:>6} {:>10} {:>8} {:>9}  ok",
        "step", "the story says", "status", "from_cache", "count", "ms"
    );
    for s in &steps {
        let fc = from_cache(&s.body).map_or("-".to_string(), |b| b.to_string());
        let n = s.body["count"]
            .as_i64()
            .or(s.body["id"].as_i64().map(|_| -1))
            .map_or(
                "-".into(),
                |c| if c < 0 { "-".into() } else { c.to_string() },
            );
        println!(
            "{:<32} {:<32} {:>6} {:>10} {:>8} {:>9.2}  {}",
            s.what,
            s.expect,
            s.status.as_u16(),
            fc,
            n,
            s.ms,
            if s.ok { "yes" } else { "NO" }
        );
    }
    let all = steps.iter().all(|s| s.ok);
    let stats = queries.cache.stats();
    println!(
        "\ncache: {} hits, {} misses, hit ratio {:.2}; {}",
        stats.total.hits,
        stats.total.misses,
        stats.total.hit_ratio(),
        if all {
            "every step behaved as the story says"
        } else {
            "SOME STEPS DID NOT BEHAVE AS THE STORY SAYS"
        }
    );
    Ok(all)
}
