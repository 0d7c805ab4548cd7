//! A local network of N peers on 127.0.0.1, to try peershare alone:
//!
//! ```sh
//! cargo run --example cluster -- 5                        # five peers
//! cargo run --example cluster -- 3 --gossip-interval 1    # options for every peer
//! ```
//!
//! Starts N `peershare` processes with free ports, each with its own
//! storage folder in a fresh temporary folder (removed at the end); the
//! first starts alone (`--no-well-known`), the others bootstrap from it.
//! Prints each peer's page and P2P address, then waits; Ctrl-C (SIGINT) or
//! SIGTERM stops them all: SIGTERM, then SIGKILL after [`STOP_WAIT`].
//!
//! The binary: `PEERSHARE_BIN` if set, else the `peershare` cargo built
//! beside this example (`target/<profile>/`), built with `cargo build` first
//! when missing and the example runs under cargo.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Most peers one cluster starts (each is a process with two listeners).
const MAX_PEERS: usize = 64;
/// How long a peer may take to print its start-up line.
const START_WAIT: Duration = Duration::from_secs(20);
/// How long the peers get to exit after SIGTERM before SIGKILL (a peer
/// exits within 2 s of SIGTERM).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// One started peer.
struct Member {
    id: String,
    child: Child,
    p2p: String,
    page: String,
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let n = match argv.next().map(|s| s.parse::<usize>()) {
        None => 3,
        Some(Ok(n)) if (1..=MAX_PEERS).contains(&n) => n,
        Some(_) => {
            eprintln!("usage: cluster [N (1 to {MAX_PEERS}, default 3)] [peershare options for every peer]");
            return ExitCode::from(2);
        }
    };
    let extra: Vec<String> = argv.collect();
    let bin = match peershare_bin() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("cluster: {why}");
            return ExitCode::from(1);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("cluster: cannot catch signal {sig}: {e}");
            return ExitCode::from(1);
        }
    }
    let base = std::env::temp_dir().join(format!("peershare-cluster-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(base.join("logs")) {
        eprintln!("cluster: cannot create {}: {e}", base.display());
        return ExitCode::from(1);
    }
    let mut members: Vec<Member> = Vec::new();
    let mut failed = None;
    for i in 1..=n {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let bootstrap = match members.first() {
            None => vec!["--no-well-known".to_string()],
            Some(first) => vec!["--well-known".to_string(), first.p2p.clone()],
        };
        match start(&bin, &base, &format!("peer{i}"), &bootstrap, &extra) {
            Ok(m) => {
                println!(
                    "{}: page http://{}/  P2P {}  folder {}  pid {}",
                    m.id,
                    m.page,
                    m.p2p,
                    base.join(&m.id).display(),
                    m.child.id()
                );
                members.push(m);
            }
            Err(why) => {
                failed = Some(why);
                break;
            }
        }
    }
    if let Some(why) = &failed {
        eprintln!("cluster: {why}; stopping the others");
    } else if !stop.load(Ordering::SeqCst) {
        println!(
            "cluster: {} peers running (logs in {}); Ctrl-C stops them all",
            members.len(),
            base.join("logs").display()
        );
    }
    while failed.is_none() && !stop.load(Ordering::SeqCst) {
        for m in &mut members {
            if let Ok(Some(status)) = m.child.try_wait() {
                eprintln!("cluster: {} exited ({status}); stopping the others", m.id);
                failed = Some(String::new());
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop_all(&mut members);
    if let Err(e) = std::fs::remove_dir_all(&base) {
        eprintln!("cluster: cannot remove {}: {e}", base.display());
    }
    println!("cluster: stopped");
    if failed.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Starts one peer on free ports and waits for its start-up line.
fn start(
    bin: &Path,
    base: &Path,
    id: &str,
    bootstrap: &[String],
    extra: &[String],
) -> Result<Member, String> {
    let log = base.join("logs").join(format!("{id}.log"));
    let mut cmd = Command::new(bin);
    // The user's PEERSHARE_<OPTION> variables (a PEERSHARE_BIND, say) would
    // apply to every peer alike: each peer runs on its own arguments only.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PEERSHARE_")) {
            cmd.env_remove(&key);
        }
    }
    let mut child = cmd
        .args([id, "127.0.0.1", "0", "0", "--storage-dir"])
        .arg(base.join(id))
        .arg("--log-file")
        .arg(&log)
        .args(bootstrap)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{id}: no stdout"));
    };
    let (tx, rx) = mpsc::channel();
    // Reads the peer's stdout to its end, so it never blocks on a full pipe.
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let (Some(p2p), Some(page)) = (
                    addr_after(&line, "listening on "),
                    addr_after(&line, "http://"),
                ) {
                    return Ok(Member {
                        id: id.to_string(),
                        child,
                        p2p,
                        page,
                    });
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{id} did not start within {START_WAIT:?} (see {})",
                    log.display()
                ));
            }
        }
    }
}

/// The `ip:port` that follows `marker` in the start-up line.
fn addr_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.contains(':').then_some(addr)
}

/// SIGTERM to every peer, then SIGKILL to those still running after
/// [`STOP_WAIT`]; every child is reaped.
fn stop_all(members: &mut [Member]) {
    for m in members.iter() {
        // SAFETY: kill(2) on our own child, not yet reaped (no pid reuse).
        unsafe { libc::kill(m.child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_WAIT;
    for m in members.iter_mut() {
        while matches!(m.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if matches!(m.child.try_wait(), Ok(None)) {
            eprintln!(
                "cluster: {} still running after {STOP_WAIT:?}; killed",
                m.id
            );
            let _ = m.child.kill();
        }
        let _ = m.child.wait();
    }
}

/// The peershare binary: `PEERSHARE_BIN`, else the one beside this
/// example's folder, built first when missing (under `cargo run`).
fn peershare_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("PEERSHARE_BIN") {
        let bin = PathBuf::from(p);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("PEERSHARE_BIN={} is not a file", bin.display()))
        };
    }
    // This example runs from `<target>/<profile>/examples/`.
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target folder")?;
    let bin = profile_dir.join("peershare");
    if bin.is_file() {
        return Ok(bin);
    }
    // `cargo run --example` builds the library, not the binary: build it
    // with the same profile.
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Err(format!(
            "{} not found: run `cargo build` first",
            bin.display()
        ));
    };
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--bin", "peershare"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    println!("cluster: building peershare ({})", bin.display());
    match cmd.status() {
        Ok(s) if s.success() && bin.is_file() => Ok(bin),
        _ => Err(format!(
            "{} could not be built: run `cargo build`",
            bin.display()
        )),
    }
}
