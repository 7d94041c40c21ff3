//! Key-value operations as a shard executes them against its own engine.
//! Every client protocol maps onto these, and forwarding between shards
//! ships them as they are.

use std::time::Duration;

use corekv_engine::version::{wall_clock_ms, SiblingSet, VersionVector};
use corekv_engine::{Engine, EngineStats, WriteContext, WriteOptions};

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

/// One operation on one key (or on the whole shard, for `Stats`).
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
    /// The shard's engine figures.
    Stats,
}

impl KvOp {
    /// The key the operation addresses, which decides the owning shard.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            KvOp::Get { key }
            | KvOp::Put { key, .. }
            | KvOp::Delete { key, .. }
            | KvOp::Expire { key, .. } => Some(key),
            KvOp::Stats => None,
        }
    }
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
        context: VersionVector,
    },
    /// A delete: whether a live value existed before.
    Deleted {
        /// True when a reader saw a value before the delete.
        existed: bool,
        /// Context covering the tombstone.
        context: VersionVector,
    },
    /// An expire: whether the key existed.
    Expired(bool),
    /// Shard figures.
    Stats(Box<EngineStats>),
}

/// Runs `op` against `engine`. Compound operations (NX/XX, EXPIRE, DEL's
/// existence check) read then write on this shard's single thread; a
/// concurrent write in between merges by version rules as usual.
pub async fn execute(engine: &Engine, op: KvOp) -> corekv_engine::Result<KvReply> {
    match op {
        KvOp::Get { key } => Ok(KvReply::Value(engine.get(&key).await?)),
        KvOp::Put {
            key,
            value,
            ttl,
            context,
            condition,
        } => {
            if condition != PutCondition::Always {
                let present = engine
                    .get(&key)
                    .await?
                    .is_some_and(|s| s.has_live(wall_clock_ms()));
                let allowed = match condition {
                    PutCondition::IfAbsent => !present,
                    PutCondition::IfPresent => present,
                    PutCondition::Always => true,
                };
                if !allowed {
                    return Ok(KvReply::Written {
                        written: false,
                        context: VersionVector::new(),
                    });
                }
            }
            let version = engine
                .put(
                    &key,
                    &value,
                    &WriteOptions {
                        ttl,
                        context: context.clone(),
                    },
                )
                .await?;
            Ok(KvReply::Written {
                written: true,
                context: context_after(context, version.dot),
            })
        }
        KvOp::Delete { key, context } => {
            let existed = engine
                .get(&key)
                .await?
                .is_some_and(|s| s.has_live(wall_clock_ms()));
            if !existed && context == WriteContext::Overwrite {
                // Redis DEL of an absent key: nothing to supersede, nothing to log.
                return Ok(KvReply::Deleted {
                    existed,
                    context: VersionVector::new(),
                });
            }
            let version = engine
                .delete(
                    &key,
                    &WriteOptions {
                        ttl: None,
                        context: context.clone(),
                    },
                )
                .await?;
            Ok(KvReply::Deleted {
                existed,
                context: context_after(context, version.dot),
            })
        }
        KvOp::Expire { key, ttl } => {
            let winner = engine
                .get(&key)
                .await?
                .and_then(|s| s.winner(wall_clock_ms()).and_then(|v| v.value.clone()));
            match winner {
                None => Ok(KvReply::Expired(false)),
                Some(value) => {
                    let opts = WriteOptions {
                        ttl: Some(ttl),
                        context: WriteContext::Overwrite,
                    };
                    engine.put(&key, &value, &opts).await?;
                    Ok(KvReply::Expired(true))
                }
            }
        }
        KvOp::Stats => Ok(KvReply::Stats(Box::new(engine.stats()))),
    }
}

/// The context a client should hold after its write: what it superseded
/// plus the new version's dot.
fn context_after(context: WriteContext, dot: corekv_engine::version::Dot) -> VersionVector {
    let mut vv = match context {
        WriteContext::Given(vv) => vv,
        _ => VersionVector::new(),
    };
    vv.insert(dot);
    vv
}
