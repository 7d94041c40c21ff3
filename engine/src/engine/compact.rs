//! Background size-tiered compaction, in a low-share task queue so that
//! foreground requests keep their latency.

use std::rc::Rc;

use glommio::{Latency, Shares};

use super::{table_path, Engine};
use crate::compaction::picker;
use crate::error::Result;
use crate::merge::{MergeIter, Source};
use crate::table::{TableReader, TableWriter};
use crate::token::Token;
use crate::version::wall_clock_ms;

/// Compaction's share of the CPU relative to the default queue's 1000.
const COMPACTION_SHARES: usize = 100;

impl Engine {
    /// Runs compactions until no size tier has enough tables. Returns the
    /// number of compactions done. Also called by the background task.
    pub async fn compact(&self) -> Result<usize> {
        let mut done = 0;
        // Each round replaces >= 2 tables by at most one: bounded by the count.
        let rounds_max = self.state.borrow().tables.len();
        for _ in 0..rounds_max {
            let sizes: Vec<(u64, u64)> = self
                .state
                .borrow()
                .tables
                .iter()
                .map(|t| (t.meta().id, t.meta().file_bytes))
                .collect();
            let picked = picker::pick(
                &sizes,
                self.opts.compaction_min_tables,
                self.opts.compaction_max_tables,
            );
            if picked.is_empty() {
                break;
            }
            self.compact_tables(Some(&picked)).await?;
            done += 1;
        }
        Ok(done)
    }

    /// Merges every live table into one (a major compaction).
    pub async fn compact_all(&self) -> Result<()> {
        self.compact_tables(None).await
    }

