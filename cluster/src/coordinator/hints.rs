//! Hints: replica writes that could not be delivered, kept durably until
//! their node can take them (hinted handoff).
//!
//! When a replica is down or fails a write, the coordinating shard stores
//! the write's sibling set as a hint naming that node, in its own small
//! engine (`shard-<i>/hints/`: the same commit log, memtable and SSTables
//! as data, so hints survive a crash of the node holding them). A replay
//! task delivers hints to nodes that are reachable again, throttled, and
//! deletes each once the node acknowledged it. Hints older than the hint
//! window are dropped (and counted): anti-entropy repairs what they held.
//! Delivery merges (APPLY), so delivering a hint twice is harmless.
//!
//! A hint's key: `b'h'`, node id (u32 BE), created Unix ms (u64 BE), a
//! sequence number (u64 BE), then the data key; its value is the encoded
//! sibling set.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use corekv_engine::version::wall_clock_ms;
use corekv_engine::{ConflictMode, Engine, Options, TokenRange, WriteContext, WriteOptions};

use crate::runtime::metrics::{bump, ShardMetrics};

const PREFIX_BYTES: usize = 1 + 4 + 8 + 8;

/// A stored hint, as replay hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The node the write was meant for.
    pub node_id: u32,
    /// When the hint was stored, Unix ms.
    pub created_ms: u64,
    /// The data key.
    pub key: Vec<u8>,
    /// The encoded sibling set to merge there.
    pub set: Vec<u8>,
    /// The hint's own key in the store (to delete it).
    store_key: Vec<u8>,
}

/// Why a hint was not kept.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    /// The store holds its configured maximum of hints.
    #[error("the hint store is full ({pending} hints pending, at most {max})")]
    Full {
        /// Hints pending.
        pending: u64,
        /// The bound (`max_hints_per_shard`).
        max: u64,
    },
    /// The store's engine failed or refused the hint.
    #[error(transparent)]
    Engine(#[from] corekv_engine::Error),
}

/// One shard's durable hints.
pub struct HintStore {
    engine: Rc<Engine>,
    window_ms: u64,
    max: u64,
    seq: Cell<u64>,
    metrics: Rc<ShardMetrics>,
}

