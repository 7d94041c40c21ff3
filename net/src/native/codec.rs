//! Encoding and decoding native frames (sans-io).

use super::types::{
    Consistency, ErrorCode, Request, RequestBody, Response, ResponseBody, Sibling, VERSION,
};
pub use crate::frame::FrameError;
use crate::frame::{begin, end, frame, put_bytes, put_error, read_error, Reader};
use crate::Limits;

/// Appends the encoding of `req` to `out`.
pub fn encode_request(req: &Request, out: &mut Vec<u8>) {
    let start = begin(out, VERSION, req.body.opcode(), req.id);
    match &req.body {
        RequestBody::Get { consistency, key } => {
            out.push(consistency.to_byte());
            put_bytes(out, key);
        }
        RequestBody::Put {
            consistency,
            ttl_ms,
            context,
            key,
            value,
        } => {
            out.push(consistency.to_byte());
            out.extend_from_slice(&ttl_ms.to_le_bytes());
            put_bytes(out, context);
            put_bytes(out, key);
            put_bytes(out, value);
        }
        RequestBody::Delete {
            consistency,
            context,
            key,
        } => {
            out.push(consistency.to_byte());
            put_bytes(out, context);
            put_bytes(out, key);
        }
        RequestBody::Ping | RequestBody::Topology | RequestBody::Status => {}
        RequestBody::Admin(command) => put_bytes(out, command),
        RequestBody::Auth { user, password } => {
            put_bytes(out, user);
            put_bytes(out, password);
        }
    }
    end(out, start);
}

/// Appends the encoding of `resp` to `out`.
pub fn encode_response(resp: &Response, out: &mut Vec<u8>) {
    let start = begin(out, VERSION, resp.body.opcode(), resp.id);
    match &resp.body {
        ResponseBody::Value { context, siblings } => {
            put_bytes(out, context);
            out.extend_from_slice(&(siblings.len() as u16).to_le_bytes());
            for s in siblings {
                out.push(u8::from(s.value.is_none()));
                out.extend_from_slice(&s.timestamp.to_le_bytes());
                out.extend_from_slice(&s.expires_at_ms.to_le_bytes());
                put_bytes(out, s.value.as_deref().unwrap_or_default());
            }
        }
        ResponseBody::NotFound { context } | ResponseBody::Ok { context } => {
            put_bytes(out, context)
        }
        ResponseBody::Pong => {}
        ResponseBody::Topology(b) | ResponseBody::Status(b) => put_bytes(out, b),
        ResponseBody::Error { code, message } => put_error(out, *code, message),
    }
    end(out, start);
}

/// Decodes one request from the front of `buf`: `Ok(None)` when more bytes
/// are needed, `Ok(Some((request, consumed)))`, or a [`FrameError`].
pub fn decode_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, FrameError> {
    let Some(f) = frame(buf, limits.max_frame_bytes, VERSION..=VERSION)? else {
        return Ok(None);
    };
    let bad = |code: ErrorCode, message: String| FrameError {
        id: Some(f.id),
        code,
        message,
        skip: Some(f.total),
    };
    let mut r = Reader { b: f.body, at: 0 };
    let level = |b: Option<u8>| -> Result<Consistency, FrameError> {
        let b = b.ok_or_else(|| bad(ErrorCode::BadFrame, "missing consistency byte".into()))?;
        Consistency::from_byte(b).ok_or_else(|| {
            bad(
                ErrorCode::BadFrame,
                format!("unknown consistency level {b:#04x}"),
            )
        })
    };
    let key = |r: &mut Reader<'_>| -> Result<Vec<u8>, FrameError> {
        let k = r
            .bytes(usize::MAX)
            .map_err(|m| bad(ErrorCode::BadFrame, format!("key: {m}")))?;
        if k.is_empty() || k.len() > limits.max_key_bytes {
            return Err(bad(
                ErrorCode::KeyTooLarge,
                format!(
                    "key of {} bytes is outside 1..={}",
                    k.len(),
                    limits.max_key_bytes
                ),
            ));
        }
        Ok(k.to_vec())
    };
    let field = |r: &mut Reader<'_>, what: &str| -> Result<Vec<u8>, FrameError> {
        r.bytes(usize::MAX)
            .map(<[u8]>::to_vec)
            .map_err(|m| bad(ErrorCode::BadFrame, format!("{what}: {m}")))
    };
    let body = match f.opcode {
        0x01 => RequestBody::Get {
            consistency: level(r.u8())?,
            key: key(&mut r)?,
        },
        0x02 => {
            let consistency = level(r.u8())?;
            let ttl_ms = r
                .u64()
                .ok_or_else(|| bad(ErrorCode::BadFrame, "missing ttl".into()))?;
            let context = field(&mut r, "context")?;
            let key = key(&mut r)?;
            let value = field(&mut r, "value")?;
            if value.len() > limits.max_value_bytes {
                return Err(bad(
                    ErrorCode::ValueTooLarge,
                    format!(
                        "value of {} bytes exceeds the limit of {}",
                        value.len(),
                        limits.max_value_bytes
                    ),
                ));
            }
            RequestBody::Put {
                consistency,
                ttl_ms,
                context,
                key,
                value,
            }
        }
        0x03 => RequestBody::Delete {
            consistency: level(r.u8())?,
            context: field(&mut r, "context")?,
            key: key(&mut r)?,
        },
        0x04 => RequestBody::Ping,
        0x05 => RequestBody::Topology,
        0x06 => RequestBody::Status,
        0x07 => RequestBody::Admin(field(&mut r, "command")?),
        0x08 => RequestBody::Auth {
            user: field(&mut r, "user")?,
            password: field(&mut r, "password")?,
        },
        other => {
            return Err(bad(
                ErrorCode::UnknownOpcode,
                format!("unknown opcode {other:#04x}"),
            ));
        }
    };
    if !r.done() {
        return Err(bad(
            ErrorCode::BadFrame,
            "bytes after the end of the request body".into(),
        ));
    }
    Ok(Some((Request { id: f.id, body }, f.total)))
}

