//! One internode connection: another node's coordinator shard asking this
//! shard to read or merge keys it replicates. Requests run concurrently
//! and answers leave in completion order, matched by request id.

use std::rc::Rc;

use corekv_engine::version::SiblingSet;
use corekv_engine::WriteContext;
use corekv_net::native::ErrorCode;
use corekv_net::peer::{self, HelloChallenge, PeerRequest, PeerResponse};
use corekv_net::Limits;

use super::idle::IdleWatch;
use super::pipeline::Pipeline;
use super::{ConnectionLimits, Shutdown, Stream};
use crate::coordinator::Coordinator;
use crate::runtime::metrics::bump;
use crate::runtime::ops::{ReplicaOp, ReplicaReply};
use crate::secret::{HelloSide, HelloTranscript};

const READ_CHUNK: usize = 64 * 1024;
/// Requests one peer connection may have running here at once.
const IN_FLIGHT_MAX: u64 = 4096;

/// Serves one internode connection until it closes or the shard stops.
pub(super) async fn serve_connection(
    stream: Stream,
    coordinator: Rc<Coordinator>,
    limits: ConnectionLimits,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let codec_limits = Limits {
        max_frame_bytes: 2 * (limits.max_key_bytes + limits.max_value_bytes) + 64 * 1024,
        max_key_bytes: limits.max_key_bytes,
        max_value_bytes: limits.max_value_bytes,
        ..Limits::default()
    };
    let (mut reader, writer) = futures_lite::io::split(stream);
    let pipeline = Pipeline::start(writer, IN_FLIGHT_MAX, shutdown.clone());
    let outbox = pipeline.outbox().clone();
    let mut version = peer::VERSION_MIN;
    let mut greeting = Greeting::Awaited;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut input = IdleWatch::new(limits.idle_timeout, &shutdown);
    'conn: loop {
        loop {
            match peer::decode_request(&buf, &codec_limits) {
                Ok(Some((id, frame_version, req, used))) => {
                    buf.drain(..used);
                    let step = match (&req, &greeting) {
                        (PeerRequest::Hello { .. }, _) | (PeerRequest::Auth { .. }, _) => {
                            Some(greet(&coordinator, &req, &mut greeting))
                        }
                        (_, Greeting::Done) => None,
                        (_, Greeting::Awaited) => Some(Err(refusal(
                            ErrorCode::BadFrame,
                            "HELLO must open an internode connection",
                        ))),
                        (_, Greeting::Challenged(_)) => Some(Err(refusal(
                            ErrorCode::Unauthenticated,
                            "AUTH must answer this node's HELLO challenge before any request",
                        ))),
                    };
                    match step {
                        None => {}
                        Some(Ok(answer)) => {
                            if let PeerResponse::Hello { version: v, .. } = answer {
                                version = v;
                            }
                            outbox.push_with(|out| {
                                peer::encode_response(frame_version, id, &answer, out)
                            });
                            continue;
                        }
                        Some(Err(answer)) => {
                            if matches!(
                                answer,
                                PeerResponse::Error {
                                    code: ErrorCode::Unauthenticated,
                                    ..
                                }
                            ) {
                                bump(&coordinator.router().metrics().peer_auth_refusals);
                            }
                            outbox.push_with(|out| {
                                peer::encode_response(frame_version, id, &answer, out)
                            });
                            break 'conn;
                        }
                    }
                    let coordinator = coordinator.clone();
                    let outbox = outbox.clone();
                    pipeline
                        .run(async move {
                            let answer = serve(&coordinator, req).await;
                            outbox
                                .push_with(|out| peer::encode_response(version, id, &answer, out));
                        })
                        .await?;
                }
                Ok(None) => break,
                Err(e) => {
                    let answer = PeerResponse::Error {
                        code: e.code,
                        message: e.message.clone(),
                    };
                    let id = e.id.unwrap_or(0);
                    outbox.push_with(|out| peer::encode_response(version, id, &answer, out));
                    match e.skip {
                        Some(n) => {
                            buf.drain(..n.min(buf.len()));
                        }
                        None => break 'conn,
                    }
                }
            }
        }
        if !input.read_more(&mut reader, &mut chunk, &mut buf).await? {
            break;
        }
    }
    pipeline.finish().await;
    Ok(())
}

