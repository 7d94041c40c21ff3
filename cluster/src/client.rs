//! The shard-aware client: learns the cluster's topology from any node
//! (TOPOLOGY), computes for each key its token, its replicas and the shard
//! owning it on each, and sends the request straight to that shard's own
//! port on the first reachable replica — so the coordinator is always a
//! replica's owning shard, and the common path never crosses cores.
//! Runs on a glommio executor; hold one per executor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use corekv_net::async_client::AsyncClient;
use corekv_net::client::ClientError;
use corekv_net::native::{RequestBody, ResponseBody};

use crate::topology::Topology;

/// A client that routes every key to a replica's owning shard.
pub struct ShardAwareClient {
    topology: Topology,
    seed: SocketAddr,
    conns: RefCell<HashMap<SocketAddr, Rc<AsyncClient>>>,
    max_in_flight: usize,
    credentials: Option<(Vec<u8>, Vec<u8>)>,
}

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardAwareError {
    /// Talking to the seed failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The seed refused the user or password given to
    /// [`ShardAwareClient::connect_as`].
    #[error("authentication refused by {seed}: {reason}")]
    Unauthenticated {
        /// The node asked.
        seed: SocketAddr,
        /// The server's explanation.
        reason: String,
    },
    /// The seed's topology could not be used.
    #[error("topology from {seed}: {reason}")]
    Topology {
        /// The node asked.
        seed: SocketAddr,
        /// What was wrong.
        reason: String,
    },
}

impl ShardAwareClient {
    /// Asks `seed` for the topology; connections to shards open on first
    /// use, each with up to `max_in_flight` requests outstanding.
    pub async fn connect(
        seed: SocketAddr,
        max_in_flight: usize,
    ) -> Result<ShardAwareClient, ShardAwareError> {
        ShardAwareClient::start(seed, max_in_flight, None).await
    }

    /// Like [`ShardAwareClient::connect`], but authenticates as `user` on
    /// the seed connection and on every per-shard connection it opens
    /// later. Refused credentials at the seed are
    /// `Err(ShardAwareError::Unauthenticated)`; a shard refusing later
    /// (the user removed meanwhile) makes that call
    /// `Err(ClientError::Unauthenticated)`.
    pub async fn connect_as(
        seed: SocketAddr,
        user: &[u8],
        password: &[u8],
        max_in_flight: usize,
    ) -> Result<ShardAwareClient, ShardAwareError> {
        let credentials = Some((user.to_vec(), password.to_vec()));
        ShardAwareClient::start(seed, max_in_flight, credentials).await
    }

    async fn start(
        seed: SocketAddr,
        max_in_flight: usize,
        credentials: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<ShardAwareClient, ShardAwareError> {
        let first = match &credentials {
            None => AsyncClient::connect(seed, 4).await?,
            Some((user, password)) => AsyncClient::connect_as(seed, user, password, 4)
                .await
                .map_err(|e| match e {
                    ClientError::Unauthenticated(reason) => {
                        ShardAwareError::Unauthenticated { seed, reason }
                    }
                    other => ShardAwareError::Client(other),
                })?,
        };
        let body = first.call(RequestBody::Topology).await?;
        let ResponseBody::Topology(json) = body else {
            return Err(ShardAwareError::Topology {
                seed,
                reason: format!("unexpected answer {body:?}"),
            });
        };
        let topology = Topology::from_json(&json).map_err(|e| ShardAwareError::Topology {
            seed,
            reason: e.to_string(),
        })?;
        first.close();
        Ok(ShardAwareClient {
            topology,
            seed,
            conns: RefCell::new(HashMap::new()),
            max_in_flight,
            credentials,
        })
    }

    /// The topology in use.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The shard addresses a key's request may go to, in preference order:
    /// replicas the serving node believed up first (as of the topology
    /// fetched), then the others.
    pub fn route(&self, key: &[u8]) -> Vec<SocketAddr> {
        self.topology.route(corekv_engine::token_of(key))
    }

    async fn conn(&self, addr: SocketAddr) -> Result<Rc<AsyncClient>, ClientError> {
        if let Some(c) = self.conns.borrow().get(&addr) {
            return Ok(c.clone());
        }
        let c = match &self.credentials {
            None => AsyncClient::connect(addr, self.max_in_flight).await?,
            Some((user, password)) => {
                AsyncClient::connect_as(addr, user, password, self.max_in_flight).await?
            }
        };
        let c = Rc::new(c);
        self.conns.borrow_mut().insert(addr, c.clone());
        Ok(c)
    }

    /// Sends a request to a replica's owning shard (keyless requests go to
    /// the seed). A replica whose connection fails is skipped for the next
    /// in preference order; its connection is reopened on a later call.
    pub async fn call(&self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        let key = match &body {
            RequestBody::Get { key, .. }
            | RequestBody::Put { key, .. }
            | RequestBody::Delete { key, .. } => Some(key.clone()),
            _ => None,
        };
        let targets = key.map_or_else(|| vec![self.seed], |k| self.route(&k));
        let mut last = ClientError::Closed;
        let mut body = Some(body);
        let count = targets.len();
        for (i, addr) in targets.into_iter().enumerate() {
            let conn = match self.conn(addr).await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            // Clone only while another replica may still need the request.
            let request = if i + 1 == count {
                body.take()
            } else {
                body.clone()
            };
            let Some(request) = request else { break };
            match conn.call(request).await {
                Err(ClientError::Closed | ClientError::Io(_)) => {
                    self.conns.borrow_mut().remove(&addr);
                    last = ClientError::Closed;
                }
                other => return other,
            }
        }
        Err(last)
    }
}
