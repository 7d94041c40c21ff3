//! An async native-protocol client for glommio executors: many requests in
//! flight on one connection, matched to responses by request id.

use std::net::SocketAddr;

use crate::client::ClientError;
use crate::frame::FrameError;
use crate::mux::{Exchange, Multiplexed};
use crate::native::{self, ErrorCode, Request, RequestBody, Response, ResponseBody};
use crate::Limits;

/// The native protocol as a [`Multiplexed`] connection speaks it.
pub struct NativeExchange {
    limits: Limits,
}

impl Exchange for NativeExchange {
    type Request = RequestBody;
    type Response = Response;

    fn encode(&self, id: u64, body: RequestBody, out: &mut Vec<u8>) {
        native::encode_request(&Request { id, body }, out);
    }

    fn decode(&self, buf: &[u8]) -> Result<Option<(u64, Response, usize)>, FrameError> {
        Ok(native::decode_response(buf, &self.limits)?.map(|(r, used)| (r.id, r, used)))
    }
}

/// A native-protocol connection shared by the tasks of one executor (hold
/// it in an `Rc`): many requests in flight, matched to responses by id,
/// whatever their order. At most `max_in_flight` are outstanding; further
/// calls wait for a slot.
pub struct AsyncClient {
    conn: Multiplexed<NativeExchange>,
}

impl AsyncClient {
    /// Connects and starts the reader and writer tasks on this executor.
    pub async fn connect(
        addr: SocketAddr,
        max_in_flight: usize,
    ) -> Result<AsyncClient, ClientError> {
        let exchange = NativeExchange {
            limits: Limits {
                max_frame_bytes: 64 << 20,
                ..Limits::default()
            },
        };
        Ok(AsyncClient {
            conn: Multiplexed::connect(addr, max_in_flight, exchange).await?,
        })
    }

    /// Connects like [`AsyncClient::connect`], then authenticates as `user`
    /// (AUTH, opcode 0x08) before returning, so every later call runs as
    /// that user. A refused user or password is
    /// `Err(ClientError::Unauthenticated)` and the connection is closed.
    /// The password crosses the network as sent (see [`crate::client::Client::auth`]).
    pub async fn connect_as(
        addr: SocketAddr,
        user: &[u8],
        password: &[u8],
        max_in_flight: usize,
    ) -> Result<AsyncClient, ClientError> {
        let client = AsyncClient::connect(addr, max_in_flight).await?;
        let auth = client
            .call(RequestBody::Auth {
                user: user.to_vec(),
                password: password.to_vec(),
            })
            .await;
        match auth {
            Ok(_) => Ok(client),
            Err(ClientError::Server {
                code: ErrorCode::Unauthenticated | ErrorCode::Forbidden,
                message,
            }) => {
                client.close();
                Err(ClientError::Unauthenticated(message))
            }
            Err(e) => {
                client.close();
                Err(e)
            }
        }
    }

    /// Sends a request and waits for its response; ERROR becomes `Err`.
    pub async fn call(&self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        let resp = self
            .conn
            .call(body)
            .await
            .map_err(|_| ClientError::Closed)?;
        match resp.body {
            ResponseBody::Error { code, message } => Err(ClientError::Server { code, message }),
            body => Ok(body),
        }
    }

    /// Stops the writer; outstanding calls fail with `Closed`.
    pub fn close(&self) {
        self.conn.close();
    }
}
