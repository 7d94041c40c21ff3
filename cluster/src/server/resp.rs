//! One RESP connection: commands are parsed as they arrive and answered in
//! order (RESP has no request ids), several per write when pipelined.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use corekv_engine::version::wall_clock_ms;
use corekv_engine::{token_of, WriteContext};
use corekv_net::resp::{self, Command, Parsed, Reply, SetCondition, SetExpiry};
use corekv_net::Limits;
use futures_lite::{future, AsyncWriteExt};

use super::idle::IdleWatch;
use super::{resp_auth, status, ConnectionLimits, Shutdown, Stream};
use crate::coordinator::Coordinator;
use crate::runtime::metrics::bump;
use crate::runtime::metrics::RequestKind;
use crate::runtime::ops::{KvOp, KvReply, PutCondition};
use corekv_net::native::Consistency;

const READ_CHUNK: usize = 64 * 1024;

/// Serves one RESP connection until QUIT, EOF, idle timeout, a protocol
/// error, or shard stop.
pub(super) async fn serve_connection(
    mut stream: Stream,
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
    let parse_limits = Limits {
        max_key_bytes: limits.max_key_bytes,
        max_value_bytes: limits.max_value_bytes,
        ..Limits::default()
    };
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // Run the buffered commands concurrently (so pipelined writes share
    // commit-log syncs) but answer in order; a command touching a key an
    // earlier command still running writes (or reads, for a write) waits
    // for it, so a pipeline behaves as if run one by one.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    // The idle timeout and the shard's stop, watched without a timer per
    // read (see `idle`).
    let mut input = IdleWatch::new(limits.idle_timeout, limits.request_read_timeout, &shutdown);
    loop {
        let mut quit = false;
        // Commands are parsed at an offset and the consumed bytes dropped
        // once per read: draining per command moved the rest of a pipelined
        // batch down every time.
        let mut at = 0;
        // Pending commands still running (not answered inline): only they
        // can conflict with a later command.
        let mut running = 0usize;
        // Commands parsed from this read.
        let mut commands = 0usize;
        // Bytes of answers held for this pass (encoded, or kept in
        // `pending`): past the output bound the pass stops parsing, sends
        // what it has, and goes on with the buffered commands before
        // reading more (client-output-buffer-limit).
        let mut held = 0usize;
        let mut more_buffered = false;
        loop {
            if out.len() + held >= limits.output_buffer_bytes {
                more_buffered = true;
                break;
            }
            match resp::parse_command(&buf[at..], &parse_limits) {
                Ok(Some((parsed, used))) => {
                    at += used;
                    commands += 1;
                    let Parsed::Command(cmd) = parsed else {
                        continue;
                    };
                    if auth.is_some()
                        || matches!(
                            cmd,
                            Command::Auth { .. } | Command::Hello { .. } | Command::AclWhoami
                        )
                    {
                        if let Some(a) = &auth {
                            a.recheck(&mut user, &mut seen);
                        }
                        let metrics = coordinator.router().metrics();
                        if let Some(reply) =
                            resp_auth::screen(auth.as_deref(), metrics, &mut user, &cmd).await
                        {
                            answer_in_order(reply, &mut pending, &mut out, &mut held);
                            continue;
                        }
                    }
                    if cmd == Command::Quit {
                        drain(&mut pending, &mut out).await;
                        Reply::ok().encode(&mut out);
                        quit = true;
                        break;
                    }
                    // Keys are hashed only when they may be needed: to check
                    // against running commands, or for a write, which will be
                    // running itself (it waits for the commit log).
                    let keys = (running > 0 || !is_read(&cmd)).then(|| keys_of(&cmd));
                    // A lone node's plain SET takes its clock reading when
                    // first polled (below, before anything can wait), and
                    // overwrites merge by that reading in any order: SETs
                    // of one key need not wait for each other, so a
                    // pipeline's SETs share one commit-log sync and the
                    // last one still wins. A read of the key still waits.
                    let overwrite = match &cmd {
                        Command::Set {
                            key,
                            condition: SetCondition::Always,
                            ..
                        } => coordinator.writes_here_alone(key, Consistency::Default),
                        _ => false,
                    };
                    let conflict = match &keys {
                        Some((reads, writes)) => pending
                            .iter()
                            .any(|p| p.conflicts(reads, writes, overwrite)),
                        None => false,
                    };
                    if conflict || pending.len() >= limits.max_in_flight.max(1) {
                        drain(&mut pending, &mut out).await;
                        running = 0;
                    }
                    if let Command::Get(key) = &cmd {
                        // A lone node's point read from memory: answered
                        // here from the borrowed value, without a future,
                        // a decoded set, or a copy of the value. Straight
                        // into the output when nothing is queued before it.
                        // Latency counts from the input's arrival (one
                        // clock read per read from the socket, not one
                        // per command: 4 % of a shard's time went to the
                        // clock under pipelined SETs).
                        let started = input.last_input();
                        let answered = if pending.is_empty() {
                            coordinator
                                .read_winner_now(key, Consistency::Default, |w| {
                                    resp::encode_bulk(w.map(|(value, _)| value), &mut out)
                                })
                                .map(|r| r.map_err(err).err())
                        } else {
                            coordinator
                                .read_winner_now(key, Consistency::Default, |w| {
                                    Reply::Bulk(w.map(|(value, _)| value.to_vec()))
                                })
                                .map(|r| Some(r.unwrap_or_else(err)))
                        };
                        if let Some(reply) = answered {
                            coordinator
                                .router()
                                .metrics()
                                .record(RequestKind::Get, started.elapsed());
                            if let Some(reply) = reply {
                                answer_in_order(reply, &mut pending, &mut out, &mut held);
                            }
                            continue;
                        }
                    }
                    shutdown.request_started();
                    let mut run: std::pin::Pin<Box<dyn std::future::Future<Output = Reply>>> =
                        match cmd {
                            Command::Set {
                                key,
                                value,
                                expiry,
                                condition: SetCondition::Always,
                            } if overwrite => {
                                // A lone node's plain SET gets a future of its
                                // own: a few hundred bytes instead of the
                                // general command's several KiB, moved into
                                // its box on every request.
                                Box::pin(set_here(
                                    coordinator.clone(),
                                    shutdown.clone(),
                                    input.last_input(),
                                    key,
                                    value,
                                    expiry.map(ttl_of),
                                ))
                            }
                            cmd => Box::pin(run_command(
                                coordinator.clone(),
                                shutdown.clone(),
                                input.last_input(),
                                cmd,
                                limits.output_buffer_bytes,
                            )),
                        };
                    // Most reads finish without waiting (memtable or cached
                    // block) and are answered here. The rest stay in the
                    // queue and are polled again when drained, in order: no
                    // task per command, and a pipelined batch of writes
                    // wakes this one task when its commit-log write is done.
                    let pending_entry = match future::poll_once(&mut run).await {
                        Some(reply) if pending.is_empty() => {
                            reply.encode(&mut out);
                            continue;
                        }
                        Some(reply) => Pending {
                            slot: Slot::Done({
                                held += reply_bytes(&reply);
                                reply
                            }),
                            reads: Tokens::None,
                            writes: Tokens::None,
                            overwrite: false,
                        },
                        None => {
                            running += 1;
                            // A read that must wait (a table read) and whose
                            // keys were not hashed conflicts with any later
                            // write: rare, and only ever makes one wait.
                            let (reads, writes) = keys.unwrap_or((Tokens::All, Tokens::None));
                            Pending {
                                slot: Slot::Running(run),
                                reads,
                                writes,
                                overwrite,
                            }
                        }
                    };
                    pending.push_back(pending_entry);
                }
                Ok(None) => break,
                Err(e) => {
                    drain(&mut pending, &mut out).await;
                    Reply::Error(format!("ERR {e}")).encode(&mut out);
                    quit = true;
                    break;
                }
            }
        }
        buf.drain(..at);
        drain(&mut pending, &mut out).await;
        if !quit && !more_buffered && buf.len() > limits.query_buffer_bytes {
            // An unfinished command past the bound (a huge MSET, or an
            // attacker's endless array): refused, like Redis's
            // client-query-buffer-limit.
            Reply::Error(format!(
                "ERR the command is larger than the query buffer limit ({} bytes, query_buffer_mib)",
                limits.query_buffer_bytes
            ))
            .encode(&mut out);
            bump(&coordinator.router().metrics().connections_cut);
            quit = true;
        }
        if !out.is_empty() {
            // A pipelining client: let the other connections whose input
            // arrived with this one run first, so the replies leave in a
            // burst, as Redis writes them after each event-loop pass: a
            // client woken by the first is still busy when the next arrive,
            // instead of being woken (an inter-processor interrupt, costly
            // in a VM) once per send. `perf` put the kernel's wake-up path
            // at 22 % of the shard's time under pipelined GETs without
            // this, 4 % with it. One command per read (no pipelining) is
            // answered at once: there the extra pass through the executor
            // cost more kernel time than it saved.
            if commands > 1 {
                future::yield_now().await;
            }
            stream.write_all(&out).await?;
            // A TLS stream buffers what it could not send yet.
            stream.flush().await?;
            out.clear();
        }
        if quit {
            return Ok(());
        }
        if more_buffered {
            continue;
        }
        // `read_more` also ends the connection once the shard is stopping.
        if !input.read_more(&mut stream, &mut chunk, &mut buf).await? {
            if input.cut() {
                bump(&coordinator.router().metrics().connections_cut);
            }
            return Ok(());
        }
    }
}

