//! # corekv-cluster — the node
//!
//! Turns storage engines and wire codecs into a running node: one glommio
//! executor per shard (pinned to a core), each owning the engine for its
//! slice of the token space (`shard = (token × S) >> 64`), its client
//! connections, and — when the cluster layer arrives — its peer
//! connections. Shards share nothing; a request for a key another shard owns
//! is forwarded over a glommio channel mesh and answered on a reply channel.
//!
//! Invariants:
//! - No locks on the request path; cross-shard traffic is explicit messages.
//! - A stopping node stops accepting, finishes in-flight requests, flushes
//!   every engine, and only then exits.
//! - Every limit (connections, in-flight requests, frame sizes, idle time)
//!   is a configuration value with a sane default.

pub mod admin;
pub mod client;
pub mod coordinator;
mod error;
pub mod gossip;
pub mod links;
pub mod movement;
pub mod repair;
pub mod ring;
pub mod runtime;
pub mod server;
pub mod topology;
pub mod wire_context;

pub use error::{Error, Result};
pub use runtime::config::NodeConfig;
pub use runtime::node::{run, StopHandle};
