//! The cluster as one node sees it: members (addresses, shard counts,
//! racks), their liveness, and the ring built from them. Each snapshot is
//! immutable: gossip builds a new one on every change and publishes it
//! ([`SharedTopology`]); shards read it through their own
//! [`TopologyView`]. Sent to shard-aware clients as JSON (TOPOLOGY) so
//! they compute the same preference lists.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gossip::{NodeMeta, NodeStatus, PeerView};
use crate::ring::{allocate_tokens, NodeIndex, Ring, RingMember};
use crate::runtime::config::NodeConfig;

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
    /// The member gossip metadata describes.
    pub fn from_meta(m: &NodeMeta) -> Member {
        Member {
            id: m.id,
            native_addr: m.native_addr,
            peer_addr: m.peer_addr,
            shards: usize::from(m.shards),
            rack: m.rack.clone(),
            dc: m.dc.clone(),
            weight: m.weight,
            tokens: m.tokens.clone(),
        }
    }

    /// Back to gossip metadata; `None` for a shard count gossip cannot
    /// carry.
    pub fn to_meta(&self) -> Option<NodeMeta> {
        Some(NodeMeta {
            id: self.id,
            native_addr: self.native_addr,
            peer_addr: self.peer_addr,
            shards: u16::try_from(self.shards).ok()?,
            rack: self.rack.clone(),
            dc: self.dc.clone(),
            weight: self.weight,
            tokens: self.tokens.clone(),
        })
    }

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
    /// Ids of members the serving node believes down.
    #[serde(default)]
    down: Vec<u32>,
    /// Ids of members joining (not yet owning ranges).
    #[serde(default)]
    joining: Vec<u32>,
    /// Ids of members leaving (still owning ranges).
    #[serde(default)]
    leaving: Vec<u32>,
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

/// Members, their liveness, and the ring built from them: one immutable
/// snapshot of the cluster. `me` is `None` in a client.
///
/// While nodes join or leave there are two rings: the current one (normal
/// and leaving nodes own ranges; reads use it) and the future one (normal
/// and joining nodes). Writes also go to the future ring's replicas that
/// the current one lacks, the *pending* replicas, so nothing written
/// during the move is missing when it completes.
#[derive(Clone, Debug)]
pub struct Topology {
    cluster: String,
    members: Vec<Member>,
    /// Per member: the failure detector's verdict on this node.
    up: Vec<bool>,
    /// Per member: the status it announces.
    status: Vec<NodeStatus>,
    /// Per member: the generation (process start) gossip knows (0 in a
    /// client).
    generation: Vec<u64>,
    ring: Ring,
    future: Option<Ring>,
    me: Option<NodeIndex>,
    replication_factor: usize,
}

impl Topology {
    /// The snapshot of `(member, status, up)` triples: every member but
    /// those that left, ordered by id.
    fn build(
        cluster: &str,
        my_id: Option<u32>,
        replication_factor: usize,
        mut nodes: Vec<(Member, NodeStatus, bool, u64)>,
    ) -> Topology {
        nodes.retain(|(m, status, _, _)| *status != NodeStatus::Left || Some(m.id) == my_id);
        nodes.sort_by_key(|(m, _, _, _)| m.id);
        let ring_of = |owns: &dyn Fn(NodeStatus) -> bool| {
            let members = nodes
                .iter()
                .map(|(m, status, _, _)| {
                    let tokens = if owns(*status) {
                        m.tokens.clone()
                    } else {
                        Vec::new()
                    };
                    ring_member(m.id, m.weight, &m.rack, &m.dc, tokens)
                })
                .collect();
            Ring::new(members, replication_factor)
        };
        let moving = nodes
            .iter()
            .any(|(_, s, _, _)| matches!(s, NodeStatus::Joining | NodeStatus::Leaving));
        Topology {
            cluster: cluster.to_string(),
            ring: ring_of(&|s| matches!(s, NodeStatus::Normal | NodeStatus::Leaving)),
            future: moving
                .then(|| ring_of(&|s| matches!(s, NodeStatus::Normal | NodeStatus::Joining))),
            up: nodes.iter().map(|(_, _, up, _)| *up).collect(),
            status: nodes.iter().map(|(_, s, _, _)| *s).collect(),
            generation: nodes.iter().map(|(_, _, _, g)| *g).collect(),
            me: my_id.and_then(|id| nodes.iter().position(|(m, _, _, _)| m.id == id)),
            members: nodes.into_iter().map(|(m, _, _, _)| m).collect(),
            replication_factor,
        }
    }