/// Where a connection is in its opening exchange.
enum Greeting {
    /// Nothing received yet: HELLO must come first.
    Awaited,
    /// HELLO answered with a challenge; AUTH must come next.
    Challenged(Challenge),
    /// Open for requests.
    Done,
}

/// What this node's challenge to a caller covered.
struct Challenge {
    caller: u32,
    caller_nonce: [u8; peer::NONCE_BYTES],
    replica_nonce: [u8; peer::NONCE_BYTES],
}

fn refusal(code: ErrorCode, message: &str) -> PeerResponse {
    PeerResponse::Error {
        code,
        message: message.into(),
    }
}

/// Handles HELLO or AUTH: the answer (the connection goes on), or the
/// refusal (sent, then the connection is closed). With a cluster secret,
/// HELLO must carry the caller's nonce and is answered with this node's
/// challenge, and only a right AUTH opens the connection.
fn greet(
    coordinator: &Coordinator,
    req: &PeerRequest,
    greeting: &mut Greeting,
) -> Result<PeerResponse, PeerResponse> {
    let secret = coordinator.links().secret();
    match (req, &*greeting) {
        (
            PeerRequest::Hello {
                version_min,
                version_max,
                node_id,
                cluster,
                nonce,
            },
            Greeting::Awaited,
        ) => {
            let mut answer = hello(coordinator, *version_min, *version_max, *node_id, cluster);
            let PeerResponse::Hello {
                node_id: me,
                challenge,
                ..
            } = &mut answer
            else {
                return Err(answer);
            };
            let Some(secret) = secret else {
                *greeting = Greeting::Done;
                return Ok(answer);
            };
            let Some(caller_nonce) = nonce else {
                return Err(refusal(
                    ErrorCode::Unauthenticated,
                    "this node requires the cluster secret: HELLO without a challenge refused (set cluster_secret_file on every node)",
                ));
            };
            let replica_nonce =
                crate::secret::nonce().map_err(|e| refusal(ErrorCode::Internal, &e.to_string()))?;
            let topology = coordinator.topology();
            let proof = secret.hello_proof(
                HelloSide::Replica,
                &HelloTranscript {
                    cluster: topology.cluster(),
                    caller: *node_id,
                    replica: *me,
                    caller_nonce,
                    replica_nonce: &replica_nonce,
                },
            );
            *challenge = Some(HelloChallenge {
                nonce: replica_nonce,
                proof,
            });
            *greeting = Greeting::Challenged(Challenge {
                caller: *node_id,
                caller_nonce: *caller_nonce,
                replica_nonce,
            });
            Ok(answer)
        }
        (PeerRequest::Auth { proof }, Greeting::Challenged(c)) => {
            let topology = coordinator.topology();
            let me = topology.me().map_or(0, |i| topology.members()[i].id);
            let transcript = HelloTranscript {
                cluster: topology.cluster(),
                caller: c.caller,
                replica: me,
                caller_nonce: &c.caller_nonce,
                replica_nonce: &c.replica_nonce,
            };
            match secret {
                Some(secret) if secret.verify_hello(HelloSide::Caller, &transcript, proof) => {
                    *greeting = Greeting::Done;
                    Ok(PeerResponse::Authenticated)
                }
                _ => Err(refusal(
                    ErrorCode::Unauthenticated,
                    "AUTH proof does not match: the caller has another cluster secret",
                )),
            }
        }
        (PeerRequest::Hello { .. }, _) => {
            Err(refusal(ErrorCode::BadFrame, "HELLO was already exchanged"))
        }
        _ => Err(refusal(
            ErrorCode::BadFrame,
            "AUTH without a challenge (this node sent none)",
        )),
    }
}

