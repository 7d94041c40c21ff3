//! The replica side of anti-entropy and streaming: Merkle trees, digests
//! and entries of a token range read from this shard's engine, answering
//! the internode TREE, DIGESTS and SCAN requests.
//!
//! A tree costs a scan of its range, and a top-down comparison asks for
//! one level per round trip, so the last few trees built are kept for a
//! short while (bounded in count and age).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv_engine::version::{wall_clock_ms, SiblingSet};
use corekv_engine::{token_of, Engine, TokenRange};
use corekv_net::native::ErrorCode;
use corekv_net::peer::{Page, PeerRequest, PeerResponse};

use super::merkle::{children, entry_hash, set_digest, MerkleTree};
use super::segments::shard_of;

/// Trees kept per shard.
const TREE_CACHE_MAX: usize = 4;
/// How long a kept tree answers (a comparison takes a few round trips).
const TREE_TTL: Duration = Duration::from_secs(30);
/// Keys read from the engine per scan call.
const SCAN_PAGE: usize = 1024;
/// An ENTRIES answer stops adding keys past this many bytes of sets.
pub const ENTRIES_BYTES_MAX: usize = 4 << 20;

/// A kept tree: its range, depth, when it was built, and the tree.
type CachedTree = (u64, u64, u8, Instant, Rc<MerkleTree>);

/// A shard's recently built trees.
#[derive(Default)]
pub struct TreeCache {
    trees: RefCell<Vec<CachedTree>>,
}

impl TreeCache {
    fn get(&self, start: u64, end: u64, levels: u8) -> Option<Rc<MerkleTree>> {
        let mut trees = self.trees.borrow_mut();
        trees.retain(|t| t.3.elapsed() < TREE_TTL);
        trees
            .iter()
            .find(|t| (t.0, t.1, t.2) == (start, end, levels))
            .map(|t| t.4.clone())
    }

    fn put(&self, start: u64, end: u64, levels: u8, tree: Rc<MerkleTree>) {
        let mut trees = self.trees.borrow_mut();
        if trees.len() >= TREE_CACHE_MAX {
            trees.remove(0);
        }
        trees.push((start, end, levels, Instant::now(), tree));
    }
}

/// A key's digest for anti-entropy at `now_ms`: its set with expired
/// values hashed as the tombstones compaction turns them into. A replica
/// that compacted an expired key and one that did not then agree from the
/// expiry on, so expired sessions cause no repair traffic (Riak's trap,
/// basho/riak#981: they were exchanged on every repair until every replica
/// compacted). The key stays in the tree, as a tombstone, until gc: were
/// it left out, a replica still holding a value the expired write had
/// superseded would never be sent that write.
pub fn repair_digest(set: &SiblingSet, now_ms: u64) -> u64 {
    if set
        .versions()
        .iter()
        .any(|v| !v.is_tombstone() && v.is_expired(now_ms))
    {
        let mut canonical = set.clone();
        canonical.expire_into_tombstones(now_ms);
        set_digest(&canonical.to_bytes())
    } else {
        set_digest(&set.to_bytes())
    }
}

/// `(token, entry hash)` of every key of this shard in `start..=end`: one
/// scan, 16 bytes a key, from which trees of any depth are built.
pub async fn entry_hashes(
    engine: &Engine,
    start: u64,
    end: u64,
) -> corekv_engine::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let batch = engine
            .scan(TokenRange { start, end }, after.as_deref(), SCAN_PAGE)
            .await?;
        let now = wall_clock_ms();
        for (key, set) in &batch.entries {
            out.push((token_of(key), entry_hash(key, repair_digest(set, now))));
        }
        match batch.next_after {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// The tree of this shard's data over `start..=end`.
pub async fn build_tree(
    engine: &Engine,
    start: u64,
    end: u64,
    levels: u8,
) -> corekv_engine::Result<MerkleTree> {
    let entries = entry_hashes(engine, start, end).await?;
    Ok(MerkleTree::from_entries(start, end, levels, &entries))
}

/// Keys read from the engine per step of a page: each step holds full
/// sibling sets in memory, so a page of large values is built a few at a
/// time.
const PAGE_STEP: usize = 64;

/// Builds a page of at most `limit` keys of `start..=end` after `after`,
/// stopping early once `bytes_max` bytes were added; `item` turns a key's
/// set into what the page carries and its size.
async fn page<T>(
    engine: &Engine,
    start: u64,
    end: u64,
    after: Option<&[u8]>,
    limit: usize,
    bytes_max: usize,
    item: impl Fn(&corekv_engine::version::SiblingSet) -> (T, usize),
) -> corekv_engine::Result<Page<T>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut cursor: Option<Vec<u8>> = after.map(<[u8]>::to_vec);
    loop {
        let want = PAGE_STEP.min(limit - out.len());
        let batch = engine
            .scan(TokenRange { start, end }, cursor.as_deref(), want)
            .await?;
        for (key, set) in batch.entries {
            let (value, size) = item(&set);
            bytes += key.len() + size;
            cursor = Some(key.clone());
            out.push((key, value));
        }
        let more = batch.next_after.is_some();
        if more {
            cursor = batch.next_after;
        }
        if !more {
            return Ok(Page {
                entries: out,
                next_after: None,
            });
        }
        if out.len() >= limit || bytes >= bytes_max {
            return Ok(Page {
                entries: out,
                next_after: cursor,
            });
        }
    }
}

