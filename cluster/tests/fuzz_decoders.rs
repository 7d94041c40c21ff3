//! Fuzzing the cluster's decoders of network bytes (issue 20): gossip
//! datagrams (`gossip::wire::decode`, and `wire::open` of the
//! authenticated form), the causal contexts clients send
//! back (`wire_context::decode`) and the admin HTTP request head
//! (`admin::parse_head`). Guarantees, for large structured random inputs
//! (mutants of valid encodings from the crate's own encoders, most with
//! their checksum resealed so the parser behind it meets the damage, and
//! random bytes):
//! - every call returns `Ok` or a typed error, never panics or hangs;
//! - what decodes re-encodes to bytes that decode to the same value;
//! - a context decode honours its entry limit;
//! - the peak allocation of one decode stays within a few times its input.
//!
//! Budget, seed and allocation bound: see the harness,
//! `engine/tests/common/fuzz.rs` (`COREKV_FUZZ_SECS`, `COREKV_SEED`).

#[path = "../../engine/tests/common/fuzz.rs"]
mod fuzz;
#[path = "../../engine/tests/common/seed.rs"]
mod seed;

use std::net::SocketAddr;

use corekv_cluster::admin::{parse_head, AdminRequest, REQUEST_BYTES_MAX};
use corekv_cluster::gossip::wire::{self, Message};
use corekv_cluster::gossip::{Delta, Digest, NodeMeta, NodeStatus};
use corekv_cluster::secret::{ClusterSecret, MAC_BYTES};
use corekv_cluster::wire_context::{self, ContextError};
use corekv_engine::version::{CausalContext, Dot, VersionVector};
use fuzz::{fuzz, Rng, Target};

#[global_allocator]
static ALLOC: fuzz::CountingAlloc = fuzz::CountingAlloc;

const CLUSTER: &str = "fuzz-cluster";

fn digest(rng: &mut Rng) -> Digest {
    Digest {
        id: rng.next() as u32,
        generation: rng.next(),
        heartbeat: rng.next(),
        version: rng.next(),
    }
}

fn addr(rng: &mut Rng) -> SocketAddr {
    if rng.one_in(2) {
        SocketAddr::from(([127, 0, 0, 1 + rng.below(200) as u8], rng.next() as u16))
    } else {
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], rng.next() as u16))
    }
}

fn delta(rng: &mut Rng, tokens: usize) -> Delta {
    let d = digest(rng);
    let full = (!rng.one_in(3)).then(|| {
        let status = NodeStatus::from_u8(1 + rng.below(4) as u8).expect("status");
        let meta = NodeMeta {
            id: d.id,
            native_addr: addr(rng),
            peer_addr: addr(rng),
            shards: 1 + rng.below(64) as u16,
            rack: "rack-1".into(),
            dc: if rng.one_in(2) { "dc-east" } else { "" }.into(),
            weight: 0.5 + rng.below(100) as f64 / 10.0,
            tokens: (0..tokens).map(|_| rng.next()).collect(),
        };
        (status, meta)
    });
    Delta {
        id: d.id,
        generation: d.generation,
        heartbeat: d.heartbeat,
        version: d.version,
        full,
    }
}

fn gossip_corpus(rng: &mut Rng) -> Vec<Vec<u8>> {
    let hash = wire::cluster_hash(CLUSTER);
    let mut out = Vec::new();
    for i in 0..30 {
        let from = rng.next() as u32;
        let digests = |rng: &mut Rng| (0..rng.len(40)).map(|_| digest(rng)).collect::<Vec<_>>();
        let deltas = |rng: &mut Rng| {
            let n = 1 + rng.below(4);
            let tokens = if i == 0 { 1000 } else { 1 + rng.len(64) };
            (0..n).map(|_| delta(rng, tokens)).collect::<Vec<_>>()
        };
        let msg = match i % 3 {
            0 => Message::Syn {
                from,
                digests: digests(rng),
            },
            1 => Message::Ack {
                from,
                states: deltas(rng),
                requests: digests(rng),
            },
            _ => Message::Ack2 {
                from,
                states: deltas(rng),
            },
        };
        out.push(wire::encode(hash, &msg));
    }
    out
}

