//! Clusters of real `corekv serve` processes on loopback, joined by
//! gossip through node 1, and the native-protocol calls tests make.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{free_ports, Server};
use corekv_net::client::{Client, ClientError};
use corekv_net::native::{Consistency, RequestBody, ResponseBody};

/// Gossip settings every test cluster uses: rounds every 100 ms, so a
/// dead node is convicted after ~2 s instead of ~4.
pub const FAST_GOSSIP: &str = "gossip_interval_ms = 100\n";

/// A cluster of `n` one-shard nodes; node `i` (0-based) has id `i + 1`
/// and rack `r{i}`; every node joins through node 1.
pub struct Cluster {
    pub nodes: Vec<Server>,
    pub dir: tempfile::TempDir,
    shards: u16,
    settings: String,
}

impl Cluster {
    /// `n` one-shard nodes with extra TOML `settings`, all up and known
    /// to each other before this returns.
    pub fn start(n: usize, settings: &str) -> Cluster {
        Cluster::start_sharded(n, 1, settings)
    }

    /// As [`Cluster::start`] with `shards` shards per node.
    pub fn start_sharded(n: usize, shards: u16, settings: &str) -> Cluster {
        Cluster::start_with_dirs(n, shards, settings, |_| None)
    }

    /// As [`Cluster::start_sharded`], with node `i`'s data directory at
    /// `data_dir(i)` when that is Some (a disk of its own, say).
    pub fn start_with_dirs(
        n: usize,
        shards: u16,
        settings: &str,
        data_dir: impl Fn(usize) -> Option<std::path::PathBuf>,
    ) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            shards,
            settings: settings.to_string(),
        };
        for i in 0..n {
            cluster.add_node_at(data_dir(i));
        }
        cluster.wait_converged();
        cluster
    }

    /// Starts one more node (id = count + 1, rack `r{id - 1}`) joining
    /// through node 1; returns its index. Does not wait for the others to
    /// see it.
    pub fn add_node(&mut self) -> usize {
        self.add_node_at(None)
    }

    /// As [`Cluster::add_node`], with its data in `data` when Some.
    pub fn add_node_at(&mut self, data: Option<std::path::PathBuf>) -> usize {
        let i = self.nodes.len();
        let id = i + 1;
        let shards = self.shards;
        let base = free_ports(2 * shards + 2);
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let addrs = [at(base), at(base + shards + 1), at(base + shards + 2)];
        let seed = self.nodes.first().map_or(addrs[2], |n| n.peer);
        let config = self.dir.path().join(format!("node{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "node_id = {id}\nrack = \"r{i}\"\nseeds = [\"{seed}\"]\nreplication_factor = 3\nrequest_timeout_ms = 2000\n{FAST_GOSSIP}{}\n",
                self.settings
            ),
        )
        .expect("write config");
        let data = data.unwrap_or_else(|| self.dir.path().join(format!("node{id}")));
        let config = config.to_string_lossy().into_owned();
        let log = self.dir.path().join(format!("node{id}.log"));
        self.nodes.push(Server::start_logging_to(
            &log,
            &data,
            shards as usize,
            addrs,
            &["--config", &config],
        ));
        i
    }

    /// Waits until every running node sees every node up and normal
    /// (joined: bootstrap done).
    pub fn wait_converged(&self) {
        let n = self.nodes.len();
        for (i, node) in self.nodes.iter().enumerate() {
            wait_for(
                &format!("node {} to see {n} nodes up and normal", i + 1),
                || normal_ids(node).len() == n,
            );
        }
    }

    /// A client of node `node` (0-based).
    pub fn client(&self, node: usize) -> Client {
        Client::connect(self.nodes[node].native, Duration::from_secs(10)).expect("connect")
    }
}

/// Ids of the members `node` believes up and normal, sorted.
pub fn normal_ids(node: &Server) -> Vec<u64> {
    let s = status(node);
    let mut ids: Vec<u64> = s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["up"].as_bool() == Some(true) && m["status"] == "normal")
        .filter_map(|m| m["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids
}

/// Ids of the members `node` believes up, sorted.
pub fn up_ids(node: &Server) -> Vec<u64> {
    let s = status(node);
    let mut ids: Vec<u64> = s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["up"].as_bool() == Some(true))
        .filter_map(|m| m["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids
}

pub fn get(c: &mut Client, key: &str, level: Consistency) -> Result<ResponseBody, ClientError> {
    c.call(RequestBody::Get {
        consistency: level,
        key: key.as_bytes().to_vec(),
    })
}

pub fn put(
    c: &mut Client,
    key: &str,
    value: &str,
    context: Vec<u8>,
    level: Consistency,
) -> Result<ResponseBody, ClientError> {
    c.call(RequestBody::Put {
        consistency: level,
        ttl_ms: 0,
        context,
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    })
}

/// The live values of a GET answer, sorted.
pub fn values(body: &ResponseBody) -> Vec<String> {
    let mut v: Vec<String> = match body {
        ResponseBody::Value { siblings, .. } => siblings
            .iter()
            .filter_map(|s| s.value.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect(),
        _ => Vec::new(),
    };
    v.sort();
    v
}

pub fn context(body: &ResponseBody) -> Vec<u8> {
    match body {
        ResponseBody::Value { context, .. } | ResponseBody::NotFound { context } => context.clone(),
        _ => Vec::new(),
    }
}

pub fn status(node: &Server) -> serde_json::Value {
    let mut c = Client::connect(node.native, Duration::from_secs(5)).expect("connect");
    let ResponseBody::Status(json) = c.call(RequestBody::Status).expect("status") else {
        panic!("not a status answer");
    };
    serde_json::from_slice(&json).expect("status JSON")
}

pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
