//! Reading a table: metadata in memory, data blocks through the cache.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use super::block::{self, BlockError};
use super::bloom::{self, Bloom};
use super::footer::{Footer, FOOTER_BYTES};
use super::index::{decode_index, BlockHandle, Properties};
use super::iter::TableIter;
use super::TableMeta;
use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::io::{self, ReadSlots};

/// An open, immutable table. Index, bloom filter and properties stay in
/// memory; data blocks are read on demand (one aligned DMA read each) and
/// verified before use.
pub(crate) struct TableReader {
    meta: TableMeta,
    file: DmaFile,
    index: Vec<BlockHandle>,
    bloom: Bloom,
    cache: Rc<BlockCache>,
    /// The shard's bound on block reads in flight.
    reads: Rc<ReadSlots>,
}

impl TableReader {
    /// Opens `path`, reading and verifying footer, index, bloom and properties.
    /// Block reads share `reads`, the shard's bound on reads in flight.
    pub(crate) async fn open(
        path: &Path,
        id: u64,
        cache: Rc<BlockCache>,
        reads: Rc<ReadSlots>,
    ) -> Result<Self> {
        let file = io::open_read(path).await?;
        let size = file.file_size().await.map_err(|e| Error::io(path, e))?;
        if size < FOOTER_BYTES as u64 {
            return Err(Error::corrupt(
                path,
                0,
                format!("{size} bytes is too short for a table"),
            ));
        }
        let footer_at = size - FOOTER_BYTES as u64;
        let raw = io::read_exact(&file, path, footer_at, FOOTER_BYTES).await?;
        let footer = Footer::decode(&raw).map_err(|r| Error::corrupt(path, footer_at, r))?;
        let section = |(at, len): (u64, u64)| {
            if at.checked_add(len).is_none_or(|end| end > footer_at) {
                Err(Error::corrupt(
                    path,
                    footer_at,
                    "footer points past the end of the table",
                ))
            } else {
                Ok((at, len as usize))
            }
        };
        let (index_at, index_len) = section(footer.index)?;
        let (bloom_at, bloom_len) = section(footer.bloom)?;
        let (props_at, props_len) = section(footer.props)?;
        let index = decode_index(&io::read_exact(&file, path, index_at, index_len).await?)
            .map_err(|r| Error::corrupt(path, index_at, r))?;
        let bloom = Bloom::decode(&io::read_exact(&file, path, bloom_at, bloom_len).await?)
            .map_err(|r| Error::corrupt(path, bloom_at, r))?;
        let props = Properties::decode(&io::read_exact(&file, path, props_at, props_len).await?)
            .map_err(|r| Error::corrupt(path, props_at, r))?;
        if props.id != id {
            return Err(Error::corrupt(
                path,
                props_at,
                format!("table says it is id {}, expected {id}", props.id),
            ));
        }
        // A block read allocates its length before reading, so a handle must
        // lie inside the data section: a damaged offset near u64::MAX must
        // not wrap around this check (release builds do not trap overflow)
        // and then ask for a 4 GiB buffer.
        if let Some((i, _)) = index.iter().enumerate().find(|(_, h)| {
            h.offset
                .checked_add(u64::from(h.len))
                .is_none_or(|end| end > index_at)
        }) {
            return Err(Error::corrupt(
                path,
                index_at,
                format!("index entry {i} points past the data blocks"),
            ));
        }
        // Lookups binary-search the index by last key, which only works when
        // the keys ascend; an unsorted index would return wrong answers, not
        // errors.
        if let Some(i) = index
            .windows(2)
            .position(|w| (w[0].last.0, &w[0].last.1) >= (w[1].last.0, &w[1].last.1))
        {
            return Err(Error::corrupt(
                path,
                index_at,
                format!("index entry {} is not above the one before it", i + 1),
            ));
        }
        Ok(TableReader {
            meta: TableMeta {
                id,
                path: path.to_path_buf(),
                file_bytes: size,
                entries: props.entries,
                min: props.min,
                max: props.max,
                max_expiry_ms: props.max_expiry_ms,
            },
            file,
            index,
            bloom,
            cache,
            reads,
        })
    }

