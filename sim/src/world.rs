//! The simulated cluster: nodes with their replica stores, hints and
//! coordinators, a faulty network between them, clients, and the event
//! loop that drives it all in simulated time from one seed.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use corekv_cluster::coordinator::Target;
use corekv_cluster::gossip::{EndpointState, NodeMeta, NodeStatus, PeerView};
use corekv_cluster::ring::vnode_token;
use corekv_cluster::topology::Topology;
use corekv_engine::version::{CausalContext, Dot, HybridClock, SiblingSet, WriteContext};
use xxhash_rust::xxh3::Xxh3;

use crate::agenda::{Agenda, AgendaFull};
use crate::history::History;
use crate::rng::Rng;

/// A node's place in every topology of the run (members sorted by id; node
/// `i` has id `i + 1`).
pub type NodeIx = usize;

/// Replication factor of every run.
pub const REPLICATION: usize = 3;
/// Vnodes per node.
pub const VNODES: u32 = 16;
/// A coordinator's whole-request deadline, as `request_timeout_ms`.
pub const REQUEST_TIMEOUT_MS: u64 = 500;
/// How long a node that failed a call is not asked again (as a peer
/// link's backoff).
pub const SUSPECT_MS: u64 = 1_000;
/// Most hints one node holds; beyond, new hints are dropped and counted.
pub const HINTS_MAX: usize = 4_096;
/// How often a node replays hints to owners it believes live.
pub const HINT_TICK_MS: u64 = 200;
/// Hints sent per owner and tick.
pub const HINTS_PER_TICK: usize = 64;
/// A hint sent and not acknowledged for this long is sent again.
pub const HINT_RESEND_MS: u64 = 1_000;

/// A deliberate bug, planted in a test build to show the checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flaw {
    /// Coordinators answer after one acknowledgement (or replica answer)
    /// fewer than the level needs: W and R counted wrong.
    QuorumOffByOne,
    /// Hint replay drops hints instead of delivering them.
    HintsDropped,
}

/// What one run simulates.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Nodes in the cluster (3..=20).
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct keys the clients touch (few, so they contend).
    pub keys: usize,
    /// Faults and client operations happen before this simulated time.
    pub faults_end_ms: u64,
    /// Quiet time after the faults for hints to replay.
    pub settle_ms: u64,
    /// Whether writes use a sloppy quorum (stand-ins and hints).
    pub sloppy: bool,
    /// A planted bug, or none.
    pub flaw: Option<Flaw>,
    /// Keep every trace line (for `--verbose`).
    pub keep_trace: bool,
}

/// A message between nodes.
#[derive(Clone, Debug)]
pub enum Msg {
    /// Coordinator → minting replica: mint and store a write.
    Mint {
        /// The request.
        req: u64,
        /// The key.
        key: Vec<u8>,
        /// Value, or `None` for a delete.
        value: Option<Vec<u8>>,
        /// What it supersedes.
        context: WriteContext,
    },
    /// Minter → coordinator: the state to replicate, the client's context
    /// and the new dot; `None`: refused (the minter is down).
    Minted {
        /// The request.
        req: u64,
        /// The outcome.
        result: Option<(SiblingSet, CausalContext, Dot)>,
    },
    /// Coordinator → replica or stand-in: merge `state` (a stand-in keeps
    /// it as a hint for `hint_for`).
    Apply {
        /// The request (0: a read repair, not waited for).
        req: u64,
        /// The answer slot in the request.
        slot: usize,
        /// The key.
        key: Vec<u8>,
        /// The state to merge.
        state: SiblingSet,
        /// The owner a stand-in keeps it for.
        hint_for: Option<NodeIx>,
    },
    /// Replica → coordinator: applied, or refused.
    Applied {
        /// The request.
        req: u64,
        /// The slot.
        slot: usize,
        /// Whether it was applied.
        ok: bool,
    },
    /// Coordinator → replica: send your state of `key`.
    Read {
        /// The request.
        req: u64,
        /// The slot.
        slot: usize,
        /// The key.
        key: Vec<u8>,
    },
    /// Replica → coordinator: its state (`None`: refused).
    ReadAnswer {
        /// The request.
        req: u64,
        /// The slot.
        slot: usize,
        /// The state, if the replica answered.
        state: Option<Option<SiblingSet>>,
    },
    /// Hint holder → owner: a write the owner missed.
    Handoff {
        /// The hint's number at its holder.
        hint: u64,
        /// The key.
        key: Vec<u8>,
        /// The state.
        state: SiblingSet,
    },
    /// Owner → hint holder: stored.
    HandoffAck {
        /// The hint's number.
        hint: u64,
    },
}

