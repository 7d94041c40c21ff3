//! The memtable: a shard's in-memory, ordered map of recent writes.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use crate::options::ConflictMode;
use crate::token::Token;
use crate::version::SiblingSet;

/// Estimated bytes an entry costs beyond its key and value bytes (its
/// hash bucket, its place in the ordered tree, two heap allocations); used
/// so the flush threshold tracks real memory.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// Ordered map from `(token, key)` to the key's merged sibling set, kept
/// encoded (the same bytes an SSTable stores) so memory stays close to the
/// data size and flushing is a copy.
///
/// Each token's keys live in a [`Slot`] inside a hash map, which serves
/// the point reads and writes; a B-tree set of the tokens gives the order
/// for scans and the flush. A point operation misses the cache on the hash
/// bucket (which holds the slot), the key and the value, where a descent
/// of a tree through 100 k tokens missed at every level (the memtable was
/// the largest item in a shard's profile under pipelined RESP SETs); an
/// overwrite, the common write, touches only the hash map. Distinct keys
/// with the same token (a 64-bit hash: practically never) share a slot.
///
/// The hash map is seeded per process (`ahash`): tokens are unkeyed xxh3
/// hashes of client keys, and a client must not be able to pick keys
/// that collide in its buckets.
///
/// Public so benchmarks and tools can measure it alone; the engine owns
/// its instances.
#[derive(Debug, Default)]
pub struct Memtable {
    /// Token → its keys, for point operations.
    slots: HashMap<Token, Slot, ahash::RandomState>,
    /// The same tokens, in order.
    order: BTreeSet<Token>,
    keys: usize,
    bytes: usize,
}

/// A key and its encoded set.
type Pair = (Box<[u8]>, Box<[u8]>);

/// The keys of one token with their encoded sets.
#[derive(Debug)]
enum Slot {
    /// The usual case.
    One(Box<[u8]>, Box<[u8]>),
    /// Keys sharing the token, sorted by key.
    Many(Vec<Pair>),
}

impl Slot {
    fn find(&self, key: &[u8]) -> Option<&[u8]> {
        match self {
            Slot::One(k, v) => {
                prefetch_head(v);
                (**k == *key).then_some(&v[..])
            }
            Slot::Many(entries) => entries
                .binary_search_by(|(k, _)| (**k).cmp(key))
                .ok()
                .map(|i| &entries[i].1[..]),
        }
    }

    /// Merges `delta` into `key`'s set in this slot, adding the key if it
    /// is new; returns whether it was added and the encoded length before
    /// (0 if added) and after.
    fn apply(
        &mut self,
        key: &[u8],
        delta: &SiblingSet,
        mode: ConflictMode,
    ) -> (bool, usize, usize) {
        if let Slot::One(k, v) = self {
            if **k == *key {
                let before = v.len();
                return (false, before, merge_into(v, delta, mode));
            }
        }
        let entries = self.many();
        match entries.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(i) => {
                let before = entries[i].1.len();
                (false, before, merge_into(&mut entries[i].1, delta, mode))
            }
            Err(i) => {
                let encoded = delta.to_bytes().into_boxed_slice();
                let len = encoded.len();
                entries.insert(i, (key.into(), encoded));
                (true, 0, len)
            }
        }
    }

    /// The slot's entries as a sorted list, converting a single entry (a
    /// second key with the same token is arriving).
    fn many(&mut self) -> &mut Vec<Pair> {
        if let Slot::One(k, v) = self {
            let first = (std::mem::take(k), std::mem::take(v));
            *self = Slot::Many(vec![first]);
        }
        match self {
            Slot::Many(entries) => entries,
            Slot::One(..) => unreachable!("converted to Many above"),
        }
    }

    /// The entries in key order.
    fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let many: &[Pair] = match self {
            Slot::One(..) => &[],
            Slot::Many(entries) => entries,
        };
        let one = match self {
            Slot::One(k, v) => Some((&k[..], &v[..])),
            Slot::Many(_) => None,
        };
        one.into_iter()
            .chain(many.iter().map(|(k, v)| (&k[..], &v[..])))
    }
}

