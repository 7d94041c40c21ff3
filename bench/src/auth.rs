//! Credentials for an auth-on server: every connection the load generator
//! opens (and the topology request of a shard-aware run) authenticates
//! with AUTH before it carries load. The password comes from the
//! environment (`COREKV_PASSWORD`), never from a flag, so it is not in `ps`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use corekv_net::native::{self, Request, RequestBody, ResponseBody};
use corekv_net::Limits;

use crate::target::Protocol;
use crate::BenchError;

/// The environment variable the password is read from.
pub const PASSWORD_ENV: &str = "COREKV_PASSWORD";

/// A user and its password. `Debug` does not print the password.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password, as sent.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `--user NAME` with the password from `COREKV_PASSWORD`; a user
    /// without the variable set is a configuration error.
    pub fn from_env(user: &str) -> Result<Credentials, BenchError> {
        let password = std::env::var(PASSWORD_ENV).map_err(|_| {
            BenchError::Config(format!(
                "--user {user} needs the password in the environment variable {PASSWORD_ENV}"
            ))
        })?;
        Ok(Credentials {
            user: user.to_string(),
            password,
        })
    }
}

/// Sends AUTH on a fresh blocking `stream` and waits (at most `timeout`)
/// for the answer. A refusal is `BenchError::Auth` with the server's words.
pub fn authenticate(
    stream: &mut TcpStream,
    protocol: Protocol,
    creds: &Credentials,
    timeout: Duration,
) -> Result<(), BenchError> {
    let io = |e: std::io::Error| BenchError::Io(format!("AUTH: {e}"));
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut out = Vec::with_capacity(64);
    if protocol.is_native() {
        native::encode_request(
            &Request {
                id: 0,
                body: RequestBody::Auth {
                    user: creds.user.as_bytes().to_vec(),
                    password: creds.password.as_bytes().to_vec(),
                },
            },
            &mut out,
        );
    } else {
        crate::proto::resp_command(
            &mut out,
            &[b"AUTH", creds.user.as_bytes(), creds.password.as_bytes()],
        );
    }
    stream.write_all(&out).map_err(io)?;
    let limits = Limits::default();
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    // Bounded: the read timeout ends each read, the size cap the loop.
    while buf.len() < 64 * 1024 {
        let n = stream.read(&mut chunk).map_err(io)?;
        if n == 0 {
            return Err(BenchError::Auth(format!(
                "user {}: the server closed the connection",
                creds.user
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        if protocol.is_native() {
            match native::decode_response(&buf, &limits) {
                Ok(None) => continue,
                Ok(Some((resp, _))) => {
                    return match resp.body {
                        ResponseBody::Error { code, message } => Err(BenchError::Auth(format!(
                            "user {}: {code:?}: {message}",
                            creds.user
                        ))),
                        _ => Ok(()),
                    }
                }
                Err(e) => return Err(BenchError::Auth(format!("bad answer to AUTH: {e:?}"))),
            }
        } else if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            return if line.starts_with('+') {
                Ok(())
            } else {
                Err(BenchError::Auth(format!(
                    "user {}: {}",
                    creds.user,
                    line.trim_start_matches('-')
                )))
            };
        }
    }
    Err(BenchError::Auth("answer to AUTH too long".into()))
}
