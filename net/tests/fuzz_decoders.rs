//! Fuzzing the network decoders (issue 20): the native protocol's request
//! and response decoders, the internode (peer) codec, the RESP command
//! parser, and through all of them the shared frame decoder
//! (`net/src/frame.rs`). Guarantees, for large structured random inputs
//! (mutants of the crates' own encodings, and random bytes) under the
//! default limits and under tight ones:
//! - every call returns `Ok` or a typed error, never panics or hangs;
//! - a stream of frames is consumed by progress only: `consumed` and an
//!   error's `skip` are within the buffer and never zero;
//! - what decodes re-encodes to bytes that decode to the same value;
//! - the peak allocation of one decode stays within a few times its input
//!   (see the harness, `engine/tests/common/fuzz.rs`, for the budget,
//!   `COREKV_FUZZ_SECS`, and the seed, `COREKV_SEED`).

#[path = "../../engine/tests/common/fuzz.rs"]
mod fuzz;
#[path = "../../engine/tests/common/seed.rs"]
mod seed;

use corekv_net::native::{self, FrameError};
use corekv_net::native::{
    Consistency, ErrorCode, Request, RequestBody, Response, ResponseBody, Sibling,
};
use corekv_net::peer::{self, HelloChallenge, Page, PeerRequest, PeerResponse};
use corekv_net::resp::{parse_command, Parsed};
use corekv_net::Limits;
use fuzz::{fuzz, Rng, Target};

#[global_allocator]
static ALLOC: fuzz::CountingAlloc = fuzz::CountingAlloc;

/// Limits small enough that fuzzed inputs cross every one of them.
const TIGHT: Limits = Limits {
    max_frame_bytes: 600,
    max_key_bytes: 16,
    max_value_bytes: 64,
    max_array_len: 8,
    max_inline_bytes: 64,
};

fn limits(input: &[u8]) -> Limits {
    // Chosen from the input, so a failing input replays alone.
    if fuzz::pick(input, 3) == 0 {
        TIGHT
    } else {
        Limits::default()
    }
}

/// Walks a buffer of frames the way a connection does: a decoded frame
/// or an error with `skip` moves on, anything else stops. Returns the
/// values decoded.
fn walk<T>(
    buf: &[u8],
    mut decode: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, FrameError>,
) -> Vec<T> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < buf.len() {
        let rest = &buf[at..];
        match fuzz::measure(|| decode(rest)) {
            Ok(Some((v, n))) => {
                assert!(n > 0 && n <= rest.len(), "consumed {n} of {}", rest.len());
                out.push(v);
                at += n;
            }
            Ok(None) => break,
            Err(e) => match e.skip {
                Some(n) => {
                    assert!(n > 0 && n <= rest.len(), "skip {n} of {}", rest.len());
                    at += n;
                }
                None => break,
            },
        }
    }
    out
}

/// Most mutants get their first frame length resealed, so the body
/// parsers (not the length check) meet the damage.
fn reseal_first_frame(b: &mut [u8]) {
    if b.len() >= 4 {
        let len = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&len.to_le_bytes());
    }
}

fn levels() -> [Consistency; 7] {
    [
        Consistency::Default,
        Consistency::One,
        Consistency::Two,
        Consistency::Quorum,
        Consistency::All,
        Consistency::Count(1),
        Consistency::Count(127),
    ]
}

