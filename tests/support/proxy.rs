//! A TCP proxy in front of a `redis-server`, with faults switched at run
//! time: latency on every reply chunk, replies cut short followed by a reset
//! or a close, every connection dropped at once, and new connections
//! refused or blackholed.
//!
//! Plain threads and blocking sockets (three threads per connection): it
//! needs no Tokio features, and a fault never depends on the runtime of the
//! code under test. Faults apply to the reply direction (Redis to client);
//! requests are forwarded as they come.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// What the proxy does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Forward it to Redis (the default).
    Forward,
    /// Accept it and reset it at once: the client's first read fails.
    Refuse,
    /// Accept it and never answer: the client waits for its own timeout.
    Blackhole,
}

/// How the proxy ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// TCP RST (`SO_LINGER` 0): the client reads "connection reset".
    Reset,
    /// FIN: the client reads the end of the stream.
    Close,
}

/// A proxy listening on a free loopback port; stops (and drops every
/// connection) on drop.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    accept: AtomicU8,
    latency_ms: AtomicU64,
    /// Client-to-server bytes are held back while this is set.
    hold_requests: AtomicBool,
    /// Cut every n-th reply chunk (over all connections); 0: never.
    cut_every: AtomicU32,
    cut_end: AtomicU8,
    chunks: AtomicU64,
    cuts: AtomicU64,
    accepted: AtomicU64,
    stopping: AtomicBool,
    conns: Mutex<Vec<Weak<Conn>>>,
}

/// One client connection and, unless blackholed, its connection to Redis.
struct Conn {
    client: TcpStream,
    server: Option<TcpStream>,
    ended: AtomicBool,
}

impl Proxy {
    /// A proxy to the Redis listening on `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("bound").port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            accept: AtomicU8::new(Accept::Forward as u8),
            latency_ms: AtomicU64::new(0),
            hold_requests: AtomicBool::new(false),
            cut_every: AtomicU32::new(0),
            cut_end: AtomicU8::new(End::Reset as u8),
            chunks: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_loop(listener, s));
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Every reply chunk is delivered `latency` after it came from Redis
    /// (zero: at once). Takes effect for chunks already held back, too.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, SeqCst);
    }

    /// From now on every `every`-th reply chunk (counted over all
    /// connections) is cut: its first half is delivered, then its
    /// connection is ended with `end`. `0` turns cutting off.
    pub fn cut_replies(&self, every: u32, end: End) {
        self.shared.cut_end.store(end as u8, SeqCst);
        self.shared.cut_every.store(every, SeqCst);
    }

    /// While `hold` is set, what clients send is held back (as a stalled
    /// network would: a paused process, a partition with TCP retransmits)
    /// and delivered, in order, once it is cleared.
    pub fn hold_requests(&self, hold: bool) {
        self.shared.hold_requests.store(hold, SeqCst);
    }

    /// What happens to connections accepted from now on.
    pub fn set_accept(&self, accept: Accept) {
        self.shared.accept.store(accept as u8, SeqCst);
    }

    /// Resets every open connection (blackholed ones too) now.
    pub fn drop_all(&self) {
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for c in conns.iter().filter_map(Weak::upgrade) {
            c.end(End::Reset);
        }
    }

    /// Replies cut so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(SeqCst)
    }

    /// Connections accepted so far (whatever then happened to them).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, SeqCst);
        // Wake the acceptor blocked in accept().
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.drop_all();
    }
}

