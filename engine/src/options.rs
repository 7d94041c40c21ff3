//! Engine options: every bound the engine lives within, with defaults that
//! suit the target workload (sessions of ~2 KiB, many small writes).

use std::time::Duration;

use crate::error::{Error, Result};

/// How concurrent versions of one key are resolved when sibling sets merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictMode {
    /// Keep every concurrent version; the client resolves them by writing
    /// back with the causal context it read.
    Siblings,
    /// Keep only the version with the highest timestamp (ties broken by dot),
    /// as Cassandra does.
    LastWriterWins,
}

/// When a write is acknowledged relative to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Ack after the write's group-commit batch is on disk and fdatasync'd.
    /// Survives power loss. The default.
    Batch,
    /// Ack once the kernel has the batch (written through the page cache:
    /// survives a crash of the process, not of the machine); fdatasync runs
    /// every `period` in the background, so a power loss can lose at most
    /// about one period of acknowledged writes.
    Periodic {
        /// Interval between background fdatasyncs.
        period: Duration,
    },
}

/// Configuration of one shard's engine. `Options::default()` is a working
/// single-node setup; `validate` is called by `Engine::open`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Identifies this shard in dots (`Dot::replica`). Must be unique across
    /// the cluster and stable across restarts; the node runtime derives it
    /// from node id and shard index.
    pub replica_id: u64,
    /// Largest accepted key, in bytes (default 64 KiB).
    pub max_key_bytes: usize,
    /// Largest accepted value, in bytes (default 1 MiB).
    pub max_value_bytes: usize,
    /// Most versions one key may hold (default 100): a write that would
    /// leave more is refused with `Error::TooManySiblings`, as Riak does.
    pub max_siblings: usize,
    /// Versions of a key from which a write is counted in
    /// `EngineStats::sibling_warnings` (default 25).
    pub siblings_warn: usize,
    /// Most entries (vector entries plus loose dots) a causal context
    /// from a client may carry (default 1024).
    pub max_context_entries: usize,
    /// Largest encoded sibling set of one key, in bytes; `None` (the
    /// default) means `2 × max_value_bytes + 64 KiB`.
    pub max_set_bytes: Option<usize>,
    /// How far ahead of the local clock a clock reading from a client or
    /// another replica may be, in ms (default 5 000); further is refused.
    pub max_clock_skew_ms: u64,
    /// Sibling handling (default: keep siblings).
    pub conflict: ConflictMode,
    /// Durability of acknowledged writes (default: batch).
    pub sync_mode: SyncMode,
    /// Size of one commit-log segment file (default 64 MiB).
    pub segment_bytes: u64,
    /// Upper bound of one group-commit batch (default 4 MiB); a batch closes
    /// when full and the next one waits for it. A record larger than this
    /// is written in a batch of its own.
    pub commit_batch_bytes_max: usize,
    /// Memtable size that triggers a flush to an SSTable (default 64 MiB).
    pub memtable_bytes_max: usize,
    /// Commit-log size (its live segments) that triggers a flush even
    /// when the memtable is below `memtable_bytes_max` (default 1 GiB), so
    /// the log stays bounded: overwrites of the same keys keep a memtable
    /// small while every one of them adds to the log, which the disk holds
    /// and recovery replays. While that flush runs, writers wait once the
    /// log is a segment past this bound, so it holds on a slow disk too.
    /// At least two segments.
    pub log_bytes_max: u64,
    /// Byte budget of the block cache (default 64 MiB).
    pub block_cache_bytes: usize,
    /// Target size of an SSTable data block before alignment (default 4 KiB).
    pub block_bytes: usize,
    /// Bloom filter bits per key (default 10, about 1 % false positives).
    pub bloom_bits_per_key: u32,
    /// Tombstones (and expired values) younger than this are kept by
    /// compaction so repair can propagate them (default 10 days). Must be
    /// longer than the cluster's repair interval, or deletes can resurrect.
    pub gc_grace: Duration,
    /// Size-tiered compaction merges a bucket once it holds this many tables
    /// (default 4).
    pub compaction_min_tables: usize,
    /// Most tables merged by one compaction (default 16).
    pub compaction_max_tables: usize,
    /// Table-block reads (gets, scans and compaction) in flight at once;
    /// more wait in arrival order (default 128). `corekv tune io` measures
    /// the depth where the disk stops scaling.
    pub max_concurrent_reads: usize,
    /// Whether the engine starts its own background compaction task
    /// (default true). Tests and benchmarks turn it off to compact by hand.
    pub auto_compaction: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replica_id: 1,
            max_key_bytes: 64 * 1024,
            max_value_bytes: 1024 * 1024,
            max_siblings: 100,
            siblings_warn: 25,
            max_context_entries: 1024,
            max_set_bytes: None,
            max_clock_skew_ms: 5_000,
            conflict: ConflictMode::Siblings,
            sync_mode: SyncMode::Batch,
            segment_bytes: 64 * 1024 * 1024,
            commit_batch_bytes_max: 4 * 1024 * 1024,
            memtable_bytes_max: 64 * 1024 * 1024,
            log_bytes_max: 1 << 30,
            block_cache_bytes: 64 * 1024 * 1024,
            block_bytes: 4096,
            bloom_bits_per_key: 10,
            gc_grace: Duration::from_secs(10 * 24 * 3600),
            compaction_min_tables: 4,
            compaction_max_tables: 16,
            max_concurrent_reads: 128,
            auto_compaction: true,
        }
    }
}

