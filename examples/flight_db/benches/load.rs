//! Load benchmark of the count endpoint, with and without the cache, over
//! real HTTP on loopback (the service on a bound port, keep-alive clients).
//!
//! ```sh
//! cargo bench -p flight-db --bench load                       # SQLite, 1M flights
//! DATABASE_URL=postgres://postgres@127.0.0.1/flightdb \
//!   cargo bench -p flight-db --bench load                     # PostgreSQL
//! ```
//!
//! Writes requests/s, p50 and p99 of both sides and their ratio into
//! BENCHMARKS.md (the section for the database it ran on) and prints them.
//! `LOAD_SECONDS` (default 10) sets the duration of each side,
//! `LOAD_CLIENTS` (default 32) the number of concurrent connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flight_db::{DEFAULT_FLIGHTS, Dataset, Db, Queries, Seeding, api, db, redact};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Busy routes between hubs; requests rotate over them.
const ROUTES: &[(&str, &str)] = &[
    ("FRA", "JFK"),
    ("LHR", "JFK"),
    ("ATL", "LAX"),
    ("DXB", "LHR"),
    ("CDG", "ATL"),
    ("AMS", "DFW"),
    ("MUC", "ORD"),
    ("IST", "FRA"),
    ("DEN", "ATL"),
    ("HND", "SFO"),
    ("SIN", "DXB"),
    ("MAD", "MIA"),
    ("ICN", "LAX"),
    ("DOH", "LHR"),
    ("ORD", "CDG"),
    ("JFK", "DXB"),
];

struct Side {
    requests: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    from_cache: u64,
}

/// One keep-alive HTTP/1.1 connection.
struct Client {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::new(s),
            host: addr.to_string(),
        })
    }

    /// GET `path`; returns the status code and the body.
    async fn get(&mut self, path: &str, no_cache: bool) -> std::io::Result<(u16, Vec<u8>)> {
        let extra = if no_cache {
            "Cache-Control: no-cache\r\n"
        } else {
            ""
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", self.host);
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

async fn run_side(addr: SocketAddr, clients: usize, duration: Duration, no_cache: bool) -> Side {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = vec![];
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await.expect("connect to the service");
            let mut latencies = vec![];
            let mut hits = 0u64;
            let mut i = c;
            while Instant::now() < deadline {
                let (from, to) = ROUTES[i % ROUTES.len()];
                i += 1;
                let t = Instant::now();
                let (status, body) = client
                    .get(&format!("/flights/count?from={from}&to={to}"), no_cache)
                    .await
                    .expect("a response");
                latencies.push(t.elapsed());
                if std::env::var_os("LOAD_TRACE").is_some() {
                    eprintln!("{from}-{to} {:?}", t.elapsed());
                }
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                hits += u64::from(body.windows(17).any(|w| w == b"\"from_cache\":true"));
            }
            (latencies, hits)
        }));
    }
    let mut all = vec![];
    let mut from_cache = 0;
    for t in tasks {
        let (l, h) = t.await.expect("client task");
        all.extend(l);
        from_cache += h;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Side {
        requests: all.len() as u64,
        seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        from_cache,
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo bench -- --list` / `cargo test --benches`
    }
    let seconds: u64 = env_or("LOAD_SECONDS", 10);
    let clients: usize = env_or("LOAD_CLIENTS", 32);
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| db::default_sqlite_url());
    // Generated if empty, never replaced: the table below is for the
    // default dataset, so other data is an error that says how to fix it.
    let (db, opened) = Db::open(&url, Dataset::default(), Seeding::IfEmpty, true)
        .await
        .map_err(|e| format!("database {}: {e}", redact(&url)))?;
    if opened.data().dataset != Dataset::default() {
        return Err(format!(
            "{} holds {:?}, the benchmark measures {:?}: \
             `cargo run --example flight_db -- seed --force` regenerates it",
            redact(&url),
            opened.data().dataset,
            Dataset::default()
        )
        .into());
    }
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = flight_db::cache(&redis_url, "flightdb-bench").await;
    cache.namespace("flight_count").invalidate().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = api::router(Queries {
        db: db.clone(),
        cache,
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Warm the cache (and the database's pages) on every route once.
    let mut warm = Client::connect(addr).await?;
    for (from, to) in ROUTES {
        warm.get(&format!("/flights/count?from={from}&to={to}"), false)
            .await?;
    }
    let d = Duration::from_secs(seconds);
    eprintln!("uncached: {clients} clients for {seconds}s ...");
    let uncached = run_side(addr, clients, d, true).await;
    eprintln!("cached: {clients} clients for {seconds}s ...");
    let cached = run_side(addr, clients, d, false).await;
    assert_eq!(uncached.from_cache, 0);
    assert_eq!(
        cached.from_cache, cached.requests,
        "every cached request was a hit"
    );

    let rps = |s: &Side| s.requests as f64 / s.seconds;
    let kind = format!("{:?}", db.kind);
    let command = if db.kind == db::Kind::Postgres {
        "DATABASE_URL=postgres://... cargo bench -p flight-db --bench load"
    } else {
        "cargo bench -p flight-db --bench load"
    };
    let table = format!(
        "Database: {kind}, {flights} flights; {clients} keep-alive clients, {seconds} s per side, \
         GET /flights/count rotating over {routes} hub routes.\n\n```sh\n{command}\n```\n\n\
         | side | requests/s | p50 | p99 |\n|---|---|---|---|\n\
         | without cache (`Cache-Control: no-cache`) | {:.1} | {:.2} ms | {:.2} ms |\n\
         | with cache (Redis hits) | {:.0} | {:.3} ms | {:.3} ms |\n\
         | ratio | **{:.0}x** | {:.0}x | {:.0}x |\n",
        rps(&uncached),
        uncached.p50_ms,
        uncached.p99_ms,
        rps(&cached),
        cached.p50_ms,
        cached.p99_ms,
        rps(&cached) / rps(&uncached),
        uncached.p50_ms / cached.p50_ms,
        uncached.p99_ms / cached.p99_ms,
        flights = DEFAULT_FLIGHTS,
        routes = ROUTES.len(),
    );
    println!("{table}");
    write_section(&format!("flight-db load: {kind}"), &table)?;
    Ok(())
}

/// Replaces (or appends) the section between `<!-- {name} -->` markers in BENCHMARKS.md.
fn write_section(name: &str, body: &str) -> std::io::Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../BENCHMARKS.md");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = (
        format!("<!-- {name} begin -->"),
        format!("<!-- {name} end -->"),
    );
    let section = format!("{begin}\n{body}{end}");
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    std::fs::write(path, new)
}
