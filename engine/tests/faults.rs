//! Fault handling: empty and fresh directories (the glommio iopoll trap),
//! torn commit-log tails, damaged SSTables and manifests, a full disk, and
//! limits that reject input before anything is written.

mod common;

use corekv_engine::{ConflictMode, Engine, Error, Options, WriteOptions};

use common::loopfs::LoopFs;
use common::{files_with, value_of};

#[test]
fn empty_directory_start_restart_and_read() {
    common::run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = common::small_options(ConflictMode::Siblings);
        // Open and close an empty directory twice: the first DMA reads hit
        // empty or fresh files, which is what trips glommio's iopoll check.
        for _ in 0..2 {
            let e = Engine::open(dir.path(), opts.clone())
                .await
                .expect("open empty");
            assert!(e.get(b"nothing").await.expect("get").is_none());
            e.close().await.expect("close");
        }
        let e = Engine::open(dir.path(), opts.clone()).await.expect("open");
        e.put(b"k", b"v", &WriteOptions::default())
            .await
            .expect("put");
        e.close().await.expect("close");
        let e = Engine::open(dir.path(), opts).await.expect("reopen");
        assert_eq!(
            value_of(e.get(b"k").await.expect("get")),
            Some(b"v".to_vec())
        );
        e.close().await.expect("close");
    });
}

#[test]
fn torn_log_tail_is_truncated_and_earlier_writes_survive() {
    common::run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = common::small_options(ConflictMode::LastWriterWins);
        opts.memtable_bytes_max = 1 << 20; // keep everything in the log
        let e = Engine::open(dir.path(), opts.clone()).await.expect("open");
        for i in 0..50 {
            let k = format!("k{i}");
            e.put(k.as_bytes(), &[b'x'; 300], &WriteOptions::default())
                .await
                .expect("put");
        }
        // Simulate a crash: no close (which would flush), just drop.
        drop(e);
        let seg = files_with(dir.path(), "log-").pop().expect("a log segment");
        // The segment is allocated at full size: the log ends at its last
        // non-zero byte. Tear the last record: its final 200 bytes never
        // reached the disk (zeros, as the allocation left them).
        let mut bytes = std::fs::read(&seg).expect("read seg");
        let end = bytes.iter().rposition(|&b| b != 0).expect("a written log") + 1;
        bytes[end - 200..end].fill(0);
        std::fs::write(&seg, &bytes).expect("write torn seg");
        let e = Engine::open(dir.path(), opts)
            .await
            .expect("reopen after torn tail");
        for i in 0..49 {
            let k = format!("k{i}");
            assert!(
                value_of(e.get(k.as_bytes()).await.expect("get")).is_some(),
                "{k} lost"
            );
        }
        // New writes after recovery are durable too.
        e.put(b"after", b"yes", &WriteOptions::default())
            .await
            .expect("put after");
        e.close().await.expect("close");
    });
}

#[test]
fn flipped_bit_in_sstable_is_a_checksum_error_not_wrong_data() {
    common::run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = Options {
            auto_compaction: false,
            ..common::small_options(ConflictMode::LastWriterWins)
        };
        let e = Engine::open(dir.path(), opts.clone()).await.expect("open");
        e.put(b"victim", &[b'v'; 1000], &WriteOptions::default())
            .await
            .expect("put");
        e.flush().await.expect("flush");
        e.close().await.expect("close");
        let table = files_with(dir.path(), "table-").pop().expect("a table");
        let mut bytes = std::fs::read(&table).expect("read table");
        // The first data block starts at offset 0; flip a bit inside the value.
        bytes[600] ^= 0x01;
        std::fs::write(&table, &bytes).expect("write table");
        let e = Engine::open(dir.path(), opts)
            .await
            .expect("open with damaged block");
        match e.get(b"victim").await {
            Err(Error::ChecksumMismatch { path, .. }) => assert_eq!(path, table),
            other => panic!("expected a checksum error, got {other:?}"),
        }
        e.close().await.expect("close");
    });
}

#[test]
fn damaged_manifest_fails_open_with_the_file_named() {
    common::run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = common::small_options(ConflictMode::LastWriterWins);
        let e = Engine::open(dir.path(), opts.clone()).await.expect("open");
        e.put(b"k", b"v", &WriteOptions::default())
            .await
            .expect("put");
        e.close().await.expect("close");
        let manifest = dir.path().join("MANIFEST");
        let mut bytes = std::fs::read(&manifest).expect("read manifest");
        bytes[10] ^= 0xFF;
        std::fs::write(&manifest, &bytes).expect("write manifest");
        let err = Engine::open(dir.path(), opts)
            .await
            .err()
            .expect("open must fail");
        assert!(err.to_string().contains("MANIFEST"), "{err}");
    });
}

