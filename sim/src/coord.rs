//! Coordinators and replicas of the simulated nodes.
//!
//! What a request does mirrors `corekv_cluster::coordinator`, built from
//! the same pure parts: [`plan::plan`] picks the replicas and stand-ins,
//! [`Tally`] counts their answers against W or R, [`mint_into`] mints the
//! version, [`merge_all`] and [`is_stale`] merge reads and pick the
//! replicas to repair. Only the I/O is simulated.

use corekv_cluster::coordinator::quorum::{is_stale, merge_all, Tally, Verdict};
use corekv_cluster::coordinator::{plan, Target, REPAIR_GRACE_MS};
use corekv_engine::version::{mint_into, CausalContext, Dot, SiblingSet, WriteContext};
use corekv_engine::ConflictMode;
use corekv_net::native::Consistency;

use crate::world::{
    Event, Flaw, Hint, Msg, NodeIx, RunError, World, HINTS_MAX, HINTS_PER_TICK, HINT_RESEND_MS,
    HINT_TICK_MS, REQUEST_TIMEOUT_MS,
};

/// The cluster's default levels (`write_consistency`, `read_consistency`).
const DEFAULT_LEVEL: Consistency = Consistency::Two;

/// One answer slot of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Sent, not answered.
    Waiting,
    /// Succeeded.
    Ok,
    /// Failed or refused.
    Failed,
}

/// What a request does.
#[derive(Debug)]
pub enum Kind {
    /// A write being minted (by a remote minter) or fanned out.
    Write {
        /// Whether the minted state is being sent to the other replicas.
        fanning_out: bool,
        /// The write's index in the history.
        record: usize,
    },
    /// A read.
    Read {
        /// Its index in the history (`None`: a final read).
        record: Option<usize>,
    },
}

/// A request in flight at its coordinator.
#[derive(Debug)]
pub struct Request {
    /// The coordinating node.
    pub node: NodeIx,
    /// The client waiting for it (`None`: the final reads).
    pub client: Option<usize>,
    /// The key.
    pub key: Vec<u8>,
    /// Write or read.
    pub kind: Kind,
    /// Where each slot's call went.
    pub targets: Vec<Target>,
    /// Each slot's state.
    pub slots: Vec<Slot>,
    /// Each remote replica's spare stand-in (sloppy quorum).
    pub spares: Vec<Option<NodeIx>>,
    /// Replicas that were down when the write was planned.
    pub down: Vec<NodeIx>,
    /// The count against W or R.
    pub tally: Tally,
    /// Whether the client has its answer.
    pub replied: bool,
    /// The state being fanned out (writes).
    pub state: SiblingSet,
    /// The context the client gets (writes).
    pub context: CausalContext,
    /// Read answers by slot.
    pub answers: Vec<(usize, Option<SiblingSet>)>,
    /// The minter's node while a remote mint is awaited.
    pub minter: Option<NodeIx>,
}

impl Request {
    /// A request to `targets` that nobody has answered yet, with no spare
    /// stand-ins and no replicas down.
    fn new(
        node: NodeIx,
        client: Option<usize>,
        key: Vec<u8>,
        kind: Kind,
        targets: Vec<Target>,
        tally: Tally,
    ) -> Request {
        Request {
            node,
            client,
            key,
            kind,
            slots: vec![Slot::Waiting; targets.len()],
            spares: vec![None; targets.len()],
            targets,
            down: Vec::new(),
            tally,
            replied: false,
            state: SiblingSet::new(),
            context: CausalContext::new(),
            answers: Vec::new(),
            minter: None,
        }
    }
}

/// What a client is told.
#[derive(Debug)]
pub enum Outcome {
    /// The write was acknowledged, with this context.
    Written(CausalContext),
    /// The read's merged answer.
    Read(Option<SiblingSet>),
    /// Failed (unavailable, refused, timed out, or the coordinator died).
    Failed,
}

impl World {
    fn needed_with_flaw(&self, needed: usize) -> usize {
        match self.settings.flaw {
            Some(Flaw::QuorumOffByOne) => needed.saturating_sub(1).max(1),
            _ => needed,
        }
    }

