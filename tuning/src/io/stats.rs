//! Latency percentiles over recorded samples.

/// p50 and p99 of a set of latency samples, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

/// Nearest-rank percentile `p` (0..=100) of ascending `sorted` samples;
/// 0 for no samples. Never panics.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts nanosecond samples in place and returns their p50 and p99 in
/// microseconds (zeros for no samples).
pub fn percentiles_us(samples_ns: &mut [u64]) -> Percentiles {
    samples_ns.sort_unstable();
    Percentiles {
        p50_us: percentile(samples_ns, 50.0) as f64 / 1000.0,
        p99_us: percentile(samples_ns, 99.0) as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 99.0), 7);
        let mut ns = vec![3000, 1000, 2000];
        let p = percentiles_us(&mut ns);
        assert_eq!(p.p50_us, 2.0);
        assert_eq!(p.p99_us, 3.0);
    }
}