#[test]
fn oversized_keys_and_values_are_rejected_and_nothing_is_written() {
    common::run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = common::small_options(ConflictMode::LastWriterWins);
        let e = Engine::open(dir.path(), opts.clone()).await.expect("open");
        let big_key = vec![b'k'; opts.max_key_bytes + 1];
        let big_value = vec![b'v'; opts.max_value_bytes + 1];
        assert!(matches!(
            e.put(&big_key, b"v", &WriteOptions::default()).await,
            Err(Error::KeyTooLarge { .. })
        ));
        assert!(matches!(
            e.put(b"", b"v", &WriteOptions::default()).await,
            Err(Error::KeyTooLarge { .. })
        ));
        assert!(matches!(
            e.put(b"k", &big_value, &WriteOptions::default()).await,
            Err(Error::ValueTooLarge { .. })
        ));
        assert_eq!(e.stats().log.records, 0, "a rejected write reached the log");
        assert!(e.get(b"k").await.expect("get").is_none());
        e.close().await.expect("close");
    });
}

mod needs_host {
    use super::*;

    #[test]
    #[ignore = "needs root (loop mount); CI=true ./test.sh runs it"]
    fn a_disk_without_room_for_a_whole_segment_still_opens_and_takes_writes() {
        let fs = LoopFs::mounted(16);
        let dir = fs.path().join("shard-0");
        std::fs::create_dir_all(&dir).expect("mkdir");
        // Leave ~4 MiB free, less than one 8 MiB segment.
        fs.fill_leaving(4 << 20);
        common::run(move || async move {
            let opts = Options {
                memtable_bytes_max: 1 << 20,
                segment_bytes: 8 << 20,
                commit_batch_bytes_max: 64 * 1024,
                ..common::small_options(ConflictMode::LastWriterWins)
            };
            let e = Engine::open(&dir, opts.clone())
                .await
                .expect("open without room to allocate a segment");
            for i in 0..100 {
                let k = format!("k{i}");
                e.put(k.as_bytes(), &[b'v'; 1000], &WriteOptions::default())
                    .await
                    .expect("put");
            }
            drop(e);
            let e = Engine::open(&dir, opts).await.expect("reopen");
            for i in 0..100 {
                let k = format!("k{i}");
                assert_eq!(
                    value_of(e.get(k.as_bytes()).await.expect("get")),
                    Some(vec![b'v'; 1000]),
                    "{k}"
                );
            }
            e.close().await.expect("close");
        });
        drop(fs);
    }

    #[test]
    #[ignore = "needs root (loop mount); CI=true ./test.sh runs it"]
    fn full_disk_fails_writes_clearly_and_keeps_data_readable() {
        let fs = LoopFs::mounted(16);
        let dir = fs.path().join("shard-0");
        common::run(move || async move {
            let opts = Options {
                memtable_bytes_max: 256 * 1024,
                segment_bytes: 1 << 20,
                commit_batch_bytes_max: 64 * 1024,
                ..common::small_options(ConflictMode::LastWriterWins)
            };
            let e = Engine::open(&dir, opts.clone()).await.expect("open");
            // Ballast the operator can delete to recover, as in production.
            let ballast = dir.join("ballast");
            std::fs::write(&ballast, vec![0u8; 3 << 20]).expect("write ballast");
            let value = vec![b'z'; 4000];
            let mut acked = Vec::new();
            let mut first_error = None;
            // 16 MiB of disk: 10k writes of 4 KB cannot fit; bounded anyway.
            for i in 0..10_000 {
                let k = format!("fill-{i}");
                match e.put(k.as_bytes(), &value, &WriteOptions::default()).await {
                    Ok(_) => acked.push(k),
                    Err(err) => {
                        first_error = Some(err);
                        break;
                    }
                }
            }
            let err = first_error.expect("the disk never filled up");
            assert!(
                err.is_no_space() || matches!(err, Error::FlushFailed(_) | Error::LogFailed(_)),
                "unexpected error kind: {err}"
            );
            let message = err.to_string();
            assert!(
                message.contains("No space") || message.contains("space"),
                "unclear message: {message}"
            );
            // Reads keep working and return every acknowledged write.
            for k in acked.iter().step_by(7) {
                assert_eq!(
                    value_of(e.get(k.as_bytes()).await.expect("get after ENOSPC")),
                    Some(value.clone()),
                    "{k}"
                );
            }
            drop(e);
            // The operator frees space and restarts: every acknowledged write is
            // there and new writes succeed.
            std::fs::remove_file(&ballast).expect("remove ballast");
            let e = Engine::open(&dir, opts)
                .await
                .expect("reopen after freeing space");
            for k in &acked {
                assert_eq!(
                    value_of(e.get(k.as_bytes()).await.expect("get after reopen")),
                    Some(value.clone()),
                    "{k}"
                );
            }
            e.put(b"after", b"space", &WriteOptions::default())
                .await
                .expect("write after freeing space");
            e.close().await.expect("close");
        });
        drop(fs);
    }
}
