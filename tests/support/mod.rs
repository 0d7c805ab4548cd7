//! Test support: start real peershare processes on 127.0.0.1, talk to them,
//! wait on conditions with bounded timeouts, and always clean up.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use basics::{http_get, port_after};

/// Timers that keep a peer's view of its sources still during a test: no
/// gossip round after the first, and no one dropped for silence.
pub const QUIET: [&str; 4] = ["--gossip-interval", "30", "--peer-timeout", "60"];

/// Whether the long runs are on (`PEERSHARE_TEST_LONG=1`, as `.ci/run`'s
/// second step sets it). Off, a test that needs them says it was skipped,
/// and why, and returns.
pub fn long_run(test: &str, why: &str) -> bool {
    if std::env::var("PEERSHARE_TEST_LONG").is_ok_and(|v| v == "1") {
        return true;
    }
    eprintln!(
        "skipped {test}: {why}; it runs in CI's long step (PEERSHARE_TEST_LONG=1 cargo test)"
    );
    false
}

/// The stdout and the last 40 log lines of a peer, for failure messages.
pub fn log_tail(p: &PeerProc) -> String {
    let log = p.log();
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(40);
    format!(
        "--- stdout of {} ---\n{}\n--- log tail ---\n{}",
        p.id,
        p.lines().join("\n"),
        lines[from..].join("\n")
    )
}

/// Default bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `cond` every 25 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// How a peer's stdin is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdinMode {
    /// A pipe the test writes menu lines to.
    Piped,
    /// `/dev/null`.
    Null,
}

/// Removes the peer's option variables (`PEERSHARE_<OPTION>`, e.g. a
/// `PEERSHARE_WELL_KNOWN` in the developer's shell) from what a spawned peer
/// inherits, so a test's peer runs on its own arguments only; the tests'
/// own knobs (`PEERSHARE_TEST_*`) are kept.
pub fn without_option_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        if k.starts_with("PEERSHARE_") && !k.starts_with("PEERSHARE_TEST_") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Builder for a peer process.
pub struct PeerBuilder {
    id: String,
    args: Vec<String>,
    stdin: StdinMode,
    dir: Option<PathBuf>,
    files: Vec<(String, Vec<u8>)>,
    env: Vec<(String, String)>,
    p2p_port: u16,
}

impl PeerBuilder {
    /// A peer with short timers (gossip 0.5 s, timeout 3 s), no bootstrap,
    /// no auto-fetch and short transfer timeouts, unless overridden.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            args: Vec::new(),
            stdin: StdinMode::Piped,
            dir: None,
            files: Vec::new(),
            env: Vec::new(),
            p2p_port: 0,
        }
    }
    /// The `<p2p_port>` argument (default 0); with `--bind` it is only
    /// advertised, and [`PeerProc::p2p_port`] is still the bound port.
    pub fn p2p_port(mut self, port: u16) -> Self {
        self.p2p_port = port;
        self
    }
    /// Sets an environment variable of the process (the debug build's
    /// fault knobs, e.g. `PEERSHARE_TEST_SLOW_SYNC_MS`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
    /// Adds `--well-known 127.0.0.1:<port>`.
    pub fn well_known(mut self, port: u16) -> Self {
        self.args.push("--well-known".into());
        self.args.push(format!("127.0.0.1:{port}"));
        self
    }
    /// Adds raw arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }
    /// Sets the stdin mode.
    pub fn stdin(mut self, mode: StdinMode) -> Self {
        self.stdin = mode;
        self
    }
    /// Uses this storage folder (kept by the caller).
    pub fn storage(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }
    /// Puts a file named `name` with these bytes in the storage folder
    /// before the peer starts (its folder scan adds it as a local file).
    pub fn file(mut self, name: &str, bytes: &[u8]) -> Self {
        self.files.push((name.to_string(), bytes.to_vec()));
        self
    }
    /// Starts the process and waits for its "listening" line.
    pub fn spawn(self) -> PeerProc {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("storage"));
        if !self.files.is_empty() {
            std::fs::create_dir_all(&dir).expect("create storage folder");
            for (name, bytes) in &self.files {
                std::fs::write(dir.join(name), bytes).expect("write storage file");
            }
        }
        let mut args: Vec<String> = vec![
            self.id.clone(),
            "127.0.0.1".into(),
            self.p2p_port.to_string(),
            "0".into(),
            "--storage-dir".into(),
            dir.display().to_string(),
            "--log-file".into(),
            tmp.path().join("peer.log").display().to_string(),
        ];
        let has = |flag: &str| self.args.iter().any(|a| a == flag);
        let defaults: [(&str, &str); 6] = [
            ("--gossip-interval", "0.5"),
            ("--peer-timeout", "3"),
            ("--auto-fetch", "0"),
            ("--connect-timeout", "1"),
            ("--idle-timeout", "2"),
            ("--log-level", "debug"),
        ];
        for (flag, value) in defaults {
            if !has(flag) {
                args.push(flag.into());
                args.push(value.into());
            }
        }
        if !has("--well-known") && !has("--no-well-known") {
            args.push("--no-well-known".into());
        }
        args.extend(self.args.iter().cloned());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peershare"));
        without_option_env(&mut cmd)
            .args(&args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(match self.stdin {
                StdinMode::Piped => Stdio::piped(),
                StdinMode::Null => Stdio::null(),
            });
        let mut child = cmd.spawn().expect("start peershare");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut peer = PeerProc {
            id: self.id,
            child,
            stdin,
            lines,
            p2p_port: 0,
            http_port: 0,
            dir,
            tmp,
        };
        let mut banner = String::new();
        let ok = wait_until(WAIT, || {
            if let Some(l) = peer.lines().iter().find(|l| l.contains("listening on")) {
                banner = l.clone();
                true
            } else {
                false
            }
        });
        assert!(ok, "peer {} did not start; log:\n{}", peer.id, peer.log());
        peer.p2p_port = port_after(&banner, "listening on 127.0.0.1:");
        peer.http_port = port_after(&banner, "http://127.0.0.1:");
        peer
    }
}

