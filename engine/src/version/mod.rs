//! Versions of a key: dots, version vectors, the hybrid logical clock that
//! issues dots, and sibling sets with their merge.
//!
//! The model is a multi-value register as a causal CRDT. A write creates one
//! [`Version`] identified by a fresh [`Dot`] and carries the causal context
//! ([`VersionVector`]) its client had read; versions whose dots that context
//! covers are superseded, all others stay as siblings. The pair (dot,
//! context) is the write's dotted version vector. A [`SiblingSet`] keeps the
//! surviving versions and the join of every context it has merged, which is
//! what makes its merge a join-semilattice: commutative, associative and
//! idempotent, so replicas can append deltas without reading and replay or
//! repair the same data any number of times.

mod codec;
mod dot;
mod hlc;
mod sibling;

pub use codec::DecodeError;
pub use dot::{Dot, VersionVector, ANY_REPLICA};
pub use hlc::{wall_clock_ms, HybridClock};
pub use sibling::{SiblingSet, Version};
