//! NIC interrupt placement against the CPUs the shards run on.

use super::{check, Check, Status};
use crate::host::facts::{HostFacts, Placement};
use crate::host::parse;

/// The CPUs shards run on: `--cpus`, else the first `--shards` online
/// CPUs, else every online CPU.
pub fn shard_cpus(online: &[usize], placement: &Placement) -> Vec<usize> {
    if let Some(cpus) = &placement.cpus {
        return cpus.clone();
    }
    match placement.shards {
        Some(n) if n > 0 => online.iter().copied().take(n).collect(),
        _ => online.to_vec(),
    }
}

/// The host's CPUs by role: the shards' and the rest (spare).
pub(super) struct CpuRoles {
    pub(super) shards: Vec<usize>,
    pub(super) spare: Vec<usize>,
}

/// Splits the online CPUs into the shards' and the spare ones.
pub(super) fn cpu_roles(f: &HostFacts, placement: &Placement) -> CpuRoles {
    let online = f
        .online_cpus
        .as_deref()
        .and_then(|t| parse::cpu_list(t).ok())
        .unwrap_or_default();
    let shards = shard_cpus(&online, placement);
    let spare = online
        .iter()
        .copied()
        .filter(|c| !shards.contains(c))
        .collect();
    CpuRoles { shards, spare }
}

pub(super) fn nic_irqs(f: &HostFacts, placement: &Placement) -> Check {
    let CpuRoles { shards, spare } = cpu_roles(f, placement);
    let rec = format!(
        "NIC IRQs outside shard CPUs {}",
        parse::format_cpu_list(&shards)
    );
    let Some(text) = &f.interrupts else {
        return check(
            "nic_irqs",
            Status::Unknown,
            "/proc/interrupts not readable",
            rec,
            "",
        );
    };
    let irqs = parse::nic_irqs(&parse::interrupts(text), &f.nic_ids);
    if irqs.is_empty() {
        return check(
            "nic_irqs",
            Status::Unknown,
            format!(
                "no NIC interrupts found (interfaces: {})",
                f.nic_ids.join(", ")
            ),
            rec,
            "no per-queue IRQs of a physical or virtio NIC in /proc/interrupts",
        );
    }
    let mut parts = Vec::new();
    let mut clash = Vec::new();
    for l in &irqs {
        match f.irq_affinity.get(&l.irq).map(|t| parse::cpu_list(t)) {
            Some(Ok(cpus)) => {
                if cpus.iter().any(|c| shards.contains(c)) {
                    clash.push(l.irq);
                }
                parts.push(format!(
                    "{} {}→{}",
                    l.irq,
                    l.name,
                    parse::format_cpu_list(&cpus)
                ));
            }
            _ => parts.push(format!("{} {}→?", l.irq, l.name)),
        }
    }
    let current = parts.join("; ");
    if clash.is_empty() {
        let status = if parts.iter().any(|p| p.ends_with('?')) {
            Status::Unknown
        } else {
            Status::Ok
        };
        return check(
            "nic_irqs",
            status,
            current,
            rec,
            "interrupt work stays off the shards' cores",
        );
    }
    let advice = if spare.is_empty() {
        "every online CPU runs a shard (normal on small hosts); pass --cpus to leave one for interrupts".to_string()
    } else {
        format!(
            "move them to {} (echo {} > /proc/irq/N/smp_affinity_list, and ban shard CPUs in irqbalance)",
            parse::format_cpu_list(&spare),
            parse::format_cpu_list(&spare)
        )
    };
    check(
        "nic_irqs",
        Status::Warn,
        current,
        rec,
        format!(
            "IRQs {clash:?} may run on shard CPUs: packet processing preempts the pinned shard and shows in its p99; {advice}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixture::facts;
    use super::*;

    #[test]
    fn nic_irqs_against_shard_cpus() {
        let f = facts();
        // Default: shards on every online CPU (0-3): IRQs on 0-1 and 1 clash.
        let c = nic_irqs(&f, &Placement::default());
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.current.contains("38 virtio2-input.0→0-1"),
            "{}",
            c.current
        );
        assert!(c.why.contains("every online CPU runs a shard"), "{}", c.why);
        // Shards on 2-3: no clash.
        let c = nic_irqs(
            &f,
            &Placement {
                cpus: Some(vec![2, 3]),
                shards: None,
            },
        );
        assert_eq!(c.status, Status::Ok, "{c:?}");
        // Two shards take CPUs 0-1: clash, and 2-3 are spare.
        let c = nic_irqs(
            &f,
            &Placement {
                cpus: None,
                shards: Some(2),
            },
        );
        assert_eq!(c.status, Status::Warn);
        assert!(c.why.contains("move them to 2-3"), "{}", c.why);
        let mut none = f.clone();
        none.nic_ids = vec!["eth9".into()];
        assert_eq!(
            nic_irqs(&none, &Placement::default()).status,
            Status::Unknown
        );
        assert_eq!(
            shard_cpus(
                &[0, 1, 2],
                &Placement {
                    cpus: None,
                    shards: Some(9)
                }
            ),
            vec![0, 1, 2]
        );
    }
}
