//! Hostile bytes on disk (issue 19: no input may crash a node): damaged
//! SSTables, manifests and commit-log segments make `Engine::open` or `get`
//! return a typed error naming the file, never panic, and never allocate
//! from a length the file does not back. Also records larger than a
//! commit-log batch (written in a batch of their own) and larger than a
//! segment (refused with `RecordTooLarge`).
//!
//! The randomised log test draws from a seeded generator: the seed is
//! printed, and `COREKV_SEED=<seed>` replays a failing run.

mod common;

use std::path::{Path, PathBuf};

use corekv_engine::version::{Dot, SiblingSet, Version, VersionVector};
use corekv_engine::{ConflictMode, Engine, Error, Options, SyncMode, WriteOptions};

const FOOTER: usize = 64;

use common::{files_with, value_of};

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

const KEYS: usize = 200;

/// Writes `KEYS` keys into one flushed table (several data blocks) and
/// returns the table's path.
async fn one_table(dir: &Path) -> PathBuf {
    let e = Engine::open(dir, options()).await.expect("open");
    for i in 0..KEYS {
        e.put(&key(i), &[b'v'; 100], &WriteOptions::default())
            .await
            .expect("put");
    }
    e.flush().await.expect("flush");
    e.close().await.expect("close");
    let tables = files_with(dir, "table-");
    assert_eq!(tables.len(), 1, "{tables:?}");
    tables.into_iter().next().expect("a table")
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn footer_fields(table: &[u8]) -> [u64; 6] {
    let f = table.len() - FOOTER;
    std::array::from_fn(|i| u64_at(table, f + 8 * i))
}

/// `table` with its footer fields replaced and the footer CRC fixed up, so
/// the reader gets past the checksum to the bounds checks.
fn with_footer(table: &[u8], fields: [u64; 6]) -> Vec<u8> {
    let mut out = table.to_vec();
    let f = out.len() - FOOTER;
    for (i, v) in fields.iter().enumerate() {
        out[f + 8 * i..f + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out[f..f + 60]);
    out[f + 60..f + 64].copy_from_slice(&crc.to_le_bytes());
    out
}

/// `table` with its index body edited by `edit` (same length) and the
/// index CRC fixed up.
fn with_index(table: &[u8], edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let [at, len, ..] = footer_fields(table);
    let (at, len) = (at as usize, len as usize);
    let mut out = table.to_vec();
    edit(&mut out[at..at + len - 4]);
    let crc = crc32c::crc32c(&out[at..at + len - 4]);
    out[at + len - 4..at + len].copy_from_slice(&crc.to_le_bytes());
    out
}

/// An edit of an index body, named by what it breaks.
type IndexEdit = Box<dyn Fn(&mut [u8])>;

/// Offset of the first index entry's block offset: after its u64 token,
/// u32 key length and key.
fn first_handle_at(index: &[u8]) -> usize {
    let klen = u32::from_le_bytes(index[8..12].try_into().expect("4 bytes")) as usize;
    12 + klen
}

/// Installs `bytes` as the table and requires an error, from `open` or
/// from a `get`, that names the table; returns it. A panic anywhere fails
/// the test.
async fn expect_table_error(dir: &Path, table: &Path, bytes: &[u8], what: &str) -> Error {
    std::fs::write(table, bytes).expect("write table");
    let e = match Engine::open(dir, options()).await {
        Err(e) => e,
        Ok(engine) => {
            let mut first = None;
            for i in 0..KEYS {
                if let Err(e) = engine.get(&key(i)).await {
                    first.get_or_insert(e);
                }
            }
            engine.close().await.expect("close");
            first.unwrap_or_else(|| panic!("{what}: damage went unnoticed"))
        }
    };
    assert!(
        e.to_string().contains(&*table.to_string_lossy()),
        "{what}: error does not name the table: {e}"
    );
    e
}

#[test]
fn damaged_sstables_are_errors_never_panics() {
    common::run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = one_table(dir.path()).await;
        let good = std::fs::read(&table).expect("read table");
        let size = good.len() as u64;
        let [index_at, index_len, bloom_at, bloom_len, props_at, props_len] = footer_fields(&good);
        assert!(index_at > 4096, "want several data blocks");

        let corrupt_at_open = |e: &Error, what: &str| {
            assert!(
                matches!(e, Error::Corrupt { .. } | Error::ChecksumMismatch { .. }),
                "{what}: {e:?}"
            );
        };
        let d = dir.path();

        // Truncated footer, and a file too short for any footer.
        let e = expect_table_error(d, &table, &good[..good.len() - 10], "truncated footer").await;
        corrupt_at_open(&e, "truncated footer");
        let e = expect_table_error(d, &table, &good[..30], "30-byte table").await;
        corrupt_at_open(&e, "30-byte table");

        // Sections past the end of the file, or whose end overflows u64.
        let fields = [
            (
                "index length past the end",
                [index_at, size, bloom_at, bloom_len, props_at, props_len],
            ),
            (
                "bloom length past the end",
                [index_at, index_len, bloom_at, size, props_at, props_len],
            ),
            (
                "bloom end overflows",
                [
                    index_at,
                    index_len,
                    bloom_at,
                    u64::MAX - bloom_at + 1,
                    props_at,
                    props_len,
                ],
            ),
            (
                "properties offset past the end",
                [
                    index_at,
                    index_len,
                    bloom_at,
                    bloom_len,
                    u64::MAX,
                    props_len,
                ],
            ),
            // One byte short: the index's trailing CRC no longer matches.
            (
                "damaged index length",
                [
                    index_at,
                    index_len - 1,
                    bloom_at,
                    bloom_len,
                    props_at,
                    props_len,
                ],
            ),
            (
                "empty index",
                [index_at, 0, bloom_at, bloom_len, props_at, props_len],
            ),
        ];
        for (what, f) in fields {
            let e = expect_table_error(d, &table, &with_footer(&good, f), what).await;
            corrupt_at_open(&e, what);
        }

        // Index entries with a good checksum but impossible contents: all
        // refused at open, before any block read allocates their length.
        let handle = {
            let index = &good[index_at as usize..(index_at + index_len) as usize];
            first_handle_at(index)
        };
        let edits: [(&str, IndexEdit); 4] = [
            (
                "huge block length in the index",
                Box::new(move |ix: &mut [u8]| {
                    ix[handle + 8..handle + 12].copy_from_slice(&u32::MAX.to_le_bytes())
                }),
            ),
            (
                // offset + len wraps to 0: without a checked add this passed
                // open and made `get` ask for a 4 GiB buffer.
                "block offset + length wrapping past u64::MAX",
                Box::new(move |ix: &mut [u8]| {
                    let len = 0xFFFF_0000u32;
                    let offset = 0u64.wrapping_sub(u64::from(len));
                    ix[handle..handle + 8].copy_from_slice(&offset.to_le_bytes());
                    ix[handle + 8..handle + 12].copy_from_slice(&len.to_le_bytes());
                }),
            ),
            (
                "index count of u32::MAX",
                Box::new(|ix: &mut [u8]| {
                    let n = ix.len();
                    ix[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
                }),
            ),
            (
                "index keys out of order",
                Box::new(|ix: &mut [u8]| ix[..8].copy_from_slice(&u64::MAX.to_le_bytes())),
            ),
        ];
        for (what, edit) in edits {
            let e = expect_table_error(d, &table, &with_index(&good, edit), what).await;
            corrupt_at_open(&e, what);
        }

        // A data block with a good checksum whose first entry claims a key
        // of nearly 4 GiB: every get reading that block fails (Corrupt),
        // keys in other blocks still serve.
        let block_len = {
            let index = &good[index_at as usize..(index_at + index_len) as usize];
            let h = first_handle_at(index);
            assert_eq!(u64_at(index, h), 0, "first block at offset 0");
            u32::from_le_bytes(index[h + 8..h + 12].try_into().expect("4")) as usize
        };
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&(u32::MAX - 3).to_le_bytes());
        let crc = crc32c::crc32c(&bad[..block_len - 4]);
        bad[block_len - 4..block_len].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&table, &bad).expect("write");
        let e = Engine::open(d, options())
            .await
            .expect("open: only a data block is bad");
        // Keys past the first block still read.
        assert_eq!(
            value_of(e.get(&key(KEYS - 1)).await.expect("a key in a later block")),
            Some(vec![b'v'; 100])
        );
        let mut errors = 0;
        for i in 0..KEYS {
            match e.get(&key(i)).await {
                Ok(_) => {}
                Err(Error::Corrupt { path, .. }) => {
                    assert_eq!(path, table);
                    errors += 1;
                }
                Err(other) => panic!("key {i}: {other:?}"),
            }
        }
        assert!(errors > 0, "the damaged block was never read");
        e.close().await.expect("close");

        // The good table still opens and serves everything.
        std::fs::write(&table, &good).expect("restore");
        let e = Engine::open(d, options()).await.expect("open restored");
        for i in 0..KEYS {
            assert!(value_of(e.get(&key(i)).await.expect("get")).is_some());
        }
        e.close().await.expect("close");
    });
}

