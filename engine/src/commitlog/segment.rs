//! Segment files: names, listing, creation.

use std::cell::Cell;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use glommio::io::{BufferedFile, DmaFile, OpenOptions};

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

/// A segment's file. `batch` mode writes with O_DIRECT: its ack waits for
/// the fdatasync anyway. `periodic` mode writes through the page cache: its
/// ack means "the kernel has it" (survives a crash of the process), the
/// periodic fdatasync makes it durable, and the device's write latency
/// stays off the ack path. Both write the same bytes at the same offsets
/// (batches padded to the device's DMA alignment), so recovery reads either.
///
/// A periodic segment gives its pages back to the kernel once they are
/// synced (`release_synced`): the log is read only by recovery, and pages
/// kept behind the write position would only push the next pages the log
/// needs onto memory that has not been touched recently. On this project's
/// VMs such a page costs the writer a host fault on first touch (~10 µs
/// against ~1.5 µs for a recently freed page: the hypervisor takes back
/// free guest memory); a 512-byte append cost 2.2–2.4 µs with the synced
/// pages kept and 0.9 µs with them released, whose pages the next appends
/// then reuse while they are still warm.
///
/// The page-cache writes are plain `pwrite` calls on the shard's own
/// thread, not io_uring writes: ext4 cannot take a buffered write without
/// blocking, so io_uring hands each one to an io-wq worker thread, and that
/// worker has to wait for the shard's core. Measured at 75 k req/s on one
/// core, the worker waited 0.8 ms on average (2.2 ms at most) to be
/// scheduled, on every update's ack path; the copy into the page cache
/// itself takes microseconds. The periodic fdatasync keeps the dirty data
/// small, so the write does not meet the kernel's dirty-page throttling.
pub(crate) enum SegmentFile {
    /// O_DIRECT.
    Direct(DmaFile),
    /// Page cache.
    Buffered {
        /// The file, for the asynchronous close.
        file: BufferedFile,
        /// A second descriptor of the same file for the synchronous
        /// page-cache writes (see above) and the fdatasync, which runs on
        /// the blocking thread.
        writer: Arc<std::fs::File>,
        /// The device's DMA alignment, which the format pads to.
        align: u64,
        /// Offset below which the page cache has been released (a page
        /// boundary; everything below it was synced).
        released: Cell<u64>,
    },
}

impl SegmentFile {
    /// Writes `data` at the aligned `pos`, zero-padded to the alignment;
    /// returns the bytes written including the padding. Takes the buffer:
    /// the page-cache path pads and sends it as it is, without a copy (the
    /// O_DIRECT path copies into an aligned DMA buffer either way).
    pub(crate) async fn write_owned_at(&self, path: &Path, pos: u64, data: Vec<u8>) -> Result<u64> {
        match self {
            SegmentFile::Direct(f) => io::write_at(f, path, pos, &data).await,
            SegmentFile::Buffered { writer, align, .. } => {
                assert_eq!(pos % align, 0, "unaligned log write at {pos}");
                let padded = (data.len() as u64).div_ceil(*align) * align;
                let mut buf = data;
                buf.resize(padded as usize, 0);
                // `write_all_at` retries short writes and EINTR; a full disk
                // is ENOSPC here, the same as from io_uring.
                writer
                    .write_all_at(&buf, pos)
                    .map_err(|e| Error::io(path, e))?;
                Ok(padded)
            }
        }
    }

    /// fdatasync.
    pub(crate) async fn sync(&self, path: &Path) -> Result<()> {
        match self {
            SegmentFile::Direct(f) => io::sync(f, path).await,
            SegmentFile::Buffered { writer, .. } => io::sync_data(writer.clone(), path).await,
        }
    }

