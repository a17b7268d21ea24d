//! The command line and the configuration it makes: parsed once, at start,
//! and passed down from there (nothing else reads arguments or the
//! environment for these settings).

use std::fmt;
use std::net::SocketAddr;

use clap::{Parser, Subcommand};

use crate::db::{self, Dataset};
use crate::{DEFAULT_FLIGHTS, DEFAULT_SEED, redact};

/// The Redis the cache uses when neither `--redis-url` nor `REDIS_URL` says.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// `flight_db [serve|demo|seed] [OPTIONS]`: the arguments as clap parses them.
///
/// The options are global: `flight_db --flights 5000 seed` and
/// `flight_db seed --flights 5000` mean the same.
#[derive(Parser)]
#[command(
    name = "flight_db",
    version,
    about = "The PostgreSQL + Redis caching tutorial as a service: axum + sqlx + cache-aside",
    long_about = None,
    after_help = "The database is generated on first start when it is empty; \
                  after that only `seed --force` drops and regenerates it."
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address the HTTP API listens on (serve).
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        default_value = "127.0.0.1:3000"
    )]
    pub listen: SocketAddr,

    /// Flights to generate, when the database is generated (at least 1000).
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = DEFAULT_FLIGHTS,
        value_parser = parse_flights
    )]
    pub flights: u64,

    /// Seed of the flight generator, when the database is generated.
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_SEED)]
    pub seed: u64,

    /// The database: `sqlite://PATH?mode=rwc` or `postgres://...`
    /// [default: SQLite in target/flight_db.sqlite3].
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// Redis for the cache; when it does not answer, the cache is process
    /// memory.
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        hide_env_values = true,
        value_name = "URL",
        default_value = DEFAULT_REDIS_URL
    )]
    pub redis_url: String,
}

/// `--flights`: a number, at least 1000 (the route counts need traffic).
fn parse_flights(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1000 => Ok(n),
        Ok(_) => Err("at least 1000".into()),
        Err(e) => Err(format!("not a number of flights ({e})")),
    }
}

/// The subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Run the tutorial story through the API and print it as a table;
    /// exits 1 if a step does not behave as the story says.
    Demo,
    /// Generate the database if it is empty, then exit.
    Seed {
        /// Drop the data that is there and generate it again.
        #[arg(long)]
        force: bool,
    },
}

/// The settings the service runs with, built once from [`Cli`].
#[derive(Clone)]
pub struct Config {
    /// Where `serve` listens.
    pub listen: SocketAddr,
    /// The database URL (may hold a password: print it with [`redact`]).
    pub database_url: String,
    /// The Redis URL (may hold a password: print it with [`redact`]).
    pub redis_url: String,
    /// Flights to generate when the database is generated.
    pub flights: u64,
    /// Seed of the flight generator.
    pub seed: u64,
}

impl Config {
    /// The subcommand (`serve` by default) and the configuration.
    pub fn from_cli(cli: Cli) -> (Command, Config) {
        let config = Config {
            listen: cli.listen,
            database_url: cli.database_url.unwrap_or_else(db::default_sqlite_url),
            redis_url: cli.redis_url,
            flights: cli.flights,
            seed: cli.seed,
        };
        (cli.command.unwrap_or(Command::Serve), config)
    }

    /// The data to generate when the database is generated.
    pub fn dataset(&self) -> Dataset {
        Dataset {
            flights: self.flights,
            seed: self.seed,
        }
    }
}

/// Debug output masks the URLs' passwords.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact(&self.database_url))
            .field("redis_url", &redact(&self.redis_url))
            .field("flights", &self.flights)
            .field("seed", &self.seed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<(Command, Config), clap::Error> {
        let mut argv = vec!["flight_db"];
        argv.extend(args);
        Cli::try_parse_from(argv).map(Config::from_cli)
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default_and_options_go_anywhere() {
        let (cmd, c) = parse(&[]).unwrap();
        assert_eq!(cmd, Command::Serve);
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 3000)));
        assert_eq!((c.flights, c.seed), (DEFAULT_FLIGHTS, DEFAULT_SEED));
        let (cmd, c) = parse(&["--flights", "5000", "seed", "--seed", "7"]).unwrap();
        assert_eq!(cmd, Command::Seed { force: false });
        assert_eq!((c.flights, c.seed), (5000, 7));
        let (cmd, c) = parse(&["demo", "--listen", "0.0.0.0:8080"]).unwrap();
        assert_eq!(cmd, Command::Demo);
        assert_eq!(c.listen.port(), 8080);
        let (cmd, _) = parse(&["seed", "--force"]).unwrap();
        assert_eq!(cmd, Command::Seed { force: true });
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--flights", "999"][..],
            &["--flights", "many"],
            &["--listen", "localhost"],
            &["--force"],
            &["serve", "--force"],
            &["frobnicate"],
        ] {
            let e = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }

    #[test]
    fn urls_fall_back_to_the_environment_and_are_never_shown() {
        let cmd = Cli::command();
        for (id, env) in [("database_url", "DATABASE_URL"), ("redis_url", "REDIS_URL")] {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env));
            assert!(
                arg.is_hide_env_values_set(),
                "{id}: --help would print the password"
            );
        }
        let (_, c) = parse(&["--database-url", "postgres://u:hunter2@h/db"]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
