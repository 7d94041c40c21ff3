//! Operator commands (the native ADMIN request): a small JSON object
//! naming the operation, answered with JSON. See docs/PROTOCOL.md.

use serde::Deserialize;
use serde_json::json;

use crate::coordinator::Coordinator;
use crate::gossip::NodeStatus;
use crate::movement::{self, Movement};
use crate::repair::RepairRequest;
use crate::runtime::ops::{ReplicaOp, ReplicaReply};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Command {
    /// Start an anti-entropy repair on every shard of this node.
    Repair {
        /// First token of the range to repair.
        start: Option<u64>,
        /// Last token (inclusive).
        end: Option<u64>,
        /// Only against this node.
        node: Option<u32>,
    },
    /// Hand this node's ranges to their new owners and leave the ring.
    Decommission,
    /// Declare a dead node gone for good; its ranges get new owners,
    /// which a repair on every node then fills.
    Removenode {
        /// The dead node.
        id: u32,
    },
    /// Flush every shard's memtable and merge its tables into one (what
    /// `nodetool compact` does): purges what gc_grace and the last complete
    /// repair allow at once. Answers when every shard is done.
    Compact,
}

/// Runs `command` (UTF-8 JSON); the JSON answer, or why not.
pub async fn run(coordinator: &Coordinator, command: &[u8]) -> Result<String, String> {
    let cmd: Command =
        serde_json::from_slice(command).map_err(|e| format!("admin command: {e}"))?;
    match cmd {
        Command::Repair { start, end, node } => {
            let range = match (start, end) {
                (None, None) => None,
                (Some(s), Some(e)) if s <= e => Some((s, e)),
                _ => return Err("repair range needs start <= end, both or neither".into()),
            };
            let topo = coordinator.topology();
            if let Some(id) = node {
                if topo.index_of(id).is_none_or(|i| Some(i) == topo.me()) {
                    return Err(format!("node {id} is not another member of the cluster"));
                }
            }
            let epoch = coordinator
                .control()
                .repair
                .request(RepairRequest { range, node });
            Ok(json!({ "started": "repair", "epoch": epoch }).to_string())
        }
        Command::Decommission => {
            let topo = coordinator.topology();
            let me = topo.me().ok_or("this node is not in its own topology")?;
            match topo.status(me) {
                NodeStatus::Normal => {}
                NodeStatus::Leaving => {
                    return Ok(json!({ "started": "decommission", "already": true }).to_string())
                }
                other => {
                    return Err(format!(
                        "this node is {}; only a normal node can be decommissioned",
                        other.name()
                    ))
                }
            }
            let staying = (0..topo.members().len())
                .filter(|&i| i != me && topo.status(i) == NodeStatus::Normal)
                .count();
            let n = coordinator.replication_factor_setting();
            if staying < n {
                return Err(format!(
                    "refusing to decommission: {staying} normal nodes would remain, fewer than the replication factor {n}; add a node first"
                ));
            }
            let data_dir = coordinator.data_dir();
            movement::save_node_status(&data_dir, NodeStatus::Leaving)
                .map_err(|e| format!("saving node-state.json: {e}"))?;
            let control = coordinator.control();
            control.announce(NodeStatus::Leaving);
            control.start_movement(Movement::Decommission, coordinator.router().shards());
            Ok(json!({ "started": "decommission" }).to_string())
        }
        Command::Removenode { id } => {
            let topo = coordinator.topology();
            let i = topo
                .index_of(id)
                .ok_or_else(|| format!("node {id} is not a member of the cluster"))?;
            if Some(i) == topo.me() {
                return Err("a node cannot remove itself; use decommission".into());
            }
            if topo.is_up(i) {
                return Err(format!(
                    "node {id} is up; decommission it instead (removenode is for nodes dead for good)"
                ));
            }
            coordinator.control().remove(id);
            Ok(json!({ "started": "removenode", "id": id }).to_string())
        }
        Command::Compact => {
            let router = coordinator.router();
            let mut tables = 0u64;
            let mut bytes = 0u64;
            for shard in 0..router.shards() {
                let reply = router
                    .call_on(shard, ReplicaOp::Compact)
                    .await
                    .map_err(|e| format!("compacting shard {shard}: {e}"))?;
                if let ReplicaReply::Stats(s) = reply {
                    tables += s.engine.tables;
                    bytes += s.engine.table_bytes;
                }
            }
            Ok(
                json!({ "compacted": router.shards(), "sstables": tables, "sstable_bytes": bytes })
                    .to_string(),
            )
        }
    }
}
