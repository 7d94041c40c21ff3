//! The host checks: pure functions from [`HostFacts`] to [`Check`]s.
//!
//! Guarantee: [`evaluate`] returns every check of [`CHECK_IDS`], in that
//! order, each with a current value (or the reason it is unknown), a
//! recommendation, a status and why; a check whose fix is safe to apply
//! carries it in [`Check::fix`].

use serde::Serialize;

use super::facts::{HostFacts, Placement};
use super::parse;

/// Every check, by id, in report order.
pub const CHECK_IDS: [&str; 12] = [
    "cpu_governor",
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
    "io_uring",
];

/// A sysctl check: id, dotted name, recommended value, whether the
/// recommendation is a ceiling (`true`) or a floor, and why.
pub struct SysctlRule {
    /// Check id.
    pub id: &'static str,
    /// Dotted sysctl name.
    pub name: &'static str,
    /// Recommended value (also written to the sysctl.d file).
    pub value: i64,
    /// `true`: values up to `value` are fine; `false`: values from `value` up.
    pub at_most: bool,
    /// Why it matters.
    pub why: &'static str,
}

/// The sysctls checked, applied and written to `99-corekv.conf`.
pub const SYSCTLS: [SysctlRule; 5] = [
    SysctlRule {
        id: "swappiness",
        name: "vm.swappiness",
        value: 1,
        at_most: true,
        why: "memtables and the block cache are sized to fit RAM; swapping them out turns reads into multi-ms stalls",
    },
    SysctlRule {
        id: "dirty_ratio",
        name: "vm.dirty_ratio",
        value: 10,
        at_most: true,
        why: "a large dirty page backlog (periodic commit log, hints) makes writeback bursts that stall the shard that triggers them",
    },
    SysctlRule {
        id: "dirty_background_ratio",
        name: "vm.dirty_background_ratio",
        value: 5,
        at_most: true,
        why: "starting background writeback early keeps the dirty backlog and its bursts small",
    },
    SysctlRule {
        id: "somaxconn",
        name: "net.core.somaxconn",
        value: 4096,
        at_most: false,
        why: "caps each listen backlog; under a connection storm a short queue drops SYNs and clients retry after 1 s",
    },
    SysctlRule {
        id: "tcp_max_syn_backlog",
        name: "net.ipv4.tcp_max_syn_backlog",
        value: 4096,
        at_most: false,
        why: "half-open connections queued per listener; too few drops SYNs when many clients connect at once",
    },
];

/// RLIMIT_NOFILE the unit file sets.
pub const NOFILE_RECOMMENDED: u64 = 1_048_576;
/// RLIMIT_NOFILE below this is a warning.
pub const NOFILE_OK: u64 = 65_536;
/// RLIMIT_MEMLOCK at or above this (or unlimited) is fine.
pub const MEMLOCK_OK: u64 = 1 << 30;

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
/// `/sys` files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// `(file, value)` pairs, written in order.
    pub writes: Vec<(String, String)>,
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

fn check(
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
    let mut out = vec![governor(facts), thp(facts)];
    out.extend(SYSCTLS.iter().map(|r| sysctl(facts, r)));
    out.push(nofile(facts));
    out.push(memlock(facts));
    out.push(clocksource(facts));
    out.push(nic_irqs(facts, placement));
    out.push(io_uring(facts));
    out
}

fn governor(f: &HostFacts) -> Check {
    let rec = "performance";
    let why =
        "a powersave or ondemand governor adds wake-up latency to every request after an idle gap";
    if f.governors.is_empty() {
        return check(
            "cpu_governor",
            Status::Unknown,
            "no cpufreq in sysfs",
            rec,
            "typical of virtual machines: the hypervisor controls frequency; on bare metal, load the cpufreq driver",
        );
    }
    let mut values: Vec<&str> = f.governors.iter().map(|(_, g)| g.trim()).collect();
    values.sort_unstable();
    values.dedup();
    let current = values.join(",");
    if values == [rec] {
        return check("cpu_governor", Status::Ok, current, rec, why);
    }
    let mut c = check("cpu_governor", Status::Warn, current, rec, why);
    c.fix = Some(Fix {
        writes: f
            .governors
            .iter()
            .filter(|(_, g)| g.trim() != rec)
            .map(|(p, _)| (p.clone(), rec.to_string()))
            .collect(),
    });
    c
}

