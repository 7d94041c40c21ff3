//! The commit log: every write is appended here before it is acknowledged.
//!
//! Group commit: writes append records to the open batch; one writer task
//! takes the whole batch, writes it with one write (O_DIRECT in batch mode,
//! through the page cache in periodic mode), fdatasyncs once (in
//! `batch` mode) and completes every write in it. Writes arriving meanwhile
//! fill the next batch, so the number of syncs per second stays bounded by
//! the disk's sync latency, not by the write rate. At most two batches
//! exist at once (one being written, one filling); a writer that finds the
//! filling batch full waits, which is the log's backpressure.

pub(crate) mod format;
mod recovery;
mod segment;

use std::cell::{Cell, RefCell};

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::io;
use crate::options::SyncMode;
use format::{BatchHeader, BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};
use segment::{Segment, SegmentFile};

pub(crate) use recovery::ReplayStats;

/// Upper bound of a file's DMA alignment, used when sizing a batch's
/// buffer ahead of the write's padding.
const MAX_ALIGN: u64 = 4096;

/// How the log is laid out and synced.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogOptions {
    pub(crate) segment_bytes: u64,
    pub(crate) batch_bytes_max: usize,
    pub(crate) sync_mode: SyncMode,
}

/// Commit-log figures since open.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct LogStats {
    /// Batches written.
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written to segments (headers and padding included).
    pub bytes: u64,
    /// fdatasync calls.
    pub syncs: u64,
    /// Total time spent in fdatasync, in µs.
    pub sync_time_us: u64,
    /// Id of the segment being written.
    pub segment: u64,
}

/// Why a batch failed, kept in a form every ticket can turn into an error.
#[derive(Clone, Debug)]
enum Failure {
    /// An I/O error on a file (ENOSPC, EIO, ...): the write failed, the log
    /// goes on.
    Io {
        path: PathBuf,
        kind: std::io::ErrorKind,
        os_error: Option<i32>,
        message: String,
    },
    /// The log can no longer be trusted (a failed fdatasync) or was closed.
    Log(String),
}

impl Failure {
    fn from_error(e: &Error) -> Failure {
        match e {
            Error::Io { path, source } => Failure::Io {
                path: path.clone(),
                kind: source.kind(),
                os_error: source.raw_os_error(),
                message: source.to_string(),
            },
            Error::LogFailed(reason) => Failure::Log(reason.clone()),
            other => Failure::Log(other.to_string()),
        }
    }

    fn to_error(&self) -> Error {
        match self {
            Failure::Io {
                path,
                os_error: Some(code),
                ..
            } => Error::io(path, std::io::Error::from_raw_os_error(*code)),
            Failure::Io {
                path,
                kind,
                message,
                ..
            } => Error::io(path, std::io::Error::new(*kind, message.clone())),
            Failure::Log(reason) => Error::LogFailed(reason.clone()),
        }
    }
}

/// A batch of records on its way to disk, shared by the tickets in it.
struct Batch {
    segment: u64,
    /// Room for the batch header (filled in when written), then the
    /// records: the writer sends this very buffer, without copying it.
    body: RefCell<Vec<u8>>,
    records: Cell<u64>,
    /// No more records may join (taken by the writer, or sealed by rotate).
    sealed: Cell<bool>,
    /// Closed when the writer takes the batch: frees the filling slot.
    taken: Semaphore,
    /// Closed when the batch's outcome is known.
    done: Semaphore,
    outcome: RefCell<Option<std::result::Result<(), Failure>>>,
}

impl Batch {
    /// A batch whose buffer starts with `capacity` bytes reserved (the
    /// previous batch's size: growing by doubling copied it several times).
    fn new(segment: u64, capacity: usize) -> Rc<Batch> {
        let mut body = Vec::with_capacity(capacity.max(BATCH_HEADER_BYTES));
        body.resize(BATCH_HEADER_BYTES, 0);
        Rc::new(Batch {
            segment,
            body: RefCell::new(body),
            records: Cell::new(0),
            sealed: Cell::new(false),
            taken: Semaphore::new(0),
            done: Semaphore::new(0),
            outcome: RefCell::new(None),
        })
    }

