//! # corekv-sim — deterministic simulation of a corekv cluster
//!
//! Runs a whole cluster of coordinators and replicas in one thread, in
//! simulated time, under faults drawn from one seed, and checks what the
//! clients were told against what the replicas ended up holding.
//!
//! What is production code and what is simulated: the replica plan
//! (`coordinator::plan`), the count of answers against W and R
//! (`coordinator::quorum::Tally`), minting versions
//! (`version::mint_into`), sibling-set merges, read-repair selection
//! (`quorum::is_stale`) and the ring are the production functions. The
//! network (loss, delay, reordering, duplication, one-way and symmetric
//! partitions), processes (crash and restart, keeping what `batch` sync
//! keeps: everything acknowledged), clocks (skew and steps), storage (an
//! in-memory map per replica) and the request plumbing around those
//! functions are simulated.
//!
//! Invariants:
//! - a run is a pure function of its seed and [`world::Settings`]: no
//!   system clock, no OS randomness, no hash-map iteration order (only
//!   `BTreeMap`s); the trace digest proves it;
//! - every loop and queue is bounded: the agenda
//!   ([`agenda::EVENTS_MAX`]), hints per node ([`world::HINTS_MAX`]),
//!   simulated time (the run's end).

pub mod agenda;
pub mod check;
pub mod coord;
pub mod history;
pub mod rng;
pub mod workload;
pub mod world;

pub use check::Violation;
pub use world::{Flaw, Settings};

/// What one simulation found.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Nodes simulated.
    pub nodes: usize,
    /// Digest of every event in order: equal digests, equal runs.
    pub trace_digest: u64,
    /// Events run.
    pub events: u64,
    /// Writes and reads the clients issued.
    pub operations: usize,
    /// Writes acknowledged.
    pub acked_writes: usize,
    /// Simulated time, ms.
    pub simulated_ms: u64,
    /// Broken guarantees (empty: the run passed).
    pub violations: Vec<Violation>,
    /// A failure's minimal trace: the history of the first broken key.
    pub key_history: String,
    /// Every trace line, when asked for.
    pub trace: Vec<String>,
}

/// Why a simulation could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// More than [`agenda::EVENTS_MAX`] events were pending at once.
    #[error("seed {0}: the agenda overflowed (a runaway event loop)")]
    AgendaFull(u64),
}

/// The settings seed `seed` simulates, with `nodes` fixed when given
/// (else 3 to 20, mostly 5).
pub fn settings_for(
    seed: u64,
    nodes: Option<usize>,
    flaw: Option<Flaw>,
    keep_trace: bool,
) -> Settings {
    let mut r = rng::Rng::new(seed ^ 0x5EED_5E77_1265_0000);
    let nodes = nodes.unwrap_or_else(|| match r.below(4) {
        0 => r.between(3, 20) as usize,
        _ => 5,
    });
    Settings {
        nodes: nodes.clamp(3, 20),
        clients: 6,
        keys: 12,
        faults_end_ms: 10_000,
        settle_ms: 5_000,
        sloppy: r.below(2) == 0,
        flaw,
        keep_trace,
    }
}

/// Runs one simulation.
pub fn run(seed: u64, settings: Settings) -> Result<Report, SimError> {
    let nodes = settings.nodes;
    let mut w = world::World::new(seed, settings).map_err(|_| SimError::AgendaFull(seed))?;
    w.run().map_err(|_| SimError::AgendaFull(seed))?;
    let violations = check::check(&w);
    let key_history = violations
        .first()
        .map(|v| w.history.describe_key(&v.key))
        .unwrap_or_default();
    Ok(Report {
        seed,
        nodes,
        trace_digest: w.trace.digest(),
        events: w.events,
        operations: w.history.writes.len() + w.history.reads.len(),
        acked_writes: w
            .history
            .writes
            .iter()
            .filter(|x| x.acked_ms.is_some())
            .count(),
        simulated_ms: w.agenda.now_ms(),
        violations,
        key_history,
        trace: std::mem::take(&mut w.trace_lines),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        for seed in [1u64, 42, 7_777] {
            let a = run(seed, settings_for(seed, None, None, false)).unwrap();
            let b = run(seed, settings_for(seed, None, None, false)).unwrap();
            assert_eq!(a.trace_digest, b.trace_digest, "seed {seed}");
            assert_eq!(a.events, b.events);
            assert!(
                a.operations > 100,
                "seed {seed} ran only {} operations",
                a.operations
            );
        }
        let a = run(1, settings_for(1, None, None, false)).unwrap();
        let c = run(2, settings_for(2, None, None, false)).unwrap();
        assert_ne!(a.trace_digest, c.trace_digest);
    }
}
