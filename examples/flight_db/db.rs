//! The database: SQLite (default, a file under `target/`) or PostgreSQL
//! (`DATABASE_URL=postgres://...`), through sqlx's `Any` driver so that both
//! run the same queries.
//!
//! When data is generated is decided in one place, [`Db::open`], by a
//! [`Seeding`] the caller chooses: an empty database is always generated;
//! data that is there is kept unless the caller asks for it to be replaced
//! (`seed --force`); tables this example did not make are never dropped
//! without that.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
// Dynamic SQL here is only `values_sql` (constants and placeholder numbers)
// and the constant table list in `contents`.
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::data::{self, FlightGenerator};
use crate::redact;

/// The default SQLite database: `target/flight_db.sqlite3` in the workspace.
pub fn default_sqlite_url() -> String {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_string());
    let _ = std::fs::create_dir_all(&target);
    format!("sqlite://{target}/flight_db.sqlite3?mode=rwc")
}

/// Which database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `sqlite://...`
    Sqlite,
    /// `postgres://...` or `postgresql://...`
    Postgres,
}

/// A connected database.
#[derive(Clone, Debug)]
pub struct Db {
    /// The connection pool (sqlx `Any`: the same queries on both engines).
    pub pool: AnyPool,
    /// The engine behind the pool.
    pub kind: Kind,
}

/// Schema version of the generated data. Bump it when the generated tables
/// or the generator change: a database of another version is then refused
/// until `seed --force` regenerates it. A new table that holds no generated
/// data (like `flight_audit`) is created when a database is opened instead.
pub const DATA_VERSION: &str = "2";

/// The tables this example creates (and, when replacing, drops).
const TABLES: &[&str] = &["meta", "airline", "airport", "flight", "flight_audit"];

/// What the flight generator makes: `flights` flights from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dataset {
    /// Number of generated flights.
    pub flights: u64,
    /// Seed of the generator (the same seed gives the same flights).
    pub seed: u64,
}

impl Default for Dataset {
    fn default() -> Self {
        Dataset {
            flights: crate::DEFAULT_FLIGHTS,
            seed: crate::DEFAULT_SEED,
        }
    }
}

/// The data a database holds, as recorded when it was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// [`DATA_VERSION`] of the build that generated it.
    pub version: String,
    /// What was generated (flights added later through the API not counted).
    pub dataset: Dataset,
}

impl Generated {
    fn current(dataset: Dataset) -> Self {
        Generated {
            version: DATA_VERSION.to_string(),
            dataset,
        }
    }

    /// The `meta` row: `version/flights/seed`.
    fn encode(&self) -> String {
        format!(
            "{}/{}/{}",
            self.version, self.dataset.flights, self.dataset.seed
        )
    }

    /// A row that does not parse is kept as an unknown version (and refused).
    fn decode(v: &str) -> Self {
        let mut parts = v.splitn(3, '/');
        let version = parts.next().unwrap_or_default().to_string();
        let number = |p: Option<&str>| p.and_then(|n| n.parse().ok());
        match (number(parts.next()), number(parts.next())) {
            (Some(flights), Some(seed)) => Generated {
                version,
                dataset: Dataset { flights, seed },
            },
            _ => Generated {
                version: v.to_string(),
                dataset: Dataset {
                    flights: 0,
                    seed: 0,
                },
            },
        }
    }
}

/// What a database holds, before anything is generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// None of this example's tables: a new database.
    Empty,
    /// Data this example generated (of this or another [`DATA_VERSION`]).
    Generated(Generated),
    /// Tables with this example's names but no record of generating them:
    /// someone else's, or from before the record existed.
    Unknown(Vec<String>),
}

/// When [`Db::open`] (re)generates the data. An empty database is generated
/// in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeding {
    /// Keep what is there (`serve`, `demo`, `seed` without `--force`): data
    /// of another version, or tables this example did not make, are an
    /// error that says how to regenerate.
    IfEmpty,
    /// Replace the data unless it is exactly the dataset asked for: for a
    /// database the caller owns, such as the tests' own.
    UnlessSame,
    /// Drop and regenerate whatever is there (`seed --force`).
    Always,
}

/// What [`Db::open`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The data was there and is used as it is.
    Existing(Generated),
    /// The data was generated now (the database was empty, or replaced).
    Generated(Generated),
}

