//! The gossip generation this node announces, kept monotonic across
//! restarts.
//!
//! Peers order what they hear about a node by `(generation, version)` and
//! `(generation, heartbeat)`: a restarted node must announce a larger
//! generation than its previous life, or peers keep its old state (and
//! ignore its new heartbeats and metadata until the old generation is
//! beaten). The generation is the start's wall-clock millisecond; after a
//! clock step backwards (NTP correcting a fast clock, a VM restored from a
//! snapshot) that would be smaller than the last one. So the last
//! generation used is saved in the data directory (`gossip-generation`)
//! and a start uses `max(now, saved + 1)`.

use std::path::Path;

use crate::error::{Error, Result};

/// The file in the data directory holding the last generation used.
pub const FILE: &str = "gossip-generation";

/// Picks this start's generation from the clock reading `now_ms` and the
/// one saved in `data_dir` (if any), saves it, and returns it. A saved file
/// that cannot be read or parsed is an error: starting with a possibly
/// smaller generation would silently make peers ignore this node.
pub fn next(data_dir: &Path, now_ms: u64) -> Result<u64> {
    let path = data_dir.join(FILE);
    let saved = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().parse::<u64>().map_err(|e| Error::DataDir {
            path: path.display().to_string(),
            reason: format!("not a generation number ({e}); remove the file only if the clock is known to be right"),
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source: e,
            })
        }
    };
    let generation = choose(now_ms, saved);
    save(data_dir, generation)?;
    Ok(generation)
}

/// `max(now, saved + 1)`; saturating, so a corrupt huge saved value still
/// yields a number (u64::MAX) rather than wrapping to a small one.
pub fn choose(now_ms: u64, saved: Option<u64>) -> u64 {
    match saved {
        Some(s) => now_ms.max(s.saturating_add(1)),
        None => now_ms,
    }
}

/// Writes `generation` atomically (the data directory's
/// `write_atomically`), then fsyncs the directory so the rename itself
/// survives a power loss and the next start never sees an older value.
fn save(data_dir: &Path, generation: u64) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::Io {
        context: format!("{what} {}", data_dir.join(FILE).display()),
        source: e,
    };
    crate::runtime::datadir::write_atomically(
        &data_dir.join(FILE),
        format!("{generation}\n").as_bytes(),
    )
    .map_err(|e| io("writing", e))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing the directory of", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_is_the_clock_unless_a_saved_one_is_not_older() {
        assert_eq!(choose(1_000, None), 1_000);
        assert_eq!(choose(1_000, Some(10)), 1_000);
        assert_eq!(choose(1_000, Some(1_000)), 1_001);
        // The clock stepped back by an hour: still one past the saved one.
        assert_eq!(choose(1_000, Some(3_600_000)), 3_600_001);
        assert_eq!(choose(5, Some(u64::MAX)), u64::MAX);
    }

    #[test]
    fn starts_after_a_clock_step_back_still_increase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = next(dir.path(), 2_000_000).expect("first start");
        assert_eq!(first, 2_000_000);
        // A saved generation from the "future" (the clock stepped back).
        std::fs::write(dir.path().join(FILE), "9000000000000\n").expect("write");
        let a = next(dir.path(), 2_000_001).expect("start after the step");
        assert_eq!(a, 9_000_000_000_001);
        let b = next(dir.path(), 2_000_002).expect("another start");
        assert!(b > a, "{b} > {a}");
        let saved = std::fs::read_to_string(dir.path().join(FILE)).expect("read");
        assert_eq!(saved.trim().parse::<u64>().expect("number"), b);
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
    }

    #[test]
    fn an_unreadable_saved_generation_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), "garbage").expect("write");
        let err = next(dir.path(), 1).expect_err("garbage is refused");
        assert!(err.to_string().contains("gossip-generation"), "{err}");
    }
}