fn native_requests(rng: &mut Rng) -> Vec<Request> {
    let mut out = Vec::new();
    for i in 0..40u64 {
        let level = levels()[rng.below(7)];
        let key = rng.key(40);
        let body = match i % 7 {
            0 => RequestBody::Get {
                consistency: level,
                key,
            },
            1 => RequestBody::Put {
                consistency: level,
                ttl_ms: rng.next(),
                context: rng.blob(60),
                key,
                value: if i == 8 {
                    rng.bytes(30_000)
                } else {
                    rng.blob(300)
                },
            },
            2 => RequestBody::Delete {
                consistency: level,
                context: rng.blob(60),
                key,
            },
            3 => RequestBody::Ping,
            4 => RequestBody::Topology,
            5 => RequestBody::Status,
            _ => RequestBody::Admin(br#"{"op":"repair"}"#.to_vec()),
        };
        out.push(Request {
            id: rng.next(),
            body,
        });
    }
    out
}

fn native_responses(rng: &mut Rng) -> Vec<Response> {
    let mut out = Vec::new();
    for i in 0..40u64 {
        let context = rng.blob(60);
        let body = match i % 7 {
            0 => ResponseBody::Value {
                context,
                siblings: (0..1 + rng.below(5))
                    .map(|_| Sibling {
                        value: (!rng.one_in(4)).then(|| rng.blob(200)),
                        timestamp: rng.next(),
                        expires_at_ms: rng.next(),
                    })
                    .collect(),
            },
            1 => ResponseBody::NotFound { context },
            2 => ResponseBody::Ok { context },
            3 => ResponseBody::Pong,
            4 => ResponseBody::Topology(rng.blob(200)),
            5 => ResponseBody::Status(rng.blob(200)),
            _ => ResponseBody::Error {
                code: ErrorCode::from_u16(rng.below(20) as u16),
                message: "no quorum".into(),
            },
        };
        out.push(Response {
            id: rng.next(),
            body,
        });
    }
    out
}

/// Single frames and streams of two to four frames.
fn corpus<T>(items: &[T], rng: &mut Rng, mut encode: impl FnMut(&T, &mut Vec<u8>)) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = items
        .iter()
        .map(|x| {
            let mut b = Vec::new();
            encode(x, &mut b);
            b
        })
        .collect();
    for _ in 0..10 {
        let mut b = Vec::new();
        for _ in 0..2 + rng.below(3) {
            encode(&items[rng.below(items.len())], &mut b);
        }
        out.push(b);
    }
    out
}

#[test]
fn native_request_decoder() {
    let seed = seed::seed("native_request_decoder");
    let mut rng = Rng(seed);
    let reqs = native_requests(&mut rng);
    let target = Target::new(
        "native decode_request",
        corpus(&reqs, &mut rng, native::encode_request),
    );
    let r = fuzz(seed, &target, |input| {
        let mut input = input.to_vec();
        if fuzz::pick(&input, 4) != 0 {
            reseal_first_frame(&mut input);
        }
        let l = limits(&input);
        for req in walk(&input, |b| native::decode_request(b, &l)) {
            let mut again = Vec::new();
            native::encode_request(&req, &mut again);
            let (back, n) = native::decode_request(&again, &l)
                .expect("a decoded request re-encodes validly")
                .expect("complete");
            assert_eq!((back, n), (req, again.len()));
        }
    });
    assert!(r.mutants > 0);
}

#[test]
fn native_response_decoder() {
    let seed = seed::seed("native_response_decoder");
    let mut rng = Rng(seed);
    let resps = native_responses(&mut rng);
    let target = Target::new(
        "native decode_response",
        corpus(&resps, &mut rng, native::encode_response),
    );
    let r = fuzz(seed, &target, |input| {
        let mut input = input.to_vec();
        if fuzz::pick(&input, 4) != 0 {
            reseal_first_frame(&mut input);
        }
        let l = limits(&input);
        for resp in walk(&input, |b| native::decode_response(b, &l)) {
            let mut again = Vec::new();
            native::encode_response(&resp, &mut again);
            // An ERROR's message decodes lossily (U+FFFD for bad UTF-8,
            // up to 3× the bytes), so the re-encoding may outgrow TIGHT.
            let (back, _) = native::decode_response(&again, &Limits::default())
                .expect("a decoded response re-encodes validly")
                .expect("complete");
            assert_eq!(back, resp);
        }
    });
    assert!(r.mutants > 0);
}

/// A random fixed-size array (nonces, proofs).
fn array<const N: usize>(rng: &mut Rng) -> [u8; N] {
    std::array::from_fn(|_| rng.next() as u8)
}

