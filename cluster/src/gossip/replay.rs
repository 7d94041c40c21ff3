//! Replay protection for authenticated gossip (wire version 2): every
//! datagram carries its sender's stamp, a wall-clock reading in µs that
//! strictly increases per sender; a receiver accepts each stamp once and
//! only near its own clock.

use std::collections::HashMap;

/// How far a stamp may be from the receiver's clock (either way) and
/// still be accepted: members' clocks must agree within it.
pub const STAMP_WINDOW_MS: u64 = 60_000;

/// Why an authenticated datagram was dropped after its MAC checked out.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Its stamp is not above the last one accepted from its sender: a
    /// replay (or a datagram overtaken by a newer one, which gossip
    /// tolerates like a loss).
    #[error("stamp {stamp} of node {from} is not above its last accepted {last}: replayed")]
    Replayed {
        /// The sender.
        from: u32,
        /// The datagram's stamp.
        stamp: u64,
        /// The last stamp accepted from it.
        last: u64,
    },
    /// Its stamp is further than [`STAMP_WINDOW_MS`] from this node's clock.
    #[error("stamp of node {from} is {off_ms} ms off this node's clock (window {STAMP_WINDOW_MS} ms): stale or replayed")]
    Stale {
        /// The sender.
        from: u32,
        /// Distance from this node's clock.
        off_ms: u64,
    },
}

/// Replay protection for authenticated gossip: a datagram is accepted
/// once, only within [`STAMP_WINDOW_MS`] of this node's clock, and only
/// when its stamp is above the last one accepted from the same sender.
/// After a restart the window alone holds (a datagram of the last minute
/// could be accepted once more, and gossip's merge ignores stale news).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    last: HashMap<u32, u64>,
}

/// Senders remembered before the guard starts over (the window still
/// holds): more than any cluster's membership.
const REPLAY_SENDERS_MAX: usize = 4 * super::MEMBERS_MAX;

impl ReplayGuard {
    /// Accepts `stamp` (µs) from `from` at wall-clock `now_ms`, or says why not.
    pub fn check(&mut self, from: u32, stamp: u64, now_ms: u64) -> Result<(), ReplayError> {
        let off_ms = (stamp / 1000).abs_diff(now_ms);
        if off_ms > STAMP_WINDOW_MS {
            return Err(ReplayError::Stale { from, off_ms });
        }
        let last = self.last.get(&from).copied().unwrap_or(0);
        if stamp <= last {
            return Err(ReplayError::Replayed { from, stamp, last });
        }
        if self.last.len() >= REPLAY_SENDERS_MAX && !self.last.contains_key(&from) {
            self.last.clear();
        }
        self.last.insert(from, stamp);
        Ok(())
    }
}

/// The next stamp a sender uses after `last`: its wall clock in µs, or
/// one above `last` when the clock has not moved on (or stepped back).
pub fn next_stamp(last: u64, now_us: u64) -> u64 {
    now_us.max(last.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000;

    #[test]
    fn each_stamp_is_accepted_once_and_only_near_the_clock() {
        let mut g = ReplayGuard::default();
        let t = NOW_MS * 1000;
        assert_eq!(g.check(1, t, NOW_MS), Ok(()));
        assert!(matches!(
            g.check(1, t, NOW_MS),
            Err(ReplayError::Replayed { .. })
        ));
        assert!(matches!(
            g.check(1, t - 1, NOW_MS),
            Err(ReplayError::Replayed { .. })
        ));
        // Per sender: another node's stamps are its own.
        assert_eq!(g.check(2, t, NOW_MS), Ok(()));
        assert_eq!(g.check(1, t + 1, NOW_MS), Ok(()));
        let old = (NOW_MS - STAMP_WINDOW_MS - 1) * 1000;
        assert!(matches!(
            g.check(3, old, NOW_MS),
            Err(ReplayError::Stale { .. })
        ));
        let ahead = (NOW_MS + STAMP_WINDOW_MS + 1) * 1000;
        assert!(matches!(
            g.check(3, ahead, NOW_MS),
            Err(ReplayError::Stale { .. })
        ));
        assert!(matches!(
            g.check(3, u64::MAX, NOW_MS),
            Err(ReplayError::Stale { .. })
        ));
    }

    #[test]
    fn stamps_increase_even_when_the_clock_does_not() {
        assert_eq!(next_stamp(0, 5), 5);
        assert_eq!(next_stamp(5, 5), 6);
        assert_eq!(next_stamp(9, 5), 10, "clock stepped back");
        assert_eq!(next_stamp(u64::MAX, 5), u64::MAX);
    }

    #[test]
    fn the_guard_stays_bounded_under_a_flood_of_senders() {
        let mut g = ReplayGuard::default();
        for id in 0..(REPLAY_SENDERS_MAX as u32 * 3) {
            assert_eq!(g.check(id, NOW_MS * 1000, NOW_MS), Ok(()));
        }
        assert!(g.last.len() <= REPLAY_SENDERS_MAX);
    }
}
