//! What clients did and were told: the record every checker reads.

use corekv_engine::version::{CausalContext, Dot};

/// One write a client issued (a put, or a delete when `value` is `None`).
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// The key.
    pub key: Vec<u8>,
    /// The client that issued it.
    pub client: usize,
    /// The value written; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The context the client sent: the versions it supersedes (`None`: a
    /// blind write, superseding nothing).
    pub given: Option<CausalContext>,
    /// Acknowledgements its level needed.
    pub needed: usize,
    /// When the client issued it.
    pub invoked_ms: u64,
    /// When the client was told it succeeded (`None`: failed, timed out,
    /// or its coordinator crashed: it may or may not have been applied).
    pub acked_ms: Option<u64>,
    /// The dot its version was minted with, once a replica minted it.
    pub dot: Option<Dot>,
    /// Acknowledgements from the key's own replicas (the minter's copy
    /// included), not from stand-ins.
    pub owner_acks: usize,
    /// Whether its coordinator finished the write: every replica that did
    /// not acknowledge it got a durable hint (so after a heal and the
    /// hints' replay, every replica must have it).
    pub finished: bool,
}

/// One read a client issued.
#[derive(Clone, Debug)]
pub struct ReadRecord {
    /// The key.
    pub key: Vec<u8>,
    /// Answers its level needed.
    pub needed: usize,
    /// When the client issued it.
    pub invoked_ms: u64,
    /// The causal context of what it was shown, when it succeeded.
    pub shown: Option<CausalContext>,
    /// The dots of the versions it was shown.
    pub versions: Vec<Dot>,
}

/// Every operation of one simulation, in invocation order.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Writes.
    pub writes: Vec<WriteRecord>,
    /// Reads.
    pub reads: Vec<ReadRecord>,
}

impl History {
    /// The history of one key, one operation per line, for a failure report.
    pub fn describe_key(&self, key: &[u8]) -> String {
        let mut lines: Vec<(u64, String)> = Vec::new();
        for (i, w) in self.writes.iter().enumerate().filter(|(_, w)| w.key == key) {
            lines.push((
                w.invoked_ms,
                format!(
                    "{:>7} ms  write#{i} client {} {} given {} needed {} -> {} dot {} owner acks {}{}",
                    w.invoked_ms,
                    w.client,
                    match &w.value {
                        Some(v) => format!("put {}", String::from_utf8_lossy(v)),
                        None => "delete".into(),
                    },
                    w.given.as_ref().map_or("blind".into(), |c| format!("{c:?}")),
                    w.needed,
                    w.acked_ms.map_or("not acked".into(), |t| format!("acked at {t} ms")),
                    w.dot.map_or("-".into(), |d| format!("{}:{}", d.replica, d.counter)),
                    w.owner_acks,
                    if w.finished { ", finished" } else { "" },
                ),
            ));
        }
        for r in self.reads.iter().filter(|r| r.key == key) {
            lines.push((
                r.invoked_ms,
                format!(
                    "{:>7} ms  read needed {} -> {}",
                    r.invoked_ms,
                    r.needed,
                    match &r.shown {
                        Some(_) => format!(
                            "shown {:?}",
                            r.versions
                                .iter()
                                .map(|d| format!("{}:{}", d.replica, d.counter))
                                .collect::<Vec<_>>()
                        ),
                        None => "failed".into(),
                    }
                ),
            ));
        }
        lines.sort_by_key(|(t, _)| *t);
        lines.into_iter().map(|(_, l)| l + "\n").collect()
    }
}
