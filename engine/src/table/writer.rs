//! Building a table from entries in `(token, key)` order.

use std::path::{Path, PathBuf};

use glommio::io::DmaFile;

use super::block;
use super::bloom::{self, Bloom};
use super::footer::{Footer, FOOTER_BYTES};
use super::index::{encode_index, BlockHandle, Properties};
use super::{align_up, TableMeta, TableOptions, BLOCK_ALIGN};
use crate::error::Result;
use crate::io;

/// Entry count and checksum at the end of every block.
const BLOCK_TRAILER_BYTES: usize = 8;
/// A block never grows past this many times `block_bytes`.
const MAX_BLOCK_FACTOR: usize = 8;

/// Aligned bytes buffered before one DMA write.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Writes a new table file. Entries must arrive in strictly increasing
/// `(token, key)` order (asserted: a violation is a bug in the caller).
/// Nothing is visible until `finish` has synced the file.
pub(crate) struct TableWriter {
    path: PathBuf,
    id: u64,
    opts: TableOptions,
    file: DmaFile,
    /// Aligned bytes not yet written, and where they go.
    pending: Vec<u8>,
    pending_at: u64,
    block: Vec<u8>,
    block_count: u32,
    block_last: Option<(u64, Vec<u8>)>,
    handles: Vec<BlockHandle>,
    hashes: Vec<(u64, u64)>,
    min: Option<(u64, Vec<u8>)>,
    entries: u64,
    max_expiry_ms: u64,
}

impl TableWriter {
    /// Creates `path` (never overwriting an existing file).
    pub(crate) async fn create(
        path: &Path,
        id: u64,
        opts: &TableOptions,
        expected_entries: usize,
    ) -> Result<Self> {
        let file = io::create_new(path).await?;
        Ok(TableWriter {
            path: path.to_path_buf(),
            id,
            opts: *opts,
            file,
            pending: Vec::with_capacity(WRITE_BUFFER_BYTES + BLOCK_ALIGN),
            pending_at: 0,
            block: Vec::with_capacity(opts.block_bytes + BLOCK_ALIGN),
            block_count: 0,
            block_last: None,
            handles: Vec::new(),
            hashes: Vec::with_capacity(expected_entries.min(1 << 24)),
            min: None,
            entries: 0,
            max_expiry_ms: 0,
        })
    }

    /// Adds one entry.
    pub(crate) async fn add(
        &mut self,
        token: u64,
        key: &[u8],
        value: &[u8],
        max_expiry_ms: u64,
    ) -> Result<()> {
        if let Some((t, k)) = &self.block_last {
            assert!(
                (*t, k.as_slice()) < (token, key),
                "table entries out of order"
            );
        } else if let Some(last) = self.handles.last() {
            assert!(
                (last.last.0, last.last.1.as_slice()) < (token, key),
                "table entries out of order"
            );
        }
        if self.block_count > 0 && self.should_close_block(block::entry_len(key, value)) {
            self.finish_block().await?;
        }
        block::push_entry(&mut self.block, token, key, value);
        self.block_count += 1;
        self.block_last = Some((token, key.to_vec()));
        self.hashes.push(bloom::hashes(token, key));
        if self.min.is_none() {
            self.min = Some((token, key.to_vec()));
        }
        self.entries += 1;
        self.max_expiry_ms = self.max_expiry_ms.max(max_expiry_ms);
        Ok(())
    }

    /// Whether the open block should be closed before an entry of
    /// `entry_len` bytes. Blocks are padded to 4 KiB, so a block closes only
    /// once it is at least `block_bytes` *and* its padding would waste at
    /// most an eighth of it (2 KiB sessions would otherwise waste half of
    /// every 4 KiB block), or once it reaches `MAX_BLOCK_FACTOR` times the
    /// target. An entry larger than the target gets a block of its own.
    fn should_close_block(&self, entry_len: usize) -> bool {
        let len = self.block.len() + BLOCK_TRAILER_BYTES;
        let target = self.opts.block_bytes;
        if entry_len >= target || len + entry_len > MAX_BLOCK_FACTOR * target {
            return true;
        }
        len >= target && align_up(len) - len <= len / 8
    }

    async fn finish_block(&mut self) -> Result<()> {
        let Some(last) = self.block_last.take() else {
            return Ok(());
        };
        block::seal(&mut self.block, self.block_count);
        let offset = self.pending_at + self.pending.len() as u64;
        self.handles.push(BlockHandle {
            last,
            offset,
            len: self.block.len() as u32,
        });
        self.pending.extend_from_slice(&self.block);
        self.pending.resize(align_up(self.pending.len()), 0);
        self.block.clear();
        self.block_count = 0;
        if self.pending.len() >= WRITE_BUFFER_BYTES {
            self.write_pending().await?;
        }
        Ok(())
    }

    async fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        io::write_at(&self.file, &self.path, self.pending_at, &self.pending).await?;
        self.pending_at += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Writes index, bloom filter, properties and footer, syncs and closes.
    /// Refuses an empty table (the engine never writes one).
    pub(crate) async fn finish(mut self) -> Result<TableMeta> {
        let result = self.finish_inner().await;
        let closed = io::close(self.file, &self.path).await;
        let result = result.and_then(|meta| closed.map(|()| meta));
        if result.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }

    async fn finish_inner(&mut self) -> Result<TableMeta> {
        assert!(self.entries > 0, "an empty table was about to be written");
        let max = self
            .block_last
            .clone()
            .or_else(|| self.handles.last().map(|h| h.last.clone()));
        self.finish_block().await?;
        let data_bytes = self.pending_at + self.pending.len() as u64;
        let meta_at = data_bytes;
        let mut meta = Vec::new();
        encode_index(&self.handles, &mut meta);
        let index = (meta_at, meta.len() as u64);
        let bloom_start = meta.len();
        Bloom::build(&self.hashes, self.opts.bloom_bits_per_key).encode(&mut meta);
        let bloom = (
            meta_at + bloom_start as u64,
            (meta.len() - bloom_start) as u64,
        );
        let props_start = meta.len();
        let (min, max) = match (self.min.clone(), max) {
            (Some(min), Some(max)) => (min, max),
            _ => unreachable!("entries > 0 implies min and max"),
        };
        Properties {
            entries: self.entries,
            max_expiry_ms: self.max_expiry_ms,
            data_bytes,
            id: self.id,
            min: min.clone(),
            max: max.clone(),
        }
        .encode(&mut meta);
        let props = (
            meta_at + props_start as u64,
            (meta.len() - props_start) as u64,
        );
        // Pad so the footer ends exactly at an aligned end of file.
        let total = align_up(meta.len() + FOOTER_BYTES);
        meta.resize(total - FOOTER_BYTES, 0);
        meta.extend_from_slice(
            &Footer {
                index,
                bloom,
                props,
            }
            .encode(),
        );
        self.pending.extend_from_slice(&meta);
        self.write_pending().await?;
        io::sync(&self.file, &self.path).await?;
        let file_bytes = self.pending_at;
        Ok(TableMeta {
            id: self.id,
            path: self.path.clone(),
            file_bytes,
            entries: self.entries,
            min,
            max,
            max_expiry_ms: self.max_expiry_ms,
        })
    }

    /// Gives up on the table: closes and deletes the partial file.
    pub(crate) async fn abandon(self) {
        let _ = self.file.close().await;
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(file = %self.path.display(), error = %e, "could not delete an abandoned table");
        }
    }
}
