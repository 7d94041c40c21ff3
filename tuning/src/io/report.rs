//! The human-readable results table of `corekv tune io`.

use std::fmt::Write;

use super::props::IoProperties;

/// Renders the figures and recommendations as an aligned text table.
/// Pure: the same properties always give the same text.
pub fn table(p: &IoProperties) -> String {
    let mut s = String::new();
    let mib_s = |b: f64| format!("{:.0} MiB/s", b / (1u64 << 20) as f64);
    let us = |v: f64| format!("{v:.1} us");
    let mut row = |name: String, value: String, p50: String, p99: String| {
        let _ = writeln!(s, "{name:<30} {value:>14} {p50:>11} {p99:>11}");
    };
    row("test".into(), "result".into(), "p50".into(), "p99".into());
    let seq = &p.sequential;
    row(
        format!(
            "sequential write {} KiB qd={}",
            seq.block_bytes >> 10,
            seq.queue_depth
        ),
        mib_s(seq.write_bytes_per_s),
        "-".into(),
        "-".into(),
    );
    row(
        format!(
            "sequential read {} KiB qd={}",
            seq.block_bytes >> 10,
            seq.queue_depth
        ),
        mib_s(seq.read_bytes_per_s),
        "-".into(),
        "-".into(),
    );
    for r in &p.random_read {
        row(
            format!("random read 4 KiB qd={}", r.queue_depth),
            format!("{:.0} IOPS", r.iops),
            us(r.p50_us),
            us(r.p99_us),
        );
    }
    row(
        "fdatasync after 4 KiB append".into(),
        format!("{} syncs", p.fdatasync.count),
        us(p.fdatasync.p50_us),
        us(p.fdatasync.p99_us),
    );
    let mut out = format!(
        "disk under {} ({} MiB test file, {:.1} s)\n{s}\n",
        p.data_dir,
        p.test_file_bytes >> 20,
        p.duration_s
    );
    let r = &p.recommended;
    let _ = writeln!(
        out,
        "recommended commit_batch_bytes_max   = {} ({} KiB: bytes written in one median fdatasync)",
        r.commit_batch_bytes_max,
        r.commit_batch_bytes_max >> 10
    );
    let _ = writeln!(
        out,
        "recommended io_queue_depth_per_shard = {} (deepest queue before latency outgrows IOPS)",
        r.io_queue_depth_per_shard
    );
    out
}
