//! Binary encoding of a sibling set, shared by the commit log and SSTables.
//!
//! Layout (little-endian; documented in docs/FORMAT.md):
//! ```text
//! u8   format = 1
//! u16  context entries C, then C × (u64 replica, u64 counter)
//! u16  versions V, then V × version:
//!        u64 dot.replica, u64 dot.counter, u64 timestamp, u64 expires_at_ms,
//!        u8  kind (0 = value, 1 = tombstone),
//!        u32 value length L (0 for a tombstone), L value bytes
//! ```
//! The enclosing record or block carries the checksum; decoding still
//! checks every length so damaged input is an error, never a panic.

use super::dot::{Dot, VersionVector, ANY_REPLICA};
use super::sibling::{SiblingSet, Version};
use crate::options::ConflictMode;

const FORMAT: u8 = 1;
const KIND_VALUE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;

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
    /// Exact length of `encode`'s output.
    pub fn encoded_len(&self) -> usize {
        1 + 2
            + self.context().len() * 16
            + 2
            + self
                .versions()
                .iter()
                .map(|v| 37 + v.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }

    /// Appends the encoding to `out`. Sets are bounded by construction (a
    /// key has few siblings and few writers), so the u16 counts always fit;
    /// exceeding them is a bug and asserts.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        self.encode_with(|bytes| out.extend_from_slice(bytes));
    }

    /// Writes the encoding over `out`, which must be exactly
    /// [`encoded_len`](Self::encoded_len) bytes long (asserted): lets a
    /// holder of an equally long encoding overwrite it without allocating.
    pub fn encode_to_slice(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.encoded_len(), "slice of the encoded length");
        let mut at = 0;
        self.encode_with(|bytes| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        });
    }

    fn encode_with(&self, mut put: impl FnMut(&[u8])) {
        let ctx = self.context().entries();
        assert!(ctx.len() <= u16::MAX as usize && self.versions().len() <= u16::MAX as usize);
        put(&[FORMAT]);
        put(&(ctx.len() as u16).to_le_bytes());
        for &(replica, counter) in ctx {
            put(&replica.to_le_bytes());
            put(&counter.to_le_bytes());
        }
        put(&(self.versions().len() as u16).to_le_bytes());
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
        self.encode(&mut out);
        out
    }

    /// For an encoding of a set with exactly one version, what
    /// `decode(bytes, mode)` followed by [`winner`](SiblingSet::winner) at
    /// `now_ms` gives — the value and its expiry, or `None` — borrowed from
    /// `bytes`, without allocating. `None` (outer) for any other set or for
    /// bytes that do not decode: the caller decodes instead.
    pub fn encoded_single_winner(
        bytes: &[u8],
        mode: ConflictMode,
        now_ms: u64,
    ) -> Option<Option<(&[u8], u64)>> {
        let mut r = Reader { bytes, at: 0 };
        if r.u8().ok()? != FORMAT {
            return None;
        }
        let contexts = r.u16().ok()? as usize;
        let context_at = r.at;
        r.take(contexts.checked_mul(16)?).ok()?;
        if r.u16().ok()? != 1 {
            return None;
        }
        let dot = Dot {
            replica: r.u64().ok()?,
            counter: r.u64().ok()?,
        };
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
        // Normalisation in `Siblings` mode drops a version its own context
        // covers (see VersionVector::covers: an entry for the dot's replica,
        // or the ANY_REPLICA entry, at or past its counter); a set with one
        // version is otherwise already normal.
        if mode == ConflictMode::Siblings {
            let covered = bytes[context_at..context_at + contexts * 16]
                .chunks_exact(16)
                .any(|e| {
                    let (replica, counter) = e.split_at(8);
                    let replica = u64::from_le_bytes(replica.try_into().unwrap_or([0; 8]));
                    let counter = u64::from_le_bytes(counter.try_into().unwrap_or([0; 8]));
                    (replica == dot.replica || replica == ANY_REPLICA) && counter >= dot.counter
                });
            if covered {
                return Some(None);
            }
        }
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
        if r.u8()? != FORMAT {
            return Err(DecodeError {
                at: 0,
                reason: "unknown sibling set format",
            });
        }
        let contexts = r.u16()? as usize;
        let mut pairs = Vec::with_capacity(contexts.min(bytes.len() / 16));
        for _ in 0..contexts {
            pairs.push((r.u64()?, r.u64()?));
        }
        let count = r.u16()? as usize;
        let mut versions = Vec::with_capacity(count.min(bytes.len() / 37));
        for _ in 0..count {
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
        Ok(SiblingSet::from_parts(
            versions,
            VersionVector::from_entries(pairs),
            mode,
        ))
    }
}

impl SiblingSet {
    /// Highest clock reading anywhere in an encoded set (context counters,
    /// dot counters, timestamps), read without decoding; `None` when the
    /// bytes are malformed. Lets a write whose context covers everything up
    /// to some reading replace the set without decoding it.
    pub fn encoded_max_reading(bytes: &[u8]) -> Option<u64> {
        let mut r = Reader { bytes, at: 0 };
        if r.u8().ok()? != FORMAT {
            return None;
        }
        let mut max = 0u64;
        for _ in 0..r.u16().ok()? {
            r.u64().ok()?;
            max = max.max(r.u64().ok()?);
        }
        for _ in 0..r.u16().ok()? {
            r.u64().ok()?;
            max = max.max(r.u64().ok()?).max(r.u64().ok()?);
            r.u64().ok()?;
            r.u8().ok()?;
            let len = r.u32().ok()? as usize;
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

    /// Raw bytes in the documented format, so sets that normalisation would
    /// change (a version its own context covers) can be encoded too.
    fn raw(context: &[(u64, u64)], versions: &[(u64, u64, u64, Option<Vec<u8>>)]) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend_from_slice(&(context.len() as u16).to_le_bytes());
        for (r, c) in context {
            out.extend_from_slice(&r.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
        }
        out.extend_from_slice(&(versions.len() as u16).to_le_bytes());
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
            let bytes = raw(&context, &versions);
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
    }
}
