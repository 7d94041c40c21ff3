//! Starting real `corekv serve` processes for end-to-end tests.
#![allow(dead_code)]

pub mod cluster;
pub mod loopfs;
// One seed helper for the engine's tests and these.
#[path = "../../engine/tests/common/seed.rs"]
pub mod seed;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn corekv() -> &'static str {
    env!("CARGO_BIN_EXE_corekv")
}

/// Fails the test unless the machine provides what it needs.
///
/// Tests that need something a developer's machine may lack (root, a
/// second CPU) live in a `needs_host` module of their test file and are
/// `#[ignore = "<what they need>"]`: a plain `cargo test` lists them as
/// ignored, with that reason, instead of passing them untested.
/// `CI=true ./test.sh` (what `.ci/run` does) runs them with
/// `-- --ignored needs_host::`, and there a missing precondition must be a
/// failure, never a silent pass: this panics, naming what is missing.
#[track_caller]
pub fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "this machine cannot run this test: {what}. It is #[ignore]d for \
         that reason and runs only when asked for (`-- --ignored`, as \
         `CI=true ./test.sh` does): run it as root on a machine with 2+ CPUs"
    );
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A block of `n` consecutive free loopback ports, below Linux's
/// ephemeral range (32768 and up): a port a killed node frees must not be
/// taken as the local port of some outgoing connection before the node
/// restarts on it.
pub fn free_ports(n: u16) -> u16 {
    let seed = (std::process::id() as u16 % 200) * 100 + 10_000;
    let _ = NEXT_PORT.compare_exchange(0, seed, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..200 {
        let base = NEXT_PORT.fetch_add(n + 2, Ordering::SeqCst);
        let all_free = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no block of {n} free ports found");
}

/// A running server; killed (SIGKILL) on drop if still running.
pub struct Server {
    pub child: Option<Child>,
    pub native: SocketAddr,
    pub resp: SocketAddr,
    pub peer: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub shards: usize,
    pub extra: Vec<String>,
    /// Extra environment of the process (e.g. test hooks).
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

impl Server {
    /// Starts a server on fresh ports over `data_dir`.
    pub fn start(data_dir: &Path, shards: usize, extra: &[&str]) -> Server {
        let base = free_ports(2 * shards as u16 + 2);
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let s = shards as u16;
        Server::start_at(
            data_dir,
            shards,
            [at(base), at(base + s + 1), at(base + s + 2)],
            extra,
        )
    }

    /// Starts a server on the given addresses (for clusters, whose members
    /// must know each other's ports before any starts).
    pub fn start_at(
        data_dir: &Path,
        shards: usize,
        addrs: [SocketAddr; 3],
        extra: &[&str],
    ) -> Server {
        Server::start_logging_to(
            &data_dir.with_extension("log"),
            data_dir,
            shards,
            addrs,
            extra,
        )
    }

    /// As [`Server::start_at`], with its log (stderr) in `log`: a data
    /// directory on a disk that fills up must not take the log with it,
    /// or the reason a node stopped is lost.
    pub fn start_logging_to(
        log: &Path,
        data_dir: &Path,
        shards: usize,
        [native, resp, peer]: [SocketAddr; 3],
        extra: &[&str],
    ) -> Server {
        let mut s = Server {
            child: None,
            native,
            resp,
            peer,
            admin: SocketAddr::from(([127, 0, 0, 1], free_ports(1))),
            data_dir: data_dir.to_path_buf(),
            shards,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            log: log.to_path_buf(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new(corekv())
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--shards", &self.shards.to_string()])
            .args(["--native-addr", &self.native.to_string()])
            .args(["--resp-addr", &self.resp.to_string()])
            .args(["--peer-addr", &self.peer.to_string()])
            .args(["--admin-addr", &self.admin.to_string()])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn corekv serve");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the native and RESP ports accept connections.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "corekv serve exited early with {status}: {}",
                        self.log_text()
                    );
                }
            }
            let up =
                |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok();
            // Every shard binds its own port; the shared ones answer as
            // soon as the first shard is up.
            if up(&self.native)
                && up(&self.resp)
                && (0..self.shards).all(|i| up(&self.shard_addr(i)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in 30 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        // A log that is not a file (`/dev/full`) has no text to show.
        match std::fs::metadata(&self.log) {
            Ok(m) if m.is_file() => std::fs::read_to_string(&self.log).unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// Sends a signal and waits (bounded) for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.wait_ports_released();
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit within 30 s after {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After a kill -9 the kernel tears down the dead process's io_uring
    /// (and the listening sockets its pending accepts hold) asynchronously,
    /// ~15 ms here; a restart inside that window would share the
    /// SO_REUSEPORT group with sockets that reset what they accept. Wait,
    /// bounded, until nothing listens on our ports.
    fn wait_ports_released(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let ports = [self.native, self.resp, self.peer, self.admin];
        while ports
            .iter()
            .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(100)).is_ok())
        {
            assert!(
                Instant::now() < deadline,
                "old listeners still present after 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// As [`Server::start`], with extra environment variables.
    pub fn start_with_env(
        data_dir: &Path,
        shards: usize,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let base = free_ports(2 * shards as u16 + 2);
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let s = shards as u16;
        let mut server = Server {
            child: None,
            native: at(base),
            resp: at(base + s + 1),
            peer: at(base + s + 2),
            admin: SocketAddr::from(([127, 0, 0, 1], free_ports(1))),
            data_dir: data_dir.to_path_buf(),
            shards,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: data_dir.with_extension("log"),
        };
        server.spawn();
        server
    }

    /// Starts the same server again (same ports and data).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn();
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(corekv())
            .args(args)
            .args(["--addr", &self.native.to_string()])
            .output()
            .expect("run corekv cli")
    }

    /// Address of shard `i`'s own native port.
    pub fn shard_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.native.port() + 1 + i as u16))
    }
}

fn resp_ping(addr: &SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs redis-cli against a server's RESP port.
pub fn redis_cli(server: &Server, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.resp.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli (Debian package redis-tools) must be installed");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// A plain HTTP GET against the admin endpoint: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

/// Waits (at most 10 s) until metric `name` is at least `at_least` and
/// returns it: shards report their counters once a second, so a count
/// lags what was just done.
pub fn wait_metric(node: &Server, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(node, name);
        if got >= at_least {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {got}, below {at_least}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A counter or gauge from a node's `/metrics` (the first sample line of
/// `name`); panics naming it when it is absent.
pub fn metric(node: &Server, name: &str) -> f64 {
    let (code, text) = http_get(node.admin, "/metrics");
    assert_eq!(code, 200);
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}
