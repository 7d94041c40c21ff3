//! `corekv tune io` / `corekv tune host`, and how `corekv serve` takes
//! settings from an io properties file. Argument parsing and wiring only;
//! the work is in the corekv-tuning crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use corekv_cluster::NodeConfig;
use corekv_tuning::host::{self, facts::Placement, systemd};
use corekv_tuning::io::{bench, props, report};

#[derive(Subcommand)]
pub enum TuneCommand {
    /// Measure the data directory's disk (io_uring, O_DIRECT): sequential
    /// write/read bandwidth, random 4 KiB read IOPS and latency at queue
    /// depths 1, 8, 32, 128, fdatasync latency. Writes an io properties
    /// file that `corekv serve` reads.
    Io(IoArgs),
    /// Check host settings (CPU governor, THP, sysctls, rlimits,
    /// clocksource, NIC IRQ placement, io_uring); optionally apply the safe
    /// fixes and write a systemd unit and sysctl.d file.
    Host(HostArgs),
}

#[derive(Args)]
pub struct IoArgs {
    /// Data directory to measure (a test file is created in it and removed).
    #[arg(long)]
    dir: PathBuf,
    /// Where to write the io properties (default DIR/io-properties.toml).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Total measurement time in seconds, split over the seven phases.
    #[arg(long, default_value_t = bench::DEFAULT_DURATION.as_secs())]
    duration_s: u64,
    /// Size of the test file in MiB.
    #[arg(long, default_value_t = bench::DEFAULT_FILE_MIB)]
    file_mib: u64,
}

#[derive(Args)]
pub struct HostArgs {
    /// Apply the safe fixes (sysctls, THP, CPU governor) as root.
    #[arg(long)]
    apply: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Only these checks (comma-separated ids, e.g. swappiness,somaxconn).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Write corekv.service and 99-corekv.conf into this directory.
    #[arg(long)]
    emit_systemd: Option<PathBuf>,
    /// Shards the node will run (NIC IRQs are compared with their CPUs).
    #[arg(long)]
    shards: Option<usize>,
    /// CPUs the shards will be pinned to, e.g. 2,3 (also put in the unit).
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
}

pub fn run(cmd: TuneCommand) -> Result<()> {
    match cmd {
        TuneCommand::Io(a) => tune_io(a),
        TuneCommand::Host(a) => tune_host(a),
    }
}

