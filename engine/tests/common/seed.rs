//! The seed of a randomized test, replayable from the environment.
//!
//! Shared by the engine's tests and the end-to-end tests (`tests/common`
//! includes this file by path), so every randomized test takes its seed the
//! same way: `COREKV_SEED=<n>` replays a run, otherwise a fresh one is drawn.

/// The seed for the test `name`: `COREKV_SEED` if set, else drawn from the
/// clock and the process id. Printed on stderr first, so a failing test's
/// captured output names the seed that replays it.
pub fn seed(name: &str) -> u64 {
    let seed = match std::env::var("COREKV_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("COREKV_SEED={s:?} is not a u64")),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        }
    };
    eprintln!("{name}: COREKV_SEED={seed} replays this run");
    seed
}