impl Opened {
    /// The data the database holds now.
    pub fn data(&self) -> &Generated {
        match self {
            Opened::Existing(g) | Opened::Generated(g) => g,
        }
    }
}

/// Why [`Db::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Connecting, reading or generating failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// The data is of another [`DATA_VERSION`]; it is not replaced without
    /// being asked.
    #[error(
        "it holds data version {found:?}, this build reads version {DATA_VERSION}: \
         regenerate it with `seed --force`"
    )]
    OtherVersion {
        /// The version recorded in it.
        found: String,
    },
    /// Tables of this example's names that it did not generate: left alone.
    #[error(
        "it has tables {tables} but no record that flight-db generated them; \
         refusing to drop them (`seed --force` does)"
    )]
    NotGenerated {
        /// The tables found, comma-separated.
        tables: String,
    },
}

fn ddl(kind: Kind) -> Vec<&'static str> {
    // The one difference: how the flight id is generated.
    let flight = match kind {
        Kind::Sqlite => FLIGHT_SQLITE,
        Kind::Postgres => FLIGHT_PG,
    };
    vec![
        "DROP TABLE IF EXISTS flight_audit",
        "DROP TABLE IF EXISTS flight",
        "DROP TABLE IF EXISTS airport",
        "DROP TABLE IF EXISTS airline",
        "DROP TABLE IF EXISTS meta",
        "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
        "CREATE TABLE airline (
            airline_id INTEGER PRIMARY KEY,
            iata TEXT NOT NULL UNIQUE,
            icao TEXT NOT NULL,
            name TEXT NOT NULL,
            callsign TEXT NOT NULL,
            country TEXT NOT NULL)",
        "CREATE TABLE airport (
            airport_id INTEGER PRIMARY KEY,
            iata TEXT NOT NULL UNIQUE,
            icao TEXT NOT NULL,
            name TEXT NOT NULL,
            city TEXT NOT NULL,
            country TEXT NOT NULL,
            lat DOUBLE PRECISION NOT NULL,
            lon DOUBLE PRECISION NOT NULL,
            tz TEXT NOT NULL)",
        flight,
        audit_ddl(kind),
    ]
}

/// The audit table: a row per flight added through the API, written in the
/// flight's own transaction. It holds no generated data, so a database
/// generated before it existed gets it when opened ([`Db::open`]) and
/// [`DATA_VERSION`] stays: nothing generated changed, and bumping it would
/// make `serve` refuse every existing database until `seed --force`.
/// No foreign key: an audit row outlives what it records (and builds that
/// do not know the table can still drop `flight`).
fn audit_ddl(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => AUDIT_SQLITE,
        Kind::Postgres => AUDIT_PG,
    }
}

const AUDIT_SQLITE: &str = "CREATE TABLE IF NOT EXISTS flight_audit (
    audit_id INTEGER PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    action TEXT NOT NULL,
    flight_id BIGINT NOT NULL,
    detail TEXT NOT NULL)";

const AUDIT_PG: &str = "CREATE TABLE IF NOT EXISTS flight_audit (
    audit_id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    action TEXT NOT NULL,
    flight_id BIGINT NOT NULL,
    detail TEXT NOT NULL)";

const FLIGHT_SQLITE: &str = "CREATE TABLE flight (
    flight_id INTEGER PRIMARY KEY,
    flightno TEXT NOT NULL,
    airline_id INTEGER NOT NULL REFERENCES airline (airline_id),
    src INTEGER NOT NULL REFERENCES airport (airport_id),
    dst INTEGER NOT NULL REFERENCES airport (airport_id),
    departure BIGINT NOT NULL,
    arrival BIGINT NOT NULL,
    seats INTEGER NOT NULL)";

const FLIGHT_PG: &str = "CREATE TABLE flight (
    flight_id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    flightno TEXT NOT NULL,
    airline_id INTEGER NOT NULL REFERENCES airline (airline_id),
    src INTEGER NOT NULL REFERENCES airport (airport_id),
    dst INTEGER NOT NULL REFERENCES airport (airport_id),
    departure BIGINT NOT NULL,
    arrival BIGINT NOT NULL,
    seats INTEGER NOT NULL)";