/// Up to `limit` `(key, digest)` pairs of `start..=end` after `after`.
pub async fn digests(
    engine: &Engine,
    start: u64,
    end: u64,
    after: Option<&[u8]>,
    limit: usize,
) -> corekv_engine::Result<Page<u64>> {
    let now = wall_clock_ms();
    page(engine, start, end, after, limit.max(1), usize::MAX, |set| {
        (repair_digest(set, now), 8)
    })
    .await
}

/// Up to `limit` keys of `start..=end` after `after` with their encoded
/// sets, stopping early past [`ENTRIES_BYTES_MAX`].
pub async fn entries(
    engine: &Engine,
    start: u64,
    end: u64,
    after: Option<&[u8]>,
    limit: usize,
) -> corekv_engine::Result<Page<Vec<u8>>> {
    page(
        engine,
        start,
        end,
        after,
        limit.max(1),
        ENTRIES_BYTES_MAX,
        |set| {
            let encoded = set.to_bytes();
            let size = encoded.len();
            (encoded, size)
        },
    )
    .await
}

/// Answers TREE, DIGESTS or SCAN for shard `shard` of `shards`; `None`
/// for any other request.
pub async fn serve(
    engine: &Engine,
    cache: &TreeCache,
    shard: usize,
    shards: usize,
    req: &PeerRequest,
) -> Option<PeerResponse> {
    let (start, end) = match req {
        PeerRequest::Tree { start, end, .. }
        | PeerRequest::Digests { start, end, .. }
        | PeerRequest::Scan { start, end, .. } => (*start, *end),
        _ => return None,
    };
    if shard_of(start, shards) != shard || shard_of(end, shards) != shard {
        return Some(PeerResponse::Error {
            code: ErrorCode::NotOwner,
            message: format!("tokens {start}..={end} are not all in shard {shard} of {shards}"),
        });
    }
    let storage = |e: corekv_engine::Error| PeerResponse::Error {
        code: ErrorCode::Storage,
        message: e.to_string(),
    };
    Some(match req {
        PeerRequest::Tree {
            levels,
            level,
            indices,
            ..
        } => {
            let tree = match cache.get(start, end, *levels) {
                Some(t) => t,
                None => match build_tree(engine, start, end, *levels).await {
                    Ok(t) => {
                        let t = Rc::new(t);
                        cache.put(start, end, *levels, t.clone());
                        t
                    }
                    Err(e) => return Some(storage(e)),
                },
            };
            let hashes = children(*level, indices)
                .into_iter()
                .map(|i| tree.hash(*level, i).unwrap_or(0))
                .collect();
            PeerResponse::Hashes(hashes)
        }
        PeerRequest::Digests { after, limit, .. } => {
            match digests(
                engine,
                start,
                end,
                after.as_deref(),
                (*limit).min(65_536) as usize,
            )
            .await
            {
                Ok(page) => PeerResponse::Digests(page),
                Err(e) => storage(e),
            }
        }
        PeerRequest::Scan { after, limit, .. } => {
            match entries(
                engine,
                start,
                end,
                after.as_deref(),
                (*limit).min(65_536) as usize,
            )
            .await
            {
                Ok(page) => PeerResponse::Entries(page),
                Err(e) => storage(e),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_engine::version::{CausalContext, Dot, Version};

    fn with_ttl(expires_at_ms: u64) -> SiblingSet {
        SiblingSet::from_write(
            Version {
                dot: Dot {
                    replica: 9,
                    counter: 5 << 16,
                },
                timestamp: 5 << 16,
                expires_at_ms,
                value: Some(b"session".to_vec()),
            },
            CausalContext::new(),
        )
    }

    #[test]
    fn an_expired_key_hashes_alike_compacted_or_not() {
        let raw = with_ttl(1_000);
        let mut compacted = raw.clone();
        assert!(compacted.expire_into_tombstones(1_500));
        // Before its expiry the value and a tombstone differ, as they must.
        assert_ne!(repair_digest(&raw, 999), repair_digest(&compacted, 999));
        // From the expiry on, both replicas hash the same state.
        assert_eq!(repair_digest(&raw, 1_000), repair_digest(&compacted, 1_000));
        assert_eq!(repair_digest(&raw, 9_999), repair_digest(&compacted, 9_999));
        // A key without TTL is hashed as stored.
        let forever = with_ttl(0);
        assert_eq!(
            repair_digest(&forever, u64::MAX),
            set_digest(&forever.to_bytes())
        );
    }
}
