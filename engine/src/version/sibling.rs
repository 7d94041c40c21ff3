//! Versions and sibling sets: what one key holds, and how two states merge.

use super::context::CausalContext;
use super::dot::Dot;
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
/// and the causal context — every dot this state knows of, live or
/// superseded.
///
/// A version is superseded exactly when a state knows its dot but does not
/// hold it: merging keeps a version that both sides hold, or that one side
/// holds and the other has never heard of (the causal-CRDT join of Almeida
/// et al.'s dotted version vectors). A write's delta is "my version, plus
/// the dots my client was shown", so it supersedes exactly those.
///
/// Invariants: versions are sorted by dot with no dot repeated; with
/// siblings, the context holds every version's dot; with last-writer-wins,
/// at most one version remains and the context is empty (it decides
/// nothing there). `merge` is commutative, associative and idempotent, in
/// both conflict modes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiblingSet {
    versions: Vec<Version>,
    context: CausalContext,
}

impl SiblingSet {
    /// A set with no versions and an empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The delta of one write: `version`, issued by a client that was
    /// shown `context`. Merging it into a replica supersedes exactly the
    /// versions the context holds.
    pub fn from_write(version: Version, mut context: CausalContext) -> Self {
        context.insert(version.dot);
        SiblingSet {
            versions: vec![version],
            context,
        }
    }

    /// Builds a set from parts, restoring the invariants (used by decoding
    /// and tests).
    pub fn from_parts(versions: Vec<Version>, context: CausalContext, mode: ConflictMode) -> Self {
        let mut set = SiblingSet { versions, context };
        set.normalize(mode);
        set
    }

    /// The surviving versions, sorted by dot.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The surviving versions, taken out of the set (its context dropped).
    pub fn into_versions(self) -> Vec<Version> {
        self.versions
    }

    /// Every dot the set knows of.
    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// The context a client gets with a read: a write carrying it
    /// supersedes every version the client was shown (and what those had
    /// superseded), and nothing else.
    pub fn causal_context(&self) -> CausalContext {
        let mut cc = self.context.clone();
        for v in &self.versions {
            cc.insert(v.dot);
        }
        cc
    }

    /// Folds `replica`'s own dots into its vector entry (see
    /// [`CausalContext::fold_own`]): only replica `replica`, on its full
    /// local state of the key, may call this.
    pub fn fold_own(&mut self, replica: u64) {
        self.context.fold_own(replica);
    }