/// A running peer; killed (SIGKILL) and reaped when dropped.
pub struct PeerProc {
    /// Its peerId.
    pub id: String,
    /// The process.
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    /// P2P port.
    pub p2p_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Storage folder.
    pub dir: PathBuf,
    tmp: tempfile::TempDir,
}

impl PeerProc {
    /// stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
    /// The log file's text.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("peer.log")).unwrap_or_default()
    }
    /// Types a menu line.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }
    /// Closes stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }
    /// Waits until some stdout line after the first `skip` contains `needle`; returns it.
    pub fn wait_line(&self, skip: usize, needle: &str, timeout: Duration) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .lines()
                .into_iter()
                .skip(skip)
                .find(|l| l.contains(needle));
            found.is_some()
        });
        found
    }
    /// `/api/state`, or None if the page doesn't answer within 2 s.
    pub fn state(&self) -> Option<Value> {
        let body = http_get(self.http_port, "/api/state")?;
        serde_json::from_slice(&body).ok()
    }
    /// peer ids in `/api/state`.
    pub fn peer_ids(&self) -> Vec<String> {
        self.state()
            .and_then(|s| {
                s["peers"].as_array().map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["peer_id"].as_str().map(String::from))
                        .collect()
                })
            })
            .unwrap_or_default()
    }
    /// Every file entry in `/api/state`, paged through 500 at a time (a
    /// catalog that changes meanwhile may be seen part old, part new).
    pub fn files(&self) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let path = format!("/api/state?offset={}&limit=500", all.len());
            // A fast walk meets the page's render budget (a 503 with
            // Retry-After: 1): wait and ask again, a bounded number of times.
            let mut page = None;
            for _ in 0..8 {
                page = http_get(self.http_port, &path)
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                if page.is_some() {
                    break;
                }
                thread::sleep(Duration::from_millis(250));
            }
            let Some(page) = page else {
                break;
            };
            let files = page["files"].as_array().cloned().unwrap_or_default();
            if files.is_empty() {
                break;
            }
            all.extend(files);
            if page["files_total"]
                .as_u64()
                .is_none_or(|total| all.len() as u64 >= total)
            {
                break;
            }
        }
        all
    }
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process; does not wait.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with the pid of our own, not yet reaped, child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.child.id());
    }
    /// Waits (bounded) for the process to exit; its status, or None if it
    /// is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, timeout)
    }
    /// The file entry with this id in `/api/state`, if listed.
    pub fn file(&self, file_id: &str) -> Option<Value> {
        self.files()
            .into_iter()
            .find(|f| f["file_id"].as_str() == Some(file_id))
    }
    /// Sends SIGKILL and reaps.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends one message on a new connection, then closes.
pub fn send_raw(port: u16, bytes: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(bytes)?;
    let _ = s.shutdown(Shutdown::Write);
    Ok(())
}

/// A GOSSIP as the Python peers send it.
pub fn gossip(peer_id: &str, port: u16, id: &str) -> Vec<u8> {
    serde_json::json!({"type":"GOSSIP","host":"127.0.0.1","port":port,"id":id,"peerId":peer_id})
        .to_string()
        .into_bytes()
}

