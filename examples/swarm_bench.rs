//! Multi-source downloads ("swarm"), measured with release `peershare`
//! processes on 127.0.0.1 behind throttled links.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example swarm_bench -- [--size-mib N] [--rate MB_PER_S]
//!     [--runs single,four,corrupt,mixed] [--corrupt-every-mib M] [--corrupt-first-byte B]
//! # default: 1024 MiB, links of 25 MB/s, all four runs, a digit changed every 16 MiB
//! ```
//!
//! Every holder listens on a private port (`--bind 127.0.0.1:0`) and
//! advertises the port of its own proxy (`benches/support/throttle_proxy.rs`),
//! which caps each direction at `--rate` MB/s on the wire (FILE_DATA carries
//! hex: half that in file bytes). Each run starts its holders afresh, then a
//! fresh downloader whose `--well-known` are that run's proxies; once it
//! knows all of them as holders it types `get` and is timed to its
//! `get: saved` line. The copy then counts as verified only if that line
//! is not UNVERIFIED, `/api/state` says verified, and the file in the
//! downloader's storage folder hashes (with the timestamp) to the id.
//!
//! The runs (`--runs` picks some, in this order):
//!
//! 1. `single`: one peershare holder.
//! 2. `four`: four peershare holders; speed-up against `single` (goal:
//!    at least 3.5x).
//! 3. `corrupt`: as `four`, but holder 1's proxy swaps one hex digit for
//!    another in the data of every FILE_DATA it relays, at file byte
//!    `--corrupt-first-byte` of that reply (default 100 000: inside any
//!    piece) and every `--corrupt-every-mib` MiB after (default 16), so the
//!    JSON and the hex stay valid and only the content is wrong; the extra
//!    time against `four`.
//! 4. `mixed`: two Python-style holders (fakes in this file: they answer
//!    GOSSIP with a GOSSIP_REPLY without `ranges` and any GET_FILE with the
//!    whole file, ignoring `offset` and `length`, as the Python peers do)
//!    and two peershare holders.
//!
//! For each proxy: the file bytes it relayed down (hex digits / 2), the
//! GET_FILEs it passed up (ranged or whole) and the digits it changed.
//! The end prints a table, and the same figures as Markdown for
//! `benches/RESULTS.md`.
//!
//! Holders are restarted for every run (same storage folders, their
//! `metadata.json` removed), so no run's peers know another run's. The
//! binary is found as by `resume_bench` (`PEERSHARE_BIN`, else beside the
//! example in `<target>/release/`). Everything lives in one temp folder
//! under `$TMPDIR` (default `/tmp`: four copies of the file, and one
//! downloaded copy at a time), removed at the end; every process is killed
//! and reaped and every proxy and fake thread joined, also when a run
//! fails; every wait has a bound.

#[path = "../benches/support/peers.rs"]
mod peers;
#[path = "../benches/support/throttle_proxy.rs"]
mod throttle_proxy;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};
use throttle_proxy::{Corruption, ProxyPort, ThrottleProxy, Traffic};

const MIB: u64 = 1024 * 1024;
const DEFAULT_SIZE_MIB: u64 = 1024;
/// Peershare's default `--max-file-size` (4 GiB).
const MAX_SIZE_MIB: u64 = 4096;
/// Issue 14's link: 25 MB/s per holder.
const DEFAULT_RATE_MB_PER_S: u64 = 25;
const DEFAULT_CORRUPT_EVERY_MIB: u64 = 16;
const DEFAULT_CORRUPT_FIRST_BYTE: u64 = 100_000;
/// The mtime every copy gets, so every holder computes the same file id.
const SHARED_MTIME_SECS: u64 = 1_744_169_352;
/// Speed-up of four holders over one that the swarm is meant to reach.
const GOAL_SPEEDUP: f64 = 3.5;
/// Peershare holders' storage folders (the most any run uses).
const PEERSHARE_HOLDERS: usize = 4;
/// How often a fake's blocked thread looks at its stop flag.
const FAKE_POLL: Duration = Duration::from_millis(50);
/// Most connections a fake serves at once (more are closed unanswered).
const FAKE_MAX_CONNS: usize = 16;
/// Bound on a message read by a fake (a GOSSIP or GET_FILE is far smaller).
const FAKE_MAX_REQUEST: usize = 64 * 1024;
/// A fake gives up on a connection that takes none of its bytes this long.
const FAKE_STALL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunKind {
    Single,
    Four,
    Corrupt,
    Mixed,
}

