//! # corekv-engine — one shard's storage
//!
//! An LSM storage engine for a single shard of a thread-per-core server. It
//! runs on one glommio executor and is never shared between threads; every
//! method takes `&self` so many tasks of that executor can use it at once
//! (that concurrency is what group commit feeds on).
//!
//! Write path: encode → commit log (group commit) → memtable → ack.
//! Read path: memtable → SSTables newest first (key range → bloom filter →
//! block index → data block via the block cache) → merge sibling sets.
//!
//! Invariants the rest of corekv relies on:
//! - An acknowledged write survives a crash (in `SyncMode::Batch`, also
//!   power loss): it is in the commit log before the ack, and a log segment
//!   is deleted only after a flushed SSTable covering it is in the manifest.
//! - Entries are ordered by `(token, key)`, so a token range is one
//!   contiguous scan for repair and streaming.
//! - Values are sibling sets whose merge is commutative, associative and
//!   idempotent: replicas append without reading, and replaying, repairing
//!   or compacting the same data twice changes nothing.
//! - Bytes read from disk are checksummed before use; damage is an error
//!   naming the file and offset, never wrong data.

mod cache;
mod commitlog;
mod compaction;
mod engine;
mod error;
#[cfg(test)]
mod fuzz_tests;
mod io;
mod manifest;
mod memtable;
mod merge;
mod options;
mod table;
mod token;
pub mod version;

pub use cache::CacheStats;
pub use commitlog::LogStats;
pub use engine::{Engine, EngineStats, MintedWrite, ScanBatch, WriteContext, WriteOptions};
pub use error::{Error, Result};
pub use memtable::Memtable;
pub use options::{ConflictMode, Options, SyncMode};
pub use token::{token_of, Token, TokenRange};
