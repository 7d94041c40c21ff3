//! The write path: mint (this replica's copy of the key, a new dot, the
//! merged state) → commit log (group commit) → memtable → ack.

use std::rc::{Rc, Weak};
use std::time::Duration;

use super::Engine;
use crate::commitlog::Ticket;
use crate::error::{Error, Result};
use crate::options::ConflictMode;
use crate::token::token_of;
use crate::version::{wall_clock_ms, CausalContext, Dot, HybridClock, SiblingSet, Version};

/// Record kind of a sibling-set delta in the commit log.
const RECORD_APPLY: u8 = 1;

pub use crate::version::WriteContext;

/// Options of one put or delete.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Time to live; the value reads as absent once it passes.
    pub ttl: Option<Duration>,
    /// What the write supersedes.
    pub context: WriteContext,
}

/// A write this replica has minted: the version, the state every replica
/// merges, and the context its client gets back.
///
/// While it is alive (and until this replica's own copy is in its
/// memtable), later writes of the key on this shard build on its state, so
/// two concurrent writes of one key never mint from the same view.
#[derive(Debug)]
pub struct MintedWrite {
    /// The new version's dot: the version itself is in `state`.
    dot: Dot,
    /// What every replica merges. For a blind or contextual write in
    /// `Siblings` mode, this replica's whole state of the key with the new
    /// version: the other replicas thereby learn every dot of this replica
    /// the state claims. Otherwise the write's delta alone. Shared, so the
    /// coordinator sends it to every replica without copying it.
    pub state: Rc<SiblingSet>,
    /// The context to answer the client with when it differs from
    /// `state`'s (a write that read and merged); None: `state` is the
    /// delta, whose context is the answer. Kept lazy, so a RESP `SET`,
    /// which answers no context, copies none.
    context: Option<CausalContext>,
    hold: Option<PendingHold>,
}

impl MintedWrite {
    /// The new version.
    pub fn version(&self) -> Option<&Version> {
        self.state.versions().iter().find(|v| v.dot == self.dot)
    }

    /// The context to answer the client with: exactly what its given
    /// context held, plus the new version's dot.
    pub fn context(&self) -> CausalContext {
        self.context
            .clone()
            .unwrap_or_else(|| self.state.context().clone())
    }

    /// The new version, taken out (copying it only when the state is
    /// shared); an Internal error if the state lost it, which mint rules out.
    fn into_version(self) -> Result<Version> {
        let dot = self.dot;
        let versions = match Rc::try_unwrap(self.state) {
            Ok(set) => set.into_versions(),
            Err(shared) => shared.versions().to_vec(),
        };
        versions
            .into_iter()
            .find(|v| v.dot == dot)
            .ok_or_else(|| Error::Internal("a minted write's state lost its version".into()))
    }

    /// The state and the client's context (releasing this write's claim
    /// on the key, if it was not stored).
    pub fn into_parts(self) -> (Rc<SiblingSet>, CausalContext) {
        let context = self.context.unwrap_or_else(|| self.state.context().clone());
        (self.state, context)
    }
}

/// A write minted without reading (see [`Engine::mint_unread`]).
struct UnreadWrite {
    dot: Dot,
    /// What every replica merges: the delta (its context is the answer),
    /// or under last-writer-wins the version alone.
    state: SiblingSet,
    /// The answer when it is not `state`'s context.
    context: Option<CausalContext>,
}

/// One key's writes in flight on this shard (minted, not yet in the
/// memtable): the join of their states, and how many holders remain.
#[derive(Debug, Default)]
pub(super) struct PendingKey {
    state: Option<SiblingSet>,
    holders: usize,
}

/// A claim on a key's [`PendingKey`], released on drop.
#[derive(Debug)]
struct PendingHold {
    engine: Weak<Engine>,
    key: Vec<u8>,
}

