//! A userspace link for benchmarks on one machine: a TCP relay on
//! 127.0.0.1 that caps each direction's bandwidth, watches the GET_FILEs
//! going up and the FILE_DATA hex coming down, and can cut the first
//! FILE_DATA it relays part-way or corrupt the data of every one (included
//! with `#[path]` by `examples/resume_bench.rs` and
//! `examples/swarm_bench.rs`).
//!
//! A holder listens on a private port (`--bind`) and advertises the
//! proxy's port, so everything other peers send it crosses the proxy.
//!
//! Bounds: at most [`MAX_CONNS`] connections relayed at once (more are
//! closed unanswered), a GET_FILE is parsed from at most [`MAX_REQUEST`]
//! bytes, a FILE_DATA's head is searched in at most [`MAX_HEAD`] bytes,
//! every blocking call wakes at least every [`POLL`] to look at the stop
//! flag, and every thread is joined when the proxy is dropped.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often a blocked thread looks at the stop flag.
pub const POLL: Duration = Duration::from_millis(20);
/// Most connections relayed at once by one proxy.
pub const MAX_CONNS: usize = 32;
/// Bytes of a connection's upward stream kept to parse its first message
/// (a GET_FILE is a few hundred bytes).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Bytes of a FILE_DATA searched for the start of its `data` string (the
/// envelope before it is a few hundred bytes).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest piece written at once: the pacing step (1.3 ms at 25 MB/s).
const PIECE: usize = 32 * 1024;
/// The key before the hex: every other field of a FILE_DATA comes before
/// it. Python peers write `"data": "` (json.dumps' spacing), ours
/// `"data":"`.
const DATA_KEY: &[u8] = br#""data""#;

/// Locks a mutex even if a relay thread panicked holding it (the counters
/// inside stay meaningful).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One direction of a link: chunks leave no faster than `bytes_per_sec`,
/// whichever connection sends them (a virtual clock of when the link is
/// next free, shared by all the proxy's connections in that direction).
struct Pacer {
    bytes_per_sec: f64,
    next_free: Mutex<Option<Instant>>,
}

impl Pacer {
    fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next_free: Mutex::new(None),
        }
    }

    /// Books `n` bytes on the link and returns when they may start; an
    /// idle link earns no credit (the booking starts now at the earliest).
    fn book(&self, n: usize) -> Instant {
        let now = Instant::now();
        let mut next = lock(&self.next_free);
        let start = next.map_or(now, |t| t.max(now));
        *next = Some(start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec));
        start
    }
}

/// Cuts the first FILE_DATA any proxy holding this plan relays, once
/// `after_hex` digits of its data went through. Shared by several proxies,
/// it cuts whichever holder the downloader asks first.
#[derive(Clone)]
pub struct CutPlan {
    armed: Arc<AtomicBool>,
    after_hex: u64,
}

impl CutPlan {
    /// A plan that cuts once, after `after_hex` hex digits of data.
    pub fn once_after(after_hex: u64) -> Self {
        Self {
            armed: Arc::new(AtomicBool::new(true)),
            after_hex,
        }
    }

    /// Takes the cut for the calling connection; only one ever gets it.
    fn claim(&self) -> Option<u64> {
        self.armed
            .swap(false, Ordering::SeqCst)
            .then_some(self.after_hex)
    }
}

/// Corrupts every FILE_DATA a proxy relays: in each `data` string one hex
/// digit is swapped for another valid one at file byte `first_byte`,
/// `first_byte + every_bytes`, ... counted from that string's first byte.
/// The JSON and the hex stay valid, so only a hash of the content shows it
/// (a ranged reply of more than `first_byte` bytes is always hit).
#[derive(Clone, Copy, Debug)]
pub struct Corruption {
    /// The first byte changed in each `data` string.
    pub first_byte: u64,
    /// Bytes between two changed bytes (at least 1).
    pub every_bytes: u64,
}

impl Corruption {
    /// The hex index (from the start of `data`) of the first digit changed.
    fn first_hex(&self) -> u64 {
        2 * self.first_byte
    }

    /// Hex digits between two changed digits.
    fn step_hex(&self) -> u64 {
        2 * self.every_bytes.max(1)
    }
}

/// Another valid hex digit than `d` (any digit case), so the hex decodes.
fn other_digit(d: u8) -> u8 {
    if d == b'0' {
        b'1'
    } else {
        b'0'
    }
}

/// A GET_FILE the proxy relayed to its holder.
#[derive(Clone, Debug)]
pub struct GetFileSeen {
    /// When its last byte went up.
    pub at: Instant,
    /// Its `offset` field (None: the whole file was asked).
    pub offset: Option<u64>,
    /// Its `length` field.
    pub length: Option<u64>,
}

