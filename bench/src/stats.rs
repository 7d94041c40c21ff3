//! Latency histograms and counters, per operation kind.
//!
//! Latencies are recorded in nanoseconds in HDR histograms (3 significant
//! digits, 1 ns to 100 s; larger values saturate). Errors are counted
//! apart and kept out of the histograms: a fast error must not make the
//! latency look better.

use hdrhistogram::Histogram;

use crate::workload::{OpKind, OP_KINDS};

/// Highest trackable latency: 100 s in ns.
pub const MAX_LATENCY_NS: u64 = 100_000_000_000;

/// A fresh latency histogram.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant bounds are valid")
}

/// Counters and latencies of one operation kind.
#[derive(Clone, Debug)]
pub struct OpStats {
    /// Latencies of successful requests (including not-found reads).
    pub hist: Histogram<u64>,
    /// Requests answered with an error, or lost with their connection.
    pub errors: u64,
    /// Requests answered later than the timeout, or never.
    pub timeouts: u64,
    /// Reads that found no value (not errors).
    pub not_found: u64,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            hist: new_histogram(),
            errors: 0,
            timeouts: 0,
            not_found: 0,
        }
    }
}

impl OpStats {
    /// Adds another's counts.
    pub fn merge(&mut self, other: &OpStats) {
        // Same bounds on both sides, so add cannot fail; saturate if it did.
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.not_found += other.not_found;
    }

    /// Completed requests (successes + errors + timeouts never answered are
    /// not in the histogram; see [`OpStats::total`]).
    pub fn ok(&self) -> u64 {
        self.hist.len()
    }

    /// Every request accounted for.
    pub fn total(&self) -> u64 {
        self.hist.len() + self.errors
    }

    /// Clears everything.
    pub fn reset(&mut self) {
        self.hist.reset();
        self.errors = 0;
        self.timeouts = 0;
        self.not_found = 0;
    }
}

/// Statistics of every operation kind, plus failures not tied to one.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Indexed by [`OpKind::index`].
    pub ops: [OpStats; OP_KINDS],
    /// Distinct error messages seen (at most [`Stats::MAX_SAMPLES`]).
    pub error_samples: Vec<String>,
    /// Requests the generator could not send in time (open loop: it fell
    /// more than the timeout behind its schedule).
    pub unsent: u64,
}

impl Stats {
    /// Most distinct error messages kept.
    pub const MAX_SAMPLES: usize = 8;

    /// One kind's stats.
    pub fn op(&self, k: OpKind) -> &OpStats {
        &self.ops[k.index()]
    }

    /// Records a success.
    #[inline]
    pub fn record(&mut self, k: OpKind, latency_ns: u64) {
        self.ops[k.index()]
            .hist
            .saturating_record(latency_ns.max(1));
    }

    /// Notes an error message, keeping a few distinct ones.
    pub fn sample_error(&mut self, msg: &str) {
        if self.error_samples.len() < Self::MAX_SAMPLES
            && !self.error_samples.iter().any(|m| m == msg)
        {
            self.error_samples.push(msg.to_string());
        }
    }

    /// Adds another's counts.
    pub fn merge(&mut self, other: &Stats) {
        for (a, b) in self.ops.iter_mut().zip(other.ops.iter()) {
            a.merge(b);
        }
        for m in &other.error_samples {
            self.sample_error(m);
        }
        self.unsent += other.unsent;
    }

    /// All kinds merged into one.
    pub fn all(&self) -> OpStats {
        let mut t = OpStats::default();
        for o in &self.ops {
            t.merge(o);
        }
        t
    }

    /// Total errors (including timeouts never answered).
    pub fn errors(&self) -> u64 {
        self.ops.iter().map(|o| o.errors).sum()
    }

    /// Clears everything.
    pub fn reset(&mut self) {
        for o in &mut self.ops {
            o.reset();
        }
        self.error_samples.clear();
        self.unsent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_counts() {
        let mut a = Stats::default();
        a.record(OpKind::Read, 1000);
        a.record(OpKind::Read, 2000);
        a.ops[OpKind::Update.index()].errors += 1;
        a.sample_error("boom");
        a.sample_error("boom");
        let mut b = Stats::default();
        b.record(OpKind::Update, 5_000_000);
        b.record(OpKind::Read, MAX_LATENCY_NS * 10);
        b.merge(&a);
        assert_eq!(b.op(OpKind::Read).ok(), 3);
        assert_eq!(b.op(OpKind::Update).total(), 2);
        assert_eq!(b.errors(), 1);
        assert_eq!(b.error_samples, vec!["boom".to_string()]);
        assert_eq!(b.all().ok(), 4);
        assert!(b.all().hist.max() >= MAX_LATENCY_NS / 2);
    }
}
