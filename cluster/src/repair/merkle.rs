//! Merkle trees over a token range (sans-io).
//!
//! The range `start..=end` is cut into `16^levels` leaves of equal token
//! width. A leaf's hash is the wrapping sum of `xxh3(key ‖ digest)` over
//! the keys in it, where `digest` is the xxh3 of the key's encoded sibling
//! set (canonical: equal states encode identically). A node's hash is the
//! wrapping sum of its children's, so the root is the sum over all keys
//! and a tree can be built from keys in any order. Two replicas holding
//! the same keys with the same sets have equal trees; a difference in a
//! key changes every node on its leaf's path.
//!
//! Sums can in theory cancel (two differences whose hashes add to zero);
//! with 64-bit hashes that is a 2^-64 event per comparison.

use xxhash_rust::xxh3::xxh3_64;

/// Children per node.
pub const FANOUT: usize = 16;
/// Deepest tree: 16^5 ≈ 1 M leaves (8 MiB).
pub const LEVELS_MAX: u8 = 5;

/// The digest of a key's encoded sibling set.
pub fn set_digest(encoded_set: &[u8]) -> u64 {
    xxh3_64(encoded_set)
}

/// What one key adds to its leaf.
pub fn entry_hash(key: &[u8], digest: u64) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 8);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&digest.to_le_bytes());
    xxh3_64(&buf)
}

/// The depth that gives at most about four keys per leaf for `keys` keys.
pub fn levels_for(keys: u64) -> u8 {
    let mut levels = 1u8;
    let mut leaves = FANOUT as u64;
    while leaves * 4 < keys && levels < LEVELS_MAX {
        levels += 1;
        leaves *= FANOUT as u64;
    }
    levels
}

/// A complete tree: `nodes[l]` holds the `16^l` hashes of level `l`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    start: u64,
    end: u64,
    levels: u8,
    nodes: Vec<Vec<u64>>,
    keys: u64,
}

impl MerkleTree {
    /// An empty tree over `start..=end` (`start <= end`) with `levels`
    /// levels below the root (capped at [`LEVELS_MAX`]).
    pub fn new(start: u64, end: u64, levels: u8) -> MerkleTree {
        let levels = levels.min(LEVELS_MAX);
        let leaves = FANOUT.pow(u32::from(levels));
        MerkleTree {
            start,
            end: end.max(start),
            levels,
            nodes: vec![vec![0; leaves]],
            keys: 0,
        }
    }

    /// The complete tree of `(token, entry hash)` pairs.
    pub fn from_entries(start: u64, end: u64, levels: u8, entries: &[(u64, u64)]) -> MerkleTree {
        let mut tree = MerkleTree::new(start, end, levels);
        for &(token, hash) in entries {
            tree.add(token, hash);
        }
        tree.finish()
    }

    /// The leaf holding `token` (which must lie in the range).
    pub fn leaf_of(&self, token: u64) -> usize {
        let width = u128::from(self.end - self.start) + 1;
        let offset = u128::from(token.saturating_sub(self.start));
        let leaves = self.leaves() as u128;
        ((offset * leaves) / width).min(leaves - 1) as usize
    }

    /// Adds one key (its token and entry hash); only before [`finish`].
    ///
    /// [`finish`]: MerkleTree::finish
    pub fn add(&mut self, token: u64, hash: u64) {
        let leaf = self.leaf_of(token);
        if let Some(leaves) = self.nodes.last_mut() {
            leaves[leaf] = leaves[leaf].wrapping_add(hash);
        }
        self.keys += 1;
    }

    /// Computes the inner levels; the tree is then complete.
    pub fn finish(mut self) -> MerkleTree {
        // nodes holds only the leaves so far; build upwards, then flip.
        let mut levels = vec![std::mem::take(&mut self.nodes[0])];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above: Vec<u64> = below
                .chunks(FANOUT)
                .map(|c| c.iter().fold(0u64, |a, &h| a.wrapping_add(h)))
                .collect();
            levels.push(above);
        }
        levels.reverse();
        self.nodes = levels;
        self
    }

    /// Depth below the root.
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Keys added.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Leaves: `16^levels`.
    pub fn leaves(&self) -> usize {
        FANOUT.pow(u32::from(self.levels))
    }

    /// The hash of node `index` of `level`; `None` when out of range (or
    /// before [`MerkleTree::finish`]).
    pub fn hash(&self, level: u8, index: u32) -> Option<u64> {
        self.nodes
            .get(usize::from(level))?
            .get(index as usize)
            .copied()
    }

    /// The token range of leaf `leaf`, inclusive; `None` when the leaf
    /// holds no token (more leaves than tokens).
    pub fn leaf_range(&self, leaf: usize) -> Option<(u64, u64)> {
        let width = u128::from(self.end - self.start) + 1;
        let leaves = self.leaves() as u128;
        let lo = u128::from(self.start) + (width * leaf as u128).div_ceil(leaves);
        let hi = (u128::from(self.start) + (width * (leaf as u128 + 1)).div_ceil(leaves))
            .checked_sub(1)?;
        (lo <= hi).then_some((lo as u64, hi as u64))
    }
}

