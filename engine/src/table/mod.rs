//! SSTables: immutable sorted files of `(token, key) → encoded sibling set`.
//!
//! Layout of `table-<id:016x>.sst` (little-endian; docs/FORMAT.md):
//! ```text
//! data blocks   each starts at a 4096-aligned offset:
//!                 entries: u64 token, u32 key len K, u32 value len V, K key bytes, V value bytes
//!                 u32 entry count, u32 CRC-32C of everything before it in the block
//!                 zero padding to the next 4096 boundary
//! index block   (4096-aligned) per data block: u64 last token, u32 K, K bytes last key,
//!                 u64 block offset, u32 block length (unpadded, trailer included);
//!               then u32 block count, u32 CRC-32C
//! bloom block   u32 hash count k, u64 bit count m, ceil(m/8) bytes of bits, u32 CRC-32C
//! properties    u64 entries, u64 max expiry ms (u64::MAX = some entry never expires),
//!               u64 data bytes, u64 table id, u64 min token, u32 K, K bytes min key,
//!               u64 max token, u32 K, K bytes max key, u32 CRC-32C
//! zero padding  so that the footer ends exactly at a 4096 boundary = end of file
//! footer (64)   u64 index offset, u64 index length, u64 bloom offset, u64 bloom length,
//!               u64 properties offset, u64 properties length, u32 format version = 1,
//!               8 bytes magic "CKVSST01", u32 CRC-32C of the 60 bytes before it
//! ```
//! A reader finds the footer in the file's last 64 bytes; everything else is
//! reached from it. Empty tables are never written (the writer refuses).

pub(crate) mod block;
pub(crate) mod bloom;
pub(crate) mod footer;
pub(crate) mod index;
mod iter;
mod reader;
mod writer;

pub(crate) use iter::TableIter;
pub(crate) use reader::TableReader;
pub(crate) use writer::TableWriter;

use std::path::PathBuf;

/// Every data block and the metadata section start at multiples of this.
pub(crate) const BLOCK_ALIGN: usize = 4096;

/// How tables are built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TableOptions {
    /// Target uncompressed size of a data block.
    pub(crate) block_bytes: usize,
    /// Bloom filter bits per key.
    pub(crate) bloom_bits_per_key: u32,
}

/// What a finished table holds, from its properties block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableMeta {
    /// Table id (also in the file name).
    pub(crate) id: u64,
    /// Path of the file.
    pub(crate) path: PathBuf,
    /// File size in bytes.
    pub(crate) file_bytes: u64,
    /// Number of entries.
    pub(crate) entries: u64,
    /// Smallest `(token, key)`.
    pub(crate) min: (u64, Vec<u8>),
    /// Largest `(token, key)`.
    pub(crate) max: (u64, Vec<u8>),
    /// Latest expiry of any entry (`u64::MAX` when some entry never expires).
    pub(crate) max_expiry_ms: u64,
}

/// Rounds `n` up to the block alignment.
pub(crate) fn align_up(n: usize) -> usize {
    n.div_ceil(BLOCK_ALIGN) * BLOCK_ALIGN
}

/// Little-endian readers over a slice with bounds checks, for parsing
/// blocks that passed their checksum but may still be malformed.
pub(crate) struct Cursor<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
}

/// Splits `bytes` into (body, stored CRC) and checks it; returns the body
/// or `(got, expected)`.
pub(crate) fn check_crc(bytes: &[u8]) -> Result<&[u8], (u32, u32)> {
    if bytes.len() < 4 {
        return Err((0, 0));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let got = crc32c::crc32c(body);
    if got == expected {
        Ok(body)
    } else {
        Err((got, expected))
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::cache::BlockCache;
    use crate::io::ReadSlots;
    use crate::token::token_of;

    fn slots() -> Rc<ReadSlots> {
        Rc::new(ReadSlots::new(4))
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("thread");
    }

    #[test]
    fn write_then_read_every_entry_and_ranges() {
        run(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            crate::io::warm_up(dir.path()).await.expect("warm up");
            let mut rows: Vec<(u64, Vec<u8>, Vec<u8>)> = (0..20_000u32)
                .map(|i| {
                    let key = format!("key-{i}-{}", "x".repeat((i % 90) as usize)).into_bytes();
                    let len = match i {
                        7 => 1 << 20,
                        11 | 13 => 100 * 1024,
                        _ => (i as usize * 7919) % 3000,
                    };
                    (token_of(&key), key, vec![(i % 251) as u8; len])
                })
                .collect();
            rows.sort();
            let path = dir.path().join("t.sst");
            let opts = TableOptions {
                block_bytes: 4096,
                bloom_bits_per_key: 10,
            };
            let mut w = TableWriter::create(&path, 9, &opts, rows.len())
                .await
                .expect("create");
            for (t, k, v) in &rows {
                w.add(*t, k, v, u64::MAX).await.expect("add");
            }
            let meta = w.finish().await.expect("finish");
            assert_eq!(meta.entries, rows.len() as u64);
            assert_eq!(meta.file_bytes % BLOCK_ALIGN as u64, 0);
            let r = Rc::new(
                TableReader::open(&path, 9, Rc::new(BlockCache::new(1 << 20)), slots())
                    .await
                    .expect("open"),
            );
            for (t, k, v) in &rows {
                assert_eq!(r.get(*t, k).await.expect("get").as_deref(), Some(&v[..]));
            }
            for i in 0..1000 {
                let k = format!("absent-{i}").into_bytes();
                assert_eq!(r.get(token_of(&k), &k).await.expect("get"), None);
            }
            // A sub-range scan returns exactly the rows in it, in order.
            let (lo, hi) = (rows[5000].0, rows[6000].0);
            let mut it = r.iter((lo, Vec::new()), hi, false);
            let mut got = Vec::new();
            while let Some(row) = it.next().await.expect("iter") {
                got.push(row);
            }
            let want: Vec<_> = rows
                .iter()
                .filter(|r| r.0 >= lo && r.0 <= hi)
                .cloned()
                .collect();
            assert_eq!(got, want);
        });
    }

    #[test]
    fn damaged_footer_or_truncated_file_fails_open_clearly() {
        run(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            crate::io::warm_up(dir.path()).await.expect("warm up");
            let path = dir.path().join("t.sst");
            let opts = TableOptions {
                block_bytes: 4096,
                bloom_bits_per_key: 10,
            };
            let mut w = TableWriter::create(&path, 1, &opts, 10)
                .await
                .expect("create");
            for i in 0..10u64 {
                w.add(i, b"k", b"v", 0).await.expect("add");
            }
            w.finish().await.expect("finish");
            let good = std::fs::read(&path).expect("read");
            let cache = Rc::new(BlockCache::new(1 << 20));
            let mut bad = good.clone();
            let n = bad.len();
            bad[n - 10] ^= 0xFF; // inside the footer's magic
            std::fs::write(&path, &bad).expect("write");
            let e = TableReader::open(&path, 1, cache.clone(), slots())
                .await
                .err()
                .expect("bad footer");
            assert!(e.to_string().contains("t.sst"), "{e}");
            std::fs::write(&path, &good[..n - 4096]).expect("truncate");
            assert!(TableReader::open(&path, 1, cache, slots()).await.is_err());
        });
    }
}
