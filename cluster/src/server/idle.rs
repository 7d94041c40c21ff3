//! A connection's idle timeout and the shard's shutdown, watched without a
//! timer per read.
//!
//! Every read of a connection races the socket against "idle too long or
//! the shard is stopping". A fresh glommio timer per read, or even one poll
//! of a timer (which re-inserts it into the reactor's timer map), cost
//! ~1 300 instructions per round trip, and a watch that woke every 50 ms
//! made each idle connection wake its shard 20 times a second. Here the
//! watch is one long-lived future per connection: its timer is armed once
//! per idle period (it sleeps until the last input plus the timeout), the
//! shard's stop wakes it through [`Shutdown::stopped`], and between reads it
//! is polled at most every [`WATCH_POLL_INTERVAL`].
//!
//! The same watch bounds how long one request may take to arrive: once the
//! connection holds an unfinished request, all of it must be there within
//! the request-read timeout of its first bytes, however slowly it trickles
//! in (a slowloris sending a byte a minute never trips the idle timeout).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncRead, AsyncReadExt};

use super::Shutdown;

/// Reads poll the watch at most this often; the watch's own wake-ups are
/// never skipped because its timer never fires sooner than
/// [`WATCH_SLEEP_MIN`] after the poll that armed it.
const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The shortest sleep of the watch's timer (so an idle connection is
/// closed up to this much after its timeout).
const WATCH_SLEEP_MIN: Duration = Duration::from_millis(50);

/// One connection's read side: when input last arrived, and the watch that
/// ends the connection once it has been idle for its timeout or the shard
/// starts stopping.
pub(super) struct IdleWatch {
    last_input: Rc<Cell<Instant>>,
    /// When the unfinished request now buffered began to arrive.
    partial_since: Rc<Cell<Option<Instant>>>,
    request_timeout: Duration,
    cut: bool,
    shutdown: Shutdown,
    watch: Pin<Box<dyn Future<Output = ()>>>,
    polled_at: Option<Instant>,
}

impl IdleWatch {
    /// A watch for a connection that closes after `idle` without input,
    /// or when a request has not arrived whole `request_timeout` after its
    /// first bytes.
    pub(super) fn new(idle: Duration, request_timeout: Duration, shutdown: &Shutdown) -> IdleWatch {
        let last_input = Rc::new(Cell::new(Instant::now()));
        let partial_since = Rc::new(Cell::new(None));
        let watch = Box::pin(idle_or_stopping(
            last_input.clone(),
            idle,
            partial_since.clone(),
            request_timeout,
            shutdown.clone(),
        ));
        IdleWatch {
            last_input,
            partial_since,
            request_timeout,
            cut: false,
            shutdown: shutdown.clone(),
            watch,
            polled_at: None,
        }
    }

    /// True when the connection ended because a request did not arrive
    /// whole in time (for the caller to count).
    pub(super) fn cut(&self) -> bool {
        self.cut
    }

    /// When the connection's last bytes arrived (the latency metrics count
    /// from here).
    pub(super) fn last_input(&self) -> Instant {
        self.last_input.get()
    }

    /// Reads the next bytes of the connection into `buf` (through `chunk`);
    /// `Ok(false)` when the connection is done: closed by the peer, idle
    /// for its timeout, a request in `buf` unfinished for too long, or the
    /// shard is stopping. `buf` holds only the unfinished request (the
    /// caller consumed every whole one).
    pub(super) async fn read_more(
        &mut self,
        reader: &mut (impl AsyncRead + Unpin),
        chunk: &mut [u8],
        buf: &mut Vec<u8>,
    ) -> std::io::Result<bool> {
        if self.shutdown.is_stopping() {
            return Ok(false);
        }
        if buf.is_empty() {
            self.partial_since.set(None);
        } else if self.partial_since.get().is_none() {
            self.partial_since.set(Some(self.last_input.get()));
        }
        if self.overdue() {
            return Ok(false);
        }
        let IdleWatch {
            last_input,
            shutdown,
            watch,
            polled_at,
            ..
        } = self;
        let watch_fired = std::future::poll_fn(|cx| {
            // Cheap, and a stop must not wait for the poll interval.
            if shutdown.is_stopping() {
                return Poll::Ready(());
            }
            let now = Instant::now();
            if polled_at.is_some_and(|at| now.duration_since(at) < WATCH_POLL_INTERVAL) {
                return Poll::Pending;
            }
            *polled_at = Some(now);
            watch.as_mut().poll(cx)
        });
        let read = future::or(async { Some(reader.read(chunk).await) }, async {
            watch_fired.await;
            None
        })
        .await;
        match read {
            Some(Ok(0)) => Ok(false),
            None => {
                self.overdue();
                Ok(false)
            }
            Some(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                last_input.set(Instant::now());
                Ok(!self.overdue())
            }
            Some(Err(e)) => Err(e),
        }
    }

    /// Whether the unfinished request is past its timeout (noted in `cut`).
    fn overdue(&mut self) -> bool {
        let late = self
            .partial_since
            .get()
            .is_some_and(|t| t.elapsed() >= self.request_timeout);
        self.cut |= late;
        late
    }
}

/// Resolves once the connection has had no input for `idle` (counted from
/// `last_input`), an unfinished request began `request_timeout` ago, or
/// the shard starts stopping.
async fn idle_or_stopping(
    last_input: Rc<Cell<Instant>>,
    idle: Duration,
    partial_since: Rc<Cell<Option<Instant>>>,
    request_timeout: Duration,
    shutdown: Shutdown,
) {
    let idle_expired = async {
        loop {
            let idle_due = last_input.get().checked_add(idle);
            let request_due = partial_since
                .get()
                .and_then(|t| t.checked_add(request_timeout));
            let due = match (idle_due, request_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // A timeout too large for an `Instant` never expires.
            let Some(due) = due else {
                std::future::pending::<()>().await;
                return;
            };
            let now = Instant::now();
            if now >= due {
                return;
            }
            // Never longer than the request timeout: a request that starts
            // arriving during the sleep is checked at most that late.
            glommio::timer::sleep((due - now).min(request_timeout).max(WATCH_SLEEP_MIN)).await;
        }
    };
    future::or(idle_expired, shutdown.stopped()).await
}