    fn finish(&self, outcome: std::result::Result<(), Failure>) {
        *self.outcome.borrow_mut() = Some(outcome);
        self.done.close();
    }
}

/// A submitted record's claim: which segment it goes to, and a way to wait
/// until it is durable.
pub(crate) struct Ticket {
    batch: Rc<Batch>,
}

impl Ticket {
    /// Segment the record is written to.
    pub(crate) fn segment(&self) -> u64 {
        self.batch.segment
    }

    /// Resolves when the record is durable per the sync mode: `batch` after
    /// the fdatasync covering it, `periodic` once the device has it.
    pub(crate) async fn durable(&self) -> Result<()> {
        // `done` is only ever closed, never signalled: acquire fails then.
        let _ = self.batch.done.acquire(1).await;
        match &*self.batch.outcome.borrow() {
            Some(Ok(())) => Ok(()),
            Some(Err(failure)) => Err(failure.to_error()),
            None => Err(Error::LogFailed("the batch was dropped unwritten".into())),
        }
    }
}

struct State {
    /// The batch accepting records, if any.
    filling: Option<Rc<Batch>>,
    /// Segment assignment: new batches go to `assign_segment` while the
    /// offset where the next batch would start there (`assign_tail`, an
    /// upper bound counting every batch already taken) leaves room for a
    /// full batch.
    assign_segment: u64,
    assign_tail: u64,
    current: Option<Segment>,
    next_seq: u64,
    failed: Option<String>,
    closed: bool,
    stats: LogStats,
    /// Bytes written since the last sync (periodic mode).
    unsynced: bool,
}

/// The write-ahead log of one shard. See the module docs.
pub(crate) struct CommitLog {
    dir: PathBuf,
    opts: LogOptions,
    state: RefCell<State>,
    /// Signalled when a batch has work; the writer waits on it.
    work: Semaphore,
    writer_done: Semaphore,
    /// Periodic mode: signalled when the log goes from synced to unsynced,
    /// so the sync loop sleeps until there is something to sync instead of
    /// waking every period on an idle shard; closed by `close`.
    dirty: Semaphore,
    /// Bytes to reserve for the next batch's buffer.
    batch_capacity: Cell<usize>,
    /// The segments' DMA alignment (the first segment's header size),
    /// which every batch is padded to: what a batch takes of a segment.
    /// Counting `MAX_ALIGN` instead, an unbatched write on a 512-byte
    /// device took 4 KiB of a segment while writing 512 bytes into it, so
    /// segments rolled, and the log's disk use grew, eight times too fast.
    align: u64,
}

