//! One native-protocol connection: requests are read and decoded as they
//! arrive, each runs in its own task (so responses can leave out of
//! order), and a writer task sends responses in batches.

use std::rc::Rc;
use std::time::Duration;

use corekv_engine::version::wall_clock_ms;
use corekv_engine::WriteContext;
use corekv_net::native::{self, ErrorCode, Request, RequestBody, Response, ResponseBody, Sibling};
use corekv_net::Limits;

use super::idle::IdleWatch;
use super::pipeline::{Outbox, Pipeline};
use super::{command, status, ConnectionLimits, Shutdown, Stream};
use crate::coordinator::{Coordinator, CoordinatorError};
use crate::runtime::metrics::bump;
use crate::runtime::metrics::RequestKind;
use crate::runtime::ops::{KvOp, KvReply, PutCondition};
use crate::wire_context as context;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Serves one connection until the client closes it, it idles out, it sends
/// an unrecoverable frame, or the shard stops.
pub(super) async fn serve_connection(
    stream: Stream,
    coordinator: Rc<Coordinator>,
    limits: ConnectionLimits,
    shutdown: Shutdown,
    auth: Option<Rc<crate::auth::Authenticator>>,
) -> std::io::Result<()> {
    // The user this connection authenticated as (when auth is on).
    let mut user: Option<std::sync::Arc<crate::auth::Principal>> = None;
    // The user table generation `user` was last resolved in: after a
    // reload a removed user is refused from its next command.
    let mut seen = auth.as_ref().map_or(0, |a| a.refresh());
    let codec_limits = Limits {
        max_frame_bytes: limits.max_key_bytes + limits.max_value_bytes + 64 * 1024,
        max_key_bytes: limits.max_key_bytes,
        max_value_bytes: limits.max_value_bytes,
        ..Limits::default()
    };
    let (mut reader, writer) = futures_lite::io::split(stream);
    let pipeline = Pipeline::start(
        writer,
        limits.max_in_flight as u64,
        limits.output_buffer_bytes,
        shutdown.clone(),
    );
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut input = IdleWatch::new(limits.idle_timeout, limits.request_read_timeout, &shutdown);
    let mut fatal = false;
    'conn: loop {
        // Decode every complete frame in the buffer.
        loop {
            match native::decode_request(&buf, &codec_limits) {
                Ok(Some((req, used))) => {
                    buf.drain(..used);
                    if let RequestBody::Auth {
                        user: name,
                        password,
                    } = &req.body
                    {
                        let resp = match &auth {
                            None => Response {
                                id: req.id,
                                body: ResponseBody::Ok {
                                    context: Vec::new(),
                                },
                            },
                            Some(a) => match a.authenticate(name, password).await {
                                Ok(p) => {
                                    user = Some(p);
                                    Response {
                                        id: req.id,
                                        body: ResponseBody::Ok {
                                            context: Vec::new(),
                                        },
                                    }
                                }
                                Err(e) => {
                                    bump(&coordinator.router().metrics().client_auth_failures);
                                    if !matches!(e, crate::auth::AuthError::WrongPassword) {
                                        tracing::warn!(error = %e, "client authentication failed");
                                    }
                                    error(
                                        req.id,
                                        ErrorCode::Unauthenticated,
                                        "invalid username-password pair",
                                    )
                                }
                            },
                        };
                        push(pipeline.outbox(), &resp);
                        continue;
                    }
                    if let Some(a) = &auth {
                        a.recheck(&mut user, &mut seen);
                        if let Some(refusal) = refuse(user.as_deref(), &req) {
                            if user.is_some() {
                                bump(&coordinator.router().metrics().client_permission_refusals);
                            }
                            push(pipeline.outbox(), &refusal);
                            continue;
                        }
                    }
                    let coordinator = coordinator.clone();
                    let outbox = pipeline.outbox().clone();
                    let request = async move {
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
                        push(&outbox, &resp);
                    };
                    if pipeline.run(request).await.is_err() {
                        break 'conn;
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
                    push(pipeline.outbox(), &resp);
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
        if !input.read_more(&mut reader, &mut chunk, &mut buf).await? {
            break;
        }
    }
    if pipeline.overflowed() || input.cut() {
        bump(&coordinator.router().metrics().connections_cut);
    }
    pipeline.finish().await;
    if fatal {
        tracing::debug!("closed a connection after an unrecoverable frame");
    }
    Ok(())
}

/// With authentication on: the refusal of `req` for `user` (not yet
/// authenticated when `None`), or `None` when it may run. PING needs no
/// user; ADMIN needs the admin role; writes need readwrite; keys must
/// match the user's patterns.
fn refuse(user: Option<&crate::auth::Principal>, req: &Request) -> Option<Response> {
    if matches!(req.body, RequestBody::Ping) {
        return None;
    }
    let Some(p) = user else {
        return Some(error(
            req.id,
            ErrorCode::Unauthenticated,
            "authentication required (send AUTH first)",
        ));
    };
    let (key, write) = match &req.body {
        RequestBody::Get { key, .. } => (key, false),
        RequestBody::Put { key, .. } | RequestBody::Delete { key, .. } => (key, true),
        RequestBody::Admin(_) if !p.is_admin() => {
            return Some(error(
                req.id,
                ErrorCode::Forbidden,
                format!(
                    "user {} has no permission to run ADMIN (needs the admin role)",
                    p.name()
                ),
            ))
        }
        _ => return None,
    };
    if write && !p.may_write() {
        return Some(error(
            req.id,
            ErrorCode::Forbidden,
            format!("user {} has no permission to write", p.name()),
        ));
    }
    if !p.may_access(key) {
        return Some(error(
            req.id,
            ErrorCode::Forbidden,
            format!("user {} has no permission to access this key", p.name()),
        ));
    }
    None
}

fn push(outbox: &Outbox, resp: &Response) {
    outbox.push_with(|out| native::encode_response(resp, out));
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

/// Maps a coordinator failure to a protocol error code.
pub(super) fn coordinator_error_code(e: &CoordinatorError) -> ErrorCode {
    match e {
        CoordinatorError::Local(e) => e.code(),
        CoordinatorError::Unavailable(_) => ErrorCode::Unavailable,
        // The replicas' own kind of failure when they had one (a full disk
        // is STORAGE, a bound OVERLOADED), else too few replicas.
        CoordinatorError::Failed { code, .. } => code.unwrap_or(ErrorCode::Unavailable),
        CoordinatorError::Timeout { .. } => ErrorCode::Timeout,
        CoordinatorError::Refused { code, .. } => *code,
    }
}

/// The write context a request carries, or the error to answer with.
fn write_context(
    coordinator: &Coordinator,
    id: u64,
    bytes: &[u8],
) -> Result<WriteContext, Response> {
    if bytes.is_empty() {
        return Ok(WriteContext::Blind);
    }
    let max = coordinator.router().engine().options().max_context_entries;
    context::decode(bytes, max)
        .map(WriteContext::Given)
        .map_err(|e| error(id, e.code(), e.to_string()))
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
            // Boxed: rare, and larger than a key-value request's state.
            return match Box::pin(status::status_json(coordinator)).await {
                Ok(json) => Response {
                    id,
                    body: ResponseBody::Status(json.into_bytes()),
                },
                Err(e) => error(id, e.code(), e.to_string()),
            };
        }
        RequestBody::Auth { .. } => {
            return error(
                id,
                ErrorCode::Internal,
                "AUTH is answered by the connection loop",
            )
        }
        RequestBody::Admin(command) => {
            return match command::run(coordinator, &command).await {
                Ok(json) => Response {
                    id,
                    body: ResponseBody::Status(json.into_bytes()),
                },
                Err(message) => error(id, ErrorCode::BadFrame, message),
            };
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
            let context = match write_context(coordinator, id, &context) {
                Ok(context) => context,
                Err(refusal) => return refusal,
            };
            if ttl_ms > corekv_net::resp::MAX_TTL_MS {
                return error(
                    id,
                    ErrorCode::BadFrame,
                    format!(
                        "ttl_ms {ttl_ms} is above the longest TTL, {} ms",
                        corekv_net::resp::MAX_TTL_MS
                    ),
                );
            }
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
            let context = match write_context(coordinator, id, &context) {
                Ok(context) => context,
                Err(refusal) => return refusal,
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
