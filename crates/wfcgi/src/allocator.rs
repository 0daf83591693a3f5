//! How glibc's `malloc` treats the memory a served app frees (compiled for Linux with glibc
//! only: Windows' heap, musl and macOS are left as they are).
//!
//! A WSGI app's large objects (response pieces, `wsgi.input` reads, rendered pages) are
//! allocated by CPython with `malloc`, and freed a moment later. glibc gives the free memory at
//! the top of a thread's arena back to the kernel once it exceeds its trim threshold, 128 KiB
//! at start, and the next request faults the same pages in again, each zeroed by the kernel.
//! glibc raises that threshold itself, to twice the size of a `mmap`ed block when one is freed
//! (the "dynamic threshold" of mallopt(3)): an app whose requests only allocate blocks under
//! 128 KiB, never `mmap`ed, never gets it raised. Serving 1 MiB responses in 64 KiB pieces,
//! that was 0.27 `madvise` and 0.09 `brk` calls and 51 page faults a response, and 9% of the
//! server's CPU (docs/benchmarks.md, "Memory given back and faulted in again"; decisions/0013).
//!
//! So the process frees one [`PRIMING_BLOCK`] at start, as an app would: glibc's own rule then
//! puts its mmap threshold at 4 MiB and its trim threshold at 8 MiB, and goes on raising them
//! when larger blocks are freed, as it always did. Setting the thresholds with `mallopt`
//! instead (tried first) stops that rule: every block over the fixed threshold was then
//! `mmap`ed and faulted in afresh, and an 8 MiB `wsgi.input.read()` took 2,049 faults and 40%
//! more time a request. An environment that sets glibc's thresholds (`GLIBC_TUNABLES`,
//! `MALLOC_TRIM_THRESHOLD_`, ...) has stopped the rule itself: the freed block then changes
//! nothing.

/// The block freed at start. Its size becomes glibc's mmap threshold (blocks under it come from
/// the arenas) and twice it the trim threshold: the free memory each arena keeps at its top
/// after a peak, 8 MiB. A quarter of what glibc reaches on its own once a 32 MiB block is freed
/// (its largest dynamic mmap threshold), enough for the pieces and copies of a few responses.
pub(crate) const PRIMING_BLOCK: usize = 4 << 20;

/// Frees a [`PRIMING_BLOCK`], `mmap`ed by glibc as any block over its threshold at start is, so
/// that its dynamic thresholds move up to it. Harmless at any time: the thresholds are
/// process-wide and read at every `free`.
pub(crate) fn keep_freed_memory() {
    // SAFETY: a block from malloc, freed once, never read or written.
    unsafe {
        let block = libc::malloc(PRIMING_BLOCK);
        // Kept from the optimiser, which may drop a malloc whose block is never used.
        libc::free(std::hint::black_box(block));
    }
}