/// Runs one command that arrived at `started`, recording its latency and
/// ending its shutdown accounting.
async fn run_command(
    coordinator: Rc<Coordinator>,
    shutdown: Shutdown,
    started: std::time::Instant,
    cmd: Command,
    reply_bytes_max: usize,
) -> Reply {
    let kind = match &cmd {
        Command::Get(_) | Command::Mget(_) | Command::Exists(_) | Command::Ttl(_) => {
            RequestKind::Get
        }
        Command::Set { .. } | Command::Mset(_) | Command::Expire { .. } => RequestKind::Put,
        Command::Del(_) => RequestKind::Delete,
        _ => RequestKind::Other,
    };
    let reply = execute(&coordinator, cmd, reply_bytes_max).await;
    coordinator
        .router()
        .metrics()
        .record(kind, started.elapsed());
    shutdown.request_finished();
    reply
}

/// A plain SET on a lone node ([`Coordinator::write_here`]), with the
/// metrics and shutdown accounting of [`run_command`].
async fn set_here(
    coordinator: Rc<Coordinator>,
    shutdown: Shutdown,
    started: std::time::Instant,
    key: Vec<u8>,
    value: Vec<u8>,
    ttl: Option<Duration>,
) -> Reply {
    let reply = match coordinator.write_here(&key, Some(value), ttl).await {
        Ok(_) => Reply::ok(),
        Err(e) => err(e),
    };
    coordinator
        .router()
        .metrics()
        .record(RequestKind::Put, started.elapsed());
    shutdown.request_finished();
    reply
}