impl RunKind {
    const ALL: [RunKind; 4] = [
        RunKind::Single,
        RunKind::Four,
        RunKind::Corrupt,
        RunKind::Mixed,
    ];

    fn name(self) -> &'static str {
        match self {
            RunKind::Single => "single",
            RunKind::Four => "four",
            RunKind::Corrupt => "corrupt",
            RunKind::Mixed => "mixed",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            RunKind::Single => "1 peershare",
            RunKind::Four => "4 peershare",
            RunKind::Corrupt => "4 peershare, ps-1 corrupting",
            RunKind::Mixed => "2 Python-style + 2 peershare",
        }
    }

    /// The run's holders, in the downloader's `--well-known` order.
    fn sources(self) -> Vec<SourceSpec> {
        let ps = |n: usize, corrupting: bool| SourceSpec {
            label: format!("ps-{n}"),
            kind: Kind::Peershare(n),
            corrupting,
        };
        let py = |n: usize| SourceSpec {
            label: format!("py-{n}"),
            kind: Kind::Python,
            corrupting: false,
        };
        match self {
            RunKind::Single => vec![ps(1, false)],
            RunKind::Four => (1..=4).map(|n| ps(n, false)).collect(),
            RunKind::Corrupt => (1..=4).map(|n| ps(n, n == 1)).collect(),
            RunKind::Mixed => vec![py(1), py(2), ps(1, false), ps(2, false)],
        }
    }
}

/// What the command line asks for.
struct Options {
    size_mib: u64,
    rate_mb_per_s: u64,
    runs: Vec<RunKind>,
    corruption: Corruption,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        size_mib: DEFAULT_SIZE_MIB,
        rate_mb_per_s: DEFAULT_RATE_MB_PER_S,
        runs: RunKind::ALL.to_vec(),
        corruption: Corruption {
            first_byte: DEFAULT_CORRUPT_FIRST_BYTE,
            every_bytes: DEFAULT_CORRUPT_EVERY_MIB * MIB,
        },
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let whole = |v: &String, min: u64, max: u64| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("{arg} must be a whole number from {min} to {max}"))
        };
        match arg.as_str() {
            "--size-mib" => options.size_mib = whole(value()?, 1, MAX_SIZE_MIB)?,
            "--rate" => options.rate_mb_per_s = whole(value()?, 1, 10_000)?,
            "--corrupt-every-mib" => {
                options.corruption.every_bytes = whole(value()?, 1, MAX_SIZE_MIB)? * MIB
            }
            "--corrupt-first-byte" => {
                options.corruption.first_byte = whole(value()?, 0, MAX_SIZE_MIB * MIB)?
            }
            "--runs" => {
                options.runs = Vec::new();
                for name in value()?.split(',') {
                    let run = RunKind::ALL
                        .into_iter()
                        .find(|r| r.name() == name)
                        .ok_or_else(|| format!("unknown run {name:?}"))?;
                    if !options.runs.contains(&run) {
                        options.runs.push(run);
                    }
                }
                // Always in the documented order, whatever the list's.
                options
                    .runs
                    .sort_by_key(|r| RunKind::ALL.iter().position(|a| a == r));
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(options)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A peershare holder using storage folder `n`.
    Peershare(usize),
    /// A Python-style fake (whole files only).
    Python,
}

struct SourceSpec {
    label: String,
    kind: Kind,
    /// Its proxy corrupts the data it relays.
    corrupting: bool,
}

/// What every run shares: the file, where it is, how fast links are.
struct Setup {
    root: PathBuf,
    len: u64,
    file_name: String,
    file_id: String,
    bytes_per_sec: u64,
    corruption: Corruption,
}

impl Setup {
    fn holder_dir(&self, n: usize) -> PathBuf {
        self.root.join(format!("holder-{n}"))
    }

    /// The file record a Python-style fake lists and serves.
    fn record(&self, owner: &str) -> Value {
        json!({
            "file_name": self.file_name,
            "file_size": self.len,
            "file_id": self.file_id,
            "file_owner": owner,
            "file_timestamp": SHARED_MTIME_SECS,
        })
    }
}

/// The process (or fake) serving one holder's file.
enum Server {
    Peershare(peers::Peer),
    Python(PythonFake),
}

/// A holder behind its proxy.
struct Source {
    label: String,
    kind: Kind,
    corrupting: bool,
    /// Dropped before `_server`: the relay ends first, then the holder.
    proxy: ThrottleProxy,
    /// Only held: dropping it stops the holder.
    _server: Server,
}

/// Writes the file once and copies it into every holder's folder, all with
/// the shared mtime; its id, as the network computes it.
fn write_files(root: &Path, len: u64, file_name: &str) -> Result<String, String> {
    let first = root.join("holder-1").join(file_name);
    for n in 1..=PEERSHARE_HOLDERS {
        let dir = root.join(format!("holder-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let path = dir.join(file_name);
        if n == 1 {
            peers::try_write_random_file(&path, len, len)
                .map_err(|e| format!("write {}: {e}", path.display()))?;
        } else {
            std::fs::copy(&first, &path).map_err(|e| format!("copy to {}: {e}", path.display()))?;
        }
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| {
                f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(SHARED_MTIME_SECS))
            })
            .map_err(|e| format!("set the mtime of {}: {e}", path.display()))?;
    }
    file_id(&first, &SHARED_MTIME_SECS.to_string())
}

/// SHA-256 of the file's bytes followed by the timestamp's text, in hex.
fn file_id(path: &Path, timestamp: &str) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.update(timestamp.as_bytes());
    Ok(faster_hex::hex_string(&hasher.finalize()))
}

