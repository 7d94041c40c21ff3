//! Gossip datagrams, byte by byte (little-endian; spelled out in
//! docs/PROTOCOL.md, "Gossip"):
//!
//! ```text
//! u32 magic "CKVG" · u8 version · u8 kind (1 SYN, 2 ACK, 3 ACK2)
//! u64 xxh3 of the cluster name · u32 sender node id
//! version 1 (no cluster secret):
//!   body (by kind) · u32 CRC-32C of everything before it
//! version 2 (authenticated, when the cluster has a secret):
//!   u64 stamp (the sender's wall clock in µs, strictly increasing per sender)
//!   body (by kind) · 32-byte HMAC-SHA256 (cluster secret) of everything before it
//! ```
//!
//! A node with a secret accepts version 2 only, with a valid MAC; one
//! without accepts version 1 only. The stamp lets the receiver drop
//! replays ([`ReplayGuard`](super::replay::ReplayGuard)). A datagram never exceeds
//! [`DATAGRAM_BYTES_MAX`]; decoding checks the checksum or MAC first and
//! rejects anything malformed with a reason, never a panic: the port is
//! open to the network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use xxhash_rust::xxh3::xxh3_64;

use super::state::{Delta, Digest, NodeMeta, NodeStatus};
use crate::secret::{ClusterSecret, MAC_BYTES};

/// "CKVG" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"CKVG");
/// The unauthenticated protocol version (no cluster secret).
pub const VERSION: u8 = 1;
/// The authenticated protocol version (stamp and HMAC).
pub const VERSION_AUTHENTICATED: u8 = 2;
/// Largest datagram sent or accepted (fits one UDP datagram on any
/// network, fragmented on ordinary MTUs).
pub const DATAGRAM_BYTES_MAX: usize = 60 * 1024;
/// Header bytes before the body, plus the trailing checksum or MAC, of
/// the larger (authenticated) form.
pub const HEADER_BYTES: usize = 4 + 1 + 1 + 8 + 4 + 8 + MAC_BYTES;
/// The smallest datagram of either form.
const DATAGRAM_BYTES_MIN: usize = 4 + 1 + 1 + 8 + 4 + 4;

/// Bytes of one encoded digest.
const DIGEST_BYTES: usize = 4 + 8 + 8 + 8;
/// Most tokens one node may announce.
pub const TOKENS_MAX: usize = 4096;

/// One gossip message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// "Here is what I know": one digest per known node.
    Syn {
        /// Sender id.
        from: u32,
        /// Its digests.
        digests: Vec<Digest>,
    },
    /// "Here is what you lack; send me these."
    Ack {
        /// Sender id.
        from: u32,
        /// News the SYN's sender lacks.
        states: Vec<Delta>,
        /// What the ACK's sender lacks, with what it knows of each.
        requests: Vec<Digest>,
    },
    /// "Here is what you asked for."
    Ack2 {
        /// Sender id.
        from: u32,
        /// The requested news.
        states: Vec<Delta>,
    },
}

impl Message {
    /// The sender's node id.
    pub fn sender(&self) -> u32 {
        match self {
            Message::Syn { from, .. } | Message::Ack { from, .. } | Message::Ack2 { from, .. } => {
                *from
            }
        }
    }
}

