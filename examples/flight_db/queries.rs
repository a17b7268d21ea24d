//! The questions the service answers, each one cached with one attribute,
//! and the writes that invalidate exactly the answers they change.

use cache_aside::{Cache, cache_put, cached, invalidates};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::data;
use crate::db::Db;

/// An airport, as stored (and cached, and answered by `GET /airports/{iata}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Airport {
    /// Database id (the flights refer to it).
    pub airport_id: i32,
    /// IATA code, e.g. `FRA`.
    pub iata: String,
    /// ICAO code, e.g. `EDDF`.
    pub icao: String,
    /// Name.
    pub name: String,
    /// City.
    pub city: String,
    /// ISO country code.
    pub country: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub tz: String,
}

/// How many ways there are to fly a route: direct flights, and one-stop
/// itineraries whose second leg leaves 1 to 6 hours after the first lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightCount {
    /// `direct + one_stop`.
    pub count: i64,
    /// Direct flights.
    pub direct: i64,
    /// One-stop connections.
    pub one_stop: i64,
}

/// One destination of the top routes from an airport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteCount {
    /// Destination airport (IATA).
    pub to: String,
    /// Its name.
    pub name: String,
    /// Its city.
    pub city: String,
    /// Its country.
    pub country: String,
    /// Flights on the route.
    pub flights: i64,
    /// Seats on those flights.
    pub seats: i64,
}

/// What an airline flies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirlineStats {
    /// The airline (IATA).
    pub airline: String,
    /// Its name.
    pub name: String,
    /// Its flights.
    pub flights: i64,
    /// Distinct (from, to) pairs it flies.
    pub routes: i64,
    /// The airport it serves most (departures and arrivals), if it flies.
    pub busiest_airport: Option<String>,
    /// That airport's name (through the cached [`Queries::airport`]).
    pub busiest_airport_name: Option<String>,
    /// Its flights from and to that airport.
    pub busiest_airport_flights: i64,
}

/// A flight to insert (validated by the handler).
#[derive(Debug, Clone)]
pub struct NewFlight {
    /// Database id of the airline.
    pub airline_id: i32,
    /// The airline's IATA code (for the flight number).
    pub airline: String,
    /// Departure airport.
    pub src: Airport,
    /// Arrival airport.
    pub dst: Airport,
    /// Departure, Unix seconds (UTC).
    pub departure: i64,
    /// Seats.
    pub seats: i32,
}

impl NewFlight {
    /// The flight number: the airline's code and a number from the departure.
    pub fn flightno(&self) -> String {
        format!("{}{}", self.airline, 1 + self.departure.rem_euclid(9999))
    }
}

/// Whether [`Queries::create_flight`] runs its database transaction inside
/// a [`cache_aside::transaction`] scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteScope {
    /// Inside the scope: once the write returns, every read sees it. What
    /// the service runs.
    #[default]
    Transaction,
    /// Without it: a read between the invalidation and the COMMIT can store
    /// the count without the new flight, served until the next write. Only
    /// for the consistency test's control run, which shows what the scope
    /// prevents.
    Unscoped,
}

/// Now, in Unix milliseconds (0 if the clock is before 1970).
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The database plus the cache its answers go through.
#[derive(Clone)]
pub struct Queries {
    /// The database.
    pub db: Db,
    /// The cache the `#[cached]` functions use.
    pub cache: Cache,
}

/// Takes airport ids (resolved through the cached airport lookup), so that
/// the planner sees real values: a hub's departures are thousands of rows.
/// The connection window is written from both legs' side, so that whichever
/// leg the planner walks first, the other is found by an index range:
/// `(src, dst, departure)` for second legs, `(src, dst, arrival)` for first
/// legs (without the second, PostgreSQL walked the second legs and scanned
/// every first leg of the route pair: 7 s instead of 70 ms for ATL-LAX).
/// `CROSS JOIN` pins the first-legs-first order in SQLite (its documented
/// way to fix a join order); PostgreSQL plans it as an ordinary join.
const COUNT_SQL: &str = "
SELECT
  (SELECT count(*) FROM flight WHERE src = $1 AND dst = $2) AS direct,
  (SELECT count(*)
     FROM flight f1 CROSS JOIN flight f2
    WHERE f1.src = $1 AND f1.dst <> $2
      AND f2.src = f1.dst AND f2.dst = $2
      AND f2.departure BETWEEN f1.arrival + 3600 AND f1.arrival + 21600
      AND f1.arrival BETWEEN f2.departure - 21600 AND f2.departure - 3600) AS one_stop";

