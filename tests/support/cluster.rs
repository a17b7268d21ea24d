//! A private Redis Cluster of `redis-server` processes on free loopback
//! ports, for the cluster tests of issue #6.
//!
//! Every node is a child process stopped by PID (never by name); its
//! `nodes-<port>.conf` and log live in a temp dir that `Drop` removes.
//!
//! Measured on the 2-core machine with Redis 7.0.15 (debug test build):
//! `start()` (3 masters) and `start_with_replicas()` (3 masters, 3
//! replicas) both take about 2.1 s: `redis-cli --cluster create` sleeps 1 s
//! while the nodes meet, and the nodes need about 1 s more to agree.
//!
//! With replicas, `kill_master_of_slot` is followed by a failover that
//! `wait_ok` sees done after 2.1-2.8 s (`--cluster-node-timeout 1000`); a
//! redis-rs cluster client writes to the slot again after about 2.2 s, and
//! `restart(i)` of the old master has it back as a replica in under 50 ms.
//!
//! Without replicas the killed master's slots stay down; about 1.5 s after
//! the kill every node answers CLUSTERDOWN, for every slot, as
//! `cluster-require-full-coverage` is on (`start_with(3, 0,
//! &["--cluster-require-full-coverage", "no"])` keeps the other slots up).
//! `restart(i)` brings it back with no data: the other slots answer again
//! at once, its own slots about 2 s later (a restarted master waits 2 s
//! before taking writes).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_ports, scratch_dir};

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// Node timeout passed to every node: how long a node may be unreachable
/// before the others consider it failed (and a replica takes over).
pub const NODE_TIMEOUT_MS: u64 = 1000;

struct Node {
    port: u16,
    bus_port: u16,
    child: Option<Child>,
    frozen: bool,
}

/// A running Redis Cluster; every process is killed and the temp dir
/// removed on drop.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    replicas: usize,
    extra: Vec<String>,
}

impl RedisCluster {
    /// Three masters, no replicas: killing one takes its slots (and, with
    /// full coverage required, the whole cluster) down until `restart`.
    pub fn start() -> Self {
        Self::start_with(3, 0, &[])
    }

    /// Three masters with one replica each: killing a master is followed by
    /// a failover (see `wait_ok`).
    pub fn start_with_replicas() -> Self {
        Self::start_with(3, 1, &[])
    }

    /// `masters` (at least 3) masters with `replicas` replicas each; `extra`
    /// is passed to every `redis-server`, e.g. `["--maxmemory", "2mb"]`.
    pub fn start_with(masters: usize, replicas: usize, extra: &[&str]) -> Self {
        assert!(masters >= 3, "redis-cli --cluster create needs 3 masters");
        let n = masters * (1 + replicas);
        let ports = free_ports(2 * n);
        let mut cluster = RedisCluster {
            dir: scratch_dir("cluster"),
            nodes: ports
                .chunks(2)
                .map(|p| Node {
                    port: p[0],
                    bus_port: p[1],
                    child: None,
                    frozen: false,
                })
                .collect(),
            replicas,
            extra: extra.iter().map(|x| x.to_string()).collect(),
        };
        // Spawn all, then wait, so that the nodes start in parallel.
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            // A port can still be taken between `free_ports` and the node's
            // bind (by another test's server): such a node starts again on
            // new ports, a few times, before the test gives up.
            let mut attempts = 0;
            while let Err(e) = cluster.try_wait_listening(i) {
                attempts += 1;
                if attempts == 5 || !e.contains("Address already in use") {
                    panic!("{e}");
                }
                let ports = free_ports(2);
                cluster.nodes[i].port = ports[0];
                cluster.nodes[i].bus_port = ports[1];
                cluster.spawn(i);
            }
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null());
        let out = create
            .output()
            .expect("redis-cli on PATH (.ci/run installs it)");
        if !out.status.success() {
            panic!(
                "redis-cli --cluster create failed: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node (masters and replicas, dead
    /// or alive), in start order: seeds for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The client port of node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Number of nodes (masters and replicas).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether node `i` runs and is not frozen.
    pub fn is_up(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        node.child.is_some() && !node.frozen
    }

    /// The hash slot of `key`, as `CLUSTER KEYSLOT` computes it: CRC16
    /// (XMODEM) of the hash tag (the part between the first `{` and the
    /// next `}`, if not empty) or else of the whole key, modulo 16384.
    pub fn slot(key: &[u8]) -> u16 {
        let hashed = match key.iter().position(|&b| b == b'{') {
            Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                _ => key,
            },
            None => key,
        };
        crc16_xmodem(hashed) % SLOTS
    }

    /// Index of the node that serves `slot` as master, as seen by the first
    /// node that is up and answers.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        let view = self.view().expect("a node that answers CLUSTER NODES");
        let port = view
            .iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|r| r.contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        self.index_of(port)
    }