/// The hash that identifies a cluster name in every datagram.
pub fn cluster_hash(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

/// Encodes `msg` for cluster `cluster_hash`, unauthenticated (version 1).
pub fn encode(cluster_hash: u64, msg: &Message) -> Vec<u8> {
    seal(cluster_hash, None, msg)
}

/// Encodes `msg` for cluster `cluster_hash`: authenticated (version 2,
/// with `stamp`) when `auth` holds the cluster secret, else version 1.
pub fn seal(cluster_hash: u64, auth: Option<(&ClusterSecret, u64)>, msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(if auth.is_some() {
        VERSION_AUTHENTICATED
    } else {
        VERSION
    });
    let (kind, from) = match msg {
        Message::Syn { from, .. } => (1u8, *from),
        Message::Ack { from, .. } => (2, *from),
        Message::Ack2 { from, .. } => (3, *from),
    };
    out.push(kind);
    out.extend_from_slice(&cluster_hash.to_le_bytes());
    out.extend_from_slice(&from.to_le_bytes());
    if let Some((_, stamp)) = auth {
        out.extend_from_slice(&stamp.to_le_bytes());
    }
    match msg {
        Message::Syn { digests, .. } => put_digests(&mut out, digests),
        Message::Ack {
            states, requests, ..
        } => {
            put_deltas(&mut out, states);
            put_digests(&mut out, requests);
        }
        Message::Ack2 { states, .. } => put_deltas(&mut out, states),
    }
    match auth {
        Some((secret, _)) => {
            let mac = secret.mac(&[&out]);
            out.extend_from_slice(&mac);
        }
        None => {
            let crc = crc32c::crc32c(&out);
            out.extend_from_slice(&crc.to_le_bytes());
        }
    }
    out
}

/// Why a datagram was rejected.
#[derive(Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a corekv gossip datagram, or cut short.
    #[error("not a gossip datagram: {0}")]
    Malformed(&'static str),
    /// The checksum does not match the bytes.
    #[error("checksum mismatch: got {got:#010x}, expected {expected:#010x}")]
    ChecksumMismatch {
        /// Checksum computed over the received bytes.
        got: u32,
        /// Checksum the datagram carries.
        expected: u32,
    },
    /// A protocol version this build does not speak.
    #[error("gossip version {0}, this node speaks {VERSION}")]
    Version(u8),
    /// From another cluster (a misconfigured seed list).
    #[error("datagram from another cluster (name hash {0:#018x}; check cluster_name and seeds)")]
    OtherCluster(u64),
    /// This node has a cluster secret and the datagram carries no MAC.
    #[error("unauthenticated gossip (version 1) refused: this node has a cluster secret")]
    Unauthenticated,
    /// The MAC does not match: a forgery, damage, or another secret.
    #[error("gossip MAC mismatch (forged, damaged, or another cluster secret)")]
    BadMac,
    /// Authenticated gossip reached a node without a cluster secret.
    #[error(
        "authenticated gossip (version 2) from a node with a cluster secret; this node has none"
    )]
    NoSecret,
}

/// A datagram that decoded (and, with a secret, authenticated).
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The message.
    pub msg: Message,
    /// Its sender's stamp (authenticated datagrams only).
    pub stamp: Option<u64>,
}

/// Decodes an unauthenticated (version 1) datagram of cluster
/// `cluster_hash`.
pub fn decode(cluster_hash: u64, buf: &[u8]) -> Result<Message, WireError> {
    open(cluster_hash, None, buf).map(|r| r.msg)
}

/// Decodes a datagram of cluster `cluster_hash`. With `secret`, only an
/// authenticated datagram whose MAC is right; without, only version 1
/// with a right checksum. Nothing of the body is read before that check.
pub fn open(
    cluster_hash: u64,
    secret: Option<&ClusterSecret>,
    buf: &[u8],
) -> Result<Received, WireError> {
    if buf.len() < DATAGRAM_BYTES_MIN || buf.len() > DATAGRAM_BYTES_MAX {
        return Err(WireError::Malformed("bad length"));
    }
    if buf[..4] != MAGIC.to_le_bytes() {
        return Err(WireError::Malformed("bad magic"));
    }
    let version = buf[4];
    let body = match (version, secret) {
        (VERSION, None) => {
            let (body, tail) = buf.split_at(buf.len() - 4);
            let expected = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
            let got = crc32c::crc32c(body);
            if got != expected {
                return Err(WireError::ChecksumMismatch { got, expected });
            }
            body
        }
        (VERSION_AUTHENTICATED, Some(secret)) => {
            if buf.len() < HEADER_BYTES {
                return Err(WireError::Malformed("bad length"));
            }
            let (body, mac) = buf.split_at(buf.len() - MAC_BYTES);
            if !secret.verify(&[body], mac) {
                return Err(WireError::BadMac);
            }
            body
        }
        (VERSION, Some(_)) => return Err(WireError::Unauthenticated),
        (VERSION_AUTHENTICATED, None) => return Err(WireError::NoSecret),
        (other, _) => return Err(WireError::Version(other)),
    };
    let mut r = Reader { b: body, at: 5 };
    let kind = r.u8()?;
    let hash = r.u64()?;
    if hash != cluster_hash {
        return Err(WireError::OtherCluster(hash));
    }
    let from = r.u32()?;
    let stamp = match version {
        VERSION_AUTHENTICATED => Some(r.u64()?),
        _ => None,
    };
    let msg = match kind {
        1 => Message::Syn {
            from,
            digests: r.digests()?,
        },
        2 => Message::Ack {
            from,
            states: r.deltas()?,
            requests: r.digests()?,
        },
        3 => Message::Ack2 {
            from,
            states: r.deltas()?,
        },
        _ => return Err(WireError::Malformed("unknown kind")),
    };
    if r.at != body.len() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(Received { msg, stamp })
}

