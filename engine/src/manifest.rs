//! The manifest: which SSTables are live and which log segments they cover.
//!
//! Layout of the file `MANIFEST` (little-endian; see docs/FORMAT.md):
//! ```text
//! [8]  magic "CKVMANIF"
//! u32  format version = 1
//! u64  log_floor       commit-log segments with id < log_floor are covered
//!                      by live tables and may be deleted
//! u64  next_table_id   ids below it were used (never reused)
//! u64  hlc_high        highest clock reading issued before this manifest
//! u32  table count N, then N × u64 table id
//! u32  crc32c of every byte above
//! ```
//! It is replaced only by atomic rename, so a crash leaves the old or the
//! new manifest, never a mix; a bad checksum is an error, never ignored.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io;

/// File name of the manifest inside a shard directory.
pub(crate) const MANIFEST_FILE: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"CKVMANIF";
const FORMAT_VERSION: u32 = 1;

/// The decoded manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Log segments below this id are covered by tables.
    pub(crate) log_floor: u64,
    /// Next unused table id.
    pub(crate) next_table_id: u64,
    /// Highest hybrid-clock reading issued before the manifest was written.
    pub(crate) hlc_high: u64,
    /// Live table ids, oldest first.
    pub(crate) tables: Vec<u64>,
}

impl Manifest {
    /// Serialises the manifest.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + 8 * self.tables.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.log_floor.to_le_bytes());
        out.extend_from_slice(&self.next_table_id.to_le_bytes());
        out.extend_from_slice(&self.hlc_high.to_le_bytes());
        out.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for id in &self.tables {
            out.extend_from_slice(&id.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses manifest bytes read from `path`.
    pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let bad = |offset: usize, reason: &str| Error::corrupt(path, offset as u64, reason);
        if bytes.len() < 40 {
            return Err(bad(0, "manifest shorter than its fixed header"));
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
        let expected = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let got = crc32c::crc32c(body);
        if got != expected {
            return Err(Error::ChecksumMismatch {
                path: path.to_path_buf(),
                offset: 0,
                got,
                expected,
            });
        }
        if &body[..8] != MAGIC {
            return Err(bad(0, "bad manifest magic"));
        }
        let u32_at =
            |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(bad(8, &format!("unsupported manifest version {version}")));
        }
        let count = u32_at(36) as usize;
        if body.len() != 40 + 8 * count {
            return Err(bad(36, "manifest table count does not match its length"));
        }
        Ok(Manifest {
            log_floor: u64_at(12),
            next_table_id: u64_at(20),
            hlc_high: u64_at(28),
            tables: (0..count).map(|i| u64_at(40 + 8 * i)).collect(),
        })
    }

    /// Loads the manifest of `dir`, or `None` for a new shard directory.
    pub(crate) fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Manifest::decode(&bytes, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Durably replaces the manifest of `dir` with `encoded` (from
    /// [`Manifest::encode`]).
    pub(crate) async fn store(encoded: Vec<u8>, dir: &Path) -> Result<()> {
        io::write_file_atomic(dir, MANIFEST_FILE, encoded).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let m = Manifest {
            log_floor: 7,
            next_table_id: 12,
            hlc_high: 99,
            tables: vec![3, 9, 11],
        };
        let bytes = m.encode();
        let p = Path::new("MANIFEST");
        assert_eq!(Manifest::decode(&bytes, p).expect("valid"), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Manifest::decode(&bad, p).is_err(), "flip at {i} undetected");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1], p).is_err());
    }
}