    /// Spawns the compaction task unless it is running or disabled.
    pub(super) fn maybe_schedule_compaction(&self) {
        if !self.opts.auto_compaction || self.compaction_running.get() {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        // One low-share queue per engine, created on first use.
        let queue = match self.compaction_queue.get() {
            Some(q) => q,
            None => {
                let q = glommio::executor().create_task_queue(
                    Shares::Static(COMPACTION_SHARES),
                    Latency::NotImportant,
                    "corekv-compaction",
                );
                self.compaction_queue.set(Some(q));
                q
            }
        };
        self.compaction_running.set(true);
        let task = glommio::spawn_local_into(
            async move {
                if let Err(e) = me.compact().await {
                    tracing::error!(error = %e, "compaction failed; will retry after the next flush");
                }
                me.compaction_running.set(false);
            },
            queue,
        );
        if let Ok(task) = task {
            task.detach();
        } else {
            self.compaction_running.set(false);
        }
    }

    /// Merges the tables `ids` (all live tables for `None`, decided once no
    /// other compaction runs) into one new table, dropping superseded
    /// versions, expired values and tombstones past gc_grace.
    async fn compact_tables(&self, ids: Option<&[u64]>) -> Result<()> {
        let _permit = self
            .compaction_lock
            .acquire_permit(1)
            .await
            .map_err(|e| crate::Error::io(&self.dir, e))?;
        let ids_given = ids.is_some();
        // Another compaction may have consumed some inputs while we waited.
        let ids: Vec<u64> = {
            let st = self.state.borrow();
            let live = st.tables.iter().map(|t| t.meta().id);
            match ids {
                Some(ids) => live.filter(|id| ids.contains(id)).collect(),
                None => live.collect(),
            }
        };
        // A major compaction (`None`) rewrites even a lone table, so an
        // operator's `compact` purges what gc_grace allows at once; picked
        // compactions need two tables to have anything to merge.
        let fewest = if ids_given { 2 } else { 1 };
        if ids.len() < fewest {
            return Ok(());
        }
        let ids = ids.as_slice();
        let (inputs, others): (Vec<Rc<TableReader>>, Vec<Rc<TableReader>>) = self
            .state
            .borrow()
            .tables
            .iter()
            .cloned()
            .partition(|t| ids.contains(&t.meta().id));
        let input_bytes: u64 = inputs.iter().map(|t| t.meta().file_bytes).sum();
        let sources = inputs
            .iter()
            .map(|t| {
                Source::Table(
                    t.iter((0, Vec::new()), Token::MAX, false),
                    t.meta().path.clone(),
                )
            })
            .collect();
        let mut merge = MergeIter::new(sources, self.opts.conflict).await?;
        let id = self.next_table_id();
        let path = table_path(&self.dir, id);
        let expected: u64 = inputs.iter().map(|t| t.meta().entries).sum();
        let mut writer =
            TableWriter::create(&path, id, &self.table_options(), expected as usize).await?;
        let now = wall_clock_ms();
        let grace_ms = self.opts.gc_grace.as_millis() as u64;
        let repaired_ms = self.tombstone_horizon_ms.get();
        let mut written = 0u64;
        let mut dropped = 0u64;
        let mut encoded = Vec::new();
        loop {
            let step = async {
                let Some((token, key, mut set)) = merge.next().await? else {
                    return Ok(false);
                };
                let elsewhere = self.key_may_exist_outside(&others, token, &key);
                if set.gc(now, grace_ms, repaired_ms, elsewhere) {
                    dropped += 1;
                    return Ok(true);
                }
                encoded.clear();
                set.encode(&mut encoded);
                writer
                    .add(token, &key, &encoded, set.max_expiry_ms())
                    .await?;
                written += 1;
                Ok::<bool, crate::Error>(true)
            };
            match step.await {
                Ok(true) if !self.state.borrow().closed => {}
                Ok(true) => {
                    writer.abandon().await;
                    return Err(crate::Error::Closed);
                }
                Ok(false) => break,
                Err(e) => {
                    writer.abandon().await;
                    return Err(e);
                }
            }
        }
        let output = if written == 0 {
            writer.abandon().await;
            None
        } else {
            let meta = writer.finish().await?;
            Some(Rc::new(
                TableReader::open(&meta.path, id, self.cache.clone(), self.reads.clone()).await?,
            ))
        };
        let turn = self.manifest_turn().await?;
        {
            let mut st = self.state.borrow_mut();
            st.manifest.tables.retain(|t| !ids.contains(t));
            if let Some(out) = &output {
                st.manifest.tables.push(out.meta().id);
            }
        }
        self.store_manifest(&turn).await?;
        drop(turn);
        let output_bytes = output.as_ref().map_or(0, |t| t.meta().file_bytes);
        {
            let mut st = self.state.borrow_mut();
            st.tables.retain(|t| !ids.contains(&t.meta().id));
            if let Some(out) = output {
                // Newest first: the output replaces its inputs' place by age
                // only loosely; reads merge all tables, so order is not
                // semantic, only a cheap heuristic for the likely-hot.
                st.tables.push(out);
            }
        }
        for t in &inputs {
            self.cache.remove_table(t.meta().id);
            t.delete_file().await?;
        }
        self.counters
            .compactions
            .set(self.counters.compactions.get() + 1);
        self.counters
            .compacted_bytes
            .set(self.counters.compacted_bytes.get() + output_bytes);
        tracing::info!(
            inputs = inputs.len(),
            input_bytes,
            output_bytes,
            entries = written,
            purged = dropped,
            "compacted tables"
        );
        Ok(())
    }

    /// True when a key may have data outside the tables being compacted: in
    /// another table or a memtable. Tombstones of such keys must stay.
    fn key_may_exist_outside(&self, others: &[Rc<TableReader>], token: Token, key: &[u8]) -> bool {
        if others.iter().any(|t| t.may_contain(token, key)) {
            return true;
        }
        let st = self.state.borrow();
        st.active.get(token, key).is_some()
            || st
                .frozen
                .as_ref()
                .is_some_and(|f| f.mem.borrow().get(token, key).is_some())
    }
}
