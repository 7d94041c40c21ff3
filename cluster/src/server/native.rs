//! One native-protocol connection: requests are read and decoded as they
//! arrive, each runs in its own task (so responses can leave out of
//! order), and a writer task sends responses in batches.

use std::rc::Rc;
use std::time::Duration;

use corekv_engine::version::wall_clock_ms;
use corekv_engine::WriteContext;
use corekv_net::native::{self, ErrorCode, Request, RequestBody, Response, ResponseBody, Sibling};
use corekv_net::Limits;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::sync::Semaphore;
use std::cell::{Cell, RefCell};

use super::{context, status, ConnectionLimits, Shutdown, Stream};
use crate::coordinator::{Coordinator, CoordinatorError};
use crate::runtime::metrics::RequestKind;
use crate::runtime::ops::{KvOp, KvReply, PutCondition};
use crate::runtime::router::RouteError;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Serves one connection until the client closes it, it idles out, it sends
/// an unrecoverable frame, or the shard stops.
pub(super) async fn serve_connection(
    stream: Stream,
    coordinator: Rc<Coordinator>,
    limits: ConnectionLimits,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let codec_limits = Limits {
        max_frame_bytes: limits.max_key_bytes + limits.max_value_bytes + 64 * 1024,
        max_key_bytes: limits.max_key_bytes,
        max_value_bytes: limits.max_value_bytes,
        ..Limits::default()
    };
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let in_flight_max = limits.max_in_flight.max(1);
    let outbox = Rc::new(Outbox::new());
    let writer_outbox = outbox.clone();
    let writer_task = glommio::spawn_local(async move {
        // Everything queued while the previous write ran goes out in one write.
        while let Some(out) = writer_outbox.next().await {
            if writer.write_all(&out).await.is_err() {
                writer_outbox.close();
                break;
            }
        }
        let _ = writer.close().await;
    });
    let permits = Rc::new(Semaphore::new(in_flight_max as u64));
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut fatal = false;
    'conn: loop {
        // Decode every complete frame in the buffer.
        loop {
            match native::decode_request(&buf, &codec_limits) {
                Ok(Some((req, used))) => {
                    buf.drain(..used);
                    let permit = permits
                        .clone()
                        .acquire_static_permit(1)
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    let coordinator = coordinator.clone();
                    let outbox = outbox.clone();
                    let shutdown = shutdown.clone();
                    shutdown.request_started();
                    let mut run = Box::pin(async move {
                        let started = std::time::Instant::now();
                        let kind = match req.body {
                            RequestBody::Get { .. } => RequestKind::Get,
                            RequestBody::Put { .. } => RequestKind::Put,
                            RequestBody::Delete { .. } => RequestKind::Delete,
                            _ => RequestKind::Other,
                        };
                        let resp = handle(&coordinator, req).await;
                        coordinator
                            .router()
                            .metrics()
                            .record(kind, started.elapsed());
                        outbox.push(&resp);
                        shutdown.request_finished();
                        drop(permit);
                    });
                    // Requests that complete without waiting (reads from the
                    // memtable or cache) run inline; the rest get a task.
                    if future::poll_once(&mut run).await.is_none() {
                        glommio::spawn_local(run).detach();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let resp = Response {
                        id: e.id.unwrap_or(0),
                        body: ResponseBody::Error {
                            code: e.code,
                            message: e.message.clone(),
                        },
                    };
                    outbox.push(&resp);
                    match e.skip {
                        Some(n) => {
                            buf.drain(..n.min(buf.len()));
                        }
                        None => {
                            fatal = true;
                            break 'conn;
                        }
                    }
                }
            }
        }
        if !read_more(
            &mut reader,
            &mut chunk,
            &mut buf,
            limits.idle_timeout,
            &shutdown,
        )
        .await?
        {
            break;
        }
    }
    // Let in-flight requests finish and their responses go out, then close.
    let _ = permits.acquire(in_flight_max as u64).await;
    outbox.close();
    writer_task.await;
    if fatal {
        tracing::debug!("closed a connection after an unrecoverable frame");
    }
    Ok(())
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
    pub(super) fn new() -> Outbox {
        Outbox {
            bytes: RefCell::new(Vec::new()),
            closed: Cell::new(false),
            ready: Semaphore::new(0),
        }
    }

    fn push(&self, resp: &Response) {
        self.push_with(|out| native::encode_response(resp, out));
    }

    /// Appends whatever `encode` writes and wakes the writer.
    pub(super) fn push_with(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.bytes.borrow_mut());
        self.ready.signal(1);
    }

    pub(super) fn close(&self) {
        self.closed.set(true);
        self.ready.signal(1);
    }

    /// Waits for queued bytes; `None` once closed and drained.
    pub(super) async fn next(&self) -> Option<Vec<u8>> {
        loop {
            let out = std::mem::take(&mut *self.bytes.borrow_mut());
            if !out.is_empty() {
                return Some(out);
            }
            if self.closed.get() {
                return None;
            }
            let _ = self.ready.acquire(1).await;
        }
    }
}