/// Every cut of the first table, and a flipped bit in each of its
/// metadata sections and the footer: an error, never a panic.
#[test]
fn truncated_and_flipped_sstables_are_errors() {
    common::run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = one_table(dir.path()).await;
        let good = std::fs::read(&table).expect("read table");
        let [index_at, ..] = footer_fields(&good);
        let d = dir.path();
        for cut in (0..good.len()).step_by(509).chain([good.len() - 1]) {
            expect_table_error(d, &table, &good[..cut], &format!("cut at {cut}")).await;
        }
        for at in (index_at as usize..good.len()).step_by(37) {
            if good[at..].iter().all(|&b| b == 0) {
                continue;
            }
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            // A flip in the zero padding between properties and footer is
            // covered by no checksum and changes nothing read: `open` may
            // succeed. Either way, no panic.
            std::fs::write(&table, &bad).expect("write");
            if let Ok(e) = Engine::open(d, options()).await {
                for i in 0..KEYS {
                    let _ = e.get(&key(i)).await;
                }
                e.close().await.expect("close");
            }
        }
    });
}

#[test]
fn a_manifest_with_a_good_checksum_but_short_body_is_corrupt() {
    common::run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        one_table(dir.path()).await;
        let path = dir.path().join("MANIFEST");
        let good = std::fs::read(&path).expect("read manifest");
        // 36 body bytes plus a matching CRC: decoding used to index the
        // table count past the end of the body and panic.
        for body_len in [0, 8, 12, 36, 37, 39, 40, 41, good.len() - 5] {
            let mut bad = good[..body_len].to_vec();
            let crc = crc32c::crc32c(&bad);
            bad.extend_from_slice(&crc.to_le_bytes());
            std::fs::write(&path, &bad).expect("write");
            match Engine::open(dir.path(), options()).await {
                Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
                Err(other) => panic!("body of {body_len}: {other:?}"),
                Ok(_) => panic!("body of {body_len} accepted"),
            }
        }
    });
}

