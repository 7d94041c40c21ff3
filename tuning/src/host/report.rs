//! Rendering host check results: a human table or JSON.

use std::fmt::Write;

use super::checks::{Check, Status};

/// A table: one row per check (status, id, current, recommended), the why
/// and any `--apply` outcome indented below. Pure.
pub fn table(checks: &[Check]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<7} {:<23} {:<34} recommended",
        "status", "check", "current"
    );
    for c in checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Unknown => "unknown",
        };
        let _ = writeln!(
            s,
            "{:<7} {:<23} {:<34} {}",
            status, c.id, c.current, c.recommended
        );
        if c.status != Status::Ok && !c.why.is_empty() {
            let _ = writeln!(s, "        why: {}", c.why);
        }
        if let Some(a) = &c.applied {
            let _ = writeln!(s, "        apply: {} ({})", a.result, a.detail);
        }
    }
    let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
    let _ = writeln!(
        s,
        "\n{} ok, {} warn, {} unknown",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Unknown)
    );
    s
}

/// The checks as a JSON document `{"checks": [...]}`.
pub fn json(checks: &[Check]) -> String {
    serde_json::json!({ "checks": checks }).to_string()
}