/// The indexes a real reporting database would have: by route and time
/// (departures and arrivals: the count and the connection search), by
/// destination, by airline.
const INDEXES: &[&str] = &[
    "CREATE INDEX flight_route ON flight (src, dst, departure)",
    "CREATE INDEX flight_route_arrival ON flight (src, dst, arrival)",
    "CREATE INDEX flight_dst ON flight (dst)",
    "CREATE INDEX flight_airline ON flight (airline_id)",
];

impl Db {
    /// Connects to `url`, without looking at or changing what it holds.
    pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
        install_default_drivers();
        let kind = if url.starts_with("postgres") {
            Kind::Postgres
        } else {
            Kind::Sqlite
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if kind == Kind::Sqlite { 8 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == Kind::Postgres {
                        // sqlx prepares statements; after five executions
                        // PostgreSQL may switch to a generic plan that cannot
                        // see that a hub has thousands of departures, and
                        // the count would take 10x longer. Plan per value.
                        sqlx::query("SET plan_cache_mode = force_custom_plan")
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let db = Db { pool, kind };
        if kind == Kind::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&db.pool)
                .await?;
        }
        Ok(db)
    }

    /// Connects, and generates `dataset` if the database is empty or if
    /// `seeding` asks to replace what it holds. The only place that decides
    /// to drop data. Data it keeps gets the tables that hold none (the audit
    /// table) if it was generated before they existed. `progress` draws a
    /// bar on stderr while generating (it hides itself when stderr is not a
    /// terminal).
    pub async fn open(
        url: &str,
        dataset: Dataset,
        seeding: Seeding,
        progress: bool,
    ) -> Result<(Db, Opened), DbError> {
        let db = Db::connect(url).await?;
        let wanted = Generated::current(dataset);
        let contents = db.contents().await?;
        // The one decision: keep (return), refuse (error), or generate.
        match (contents, seeding) {
            (Contents::Empty, _) => {}
            (Contents::Generated(have), Seeding::IfEmpty) if have.version == DATA_VERSION => {
                db.add_missing_tables().await?;
                return Ok((db, Opened::Existing(have)));
            }
            (Contents::Generated(have), Seeding::UnlessSame) if have == wanted => {
                db.add_missing_tables().await?;
                return Ok((db, Opened::Existing(have)));
            }
            (Contents::Generated(have), Seeding::IfEmpty) => {
                return Err(DbError::OtherVersion {
                    found: have.version,
                });
            }
            (Contents::Unknown(tables), Seeding::IfEmpty) => {
                return Err(DbError::NotGenerated {
                    tables: tables.join(", "),
                });
            }
            (_, Seeding::UnlessSame | Seeding::Always) => {
                tracing::warn!("database: replacing the data in {}", redact(url));
            }
        }
        db.generate(&wanted, progress).await?;
        Ok((db, Opened::Generated(wanted)))
    }

    /// Creates the tables that hold no generated data (the audit table) in
    /// a database generated by a build that did not have them; nothing else
    /// is touched, and a database that has them is left as it is.
    async fn add_missing_tables(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.kind == Kind::Postgres {
            // Two processes opening the database at once would both run
            // CREATE TABLE IF NOT EXISTS, which PostgreSQL may fail for one
            // of them (a unique violation in its catalog): take turns.
            sqlx::query("LOCK TABLE meta IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(audit_ddl(self.kind)).execute(&mut *tx).await?;
        tx.commit().await
    }

    /// What the database holds: nothing of this example's, generated data,
    /// or tables of its names that it has no record of generating.
    pub async fn contents(&self) -> Result<Contents, sqlx::Error> {
        let list = TABLES
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = match self.kind {
            Kind::Sqlite => {
                format!("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({list})")
            }
            Kind::Postgres => format!(
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name IN ({list})"
            ),
        };
        let mut tables: Vec<String> = sqlx::query(AssertSqlSafe(sql.as_str()))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if tables.is_empty() {
            return Ok(Contents::Empty);
        }
        tables.sort();
        if !tables.iter().any(|t| t == "meta") {
            return Ok(Contents::Unknown(tables));
        }
        let row = sqlx::query("SELECT v FROM meta WHERE k = 'data'")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Contents::Generated(Generated::decode(&r.try_get::<String, _>(0)?)),
            None => Contents::Unknown(tables),
        })
    }

