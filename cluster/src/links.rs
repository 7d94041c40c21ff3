//! One shard's connections to other nodes' shards (internode protocol),
//! and what it has learned about which nodes are reachable.
//!
//! Connections are opened on first use, one per (node, shard), each
//! carrying many requests at once. Gossip's failure detector is the
//! cluster-wide verdict on liveness; this shard adds its own, faster one:
//! a node whose connection fails is skipped for a backoff that doubles
//! from 200 ms to 5 s, and the first request after it tries again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv_net::mux::{Exchange, Multiplexed};
use corekv_net::native::ErrorCode;
use corekv_net::native::FrameError;
use corekv_net::peer::{self, HelloChallenge, PeerRequest, PeerResponse};
use corekv_net::Limits;
use glommio::sync::Semaphore;

use crate::secret::{ClusterSecret, HelloSide, HelloTranscript};
use crate::topology::Member;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Requests one internode connection carries at once.
const IN_FLIGHT_MAX: usize = 4096;

/// The internode protocol as a multiplexed connection speaks it.
pub struct PeerExchange {
    version: Cell<u8>,
    limits: Limits,
}

impl Exchange for PeerExchange {
    type Request = PeerRequest;
    type Response = PeerResponse;

    fn encode(&self, id: u64, req: PeerRequest, out: &mut Vec<u8>) {
        peer::encode_request(self.version.get(), id, &req, out);
    }

    fn decode(&self, buf: &[u8]) -> Result<Option<(u64, PeerResponse, usize)>, FrameError> {
        peer::decode_response(buf, &self.limits)
    }
}

/// Why a replica could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The node is marked down (a recent connection failed).
    #[error("node {0} is down")]
    Down(u32),
    /// Connecting or the connection failed.
    #[error("node {id}: {reason}")]
    Failed {
        /// The node.
        id: u32,
        /// What happened.
        reason: String,
    },
    /// The replica answered with an error.
    #[error("node {id} answered {code:?}: {message}")]
    Remote {
        /// The node.
        id: u32,
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}

#[derive(Default)]
struct Health {
    /// No new request goes to the node before this (its backoff).
    down_until: Cell<Option<Instant>>,
    backoff: Cell<Duration>,
    /// The last attempt failed and none has succeeded since.
    down: Cell<bool>,
}

/// One (node, shard) connection slot. One connect at a time per slot keeps
/// a flapping peer from causing a storm of parallel connects, without one
/// unreachable node delaying connects to the others.
struct Link {
    conn: RefCell<Option<Rc<Multiplexed<PeerExchange>>>>,
    connecting: Semaphore,
}

impl Default for Link {
    fn default() -> Link {
        Link {
            conn: RefCell::new(None),
            connecting: Semaphore::new(1),
        }
    }
}

/// A shard's peer connections, keyed by node id and address (a node that
/// restarts on other ports gets new connections). Not shared between
/// shards.
pub struct PeerLinks {
    cluster: String,
    my_id: u32,
    secret: Option<ClusterSecret>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    timeout: Duration,
    links: RefCell<HashMap<(u32, SocketAddr), Rc<Link>>>,
    health: RefCell<HashMap<u32, Rc<Health>>>,
}