fn ttl_of(expiry: SetExpiry) -> Duration {
    match expiry {
        SetExpiry::Seconds(s) => Duration::from_secs(s),
        SetExpiry::Millis(ms) => Duration::from_millis(ms),
    }
}

/// Commands that only read keys (or touch none).
fn is_read(cmd: &Command) -> bool {
    !matches!(
        cmd,
        Command::Set { .. } | Command::Mset(_) | Command::Expire { .. } | Command::Del(_)
    )
}

/// A command's reply, or the command still computing it (polled again by
/// [`drain`]).
enum Slot {
    Done(Reply),
    Running(std::pin::Pin<Box<dyn std::future::Future<Output = Reply>>>),
}

/// A command of the current pipeline, with the keys it reads and writes.
struct Pending {
    slot: Slot,
    reads: Tokens,
    writes: Tokens,
    /// A lone node's plain SET, its clock reading already taken: it
    /// commutes with a later one of the same key.
    overwrite: bool,
}

impl Pending {
    /// Whether a later command reading `reads` and writing `writes` (a
    /// plain overwrite when `overwrite`) must wait for this one. Answered
    /// commands never conflict; two overwrites of a key do not either,
    /// since the later clock reading wins whichever lands first.
    fn conflicts(&self, reads: &Tokens, writes: &Tokens, overwrite: bool) -> bool {
        if matches!(self.slot, Slot::Done(_)) {
            return false;
        }
        let overwrites_commute = overwrite && self.overwrite;
        (!writes.is_empty()
            && ((writes.meets(&self.writes) && !overwrites_commute) || writes.meets(&self.reads)))
            || reads.meets(&self.writes)
    }
}

