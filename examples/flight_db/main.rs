//! `cargo run --example flight_db -- [serve|demo|seed] [OPTIONS]` (`--help`
//! lists them).
//!
//! * `serve` (default): the HTTP API on `--listen` (default 127.0.0.1:3000),
//!   until Ctrl-C or SIGTERM.
//! * `demo`: the tutorial story, end to end, printed as a table.
//! * `seed`: generate the database if it is empty, then exit; `seed --force`
//!   drops the data and generates it again.
//!
//! Database: SQLite in `target/flight_db.sqlite3` (generated on first start),
//! or PostgreSQL with `DATABASE_URL=postgres://...` (or `--database-url`).
//! Cache: Redis at `REDIS_URL` (default redis://127.0.0.1:6379), or process
//! memory when Redis does not answer. Logs go to stderr (`RUST_LOG` filters).

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use flight_db::{Cli, Command, Config, Db, Opened, Queries, Seeding, api, demo, redact};

#[tokio::main]
async fn main() -> ExitCode {
    // Exits with 2 and a usage message on bad arguments, 0 on --help.
    let (command, config) = Config::from_cli(Cli::parse());
    init_tracing(command);
    tracing::debug!(?config, "configuration");
    match run(command, &config).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, coloured only on a terminal. `serve` logs a line per
/// request; `demo` and `seed` leave those out unless `RUST_LOG` asks.
fn init_tracing(command: Command) {
    let default = match command {
        Command::Serve => "info,sqlx=warn",
        Command::Demo | Command::Seed { .. } => "info,sqlx=warn,tower_http=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(command: Command, config: &Config) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let url = redact(&config.database_url);
    // Only `seed --force` replaces data; everything else generates an
    // empty database and keeps what is there.
    let seeding = match command {
        Command::Seed { force: true } => Seeding::Always,
        _ => Seeding::IfEmpty,
    };
    let (db, opened) = Db::open(&config.database_url, config.dataset(), seeding, true)
        .await
        .map_err(|e| format!("database {url}: {e}"))?;
    let data = opened.data().dataset;
    match (&opened, command) {
        (Opened::Existing(_), Command::Seed { .. }) => {
            tracing::info!(
                "database: {:?} at {url} already holds {} flights (seed {}); left as it is \
                 (`seed --force` drops and regenerates it)",
                db.kind,
                data.flights,
                data.seed
            );
            return Ok(ExitCode::SUCCESS);
        }
        (Opened::Existing(_), _) if config.asks_for_other_data_than(data) => tracing::warn!(
            "database: {url} holds {} flights (seed {}); --flights and --seed apply only \
             when it is generated (`seed --force` regenerates it)",
            data.flights,
            data.seed
        ),
        _ => {}
    }
    tracing::info!(
        "database: {:?} at {url}, {} generated flights (seed {})",
        db.kind,
        data.flights,
        data.seed
    );
    if let Command::Seed { .. } = command {
        return Ok(ExitCode::SUCCESS);
    }
    let cache = flight_db::cache(&config.redis_url, "flightdb").await;
    let queries = Queries { db, cache };
    if command == Command::Demo {
        let ok = demo::run(queries).await?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr}");
    tracing::info!("try: curl 'http://{addr}/flights/count?from=FRA&to=JFK'");
    if config.warm > 0 {
        let (q, n) = (queries.clone(), config.warm);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            tracing::info!("warming: recomputing the flight counts of the {n} busiest routes");
            match q.warm(n).await {
                Ok(k) => tracing::info!(
                    "warming: {k} route counts cached in {:.1?}",
                    started.elapsed()
                ),
                Err(e) => tracing::warn!(error = %e, "warming stopped"),
            }
        });
    }
    let cache = queries.cache.clone();
    axum::serve(listener, api::router(queries))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Invalidations queued while Redis was unreachable would be lost with
    // the process, and other replicas would serve old counts until their TTL.
    let left = cache.shutdown(std::time::Duration::from_secs(5)).await;
    tracing::info!(invalidations_not_landed = left, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM; axum then stops accepting and
/// lets the requests in progress finish (each within the request timeout).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    let which = tokio::select! {
        () = ctrl_c => "Ctrl-C",
        () = terminate => "SIGTERM",
    };
    tracing::info!("{which}: shutting down, finishing the requests in progress");
}