fn peer_requests(rng: &mut Rng) -> Vec<PeerRequest> {
    let mut out = Vec::new();
    for i in 0..54 {
        let key = rng.key(15);
        let a = rng.next();
        let b = rng.next();
        out.push(match i % 9 {
            0 => PeerRequest::Hello {
                version_min: 1,
                version_max: 4,
                node_id: rng.next() as u32,
                cluster: "corekv-test".into(),
                nonce: (!rng.one_in(2)).then(|| array(rng)),
            },
            8 => PeerRequest::Auth { proof: array(rng) },
            1 => PeerRequest::Read { key },
            2 => PeerRequest::Apply {
                key,
                set: rng.blob(300),
            },
            3 => PeerRequest::Hint {
                owner: rng.next() as u32,
                key,
                set: rng.blob(300),
            },
            4 => PeerRequest::Tree {
                start: a.min(b),
                end: a.max(b),
                levels: 3,
                level: rng.below(4) as u8,
                indices: (0..rng.len(100)).map(|_| rng.next() as u32).collect(),
            },
            5 => PeerRequest::Digests {
                start: a.min(b),
                end: a.max(b),
                after: (!rng.one_in(2)).then_some(key),
                limit: 1 + rng.below(1000) as u32,
            },
            6 => PeerRequest::Scan {
                start: a.min(b),
                end: a.max(b),
                after: (!rng.one_in(2)).then_some(key),
                limit: 1 + rng.below(1000) as u32,
            },
            _ => PeerRequest::Mint {
                context_kind: rng.below(3) as u8,
                ttl_ms: rng.next(),
                context: rng.blob(60),
                key,
                value: (!rng.one_in(3)).then(|| rng.blob(60)),
            },
        });
    }
    out
}

fn peer_responses(rng: &mut Rng) -> Vec<PeerResponse> {
    let mut out = Vec::new();
    for i in 0..45 {
        let after = (!rng.one_in(2)).then(|| rng.key(15));
        out.push(match i % 9 {
            0 => PeerResponse::Hello {
                version: 4,
                node_id: rng.next() as u32,
                shards: 2,
                challenge: (!rng.one_in(2)).then(|| HelloChallenge {
                    nonce: array(rng),
                    proof: array(rng),
                }),
            },
            8 => PeerResponse::Authenticated,
            1 => PeerResponse::Set((!rng.one_in(3)).then(|| rng.blob(300))),
            2 => PeerResponse::Applied,
            3 => PeerResponse::Hashes((0..rng.len(200)).map(|_| rng.next()).collect()),
            4 => PeerResponse::Digests(Page {
                entries: (0..rng.len(30))
                    .map(|_| (rng.key(15), rng.next()))
                    .collect(),
                next_after: after,
            }),
            5 => PeerResponse::Entries(Page {
                entries: (0..rng.len(20))
                    .map(|_| (rng.key(15), rng.blob(100)))
                    .collect(),
                next_after: after,
            }),
            6 => PeerResponse::Minted {
                context: rng.blob(60),
                set: rng.blob(200),
            },
            _ => PeerResponse::Error {
                code: ErrorCode::Unavailable,
                message: "replica down".into(),
            },
        });
    }
    out
}

#[test]
fn peer_request_decoder() {
    let seed = seed::seed("peer_request_decoder");
    let mut rng = Rng(seed);
    let reqs = peer_requests(&mut rng);
    let target = Target::new(
        "peer decode_request",
        corpus(&reqs, &mut rng, |r, out| peer::encode_request(4, 7, r, out)),
    );
    let r = fuzz(seed, &target, |input| {
        let mut input = input.to_vec();
        if fuzz::pick(&input, 4) != 0 {
            reseal_first_frame(&mut input);
        }
        let l = limits(&input);
        let decoded = walk(&input, |b| {
            peer::decode_request(b, &l).map(|o| o.map(|(id, v, req, n)| ((id, v, req), n)))
        });
        for (id, version, req) in decoded {
            if let PeerRequest::Hello { cluster, .. } = &req {
                // A name that is not UTF-8 decodes lossily (U+FFFD, three
                // bytes per bad byte), so its re-encoding may pass the
                // 256-byte cap: no round trip to check.
                if cluster.len() > 256 {
                    continue;
                }
            }
            let mut again = Vec::new();
            peer::encode_request(version, id, &req, &mut again);
            let (_, _, back, _) = peer::decode_request(&again, &l)
                .expect("a decoded request re-encodes validly")
                .expect("complete");
            assert_eq!(back, req);
        }
    });
    assert!(r.mutants > 0);
}