    /// Indexes of the nodes that serve slots, as seen by the first node
    /// that is up and answers.
    pub fn masters(&self) -> Vec<usize> {
        let view = self.view().expect("a node that answers CLUSTER NODES");
        let mut masters: Vec<usize> = view
            .iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .map(|n| self.index_of(n.port))
            .collect();
        masters.sort_unstable();
        masters
    }

    /// Indexes of the replicas connected to master `i` right now (its
    /// `INFO replication`).
    pub fn replicas_of(&self, i: usize) -> Vec<usize> {
        let info = self
            .command(i, &["INFO", "replication"])
            .expect("INFO replication");
        info.lines()
            .filter(|l| l.starts_with("slave") && l.contains(":ip="))
            .filter_map(|l| {
                let port = l.split(',').find_map(|f| f.strip_prefix("port="))?;
                let port: u16 = port.parse().ok()?;
                self.nodes.iter().position(|n| n.port == port)
            })
            .collect()
    }

    /// Kills (SIGKILL) the master of `slot` and returns its index.
    pub fn kill_master_of_slot(&mut self, slot: u16) -> usize {
        let i = self.master_of_slot(slot);
        self.kill(i);
        i
    }

    /// Kills node `i` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut c) = node.child.take() {
            if node.frozen {
                signal(&c, "-CONT");
                node.frozen = false;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on the same ports with the same
    /// `nodes-<port>.conf`, so it rejoins as the same node (with no data).
    /// A former master whose slots were taken over rejoins as a replica.
    /// Returns once it accepts connections; `wait_ok` waits for the cluster.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_listening(i);
    }

    /// SIGSTOP node `i`: it accepts nothing and answers nothing.
    pub fn freeze(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(c) = &node.child {
            signal(c, "-STOP");
            node.frozen = true;
        }
    }

    /// SIGCONT node `i`.
    pub fn thaw(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(c) = &node.child {
            signal(c, "-CONT");
            node.frozen = false;
        }
    }

    /// Waits until the cluster is whole again, and returns how long that
    /// took; panics with every node's view and log tail after `timeout`.
    ///
    /// Whole: every node that is up reports `cluster_state:ok`, sees every
    /// slot served by a master that is up (the same one as the other nodes
    /// see), and (if a replica) has its link to its master up. Right after
    /// a kill the survivors still report ok for up to `NODE_TIMEOUT_MS`; the
    /// second condition makes this wait for the failover (or the restart)
    /// instead of returning at once.
    pub fn wait_ok(&self, timeout: Duration) -> Duration {
        match self.try_wait_ok(timeout) {
            Ok(took) => took,
            Err(why) => panic!("cluster not ok after {timeout:?}: {why}\n{}", self.report()),
        }
    }

