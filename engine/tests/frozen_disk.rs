//! Cancellation safety on a disk that stops answering (issue 19): writes
//! whose callers give up while the data disk is frozen (`fsfreeze` on a
//! loop-mounted ext4, as a hung disk or a > 2 s fsync looks) still reach
//! the memtable once it thaws, and the engine's in-flight count does not
//! leak, so the next flush does not wait out its 60 s drain bound.
//!
//! Needs root (loop mount, fsfreeze): the test sits in `needs_host`,
//! #[ignore]d elsewhere and run by `CI=true ./test.sh`.

mod common;

use std::time::{Duration, Instant};

use corekv_engine::{ConflictMode, Engine, Options, WriteOptions};
use futures_lite::future;

use common::loopfs::LoopFs;
use common::value_of;

/// Writes whose callers time out while the disk is frozen.
const ABANDONED_WRITES: usize = 16;
/// How long the caller of each of them waits before giving up.
const CALLER_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the disk stays frozen: longer than the callers wait and than
/// the coordinator's replica timeouts.
const FROZEN_FOR: Duration = Duration::from_millis(2500);
/// A generous bound for what takes milliseconds once the disk is back;
/// far below the 60 s a leaked in-flight count would cost the flush.
const AFTER_THAW_BOUND: Duration = Duration::from_secs(15);

mod needs_host {
    use super::*;

    #[test]
    #[ignore = "needs root (loop mount, fsfreeze); CI=true ./test.sh runs it"]
    fn writes_abandoned_on_a_frozen_disk_land_once_it_thaws() {
        let fs = LoopFs::mounted(64);
        let dir = fs.path().join("shard-0");
        std::fs::create_dir_all(&dir).expect("mkdir");
        // Shared with the shard, which freezes and thaws it; a panic while
        // frozen thaws it on the way out (the guard's drop).
        let fs = std::sync::Arc::new(fs);
        let shard_fs = fs.clone();
        common::run(move || async move {
            let opts = Options {
                memtable_bytes_max: 4 << 20,
                segment_bytes: 1 << 20,
                ..common::small_options(ConflictMode::Siblings)
            };
            let e = Engine::open(&dir, opts.clone()).await.expect("open");
            e.put(b"before", b"v", &WriteOptions::default())
                .await
                .expect("put before the freeze");
            let frozen = shard_fs.freeze();
            let frozen_at = Instant::now();
            // Each write's caller gives up after CALLER_TIMEOUT, as a
            // coordinator's replica timeout or a client's deadline does.
            let writes: Vec<_> = (0..ABANDONED_WRITES)
                .map(|i| {
                    let e = e.clone();
                    glommio::spawn_local(async move {
                        let key = format!("frozen-{i}");
                        future::or(
                            async {
                                Some(
                                    e.put(key.as_bytes(), b"landed", &WriteOptions::default())
                                        .await,
                                )
                            },
                            async {
                                glommio::timer::sleep(CALLER_TIMEOUT).await;
                                None
                            },
                        )
                        .await
                    })
                })
                .collect();
            let mut gave_up = 0;
            for w in writes {
                match w.await {
                    None => gave_up += 1,
                    Some(r) => panic!("a write finished on a frozen disk: {r:?}"),
                }
            }
            assert_eq!(gave_up, ABANDONED_WRITES);
            glommio::timer::sleep(FROZEN_FOR.saturating_sub(frozen_at.elapsed())).await;
            frozen.thaw();
            let thawed_at = Instant::now();
            // Every abandoned write reaches the memtable without a restart.
            for i in 0..ABANDONED_WRITES {
                let key = format!("frozen-{i}");
                loop {
                    if value_of(e.get(key.as_bytes()).await.expect("get")).is_some() {
                        break;
                    }
                    assert!(
                        thawed_at.elapsed() < AFTER_THAW_BOUND,
                        "{key}, written while the disk was frozen and abandoned by its caller, \
                         is in the commit log but never reached the memtable"
                    );
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
            // No in-flight count leaked: a flush drains at once, not after 60 s.
            let flush_started = Instant::now();
            e.flush().await.expect("flush after thaw");
            assert!(
                flush_started.elapsed() < AFTER_THAW_BOUND,
                "the flush after the thaw took {:?}: an abandoned write's in-flight count leaked",
                flush_started.elapsed()
            );
            e.put(b"after", b"v", &WriteOptions::default())
                .await
                .expect("put after the thaw");
            e.close().await.expect("close");
            // And from the tables alone (the flush took them out of the log).
            let e = Engine::open(&dir, opts).await.expect("reopen");
            for i in 0..ABANDONED_WRITES {
                let key = format!("frozen-{i}");
                assert_eq!(
                    value_of(e.get(key.as_bytes()).await.expect("get")),
                    Some(b"landed".to_vec()),
                    "{key} after reopen"
                );
            }
            e.close().await.expect("close");
        });
        drop(fs);
    }
}
