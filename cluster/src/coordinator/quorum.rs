//! Quorum arithmetic and reply merging (sans-io).

use corekv_engine::version::{HybridClock, SiblingSet, Version};
use corekv_engine::ConflictMode;
use corekv_net::native::Consistency;

/// Replicas a level needs out of `n`. A level left at `Default` takes the
/// cluster default, capped at `n` (so a single node with the default W=2
/// still works); an explicit level above `n` is an error naming both.
pub fn required(level: Consistency, default: Consistency, n: usize) -> Result<usize, String> {
    let (level, explicit) = match level {
        Consistency::Default => (default, false),
        other => (other, true),
    };
    let k = match level {
        Consistency::Default | Consistency::Two => 2,
        Consistency::One => 1,
        Consistency::Quorum => n / 2 + 1,
        Consistency::All => n,
        Consistency::Count(k) => usize::from(k),
    };
    if !explicit {
        return Ok(k.clamp(1, n.max(1)));
    }
    if k == 0 || k > n {
        return Err(format!(
            "consistency {level:?} needs {k} replicas but keys have only {n}"
        ));
    }
    Ok(k)
}

/// Merges replica answers into the state a client should see.
pub fn merge_all<'a>(
    answers: impl IntoIterator<Item = &'a Option<SiblingSet>>,
    mode: ConflictMode,
) -> Option<SiblingSet> {
    let mut merged: Option<SiblingSet> = None;
    for set in answers.into_iter().flatten() {
        match &mut merged {
            None => merged = Some(set.clone()),
            Some(m) => m.merge(set, mode),
        }
    }
    merged
}

/// Whether a replica that answered `answer` lacks a version of `merged`
/// written at least `grace_ms` before `now_ms`, and should be repaired.
///
/// Younger versions are most likely still on their way to that replica (a
/// read at R = 2 right after a write at W = 2 races the third replica's
/// copy), so repairing them would only duplicate the write; if the replica
/// really missed one, hints or a later read repair it.
pub fn is_stale(
    answer: &Option<SiblingSet>,
    merged: &Option<SiblingSet>,
    now_ms: u64,
    grace_ms: u64,
) -> bool {
    let Some(m) = merged else { return false };
    let settled = |v: &&Version| HybridClock::physical_ms(v.timestamp) + grace_ms <= now_ms;
    match answer {
        None => m.is_empty() || m.versions().iter().any(|v| settled(&v)),
        Some(a) => {
            a != m
                && m.versions().iter().filter(settled).any(|v| {
                    a.versions()
                        .binary_search_by(|x| x.dot.cmp(&v.dot))
                        .is_err()
                })
        }
    }
}

/// Where a request waiting on replica answers stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Too few answers yet, and enough still outstanding.
    Waiting,
    /// `needed` answers succeeded: the client may be answered.
    Met,
    /// Too many failed: even if every outstanding one succeeds, fewer
    /// than `needed` will have.
    Impossible,
}

/// The count of one request's replica answers against the `needed` its
/// level asks for (sans-io: the coordinator feeds it answers as they
/// arrive, and so does the simulator).
///
/// Only successes count toward `needed`; a failure only brings the
/// request closer to [`Verdict::Impossible`].
#[derive(Clone, Debug)]
pub struct Tally {
    needed: usize,
    outstanding: usize,
    succeeded: usize,
}

impl Tally {
    /// A request that sent `outstanding` replica calls and needs `needed`
    /// of them to succeed.
    pub fn new(needed: usize, outstanding: usize) -> Tally {
        Tally {
            needed,
            outstanding,
            succeeded: 0,
        }
    }

    /// One call succeeded.
    pub fn succeeded(&mut self) -> Verdict {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.succeeded += 1;
        self.verdict()
    }

    /// One call failed (an error, or no answer in time).
    pub fn failed(&mut self) -> Verdict {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.verdict()
    }

    /// Where the request stands.
    pub fn verdict(&self) -> Verdict {
        if self.succeeded >= self.needed {
            Verdict::Met
        } else if self.succeeded + self.outstanding < self.needed {
            Verdict::Impossible
        } else {
            Verdict::Waiting
        }
    }

    /// Calls that succeeded so far.
    pub fn successes(&self) -> usize {
        self.succeeded
    }

    /// Answers the request needs.
    pub fn needed(&self) -> usize {
        self.needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_engine::version::{Dot, VersionVector};

    /// A write at wall time `counter` ms (as an HLC reading).
    fn write(replica: u64, counter: u64, value: &[u8]) -> SiblingSet {
        SiblingSet::from_write(
            Version {
                dot: Dot { replica, counter },
                timestamp: counter << 16,
                expires_at_ms: 0,
                value: Some(value.to_vec()),
            },
            VersionVector::new().into(),
        )
    }

    #[test]
    fn levels_map_to_replica_counts() {
        use Consistency::*;
        assert_eq!(required(Quorum, Two, 3), Ok(2));
        assert_eq!(required(Quorum, Two, 5), Ok(3));
        assert_eq!(required(All, Two, 3), Ok(3));
        assert_eq!(required(One, Two, 3), Ok(1));
        assert_eq!(required(Count(3), Two, 3), Ok(3));
        assert!(required(Count(4), Two, 3).is_err());
        assert!(required(Two, Two, 1).is_err());
        // The default is capped: a lone node accepts default writes.
        assert_eq!(required(Default, Two, 1), Ok(1));
        assert_eq!(required(Default, All, 3), Ok(3));
    }

    #[test]
    fn stale_replicas_are_the_ones_missing_versions() {
        let a = Some(write(1, 10, b"a"));
        let b = Some(write(2, 11, b"b"));
        let answers = [a.clone(), b.clone(), None];
        let merged = merge_all(&answers, ConflictMode::Siblings);
        assert_eq!(merged.as_ref().map(|m| m.versions().len()), Some(2));
        let now = 1_000;
        assert!(is_stale(&a, &merged, now, 100) && is_stale(&b, &merged, now, 100));
        assert!(is_stale(&None, &merged, now, 100));
        assert!(!is_stale(&merged, &merged, now, 100));
        assert!(!is_stale(&None, &None, now, 100));
        // Versions younger than the grace are presumed in flight.
        assert!(!is_stale(&a, &merged, 50, 100));
        assert!(!is_stale(&None, &merged, 50, 100));
        let lww = merge_all(&answers, ConflictMode::LastWriterWins);
        assert_eq!(lww.as_ref().map(|m| m.versions().len()), Some(1));
    }
}
