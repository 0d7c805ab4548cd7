//! What the user sees in the terminal while files move: the live progress
//! line under a pseudo-terminal and as plain lines without one, a source
//! failing mid-transfer said in words (and in `/api/state`'s events), a
//! failed `get` naming why each source failed, and `exit` asking again while
//! a transfer runs. Real processes and fake holders on 127.0.0.1 only.
mod support;

use serde_json::Value;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::files::*;
use support::*;

/// Bound on a download in these tests (the slow ones take about 7 s).
const GET_WAIT: Duration = Duration::from_secs(30);

/// A GET_FILE handler sending `data`'s FILE_DATA in `pieces` pieces `gap`
/// apart; with `cut_after`, the connection is dropped after that many
/// pieces (a source closing mid-transfer).
fn serve_slowly(
    record: Value,
    data: Vec<u8>,
    pieces: usize,
    gap: Duration,
    cut_after: Option<usize>,
) -> impl Fn(&Value, TcpStream, &AtomicBool) + Send + Sync + 'static {
    move |_req, mut conn, stop| {
        let msg = file_data(&record, &data);
        let piece = msg.len().div_ceil(pieces);
        for (i, chunk) in msg.chunks(piece).enumerate() {
            if cut_after == Some(i) {
                return; // dropped: the peer sees the connection close
            }
            if stop.load(Ordering::SeqCst) || conn.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(gap);
        }
        reply_and_close(conn, b"");
    }
}

/// A downloader that knows `holders` (tried most recently heard first: the
/// last in the list first) for the file `record`.
fn downloader_knowing(holders: &[&FakeHolder], record: &Value) -> PeerProc {
    let d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    let id = record["file_id"].as_str().expect("id").to_string();
    for h in holders {
        h.send_gossip_reply(d.p2p_port).expect("gossip reply");
        let known = wait_until(WAIT, || {
            d.file(&id).is_some_and(|f| {
                f["peers_with_file"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == h.id.as_str()))
            })
        });
        assert!(known, "{} not known as a holder\n{}", h.id, log_tail(&d));
        // Distinct last-seen times order the sources.
        std::thread::sleep(Duration::from_millis(5));
    }
    d
}

#[test]
fn without_a_terminal_progress_comes_as_plain_lines_every_few_seconds() {
    let data = pattern(1, 256 * 1024);
    let record = file_record("slow.bin", &data, "slowpoke", 1_700_000_001);
    let slow = FakeHolder::start(
        "slowpoke",
        vec![record.clone()],
        FakeStyle::default(),
        serve_slowly(record.clone(), data, 30, Duration::from_millis(250), None),
    );
    let mut d = downloader_knowing(&[&slow], &record);
    let skip = d.line_count();
    let id = record["file_id"].as_str().expect("id");
    d.send_line(&format!("get {}", &id[..12]));
    let line = d
        .wait_line(skip, "get: slow.bin ", GET_WAIT)
        .unwrap_or_else(|| panic!("no progress line\n{}", log_tail(&d)));
    assert!(
        line.contains("% ")
            && line.contains(" of 256.0 KiB at ")
            && line.ends_with("from slowpoke"),
        "{line}"
    );
    assert!(!line.contains('\r') && !line.contains('\x1b'), "{line:?}");
    assert!(
        d.wait_line(skip, "get: saved slow.bin", GET_WAIT).is_some(),
        "{}",
        log_tail(&d)
    );
}

