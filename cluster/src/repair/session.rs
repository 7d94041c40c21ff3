//! Repairing one segment against one peer (the requesting side): build
//! the local tree, compare it with the peer's top-down, then in each
//! differing leaf compare per-key digests and exchange only the keys that
//! differ — pulling the peer's sets and merging them here, pushing ours
//! and merging them there. Merges never overwrite, so a repair racing
//! writes or another repair is harmless.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use corekv_engine::version::SiblingSet;
use corekv_engine::{ConflictMode, Engine};
use corekv_net::peer::{PeerRequest, PeerResponse};

use super::merkle::{children, levels_for, set_digest, MerkleTree, TreeDiff, FANOUT};
use super::replica::{digests, entry_hashes};
use super::segments::Segment;
use crate::links::PeerLinks;
use crate::runtime::metrics::ShardMetrics;
use crate::topology::Member;

/// Parents named per TREE request (16 hashes come back per parent).
const TREE_PARENTS_PER_REQUEST: usize = 4096;
/// Keys per DIGESTS page.
const DIGEST_PAGE: u32 = 4096;
/// A TREE request makes the peer scan the segment: allow it time.
const RANGE_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A byte budget per second shared by everything one shard streams.
pub struct Throttle {
    bytes_per_s: f64,
    started: Instant,
    spent: std::cell::Cell<u64>,
}

impl Throttle {
    /// At most `mib_per_s` MiB per second on average (0 = unthrottled).
    pub fn new(mib_per_s: u64) -> Throttle {
        Throttle {
            bytes_per_s: (mib_per_s as f64) * 1024.0 * 1024.0,
            started: Instant::now(),
            spent: std::cell::Cell::new(0),
        }
    }

    /// Accounts for `bytes` and sleeps while ahead of the budget.
    pub async fn spend(&self, bytes: usize) {
        self.spent.set(self.spent.get() + bytes as u64);
        if self.bytes_per_s <= 0.0 {
            return;
        }
        let due = Duration::from_secs_f64(self.spent.get() as f64 / self.bytes_per_s);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            glommio::timer::sleep(due - elapsed).await;
        }
    }
}

/// What one segment's repair moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentOutcome {
    /// Keys merged here from the peer.
    pub pulled: u64,
    /// Keys merged at the peer from here.
    pub pushed: u64,
    /// Bytes exchanged (hashes, digests, sets).
    pub bytes: u64,
    /// Segments that failed (or were skipped: their peer was down); a run
    /// with any is retried with backoff and sets no tombstone horizon.
    pub failed: u64,
    /// For a whole run that was complete (every range, every other
    /// replica, nothing failed): when it started, the tombstone horizon it
    /// sets (see `repair::full_repair_path`).
    pub complete_since_ms: Option<u64>,
}

/// Everything a segment repair needs from its shard.
pub struct SegmentRepair<'a> {
    /// This shard's engine (it owns the segment).
    pub engine: &'a Engine,
    /// This shard's peer links.
    pub links: &'a PeerLinks,
    /// The peer.
    pub peer: &'a Member,
    /// The shard's streaming budget.
    pub throttle: &'a Throttle,
    /// The shard's counters.
    pub metrics: &'a ShardMetrics,
    /// How sibling sets merge.
    pub mode: ConflictMode,
}