/// The tokens of the keys a command touches: enough to order conflicting
/// commands (a shared token only makes two commands wait for each other
/// needlessly, never run out of order), without copying keys; one key,
/// the common case, needs no allocation.
enum Tokens {
    None,
    One(u64),
    Many(Vec<u64>),
    /// Unknown keys: treated as touching every key.
    All,
}

impl Tokens {
    fn of<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]>) -> Tokens {
        let mut keys = keys;
        match keys.len() {
            0 => Tokens::None,
            1 => keys
                .next()
                .map_or(Tokens::None, |k| Tokens::One(token_of(k))),
            _ => Tokens::Many(keys.map(token_of).collect()),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Tokens::None)
    }

    /// Whether the two share a token (`All` shares with anything but an
    /// empty set).
    fn meets(&self, other: &Tokens) -> bool {
        match (self, other) {
            (Tokens::None, _) | (_, Tokens::None) => false,
            (Tokens::All, _) | (_, Tokens::All) => true,
            (Tokens::One(a), Tokens::One(b)) => a == b,
            (Tokens::One(a), Tokens::Many(v)) | (Tokens::Many(v), Tokens::One(a)) => v.contains(a),
            (Tokens::Many(a), Tokens::Many(b)) => a.iter().any(|t| b.contains(t)),
        }
    }
}

/// About the bytes a reply holds (its values), for the output bound.
/// A reply known without running anything: written at once when no
/// earlier command is pending, else queued behind them (and counted in
/// `held`), so replies still leave in request order.
fn answer_in_order(
    reply: Reply,
    pending: &mut VecDeque<Pending>,
    out: &mut Vec<u8>,
    held: &mut usize,
) {
    if pending.is_empty() {
        reply.encode(out);
    } else {
        *held += reply_bytes(&reply);
        pending.push_back(Pending {
            slot: Slot::Done(reply),
            reads: Tokens::None,
            writes: Tokens::None,
            overwrite: false,
        });
    }
}

fn reply_bytes(reply: &Reply) -> usize {
    match reply {
        Reply::Bulk(Some(v)) => v.len() + 16,
        Reply::Array(Some(items)) => items.iter().map(reply_bytes).sum::<usize>() + 16,
        Reply::Simple(s) | Reply::Error(s) => s.len() + 8,
        _ => 16,
    }
}

/// Awaits pending commands in order and encodes their replies.
async fn drain(pending: &mut VecDeque<Pending>, out: &mut Vec<u8>) {
    while let Some(p) = pending.pop_front() {
        match p.slot {
            Slot::Done(reply) => reply.encode(out),
            Slot::Running(run) => run.await.encode(out),
        }
    }
}

