//! Hinted handoff, the coordinator's side: writes a replica missed are
//! stored as durable hints on this shard and replayed, throttled, once
//! gossip and this shard's links say the replica is reachable again.

use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv_net::peer::{PeerRequest, PeerResponse};

use super::Coordinator;
use crate::ring::NodeIndex;
use crate::topology::Topology;

impl Coordinator {
    /// Stores, durably, the write each of `nodes` missed.
    pub(super) async fn store_hints(
        &self,
        topo: &Topology,
        nodes: &[NodeIndex],
        key: &[u8],
        set: &[u8],
    ) {
        for &node in nodes {
            let id = topo.members()[node].id;
            if let Err(e) = self.hints.store(id, key, set).await {
                // Anti-entropy is left to bring the replica up to date.
                tracing::warn!(node = id, error = %e, "could not store a hint");
            }
        }
    }

    /// Delivers hints to nodes that are reachable again, at most
    /// `hint_replay_per_s` per second, until the shard stops; runs as a
    /// background task. Each pass walks the whole store in batches.
    pub async fn run_hint_replay(self: Rc<Self>, stopping: impl Fn() -> bool) {
        const BATCH: usize = 128;
        let mut after: Option<Vec<u8>> = None;
        // The oldest hint left undelivered in the current pass.
        let mut pass_oldest_ms: Option<u64> = None;
        while !stopping() {
            if self.router.metrics().hints_pending.get() == 0 {
                self.router.metrics().hints_oldest_ms.set(0);
                pass_oldest_ms = None;
                glommio::timer::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let started = Instant::now();
            let (batch, next) = match self.hints.next_batch(after.as_deref(), BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "reading hints failed");
                    glommio::timer::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut sent = 0u32;
            for hint in batch {
                if stopping() {
                    return;
                }
                let topo = self.snapshot();
                let Some(node) = topo.index_of(hint.node_id) else {
                    note_oldest(&mut pass_oldest_ms, hint.created_ms);
                    continue; // no longer a member; the window will drop it
                };
                if !self.is_live(&topo, node) {
                    note_oldest(&mut pass_oldest_ms, hint.created_ms);
                    continue;
                }
                let member = &topo.members()[node];
                let shard = member.shard_of(corekv_engine::token_of(&hint.key));
                let req = PeerRequest::Apply {
                    key: hint.key.clone(),
                    set: hint.set.clone(),
                };
                sent += 1;
                if let Ok(PeerResponse::Applied) = self.links.call(member, shard, req).await {
                    if let Err(e) = self.hints.delivered(&hint).await {
                        tracing::warn!(error = %e, "could not delete a delivered hint");
                    }
                } else {
                    note_oldest(&mut pass_oldest_ms, hint.created_ms);
                }
            }
            // Throttle: this batch may take at least sent / rate seconds.
            let floor =
                Duration::from_secs_f64(f64::from(sent) / f64::from(self.hint_replay_per_s));
            let pause = floor.saturating_sub(started.elapsed());
            after = next;
            if after.is_none() {
                let oldest = pass_oldest_ms.take().unwrap_or(0);
                self.router.metrics().hints_oldest_ms.set(oldest);
            }
            let idle = if after.is_none() {
                Duration::from_millis(200) // a full pass: wait before the next
            } else {
                Duration::ZERO
            };
            glommio::timer::sleep(pause.max(idle)).await;
        }
    }
}

fn note_oldest(oldest_ms: &mut Option<u64>, created_ms: u64) {
    *oldest_ms = Some(oldest_ms.map_or(created_ms, |o| o.min(created_ms)));
}
