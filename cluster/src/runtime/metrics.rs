//! One shard's counters of what it has done since start. Owned by the
//! shard (`Rc`, plain cells: no atomics, nothing shared across cores);
//! a snapshot travels with the shard's figures to STATUS and metrics.

use std::cell::Cell;
use std::time::Duration;

/// Kinds of client request whose latency is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// GET, MGET, EXISTS, TTL.
    Get = 0,
    /// PUT, SET, MSET, EXPIRE.
    Put = 1,
    /// DELETE, DEL.
    Delete = 2,
    /// Everything else (PING, STATUS, INFO, ...).
    Other = 3,
}

impl RequestKind {
    /// Every kind, in index order.
    pub const ALL: [RequestKind; 4] = [
        RequestKind::Get,
        RequestKind::Put,
        RequestKind::Delete,
        RequestKind::Other,
    ];

    /// The `op` label.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Get => "get",
            RequestKind::Put => "put",
            RequestKind::Delete => "delete",
            RequestKind::Other => "other",
        }
    }
}

/// Upper bounds of the latency buckets, in µs (a last bucket takes the rest).
pub const LATENCY_BOUNDS_US: [u64; 13] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
/// Buckets per histogram: the bounds plus +Inf.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Request latencies of one kind: counts per bucket (not cumulative) and
/// the sum, in µs.
#[derive(Default, Debug)]
pub struct LatencyHistogram {
    buckets: [Cell<u64>; LATENCY_BUCKETS],
    sum_us: Cell<u64>,
}

impl LatencyHistogram {
    fn record(&self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        bump(&self.buckets[i]);
        self.sum_us.set(self.sum_us.get().saturating_add(us));
    }
}

/// A copy of a [`LatencyHistogram`].
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LatencySnapshot {
    /// Requests per bucket (see [`LATENCY_BOUNDS_US`]; the last is +Inf).
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of all latencies, in µs.
    pub sum_us: u64,
}

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
    /// Creation time (Unix ms) of the oldest hint still pending, as of the
    /// last full replay pass; 0 when none is: the replication lag.
    pub hints_oldest_ms: Cell<u64>,
    /// Hints ever stored (replica writes that failed or found the node down).
    pub hints_stored: Cell<u64>,
    /// Hints delivered to their node.
    pub hints_delivered: Cell<u64>,
    /// Hints dropped as older than the hint window (anti-entropy's job then).
    pub hints_dropped: Cell<u64>,
    /// Repairs running on the shard now (0 or 1).
    pub repair_running: Cell<u64>,
    /// Segments (intervals shared with one peer) in the current or last repair.
    pub repair_segments_total: Cell<u64>,
    /// Segments of the current or last repair compared and repaired.
    pub repair_segments_done: Cell<u64>,
    /// Keys fetched from a peer by repair and merged here.
    pub repair_keys_pulled: Cell<u64>,
    /// Keys sent to a peer by repair (merged there).
    pub repair_keys_pushed: Cell<u64>,
    /// Bytes repair moved: tree hashes, digests and sibling sets.
    pub repair_bytes: Cell<u64>,
    /// Repairs completed.
    pub repair_runs: Cell<u64>,
    /// Segments whose repair failed (retried at the next run).
    pub repair_errors: Cell<u64>,
    /// When the last repair of the shard completed, Unix ms (0: never; the latest over shards when summed).
    pub repair_last_finished_ms: Cell<u64>,
    /// Ranges to stream in the current or last topology change (join, decommission, removenode).
    pub stream_ranges_total: Cell<u64>,
    /// Ranges streamed so far.
    pub stream_ranges_done: Cell<u64>,
    /// Keys streamed to or from this shard by topology changes.
    pub stream_keys: Cell<u64>,
    /// Bytes of sibling sets streamed by topology changes.
    pub stream_bytes: Cell<u64>,
    /// Internode connections refused for authentication (no or a wrong
    /// cluster-secret proof).
    pub peer_auth_refusals: Cell<u64>,
    /// Client AUTH attempts refused (unknown user or wrong password).
    pub client_auth_failures: Cell<u64>,
    /// Client requests refused for their user's role or key patterns.
    pub client_permission_refusals: Cell<u64>,
    /// Client connections closed at once: the shard's client limit was reached.
    pub connections_refused: Cell<u64>,
    /// Internode connections closed at once: the shard's internode limit was reached.
    pub peer_connections_refused: Cell<u64>,
    /// Client (native, RESP) TLS handshakes that failed or timed out.
    pub tls_handshake_failures: Cell<u64>,
    /// Internode TLS handshakes that failed or timed out.
    pub peer_tls_handshake_failures: Cell<u64>,
    /// Connections closed for a limit of their own: a request not whole
    /// within `request_read_timeout_ms`, an output buffer past twice
    /// `output_buffer_mib`, a RESP command past `query_buffer_mib`.
    pub connections_cut: Cell<u64>,
    /// Client request latencies by kind (index: [`RequestKind`]).
    pub latency: [LatencyHistogram; 4],
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
    /// See [`ShardMetrics::hints_oldest_ms`] (the minimum over shards when
    /// summed).
    pub hints_oldest_ms: u64,
    /// See [`ShardMetrics::hints_stored`].
    pub hints_stored: u64,
    /// See [`ShardMetrics::hints_delivered`].
    pub hints_delivered: u64,
    /// See [`ShardMetrics::hints_dropped`].
    pub hints_dropped: u64,
    /// See [`ShardMetrics::repair_running`].
    pub repair_running: u64,
    /// See [`ShardMetrics::repair_segments_total`].
    pub repair_segments_total: u64,
    /// See [`ShardMetrics::repair_segments_done`].
    pub repair_segments_done: u64,
    /// See [`ShardMetrics::repair_keys_pulled`].
    pub repair_keys_pulled: u64,
    /// See [`ShardMetrics::repair_keys_pushed`].
    pub repair_keys_pushed: u64,
    /// See [`ShardMetrics::repair_bytes`].
    pub repair_bytes: u64,
    /// See [`ShardMetrics::repair_runs`].
    pub repair_runs: u64,
    /// See [`ShardMetrics::repair_errors`].
    pub repair_errors: u64,
    /// See [`ShardMetrics::repair_last_finished_ms`].
    pub repair_last_finished_ms: u64,
    /// See [`ShardMetrics::stream_ranges_total`].
    pub stream_ranges_total: u64,
    /// See [`ShardMetrics::stream_ranges_done`].
    pub stream_ranges_done: u64,
    /// See [`ShardMetrics::stream_keys`].
    pub stream_keys: u64,
    /// See [`ShardMetrics::stream_bytes`].
    pub stream_bytes: u64,
    /// See [`ShardMetrics::peer_auth_refusals`].
    pub peer_auth_refusals: u64,
    /// See [`ShardMetrics::client_auth_failures`].
    pub client_auth_failures: u64,
    /// See [`ShardMetrics::client_permission_refusals`].
    pub client_permission_refusals: u64,
    /// See [`ShardMetrics::connections_refused`].
    pub connections_refused: u64,
    /// See [`ShardMetrics::peer_connections_refused`].
    pub peer_connections_refused: u64,
    /// See [`ShardMetrics::tls_handshake_failures`].
    pub tls_handshake_failures: u64,
    /// See [`ShardMetrics::peer_tls_handshake_failures`].
    pub peer_tls_handshake_failures: u64,
    /// See [`ShardMetrics::connections_cut`].
    pub connections_cut: u64,
    /// Client request latencies by kind (index: [`RequestKind`]).
    pub latency: [LatencySnapshot; 4],
}

