//! Allocation-free request encoding and response scanning for the two
//! protocols. The generator only needs to know where a response ends, its
//! request id (native), whether it is an error, and — for read-modify-write
//! on the native protocol — where the causal context lies; so instead of
//! decoding into owned messages (as `corekv_net`'s codecs do) it scans the
//! bytes in place. Frame layouts: docs/PROTOCOL.md.

use std::ops::Range;

use corekv_net::native::{Consistency, HEADER_BYTES, VERSION};

/// What a response said, as far as the generator cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// A write succeeded (native OK, RESP `+OK`/integer).
    Ok,
    /// A read found a value.
    Value,
    /// A read found nothing (not an error).
    NotFound,
    /// The server answered with an error.
    Error,
}

/// One scanned response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Native request id (0 for RESP, whose replies come in order).
    pub id: u64,
    /// Classification.
    pub kind: ReplyKind,
    /// Bytes the response occupies.
    pub len: usize,
    /// Native VALUE/NOT_FOUND: the causal context's byte range in the buffer.
    pub context: Range<usize>,
    /// Errors: the message's byte range in the buffer.
    pub message: Range<usize>,
}

/// A response the generator cannot parse; the connection is dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed response: {0}")]
pub struct ProtoError(pub String);

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn begin(out: &mut Vec<u8>, opcode: u8, id: u64) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    out.push(opcode);
    out.extend_from_slice(&id.to_le_bytes());
    start
}

fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends a native GET.
#[inline]
pub fn native_get(out: &mut Vec<u8>, id: u64, key: &[u8]) {
    let start = begin(out, 0x01, id);
    out.push(Consistency::Default.to_byte());
    put_bytes(out, key);
    finish(out, start);
}

/// Appends a native PUT (no TTL) carrying `context` (may be empty).
#[inline]
pub fn native_put(out: &mut Vec<u8>, id: u64, key: &[u8], context: &[u8], value: &[u8]) {
    let start = begin(out, 0x02, id);
    out.push(Consistency::Default.to_byte());
    out.extend_from_slice(&0u64.to_le_bytes());
    put_bytes(out, context);
    put_bytes(out, key);
    put_bytes(out, value);
    finish(out, start);
}

/// Scans one native response at the start of `buf`: `Ok(None)` when more
/// bytes are needed.
pub fn native_scan(buf: &[u8], max_frame: usize) -> Result<Option<Scanned>, ProtoError> {
    let Some(len) = le_u32(buf, 0) else {
        return Ok(None);
    };
    let len = len as usize;
    if len < HEADER_BYTES - 4 || len > max_frame {
        return Err(ProtoError(format!("native frame length {len}")));
    }
    let total = len + 4;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[4] != VERSION {
        return Err(ProtoError(format!("protocol version {}", buf[4])));
    }
    let opcode = buf[5];
    let mut id = [0u8; 8];
    id.copy_from_slice(&buf[6..14]);
    let id = u64::from_le_bytes(id);
    let body = HEADER_BYTES;
    let field = |at: usize| -> Result<Range<usize>, ProtoError> {
        let n = le_u32(&buf[..total], at)
            .ok_or_else(|| ProtoError("field length past frame end".into()))?
            as usize;
        let r = at + 4..at + 4 + n;
        if r.end > total {
            return Err(ProtoError("field past frame end".into()));
        }
        Ok(r)
    };
    let (kind, context, message) = match opcode {
        0x81 => (ReplyKind::Value, field(body)?, 0..0),
        0x82 => (ReplyKind::NotFound, field(body)?, 0..0),
        0x83 | 0x84 => (ReplyKind::Ok, 0..0, 0..0),
        0xFF => (ReplyKind::Error, 0..0, field(body + 2)?),
        other => return Err(ProtoError(format!("unexpected opcode {other:#04x}"))),
    };
    Ok(Some(Scanned {
        id,
        kind,
        len: total,
        context,
        message,
    }))
}

fn resp_bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    push_usize(out, b.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn push_usize(out: &mut Vec<u8>, mut n: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends a RESP command of bulk-string arguments (`AUTH user pass`).
pub fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_usize(out, args.len());
    out.extend_from_slice(b"\r\n");
    for a in args {
        resp_bulk(out, a);
    }
}

/// Appends a RESP `GET key`.
#[inline]
pub fn resp_get(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
    resp_bulk(out, key);
}

/// Appends a RESP `SET key value`.
#[inline]
pub fn resp_set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    resp_bulk(out, key);
    resp_bulk(out, value);
}

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let i = memchr(b'\r', buf.get(from..)?)? + from;
    (buf.get(i + 1) == Some(&b'\n')).then_some(i)
}

#[inline]
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

fn parse_int(b: &[u8]) -> Result<i64, ProtoError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtoError(format!("bad RESP integer {:?}", String::from_utf8_lossy(b))))
}