#[test]
fn a_source_closing_mid_transfer_is_said_in_words_and_the_next_one_tried() {
    let data = pattern(2, 512 * 1024);
    let record = file_record("big.iso", &data, "owner", 1_700_000_002);
    let erin = FakeHolder::start(
        "erin",
        vec![record.clone()],
        FakeStyle::default(),
        serve_slowly(
            record.clone(),
            data.clone(),
            4,
            Duration::from_millis(10),
            None,
        ),
    );
    let carol = FakeHolder::start(
        "carol",
        vec![record.clone()],
        FakeStyle::default(),
        serve_slowly(record.clone(), data, 8, Duration::from_millis(50), Some(4)),
    );
    let mut d = downloader_knowing(&[&erin, &carol], &record);
    let skip = d.line_count();
    let id = record["file_id"].as_str().expect("id");
    d.send_line(&format!("get {}", &id[..12]));
    let line = d
        .wait_line(skip, "get: carol (", GET_WAIT)
        .unwrap_or_else(|| panic!("no failure line\n{}", log_tail(&d)));
    let want = format!(
        "get: carol (127.0.0.1:{}) closed mid-transfer at ",
        carol.port
    );
    assert!(line.starts_with(&want), "{line}");
    assert!(
        line.ends_with(&format!("; trying erin (127.0.0.1:{}) (2 of 2)", erin.port)),
        "{line}"
    );
    assert!(
        d.wait_line(skip, "get: saved big.iso", GET_WAIT).is_some(),
        "{}",
        log_tail(&d)
    );
    let state = d.state().expect("/api/state");
    let events = state["events"].as_array().expect("events");
    let failed = events
        .iter()
        .find(|e| e["kind"] == "source_failed")
        .unwrap_or_else(|| panic!("no source_failed event: {events:?}"));
    let text = failed["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("carol") && text.contains("closed mid-transfer at "),
        "{text}"
    );
    assert!(failed["at_unix"]
        .as_u64()
        .is_some_and(|t| t > 1_700_000_000));
    assert!(events.iter().any(|e| e["kind"] == "saved"), "{events:?}");
    assert!(state["unix_now"]
        .as_u64()
        .is_some_and(|t| t > 1_700_000_000));
}

#[test]
fn a_failed_get_says_why_for_each_source() {
    let data = pattern(3, 10_000);
    let record = file_record("lost.bin", &data, "owner", 1_700_000_003);
    let nope = FakeHolder::start(
        "nope",
        vec![record.clone()],
        FakeStyle::default(),
        |_req, conn, _stop| reply_and_close(conn, &file_not_found()),
    );
    let short = FakeHolder::start("short", vec![record.clone()], FakeStyle::default(), {
        let (record, half) = (record.clone(), data[..5_000].to_vec());
        move |_req, conn, _stop| reply_and_close(conn, &file_data(&record, &half))
    });
    let mut d = downloader_knowing(&[&nope, &short], &record);
    let skip = d.line_count();
    let id = record["file_id"].as_str().expect("id");
    d.send_line(&format!("get {}", &id[..12]));
    let line = d
        .wait_line(skip, "get: no source left for lost.bin: ", GET_WAIT)
        .unwrap_or_else(|| panic!("no failure line\n{}", log_tail(&d)));
    assert_eq!(
        line,
        "get: no source left for lost.bin: short sent 4.9 KiB, not the advertised 9.8 KiB, \
         nope does not have the file"
    );
    let all = d.lines()[skip..].join("\n");
    assert!(
        all.contains(&format!(
            "get: short (127.0.0.1:{}) sent 4.9 KiB, not the advertised 9.8 KiB; trying nope (127.0.0.1:{}) (2 of 2)",
            short.port, nope.port
        )),
        "{all}"
    );
    let state = d.state().expect("/api/state");
    let events = state["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["kind"] == "download_failed"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains("nope does not have the file"))),
        "{events:?}"
    );
}

#[test]
fn exit_with_a_transfer_in_flight_asks_again() {
    let data = pattern(5, 256 * 1024);
    let record = file_record("slow.bin", &data, "slowpoke", 1_700_000_005);
    let slow = FakeHolder::start(
        "slowpoke",
        vec![record.clone()],
        FakeStyle::default(),
        serve_slowly(record.clone(), data, 40, Duration::from_millis(250), None),
    );
    let mut d = downloader_knowing(&[&slow], &record);
    let skip = d.line_count();
    let id = record["file_id"].as_str().expect("id");
    d.send_line(&format!("get {}", &id[..12]));
    assert!(d
        .wait_line(skip, "get: fetching slow.bin", GET_WAIT)
        .is_some());
    d.send_line("exit");
    let asked = d
        .wait_line(skip, "type exit again to quit", WAIT)
        .unwrap_or_else(|| panic!("exit did not ask\n{}", log_tail(&d)));
    assert!(
        asked.starts_with("1 transfer in flight (slow.bin ") && asked.contains("from slowpoke"),
        "{asked}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.alive(), "the first exit must not quit");
    d.send_line("exit");
    assert!(
        d.wait_exit(Duration::from_secs(10)).is_some(),
        "the second exit quits"
    );
}

/// A peer process whose stdout is a pseudo-terminal; killed when dropped.
struct PtyPeer {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    _tmp: tempfile::TempDir,
}

impl Drop for PtyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PtyPeer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }
}