/// Answers HELLO: the newest version both ends speak, or why not.
fn hello(
    coordinator: &Coordinator,
    their_min: u8,
    their_max: u8,
    their_id: u32,
    cluster: &str,
) -> PeerResponse {
    let topology = coordinator.topology();
    if cluster != topology.cluster() {
        return PeerResponse::Error {
            code: ErrorCode::BadFrame,
            message: format!(
                "node {their_id} belongs to cluster {cluster:?}, this node to {:?}",
                topology.cluster()
            ),
        };
    }
    let version = their_max.min(peer::VERSION_MAX);
    if version < their_min.max(peer::VERSION_MIN) {
        return PeerResponse::Error {
            code: ErrorCode::UnsupportedVersion,
            message: format!(
                "internode versions {their_min}..={their_max} requested, this node speaks {}..={}",
                peer::VERSION_MIN,
                peer::VERSION_MAX
            ),
        };
    }
    let me = topology.me().map_or(0, |i| topology.members()[i].id);
    PeerResponse::Hello {
        version,
        node_id: me,
        shards: coordinator.router().shards() as u16,
        challenge: None,
    }
}

/// Runs one replica request against this node (the owning shard).
async fn serve(coordinator: &Coordinator, req: PeerRequest) -> PeerResponse {
    let router = coordinator.router();
    if let Some(answer) = crate::repair::replica::serve(
        router.engine(),
        coordinator.trees(),
        router.index(),
        router.shards(),
        &req,
    )
    .await
    {
        return answer;
    }
    let mode = router.engine().options().conflict;
    let op = match req {
        PeerRequest::Hello { .. } | PeerRequest::Auth { .. } => {
            return PeerResponse::Error {
                code: ErrorCode::BadFrame,
                message: "HELLO and AUTH open a connection; they were already exchanged".into(),
            }
        }
        PeerRequest::Read { key } => ReplicaOp::Get { key },
        PeerRequest::Hint { owner, key, set } => {
            // A hint for a node that is down: kept here, durably, and
            // handed over when it is back.
            return match coordinator.store_hint(owner, &key, &set).await {
                Ok(()) => PeerResponse::Applied,
                Err(crate::coordinator::ReplicaError::Refused { code, message }) => {
                    PeerResponse::Error { code, message }
                }
                Err(e) => PeerResponse::Error {
                    code: ErrorCode::Storage,
                    message: e.to_string(),
                },
            };
        }
        PeerRequest::Tree { .. } | PeerRequest::Digests { .. } | PeerRequest::Scan { .. } => {
            return PeerResponse::Error {
                code: ErrorCode::Internal,
                message: "range request not served".into(),
            }
        }
        PeerRequest::Mint {
            context_kind,
            ttl_ms,
            context,
            key,
            value,
        } => {
            let context = match context_kind {
                0 => WriteContext::Blind,
                2 => WriteContext::Overwrite,
                _ => {
                    let max = router.engine().options().max_context_entries;
                    match crate::wire_context::decode(&context, max) {
                        Ok(cc) => WriteContext::Given(cc),
                        Err(e) => {
                            return PeerResponse::Error {
                                code: e.code(),
                                message: e.to_string(),
                            };
                        }
                    }
                }
            };
            ReplicaOp::Mint {
                key,
                value,
                ttl: (ttl_ms > 0).then(|| std::time::Duration::from_millis(ttl_ms)),
                context,
            }
        }
        PeerRequest::Apply { key, set } => match SiblingSet::decode(&set, mode) {
            Ok(delta) => ReplicaOp::Apply { key, delta },
            Err(e) => {
                return PeerResponse::Error {
                    code: ErrorCode::BadFrame,
                    message: format!("sibling set: {e}"),
                }
            }
        },
    };
    match coordinator.router().call(op).await {
        Ok(ReplicaReply::Set(set)) => PeerResponse::Set(set.map(|s| s.to_bytes())),
        Ok(ReplicaReply::Applied) => PeerResponse::Applied,
        Ok(ReplicaReply::Minted { state, context }) => PeerResponse::Minted {
            context: crate::wire_context::encode(&context),
            set: state.to_bytes(),
        },
        Ok(ReplicaReply::Stats(_)) => PeerResponse::Error {
            code: ErrorCode::Internal,
            message: "unexpected stats reply".into(),
        },
        Err(e) => PeerResponse::Error {
            code: e.code(),
            message: e.to_string(),
        },
    }
}
