//! Minting a write's version, without I/O: the clock reading, the new dot,
//! what it supersedes, and (for a write that reads) its merge into the
//! minting replica's copy of the key.
//!
//! `Engine::mint` runs these on the key's stored state; the simulator
//! (`corekv-sim`) runs the very same functions on its replicas' states, so
//! what it checks is the versioning production uses.

use std::time::Duration;

use super::{CausalContext, Dot, HybridClock, SiblingSet, Version, VersionVector, ANY_REPLICA};
use crate::options::ConflictMode;

/// Which earlier versions a local write supersedes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WriteContext {
    /// Supersede nothing: the write becomes a sibling of every version
    /// present (in `Siblings` mode). The default, and what a client that
    /// never read the key means.
    #[default]
    Blind,
    /// Supersede exactly the versions this causal context (from an earlier
    /// read, or the answer to an earlier write) holds.
    Given(CausalContext),
    /// Supersede every version written before this one, on any replica,
    /// without reading: Redis `SET` semantics, last-writer-wins by hybrid
    /// clock. A concurrent write with a later clock reading survives as a
    /// sibling.
    Overwrite,
}

/// The new version of a write by replica id `me`, above `known` (the
/// highest dot of `me` the key's state holds), and the context it
/// supersedes.
///
/// The dot's counter is a reading of `clock` at wall time `wall_ms` (the
/// engine passes the system clock; the simulator its simulated one), taken
/// after observing `known`
/// and the given context's highest dot of `me`, so it is never a dot that
/// is already known, even after a restart with a clock that stepped back.
pub fn new_version(
    clock: &mut HybridClock,
    wall_ms: u64,
    me: u64,
    known: u64,
    value: Option<Vec<u8>>,
    context: &WriteContext,
    ttl: Option<Duration>,
) -> (Version, CausalContext) {
    clock.observe(known);
    let (given, timestamp) = match context {
        WriteContext::Blind => (CausalContext::new(), clock.tick(wall_ms)),
        WriteContext::Given(c) => {
            clock.observe(c.max_counter(me));
            (c.clone(), clock.tick(wall_ms))
        }
        WriteContext::Overwrite => {
            // Supersede everything written before this instant, on any
            // replica, without reading it (see ANY_REPLICA).
            let t = clock.tick(wall_ms);
            (
                VersionVector::from_entries([(ANY_REPLICA, t - 1)]).into(),
                t,
            )
        }
    };
    let expires_at_ms = match ttl {
        Some(ttl) => HybridClock::physical_ms(timestamp)
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)),
        None => 0,
    };
    let version = Version {
        dot: Dot {
            replica: me,
            counter: timestamp,
        },
        timestamp,
        expires_at_ms,
        value,
    };
    (version, given)
}

/// Mints a write that reads into `base` at wall time `wall_ms`, replica `me`'s whole copy of the
/// key: the new version is merged in and `me`'s own dots are folded into
/// its vector entry (exact, because `me` issued and holds every one of
/// them). Returns the new dot and the context the client gets back: the
/// write's own (what it superseded plus its dot), not the merged state's.
///
/// `base` afterwards is the state every replica of the key merges.
// Each argument is one input of the mint; a struct for them would only be
// unpacked again on the hot write path.
#[allow(clippy::too_many_arguments)]
pub fn mint_into(
    base: &mut SiblingSet,
    clock: &mut HybridClock,
    wall_ms: u64,
    me: u64,
    value: Option<Vec<u8>>,
    context: &WriteContext,
    ttl: Option<Duration>,
    mode: ConflictMode,
) -> (Dot, CausalContext) {
    let known = base.context().max_counter(me);
    let (version, given) = new_version(clock, wall_ms, me, known, value, context, ttl);
    let dot = version.dot;
    let delta = SiblingSet::from_write(version, given);
    let answer = delta.context().clone();
    base.merge(&delta, mode);
    base.fold_own(me);
    (dot, answer)
}