impl Msg {
    /// The refusal a node that is down answers `self` with (as a TCP
    /// reset), or `None` for messages nobody waits on.
    fn refusal(&self) -> Option<Msg> {
        match *self {
            Msg::Mint { req, .. } => Some(Msg::Minted { req, result: None }),
            Msg::Apply { req, slot, .. } if req != 0 => Some(Msg::Applied {
                req,
                slot,
                ok: false,
            }),
            Msg::Read { req, slot, .. } => Some(Msg::ReadAnswer {
                req,
                slot,
                state: None,
            }),
            _ => None,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Msg::Mint { .. } => 1,
            Msg::Minted { .. } => 2,
            Msg::Apply { .. } => 3,
            Msg::Applied { .. } => 4,
            Msg::Read { .. } => 5,
            Msg::ReadAnswer { .. } => 6,
            Msg::Handoff { .. } => 7,
            Msg::HandoffAck { .. } => 8,
        }
    }
}

/// A hint: a write its owner missed, kept durably by another node.
#[derive(Clone, Debug)]
pub struct Hint {
    /// The hint's number at this node.
    pub id: u64,
    /// The replica it is for.
    pub owner: NodeIx,
    /// The key.
    pub key: Vec<u8>,
    /// The state to merge there.
    pub state: SiblingSet,
    /// When it was last sent (0: never).
    pub sent_ms: u64,
}

/// One node: what survives a crash (store, hints: the `batch` sync mode
/// loses nothing acknowledged) and what does not (clock, suspicions,
/// requests in flight).
pub struct Node {
    /// Whether the process runs.
    pub up: bool,
    /// Bumped at every crash, so answers to a previous life are ignored.
    pub epoch: u32,
    /// The replica's data.
    pub store: BTreeMap<Vec<u8>, SiblingSet>,
    /// Hints held for other replicas.
    pub hints: VecDeque<Hint>,
    /// The hybrid clock that mints dots.
    pub clock: HybridClock,
    /// This node's wall clock minus simulated time.
    pub skew_ms: i64,
    /// Per node: until when this node does not send it requests.
    pub suspect_until: Vec<u64>,
    /// The cluster as this node sees it.
    pub topology: Topology,
    /// Next hint number.
    pub next_hint: u64,
}

/// Something that happens at an instant.
#[derive(Debug)]
pub enum Event {
    /// A message reaches `to` (if it is up; else `from` gets a refusal).
    Deliver {
        /// Sender.
        from: NodeIx,
        /// Receiver.
        to: NodeIx,
        /// The receiver's epoch when sent (replies to a dead life are
        /// dropped).
        to_epoch: u32,
        /// The message.
        msg: Msg,
    },
    /// A coordinator's request reaches its deadline.
    Deadline {
        /// The coordinator.
        node: NodeIx,
        /// The request.
        req: u64,
    },
    /// A node replays hints.
    HintTick {
        /// The node.
        node: NodeIx,
    },
    /// A client issues its next operation.
    Client {
        /// The client.
        client: usize,
    },
    /// A scheduled fault or repair.
    Fault(Fault),
    /// The final reads at ALL that trigger read repair everywhere.
    FinalReads,
}

/// A fault, or its end.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The process stops (kill -9).
    Crash(NodeIx),
    /// It starts again.
    Restart(NodeIx),
    /// Messages from `a` to `b` are dropped (and `b` to `a` when `both`).
    Cut {
        /// One side.
        a: NodeIx,
        /// The other.
        b: NodeIx,
        /// Both directions.
        both: bool,
    },
    /// Every cut heals.
    Heal,
    /// A node's wall clock steps by `by_ms`.
    ClockStep {
        /// The node.
        node: NodeIx,
        /// The step.
        by_ms: i64,
    },
    /// The faults end: all heal, all restart, the network is perfect.
    End,
}

/// The network's faults of one run, drawn from its seed.
#[derive(Clone, Debug)]
pub struct NetFaults {
    /// Chance a message is lost, per million.
    pub drop_ppm: u64,
    /// Chance it is delivered twice, per million.
    pub dup_ppm: u64,
    /// Chance it is slow (50..=400 ms, so it is reordered), per million.
    pub slow_ppm: u64,
    /// Largest ordinary delay.
    pub delay_max_ms: u64,
}

