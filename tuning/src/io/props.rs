//! The io properties file: what `corekv tune io` measured and what it
//! recommends, in TOML, read by `corekv serve`.
//!
//! Guarantees: [`IoProperties::save`] writes a file that
//! [`IoProperties::load`] reads back equal (round trip); `load` accepts only
//! a file of [`FORMAT_VERSION`] whose figures are finite, non-negative and
//! whose recommendations are within [`super::recommend`]'s bounds, and
//! otherwise returns [`Error::InvalidProperties`] naming the file and the
//! problem. Unknown keys are errors, so a typo never passes silently.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::recommend;
use crate::error::{Error, Result};

/// The file format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Name of the file in the data directory that `corekv serve` picks up
/// when no path is configured.
pub const DEFAULT_FILE_NAME: &str = "io-properties.toml";

/// The default location of the file for a data directory.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DEFAULT_FILE_NAME)
}

/// Everything in an io properties file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoProperties {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// When the measurement ran, seconds since the Unix epoch.
    pub measured_unix_s: u64,
    /// The directory measured.
    pub data_dir: String,
    /// Size of the test file written and read.
    pub test_file_bytes: u64,
    /// Wall time the measurement took, seconds.
    pub duration_s: f64,
    /// Sequential bandwidth.
    pub sequential: Sequential,
    /// Random 4 KiB reads, one entry per queue depth, ascending.
    pub random_read: Vec<RandomRead>,
    /// fdatasync after a 4 KiB write.
    pub fdatasync: Fdatasync,
    /// Settings derived from the figures.
    pub recommended: Recommended,
}

/// Sequential bandwidth with large O_DIRECT transfers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sequential {
    /// Size of one transfer.
    pub block_bytes: u64,
    /// Transfers in flight.
    pub queue_depth: u32,
    /// Write bandwidth including the closing fdatasync, bytes/s.
    pub write_bytes_per_s: f64,
    /// Read bandwidth, bytes/s.
    pub read_bytes_per_s: f64,
}

/// Random 4 KiB O_DIRECT reads at one queue depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomRead {
    /// Reads kept in flight.
    pub queue_depth: u32,
    /// Reads completed.
    pub ops: u64,
    /// Reads per second.
    pub iops: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
}

/// fdatasync latency, each after a 4 KiB O_DIRECT append (as the commit
/// log does: the sync also persists the new file size).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fdatasync {
    /// Syncs measured.
    pub count: u64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
}

/// Settings for `corekv serve`, derived by [`super::recommend`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recommended {
    /// Upper bound of one commit-log group-commit batch, bytes. `serve`
    /// raises it to one maximal record if the configured key and value
    /// limits need more.
    pub commit_batch_bytes_max: u64,
    /// Table-block reads a shard keeps in flight at most.
    pub io_queue_depth_per_shard: u32,
}

