//! # corekv-cluster — the node and the cluster
//!
//! Turns storage engines and wire codecs into a running node of a
//! Dynamo-style cluster: one glommio executor per shard (pinned to a core),
//! each owning the engine for its slice of the token space
//! (`shard = (token × S) >> 64`), its client connections and its peer
//! links. Shards share nothing; a request for a key another shard owns is
//! forwarded over a glommio channel mesh and answered on a reply channel.
//!
//! Modules:
//! - [`runtime`]: configuration, the data directory, shard startup and
//!   shutdown (also when a shard panics), routing between shards;
//! - [`server`]: the client-facing native and RESP servers of a shard, and
//!   its internode (peer) server;
//! - [`admin`]: `/metrics`, `/health` and `/status` over HTTP;
//! - [`ring`] and [`topology`]: the token ring (vnodes, racks, data
//!   centres) and the cluster as one node sees it;
//! - [`gossip`]: membership and phi-accrual failure detection;
//! - [`links`]: a shard's connections to other nodes' shards;
//! - [`auth`]: client users, roles and key patterns (`requirepass`,
//!   `users_file`), with a per-shard cache of verified credentials;
//! - [`secret`]: the cluster secret that authenticates internode HELLO and
//!   gossip;
//! - [`coordinator`]: per-request W/R over the key's replicas, sloppy
//!   quorum, hinted handoff, read repair;
//! - [`wire_context`]: the causal context clients carry from a read to a
//!   write;
//! - [`repair`]: anti-entropy between replicas by Merkle trees;
//! - [`movement`]: streaming ranges while nodes join and leave;
//! - [`client`]: the shard-aware client.
//!
//! Invariants:
//! - No locks on the request path; cross-shard traffic is explicit messages.
//! - A stopping node stops accepting, finishes in-flight requests, flushes
//!   every engine, and only then exits.
//! - Every limit (connections, in-flight requests, frame sizes, idle time)
//!   is a configuration value with a sane default.

pub mod admin;
pub mod auth;
pub mod client;
pub mod coordinator;
mod error;
pub mod gossip;
pub mod links;
pub mod movement;
pub mod repair;
pub mod ring;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod tls;
pub mod topology;
pub mod wire_context;

pub use error::{Error, Result};
pub use runtime::config::NodeConfig;
pub use runtime::node::{run, StopHandle};
