//! Size-tiered compaction choice, sans-io: given table sizes, which tables
//! to merge next.
//!
//! Tables are grouped into buckets of similar size (each within
//! `[BUCKET_LOW, BUCKET_HIGH] ×` the bucket's average), as Cassandra's STCS
//! does; a bucket with at least `min_tables` members is merged, smallest
//! tables first, because merging small tables is cheap and removes the most
//! read amplification per byte written.

/// A table is in a bucket when its size is at least this fraction of the
/// bucket's average size...
const BUCKET_LOW: f64 = 0.5;
/// ...and at most this multiple of it.
const BUCKET_HIGH: f64 = 1.5;
/// Tables below this size all share one bucket, so a stream of tiny flushes
/// compacts together however their sizes vary.
const SMALL_TABLE_BYTES: u64 = 4 << 20;

/// Picks the tables to compact from `(table id, file bytes)` pairs, or an
/// empty list when no bucket has `min_tables` members. At most `max_tables`
/// are returned.
pub(crate) fn pick(tables: &[(u64, u64)], min_tables: usize, max_tables: usize) -> Vec<u64> {
    let mut sorted: Vec<(u64, u64)> = tables.to_vec();
    sorted.sort_by_key(|&(id, bytes)| (bytes, id));
    let mut buckets: Vec<Vec<(u64, u64)>> = Vec::new();
    for table in sorted {
        let fits = buckets.last().is_some_and(|bucket| {
            let avg = bucket.iter().map(|t| t.1).sum::<u64>() as f64 / bucket.len() as f64;
            let size = table.1 as f64;
            (table.1 <= SMALL_TABLE_BYTES && avg <= SMALL_TABLE_BYTES as f64)
                || (size >= avg * BUCKET_LOW && size <= avg * BUCKET_HIGH)
        });
        match buckets.last_mut() {
            Some(bucket) if fits => bucket.push(table),
            _ => buckets.push(vec![table]),
        }
    }
    buckets
        .into_iter()
        .find(|b| b.len() >= min_tables)
        .map(|b| b.into_iter().take(max_tables).map(|t| t.0).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn waits_for_enough_similar_tables() {
        assert!(pick(&[(1, 10 * MIB), (2, 11 * MIB), (3, 12 * MIB)], 4, 32).is_empty());
        let picked = pick(
            &[(1, 10 * MIB), (2, 11 * MIB), (3, 12 * MIB), (4, 9 * MIB)],
            4,
            32,
        );
        assert_eq!(picked.len(), 4);
    }

    #[test]
    fn does_not_mix_tiers() {
        let tables = [
            (1, 100 * MIB),
            (2, 10 * MIB),
            (3, 10 * MIB),
            (4, 10 * MIB),
            (5, 10 * MIB),
        ];
        let mut picked = pick(&tables, 4, 32);
        picked.sort();
        assert_eq!(picked, vec![2, 3, 4, 5]);
    }

    #[test]
    fn small_tables_share_a_bucket_and_max_is_respected() {
        let tables: Vec<(u64, u64)> = (0..10).map(|i| (i, 4096 * (i + 1))).collect();
        assert_eq!(pick(&tables, 4, 6).len(), 6);
    }
}
