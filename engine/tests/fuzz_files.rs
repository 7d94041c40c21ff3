//! Fuzzing the engine's file readers end to end (issue 20): a flushed
//! SSTable, the MANIFEST and a commit-log segment left by a crash (the
//! recovery path), damaged by the structured mutations of
//! `common/fuzz.rs` (bit flips, boundary values in length fields, cuts,
//! extensions, splices), most with every checksum resealed so the parsers
//! behind them (footer, index, bloom, properties, data blocks, manifest
//! body, batch headers and records) meet the damage, are opened with `Engine::open` and read back.
//! Guarantees: `open` and every `get` return `Ok` or a typed error (never
//! a panic or a hang), and one open-and-read round allocates at most a
//! few times the bytes on disk plus a fixed allowance (no allocation from
//! a length the file does not back). `corrupt_files.rs` has the targeted
//! cases and a randomised commit-log test of targeted damage; `src/fuzz_tests.rs`
//! fuzzes each decoder alone.
//!
//! Budget: `COREKV_FUZZ_SECS` (default 1 s) per test, at most
//! `ROUNDS_PER_SEC` rounds per second of budget; `COREKV_SEED` replays.

mod common;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use common::fuzz::{self, Rng};
use common::{files_with, run};
use corekv_engine::{ConflictMode, Engine, Options, WriteOptions};
use futures_lite::FutureExt;

#[global_allocator]
static ALLOC: fuzz::CountingAlloc = fuzz::CountingAlloc;

/// Round bound per second of budget (a round opens an engine).
const ROUNDS_PER_SEC: f64 = 2000.0;
/// Allocation allowed per round beyond `FACTOR ×` the bytes on disk: the
/// engine's own structures. Measured: about 50 KiB to open a table, and
/// 1.03 MiB for any recovery that replays records, whatever the segment's
/// length (1.5 KiB or 200 KiB alike: the memtable's fixed allocation for
/// `memtable_bytes_max` = 1 MiB), so nothing there follows a length read
/// from the file.
const FIXED_BYTES: usize = 2 << 20;
const FACTOR: usize = 8;
const KEYS: usize = 200;

