//! Support for the crash-consistency and hostile-client tests: memory
//! sampling from `/proc`, a fake peer that serves GET_FILE at a chosen pace,
//! streamed FILE_DATA writers, and seeds from the environment.

use super::{object_end, read_object};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---- /proc ---------------------------------------------------------------

/// A field of `/proc/<pid>/status` in KiB (e.g. `RssAnon`, `VmHWM`); None
/// once the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The anonymous resident memory of `pid` in KiB (heap, stacks, anonymous
/// maps; not the binary's pages nor mapped files).
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon")
}

/// A thread reading a process's `RssAnon` every few milliseconds and
/// keeping the peak. Stops when dropped.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
    pid: u32,
}

impl RssSampler {
    /// Starts sampling `pid` every `every` (10–20 ms is plenty: the peer's
    /// buffers live at least that long).
    pub fn start(pid: u32, every: Duration) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_anon_kib(pid).unwrap_or(0)));
        let samples = Arc::new(AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, st) = (peak.clone(), samples.clone(), stop.clone());
        let handle = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match rss_anon_kib(pid) {
                    Some(kib) => {
                        p.fetch_max(kib, Ordering::SeqCst);
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    None => break,
                }
                thread::sleep(every);
            }
        });
        Self {
            peak,
            samples,
            stop,
            handle: Some(handle),
            pid,
        }
    }
    /// Peak RssAnon so far, KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
    /// Current RssAnon, KiB (0 if the process is gone).
    pub fn now_kib(&self) -> u64 {
        rss_anon_kib(self.pid).unwrap_or(0)
    }
    /// How many samples were taken.
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::SeqCst)
    }
    /// Stops sampling (after one last sample); the peak in KiB.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.peak_kib()
    }
    fn halt(&mut self) {
        if let Some(kib) = rss_anon_kib(self.pid) {
            self.peak.fetch_max(kib, Ordering::SeqCst);
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.halt();
    }
}

// ---- seeds ---------------------------------------------------------------

/// `PEERSHARE_TEST_SEED` if set (decimal), else a fresh seed from the clock.
pub fn seed_from_env() -> u64 {
    match std::env::var("PEERSHARE_TEST_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("PEERSHARE_TEST_SEED={s:?} is not a decimal u64")),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}

/// A decimal environment variable, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a number")),
        Err(_) => default,
    }
}

// ---- files as the network sends them ----------------------------------------

/// A file a fake peer can serve or push.
#[derive(Clone, Debug)]
pub struct NetFile {
    /// `file_name` as sent.
    pub name: String,
    /// `file_owner`.
    pub owner: String,
    /// `file_timestamp`'s JSON text (e.g. `1750000000`).
    pub ts: String,
    /// The bytes.
    pub bytes: Arc<Vec<u8>>,
    /// `file_id` as sent (normally sha256(bytes + ts)).
    pub id: String,
}

impl NetFile {
    /// A file whose id verifies.
    pub fn new(name: &str, owner: &str, ts: u64, bytes: Vec<u8>) -> Self {
        let ts = ts.to_string();
        let id = super::file_id(&bytes, &ts);
        Self {
            name: name.into(),
            owner: owner.into(),
            ts,
            bytes: Arc::new(bytes),
            id,
        }
    }
    /// Its record (`files` of a GOSSIP_REPLY, ANNOUNCE fields).
    pub fn record(&self) -> Value {
        json!({
            "file_name": self.name,
            "file_size": self.bytes.len(),
            "file_id": self.id,
            "file_owner": self.owner,
            "file_timestamp": serde_json::from_str::<Value>(&self.ts).expect("ts is JSON"),
        })
    }
    /// The FILE_DATA header up to and including `"data": "`.
    fn header(&self) -> Vec<u8> {
        let mut head = json!({
            "type": "FILE_DATA",
            "file_id": self.id,
            "file_name": self.name,
            "file_owner": self.owner,
            "file_size": self.bytes.len(),
            "file_timestamp": serde_json::from_str::<Value>(&self.ts).expect("ts is JSON"),
        })
        .to_string()
        .into_bytes();
        head.pop(); // the closing brace
        head.extend_from_slice(b", \"data\": \"");
        head
    }
}

/// How fast a fake writes FILE_DATA: `chunk` hex bytes, then `pause`.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Bytes of hex per write.
    pub chunk: usize,
    /// Pause after each write.
    pub pause: Duration,
}

impl Pace {
    /// As fast as the socket takes it.
    pub const FULL: Pace = Pace {
        chunk: 256 * 1024,
        pause: Duration::ZERO,
    };
}

/// Writes `file` as one FILE_DATA object (data last, as R and H do) at
/// `pace`, stopping early (Err) if `stop` is set or the other side goes
/// away. Returns the bytes written.
pub fn write_file_data(
    s: &mut TcpStream,
    file: &NetFile,
    pace: Pace,
    stop: &AtomicBool,
) -> std::io::Result<u64> {
    write_file_data_upto(s, file, pace, stop, None)
}

/// [`write_file_data`], but with `cut = Some(n)` only the header and the
/// hex of the first `n` bytes are written: the object never ends.
pub fn write_file_data_upto(
    s: &mut TcpStream,
    file: &NetFile,
    pace: Pace,
    stop: &AtomicBool,
    cut: Option<usize>,
) -> std::io::Result<u64> {
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut written = 0u64;
    let head = file.header();
    s.write_all(&head)?;
    written += head.len() as u64;
    let raw_chunk = (pace.chunk / 2).max(1);
    let mut hex = vec![0u8; raw_chunk * 2];
    let bytes = &file.bytes[..cut.unwrap_or(file.bytes.len()).min(file.bytes.len())];
    for piece in bytes.chunks(raw_chunk) {
        if stop.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("stopped"));
        }
        let out = &mut hex[..piece.len() * 2];
        faster_hex::hex_encode(piece, out).expect("hex buffer size");
        s.write_all(out)?;
        written += out.len() as u64;
        if !pace.pause.is_zero() {
            thread::sleep(pace.pause);
        }
    }
    if cut.is_some() {
        return Ok(written);
    }
    s.write_all(b"\"}")?;
    Ok(written + 2)
}

