//! Commit-log bytes on disk (sans-io): segment header, batch header, records.
//!
//! ```text
//! segment file log-<id:016x>.seg
//!   header block (one alignment unit, zero padded):
//!     [8] magic "CKVLOG01"   u32 format version = 1   u64 segment id   u32 CRC-32C of the 20 bytes before
//!   batches, each starting at an aligned offset (the file's DMA alignment, 512 or 4096):
//!     batch header (32 bytes):
//!       u32 magic 0xB47C_C0DE   u64 sequence (grows by one per batch across the whole log)
//!       u32 payload length P    u64 durable_before (offset in this segment up to which
//!       everything was fdatasync'd when the batch was written)
//!       u32 CRC-32C of the 28 bytes before   u32 reserved = 0
//!     P bytes of records: u32 length L, u32 CRC-32C of the payload, L bytes payload
//!     zero padding to the next aligned offset
//!   an all-zero batch header marks the end of the written part
//! ```
//! Recovery reads batches in order. A bad batch in the last segment is a torn
//! tail (truncated) unless a later valid batch says, through its
//! durable_before, that the bad one had been synced: that is damage to
//! acknowledged data and an error, as is any bad batch in an earlier segment.

/// Magic at the start of every segment.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"CKVLOG01";
/// Segment format version.
pub(crate) const SEGMENT_VERSION: u32 = 1;
/// Magic of a batch header.
pub(crate) const BATCH_MAGIC: u32 = 0xB47C_C0DE;
/// Size of a batch header.
pub(crate) const BATCH_HEADER_BYTES: usize = 32;
/// Size of a record's framing.
pub(crate) const RECORD_HEADER_BYTES: usize = 8;

