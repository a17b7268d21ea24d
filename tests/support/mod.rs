//! Test support: isolated prefixes on the shared Redis (the machine's, or
//! one this test binary starts), private `redis-server` processes on free
//! loopback ports (stopped by PID, even when the binary dies), and a macro
//! that runs one scenario on every backend.
#![allow(dead_code)]

pub mod checker;
pub mod cluster;
pub mod proxy;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
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

/// The shared Redis of this test binary, probed once: `$REDIS_URL` when it
/// is set (and answers: otherwise every test that needs it fails at once,
/// saying so), else the machine's Redis at 127.0.0.1:6379 when one answers
/// there, else a private `redis-server` started for this test binary (see
/// [`RedisServer`]; it stops when the binary exits).
pub fn redis_url() -> String {
    static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
    match SHARED.get_or_init(shared_redis) {
        Ok(url) => url.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn shared_redis() -> Result<String, String> {
    if let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        return match ping(&url) {
            Ok(()) => Ok(url),
            Err(e) => Err(format!(
                "REDIS_URL={} does not answer ({e}): start Redis there, or unset REDIS_URL \
                 to let the tests start their own redis-server",
                redact(&url)
            )),
        };
    }
    let url = "redis://127.0.0.1:6379";
    if ping(url).is_ok() {
        return Ok(url.into());
    }
    session_server()
}

/// The private server of this test run: started by the test binary, or by
/// the first of the copies of itself that some tests spawn (local.rs,
/// stampede.rs), and shared by all of them; so it lives as long as the
/// test binary (the root of the run) and is found through a file named after
/// the root's PID, which its watchdog removes when it stops the server.
fn session_server() -> Result<String, String> {
    let root = root_pid();
    let file = std::env::temp_dir().join(format!("cache-aside-redis-{root}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
        {
            Ok(_) => {
                // Ours to start; the empty file tells the others to wait.
                let mut server = RedisServer {
                    port: free_port(),
                    running: None,
                    extra: vec![],
                    root: (root != std::process::id()).then_some(root),
                    file: Some(file.clone()),
                    dir: scratch_dir("redis"),
                };
                let url = server.url();
                let tmp = file.with_extension("tmp");
                if let Err(e) = server.try_spawn().and_then(|()| {
                    std::fs::write(&tmp, &url)
                        .and_then(|()| std::fs::rename(&tmp, &file))
                        .map_err(|e| format!("{}: {e}", file.display()))
                }) {
                    let _ = std::fs::remove_file(&file);
                    return Err(e);
                }
                // Never dropped: its watchdog stops it when the run ends.
                std::mem::forget(server);
                return Ok(url);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let url = std::fs::read_to_string(&file).unwrap_or_default();
                if !url.is_empty() {
                    if ping(&url).is_ok() {
                        return Ok(url);
                    }
                    // Left by an earlier process with this PID.
                    let _ = std::fs::remove_file(&file);
                    continue;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} stayed empty for 10 s: no redis-server started (remove the file)",
                        file.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("{}: {e}", file.display())),
        }
    }
}

/// The PID of the test binary that runs this test: our parent when it is
/// the same executable (a test that spawned a copy of itself), else us.
fn root_pid() -> u32 {
    let parent = std::os::unix::process::parent_id();
    let exe = |pid: String| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    match (exe("self".into()), exe(parent.to_string())) {
        (Some(me), Some(p)) if me == p => parent,
        _ => std::process::id(),
    }
}

/// One `PING`, bounded (2 s): does a Redis answer at `url`?
fn ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    con.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query::<String>(&mut con)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// `Err(what to install)` when `redis-server` is not on `PATH`: the tests
/// fail at once with that line instead of waiting for a server.
fn redis_server_on_path() -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("redis-server").is_file()));
    if found {
        Ok(())
    } else {
        Err(
            "redis-server is not on PATH: install Redis (Debian/Ubuntu: `apt-get install \
             redis-server`, macOS: `brew install redis`), or run scripts/test, which installs it"
                .into(),
        )
    }
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

