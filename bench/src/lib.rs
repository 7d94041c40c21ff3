//! # corekv-bench — a load generator for corekv and any RESP server
//!
//! Answers "what p99 will I get at this rate?" and holds corekv against
//! Redis (or any RESP server) in one run.
//!
//! - **Open loop** (default): a fixed target rate; every request has an
//!   intended send time ([`rate::Schedule`]) and its latency is measured
//!   from that time, so a server stall shows in the tail (no coordinated
//!   omission, as in wrk2). **Closed loop**: `connections × pipeline`
//!   requests always in flight, for maximum throughput.
//! - **Workloads** ([`workload`]): YCSB A, B, C, D, F (E needs scans, which
//!   corekv lacks) or a custom mix; keys uniform, zipfian or latest
//!   ([`keys`]); fixed or ranged value sizes; an optional load phase.
//! - **Protocols** ([`target`]): corekv's native protocol and RESP.
//! - **Workers** ([`worker`]): one OS thread per `--threads`, each with its
//!   own connections and a non-blocking event loop; requests encoded and
//!   responses scanned in place ([`proto`]), no allocation per request.
//! - **Output**: a progress line per second, per-op summaries and a
//!   side-by-side comparison of targets ([`report`]); with `--out`, JSON,
//!   an HDR histogram interval log per target and SVG plots ([`out`]).
//! - [`null_server`]: an in-process server with canned replies, to measure
//!   the generator itself and to test it.
//!
//! The entry points are [`cli::BenchArgs`] (the `corekv bench` flags) and
//! [`run`].

pub mod auth;
pub mod cli;
mod conn;
pub mod keys;
pub mod null_server;
pub mod out;
pub mod proto;
pub mod rate;
pub mod report;
pub mod rng;
pub mod routes;
pub mod run;
pub mod stats;
pub mod sys;
pub mod target;
pub mod worker;
pub mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use report::{format_comparison, format_summary, progress_line, TargetSummary};
use target::Target;
use worker::{Mode, RunSpec};
use workload::{Mix, OpKind, Workload};

/// Everything that can go wrong in a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag or setting is invalid.
    #[error("{0}")]
    Config(String),
    /// A target refused or did not accept a connection.
    #[error("cannot connect to {name} at {url}: {error}{hint}", hint = connect_hint(error))]
    Connect {
        /// Target label.
        name: String,
        /// Target URL.
        url: String,
        /// The error.
        error: std::io::Error,
    },
    /// Local I/O (threads, output files).
    #[error("{0}")]
    Io(String),
    /// The server refused the `--user` credentials (or AUTH failed).
    #[error("authentication failed: {0}")]
    Auth(String),
}

fn connect_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            " (connection refused: is the server running and listening on that port?)"
        }
        std::io::ErrorKind::TimedOut => " (timed out: is the address right and reachable?)",
        _ => "",
    }
}

/// A whole benchmark: the same workload against each target in turn.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Servers, run one after the other.
    pub targets: Vec<Target>,
    /// What to send.
    pub workload: Workload,
    /// Pacing.
    pub mode: Mode,
    /// Worker threads.
    pub threads: usize,
    /// Connections per worker.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Duration of each target's run.
    pub duration: Duration,
    /// Cap on requests per target.
    pub requests: Option<u64>,
    /// Request timeout (and connect timeout).
    pub timeout: Duration,
    /// RNG seed.
    pub seed: u64,
    /// CPUs to pin workers to (empty: none).
    pub pin: Vec<usize>,
    /// Workers poll instead of sleeping between sends.
    pub busy_poll: bool,
    /// Pre-populate every key before measuring.
    pub load: bool,
    /// Directory for JSON, HDR logs and plots.
    pub out: Option<PathBuf>,
    /// No progress lines.
    pub quiet: bool,
    /// Authenticate every connection as this user (`--user`).
    pub credentials: Option<auth::Credentials>,
}

impl BenchConfig {
    fn spec(&self, target: &Target, load: bool) -> RunSpec {
        let mut s = RunSpec {
            target: target.clone(),
            workload: self.workload.clone(),
            mode: self.mode,
            threads: self.threads.max(1),
            connections: self.connections.max(1),
            pipeline: self.pipeline.max(1),
            duration: self.duration,
            requests: self.requests,
            timeout: self.timeout,
            seed: self.seed,
            pin: self.pin.clone(),
            busy_poll: self.busy_poll,
            interval: Duration::from_secs(1),
            load: false,
            credentials: self.credentials.clone(),
        };
        if load {
            s.load = true;
            s.mode = Mode::Closed;
            s.pipeline = s.pipeline.max(32);
            s.requests = None;
            s.duration = Duration::from_secs(3600);
            if let Ok(m) = Mix::new([0, 1, 0, 0]) {
                s.workload.mix = m;
            }
        }
        s
    }
}

/// Runs the benchmark: for each target, the optional load phase and then
/// the measured run; prints progress to stderr and summaries to `out`;
/// writes `--out` files. Returns each target's summary.
pub fn run(cfg: &BenchConfig, out: &mut dyn Write) -> Result<Vec<TargetSummary>, BenchError> {
    if cfg.targets.is_empty() {
        return Err(BenchError::Config("no --target given".into()));
    }
    let io = |e: std::io::Error| BenchError::Io(format!("writing the summary: {e}"));
    let mut summaries = Vec::new();
    for target in &cfg.targets {
        if sys::interrupted() {
            writeln!(out, "interrupted: {} not run", target.name).map_err(io)?;
            continue;
        }
        if cfg.load {
            let spec = cfg.spec(target, true);
            let r = run::run_target(&spec, &mut |_| {})?;
            let n = r.stats.op(OpKind::Update).ok();
            writeln!(
                out,
                "{}: loaded {} keys in {:.1} s ({} req/s), {} errors",
                target.name,
                n,
                r.elapsed.as_secs_f64(),
                report::fmt_rate(n as f64 / r.elapsed.as_secs_f64().max(1e-9)),
                r.stats.errors()
            )
            .map_err(io)?;
        }
        let spec = cfg.spec(target, false);
        let quiet = cfg.quiet;
        let name = target.name.clone();
        let r = run::run_target(&spec, &mut |p| {
            if !quiet {
                eprintln!("{}", progress_line(&name, p));
            }
        })?;
        let s = TargetSummary::new(target, cfg.mode, &r);
        writeln!(out, "\n{}", format_summary(&s)).map_err(io)?;
        if sys::interrupted() {
            writeln!(out, "(interrupted by Ctrl-C: figures cover the run so far)").map_err(io)?;
        }
        summaries.push(s);
    }
    let cmp = format_comparison(&summaries);
    if !cmp.is_empty() {
        writeln!(out, "{cmp}").map_err(io)?;
    }
    if let Some(dir) = &cfg.out {
        out::write_all(dir, cfg, &summaries)?;
        writeln!(out, "wrote {}", dir.display()).map_err(io)?;
    }
    Ok(summaries)
}