impl CommitLog {
    /// Replays segments >= `floor` through `replay`, deletes older ones,
    /// starts a fresh segment and the writer task.
    pub(crate) async fn open(
        dir: &Path,
        opts: LogOptions,
        floor: u64,
        replay: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<(Rc<CommitLog>, ReplayStats)> {
        let stats = recovery::replay(dir, floor, replay).await?;
        let first = (stats.max_segment + 1).max(floor).max(1);
        let buffered = matches!(opts.sync_mode, SyncMode::Periodic { .. });
        let segment = Segment::create(dir, first, opts.segment_bytes, buffered).await?;
        let tail = segment.pos;
        let log = Rc::new(CommitLog {
            dir: dir.to_path_buf(),
            opts,
            state: RefCell::new(State {
                filling: None,
                assign_segment: first,
                assign_tail: tail,
                current: Some(segment),
                next_seq: stats.last_seq + 1,
                failed: None,
                closed: false,
                stats: LogStats {
                    segment: first,
                    ..LogStats::default()
                },
                unsynced: false,
            }),
            work: Semaphore::new(0),
            writer_done: Semaphore::new(0),
            dirty: Semaphore::new(0),
            batch_capacity: Cell::new(0),
            align: tail.max(512),
        });
        let writer = log.clone();
        glommio::spawn_local(async move { writer.writer_loop().await }).detach();
        if let SyncMode::Periodic { period } = opts.sync_mode {
            let syncer = log.clone();
            glommio::spawn_local(async move { syncer.periodic_sync_loop(period).await }).detach();
        }
        Ok((log, stats))
    }

    /// Adds a record of `payload_len` bytes, written by `encode` straight
    /// into the filling batch (no buffer of its own), and returns its
    /// ticket; waits only while the filling batch is full.
    pub(crate) async fn submit_with(
        &self,
        payload_len: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Ticket> {
        let mut encode = Some(encode);
        let max = self.max_record_payload();
        if payload_len > max {
            return Err(Error::RecordTooLarge {
                len: payload_len,
                max,
            });
        }
        let need = RECORD_HEADER_BYTES + payload_len;
        // A record too large for a regular batch (a sibling set merged from
        // many replicas' versions can outgrow any per-value bound) gets a
        // batch of its own, sized for it: it never fits a filling batch, so
        // it waits below until none is filling, then opens one that nothing
        // else joins.
        let own_batch = BATCH_HEADER_BYTES + need;
        let oversized = own_batch > self.opts.batch_bytes_max;
        // Each turn waits for one batch to be taken by the writer; bounded
        // because the writer takes a batch per write.
        loop {
            let full = {
                let mut st = self.state.borrow_mut();
                if let Some(reason) = &st.failed {
                    return Err(Error::LogFailed(reason.clone()));
                }
                if st.closed {
                    return Err(Error::Closed);
                }
                let fits = st.filling.as_ref().map(|b| {
                    !b.sealed.get() && b.body.borrow().len() + need <= self.opts.batch_bytes_max
                });
                match (fits, st.filling.clone()) {
                    (Some(false), Some(full)) => Some(full),
                    _ => {
                        let batch = match st.filling.clone() {
                            Some(b) => b,
                            None if oversized => {
                                let segment = self.assign(&mut st, own_batch as u64);
                                let b = Batch::new(segment, own_batch);
                                st.filling = Some(b.clone());
                                self.work.signal(1);
                                b
                            }
                            None => {
                                let segment =
                                    self.assign(&mut st, self.opts.batch_bytes_max as u64);
                                let b = Batch::new(segment, self.batch_capacity.get());
                                st.filling = Some(b.clone());
                                self.work.signal(1);
                                b
                            }
                        };
                        let encode = encode.take().expect("a record is pushed once");
                        format::push_record_with(&mut batch.body.borrow_mut(), payload_len, encode);
                        batch.records.set(batch.records.get() + 1);
                        if oversized {
                            // The batch is already past the limit; sealing
                            // says so instead of relying on the size test.
                            batch.sealed.set(true);
                        }
                        return Ok(Ticket { batch });
                    }
                }
            };
            if let Some(full) = full {
                let _ = full.taken.acquire(1).await;
            }
        }
    }

    /// Largest record payload the log takes: its batch (header, framing,
    /// payload, padding) must fit a fresh segment after the segment header
    /// (see `assign`), and the batch header's u32 length must count it.
    fn max_record_payload(&self) -> usize {
        let per_segment = self
            .opts
            .segment_bytes
            .saturating_sub(2 * self.align + (BATCH_HEADER_BYTES + RECORD_HEADER_BYTES) as u64);
        let per_header = u64::from(u32::MAX) - RECORD_HEADER_BYTES as u64;
        usize::try_from(per_segment.min(per_header)).unwrap_or(usize::MAX)
    }

    /// Picks the segment for a new batch of at most `batch_bytes` (before
    /// padding): the current one while such a batch still fits after
    /// everything already taken for it.
    fn assign(&self, st: &mut State, batch_bytes: u64) -> u64 {
        let room = batch_bytes.max(self.opts.batch_bytes_max as u64) + self.align;
        if st.assign_tail + room > self.opts.segment_bytes {
            st.assign_segment += 1;
            st.assign_tail = self.align;
        }
        st.assign_segment
    }

    /// Seals the filling batch and moves later batches to a new segment;
    /// returns that segment's id. Records submitted before the call are in
    /// segments below it, records submitted after in it or later.
    pub(crate) async fn rotate(&self) -> Result<u64> {
        let mut st = self.state.borrow_mut();
        if let Some(reason) = &st.failed {
            return Err(Error::LogFailed(reason.clone()));
        }
        if let Some(b) = &st.filling {
            b.sealed.set(true);
        }
        st.assign_segment += 1;
        st.assign_tail = self.align;
        Ok(st.assign_segment)
    }

    /// Deletes segment files with ids below `segment`, except the one being
    /// written.
    pub(crate) async fn delete_segments_before(&self, segment: u64) -> Result<()> {
        let current = self.state.borrow().current.as_ref().map(|s| s.id);
        for id in segment::list_segments(&self.dir)? {
            if id < segment && Some(id) != current {
                io::remove_file(&self.dir, &segment::segment_path(&self.dir, id)).await?;
            }
        }
        Ok(())
    }

    /// Writes what is pending, syncs, stops the writer and closes the file.
    pub(crate) async fn close(&self) -> Result<()> {
        self.state.borrow_mut().closed = true;
        self.work.signal(1);
        self.dirty.close();
        let _ = self.writer_done.acquire(1).await;
        let current = self.state.borrow_mut().current.take();
        if let Some(seg) = current {
            let synced = seg.file.sync(&seg.path).await;
            let closed = SegmentFile::close(seg.file, &seg.path).await;
            synced.and(closed)?;
        }
        match self.state.borrow().failed.clone() {
            Some(reason) => Err(Error::LogFailed(reason)),
            None => Ok(()),
        }
    }

    /// The segment new records are assigned to now: the newest live one.
    pub(crate) fn assigning_segment(&self) -> u64 {
        self.state.borrow().assign_segment
    }

    /// Current figures.
    pub(crate) fn stats(&self) -> LogStats {
        self.state.borrow().stats
    }

    /// The group-commit loop: take the filling batch, write it, sync it,
    /// complete its tickets; repeat until closed.
    async fn writer_loop(self: Rc<Self>) {
        loop {
            let (batch, closed) = {
                let mut st = self.state.borrow_mut();
                (st.filling.take(), st.closed)
            };
            let batch = match batch {
                Some(b) => Some(b),
                None if closed => None,
                None => {
                    let _ = self.work.acquire(1).await;
                    continue;
                }
            };
            let Some(batch) = batch else { break };
            batch.sealed.set(true);
            {
                let mut st = self.state.borrow_mut();
                if batch.segment == st.assign_segment {
                    let len = batch.body.borrow().len() as u64;
                    st.assign_tail += len.div_ceil(self.align) * self.align;
                }
            }
            batch.taken.close();
            let outcome = self.write_batch(&batch).await;
            match outcome {
                Ok(()) => batch.finish(Ok(())),
                Err(e) => {
                    tracing::error!(error = %e, "commit log write failed");
                    batch.finish(Err(Failure::from_error(&e)));
                }
            }
            if self.state.borrow().failed.is_some() {
                // Fail whatever is filling too; later submits fail at once.
                if let Some(b) = self.state.borrow_mut().filling.take() {
                    b.taken.close();
                    b.finish(Err(Failure::Log("commit log failed".into())));
                }
            }
        }
        self.writer_done.close();
    }

    /// Writes one batch to its segment (rolling over to it if needed) and,
    /// in batch mode, syncs it.
    async fn write_batch(&self, batch: &Batch) -> Result<()> {
        if self.state.borrow().current.as_ref().map(|s| s.id) != Some(batch.segment) {
            self.roll_to(batch.segment).await?;
        }
        let (file_path, pos, durable_before, seq) = {
            let st = self.state.borrow();
            let seg = st
                .current
                .as_ref()
                .ok_or_else(|| Error::LogFailed("no open segment".into()))?;
            (seg.path.clone(), seg.pos, seg.durable, st.next_seq)
        };
        let bytes = {
            let mut bytes = std::mem::take(&mut *batch.body.borrow_mut());
            let header = format::encode_batch_header(BatchHeader {
                seq,
                len: (bytes.len() - BATCH_HEADER_BYTES) as u32,
                durable_before,
            });
            bytes[..BATCH_HEADER_BYTES].copy_from_slice(&header);
            // The next batch starts with room for one like this (plus the
            // padding the write adds), bounded by the batch limit.
            self.batch_capacity
                .set((bytes.len() + MAX_ALIGN as usize).min(self.opts.batch_bytes_max));
            bytes
        };
        let file = {
            let st = self.state.borrow();
            let seg = st
                .current
                .as_ref()
                .ok_or_else(|| Error::LogFailed("no open segment".into()))?;
            seg.file.clone()
        };
        let written = file.write_owned_at(&file_path, pos, bytes).await?;
        drop(file);
        let was_synced = {
            let mut st = self.state.borrow_mut();
            st.next_seq += 1;
            st.stats.batches += 1;
            st.stats.records += batch.records.get();
            st.stats.bytes += written;
            let was_synced = !st.unsynced;
            st.unsynced = true;
            if let Some(seg) = st.current.as_mut() {
                seg.pos = pos + written;
            }
            was_synced
        };
        if was_synced {
            self.dirty.signal(1);
        }
        if self.opts.sync_mode == SyncMode::Batch {
            self.sync_current().await?;
        }
        Ok(())
    }

    /// fdatasyncs the current segment. A failure is fatal (the page state
    /// after a failed fsync is unknowable): the log refuses further writes.
    async fn sync_current(&self) -> Result<()> {
        let (file, path, upto) = {
            let st = self.state.borrow();
            let Some(seg) = st.current.as_ref() else {
                return Ok(());
            };
            (seg.file.clone(), seg.path.clone(), seg.pos)
        };
        let start = Instant::now();
        let result = file.sync(&path).await;
        drop(file);
        let mut st = self.state.borrow_mut();
        match result {
            Ok(()) => {
                st.stats.syncs += 1;
                st.stats.sync_time_us += start.elapsed().as_micros() as u64;
                if let Some(seg) = st.current.as_mut() {
                    if seg.path == path {
                        seg.durable = seg.durable.max(upto);
                        seg.file.release_synced(&seg.path, seg.durable);
                    }
                }
                st.unsynced = false;
                Ok(())
            }
            Err(e) => {
                st.failed = Some(format!("fdatasync failed: {e}"));
                Err(e)
            }
        }
    }

    /// Moves writing to segment `id`: syncs and closes the old file first so
    /// nothing written there is left unsynced.
    async fn roll_to(&self, id: u64) -> Result<()> {
        if self.state.borrow().unsynced {
            self.sync_current().await?;
        }
        let buffered = matches!(self.opts.sync_mode, SyncMode::Periodic { .. });
        let new = Segment::create(&self.dir, id, self.opts.segment_bytes, buffered).await?;
        let old = {
            let mut st = self.state.borrow_mut();
            st.stats.segment = id;
            st.current.replace(new)
        };
        if let Some(old) = old {
            SegmentFile::close(old.file, &old.path).await?;
        }
        Ok(())
    }

    /// Periodic mode: fdatasync every `period` while there is unsynced
    /// data; with none, sleeps until the next write (so the first write
    /// after a quiet spell is synced within `period` too).
    async fn periodic_sync_loop(self: Rc<Self>, period: Duration) {
        loop {
            // A stale permit from a write already synced costs one empty
            // round; `close` fails the wait and ends the loop.
            if !self.state.borrow().unsynced && self.dirty.acquire(1).await.is_err() {
                break;
            }
            glommio::timer::sleep(period).await;
            let (closed, unsynced) = {
                let st = self.state.borrow();
                (st.closed || st.failed.is_some(), st.unsynced)
            };
            if closed {
                break;
            }
            if unsynced {
                if let Err(e) = self.sync_current().await {
                    tracing::error!(error = %e, "periodic commit log sync failed; writes are refused");
                    break;
                }
            }
        }
    }
}