/// Two `Cache` instances on the machine's Redis under one prefix: two
/// processes, as far as the protocol can tell.
pub async fn two_instances(name: &str) -> (Cache, Cache) {
    let prefix = unique_prefix(name);
    let make = || {
        Cache::builder()
            .prefix(prefix.clone())
            .redis_url(redis_url())
            .build()
            .expect("valid test config")
    };
    let (a, b) = (make(), make());
    connected(&a).await;
    connected(&b).await;
    (a, b)
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
///
/// It runs under a tiny `sh` watchdog that reads a pipe from this process
/// and kills the server by PID when the pipe closes: on [`kill`](Self::kill)
/// and drop, and when the test binary exits in any way (a panic, a signal,
/// a server kept in a static that is never dropped), because the kernel
/// closes the pipe then. No test run leaves a `redis-server` behind.
pub struct RedisServer {
    pub port: u16,
    /// The watchdog and the server's PID, while it runs.
    running: Option<(Child, u32)>,
    extra: Vec<String>,
    /// A session server's (see `session_server`): the root test binary it
    /// outlives the process that started it for, and its file.
    root: Option<u32>,
    file: Option<std::path::PathBuf>,
    /// Its working dir (`--dir`), its own: a replica writes the RDB it
    /// syncs there, and a server started where one lies would load it.
    dir: std::path::PathBuf,
}

/// The watchdog, `sh -c WATCHDOG <root> <file> redis-server <args>`: it
/// starts the server, prints its PID, waits for EOF on stdin (and then, for
/// a session server, until the root test binary `<root>` is gone too), kills
/// the server by PID (its own child), reaps it and removes the session file
/// `<file>`.
const WATCHDOG: &str = r#"root=$0 file=$1
shift
"$@" </dev/null >/dev/null 2>&1 &
echo "$!"
while read -r _; do :; done
while [ -n "$root" ] && kill -0 "$root" 2>/dev/null; do sleep 0.2; done
kill -KILL "$!" 2>/dev/null
wait "$!"
[ -z "$file" ] || rm -f "$file"
"#;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `count` distinct loopback ports nothing listens on right now, all held
/// until the last is bound so that none is handed out twice.
///
/// They are drawn at random from below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768-60999 by default): a port from inside it
/// (what binding port 0 gives) can be taken as the local end of any
/// process's outgoing connection between this check and the server's own
/// bind, which made a cluster node fail with "Address already in use".
pub fn free_ports(count: usize) -> Vec<u16> {
    use std::hash::{BuildHasher, Hasher};
    const LOW: u32 = 10_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    // Never the same port twice in one process (a port handed out is free
    // again once its listener is dropped, until its server binds it).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut held: Vec<TcpListener> = Vec::with_capacity(count);
    let state = std::collections::hash_map::RandomState::new();
    let mut tries = 0u64;
    while held.len() < count {
        tries += 1;
        let listener = if high > LOW + 1_000 && tries < 10_000 {
            let mut h = state.build_hasher();
            h.write_u64(tries);
            let port = LOW + (h.finish() % u64::from(high - LOW)) as u32;
            if given.contains(&(port as u16)) {
                continue;
            }
            match TcpListener::bind(("127.0.0.1", port as u16)) {
                Ok(l) => l,
                Err(_) => continue,
            }
        } else {
            TcpListener::bind("127.0.0.1:0").expect("a free loopback port")
        };
        held.push(listener);
    }
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect();
    given.extend(&ports);
    ports
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
            running: None,
            extra: extra.iter().map(|x| x.to_string()).collect(),
            root: None,
            file: None,
            dir: scratch_dir("redis"),
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// Starts the server under its watchdog; returns once it accepts
    /// connections.
    fn try_spawn(&mut self) -> Result<(), String> {
        redis_server_on_path()?;
        let root = self.root.map_or(String::new(), |r| r.to_string());
        let file = self
            .file
            .as_ref()
            .map_or(String::new(), |f| f.display().to_string());
        let mut watchdog = Command::new("/bin/sh")
            .args(["-c", WATCHDOG, &root, &file, "redis-server"])
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("/bin/sh: {e}"))?;
        let mut pid = String::new();
        let _ = BufReader::new(watchdog.stdout.take().expect("piped")).read_line(&mut pid);
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| "the watchdog printed no PID")?;
        self.running = Some((watchdog, pid));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Err(format!("redis-server on port {} did not start", self.port))
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some((mut watchdog, _)) = self.running.take() {
            drop(watchdog.stdin.take()); // EOF: the watchdog kills the server
            let _ = watchdog.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn signal(&self, sig: &str) {
        if let Some((_, pid)) = &self.running {
            // The shell's builtin kill: no procps needed.
            let status = Command::new("/bin/sh")
                .args(["-c", "kill \"$0\" \"$1\"", sig, &pid.to_string()])
                .status()
                .expect("/bin/sh");
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
        self.kill(); // SIGKILL ends a frozen server too
        if self.root.is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
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
