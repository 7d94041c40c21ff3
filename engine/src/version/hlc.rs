//! Hybrid logical clock: issues dot counters and timestamps without reading.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bits of a reading given to the logical counter; the rest is wall-clock ms.
const LOGICAL_BITS: u32 = 16;

/// Milliseconds since the Unix epoch from the system clock (0 if the clock
/// is before 1970, which only a broken host reports).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A hybrid logical clock (Kulkarni et al.): each reading is
/// `wall_ms << 16 | logical`, strictly greater than every reading issued or
/// observed before, and close to wall time. Readings therefore serve both as
/// unique per-replica dot counters and as last-writer-wins timestamps, and a
/// coordinator needs no read to issue a new version. If the wall clock steps
/// back, readings keep growing through the logical part.
#[derive(Debug, Default, Clone)]
pub struct HybridClock {
    last: u64,
}

impl HybridClock {
    /// A clock that has issued nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a reading strictly above every earlier one, given the current
    /// wall time in ms.
    pub fn tick(&mut self, wall_ms: u64) -> u64 {
        let physical = wall_ms << LOGICAL_BITS;
        self.last = if physical > self.last {
            physical
        } else {
            self.last + 1
        };
        self.last
    }

    /// Issues a reading using the system clock.
    pub fn now(&mut self) -> u64 {
        self.tick(wall_clock_ms())
    }

    /// Moves the clock past a reading seen elsewhere (a replicated write, a
    /// client context, or a replayed log), so later readings exceed it.
    pub fn observe(&mut self, reading: u64) {
        self.last = self.last.max(reading);
    }

    /// The last reading issued or observed.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Wall-clock milliseconds encoded in a reading.
    pub fn physical_ms(reading: u64) -> u64 {
        reading >> LOGICAL_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_even_when_wall_clock_steps_back() {
        let mut c = HybridClock::new();
        let a = c.tick(1000);
        let b = c.tick(1000);
        let d = c.tick(900);
        assert!(a < b && b < d);
        assert_eq!(HybridClock::physical_ms(a), 1000);
        c.observe(5000 << 16);
        assert!(c.tick(1001) > 5000 << 16);
    }
}
