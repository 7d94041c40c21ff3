//! The engine's error type: one enum for everything a caller may need to
//! tell apart (limits, corruption, I/O), each variant naming the file and
//! offset where that applies so an operator can act on the message alone.

use std::path::PathBuf;

/// Everything that can go wrong inside one shard's storage engine.
///
/// Corruption is never papered over: a checksum failure or a malformed
/// structure is reported with the file and byte offset where it was found.
/// Limit errors (`KeyTooLarge`, `ValueTooLarge`, `RecordTooLarge`) are
/// raised before anything is written, so a rejected request leaves no trace
/// on disk.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error (ENOSPC, EIO, permission, ...) on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error from the kernel or glommio.
        #[source]
        source: std::io::Error,
    },

    /// Stored bytes do not match their checksum.
    #[error(
        "checksum mismatch in {} at offset {offset}: got {got:#010x}, expected {expected:#010x}",
        path.display()
    )]
    ChecksumMismatch {
        /// File holding the damaged bytes.
        path: PathBuf,
        /// Byte offset of the checksummed region within the file.
        offset: u64,
        /// Checksum computed over the bytes read.
        got: u32,
        /// Checksum stored alongside the bytes.
        expected: u32,
    },

    /// A structure on disk is malformed (bad magic, impossible length, ...).
    #[error("corrupt file {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// File holding the malformed structure.
        path: PathBuf,
        /// Byte offset where the problem was detected.
        offset: u64,
        /// What was wrong, in words.
        reason: String,
    },

    /// A key longer than `Options::max_key_bytes` (or empty).
    #[error("key of {len} bytes is outside the allowed 1..={max} bytes")]
    KeyTooLarge {
        /// Length of the rejected key.
        len: usize,
        /// Configured maximum.
        max: usize,
    },

    /// A value longer than `Options::max_value_bytes`.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Length of the rejected value.
        len: usize,
        /// Configured maximum.
        max: usize,
    },

    /// A write would leave the key with more versions than
    /// `Options::max_siblings`: its writers keep writing without the
    /// context of a read. Read the key and write back with its context to
    /// resolve the siblings.
    #[error("key has {siblings} versions, more than the limit of {max}: read it and write back with its context to resolve them")]
    TooManySiblings {
        /// Versions the key would hold.
        siblings: usize,
        /// Configured maximum.
        max: usize,
    },

    /// A causal context with more entries than `Options::max_context_entries`.
    #[error("causal context of {entries} entries exceeds the limit of {max}")]
    ContextTooLarge {
        /// Entries in the rejected context.
        entries: usize,
        /// Configured maximum.
        max: usize,
    },

    /// A key's encoded sibling set would exceed `Options::max_set_bytes`.
    #[error("the key's versions would take {bytes} bytes, more than the limit of {max}")]
    SetTooLarge {
        /// Encoded size the set would have.
        bytes: usize,
        /// Configured maximum.
        max: usize,
    },

    /// A clock reading in a request (context counter, timestamp or dot) is
    /// further ahead of this node's clock than `Options::max_clock_skew_ms`:
    /// accepting it would drag this node's clock into the future.
    #[error("a clock reading is {ahead_ms} ms ahead of this node's clock, more than the allowed {max_ms} ms (check the clocks, e.g. NTP)")]
    ClockAhead {
        /// How far ahead it was.
        ahead_ms: u64,
        /// Configured maximum.
        max_ms: u64,
    },

    /// A commit-log record (key plus encoded sibling set) too large for one
    /// commit-log segment, so it can never be logged: raised before
    /// anything is written. A merged sibling set can get there with many
    /// siblings each within `max_value_bytes`.
    #[error("commit log record of {len} bytes exceeds the {max} bytes a segment can hold")]
    RecordTooLarge {
        /// Payload length of the rejected record.
        len: usize,
        /// Largest payload a segment holds (`segment_bytes` less the
        /// segment header, the batch header, the record framing and the
        /// alignment padding).
        max: usize,
    },

    /// The options passed to `Engine::open` are inconsistent.
    #[error("invalid engine options: {0}")]
    InvalidOptions(String),

    /// The commit log saw an error it cannot safely recover from in-process
    /// (a failed fdatasync): writes are refused until the engine is reopened,
    /// which replays the log from disk. Reads keep working.
    #[error("commit log is unusable after an earlier error ({0}); reopen the engine")]
    LogFailed(String),

    /// Both memtables are full and the last flush failed (for example the
    /// disk is full); writes are refused until a flush succeeds, which the
    /// engine retries on every write. Reads keep working.
    #[error("memtable is full and flushing it failed ({0}); writes resume once a flush succeeds")]
    FlushFailed(String),

    /// The engine was closed; no further operations are accepted.
    #[error("engine is closed")]
    Closed,

    /// An invariant the engine keeps did not hold: a bug, reported as an
    /// error rather than a panic that would stop the node.
    #[error("internal error (a bug, please report it): {0}")]
    Internal(String),
}

/// Shorthand used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            path: path.into(),
            source: source.into(),
        }
    }

    /// Builds a `Corrupt` error.
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True when the error is the disk being full, so callers (and tests) can
    /// tell "free some space" apart from "the disk is failing".
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                source.raw_os_error() == Some(28)
                    || source.kind() == std::io::ErrorKind::StorageFull
            }
            _ => false,
        }
    }
}