const TOP_ROUTES_SQL: &str = "
SELECT d.iata, d.name, d.city, d.country, count(*) AS flights, CAST(sum(f.seats) AS BIGINT) AS seats
  FROM flight f
  JOIN airport s ON s.airport_id = f.src
  JOIN airport d ON d.airport_id = f.dst
 WHERE s.iata = $1
 GROUP BY d.iata, d.name, d.city, d.country
 ORDER BY flights DESC, d.iata
 LIMIT $2";

/// Grouped on the route index, joined to the airports after the LIMIT.
const BUSIEST_ROUTES_SQL: &str = "
SELECT s.iata AS src, d.iata AS dst
  FROM (SELECT src, dst, count(*) AS n FROM flight GROUP BY src, dst ORDER BY n DESC, src, dst LIMIT $1) r
  JOIN airport s ON s.airport_id = r.src
  JOIN airport d ON d.airport_id = r.dst
 ORDER BY r.n DESC, s.iata, d.iata";

const AIRLINE_SQL: &str = "
SELECT al.iata, al.name, count(f.flight_id) AS flights,
       count(DISTINCT f.src * 100000 + f.dst) AS routes
  FROM airline al LEFT JOIN flight f ON f.airline_id = al.airline_id
 WHERE al.iata = $1
 GROUP BY al.iata, al.name";

const BUSIEST_SQL: &str = "
SELECT a.iata, count(*) AS n
  FROM (SELECT f.src AS ap FROM flight f JOIN airline al ON al.airline_id = f.airline_id WHERE al.iata = $1
        UNION ALL
        SELECT f.dst FROM flight f JOIN airline al ON al.airline_id = f.airline_id WHERE al.iata = $1) x
  JOIN airport a ON a.airport_id = x.ap
 GROUP BY a.iata
 ORDER BY n DESC, a.iata
 LIMIT 1";

fn airport_row(r: &AnyRow) -> Result<Airport, sqlx::Error> {
    Ok(Airport {
        airport_id: r.try_get("airport_id")?,
        iata: r.try_get("iata")?,
        icao: r.try_get("icao")?,
        name: r.try_get("name")?,
        city: r.try_get("city")?,
        country: r.try_get("country")?,
        lat: r.try_get("lat")?,
        lon: r.try_get("lon")?,
        tz: r.try_get("tz")?,
    })
}

/// An airport is cached for an hour; an unknown code for a minute (the
/// TTL from the value: a code that appears later is found soon).
fn airport_ttl(found: &Option<Airport>) -> std::time::Duration {
    std::time::Duration::from_secs(if found.is_some() { 3600 } else { 60 })
}

impl Queries {
    /// One airport by IATA code. Unknown codes are cached too (as `None`, for a minute),
    /// so a client asking for them again and again does not reach the database.
    /// Airports are read on most requests and change rarely: hits stay in
    /// this process for 30 s (the local tier), and a rename evicts them here
    /// at once and in other replicas within milliseconds. The local tier
    /// keeps the decoded airport (`keep_decoded`): a local hit is a lookup
    /// and a clone.
    #[cached(ns = "airport", ttl = airport_ttl, local = "30s", keep_decoded, cache = &self.cache)]
    pub async fn airport(&self, iata: &str) -> Result<Option<Airport>, sqlx::Error> {
        let row = sqlx::query("SELECT * FROM airport WHERE iata = $1")
            .bind(iata)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(airport_row).transpose()
    }

    /// Renames an airport, write-through: the row the `UPDATE` returns
    /// becomes the `airport` entry (in every replica), so the next read is
    /// a hit with the new name. `None`: no such airport (stored for a
    /// minute, as the reader would).
    #[cache_put(ns = "airport", key(iata), ttl = airport_ttl, cache = &self.cache)]
    pub async fn rename_airport(
        &self,
        iata: &str,
        name: &str,
    ) -> Result<Option<Airport>, sqlx::Error> {
        let row = sqlx::query("UPDATE airport SET name = $1 WHERE iata = $2 RETURNING *")
            .bind(name)
            .bind(iata)
            .fetch_optional(&self.db.pool)
            .await?;
        row.as_ref().map(airport_row).transpose()
    }

