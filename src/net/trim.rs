//! Gives memory freed after a burst back to the system. glibc keeps freed
//! heap memory for reuse, and raises its mmap threshold after a large free,
//! so after one 16 MiB message the next large buffers come from the heap
//! and their pages stay resident once freed; after a flood of invented
//! peers expires, the peer table, the dial limiter's table and the
//! connections' buffers are freed but would stay resident too.
//! `malloc_trim` returns the free pages. The driver calls [`give_back`]
//! shortly after a large message, a large metadata save, a large drop of
//! the catalog, or a large shrink of the peer state ([`TrimMark`]).
//! Other allocators and platforms: a no-op.

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
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own
    // arenas under their locks; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Buffers at least this large are mapped on their own and unmapped when
/// freed. glibc's default threshold moves up to 32 MiB after a large
/// free, and then a message buffer of up to 16 MiB lands on the heap and
/// stays resident after it is freed, until the next trim.
const MMAP_THRESHOLD: i32 = 4 * 1024 * 1024;

/// Fixes the allocator's mmap threshold at [`MMAP_THRESHOLD`] (glibc only;
/// call once at start).
#[allow(unsafe_code)]
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of glibc's allocator; called at
    // start, before the other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// How much smaller (peers tracked, GOSSIP ids seen, destinations
/// remembered) the state must have become since its peak for a trim to be
/// worth a system call.
pub const TRIM_AFTER_SHRINK: usize = 256;

/// Decides when a shrink is large enough to trim: fed the state's size at
/// every sweep.
#[derive(Debug, Default)]
pub struct TrimMark {
    peak: usize,
}

impl TrimMark {
    /// Records `size` now; true when it is [`TRIM_AFTER_SHRINK`] below the
    /// peak since the last trim (which then starts over from `size`).
    pub fn shrunk(&mut self, size: usize) -> bool {
        if self.peak >= size + TRIM_AFTER_SHRINK {
            self.peak = size;
            true
        } else {
            self.peak = self.peak.max(size);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_comes_once_after_a_large_shrink_and_not_for_small_ones() {
        let mut m = TrimMark::default();
        assert!(!m.shrunk(10));
        assert!(!m.shrunk(1_000));
        assert!(!m.shrunk(900), "a small shrink");
        assert!(m.shrunk(20));
        assert!(!m.shrunk(20), "once");
        assert!(!m.shrunk(5));
        give_back();
    }
}