impl Shared {
    fn accept_mode(&self) -> Accept {
        match self.accept.load(SeqCst) {
            x if x == Accept::Refuse as u8 => Accept::Refuse,
            x if x == Accept::Blackhole as u8 => Accept::Blackhole,
            _ => Accept::Forward,
        }
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(SeqCst))
    }

    /// Is this reply chunk one to cut? If so, how to end its connection.
    fn cut_this_chunk(&self) -> Option<End> {
        let n = self.chunks.fetch_add(1, SeqCst) + 1;
        let every = u64::from(self.cut_every.load(SeqCst));
        if every == 0 || !n.is_multiple_of(every) {
            return None;
        }
        self.cuts.fetch_add(1, SeqCst);
        Some(if self.cut_end.load(SeqCst) == End::Close as u8 {
            End::Close
        } else {
            End::Reset
        })
    }

    fn register(&self, conn: &Arc<Conn>) {
        let mut conns = self.conns.lock().unwrap();
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Arc::downgrade(conn));
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, SeqCst);
        let _ = client.set_nodelay(true);
        match shared.accept_mode() {
            Accept::Refuse => {
                set_linger_zero(&client);
                drop(client); // RST
            }
            Accept::Blackhole => {
                let conn = Arc::new(Conn {
                    client,
                    server: None,
                    ended: AtomicBool::new(false),
                });
                shared.register(&conn);
                // Read and discard what the client sends, answer nothing.
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!((&conn.client).read(&mut buf), Ok(n) if n > 0) {}
                    conn.end(End::Close);
                });
            }
            Accept::Forward => {
                let shared = Arc::clone(&shared);
                thread::spawn(move || forward(client, shared));
            }
        }
    }
}

/// Runs one forwarded connection: client to Redis in this thread, Redis to
/// client through a delay line (a reader thread stamps each chunk, a writer
/// thread delivers it when its latency has passed, or cuts it).
fn forward(client: TcpStream, shared: Arc<Shared>) {
    let server = match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(1)) {
        Ok(s) => s,
        Err(_) => {
            // Redis is down: the client sees what it would see without us.
            set_linger_zero(&client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let conn = Arc::new(Conn {
        client,
        server: Some(server),
        ended: AtomicBool::new(false),
    });
    shared.register(&conn);
    if shared.stopping.load(SeqCst) {
        conn.end(End::Reset);
        return;
    }
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();

    let reader = Arc::clone(&conn);
    thread::spawn(move || {
        let server = reader.server.as_ref().expect("forwarded");
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match (&*server).read(&mut buf) {
                Ok(n) if n > 0 => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                _ => break, // EOF or error: the writer delivers what is left, then closes
            }
        }
    });

    let writer = Arc::clone(&conn);
    let shared_w = Arc::clone(&shared);
    thread::spawn(move || {
        for (at, chunk) in rx {
            if !writer.wait_until_due(at, &shared_w) {
                return;
            }
            if let Some(end) = shared_w.cut_this_chunk() {
                let _ = (&writer.client).write_all(&chunk[..chunk.len() / 2]);
                writer.end(end);
                return;
            }
            if (&writer.client).write_all(&chunk).is_err() {
                break;
            }
        }
        writer.end(End::Close);
    });

    let server = conn.server.as_ref().expect("forwarded");
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match (&conn.client).read(&mut buf) {
            Ok(n) if n > 0 => {
                while shared.hold_requests.load(SeqCst) && !conn.ended.load(SeqCst) {
                    thread::sleep(Duration::from_millis(1));
                }
                if (&*server).write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    conn.end(End::Close);
}

impl Conn {
    /// Ends the connection once; the threads serving it notice and exit,
    /// and the last one closes the sockets.
    fn end(&self, how: End) {
        if self.ended.swap(true, SeqCst) {
            return;
        }
        if let Some(s) = &self.server {
            let _ = s.shutdown(Shutdown::Both);
        }
        match how {
            End::Reset => {
                // Shutting down only our read side sends nothing: the close
                // that follows (linger 0) is the client's first sign, a RST.
                set_linger_zero(&self.client);
                let _ = self.client.shutdown(Shutdown::Read);
            }
            End::Close => {
                let _ = self.client.shutdown(Shutdown::Both);
            }
        }
    }

    /// Waits until a chunk that arrived at `at` is due under the current
    /// latency. `false`: the connection ended meanwhile.
    fn wait_until_due(&self, at: Instant, shared: &Shared) -> bool {
        loop {
            if self.ended.load(SeqCst) {
                return false;
            }
            let due = at + shared.latency();
            let now = Instant::now();
            if now >= due {
                return true;
            }
            thread::sleep((due - now).min(Duration::from_millis(10)));
        }
    }
}

/// `SO_LINGER` {on, 0}: closing the socket then sends a RST instead of a FIN.
fn set_linger_zero(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}
