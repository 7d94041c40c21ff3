//! Segment files: names, listing, creation.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use super::format;
use crate::error::{Error, Result};
use crate::io;

/// Path of segment `id`.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("log-{id:016x}.seg"))
}

/// Ids of the segment files in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_prefix("log-")
            .and_then(|r| r.strip_suffix(".seg"))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// An open segment being appended to.
pub(crate) struct Segment {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Rc<DmaFile>,
    /// Next batch offset.
    pub(crate) pos: u64,
    /// Everything before this offset is fdatasync'd.
    pub(crate) durable: u64,
}

impl Segment {
    /// Creates segment `id` with its header and makes the name durable.
    pub(crate) async fn create(dir: &Path, id: u64) -> Result<Segment> {
        let path = segment_path(dir, id);
        let file = io::create_new(&path).await?;
        let file_alignment = file.alignment();
        let written = io::write_at(&file, &path, 0, &format::encode_segment_header(id)).await;
        if let Err(e) = written {
            let _ = file.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        io::sync_dir(dir)?;
        Ok(Segment {
            id,
            path,
            // The header was padded to the file's DMA alignment.
            pos: file_alignment,
            file: Rc::new(file),
            durable: 0,
        })
    }
}
