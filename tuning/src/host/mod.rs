//! `corekv tune host`: checks of the kernel and process settings corekv
//! depends on, safe fixes on request, and unit files.
//!
//! Layers: [`probe`] reads the system into [`facts::HostFacts`];
//! [`checks::evaluate`] (pure) turns facts into [`checks::Check`]s;
//! [`apply`] performs safe fixes; [`report`] renders; [`systemd`] writes
//! the unit and sysctl.d files. [`run`] ties them together.

pub mod apply;
pub mod checks;
pub mod facts;
pub mod parse;
pub mod probe;
pub mod report;
pub mod systemd;

use checks::{Check, CHECK_IDS};
use facts::Placement;

use crate::error::{Error, Result};

/// What `corekv tune host` was asked.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    /// Shard placement to compare NIC interrupts with.
    pub placement: Placement,
    /// Only these check ids (all when `None`).
    pub only: Option<Vec<String>>,
    /// Apply the safe fixes of checks that are not ok.
    pub apply: bool,
}

/// Runs the checks (and, with `apply`, the fixes, after which the system
/// is read again so `current` shows the new values). Unknown ids in `only`
/// are an error listing the valid ones.
pub fn run(opts: &HostOptions) -> Result<Vec<Check>> {
    if let Some(only) = &opts.only {
        if let Some(bad) = only.iter().find(|id| !CHECK_IDS.contains(&id.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "unknown check {bad:?}; checks are {}",
                CHECK_IDS.join(", ")
            )));
        }
    }
    let selected = |checks: Vec<Check>| -> Vec<Check> {
        match &opts.only {
            None => checks,
            Some(only) => checks
                .into_iter()
                .filter(|c| only.iter().any(|id| id == c.id))
                .collect(),
        }
    };
    let mut found = selected(checks::evaluate(&probe::probe(), &opts.placement));
    if !opts.apply {
        return Ok(found);
    }
    apply::apply(&mut found, &mut apply::System);
    let mut after = selected(checks::evaluate(&probe::probe(), &opts.placement));
    for c in &mut after {
        c.applied = found
            .iter()
            .find(|f| f.id == c.id)
            .and_then(|f| f.applied.clone());
    }
    Ok(after)
}
