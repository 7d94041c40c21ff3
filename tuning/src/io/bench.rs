//! The measurement: one test file in the data directory, seven phases,
//! each bounded by time and by count, through io_uring with O_DIRECT.
//!
//! Guarantees: the test file (`.corekv-tune-io-<pid>.tmp`) is created
//! with `O_EXCL` (never an existing file) and removed when [`run`] returns,
//! on success, on error and on Ctrl-C (SIGINT is caught while measuring and
//! ends the run with [`Error::Interrupted`]). The whole run takes about
//! `duration` plus the time to drain the last operations in flight.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub use super::guard::test_file_path;
use super::guard::{check_interrupted, interrupted, SigintGuard, TestFile};
use super::progress::{Progress, XorShift};
use super::props::{Fdatasync, IoProperties, RandomRead, Recommended, Sequential, FORMAT_VERSION};
use super::recommend;
use super::ring::{Loop, Op, OpKind};
use super::stats::percentiles_us;
use crate::error::{Error, Result};

/// Queue depths of the random-read phases.
pub const QUEUE_DEPTHS: [u32; 4] = [1, 8, 32, 128];
/// Default total duration.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// Default test file size, MiB.
pub const DEFAULT_FILE_MIB: u64 = 256;
/// Sequential transfers: 1 MiB, 4 in flight.
const SEQ_BLOCK: usize = 1 << 20;
const SEQ_DEPTH: usize = 4;
/// Random reads and the append before each fdatasync: 4 KiB.
const SMALL: usize = 4096;
/// Count bounds per phase.
const RANDOM_OPS_MAX: u64 = 1_000_000;
const SEQ_READ_PASSES_MAX: u64 = 4;
const SYNCS_MAX: u64 = 10_000;
/// Share of the total duration per phase: write, read, 4 × random, sync.
const WEIGHTS: [f64; 7] = [0.2, 0.15, 0.125, 0.125, 0.125, 0.125, 0.15];

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Directory whose filesystem is measured (the data directory).
    pub dir: PathBuf,
    /// Total time budget, split over the phases (1 s ..= 1 h).
    pub duration: Duration,
    /// Size of the test file, MiB (8 ..= 1 048 576).
    pub file_mib: u64,
    /// Print a progress line on stderr.
    pub progress: bool,
}

fn validate(opts: &BenchOptions) -> Result<()> {
    if opts.duration < Duration::from_secs(1) || opts.duration > Duration::from_secs(3600) {
        return Err(Error::InvalidArgument(format!(
            "duration {:?} not in 1 s ..= 3600 s",
            opts.duration
        )));
    }
    if !(8..=1 << 20).contains(&opts.file_mib) {
        return Err(Error::InvalidArgument(format!(
            "file size {} MiB not in 8..=1048576",
            opts.file_mib
        )));
    }
    let meta = std::fs::metadata(&opts.dir)
        .map_err(|e| Error::io(format!("data directory {}", opts.dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a directory",
            opts.dir.display()
        )));
    }
    let free = free_bytes(&opts.dir)?;
    let need = (opts.file_mib << 20) + (64 << 20);
    if free < need {
        return Err(Error::InvalidArgument(format!(
            "{} has {} MiB free; the test file needs {} MiB plus 64 MiB of headroom (use --file-mib)",
            opts.dir.display(),
            free >> 20,
            opts.file_mib
        )));
    }
    Ok(())
}

