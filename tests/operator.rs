//! The operator's side (issue 13): where the listeners go (`--bind`,
//! `--http-host`), options from the environment, the systemd unit, and the
//! `cluster` example. Real processes on 127.0.0.0/8 only, bounded waits,
//! every process killed and reaped.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use support::chaos::{ChaosProxy, Mode};
use support::files::{closed_port, pattern, sha256_file, sha256_hex, FakeHolder, FakeStyle};
use support::*;

/// A peershare (or cluster) process started by hand; killed and reaped
/// when dropped.
struct Raw {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Raw {
    /// Starts `program args` with `env` added to a copy of our environment
    /// without the peer's option variables, stdin at `/dev/null`.
    fn start(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Raw {
        let mut cmd = Command::new(program);
        without_option_env(&mut cmd)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start process");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Raw { child, lines }
    }
    fn peershare(args: &[&str], env: &[(&str, &str)]) -> Raw {
        Raw::start(Path::new(env!("CARGO_BIN_EXE_peershare")), args, env)
    }
    /// The first stdout line containing `needle`, waiting up to `timeout`.
    fn wait_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            found.is_some()
        });
        found
    }
    fn stdout(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connects(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

#[test]
fn a_peer_bound_behind_a_forwarding_proxy_advertises_the_proxy_and_is_fetched_through_it() {
    // The peer listens on A; a relay on B (the "forwarded port") leads to A,
    // and the network is told B.
    let bound_port = closed_port();
    let proxy = ChaosProxy::start(bound_port, Mode::Pass);
    let watcher = FakeHolder::start("watcher", vec![], FakeStyle::default(), |_, _, _| {});
    let content = pattern(13, 300_000);
    let bind = format!("127.0.0.1:{bound_port}");
    let x = PeerBuilder::new("bound")
        .p2p_port(proxy.port)
        .args(&["--bind", &bind])
        .well_known(watcher.port)
        .file("hello.bin", &content)
        .spawn();
    assert_eq!(x.p2p_port, bound_port, "the banner names the bound port");
    let banner = x.lines().into_iter().find(|l| l.contains("listening on"));
    assert!(
        banner.as_deref().is_some_and(|l| l.contains(&format!(
            "listening on {bind} (advertised as 127.0.0.1:{})",
            proxy.port
        ))),
        "{banner:?}"
    );

    // What the bound peer tells the network names B, not A.
    let gossip = watcher
        .wait_message("GOSSIP", WAIT)
        .unwrap_or_else(|| panic!("no GOSSIP from the bound peer\n{}", log_tail(&x)));
    assert_eq!(gossip["host"], "127.0.0.1");
    assert_eq!(gossip["port"], proxy.port, "{gossip}");

    // Another peer knows only B: it gossips there, learns the file, and
    // fetches it through the relay.
    let mut y = PeerBuilder::new("outside").well_known(proxy.port).spawn();
    let mut id = String::new();
    let known = wait_until(WAIT, || {
        if let Some(f) = y
            .files()
            .into_iter()
            .find(|f| f["file_name"] == "hello.bin")
        {
            id = f["file_id"].as_str().unwrap_or_default().to_string();
        }
        !id.is_empty()
    });
    assert!(
        known,
        "the file never reached the outside peer\n{}",
        log_tail(&y)
    );
    let seen = y
        .state()
        .and_then(|s| s["peers"].as_array().cloned())
        .unwrap_or_default();
    let entry = seen.iter().find(|p| p["peer_id"] == "bound");
    assert_eq!(
        entry.map(|p| p["port"].clone()),
        Some(proxy.port.into()),
        "{seen:?}"
    );
    let relayed_before = proxy.accepted();
    let skip = y.lines().len();
    y.send_line(&format!("get {}", &id[..12]));
    let mut saved = None;
    wait_until(WAIT, || {
        saved = y
            .lines()
            .into_iter()
            .skip(skip)
            .find(|l| l.starts_with("get: saved") || l.starts_with("get: no source left"));
        saved.is_some()
    });
    assert!(
        saved
            .as_deref()
            .is_some_and(|l| l.starts_with("get: saved hello.bin,")),
        "{saved:?}\n{}",
        log_tail(&y)
    );
    assert_eq!(sha256_file(&y.dir.join("hello.bin")), sha256_hex(&content));
    assert!(
        proxy.accepted() > relayed_before,
        "the GET_FILE went through the relay"
    );
}

#[test]
fn options_come_from_the_environment_and_the_stats_page_listens_on_http_host_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("from-env");
    let log = tmp.path().join("env.log");
    let (dir_s, log_s) = (dir.display().to_string(), log.display().to_string());
    let p = Raw::peershare(
        &["envpeer", "127.0.0.1", "0", "0"],
        &[
            ("PEERSHARE_STORAGE_DIR", &dir_s),
            ("PEERSHARE_LOG_FILE", &log_s),
            ("PEERSHARE_NO_WELL_KNOWN", "1"),
            ("PEERSHARE_HTTP_HOST", "127.0.0.2"),
            ("PEERSHARE_GOSSIP_INTERVAL", "0.5"),
            ("PEERSHARE_PEER_TIMEOUT", "3"),
            ("PEERSHARE_SEED", "7"),
        ],
    );
    let banner = p
        .wait_line("listening on", WAIT)
        .unwrap_or_else(|| panic!("no banner: {}", p.stdout()));
    assert!(banner.contains(&format!("files in {dir_s})")), "{banner}");
    assert!(banner.contains("http://127.0.0.2:"), "{banner}");
    let http_port = port_after(&banner, "http://127.0.0.2:");
    assert!(log.is_file(), "the log went to PEERSHARE_LOG_FILE");
    assert!(connects(SocketAddr::from(([127, 0, 0, 2], http_port))));
    assert!(
        !connects(SocketAddr::from(([127, 0, 0, 1], http_port))),
        "the page listens on --http-host only"
    );
}

#[test]
fn the_command_line_wins_over_the_environment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = |name: &str| tmp.path().join(name).display().to_string();
    let base = |d: &str| -> Vec<String> {
        ["p", "127.0.0.1", "0", "0", "--storage-dir", d]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };

    // Out of range from the environment: refused like on the command line.
    let bad = Raw::peershare(
        &["p", "127.0.0.1", "0", "0", "--no-well-known"],
        &[("PEERSHARE_GOSSIP_INTERVAL", "7200")],
    );
    let mut bad = bad;
    let status = wait_exit(&mut bad.child, WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(2));

    // ...and overridden by the command line.
    let d = dir("a");
    let mut args = base(&d);
    args.extend(["--no-well-known", "--gossip-interval", "1"].map(String::from));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let ok = Raw::peershare(&argv, &[("PEERSHARE_GOSSIP_INTERVAL", "7200")]);
    assert!(
        ok.wait_line("listening on", WAIT).is_some(),
        "{}",
        ok.stdout()
    );

    // --well-known on the command line beats PEERSHARE_NO_WELL_KNOWN=1:
    // the bootstrap peer gets our GOSSIP.
    let wk = FakeHolder::start("wk", vec![], FakeStyle::default(), |_, _, _| {});
    let d = dir("b");
    let mut args = base(&d);
    args.extend(["--well-known".into(), format!("127.0.0.1:{}", wk.port)]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let with_wk = Raw::peershare(&argv, &[("PEERSHARE_NO_WELL_KNOWN", "1")]);
    assert!(with_wk.wait_line("listening on", WAIT).is_some());
    assert!(wk.wait_message("GOSSIP", WAIT).is_some(), "no GOSSIP came");

    // --no-well-known on the command line beats PEERSHARE_WELL_KNOWN.
    let other = FakeHolder::start("other", vec![], FakeStyle::default(), |_, _, _| {});
    let d = dir("c");
    let mut args = base(&d);
    args.extend(["--no-well-known", "--gossip-interval", "0.2"].map(String::from));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let wk_env = format!("127.0.0.1:{}", other.port);
    let alone = Raw::peershare(&argv, &[("PEERSHARE_WELL_KNOWN", &wk_env)]);
    assert!(alone.wait_line("listening on", WAIT).is_some());
    // Five gossip rounds: a peer that took the variable would have knocked.
    thread::sleep(Duration::from_secs(1));
    assert!(other.received().is_empty(), "{:?}", other.received());
}

#[test]
fn help_shows_each_option_s_environment_variable() {
    let out = run_binary(&["--help"], WAIT);
    assert_eq!(out.status.and_then(|s| s.code()), Some(0));
    for var in [
        "PEERSHARE_STORAGE_DIR",
        "PEERSHARE_HTTP_HOST",
        "PEERSHARE_BIND",
        "PEERSHARE_SEED",
        "PEERSHARE_WELL_KNOWN",
    ] {
        assert!(
            out.stdout.contains(&format!("[env: {var}=")),
            "{var} missing from --help:\n{}",
            out.stdout
        );
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let has_tool = Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_tool {
        println!("skipped: systemd-analyze not installed");
        return;
    }
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/peershare.service"),
    )
    .expect("read examples/peershare.service");
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=peershare",
        "ProtectSystem=strict",
        "StandardInput=null",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == directive), "{directive} missing");
    }
    // The unit as shipped names /usr/local/bin: point it at the built binary
    // so verify also checks that ExecStart is executable.
    let bin = env!("CARGO_BIN_EXE_peershare");
    let tested = unit.replace(
        "ExecStart=/usr/local/bin/peershare",
        &format!("ExecStart={bin}"),
    );
    assert_ne!(tested, unit, "ExecStart=/usr/local/bin/peershare not found");
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("peershare.service");
    std::fs::write(&path, tested).expect("write unit");
    let mut child = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start systemd-analyze");
    let status = wait_exit(&mut child, WAIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("systemd-analyze verify did not finish within {WAIT:?}");
    }
    let output = child.wait_with_output().expect("output");
    let said = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(status.is_some_and(|s| s.success()), "{said}");
    // Warnings about our own lines (an unknown key, a bad value) fail it too.
    assert!(!said.contains("peershare.service:"), "{said}");
}

