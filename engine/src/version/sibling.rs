//! Versions and sibling sets: what one key holds, and how two states merge.

use super::dot::{Dot, VersionVector};
use super::hlc::HybridClock;
use crate::options::ConflictMode;

/// One write of a key: a value or a tombstone, with its identity and times.
///
/// The derived order (dot first, then the rest) is only a deterministic
/// tie-break so that merges are order-independent even for malformed input
/// with a repeated dot; it carries no causal meaning.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Unique id of the write event.
    pub dot: Dot,
    /// Hybrid-logical-clock reading of the write; orders last-writer-wins.
    pub timestamp: u64,
    /// Absolute expiry in Unix ms; 0 means never. Expired values read as absent.
    pub expires_at_ms: u64,
    /// The value, or `None` for a tombstone (a delete).
    pub value: Option<Vec<u8>>,
}

impl Version {
    /// True for a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// True when the version has a TTL that has passed at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }

    /// A value (not a tombstone) that has not expired.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && !self.is_expired(now_ms)
    }

    /// Last-writer-wins order: timestamp, then dot, then content, so ties
    /// resolve the same way on every replica.
    fn lww_cmp(&self, other: &Version) -> std::cmp::Ordering {
        (self.timestamp, self.dot)
            .cmp(&(other.timestamp, other.dot))
            .then_with(|| self.cmp(other))
    }

    /// When compaction may forget this version if it is a tombstone: the
    /// later of its write time and (for an expired value turned tombstone)
    /// its expiry, in Unix ms.
    fn deleted_at_ms(&self) -> u64 {
        HybridClock::physical_ms(self.timestamp).max(self.expires_at_ms)
    }
}

/// The state of one key: the versions no write has superseded (siblings)
/// and the causal context that superseded the others.
///
/// Invariants: versions are sorted by dot with no dot repeated; with
/// siblings, no version's dot is covered by `context`; with
/// last-writer-wins, at most one version remains. `merge` is commutative,
/// associative and idempotent, in both conflict modes; the result depends
/// only on the union of versions and the join of contexts ever merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiblingSet {
    versions: Vec<Version>,
    context: VersionVector,
}

impl SiblingSet {
    /// A set with no versions and an empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The delta of one write: `version`, issued with the causal `context`
    /// its client read. Merging it into a replica supersedes exactly the
    /// versions the context covers.
    pub fn from_write(version: Version, context: VersionVector) -> Self {
        let mut set = SiblingSet {
            versions: Vec::with_capacity(1),
            context,
        };
        // A version whose own dot is covered is already superseded (only a
        // context from the future can do that; the engine's clock prevents it).
        if !set.context.covers(version.dot) {
            set.versions.push(version);
        }
        set
    }

    /// Builds a set from parts, restoring the invariants (used by decoding
    /// and tests); equivalent to merging one-version writes in any order.
    pub fn from_parts(versions: Vec<Version>, context: VersionVector, mode: ConflictMode) -> Self {
        let mut set = SiblingSet { versions, context };
        set.normalize(mode);
        set
    }

    /// The surviving versions, sorted by dot.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The join of every write context merged into this set.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// The context a client gets with a read: everything this set has seen,
    /// including its own versions' dots. A write carrying it supersedes
    /// every version the client was shown.
    pub fn causal_context(&self) -> VersionVector {
        let mut vv = self.context.clone();
        for v in &self.versions {
            vv.insert(v.dot);
        }
        vv
    }

    /// True when there are no versions (the context alone may remain).
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Merges `other` into `self`.
    ///
    /// `Siblings`: union of versions, join of contexts, then every version
    /// the joined context covers is dropped. `LastWriterWins`: join of
    /// contexts, and of all versions only the greatest by (timestamp, dot)
    /// is kept, as in Cassandra; contexts do not supersede anything.
    pub fn merge(&mut self, other: &SiblingSet, mode: ConflictMode) {
        self.context.join(&other.context);
        self.versions.extend(other.versions.iter().cloned());
        self.normalize(mode);
    }

    /// Restores the invariants after versions or context changed.
    fn normalize(&mut self, mode: ConflictMode) {
        // Sort by dot, and for a repeated dot put the greatest content last,
        // so dedup keeps a deterministic choice.
        self.versions.sort_unstable();
        let mut kept: Vec<Version> = Vec::with_capacity(self.versions.len());
        for v in self.versions.drain(..) {
            match kept.last_mut() {
                Some(last) if last.dot == v.dot => *last = v,
                _ => kept.push(v),
            }
        }
        if mode == ConflictMode::Siblings {
            let context = &self.context;
            kept.retain(|v| !context.covers(v.dot));
        } else if kept.len() > 1 {
            // Timestamps alone decide: filtering by context first would make
            // the result depend on merge order (a covered winner could hide a
            // later-arriving loser), breaking associativity.
            let winner = kept
                .iter()
                .max_by(|a, b| a.lww_cmp(b))
                .cloned()
                .into_iter()
                .collect();
            kept = winner;
        }
        self.versions = kept;
    }

