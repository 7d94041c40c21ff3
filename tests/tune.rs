//! End-to-end tests of `corekv tune io`, `corekv tune host` and how
//! `corekv serve` uses the io properties file. Bounded: every child process
//! is waited for with a deadline and killed past it.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{corekv, free_ports, Server};
use corekv_tuning::host::checks::CHECK_IDS;
use corekv_tuning::host::{parse, probe};
use corekv_tuning::io::props::IoProperties;

/// Runs `corekv ARGS` and waits at most `limit`; a child still running
/// then is killed and the test fails.
fn run_bounded(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(corekv())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corekv");
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "corekv {args:?} still running after {limit:?}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A scratch directory on the build's filesystem (O_DIRECT needs a real
/// filesystem; /tmp may be tmpfs).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

fn leftover_test_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".corekv-tune-io-"))
        .collect()
}

#[test]
fn tune_io_writes_properties_that_serve_uses() {
    let dir = scratch();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let out = run_bounded(
        &[
            "tune",
            "io",
            "--dir",
            data.to_str().expect("utf-8 path"),
            "--duration-s",
            "3",
            "--file-mib",
            "16",
        ],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for row in [
        "sequential write",
        "sequential read",
        "random read 4 KiB qd=1 ",
        "random read 4 KiB qd=128",
        "fdatasync",
        "recommended commit_batch_bytes_max",
    ] {
        assert!(stdout.contains(row), "{row:?} missing in\n{stdout}");
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[7/7] fdatasync"),
        "no progress line"
    );
    let path = data.join("io-properties.toml");
    let props = IoProperties::load(&path).expect("valid io properties");
    assert_eq!(props.random_read.len(), 4);
    assert!(leftover_test_files(&data).is_empty());

    // serve picks the file up from its data directory and serves.
    let server = Server::start(&data, 1, &[]);
    let put = server.cli(&["put", "tuned", "yes"]);
    assert!(put.status.success(), "{put:?}");
    let get = server.cli(&["get", "tuned"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "yes\n");
    let log = server.log_text();
    assert!(
        log.contains("io properties from") && log.contains("io-properties.toml"),
        "{log}"
    );
    assert!(log.contains("reads in flight per shard"), "{log}");
}

#[test]
fn tune_io_refuses_a_missing_directory() {
    let dir = scratch();
    let missing = dir.path().join("absent");
    let out = run_bounded(
        &["tune", "io", "--dir", missing.to_str().expect("utf-8")],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent"));
}

#[test]
fn tune_io_interrupted_by_sigint_removes_its_test_file() {
    let dir = scratch();
    let mut child = Command::new(corekv())
        .args(["tune", "io", "--dir"])
        .arg(dir.path())
        .args(["--duration-s", "30", "--file-mib", "32"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait (bounded) for the test file, then send SIGINT.
    let deadline = Instant::now() + Duration::from_secs(30);
    while leftover_test_files(dir.path()).is_empty() && Instant::now() < deadline {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tune io did not stop within 60 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    // Normally interrupted (exit 130); a disk fast enough to finish first
    // exits 0. Either way the test file is gone.
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(130), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    }
    assert!(leftover_test_files(dir.path()).is_empty());
}

fn serve_args(data: &Path, extra: &[&str]) -> Vec<String> {
    let base = free_ports(4);
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--shards".into(),
        "1".into(),
        "--native-addr".into(),
        format!("127.0.0.1:{base}"),
        "--resp-addr".into(),
        format!("127.0.0.1:{}", base + 2),
        "--peer-addr".into(),
        format!("127.0.0.1:{}", base + 3),
        "--admin-addr".into(),
        "off".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn serve_refuses_a_corrupt_io_properties_file() {
    let dir = scratch();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let path = data.join("io-properties.toml");
    std::fs::write(
        &path,
        "format_version = 1\n[sequential\nwrite_bytes_per_s = ",
    )
    .expect("write");
    let args = serve_args(&data, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_bounded(&args, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("io properties file"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // An explicit file that does not exist is an error naming it too.
    std::fs::remove_file(&path).expect("rm");
    let missing = dir.path().join("nope.toml");
    let args = serve_args(
        &data,
        &["--io-properties", missing.to_str().expect("utf-8")],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_bounded(&args, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");
}

#[test]
fn tune_host_json_reports_every_check() {
    let out = run_bounded(&["tune", "host", "--json"], Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let checks = v["checks"].as_array().expect("checks");
    for id in CHECK_IDS {
        let c = checks
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("check {id} missing"));
        assert!(
            !c["current"].as_str().unwrap_or_default().is_empty(),
            "{id}: {c}"
        );
        assert!(
            ["ok", "warn", "unknown"].contains(&c["status"].as_str().unwrap_or_default()),
            "{id}: {c}"
        );
        assert!(
            c["recommended"].is_string() && c["why"].is_string(),
            "{id}: {c}"
        );
    }
    // The table form lists the same checks.
    let out = run_bounded(&["tune", "host", "--shards", "1"], Duration::from_secs(30));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(CHECK_IDS.iter().all(|id| table.contains(id)), "{table}");
}

/// Tests that need root or a second CPU: ignored unless asked for, and
/// failing, not passing, when run where they cannot test
/// ([`common::require`]).
mod needs_host {
    use super::*;
    use common::require;

    /// Restores a sysctl file to its saved value when dropped (also when the
    /// test fails).
    struct Restore {
        path: &'static str,
        value: String,
    }

    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(self.path, &self.value);
        }
    }

    #[test]
    #[ignore = "needs root (writes /proc/sys/vm/swappiness); CI=true ./test.sh runs it"]
    fn tune_host_apply_changes_swappiness_then_it_is_restored() {
        const PATH: &str = "/proc/sys/vm/swappiness";
        let original = std::fs::read_to_string(PATH);
        require(original.is_ok(), &format!("{PATH} readable: {original:?}"));
        let original = original.expect("checked above");
        let _restore = Restore {
            path: PATH,
            value: original.clone(),
        };
        // Make it differ from the recommendation (needs root).
        let write = std::fs::write(PATH, "60\n");
        require(write.is_ok(), &format!("{PATH} writable (root): {write:?}"));
        let out = run_bounded(
            &["tune", "host", "--apply", "--only", "swappiness", "--json"],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let checks = v["checks"].as_array().expect("checks");
        assert_eq!(checks.len(), 1, "--only keeps one check: {v}");
        let c = &checks[0];
        assert_eq!(c["id"], "swappiness");
        assert_eq!(c["applied"]["result"], "applied", "{c}");
        assert_eq!(c["status"], "ok", "re-checked after applying: {c}");
        assert_eq!(c["current"], "vm.swappiness = 1");
        assert_eq!(std::fs::read_to_string(PATH).expect("read").trim(), "1");
        drop(_restore);
        assert_eq!(
            std::fs::read_to_string(PATH).expect("read"),
            original,
            "restored"
        );
    }

    /// The housekeeping kernel threads as `(pid, name, CPUs allowed)`.
    fn housekeeping_threads() -> Vec<(i32, String, String)> {
        probe::kernel_threads()
            .expect("/proc readable")
            .into_iter()
            .map(|t| (t.pid, t.name, t.cpus_allowed))
            .collect()
    }

    /// Puts kernel threads back on their saved CPUs when dropped (also when
    /// the test fails).
    struct RestoreAffinity(Vec<(i32, String, String)>);

    impl Drop for RestoreAffinity {
        fn drop(&mut self) {
            for (pid, _, cpus) in &self.0 {
                let _ = Command::new("taskset")
                    .args(["-pc", cpus, &pid.to_string()])
                    .output();
            }
        }
    }

    #[test]
    #[ignore = "needs root and 2+ CPUs (moves kernel threads); CI=true ./test.sh runs it"]
    fn tune_host_apply_moves_housekeeping_threads_off_shard_cpus_then_they_are_restored() {
        let online =
            std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online CPUs");
        let online = parse::cpu_list(&online).expect("CPU list");
        require(
            online.len() >= 2,
            "a second online CPU to move the housekeeping threads to",
        );
        let before = housekeeping_threads();
        assert!(
            !before.is_empty(),
            "every Linux has kswapd and kcompactd: {before:?}"
        );
        let _restore = RestoreAffinity(before.clone());
        // Let every one of them run on every CPU, shard CPU 0 included (needs root).
        let all = parse::format_cpu_list(&online);
        let widened = before.iter().all(|(pid, _, _)| {
            Command::new("taskset")
                .args(["-pc", &all, &pid.to_string()])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        require(widened, "setting kernel threads' affinity (root)");
        let out = run_bounded(
            &[
                "tune",
                "host",
                "--apply",
                "--only",
                "housekeeping_threads",
                "--cpus",
                "0",
                "--json",
            ],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let c = &v["checks"][0];
        assert_eq!(c["id"], "housekeeping_threads", "{v}");
        assert_eq!(c["applied"]["result"], "applied", "{c}");
        assert_eq!(c["status"], "ok", "re-checked after applying: {c}");
        for (pid, name, cpus) in housekeeping_threads() {
            let cpus = parse::cpu_list(&cpus).expect("CPU list");
            // A thread started since (a restarted kdamond) was not in the fix.
            if before.iter().any(|(p, _, _)| *p == pid) {
                assert!(
                    !cpus.contains(&0),
                    "{name} may still run on CPU 0: {cpus:?}"
                );
            }
        }
        drop(_restore);
        let now = housekeeping_threads();
        for (pid, name, cpus) in &before {
            if let Some((_, _, restored)) = now.iter().find(|(p, _, _)| p == pid) {
                assert_eq!(restored, cpus, "{name} restored");
            }
        }
    }
}

#[test]
fn tune_host_emit_systemd_writes_unit_and_sysctl_file() {
    let dir = scratch();
    let out_dir = dir.path().join("units");
    let out = run_bounded(
        &[
            "tune",
            "host",
            "--cpus",
            "1",
            "--emit-systemd",
            out_dir.to_str().expect("utf-8"),
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    let unit = std::fs::read_to_string(out_dir.join("corekv.service")).expect("unit");
    for line in [
        "[Service]",
        "ExecStart=/usr/local/bin/corekv serve --config /etc/corekv/corekv.toml --cpus 1",
        "LimitNOFILE=1048576",
        "LimitMEMLOCK=infinity",
        "Restart=on-failure",
        "RestartSec=1s",
        "CPUAffinity=1",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line:?} missing in\n{unit}"
        );
    }
    let sysctl = std::fs::read_to_string(out_dir.join("99-corekv.conf")).expect("sysctl");
    for line in [
        "vm.swappiness = 1",
        "vm.dirty_ratio = 10",
        "vm.dirty_background_ratio = 5",
        "net.core.somaxconn = 4096",
        "net.ipv4.tcp_max_syn_backlog = 4096",
    ] {
        assert!(
            sysctl.lines().any(|l| l == line),
            "{line:?} missing in\n{sysctl}"
        );
    }
}
