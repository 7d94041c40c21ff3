//! `periodic` commit-log mode: the log is fdatasync'ed within one period
//! of a write, including the first write after a quiet spell (the sync
//! loop sleeps until a write arrives instead of waking every period), and
//! a log with nothing new is not synced.

mod common;

use std::time::{Duration, Instant};

use corekv_engine::{ConflictMode, Engine, SyncMode, WriteOptions};

const PERIOD: Duration = Duration::from_millis(20);

/// Writes `key` and reports whether the log was synced afterwards within
/// `within` (polling its sync count).
async fn put_then_synced_within(engine: &Engine, key: &[u8], within: Duration) -> bool {
    let before = engine.stats().log.syncs;
    engine
        .put(key, b"v", &WriteOptions::default())
        .await
        .expect("put");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if engine.stats().log.syncs > before {
            return true;
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    engine.stats().log.syncs > before
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

        assert!(
            put_then_synced_within(&engine, b"first", bound).await,
            "first write never synced"
        );

        // Quiet: ten periods without writes add no sync.
        let quiet = engine.stats().log.syncs;
        glommio::timer::sleep(PERIOD * 10).await;
        assert_eq!(engine.stats().log.syncs, quiet, "an idle log was synced");

        // The first write after the quiet spell is synced too.
        assert!(
            put_then_synced_within(&engine, b"second", bound).await,
            "the first write after a quiet spell was never synced"
        );
        engine.close().await.expect("close");
    });
}
