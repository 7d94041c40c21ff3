//! What gossip spreads about each node: its metadata (addresses, shards,
//! placement, tokens), the status it announces, and the counters that let
//! every receiver tell newer information from older.
//!
//! Ordering: a node's state is identified by `(generation, version)` for
//! its metadata and `(generation, heartbeat)` for its liveness. The
//! generation is the wall-clock millisecond the node process started (at
//! least one past the last start's, kept in `gossip-generation`), so a
//! restarted node's information always beats what the cluster remembers of
//! its previous life; within a generation, only the node itself bumps its
//! counters, so the larger counter is always the newer information.

use std::net::SocketAddr;

/// The lifecycle a node announces about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    /// Announced, not yet owning ranges (bootstrap streaming; issue 8).
    Joining,
    /// Owns its ranges and serves them.
    Normal,
    /// Handing its ranges to others before it leaves.
    Leaving,
    /// Gone from the ring; kept only so the news spreads.
    Left,
}

impl NodeStatus {
    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            NodeStatus::Joining => 1,
            NodeStatus::Normal => 2,
            NodeStatus::Leaving => 3,
            NodeStatus::Left => 4,
        }
    }

    /// From the wire byte; `None` for a value this version does not know.
    pub fn from_u8(b: u8) -> Option<NodeStatus> {
        Some(match b {
            1 => NodeStatus::Joining,
            2 => NodeStatus::Normal,
            3 => NodeStatus::Leaving,
            4 => NodeStatus::Left,
            _ => return None,
        })
    }

    /// Lower-case name, as `corekv status` prints it.
    pub fn name(self) -> &'static str {
        match self {
            NodeStatus::Joining => "joining",
            NodeStatus::Normal => "normal",
            NodeStatus::Leaving => "leaving",
            NodeStatus::Left => "left",
        }
    }

    /// The status named `name` (as [`NodeStatus::name`] spells it).
    pub fn from_name(name: &str) -> Option<NodeStatus> {
        [
            NodeStatus::Joining,
            NodeStatus::Normal,
            NodeStatus::Leaving,
            NodeStatus::Left,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Whether a node in this status holds ranges on the ring.
    pub fn in_ring(self) -> bool {
        matches!(self, NodeStatus::Normal | NodeStatus::Leaving)
    }
}

/// Everything a coordinator or client needs to know to reach a node and
/// place keys on it. Changes only with a new `version` (or generation).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeMeta {
    /// Stable node id, unique in the cluster.
    pub id: u32,
    /// Native client address; shard `i` listens on `port + 1 + i`.
    pub native_addr: SocketAddr,
    /// Internode address (TCP per shard at `port + i`; gossip over UDP at
    /// `port`).
    pub peer_addr: SocketAddr,
    /// Shard count.
    pub shards: u16,
    /// Rack.
    pub rack: String,
    /// Data centre.
    pub dc: String,
    /// Capacity weight.
    pub weight: f64,
    /// Vnode tokens.
    pub tokens: Vec<u64>,
}

/// One node's gossiped state.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointState {
    /// Start time of the node's process, wall-clock ms.
    pub generation: u64,
    /// Bumped by the node every gossip round: proof of life.
    pub heartbeat: u64,
    /// Bumped by the node whenever `status` or `meta` change.
    pub version: u64,
    /// The status the node announces.
    pub status: NodeStatus,
    /// Its metadata.
    pub meta: NodeMeta,
}

impl EndpointState {
    /// The digest that summarises this state in a SYN.
    pub fn digest(&self) -> Digest {
        Digest {
            id: self.meta.id,
            generation: self.generation,
            heartbeat: self.heartbeat,
            version: self.version,
        }
    }
}

/// How much a gossip partner knows of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    /// The node.
    pub id: u32,
    /// Generation known (0: nothing known).
    pub generation: u64,
    /// Heartbeat known.
    pub heartbeat: u64,
    /// Metadata version known.
    pub version: u64,
}

/// News about one node: always its counters, and its metadata when the
/// receiver's copy is older than `(generation, version)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    /// The node.
    pub id: u32,
    /// Its generation.
    pub generation: u64,
    /// Its heartbeat.
    pub heartbeat: u64,
    /// Its metadata version.
    pub version: u64,
    /// Status and metadata, when the receiver needs them.
    pub full: Option<(NodeStatus, NodeMeta)>,
}

impl Delta {
    /// The news `state` holds for a partner that knows `known` of it.
    pub fn for_partner(state: &EndpointState, known: Option<&Digest>) -> Delta {
        let needs_meta =
            known.is_none_or(|k| (k.generation, k.version) < (state.generation, state.version));
        Delta {
            id: state.meta.id,
            generation: state.generation,
            heartbeat: state.heartbeat,
            version: state.version,
            full: needs_meta.then(|| (state.status, state.meta.clone())),
        }
    }
}
