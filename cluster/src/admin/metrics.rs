//! Prometheus text exposition of the shards' latest reports (sans-io:
//! reports in, text out).

use std::fmt::Write as _;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::gossip::GossipStats;
use crate::runtime::metrics::{RequestKind, LATENCY_BOUNDS_US};

use super::ShardReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    shard: String,
    op: String,
}

/// A histogram copied from a shard's snapshot (prometheus-client's own
/// histogram only observes; this one is set). The lock is taken only
/// while a scrape renders, on the control thread.
#[derive(Debug, Default)]
struct SnapshotHistogram(std::sync::Mutex<HistogramParts>);

/// Sum (seconds), count, and per-bucket counts with their upper bounds.
type HistogramParts = (f64, u64, Vec<(f64, u64)>);

impl TypedMetric for SnapshotHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let guard = self.0.lock().map_err(|_| std::fmt::Error)?;
        let (sum, count, buckets) = &*guard;
        encoder.encode_histogram::<()>(*sum, *count, buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One metric family filled from every shard's report.
fn counter(
    registry: &mut Registry,
    name: &str,
    help: &str,
    reports: &[ShardReport],
    value: impl Fn(&ShardReport) -> u64,
) {
    let family = Family::<ShardLabel, Counter>::default();
    for r in reports {
        family
            .get_or_create(&ShardLabel {
                shard: r.shard.to_string(),
            })
            .inc_by(value(r));
    }
    registry.register(name, help, family);
}

fn gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
    reports: &[ShardReport],
    value: impl Fn(&ShardReport) -> u64,
) {
    let family = Family::<ShardLabel, Gauge>::default();
    for r in reports {
        family
            .get_or_create(&ShardLabel {
                shard: r.shard.to_string(),
            })
            .set(i64::try_from(value(r)).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

/// Renders the reports (one per shard that has reported) and whether the
/// node is ready as Prometheus text.
pub fn render(reports: &[ShardReport], ready: bool, gossip: &GossipStats) -> String {
    let mut registry = Registry::with_prefix("corekv");
    let ops = Family::<OpLabel, Counter>::default();
    for r in reports {
        for (op, n) in [
            ("get", r.engine.gets),
            ("put", r.engine.puts),
            ("delete", r.engine.deletes),
            ("apply", r.engine.applies),
        ] {
            ops.get_or_create(&OpLabel {
                shard: r.shard.to_string(),
                op: op.into(),
            })
            .inc_by(n);
        }
    }
    registry.register(
        "engine_operations",
        "Storage operations completed by a shard's engine (apply = a replica merge: every replicated write, repair and hint)",
        ops,
    );
    let latency = Family::<OpLabel, SnapshotHistogram>::default();
    for r in reports {
        for kind in RequestKind::ALL {
            let h = &r.metrics.latency[kind as usize];
            let bounds = LATENCY_BOUNDS_US
                .iter()
                .map(|&us| us as f64 / 1e6)
                .chain([f64::MAX]);
            let buckets: Vec<(f64, u64)> = bounds.zip(h.buckets).collect();
            let count = h.buckets.iter().sum();
            let metric = latency.get_or_create(&OpLabel {
                shard: r.shard.to_string(),
                op: kind.name().into(),
            });
            if let Ok(mut m) = metric.0.lock() {
                *m = (h.sum_us as f64 / 1e6, count, buckets);
            };
        }
    }
    registry.register(
        "request_duration_seconds",
        "Client request latency on the shard that received it (coordination included)",
        latency,
    );
    let e = |f: fn(&ShardReport) -> u64| f;
    counter(
        &mut registry,
        "commitlog_syncs",
        "fdatasync calls on the commit log",
        reports,
        e(|r| r.engine.log.syncs),
    );
    counter(
        &mut registry,
        "commitlog_sync_time_microseconds",
        "Time spent in commit-log fdatasync",
        reports,
        e(|r| r.engine.log.sync_time_us),
    );
    counter(
        &mut registry,
        "commitlog_batches",
        "Group-commit batches written",
        reports,
        e(|r| r.engine.log.batches),
    );
    counter(
        &mut registry,
        "commitlog_records",
        "Records written to the commit log (records / batches = batch size)",
        reports,
        e(|r| r.engine.log.records),
    );
    counter(
        &mut registry,
        "commitlog_bytes",
        "Bytes written to commit-log segments",
        reports,
        e(|r| r.engine.log.bytes),
    );
    gauge(
        &mut registry,
        "memtable_bytes",
        "Approximate bytes in the memtables",
        reports,
        e(|r| r.engine.memtable_bytes),
    );
    gauge(
        &mut registry,
        "commitlog_live_bytes",
        "Bytes of live commit-log segments (a flush starts at commitlog_total_mib)",
        reports,
        e(|r| r.engine.log_bytes),
    );
    gauge(
        &mut registry,
        "memtable_keys",
        "Keys in the memtables",
        reports,
        e(|r| r.engine.memtable_keys),
    );
    gauge(
        &mut registry,
        "sstable_bytes",
        "Bytes of live SSTables",
        reports,
        e(|r| r.engine.table_bytes),
    );
    gauge(
        &mut registry,
        "sstables",
        "Live SSTables (size-tiered compaction backlog grows with it)",
        reports,
        e(|r| r.engine.tables),
    );
    counter(
        &mut registry,
        "flushes",
        "Memtable flushes",
        reports,
        e(|r| r.engine.flushes),
    );
    counter(
        &mut registry,
        "log_bound_flushes",
        "Memtable flushes started by the commit log's size (commitlog_total_mib), not a full memtable",
        reports,
        e(|r| r.engine.log_bound_flushes),
    );
    counter(
        &mut registry,
        "compactions",
        "Compactions",
        reports,
        e(|r| r.engine.compactions),
    );
    counter(
        &mut registry,
        "compacted_bytes",
        "Table bytes written by compactions",
        reports,
        e(|r| r.engine.compacted_bytes),
    );
    counter(
        &mut registry,
        "write_stalls",
        "Times a writer waited for memtable room",
        reports,
        e(|r| r.engine.write_stalls),
    );
    counter(
        &mut registry,
        "sibling_warnings",
        "Writes that left a key with at least a quarter of max_siblings versions",
        reports,
        e(|r| r.engine.sibling_warnings),
    );
    counter(
        &mut registry,
        "clock_refusals",
        "Requests refused because a clock reading in them was further ahead than max_clock_skew_ms",
        reports,
        e(|r| r.engine.clock_refusals),
    );
    counter(
        &mut registry,
        "block_cache_hits",
        "Block-cache lookups that hit",
        reports,
        e(|r| r.engine.cache.hits),
    );
    counter(
        &mut registry,
        "block_cache_misses",
        "Block-cache lookups that read the disk",
        reports,
        e(|r| r.engine.cache.misses),
    );
    counter(
        &mut registry,
        "forwards",
        "Requests forwarded to another shard of this node",
        reports,
        e(|r| r.metrics.forwards),
    );
    counter(
        &mut registry,
        "read_repairs",
        "Repairs sent to stale replicas after reads",
        reports,
        e(|r| r.metrics.read_repairs),
    );
    counter(
        &mut registry,
        "replica_failures",
        "Replica requests that failed or timed out",
        reports,
        e(|r| r.metrics.replica_failures),
    );
    counter(
        &mut registry,
        "unavailable",
        "Requests refused: too few replicas up",
        reports,
        e(|r| r.metrics.unavailable),
    );
    counter(
        &mut registry,
        "timeouts",
        "Requests that timed out waiting for replicas",
        reports,
        e(|r| r.metrics.timeouts),
    );
    counter(
        &mut registry,
        "hints_stored",
        "Hints stored for replicas that missed a write",
        reports,
        e(|r| r.metrics.hints_stored),
    );
    counter(
        &mut registry,
        "hints_delivered",
        "Hints handed to their replica",
        reports,
        e(|r| r.metrics.hints_delivered),
    );
    counter(
        &mut registry,
        "hints_dropped",
        "Hints dropped (older than the hint window, or over the cap)",
        reports,
        e(|r| r.metrics.hints_dropped),
    );
    for (name, help, value) in [
        (
            "repair_keys_pulled",
            "Keys anti-entropy fetched from a peer and merged here",
            e(|r| r.metrics.repair_keys_pulled),
        ),
        (
            "repair_keys_pushed",
            "Keys anti-entropy sent to a peer",
            e(|r| r.metrics.repair_keys_pushed),
        ),
        (
            "repair_bytes",
            "Bytes anti-entropy exchanged (tree hashes, digests, sibling sets)",
            e(|r| r.metrics.repair_bytes),
        ),
        (
            "repair_runs",
            "Repairs completed",
            e(|r| r.metrics.repair_runs),
        ),
        (
            "repair_segment_errors",
            "Segments whose repair failed (retried by the next repair)",
            e(|r| r.metrics.repair_errors),
        ),
        (
            "stream_keys",
            "Keys streamed by bootstrap or decommission",
            e(|r| r.metrics.stream_keys),
        ),
        (
            "stream_bytes",
            "Bytes streamed by bootstrap or decommission",
            e(|r| r.metrics.stream_bytes),
        ),
        (
            "peer_auth_refusals",
            "Internode connections refused for authentication (HELLO without a challenge, or a wrong cluster-secret proof)",
            e(|r| r.metrics.peer_auth_refusals),
        ),
        (
            "client_auth_failures",
            "Client AUTH attempts refused: unknown user or wrong password (RESP WRONGPASS, native UNAUTHENTICATED)",
            e(|r| r.metrics.client_auth_failures),
        ),
        (
            "client_permission_refusals",
            "Client requests refused for their user's role or key patterns (RESP NOPERM, native FORBIDDEN)",
            e(|r| r.metrics.client_permission_refusals),
        ),
        (
            "connections_refused",
            "Client connections closed at once because the shard's client connection limit was reached",
            e(|r| r.metrics.connections_refused),
        ),
        (
            "peer_connections_refused",
            "Internode connections closed at once because the shard's internode connection limit was reached",
            e(|r| r.metrics.peer_connections_refused),
        ),
        (
            "tls_handshake_failures",
            "Client TLS handshakes (native, RESP) that failed or did not finish within tls_handshake_timeout_ms",
            e(|r| r.metrics.tls_handshake_failures),
        ),
        (
            "peer_tls_handshake_failures",
            "Internode TLS handshakes that failed (no or a wrong certificate) or did not finish within tls_handshake_timeout_ms",
            e(|r| r.metrics.peer_tls_handshake_failures),
        ),
        (
            "connections_cut",
            "Connections closed for a bound: a request not whole within request_read_timeout_ms, answers unread past twice output_buffer_mib, or a RESP command past query_buffer_mib",
            e(|r| r.metrics.connections_cut),
        ),
    ] {
        counter(&mut registry, name, help, reports, value);
    }
    for (name, help, value) in [
        (
            "repair_running",
            "1 while the shard runs a repair",
            e(|r| r.metrics.repair_running),
        ),
        (
            "repair_segments_remaining",
            "Segments the running (or last) repair has yet to compare",
            e(|r| {
                r.metrics
                    .repair_segments_total
                    .saturating_sub(r.metrics.repair_segments_done)
            }),
        ),
        (
            "repair_last_finished_timestamp_seconds",
            "When the shard's last repair finished (Unix time; 0 = never since start)",
            e(|r| r.metrics.repair_last_finished_ms / 1000),
        ),
        (
            "stream_ranges_remaining",
            "Segments a bootstrap or decommission has yet to stream",
            e(|r| {
                r.metrics
                    .stream_ranges_total
                    .saturating_sub(r.metrics.stream_ranges_done)
            }),
        ),
    ] {
        gauge(&mut registry, name, help, reports, value);
    }
    gauge(
        &mut registry,
        "hints_pending",
        "Hints waiting for their replica",
        reports,
        e(|r| r.metrics.hints_pending),
    );
    gauge(
        &mut registry,
        "shard_busy_microseconds",
        "Time the shard's executor spent running tasks",
        reports,
        e(|r| r.busy_us),
    );
    let now_ms = corekv_engine::version::wall_clock_ms();
    gauge(
        &mut registry,
        "hints_oldest_age_seconds",
        "Age of the oldest hint still waiting for its replica (replication lag; 0 when none)",
        reports,
        |r| match r.metrics.hints_oldest_ms {
            0 => 0,
            t => now_ms.saturating_sub(t) / 1000,
        },
    );
    gossip_metrics(&mut registry, gossip);
    let lost = Counter::<u64>::default();
    lost.inc_by(super::LOG_LINES_LOST.load(std::sync::atomic::Ordering::Relaxed));
    registry.register(
        "log_lines_lost",
        "Log lines this process could not write because its stderr refused them (full disk, closed pipe)",
        lost,
    );
    for (name, help, value) in [
        (
            "users_reloads",
            "Users file reloads that replaced the user table (SIGHUP or a changed file)",
            &crate::auth::reload::USERS_RELOADS,
        ),
        (
            "users_reload_failures",
            "Users file reloads that failed (parse error, bad hash) and kept the previous users",
            &crate::auth::reload::USERS_RELOAD_FAILURES,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(value.load(std::sync::atomic::Ordering::Relaxed));
        registry.register(name, help, c);
    }
    let ready_gauge = Gauge::<i64>::default();
    ready_gauge.set(i64::from(ready));
    registry.register("ready", "1 when every shard is serving", ready_gauge);
    let mut out = String::new();
    if encode(&mut out, &registry).is_err() {
        let _ = writeln!(out, "# encoding failed");
    }
    out
}

/// The gossip thread's figures (node-wide, not per shard).
fn gossip_metrics(registry: &mut Registry, g: &GossipStats) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    for (name, help, value) in [
        (
            "gossip_rounds",
            "Gossip rounds run by this node",
            load(&g.rounds),
        ),
        (
            "gossip_state_changes",
            "Failure-detector verdict changes seen by this node (a node marked down, or up again)",
            load(&g.state_changes),
        ),
        (
            "gossip_membership_changes",
            "Nodes that joined, restarted or changed status, as seen by this node",
            load(&g.membership_changes),
        ),
        (
            "gossip_rejected_datagrams",
            "Gossip datagrams dropped as malformed, damaged, unauthenticated, replayed or from another cluster",
            load(&g.rejected),
        ),
        (
            "gossip_unauthenticated_datagrams",
            "Gossip datagrams dropped for authentication: no MAC although the cluster has a secret, a wrong MAC, or a MAC this node cannot check",
            load(&g.unauthenticated),
        ),
        (
            "gossip_replayed_datagrams",
            "Authenticated gossip datagrams dropped as replayed or stale (stamp not above the sender's last, or over 60 s off this node's clock)",
            load(&g.replays),
        ),
        (
            "gossip_trimmed_replies",
            "Gossip replies cut to the size of their request because the sender is not a known member (no amplification)",
            load(&g.replies_trimmed),
        ),
        (
            "gossip_members_refused",
            "News of new members dropped because the view already holds the most members a node keeps",
            load(&g.members_refused),
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        registry.register(name, help, c);
    }
    let trips = load(&g.round_trips);
    let mean_s = if trips == 0 {
        0.0
    } else {
        load(&g.round_trip_us_sum) as f64 / trips as f64 / 1e6
    };
    for (name, help, value) in [
        (
            "gossip_round_trip_seconds_last",
            "The last gossip SYN to ACK round trip",
            load(&g.round_trip_us_last) as f64 / 1e6,
        ),
        (
            "gossip_round_trip_seconds_mean",
            "Mean gossip SYN to ACK round trip since start",
            mean_s,
        ),
    ] {
        let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
    let members = Family::<StateLabel, Gauge>::default();
    members
        .get_or_create(&StateLabel { state: "up".into() })
        .set(load(&g.members_up) as i64);
    members
        .get_or_create(&StateLabel {
            state: "down".into(),
        })
        .set(load(&g.members_down) as i64);
    registry.register(
        "cluster_members",
        "Cluster members by the failure detector's verdict, as this node sees them",
        members,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}
