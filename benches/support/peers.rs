//! Real `peershare` processes for the end-to-end bench and the RSS probe
//! (included with `#[path]` by `benches/transfer.rs` and
//! `examples/rss_probe.rs`).
//!
//! The binary: `PEERSHARE_BIN` if set; else, in a bench, the one cargo
//! built for it (`CARGO_BIN_EXE_peershare`: `cargo bench` builds the binary
//! with the bench profile, i.e. release settings, into `<target>/release/`);
//! else, in an example, the `peershare` in the same `<target>/release/`
//! folder, else `$CARGO_TARGET_DIR/release/peershare` (default
//! `target/release/peershare`). Examples don't build it: run
//! `cargo build --release` first.
//!
//! Every process is killed and reaped on drop; every folder is a
//! `tempfile::TempDir` (under `$TMPDIR`, default `/tmp`) removed on drop.
//! The `try_` functions return errors where the others panic (for
//! examples that must report a failed child or I/O and clean up).
#![allow(dead_code)]

#[path = "../../tests/support/basics.rs"]
mod basics;
pub use basics::http_get;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Bound on every wait (start-up hashes the served file, so it is generous).
pub const WAIT: Duration = Duration::from_secs(120);

/// The release binary to run.
pub fn peershare_bin() -> PathBuf {
    try_peershare_bin().unwrap_or_else(|why| panic!("{why}"))
}

