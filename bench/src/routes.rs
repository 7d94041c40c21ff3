//! Shard-aware routing for `native-sharded://` targets: the cluster's
//! topology (TOPOLOGY from the seed node) decides, for each key, the owning
//! shard of its first replica, and the request goes straight to that
//! shard's port — the path a shard-aware client takes, with no hop between
//! cores on the server.

use std::net::SocketAddr;
use std::time::Duration;

use corekv_cluster::topology::Topology;
use corekv_net::client::Client;
use corekv_net::native::{RequestBody, ResponseBody};

use crate::BenchError;

/// Where each key goes: groups of connections, one group per shard address.
#[derive(Debug)]
pub struct ShardRoutes {
    topology: Topology,
    /// Shard addresses, in group order.
    addrs: Vec<SocketAddr>,
}

impl ShardRoutes {
    /// Asks `seed` for the topology, first authenticating with `creds`
    /// if given (a refusal is `BenchError::Auth`).
    pub fn fetch(
        seed: SocketAddr,
        timeout: Duration,
        creds: Option<&crate::auth::Credentials>,
    ) -> Result<ShardRoutes, BenchError> {
        let fail = |why: String| BenchError::Io(format!("topology from {seed}: {why}"));
        let mut c = Client::connect(seed, timeout).map_err(|e| fail(e.to_string()))?;
        if let Some(creds) = creds {
            c.auth(creds.user.as_bytes(), creds.password.as_bytes())
                .map_err(|e| BenchError::Auth(format!("user {} at {seed}: {e}", creds.user)))?;
        }
        let body = c
            .call(RequestBody::Topology)
            .map_err(|e| fail(e.to_string()))?;
        let ResponseBody::Topology(json) = body else {
            return Err(fail(format!("unexpected answer {body:?}")));
        };
        let topology = Topology::from_json(&json).map_err(|e| fail(e.to_string()))?;
        let addrs = topology
            .members()
            .iter()
            .flat_map(|m| (0..m.shards).map(move |s| m.native_shard_addr(s)))
            .collect();
        Ok(ShardRoutes { topology, addrs })
    }

    /// Every shard address, in group order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The group (shard address) a key's requests go to: the owning shard
    /// of the key's first replica.
    pub fn group_of(&self, key: &[u8]) -> usize {
        let token = xxhash_rust::xxh3::xxh3_64(key);
        let Some(&node) = self.topology.ring().replicas(token).first() else {
            return 0;
        };
        let before: usize = self.topology.members()[..node]
            .iter()
            .map(|m| m.shards)
            .sum();
        before + self.topology.members()[node].shard_of(token)
    }
}
