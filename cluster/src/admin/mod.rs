//! The admin endpoint: a small HTTP/1.1 server on the node's control
//! thread (not a shard) with `/metrics` (Prometheus text), `/health`
//! (200 when every shard serves, 503 while starting or stopping, 503
//! naming the shard when one died) and
//! `/status` (JSON of the shards' latest reports).
//!
//! Shards never lock anything for it: each sends a report of its figures
//! once a second over a bounded crossbeam channel (`try_send`; a full
//! channel drops the report, a newer one follows), and the control thread
//! keeps the latest per shard.
//!
//! Each request is answered on a thread of its own (at most
//! [`REQUESTS_IN_FLIGHT_MAX`] at once; more are answered 503 at once), and
//! its head must arrive whole within [`REQUEST_DEADLINE`]: a client that
//! sends slowly, or nothing, cannot hold up `/health` for anyone else.

mod metrics;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corekv_engine::EngineStats;
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;

use crate::gossip::GossipStats;

use crate::error::{Error, Result};
use crate::runtime::health::ShardHealth;
use crate::runtime::metrics::MetricsSnapshot;
use crate::StopHandle;

pub use metrics::render;

/// Log lines this process could not write: its stderr (a file on a full
/// disk, a closed pipe, `/dev/full`) refused them. A node whose log
/// destination fails keeps serving and loses the lines instead (a log
/// write that panicked would take the shard down with it); the binary's
/// log writer counts them here and `/metrics` shows the count as
/// `corekv_log_lines_lost_total`.
pub static LOG_LINES_LOST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One shard's figures at one instant.
#[derive(Clone, Debug)]
pub struct ShardReport {
    /// The shard.
    pub shard: usize,
    /// Its engine's figures.
    pub engine: EngineStats,
    /// Its runtime counters.
    pub metrics: MetricsSnapshot,
    /// Time its executor spent running tasks since start, in µs.
    pub busy_us: u64,
    /// True once the shard accepts requests; false again when it stops.
    pub serving: bool,
}

/// Where shards send their reports.
#[derive(Clone)]
pub struct ReportSender(Sender<ShardReport>);

impl ReportSender {
    /// Sends without waiting; a full channel drops the report.
    pub fn send(&self, report: ShardReport) {
        let _ = self.0.try_send(report);
    }
}

/// Reports a channel of this many can hold before dropping.
const CHANNEL_CAPACITY: usize = 1024;
/// Largest request head read from a client.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A request's head must have arrived whole this long after the
/// connection was accepted, and its answer gone out this long after that.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Requests answered at once; beyond, new connections get 503 at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 16;

