//! The frame layout both binary protocols share (client and internode):
//! `u32 length of the rest`, `u8 version`, `u8 opcode`, `u64 request id`,
//! body; little-endian. Sans-io helpers to write and find frames.

use std::ops::RangeInclusive;

use crate::native::ErrorCode;

/// Bytes before a frame's body: length, version, opcode, request id.
pub const HEADER_BYTES: usize = 4 + 1 + 1 + 8;

/// A frame that cannot be served.
///
/// `id` is the request id when the header was intact, so the server can
/// answer that request with an ERROR and go on; `skip` is the number of
/// bytes to drop to reach the next frame, or `None` when the stream cannot
/// be resynchronised and the connection must close after the reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    /// Id of the offending request, if known.
    pub id: Option<u64>,
    /// Code for the ERROR response.
    pub code: ErrorCode,
    /// Explanation for the client.
    pub message: String,
    /// Bytes to skip to continue, if the frame's extent is known.
    pub skip: Option<usize>,
}

pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    }
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8], &'static str> {
        let n = self.u32().ok_or("truncated length")? as usize;
        if n > max {
            return Err("field longer than allowed");
        }
        self.take(n).ok_or("field runs past the frame end")
    }
    /// Bytes not read yet.
    pub(crate) fn left(&self) -> usize {
        self.b.len().saturating_sub(self.at)
    }

    pub(crate) fn done(&self) -> bool {
        self.at == self.b.len()
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

pub(crate) fn begin(out: &mut Vec<u8>, version: u8, opcode: u8, id: u64) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(version);
    out.push(opcode);
    out.extend_from_slice(&id.to_le_bytes());
    start
}

pub(crate) fn end(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// A frame's header fields once its whole body is buffered.
pub(crate) struct Frame<'a> {
    pub(crate) version: u8,
    pub(crate) opcode: u8,
    pub(crate) id: u64,
    pub(crate) body: &'a [u8],
    pub(crate) total: usize,
}

/// Finds the next complete frame in `buf`.
pub(crate) fn frame<'a>(
    buf: &'a [u8],
    max_frame: usize,
    versions: RangeInclusive<u8>,
) -> Result<Option<Frame<'a>>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < HEADER_BYTES - 4 {
        return Err(FrameError {
            id: None,
            code: ErrorCode::BadFrame,
            message: format!("frame length {len} is shorter than a frame header"),
            skip: None,
        });
    }
    if len > max_frame {
        let id = (buf.len() >= HEADER_BYTES).then(|| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[6..14]);
            u64::from_le_bytes(a)
        });
        return Err(FrameError {
            id,
            code: ErrorCode::FrameTooLarge,
            message: format!("frame of {len} bytes exceeds the limit of {max_frame}"),
            skip: None,
        });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let version = buf[4];
    let opcode = buf[5];
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[6..14]);
    let id = u64::from_le_bytes(a);
    if !versions.contains(&version) {
        return Err(FrameError {
            id: Some(id),
            code: ErrorCode::UnsupportedVersion,
            message: format!(
                "protocol version {version} is not supported (this end speaks {}..={})",
                versions.start(),
                versions.end()
            ),
            skip: Some(4 + len),
        });
    }
    Ok(Some(Frame {
        version,
        opcode,
        id,
        body: &buf[HEADER_BYTES..4 + len],
        total: 4 + len,
    }))
}

impl Frame<'_> {
    /// The error for a response this end cannot parse: the connection
    /// should be dropped.
    pub(crate) fn malformed(&self, message: &str) -> FrameError {
        FrameError {
            id: Some(self.id),
            code: ErrorCode::BadFrame,
            message: message.to_string(),
            skip: Some(self.total),
        }
    }
}

/// Appends an ERROR body, the same in both protocols: `u16 code`, bytes
/// UTF-8 message.
pub(crate) fn put_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    out.extend_from_slice(&code.to_u16().to_le_bytes());
    put_bytes(out, message.as_bytes());
}

/// Reads an ERROR body (see [`put_error`]).
pub(crate) fn read_error(r: &mut Reader<'_>) -> Result<(ErrorCode, String), &'static str> {
    let code = ErrorCode::from_u16(r.u16().ok_or("error code missing")?);
    let message = String::from_utf8_lossy(r.bytes(usize::MAX)?).into_owned();
    Ok((code, message))
}