/// Reads the next bytes of a connection into `buf`; `Ok(false)` when the
/// connection is done: closed by the peer, idle for `idle`, or the shard is
/// stopping.
pub(super) async fn read_more(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    chunk: &mut [u8],
    buf: &mut Vec<u8>,
    idle: Duration,
    shutdown: &Shutdown,
) -> std::io::Result<bool> {
    if shutdown.is_stopping() {
        return Ok(false);
    }
    let read = future::or(async { Some(reader.read(chunk).await) }, async {
        idle_or_stop(idle, shutdown).await;
        None
    })
    .await;
    match read {
        Some(Ok(0)) | None => Ok(false),
        Some(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Some(Err(e)) => Err(e),
    }
}

/// Resolves after `idle` of no traffic or when the shard starts stopping.
pub(super) async fn idle_or_stop(idle: Duration, shutdown: &Shutdown) {
    let deadline = std::time::Instant::now() + idle;
    while std::time::Instant::now() < deadline && !shutdown.is_stopping() {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

fn error(id: u64, code: ErrorCode, message: impl Into<String>) -> Response {
    Response {
        id,
        body: ResponseBody::Error {
            code,
            message: message.into(),
        },
    }
}

/// Maps an internal failure to a protocol error code.
pub(super) fn error_code(e: &RouteError) -> ErrorCode {
    use corekv_engine::Error as E;
    match e {
        RouteError::Engine(E::KeyTooLarge { .. }) => ErrorCode::KeyTooLarge,
        RouteError::Engine(E::ValueTooLarge { .. }) => ErrorCode::ValueTooLarge,
        RouteError::Engine(E::Io { .. } | E::FlushFailed(_) | E::LogFailed(_)) => {
            ErrorCode::Storage
        }
        RouteError::Engine(E::Closed) => ErrorCode::Unavailable,
        RouteError::Runtime(_) => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

/// Maps a coordinator failure to a protocol error code.
pub(super) fn coordinator_error_code(e: &CoordinatorError) -> ErrorCode {
    match e {
        CoordinatorError::Local(e) => error_code(e),
        CoordinatorError::Unavailable(_) | CoordinatorError::Failed { .. } => {
            ErrorCode::Unavailable
        }
        CoordinatorError::Timeout { .. } => ErrorCode::Timeout,
    }
}

fn write_context(bytes: &[u8]) -> Option<WriteContext> {
    if bytes.is_empty() {
        return Some(WriteContext::Blind);
    }
    context::decode(bytes).map(WriteContext::Given)
}

async fn handle(coordinator: &Rc<Coordinator>, req: Request) -> Response {
    let id = req.id;
    let op = match req.body {
        RequestBody::Ping => {
            return Response {
                id,
                body: ResponseBody::Pong,
            }
        }
        RequestBody::Topology => {
            return Response {
                id,
                body: ResponseBody::Topology(coordinator.topology().to_json().into_bytes()),
            }
        }
        RequestBody::Status => {
            return match status::status_json(coordinator).await {
                Ok(json) => Response {
                    id,
                    body: ResponseBody::Status(json.into_bytes()),
                },
                Err(e) => error(id, error_code(&e), e.to_string()),
            }
        }
        RequestBody::Get { key, consistency } => (KvOp::Get { key }, consistency),
        RequestBody::Put {
            consistency,
            ttl_ms,
            context,
            key,
            value,
            ..
        } => {
            let Some(context) = write_context(&context) else {
                return error(
                    id,
                    ErrorCode::BadFrame,
                    "the causal context is not one this server issued",
                );
            };
            let op = KvOp::Put {
                key,
                value,
                ttl: (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms)),
                context,
                condition: PutCondition::Always,
            };
            (op, consistency)
        }
        RequestBody::Delete {
            context,
            key,
            consistency,
        } => {
            let Some(context) = write_context(&context) else {
                return error(
                    id,
                    ErrorCode::BadFrame,
                    "the causal context is not one this server issued",
                );
            };
            (KvOp::Delete { key, context }, consistency)
        }
    };
    let (op, level) = op;
    let body = match coordinator.execute(op, level).await {
        Ok(KvReply::Value(set)) => {
            let now = wall_clock_ms();
            match set {
                Some(set) if set.has_live(now) => ResponseBody::Value {
                    context: context::encode(&set.causal_context()),
                    siblings: set
                        .live(now)
                        .map(|v| Sibling {
                            value: v.value.clone(),
                            timestamp: v.timestamp,
                            expires_at_ms: v.expires_at_ms,
                        })
                        .collect(),
                },
                Some(set) => ResponseBody::NotFound {
                    context: context::encode(&set.causal_context()),
                },
                None => ResponseBody::NotFound {
                    context: Vec::new(),
                },
            }
        }
        Ok(KvReply::Written { context, .. } | KvReply::Deleted { context, .. }) => {
            ResponseBody::Ok {
                context: context::encode(&context),
            }
        }
        Ok(other) => {
            return error(
                id,
                ErrorCode::Internal,
                format!("unexpected reply {other:?}"),
            )
        }
        Err(e) => return error(id, coordinator_error_code(&e), e.to_string()),
    };
    Response { id, body }
}
