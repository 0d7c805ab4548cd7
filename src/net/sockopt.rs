//! Socket options the loop sets on peer connections.
//!
//! **No pacing between peers on one host.** Where the system's TCP
//! congestion control is BBR (as on this project's machines), every
//! connection is paced: the kernel releases segments from high-resolution
//! timers at the rate BBR estimates. Between two peers on one host (the
//! network's users run several on a shared host) there is no link to pace
//! for, and the timers' softirqs cost more CPU than the copies: a 1 GiB
//! FILE_DATA over 127.0.0.1 took 2.9 CPU-seconds under BBR and 2.0 under
//! Reno, and ran 35-45 % faster (benches/RESULTS.md). So such connections
//! use Reno, which unprivileged processes may always choose.
//!
//! Pacing is switched on when a paced congestion control starts on a
//! socket and a later switch does not turn it off, so the choice must be
//! made before the connection is established: the P2P listener is set to
//! Reno (accepted connections inherit it), and an accepted connection from
//! another host is switched back to the system's choice before any byte
//! moves: across a real network, pacing is what BBR is for. Our own
//! connections to a peer on this host (a push sends it a FILE_DATA) are
//! made unpaced before their SYN goes out ([`connect`]).

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// The unpaced congestion control used between peers on one host.
pub const UNPACED: &str = "reno";

/// Sets a socket's congestion control; false if the kernel refused (the
/// socket then keeps what it had) or the platform has no such option.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn set_congestion_control(socket: &impl AsRawFd, name: &str) -> bool {
    // SAFETY: the fd is a TCP socket owned by `socket` for the call; the
    // option value is a byte string we own, with its exact length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    rc == 0
}

/// See the Linux version: elsewhere the system's choice stays.
#[cfg(not(target_os = "linux"))]
pub fn set_congestion_control(_socket: &impl AsRawFd, _name: &str) -> bool {
    false
}

/// Whether a connection between `local` and `peer` stays on this host
/// (IPv4-mapped IPv6 addresses, from a dual-stack listener, as IPv4).
pub fn same_host(local: IpAddr, peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    peer.is_loopback() || peer == local.to_canonical()
}

/// The P2P listener: what the system would have used (to give back to
/// connections from other hosts), after switching the listener itself to
/// [`UNPACED`]. `None`: nothing was changed.
pub fn unpaced_listener(listener: &impl AsRawFd) -> Option<String> {
    let system = congestion_control(listener)?;
    if system == UNPACED || !set_congestion_control(listener, UNPACED) {
        return None;
    }
    Some(system)
}

/// An accepted connection (inheriting [`UNPACED`] from the listener):
/// one from another host gets the system's congestion control back.
pub fn accepted(stream: &impl AsRawFd, local: IpAddr, peer: IpAddr, system: &str) {
    if !same_host(local, peer) {
        set_congestion_control(stream, system);
    }
}

/// Starts a non-blocking connect, as `mio::net::TcpStream::connect` does.
/// With `unpaced` (the listener was switched, see [`unpaced_listener`]) a
/// connection to this host (loopback, or `local`, our own address) is set
/// to [`UNPACED`] before it is set up.
pub fn connect(
    to: SocketAddr,
    local: Option<IpAddr>,
    unpaced: bool,
) -> io::Result<mio::net::TcpStream> {
    let here = to.ip().to_canonical().is_loopback() || local.is_some_and(|l| same_host(l, to.ip()));
    if !(unpaced && here) {
        return mio::net::TcpStream::connect(to);
    }
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    set_congestion_control(&socket, UNPACED);
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// The congestion control a socket uses (for tests and logs); `None`
/// where the platform has no such option.
#[cfg(not(target_os = "linux"))]
pub fn congestion_control(_stream: &impl AsRawFd) -> Option<String> {
    None
}

/// The congestion control a socket uses (for tests and logs).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn congestion_control(stream: &impl AsRawFd) -> Option<String> {
    let mut buf = [0u8; 32];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the buffer we own
    // and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let name = &buf[..(len as usize).min(buf.len())];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    #[test]
    fn connections_from_this_host_go_unpaced_and_others_keep_the_system_choice() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let before = congestion_control(&listener).expect("TCP_CONGESTION readable");
        let system = unpaced_listener(&listener);
        if before == UNPACED {
            assert_eq!(system, None);
        } else {
            assert_eq!(system.as_deref(), Some(before.as_str()));
        }
        assert_eq!(congestion_control(&listener).as_deref(), Some(UNPACED));
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, from) = listener.accept().unwrap();
        // Inherited from the listener, before the connection was set up.
        assert_eq!(congestion_control(&server).as_deref(), Some(UNPACED));
        let local = server.local_addr().unwrap().ip();
        accepted(&server, local, from.ip(), &before);
        assert_eq!(congestion_control(&server).as_deref(), Some(UNPACED));
        // A connection from another host gets the system's choice back.
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (other, _) = listener.accept().unwrap();
        let far = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        accepted(&other, local, far, &before);
        assert_eq!(congestion_control(&other).as_deref(), Some(before.as_str()));
    }

    #[test]
    fn our_connections_to_this_host_are_unpaced_from_the_start() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = listener.local_addr().unwrap();
        let system = congestion_control(&listener).unwrap();
        let stream = connect(to, None, true).unwrap();
        assert_eq!(congestion_control(&stream).as_deref(), Some(UNPACED));
        // The non-blocking connect completes, and bytes go through.
        let (mut server, _) = listener.accept().unwrap();
        let mut std_stream = wait_connected(stream);
        std::io::Write::write_all(&mut std_stream, b"hi").unwrap();
        let mut got = [0u8; 2];
        std::io::Read::read_exact(&mut server, &mut got).unwrap();
        assert_eq!(&got, b"hi");
        // Without the listener switched, the system's choice stays.
        let plain = connect(to, None, false).unwrap();
        assert_eq!(congestion_control(&plain).as_deref(), Some(system.as_str()));
    }

    /// The mio stream as a blocking std one, once its connect completed.
    #[allow(unsafe_code)]
    fn wait_connected(stream: mio::net::TcpStream) -> TcpStream {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the fd is moved out of the mio stream, owned once.
        let s = unsafe { TcpStream::from_raw_fd(stream.into_raw_fd()) };
        s.set_nonblocking(false).unwrap();
        let t = std::time::Instant::now();
        while s.peer_addr().is_err() {
            assert!(t.elapsed().as_secs() < 10, "connect never completed");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        s
    }

    #[test]
    fn same_host_means_loopback_or_our_own_address() {
        let ours = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
        assert!(same_host(ours, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert!(same_host(ours, ours));
        assert!(!same_host(ours, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 6))));
    }
}
