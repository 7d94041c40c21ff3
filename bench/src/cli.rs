//! The `corekv bench` command line (clap derive), turned into a
//! [`BenchConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::keys::{Distribution, DEFAULT_THETA};
use crate::target::Target;
use crate::worker::Mode;
use crate::workload::{ycsb, Mix, ValueSize, Workload};
use crate::{BenchConfig, BenchError};

/// Flags of `corekv bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// A server to test, `[NAME=]SCHEME://HOST:PORT` with scheme `native` or
    /// `resp`; repeat to run the same workload against several and compare.
    #[arg(long = "target", default_value = "corekv=native://127.0.0.1:7000")]
    pub targets: Vec<String>,
    /// YCSB workload: a (50/50 read/update), b (95/5), c (read only),
    /// d (95 read / 5 insert, latest keys), f (50 read / 50 read-modify-write).
    /// Native updates are PUTs without a causal context: against a node in
    /// `siblings` conflict mode they pile up siblings, so run it with
    /// `--conflict lww` (F's read-modify-writes carry the read's context).
    #[arg(long, default_value = "a", conflicts_with = "mix")]
    pub workload: String,
    /// A custom mix instead of a YCSB workload, e.g. `get=90,put=10`
    /// (names: get, put, insert, rmw).
    #[arg(long)]
    pub mix: Option<String>,
    /// Key distribution: uniform, zipfian or latest (default: the workload's).
    #[arg(long)]
    pub distribution: Option<String>,
    /// Zipfian skew, in (0, 1).
    #[arg(long, default_value_t = DEFAULT_THETA)]
    pub theta: f64,
    /// Number of keys (pre-populated with --load).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Value size in bytes: `100` or a range `100..1000`.
    #[arg(long, default_value = "100")]
    pub value_size: String,
    /// Open loop: total requests per second over all workers.
    #[arg(long, default_value_t = 10_000.0, conflicts_with = "closed")]
    pub rate: f64,
    /// Closed loop: as fast as possible with connections × pipeline in flight.
    #[arg(long)]
    pub closed: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Connections per worker.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight per connection (open loop: at most this many; the
    /// rest wait in the generator, their latency still counted from their
    /// intended send time).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// How long to run each target (`10s`, `500ms`, `2m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests per target.
    #[arg(long)]
    pub requests: Option<u64>,
    /// A request unanswered after this long is a timeout; also the connect
    /// timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write every key once before measuring.
    #[arg(long)]
    pub load: bool,
    /// Directory for summary.json, one HDR interval log per target and SVG
    /// plots.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pin workers to these CPUs, e.g. `1` or `0,1`; the thread that
    /// gathers their figures goes to the first one (so it never runs on
    /// the CPUs of the server being measured).
    #[arg(long, value_delimiter = ',')]
    pub pin: Vec<usize>,
    /// Between sends, poll the sockets instead of sleeping. For a worker
    /// pinned to a CPU of its own: every sleep would otherwise end with a
    /// wake-up from the CPU's idle state, whose cost (tens of µs on some
    /// VMs) the server pays when it answers and the run counts as latency.
    #[arg(long)]
    pub busy_poll: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Instead of generating load, run the in-process null server (canned
    /// replies) at this `native://` or `resp://` 127.0.0.1 address for
    /// --duration, pinned to the first --pin CPU: to measure a load
    /// generator itself.
    #[arg(long, hide = true)]
    pub serve_null: Option<String>,
    /// Authenticate every connection as this user; the password is read
    /// from the environment variable COREKV_PASSWORD (never a flag).
    #[arg(long)]
    pub user: Option<String>,
}

/// Parses `10s`, `250ms`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (10s, 500ms, 2m)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

impl BenchArgs {
    /// Runs `corekv bench`: the benchmark (summaries to `out`), or the null
    /// server with `--serve-null`.
    pub fn run(self, out: &mut dyn std::io::Write) -> Result<(), BenchError> {
        if let Some(url) = &self.serve_null {
            let t = Target::parse(url)?;
            if !t.addr.ip().is_loopback() {
                return Err(BenchError::Config(
                    "the null server only binds 127.0.0.1".into(),
                ));
            }
            let srv =
                crate::null_server::NullServer::start(crate::null_server::NullServerOptions {
                    cpu: self.pin.first().copied(),
                    port: t.addr.port(),
                    ..crate::null_server::NullServerOptions::new(t.protocol)
                })
                .map_err(|e| {
                    BenchError::Io(format!("starting the null server on {}: {e}", t.addr))
                })?;
            let _ = writeln!(out, "null server on {} for {:?}", t.url(), self.duration);
            let _ = out.flush();
            std::thread::sleep(self.duration);
            let _ = writeln!(out, "answered {} requests", srv.served());
            return Ok(());
        }
        let cfg = self.into_config()?;
        crate::sys::stop_on_ctrl_c();
        crate::run(&cfg, out)?;
        Ok(())
    }

    /// Checks the flags and builds the run's configuration.
    pub fn into_config(self) -> Result<BenchConfig, BenchError> {
        let targets = self
            .targets
            .iter()
            .map(|t| Target::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(BenchError::Config(
                "two targets have the same name; name them NAME=URL".into(),
            ));
        }
        let (name, mix, default_dist) = match &self.mix {
            Some(m) => (
                "custom".to_string(),
                Mix::parse(m)?,
                Distribution::Zipfian { theta: self.theta },
            ),
            None => {
                let (mix, d) = ycsb(&self.workload, self.theta)?;
                (
                    format!("ycsb-{}", self.workload.to_ascii_lowercase()),
                    mix,
                    d,
                )
            }
        };
        let dist = match &self.distribution {
            Some(d) => Distribution::parse(d, self.theta)?,
            None => {
                Distribution::parse("uniform", self.theta)?; // validates theta
                default_dist
            }
        };
        if self.keys == 0 {
            return Err(BenchError::Config("--keys must be at least 1".into()));
        }
        let mode = if self.closed {
            Mode::Closed
        } else {
            if !(self.rate.is_finite() && self.rate > 0.0) {
                return Err(BenchError::Config("--rate must be positive".into()));
            }
            Mode::Open { rate: self.rate }
        };
        if self.duration.is_zero() && self.requests.is_none() {
            return Err(BenchError::Config(
                "--duration must be positive (or give --requests)".into(),
            ));
        }
        let credentials = match &self.user {
            Some(u) => Some(crate::auth::Credentials::from_env(u)?),
            None => None,
        };
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        Ok(BenchConfig {
            targets,
            workload: Workload {
                name,
                mix,
                dist,
                key_count: self.keys,
                value_size: ValueSize::parse(&self.value_size)?,
            },
            mode,
            threads: threads.max(1),
            connections: self.connections.max(1),
            pipeline: self.pipeline.max(1),
            duration: if self.duration.is_zero() {
                Duration::from_secs(24 * 3600)
            } else {
                self.duration
            },
            requests: self.requests,
            timeout: self.timeout,
            seed: self.seed,
            pin: self.pin,
            busy_poll: self.busy_poll,
            load: self.load,
            out: self.out,
            quiet: self.quiet,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: BenchArgs,
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn flags_to_config() {
        let t = T::parse_from([
            "x",
            "--target",
            "a=native://127.0.0.1:1",
            "--target",
            "b=resp://127.0.0.1:2",
            "--mix",
            "get=90,put=10",
            "--distribution",
            "uniform",
            "--value-size",
            "10..20",
            "--threads",
            "2",
        ]);
        let c = t.a.into_config().unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.workload.name, "custom");
        assert_eq!(c.workload.dist, Distribution::Uniform);
        assert_eq!(c.threads, 2);
        assert_eq!(c.mode, Mode::Open { rate: 10_000.0 });

        let d = T::parse_from(["x", "--workload", "d", "--closed"]);
        let c = d.a.into_config().unwrap();
        assert!(matches!(c.workload.dist, Distribution::Latest { .. }));
        assert_eq!(c.mode, Mode::Closed);

        let e = T::parse_from(["x", "--workload", "e"]).a.into_config();
        assert!(e.is_err());
        let dup = T::parse_from([
            "x",
            "--target",
            "a=resp://127.0.0.1:1",
            "--target",
            "a=resp://127.0.0.1:2",
        ]);
        assert!(dup.a.into_config().is_err());
    }
}
