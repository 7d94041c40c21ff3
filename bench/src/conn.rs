//! One connection's state inside a worker: its socket, write and read
//! buffers, and the slots of its in-flight requests. Native requests carry
//! `generation << 32 | slot` as their id, so out-of-order responses find
//! their slot; RESP replies come back in order, so a FIFO of slots does.

use std::collections::VecDeque;
use std::net::TcpStream;

use crate::workload::OpKind;

/// Initial read buffer size (grows for larger responses).
pub(crate) const READ_BUF: usize = 256 * 1024;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub(crate) op: OpKind,
    pub(crate) t0: u64,
    pub(crate) key: u64,
    pub(crate) gen: u32,
    /// Read-modify-write: the write half is under way.
    pub(crate) writing: bool,
    /// In flight (not on the free list).
    pub(crate) busy: bool,
}

pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) alive: bool,
    pub(crate) wbuf: Vec<u8>,
    pub(crate) wpos: usize,
    pub(crate) rbuf: Vec<u8>,
    pub(crate) rstart: usize,
    pub(crate) rend: usize,
    pub(crate) slots: Vec<Slot>,
    pub(crate) free: Vec<u32>,
    /// RESP: slots in send order (replies come back in order).
    pub(crate) fifo: VecDeque<u32>,
    pub(crate) inflight: usize,
    /// Output readiness is being watched (a write would have blocked).
    pub(crate) want_out: bool,
    /// When the connection last made progress: a response arrived, or a
    /// request was queued while none was in flight (ns since the start).
    pub(crate) last_progress: u64,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, depth: usize) -> std::io::Result<Conn> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            alive: true,
            wbuf: Vec::with_capacity(64 * 1024),
            wpos: 0,
            rbuf: vec![0; READ_BUF],
            rstart: 0,
            rend: 0,
            slots: Vec::with_capacity(depth),
            free: Vec::with_capacity(depth),
            fifo: VecDeque::with_capacity(depth),
            inflight: 0,
            want_out: false,
            last_progress: 0,
        })
    }

    pub(crate) fn alloc(&mut self, op: OpKind, t0: u64, key: u64, now: u64) -> u32 {
        if self.inflight == 0 {
            self.last_progress = now;
        }
        self.inflight += 1;
        if let Some(i) = self.free.pop() {
            let s = &mut self.slots[i as usize];
            s.op = op;
            s.t0 = t0;
            s.key = key;
            s.gen = s.gen.wrapping_add(1);
            s.writing = false;
            s.busy = true;
            i
        } else {
            self.slots.push(Slot {
                op,
                t0,
                key,
                gen: 0,
                writing: false,
                busy: true,
            });
            (self.slots.len() - 1) as u32
        }
    }

    pub(crate) fn release(&mut self, i: u32) {
        self.inflight -= 1;
        self.slots[i as usize].busy = false;
        self.free.push(i);
    }
}