/// Decodes one response (the client side). Errors mean the server sent
/// something this client cannot parse; the connection should be dropped.
pub fn decode_response(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Response, usize)>, FrameError> {
    let Some(f) = frame(buf, limits.max_frame_bytes, VERSION..=VERSION)? else {
        return Ok(None);
    };
    let bad = |message: &str| f.malformed(message);
    let mut r = Reader { b: f.body, at: 0 };
    let body = match f.opcode {
        0x81 => {
            let context = r.bytes(usize::MAX).map_err(bad)?.to_vec();
            let n = r.u16().ok_or_else(|| bad("missing sibling count"))?;
            let mut siblings = Vec::with_capacity(usize::from(n).min(f.body.len() / 21));
            for _ in 0..n {
                let tombstone = r.u8().ok_or_else(|| bad("sibling truncated"))?;
                let timestamp = r.u64().ok_or_else(|| bad("sibling truncated"))?;
                let expires_at_ms = r.u64().ok_or_else(|| bad("sibling truncated"))?;
                let value = r.bytes(usize::MAX).map_err(bad)?;
                siblings.push(Sibling {
                    value: (tombstone == 0).then(|| value.to_vec()),
                    timestamp,
                    expires_at_ms,
                });
            }
            ResponseBody::Value { context, siblings }
        }
        0x82 => ResponseBody::NotFound {
            context: r.bytes(usize::MAX).map_err(bad)?.to_vec(),
        },
        0x83 => ResponseBody::Ok {
            context: r.bytes(usize::MAX).map_err(bad)?.to_vec(),
        },
        0x84 => ResponseBody::Pong,
        0x85 => ResponseBody::Topology(r.bytes(usize::MAX).map_err(bad)?.to_vec()),
        0x86 => ResponseBody::Status(r.bytes(usize::MAX).map_err(bad)?.to_vec()),
        0xFF => {
            let (code, message) = read_error(&mut r).map_err(bad)?;
            ResponseBody::Error { code, message }
        }
        other => return Err(bad(&format!("unknown response opcode {other:#04x}"))),
    };
    if !r.done() {
        return Err(bad("bytes after the end of the response body"));
    }
    Ok(Some((Response { id: f.id, body }, f.total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_level() -> impl Strategy<Value = Consistency> {
        prop_oneof![
            Just(Consistency::Default),
            Just(Consistency::One),
            Just(Consistency::Two),
            Just(Consistency::Quorum),
            Just(Consistency::All),
            (1u8..128).prop_map(Consistency::Count),
        ]
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..max)
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let key = prop::collection::vec(any::<u8>(), 1..64);
        let body = prop_oneof![
            (arb_level(), key.clone())
                .prop_map(|(consistency, key)| RequestBody::Get { consistency, key }),
            (
                arb_level(),
                any::<u64>(),
                arb_bytes(40),
                key.clone(),
                arb_bytes(300)
            )
                .prop_map(|(consistency, ttl_ms, context, key, value)| {
                    RequestBody::Put {
                        consistency,
                        ttl_ms,
                        context,
                        key,
                        value,
                    }
                }),
            (arb_level(), arb_bytes(40), key).prop_map(|(consistency, context, key)| {
                RequestBody::Delete {
                    consistency,
                    context,
                    key,
                }
            }),
            Just(RequestBody::Ping),
            Just(RequestBody::Topology),
            Just(RequestBody::Status),
            arb_bytes(100).prop_map(RequestBody::Admin),
            (arb_bytes(20), arb_bytes(40))
                .prop_map(|(user, password)| RequestBody::Auth { user, password }),
        ];
        (any::<u64>(), body).prop_map(|(id, body)| Request { id, body })
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        let sibling = (prop::option::of(arb_bytes(100)), any::<u64>(), any::<u64>()).prop_map(
            |(value, timestamp, expires_at_ms)| Sibling {
                value,
                timestamp,
                expires_at_ms,
            },
        );
        let body = prop_oneof![
            (arb_bytes(40), prop::collection::vec(sibling, 1..4))
                .prop_map(|(context, siblings)| ResponseBody::Value { context, siblings }),
            arb_bytes(40).prop_map(|context| ResponseBody::NotFound { context }),
            arb_bytes(40).prop_map(|context| ResponseBody::Ok { context }),
            Just(ResponseBody::Pong),
            arb_bytes(100).prop_map(ResponseBody::Topology),
            arb_bytes(100).prop_map(ResponseBody::Status),
            (1u16..20, "[a-z ]{0,40}").prop_map(|(c, message)| ResponseBody::Error {
                code: ErrorCode::from_u16(c),
                message
            }),
        ];
        (any::<u64>(), body).prop_map(|(id, body)| Response { id, body })
    }

    proptest! {
        #[test]
        fn requests_round_trip_and_stream(reqs in prop::collection::vec(arb_request(), 1..5)) {
            let mut buf = Vec::new();
            for r in &reqs {
                encode_request(r, &mut buf);
            }
            // Feed the stream in two pieces split anywhere.
            for split in [0, 1, buf.len() / 2, buf.len().saturating_sub(1)] {
                let limits = Limits::default();
                let mut got = Vec::new();
                let mut at = 0;
                let mut avail = split;
                while got.len() < reqs.len() {
                    match decode_request(&buf[at..avail], &limits).expect("valid") {
                        Some((r, n)) => { got.push(r); at += n; }
                        None => { prop_assert!(avail < buf.len()); avail = buf.len(); }
                    }
                }
                prop_assert_eq!(&got, &reqs);
            }
        }

        #[test]
        fn responses_round_trip(resp in arb_response()) {
            let mut buf = Vec::new();
            encode_response(&resp, &mut buf);
            let (got, n) = decode_response(&buf, &Limits::default()).expect("valid").expect("complete");
            prop_assert_eq!(n, buf.len());
            prop_assert_eq!(got, resp);
            for cut in 0..buf.len() {
                prop_assert!(decode_response(&buf[..cut], &Limits::default()).expect("prefix").is_none());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_request(&bytes, &Limits::default());
            let _ = decode_response(&bytes, &Limits::default());
        }
    }

    #[test]
    fn oversized_frames_are_rejected_from_the_header() {
        let limits = Limits {
            max_frame_bytes: 1000,
            ..Limits::default()
        };
        let mut buf = (5000u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&[VERSION, 0x01]);
        buf.extend_from_slice(&77u64.to_le_bytes());
        let e = decode_request(&buf, &limits).expect_err("too large");
        assert_eq!(
            (e.code, e.id, e.skip),
            (ErrorCode::FrameTooLarge, Some(77), None)
        );
    }

    #[test]
    fn unknown_opcode_keeps_the_request_id_and_the_stream() {
        let mut buf = Vec::new();
        let start = begin(&mut buf, VERSION, 0x42, 9);
        end(&mut buf, start);
        encode_request(
            &Request {
                id: 10,
                body: RequestBody::Ping,
            },
            &mut buf,
        );
        let e = decode_request(&buf, &Limits::default()).expect_err("unknown");
        assert_eq!((e.code, e.id), (ErrorCode::UnknownOpcode, Some(9)));
        let skip = e.skip.expect("resumable");
        let (next, _) = decode_request(&buf[skip..], &Limits::default())
            .expect("ok")
            .expect("complete");
        assert_eq!(next.id, 10);
    }

    #[test]
    fn oversized_values_and_keys_are_typed_errors() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            ..Limits::default()
        };
        let mut buf = Vec::new();
        encode_request(
            &Request {
                id: 1,
                body: RequestBody::Put {
                    consistency: Consistency::Default,
                    ttl_ms: 0,
                    context: vec![],
                    key: b"k".to_vec(),
                    value: vec![0; 9],
                },
            },
            &mut buf,
        );
        assert_eq!(
            decode_request(&buf, &limits).expect_err("big").code,
            ErrorCode::ValueTooLarge
        );
        let mut buf = Vec::new();
        encode_request(
            &Request {
                id: 1,
                body: RequestBody::Get {
                    consistency: Consistency::One,
                    key: b"toolong".to_vec(),
                },
            },
            &mut buf,
        );
        assert_eq!(
            decode_request(&buf, &limits).expect_err("big").code,
            ErrorCode::KeyTooLarge
        );
    }
}