/// Asks the CPU to start loading the first cache lines of an encoded set
/// while the key is compared. A point read then misses on the slot, the
/// key and the set at once instead of one after another: the set's reader
/// finds where its version starts only after the counts in its first line
/// arrive, so without this its second line is a second serial miss (7-9 %
/// of a GET-bound shard's throughput, docs/PERFORMANCE.md).
#[inline]
fn prefetch_head(set: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE_BYTES: usize = 64;
        // A version head and a small value: the first three lines at most.
        for offset in (0..set.len().min(3 * LINE_BYTES)).step_by(LINE_BYTES) {
            // SAFETY: a prefetch never faults and reads nothing into the
            // program (sse is part of x86_64's baseline); the address is
            // inside the set's allocation anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(set[offset..].as_ptr().cast()) };
        }
    }
}

/// Merges `delta` into an existing encoded set; returns the new encoded
/// length.
fn merge_into(existing: &mut Box<[u8]>, delta: &SiblingSet, mode: ConflictMode) -> usize {
    // An overwrite whose context covers every reading in the stored set
    // replaces it outright: the merge would return the delta itself
    // (contexts are canonical, so even the bytes agree), and decoding and
    // re-encoding would be wasted. Under last-writer-wins, so does a lone
    // version later than every reading stored.
    let replaces = match mode {
        ConflictMode::Siblings => {
            let covered_up_to = delta.context().any_up_to();
            covered_up_to > 0
                && SiblingSet::encoded_max_reading(existing).is_some_and(|m| m <= covered_up_to)
                && delta
                    .versions()
                    .iter()
                    .all(|v| v.dot.counter > covered_up_to)
        }
        ConflictMode::LastWriterWins => match delta.versions() {
            [v] => SiblingSet::encoded_max_reading(existing)
                .is_some_and(|m| m < v.timestamp && m < v.dot.counter),
            _ => false,
        },
    };
    if replaces {
        // Same size (the usual overwrite: one version, one context entry,
        // a value as long as before): encode in place. A fresh box per
        // overwrite cost an allocation and a free, and under a churn of
        // 100 k equal-sized entries mimalloc's slow path hunting pages for
        // free blocks.
        if !delta.encode_to_slice(existing) {
            *existing = delta.to_bytes().into_boxed_slice();
        }
        return existing.len();
    }
    // Bytes in the memtable were encoded by this process.
    let mut set = match SiblingSet::decode(existing, mode) {
        Ok(set) => set,
        // Unreachable: the memtable holds only sets this process encoded.
        // Keeping the delta alone beats taking the shard down.
        Err(e) => {
            tracing::error!(error = %e, "memtable entry does not decode; keeping the new write only");
            SiblingSet::new()
        }
    };
    set.merge(delta, mode);
    *existing = set.to_bytes().into_boxed_slice();
    existing.len()
}

impl Memtable {
    /// An empty memtable with room for `tokens` tokens before its hash
    /// index grows.
    pub fn with_capacity(tokens: usize) -> Memtable {
        Memtable {
            slots: HashMap::with_capacity_and_hasher(tokens, ahash::RandomState::new()),
            ..Memtable::default()
        }
    }

    /// Number of distinct tokens (equal to [`Memtable::len`] unless keys
    /// share a token).
    pub fn tokens(&self) -> usize {
        self.order.len()
    }

    /// Merges `delta` into the key's set (a write never needs the old value
    /// from disk: the merge happens again at read and compaction time).
    pub fn apply(&mut self, token: Token, key: &[u8], delta: &SiblingSet, mode: ConflictMode) {
        let (added, before, after) = match self.slots.entry(token) {
            Entry::Occupied(slot) => slot.into_mut().apply(key, delta, mode),
            Entry::Vacant(vacant) => {
                let encoded = delta.to_bytes().into_boxed_slice();
                let len = encoded.len();
                vacant.insert(Slot::One(key.into(), encoded));
                let fresh = self.order.insert(token);
                debug_assert!(fresh, "the tree and the hash map hold the same tokens");
                (true, 0, len)
            }
        };
        self.bytes = self.bytes - before + after;
        if added {
            self.keys += 1;
            self.bytes += 8 + key.len() + ENTRY_OVERHEAD_BYTES;
        }
    }

