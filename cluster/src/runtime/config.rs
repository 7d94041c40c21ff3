//! Node configuration: a TOML file and command-line flags over defaults
//! that need no configuration at all for a single node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Everything `corekv serve` can be told. Field names are the TOML keys;
/// units are in the names. `NodeConfig::default()` is the single-node setup
/// the README starts.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Directory holding `shard-<i>/` subdirectories and `corekv.meta`.
    pub data_dir: PathBuf,
    /// Number of shards (one glommio executor each); 0 means one per core.
    pub shards: usize,
    /// Native protocol address shared by all shards (SO_REUSEPORT); shard
    /// `i` also listens on `port + 1 + i` for shard-aware clients.
    pub native_addr: SocketAddr,
    /// RESP2 address, shared by all shards.
    pub resp_addr: SocketAddr,
    /// Commit-log sync mode: "batch" (ack after fdatasync) or "periodic".
    pub commitlog_sync: String,
    /// fdatasync interval in periodic mode.
    pub commitlog_sync_period_ms: u64,
    /// Commit-log segment size.
    pub commitlog_segment_mib: u64,
    /// Commit-log size per shard that triggers a memtable flush (so the
    /// log, and the replay after a crash, stay bounded when overwrites keep
    /// the memtable small); at least two segments. Unset = 1 GiB, or four
    /// segments when they are larger than 256 MiB.
    pub commitlog_total_mib: Option<u64>,
    /// Upper bound of one group-commit batch, KiB; unset = from the io
    /// properties file, else max(4 MiB, one maximal record).
    pub commit_batch_kib: Option<u64>,
    /// Table-block reads one shard keeps in flight at most; unset = from the
    /// io properties file, else the engine default (128).
    pub io_queue_depth: Option<usize>,
    /// The io properties file written by `corekv tune io`; unset =
    /// `data_dir/io-properties.toml` when it exists; "off" ignores it.
    pub io_properties: Option<PathBuf>,
    /// Memtable size that triggers a flush, per shard.
    pub memtable_mib: u64,
    /// Block-cache budget per shard.
    pub block_cache_mib: u64,
    /// Conflict handling: "siblings" or "lww".
    pub conflict: String,
    /// Tombstone garbage-collection grace period.
    pub gc_grace_s: u64,
    /// Largest key accepted.
    pub max_key_bytes: usize,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// Most versions one key may hold; a write that would leave more is
    /// refused with TOO_MANY_SIBLINGS (as Riak does). Warned of (a metric)
    /// from a quarter of it.
    pub max_siblings: usize,
    /// How far ahead of this node's clock a clock reading in a request (a
    /// context, a replicated version) may be, in ms; further is refused
    /// with CLOCK_SKEW, so no input can drag this node's clock ahead.
    pub max_clock_skew_ms: u64,
    /// This data directory's incarnation, from `corekv.meta` (not a
    /// setting: set by the node at start). A new data directory, or one
    /// that lost a shard, gets a new one, so that dots of an earlier
    /// incarnation can never cover this one's writes.
    #[serde(skip)]
    pub epoch: u64,
    /// Open client connections (native and RESP) per shard; more are
    /// refused (counted in `corekv_connections_refused_total`).
    pub max_connections_per_shard: usize,
    /// Open internode connections per shard, counted apart from client
    /// ones so clients can never starve replication.
    pub max_peer_connections_per_shard: usize,
    /// A request's bytes must all arrive within this long of its first
    /// one, however slowly they trickle in (slowloris); else the
    /// connection is closed.
    pub request_read_timeout_ms: u64,
    /// Answers queued for one connection and not yet taken by its socket
    /// (a client that does not read): past this many MiB the connection
    /// reads no new requests, past twice this it is closed.
    pub output_buffer_mib: u64,
    /// Largest unfinished RESP command buffered (RESP's
    /// client-query-buffer-limit), MiB; beyond, an error and the
    /// connection closes.
    pub query_buffer_mib: u64,
    /// A client connection idle this long is closed.
    pub idle_timeout_s: u64,
    /// Requests one native connection may have in flight; reading from the
    /// socket pauses beyond it.
    pub max_in_flight_per_connection: usize,
    /// Stable id of this node (part of every version's dot).
    pub node_id: u32,
    /// Log level filter, e.g. "info" or "corekv=debug".
    pub log: String,
    /// CPUs the shards are pinned to (one shard per CPU); empty = all online.
    pub cpus: Vec<usize>,
    /// Cluster name; nodes refuse internode connections from another one.
    pub cluster_name: String,
    /// The secret every member shares (at least 16 bytes). When set, the
    /// internode HELLO is a mutual HMAC challenge and every gossip datagram
    /// carries an HMAC; traffic without them is refused and counted. Every
    /// member must have the same one. Prefer `cluster_secret_file`, which
    /// keeps it out of the configuration.
    pub cluster_secret: Option<crate::secret::ClusterSecret>,
    /// A file holding the cluster secret (its whole content, trimmed);
    /// read at start. Not together with `cluster_secret`.
    pub cluster_secret_file: Option<PathBuf>,
    /// The password of the `default` user (Redis's `requirepass`, role
    /// admin over every key). With it or `users_file` set, clients must
    /// authenticate (RESP AUTH / HELLO AUTH, native AUTH).
    pub requirepass: Option<String>,
    /// A TOML file of named users with argon2 password hashes, roles and
    /// key patterns (`corekv user add` writes it; docs/OPERATIONS.md).
    pub users_file: Option<PathBuf>,
    /// Seconds between looks at the users file's mtime and length (a
    /// change reloads it); 0: reload only on SIGHUP.
    pub users_file_check_s: u64,
    /// The user table loaded from `requirepass` and `users_file` at start
    /// (not a configuration key).
    #[serde(skip)]
    pub users: Option<crate::auth::SharedUsers>,
    /// PEM certificate chain (leaf first) of this node. With
    /// `tls_key_file`, the client ports (native, RESP) and admin HTTP
    /// speak TLS 1.3 only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s): client certificates are checked against it
    /// (see `tls_auth_clients`), and with `internode_tls` so are nodes'.
    pub tls_ca_file: Option<PathBuf>,
    /// With `tls_ca_file`: "yes" (a client certificate signed by the CA is
    /// required, Redis's default), "optional" (checked when presented) or
    /// "no".
    pub tls_auth_clients: String,
    /// Internode connections are mutual TLS against `tls_ca_file` (node
    /// certificates need both the serverAuth and clientAuth EKU).
    pub internode_tls: bool,
    /// A TLS handshake must finish this long after the accept, or the
    /// connection is closed (and counted).
    pub tls_handshake_timeout_ms: u64,
    /// The TLS setup loaded from the keys above at start (not a key).
    #[serde(skip)]
    pub tls: Option<crate::tls::NodeTls>,
    /// Internode address: shard `i` listens on `port + i` for replica
    /// traffic from other nodes' shards.
    pub peer_addr: SocketAddr,
    /// This node's rack (replicas of a key spread over racks).
    pub rack: String,
    /// This node's data centre.
    pub dc: String,
    /// Capacity weight: the node gets `tokens × weight` vnodes.
    pub weight: f64,
    /// Vnodes per unit of weight.
    pub tokens: u32,
    /// Replicas of every key (N), capped at the number of members.
    pub replication_factor: usize,
    /// Default write level when a request names none: "one", "two",
    /// "quorum", "all" or a number; capped at N.
    pub write_consistency: String,
    /// Default read level, as `write_consistency`.
    pub read_consistency: String,
    /// A coordinator waits this long for W or R replicas.
    pub request_timeout_ms: u64,
    /// Hints (writes a replica missed) older than this are dropped, leaving
    /// the key to anti-entropy.
    pub hint_window_s: u64,
    /// Hints a shard replays per second at most, so a returning node is not
    /// flooded.
    pub hint_replay_per_s: u32,
    /// Hints a shard keeps at most; beyond it new ones are dropped (and
    /// counted), bounding the disk a long outage can take.
    pub hints_max_per_shard: u64,
    /// Sloppy quorum: a write whose replica is down goes to the next live
    /// node after the preference list, which keeps it as a hint and counts
    /// toward W. False = strict quorum (only true replicas count).
    pub sloppy_quorum: bool,
    /// Admin HTTP address (`/metrics`, `/health`, `/status`) served by the
    /// control thread; "off" disables it.
    pub admin_addr: String,
    /// Internode addresses (`host:port`, the nodes' `peer_addr`) of a few
    /// members to join through; empty = a cluster of one until others
    /// join through this node. Listing this node itself is harmless.
    pub seeds: Vec<SocketAddr>,
    /// Time between gossip rounds.
    pub gossip_interval_ms: u64,
    /// Anti-entropy: every shard repairs its ranges with their other
    /// replicas this often. Must be below `gc_grace_s`. 0 (never) only
    /// with `unsafe_no_repair`: tombstones then wait for a repair an
    /// operator runs.
    pub repair_interval_s: u64,
    /// Allows `repair_interval_s = 0`: the operator takes over running
    /// repairs (`corekv repair`); until one completes, tombstones are
    /// never dropped where other replicas exist.
    pub unsafe_no_repair: bool,
    /// A node starting for the first time with seeds elsewhere joins as
    /// "joining" and streams the ranges it will own before it serves them
    /// (bootstrap). False: it owns its ranges at once, empty (for a new
    /// cluster whose nodes all start together).
    pub auto_bootstrap: bool,
    /// MiB (2^20 bytes) a shard streams per second at most for repair and
    /// topology changes (0 = unthrottled). `stream_mb_per_s`, the key's
    /// name before it said its unit, is still accepted.
    #[serde(alias = "stream_mb_per_s")]
    pub stream_mib_per_s: u64,
    /// Failure-detector threshold: a node whose heartbeat has been silent
    /// for about `phi × ln 10 × the usual interval` is marked down (with
    /// the defaults, ~3.7 s).
    pub phi_convict_threshold: f64,
}

