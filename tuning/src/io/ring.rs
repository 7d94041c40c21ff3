//! A closed loop of O_DIRECT operations on one file through io_uring: up
//! to `depth` operations in flight, each slot with its own aligned buffer.
//! Rings stay small (at most 128 entries, no registered buffers) so they
//! fit a default 8 MiB memlock limit.

use std::os::fd::RawFd;
use std::time::Instant;

use io_uring::{opcode, types, IoUring};

use super::buf::AlignedBuf;
use crate::error::{Error, Result};

/// Deepest queue the loop supports (and the largest ring it sets up).
pub(crate) const DEPTH_MAX: usize = 128;

/// What one operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Read `len` bytes at `offset` into the slot's buffer.
    Read,
    /// Write `len` bytes of the slot's buffer at `offset`.
    Write,
    /// fdatasync the file.
    Datasync,
}

/// One operation; `offset` and `len` are multiples of 4 KiB.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    pub(crate) kind: OpKind,
    pub(crate) offset: u64,
    pub(crate) len: usize,
}

/// The ring, the file and one buffer per slot.
pub(crate) struct Loop {
    ring: IoUring,
    fd: RawFd,
    bufs: Vec<AlignedBuf>,
}

impl Loop {
    /// Sets up a ring for `depth` (1..=128) operations of at most
    /// `buf_bytes` each on `fd`, which must stay open while the loop lives.
    pub(crate) fn new(fd: RawFd, depth: usize, buf_bytes: usize) -> Result<Loop> {
        if depth == 0 || depth > DEPTH_MAX {
            return Err(Error::InvalidArgument(format!(
                "queue depth {depth} not in 1..={DEPTH_MAX}"
            )));
        }
        let ring = IoUring::new(depth.next_power_of_two() as u32)
            .map_err(|e| Error::io(format!("setting up an io_uring of {depth} entries"), e))?;
        let mut bufs = Vec::with_capacity(depth);
        for slot in 0..depth {
            let mut b = AlignedBuf::new(buf_bytes)?;
            b.fill_pattern(slot as u64 + 0x9E37_79B9);
            bufs.push(b);
        }
        Ok(Loop { ring, fd, bufs })
    }

    /// Keeps up to `depth` operations in flight. Whenever a slot is free,
    /// `next()` is asked for an operation; once it answers `None`, nothing
    /// more is issued and the loop returns when the in-flight operations
    /// have completed. `done(op, latency_ns)` sees each completion. A failed
    /// or short operation stops issuing, drains, and returns the error.
    /// Buffers are never released while the kernel may still use them.
    pub(crate) fn run(
        &mut self,
        mut next: impl FnMut() -> Option<Op>,
        mut done: impl FnMut(Op, u64),
    ) -> Result<()> {
        let depth = self.bufs.len();
        let mut in_flight: Vec<Option<(Op, Instant)>> = vec![None; depth];
        let mut busy = 0usize;
        let mut issuing = true;
        let mut failure: Option<Error> = None;
        loop {
            if issuing {
                for (slot, state) in in_flight.iter_mut().enumerate() {
                    if state.is_some() {
                        continue;
                    }
                    let Some(op) = next() else {
                        issuing = false;
                        break;
                    };
                    if op.len > self.bufs[slot].len() {
                        issuing = false;
                        failure = Some(Error::InvalidArgument(format!(
                            "operation of {} bytes exceeds the {}-byte buffer",
                            op.len,
                            self.bufs[slot].len()
                        )));
                        break;
                    }
                    let entry = self.entry(slot, op);
                    // SAFETY: the entry points into bufs[slot], which lives as
                    // long as `self` and is not reused until this operation
                    // completes; on a fatal ring error the buffers are leaked
                    // rather than freed (see `abandon`).
                    let pushed = unsafe { self.ring.submission().push(&entry) };
                    if pushed.is_err() {
                        // Cannot happen: the ring has at least `depth` entries.
                        issuing = false;
                        failure = Some(Error::InvalidArgument("submission queue full".into()));
                        break;
                    }
                    *state = Some((op, Instant::now()));
                    busy += 1;
                }
            }
            if busy == 0 {
                break;
            }
            if let Err(e) = self.submit_and_wait() {
                self.abandon();
                return Err(e);
            }
            let now = Instant::now();
            let completed: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (slot, res) in completed {
                let Some((op, started)) = in_flight.get_mut(slot as usize).and_then(Option::take)
                else {
                    continue;
                };
                busy -= 1;
                let expected = if op.kind == OpKind::Datasync {
                    0
                } else {
                    op.len
                };
                if res < 0 || res as usize != expected {
                    issuing = false;
                    if failure.is_none() {
                        let what =
                            format!("{:?} of {} bytes at offset {}", op.kind, op.len, op.offset);
                        failure = Some(if res < 0 {
                            Error::io(what, std::io::Error::from_raw_os_error(-res))
                        } else {
                            Error::io(
                                what,
                                std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    format!("short transfer: {res} bytes"),
                                ),
                            )
                        });
                    }
                    continue;
                }
                done(op, now.duration_since(started).as_nanos() as u64);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn entry(&mut self, slot: usize, op: Op) -> io_uring::squeue::Entry {
        let fd = types::Fd(self.fd);
        let ptr = self.bufs[slot].as_mut_ptr();
        let e = match op.kind {
            OpKind::Read => opcode::Read::new(fd, ptr, op.len as u32)
                .offset(op.offset)
                .build(),
            OpKind::Write => opcode::Write::new(fd, ptr, op.len as u32)
                .offset(op.offset)
                .build(),
            OpKind::Datasync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        e.user_data(slot as u64)
    }

    /// Submits and waits for at least one completion, retrying on EINTR
    /// (a Ctrl-C is noticed by the caller's `next`).
    fn submit_and_wait(&self) -> Result<()> {
        for _ in 0..1000 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.kind() == std::io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::EAGAIN)
                        || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(Error::io("io_uring_enter", e)),
            }
        }
        Err(Error::io(
            "io_uring_enter",
            std::io::Error::other("kept failing with EINTR/EAGAIN"),
        ))
    }

    /// After a fatal ring error the kernel may still own buffers: leak them
    /// instead of freeing memory it could write into.
    fn abandon(&mut self) {
        std::mem::forget(std::mem::take(&mut self.bufs));
    }
}

/// True when an io_uring can be set up in this process (a tiny one).
pub(crate) fn probe_ring() -> std::io::Result<()> {
    IoUring::new(4).map(|_| ())
}
