//! The engine's only door to the disk: a thin layer over glommio DMA files
//! (O_DIRECT, io_uring). Keeping glommio behind these few functions lets
//! the LSM logic stay testable and lets the I/O backend be swapped.
//!
//! Rules kept here so callers need not remember them (see GLOMMIO-NOTES.md):
//! writes go at aligned offsets from DMA buffers; one read is capped at
//! `MAX_IO_BYTES` (very large reads hang on some kernels); and before the
//! first DMA read of a data directory, `warm_up` reads a non-empty file so
//! glommio's iopoll detection is not fooled by an empty file.

use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};
use glommio::sync::Semaphore;

use crate::error::{Error, Result};

/// Largest single read or write submitted to the kernel.
pub(crate) const MAX_IO_BYTES: usize = 1 << 20;

/// Name of the file `warm_up` keeps in every data directory.
pub(crate) const WARM_UP_FILE: &str = "IOPOLL-PROBE";

/// Opens an existing file for reading.
pub(crate) async fn open_read(path: &Path) -> Result<DmaFile> {
    DmaFile::open(path).await.map_err(|e| Error::io(path, e))
}

/// Creates a new file for reading and writing; fails if it exists, so a
/// bug can never overwrite a live table or segment.
pub(crate) async fn create_new(path: &Path) -> Result<DmaFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .dma_open(path)
        .await
        .map_err(|e| Error::io(path, e))
}

/// Reads exactly `len` bytes at `pos`, in chunks of at most `MAX_IO_BYTES`.
/// A short read (the file ends early) is reported as corruption of `path`.
pub(crate) async fn read_exact(
    file: &DmaFile,
    path: &Path,
    pos: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let at = pos + out.len() as u64;
        let want = (len - out.len()).min(MAX_IO_BYTES);
        let got = file
            .read_at(at, want)
            .await
            .map_err(|e| Error::io(path, e))?;
        if got.is_empty() {
            return Err(Error::corrupt(
                path,
                at,
                format!("file ends early: wanted {len} bytes at offset {pos}"),
            ));
        }
        out.extend_from_slice(&got);
    }
    Ok(out)
}

/// Bounds the table-block reads one shard has in flight at once
/// (`Options::max_concurrent_reads`, sized from the disk's measured queue
/// depth by `corekv tune io`). Reads beyond the bound wait for a slot in
/// arrival order instead of piling up in the device queue, where they would
/// only add latency once the disk stops scaling.
pub(crate) struct ReadSlots {
    slots: Semaphore,
    in_flight: std::cell::Cell<usize>,
    peak: std::cell::Cell<usize>,
}

impl ReadSlots {
    /// At most `n` (at least 1) reads in flight.
    pub(crate) fn new(n: usize) -> ReadSlots {
        ReadSlots {
            slots: Semaphore::new(n.max(1) as u64),
            in_flight: std::cell::Cell::new(0),
            peak: std::cell::Cell::new(0),
        }
    }

    /// `read_exact` holding one slot for the duration of the read.
    pub(crate) async fn read_exact(
        &self,
        file: &DmaFile,
        path: &Path,
        pos: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let _slot = self
            .slots
            .acquire_permit(1)
            .await
            .map_err(|e| Error::io(path, e))?;
        let now = self.in_flight.get() + 1;
        self.in_flight.set(now);
        self.peak.set(self.peak.get().max(now));
        // Counted down also when the read's future is dropped midway.
        struct Done<'a>(&'a std::cell::Cell<usize>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get().saturating_sub(1));
            }
        }
        let _done = Done(&self.in_flight);
        read_exact(file, path, pos, len).await
    }

    /// Most reads that were in flight at once so far.
    #[cfg(test)]
    pub(crate) fn peak(&self) -> usize {
        self.peak.get()
    }
}

/// Reads the whole file (used by recovery and small metadata files).
pub(crate) async fn read_all(file: &DmaFile, path: &Path) -> Result<Vec<u8>> {
    let size = file.file_size().await.map_err(|e| Error::io(path, e))?;
    read_exact(file, path, 0, size as usize).await
}

/// Writes `data` at the aligned offset `pos`, padding the tail with zeros
/// up to the file's alignment. Returns the number of bytes written including
/// the padding. A short write is an error, never silently accepted.
pub(crate) async fn write_at(file: &DmaFile, path: &Path, pos: u64, data: &[u8]) -> Result<u64> {
    let align = file.alignment();
    assert_eq!(pos % align, 0, "unaligned DMA write at {pos}");
    let mut written = 0usize;
    while written < data.len() {
        let chunk = &data[written..(written + MAX_IO_BYTES).min(data.len())];
        let padded = file.align_up(chunk.len() as u64) as usize;
        let mut buf = file.alloc_dma_buffer(padded);
        let bytes = buf.as_bytes_mut();
        bytes[..chunk.len()].copy_from_slice(chunk);
        bytes[chunk.len()..].fill(0);
        let at = pos + written as u64;
        let n = file
            .write_at(buf, at)
            .await
            .map_err(|e| Error::io(path, e))?;
        if n != padded {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write at offset {at}: {n} of {padded} bytes"),
                ),
            ));
        }
        written += chunk.len();
    }
    Ok(file.align_up(data.len() as u64))
}

