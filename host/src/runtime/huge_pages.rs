//! Transparent huge pages for the big copies of plugin memory.
//!
//! Restoring a snapshot writes every byte of a freshly mapped linear
//! memory, and a full capture writes every byte of a freshly allocated
//! buffer. With 4 KiB pages each of those copies takes one page fault per
//! 4 KiB: for 64 MiB, 16,384 faults, which cost four times the copy itself
//! (`benches/snapshot.rs`). Asking the kernel for huge pages on the
//! destination first (`MADV_HUGEPAGE`; the machine's THP mode is usually
//! `madvise`) makes that 32 faults of 2 MiB. Where the kernel will not give
//! huge pages, `MADV_POPULATE_WRITE` still maps the range in one call,
//! which saves a fifth to two fifths.
//!
//! Dirty-page tracking stays at 4 KiB: a write to a write-protected huge
//! page splits it (the kernel's async write-protect path does this), and
//! the next `PAGEMAP_SCAN` reports 4 KiB pages again.

/// Prepares `mem`, about to be written whole, for a fast copy.
pub fn prepare(mem: &mut [u8]) {
    // SAFETY: `mem` is ours, mapped readable and writable.
    unsafe { advise(mem.as_mut_ptr(), mem.len()) }
}

/// An empty buffer with room for `capacity` bytes, prepared like
/// [`prepare`] for being filled.
pub fn buffer(capacity: usize) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(capacity);
    if capacity >= MIN_ADVISED {
        let spare = out.spare_capacity_mut();
        // SAFETY: the spare capacity is allocated, ours and writable; the
        // advice only reads its address.
        unsafe { advise(spare.as_mut_ptr().cast(), spare.len()) }
    }
    out
}

/// A copy of `src` in a [`buffer`].
pub fn copy(src: &[u8]) -> Vec<u8> {
    let mut out = buffer(src.len());
    out.extend_from_slice(src);
    out
}

/// Below one huge page the advice cannot help.
const MIN_ADVISED: usize = 2 << 20;

/// Huge-page advice (else population) for the whole 4 KiB pages inside
/// `[ptr, ptr + len)`. Neither advice changes a byte.
///
/// # Safety
/// The range must be allocated memory owned by the caller.
unsafe fn advise(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const OS_PAGE: usize = 4096;
        // madvise wants a page-aligned start; trim to whole pages inside.
        let addr = ptr as usize;
        let start = addr.next_multiple_of(OS_PAGE);
        let end = (addr + len) & !(OS_PAGE - 1);
        if end <= start {
            return;
        }
        let (p, n) = (start as *mut libc::c_void, end - start);
        // SAFETY: [start, end) lies inside the caller's range.
        unsafe {
            if !thp_available() || libc::madvise(p, n, libc::MADV_HUGEPAGE) != 0 {
                libc::madvise(p, n, libc::MADV_POPULATE_WRITE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// Whether the kernel hands out transparent huge pages on advice (mode
/// `always` or `madvise`, not `never`). Read once.
#[cfg(target_os = "linux")]
fn thp_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .map(|mode| !mode.contains("[never]"))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_exact_at_odd_sizes_and_alignments() {
        let src: Vec<u8> = (0..(3 << 20) + 123).map(|i| (i * 31 % 251) as u8).collect();
        for (from, to) in [
            (0, src.len()),
            (1, src.len() - 7),
            (4095, 4096 * 3 + 5),
            (5, 5),
        ] {
            assert_eq!(copy(&src[from..to]), &src[from..to]);
        }
        let mut small = [1u8; 10];
        prepare(&mut small);
        assert_eq!(small, [1u8; 10]);
    }
}
