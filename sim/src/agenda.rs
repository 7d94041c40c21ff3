//! The event agenda: what happens next, in simulated time.
//!
//! Events at the same instant run in the order they were scheduled, so a
//! run is a pure function of its seed. The agenda is bounded
//! ([`EVENTS_MAX`]): a simulation that schedules more than that at once has
//! a runaway loop, which is reported rather than eating memory.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Most events pending at once.
pub const EVENTS_MAX: usize = 1 << 20;

struct Entry<E> {
    at_ms: u64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we pop the earliest.
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

/// Pending events ordered by (time, scheduling order).
pub struct Agenda<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
    now_ms: u64,
}

/// The agenda overflowed [`EVENTS_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgendaFull;

impl<E> Agenda<E> {
    /// An empty agenda at time 0.
    pub fn new() -> Agenda<E> {
        Agenda {
            heap: BinaryHeap::new(),
            seq: 0,
            now_ms: 0,
        }
    }

    /// The simulated time of the event last popped.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Schedules `event` `delay_ms` from now.
    pub fn after(&mut self, delay_ms: u64, event: E) -> Result<(), AgendaFull> {
        if self.heap.len() >= EVENTS_MAX {
            return Err(AgendaFull);
        }
        self.seq += 1;
        self.heap.push(Entry {
            at_ms: self.now_ms + delay_ms,
            seq: self.seq,
            event,
        });
        Ok(())
    }

    /// The next event, advancing time to it; `None` when the agenda is
    /// empty or the next event is later than `until_ms`.
    pub fn pop_until(&mut self, until_ms: u64) -> Option<E> {
        if self.heap.peek()?.at_ms > until_ms {
            return None;
        }
        let e = self.heap.pop()?;
        self.now_ms = e.at_ms;
        Some(e.event)
    }

    /// Advances time to `at_ms` with nothing happening (after the last
    /// event before it).
    pub fn advance_to(&mut self, at_ms: u64) {
        self.now_ms = self.now_ms.max(at_ms);
    }
}

impl<E> Default for Agenda<E> {
    fn default() -> Self {
        Agenda::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pop_in_time_then_scheduling_order() {
        let mut a = Agenda::new();
        a.after(5, "c").unwrap();
        a.after(1, "a").unwrap();
        a.after(5, "d").unwrap();
        a.after(1, "b").unwrap();
        let order: Vec<_> = std::iter::from_fn(|| a.pop_until(10)).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert_eq!(a.now_ms(), 5);
    }

    #[test]
    fn nothing_past_the_horizon_pops() {
        let mut a = Agenda::new();
        a.after(20, ()).unwrap();
        assert!(a.pop_until(19).is_none());
        assert!(a.pop_until(20).is_some());
    }
}