/// The cut this proxy made.
#[derive(Clone, Copy, Debug)]
pub struct CutSeen {
    /// When the connection was cut.
    pub at: Instant,
    /// Hex digits of data relayed before it.
    pub hex_relayed: u64,
}

/// What went through one proxy, all connections together.
#[derive(Default)]
pub struct Traffic {
    /// Bytes relayed holder → downloader (the wire, envelope included).
    pub down_bytes: AtomicU64,
    /// Bytes relayed downloader → holder.
    pub up_bytes: AtomicU64,
    /// Hex digits of FILE_DATA `data` strings relayed down (file bytes × 2).
    pub data_hex: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Connections being relayed now.
    pub active: AtomicUsize,
    /// Hex digits changed by a [`Corruption`].
    pub corrupted: AtomicU64,
    get_files: Mutex<Vec<GetFileSeen>>,
    cut: Mutex<Option<CutSeen>>,
    last_data: Mutex<Option<Instant>>,
}

impl Traffic {
    /// The GET_FILEs relayed, in order.
    pub fn get_files(&self) -> Vec<GetFileSeen> {
        lock(&self.get_files).clone()
    }

    /// The cut, if this proxy made it.
    pub fn cut(&self) -> Option<CutSeen> {
        *lock(&self.cut)
    }

    /// When the last hex digit of data went down.
    pub fn last_data(&self) -> Option<Instant> {
        *lock(&self.last_data)
    }

    /// File bytes relayed as data (half the hex digits).
    pub fn data_bytes(&self) -> u64 {
        self.data_hex.load(Ordering::SeqCst) / 2
    }
}

/// A port on 127.0.0.1 bound for a proxy that doesn't relay yet: its
/// holder must be started knowing this port before the proxy knows the
/// holder's.
pub struct ProxyPort {
    listener: TcpListener,
    /// The port to advertise.
    pub port: u16,
}

impl ProxyPort {
    /// Binds 127.0.0.1 on a free port.
    pub fn bind() -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        Ok(Self { listener, port })
    }

    /// Starts relaying to 127.0.0.1:`upstream_port` at `bytes_per_sec` in
    /// each direction, cutting as `cut` says (if given).
    pub fn relay_to(
        self,
        upstream_port: u16,
        bytes_per_sec: u64,
        cut: Option<CutPlan>,
    ) -> io::Result<ThrottleProxy> {
        self.relay(upstream_port, bytes_per_sec, cut, None)
    }

    /// As [`ProxyPort::relay_to`] without a cut, changing the data of every
    /// FILE_DATA relayed down as `corruption` says.
    pub fn relay_corrupting(
        self,
        upstream_port: u16,
        bytes_per_sec: u64,
        corruption: Corruption,
    ) -> io::Result<ThrottleProxy> {
        self.relay(upstream_port, bytes_per_sec, None, Some(corruption))
    }

    fn relay(
        self,
        upstream_port: u16,
        bytes_per_sec: u64,
        cut: Option<CutPlan>,
        corruption: Option<Corruption>,
    ) -> io::Result<ThrottleProxy> {
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port));
        let link = Arc::new(Link {
            upstream,
            down: Pacer::new(bytes_per_sec),
            up: Pacer::new(bytes_per_sec),
            cut,
            corruption,
            traffic: Traffic::default(),
            stop: AtomicBool::new(false),
        });
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (l, c, listener) = (link.clone(), conns.clone(), self.listener);
        let accept = thread::Builder::new()
            .name(format!("proxy-accept-{}", self.port))
            .spawn(move || accept_loop(&listener, &l, &c))?;
        Ok(ThrottleProxy {
            port: self.port,
            link,
            accept: Some(accept),
            conns,
        })
    }
}

/// What every connection of one proxy shares.
struct Link {
    upstream: SocketAddr,
    down: Pacer,
    up: Pacer,
    cut: Option<CutPlan>,
    corruption: Option<Corruption>,
    traffic: Traffic,
    stop: AtomicBool,
}