impl Options {
    /// Bytes one commit-log record may take at most: the largest key and
    /// sibling set plus framing.
    pub fn max_record_bytes(&self) -> usize {
        self.max_key_bytes + self.set_bytes_max() + 4096
    }

    /// The replica id of dots issued by writes that do not read the key
    /// first (overwrites, last-writer-wins): `replica_id` with its top bit
    /// set. Only dots under `replica_id` itself are ever folded into this
    /// replica's vector entry (see `CausalContext::fold_own`).
    pub fn unread_replica_id(&self) -> u64 {
        self.replica_id | 1 << 63
    }

    /// The bound on one key's encoded sibling set (see `max_set_bytes`).
    pub fn set_bytes_max(&self) -> usize {
        self.max_set_bytes
            .unwrap_or_else(|| Self::default_set_bytes(self.max_value_bytes))
    }

    /// `max_set_bytes` left unset, for values up to `max_value_bytes`:
    /// room for two of the largest values (a value and a concurrent one)
    /// plus 64 KiB of versions and context.
    pub fn default_set_bytes(max_value_bytes: usize) -> usize {
        max_value_bytes.saturating_mul(2).saturating_add(64 << 10)
    }

    /// Checks that the bounds fit together; returns a message naming the
    /// offending option otherwise.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::InvalidOptions(m));
        if self.max_key_bytes == 0 || self.max_key_bytes > 1 << 20 {
            return fail(format!(
                "max_key_bytes {} not in 1..=1048576",
                self.max_key_bytes
            ));
        }
        if self.max_value_bytes > 64 << 20 {
            return fail(format!(
                "max_value_bytes {} above 64 MiB",
                self.max_value_bytes
            ));
        }
        if self.replica_id == 0 || self.replica_id >> 63 != 0 {
            return fail(format!(
                "replica_id {:#x} must be above 0 with its top bit clear",
                self.replica_id
            ));
        }
        if self.set_bytes_max() < self.max_value_bytes + 4096 {
            return fail(format!(
                "max_set_bytes {} must hold the largest value (max_value_bytes {} + 4 KiB)",
                self.set_bytes_max(),
                self.max_value_bytes
            ));
        }
        if self.max_siblings == 0 || self.max_siblings > 65_535 {
            return fail(format!(
                "max_siblings {} not in 1..=65535",
                self.max_siblings
            ));
        }
        if self.max_context_entries == 0 || self.max_context_entries > 1 << 20 {
            return fail(format!(
                "max_context_entries {} not in 1..=1048576",
                self.max_context_entries
            ));
        }
        // A record larger than a batch is written in a batch of its own
        // (`CommitLog::submit_with`), so the batch bound is only a group-
        // commit size; a batch's length is a u32 on disk. What must hold a
        // maximal record is a segment: header and padding at the largest
        // DMA alignment (4 KiB) on either side, plus batch and record
        // headers.
        if self.commit_batch_bytes_max < 4096 || self.commit_batch_bytes_max > u32::MAX as usize {
            return fail(format!(
                "commit_batch_bytes_max {} not in 4096..={}",
                self.commit_batch_bytes_max,
                u32::MAX
            ));
        }
        let segment_need = self.max_record_bytes() as u64 + 2 * 4096 + 64;
        if self.segment_bytes < segment_need {
            return fail(format!(
                "segment_bytes {} must hold one maximal record ({segment_need} bytes with its framing)",
                self.segment_bytes
            ));
        }
        if self.segment_bytes < 2 * self.commit_batch_bytes_max as u64 {
            return fail(format!(
                "segment_bytes {} must be at least twice commit_batch_bytes_max {}",
                self.segment_bytes, self.commit_batch_bytes_max
            ));
        }
        if self.log_bytes_max < 2 * self.segment_bytes {
            return fail(format!(
                "log_bytes_max {} must be at least two segments (2 x segment_bytes {})",
                self.log_bytes_max, self.segment_bytes
            ));
        }
        if self.block_bytes < 512 || self.block_bytes > 1 << 20 {
            return fail(format!(
                "block_bytes {} not in 512..=1048576",
                self.block_bytes
            ));
        }
        if self.bloom_bits_per_key == 0 || self.bloom_bits_per_key > 64 {
            return fail(format!(
                "bloom_bits_per_key {} not in 1..=64",
                self.bloom_bits_per_key
            ));
        }
        if self.compaction_min_tables < 2 || self.compaction_max_tables < self.compaction_min_tables
        {
            return fail(format!(
                "compaction_min_tables {} must be >= 2 and <= compaction_max_tables {}",
                self.compaction_min_tables, self.compaction_max_tables
            ));
        }
        if self.max_concurrent_reads == 0 || self.max_concurrent_reads > 4096 {
            return fail(format!(
                "max_concurrent_reads {} not in 1..=4096",
                self.max_concurrent_reads
            ));
        }
        if let SyncMode::Periodic { period } = self.sync_mode {
            if period.is_zero() {
                return fail("periodic sync period must be above zero".into());
            }
        }
        Ok(())
    }
}
