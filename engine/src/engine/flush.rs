//! Flushing: memtable → SSTable, then the log segments it covers go.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::{table_path, Engine, Frozen};
use crate::error::Result;
use crate::memtable::Memtable;
use crate::table::{TableReader, TableWriter};
use crate::version::SiblingSet;

/// Longest a flush waits for in-flight writes of the frozen generation
/// (each waits for one log write and sync; a minute means the disk hangs).
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(60);

impl Engine {
    /// Writes the memtable to a new SSTable and deletes the commit-log
    /// segments it covers. Concurrent writes continue into a fresh memtable.
    /// A failed flush keeps the frozen memtable readable and is retried.
    pub async fn flush(&self) -> Result<()> {
        let _permit = self
            .flush_lock
            .acquire_permit(1)
            .await
            .map_err(|e| crate::Error::io(&self.dir, e))?;
        let result = self.flush_locked().await;
        match &result {
            Ok(()) => *self.last_flush_error.borrow_mut() = None,
            Err(e) => {
                tracing::error!(error = %e, "memtable flush failed");
                *self.last_flush_error.borrow_mut() = Some(e.to_string());
            }
        }
        result
    }

    // The frozen memtable stays borrowed while its table is written: by then
    // every write for it has drained (see `drain_writes_below`), so nothing
    // borrows it mutably, and readers only take shared borrows.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn flush_locked(&self) -> Result<()> {
        let needs_freeze = {
            let st = self.state.borrow();
            st.frozen.is_none() && !st.active.is_empty()
        };
        if needs_freeze {
            // Every record submitted after rotate() returns lands in a segment
            // >= boundary, so the frozen memtable owns exactly the segments
            // below it.
            let boundary = self.log.rotate().await?;
            let mut st = self.state.borrow_mut();
            // The next memtable is sized for as many tokens as this one
            // took, so it does not rehash its whole index (a stall of
            // milliseconds at a few hundred thousand keys) as it fills.
            let next = Memtable::with_capacity(st.active.tokens());
            let mem = std::mem::replace(&mut st.active, next);
            st.frozen = Some(Frozen {
                mem: Rc::new(RefCell::new(mem)),
                boundary,
            });
        }
        let Some((mem, boundary)) = self
            .state
            .borrow()
            .frozen
            .as_ref()
            .map(|f| (f.mem.clone(), f.boundary))
        else {
            return Ok(());
        };
        self.drain_writes_below(boundary).await;

        let table = if mem.borrow().is_empty() {
            None
        } else {
            Some(self.write_table(&mem.borrow()).await?)
        };
        let turn = self.manifest_turn().await?;
        {
            let mut st = self.state.borrow_mut();
            if let Some(t) = &table {
                st.manifest.tables.push(t.meta().id);
            }
            st.manifest.log_floor = st.manifest.log_floor.max(boundary);
        }
        if let Err(e) = self.store_manifest(&turn).await {
            if let Some(t) = &table {
                let id = t.meta().id;
                self.state.borrow_mut().manifest.tables.retain(|&x| x != id);
                drop(turn);
                let _ = t.delete_file().await;
            }
            return Err(e);
        }
        drop(turn);
        {
            let mut st = self.state.borrow_mut();
            if let Some(t) = &table {
                st.tables.insert(0, t.clone());
                self.counters.flushes.set(self.counters.flushes.get() + 1);
                self.counters
                    .flushed_bytes
                    .set(self.counters.flushed_bytes.get() + t.meta().file_bytes);
            }
            st.frozen = None;
        }
        if let Some(t) = &table {
            tracing::info!(
                table = t.meta().id,
                entries = t.meta().entries,
                bytes = t.meta().file_bytes,
                "flushed memtable"
            );
        }
        self.log.delete_segments_before(boundary).await?;
        self.maybe_schedule_compaction();
        Ok(())
    }

    /// Waits until every write whose record went to a segment below
    /// `boundary` has reached the frozen memtable (or failed).
    async fn drain_writes_below(&self, boundary: u64) {
        let deadline = std::time::Instant::now() + DRAIN_WAIT_MAX;
        while self
            .state
            .borrow()
            .inflight
            .range(..boundary)
            .next()
            .is_some()
        {
            if std::time::Instant::now() > deadline {
                tracing::warn!(
                    "flush: writes still in flight after {DRAIN_WAIT_MAX:?}; flushing without them"
                );
                break;
            }
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Writes `mem` as a new table and opens it.
    async fn write_table(&self, mem: &Memtable) -> Result<Rc<TableReader>> {
        let id = self.next_table_id();
        let path = table_path(&self.dir, id);
        let mut writer = TableWriter::create(&path, id, &self.table_options(), mem.len()).await?;
        for (token, key, bytes) in mem.iter() {
            // Memtable bytes were encoded by this process.
            let max_expiry = SiblingSet::decode(bytes, self.opts.conflict)
                .map(|s| s.max_expiry_ms())
                .unwrap_or(u64::MAX);
            if let Err(e) = writer.add(token, key, bytes, max_expiry).await {
                writer.abandon().await;
                return Err(e);
            }
        }
        let meta = writer.finish().await?;
        Ok(Rc::new(
            TableReader::open(&meta.path, id, self.cache.clone(), self.reads.clone()).await?,
        ))
    }

    /// Starts a background flush unless one is queued or running.
    pub(super) fn schedule_flush(&self) {
        if self.flush_scheduled.replace(true) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        glommio::spawn_local(async move {
            let _ = me.flush().await;
            me.flush_scheduled.set(false);
        })
        .detach();
    }
}