/// Pushes `file` to 127.0.0.1:`port` as an unsolicited FILE_DATA on a new
/// connection, then closes.
pub fn push_file(port: u16, file: &NetFile, pace: Pace, stop: &AtomicBool) -> std::io::Result<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let n = write_file_data(&mut s, file, pace, stop)?;
    let _ = s.shutdown(Shutdown::Write);
    Ok(n)
}

// ---- a fake peer that serves files ------------------------------------------

/// A fake peer's P2P side that answers GET_FILE with FILE_DATA (from its
/// files, at its pace; not-found otherwise) and reads every other message
/// (a pushed FILE_DATA is read to its end and only counted, never kept).
/// Stops when dropped.
pub struct FileServer {
    /// Port it listens on.
    pub port: u16,
    files: Arc<Mutex<HashMap<String, NetFile>>>,
    pace: Arc<Mutex<Pace>>,
    kinds: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    /// Starts listening on 127.0.0.1:0.
    pub fn start(pace: Pace) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind file server");
        let port = listener.local_addr().expect("addr").port();
        let files = Arc::new(Mutex::new(HashMap::<String, NetFile>::new()));
        let pace = Arc::new(Mutex::new(pace));
        let kinds = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, p, k, st) = (files.clone(), pace.clone(), kinds.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, p, k, st) = (f.clone(), p.clone(), k.clone(), st.clone());
                thread::spawn(move || serve_one(conn, &f, &p, &k, &st));
            }
        });
        Self {
            port,
            files,
            pace,
            kinds,
            stop,
        }
    }
    /// Serves `file` from now on.
    pub fn add(&self, file: NetFile) {
        self.files.lock().unwrap().insert(file.id.clone(), file);
    }
    /// Changes the pace of replies started from now on.
    pub fn set_pace(&self, pace: Pace) {
        *self.pace.lock().unwrap() = pace;
    }
    /// The `type` of every message received so far.
    pub fn kinds(&self) -> Vec<String> {
        self.kinds.lock().unwrap().clone()
    }
    /// How many messages of `kind` arrived.
    pub fn count(&self, kind: &str) -> usize {
        self.kinds().iter().filter(|k| *k == kind).count()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads a message's head (the bytes before a top-level `"data"` string is
/// long) and answers a GET_FILE; other messages are read to their end.
fn serve_one(
    mut conn: TcpStream,
    files: &Mutex<HashMap<String, NetFile>>,
    pace: &Mutex<Pace>,
    kinds: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // Small messages: up to the closing brace. Large ones (a FILE_DATA
    // pushed to us): counted by their type once it is seen, the rest
    // drained to EOF without keeping it.
    loop {
        if let Some(end) = object_end(&buf) {
            let kind = serde_json::from_slice::<Value>(&buf[..end])
                .ok()
                .and_then(|v| v["type"].as_str().map(String::from))
                .unwrap_or_else(|| "?".into());
            kinds.lock().unwrap().push(kind.clone());
            if kind == "GET_FILE" {
                let v: Value = serde_json::from_slice(&buf[..end]).unwrap_or_default();
                let id = v["file_id"].as_str().unwrap_or_default().to_string();
                let file = files.lock().unwrap().get(&id).cloned();
                let pace = *pace.lock().unwrap();
                match file {
                    Some(f) => {
                        let _ = write_file_data(&mut conn, &f, pace, stop);
                    }
                    None => {
                        let nf = br#"{"type": "FILE_DATA", "file_id": null, "file_name": null, "file_owner": null, "file_timestamp": null, "file_size": 0, "data": null}"#;
                        let _ = conn.write_all(nf);
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            }
            return;
        }
        if buf.len() > 4096 {
            // A big message: find its type in the head, then drain.
            let head = String::from_utf8_lossy(&buf[..4096]).into_owned();
            let kind = ["FILE_DATA", "GOSSIP_REPLY"]
                .into_iter()
                .find(|k| head.contains(&format!("\"{k}\"")))
                .unwrap_or("?");
            kinds.lock().unwrap().push(kind.to_string());
            while !stop.load(Ordering::SeqCst) {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            return;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends a GOSSIP from `peer_id` advertising 127.0.0.1:`reply_port` and
/// waits up to `within` for `reply_port`'s listener to have received one
/// more GOSSIP_REPLY than `before` (see [`FileServer::count`]).
pub fn gossip_roundtrip(
    peer_port: u16,
    peer_id: &str,
    server: &FileServer,
    within: Duration,
) -> Option<Duration> {
    let before = server.count("GOSSIP_REPLY");
    let started = Instant::now();
    let id = format!("{:032x}", rand::random::<u128>());
    super::send_raw(peer_port, &super::gossip(peer_id, server.port, &id)).ok()?;
    super::wait_until(within, || server.count("GOSSIP_REPLY") > before).then(|| started.elapsed())
}

/// Reads one message from a new connection's reply (GET_FILE style).
pub fn request(port: u16, msg: &[u8], timeout: Duration) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(msg).ok()?;
    read_object(&mut s, timeout)
}