/// Keys a command reads and writes.
fn keys_of(cmd: &Command) -> (Tokens, Tokens) {
    let one = |k: &Vec<u8>| Tokens::One(token_of(k));
    let many = |ks: &Vec<Vec<u8>>| Tokens::of(ks.iter().map(Vec::as_slice));
    match cmd {
        Command::Get(k) | Command::Ttl(k) => (one(k), Tokens::None),
        Command::Exists(keys) | Command::Mget(keys) => (many(keys), Tokens::None),
        Command::Set { key, .. } | Command::Expire { key, .. } => (Tokens::None, one(key)),
        Command::Del(keys) => (Tokens::None, many(keys)),
        Command::Mset(pairs) => (
            Tokens::None,
            Tokens::of(pairs.iter().map(|(k, _)| k.as_slice())),
        ),
        _ => (Tokens::None, Tokens::None),
    }
}

fn err(e: impl std::fmt::Display) -> Reply {
    Reply::Error(format!("ERR {e}"))
}

/// The value a Redis reader sees: the last writer among live siblings.
async fn read_winner(
    coordinator: &Rc<Coordinator>,
    key: Vec<u8>,
) -> Result<Option<(Vec<u8>, u64)>, Reply> {
    match coordinator
        .execute(KvOp::Get { key }, Consistency::Default)
        .await
    {
        Ok(KvReply::Value(set)) => Ok(set.and_then(|s| {
            s.into_winner(wall_clock_ms())
                .and_then(|v| v.value.map(|value| (value, v.expires_at_ms)))
        })),
        Ok(_) => Err(err("unexpected reply")),
        Err(e) => Err(err(e)),
    }
}

async fn put(
    coordinator: &Rc<Coordinator>,
    key: Vec<u8>,
    value: Vec<u8>,
    ttl: Option<Duration>,
    condition: PutCondition,
) -> Reply {
    let op = KvOp::Put {
        key,
        value,
        ttl,
        context: WriteContext::Overwrite,
        condition,
    };
    match coordinator.execute(op, Consistency::Default).await {
        Ok(KvReply::Written { written: true, .. }) => Reply::ok(),
        Ok(KvReply::Written { written: false, .. }) => Reply::Bulk(None),
        Ok(_) => err("unexpected reply"),
        Err(e) => err(e),
    }
}

async fn delete(coordinator: &Rc<Coordinator>, key: Vec<u8>) -> Result<bool, Reply> {
    let op = KvOp::Delete {
        key,
        context: WriteContext::Overwrite,
    };
    match coordinator.execute(op, Consistency::Default).await {
        Ok(KvReply::Deleted { existed, .. }) => Ok(existed),
        Ok(_) => Err(err("unexpected reply")),
        Err(e) => Err(err(e)),
    }
}

