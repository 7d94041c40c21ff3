//! `--emit-systemd DIR`: a systemd unit and a sysctl.d file with the
//! recommended settings. The texts are pure functions; [`write_files`] is
//! the edge.

use std::path::{Path, PathBuf};

use super::checks::{NOFILE_RECOMMENDED, SYSCTLS};
use super::parse::format_cpu_list;
use crate::error::{Error, Result};

/// File name of the unit.
pub const UNIT_FILE: &str = "corekv.service";
/// File name of the sysctl.d file.
pub const SYSCTL_FILE: &str = "99-corekv.conf";

/// What the unit runs.
#[derive(Clone, Debug)]
pub struct UnitOptions {
    /// The installed binary.
    pub exec: String,
    /// The node's configuration file.
    pub config: String,
    /// CPUs to pin shards to (`--cpus`), if chosen.
    pub cpus: Option<Vec<usize>>,
}

impl Default for UnitOptions {
    fn default() -> Self {
        UnitOptions {
            exec: "/usr/local/bin/corekv".into(),
            config: "/etc/corekv/corekv.toml".into(),
            cpus: None,
        }
    }
}

/// The text of `corekv.service`.
pub fn unit(opts: &UnitOptions) -> String {
    let cpus = opts.cpus.as_deref().filter(|c| !c.is_empty());
    let cpus_arg = cpus.map_or(String::new(), |c| format!(" --cpus {}", format_cpu_list(c)));
    let affinity = match cpus {
        Some(c) => format!(
            "# The shards are pinned to CPUs {list} (--cpus); CPUAffinity keeps the\n\
             # process's other threads there too. Keep NIC interrupts off these CPUs:\n\
             # IRQBALANCE_BANNED_CPULIST={list} for irqbalance, or the irqaffinity=\n\
             # kernel parameter (see `corekv tune host`, check nic_irqs).\n\
             CPUAffinity={spaced}\n\
             # Moves the kernel's housekeeping threads (kswapd, kcompactd, khugepaged,\n\
             # kdamond) off these CPUs at every start: the move does not survive a\n\
             # reboot. `+` runs it as root, `-` lets the node start if it fails.\n\
             ExecStartPre=-+{exec} tune host --apply --only housekeeping_threads --cpus {list}\n",
            exec = opts.exec,
            list = format_cpu_list(c),
            spaced = c
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        None => "# CPU pinning: corekv pins one shard per CPU itself. To leave CPUs for NIC\n\
                 # interrupts and tools, pass --cpus LIST (or cpus = [...] in the config),\n\
                 # add CPUAffinity=LIST here, and keep IRQs off LIST (irqbalance's\n\
                 # IRQBALANCE_BANNED_CPULIST, or the irqaffinity= kernel parameter).\n"
            .to_string(),
    };
    format!(
        "# corekv node, written by `corekv tune host --emit-systemd`.\n\
         [Unit]\n\
         Description=corekv node\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         User=corekv\n\
         ExecStart={exec} serve --config {config}{cpus_arg}\n\
         # io_uring rings and glommio executors lock memory per shard; the\n\
         # default 8 MiB fits only a few.\n\
         LimitMEMLOCK=infinity\n\
         LimitNOFILE={nofile}\n\
         Restart=on-failure\n\
         # After a crash the kernel releases the io_uring-held listening sockets\n\
         # ~15 ms later; restarting sooner makes the new process refuse to start\n\
         # (\"port is taken\"). One second is plenty.\n\
         RestartSec=1s\n\
         # SIGTERM: stop accepting, finish in-flight requests, flush, exit 0.\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=60\n\
         {affinity}\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exec = opts.exec,
        config = opts.config,
        nofile = NOFILE_RECOMMENDED,
    )
}

/// The text of `99-corekv.conf` for `/etc/sysctl.d`: every recommended
/// sysctl, one `name = value` line each, with why as a comment.
pub fn sysctl_conf() -> String {
    let mut s = String::from(
        "# corekv host settings, written by `corekv tune host --emit-systemd`.\n\
         # Install as /etc/sysctl.d/99-corekv.conf, then `sysctl --system`.\n",
    );
    for r in &SYSCTLS {
        s.push_str(&format!("# {}\n{} = {}\n", r.why, r.name, r.value));
    }
    s
}

/// Writes both files into `dir` (created if missing); returns their paths.
pub fn write_files(dir: &Path, opts: &UnitOptions) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let files = [(UNIT_FILE, unit(opts)), (SYSCTL_FILE, sysctl_conf())];
    let mut out = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_has_the_limits_and_restart_policy() {
        let u = unit(&UnitOptions::default());
        for line in [
            "ExecStart=/usr/local/bin/corekv serve --config /etc/corekv/corekv.toml\n",
            "LimitNOFILE=1048576\n",
            "LimitMEMLOCK=infinity\n",
            "Restart=on-failure\n",
            "RestartSec=1s\n",
            "[Install]\n",
        ] {
            assert!(u.contains(line), "{line:?} missing in\n{u}");
        }
        assert!(!u.contains("\nCPUAffinity="));
        let pinned = unit(&UnitOptions {
            cpus: Some(vec![2, 3]),
            ..UnitOptions::default()
        });
        assert!(
            pinned.contains("serve --config /etc/corekv/corekv.toml --cpus 2-3\n"),
            "{pinned}"
        );
        assert!(pinned.contains("\nCPUAffinity=2 3\n"), "{pinned}");
        assert!(
            pinned.contains("\nExecStartPre=-+/usr/local/bin/corekv tune host --apply --only housekeeping_threads --cpus 2-3\n"),
            "{pinned}"
        );
        assert!(!u.contains("ExecStartPre"), "{u}");
    }

    #[test]
    fn sysctl_file_lists_every_recommendation() {
        let s = sysctl_conf();
        for line in [
            "vm.swappiness = 1\n",
            "vm.dirty_ratio = 10\n",
            "vm.dirty_background_ratio = 5\n",
            "net.core.somaxconn = 4096\n",
            "net.ipv4.tcp_max_syn_backlog = 4096\n",
        ] {
            assert!(s.contains(line), "{line:?} missing in\n{s}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_files(&dir.path().join("out"), &UnitOptions::default()).expect("write");
        assert_eq!(paths.len(), 2);
        assert!(paths.iter().all(|p| p.exists()));
    }
}