/// Scans one RESP reply at `buf[at..]`: returns its kind and end offset.
fn resp_scan_at(
    buf: &[u8],
    at: usize,
    depth: u32,
) -> Result<Option<(ReplyKind, usize, Range<usize>)>, ProtoError> {
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some(eol) = line_end(buf, at + 1) else {
        if buf.len() - at > 64 * 1024 {
            return Err(ProtoError("RESP line too long".into()));
        }
        return Ok(None);
    };
    let line = at + 1..eol;
    let next = eol + 2;
    match tag {
        b'+' | b':' => Ok(Some((ReplyKind::Ok, next, 0..0))),
        b'-' => Ok(Some((ReplyKind::Error, next, line))),
        b'$' => {
            let n = parse_int(&buf[line])?;
            if n < 0 {
                return Ok(Some((ReplyKind::NotFound, next, 0..0)));
            }
            let end = next + n as usize + 2;
            if buf.len() < end {
                return Ok(None);
            }
            Ok(Some((ReplyKind::Value, end, 0..0)))
        }
        b'*' => {
            if depth > 8 {
                return Err(ProtoError("RESP arrays nested too deep".into()));
            }
            let n = parse_int(&buf[line])?;
            if n < 0 {
                return Ok(Some((ReplyKind::NotFound, next, 0..0)));
            }
            let mut pos = next;
            for _ in 0..n {
                match resp_scan_at(buf, pos, depth + 1)? {
                    Some((_, end, _)) => pos = end,
                    None => return Ok(None),
                }
            }
            Ok(Some((ReplyKind::Value, pos, 0..0)))
        }
        other => Err(ProtoError(format!(
            "unexpected RESP type byte {other:#04x}"
        ))),
    }
}

/// Scans one RESP reply at the start of `buf`: `Ok(None)` when more bytes
/// are needed.
pub fn resp_scan(buf: &[u8]) -> Result<Option<Scanned>, ProtoError> {
    Ok(
        resp_scan_at(buf, 0, 0)?.map(|(kind, len, message)| Scanned {
            id: 0,
            kind,
            len,
            context: 0..0,
            message,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_net::native::{
        decode_request, encode_request, encode_response, ErrorCode, Request, RequestBody, Response,
        ResponseBody,
    };
    use corekv_net::Limits;

    #[test]
    fn native_requests_match_the_reference_codec() {
        let mut ours = Vec::new();
        native_get(&mut ours, 7, b"key");
        native_put(&mut ours, 8, b"key", b"ctx", b"value");
        let mut theirs = Vec::new();
        encode_request(
            &Request {
                id: 7,
                body: RequestBody::Get {
                    consistency: Consistency::Default,
                    key: b"key".to_vec(),
                },
            },
            &mut theirs,
        );
        encode_request(
            &Request {
                id: 8,
                body: RequestBody::Put {
                    consistency: Consistency::Default,
                    ttl_ms: 0,
                    context: b"ctx".to_vec(),
                    key: b"key".to_vec(),
                    value: b"value".to_vec(),
                },
            },
            &mut theirs,
        );
        assert_eq!(ours, theirs);
        let (r, n) = decode_request(&ours, &Limits::default()).unwrap().unwrap();
        assert_eq!(r.id, 7);
        assert!(n < ours.len());
    }

    #[test]
    fn native_scan_reads_every_response_kind() {
        let cases = [
            (
                ResponseBody::Value {
                    context: b"abc".to_vec(),
                    siblings: vec![],
                },
                ReplyKind::Value,
            ),
            (
                ResponseBody::NotFound {
                    context: b"zz".to_vec(),
                },
                ReplyKind::NotFound,
            ),
            (ResponseBody::Ok { context: vec![] }, ReplyKind::Ok),
            (
                ResponseBody::Error {
                    code: ErrorCode::Overloaded,
                    message: "busy".into(),
                },
                ReplyKind::Error,
            ),
        ];
        for (i, (body, kind)) in cases.into_iter().enumerate() {
            let mut buf = Vec::new();
            encode_response(
                &Response {
                    id: i as u64 + 100,
                    body: body.clone(),
                },
                &mut buf,
            );
            for cut in 0..buf.len() {
                assert_eq!(native_scan(&buf[..cut], 1 << 20).unwrap(), None);
            }
            let s = native_scan(&buf, 1 << 20).unwrap().unwrap();
            assert_eq!((s.id, s.kind, s.len), (i as u64 + 100, kind, buf.len()));
            match body {
                ResponseBody::Value { context, .. } | ResponseBody::NotFound { context } => {
                    assert_eq!(&buf[s.context], &context[..])
                }
                ResponseBody::Error { message, .. } => {
                    assert_eq!(&buf[s.message], message.as_bytes())
                }
                _ => {}
            }
        }
        assert!(native_scan(&[1, 0, 0, 0, 1], 1 << 20).is_err());
    }

    #[test]
    fn resp_encode_and_scan() {
        let mut out = Vec::new();
        resp_get(&mut out, b"k1");
        resp_set(&mut out, b"k1", b"hello");
        assert_eq!(
            out,
            b"*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$5\r\nhello\r\n"
        );
        let replies: &[(&[u8], ReplyKind)] = &[
            (b"+OK\r\n", ReplyKind::Ok),
            (b":1\r\n", ReplyKind::Ok),
            (b"$-1\r\n", ReplyKind::NotFound),
            (b"$5\r\nhello\r\n", ReplyKind::Value),
            (b"-ERR nope\r\n", ReplyKind::Error),
            (b"*2\r\n$1\r\na\r\n$-1\r\n", ReplyKind::Value),
        ];
        for (bytes, kind) in replies {
            for cut in 0..bytes.len() {
                assert_eq!(
                    resp_scan(&bytes[..cut]).unwrap(),
                    None,
                    "{bytes:?} cut {cut}"
                );
            }
            let s = resp_scan(bytes).unwrap().unwrap();
            assert_eq!((s.kind, s.len), (*kind, bytes.len()));
        }
        let e = resp_scan(b"-ERR nope\r\n").unwrap().unwrap();
        assert_eq!(&b"-ERR nope\r\n"[e.message], b"ERR nope");
        assert!(resp_scan(b"!x\r\n").is_err());
    }
}
