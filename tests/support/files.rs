//! Support for the transfer tests: fake holders in the Python styles, file
//! payloads, deterministic data and storage-folder inspection.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
// ---- helpers for transfer tests ------------------------------------------

/// Finds the end of the top-level JSON object at the start of a stream, the
/// way the protocol frames messages: at its closing brace, tracking `{}`/`[]`
/// depth outside strings and honouring backslash escapes.
#[derive(Debug, Default)]
pub struct ObjectEnd {
    depth: usize,
    in_string: bool,
    escaped: bool,
    started: bool,
}

impl ObjectEnd {
    /// Feeds the next bytes; returns the index just past the closing brace
    /// when it is in `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.started = true;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.started && self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// Reads one JSON object from `s`, stopping at its closing brace (bytes after
/// it are not read or are dropped). Fails on EOF before the object ends, on a
/// read error, or when `timeout` passes.
pub fn read_object_bytes(s: &mut TcpStream, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut end = ObjectEnd::default();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))?;
        match s.read(&mut buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                if let Some(i) = end.feed(&buf[..n]) {
                    out.extend_from_slice(&buf[..i]);
                    return Ok(out);
                }
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if read_again(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// A read that timed out or was interrupted: try again.
fn read_again(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// How reading until EOF ended.
#[derive(Debug)]
pub struct UntilEof {
    /// Every byte read.
    pub bytes: Vec<u8>,
    /// Whether EOF was seen (false: the bound passed, the fake peer was
    /// stopped, or a read failed).
    pub eof: bool,
}

/// Reads until EOF (the way A-style Python clients read a FILE_DATA), giving
/// up when `timeout` passes or `stop` is set.
pub fn read_until_eof(s: &mut TcpStream, timeout: Duration, stop: &AtomicBool) -> UntilEof {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stop.load(Ordering::SeqCst) {
            return UntilEof { bytes, eof: false };
        }
        if s.set_read_timeout(Some(left.min(Duration::from_millis(100))))
            .is_err()
        {
            return UntilEof { bytes, eof: false };
        }
        match s.read(&mut buf) {
            Ok(0) => return UntilEof { bytes, eof: true },
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if read_again(&e) => {}
            Err(_) => return UntilEof { bytes, eof: false },
        }
    }
}

/// A file record (`file_name`, `file_size` in bytes, `file_id`, `file_owner`,
/// integer `file_timestamp`) with the id computed from `bytes`.
pub fn file_record(name: &str, bytes: &[u8], owner: &str, ts: u64) -> Value {
    serde_json::json!({
        "file_name": name,
        "file_size": bytes.len(),
        "file_id": file_id(bytes, &ts.to_string()),
        "file_owner": owner,
        "file_timestamp": ts,
    })
}

/// A FILE_DATA message: the fields of `record` (a JSON object, any `data`
/// in it ignored) then `data` as lowercase hex, last, as R and H peers send
/// it. No trailing newline.
pub fn file_data(record: &Value, data: &[u8]) -> Vec<u8> {
    let mut head = serde_json::Map::new();
    head.insert("type".into(), "FILE_DATA".into());
    if let Some(obj) = record.as_object() {
        for (k, v) in obj {
            if k != "data" && k != "type" {
                head.insert(k.clone(), v.clone());
            }
        }
    }
    let mut out = Value::Object(head).to_string().into_bytes();
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"data\":\"");
    out.extend_from_slice(faster_hex::hex_string(data).as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// The FILE_DATA a peershare peer sends for a ranged GET_FILE: the fields
/// of `record`, `offset` and `length`, then the hex of `data[offset..]`.
pub fn ranged_file_data(record: &Value, data: &[u8], offset: usize) -> Vec<u8> {
    let offset = offset.min(data.len());
    let mut head = record.clone();
    head["offset"] = offset.into();
    head["length"] = (data.len() - offset).into();
    file_data(&head, &data[offset..])
}

/// The not-found reply to GET_FILE (every field null, `file_size` 0).
pub fn file_not_found() -> Vec<u8> {
    br#"{"type":"FILE_DATA","file_id":null,"file_name":null,"file_owner":null,"file_timestamp":null,"file_size":0,"data":null}"#.to_vec()
}

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Deterministic pseudo-random bytes (xorshift64*), fast even in debug
/// builds: the same `seed` and `len` always give the same bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_pattern(&mut PatternGen::new(seed), &mut out);
    out
}

/// The generator behind [`pattern`], for writing big files in chunks.
pub struct PatternGen(u64);

impl PatternGen {
    /// A generator; seed 0 is replaced by a fixed non-zero value.
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Fills `buf` from `g`.
pub fn fill_pattern(g: &mut PatternGen, buf: &mut [u8]) {
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&g.next().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = g.next().to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

/// SHA-256 of a file, read in 1 MiB chunks, as lowercase hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).expect("open for hashing");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut buf).expect("read for hashing");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    faster_hex::hex_string(&h.finalize())
}

/// SHA-256 of bytes as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    faster_hex::hex_string(&Sha256::digest(bytes))
}

/// The names of the data files in a storage folder: everything but
/// `metadata.json*`, `.partial-*` temp files, the folder lock and the
/// page's token (`http-token`), sorted.
pub fn data_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !n.starts_with("metadata.json")
                        && !n.starts_with(".partial-")
                        && n != ".peershare.lock"
                        && n != "http-token"
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `.partial-*` temp files in a folder.
pub fn partial_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

impl PeerProc {
    /// The catalog entry named `name` in `/api/state`, if any.
    pub fn file_named(&self, name: &str) -> Option<Value> {
        self.files().into_iter().find(|f| f["file_name"] == name)
    }
    /// The catalog entry with this id in `/api/state`, if any.
    pub fn file_with_id(&self, id: &str) -> Option<Value> {
        self.files().into_iter().find(|f| f["file_id"] == id)
    }
    /// Number of stdout lines so far (to wait only for lines printed later).
    pub fn line_count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }
}

/// What a [`FakeHolder`] does with a GET_FILE: gets the request, the
/// connection (already past the request's closing brace) and the fake's stop
/// flag (set when the fake is dropped; long handlers must watch it).
pub type OnGetFile = dyn Fn(&Value, TcpStream, &AtomicBool) + Send + Sync;

/// How a [`FakeHolder`] writes its messages.
#[derive(Clone, Copy, Debug, Default)]
pub struct FakeStyle {
    /// Append `"\n"` after each message it sends (A-style peers do).
    pub newline: bool,
    /// Advertise the range extension (`"ranges": 1`) in its GOSSIP_REPLY,
    /// as a peershare peer does.
    pub ranges: bool,
}

struct FakeShared {
    id: String,
    port: u16,
    style: FakeStyle,
    files: Mutex<Vec<Value>>,
    received: Mutex<Vec<Value>>,
    stop: AtomicBool,
    on_get_file: Box<OnGetFile>,
}

impl FakeShared {
    fn send(&self, port: u16, msg: &Value) -> std::io::Result<()> {
        let mut bytes = msg.to_string().into_bytes();
        if self.style.newline {
            bytes.push(b'\n');
        }
        send_raw(port, &bytes)
    }
    fn gossip_reply(&self) -> Value {
        let mut reply = serde_json::json!({
            "type": "GOSSIP_REPLY",
            "host": "127.0.0.1",
            "port": self.port,
            "peerId": self.id,
            "files": *self.files.lock().unwrap(),
        });
        if self.style.ranges {
            reply["ranges"] = 1.into();
        }
        reply
    }
}

/// A fake network peer on 127.0.0.1, written in the test: a std
/// `TcpListener` thread that reads one message per connection (ending at the
/// closing brace), records it, answers GOSSIP with a GOSSIP_REPLY listing
/// its files (on a new connection to the host:port named in the GOSSIP), and
/// hands GET_FILE to a handler the test chooses (serve, stall, corrupt...).
/// Dropping it stops the listener and tells handlers to stop.
pub struct FakeHolder {
    /// Its peerId.
    pub id: String,
    /// Its P2P port.
    pub port: u16,
    shared: Arc<FakeShared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl FakeHolder {
    /// Starts a fake peer holding `files` (records as in GOSSIP_REPLY).
    pub fn start(
        id: &str,
        files: Vec<Value>,
        style: FakeStyle,
        on_get_file: impl Fn(&Value, TcpStream, &AtomicBool) + Send + Sync + 'static,
    ) -> FakeHolder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("fake peer bind");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(FakeShared {
            id: id.to_string(),
            port,
            style,
            files: Mutex::new(files),
            received: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            on_get_file: Box::new(on_get_file),
        });
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sh = sh.clone();
                thread::spawn(move || handle_fake_conn(&sh, conn));
            }
        });
        FakeHolder {
            id: id.to_string(),
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// Every message received so far, in order.
    pub fn received(&self) -> Vec<Value> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits for a received message of type `ty`; returns the first one.
    pub fn wait_message(&self, ty: &str, timeout: Duration) -> Option<Value> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.received().into_iter().find(|m| m["type"] == ty);
            found.is_some()
        });
        found
    }

    /// Sends one message (its style) to 127.0.0.1:`port` on a new connection.
    pub fn send(&self, port: u16, msg: &Value) -> std::io::Result<()> {
        self.shared.send(port, msg)
    }

    /// Sends a GOSSIP_REPLY listing its files to 127.0.0.1:`port`: the
    /// receiver tracks this fake and records it as a holder of each file.
    pub fn send_gossip_reply(&self, port: u16) -> std::io::Result<()> {
        self.shared.send(port, &self.shared.gossip_reply())
    }

    /// Sends a GOSSIP (fresh id) naming this fake to 127.0.0.1:`port`.
    pub fn send_gossip(&self, port: u16) -> std::io::Result<()> {
        let id = format!("{}-{:?}", self.id, Instant::now());
        let msg: Value = serde_json::from_slice(&gossip(&self.id, self.port, &id)).unwrap();
        self.shared.send(port, &msg)
    }
}

