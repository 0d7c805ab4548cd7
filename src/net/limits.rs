//! The process's file-descriptor budget.
//!
//! A connection cap above the open-file limit is no cap at all: accept fails
//! with EMFILE before the cap is reached, and nothing can be evicted. So the
//! soft limit is raised to the hard limit at start, and the cap is derived
//! from what we actually got.

#![allow(unsafe_code)]

use std::io;

/// Descriptors kept for everything but peer and HTTP connections (stdio,
/// listeners, epoll, waker, signal pipe, files being served or written).
pub const RESERVED_FDS: u64 = 64;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft
/// limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Ok(want.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

/// The connection cap that fits in `fd_limit` descriptors.
pub fn connection_cap(fd_limit: u64, wanted: usize) -> usize {
    let room = fd_limit.saturating_sub(RESERVED_FDS).max(16);
    (wanted as u64).min(room) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fits_under_the_descriptor_limit() {
        assert_eq!(connection_cap(20_000, 1024), 1024);
        assert_eq!(connection_cap(1024, 1024), 960);
        assert_eq!(connection_cap(10, 1024), 16);
    }
}
