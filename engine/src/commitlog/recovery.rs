//! Reading segments back after a restart (the scan is sans-io; `replay`
//! drives it over the files).

use std::path::{Path, PathBuf};

use super::format::{self, BatchAt, BATCH_HEADER_BYTES};
use super::segment::{list_segments, segment_path};
use crate::error::{Error, Result};
use crate::io;

/// The valid prefix of one segment.
#[derive(Debug, Default)]
pub(crate) struct SegmentScan<'a> {
    /// Record payloads of every valid batch, in order.
    pub(crate) records: Vec<&'a [u8]>,
    /// Sequence number of the last valid batch (or the one passed in).
    pub(crate) last_seq: u64,
    /// The first bad batch: offset, reason, and whether a later valid batch
    /// declares it durable (which makes it damage, not a torn tail).
    pub(crate) bad: Option<(u64, String, bool)>,
}

fn align_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

/// Scans the batches of a segment whose header occupies the first `align`
/// bytes. `prev_seq` is the last sequence seen in earlier segments; stale
/// batches (sequence not above the previous one) end the scan like zeros.
pub(crate) fn scan_segment(bytes: &[u8], align: usize, prev_seq: u64) -> SegmentScan<'_> {
    let mut scan = SegmentScan {
        last_seq: prev_seq,
        ..SegmentScan::default()
    };
    let mut pos = align;
    // Each turn advances by at least one alignment unit.
    while pos < bytes.len() {
        let problem = match format::decode_batch_header(&bytes[pos..]) {
            BatchAt::End => return scan,
            BatchAt::Bad(reason) => reason,
            BatchAt::Header(h) if h.seq <= scan.last_seq && scan.last_seq > 0 => {
                // Left over from before a truncation: not part of this log.
                let _ = h;
                return scan;
            }
            BatchAt::Header(h) => {
                let start = pos + BATCH_HEADER_BYTES;
                match start
                    .checked_add(h.len as usize)
                    .and_then(|end| bytes.get(start..end))
                    .ok_or_else(|| {
                        format!("batch of {} bytes runs past the end of the file", h.len)
                    })
                    .and_then(format::decode_records)
                {
                    Ok(records) => {
                        scan.records.extend(records);
                        scan.last_seq = h.seq;
                        pos = align_up(start + h.len as usize, align);
                        continue;
                    }
                    Err(reason) => reason,
                }
            }
        };
        let durable = later_batch_declares_durable(bytes, align, pos, scan.last_seq);
        scan.bad = Some((pos as u64, problem, durable));
        return scan;
    }
    scan
}

/// True when some valid batch after `bad_at` (with a higher sequence) was
/// written after `bad_at` had been synced.
fn later_batch_declares_durable(bytes: &[u8], align: usize, bad_at: usize, last_seq: u64) -> bool {
    let mut pos = bad_at + align;
    while pos + BATCH_HEADER_BYTES <= bytes.len() {
        if let BatchAt::Header(h) = format::decode_batch_header(&bytes[pos..]) {
            if h.seq > last_seq && h.durable_before > bad_at as u64 {
                return true;
            }
        }
        pos += align;
    }
    false
}

/// What replay found.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReplayStats {
    /// Segments read.
    pub(crate) segments: usize,
    /// Records replayed.
    pub(crate) records: u64,
    /// Payload bytes replayed.
    pub(crate) bytes: u64,
    /// Where a torn tail was cut off, if one was.
    pub(crate) truncated_tail: Option<(PathBuf, u64)>,
    /// Highest segment id found (0 when none).
    pub(crate) max_segment: u64,
    /// Last batch sequence number seen.
    pub(crate) last_seq: u64,
}