    /// Client `client` writes `key` through coordinator `node`.
    pub fn start_write(
        &mut self,
        node: NodeIx,
        client: usize,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        context: WriteContext,
        level: Consistency,
    ) -> Result<(), RunError> {
        let now = self.agenda.now_ms();
        let planned = {
            let n = &self.nodes[node];
            plan::plan(
                &n.topology,
                &key,
                level,
                DEFAULT_LEVEL,
                true,
                self.settings.sloppy,
                |x| n.suspect_until[x] <= now,
            )
        };
        let record = self.history.writes.len();
        self.history.writes.push(crate::history::WriteRecord {
            key: key.clone(),
            client,
            value: value.clone(),
            given: match &context {
                WriteContext::Given(c) => Some(c.clone()),
                _ => None,
            },
            needed: planned.as_ref().map_or(0, |p| p.needed),
            invoked_ms: now,
            acked_ms: None,
            dot: None,
            owner_acks: 0,
            finished: false,
        });
        let Ok(mut p) = planned else {
            return self.tell_client(client, Outcome::Failed);
        };
        let needed = self.needed_with_flaw(p.needed);
        let Some(m) = p
            .targets
            .iter()
            .position(|t| matches!(t, Target::Local))
            .or_else(|| {
                p.targets
                    .iter()
                    .position(|t| matches!(t, Target::Remote(_)))
            })
        else {
            return self.tell_client(client, Outcome::Failed);
        };
        let minter = p.targets.remove(m);
        let spares = if self.settings.sloppy {
            let n = &self.nodes[node];
            plan::spare_stand_ins(&n.topology, &key, &p.targets, |x| n.suspect_until[x] <= now)
        } else {
            Vec::new()
        };
        let mut spare_iter = spares.into_iter();
        let spares = p
            .targets
            .iter()
            .map(|t| match t {
                Target::Remote(_) => spare_iter.next(),
                _ => None,
            })
            .collect();
        let id = self.next_req;
        self.next_req += 1;
        let mut req = Request::new(
            node,
            Some(client),
            key.clone(),
            Kind::Write {
                fanning_out: false,
                record,
            },
            p.targets,
            Tally::new(needed.saturating_sub(1), 0),
        );
        req.spares = spares;
        req.down = p.down;
        self.agenda
            .after(REQUEST_TIMEOUT_MS, Event::Deadline { node, req: id })?;
        match minter {
            Target::Remote(m) => {
                req.minter = Some(m);
                self.requests.insert(id, req);
                self.send(
                    node,
                    m,
                    Msg::Mint {
                        req: id,
                        key,
                        value,
                        context,
                    },
                )
            }
            _ => {
                let (state, ctx, dot) = self.mint_here(node, &key, value, &context);
                self.history.writes[record].dot = Some(dot);
                self.history.writes[record].owner_acks = 1;
                req.state = state;
                req.context = ctx;
                self.fan_out(id, req)
            }
        }
    }

    /// Node `node` mints and stores a write of `key` (the minting replica).
    fn mint_here(
        &mut self,
        node: NodeIx,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: &WriteContext,
    ) -> (SiblingSet, CausalContext, Dot) {
        let wall = self.wall_ms(node);
        let n = &mut self.nodes[node];
        let mut base = n.store.get(key).cloned().unwrap_or_default();
        let (dot, ctx) = mint_into(
            &mut base,
            &mut n.clock,
            wall,
            node as u64 + 1,
            value,
            context,
            None,
            ConflictMode::Siblings,
        );
        n.store.insert(key.to_vec(), base.clone());
        (base, ctx, dot)
    }

    /// Sends the minted state to the other targets and waits for W - 1.
    fn fan_out(&mut self, id: u64, mut req: Request) -> Result<(), RunError> {
        if let Kind::Write { fanning_out, .. } = &mut req.kind {
            *fanning_out = true;
        }
        let record = self.write_record(&req);
        let needed = self.needed_with_flaw(self.history.writes[record].needed);
        req.tally = Tally::new(needed.saturating_sub(1), req.targets.len());
        for slot in 0..req.targets.len() {
            let t = req.targets[slot];
            match t {
                Target::Remote(n) => self.send(req.node, n, apply(id, slot, &req, None))?,
                Target::Fallback { node, owner } => {
                    self.send(req.node, node, apply(id, slot, &req, Some(owner)))?
                }
                Target::LocalHint { owner } => {
                    self.keep_hint(req.node, owner, &req.key, req.state.clone());
                    req.slots[slot] = Slot::Ok;
                    req.tally.succeeded();
                }
                Target::Local => {
                    self.merge_here(req.node, &req.key, &req.state);
                    req.slots[slot] = Slot::Ok;
                    req.tally.succeeded();
                }
            }
        }
        self.settle(id, req)
    }

    fn write_record(&self, req: &Request) -> usize {
        match req.kind {
            Kind::Write { record, .. } => record,
            Kind::Read { .. } => usize::MAX,
        }
    }

