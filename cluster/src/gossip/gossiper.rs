//! The gossip state machine (sans-io): fed ticks and received messages
//! with the time in ms, it answers with messages to send and keeps the
//! membership view and each peer's liveness.
//!
//! Each round (Cassandra's scheme) a node bumps its heartbeat and sends a
//! SYN with a digest of everything it knows to one random live peer, with
//! probability `down / (live + 1)` to one peer it believes down (so a
//! recovered node is noticed), and to a random seed when the live peer was
//! not one (so partitions of the seed-less kind heal). The partner answers
//! ACK with what the sender lacks and digests of what it lacks itself; the
//! sender completes with ACK2. Every piece of news carries its counters,
//! so applying it is idempotent and order-independent: newer always wins.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::detector::ArrivalWindow;
use super::state::{Delta, Digest, EndpointState, NodeMeta, NodeStatus};
use super::wire::{self, Message};

/// Tunables of the protocol.
#[derive(Clone, Debug)]
pub struct GossipSettings {
    /// Time between rounds.
    pub interval_ms: u64,
    /// Suspicion level above which a silent node is marked down.
    pub phi_convict: f64,
    /// Internode addresses to contact when nothing else is known.
    pub seeds: Vec<SocketAddr>,
}

/// What changed in the view (for logs and metrics).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A node was heard of for the first time.
    Joined(u32),
    /// A node's heartbeat stopped advancing long enough (phi, silence ms).
    Down(u32, f64, u64),
    /// A node marked down is heard from again.
    Up(u32),
    /// A node restarted (new generation) or changed status/metadata.
    Changed(u32),
    /// Another node declared this one left (removenode) while it ran; the
    /// cluster no longer gives it ranges.
    RemovedByPeer,
}

/// One node as this node sees it.
#[derive(Clone, Debug)]
pub struct PeerView {
    /// Its latest known state.
    pub state: EndpointState,
    /// The failure detector's verdict (always true for this node).
    pub up: bool,
}

struct Peer {
    state: EndpointState,
    window: ArrivalWindow,
    up: bool,
}

/// One node's gossip participant.
pub struct Gossiper {
    cluster_hash: u64,
    local: EndpointState,
    peers: BTreeMap<u32, Peer>,
    settings: GossipSettings,
    rng: u64,
    /// Bumped on every change of the ring or liveness.
    view_version: u64,
    events: Vec<Event>,
    /// News of new ids dropped because the view was full (MEMBERS_MAX).
    members_refused: u64,
}

impl Gossiper {
    /// A participant announcing `meta` with `status`, started at wall-clock
    /// `generation` ms, in the cluster named `cluster`.
    pub fn new(
        cluster: &str,
        meta: NodeMeta,
        status: NodeStatus,
        generation: u64,
        settings: GossipSettings,
    ) -> Gossiper {
        let seed = generation ^ u64::from(meta.id).rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
        Gossiper {
            cluster_hash: wire::cluster_hash(cluster),
            local: EndpointState {
                generation,
                heartbeat: 0,
                version: 1,
                status,
                meta,
            },
            peers: BTreeMap::new(),
            settings,
            rng: seed | 1,
            view_version: 1,
            events: Vec::new(),
            members_refused: 0,
        }
    }

    /// Adds what an earlier run of this node knew of others (so a restart
    /// serves with the right ring at once). They count as up until the
    /// detector, started now, says otherwise.
    pub fn remember(&mut self, states: Vec<EndpointState>, now_ms: u64) {
        for state in states {
            let id = state.meta.id;
            if id == self.local.meta.id || self.peers.contains_key(&id) {
                continue;
            }
            self.peers.insert(
                id,
                Peer {
                    state,
                    window: ArrivalWindow::new(now_ms, self.settings.interval_ms),
                    up: true,
                },
            );
            self.view_version += 1;
        }
    }

    /// This node's id.
    pub fn id(&self) -> u32 {
        self.local.meta.id
    }

    /// Bumped whenever the ring or a node's liveness changes.
    pub fn view_version(&self) -> u64 {
        self.view_version
    }

    /// The events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Announces a new status for this node.
    pub fn set_status(&mut self, status: NodeStatus) {
        if self.local.status != status {
            self.local.status = status;
            self.local.version += 1;
            self.view_version += 1;
        }
    }

    /// Declares node `id` gone on its behalf (removenode of a dead node):
    /// its status becomes left with a newer version, which spreads like
    /// any news. False when the node is unknown or this node itself.
    pub fn remove(&mut self, id: u32) -> bool {
        let Some(p) = self.peers.get_mut(&id) else {
            return false;
        };
        p.state.status = NodeStatus::Left;
        p.state.version += 1;
        self.view_version += 1;
        self.events.push(Event::Changed(id));
        true
    }

    /// Every known node, this one included, by id.
    pub fn view(&self) -> Vec<PeerView> {
        let mut all: Vec<PeerView> = self
            .peers
            .values()
            .map(|p| PeerView {
                state: p.state.clone(),
                up: p.up,
            })
            .collect();
        all.push(PeerView {
            state: self.local.clone(),
            up: true,
        });
        all.sort_by_key(|p| p.state.meta.id);
        all
    }