impl Drop for FakeHolder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn handle_fake_conn(sh: &FakeShared, mut conn: TcpStream) {
    if sh.stop.load(Ordering::SeqCst) {
        return;
    }
    let Ok(bytes) = read_object_bytes(&mut conn, Duration::from_secs(10)) else {
        return;
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&bytes) else {
        return;
    };
    sh.received.lock().unwrap().push(msg.clone());
    match msg["type"].as_str() {
        Some("GOSSIP") => {
            drop(conn);
            let port = msg["port"]
                .as_u64()
                .or_else(|| msg["port"].as_str().and_then(|p| p.parse().ok()));
            if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
                let _ = sh.send(port, &sh.gossip_reply());
            }
        }
        Some("GET_FILE") => (sh.on_get_file)(&msg, conn, &sh.stop),
        _ => {}
    }
}

/// A GET_FILE handler for fakes: sends `reply` and closes (a well-behaved
/// server).
pub fn reply_and_close(mut conn: TcpStream, reply: &[u8]) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = conn.write_all(reply);
    let _ = conn.shutdown(Shutdown::Write);
    // Let the client read the reply before the socket goes away.
    let stop = AtomicBool::new(false);
    let _ = read_until_eof(&mut conn, Duration::from_secs(5), &stop);
}

/// A GET_FILE handler for fakes: keeps the connection open and silent until
/// the client closes it, the fake stops, or `max` passes.
pub fn hold_silent(mut conn: TcpStream, stop: &AtomicBool, max: Duration) -> UntilEof {
    read_until_eof(&mut conn, max, stop)
}

