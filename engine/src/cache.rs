//! The block cache: verified data blocks kept in memory within a byte
//! budget. Under O_DIRECT there is no OS page cache, so this is the only
//! thing between a hot key and the disk.

use std::cell::RefCell;
use std::rc::Rc;

use lru::LruCache;

/// Counters of a cache since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups that found the block.
    pub hits: u64,
    /// Lookups that had to read the disk.
    pub misses: u64,
    /// Blocks inserted.
    pub inserts: u64,
    /// Blocks evicted to stay within budget.
    pub evictions: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// The budget.
    pub capacity_bytes: u64,
}

struct Inner {
    lru: LruCache<(u64, u64), Rc<[u8]>>,
    stats: CacheStats,
}

/// A least-recently-used cache of blocks keyed by `(table id, offset)`,
/// holding at most `capacity_bytes` of block data. Single-threaded: one per
/// shard.
pub(crate) struct BlockCache {
    inner: RefCell<Inner>,
}

impl BlockCache {
    /// A cache with the given byte budget (0 disables caching).
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        BlockCache {
            inner: RefCell::new(Inner {
                lru: LruCache::unbounded(),
                stats: CacheStats {
                    capacity_bytes: capacity_bytes as u64,
                    ..CacheStats::default()
                },
            }),
        }
    }

    /// The block, if cached (and marks it recently used).
    pub(crate) fn get(&self, table: u64, offset: u64) -> Option<Rc<[u8]>> {
        let mut inner = self.inner.borrow_mut();
        let found = inner.lru.get(&(table, offset)).cloned();
        if found.is_some() {
            inner.stats.hits += 1;
        } else {
            inner.stats.misses += 1;
        }
        found
    }

    /// Caches a block, evicting the least recently used ones to stay within
    /// the budget. A block larger than the whole budget is not cached.
    pub(crate) fn insert(&self, table: u64, offset: u64, block: Rc<[u8]>) {
        let mut inner = self.inner.borrow_mut();
        let size = block.len() as u64;
        if size > inner.stats.capacity_bytes {
            return;
        }
        if let Some(old) = inner.lru.put((table, offset), block) {
            inner.stats.bytes -= old.len() as u64;
        }
        inner.stats.bytes += size;
        inner.stats.inserts += 1;
        while inner.stats.bytes > inner.stats.capacity_bytes {
            match inner.lru.pop_lru() {
                Some((_, evicted)) => {
                    inner.stats.bytes -= evicted.len() as u64;
                    inner.stats.evictions += 1;
                }
                None => break,
            }
        }
    }

    /// Drops every block of a table (it was compacted away).
    pub(crate) fn remove_table(&self, table: u64) {
        let mut inner = self.inner.borrow_mut();
        let keys: Vec<(u64, u64)> = inner
            .lru
            .iter()
            .filter(|(k, _)| k.0 == table)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(b) = inner.lru.pop(&k) {
                inner.stats.bytes -= b.len() as u64;
            }
        }
    }

    /// Current counters.
    pub(crate) fn stats(&self) -> CacheStats {
        self.inner.borrow().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_and_counts() {
        let c = BlockCache::new(10_000);
        for i in 0..100 {
            c.insert(1, i * 4096, vec![0u8; 3000].into());
            assert!(c.stats().bytes <= 10_000);
        }
        assert!(c.get(1, 99 * 4096).is_some());
        assert!(c.get(1, 0).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts), (1, 1, 100));
        assert_eq!(s.evictions, 97);
        c.remove_table(1);
        assert_eq!(c.stats().bytes, 0);
    }
}