    /// The expensive count, cached for 5 minutes and invalidated by every
    /// new flight. (`cache_aside::bypass(q.count_flights(..))` asks the
    /// database now, without reading or writing the cache.)
    #[cached(ns = "flight_count", ttl = "5m", cache = &self.cache)]
    pub async fn count_flights(&self, from: &str, to: &str) -> Result<FlightCount, sqlx::Error> {
        self.count_query(from, to).await
    }

    /// The same count in a namespace that no write invalidates: the
    /// tutorial's TTL-only variant, stale until its short TTL passes.
    #[cached(ns = "flight_count_ttl", ttl = "5s", cache = &self.cache)]
    pub async fn count_flights_ttl_only(
        &self,
        from: &str,
        to: &str,
    ) -> Result<FlightCount, sqlx::Error> {
        self.count_query(from, to).await
    }

    /// The query behind both cached counts (the airports' ids come from the
    /// airport cache).
    async fn count_query(&self, from: &str, to: &str) -> Result<FlightCount, sqlx::Error> {
        let (Some(src), Some(dst)) = (self.airport(from).await?, self.airport(to).await?) else {
            return Ok(FlightCount {
                count: 0,
                direct: 0,
                one_stop: 0,
            });
        };
        let row = sqlx::query(COUNT_SQL)
            .bind(src.airport_id)
            .bind(dst.airport_id)
            .fetch_one(&self.db.pool)
            .await?;
        let direct: i64 = row.try_get("direct")?;
        let one_stop: i64 = row.try_get("one_stop")?;
        Ok(FlightCount {
            count: direct + one_stop,
            direct,
            one_stop,
        })
    }

    /// Warms the cache: recomputes and stores the flight counts of the `n`
    /// busiest routes (by direct flights), one after another, inside
    /// [`cache_aside::refresh`], so an entry that is there is replaced too.
    /// Returns the routes warmed.
    pub async fn warm(&self, n: u32) -> Result<usize, sqlx::Error> {
        let routes = sqlx::query(BUSIEST_ROUTES_SQL)
            .bind(i64::from(n))
            .fetch_all(&self.db.pool)
            .await?;
        for r in &routes {
            let (from, to): (String, String) = (r.try_get("src")?, r.try_get("dst")?);
            let count = cache_aside::refresh(self.count_flights(&from, &to)).await?;
            tracing::debug!(%from, %to, flights = count.count, "warmed");
        }
        Ok(routes.len())
    }