impl Drop for PendingHold {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            let mut pending = engine.pending.borrow_mut();
            if let Some(p) = pending.get_mut(&self.key) {
                p.holders -= 1;
                if p.holders == 0 {
                    pending.remove(&self.key);
                }
            }
        }
    }
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
    set.encode_reserved(out);
}

/// Decodes a commit-log record (its checksum was already verified).
pub(super) fn decode_record(payload: &[u8]) -> std::result::Result<(Vec<u8>, SiblingSet), String> {
    if payload.len() < 5 || payload[0] != RECORD_APPLY {
        return Err("unknown commit log record kind".into());
    }
    let len = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize;
    let key = 5usize
        .checked_add(len)
        .and_then(|end| payload.get(5..end))
        .ok_or_else(|| "record key length past the record end".to_string())?;
    // Replay merges whatever mode the log was written in; normalisation
    // under the current mode happens on every later merge. No limit of
    // today's options applies: what was acknowledged is replayed.
    let set = SiblingSet::decode(&payload[5 + len..], ConflictMode::Siblings)
        .map_err(|e| e.to_string())?;
    Ok((key.to_vec(), set))
}

impl Engine {
    /// Writes `value` under `key` and returns the new version. The key is
    /// durable (per the sync mode) when this returns. Oversized keys or
    /// values are rejected before anything is written.
    pub async fn put(&self, key: &[u8], value: &[u8], opts: &WriteOptions) -> Result<Version> {
        let mut minted = self.mint(key, Some(value.to_vec()), opts).await?;
        self.store_minted(key, &mut minted).await?;
        self.counters.puts.set(self.counters.puts.get() + 1);
        minted.into_version()
    }

    /// Writes a tombstone for `key` (superseding per `opts.context`) and
    /// returns it.
    pub async fn delete(&self, key: &[u8], opts: &WriteOptions) -> Result<Version> {
        let opts = WriteOptions {
            ttl: None,
            context: opts.context.clone(),
        };
        let mut minted = self.mint(key, None, &opts).await?;
        self.store_minted(key, &mut minted).await?;
        self.counters.deletes.set(self.counters.deletes.get() + 1);
        minted.into_version()
    }

