//! Open-loop scheduling: request `i` of a worker is *intended* to go out
//! at `offset + i / rate`. Latency is measured from that instant, not from
//! when the request was actually written, so a stalled server (or a
//! generator that fell behind) shows up in the recorded tail instead of
//! silently slowing the request stream down — no coordinated omission.

/// A fixed-rate schedule in nanoseconds since the run's start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    period_ns: f64,
    offset_ns: u64,
}

impl Schedule {
    /// `rate` requests per second (> 0), the first at `offset_ns`.
    pub fn new(rate: f64, offset_ns: u64) -> Schedule {
        Schedule {
            period_ns: 1e9 / rate.max(1e-9),
            offset_ns,
        }
    }

    /// The schedule of worker `worker` of `workers` sharing a total `rate`:
    /// each runs at `rate / workers`, staggered so their sends interleave.
    pub fn for_worker(rate: f64, worker: usize, workers: usize) -> Schedule {
        let workers = workers.max(1);
        let per = rate / workers as f64;
        let offset = (worker as f64 * 1e9 / rate.max(1e-9)) as u64;
        Schedule::new(per, offset)
    }

    /// Intended send time of request `i`, in ns since the start.
    #[inline]
    pub fn at(&self, i: u64) -> u64 {
        self.offset_ns + (i as f64 * self.period_ns) as u64
    }

    /// How many requests are due by `now_ns` (those with `at(i) <= now`).
    pub fn due(&self, now_ns: u64) -> u64 {
        if now_ns < self.offset_ns {
            return 0;
        }
        ((now_ns - self.offset_ns) as f64 / self.period_ns) as u64 + 1
    }

    /// Requests that fit in `duration_ns`.
    pub fn count_within(&self, duration_ns: u64) -> u64 {
        if duration_ns <= self.offset_ns {
            return 0;
        }
        ((duration_ns - self.offset_ns) as f64 / self.period_ns).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced() {
        let s = Schedule::new(1000.0, 0);
        assert_eq!(s.at(0), 0);
        assert_eq!(s.at(1), 1_000_000);
        assert_eq!(s.at(1000), 1_000_000_000);
        assert_eq!(s.due(0), 1);
        assert_eq!(s.due(999_999), 1);
        assert_eq!(s.due(1_000_000), 2);
        assert_eq!(s.count_within(1_000_000_000), 1000);
    }

    #[test]
    fn workers_interleave_and_sum_to_the_rate() {
        let ws: Vec<Schedule> = (0..4).map(|w| Schedule::for_worker(4000.0, w, 4)).collect();
        let mut times: Vec<u64> = ws
            .iter()
            .flat_map(|s| (0..1000).map(move |i| s.at(i)))
            .collect();
        times.sort_unstable();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!((249_000..=251_000).contains(&gap), "gap {gap}");
        }
        let total: u64 = ws.iter().map(|s| s.count_within(1_000_000_000)).sum();
        assert_eq!(total, 4000);
    }
}
