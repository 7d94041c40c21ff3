//! What `corekv tune io` must clean up: the test file (removed on drop)
//! and SIGINT (caught while measuring, so Ctrl-C ends the run through the
//! normal error path and the file is removed).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT while alive; restores the previous handler on drop.
pub(crate) struct SigintGuard {
    old: libc::sigaction,
}

impl SigintGuard {
    pub(crate) fn install() -> SigintGuard {
        INTERRUPTED.store(false, Ordering::SeqCst);
        // SAFETY: plain sigaction calls with zero-initialised structs; the
        // handler only stores to an atomic (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGINT, &sa, &mut old);
            SigintGuard { old }
        }
    }
}

impl Drop for SigintGuard {
    fn drop(&mut self) {
        // SAFETY: restores the handler saved by `install`.
        unsafe {
            libc::sigaction(libc::SIGINT, &self.old, std::ptr::null_mut());
        }
    }
}

/// The test file; removed on drop.
pub(crate) struct TestFile {
    path: PathBuf,
    pub(crate) file: File,
}

impl TestFile {
    pub(crate) fn create(dir: &Path) -> Result<TestFile> {
        let path = test_file_path(dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EINVAL) {
                    " (the filesystem does not support O_DIRECT, e.g. tmpfs; measure the real data directory)"
                } else {
                    ""
                };
                Error::io(format!("creating test file {}{hint}", path.display()), e)
            })?;
        Ok(TestFile { path, file })
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Path of the test file `run` uses in `dir` (for tests and messages).
pub fn test_file_path(dir: &Path) -> PathBuf {
    dir.join(format!(".corekv-tune-io-{}.tmp", std::process::id()))
}

/// True once SIGINT arrived during the run.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once SIGINT arrived.
pub(crate) fn check_interrupted() -> Result<()> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}