/// Adds one to a counter.
pub fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

impl ShardMetrics {
    /// Records how long a client request of `kind` took.
    pub fn record(&self, kind: RequestKind, elapsed: Duration) {
        self.latency[kind as usize].record(elapsed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            forwards: self.forwards.get(),
            read_repairs: self.read_repairs.get(),
            replica_failures: self.replica_failures.get(),
            unavailable: self.unavailable.get(),
            timeouts: self.timeouts.get(),
            hints_pending: self.hints_pending.get(),
            hints_oldest_ms: self.hints_oldest_ms.get(),
            hints_stored: self.hints_stored.get(),
            hints_delivered: self.hints_delivered.get(),
            hints_dropped: self.hints_dropped.get(),
            repair_running: self.repair_running.get(),
            repair_segments_total: self.repair_segments_total.get(),
            repair_segments_done: self.repair_segments_done.get(),
            repair_keys_pulled: self.repair_keys_pulled.get(),
            repair_keys_pushed: self.repair_keys_pushed.get(),
            repair_bytes: self.repair_bytes.get(),
            repair_runs: self.repair_runs.get(),
            repair_errors: self.repair_errors.get(),
            repair_last_finished_ms: self.repair_last_finished_ms.get(),
            stream_ranges_total: self.stream_ranges_total.get(),
            stream_ranges_done: self.stream_ranges_done.get(),
            stream_keys: self.stream_keys.get(),
            stream_bytes: self.stream_bytes.get(),
            peer_auth_refusals: self.peer_auth_refusals.get(),
            client_auth_failures: self.client_auth_failures.get(),
            client_permission_refusals: self.client_permission_refusals.get(),
            connections_refused: self.connections_refused.get(),
            peer_connections_refused: self.peer_connections_refused.get(),
            tls_handshake_failures: self.tls_handshake_failures.get(),
            peer_tls_handshake_failures: self.peer_tls_handshake_failures.get(),
            connections_cut: self.connections_cut.get(),
            latency: std::array::from_fn(|k| LatencySnapshot {
                buckets: std::array::from_fn(|b| self.latency[k].buckets[b].get()),
                sum_us: self.latency[k].sum_us.get(),
            }),
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
        self.hints_oldest_ms = match (self.hints_oldest_ms, o.hints_oldest_ms) {
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        };
        self.hints_stored += o.hints_stored;
        self.hints_delivered += o.hints_delivered;
        self.hints_dropped += o.hints_dropped;
        self.repair_running += o.repair_running;
        self.repair_segments_total += o.repair_segments_total;
        self.repair_segments_done += o.repair_segments_done;
        self.repair_keys_pulled += o.repair_keys_pulled;
        self.repair_keys_pushed += o.repair_keys_pushed;
        self.repair_bytes += o.repair_bytes;
        self.repair_runs += o.repair_runs;
        self.repair_errors += o.repair_errors;
        self.stream_ranges_total += o.stream_ranges_total;
        self.stream_ranges_done += o.stream_ranges_done;
        self.stream_keys += o.stream_keys;
        self.stream_bytes += o.stream_bytes;
        self.peer_auth_refusals += o.peer_auth_refusals;
        self.client_auth_failures += o.client_auth_failures;
        self.client_permission_refusals += o.client_permission_refusals;
        self.connections_refused += o.connections_refused;
        self.peer_connections_refused += o.peer_connections_refused;
        self.tls_handshake_failures += o.tls_handshake_failures;
        self.peer_tls_handshake_failures += o.peer_tls_handshake_failures;
        self.connections_cut += o.connections_cut;
        self.repair_last_finished_ms = self.repair_last_finished_ms.max(o.repair_last_finished_ms);
        for (mine, theirs) in self.latency.iter_mut().zip(o.latency) {
            for (a, b) in mine.buckets.iter_mut().zip(theirs.buckets) {
                *a += b;
            }
            mine.sum_us += theirs.sum_us;
        }
    }
}
