//! One load-generating worker: an OS thread (optionally pinned to a CPU)
//! that owns its connections and drives them from a single non-blocking
//! event loop (epoll). Each connection keeps many requests in flight;
//! requests are encoded straight into the connection's write buffer and
//! responses are scanned in place in its read buffer — no allocation per
//! request.
//!
//! Open loop: request `i` is due at its [`Schedule`] time and its latency
//! is measured from that time, even when it had to wait in the generator
//! (all connections at their in-flight limit). Closed loop: every
//! connection keeps `pipeline` requests in flight and latency is measured
//! from when each request was queued for sending.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::keys::KeyChooser;
use crate::proto::{self, ReplyKind, Scanned};
use crate::rate::Schedule;
use crate::rng::Rng;
use crate::routes::ShardRoutes;
use crate::stats::Stats;
use crate::sys::Epoll;
use crate::target::{Protocol, Target};
use crate::workload::{write_key, OpKind, Workload, KEY_LEN};

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Mode {
    /// A fixed total rate (requests per second across all workers).
    Open {
        /// Requests per second.
        rate: f64,
    },
    /// As fast as the server answers: `connections × pipeline` in flight.
    Closed,
}

/// Everything a worker needs to know about the run (shared by all).
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The server.
    pub target: Target,
    /// What to send.
    pub workload: Workload,
    /// Pacing.
    pub mode: Mode,
    /// Number of workers.
    pub threads: usize,
    /// Connections per worker.
    pub connections: usize,
    /// Requests in flight per connection (closed loop: always; open loop:
    /// at most — later requests wait in the generator, their latency still
    /// counted from their intended send time).
    pub pipeline: usize,
    /// How long to send.
    pub duration: Duration,
    /// At most this many requests in total.
    pub requests: Option<u64>,
    /// A request answered later than this (or never) is a timeout.
    pub timeout: Duration,
    /// RNG seed (each worker derives its own).
    pub seed: u64,
    /// CPUs to pin workers to, round robin (empty: no pinning).
    pub pin: Vec<usize>,
    /// Poll the connections instead of sleeping until the next send is
    /// due (the worker's CPU never enters its idle state).
    pub busy_poll: bool,
    /// Progress/interval-log period.
    pub interval: Duration,
    /// Load phase: write every key `0..key_count` once, closed loop.
    pub load: bool,
    /// AUTH on every connection before it carries load.
    pub credentials: Option<crate::auth::Credentials>,
}

/// One interval's statistics from one worker.
#[derive(Debug)]
pub struct Interval {
    /// Which worker.
    pub worker: usize,
    /// Interval number (0 = the first `interval` after the start).
    pub index: u64,
    /// Requests completed in the interval.
    pub stats: Stats,
    /// The worker's final (possibly partial) interval.
    pub last: bool,
}

/// State shared by the workers of one run.
#[derive(Debug, Default)]
pub struct Shared {
    /// Keys inserted so far beyond the pre-populated ones.
    pub inserted: AtomicU64,
    /// Set to stop every worker early (Ctrl-C, a fatal error elsewhere).
    pub stop: AtomicBool,
    /// Shard-aware targets: where each key goes.
    pub routes: Option<ShardRoutes>,
}

const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Below this wait the loop polls without sleeping (timer wake-ups are
/// not precise enough for microsecond send times).
const SPIN_NS: u64 = 30_000;

/// A worker's run over connections already established by the caller.
pub struct Worker<'a> {
    id: usize,
    spec: &'a RunSpec,
    shared: &'a Shared,
    conns: Vec<Conn>,
    /// Shard-aware targets: connections come in groups of `per`, one group
    /// per shard address, and each key goes to its group.
    routes: Option<&'a ShardRoutes>,
    per: usize,
    /// A request chosen but not sent because its group was full.
    parked: Option<(OpKind, u64)>,
    rng: Rng,
    keys: KeyChooser,
    value: Vec<u8>,
    start: Instant,
    interval: Stats,
    tx: Sender<Interval>,
    recycle: Receiver<Stats>,
    epoll: Epoll,
}

