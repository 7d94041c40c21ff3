//! Anti-entropy: Merkle-tree repair between replicas.
//!
//! A repair of a node compares, for every peer it shares ranges with,
//! each [`Segment`] (an interval both replicate, within one shard of
//! each) by exchanging Merkle trees top-down and then per-key digests in
//! the leaves that differ, and exchanges only the keys that differ, in
//! both directions, merging (never overwriting). Each shard repairs its
//! own segments in a low-priority task queue, throttled, so foreground
//! requests keep their latency.
//!
//! Tombstones: a delete is only safe from resurrection if every replica
//! sees its tombstone before compaction drops it, `gc_grace_s` after the
//! delete. Hints cover short outages; for longer ones, every range must be
//! repaired at least once per `gc_grace_s`: the scheduler runs a repair
//! every `repair_interval_s`, and a node refuses to start when
//! `repair_interval_s >= gc_grace_s`.

pub mod merkle;
pub mod replica;
pub mod segments;
pub mod session;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use corekv_engine::version::wall_clock_ms;

pub use segments::Segment;
pub use session::{SegmentOutcome, SegmentRepair, Throttle};

use crate::coordinator::Coordinator;

/// What an operator asked to repair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairRequest {
    /// Only tokens in this inclusive range (default: all this node holds).
    pub range: Option<(u64, u64)>,
    /// Only against this peer (default: every peer sharing ranges).
    pub node: Option<u32>,
}

/// The node-wide repair trigger: the admin request sets it, every shard's
/// control loop notices the new epoch and repairs its own segments.
#[derive(Debug, Default)]
pub struct RepairTrigger {
    epoch: AtomicU64,
    request: Mutex<RepairRequest>,
}

impl RepairTrigger {
    /// Asks every shard to repair; returns the request's epoch.
    pub fn request(&self, req: RepairRequest) -> u64 {
        let mut r = self.request.lock().unwrap_or_else(|p| p.into_inner());
        *r = req;
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The latest request's epoch (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The latest request.
    pub fn latest(&self) -> RepairRequest {
        self.request
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Where a shard remembers when its last repair completed (so the
/// scheduler's interval survives restarts).
pub fn last_repair_path(shard_dir: &Path) -> PathBuf {
    shard_dir.join("last-repair")
}

/// Where a shard remembers when its last complete repair started: one of
/// every range against every other replica, with no segment failed or
/// skipped (a replica down counts as failed). Tombstones written before
/// that instant reached every replica; compaction may drop only those.
pub fn full_repair_path(shard_dir: &Path) -> PathBuf {
    shard_dir.join("last-full-repair")
}

/// When the shard's last complete repair started (Unix ms; 0 = never, so
/// no tombstone may be dropped yet where other replicas exist).
pub fn load_full_repair(shard_dir: &Path) -> u64 {
    std::fs::read_to_string(full_repair_path(shard_dir))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// When the shard's last repair completed (Unix ms; 0 = never or unknown).
pub fn load_last_repair(shard_dir: &Path) -> u64 {
    std::fs::read_to_string(last_repair_path(shard_dir))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Repairs this shard's segments (per `req`) against every peer that is
/// up; returns the totals. Runs to completion; failures of single
/// segments are logged and counted, not fatal.
pub async fn repair_shard(
    c: &Coordinator,
    req: &RepairRequest,
    mib_per_s: u64,
    shard_dir: &Path,
) -> SegmentOutcome {
    let router = c.router();
    let metrics = router.metrics();
    let shard = router.index();
    let topo = c.topology();
    let started = Instant::now();
    let started_ms = wall_clock_ms();
    let mut work: Vec<(usize, Segment)> = Vec::new();
    for peer in 0..topo.members().len() {
        if Some(peer) == topo.me() || req.node.is_some_and(|id| topo.members()[peer].id != id) {
            continue;
        }
        for seg in segments::segments_with(&topo, peer, router.shards(), req.range) {
            if seg.local_shard == shard {
                work.push((peer, seg));
            }
        }
    }
    metrics.repair_running.set(1);
    metrics.repair_segments_total.set(work.len() as u64);
    metrics.repair_segments_done.set(0);
    let throttle = Throttle::new(mib_per_s);
    let mut total = SegmentOutcome::default();
    let mut failed = 0u64;
    for (peer, seg) in &work {
        let member = &topo.members()[*peer];
        let outcome = if topo.is_up(*peer) {
            SegmentRepair {
                engine: router.engine(),
                links: c.links(),
                peer: member,
                throttle: &throttle,
                metrics,
                mode: router.engine().options().conflict,
            }
            .run(seg)
            .await
        } else {
            Err(format!("node {} is down", member.id))
        };
        match outcome {
            Ok(o) => {
                total.pulled += o.pulled;
                total.pushed += o.pushed;
                total.bytes += o.bytes;
            }
            Err(e) => {
                failed += 1;
                crate::runtime::metrics::bump(&metrics.repair_errors);
                tracing::warn!(shard, peer = member.id, start = seg.start, end = seg.end, error = %e, "repair of a segment failed; the next repair retries it");
            }
        }
        crate::runtime::metrics::bump(&metrics.repair_segments_done);
    }
    let now = wall_clock_ms();
    metrics.repair_last_finished_ms.set(now);
    if failed == 0 {
        let _ = crate::runtime::datadir::write_atomically(
            &last_repair_path(shard_dir),
            now.to_string().as_bytes(),
        );
        if req.range.is_none() && req.node.is_none() {
            match crate::runtime::datadir::write_atomically(
                &full_repair_path(shard_dir),
                started_ms.to_string().as_bytes(),
            ) {
                Ok(()) => total.complete_since_ms = Some(started_ms),
                Err(e) => {
                    tracing::warn!(shard, error = %e, "could not save the complete repair's time; tombstones wait for the next one")
                }
            }
        }
    }
    total.failed = failed;
    crate::runtime::metrics::bump(&metrics.repair_runs);
    metrics.repair_running.set(0);
    tracing::info!(
        shard,
        segments = work.len(),
        failed,
        pulled = total.pulled,
        pushed = total.pushed,
        bytes = total.bytes,
        ms = started.elapsed().as_millis() as u64,
        "repair finished"
    );
    total
}
