//! Operator commands that concern every shard of the node (repair, and
//! later topology changes): set once by whichever shard received the
//! command, noticed by each shard's control loop. Shared by `Arc`; the
//! request path never touches it.

use crate::repair::RepairTrigger;

/// The node's shared command cells.
#[derive(Debug, Default)]
pub struct NodeControl {
    /// Repair requests.
    pub repair: RepairTrigger,
}
