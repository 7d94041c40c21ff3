//! Operator commands and topology changes that concern the whole node:
//! set by whichever shard received the command (or by the node at
//! start), noticed by each shard's control loop and by the gossip thread.
//! Shared by `Arc`; the request path never touches it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::gossip::NodeStatus;
use crate::movement::Movement;
use crate::repair::RepairTrigger;

/// The node's shared command cells.
#[derive(Debug, Default)]
pub struct NodeControl {
    /// Repair requests.
    pub repair: RepairTrigger,
    movement: Mutex<Option<Movement>>,
    movement_epoch: AtomicU64,
    shards_pending: AtomicUsize,
    status: Mutex<Option<NodeStatus>>,
    status_epoch: AtomicU64,
    removals: Mutex<Vec<u32>>,
    removal_epoch: AtomicU64,
    error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeControl {
    /// Starts `movement` on all `shards` shards.
    pub fn start_movement(&self, movement: Movement, shards: usize) {
        *lock(&self.movement) = Some(movement);
        *lock(&self.error) = None;
        self.shards_pending.store(shards, Ordering::Release);
        self.movement_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The movement under way and its epoch.
    pub fn movement(&self) -> (u64, Option<Movement>) {
        (
            self.movement_epoch.load(Ordering::Acquire),
            *lock(&self.movement),
        )
    }

    /// A shard finished its part; true for the last one.
    pub fn shard_done(&self) -> bool {
        self.shards_pending.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Records why a shard's part failed (shown by status).
    pub fn fail(&self, why: String) {
        *lock(&self.error) = Some(why);
    }

    /// The last failure of a movement, if any.
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    /// Asks the gossip thread to announce `status` for this node.
    pub fn announce(&self, status: NodeStatus) {
        *lock(&self.status) = Some(status);
        self.status_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The status to announce, once per request (gossip thread).
    pub fn take_announcement(&self, seen: &mut u64) -> Option<NodeStatus> {
        let epoch = self.status_epoch.load(Ordering::Acquire);
        if epoch == *seen {
            return None;
        }
        *seen = epoch;
        *lock(&self.status)
    }

    /// Asks the gossip thread to declare node `id` gone (removenode).
    pub fn remove(&self, id: u32) {
        lock(&self.removals).push(id);
        self.removal_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Nodes to declare gone (gossip thread).
    pub fn take_removals(&self, seen: &mut u64) -> Vec<u32> {
        let epoch = self.removal_epoch.load(Ordering::Acquire);
        if epoch == *seen {
            return Vec::new();
        }
        *seen = epoch;
        std::mem::take(&mut *lock(&self.removals))
    }
}
