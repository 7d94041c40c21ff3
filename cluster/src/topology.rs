//! The cluster as one node sees it: members (addresses, shard counts,
//! racks) and the ring built from them. Immutable; shared by every shard
//! of the node behind an `Arc`, and sent to shard-aware clients as JSON
//! (TOPOLOGY) so they compute the same preference lists.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ring::{allocate_tokens, NodeIndex, Ring, RingMember};
use crate::runtime::config::{MemberConfig, NodeConfig};

/// Version of the TOPOLOGY JSON layout.
pub const TOPOLOGY_FORMAT: u32 = 2;

/// One member with everything a coordinator or client needs to reach it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Stable node id.
    pub id: u32,
    /// Native client address; shard `i` listens on `port + 1 + i`.
    pub native_addr: SocketAddr,
    /// Internode address; shard `i` listens on `port + i`.
    pub peer_addr: SocketAddr,
    /// Shard count.
    pub shards: usize,
    /// Rack.
    pub rack: String,
    /// Data centre.
    pub dc: String,
    /// Capacity weight.
    pub weight: f64,
    /// Vnode tokens.
    pub tokens: Vec<u64>,
}

impl Member {
    /// The shard of this member that owns `token`.
    pub fn shard_of(&self, token: u64) -> usize {
        ((u128::from(token) * self.shards as u128) >> 64) as usize
    }

    /// The native address of shard `shard` (for shard-aware clients).
    pub fn native_shard_addr(&self, shard: usize) -> SocketAddr {
        let mut a = self.native_addr;
        a.set_port(a.port().wrapping_add(1 + shard as u16));
        a
    }

    /// The internode address of shard `shard`.
    pub fn peer_shard_addr(&self, shard: usize) -> SocketAddr {
        let mut a = self.peer_addr;
        a.set_port(a.port().wrapping_add(shard as u16));
        a
    }
}

/// The wire form of a topology (TOPOLOGY response body).
#[derive(Debug, Serialize, Deserialize)]
struct TopologyJson {
    format: u32,
    cluster: String,
    node_id: u32,
    replication_factor: usize,
    members: Vec<Member>,
}

fn ring_member(id: u32, weight: f64, rack: &str, dc: &str, tokens: Vec<u64>) -> RingMember {
    RingMember {
        id,
        weight,
        rack: rack.to_string(),
        dc: dc.to_string(),
        tokens,
    }
}

/// Members and ring. `me` is `None` in a client.
#[derive(Debug)]
pub struct Topology {
    cluster: String,
    members: Vec<Member>,
    ring: Ring,
    me: Option<NodeIndex>,
    replication_factor: usize,
}

impl Topology {
    /// The topology a node starts with: its configured members (or itself
    /// alone), tokens allocated, ring built.
    pub fn from_config(config: &NodeConfig) -> Topology {
        let members = config.membership();
        let n = if config.members.is_empty() {
            1
        } else {
            config.replication_factor
        };
        let me = members.iter().position(|m| m.id == config.node_id);
        Topology::build(config.cluster_name.clone(), members, config.tokens, n, me)
    }

    fn build(
        cluster: String,
        configured: Vec<MemberConfig>,
        tokens_per_weight: u32,
        n: usize,
        me: Option<NodeIndex>,
    ) -> Topology {
        let mut ring_members: Vec<RingMember> = configured
            .iter()
            .map(|m| ring_member(m.id, m.weight, &m.rack, &m.dc, Vec::new()))
            .collect();
        allocate_tokens(&mut ring_members, tokens_per_weight);
        let members = configured
            .into_iter()
            .zip(&ring_members)
            .map(|(m, r)| Member {
                id: m.id,
                native_addr: m.native_addr,
                peer_addr: m.peer_addr,
                shards: m.shards,
                rack: m.rack,
                dc: m.dc,
                weight: m.weight,
                tokens: r.tokens.clone(),
            })
            .collect();
        Topology {
            cluster,
            members,
            ring: Ring::new(ring_members, n),
            me,
            replication_factor: n,
        }
    }

    /// Parses a TOPOLOGY response (what shard-aware clients do).
    pub fn from_json(bytes: &[u8]) -> Result<Topology> {
        let t: TopologyJson = serde_json::from_slice(bytes)
            .map_err(|e| Error::Config(format!("topology JSON: {e}")))?;
        if t.format != TOPOLOGY_FORMAT {
            return Err(Error::Config(format!(
                "topology format {} is not {TOPOLOGY_FORMAT}",
                t.format
            )));
        }
        if t.members.is_empty() || t.members.iter().any(|m| m.shards == 0) {
            return Err(Error::Config("topology lists no usable member".into()));
        }
        let ring_members = t
            .members
            .iter()
            .map(|m| ring_member(m.id, m.weight, &m.rack, &m.dc, m.tokens.clone()))
            .collect();
        Ok(Topology {
            cluster: t.cluster,
            ring: Ring::new(ring_members, t.replication_factor),
            members: t.members,
            me: None,
            replication_factor: t.replication_factor,
        })
    }

    /// The TOPOLOGY response body.
    pub fn to_json(&self) -> String {
        let me = self.me.map_or(0, |i| self.members[i].id);
        serde_json::to_string(&TopologyJson {
            format: TOPOLOGY_FORMAT,
            cluster: self.cluster.clone(),
            node_id: me,
            replication_factor: self.replication_factor,
            members: self.members.clone(),
        })
        .unwrap_or_default()
    }

    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Every member, in configuration order (indices match the ring's).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// This node's index, on a node.
    pub fn me(&self) -> Option<NodeIndex> {
        self.me
    }

    /// Replicas per key in effect (configured N capped at the member count).
    pub fn replication_factor(&self) -> usize {
        self.ring.replication_factor()
    }

    /// Whether this is a single node without configured members.
    pub fn is_standalone(&self) -> bool {
        self.members.len() == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: u32) -> NodeConfig {
        let member = |id: u32| MemberConfig {
            id,
            native_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + 10 * id as u16)),
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 8000 + 10 * id as u16)),
            shards: id as usize,
            rack: format!("r{id}"),
            dc: "dc1".into(),
            weight: 1.0,
        };
        NodeConfig {
            node_id: id,
            members: (1..=3).map(member).collect(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn clients_rebuild_the_servers_ring_from_json() {
        let node = Topology::from_config(&config(2));
        assert_eq!(node.me(), Some(1));
        let client = Topology::from_json(node.to_json().as_bytes()).expect("parses");
        assert_eq!(client.ring().fingerprint(), node.ring().fingerprint());
        assert_eq!(client.members(), node.members());
        assert_eq!(client.replication_factor(), 3);
        let m = &client.members()[2];
        assert_eq!(m.native_shard_addr(1).port(), 7032);
        assert_eq!(m.peer_shard_addr(2).port(), 8032);
        assert!((0..1000u64).all(|t| m.shard_of(t.wrapping_mul(0x9e37_79b9_7f4a_7c15)) < 3));
        assert!(Topology::from_json(b"{}").is_err());
    }
}
