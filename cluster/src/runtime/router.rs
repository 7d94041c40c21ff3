//! Routing a key to its owning shard, and forwarding over the channel mesh
//! when that shard is another core's.

use std::rc::Rc;

use corekv_engine::{token_of, Engine};
use futures_channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};

use super::metrics::{bump, ShardMetrics};
use super::ops::{execute, ReplicaOp, ReplicaReply};
use crate::error::Error;

/// A request shipped to another shard, with the channel its answer goes back
/// on. Everything in it is `Send`: it crosses threads.
pub struct Forward {
    op: ReplicaOp,
    reply: oneshot::Sender<std::result::Result<ReplicaReply, corekv_engine::Error>>,
}

/// The shard that owns `key` among `shards`: `(token * shards) >> 64`, so
/// shards own contiguous token slices (as DESIGN.md fixes it).
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    ((u128::from(token_of(key)) * shards as u128) >> 64) as usize
}

/// Result of a routed operation: engine errors keep their type, also when
/// they come from another shard.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] corekv_engine::Error),
    /// Another shard did not answer.
    #[error(transparent)]
    Runtime(#[from] Error),
}

impl RouteError {
    /// The protocol code a client (or a coordinating node) gets for this
    /// failure: a full disk is STORAGE wherever it happened, so a caller
    /// can tell "this node's disk" from "too few replicas".
    pub fn code(&self) -> corekv_net::native::ErrorCode {
        use corekv_engine::Error as E;
        use corekv_net::native::ErrorCode;
        match self {
            RouteError::Engine(E::KeyTooLarge { .. }) => ErrorCode::KeyTooLarge,
            RouteError::Engine(E::ValueTooLarge { .. } | E::RecordTooLarge { .. }) => {
                ErrorCode::ValueTooLarge
            }
            RouteError::Engine(E::Io { .. } | E::FlushFailed(_) | E::LogFailed(_)) => {
                ErrorCode::Storage
            }
            RouteError::Engine(E::Closed) => ErrorCode::Unavailable,
            RouteError::Engine(E::TooManySiblings { .. } | E::SetTooLarge { .. }) => {
                ErrorCode::TooManySiblings
            }
            RouteError::Engine(E::ContextTooLarge { .. }) => ErrorCode::ContextTooLarge,
            RouteError::Engine(E::ClockAhead { .. }) => ErrorCode::ClockSkew,
            RouteError::Runtime(_) => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

/// One shard's view of the node: its engine, its index, and senders to
/// every other shard. Cloned (cheaply, via `Rc`) into every connection.
pub struct Router {
    index: usize,
    shards: usize,
    engine: Rc<Engine>,
    senders: Senders<Forward>,
    metrics: Rc<ShardMetrics>,
}

impl Router {
    /// Wraps this shard's engine and mesh senders.
    pub fn new(engine: Rc<Engine>, senders: Senders<Forward>, shards: usize) -> Router {
        Router {
            index: senders.peer_id(),
            shards,
            engine,
            senders,
            metrics: Rc::new(ShardMetrics::default()),
        }
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of shards on the node.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Whether this shard owns `key` (no mesh hop needed). With one shard,
    /// no hash is computed.
    pub fn owns(&self, key: &[u8]) -> bool {
        self.shards == 1 || shard_of(key, self.shards) == self.index
    }

    /// This shard's engine.
    pub fn engine(&self) -> &Rc<Engine> {
        &self.engine
    }

    /// This shard's counters.
    pub fn metrics(&self) -> &Rc<ShardMetrics> {
        &self.metrics
    }

    /// Runs `op` on the shard owning its key: here, or forwarded.
    pub async fn call(&self, op: ReplicaOp) -> std::result::Result<ReplicaReply, RouteError> {
        let target = op.key().map_or(self.index, |k| shard_of(k, self.shards));
        self.call_on(target, op).await
    }

    /// Runs `op` on shard `target`.
    pub async fn call_on(
        &self,
        target: usize,
        op: ReplicaOp,
    ) -> std::result::Result<ReplicaReply, RouteError> {
        if target == self.index {
            return Ok(execute(&self.engine, op, &self.metrics).await?);
        }
        if op.key().is_some() {
            // Data requests only: STATUS asks every shard, by design.
            bump(&self.metrics.forwards);
        }
        let (tx, rx) = oneshot::channel();
        self.senders
            .send_to(target, Forward { op, reply: tx })
            .await
            .map_err(|_| Error::ShardGone(target))?;
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(RouteError::Engine(e)),
            Err(_) => Err(Error::ShardGone(target).into()),
        }
    }
}

/// Forwarded requests one shard runs at once; beyond it, reading from the
/// mesh pauses and the senders' bounded channels push back.
const FORWARDS_IN_FLIGHT_MAX: u64 = 1024;

/// Serves requests other shards forward to this one until they all hang up.
/// Each request runs in its own task so a slow disk read does not hold up
/// the others, at most `FORWARDS_IN_FLIGHT_MAX` at a time.
pub async fn serve_forwards(
    engine: Rc<Engine>,
    mut receivers: Receivers<Forward>,
    metrics: Rc<ShardMetrics>,
) {
    let slots = Rc::new(glommio::sync::Semaphore::new(FORWARDS_IN_FLIGHT_MAX));
    let mut loops = Vec::new();
    for (_, stream) in receivers.streams() {
        let engine = engine.clone();
        let slots = slots.clone();
        let metrics = metrics.clone();
        loops.push(glommio::spawn_local(async move {
            use futures_lite::StreamExt;
            let mut stream = stream;
            while let Some(Forward { op, reply }) = stream.next().await {
                let Ok(slot) = slots.clone().acquire_static_permit(1).await else {
                    break;
                };
                let engine = engine.clone();
                let metrics = metrics.clone();
                glommio::spawn_local(async move {
                    let result = execute(&engine, op, &metrics).await;
                    let _ = reply.send(result);
                    drop(slot);
                })
                .detach();
            }
        }));
    }
    for l in loops {
        l.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_token_space_evenly() {
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            counts[shard_of(format!("k{i}").as_bytes(), 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(shard_of(b"anything", 1), 0);
    }
}
