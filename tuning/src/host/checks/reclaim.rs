//! DAMON's proactive reclaim: memory the kernel pages out because it looks
//! cold.
//!
//! A DAMON monitor with a `pageout` scheme (configured through the sysfs
//! admin interface, or the `damon_reclaim` module) writes out pages it has
//! not seen touched for a while. A shard's memtables and block cache are
//! sized to stay in RAM: paged out, a read that hits them waits for the
//! disk. And the monitor thread itself takes a CPU for milliseconds at a
//! time (on a test VM `kdamond.0` ran 1–4 ms every 500 ms).

use super::{check, Check, Fix, Status};
use crate::host::facts::HostFacts;

/// Where DAMON's sysfs admin interface lists its monitors.
pub const DAMON_ADMIN_PATH: &str = "/sys/kernel/mm/damon/admin/kdamonds";

/// The `damon_reclaim` module's switch.
pub const DAMON_RECLAIM_ENABLED_PATH: &str = "/sys/module/damon_reclaim/parameters/enabled";

const ID: &str = "damon_reclaim";

pub(super) fn damon_reclaim(f: &HostFacts) -> Check {
    let rec = "no DAMON pageout on the node's memory";
    let why = "DAMON pages out memory it sees as cold: memtables and the block cache are sized to stay in RAM, a read that finds them paged out waits for the disk, and its monitor takes a CPU for milliseconds at a time; give memory back by lowering memtable_mib and block_cache_mib instead";
    let reclaiming: Vec<&str> = f
        .kdamonds
        .iter()
        .filter(|k| k.state == "on" && k.actions.iter().any(|a| a == "pageout"))
        .map(|k| k.state_path.as_str())
        .collect();
    let module_on = f
        .damon_reclaim_enabled
        .as_deref()
        .is_some_and(|v| matches!(v.trim(), "Y" | "1"));
    if reclaiming.is_empty() && !module_on {
        let current = if f.kdamonds.is_empty() && f.damon_reclaim_enabled.is_none() {
            "no DAMON monitor configured".to_string()
        } else {
            format!(
                "{} DAMON monitor(s), none paging out; damon_reclaim {}",
                f.kdamonds.len(),
                if f.damon_reclaim_enabled.is_some() {
                    "off"
                } else {
                    "absent"
                }
            )
        };
        return check(ID, Status::Ok, current, rec, "");
    }
    let mut parts: Vec<String> = reclaiming
        .iter()
        .map(|p| format!("{} on with a pageout scheme", p.trim_end_matches("/state")))
        .collect();
    let mut writes: Vec<(String, String)> = reclaiming
        .iter()
        .map(|p| (p.to_string(), "off".to_string()))
        .collect();
    if module_on {
        parts.push("damon_reclaim enabled".into());
        writes.push((DAMON_RECLAIM_ENABLED_PATH.to_string(), "N".to_string()));
    }
    let mut c = check(ID, Status::Warn, parts.join("; "), rec, why);
    c.fix = Some(Fix::writes(writes));
    c
}

#[cfg(test)]
mod tests {
    use super::super::fixture::facts;
    use super::*;
    use crate::host::facts::Kdamond;

    fn kdamond(n: u32, state: &str, actions: &[&str]) -> Kdamond {
        Kdamond {
            state_path: format!("{DAMON_ADMIN_PATH}/{n}/state"),
            state: state.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn a_running_pageout_scheme_is_turned_off() {
        let mut f = facts();
        f.kdamonds = vec![
            kdamond(0, "on", &["pageout"]),
            kdamond(1, "on", &["stat"]),
            kdamond(2, "off", &["pageout"]),
        ];
        f.damon_reclaim_enabled = Some("Y\n".into());
        let c = damon_reclaim(&f);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.current.contains("kdamonds/0 on with a pageout scheme"),
            "{}",
            c.current
        );
        assert!(c.current.contains("damon_reclaim enabled"), "{}", c.current);
        let fix = c.fix.expect("a fix");
        assert_eq!(
            fix.writes,
            vec![
                (format!("{DAMON_ADMIN_PATH}/0/state"), "off".to_string()),
                (DAMON_RECLAIM_ENABLED_PATH.to_string(), "N".to_string()),
            ]
        );
    }

    #[test]
    fn monitoring_without_pageout_is_fine() {
        let mut f = facts();
        assert_eq!(damon_reclaim(&f).status, Status::Ok);
        f.kdamonds = vec![kdamond(0, "on", &["stat"]), kdamond(1, "off", &["pageout"])];
        f.damon_reclaim_enabled = Some("N\n".into());
        let c = damon_reclaim(&f);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.fix.is_none());
    }
}
