//! Running one target: connect, start the workers on a common clock,
//! gather their per-interval statistics into a live progress line, and
//! merge their totals.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::routes::ShardRoutes;
use crate::stats::Stats;
use crate::sys::{pin_and_tune, PinnedThread};
use crate::target::Protocol;
use crate::worker::{Interval, RunSpec, Shared, Worker};
use crate::workload::OpKind;
use crate::BenchError;

/// One second (or `interval`) of a run, all workers merged.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IntervalPoint {
    /// Interval number.
    pub index: u64,
    /// Start, seconds since the run's start.
    pub start_s: f64,
    /// End (the last one may be partial).
    pub end_s: f64,
    /// Requests completed successfully.
    pub count: u64,
    /// Errors (including timeouts never answered).
    pub errors: u64,
    /// Completed requests per second.
    pub rate: f64,
    /// Latency percentiles in µs (0 when nothing completed).
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
}

/// Everything measured for one target.
#[derive(Clone, Debug)]
pub struct TargetRun {
    /// Totals over the run.
    pub stats: Stats,
    /// From the common start to the last worker's end.
    pub elapsed: Duration,
    /// Per-interval figures.
    pub intervals: Vec<IntervalPoint>,
    /// HDR histogram interval log (one tagged histogram per op kind and
    /// interval, latencies in ns).
    pub hlog: Vec<u8>,
}

/// Latency at quantile `q` of `h`, in µs.
pub fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Each worker's connections: `connections` to the target, or, shard-aware,
/// `connections` to every shard address (grouped by address, in order).
fn connect_all(
    spec: &RunSpec,
    routes: Option<&ShardRoutes>,
) -> Result<Vec<Vec<TcpStream>>, BenchError> {
    let per = spec.connections.max(1);
    let addrs = routes.map_or_else(|| vec![spec.target.addr], |r| r.addrs().to_vec());
    (0..spec.threads.max(1))
        .map(|_| {
            addrs
                .iter()
                .flat_map(|addr| std::iter::repeat_n(addr, per))
                .map(|addr| {
                    let mut s = TcpStream::connect_timeout(addr, spec.timeout).map_err(|e| {
                        BenchError::Connect {
                            name: spec.target.name.clone(),
                            url: spec.target.url(),
                            error: e,
                        }
                    })?;
                    if let Some(c) = &spec.credentials {
                        crate::auth::authenticate(&mut s, spec.target.protocol, c, spec.timeout)?;
                    }
                    Ok(s)
                })
                .collect()
        })
        .collect()
}

