//! The memtable: a shard's in-memory, ordered map of recent writes.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::options::ConflictMode;
use crate::token::Token;
use crate::version::{SiblingSet, ANY_REPLICA};

/// Estimated bytes a BTreeMap slot and two heap allocations cost beyond the
/// key and value bytes; used so the flush threshold tracks real memory.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Ordered map from `(token, key)` to the key's merged sibling set, kept
/// encoded (the same bytes an SSTable stores) so memory stays close to the
/// data size and flushing is a copy.
///
/// Public so benchmarks and tools can measure it alone; the engine owns
/// its instances.
#[derive(Debug, Default)]
pub struct Memtable {
    map: BTreeMap<MemKey, Box<[u8]>>,
    bytes: usize,
}

/// A stored key. The token sits inline in the tree node, so almost every
/// comparison during a descent is decided by one integer compare without
/// following the pointer to the key bytes (tokens are uniform hashes; key
/// bytes are compared only on a token tie).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MemKey {
    token: Token,
    key: Box<[u8]>,
}

/// A borrowed view of a key, so lookups need no allocation: the map's keys
/// borrow as `dyn KeyView`, and so does a plain `(token, &[u8])`.
trait KeyView {
    fn parts(&self) -> (Token, &[u8]);
}

impl KeyView for MemKey {
    fn parts(&self) -> (Token, &[u8]) {
        (self.token, &self.key)
    }
}

impl KeyView for (Token, &[u8]) {
    fn parts(&self) -> (Token, &[u8]) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for MemKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl Memtable {
    /// Merges `delta` into the key's set (a write never needs the old value
    /// from disk: the merge happens again at read and compaction time).
    pub fn apply(&mut self, token: Token, key: &[u8], delta: &SiblingSet, mode: ConflictMode) {
        let k = MemKey {
            token,
            key: key.into(),
        };
        let key_len = 8 + key.len();
        // One tree descent for both the lookup and the insert.
        match self.map.entry(k) {
            Entry::Occupied(mut slot) => {
                let existing = slot.get_mut();
                // An overwrite whose context covers every reading in the
                // stored set replaces it outright: the merge would return the
                // delta itself (contexts are canonical, so even the bytes
                // agree), and decoding and re-encoding would be wasted.
                let covered_up_to = delta.context().get(ANY_REPLICA);
                if covered_up_to > 0
                    && SiblingSet::encoded_max_reading(existing).is_some_and(|m| m <= covered_up_to)
                    && delta
                        .versions()
                        .iter()
                        .all(|v| v.dot.counter > covered_up_to)
                {
                    // Same size (the usual overwrite: one version, one
                    // context entry, a value as long as before): encode in
                    // place. A fresh box per overwrite cost an allocation and
                    // a free, and under a churn of 100 k equal-sized entries
                    // mimalloc's slow path hunting pages for free blocks.
                    if delta.encoded_len() == existing.len() {
                        delta.encode_to_slice(existing);
                        return;
                    }
                    let encoded = delta.to_bytes().into_boxed_slice();
                    self.bytes = self.bytes - existing.len() + encoded.len();
                    *existing = encoded;
                    return;
                }
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
        let view: &dyn KeyView = &(token, key);
        self.map.get(view).map(|v| &v[..])
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
        let lower: &dyn KeyView = &start;
        let bound = if exclusive {
            Bound::Excluded(lower)
        } else {
            Bound::Included(lower)
        };
        self.map
            .range::<dyn KeyView, _>((bound, Bound::Unbounded))
            .map(|(k, v)| (k.token, k.key.to_vec(), v.to_vec()))
            .take_while(|(token, _, _)| *token <= end_token)
            .take(limit)
            .collect()
    }

    /// Every entry in order, for flushing.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Token, &[u8], &[u8])> {
        self.map.iter().map(|(k, v)| (k.token, &k.key[..], &v[..]))
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

    proptest::proptest! {
        /// Whatever path apply takes (fast overwrite or decode-merge-encode),
        /// the stored bytes are exactly those of merging the deltas in order.
        #[test]
        fn apply_equals_merge(
            writes in proptest::collection::vec((1u64..4, 1u64..40, proptest::bool::ANY, proptest::bool::ANY), 1..12),
            lww in proptest::bool::ANY,
        ) {
            use crate::version::ANY_REPLICA;
            let mode = if lww { ConflictMode::LastWriterWins } else { ConflictMode::Siblings };
            let mut m = Memtable::default();
            let mut model: Option<SiblingSet> = None;
            for (i, (replica, counter, overwrite, tombstone)) in writes.into_iter().enumerate() {
                let counter = counter * 100 + i as u64;
                let ctx = if overwrite {
                    VersionVector::from_entries([(ANY_REPLICA, counter - 1)])
                } else {
                    VersionVector::new()
                };
                let delta = SiblingSet::from_write(
                    Version {
                        dot: Dot { replica, counter },
                        timestamp: counter,
                        expires_at_ms: 0,
                        value: (!tombstone).then(|| vec![i as u8; 3]),
                    },
                    ctx,
                );
                m.apply(9, b"k", &delta, mode);
                match model.as_mut() {
                    Some(s) => s.merge(&delta, mode),
                    None => model = Some(SiblingSet::from_parts(delta.versions().to_vec(), delta.context().clone(), mode)),
                }
            }
            let stored = m.get(9, b"k").expect("present");
            proptest::prop_assert_eq!(stored, &model.expect("some").to_bytes()[..]);
        }
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
