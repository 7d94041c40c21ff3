//! Summaries: per-op tables, the side-by-side comparison of targets, and
//! the progress line. Plain data in, text out.

use std::fmt::Write as _;

use crate::run::{quantile_us, IntervalPoint, TargetRun};
use crate::stats::OpStats;
use crate::target::Target;
use crate::worker::Mode;
use crate::workload::OpKind;

/// Figures of one operation kind (or of all together).
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpSummary {
    /// `read`, `update`, `insert`, `rmw`, or `all`.
    pub op: String,
    /// Successful requests.
    pub count: u64,
    /// Errors (error replies, lost connections, never answered).
    pub errors: u64,
    /// Answered after the timeout, or never.
    pub timeouts: u64,
    /// Reads that found nothing.
    pub not_found: u64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Percentiles, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// 99.99th percentile, µs.
    pub p9999_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
}

impl OpSummary {
    /// Summarises `s` over `elapsed_s` seconds.
    pub fn new(op: &str, s: &OpStats, elapsed_s: f64) -> OpSummary {
        let h = &s.hist;
        OpSummary {
            op: op.to_string(),
            count: s.ok(),
            errors: s.errors,
            timeouts: s.timeouts,
            not_found: s.not_found,
            throughput: s.ok() as f64 / elapsed_s.max(1e-9),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50_us: quantile_us(h, 0.5),
            p90_us: quantile_us(h, 0.9),
            p99_us: quantile_us(h, 0.99),
            p999_us: quantile_us(h, 0.999),
            p9999_us: quantile_us(h, 0.9999),
            max_us: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1000.0
            },
        }
    }
}

/// Everything reported for one target.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TargetSummary {
    /// The target.
    pub target: Target,
    /// Pacing used.
    pub mode: Mode,
    /// Seconds from start to the last answer.
    pub elapsed_s: f64,
    /// Per op kind (only kinds that ran).
    pub ops: Vec<OpSummary>,
    /// All kinds together.
    pub all: OpSummary,
    /// Open loop: requests never sent because the generator fell behind.
    pub unsent: u64,
    /// A few distinct error messages.
    pub error_samples: Vec<String>,
    /// Per-interval figures.
    pub intervals: Vec<IntervalPoint>,
    /// Latencies of every op kind together.
    #[serde(skip)]
    pub hist: hdrhistogram::Histogram<u64>,
    /// The HDR interval log.
    #[serde(skip)]
    pub hlog: Vec<u8>,
}

impl TargetSummary {
    /// Summarises a run.
    pub fn new(target: &Target, mode: Mode, run: &TargetRun) -> TargetSummary {
        let el = run.elapsed.as_secs_f64();
        let all = run.stats.all();
        let ops = OpKind::ALL
            .iter()
            .filter(|k| run.stats.op(**k).total() > 0)
            .map(|k| OpSummary::new(k.name(), run.stats.op(*k), el))
            .collect();
        TargetSummary {
            target: target.clone(),
            mode,
            elapsed_s: el,
            ops,
            all: OpSummary::new("all", &all, el),
            unsent: run.stats.unsent,
            error_samples: run.stats.error_samples.clone(),
            intervals: run.intervals.clone(),
            hist: all.hist,
            hlog: run.hlog.clone(),
        }
    }
}

/// A latency in µs as text with a fitting unit.
pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1_000_000.0)
    } else if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}

/// A rate with thousands separators.
pub fn fmt_rate(r: f64) -> String {
    let s = (r.round() as u64).to_string();
    let first = match s.len() % 3 {
        0 => 3,
        n => n,
    };
    let mut out = String::from(&s[..first.min(s.len())]);
    let mut i = first;
    while i < s.len() {
        out.push(',');
        out.push_str(&s[i..i + 3]);
        i += 3;
    }
    out
}

/// The live line printed each interval.
pub fn progress_line(name: &str, p: &IntervalPoint) -> String {
    format!(
        "[{name} {:>4.0}s] {:>10} req/s  p50 {:>8}  p99 {:>8}  p99.9 {:>8}  max {:>8}  errors {}",
        p.end_s,
        fmt_rate(p.rate),
        fmt_us(p.p50_us),
        fmt_us(p.p99_us),
        fmt_us(p.p999_us),
        fmt_us(p.max_us),
        p.errors
    )
}

