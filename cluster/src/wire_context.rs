//! The opaque causal context clients carry between a read and a write.
//!
//! Bytes (format 2): `u8 format = 2`, `u32 n`, `n × (u64 replica, u64
//! counter)` (the vector: every dot of that replica for the key up to the
//! counter), `u32 m`, `m × (u64 replica, u64 counter)` (single dots seen
//! beyond it), little-endian. Format 1 (`u8 1`, `u16 n`, the vector alone)
//! is still accepted from clients that kept an old context. Clients must
//! treat the bytes as opaque; the empty string means "no context".

use corekv_engine::version::{CausalContext, Dot, VersionVector};

const FORMAT_V1: u8 = 1;
const FORMAT: u8 = 2;

/// Why client context bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// Not a context this server issued (bad format byte or lengths).
    #[error("the causal context is not one this server issued")]
    Malformed,
    /// More entries than the server accepts.
    #[error("causal context of {entries} entries exceeds the limit of {max}")]
    TooLarge {
        /// Entries the context claims.
        entries: usize,
        /// The limit.
        max: usize,
    },
}

impl ContextError {
    /// The protocol error code a refused context is answered with.
    pub fn code(&self) -> corekv_net::native::ErrorCode {
        match self {
            ContextError::Malformed => corekv_net::native::ErrorCode::BadFrame,
            ContextError::TooLarge { .. } => corekv_net::native::ErrorCode::ContextTooLarge,
        }
    }
}

/// Encodes a causal context for a client.
pub fn encode(cc: &CausalContext) -> Vec<u8> {
    let vv = cc.vv().entries();
    let dots = cc.dots();
    let mut out = Vec::with_capacity(9 + 16 * (vv.len() + dots.len()));
    out.push(FORMAT);
    out.extend_from_slice(&(vv.len() as u32).to_le_bytes());
    for &(replica, counter) in vv {
        out.extend_from_slice(&replica.to_le_bytes());
        out.extend_from_slice(&counter.to_le_bytes());
    }
    out.extend_from_slice(&(dots.len() as u32).to_le_bytes());
    for d in dots {
        out.extend_from_slice(&d.replica.to_le_bytes());
        out.extend_from_slice(&d.counter.to_le_bytes());
    }
    out
}

/// Decodes a client context of at most `max_entries` entries.
pub fn decode(bytes: &[u8], max_entries: usize) -> Result<CausalContext, ContextError> {
    let (&format, rest) = bytes.split_first().ok_or(ContextError::Malformed)?;
    let mut r = Reader { bytes: rest };
    let wide = match format {
        FORMAT => true,
        FORMAT_V1 => false,
        _ => return Err(ContextError::Malformed),
    };
    let n = if wide { r.u32()? } else { r.u16()? };
    let vv_pairs = r.pairs(n, max_entries)?;
    let (m, dot_pairs) = if wide {
        let m = r.u32()?;
        (m, r.pairs(m, max_entries.saturating_sub(n))?)
    } else {
        (0, Vec::new())
    };
    if !r.bytes.is_empty() {
        return Err(ContextError::Malformed);
    }
    debug_assert!(n + m <= max_entries);
    Ok(CausalContext::from_parts(
        VersionVector::from_entries(vv_pairs),
        dot_pairs
            .into_iter()
            .map(|(replica, counter)| Dot { replica, counter }),
    ))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ContextError> {
        if self.bytes.len() < n {
            return Err(ContextError::Malformed);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<usize, ContextError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Result<usize, ContextError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// `n` pairs, refused before anything is allocated when `n` is above
    /// `max` (the count is checked against the limit first, then against
    /// the bytes present).
    fn pairs(&mut self, n: usize, max: usize) -> Result<Vec<(u64, u64)>, ContextError> {
        if n > max {
            return Err(ContextError::TooLarge { entries: n, max });
        }
        let body = self.take(n.checked_mul(16).ok_or(ContextError::Malformed)?)?;
        Ok(body
            .chunks_exact(16)
            .map(|c| {
                let mut r = [0u8; 8];
                let mut k = [0u8; 8];
                r.copy_from_slice(&c[..8]);
                k.copy_from_slice(&c[8..]);
                (u64::from_le_bytes(r), u64::from_le_bytes(k))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_garbage() {
        let cc = CausalContext::from_parts(
            VersionVector::from_entries([(1, 5), (9, 2)]),
            [Dot {
                replica: 1,
                counter: 8,
            }],
        );
        assert_eq!(decode(&encode(&cc), 16), Ok(cc));
        assert_eq!(decode(b"\x01\x01\x00abc", 16), Err(ContextError::Malformed));
        assert_eq!(decode(b"", 16), Err(ContextError::Malformed));
        let mut v1 = vec![1u8, 1, 0];
        v1.extend_from_slice(&3u64.to_le_bytes());
        v1.extend_from_slice(&4u64.to_le_bytes());
        assert_eq!(
            decode(&v1, 16),
            Ok(CausalContext::from(VersionVector::from_entries([(3, 4)])))
        );
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        let mut bytes = vec![FORMAT];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&bytes, 1024),
            Err(ContextError::TooLarge {
                entries: u32::MAX as usize,
                max: 1024
            })
        );
        let many = CausalContext::from(VersionVector::from_entries((1..=40_000).map(|r| (r, 1))));
        assert!(matches!(
            decode(&encode(&many), 1024),
            Err(ContextError::TooLarge { .. })
        ));
    }
}