fn tune_io(a: IoArgs) -> Result<()> {
    let out = a.out.unwrap_or_else(|| props::default_path(&a.dir));
    let opts = bench::BenchOptions {
        dir: a.dir,
        duration: Duration::from_secs(a.duration_s),
        file_mib: a.file_mib,
        progress: true,
    };
    let measured = match bench::run(&opts) {
        Ok(m) => m,
        Err(corekv_tuning::Error::Interrupted) => {
            eprintln!("corekv tune io: interrupted; the test file was removed");
            std::process::exit(130);
        }
        Err(e) => return Err(e).context("corekv tune io"),
    };
    print!("{}", report::table(&measured));
    measured.save(&out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn tune_host(a: HostArgs) -> Result<()> {
    let opts = host::HostOptions {
        placement: Placement {
            cpus: a.cpus.clone(),
            shards: a.shards,
        },
        only: a.only,
        apply: a.apply,
    };
    let checks = host::run(&opts)?;
    if a.json {
        println!("{}", host::report::json(&checks));
    } else {
        print!("{}", host::report::table(&checks));
    }
    if let Some(dir) = a.emit_systemd {
        let unit = systemd::UnitOptions {
            cpus: a.cpus,
            ..systemd::UnitOptions::default()
        };
        let paths = systemd::write_files(&dir, &unit)?;
        for p in paths {
            // stderr, so --json output stays one document.
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

/// Takes the commit-log batch bound and the per-shard read queue depth
/// from the io properties file, unless the configuration sets them. The
/// file is `config.io_properties` (must exist and be valid; "off" skips
/// it), else `data_dir/io-properties.toml` if present. An unusable file is
/// an error naming it. Returns the log line describing what was taken.
pub fn apply_io_properties(config: &mut NodeConfig) -> Result<Option<String>> {
    let (path, explicit) = match &config.io_properties {
        Some(p) if p.as_os_str() == "off" => return Ok(None),
        Some(p) => (p.clone(), true),
        None => (props::default_path(&config.data_dir), false),
    };
    if !explicit && !path.exists() {
        return Ok(None);
    }
    let p = match props::IoProperties::load(&path) {
        Ok(p) => p,
        Err(e) => {
            bail!("{e} (fix or delete it, re-run `corekv tune io`, or set io_properties = \"off\")")
        }
    };
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    if config.commit_batch_kib.is_none() {
        // A batch must hold one maximal record of the configured limits.
        let recommended_kib = p.recommended.commit_batch_bytes_max.div_ceil(1024);
        let kib = recommended_kib.max(config.commit_batch_kib_min());
        config.commit_batch_kib = Some(kib);
        taken.push(if kib > recommended_kib {
            format!(
                "commit batch {kib} KiB (recommended {} KiB, raised to hold one maximal record)",
                p.recommended.commit_batch_bytes_max >> 10
            )
        } else {
            format!("commit batch {kib} KiB")
        });
    } else {
        kept.push("commit_batch_kib");
    }
    if config.io_queue_depth.is_none() {
        let qd = p.recommended.io_queue_depth_per_shard as usize;
        config.io_queue_depth = Some(qd);
        taken.push(format!("{qd} reads in flight per shard"));
    } else {
        kept.push("io_queue_depth");
    }
    let mut line = format!("io properties from {}: ", path.display());
    line.push_str(&if taken.is_empty() {
        "nothing taken".to_string()
    } else {
        taken.join(", ")
    });
    if !kept.is_empty() {
        line.push_str(&format!("; configured {} kept", kept.join(" and ")));
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use props::{Fdatasync, IoProperties, RandomRead, Recommended, Sequential};

    fn write_props(dir: &std::path::Path, batch: u64, qd: u32) {
        let p = IoProperties {
            format_version: props::FORMAT_VERSION,
            measured_unix_s: 0,
            data_dir: dir.display().to_string(),
            test_file_bytes: 16 << 20,
            duration_s: 1.0,
            sequential: Sequential {
                block_bytes: 1 << 20,
                queue_depth: 4,
                write_bytes_per_s: 1e9,
                read_bytes_per_s: 1e9,
            },
            random_read: vec![RandomRead {
                queue_depth: 1,
                ops: 10,
                iops: 10.0,
                p50_us: 1.0,
                p99_us: 2.0,
            }],
            fdatasync: Fdatasync {
                count: 1,
                p50_us: 100.0,
                p99_us: 100.0,
            },
            recommended: Recommended {
                commit_batch_bytes_max: batch,
                io_queue_depth_per_shard: qd,
            },
        };
        p.save(&props::default_path(dir)).expect("save");
    }

    #[test]
    fn file_values_fill_unset_settings_and_explicit_ones_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            ..NodeConfig::default()
        };
        // No file: nothing changes.
        let mut c = base.clone();
        assert_eq!(apply_io_properties(&mut c).expect("no file"), None);
        assert_eq!(c, base);

        write_props(dir.path(), 8 << 20, 16);
        let mut c = base.clone();
        let line = apply_io_properties(&mut c).expect("file").expect("line");
        assert_eq!(c.commit_batch_kib, Some(8 << 10));
        assert_eq!(c.io_queue_depth, Some(16));
        assert!(line.contains("io-properties.toml"), "{line}");
        let o = c.engine_options(0).expect("engine options");
        assert_eq!(o.commit_batch_bytes_max, 8 << 20);
        assert_eq!(o.max_concurrent_reads, 16);

        // Explicit settings win.
        let mut c = NodeConfig {
            commit_batch_kib: Some(2048),
            io_queue_depth: Some(4),
            ..base.clone()
        };
        let line = apply_io_properties(&mut c).expect("file").expect("line");
        assert_eq!(
            (c.commit_batch_kib, c.io_queue_depth),
            (Some(2048), Some(4))
        );
        assert!(line.contains("kept"), "{line}");

        // A small recommendation is raised to hold one maximal record.
        write_props(dir.path(), 256 << 10, 8);
        let mut c = base.clone();
        apply_io_properties(&mut c).expect("file");
        assert_eq!(c.commit_batch_kib, Some(base.commit_batch_kib_min()));
        c.validate().expect("valid");

        // "off" ignores the file; a corrupt one is an error naming it.
        let mut c = NodeConfig {
            io_properties: Some("off".into()),
            ..base.clone()
        };
        assert_eq!(apply_io_properties(&mut c).expect("off"), None);
        std::fs::write(props::default_path(dir.path()), "format_version = 1\nx").expect("write");
        let mut c = base.clone();
        let e = apply_io_properties(&mut c).expect_err("corrupt");
        assert!(e.to_string().contains("io-properties.toml"), "{e}");
    }
}
