//! Streaming a table's entries in order, one block at a time.

use std::rc::Rc;

use super::block;
use super::reader::TableReader;
use crate::error::Result;

/// Yields `(token, key, value)` from a start bound up to an end token.
/// Holds one decoded block at a time, so memory stays at one block.
pub(crate) struct TableIter {
    table: Rc<TableReader>,
    start: (u64, Vec<u8>),
    end_token: u64,
    fill_cache: bool,
    next_block: Option<usize>,
    rows: std::vec::IntoIter<(u64, Vec<u8>, Vec<u8>)>,
    done: bool,
}

impl TableIter {
    pub(super) fn new(
        table: Rc<TableReader>,
        start: (u64, Vec<u8>),
        end_token: u64,
        fill_cache: bool,
    ) -> Self {
        let next_block = table.block_for((start.0, &start.1));
        TableIter {
            table,
            start,
            end_token,
            fill_cache,
            next_block,
            rows: Vec::new().into_iter(),
            done: false,
        }
    }

    /// The next entry, or `None` at the end of the range.
    pub(crate) async fn next(&mut self) -> Result<Option<(u64, Vec<u8>, Vec<u8>)>> {
        // Bounded by the number of blocks: each turn consumes one.
        for _ in 0..=self.table.block_count() {
            if self.done {
                return Ok(None);
            }
            if let Some(row) = self.rows.next() {
                if row.0 > self.end_token {
                    self.done = true;
                    return Ok(None);
                }
                return Ok(Some(row));
            }
            let Some(n) = self.next_block.filter(|&n| n < self.table.block_count()) else {
                self.done = true;
                return Ok(None);
            };
            self.next_block = Some(n + 1);
            let raw = self.table.read_block(n, self.fill_cache).await?;
            let (body, count) =
                block::split_verified(&raw).map_err(|e| self.table.block_error(n, e))?;
            let entries = block::entries(body, count).map_err(|e| self.table.block_error(n, e))?;
            let start = (self.start.0, self.start.1.as_slice());
            let rows: Vec<_> = entries
                .into_iter()
                .filter(|e| (e.token, e.key) >= start)
                .map(|e| (e.token, e.key.to_vec(), e.value.to_vec()))
                .collect();
            self.rows = rows.into_iter();
        }
        Ok(None)
    }
}