/// The per-op table of one target.
pub fn format_summary(s: &TargetSummary) -> String {
    let mut out = String::new();
    let mode = match s.mode {
        Mode::Open { rate } => format!("open loop at {} req/s", fmt_rate(rate)),
        Mode::Closed => "closed loop".into(),
    };
    let _ = writeln!(
        out,
        "{} ({}), {mode}, {:.1} s",
        s.target.name,
        s.target.url(),
        s.elapsed_s
    );
    let _ = writeln!(
        out,
        "{:<7} {:>10} {:>7} {:>8} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "op", "count", "errors", "timeouts", "req/s", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    let rows = s
        .ops
        .iter()
        .chain(std::iter::once(&s.all).filter(|_| s.ops.len() > 1));
    for o in rows {
        let _ = writeln!(
            out,
            "{:<7} {:>10} {:>7} {:>8} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            o.op,
            o.count,
            o.errors,
            o.timeouts,
            fmt_rate(o.throughput),
            fmt_us(o.p50_us),
            fmt_us(o.p90_us),
            fmt_us(o.p99_us),
            fmt_us(o.p999_us),
            fmt_us(o.p9999_us),
            fmt_us(o.max_us)
        );
    }
    if s.unsent > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} requests were never sent: the generator (or its connections) fell more than the timeout behind the schedule",
            s.unsent
        );
    }
    if s.all.errors > 0 {
        let _ = writeln!(out, "{} errors; messages seen:", s.all.errors);
        for m in &s.error_samples {
            let _ = writeln!(out, "  {m}");
        }
    }
    out
}

/// Side-by-side figures of several targets, with each one's ratio to the
/// first (`×` > 1 means higher: better for throughput, worse for latency).
pub fn format_comparison(all: &[TargetSummary]) -> String {
    let mut out = String::new();
    if all.len() < 2 {
        return out;
    }
    let base = &all[0];
    let mut header = format!("{:<11}", "");
    for s in all {
        let _ = write!(header, " {:>12}", truncate(&s.target.name, 12));
    }
    for s in &all[1..] {
        let _ = write!(
            header,
            " {:>14}",
            truncate(&format!("{}/{}", s.target.name, base.target.name), 14)
        );
    }
    let _ = writeln!(out, "{header}");
    type Pick = fn(&OpSummary) -> f64;
    let rows: [(&str, Pick, bool); 8] = [
        ("req/s", |o| o.throughput, false),
        ("p50", |o| o.p50_us, true),
        ("p90", |o| o.p90_us, true),
        ("p99", |o| o.p99_us, true),
        ("p99.9", |o| o.p999_us, true),
        ("p99.99", |o| o.p9999_us, true),
        ("max", |o| o.max_us, true),
        ("errors", |o| o.errors as f64, false),
    ];
    for (name, pick, is_latency) in rows {
        let mut line = format!("{name:<11}");
        for s in all {
            let v = pick(&s.all);
            let cell = if is_latency { fmt_us(v) } else { fmt_rate(v) };
            let _ = write!(line, " {cell:>12}");
        }
        for s in &all[1..] {
            let (a, b) = (pick(&s.all), pick(&base.all));
            let cell = if b > 0.0 {
                format!("{:.2}×", a / b)
            } else {
                "-".into()
            };
            let _ = write!(line, " {cell:>14}");
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use crate::target::Target;
    use std::time::Duration;

    fn summary(name: &str, lat: u64) -> TargetSummary {
        let mut stats = Stats::default();
        for _ in 0..1000 {
            stats.record(OpKind::Read, lat);
        }
        let run = TargetRun {
            stats,
            elapsed: Duration::from_secs(1),
            intervals: vec![],
            hlog: vec![],
        };
        let t = Target::parse(&format!("{name}=resp://127.0.0.1:1")).unwrap();
        TargetSummary::new(&t, Mode::Closed, &run)
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_rate(1234567.4), "1,234,567");
        assert_eq!(fmt_us(12.3), "12µs");
        assert_eq!(fmt_us(1500.0), "1.50ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50s");
        let a = summary("corekv", 100_000);
        let b = summary("redis", 50_000);
        let t = format_summary(&a);
        assert!(t.contains("read") && t.contains("1,000"), "{t}");
        let c = format_comparison(&[a, b]);
        assert!(c.contains("redis/corekv"), "{c}");
        assert!(c.contains("0.50×"), "{c}");
        assert!(c.contains("1.00×"), "{c}");
    }
}