fn thp(f: &HostFacts) -> Check {
    let why = "with `always`, khugepaged compaction and huge-page faults stall shards for milliseconds and bloat memory";
    let Some(text) = &f.thp_enabled else {
        return check(
            "transparent_hugepages",
            Status::Unknown,
            format!("{THP_PATH} not readable"),
            "madvise",
            "kernel without THP: nothing to do",
        );
    };
    match parse::bracketed(text) {
        Some(mode @ ("madvise" | "never")) => {
            check("transparent_hugepages", Status::Ok, mode, "madvise", why)
        }
        Some(mode) => {
            let mut c = check("transparent_hugepages", Status::Warn, mode, "madvise", why);
            c.fix = Some(Fix {
                writes: vec![(THP_PATH.into(), "madvise".into())],
            });
            c
        }
        None => check(
            "transparent_hugepages",
            Status::Unknown,
            format!("unreadable value {:?}", text.trim()),
            "madvise",
            why,
        ),
    }
}

fn sysctl(f: &HostFacts, r: &SysctlRule) -> Check {
    let rec = if r.at_most {
        format!("<= {}", r.value)
    } else {
        format!(">= {}", r.value)
    };
    let Some(raw) = f.sysctls.get(r.name) else {
        return check(
            r.id,
            Status::Unknown,
            format!("{} not readable", r.name),
            rec,
            r.why,
        );
    };
    let Some(v) = parse::int(raw) else {
        return check(
            r.id,
            Status::Unknown,
            format!("{} = {:?} is not a number", r.name, raw.trim()),
            rec,
            r.why,
        );
    };
    // vm.dirty_bytes / vm.dirty_background_bytes override the ratios.
    let bytes_name = r.name.strip_suffix("_ratio").map(|s| format!("{s}_bytes"));
    if let Some(bytes) = bytes_name
        .as_ref()
        .and_then(|n| f.sysctls.get(n))
        .and_then(|b| parse::int(b))
        .filter(|b| *b > 0)
    {
        return check(
            r.id,
            Status::Ok,
            format!(
                "{} = {bytes} (overrides the ratio)",
                bytes_name.unwrap_or_default()
            ),
            rec,
            "a byte limit is set explicitly; the ratio is not used",
        );
    }
    let good = if r.at_most {
        v <= r.value
    } else {
        v >= r.value
    };
    let mut c = check(
        r.id,
        if good { Status::Ok } else { Status::Warn },
        format!("{} = {v}", r.name),
        rec,
        r.why,
    );
    if !good {
        c.fix = Some(Fix {
            writes: vec![(sysctl_path(r.name), r.value.to_string())],
        });
    }
    c
}

fn nofile(f: &HostFacts) -> Check {
    let rec = NOFILE_RECOMMENDED.to_string();
    let why = "every client and internode connection and every table file is a descriptor; 4096 connections per shard need far more than 1024";
    match f.nofile {
        None => check("nofile", Status::Unknown, "getrlimit failed", rec, why),
        Some((soft, hard)) => check(
            "nofile",
            if soft >= NOFILE_OK {
                Status::Ok
            } else {
                Status::Warn
            },
            format!(
                "soft {} / hard {}",
                parse::rlimit(soft),
                parse::rlimit(hard)
            ),
            rec,
            format!("{why} (this shell's limit; the systemd unit sets LimitNOFILE)"),
        ),
    }
}

fn memlock(f: &HostFacts) -> Check {
    let why = "io_uring rings and each glommio executor lock memory; with 8 MiB only a few shards start (LimitMEMLOCK=infinity in the unit)";
    match f.memlock {
        None => check(
            "memlock",
            Status::Unknown,
            "getrlimit failed",
            "unlimited",
            why,
        ),
        Some((soft, hard)) => check(
            "memlock",
            if soft == libc::RLIM_INFINITY || soft >= MEMLOCK_OK {
                Status::Ok
            } else {
                Status::Warn
            },
            format!(
                "soft {} / hard {}",
                parse::rlimit(soft),
                parse::rlimit(hard)
            ),
            "unlimited",
            why,
        ),
    }
}

