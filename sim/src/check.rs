//! The checkers, run on a finished simulation's history and stores.
//!
//! - **hints deliver**: once faults end and hints had time to replay,
//!   every replica of a key holds (has heard of) every write whose
//!   coordinator finished it;
//! - **convergence**: after the final reads at ALL repaired what they saw,
//!   the key's replicas hold the same versions;
//! - **no acknowledged write lost** (set-full): the merged final state has
//!   heard of every acknowledged write's dot;
//! - **sibling preservation**: a version is gone from the final state only
//!   if some write's client was shown it (that write's context covers it);
//! - **quorum reads see quorum writes**: a read that started after a write
//!   was acknowledged by W of the key's own replicas, with R + W > N, was
//!   shown that write (or what superseded it);
//! - **bounds**: no node held more than `HINTS_MAX` hints.

use corekv_engine::version::{Dot, SiblingSet};
use corekv_engine::ConflictMode;

use crate::world::{World, REPLICATION};

/// One broken guarantee.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The checker that found it.
    pub check: &'static str,
    /// The key concerned.
    pub key: Vec<u8>,
    /// What exactly is wrong.
    pub detail: String,
}

fn dot(d: Dot) -> String {
    format!("{}:{}", d.replica, d.counter)
}

/// Every violation in `world`, which has run to its end.
pub fn check(world: &World) -> Vec<Violation> {
    let mut out = Vec::new();
    let h = &world.history;
    let keys: Vec<Vec<u8>> = (0..world.settings.keys as u64).map(World::key).collect();
    for key in &keys {
        let owners = world.owners(key);
        // Hints deliver.
        if world.hints_overflowed == 0 && !world.after_hints.is_empty() {
            for w in h.writes.iter().filter(|w| &w.key == key && w.finished) {
                let Some(d) = w.dot else { continue };
                for &o in &owners {
                    let has = world.after_hints[o]
                        .get(key)
                        .is_some_and(|s| s.context().covers(d));
                    if !has {
                        out.push(Violation {
                            check: "hints deliver",
                            key: key.clone(),
                            detail: format!(
                                "node {} lacks write {} (acked: {}) after faults ended and hints replayed",
                                o + 1,
                                dot(d),
                                w.acked_ms.is_some()
                            ),
                        });
                    }
                }
            }
        }
        // Convergence.
        let states: Vec<Option<&SiblingSet>> = owners
            .iter()
            .map(|&o| world.nodes[o].store.get(key))
            .collect();
        let dots = |s: &Option<&SiblingSet>| -> Vec<Dot> {
            s.map(|s| s.versions().iter().map(|v| v.dot).collect())
                .unwrap_or_default()
        };
        let first = dots(&states[0]);
        for (i, s) in states.iter().enumerate().skip(1) {
            if dots(s) != first {
                out.push(Violation {
                    check: "convergence",
                    key: key.clone(),
                    detail: format!(
                        "node {} holds {:?}, node {} holds {:?} after the final repair",
                        owners[0] + 1,
                        first.iter().map(|&d| dot(d)).collect::<Vec<_>>(),
                        owners[i] + 1,
                        dots(s).iter().map(|&d| dot(d)).collect::<Vec<_>>()
                    ),
                });
            }
        }
        // The merged final state.
        let mut merged = SiblingSet::new();
        for s in states.iter().flatten() {
            merged.merge(s, ConflictMode::Siblings);
        }
        let present: Vec<Dot> = merged.versions().iter().map(|v| v.dot).collect();
        for w in h.writes.iter().filter(|w| &w.key == key) {
            let (Some(d), Some(_)) = (w.dot, w.acked_ms) else {
                continue;
            };
            if !merged.context().covers(d) {
                out.push(Violation {
                    check: "no acknowledged write lost",
                    key: key.clone(),
                    detail: format!("acknowledged write {} is on no replica", dot(d)),
                });
                continue;
            }
            if present.contains(&d) {
                continue;
            }
            let seen = h.writes.iter().any(|o| {
                o.key == *key
                    && o.dot.is_some_and(|od| merged.context().covers(od))
                    && o.given.as_ref().is_some_and(|g| g.covers(d))
            });
            if !seen {
                out.push(Violation {
                    check: "sibling preservation",
                    key: key.clone(),
                    detail: format!(
                        "write {} was superseded, but no write's client had been shown it",
                        dot(d)
                    ),
                });
            }
        }
        // Quorum reads see quorum writes.
        for r in h.reads.iter().filter(|r| &r.key == key) {
            let Some(shown) = &r.shown else { continue };
            for w in h.writes.iter().filter(|w| &w.key == key) {
                let (Some(d), Some(acked)) = (w.dot, w.acked_ms) else {
                    continue;
                };
                if acked < r.invoked_ms && w.owner_acks + r.needed > REPLICATION && !shown.covers(d)
                {
                    out.push(Violation {
                        check: "quorum reads see quorum writes",
                        key: key.clone(),
                        detail: format!(
                            "a read at R={} started at {} ms was not shown write {}, acknowledged at {} ms by {} replicas",
                            r.needed, r.invoked_ms, dot(d), acked, w.owner_acks
                        ),
                    });
                }
            }
        }
    }
    if world
        .nodes
        .iter()
        .any(|n| n.hints.len() > crate::world::HINTS_MAX)
    {
        out.push(Violation {
            check: "bounds",
            key: Vec::new(),
            detail: "a node holds more hints than HINTS_MAX".into(),
        });
    }
    out
}