/// Starts the control thread serving `addr` until `stop`; returns where
/// shards send reports. The listener is bound before returning, so a taken
/// port is a start-up error.
pub fn start(
    addr: SocketAddr,
    shards: usize,
    stop: StopHandle,
    gossip: Arc<GossipStats>,
    health: Arc<ShardHealth>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<ReportSender> {
    let listener = TcpListener::bind(addr).map_err(|e| Error::Io {
        context: format!("binding the admin address {addr} (admin_addr = \"off\" disables it)"),
        source: e,
    })?;
    listener.set_nonblocking(true).map_err(|e| Error::Io {
        context: "admin listener".into(),
        source: e,
    })?;
    let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
    std::thread::Builder::new()
        .name("corekv-admin".into())
        .spawn(move || control_loop(listener, rx, shards, stop, gossip, &health, tls))
        .map_err(|e| Error::Io {
            context: "starting the admin thread".into(),
            source: e,
        })?;
    Ok(ReportSender(tx))
}

fn control_loop(
    listener: TcpListener,
    rx: Receiver<ShardReport>,
    shards: usize,
    stop: StopHandle,
    gossip: Arc<GossipStats>,
    health: &ShardHealth,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let mut latest: Vec<Option<ShardReport>> = vec![None; shards];
    let in_flight = Arc::new(AtomicUsize::new(0));
    // Bounded by the process: ends when the node stops.
    while !stop.is_stopped() {
        while let Ok(r) = rx.try_recv() {
            if let Some(slot) = latest.get_mut(r.shard) {
                *slot = Some(r);
            }
        }
        match listener.accept() {
            Ok((mut stream, _)) => {
                if in_flight.load(Ordering::Acquire) >= REQUESTS_IN_FLIGHT_MAX {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_write_timeout(Some(REQUEST_DEADLINE));
                    let _ = respond(
                        &mut stream,
                        "503 Service Unavailable",
                        "text/plain",
                        "too many admin requests at once\n",
                    );
                    continue;
                }
                let reports: Vec<ShardReport> = latest.iter().flatten().cloned().collect();
                // A dead shard's last report still says serving.
                let dead = health.dead();
                let ready =
                    dead.is_empty() && latest.iter().all(|r| r.as_ref().is_some_and(|r| r.serving));
                let gossip = gossip.clone();
                let tls = tls.clone();
                in_flight.fetch_add(1, Ordering::AcqRel);
                let done = in_flight.clone();
                let spawned = std::thread::Builder::new()
                    .name("corekv-admin-req".into())
                    .spawn(move || {
                        if let Err(e) = serve(stream, tls, &reports, ready, &dead, &gossip) {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                if let Err(e) = spawned {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!(error = %e, "admin request thread not started");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Answers one request and closes the connection.
fn serve(
    socket: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    reports: &[ShardReport],
    ready: bool,
    dead: &[(usize, String)],
    gossip: &GossipStats,
) -> std::io::Result<()> {
    socket.set_nonblocking(false)?;
    socket.set_write_timeout(Some(REQUEST_DEADLINE))?;
    // With TLS the handshake happens in the first read, under the same
    // deadline as the request head.
    let mut stream = match tls {
        None => AdminConn::Plain(socket),
        Some(config) => {
            let session = rustls::ServerConnection::new(config)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            AdminConn::Tls(Box::new(rustls::StreamOwned::new(session, socket)))
        }
    };
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        // The whole head within the deadline, however it trickles in.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head not complete within the deadline",
            ));
        }
        stream.socket().set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > REQUEST_BYTES_MAX {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
            );
        }
    }
    match parse_head(&head) {
        AdminRequest::MethodNotAllowed => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        ),
        AdminRequest::Metrics => respond(
            &mut stream,
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &render(reports, ready, gossip),
        ),
        AdminRequest::Health => {
            let (status, body) = health_answer(ready, dead);
            respond(&mut stream, status, "text/plain", &body)
        }
        AdminRequest::Status => respond(
            &mut stream,
            "200 OK",
            "application/json",
            &status_json(reports, ready, dead),
        ),
        AdminRequest::NotFound => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "try /metrics, /health or /status\n",
        ),
    }
}

/// What an admin HTTP request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// `GET /metrics`.
    Metrics,
    /// `GET /health`.
    Health,
    /// `GET /status`.
    Status,
    /// A GET of any other path.
    NotFound,
    /// Any method but GET (or no request line at all).
    MethodNotAllowed,
}

/// Parses an HTTP request head as read from the admin port (at most
/// [`REQUEST_BYTES_MAX`] bytes and a read of 1 KiB, not necessarily complete or UTF-8): only the
/// method and the path before any `?` count. Sans-io, so any bytes give
/// an answer, never a panic (fuzzed in cluster/tests/fuzz_decoders.rs).
pub fn parse_head(head: &[u8]) -> AdminRequest {
    let line = String::from_utf8_lossy(head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return AdminRequest::MethodNotAllowed;
    }
    match path.split('?').next().unwrap_or("") {
        "/metrics" => AdminRequest::Metrics,
        "/health" => AdminRequest::Health,
        "/status" => AdminRequest::Status,
        _ => AdminRequest::NotFound,
    }
}

fn respond(
    stream: &mut impl Write,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// An admin connection: plain, or TLS over it.
enum AdminConn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl AdminConn {
    fn socket(&self) -> &TcpStream {
        match self {
            AdminConn::Plain(s) => s,
            AdminConn::Tls(s) => &s.sock,
        }
    }
}

impl Read for AdminConn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            AdminConn::Plain(s) => s.read(buf),
            AdminConn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for AdminConn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            AdminConn::Plain(s) => s.write(buf),
            AdminConn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            AdminConn::Plain(s) => s.flush(),
            AdminConn::Tls(s) => {
                // The answer ends the connection: say so, then send.
                s.conn.send_close_notify();
                s.flush()
            }
        }
    }
}

