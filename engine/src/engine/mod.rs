//! The engine: one shard's LSM tree, tying commit log, memtables, tables,
//! block cache and compaction together. See the crate docs for invariants.

mod compact;
mod flush;
mod read;
mod write;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use glommio::sync::Semaphore;

use crate::cache::{BlockCache, CacheStats};
use crate::commitlog::{CommitLog, LogOptions, LogStats};
use crate::error::{Error, Result};
use crate::io;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::options::{Options, SyncMode};
use crate::table::{TableOptions, TableReader};
use crate::version::HybridClock;

pub use read::ScanBatch;
pub use write::{MintedWrite, WriteContext, WriteOptions};

/// File name of table `id` inside a shard directory.
fn table_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("table-{id:016x}.sst"))
}

/// A memtable that is being flushed. Writes whose log records went to a
/// segment below `boundary` still land here until they all complete.
struct Frozen {
    mem: Rc<RefCell<Memtable>>,
    boundary: u64,
}

/// Mutable state, only touched between awaits (never borrowed across one,
/// except the frozen memtable while it is written out, which nothing else
/// mutates by then).
struct State {
    active: Memtable,
    frozen: Option<Frozen>,
    /// Live tables, newest first.
    tables: Vec<Rc<TableReader>>,
    manifest: Manifest,
    /// Writes between log submit and memtable insert, by log segment.
    inflight: BTreeMap<u64, usize>,
    closed: bool,
}

/// Counters of work done since open, for `stats`.
#[derive(Default)]
struct Counters {
    puts: Cell<u64>,
    deletes: Cell<u64>,
    applies: Cell<u64>,
    gets: Cell<u64>,
    flushes: Cell<u64>,
    log_bound_flushes: Cell<u64>,
    flushed_bytes: Cell<u64>,
    compactions: Cell<u64>,
    compacted_bytes: Cell<u64>,
    write_stalls: Cell<u64>,
    sibling_warnings: Cell<u64>,
    clock_refusals: Cell<u64>,
}

/// What the engine has and has done; cheap to take, for `corekv status`,
/// metrics and benchmarks.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct EngineStats {
    /// Keys in the memtables (active and frozen).
    pub memtable_keys: u64,
    /// Approximate bytes in the memtables.
    pub memtable_bytes: u64,
    /// Live SSTables.
    pub tables: u64,
    /// Bytes of live SSTable files.
    pub table_bytes: u64,
    /// Entries in live SSTables (a key in several tables counts each time).
    pub table_entries: u64,
    /// Completed put / delete / apply / get calls.
    pub puts: u64,
    /// Completed deletes.
    pub deletes: u64,
    /// Completed replica applies.
    pub applies: u64,
    /// Completed gets.
    pub gets: u64,
    /// Memtable flushes and the table bytes they wrote.
    pub flushes: u64,
    /// Flushes started because the commit log reached `log_bytes_max`
    /// while the memtable was below its own bound.
    pub log_bound_flushes: u64,
    /// Table bytes written by flushes.
    pub flushed_bytes: u64,
    /// Compactions and the table bytes they wrote.
    pub compactions: u64,
    /// Table bytes written by compactions.
    pub compacted_bytes: u64,
    /// Times a writer waited because both memtables were full.
    pub write_stalls: u64,
    /// Writes that left a key with at least `Options::siblings_warn`
    /// versions.
    pub sibling_warnings: u64,
    /// Requests refused because a clock reading in them was too far ahead.
    pub clock_refusals: u64,
    /// Bytes of the live commit log: the segments a restart would replay,
    /// each allocated whole.
    pub log_bytes: u64,
    /// The live log size that starts a flush (`Options::log_bytes_max`).
    pub log_bytes_max: u64,
    /// The tombstone-GC horizon (Unix ms; `u64::MAX`: only gc_grace
    /// decides): tombstones written since are kept by compaction.
    pub tombstone_horizon_ms: u64,
    /// Commit-log figures.
    pub log: LogStats,
    /// Block-cache figures.
    pub cache: CacheStats,
    /// Whether acks wait for fdatasync.
    pub sync_mode: Option<SyncMode>,
}

