//! Operator commands (the native ADMIN request): a small JSON object
//! naming the operation, answered with JSON. See docs/PROTOCOL.md.

use serde::Deserialize;
use serde_json::json;

use crate::coordinator::Coordinator;
use crate::repair::RepairRequest;

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
    }
}