/// `<target>/<profile>/examples/cluster`, beside this test's `deps/`
/// folder: `cargo test` builds every example before running tests.
fn cluster_example() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join("cluster");
    path.is_file().then_some(path)
}

#[test]
fn the_cluster_example_starts_peers_that_meet_and_stops_them_all_on_ctrl_c() {
    let Some(cluster) = cluster_example() else {
        println!("skipped: examples/cluster not built (`cargo test` builds it; `--test operator` alone does not)");
        return;
    };
    let mut c = Raw::start(
        &cluster,
        &[
            "3",
            "--gossip-interval",
            "0.5",
            "--peer-timeout",
            "3",
            "--auto-fetch",
            "0",
        ],
        &[("PEERSHARE_BIN", env!("CARGO_BIN_EXE_peershare"))],
    );
    assert!(
        c.wait_line("cluster: 3 peers running", WAIT).is_some(),
        "{}",
        c.stdout()
    );
    let out = c.stdout();
    let members: Vec<&str> = out.lines().filter(|l| l.contains(" pid ")).collect();
    assert_eq!(members.len(), 3, "{out}");
    let pages: Vec<u16> = members
        .iter()
        .map(|l| port_after(l, "page http://127.0.0.1:"))
        .collect();
    let pids: Vec<String> = members
        .iter()
        .filter_map(|l| l.rsplit(' ').next().map(String::from))
        .collect();
    let folder = members[0]
        .split("folder ")
        .nth(1)
        .and_then(|r| r.split("  ").next())
        .map(PathBuf::from)
        .expect("folder");
    // Every peer sees the two others.
    for &port in &pages {
        let met = wait_until(WAIT, || {
            http_get(port, "/api/state")
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|s| s["peers"].as_array().map(|p| p.len()))
                == Some(2)
        });
        assert!(met, "the peer on page {port} did not meet the others");
    }
    // Ctrl-C: every peer stopped and reaped, the temp folder gone.
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(c.child.id() as libc::pid_t, libc::SIGINT) };
    let status = wait_exit(&mut c.child, Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        c.stdout()
    );
    for pid in &pids {
        assert!(
            !Path::new("/proc").join(pid).exists(),
            "peer pid {pid} still there"
        );
    }
    assert!(!folder.exists(), "{} left behind", folder.display());
}