/// SplitMix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Batch headers are found by scanning the segment for their magic.
const BATCH_MAGIC: [u8; 4] = 0xB47C_C0DEu32.to_le_bytes();

fn batch_starts(seg: &[u8]) -> Vec<usize> {
    (0..seg.len().saturating_sub(32))
        .step_by(512)
        .filter(|&at| seg[at..at + 4] == BATCH_MAGIC)
        .collect()
}

/// Rewrites the batch header at `at` with its CRC fixed up.
fn reseal_batch(seg: &mut [u8], at: usize) {
    let crc = crc32c::crc32c(&seg[at..at + 28]);
    seg[at + 28..at + 32].copy_from_slice(&crc.to_le_bytes());
}

/// Random damage to commit-log segments (resealed batch headers with
/// hostile lengths, flipped bytes, cuts, garbage): `open` succeeds or
/// fails with a typed error, and what it opens serves reads and writes.
#[test]
fn damaged_log_segments_never_panic_recovery() {
    let seed = common::seed::seed("damaged_log_segments_never_panic_recovery");
    common::run(move || async move {
        let src = tempfile::tempdir().expect("tempdir");
        let e = Engine::open(src.path(), options()).await.expect("open");
        for i in 0..60 {
            e.put(&key(i), &vec![b'l'; 50 + i * 7], &WriteOptions::default())
                .await
                .expect("put");
        }
        // A crash: no close, so the log is what recovery reads.
        drop(e);
        let seg_path = files_with(src.path(), "log-").pop().expect("a segment");
        let name = seg_path.file_name().expect("name").to_owned();
        let good = std::fs::read(&seg_path).expect("read segment");
        let end = good.iter().rposition(|&b| b != 0).expect("written") + 1;
        let starts = batch_starts(&good);
        assert!(starts.len() > 10, "{} batches", starts.len());
        let mut rng = Rng(seed);
        for round in 0..80 {
            let mut seg = good.clone();
            let what = match rng.below(7) {
                0 => {
                    let at = starts[rng.below(starts.len())];
                    let len = [u32::MAX, u32::MAX - 31, 1 << 30, rng.next() as u32][rng.below(4)];
                    seg[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
                    reseal_batch(&mut seg, at);
                    format!("batch at {at} claims {len} bytes")
                }
                1 => {
                    let at = starts[rng.below(starts.len())];
                    // A record length inside the batch, batch CRC intact
                    // (records carry their own CRC).
                    let len = [u32::MAX, rng.next() as u32][rng.below(2)];
                    seg[at + 32..at + 36].copy_from_slice(&len.to_le_bytes());
                    format!("record at {} claims {len} bytes", at + 32)
                }
                2 => {
                    let at = rng.below(end);
                    seg[at] ^= 1 << rng.below(8);
                    format!("bit flip at {at}")
                }
                3 => {
                    let cut = rng.below(end + 1);
                    seg.truncate(cut);
                    format!("cut at {cut}")
                }
                4 => {
                    let at = rng.below(end);
                    let n = rng.below(2000).min(seg.len() - at);
                    for b in &mut seg[at..at + n] {
                        *b = rng.next() as u8;
                    }
                    format!("{n} random bytes at {at}")
                }
                5 => {
                    // The first record's payload replaced by random bytes
                    // under a matching record CRC: the record decoder, not
                    // the checksum, meets them.
                    let at = starts[rng.below(starts.len())] + 32;
                    let len = u32::from_le_bytes(seg[at..at + 4].try_into().expect("4")) as usize;
                    let keep = rng.below(len.min(40));
                    for b in &mut seg[at + 8 + keep..at + 8 + len] {
                        *b = rng.next() as u8;
                    }
                    let crc = crc32c::crc32c(&seg[at + 8..at + 8 + len]);
                    seg[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
                    format!("record at {at}: random payload after {keep} bytes, CRC fixed")
                }
                _ => {
                    // A stale or repeated sequence number, resealed.
                    let at = starts[rng.below(starts.len())];
                    let seq = [0u64, 1, u64::MAX, rng.next()][rng.below(4)];
                    seg[at + 4..at + 12].copy_from_slice(&seq.to_le_bytes());
                    reseal_batch(&mut seg, at);
                    format!("batch at {at} with sequence {seq}")
                }
            };
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join(&name), &seg).expect("write segment");
            match Engine::open(dir.path(), options()).await {
                Err(e) => assert!(
                    matches!(e, Error::Corrupt { .. } | Error::ChecksumMismatch { .. }),
                    "seed {seed} round {round} ({what}): {e:?}"
                ),
                Ok(e) => {
                    for i in 0..60 {
                        e.get(&key(i)).await.unwrap_or_else(|err| {
                            panic!("seed {seed} round {round} ({what}): get: {err}")
                        });
                    }
                    e.put(b"after", b"x", &WriteOptions::default())
                        .await
                        .unwrap_or_else(|err| panic!("seed {seed} round {round} ({what}): {err}"));
                    e.close().await.expect("close");
                }
            }
        }
    });
}

/// Options with a commit-log batch far smaller than a value.
fn small_batches(sync_mode: SyncMode) -> Options {
    Options {
        sync_mode,
        max_value_bytes: 64 * 1024,
        commit_batch_bytes_max: 8 * 1024,
        segment_bytes: 128 * 1024,
        // A set larger than a batch, within a segment.
        max_set_bytes: Some(110 * 1024),
        ..options()
    }
}

#[test]
fn a_record_larger_than_a_batch_gets_its_own_and_survives_a_crash() {
    for mode in [
        SyncMode::Batch,
        SyncMode::Periodic {
            period: std::time::Duration::from_millis(5),
        },
    ] {
        common::run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let opts = small_batches(mode);
            let e = Engine::open(dir.path(), opts.clone()).await.expect("open");
            let big: Vec<u8> = (0..40 * 1024).map(|i| (i % 251) as u8).collect();
            let biggest = vec![b'B'; opts.max_value_bytes];
            // Small writes around the big ones, in flight at once, so they
            // share batches with each other but not with the big records.
            let w = WriteOptions::default();
            let puts = (0..40).map(|i| {
                let (e, w) = (e.clone(), w.clone());
                let value = match i {
                    10 => big.clone(),
                    25 => biggest.clone(),
                    _ => vec![b's'; 200],
                };
                async move { e.put(&key(i), &value, &w).await }
            });
            for r in futures_join_all(puts).await {
                r.expect("put");
            }
            let stats = e.stats().log;
            assert!(stats.records >= 40 && stats.batches < 40, "{stats:?}");
            drop(e);
            let e = Engine::open(dir.path(), opts).await.expect("replay");
            assert_eq!(value_of(e.get(&key(10)).await.expect("get")), Some(big));
            assert_eq!(value_of(e.get(&key(25)).await.expect("get")), Some(biggest));
            for i in (0..40).filter(|&i| i != 10 && i != 25) {
                assert_eq!(
                    value_of(e.get(&key(i)).await.expect("get")),
                    Some(vec![b's'; 200])
                );
            }
            e.close().await.expect("close");
        });
    }
}