    /// Drops this example's tables and generates `data` in one transaction
    /// (an interrupted run leaves the database as it was), the `meta` record
    /// included.
    async fn generate(&self, data: &Generated, progress: bool) -> Result<(), sqlx::Error> {
        let Dataset { flights, seed } = data.dataset;
        let started = Instant::now();
        tracing::info!("database: generating {flights} flights (seed {seed})");
        let bar = if progress {
            ProgressBar::new(flights)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:<20} [{bar:40}] {human_pos}/{human_len} ({per_sec:0}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#>-"),
        );
        bar.set_message("generating flights");
        let mut tx = self.pool.begin().await?;
        for stmt in ddl(self.kind) {
            sqlx::query(stmt).execute(&mut *tx).await?;
        }
        let airports = data::airports();
        let airlines = data::airlines();
        for chunk in airlines.chunks(200).enumerate() {
            let (i, rows) = chunk;
            let sql = values_sql(
                "INSERT INTO airline (airline_id, iata, icao, name, callsign, country) VALUES ",
                6,
                rows.len(),
            );
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
            for (j, a) in rows.iter().enumerate() {
                q = q
                    .bind((i * 200 + j + 1) as i32)
                    .bind(&a.iata)
                    .bind(&a.icao)
                    .bind(&a.name)
                    .bind(&a.callsign)
                    .bind(&a.country);
            }
            q.execute(&mut *tx).await?;
        }
        for (i, rows) in airports.chunks(500).enumerate() {
            let sql = values_sql(
                "INSERT INTO airport (airport_id, iata, icao, name, city, country, lat, lon, tz) VALUES ",
                9,
                rows.len(),
            );
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
            for (j, a) in rows.iter().enumerate() {
                q = q
                    .bind((i * 500 + j + 1) as i32)
                    .bind(&a.iata)
                    .bind(&a.icao)
                    .bind(&a.name)
                    .bind(&a.city)
                    .bind(&a.country)
                    .bind(a.lat)
                    .bind(a.lon)
                    .bind(&a.tz);
            }
            q.execute(&mut *tx).await?;
        }
        let mut generator = FlightGenerator::new(&airports, &airlines, seed);
        const BATCH: u64 = 500;
        let full_sql = values_sql(
            "INSERT INTO flight (flightno, airline_id, src, dst, departure, arrival, seats) VALUES ",
            7,
            BATCH as usize,
        );
        let mut done = 0u64;
        while done < flights {
            let n = BATCH.min(flights - done);
            let sql;
            let sql_ref = if n == BATCH {
                &full_sql
            } else {
                sql = values_sql(
                    "INSERT INTO flight (flightno, airline_id, src, dst, departure, arrival, seats) VALUES ",
                    7,
                    n as usize,
                );
                &sql
            };
            let mut q = sqlx::query(AssertSqlSafe(sql_ref.as_str()));
            for _ in 0..n {
                let f = generator.next_flight();
                q = q
                    .bind(f.flightno)
                    .bind((f.airline + 1) as i32)
                    .bind((f.src + 1) as i32)
                    .bind((f.dst + 1) as i32)
                    .bind(f.departure)
                    .bind(f.arrival)
                    .bind(f.seats);
            }
            q.execute(&mut *tx).await?;
            done += n;
            bar.set_position(done);
        }
        bar.set_message("creating indexes");
        for stmt in INDEXES {
            sqlx::query(*stmt).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO meta (k, v) VALUES ('data', $1)")
            .bind(data.encode())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Statistics for the planner; on PostgreSQL also the visibility map,
        // without which the count's index-only scans read the heap until
        // autovacuum gets to the new table (half the speed in the load bench).
        bar.set_message("analyzing");
        let analyze = match self.kind {
            Kind::Sqlite => "ANALYZE",
            Kind::Postgres => "VACUUM ANALYZE flight",
        };
        sqlx::query(analyze).execute(&self.pool).await?;
        bar.finish_and_clear();
        tracing::info!(
            "database: generated {} airports, {} airlines, {flights} flights in {:.1}s",
            airports.len(),
            airlines.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// `INSERT ... VALUES ($1, $2), ($3, $4)` for `rows` rows of `cols` columns.
fn values_sql(head: &str, cols: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * cols * 7);
    sql.push_str(head);
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push(',');
            }
            n += 1;
            sql.push('$');
            sql.push_str(&n.to_string());
        }
        sql.push(')');
    }
    sql
}