// The two readers index directly: every caller below has checked that the
// field lies inside `b` (segment header >= 24 bytes, batch header sliced to
// 32, record header >= 8 bytes left), so hostile bytes cannot reach them
// out of bounds.
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Encodes a segment header (24 bytes; the writer pads it).
pub(crate) fn encode_segment_header(id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(SEGMENT_MAGIC);
    out.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a segment header; returns the segment id or what is wrong.
pub(crate) fn decode_segment_header(b: &[u8]) -> Result<u64, String> {
    if b.len() < 24 {
        return Err("segment shorter than its header".into());
    }
    if &b[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let got = crc32c::crc32c(&b[..20]);
    let expected = u32_at(b, 20);
    if got != expected {
        return Err(format!(
            "segment header checksum {got:#010x} != stored {expected:#010x}"
        ));
    }
    let version = u32_at(b, 8);
    if version != SEGMENT_VERSION {
        return Err(format!("unsupported commit log version {version}"));
    }
    Ok(u64_at(b, 12))
}

/// Appends one record's framing and payload to a batch body.
#[cfg(test)]
pub(crate) fn push_record(body: &mut Vec<u8>, payload: &[u8]) {
    push_record_with(body, payload.len(), |out| out.extend_from_slice(payload));
}

/// Appends one record whose payload `encode` writes straight into the
/// batch body (no buffer of its own, no second copy); `payload_len` is
/// what `encode` must append, checked before the framing is finished.
pub(crate) fn push_record_with(
    body: &mut Vec<u8>,
    payload_len: usize,
    encode: impl FnOnce(&mut Vec<u8>),
) {
    // `CommitLog::submit_with` refuses larger records (RecordTooLarge)
    // before they get here; this and the length check below guard the
    // encoder, not bytes read from disk.
    let len = u32::try_from(payload_len).expect("record payload under 4 GiB");
    let start = body.len();
    body.reserve(8 + payload_len);
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(&[0; 4]);
    encode(body);
    assert_eq!(
        body.len() - start - 8,
        payload_len,
        "a record encoded to another length than it announced"
    );
    let crc = crc32c::crc32c(&body[start + 8..]);
    body[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A parsed batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) seq: u64,
    pub(crate) len: u32,
    pub(crate) durable_before: u64,
}

/// Encodes a batch header.
pub(crate) fn encode_batch_header(h: BatchHeader) -> [u8; BATCH_HEADER_BYTES] {
    let mut out = [0u8; BATCH_HEADER_BYTES];
    out[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    out[4..12].copy_from_slice(&h.seq.to_le_bytes());
    out[12..16].copy_from_slice(&h.len.to_le_bytes());
    out[16..24].copy_from_slice(&h.durable_before.to_le_bytes());
    let crc = crc32c::crc32c(&out[..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

/// What is at a batch position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BatchAt {
    /// Zeros: the end of the written part of the segment.
    End,
    /// A header that is valid on its own.
    Header(BatchHeader),
    /// Bytes that are not a valid header.
    Bad(String),
}

/// Parses the batch header at the start of `b`.
pub(crate) fn decode_batch_header(b: &[u8]) -> BatchAt {
    if b.len() < BATCH_HEADER_BYTES {
        return if b.iter().all(|&x| x == 0) {
            BatchAt::End
        } else {
            BatchAt::Bad("batch header cut short".into())
        };
    }
    let b = &b[..BATCH_HEADER_BYTES];
    if b.iter().all(|&x| x == 0) {
        return BatchAt::End;
    }
    if u32_at(b, 0) != BATCH_MAGIC {
        return BatchAt::Bad("bad batch magic".into());
    }
    let got = crc32c::crc32c(&b[..28]);
    let expected = u32_at(b, 28);
    if got != expected {
        return BatchAt::Bad(format!(
            "batch header checksum {got:#010x} != stored {expected:#010x}"
        ));
    }
    BatchAt::Header(BatchHeader {
        seq: u64_at(b, 4),
        len: u32_at(b, 12),
        durable_before: u64_at(b, 16),
    })
}

/// Splits a batch body into record payloads, checking every record.
pub(crate) fn decode_records(body: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        if body.len() - at < RECORD_HEADER_BYTES {
            return Err(format!("record header cut short at body offset {at}"));
        }
        let len = u32_at(body, at) as usize;
        let expected = u32_at(body, at + 4);
        let start = at + RECORD_HEADER_BYTES;
        let Some(payload) = start.checked_add(len).and_then(|end| body.get(start..end)) else {
            return Err(format!(
                "record at body offset {at} claims {len} bytes past the batch end"
            ));
        };
        let got = crc32c::crc32c(payload);
        if got != expected {
            return Err(format!(
                "record checksum {got:#010x} != stored {expected:#010x} at body offset {at}"
            ));
        }
        out.push(payload);
        at = start + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn records_round_trip(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let mut body = Vec::new();
            for p in &payloads {
                push_record(&mut body, p);
            }
            let got = decode_records(&body).expect("valid");
            prop_assert_eq!(got, payloads.iter().map(|p| p.as_slice()).collect::<Vec<_>>());
        }

        #[test]
        fn damaged_batches_are_errors_never_panics(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..50), 1..5),
            flip in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut body = Vec::new();
            let mut boundaries = vec![0];
            for p in &payloads {
                push_record(&mut body, p);
                boundaries.push(body.len());
            }
            let mut flipped = body.clone();
            let i = flip.index(flipped.len());
            flipped[i] ^= 0x40;
            prop_assert!(decode_records(&flipped).is_err() || flipped == body);
            let c = cut.index(body.len());
            // A cut between records is a valid shorter batch; anywhere else it is an error.
            prop_assert!(boundaries.contains(&c) || decode_records(&body[..c]).is_err());
        }

        #[test]
        fn batch_headers_round_trip(seq in any::<u64>(), len in any::<u32>(), durable in any::<u64>()) {
            let h = BatchHeader { seq, len, durable_before: durable };
            prop_assert_eq!(decode_batch_header(&encode_batch_header(h)), BatchAt::Header(h));
        }
    }

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = encode_segment_header(42);
        assert_eq!(decode_segment_header(&h), Ok(42));
        let mut bad = h.clone();
        bad[13] ^= 1;
        assert!(decode_segment_header(&bad).is_err());
        assert_eq!(decode_batch_header(&[0u8; 40]), BatchAt::End);
    }
}
