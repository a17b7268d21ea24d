//! The HTTP API (axum). Every cached answer carries `"from_cache"` and the
//! server time in milliseconds; bad input gets a 4xx with a JSON error that
//! names the problem, and writes nothing.

use std::fmt::Write as _;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cache_aside::{Counts, with_status};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::data;
use crate::queries::{Airport, NewFlight, Queries};

/// An error answer: status and a JSON body `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    fn unprocessable(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::UNPROCESSABLE_ENTITY, msg.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// axum's own status: 400 for malformed JSON, 422 for a missing or
/// mistyped field, 415 without a JSON content type.
fn json_error(e: JsonRejection) -> ApiError {
    ApiError(e.status(), e.body_text())
}

pub fn router(queries: Queries) -> Router {
    Router::new()
        .route("/airports/{iata}", get(get_airport).patch(rename_airport))
        .route("/flights/count", get(count_flights))
        .route("/flights/count/ttl-only", get(count_flights_ttl_only))
        .route("/flights", post(add_flight))
        .route("/routes/top", get(top_routes))
        .route("/airlines/{iata}/stats", get(airline_stats))
        .route("/cache/stats", get(cache_stats))
        .route("/metrics", get(metrics))
        .with_state(queries)
}

fn ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

/// A JSON answer with `from_cache` and `ms` added.
fn answer(mut body: Value, from_cache: bool, started: Instant) -> Response {
    if let Value::Object(map) = &mut body {
        map.insert("from_cache".into(), from_cache.into());
        map.insert("ms".into(), ms(started).into());
    }
    Json(body).into_response()
}

/// A 3-letter IATA airport code, upper-cased.
fn airport_code(field: &str, code: &str) -> Result<String, ApiError> {
    let c = code.trim().to_ascii_uppercase();
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(c)
    } else {
        Err(ApiError::bad(format!(
            "{field}: \"{code}\" is not an IATA airport code (3 letters, e.g. FRA)"
        )))
    }
}

fn airline_code(code: &str) -> Result<String, ApiError> {
    let c = code.trim().to_ascii_uppercase();
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(c)
    } else {
        Err(ApiError::bad(format!(
            "airline: \"{code}\" is not an IATA airline code (2 characters, e.g. LH)"
        )))
    }
}

/// The airport, through the cache; a 404 naming the field if unknown.
async fn known_airport(q: &Queries, field: &str, code: &str) -> Result<Airport, ApiError> {
    q.airport(code)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{field}: unknown airport \"{code}\"")))
}

async fn get_airport(State(q): State<Queries>, Path(iata): Path<String>) -> ApiResult {
    let started = Instant::now();
    let code = airport_code("iata", &iata)?;
    let (airport, status) = with_status(q.airport(&code)).await;
    match airport? {
        Some(a) => Ok(answer(json!(a), status.is_hit(), started)),
        None => Err(ApiError::not_found(format!("unknown airport \"{code}\""))),
    }
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

async fn rename_airport(
    State(q): State<Queries>,
    Path(iata): Path<String>,
    body: Result<Json<Rename>, JsonRejection>,
) -> ApiResult {
    let code = airport_code("iata", &iata)?;
    let Json(body) = body.map_err(json_error)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::unprocessable("name: 1 to 200 characters"));
    }
    if !q.rename_airport(&code, name).await? {
        return Err(ApiError::not_found(format!("unknown airport \"{code}\"")));
    }
    Ok(Json(json!({ "iata": code, "name": name })).into_response())
}

#[derive(Deserialize)]
struct RouteQuery {
    from: String,
    to: String,
}

async fn route(
    q: &Queries,
    params: Result<Query<RouteQuery>, QueryRejection>,
) -> Result<(String, String), ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad(e.body_text()))?;
    let (from, to) = (airport_code("from", &p.from)?, airport_code("to", &p.to)?);
    if from == to {
        return Err(ApiError::bad(format!(
            "from and to are the same airport ({from})"
        )));
    }
    known_airport(q, "from", &from).await?;
    known_airport(q, "to", &to).await?;
    Ok((from, to))
}

/// `Cache-Control: no-cache` asks for an answer computed now: the database
/// is asked and the cache is neither read nor written (the load benchmark's
/// uncached side).
fn no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        })
}

async fn count_flights(
    State(q): State<Queries>,
    headers: HeaderMap,
    params: Result<Query<RouteQuery>, QueryRejection>,
) -> ApiResult {
    let started = Instant::now();
    let (from, to) = route(&q, params).await?;
    let (count, from_cache) = if no_cache(&headers) {
        (q.count_flights_uncached(&from, &to).await?, false)
    } else {
        let (c, status) = with_status(q.count_flights(&from, &to)).await;
        (c?, status.is_hit())
    };
    let body = json!({"from": from, "to": to, "count": count.count,
        "direct": count.direct, "one_stop": count.one_stop});
    Ok(answer(body, from_cache, started))
}

async fn count_flights_ttl_only(
    State(q): State<Queries>,
    params: Result<Query<RouteQuery>, QueryRejection>,
) -> ApiResult {
    let started = Instant::now();
    let (from, to) = route(&q, params).await?;
    let (count, status) = with_status(q.count_flights_ttl_only(&from, &to)).await;
    let count = count?;
    let body = json!({"from": from, "to": to, "count": count.count,
        "direct": count.direct, "one_stop": count.one_stop});
    Ok(answer(body, status.is_hit(), started))
}

#[derive(Deserialize)]
struct TopQuery {
    from: String,
    limit: Option<i64>,
}

