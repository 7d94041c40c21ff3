//! CPU idle states: how long a shard CPU takes to wake up.
//!
//! A shard that waits for its next request lets its CPU go idle, and the
//! request that ends the wait pays for the CPU's way back: the exit
//! latency of a deep C-state on bare metal, or on a VM whose `haltpoll`
//! driver does not poll, a halt and a trip through the hypervisor (and
//! the sender of the wake-up pays for the interrupt that starts it).

use super::{check, Check, Fix, Status};
use crate::host::facts::{HostFacts, IdleState};

/// Deepest idle-state exit latency, in µs, that does not show in a
/// request's latency budget (C1/C1E on current server CPUs are 1–10 µs).
pub const IDLE_EXIT_LATENCY_US_MAX: u64 = 20;

/// The `haltpoll` guest driver's poll window parameter.
pub const HALT_POLL_NS_PATH: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// The kernel's default poll window for `haltpoll`: 200 µs.
pub const HALT_POLL_NS_DEFAULT: u64 = 200_000;

pub(super) fn cpu_idle(f: &HostFacts) -> Check {
    const ID: &str = "cpu_idle";
    let driver = f.cpuidle_driver.as_deref().map(str::trim);
    match driver {
        None | Some("") | Some("none") => check(
            ID,
            Status::Unknown,
            "no cpuidle driver",
            format!("idle states that wake within {IDLE_EXIT_LATENCY_US_MAX} µs"),
            "without a cpuidle driver the CPU idles with the architecture's default (a halt); on a VM every wake-up then goes through the hypervisor",
        ),
        Some("haltpoll") => halt_poll(f),
        Some(driver) => deepest_state(driver, &f.idle_states),
    }
}

fn halt_poll(f: &HostFacts) -> Check {
    const ID: &str = "cpu_idle";
    let recommended = format!(
        "guest_halt_poll_ns ≥ {HALT_POLL_NS_DEFAULT}, the kernel's default (at boot: haltpoll.guest_halt_poll_ns={HALT_POLL_NS_DEFAULT})"
    );
    let why = "on a VM the haltpoll driver polls for this long before it halts the vCPU; at 0 every idle gap is a halt, and each wake-up (a request arriving, a peer's answer) goes through the hypervisor: on a test VM a hand-off through three processes took 68 µs instead of 7 µs";
    let Some(raw) = f.guest_halt_poll_ns.as_deref() else {
        return check(
            ID,
            Status::Unknown,
            format!("haltpoll; {HALT_POLL_NS_PATH} unreadable"),
            recommended,
            why,
        );
    };
    let current = format!("haltpoll, guest_halt_poll_ns = {}", raw.trim());
    match raw.trim().parse::<u64>() {
        Ok(0) => {
            let mut c = check(ID, Status::Warn, current, recommended, why);
            c.fix = Some(Fix::writes(vec![(
                HALT_POLL_NS_PATH.to_string(),
                HALT_POLL_NS_DEFAULT.to_string(),
            )]));
            c
        }
        Ok(_) => check(ID, Status::Ok, current, recommended, why),
        Err(_) => check(ID, Status::Unknown, current, recommended, why),
    }
}

fn deepest_state(driver: &str, states: &[IdleState]) -> Check {
    const ID: &str = "cpu_idle";
    let recommended = format!(
        "enabled idle states wake within {IDLE_EXIT_LATENCY_US_MAX} µs (tuned's latency-performance profile, or intel_idle.max_cstate=1)"
    );
    let why = "a request that arrives while its shard's CPU sleeps in a deep C-state waits for the CPU's exit latency first";
    let deepest = states
        .iter()
        .filter(|s| !s.disabled)
        .max_by_key(|s| s.exit_latency_us);
    let Some(deepest) = deepest else {
        return check(
            ID,
            Status::Unknown,
            format!("{driver}: no idle states listed"),
            recommended,
            why,
        );
    };
    let current = format!(
        "{driver}: deepest enabled {} ({} µs)",
        deepest.name, deepest.exit_latency_us
    );
    let status = if deepest.exit_latency_us <= IDLE_EXIT_LATENCY_US_MAX {
        Status::Ok
    } else {
        Status::Warn
    };
    check(ID, status, current, recommended, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::checks::fixture::facts;

    fn state(name: &str, exit_latency_us: u64, disabled: bool) -> IdleState {
        IdleState {
            name: name.into(),
            exit_latency_us,
            disabled,
        }
    }

    #[test]
    fn haltpoll_without_polling_warns_and_offers_the_kernel_default() {
        let mut f = facts();
        f.cpuidle_driver = Some("haltpoll\n".into());
        f.guest_halt_poll_ns = Some("0\n".into());
        let c = cpu_idle(&f);
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.current, "haltpoll, guest_halt_poll_ns = 0");
        let fix = c.fix.expect("a safe fix");
        assert_eq!(
            fix.writes,
            vec![(HALT_POLL_NS_PATH.to_string(), "200000".to_string())]
        );

        f.guest_halt_poll_ns = Some("200000\n".into());
        assert_eq!(cpu_idle(&f).status, Status::Ok);
        f.guest_halt_poll_ns = None;
        assert_eq!(cpu_idle(&f).status, Status::Unknown);
        f.guest_halt_poll_ns = Some("lots".into());
        assert_eq!(cpu_idle(&f).status, Status::Unknown);
    }

    #[test]
    fn deep_c_states_warn_unless_disabled() {
        let mut f = facts();
        f.cpuidle_driver = Some("intel_idle".into());
        f.idle_states = vec![
            state("POLL", 0, false),
            state("C1", 2, false),
            state("C1E", 10, false),
            state("C6", 133, false),
        ];
        let c = cpu_idle(&f);
        assert_eq!(c.status, Status::Warn);
        assert_eq!(c.current, "intel_idle: deepest enabled C6 (133 µs)");
        assert!(
            c.fix.is_none(),
            "C-state limits are a boot or tuned setting"
        );

        f.idle_states[3].disabled = true;
        let c = cpu_idle(&f);
        assert_eq!(c.status, Status::Ok);
        assert_eq!(c.current, "intel_idle: deepest enabled C1E (10 µs)");

        f.idle_states.clear();
        assert_eq!(cpu_idle(&f).status, Status::Unknown);
        f.cpuidle_driver = None;
        assert_eq!(cpu_idle(&f).status, Status::Unknown);
    }
}
