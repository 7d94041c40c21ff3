//! Page-aligned heap buffers for O_DIRECT I/O.

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// Alignment of every buffer, offset and length used with O_DIRECT here:
/// 4 KiB satisfies both 512-byte and 4 KiB logical block devices.
pub(crate) const ALIGN: usize = 4096;

/// A zeroed heap buffer aligned to [`ALIGN`], freed on drop.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes (`len` a non-zero multiple of [`ALIGN`]).
    pub(crate) fn new(len: usize) -> Result<AlignedBuf> {
        if len == 0 || !len.is_multiple_of(ALIGN) {
            return Err(Error::InvalidArgument(format!(
                "buffer of {len} bytes is not a non-zero multiple of {ALIGN}"
            )));
        }
        let layout = Layout::from_size_align(len, ALIGN)
            .map_err(|e| Error::InvalidArgument(format!("buffer layout: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            Error::io(
                format!("allocating {len} bytes"),
                std::io::Error::from(std::io::ErrorKind::OutOfMemory),
            )
        })?;
        Ok(AlignedBuf { ptr, layout })
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    /// Pointer for the kernel to read from or write into.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Fills the buffer with a non-constant pattern (so a compressing or
    /// deduplicating device cannot shortcut writes).
    pub(crate) fn fill_pattern(&mut self, seed: u64) {
        // SAFETY: ptr is valid for len bytes and uniquely borrowed.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) };
        let mut x = seed | 1;
        for chunk in bytes.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_sizes_checked() {
        let mut b = AlignedBuf::new(8192).expect("alloc");
        assert_eq!(b.as_mut_ptr() as usize % ALIGN, 0);
        b.fill_pattern(7);
        assert!(AlignedBuf::new(100).is_err());
        assert!(AlignedBuf::new(0).is_err());
    }
}
