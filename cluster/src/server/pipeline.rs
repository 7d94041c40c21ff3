//! What every framed request/response connection shares (native and
//! internode): requests run concurrently, each inline when it completes
//! without waiting or as its own task otherwise, at most a bounded number
//! at once; and their encoded answers collect in an outbox that one writer
//! task sends in batches. (The read side's idle and shutdown watch is in
//! `idle`.)

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use corekv_net::outbox::take_queued;
use futures_lite::io::WriteHalf;
use futures_lite::{future, AsyncWriteExt};
use futures_util::FutureExt;
use glommio::sync::Semaphore;

use super::{Shutdown, Stream};

/// A connection's write side and its bound on requests in flight.
pub(super) struct Pipeline {
    outbox: Rc<Outbox>,
    permits: Rc<Semaphore>,
    in_flight_max: u64,
    writer: glommio::Task<()>,
    shutdown: Shutdown,
}

impl Pipeline {
    /// Starts the writer task over `writer`; at most `in_flight_max`
    /// requests run at once.
    pub(super) fn start(
        mut writer: WriteHalf<Stream>,
        in_flight_max: u64,
        shutdown: Shutdown,
    ) -> Pipeline {
        let outbox = Rc::new(Outbox::new());
        let writer_outbox = outbox.clone();
        let writer = glommio::spawn_local(async move {
            // Everything queued while the previous write ran goes out in one write.
            let mut sent = Vec::new();
            while let Some(out) = writer_outbox.next(sent).await {
                if writer.write_all(&out).await.is_err() {
                    writer_outbox.close();
                    break;
                }
                sent = out;
            }
            let _ = writer.close().await;
        });
        Pipeline {
            outbox,
            permits: Rc::new(Semaphore::new(in_flight_max.max(1))),
            in_flight_max: in_flight_max.max(1),
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

    /// Lets in-flight requests finish and their answers go out, then closes
    /// the write side.
    pub(super) async fn finish(self) {
        let _ = self.permits.acquire(self.in_flight_max).await;
        self.outbox.close();
        self.writer.await;
    }
}

/// Encoded responses waiting for the writer task. Bounded by the
/// connection's in-flight limit: a response is pushed only by a request
/// holding a permit.
pub(super) struct Outbox {
    bytes: RefCell<Vec<u8>>,
    closed: Cell<bool>,
    ready: Semaphore,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            bytes: RefCell::new(Vec::new()),
            closed: Cell::new(false),
            ready: Semaphore::new(0),
        }
    }

    /// Appends whatever `encode` writes and wakes the writer.
    pub(super) fn push_with(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.bytes.borrow_mut());
        self.ready.signal(1);
    }

    fn close(&self) {
        self.closed.set(true);
        self.ready.signal(1);
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
