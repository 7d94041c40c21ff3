//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `corekv tune` or when loading an io
/// properties file. Every variant names what it was working on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed; `what` names the file or
    /// operation.
    #[error("{what}: {source}")]
    Io {
        /// The file or operation.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An io properties file exists but cannot be used.
    #[error("io properties file {}: {reason}", path.display())]
    InvalidProperties {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The measurement was stopped by SIGINT (Ctrl-C); its test file was
    /// removed.
    #[error("interrupted; the test file was removed")]
    Interrupted,
}

impl Error {
    /// An I/O error about `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
