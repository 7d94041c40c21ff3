//! Kernel settings: CPU governor, transparent huge pages, sysctls,
//! clocksource.

use super::{check, sysctl_path, Check, Fix, Status, THP_PATH};
use crate::host::facts::HostFacts;
use crate::host::parse;

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

pub(super) fn governor(f: &HostFacts) -> Check {
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
    c.fix = Some(Fix::writes(
        f.governors
            .iter()
            .filter(|(_, g)| g.trim() != rec)
            .map(|(p, _)| (p.clone(), rec.to_string()))
            .collect(),
    ));
    c
}

pub(super) fn thp(f: &HostFacts) -> Check {
    let why = "with `always` or `madvise` (the allocator asks for huge pages), khugepaged collapses the shards' memory and page faults compact it, holding a CPU for milliseconds: on a test VM khugepaged ran 5-6 ms at a time and the cluster's p99 at 21 k req/s was 1.10-1.29 ms with `never` against 1.95-3.43 ms with `madvise`, with no change in CPU per request";
    let Some(text) = &f.thp_enabled else {
        return check(
            "transparent_hugepages",
            Status::Unknown,
            format!("{THP_PATH} not readable"),
            "never",
            "kernel without THP: nothing to do",
        );
    };
    match parse::bracketed(text) {
        Some("never") => check("transparent_hugepages", Status::Ok, "never", "never", why),
        Some(mode) => {
            let mut c = check("transparent_hugepages", Status::Warn, mode, "never", why);
            c.fix = Some(Fix::writes(vec![(THP_PATH.into(), "never".into())]));
            c
        }
        None => check(
            "transparent_hugepages",
            Status::Unknown,
            format!("unreadable value {:?}", text.trim()),
            "never",
            why,
        ),
    }
}

pub(super) fn sysctl(f: &HostFacts, r: &SysctlRule) -> Check {
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
        c.fix = Some(Fix::writes(vec![(
            sysctl_path(r.name),
            r.value.to_string(),
        )]));
    }
    c
}

pub(super) fn clocksource(f: &HostFacts) -> Check {
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

#[cfg(test)]
mod tests {
    use super::super::fixture::{by_id, facts};
    use super::super::{evaluate, Status};
    use super::*;
    use crate::host::facts::Placement;

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
    fn thp_other_than_never_warns_with_a_fix() {
        let mut f = facts();
        let c = thp(&f);
        assert_eq!((c.status, c.current.as_str()), (Status::Warn, "always"));
        assert_eq!(c.fix.expect("fix").writes[0].1, "never");
        f.thp_enabled = Some("always [madvise] never".into());
        let c = thp(&f);
        assert_eq!((c.status, c.current.as_str()), (Status::Warn, "madvise"));
        assert_eq!(c.fix.expect("fix").writes[0].1, "never");
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
}