/// Top-down comparison of a local tree with a remote one, one level per
/// round trip (sans-io: the caller fetches what [`TreeDiff::next_request`]
/// names). A request names the differing nodes of the level above; the
/// answer holds the hashes of all their children, so a request costs 4
/// bytes per 16 hashes returned.
pub struct TreeDiff {
    /// The level to fetch next.
    level: u8,
    /// The differing nodes of `level - 1`.
    parents: Vec<u32>,
    done: bool,
}

impl Default for TreeDiff {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeDiff {
    /// A comparison starting at the root.
    pub fn new() -> TreeDiff {
        TreeDiff {
            level: 0,
            parents: Vec::new(),
            done: false,
        }
    }

    /// The level to fetch and the parents whose children are needed (none
    /// for the root); `None` when the comparison is done.
    pub fn next_request(&self) -> Option<(u8, Vec<u32>)> {
        if self.done {
            return None;
        }
        Some((self.level, self.parents.clone()))
    }

    /// Takes the remote hashes for the last request; returns the differing
    /// leaves once known (empty when the trees are equal). A short or long
    /// answer counts every unanswered node as differing.
    pub fn answer(&mut self, local: &MerkleTree, remote: &[u64]) -> Option<Vec<u32>> {
        let nodes = children(self.level, &self.parents);
        let differing: Vec<u32> = nodes
            .iter()
            .enumerate()
            .filter(|&(k, &i)| remote.get(k).copied() != local.hash(self.level, i))
            .map(|(_, &i)| i)
            .collect();
        if self.level >= local.levels() || differing.is_empty() {
            self.done = true;
            return Some(differing);
        }
        self.parents = differing;
        self.level += 1;
        None
    }
}

/// The nodes of `level` that a request naming `parents` covers, in order.
pub fn children(level: u8, parents: &[u32]) -> Vec<u32> {
    if level == 0 {
        return vec![0];
    }
    parents
        .iter()
        .flat_map(|&p| (0..FANOUT as u32).map(move |c| p.saturating_mul(FANOUT as u32) + c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree(start: u64, end: u64, levels: u8, keys: &[(u64, u64)]) -> MerkleTree {
        MerkleTree::from_entries(start, end, levels, keys)
    }

    /// Runs the top-down exchange between two trees; the differing leaves.
    fn diff(a: &MerkleTree, b: &MerkleTree) -> Vec<u32> {
        let mut d = TreeDiff::new();
        let mut rounds = 0;
        while let Some((level, parents)) = d.next_request() {
            rounds += 1;
            assert!(rounds <= 10);
            let remote: Vec<u64> = children(level, &parents)
                .iter()
                .map(|&i| b.hash(level, i).expect("in range"))
                .collect();
            if let Some(leaves) = d.answer(a, &remote) {
                return leaves;
            }
        }
        Vec::new()
    }

    #[test]
    fn leaves_partition_the_range_exactly() {
        for (start, end, levels) in [
            (0, u64::MAX, 2),
            (10, 10, 1),
            (5, 1000, 3),
            (u64::MAX - 7, u64::MAX, 1),
        ] {
            let t = MerkleTree::new(start, end, levels);
            let mut next = start;
            for leaf in 0..t.leaves() {
                let Some((lo, hi)) = t.leaf_range(leaf) else {
                    continue; // more leaves than tokens
                };
                assert_eq!(lo, next, "leaf {leaf} of {start}..={end}");
                assert_eq!(t.leaf_of(lo), leaf);
                assert_eq!(t.leaf_of(hi), leaf);
                next = hi.wrapping_add(1);
            }
            assert_eq!(next, end.wrapping_add(1));
        }
    }

    proptest! {
        #[test]
        fn the_diff_finds_exactly_the_leaves_that_differ(
            keys in prop::collection::btree_map(any::<u64>(), any::<u64>(), 0..300),
            changed in prop::collection::vec(any::<u64>(), 0..5),
        ) {
            let a: Vec<(u64, u64)> = keys.iter().map(|(&t, &h)| (t, h)).collect();
            let mut b = a.clone();
            for c in &changed {
                if b.is_empty() { break; }
                let i = (*c as usize) % b.len();
                b[i].1 = b[i].1.wrapping_add(1);
            }
            let ta = tree(0, u64::MAX, 2, &a);
            let tb = tree(0, u64::MAX, 2, &b);
            let mut expected: Vec<u32> = a.iter().zip(&b)
                .filter(|(x, y)| x != y)
                .map(|(x, _)| ta.leaf_of(x.0) as u32)
                .collect();
            expected.sort_unstable();
            expected.dedup();
            let mut got = diff(&ta, &tb);
            got.sort_unstable();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(ta.keys(), a.len() as u64);
        }
    }

    #[test]
    fn equal_trees_cost_one_round_and_depth_follows_key_count() {
        let keys: Vec<(u64, u64)> = (0..100u64).map(|i| (i * 1_000_003, i)).collect();
        let a = tree(0, 1 << 40, 3, &keys);
        let mut d = TreeDiff::new();
        let (level, parents) = d.next_request().expect("root first");
        assert_eq!((level, parents.len()), (0, 0));
        let root = a.hash(0, 0).expect("root");
        assert_eq!(d.answer(&a, &[root]), Some(Vec::new()));
        assert_eq!(levels_for(0), 1);
        assert_eq!(levels_for(10_000), 3);
        assert_eq!(levels_for(1_000_000), 5);
        assert_eq!(levels_for(u64::MAX), LEVELS_MAX);
    }
}
