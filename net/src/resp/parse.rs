//! Splitting client input into command arguments (sans-io).

use super::command::Command;
use crate::Limits;

/// A protocol error: the client sent something that is not RESP. The
/// server replies `-ERR <message>` and closes, as Redis does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ParseError(pub String);

/// One parsed unit of client input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command (possibly an unknown one, or one with wrong arguments).
    Command(Command),
    /// An empty inline line: nothing to answer.
    Empty,
}

fn find_crlf(buf: &[u8], from: usize, max: usize) -> Result<Option<usize>, ParseError> {
    let window = &buf[from..buf.len().min(from.saturating_add(max + 2))];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(p) => Ok(Some(from + p)),
        None if window.len() >= max + 2 => Err(ParseError("too big inline request".into())),
        None => Ok(None),
    }
}

fn parse_int(bytes: &[u8], what: &str) -> Result<i64, ParseError> {
    // Every request has one of these per argument: plain digits (what
    // clients send) are read directly; anything else (a sign, overflow,
    // garbage) goes through the general parser and its errors.
    if !bytes.is_empty() && bytes.len() <= 18 && bytes.iter().all(u8::is_ascii_digit) {
        return Ok(bytes
            .iter()
            .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0')));
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ParseError(format!("invalid {what}")))
}

/// Parses one command from the front of `buf`: `Ok(None)` when more bytes
/// are needed, else the command and the bytes it used. Arrays of bulk
/// strings and inline commands (what telnet and redis-cli send) are both
/// accepted. Lengths are checked before anything is buffered.
pub fn parse_command(buf: &[u8], limits: &Limits) -> Result<Option<(Parsed, usize)>, ParseError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        return parse_inline(buf, limits);
    }
    let Some(eol) = find_crlf(buf, 1, 32)? else {
        return Ok(None);
    };
    let count = parse_int(&buf[1..eol], "multibulk length")?;
    if count > limits.max_array_len as i64 {
        return Err(ParseError("invalid multibulk length".into()));
    }
    let mut at = eol + 2;
    if count <= 0 {
        return Ok(Some((Parsed::Empty, at)));
    }
    let max_bulk = limits.max_value_bytes.max(limits.max_key_bytes) + 1024;
    // Capped by what the buffered bytes can hold (an argument takes at
    // least 6, "$0\r\n\r\n"), so "*1000\r\n" alone reserves little.
    let room = (buf.len() - at) / 6 + 1;
    let mut args: Vec<&[u8]> = Vec::with_capacity((count as usize).min(1024).min(room));
    for _ in 0..count {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != b'$' {
            return Err(ParseError(format!(
                "expected '$', got '{}'",
                char::from(buf[at])
            )));
        }
        let Some(eol) = find_crlf(buf, at + 1, 32)? else {
            return Ok(None);
        };
        let len = parse_int(&buf[at + 1..eol], "bulk length")?;
        if len < 0 || len as usize > max_bulk {
            return Err(ParseError("invalid bulk length".into()));
        }
        let start = eol + 2;
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ParseError("bulk string not terminated by CRLF".into()));
        }
        args.push(&buf[start..end]);
        at = end + 2;
    }
    Ok(Some((Parsed::Command(Command::from_args(&args)), at)))
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Option<(Parsed, usize)>, ParseError> {
    let Some(eol) = buf
        .iter()
        .take(limits.max_inline_bytes + 1)
        .position(|&b| b == b'\n')
    else {
        if buf.len() > limits.max_inline_bytes {
            return Err(ParseError("too big inline request".into()));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Counted first so the vector is allocated once at its size: grown by
    // doubling, a line of one-byte words held up to 32 bytes of slices
    // per 2 input bytes (the fuzz tests' allocation bound).
    let words = || {
        line.split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
    };
    let mut args: Vec<&[u8]> = Vec::with_capacity(words().count());
    args.extend(words());
    if args.is_empty() {
        return Ok(Some((Parsed::Empty, eol + 1)));
    }
    Ok(Some((Parsed::Command(Command::from_args(&args)), eol + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    proptest! {
        #[test]
        fn arrays_parse_at_any_split(args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..30), 1..6)) {
            let buf = encode(&args);
            let limits = Limits::default();
            for cut in 0..buf.len() {
                prop_assert!(parse_command(&buf[..cut], &limits).expect("prefix ok").is_none());
            }
            let (parsed, n) = parse_command(&buf, &limits).expect("valid").expect("complete");
            prop_assert_eq!(n, buf.len());
            prop_assert_eq!(parsed, Parsed::Command(Command::from_args(&args)));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_command(&bytes, &Limits::default());
        }
    }

    #[test]
    fn inline_commands_parse() {
        let (p, n) = parse_command(b"SET k v\r\nGET k\r\n", &Limits::default())
            .expect("ok")
            .expect("complete");
        assert_eq!(n, 9);
        assert_eq!(
            p,
            Parsed::Command(Command::from_args(&[&b"SET"[..], b"k", b"v"]))
        );
        assert_eq!(
            parse_command(b"PING\n", &Limits::default())
                .expect("ok")
                .map(|x| x.1),
            Some(5)
        );
    }

    #[test]
    fn huge_lengths_are_rejected_before_buffering() {
        assert!(parse_command(b"*99999999999\r\n", &Limits::default()).is_err());
        assert!(parse_command(b"*1\r\n$999999999\r\n", &Limits::default()).is_err());
        assert!(parse_command(b"*1\r\nfoo\r\n", &Limits::default()).is_err());
    }
}
