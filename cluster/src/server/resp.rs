//! One RESP connection: commands are parsed as they arrive and answered in
//! order (RESP has no request ids), several per write when pipelined.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use corekv_engine::version::wall_clock_ms;
use corekv_engine::{token_of, WriteContext};
use corekv_net::resp::{self, Command, Parsed, Reply, SetCondition, SetExpiry};
use corekv_net::Limits;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use super::{status, ConnectionLimits, Shutdown, Stream};
use crate::coordinator::Coordinator;
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
) -> std::io::Result<()> {
    let parse_limits = Limits {
        max_key_bytes: limits.max_key_bytes,
        max_value_bytes: limits.max_value_bytes,
        ..Limits::default()
    };
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        let mut quit = false;
        // Run the buffered commands concurrently (so pipelined writes share
        // commit-log syncs) but answer in order; a command touching a key an
        // earlier pending command writes (or reads, for a write) waits for
        // it, so a pipeline behaves as if run one by one.
        let mut pending: VecDeque<Pending> = VecDeque::new();
        loop {
            match resp::parse_command(&buf, &parse_limits) {
                Ok(Some((parsed, used))) => {
                    buf.drain(..used);
                    let Parsed::Command(cmd) = parsed else {
                        continue;
                    };
                    if cmd == Command::Quit {
                        drain(&mut pending, &mut out).await;
                        Reply::ok().encode(&mut out);
                        quit = true;
                        break;
                    }
                    let (reads, writes) = keys_of(&cmd);
                    let conflict = pending.iter().any(|p| p.conflicts(&reads, &writes));
                    if conflict || pending.len() >= limits.max_in_flight.max(1) {
                        drain(&mut pending, &mut out).await;
                    }
                    let coordinator = coordinator.clone();
                    let shutdown = shutdown.clone();
                    shutdown.request_started();
                    let mut run = Box::pin(async move {
                        let started = std::time::Instant::now();
                        let kind = match &cmd {
                            Command::Get(_)
                            | Command::Mget(_)
                            | Command::Exists(_)
                            | Command::Ttl(_) => RequestKind::Get,
                            Command::Set { .. } | Command::Mset(_) | Command::Expire { .. } => {
                                RequestKind::Put
                            }
                            Command::Del(_) => RequestKind::Delete,
                            _ => RequestKind::Other,
                        };
                        let reply = execute(&coordinator, cmd).await;
                        coordinator
                            .router()
                            .metrics()
                            .record(kind, started.elapsed());
                        shutdown.request_finished();
                        reply
                    });
                    // Most reads finish without waiting (memtable or cached
                    // block): run them here; only what must wait gets a task.
                    let slot = match future::poll_once(&mut run).await {
                        Some(reply) => Slot::Done(reply),
                        None => Slot::Running(glommio::spawn_local(run)),
                    };
                    pending.push_back(Pending {
                        slot,
                        reads,
                        writes,
                    });
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
        drain(&mut pending, &mut out).await;
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if quit || shutdown.is_stopping() {
            return Ok(());
        }
        let read = future::or(async { Some(stream.read(&mut chunk).await) }, async {
            let deadline = std::time::Instant::now() + limits.idle_timeout;
            while std::time::Instant::now() < deadline && !shutdown.is_stopping() {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
            None
        })
        .await;
        match read {
            Some(Ok(0)) | None => return Ok(()),
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Some(Err(e)) => return Err(e),
        }
    }
}

/// A command's reply, or the task still computing it.
enum Slot {
    Done(Reply),
    Running(glommio::Task<Reply>),
}

/// A command of the current pipeline, with the keys it reads and writes.
struct Pending {
    slot: Slot,
    reads: Tokens,
    writes: Tokens,
}

impl Pending {
    fn conflicts(&self, reads: &Tokens, writes: &Tokens) -> bool {
        writes
            .iter()
            .any(|t| self.writes.contains(t) || self.reads.contains(t))
            || reads.iter().any(|t| self.writes.contains(t))
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

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (one, many): (Option<u64>, &[u64]) = match self {
            Tokens::None => (None, &[]),
            Tokens::One(t) => (Some(*t), &[]),
            Tokens::Many(v) => (None, v),
        };
        one.into_iter().chain(many.iter().copied())
    }

    fn contains(&self, token: u64) -> bool {
        self.iter().any(|t| t == token)
    }
}

/// Awaits pending commands in order and encodes their replies.
async fn drain(pending: &mut VecDeque<Pending>, out: &mut Vec<u8>) {
    while let Some(p) = pending.pop_front() {
        match p.slot {
            Slot::Done(reply) => reply.encode(out),
            Slot::Running(task) => task.await.encode(out),
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

async fn execute(coordinator: &Rc<Coordinator>, cmd: Command) -> Reply {
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
            let ttl = expiry.map(|e| match e {
                SetExpiry::Seconds(s) => Duration::from_secs(s),
                SetExpiry::Millis(ms) => Duration::from_millis(ms),
            });
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
            let mut items = Vec::with_capacity(keys.len());
            for key in keys {
                match read_winner(coordinator, key).await {
                    Ok(v) => items.push(Reply::Bulk(v.map(|(value, _)| value))),
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
        Command::Invalid(message) => Reply::Error(message),
        Command::Unknown(name) => Reply::Error(format!(
            "ERR unknown command '{name}', with args beginning with: "
        )),
    }
}
