//! The node's data directory: one subdirectory per shard, and a metadata
//! file recording the shard count the data was laid out for.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const META_FILE: &str = "corekv.meta";

/// Directory of shard `index`.
pub fn shard_dir(data_dir: &Path, index: usize) -> PathBuf {
    data_dir.join(format!("shard-{index}"))
}

/// Creates the data directory on first start and records `shards`; on later
/// starts refuses a different shard count, because keys are placed on
/// shards by token and would be looked for on the wrong one.
pub fn prepare(data_dir: &Path, shards: usize) -> Result<()> {
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
            Ok(())
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
            let text = format!(
                "# written by corekv on first start; do not edit\nformat = 1\nshards = {shards}\n"
            );
            std::fs::write(&meta, text).map_err(|e| err(format!("cannot write {META_FILE}: {e}")))
        }
        Err(e) => Err(err(format!("cannot read {META_FILE}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_different_shard_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(dir.path(), 2).expect("first start");
        prepare(dir.path(), 2).expect("same count");
        let e = prepare(dir.path(), 3).expect_err("different count");
        assert!(e.to_string().contains("--shards 2"), "{e}");
    }
}
