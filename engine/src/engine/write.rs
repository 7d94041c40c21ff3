//! The write path: validate → commit log (group commit) → memtable → ack.

use std::time::Duration;

use super::Engine;
use crate::error::{Error, Result};
use crate::token::token_of;
use crate::version::{Dot, SiblingSet, Version, VersionVector, ANY_REPLICA};

/// Record kind of a sibling-set delta in the commit log.
const RECORD_APPLY: u8 = 1;

/// Which earlier versions a local write supersedes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WriteContext {
    /// Supersede nothing: the write becomes a sibling of every version
    /// present (in `Siblings` mode). The default, and what a client that
    /// never read the key means.
    #[default]
    Blind,
    /// Supersede what this causal context (from an earlier read) covers.
    Given(VersionVector),
    /// Supersede every version written before this one, on any replica,
    /// without reading: Redis `SET` semantics. A concurrent write with a
    /// later clock reading survives as a sibling.
    Overwrite,
}

/// Options of one put or delete.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Time to live; the value reads as absent once it passes.
    pub ttl: Option<Duration>,
    /// What the write supersedes.
    pub context: WriteContext,
}

/// Bytes [`encode_record_into`] appends.
pub(super) fn record_len(key: &[u8], set: &SiblingSet) -> usize {
    5 + key.len() + set.encoded_len()
}

/// Appends a commit-log record, `u8 kind, u32 key length, key, sibling
/// set`, to `out` (the commit log's batch, on the write path).
pub(super) fn encode_record_into(out: &mut Vec<u8>, key: &[u8], set: &SiblingSet) {
    out.push(RECORD_APPLY);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    set.encode(out);
}

/// Decodes a commit-log record (its checksum was already verified).
pub(super) fn decode_record(payload: &[u8]) -> std::result::Result<(Vec<u8>, SiblingSet), String> {
    if payload.len() < 5 || payload[0] != RECORD_APPLY {
        return Err("unknown commit log record kind".into());
    }
    let len = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize;
    let key = payload
        .get(5..5 + len)
        .ok_or_else(|| "record key length past the record end".to_string())?;
    // Replay merges whatever mode the log was written in; normalisation
    // under the current mode happens on every later merge.
    let set = SiblingSet::decode(&payload[5 + len..], crate::ConflictMode::Siblings)
        .map_err(|e| e.to_string())?;
    Ok((key.to_vec(), set))
}

impl Engine {
    /// Writes `value` under `key` and returns the new version. The key is
    /// durable (per the sync mode) when this returns. Oversized keys or
    /// values are rejected before anything is written.
    pub async fn put(&self, key: &[u8], value: &[u8], opts: &WriteOptions) -> Result<Version> {
        let version = self.local_write(key, Some(value.to_vec()), opts).await?;
        self.counters.puts.set(self.counters.puts.get() + 1);
        Ok(version)
    }

    /// Writes a tombstone for `key` (superseding per `opts.context`) and
    /// returns it.
    pub async fn delete(&self, key: &[u8], opts: &WriteOptions) -> Result<Version> {
        let opts = WriteOptions {
            ttl: None,
            context: opts.context.clone(),
        };
        let version = self.local_write(key, None, &opts).await?;
        self.counters.deletes.set(self.counters.deletes.get() + 1);
        Ok(version)
    }

    /// Merges a sibling set received from another replica (replication,
    /// read repair, hinted handoff, streaming). Appends without reading.
    pub async fn apply(&self, key: &[u8], delta: &SiblingSet) -> Result<()> {
        self.check_key(key)?;
        for v in delta.versions() {
            if let Some(value) = &v.value {
                self.check_value(value)?;
            }
        }
        // Keep this replica's clock above what other replicas issued, so
        // its later writes order after them (last-writer-wins, overwrite).
        if let Some(t) = delta.versions().iter().map(|v| v.timestamp).max() {
            self.clock.borrow_mut().observe(t);
        }
        self.append(key, delta).await?;
        self.counters.applies.set(self.counters.applies.get() + 1);
        Ok(())
    }

