//! Fuzzing the engine's file readers end to end (issue 20): a flushed
//! SSTable and the MANIFEST, damaged by the structured mutations of
//! `common/fuzz.rs` (bit flips, boundary values in length fields, cuts,
//! extensions, splices), most with every checksum resealed so the parsers
//! behind them (footer, index, bloom, properties, data blocks, manifest
//! body) meet the damage, are opened with `Engine::open` and read back.
//! Guarantees: `open` and every `get` return `Ok` or a typed error (never
//! a panic or a hang), and one open-and-read round allocates at most a
//! few times the bytes on disk plus a fixed allowance (no allocation from
//! a length the file does not back). `corrupt_files.rs` has the targeted
//! cases and the randomised commit-log recovery test; `src/fuzz_tests.rs`
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
/// engine's own structures (about 50 KiB measured for this table).
const FIXED_BYTES: usize = 1 << 20;
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

/// Opens `dir` and reads every key; returns how many reads failed.
async fn open_and_read(dir: &Path) -> usize {
    match Engine::open(dir, options()).await {
        Err(_) => 1,
        Ok(e) => {
            let mut failed = 0;
            for i in (0..KEYS).step_by(7).chain([KEYS + 1]) {
                failed += usize::from(e.get(&key(i)).await.is_err());
            }
            let _ = e.close().await;
            failed
        }
    }
}

/// Mutates one of the shard directory's files (`which`) round after
/// round, within the budget, and opens the result.
fn fuzz_file(name: &str, which: &'static str) {
    let seed = common::seed::seed(name);
    let name = name.to_string();
    run(move || async move {
        let src = tempfile::tempdir().expect("tempdir");
        let e = Engine::open(src.path(), options()).await.expect("open");
        for i in 0..KEYS {
            e.put(&key(i), &[b'v'; 100], &WriteOptions::default())
                .await
                .expect("put");
        }
        e.flush().await.expect("flush");
        e.close().await.expect("close");
        let table_path = files_with(src.path(), "table-").pop().expect("a table");
        let manifest_path = src.path().join("MANIFEST");
        let table = std::fs::read(&table_path).expect("table");
        let manifest = std::fs::read(&manifest_path).expect("manifest");
        let regions = table_regions(&table);
        let good = if which == "table" { &table } else { &manifest };

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
            } else {
                fuzz::mutate(&mut rng, good, good)
            };
            if !rng.one_in(4) {
                if which == "table" {
                    reseal_table(&mut bytes, &regions);
                } else {
                    reseal_tail(&mut bytes);
                }
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let (t, m) = if which == "table" {
                (&bytes, &manifest)
            } else {
                (&table, &bytes)
            };
            std::fs::write(dir.path().join(table_path.file_name().expect("name")), t)
                .expect("write table");
            std::fs::write(dir.path().join("MANIFEST"), m).expect("write manifest");
            let on_disk = t.len() + m.len();
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
            "{name}: {rounds} damaged {which} files in {:.2?} ({refused} refused on open or read, \
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
    fuzz_file("damaged_tables_open_or_fail_typed", "table");
}

#[test]
fn damaged_manifests_open_or_fail_typed() {
    fuzz_file("damaged_manifests_open_or_fail_typed", "manifest");
}
