//! Fuzzing the engine's `pub(crate)` decoders of disk bytes (issue 20):
//! commit-log segment headers, batch headers and record runs; SSTable
//! footers, block indexes, bloom filters, properties and data blocks
//! (verify, scan, point lookup); the manifest. Guarantees, for large
//! structured random inputs (mutants of the encoders' own output, most
//! with their checksum resealed so the structure parser meets the damage,
//! and random bytes):
//! - every call returns `Ok` or a typed error, never panics or hangs;
//! - what decodes re-encodes to the same bytes (the formats are
//!   canonical), and a decoded bloom filter answers probes in bounds;
//! - the peak allocation of one decode stays within a few times its input.
//!
//! The file-level paths (a damaged table or segment under `Engine::open`)
//! are fuzzed in `tests/fuzz_files.rs`. Budget, seed and allocation bound:
//! see the harness, `tests/common/fuzz.rs` (`COREKV_FUZZ_SECS`,
//! `COREKV_SEED`).

#[path = "../tests/common/fuzz.rs"]
mod fuzz;
#[path = "../tests/common/seed.rs"]
mod seed;

use std::path::Path;

use fuzz::{fuzz, Rng, Target};

use crate::commitlog::format::{
    decode_batch_header, decode_records, decode_segment_header, encode_batch_header,
    encode_segment_header, push_record, BatchAt, BatchHeader,
};
use crate::manifest::Manifest;
use crate::table::block::{entries, find, push_entry, seal, split_verified, verify};
use crate::table::bloom::{hashes, Bloom};
use crate::table::footer::Footer;
use crate::table::index::{decode_index, encode_index, BlockHandle, Properties};

#[global_allocator]
static ALLOC: fuzz::CountingAlloc = fuzz::CountingAlloc;

