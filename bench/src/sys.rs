//! Thread placement: CPU pinning and timer precision.

fn set_affinity(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Pins the calling thread to `cpu` (best effort) and makes its timer
/// wake-ups precise (1 ns slack instead of 50 µs).
pub fn pin_and_tune(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        set_affinity(cpu);
    }
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}