/// Trims `msg`'s news until its encoding (unauthenticated) is at most
/// `max_bytes`: the reply to a sender that is not a member is never larger
/// than what it sent, so a spoofed request cannot turn the port into an
/// amplifier. An ACK's requests are kept (they are as many as the SYN's
/// digests, and a newcomer's first SYN must be able to ask for its state):
/// such a reply is at most 4 bytes longer than the SYN it answers. News
/// left out goes in later rounds, once the sender is a member. True when
/// news was left out.
pub fn shrink_to(msg: &mut Message, max_bytes: usize) -> bool {
    let (states, fixed) = match msg {
        Message::Syn { .. } => return false,
        Message::Ack {
            states, requests, ..
        } => (
            states,
            DATAGRAM_BYTES_MIN + 4 + DIGEST_BYTES * requests.len(),
        ),
        Message::Ack2 { states, .. } => (states, DATAGRAM_BYTES_MIN + 2),
    };
    let mut total = fixed;
    let keep = states
        .iter()
        .take_while(|d| {
            total += delta_len(d);
            total <= max_bytes
        })
        .count();
    let trimmed = keep < states.len();
    states.truncate(keep);
    trimmed
}

/// Encoded size of one delta (to fill a datagram without overflowing it).
pub fn delta_len(d: &Delta) -> usize {
    let meta = d.full.as_ref().map_or(0, |(_, m)| {
        1 + addr_len(&m.native_addr)
            + addr_len(&m.peer_addr)
            + 2
            + 2
            + m.rack.len()
            + 2
            + m.dc.len()
            + 8
            + 4
            + 8 * m.tokens.len()
    });
    4 + 8 + 8 + 8 + 1 + meta
}

fn addr_len(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

fn put_digests(out: &mut Vec<u8>, digests: &[Digest]) {
    let n = digests.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_le_bytes());
    for d in &digests[..n] {
        out.extend_from_slice(&d.id.to_le_bytes());
        out.extend_from_slice(&d.generation.to_le_bytes());
        out.extend_from_slice(&d.heartbeat.to_le_bytes());
        out.extend_from_slice(&d.version.to_le_bytes());
    }
}

fn put_deltas(out: &mut Vec<u8>, deltas: &[Delta]) {
    let n = deltas.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_le_bytes());
    for d in &deltas[..n] {
        out.extend_from_slice(&d.id.to_le_bytes());
        out.extend_from_slice(&d.generation.to_le_bytes());
        out.extend_from_slice(&d.heartbeat.to_le_bytes());
        out.extend_from_slice(&d.version.to_le_bytes());
        match &d.full {
            None => out.push(0),
            Some((status, meta)) => {
                out.push(1);
                out.push(status.to_u8());
                put_meta(out, meta);
            }
        }
    }
}

fn put_meta(out: &mut Vec<u8>, m: &NodeMeta) {
    put_addr(out, &m.native_addr);
    put_addr(out, &m.peer_addr);
    out.extend_from_slice(&m.shards.to_le_bytes());
    put_str(out, &m.rack);
    put_str(out, &m.dc);
    out.extend_from_slice(&m.weight.to_bits().to_le_bytes());
    let n = m.tokens.len().min(TOKENS_MAX);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for t in &m.tokens[..n] {
        out.extend_from_slice(&t.to_le_bytes());
    }
}