/// Recomputes a CRC-32C stored at `at..at + 4` over `from..at`.
fn reseal_at(b: &mut [u8], from: usize, at: usize) {
    if b.len() >= at + 4 && from <= at {
        let crc = crc32c::crc32c(&b[from..at]);
        b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Recomputes a trailing CRC-32C over everything before it.
fn reseal_tail(b: &mut [u8]) {
    if b.len() >= 4 {
        reseal_at(b, 0, b.len() - 4);
    }
}

/// Most mutants are resealed (chosen from the input, so a failing input
/// replays alone; the resealed bytes are what is decoded and reported).
fn resealed(input: &[u8], reseal: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut b = input.to_vec();
    if fuzz::pick(input, 5) != 0 {
        reseal(&mut b);
    }
    b
}

#[test]
fn segment_header_decoder() {
    let seed = seed::seed("segment_header_decoder");
    let mut rng = Rng(seed);
    let corpus = (0..8)
        .map(|i| {
            let mut h = encode_segment_header(if i == 0 { u64::MAX } else { rng.next() });
            h.resize(if i % 2 == 0 { 512 } else { 24 }, 0);
            h
        })
        .collect();
    fuzz(
        seed,
        &Target::new("commitlog decode_segment_header", corpus),
        |input| {
            let b = resealed(input, |b| reseal_at(b, 0, 20));
            if let Ok(id) = fuzz::measure(|| decode_segment_header(&b)) {
                assert_eq!(encode_segment_header(id)[..], b[..24]);
            }
        },
    );
}

#[test]
fn batch_header_decoder() {
    let seed = seed::seed("batch_header_decoder");
    let mut rng = Rng(seed);
    let corpus = (0..8)
        .map(|_| {
            let h = BatchHeader {
                seq: rng.next(),
                len: rng.next() as u32,
                durable_before: rng.next(),
            };
            encode_batch_header(h).to_vec()
        })
        .chain([vec![0; 32], vec![0; 7]])
        .collect();
    fuzz(
        seed,
        &Target::new("commitlog decode_batch_header", corpus),
        |input| {
            let b = resealed(input, |b| reseal_at(b, 0, 28));
            match fuzz::measure(|| decode_batch_header(&b)) {
                // The reserved u32 (24..28) is not read, only checksummed.
                BatchAt::Header(h) => assert_eq!(encode_batch_header(h)[..24], b[..24]),
                BatchAt::End => assert!(b.iter().take(32).all(|&x| x == 0)),
                BatchAt::Bad(_) => {}
            }
        },
    );
}

#[test]
fn record_decoder() {
    let seed = seed::seed("record_decoder");
    let mut rng = Rng(seed);
    let corpus = (0..20)
        .map(|i| {
            let mut body = Vec::new();
            for _ in 0..rng.len(30) {
                let n = if i == 0 { 20_000 } else { rng.len(200) };
                push_record(&mut body, &rng.bytes(n));
            }
            body
        })
        .collect();
    let mut target = Target::new("commitlog decode_records", corpus);
    // Each record of 8 bytes (an empty payload) yields a 16-byte slice,
    // and the vector grows by doubling: up to 4 bytes per input byte.
    target.factor = 5;
    fuzz(seed, &target, |input| {
        // Reseal the first record's payload CRC, if its length fits.
        let b = resealed(input, |b| {
            if b.len() >= 8 {
                let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
                if len <= b.len() - 8 {
                    let crc = crc32c::crc32c(&b[8..8 + len]);
                    b[4..8].copy_from_slice(&crc.to_le_bytes());
                }
            }
        });
        if let Ok(records) = fuzz::measure(|| decode_records(&b)) {
            let mut again = Vec::new();
            for r in &records {
                push_record(&mut again, r);
            }
            assert_eq!(again, b);
        }
    });
}

#[test]
fn footer_decoder() {
    let seed = seed::seed("footer_decoder");
    let mut rng = Rng(seed);
    let corpus = (0..8)
        .map(|_| {
            let mut f = || (rng.next() >> rng.below(64), rng.next() >> rng.below(64));
            Footer {
                index: f(),
                bloom: f(),
                props: f(),
            }
            .encode()
            .to_vec()
        })
        .collect();
    fuzz(
        seed,
        &Target::new("table Footer::decode", corpus),
        |input| {
            let b = resealed(input, |b| reseal_at(b, 0, 60));
            if let Ok(f) = fuzz::measure(|| Footer::decode(&b)) {
                assert_eq!(f.encode()[..], b[..]);
            }
        },
    );
}

fn handles(rng: &mut Rng, n: usize) -> Vec<BlockHandle> {
    (0..n)
        .map(|_| BlockHandle {
            last: (rng.next(), rng.key(40)),
            offset: rng.next() & !4095,
            len: rng.next() as u32,
        })
        .collect()
}

#[test]
fn index_decoder() {
    let seed = seed::seed("index_decoder");
    let mut rng = Rng(seed);
    let corpus = (0..20)
        .map(|i| {
            let n = if i == 0 { 2000 } else { rng.len(40) };
            let mut out = Vec::new();
            encode_index(&handles(&mut rng, n), &mut out);
            out
        })
        .collect();
    let mut target = Target::new("table decode_index", corpus);
    // A handle with an empty key is 24 bytes on disk and 48 in memory.
    target.factor = 5;
    fuzz(seed, &target, |input| {
        let b = resealed(input, reseal_tail);
        if let Ok(h) = fuzz::measure(|| decode_index(&b)) {
            let mut again = Vec::new();
            encode_index(&h, &mut again);
            assert_eq!(again, b);
        }
    });
}

#[test]
fn properties_decoder() {
    let seed = seed::seed("properties_decoder");
    let mut rng = Rng(seed);
    let corpus = (0..10)
        .map(|_| {
            let mut out = Vec::new();
            Properties {
                entries: rng.next(),
                max_expiry_ms: rng.next(),
                data_bytes: rng.next(),
                id: rng.next(),
                min: (rng.next(), rng.key(60)),
                max: (rng.next(), rng.key(60)),
            }
            .encode(&mut out);
            out
        })
        .collect();
    fuzz(
        seed,
        &Target::new("table Properties::decode", corpus),
        |input| {
            let b = resealed(input, reseal_tail);
            // Bytes after the max key are not checked (the CRC covers them),
            // so only a prefix of the input is canonical.
            if let Ok(p) = fuzz::measure(|| Properties::decode(&b)) {
                let mut again = Vec::new();
                p.encode(&mut again);
                assert_eq!(again[..again.len() - 4], b[..again.len() - 4]);
            }
        },
    );
}

#[test]
fn bloom_decoder() {
    let seed = seed::seed("bloom_decoder");
    let mut rng = Rng(seed);
    let corpus = (0..10)
        .map(|i| {
            let keys: Vec<(u64, u64)> = (0..if i == 0 { 5000 } else { rng.len(100) })
                .map(|_| hashes(rng.next(), &rng.key(10)))
                .collect();
            let mut out = Vec::new();
            Bloom::build(&keys, 1 + rng.below(16) as u32).encode(&mut out);
            out
        })
        .collect();
    fuzz(seed, &Target::new("table Bloom::decode", corpus), |input| {
        let b = resealed(input, reseal_tail);
        if let Ok(bloom) = fuzz::measure(|| Bloom::decode(&b)) {
            for i in 0..8u64 {
                let _ = bloom.may_contain(hashes(i, &b[..b.len().min(8)]));
            }
            let mut again = Vec::new();
            bloom.encode(&mut again);
            assert_eq!(again, b);
        }
    });
}

#[test]
fn data_block_decoder() {
    let seed = seed::seed("data_block_decoder");
    let mut rng = Rng(seed);
    let corpus = (0..20)
        .map(|i| {
            let mut rows: Vec<(u64, Vec<u8>, Vec<u8>)> = (0..rng.len(60))
                .map(|_| {
                    let v = if i == 0 { 3000 } else { rng.len(100) };
                    (rng.next(), rng.key(20), rng.bytes(v))
                })
                .collect();
            rows.sort();
            rows.dedup_by(|a, b| (a.0, &a.1) == (b.0, &b.1));
            let mut block = Vec::new();
            for (t, k, v) in &rows {
                push_entry(&mut block, *t, k, v);
            }
            seal(&mut block, rows.len() as u32);
            block
        })
        .collect();
    let mut target = Target::new("table block verify/entries/find", corpus);
    // An empty entry is 16 bytes on disk and a 40-byte EntryRef.
    target.factor = 5;
    fuzz(seed, &target, |input| {
        let b = resealed(input, reseal_tail);
        let verified = fuzz::measure(|| verify(&b));
        if let Ok((body, count)) = verified {
            assert_eq!(split_verified(&b).ok(), Some((body, count)));
            let all = fuzz::measure(|| entries(body, count));
            if let Ok(rows) = all {
                // Every entry is found by a point lookup, unless an equal
                // or smaller key came first (damaged order).
                for e in rows.iter().take(16) {
                    let got = fuzz::measure(|| find(body, count, (e.token, e.key)));
                    assert!(got.is_ok(), "find fails where entries succeeded");
                }
            }
            let probe = (u64::from_le_bytes([0x5a; 8]), &b"probe"[..]);
            let _ = fuzz::measure(|| find(body, count, probe));
        }
    });
}

#[test]
fn manifest_decoder() {
    let seed = seed::seed("manifest_decoder");
    let mut rng = Rng(seed);
    let corpus = (0..10)
        .map(|i| {
            Manifest {
                log_floor: rng.next(),
                next_table_id: rng.next(),
                hlc_high: rng.next(),
                tables: (0..if i == 0 { 3000 } else { rng.len(50) })
                    .map(|_| rng.next())
                    .collect(),
            }
            .encode()
        })
        .collect();
    fuzz(seed, &Target::new("Manifest::decode", corpus), |input| {
        let b = resealed(input, reseal_tail);
        match fuzz::measure(|| Manifest::decode(&b, Path::new("MANIFEST"))) {
            Ok(m) => assert_eq!(m.encode(), b),
            Err(crate::Error::Corrupt { .. } | crate::Error::ChecksumMismatch { .. }) => {}
            Err(other) => panic!("an error that is not about the bytes: {other:?}"),
        }
    });
}
