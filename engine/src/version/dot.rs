//! Dots (unique event ids) and version vectors (sets of seen events).

/// A unique write event: the replica that issued it and that replica's clock
/// reading. Counters of one replica only grow (they come from its
/// [`HybridClock`](super::HybridClock)), so `(replica, counter)` never repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The issuing replica (node and shard), see `Options::replica_id`.
    pub replica: u64,
    /// The replica's hybrid-logical-clock reading when it issued the write.
    pub counter: u64,
}

/// The pseudo-replica whose entry covers the dots of *every* replica up to
/// its counter. Dot counters are hybrid-logical-clock readings, so
/// `{ANY_REPLICA: t}` means "everything written before time t": that is how
/// an overwrite (RESP `SET`) supersedes what is there without reading it.
pub const ANY_REPLICA: u64 = u64::MAX;

/// For each replica, a counter: the vector covers every dot of that
/// replica *for one key* up to it (see [`CausalContext`](super::CausalContext)
/// for why that is only said by someone who knows all of them), and its
/// [`ANY_REPLICA`] entry covers every dot of any replica up to its counter.
///
/// Kept as a small vector sorted by replica: a key is written by a handful of
/// coordinators, so a sorted `Vec` beats a map in size and speed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    entries: Vec<(u64, u64)>,
}

impl VersionVector {
    /// The empty vector: covers nothing (a write with it conflicts with all).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vector from `(replica, counter)` pairs; duplicates keep the
    /// highest counter, zero counters are dropped.
    pub fn from_entries(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut vv = VersionVector::new();
        for (replica, counter) in pairs {
            vv.insert_raw(Dot { replica, counter });
        }
        vv.canonicalize();
        vv
    }

    /// The `(replica, counter)` pairs, sorted by replica, counters above zero.
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    /// Highest counter seen from `replica` (0 when none).
    pub fn get(&self, replica: u64) -> u64 {
        match self.entries.binary_search_by_key(&replica, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// True when the vector has seen `dot`.
    pub fn covers(&self, dot: Dot) -> bool {
        // Entries are sorted by replica, so the ANY_REPLICA entry is last.
        let any = match self.entries.last() {
            Some(&(ANY_REPLICA, counter)) => counter,
            _ => 0,
        };
        any >= dot.counter || self.get(dot.replica) >= dot.counter
    }

    /// Highest counter of `replica` this vector covers, counting the
    /// [`ANY_REPLICA`] entry.
    pub fn covered_counter(&self, replica: u64) -> u64 {
        self.get(replica).max(self.get(ANY_REPLICA))
    }

    /// Records `dot` as seen.
    pub fn insert(&mut self, dot: Dot) {
        self.insert_raw(dot);
        self.canonicalize();
    }

    fn insert_raw(&mut self, dot: Dot) {
        if dot.counter == 0 {
            return;
        }
        match self.entries.binary_search_by_key(&dot.replica, |e| e.0) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(dot.counter),
            Err(i) => self.entries.insert(i, (dot.replica, dot.counter)),
        }
    }

    /// Drops entries the ANY_REPLICA entry already covers, so equal
    /// knowledge always has one representation (and one encoding).
    fn canonicalize(&mut self) {
        if let Some(&(ANY_REPLICA, any)) = self.entries.last() {
            self.entries.retain(|&(r, c)| r == ANY_REPLICA || c > any);
        }
    }

    /// Pointwise maximum with `other` (the least upper bound), one pass
    /// over both sorted entry lists: O(n + m).
    pub fn join(&mut self, other: &VersionVector) {
        if other.entries.is_empty() {
            return;
        }
        if self.entries.is_empty() {
            self.entries.clone_from(&other.entries);
            self.canonicalize();
            return;
        }
        let mine = std::mem::take(&mut self.entries);
        let mut out = Vec::with_capacity(mine.len() + other.entries.len());
        let (mut a, mut b) = (mine.into_iter().peekable(), other.entries.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                    std::cmp::Ordering::Less => a.next(),
                    std::cmp::Ordering::Greater => b.next().copied(),
                    std::cmp::Ordering::Equal => {
                        let y = *y;
                        b.next();
                        a.next().map(|x| (x.0, x.1.max(y.1)))
                    }
                },
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next().copied(),
                (None, None) => break,
            };
            out.extend(next);
        }
        self.entries = out;
        self.canonicalize();
    }

    /// True when every entry of `other` is covered by `self`.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|&(replica, counter)| {
            if replica == ANY_REPLICA {
                self.get(ANY_REPLICA) >= counter
            } else {
                self.covered_counter(replica) >= counter
            }
        })
    }

    /// Number of replicas in the vector.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the vector has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_and_join() {
        let mut a = VersionVector::from_entries([(1, 5), (3, 2)]);
        assert!(a.covers(Dot {
            replica: 1,
            counter: 5
        }));
        assert!(!a.covers(Dot {
            replica: 1,
            counter: 6
        }));
        assert!(!a.covers(Dot {
            replica: 2,
            counter: 1
        }));
        let b = VersionVector::from_entries([(2, 7), (3, 9)]);
        a.join(&b);
        assert_eq!(a.entries(), &[(1, 5), (2, 7), (3, 9)]);
        assert!(a.descends(&b));
        assert!(!b.descends(&a));
        let any = VersionVector::from_entries([(ANY_REPLICA, 100)]);
        assert!(any.covers(Dot {
            replica: 42,
            counter: 100
        }));
        assert!(!any.covers(Dot {
            replica: 42,
            counter: 101
        }));
        assert!(any.descends(&a));
    }
}