/// A whole simulated cluster.
pub struct World {
    /// The run's settings.
    pub settings: Settings,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The agenda.
    pub agenda: Agenda<Event>,
    /// The network's randomness.
    pub net_rng: Rng,
    /// The faults' randomness.
    pub fault_rng: Rng,
    /// The clients' randomness.
    pub client_rng: Rng,
    /// The network's faults now.
    pub net: NetFaults,
    /// Directed cuts: `cut[a][b]` drops messages from a to b.
    pub cut: Vec<Vec<bool>>,
    /// Coordinator requests in flight, by id.
    pub requests: BTreeMap<u64, crate::coord::Request>,
    /// Next request id.
    pub next_req: u64,
    /// The clients.
    pub clients: Vec<crate::workload::Client>,
    /// What the clients did.
    pub history: History,
    /// Hints dropped because a node held [`HINTS_MAX`].
    pub hints_overflowed: u64,
    /// The trace digest: every event, in order.
    pub trace: Xxh3,
    /// Every trace line, when kept.
    pub trace_lines: Vec<String>,
    /// Events run.
    pub events: u64,
    /// Each node's store once hints had time to replay, before the final
    /// reads repair anything.
    pub after_hints: Vec<BTreeMap<Vec<u8>, SiblingSet>>,
}

/// The run could not continue.
#[derive(Debug)]
pub enum RunError {
    /// The agenda overflowed.
    AgendaFull,
}

impl From<AgendaFull> for RunError {
    fn from(_: AgendaFull) -> RunError {
        RunError::AgendaFull
    }
}

fn node_meta(ix: NodeIx) -> NodeMeta {
    let id = ix as u32 + 1;
    let port = 20_000 + ix as u16 * 10;
    NodeMeta {
        id,
        native_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        peer_addr: SocketAddr::from(([127, 0, 0, 1], port + 5)),
        shards: 1,
        rack: format!("r{}", ix % 3),
        dc: "dc1".into(),
        weight: 1.0,
        tokens: (0..VNODES).map(|i| vnode_token(id, i)).collect(),
    }
}

/// The topology node `me` holds: every node a normal member, up (this
/// simulation models liveness by each coordinator's own suspicions, as a
/// shard's peer links do, not by gossip).
fn topology_of(n: usize, me: NodeIx) -> Topology {
    let view: Vec<PeerView> = (0..n)
        .map(|i| PeerView {
            state: EndpointState {
                generation: 1,
                heartbeat: 1,
                version: 1,
                status: NodeStatus::Normal,
                meta: node_meta(i),
            },
            up: true,
        })
        .collect();
    Topology::from_view("sim", me as u32 + 1, REPLICATION, &view)
}

impl World {
    /// The world of `seed`: nodes, clients and the first events.
    pub fn new(seed: u64, settings: Settings) -> Result<World, RunError> {
        let mut root = Rng::new(seed);
        let net_rng = root.fork();
        let mut fault_rng = root.fork();
        let client_rng = root.fork();
        let n = settings.nodes;
        let nodes = (0..n)
            .map(|i| Node {
                up: true,
                epoch: 0,
                store: BTreeMap::new(),
                hints: VecDeque::new(),
                clock: HybridClock::new(),
                skew_ms: fault_rng.below(10_001) as i64 - 5_000,
                suspect_until: vec![0; n],
                topology: topology_of(n, i),
                next_hint: 1,
            })
            .collect();
        let net = NetFaults {
            drop_ppm: fault_rng.below(50_001),
            dup_ppm: fault_rng.below(20_001),
            slow_ppm: fault_rng.below(100_001),
            delay_max_ms: fault_rng.between(1, 5),
        };
        let mut world = World {
            clients: (0..settings.clients)
                .map(|_| crate::workload::Client::default())
                .collect(),
            settings,
            nodes,
            agenda: Agenda::new(),
            net_rng,
            fault_rng,
            client_rng,
            net,
            cut: vec![vec![false; n]; n],
            requests: BTreeMap::new(),
            next_req: 1,
            history: History::default(),
            hints_overflowed: 0,
            trace: Xxh3::new(),
            trace_lines: Vec::new(),
            events: 0,
            after_hints: Vec::new(),
        };
        world.schedule_faults()?;
        for node in 0..n {
            world
                .agenda
                .after(HINT_TICK_MS + node as u64, Event::HintTick { node })?;
        }
        for client in 0..world.settings.clients {
            let start = world.client_rng.below(50);
            world.agenda.after(start, Event::Client { client })?;
        }
        let end = world.settings.faults_end_ms + world.settings.settle_ms;
        world.agenda.after(end, Event::FinalReads)?;
        Ok(world)
    }

