//! Test support: start real peershare processes on 127.0.0.1, talk to them,
//! wait on conditions with bounded timeouts, and always clean up.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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

/// Builder for a peer process.
pub struct PeerBuilder {
    id: String,
    args: Vec<String>,
    stdin: StdinMode,
    dir: Option<PathBuf>,
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
        }
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
    /// Starts the process and waits for its "listening" line.
    pub fn spawn(self) -> PeerProc {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("storage"));
        let mut args: Vec<String> = vec![
            self.id.clone(),
            "127.0.0.1".into(),
            "0".into(),
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
        cmd.args(&args)
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

fn port_after(line: &str, marker: &str) -> u16 {
    let rest = &line[line.find(marker).expect("marker") + marker.len()..];
    rest.chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .expect("port")
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
    /// The file entries in `/api/state`.
    pub fn files(&self) -> Vec<Value> {
        self.state()
            .and_then(|s| s["files"].as_array().cloned())
            .unwrap_or_default()
    }
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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
