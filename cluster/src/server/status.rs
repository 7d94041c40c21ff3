//! Node figures as JSON, for `corekv status` and the TOPOLOGY request.

use corekv_engine::SyncMode;
use serde_json::json;

use crate::runtime::ops::{KvOp, KvReply};
use crate::runtime::router::{RouteError, Router};

/// The node's shard layout: what a shard-aware client needs to route.
pub fn topology_json(router: &Router) -> String {
    json!({
        "format": 1,
        "shards": router.shards(),
        "shard_port_offset": 1,
        "token_to_shard": "(xxh3_64(key) * shards) >> 64",
    })
    .to_string()
}

/// Figures of every shard (asked over the mesh) and their totals.
pub async fn status_json(router: &Router) -> Result<String, RouteError> {
    let mut shards = Vec::with_capacity(router.shards());
    let mut keys = 0u64;
    let mut mem = 0u64;
    let mut table_bytes = 0u64;
    let mut sync = String::new();
    for i in 0..router.shards() {
        let KvReply::Stats(s) = router.call_on(i, KvOp::Stats).await? else {
            continue;
        };
        keys += s.memtable_keys + s.table_entries;
        mem += s.memtable_bytes;
        table_bytes += s.table_bytes;
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
            "gets": s.gets,
            "deletes": s.deletes,
            "flushes": s.flushes,
            "compactions": s.compactions,
            "commitlog_syncs": s.log.syncs,
            "commitlog_records": s.log.records,
            "block_cache_hits": s.cache.hits,
            "block_cache_misses": s.cache.misses,
        }));
    }
    Ok(json!({
        "shards": router.shards(),
        "keys_estimate": keys,
        "memtable_bytes": mem,
        "sstable_bytes": table_bytes,
        "commitlog_sync": sync,
        "forwards_from_this_shard": router.forwards(),
        "per_shard": shards,
    })
    .to_string())
}