#[test]
fn peer_response_decoder() {
    let seed = seed::seed("peer_response_decoder");
    let mut rng = Rng(seed);
    let resps = peer_responses(&mut rng);
    let target = Target::new(
        "peer decode_response",
        corpus(&resps, &mut rng, |r, out| {
            peer::encode_response(4, 7, r, out)
        }),
    );
    let r = fuzz(seed, &target, |input| {
        let mut input = input.to_vec();
        if fuzz::pick(&input, 4) != 0 {
            reseal_first_frame(&mut input);
        }
        let l = limits(&input);
        let decoded = walk(&input, |b| {
            peer::decode_response(b, &l).map(|o| o.map(|(id, resp, n)| ((id, resp), n)))
        });
        for (id, resp) in decoded {
            let mut again = Vec::new();
            peer::encode_response(4, id, &resp, &mut again);
            let (_, back, _) = peer::decode_response(&again, &Limits::default())
                .expect("a decoded response re-encodes validly")
                .expect("complete");
            assert_eq!(back, resp);
        }
    });
    assert!(r.mutants > 0);
}

/// RESP arrays of bulk strings, as clients send them.
fn resp_array(args: &[&[u8]]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        b.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        b.extend_from_slice(a);
        b.extend_from_slice(b"\r\n");
    }
    b
}

fn resp_corpus(rng: &mut Rng) -> Vec<Vec<u8>> {
    let value = rng.blob(200);
    let big = vec![b'x'; 20_000];
    let mut out = vec![
        resp_array(&[b"PING"]),
        resp_array(&[b"GET", b"session:1"]),
        resp_array(&[b"SET", b"session:1", &value]),
        resp_array(&[b"SET", b"k", b"v", b"EX", b"10", b"NX"]),
        resp_array(&[b"SET", b"k", &big, b"PX", b"100"]),
        resp_array(&[b"DEL", b"a", b"b", b"c"]),
        resp_array(&[b"MSET", b"a", b"1", b"b", b"2"]),
        resp_array(&[b"MGET", b"a", b"b"]),
        resp_array(&[b"EXPIRE", b"a", b"-1"]),
        resp_array(&[b"TTL", b"a"]),
        resp_array(&[b"EXISTS", b"a", b"b"]),
        resp_array(&[b"COMMAND", b"DOCS"]),
        resp_array(&[b"CONFIG", b"GET", b"save"]),
        resp_array(&[b"INFO", b"server"]),
        resp_array(&[b"ECHO", b"hi"]),
        resp_array(&[b"HELLO", b"3", b"AUTH", b"u", b"p"]),
        b"*0\r\n".to_vec(),
        b"*-1\r\n".to_vec(),
        b"PING\r\n".to_vec(),
        b"SET a b\r\nGET a\r\n".to_vec(),
        b"\r\n".to_vec(),
        b"  get   k  \n".to_vec(),
    ];
    // The worst case per input byte: many one-byte arguments.
    let mut inline = b"DEL".to_vec();
    inline.extend(std::iter::repeat_n(&b" a"[..], 3000).flatten());
    inline.push(b'\n');
    out.push(inline);
    let mut args: Vec<&[u8]> = vec![b"DEL"];
    args.extend(std::iter::repeat_n(&b"a"[..], 3000));
    out.push(resp_array(&args));
    let stream: Vec<u8> = out.iter().take(6).flatten().copied().collect();
    out.push(stream);
    out
}

#[test]
fn resp_command_parser() {
    let seed = seed::seed("resp_command_parser");
    let mut rng = Rng(seed);
    let mut target = Target::new("resp parse_command", resp_corpus(&mut rng));
    // Every argument costs a slice and a Vec header (40 bytes) for as
    // little as 2 input bytes ("a " inline): 24 per byte, bounded by the
    // inline and array limits.
    target.factor = 24;
    let r = fuzz(seed, &target, |input| {
        let l = limits(input);
        let mut at = 0;
        while at < input.len() {
            match fuzz::measure(|| parse_command(&input[at..], &l)) {
                Ok(Some((parsed, n))) => {
                    assert!(n > 0 && n <= input.len() - at, "consumed {n}");
                    if let Parsed::Command(c) = parsed {
                        drop(c);
                    }
                    at += n;
                }
                Ok(None) | Err(_) => break,
            }
        }
    });
    assert!(r.mutants > 0);
}