/// `/health`'s status line and body: 200 only when every shard serves;
/// a dead shard is named, with its panic, so an operator sees why.
fn health_answer(ready: bool, dead: &[(usize, String)]) -> (&'static str, String) {
    if !dead.is_empty() {
        let lines: String = dead
            .iter()
            .map(|(shard, why)| format!("shard {shard} died: {why}\n"))
            .collect();
        return ("503 Service Unavailable", lines);
    }
    if ready {
        ("200 OK", "ready\n".into())
    } else {
        ("503 Service Unavailable", "not ready\n".into())
    }
}

fn status_json(reports: &[ShardReport], ready: bool, dead: &[(usize, String)]) -> String {
    let shards: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "shard": r.shard,
                "serving": r.serving,
                "busy_us": r.busy_us,
                "memtable_bytes": r.engine.memtable_bytes,
                "sstable_bytes": r.engine.table_bytes,
                "sstables": r.engine.tables,
                "gets": r.engine.gets,
                "applies": r.engine.applies,
                "metrics": r.metrics,
            })
        })
        .collect();
    let dead: Vec<serde_json::Value> = dead
        .iter()
        .map(|(shard, why)| serde_json::json!({ "shard": shard, "why": why }))
        .collect();
    serde_json::json!({ "ready": ready, "shards": shards, "dead_shards": dead }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::metrics::RequestKind;

    fn report(shard: usize, applies: u64) -> ShardReport {
        let mut engine = EngineStats::default();
        engine.applies = applies;
        let live = crate::runtime::metrics::ShardMetrics::default();
        live.record(RequestKind::Get, Duration::from_micros(40));
        live.record(RequestKind::Get, Duration::from_millis(3));
        ShardReport {
            shard,
            engine,
            metrics: MetricsSnapshot {
                hints_pending: 3,
                ..live.snapshot()
            },
            busy_us: 10,
            serving: true,
        }
    }

    #[test]
    fn exposition_parses_and_carries_every_shard() {
        let text = render(&[report(0, 5), report(1, 7)], true, &GossipStats::default());
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("parses");
        let applies: f64 = scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "corekv_engine_operations_total" && s.labels.get("op") == Some("apply")
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum();
        assert_eq!(applies, 12.0);
        assert!(
            text.contains("corekv_hints_pending{shard=\"1\"} 3"),
            "{text}"
        );
        assert!(text.contains("corekv_ready 1"), "{text}");
        // Shard 0 saw two GETs: 40 µs and 3 ms.
        assert!(
            text.contains("corekv_request_duration_seconds_count{shard=\"0\",op=\"get\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "corekv_request_duration_seconds_bucket{le=\"0.00005\",shard=\"0\",op=\"get\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "corekv_request_duration_seconds_bucket{le=\"+Inf\",shard=\"0\",op=\"get\"} 2"
            ),
            "{text}"
        );
    }

    #[test]
    fn health_names_a_dead_shard_and_is_never_200_with_one() {
        assert_eq!(health_answer(true, &[]), ("200 OK", "ready\n".into()));
        assert_eq!(health_answer(false, &[]).0, "503 Service Unavailable");
        let dead = [(1, "panicked at x.rs:3: boom".to_string())];
        let (status, body) = health_answer(true, &dead);
        assert_eq!(status, "503 Service Unavailable");
        assert_eq!(body, "shard 1 died: panicked at x.rs:3: boom\n");
        let json: serde_json::Value =
            serde_json::from_str(&status_json(&[report(0, 1)], false, &dead)).expect("json");
        assert_eq!(json["dead_shards"][0]["shard"], 1);
        assert_eq!(json["ready"], false);
    }

    #[test]
    fn the_grafana_dashboard_uses_only_metrics_we_export() {
        let dashboard = include_str!("../../../docs/grafana-dashboard.json");
        let text = render(&[report(0, 1)], true, &GossipStats::default());
        let mut names: Vec<&str> = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("corekv_"))
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() > 10, "{names:?}");
        for name in names {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "dashboard uses {name}, which /metrics does not export"
            );
        }
    }
}