    /// Answers the client once the tally decides, and finishes the request
    /// once every slot answered; otherwise puts it back to wait.
    fn settle(&mut self, id: u64, mut req: Request) -> Result<(), RunError> {
        if !req.replied {
            match req.tally.verdict() {
                Verdict::Met => {
                    req.replied = true;
                    let outcome = match req.kind {
                        Kind::Write { record, .. } => {
                            self.history.writes[record].acked_ms = Some(self.agenda.now_ms());
                            Outcome::Written(req.context.clone())
                        }
                        Kind::Read { .. } => Outcome::Read(merge_all(
                            req.answers.iter().map(|(_, a)| a),
                            ConflictMode::Siblings,
                        )),
                    };
                    self.reply(&req, outcome)?;
                }
                Verdict::Impossible => {
                    req.replied = true;
                    self.reply(&req, Outcome::Failed)?;
                }
                Verdict::Waiting => {}
            }
        }
        if req.slots.iter().all(|s| *s != Slot::Waiting) {
            return self.finish(req);
        }
        self.requests.insert(id, req);
        Ok(())
    }

    fn reply(&mut self, req: &Request, outcome: Outcome) -> Result<(), RunError> {
        match req.client {
            Some(c) => {
                if let (Kind::Read { record: Some(r) }, Outcome::Read(set)) = (&req.kind, &outcome)
                {
                    let rec = &mut self.history.reads[*r];
                    rec.shown = Some(set.as_ref().map(|s| s.causal_context()).unwrap_or_default());
                    rec.versions = set
                        .as_ref()
                        .map(|s| s.versions().iter().map(|v| v.dot).collect())
                        .unwrap_or_default();
                }
                self.tell_client(c, outcome)
            }
            None => Ok(()),
        }
    }

    /// The background end of a request: hints for what a write's replicas
    /// missed, read repair for what a read's replicas lacked.
    fn finish(&mut self, req: Request) -> Result<(), RunError> {
        match req.kind {
            Kind::Write {
                fanning_out: true,
                record,
            } => {
                let mut missed = req.down.clone();
                for (slot, t) in req.targets.iter().enumerate() {
                    if req.slots[slot] == Slot::Ok {
                        continue;
                    }
                    match *t {
                        Target::Remote(n)
                        | Target::Fallback { owner: n, .. }
                        | Target::LocalHint { owner: n } => missed.push(n),
                        Target::Local => {}
                    }
                }
                let before = self.hints_overflowed;
                for owner in missed {
                    self.keep_hint(req.node, owner, &req.key, req.state.clone());
                }
                self.history.writes[record].finished = self.hints_overflowed == before;
            }
            Kind::Write { .. } => {}
            Kind::Read { .. } => {
                let merged = merge_all(req.answers.iter().map(|(_, a)| a), ConflictMode::Siblings);
                let Some(set) = &merged else { return Ok(()) };
                let now = self.wall_ms(req.node);
                for (slot, answer) in &req.answers {
                    if !is_stale(answer, &merged, now, REPAIR_GRACE_MS) {
                        continue;
                    }
                    match req.targets[*slot] {
                        Target::Remote(n) => self.send(
                            req.node,
                            n,
                            Msg::Apply {
                                req: 0,
                                slot: 0,
                                key: req.key.clone(),
                                state: set.clone(),
                                hint_for: None,
                            },
                        )?,
                        _ => self.merge_here(req.node, &req.key, set),
                    }
                }
            }
        }
        Ok(())
    }

    /// A request's deadline: the client gets a timeout if it has no
    /// answer yet, replicas that did not answer are suspected, and the
    /// request finishes.
    pub fn deadline(&mut self, node: NodeIx, id: u64) -> Result<(), RunError> {
        let Some(mut req) = self.requests.remove(&id) else {
            return Ok(());
        };
        debug_assert_eq!(req.node, node);
        if let Some(m) = req.minter {
            self.suspect(node, m);
        }
        for slot in 0..req.slots.len() {
            if req.slots[slot] == Slot::Waiting {
                req.slots[slot] = Slot::Failed;
                match req.targets[slot] {
                    Target::Remote(n) | Target::Fallback { node: n, .. } => self.suspect(node, n),
                    _ => {}
                }
            }
        }
        if !req.replied {
            req.replied = true;
            self.reply(&req, Outcome::Failed)?;
        }
        self.finish(req)
    }