fn put_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(WireError::Malformed("cut short"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn digest(&mut self) -> Result<Digest, WireError> {
        Ok(Digest {
            id: self.u32()?,
            generation: self.u64()?,
            heartbeat: self.u64()?,
            version: self.u64()?,
        })
    }

    fn digests(&mut self) -> Result<Vec<Digest>, WireError> {
        let n = self.u16()?;
        (0..n).map(|_| self.digest()).collect()
    }

    fn deltas(&mut self) -> Result<Vec<Delta>, WireError> {
        let n = self.u16()?;
        let mut out = Vec::with_capacity(usize::from(n).min(64));
        for _ in 0..n {
            let Digest {
                id,
                generation,
                heartbeat,
                version,
            } = self.digest()?;
            let full = match self.u8()? {
                0 => None,
                1 => {
                    let status = NodeStatus::from_u8(self.u8()?)
                        .ok_or(WireError::Malformed("unknown node status"))?;
                    let mut meta = self.meta()?;
                    meta.id = id;
                    Some((status, meta))
                }
                _ => return Err(WireError::Malformed("bad metadata flag")),
            };
            out.push(Delta {
                id,
                generation,
                heartbeat,
                version,
                full,
            });
        }
        Ok(out)
    }

    fn meta(&mut self) -> Result<NodeMeta, WireError> {
        let native_addr = self.addr()?;
        let peer_addr = self.addr()?;
        let shards = self.u16()?;
        let rack = self.string()?;
        let dc = self.string()?;
        let weight = f64::from_bits(self.u64()?);
        if shards == 0 || !(weight > 0.0 && weight <= 100.0) {
            return Err(WireError::Malformed("bad shard count or weight"));
        }
        let n = self.u32()? as usize;
        if n == 0 || n > TOKENS_MAX {
            return Err(WireError::Malformed("bad token count"));
        }
        let tokens = (0..n).map(|_| self.u64()).collect::<Result<Vec<_>, _>>()?;
        Ok(NodeMeta {
            id: 0,
            native_addr,
            peer_addr,
            shards,
            rack,
            dc,
            weight,
            tokens,
        })
    }

    fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(self.take(4)?);
                IpAddr::V4(Ipv4Addr::from(a))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return Err(WireError::Malformed("bad address family")),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    fn string(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| WireError::Malformed("bad UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(id: u32) -> NodeMeta {
        NodeMeta {
            id,
            native_addr: "127.0.0.1:7000".parse().expect("addr"),
            peer_addr: "[::1]:7100".parse().expect("addr"),
            shards: 2,
            rack: "r1".into(),
            dc: "dc-east".into(),
            weight: 1.5,
            tokens: vec![1, u64::MAX, 42],
        }
    }

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text.as_bytes()).expect("long enough")
    }

    #[test]
    fn authenticated_datagrams_round_trip_and_forgeries_are_refused() {
        let s = secret("the cluster secret, 32 bytes....");
        let hash = cluster_hash("corekv");
        for msg in sample() {
            let sealed = seal(hash, Some((&s, 77)), &msg);
            assert!(sealed.len() <= DATAGRAM_BYTES_MAX);
            let got = open(hash, Some(&s), &sealed).expect("opens");
            assert_eq!(
                got,
                Received {
                    msg: msg.clone(),
                    stamp: Some(77)
                }
            );
            // Another secret, a flipped bit anywhere, a plain datagram, or
            // an authenticated one at a node without a secret: refused.
            let other = secret("another secret of 32 bytes......");
            assert_eq!(open(hash, Some(&other), &sealed), Err(WireError::BadMac));
            for at in [5, 6, 14, 18, sealed.len() / 2, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[at] ^= 1;
                assert_eq!(
                    open(hash, Some(&s), &bad),
                    Err(WireError::BadMac),
                    "bit at {at}"
                );
            }
            let plain = encode(hash, &msg);
            assert_eq!(
                open(hash, Some(&s), &plain),
                Err(WireError::Unauthenticated)
            );
            assert_eq!(open(hash, None, &sealed), Err(WireError::NoSecret));
            assert_eq!(open(hash, None, &plain).map(|r| r.msg), Ok(msg));
        }
    }

    #[test]
    fn replies_to_strangers_are_never_larger_than_their_request() {
        let hash = cluster_hash("corekv");
        let states: Vec<Delta> = (0..40)
            .map(|id| Delta {
                id,
                generation: 5,
                heartbeat: 6,
                version: 7,
                full: Some((NodeStatus::Normal, meta(id))),
            })
            .collect();
        let requests: Vec<Digest> = (0..10)
            .map(|id| Digest {
                id,
                generation: 1,
                heartbeat: 1,
                version: 1,
            })
            .collect();
        for max in [0, 22, 24, 100, 300, 1000, 5000] {
            let mut ack = Message::Ack {
                from: 1,
                states: states.clone(),
                requests: requests.clone(),
            };
            shrink_to(&mut ack, max);
            let len = encode(hash, &ack).len();
            let requests_only = DATAGRAM_BYTES_MIN + 4 + DIGEST_BYTES * requests.len();
            assert!(len <= max.max(requests_only), "{len} > {max}");
            assert!(
                matches!(&ack, Message::Ack { requests: r, .. } if r.len() == requests.len()),
                "requests are never cut"
            );
            let mut ack2 = Message::Ack2 {
                from: 1,
                states: states.clone(),
            };
            shrink_to(&mut ack2, max);
            assert!(encode(hash, &ack2).len() <= max.max(DATAGRAM_BYTES_MIN + 2));
        }
        // Large enough: nothing is cut.
        let mut ack = Message::Ack {
            from: 1,
            states: states.clone(),
            requests: requests.clone(),
        };
        shrink_to(&mut ack, DATAGRAM_BYTES_MAX);
        assert_eq!(
            ack,
            Message::Ack {
                from: 1,
                states,
                requests
            }
        );
    }

    fn sample() -> Vec<Message> {
        let d = Digest {
            id: 3,
            generation: 1_700_000_000_000,
            heartbeat: 9,
            version: 2,
        };
        let full = Delta {
            id: 7,
            generation: 5,
            heartbeat: 6,
            version: 7,
            full: Some((NodeStatus::Normal, meta(7))),
        };
        let thin = Delta {
            full: None,
            ..full.clone()
        };
        vec![
            Message::Syn {
                from: 1,
                digests: vec![d, d],
            },
            Message::Ack {
                from: 2,
                states: vec![full.clone(), thin],
                requests: vec![d],
            },
            Message::Ack2 {
                from: 3,
                states: vec![full],
            },
        ]
    }

    #[test]
    fn messages_round_trip_and_sizes_are_predicted() {
        for msg in sample() {
            let bytes = encode(cluster_hash("c"), &msg);
            assert_eq!(decode(cluster_hash("c"), &bytes), Ok(msg.clone()));
            let s = secret("the cluster secret, 32 bytes....");
            let sealed = seal(cluster_hash("c"), Some((&s, 1)), &msg);
            if let Message::Ack2 { states, .. } = &msg {
                assert_eq!(bytes.len(), DATAGRAM_BYTES_MIN + 2 + delta_len(&states[0]));
                assert_eq!(sealed.len(), HEADER_BYTES + 2 + delta_len(&states[0]));
            }
        }
    }

    #[test]
    fn foreign_damaged_and_truncated_datagrams_are_errors() {
        let msg = &sample()[1];
        let bytes = encode(cluster_hash("c"), msg);
        assert_eq!(
            decode(cluster_hash("other"), &bytes),
            Err(WireError::OtherCluster(cluster_hash("c")))
        );
        let mut flipped = bytes.clone();
        flipped[30] ^= 0x10;
        assert!(matches!(
            decode(cluster_hash("c"), &flipped),
            Err(WireError::ChecksumMismatch { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(decode(cluster_hash("c"), &bytes[..cut]).is_err());
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(cluster_hash("c"), &bytes);
            // With a valid header and checksum around the garbage, the
            // body parser itself is exercised.
            let mut framed = MAGIC.to_le_bytes().to_vec();
            framed.push(VERSION);
            framed.push(2);
            framed.extend_from_slice(&cluster_hash("c").to_le_bytes());
            framed.extend_from_slice(&1u32.to_le_bytes());
            framed.extend_from_slice(&bytes);
            let crc = crc32c::crc32c(&framed);
            framed.extend_from_slice(&crc.to_le_bytes());
            let _ = decode(cluster_hash("c"), &framed);
        }
    }
}