    /// The snapshot of a gossip view.
    pub fn from_view(
        cluster: &str,
        my_id: u32,
        replication_factor: usize,
        view: &[PeerView],
    ) -> Topology {
        let nodes = view
            .iter()
            .map(|p| {
                let member = Member::from_meta(&p.state.meta);
                (member, p.state.status, p.up, p.state.generation)
            })
            .collect();
        Topology::build(cluster, Some(my_id), replication_factor, nodes)
    }

    /// The metadata this node announces: its addresses, shards, placement
    /// and `round(tokens × weight)` vnode tokens derived from its id.
    pub fn local_meta(config: &NodeConfig) -> NodeMeta {
        let mut me = [ring_member(
            config.node_id,
            config.weight,
            &config.rack,
            &config.dc,
            Vec::new(),
        )];
        allocate_tokens(&mut me, config.tokens);
        let [me] = me;
        NodeMeta {
            id: config.node_id,
            native_addr: config.native_addr,
            peer_addr: config.peer_addr,
            shards: u16::try_from(config.shard_count()).unwrap_or(u16::MAX),
            rack: config.rack.clone(),
            dc: config.dc.clone(),
            weight: config.weight,
            tokens: me.tokens,
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
        let nodes = t
            .members
            .into_iter()
            .map(|m| {
                let status = if t.joining.contains(&m.id) {
                    NodeStatus::Joining
                } else if t.leaving.contains(&m.id) {
                    NodeStatus::Leaving
                } else {
                    NodeStatus::Normal
                };
                let up = !t.down.contains(&m.id);
                (m, status, up, 0)
            })
            .collect();
        Ok(Topology::build(
            &t.cluster,
            None,
            t.replication_factor,
            nodes,
        ))
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
            down: self.ids_where(|t, i| !t.up[i]),
            joining: self.ids_where(|t, i| t.status[i] == NodeStatus::Joining),
            leaving: self.ids_where(|t, i| t.status[i] == NodeStatus::Leaving),
        })
        .unwrap_or_default()
    }

    fn ids_where(&self, pick: impl Fn(&Topology, usize) -> bool) -> Vec<u32> {
        (0..self.members.len())
            .filter(|&i| pick(self, i))
            .map(|i| self.members[i].id)
            .collect()
    }

    /// The ring after the joins and departures under way complete, when
    /// any are.
    pub fn future_ring(&self) -> Option<&Ring> {
        self.future.as_ref()
    }

    /// Replicas of `token` in the future ring that the current one lacks:
    /// writes go to them too.
    pub fn pending(&self, token: u64) -> Vec<NodeIndex> {
        let Some(future) = &self.future else {
            return Vec::new();
        };
        let now = self.ring.replicas(token);
        future
            .replicas(token)
            .iter()
            .copied()
            .filter(|n| !now.contains(n))
            .collect()
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

    /// Whether this is a single node that knows no other.
    pub fn is_standalone(&self) -> bool {
        self.members.len() == 1
    }

    /// Whether the failure detector believes member `i` up.
    pub fn is_up(&self, i: NodeIndex) -> bool {
        self.up.get(i).copied().unwrap_or(false)
    }

    /// The status member `i` announces.
    pub fn status(&self, i: NodeIndex) -> NodeStatus {
        self.status.get(i).copied().unwrap_or(NodeStatus::Normal)
    }

    /// The generation (process start, wall-clock ms) member `i` runs.
    pub fn generation(&self, i: NodeIndex) -> u64 {
        self.generation.get(i).copied().unwrap_or(0)
    }

    /// The native shard addresses that own `token` on its replicas, in
    /// preference order with the replicas believed up first (stable): where
    /// a shard-aware client sends a key's request.
    pub fn route(&self, token: u64) -> Vec<SocketAddr> {
        let mut replicas = self.ring.replicas(token).to_vec();
        replicas.sort_by_key(|&n| !self.is_up(n));
        replicas
            .iter()
            .map(|&n| {
                let m = &self.members[n];
                m.native_shard_addr(m.shard_of(token))
            })
            .collect()
    }

    /// The index of the member with id `id`.
    pub fn index_of(&self, id: u32) -> Option<NodeIndex> {
        self.members.iter().position(|m| m.id == id)
    }
}

/// The node's current topology, published by the gossip thread and read
/// by every shard. A shard checks one atomic epoch per operation and takes
/// the lock only when the epoch moved (a membership or liveness change),
/// to copy the new snapshot into its own [`TopologyView`]: the request
/// path never waits for a lock and never touches a shared reference count.
#[derive(Debug)]
pub struct SharedTopology {
    epoch: AtomicU64,
    current: Mutex<Arc<Topology>>,
}

