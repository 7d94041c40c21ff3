//! The host checks: pure functions from [`HostFacts`] to [`Check`]s.
//!
//! Guarantee: [`evaluate`] returns every check of [`CHECK_IDS`], in that
//! order, each with a current value (or the reason it is unknown), a
//! recommendation, a status and why; a check whose fix is safe to apply
//! carries it in [`Check::fix`]. Kernel settings are in `kernel`, CPU idle
//! states in `idle`, process limits and io_uring in `limits`, interrupt
//! placement in `irq`.

mod housekeeping;
mod idle;
mod irq;
mod kernel;
mod limits;
mod reclaim;

use serde::Serialize;

use super::facts::{HostFacts, Placement};

pub use housekeeping::is_housekeeping;
pub use idle::{HALT_POLL_NS_DEFAULT, HALT_POLL_NS_PATH, IDLE_EXIT_LATENCY_US_MAX};
pub use irq::shard_cpus;
pub use kernel::{SysctlRule, SYSCTLS};
pub use limits::{MEMLOCK_OK, NOFILE_OK, NOFILE_RECOMMENDED};
pub use reclaim::{DAMON_ADMIN_PATH, DAMON_RECLAIM_ENABLED_PATH};

/// Every check, by id, in report order.
pub const CHECK_IDS: [&str; 16] = [
    "cpu_governor",
    "cpu_idle",
    "transparent_hugepages",
    "swappiness",
    "dirty_ratio",
    "dirty_background_ratio",
    "somaxconn",
    "tcp_max_syn_backlog",
    "nofile",
    "memlock",
    "clocksource",
    "nic_irqs",
    "housekeeping_threads",
    "damon_reclaim",
    "io_uring",
    "kernel_version",
];

/// Outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As recommended.
    Ok,
    /// Differs from the recommendation in a way that costs latency or
    /// capacity.
    Warn,
    /// Could not be determined (the reason is in `current`/`why`).
    Unknown,
}

/// A fix that is safe to apply: plain writes of values to `/proc/sys` or
/// `/sys` files, and kernel threads moved to other CPUs. Both are undone
/// by writing the old value back (or by a reboot).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// `(file, value)` pairs, written in order.
    pub writes: Vec<(String, String)>,
    /// Kernel threads to move, each to the CPUs given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<ThreadCpus>,
}

impl Fix {
    /// A fix that writes `value` to each `file`.
    pub fn writes(writes: Vec<(String, String)>) -> Fix {
        Fix {
            writes,
            threads: Vec::new(),
        }
    }
}

/// A kernel thread and the CPUs a fix lets it run on. The name is checked
/// again before the move, so a thread that exited (and whose pid was
/// reused) is not touched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThreadCpus {
    /// Its pid.
    pub pid: i32,
    /// Its name (`comm`), e.g. `kswapd0`.
    pub name: String,
    /// Where it may run after the fix.
    pub cpus: Vec<usize>,
}

/// What `--apply` did for a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// `applied`, `failed` or `manual` (no safe automatic fix).
    pub result: String,
    /// The error, or what to do by hand.
    pub detail: String,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// Stable id (see [`CHECK_IDS`]); `--only` takes these.
    pub id: &'static str,
    /// Ok, warn or unknown.
    pub status: Status,
    /// The value found (or why it is unknown).
    pub current: String,
    /// The recommended value.
    pub recommended: String,
    /// Why it matters for corekv.
    pub why: String,
    /// The safe automatic fix, when there is one and the check is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
    /// Set by `--apply`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
}

pub(super) fn check(
    id: &'static str,
    status: Status,
    current: impl Into<String>,
    recommended: impl Into<String>,
    why: impl Into<String>,
) -> Check {
    Check {
        id,
        status,
        current: current.into(),
        recommended: recommended.into(),
        why: why.into(),
        fix: None,
        applied: None,
    }
}

/// Path of a sysctl under `/proc/sys`.
pub fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

/// Path of the THP mode file.
pub const THP_PATH: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// Runs every check on `facts`.
pub fn evaluate(facts: &HostFacts, placement: &Placement) -> Vec<Check> {
    let mut out = vec![
        kernel::governor(facts),
        idle::cpu_idle(facts),
        kernel::thp(facts),
    ];
    out.extend(SYSCTLS.iter().map(|r| kernel::sysctl(facts, r)));
    out.push(limits::nofile(facts));
    out.push(limits::memlock(facts));
    out.push(kernel::clocksource(facts));
    out.push(irq::nic_irqs(facts, placement));
    out.push(housekeeping::housekeeping_threads(facts, placement));
    out.push(reclaim::damon_reclaim(facts));
    out.push(limits::io_uring(facts));
    out.push(limits::kernel_version(facts));
    out
}

#[cfg(test)]
pub(super) mod fixture {
    use super::*;
    use std::collections::BTreeMap;

    pub(crate) fn facts() -> HostFacts {
        let mut sysctls = BTreeMap::new();
        for (k, v) in [
            ("vm.swappiness", "60\n"),
            ("vm.dirty_ratio", "20"),
            ("vm.dirty_background_ratio", "10"),
            ("vm.dirty_bytes", "0"),
            ("vm.dirty_background_bytes", "0"),
            ("net.core.somaxconn", "4096"),
            ("net.ipv4.tcp_max_syn_backlog", "512"),
        ] {
            sysctls.insert(k.to_string(), v.to_string());
        }
        HostFacts {
            governors: vec![],
            thp_enabled: Some("[always] madvise never\n".into()),
            sysctls,
            nofile: Some((1024, 524_288)),
            memlock: Some((8 << 20, 8 << 20)),
            clocksource: Some("tsc\n".into()),
            clocksources_available: Some("tsc hpet acpi_pm\n".into()),
            interrupts: Some(
                " 38:  0  1320 PCI-MSIX-0000:00:03.0 1-edge virtio2-input.0\n 39: 1135 0 PCI-MSIX-0000:00:03.0 2-edge virtio2-output.0\n".into(),
            ),
            nic_ids: vec!["eth0".into(), "virtio2".into()],
            irq_affinity: [(38, "0-1\n".to_string()), (39, "1".to_string())].into(),
            online_cpus: Some("0-3\n".into()),
            io_uring_disabled: Some("0\n".into()),
            ring_setup: Ok(()),
            kernel_release: Some("6.1.0-18-amd64\n".into()),
            cpuidle_driver: Some("intel_idle\n".into()),
            guest_halt_poll_ns: None,
            idle_states: vec![],
            kernel_threads: Some(vec![crate::host::facts::KernelThread {
                pid: 36,
                name: "kcompactd0".into(),
                cpus_allowed: "0-3\n".into(),
            }]),
            kdamonds: vec![],
            damon_reclaim_enabled: None,
        }
    }

    pub(crate) fn by_id<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks.iter().find(|c| c.id == id).expect(id)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::facts;
    use super::*;

    #[test]
    fn every_check_is_reported_in_order() {
        let checks = evaluate(&facts(), &Placement::default());
        let ids: Vec<&str> = checks.iter().map(|c| c.id).collect();
        assert_eq!(ids, CHECK_IDS);
        assert!(checks
            .iter()
            .all(|c| !c.current.is_empty() && !c.recommended.is_empty()));
    }
}