/// Writes a metadata.json into `dir` listing `n` files we don't hold: file
/// `i` is named `name(i)`, owned by `owner`, held by `holders`, with ids,
/// sizes and timestamps made from `i`.
pub fn write_catalog(
    dir: &Path,
    n: usize,
    name: impl Fn(usize) -> String,
    owner: &str,
    holders: &[&str],
) {
    std::fs::create_dir_all(dir).expect("create storage folder");
    let holders = serde_json::to_string(holders).expect("holders as JSON");
    let mut out = String::with_capacity(n * 512);
    out.push('{');
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        let id = format!("{i:064x}");
        out.push_str(&format!(
            "\"{id}\":{{\"file_name\":\"{}\",\"file_size\":{},\"file_id\":\"{id}\",\
             \"file_owner\":\"{owner}\",\"file_timestamp\":{},\
             \"peers_with_file\":{holders},\"has_copy\":\"no\"}}",
            name(i),
            1000 + i,
            1_750_000_000 + i
        ));
    }
    out.push('}');
    std::fs::write(dir.join("metadata.json"), out).expect("write metadata.json");
}

/// A fake pusher: connects to `port` and sends `msg` (an unsolicited
/// FILE_DATA) in `pieces` pieces `gap` apart, then closes. The thread ends
/// early when a write fails (the peer closed); it returns the bytes sent.
pub fn push_slowly(
    port: u16,
    msg: Vec<u8>,
    pieces: usize,
    gap: Duration,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
            return 0;
        };
        let mut sent = 0;
        for chunk in msg.chunks(msg.len().div_ceil(pieces.max(1))) {
            if conn.write_all(chunk).is_err() {
                return sent;
            }
            sent += chunk.len();
            std::thread::sleep(gap);
        }
        sent
    })
}

/// The `resume` record of file `id` in the folder's metadata, if any.
pub fn resume_record(dir: &Path, id: &str) -> Option<Value> {
    let text = std::fs::read(dir.join("metadata.json")).ok()?;
    let meta: Value = serde_json::from_slice(&text).ok()?;
    meta.get(id)?.get("resume").cloned()
}

/// The bytes the download of `id` has, from `/api/state`.
pub fn bytes_done(down: &PeerProc, id: &str) -> u64 {
    down.state()
        .and_then(|s| {
            s["transfers"]
                .as_array()?
                .iter()
                .find(|t| t["file_id"] == id)
                .and_then(|t| t["bytes_done"].as_u64())
        })
        .unwrap_or(0)
}