fn encode_key(node_id: u32, created_ms: u64, seq: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX_BYTES + key.len());
    k.push(b'h');
    k.extend_from_slice(&node_id.to_be_bytes());
    k.extend_from_slice(&created_ms.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn decode_key(k: &[u8]) -> Option<(u32, u64, &[u8])> {
    if k.len() <= PREFIX_BYTES || k[0] != b'h' {
        return None;
    }
    let node_id = u32::from_be_bytes(k[1..5].try_into().ok()?);
    let created_ms = u64::from_be_bytes(k[5..13].try_into().ok()?);
    Some((node_id, created_ms, &k[PREFIX_BYTES..]))
}

impl HintStore {
    /// Opens (or creates) the store in `dir` with the data engine's
    /// durability settings, and counts the hints already there. It keeps
    /// at most `max` hints.
    pub async fn open(
        dir: &Path,
        data: &Options,
        window: Duration,
        max: u64,
        metrics: Rc<ShardMetrics>,
    ) -> corekv_engine::Result<HintStore> {
        let opts = Options {
            // Hint keys carry a prefix; values are whole sibling sets.
            max_key_bytes: data.max_key_bytes + PREFIX_BYTES,
            conflict: ConflictMode::LastWriterWins,
            memtable_bytes_max: (8 << 20).min(data.memtable_bytes_max.max(1 << 20)),
            block_cache_bytes: 1 << 20,
            // Delivered hints need not linger as tombstones.
            gc_grace: Duration::from_secs(60),
            // A hint's value is a whole sibling set of the data engine:
            // sized for its largest, plus this engine's own version.
            max_value_bytes: data.set_bytes_max(),
            max_set_bytes: Some(data.set_bytes_max() + 8192),
            replica_id: data.replica_id | 0x8000,
            ..data.clone()
        };
        let engine = Engine::open(dir, opts).await?;
        let store = HintStore {
            engine,
            window_ms: window.as_millis() as u64,
            max,
            seq: Cell::new(0),
            metrics,
        };
        let mut after: Option<Vec<u8>> = None;
        let mut count = 0u64;
        loop {
            let batch = store
                .engine
                .scan(TokenRange::FULL, after.as_deref(), 1024)
                .await?;
            count += batch
                .entries
                .iter()
                .filter(|(_, s)| s.has_live(wall_clock_ms()))
                .count() as u64;
            match batch.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        store.metrics.hints_pending.set(count);
        Ok(store)
    }

    /// Stores a hint durably (per the sync mode) for `node_id`. A full
    /// store refuses it (counted as dropped) with [`HintError::Full`]: a
    /// stand-in that kept nothing must not count toward W.
    pub async fn store(&self, node_id: u32, key: &[u8], set: &[u8]) -> Result<(), HintError> {
        let pending = self.metrics.hints_pending.get();
        if pending >= self.max {
            bump(&self.metrics.hints_dropped);
            return Err(HintError::Full {
                pending,
                max: self.max,
            });
        }
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        let k = encode_key(node_id, wall_clock_ms(), seq, key);
        self.engine.put(&k, set, &WriteOptions::default()).await?;
        bump(&self.metrics.hints_stored);
        bump(&self.metrics.hints_pending);
        Ok(())
    }

    /// Up to `limit` hints after `after` (a previous batch's cursor), and
    /// the cursor to continue from. Hints past the window are deleted and
    /// counted here instead of being returned.
    pub async fn next_batch(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> corekv_engine::Result<(Vec<Hint>, Option<Vec<u8>>)> {
        let batch = self.engine.scan(TokenRange::FULL, after, limit).await?;
        let now = wall_clock_ms();
        let mut hints = Vec::with_capacity(batch.entries.len());
        for (store_key, set) in batch.entries {
            let Some(value) = set.into_winner(now).and_then(|v| v.value) else {
                continue; // delivered (a tombstone) or never a value
            };
            let Some((node_id, created_ms, key)) = decode_key(&store_key) else {
                continue;
            };
            if now.saturating_sub(created_ms) > self.window_ms {
                self.remove(&store_key).await?;
                bump(&self.metrics.hints_dropped);
                continue;
            }
            hints.push(Hint {
                node_id,
                created_ms,
                key: key.to_vec(),
                set: value,
                store_key: store_key.clone(),
            });
        }
        Ok((hints, batch.next_after))
    }

    /// Deletes a hint its node acknowledged.
    pub async fn delivered(&self, hint: &Hint) -> corekv_engine::Result<()> {
        self.remove(&hint.store_key).await?;
        bump(&self.metrics.hints_delivered);
        Ok(())
    }

    async fn remove(&self, store_key: &[u8]) -> corekv_engine::Result<()> {
        let opts = WriteOptions {
            ttl: None,
            context: WriteContext::Overwrite,
        };
        self.engine.delete(store_key, &opts).await?;
        let pending = &self.metrics.hints_pending;
        pending.set(pending.get().saturating_sub(1));
        Ok(())
    }

    /// Flushes and closes the store (at shutdown).
    pub async fn close(&self) -> corekv_engine::Result<()> {
        self.engine.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `test` on a fresh glommio executor (a shard) with an empty
    /// directory for the hint store.
    fn on_a_shard<F, Fut>(test: F)
    where
        F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || test(path))
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn hint_keys_round_trip_and_sort_by_node_then_age() {
        let a = encode_key(2, 100, 0, b"k");
        let b = encode_key(2, 101, 0, b"a");
        let c = encode_key(3, 1, 0, b"a");
        assert!(a < b && b < c);
        assert_eq!(decode_key(&a), Some((2, 100, &b"k"[..])));
        assert_eq!(decode_key(b"h"), None);
        assert_eq!(decode_key(b"x123456789012345678901k"), None);
    }

    #[test]
    fn a_hint_of_the_largest_sibling_set_is_kept() {
        on_a_shard(|path| async move {
            let metrics = Rc::new(ShardMetrics::default());
            let opts = Options::default();
            let store = HintStore::open(&path, &opts, Duration::from_secs(60), 10, metrics)
                .await
                .expect("open");
            // Two siblings of the largest value: more than max_value_bytes.
            let set = vec![7u8; opts.set_bytes_max()];
            store
                .store(7, b"big", &set)
                .await
                .expect("the largest set is a hint");
            let (hints, _) = store.next_batch(None, 10).await.expect("batch");
            assert_eq!(hints[0].set.len(), opts.set_bytes_max());
            store.close().await.expect("close");
        });
    }

    #[test]
    fn hints_survive_reopen_and_leave_once_delivered_or_expired() {
        on_a_shard(|path| async move {
            let metrics = Rc::new(ShardMetrics::default());
            let opts = Options::default();
            let window = Duration::from_secs(3600);
            let store = HintStore::open(&path, &opts, window, 10, metrics.clone())
                .await
                .expect("open");
            for i in 0..10u8 {
                store.store(7, &[b'k', i], b"set").await.expect("store");
            }
            // Bounded: the two beyond the cap are refused (so the
            // stand-in does not count toward W), and counted.
            for i in 10..12u8 {
                let e = store.store(7, &[b'k', i], b"set").await;
                assert!(
                    matches!(
                        e,
                        Err(HintError::Full {
                            pending: 10,
                            max: 10
                        })
                    ),
                    "{e:?}"
                );
            }
            assert_eq!(metrics.hints_dropped.get(), 2);
            store.close().await.expect("close");
            let metrics = Rc::new(ShardMetrics::default());
            let store = HintStore::open(&path, &opts, window, 100, metrics.clone())
                .await
                .expect("reopen");
            assert_eq!(metrics.hints_pending.get(), 10, "hints survive a reopen");
            let (hints, _) = store.next_batch(None, 100).await.expect("batch");
            assert_eq!(hints.len(), 10);
            assert!(hints.iter().all(|h| h.node_id == 7 && h.set == b"set"));
            for h in &hints[..4] {
                store.delivered(h).await.expect("delivered");
            }
            let (left, _) = store.next_batch(None, 100).await.expect("batch");
            assert_eq!(left.len(), 6);
            assert_eq!(metrics.hints_pending.get(), 6);
            // With a zero window everything left is too old.
            store.close().await.expect("close");
            let metrics = Rc::new(ShardMetrics::default());
            let store = HintStore::open(&path, &opts, Duration::ZERO, 100, metrics.clone())
                .await
                .expect("reopen");
            glommio::timer::sleep(Duration::from_millis(5)).await;
            let (none, _) = store.next_batch(None, 100).await.expect("batch");
            assert!(none.is_empty());
            assert_eq!(metrics.hints_dropped.get(), 6);
            assert_eq!(metrics.hints_pending.get(), 0);
            store.close().await.expect("close");
        });
    }
}