impl SegmentRepair<'_> {
    async fn call(&self, shard: usize, req: PeerRequest) -> Result<PeerResponse, String> {
        match self
            .links
            .call_within(self.peer, shard, req, RANGE_CALL_TIMEOUT)
            .await
        {
            Ok(PeerResponse::Error { code, message }) => Err(format!(
                "node {} answered {code:?}: {message}",
                self.peer.id
            )),
            Ok(r) => Ok(r),
            Err(e) => Err(e.to_string()),
        }
    }

    fn count(&self, out: &mut SegmentOutcome, bytes: usize) {
        out.bytes += bytes as u64;
        let b = &self.metrics.repair_bytes;
        b.set(b.get() + bytes as u64);
    }

    /// Repairs `seg`; an error names what failed (the segment is retried
    /// at the next repair).
    pub async fn run(&self, seg: &Segment) -> Result<SegmentOutcome, String> {
        let mut out = SegmentOutcome::default();
        // One scan both sizes the tree and fills it.
        let entries = entry_hashes(self.engine, seg.start, seg.end)
            .await
            .map_err(|e| e.to_string())?;
        let levels = levels_for(entries.len() as u64);
        let local = MerkleTree::from_entries(seg.start, seg.end, levels, &entries);
        drop(entries);
        let mut diff = TreeDiff::new();
        let mut leaves = Vec::new();
        while let Some((level, parents)) = diff.next_request() {
            let mut remote = Vec::with_capacity(parents.len() * FANOUT);
            let chunks: Vec<&[u32]> = if parents.is_empty() {
                vec![&[]]
            } else {
                parents.chunks(TREE_PARENTS_PER_REQUEST).collect()
            };
            for chunk in chunks {
                let req = PeerRequest::Tree {
                    start: seg.start,
                    end: seg.end,
                    levels,
                    level,
                    indices: chunk.to_vec(),
                };
                match self.call(seg.peer_shard, req).await? {
                    PeerResponse::Hashes(h) => {
                        self.count(&mut out, 4 * chunk.len() + 8 * h.len());
                        if h.len() != children(level, chunk).len() {
                            return Err("the peer answered a different tree shape".into());
                        }
                        remote.extend(h);
                    }
                    other => return Err(format!("unexpected answer to TREE: {other:?}")),
                }
            }
            if let Some(found) = diff.answer(&local, &remote) {
                leaves = found;
            }
        }
        for leaf in leaves {
            let Some((lo, hi)) = local.leaf_range(leaf as usize) else {
                continue;
            };
            self.repair_leaf(seg, lo, hi, &mut out).await?;
        }
        Ok(out)
    }

    /// Compares one leaf key by key and exchanges what differs.
    async fn repair_leaf(
        &self,
        seg: &Segment,
        lo: u64,
        hi: u64,
        out: &mut SegmentOutcome,
    ) -> Result<(), String> {
        let mut theirs: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let req = PeerRequest::Digests {
                start: lo,
                end: hi,
                after: after.clone(),
                limit: DIGEST_PAGE,
            };
            match self.call(seg.peer_shard, req).await? {
                PeerResponse::Digests(page) => {
                    let bytes: usize = page.entries.iter().map(|(k, _)| k.len() + 12).sum();
                    self.count(out, bytes);
                    theirs.extend(page.entries);
                    match page.next_after {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                other => return Err(format!("unexpected answer to DIGESTS: {other:?}")),
            }
        }
        // A leaf holds a handful of keys: read ours in one unbounded page.
        let ours: BTreeMap<Vec<u8>, u64> = digests(self.engine, lo, hi, None, usize::MAX)
            .await
            .map_err(|e| e.to_string())?
            .entries
            .into_iter()
            .collect();
        let pull: Vec<&Vec<u8>> = theirs
            .iter()
            .filter(|(k, d)| ours.get(*k) != Some(d))
            .map(|(k, _)| k)
            .collect();
        let push: Vec<&Vec<u8>> = ours
            .iter()
            .filter(|(k, d)| theirs.get(*k) != Some(d))
            .map(|(k, _)| k)
            .collect();
        // What the peer holds of each key pulled, to skip pushing back a
        // merge that equals it (the common case: this replica was behind).
        let mut pulled: BTreeMap<&Vec<u8>, u64> = BTreeMap::new();
        for key in pull {
            let set = match self
                .call(seg.peer_shard, PeerRequest::Read { key: key.clone() })
                .await?
            {
                PeerResponse::Set(Some(bytes)) => {
                    self.count(out, bytes.len() + key.len());
                    self.throttle.spend(bytes.len() + key.len()).await;
                    pulled.insert(key, set_digest(&bytes));
                    SiblingSet::decode(&bytes, self.mode)
                        .map_err(|e| format!("the peer sent a bad sibling set: {e}"))?
                }
                PeerResponse::Set(None) => continue,
                other => return Err(format!("unexpected answer to READ: {other:?}")),
            };
            self.engine
                .apply(key, &set)
                .await
                .map_err(|e| e.to_string())?;
            out.pulled += 1;
            let p = &self.metrics.repair_keys_pulled;
            p.set(p.get() + 1);
        }
        for key in push {
            let Some(set) = self.engine.get(key).await.map_err(|e| e.to_string())? else {
                continue;
            };
            let bytes = set.to_bytes();
            if pulled.get(key) == Some(&set_digest(&bytes)) {
                continue; // the peer already holds exactly this
            }
            self.count(out, bytes.len() + key.len());
            self.throttle.spend(bytes.len() + key.len()).await;
            let req = PeerRequest::Apply {
                key: key.clone(),
                set: bytes,
            };
            match self.call(seg.peer_shard, req).await? {
                PeerResponse::Applied => {}
                other => return Err(format!("unexpected answer to APPLY: {other:?}")),
            }
            out.pushed += 1;
            let p = &self.metrics.repair_keys_pushed;
            p.set(p.get() + 1);
        }
        Ok(())
    }
}