impl PeerLinks {
    /// Links for a shard of node `my_id` in cluster `cluster`.
    /// Requests wait at most `timeout` for their answer. With `tls`,
    /// every connection is TLS (mutual, with `internode_tls`), the other
    /// node's certificate checked for its internode IP address.
    pub fn new(
        cluster: &str,
        my_id: u32,
        secret: Option<ClusterSecret>,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> PeerLinks {
        PeerLinks {
            cluster: cluster.to_string(),
            my_id,
            secret,
            tls,
            timeout,
            links: RefCell::new(HashMap::new()),
            health: RefCell::new(HashMap::new()),
        }
    }

    /// The cluster secret this node proves (and demands) on internode
    /// connections, if the cluster has one.
    pub fn secret(&self) -> Option<&ClusterSecret> {
        self.secret.as_ref()
    }

    fn health(&self, id: u32) -> Rc<Health> {
        self.health.borrow_mut().entry(id).or_default().clone()
    }

    /// False while node `id` is in a down backoff after a failed attempt.
    pub fn is_live(&self, id: u32) -> bool {
        self.health
            .borrow()
            .get(&id)
            .and_then(|h| h.down_until.get())
            .is_none_or(|t| Instant::now() >= t)
    }

    /// Nodes whose last attempt from this shard failed (until one works).
    pub fn down_nodes(&self) -> Vec<u32> {
        self.health
            .borrow()
            .iter()
            .filter(|(_, h)| h.down.get())
            .map(|(&id, _)| id)
            .collect()
    }

    fn mark_down(&self, id: u32) {
        let h = self.health(id);
        let backoff = (h.backoff.get() * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        h.backoff.set(backoff);
        if !h.down.get() {
            tracing::warn!(node = id, "peer unreachable from this shard; backing off");
        }
        h.down_until.set(Some(Instant::now() + backoff));
        h.down.set(true);
    }

    /// Ends the backoff of node `id` (gossip heard from it again).
    pub fn forgive(&self, id: u32) {
        if let Some(h) = self.health.borrow().get(&id) {
            h.down_until.set(None);
            h.backoff.set(Duration::ZERO);
        }
    }

    fn mark_up(&self, id: u32) {
        self.forgive(id);
        if self.health(id).down.replace(false) {
            tracing::info!(node = id, "peer reachable again from this shard");
        }
    }

    /// Sends `req` to shard `shard` of `member` and waits for the answer
    /// (at most the request timeout).
    pub async fn call(
        &self,
        member: &Member,
        shard: usize,
        req: PeerRequest,
    ) -> Result<PeerResponse, LinkError> {
        self.call_within(member, shard, req, self.timeout).await
    }

    /// As [`PeerLinks::call`], waiting at most `timeout` (for requests
    /// that scan ranges, such as TREE).
    pub async fn call_within(
        &self,
        member: &Member,
        shard: usize,
        req: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, LinkError> {
        let id = member.id;
        let conn = self.ready_connection(member, shard, &req).await?;
        let answer = futures_lite::future::or(async { Some(conn.call(req).await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        match answer {
            None => Err(LinkError::Failed {
                id,
                reason: format!("no answer within {} ms", timeout.as_millis()),
            }),
            Some(answer) => self.answer(id, answer),
        }
    }

    /// As [`PeerLinks::call`], without a timer: for a caller that bounds
    /// the wait itself and drops the call when its own deadline passes
    /// (the coordinator, whose request deadline covers all its replica
    /// calls). Dropping the call frees its slot on the connection.
    pub async fn call_untimed(
        &self,
        member: &Member,
        shard: usize,
        req: PeerRequest,
    ) -> Result<PeerResponse, LinkError> {
        let conn = self.ready_connection(member, shard, &req).await?;
        let answer = conn.call(req).await;
        self.answer(member.id, answer)
    }

    /// The link's answer to a call as the caller sees it; a lost
    /// connection marks the peer down.
    fn answer(
        &self,
        id: u32,
        answer: Result<PeerResponse, corekv_net::mux::Closed>,
    ) -> Result<PeerResponse, LinkError> {
        match answer {
            Ok(PeerResponse::Error { code, message }) => {
                Err(LinkError::Remote { id, code, message })
            }
            Ok(resp) => Ok(resp),
            Err(_) => {
                self.mark_down(id);
                Err(LinkError::Failed {
                    id,
                    reason: "connection lost".into(),
                })
            }
        }
    }

    /// The connection to shard `shard` of `member`, if the peer is live
    /// and speaks a protocol version that has `req`.
    async fn ready_connection(
        &self,
        member: &Member,
        shard: usize,
        req: &PeerRequest,
    ) -> Result<Rc<Multiplexed<PeerExchange>>, LinkError> {
        let id = member.id;
        if !self.is_live(id) {
            return Err(LinkError::Down(id));
        }
        let conn = self.connection(member, shard).await?;
        if conn.exchange().version.get() < req.version_needed() {
            return Err(LinkError::Failed {
                id,
                reason: format!(
                    "the node speaks internode version {}; this request needs {}",
                    conn.exchange().version.get(),
                    req.version_needed()
                ),
            });
        }
        Ok(conn)
    }

    async fn connection(
        &self,
        member: &Member,
        shard: usize,
    ) -> Result<Rc<Multiplexed<PeerExchange>>, LinkError> {
        let link = self
            .links
            .borrow_mut()
            .entry((member.id, member.peer_shard_addr(shard)))
            .or_default()
            .clone();
        if let Some(c) = link.conn.borrow().as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let member_id = member.id;
        let _one = link
            .connecting
            .acquire_permit(1)
            .await
            .map_err(|_| LinkError::Down(member_id))?;
        // Another task may have connected while this one waited.
        if let Some(c) = link.conn.borrow().as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        match self.open(member, shard).await {
            Ok(c) => {
                self.mark_up(member.id);
                *link.conn.borrow_mut() = Some(c.clone());
                Ok(c)
            }
            Err(reason) => {
                self.mark_down(member.id);
                Err(LinkError::Failed {
                    id: member.id,
                    reason,
                })
            }
        }
    }

    /// Connects and says HELLO; checks the answer is the member we expect.
    async fn open(
        &self,
        member: &Member,
        shard: usize,
    ) -> Result<Rc<Multiplexed<PeerExchange>>, String> {
        let addr = member.peer_shard_addr(shard);
        let exchange = PeerExchange {
            version: Cell::new(peer::VERSION_MIN),
            limits: Limits {
                max_frame_bytes: 64 << 20,
                ..Limits::default()
            },
        };
        let connect = async {
            match &self.tls {
                None => Multiplexed::connect(addr, IN_FLIGHT_MAX, exchange).await,
                Some(config) => {
                    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                    Multiplexed::connect_tls(addr, IN_FLIGHT_MAX, exchange, config.clone(), name)
                        .await
                }
            }
        };
        let conn = futures_lite::future::or(async { Some(connect.await) }, async {
            glommio::timer::sleep(CONNECT_TIMEOUT).await;
            None
        })
        .await
        .ok_or_else(|| format!("connect to {addr} timed out"))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
        let nonce = match &self.secret {
            Some(_) => Some(crate::secret::nonce().map_err(|e| e.to_string())?),
            None => None,
        };
        let hello = PeerRequest::Hello {
            version_min: peer::VERSION_MIN,
            version_max: peer::VERSION_MAX,
            node_id: self.my_id,
            cluster: self.cluster.clone(),
            nonce,
        };
        match conn.call(hello).await {
            Ok(PeerResponse::Hello {
                version,
                node_id,
                shards,
                challenge,
            }) => {
                if node_id != member.id || usize::from(shards) != member.shards {
                    return Err(format!(
                        "{addr} is node {node_id} with {shards} shards, but the membership says node {} with {} shards",
                        member.id, member.shards
                    ));
                }
                conn.exchange().version.set(version);
                if let (Some(secret), Some(caller_nonce)) = (&self.secret, &nonce) {
                    self.authenticate(&conn, addr, secret, node_id, caller_nonce, challenge)
                        .await?;
                }
                Ok(Rc::new(conn))
            }
            Ok(PeerResponse::Error { message, .. }) => {
                Err(format!("{addr} refused HELLO: {message}"))
            }
            Ok(other) => Err(format!("{addr} answered HELLO with {other:?}")),
            Err(_) => Err(format!("{addr} closed the connection during HELLO")),
        }
    }

    /// Checks the replica's proof, then proves this node's knowledge of
    /// the secret (AUTH). A replica without a challenge has no secret (or
    /// a different one): refused, so no request goes to a node that could
    /// be anyone.
    async fn authenticate(
        &self,
        conn: &Multiplexed<PeerExchange>,
        addr: SocketAddr,
        secret: &ClusterSecret,
        replica: u32,
        caller_nonce: &[u8; peer::NONCE_BYTES],
        challenge: Option<HelloChallenge>,
    ) -> Result<(), String> {
        let Some(challenge) = challenge else {
            return Err(format!(
                "{addr} (node {replica}) has no cluster secret, this node has one: set the same cluster_secret_file on every node"
            ));
        };
        let transcript = HelloTranscript {
            cluster: &self.cluster,
            caller: self.my_id,
            replica,
            caller_nonce,
            replica_nonce: &challenge.nonce,
        };
        if !secret.verify_hello(HelloSide::Replica, &transcript, &challenge.proof) {
            return Err(format!(
                "{addr} (node {replica}) failed the cluster-secret challenge: it has another secret"
            ));
        }
        let proof = secret.hello_proof(HelloSide::Caller, &transcript);
        match conn.call(PeerRequest::Auth { proof }).await {
            Ok(PeerResponse::Authenticated) => Ok(()),
            Ok(PeerResponse::Error { message, .. }) => {
                Err(format!("{addr} refused AUTH: {message}"))
            }
            Ok(other) => Err(format!("{addr} answered AUTH with {other:?}")),
            Err(_) => Err(format!("{addr} closed the connection during AUTH")),
        }
    }
}
