//! One TCP connection carrying many requests at once, matched to their
//! responses by request id — the I/O loop under the async native client and
//! the internode links. Runs on a glommio executor; not `Send`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_channel::oneshot;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use crate::frame::FrameError;
use crate::tls::MaybeTls;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::sync::Arc;

/// How requests and responses of one protocol look on the wire.
pub trait Exchange: 'static {
    /// What callers send.
    type Request;
    /// What comes back.
    type Response: 'static;
    /// Appends the frame of request `id` to `out`.
    fn encode(&self, id: u64, req: Self::Request, out: &mut Vec<u8>);
    /// Finds the next response in `buf`: its id, it, and the bytes used.
    fn decode(&self, buf: &[u8]) -> Result<Option<(u64, Self::Response, usize)>, FrameError>;
}

type Waiters<R> = RefCell<HashMap<u64, oneshot::Sender<R>>>;

/// A connection shared by the tasks of one executor (hold it in an `Rc`).
/// Requests from all tasks are written in batches by one writer task;
/// responses are read by one reader task and handed to the waiting caller,
/// whatever their order. At most `max_in_flight` requests are outstanding;
/// further calls wait for a slot. A caller that gives up (its future is
/// dropped, e.g. on a timeout) frees its slot and its waiter at once.
pub struct Multiplexed<E: Exchange> {
    exchange: Rc<E>,
    next_id: Cell<u64>,
    waiters: Rc<Waiters<E::Response>>,
    outbox: Rc<RefCell<Vec<u8>>>,
    outbox_ready: Rc<Semaphore>,
    slots: Semaphore,
    closed: Rc<Cell<bool>>,
}

/// The connection is closed (by either end, or after bad bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the connection is closed")]
pub struct Closed;

impl<E: Exchange> Multiplexed<E> {
    /// Connects and starts the reader and writer tasks on this executor.
    pub async fn connect(
        addr: SocketAddr,
        max_in_flight: usize,
        exchange: E,
    ) -> std::io::Result<Multiplexed<E>> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(std::io::Error::from)?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        Ok(Multiplexed::start(
            MaybeTls::Plain(stream),
            max_in_flight,
            exchange,
        ))
    }

    /// As [`Multiplexed::connect`], over TLS: the server's certificate is
    /// checked against `config`'s roots for `name` (and `config`'s client
    /// certificate, if any, is presented). The caller bounds the time.
    pub async fn connect_tls(
        addr: SocketAddr,
        max_in_flight: usize,
        exchange: E,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> std::io::Result<Multiplexed<E>> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(std::io::Error::from)?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        let stream = crate::tls::connect(config, name, stream).await?;
        Ok(Multiplexed::start(stream, max_in_flight, exchange))
    }

    fn start(stream: MaybeTls<TcpStream>, max_in_flight: usize, exchange: E) -> Multiplexed<E> {
        let (reader, writer) = futures_lite::io::split(stream);
        let conn = Multiplexed {
            exchange: Rc::new(exchange),
            next_id: Cell::new(1),
            waiters: Rc::new(RefCell::new(HashMap::new())),
            outbox: Rc::new(RefCell::new(Vec::new())),
            outbox_ready: Rc::new(Semaphore::new(0)),
            slots: Semaphore::new(max_in_flight.max(1) as u64),
            closed: Rc::new(Cell::new(false)),
        };
        glommio::spawn_local(read_loop(
            reader,
            conn.exchange.clone(),
            conn.waiters.clone(),
            conn.closed.clone(),
        ))
        .detach();
        glommio::spawn_local(write_loop(
            writer,
            conn.outbox.clone(),
            conn.outbox_ready.clone(),
            conn.closed.clone(),
        ))
        .detach();
        conn
    }

    /// The protocol description this connection was opened with.
    pub fn exchange(&self) -> &E {
        &self.exchange
    }

    /// Sends a request and waits for its response.
    pub async fn call(&self, req: E::Request) -> Result<E::Response, Closed> {
        let _slot = self.slots.acquire_permit(1).await.map_err(|_| Closed)?;
        if self.closed.get() {
            return Err(Closed);
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(id, tx);
        let _forget = ForgetOnDrop {
            waiters: &self.waiters,
            id,
        };
        self.exchange.encode(id, req, &mut self.outbox.borrow_mut());
        self.outbox_ready.signal(1);
        rx.await.map_err(|_| Closed)
    }

    /// True once the connection failed or was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Stops the writer; outstanding calls fail with `Closed`.
    pub fn close(&self) {
        self.closed.set(true);
        self.outbox_ready.signal(1);
    }
}

impl<E: Exchange> Drop for Multiplexed<E> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Removes a call's waiter when the call ends for any reason, so callers
/// that time out leave nothing behind.
struct ForgetOnDrop<'a, R> {
    waiters: &'a Waiters<R>,
    id: u64,
}

impl<R> Drop for ForgetOnDrop<'_, R> {
    fn drop(&mut self) {
        self.waiters.borrow_mut().remove(&self.id);
    }
}

async fn write_loop(
    mut writer: WriteHalf<MaybeTls<TcpStream>>,
    outbox: Rc<RefCell<Vec<u8>>>,
    ready: Rc<Semaphore>,
    closed: Rc<Cell<bool>>,
) {
    let mut sent = Vec::new();
    loop {
        let out = crate::outbox::take_queued(&mut outbox.borrow_mut(), sent);
        if !out.is_empty() {
            // A TLS stream buffers what it could not send yet.
            if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                closed.set(true);
                return;
            }
            sent = out;
            continue;
        }
        sent = out;
        if closed.get() {
            let _ = writer.close().await;
            return;
        }
        let _ = ready.acquire(1).await;
    }
}

async fn read_loop<E: Exchange>(
    mut reader: ReadHalf<MaybeTls<TcpStream>>,
    exchange: Rc<E>,
    waiters: Rc<Waiters<E::Response>>,
    closed: Rc<Cell<bool>>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut used_total = 0;
        loop {
            match exchange.decode(&buf[used_total..]) {
                Ok(Some((id, resp, used))) => {
                    used_total += used;
                    if let Some(tx) = waiters.borrow_mut().remove(&id) {
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
        buf.drain(..used_total);
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