impl<'a> Worker<'a> {
    /// A worker `id` over `streams`; the run starts at `start`. Each
    /// interval's stats go out on `tx`; `recycle` hands back cleared ones,
    /// so switching intervals costs the worker no allocation or page faults
    /// (which would show as a latency blip once a second).
    pub fn new(
        id: usize,
        spec: &'a RunSpec,
        shared: &'a Shared,
        streams: Vec<TcpStream>,
        start: Instant,
        tx: Sender<Interval>,
        recycle: Receiver<Stats>,
    ) -> std::io::Result<Worker<'a>> {
        let depth = spec.pipeline.max(1);
        let conns = streams
            .into_iter()
            .map(|s| Conn::new(s, depth))
            .collect::<std::io::Result<Vec<_>>>()?;
        let epoll = Epoll::new()?;
        for (i, c) in conns.iter().enumerate() {
            epoll.add(c.stream.as_raw_fd(), i as u64, false)?;
        }
        let mut rng = Rng::new(spec.seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let value = (0..spec.workload.value_size.max())
            .map(|_| b'a' + rng.below(26) as u8)
            .collect();
        Ok(Worker {
            id,
            spec,
            shared,
            conns,
            routes: shared.routes.as_ref(),
            per: spec.connections.max(1),
            parked: None,
            rng,
            keys: KeyChooser::new(spec.workload.dist, spec.workload.key_count),
            value,
            start,
            interval: recycle.try_recv().unwrap_or_default(),
            tx,
            recycle,
            epoll,
        })
    }

    #[inline]
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn share(&self, total: u64) -> u64 {
        let t = self.spec.threads as u64;
        total / t + u64::from((self.id as u64) < total % t)
    }

    /// Runs to completion; all statistics go out as [`Interval`]s.
    pub fn run(mut self) {
        let spec = self.spec;
        let interval_ns = spec.interval.as_nanos().max(1) as u64;
        let end_ns = spec.duration.as_nanos() as u64;
        let timeout_ns = spec.timeout.as_nanos() as u64;
        let depth = spec.pipeline.max(1);
        let schedule = match spec.mode {
            Mode::Open { rate } => Some(Schedule::for_worker(rate, self.id, spec.threads)),
            Mode::Closed => None,
        };
        let mut total = spec.requests.map_or(u64::MAX, |r| self.share(r));
        if spec.load {
            total = total.min(self.share(spec.workload.key_count));
        } else if let Some(s) = &schedule {
            total = total.min(s.count_within(end_ns));
        }
        let mut sent: u64 = 0;
        let mut next_report = interval_ns;
        let mut report_index = 0;
        let mut rr = 0usize;
        let mut issuing = true;
        let mut drain_deadline = u64::MAX;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; self.conns.len().max(1)];
        let mut ready: Vec<(u64, u32)> = Vec::with_capacity(events.len());