/// Starts one holder on a free private port and its proxy in front of it.
fn start_source(spec: &SourceSpec, setup: &Setup) -> Result<Source, String> {
    let port = ProxyPort::bind().map_err(|e| format!("bind a proxy port: {e}"))?;
    let server = match spec.kind {
        Kind::Peershare(n) => {
            let dir = setup.holder_dir(n);
            forget_catalog(&dir)?;
            let extra: Vec<String> = [
                "--bind",
                "127.0.0.1:0",
                "--gossip-interval",
                "0.2",
                "--auto-fetch",
                "0",
                "--no-well-known",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let peer = peers::Peer::try_spawn_advertising(&spec.label, &dir, port.port, &extra)?;
            let ids = peer.file_ids();
            if ids != [setup.file_id.as_str()] {
                return Err(format!(
                    "{} should list the one file {}, lists {ids:?}",
                    spec.label, setup.file_id
                ));
            }
            Server::Peershare(peer)
        }
        Kind::Python => Server::Python(
            PythonFake::start(
                &spec.label,
                port.port,
                setup.record(&spec.label),
                setup.holder_dir(1).join(&setup.file_name),
            )
            .map_err(|e| format!("start the fake {}: {e}", spec.label))?,
        ),
    };
    let upstream = match &server {
        Server::Peershare(peer) => peer.p2p_port,
        Server::Python(fake) => fake.port,
    };
    let proxy = if spec.corrupting {
        port.relay_corrupting(upstream, setup.bytes_per_sec, setup.corruption)
    } else {
        port.relay_to(upstream, setup.bytes_per_sec, None)
    }
    .map_err(|e| format!("start the proxy of {}: {e}", spec.label))?;
    Ok(Source {
        label: spec.label.clone(),
        kind: spec.kind,
        corrupting: spec.corrupting,
        proxy,
        _server: server,
    })
}

/// Removes a holder's `metadata.json` (and its backups), so a restarted
/// holder knows no peer of an earlier run; the file itself stays.
fn forget_catalog(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("metadata.json")
        {
            std::fs::remove_file(entry.path())
                .map_err(|e| format!("remove {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// What went through one proxy during a run.
struct LinkFigures {
    label: String,
    kind: Kind,
    corrupting: bool,
    /// File bytes relayed down as FILE_DATA hex (digits / 2).
    data_bytes: u64,
    /// Bytes relayed down on the wire, envelopes included.
    wire_bytes: u64,
    get_files: usize,
    /// GET_FILEs with `offset` or `length`.
    ranged: usize,
    /// Hex digits changed.
    corrupted: u64,
}

impl LinkFigures {
    fn of(source: &Source) -> Self {
        let traffic: &Traffic = source.proxy.traffic();
        let asked = traffic.get_files();
        LinkFigures {
            label: source.label.clone(),
            kind: source.kind,
            corrupting: source.corrupting,
            data_bytes: traffic.data_bytes(),
            wire_bytes: traffic.down_bytes.load(Ordering::SeqCst),
            get_files: asked.len(),
            ranged: asked
                .iter()
                .filter(|g| g.offset.is_some() || g.length.is_some())
                .count(),
            corrupted: traffic.corrupted.load(Ordering::SeqCst),
        }
    }

    fn kind_name(&self) -> &'static str {
        match (self.kind, self.corrupting) {
            (Kind::Python, _) => "Python-style",
            (Kind::Peershare(_), true) => "peershare, corrupting",
            (Kind::Peershare(_), false) => "peershare",
        }
    }
}

/// How one run went.
struct RunResult {
    kind: RunKind,
    /// From typing `get` to the last `get:` line.
    elapsed: Duration,
    /// None: saved and verified; else what went wrong.
    problem: Option<String>,
    lines: Vec<String>,
    links: Vec<LinkFigures>,
    /// The end of the downloader's log (warnings), when it went wrong.
    log_tail: Vec<String>,
}

/// Starts the run's holders, measures, and stops everything (the
/// downloader's folder is removed too).
fn run_one(kind: RunKind, setup: &Setup) -> Result<RunResult, String> {
    let mut sources = Vec::new();
    for spec in kind.sources() {
        sources.push(start_source(&spec, setup)?);
    }
    let down_dir = setup.root.join(format!("down-{}", kind.name()));
    let result = measure(kind, setup, &sources, &down_dir);
    drop(sources);
    if down_dir.exists() {
        std::fs::remove_dir_all(&down_dir)
            .map_err(|e| format!("remove {}: {e}", down_dir.display()))?;
    }
    result
}

fn measure(
    kind: RunKind,
    setup: &Setup,
    sources: &[Source],
    down_dir: &Path,
) -> Result<RunResult, String> {
    let well_known: Vec<String> = sources
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.proxy.port))
        .collect();
    let extra = vec![
        "--well-known".to_string(),
        well_known.join(","),
        "--gossip-interval".into(),
        "0.2".into(),
        "--auto-fetch".into(),
        "0".into(),
    ];
    let id = format!("down-{}", kind.name());
    let mut down = peers::Peer::try_spawn_advertising(&id, down_dir, 0, &extra)?;
    if !down.wait_holders(&setup.file_id, sources.len(), peers::WAIT) {
        let known = down
            .file_entry(&setup.file_id)
            .map(|f| f["peers_with_file"].clone());
        return Err(format!(
            "{id} did not learn all {} holders within {:?} (knows {known:?})",
            sources.len(),
            peers::WAIT
        ));
    }
    // Four whole-file fetches and a minute: room for a source that sends
    // bad bytes to cost whole fetches, as single-source downloads do.
    let whole_file_secs = 2.0 * setup.len as f64 / setup.bytes_per_sec as f64;
    let timeout = Duration::from_secs_f64(4.0 * whole_file_secs + 60.0);
    let (lines, elapsed) = down
        .try_get_lines(&setup.file_id, timeout)
        .map_err(|e| format!("type `get` into {id}: {e}"))?;
    let links = sources.iter().map(LinkFigures::of).collect();
    let problem = check_saved(&down, setup, &lines, timeout).err();
    // Where `Peer` puts the log: beside the storage folder.
    let log = down_dir.with_file_name(format!("{id}.log"));
    let log_tail = match (&problem, std::fs::read_to_string(&log)) {
        (None, _) => Vec::new(),
        (Some(_), Ok(text)) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(20);
            lines[from..].iter().map(|l| l.to_string()).collect()
        }
        (Some(_), Err(e)) => vec![format!("(no log at {}: {e})", log.display())],
    };
    Ok(RunResult {
        kind,
        elapsed,
        problem,
        lines,
        links,
        log_tail,
    })
}

/// Whether the download ended saved and verified, three ways: the `get:`
/// line, `/api/state`, and the bytes in the storage folder.
fn check_saved(
    down: &peers::Peer,
    setup: &Setup,
    lines: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let Some(last) = lines.last() else {
        return Err(format!("no `get:` line within {timeout:?}"));
    };
    if !last.contains("get: saved") {
        return Err(format!("ended without `get: saved` (last line: {last})"));
    }
    if last.contains("UNVERIFIED") {
        return Err(format!("saved UNVERIFIED: {last}"));
    }
    let entry = down.file_entry(&setup.file_id);
    if !entry
        .as_ref()
        .is_some_and(|f| f["local"] == true && f["verified"] == true)
    {
        return Err(format!(
            "/api/state does not say local and verified: {entry:?}"
        ));
    }
    let copy = saved_copy(&down.dir, setup.len)?;
    let got = file_id(&copy, &SHARED_MTIME_SECS.to_string())?;
    if got != setup.file_id {
        return Err(format!(
            "{} hashes to {got}, not the id {}",
            copy.display(),
            setup.file_id
        ));
    }
    Ok(())
}

/// The one file of `len` bytes in a storage folder (temp files, which
/// start with a dot, and the catalog left out).
fn saved_copy(dir: &Path, len: u64) -> Result<PathBuf, String> {
    let read_err = |e: io::Error| format!("read {}: {e}", dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with("metadata.json") {
            continue;
        }
        let meta = entry.metadata().map_err(read_err)?;
        if meta.is_file() && meta.len() == len {
            found.push(entry.path());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(format!(
            "{n} files of {len} B in {} (one expected)",
            dir.display()
        )),
    }
}

// ---------------------------------------------------------------------
// A Python-style holder.

/// What a fake's threads share.
struct FakeState {
    peer_id: String,
    /// The port it names in its GOSSIP_REPLY (its proxy's).
    advertised: u16,
    record: Value,
    file: PathBuf,
    stop: AtomicBool,
}

impl FakeState {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A holder that behaves as the Python peers do where it matters here: it
/// answers a GOSSIP with a GOSSIP_REPLY (no `ranges`) on a new connection
/// to the port named in it, and a GET_FILE with one FILE_DATA of the whole
/// file (no range fields, whatever was asked; json.dumps' `": "` spacing),
/// streamed from disk rather than built in memory as they do.
/// Dropping it stops and joins every thread.
struct PythonFake {
    /// Where it listens (private; its proxy relays to it).
    port: u16,
    state: Arc<FakeState>,
    accept: Option<JoinHandle<()>>,
}

impl PythonFake {
    fn start(peer_id: &str, advertised: u16, record: Value, file: PathBuf) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(FakeState {
            peer_id: peer_id.to_string(),
            advertised,
            record,
            file,
            stop: AtomicBool::new(false),
        });
        let s = state.clone();
        let accept = thread::Builder::new()
            .name(format!("fake-{peer_id}"))
            .spawn(move || fake_accept(&listener, &s))?;
        Ok(PythonFake {
            port,
            state,
            accept: Some(accept),
        })
    }
}

impl Drop for PythonFake {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Accepts until stopped, one thread per connection; joins them all.
fn fake_accept(listener: &TcpListener, state: &Arc<FakeState>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !state.stopped() {
        conns.retain(|h| !h.is_finished());
        match listener.accept() {
            Ok((conn, _)) if conns.len() < FAKE_MAX_CONNS => {
                let s = state.clone();
                if let Ok(h) = thread::Builder::new()
                    .name("fake-conn".into())
                    .spawn(move || fake_conn(conn, &s))
                {
                    conns.push(h);
                }
            }
            Ok(_) => {} // over the bound: closed unanswered
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
    for h in conns {
        let _ = h.join();
    }
}

fn fake_conn(mut conn: TcpStream, state: &FakeState) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(FAKE_POLL));
    let _ = conn.set_write_timeout(Some(FAKE_POLL));
    let Some(msg) = read_message(&mut conn, state) else {
        return;
    };
    match msg["type"].as_str() {
        Some("GOSSIP") => {
            drop(conn);
            let port = msg["port"]
                .as_u64()
                .or_else(|| msg["port"].as_str().and_then(|p| p.parse().ok()))
                .and_then(|p| u16::try_from(p).ok());
            // Only ever 127.0.0.1, whatever host the GOSSIP names.
            if let Some(port) = port {
                let _ = send_gossip_reply(port, state);
            }
        }
        Some("GET_FILE") if serve_whole_file(&mut conn, &msg, state).is_ok() => {
            // Our end, then wait for the reader's (bounded), so the close
            // doesn't reset bytes it has not read yet.
            let _ = conn.shutdown(Shutdown::Write);
            drain_until_eof(&mut conn, state, Duration::from_secs(10));
        }
        _ => {}
    }
}

/// Reads one JSON object (up to its closing brace), within
/// [`FAKE_MAX_REQUEST`] bytes and 10 s.
fn read_message(conn: &mut TcpStream, state: &FakeState) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !state.stopped() && Instant::now() < deadline && request.len() < FAKE_MAX_REQUEST {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return None,
        }
        let mut values = serde_json::Deserializer::from_slice(&request).into_iter::<Value>();
        match values.next() {
            Some(Ok(msg)) => return Some(msg),
            Some(Err(e)) if e.is_eof() => {}
            _ => return None,
        }
    }
    None
}

fn send_gossip_reply(port: u16, state: &FakeState) -> io::Result<()> {
    let reply = json!({
        "type": "GOSSIP_REPLY",
        "host": "127.0.0.1",
        "port": state.advertised,
        "peerId": state.peer_id,
        "files": [state.record],
    });
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(reply.to_string().as_bytes())
}

/// One FILE_DATA with the whole file (R/H order: `data` last), or the
/// not-found answer for another id.
fn serve_whole_file(conn: &mut TcpStream, msg: &Value, state: &FakeState) -> io::Result<()> {
    let r = &state.record;
    if msg["file_id"] != r["file_id"] {
        let not_found = json!({
            "type": "FILE_DATA", "file_id": null, "file_name": null, "file_owner": null,
            "file_timestamp": null, "file_size": 0, "data": null,
        });
        return write_fully(conn, not_found.to_string().as_bytes(), state);
    }
    let head = format!(
        r#"{{"type": "FILE_DATA", "file_id": {}, "file_name": {}, "file_owner": {}, "file_timestamp": {}, "file_size": {}, "data": ""#,
        r["file_id"], r["file_name"], r["file_owner"], r["file_timestamp"], r["file_size"]
    );
    write_fully(conn, head.as_bytes(), state)?;
    let mut file = File::open(&state.file)?;
    let mut bytes = vec![0u8; 256 * 1024];
    let mut hex = vec![0u8; 2 * bytes.len()];
    loop {
        let n = file.read(&mut bytes)?;
        if n == 0 {
            break;
        }
        faster_hex::hex_encode(&bytes[..n], &mut hex[..2 * n]).map_err(io::Error::other)?;
        write_fully(conn, &hex[..2 * n], state)?;
    }
    write_fully(conn, b"\"}", state)
}

/// Writes all of `buf`, waking every [`FAKE_POLL`] to look at the stop
/// flag; an error if the reader takes nothing for [`FAKE_STALL`].
fn write_fully(conn: &mut TcpStream, mut buf: &[u8], state: &FakeState) -> io::Result<()> {
    let mut progress = Instant::now();
    while !buf.is_empty() {
        if state.stopped() {
            return Err(io::Error::other("stopped"));
        }
        match conn.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                progress = Instant::now();
            }
            Err(e) if is_timeout(&e) => {
                if progress.elapsed() > FAKE_STALL {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn drain_until_eof(conn: &mut TcpStream, state: &FakeState, max: Duration) {
    let deadline = Instant::now() + max;
    let mut buf = [0u8; 4096];
    while !state.stopped() && Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

// ---------------------------------------------------------------------
// Reporting.

/// Whether a `get:` line is a progress report (`get: <name> 6% 71.3 MiB of
/// 1.0 GiB at ...`).
fn is_progress(line: &str) -> bool {
    line.split_whitespace()
        .any(|w| w.len() > 1 && w.ends_with('%') && w[..w.len() - 1].parse::<u8>().is_ok())
        && line.contains(" of ")
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
}

fn find(results: &[RunResult], kind: RunKind) -> Option<&RunResult> {
    results
        .iter()
        .find(|r| r.kind == kind && r.problem.is_none())
}

/// The comparison column of a run: speed-up over `single` for `four`,
/// extra time over `four` for `corrupt`.
fn compared(r: &RunResult, results: &[RunResult]) -> String {
    let secs = r.elapsed.as_secs_f64();
    match r.kind {
        RunKind::Four | RunKind::Mixed => find(results, RunKind::Single).map_or("-".into(), |s| {
            let speedup = s.elapsed.as_secs_f64() / secs.max(1e-9);
            if r.kind == RunKind::Four {
                let met = if speedup >= GOAL_SPEEDUP {
                    "met"
                } else {
                    "missed"
                };
                format!("{speedup:.2}x single (goal {GOAL_SPEEDUP}x: {met})")
            } else {
                format!("{speedup:.2}x single")
            }
        }),
        RunKind::Corrupt => find(results, RunKind::Four).map_or("-".into(), |f| {
            format!("{:+.1} s vs four", secs - f.elapsed.as_secs_f64())
        }),
        RunKind::Single => "-".into(),
    }
}

/// File data relayed by all the run's proxies, in % of the file.
fn relayed_percent(r: &RunResult, len: u64) -> f64 {
    let relayed: u64 = r.links.iter().map(|l| l.data_bytes).sum();
    100.0 * relayed as f64 / len as f64
}

fn verified_text(r: &RunResult) -> String {
    match &r.problem {
        None => "yes".into(),
        Some(why) => format!("NO: {why}"),
    }
}

fn shares(r: &RunResult, len: u64) -> Vec<String> {
    r.links
        .iter()
        .map(|l| {
            let mut s = format!(
                "{} ({}): {:.1} MB ({:.1} % of the file; {:.1} MB on the wire), \
                 GET_FILEs {} ({} ranged)",
                l.label,
                l.kind_name(),
                l.data_bytes as f64 / 1e6,
                100.0 * l.data_bytes as f64 / len as f64,
                l.wire_bytes as f64 / 1e6,
                l.get_files,
                l.ranged
            );
            if l.corrupting {
                s.push_str(&format!(", {} digits changed", l.corrupted));
            }
            s
        })
        .collect()
}

fn print_report(options: &Options, setup: &Setup, results: &[RunResult], taken: &str) {
    let len = setup.len;
    println!();
    println!(
        "{} MiB file, links of {} MB/s ({:.1} MB/s of file data each); \
         one whole file over one link: {:.1} s",
        options.size_mib,
        options.rate_mb_per_s,
        options.rate_mb_per_s as f64 / 2.0,
        2.0 * len as f64 / setup.bytes_per_sec as f64
    );
    println!(
        "{:<8} {:<30} {:>9} {:>10} {:>9}  {:<36} verified",
        "run", "holders", "time", "file MB/s", "relayed", "compared"
    );
    for r in results {
        println!(
            "{:<8} {:<30} {:>7.1} s {:>10.1} {:>7.1} %  {:<36} {}",
            r.kind.name(),
            r.kind.describe(),
            r.elapsed.as_secs_f64(),
            mb_per_s(len, r.elapsed),
            relayed_percent(r, len),
            compared(r, results),
            verified_text(r)
        );
    }
    println!(
        "(relayed: file data all proxies relayed, in % of the file; over 100: bytes sent twice)"
    );
    println!();
    println!("file data each proxy relayed down (hex digits / 2), and the GET_FILEs it passed up:");
    for r in results {
        for line in shares(r, len) {
            println!("  {:<8} {line}", r.kind.name());
        }
    }

    // The same, ready for benches/RESULTS.md.
    println!();
    println!("---- Markdown for benches/RESULTS.md ----");
    println!(
        "`swarm_bench`, {} MiB, links of {} MB/s, corruption every {} MiB from byte {} \
         of each reply; taken {taken}.",
        options.size_mib,
        options.rate_mb_per_s,
        setup.corruption.every_bytes / MIB,
        setup.corruption.first_byte
    );
    println!();
    println!(
        "| run | holders | `get` to `saved` | file MB/s | compared | verified \
         | file data relayed, all proxies | per proxy |"
    );
    println!("|---|---|---:|---:|---|---|---:|---|");
    for r in results {
        let relayed: Vec<String> = r
            .links
            .iter()
            .map(|l| {
                format!(
                    "{}{}: {:.1} MB ({} GET_FILE, {} ranged{})",
                    l.label,
                    match l.kind {
                        Kind::Python => " (Python)",
                        Kind::Peershare(_) => "",
                    },
                    l.data_bytes as f64 / 1e6,
                    l.get_files,
                    l.ranged,
                    if l.corrupting {
                        format!(", {} digits changed", l.corrupted)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        println!(
            "| {} | {} | {:.1} s | {:.1} | {} | {} | {:.1} % of the file | {} |",
            r.kind.name(),
            r.kind.describe(),
            r.elapsed.as_secs_f64(),
            mb_per_s(len, r.elapsed),
            compared(r, results),
            if r.problem.is_none() { "yes" } else { "**no**" },
            relayed_percent(r, len),
            relayed.join("; ")
        );
    }
    println!("---- end ----");
}

fn run(options: &Options) -> Result<bool, String> {
    let len = options.size_mib * MIB;
    let root = tempfile::Builder::new()
        .prefix("swarm-bench-")
        .tempdir()
        .map_err(|e| format!("create a temp folder: {e}"))?;
    let file_name = format!("swarm-{}.bin", options.size_mib);
    println!(
        "writing {} copies of a {} MiB file under {}",
        PEERSHARE_HOLDERS,
        options.size_mib,
        root.path().display()
    );
    let file_id = write_files(root.path(), len, &file_name)?;
    println!("file id {file_id}");
    let setup = Setup {
        root: root.path().to_path_buf(),
        len,
        file_name,
        file_id,
        bytes_per_sec: options.rate_mb_per_s * 1_000_000,
        corruption: options.corruption,
    };
    let taken_from = chrono::Utc::now();
    let mut results = Vec::new();
    for &kind in &options.runs {
        println!("run {} ({}) ...", kind.name(), kind.describe());
        let r = run_one(kind, &setup).map_err(|why| format!("run {}: {why}", kind.name()))?;
        // Progress lines (every few seconds) would bury the others.
        for line in r.lines.iter().filter(|l| !is_progress(l)) {
            println!("  downloader: {line}");
        }
        for line in &r.log_tail {
            println!("  downloader's log: {line}");
        }
        println!(
            "  {:.1} s, {:.1} MB/s, verified: {}",
            r.elapsed.as_secs_f64(),
            mb_per_s(len, r.elapsed),
            verified_text(&r)
        );
        for line in shares(&r, len) {
            println!("  {line}");
        }
        results.push(r);
    }
    let taken = format!(
        "{}–{} UTC",
        taken_from.format("%Y-%m-%d %H:%M"),
        chrono::Utc::now().format("%H:%M")
    );
    print_report(options, &setup, &results, &taken);
    // The holders are gone; `root` removes every file when dropped.
    root.close()
        .map_err(|e| format!("remove the temp folder: {e}"))?;
    Ok(results.iter().all(|r| r.problem.is_none()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(why) => {
            eprintln!(
                "usage: swarm_bench [--size-mib N] [--rate MB_PER_S] \
                 [--runs single,four,corrupt,mixed] [--corrupt-every-mib M] \
                 [--corrupt-first-byte B]: {why}"
            );
            return ExitCode::from(2);
        }
    };
    match peers::try_peershare_bin() {
        Ok(bin) => println!("binary: {}", bin.display()),
        Err(why) => {
            eprintln!("swarm_bench: {why}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "machine: nproc {}, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into())
    );
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("swarm_bench: a download did not end saved and verified (above)");
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!("swarm_bench failed: {why}");
            ExitCode::FAILURE
        }
    }
}