    /// Top destinations from an airport (a GROUP BY over its departures),
    /// with each destination's name, city and country through the cached
    /// [`Queries::airport`]: nested caching, so renaming an airport makes
    /// the lists that show it misses, with no `#[invalidates]` here.
    #[cached(ns = "top_routes", ttl = "5m", cache = &self.cache)]
    pub async fn top_routes(&self, from: &str, limit: i64) -> Result<Vec<RouteCount>, sqlx::Error> {
        let rows = sqlx::query(TOP_ROUTES_SQL)
            .bind(from)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let to: String = r.try_get("iata")?;
            let (name, city, country) = match self.airport(&to).await? {
                Some(a) => (a.name, a.city, a.country),
                None => (
                    r.try_get("name")?,
                    r.try_get("city")?,
                    r.try_get("country")?,
                ),
            };
            out.push(RouteCount {
                to,
                name,
                city,
                country,
                flights: r.try_get("flights")?,
                seats: r.try_get("seats")?,
            });
        }
        Ok(out)
    }

    /// Flights, routes and busiest airport of an airline (`None`: unknown
    /// airline). Tagged with the airline, so that a new flight invalidates
    /// its airline's statistics and no other's.
    #[cached(ns = "airline_stats", ttl = "5m", tags(airline = iata), cache = &self.cache)]
    pub async fn airline_stats(&self, iata: &str) -> Result<Option<AirlineStats>, sqlx::Error> {
        let Some(row) = sqlx::query(AIRLINE_SQL)
            .bind(iata)
            .fetch_optional(&self.db.pool)
            .await?
        else {
            return Ok(None);
        };
        let busiest = sqlx::query(BUSIEST_SQL)
            .bind(iata)
            .fetch_optional(&self.db.pool)
            .await?;
        let busiest_iata: Option<String> =
            busiest.as_ref().map(|r| r.try_get("iata")).transpose()?;
        // Through the cached `airport`: a rename reaches these statistics.
        let busiest_airport_name = match &busiest_iata {
            Some(code) => self.airport(code).await?.map(|a| a.name),
            None => None,
        };
        Ok(Some(AirlineStats {
            airline: row.try_get("iata")?,
            name: row.try_get("name")?,
            flights: row.try_get("flights")?,
            routes: row.try_get("routes")?,
            busiest_airport: busiest_iata,
            busiest_airport_name,
            busiest_airport_flights: busiest.as_ref().map_or(Ok(0), |r| r.try_get("n"))?,
        }))
    }

    /// The airline id for an IATA code (not cached: only writes need it).
    pub async fn airline_id(&self, iata: &str) -> Result<Option<i32>, sqlx::Error> {
        let row = sqlx::query("SELECT airline_id FROM airline WHERE iata = $1")
            .bind(iata)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| r.try_get(0)).transpose()
    }

    /// Adds a flight through the API: the flight and its audit row in one
    /// database transaction, run inside a [`cache_aside::transaction`]
    /// scope (unless `scope` says otherwise). Returns the flight's and the
    /// audit row's ids.
    ///
    /// The flight becomes visible at COMMIT, after [`Queries::add_flight`]
    /// (and its invalidation) returned. Inside the scope that invalidation
    /// fences the namespaces instead: a read before the COMMIT computes the
    /// old count from the database and does not store it, and when the
    /// scope ends they are invalidated again. So once this returns, every
    /// read, in any process, sees the new flight.
    pub async fn create_flight(
        &self,
        f: &NewFlight,
        scope: WriteScope,
    ) -> Result<(i64, i64), sqlx::Error> {
        let write = async {
            let mut tx = self.db.pool.begin().await?;
            let flight_id = self.add_flight(&mut tx, f).await?;
            let audit_id = self.audit_flight(&mut tx, flight_id, f).await?;
            tx.commit().await?;
            Ok((flight_id, audit_id))
        };
        match scope {
            WriteScope::Transaction => cache_aside::transaction(write).await,
            WriteScope::Unscoped => write.await,
        }
    }

    /// Inserts a flight in the transaction `tx`. It changes route counts,
    /// top routes and its airline's statistics, so exactly those are
    /// invalidated: two namespaces, and the entries tagged with the airline
    /// (airports do not change; the TTL-only count is left to its TTL on
    /// purpose). Invalidated when this returns, before the
    /// COMMIT: call it inside [`cache_aside::transaction`] (as
    /// [`Queries::create_flight`] does), or a read in between can cache
    /// the count without the flight. `scoped` says so to cache-aside, which
    /// logs an error if it is ever called outside a scope.
    #[invalidates("flight_count", "top_routes", cache = &self.cache, scoped)]
    #[invalidates(ns = "airline_stats", tag(airline = f.airline), cache = &self.cache, scoped)]
    pub async fn add_flight(
        &self,
        tx: &mut Transaction<'_, Any>,
        f: &NewFlight,
    ) -> Result<i64, sqlx::Error> {
        let km = data::distance_km((f.src.lat, f.src.lon), (f.dst.lat, f.dst.lon));
        let arrival = f.departure + data::block_seconds(km);
        let row = sqlx::query(
            "INSERT INTO flight (flightno, airline_id, src, dst, departure, arrival, seats)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING flight_id",
        )
        .bind(f.flightno())
        .bind(f.airline_id)
        .bind(f.src.airport_id)
        .bind(f.dst.airport_id)
        .bind(f.departure)
        .bind(arrival)
        .bind(f.seats)
        .fetch_one(&mut **tx)
        .await?;
        row.try_get(0)
    }

    /// Records in the transaction `tx` that flight `flight_id` was added
    /// (no cached answer reads the audit table: nothing to invalidate).
    /// Returns the audit row's id.
    pub async fn audit_flight(
        &self,
        tx: &mut Transaction<'_, Any>,
        flight_id: i64,
        f: &NewFlight,
    ) -> Result<i64, sqlx::Error> {
        let detail = format!(
            "{} {}-{} departing {}, {} seats",
            f.flightno(),
            f.src.iata,
            f.dst.iata,
            data::iso(f.departure),
            f.seats
        );
        let row = sqlx::query(
            "INSERT INTO flight_audit (at_ms, action, flight_id, detail)
             VALUES ($1, 'flight added', $2, $3) RETURNING audit_id",
        )
        .bind(unix_ms())
        .bind(flight_id)
        .bind(detail)
        .fetch_one(&mut **tx)
        .await?;
        row.try_get(0)
    }
}
