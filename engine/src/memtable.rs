//! The memtable: a shard's in-memory, ordered map of recent writes.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::options::ConflictMode;
use crate::token::Token;
use crate::version::SiblingSet;

/// Estimated bytes a BTreeMap slot and two heap allocations cost beyond the
/// key and value bytes; used so the flush threshold tracks real memory.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Ordered map from `(token, key)` to the key's merged sibling set, kept
/// encoded (the same bytes an SSTable stores) so memory stays close to the
/// data size and flushing is a copy.
///
/// Public so benchmarks and tools can measure it alone; the engine owns
/// its instances.
///
/// Keys are stored as `token (8 bytes, big-endian) ‖ key`, whose byte order
/// is exactly the `(token, key)` order; lookups then need no custom `Borrow`.
#[derive(Debug, Default)]
pub struct Memtable {
    map: BTreeMap<Box<[u8]>, Box<[u8]>>,
    bytes: usize,
}

/// Builds the memtable key for `(token, key)`.
pub(crate) fn mem_key(token: Token, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&token.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Splits a memtable key back into `(token, key)`.
fn split_key(k: &[u8]) -> (Token, &[u8]) {
    let mut t = [0u8; 8];
    t.copy_from_slice(&k[..8]);
    (Token::from_be_bytes(t), &k[8..])
}

impl Memtable {
    /// Merges `delta` into the key's set (a write never needs the old value
    /// from disk: the merge happens again at read and compaction time).
    pub fn apply(&mut self, token: Token, key: &[u8], delta: &SiblingSet, mode: ConflictMode) {
        let k = mem_key(token, key).into_boxed_slice();
        let key_len = k.len();
        // One tree descent for both the lookup and the insert.
        match self.map.entry(k) {
            Entry::Occupied(mut slot) => {
                let existing = slot.get_mut();
                // Bytes in the memtable were encoded by this process.
                let mut set = SiblingSet::decode(existing, mode)
                    .expect("memtable holds only sets it encoded");
                set.merge(delta, mode);
                let encoded = set.to_bytes().into_boxed_slice();
                self.bytes = self.bytes - existing.len() + encoded.len();
                *existing = encoded;
            }
            Entry::Vacant(slot) => {
                let encoded = delta.to_bytes().into_boxed_slice();
                self.bytes += key_len + encoded.len() + ENTRY_OVERHEAD_BYTES;
                slot.insert(encoded);
            }
        }
    }

    /// The encoded set of a key, if the memtable has one.
    pub fn get(&self, token: Token, key: &[u8]) -> Option<&[u8]> {
        self.map.get(mem_key(token, key).as_slice()).map(|v| &v[..])
    }

    /// Approximate memory used, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Up to `limit` entries with `(token, key) >= start` (or `> start` when
    /// `exclusive`) and token `<= end_token`, in order, copied out so callers
    /// can hold them across awaits.
    pub(crate) fn range(
        &self,
        start: (Token, &[u8]),
        exclusive: bool,
        end_token: Token,
        limit: usize,
    ) -> Vec<(Token, Vec<u8>, Vec<u8>)> {
        let lower = mem_key(start.0, start.1);
        let bound = if exclusive {
            Bound::Excluded(lower.as_slice())
        } else {
            Bound::Included(lower.as_slice())
        };
        self.map
            .range::<[u8], _>((bound, Bound::Unbounded))
            .map(|(k, v)| {
                let (token, key) = split_key(k);
                (token, key.to_vec(), v.to_vec())
            })
            .take_while(|(token, _, _)| *token <= end_token)
            .take(limit)
            .collect()
    }

    /// Every entry in order, for flushing.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Token, &[u8], &[u8])> {
        self.map.iter().map(|(k, v)| {
            let (token, key) = split_key(k);
            (token, key, &v[..])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Dot, Version, VersionVector};

    fn set(counter: u64, value: &[u8]) -> SiblingSet {
        SiblingSet::from_write(
            Version {
                dot: Dot {
                    replica: 1,
                    counter,
                },
                timestamp: counter,
                expires_at_ms: 0,
                value: Some(value.to_vec()),
            },
            VersionVector::new(),
        )
    }

    #[test]
    fn orders_by_token_then_key_and_merges() {
        let mut m = Memtable::default();
        m.apply(5, b"b", &set(1, b"x"), ConflictMode::LastWriterWins);
        m.apply(5, b"a", &set(2, b"y"), ConflictMode::LastWriterWins);
        m.apply(1, b"z", &set(3, b"z"), ConflictMode::LastWriterWins);
        m.apply(5, b"b", &set(4, b"w"), ConflictMode::LastWriterWins);
        let keys: Vec<Vec<u8>> = m.iter().map(|(_, k, _)| k.to_vec()).collect();
        assert_eq!(keys, vec![b"z".to_vec(), b"a".to_vec(), b"b".to_vec()]);
        let got = SiblingSet::decode(
            m.get(5, b"b").expect("present"),
            ConflictMode::LastWriterWins,
        )
        .expect("decodes");
        assert_eq!(got.versions()[0].value.as_deref(), Some(&b"w"[..]));
        let r = m.range((5, b"a"), true, u64::MAX, 10);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1, b"b".to_vec());
        assert!(m.range((0, b""), false, 4, 10).len() == 1);
    }
}