    /// States of the other nodes (what to remember across a restart).
    pub fn peer_states(&self) -> Vec<EndpointState> {
        self.peers.values().map(|p| p.state.clone()).collect()
    }

    /// Whether anything was heard from another node yet.
    pub fn knows_peers(&self) -> bool {
        !self.peers.is_empty()
    }

    /// One round: bumps the heartbeat, runs the failure detector, and
    /// returns the SYNs to send.
    pub fn tick(&mut self, now_ms: u64) -> Vec<(SocketAddr, Message)> {
        self.local.heartbeat += 1;
        for (&id, p) in self.peers.iter_mut() {
            if !p.up || p.state.status == NodeStatus::Left {
                continue;
            }
            let phi = p.window.phi(now_ms);
            if phi > self.settings.phi_convict {
                p.up = false;
                self.view_version += 1;
                self.events
                    .push(Event::Down(id, phi, p.window.silence_ms(now_ms)));
            }
        }
        let live: Vec<SocketAddr> = self.addrs(true);
        let down: Vec<SocketAddr> = self.addrs(false);
        let mut targets: Vec<SocketAddr> = Vec::with_capacity(3);
        if let Some(&a) = self.pick(&live) {
            targets.push(a);
        }
        if !down.is_empty() {
            let p = down.len() as f64 / (live.len() + 1) as f64;
            if self.chance() < p {
                if let Some(&a) = self.pick(&down) {
                    targets.push(a);
                }
            }
        }
        let seeds: Vec<SocketAddr> = self
            .settings
            .seeds
            .iter()
            .copied()
            .filter(|&s| s != self.local.meta.peer_addr)
            .collect();
        let reached_seed = targets.iter().any(|t| seeds.contains(t));
        if !reached_seed && (live.is_empty() || self.chance() < 0.5) {
            if let Some(&a) = self.pick(&seeds) {
                targets.push(a);
            }
        }
        targets.dedup();
        let syn = self.syn();
        targets.into_iter().map(|t| (t, syn.clone())).collect()
    }

    /// What a stopping node sends every live peer: its own latest state,
    /// so a status change made just before the stop (left, say) is not
    /// lost with the process.
    pub fn farewell(&self) -> Vec<(SocketAddr, Message)> {
        let news = Message::Ack2 {
            from: self.local.meta.id,
            states: vec![Delta::for_partner(&self.local, None)],
        };
        self.addrs(true)
            .into_iter()
            .map(|a| (a, news.clone()))
            .collect()
    }

    /// Handles a message from `from`; returns the answers to send.
    pub fn receive(
        &mut self,
        from: SocketAddr,
        msg: Message,
        now_ms: u64,
    ) -> Vec<(SocketAddr, Message)> {
        match msg {
            Message::Syn { digests, .. } => {
                let (states, requests) = self.compare(&digests);
                vec![(
                    from,
                    Message::Ack {
                        from: self.local.meta.id,
                        states,
                        requests,
                    },
                )]
            }
            Message::Ack {
                states, requests, ..
            } => {
                for d in states {
                    self.apply(d, now_ms);
                }
                let states = self.answer(&requests);
                if states.is_empty() {
                    Vec::new()
                } else {
                    vec![(
                        from,
                        Message::Ack2 {
                            from: self.local.meta.id,
                            states,
                        },
                    )]
                }
            }
            Message::Ack2 { states, .. } => {
                for d in states {
                    self.apply(d, now_ms);
                }
                Vec::new()
            }
        }
    }

    /// News of new members dropped because the view holds
    /// [`MEMBERS_MAX`](super::MEMBERS_MAX) nodes.
    pub fn members_refused(&self) -> u64 {
        self.members_refused
    }

    /// Whether `addr` is the internode address of a member this node knows.
    pub fn is_member_at(&self, addr: SocketAddr) -> bool {
        self.peers.values().any(|p| p.state.meta.peer_addr == addr)
    }

    /// The cluster-name hash messages must carry.
    pub fn cluster_hash(&self) -> u64 {
        self.cluster_hash
    }

    fn syn(&self) -> Message {
        let mut digests: Vec<Digest> = self.peers.values().map(|p| p.state.digest()).collect();
        digests.push(self.local.digest());
        Message::Syn {
            from: self.local.meta.id,
            digests,
        }
    }

    fn state_of(&self, id: u32) -> Option<&EndpointState> {
        if id == self.local.meta.id {
            Some(&self.local)
        } else {
            self.peers.get(&id).map(|p| &p.state)
        }
    }

