//! Model-based property test of causality (issue 19): several clients
//! write one key through three replicas — the same one (a shard-aware
//! client's case) or different ones, one at a time or concurrently — with
//! no context, with the context of a read (possibly stale: R = 1 on a
//! replica that missed writes), or with the context of their own last OK;
//! they delete too. Replicas are real engines; the harness does what the
//! coordinator does: the replica that mints stores the write and its state
//! goes to the others now or later.
//!
//! The model: a write supersedes exactly what its client was shown (the
//! versions a read returned, their ancestry, and the client's own earlier
//! write behind an OK context). After every state reached every replica,
//! each replica holds exactly the versions no write superseded: none lost,
//! no false sibling.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use corekv_engine::version::{CausalContext, SiblingSet};
use corekv_engine::{ConflictMode, Engine, Options, WriteContext, WriteOptions};
use proptest::prelude::*;

const REPLICAS: usize = 3;
const CLIENTS: usize = 4;
const KEY: &[u8] = b"cart";

#[derive(Clone, Debug)]
enum Ctx {
    Blind,
    LastRead,
    LastOk,
}

#[derive(Clone, Debug)]
enum Op {
    /// Client writes through a replica; `now` of the other replicas get
    /// the state at once, the rest later.
    Write {
        client: usize,
        replica: usize,
        ctx: Ctx,
        delete: bool,
        now: Vec<bool>,
    },
    /// Several writes at once (each through its replica; the same replica
    /// for all of them when `same`).
    Burst {
        writes: Vec<(usize, usize, Ctx)>,
        same: Option<usize>,
    },
    /// Client reads one replica (R = 1), or two merged.
    Read {
        client: usize,
        replica: usize,
        two: bool,
    },
    /// Deliver the oldest delayed state.
    Deliver,
}

fn arb_ctx() -> impl Strategy<Value = Ctx> {
    prop_oneof![Just(Ctx::Blind), Just(Ctx::LastRead), Just(Ctx::LastOk)]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..CLIENTS, 0..REPLICAS, arb_ctx(), prop::bool::weighted(0.15), prop::collection::vec(any::<bool>(), REPLICAS))
            .prop_map(|(client, replica, ctx, delete, now)| Op::Write { client, replica, ctx, delete, now }),
        2 => (prop::collection::vec((0..CLIENTS, 0..REPLICAS, arb_ctx()), 2..5), prop::option::of(0..REPLICAS))
            .prop_map(|(writes, same)| Op::Burst { writes, same }),
        4 => (0..CLIENTS, 0..REPLICAS, any::<bool>()).prop_map(|(client, replica, two)| Op::Read { client, replica, two }),
        2 => Just(Op::Deliver),
    ]
}

/// What a client holds: a context and the versions (by value) it claims.
#[derive(Clone, Default)]
struct Held {
    context: CausalContext,
    seen: BTreeSet<String>,
}

#[derive(Default)]
struct Model {
    /// Every acknowledged write: value -> what it superseded plus itself.
    ancestry: BTreeMap<String, BTreeSet<String>>,
    read: Vec<Held>,
    ok: Vec<Held>,
    seq: usize,
}

impl Model {
    fn survivors(&self) -> BTreeSet<String> {
        let superseded: BTreeSet<&String> = self
            .ancestry
            .iter()
            .flat_map(|(v, seen)| seen.iter().filter(move |s| *s != v))
            .collect();
        self.ancestry
            .keys()
            .filter(|v| !superseded.contains(v))
            .cloned()
            .collect()
    }
}

fn options(replica: usize) -> Options {
    Options {
        replica_id: 100 + replica as u64,
        ..common::small_options(ConflictMode::Siblings)
    }
}

/// The value of a version as the model names it (tombstones carry their
/// name in no value, so deletes are named in a side table).
fn names(set: &SiblingSet, tombstones: &BTreeMap<(u64, u64), String>) -> BTreeSet<String> {
    set.versions()
        .iter()
        .map(|v| match &v.value {
            Some(b) => String::from_utf8_lossy(b).into_owned(),
            None => tombstones
                .get(&(v.dot.replica, v.dot.counter))
                .cloned()
                .unwrap_or_else(|| format!("unknown tombstone {:?}", v.dot)),
        })
        .collect()
}

struct Harness {
    engines: Vec<Rc<Engine>>,
    model: RefCell<Model>,
    delayed: RefCell<Vec<(usize, Rc<SiblingSet>)>>,
    tombstones: RefCell<BTreeMap<(u64, u64), String>>,
}

