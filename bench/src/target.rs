//! Targets: `NAME=SCHEME://HOST:PORT`, the servers a run is pointed at.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::BenchError;

/// The wire protocol spoken to a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// corekv's binary protocol (`native://`), one node address.
    Native,
    /// RESP2 (`resp://`, also `redis://`): corekv's RESP port, Redis, or any
    /// RESP server.
    Resp,
    /// corekv's binary protocol, shard-aware (`native-sharded://SEED`): the
    /// topology comes from the seed node, and each key's requests go to
    /// the owning shard of its first replica, on that shard's own port.
    NativeSharded,
}

impl Protocol {
    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Resp => "resp",
            Protocol::NativeSharded => "native-sharded",
        }
    }

    /// Whether frames are the native protocol's.
    pub fn is_native(self) -> bool {
        matches!(self, Protocol::Native | Protocol::NativeSharded)
    }
}

/// One server under test.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// Label in output (`corekv`, `redis`).
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Address.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `[NAME=]SCHEME://HOST:PORT`; without a name the label is
    /// `SCHEME:PORT`.
    pub fn parse(s: &str) -> Result<Target, BenchError> {
        let bad = |why: &str| BenchError::Config(format!("target {s:?}: {why}"));
        let (name, url) = match s.split_once('=') {
            Some((n, u)) if !n.contains("://") => (Some(n.trim().to_string()), u.trim()),
            _ => (None, s.trim()),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected SCHEME://HOST:PORT (native:// or resp://)"))?;
        let protocol = match scheme {
            "native" => Protocol::Native,
            "resp" | "redis" => Protocol::Resp,
            "native-sharded" => Protocol::NativeSharded,
            other => {
                return Err(bad(&format!(
                    "unknown scheme {other:?} (native, native-sharded, resp)"
                )))
            }
        };
        let hostport = rest.trim_end_matches('/');
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve {hostport:?}: {e}")))?
            .next()
            .ok_or_else(|| bad("address resolves to nothing"))?;
        let name = match name {
            Some(n) if !n.is_empty() => n,
            Some(_) => return Err(bad("empty name before '='")),
            None => format!("{}:{}", protocol.scheme(), addr.port()),
        };
        Ok(Target {
            name,
            protocol,
            addr,
        })
    }

    /// `scheme://addr`, for output.
    pub fn url(&self) -> String {
        format!("{}://{}", self.protocol.scheme(), self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_unnamed() {
        let t = Target::parse("corekv=native://127.0.0.1:7000").unwrap();
        assert_eq!(t.name, "corekv");
        assert_eq!(t.protocol, Protocol::Native);
        assert_eq!(t.addr.port(), 7000);
        let r = Target::parse("resp://127.0.0.1:6379").unwrap();
        assert_eq!(r.name, "resp:6379");
        assert_eq!(r.protocol, Protocol::Resp);
        assert_eq!(r.url(), "resp://127.0.0.1:6379");
    }

    #[test]
    fn rejects_bad_targets() {
        assert!(Target::parse("127.0.0.1:7000").is_err());
        assert!(Target::parse("x=http://127.0.0.1:1").is_err());
        let s = Target::parse("c=native-sharded://127.0.0.1:7000").unwrap();
        assert_eq!(s.protocol, Protocol::NativeSharded);
        assert!(s.protocol.is_native());
    }
}