    /// Values a reader sees at `now_ms`: not tombstones, not expired.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(move |v| v.is_live(now_ms))
    }

    /// True when a reader sees at least one value at `now_ms`.
    pub fn has_live(&self, now_ms: u64) -> bool {
        self.live(now_ms).next().is_some()
    }

    /// The last writer among unexpired versions (tombstones included), as a
    /// Redis-style reader resolves siblings; `None` when nothing is left or
    /// the winner is a tombstone.
    pub fn winner(&self, now_ms: u64) -> Option<&Version> {
        self.versions
            .iter()
            .filter(|v| !v.is_expired(now_ms))
            .max_by(|a, b| a.lww_cmp(b))
            .filter(|v| !v.is_tombstone())
    }

    /// Like [`winner`](Self::winner), but consumes the set and returns the
    /// winning version by value, so its value is moved, not copied.
    pub fn into_winner(self, now_ms: u64) -> Option<Version> {
        self.versions
            .into_iter()
            .filter(|v| !v.is_expired(now_ms))
            .max_by(|a, b| a.lww_cmp(b))
            .filter(|v| !v.is_tombstone())
    }

    /// The set as a reader sees it at `now_ms`: expired values removed
    /// (their dots stay covered by nothing, so a later merge may bring them
    /// back, still expired and still invisible).
    pub fn without_expired(mut self, now_ms: u64) -> SiblingSet {
        self.versions.retain(|v| !v.is_expired(now_ms));
        self
    }

    /// Latest expiry among versions in Unix ms, or `u64::MAX` when any
    /// version never expires (tombstones count as never: they wait for
    /// gc_grace, not for a TTL).
    pub fn max_expiry_ms(&self) -> u64 {
        self.versions
            .iter()
            .map(|v| {
                if v.expires_at_ms == 0 || v.is_tombstone() {
                    u64::MAX
                } else {
                    v.expires_at_ms
                }
            })
            .max()
            .unwrap_or(u64::MAX)
    }

    /// Compaction-time garbage collection at `now_ms`.
    ///
    /// Expired values become tombstones (same dot and timestamp, so merges
    /// and last-writer-wins order are unchanged). When `older_data_elsewhere`
    /// is false — no table outside this compaction, nor the memtable, may
    /// hold this key — tombstones deleted more than `gc_grace_ms` ago are
    /// dropped. Returns true when the whole entry can be forgotten.
    ///
    /// Dropping a tombstone is what can resurrect data: a replica that missed
    /// the delete still holds the old value, and only anti-entropy within
    /// gc_grace propagates the delete first. Hence gc_grace > repair interval.
    pub fn gc(&mut self, now_ms: u64, gc_grace_ms: u64, older_data_elsewhere: bool) -> bool {
        for v in &mut self.versions {
            if v.is_expired(now_ms) {
                v.value = None;
            }
        }
        if older_data_elsewhere {
            return false;
        }
        self.versions.retain(|v| {
            !(v.is_tombstone() && v.deleted_at_ms().saturating_add(gc_grace_ms) <= now_ms)
        });
        self.versions.is_empty()
    }

    /// Bytes of the set's payload (values), for memtable accounting.
    pub fn value_bytes(&self) -> usize {
        self.versions
            .iter()
            .map(|v| v.value.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(replica: u64, counter: u64, value: &[u8], ctx: &VersionVector) -> SiblingSet {
        SiblingSet::from_write(
            Version {
                dot: Dot { replica, counter },
                timestamp: counter,
                expires_at_ms: 0,
                value: Some(value.to_vec()),
            },
            ctx.clone(),
        )
    }

    #[test]
    fn concurrent_writes_become_siblings_and_context_resolves_them() {
        let mode = ConflictMode::Siblings;
        let mut s = put(1, 10, b"a", &VersionVector::new());
        s.merge(&put(2, 11, b"b", &VersionVector::new()), mode);
        assert_eq!(s.versions().len(), 2);
        let ctx = s.causal_context();
        s.merge(&put(1, 12, b"c", &ctx), mode);
        assert_eq!(s.versions().len(), 1);
        assert_eq!(s.versions()[0].value.as_deref(), Some(&b"c"[..]));
    }

    #[test]
    fn overwrite_supersedes_everything_older_on_any_replica() {
        use super::super::dot::ANY_REPLICA;
        let mode = ConflictMode::Siblings;
        let mut s = put(1, 10, b"a", &VersionVector::new());
        s.merge(&put(2, 11, b"b", &VersionVector::new()), mode);
        // An overwrite at time 20 supersedes both without having read them...
        let overwrite = put(
            3,
            20,
            b"c",
            &VersionVector::from_entries([(ANY_REPLICA, 19)]),
        );
        // ...while a write issued later elsewhere stays a sibling, in any merge order.
        let later = put(4, 25, b"d", &VersionVector::new());
        let mut x = s.clone();
        x.merge(&overwrite, mode);
        x.merge(&later, mode);
        let mut y = later.clone();
        y.merge(&overwrite, mode);
        y.merge(&s, mode);
        assert_eq!(x, y);
        let values: Vec<_> = x
            .versions()
            .iter()
            .filter_map(|v| v.value.clone())
            .collect();
        assert_eq!(values, vec![b"c".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn lww_keeps_latest_timestamp() {
        let mode = ConflictMode::LastWriterWins;
        let mut s = put(1, 10, b"a", &VersionVector::new());
        s.merge(&put(2, 11, b"b", &VersionVector::new()), mode);
        assert_eq!(s.versions().len(), 1);
        assert_eq!(s.versions()[0].value.as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn gc_turns_expired_into_tombstones_then_drops_them_after_grace() {
        let mut s = SiblingSet::from_write(
            Version {
                dot: Dot {
                    replica: 1,
                    counter: 1 << 16,
                },
                timestamp: 1 << 16,
                expires_at_ms: 100,
                value: Some(b"x".to_vec()),
            },
            VersionVector::new(),
        );
        assert!(!s.gc(150, 1000, false));
        assert!(s.versions()[0].is_tombstone());
        assert!(!s.gc(1099, 1000, false));
        assert!(!s.gc(5000, 1000, true), "kept while older data may exist");
        assert!(s.gc(1100, 1000, false));
    }
}
