//! Binary encoding of a sibling set, shared by the commit log, SSTables and
//! the internode protocol.
//!
//! Layout of format 2 (little-endian; documented in docs/FORMAT.md):
//! ```text
//! u8   format = 2
//! u32  vector entries C, then C × (u64 replica, u64 counter)
//! u32  loose dots D, then D × (u64 replica, u64 counter)
//!        (the context's dots beyond the vector, less the versions' own
//!        dots, which every set knows and which are therefore implied)
//! u32  versions V, then V × version:
//!        u64 dot.replica, u64 dot.counter, u64 timestamp, u64 expires_at_ms,
//!        u8  kind (0 = value, 1 = tombstone),
//!        u32 value length L (0 for a tombstone), L value bytes
//! ```
//! Format 1 (written before exact causality) is still read: `u8 1`, `u16 C`
//! entries, `u16 V` versions, no loose dots; its vector becomes the
//! context. The enclosing record or block carries the checksum; decoding
//! still checks every length, so damaged input is an error, never a panic.

use super::context::CausalContext;
use super::dot::{Dot, VersionVector};
use super::sibling::{SiblingSet, Version};
use crate::options::ConflictMode;

const FORMAT_V1: u8 = 1;
const FORMAT: u8 = 2;
const KIND_VALUE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
/// Fixed bytes of one encoded version before its value.
const VERSION_HEAD: usize = 37;

/// Why bytes could not be decoded as a sibling set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad sibling set encoding at byte {at}: {reason}")]
pub struct DecodeError {
    /// Offset within the encoded set.
    pub at: usize,
    /// What was wrong.
    pub reason: &'static str,
}