fn clocksource(f: &HostFacts) -> Check {
    let why = "timestamps are taken per request (latency metrics, HLC); tsc reads in ~20 ns, hpet/acpi_pm in ~1 us via a syscall";
    let Some(cur) = f.clocksource.as_deref().map(str::trim) else {
        return check("clocksource", Status::Unknown, "not readable", "tsc", why);
    };
    match cur {
        "tsc" => check("clocksource", Status::Ok, cur, "tsc", why),
        "kvm-clock" | "hyperv_clocksource_tsc_page" | "arch_sys_counter" => check(
            "clocksource",
            Status::Ok,
            cur,
            "tsc",
            "acceptable: a fast paravirtual or architectural clock (virtual machine or arm64)",
        ),
        other => {
            let has_tsc = f
                .clocksources_available
                .as_deref()
                .is_some_and(|a| a.split_whitespace().any(|c| c == "tsc"));
            check(
                "clocksource",
                Status::Warn,
                other,
                "tsc",
                if has_tsc {
                    format!("{why}; tsc is available: clocksource=tsc on the kernel command line")
                } else {
                    format!("{why}; tsc is not offered by this kernel (unstable TSC?)")
                },
            )
        }
    }
}

/// The CPUs shards run on: `--cpus`, else the first `--shards` online
/// CPUs, else every online CPU.
pub fn shard_cpus(online: &[usize], placement: &Placement) -> Vec<usize> {
    if let Some(cpus) = &placement.cpus {
        return cpus.clone();
    }
    match placement.shards {
        Some(n) if n > 0 => online.iter().copied().take(n).collect(),
        _ => online.to_vec(),
    }
}

fn nic_irqs(f: &HostFacts, placement: &Placement) -> Check {
    let online = f
        .online_cpus
        .as_deref()
        .and_then(|t| parse::cpu_list(t).ok())
        .unwrap_or_default();
    let shards = shard_cpus(&online, placement);
    let rec = format!(
        "NIC IRQs outside shard CPUs {}",
        parse::format_cpu_list(&shards)
    );
    let Some(text) = &f.interrupts else {
        return check(
            "nic_irqs",
            Status::Unknown,
            "/proc/interrupts not readable",
            rec,
            "",
        );
    };
    let irqs = parse::nic_irqs(&parse::interrupts(text), &f.nic_ids);
    if irqs.is_empty() {
        return check(
            "nic_irqs",
            Status::Unknown,
            format!(
                "no NIC interrupts found (interfaces: {})",
                f.nic_ids.join(", ")
            ),
            rec,
            "no per-queue IRQs of a physical or virtio NIC in /proc/interrupts",
        );
    }
    let mut parts = Vec::new();
    let mut clash = Vec::new();
    for l in &irqs {
        match f.irq_affinity.get(&l.irq).map(|t| parse::cpu_list(t)) {
            Some(Ok(cpus)) => {
                if cpus.iter().any(|c| shards.contains(c)) {
                    clash.push(l.irq);
                }
                parts.push(format!(
                    "{} {}→{}",
                    l.irq,
                    l.name,
                    parse::format_cpu_list(&cpus)
                ));
            }
            _ => parts.push(format!("{} {}→?", l.irq, l.name)),
        }
    }
    let current = parts.join("; ");
    if clash.is_empty() {
        let status = if parts.iter().any(|p| p.ends_with('?')) {
            Status::Unknown
        } else {
            Status::Ok
        };
        return check(
            "nic_irqs",
            status,
            current,
            rec,
            "interrupt work stays off the shards' cores",
        );
    }
    let spare: Vec<usize> = online
        .iter()
        .copied()
        .filter(|c| !shards.contains(c))
        .collect();
    let advice = if spare.is_empty() {
        "every online CPU runs a shard (normal on small hosts); pass --cpus to leave one for interrupts".to_string()
    } else {
        format!(
            "move them to {} (echo {} > /proc/irq/N/smp_affinity_list, and ban shard CPUs in irqbalance)",
            parse::format_cpu_list(&spare),
            parse::format_cpu_list(&spare)
        )
    };
    check(
        "nic_irqs",
        Status::Warn,
        current,
        rec,
        format!(
            "IRQs {clash:?} may run on shard CPUs: packet processing preempts the pinned shard and shows in its p99; {advice}"
        ),
    )
}

