//! Which shards have died, for the node's supervisor and `/health`.
//!
//! A panic on a shard thread unwinds out of its glommio executor (glommio
//! closes the panicking task and re-raises the panic into `run`), so the
//! thread ends while the other shards, gossip and the admin endpoint keep
//! going: a zombie node that gossips "up" while a slice of its keys has no
//! shard. A process-wide panic hook records the panic (shard index and
//! message) in the node's [`ShardHealth`] before the thread unwinds and
//! asks the node to stop: the other shards drain and flush, gossip tells
//! the peers goodbye, `/health` names the dead shard meanwhile, and
//! `node::run` returns an error so the process exits non-zero (and
//! systemd's `Restart=on-failure` starts it again, replaying its log).
//! Should the stop itself hang, a watchdog exits the process after
//! [`SHUTDOWN_BOUND`].

use std::cell::RefCell;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use super::node::StopHandle;

/// How long a node that lost a shard may take to stop before the watchdog
/// ends the process: the drain (10 s) plus time to flush.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(30);
/// The exit status the watchdog uses (EX_SOFTWARE).
const WATCHDOG_EXIT_CODE: i32 = 70;

/// The node's record of dead shards. Shared by `Arc`; written only when a
/// shard dies, so the lock is never on a request path.
#[derive(Default)]
pub struct ShardHealth {
    dead: Mutex<Vec<(usize, String)>>,
    stop: StopHandle,
    /// How long after the first death the watchdog ends the process
    /// (None: no watchdog, for tests that run in the test binary).
    watchdog_after: Option<Duration>,
}

impl ShardHealth {
    /// The health record of a node that `stop` stops.
    pub fn new(stop: StopHandle) -> ShardHealth {
        ShardHealth {
            stop,
            watchdog_after: Some(SHUTDOWN_BOUND),
            ..ShardHealth::default()
        }
    }

    /// Records that `shard` died, and why, and stops the node; the first
    /// death also starts the watchdog that bounds the stop.
    pub fn shard_died(&self, shard: usize, why: String) {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        let first = dead.is_empty();
        if !dead.iter().any(|(s, _)| *s == shard) {
            dead.push((shard, why));
        }
        drop(dead);
        self.stop.stop();
        if let Some(bound) = self.watchdog_after.filter(|_| first) {
            let watchdog = std::thread::Builder::new()
                .name("corekv-watchdog".into())
                .spawn(move || {
                    std::thread::sleep(bound);
                    tracing::error!(
                        "the node did not stop within {} s of a shard's death: exiting",
                        bound.as_secs()
                    );
                    std::process::exit(WATCHDOG_EXIT_CODE);
                });
            if let Err(e) = watchdog {
                tracing::error!(error = %e, "could not start the stop watchdog");
            }
        }
    }

    /// The dead shards and why each died, in the order they died.
    pub fn dead(&self) -> Vec<(usize, String)> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

thread_local! {
    /// Set on a shard thread once it knows its index: where the panic hook
    /// records a panic of this thread.
    static SHARD: RefCell<Option<(usize, Arc<ShardHealth>)>> = const { RefCell::new(None) };
}

/// Marks the calling thread as shard `index` of the node whose health is
/// `health` (called by the shard at start).
pub fn enter_shard(index: usize, health: Arc<ShardHealth>) {
    SHARD.with(|s| *s.borrow_mut() = Some((index, health)));
}

/// Installs (once per process) a panic hook that records panics of shard
/// threads, then runs the hook that was there before (which prints the
/// message and, with RUST_BACKTRACE, the backtrace). Panics elsewhere are
/// left to the previous hook alone.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic payload".into());
            let why = match info.location() {
                Some(l) => format!("panicked at {}:{}: {message}", l.file(), l.line()),
                None => format!("panicked: {message}"),
            };
            // `try_with`: a panic while the thread's locals are being torn
            // down must not panic again inside the hook.
            let _ = SHARD.try_with(|s| {
                if let Ok(s) = s.try_borrow() {
                    if let Some((index, health)) = s.as_ref() {
                        tracing::error!(shard = index, "shard {index} {why}; stopping the node");
                        health.shard_died(*index, why.clone());
                    }
                }
            });
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_on_a_shard_thread_is_recorded_with_its_message() {
        install_panic_hook();
        let stop = StopHandle::default();
        let health = Arc::new(ShardHealth {
            stop: stop.clone(),
            ..ShardHealth::default()
        });
        let h = health.clone();
        let outcome = std::thread::spawn(move || {
            enter_shard(3, h);
            panic!("boom {}", 42);
        })
        .join();
        assert!(outcome.is_err());
        assert!(!health.dead().is_empty(), "the death is recorded");
        assert!(stop.is_stopped(), "a shard's death stops the node");
        let dead = health.dead();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0, 3);
        assert!(dead[0].1.contains("boom 42"), "{dead:?}");
        assert!(dead[0].1.contains("health.rs"), "{dead:?}");
        // A panic on a thread that is not a shard is not recorded.
        let _ = std::thread::spawn(|| panic!("elsewhere")).join();
        assert_eq!(health.dead().len(), 1);
    }
}