/// Runs the futures concurrently on the current executor and returns their
/// outputs in order.
async fn futures_join_all<F: std::future::Future + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: 'static,
{
    let tasks: Vec<_> = fs.map(glommio::spawn_local).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await);
    }
    out
}

#[test]
fn a_record_larger_than_a_segment_is_refused_and_the_engine_serves_on() {
    common::run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = Options {
            conflict: ConflictMode::Siblings,
            ..small_batches(SyncMode::Batch)
        };
        let e = Engine::open(dir.path(), opts.clone()).await.expect("open");
        e.put(b"before", b"1", &WriteOptions::default())
            .await
            .expect("put");
        // Three siblings each within max_value_bytes, together larger than
        // a 128 KiB segment: what replication can hand `apply`.
        let sibling = |replica: u64, bytes: usize| Version {
            dot: Dot {
                replica,
                counter: 100,
            },
            timestamp: 100,
            expires_at_ms: 0,
            value: Some(vec![replica as u8; bytes]),
        };
        let max = opts.max_value_bytes;
        let set = SiblingSet::from_parts(
            vec![sibling(1, max), sibling(2, max), sibling(3, max)],
            VersionVector::new().into(),
            ConflictMode::Siblings,
        );
        // The set bound refuses it first; the log's own bound stands
        // behind it.
        match e.apply(b"huge", &set).await {
            Err(Error::RecordTooLarge { len, max }) => {
                assert!(
                    len > max && (max as u64) < opts.segment_bytes,
                    "{len} {max}"
                )
            }
            Err(Error::SetTooLarge { bytes, max }) => assert!(bytes > max, "{bytes} {max}"),
            other => panic!("expected SetTooLarge or RecordTooLarge, got {other:?}"),
        }
        // Two siblings fit a segment, not a batch: logged in a batch of
        // their own.
        let two = SiblingSet::from_parts(
            vec![sibling(4, 50 * 1024), sibling(5, 50 * 1024)],
            VersionVector::new().into(),
            ConflictMode::Siblings,
        );
        e.apply(b"two", &two).await.expect("apply two siblings");
        e.put(b"after", b"2", &WriteOptions::default())
            .await
            .expect("put after");
        assert!(e.get(b"huge").await.expect("get").is_none());
        drop(e);
        let e = Engine::open(dir.path(), opts).await.expect("replay");
        assert_eq!(
            value_of(e.get(b"before").await.expect("get")),
            Some(b"1".to_vec())
        );
        assert_eq!(
            value_of(e.get(b"after").await.expect("get")),
            Some(b"2".to_vec())
        );
        assert_eq!(
            e.get(b"two")
                .await
                .expect("get")
                .expect("two")
                .versions()
                .len(),
            2
        );
        assert!(e.get(b"huge").await.expect("get").is_none());
        e.close().await.expect("close");
    });
}