    /// The fault schedule: one fault every 0.3 to 2 s until the end, each
    /// undone a while later.
    fn schedule_faults(&mut self) -> Result<(), RunError> {
        let n = self.settings.nodes;
        let end = self.settings.faults_end_ms;
        let mut t = self.fault_rng.between(200, 2_000);
        while t < end {
            let node = self.fault_rng.below(n as u64) as usize;
            let lasting = self.fault_rng.between(300, 4_000);
            match self.fault_rng.below(4) {
                0 => {
                    self.agenda.after(t, Event::Fault(Fault::Crash(node)))?;
                    self.agenda
                        .after((t + lasting).min(end), Event::Fault(Fault::Restart(node)))?;
                }
                1 | 2 => {
                    let b = (node + 1 + self.fault_rng.below(n as u64 - 1) as usize) % n;
                    let both = self.fault_rng.below(2) == 0;
                    self.agenda
                        .after(t, Event::Fault(Fault::Cut { a: node, b, both }))?;
                    self.agenda
                        .after((t + lasting).min(end), Event::Fault(Fault::Heal))?;
                }
                _ => {
                    let by_ms = self.fault_rng.below(20_001) as i64 - 10_000;
                    self.agenda
                        .after(t, Event::Fault(Fault::ClockStep { node, by_ms }))?;
                }
            }
            t += self.fault_rng.between(300, 2_000);
        }
        self.agenda.after(end, Event::Fault(Fault::End))?;
        Ok(())
    }

    /// Node `ix`'s wall clock now, in ms.
    pub fn wall_ms(&self, ix: NodeIx) -> u64 {
        let now = self.agenda.now_ms() as i64 + 1_800_000_000_000 + self.nodes[ix].skew_ms;
        now.max(0) as u64
    }

    /// Whether `from` may send `to` requests (its own suspicion of it).
    pub fn believes_live(&self, from: NodeIx, to: NodeIx) -> bool {
        self.nodes[from].suspect_until[to] <= self.agenda.now_ms()
    }

    /// `from` saw a call to `to` fail.
    pub fn suspect(&mut self, from: NodeIx, to: NodeIx) {
        self.nodes[from].suspect_until[to] = self.agenda.now_ms() + SUSPECT_MS;
    }

    /// Records one trace line (hashed always, kept when asked).
    pub fn note(&mut self, parts: &[u64], line: impl FnOnce() -> String) {
        self.trace.update(&self.agenda.now_ms().to_le_bytes());
        for p in parts {
            self.trace.update(&p.to_le_bytes());
        }
        if self.settings.keep_trace {
            let l = format!("{:>7} ms  {}", self.agenda.now_ms(), line());
            self.trace_lines.push(l);
        }
    }

    /// Sends `msg` from `from` to `to` through the faulty network.
    pub fn send(&mut self, from: NodeIx, to: NodeIx, msg: Msg) -> Result<(), RunError> {
        if from == to {
            let to_epoch = self.nodes[to].epoch;
            self.agenda.after(
                0,
                Event::Deliver {
                    from,
                    to,
                    to_epoch,
                    msg,
                },
            )?;
            return Ok(());
        }
        if self.cut[from][to] || self.net_rng.chance(self.net.drop_ppm) {
            let kind = msg.kind();
            self.note(&[9, from as u64, to as u64, u64::from(kind)], || {
                format!("net: dropped {kind} from {from} to {to}")
            });
            return Ok(());
        }
        // Internode requests ride TCP, which never duplicates: only
        // idempotent messages (applies, reads, hint traffic, answers) are
        // doubled, as a retry on a new connection would.
        let duplicable = !matches!(msg, Msg::Mint { .. });
        let copies = if duplicable && self.net_rng.chance(self.net.dup_ppm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.net_rng.between(0, self.net.delay_max_ms);
            if self.net_rng.chance(self.net.slow_ppm) {
                delay += self.net_rng.between(50, 400);
            }
            let to_epoch = self.nodes[to].epoch;
            self.agenda.after(
                delay,
                Event::Deliver {
                    from,
                    to,
                    to_epoch,
                    msg: msg.clone(),
                },
            )?;
        }
        Ok(())
    }

