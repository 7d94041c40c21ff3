//! The internode frames byte by byte (docs/PROTOCOL.md): encoding and
//! decoding of [`PeerRequest`] and [`PeerResponse`], sans-io.

use super::{
    HelloChallenge, Page, PeerRequest, PeerResponse, NONCE_BYTES, PROOF_BYTES, TREE_INDICES_MAX,
    VERSION_HINT, VERSION_MAX, VERSION_MIN, VERSION_MINT, VERSION_RANGES,
};
use crate::frame::{begin, end, frame, put_bytes, put_error, read_error, FrameError, Reader};
use crate::native::ErrorCode;
use crate::Limits;

/// Appends a request frame of protocol `version` to `out` (HELLO is always
/// written as version 1).
pub fn encode_request(version: u8, id: u64, req: &PeerRequest, out: &mut Vec<u8>) {
    let version = if matches!(req, PeerRequest::Hello { .. }) {
        1
    } else {
        version
    };
    let start = begin(out, version, req.opcode(), id);
    match req {
        PeerRequest::Hello {
            version_min,
            version_max,
            node_id,
            cluster,
            nonce,
        } => {
            out.push(*version_min);
            out.push(*version_max);
            out.extend_from_slice(&node_id.to_le_bytes());
            put_bytes(out, cluster.as_bytes());
            if let Some(nonce) = nonce {
                out.extend_from_slice(nonce);
            }
        }
        PeerRequest::Auth { proof } => out.extend_from_slice(proof),
        PeerRequest::Read { key } => put_bytes(out, key),
        PeerRequest::Apply { key, set } => {
            put_bytes(out, key);
            put_bytes(out, set);
        }
        PeerRequest::Hint { owner, key, set } => {
            out.extend_from_slice(&owner.to_le_bytes());
            put_bytes(out, key);
            put_bytes(out, set);
        }
        PeerRequest::Mint {
            context_kind,
            ttl_ms,
            context,
            key,
            value,
        } => {
            out.push(*context_kind);
            out.extend_from_slice(&ttl_ms.to_le_bytes());
            put_bytes(out, context);
            put_bytes(out, key);
            out.push(u8::from(value.is_some()));
            put_bytes(out, value.as_deref().unwrap_or_default());
        }
        PeerRequest::Tree {
            start,
            end,
            levels,
            level,
            indices,
        } => {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
            out.push(*levels);
            out.push(*level);
            let n = indices.len().min(TREE_INDICES_MAX);
            out.extend_from_slice(&(n as u32).to_le_bytes());
            for i in &indices[..n] {
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
        PeerRequest::Digests {
            start,
            end,
            after,
            limit,
        }
        | PeerRequest::Scan {
            start,
            end,
            after,
            limit,
        } => {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
            put_bytes(out, after.as_deref().unwrap_or_default());
            out.extend_from_slice(&limit.to_le_bytes());
        }
    }
    end(out, start);
}

fn put_page<T>(out: &mut Vec<u8>, page: &Page<T>, mut put: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(u8::from(page.next_after.is_some()));
    put_bytes(out, page.next_after.as_deref().unwrap_or_default());
    out.extend_from_slice(&(page.entries.len() as u32).to_le_bytes());
    for (key, value) in &page.entries {
        put_bytes(out, key);
        put(out, value);
    }
}

fn read_page<T>(
    r: &mut Reader<'_>,
    mut read: impl FnMut(&mut Reader<'_>) -> Option<T>,
) -> Result<Page<T>, &'static str> {
    let more = r.u8().ok_or("page truncated")?;
    let next = r.bytes(usize::MAX)?;
    let n = r.u32().ok_or("page truncated")?;
    // Every entry takes at least a 4-byte key length and a value: the
    // capacity is bounded by what the frame can hold, not by its count.
    let mut entries = Vec::with_capacity((n as usize).min(r.left() / 5).min(1024));
    for _ in 0..n {
        let key = r.bytes(usize::MAX)?.to_vec();
        let value = read(r).ok_or("page entry truncated")?;
        entries.push((key, value));
    }
    Ok(Page {
        entries,
        next_after: (more != 0).then(|| next.to_vec()),
    })
}

/// The first `N` bytes of `b`, which the caller took with length `N`.
fn fixed<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Appends a response frame to `out`.
pub fn encode_response(version: u8, id: u64, resp: &PeerResponse, out: &mut Vec<u8>) {
    let start = begin(out, version, resp.opcode(), id);
    match resp {
        PeerResponse::Hello {
            version,
            node_id,
            shards,
            challenge,
        } => {
            out.push(*version);
            out.extend_from_slice(&node_id.to_le_bytes());
            out.extend_from_slice(&shards.to_le_bytes());
            if let Some(c) = challenge {
                out.extend_from_slice(&c.nonce);
                out.extend_from_slice(&c.proof);
            }
        }
        PeerResponse::Authenticated => {}
        PeerResponse::Set(set) => {
            out.push(u8::from(set.is_some()));
            put_bytes(out, set.as_deref().unwrap_or_default());
        }
        PeerResponse::Applied => {}
        PeerResponse::Hashes(hashes) => {
            out.extend_from_slice(&(hashes.len() as u32).to_le_bytes());
            for h in hashes {
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
        PeerResponse::Digests(page) => {
            put_page(out, page, |out, d| out.extend_from_slice(&d.to_le_bytes()))
        }
        PeerResponse::Entries(page) => put_page(out, page, |out, set| put_bytes(out, set)),
        PeerResponse::Minted { context, set } => {
            put_bytes(out, context);
            put_bytes(out, set);
        }
        PeerResponse::Error { code, message } => put_error(out, *code, message),
    }
    end(out, start);
}

fn key_field<'a>(r: &mut Reader<'a>, limits: &Limits) -> Result<&'a [u8], (ErrorCode, String)> {
    let k = r
        .bytes(usize::MAX)
        .map_err(|m| (ErrorCode::BadFrame, format!("key: {m}")))?;
    if k.is_empty() || k.len() > limits.max_key_bytes {
        return Err((
            ErrorCode::KeyTooLarge,
            format!(
                "key of {} bytes is outside 1..={}",
                k.len(),
                limits.max_key_bytes
            ),
        ));
    }
    Ok(k)
}

/// Decodes one request from the front of `buf`: `Ok(None)` when more bytes
/// are needed, else the request, its id, its frame version and the bytes
/// consumed. Errors carry what is needed to answer and resynchronise.
pub fn decode_request(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(u64, u8, PeerRequest, usize)>, FrameError> {
    let Some(f) = frame(buf, limits.max_frame_bytes, VERSION_MIN..=VERSION_MAX)? else {
        return Ok(None);
    };
    let bad = |(code, message): (ErrorCode, String)| FrameError {
        id: Some(f.id),
        code,
        message,
        skip: Some(f.total),
    };
    let truncated = |what: &str| (ErrorCode::BadFrame, format!("{what} truncated"));
    let mut r = Reader { b: f.body, at: 0 };
    let req = match f.opcode {
        0x41 => {
            let version_min = r.u8().ok_or_else(|| bad(truncated("hello")))?;
            let version_max = r.u8().ok_or_else(|| bad(truncated("hello")))?;
            let node_id = r.u32().ok_or_else(|| bad(truncated("hello")))?;
            let cluster = r
                .bytes(256)
                .map_err(|m| bad((ErrorCode::BadFrame, format!("cluster name: {m}"))))?;
            let nonce = match r.take(NONCE_BYTES) {
                Some(n) => Some(fixed::<NONCE_BYTES>(n)),
                None if r.done() => None,
                None => return Err(bad(truncated("hello nonce"))),
            };
            PeerRequest::Hello {
                version_min,
                version_max,
                node_id,
                cluster: String::from_utf8_lossy(cluster).into_owned(),
                nonce,
            }
        }
        0x49 => PeerRequest::Auth {
            proof: fixed::<PROOF_BYTES>(r.take(PROOF_BYTES).ok_or_else(|| bad(truncated("auth")))?),
        },
        0x42 => PeerRequest::Read {
            key: key_field(&mut r, limits).map_err(bad)?.to_vec(),
        },
        0x43 => {
            let key = key_field(&mut r, limits).map_err(bad)?.to_vec();
            let set = r
                .bytes(usize::MAX)
                .map_err(|m| bad((ErrorCode::BadFrame, format!("sibling set: {m}"))))?
                .to_vec();
            PeerRequest::Apply { key, set }
        }
        0x44 if f.version >= VERSION_HINT => {
            let owner = r.u32().ok_or_else(|| bad(truncated("hint")))?;
            let key = key_field(&mut r, limits).map_err(bad)?.to_vec();
            let set = r
                .bytes(usize::MAX)
                .map_err(|m| bad((ErrorCode::BadFrame, format!("sibling set: {m}"))))?
                .to_vec();
            PeerRequest::Hint { owner, key, set }
        }
        0x48 if f.version >= VERSION_MINT => {
            let context_kind = r.u8().ok_or_else(|| bad(truncated("mint")))?;
            let ttl_ms = r.u64().ok_or_else(|| bad(truncated("mint")))?;
            let context = r
                .bytes(usize::MAX)
                .map_err(|m| bad((ErrorCode::BadFrame, format!("context: {m}"))))?
                .to_vec();
            let key = key_field(&mut r, limits).map_err(bad)?.to_vec();
            let has_value = r.u8().ok_or_else(|| bad(truncated("mint")))?;
            let value = r
                .bytes(limits.max_value_bytes)
                .map_err(|m| bad((ErrorCode::ValueTooLarge, format!("value: {m}"))))?;
            if context_kind > 2 || has_value > 1 || (has_value == 0 && !value.is_empty()) {
                return Err(bad((
                    ErrorCode::BadFrame,
                    format!("mint request: context kind {context_kind}, value flag {has_value}"),
                )));
            }
            PeerRequest::Mint {
                context_kind,
                ttl_ms,
                context,
                key,
                value: (has_value == 1).then(|| value.to_vec()),
            }
        }
        0x45 if f.version >= VERSION_RANGES => {
            let start = r.u64().ok_or_else(|| bad(truncated("tree")))?;
            let end = r.u64().ok_or_else(|| bad(truncated("tree")))?;
            let levels = r.u8().ok_or_else(|| bad(truncated("tree")))?;
            let level = r.u8().ok_or_else(|| bad(truncated("tree")))?;
            let n = r.u32().ok_or_else(|| bad(truncated("tree")))? as usize;
            if n > TREE_INDICES_MAX || level > levels || start > end {
                return Err(bad((
                    ErrorCode::BadFrame,
                    format!("tree request: {n} indices, level {level} of {levels}, range {start}..={end}"),
                )));
            }
            let indices = (0..n)
                .map(|_| r.u32())
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| bad(truncated("tree")))?;
            PeerRequest::Tree {
                start,
                end,
                levels,
                level,
                indices,
            }
        }
        op @ (0x46 | 0x47) if f.version >= VERSION_RANGES => {
            let start = r.u64().ok_or_else(|| bad(truncated("range")))?;
            let end = r.u64().ok_or_else(|| bad(truncated("range")))?;
            let after = r
                .bytes(limits.max_key_bytes)
                .map_err(|m| bad((ErrorCode::BadFrame, format!("after: {m}"))))?;
            let after = (!after.is_empty()).then(|| after.to_vec());
            let limit = r.u32().ok_or_else(|| bad(truncated("range")))?;
            if start > end || limit == 0 {
                return Err(bad((
                    ErrorCode::BadFrame,
                    format!("range request: range {start}..={end}, limit {limit}"),
                )));
            }
            if op == 0x46 {
                PeerRequest::Digests {
                    start,
                    end,
                    after,
                    limit,
                }
            } else {
                PeerRequest::Scan {
                    start,
                    end,
                    after,
                    limit,
                }
            }
        }
        other => {
            return Err(bad((
                ErrorCode::UnknownOpcode,
                format!("unknown internode opcode {other:#04x}"),
            )))
        }
    };
    if !r.done() {
        return Err(bad((
            ErrorCode::BadFrame,
            "bytes after the end of the request body".into(),
        )));
    }
    Ok(Some((f.id, f.version, req, f.total)))
}

/// Decodes one response from the front of `buf` (the coordinator side).
pub fn decode_response(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(u64, PeerResponse, usize)>, FrameError> {
    let Some(f) = frame(buf, limits.max_frame_bytes, VERSION_MIN..=VERSION_MAX)? else {
        return Ok(None);
    };
    let bad = |message: &str| f.malformed(message);
    let mut r = Reader { b: f.body, at: 0 };
    let resp = match f.opcode {
        0xC1 => {
            let version = r.u8().ok_or_else(|| bad("hello truncated"))?;
            let node_id = r.u32().ok_or_else(|| bad("hello truncated"))?;
            let shards = r.u16().ok_or_else(|| bad("hello truncated"))?;
            let challenge = if r.done() {
                None
            } else {
                let nonce = r
                    .take(NONCE_BYTES)
                    .ok_or_else(|| bad("hello challenge truncated"))?;
                let proof = r
                    .take(PROOF_BYTES)
                    .ok_or_else(|| bad("hello challenge truncated"))?;
                Some(HelloChallenge {
                    nonce: fixed::<NONCE_BYTES>(nonce),
                    proof: fixed::<PROOF_BYTES>(proof),
                })
            };
            PeerResponse::Hello {
                version,
                node_id,
                shards,
                challenge,
            }
        }
        0xC9 => PeerResponse::Authenticated,
        0xC2 => {
            let present = r.u8().ok_or_else(|| bad("set truncated"))?;
            let set = r.bytes(usize::MAX).map_err(bad)?;
            PeerResponse::Set((present != 0).then(|| set.to_vec()))
        }
        0xC3 => PeerResponse::Applied,
        0xC5 => {
            let n = r.u32().ok_or_else(|| bad("hashes truncated"))? as usize;
            if n > TREE_INDICES_MAX {
                return Err(bad("too many hashes"));
            }
            let hashes = (0..n)
                .map(|_| r.u64())
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| bad("hashes truncated"))?;
            PeerResponse::Hashes(hashes)
        }
        0xC6 => PeerResponse::Digests(read_page(&mut r, |r| r.u64()).map_err(bad)?),
        0xC8 => {
            let context = r.bytes(usize::MAX).map_err(bad)?.to_vec();
            let set = r.bytes(usize::MAX).map_err(bad)?.to_vec();
            PeerResponse::Minted { context, set }
        }
        0xC7 => PeerResponse::Entries(
            read_page(&mut r, |r| r.bytes(usize::MAX).ok().map(<[u8]>::to_vec)).map_err(bad)?,
        ),
        0xFF => {
            let (code, message) = read_error(&mut r).map_err(bad)?;
            PeerResponse::Error { code, message }
        }
        other => return Err(bad(&format!("unknown internode response {other:#04x}"))),
    };
    if !r.done() {
        return Err(bad("bytes after the end of the response body"));
    }
    Ok(Some((f.id, resp, f.total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_request() -> impl Strategy<Value = PeerRequest> {
        let key = prop::collection::vec(any::<u8>(), 1..64);
        prop_oneof![
            (
                any::<u8>(),
                any::<u8>(),
                any::<u32>(),
                "[a-z]{0,20}",
                prop::option::of(any::<[u8; NONCE_BYTES]>())
            )
                .prop_map(|(version_min, version_max, node_id, cluster, nonce)| {
                    PeerRequest::Hello {
                        version_min,
                        version_max,
                        node_id,
                        cluster,
                        nonce,
                    }
                }),
            any::<[u8; PROOF_BYTES]>().prop_map(|proof| PeerRequest::Auth { proof }),
            key.clone().prop_map(|key| PeerRequest::Read { key }),
            (key.clone(), prop::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(key, set)| PeerRequest::Apply { key, set }),
            (
                any::<u32>(),
                key,
                prop::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(owner, key, set)| PeerRequest::Hint { owner, key, set }),
            (
                any::<u64>(),
                any::<u64>(),
                0u8..6,
                prop::collection::vec(any::<u32>(), 0..40)
            )
                .prop_map(|(a, b, levels, indices)| PeerRequest::Tree {
                    start: a.min(b),
                    end: a.max(b),
                    levels,
                    level: levels / 2,
                    indices
                }),
            (
                any::<u64>(),
                prop::option::of(prop::collection::vec(any::<u8>(), 1..20)),
                1u32..1000
            )
                .prop_map(|(a, after, limit)| PeerRequest::Digests {
                    start: a / 2,
                    end: a,
                    after,
                    limit
                }),
            (
                any::<u64>(),
                prop::option::of(prop::collection::vec(any::<u8>(), 1..20)),
                1u32..1000
            )
                .prop_map(|(a, after, limit)| PeerRequest::Scan {
                    start: a / 2,
                    end: a,
                    after,
                    limit
                }),
            (
                0u8..3,
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(any::<u8>(), 1..20),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..40))
            )
                .prop_map(|(context_kind, ttl_ms, context, key, value)| {
                    PeerRequest::Mint {
                        context_kind,
                        ttl_ms,
                        context,
                        key,
                        value,
                    }
                }),
        ]
    }

    fn arb_response() -> impl Strategy<Value = PeerResponse> {
        prop_oneof![
            (
                any::<u8>(),
                any::<u32>(),
                any::<u16>(),
                prop::option::of((any::<[u8; NONCE_BYTES]>(), any::<[u8; PROOF_BYTES]>()))
            )
                .prop_map(|(version, node_id, shards, challenge)| {
                    PeerResponse::Hello {
                        version,
                        node_id,
                        shards,
                        challenge: challenge.map(|(nonce, proof)| HelloChallenge { nonce, proof }),
                    }
                }),
            Just(PeerResponse::Authenticated),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..300))
                .prop_map(PeerResponse::Set),
            Just(PeerResponse::Applied),
            (
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(context, set)| PeerResponse::Minted { context, set }),
            prop::collection::vec(any::<u64>(), 0..50).prop_map(PeerResponse::Hashes),
            (
                prop::collection::vec(
                    (prop::collection::vec(any::<u8>(), 0..9), any::<u64>()),
                    0..10
                ),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..9))
            )
                .prop_map(|(entries, next_after)| PeerResponse::Digests(Page {
                    entries,
                    next_after
                })),
            (
                prop::collection::vec(
                    (
                        prop::collection::vec(any::<u8>(), 0..9),
                        prop::collection::vec(any::<u8>(), 0..30)
                    ),
                    0..10
                ),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..9))
            )
                .prop_map(|(entries, next_after)| PeerResponse::Entries(Page {
                    entries,
                    next_after
                })),
            (1u16..20, "[ -~]{0,40}").prop_map(|(c, message)| PeerResponse::Error {
                code: ErrorCode::from_u16(c),
                message
            }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(id in any::<u64>(), req in arb_request()) {
            let mut out = Vec::new();
            encode_request(VERSION_MAX, id, &req, &mut out);
            let (got_id, _, got, used) = decode_request(&out, &Limits::default())
                .expect("valid").expect("complete");
            prop_assert_eq!((got_id, got, used), (id, req, out.len()));
            for cut in 0..out.len() {
                prop_assert!(decode_request(&out[..cut], &Limits::default()).expect("prefix").is_none());
            }
        }

        #[test]
        fn responses_round_trip(id in any::<u64>(), resp in arb_response()) {
            let mut out = Vec::new();
            encode_response(VERSION_MAX, id, &resp, &mut out);
            let (got_id, got, used) = decode_response(&out, &Limits::default())
                .expect("valid").expect("complete");
            prop_assert_eq!((got_id, got, used), (id, resp, out.len()));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_request(&bytes, &Limits::default());
            let _ = decode_response(&bytes, &Limits::default());
        }
    }

    #[test]
    fn a_newer_version_gets_a_clear_error_naming_ours() {
        let mut out = Vec::new();
        encode_request(
            VERSION_MAX + 1,
            7,
            &PeerRequest::Read { key: b"k".to_vec() },
            &mut out,
        );
        let e = decode_request(&out, &Limits::default()).expect_err("unsupported");
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        assert_eq!(e.id, Some(7));
        assert!(e.message.contains("1..=4"), "{}", e.message);
        assert_eq!(e.skip, Some(out.len()));
    }

    #[test]
    fn hint_is_unknown_in_version_1() {
        let hint = PeerRequest::Hint {
            owner: 3,
            key: b"k".to_vec(),
            set: vec![1],
        };
        let mut out = Vec::new();
        encode_request(1, 5, &hint, &mut out);
        let e = decode_request(&out, &Limits::default()).expect_err("v1 has no HINT");
        assert_eq!(e.code, ErrorCode::UnknownOpcode);
        out.clear();
        encode_request(VERSION_HINT, 5, &hint, &mut out);
        let (_, _, got, _) = decode_request(&out, &Limits::default())
            .expect("v2")
            .expect("complete");
        assert_eq!(got, hint);
    }
}