/// Flushes file data to stable storage.
pub(crate) async fn sync(file: &DmaFile, path: &Path) -> Result<()> {
    file.fdatasync().await.map_err(|e| Error::io(path, e))
}

/// Closes a file, reporting any deferred error.
pub(crate) async fn close(file: DmaFile, path: &Path) -> Result<()> {
    file.close().await.map_err(|e| Error::io(path, e))
}

/// Closes a shared file once the last reference is gone.
pub(crate) async fn close_rc(file: std::rc::Rc<DmaFile>, path: &Path) -> Result<()> {
    file.close_rc()
        .await
        .map(|_| ())
        .map_err(|e| Error::io(path, e))
}

/// Runs blocking file-system calls on the executor's blocking thread, so
/// the shard keeps serving while they wait for the device. An fsync waits
/// for a device flush (milliseconds), and on a file system mounted with
/// `discard` an unlink waits for the device to discard the file's written
/// blocks: 20 ms for a full 64 MiB log segment on the test VM, all of it a
/// stall of every request on the shard when done on the shard's thread.
async fn off_shard<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    glommio::executor().spawn_blocking(work).await
}

/// fdatasync of a page-cache file, on the executor's blocking thread.
/// Writeback runs in the calling thread (it copies the dirty pages into
/// requests and kicks the device), so here it spends the blocking thread's
/// CPU — a spare CPU when the shards are pinned and one is left (see the
/// node runtime) — instead of the shard's, as an io_uring fdatasync's io-wq
/// worker, woken from the shard's busy CPU, would.
pub(crate) async fn sync_data(file: std::sync::Arc<std::fs::File>, path: &Path) -> Result<()> {
    let path = path.to_path_buf();
    off_shard(move || file.sync_data().map_err(|e| Error::io(&path, e))).await
}

fn sync_dir_now(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Makes a directory entry change (create, rename, unlink) durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    off_shard(move || sync_dir_now(&dir)).await
}

/// Writes `bytes` to `dir/name` atomically: a temporary file is written and
/// synced, renamed over the target, and the directory synced. Readers see the
/// old or the new content, never a mix. Uses std::fs (off the shard's
/// thread) because these files are tiny and rare (manifest), and buffered
/// I/O keeps them simple.
pub(crate) async fn write_file_atomic(dir: &Path, name: &str, bytes: Vec<u8>) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let dir = dir.to_path_buf();
    off_shard(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
        sync_dir_now(&dir)
    })
    .await
}

/// Deletes a file and makes the deletion durable.
pub(crate) async fn remove_file(dir: &Path, path: &Path) -> Result<()> {
    let (dir, path) = (dir.to_path_buf(), path.to_path_buf());
    off_shard(move || {
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        sync_dir_now(&dir)
    })
    .await
}

/// Works around glommio's iopoll detection (GLOMMIO-NOTES.md, "the empty-file
/// trap"): the first DMA read on a device decides whether polled I/O is used,
/// and an empty file fools it. So before any other DMA read we read a
/// non-empty probe file that we keep in the data directory.
pub(crate) async fn warm_up(dir: &Path) -> Result<()> {
    let path: PathBuf = dir.join(WARM_UP_FILE);
    let ok = std::fs::metadata(&path)
        .map(|m| m.len() >= 4096)
        .unwrap_or(false);
    if !ok {
        let block = vec![0xA5u8; 4096];
        write_file_atomic(dir, WARM_UP_FILE, block).await?;
    }
    let file = open_read(&path).await?;
    let read = file
        .read_at_aligned(0, 4096)
        .await
        .map_err(|e| Error::io(&path, e))?;
    if read.len() != 4096 {
        return Err(Error::corrupt(
            &path,
            0,
            "iopoll probe file shorter than 4096 bytes",
        ));
    }
    close(file, &path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_slots_bound_the_reads_in_flight() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let dir = tempfile::tempdir().expect("tempdir");
                warm_up(dir.path()).await.expect("warm up");
                let path = dir.path().join("data");
                let bytes: Vec<u8> = (0..64 * 4096).map(|i| (i / 4096) as u8).collect();
                std::fs::write(&path, &bytes).expect("write");
                let file = std::rc::Rc::new(open_read(&path).await.expect("open"));
                for bound in [1usize, 3] {
                    let slots = std::rc::Rc::new(ReadSlots::new(bound));
                    let tasks: Vec<_> = (0..32u64)
                        .map(|i| {
                            let (slots, file, path) = (slots.clone(), file.clone(), path.clone());
                            glommio::spawn_local(async move {
                                let got = slots
                                    .read_exact(&file, &path, i * 4096, 4096)
                                    .await
                                    .expect("read");
                                assert!(got.iter().all(|&b| b == i as u8));
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await;
                    }
                    assert!(
                        slots.peak() >= 1 && slots.peak() <= bound,
                        "peak {}",
                        slots.peak()
                    );
                }
            })
            .expect("executor")
            .join()
            .expect("thread");
    }
}
