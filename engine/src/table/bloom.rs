//! A bloom filter with a stable, documented format (sans-io).
//!
//! Probes use double hashing (Kirsch–Mitzenmacher): bit `i` of `k` is
//! `(h1 + i·h2) mod m` with `h1` = the key's token and `h2` = xxh3 of the key
//! with a fixed seed, forced odd. At 10 bits per key and k = 7 the false
//! positive rate is about 0.8 %.

use super::{check_crc, Cursor};

const H2_SEED: u64 = 0x5bd1_e995_c0de_b10f;

/// The two hashes a key is probed with.
pub(crate) fn hashes(token: u64, key: &[u8]) -> (u64, u64) {
    (
        token,
        xxhash_rust::xxh3::xxh3_64_with_seed(key, H2_SEED) | 1,
    )
}

/// A built or loaded filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bloom {
    k: u32,
    m: u64,
    bits: Vec<u8>,
}

impl Bloom {
    /// Builds a filter over the given key hashes.
    pub(crate) fn build(hashes: &[(u64, u64)], bits_per_key: u32) -> Bloom {
        let m = (hashes.len() as u64 * u64::from(bits_per_key)).max(64);
        // k = bits_per_key · ln 2, the optimum for that density.
        let k = ((f64::from(bits_per_key) * std::f64::consts::LN_2).round() as u32).clamp(1, 30);
        let mut bits = vec![0u8; m.div_ceil(8) as usize];
        for &(h1, h2) in hashes {
            let mut h = h1;
            for _ in 0..k {
                let bit = h % m;
                bits[(bit / 8) as usize] |= 1 << (bit % 8);
                h = h.wrapping_add(h2);
            }
        }
        Bloom { k, m, bits }
    }

    /// False only when the key is certainly absent.
    pub(crate) fn may_contain(&self, (h1, h2): (u64, u64)) -> bool {
        let mut h = h1;
        for _ in 0..self.k {
            let bit = h % self.m;
            if self.bits[(bit / 8) as usize] & (1 << (bit % 8)) == 0 {
                return false;
            }
            h = h.wrapping_add(h2);
        }
        true
    }

    /// Serialises: `u32 k, u64 m, bits, u32 CRC-32C`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.k.to_le_bytes());
        out.extend_from_slice(&self.m.to_le_bytes());
        out.extend_from_slice(&self.bits);
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Parses an encoded filter; `Err` carries what was wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Bloom, String> {
        let body = check_crc(bytes)
            .map_err(|(got, expected)| format!("bloom checksum {got:#x} != {expected:#x}"))?;
        let mut c = Cursor::new(body);
        let (Some(k), Some(m)) = (c.u32(), c.u64()) else {
            return Err("bloom header truncated".into());
        };
        let bits = c.take(c.remaining()).unwrap_or_default().to_vec();
        if k == 0 || k > 30 || m == 0 || m.div_ceil(8) != bits.len() as u64 {
            return Err(format!(
                "bloom header inconsistent (k {k}, m {m}, {} bytes)",
                bits.len()
            ));
        }
        Ok(Bloom { k, m, bits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::token_of;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any checksummed bytes either fail to decode or give a filter
        /// every probe of which stays inside its bits.
        #[test]
        fn sealed_garbage_decodes_to_a_safe_filter_or_an_error(
            k in prop_oneof![0u32..40, Just(u32::MAX)],
            m in prop_oneof![0u64..2000, Just(u64::MAX)],
            bits in prop::collection::vec(any::<u8>(), 0..300),
            probes in prop::collection::vec((any::<u64>(), any::<u64>()), 0..20),
        ) {
            let mut b = Vec::new();
            b.extend_from_slice(&k.to_le_bytes());
            b.extend_from_slice(&m.to_le_bytes());
            b.extend_from_slice(&bits);
            let crc = crc32c::crc32c(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            if let Ok(bloom) = Bloom::decode(&b) {
                for p in probes {
                    let _ = bloom.may_contain(p);
                }
            }
            for cut in [0, 3, 11, b.len() / 2] {
                let _ = Bloom::decode(&b[..cut.min(b.len())]);
            }
        }
    }

    #[test]
    fn no_false_negatives_and_about_one_percent_false_positives() {
        let present: Vec<(u64, u64)> = (0..100_000)
            .map(|i| {
                let k = format!("present-{i}");
                hashes(token_of(k.as_bytes()), k.as_bytes())
            })
            .collect();
        let bloom = Bloom::build(&present, 10);
        assert!(present.iter().all(|h| bloom.may_contain(*h)));
        let fp = (0..100_000)
            .filter(|i| {
                let k = format!("absent-{i}");
                bloom.may_contain(hashes(token_of(k.as_bytes()), k.as_bytes()))
            })
            .count();
        let rate = fp as f64 / 100_000.0;
        assert!(rate <= 0.015, "false positive rate {rate}");
        let mut enc = Vec::new();
        bloom.encode(&mut enc);
        assert_eq!(Bloom::decode(&enc).expect("decodes"), bloom);
        enc[20] ^= 4;
        assert!(Bloom::decode(&enc).is_err());
    }
}
