//! Commit-log segments are allocated at their full size when created (so a
//! page-cache append never waits on the file system's extent lock), in both
//! sync modes, and the unwritten rest of a segment reads back as the end of
//! the log: a restart recovers every write and the log goes on.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corekv_engine::{ConflictMode, Engine, SyncMode, WriteOptions};

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("log-"))
        })
        .collect();
    segs.sort();
    segs.pop().expect("a log segment")
}

fn allocated_whole_and_recovered(sync_mode: SyncMode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    common::run(move || async move {
        let mut opts = common::small_options(ConflictMode::LastWriterWins);
        opts.sync_mode = sync_mode;
        opts.memtable_bytes_max = 1 << 20; // everything stays in the log
        let e = Engine::open(&path, opts.clone()).await.expect("open");
        for i in 0..40 {
            let k = format!("k{i}");
            e.put(k.as_bytes(), &[b'x'; 500], &WriteOptions::default())
                .await
                .expect("put");
        }
        let seg = newest_segment(&path);
        let meta = std::fs::metadata(&seg).expect("stat segment");
        assert_eq!(meta.len(), opts.segment_bytes, "segment size");
        assert!(
            meta.blocks() * 512 >= opts.segment_bytes,
            "segment not allocated: {} bytes of {}",
            meta.blocks() * 512,
            opts.segment_bytes
        );
        // A crash: no close. Periodic mode's writes are in the page cache,
        // which a process crash does not lose.
        drop(e);
        let e = Engine::open(&path, opts).await.expect("reopen");
        for i in 0..40 {
            let k = format!("k{i}");
            assert!(
                e.get(k.as_bytes()).await.expect("get").is_some(),
                "{k} lost ({sync_mode:?})"
            );
        }
        e.put(b"after", b"restart", &WriteOptions::default())
            .await
            .expect("put after restart");
        e.close().await.expect("close");
    });
}

#[test]
fn batch_mode_segments_are_allocated_whole_and_recover() {
    allocated_whole_and_recovered(SyncMode::Batch);
}

#[test]
fn periodic_mode_segments_are_allocated_whole_and_recover() {
    allocated_whole_and_recovered(SyncMode::Periodic {
        period: Duration::from_millis(10),
    });
}
