//! Gives memory freed after a burst back to the system. glibc keeps freed
//! heap memory for reuse, and raises its mmap threshold after a large free,
//! so after one 16 MiB message the next large buffers come from the heap
//! and their pages stay resident once freed. `malloc_trim` returns the free
//! pages. The driver calls [`give_back`] shortly after a large message, a
//! large metadata save, or a large drop of the catalog, at most every
//! [`TRIM_DELAY`].

use std::time::Duration;

/// How long after a large free the trim runs (coalesces a burst; the
/// metadata writer thread has freed its buffer by then).
pub const TRIM_DELAY: Duration = Duration::from_secs(2);

/// What counts as large: a message or save this big, or a catalog drop.
pub const TRIM_AFTER_BYTES: usize = 1024 * 1024;

/// Returns free heap pages to the system (no-op off glibc).
#[allow(unsafe_code)]
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
