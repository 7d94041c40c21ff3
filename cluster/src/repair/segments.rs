//! Which token intervals two nodes must agree on, cut so that each lies
//! within one shard of each (sans-io): the unit of repair and streaming.

use crate::ring::NodeIndex;
use crate::topology::Topology;

/// An interval both this node and a peer replicate, owned by one local
/// shard and one shard of the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First token.
    pub start: u64,
    /// Last token (inclusive).
    pub end: u64,
    /// The local shard that owns it.
    pub local_shard: usize,
    /// The peer's id.
    pub peer: u32,
    /// The peer's shard that owns it.
    pub peer_shard: usize,
}

/// First token of shard `i` of `shards`: `ceil(i × 2^64 / shards)`.
pub fn shard_start(i: usize, shards: usize) -> u64 {
    let s = shards.max(1) as u128;
    ((i as u128) << 64).div_ceil(s).min(u128::from(u64::MAX)) as u64
}

/// The shard of `shards` owning `token`.
pub fn shard_of(token: u64, shards: usize) -> usize {
    ((u128::from(token) * shards.max(1) as u128) >> 64) as usize
}

/// Splits `start..=end` at the shard boundaries of `shards` shards.
pub fn split_by_shard(start: u64, end: u64, shards: usize) -> Vec<(u64, u64, usize)> {
    let mut out = Vec::new();
    let (first, last) = (shard_of(start, shards), shard_of(end, shards));
    for i in first..=last {
        let lo = start.max(shard_start(i, shards));
        let hi = if i + 1 < shards.max(1) {
            end.min(shard_start(i + 1, shards) - 1)
        } else {
            end
        };
        if lo <= hi {
            out.push((lo, hi, i));
        }
    }
    out
}

/// The token intervals (inclusive, sorted, merged when adjacent) whose
/// preference lists hold both `a` and `b`, according to `topo`'s ring.
pub fn shared_ranges(topo: &Topology, a: NodeIndex, b: NodeIndex) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (start, end, replicas) in topo.ring().ranges() {
        if !(replicas.contains(&a) && replicas.contains(&b)) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(start) => last.1 = end,
            _ => out.push((start, end)),
        }
    }
    out
}

/// Segments of this node (`topo.me()`) with `peer`: the shared ranges cut
/// at both nodes' shard boundaries; optionally only inside `within`.
pub fn segments_with(
    topo: &Topology,
    peer: NodeIndex,
    local_shards: usize,
    within: Option<(u64, u64)>,
) -> Vec<Segment> {
    let Some(me) = topo.me() else {
        return Vec::new();
    };
    let peer_member = &topo.members()[peer];
    let mut out = Vec::new();
    for (start, end) in shared_ranges(topo, me, peer) {
        let (start, end) = match within {
            Some((lo, hi)) => (start.max(lo), end.min(hi)),
            None => (start, end),
        };
        if start > end {
            continue;
        }
        for (s1, e1, local_shard) in split_by_shard(start, end, local_shards) {
            for (s2, e2, peer_shard) in split_by_shard(s1, e1, peer_member.shards) {
                out.push(Segment {
                    start: s2,
                    end: e2,
                    local_shard,
                    peer: peer_member.id,
                    peer_shard,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_boundaries_match_the_owning_shard_formula() {
        for shards in [1usize, 2, 3, 7, 256] {
            for i in 0..shards {
                let s = shard_start(i, shards);
                assert_eq!(shard_of(s, shards), i, "{i} of {shards}");
                if s > 0 {
                    assert_eq!(shard_of(s - 1, shards), i - 1);
                }
            }
        }
        let parts = split_by_shard(0, u64::MAX, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].0, 0);
        assert_eq!(parts[2].1, u64::MAX);
        for w in parts.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
        }
        assert_eq!(split_by_shard(5, 9, 4), vec![(5, 9, 0)]);
    }
}
