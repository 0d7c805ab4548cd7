//! Fault injection on real sockets, 127.0.0.1 only (no netem: every fault
//! is made in userspace).
//!
//! - [`ChaosProxy`]: a TCP relay that misbehaves on the upstream → client
//!   direction (where FILE_DATA flows): delay, bandwidth cap, 1-byte writes,
//!   stall, reset, clean close mid-message, one corrupted hex digit.
//! - Sockets with shrunk kernel buffers ([`connect_with_rcvbuf`],
//!   [`set_sndbuf`]) and a streaming FILE_DATA reader/writer to drive them.
//! - [`PyPeer`]: a fake peer that behaves like the network's buggy Python
//!   peers (cuts FILE_DATA, never closes, floods GOSSIP, odd values).
//!
//! Every thread started here polls a stop flag at least every
//! [`POLL`] and is joined when its owner is dropped.

use super::{object_end, read_object, send_raw};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often blocked helper threads look at their stop flags.
pub const POLL: Duration = Duration::from_millis(20);

/// Most connections one proxy relays at once; more are refused (closed).
pub const MAX_PROXY_CONNS: usize = 32;

/// Sleeps until `until`, in [`POLL`] steps; false if `stop` was raised.
fn sleep_until(until: Instant, stop: &dyn Fn() -> bool) -> bool {
    loop {
        if stop() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        thread::sleep((until - now).min(POLL));
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// `write_all` on a socket with a short write timeout, giving up (Err) if
/// `stop` is raised while the peer doesn't read.
fn write_all_polling(s: &mut TcpStream, mut buf: &[u8], stop: &dyn Fn() -> bool) -> io::Result<()> {
    while !buf.is_empty() {
        if stop() {
            return Err(io::Error::other("stopped"));
        }
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---- socket options ----------------------------------------------------

fn setsockopt_int(fd: RawFd, level: i32, opt: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt(2) on an open socket with a pointer to a local int
    // and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt_int(fd: RawFd, level: i32, opt: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt(2) on an open socket into a local int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            &mut value as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// SO_LINGER {on, 0}: the next close sends RST instead of FIN.
pub fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) with a pointer to a local linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes written to `s` that the peer has not acknowledged yet (TIOCOUTQ);
/// 0 if it can't be read.
pub fn unsent(s: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl(2) TIOCOUTQ on an open socket, into a local int.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// Sets SO_SNDBUF (the kernel doubles it and applies its minimum).
pub fn set_sndbuf(s: &TcpStream, bytes: i32) -> io::Result<()> {
    setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, bytes)
}

/// The effective SO_SNDBUF of `s`.
pub fn sndbuf(s: &TcpStream) -> usize {
    getsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap_or(-1) as usize
}

/// The effective SO_RCVBUF of `s`.
pub fn rcvbuf(s: &TcpStream) -> usize {
    getsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(-1) as usize
}

/// Connects to 127.0.0.1:`port` from a socket whose SO_RCVBUF was set to
/// `bytes` *before* connecting (so the window it advertises is small from
/// the SYN on).
pub fn connect_with_rcvbuf(port: u16, bytes: i32) -> io::Result<TcpStream> {
    // SAFETY: socket(2); the fd is owned by the TcpStream right away, so
    // every error path below closes it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect(2) with a pointer to a local sockaddr_in and its size.
    let rc = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// Waits up to `timeout` for `s` to become writable (poll(2)).
fn wait_writable(s: &TcpStream, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd that lives on the stack.
    let rc = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    rc > 0
}

// ---- data ----------------------------------------------------------------

/// Fast deterministic bytes (xorshift64).
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Another hex digit than `c` (which must be one).
fn other_hex_digit(c: u8) -> u8 {
    match c {
        b'0'..=b'8' | b'a'..=b'e' | b'A'..=b'E' => c + 1,
        b'9' => b'0',
        _ => b'a', // 'f' or 'F'
    }
}

/// A uuid4-looking id from a counter-seeded xorshift.
pub fn fresh_gossip_id(n: u64) -> String {
    let b = pseudo_random_bytes(16, n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FFEE);
    let h = faster_hex::hex_string(&b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Resident memory of process `pid` in KiB: (VmRSS, RssAnon).
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some((field("VmRSS:")?, field("RssAnon:").unwrap_or(0)))
}

// ---- the chaos proxy -------------------------------------------------------

/// What the proxy does to the bytes flowing upstream → client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Relay faithfully.
    Pass,
    /// Every chunk arrives this much later (latency, not per-chunk sleep).
    Delay(Duration),
    /// At most this many bytes per second.
    Bandwidth(u64),
    /// One `write` per byte (TCP_NODELAY on).
    OneByteWrites,
    /// Relay this many bytes, then nothing more; both sockets stay open
    /// until the client gives up (or the proxy is dropped).
    StallAfter(u64),
    /// Relay this many bytes, then reset the client connection (RST).
    ResetAfter(u64),
    /// Relay this many bytes, then close the client connection cleanly (FIN).
    CloseAfter(u64),
    /// Relay everything, but change the first hex digit at or after this
    /// stream offset into another hex digit: it still parses, the hash fails.
    CorruptByte(u64),
}

#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    active: AtomicUsize,
    refused: AtomicUsize,
    faulted: AtomicUsize,
    down_bytes: AtomicU64,
}

/// A relay on 127.0.0.1:0 to 127.0.0.1:`upstream`, misbehaving per its
/// [`Mode`]. Stops (and joins every thread) when dropped.
pub struct ChaosProxy {
    /// Port it listens on.
    pub port: u16,
    /// What it does.
    pub mode: Mode,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ChaosProxy {
    /// Starts relaying to 127.0.0.1:`upstream_port`.
    pub fn start(upstream_port: u16, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind chaos proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (st, ct, cn) = (stop.clone(), counters.clone(), conns.clone());
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port));
        let accept = thread::Builder::new()
            .name(format!("chaos-accept-{port}"))
            .spawn(move || {
                while !st.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if ct.active.load(Ordering::SeqCst) >= MAX_PROXY_CONNS {
                                ct.refused.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            ct.accepted.fetch_add(1, Ordering::SeqCst);
                            ct.active.fetch_add(1, Ordering::SeqCst);
                            let (st, ct) = (st.clone(), ct.clone());
                            let h = thread::spawn(move || {
                                relay(client, upstream, mode, &st, &ct);
                                ct.active.fetch_sub(1, Ordering::SeqCst);
                            });
                            let mut all = cn.lock().unwrap();
                            all.retain(|h: &JoinHandle<()>| !h.is_finished());
                            all.push(h);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .expect("spawn accept thread");
        Self {
            port,
            mode,
            stop,
            counters,
            accept: Some(accept),
            conns,
        }
    }
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }
    /// Connections being relayed now.
    pub fn active(&self) -> usize {
        self.counters.active.load(Ordering::SeqCst)
    }
    /// Times the mode's fault fired (stall began, reset, close, corruption).
    pub fn faulted(&self) -> usize {
        self.counters.faulted.load(Ordering::SeqCst)
    }
    /// Bytes relayed upstream → client, all connections.
    pub fn down_bytes(&self) -> u64 {
        self.counters.down_bytes.load(Ordering::SeqCst)
    }
    /// Waits until the fault has fired `n` times.
    pub fn wait_faulted(&self, n: usize, timeout: Duration) -> bool {
        super::wait_until(timeout, || self.faulted() >= n)
    }
    /// Waits until no connection is being relayed.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        super::wait_until(timeout, || self.active() == 0)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let handles: Vec<_> = std::mem::take(&mut *self.conns.lock().unwrap());
        for h in handles {
            let _ = h.join();
        }
    }
}

/// Chunks waiting to be released to the client, and the thread releasing them.
type DelayLine = (mpsc::Sender<(Instant, Vec<u8>)>, JoinHandle<()>);

/// One relayed connection: client → upstream on a helper thread (as is),
/// upstream → client here (through the mode).
fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: Mode,
    stop: &Arc<AtomicBool>,
    counters: &Counters,
) {
    let Ok(mut up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(1)) else {
        return;
    };
    for s in [&client, &up] {
        let _ = s.set_nonblocking(false);
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(POLL));
        let _ = s.set_write_timeout(Some(POLL));
    }
    // client_eof: the client closed (or failed); done: tear everything down.
    let client_eof = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let upward = {
        let (Ok(mut from), Ok(mut to)) = (client.try_clone(), up.try_clone()) else {
            return;
        };
        let (stop, client_eof, done) = (stop.clone(), client_eof.clone(), done.clone());
        thread::spawn(move || {
            let quit = || stop.load(Ordering::SeqCst) || done.load(Ordering::SeqCst);
            let mut buf = vec![0u8; 16 * 1024];
            while !quit() {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if write_all_polling(&mut to, &buf[..n], &quit).is_err() {
                            break;
                        }
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => break,
                }
            }
            client_eof.store(true, Ordering::SeqCst);
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let quit = || stop.load(Ordering::SeqCst);
    let client_gone = || quit() || client_eof.load(Ordering::SeqCst);

    // Delay: a second writer thread releases each chunk when it is due.
    let mut delay_line: Option<DelayLine> = None;
    if let Mode::Delay(d) = mode {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let Ok(mut to) = client.try_clone() else {
            return;
        };
        let (stop, client_eof) = (stop.clone(), client_eof.clone());
        let h = thread::spawn(move || {
            let gone = || stop.load(Ordering::SeqCst) || client_eof.load(Ordering::SeqCst);
            for (due, chunk) in rx {
                if !sleep_until(due, &gone) || write_all_polling(&mut to, &chunk, &gone).is_err() {
                    return;
                }
            }
            // Upstream finished: pass the EOF on, `d` after it happened.
            let _ = sleep_until(Instant::now() + d, &gone);
            let _ = to.shutdown(Shutdown::Write);
        });
        delay_line = Some((tx, h));
    }

    let mut buf = vec![0u8; 64 * 1024];
    let mut sent: u64 = 0; // relayed to the client
    let mut first_byte: Option<Instant> = None;
    let mut corrupt_pending = matches!(mode, Mode::CorruptByte(_));
    let mut clean_eof = false;
    'relay: while !quit() {
        let n = match up.read(&mut buf) {
            Ok(0) => {
                clean_eof = true;
                break;
            }
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                if client_eof.load(Ordering::SeqCst) {
                    // The client is gone and upstream is silent: nothing
                    // left to relay.
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        let chunk = &mut buf[..n];
        let start = *first_byte.get_or_insert_with(Instant::now);
        let relayed = match mode {
            Mode::Pass => write_all_polling(&mut client, chunk, &client_gone).map(|_| n as u64),
            Mode::Delay(d) => {
                let tx = &delay_line.as_ref().expect("delay line").0;
                if tx.send((Instant::now() + d, chunk.to_vec())).is_err() {
                    break;
                }
                Ok(n as u64)
            }
            Mode::Bandwidth(bps) => {
                let slice = (bps / 50).max(1) as usize;
                let mut done_here = 0u64;
                for part in chunk.chunks(slice) {
                    if write_all_polling(&mut client, part, &client_gone).is_err() {
                        break 'relay;
                    }
                    done_here += part.len() as u64;
                    counters
                        .down_bytes
                        .fetch_add(part.len() as u64, Ordering::SeqCst);
                    let due =
                        start + Duration::from_secs_f64((sent + done_here) as f64 / bps as f64);
                    if !sleep_until(due, &client_gone) {
                        break 'relay;
                    }
                }
                sent += done_here;
                continue;
            }
            Mode::OneByteWrites => {
                for b in chunk.iter() {
                    if write_all_polling(&mut client, std::slice::from_ref(b), &client_gone)
                        .is_err()
                    {
                        break 'relay;
                    }
                    sent += 1;
                    counters.down_bytes.fetch_add(1, Ordering::SeqCst);
                }
                continue;
            }
            Mode::StallAfter(k) | Mode::ResetAfter(k) | Mode::CloseAfter(k) => {
                let take = (k.saturating_sub(sent) as usize).min(n);
                if write_all_polling(&mut client, &chunk[..take], &client_gone).is_err() {
                    break;
                }
                sent += take as u64;
                counters.down_bytes.fetch_add(take as u64, Ordering::SeqCst);
                if sent < k {
                    continue;
                }
                counters.faulted.fetch_add(1, Ordering::SeqCst);
                match mode {
                    Mode::StallAfter(_) => {
                        // Hold both sockets, relay nothing, until the client
                        // gives up or the proxy stops.
                        while !client_gone() {
                            thread::sleep(POLL);
                        }
                    }
                    Mode::ResetAfter(_) => {
                        // The k bytes reach the client first: a reset drops
                        // whatever is still queued.
                        let sent_out = Instant::now() + Duration::from_secs(1);
                        while unsent(&client) > 0 && Instant::now() < sent_out && !client_gone() {
                            thread::sleep(Duration::from_millis(1));
                        }
                        let _ = set_linger_zero(&client);
                    }
                    _ => {
                        let _ = client.shutdown(Shutdown::Write);
                    }
                }
                break;
            }
            Mode::CorruptByte(k) => {
                if corrupt_pending && sent + n as u64 > k {
                    let from = k.saturating_sub(sent) as usize;
                    if let Some(i) = chunk[from..]
                        .iter()
                        .position(|c| HEX_VALUE[*c as usize] != 0xFF)
                    {
                        chunk[from + i] = other_hex_digit(chunk[from + i]);
                        corrupt_pending = false;
                        counters.faulted.fetch_add(1, Ordering::SeqCst);
                    }
                }
                write_all_polling(&mut client, chunk, &client_gone).map(|_| n as u64)
            }
        };
        match relayed {
            Ok(m) => {
                sent += m;
                counters.down_bytes.fetch_add(m, Ordering::SeqCst);
            }
            Err(_) => break,
        }
    }
    match delay_line.take() {
        Some((tx, h)) => {
            drop(tx); // the writer ends after the queued chunks
            let _ = h.join();
        }
        None if clean_eof => {
            let _ = client.shutdown(Shutdown::Write);
        }
        None => {}
    }
    // Let the client side finish on its own (or stop) before tearing down,
    // except after a reset/close/stall fault, which ends the connection now.
    if clean_eof {
        while !client_gone() {
            thread::sleep(POLL);
        }
    }
    done.store(true, Ordering::SeqCst);
    let _ = upward.join();
    // Dropping `client` (the last handle: the upward thread's clone is gone)
    // sends FIN, or RST if SO_LINGER 0 was set.
}

// ---- FILE_DATA streaming on raw sockets -------------------------------------

/// What [`read_file_data`] found.
#[derive(Debug)]
pub struct StreamedFileData {
    /// The envelope's fields (everything but `data`).
    pub header: Value,
    /// Decoded bytes.
    pub len: u64,
    /// SHA-256 of the decoded bytes followed by `ts_text`, lowercase hex.
    pub file_id: String,
    /// Offset of the first byte that differs from `expected`, if any.
    pub first_mismatch: Option<u64>,
    /// Reads it took.
    pub reads: u64,
    /// The server closed the connection right after the object.
    pub closed_after: bool,
    /// How long it took.
    pub elapsed: Duration,
}

/// How [`read_file_data`] reads: a slow reader.
#[derive(Clone, Copy, Debug)]
pub struct SlowRead {
    /// At most this many bytes per `read`.
    pub read_len: usize,
    /// Sleep `pause` after every this many bytes (0: never).
    pub pause_every: u64,
    /// How long each pause lasts.
    pub pause: Duration,
    /// Give up after this long overall.
    pub timeout: Duration,
}

/// Reads one FILE_DATA (as peershare writes it: `"data"` last) from `s`
/// without holding it in memory, as `how` says; decodes the hex on the fly,
/// hashes it with `ts_text` appended, compares with `expected` and reports
/// progress (file bytes) in `progress`. Fails on a malformed stream, or
/// after `how.timeout`.
pub fn read_file_data(
    s: &mut TcpStream,
    expected: &[u8],
    ts_text: &str,
    how: SlowRead,
    progress: &AtomicU64,
) -> Result<StreamedFileData, String> {
    let SlowRead {
        read_len,
        pause_every,
        pause,
        timeout,
    } = how;
    let started = Instant::now();
    let deadline = started + timeout;
    let mut buf = vec![0u8; read_len];
    let mut head: Vec<u8> = Vec::new();
    let mut header: Option<Value> = None;
    let mut hasher = Sha256::new();
    let mut out: Vec<u8> = Vec::with_capacity(128 * 1024);
    let (mut len, mut reads, mut since_pause) = (0u64, 0u64, 0u64);
    let mut hex = HexStream::default();
    let mut first_mismatch = None;
    let mut flush = |out: &mut Vec<u8>, len: &mut u64, mismatch: &mut Option<u64>| {
        hasher.update(&out[..]);
        if mismatch.is_none() {
            let at = *len as usize;
            if expected.get(at..at + out.len()) != Some(&out[..]) {
                let i = (0..out.len())
                    .find(|&i| expected.get(at + i) != Some(&out[i]))
                    .unwrap_or(0);
                *mismatch = Some((at + i) as u64);
            }
        }
        *len += out.len() as u64;
        progress.store(*len, Ordering::SeqCst);
        out.clear();
    };
    while !hex.done {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| format!("timed out after {len} bytes"))?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        let n = match s.read(&mut buf) {
            Ok(0) => return Err(format!("EOF after {len} bytes")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read failed after {len} bytes: {e}")),
        };
        reads += 1;
        if header.is_none() {
            head.extend_from_slice(&buf[..n]);
            let Some(pos) = find(&head, b"\"data\":") else {
                if head.len() > 64 * 1024 {
                    return Err("no \"data\" in the first 64 KiB".into());
                }
                continue;
            };
            let mut start = pos + b"\"data\":".len();
            while head.get(start).is_some_and(|c| c.is_ascii_whitespace()) {
                start += 1;
            }
            match head.get(start) {
                None => continue, // the opening quote is still to come
                Some(b'"') => {}
                Some(_) => return Err("data is not a string".into()),
            }
            let mut env = head[..pos].to_vec();
            while env
                .last()
                .is_some_and(|c| c.is_ascii_whitespace() || *c == b',')
            {
                env.pop();
            }
            env.push(b'}');
            header = Some(serde_json::from_slice(&env).map_err(|e| format!("envelope: {e}"))?);
            // What came with the envelope is the start of the hex.
            hex.feed(&head[start + 1..], &mut out)?;
            head = Vec::new();
        } else {
            hex.feed(&buf[..n], &mut out)?;
        }
        if out.len() >= 64 * 1024 || hex.done {
            flush(&mut out, &mut len, &mut first_mismatch);
        }
        since_pause += n as u64;
        if pause_every > 0 && since_pause >= pause_every {
            since_pause = 0;
            thread::sleep(pause);
        }
    }
    if first_mismatch.is_none() && len != expected.len() as u64 {
        first_mismatch = Some(len.min(expected.len() as u64));
    }
    hasher.update(ts_text.as_bytes());
    let file_id = faster_hex::hex_string(&hasher.finalize());
    // The server closes right after the object: EOF (not data, not silence).
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut one = [0u8; 64];
    let closed_after = matches!(s.read(&mut one), Ok(0)) || matches!(s.read(&mut one), Ok(0)); // a trailing "\n" may come first
    Ok(StreamedFileData {
        header: header.unwrap_or(Value::Null),
        len,
        file_id,
        first_mismatch,
        reads,
        closed_after,
        elapsed: started.elapsed(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Hex digit values; 0xFF for anything else.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0xFF,
        };
        i += 1;
    }
    t
};

/// Incremental decoder for the hex of `data` (after its opening quote) and
/// the `}` that must follow its closing quote.
#[derive(Default)]
struct HexStream {
    hi: Option<u8>,
    in_tail: bool,
    done: bool,
}

impl HexStream {
    fn digit(c: u8) -> Result<u8, String> {
        match HEX_VALUE[c as usize] {
            0xFF => Err(format!("not hex: {:?}", c as char)),
            v => Ok(v),
        }
    }

    fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if !self.in_tail {
            let quote = bytes.iter().position(|&c| c == b'"');
            let mut hex = &bytes[..quote.unwrap_or(bytes.len())];
            if let (Some(h), Some((&c, rest))) = (self.hi, hex.split_first()) {
                out.push(h << 4 | Self::digit(c)?);
                self.hi = None;
                hex = rest;
            }
            let pairs = hex.chunks_exact(2);
            if let [c] = pairs.remainder() {
                self.hi = Some(Self::digit(*c)?);
            }
            for p in pairs {
                let (h, l) = (HEX_VALUE[p[0] as usize], HEX_VALUE[p[1] as usize]);
                if (h | l) > 0x0F {
                    return Err(format!("not hex: {:?}", String::from_utf8_lossy(p)));
                }
                out.push(h << 4 | l);
            }
            let Some(q) = quote else {
                return Ok(());
            };
            if self.hi.is_some() {
                return Err("odd number of hex digits".into());
            }
            self.in_tail = true;
            bytes = &bytes[q + 1..];
        }
        for &c in bytes {
            if self.done {
                break;
            }
            match c {
                b'}' => self.done = true,
                c if c.is_ascii_whitespace() => {}
                c => return Err(format!("unexpected {:?} after the data", c as char)),
            }
        }
        Ok(())
    }
}

/// What [`write_file_data`] saw of the socket.
#[derive(Debug, Default, Clone)]
pub struct WriteStats {
    /// Bytes written.
    pub bytes: u64,
    /// `write` calls that took fewer bytes than offered.
    pub partial_writes: u64,
    /// `write` calls that returned WouldBlock.
    pub would_blocks: u64,
}

/// Writes `head`, the hex of `data`, then `"}` on a non-blocking `s`, at
/// most `piece` bytes per `write`, waiting for POLLOUT on WouldBlock; counts
/// partial writes and WouldBlocks. Gives up after `idle` without progress.
///
/// Keep `piece` near the send buffer's size. Measured on this kernel with a
/// plain reader: through a 4 KiB SO_SNDBUF, 32 MiB took 11 s in 128 KiB
/// writes but 0.1 s in 4 KiB writes (a large write goes out as one
/// loopback-MSS segment at a time, each apparently waiting for a delayed
/// ACK): the kernel, not the receiver, would set the pace.
pub fn write_file_data(
    s: &mut TcpStream,
    head: &[u8],
    data: &[u8],
    piece: usize,
    idle: Duration,
) -> io::Result<WriteStats> {
    s.set_nonblocking(true)?;
    let mut st = WriteStats::default();
    let mut hex = vec![0u8; 2 * 64 * 1024];
    send_counted(s, head, &mut st, idle)?;
    for chunk in data.chunks(64 * 1024) {
        let h = &mut hex[..2 * chunk.len()];
        faster_hex::hex_encode(chunk, h).map_err(|e| io::Error::other(format!("{e:?}")))?;
        for p in h.chunks(piece.max(1)) {
            send_counted(s, p, &mut st, idle)?;
        }
    }
    send_counted(s, b"\"}", &mut st, idle)?;
    Ok(st)
}

/// Writes all of `buf` on a non-blocking socket, counting partial writes
/// and WouldBlocks.
fn send_counted(
    s: &mut TcpStream,
    mut buf: &[u8],
    st: &mut WriteStats,
    idle: Duration,
) -> io::Result<()> {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if n < buf.len() {
                    st.partial_writes += 1;
                }
                st.bytes += n as u64;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                st.would_blocks += 1;
                if !wait_writable(s, idle) {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "reader stalled"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---- a fake peer that behaves like the buggy Python peers ---------------------

/// A file as a Python peer holds it: JSON texts kept as the peer writes them.
#[derive(Clone, Debug)]
pub struct PyFile {
    /// Name.
    pub name: String,
    /// Bytes.
    pub bytes: Vec<u8>,
    /// Owner's peerId.
    pub owner: String,
    /// `file_timestamp` as JSON text (`1744169352.0`, `"Sun Jun 15 ..."`).
    pub ts: String,
    /// `file_size` as JSON text (MB floats: `2.2`, `3.7e-05`, `0.0`).
    pub size: String,
    /// `file_id`.
    pub id: String,
}

impl PyFile {
    /// A file whose id is `sha256(bytes + str(timestamp))` as Python computes
    /// it (the JSON text of a number; a string's contents).
    pub fn new(name: &str, bytes: &[u8], owner: &str, ts: &str, size: &str) -> Self {
        let py_str = match serde_json::from_str::<Value>(ts) {
            Ok(Value::String(s)) => s,
            _ => ts.to_string(),
        };
        Self {
            name: name.into(),
            bytes: bytes.to_vec(),
            owner: owner.into(),
            ts: ts.into(),
            size: size.into(),
            id: super::file_id(bytes, &py_str),
        }
    }
    /// Same, with the id given (e.g. hashed over another timestamp form).
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }
    /// The file record in `json.dumps` spacing.
    pub fn record_json(&self) -> String {
        format!(
            r#"{{"file_name": {}, "file_size": {}, "file_id": "{}", "file_owner": {}, "file_timestamp": {}}}"#,
            Value::from(self.name.as_str()),
            self.size,
            self.id,
            Value::from(self.owner.as_str()),
            self.ts
        )
    }
    /// The FILE_DATA envelope up to the opening quote of `data` (R style:
    /// `data` last).
    fn file_data_head(&self) -> String {
        format!(
            r#"{{"type": "FILE_DATA", "file_id": "{}", "file_name": {}, "file_owner": {}, "file_timestamp": {}, "file_size": {}, "data": ""#,
            self.id,
            Value::from(self.name.as_str()),
            Value::from(self.owner.as_str()),
            self.ts,
            self.size
        )
    }
}

/// How a [`PyPeer`] answers GET_FILE. Either way it never closes the
/// connection afterwards (R and A servers don't).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PyServe {
    /// The whole FILE_DATA.
    Complete,
    /// Only the first `n` hex digits of `data` (the `sendall` on a
    /// non-blocking socket that dies past ~4 MiB), then silence.
    CutAt(usize),
}

/// A fake Python peer: a listener on 127.0.0.1:0 that records every message
/// and answers GET_FILE per its [`PyServe`], holding the connection open.
pub struct PyPeer {
    /// Its peerId.
    pub peer_id: String,
    /// Its port.
    pub port: u16,
    files: Arc<Vec<PyFile>>,
    received: Arc<Mutex<Vec<Value>>>,
    /// Connections held open after a reply (and every accepted one, to
    /// unblock readers on drop).
    open: Arc<Mutex<Vec<TcpStream>>>,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl PyPeer {
    /// Starts listening.
    pub fn start(peer_id: &str, files: Vec<PyFile>, serve: PyServe) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind python peer");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let files = Arc::new(files);
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (f, r, o, sv, st, cn) = (
            files.clone(),
            received.clone(),
            open.clone(),
            served.clone(),
            stop.clone(),
            conns.clone(),
        );
        let accept = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                if let Ok(c) = conn.try_clone() {
                    o.lock().unwrap().push(c);
                }
                let (f, r, sv, st) = (f.clone(), r.clone(), sv.clone(), st.clone());
                let h = thread::spawn(move || {
                    let Some(msg) = read_object(&mut conn, Duration::from_secs(5)) else {
                        return;
                    };
                    if msg["type"] == "GET_FILE" {
                        let file = f.iter().find(|x| msg["file_id"] == x.id.as_str());
                        let _ = conn.set_write_timeout(Some(POLL));
                        let quit = || st.load(Ordering::SeqCst);
                        let _ = match file {
                            Some(x) => {
                                let hex = faster_hex::hex_string(&x.bytes);
                                let cut = match serve {
                                    PyServe::Complete => hex.len(),
                                    PyServe::CutAt(n) => n.min(hex.len()),
                                };
                                let mut reply = x.file_data_head().into_bytes();
                                reply.extend_from_slice(&hex.as_bytes()[..cut]);
                                if cut == hex.len() {
                                    reply.extend_from_slice(b"\"}");
                                }
                                write_all_polling(&mut conn, &reply, &quit)
                            }
                            None => write_all_polling(
                                &mut conn,
                                br#"{"type": "FILE_DATA", "file_id": null, "file_name": null, "file_owner": null, "file_timestamp": null, "file_size": 0, "data": null}"#,
                                &quit,
                            ),
                        };
                        sv.fetch_add(1, Ordering::SeqCst);
                        // Never close: the clone in `open` keeps it alive.
                    }
                    r.lock().unwrap().push(msg);
                });
                let mut all = cn.lock().unwrap();
                all.retain(|h: &JoinHandle<()>| !h.is_finished());
                all.push(h);
            }
        });
        Self {
            peer_id: peer_id.into(),
            port,
            files,
            received,
            open,
            served,
            stop,
            accept: Some(accept),
            conns,
        }
    }
    /// Its files.
    pub fn files(&self) -> &[PyFile] {
        &self.files
    }
    /// GET_FILE requests answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
    /// Messages of this type received so far.
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == kind)
            .cloned()
            .collect()
    }
    /// Connections it accepted (it never closes one).
    pub fn open_connections(&self) -> usize {
        self.open.lock().unwrap().len()
    }
    /// How many of those the other side has closed.
    pub fn closed_by_peer(&self) -> usize {
        super::count_closed(&self.open.lock().unwrap())
    }
    /// Sends a GOSSIP_REPLY as an A-style peer writes it (string port,
    /// `peers` inside each record, a newline) listing its files.
    pub fn gossip_reply_to(&self, port: u16) -> io::Result<()> {
        let records: Vec<String> = self
            .files
            .iter()
            .map(|f| {
                let r = f.record_json();
                format!(r#"{}, "peers": ["{}"]}}"#, &r[..r.len() - 1], self.peer_id)
            })
            .collect();
        let msg = format!(
            "{{\"type\": \"GOSSIP_REPLY\", \"host\": \"127.0.0.1\", \"port\": \"{}\", \"peerId\": {}, \"files\": [{}]}}\n",
            self.port,
            Value::from(self.peer_id.as_str()),
            records.join(", ")
        );
        send_raw(port, msg.as_bytes())
    }
    /// Sends an ANNOUNCE of `file` with `from` = this peer (R style).
    pub fn announce_to(&self, port: u16, file: &PyFile) -> io::Result<()> {
        let r = file.record_json();
        let msg = format!(
            r#"{{"type": "ANNOUNCE", "from": {}, {}"#,
            Value::from(self.peer_id.as_str()),
            &r[1..]
        );
        debug_assert!(object_end(msg.as_bytes()) == Some(msg.len()));
        send_raw(port, msg.as_bytes())
    }
    /// Floods `target` with GOSSIPs, each with a fresh id and on its own
    /// connection, at about `per_sec` for `dur` (R-style forwarding); replies
    /// are addressed to this peer. Runs on a thread; returns how many it sent.
    pub fn flood(&self, target: u16, per_sec: u64, dur: Duration) -> JoinHandle<u64> {
        let (peer_id, port, stop) = (self.peer_id.clone(), self.port, self.stop.clone());
        thread::spawn(move || {
            let started = Instant::now();
            let mut sent = 0u64;
            while started.elapsed() < dur && !stop.load(Ordering::SeqCst) {
                let msg = serde_json::json!({
                    "type": "GOSSIP", "host": "127.0.0.1", "port": port,
                    "id": fresh_gossip_id(sent), "peerId": peer_id,
                });
                if send_raw(target, msg.to_string().as_bytes()).is_ok() {
                    sent += 1;
                }
                let due = started + Duration::from_secs_f64(sent as f64 / per_sec as f64);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(w);
                }
            }
            sent
        })
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let handles: Vec<_> = std::mem::take(&mut *self.conns.lock().unwrap());
        for h in handles {
            let _ = h.join();
        }
    }
}

/// GETs `path` from the HTTP port with an overall `timeout`: how long the
/// whole response took, or what went wrong and when.
pub fn http_probe(port: u16, path: &str, timeout: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    let at = |what: String| format!("{what} after {:?}", t.elapsed());
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| at(e.to_string()))?;
    let _ = s.set_write_timeout(Some(timeout));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| at(format!("write: {e}")))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = (t + timeout)
            .checked_duration_since(Instant::now())
            .ok_or_else(|| at(format!("timed out with {} bytes", buf.len())))?;
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(at(format!("read: {e} with {} bytes", buf.len()))),
        }
    }
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(at(format!(
            "status line {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(40)])
        )));
    }
    Ok(t.elapsed())
}