fn free_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{} contains a NUL byte", dir.display())))?;
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(Error::io(
            format!("statvfs {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Measures the filesystem of `opts.dir` and returns the figures with
/// their recommendations. Writes nothing but the (removed) test file.
pub fn run(opts: &BenchOptions) -> Result<IoProperties> {
    validate(opts)?;
    let _sigint = SigintGuard::install();
    let started = Instant::now();
    let test = TestFile::create(&opts.dir)?;
    let result = measure(&test, opts);
    drop(test);
    if result.is_err() && opts.progress {
        // End the progress line before the caller prints the error.
        let _ = writeln!(std::io::stderr());
    }
    let mut props = result?;
    props.duration_s = started.elapsed().as_secs_f64();
    Ok(props)
}

fn measure(test: &TestFile, opts: &BenchOptions) -> Result<IoProperties> {
    let fd = test.file.as_raw_fd();
    let budgets: Vec<Duration> = WEIGHTS.iter().map(|w| opts.duration.mul_f64(*w)).collect();
    let later = |i: usize| budgets[i + 1..].iter().sum::<Duration>();
    let mut progress = Progress::new(opts.progress, WEIGHTS.len());
    let file_bytes = opts.file_mib << 20;

    // 1. Sequential write of the test file, then one fdatasync.
    progress.start(1, "sequential write".into(), budgets[0], later(0));
    let mut lp = Loop::new(fd, SEQ_DEPTH, SEQ_BLOCK)?;
    let deadline = Instant::now() + budgets[0];
    let t0 = Instant::now();
    let mut next_off = 0u64;
    let mut written = 0u64;
    lp.run(
        || {
            progress.tick();
            let must = next_off < (SEQ_DEPTH * SEQ_BLOCK) as u64;
            if next_off >= file_bytes || interrupted() || (!must && Instant::now() >= deadline) {
                return None;
            }
            let op = Op {
                kind: OpKind::Write,
                offset: next_off,
                len: SEQ_BLOCK,
            };
            next_off += SEQ_BLOCK as u64;
            Some(op)
        },
        |op, _| written = written.max(op.offset + op.len as u64),
    )?;
    check_interrupted()?;
    sync_once(&mut lp)?;
    let write_secs = t0.elapsed().as_secs_f64().max(1e-9);
    // Writes complete out of order only within the last few in flight, and
    // every one completed, so [0, written) is all data.
    let write_bps = written as f64 / write_secs;
    drop(lp);

    // 2. Sequential read, up to SEQ_READ_PASSES_MAX passes.
    progress.start(2, "sequential read".into(), budgets[1], later(1));
    let mut lp = Loop::new(fd, SEQ_DEPTH, SEQ_BLOCK)?;
    let deadline = Instant::now() + budgets[1];
    let reads_max = (written / SEQ_BLOCK as u64).max(1) * SEQ_READ_PASSES_MAX;
    let mut issued = 0u64;
    let mut read = 0u64;
    let t0 = Instant::now();
    lp.run(
        || {
            progress.tick();
            let must = issued < SEQ_DEPTH as u64;
            if issued >= reads_max || interrupted() || (!must && Instant::now() >= deadline) {
                return None;
            }
            let offset = (issued * SEQ_BLOCK as u64) % written.max(SEQ_BLOCK as u64);
            issued += 1;
            Some(Op {
                kind: OpKind::Read,
                offset,
                len: SEQ_BLOCK,
            })
        },
        |op, _| read += op.len as u64,
    )?;
    check_interrupted()?;
    let read_bps = read as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    drop(lp);

    // 3-6. Random 4 KiB reads at each queue depth.
    let blocks = (written / SMALL as u64).max(1);
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut random = Vec::with_capacity(QUEUE_DEPTHS.len());
    for (i, &qd) in QUEUE_DEPTHS.iter().enumerate() {
        let phase = 2 + i;
        progress.start(
            phase + 1,
            format!("random read qd={qd}"),
            budgets[phase],
            later(phase),
        );
        let mut lp = Loop::new(fd, qd as usize, SMALL)?;
        let deadline = Instant::now() + budgets[phase];
        let mut issued = 0u64;
        let mut lat: Vec<u64> = Vec::with_capacity(65_536);
        let t0 = Instant::now();
        lp.run(
            || {
                progress.tick();
                let must = issued < u64::from(qd);
                if issued >= RANDOM_OPS_MAX
                    || interrupted()
                    || (!must && Instant::now() >= deadline)
                {
                    return None;
                }
                issued += 1;
                Some(Op {
                    kind: OpKind::Read,
                    offset: (rng.next() % blocks) * SMALL as u64,
                    len: SMALL,
                })
            },
            |_, ns| lat.push(ns),
        )?;
        check_interrupted()?;
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        let p = percentiles_us(&mut lat);
        random.push(RandomRead {
            queue_depth: qd,
            ops: lat.len() as u64,
            iops: lat.len() as f64 / secs,
            p50_us: p.p50_us,
            p99_us: p.p99_us,
        });
    }

    // 7. fdatasync after a 4 KiB append, one at a time: like the commit
    // log, every sync also makes the grown file size durable.
    progress.start(7, "fdatasync".into(), budgets[6], Duration::ZERO);
    let mut lp = Loop::new(fd, 1, SMALL)?;
    let deadline = Instant::now() + budgets[6];
    let mut step = 0u64;
    let mut lat: Vec<u64> = Vec::with_capacity(4096);
    lp.run(
        || {
            progress.tick();
            let syncs = step / 2;
            let write_turn = step.is_multiple_of(2);
            if write_turn
                && (syncs >= SYNCS_MAX
                    || interrupted()
                    || (syncs > 0 && Instant::now() >= deadline))
            {
                return None;
            }
            step += 1;
            Some(if write_turn {
                Op {
                    kind: OpKind::Write,
                    offset: written + syncs * SMALL as u64,
                    len: SMALL,
                }
            } else {
                Op {
                    kind: OpKind::Datasync,
                    offset: 0,
                    len: 0,
                }
            })
        },
        |op, ns| {
            if op.kind == OpKind::Datasync {
                lat.push(ns);
            }
        },
    )?;
    check_interrupted()?;
    let sync = percentiles_us(&mut lat);
    progress.finish();

    let recommended = Recommended {
        commit_batch_bytes_max: recommend::commit_batch_bytes(write_bps, sync.p50_us),
        io_queue_depth_per_shard: recommend::io_queue_depth(&random),
    };
    Ok(IoProperties {
        format_version: FORMAT_VERSION,
        measured_unix_s: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        data_dir: opts.dir.display().to_string(),
        test_file_bytes: written,
        duration_s: 0.0,
        sequential: Sequential {
            block_bytes: SEQ_BLOCK as u64,
            queue_depth: SEQ_DEPTH as u32,
            write_bytes_per_s: write_bps,
            read_bytes_per_s: read_bps,
        },
        random_read: random,
        fdatasync: Fdatasync {
            count: lat.len() as u64,
            p50_us: sync.p50_us,
            p99_us: sync.p99_us,
        },
        recommended,
    })
}

/// One fdatasync through the ring, after everything else completed.
fn sync_once(lp: &mut Loop) -> Result<()> {
    let mut sent = false;
    lp.run(
        || {
            if sent {
                return None;
            }
            sent = true;
            Some(Op {
                kind: OpKind::Datasync,
                offset: 0,
                len: 0,
            })
        },
        |_, _| {},
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_refused_before_touching_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = BenchOptions {
            dir: dir.path().to_path_buf(),
            duration: Duration::from_secs(2),
            file_mib: 8,
            progress: false,
        };
        let short = BenchOptions {
            duration: Duration::from_millis(10),
            ..base.clone()
        };
        assert!(run(&short)
            .expect_err("too short")
            .to_string()
            .contains("duration"));
        let tiny = BenchOptions {
            file_mib: 1,
            ..base.clone()
        };
        assert!(run(&tiny)
            .expect_err("tiny")
            .to_string()
            .contains("file size"));
        let missing = BenchOptions {
            dir: dir.path().join("nope"),
            ..base
        };
        assert!(run(&missing)
            .expect_err("missing")
            .to_string()
            .contains("nope"));
    }

    #[test]
    fn a_short_run_measures_every_phase_and_removes_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = BenchOptions {
            dir: dir.path().to_path_buf(),
            duration: Duration::from_secs(2),
            file_mib: 8,
            progress: false,
        };
        let p = run(&opts).expect("measure");
        assert!(p.test_file_bytes >= (SEQ_DEPTH * SEQ_BLOCK) as u64);
        assert!(p.sequential.write_bytes_per_s > 0.0 && p.sequential.read_bytes_per_s > 0.0);
        let depths: Vec<u32> = p.random_read.iter().map(|r| r.queue_depth).collect();
        assert_eq!(depths, QUEUE_DEPTHS);
        assert!(p
            .random_read
            .iter()
            .all(|r| r.ops >= u64::from(r.queue_depth)));
        assert!(p.fdatasync.count >= 1);
        p.validate().expect("valid figures");
        assert!(!test_file_path(dir.path()).exists());
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
