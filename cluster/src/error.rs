//! The node runtime's error type.

/// What can stop a node from starting or serving.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing, malformed or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The data directory does not match this configuration (e.g. shard count).
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// What does not match and how to fix it.
        reason: String,
    },
    /// A storage engine failed.
    #[error(transparent)]
    Engine(#[from] corekv_engine::Error),
    /// Binding a listener or starting an executor failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A shard thread panicked; the node stopped because of it.
    #[error("shard {shard} {why}; the node stopped (see docs/OPERATIONS.md, \"A shard died\")")]
    ShardPanicked {
        /// The shard.
        shard: usize,
        /// The panic's location and message.
        why: String,
    },
    /// A request forwarded to another shard got no answer (the shard stopped).
    #[error("shard {0} is not answering")]
    ShardGone(usize),
}

/// Shorthand for the runtime's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
