//! Settings derived from measured figures. Pure functions.

use super::props::RandomRead;

/// Smallest recommended commit batch: 256 KiB.
pub const BATCH_BYTES_MIN: u64 = 256 << 10;
/// Largest recommended commit batch: 16 MiB.
pub const BATCH_BYTES_MAX: u64 = 16 << 20;
/// Batches are multiples of this (the commit log's DMA alignment divides it).
pub const BATCH_GRANULE: u64 = 64 << 10;
/// Deepest per-shard read queue recommended.
pub const QUEUE_DEPTH_MAX: u32 = 128;
/// A deeper queue must add at least this share of IOPS to count as scaling.
pub const SCALING_GAIN_MIN: f64 = 1.1;

/// The commit-log batch bound: the bytes the disk writes sequentially in
/// one median fdatasync, so a batch takes about as long to write as to
/// sync. Rounded down to [`BATCH_GRANULE`] and clamped to
/// [`BATCH_BYTES_MIN`]..=[`BATCH_BYTES_MAX`]; non-finite or negative inputs
/// give the minimum. Always returns a value in that range.
pub fn commit_batch_bytes(write_bytes_per_s: f64, fdatasync_p50_us: f64) -> u64 {
    let raw = write_bytes_per_s * fdatasync_p50_us / 1e6;
    if !raw.is_finite() || raw <= 0.0 {
        return BATCH_BYTES_MIN;
    }
    let bytes = (raw.min(BATCH_BYTES_MAX as f64) as u64) / BATCH_GRANULE * BATCH_GRANULE;
    bytes.clamp(BATCH_BYTES_MIN, BATCH_BYTES_MAX)
}

/// The per-shard I/O queue depth: walking the measured depths upwards,
/// the last depth before IOPS stop scaling — the step to the next depth
/// gains less than [`SCALING_GAIN_MIN`], or p50 latency grows by a larger
/// factor than IOPS do. Points are taken in ascending depth order whatever
/// their order in the slice; points with no IOPS are ignored. Returns a
/// value in 1..=[`QUEUE_DEPTH_MAX`] (1 when nothing was measured).
pub fn io_queue_depth(points: &[RandomRead]) -> u32 {
    let mut pts: Vec<&RandomRead> = points
        .iter()
        .filter(|p| p.iops.is_finite() && p.iops > 0.0 && p.queue_depth > 0)
        .collect();
    pts.sort_by_key(|p| p.queue_depth);
    let Some(first) = pts.first() else {
        return 1;
    };
    let mut best = first.queue_depth;
    for w in pts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let gain = b.iops / a.iops;
        let latency_growth = if a.p50_us > 0.0 {
            b.p50_us / a.p50_us
        } else {
            f64::INFINITY
        };
        if gain < SCALING_GAIN_MIN || latency_growth > gain {
            break;
        }
        best = b.queue_depth;
    }
    best.clamp(1, QUEUE_DEPTH_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(queue_depth: u32, iops: f64, p50_us: f64) -> RandomRead {
        RandomRead {
            queue_depth,
            ops: 1000,
            iops,
            p50_us,
            p99_us: p50_us * 3.0,
        }
    }

    #[test]
    fn batch_is_one_fdatasync_worth_of_writing_clamped() {
        // 1 GB/s × 2 ms = 2 MB → rounded down to 64 KiB: 1 966 080.
        assert_eq!(commit_batch_bytes(1e9, 2000.0), 1_966_080);
        assert_eq!(commit_batch_bytes(100e6, 100.0), BATCH_BYTES_MIN);
        assert_eq!(commit_batch_bytes(3e9, 50_000.0), BATCH_BYTES_MAX);
        assert_eq!(commit_batch_bytes(f64::NAN, 1.0), BATCH_BYTES_MIN);
        assert_eq!(commit_batch_bytes(-1.0, 1.0), BATCH_BYTES_MIN);
        assert_eq!(commit_batch_bytes(0.0, 0.0), BATCH_BYTES_MIN);
    }

    #[test]
    fn queue_depth_stops_where_latency_outgrows_throughput() {
        // An SSD: scales to 32, then latency grows 4x for 1.2x IOPS.
        let ssd = [
            point(1, 10_000.0, 90.0),
            point(8, 70_000.0, 110.0),
            point(32, 200_000.0, 150.0),
            point(128, 240_000.0, 520.0),
        ];
        assert_eq!(io_queue_depth(&ssd), 32);
        // Unordered input gives the same answer.
        let mut shuffled = ssd.clone();
        shuffled.reverse();
        assert_eq!(io_queue_depth(&shuffled), 32);
        // A disk that does not scale at all.
        let flat = [point(1, 5_000.0, 190.0), point(8, 5_200.0, 1_500.0)];
        assert_eq!(io_queue_depth(&flat), 1);
        // Scales all the way.
        let nvme = [
            point(1, 10_000.0, 80.0),
            point(8, 79_000.0, 90.0),
            point(32, 300_000.0, 100.0),
            point(128, 900_000.0, 130.0),
        ];
        assert_eq!(io_queue_depth(&nvme), 128);
        assert_eq!(io_queue_depth(&[]), 1);
        assert_eq!(io_queue_depth(&[point(8, 0.0, 1.0)]), 1);
    }
}
