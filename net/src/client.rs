//! A blocking client for the native protocol, used by the CLI and tests.
//! One request at a time per call, or many with `send` + `recv` to pipeline.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::native::{self, Consistency, ErrorCode, Request, RequestBody, Response, ResponseBody};
use crate::Limits;

/// What can go wrong talking to a server.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes this client cannot parse.
    #[error("protocol error from server: {0}")]
    Protocol(#[from] native::FrameError),
    /// The server answered with an ERROR.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
    /// The connection closed before a response arrived.
    #[error("the server closed the connection")]
    Closed,
    /// The server refused the credentials an authenticating connect sent
    /// (AUTH answered Unauthenticated or Forbidden); the connection is
    /// not usable.
    #[error("authentication refused: {0}")]
    Unauthenticated(String),
}

/// A connection to one server (any shard's port).
pub struct Client {
    stream: Conn,
    buf: Vec<u8>,
    next_id: u64,
    limits: Limits,
}

impl Client {
    /// Connects with a timeout for the connect and for each read/write.
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Client, ClientError> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    stream.set_nodelay(true)?;
                    return Ok(Client {
                        stream: Conn::Plain(stream),
                        buf: Vec::with_capacity(64 * 1024),
                        next_id: 1,
                        limits: Limits {
                            max_frame_bytes: 64 << 20,
                            ..Limits::default()
                        },
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to connect to")
            })
            .into())
    }

    /// As [`Client::connect`], then a TLS 1.3 handshake checking the
    /// server's certificate for the host part of `addr` against `config`.
    pub fn connect_tls(
        addr: &str,
        timeout: Duration,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Client, ClientError> {
        let name = crate::tls::server_name(addr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut client = Client::connect(addr, timeout)?;
        let Conn::Plain(tcp) = client.stream else {
            return Err(ClientError::Closed);
        };
        let mut session = rustls::ClientConnection::new(config, name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut tcp = tcp;
        // The handshake now, so that a refused certificate is an error
        // here rather than at the first request.
        while session.is_handshaking() {
            session.complete_io(&mut tcp)?;
        }
        client.stream = Conn::Tls(Box::new(rustls::StreamOwned::new(session, tcp)));
        Ok(client)
    }

    /// Sends a request without waiting; returns its id.
    pub fn send(&mut self, body: RequestBody) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        native::encode_request(&Request { id, body }, &mut out);
        self.stream.write_all(&out)?;
        self.stream.flush()?;
        Ok(id)
    }

    /// Sends raw bytes (for tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Reads the next response, whatever request it answers.
    pub fn recv(&mut self) -> Result<Response, ClientError> {
        let mut chunk = [0u8; 64 * 1024];
        // Bounded: each turn either returns or reads more bytes, and the
        // frame limit caps how many bytes a frame can need.
        loop {
            if let Some((resp, n)) = native::decode_response(&self.buf, &self.limits)? {
                self.buf.drain(..n);
                return Ok(resp);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a request and waits for its response; ERROR becomes `Err`.
    pub fn call(&mut self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        let id = self.send(body)?;
        let resp = self.recv()?;
        if resp.id != id {
            return Err(ClientError::Protocol(native::FrameError {
                id: Some(resp.id),
                code: ErrorCode::BadFrame,
                message: format!("response for request {} while waiting for {id}", resp.id),
                skip: None,
            }));
        }
        match resp.body {
            ResponseBody::Error { code, message } => Err(ClientError::Server { code, message }),
            body => Ok(body),
        }
    }

    /// Authenticates this connection as `user` (AUTH, opcode 0x08). A
    /// wrong user or password is `Err(Server { code: Unauthenticated })`.
    /// The password crosses the network as sent: only over loopback or a
    /// protected network until the port has TLS.
    pub fn auth(&mut self, user: &[u8], password: &[u8]) -> Result<(), ClientError> {
        self.call(RequestBody::Auth {
            user: user.to_vec(),
            password: password.to_vec(),
        })
        .map(|_| ())
    }

    /// GET at the default consistency.
    pub fn get(&mut self, key: &[u8]) -> Result<ResponseBody, ClientError> {
        self.call(RequestBody::Get {
            consistency: Consistency::Default,
            key: key.to_vec(),
        })
    }

    /// PUT with an optional TTL and context.
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        context: &[u8],
    ) -> Result<ResponseBody, ClientError> {
        self.call(RequestBody::Put {
            consistency: Consistency::Default,
            ttl_ms,
            context: context.to_vec(),
            key: key.to_vec(),
            value: value.to_vec(),
        })
    }

    /// DELETE with an optional context.
    pub fn delete(&mut self, key: &[u8], context: &[u8]) -> Result<ResponseBody, ClientError> {
        self.call(RequestBody::Delete {
            consistency: Consistency::Default,
            context: context.to_vec(),
            key: key.to_vec(),
        })
    }
}

/// A blocking connection: plain TCP or TLS over it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}