/// The release binary to run, or why there is none.
pub fn try_peershare_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("PEERSHARE_BIN") {
        let bin = PathBuf::from(p);
        if !bin.is_file() {
            return Err(format!("PEERSHARE_BIN={} is not a file", bin.display()));
        }
        return Ok(bin);
    }
    // Cargo builds the binary for a bench and says where.
    if let Some(p) = option_env!("CARGO_BIN_EXE_peershare") {
        return Ok(PathBuf::from(p));
    }
    // An example runs from `<target>/release/examples/`.
    let beside_us = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("peershare")));
    let from_env = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("release")
        .join("peershare");
    let bin = beside_us.filter(|p| p.is_file()).unwrap_or(from_env);
    if !bin.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release` first (same CARGO_TARGET_DIR) \
             or set PEERSHARE_BIN",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Writes `len` pseudo-random bytes to `path` in 1 MiB pieces.
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    try_write_random_file(path, len, seed)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// As [`write_random_file`], returning the I/O error.
pub fn try_write_random_file(path: &Path, len: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// The port number that follows `marker` in `line`, if any.
fn try_port_after(line: &str, marker: &str) -> Option<u16> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// A running peer: stdout lines arrive on a channel.
pub struct Peer {
    /// The process.
    pub child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// P2P port it listens on.
    pub p2p_port: u16,
    /// Stats page port.
    pub http_port: u16,
    /// Its storage folder.
    pub dir: PathBuf,
}

impl Peer {
    /// Starts `peershare <id> 127.0.0.1 0 0 --storage-dir <dir> <extra...>`
    /// (log to `<dir>/../<id>.log` at warn level, so logging costs nothing)
    /// and waits for its banner.
    pub fn spawn(id: &str, dir: &Path, extra: &[String]) -> Peer {
        Peer::spawn_advertising(id, dir, 0, extra)
    }

    /// As [`Peer::spawn`], but advertising P2P port `advertised` (0: the
    /// bound one). With `--bind 127.0.0.1:0` in `extra` the peer listens on
    /// a free port of its own and tells the network `advertised` (a proxy's
    /// port); [`Peer::p2p_port`] is where it really listens.
    pub fn spawn_advertising(id: &str, dir: &Path, advertised: u16, extra: &[String]) -> Peer {
        Peer::try_spawn_advertising(id, dir, advertised, extra)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// As [`Peer::spawn_advertising`], returning why it failed (the process,
    /// if it started, is killed and reaped). Option variables of the
    /// environment (`PEERSHARE_<OPTION>`) are not passed on: the peer runs
    /// on `extra` alone.
    pub fn try_spawn_advertising(
        id: &str,
        dir: &Path,
        advertised: u16,
        extra: &[String],
    ) -> Result<Peer, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("create storage folder {}: {e}", dir.display()))?;
        let log = dir
            .parent()
            .unwrap_or(dir)
            .join(format!("{id}.log"))
            .display()
            .to_string();
        let mut cmd = Command::new(try_peershare_bin()?);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("PEERSHARE_")) {
                cmd.env_remove(&key);
            }
        }
        let mut child = cmd
            .args([
                id,
                "127.0.0.1",
                &advertised.to_string(),
                "0",
                "--storage-dir",
            ])
            .arg(dir)
            .args(["--log-file", &log, "--log-level", "warn"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start peershare {id}: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("peershare {id}: no stdin/stdout pipe"));
        };
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = Peer {
            child,
            stdin,
            lines,
            p2p_port: 0,
            http_port: 0,
            dir: dir.to_path_buf(),
        };
        // On an error `peer` is dropped: killed and reaped.
        let banner = peer.wait_line("listening on", WAIT).ok_or_else(|| {
            // The log's end says why (its folder may be gone by the time
            // the message is read).
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join("\n  ");
            format!("peer {id} did not start; the end of its log {log}:\n  {tail}")
        })?;
        match (
            try_port_after(&banner, "listening on 127.0.0.1:"),
            try_port_after(&banner, "http://127.0.0.1:"),
        ) {
            (Some(p2p), Some(http)) => (peer.p2p_port, peer.http_port) = (p2p, http),
            _ => return Err(format!("peer {id}: no ports in its banner {banner:?}")),
        }
        Ok(peer)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Types a menu line.
    pub fn send_line(&mut self, line: &str) {
        self.try_send_line(line).expect("write stdin");
    }

    /// Types a menu line; the error if the peer's stdin is gone.
    pub fn try_send_line(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()
    }

    /// Waits for the next stdout line containing `needle` (earlier lines
    /// are dropped).
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The ids of the files in `/api/state`.
    pub fn file_ids(&self) -> Vec<String> {
        let Some(body) = http_get(self.http_port, "/api/state") else {
            return Vec::new();
        };
        let Ok(state) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Vec::new();
        };
        state["files"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .filter_map(|f| f["file_id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The entry of `file_id` in `/api/state`, if listed.
    pub fn file_entry(&self, file_id: &str) -> Option<serde_json::Value> {
        let body = http_get(self.http_port, "/api/state")?;
        let state = serde_json::from_slice::<serde_json::Value>(&body).ok()?;
        state["files"]
            .as_array()?
            .iter()
            .find(|f| f["file_id"] == file_id)
            .cloned()
    }

    /// Waits until `/api/state` lists `file_id` with at least `holders`
    /// peers holding it.
    pub fn wait_holders(&self, file_id: &str, holders: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let known = self.file_entry(file_id).map_or(0, |f| {
                f["peers_with_file"]
                    .as_array()
                    .map_or(0, |holders| holders.len())
            });
            if known >= holders {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Types `get <file_id>` and collects its `get:` lines until the
    /// download ends (`get: saved`, or `get: no source left`) or `timeout`
    /// passes; the lines, and the time from typing to the last one.
    pub fn get_lines(&mut self, file_id: &str, timeout: Duration) -> (Vec<String>, Duration) {
        self.try_get_lines(file_id, timeout)
            .unwrap_or_else(|e| panic!("type `get`: {e}"))
    }

    /// As [`Peer::get_lines`]; an error if `get` could not be typed.
    pub fn try_get_lines(
        &mut self,
        file_id: &str,
        timeout: Duration,
    ) -> std::io::Result<(Vec<String>, Duration)> {
        let start = Instant::now();
        let deadline = start + timeout;
        self.try_send_line(&format!("get {file_id}"))?;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = self.wait_line("get: ", left) else {
                break;
            };
            let ended = line.contains("get: saved") || line.contains("get: no source left");
            lines.push(line);
            if ended {
                break;
            }
        }
        Ok((lines, start.elapsed()))
    }

    /// Waits until the catalog lists `file_id`.
    pub fn wait_knows(&self, file_id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.file_ids().iter().any(|f| f == file_id) {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Types `get <file_id>` and waits for `get: saved`; the time between.
    pub fn get(&mut self, file_id: &str) -> Duration {
        let start = Instant::now();
        self.send_line(&format!("get {file_id}"));
        // Skip `get: fetching ...`; wait for how it ended.
        let line = loop {
            let line = self
                .wait_line("get: ", WAIT)
                .expect("no `get:` line from the downloader");
            if !line.contains("get: fetching") {
                break line;
            }
        };
        let elapsed = start.elapsed();
        assert!(line.contains("get: saved"), "download failed: {line}");
        elapsed
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A serving peer holding one random file of `len` bytes, and its id.
pub struct Server {
    /// The peer.
    pub peer: Peer,
    /// The file's id.
    pub file_id: String,
    /// The file's length.
    pub len: u64,
}

impl Server {
    /// Writes the file into a fresh storage folder under `root` and starts
    /// the peer (its folder scan adds the file).
    pub fn start(root: &Path, len: u64) -> Server {
        let dir = root.join("server");
        std::fs::create_dir_all(&dir).expect("server dir");
        write_random_file(&dir.join(format!("blob-{len}.bin")), len, len);
        let extra: Vec<String> = ["--gossip-interval", "0.2", "--auto-fetch", "0"]
            .iter()
            .chain(&["--no-well-known"])
            .map(|s| s.to_string())
            .collect();
        let peer = Peer::spawn("bench-server", &dir, &extra);
        let ids = peer.file_ids();
        assert_eq!(ids.len(), 1, "the server should hold exactly one file");
        Server {
            file_id: ids[0].clone(),
            peer,
            len,
        }
    }

    /// Starts a downloader with an empty storage folder `dir` that
    /// bootstraps from this server, and waits until it knows the file.
    pub fn downloader(&self, dir: &Path) -> Peer {
        let extra: Vec<String> = vec![
            "--well-known".into(),
            format!("127.0.0.1:{}", self.peer.p2p_port),
            "--gossip-interval".into(),
            "0.2".into(),
            "--auto-fetch".into(),
            "0".into(),
        ];
        let peer = Peer::spawn("bench-downloader", dir, &extra);
        assert!(
            peer.wait_knows(&self.file_id, WAIT),
            "the downloader never learnt the file"
        );
        peer
    }
}
