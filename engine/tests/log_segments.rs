//! Commit-log segments are allocated at their full size when created (so a
//! page-cache append never waits on the file system's extent lock), in both
//! sync modes, and the unwritten rest of a segment reads back as the end of
//! the log: a restart recovers every write and the log goes on.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corekv_engine::version::wall_clock_ms;
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

/// Small options with a periodic (page-cache) commit log.
fn periodic_options() -> corekv_engine::Options {
    let mut opts = common::small_options(ConflictMode::LastWriterWins);
    opts.sync_mode = SyncMode::Periodic {
        period: Duration::from_millis(10),
    };
    opts
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("log-"))
        .count()
}

/// Overwriting the same keys keeps the memtable small while every write
/// adds to the log (a session store's pattern): the log's size alone
/// triggers flushes, so its live segments stay within `log_bytes_max` and a
/// restart finds every key's last value.
#[test]
fn overwrites_flush_at_the_log_bound_and_the_log_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    common::run(move || async move {
        let mut opts = periodic_options();
        opts.memtable_bytes_max = 64 << 20; // never full: 20 keys
        opts.log_bytes_max = 4 * opts.segment_bytes;
        let segments_max = (opts.log_bytes_max / opts.segment_bytes) as usize;
        let e = Engine::open(&path, opts.clone()).await.expect("open");
        // ~3 MiB of log: 24 segments' worth, six times the bound.
        let mut most_segments = 0;
        for i in 0..6_000u32 {
            let k = format!("k{}", i % 20);
            let v = format!("{i:0>500}");
            e.put(k.as_bytes(), v.as_bytes(), &WriteOptions::default())
                .await
                .expect("put");
            if i % 100 == 0 {
                most_segments = most_segments.max(segment_count(&path));
            }
        }
        let stats = e.stats();
        let flushes = stats.log_bound_flushes;
        assert!(flushes >= 3, "the log's size triggered {flushes} flushes");
        // Every flush came from the log's size (the last one started may
        // still be running).
        assert!(stats.flushes <= flushes, "{} flushes", stats.flushes);
        assert_eq!(stats.log_bytes_max, opts.log_bytes_max);
        assert!(
            stats.log_bytes > 0 && stats.log_bytes <= opts.log_bytes_max + opts.segment_bytes,
            "live log {} bytes",
            stats.log_bytes
        );
        // The bound, plus the segment a flush in progress has yet to delete.
        assert!(
            most_segments <= segments_max + 2,
            "{most_segments} live segments, bound {segments_max}"
        );
        // Restart (a kill during flushes is crash_consistency.rs's job):
        // the last value of every key is there, from tables and the log.
        e.close().await.expect("close");
        let e = Engine::open(&path, opts).await.expect("reopen");
        for key in 0..20u32 {
            let last = (0..6_000u32)
                .rev()
                .find(|i| i % 20 == key)
                .expect("a write");
            let got = e
                .get(format!("k{key}").as_bytes())
                .await
                .expect("get")
                .expect("present");
            let value = got.winner(wall_clock_ms()).and_then(|v| v.value.clone());
            assert_eq!(value, Some(format!("{last:0>500}").into_bytes()), "k{key}");
        }
        e.close().await.expect("close");
    });
}

/// Writes that come one at a time each make a batch of their own, padded
/// to the device's alignment: a segment takes as many of them as that
/// padding allows, not as many as the largest alignment would (a 512-byte
/// device used to roll segments with an eighth of them written).
#[test]
fn unbatched_writes_fill_their_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    common::run(move || async move {
        let mut opts = periodic_options();
        opts.memtable_bytes_max = 8 << 20;
        let e = Engine::open(&path, opts.clone()).await.expect("open");
        for i in 0..1_000u32 {
            // One at a time: each waits for its ack, so each is a batch.
            e.put(
                format!("k{i}").as_bytes(),
                &[b'v'; 100],
                &WriteOptions::default(),
            )
            .await
            .expect("put");
        }
        let log = e.stats().log;
        let full_segments = log.segment - 1;
        // One live segment per filled one, plus the one being written.
        assert_eq!(e.stats().log_bytes, log.segment * opts.segment_bytes);
        assert!(full_segments >= 2, "only {full_segments} segments filled");
        // What a segment can take before it rolls: all but room for one
        // full batch and the header.
        let usable = opts.segment_bytes - opts.commit_batch_bytes_max as u64 - 4096;
        let per_segment = log.bytes / full_segments;
        assert!(
            per_segment >= usable / 2,
            "{per_segment} bytes written per segment of {}, {usable} usable ({} batches, {} segments)",
            opts.segment_bytes,
            log.batches,
            log.segment
        );
        e.close().await.expect("close");
    });
}

/// Pages of `path` resident in the page cache among its first `len` bytes
/// (`mincore` over a read-only mapping).
fn resident_pages(path: &Path, len: u64) -> usize {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).expect("open segment");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let len = len as usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: a read-only shared mapping of an open file, unmapped below;
    // mincore writes one byte per page into `vec`, which has that many.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap segment");
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    }
    vec.iter().filter(|b| **b & 1 == 1).count()
}

/// A periodic log gives back the page cache of what it has synced (the log
/// is read only by recovery; keeping the pages pushed every append onto
/// fresh, cold memory): once a sync period has passed, the segment being
/// written keeps at most the page it is writing, and what was released
/// still recovers in full after a crash.
#[test]
fn a_periodic_log_releases_the_page_cache_it_has_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    common::run(move || async move {
        let mut opts = periodic_options();
        opts.segment_bytes = 8 << 20;
        opts.memtable_bytes_max = 8 << 20; // everything stays in the log
        let e = Engine::open(&path, opts.clone()).await.expect("open");
        // ~1 MiB of log, one batch per write.
        for i in 0..2_000u32 {
            e.put(
                format!("k{i}").as_bytes(),
                &[b'v'; 400],
                &WriteOptions::default(),
            )
            .await
            .expect("put");
        }
        let written = e.stats().log.bytes;
        assert!(written >= 1_000_000, "{written} bytes of log");
        // Two periods: the last writes are synced and their pages released.
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let seg = newest_segment(&path);
        let pages = resident_pages(&seg, opts.segment_bytes);
        // The page being written, the O_DIRECT header's, and one of slack
        // for a sync that raced the last write.
        assert!(
            pages <= 3,
            "{pages} pages of the segment still cached after {written} bytes were synced"
        );
        // A crash (no close): every released write comes back from disk.
        drop(e);
        let e = Engine::open(&path, opts).await.expect("reopen");
        for i in (0..2_000u32).step_by(97) {
            let k = format!("k{i}");
            assert!(
                e.get(k.as_bytes()).await.expect("get").is_some(),
                "{k} lost"
            );
        }
        e.close().await.expect("close");
    });
}