    /// Runs the simulation to its end.
    pub fn run(&mut self) -> Result<(), RunError> {
        let end =
            self.settings.faults_end_ms + self.settings.settle_ms + 2 * REQUEST_TIMEOUT_MS + 1_000;
        while let Some(event) = self.agenda.pop_until(end) {
            self.events += 1;
            self.step(event)?;
        }
        self.agenda.advance_to(end);
        Ok(())
    }

    fn step(&mut self, event: Event) -> Result<(), RunError> {
        match event {
            Event::Deliver {
                from,
                to,
                to_epoch,
                msg,
            } => {
                if !self.nodes[to].up {
                    // A node that is down answers with a reset, unless the
                    // path back is cut too.
                    if let Some(refusal) = msg.refusal() {
                        if !self.cut[to][from] {
                            let epoch = self.nodes[from].epoch;
                            self.agenda.after(
                                1,
                                Event::Deliver {
                                    from: to,
                                    to: from,
                                    to_epoch: epoch,
                                    msg: refusal,
                                },
                            )?;
                        }
                    }
                    return Ok(());
                }
                if to_epoch != self.nodes[to].epoch {
                    return Ok(());
                }
                let kind = msg.kind();
                self.note(&[1, from as u64, to as u64, u64::from(kind)], || {
                    format!("deliver {msg:?} from {from} to {to}")
                });
                self.receive(from, to, msg)
            }
            Event::Deadline { node, req } => self.deadline(node, req),
            Event::HintTick { node } => self.hint_tick(node),
            Event::Client { client } => self.client_step(client),
            Event::Fault(f) => self.fault(f),
            Event::FinalReads => self.final_reads(),
        }
    }

    fn fault(&mut self, f: Fault) -> Result<(), RunError> {
        self.note(&[2], || format!("fault {f:?}"));
        match f {
            Fault::Crash(ix) => self.crash(ix)?,
            Fault::Restart(ix) => self.restart(ix),
            Fault::Cut { a, b, both } => {
                self.cut[a][b] = true;
                if both {
                    self.cut[b][a] = true;
                }
            }
            Fault::Heal => {
                for row in &mut self.cut {
                    row.iter_mut().for_each(|c| *c = false);
                }
            }
            Fault::ClockStep { node, by_ms } => self.nodes[node].skew_ms += by_ms,
            Fault::End => {
                for row in &mut self.cut {
                    row.iter_mut().for_each(|c| *c = false);
                }
                for ix in 0..self.nodes.len() {
                    self.restart(ix);
                }
                self.net = NetFaults {
                    drop_ppm: 0,
                    dup_ppm: 0,
                    slow_ppm: 0,
                    delay_max_ms: 1,
                };
            }
        }
        Ok(())
    }

    /// Stops node `ix`: its requests in flight are lost (their clients are
    /// told the connection broke), its store and hints survive.
    fn crash(&mut self, ix: NodeIx) -> Result<(), RunError> {
        if !self.nodes[ix].up {
            return Ok(());
        }
        let node = &mut self.nodes[ix];
        node.up = false;
        node.epoch += 1;
        for h in &mut node.hints {
            h.sent_ms = 0;
        }
        let lost: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.node == ix)
            .map(|(&id, _)| id)
            .collect();
        for id in lost {
            if let Some(r) = self.requests.remove(&id) {
                self.coordinator_lost(r)?;
            }
        }
        Ok(())
    }

    fn restart(&mut self, ix: NodeIx) {
        let n = self.nodes.len();
        let node = &mut self.nodes[ix];
        if node.up {
            return;
        }
        node.up = true;
        // A new process: a fresh clock (the stored dots keep new ones
        // above the old), no suspicions.
        node.clock = HybridClock::new();
        node.suspect_until = vec![0; n];
    }

    /// The key's replicas (the same on every node: membership is fixed).
    pub fn owners(&self, key: &[u8]) -> Vec<NodeIx> {
        self.nodes[0]
            .topology
            .ring()
            .replicas(corekv_engine::token_of(key))
            .to_vec()
    }

    /// Whether `t` is a copy at one of the key's own replicas.
    pub fn is_owner_target(t: &Target) -> bool {
        matches!(t, Target::Local | Target::Remote(_))
    }
}