    /// `wait_ok` that returns the last reason instead of panicking.
    pub fn try_wait_ok(&self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let why = match self.check_ok() {
                Ok(()) => return Ok(start.elapsed()),
                Err(why) => why,
            };
            if start.elapsed() >= timeout {
                return Err(why);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one command on node `i` and returns its reply as text (bulk
    /// and simple strings as they are, integers in decimal).
    pub fn command(&self, i: usize, args: &[&str]) -> io::Result<String> {
        command(self.nodes[i].port, args)
    }

    /// The temp dir that holds the nodes' config files and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_ok(&self) -> Result<(), String> {
        let up: Vec<u16> = (0..self.nodes.len())
            .filter(|&i| self.is_up(i))
            .map(|i| self.nodes[i].port)
            .collect();
        if up.is_empty() {
            return Err("no node is up".into());
        }
        let mut first_owners: Option<(u16, Vec<u16>)> = None;
        for &port in &up {
            let info = command(port, &["CLUSTER", "INFO"]).map_err(|e| format!("{port}: {e}"))?;
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Err(format!("{port}: not cluster_state:ok"));
            }
            let nodes = command(port, &["CLUSTER", "NODES"]).map_err(|e| format!("{port}: {e}"))?;
            // The port of the master of each slot, 0 for none that is up.
            let mut owners = vec![0u16; SLOTS as usize];
            for n in parse_nodes(&nodes) {
                if !n.master || n.failed || !up.contains(&n.port) {
                    continue;
                }
                for r in &n.slots {
                    for s in r.clone() {
                        owners[s as usize] = n.port;
                    }
                }
            }
            if let Some(s) = owners.iter().position(|&o| o == 0) {
                return Err(format!("{port}: slot {s} has no master that is up"));
            }
            match &first_owners {
                None => first_owners = Some((port, owners)),
                Some((first, theirs)) => {
                    if let Some(s) = (0..owners.len()).find(|&s| owners[s] != theirs[s]) {
                        return Err(format!(
                            "{port} sees slot {s} on {}, {first} on {}",
                            owners[s], theirs[s]
                        ));
                    }
                }
            }
            let repl =
                command(port, &["INFO", "replication"]).map_err(|e| format!("{port}: {e}"))?;
            if repl.lines().any(|l| l.trim() == "role:slave")
                && !repl.lines().any(|l| l.trim() == "master_link_status:up")
            {
                return Err(format!("{port}: replica whose master link is down"));
            }
        }
        Ok(())
    }

    /// `CLUSTER NODES` of the first node that is up and answers.
    fn view(&self) -> Option<Vec<NodeLine>> {
        (0..self.nodes.len())
            .filter(|&i| self.is_up(i))
            .find_map(|i| command(self.nodes[i].port, &["CLUSTER", "NODES"]).ok())
            .map(|text| parse_nodes(&text))
    }

    fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("port {port} is not a node of this cluster"))
    }

    fn spawn(&mut self, i: usize) {
        let dir = self.dir.to_str().expect("utf-8 temp dir").to_owned();
        let node = &mut self.nodes[i];
        let port = node.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port])
            .args(["--cluster-port", &node.bus_port.to_string()])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("{dir}/nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // A replica fails over however long ago it last heard from its
            // master (the default refuses after 10 node timeouts).
            .args(["--cluster-replica-validity-factor", "0"])
            // Replicas sync at once, not 5 s after asking: a replica that
            // never synced does not fail over.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &dir])
            .args(["--logfile", &format!("{dir}/node-{port}.log")])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (.ci/run installs it)");
        node.child = Some(child);
        node.frozen = false;
    }

    fn wait_listening(&mut self, i: usize) {
        if let Err(e) = self.try_wait_listening(i) {
            panic!("{e}");
        }
    }

    fn try_wait_listening(&mut self, i: usize) -> Result<(), String> {
        let port = self.nodes[i].port;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = &mut self.nodes[i].child
                && let Ok(Some(status)) = c.try_wait()
            {
                self.nodes[i].child = None;
                return Err(format!(
                    "redis-server on port {port} exited: {status}\n{}",
                    log_tail(&self.dir, port)
                ));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!(
            "redis-server on port {port} did not start\n{}",
            log_tail(&self.dir, port)
        ))
    }

    /// Every node's state, view of the cluster and log tail, for panics.
    fn report(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let state = match (&n.child, n.frozen) {
                (None, _) => "killed",
                (Some(_), true) => "frozen",
                (Some(_), false) => "up",
            };
            let _ = writeln!(out, "--- node {i} port {} ({state})", n.port);
            if self.is_up(i) {
                match command(n.port, &["CLUSTER", "NODES"]) {
                    Ok(text) => out.push_str(&text),
                    Err(e) => {
                        let _ = writeln!(out, "CLUSTER NODES: {e}");
                    }
                }
            }
            out.push_str(&log_tail(&self.dir, n.port));
        }
        out
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    port: u16,
    master: bool,
    /// Flagged `fail` (agreed on), not just `fail?` (suspected).
    failed: bool,
    slots: Vec<std::ops::RangeInclusive<u16>>,
}

/// Parses `<id> <ip:port@cport[,host]> <flags> <master> <ping> <pong>
/// <epoch> <link> <slot>...`; slots are `a-b` or `a` (`[a->-id]` and
/// `[a-<-id]`, slots being migrated, are skipped).
fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split(['@', ',']).next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some(a.parse().ok()?..=b.parse().ok()?),
                    None => {
                        let a = s.parse().ok()?;
                        Some(a..=a)
                    }
                })
                .collect();
            Some(NodeLine {
                port,
                master: flags.contains(&"master"),
                failed: flags.contains(&"fail"),
                slots,
            })
        })
        .collect()
}

/// CRC16, polynomial 0x1021, initial value 0, not reflected (XMODEM): the
/// checksum Redis Cluster hashes keys with.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Sends one command in RESP and reads one reply: enough for the `INFO`,
/// `CLUSTER INFO` and `CLUSTER NODES` this harness needs, without a
/// client library (and with timeouts, so a frozen node cannot hang it).
pub fn command(port: u16, args: &[&str]) -> io::Result<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    stream.write_all(&req)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = (line.get(..1).unwrap_or(""), line.get(1..).unwrap_or(""));
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(io::Error::other(rest.to_owned())),
        "$" => {
            let len: i64 = rest
                .parse()
                .map_err(|_| io::Error::other(format!("bad bulk length {rest:?}")))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; len as usize + 2];
            reader.read_exact(&mut buf)?;
            buf.truncate(len as usize);
            String::from_utf8(buf).map_err(io::Error::other)
        }
        _ => Err(io::Error::other(format!("unexpected reply {line:?}"))),
    }
}

fn log_tail(dir: &Path, port: u16) -> String {
    let text = std::fs::read_to_string(dir.join(format!("node-{port}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(15)..].join("\n");
    out.push('\n');
    out
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}