        // Wait for the common start.
        let wait = self.start.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }

        loop {
            let mut now = self.now();
            // Stop issuing?
            if issuing {
                let stop = self.shared.stop.load(Ordering::Relaxed)
                    || crate::sys::interrupted()
                    || sent >= total
                    || self.conns.iter().all(|c| !c.alive)
                    || match schedule {
                        Some(_) if !spec.load => now >= end_ns + timeout_ns,
                        _ => !spec.load && now >= end_ns,
                    };
                if stop {
                    issuing = false;
                    let cut_short =
                        self.shared.stop.load(Ordering::Relaxed) || crate::sys::interrupted();
                    if schedule.is_some() && !spec.load && total != u64::MAX && !cut_short {
                        self.interval.unsent += total - sent;
                    }
                    drain_deadline = now + timeout_ns;
                }
            }
            // Issue what is due.
            if issuing && self.routes.is_some() {
                let open_loop = schedule.is_some() && !spec.load;
                while sent < total {
                    let t0 = match schedule {
                        Some(s) if open_loop => {
                            if s.at(sent) > now {
                                break;
                            }
                            s.at(sent)
                        }
                        _ => now,
                    };
                    if !self.issue_routed(t0, sent) {
                        break;
                    }
                    sent += 1;
                }
            } else if issuing {
                match schedule {
                    Some(s) if !spec.load => {
                        let n = self.conns.len();
                        'due: while sent < total && s.at(sent) <= now {
                            let mut tries = 0;
                            while !self.conns[rr].alive || self.conns[rr].inflight >= depth {
                                rr = (rr + 1) % n;
                                tries += 1;
                                if tries > n {
                                    break 'due;
                                }
                            }
                            self.issue(rr, s.at(sent), sent);
                            sent += 1;
                            rr = (rr + 1) % n;
                        }
                    }
                    _ => {
                        for c in 0..self.conns.len() {
                            while self.conns[c].alive
                                && self.conns[c].inflight < depth
                                && sent < total
                            {
                                self.issue(c, now, sent);
                                sent += 1;
                            }
                        }
                    }
                }
            }
            // A connection with requests in flight and no answer for the
            // timeout is given up (its requests count as timeouts), so a
            // server that hangs cannot hang the run.
            for c in 0..self.conns.len() {
                let conn = &self.conns[c];
                if conn.alive
                    && conn.inflight > 0
                    && now.saturating_sub(conn.last_progress) > timeout_ns
                {
                    let msg = format!("no answer for {} ms", spec.timeout.as_millis());
                    self.fail_timeout(c, &msg);
                }
            }
            // Write.
            for c in 0..self.conns.len() {
                self.flush(c);
            }
            // Done?
            let inflight: usize = self
                .conns
                .iter()
                .filter(|c| c.alive)
                .map(|c| c.inflight)
                .sum();
            if !issuing && inflight == 0 {
                break;
            }
            if !issuing && now >= drain_deadline {
                self.expire_outstanding(now);
                break;
            }
            // Wait for readiness, or until the next send is due.
            let mut wait_ns: u64 = match schedule {
                Some(s) if issuing && !spec.load && sent < total => {
                    let at = s.at(sent);
                    // A parked request waits for its own group: any answer
                    // wakes the loop.
                    let blocked = self.parked.is_some()
                        || self.conns.iter().all(|c| !c.alive || c.inflight >= depth);
                    if blocked {
                        100_000_000
                    } else {
                        at.saturating_sub(now)
                    }
                }
                _ => 100_000_000,
            };
            wait_ns = wait_ns.min(next_report.saturating_sub(now));
            if !issuing {
                wait_ns = wait_ns.min(drain_deadline.saturating_sub(now));
            }
            if wait_ns < SPIN_NS || spec.busy_poll {
                wait_ns = 0;
            }
            self.epoll.wait(&mut events, &mut ready, wait_ns);
            for &(token, ev) in &ready {
                let c = token as usize;
                let hup =
                    (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                if ev & hup != 0 {
                    self.read(c);
                }
                if ev & libc::EPOLLOUT as u32 != 0 {
                    self.flush(c);
                }
            }
            now = self.now();
            while now >= next_report {
                self.report(report_index, false);
                report_index += 1;
                next_report += interval_ns;
            }
        }
        self.report(report_index, true);
    }

    fn report(&mut self, index: u64, last: bool) {
        let fresh = self.recycle.try_recv().unwrap_or_default();
        let stats = std::mem::replace(&mut self.interval, fresh);
        let _ = self.tx.send(Interval {
            worker: self.id,
            index,
            stats,
            last,
        });
    }

    /// Shard-aware: picks the next request (or the parked one) and queues
    /// it on a connection of its key's group; parks it and returns false
    /// when every connection of that group is at its depth.
    fn issue_routed(&mut self, t0: u64, seq: u64) -> bool {
        let Some(routes) = self.routes else {
            return false;
        };
        let (op, key) = match self.parked.take() {
            Some(p) => p,
            None => self.pick(seq),
        };
        let mut bytes = [0u8; KEY_LEN];
        write_key(key, &mut bytes);
        let group = routes.group_of(&bytes);
        let depth = self.spec.pipeline.max(1);
        let first = group * self.per;
        let free = (first..first + self.per)
            .filter(|&c| c < self.conns.len())
            .find(|&c| self.conns[c].alive && self.conns[c].inflight < depth);
        match free {
            Some(c) => {
                let since = self.idle_since(c);
                let slot = self.conns[c].alloc(op, t0, key, since);
                self.encode(c, slot, &[]);
                true
            }
            None => {
                self.parked = Some((op, key));
                false
            }
        }
    }

    /// The next request's operation and key index.
    fn pick(&mut self, seq: u64) -> (OpKind, u64) {
        let spec = self.spec;
        let key_count = spec.workload.key_count;
        if spec.load {
            (OpKind::Update, self.id as u64 + seq * spec.threads as u64)
        } else {
            let op = spec.workload.mix.pick(&mut self.rng);
            let key = if op == OpKind::Insert {
                key_count + self.shared.inserted.fetch_add(1, Ordering::Relaxed)
            } else {
                let existing = key_count + self.shared.inserted.load(Ordering::Relaxed);
                self.keys.next(&mut self.rng, existing)
            };
            (op, key)
        }
    }

    /// The send-time stamp `Conn::alloc` takes: now when connection `c`
    /// has nothing in flight (its answer clock starts), else 0.
    fn idle_since(&self, c: usize) -> u64 {
        if self.conns[c].inflight == 0 {
            self.now()
        } else {
            0
        }
    }

    /// Queues one new request on connection `c`, intended at `t0`.
    fn issue(&mut self, c: usize, t0: u64, seq: u64) {
        let (op, key) = self.pick(seq);
        let since = self.idle_since(c);
        let slot = self.conns[c].alloc(op, t0, key, since);
        self.encode(c, slot, &[]);
    }

    /// Encodes the request for `slot` (its next step) into the write buffer.
    fn encode(&mut self, c: usize, slot: u32, context: &[u8]) {
        let size = self.spec.workload.value_size.pick(&mut self.rng);
        let conn = &mut self.conns[c];
        let s = conn.slots[slot as usize];
        let mut key = [0u8; KEY_LEN];
        write_key(s.key, &mut key);
        let value = &self.value[..size];
        let write = match s.op {
            OpKind::Read => false,
            OpKind::Update | OpKind::Insert => true,
            OpKind::Rmw => s.writing,
        };
        match self.spec.target.protocol {
            Protocol::Native | Protocol::NativeSharded => {
                let id = (u64::from(s.gen) << 32) | u64::from(slot);
                if write {
                    proto::native_put(&mut conn.wbuf, id, &key, context, value);
                } else {
                    proto::native_get(&mut conn.wbuf, id, &key);
                }
            }
            Protocol::Resp => {
                if write {
                    proto::resp_set(&mut conn.wbuf, &key, value);
                } else {
                    proto::resp_get(&mut conn.wbuf, &key);
                }
                conn.fifo.push_back(slot);
            }
        }
    }

    fn flush(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        while conn.alive && conn.wpos < conn.wbuf.len() {
            match conn.stream.write(&conn.wbuf[conn.wpos..]) {
                Ok(0) => {
                    self.fail(c, "connection closed while sending");
                    return;
                }
                Ok(n) => conn.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Ask for output readiness until the buffer drains.
                    if !conn.want_out {
                        conn.want_out = true;
                        let _ = self.epoll.modify(conn.stream.as_raw_fd(), c as u64, true);
                    }
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = format!("send failed: {e}");
                    self.fail(c, &msg);
                    return;
                }
            }
        }
        let conn = &mut self.conns[c];
        if conn.wpos == conn.wbuf.len() {
            conn.wbuf.clear();
            conn.wpos = 0;
            if conn.want_out {
                conn.want_out = false;
                let _ = self.epoll.modify(conn.stream.as_raw_fd(), c as u64, false);
            }
        }
    }

    fn read(&mut self, c: usize) {
        loop {
            let conn = &mut self.conns[c];
            if !conn.alive {
                return;
            }
            if conn.rend == conn.rbuf.len() {
                if conn.rstart > 0 {
                    conn.rbuf.copy_within(conn.rstart..conn.rend, 0);
                    conn.rend -= conn.rstart;
                    conn.rstart = 0;
                } else {
                    let n = conn.rbuf.len() * 2;
                    conn.rbuf.resize(n, 0);
                }
            }
            let got = match conn.stream.read(&mut conn.rbuf[conn.rend..]) {
                Ok(0) => {
                    self.fail(c, "connection closed by the server");
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let msg = format!("receive failed: {e}");
                    self.fail(c, &msg);
                    return;
                }
            };
            conn.rend += got;
            let full = conn.rend == conn.rbuf.len();
            let now = self.now();
            if let Err(msg) = self.scan(c, now) {
                self.fail(c, &msg);
                return;
            }
            if !full {
                return;
            }
        }
    }

    /// Handles every complete response in connection `c`'s read buffer.
    fn scan(&mut self, c: usize, now: u64) -> Result<(), String> {
        let timeout_ns = self.spec.timeout.as_nanos() as u64;
        let protocol = self.spec.target.protocol;
        loop {
            let conn = &mut self.conns[c];
            let buf = &conn.rbuf[conn.rstart..conn.rend];
            let scanned = match protocol {
                Protocol::Native | Protocol::NativeSharded => proto::native_scan(buf, MAX_FRAME),
                Protocol::Resp => proto::resp_scan(buf),
            };
            let Scanned {
                id,
                kind,
                len,
                context,
                message,
            } = match scanned {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            };
            let base = conn.rstart;
            conn.rstart += len;
            conn.last_progress = now;
            let slot = match protocol {
                Protocol::Native | Protocol::NativeSharded => {
                    let slot = (id & 0xffff_ffff) as u32;
                    let gen = (id >> 32) as u32;
                    match conn.slots.get(slot as usize) {
                        Some(s) if s.gen == gen && s.busy => slot,
                        _ => return Err(format!("response to unknown request id {id}")),
                    }
                }
                Protocol::Resp => conn
                    .fifo
                    .pop_front()
                    .ok_or_else(|| "reply without a request".to_string())?,
            };
            let s = conn.slots[slot as usize];
            if kind == ReplyKind::Error {
                let msg =
                    String::from_utf8_lossy(&conn.rbuf[base + message.start..base + message.end])
                        .into_owned();
                conn.release(slot);
                self.interval.ops[s.op.index()].errors += 1;
                self.interval.sample_error(&msg);
                continue;
            }
            if s.op == OpKind::Rmw && !s.writing {
                // Second half: write back with the read's context.
                let ctx_range = base + context.start..base + context.end;
                let conn = &mut self.conns[c];
                let sl = &mut conn.slots[slot as usize];
                sl.writing = true;
                sl.gen = sl.gen.wrapping_add(1);
                // The context lives in the read buffer; copy it out (through
                // a stack buffer: contexts are a few dozen bytes) so the
                // write buffer can be borrowed.
                let src = &conn.rbuf[ctx_range];
                let mut small = [0u8; 256];
                if src.len() <= small.len() {
                    small[..src.len()].copy_from_slice(src);
                    let n = src.len();
                    self.encode(c, slot, &small[..n]);
                } else {
                    let big = src.to_vec();
                    self.encode(c, slot, &big);
                }
                continue;
            }
            let latency = now.saturating_sub(s.t0);
            let st = &mut self.interval.ops[s.op.index()];
            if kind == ReplyKind::NotFound {
                st.not_found += 1;
            }
            if latency > timeout_ns {
                st.timeouts += 1;
            }
            st.hist.saturating_record(latency.max(1));
            self.conns[c].release(slot);
        }
        let conn = &mut self.conns[c];
        if conn.rstart == conn.rend {
            conn.rstart = 0;
            conn.rend = 0;
        }
        Ok(())
    }

    /// Drops connection `c`: its in-flight requests count as errors.
    fn fail(&mut self, c: usize, why: &str) {
        self.fail_with(c, why, false);
    }

    /// Drops connection `c` after it stopped answering: its in-flight
    /// requests count as errors and timeouts.
    fn fail_timeout(&mut self, c: usize, why: &str) {
        self.fail_with(c, why, true);
    }

    fn fail_with(&mut self, c: usize, why: &str, timed_out: bool) {
        let conn = &mut self.conns[c];
        if !conn.alive {
            return;
        }
        conn.alive = false;
        self.epoll.delete(conn.stream.as_raw_fd());
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        let mut lost = [0u64; crate::workload::OP_KINDS];
        for s in conn.slots.iter_mut().filter(|s| s.busy) {
            lost[s.op.index()] += 1;
            s.busy = false;
        }
        conn.inflight = 0;
        conn.fifo.clear();
        conn.wbuf.clear();
        conn.wpos = 0;
        for (o, n) in self.interval.ops.iter_mut().zip(lost) {
            o.errors += n;
            if timed_out {
                o.timeouts += n;
            }
        }
        let msg = format!("{}: {why}", self.spec.target.addr);
        self.interval.sample_error(&msg);
    }

    /// Counts requests still unanswered at the end as timeouts and errors.
    fn expire_outstanding(&mut self, now: u64) {
        for c in 0..self.conns.len() {
            let conn = &mut self.conns[c];
            if !conn.alive {
                continue;
            }
            for s in conn.slots.iter_mut().filter(|s| s.busy) {
                let st = &mut self.interval.ops[s.op.index()];
                st.timeouts += 1;
                st.errors += 1;
                let _ = now.saturating_sub(s.t0);
                s.busy = false;
            }
            conn.inflight = 0;
        }
        self.interval.sample_error(&format!(
            "requests still unanswered {} ms after sending stopped",
            self.spec.timeout.as_millis()
        ));
    }
}