    /// What the table holds.
    pub(crate) fn meta(&self) -> &TableMeta {
        &self.meta
    }

    /// False when the key is certainly not in the table (outside its key
    /// range, or a bloom negative).
    pub(crate) fn may_contain(&self, token: u64, key: &[u8]) -> bool {
        self.in_range(token, key) && self.bloom.may_contain(bloom::hashes(token, key))
    }

    /// True when the key lies between the table's smallest and largest keys.
    pub(crate) fn in_range(&self, token: u64, key: &[u8]) -> bool {
        let k = (token, key);
        k >= (self.meta.min.0, self.meta.min.1.as_slice())
            && k <= (self.meta.max.0, self.meta.max.1.as_slice())
    }

    /// The value stored for the key, if any.
    pub(crate) async fn get(&self, token: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.may_contain(token, key) {
            return Ok(None);
        }
        let Some(block_no) = self.block_for((token, key)) else {
            return Ok(None);
        };
        let block = self.read_block(block_no, true).await?;
        let (body, count) =
            block::split_verified(&block).map_err(|e| self.block_error(block_no, e))?;
        let found =
            block::find(body, count, (token, key)).map_err(|e| self.block_error(block_no, e))?;
        Ok(found.map(<[u8]>::to_vec))
    }

    /// Index of the first block whose last key is >= `target`.
    pub(crate) fn block_for(&self, target: (u64, &[u8])) -> Option<usize> {
        let i = self
            .index
            .partition_point(|h| (h.last.0, h.last.1.as_slice()) < target);
        (i < self.index.len()).then_some(i)
    }

    /// Number of data blocks.
    pub(crate) fn block_count(&self) -> usize {
        self.index.len()
    }

    /// Reads data block `n`, from the cache when it is there; a block read
    /// from disk is verified before it is returned or cached, so every block
    /// this returns has a good checksum.
    pub(crate) async fn read_block(&self, n: usize, fill_cache: bool) -> Result<Rc<[u8]>> {
        let handle = &self.index[n];
        if let Some(b) = self.cache.get(self.meta.id, handle.offset) {
            return Ok(b);
        }
        let raw = self
            .reads
            .read_exact(
                &self.file,
                &self.meta.path,
                handle.offset,
                handle.len as usize,
            )
            .await?;
        block::verify(&raw).map_err(|e| self.block_error(n, e))?;
        let block: Rc<[u8]> = raw.into();
        if fill_cache {
            self.cache
                .insert(self.meta.id, handle.offset, block.clone());
        }
        Ok(block)
    }

    /// Turns a block problem into an error naming file and offset.
    pub(crate) fn block_error(&self, n: usize, e: BlockError) -> Error {
        let offset = self.index[n].offset;
        match e {
            BlockError::Checksum { got, expected } => Error::ChecksumMismatch {
                path: self.meta.path.clone(),
                offset,
                got,
                expected,
            },
            BlockError::Malformed(reason) => Error::corrupt(&self.meta.path, offset, reason),
        }
    }

    /// Streams entries from `start` (inclusive) up to `end_token` (inclusive).
    pub(crate) fn iter(
        self: &Rc<Self>,
        start: (u64, Vec<u8>),
        end_token: u64,
        fill_cache: bool,
    ) -> TableIter {
        TableIter::new(self.clone(), start, end_token, fill_cache)
    }

    /// Deletes the file (after compaction replaced it); open handles keep
    /// reading until dropped.
    pub(crate) async fn delete_file(&self) -> Result<()> {
        let dir: PathBuf = self
            .meta
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        io::remove_file(&dir, &self.meta.path).await
    }
}
