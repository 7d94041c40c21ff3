//! RESP2 replies and their encoding.

/// A reply to a RESP client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`-style status.
    Simple(String),
    /// `-ERR ...`; the text must not contain CR or LF (they are replaced).
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$len` bulk string, or `$-1` for `None`.
    Bulk(Option<Vec<u8>>),
    /// `*n` array, or `*-1` for `None`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The usual `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => line(out, b'+', s),
            Reply::Error(s) => line(out, b'-', s),
            Reply::Integer(n) => {
                out.push(b':');
                push_decimal(out, *n);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(b) => encode_bulk(b.as_deref(), out),
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                out.push(b'*');
                push_decimal(out, items.len() as i64);
                out.extend_from_slice(b"\r\n");
                for i in items {
                    i.encode(out);
                }
            }
        }
    }
}

/// Appends a bulk string (`None`: the null bulk `$-1`) straight from a
/// borrowed value, as [`Reply::Bulk`] would encode it: a reader answering
/// from storage it borrows needs no owned copy of the value.
pub fn encode_bulk(value: Option<&[u8]>, out: &mut Vec<u8>) {
    match value {
        None => out.extend_from_slice(b"$-1\r\n"),
        Some(b) => {
            out.reserve(b.len() + 16);
            out.push(b'$');
            push_decimal(out, b.len() as i64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends `n` in decimal without going through `fmt` (every reply has one).
fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

fn line(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_redis_wire_forms() {
        let mut out = Vec::new();
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"a".to_vec())),
            Reply::Bulk(None),
            Reply::Integer(-2),
        ]))
        .encode(&mut out);
        Reply::Error("ERR bad\r\nthing".into()).encode(&mut out);
        assert_eq!(
            out,
            b"*3\r\n$1\r\na\r\n$-1\r\n:-2\r\n-ERR bad  thing\r\n".to_vec()
        );
    }
}
