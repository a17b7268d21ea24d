//! The HTTP API (axum). Every cached answer carries `"from_cache"` and the
//! server time in milliseconds; bad input gets a 4xx with a JSON error that
//! names the problem, and writes nothing. Requests and answers are the typed
//! structs below; every error is an [`ApiError`].

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cache_aside::{Counts, with_status};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::dashboard::{self, Dashboard, Served};
use crate::data;
use crate::queries::{
    AirlineStats, Airport, FlightCount, NewFlight, Queries, RouteCount, WriteScope,
};

/// A request that takes longer is answered `408 Request Timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

// ---- Errors ---------------------------------------------------------------

/// Every answer that is not the result: its status code, and the body
/// [`ErrorBody`] with a message that names the problem.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a path or query parameter that is not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// 404: the airport or airline asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 422: a well-formed body whose values are not acceptable.
    #[error("{0}")]
    Unprocessable(String),
    /// 400: a query string that does not deserialize (axum's message).
    #[error("{}", .0.body_text())]
    Query(#[from] QueryRejection),
    /// A JSON body axum rejected, with axum's status and message: 400 for
    /// malformed JSON, 422 for a missing or mistyped field, 415 without a
    /// JSON content type.
    #[error("{}", .0.body_text())]
    Json(#[from] JsonRejection),
    /// 500: the database failed. The error is logged; the client is told
    /// only "database error".
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Query(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Json(e) => e.status(),
            ApiError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Database(e) = &self {
            tracing::error!(error = %e, "database error");
        }
        let body = ErrorBody {
            error: self.to_string(),
        };
        (self.status(), Json(body)).into_response()
    }
}

/// The body of every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// What was wrong, naming the field when there is one.
    pub error: String,
}

type ApiResult<T> = Result<Json<T>, ApiError>;

// ---- Requests -------------------------------------------------------------

/// `PATCH /airports/{iata}`: the new name.
#[derive(Debug, Clone, Deserialize)]
pub struct RenameAirport {
    /// 1 to 200 characters (trimmed).
    pub name: String,
}

/// `?from=FRA&to=JFK`: a route.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteParams {
    /// IATA code of the departure airport.
    pub from: String,
    /// IATA code of the arrival airport.
    pub to: String,
}

/// `?from=FRA&limit=5`: top destinations from an airport.
#[derive(Debug, Clone, Deserialize)]
pub struct TopRoutesParams {
    /// IATA code of the departure airport.
    pub from: String,
    /// 1 to 100; 10 when omitted.
    pub limit: Option<i64>,
}

/// `POST /flights`: a new flight. Unknown fields are rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFlightRequest {
    /// IATA code of the airline (2 characters).
    pub airline: String,
    /// IATA code of the departure airport.
    pub from: String,
    /// IATA code of the arrival airport.
    pub to: String,
    /// Departure in UTC, like `2026-12-01T10:00:00Z`.
    pub departure: String,
    /// 1 to 1000; 180 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<i64>,
}

// ---- Answers --------------------------------------------------------------

/// A cached answer: the value's own fields, plus where it came from and how
/// long the server took.
#[derive(Debug, Clone, Serialize)]
pub struct Answer<T> {
    /// The answer itself (its fields are inlined).
    #[serde(flatten)]
    pub value: T,
    /// Whether the value came from the cache.
    pub from_cache: bool,
    /// Server time in milliseconds (0.1 ms resolution).
    pub ms: f64,
}

/// What a handler of a cached answer returns: the answer, and (for the
/// live page's request times) which namespace served it.
type Answered<T> = Result<(Extension<Served>, Json<Answer<T>>), ApiError>;

impl<T> Answer<T> {
    fn new(
        value: T,
        ns: &'static str,
        from_cache: bool,
        started: Instant,
    ) -> (Extension<Served>, Json<Self>) {
        let ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
        let served = Served {
            ns,
            cached: from_cache,
        };
        let answer = Answer {
            value,
            from_cache,
            ms,
        };
        (Extension(served), Json(answer))
    }
}