/// One shard's storage engine. Open it with [`Engine::open`] on the
/// executor that will use it; share it among that executor's tasks via the
/// returned `Rc`.
pub struct Engine {
    dir: PathBuf,
    opts: Options,
    me: Weak<Engine>,
    log: Rc<CommitLog>,
    cache: Rc<BlockCache>,
    /// Bound on table-block reads in flight, shared by every table.
    reads: Rc<io::ReadSlots>,
    clock: RefCell<HybridClock>,
    state: RefCell<State>,
    /// Writes minted here and not yet in the memtable, by key.
    pending: RefCell<std::collections::HashMap<Vec<u8>, write::PendingKey>>,
    flush_lock: Semaphore,
    /// One manifest store at a time, held from the in-memory change until
    /// the store (or its rollback) is done: stores run off the shard's
    /// thread, and a flush and a compaction may store concurrently.
    manifest_lock: Semaphore,
    /// One compaction at a time (background or requested).
    compaction_lock: Semaphore,
    compaction_running: Cell<bool>,
    /// Tombstones deleted at or after this instant (Unix ms) survive
    /// compaction whatever their age: no repair that reached every replica
    /// has started since (see [`Engine::set_tombstone_horizon_ms`]).
    tombstone_horizon_ms: Cell<u64>,
    /// The low-share task queue compactions run in.
    compaction_queue: Cell<Option<glommio::TaskQueueHandle>>,
    flush_scheduled: Cell<bool>,
    /// Why the last flush failed, until one succeeds.
    last_flush_error: RefCell<Option<String>>,
    counters: Counters,
}

impl Engine {
    /// Opens (or creates) the shard directory `dir`: loads the manifest and
    /// its tables, replays the commit log into the memtable, removes files a
    /// crash left behind, and starts the log writer. Corruption anywhere but
    /// the torn tail of the last log segment is an error naming file and
    /// offset.
    pub async fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Rc<Engine>> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        io::warm_up(&dir).await?;

        let manifest = Manifest::load(&dir)?.unwrap_or(Manifest {
            log_floor: 0,
            next_table_id: 1,
            hlc_high: 0,
            tables: Vec::new(),
        });
        remove_orphans(&dir, &manifest).await?;
        let cache = Rc::new(BlockCache::new(opts.block_cache_bytes));
        let reads = Rc::new(io::ReadSlots::new(opts.max_concurrent_reads));
        let mut tables = Vec::with_capacity(manifest.tables.len());
        for &id in manifest.tables.iter().rev() {
            let reader =
                TableReader::open(&table_path(&dir, id), id, cache.clone(), reads.clone()).await?;
            tables.push(Rc::new(reader));
        }

        let mut clock = HybridClock::new();
        clock.observe(manifest.hlc_high);
        let mut active = Memtable::default();
        let log_opts = LogOptions {
            segment_bytes: opts.segment_bytes,
            batch_bytes_max: opts.commit_batch_bytes_max,
            sync_mode: opts.sync_mode,
        };
        let mode = opts.conflict;
        let replica = opts.replica_id;
        let unread = opts.unread_replica_id();
        let log_dir = dir.clone();
        let mut replay = |segment: u64, payload: &[u8]| -> Result<()> {
            let (key, set) = write::decode_record(payload).map_err(|reason| {
                Error::corrupt(log_dir.join(format!("log-{segment:016x}.seg")), 0, reason)
            })?;
            for v in set.versions() {
                if v.dot.replica == replica || v.dot.replica == unread {
                    clock.observe(v.dot.counter);
                }
            }
            clock.observe(set.context().max_counter(replica));
            clock.observe(set.context().max_counter(unread));
            active.apply(crate::token_of(&key), &key, &set, mode);
            Ok(())
        };
        let (log, replayed) =
            CommitLog::open(&dir, log_opts, manifest.log_floor, &mut replay).await?;
        if let Some((path, offset)) = &replayed.truncated_tail {
            tracing::warn!(file = %path.display(), offset, "commit log: truncated a torn tail record");
        }
        tracing::info!(
            dir = %dir.display(),
            tables = tables.len(),
            replayed_records = replayed.records,
            replayed_segments = replayed.segments,
            "engine opened"
        );