/// Replays every segment with id >= `floor` in order, deleting older ones.
pub(crate) async fn replay(
    dir: &Path,
    floor: u64,
    replay: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<ReplayStats> {
    let mut stats = ReplayStats::default();
    let segments = list_segments(dir)?;
    let live: Vec<u64> = segments.iter().copied().filter(|&id| id >= floor).collect();
    for &id in segments.iter().filter(|&&id| id < floor) {
        io::remove_file(dir, &segment_path(dir, id)).await?;
    }
    for (i, &id) in live.iter().enumerate() {
        let is_last = i + 1 == live.len();
        let path = segment_path(dir, id);
        let file = io::open_read(&path).await?;
        let align = file.alignment() as usize;
        let bytes = io::read_all(&file, &path).await?;
        io::close(file, &path).await?;
        stats.segments += 1;
        stats.max_segment = stats.max_segment.max(id);
        match format::decode_segment_header(&bytes) {
            Ok(found) if found == id => {}
            Ok(found) => {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!("segment header names id {found}"),
                ));
            }
            // A crash right after creating the last segment can leave its
            // header unwritten: nothing in it was ever acknowledged.
            Err(_) if is_last && bytes.iter().all(|&b| b == 0) => continue,
            Err(reason) => return Err(Error::corrupt(&path, 0, reason)),
        }
        let scan = scan_segment(&bytes, align.max(24), stats.last_seq);
        for record in &scan.records {
            replay(id, record)?;
            stats.records += 1;
            stats.bytes += record.len() as u64;
        }
        stats.last_seq = scan.last_seq;
        if let Some((offset, reason, durable)) = scan.bad {
            if !is_last || durable {
                let why = if durable {
                    "data that was already synced is damaged"
                } else {
                    "damage before the last segment"
                };
                return Err(Error::corrupt(
                    &path,
                    offset,
                    format!("commit log batch: {reason} ({why})"),
                ));
            }
            // Cut the torn bytes off for good: once newer segments exist this
            // one is no longer the last, and a torn tail there would read as
            // damage on the next start.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.set_len(offset)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            stats.truncated_tail = Some((path.clone(), offset));
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use format::{encode_batch_header, push_record, BatchHeader};

    const ALIGN: usize = 512;

    fn segment(batches: &[(u64, Vec<&[u8]>, u64)]) -> (Vec<u8>, Vec<usize>) {
        let mut out = format::encode_segment_header(1);
        out.resize(ALIGN, 0);
        let mut starts = Vec::new();
        for (seq, records, durable_before) in batches {
            let mut body = Vec::new();
            for r in records {
                push_record(&mut body, r);
            }
            starts.push(out.len());
            out.extend_from_slice(&encode_batch_header(BatchHeader {
                seq: *seq,
                len: body.len() as u32,
                durable_before: *durable_before,
            }));
            out.extend_from_slice(&body);
            out.resize(align_up(out.len(), ALIGN), 0);
        }
        (out, starts)
    }

    #[test]
    fn reads_all_batches_until_zeros() {
        let (mut bytes, _) = segment(&[(1, vec![b"a", b"b"], 0), (2, vec![b"c"], 1024)]);
        bytes.resize(bytes.len() + 4096, 0);
        let scan = scan_segment(&bytes, ALIGN, 0);
        assert_eq!(scan.records, vec![&b"a"[..], b"b", b"c"]);
        assert!(scan.bad.is_none());
        assert_eq!(scan.last_seq, 2);
    }

    #[test]
    fn torn_last_batch_is_a_tail_but_synced_damage_is_not() {
        let (bytes, starts) = segment(&[
            (1, vec![b"a"], 0),
            (2, vec![b"bbbb"], 0),
            (3, vec![b"c"], 0),
        ]);
        // Damage batch 3 (nothing after it): a torn tail.
        let mut torn = bytes.clone();
        torn[starts[2] + BATCH_HEADER_BYTES + 8] ^= 1;
        let scan = scan_segment(&torn, ALIGN, 0);
        assert_eq!(scan.records.len(), 2);
        assert!(matches!(scan.bad, Some((o, _, false)) if o == starts[2] as u64));
        // Damage batch 2 while batch 3 says batch 2 was synced: an error.
        let (bytes, starts) = segment(&[
            (1, vec![b"a"], 0),
            (2, vec![b"bbbb"], 0),
            (3, vec![b"c"], 1536),
        ]);
        let mut damaged = bytes;
        damaged[starts[1] + BATCH_HEADER_BYTES + 8] ^= 1;
        let scan = scan_segment(&damaged, ALIGN, 0);
        assert!(matches!(scan.bad, Some((_, _, true))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Batches whose headers carry a valid CRC but any length, sequence
        /// and durable_before, followed by garbage: the scan returns what
        /// it can and never panics or reads past the bytes.
        #[test]
        fn hostile_batch_headers_never_panic_the_scan(
            batches in proptest::collection::vec(
                (proptest::prelude::any::<u64>(), proptest::prelude::any::<u32>(), proptest::prelude::any::<u64>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700)),
                0..6,
            ),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            prev_seq in 0u64..4,
        ) {
            let mut bytes = format::encode_segment_header(1);
            bytes.resize(ALIGN, 0);
            for (seq, len, durable_before, body) in &batches {
                bytes.extend_from_slice(&encode_batch_header(BatchHeader {
                    seq: *seq,
                    len: *len,
                    durable_before: *durable_before,
                }));
                bytes.extend_from_slice(body);
                bytes.resize(align_up(bytes.len(), ALIGN), 0);
            }
            bytes.extend_from_slice(&tail);
            let scan = scan_segment(&bytes, ALIGN, prev_seq);
            let total: usize = scan.records.iter().map(|r| r.len()).sum();
            proptest::prop_assert!(total <= bytes.len());
            let _ = format::decode_segment_header(&bytes[..bytes.len().min(30)]);
        }
    }

    #[test]
    fn stale_batches_after_a_truncation_end_the_scan() {
        let (bytes, _) = segment(&[(5, vec![b"a"], 0), (3, vec![b"old"], 0)]);
        let scan = scan_segment(&bytes, ALIGN, 0);
        assert_eq!(scan.records, vec![&b"a"[..]]);
        assert!(scan.bad.is_none());
    }
}