fn default_rack() -> String {
    "rack1".into()
}

fn default_dc() -> String {
    "dc1".into()
}

fn default_weight() -> f64 {
    1.0
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("corekv-data"),
            shards: 0,
            native_addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            resp_addr: SocketAddr::from(([127, 0, 0, 1], 7379)),
            commitlog_sync: "batch".into(),
            commitlog_sync_period_ms: 10,
            commitlog_segment_mib: 64,
            commitlog_total_mib: None,
            commit_batch_kib: None,
            io_queue_depth: None,
            io_properties: None,
            memtable_mib: 64,
            block_cache_mib: 64,
            conflict: "siblings".into(),
            gc_grace_s: 10 * 24 * 3600,
            max_key_bytes: 64 * 1024,
            max_value_bytes: 1024 * 1024,
            max_siblings: 100,
            max_clock_skew_ms: 5_000,
            epoch: 0,
            max_connections_per_shard: 4096,
            max_peer_connections_per_shard: 1024,
            request_read_timeout_ms: 10_000,
            output_buffer_mib: 32,
            query_buffer_mib: 64,
            idle_timeout_s: 300,
            max_in_flight_per_connection: 256,
            node_id: 1,
            log: "info".into(),
            cpus: Vec::new(),
            cluster_name: "corekv".into(),
            cluster_secret: None,
            cluster_secret_file: None,
            requirepass: None,
            users_file: None,
            users_file_check_s: crate::auth::reload::USERS_FILE_CHECK_S,
            users: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_auth_clients: "yes".into(),
            internode_tls: false,
            tls_handshake_timeout_ms: 5_000,
            tls: None,
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 7100)),
            rack: default_rack(),
            dc: default_dc(),
            weight: default_weight(),
            tokens: 256,
            replication_factor: 3,
            write_consistency: "two".into(),
            read_consistency: "two".into(),
            request_timeout_ms: 2000,
            hint_window_s: 3 * 3600,
            hint_replay_per_s: 2000,
            hints_max_per_shard: 1_000_000,
            sloppy_quorum: true,
            admin_addr: "127.0.0.1:7080".into(),
            seeds: Vec::new(),
            gossip_interval_ms: 200,
            repair_interval_s: 7 * 24 * 3600,
            unsafe_no_repair: false,
            stream_mib_per_s: 64,
            auto_bootstrap: true,
            phi_convict_threshold: 8.0,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file; unknown keys are an error naming them, so a typo
    /// never silently falls back to a default.
    pub fn from_file(path: &Path) -> Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Shard count after resolving 0 to the number of cores.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Bytes of one maximal commit-log record: the largest key and the
    /// largest sibling set of a key (two of the largest values plus 64 KiB)
    /// plus 4 KiB of framing.
    fn max_record_bytes(&self) -> usize {
        self.max_key_bytes + corekv_engine::Options::default_set_bytes(self.max_value_bytes) + 4096
    }

    /// Smallest `commit_batch_kib` that works: one maximal record
    /// (`max_key_bytes + 2 × max_value_bytes + 68 KiB`) plus 64 KiB of
    /// headroom (the hint store's keys carry a prefix), rounded up to 64 KiB.
    pub fn commit_batch_kib_min(&self) -> u64 {
        let record = self.max_record_bytes() as u64;
        (record + (64 << 10)).div_ceil(64 << 10) * 64
    }

    /// Replica id of shard `index`: a hash of node id and data-directory
    /// epoch in bits 16..63 (bit 63 clear: the engine uses it), the shard
    /// below. Unique per node incarnation and shard, stable across restarts.
    pub fn replica_id(&self, index: usize) -> u64 {
        let mut seed = [0u8; 12];
        seed[..4].copy_from_slice(&self.node_id.to_le_bytes());
        seed[4..].copy_from_slice(&self.epoch.to_le_bytes());
        let high = xxhash_rust::xxh3::xxh3_64(&seed) & 0x7FFF_FFFF_FFFF_0000;
        // Never zero (the engine refuses it), whatever the hash.
        (high | 1 << 62) | index as u64
    }

    /// The engine options of shard `index`.
    pub fn engine_options(&self, index: usize) -> Result<corekv_engine::Options> {
        use corekv_engine::{ConflictMode, SyncMode};
        let sync_mode = match self.commitlog_sync.as_str() {
            "batch" => SyncMode::Batch,
            "periodic" => SyncMode::Periodic {
                period: Duration::from_millis(self.commitlog_sync_period_ms.max(1)),
            },
            other => {
                return Err(Error::Config(format!(
                    "commitlog_sync must be \"batch\" or \"periodic\", not {other:?}"
                )))
            }
        };
        let conflict = match self.conflict.as_str() {
            "siblings" => ConflictMode::Siblings,
            "lww" => ConflictMode::LastWriterWins,
            other => {
                return Err(Error::Config(format!(
                    "conflict must be \"siblings\" or \"lww\", not {other:?}"
                )))
            }
        };
        let max_record = self.max_record_bytes();
        let batch = match self.commit_batch_kib {
            Some(kib) if kib < self.commit_batch_kib_min() => {
                return Err(Error::Config(format!(
                    "commit_batch_kib = {kib} is below {} KiB: a batch must hold one maximal record (max_key_bytes + 2 x max_value_bytes + 68 KiB) plus 64 KiB",
                    self.commit_batch_kib_min()
                )))
            }
            Some(kib) => usize::try_from(kib.saturating_mul(1024)).unwrap_or(usize::MAX),
            None => max_record.max(4 << 20),
        };
        let segment_bytes = (self.commitlog_segment_mib << 20)
            .max(2 * (max_record as u64).max(4 << 20))
            .max(2 * batch as u64);
        let defaults = corekv_engine::Options::default();
        let log_bytes_max = match self.commitlog_total_mib {
            None => defaults.log_bytes_max.max(4 * segment_bytes),
            Some(mib) if mib.saturating_mul(1 << 20) < 2 * segment_bytes => {
                return Err(Error::Config(format!(
                    "commitlog_total_mib = {mib} is below two commit-log segments ({} MiB)",
                    (2 * segment_bytes) >> 20
                )))
            }
            Some(mib) => mib.saturating_mul(1 << 20),
        };
        let opts = corekv_engine::Options {
            replica_id: self.replica_id(index),
            max_siblings: self.max_siblings,
            siblings_warn: (self.max_siblings / 4).max(1),
            max_clock_skew_ms: self.max_clock_skew_ms,
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            conflict,
            sync_mode,
            segment_bytes,
            log_bytes_max,
            commit_batch_bytes_max: batch,
            max_concurrent_reads: self.io_queue_depth.unwrap_or(defaults.max_concurrent_reads),
            memtable_bytes_max: (self.memtable_mib << 20) as usize,
            block_cache_bytes: (self.block_cache_mib << 20) as usize,
            gc_grace: Duration::from_secs(self.gc_grace_s),
            ..defaults
        };
        opts.validate().map_err(|e| Error::Config(e.to_string()))?;
        Ok(opts)
    }

    /// Reads `cluster_secret_file` into `cluster_secret` (once, at start).
    pub fn load_secret(&mut self) -> Result<()> {
        if let Some(path) = &self.cluster_secret_file {
            if self.cluster_secret.is_some() {
                return Err(Error::Config(
                    "cluster_secret and cluster_secret_file are both set; keep one".into(),
                ));
            }
            self.cluster_secret = Some(crate::secret::ClusterSecret::from_file(path)?);
        }
        Ok(())
    }

    /// Loads the user table from `requirepass` and `users_file` (once, at
    /// start); leaves `users` empty when neither is set.
    pub fn load_users(&mut self) -> Result<()> {
        let table =
            crate::auth::UserTable::load(self.requirepass.as_deref(), self.users_file.as_deref())
                .map_err(|e| Error::Config(e.to_string()))?;
        self.users = table.map(|t| {
            let store = crate::auth::reload::UserStore::new(
                std::sync::Arc::new(t),
                self.requirepass.clone(),
                self.users_file.clone(),
            );
            crate::auth::SharedUsers(std::sync::Arc::new(store))
        });
        Ok(())
    }

    /// Checks the TLS keys and loads the files they name into `tls`
    /// (once, at start).
    pub fn load_tls(&mut self) -> Result<()> {
        self.tls = crate::tls::load(self)?;
        Ok(())
    }

    /// Checks values that the engine does not see.
    pub fn validate(&self) -> Result<()> {
        if self.shard_count() > 256 {
            return Err(Error::Config(format!(
                "shards = {} is more than 256",
                self.shard_count()
            )));
        }
        if self.output_buffer_mib == 0
            || self.query_buffer_mib == 0
            || self.request_read_timeout_ms == 0
            || self.max_peer_connections_per_shard == 0
        {
            return Err(Error::Config(
                "output_buffer_mib, query_buffer_mib, request_read_timeout_ms and max_peer_connections_per_shard must be above 0".into(),
            ));
        }
        if self.query_buffer_mib.saturating_mul(1 << 20)
            < (2 * (self.max_key_bytes + self.max_value_bytes)) as u64
        {
            return Err(Error::Config(format!(
                "query_buffer_mib = {} cannot hold one SET of the largest key and value (max_key_bytes + max_value_bytes)",
                self.query_buffer_mib
            )));
        }
        if self.max_connections_per_shard == 0 || self.max_in_flight_per_connection == 0 {
            return Err(Error::Config(
                "max_connections_per_shard and max_in_flight_per_connection must be above zero"
                    .into(),
            ));
        }
        // Every internode HELLO carries the name, and a replica refuses one
        // longer than 256 bytes (net/src/peer/codec.rs): a longer name
        // would start a node no peer ever lets in.
        if self.cluster_name.len() > 256 {
            return Err(Error::Config(format!(
                "cluster_name is {} bytes, more than 256",
                self.cluster_name.len()
            )));
        }
        self.check_ports_apart()?;
        for level in [&self.write_consistency, &self.read_consistency] {
            parse_level(level)?;
        }
        if !(self.weight > 0.0 && self.weight <= 100.0) || self.tokens == 0 {
            return Err(Error::Config(
                "weight must be in (0, 100] and tokens above zero".into(),
            ));
        }
        if self.replication_factor == 0 || self.replication_factor > 15 {
            return Err(Error::Config("replication_factor must be in 1..=15".into()));
        }
        if self.repair_interval_s == 0 && !self.unsafe_no_repair {
            return Err(Error::Config(
                "repair_interval_s = 0 turns scheduled repair off; tombstones then wait for a repair an operator runs. Set unsafe_no_repair = true to confirm".into(),
            ));
        }
        if self.repair_interval_s != 0 && self.repair_interval_s >= self.gc_grace_s {
            return Err(Error::Config(format!(
                "repair_interval_s ({}) must be below gc_grace_s ({}): a replica that missed a delete must be repaired before the tombstone is purged, or the value comes back",
                self.repair_interval_s, self.gc_grace_s
            )));
        }
        if self.hint_window_s >= self.gc_grace_s {
            return Err(Error::Config(format!(
                "hint_window_s ({}) must be below gc_grace_s ({}): a hint replayed after the tombstone of a later delete was purged would bring the deleted value back",
                self.hint_window_s, self.gc_grace_s
            )));
        }
        if self.gossip_interval_ms == 0 || self.gossip_interval_ms > 60_000 {
            return Err(Error::Config(
                "gossip_interval_ms must be in 1..=60000".into(),
            ));
        }
        if !(self.phi_convict_threshold >= 1.0 && self.phi_convict_threshold <= 100.0) {
            return Err(Error::Config(
                "phi_convict_threshold must be in 1..=100 (8 is a good default)".into(),
            ));
        }
        if self.peer_addr.ip().is_unspecified() && !self.seeds.is_empty() {
            return Err(Error::Config(format!(
                "peer_addr {} is announced to other nodes; give the address they reach this node at",
                self.peer_addr
            )));
        }
        self.engine_options(0).map(|_| ())
    }

    /// Refuses two listeners on one port. Every listener binds with
    /// SO_REUSEPORT (the shards share the native and RESP ports), so the
    /// kernel would accept both and spread one port's connections over two
    /// protocols: a RESP client answered in native frames, at random.
    fn check_ports_apart(&self) -> Result<()> {
        let shards = self.shard_count();
        let offset = |addr: SocketAddr, by: usize, what: String| {
            let port = usize::from(addr.port()) + by;
            u16::try_from(port)
                .map(|p| (SocketAddr::new(addr.ip(), p), what.clone()))
                .map_err(|_| Error::Config(format!("{what} would be port {port}, above 65535")))
        };
        let mut bound = vec![
            (self.native_addr, "native_addr".to_string()),
            (self.resp_addr, "resp_addr".to_string()),
        ];
        for i in 0..shards {
            // Port 0 asks the kernel for a free port: never shared.
            if self.native_addr.port() != 0 {
                bound.push(offset(
                    self.native_addr,
                    1 + i,
                    format!("shard {i}'s own native port (native_addr + {})", 1 + i),
                )?);
            }
            if self.peer_addr.port() != 0 {
                bound.push(offset(
                    self.peer_addr,
                    i,
                    format!("shard {i}'s internode port (peer_addr + {i})"),
                )?);
            }
        }
        if let Some(admin) = self.admin_socket_addr()? {
            bound.push((admin, "admin_addr".to_string()));
        }
        bound.retain(|(addr, _)| addr.port() != 0);
        for (i, (a, what_a)) in bound.iter().enumerate() {
            for (b, what_b) in &bound[i + 1..] {
                let same_host =
                    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
                if a.port() == b.port() && same_host {
                    return Err(Error::Config(format!(
                        "{what_a} ({a}) and {what_b} ({b}) are the same port; each shard also listens on native_addr + 1 + shard and peer_addr + shard, so leave room for them"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The admin address, or `None` when disabled.
    pub fn admin_socket_addr(&self) -> Result<Option<SocketAddr>> {
        match self.admin_addr.trim() {
            "" | "off" => Ok(None),
            text => text.parse().map(Some).map_err(|e| {
                Error::Config(format!(
                    "admin_addr {text:?} is not an address (or \"off\"): {e}"
                ))
            }),
        }
    }
}

/// Parses a consistency level name: "one", "two", "quorum", "all" or a
/// replica count.
pub fn parse_level(text: &str) -> Result<corekv_net::native::Consistency> {
    use corekv_net::native::Consistency;
    Ok(match text.to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        n => match n.parse::<u8>() {
            Ok(n @ 1..=127) => Consistency::Count(n),
            _ => {
                return Err(Error::Config(format!(
                    "consistency level {text:?} is not one, two, quorum, all or 1..=127"
                )))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_could_resurrect_deletes_are_refused() {
        let check = |toml_text: &str| {
            toml::from_str::<NodeConfig>(toml_text)
                .expect("parses")
                .validate()
                .map_err(|e| e.to_string())
        };
        assert!(check("").is_ok(), "the defaults are safe");
        let e = check(
            "gc_grace_s = 7200
repair_interval_s = 3600
hint_window_s = 7200
",
        )
        .expect_err("hint window = gc_grace");
        assert!(
            e.contains("hint_window_s") && e.contains("gc_grace_s"),
            "{e}"
        );
        let e = check(
            "repair_interval_s = 0
",
        )
        .expect_err("never repair");
        assert!(e.contains("unsafe_no_repair"), "{e}");
        assert!(check(
            "repair_interval_s = 0
unsafe_no_repair = true
"
        )
        .is_ok());
        let e = check(
            "gc_grace_s = 3600
repair_interval_s = 3600
hint_window_s = 60
",
        )
        .expect_err("repair interval = gc_grace");
        assert!(e.contains("repair_interval_s"), "{e}");
    }

    #[test]
    fn listeners_on_one_port_are_refused() {
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut c = NodeConfig {
            shards: 2,
            native_addr: at(29100),
            resp_addr: at(29101),
            peer_addr: at(29110),
            admin_addr: "127.0.0.1:29120".into(),
            ..NodeConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("resp_addr") && e.contains("shard 0's own native port"),
            "{e}"
        );
        c.resp_addr = at(29103);
        c.validate().expect("apart");
        c.admin_addr = "0.0.0.0:29111".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("admin_addr") && e.contains("shard 1's internode"),
            "{e}"
        );
        // Ports the kernel picks are never the same.
        let any = at(0);
        let ephemeral = NodeConfig {
            native_addr: any,
            resp_addr: any,
            peer_addr: any,
            admin_addr: "127.0.0.1:0".into(),
            ..c.clone()
        };
        ephemeral.validate().expect("port 0 everywhere");
        c.admin_addr = "off".into();
        c.peer_addr = at(65535);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("above 65535"), "{e}");
    }

    #[test]
    fn toml_overrides_defaults_and_typos_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("corekv.toml");
        std::fs::write(
            &path,
            "shards = 3\ncommitlog_sync = \"periodic\"\nresp_addr = \"127.0.0.1:6400\"\n",
        )
        .expect("write");
        let c = NodeConfig::from_file(&path).expect("valid config");
        assert_eq!(c.shards, 3);
        assert_eq!(c.resp_addr.port(), 6400);
        assert_eq!(c.native_addr, NodeConfig::default().native_addr);
        assert!(matches!(
            c.engine_options(0).expect("options").sync_mode,
            corekv_engine::SyncMode::Periodic { .. }
        ));
        std::fs::write(&path, "shardz = 3\n").expect("write");
        let e = NodeConfig::from_file(&path).expect_err("unknown key");
        assert!(e.to_string().contains("shardz"), "{e}");
        std::fs::write(&path, "commitlog_sync = \"sometimes\"\n").expect("write");
        let c = NodeConfig::from_file(&path).expect("parses");
        assert!(c
            .validate()
            .expect_err("bad value")
            .to_string()
            .contains("commitlog_sync"));
    }

    /// Regression (net fuzz test of HELLO): a name the peers' HELLO
    /// decoder refuses is refused at start-up instead.
    #[test]
    fn a_cluster_name_longer_than_hello_allows_is_refused() {
        let mut c = NodeConfig {
            cluster_name: "c".repeat(256),
            ..NodeConfig::default()
        };
        c.validate().expect("256 bytes fit a HELLO");
        c.cluster_name.push('c');
        let e = c.validate().expect_err("257 bytes do not");
        assert!(e.to_string().contains("cluster_name"), "{e}");
    }

    #[test]
    fn the_stream_limit_is_in_mib_and_its_old_name_still_parses() {
        let c: NodeConfig = toml::from_str("stream_mib_per_s = 5\n").expect("parses");
        assert_eq!(c.stream_mib_per_s, 5);
        // Config files written before the rename keep working.
        let c: NodeConfig = toml::from_str("stream_mb_per_s = 7\n").expect("old name parses");
        assert_eq!(c.stream_mib_per_s, 7);
    }

    #[test]
    fn the_commit_log_bound_reaches_the_engine_and_is_checked() {
        let d = NodeConfig::default().engine_options(0).expect("defaults");
        assert_eq!(d.log_bytes_max, 1 << 30);
        let c: NodeConfig = toml::from_str("commitlog_total_mib = 256\n").expect("parses");
        assert_eq!(
            c.engine_options(0).expect("options").log_bytes_max,
            256 << 20
        );
        // Larger segments raise the default, so raising only them works.
        let c = NodeConfig {
            commitlog_segment_mib: 1024,
            ..NodeConfig::default()
        };
        assert_eq!(c.engine_options(0).expect("options").log_bytes_max, 4 << 30);
        // One 64 MiB segment is not enough room for a log.
        let c = NodeConfig {
            commitlog_total_mib: Some(100),
            ..NodeConfig::default()
        };
        let e = c.engine_options(0).expect_err("below two segments");
        assert!(e.to_string().contains("commitlog_total_mib = 100"), "{e}");
        assert!(e.to_string().contains("128 MiB"), "{e}");
    }

    #[test]
    fn io_settings_reach_the_engine_and_are_checked() {
        let c: NodeConfig = toml::from_str(
            "commit_batch_kib = 4096\nio_queue_depth = 8\nio_properties = \"/x/io.toml\"\n",
        )
        .expect("parses");
        assert_eq!(c.io_properties.as_deref(), Some(Path::new("/x/io.toml")));
        let o = c.engine_options(0).expect("options");
        assert_eq!(o.commit_batch_bytes_max, 4096 << 10);
        assert_eq!(o.max_concurrent_reads, 8);
        assert!(o.segment_bytes >= 2 * o.commit_batch_bytes_max as u64);
        let d = NodeConfig::default().engine_options(0).expect("defaults");
        assert_eq!(d.commit_batch_bytes_max, 4 << 20);
        assert_eq!(
            d.max_concurrent_reads,
            corekv_engine::Options::default().max_concurrent_reads
        );
        // A batch too small for one maximal record (and the hint prefix).
        let small = NodeConfig {
            commit_batch_kib: Some(NodeConfig::default().commit_batch_kib_min() - 1),
            ..NodeConfig::default()
        };
        let e = small.validate().expect_err("too small");
        assert!(e.to_string().contains("commit_batch_kib"), "{e}");
        let big = NodeConfig {
            commit_batch_kib: Some(64 << 10),
            ..NodeConfig::default()
        };
        let o = big.engine_options(0).expect("64 MiB batch");
        assert!(o.segment_bytes >= 128 << 20);
        let zero = NodeConfig {
            io_queue_depth: Some(0),
            ..NodeConfig::default()
        };
        assert!(zero
            .validate()
            .expect_err("zero")
            .to_string()
            .contains("max_concurrent_reads"));
    }

    #[test]
    fn replica_ids_differ_per_node_and_shard() {
        let a = NodeConfig {
            node_id: 1,
            ..NodeConfig::default()
        };
        let b = NodeConfig {
            node_id: 2,
            ..NodeConfig::default()
        };
        let ids = [
            a.engine_options(0).expect("a0").replica_id,
            a.engine_options(1).expect("a1").replica_id,
            b.engine_options(0).expect("b0").replica_id,
        ];
        assert!(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2]);
        let reborn = NodeConfig {
            epoch: 0x5eed,
            ..a.clone()
        };
        let id = reborn.engine_options(0).expect("reborn").replica_id;
        assert!(!ids.contains(&id), "a new incarnation writes under new ids");
        assert_eq!(id, reborn.replica_id(0), "stable across restarts");
    }
}
