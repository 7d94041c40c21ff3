//! The clients: gets, blind puts, read-modify-writes with the context a
//! read returned, and deletes, at mixed levels, against random
//! coordinators, until the faults end.

use corekv_engine::version::{CausalContext, WriteContext};
use corekv_net::native::Consistency;

use crate::coord::Outcome;
use crate::world::{Event, RunError, World};

/// A client's pending read-modify-write.
#[derive(Clone, Debug)]
enum Next {
    /// Nothing pending: pick a new operation.
    Fresh,
    /// A read whose answer the client will write back (`delete`: as a
    /// delete).
    Reading {
        /// The key.
        key: Vec<u8>,
        /// Whether the write will be a delete.
        delete: bool,
    },
    /// Write this context back.
    Writing {
        /// The key.
        key: Vec<u8>,
        /// What the read showed.
        context: CausalContext,
        /// Whether it is a delete.
        delete: bool,
    },
}

/// One client's state between operations.
#[derive(Clone, Debug)]
pub struct Client {
    next: Next,
    seq: u64,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            next: Next::Fresh,
            seq: 0,
        }
    }
}

const WRITE_LEVELS: [Consistency; 4] = [
    Consistency::One,
    Consistency::Quorum,
    Consistency::All,
    Consistency::Default,
];
const READ_LEVELS: [Consistency; 3] = [Consistency::One, Consistency::Quorum, Consistency::All];

impl World {
    /// The key named by number `i`.
    pub fn key(i: u64) -> Vec<u8> {
        format!("k{i}").into_bytes()
    }

    /// Client `client` issues its next operation (none once the faults
    /// end).
    pub fn client_step(&mut self, client: usize) -> Result<(), RunError> {
        if self.agenda.now_ms() >= self.settings.faults_end_ms {
            return Ok(());
        }
        let node = self.client_rng.below(self.nodes.len() as u64) as usize;
        if !self.nodes[node].up {
            // Connection refused: nothing happened; try again shortly.
            self.clients[client].next = Next::Fresh;
            return self
                .agenda
                .after(5, Event::Client { client })
                .map_err(Into::into);
        }
        let wl = WRITE_LEVELS[self.client_rng.below(4) as usize];
        let rl = READ_LEVELS[self.client_rng.below(3) as usize];
        let next = std::mem::replace(&mut self.clients[client].next, Next::Fresh);
        match next {
            Next::Writing {
                key,
                context,
                delete,
            } => {
                let value = (!delete).then(|| self.value(client));
                self.start_write(node, client, key, value, WriteContext::Given(context), wl)
            }
            Next::Reading { .. } | Next::Fresh => {
                let key = World::key(self.client_rng.below(self.settings.keys as u64));
                match self.client_rng.below(100) {
                    0..=34 => self.start_read(node, Some(client), key, rl),
                    35..=59 => {
                        let value = Some(self.value(client));
                        self.start_write(node, client, key, value, WriteContext::Blind, wl)
                    }
                    r => {
                        self.clients[client].next = Next::Reading {
                            key: key.clone(),
                            delete: r >= 90,
                        };
                        self.start_read(node, Some(client), key, rl)
                    }
                }
            }
        }
    }

    fn value(&mut self, client: usize) -> Vec<u8> {
        let c = &mut self.clients[client];
        c.seq += 1;
        format!("c{client}-{}", c.seq).into_bytes()
    }

    /// Client `client` gets its answer and, after a pause, goes on.
    pub fn tell_client(&mut self, client: usize, outcome: Outcome) -> Result<(), RunError> {
        let c = &mut self.clients[client];
        c.next = match (std::mem::replace(&mut c.next, Next::Fresh), outcome) {
            (Next::Reading { key, delete }, Outcome::Read(set)) => Next::Writing {
                key,
                context: set.map(|s| s.causal_context()).unwrap_or_default(),
                delete,
            },
            _ => Next::Fresh,
        };
        let pause = self.client_rng.between(1, 30);
        self.agenda.after(pause, Event::Client { client })?;
        Ok(())
    }

    /// After the settle time: records each node's stores for the hint
    /// checker, then reads every key at ALL so read repair runs.
    pub fn final_reads(&mut self) -> Result<(), RunError> {
        self.after_hints = self.nodes.iter().map(|n| n.store.clone()).collect();
        for k in 0..self.settings.keys as u64 {
            let node = (k as usize) % self.nodes.len();
            self.start_read(node, None, World::key(k), Consistency::All)?;
        }
        Ok(())
    }
}
