//! The coordinator: the shard that received a client request runs it
//! against the key's N replicas — local ones through the channel mesh,
//! remote ones over this shard's peer links — and answers after W (writes)
//! or R (reads) of them. The rest finish in the background: writes a
//! replica missed become durable hints, replayed when it is back, and
//! replicas whose read answers lag behind the merged state get it written
//! back (read repair).
//!
//! A write's version is minted once, by one replica of the key (this shard
//! when it owns the key, else the owning shard or replica node it is
//! forwarded to): that replica reads its own copy of the key, merges the new
//! version into it and replicates the merged state, so the causal context a
//! client gets back claims exactly what it was shown (see
//! `corekv_engine::version`). The minting replica's own copy is part of
//! every acknowledged write. Overwrites (Redis SET) and last-writer-wins
//! writes read nothing and are minted by the coordinating shard itself.

mod handoff;
mod hints;
pub mod plan;
pub mod quorum;
mod replica;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use corekv_engine::version::{wall_clock_ms, CausalContext, SiblingSet};
use corekv_engine::{ConflictMode, WriteContext, WriteOptions};
use corekv_net::native::{Consistency, ErrorCode};
use corekv_net::peer::{PeerRequest, PeerResponse};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;

pub use hints::{Hint, HintError, HintStore};
pub use plan::{Plan, PlanError, Target};
pub use quorum::required;
pub use replica::ReplicaError;

