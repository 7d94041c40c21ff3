//! What the host checks look at, gathered once by [`super::probe`]. Every
//! field is the raw text (or number) the system gave; `None` means it was
//! not available. Checks are pure functions of this.

use std::collections::BTreeMap;

/// Raw host state.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// `scaling_governor` of each CPU that has cpufreq, as `(path, value)`;
    /// empty when there is no cpufreq (typical of VMs).
    pub governors: Vec<(String, String)>,
    /// `/sys/kernel/mm/transparent_hugepage/enabled`.
    pub thp_enabled: Option<String>,
    /// Sysctl values by dotted name (`vm.swappiness`), for the names in
    /// [`super::checks::SYSCTLS`] and the `vm.dirty_*bytes` pair.
    pub sysctls: BTreeMap<String, String>,
    /// RLIMIT_NOFILE (soft, hard) of this process.
    pub nofile: Option<(u64, u64)>,
    /// RLIMIT_MEMLOCK (soft, hard) of this process, bytes.
    pub memlock: Option<(u64, u64)>,
    /// `current_clocksource`.
    pub clocksource: Option<String>,
    /// `available_clocksource`.
    pub clocksources_available: Option<String>,
    /// `/proc/interrupts`.
    pub interrupts: Option<String>,
    /// Names a NIC's IRQs can carry (interface, bus device, PCI address).
    pub nic_ids: Vec<String>,
    /// `/proc/irq/N/smp_affinity_list` by IRQ number.
    pub irq_affinity: BTreeMap<u32, String>,
    /// `/sys/devices/system/cpu/online`.
    pub online_cpus: Option<String>,
    /// `/proc/sys/kernel/io_uring_disabled` (absent on older kernels).
    pub io_uring_disabled: Option<String>,
    /// Outcome of setting up a tiny io_uring in this process.
    pub ring_setup: Result<(), String>,
    /// `/proc/sys/kernel/osrelease` (e.g. `6.1.0-18-amd64`).
    pub kernel_release: Option<String>,
    /// `/sys/devices/system/cpu/cpuidle/current_driver` (absent without
    /// cpuidle).
    pub cpuidle_driver: Option<String>,
    /// `/sys/module/haltpoll/parameters/guest_halt_poll_ns` (absent
    /// unless the guest `haltpoll` driver is loaded).
    pub guest_halt_poll_ns: Option<String>,
    /// CPU 0's idle states, shallowest first.
    pub idle_states: Vec<IdleState>,
    /// The kernel's housekeeping threads (see
    /// [`super::checks::is_housekeeping`]); `None` when `/proc` could not
    /// be listed.
    pub kernel_threads: Option<Vec<KernelThread>>,
    /// DAMON monitors configured through `/sys/kernel/mm/damon/admin`
    /// (empty when there is no such interface or none is configured).
    pub kdamonds: Vec<Kdamond>,
    /// `/sys/module/damon_reclaim/parameters/enabled` (absent without the
    /// module).
    pub damon_reclaim_enabled: Option<String>,
}

/// One DAMON monitor (`/sys/kernel/mm/damon/admin/kdamonds/N`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kdamond {
    /// Its `state` file.
    pub state_path: String,
    /// `state`: `on` or `off`.
    pub state: String,
    /// The `action` of every scheme of every context, e.g. `pageout`.
    pub actions: Vec<String>,
}

/// A kernel thread and where it may run (`/proc/PID/status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelThread {
    /// Its pid.
    pub pid: i32,
    /// `Name` (the `comm`), e.g. `kcompactd0`.
    pub name: String,
    /// `Cpus_allowed_list`, e.g. `0-1`.
    pub cpus_allowed: String,
}

/// One idle state of a CPU (`/sys/devices/system/cpu/cpu0/cpuidle/stateN`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdleState {
    /// `name`, e.g. `C1E`.
    pub name: String,
    /// `latency`: worst-case exit latency in µs.
    pub exit_latency_us: u64,
    /// `disable` is 1.
    pub disabled: bool,
}

/// Where shards will run, to compare NIC interrupt placement with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// `--cpus`: the CPUs shards are pinned to.
    pub cpus: Option<Vec<usize>>,
    /// `--shards`: without `--cpus`, shards take the first online CPUs.
    pub shards: Option<usize>,
}
