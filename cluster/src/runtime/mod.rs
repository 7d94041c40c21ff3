//! The node runtime: configuration, data directory, shard startup and
//! shutdown, operations and routing between shards.

pub mod config;
pub mod control;
pub mod datadir;
pub mod health;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod router;