use crate::links::PeerLinks;
use crate::repair::replica::TreeCache;
use crate::ring::NodeIndex;
use crate::runtime::config::{parse_level, NodeConfig};
use crate::runtime::control::NodeControl;
use crate::runtime::metrics::bump;
use crate::runtime::ops::{KvOp, KvReply, PutCondition, ReplicaOp, ReplicaReply};
use crate::runtime::router::{RouteError, Router};
use crate::topology::{SharedTopology, Topology, TopologyView};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// This node's own storage or shard failed.
    #[error(transparent)]
    Local(#[from] RouteError),
    /// The level asks for more replicas than exist or are up.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Replicas did not answer in time.
    #[error("timeout: {answered} of the {needed} replicas needed answered within {ms} ms")]
    Timeout {
        /// Successful answers received.
        answered: usize,
        /// Answers needed.
        needed: usize,
        /// The request timeout.
        ms: u128,
    },
    /// A replica refused the request for a reason the client should see
    /// as such (too many siblings, a clock from the future, a full disk).
    #[error("replica refused: {message}")]
    Refused {
        /// The refusal's protocol code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// Enough replicas answered, but with errors.
    #[error("{needed} replicas needed, {answered} succeeded; last failure: {last}")]
    Failed {
        /// Successful answers.
        answered: usize,
        /// Answers needed.
        needed: usize,
        /// The last replica error, naming the replica.
        last: String,
        /// Its protocol code, when it had one a client should see
        /// (STORAGE, OVERLOADED, NOT_OWNER, ...); None: unreachable.
        code: Option<ErrorCode>,
    },
}

/// Versions younger than this are not read-repaired: they are most likely
/// still on their way to the replica that lacks them.
pub const REPAIR_GRACE_MS: u64 = 100;

type Answer<T> = Pin<Box<dyn Future<Output = (usize, Result<T, ReplicaError>)>>>;

/// One shard's coordinator. Shared by the shard's connections via `Rc`.
pub struct Coordinator {
    router: Rc<Router>,
    topology: TopologyView,
    links: PeerLinks,
    hints: Rc<HintStore>,
    hint_replay_per_s: u32,
    sloppy_quorum: bool,
    timeout: Duration,
    default_read: Consistency,
    default_write: Consistency,
    mode: ConflictMode,
    trees: TreeCache,
    control: Arc<NodeControl>,
    replication_factor: usize,
    data_dir: std::path::PathBuf,
}

impl Coordinator {
    /// A coordinator for the shard behind `router`.
    pub fn new(
        router: Rc<Router>,
        topology: Arc<SharedTopology>,
        hints: Rc<HintStore>,
        control: Arc<NodeControl>,
        config: &NodeConfig,
    ) -> crate::Result<Coordinator> {
        let mode = router.engine().options().conflict;
        Ok(Coordinator {
            links: PeerLinks::new(
                &config.cluster_name,
                config.node_id,
                config.cluster_secret.clone(),
                config.tls.as_ref().and_then(|t| t.peer_client.clone()),
                Duration::from_millis(config.request_timeout_ms.max(1)),
            ),
            router,
            topology: TopologyView::new(topology),
            hints,
            hint_replay_per_s: config.hint_replay_per_s.max(1),
            sloppy_quorum: config.sloppy_quorum,
            timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
            default_read: parse_level(&config.read_consistency)?,
            default_write: parse_level(&config.write_consistency)?,
            mode,
            trees: TreeCache::default(),
            control,
            replication_factor: config.replication_factor,
            data_dir: config.data_dir.clone(),
        })
    }

    /// This shard's router (engine and mesh).
    pub fn router(&self) -> &Rc<Router> {
        &self.router
    }

    /// The configured replication factor N (the ring caps it at the
    /// number of owners).
    pub fn replication_factor_setting(&self) -> usize {
        self.replication_factor
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir.clone()
    }

    /// This shard's peer connections.
    pub fn links(&self) -> &PeerLinks {
        &self.links
    }

    /// Trees this shard built for peers' repairs.
    pub fn trees(&self) -> &TreeCache {
        &self.trees
    }

    /// The node's shared command cells.
    pub fn control(&self) -> &Arc<NodeControl> {
        &self.control
    }

    /// The latest topology snapshot.
    pub fn topology(&self) -> Rc<Topology> {
        self.snapshot()
    }

    /// The latest snapshot. When gossip has just seen a node come back or
    /// restart, this shard's own backoff for it ends too: the node
    /// answered someone, so it is worth asking again at once.
    fn snapshot(&self) -> Rc<Topology> {
        let (now, before) = self.topology.refresh();
        if let Some(before) = before {
            for (i, m) in now.members().iter().enumerate() {
                // Back up, or restarted (a new generation) before gossip
                // even noticed it was gone.
                let same = before
                    .index_of(m.id)
                    .is_some_and(|j| before.is_up(j) && before.generation(j) == now.generation(i));
                if now.is_up(i) && !same {
                    self.links.forgive(m.id);
                }
            }
        }
        now
    }

    /// Nodes this shard cannot reach right now (its own connection
    /// failures; gossip's verdict is in the topology).
    pub fn unreachable_nodes(&self) -> Vec<u32> {
        self.links.down_nodes()
    }

    /// Whether member `node` of `topo` may be sent requests: gossip says it
    /// is up and this shard's last attempt did not fail.
    fn is_live(&self, topo: &Topology, node: NodeIndex) -> bool {
        topo.is_up(node) && self.links.is_live(topo.members()[node].id)
    }

    /// Runs a client operation at `level`.
    pub async fn execute(
        self: &Rc<Self>,
        op: KvOp,
        level: Consistency,
    ) -> Result<KvReply, CoordinatorError> {
        match op {
            KvOp::Get { key } => Ok(KvReply::Value(self.read(&key, level).await?)),
            KvOp::Put {
                key,
                value,
                ttl,
                context,
                condition,
            } => {
                if condition != PutCondition::Always {
                    let present = self
                        .read(&key, level)
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
                            context: CausalContext::new(),
                        });
                    }
                }
                let context = self.write(&key, Some(value), ttl, context, level).await?;
                Ok(KvReply::Written {
                    written: true,
                    context,
                })
            }
            KvOp::Delete { key, context } => {
                // Redis DEL reports whether the key existed, so an overwrite
                // delete reads first; a native delete does not need to.
                let mut existed = false;
                if context == WriteContext::Overwrite {
                    existed = self
                        .read(&key, level)
                        .await?
                        .is_some_and(|s| s.has_live(wall_clock_ms()));
                    if !existed {
                        return Ok(KvReply::Deleted {
                            existed,
                            context: CausalContext::new(),
                        });
                    }
                }
                let context = self.write(&key, None, None, context, level).await?;
                Ok(KvReply::Deleted { existed, context })
            }
            KvOp::Expire { key, ttl } => {
                let winner = self
                    .read(&key, level)
                    .await?
                    .and_then(|s| s.into_winner(wall_clock_ms()).and_then(|v| v.value));
                match winner {
                    None => Ok(KvReply::Expired(false)),
                    Some(value) => {
                        self.write(&key, Some(value), Some(ttl), WriteContext::Overwrite, level)
                            .await?;
                        Ok(KvReply::Expired(true))
                    }
                }
            }
        }
    }

    /// The key's replicas and how many answers `level` needs
    /// ([`plan::plan`] on this shard's view of who is live); `Unavailable`,
    /// counted, when too few are up.
    fn plan(
        &self,
        topo: &Topology,
        key: &[u8],
        level: Consistency,
        default: Consistency,
        write: bool,
    ) -> Result<(Vec<Target>, Vec<NodeIndex>, usize), CoordinatorError> {
        match plan::plan(topo, key, level, default, write, self.sloppy_quorum, |n| {
            self.is_live(topo, n)
        }) {
            Ok(p) => Ok((p.targets, p.down, p.needed)),
            Err(e) => {
                bump(&self.router.metrics().unavailable);
                Err(CoordinatorError::Unavailable(e.to_string()))
            }
        }
    }

    /// Whether this shard is `key`'s only replica (a single node, no node
    /// joining) and a write at `level` needs no other: then [`Coordinator::write_here`] is
    /// the whole write, as [`Coordinator::write`] would run it.
    pub fn writes_here_alone(&self, key: &[u8], level: Consistency) -> bool {
        let topo = self.snapshot();
        let token = corekv_engine::token_of(key);
        topo.me().is_some_and(|me| {
            topo.ring().replicas(token) == [me]
                // A node joining takes this key's writes too.
                && topo.pending(token).is_empty()
                && self.router.owns(key)
                && required(level, self.default_write, 1).is_ok()
        })
    }

    /// A plain overwrite (Redis `SET`) stored on this shard alone, for a
    /// key [`writes_here_alone`](Coordinator::writes_here_alone) accepted:
    /// [`Engine::overwrite`], which answers no context. A small future with
    /// no replica fan-out in it, so a pipelined client's writes cost no
    /// more than the engine's.
    ///
    /// [`Engine::overwrite`]: corekv_engine::Engine::overwrite
    pub async fn write_here(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<(), CoordinatorError> {
        self.router
            .engine()
            .overwrite(key, value, ttl)
            .await
            .map_err(|e| CoordinatorError::Local(e.into()))
    }

    /// A lone replica's read answered on the spot: when this shard is the
    /// key's only replica (a single node) and its engine can tell what a
    /// Redis-style reader sees without I/O ([`Engine::winner_now`]), `f`
    /// gets that value and expiry, borrowed. `None` when the read must take
    /// the usual way ([`Coordinator::read`]), which also reports a level the
    /// lone replica cannot meet.
    ///
    /// [`Engine::winner_now`]: corekv_engine::Engine::winner_now
    pub fn read_winner_now<T>(
        &self,
        key: &[u8],
        level: Consistency,
        f: impl FnOnce(Option<(&[u8], u64)>) -> T,
    ) -> Option<Result<T, CoordinatorError>> {
        let topo = self.snapshot();
        let me = topo.me()?;
        if topo.ring().replicas(corekv_engine::token_of(key)) != [me]
            || !self.router.owns(key)
            || required(level, self.default_read, 1).is_err()
        {
            return None;
        }
        match self.router.engine().winner_now(key, wall_clock_ms(), f) {
            Ok(Some(answer)) => Some(Ok(answer)),
            Ok(None) => None,
            Err(e) => Some(Err(CoordinatorError::Local(e.into()))),
        }
    }

    /// Reads `key` from its replicas; the merged state of the first R
    /// answers.
    pub async fn read(
        self: &Rc<Self>,
        key: &[u8],
        level: Consistency,
    ) -> Result<Option<SiblingSet>, CoordinatorError> {
        let topo = self.snapshot();
        let (targets, _, needed) = self.plan(&topo, key, level, self.default_read, false)?;
        if targets.len() == 1 {
            // A lone replica (a single node): nothing to gather or repair.
            if matches!(targets[0], Target::Local) && self.router.owns(key) {
                // This very shard: straight to the engine, without the
                // replica-op and routing layers (and their key copy).
                return self
                    .router
                    .engine()
                    .get(key)
                    .await
                    .map_err(|e| CoordinatorError::Local(e.into()));
            }
            // Boxed: rare next to the gathered path below, and several
            // KiB that every read's state would otherwise carry.
            let read = self.replica_read(&topo, targets[0], key.to_vec());
            return Box::pin(self.lone_replica(read, needed)).await;
        }
        let mut pending: FuturesUnordered<Answer<Option<SiblingSet>>> = FuturesUnordered::new();
        for (i, &t) in targets.iter().enumerate() {
            let me = self.clone();
            let key = key.to_vec();
            let topo = topo.clone();
            pending.push(Box::pin(async move {
                (i, me.replica_read(&topo, t, key).await)
            }));
        }
        let mut deadline = Deadline::after(self.timeout);
        let mut answers: Vec<(usize, Option<SiblingSet>)> = Vec::with_capacity(targets.len());
        let outcome = self
            .gather(&mut pending, &mut answers, needed, &mut deadline, |i| {
                targets[i].describe(&topo)
            })
            .await;
        let merged = quorum::merge_all(answers.iter().map(|(_, a)| a), self.mode);
        let all_in = pending.is_empty();
        let now = wall_clock_ms();
        if all_in
            && !answers
                .iter()
                .any(|(_, a)| quorum::is_stale(a, &merged, now, REPAIR_GRACE_MS))
        {
            outcome?;
            return Ok(merged);
        }
        // Finish in the background: wait for the others, repair the stale.
        let me = self.clone();
        let key = key.to_vec();
        glommio::spawn_local(async move {
            let mut all = answers;
            let mut failures = 0;
            while let Some(next) = deadline.next(&mut pending).await {
                match next {
                    (i, Ok(a)) => all.push((i, a)),
                    (_, Err(_)) => failures += 1,
                }
            }
            let failed = &me.router.metrics().replica_failures;
            failed.set(failed.get() + failures + pending.len() as u64);
            let merged = quorum::merge_all(all.iter().map(|(_, a)| a), me.mode);
            // The repair writes get a deadline of their own.
            let repair = me.repair(&topo, &key, &targets, &all, merged);
            if Deadline::after(me.timeout).bound(repair).await.is_none() {
                tracing::debug!("read repair did not finish within the request timeout");
            }
        })
        .detach();
        outcome?;
        Ok(merged)
    }

    /// Writes a new version of `key` (a value, or a tombstone for `None`)
    /// to its replicas; the context that covers it once W acknowledged.
    pub async fn write(
        self: &Rc<Self>,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
        context: WriteContext,
        level: Consistency,
    ) -> Result<CausalContext, CoordinatorError> {
        let topo = self.snapshot();
        let (mut targets, down, needed) = self.plan(&topo, key, level, self.default_write, true)?;
        let opts = WriteOptions { ttl, context };
        let reads = self.mode == ConflictMode::Siblings && opts.context != WriteContext::Overwrite;
        if !reads {
            // Nothing to read: this shard mints, every target is a peer.
            let minted = self
                .router
                .engine()
                .mint(key, value, &opts)
                .await
                .map_err(RouteError::from)?;
            let state = minted.state.clone();
            let context = minted.context();
            drop(minted);
            self.fan_out(&topo, targets, down, needed, key, state)
                .await?;
            return Ok(context);
        }
        // The minting replica: this node's copy if it has one, else the
        // first live replica node.
        let Some(m) = targets
            .iter()
            .position(|t| matches!(t, Target::Local))
            .or_else(|| targets.iter().position(|t| matches!(t, Target::Remote(_))))
        else {
            bump(&self.router.metrics().unavailable);
            return Err(CoordinatorError::Unavailable(
                "no replica of the key is up to coordinate the write (only stand-ins)".into(),
            ));
        };
        let minter = targets.remove(m);
        let rest = needed.saturating_sub(1);
        if matches!(minter, Target::Local) && self.router.owns(key) {
            // This very shard: mint, then store here while the others get
            // the state.
            let engine = self.router.engine();
            let mut minted = engine
                .mint(key, value, &opts)
                .await
                .map_err(RouteError::from)?;
            let context = minted.context();
            if targets.is_empty() && down.is_empty() {
                engine
                    .apply_minted(key, &mut minted)
                    .await
                    .map_err(|e| CoordinatorError::Local(e.into()))?;
                return Ok(context);
            }
            let state = minted.state.clone();
            let mut deadline = Deadline::after(self.timeout);
            let local = deadline.bound(engine.apply_minted(key, &mut minted));
            let others = self.fan_out(&topo, targets, down, rest, key, state);
            let (local, others) = futures_lite::future::zip(local, others).await;
            match local {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(CoordinatorError::Local(e.into())),
                None => return Err(self.timed_out(0, needed)),
            }
            others?;
            return Ok(context);
        }
        // Another shard or node mints and stores its copy first.
        let mut deadline = Deadline::after(self.timeout);
        let minted = deadline
            .bound(self.remote_mint(&topo, minter, key, value, &opts))
            .await;
        let (state, context) = match minted {
            Some(Ok(done)) => done,
            Some(Err(e)) => return Err(e.into_coordinator(needed)),
            None => return Err(self.timed_out(0, needed)),
        };
        self.fan_out(&topo, targets, down, rest, key, Rc::new(state))
            .await?;
        Ok(context)
    }

    /// Has replica `minter` (another shard of this node, or another node)
    /// mint and store the write; the state for the other replicas and the
    /// client's context.
    async fn remote_mint(
        &self,
        topo: &Topology,
        minter: Target,
        key: &[u8],
        value: Option<Vec<u8>>,
        opts: &WriteOptions,
    ) -> Result<(SiblingSet, CausalContext), ReplicaError> {
        match minter {
            Target::Local => {
                let op = ReplicaOp::Mint {
                    key: key.to_vec(),
                    value,
                    ttl: opts.ttl,
                    context: opts.context.clone(),
                };
                match self.router.call(op).await? {
                    ReplicaReply::Minted { state, context } => Ok((state, context)),
                    other => Err(ReplicaError::Remote(format!(
                        "unexpected local reply {other:?}"
                    ))),
                }
            }
            Target::Remote(node) => {
                let member = &topo.members()[node];
                let shard = member.shard_of(corekv_engine::token_of(key));
                let (context_kind, context) = match &opts.context {
                    WriteContext::Blind => (0, Vec::new()),
                    WriteContext::Given(cc) => (1, crate::wire_context::encode(cc)),
                    WriteContext::Overwrite => (2, Vec::new()),
                };
                let req = PeerRequest::Mint {
                    context_kind,
                    ttl_ms: opts.ttl.map_or(0, |t| {
                        u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
                    }),
                    context,
                    key: key.to_vec(),
                    value,
                };
                match self.links.call_untimed(member, shard, req).await {
                    Ok(PeerResponse::Minted { context, set }) => {
                        let state = SiblingSet::decode(&set, self.mode).map_err(|e| {
                            ReplicaError::Remote(format!("replica sent a bad sibling set: {e}"))
                        })?;
                        let context = crate::wire_context::decode(&context, usize::MAX)
                            .map_err(|e| ReplicaError::Remote(format!("replica sent {e}")))?;
                        Ok((state, context))
                    }
                    Ok(PeerResponse::Error { code, message }) => {
                        Err(ReplicaError::Refused { code, message })
                    }
                    Ok(other) => Err(ReplicaError::Remote(format!(
                        "unexpected replica reply {other:?}"
                    ))),
                    Err(e) => Err(e.into()),
                }
            }
            Target::Fallback { .. } | Target::LocalHint { .. } => Err(ReplicaError::Remote(
                "a stand-in does not mint writes".into(),
            )),
        }
    }

    /// Sends `state` to `targets` and answers once `needed` of them
    /// acknowledged (at once when `needed` is 0); the rest finish in the
    /// background, and what a replica missed becomes a hint.
    async fn fan_out(
        self: &Rc<Self>,
        topo: &Rc<Topology>,
        targets: Vec<Target>,
        down: Vec<NodeIndex>,
        needed: usize,
        key: &[u8],
        state: Rc<SiblingSet>,
    ) -> Result<(), CoordinatorError> {
        let encoded = Rc::new(if targets.len() + down.len() > 0 {
            state.to_bytes()
        } else {
            Vec::new()
        });
        if targets.len() == 1 && needed == 1 && down.is_empty() {
            if matches!(targets[0], Target::Local) && self.router.owns(key) {
                // This very shard: apply the state in place.
                return self
                    .router
                    .engine()
                    .apply(key, &state)
                    .await
                    .map_err(|e| CoordinatorError::Local(e.into()));
            }
            let apply = self.replica_apply(topo, targets[0], key.to_vec(), state, encoded);
            // Boxed: rare next to the gathered path below.
            return Box::pin(self.lone_replica(apply, needed)).await;
        }
        // With a sloppy quorum, each remote replica gets a spare stand-in in
        // case it turns out to be unreachable during this very write.
        let mut spares = if self.sloppy_quorum {
            self.spare_stand_ins(topo, key, &targets)
        } else {
            Vec::new()
        }
        .into_iter();
        let mut pending: FuturesUnordered<Answer<()>> = FuturesUnordered::new();
        for (i, &t) in targets.iter().enumerate() {
            let me = self.clone();
            let key = key.to_vec();
            let state = state.clone();
            let encoded = encoded.clone();
            let topo = topo.clone();
            let spare = match t {
                Target::Remote(owner) => spares.next().map(|node| (node, owner)),
                _ => None,
            };
            pending.push(Box::pin(async move {
                let first = me
                    .replica_apply(&topo, t, key.clone(), state.clone(), encoded.clone())
                    .await;
                let result = match (first, spare) {
                    (Err(why), Some((node, owner))) if why.may_stand_in() => {
                        tracing::debug!(%why, "replica unreachable; writing to a stand-in");
                        let stand_in = if Some(node) == topo.me() {
                            Target::LocalHint { owner }
                        } else {
                            Target::Fallback { node, owner }
                        };
                        me.replica_apply(&topo, stand_in, key, state, encoded).await
                    }
                    (first, _) => first,
                };
                (i, result)
            }));
        }
        let mut deadline = Deadline::after(self.timeout);
        let mut acks = Vec::with_capacity(targets.len());
        let outcome = self
            .gather(&mut pending, &mut acks, needed, &mut deadline, |i| {
                targets[i].describe(topo)
            })
            .await;
        // The rest finish in the background; what a replica missed becomes
        // a hint.
        let me = self.clone();
        let key = key.to_vec();
        let topo = topo.clone();
        glommio::spawn_local(async move {
            let mut missed = down;
            let mut answered: Vec<usize> = acks.iter().map(|&(i, ())| i).collect();
            while let Some((i, result)) = deadline.next(&mut pending).await {
                if result.is_ok() {
                    answered.push(i);
                }
            }
            for (i, t) in targets.iter().enumerate() {
                if answered.contains(&i) {
                    continue;
                }
                bump(&me.router.metrics().replica_failures);
                match *t {
                    Target::Remote(node)
                    | Target::Fallback { owner: node, .. }
                    | Target::LocalHint { owner: node } => missed.push(node),
                    Target::Local => {}
                }
            }
            me.store_hints(&topo, &missed, &key, &encoded).await;
        })
        .detach();
        outcome
    }

    /// Waits until `needed` answers succeeded, too many failed, or the
    /// deadline passed.
    ///
    /// `name(i)` names answer `i`'s replica in the error (called only on
    /// a failure, so the hot path builds no strings).
    async fn gather<T>(
        &self,
        pending: &mut FuturesUnordered<Answer<T>>,
        answers: &mut Vec<(usize, T)>,
        needed: usize,
        deadline: &mut Deadline,
        name: impl Fn(usize) -> String,
    ) -> Result<(), CoordinatorError> {
        let mut last_error = String::new();
        let mut last_code = None;
        let mut tally = quorum::Tally::new(needed.saturating_sub(answers.len()), pending.len());
        loop {
            match tally.verdict() {
                quorum::Verdict::Met => return Ok(()),
                quorum::Verdict::Impossible => {
                    return Err(CoordinatorError::Failed {
                        answered: answers.len(),
                        needed,
                        last: last_error,
                        code: last_code,
                    })
                }
                quorum::Verdict::Waiting => {}
            }
            match deadline.next(pending).await {
                Some((i, Ok(a))) => {
                    answers.push((i, a));
                    tally.succeeded();
                }
                Some((i, Err(e))) => {
                    last_code = e.client_code();
                    last_error = format!("{}: {e}", name(i));
                    tally.failed();
                }
                None => return Err(self.timed_out(answers.len(), needed)),
            }
        }
    }

    /// The error for a request whose deadline passed with `answered` of
    /// the `needed` answers in (counted in the timeouts metric).
    fn timed_out(&self, answered: usize, needed: usize) -> CoordinatorError {
        bump(&self.router.metrics().timeouts);
        CoordinatorError::Timeout {
            answered,
            needed,
            ms: self.timeout.as_millis(),
        }
    }

    /// The outcome of a request served by one replica (`call`), bounded
    /// by the request timeout.
    async fn lone_replica<T>(
        &self,
        call: impl Future<Output = Result<T, ReplicaError>>,
        needed: usize,
    ) -> Result<T, CoordinatorError> {
        match Deadline::after(self.timeout).bound(call).await {
            Some(answer) => answer.map_err(|e| e.into_coordinator(needed)),
            None => Err(self.timed_out(0, needed)),
        }
    }

    /// Sends the merged state to replicas whose answer lacked part of it.
    async fn repair(
        &self,
        topo: &Topology,
        key: &[u8],
        targets: &[Target],
        answers: &[(usize, Option<SiblingSet>)],
        merged: Option<SiblingSet>,
    ) {
        let Some(set) = &merged else { return };
        let encoded = Rc::new(set.to_bytes());
        let set = Rc::new(set.clone());
        let now = wall_clock_ms();
        for (i, answer) in answers {
            if !quorum::is_stale(answer, &merged, now, REPAIR_GRACE_MS) {
                continue;
            }
            bump(&self.router.metrics().read_repairs);
            if let Err(e) = self
                .replica_apply(
                    topo,
                    targets[*i],
                    key.to_vec(),
                    set.clone(),
                    encoded.clone(),
                )
                .await
            {
                tracing::debug!(error = %e, "read repair failed");
            }
        }
    }

    /// Live nodes after the preference list that are not already standing
    /// in for a replica of this write, in ring order.
    fn spare_stand_ins(&self, topo: &Topology, key: &[u8], targets: &[Target]) -> Vec<NodeIndex> {
        plan::spare_stand_ins(topo, key, targets, |n| self.is_live(topo, n))
    }

    /// Flushes and closes the hint store (at shutdown, after draining).
    pub async fn close(&self) -> corekv_engine::Result<()> {
        self.hints.close().await
    }
}

