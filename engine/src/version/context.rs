//! Causal contexts: the exact set of dots a state or a client has seen.

use super::dot::{Dot, VersionVector, ANY_REPLICA};

/// A set of dots, kept as a [`VersionVector`] (for each replica, every dot
/// *of this key* up to a counter) plus the dots above it that were seen
/// one by one (the "dot cloud").
///
/// Why the cloud: dot counters are hybrid-clock readings shared by every
/// key of a shard, so a key's dots from one replica have gaps. The vector
/// entry `{r: n}` is only a true statement — "every dot replica `r` issued
/// for this key up to `n` is known" — when whoever wrote it knew all of
/// them. Replica `r` itself does (it issues them, and folds them into its
/// entry when it mints: [`CausalContext::fold_own`]); a client that was
/// shown `{r: 3}` and then wrote `(r, 5)` does not know whether `(r, 4)`
/// exists, so its context is `{r: 3}` plus the dot `(r, 5)`. That is what
/// keeps a write from superseding a concurrent write it never saw.
///
/// Invariants: the cloud is sorted, without repeats, and holds no dot the
/// vector covers; so equal sets have one representation (and encoding).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CausalContext {
    vv: VersionVector,
    dots: Vec<Dot>,
}

impl CausalContext {
    /// The empty context: covers nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context of a version vector and loose dots, normalised.
    pub fn from_parts(vv: VersionVector, dots: impl IntoIterator<Item = Dot>) -> Self {
        let mut dots: Vec<Dot> = dots
            .into_iter()
            .filter(|&d| d.counter > 0 && !vv.covers(d))
            .collect();
        dots.sort_unstable();
        dots.dedup();
        CausalContext { vv, dots }
    }

    /// The compact part.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The loose dots above the vector, sorted.
    pub fn dots(&self) -> &[Dot] {
        &self.dots
    }

    /// True when `dot` is in the set.
    pub fn covers(&self, dot: Dot) -> bool {
        self.vv.covers(dot) || self.dots.binary_search(&dot).is_ok()
    }

    /// Adds one dot.
    pub fn insert(&mut self, dot: Dot) {
        if dot.counter == 0 || self.vv.covers(dot) {
            return;
        }
        if let Err(i) = self.dots.binary_search(&dot) {
            self.dots.insert(i, dot);
        }
    }

    /// Set union with `other`, in O(n + m) for entries of both.
    pub fn join(&mut self, other: &CausalContext) {
        if other.is_empty() {
            return;
        }
        self.vv.join(&other.vv);
        let mine = std::mem::take(&mut self.dots);
        let mut out = Vec::with_capacity(mine.len() + other.dots.len());
        let (mut a, mut b) = (mine.into_iter().peekable(), other.dots.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => match x.cmp(y) {
                    std::cmp::Ordering::Less => a.next(),
                    std::cmp::Ordering::Greater => b.next().copied(),
                    std::cmp::Ordering::Equal => {
                        b.next();
                        a.next()
                    }
                },
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next().copied(),
                (None, None) => break,
            };
            if let Some(d) = next {
                if !self.vv.covers(d) {
                    out.push(d);
                }
            }
        }
        self.dots = out;
    }

    /// Folds `replica`'s loose dots into its vector entry, up to its
    /// highest known dot. Only the replica itself may do this, on its full
    /// local state of the key: it issued every one of its dots for the key
    /// and holds them all, so "all of mine up to n" is then exact.
    pub fn fold_own(&mut self, replica: u64) {
        let top = self
            .dots
            .iter()
            .filter(|d| d.replica == replica)
            .map(|d| d.counter)
            .max();
        if let Some(top) = top {
            self.dots.retain(|d| d.replica != replica);
            self.vv.insert(Dot {
                replica,
                counter: top,
            });
            let vv = &self.vv;
            self.dots.retain(|&d| !vv.covers(d));
        }
    }

    /// Highest counter of `replica` the set holds (vector or cloud,
    /// counting the [`ANY_REPLICA`] entry).
    pub fn max_counter(&self, replica: u64) -> u64 {
        let cloud = self
            .dots
            .iter()
            .filter(|d| d.replica == replica)
            .map(|d| d.counter)
            .max()
            .unwrap_or(0);
        self.vv.covered_counter(replica).max(cloud)
    }

    /// Highest counter anywhere in the set (for clock-skew checks).
    pub fn max_reading(&self) -> u64 {
        let vv = self.vv.entries().iter().map(|e| e.1).max().unwrap_or(0);
        let cloud = self.dots.iter().map(|d| d.counter).max().unwrap_or(0);
        vv.max(cloud)
    }

    /// Entries it takes to write down: vector entries plus loose dots.
    pub fn len(&self) -> usize {
        self.vv.len() + self.dots.len()
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.dots.is_empty()
    }

    /// The ANY_REPLICA reach: every dot up to it is covered.
    pub fn any_up_to(&self) -> u64 {
        self.vv.get(ANY_REPLICA)
    }
}

impl From<VersionVector> for CausalContext {
    fn from(vv: VersionVector) -> Self {
        CausalContext {
            vv,
            dots: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(replica: u64, counter: u64) -> Dot {
        Dot { replica, counter }
    }

    #[test]
    fn a_written_dot_above_a_gap_covers_only_itself() {
        let mut c = CausalContext::from(VersionVector::from_entries([(1, 3)]));
        c.insert(d(1, 5));
        assert!(c.covers(d(1, 2)) && c.covers(d(1, 5)));
        assert!(!c.covers(d(1, 4)), "the gap is not claimed");
        c.fold_own(1);
        assert!(c.covers(d(1, 4)), "the issuer may claim its own gap");
        assert!(c.dots().is_empty());
    }

    #[test]
    fn join_is_a_union_and_normalises() {
        let mut a = CausalContext::from_parts(VersionVector::from_entries([(1, 2)]), [d(2, 9)]);
        let b =
            CausalContext::from_parts(VersionVector::from_entries([(2, 9)]), [d(1, 7), d(3, 1)]);
        a.join(&b);
        assert_eq!(a.vv().entries(), &[(1, 2), (2, 9)]);
        assert_eq!(a.dots(), &[d(1, 7), d(3, 1)]);
        let again = a.clone();
        a.join(&again);
        assert_eq!(a, again, "idempotent");
    }
}
