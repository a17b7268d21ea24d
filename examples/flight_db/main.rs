//! `cargo run --example flight_db -- [serve|demo|seed] [--listen ADDR] [--flights N] [--seed N]`
//!
//! * `serve` (default): the HTTP API on `--listen` (default 127.0.0.1:3000).
//! * `demo`: the tutorial story, end to end, printed as a table.
//! * `seed`: generate the database if it is empty, then exit; `seed --force`
//!   drops the data and generates it again.
//!
//! Database: SQLite in `target/flight_db.sqlite3` (generated on first start
//! when empty, never replaced but by `seed --force`), or PostgreSQL with `DATABASE_URL=postgres://...`.
//! Cache: Redis at `REDIS_URL` (default redis://127.0.0.1:6379), or process
//! memory when Redis does not answer.

use std::net::SocketAddr;
use std::process::ExitCode;

use flight_db::{
    DEFAULT_FLIGHTS, DEFAULT_SEED, Dataset, Db, Opened, Queries, Seeding, api, db, demo, redact,
};

struct Args {
    command: String,
    listen: SocketAddr,
    flights: u64,
    seed: u64,
    force: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        command: "serve".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        flights: DEFAULT_FLIGHTS,
        seed: DEFAULT_SEED,
        force: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "serve" | "demo" | "seed" => args.command = a,
            "--listen" => {
                let v = value("--listen")?;
                args.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: not an address: {v}"))?;
            }
            "--flights" => {
                let v = value("--flights")?;
                args.flights = v
                    .parse()
                    .map_err(|_| format!("--flights: not a number: {v}"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                args.seed = v
                    .parse()
                    .map_err(|_| format!("--seed: not a number: {v}"))?;
            }
            "--force" => args.force = true,
            "-h" | "--help" => {
                return Err(
                    "usage: flight_db [serve|demo|seed [--force]] [--listen ADDR] [--flights N] [--seed N]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.force && args.command != "seed" {
        return Err("--force: only with seed".into());
    }
    if args.flights < 1000 {
        return Err("--flights: at least 1000".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| db::default_sqlite_url());
    let shown = redact(&url);
    // Only `seed --force` replaces data; everything else generates an
    // empty database and keeps what is there.
    let seeding = if args.force {
        Seeding::Always
    } else {
        Seeding::IfEmpty
    };
    let wanted = Dataset {
        flights: args.flights,
        seed: args.seed,
    };
    let (db, opened) = Db::open(&url, wanted, seeding, true)
        .await
        .map_err(|e| format!("database {shown}: {e}"))?;
    let data = opened.data().dataset;
    match &opened {
        Opened::Generated(_) => {}
        Opened::Existing(_) if args.command == "seed" => eprintln!(
            "database: {shown} already holds {} flights (seed {}); left as it is \
             (`seed --force` drops and regenerates it)",
            data.flights, data.seed
        ),
        Opened::Existing(_) if data != wanted => eprintln!(
            "database: {shown} holds {} flights (seed {}); --flights and --seed apply only \
             when it is generated (`seed --force` regenerates it)",
            data.flights, data.seed
        ),
        Opened::Existing(_) => {}
    }
    eprintln!(
        "database: {:?} at {shown}, {} generated flights (seed {})",
        db.kind, data.flights, data.seed
    );
    if args.command == "seed" {
        return Ok(ExitCode::SUCCESS);
    }
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = flight_db::cache(&redis_url, "flightdb").await;
    let queries = Queries { db, cache };
    if args.command == "demo" {
        let ok = demo::run(queries).await?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    eprintln!(
        "try: curl 'http://{}/flights/count?from=FRA&to=JFK'",
        args.listen
    );
    axum::serve(listener, api::router(queries))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}
