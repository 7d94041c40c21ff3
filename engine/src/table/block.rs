//! Data blocks: a run of entries plus a count and a checksum (sans-io).

use super::{check_crc, Cursor};

/// One decoded entry, borrowing the block.
pub(crate) struct EntryRef<'a> {
    pub(crate) token: u64,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
}

/// Bytes an entry takes in a block.
pub(crate) fn entry_len(key: &[u8], value: &[u8]) -> usize {
    16 + key.len() + value.len()
}

/// Appends an entry to a block under construction.
pub(crate) fn push_entry(block: &mut Vec<u8>, token: u64, key: &[u8], value: &[u8]) {
    block.extend_from_slice(&token.to_le_bytes());
    block.extend_from_slice(&(key.len() as u32).to_le_bytes());
    block.extend_from_slice(&(value.len() as u32).to_le_bytes());
    block.extend_from_slice(key);
    block.extend_from_slice(value);
}

/// Closes a block: appends the entry count and the CRC-32C.
pub(crate) fn seal(block: &mut Vec<u8>, count: u32) {
    block.extend_from_slice(&count.to_le_bytes());
    let crc = crc32c::crc32c(block);
    block.extend_from_slice(&crc.to_le_bytes());
}

/// Why a block could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BlockError {
    /// Stored and computed checksums differ.
    Checksum { got: u32, expected: u32 },
    /// Checksum fine but the structure is inconsistent (a writer bug).
    Malformed(&'static str),
}

/// Verifies a sealed block and returns its entry bytes and count.
pub(crate) fn verify(block: &[u8]) -> Result<(&[u8], u32), BlockError> {
    let body =
        check_crc(block).map_err(|(got, expected)| BlockError::Checksum { got, expected })?;
    if body.len() < 4 {
        return Err(BlockError::Malformed("block shorter than its trailer"));
    }
    let (entries, count) = body.split_at(body.len() - 4);
    Ok((
        entries,
        u32::from_le_bytes([count[0], count[1], count[2], count[3]]),
    ))
}

/// Splits a block already verified by [`verify`] (e.g. one from the block
/// cache, which holds only verified blocks) into entry bytes and count,
/// without recomputing the checksum.
pub(crate) fn split_verified(block: &[u8]) -> Result<(&[u8], u32), BlockError> {
    if block.len() < 8 {
        return Err(BlockError::Malformed("block shorter than its trailer"));
    }
    let body = &block[..block.len() - 4];
    let (entries, count) = body.split_at(body.len() - 4);
    Ok((
        entries,
        u32::from_le_bytes([count[0], count[1], count[2], count[3]]),
    ))
}

/// Finds `target` in a verified block's entries by scanning in order,
/// without allocating; entries are sorted, so the scan stops at the first
/// larger key.
pub(crate) fn find<'a>(
    entries: &'a [u8],
    count: u32,
    target: (u64, &[u8]),
) -> Result<Option<&'a [u8]>, BlockError> {
    let mut c = Cursor::new(entries);
    for _ in 0..count {
        let (Some(token), Some(klen), Some(vlen)) = (c.u64(), c.u32(), c.u32()) else {
            return Err(BlockError::Malformed("entry header past block end"));
        };
        let (Some(key), Some(value)) = (c.take(klen as usize), c.take(vlen as usize)) else {
            return Err(BlockError::Malformed("entry body past block end"));
        };
        match (token, key).cmp(&target) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => return Ok(Some(value)),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

/// Decodes the entries of a verified block.
pub(crate) fn entries(entries: &[u8], count: u32) -> Result<Vec<EntryRef<'_>>, BlockError> {
    let mut c = Cursor::new(entries);
    // A damaged count must not drive a huge allocation.
    let mut out = Vec::with_capacity((count as usize).min(entries.len() / 16));
    for _ in 0..count {
        let (Some(token), Some(klen), Some(vlen)) = (c.u64(), c.u32(), c.u32()) else {
            return Err(BlockError::Malformed("entry header past block end"));
        };
        let (Some(key), Some(value)) = (c.take(klen as usize), c.take(vlen as usize)) else {
            return Err(BlockError::Malformed("entry body past block end"));
        };
        out.push(EntryRef { token, key, value });
    }
    if c.remaining() != 0 {
        return Err(BlockError::Malformed("bytes after the last entry"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(rows in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..40), prop::collection::vec(any::<u8>(), 0..100)), 0..30)) {
            // Blocks hold sorted, unique keys.
            let mut rows = rows;
            rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            rows.dedup_by(|a, b| (a.0, &a.1) == (b.0, &b.1));
            let mut b = Vec::new();
            for (t, k, v) in &rows {
                push_entry(&mut b, *t, k, v);
            }
            seal(&mut b, rows.len() as u32);
            let (body, n) = verify(&b).expect("valid");
            let got = entries(body, n).expect("decodes");
            prop_assert_eq!(got.len(), rows.len());
            for (t, k, v) in &rows {
                prop_assert_eq!(find(body, n, (*t, k)).expect("scans"), Some(&v[..]));
            }
            for (e, (t, k, v)) in got.iter().zip(&rows) {
                prop_assert_eq!(e.token, *t);
                prop_assert_eq!(e.key, &k[..]);
                prop_assert_eq!(e.value, &v[..]);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok((body, n)) = verify(&bytes) {
                let _ = entries(body, n.min(1000));
            }
        }
    }

    #[test]
    fn a_flipped_bit_is_a_checksum_error() {
        let mut b = Vec::new();
        push_entry(&mut b, 1, b"k", b"v");
        seal(&mut b, 1);
        b[10] ^= 1;
        assert!(matches!(verify(&b), Err(BlockError::Checksum { .. })));
    }
}