/// A coordinated request's deadline: one timer for the whole request, its
/// background part included. Replica calls have no timers of their own:
/// every wait on them goes through this, and the calls are dropped (their
/// link slots freed) once it passes. A timer per answer and per replica
/// call cost a timer-map insert and removal each, on every request.
struct Deadline {
    timer: glommio::timer::Timer,
}

impl Deadline {
    /// A deadline `timeout` from now.
    fn after(timeout: Duration) -> Deadline {
        Deadline {
            timer: glommio::timer::Timer::new(timeout),
        }
    }

    /// The next answer, or `None` when none are left or the deadline passed.
    async fn next<T>(
        &mut self,
        pending: &mut FuturesUnordered<Answer<T>>,
    ) -> Option<(usize, Result<T, ReplicaError>)> {
        if pending.is_empty() {
            return None;
        }
        self.bound(pending.next()).await.flatten()
    }

    /// What `work` returns, or `None` if the deadline passes first (then
    /// `work` is dropped unfinished).
    fn bound<'a, F>(&'a mut self, work: F) -> impl Future<Output = Option<F::Output>> + 'a
    where
        F: Future + 'a,
        F::Output: 'a,
    {
        // Combinators rather than `async` blocks, which would hold `work`
        // twice (captured and awaited): this future is part of every
        // request's state, which is copied whole into its box.
        futures_lite::future::or(work.map(Some), (&mut self.timer).map(|_| None))
    }
}
