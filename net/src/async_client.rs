//! An async native-protocol client for glommio executors: many requests in
//! flight on one connection, matched to responses by request id.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_channel::oneshot;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use crate::client::ClientError;
use crate::native::{self, Request, RequestBody, Response, ResponseBody};
use crate::Limits;

type Waiters = RefCell<HashMap<u64, oneshot::Sender<Response>>>;

/// A connection shared by the tasks of one executor (hold it in an `Rc`).
/// Requests from all tasks are written in batches by one writer task;
/// responses are read by one reader task and handed to the waiting caller,
/// whatever their order. At most `max_in_flight` requests are outstanding;
/// further calls wait for a slot.
pub struct AsyncClient {
    next_id: Cell<u64>,
    waiters: Rc<Waiters>,
    outbox: Rc<RefCell<Vec<u8>>>,
    outbox_ready: Rc<Semaphore>,
    slots: Semaphore,
    closed: Rc<Cell<bool>>,
}

impl AsyncClient {
    /// Connects and starts the reader and writer tasks on this executor.
    pub async fn connect(
        addr: SocketAddr,
        max_in_flight: usize,
    ) -> Result<AsyncClient, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(std::io::Error::from)?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        let (reader, writer) = futures_lite::io::split(stream);
        let client = AsyncClient {
            next_id: Cell::new(1),
            waiters: Rc::new(RefCell::new(HashMap::new())),
            outbox: Rc::new(RefCell::new(Vec::new())),
            outbox_ready: Rc::new(Semaphore::new(0)),
            slots: Semaphore::new(max_in_flight.max(1) as u64),
            closed: Rc::new(Cell::new(false)),
        };
        glommio::spawn_local(read_loop(
            reader,
            client.waiters.clone(),
            client.closed.clone(),
        ))
        .detach();
        glommio::spawn_local(write_loop(
            writer,
            client.outbox.clone(),
            client.outbox_ready.clone(),
            client.closed.clone(),
        ))
        .detach();
        Ok(client)
    }

    /// Sends a request and waits for its response; ERROR becomes `Err`.
    pub async fn call(&self, body: RequestBody) -> Result<ResponseBody, ClientError> {
        let _slot = self
            .slots
            .acquire_permit(1)
            .await
            .map_err(|_| ClientError::Closed)?;
        if self.closed.get() {
            return Err(ClientError::Closed);
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(id, tx);
        native::encode_request(&Request { id, body }, &mut self.outbox.borrow_mut());
        self.outbox_ready.signal(1);
        let resp = rx.await.map_err(|_| ClientError::Closed)?;
        match resp.body {
            ResponseBody::Error { code, message } => Err(ClientError::Server { code, message }),
            body => Ok(body),
        }
    }

    /// Stops the writer; outstanding calls fail with `Closed`.
    pub fn close(&self) {
        self.closed.set(true);
        self.outbox_ready.signal(1);
    }
}

impl Drop for AsyncClient {
    fn drop(&mut self) {
        self.close();
    }
}

async fn write_loop(
    mut writer: WriteHalf<TcpStream>,
    outbox: Rc<RefCell<Vec<u8>>>,
    ready: Rc<Semaphore>,
    closed: Rc<Cell<bool>>,
) {
    loop {
        let out = std::mem::take(&mut *outbox.borrow_mut());
        if !out.is_empty() {
            if writer.write_all(&out).await.is_err() {
                closed.set(true);
                return;
            }
            continue;
        }
        if closed.get() {
            let _ = writer.close().await;
            return;
        }
        let _ = ready.acquire(1).await;
    }
}

async fn read_loop(mut reader: ReadHalf<TcpStream>, waiters: Rc<Waiters>, closed: Rc<Cell<bool>>) {
    let limits = Limits {
        max_frame_bytes: 64 << 20,
        ..Limits::default()
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            match native::decode_response(&buf, &limits) {
                Ok(Some((resp, used))) => {
                    buf.drain(..used);
                    if let Some(tx) = waiters.borrow_mut().remove(&resp.id) {
                        let _ = tx.send(resp);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    closed.set(true);
                    waiters.borrow_mut().clear();
                    return;
                }
            }
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                closed.set(true);
                // Dropping the senders fails every waiting call with Closed.
                waiters.borrow_mut().clear();
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
