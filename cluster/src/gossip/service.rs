//! The gossip thread: drives a [`Gossiper`] over a UDP socket on the
//! node's internode address, publishes a new topology snapshot to the
//! shards whenever membership or liveness changes, logs each change once,
//! and remembers the peers it knew in `DATA_DIR/peers.json` so a restarted
//! node serves with the right ring from its first request.
//!
//! It runs on its own OS thread, not on a shard: a shard busy with
//! requests must not delay heartbeats (that is how flapping starts), and a
//! stalled process (SIGSTOP, swap storm) must stop heartbeating (that is
//! how it gets detected).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::gossiper::{Event, GossipSettings, Gossiper};
use super::state::{EndpointState, NodeStatus};
use super::wire::{self, WireError};
use crate::error::{Error, Result};
use crate::runtime::config::NodeConfig;
use crate::runtime::control::NodeControl;
use crate::runtime::datadir::write_atomically;
use crate::topology::{Member, SharedTopology, Topology};
use crate::StopHandle;

/// How long a first start waits to hear from a seed before serving alone.
const FIRST_CONTACT_TIMEOUT: Duration = Duration::from_secs(10);
/// Version of `peers.json`.
const PEERS_FORMAT: u32 = 1;

/// Figures of the gossip thread, read by the admin endpoint.
#[derive(Debug, Default)]
pub struct GossipStats {
    /// Rounds run.
    pub rounds: AtomicU64,
    /// Failure-detector verdict changes (up → down or down → up).
    pub state_changes: AtomicU64,
    /// Nodes joined or restarted (new generation) as seen here.
    pub membership_changes: AtomicU64,
    /// Last SYN → ACK round trip, µs.
    pub round_trip_us_last: AtomicU64,
    /// Sum and count of round trips, µs (for the mean).
    pub round_trip_us_sum: AtomicU64,
    /// Round trips measured.
    pub round_trips: AtomicU64,
    /// Datagrams dropped as malformed, damaged or foreign.
    pub rejected: AtomicU64,
    /// Of those, dropped for authentication: no MAC where the cluster has
    /// a secret, a wrong MAC, or a MAC where this node has no secret.
    pub unauthenticated: AtomicU64,
    /// Authenticated datagrams dropped as replayed or stale.
    pub replays: AtomicU64,
    /// Replies cut to the size of the request (sender not a member).
    pub replies_trimmed: AtomicU64,
    /// News of new members dropped because the view was full.
    pub members_refused: AtomicU64,
    /// Members believed up (this node included).
    pub members_up: AtomicU64,
    /// Members believed down.
    pub members_down: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct PeersFile {
    format: u32,
    cluster: String,
    peers: Vec<RememberedPeer>,
}

#[derive(Serialize, Deserialize)]
struct RememberedPeer {
    member: Member,
    generation: u64,
    version: u64,
    status: String,
}

/// A running gossip thread and what it publishes.
pub struct Gossip {
    /// The topology snapshots it publishes.
    pub topology: Arc<SharedTopology>,
    /// Its figures.
    pub stats: Arc<GossipStats>,
    /// The thread; it ends (after telling its peers) once the node stops.
    pub thread: std::thread::JoinHandle<()>,
}

/// Binds the gossip socket, loads remembered peers, publishes the first
/// topology and starts the thread. On a first start with seeds, returns
/// only once a seed answered (or after a bounded wait), so the node never
/// serves with a ring of itself alone while a cluster exists.
pub fn start(
    config: &NodeConfig,
    status: NodeStatus,
    control: Arc<NodeControl>,
    stop: StopHandle,
) -> Result<Gossip> {
    let socket = UdpSocket::bind(config.peer_addr).map_err(|e| Error::Io {
        context: format!("binding the gossip socket (UDP {})", config.peer_addr),
        source: e,
    })?;
    let settings = GossipSettings {
        interval_ms: config.gossip_interval_ms.max(1),
        phi_convict: config.phi_convict_threshold,
        seeds: config.seeds.clone(),
    };
    // Never smaller than the last start's, even after a clock step back.
    let generation =
        super::generation::next(&config.data_dir, corekv_engine::version::wall_clock_ms())?;
    let meta = Topology::local_meta(config);
    let mut gossiper = Gossiper::new(
        &config.cluster_name,
        meta.clone(),
        status,
        generation,
        settings,
    );
    let peers_path = config.data_dir.join("peers.json");
    let remembered = load_peers(&peers_path, &config.cluster_name)?;
    let had_peers = !remembered.is_empty();
    let clock = Instant::now();
    gossiper.remember(remembered, 0);
    let shared = Arc::new(SharedTopology::new(snapshot(config, &gossiper)));
    let stats = Arc::new(GossipStats::default());
    let mut node = GossipNode {
        socket,
        gossiper,
        shared: shared.clone(),
        stats: stats.clone(),
        config: config.clone(),
        peers_path,
        clock,
        published: 0,
        syn_sent: HashMap::new(),
        interval: Duration::from_millis(config.gossip_interval_ms.max(1)),
        control,
        seen_status: 0,
        seen_removals: 0,
        secret: config.cluster_secret.clone(),
        replay: super::replay::ReplayGuard::default(),
        stamp: 0,
    };
    node.publish_if_changed();
    let seeds_elsewhere = config.seeds.iter().any(|&s| s != meta.peer_addr);
    let (first_contact_tx, first_contact) = crossbeam_channel::bounded::<()>(1);
    let thread = std::thread::Builder::new()
        .name("corekv-gossip".into())
        .spawn(move || node.run(&stop, first_contact_tx))
        .map_err(|e| Error::Io {
            context: "starting the gossip thread".into(),
            source: e,
        })?;
    if seeds_elsewhere && !had_peers {
        tracing::info!(seeds = ?config.seeds, "joining: waiting for a seed to answer");
        if first_contact.recv_timeout(FIRST_CONTACT_TIMEOUT).is_err() {
            tracing::warn!(
                seeds = ?config.seeds,
                "no seed answered within {} s; serving alone until one does",
                FIRST_CONTACT_TIMEOUT.as_secs()
            );
        }
    }
    Ok(Gossip {
        topology: shared,
        stats,
        thread,
    })
}

struct GossipNode {
    socket: UdpSocket,
    gossiper: Gossiper,
    shared: Arc<SharedTopology>,
    stats: Arc<GossipStats>,
    config: NodeConfig,
    peers_path: PathBuf,
    clock: Instant,
    published: u64,
    syn_sent: HashMap<SocketAddr, Instant>,
    interval: Duration,
    control: Arc<NodeControl>,
    seen_status: u64,
    seen_removals: u64,
    /// Authenticates every datagram when set.
    secret: Option<crate::secret::ClusterSecret>,
    replay: super::replay::ReplayGuard,
    /// The last stamp sent.
    stamp: u64,
}

impl GossipNode {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Until the node stops: a round every interval, answers in between.
    fn run(mut self, stop: &StopHandle, first_contact: crossbeam_channel::Sender<()>) {
        let mut buf = vec![0u8; wire::DATAGRAM_BYTES_MAX + 1];
        let mut next_round = Instant::now();
        let mut contacted = false;
        let mut rejected_logged = Instant::now() - Duration::from_secs(60);
        while !stop.is_stopped() {
            let now = Instant::now();
            if now >= next_round {
                self.round();
                next_round += self.interval;
                if next_round < now {
                    // Fell behind (the process was paused): no burst of rounds.
                    next_round = now + self.interval;
                }
            }
            let wait = next_round
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            if self.socket.set_read_timeout(Some(wait)).is_err() {
                std::thread::sleep(wait);
                continue;
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => match self.accept(&buf[..n]) {
                    Ok(msg) => {
                        // An ACK answering a SYN this node sent is expected;
                        // anything else from a stranger may carry a spoofed
                        // source address.
                        let expected = matches!(msg, wire::Message::Ack { .. })
                            && self.syn_sent.contains_key(&from);
                        if let wire::Message::Ack { .. } = msg {
                            self.note_round_trip(from);
                        }
                        let now_ms = self.now_ms();
                        let mut out = self.gossiper.receive(from, msg, now_ms);
                        if self.secret.is_none() && !expected && !self.gossiper.is_member_at(from) {
                            // Unverifiable sender (its address may be
                            // spoofed): answer no more than it sent.
                            for (_, reply) in &mut out {
                                if wire::shrink_to(reply, n) {
                                    self.stats.replies_trimmed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        self.stats
                            .members_refused
                            .store(self.gossiper.members_refused(), Ordering::Relaxed);
                        self.send(out);
                    }
                    Err(reason) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        // At most one line a minute for a noisy sender.
                        if rejected_logged.elapsed() > Duration::from_secs(60) {
                            rejected_logged = Instant::now();
                            tracing::warn!(%from, %reason, "gossip datagram dropped (this line at most once a minute; see corekv_gossip_rejected_total)");
                        }
                    }
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    // ICMP errors of earlier sends surface here (e.g. a
                    // seed not started yet); nothing to do.
                    tracing::trace!(error = %e, "gossip receive");
                }
            }
            if let Some(status) = self.control.take_announcement(&mut self.seen_status) {
                tracing::info!(
                    status = status.name(),
                    "announcing a new status for this node"
                );
                self.gossiper.set_status(status);
                self.persist();
            }
            for id in self.control.take_removals(&mut self.seen_removals) {
                if self.gossiper.remove(id) {
                    tracing::warn!(node = id, "node removed from the cluster (removenode)");
                    self.persist();
                }
            }
            self.publish_if_changed();
            if !contacted && self.gossiper.knows_peers() {
                contacted = true;
                let _ = first_contact.try_send(());
            }
        }
        let out = self.gossiper.farewell();
        self.send(out);
        self.persist();
    }

    fn round(&mut self) {
        let now_ms = self.now_ms();
        let out = self.gossiper.tick(now_ms);
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        for (to, _) in &out {
            self.syn_sent.insert(*to, now);
        }
        self.send(out);
    }

    fn note_round_trip(&mut self, from: SocketAddr) {
        if let Some(sent) = self.syn_sent.remove(&from) {
            let us = sent.elapsed().as_micros() as u64;
            self.stats.round_trip_us_last.store(us, Ordering::Relaxed);
            self.stats
                .round_trip_us_sum
                .fetch_add(us, Ordering::Relaxed);
            self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Decodes, authenticates and replay-checks a datagram; the reason
    /// when it is dropped (counted).
    fn accept(&mut self, bytes: &[u8]) -> std::result::Result<wire::Message, String> {
        let received = wire::open(self.gossiper.cluster_hash(), self.secret.as_ref(), bytes)
            .map_err(|e| {
                if matches!(
                    e,
                    WireError::Unauthenticated | WireError::BadMac | WireError::NoSecret
                ) {
                    self.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
                }
                e.to_string()
            })?;
        if let Some(stamp) = received.stamp {
            let now_ms = corekv_engine::version::wall_clock_ms();
            self.replay
                .check(received.msg.sender(), stamp, now_ms)
                .map_err(|e| {
                    self.stats.replays.fetch_add(1, Ordering::Relaxed);
                    e.to_string()
                })?;
        }
        Ok(received.msg)
    }

    fn send(&mut self, out: Vec<(SocketAddr, wire::Message)>) {
        for (to, msg) in out {
            let auth = match &self.secret {
                Some(secret) => {
                    let now_us = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
                    self.stamp = super::replay::next_stamp(self.stamp, now_us);
                    Some((secret, self.stamp))
                }
                None => None,
            };
            let bytes = wire::seal(self.gossiper.cluster_hash(), auth, &msg);
            if let Err(e) = self.socket.send_to(&bytes, to) {
                tracing::trace!(%to, error = %e, "gossip send");
            }
        }
    }

    /// Publishes a new snapshot when the view changed, logs what changed,
    /// and remembers the membership on disk when it changed.
    fn publish_if_changed(&mut self) {
        let version = self.gossiper.view_version();
        if version == self.published {
            return;
        }
        self.published = version;
        let mut membership_changed = false;
        for event in self.gossiper.take_events() {
            match event {
                Event::Joined(id) => {
                    membership_changed = true;
                    self.stats
                        .membership_changes
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = id, "node joined the view");
                }
                Event::Changed(id) => {
                    membership_changed = true;
                    self.stats
                        .membership_changes
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = id, "node restarted or changed its status");
                }
                Event::Down(id, phi, silent_ms) => {
                    self.stats.state_changes.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        node = id,
                        phi = format!("{phi:.1}"),
                        silent_ms,
                        "node is down"
                    );
                }
                Event::RemovedByPeer => {
                    membership_changed = true;
                    if let Err(e) =
                        crate::movement::save_node_status(&self.config.data_dir, NodeStatus::Left)
                    {
                        tracing::warn!(error = %e, "could not save node-state.json");
                    }
                    tracing::error!("this node was removed from the cluster (removenode) while it ran; it owns no ranges now: stop it, and restart it on an empty data directory to rejoin");
                }
                Event::Up(id) => {
                    self.stats.state_changes.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = id, "node is up");
                }
            }
        }
        let topology = snapshot(&self.config, &self.gossiper);
        let up = (0..topology.members().len())
            .filter(|&i| topology.is_up(i))
            .count();
        self.stats.members_up.store(up as u64, Ordering::Relaxed);
        self.stats
            .members_down
            .store((topology.members().len() - up) as u64, Ordering::Relaxed);
        self.shared.publish(topology);
        if membership_changed {
            self.persist();
        }
    }