async fn execute(coordinator: &Rc<Coordinator>, cmd: Command, reply_bytes_max: usize) -> Reply {
    match cmd {
        Command::Ping(None) => Reply::Simple("PONG".into()),
        Command::Ping(Some(msg)) | Command::Echo(msg) => Reply::Bulk(Some(msg)),
        Command::Get(key) => match read_winner(coordinator, key).await {
            Ok(v) => Reply::Bulk(v.map(|(value, _)| value)),
            Err(reply) => reply,
        },
        Command::Set {
            key,
            value,
            expiry,
            condition,
        } => {
            let ttl = expiry.map(ttl_of);
            let condition = match condition {
                SetCondition::Always => PutCondition::Always,
                SetCondition::IfAbsent => PutCondition::IfAbsent,
                SetCondition::IfPresent => PutCondition::IfPresent,
            };
            put(coordinator, key, value, ttl, condition).await
        }
        Command::Del(keys) => {
            let mut n = 0;
            for key in keys {
                match delete(coordinator, key).await {
                    Ok(existed) => n += i64::from(existed),
                    Err(reply) => return reply,
                }
            }
            Reply::Integer(n)
        }
        Command::Exists(keys) => {
            let mut n = 0;
            for key in keys {
                match read_winner(coordinator, key).await {
                    Ok(v) => n += i64::from(v.is_some()),
                    Err(reply) => return reply,
                }
            }
            Reply::Integer(n)
        }
        Command::Expire { key, seconds } if seconds <= 0 => match delete(coordinator, key).await {
            Ok(existed) => Reply::Integer(i64::from(existed)),
            Err(reply) => reply,
        },
        Command::Expire { key, seconds } => {
            let op = KvOp::Expire {
                key,
                ttl: Duration::from_secs(seconds as u64),
            };
            match coordinator.execute(op, Consistency::Default).await {
                Ok(KvReply::Expired(found)) => Reply::Integer(i64::from(found)),
                Ok(_) => err("unexpected reply"),
                Err(e) => err(e),
            }
        }
        Command::Ttl(key) => match read_winner(coordinator, key).await {
            Ok(None) => Reply::Integer(-2),
            Ok(Some((_, 0))) => Reply::Integer(-1),
            Ok(Some((_, expires))) => {
                let left_ms = expires.saturating_sub(wall_clock_ms());
                Reply::Integer(left_ms.div_ceil(1000) as i64)
            }
            Err(reply) => reply,
        },
        Command::Mget(keys) => {
            let mut items = Vec::with_capacity(keys.len().min(1024));
            let mut bytes = 0usize;
            for key in keys {
                match read_winner(coordinator, key).await {
                    Ok(v) => {
                        bytes += v.as_ref().map_or(0, |(value, _)| value.len()) + 16;
                        if bytes > reply_bytes_max {
                            return Reply::Error(format!(
                                "ERR the MGET reply would exceed the output buffer limit ({reply_bytes_max} bytes, output_buffer_mib); ask for fewer keys at once"
                            ));
                        }
                        items.push(Reply::Bulk(v.map(|(value, _)| value)));
                    }
                    Err(reply) => return reply,
                }
            }
            Reply::Array(Some(items))
        }
        Command::Mset(pairs) => {
            for (key, value) in pairs {
                let r = put(coordinator, key, value, None, PutCondition::Always).await;
                if r != Reply::ok() {
                    return r;
                }
            }
            Reply::ok()
        }
        Command::Command(args) => match args.first().map(|a| a.to_ascii_lowercase()) {
            Some(sub) if sub == b"count" => Reply::Integer(0),
            _ => Reply::Array(Some(Vec::new())),
        },
        Command::Info(_) => {
            let body = match status::status_json(coordinator).await {
                Ok(json) => json,
                Err(e) => format!("{{\"error\": \"{e}\"}}"),
            };
            let text = format!(
                "# Server\r\nredis_version:7.0.0\r\ncorekv_version:{}\r\nredis_mode:standalone\r\n\r\n# Keyspace\r\ncorekv_status:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                body
            );
            Reply::Bulk(Some(text.into_bytes()))
        }
        Command::ConfigGet(pattern) => {
            let p = String::from_utf8_lossy(&pattern).to_ascii_lowercase();
            let value = match p.as_str() {
                "save" => Some(""),
                "appendonly" => Some("no"),
                "databases" => Some("1"),
                _ => None,
            };
            Reply::Array(Some(match value {
                Some(v) => vec![
                    Reply::Bulk(Some(p.into_bytes())),
                    Reply::Bulk(Some(v.as_bytes().to_vec())),
                ],
                None => Vec::new(),
            }))
        }
        Command::Select(0) => Reply::ok(),
        Command::Select(_) => Reply::Error("ERR DB index is out of range".into()),
        Command::Quit => Reply::ok(),
        // Answered by `resp_auth::screen` before a command runs.
        Command::Auth { .. } | Command::Hello { .. } | Command::AclWhoami => {
            err("connection command outside the connection loop")
        }
        Command::Invalid(message) => Reply::Error(message),
        Command::Unknown(name) => Reply::Error(format!(
            "ERR unknown command '{name}', with args beginning with: "
        )),
    }
}
