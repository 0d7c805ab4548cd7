//! The helpers that tests, benches and examples share (benches and
//! examples include this file with `#[path]`): reading a peer's start-up
//! banner and a raw HTTP GET.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The port number that follows `marker` in a start-up banner line.
pub fn port_after(line: &str, marker: &str) -> u16 {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    rest.chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .expect("port")
}

/// A GET over raw TCP; the body, or None on error/timeout (2 s).
pub fn http_get(port: u16, path: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if !buf.starts_with(b"HTTP/1.1 200") {
        return None;
    }
    Some(buf[split + 4..].to_vec())
}