/// The pty's size in these tests.
const ROWS: u16 = 24;

/// How stdin reaches a [`PtyPeer`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keyboard {
    /// A pipe: lines arrive whole, nothing is echoed.
    Piped,
    /// The pty itself, as in a real terminal: the kernel echoes what is
    /// typed (canonical mode) and the peer sees a line at Enter.
    Typed,
}

/// Starts a peer with stdout on a fresh pty of [`ROWS`] x 80 (stdin as
/// `keyboard` says, the log in a file); None when no pty can be opened
/// here. With [`Keyboard::Typed`] the master is returned to type on.
fn spawn_on_pty(keyboard: Keyboard) -> Option<(PtyPeer, Option<File>)> {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: ROWS,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors it opened into the pointers
    // given and reads the window size given; the name and termios pointers
    // may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: both descriptors were just opened by openpty and are owned
    // here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("storage");
    let log = tmp.path().join("peer.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peershare"));
    without_option_env(&mut cmd)
        .args(["downloader", "127.0.0.1", "0", "0", "--storage-dir"])
        .arg(&dir)
        .arg("--log-file")
        .arg(&log)
        .args([
            "--no-well-known",
            "--auto-fetch",
            "0",
            "--log-level",
            "debug",
        ])
        .args(QUIET)
        .stderr(Stdio::null());
    let keys = match keyboard {
        Keyboard::Piped => {
            cmd.stdin(Stdio::piped());
            None
        }
        Keyboard::Typed => {
            cmd.stdin(Stdio::from(slave.try_clone().expect("dup the pty")));
            Some(File::from(master.try_clone().expect("dup the pty master")))
        }
    };
    cmd.stdout(Stdio::from(slave));
    let child = cmd.spawn().expect("start peershare");
    drop(cmd); // our copy of the slave: the master sees EOF when the child exits
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let mut master = File::from(master);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    Some((
        PtyPeer {
            child,
            out,
            _tmp: tmp,
        },
        keys,
    ))
}

/// The P2P port from the start line the peer printed on the pty.
fn pty_port(p: &PtyPeer) -> u16 {
    let mut banner = String::new();
    let started = wait_until(WAIT, || {
        let t = p.text();
        match t.lines().find(|l| l.contains("listening on 127.0.0.1:")) {
            Some(l) => {
                banner = l.to_string();
                true
            }
            None => false,
        }
    });
    assert!(started, "no banner: {:?}", p.text());
    port_after(&banner, "listening on 127.0.0.1:")
}

/// A slow holder of a 256 KiB `name` whose reply takes `pieces` x 150 ms,
/// known to the peer on `port`; returns the holder and the file's id.
fn slow_holder_for(port: u16, name: &str, seed: u64, pieces: usize) -> (FakeHolder, String) {
    let data = pattern(seed, 256 * 1024);
    let record = file_record(name, &data, "slowpoke", 1_700_000_000 + seed);
    let slow = FakeHolder::start(
        "slowpoke",
        vec![record.clone()],
        FakeStyle::default(),
        serve_slowly(
            record.clone(),
            data,
            pieces,
            Duration::from_millis(150),
            None,
        ),
    );
    slow.send_gossip_reply(port).expect("gossip reply");
    let id = record["file_id"].as_str().expect("id").to_string();
    (slow, id)
}

/// One status-row redraw as the peer writes it (see `cli::console`).
fn status_redraw(text: &str) -> String {
    format!("\x1b7\x1b[{ROWS};1H\x1b[2K{text}")
}