impl SiblingSet {
    /// The loose dots that are written: those no version carries.
    fn written_dots(&self) -> impl Iterator<Item = &Dot> + '_ {
        self.context()
            .dots()
            .iter()
            .filter(|d| self.versions().binary_search_by(|v| v.dot.cmp(d)).is_err())
    }

    /// Exact length of `encode`'s output.
    pub fn encoded_len(&self) -> usize {
        1 + 4
            + self.context().vv().len() * 16
            + 4
            + self.written_dots().count() * 16
            + 4
            + self
                .versions()
                .iter()
                .map(|v| VERSION_HEAD + v.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }

    /// Appends the encoding to `out`, reserving room for it first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        self.encode_reserved(out);
    }

    /// Appends the encoding to `out`, which the caller has already made
    /// room for (the commit log's batch: the record's length is its
    /// reservation).
    pub fn encode_reserved(&self, out: &mut Vec<u8>) {
        self.encode_with(|bytes| out.extend_from_slice(bytes));
    }

    /// Writes the encoding over `out` when it is exactly
    /// [`encoded_len`](Self::encoded_len) bytes long and returns true;
    /// returns false (writing nothing) otherwise. Lets a holder of an
    /// equally long encoding overwrite it without allocating.
    pub fn encode_to_slice(&self, out: &mut [u8]) -> bool {
        if out.len() != self.encoded_len() {
            return false;
        }
        let mut at = 0;
        self.encode_with(|bytes| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        });
        true
    }

    fn encode_with(&self, mut put: impl FnMut(&[u8])) {
        // Counts fit u32: every set is bounded in bytes far below 4 G
        // entries (`Options::max_set_bytes`, checked where sets enter).
        let vv = self.context().vv().entries();
        put(&[FORMAT]);
        put(&(vv.len() as u32).to_le_bytes());
        for &(replica, counter) in vv {
            put(&replica.to_le_bytes());
            put(&counter.to_le_bytes());
        }
        put(&(self.written_dots().count() as u32).to_le_bytes());
        for d in self.written_dots() {
            put(&d.replica.to_le_bytes());
            put(&d.counter.to_le_bytes());
        }
        put(&(self.versions().len() as u32).to_le_bytes());
        for v in self.versions() {
            put(&v.dot.replica.to_le_bytes());
            put(&v.dot.counter.to_le_bytes());
            put(&v.timestamp.to_le_bytes());
            put(&v.expires_at_ms.to_le_bytes());
            match &v.value {
                Some(value) => {
                    put(&[KIND_VALUE]);
                    put(&(value.len() as u32).to_le_bytes());
                    put(value);
                }
                None => {
                    put(&[KIND_TOMBSTONE]);
                    put(&0u32.to_le_bytes());
                }
            }
        }
    }

    /// Encodes into a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_with(|bytes| out.extend_from_slice(bytes));
        out
    }

    /// For an encoding of a set with exactly one version, what
    /// `decode(bytes, mode)` followed by [`winner`](SiblingSet::winner) at
    /// `now_ms` gives — the value and its expiry, or `None` — borrowed from
    /// `bytes`, without allocating. `None` (outer) for any other set or for
    /// bytes that do not decode: the caller decodes instead.
    pub fn encoded_single_winner(
        bytes: &[u8],
        _mode: ConflictMode,
        now_ms: u64,
    ) -> Option<Option<(&[u8], u64)>> {
        let mut r = Reader { bytes, at: 0 };
        if r.u8().ok()? != FORMAT {
            return None;
        }
        let entries = r.u32().ok()? as usize;
        r.take(entries.checked_mul(16)?).ok()?;
        let dots = r.u32().ok()? as usize;
        r.take(dots.checked_mul(16)?).ok()?;
        if r.u32().ok()? != 1 {
            return None;
        }
        r.take(16).ok()?;
        let _timestamp = r.u64().ok()?;
        let expires_at_ms = r.u64().ok()?;
        let kind = r.u8().ok()?;
        let len = r.u32().ok()? as usize;
        let value = match kind {
            KIND_VALUE => Some(r.take(len).ok()?),
            KIND_TOMBSTONE if len == 0 => None,
            _ => return None,
        };
        if r.at != bytes.len() {
            return None;
        }
        // A lone version is live in both modes: a set's context says what
        // it superseded, and it never supersedes what it holds.
        let expired = expires_at_ms != 0 && expires_at_ms <= now_ms;
        Some(match value {
            Some(value) if !expired => Some((value, expires_at_ms)),
            _ => None,
        })
    }

    /// Decodes an encoded set, normalising it under `mode`. Trailing bytes
    /// are an error: a length that does not add up means damage.
    pub fn decode(bytes: &[u8], mode: ConflictMode) -> Result<SiblingSet, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let format = r.u8()?;
        let wide = match format {
            FORMAT => true,
            FORMAT_V1 => false,
            _ => {
                return Err(DecodeError {
                    at: 0,
                    reason: "unknown sibling set format",
                })
            }
        };
        let count = |r: &mut Reader<'_>| -> Result<usize, DecodeError> {
            Ok(if wide {
                r.u32()? as usize
            } else {
                r.u16()? as usize
            })
        };
        let entries = count(&mut r)?;
        // Capacities are capped by what the bytes can hold, so a hostile
        // count cannot allocate more than the input's size.
        let mut pairs = Vec::with_capacity(entries.min(r.left() / 16));
        for _ in 0..entries {
            pairs.push((r.u64()?, r.u64()?));
        }
        let mut dots = Vec::new();
        if wide {
            let n = count(&mut r)?;
            dots.reserve(n.min(r.left() / 16));
            for _ in 0..n {
                dots.push(Dot {
                    replica: r.u64()?,
                    counter: r.u64()?,
                });
            }
        }
        let n = count(&mut r)?;
        let mut versions = Vec::with_capacity(n.min(r.left() / VERSION_HEAD));
        for _ in 0..n {
            let dot = Dot {
                replica: r.u64()?,
                counter: r.u64()?,
            };
            let timestamp = r.u64()?;
            let expires_at_ms = r.u64()?;
            let kind_at = r.at;
            let kind = r.u8()?;
            let len = r.u32()? as usize;
            let value = match kind {
                KIND_VALUE => Some(r.take(len)?.to_vec()),
                KIND_TOMBSTONE if len == 0 => None,
                _ => {
                    return Err(DecodeError {
                        at: kind_at,
                        reason: "bad version kind",
                    })
                }
            };
            versions.push(Version {
                dot,
                timestamp,
                expires_at_ms,
                value,
            });
        }
        if r.at != bytes.len() {
            return Err(DecodeError {
                at: r.at,
                reason: "trailing bytes after sibling set",
            });
        }
        let vv = VersionVector::from_entries(pairs);
        if !wide && mode == ConflictMode::Siblings {
            // Format 1's vector was the join of superseding contexts: a
            // version it covers was superseded.
            versions.retain(|v| !vv.covers(v.dot));
        }
        Ok(SiblingSet::from_parts(
            versions,
            CausalContext::from_parts(vv, dots),
            mode,
        ))
    }

    /// Highest clock reading anywhere in an encoded set (context counters,
    /// dot counters, timestamps), read without decoding; `None` when the
    /// bytes are malformed or not in the current format. Lets a write
    /// whose context covers everything up to some reading replace the set
    /// without decoding it.
    pub fn encoded_max_reading(bytes: &[u8]) -> Option<u64> {
        let mut r = Reader { bytes, at: 0 };
        if r.u8().ok()? != FORMAT {
            return None;
        }
        let mut max = 0u64;
        for _ in 0..2 {
            for _ in 0..r.u32().ok()? {
                r.u64().ok()?;
                max = max.max(r.u64().ok()?);
            }
        }
        for _ in 0..r.u32().ok()? {
            r.u64().ok()?;
            max = max.max(r.u64().ok()?).max(r.u64().ok()?);
            r.u64().ok()?;
            let kind = r.u8().ok()?;
            let len = r.u32().ok()? as usize;
            // Malformed as `decode` judges it: an unknown kind, or a
            // tombstone with a value (found by tests/fuzz_decoders.rs).
            if kind != KIND_VALUE && (kind != KIND_TOMBSTONE || len != 0) {
                return None;
            }
            r.take(len).ok()?;
        }
        (r.at == bytes.len()).then_some(max)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(DecodeError {
                at: self.at,
                reason: "truncated",
            }),
        }
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(b))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::ANY_REPLICA;

    type RawVersion = (u64, u64, u64, Option<Vec<u8>>);

    /// Raw bytes in the documented formats (`wide` = format 2), so any
    /// combination of context and versions can be encoded.
    fn raw(wide: bool, context: &[(u64, u64)], versions: &[RawVersion]) -> Vec<u8> {
        let count = |out: &mut Vec<u8>, n: usize| {
            if wide {
                out.extend_from_slice(&(n as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(n as u16).to_le_bytes());
            }
        };
        let mut out = vec![if wide { FORMAT } else { FORMAT_V1 }];
        count(&mut out, context.len());
        for (r, c) in context {
            out.extend_from_slice(&r.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
        }
        if wide {
            count(&mut out, 0);
        }
        count(&mut out, versions.len());
        for (replica, counter, expires, value) in versions {
            for x in [replica, counter, counter, expires] {
                out.extend_from_slice(&x.to_le_bytes());
            }
            match value {
                Some(v) => {
                    out.push(KIND_VALUE);
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(v);
                }
                None => {
                    out.push(KIND_TOMBSTONE);
                    out.extend_from_slice(&0u32.to_le_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn format_1_sets_decode_with_their_vector_as_context() {
        let bytes = raw(
            false,
            &[(1, 5)],
            &[
                (1, 4, 0, Some(b"old".to_vec())),
                (2, 9, 0, Some(b"new".to_vec())),
            ],
        );
        let set = SiblingSet::decode(&bytes, ConflictMode::Siblings).expect("decodes");
        assert_eq!(
            set.versions().len(),
            1,
            "format 1 superseded what its vector covers"
        );
        assert!(set.context().covers(Dot {
            replica: 1,
            counter: 5
        }));
        assert!(set.context().covers(Dot {
            replica: 2,
            counter: 9
        }));
        let again = SiblingSet::decode(&set.to_bytes(), ConflictMode::Siblings).expect("v2");
        assert_eq!(again, set);
    }

    #[test]
    fn hostile_counts_are_errors_without_large_allocations() {
        for format in [FORMAT, FORMAT_V1] {
            let mut bytes = vec![format];
            bytes.extend_from_slice(&u32::MAX.to_le_bytes());
            assert!(SiblingSet::decode(&bytes, ConflictMode::Siblings).is_err());
        }
        assert!(SiblingSet::decode(&[], ConflictMode::Siblings).is_err());
        assert!(SiblingSet::decode(&[9], ConflictMode::Siblings).is_err());
    }

    proptest::proptest! {
        /// The borrowed single-version winner is exactly what decoding and
        /// `winner` give, for any context (covering the version or not),
        /// expiry, tombstone and mode; sets of other sizes are declined.
        #[test]
        fn single_winner_equals_decode(
            replica in 1u64..4,
            counter in 1u64..50,
            context in proptest::collection::btree_map(proptest::prop_oneof![1u64..4, proptest::strategy::Just(ANY_REPLICA)], 1u64..60, 0..4),
            expires in proptest::prop_oneof![proptest::strategy::Just(0u64), 1u64..100],
            now in 0u64..100,
            tombstone in proptest::bool::ANY,
            second in proptest::bool::ANY,
            lww in proptest::bool::ANY,
        ) {
            let mode = if lww { ConflictMode::LastWriterWins } else { ConflictMode::Siblings };
            let value = (!tombstone).then(|| vec![counter as u8; 5]);
            let mut versions = vec![(replica, counter, expires, value.clone())];
            if second {
                versions.push((replica, counter + 100, expires, value));
            }
            let context: Vec<(u64, u64)> = context.into_iter().collect();
            let bytes = raw(true, &context, &versions);
            let fast = SiblingSet::encoded_single_winner(&bytes, mode, now);
            if second {
                proptest::prop_assert!(fast.is_none());
            } else {
                let decoded = SiblingSet::decode(&bytes, mode).expect("decodes");
                let slow = decoded
                    .winner(now)
                    .and_then(|v| v.value.as_deref().map(|b| (b, v.expires_at_ms)));
                proptest::prop_assert_eq!(fast, Some(slow));
            }
        }

        /// Encoding round-trips, and its length is what `encoded_len` says.
        #[test]
        fn round_trip(
            context in proptest::collection::btree_map(1u64..5, 1u64..60, 0..4),
            loose in proptest::collection::vec((1u64..5, 1u64..90), 0..4),
            versions in proptest::collection::btree_map((1u64..5, 1u64..90), proptest::option::of(proptest::collection::vec(0u8..255, 0..6)), 0..4),
        ) {
            let vv = VersionVector::from_entries(context);
            let cc = CausalContext::from_parts(vv, loose.into_iter().map(|(replica, counter)| Dot { replica, counter }));
            let versions = versions.into_iter().map(|((replica, counter), value)| Version {
                dot: Dot { replica, counter }, timestamp: counter, expires_at_ms: 0, value,
            }).collect();
            let set = SiblingSet::from_parts(versions, cc, ConflictMode::Siblings);
            let bytes = set.to_bytes();
            proptest::prop_assert_eq!(bytes.len(), set.encoded_len());
            proptest::prop_assert_eq!(SiblingSet::decode(&bytes, ConflictMode::Siblings).expect("decodes"), set);
        }
    }

    /// Regression (fuzz_decoders): a lone version whose kind byte is
    /// neither value nor tombstone, or a tombstone with a value, is
    /// refused by `decode`, so `encoded_max_reading` must not answer.
    #[test]
    fn max_reading_refuses_what_decode_refuses() {
        let lone = |kind: u8, value: &[u8]| {
            let mut b = vec![FORMAT];
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            for x in [1u64, 5, 99, 0] {
                b.extend_from_slice(&x.to_le_bytes());
            }
            b.push(kind);
            b.extend_from_slice(&(value.len() as u32).to_le_bytes());
            b.extend_from_slice(value);
            b
        };
        assert_eq!(
            SiblingSet::encoded_max_reading(&lone(KIND_VALUE, b"v")),
            Some(99)
        );
        assert_eq!(
            SiblingSet::encoded_max_reading(&lone(KIND_TOMBSTONE, b"")),
            Some(99)
        );
        for bad in [lone(2, b"v"), lone(0xff, b""), lone(KIND_TOMBSTONE, b"v")] {
            assert!(SiblingSet::decode(&bad, ConflictMode::Siblings).is_err());
            assert_eq!(SiblingSet::encoded_max_reading(&bad), None);
        }
    }
}