impl Link {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A running relay. Dropping it stops and joins every thread, which
/// closes every socket.
pub struct ThrottleProxy {
    /// The port it listens on (the one its holder advertises).
    pub port: u16,
    link: Arc<Link>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ThrottleProxy {
    /// What went through it so far.
    pub fn traffic(&self) -> &Traffic {
        &self.link.traffic
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        self.link.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let handles = std::mem::take(&mut *lock(&self.conns));
        for h in handles {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, link: &Arc<Link>, conns: &Mutex<Vec<JoinHandle<()>>>) {
    while !link.stopped() {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                // WouldBlock (nothing pending) or a transient error alike.
                thread::sleep(Duration::from_millis(2));
                continue;
            }
        };
        let traffic = &link.traffic;
        if traffic.active.load(Ordering::SeqCst) >= MAX_CONNS {
            continue; // dropped: closed unanswered
        }
        traffic.accepted.fetch_add(1, Ordering::SeqCst);
        traffic.active.fetch_add(1, Ordering::SeqCst);
        let l = link.clone();
        let spawned = thread::Builder::new()
            .name("proxy-conn".into())
            .spawn(move || {
                relay(client, &l);
                l.traffic.active.fetch_sub(1, Ordering::SeqCst);
            });
        let mut all = lock(conns);
        all.retain(|h| !h.is_finished());
        match spawned {
            Ok(h) => all.push(h),
            Err(_) => {
                traffic.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Sleeps until `until` in [`POLL`] steps; false if `quit` said so first.
fn sleep_until(until: Instant, quit: &dyn Fn() -> bool) -> bool {
    loop {
        if quit() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        thread::sleep((until - now).min(POLL));
    }
}

/// Writes `buf` in paced pieces; Err if the peer fails or `quit` says so.
fn paced_write(
    to: &mut TcpStream,
    buf: &[u8],
    pacer: &Pacer,
    quit: &dyn Fn() -> bool,
) -> io::Result<()> {
    for piece in buf.chunks(PIECE) {
        if !sleep_until(pacer.book(piece.len()), quit) {
            return Err(io::Error::other("stopped"));
        }
        let mut rest = piece;
        while !rest.is_empty() {
            if quit() {
                return Err(io::Error::other("stopped"));
            }
            match to.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Where a downward stream is in its FILE_DATA.
enum DownState {
    /// Before the hex: the head so far, searched for [`DATA_KEY`].
    Head(Vec<u8>),
    /// In the hex: digits relayed so far, after how many to cut, and the
    /// index of the next digit to change.
    Data {
        hex: u64,
        cut_after: Option<u64>,
        next_flip: Option<u64>,
    },
    /// Past the data, or no FILE_DATA: relayed as is.
    Rest,
}

/// What to do with the next `chunk` coming down: how many of its bytes to
/// relay, and whether to cut after them. Counts the hex digits relayed and
/// changes those a [`Corruption`] picks, in place.
fn plan_down(state: &mut DownState, chunk: &mut [u8], link: &Link) -> (usize, bool) {
    let mut at = 0;
    if let DownState::Head(head) = state {
        let keep = chunk.len().min(MAX_HEAD.saturating_sub(head.len()));
        let from = head.len();
        head.extend_from_slice(&chunk[..keep]);
        match data_start(head) {
            Some(i) => {
                // The hex starts here, in this chunk (else the head before
                // it would have held the opening quote already).
                at = i - from;
                let cut_after = link.cut.as_ref().and_then(CutPlan::claim);
                let next_flip = link.corruption.as_ref().map(Corruption::first_hex);
                *state = DownState::Data {
                    hex: 0,
                    cut_after,
                    next_flip,
                };
            }
            None if head.len() >= MAX_HEAD => *state = DownState::Rest,
            None => return (chunk.len(), false),
        }
    }
    let DownState::Data {
        hex,
        cut_after,
        next_flip,
    } = state
    else {
        return (chunk.len(), false);
    };
    // Hex digits run to the closing quote (a digit is never a quote).
    let digits = chunk[at..]
        .iter()
        .position(|&b| b == b'"')
        .unwrap_or(chunk.len() - at);
    let (take, cut) = match *cut_after {
        Some(limit) if *hex + digits as u64 >= limit => ((limit - *hex) as usize, true),
        _ => (digits, false),
    };
    // Digits relayed here are `hex .. hex + take` of the data string.
    while let (Some(flip), Some(c)) = (*next_flip, link.corruption.as_ref()) {
        if flip >= *hex + take as u64 {
            break;
        }
        let i = at + (flip - *hex) as usize;
        chunk[i] = other_digit(chunk[i]);
        link.traffic.corrupted.fetch_add(1, Ordering::SeqCst);
        *next_flip = Some(flip + c.step_hex());
    }
    *hex += take as u64;
    link.traffic
        .data_hex
        .fetch_add(take as u64, Ordering::SeqCst);
    if take > 0 {
        *lock(&link.traffic.last_data) = Some(Instant::now());
    }
    if cut {
        *lock(&link.traffic.cut) = Some(CutSeen {
            at: Instant::now(),
            hex_relayed: *hex,
        });
        return (at + take, true);
    }
    if at + digits < chunk.len() {
        *state = DownState::Rest;
    }
    (chunk.len(), false)
}

/// Where the `data` string's first digit is in `head`: after `"data"`,
/// optional spaces, `:`, optional spaces and the opening quote. None until
/// that quote is in.
fn data_start(head: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = find(&head[from..], DATA_KEY) {
        let mut at = from + i + DATA_KEY.len();
        let skip_spaces = |mut at: usize| {
            while head.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
                at += 1;
            }
            at
        };
        at = skip_spaces(at);
        if head.get(at) == Some(&b':') {
            at = skip_spaces(at + 1);
            if head.get(at) == Some(&b'"') {
                return Some(at + 1);
            }
        }
        // A `"data"` that is no key (a file named so), or one not complete.
        from += i + 1;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Records the connection's first message if it is a GET_FILE, once it is
/// complete; true once nothing more needs reading into `request`.
fn note_request(request: &mut Vec<u8>, chunk: &[u8], traffic: &Traffic) -> bool {
    let keep = chunk.len().min(MAX_REQUEST.saturating_sub(request.len()));
    request.extend_from_slice(&chunk[..keep]);
    let mut values = serde_json::Deserializer::from_slice(request).into_iter::<Value>();
    match values.next() {
        Some(Ok(msg)) => {
            if msg["type"] == "GET_FILE" {
                lock(&traffic.get_files).push(GetFileSeen {
                    at: Instant::now(),
                    offset: msg["offset"].as_u64(),
                    length: msg["length"].as_u64(),
                });
            }
            true
        }
        // Incomplete: wait for more, within the bound.
        Some(Err(e)) if e.is_eof() => request.len() >= MAX_REQUEST,
        _ => true,
    }
}

/// One connection: downloader → holder on a helper thread, holder →
/// downloader here; both paced, the downward one watched and maybe cut.
fn relay(mut client: TcpStream, link: &Arc<Link>) {
    let Ok(mut up) = TcpStream::connect_timeout(&link.upstream, Duration::from_secs(2)) else {
        return;
    };
    for s in [&client, &up] {
        let _ = s.set_nonblocking(false);
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(POLL));
        let _ = s.set_write_timeout(Some(POLL));
    }
    // `done` ends both directions: a cut, an error, or both sides closed.
    let done = Arc::new(AtomicBool::new(false));
    let upward = {
        let (Ok(mut from), Ok(mut to)) = (client.try_clone(), up.try_clone()) else {
            return;
        };
        let (link, done) = (link.clone(), done.clone());
        thread::spawn(move || {
            let quit = || link.stopped() || done.load(Ordering::SeqCst);
            let mut buf = vec![0u8; PIECE];
            let mut request = Vec::new();
            let mut noted = false;
            while !quit() {
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if is_timeout(&e) => continue,
                    Err(_) => break,
                };
                if !noted {
                    noted = note_request(&mut request, &buf[..n], &link.traffic);
                }
                if paced_write(&mut to, &buf[..n], &link.up, &quit).is_err() {
                    break;
                }
                link.traffic.up_bytes.fetch_add(n as u64, Ordering::SeqCst);
            }
            // The downloader sent all it will: pass its end on.
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let quit = || link.stopped() || done.load(Ordering::SeqCst);
    let mut buf = vec![0u8; PIECE];
    let mut state = DownState::Head(Vec::new());
    let mut cut = false;
    while !quit() {
        let n = match up.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                if upward.is_finished() {
                    // The downloader closed and the holder is silent.
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        let (relay_now, cut_here) = plan_down(&mut state, &mut buf[..n], link);
        if paced_write(&mut client, &buf[..relay_now], &link.down, &quit).is_err() {
            break;
        }
        link.traffic
            .down_bytes
            .fetch_add(relay_now as u64, Ordering::SeqCst);
        if cut_here {
            cut = true;
            break;
        }
    }
    // A clean end (FIN) after what was relayed: the downloader reads every
    // byte sent before it, as when a holder's process dies.
    let _ = client.shutdown(Shutdown::Write);
    if cut {
        let _ = up.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Read);
    }
    // Leave the upward direction a moment to pass the downloader's own end
    // on, then stop it either way.
    let end = Instant::now() + Duration::from_secs(2);
    while !upward.is_finished() && Instant::now() < end && !link.stopped() {
        thread::sleep(Duration::from_millis(2));
    }
    done.store(true, Ordering::SeqCst);
    let _ = upward.join();
}