#[test]
fn on_a_terminal_the_progress_line_is_redrawn_in_place() {
    let Some((p, _)) = spawn_on_pty(Keyboard::Piped) else {
        eprintln!("skipped: no pseudo-terminal can be opened here");
        return;
    };
    let port = pty_port(&p);
    let (_slow, id) = slow_holder_for(port, "tty.bin", 6, 20);
    // The holder is tracked once its GOSSIP_REPLY is in; `get` until the
    // file is known (an unknown id gets a one-line refusal).
    let mut stdin = p.child.stdin.as_ref().expect("stdin");
    let mut asked = false;
    for _ in 0..40 {
        writeln!(stdin, "get {}", &id[..12]).expect("write stdin");
        std::thread::sleep(Duration::from_millis(250));
        if p.text().contains("get: fetching tty.bin") {
            asked = true;
            break;
        }
    }
    assert!(asked, "get did not start: {:?}", p.text());
    let saved = wait_until(GET_WAIT, || p.text().contains("get: saved tty.bin"));
    assert!(saved, "not saved: {:?}", p.text());
    let text = p.text();
    // The last row was made a status row once: the screen scrolled one
    // row, the scrolling region is every other row.
    assert_eq!(
        text.matches(&format!("\x1b[1;{}r", ROWS - 1)).count(),
        1,
        "{text:?}"
    );
    let redraws = text.matches(&status_redraw("get: tty.bin ")).count();
    assert!(redraws >= 2, "{redraws} redraws in {text:?}");
    let with_percent = text
        .split(&status_redraw(""))
        .filter(|s| s.starts_with("get: tty.bin ") && s.contains("% "))
        .count();
    assert!(with_percent >= 2, "{text:?}");
    eprintln!(
        "measured: {redraws} in-place redraws of a 3 s download, {with_percent} with a percentage"
    );
    // Stdin is not the terminal: no prompt is written.
    assert!(!text.contains("peershare> "), "{text:?}");
    // Nothing left in flight: the status row is cleared.
    let cleared = wait_until(WAIT, || {
        p.text().contains(&format!("{}\x1b8", status_redraw("")))
    });
    assert!(cleared, "{:?}", p.text());
}

/// What the peer wrote outside its status-row redraws (each `ESC 7` …
/// `ESC 8`), and the redraws themselves.
fn split_redraws(bytes: &str) -> (String, Vec<String>) {
    let mut outside = String::new();
    let mut redraws = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.find("\x1b7") {
        outside.push_str(&rest[..at]);
        match rest[at..].find("\x1b8") {
            Some(end) => {
                redraws.push(rest[at..at + end + 2].to_string());
                rest = &rest[at + end + 2..];
            }
            None => {
                redraws.push(rest[at..].to_string());
                rest = "";
            }
        }
    }
    outside.push_str(rest);
    (outside, redraws)
}

