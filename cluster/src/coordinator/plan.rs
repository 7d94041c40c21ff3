//! Which replicas a request goes to, and how many answers it needs
//! (sans-io): a pure function of the topology snapshot, the key, the level
//! and which nodes this shard believes live. The coordinator runs it on
//! every request; the simulator (`corekv-sim`) runs the same function on
//! its nodes' views.

use corekv_net::native::Consistency;

use super::quorum::required;
use crate::ring::NodeIndex;
use crate::topology::Topology;

/// Where a replica of a key lives, from this shard's point of view.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// On this node (this shard or another one via the mesh).
    Local,
    /// On another node.
    Remote(NodeIndex),
    /// Another node stands in for replica `owner`, which is down, and keeps
    /// the write as a hint for it (sloppy quorum).
    Fallback {
        /// The stand-in.
        node: NodeIndex,
        /// The replica it stands in for.
        owner: NodeIndex,
    },
    /// This node stands in for replica `owner` (a local hint).
    LocalHint {
        /// The replica it stands in for.
        owner: NodeIndex,
    },
}

impl Target {
    /// The replica as an error message names it: node id and address.
    pub fn describe(&self, topo: &Topology) -> String {
        let node = |i: NodeIndex| {
            topo.members().get(i).map_or_else(
                || format!("node #{i}"),
                |m| format!("node {} ({})", m.id, m.peer_addr),
            )
        };
        match *self {
            Target::Local => match topo.me() {
                Some(me) => format!("{} (this node)", node(me)),
                None => "this node".into(),
            },
            Target::Remote(n) => node(n),
            Target::Fallback { node: n, owner } => {
                format!("{}, standing in for {}", node(n), node(owner))
            }
            Target::LocalHint { owner } => format!("this node, standing in for {}", node(owner)),
        }
    }
}

/// A request's replicas: where to send it and how many answers it needs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The replicas to ask, live ones of the preference list first (this
    /// node's own copy first of all), then stand-ins, then (for writes)
    /// pending replicas of a range that is moving.
    pub targets: Vec<Target>,
    /// Replicas that are down and got no stand-in: they get a hint.
    pub down: Vec<NodeIndex>,
    /// Successful answers the request needs before the client is answered.
    pub needed: usize,
}

/// Why a request cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The level asks for more replicas than the key has.
    #[error("{0}")]
    Level(String),
    /// Too few of the key's replicas (and stand-ins) are live.
    #[error("{needed} replicas needed, {live} of {replicas} are up (down: {down})")]
    TooFewLive {
        /// Answers the level needs.
        needed: usize,
        /// Replicas and stand-ins that are live.
        live: usize,
        /// The key's replicas.
        replicas: usize,
        /// The ids of the replicas that are down, comma-separated.
        down: String,
    },
}

/// The replicas of `key` (live ones first in preference order) and how
/// many answers `level` needs; an error when too few are live.
///
/// `live(node)` says whether this shard may send member `node` requests
/// (gossip says it is up and this shard's last attempt did not fail).
/// With `sloppy` (writes only), each replica that is down is stood in for
/// by the next live node after the preference list, which keeps the write
/// as a hint for it and counts toward W. Writes also go to the pending
/// replicas of a moving range, each of which must acknowledge too.
pub fn plan(
    topo: &Topology,
    key: &[u8],
    level: Consistency,
    default: Consistency,
    write: bool,
    sloppy: bool,
    live: impl Fn(NodeIndex) -> bool,
) -> Result<Plan, PlanError> {
    let sloppy = write && sloppy;
    let token = corekv_engine::token_of(key);
    let replicas = topo.ring().replicas(token);
    let mut needed = required(level, default, replicas.len()).map_err(PlanError::Level)?;
    let me = topo.me();
    let mut targets = Vec::with_capacity(replicas.len());
    let mut down = Vec::new();
    for &node in replicas {
        if Some(node) == me {
            // Local first: a read at ONE is then answered by this node's
            // replica whenever it can answer at once.
            targets.insert(0, Target::Local);
        } else if live(node) {
            targets.push(Target::Remote(node));
        } else {
            down.push(node);
        }
    }
    if sloppy && !down.is_empty() {
        let mut stand_ins = topo
            .ring()
            .fallbacks(token)
            .into_iter()
            .filter(|&f| Some(f) == me || live(f));
        down.retain(|&owner| match stand_ins.next() {
            Some(f) if Some(f) == me => {
                targets.push(Target::LocalHint { owner });
                false
            }
            Some(node) => {
                targets.push(Target::Fallback { node, owner });
                false
            }
            None => true,
        });
    }
    if targets.len() < needed {
        return Err(PlanError::TooFewLive {
            needed,
            live: targets.len(),
            replicas: replicas.len(),
            down: down
                .iter()
                .map(|&n| topo.members()[n].id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if write {
        // Nodes joining (or taking over from a leaving one) get every
        // write of their future ranges, and must acknowledge it like the
        // replicas, so nothing acknowledged is missing when the move
        // completes. One that is down gets a hint instead.
        for node in topo.pending(token) {
            if Some(node) == me {
                targets.push(Target::Local);
                needed += 1;
            } else if live(node) {
                targets.push(Target::Remote(node));
                needed += 1;
            } else {
                down.push(node);
            }
        }
    }
    Ok(Plan {
        targets,
        down,
        needed,
    })
}

/// Live nodes after `key`'s preference list that are not already standing
/// in for a replica among `targets`, in ring order: the spares a write
/// turns to when a replica fails during the write itself.
pub fn spare_stand_ins(
    topo: &Topology,
    key: &[u8],
    targets: &[Target],
    live: impl Fn(NodeIndex) -> bool,
) -> Vec<NodeIndex> {
    let me = topo.me();
    topo.ring()
        .fallbacks(corekv_engine::token_of(key))
        .into_iter()
        .filter(|&f| Some(f) == me || live(f))
        .filter(|&f| {
            !targets.iter().any(|t| match *t {
                Target::Fallback { node, .. } => node == f,
                Target::LocalHint { .. } => Some(f) == me,
                _ => false,
            })
        })
        .collect()
}
