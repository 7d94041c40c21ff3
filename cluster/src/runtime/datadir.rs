//! The node's data directory: one subdirectory per shard, and a metadata
//! file recording the shard count the data was laid out for.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const META_FILE: &str = "corekv.meta";

/// Directory of shard `index`.
pub fn shard_dir(data_dir: &Path, index: usize) -> PathBuf {
    data_dir.join(format!("shard-{index}"))
}

/// Name of the lock file held (flock) by the running node.
const LOCK_FILE: &str = "LOCK";

/// Proof that this process owns the data directory; the lock is released
/// when it is dropped (or the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory's lock, so two nodes can never write the same
/// files (which would corrupt them).
pub fn lock(data_dir: &Path) -> Result<DataDirLock> {
    let path = data_dir.join(LOCK_FILE);
    let err = |reason: String| Error::DataDir {
        path: data_dir.display().to_string(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| err(format!("cannot open {LOCK_FILE}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(err(
            "another corekv process is using it (its LOCK file is held); stop that process or use another --data-dir"
                .into(),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(err(format!("cannot lock {LOCK_FILE}: {e}"))),
    }
}

/// Creates the data directory on first start and records `shards` and a
/// fresh epoch; on later starts refuses a different shard count, because
/// keys are placed on shards by token and would be looked for on the
/// wrong one. Returns the directory's epoch: its incarnation, part of
/// every replica id. A new epoch is drawn when the directory is new, when
/// it was written by a version without epochs, and when a shard's
/// directory is gone or empty (its state was lost): then no dot this node
/// issued before can cover a write it issues now (Riak's KV679).
pub fn prepare(data_dir: &Path, shards: usize) -> Result<u64> {
    let err = |reason: String| Error::DataDir {
        path: data_dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| err(format!("cannot create: {e}")))?;
    let meta = data_dir.join(META_FILE);
    match std::fs::read_to_string(&meta) {
        Ok(text) => {
            let recorded = text
                .lines()
                .find_map(|l| l.strip_prefix("shards = "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    err(format!(
                        "{} is damaged: no `shards = N` line",
                        meta.display()
                    ))
                })?;
            if recorded != shards {
                return Err(err(format!(
                    "it was created with {recorded} shards but this node starts {shards}; \
                     start with --shards {recorded} (resharding a data directory is not supported)"
                )));
            }
            let epoch = text
                .lines()
                .find_map(|l| l.strip_prefix("epoch = "))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
            let lost = (0..shards).find(|&i| {
                std::fs::read_dir(shard_dir(data_dir, i)).map_or(true, |mut d| d.next().is_none())
            });
            match (epoch, lost) {
                (Some(epoch), None) => Ok(epoch),
                (old, lost) => {
                    if let Some(i) = lost {
                        tracing::warn!(
                            shard = i,
                            "shard {i}'s data directory is missing or empty: its state was lost; \
                             this node starts a new epoch so its new writes cannot be mistaken for old ones"
                        );
                    }
                    let epoch = fresh_epoch(old);
                    write_meta(&meta, shards, epoch)
                        .map_err(|e| err(format!("cannot write {META_FILE}: {e}")))?;
                    Ok(epoch)
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_shards = std::fs::read_dir(data_dir)
                .map_err(|e| err(e.to_string()))?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("shard-"));
            if has_shards {
                return Err(err(format!(
                    "{META_FILE} is missing but shard directories exist"
                )));
            }
            let epoch = fresh_epoch(None);
            write_meta(&meta, shards, epoch)
                .map_err(|e| err(format!("cannot write {META_FILE}: {e}")))?;
            Ok(epoch)
        }
        Err(e) => Err(err(format!("cannot read {META_FILE}: {e}"))),
    }
}

fn write_meta(meta: &Path, shards: usize, epoch: u64) -> std::io::Result<()> {
    let text = format!(
        "# written by corekv; do not edit\nformat = 1\nshards = {shards}\nepoch = {epoch:016x}\n"
    );
    write_atomically(meta, text.as_bytes())
}

/// A random epoch (from the kernel's random pool; the time and process id
/// if that is unreadable), never equal to `old`.
fn fresh_epoch(old: Option<u64>) -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let mut epoch = match random {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        }
    };
    if Some(epoch) == old {
        epoch = epoch.wrapping_add(1);
    }
    epoch
}

/// Name of the marker a running node keeps in its data directory, holding
/// the kernel's boot id of the run.
const RUNNING_FILE: &str = "RUNNING";

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether the last run of this data directory ended with the machine
/// (not just the process) going down while it ran: its `RUNNING` marker is
/// still there and names another boot. In `periodic` mode such a node may
/// have lost acknowledged writes its peers still hold, so it must start a
/// new epoch; a process crash loses nothing (the kernel had the writes).
pub fn lost_power_while_running(data_dir: &Path) -> bool {
    match std::fs::read_to_string(data_dir.join(RUNNING_FILE)) {
        Ok(recorded) => recorded.trim() != boot_id(),
        Err(_) => false,
    }
}

/// Records that the node runs (in this boot), until [`mark_stopped`].
pub fn mark_running(data_dir: &Path) -> std::io::Result<()> {
    write_atomically(&data_dir.join(RUNNING_FILE), boot_id().as_bytes())
}

/// Removes the running marker after a clean stop.
pub fn mark_stopped(data_dir: &Path) -> std::io::Result<()> {
    std::fs::remove_file(data_dir.join(RUNNING_FILE))
}

/// Draws a new epoch for the data directory (see [`prepare`]) and returns it.
pub fn renew_epoch(data_dir: &Path, shards: usize, old: u64) -> Result<u64> {
    let epoch = fresh_epoch(Some(old));
    write_meta(&data_dir.join(META_FILE), shards, epoch).map_err(|e| Error::DataDir {
        path: data_dir.display().to_string(),
        reason: format!("cannot write {META_FILE}: {e}"),
    })?;
    Ok(epoch)
}

/// Replaces `path` with `bytes` so that a crash leaves the old content or
/// the new, never a mix: a temporary file beside it, fsync, rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock(dir.path()).expect("first lock");
        let e = lock(dir.path()).expect_err("second lock");
        assert!(e.to_string().contains("another corekv process"), "{e}");
        drop(held);
        lock(dir.path()).expect("lock after release");
    }

    #[test]
    fn the_epoch_is_stable_until_a_shard_loses_its_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = prepare(dir.path(), 2).expect("first start");
        for i in 0..2 {
            let shard = shard_dir(dir.path(), i);
            std::fs::create_dir_all(&shard).expect("shard dir");
            std::fs::write(shard.join("MANIFEST"), b"x").expect("a file");
        }
        assert_eq!(prepare(dir.path(), 2).expect("restart"), first);
        std::fs::remove_dir_all(shard_dir(dir.path(), 1)).expect("lose shard 1");
        let second = prepare(dir.path(), 2).expect("restart after loss");
        assert_ne!(second, first, "lost state means a new incarnation");
        std::fs::create_dir_all(shard_dir(dir.path(), 1)).expect("shard dir");
        std::fs::write(shard_dir(dir.path(), 1).join("MANIFEST"), b"x").expect("a file");
        assert_eq!(prepare(dir.path(), 2).expect("restart"), second);
        let wiped = tempfile::tempdir().expect("tempdir");
        assert_ne!(prepare(wiped.path(), 2).expect("new dir"), first);
    }

    #[test]
    fn a_marker_from_another_boot_means_the_machine_went_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!lost_power_while_running(dir.path()), "never ran");
        mark_running(dir.path()).expect("mark");
        assert!(
            !lost_power_while_running(dir.path()),
            "same boot: a process crash"
        );
        std::fs::write(dir.path().join(RUNNING_FILE), "another-boot").expect("write");
        assert!(lost_power_while_running(dir.path()));
        mark_stopped(dir.path()).expect("stop");
        assert!(!lost_power_while_running(dir.path()), "stopped cleanly");
        let epoch = prepare(dir.path(), 1).expect("prepare");
        assert_ne!(renew_epoch(dir.path(), 1, epoch).expect("renew"), epoch);
    }

    #[test]
    fn refuses_a_different_shard_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(dir.path(), 2).expect("first start");
        for i in 0..2 {
            std::fs::create_dir_all(shard_dir(dir.path(), i)).expect("shard dir");
            std::fs::write(shard_dir(dir.path(), i).join("f"), b"x").expect("a file");
        }
        prepare(dir.path(), 2).expect("same count");
        let e = prepare(dir.path(), 3).expect_err("different count");
        assert!(e.to_string().contains("--shards 2"), "{e}");
    }
}