#[test]
fn on_a_terminal_the_menu_prompts_and_redraws_never_touch_what_is_typed() {
    let Some((p, Some(mut keys))) = spawn_on_pty(Keyboard::Typed) else {
        eprintln!("skipped: no pseudo-terminal can be opened here");
        return;
    };
    let port = pty_port(&p);
    let prompted = wait_until(WAIT, || p.text().ends_with("peershare> "));
    assert!(prompted, "no prompt: {:?}", p.text());
    // About 6 s of transfer: 40 pieces 150 ms apart.
    let (_slow, id) = slow_holder_for(port, "typed.bin", 10, 40);
    let mut asked = false;
    for _ in 0..40 {
        keys.write_all(format!("get {}\n", &id[..12]).as_bytes())
            .expect("type");
        std::thread::sleep(Duration::from_millis(250));
        if p.text().contains("get: fetching typed.bin") {
            asked = true;
            break;
        }
    }
    assert!(asked, "get did not start: {:?}", p.text());
    let drawn = wait_until(WAIT, || {
        p.text().contains(&status_redraw("get: typed.bin "))
    });
    assert!(drawn, "no status row: {:?}", p.text());
    // The prompt came again after the get's answer (the redraws since
    // left it in place); a command is now typed but not entered while the
    // progress keeps moving.
    let after_get = p.text();
    let answer = after_get
        .find("get: fetching typed.bin")
        .unwrap_or_default();
    assert!(
        after_get[answer..].contains("\r\npeershare> \x1b7"),
        "{after_get:?}"
    );
    let mark = p.out.lock().unwrap().len();
    keys.write_all(b"tra").expect("type");
    std::thread::sleep(Duration::from_millis(1_500));
    let typed_then = {
        let out = p.out.lock().unwrap();
        String::from_utf8_lossy(&out[mark..]).into_owned()
    };
    let (outside, redraws) = split_redraws(&typed_then);
    assert!(outside.starts_with("tra"), "the echo first: {typed_then:?}");
    assert!(
        redraws.len() >= 3,
        "the progress kept moving: {typed_then:?}"
    );
    for r in &redraws {
        // Each redraw goes to the last row and back, in one piece: it
        // never writes on the typing row.
        assert!(
            r.starts_with(&status_redraw("")) && r.ends_with("\x1b8"),
            "{r:?}"
        );
        assert!(!r.contains(['\n', '\r', '\t']), "{r:?}");
    }
    // Outside the redraws, nothing goes back over the typed text: no
    // carriage return but a newline's, no erase, no cursor movement.
    assert!(!outside.contains('\x1b'), "{typed_then:?}");
    assert!(
        !outside.replace("\r\n", "\n").contains('\r'),
        "{typed_then:?}"
    );
    // Enter: the typed command is answered.
    keys.write_all(b"nsfers\n").expect("type");
    let answered = wait_until(WAIT, || {
        let out = p.out.lock().unwrap();
        let after = String::from_utf8_lossy(&out[mark..]).into_owned();
        after.contains("DIR") && after.contains("typed.bin")
    });
    assert!(answered, "`transfers` not answered: {:?}", p.text());
}

#[test]
fn an_upload_in_flight_is_listed_going_up_and_its_end_is_an_event() {
    let data = pattern(7, 8 * 1024 * 1024);
    let p = PeerBuilder::new("seeder")
        .args(&QUIET)
        .file("big.bin", &data)
        .spawn();
    let mut id = String::new();
    assert!(
        wait_until(WAIT, || {
            id = p
                .files()
                .iter()
                .find(|f| f["file_name"] == "big.bin")
                .and_then(|f| f["file_id"].as_str().map(String::from))
                .unwrap_or_default();
            !id.is_empty()
        }),
        "{}",
        log_tail(&p)
    );
    // A reader that asks and then stops reading: the reply stays in flight.
    let mut conn = TcpStream::connect(("127.0.0.1", p.p2p_port)).expect("connect");
    let ask = serde_json::json!({"type": "GET_FILE", "file_id": id});
    conn.write_all(ask.to_string().as_bytes())
        .expect("send GET_FILE");
    let mut first = [0u8; 64];
    conn.read_exact(&mut first).expect("the reply starts");
    let mut up = None;
    let listed = wait_until(WAIT, || {
        up = p.state().and_then(|s| {
            s["transfers"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["direction"] == "up").cloned())
        });
        up.is_some()
    });
    assert!(listed, "no upload listed\n{}", log_tail(&p));
    let up = up.unwrap_or_default();
    assert_eq!(up["file_name"], "big.bin", "{up}");
    assert_eq!(up["bytes_total"], data.len() as u64, "{up}");
    assert!(
        up["peer"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{up}"
    );
    drop(conn);
    let mut events = Vec::new();
    let ended = wait_until(WAIT, || {
        events = p
            .state()
            .and_then(|s| s["events"].as_array().cloned())
            .unwrap_or_default();
        events.iter().any(|e| e["kind"] == "upload_failed")
    });
    assert!(
        ended,
        "no upload_failed event: {events:?}\n{}",
        log_tail(&p)
    );
    let listed_after = p.state().is_some_and(|s| {
        s["transfers"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["direction"] == "up"))
    });
    assert!(!listed_after, "the ended upload is still listed");
}