    /// A coordinator died with `req` in flight: its client sees the
    /// connection break; its hints were never written.
    pub fn coordinator_lost(&mut self, req: Request) -> Result<(), RunError> {
        if !req.replied {
            self.reply(&req, Outcome::Failed)?;
        }
        Ok(())
    }

    /// Client `client` (or the final reads, `None`) reads `key` through
    /// coordinator `node`.
    pub fn start_read(
        &mut self,
        node: NodeIx,
        client: Option<usize>,
        key: Vec<u8>,
        level: Consistency,
    ) -> Result<(), RunError> {
        let now = self.agenda.now_ms();
        let planned = {
            let n = &self.nodes[node];
            plan::plan(&n.topology, &key, level, DEFAULT_LEVEL, false, false, |x| {
                n.suspect_until[x] <= now
            })
        };
        let record = client.map(|_| {
            self.history.reads.push(crate::history::ReadRecord {
                key: key.clone(),
                needed: planned.as_ref().map_or(0, |p| p.needed),
                invoked_ms: now,
                shown: None,
                versions: Vec::new(),
            });
            self.history.reads.len() - 1
        });
        let Ok(p) = planned else {
            return match client {
                Some(c) => self.tell_client(c, Outcome::Failed),
                None => Ok(()),
            };
        };
        let id = self.next_req;
        self.next_req += 1;
        let needed = self.needed_with_flaw(p.needed);
        let outstanding = p.targets.len();
        let mut req = Request::new(
            node,
            client,
            key.clone(),
            Kind::Read { record },
            p.targets,
            Tally::new(needed, outstanding),
        );
        self.agenda
            .after(REQUEST_TIMEOUT_MS, Event::Deadline { node, req: id })?;
        for slot in 0..req.targets.len() {
            match req.targets[slot] {
                Target::Remote(n) => self.send(
                    node,
                    n,
                    Msg::Read {
                        req: id,
                        slot,
                        key: key.clone(),
                    },
                )?,
                _ => {
                    let here = self.nodes[node].store.get(&key).cloned();
                    req.answers.push((slot, here));
                    req.slots[slot] = Slot::Ok;
                    req.tally.succeeded();
                }
            }
        }
        self.settle(id, req)
    }

    /// Merges `state` into node `node`'s copy of `key`.
    fn merge_here(&mut self, node: NodeIx, key: &[u8], state: &SiblingSet) {
        let store = &mut self.nodes[node].store;
        match store.get_mut(key) {
            Some(s) => s.merge(state, ConflictMode::Siblings),
            None => {
                store.insert(key.to_vec(), state.clone());
            }
        }
    }

    /// Node `node` keeps `state` as a hint for `owner`, unless it holds
    /// [`HINTS_MAX`] already (then it is dropped and counted).
    fn keep_hint(&mut self, node: NodeIx, owner: NodeIx, key: &[u8], state: SiblingSet) {
        let n = &mut self.nodes[node];
        if n.hints.len() >= HINTS_MAX {
            self.hints_overflowed += 1;
            return;
        }
        let id = n.next_hint;
        n.next_hint += 1;
        n.hints.push_back(Hint {
            id,
            owner,
            key: key.to_vec(),
            state,
            sent_ms: 0,
        });
    }

