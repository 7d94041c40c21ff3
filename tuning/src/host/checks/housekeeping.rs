//! The kernel's housekeeping threads against the CPUs the shards run on.
//!
//! Memory reclaim (`kswapd`), compaction (`kcompactd`), huge-page
//! collapse (`khugepaged`) and DAMON's monitors (`kdamond`) are kernel
//! threads that may run on any CPU the kernel allows, and while one runs
//! on a shard's CPU every request of that shard waits: on a test VM
//! `kdamond.0` held the shards' CPU for 1–4 ms every 500 ms, and
//! `khugepaged` for up to 6 ms. Unlike per-CPU kernel threads (`ksoftirqd/N`,
//! `kworker/N:M`) these can be moved, which is the fix offered here.

use super::irq::{cpu_roles, CpuRoles};
use super::{check, Check, Fix, Status, ThreadCpus};
use crate::host::facts::{HostFacts, KernelThread, Placement};
use crate::host::parse;

/// Name prefixes of the housekeeping kernel threads this check moves.
pub const HOUSEKEEPING_PREFIXES: [&str; 4] = ["kswapd", "kcompactd", "khugepaged", "kdamond"];

/// Whether a kernel thread's name is one of the housekeeping threads.
pub fn is_housekeeping(name: &str) -> bool {
    HOUSEKEEPING_PREFIXES.iter().any(|p| name.starts_with(p))
}

const ID: &str = "housekeeping_threads";

