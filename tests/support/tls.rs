//! A private `redis-server` that speaks only TLS, with a throwaway CA made
//! by the `openssl` CLI, for the TLS tests of issue #6.
//!
//! The CA and the server certificate (for `127.0.0.1`, `::1` and
//! `localhost`) are ECDSA P-256, valid for 2 days, and live in a temp dir
//! that `Drop` removes along with the server (stopped by PID). Making them
//! (7 `openssl` runs) and starting the server takes 0.1-0.2 s. A client
//! certificate signed by the same CA is made too, for
//! `start_with_client_auth` (mutual TLS), and a second, unrelated CA
//! (`untrusted_ca_pem`) for the test that a certificate the client does
//! not trust is refused.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, scratch_dir};

/// A `redis-server` with `--port 0 --tls-port <port>`, killed on drop.
pub struct TlsRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    frozen: bool,
    client_auth: bool,
    extra: Vec<String>,
}

impl TlsRedis {
    /// Clients need not present a certificate (`--tls-auth-clients no`).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// `extra`: more `redis-server` arguments, e.g. `["--maxmemory", "2mb"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_inner(false, extra)
    }

    /// Clients must present a certificate signed by the CA
    /// (`--tls-auth-clients yes`): `client_cert_pem` and `client_key_pem`.
    pub fn start_with_client_auth() -> Self {
        Self::start_inner(true, &[])
    }

    fn start_inner(client_auth: bool, extra: &[&str]) -> Self {
        let mut s = TlsRedis {
            port: free_port(),
            dir: scratch_dir("tls"),
            child: None,
            frozen: false,
            client_auth,
            extra: extra.iter().map(|x| x.to_string()).collect(),
        };
        make_certificates(&s.dir);
        s.spawn();
        s
    }

    /// `rediss://127.0.0.1:<port>`: the certificate names this IP address.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// `rediss://localhost:<port>`: the certificate names this host too.
    pub fn localhost_url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>`: plain TCP to the TLS port, which the
    /// server refuses (the handshake fails), for a negative test.
    pub fn plain_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The CA certificate, PEM: what `redis::TlsCertificates::root_cert`
    /// takes.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.read("ca.crt")
    }

    /// Path of the CA certificate (PEM).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A client certificate signed by the CA, PEM (for mutual TLS).
    pub fn client_cert_pem(&self) -> Vec<u8> {
        self.read("client.crt")
    }

    /// The client certificate's private key, PEM (PKCS#8).
    pub fn client_key_pem(&self) -> Vec<u8> {
        self.read("client.key")
    }

    /// Another CA's certificate, PEM, that signed nothing here: a client
    /// that trusts only it must refuse the server.
    pub fn untrusted_ca_pem(&self) -> Vec<u8> {
        self.read("other-ca.crt")
    }

    /// The temp dir that holds the certificates, keys and the server log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `redis-cli --tls --cacert <ca> -p <port> <args>` (with the
    /// client certificate under client auth).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--tls").arg("--cacert").arg(self.ca_path()).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
        ]);
        if self.client_auth {
            cmd.arg("--cert")
                .arg(self.dir.join("client.crt"))
                .arg("--key")
                .arg(self.dir.join("client.key"));
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli on PATH (.ci/run installs it)")
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.frozen {
                signal(&c, "-CONT");
                self.frozen = false;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same certificates (empty:
    /// it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the server accepts nothing and answers nothing.
    pub fn freeze(&mut self) {
        if let Some(c) = &self.child {
            signal(c, "-STOP");
            self.frozen = true;
        }
    }

    /// SIGCONT.
    pub fn thaw(&mut self) {
        if let Some(c) = &self.child {
            signal(c, "-CONT");
            self.frozen = false;
        }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn spawn(&mut self) {
        let path = |name: &str| {
            self.dir
                .join(name)
                .to_str()
                .expect("utf-8 temp dir")
                .to_owned()
        };
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &self.port.to_string()])
            .args(["--tls-cert-file", &path("server.crt")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.crt")])
            .args([
                "--tls-auth-clients",
                if self.client_auth { "yes" } else { "no" },
            ])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &path("")])
            .args(["--logfile", &path("redis.log")])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (.ci/run installs it)");
        self.child = Some(child);
        self.frozen = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                panic!(
                    "redis-server (TLS) on port {} exited: {status} (built without TLS?)\n{}",
                    self.port,
                    std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server (TLS) on port {} did not start", self.port);
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes into `dir`: `ca.crt`/`ca.key`, `server.crt`/`server.key` (for
/// 127.0.0.1, ::1 and localhost), `client.crt`/`client.key`, all signed by
/// the CA, and `other-ca.crt`, a CA that signed nothing.
fn make_certificates(dir: &Path) {
    for (name, cn) in [
        ("ca", "cache-aside test CA"),
        ("other-ca", "cache-aside other CA"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    let leaf = [
        (
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "cache-aside test client",
            "extendedKeyUsage=clientAuth\n",
        ),
    ];
    for (serial, (name, cn, ext)) in leaf.into_iter().enumerate() {
        let extfile = format!("{name}.ext");
        std::fs::write(
            dir.join(&extfile),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"
            ),
        )
        .expect("write an openssl extensions file");
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &(serial + 2).to_string(),
                "-days",
                "2",
                "-extfile",
                &extfile,
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl on PATH");
    if !out.status.success() {
        panic!(
            "openssl {} failed: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}