#[test]
fn a_push_we_receive_is_listed_going_down_while_it_runs_and_its_end_is_an_event() {
    let data = pattern(8, 256 * 1024);
    let record = file_record("pushed.bin", &data, "pusher", 1_700_000_008);
    let mut p = PeerBuilder::new("receiver").args(&QUIET).spawn();
    // About 4 s: 40 pieces 100 ms apart.
    let pusher = push_slowly(
        p.p2p_port,
        file_data(&record, &data),
        40,
        Duration::from_millis(100),
    );
    let mut down = None;
    let listed = wait_until(WAIT, || {
        down = p.state().and_then(|s| {
            s["transfers"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["direction"] == "down").cloned())
        });
        down.as_ref()
            .is_some_and(|t| t["bytes_done"].as_u64().is_some_and(|b| b > 0))
    });
    assert!(listed, "no inbound push listed\n{}", log_tail(&p));
    let down = down.unwrap_or_default();
    assert_eq!(down["file_name"], "(pushed file)", "{down}");
    assert!(
        down["peer"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "named by the sender's address: {down}"
    );
    let bytes_then = down["bytes_done"].as_u64().unwrap_or_default();
    assert!(bytes_then < data.len() as u64, "{down}");

    let skip = p.line_count();
    p.send_line("transfers");
    let row = p
        .wait_line(skip, "(pushed file)", WAIT)
        .unwrap_or_else(|| panic!("not in `transfers`\n{:?}", p.lines()));
    assert!(
        row.starts_with("down") && row.contains("127.0.0.1:"),
        "{row}"
    );

    assert_eq!(pusher.join().ok(), Some(file_data(&record, &data).len()));
    let mut events = Vec::new();
    let ended = wait_until(WAIT, || {
        events = p
            .state()
            .and_then(|s| s["events"].as_array().cloned())
            .unwrap_or_default();
        events.iter().any(|e| e["kind"] == "push_in_done")
    });
    assert!(ended, "no push_in_done event: {events:?}\n{}", log_tail(&p));
    let done = events
        .iter()
        .find(|e| e["kind"] == "push_in_done")
        .and_then(|e| e["text"].as_str())
        .unwrap_or_default();
    assert!(
        done.starts_with("push of pushed.bin from 127.0.0.1:") && done.ends_with("(256.0 KiB)"),
        "{done}"
    );
    let still_listed = p.state().is_some_and(|s| {
        s["transfers"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["direction"] == "down"))
    });
    assert!(!still_listed, "the ended push is still listed");
    assert!(
        wait_until(WAIT, || p.file_named("pushed.bin").is_some()),
        "the push was not stored\n{}",
        log_tail(&p)
    );
}

#[test]
fn a_push_cut_short_is_listed_then_ends_with_a_failure_event() {
    let data = pattern(9, 64 * 1024);
    let record = file_record("cut.bin", &data, "pusher", 1_700_000_009);
    let p = PeerBuilder::new("receiver").args(&QUIET).spawn();
    let mut msg = file_data(&record, &data);
    msg.truncate(msg.len() / 2);
    let pusher = push_slowly(p.p2p_port, msg, 10, Duration::from_millis(100));
    let listed = wait_until(WAIT, || {
        p.state().is_some_and(|s| {
            s["transfers"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["direction"] == "down"))
        })
    });
    assert!(listed, "no inbound push listed\n{}", log_tail(&p));
    let _ = pusher.join();
    let mut events = Vec::new();
    let ended = wait_until(WAIT, || {
        events = p
            .state()
            .and_then(|s| s["events"].as_array().cloned())
            .unwrap_or_default();
        events.iter().any(|e| e["kind"] == "push_in_failed")
    });
    assert!(
        ended,
        "no push_in_failed event: {events:?}\n{}",
        log_tail(&p)
    );
    let text = events
        .iter()
        .find(|e| e["kind"] == "push_in_failed")
        .and_then(|e| e["text"].as_str())
        .unwrap_or_default();
    assert!(text.starts_with("push from 127.0.0.1:"), "{text}");
    assert!(p.file_named("cut.bin").is_none());
}