pub(super) fn housekeeping_threads(f: &HostFacts, placement: &Placement) -> Check {
    let CpuRoles { shards, spare } = cpu_roles(f, placement);
    let rec = format!(
        "{} outside shard CPUs {}",
        HOUSEKEEPING_PREFIXES.join(", "),
        parse::format_cpu_list(&shards)
    );
    let threads = match &f.kernel_threads {
        None => return check(ID, Status::Unknown, "/proc not readable", rec, ""),
        Some(t) if t.is_empty() => {
            return check(
                ID,
                Status::Unknown,
                "none found in /proc",
                rec,
                "no kernel thread with a housekeeping name is a child of kthreadd",
            )
        }
        Some(t) => t,
    };
    let allowed: Vec<(&KernelThread, Option<Vec<usize>>)> = threads
        .iter()
        .map(|t| (t, parse::cpu_list(&t.cpus_allowed).ok()))
        .collect();
    let current = allowed
        .iter()
        .map(|(t, cpus)| match cpus {
            Some(c) => format!("{}→{}", t.name, parse::format_cpu_list(c)),
            None => format!("{}→?", t.name),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let clash: Vec<(&KernelThread, &Vec<usize>)> = allowed
        .iter()
        .filter_map(|(t, cpus)| Some((*t, cpus.as_ref()?)))
        .filter(|(_, cpus)| cpus.iter().any(|c| shards.contains(c)))
        .collect();
    if clash.is_empty() {
        let status = if allowed.iter().any(|(_, c)| c.is_none()) {
            Status::Unknown
        } else {
            Status::Ok
        };
        return check(
            ID,
            status,
            current,
            rec,
            "housekeeping stays off the shards' cores",
        );
    }
    let names = clash
        .iter()
        .map(|(t, _)| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let cost = format!(
        "{names} may run on shard CPUs, and a shard's requests wait while one does (on a test VM kdamond.0 held the shards' CPU for 1–4 ms every 500 ms)"
    );
    if spare.is_empty() {
        return check(
            ID,
            Status::Warn,
            current,
            rec,
            format!("{cost}; every online CPU runs a shard (normal on small hosts); pass --cpus to leave one for them"),
        );
    }
    // A thread bound to some CPUs (kswapd to its NUMA node's) stays among
    // them: it only loses the shard CPUs.
    let moves: Vec<ThreadCpus> = clash
        .iter()
        .filter_map(|(t, cpus)| {
            let keep: Vec<usize> = cpus.iter().copied().filter(|c| spare.contains(c)).collect();
            (!keep.is_empty()).then(|| ThreadCpus {
                pid: t.pid,
                name: t.name.clone(),
                cpus: keep,
            })
        })
        .collect();
    let stuck: Vec<&str> = clash
        .iter()
        .map(|(t, _)| t.name.as_str())
        .filter(|name| !moves.iter().any(|m| m.name == *name))
        .collect();
    let mut why = format!(
        "{cost}; --apply moves them to {} (until a reboot or the thread restarts: re-apply from the unit's ExecStartPre)",
        parse::format_cpu_list(&spare)
    );
    if !stuck.is_empty() {
        why.push_str(&format!(
            "; {} may only run on shard CPUs: pass --cpus to leave one of theirs free",
            stuck.join(", ")
        ));
    }
    let mut c = check(ID, Status::Warn, current, rec, why);
    if !moves.is_empty() {
        c.fix = Some(Fix {
            threads: moves,
            ..Fix::default()
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::super::fixture::facts;
    use super::*;

    fn thread(pid: i32, name: &str, cpus: &str) -> KernelThread {
        KernelThread {
            pid,
            name: name.into(),
            cpus_allowed: cpus.into(),
        }
    }

    fn on_cpus(cpus: &[usize]) -> Placement {
        Placement {
            cpus: Some(cpus.to_vec()),
            shards: None,
        }
    }

    #[test]
    fn names_that_count_as_housekeeping() {
        for name in ["kswapd0", "kcompactd1", "khugepaged", "kdamond.0"] {
            assert!(is_housekeeping(name), "{name}");
        }
        for name in ["ksoftirqd/0", "kworker/0:1", "rcu_preempt", "corekv"] {
            assert!(!is_housekeeping(name), "{name}");
        }
    }

    #[test]
    fn threads_on_shard_cpus_are_moved_to_the_spare_ones() {
        let mut f = facts(); // CPUs 0-3 online
        f.kernel_threads = Some(vec![
            thread(25, "kdamond.0", "0-3"),
            thread(36, "kcompactd0", "0-3"),
            thread(40, "khugepaged", "3"),
            thread(41, "kswapd0", "0-1"),
        ]);
        let c = housekeeping_threads(&f, &on_cpus(&[0, 1]));
        assert_eq!(c.status, Status::Warn);
        assert!(c.current.contains("kdamond.0→0-3"), "{}", c.current);
        assert!(
            c.why
                .contains("kdamond.0, kcompactd0, kswapd0 may run on shard CPUs"),
            "{}",
            c.why
        );
        assert!(
            c.why.contains("kswapd0 may only run on shard CPUs"),
            "{}",
            c.why
        );
        let fix = c.fix.expect("a fix");
        assert!(fix.writes.is_empty());
        assert_eq!(
            fix.threads,
            vec![
                ThreadCpus {
                    pid: 25,
                    name: "kdamond.0".into(),
                    cpus: vec![2, 3]
                },
                ThreadCpus {
                    pid: 36,
                    name: "kcompactd0".into(),
                    cpus: vec![2, 3]
                },
            ]
        );
        // Once moved, the check is ok.
        f.kernel_threads = Some(vec![thread(25, "kdamond.0", "2-3")]);
        let c = housekeeping_threads(&f, &on_cpus(&[0, 1]));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.fix.is_none());
    }

    #[test]
    fn without_a_spare_cpu_there_is_advice_but_no_fix() {
        let mut f = facts();
        f.kernel_threads = Some(vec![thread(25, "kdamond.0", "0-3")]);
        // Default placement: a shard on every online CPU.
        let c = housekeeping_threads(&f, &Placement::default());
        assert_eq!(c.status, Status::Warn);
        assert!(c.why.contains("pass --cpus"), "{}", c.why);
        assert!(c.fix.is_none());
    }

    #[test]
    fn unreadable_states_are_unknown() {
        let mut f = facts();
        f.kernel_threads = None;
        assert_eq!(
            housekeeping_threads(&f, &Placement::default()).status,
            Status::Unknown
        );
        f.kernel_threads = Some(vec![]);
        assert_eq!(
            housekeeping_threads(&f, &Placement::default()).status,
            Status::Unknown
        );
        f.kernel_threads = Some(vec![thread(25, "kdamond.0", "garbage")]);
        let c = housekeeping_threads(&f, &on_cpus(&[0]));
        assert_eq!(c.status, Status::Unknown);
        assert!(c.current.contains("kdamond.0→?"), "{}", c.current);
    }
}
