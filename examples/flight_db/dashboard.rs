//! The live page, `GET /`: per namespace, the hit ratio over the last five
//! minutes, hits and misses per second, and the p50/p99 of cached vs
//! uncached requests. The page (`dashboard.html`: plain SVG, no script from
//! elsewhere) polls `GET /dashboard.json` once a second.
//!
//! Where the numbers come from:
//! - calls per namespace: [`Cache::stats`] sampled once a second by a
//!   background task; a second's hits are the growth of `hits + coalesced +
//!   stale_served`, its misses that of `misses + bypasses` (calls that ran
//!   the query), so the page agrees with `/cache/stats`;
//! - request times: [`track`], a middleware around the API, times every
//!   answer that says which namespace served it and whether from the cache
//!   ([`Served`], set by `api::Answer`).
//!
//! The sampler holds the state weakly: it stops when the router is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use cache_aside::Cache;
use serde::Serialize;

/// Seconds of history kept and shown.
pub const WINDOW_SECS: usize = 300;
/// The seconds the page's "last minute" numbers cover.
const RECENT_SECS: usize = 60;
/// Request times kept per namespace, kind and second (the first ones of the
/// second: enough for a p99, bounded under any load).
const TIMES_PER_SECOND: usize = 4_000;

/// Set on a response by an answer from a cached function: which namespace
/// served it, and whether from the cache. [`track`] times it.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// The namespace of the cached function.
    pub ns: &'static str,
    /// Whether the value came from the cache.
    pub cached: bool,
}

/// One second of one namespace.
#[derive(Debug, Default, Clone)]
struct Tick {
    hits: u64,
    misses: u64,
    /// Request times in ms: answered from the cache, and not.
    cached_ms: Vec<f32>,
    uncached_ms: Vec<f32>,
}

#[derive(Debug, Default)]
struct History {
    /// Oldest first, at most [`WINDOW_SECS`]; one map per second.
    seconds: VecDeque<BTreeMap<String, Tick>>,
    /// The second being filled with request times.
    current: BTreeMap<&'static str, Tick>,
    /// Calls per namespace at the last sample: (answered, ran the query).
    last: BTreeMap<String, (u64, u64)>,
    samples: u64,
}

/// The dashboard's state: the cache it samples and the history.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache,
    started: Instant,
    history: Mutex<History>,
}

impl Dashboard {
    /// A dashboard of `cache`, sampled once a second by a task that stops
    /// when the last clone of the dashboard is dropped. Needs a tokio
    /// runtime.
    pub fn start(cache: Cache) -> Dashboard {
        let dashboard = Dashboard {
            inner: Arc::new(Inner {
                cache,
                started: Instant::now(),
                history: Mutex::new(History::default()),
            }),
        };
        dashboard.inner.sample();
        let weak = Arc::downgrade(&dashboard.inner);
        tokio::spawn(sampler(weak));
        dashboard
    }

    fn record(&self, served: Served, took: Duration) {
        let ms = took.as_secs_f32() * 1e3;
        let mut h = self.inner.lock();
        let tick = h.current.entry(served.ns).or_default();
        let times = match served.cached {
            true => &mut tick.cached_ms,
            false => &mut tick.uncached_ms,
        };
        if times.len() < TIMES_PER_SECOND {
            times.push(ms);
        }
    }

    /// What the page shows, now. The history is copied under the lock and
    /// summed and sorted after it, so requests do not wait for a poll.
    pub fn snapshot(&self) -> Snapshot {
        let copy = {
            let h = self.inner.lock();
            History {
                seconds: h.seconds.clone(),
                current: BTreeMap::new(),
                last: h.last.clone(),
                samples: h.samples,
            }
        };
        let h = &copy;
        let mut names: Vec<&String> = h.last.keys().collect();
        for s in &h.seconds {
            names.extend(s.keys());
        }
        names.sort();
        names.dedup();
        let namespaces = names
            .into_iter()
            .map(|ns| (ns.clone(), series(h, ns)))
            .collect();
        Snapshot {
            uptime_s: self.inner.started.elapsed().as_secs(),
            samples: h.samples,
            window_s: WINDOW_SECS,
            namespaces,
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the current second: the calls since the last sample, and the
    /// request times gathered meanwhile.
    fn sample(&self) {
        let stats = self.cache.stats();
        let mut h = self.lock();
        let mut second: BTreeMap<String, Tick> = std::mem::take(&mut h.current)
            .into_iter()
            .map(|(ns, t)| (ns.to_owned(), t))
            .collect();
        for (ns, c) in &stats.namespaces {
            let now = (c.hits + c.coalesced + c.stale_served, c.misses + c.bypasses);
            let before = h.last.insert(ns.clone(), now).unwrap_or((0, 0));
            let tick = second.entry(ns.clone()).or_default();
            tick.hits = now.0.saturating_sub(before.0);
            tick.misses = now.1.saturating_sub(before.1);
        }
        h.seconds.push_back(second);
        while h.seconds.len() > WINDOW_SECS {
            h.seconds.pop_front();
        }
        // Request times are shown for the last minute only.
        let old = h.seconds.len().saturating_sub(RECENT_SECS);
        if let Some(s) = old.checked_sub(1).and_then(|i| h.seconds.get_mut(i)) {
            for t in s.values_mut() {
                t.cached_ms = Vec::new();
                t.uncached_ms = Vec::new();
            }
        }
        h.samples += 1;
    }
}

async fn sampler(dashboard: Weak<Inner>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        match dashboard.upgrade() {
            Some(d) => d.sample(),
            None => return,
        }
    }
}

/// `GET /dashboard.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Seconds since the dashboard started.
    pub uptime_s: u64,
    /// Seconds sampled so far.
    pub samples: u64,
    /// The seconds the series cover at most.
    pub window_s: usize,
    /// Per namespace, by name.
    pub namespaces: BTreeMap<String, Series>,
}

