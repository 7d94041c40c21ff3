//! One shard's counters of what it has done since start. Owned by the
//! shard (`Rc`, plain cells: no atomics, nothing shared across cores);
//! a snapshot travels with the shard's figures to STATUS and metrics.

use std::cell::Cell;

/// Counters, bumped by the router, the coordinator and the hint store.
#[derive(Default, Debug)]
pub struct ShardMetrics {
    /// Data requests forwarded to another local shard.
    pub forwards: Cell<u64>,
    /// Repairs sent to stale replicas after reads.
    pub read_repairs: Cell<u64>,
    /// Replica requests that failed or timed out.
    pub replica_failures: Cell<u64>,
    /// Requests refused as unavailable.
    pub unavailable: Cell<u64>,
    /// Requests that timed out waiting for W or R replicas.
    pub timeouts: Cell<u64>,
    /// Hints waiting for their node now.
    pub hints_pending: Cell<u64>,
    /// Hints ever stored (replica writes that failed or found the node down).
    pub hints_stored: Cell<u64>,
    /// Hints delivered to their node.
    pub hints_delivered: Cell<u64>,
    /// Hints dropped as older than the hint window (anti-entropy's job then).
    pub hints_dropped: Cell<u64>,
}

/// A copy of [`ShardMetrics`] at one instant.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MetricsSnapshot {
    /// See [`ShardMetrics::forwards`].
    pub forwards: u64,
    /// See [`ShardMetrics::read_repairs`].
    pub read_repairs: u64,
    /// See [`ShardMetrics::replica_failures`].
    pub replica_failures: u64,
    /// See [`ShardMetrics::unavailable`].
    pub unavailable: u64,
    /// See [`ShardMetrics::timeouts`].
    pub timeouts: u64,
    /// See [`ShardMetrics::hints_pending`].
    pub hints_pending: u64,
    /// See [`ShardMetrics::hints_stored`].
    pub hints_stored: u64,
    /// See [`ShardMetrics::hints_delivered`].
    pub hints_delivered: u64,
    /// See [`ShardMetrics::hints_dropped`].
    pub hints_dropped: u64,
}

/// Adds one to a counter.
pub fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

impl ShardMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            forwards: self.forwards.get(),
            read_repairs: self.read_repairs.get(),
            replica_failures: self.replica_failures.get(),
            unavailable: self.unavailable.get(),
            timeouts: self.timeouts.get(),
            hints_pending: self.hints_pending.get(),
            hints_stored: self.hints_stored.get(),
            hints_delivered: self.hints_delivered.get(),
            hints_dropped: self.hints_dropped.get(),
        }
    }
}

impl std::ops::AddAssign for MetricsSnapshot {
    fn add_assign(&mut self, o: MetricsSnapshot) {
        self.forwards += o.forwards;
        self.read_repairs += o.read_repairs;
        self.replica_failures += o.replica_failures;
        self.unavailable += o.unavailable;
        self.timeouts += o.timeouts;
        self.hints_pending += o.hints_pending;
        self.hints_stored += o.hints_stored;
        self.hints_delivered += o.hints_delivered;
        self.hints_dropped += o.hints_dropped;
    }
}
