//! The block index and the properties block (sans-io).

use super::{check_crc, Cursor};

/// One data block's index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    /// Largest `(token, key)` in the block.
    pub(crate) last: (u64, Vec<u8>),
    /// Offset of the block in the file (4096-aligned).
    pub(crate) offset: u64,
    /// Length without padding, trailer included.
    pub(crate) len: u32,
}

/// Serialises the index: entries, `u32 count`, `u32 CRC-32C`.
pub(crate) fn encode_index(handles: &[BlockHandle], out: &mut Vec<u8>) {
    let start = out.len();
    for h in handles {
        out.extend_from_slice(&h.last.0.to_le_bytes());
        out.extend_from_slice(&(h.last.1.len() as u32).to_le_bytes());
        out.extend_from_slice(&h.last.1);
        out.extend_from_slice(&h.offset.to_le_bytes());
        out.extend_from_slice(&h.len.to_le_bytes());
    }
    out.extend_from_slice(&(handles.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Parses an index block.
pub(crate) fn decode_index(bytes: &[u8]) -> Result<Vec<BlockHandle>, String> {
    let body = check_crc(bytes).map_err(|(got, expected)| {
        format!("index checksum {got:#010x} != stored {expected:#010x}")
    })?;
    if body.len() < 4 {
        return Err("index shorter than its count".into());
    }
    let (entries, count) = body.split_at(body.len() - 4);
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    let mut c = Cursor::new(entries);
    let mut out = Vec::with_capacity(count.min(entries.len() / 24));
    for _ in 0..count {
        let token = c.u64().ok_or("index entry truncated")?;
        let klen = c.u32().ok_or("index entry truncated")? as usize;
        let key = c.take(klen).ok_or("index key truncated")?.to_vec();
        let offset = c.u64().ok_or("index entry truncated")?;
        let len = c.u32().ok_or("index entry truncated")?;
        out.push(BlockHandle {
            last: (token, key),
            offset,
            len,
        });
    }
    if c.remaining() != 0 {
        return Err("bytes after the last index entry".into());
    }
    Ok(out)
}

/// The properties block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Properties {
    pub(crate) entries: u64,
    pub(crate) max_expiry_ms: u64,
    pub(crate) data_bytes: u64,
    pub(crate) id: u64,
    pub(crate) min: (u64, Vec<u8>),
    pub(crate) max: (u64, Vec<u8>),
}

impl Properties {
    /// Serialises with a trailing CRC-32C.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        for v in [self.entries, self.max_expiry_ms, self.data_bytes, self.id] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (token, key) in [&self.min, &self.max] {
            out.extend_from_slice(&token.to_le_bytes());
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
        }
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Parses a properties block.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Properties, String> {
        let body = check_crc(bytes).map_err(|(got, expected)| {
            format!("properties checksum {got:#010x} != stored {expected:#010x}")
        })?;
        let mut c = Cursor::new(body);
        let mut head = [0u64; 4];
        for v in &mut head {
            *v = c.u64().ok_or("properties truncated")?;
        }
        let mut bound = || -> Result<(u64, Vec<u8>), String> {
            let token = c.u64().ok_or("properties truncated")?;
            let klen = c.u32().ok_or("properties truncated")? as usize;
            Ok((
                token,
                c.take(klen).ok_or("properties key truncated")?.to_vec(),
            ))
        };
        let min = bound()?;
        let max = bound()?;
        Ok(Properties {
            entries: head[0],
            max_expiry_ms: head[1],
            data_bytes: head[2],
            id: head[3],
            min,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Appends a valid CRC-32C so the structure parser is what decides.
    fn sealed(mut body: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Random bytes with a matching checksum, and counts or key lengths
        /// up to u32::MAX: errors, never a panic or a huge allocation.
        #[test]
        fn sealed_garbage_is_an_error_never_a_panic(
            mut body in prop::collection::vec(any::<u8>(), 0..200),
            count in prop_oneof![0u32..8, Just(u32::MAX)],
        ) {
            let _ = Properties::decode(&sealed(body.clone()));
            let _ = decode_index(&body);
            if body.len() >= 4 {
                let n = body.len();
                body[n - 4..].copy_from_slice(&count.to_le_bytes());
            }
            let _ = decode_index(&sealed(body));
        }
    }

    #[test]
    fn index_and_properties_round_trip() {
        let handles = vec![
            BlockHandle {
                last: (5, b"a".to_vec()),
                offset: 0,
                len: 100,
            },
            BlockHandle {
                last: (9, b"zz".to_vec()),
                offset: 4096,
                len: 4000,
            },
        ];
        let mut b = Vec::new();
        encode_index(&handles, &mut b);
        assert_eq!(decode_index(&b), Ok(handles));
        b[3] ^= 1;
        assert!(decode_index(&b).is_err());
        let p = Properties {
            entries: 3,
            max_expiry_ms: 9,
            data_bytes: 8192,
            id: 4,
            min: (1, b"x".to_vec()),
            max: (7, b"y".to_vec()),
        };
        let mut b = Vec::new();
        p.encode(&mut b);
        assert_eq!(Properties::decode(&b), Ok(p));
    }
}