/// Recomputes the trailing CRC-32C, so a mutant reaches the body parser.
fn reseal(b: &mut [u8]) {
    if b.len() >= 4 {
        let n = b.len() - 4;
        let crc = crc32c::crc32c(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

#[test]
fn gossip_datagram_decoder() {
    let seed = seed::seed("gossip_datagram_decoder");
    let mut rng = Rng(seed);
    let hash = wire::cluster_hash(CLUSTER);
    let target = Target::new("gossip wire::decode", gossip_corpus(&mut rng));
    let r = fuzz(seed, &target, |input| {
        let mut input = input.to_vec();
        if fuzz::pick(&input, 8) != 0 {
            reseal(&mut input);
        }
        let decoded = fuzz::measure(|| wire::decode(hash, &input));
        if let Ok(msg) = decoded {
            let again = wire::encode(hash, &msg);
            assert_eq!(
                again.len(),
                input.len(),
                "a decoded datagram re-encodes to its size"
            );
            assert_eq!(wire::decode(hash, &again), Ok(msg));
        }
    });
    assert!(r.mutants > 0);
}

/// The authenticated form (a cluster secret: version 2, a stamp, an
/// HMAC-SHA256 trailer): the MAC is resealed on most mutants, so the
/// parser behind it meets the damage as it would from a member that
/// holds the secret.
#[test]
fn authenticated_gossip_datagram_decoder() {
    let seed = seed::seed("authenticated_gossip_datagram_decoder");
    let mut rng = Rng(seed);
    let hash = wire::cluster_hash(CLUSTER);
    let secret = ClusterSecret::new(b"a fuzzing secret of 32 bytes....").expect("secret");
    let corpus = gossip_corpus(&mut rng)
        .iter()
        .map(|v1| {
            let msg = wire::decode(hash, v1).expect("valid");
            wire::seal(hash, Some((&secret, rng.next())), &msg)
        })
        .collect();
    let target = Target::new("gossip wire::open (authenticated)", corpus);
    let r = fuzz(seed, &target, |input| {
        let mut input = input.to_vec();
        if fuzz::pick(&input, 8) != 0 && input.len() >= MAC_BYTES {
            let n = input.len() - MAC_BYTES;
            let mac = secret.mac(&[&input[..n]]);
            input[n..].copy_from_slice(&mac);
        }
        let opened = fuzz::measure(|| wire::open(hash, Some(&secret), &input));
        // Without the secret, the same bytes are refused unread.
        assert!(wire::decode(hash, &input).is_err());
        if let Ok(got) = opened {
            let stamp = got.stamp.expect("an authenticated datagram has a stamp");
            let again = wire::seal(hash, Some((&secret, stamp)), &got.msg);
            assert_eq!(again, input, "a datagram that opens re-seals to itself");
        }
    });
    assert!(r.mutants > 0);
}

fn context(rng: &mut Rng, max: usize) -> CausalContext {
    let vv = VersionVector::from_entries((0..rng.len(max)).map(|_| (rng.next() % 8, rng.next())));
    let dots: Vec<Dot> = (0..rng.len(max))
        .map(|_| Dot {
            replica: rng.next() % 8,
            counter: rng.next(),
        })
        .collect();
    CausalContext::from_parts(vv, dots)
}

fn context_corpus(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..40)
        .map(|i| wire_context::encode(&context(rng, if i == 0 { 500 } else { 20 })))
        .collect();
    // Format 1: u8 1, u16 n, n pairs.
    for n in [0u16, 1, 3] {
        let mut b = vec![1u8];
        b.extend_from_slice(&n.to_le_bytes());
        for i in 0..u64::from(n) {
            b.extend_from_slice(&i.to_le_bytes());
            b.extend_from_slice(&(i * 7 + 1).to_le_bytes());
        }
        out.push(b);
    }
    out
}

#[test]
fn client_context_decoder() {
    let seed = seed::seed("client_context_decoder");
    let mut rng = Rng(seed);
    let target = Target::new("wire_context::decode", context_corpus(&mut rng));
    let r = fuzz(seed, &target, |input| {
        let max = [0usize, 1, 4, 64, 1 << 20][fuzz::pick(input, 5)];
        match fuzz::measure(|| wire_context::decode(input, max)) {
            Ok(cc) => {
                let entries = cc.vv().len() + cc.dots().len();
                assert!(entries <= max, "{entries} entries with a limit of {max}");
                let again = wire_context::encode(&cc);
                assert_eq!(wire_context::decode(&again, max), Ok(cc));
            }
            Err(ContextError::Malformed) => {}
            Err(ContextError::TooLarge { entries, max: m }) => {
                assert!(m <= max);
                assert!(entries > m);
            }
        }
    });
    assert!(r.mutants > 0);
}

#[test]
fn admin_request_head_parser() {
    let seed = seed::seed("admin_request_head_parser");
    let heads = [
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET /health HTTP/1.0\r\n\r\n",
        "GET /status?pretty=1 HTTP/1.1\r\nAccept: */*\r\n\r\n",
        "GET / HTTP/1.1\n\n",
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "\r\n\r\n",
    ];
    let mut corpus: Vec<Vec<u8>> = heads.iter().map(|h| h.as_bytes().to_vec()).collect();
    let mut long = b"GET /health HTTP/1.1\r\n".to_vec();
    while long.len() < REQUEST_BYTES_MAX + 1023 {
        long.extend_from_slice(b"X-Pad: \xff\xfe aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    corpus.push(long);
    let target = Target::new("admin parse_head", corpus);
    let r = fuzz(seed, &target, |input| {
        let got = fuzz::measure(|| parse_head(input));
        // The answer depends on the request line alone.
        if input.starts_with(b"GET /health ") {
            assert_eq!(got, AdminRequest::Health);
        }
    });
    assert!(r.mutants > 0);
}