impl SharedTopology {
    /// Starts at `initial`, epoch 1.
    pub fn new(initial: Topology) -> SharedTopology {
        SharedTopology {
            epoch: AtomicU64::new(1),
            current: Mutex::new(Arc::new(initial)),
        }
    }

    /// Replaces the snapshot; shards pick it up at their next operation.
    pub fn publish(&self, topology: Topology) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(topology);
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Topology> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// One shard's copy of the [`SharedTopology`]. An operation takes one
/// snapshot at its start and uses it throughout, so member indices stay
/// valid even if the membership changes meanwhile.
pub struct TopologyView {
    shared: Arc<SharedTopology>,
    cached: RefCell<(u64, Rc<Topology>)>,
}

impl TopologyView {
    /// A view of `shared`.
    pub fn new(shared: Arc<SharedTopology>) -> TopologyView {
        let epoch = shared.epoch();
        let topology = Rc::new((*shared.load()).clone());
        TopologyView {
            shared,
            cached: RefCell::new((epoch, topology)),
        }
    }

    /// The latest snapshot.
    pub fn current(&self) -> Rc<Topology> {
        self.refresh().0
    }

    /// The latest snapshot, and the one it replaced if it is new.
    pub fn refresh(&self) -> (Rc<Topology>, Option<Rc<Topology>>) {
        let epoch = self.shared.epoch();
        let mut cached = self.cached.borrow_mut();
        if cached.0 == epoch {
            return (cached.1.clone(), None);
        }
        let fresh = Rc::new((*self.shared.load()).clone());
        let old = std::mem::replace(&mut *cached, (epoch, fresh.clone()));
        (fresh, Some(old.1))
    }
}

/// A gossip view entry for `config`'s node, as tests build views.
#[cfg(test)]
pub(crate) fn test_peer(config: &NodeConfig, status: NodeStatus, up: bool) -> PeerView {
    PeerView {
        state: crate::gossip::EndpointState {
            generation: 1,
            heartbeat: 1,
            version: 1,
            status,
            meta: Topology::local_meta(config),
        },
        up,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes 1..=3 as gossip would show them; node 3 down.
    fn view() -> Vec<PeerView> {
        (1..=3u32)
            .map(|id| {
                let config = NodeConfig {
                    node_id: id,
                    native_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + 10 * id as u16)),
                    peer_addr: SocketAddr::from(([127, 0, 0, 1], 8000 + 10 * id as u16)),
                    shards: id as usize,
                    rack: format!("r{id}"),
                    ..NodeConfig::default()
                };
                test_peer(&config, NodeStatus::Normal, id != 3)
            })
            .collect()
    }

    #[test]
    fn clients_rebuild_the_servers_ring_and_liveness_from_json() {
        let node = Topology::from_view("c", 2, 3, &view());
        assert_eq!(node.me(), Some(1));
        let client = Topology::from_json(node.to_json().as_bytes()).expect("parses");
        assert_eq!(client.ring().fingerprint(), node.ring().fingerprint());
        assert_eq!(client.members(), node.members());
        assert_eq!(client.replication_factor(), 3);
        assert!(client.is_up(0) && client.is_up(1) && !client.is_up(2));
        let m = &client.members()[2];
        assert_eq!(m.native_shard_addr(1).port(), 7032);
        assert_eq!(m.peer_shard_addr(2).port(), 8032);
        assert!((0..1000u64).all(|t| m.shard_of(t.wrapping_mul(0x9e37_79b9_7f4a_7c15)) < 3));
        assert!(Topology::from_json(b"{}").is_err());
        // Routes try replicas believed up first.
        let token = (0..u64::MAX)
            .step_by(1 << 40)
            .find(|&t| client.ring().replicas(t).first() == Some(&2))
            .expect("a token whose first replica is node 3");
        let route = client.route(token);
        assert_eq!(route.len(), 3);
        assert_eq!(
            route[2].port(),
            7031 + client.members()[2].shard_of(token) as u16
        );
    }

    #[test]
    fn only_ring_statuses_hold_ranges_and_views_follow_publications() {
        let mut v = view();
        v[2].state.status = NodeStatus::Left;
        let t = Topology::from_view("c", 1, 3, &v);
        assert_eq!(t.members().len(), 2);
        assert_eq!(t.replication_factor(), 2);
        let shared = Arc::new(SharedTopology::new(t));
        let shard = TopologyView::new(shared.clone());
        let before = shard.current();
        shared.publish(Topology::from_view("c", 1, 3, &view()));
        assert_eq!(before.members().len(), 2, "a taken snapshot never changes");
        assert_eq!(shard.current().members().len(), 3);
    }
}