    /// For a partner's digests: the news it lacks (within one datagram)
    /// and digests of what this node lacks.
    fn compare(&self, digests: &[Digest]) -> (Vec<Delta>, Vec<Digest>) {
        let mut requests = Vec::new();
        let mut wanted: Vec<(&EndpointState, Option<&Digest>)> = Vec::new();
        for d in digests {
            match self.state_of(d.id) {
                None => requests.push(Digest {
                    id: d.id,
                    generation: 0,
                    heartbeat: 0,
                    version: 0,
                }),
                Some(mine) => {
                    match (d.generation, d.version, d.heartbeat).cmp(&(
                        mine.generation,
                        mine.version,
                        mine.heartbeat,
                    )) {
                        std::cmp::Ordering::Greater => requests.push(mine.digest()),
                        std::cmp::Ordering::Less => wanted.push((mine, Some(d))),
                        std::cmp::Ordering::Equal => {}
                    }
                }
            }
        }
        let listed = |id: u32| digests.iter().any(|d| d.id == id);
        if !listed(self.local.meta.id) {
            wanted.push((&self.local, None));
        }
        for p in self.peers.values() {
            if !listed(p.state.meta.id) {
                wanted.push((&p.state, None));
            }
        }
        (Self::fit(wanted), requests)
    }

    /// News for a partner's requests.
    fn answer(&self, requests: &[Digest]) -> Vec<Delta> {
        let wanted = requests
            .iter()
            .filter_map(|d| self.state_of(d.id).map(|s| (s, Some(d))))
            .filter(|(s, d)| {
                d.is_none_or(|d| {
                    (s.generation, s.version, s.heartbeat) > (d.generation, d.version, d.heartbeat)
                })
            })
            .collect();
        Self::fit(wanted)
    }

    /// As many deltas as fit in one datagram; the rest go next round.
    fn fit(wanted: Vec<(&EndpointState, Option<&Digest>)>) -> Vec<Delta> {
        let mut budget = wire::DATAGRAM_BYTES_MAX - wire::HEADER_BYTES - 64;
        let mut out = Vec::with_capacity(wanted.len());
        for (state, known) in wanted {
            let delta = Delta::for_partner(state, known);
            let size = wire::delta_len(&delta);
            if size > budget {
                continue;
            }
            budget -= size;
            out.push(delta);
        }
        out
    }

    fn apply(&mut self, d: Delta, now_ms: u64) {
        if d.id == self.local.meta.id {
            if d.generation > self.local.generation {
                tracing::error!(
                    node = d.id,
                    "another process announces this node's id with a newer generation; node ids must be unique"
                );
            }
            let removed = d.generation == self.local.generation
                && d.version > self.local.version
                && matches!(d.full, Some((NodeStatus::Left, _)));
            if removed && self.local.status != NodeStatus::Left {
                // Accept the verdict: announcing normal again with a lower
                // version would never win, and serving as if in the ring
                // would split the cluster's view.
                self.local.status = NodeStatus::Left;
                self.local.version = d.version;
                self.view_version += 1;
                self.events.push(Event::RemovedByPeer);
            }
            return;
        }
        let interval = self.settings.interval_ms;
        match self.peers.get_mut(&d.id) {
            None => {
                let Some((status, meta)) = d.full else { return };
                if self.peers.len() + 1 >= super::MEMBERS_MAX {
                    self.members_refused += 1;
                    return;
                }
                self.peers.insert(
                    d.id,
                    Peer {
                        state: EndpointState {
                            generation: d.generation,
                            heartbeat: d.heartbeat,
                            version: d.version,
                            status,
                            meta,
                        },
                        window: ArrivalWindow::new(now_ms, interval),
                        up: true,
                    },
                );
                self.view_version += 1;
                self.events.push(Event::Joined(d.id));
            }
            Some(p) => {
                if d.generation < p.state.generation {
                    return;
                }
                if d.generation > p.state.generation {
                    // A restart: needs its metadata, which may have changed.
                    let Some((status, meta)) = d.full else { return };
                    p.state = EndpointState {
                        generation: d.generation,
                        heartbeat: d.heartbeat,
                        version: d.version,
                        status,
                        meta,
                    };
                    p.window = ArrivalWindow::new(now_ms, interval);
                    self.view_version += 1;
                    self.events.push(Event::Changed(d.id));
                    if !p.up {
                        p.up = true;
                        self.events.push(Event::Up(d.id));
                    }
                    return;
                }
                if d.version > p.state.version {
                    if let Some((status, meta)) = d.full {
                        p.state.version = d.version;
                        p.state.status = status;
                        p.state.meta = meta;
                        self.view_version += 1;
                        self.events.push(Event::Changed(d.id));
                    }
                }
                if d.heartbeat > p.state.heartbeat {
                    p.state.heartbeat = d.heartbeat;
                    p.window.record(now_ms);
                    if !p.up {
                        p.up = true;
                        self.view_version += 1;
                        self.events.push(Event::Up(d.id));
                    }
                }
            }
        }
    }

    fn addrs(&self, up: bool) -> Vec<SocketAddr> {
        self.peers
            .values()
            .filter(|p| p.up == up && p.state.status != NodeStatus::Left)
            .map(|p| p.state.meta.peer_addr)
            .collect()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough to spread partners, no crypto needed.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self) -> f64 {
        (self.next_random() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, from: &'a [SocketAddr]) -> Option<&'a SocketAddr> {
        if from.is_empty() {
            return None;
        }
        let i = (self.next_random() % from.len() as u64) as usize;
        from.get(i)
    }
}
