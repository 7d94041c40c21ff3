//! Topology changes while serving: a node joining streams the ranges it
//! will own (bootstrap), a node leaving streams what it holds to the new
//! owners (decommission). Meanwhile coordinators send writes for the
//! moving ranges to the future owners too (pending replicas, see
//! [`crate::topology`]), so when the move completes nothing acknowledged
//! is missing.
//!
//! Bootstrap fetches each range from one current replica by streaming,
//! then repairs it (Merkle trees) against the other current replicas, so
//! a write the first source missed is found too. Every stream is
//! resumable after a crash of either side, throttled by
//! `stream_mib_per_s`, and counted in the shard's metrics.
//!
//! The node's own status (joining, normal, leaving, left) is saved in
//! `DATA_DIR/node-state.json`, so a restart resumes a movement.

pub mod plan;
pub mod stream;

use std::path::Path;
use std::time::Duration;

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::gossip::NodeStatus;
use crate::repair::{SegmentRepair, Throttle};
use crate::runtime::datadir::write_atomically;
use crate::runtime::metrics::bump;
use stream::{StreamState, Streamer};

/// A topology change of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Movement {
    /// Joining: fetch the ranges this node will own.
    Bootstrap,
    /// Leaving: hand every range to its new owners.
    Decommission,
}

impl Movement {
    fn name(self) -> &'static str {
        match self {
            Movement::Bootstrap => "bootstrap",
            Movement::Decommission => "decommission",
        }
    }

    /// The status the node announces while this runs.
    pub fn status(self) -> NodeStatus {
        match self {
            Movement::Bootstrap => NodeStatus::Joining,
            Movement::Decommission => NodeStatus::Leaving,
        }
    }

    /// The status once done.
    pub fn outcome(self) -> NodeStatus {
        match self {
            Movement::Bootstrap => NodeStatus::Normal,
            Movement::Decommission => NodeStatus::Left,
        }
    }
}

/// The status an earlier run of this node saved, if any.
pub fn load_node_status(data_dir: &Path) -> Result<Option<NodeStatus>> {
    let path = data_dir.join("node-state.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source: e,
            })
        }
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::DataDir {
        path: path.display().to_string(),
        reason: format!("not a node state file: {e}"),
    })?;
    let name = v["status"].as_str().unwrap_or_default();
    NodeStatus::from_name(name)
        .map(Some)
        .ok_or_else(|| Error::DataDir {
            path: path.display().to_string(),
            reason: format!("unknown node status {name:?}"),
        })
}

/// Saves this node's status (atomically: a crash leaves the old or the
/// new status).
pub fn save_node_status(data_dir: &Path, status: NodeStatus) -> std::io::Result<()> {
    let text = serde_json::json!({ "status": status.name() }).to_string();
    write_atomically(&data_dir.join("node-state.json"), text.as_bytes())
}

/// Waits (bounded) until this shard's topology shows this node in
/// `status` with a future ring, then the ring delay, so every coordinator
/// already sends the moving ranges' writes to their future owners.
async fn settle(c: &Coordinator, status: NodeStatus, ring_delay: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let topo = c.topology();
        let mine = topo.me().map(|i| topo.status(i));
        if mine == Some(status) && topo.future_ring().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "this node's status did not become {}",
                status.name()
            ));
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    glommio::timer::sleep(ring_delay).await;
    Ok(())
}

/// Runs this shard's part of `movement`: every segment, retried (bounded)
/// while a peer is unreachable.
pub async fn run_shard(
    c: &Coordinator,
    movement: Movement,
    mib_per_s: u64,
    ring_delay: Duration,
    shard_dir: &Path,
) -> Result<(), String> {
    settle(c, movement.status(), ring_delay).await?;
    let router = c.router();
    let metrics = router.metrics();
    let topo = c.topology();
    let me = topo.me().ok_or("this node is not in its own topology")?;
    let transfers = match movement {
        Movement::Bootstrap => plan::gains(&topo, me),
        Movement::Decommission => plan::handoffs(&topo, me),
    };
    let segments = plan::segments(&topo, &transfers, router.index(), router.shards());
    metrics.stream_ranges_total.set(segments.len() as u64);
    metrics.stream_ranges_done.set(0);
    let mut state = StreamState::load(shard_dir, movement.name());
    let throttle = Throttle::new(mib_per_s);
    let streamer = Streamer {
        engine: router.engine(),
        links: c.links(),
        throttle: &throttle,
        metrics,
        mode: router.engine().options().conflict,
        shard_dir,
    };
    tracing::info!(
        shard = router.index(),
        segments = segments.len(),
        movement = movement.name(),
        "streaming"
    );
    for (seg, peers) in &segments {
        let mut attempt = 0u32;
        loop {
            let outcome = match movement {
                Movement::Bootstrap => {
                    bootstrap_segment(c, &streamer, &mut state, seg, peers).await
                }
                Movement::Decommission => {
                    handoff_segment(c, &streamer, &mut state, seg, peers).await
                }
            };
            match outcome {
                Ok(()) => break,
                Err(e) if attempt < 30 => {
                    attempt += 1;
                    tracing::warn!(start = seg.start, end = seg.end, error = %e, attempt, "streaming a segment failed; retrying");
                    glommio::timer::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        bump(&metrics.stream_ranges_done);
    }
    let _ = std::fs::remove_file(StreamState::path(shard_dir));
    Ok(())
}

async fn bootstrap_segment(
    c: &Coordinator,
    streamer: &Streamer<'_>,
    state: &mut StreamState,
    seg: &crate::repair::Segment,
    sources: &[u32],
) -> Result<(), String> {
    let topo = c.topology();
    let live: Vec<&crate::topology::Member> = sources
        .iter()
        .filter_map(|&id| topo.index_of(id))
        .filter(|&i| topo.is_up(i))
        .map(|i| &topo.members()[i])
        .collect();
    let Some(first) = live.first() else {
        return Err(format!(
            "no current replica of {}..={} is up",
            seg.start, seg.end
        ));
    };
    streamer
        .pull(state, seg, first, first.shard_of(seg.start))
        .await?;
    // What the first source missed, the others have: repair against them.
    for other in &live[1..] {
        let segment = crate::repair::Segment {
            peer: other.id,
            peer_shard: other.shard_of(seg.start),
            ..seg.clone()
        };
        SegmentRepair {
            engine: streamer.engine,
            links: streamer.links,
            peer: other,
            throttle: streamer.throttle,
            metrics: streamer.metrics,
            mode: streamer.mode,
        }
        .run(&segment)
        .await?;
    }
    Ok(())
}

async fn handoff_segment(
    c: &Coordinator,
    streamer: &Streamer<'_>,
    state: &mut StreamState,
    seg: &crate::repair::Segment,
    targets: &[u32],
) -> Result<(), String> {
    let topo = c.topology();
    for &id in targets {
        let i = topo
            .index_of(id)
            .ok_or_else(|| format!("node {id} left the cluster"))?;
        if !topo.is_up(i) {
            return Err(format!("node {id}, a new owner, is down"));
        }
        let target = &topo.members()[i];
        streamer
            .push(state, seg, target, target.shard_of(seg.start))
            .await?;
    }
    Ok(())
}