async fn top_routes(
    State(q): State<Queries>,
    params: Result<Query<TopQuery>, QueryRejection>,
) -> ApiResult {
    let started = Instant::now();
    let Query(p) = params.map_err(|e| ApiError::bad(e.body_text()))?;
    let from = airport_code("from", &p.from)?;
    let limit = p.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad(format!(
            "limit must be 1 to 100, got {limit}"
        )));
    }
    known_airport(&q, "from", &from).await?;
    let (routes, status) = with_status(q.top_routes(&from, limit)).await;
    Ok(answer(
        json!({ "from": from, "limit": limit, "routes": routes? }),
        status.is_hit(),
        started,
    ))
}

async fn airline_stats(State(q): State<Queries>, Path(iata): Path<String>) -> ApiResult {
    let started = Instant::now();
    let code = airline_code(&iata)?;
    let (stats, status) = with_status(q.airline_stats(&code)).await;
    match stats? {
        Some(s) => Ok(answer(json!(s), status.is_hit(), started)),
        None => Err(ApiError::not_found(format!("unknown airline \"{code}\""))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostFlight {
    airline: String,
    from: String,
    to: String,
    departure: String,
    seats: Option<i64>,
}

async fn add_flight(
    State(q): State<Queries>,
    body: Result<Json<PostFlight>, JsonRejection>,
) -> ApiResult {
    let Json(p) = body.map_err(json_error)?;
    let airline = airline_code(&p.airline)?;
    let (from, to) = (airport_code("from", &p.from)?, airport_code("to", &p.to)?);
    if from == to {
        return Err(ApiError::unprocessable(format!(
            "from and to are the same airport ({from})"
        )));
    }
    let departure = data::parse_iso(&p.departure).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "departure: \"{}\" is not a UTC time like 2026-12-01T10:00:00Z",
            p.departure
        ))
    })?;
    let seats = p.seats.unwrap_or(180);
    if !(1..=1000).contains(&seats) {
        return Err(ApiError::unprocessable(format!(
            "seats must be 1 to 1000, got {seats}"
        )));
    }
    let airline_id = q.airline_id(&airline).await?.ok_or_else(|| {
        ApiError::unprocessable(format!("airline: unknown airline \"{airline}\""))
    })?;
    let unknown = |field: &str, code: &str| {
        ApiError::unprocessable(format!("{field}: unknown airport \"{code}\""))
    };
    let src = q
        .airport(&from)
        .await?
        .ok_or_else(|| unknown("from", &from))?;
    let dst = q.airport(&to).await?.ok_or_else(|| unknown("to", &to))?;
    let id = q
        .add_flight(&NewFlight {
            airline_id,
            airline: airline.clone(),
            src,
            dst,
            departure,
            seats: seats as i32,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "airline": airline, "from": from, "to": to,
            "departure": data::iso(departure), "seats": seats})),
    )
        .into_response())
}

fn counts_json(c: &Counts) -> Value {
    json!({
        "hits": c.hits, "misses": c.misses, "bypasses": c.bypasses, "errors": c.errors,
        "decode_errors": c.decode_errors, "stores": c.stores, "stores_rejected": c.stores_rejected,
        "invalidations": c.invalidations, "invalidations_queued": c.invalidations_queued,
        "hit_ratio": (c.hit_ratio() * 1e4).round() / 1e4,
    })
}

async fn cache_stats(State(q): State<Queries>) -> Response {
    let stats = q.cache.stats();
    let namespaces: serde_json::Map<String, Value> = stats
        .namespaces
        .iter()
        .map(|(ns, c)| (ns.clone(), counts_json(c)))
        .collect();
    Json(json!({ "total": counts_json(&stats.total), "namespaces": namespaces })).into_response()
}

/// A metric: name, help text, and how to read it from the counters.
type Series = (&'static str, &'static str, fn(&Counts) -> u64);

/// The same counters in the Prometheus text format.
async fn metrics(State(q): State<Queries>) -> Response {
    let stats = q.cache.stats();
    let mut out = String::new();
    let series: [Series; 9] = [
        ("hits", "Calls answered from the cache.", |c| c.hits),
        (
            "misses",
            "Calls that ran the query and stored its answer.",
            |c| c.misses,
        ),
        (
            "bypasses",
            "Calls that ran the query without the cache.",
            |c| c.bypasses,
        ),
        (
            "errors",
            "Cache operations that failed or timed out.",
            |c| c.errors,
        ),
        ("decode_errors", "Stored values that did not decode.", |c| {
            c.decode_errors
        }),
        ("stores", "Values written to the cache.", |c| c.stores),
        (
            "stores_rejected",
            "Stores refused by the stale-set guard or size limit.",
            |c| c.stores_rejected,
        ),
        (
            "invalidations",
            "Invalidations that reached the cache.",
            |c| c.invalidations,
        ),
        (
            "invalidations_queued",
            "Invalidations queued for retry.",
            |c| c.invalidations_queued,
        ),
    ];
    for (name, help, get) in series {
        let _ = writeln!(out, "# HELP cache_aside_{name}_total {help}");
        let _ = writeln!(out, "# TYPE cache_aside_{name}_total counter");
        for (ns, c) in &stats.namespaces {
            let _ = writeln!(
                out,
                "cache_aside_{name}_total{{namespace=\"{ns}\"}} {}",
                get(c)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP cache_aside_hit_ratio Hits over calls since start."
    );
    let _ = writeln!(out, "# TYPE cache_aside_hit_ratio gauge");
    for (ns, c) in &stats.namespaces {
        let _ = writeln!(
            out,
            "cache_aside_hit_ratio{{namespace=\"{ns}\"}} {:.4}",
            c.hit_ratio()
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