    pub(super) fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() || key.len() > self.opts.max_key_bytes {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max: self.opts.max_key_bytes,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.opts.max_value_bytes {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.opts.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Issues a new version of a write with a fresh dot from this replica's
    /// clock, without storing it: the delta a coordinator replicates to
    /// every replica (itself included) with [`Engine::apply`]. Returns the
    /// version and the delta (the version plus the context it supersedes).
    /// Oversized keys and values are refused here, before any replica sees
    /// them.
    pub fn mint(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        opts: &WriteOptions,
    ) -> Result<(Version, SiblingSet)> {
        self.check_key(key)?;
        if let Some(v) = &value {
            self.check_value(v)?;
        }
        self.check_open()?;
        let (context, timestamp) = {
            let mut clock = self.clock.borrow_mut();
            match &opts.context {
                WriteContext::Blind => (VersionVector::new(), clock.now()),
                WriteContext::Given(vv) => {
                    // A context may carry this replica's own later readings (after
                    // a restart with a clock that stepped back): stay above them so
                    // the new dot is never already covered.
                    clock.observe(vv.covered_counter(self.opts.replica_id));
                    (vv.clone(), clock.now())
                }
                WriteContext::Overwrite => {
                    // Supersede everything written before this instant, on any
                    // replica, without reading it (see ANY_REPLICA).
                    let t = clock.now();
                    (VersionVector::from_entries([(ANY_REPLICA, t - 1)]), t)
                }
            }
        };
        let expires_at_ms = match opts.ttl {
            Some(ttl) => crate::version::HybridClock::physical_ms(timestamp)
                .saturating_add(ttl.as_millis().max(1) as u64),
            None => 0,
        };
        let version = Version {
            dot: Dot {
                replica: self.opts.replica_id,
                counter: timestamp,
            },
            timestamp,
            expires_at_ms,
            value,
        };
        let delta = SiblingSet::from_write(version.clone(), context);
        Ok((version, delta))
    }

    /// Issues a new version and stores it here.
    async fn local_write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        opts: &WriteOptions,
    ) -> Result<Version> {
        let (version, delta) = self.mint(key, value, opts)?;
        self.append(key, &delta).await?;
        Ok(version)
    }

    /// Logs `delta` and merges it into the memtable its log segment belongs to.
    async fn append(&self, key: &[u8], delta: &SiblingSet) -> Result<()> {
        self.check_open()?;
        self.wait_for_memtable_room().await?;
        let ticket = self
            .log
            .submit_with(record_len(key, delta), |out| {
                encode_record_into(out, key, delta)
            })
            .await?;
        let segment = ticket.segment();
        *self.state.borrow_mut().inflight.entry(segment).or_insert(0) += 1;
        let durable = ticket.durable().await;
        let mut st = self.state.borrow_mut();
        if let Some(n) = st.inflight.get_mut(&segment) {
            *n -= 1;
            if *n == 0 {
                st.inflight.remove(&segment);
            }
        }
        durable?;
        let token = token_of(key);
        let mode = self.opts.conflict;
        match &st.frozen {
            Some(frozen) if segment < frozen.boundary => {
                frozen.mem.borrow_mut().apply(token, key, delta, mode)
            }
            _ => st.active.apply(token, key, delta, mode),
        }
        let log_bytes = self.live_log_bytes(&st, segment);
        let memtable_full = st.active.bytes() >= self.opts.memtable_bytes_max;
        let log_full = log_bytes >= self.opts.log_bytes_max;
        let flush = (memtable_full || log_full) && st.frozen.is_none();
        drop(st);
        if flush {
            if !memtable_full && !self.flush_scheduled.get() {
                let n = &self.counters.log_bound_flushes;
                n.set(n.get() + 1);
            }
            self.schedule_flush();
        }
        Ok(())
    }

    /// Backpressure: while the active memtable is over budget and the
    /// previous one is still being flushed, writers wait instead of letting
    /// memory grow.
    async fn wait_for_memtable_room(&self) -> Result<()> {
        let mut stalled = false;
        loop {
            {
                let st = self.state.borrow();
                if st.closed
                    || st.frozen.is_none()
                    || st.active.bytes() < self.opts.memtable_bytes_max
                {
                    return Ok(());
                }
            }
            if let Some(reason) = self.last_flush_error.borrow().clone() {
                self.schedule_flush();
                return Err(Error::FlushFailed(reason));
            }
            if !stalled {
                stalled = true;
                self.counters
                    .write_stalls
                    .set(self.counters.write_stalls.get() + 1);
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}
