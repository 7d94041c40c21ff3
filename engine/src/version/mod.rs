//! Versions of a key: dots, version vectors, the hybrid logical clock that
//! issues dots, and sibling sets with their merge.
//!
//! The model is a multi-value register as a causal CRDT. A write creates one
//! [`Version`] identified by a fresh [`Dot`] and carries the causal context
//! ([`CausalContext`]) its client was shown: exactly those dots, so the
//! write supersedes exactly the versions its client saw and every other
//! stays a sibling. A [`SiblingSet`] keeps the surviving versions and every
//! dot it has heard of; a version is superseded where a state knows its dot
//! but not the version. That merge is a join-semilattice — commutative,
//! associative and idempotent — so replicas replay or repair the same data
//! any number of times.
//!
//! The replica that coordinates a write reads its own copy of the key
//! first and replicates the merged state (see `Engine::mint`): it is the
//! only one that knows all of its own dots of the key, so only it may fold
//! them into its compact vector entry, which keeps contexts small.

mod codec;
mod context;
mod dot;
mod hlc;
mod mint;
mod sibling;

pub use codec::DecodeError;
pub use context::CausalContext;
pub use dot::{Dot, VersionVector, ANY_REPLICA};
pub use hlc::{wall_clock_ms, HybridClock};
pub use mint::{mint_into, new_version, WriteContext};
pub use sibling::{SiblingSet, Version};
