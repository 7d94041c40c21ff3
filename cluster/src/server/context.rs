//! The opaque causal context clients carry between a read and a write.
//!
//! Bytes: `u8 format = 1`, `u16 n`, then `n × (u64 replica, u64 counter)`,
//! little-endian. Clients must treat it as opaque; the empty string means
//! "no context".

use corekv_engine::version::VersionVector;

const FORMAT: u8 = 1;

/// Encodes a version vector as a client context.
pub fn encode(vv: &VersionVector) -> Vec<u8> {
    let entries = vv.entries();
    let n = entries.len().min(u16::MAX as usize);
    let mut out = Vec::with_capacity(3 + 16 * n);
    out.push(FORMAT);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    for &(replica, counter) in &entries[..n] {
        out.extend_from_slice(&replica.to_le_bytes());
        out.extend_from_slice(&counter.to_le_bytes());
    }
    out
}

/// Decodes a client context; `None` when the bytes are not one we issued.
pub fn decode(bytes: &[u8]) -> Option<VersionVector> {
    let (&format, rest) = bytes.split_first()?;
    if format != FORMAT || rest.len() < 2 {
        return None;
    }
    let n = u16::from_le_bytes([rest[0], rest[1]]) as usize;
    let body = &rest[2..];
    if body.len() != 16 * n {
        return None;
    }
    let pairs = body.chunks_exact(16).map(|c| {
        let mut r = [0u8; 8];
        let mut k = [0u8; 8];
        r.copy_from_slice(&c[..8]);
        k.copy_from_slice(&c[8..]);
        (u64::from_le_bytes(r), u64::from_le_bytes(k))
    });
    Some(VersionVector::from_entries(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let vv = VersionVector::from_entries([(1, 5), (9, 2)]);
        assert_eq!(decode(&encode(&vv)), Some(vv));
        assert_eq!(decode(b"\x01\x01\x00abc"), None);
        assert_eq!(decode(b""), None);
    }
}
