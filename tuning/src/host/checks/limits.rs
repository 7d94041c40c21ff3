//! Process limits (RLIMIT_NOFILE, RLIMIT_MEMLOCK) and io_uring availability.

use super::{check, Check, Status};
use crate::host::facts::HostFacts;
use crate::host::parse;

/// RLIMIT_NOFILE the unit file sets.
pub const NOFILE_RECOMMENDED: u64 = 1_048_576;
/// RLIMIT_NOFILE below this is a warning.
pub const NOFILE_OK: u64 = 65_536;
/// RLIMIT_MEMLOCK at or above this (or unlimited) is fine.
pub const MEMLOCK_OK: u64 = 1 << 30;

pub(super) fn nofile(f: &HostFacts) -> Check {
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
            soft_hard(soft, hard),
            rec,
            format!("{why} (this shell's limit; the systemd unit sets LimitNOFILE)"),
        ),
    }
}

/// An rlimit pair as the checks show it: `soft 1024 / hard 524288`.
fn soft_hard(soft: u64, hard: u64) -> String {
    format!(
        "soft {} / hard {}",
        parse::rlimit(soft),
        parse::rlimit(hard)
    )
}

pub(super) fn memlock(f: &HostFacts) -> Check {
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
            soft_hard(soft, hard),
            "unlimited",
            why,
        ),
    }
}

pub(super) fn io_uring(f: &HostFacts) -> Check {
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

/// The oldest kernel whose io_uring takes `IORING_SETUP_COOP_TASKRUN`.
pub const COOP_TASKRUN_KERNEL: (u32, u32) = (5, 19);

/// `major.minor` of a kernel release string such as `6.1.0-18-amd64`.
fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub(super) fn kernel_version(f: &HostFacts) -> Check {
    let (want_major, want_minor) = COOP_TASKRUN_KERNEL;
    let recommended = format!("{want_major}.{want_minor} or newer");
    let why = "corekv's io_uring rings use COOP_TASKRUN: completions reach a busy shard at its next system call instead of through an interrupt per packet (pipelined RESP: ~2x less system time per request)";
    let Some(release) = f.kernel_release.as_deref() else {
        return check(
            "kernel_version",
            Status::Unknown,
            "/proc/sys/kernel/osrelease unreadable",
            recommended,
            why,
        );
    };
    let release = release.trim();
    match major_minor(release) {
        Some(v) if v >= COOP_TASKRUN_KERNEL => {
            check("kernel_version", Status::Ok, release, recommended, why)
        }
        Some(_) => check(
            "kernel_version",
            Status::Warn,
            release,
            recommended,
            format!("{why}; on this kernel the rings start without it and a busy shard spends more CPU per request"),
        ),
        None => check(
            "kernel_version",
            Status::Unknown,
            format!("{release} (not major.minor)"),
            recommended,
            why,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{by_id, facts};
    use super::super::{evaluate, Status};
    use super::*;
    use crate::host::facts::Placement;

    #[test]
    fn kernel_version_needs_coop_taskrun() {
        let mut f = facts();
        let status = |f: &HostFacts| {
            let checks = evaluate(f, &Placement::default());
            let c = by_id(&checks, "kernel_version");
            (c.status, c.current.clone())
        };
        assert_eq!(status(&f), (Status::Ok, "6.1.0-18-amd64".to_string()));
        f.kernel_release = Some("5.19.0\n".into());
        assert_eq!(status(&f).0, Status::Ok);
        f.kernel_release = Some("5.15.0-91-generic\n".into());
        assert_eq!(status(&f).0, Status::Warn);
        f.kernel_release = Some("4.19.0".into());
        assert_eq!(status(&f).0, Status::Warn);
        f.kernel_release = Some("custom".into());
        assert_eq!(status(&f).0, Status::Unknown);
        f.kernel_release = None;
        assert_eq!(status(&f).0, Status::Unknown);
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
