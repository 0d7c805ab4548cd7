//! The menu's input: stdin, non-blocking, split into lines.
//!
//! Registered with the poll when epoll accepts it (a terminal or a pipe);
//! `/dev/null` and regular files are refused by epoll, and then the peer
//! runs without a menu, as it does after EOF.

#![allow(unsafe_code)]

use std::io::{self, Read};
use std::os::fd::RawFd;

/// stdin's file descriptor.
pub const STDIN_FD: RawFd = 0;

/// Puts stdin in non-blocking mode so the loop can drain it to WouldBlock.
pub fn set_nonblocking() -> io::Result<()> {
    // SAFETY: fcntl on fd 0 with F_GETFL/F_SETFL reads and sets flags only;
    // no memory is passed to the kernel.
    let flags = unsafe { libc::fcntl(STDIN_FD, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(STDIN_FD, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Splits bytes into lines, bounded.
#[derive(Default)]
pub struct LineReader {
    buf: Vec<u8>,
    overlong: bool,
}

/// What one drain of stdin gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lines {
    /// Complete lines (lossy UTF-8), without the newline.
    pub lines: Vec<String>,
    /// Whether stdin reached EOF (or failed).
    pub eof: bool,
    /// Lines dropped for being longer than the cap.
    pub too_long: usize,
}

impl LineReader {
    /// Reads until WouldBlock.
    pub fn drain(&mut self, mut input: impl Read, max_line: usize) -> Lines {
        let mut out = Lines::default();
        let mut chunk = [0u8; 4096];
        loop {
            match input.read(&mut chunk) {
                Ok(0) => {
                    out.eof = true;
                    break;
                }
                Ok(n) => self.push(&chunk[..n], max_line, &mut out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    out.eof = true;
                    break;
                }
            }
        }
        if out.eof && !self.buf.is_empty() && !self.overlong {
            out.lines
                .push(String::from_utf8_lossy(&self.buf).into_owned());
            self.buf.clear();
        }
        out
    }

    fn push(&mut self, bytes: &[u8], max_line: usize, out: &mut Lines) {
        for &b in bytes {
            if b == b'\n' {
                if self.overlong {
                    out.too_long += 1;
                } else {
                    let line = String::from_utf8_lossy(&self.buf);
                    out.lines.push(line.trim_end_matches('\r').to_string());
                }
                self.buf.clear();
                self.overlong = false;
            } else if self.buf.len() < max_line {
                self.buf.push(b);
            } else {
                self.overlong = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_overlong_ones_dropped() {
        let mut r = LineReader::default();
        let got = r.drain(&b"list\r\npeers\nxxxxxxxxxx\nget"[..], 5);
        assert_eq!(got.lines, vec!["list", "peers", "get"]);
        assert_eq!(got.too_long, 1);
        assert!(got.eof);
    }
}
