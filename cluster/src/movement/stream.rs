//! Streaming a segment between nodes, resumable: the cursor (the last key
//! done) of every segment is saved in the shard's `stream-state.json`
//! after each page, so a crash of either side continues where it stopped
//! instead of starting over. Merges are idempotent, so a page streamed
//! twice after a crash is harmless.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use corekv_engine::version::SiblingSet;
use corekv_engine::{ConflictMode, Engine, TokenRange};
use corekv_net::peer::{PeerRequest, PeerResponse};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

use crate::links::PeerLinks;
use crate::repair::{Segment, Throttle};
use crate::runtime::metrics::ShardMetrics;
use crate::topology::Member;

/// Keys per streamed page.
const PAGE_KEYS: u32 = 512;
/// Merges in flight while applying or pushing a page.
const PUSH_IN_FLIGHT: usize = 64;
/// A SCAN answer holds up to 4 MiB.
const SCAN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Progress of one segment with one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// First token.
    pub start: u64,
    /// Last token.
    pub end: u64,
    /// The peer (source or target).
    pub peer: u32,
    /// The last key streamed, hex; empty = none yet.
    pub after: String,
    /// Finished.
    pub done: bool,
}

/// A shard's saved streaming progress for one movement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// "bootstrap" or "decommission".
    pub kind: String,
    /// One entry per (segment, peer).
    pub cursors: Vec<Cursor>,
}

impl StreamState {
    /// The state file of a shard.
    pub fn path(shard_dir: &Path) -> PathBuf {
        shard_dir.join("stream-state.json")
    }

    /// The saved state for `kind`, or a fresh one.
    pub fn load(shard_dir: &Path, kind: &str) -> StreamState {
        std::fs::read_to_string(Self::path(shard_dir))
            .ok()
            .and_then(|t| serde_json::from_str::<StreamState>(&t).ok())
            .filter(|s| s.kind == kind)
            .unwrap_or_else(|| StreamState {
                kind: kind.to_string(),
                cursors: Vec::new(),
            })
    }

    /// Saves atomically.
    pub fn save(&self, shard_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        crate::runtime::datadir::write_atomically(&Self::path(shard_dir), text.as_bytes())
    }

    /// The cursor of (segment, peer), created if new.
    pub fn cursor(&mut self, seg: &Segment, peer: u32) -> usize {
        if let Some(i) = self
            .cursors
            .iter()
            .position(|c| (c.start, c.end, c.peer) == (seg.start, seg.end, peer))
        {
            return i;
        }
        self.cursors.push(Cursor {
            start: seg.start,
            end: seg.end,
            peer,
            after: String::new(),
            done: false,
        });
        self.cursors.len() - 1
    }
}

fn to_hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// Everything a stream needs from its shard.
pub struct Streamer<'a> {
    /// This shard's engine.
    pub engine: &'a Engine,
    /// This shard's links.
    pub links: &'a PeerLinks,
    /// The shard's budget.
    pub throttle: &'a Throttle,
    /// The shard's counters.
    pub metrics: &'a ShardMetrics,
    /// How sets merge.
    pub mode: ConflictMode,
    /// Where progress is saved.
    pub shard_dir: &'a Path,
}

