//! One shard's counters of what it has done since start. Owned by the
//! shard (`Rc`, plain cells: no atomics, nothing shared across cores);
//! a snapshot travels with the shard's figures to STATUS and metrics.

use std::cell::Cell;

/// Counters, bumped by the router, the coordinator and the retry queue.
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
    /// Failed replica writes waiting for a retry now.
    pub retries_pending: Cell<u64>,
    /// Failed replica writes ever queued for a retry.
    pub retries_queued: Cell<u64>,
    /// Retries that reached their replica.
    pub retries_delivered: Cell<u64>,
    /// Retries given up (attempts used up, or the queue was full).
    pub retries_dropped: Cell<u64>,
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
    /// See [`ShardMetrics::retries_pending`].
    pub retries_pending: u64,
    /// See [`ShardMetrics::retries_queued`].
    pub retries_queued: u64,
    /// See [`ShardMetrics::retries_delivered`].
    pub retries_delivered: u64,
    /// See [`ShardMetrics::retries_dropped`].
    pub retries_dropped: u64,
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
            retries_pending: self.retries_pending.get(),
            retries_queued: self.retries_queued.get(),
            retries_delivered: self.retries_delivered.get(),
            retries_dropped: self.retries_dropped.get(),
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
        self.retries_pending += o.retries_pending;
        self.retries_queued += o.retries_queued;
        self.retries_delivered += o.retries_delivered;
        self.retries_dropped += o.retries_dropped;
    }
}
