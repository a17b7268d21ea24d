//! `tracing` spans: a miss runs its body inside `cache_aside.compute` (the
//! body's own events are its children) and records what became of the
//! value; an invalidation is `cache_aside.invalidate` with how it ended; a
//! hit makes no span unless the cache is built with `trace_calls(true)`,
//! and then one `cache_aside.call` with its status.
//!
//! Each test installs a recording subscriber for its thread and runs a
//! current-thread runtime under it, so every span of the test is seen.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use cache_aside::{Cache, cached, invalidates};
use support::{Calls, redis_url, unique_prefix};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One span as recorded: its name, its fields, and the events inside it.
#[derive(Debug, Clone, Default)]
struct SpanRec {
    name: String,
    fields: BTreeMap<String, String>,
    events: Vec<String>,
}

/// Records every span and event, at every level.
#[derive(Clone)]
struct Recorder {
    next: Arc<AtomicU64>,
    spans: Arc<Mutex<Vec<SpanRec>>>,
    stack: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            next: Arc::new(AtomicU64::new(1)),
            spans: Default::default(),
            stack: Default::default(),
        }
    }

    fn named(&self, name: &str) -> Vec<SpanRec> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, SeqCst);
        let mut rec = SpanRec {
            name: attrs.metadata().name().into(),
            ..Default::default()
        };
        attrs.record(&mut Fields(&mut rec.fields));
        let mut spans = self.spans.lock().unwrap();
        spans.resize(id as usize, SpanRec::default());
        spans[id as usize - 1] = rec;
        Id::from_u64(id)
    }
    fn record(&self, id: &Id, values: &Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        values.record(&mut Fields(&mut spans[id.into_u64() as usize - 1].fields));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut fields = BTreeMap::new();
        e.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        if let Some(top) = self.stack.lock().unwrap().last() {
            self.spans.lock().unwrap()[*top as usize - 1]
                .events
                .push(message);
        }
    }
    fn enter(&self, id: &Id) {
        self.stack.lock().unwrap().push(id.into_u64());
    }
    fn exit(&self, _: &Id) {
        self.stack.lock().unwrap().pop();
    }
}

/// Runs `test` on a current-thread runtime with `rec` as the subscriber.
fn under<F: std::future::Future>(rec: &Recorder, test: impl FnOnce() -> F) -> F::Output {
    let _guard = tracing::subscriber::set_default(rec.clone());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test())
}

async fn cache(name: &str) -> Cache {
    cache_with(name, false).await
}

async fn cache_with(name: &str, trace_calls: bool) -> Cache {
    let c = Cache::builder()
        .trace_calls(trace_calls)
        .prefix(unique_prefix(name))
        .redis_url(redis_url())
        .build()
        .unwrap();
    support::connected(&c).await;
    c
}

#[cached(ns = "traced_count", ttl = "5m", cache = cache, skip(cache, calls))]
async fn count(cache: &Cache, calls: &Calls, route: &str) -> Result<u64, String> {
    calls.hit();
    tracing::info!("counting {route}");
    if route == "bad" {
        return Err("no such route".into());
    }
    Ok(route.len() as u64)
}

#[invalidates("traced_count", key(route), cache = cache)]
async fn add(cache: &Cache, route: &str) {
    let _ = route;
}

#[test]
fn a_miss_runs_its_body_in_a_compute_span() {
    let rec = Recorder::new();
    under(&rec, || async {
        let c = cache("traced_miss").await;
        let calls = Calls::default();
        assert_eq!(count(&c, &calls, "FRA-JFK").await, Ok(7));
        assert!(count(&c, &calls, "bad").await.is_err());
    });
    let spans = rec.named("cache_aside.compute");
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let ok = &spans[0];
    assert_eq!(ok.fields["cache_aside.namespace"], "traced_count");
    assert!(ok.fields["cache_aside.key"].ends_with(":FRA-JFK"), "{ok:?}");
    assert_eq!(ok.fields["cache_aside.stored"], "true");
    assert_eq!(ok.fields["otel.kind"], "internal");
    assert!(ok.fields.contains_key("cache_aside.value_bytes"));
    assert!(!ok.fields.contains_key("error.type"));
    // The body's own event is inside the span.
    assert_eq!(ok.events, vec!["counting FRA-JFK".to_string()]);
    let err = &spans[1];
    assert_eq!(err.fields["cache_aside.stored"], "false");
    assert_eq!(err.fields["error.type"], "body_error");
}

#[test]
fn a_hit_makes_no_span_unless_calls_are_traced() {
    let rec = Recorder::new();
    under(&rec, || async {
        let c = cache("traced_hit").await;
        let calls = Calls::default();
        count(&c, &calls, "FRA-LHR").await.unwrap();
        let before = rec.spans.lock().unwrap().len();
        count(&c, &calls, "FRA-LHR").await.unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(rec.spans.lock().unwrap().len(), before, "a hit made a span");
    });
    let rec = Recorder::new();
    under(&rec, || async {
        let c = cache_with("traced_hit_trace", true).await;
        let calls = Calls::default();
        count(&c, &calls, "FRA-LHR").await.unwrap();
        count(&c, &calls, "FRA-LHR").await.unwrap();
    });
    let calls = rec.named("cache_aside.call");
    let statuses: Vec<&str> = calls
        .iter()
        .map(|s| s.fields["cache_aside.status"].as_str())
        .collect();
    assert_eq!(statuses, ["miss", "hit"]);
}

#[test]
fn an_invalidation_is_a_span_with_its_outcome() {
    let rec = Recorder::new();
    under(&rec, || async {
        let c = cache("traced_inval").await;
        add(&c, "FRA-JFK").await;
        c.namespace("traced_count").invalidate().await;
        // Nothing listens here: the invalidation is queued.
        let down = Cache::builder()
            .prefix(unique_prefix("traced_down"))
            .redis_url(format!("redis://127.0.0.1:{}", support::free_port()))
            .build()
            .unwrap();
        down.namespace("traced_count").invalidate().await;
    });
    let spans = rec.named("cache_aside.invalidate");
    let seen: Vec<(&str, &str, &str)> = spans
        .iter()
        .map(|s| {
            (
                s.fields["cache_aside.scope"].as_str(),
                s.fields["cache_aside.outcome"].as_str(),
                s.fields["db.system.name"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("key", "done", "redis"),
            ("namespace", "done", "redis"),
            ("namespace", "queued", "redis")
        ]
    );
    assert!(spans[0].fields["cache_aside.target"].ends_with(":FRA-JFK"));
    assert_eq!(spans[2].fields["error.type"], "queued");
}