/// Runs `spec` against its target; `progress` sees each completed interval.
pub fn run_target(
    spec: &RunSpec,
    progress: &mut dyn FnMut(&IntervalPoint),
) -> Result<TargetRun, BenchError> {
    let threads = spec.threads.max(1);
    let spec = RunSpec {
        threads,
        ..spec.clone()
    };
    let routes = match spec.target.protocol {
        Protocol::NativeSharded => Some(ShardRoutes::fetch(
            spec.target.addr,
            spec.timeout,
            spec.credentials.as_ref(),
        )?),
        _ => None,
    };
    let streams = connect_all(&spec, routes.as_ref())?;
    let shared = Shared {
        routes,
        ..Shared::default()
    };
    let start = Instant::now() + Duration::from_millis(20);
    let (tx, rx) = mpsc::channel::<Interval>();
    let interval_s = spec.interval.as_secs_f64();
    // Two pre-faulted spare interval Stats per worker, recycled through
    // `back`, so workers never allocate while measuring.
    let mut back = Vec::new();
    let mut recycle_rx = Vec::new();
    for _ in 0..threads {
        let (btx, brx) = mpsc::channel::<Stats>();
        for _ in 0..3 {
            let mut s = Stats::default();
            s.reset();
            let _ = btx.send(s);
        }
        back.push(btx);
        recycle_rx.push(brx);
    }
    let wall_start = std::time::SystemTime::now();
    let mut hlog = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "corekv bench: target {} ({}); latencies in ns; tags are op kinds",
            spec.target.name,
            spec.target.url()
        ))
        .with_start_time(wall_start)
        .with_base_time(wall_start)
        .with_max_value_divisor(1e6)
        .begin_log_with(&mut hlog, &mut serializer)
        .map_err(|e| BenchError::Io(format!("starting the HDR log: {e}")))?;

    // The thread that gathers intervals (merging histograms, compressing
    // the HDR log: up to a millisecond a second) runs beside the workers,
    // not on the CPUs the target is being measured on.
    let _collector = PinnedThread::to(spec.pin.first().copied());
    let (stats, elapsed, intervals) = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for ((id, conns), recycle) in streams.into_iter().enumerate().zip(recycle_rx) {
            let tx = tx.clone();
            let spec = &spec;
            let shared = &shared;
            let cpu = (!spec.pin.is_empty()).then(|| spec.pin[id % spec.pin.len()]);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("bench-{id}"))
                    .spawn_scoped(scope, move || {
                        pin_and_tune(cpu);
                        let w = Worker::new(id, spec, shared, conns, start, tx, recycle)
                            .map_err(|e| BenchError::Io(format!("setting up a connection: {e}")))?;
                        w.run();
                        Ok::<(), BenchError>(())
                    })
                    .map_err(|e| BenchError::Io(format!("spawning a worker: {e}"))),
            );
        }
        drop(tx);

        // Gather intervals: index -> (merged stats, workers reported).
        let mut pending: BTreeMap<u64, (Stats, usize)> = BTreeMap::new();
        let mut done_at: Vec<Option<u64>> = vec![None; threads];
        let mut points = Vec::new();
        let mut next_emit = 0u64;
        let mut finish_s = f64::MAX;
        let mut total = Stats::default();
        let mut log_error = None;
        while let Ok(mut iv) = rx.recv() {
            let e = pending.entry(iv.index).or_default();
            e.0.merge(&iv.stats);
            e.1 += 1;
            total.merge(&iv.stats);
            iv.stats.reset();
            if let Some(b) = back.get(iv.worker) {
                let _ = b.send(iv.stats);
            }
            if iv.last {
                done_at[iv.worker] = Some(iv.index);
                if done_at.iter().all(Option::is_some) {
                    finish_s = start.elapsed().as_secs_f64();
                }
            }
            // Emit every interval all workers have reported (or finished before).
            loop {
                let finished_before = done_at
                    .iter()
                    .filter(|d| matches!(d, Some(i) if *i < next_emit))
                    .count();
                let ready = match pending.get(&next_emit) {
                    Some((_, n)) => n + finished_before >= threads,
                    None => false,
                };
                if !ready {
                    break;
                }
                let Some((stats, _)) = pending.remove(&next_emit) else {
                    break;
                };
                let start_s = next_emit as f64 * interval_s;
                let end_s = ((next_emit + 1) as f64 * interval_s).min(finish_s.max(start_s));
                let all = stats.all();
                let span = (end_s - start_s).max(1e-3);
                for k in OpKind::ALL {
                    let h = &stats.op(k).hist;
                    if h.is_empty() {
                        continue;
                    }
                    let r = log.write_histogram(
                        h,
                        Duration::from_secs_f64(start_s),
                        Duration::from_secs_f64(span),
                        Tag::new(k.name()),
                    );
                    if let Err(e) = r {
                        log_error.get_or_insert(format!("writing the HDR log: {e}"));
                    }
                }
                let p = IntervalPoint {
                    index: next_emit,
                    start_s,
                    end_s,
                    count: all.ok(),
                    errors: all.errors,
                    rate: all.ok() as f64 / span,
                    p50_us: quantile_us(&all.hist, 0.5),
                    p99_us: quantile_us(&all.hist, 0.99),
                    p999_us: quantile_us(&all.hist, 0.999),
                    max_us: if all.hist.is_empty() {
                        0.0
                    } else {
                        all.hist.max() as f64 / 1000.0
                    },
                };
                progress(&p);
                points.push(p);
                next_emit += 1;
            }
        }
        let elapsed = start.elapsed();
        let mut first_err = log_error.map(BenchError::Io);
        for h in handles {
            let r = match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(BenchError::Io("a worker panicked".into()))),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((total, elapsed, points)),
        }
    })?;
    drop(log);
    Ok(TargetRun {
        stats,
        elapsed,
        intervals,
        hlog,
    })
}
