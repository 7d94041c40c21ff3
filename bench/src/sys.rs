//! Operating-system glue: CPU pinning and timer precision, a small epoll
//! wrapper, and Ctrl-C handling.

fn set_affinity(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The calling thread's CPU affinity, if the kernel reports it.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its
    // size into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        (libc::sched_getaffinity(0, size, &mut set) == 0).then_some(set)
    }
}

/// The calling thread's CPU affinity, pinned to `cpu` while this lives and
/// restored on drop (best effort both ways).
pub(crate) struct PinnedThread {
    saved: Option<libc::cpu_set_t>,
}

impl PinnedThread {
    /// Pins the calling thread to `cpu`, if given.
    pub(crate) fn to(cpu: Option<usize>) -> PinnedThread {
        let Some(cpu) = cpu else {
            return PinnedThread { saved: None };
        };
        let saved = affinity();
        set_affinity(cpu);
        PinnedThread { saved }
    }
}

impl Drop for PinnedThread {
    fn drop(&mut self) {
        if let Some(set) = &self.saved {
            // SAFETY: `set` is a valid cpu_set_t read by the call only.
            unsafe {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
            }
        }
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

/// A minimal epoll instance: readiness for many sockets in O(ready).
pub(crate) struct Epoll {
    fd: std::os::fd::OwnedFd,
}

fn cvt(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Epoll {
    /// A new epoll instance.
    pub(crate) fn new() -> std::io::Result<Epoll> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 has no memory arguments.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd was just created and is owned by nothing else.
        Ok(Epoll {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ctl(&self, op: libc::c_int, fd: i32, token: u64, out: bool) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32
                | if out { libc::EPOLLOUT as u32 } else { 0 },
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    /// Watches `fd` for input (and output if `out`), reported as `token`.
    pub(crate) fn add(&self, fd: i32, token: u64, out: bool) -> std::io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, out)
    }

    /// Changes whether output readiness is wanted.
    pub(crate) fn modify(&self, fd: i32, token: u64, out: bool) -> std::io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, out)
    }

    /// Stops watching `fd`.
    pub(crate) fn delete(&self, fd: i32) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, false);
    }

    /// Waits up to `timeout_ns` (0: just check) and fills `ready` with
    /// `(token, events)`.
    pub(crate) fn wait(
        &self,
        buf: &mut [libc::epoll_event],
        ready: &mut Vec<(u64, u32)>,
        timeout_ns: u64,
    ) {
        use std::os::fd::AsRawFd;
        ready.clear();
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: buf is a valid, writable array of buf.len() events; ts
        // outlives the call; a null sigmask leaves signals alone.
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len() as libc::c_int,
                &ts,
                std::ptr::null(),
            )
        };
        for ev in buf.iter().take(n.max(0) as usize) {
            let (token, events) = (ev.u64, ev.events);
            ready.push((token, events));
        }
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Makes Ctrl-C (SIGINT) end the run early, with its results reported,
/// instead of killing the process. A second Ctrl-C kills it.
pub fn stop_on_ctrl_c() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe);
    // SA_RESETHAND restores the default action after the first signal.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

/// Whether Ctrl-C was pressed since [`stop_on_ctrl_c`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_cpus() -> Vec<usize> {
        let set = affinity().expect("the thread's affinity");
        // SAFETY: CPU_ISSET only reads the set.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    #[test]
    fn a_pinned_thread_runs_on_its_cpu_and_gets_its_affinity_back() {
        std::thread::spawn(|| {
            let before = allowed_cpus();
            let cpu = before[before.len() - 1];
            {
                let _pinned = PinnedThread::to(Some(cpu));
                assert_eq!(allowed_cpus(), vec![cpu]);
            }
            assert_eq!(allowed_cpus(), before);
            let _unpinned = PinnedThread::to(None);
            assert_eq!(allowed_cpus(), before);
        })
        .join()
        .expect("the test thread");
    }
}