    /// The encoded set of a key, if the memtable has one.
    pub fn get(&self, token: Token, key: &[u8]) -> Option<&[u8]> {
        self.slots.get(&token).and_then(|slot| slot.find(key))
    }

    /// Approximate memory used, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
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
        if start.0 > end_token {
            return Vec::new();
        }
        self.order
            .range(start.0..=end_token)
            .flat_map(|&token| self.slot(token).entries().map(move |(k, v)| (token, k, v)))
            .filter(|&(token, k, _)| {
                token != start.0 || if exclusive { k > start.1 } else { k >= start.1 }
            })
            .take(limit)
            .map(|(token, k, v)| (token, k.to_vec(), v.to_vec()))
            .collect()
    }

    /// Every entry in order, for flushing.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Token, &[u8], &[u8])> {
        self.order
            .iter()
            .flat_map(|&token| self.slot(token).entries().map(move |(k, v)| (token, k, v)))
    }

    /// The slot of a token the order holds.
    fn slot(&self, token: Token) -> &Slot {
        // Both structures gain a token together and never lose one.
        &self.slots[&token]
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
            VersionVector::new().into(),
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
                    ctx.into(),
                );
                // Writers hand the memtable deltas normalised for the mode.
                let delta = SiblingSet::from_parts(delta.versions().to_vec(), delta.context().clone(), mode);
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

    proptest::proptest! {
        /// With tokens from a tiny range (so keys share them often), the
        /// memtable orders, finds, counts and scans exactly like a map keyed
        /// by `(token, key)`.
        #[test]
        fn shared_tokens_behave_like_a_map(
            writes in proptest::collection::vec((0u64..4, 0u8..6), 1..40),
            start in (0u64..4, 0u8..6),
            exclusive in proptest::bool::ANY,
            end_token in 0u64..4,
            limit in 1usize..10,
        ) {
            let mut m = Memtable::default();
            let mut model = std::collections::BTreeMap::new();
            for (i, (token, key)) in writes.into_iter().enumerate() {
                let delta = set(i as u64 + 1, &[i as u8]);
                m.apply(token, &[key], &delta, ConflictMode::LastWriterWins);
                let merged = model
                    .remove(&(token, vec![key]))
                    .map(|bytes: Vec<u8>| {
                        let mut s = SiblingSet::decode(&bytes, ConflictMode::LastWriterWins).expect("decodes");
                        s.merge(&delta, ConflictMode::LastWriterWins);
                        s
                    })
                    .unwrap_or(delta);
                model.insert((token, vec![key]), merged.to_bytes());
            }
            proptest::prop_assert_eq!(m.len(), model.len());
            let all: Vec<(u64, Vec<u8>, Vec<u8>)> = m.iter().map(|(t, k, v)| (t, k.to_vec(), v.to_vec())).collect();
            let expected: Vec<(u64, Vec<u8>, Vec<u8>)> = model.iter().map(|((t, k), v)| (*t, k.clone(), v.clone())).collect();
            proptest::prop_assert_eq!(&all, &expected);
            for ((t, k), v) in &model {
                proptest::prop_assert_eq!(m.get(*t, k), Some(&v[..]));
            }
            proptest::prop_assert_eq!(m.get(9, b"absent"), None);
            let got = m.range((start.0, &[start.1]), exclusive, end_token, limit);
            let want: Vec<(u64, Vec<u8>, Vec<u8>)> = expected
                .into_iter()
                .filter(|(t, k, _)| {
                    let at = (*t, k.as_slice());
                    let from = (start.0, &[start.1][..]);
                    (if exclusive { at > from } else { at >= from }) && *t <= end_token
                })
                .take(limit)
                .collect();
            proptest::prop_assert_eq!(got, want);
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
