//! `--apply`: performs the safe fixes (sysctl and sysfs writes) of checks
//! that are not ok, and records for each whether it was applied, failed
//! (with the error) or needs a manual step. Never panics; a failed write
//! does not stop the others.

use super::checks::{Applied, Check, Status};

/// Applies the fixes of `checks` that are not ok through `write(path,
/// value)` and sets each such check's [`Check::applied`]. Checks that are
/// ok, or unknown without a fix, are left alone.
pub fn apply(checks: &mut [Check], write: &mut dyn FnMut(&str, &str) -> std::io::Result<()>) {
    for c in checks.iter_mut() {
        if c.status == Status::Ok {
            continue;
        }
        c.applied = match &c.fix {
            Some(fix) => {
                let errors: Vec<String> = fix
                    .writes
                    .iter()
                    .filter_map(|(path, value)| {
                        write(path, value)
                            .err()
                            .map(|e| format!("writing {value:?} to {path}: {e}"))
                    })
                    .collect();
                Some(if errors.is_empty() {
                    Applied {
                        result: "applied".into(),
                        detail: fix
                            .writes
                            .iter()
                            .map(|(p, v)| format!("{p} = {v}"))
                            .collect::<Vec<_>>()
                            .join(", "),
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

/// Writes a value to a `/proc/sys` or `/sys` file (the real writer).
pub fn write_system_file(path: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{value}\n"))
}

#[cfg(test)]
mod tests {
    use super::super::checks::Fix;
    use super::*;

    fn c(id: &'static str, status: Status, fix: Option<Vec<(&str, &str)>>) -> Check {
        Check {
            id,
            status,
            current: "x".into(),
            recommended: "y".into(),
            why: "z".into(),
            fix: fix.map(|w| Fix {
                writes: w
                    .into_iter()
                    .map(|(p, v)| (p.to_string(), v.to_string()))
                    .collect(),
            }),
            applied: None,
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
        let mut written = Vec::new();
        apply(&mut checks, &mut |p, v| {
            if p.contains("somaxconn") {
                return Err(std::io::Error::from_raw_os_error(libc::EACCES));
            }
            written.push((p.to_string(), v.to_string()));
            Ok(())
        });
        assert_eq!(
            written,
            vec![("/proc/sys/vm/swappiness".to_string(), "1".to_string())]
        );
        let results: Vec<Option<&str>> = checks
            .iter()
            .map(|c| c.applied.as_ref().map(|a| a.result.as_str()))
            .collect();
        assert_eq!(
            results,
            vec![Some("applied"), Some("failed"), Some("manual"), None, None]
        );
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