fn io_uring(f: &HostFacts) -> Check {
    let why = "corekv does all disk and network I/O through io_uring; without it no shard starts";
    let sysctl = match f.io_uring_disabled.as_deref().map(str::trim) {
        None => "io_uring_disabled absent".to_string(),
        Some(v) => format!("io_uring_disabled = {v}"),
    };
    match &f.ring_setup {
        Ok(()) => check(
            "io_uring",
            Status::Ok,
            format!("{sysctl}; a test ring set up"),
            "enabled (io_uring_disabled = 0)",
            why,
        ),
        Err(e) => check(
            "io_uring",
            Status::Warn,
            format!("{sysctl}; a test ring failed: {e}"),
            "enabled (io_uring_disabled = 0)",
            format!("{why}; 1 allows only the io_uring_group, 2 disables it; seccomp (containers) can also block it"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn facts() -> HostFacts {
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
        }
    }

    fn by_id<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks.iter().find(|c| c.id == id).expect(id)
    }

    #[test]
    fn every_check_is_reported_in_order() {
        let checks = evaluate(&facts(), &Placement::default());
        let ids: Vec<&str> = checks.iter().map(|c| c.id).collect();
        assert_eq!(ids, CHECK_IDS);
        assert!(checks
            .iter()
            .all(|c| !c.current.is_empty() && !c.recommended.is_empty()));
    }

    #[test]
    fn governor_absent_unknown_else_checked() {
        let mut f = facts();
        let c = governor(&f);
        assert_eq!(c.status, Status::Unknown);
        assert!(c.why.contains("virtual machines"));
        f.governors = vec![
            ("/sys/a".into(), "performance\n".into()),
            ("/sys/b".into(), "powersave".into()),
        ];
        let c = governor(&f);
        assert_eq!(
            (c.status, c.current.as_str()),
            (Status::Warn, "performance,powersave")
        );
        let fix = c.fix.expect("fix");
        assert_eq!(
            fix.writes,
            vec![("/sys/b".to_string(), "performance".to_string())]
        );
        f.governors = vec![("/sys/a".into(), "performance".into())];
        assert_eq!(governor(&f).status, Status::Ok);
    }

    #[test]
    fn thp_always_warns_with_a_fix() {
        let mut f = facts();
        let c = thp(&f);
        assert_eq!((c.status, c.current.as_str()), (Status::Warn, "always"));
        assert_eq!(c.fix.expect("fix").writes[0].1, "madvise");
        f.thp_enabled = Some("always madvise [never]".into());
        assert_eq!(thp(&f).status, Status::Ok);
        f.thp_enabled = None;
        assert_eq!(thp(&f).status, Status::Unknown);
    }

    #[test]
    fn sysctls_compare_against_floor_or_ceiling() {
        let mut f = facts();
        let checks = evaluate(&f, &Placement::default());
        let swap = by_id(&checks, "swappiness");
        assert_eq!(
            (swap.status, swap.current.as_str()),
            (Status::Warn, "vm.swappiness = 60")
        );
        assert_eq!(
            swap.fix.as_ref().expect("fix").writes,
            vec![("/proc/sys/vm/swappiness".to_string(), "1".to_string())]
        );
        assert_eq!(by_id(&checks, "somaxconn").status, Status::Ok);
        assert!(by_id(&checks, "somaxconn").fix.is_none());
        assert_eq!(by_id(&checks, "tcp_max_syn_backlog").status, Status::Warn);
        assert_eq!(by_id(&checks, "dirty_ratio").status, Status::Warn);
        assert_eq!(
            by_id(&checks, "dirty_background_ratio").status,
            Status::Warn
        );
        f.sysctls
            .insert("vm.dirty_bytes".into(), "268435456".into());
        f.sysctls.insert("vm.swappiness".into(), "garbage".into());
        let checks = evaluate(&f, &Placement::default());
        let d = by_id(&checks, "dirty_ratio");
        assert_eq!(d.status, Status::Ok);
        assert!(
            d.current.contains("vm.dirty_bytes = 268435456"),
            "{}",
            d.current
        );
        assert_eq!(by_id(&checks, "swappiness").status, Status::Unknown);
        f.sysctls.clear();
        assert_eq!(
            by_id(&evaluate(&f, &Placement::default()), "somaxconn").status,
            Status::Unknown
        );
    }

    #[test]
    fn rlimits() {
        let mut f = facts();
        let checks = evaluate(&f, &Placement::default());
        assert_eq!(by_id(&checks, "nofile").status, Status::Warn);
        assert_eq!(by_id(&checks, "nofile").current, "soft 1024 / hard 524288");
        assert_eq!(by_id(&checks, "memlock").status, Status::Warn);
        f.nofile = Some((1 << 20, 1 << 20));
        f.memlock = Some((libc::RLIM_INFINITY, libc::RLIM_INFINITY));
        let checks = evaluate(&f, &Placement::default());
        assert_eq!(by_id(&checks, "nofile").status, Status::Ok);
        let m = by_id(&checks, "memlock");
        assert_eq!(
            (m.status, m.current.as_str()),
            (Status::Ok, "soft unlimited / hard unlimited")
        );
    }

    #[test]
    fn clocksources() {
        let mut f = facts();
        assert_eq!(clocksource(&f).status, Status::Ok);
        f.clocksource = Some("kvm-clock".into());
        assert_eq!(clocksource(&f).status, Status::Ok);
        f.clocksource = Some("hpet".into());
        let c = clocksource(&f);
        assert_eq!(c.status, Status::Warn);
        assert!(c.why.contains("tsc is available"));
        f.clocksource = None;
        assert_eq!(clocksource(&f).status, Status::Unknown);
    }

    #[test]
    fn nic_irqs_against_shard_cpus() {
        let f = facts();
        // Default: shards on every online CPU (0-3): IRQs on 0-1 and 1 clash.
        let c = nic_irqs(&f, &Placement::default());
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.current.contains("38 virtio2-input.0→0-1"),
            "{}",
            c.current
        );
        assert!(c.why.contains("every online CPU runs a shard"), "{}", c.why);
        // Shards on 2-3: no clash.
        let c = nic_irqs(
            &f,
            &Placement {
                cpus: Some(vec![2, 3]),
                shards: None,
            },
        );
        assert_eq!(c.status, Status::Ok, "{c:?}");
        // Two shards take CPUs 0-1: clash, and 2-3 are spare.
        let c = nic_irqs(
            &f,
            &Placement {
                cpus: None,
                shards: Some(2),
            },
        );
        assert_eq!(c.status, Status::Warn);
        assert!(c.why.contains("move them to 2-3"), "{}", c.why);
        let mut none = f.clone();
        none.nic_ids = vec!["eth9".into()];
        assert_eq!(
            nic_irqs(&none, &Placement::default()).status,
            Status::Unknown
        );
        assert_eq!(
            shard_cpus(
                &[0, 1, 2],
                &Placement {
                    cpus: None,
                    shards: Some(9)
                }
            ),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn io_uring_status_follows_the_ring() {
        let mut f = facts();
        assert_eq!(io_uring(&f).status, Status::Ok);
        f.io_uring_disabled = Some("2".into());
        f.ring_setup = Err("Operation not permitted (os error 1)".into());
        let c = io_uring(&f);
        assert_eq!(c.status, Status::Warn);
        assert!(c.current.contains("io_uring_disabled = 2"));
    }
}
