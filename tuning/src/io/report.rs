//! The human-readable results table of `corekv tune io`.

use std::fmt::Write;

use super::props::IoProperties;

/// Renders the figures and recommendations as an aligned text table.
/// Pure: the same properties always give the same text.
pub fn table(p: &IoProperties) -> String {
    let mut s = String::new();
    let mib = |b: f64| b / (1u64 << 20) as f64;
    let _ = writeln!(
        s,
        "disk under {} ({} MiB test file, {:.1} s)",
        p.data_dir,
        p.test_file_bytes >> 20,
        p.duration_s
    );
    let _ = writeln!(s, "{:<26} {:>12} {:>12} {:>12}", "test", "throughput", "p50", "p99");
    let _ = writeln!(
        s,
        "{:<26} {:>8.0} MiB/s {:>12} {:>12}",
        format!("sequential write {} KiB qd={}", p.sequential.block_bytes >> 10, p.sequential.queue_depth),
        mib(p.sequential.write_bytes_per_s),
        "-",
        "-"
    );
    let _ = writeln!(
        s,
        "{:<26} {:>8.0} MiB/s {:>12} {:>12}",
        format!("sequential read {} KiB qd={}", p.sequential.block_bytes >> 10, p.sequential.queue_depth),
        mib(p.sequential.read_bytes_per_s),
        "-",
        "-"
    );
    for r in &p.random_read {
        let _ = writeln!(
            s,
            "{:<26} {:>9.0} IOPS {:>9.1} us {:>9.1} us",
            format!("random read 4 KiB qd={}", r.queue_depth),
            r.iops,
            r.p50_us,
            r.p99_us
        );
    }
    let _ = writeln!(
        s,
        "{:<26} {:>9} syncs {:>8.1} us {:>9.1} us",
        "fdatasync after 4 KiB",
        p.fdatasync.count,
        p.fdatasync.p50_us,
        p.fdatasync.p99_us
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "recommended commit_batch_bytes_max   = {} ({} KiB)",
        p.recommended.commit_batch_bytes_max,
        p.recommended.commit_batch_bytes_max >> 10
    );
    let _ = writeln!(
        s,
        "recommended io_queue_depth_per_shard = {}",
        p.recommended.io_queue_depth_per_shard
    );
    s
}