        let engine = Rc::new_cyclic(|me| Engine {
            dir,
            opts,
            me: me.clone(),
            log,
            cache,
            reads,
            clock: RefCell::new(clock),
            pending: RefCell::new(std::collections::HashMap::new()),
            state: RefCell::new(State {
                active,
                frozen: None,
                tables,
                manifest,
                inflight: BTreeMap::new(),
                closed: false,
            }),
            flush_lock: Semaphore::new(1),
            manifest_lock: Semaphore::new(1),
            compaction_lock: Semaphore::new(1),
            compaction_running: Cell::new(false),
            tombstone_horizon_ms: Cell::new(u64::MAX),
            compaction_queue: Cell::new(None),
            flush_scheduled: Cell::new(false),
            last_flush_error: RefCell::new(None),
            counters: Counters::default(),
        });
        engine.maybe_schedule_compaction();
        Ok(engine)
    }

    /// Flushes the memtable, stops background work and closes the commit
    /// log. Later calls return `Error::Closed`.
    pub async fn close(&self) -> Result<()> {
        if self.state.borrow().closed {
            return Err(Error::Closed);
        }
        let flushed = self.flush().await;
        self.state.borrow_mut().closed = true;
        // Wait for a running compaction to reach a safe point (it checks
        // `closed` between entries and abandons its output).
        for _ in 0..10_000 {
            if !self.compaction_running.get() {
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        let closed = self.log.close().await;
        flushed.and(closed)
    }

    /// The shard directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Sets the tombstone-GC horizon: compaction drops a tombstone only
    /// when it is older than `gc_grace` and was written before
    /// `horizon_ms`, the start of the last repair that reached every other
    /// replica of this engine's ranges. `u64::MAX` (the default, for an
    /// engine that is the only replica) leaves gc_grace alone to decide.
    /// The cluster layer sets it; a replica that missed a delete is then
    /// always repaired before the tombstone that would correct it is gone.
    pub fn set_tombstone_horizon_ms(&self, horizon_ms: u64) {
        self.tombstone_horizon_ms.set(horizon_ms);
    }

    /// The tombstone-GC horizon in effect (Unix ms; `u64::MAX`: none).
    pub fn tombstone_horizon_ms(&self) -> u64 {
        self.tombstone_horizon_ms.get()
    }

    /// Current figures.
    pub fn stats(&self) -> EngineStats {
        let st = self.state.borrow();
        let frozen = st.frozen.as_ref().map(|f| f.mem.borrow());
        let c = &self.counters;
        let log = self.log.stats();
        EngineStats {
            memtable_keys: (st.active.len() + frozen.as_ref().map_or(0, |f| f.len())) as u64,
            memtable_bytes: (st.active.bytes() + frozen.as_ref().map_or(0, |f| f.bytes())) as u64,
            tables: st.tables.len() as u64,
            table_bytes: st.tables.iter().map(|t| t.meta().file_bytes).sum(),
            table_entries: st.tables.iter().map(|t| t.meta().entries).sum(),
            puts: c.puts.get(),
            deletes: c.deletes.get(),
            applies: c.applies.get(),
            gets: c.gets.get(),
            flushes: c.flushes.get(),
            log_bound_flushes: c.log_bound_flushes.get(),
            flushed_bytes: c.flushed_bytes.get(),
            compactions: c.compactions.get(),
            compacted_bytes: c.compacted_bytes.get(),
            write_stalls: c.write_stalls.get(),
            sibling_warnings: c.sibling_warnings.get(),
            clock_refusals: c.clock_refusals.get(),
            log_bytes: self.live_log_bytes(&st, log.segment),
            log_bytes_max: self.opts.log_bytes_max,
            tombstone_horizon_ms: self.tombstone_horizon_ms.get(),
            log,
            cache: self.cache.stats(),
            sync_mode: Some(self.opts.sync_mode),
        }
    }

    /// The live log's size when `segment` is the newest: the segments
    /// from the floor (what the last flush left; segment ids start at 1)
    /// up to it.
    fn live_log_bytes(&self, st: &State, segment: u64) -> u64 {
        (segment + 1)
            .saturating_sub(st.manifest.log_floor.max(1))
            .saturating_mul(self.opts.segment_bytes)
    }

    fn check_open(&self) -> Result<()> {
        if self.state.borrow().closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn table_options(&self) -> TableOptions {
        TableOptions {
            block_bytes: self.opts.block_bytes,
            bloom_bits_per_key: self.opts.bloom_bits_per_key,
        }
    }

    /// Allocates a table id; it becomes durable with the next manifest.
    fn next_table_id(&self) -> u64 {
        let mut st = self.state.borrow_mut();
        let id = st.manifest.next_table_id;
        st.manifest.next_table_id += 1;
        id
    }

    /// The turn to change and store the manifest (see `manifest_lock`).
    async fn manifest_turn(&self) -> Result<glommio::sync::Permit<'_>> {
        self.manifest_lock
            .acquire_permit(1)
            .await
            .map_err(|_| Error::Closed)
    }

    /// Stores the in-memory manifest (with the clock's high-water mark);
    /// the caller holds the manifest turn, so stores land in the order of
    /// the changes they carry.
    async fn store_manifest(&self, _turn: &glommio::sync::Permit<'_>) -> Result<()> {
        let encoded = {
            let mut st = self.state.borrow_mut();
            st.manifest.hlc_high = self.clock.borrow().last();
            st.manifest.encode()
        };
        Manifest::store(encoded, &self.dir).await
    }
}

/// Deletes table files the manifest does not list and leftover temporary
/// files: what a crash during flush or compaction leaves behind.
async fn remove_orphans(dir: &Path, manifest: &Manifest) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let orphan_table = name
            .strip_prefix("table-")
            .and_then(|rest| rest.strip_suffix(".sst"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_some_and(|id| !manifest.tables.contains(&id));
        if orphan_table || name.ends_with(".tmp") {
            tracing::info!(file = %name, "removing a file left by an interrupted flush or compaction");
            io::remove_file(dir, &entry.path()).await?;
        }
    }
    Ok(())
}
