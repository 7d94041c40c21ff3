//! Node figures as JSON, for `corekv status` and the TOPOLOGY request.

use corekv_engine::SyncMode;
use serde_json::json;

use crate::coordinator::Coordinator;
use crate::runtime::metrics::MetricsSnapshot;
use crate::runtime::ops::{ReplicaOp, ReplicaReply};
use crate::runtime::router::RouteError;

/// Figures of every shard (asked over the mesh) and their totals.
pub async fn status_json(coordinator: &Coordinator) -> Result<String, RouteError> {
    let router = coordinator.router();
    let mut shards = Vec::with_capacity(router.shards());
    let mut keys = 0u64;
    let mut mem = 0u64;
    let mut table_bytes = 0u64;
    let mut log_bytes = 0u64;
    let mut log_bytes_max = 0u64;
    let mut sync = String::new();
    // Group commit: records per fdatasync and the time one takes.
    let (mut log_records, mut log_syncs, mut log_sync_us) = (0u64, 0u64, 0u64);
    let mut totals = MetricsSnapshot::default();
    for i in 0..router.shards() {
        let ReplicaReply::Stats(shard) = router.call_on(i, ReplicaOp::Stats).await? else {
            continue;
        };
        let s = &shard.engine;
        totals += shard.metrics;
        keys += s.memtable_keys + s.table_entries;
        mem += s.memtable_bytes;
        table_bytes += s.table_bytes;
        log_bytes += s.log_bytes;
        log_bytes_max = s.log_bytes_max;
        log_records += s.log.records;
        log_syncs += s.log.syncs;
        log_sync_us += s.log.sync_time_us;
        sync = match s.sync_mode {
            Some(SyncMode::Batch) => "batch".into(),
            Some(SyncMode::Periodic { period }) => format!("periodic ({} ms)", period.as_millis()),
            None => "unknown".into(),
        };
        shards.push(json!({
            "shard": i,
            "memtable_keys": s.memtable_keys,
            "memtable_bytes": s.memtable_bytes,
            "sstables": s.tables,
            "sstable_bytes": s.table_bytes,
            "sstable_entries": s.table_entries,
            "puts": s.puts,
            "applies": s.applies,
            "gets": s.gets,
            "deletes": s.deletes,
            "flushes": s.flushes,
            "log_bound_flushes": s.log_bound_flushes,
            "compactions": s.compactions,
            // null: no other replica, gc_grace alone decides.
            "tombstone_gc_horizon_ms": (s.tombstone_horizon_ms != u64::MAX).then_some(s.tombstone_horizon_ms),
            "commitlog_live_bytes": s.log_bytes,
            "commitlog_syncs": s.log.syncs,
            "commitlog_sync_time_us": s.log.sync_time_us,
            "commitlog_batches": s.log.batches,
            "commitlog_records": s.log.records,
            "block_cache_hits": s.cache.hits,
            "block_cache_misses": s.cache.misses,
            "forwards": shard.metrics.forwards,
            "metrics": shard.metrics,
        }));
    }
    let topology = coordinator.topology();
    let ownership = topology.ring().ownership();
    let unreachable = coordinator.unreachable_nodes();
    Ok(json!({
        "shards": router.shards(),
        "keys_estimate": keys,
        "memtable_bytes": mem,
        "sstable_bytes": table_bytes,
        "commitlog_sync": sync,
        "commitlog_live_bytes": log_bytes,
        "commitlog_live_bytes_max_per_shard": log_bytes_max,
        "commitlog_syncs": log_syncs,
        "commitlog_records": log_records,
        "commitlog_sync_time_us": log_sync_us,

        "node_id": topology.me().map(|i| topology.members()[i].id),
        "status": topology.me().map(|i| topology.status(i).name()),
        "movement_error": coordinator.control().error(),
        "cluster": topology.cluster(),
        "replication_factor": topology.replication_factor(),
        "members": topology.members().iter().enumerate().map(|(i, m)| json!({
            "id": m.id,
            "native_addr": m.native_addr.to_string(),
            "peer_addr": m.peer_addr.to_string(),
            "shards": m.shards,
            "rack": m.rack,
            "dc": m.dc,
            "weight": m.weight,
            "ownership": ownership.get(i).copied().unwrap_or(0.0),
            "up": topology.is_up(i),
            "status": topology.status(i).name(),
            "unreachable_from_this_shard": unreachable.contains(&m.id),
        })).collect::<Vec<_>>(),
        "totals": totals,
        "per_shard": shards,
    })
    .to_string())
}