impl Streamer<'_> {
    fn count(&self, keys: usize, bytes: usize) {
        let m = self.metrics;
        m.stream_keys.set(m.stream_keys.get() + keys as u64);
        m.stream_bytes.set(m.stream_bytes.get() + bytes as u64);
    }

    /// Counts a streamed page, waits for the budget, and saves the
    /// cursor past it (or the segment as done).
    async fn page_done(
        &self,
        state: &mut StreamState,
        i: usize,
        keys: usize,
        bytes: usize,
        next_after: Option<Vec<u8>>,
    ) -> Result<(), String> {
        self.count(keys, bytes);
        self.throttle.spend(bytes).await;
        let c = &mut state.cursors[i];
        match next_after {
            Some(next) => c.after = to_hex(&next),
            None => c.done = true,
        }
        state
            .save(self.shard_dir)
            .map_err(|e| format!("saving stream progress: {e}"))
    }

    /// Fetches `seg` from `source` (shard `source_shard`) and merges it
    /// here, from the saved cursor on.
    pub async fn pull(
        &self,
        state: &mut StreamState,
        seg: &Segment,
        source: &Member,
        source_shard: usize,
    ) -> Result<(), String> {
        let i = state.cursor(seg, source.id);
        while !state.cursors[i].done {
            let req = PeerRequest::Scan {
                start: seg.start,
                end: seg.end,
                after: from_hex(&state.cursors[i].after),
                limit: PAGE_KEYS,
            };
            let page = match self
                .links
                .call_within(source, source_shard, req, SCAN_TIMEOUT)
                .await
            {
                Ok(PeerResponse::Entries(page)) => page,
                Ok(other) => return Err(format!("unexpected answer to SCAN: {other:?}")),
                Err(e) => return Err(e.to_string()),
            };
            let mut bytes = 0;
            // Applied concurrently, so one group commit carries many.
            let mut applying = FuturesUnordered::new();
            for (key, set) in &page.entries {
                bytes += key.len() + set.len();
                let set = SiblingSet::decode(set, self.mode)
                    .map_err(|e| format!("node {} sent a bad sibling set: {e}", source.id))?;
                let engine = self.engine;
                applying.push(async move { engine.apply(key, &set).await });
                if applying.len() >= PUSH_IN_FLIGHT {
                    if let Some(r) = applying.next().await {
                        r.map_err(|e| e.to_string())?;
                    }
                }
            }
            while let Some(r) = applying.next().await {
                r.map_err(|e| e.to_string())?;
            }
            self.page_done(state, i, page.entries.len(), bytes, page.next_after)
                .await?;
        }
        Ok(())
    }

    /// Sends this shard's keys of `seg` to `target` (shard `target_shard`),
    /// merging them there, from the saved cursor on.
    pub async fn push(
        &self,
        state: &mut StreamState,
        seg: &Segment,
        target: &Member,
        target_shard: usize,
    ) -> Result<(), String> {
        let i = state.cursor(seg, target.id);
        while !state.cursors[i].done {
            let after = from_hex(&state.cursors[i].after);
            let batch = self
                .engine
                .scan(
                    TokenRange {
                        start: seg.start,
                        end: seg.end,
                    },
                    after.as_deref(),
                    PAGE_KEYS as usize,
                )
                .await
                .map_err(|e| e.to_string())?;
            let mut bytes = 0;
            let keys = batch.entries.len();
            let mut pending = FuturesUnordered::new();
            let target = Rc::new(target.clone());
            for (key, set) in batch.entries {
                let encoded = set.to_bytes();
                bytes += key.len() + encoded.len();
                let links = self.links;
                let target = target.clone();
                pending.push(async move {
                    let req = PeerRequest::Apply { key, set: encoded };
                    match links.call(&target, target_shard, req).await {
                        Ok(PeerResponse::Applied) => Ok(()),
                        Ok(other) => Err(format!("unexpected answer to APPLY: {other:?}")),
                        Err(e) => Err(e.to_string()),
                    }
                });
                if pending.len() >= PUSH_IN_FLIGHT {
                    if let Some(r) = pending.next().await {
                        r?;
                    }
                }
            }
            while let Some(r) = pending.next().await {
                r?;
            }
            self.page_done(state, i, keys, bytes, batch.next_after)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_through_hex_and_the_state_file() {
        let key = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&key)), Some(key));
        assert_eq!(from_hex(""), None);
        assert_eq!(from_hex("zz"), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = Segment {
            start: 1,
            end: 9,
            local_shard: 0,
            peer: 3,
            peer_shard: 0,
        };
        let mut s = StreamState::load(dir.path(), "bootstrap");
        let i = s.cursor(&seg, 3);
        s.cursors[i].after = to_hex(b"k42");
        s.save(dir.path()).expect("save");
        let mut again = StreamState::load(dir.path(), "bootstrap");
        assert_eq!(again, s);
        assert_eq!(again.cursor(&seg, 3), i);
        assert!(StreamState::load(dir.path(), "decommission")
            .cursors
            .is_empty());
    }
}
