//! The cluster secret: what proves that an internode connection or a
//! gossip datagram comes from a member of this cluster.
//!
//! Every member holds the same secret (`cluster_secret` or
//! `cluster_secret_file`). It keys HMAC-SHA256 over each gossip datagram
//! and over both sides of the internode HELLO challenge (docs/PROTOCOL.md,
//! "Authentication"). The secret itself never crosses the network and is
//! never printed: `Debug` shows only its length.
//!
//! What it does not do: encrypt, or protect the frames after HELLO from an
//! attacker on the path (that needs internode TLS). It keeps strangers
//! who can merely reach the ports from reading, writing or re-shaping the
//! cluster.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Bytes of every MAC this module makes.
pub const MAC_BYTES: usize = 32;
/// Bytes of a HELLO challenge nonce.
pub const NONCE_BYTES: usize = 16;
/// Shortest secret accepted: 16 bytes (128 bits), as typed or in the file.
pub const SECRET_BYTES_MIN: usize = 16;

/// A cluster's shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({} bytes, redacted)", self.key.len())
    }
}

impl<'de> serde::Deserialize<'de> for ClusterSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ClusterSecret::new(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Which side of a HELLO a proof speaks for (the two proofs differ, so
/// one side's answer can never be reflected back as the other's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloSide {
    /// The node that opened the connection.
    Caller,
    /// The node that accepted it.
    Replica,
}

/// What both sides of one HELLO exchange agree on: each MAC covers all of
/// it, so a proof is good for this connection only.
#[derive(Clone, Copy, Debug)]
pub struct HelloTranscript<'a> {
    /// The cluster name.
    pub cluster: &'a str,
    /// The caller's node id.
    pub caller: u32,
    /// The replica's node id.
    pub replica: u32,
    /// The caller's fresh nonce.
    pub caller_nonce: &'a [u8; NONCE_BYTES],
    /// The replica's fresh nonce.
    pub replica_nonce: &'a [u8; NONCE_BYTES],
}

impl ClusterSecret {
    /// A secret of `bytes` (surrounding whitespace dropped); refused when
    /// shorter than [`SECRET_BYTES_MIN`].
    pub fn new(bytes: &[u8]) -> Result<ClusterSecret> {
        let key = bytes.trim_ascii();
        if key.len() < SECRET_BYTES_MIN {
            return Err(Error::Config(format!(
                "the cluster secret is {} bytes long; it must have at least {SECRET_BYTES_MIN} (e.g. `head -c 32 /dev/urandom | base64`)",
                key.len()
            )));
        }
        Ok(ClusterSecret { key: key.to_vec() })
    }

    /// Reads a secret from a file (its whole content, trimmed).
    pub fn from_file(path: &Path) -> Result<ClusterSecret> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cluster_secret_file {}: {e}", path.display())))?;
        ClusterSecret::new(&bytes)
            .map_err(|e| Error::Config(format!("cluster_secret_file {}: {e}", path.display())))
    }

    fn keyed(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
    }

    /// HMAC-SHA256 of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_BYTES] {
        let mut m = self.keyed();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut m = self.keyed();
        for p in parts {
            m.update(p);
        }
        m.verify_slice(tag).is_ok()
    }

    /// The proof `side` sends in the HELLO exchange `t`.
    pub fn hello_proof(&self, side: HelloSide, t: &HelloTranscript<'_>) -> [u8; MAC_BYTES] {
        self.mac(&[&hello_message(side, t)])
    }

    /// Whether `proof` is `side`'s proof for the exchange `t`.
    pub fn verify_hello(&self, side: HelloSide, t: &HelloTranscript<'_>, proof: &[u8]) -> bool {
        self.verify(&[&hello_message(side, t)], proof)
    }
}

/// A fresh random nonce from the operating system.
pub fn nonce() -> Result<[u8; NONCE_BYTES]> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).map_err(|e| Error::Io {
        context: "drawing a random nonce".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(n)
}

/// The bytes a HELLO proof covers: a label naming the side, then every
/// field of the transcript, the one variable-length field (the cluster
/// name) preceded by its length, so no two transcripts share bytes.
fn hello_message(side: HelloSide, t: &HelloTranscript<'_>) -> Vec<u8> {
    let label: &[u8] = match side {
        HelloSide::Caller => b"corekv hello caller 1",
        HelloSide::Replica => b"corekv hello replica 1",
    };
    let mut m = Vec::with_capacity(label.len() + 4 + t.cluster.len() + 8 + 2 * NONCE_BYTES);
    m.extend_from_slice(label);
    m.extend_from_slice(&(t.cluster.len() as u32).to_le_bytes());
    m.extend_from_slice(t.cluster.as_bytes());
    m.extend_from_slice(&t.caller.to_le_bytes());
    m.extend_from_slice(&t.replica.to_le_bytes());
    m.extend_from_slice(t.caller_nonce);
    m.extend_from_slice(t.replica_nonce);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(n1: &'a [u8; 16], n2: &'a [u8; 16]) -> HelloTranscript<'a> {
        HelloTranscript {
            cluster: "corekv",
            caller: 1,
            replica: 2,
            caller_nonce: n1,
            replica_nonce: n2,
        }
    }

    #[test]
    fn short_secrets_are_refused_and_debug_never_shows_the_secret() {
        assert!(ClusterSecret::new(b"  too short  ").is_err());
        let s = ClusterSecret::new(b"0123456789abcdef-secret\n").expect("long enough");
        assert!(!format!("{s:?}").contains("0123"));
    }

    #[test]
    fn proofs_bind_side_secret_and_every_field() {
        let s = ClusterSecret::new(b"a secret of the cluster").expect("ok");
        let other = ClusterSecret::new(b"another secret entirely").expect("ok");
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let t = transcript(&a, &b);
        let p = s.hello_proof(HelloSide::Caller, &t);
        assert!(s.verify_hello(HelloSide::Caller, &t, &p));
        assert!(
            !s.verify_hello(HelloSide::Replica, &t, &p),
            "reflected proof"
        );
        assert!(
            !other.verify_hello(HelloSide::Caller, &t, &p),
            "other secret"
        );
        let swapped = transcript(&b, &a);
        assert!(!s.verify_hello(HelloSide::Caller, &swapped, &p), "nonces");
        let mut renamed = t;
        renamed.cluster = "corekv2";
        assert!(!s.verify_hello(HelloSide::Caller, &renamed, &p), "cluster");
        let mut moved = t;
        moved.caller = 3;
        assert!(!s.verify_hello(HelloSide::Caller, &moved, &p), "ids");
        assert!(
            !s.verify_hello(HelloSide::Caller, &t, &p[..31]),
            "short tag"
        );
    }
}
