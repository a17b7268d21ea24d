//! Test support: isolated prefixes on the shared Redis, private
//! `redis-server` processes on free loopback ports (stopped by PID), and a
//! macro that runs one scenario on every backend.
#![allow(dead_code)]

pub mod cluster;
pub mod proxy;
pub mod tls;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cache_aside::Cache;

/// Waits (at most 10 s) until `c` answers a `PING`. A cache's first call
/// waits at most the operation timeout for its connection and otherwise
/// runs uncached, by design; a test that asserts exact statuses (or that a
/// value entered the local tier, which needs a subscribed connection)
/// waits here first, so a slow handshake on a loaded machine is not a
/// failure.
pub async fn connected(c: &Cache) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.ping().await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "Redis never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shared Redis of the machine (`$REDIS_URL`, else 127.0.0.1:6379).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix no other test (or test run) uses.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// Which backend a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Memory,
}

/// A cache with its own prefix on the given backend, connected.
pub async fn cache(backend: Backend, name: &str) -> Cache {
    let b = Cache::builder().prefix(unique_prefix(name));
    let c = match backend {
        Backend::Redis => b.redis_url(redis_url()),
        Backend::Memory => b.memory(),
    }
    .build()
    .expect("valid test config");
    connected(&c).await;
    c
}

/// Runs `scenario(Backend)` as one test per backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Redis).await
                }
            )*
        }
        mod memory_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Memory).await
                }
            )*
        }
    };
}

/// A raw redis-rs connection for looking at what the cache wrote.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection to Redis")
}

/// A private `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A new empty dir under the system temp dir.
pub fn scratch_dir(kind: &str) -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "cache-aside-{kind}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// `extra`: more `redis-server` arguments, e.g. `["--maxmemory", "2mb"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut s = RedisServer {
            port: free_port(),
            child: None,
            extra: extra.iter().map(|x| x.to_string()).collect(),
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (.ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let status = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .expect("kill(1)");
            assert!(status.success());
        }
    }

    /// SIGSTOP: the server accepts nothing and answers nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// A counter of how often a function body ran.
#[derive(Default)]
pub struct Calls(std::sync::atomic::AtomicUsize);

impl Calls {
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