/// `GET /flights/count`: the route and its [`FlightCount`].
#[derive(Debug, Clone, Serialize)]
pub struct RouteFlights {
    /// Departure airport (IATA, upper case).
    pub from: String,
    /// Arrival airport (IATA, upper case).
    pub to: String,
    /// The count (its fields are inlined).
    #[serde(flatten)]
    pub count: FlightCount,
}

/// `GET /routes/top`: the busiest destinations from an airport.
#[derive(Debug, Clone, Serialize)]
pub struct TopRoutes {
    /// Departure airport (IATA, upper case).
    pub from: String,
    /// The limit asked for.
    pub limit: i64,
    /// Busiest first.
    pub routes: Vec<RouteCount>,
}

/// `PATCH /airports/{iata}`: the airport's new name.
#[derive(Debug, Clone, Serialize)]
pub struct AirportRenamed {
    /// The airport (IATA, upper case).
    pub iata: String,
    /// Its new name.
    pub name: String,
}

/// `POST /flights` (201): the flight as stored.
#[derive(Debug, Clone, Serialize)]
pub struct FlightCreated {
    /// The new flight's id.
    pub id: i64,
    /// The id of its row in the audit table (written in the same transaction).
    pub audit_id: i64,
    /// Airline (IATA, upper case).
    pub airline: String,
    /// Departure airport (IATA, upper case).
    pub from: String,
    /// Arrival airport (IATA, upper case).
    pub to: String,
    /// Departure in UTC.
    pub departure: String,
    /// Seats.
    pub seats: i64,
}

/// `GET /cache/stats`: the cache's counters, in total and per namespace.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStats {
    /// Sum over all namespaces.
    pub total: NamespaceCounts,
    /// Per namespace, sorted by name.
    pub namespaces: BTreeMap<String, NamespaceCounts>,
}

/// The counters of one namespace (see [`cache_aside::Counts`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NamespaceCounts {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that ran the query and stored its answer.
    pub misses: u64,
    /// Calls that ran the query without the cache.
    pub bypasses: u64,
    /// Cache operations that failed or timed out.
    pub errors: u64,
    /// Stored values that did not decode.
    pub decode_errors: u64,
    /// Values written to the cache.
    pub stores: u64,
    /// Stores refused by the stale-set guard or size limit.
    pub stores_rejected: u64,
    /// Invalidations that reached the cache.
    pub invalidations: u64,
    /// Invalidations queued for retry.
    pub invalidations_queued: u64,
    /// Misses computed while a transaction scope fenced the entry, not stored.
    pub fenced: u64,
    /// Hits over calls, rounded to 4 decimals.
    pub hit_ratio: f64,
}

impl From<&Counts> for NamespaceCounts {
    fn from(c: &Counts) -> Self {
        NamespaceCounts {
            hits: c.hits,
            misses: c.misses,
            bypasses: c.bypasses,
            errors: c.errors,
            decode_errors: c.decode_errors,
            stores: c.stores,
            stores_rejected: c.stores_rejected,
            invalidations: c.invalidations,
            invalidations_queued: c.invalidations_queued,
            fenced: c.fenced,
            hit_ratio: (c.hit_ratio() * 1e4).round() / 1e4,
        }
    }
}

// ---- Routes ---------------------------------------------------------------

/// The API: the routes, a log line per request (tower-http `TraceLayer`, at
/// INFO) and a [`REQUEST_TIMEOUT`] per request. `POST /flights` writes in a
/// transaction scope ([`WriteScope::Transaction`]).
pub fn router(queries: Queries) -> Router {
    router_with(queries, WriteScope::Transaction)
}

