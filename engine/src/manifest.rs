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
/// Bytes before the table ids: magic, version, three u64 fields, the count.
const HEADER_BYTES: usize = 40;

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
        let mut out = Vec::with_capacity(HEADER_BYTES + 8 * self.tables.len() + 4);
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

    /// Parses manifest bytes read from `path`. Any byte string gives a
    /// manifest or a typed error (`Corrupt`, `ChecksumMismatch`), never a
    /// panic: every field is read through a bounds-checked accessor, since
    /// a manifest whose checksum matches can still be malformed (a writer
    /// bug, or bytes crafted with a matching CRC).
    pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let bad = |offset: usize, reason: &str| Error::corrupt(path, offset as u64, reason);
        if bytes.len() < HEADER_BYTES + 4 {
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
        let field = |at: usize, n: usize| {
            at.checked_add(n)
                .and_then(|end| body.get(at..end))
                .ok_or_else(|| bad(at, "manifest field past the end of its body"))
        };
        let u32_at = |at: usize| -> Result<u32> {
            let b = field(at, 4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let u64_at = |at: usize| -> Result<u64> {
            let mut a = [0u8; 8];
            a.copy_from_slice(field(at, 8)?);
            Ok(u64::from_le_bytes(a))
        };
        if field(0, 8)? != MAGIC {
            return Err(bad(0, "bad manifest magic"));
        }
        let version = u32_at(8)?;
        if version != FORMAT_VERSION {
            return Err(bad(8, &format!("unsupported manifest version {version}")));
        }
        // The count is checked against the length before anything is
        // allocated from it, so a damaged count cannot ask for gigabytes.
        let count = u32_at(36)? as usize;
        let want = count
            .checked_mul(8)
            .and_then(|ids| ids.checked_add(HEADER_BYTES));
        if want != Some(body.len()) {
            return Err(bad(36, "manifest table count does not match its length"));
        }
        let tables = (0..count)
            .map(|i| u64_at(HEADER_BYTES + 8 * i))
            .collect::<Result<Vec<u64>>>()?;
        Ok(Manifest {
            log_floor: u64_at(12)?,
            next_table_id: u64_at(20)?,
            hlc_high: u64_at(28)?,
            tables,
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

    /// Appends a valid CRC-32C so the body parser, not the checksum check,
    /// decides.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        out
    }

    fn valid() -> Vec<u8> {
        Manifest {
            log_floor: 7,
            next_table_id: 12,
            hlc_high: 99,
            tables: vec![3, 9, 11],
        }
        .encode()
    }

    /// A 36..=39-byte body with a matching CRC used to index past its end
    /// when reading the table count (a panic, not an error).
    #[test]
    fn a_short_body_with_a_good_checksum_is_corrupt_not_a_panic() {
        let good = valid();
        for body_len in 0..HEADER_BYTES {
            let got = Manifest::decode(&sealed(&good[..body_len]), Path::new("MANIFEST"));
            assert!(
                matches!(got, Err(Error::Corrupt { .. })),
                "{body_len}: {got:?}"
            );
        }
    }

    #[test]
    fn truncated_or_extended_manifests_are_errors() {
        let good = valid();
        let p = Path::new("MANIFEST");
        let body = &good[..good.len() - 4];
        for cut in 0..good.len() {
            assert!(Manifest::decode(&good[..cut], p).is_err(), "cut {cut}");
        }
        // Cut and resealed: the checksum passes, the structure does not.
        for cut in 0..body.len() {
            assert!(
                Manifest::decode(&sealed(&body[..cut]), p).is_err(),
                "resealed cut {cut}"
            );
        }
        for extra in 1..20 {
            let mut longer = good.clone();
            longer.extend(std::iter::repeat_n(0xA5, extra));
            assert!(Manifest::decode(&longer, p).is_err(), "extended by {extra}");
            let mut body = body.to_vec();
            body.extend(std::iter::repeat_n(0, extra));
            assert!(
                Manifest::decode(&sealed(&body), p).is_err(),
                "body extended by {extra}"
            );
        }
        // A count claiming more ids than there are, or u32::MAX of them,
        // with the checksum fixed up: corrupt, and nothing allocated for it.
        for count in [4u32, 1000, u32::MAX] {
            let mut body = body.to_vec();
            body[36..40].copy_from_slice(&count.to_le_bytes());
            let got = Manifest::decode(&sealed(&body), p);
            assert!(
                matches!(got, Err(Error::Corrupt { .. })),
                "count {count}: {got:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Random bodies with a valid checksum appended, half of them with a
        /// valid magic and version so the parser gets past those.
        #[test]
        fn random_sealed_bytes_never_panic(
            mut body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            valid_prefix in proptest::prelude::any::<bool>(),
            count in 0u32..12,
        ) {
            if valid_prefix && body.len() >= HEADER_BYTES {
                body[..8].copy_from_slice(MAGIC);
                body[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
                body[36..40].copy_from_slice(&count.to_le_bytes());
            }
            let p = Path::new("MANIFEST");
            if let Ok(m) = Manifest::decode(&sealed(&body), p) {
                // Whatever decodes re-encodes to the same bytes.
                proptest::prop_assert_eq!(m.encode(), sealed(&body));
            }
            let _ = Manifest::decode(&body, p);
        }

        /// Any bit flip of a valid manifest is caught.
        #[test]
        fn flipped_bits_are_errors(at in proptest::prelude::any::<proptest::sample::Index>(), bit in 0u8..8) {
            let mut bytes = valid();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            proptest::prop_assert!(Manifest::decode(&bytes, Path::new("MANIFEST")).is_err());
        }
    }
}
