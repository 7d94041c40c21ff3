//! What every framed request/response connection shares (native and
//! internode): requests run concurrently, each inline when it completes
//! without waiting or as its own task otherwise, at most a bounded number
//! at once; and their encoded answers collect in an outbox that one writer
//! task sends in batches. (The read side's idle and shutdown watch is in
//! `idle`.)
//!
//! The outbox is bounded in bytes, like Redis's client-output-buffer-limit:
//! answers not yet taken by the socket (a client that does not read) past
//! the bound stop new requests from starting until the socket drains, and
//! past twice the bound (requests already running kept answering) the
//! connection is closed. So 1 000 pipelined reads of a 1 MiB value that are
//! never read cost at most about twice the bound, not a GiB.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use corekv_net::outbox::take_queued;
use futures_lite::io::WriteHalf;
use futures_lite::{future, AsyncWriteExt};
use futures_util::FutureExt;
use glommio::sync::Semaphore;

use super::{Shutdown, Stream};

/// How long a closing connection's last answers may take to leave.
const FINISH_WRITE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection's write side and its bound on requests in flight.
pub(super) struct Pipeline {
    outbox: Rc<Outbox>,
    permits: Rc<Semaphore>,
    in_flight_max: u64,
    output_bytes_max: usize,
    writer: glommio::Task<()>,
    shutdown: Shutdown,
}

impl Pipeline {
    /// Starts the writer task over `writer`; at most `in_flight_max`
    /// requests run at once, and none starts while more than
    /// `output_bytes_max` answer bytes wait for the socket.
    pub(super) fn start(
        mut writer: WriteHalf<Stream>,
        in_flight_max: u64,
        output_bytes_max: usize,
        shutdown: Shutdown,
    ) -> Pipeline {
        let outbox = Rc::new(Outbox::new(output_bytes_max.saturating_mul(2)));
        let writer_outbox = outbox.clone();
        let writer = glommio::spawn_local(async move {
            // Everything queued while the previous write ran goes out in one write.
            let mut sent = Vec::new();
            while let Some(out) = writer_outbox.next(sent).await {
                // A TLS stream buffers what it could not send yet: flush.
                if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
                    writer_outbox.close();
                    break;
                }
                writer_outbox.written(out.len());
                sent = out;
            }
            let _ = writer.close().await;
        });
        Pipeline {
            outbox,
            permits: Rc::new(Semaphore::new(in_flight_max.max(1))),
            in_flight_max: in_flight_max.max(1),
            output_bytes_max,
            writer,
            shutdown,
        }
    }

    /// Where answers go.
    pub(super) fn outbox(&self) -> &Rc<Outbox> {
        &self.outbox
    }

    /// Runs one request (which pushes its own answer to the outbox), once
    /// a slot is free. Requests that complete without waiting (reads from
    /// the memtable or cache) run inline; the rest get a task.
    pub(super) async fn run(
        &self,
        request: impl Future<Output = ()> + 'static,
    ) -> std::io::Result<()> {
        // Backpressure on a client that does not read its answers.
        while self.outbox.unsent.get() > self.output_bytes_max {
            if self.outbox.closed.get() {
                break;
            }
            let _ = self.outbox.drained.acquire(1).await;
        }
        if self.outbox.closed.get() {
            return Err(std::io::Error::other(if self.outbox.overflowed.get() {
                "answers unread past twice the output buffer bound"
            } else {
                "the connection's write side closed"
            }));
        }
        let permit = self
            .permits
            .clone()
            .acquire_static_permit(1)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let shutdown = self.shutdown.clone();
        shutdown.request_started();
        // A combinator, not an `async` block: a block would hold the
        // request future twice (as captured and as awaited), and requests
        // are a few KiB each, copied whole into their box.
        let mut run = Box::pin(request.map(move |()| {
            shutdown.request_finished();
            drop(permit);
        }));
        if future::poll_once(&mut run).await.is_none() {
            glommio::spawn_local(run).detach();
        }
        Ok(())
    }

    /// True when the connection was closed because its unread answers
    /// passed twice the output bound.
    pub(super) fn overflowed(&self) -> bool {
        self.outbox.overflowed.get()
    }

    /// Lets in-flight requests finish and their answers go out, then closes
    /// the write side. A client that does not take its answers gets
    /// [`FINISH_WRITE_MAX`] to do so; then the writer is dropped (and the
    /// socket with it), so a stalled reader cannot keep a connection and
    /// its buffers forever.
    pub(super) async fn finish(self) {
        let _ = self.permits.acquire(self.in_flight_max).await;
        self.outbox.close();
        if self.outbox.overflowed.get() {
            return;
        }
        let writer = self.writer;
        future::or(writer, glommio::timer::sleep(FINISH_WRITE_MAX)).await;
    }
}

/// Encoded responses waiting for the writer task, bounded in bytes (see
/// the module's notes).
pub(super) struct Outbox {
    bytes: RefCell<Vec<u8>>,
    /// Bytes pushed and not yet written to the socket (queued, or taken
    /// by the writer and still being written).
    unsent: Cell<usize>,
    /// Past this many unsent bytes the connection is closed.
    unsent_max: usize,
    closed: Cell<bool>,
    overflowed: Cell<bool>,
    ready: Semaphore,
    /// Signalled after each write (waiters re-check `unsent`).
    drained: Semaphore,
}

impl Outbox {
    fn new(unsent_max: usize) -> Outbox {
        Outbox {
            bytes: RefCell::new(Vec::new()),
            unsent: Cell::new(0),
            unsent_max,
            closed: Cell::new(false),
            overflowed: Cell::new(false),
            ready: Semaphore::new(0),
            drained: Semaphore::new(0),
        }
    }

    /// Appends whatever `encode` writes and wakes the writer. Past the
    /// hard bound the connection is closed and its queue dropped; after a
    /// close, answers are dropped.
    pub(super) fn push_with(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.closed.get() {
            return;
        }
        let mut bytes = self.bytes.borrow_mut();
        let before = bytes.len();
        encode(&mut bytes);
        let pushed = bytes.len() - before;
        let unsent = self.unsent.get() + pushed;
        self.unsent.set(unsent);
        if unsent > self.unsent_max {
            self.overflowed.set(true);
            *bytes = Vec::new();
            drop(bytes);
            self.close();
            return;
        }
        drop(bytes);
        self.ready.signal(1);
    }

    /// The writer sent `n` bytes.
    fn written(&self, n: usize) {
        self.unsent.set(self.unsent.get().saturating_sub(n));
        self.drained.signal(1);
    }

    fn close(&self) {
        self.closed.set(true);
        self.ready.signal(1);
        self.drained.signal(1);
    }

    /// Waits for queued bytes; `None` once closed and drained. `sent` is
    /// the buffer the writer finished with: the queue reuses it.
    async fn next(&self, mut sent: Vec<u8>) -> Option<Vec<u8>> {
        loop {
            let out = take_queued(&mut self.bytes.borrow_mut(), sent);
            if !out.is_empty() {
                return Some(out);
            }
            if self.closed.get() {
                return None;
            }
            sent = out;
            let _ = self.ready.acquire(1).await;
        }
    }
}