    /// Mints a write and stores it on this replica (counted as an apply,
    /// like every replica's copy of a coordinated write): what a lone
    /// replica's write is. Returns the minted write (its `context` is the
    /// client's).
    pub async fn write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        opts: &WriteOptions,
    ) -> Result<MintedWrite> {
        let mut minted = self.mint(key, value, opts).await?;
        self.apply_minted(key, &mut minted).await?;
        Ok(minted)
    }

    /// Merges a sibling set received from another replica (replication,
    /// read repair, hinted handoff, streaming). Appends without reading.
    /// Refuses sets over the size bound and clock readings too far ahead.
    pub async fn apply(&self, key: &[u8], delta: &SiblingSet) -> Result<()> {
        self.check_key(key)?;
        for v in delta.versions() {
            if let Some(value) = &v.value {
                self.check_value(value)?;
            }
        }
        self.check_set_bytes(delta)?;
        let newest = delta
            .versions()
            .iter()
            .map(|v| v.timestamp.max(v.dot.counter))
            .chain([delta.context().max_reading()])
            .max()
            .unwrap_or(0);
        self.check_reading(newest)?;
        // Keep this replica's clock above what other replicas issued, so
        // its later writes order after them (last-writer-wins, overwrite).
        self.clock.borrow_mut().observe(newest);
        if self.opts.conflict == ConflictMode::LastWriterWins && !delta.context().is_empty() {
            let normal = SiblingSet::from_parts(
                delta.versions().to_vec(),
                CausalContext::new(),
                ConflictMode::LastWriterWins,
            );
            self.append(key, &normal, None).await?;
        } else {
            self.append(key, delta, None).await?;
        }
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

    /// Refuses a set whose encoding is over `Options::max_set_bytes`.
    fn check_set_bytes(&self, set: &SiblingSet) -> Result<()> {
        let bytes = set.encoded_len();
        let max = self.opts.set_bytes_max();
        if bytes > max {
            return Err(Error::SetTooLarge { bytes, max });
        }
        Ok(())
    }

    /// Refuses a clock reading (hybrid-clock units) further ahead of the
    /// wall clock than `max_clock_skew_ms`, counting the refusal.
    fn check_reading(&self, reading: u64) -> Result<()> {
        let now = wall_clock_ms();
        let at = HybridClock::physical_ms(reading);
        let ahead_ms = at.saturating_sub(now);
        if ahead_ms > self.opts.max_clock_skew_ms {
            let n = &self.counters.clock_refusals;
            n.set(n.get() + 1);
            return Err(Error::ClockAhead {
                ahead_ms,
                max_ms: self.opts.max_clock_skew_ms,
            });
        }
        Ok(())
    }

    /// Checks a client's context against the entry and clock bounds.
    pub fn check_context(&self, context: &CausalContext) -> Result<()> {
        if context.len() > self.opts.max_context_entries {
            return Err(Error::ContextTooLarge {
                entries: context.len(),
                max: self.opts.max_context_entries,
            });
        }
        self.check_reading(context.max_reading())
    }

    /// Mints a new version of `key` on this replica, without storing it:
    /// the write a coordinator sends to every replica (this one through
    /// [`Engine::apply_minted`], the others with [`Engine::apply`]).
    ///
    /// In `Siblings` mode a blind or contextual write first reads this
    /// replica's copy of the key (and the writes of it still in flight
    /// here), merges the new version into it and folds this replica's own
    /// dots into its vector entry: exact, because this replica issued and
    /// holds every one of them. Overwrites and last-writer-wins writes do
    /// not read. Oversized keys, values, contexts and sets, too many
    /// siblings and clocks from the future are refused here, before any
    /// replica sees them.
    pub async fn mint(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        opts: &WriteOptions,
    ) -> Result<MintedWrite> {
        if !self.mint_reads(opts) {
            let unread = self.mint_unread(key, value, opts)?;
            return Ok(MintedWrite {
                dot: unread.dot,
                state: Rc::new(unread.state),
                context: unread.context,
                hold: None,
            });
        }
        self.check_write(key, value.as_deref(), opts)?;
        let mode = self.opts.conflict;
        let me = self.opts.replica_id;
        // Held from before the read, so a write of the key that lands in
        // the memtable while we read is still seen in the pending state.
        let hold = self.hold_pending(key);
        let stored = self.get_raw(key).await?;
        // Synchronous from here on: no other task runs until the state is
        // published in `pending`.
        let mut base = stored.unwrap_or_default();
        if let Some(state) = self
            .pending
            .borrow()
            .get(key)
            .and_then(|p| p.state.as_ref())
        {
            base.merge(state, mode);
        }
        // A write that reads answers the delta's context, not the merged
        // state's.
        let (dot, context) = crate::version::mint_into(
            &mut base,
            &mut self.clock.borrow_mut(),
            wall_clock_ms(),
            me,
            value,
            &opts.context,
            opts.ttl,
            mode,
        );
        let context = Some(context);
        let siblings = base.versions().len();
        if siblings > self.opts.max_siblings {
            return Err(Error::TooManySiblings {
                siblings,
                max: self.opts.max_siblings,
            });
        }
        if siblings >= self.opts.siblings_warn {
            let n = &self.counters.sibling_warnings;
            n.set(n.get() + 1);
        }
        self.check_set_bytes(&base)?;
        if let Some(p) = self.pending.borrow_mut().get_mut(key) {
            match p.state.as_mut() {
                Some(s) => s.merge(&base, mode),
                None => p.state = Some(base.clone()),
            }
        }
        Ok(MintedWrite {
            dot,
            state: Rc::new(base),
            context,
            hold: Some(hold),
        })
    }

    /// Redis `SET` on a lone replica: an overwrite (last-writer-wins by
    /// hybrid clock, see [`WriteContext::Overwrite`]) minted and stored
    /// here, answering nothing. The same write as [`Engine::write`] with
    /// that context, in one small future: the clock reading is taken when
    /// it is first polled, before it can wait, so overwrites of one key
    /// issued in order win in that order whichever is stored first.
    pub async fn overwrite(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let opts = WriteOptions {
            ttl,
            context: WriteContext::Overwrite,
        };
        let unread = self.mint_unread(key, value, &opts)?;
        self.append(key, &unread.state, None).await?;
        self.counters.applies.set(self.counters.applies.get() + 1);
        Ok(())
    }

    /// Whether minting `opts` reads this replica's copy of the key first.
    fn mint_reads(&self, opts: &WriteOptions) -> bool {
        self.opts.conflict == ConflictMode::Siblings && opts.context != WriteContext::Overwrite
    }

    /// Refuses a write's oversized key, value or context, a context from
    /// the future, and any write once the engine is closed.
    fn check_write(&self, key: &[u8], value: Option<&[u8]>, opts: &WriteOptions) -> Result<()> {
        self.check_key(key)?;
        if let Some(v) = value {
            self.check_value(v)?;
        }
        self.check_open()?;
        if let WriteContext::Given(c) = &opts.context {
            self.check_context(c)?;
        }
        Ok(())
    }

    /// Mints a write that reads nothing first (an overwrite, or any write
    /// under last-writer-wins): synchronous, so no other task runs between
    /// its clock reading and its return.
    fn mint_unread(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        opts: &WriteOptions,
    ) -> Result<UnreadWrite> {
        self.check_write(key, value.as_deref(), opts)?;
        // Writes that do not read issue dots under an id of their own:
        // this replica folds its read-minted dots into its vector entry,
        // which must never claim a dot it may not hold (an overwrite it
        // coordinated for a key it does not own, or whose local copy failed).
        let me = self.opts.unread_replica_id();
        let (version, given) = self.new_version(me, 0, value, opts);
        let dot = version.dot;
        let delta = SiblingSet::from_write(version, given);
        let (state, context) = if self.opts.conflict == ConflictMode::LastWriterWins {
            // The last-writer-wins state carries no context; its answer is
            // the delta's.
            let context = delta.context().clone();
            let versions = delta.into_versions();
            (
                SiblingSet::from_parts(
                    versions,
                    CausalContext::new(),
                    ConflictMode::LastWriterWins,
                ),
                Some(context),
            )
        } else {
            // The delta is what every replica merges, and its context the
            // answer.
            (delta, None)
        };
        self.check_set_bytes(&state)?;
        Ok(UnreadWrite {
            dot,
            state,
            context,
        })
    }

    /// The new version of a write by replica id `me`, above `known` (the
    /// highest dot of `me` the key's state holds), and the context it
    /// supersedes: [`crate::version::new_version`] on this engine's clock.
    fn new_version(
        &self,
        me: u64,
        known: u64,
        value: Option<Vec<u8>>,
        opts: &WriteOptions,
    ) -> (Version, CausalContext) {
        crate::version::new_version(
            &mut self.clock.borrow_mut(),
            wall_clock_ms(),
            me,
            known,
            value,
            &opts.context,
            opts.ttl,
        )
    }

    /// Stores a write this replica minted (its own copy). Completes even
    /// if the caller stops waiting: once its record is in the commit log,
    /// it reaches the memtable.
    pub async fn apply_minted(&self, key: &[u8], minted: &mut MintedWrite) -> Result<()> {
        self.store_minted(key, minted).await?;
        self.counters.applies.set(self.counters.applies.get() + 1);
        Ok(())
    }

    /// Logs and merges a minted write here, releasing its claim on the key
    /// once it is in the memtable.
    async fn store_minted(&self, key: &[u8], minted: &mut MintedWrite) -> Result<()> {
        let hold = minted.hold.take();
        self.append(key, &minted.state, hold).await
    }

    fn hold_pending(&self, key: &[u8]) -> PendingHold {
        let mut pending = self.pending.borrow_mut();
        match pending.get_mut(key) {
            Some(p) => p.holders += 1,
            None => {
                pending.insert(
                    key.to_vec(),
                    PendingKey {
                        state: None,
                        holders: 1,
                    },
                );
            }
        }
        PendingHold {
            engine: self.me.clone(),
            key: key.to_vec(),
        }
    }

    /// Logs `delta` and merges it into the memtable its log segment belongs
    /// to; `hold` is released once it is there.
    async fn append(
        &self,
        key: &[u8],
        delta: &SiblingSet,
        hold: Option<PendingHold>,
    ) -> Result<()> {
        self.check_open()?;
        self.wait_for_room().await?;
        let ticket = self
            .log
            .submit_with(record_len(key, delta), |out| {
                encode_record_into(out, key, delta)
            })
            .await?;
        let segment = ticket.segment();
        *self.state.borrow_mut().inflight.entry(segment).or_insert(0) += 1;
        let mut landing = Landing {
            engine: self,
            key,
            delta,
            ticket: Some(ticket),
            hold,
        };
        let durable = match &landing.ticket {
            Some(ticket) => ticket.durable().await,
            None => Ok(()),
        };
        landing.ticket = None;
        let hold = landing.hold.take();
        let landed = self.land(segment, key, delta, durable);
        drop(hold);
        landed
    }

    /// The end of a write once its record's fate is known: no longer in
    /// flight; into the memtable if durable; a flush if a bound is reached.
    fn land(
        &self,
        segment: u64,
        key: &[u8],
        delta: &SiblingSet,
        durable: Result<()>,
    ) -> Result<()> {
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

    /// Backpressure: while the previous memtable is still being flushed,
    /// writers wait instead of letting the active memtable grow past its
    /// budget or the commit log grow more than a segment past
    /// `log_bytes_max` (overwrites of a few keys fill the log while the
    /// flush that will release it runs; on a slow disk they would otherwise
    /// outrun it without bound).
    async fn wait_for_room(&self) -> Result<()> {
        let log_stall_bytes = self
            .opts
            .log_bytes_max
            .saturating_add(self.opts.segment_bytes);
        let mut stalled = false;
        loop {
            {
                let st = self.state.borrow();
                if st.closed || st.frozen.is_none() {
                    return Ok(());
                }
                let memtable_room = st.active.bytes() < self.opts.memtable_bytes_max;
                let log_room =
                    self.live_log_bytes(&st, self.log.assigning_segment()) < log_stall_bytes;
                if memtable_room && log_room {
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

/// A write whose record is in the commit log, on its way to the memtable.
/// Dropped before it gets there (its caller timed out), it finishes in a
/// task of its own: otherwise the record would replay after a restart but
/// be missing until then, and the segment's in-flight count would never
/// fall, so every later flush would wait for it.
struct Landing<'a> {
    engine: &'a Engine,
    key: &'a [u8],
    delta: &'a SiblingSet,
    ticket: Option<Ticket>,
    hold: Option<PendingHold>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let hold = self.hold.take();
        let Some(engine) = self.engine.me.upgrade() else {
            return;
        };
        if !glommio::in_executor() {
            // The executor is being torn down: nothing will read the
            // memtable again, and the record replays from the log.
            let _ = engine.land(ticket.segment(), self.key, self.delta, Err(Error::Closed));
            return;
        }
        let (key, delta) = (self.key.to_vec(), self.delta.clone());
        glommio::spawn_local(async move {
            let durable = ticket.durable().await;
            let _ = engine.land(ticket.segment(), &key, &delta, durable);
            drop(hold);
        })
        .detach();
    }
}