/// [`router`], with `POST /flights` writing in the given [`WriteScope`]
/// (the consistency test's control run turns the scope off).
pub fn router_with(queries: Queries, scope: WriteScope) -> Router {
    prometheus();
    let dashboard = Dashboard::start(queries.cache.clone());
    let page = Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.json", get(dashboard::data))
        .with_state(dashboard.clone());
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
        .layer(middleware::from_fn_with_state(dashboard, dashboard::track))
        .merge(page)
        .layer(Extension(scope))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        // Outermost, so that timeouts are logged with their status too.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

/// A 3-letter IATA airport code, upper-cased.
fn airport_code(field: &str, code: &str) -> Result<String, ApiError> {
    let c = code.trim().to_ascii_uppercase();
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(c)
    } else {
        Err(ApiError::BadRequest(format!(
            "{field}: \"{code}\" is not an IATA airport code (3 letters, e.g. FRA)"
        )))
    }
}

fn airline_code(code: &str) -> Result<String, ApiError> {
    let c = code.trim().to_ascii_uppercase();
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(c)
    } else {
        Err(ApiError::BadRequest(format!(
            "airline: \"{code}\" is not an IATA airline code (2 characters, e.g. LH)"
        )))
    }
}

/// The airport, through the cache; a 404 naming the field if unknown.
async fn known_airport(q: &Queries, field: &str, code: &str) -> Result<Airport, ApiError> {
    q.airport(code)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{field}: unknown airport \"{code}\"")))
}

async fn get_airport(State(q): State<Queries>, Path(iata): Path<String>) -> Answered<Airport> {
    let started = Instant::now();
    let code = airport_code("iata", &iata)?;
    let (airport, status) = with_status(q.airport(&code)).await;
    match airport? {
        Some(a) => Ok(Answer::new(a, "airport", status.is_hit(), started)),
        None => Err(ApiError::NotFound(format!("unknown airport \"{code}\""))),
    }
}

async fn rename_airport(
    State(q): State<Queries>,
    Path(iata): Path<String>,
    body: Result<Json<RenameAirport>, JsonRejection>,
) -> ApiResult<AirportRenamed> {
    let code = airport_code("iata", &iata)?;
    let Json(body) = body?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::Unprocessable("name: 1 to 200 characters".into()));
    }
    let Some(renamed) = q.rename_airport(&code, name).await? else {
        return Err(ApiError::NotFound(format!("unknown airport \"{code}\"")));
    };
    Ok(Json(AirportRenamed {
        iata: renamed.iata,
        name: renamed.name,
    }))
}

/// The route's two codes, validated and known.
async fn route(
    q: &Queries,
    params: Result<Query<RouteParams>, QueryRejection>,
) -> Result<(String, String), ApiError> {
    let Query(p) = params?;
    let (from, to) = (airport_code("from", &p.from)?, airport_code("to", &p.to)?);
    if from == to {
        return Err(ApiError::BadRequest(format!(
            "from and to are the same airport ({from})"
        )));
    }
    known_airport(q, "from", &from).await?;
    known_airport(q, "to", &to).await?;
    Ok((from, to))
}

/// `Cache-Control: no-cache` asks for an answer computed now: the count
/// runs inside [`cache_aside::bypass`], so the database is asked (the
/// airports too) and the cache is neither read nor written (the load
/// benchmark's uncached side).
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
    params: Result<Query<RouteParams>, QueryRejection>,
) -> Answered<RouteFlights> {
    let started = Instant::now();
    let (from, to) = route(&q, params).await?;
    let count = q.count_flights(&from, &to);
    let (count, status) = if no_cache(&headers) {
        with_status(cache_aside::bypass(count)).await
    } else {
        with_status(count).await
    };
    let (count, from_cache) = (count?, status.is_hit());
    let body = RouteFlights { from, to, count };
    Ok(Answer::new(body, "flight_count", from_cache, started))
}

async fn count_flights_ttl_only(
    State(q): State<Queries>,
    params: Result<Query<RouteParams>, QueryRejection>,
) -> Answered<RouteFlights> {
    let started = Instant::now();
    let (from, to) = route(&q, params).await?;
    let (count, status) = with_status(q.count_flights_ttl_only(&from, &to)).await;
    let body = RouteFlights {
        from,
        to,
        count: count?,
    };
    Ok(Answer::new(
        body,
        "flight_count_ttl",
        status.is_hit(),
        started,
    ))
}

