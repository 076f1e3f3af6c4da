//! The snapshot's bytes in memory: an aligned buffer, its byte and word views, and huge
//! pages. The one place in the snapshot with `unsafe` (besides the table's prefetch hint).

#![allow(unsafe_code)]

use std::{mem, slice};

/// The file's bytes in memory, starting on a 64-byte boundary (so the table's buckets are
/// cache lines). Allocated as zeroed `u64`s: for a large buffer the allocator hands out
/// fresh, untouched pages (`calloc` → `mmap`), so the huge-page advice still applies when the
/// read first touches them. (`alloc_zeroed` with 64-byte alignment would memset every byte
/// first: measured +0.5 s per GB on the dev VM.)
pub(crate) struct Image {
    pub(crate) buf: Vec<u64>,
    /// Words before the 64-byte-aligned start.
    pub(crate) off: usize,
    pub(crate) len: usize,
}

impl Image {
    pub(crate) fn zeroed(len: usize) -> Image {
        let buf = vec![0u64; len.div_ceil(8) + 8];
        let off = (buf.as_ptr() as usize).next_multiple_of(64).wrapping_sub(buf.as_ptr() as usize) / 8;
        Image { buf, off, len }
    }

    /// The index in `buf` of the image's word `i` (byte `8 i`).
    pub(crate) fn word_index(&self, i: usize) -> usize {
        self.off + i
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `zeroed` allocated `len.div_ceil(8) + 8` words and `off < 8`, so the `len`
        // bytes from word `off` are inside `buf`, initialised, and borrowed from `self` for
        // the slice's lifetime; u8 has alignment 1 and every byte of a u64 is a valid u8.
        unsafe { slice::from_raw_parts(self.buf.as_ptr().add(self.off).cast::<u8>(), self.len) }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; any byte pattern is a valid u64.
        unsafe { slice::from_raw_parts_mut(self.buf.as_mut_ptr().add(self.off).cast::<u8>(), self.len) }
    }

    /// Moves the image onto transparent huge pages (2 MiB): `MADV_HUGEPAGE`, then
    /// `MADV_COLLAPSE` (Linux ≥ 6.1), which copies the pages synchronously. The content and
    /// the addresses do not change, so readers carry on meanwhile. Returns whether the kernel
    /// collapsed the range.
    pub(super) fn collapse_huge(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            const HUGE: usize = 2 << 20;
            let base = self.buf.as_ptr() as usize;
            let start = base.next_multiple_of(HUGE);
            let end = (base + 8 * self.buf.len()) / HUGE * HUGE;
            if end <= start {
                return false;
            }
            // SAFETY: advice on whole pages inside `buf`, which `self` keeps alive; neither
            // call changes the memory's content or address. Failure changes nothing.
            unsafe {
                let p = start as *mut libc::c_void;
                libc::madvise(p, end - start, libc::MADV_HUGEPAGE);
                libc::madvise(p, end - start, libc::MADV_COLLAPSE) == 0
            }
        }
        #[cfg(not(target_os = "linux"))]
        false
    }
}

/// `&[u64]` as its bytes, for writing the table (the on-disk encoding on a little-endian host).
pub(super) fn u64_bytes(k: &[u64]) -> &[u8] {
    // SAFETY: the slice covers exactly the memory of `k` (same pointer, `size_of_val` bytes),
    // borrowed for the same lifetime; u64 has no padding and every byte is a valid u8. The
    // host is little-endian (`format.rs` refuses others at compile time), so these are the
    // on-disk bytes.
    unsafe { slice::from_raw_parts(k.as_ptr().cast::<u8>(), mem::size_of_val(k)) }
}

/// `b` as `u64` words, if it is 8-byte aligned and a whole number of words (a range of an
/// [`Image`] at a multiple of 8 bytes always is).
pub(super) fn as_words(b: &[u8]) -> Option<&[u64]> {
    // SAFETY: every bit pattern is a valid u64, and `align_to` only puts correctly aligned,
    // whole words in the middle slice; the rest is checked to be empty.
    let (pre, words, post) = unsafe { b.align_to::<u64>() };
    (pre.is_empty() && post.is_empty()).then_some(words)
}