/// sha256(bytes + ts) as lowercase hex, the network's file id.
pub fn file_id(bytes: &[u8], ts: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(bytes);
    h.update(ts.as_bytes());
    faster_hex::hex_string(&h.finalize())
}

/// Polls `child` until it exits or `timeout` passes; its status, or None if
/// it is still running (the caller decides whether to kill it).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// What a process run to completion by [`run_binary`] left behind.
#[derive(Debug)]
pub struct Finished {
    /// Exit status (None: killed after the timeout).
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Runs the peershare binary with exactly `args` (no defaults added), stdin
/// from `/dev/null`, and waits up to `timeout` for it to exit; a process
/// still running then is killed (status None).
pub fn run_binary(args: &[&str], timeout: Duration) -> Finished {
    let mut child = without_option_env(&mut Command::new(env!("CARGO_BIN_EXE_peershare")))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start peershare");
    let collect = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = collect(Box::new(child.stdout.take().expect("stdout")));
    let err = collect(Box::new(child.stderr.take().expect("stderr")));
    let status = wait_exit(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Where the first top-level JSON object in `bytes` ends: the index just
/// past its closing brace, tracking `{}`/`[]` depth outside strings and
/// honouring backslash escapes (the protocol's framing). None while it is
/// incomplete.
pub fn object_end(bytes: &[u8]) -> Option<usize> {
    let (mut depth, mut in_str, mut escaped, mut started) = (0usize, false, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                started = true;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if started && depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Reads one message from `stream`: bytes up to the closing brace of the
/// top-level object (not EOF), parsed as JSON. None on timeout, EOF before
/// the object ends, or bad JSON.
pub fn read_object(stream: &mut TcpStream, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = object_end(&buf) {
            return serde_json::from_slice(&buf[..end]).ok();
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A fake peer's P2P side: a listener on 127.0.0.1:0 that accepts every
/// connection and records the one message each carries (read up to its
/// closing brace). Stops when dropped.
pub struct FakePeer {
    /// Port it listens on (advertise it in GOSSIP).
    pub port: u16,
    received: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

impl FakePeer {
    /// Starts listening.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake peer");
        let port = listener.local_addr().expect("local addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (received.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let sink = sink.clone();
                thread::spawn(move || {
                    if let Some(v) = read_object(&mut conn, Duration::from_secs(5)) {
                        sink.lock().unwrap().push(v);
                    }
                });
            }
        });
        Self {
            port,
            received,
            stop,
        }
    }
    /// Every message received so far.
    pub fn messages(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
    /// Messages of this `type` received so far.
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["type"] == kind)
            .collect()
    }
    /// Waits until a message of this `type` has arrived; the first one.
    pub fn wait_for(&self, kind: &str, timeout: Duration) -> Option<Value> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.of_type(kind).into_iter().next();
            found.is_some()
        });
        found
    }
    /// Forgets the messages received so far.
    pub fn clear(&self) {
        self.received.lock().unwrap().clear();
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Raises this process's soft limit on open files to at least `want`
/// (capped by the hard limit); peers started afterwards inherit it.
/// Returns the soft limit now in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let target = (want as libc::rlim_t).min(lim.rlim_max);
        if lim.rlim_cur < target {
            let new = libc::rlimit {
                rlim_cur: target,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                lim.rlim_cur = target;
            }
        }
    }
    lim.rlim_cur as u64
}

/// Opens `n` TCP connections to 127.0.0.1:`port` and keeps them open (idle)
/// until the returned streams are dropped.
pub fn open_idle(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("idle connection {i} to port {port}: {e}"))
        })
        .collect()
}

/// How many of `streams` the other side has closed (EOF or reset); reads
/// nothing that is still open. The streams are left non-blocking.
pub fn count_closed(streams: &[TcpStream]) -> usize {
    streams
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).expect("nonblocking");
            let mut b = [0u8; 1];
            match (&**s).read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            }
        })
        .count()
}

/// Sets the soft limit on open files of process `pid` (e.g. a peer just
/// started) to `soft`, keeping its hard limit; models a machine whose
/// default `ulimit -n` is that low.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
pub fn set_fd_limit(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) on our own child with valid pointers to locals.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit get: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: (soft as libc::rlim_t).min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit set: {}", std::io::Error::last_os_error());
}

pub mod basics;
pub mod chaos;
pub mod files;
pub mod procfs;
pub mod webdriver;