    /// Periodic mode: gives back the page cache of the whole pages below
    /// `synced`, an offset that an fdatasync has covered. Those pages are
    /// clean, and the kernel never drops a dirty page or a partial one, so
    /// this cannot lose data; the page holding `synced` itself stays, as
    /// the next append writes into it. Best effort: the pages are only
    /// memory, so a failure is logged, not returned. No-op for O_DIRECT.
    pub(crate) fn release_synced(&self, path: &Path, synced: u64) {
        let SegmentFile::Buffered {
            writer, released, ..
        } = self
        else {
            return;
        };
        let page = page_bytes();
        let end = synced / page * page;
        let start = released.get();
        if end <= start {
            return;
        }
        if let Err(e) = advise_dontneed(writer, start, end - start) {
            tracing::debug!(path = %path.display(), error = %e, "could not release synced commit-log pages");
        }
        released.set(end);
    }

    /// Closes the file (dropping the last handle if others are still out).
    pub(crate) async fn close(file: Rc<SegmentFile>, path: &Path) -> Result<()> {
        match Rc::try_unwrap(file) {
            Ok(SegmentFile::Direct(f)) => io::close_rc(Rc::new(f), path).await,
            Ok(SegmentFile::Buffered { file, writer, .. }) => {
                // A segment is closed after its last sync: none of its
                // pages will be written again (length 0 = to the end).
                if let Err(e) = advise_dontneed(&writer, 0, 0) {
                    tracing::debug!(path = %path.display(), error = %e, "could not release a closed segment's pages");
                }
                file.close().await.map_err(|e| Error::io(path, e))
            }
            Err(_) => Ok(()),
        }
    }
}

/// The kernel's page size, which page-cache release rounds to.
fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)` over `len` bytes at `offset`
/// (`len` 0: to the end of the file).
fn advise_dontneed(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed;
    // fadvise reads no memory of ours.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// An open segment being appended to.
pub(crate) struct Segment {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Rc<SegmentFile>,
    /// Next batch offset.
    pub(crate) pos: u64,
    /// Everything before this offset is fdatasync'd.
    pub(crate) durable: u64,
}

impl Segment {
    /// Creates segment `id` with its header, allocated at its full `size`,
    /// and makes the name durable; later writes go through the page cache
    /// when `buffered`.
    ///
    /// Why allocate up front: an append that extends an ext4 file takes the
    /// inode's extent lock (`i_data_sem`) to move the on-disk size, and so
    /// does taking a new delayed block. Writeback holds that lock while it
    /// converts the blocks it wrote, which on a file system mounted with
    /// `discard` (and no journal) includes waiting for the device's
    /// discards: `perf` caught shard threads blocked 3–5 ms in `pwrite`,
    /// several times a second, on exactly that. Writes inside an allocated
    /// file need neither. The unwritten blocks read back as zeros, which
    /// recovery takes for the end of the log. A full disk only costs the
    /// allocation: the segment then grows by its writes, as before.
    pub(crate) async fn create(dir: &Path, id: u64, size: u64, buffered: bool) -> Result<Segment> {
        let path = segment_path(dir, id);
        let file = io::create_new(&path).await?;
        let file_alignment = file.alignment();
        let written = io::write_at(&file, &path, 0, &format::encode_segment_header(id)).await;
        if let Err(e) = written {
            let _ = file.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        if let Err(e) = file.pre_allocate(size, false).await {
            // A failed allocation may keep part of what it took: give that
            // back, so the disk's last free space goes to the log's writes.
            let released = file.truncate(file_alignment).await;
            tracing::warn!(
                path = %path.display(),
                error = %e,
                released = released.is_ok(),
                "could not allocate the commit-log segment up front; it grows as written"
            );
        }
        io::sync_dir(dir).await?;
        let file = if buffered {
            // The header went out with O_DIRECT (it fixes the alignment);
            // the rest goes through the page cache.
            io::close_rc(Rc::new(file), &path).await?;
            let buffered = OpenOptions::new()
                .read(true)
                .write(true)
                .buffered_open(&path)
                .await
                .map_err(|e| Error::io(&path, e))?;
            let writer = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map(Arc::new)
                .map_err(|e| Error::io(&path, e))?;
            SegmentFile::Buffered {
                file: buffered,
                writer,
                align: file_alignment,
                released: Cell::new(0),
            }
        } else {
            SegmentFile::Direct(file)
        };
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