impl Harness {
    async fn write(&self, client: usize, replica: usize, ctx: &Ctx, delete: bool, now: &[bool]) {
        let held = {
            let m = self.model.borrow();
            match ctx {
                Ctx::Blind => Held::default(),
                Ctx::LastRead => m.read[client].clone(),
                Ctx::LastOk => m.ok[client].clone(),
            }
        };
        let name = {
            let mut m = self.model.borrow_mut();
            m.seq += 1;
            format!("c{client}-{}{}", m.seq, if delete { "-del" } else { "" })
        };
        let opts = WriteOptions {
            ttl: None,
            context: if held.context.is_empty() {
                WriteContext::Blind
            } else {
                WriteContext::Given(held.context.clone())
            },
        };
        let value = (!delete).then(|| name.clone().into_bytes());
        let engine = &self.engines[replica];
        let mut minted = engine.mint(KEY, value, &opts).await.expect("mint");
        if delete {
            let dot = minted.version().expect("the minted version").dot;
            self.tombstones
                .borrow_mut()
                .insert((dot.replica, dot.counter), name.clone());
        }
        engine
            .apply_minted(KEY, &mut minted)
            .await
            .expect("store at the minting replica");
        let mut seen = held.seen;
        seen.insert(name.clone());
        {
            let mut m = self.model.borrow_mut();
            m.ancestry.insert(name, seen.clone());
            m.ok[client] = Held {
                context: minted.context(),
                seen,
            };
        }
        for (other, &at_once) in now.iter().enumerate() {
            if other == replica {
                continue;
            }
            if at_once {
                self.engines[other]
                    .apply(KEY, &minted.state)
                    .await
                    .expect("replicate");
            } else {
                self.delayed
                    .borrow_mut()
                    .push((other, minted.state.clone()));
            }
        }
    }

    async fn read(&self, client: usize, replica: usize, two: bool) {
        let mut set = self.engines[replica]
            .get(KEY)
            .await
            .expect("get")
            .unwrap_or_default();
        if two {
            if let Some(other) = self.engines[(replica + 1) % REPLICAS]
                .get(KEY)
                .await
                .expect("get")
            {
                set.merge(&other, ConflictMode::Siblings);
            }
        }
        let shown = names(&set, &self.tombstones.borrow());
        let mut m = self.model.borrow_mut();
        let mut seen = BTreeSet::new();
        for v in &shown {
            let ancestry = m
                .ancestry
                .get(v)
                .unwrap_or_else(|| panic!("a read returned {v}, never written"));
            seen.extend(ancestry.iter().cloned());
        }
        m.read[client] = Held {
            context: set.causal_context(),
            seen,
        };
    }

    async fn deliver_one(&self) {
        let next = {
            let mut d = self.delayed.borrow_mut();
            (!d.is_empty()).then(|| d.remove(0))
        };
        if let Some((to, state)) = next {
            self.engines[to].apply(KEY, &state).await.expect("deliver");
        }
    }
}

fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    common::run(move || async move {
        let dirs: Vec<_> = (0..REPLICAS)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let mut engines = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            engines.push(Engine::open(d.path(), options(i)).await.expect("open"));
        }
        let h = Rc::new(Harness {
            engines,
            model: RefCell::new(Model {
                read: vec![Held::default(); CLIENTS],
                ok: vec![Held::default(); CLIENTS],
                ..Model::default()
            }),
            delayed: RefCell::new(Vec::new()),
            tombstones: RefCell::new(BTreeMap::new()),
        });
        for op in &ops {
            match op {
                Op::Write {
                    client,
                    replica,
                    ctx,
                    delete,
                    now,
                } => h.write(*client, *replica, ctx, *delete, now).await,
                Op::Burst { writes, same } => {
                    let tasks: Vec<_> = writes
                        .iter()
                        .cloned()
                        .map(|(client, replica, ctx)| {
                            let h = h.clone();
                            let replica = same.unwrap_or(replica);
                            glommio::spawn_local(async move {
                                h.write(client, replica, &ctx, false, &[true; REPLICAS])
                                    .await
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await;
                    }
                }
                Op::Read {
                    client,
                    replica,
                    two,
                } => h.read(*client, *replica, *two).await,
                Op::Deliver => h.deliver_one().await,
            }
        }
        while !h.delayed.borrow().is_empty() {
            h.deliver_one().await;
        }
        // Anti-entropy's end state: every replica merges every other's.
        let mut all = SiblingSet::new();
        for e in &h.engines {
            if let Some(s) = e.get(KEY).await.expect("get") {
                all.merge(&s, ConflictMode::Siblings);
            }
        }
        let expected = h.model.borrow().survivors();
        let tombstones = h.tombstones.borrow().clone();
        for (i, e) in h.engines.iter().enumerate() {
            let set = e.get(KEY).await.expect("get").unwrap_or_default();
            let got = names(&set, &tombstones);
            let lost: Vec<_> = expected.difference(&got).collect();
            let false_siblings: Vec<_> = got.difference(&expected).collect();
            if !lost.is_empty() || !false_siblings.is_empty() {
                return Err(TestCaseError::fail(format!(
                    "replica {i}: lost {lost:?}, false siblings {false_siblings:?}; ops {ops:?}"
                )));
            }
        }
        let merged = names(&all, &tombstones);
        prop_assert_eq!(merged, expected);
        for e in &h.engines {
            e.close().await.expect("close");
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn a_write_supersedes_exactly_what_its_client_was_shown(ops in prop::collection::vec(arb_op(), 1..40)) {
        run_case(ops)?;
    }
}