    /// A message arrives at node `to`, which is up.
    pub fn receive(&mut self, from: NodeIx, to: NodeIx, msg: Msg) -> Result<(), RunError> {
        match msg {
            Msg::Mint {
                req,
                key,
                value,
                context,
            } => {
                let result = self.mint_here(to, &key, value, &context);
                self.send(
                    to,
                    from,
                    Msg::Minted {
                        req,
                        result: Some(result),
                    },
                )
            }
            Msg::Apply {
                req,
                slot,
                key,
                state,
                hint_for,
            } => {
                match hint_for {
                    Some(owner) => self.keep_hint(to, owner, &key, state),
                    None => self.merge_here(to, &key, &state),
                }
                if req == 0 {
                    return Ok(());
                }
                self.send(
                    to,
                    from,
                    Msg::Applied {
                        req,
                        slot,
                        ok: true,
                    },
                )
            }
            Msg::Read { req, slot, key } => {
                let state = self.nodes[to].store.get(&key).cloned();
                self.send(
                    to,
                    from,
                    Msg::ReadAnswer {
                        req,
                        slot,
                        state: Some(state),
                    },
                )
            }
            Msg::Handoff { hint, key, state } => {
                self.merge_here(to, &key, &state);
                self.send(to, from, Msg::HandoffAck { hint })
            }
            Msg::HandoffAck { hint } => {
                self.nodes[to].hints.retain(|h| h.id != hint);
                Ok(())
            }
            Msg::Minted { req: id, result } => {
                let Some(mut req) = self.requests.remove(&id) else {
                    return Ok(());
                };
                if req.minter != Some(from) {
                    self.requests.insert(id, req);
                    return Ok(());
                }
                req.minter = None;
                match result {
                    Some((state, ctx, dot)) => {
                        self.nodes[to].suspect_until[from] = 0;
                        let record = self.write_record(&req);
                        self.history.writes[record].dot = Some(dot);
                        self.history.writes[record].owner_acks = 1;
                        req.state = state;
                        req.context = ctx;
                        self.fan_out(id, req)
                    }
                    None => {
                        self.suspect(to, from);
                        req.replied = true;
                        self.reply(&req, Outcome::Failed)
                    }
                }
            }
            Msg::Applied { req: id, slot, ok } => {
                let Some(mut req) = self.requests.remove(&id) else {
                    return Ok(());
                };
                if req.slots.get(slot) != Some(&Slot::Waiting) {
                    self.requests.insert(id, req);
                    return Ok(());
                }
                if ok {
                    self.nodes[to].suspect_until[from] = 0;
                    req.slots[slot] = Slot::Ok;
                    req.tally.succeeded();
                    if World::is_owner_target(&req.targets[slot]) && !req.replied {
                        let record = self.write_record(&req);
                        self.history.writes[record].owner_acks += 1;
                    }
                    return self.settle(id, req);
                }
                self.suspect(to, from);
                match (req.targets[slot], req.spares[slot].take()) {
                    (Target::Remote(owner), Some(spare)) => {
                        if spare == req.node {
                            req.targets[slot] = Target::LocalHint { owner };
                            self.keep_hint(req.node, owner, &req.key, req.state.clone());
                            req.slots[slot] = Slot::Ok;
                            req.tally.succeeded();
                        } else {
                            req.targets[slot] = Target::Fallback { node: spare, owner };
                            self.send(req.node, spare, apply(id, slot, &req, Some(owner)))?;
                        }
                    }
                    _ => {
                        req.slots[slot] = Slot::Failed;
                        req.tally.failed();
                    }
                }
                self.settle(id, req)
            }
            Msg::ReadAnswer {
                req: id,
                slot,
                state,
            } => {
                let Some(mut req) = self.requests.remove(&id) else {
                    return Ok(());
                };
                if req.slots.get(slot) != Some(&Slot::Waiting) {
                    self.requests.insert(id, req);
                    return Ok(());
                }
                match state {
                    Some(s) => {
                        self.nodes[to].suspect_until[from] = 0;
                        req.answers.push((slot, s));
                        req.slots[slot] = Slot::Ok;
                        req.tally.succeeded();
                    }
                    None => {
                        self.suspect(to, from);
                        req.slots[slot] = Slot::Failed;
                        req.tally.failed();
                    }
                }
                self.settle(id, req)
            }
        }
    }

    /// Node `node` replays hints to owners it believes live.
    pub fn hint_tick(&mut self, node: NodeIx) -> Result<(), RunError> {
        self.agenda.after(HINT_TICK_MS, Event::HintTick { node })?;
        if !self.nodes[node].up {
            return Ok(());
        }
        let now = self.agenda.now_ms();
        let mut sends = Vec::new();
        let mut per_owner = vec![0usize; self.nodes.len()];
        let live: Vec<bool> = (0..self.nodes.len())
            .map(|o| self.believes_live(node, o))
            .collect();
        let drop = self.settings.flaw == Some(Flaw::HintsDropped);
        let n = &mut self.nodes[node];
        n.hints.retain_mut(|h| {
            if !live[h.owner]
                || per_owner[h.owner] >= HINTS_PER_TICK
                || (h.sent_ms != 0 && now < h.sent_ms + HINT_RESEND_MS)
            {
                return true;
            }
            per_owner[h.owner] += 1;
            if drop {
                // The planted bug: the hint counts as replayed.
                return false;
            }
            h.sent_ms = now.max(1);
            sends.push((h.owner, h.id, h.key.clone(), h.state.clone()));
            true
        });
        for (owner, hint, key, state) in sends {
            self.send(node, owner, Msg::Handoff { hint, key, state })?;
        }
        Ok(())
    }
}

fn apply(id: u64, slot: usize, req: &Request, hint_for: Option<NodeIx>) -> Msg {
    Msg::Apply {
        req: id,
        slot,
        key: req.key.clone(),
        state: req.state.clone(),
        hint_for,
    }
}