    /// True when there are no versions (the context alone may remain).
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Merges `other` into `self`.
    ///
    /// `Siblings`: a version survives when both hold it, or when the side
    /// without it never knew its dot; the contexts unite. `LastWriterWins`:
    /// of all versions only the greatest by (timestamp, dot) is kept, as in
    /// Cassandra.
    pub fn merge(&mut self, other: &SiblingSet, mode: ConflictMode) {
        if mode == ConflictMode::LastWriterWins {
            self.versions.extend(other.versions.iter().cloned());
            self.normalize(mode);
            return;
        }
        let mine = std::mem::take(&mut self.versions);
        let mut out = Vec::with_capacity(mine.len() + other.versions.len());
        let mut theirs = other.versions.iter().peekable();
        let mut mine = mine.into_iter().peekable();
        loop {
            match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) if a.dot == b.dot => {
                    // The same write; a repeated dot with other content is
                    // damage, resolved the same way everywhere.
                    let b = theirs.next().cloned();
                    let a = mine.next();
                    out.extend(a.max(b));
                }
                (Some(a), Some(b)) if a.dot < b.dot => {
                    let a = mine.next();
                    out.extend(a.filter(|a| !other.context.covers(a.dot)));
                }
                (Some(_), Some(_)) | (None, Some(_)) => {
                    let b = theirs.next();
                    out.extend(b.filter(|b| !self.context.covers(b.dot)).cloned());
                }
                (Some(_), None) => {
                    let a = mine.next();
                    out.extend(a.filter(|a| !other.context.covers(a.dot)));
                }
                (None, None) => break,
            }
        }
        self.versions = out;
        self.context.join(&other.context);
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
            for v in &kept {
                self.context.insert(v.dot);
            }
        } else {
            self.context = CausalContext::new();
            if kept.len() > 1 {
                let winner = kept
                    .iter()
                    .max_by(|a, b| a.lww_cmp(b))
                    .cloned()
                    .into_iter()
                    .collect();
                kept = winner;
            }
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
    /// (their dots stay in the context, so a write with it supersedes them).
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

    /// Turns every value expired at `now_ms` into a tombstone (same dot,
    /// timestamp and expiry, so merges and last-writer-wins order do not
    /// change): what compaction stores, and what anti-entropy hashes, so
    /// replicas agree on an expired key whether or not they compacted it.
    /// Returns true when a value was turned.
    pub fn expire_into_tombstones(&mut self, now_ms: u64) -> bool {
        let mut turned = false;
        for v in &mut self.versions {
            if v.value.is_some() && v.is_expired(now_ms) {
                v.value = None;
                turned = true;
            }
        }
        turned
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
    /// gc_grace propagates the delete first. Hence gc_grace > repair interval,
    /// and a tombstone is also kept until a repair that reached every
    /// replica started after it: only those deleted before `repaired_ms`
    /// (`u64::MAX` when no other replica exists) are dropped, however old.
    pub fn gc(
        &mut self,
        now_ms: u64,
        gc_grace_ms: u64,
        repaired_ms: u64,
        older_data_elsewhere: bool,
    ) -> bool {
        self.expire_into_tombstones(now_ms);
        if older_data_elsewhere {
            return false;
        }
        self.versions.retain(|v| {
            let deleted = v.deleted_at_ms();
            !(v.is_tombstone()
                && deleted.saturating_add(gc_grace_ms) <= now_ms
                && deleted < repaired_ms)
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
    use crate::version::VersionVector;

    fn put(replica: u64, counter: u64, value: &[u8], ctx: &VersionVector) -> SiblingSet {
        put_cc(replica, counter, value, &ctx.clone().into())
    }

    fn put_cc(replica: u64, counter: u64, value: &[u8], ctx: &CausalContext) -> SiblingSet {
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
        s.merge(&put_cc(1, 12, b"c", &ctx), mode);
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

    /// Issue 19's scenario on one replica: B writes blind, A writes blind
    /// and then again with the context of its own OK. B's write, which A
    /// never saw, must survive.
    #[test]
    fn a_write_with_its_own_ok_context_keeps_a_concurrent_sibling() {
        let mode = ConflictMode::Siblings;
        let b = put(1, 10, b"from-B", &VersionVector::new());
        let a = put(1, 11, b"from-A", &VersionVector::new());
        let mut state = b.clone();
        state.merge(&a, mode);
        state.fold_own(1);
        // A's OK context: what it gave (nothing) plus its own dot.
        let mut ok = CausalContext::new();
        ok.insert(Dot {
            replica: 1,
            counter: 11,
        });
        let a2 = SiblingSet::from_write(
            Version {
                dot: Dot {
                    replica: 1,
                    counter: 12,
                },
                timestamp: 12,
                expires_at_ms: 0,
                value: Some(b"from-A2".to_vec()),
            },
            ok,
        );
        state.merge(&a2, mode);
        let values: Vec<_> = state
            .versions()
            .iter()
            .filter_map(|v| v.value.clone())
            .collect();
        assert_eq!(values, vec![b"from-B".to_vec(), b"from-A2".to_vec()]);
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
            CausalContext::new(),
        );
        assert!(!s.gc(150, 1000, u64::MAX, false));
        assert!(s.versions()[0].is_tombstone());
        assert!(!s.gc(1099, 1000, u64::MAX, false));
        assert!(
            !s.gc(5000, 1000, u64::MAX, true),
            "kept while older data may exist"
        );
        // Past gc_grace, but no repair reached every replica since it
        // expired (at 100): kept, or a replica that missed it resurrects.
        assert!(!s.gc(5000, 1000, 0, false));
        assert!(
            !s.gc(5000, 1000, 100, false),
            "a repair must start after it"
        );
        assert!(s.versions()[0].is_tombstone());
        assert!(s.gc(1100, 1000, 101, false));
    }
}
