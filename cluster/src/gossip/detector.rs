//! The phi-accrual failure detector (Hayashibara et al.; as in Cassandra):
//! instead of a fixed timeout, a suspicion level `phi` that grows with the
//! time since a node's heartbeat last advanced, scaled by how often it
//! usually advances. `phi = 8` means "with exponentially distributed
//! arrivals, a silence this long happens once in 10^8 times".
//!
//! Sans-io: fed arrival times in ms, asked at a time in ms.

use std::collections::VecDeque;

/// Arrival intervals remembered per node.
const WINDOW_MAX: usize = 100;

/// Heartbeat arrivals of one node.
#[derive(Clone, Debug)]
pub struct ArrivalWindow {
    last_ms: u64,
    intervals: VecDeque<u64>,
    sum_ms: u64,
    /// The gossip interval: the floor of the mean, so a burst of quick
    /// arrivals never makes the detector trigger-happy.
    floor_ms: u64,
}

impl ArrivalWindow {
    /// A window whose first arrival is `now_ms`.
    pub fn new(now_ms: u64, gossip_interval_ms: u64) -> ArrivalWindow {
        ArrivalWindow {
            last_ms: now_ms,
            intervals: VecDeque::with_capacity(WINDOW_MAX),
            sum_ms: 0,
            floor_ms: gossip_interval_ms.max(1),
        }
    }

    /// Records that the node's heartbeat advanced at `now_ms`.
    ///
    /// An interval far beyond the usual (the node was down or paused) is
    /// not recorded, so one outage does not blunt detection of the next.
    pub fn record(&mut self, now_ms: u64) {
        let interval = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        if interval == 0 || interval as f64 > 20.0 * self.mean_ms() {
            return;
        }
        if self.intervals.len() == WINDOW_MAX {
            if let Some(old) = self.intervals.pop_front() {
                self.sum_ms -= old;
            }
        }
        self.intervals.push_back(interval);
        self.sum_ms += interval;
    }

    /// Mean interval between arrivals, never below the gossip interval.
    pub fn mean_ms(&self) -> f64 {
        let mean = if self.intervals.is_empty() {
            self.floor_ms as f64
        } else {
            self.sum_ms as f64 / self.intervals.len() as f64
        };
        mean.max(self.floor_ms as f64)
    }

    /// Milliseconds since the last arrival.
    pub fn silence_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_ms)
    }

    /// Suspicion at `now_ms`: `-log10(P(no arrival for this long))` under
    /// exponentially distributed intervals.
    pub fn phi(&self, now_ms: u64) -> f64 {
        self.silence_ms(now_ms) as f64 / (self.mean_ms() * std::f64::consts::LN_10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_grows_with_silence_relative_to_the_usual_interval() {
        let mut w = ArrivalWindow::new(0, 100);
        for t in (100..=2000).step_by(100) {
            w.record(t);
        }
        assert!((w.mean_ms() - 100.0).abs() < 1e-9);
        assert!(w.phi(2050) < 1.0);
        // phi = 8 after 8 × ln 10 × 100 ms ≈ 1.84 s of silence.
        assert!(w.phi(2000 + 1800) < 8.0);
        assert!(w.phi(2000 + 1900) > 8.0);
    }

    #[test]
    fn quick_bursts_do_not_lower_the_mean_below_the_gossip_interval() {
        let mut w = ArrivalWindow::new(0, 200);
        for t in 1..50 {
            w.record(t);
        }
        assert_eq!(w.mean_ms(), 200.0);
    }

    #[test]
    fn an_outage_is_not_learned_as_a_usual_interval() {
        let mut w = ArrivalWindow::new(0, 100);
        for t in (100..=1000).step_by(100) {
            w.record(t);
        }
        w.record(60_000); // back after a minute
        assert!((w.mean_ms() - 100.0).abs() < 1e-9);
        assert!(w.phi(60_000 + 2000) > 8.0);
    }
}
