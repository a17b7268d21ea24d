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

    /// Flights to generate, when the database is generated (at least 1000)
    /// [default: 1000000].
    // No clap default: Config tells an explicit value from the default.
    #[arg(long, global = true, value_name = "N", value_parser = parse_flights)]
    pub flights: Option<u64>,

    /// Seed of the flight generator, when the database is generated
    /// [default: 2026].
    #[arg(long, global = true, value_name = "N")]
    pub seed: Option<u64>,

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

    /// Routes whose flight counts `serve` recomputes and caches at start-up,
    /// in the background (the busiest first); 0 turns warming off.
    #[arg(long, global = true, value_name = "N", default_value_t = 10)]
    pub warm: u32,
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
    /// `--flights`, if given: flights to generate when the database is
    /// generated ([`DEFAULT_FLIGHTS`] if not).
    pub flights: Option<u64>,
    /// `--seed`, if given: the generator's seed ([`DEFAULT_SEED`] if not).
    pub seed: Option<u64>,
    /// `--warm`: routes to warm at start-up (0: none).
    pub warm: u32,
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
            warm: cli.warm,
        };
        (cli.command.unwrap_or(Command::Serve), config)
    }

    /// The data to generate when the database is generated.
    pub fn dataset(&self) -> Dataset {
        Dataset {
            flights: self.flights.unwrap_or(DEFAULT_FLIGHTS),
            seed: self.seed.unwrap_or(DEFAULT_SEED),
        }
    }

    /// Whether `--flights` or `--seed` asked for other data than `data`
    /// (they only apply when the database is generated).
    pub fn asks_for_other_data_than(&self, data: Dataset) -> bool {
        self.flights.is_some_and(|f| f != data.flights) || self.seed.is_some_and(|s| s != data.seed)
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
        let help = Cli::command().render_long_help().to_string();
        for default in [DEFAULT_FLIGHTS, DEFAULT_SEED] {
            assert!(help.contains(&format!("[default: {default}]")), "{help}");
        }
    }

    #[test]
    fn serve_is_the_default_and_options_go_anywhere() {
        let (cmd, c) = parse(&[]).unwrap();
        assert_eq!(cmd, Command::Serve);
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 3000)));
        assert_eq!(c.dataset(), Dataset::default());
        assert!(!c.asks_for_other_data_than(Dataset {
            flights: 5000,
            seed: 1
        }));
        let (cmd, c) = parse(&["--flights", "5000", "seed", "--seed", "7"]).unwrap();
        assert_eq!(cmd, Command::Seed { force: false });
        assert_eq!(
            c.dataset(),
            Dataset {
                flights: 5000,
                seed: 7
            }
        );
        assert!(!c.asks_for_other_data_than(c.dataset()));
        assert!(c.asks_for_other_data_than(Dataset::default()));
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
