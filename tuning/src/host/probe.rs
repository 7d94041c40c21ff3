//! The edge: reads `/proc`, `/sys` and rlimits into [`HostFacts`]. Nothing
//! here interprets values; missing files become `None` or empty lists.

use std::collections::BTreeMap;
use std::path::Path;

use super::checks::{
    is_housekeeping, sysctl_path, DAMON_ADMIN_PATH, DAMON_RECLAIM_ENABLED_PATH, HALT_POLL_NS_PATH,
    SYSCTLS, THP_PATH,
};
use super::facts::{HostFacts, IdleState, Kdamond, KernelThread};
use super::parse;

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(resource, &mut r) };
    (rc == 0).then_some((r.rlim_cur, r.rlim_max))
}

fn governors() -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/cpu") else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = dir
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| {
            let path = e.path().join("cpufreq/scaling_governor");
            let value = read(&path)?;
            Some((path.display().to_string(), value.trim().to_string()))
        })
        .collect();
    out.sort();
    out
}

/// Names that a network interface's IRQs can carry: the interface name,
/// its device's name (`virtio2`, or a PCI address) and the parent PCI
/// address of a virtio device. Loopback and virtual interfaces (no
/// `device` link) are skipped.
fn nic_ids() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for e in dir.flatten() {
        let dev = e.path().join("device");
        let Ok(target) = std::fs::canonicalize(&dev) else {
            continue;
        };
        ids.push(e.file_name().to_string_lossy().into_owned());
        if let Some(name) = target.file_name() {
            ids.push(name.to_string_lossy().into_owned());
        }
        if let Some(parent) = target.parent().and_then(Path::file_name) {
            let p = parent.to_string_lossy();
            if p.contains(':') {
                ids.push(p.into_owned());
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Gathers the host's state for [`super::checks::evaluate`].
pub fn probe() -> HostFacts {
    let mut sysctls = BTreeMap::new();
    let names = SYSCTLS
        .iter()
        .map(|r| r.name)
        .chain(["vm.dirty_bytes", "vm.dirty_background_bytes"]);
    for name in names {
        if let Some(v) = read(sysctl_path(name)) {
            sysctls.insert(name.to_string(), v.trim().to_string());
        }
    }
    let interrupts = read("/proc/interrupts");
    let irq_affinity = interrupts
        .as_deref()
        .map(parse::interrupts)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| {
            let v = read(format!("/proc/irq/{}/smp_affinity_list", l.irq))?;
            Some((l.irq, v.trim().to_string()))
        })
        .collect();
    HostFacts {
        governors: governors(),
        thp_enabled: read(THP_PATH),
        sysctls,
        nofile: rlimit(libc::RLIMIT_NOFILE),
        memlock: rlimit(libc::RLIMIT_MEMLOCK),
        clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        clocksources_available: read(
            "/sys/devices/system/clocksource/clocksource0/available_clocksource",
        ),
        interrupts,
        nic_ids: nic_ids(),
        irq_affinity,
        online_cpus: read("/sys/devices/system/cpu/online"),
        io_uring_disabled: read("/proc/sys/kernel/io_uring_disabled"),
        ring_setup: crate::io::probe_ring().map_err(|e| e.to_string()),
        kernel_release: read("/proc/sys/kernel/osrelease"),
        cpuidle_driver: read("/sys/devices/system/cpu/cpuidle/current_driver"),
        guest_halt_poll_ns: read(HALT_POLL_NS_PATH),
        idle_states: idle_states(),
        kernel_threads: kernel_threads(),
        kdamonds: kdamonds(),
        damon_reclaim_enabled: read(DAMON_RECLAIM_ENABLED_PATH),
    }
}

/// Numbered subdirectories of `dir` (DAMON's sysfs lists), in order.
fn numbered_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// The DAMON monitors of the sysfs admin interface and their schemes'
/// actions; a monitor whose state cannot be read is left out.
fn kdamonds() -> Vec<Kdamond> {
    numbered_dirs(Path::new(DAMON_ADMIN_PATH))
        .into_iter()
        .filter_map(|k| {
            let state_path = k.join("state");
            let state = read(&state_path)?.trim().to_string();
            let actions = numbered_dirs(&k.join("contexts"))
                .into_iter()
                .flat_map(|c| numbered_dirs(&c.join("schemes")))
                .filter_map(|s| Some(read(s.join("action"))?.trim().to_string()))
                .collect();
            Some(Kdamond {
                state_path: state_path.display().to_string(),
                state,
                actions,
            })
        })
        .collect()
}

/// The housekeeping kernel threads (children of `kthreadd`, pid 2, with a
/// housekeeping name); `None` when `/proc` cannot be listed. Processes
/// that exit while being read are skipped.
pub fn kernel_threads() -> Option<Vec<KernelThread>> {
    const KTHREADD_PID: i32 = 2;
    let mut out: Vec<KernelThread> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let status = parse::proc_status(&read(format!("/proc/{pid}/status"))?)?;
            (status.ppid == KTHREADD_PID && is_housekeeping(&status.name)).then_some(KernelThread {
                pid,
                name: status.name,
                cpus_allowed: status.cpus_allowed,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Some(out)
}

/// CPU 0's idle states in sysfs order; a state whose files do not parse
/// is left out.
fn idle_states() -> Vec<IdleState> {
    let dir = "/sys/devices/system/cpu/cpu0/cpuidle";
    // Bounded: no CPU has anywhere near 64 idle states.
    (0..64)
        .map_while(|i| {
            let state = format!("{dir}/state{i}");
            let name = read(format!("{state}/name"))?;
            Some((state, name))
        })
        .filter_map(|(state, name)| {
            let exit_latency_us = read(format!("{state}/latency"))?.trim().parse().ok()?;
            let disabled = read(format!("{state}/disable")).is_some_and(|d| d.trim() == "1");
            Some(IdleState {
                name: name.trim().to_string(),
                exit_latency_us,
                disabled,
            })
        })
        .collect()
}