    fn persist(&self) {
        if let Err(e) = save_peers(
            &self.peers_path,
            &self.config.cluster_name,
            &self.gossiper.peer_states(),
        ) {
            tracing::warn!(path = %self.peers_path.display(), error = %e, "could not remember peers");
        }
    }
}

fn snapshot(config: &NodeConfig, gossiper: &Gossiper) -> Topology {
    Topology::from_view(
        &config.cluster_name,
        config.node_id,
        config.replication_factor,
        &gossiper.view(),
    )
}

/// Peers remembered by an earlier run; none when the file does not exist.
fn load_peers(path: &Path, cluster: &str) -> Result<Vec<EndpointState>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source: e,
            })
        }
    };
    let file: PeersFile = serde_json::from_str(&text).map_err(|e| Error::DataDir {
        path: path.display().to_string(),
        reason: format!("not a peers file ({e}); delete it to rediscover peers from the seeds"),
    })?;
    if file.format != PEERS_FORMAT || file.cluster != cluster {
        return Err(Error::DataDir {
            path: path.display().to_string(),
            reason: format!(
                "written for cluster {:?} (format {}), this node is in cluster {cluster:?}; delete it to rediscover peers",
                file.cluster, file.format
            ),
        });
    }
    Ok(file
        .peers
        .into_iter()
        .filter_map(|p| {
            Some(EndpointState {
                generation: p.generation,
                heartbeat: 0,
                version: p.version,
                status: NodeStatus::from_name(&p.status)?,
                meta: p.member.to_meta()?,
            })
        })
        .collect())
}

/// Writes the peers file atomically (temporary file, fsync, rename).
fn save_peers(path: &Path, cluster: &str, states: &[EndpointState]) -> std::io::Result<()> {
    let file = PeersFile {
        format: PEERS_FORMAT,
        cluster: cluster.to_string(),
        peers: states
            .iter()
            .map(|s| RememberedPeer {
                member: Member::from_meta(&s.meta),
                generation: s.generation,
                version: s.version,
                status: s.status.name().to_string(),
            })
            .collect(),
    };
    let text = serde_json::to_string(&file).map_err(std::io::Error::other)?;
    write_atomically(path, text.as_bytes())
}