async fn top_routes(
    State(q): State<Queries>,
    params: Result<Query<TopRoutesParams>, QueryRejection>,
) -> Answered<TopRoutes> {
    let started = Instant::now();
    let Query(p) = params?;
    let from = airport_code("from", &p.from)?;
    let limit = p.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to 100, got {limit}"
        )));
    }
    known_airport(&q, "from", &from).await?;
    let (routes, status) = with_status(q.top_routes(&from, limit)).await;
    let body = TopRoutes {
        from,
        limit,
        routes: routes?,
    };
    Ok(Answer::new(body, "top_routes", status.is_hit(), started))
}

async fn airline_stats(
    State(q): State<Queries>,
    Path(iata): Path<String>,
) -> Answered<AirlineStats> {
    let started = Instant::now();
    let code = airline_code(&iata)?;
    let (stats, status) = with_status(q.airline_stats(&code)).await;
    match stats? {
        Some(s) => Ok(Answer::new(s, "airline_stats", status.is_hit(), started)),
        None => Err(ApiError::NotFound(format!("unknown airline \"{code}\""))),
    }
}

async fn add_flight(
    State(q): State<Queries>,
    Extension(scope): Extension<WriteScope>,
    body: Result<Json<NewFlightRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<FlightCreated>), ApiError> {
    let Json(p) = body?;
    let airline = airline_code(&p.airline)?;
    let (from, to) = (airport_code("from", &p.from)?, airport_code("to", &p.to)?);
    if from == to {
        return Err(ApiError::Unprocessable(format!(
            "from and to are the same airport ({from})"
        )));
    }
    let departure = data::parse_iso(&p.departure).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "departure: \"{}\" is not a UTC time like 2026-12-01T10:00:00Z",
            p.departure
        ))
    })?;
    let seats = p.seats.unwrap_or(180);
    if !(1..=1000).contains(&seats) {
        return Err(ApiError::Unprocessable(format!(
            "seats must be 1 to 1000, got {seats}"
        )));
    }
    let airline_id = q.airline_id(&airline).await?.ok_or_else(|| {
        ApiError::Unprocessable(format!("airline: unknown airline \"{airline}\""))
    })?;
    let unknown = |field: &str, code: &str| {
        ApiError::Unprocessable(format!("{field}: unknown airport \"{code}\""))
    };
    let src = q
        .airport(&from)
        .await?
        .ok_or_else(|| unknown("from", &from))?;
    let dst = q.airport(&to).await?.ok_or_else(|| unknown("to", &to))?;
    let flight = NewFlight {
        airline_id,
        airline: airline.clone(),
        src,
        dst,
        departure,
        // In 1..=1000, checked above.
        seats: seats as i32,
    };
    let (id, audit_id) = q.create_flight(&flight, scope).await?;
    let created = FlightCreated {
        id,
        audit_id,
        airline,
        from,
        to,
        departure: data::iso(departure),
        seats,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

async fn cache_stats(State(q): State<Queries>) -> Json<CacheStats> {
    let stats = q.cache.stats();
    Json(CacheStats {
        total: (&stats.total).into(),
        namespaces: stats
            .namespaces
            .iter()
            .map(|(ns, c)| (ns.clone(), c.into()))
            .collect(),
    })
}

/// The process's Prometheus recorder, installed (as the `metrics`
/// facade's global recorder) on first use. [`router`] calls it, so that it
/// is in place before the first cached call: a namespace takes its metric
/// handles when it is first used.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed before: /metrics shows nothing");
        }
        handle
    })
}

/// The cache's counters and histograms (the `metrics` feature of
/// cache-aside), in the Prometheus text format, by
/// `metrics-exporter-prometheus`.
async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus().render(),
    )
        .into_response()
}
