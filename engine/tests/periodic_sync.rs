//! `periodic` commit-log mode: the log is fdatasync'ed within one period
//! of a write, including the first write after a quiet spell (the sync
//! loop sleeps until a write arrives instead of waking every period), and
//! a log with nothing new is not synced.

mod common;

use std::time::{Duration, Instant};

use corekv_engine::{ConflictMode, Engine, SyncMode, WriteOptions};

const PERIOD: Duration = Duration::from_millis(20);

/// Polls `engine`'s sync count until it exceeds `after`, for at most `within`.
async fn synced_within(engine: &Engine, after: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if engine.stats().log.syncs > after {
            return true;
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    engine.stats().log.syncs > after
}

#[test]
fn writes_are_synced_within_the_period_and_an_idle_log_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    common::run(move || async move {
        let mut opts = common::small_options(ConflictMode::LastWriterWins);
        opts.sync_mode = SyncMode::Periodic { period: PERIOD };
        let engine = Engine::open(&path, opts).await.expect("open");
        // Generous bound for a loaded CI machine; the sync is due one
        // period after the write.
        let bound = PERIOD * 25;

        let before = engine.stats().log.syncs;
        engine
            .put(b"first", b"1", &WriteOptions::default())
            .await
            .expect("put");
        assert!(
            synced_within(&engine, before, bound).await,
            "first write never synced"
        );

        // Quiet: ten periods without writes add no sync.
        let quiet = engine.stats().log.syncs;
        glommio::timer::sleep(PERIOD * 10).await;
        assert_eq!(engine.stats().log.syncs, quiet, "an idle log was synced");

        // The first write after the quiet spell is synced too.
        engine
            .put(b"second", b"2", &WriteOptions::default())
            .await
            .expect("put");
        assert!(
            synced_within(&engine, quiet, bound).await,
            "the first write after a quiet spell was never synced"
        );
        engine.close().await.expect("close");
    });
}
