//! A small ext4 file system on a loop device for the tests that need a
//! disk of their own: one that fills up (ENOSPC) or freezes (`fsfreeze`).
//! Shared by the engine's tests and the end-to-end tests (the engine's
//! `tests/common` includes this file by path). Needs root, `losetup`,
//! `mkfs.ext4` and `fsfreeze`; CI runs as root and `./test.sh` installs
//! the packages.

use std::path::Path;
use std::process::Command;

/// A mounted loop ext4, thawed and unmounted on drop.
pub struct LoopFs {
    mount: tempfile::TempDir,
    _image_dir: tempfile::TempDir,
}

impl LoopFs {
    /// A fresh `size_mib` ext4 file system, mounted; panics with what is
    /// missing when it cannot be made.
    pub fn mounted(size_mib: u64) -> LoopFs {
        LoopFs::new(size_mib).unwrap_or_else(|| {
            panic!(
                "could not create and mount a loop ext4 file system (needs root, losetup, mkfs.ext4)"
            )
        })
    }

    fn new(size_mib: u64) -> Option<LoopFs> {
        let image_dir = tempfile::tempdir().ok()?;
        let image = image_dir.path().join("fs.img");
        let mount = tempfile::tempdir().ok()?;
        let made = succeeds(
            Command::new("truncate")
                .args(["-s", &format!("{size_mib}M")])
                .arg(&image),
        ) && succeeds(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))
            && succeeds(
                Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&image)
                    .arg(mount.path()),
            );
        made.then_some(LoopFs {
            mount,
            _image_dir: image_dir,
        })
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Fills the file system with a ballast file until about `room` bytes
    /// are left free; returns the ballast's path (deleting it is how an
    /// operator recovers a full disk).
    pub fn fill_leaving(&self, room: u64) -> std::path::PathBuf {
        let ballast = self.path().join("ballast");
        let free = self.free_bytes().saturating_sub(room);
        std::fs::write(&ballast, vec![1u8; free as usize]).expect("write ballast");
        ballast
    }

    /// Free bytes of the file system (`df`'s "available").
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df's available bytes")
    }

    /// Freezes the file system: every write and sync on it blocks until
    /// the guard is thawed or dropped, as on a disk that stopped
    /// answering. The guard thaws even when a test fails while frozen, so
    /// the processes blocked on the disk can be killed and reaped.
    pub fn freeze(&self) -> Frozen<'_> {
        assert!(
            succeeds(Command::new("fsfreeze").arg("-f").arg(self.path())),
            "fsfreeze -f {} failed (needs root and util-linux)",
            self.path().display()
        );
        Frozen { fs: self }
    }
}

/// A frozen [`LoopFs`]; thawed by [`Frozen::thaw`] or on drop.
pub struct Frozen<'a> {
    fs: &'a LoopFs,
}

impl Frozen<'_> {
    /// Thaws the file system; blocked writes and syncs go on.
    pub fn thaw(self) {
        let path = self.fs.path().to_path_buf();
        std::mem::forget(self);
        assert!(
            succeeds(Command::new("fsfreeze").arg("-u").arg(&path)),
            "fsfreeze -u {} failed",
            path.display()
        );
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(self.fs.path())
            .status();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // A test that failed while frozen must not leave a frozen mount
        // (umount would hang on it); thawing a thawed fs just fails.
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(self.path())
            .stderr(std::process::Stdio::null())
            .status();
        // Lazy: a process may close its last file descriptors a moment later.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn succeeds(c: &mut Command) -> bool {
    c.status().map(|s| s.success()).unwrap_or(false)
}
