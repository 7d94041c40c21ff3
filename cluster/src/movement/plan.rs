//! Which ranges move when nodes join or leave (sans-io): compare the
//! current ring with the future one, interval by interval.

use crate::repair::segments::{split_by_shard, Segment};
use crate::ring::NodeIndex;
use crate::topology::Topology;

/// A token interval and the peers it moves from (gains) or to (handoffs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// First token.
    pub start: u64,
    /// Last token (inclusive).
    pub end: u64,
    /// Sources (for a gain: the current replicas, in preference order) or
    /// targets (for a handoff: future replicas that do not hold it now).
    pub peers: Vec<NodeIndex>,
}

/// Intervals on which both rings' preference lists are constant, with
/// (current, future) replicas. Empty when nothing is moving.
fn intervals(topo: &Topology) -> Vec<(u64, u64, Vec<NodeIndex>, Vec<NodeIndex>)> {
    let Some(future) = topo.future_ring() else {
        return Vec::new();
    };
    let mut bounds: Vec<u64> = topo
        .ring()
        .ranges()
        .iter()
        .chain(future.ranges().iter())
        .map(|&(_, end, _)| end)
        .collect();
    bounds.push(u64::MAX);
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<(u64, u64, Vec<NodeIndex>, Vec<NodeIndex>)> = Vec::new();
    let mut start = 0u64;
    for end in bounds {
        let now = topo.ring().replicas(end).to_vec();
        let next = future.replicas(end).to_vec();
        match out.last_mut() {
            Some(last) if last.2 == now && last.3 == next => last.1 = end,
            _ => out.push((start, end, now, next)),
        }
        if end == u64::MAX {
            break;
        }
        start = end + 1;
    }
    out
}

/// Ranges `me` replicates in the future ring but not now, each with the
/// current replicas to fetch it from.
pub fn gains(topo: &Topology, me: NodeIndex) -> Vec<Transfer> {
    intervals(topo)
        .into_iter()
        .filter(|(_, _, now, next)| next.contains(&me) && !now.contains(&me))
        .map(|(start, end, now, _)| Transfer {
            start,
            end,
            peers: now,
        })
        .collect()
}

/// Ranges `me` replicates now but not in the future ring, each with the
/// future replicas that lack it now (who must receive it).
pub fn handoffs(topo: &Topology, me: NodeIndex) -> Vec<Transfer> {
    intervals(topo)
        .into_iter()
        .filter(|(_, _, now, next)| now.contains(&me) && !next.contains(&me))
        .map(|(start, end, now, next)| Transfer {
            start,
            end,
            peers: next.into_iter().filter(|n| !now.contains(n)).collect(),
        })
        .collect()
}

/// The segments of `transfers` that shard `shard` (of `shards`) owns,
/// one per peer, cut at the peer's shard boundaries too.
pub fn segments(
    topo: &Topology,
    transfers: &[Transfer],
    shard: usize,
    shards: usize,
) -> Vec<(Segment, Vec<u32>)> {
    let mut out = Vec::new();
    for t in transfers {
        for (s1, e1, local_shard) in split_by_shard(t.start, t.end, shards) {
            if local_shard != shard {
                continue;
            }
            // Every peer's shard boundaries, so one segment maps to one
            // shard of each peer.
            let mut cuts = vec![(s1, e1)];
            for &p in &t.peers {
                let m = &topo.members()[p];
                cuts = cuts
                    .into_iter()
                    .flat_map(|(a, b)| split_by_shard(a, b, m.shards))
                    .map(|(a, b, _)| (a, b))
                    .collect();
            }
            for (a, b) in cuts {
                let ids: Vec<u32> = t.peers.iter().map(|&p| topo.members()[p].id).collect();
                let Some(&first) = t.peers.first() else {
                    continue;
                };
                let m = &topo.members()[first];
                out.push((
                    Segment {
                        start: a,
                        end: b,
                        local_shard,
                        peer: m.id,
                        peer_shard: m.shard_of(a),
                    },
                    ids,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{NodeStatus, PeerView};
    use crate::runtime::config::NodeConfig;

    fn view(statuses: &[NodeStatus]) -> Vec<PeerView> {
        statuses
            .iter()
            .enumerate()
            .map(|(i, &status)| {
                let id = i as u32 + 1;
                let config = NodeConfig {
                    node_id: id,
                    rack: format!("r{id}"),
                    tokens: 16,
                    ..NodeConfig::default()
                };
                crate::topology::test_peer(&config, status, true)
            })
            .collect()
    }

    fn width(ts: &[Transfer]) -> f64 {
        ts.iter()
            .map(|t| (t.end - t.start) as f64 + 1.0)
            .sum::<f64>()
            / 2f64.powi(64)
    }

    #[test]
    fn a_joining_node_gains_about_its_share_from_current_replicas() {
        use NodeStatus::*;
        let topo = Topology::from_view("c", 4, 3, &view(&[Normal, Normal, Normal, Joining]));
        let me = topo.me().expect("member");
        let gains = gains(&topo, me);
        // With 4 nodes and N = 3 a node replicates ~3/4 of the ring.
        let w = width(&gains);
        assert!((0.6..0.9).contains(&w), "gains {w}");
        for t in &gains {
            assert_eq!(t.peers.len(), 3);
            assert!(!t.peers.contains(&me));
        }
        // What the others stop replicating goes to the newcomer alone.
        for n in 0..3 {
            assert!(handoffs(&topo, n).iter().all(|t| t.peers == [me]));
        }
        // Every gained interval is owned by exactly one of 2 shards here.
        let segs = segments(&topo, &gains, 0, 2);
        let segs1 = segments(&topo, &gains, 1, 2);
        let covered: f64 = segs
            .iter()
            .chain(&segs1)
            .map(|(s, _)| (s.end - s.start) as f64 + 1.0)
            .sum::<f64>()
            / 2f64.powi(64);
        assert!((covered - w).abs() < 1e-9);
    }

    #[test]
    fn a_leaving_node_hands_everything_it_holds_to_new_replicas() {
        use NodeStatus::*;
        let topo = Topology::from_view("c", 2, 3, &view(&[Normal, Leaving, Normal, Normal]));
        let me = topo.me().expect("member");
        let out = handoffs(&topo, me);
        let held: f64 = topo.ring().ownership()[me];
        assert!(
            (width(&out) - held).abs() < 1e-9,
            "{} vs {held}",
            width(&out)
        );
        for t in &out {
            assert_eq!(t.peers.len(), 1, "one new replica per range");
            assert!(!t.peers.contains(&me));
        }
        assert!(Topology::from_view("c", 2, 3, &view(&[Normal; 4]))
            .future_ring()
            .is_none());
    }
}