/// One namespace's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Per second, oldest first: hits over calls (`None`: no call).
    pub hit_ratio: Vec<Option<f64>>,
    /// Per second, oldest first: calls answered from the cache.
    pub hits: Vec<u64>,
    /// Per second, oldest first: calls that ran the query.
    pub misses: Vec<u64>,
    /// The last minute.
    pub recent: Recent,
    /// Since the process started: answered from the cache, ran the query.
    pub total_hits: u64,
    /// See `total_hits`.
    pub total_misses: u64,
}

/// A namespace's last minute (or less, just after the start).
#[derive(Debug, Clone, Serialize)]
pub struct Recent {
    /// Seconds covered.
    pub seconds: usize,
    /// Hits over calls, `None` without calls.
    pub hit_ratio: Option<f64>,
    /// Per second, on average.
    pub hits_per_s: f64,
    /// Per second, on average.
    pub misses_per_s: f64,
    /// Requests answered from the cache, and their times.
    pub cached: Times,
    /// Requests that ran the query, and their times.
    pub uncached: Times,
}

/// Request times of one kind.
#[derive(Debug, Clone, Serialize)]
pub struct Times {
    /// Requests timed.
    pub requests: usize,
    /// Median in ms, `None` without requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile in ms.
    pub p99_ms: Option<f64>,
}

fn series(h: &History, ns: &str) -> Series {
    let none = Tick::default();
    let ticks: Vec<&Tick> = h
        .seconds
        .iter()
        .map(|s| s.get(ns).unwrap_or(&none))
        .collect();
    let ratio = |hits: u64, misses: u64| {
        let calls = hits + misses;
        (calls > 0).then(|| (hits as f64 / calls as f64 * 1e4).round() / 1e4)
    };
    let recent = &ticks[ticks.len().saturating_sub(RECENT_SECS)..];
    let (hits, misses) = recent
        .iter()
        .fold((0, 0), |(a, b), t| (a + t.hits, b + t.misses));
    let per_s = |n: u64| match recent.len() {
        0 => 0.0,
        len => (n as f64 / len as f64 * 10.0).round() / 10.0,
    };
    let times = |pick: fn(&Tick) -> &Vec<f32>| {
        let mut all: Vec<f32> = recent
            .iter()
            .flat_map(|t| pick(t).iter().copied())
            .collect();
        all.sort_by(f32::total_cmp);
        let at = |q: f64| {
            let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1;
            (f64::from(all[i]) * 100.0).round() / 100.0
        };
        Times {
            requests: all.len(),
            p50_ms: (!all.is_empty()).then(|| at(0.5)),
            p99_ms: (!all.is_empty()).then(|| at(0.99)),
        }
    };
    let (total_hits, total_misses) = h.last.get(ns).copied().unwrap_or((0, 0));
    Series {
        hit_ratio: ticks.iter().map(|t| ratio(t.hits, t.misses)).collect(),
        hits: ticks.iter().map(|t| t.hits).collect(),
        misses: ticks.iter().map(|t| t.misses).collect(),
        recent: Recent {
            seconds: recent.len(),
            hit_ratio: ratio(hits, misses),
            hits_per_s: per_s(hits),
            misses_per_s: per_s(misses),
            cached: times(|t| &t.cached_ms),
            uncached: times(|t| &t.uncached_ms),
        },
        total_hits,
        total_misses,
    }
}

/// Times every answer that carries [`Served`] (the middleware of
/// [`crate::api::router`]).
pub async fn track(State(dashboard): State<Dashboard>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(req).await;
    if let Some(served) = response.extensions().get::<Served>() {
        dashboard.record(*served, started.elapsed());
    }
    response
}

/// `GET /`: the page.
pub async fn page() -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(include_str!("dashboard.html")),
    )
        .into_response()
}

/// `GET /dashboard.json`: [`Snapshot`].
pub async fn data(State(dashboard): State<Dashboard>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(dashboard.snapshot()),
    )
        .into_response()
}
