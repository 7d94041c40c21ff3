//! The progress line of `corekv tune io` on stderr, and the offset
//! generator of the random phases.

use std::io::Write;
use std::time::{Duration, Instant};

/// The progress line.
pub(crate) struct Progress {
    enabled: bool,
    phases: usize,
    phase: usize,
    label: String,
    deadline: Instant,
    later: Duration,
    last: Option<Instant>,
}

impl Progress {
    /// A progress line for `phases` phases, printed only when `enabled`.
    pub(crate) fn new(enabled: bool, phases: usize) -> Progress {
        Progress {
            enabled,
            phases,
            phase: 0,
            label: String::new(),
            deadline: Instant::now(),
            later: Duration::ZERO,
            last: None,
        }
    }

    /// Enters phase `phase` (1-based), due to end in `budget`, with
    /// `later` left for the phases after it.
    pub(crate) fn start(&mut self, phase: usize, label: String, budget: Duration, later: Duration) {
        self.phase = phase;
        self.label = label;
        self.deadline = Instant::now() + budget;
        self.later = later;
        self.last = None;
        self.tick();
    }

    /// Redraws the line, at most every 250 ms.
    pub(crate) fn tick(&mut self) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(250))
        {
            return;
        }
        self.last = Some(now);
        let left = self.deadline.saturating_duration_since(now) + self.later;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}/{}] {:<24} ... {:>3} s left ",
            self.phase,
            self.phases,
            self.label,
            left.as_secs()
        );
        let _ = err.flush();
    }

    /// Ends the line.
    pub(crate) fn finish(&self) {
        if self.enabled {
            let _ = writeln!(std::io::stderr(), "\r{:<60}\rdone", "");
        }
    }
}

/// A tiny xorshift generator: offsets need no cryptographic quality, and
/// a fixed seed keeps runs comparable.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    /// The next pseudo-random number.
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
