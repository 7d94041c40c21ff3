//! The node's reloadable user table: a [`UserStore`] holds the current
//! `Arc<UserTable>` and a generation number that shards read with one
//! atomic load per check, so a reload costs the data path nothing until it
//! happens. [`spawn_watcher`] runs the `corekv-users` thread that reloads
//! the users file on SIGHUP and, every `users_file_check_s` seconds, when
//! the file's mtime or length changed. A file that does not load (parse
//! error, bad hash) keeps the old users and logs one line.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::{AuthError, UserTable};

/// The default of `users_file_check_s`: how often the watcher looks at the users file's mtime and length, in
/// seconds (SIGHUP reloads at once in any case).
pub const USERS_FILE_CHECK_S: u64 = 5;

/// Successful reloads of the users file since the process started
/// (process-wide: one node per process).
pub static USERS_RELOADS: AtomicU64 = AtomicU64::new(0);
/// Reloads that failed and kept the previous users (process-wide).
pub static USERS_RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);

/// The current user table and its generation. Readers get a consistent
/// (generation, table) pair; a reload replaces both at once.
pub struct UserStore {
    current: RwLock<(u64, Arc<UserTable>)>,
    generation: AtomicU64,
    requirepass: Option<String>,
    users_file: Option<PathBuf>,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("generation", &self.generation())
            .field("users_file", &self.users_file)
            .finish_non_exhaustive()
    }
}

impl UserStore {
    /// A store at generation 0 holding `table`, which was loaded from
    /// `requirepass` and `users_file` (what a reload loads again).
    pub fn new(
        table: Arc<UserTable>,
        requirepass: Option<String>,
        users_file: Option<PathBuf>,
    ) -> UserStore {
        UserStore {
            current: RwLock::new((0, table)),
            generation: AtomicU64::new(0),
            requirepass,
            users_file,
        }
    }

    /// The generation of the current table; changes exactly when a reload
    /// replaced it. One atomic load.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current table and its generation.
    pub fn current(&self) -> (u64, Arc<UserTable>) {
        match self.current.read() {
            Ok(g) => (g.0, g.1.clone()),
            Err(poisoned) => {
                let g = poisoned.into_inner();
                (g.0, g.1.clone())
            }
        }
    }

    /// The users file this store reloads, if any.
    pub fn users_file(&self) -> Option<&Path> {
        self.users_file.as_deref()
    }

    /// Loads the users file again. On success the new table replaces the
    /// old one under a new generation and [`USERS_RELOADS`] counts it; on
    /// failure the old table stays, [`USERS_RELOAD_FAILURES`] counts it
    /// and the error is returned (the caller logs it).
    pub fn reload(&self) -> Result<(), AuthError> {
        let loaded = UserTable::load(self.requirepass.as_deref(), self.users_file.as_deref());
        let table = match loaded {
            Ok(Some(t)) => t,
            Ok(None) => UserTable::empty(),
            Err(e) => {
                USERS_RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = guard.0 + 1;
        *guard = (next, Arc::new(table));
        self.generation.store(next, Ordering::Release);
        drop(guard);
        USERS_RELOADS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The users file's identity for change detection: (mtime, length).
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Starts the `corekv-users` thread: reloads `store` on SIGHUP and, when
/// `check_s > 0`, whenever the users file's mtime or length changed (looked
/// at every `check_s` seconds). Ends when `stop` is set (it looks every
/// 100 ms). Installs the SIGHUP handler before returning, so a SIGHUP
/// after this call never kills the process.
pub fn spawn_watcher(
    store: Arc<UserStore>,
    check_s: u64,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
    std::thread::Builder::new()
        .name("corekv-users".into())
        .spawn(move || {
            let path = store.users_file().map(Path::to_path_buf);
            let mut last = path.as_deref().and_then(stamp);
            let mut next_check = Instant::now() + Duration::from_secs(check_s);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let mut due = hup.swap(false, Ordering::Relaxed);
                let why = if due { "SIGHUP" } else { "the file changed" };
                if check_s > 0 && Instant::now() >= next_check {
                    next_check = Instant::now() + Duration::from_secs(check_s);
                    let now = path.as_deref().and_then(stamp);
                    if now != last {
                        due = true;
                    }
                }
                if !due {
                    continue;
                }
                // Stamp before loading: a write racing the load is seen by
                // the next check.
                last = path.as_deref().and_then(stamp);
                match store.reload() {
                    Ok(()) => tracing::info!(
                        trigger = why,
                        generation = store.generation(),
                        "users file reloaded"
                    ),
                    Err(e) => tracing::error!(
                        trigger = why,
                        "users file reload failed, keeping the previous users: {e}"
                    ),
                }
            }
        })
}
