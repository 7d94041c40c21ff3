//! The fixed 64-byte footer at the end of every table (sans-io).

use super::Cursor;

/// Size of the footer in bytes.
pub(crate) const FOOTER_BYTES: usize = 64;
const MAGIC: &[u8; 8] = b"CKVSST01";
const FORMAT_VERSION: u32 = 1;

/// Where the metadata blocks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub(crate) index: (u64, u64),
    pub(crate) bloom: (u64, u64),
    pub(crate) props: (u64, u64),
}

impl Footer {
    /// Serialises to exactly `FOOTER_BYTES`.
    pub(crate) fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut out = [0u8; FOOTER_BYTES];
        let fields = [
            self.index.0,
            self.index.1,
            self.bloom.0,
            self.bloom.1,
            self.props.0,
            self.props.1,
        ];
        for (i, f) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
        }
        out[48..52].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[52..60].copy_from_slice(MAGIC);
        let crc = crc32c::crc32c(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and validates a footer.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Footer, String> {
        if bytes.len() != FOOTER_BYTES {
            return Err(format!(
                "footer is {} bytes, expected {FOOTER_BYTES}",
                bytes.len()
            ));
        }
        if &bytes[52..60] != MAGIC {
            return Err("bad magic: not a corekv table".into());
        }
        let crc = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]);
        let got = crc32c::crc32c(&bytes[..60]);
        if got != crc {
            return Err(format!("footer checksum {got:#010x} != stored {crc:#010x}"));
        }
        let version = u32::from_le_bytes([bytes[48], bytes[49], bytes[50], bytes[51]]);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported table format version {version}"));
        }
        let mut c = Cursor::new(&bytes[..48]);
        let mut f = [0u64; 6];
        for v in &mut f {
            *v = c.u64().ok_or("footer truncated")?;
        }
        Ok(Footer {
            index: (f[0], f[1]),
            bloom: (f[2], f[3]),
            props: (f[4], f[5]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any 64 bytes with the magic and a matching checksum, and any
        /// other length, give a footer or an error; the reader bounds the
        /// offsets it holds against the file.
        #[test]
        fn any_bytes_give_a_footer_or_an_error(
            mut b in prop::collection::vec(any::<u8>(), FOOTER_BYTES..=FOOTER_BYTES),
            len in 0usize..130,
        ) {
            b[52..60].copy_from_slice(MAGIC);
            let crc = crc32c::crc32c(&b[..60]);
            b[60..64].copy_from_slice(&crc.to_le_bytes());
            let _ = Footer::decode(&b);
            let _ = Footer::decode(&vec![0xA5; len]);
        }
    }

    #[test]
    fn round_trip_and_every_flip_detected() {
        let f = Footer {
            index: (4096, 100),
            bloom: (4196, 50),
            props: (4246, 70),
        };
        let b = f.encode();
        assert_eq!(Footer::decode(&b), Ok(f));
        for i in 0..FOOTER_BYTES {
            let mut bad = b;
            bad[i] ^= 0x20;
            assert!(Footer::decode(&bad).is_err(), "flip at {i}");
        }
    }
}