impl IoProperties {
    /// The file's text: a header comment, then the TOML.
    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string(self)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode io properties: {e}")))?;
        let newline = if body.ends_with('\n') { "" } else { "\n" };
        Ok(format!(
            "# corekv io properties, written by `corekv tune io`; read by `corekv serve`.\n\
             # Re-run the measurement rather than editing figures by hand.\n{body}{newline}"
        ))
    }

    /// Parses and validates file text; `path` only names the file in errors.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<IoProperties> {
        let invalid = |reason: String| Error::InvalidProperties {
            path: path.to_path_buf(),
            reason,
        };
        // Check the version first, so a future format says so instead of
        // failing on a field this build does not know.
        let table: toml::Table = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        match table.get("format_version").and_then(toml::Value::as_integer) {
            Some(v) if v == i64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(invalid(format!(
                    "format_version {v} is not supported (this build reads {FORMAT_VERSION}); re-run `corekv tune io`"
                )))
            }
            None => return Err(invalid("format_version is missing".into())),
        }
        let props: IoProperties = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        props.validate().map_err(invalid)?;
        Ok(props)
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<IoProperties> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("io properties file {}", path.display()), e))?;
        IoProperties::from_toml_str(&text, path)
    }

    /// Writes the file atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let text = self.to_toml()?;
        let tmp = path.with_extension("toml.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), e)
        })
    }

    /// Checks ranges; returns what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let figures = [
            ("duration_s", self.duration_s),
            (
                "sequential.write_bytes_per_s",
                self.sequential.write_bytes_per_s,
            ),
            (
                "sequential.read_bytes_per_s",
                self.sequential.read_bytes_per_s,
            ),
            ("fdatasync.p50_us", self.fdatasync.p50_us),
            ("fdatasync.p99_us", self.fdatasync.p99_us),
        ];
        for (name, v) in figures {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} = {v} is not a finite non-negative number"));
            }
        }
        for r in &self.random_read {
            for (name, v) in [("iops", r.iops), ("p50_us", r.p50_us), ("p99_us", r.p99_us)] {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!(
                        "random_read at queue_depth {}: {name} = {v} is not a finite non-negative number",
                        r.queue_depth
                    ));
                }
            }
        }
        let batch = self.recommended.commit_batch_bytes_max;
        if !(recommend::BATCH_BYTES_MIN..=recommend::BATCH_BYTES_MAX).contains(&batch) {
            return Err(format!(
                "recommended.commit_batch_bytes_max = {batch} not in {}..={}",
                recommend::BATCH_BYTES_MIN,
                recommend::BATCH_BYTES_MAX
            ));
        }
        let qd = self.recommended.io_queue_depth_per_shard;
        if !(1..=recommend::QUEUE_DEPTH_MAX).contains(&qd) {
            return Err(format!(
                "recommended.io_queue_depth_per_shard = {qd} not in 1..={}",
                recommend::QUEUE_DEPTH_MAX
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> IoProperties {
        IoProperties {
            format_version: FORMAT_VERSION,
            measured_unix_s: 1_700_000_000,
            data_dir: "/var/lib/corekv".into(),
            test_file_bytes: 256 << 20,
            duration_s: 12.5,
            sequential: Sequential {
                block_bytes: 1 << 20,
                queue_depth: 4,
                write_bytes_per_s: 800e6,
                read_bytes_per_s: 1.5e9,
            },
            random_read: vec![RandomRead {
                queue_depth: 1,
                ops: 1000,
                iops: 9000.5,
                p50_us: 100.25,
                p99_us: 300.0,
            }],
            fdatasync: Fdatasync {
                count: 100,
                p50_us: 250.0,
                p99_us: 900.0,
            },
            recommended: Recommended {
                commit_batch_bytes_max: 1 << 20,
                io_queue_depth_per_shard: 8,
            },
        }
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = default_path(dir.path());
        let p = sample();
        p.save(&path).expect("save");
        assert_eq!(IoProperties::load(&path).expect("load"), p);
    }

    #[test]
    fn corrupt_files_are_clear_errors_naming_the_file() {
        let path = Path::new("/data/io-properties.toml");
        let good = sample().to_toml().expect("encode");
        let cases = [
            ("format_version = 1\nsequential = [", "expected"),
            ("not toml at all ===", "io-properties.toml"),
            ("measured_unix_s = 5\n", "format_version is missing"),
            (
                &good.replace("format_version = 1", "format_version = 9"),
                "format_version 9",
            ),
            (
                &good.replace(
                    "io_queue_depth_per_shard = 8",
                    "io_queue_depth_per_shard = 0",
                ),
                "io_queue_depth_per_shard",
            ),
            (
                &good.replace(
                    "commit_batch_bytes_max = 1048576",
                    "commit_batch_bytes_max = 5",
                ),
                "commit_batch_bytes_max",
            ),
            (
                &good.replace("p50_us = 250.0", "p50_us = -1.0"),
                "fdatasync.p50_us",
            ),
            (&good.replace("data_dir", "data_dri"), "data_dri"),
        ];
        for (text, needle) in cases {
            let e = IoProperties::from_toml_str(text, path).expect_err(text);
            let msg = e.to_string();
            assert!(matches!(e, Error::InvalidProperties { .. }), "{msg}");
            assert!(msg.contains("/data/io-properties.toml"), "{msg}");
            assert!(msg.contains(needle), "{needle:?} not in {msg}");
        }
        let missing = IoProperties::load(Path::new("/nonexistent/io.toml")).expect_err("missing");
        assert!(missing.to_string().contains("/nonexistent/io.toml"));
    }
}
