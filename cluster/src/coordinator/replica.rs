//! How the coordinator reaches one replica: this node's own shards over
//! the channel mesh, another node's owning shard over a peer link, or a
//! stand-in that keeps the write as a hint (sloppy quorum).

use std::rc::Rc;

use corekv_engine::version::SiblingSet;
use corekv_net::peer::{PeerRequest, PeerResponse};

use super::Target;
use super::{Coordinator, CoordinatorError};
use crate::runtime::ops::{ReplicaOp, ReplicaReply};
use crate::runtime::router::RouteError;
use crate::topology::Topology;

/// Why one replica did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// This node's shard failed (typed, so a lone node reports e.g. a full
    /// disk as such).
    #[error(transparent)]
    Local(#[from] RouteError),
    /// Another node failed or could not be reached.
    #[error("{0}")]
    Remote(String),
    /// Another node answered with an error code.
    #[error("{message}")]
    Refused {
        /// The protocol code.
        code: corekv_net::native::ErrorCode,
        /// The node's explanation.
        message: String,
    },
}

impl From<crate::links::LinkError> for ReplicaError {
    /// A node that answered with an error code keeps its code (a full
    /// disk there is STORAGE here); one that could not be reached is
    /// Remote, which is what a stand-in may replace.
    fn from(e: crate::links::LinkError) -> ReplicaError {
        match e {
            crate::links::LinkError::Remote { id, code, message } => ReplicaError::Refused {
                code,
                message: format!("node {id}: {message}"),
            },
            other => ReplicaError::Remote(other.to_string()),
        }
    }
}

impl ReplicaError {
    /// The kind of failure a client should see when this replica's error
    /// decides the request: the replica's own code when it has one that
    /// means something to a client, None for an unreachable node or a
    /// protocol error between nodes (the client gets UNAVAILABLE).
    pub(super) fn client_code(&self) -> Option<corekv_net::native::ErrorCode> {
        use corekv_net::native::ErrorCode as C;
        let code = match self {
            ReplicaError::Local(e) => e.code(),
            ReplicaError::Refused { code, .. } => *code,
            ReplicaError::Remote(_) => return None,
        };
        match code {
            C::BadFrame | C::UnknownOpcode | C::FrameTooLarge | C::UnsupportedVersion => None,
            code => Some(code),
        }
    }

    /// True when a sloppy quorum may hand this replica's write to a
    /// stand-in: the node could not be reached or is stopping. A replica
    /// that answered with its own failure (a full disk, a bound) is not
    /// replaced, so ALL reports that failure instead of hiding it.
    pub(super) fn may_stand_in(&self) -> bool {
        use corekv_net::native::ErrorCode as C;
        match self {
            ReplicaError::Remote(_) => true,
            ReplicaError::Refused { code, .. } => matches!(code, C::Unavailable),
            ReplicaError::Local(_) => false,
        }
    }

    pub(super) fn into_coordinator(self, needed: usize) -> CoordinatorError {
        match self {
            ReplicaError::Local(e) => CoordinatorError::Local(e),
            ReplicaError::Remote(last) => CoordinatorError::Failed {
                answered: 0,
                needed,
                last,
                code: None,
            },
            ReplicaError::Refused { code, message } => CoordinatorError::Refused { code, message },
        }
    }
}

// Replica calls have no timer of their own: every caller bounds them by its
// request's `Deadline`, which drops the call when it passes.
impl Coordinator {
    pub(super) async fn replica_read(
        &self,
        topo: &Topology,
        target: Target,
        key: Vec<u8>,
    ) -> Result<Option<SiblingSet>, ReplicaError> {
        match target {
            Target::Local => match self.router.call(ReplicaOp::Get { key }).await? {
                ReplicaReply::Set(set) => Ok(set),
                other => Err(ReplicaError::Remote(format!(
                    "unexpected local reply {other:?}"
                ))),
            },
            Target::Remote(node) => {
                let member = &topo.members()[node];
                let shard = member.shard_of(corekv_engine::token_of(&key));
                match self
                    .links
                    .call_untimed(member, shard, PeerRequest::Read { key })
                    .await
                {
                    Ok(PeerResponse::Set(None)) => Ok(None),
                    Ok(PeerResponse::Error { code, message }) => {
                        Err(ReplicaError::Refused { code, message })
                    }
                    Ok(PeerResponse::Set(Some(bytes))) => SiblingSet::decode(&bytes, self.mode)
                        .map(Some)
                        .map_err(|e| {
                            ReplicaError::Remote(format!("replica sent a bad sibling set: {e}"))
                        }),
                    Ok(other) => Err(ReplicaError::Remote(format!(
                        "unexpected replica reply {other:?}"
                    ))),
                    Err(e) => Err(e.into()),
                }
            }
            Target::Fallback { .. } | Target::LocalHint { .. } => Err(ReplicaError::Remote(
                "a stand-in does not serve reads".into(),
            )),
        }
    }

    pub(super) async fn replica_apply(
        &self,
        topo: &Topology,
        target: Target,
        key: Vec<u8>,
        delta: Rc<SiblingSet>,
        encoded: Rc<Vec<u8>>,
    ) -> Result<(), ReplicaError> {
        match target {
            Target::Local => {
                // The mesh needs an owned set; remote replicas use `encoded`.
                let delta = Rc::try_unwrap(delta).unwrap_or_else(|d| (*d).clone());
                self.router.call(ReplicaOp::Apply { key, delta }).await?;
                Ok(())
            }
            Target::Remote(node) => {
                let member = &topo.members()[node];
                let shard = member.shard_of(corekv_engine::token_of(&key));
                let req = PeerRequest::Apply {
                    key,
                    set: encoded.to_vec(),
                };
                self.call_applied(member, shard, req, "replica").await
            }
            Target::Fallback { node, owner } => {
                let member = &topo.members()[node];
                let shard = member.shard_of(corekv_engine::token_of(&key));
                let req = PeerRequest::Hint {
                    owner: topo.members()[owner].id,
                    key,
                    set: encoded.to_vec(),
                };
                self.call_applied(member, shard, req, "stand-in").await
            }
            Target::LocalHint { owner } => {
                let id = topo.members()[owner].id;
                self.store_hint(id, &key, &encoded).await
            }
        }
    }

    /// Sends a write (`APPLY` or `HINT`) to shard `shard` of `member`;
    /// `Applied` is its only success. `role` names the receiver in errors.
    async fn call_applied(
        &self,
        member: &crate::topology::Member,
        shard: usize,
        req: PeerRequest,
        role: &str,
    ) -> Result<(), ReplicaError> {
        match self.links.call_untimed(member, shard, req).await {
            Ok(PeerResponse::Applied) => Ok(()),
            Ok(PeerResponse::Error { code, message }) => {
                Err(ReplicaError::Refused { code, message })
            }
            Ok(other) => Err(ReplicaError::Remote(format!(
                "unexpected {role} reply {other:?}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps a write for node `owner_id` as a durable hint on this shard
    /// (this node stands in for it).
    pub async fn store_hint(
        &self,
        owner_id: u32,
        key: &[u8],
        set: &[u8],
    ) -> Result<(), ReplicaError> {
        self.hints
            .store(owner_id, key, set)
            .await
            .map_err(|e| match e {
                super::hints::HintError::Engine(e) => ReplicaError::Local(RouteError::Engine(e)),
                full @ super::hints::HintError::Full { .. } => ReplicaError::Refused {
                    code: corekv_net::native::ErrorCode::Overloaded,
                    message: full.to_string(),
                },
            })
    }
}
