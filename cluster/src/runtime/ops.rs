//! Operations in two layers: [`KvOp`] is what a client asks of the
//! cluster (the coordinator runs it against N replicas); [`ReplicaOp`] is
//! what a coordinator asks of one replica shard, here or on another node.
//! Replicas only read and merge — they never decide anything.

use std::time::Duration;

use corekv_engine::version::{CausalContext, SiblingSet};
use corekv_engine::{Engine, EngineStats, WriteContext};

use super::metrics::{MetricsSnapshot, ShardMetrics};

/// Redis-style condition on a put.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PutCondition {
    /// Write unconditionally.
    #[default]
    Always,
    /// Write only if the key has no live value (SET NX).
    IfAbsent,
    /// Write only if the key has a live value (SET XX).
    IfPresent,
}

/// One client operation on one key.
#[derive(Clone, Debug)]
pub enum KvOp {
    /// Read the key's sibling set.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Write a value.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Time to live; `None` keeps the value forever.
        ttl: Option<Duration>,
        /// What the write supersedes.
        context: WriteContext,
        /// Redis NX / XX.
        condition: PutCondition,
    },
    /// Delete the key.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// What the delete supersedes.
        context: WriteContext,
    },
    /// Set a TTL on the current value (Redis EXPIRE): rewrites the winner.
    Expire {
        /// The key.
        key: Vec<u8>,
        /// New time to live.
        ttl: Duration,
    },
}

/// The answer to a [`KvOp`].
#[derive(Clone, Debug)]
pub enum KvReply {
    /// The key's set (expired versions removed), or `None`.
    Value(Option<SiblingSet>),
    /// A put: whether it was written (a failed NX/XX condition writes
    /// nothing) and the causal context that now covers it.
    Written {
        /// False when the condition did not hold.
        written: bool,
        /// Context covering the new version.
        context: CausalContext,
    },
    /// A delete: whether a live value existed before.
    Deleted {
        /// True when a reader saw a value before the delete.
        existed: bool,
        /// Context covering the tombstone.
        context: CausalContext,
    },
    /// An expire: whether the key existed.
    Expired(bool),
}

/// What a coordinator asks of one replica shard.
#[derive(Clone, Debug)]
pub enum ReplicaOp {
    /// The replica's sibling set of the key (tombstones included).
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Merge a sibling set (a new write, or a repair) into the key.
    Apply {
        /// The key.
        key: Vec<u8>,
        /// What to merge.
        delta: SiblingSet,
    },
    /// Coordinate a write of the key on this replica: mint a version from
    /// its own state of the key and store it here (see `Engine::mint`).
    Mint {
        /// The key.
        key: Vec<u8>,
        /// The value, or `None` for a delete.
        value: Option<Vec<u8>>,
        /// Time to live.
        ttl: Option<Duration>,
        /// What the write supersedes.
        context: WriteContext,
    },
    /// The shard's engine figures.
    Stats,
    /// Flush the memtable and merge every table into one (an operator's
    /// major compaction); answered with the figures after it.
    Compact,
}

impl ReplicaOp {
    /// The key the operation addresses, which decides the owning shard.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            ReplicaOp::Get { key } | ReplicaOp::Apply { key, .. } | ReplicaOp::Mint { key, .. } => {
                Some(key)
            }
            ReplicaOp::Stats | ReplicaOp::Compact => None,
        }
    }
}

/// A replica's answer.
#[derive(Clone, Debug)]
pub enum ReplicaReply {
    /// The key's set, or `None` if this replica never saw the key.
    Set(Option<SiblingSet>),
    /// The delta is merged and durable.
    Applied,
    /// A write minted and stored here: the state the other replicas merge
    /// and the client's new context.
    Minted {
        /// What the other replicas merge.
        state: SiblingSet,
        /// The client's context after the write.
        context: CausalContext,
    },
    /// Shard figures.
    Stats(Box<ShardStats>),
}

/// One shard's figures.
#[derive(Clone, Debug)]
pub struct ShardStats {
    /// The engine's.
    pub engine: EngineStats,
    /// The shard's counters.
    pub metrics: MetricsSnapshot,
}

/// Runs `op` against this shard's `engine` (`metrics` for `Stats`).
pub async fn execute(
    engine: &Engine,
    op: ReplicaOp,
    metrics: &ShardMetrics,
) -> corekv_engine::Result<ReplicaReply> {
    match op {
        ReplicaOp::Get { key } => Ok(ReplicaReply::Set(engine.get(&key).await?)),
        ReplicaOp::Apply { key, delta } => {
            engine.apply(&key, &delta).await?;
            Ok(ReplicaReply::Applied)
        }
        ReplicaOp::Mint {
            key,
            value,
            ttl,
            context,
        } => {
            let opts = corekv_engine::WriteOptions { ttl, context };
            let minted = engine.write(&key, value, &opts).await?;
            let (state, context) = minted.into_parts();
            // The state crosses threads: unshared once the write is stored.
            let state = std::rc::Rc::try_unwrap(state).unwrap_or_else(|s| (*s).clone());
            Ok(ReplicaReply::Minted { state, context })
        }
        ReplicaOp::Compact => {
            engine.flush().await?;
            engine.compact_all().await?;
            Ok(ReplicaReply::Stats(Box::new(ShardStats {
                engine: engine.stats(),
                metrics: metrics.snapshot(),
            })))
        }
        ReplicaOp::Stats => Ok(ReplicaReply::Stats(Box::new(ShardStats {
            engine: engine.stats(),
            metrics: metrics.snapshot(),
        }))),
    }
}
