//! `--apply`: performs the safe fixes (sysctl and sysfs writes, kernel
//! threads moved off shard CPUs) of checks that are not ok, and records
//! for each whether it was applied, failed (with the error) or needs a
//! manual step. Never panics; a failed change does not stop the others.

use super::checks::{Applied, Check, Fix, Status, ThreadCpus};
use super::parse::format_cpu_list;

/// Where `--apply` makes its changes: the running system ([`System`]),
/// or a recording double in tests.
pub trait HostWriter {
    /// Writes `value` to the `/proc/sys` or `/sys` file `path`.
    fn write_file(&mut self, path: &str, value: &str) -> std::io::Result<()>;
    /// Restricts the kernel thread `thread.pid` to `thread.cpus`, unless
    /// that pid no longer belongs to a thread named `thread.name`.
    fn move_thread(&mut self, thread: &ThreadCpus) -> std::io::Result<()>;
}

/// Applies the fixes of `checks` that are not ok through `system` and sets
/// each such check's [`Check::applied`]. Checks that are ok, or unknown
/// without a fix, are left alone.
pub fn apply(checks: &mut [Check], system: &mut dyn HostWriter) {
    for c in checks.iter_mut() {
        if c.status == Status::Ok {
            continue;
        }
        c.applied = match &c.fix {
            Some(fix) => {
                let mut errors: Vec<String> = Vec::new();
                for (path, value) in &fix.writes {
                    if let Err(e) = system.write_file(path, value) {
                        errors.push(format!("writing {value:?} to {path}: {e}"));
                    }
                }
                for t in &fix.threads {
                    if let Err(e) = system.move_thread(t) {
                        errors.push(format!(
                            "moving {} (pid {}) to CPUs {}: {e}",
                            t.name,
                            t.pid,
                            format_cpu_list(&t.cpus)
                        ));
                    }
                }
                Some(if errors.is_empty() {
                    Applied {
                        result: "applied".into(),
                        detail: describe(fix),
                    }
                } else {
                    Applied {
                        result: "failed".into(),
                        detail: errors.join("; "),
                    }
                })
            }
            None if c.status == Status::Warn => Some(Applied {
                result: "manual".into(),
                detail: "no safe automatic fix; see why (the systemd unit and sysctl.d file from --emit-systemd cover limits and sysctls)".into(),
            }),
            None => None,
        };
    }
}

/// What a fix changes, one `what = value` per change.
fn describe(fix: &Fix) -> String {
    fix.writes
        .iter()
        .map(|(p, v)| format!("{p} = {v}"))
        .chain(
            fix.threads
                .iter()
                .map(|t| format!("{} CPUs = {}", t.name, format_cpu_list(&t.cpus))),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// The running system: files written as given, threads moved with
/// `sched_setaffinity`.
pub struct System;

impl HostWriter for System {
    fn write_file(&mut self, path: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(path, format!("{value}\n"))
    }

    fn move_thread(&mut self, thread: &ThreadCpus) -> std::io::Result<()> {
        // The pid was read a moment ago; make sure it is still that thread.
        // One that has exited since (khugepaged stops when THP is turned
        // off by an earlier fix) runs nowhere: nothing to move.
        let comm = match std::fs::read_to_string(format!("/proc/{}/comm", thread.pid)) {
            Ok(comm) => comm,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if comm.trim() != thread.name {
            return Err(std::io::Error::other(format!(
                "pid {} is now {:?}",
                thread.pid,
                comm.trim()
            )));
        }
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let set_size_max = 8 * std::mem::size_of::<libc::cpu_set_t>();
        for &cpu in &thread.cpus {
            if cpu >= set_size_max {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("CPU {cpu} is beyond the {set_size_max} a CPU set holds"),
                ));
            }
            // SAFETY: `cpu` is within the set (checked above).
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed; the call
        // only reads it.
        let rc = unsafe {
            libc::sched_setaffinity(thread.pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &'static str, status: Status, fix: Option<Vec<(&str, &str)>>) -> Check {
        Check {
            id,
            status,
            current: "x".into(),
            recommended: "y".into(),
            why: "z".into(),
            fix: fix.map(|w| {
                Fix::writes(
                    w.into_iter()
                        .map(|(p, v)| (p.to_string(), v.to_string()))
                        .collect(),
                )
            }),
            applied: None,
        }
    }

    /// Records changes; refuses somaxconn (permission) and pid 25 (gone).
    #[derive(Default)]
    struct Recorder {
        written: Vec<(String, String)>,
        moved: Vec<(i32, Vec<usize>)>,
    }

    impl HostWriter for Recorder {
        fn write_file(&mut self, path: &str, value: &str) -> std::io::Result<()> {
            if path.contains("somaxconn") {
                return Err(std::io::Error::from_raw_os_error(libc::EACCES));
            }
            self.written.push((path.to_string(), value.to_string()));
            Ok(())
        }

        fn move_thread(&mut self, thread: &ThreadCpus) -> std::io::Result<()> {
            self.moved.push((thread.pid, thread.cpus.clone()));
            if thread.pid == 25 {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        }
    }

    #[test]
    fn applies_what_it_can_and_reports_the_rest() {
        let mut checks = vec![
            c(
                "swappiness",
                Status::Warn,
                Some(vec![("/proc/sys/vm/swappiness", "1")]),
            ),
            c(
                "somaxconn",
                Status::Warn,
                Some(vec![("/proc/sys/net/core/somaxconn", "4096")]),
            ),
            c("memlock", Status::Warn, None),
            c("clocksource", Status::Ok, None),
            c("cpu_governor", Status::Unknown, None),
        ];
        checks.push(c("housekeeping_threads", Status::Warn, None));
        checks[5].fix = Some(Fix {
            writes: vec![],
            threads: vec![
                ThreadCpus {
                    pid: 25,
                    name: "kdamond.0".into(),
                    cpus: vec![1],
                },
                ThreadCpus {
                    pid: 36,
                    name: "kcompactd0".into(),
                    cpus: vec![1, 2, 3],
                },
            ],
        });
        let mut system = Recorder::default();
        apply(&mut checks, &mut system);
        assert_eq!(
            system.written,
            vec![("/proc/sys/vm/swappiness".to_string(), "1".to_string())]
        );
        assert_eq!(system.moved, vec![(25, vec![1]), (36, vec![1, 2, 3])]);
        let results: Vec<Option<&str>> = checks
            .iter()
            .map(|c| c.applied.as_ref().map(|a| a.result.as_str()))
            .collect();
        assert_eq!(
            results,
            vec![
                Some("applied"),
                Some("failed"),
                Some("manual"),
                None,
                None,
                Some("failed")
            ]
        );
        let moved = checks[5].applied.as_ref().expect("moved");
        assert!(
            moved
                .detail
                .contains("moving kdamond.0 (pid 25) to CPUs 1: No such process"),
            "{}",
            moved.detail
        );
        assert!(!moved.detail.contains("kcompactd0"), "{}", moved.detail);
        let failed = checks[1].applied.as_ref().expect("failed");
        assert!(
            failed.detail.contains("/proc/sys/net/core/somaxconn"),
            "{}",
            failed.detail
        );
        assert!(
            failed.detail.contains("Permission denied"),
            "{}",
            failed.detail
        );
    }
}