fn options() -> Options {
    Options {
        auto_compaction: false,
        memtable_bytes_max: 1 << 20,
        ..common::small_options(ConflictMode::LastWriterWins)
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `(offset, len)` of every checksummed region of a good table: the data
/// blocks (from its index) and the index, bloom and properties blocks
/// (from its footer). Each ends in a CRC-32C of the bytes before it.
fn table_regions(t: &[u8]) -> Vec<(usize, usize)> {
    let f = t.len() - 64;
    let meta: Vec<(usize, usize)> = (0..3)
        .map(|i| {
            (
                u64_at(t, f + 16 * i) as usize,
                u64_at(t, f + 16 * i + 8) as usize,
            )
        })
        .collect();
    let (io, il) = meta[0];
    let index = &t[io..io + il - 4];
    let count = u32_at(index, index.len() - 4) as usize;
    let mut at = 0;
    let mut regions = meta.clone();
    for _ in 0..count {
        let klen = u32_at(index, at + 8) as usize;
        at += 12 + klen;
        regions.push((u64_at(index, at) as usize, u32_at(index, at + 8) as usize));
        at += 12;
    }
    regions
}

/// Reseals the regions that still fit, then the footer.
fn reseal_table(b: &mut [u8], regions: &[(usize, usize)]) {
    for &(off, len) in regions {
        if len >= 4 && off + len <= b.len() {
            let crc = crc32c::crc32c(&b[off..off + len - 4]);
            b[off + len - 4..off + len].copy_from_slice(&crc.to_le_bytes());
        }
    }
    if b.len() >= 64 {
        let f = b.len() - 64;
        let crc = crc32c::crc32c(&b[f..f + 60]);
        b[f + 60..].copy_from_slice(&crc.to_le_bytes());
    }
}

fn reseal_tail(b: &mut [u8]) {
    if b.len() >= 4 {
        let n = b.len() - 4;
        let crc = crc32c::crc32c(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Opens `dir` and reads every third key; returns how many
/// operations failed or found nothing where a value was written (a torn
/// log tail is cut quietly, so missing keys are how its damage shows).
async fn open_and_read(dir: &Path) -> usize {
    match Engine::open(dir, options()).await {
        Err(_) => 1,
        Ok(e) => {
            let mut noticed = 0;
            for i in (0..KEYS).step_by(3) {
                noticed += usize::from(!matches!(e.get(&key(i)).await, Ok(Some(_))));
            }
            noticed += usize::from(e.get(&key(KEYS + 1)).await.is_err());
            let _ = e.close().await;
            noticed
        }
    }
}

/// Batch headers start at aligned offsets with this magic.
const BATCH_MAGIC: [u8; 4] = 0xB47C_C0DEu32.to_le_bytes();

/// Reseals, at the batch offsets of the good segment, every batch header
/// still there and the records of its body as far as their lengths fit.
fn reseal_log(b: &mut [u8], batches: &[usize]) {
    for &at in batches {
        if at + 32 > b.len() {
            break;
        }
        let crc = crc32c::crc32c(&b[at..at + 28]);
        b[at + 28..at + 32].copy_from_slice(&crc.to_le_bytes());
        let end = (at + 32)
            .saturating_add(u32_at(b, at + 12) as usize)
            .min(b.len());
        let mut r = at + 32;
        while r + 8 <= end {
            let len = u32_at(b, r) as usize;
            if len > end - r - 8 {
                break;
            }
            let crc = crc32c::crc32c(&b[r + 8..r + 8 + len]);
            b[r + 4..r + 8].copy_from_slice(&crc.to_le_bytes());
            r += 8 + len;
        }
    }
}

/// Which file of a shard directory a test damages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Damaged {
    Table,
    Manifest,
    Log,
}

/// A shard directory's files (name, bytes), the index of the one to
/// damage, and the offsets its resealing needs.
async fn shard_files(which: Damaged) -> (Vec<(String, Vec<u8>)>, usize, Vec<(usize, usize)>) {
    let src = tempfile::tempdir().expect("tempdir");
    let e = Engine::open(src.path(), options()).await.expect("open");
    for i in 0..KEYS {
        let value = vec![b'v'; 20 + i % 150];
        e.put(&key(i), &value, &WriteOptions::default())
            .await
            .expect("put");
    }
    let read = |prefix: &str| {
        let path = files_with(src.path(), prefix).pop().expect("a file");
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        (name, std::fs::read(&path).expect("read"))
    };
    if which == Damaged::Log {
        // A crash: no close, so the log is what recovery reads. Every
        // segment is kept; the last (where a torn tail is cut and a bad
        // batch covered by a later durable_before is an error) is damaged.
        drop(e);
        let segs: Vec<(String, Vec<u8>)> = files_with(src.path(), "log-")
            .into_iter()
            .map(|p| {
                let name = p.file_name().expect("name").to_string_lossy().into_owned();
                (name, std::fs::read(&p).expect("read"))
            })
            .collect();
        let last = segs.len() - 1;
        // The written part only: mutations of the preallocated zeros
        // after it would mostly test nothing.
        let mut segs = segs;
        let written = segs[last]
            .1
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |p| p + 1);
        segs[last].1.truncate(written.div_ceil(512) * 512);
        let seg = &segs[last].1;
        let batches = (0..seg.len().saturating_sub(32))
            .step_by(512)
            .filter(|&at| seg[at..at + 4] == BATCH_MAGIC)
            .map(|at| (at, 32 + u32_at(seg, at + 12) as usize))
            .collect();
        return (segs, last, batches);
    }
    e.flush().await.expect("flush");
    e.close().await.expect("close");
    let table = read("table-");
    let manifest = read("MANIFEST");
    let regions = table_regions(&table.1);
    let at = usize::from(which == Damaged::Manifest);
    (vec![table, manifest], at, regions)
}

/// Mutates one of a shard directory's files round after round, within
/// the budget, and opens and reads the result.
fn fuzz_file(name: &str, which: Damaged) {
    let seed = common::seed::seed(name);
    let name = name.to_string();
    run(move || async move {
        let (files, at, regions) = shard_files(which).await;
        let good = files[at].1.clone();
        let batches: Vec<usize> = regions.iter().map(|r| r.0).collect();
        // Where a mutation may be focused: every checksummed region (and a
        // table's footer), so a small structure in a large file is hit.
        let mut focus: Vec<(usize, usize)> = regions
            .iter()
            .copied()
            .filter(|&(off, len)| off + len <= good.len())
            .collect();
        if which == Damaged::Table {
            focus.push((good.len() - 64, 64));
        }

        let secs = fuzz::budget_secs();
        let max_rounds = (secs * ROUNDS_PER_SEC) as u64;
        let start = Instant::now();
        let mut rng = Rng(seed);
        let mut rounds = 0u64;
        let mut refused = 0usize;
        let mut max_peak = 0usize;
        while rounds < max_rounds && start.elapsed() < Duration::from_secs_f64(secs) {
            rounds += 1;
            let mut bytes = if rng.one_in(20) {
                let n = rng.len(good.len());
                rng.bytes(n)
            } else if !focus.is_empty() && rng.one_in(2) {
                let (off, len) = focus[rng.below(focus.len())];
                let region = &good[off..off + len];
                let mut b = good[..off].to_vec();
                b.extend_from_slice(&fuzz::mutate(&mut rng, region, region));
                b.extend_from_slice(&good[off + len..]);
                b
            } else {
                fuzz::mutate(&mut rng, &good, &good)
            };
            if !rng.one_in(4) {
                match which {
                    Damaged::Table => reseal_table(&mut bytes, &regions),
                    Damaged::Manifest => reseal_tail(&mut bytes),
                    Damaged::Log => reseal_log(&mut bytes, &batches),
                }
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let mut on_disk = 0;
            for (i, (file, good)) in files.iter().enumerate() {
                let b = if i == at { &bytes } else { good };
                std::fs::write(dir.path().join(file), b).expect("write");
                on_disk += b.len();
            }
            // The round runs on this executor's thread, so the peak is
            // the engine's while it opens and reads.
            let base = fuzz::start_peak();
            let outcome = AssertUnwindSafe(open_and_read(dir.path()))
                .catch_unwind()
                .await;
            let peak = fuzz::peak_since(base);
            match outcome {
                Ok(failed) => refused += usize::from(failed > 0),
                Err(_) => panic!(
                    "{name}: COREKV_SEED={seed}: round {rounds} panicked (replay with the seed)"
                ),
            }
            max_peak = max_peak.max(peak);
            let bound = FACTOR * on_disk + FIXED_BYTES;
            assert!(
                peak <= bound,
                "{name}: COREKV_SEED={seed}: round {rounds} allocated {peak} bytes at once for {on_disk} bytes on disk"
            );
        }
        eprintln!(
            "{name}: {rounds} damaged {which:?} files in {:.2?} ({refused} noticed: refused, or keys lost, \
             peak allocation {max_peak} bytes), COREKV_SEED={seed}",
            start.elapsed()
        );
        assert!(
            rounds > 0 && refused > 0,
            "no damage was noticed: the test tests nothing"
        );
    });
}

#[test]
fn damaged_tables_open_or_fail_typed() {
    fuzz_file("damaged_tables_open_or_fail_typed", Damaged::Table);
}

#[test]
fn damaged_manifests_open_or_fail_typed() {
    fuzz_file("damaged_manifests_open_or_fail_typed", Damaged::Manifest);
}

#[test]
fn damaged_log_segments_recover_or_fail_typed() {
    fuzz_file("damaged_log_segments_recover_or_fail_typed", Damaged::Log);
}
