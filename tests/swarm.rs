//! One file from several holders at once, with real processes on
//! 127.0.0.1: pieces come from every holder that serves ranges, a holder
//! sending corrupt pieces is found and excluded while the file still
//! verifies, a holder cutting its pieces is dropped, a Python-style holder
//! (no ranges) is not asked while ranged holders are left, real peershare
//! holders serve the pieces, and `/api/state` shows each holder's share.
mod support;

use serde_json::Value;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::files::*;
use support::*;

/// Large enough for pieces from three holders (12 pieces of 1 MiB), small
/// enough for a debug build.
const LEN: usize = 12 << 20;

/// How a fake holder answers a ranged GET_FILE.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Style {
    /// The range asked for (a peershare peer).
    Honest,
    /// The range, with one byte of it changed.
    Corrupt,
    /// Half the range, then the connection drops.
    Cuts,
    /// The whole file whatever was asked (a Python peer), no ranges in its
    /// gossip.
    Python,
}

/// A fake holder and the file bytes it sent.
struct Fake {
    holder: FakeHolder,
    sent: Arc<AtomicU64>,
}

impl Fake {
    fn get_files(&self) -> Vec<Value> {
        self.holder
            .received()
            .into_iter()
            .filter(|m| m["type"] == "GET_FILE")
            .collect()
    }
}

/// The FILE_DATA for `len` bytes of `data` from `offset`, with the range.
fn piece_reply(record: &Value, data: &[u8], offset: usize, len: usize) -> Vec<u8> {
    let end = (offset + len).min(data.len());
    let offset = offset.min(end);
    let mut head = record.clone();
    head["offset"] = offset.into();
    head["length"] = (end - offset).into();
    file_data(&head, &data[offset..end])
}

/// Writes `msg` in chunks of 64 KiB, `pause` apart (a slow link),
/// counting the file bytes written (half the hex) in `sent`.
fn write_slowly(
    mut conn: TcpStream,
    msg: &[u8],
    pause: Duration,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    for chunk in msg.chunks(64 * 1024) {
        if stop.load(Ordering::SeqCst) || conn.write_all(chunk).is_err() {
            return;
        }
        sent.fetch_add(chunk.len() as u64 / 2, Ordering::SeqCst);
        std::thread::sleep(pause);
    }
    let _ = conn.shutdown(Shutdown::Write);
}

fn fake(id: &str, record: &Value, bytes: &Arc<Vec<u8>>, style: Style, pause: Duration) -> Fake {
    let sent = Arc::new(AtomicU64::new(0));
    let (rec, data, counter) = (record.clone(), bytes.clone(), sent.clone());
    let handler = move |req: &Value, mut conn: TcpStream, stop: &AtomicBool| {
        let offset = req["offset"].as_u64().map(|o| o as usize);
        let length = req["length"].as_u64().map(|l| l as usize);
        let (offset, len) = match (style, offset) {
            (Style::Python, _) | (_, None) => (0, data.len()),
            (_, Some(o)) => (o, length.unwrap_or(data.len() - o.min(data.len()))),
        };
        let mut msg = if style == Style::Python || req.get("offset").is_none() {
            file_data(&rec, &data)
        } else {
            piece_reply(&rec, &data, offset, len)
        };
        let data_at = msg.len() - 2 * len.min(data.len()) - 2;
        match style {
            Style::Corrupt => {
                // One hex digit changed in the middle of the data: still
                // valid hex, another byte.
                let at = data_at + len;
                msg[at] = if msg[at] == b'0' { b'1' } else { b'0' };
            }
            Style::Cuts => {
                let _ = conn.write_all(&msg[..data_at + len]);
                counter.fetch_add((len / 2) as u64, Ordering::SeqCst);
                let _ = conn.shutdown(Shutdown::Both);
                return;
            }
            Style::Honest | Style::Python => {}
        }
        write_slowly(conn, &msg, pause, stop, &counter);
    };
    let holder = FakeHolder::start(
        id,
        vec![record.clone()],
        FakeStyle {
            ranges: style != Style::Python,
            ..FakeStyle::default()
        },
        handler,
    );
    Fake { holder, sent }
}

/// Has `down` learn every fake's file and `get` it; waits until it is
/// saved.
fn get_from(down: &mut PeerProc, fakes: &[&Fake], record: &Value) {
    let id = record["file_id"].as_str().unwrap().to_string();
    for f in fakes {
        f.holder.send_gossip_reply(down.p2p_port).unwrap();
    }
    let known = wait_until(WAIT, || {
        down.file_with_id(&id)
            .is_some_and(|f| f["peers_with_file"].as_array().map_or(0, Vec::len) >= fakes.len())
    });
    assert!(known, "the fakes' files were not taken\n{}", log_tail(down));
    down.send_line(&format!("get {id}"));
    let saved = wait_until(WAIT * 3, || {
        down.file_with_id(&id).is_some_and(|f| f["local"] == true)
    });
    assert!(saved, "the download never completed\n{}", log_tail(down));
}

/// The saved copy is the file, verified, and no temp file is left.
fn assert_saved(down: &PeerProc, record: &Value, bytes: &[u8]) {
    let id = record["file_id"].as_str().unwrap();
    let entry = down.file_with_id(id).unwrap();
    assert_eq!(entry["verified"], true, "{entry}");
    let name = record["file_name"].as_str().unwrap();
    assert!(std::fs::read(down.dir.join(name)).unwrap() == bytes);
    assert!(partial_files(&down.dir).is_empty(), "no temp file is left");
}

fn record_for(name: &str, bytes: &[u8]) -> Value {
    file_record(name, bytes, "owner", 1_744_169_352)
}

#[test]
fn a_file_held_by_three_ranged_holders_comes_in_pieces_from_all_of_them() {
    let bytes = Arc::new(pattern(81, LEN));
    let record = record_for("three.bin", &bytes);
    let pause = Duration::from_millis(20);
    let fakes: Vec<Fake> = ["hA", "hB", "hC"]
        .iter()
        .map(|id| fake(id, &record, &bytes, Style::Honest, pause))
        .collect();
    let mut down = PeerBuilder::new("down").args(&QUIET).spawn();
    let id = record["file_id"].as_str().unwrap().to_string();
    for f in &fakes {
        f.holder.send_gossip_reply(down.p2p_port).unwrap();
    }
    assert!(wait_until(WAIT, || down.file_with_id(&id).is_some_and(
        |f| f["peers_with_file"].as_array().map_or(0, Vec::len) == 3
    )));
    down.send_line(&format!("get {id}"));
    // While it runs, /api/state shows each holder's share.
    let mut shares: Vec<Value> = Vec::new();
    let seen = wait_until(WAIT, || {
        let state = down.state().unwrap_or(Value::Null);
        let t = &state["transfers"][0];
        match t["sources"].as_array() {
            Some(s) if s.len() == 3 => {
                shares = s.clone();
                t["peer"]
                    .as_str()
                    .is_some_and(|p| p.contains("holders at once"))
            }
            _ => false,
        }
    });
    assert!(seen, "no holder shares in /api/state\n{}", log_tail(&down));
    for s in &shares {
        assert!(s["peer"].as_str().is_some(), "{s}");
        assert!(s["state"] == "active", "{s}");
        assert!(s["bytes"].as_u64().is_some() && s["in_flight"].as_u64().is_some());
    }
    assert!(wait_until(WAIT * 3, || down
        .file_with_id(&id)
        .is_some_and(|f| f["local"] == true)));
    assert_saved(&down, &record, &bytes);
    let mut total = 0;
    for f in &fakes {
        let asked = f.get_files();
        assert!(!asked.is_empty(), "{} was asked for nothing", f.holder.id);
        for m in &asked {
            assert!(m["offset"].as_u64().is_some(), "{m}");
            assert!(m["length"].as_u64().is_some_and(|l| l > 0), "{m}");
        }
        total += f.sent.load(Ordering::SeqCst);
    }
    // The endgame may ask for the last pieces twice, no more.
    assert!(
        total <= (LEN + 4 * (1 << 20)) as u64,
        "{total} bytes sent for a {LEN} byte file"
    );
    let lines = down.lines().join("\n");
    assert!(lines.contains("from 3 holders at once"), "{lines}");
    assert!(lines.contains("from 3 holders ("), "{lines}");
}

#[test]
fn a_holder_sending_corrupt_pieces_is_excluded_and_the_file_still_verifies() {
    let bytes = Arc::new(pattern(82, LEN));
    let record = record_for("bad.bin", &bytes);
    let none = Duration::ZERO;
    let a = fake("goodA", &record, &bytes, Style::Honest, none);
    let b = fake("goodB", &record, &bytes, Style::Honest, none);
    let bad = fake("liar", &record, &bytes, Style::Corrupt, none);
    let mut down = PeerBuilder::new("down").args(&QUIET).spawn();
    get_from(&mut down, &[&a, &b, &bad], &record);
    assert_saved(&down, &record, &bytes);
    let lines = down.lines().join("\n");
    assert!(lines.contains("doesn't match its id; checking"), "{lines}");
    let excluded = lines
        .lines()
        .find(|l| l.contains("that other holders contradict"))
        .unwrap_or_else(|| panic!("no exclusion line:\n{lines}"));
    assert!(excluded.contains("liar"), "{excluded}");
    assert!(!excluded.contains("goodA") && !excluded.contains("goodB"));
    assert!(!lines.contains("UNVERIFIED"), "{lines}");
}

#[test]
fn a_holder_that_cuts_its_pieces_is_dropped_and_the_others_finish() {
    let bytes = Arc::new(pattern(83, LEN));
    let record = record_for("cut.bin", &bytes);
    let none = Duration::ZERO;
    let a = fake("fineA", &record, &bytes, Style::Honest, none);
    let b = fake("fineB", &record, &bytes, Style::Honest, none);
    let cutter = fake("cutter", &record, &bytes, Style::Cuts, none);
    let mut down = PeerBuilder::new("down").args(&QUIET).spawn();
    get_from(&mut down, &[&a, &b, &cutter], &record);
    assert_saved(&down, &record, &bytes);
    // Dropped after two failures in a row: it was asked two or three
    // times (its second request may already be in flight).
    let asked = cutter.get_files().len();
    assert!(
        (1..=3).contains(&asked),
        "the cutter was asked {asked} times"
    );
}

#[test]
fn a_python_style_holder_is_not_asked_while_ranged_holders_are_left() {
    let bytes = Arc::new(pattern(84, LEN));
    let record = record_for("mixed.bin", &bytes);
    let none = Duration::ZERO;
    let py = fake("pyHolder", &record, &bytes, Style::Python, none);
    let a = fake("rangedA", &record, &bytes, Style::Honest, none);
    let b = fake("rangedB", &record, &bytes, Style::Honest, none);
    let mut down = PeerBuilder::new("down").args(&QUIET).spawn();
    get_from(&mut down, &[&py, &a, &b], &record);
    assert_saved(&down, &record, &bytes);
    assert!(py.get_files().is_empty(), "{:?}", py.get_files());
    assert!(!a.get_files().is_empty() && !b.get_files().is_empty());
}

#[test]
fn real_peershare_holders_serve_the_pieces() {
    let bytes = pattern(85, LEN);
    let first = PeerBuilder::new("first")
        .file("real.bin", &bytes)
        .args(&QUIET)
        .spawn();
    let mut record = Value::Null;
    assert!(wait_until(WAIT, || first
        .file_named("real.bin")
        .is_some_and(|f| {
            record = f;
            true
        })));
    let id = record["file_id"].as_str().unwrap().to_string();
    // Two more holders fetch it from the first.
    let mut holders = vec![first];
    for name in ["second", "third"] {
        let mut h = PeerBuilder::new(name)
            .well_known(holders[0].p2p_port)
            .args(&QUIET)
            .spawn();
        assert!(wait_until(WAIT, || h.file_with_id(&id).is_some()));
        h.send_line(&format!("get {id}"));
        assert!(
            wait_until(WAIT * 3, || h
                .file_with_id(&id)
                .is_some_and(|f| f["local"] == true && f["verified"] == true)),
            "{}",
            log_tail(&h)
        );
        holders.push(h);
    }
    // `down` joins through all three and learns who holds the file.
    let mut builder = PeerBuilder::new("down").args(&QUIET);
    for h in &holders {
        builder = builder.well_known(h.p2p_port);
    }
    let mut down = builder.spawn();
    let known = wait_until(WAIT, || {
        down.file_with_id(&id)
            .is_some_and(|f| f["peers_with_file"].as_array().map_or(0, Vec::len) == 3)
    });
    assert!(known, "{}", log_tail(&down));
    down.send_line(&format!("get {id}"));
    assert!(
        wait_until(WAIT * 3, || down
            .file_with_id(&id)
            .is_some_and(|f| f["local"] == true)),
        "{}",
        log_tail(&down)
    );
    let entry = down.file_with_id(&id).unwrap();
    assert_eq!(entry["verified"], true);
    assert!(std::fs::read(down.dir.join("real.bin")).unwrap() == bytes);
    let lines = down.lines().join("\n");
    assert!(lines.contains("from 3 holders at once"), "{lines}");
    let served_ranges = holders
        .iter()
        .filter(|h| h.log().contains("(range)"))
        .count();
    assert!(
        served_ranges >= 2,
        "ranges served by {served_ranges} holders"
    );
}

/// A download from several holders stopped by `stop` (a clean exit or
/// kill -9) goes on at the next start from the pieces it had from the
/// file's start (the metadata's `valid`), and ends verified.
fn swarm_resumes_after(stop: impl FnOnce(&mut PeerProc), how: &str) {
    let bytes = Arc::new(pattern(86, LEN));
    let record = record_for("later.bin", &bytes);
    let id = record["file_id"].as_str().unwrap().to_string();
    let pause = Duration::from_millis(60);
    let fakes: Vec<Fake> = ["rA", "rB", "rC"]
        .iter()
        .map(|f| fake(f, &record, &bytes, Style::Honest, pause))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut down = PeerBuilder::new("down").storage(&dir).args(&QUIET).spawn();
    let learn = |down: &PeerProc| {
        for f in &fakes {
            f.holder.send_gossip_reply(down.p2p_port).unwrap();
        }
        wait_until(WAIT, || {
            down.file_with_id(&id)
                .is_some_and(|f| f["peers_with_file"].as_array().map_or(0, Vec::len) == 3)
        })
    };
    assert!(learn(&down), "{}", log_tail(&down));
    down.send_line(&format!("get {id}"));
    let some_in = wait_until(WAIT, || {
        resume_record(&dir, &id)
            .and_then(|r| r["valid"].as_u64())
            .is_some_and(|v| v >= 2 << 20)
    });
    assert!(some_in, "{how}: no pieces recorded\n{}", log_tail(&down));
    stop(&mut down);
    let left = resume_record(&dir, &id).expect("the metadata names the download");
    let valid = left["valid"].as_u64().expect("a byte count");
    assert!(
        valid >= 2 << 20 && valid < LEN as u64,
        "{how}: valid {valid}"
    );
    drop(down);
    let before: usize = fakes.iter().map(|f| f.get_files().len()).sum();

    let mut again = PeerBuilder::new("down").storage(&dir).args(&QUIET).spawn();
    assert!(learn(&again), "{}", log_tail(&again));
    let saved = wait_until(WAIT * 3, || {
        again.file_with_id(&id).is_some_and(|f| f["local"] == true)
    });
    assert!(saved, "{how}: not resumed\n{}", log_tail(&again));
    assert_saved(&again, &record, &bytes);
    // After the restart, one holder is asked for the rest, from `valid`.
    let after: Vec<Value> = fakes
        .iter()
        .flat_map(|f| f.get_files())
        .skip(before)
        .collect();
    let asked: Vec<Value> = fakes.iter().flat_map(|f| f.get_files()).collect();
    assert!(
        asked
            .iter()
            .any(|m| m["offset"].as_u64() == Some(valid) && m.get("length").is_none()),
        "{how}: nobody asked from {valid}: {after:?}"
    );
    let lines = again.lines().join("\n");
    assert!(lines.contains("resuming later.bin"), "{how}: {lines}");
    again.send_line("exit");
}

#[test]
fn a_download_from_several_holders_resumes_after_a_clean_exit() {
    swarm_resumes_after(
        |down| {
            down.signal(libc::SIGTERM);
            assert!(down.wait_exit(WAIT).is_some(), "no exit on SIGTERM");
        },
        "SIGTERM",
    );
}

#[test]
fn a_download_from_several_holders_resumes_after_a_kill_9() {
    swarm_resumes_after(PeerProc::kill, "kill -9");
}

#[test]
fn a_holder_serving_many_pieces_at_once_stays_fair_and_its_memory_flat() {
    use std::io::Read;
    const PIECE: usize = 4 << 20;
    const CLIENTS: usize = 12;
    let bytes = pattern(87, CLIENTS * PIECE);
    let holder = PeerBuilder::new("holder")
        .file("served.bin", &bytes)
        .args(&QUIET)
        .spawn();
    let mut record = Value::Null;
    assert!(wait_until(WAIT, || holder
        .file_named("served.bin")
        .is_some_and(|f| {
            record = f;
            true
        })));
    let id = record["file_id"].as_str().unwrap().to_string();
    let rss = support::procfs::RssSampler::start(holder.pid(), Duration::from_millis(20));
    let base = rss.now_kib();
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..CLIENTS).map(|_| AtomicU64::new(0)).collect());
    let readers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (id, progress) = (id.clone(), progress.clone());
            let port = holder.p2p_port;
            std::thread::spawn(move || -> Result<Vec<u8>, String> {
                let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(20))).ok();
                let ask = serde_json::json!({"type": "GET_FILE", "file_id": id,
                    "offset": i * PIECE, "length": PIECE});
                s.write_all(ask.to_string().as_bytes())
                    .map_err(|e| e.to_string())?;
                let mut reply = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    // A slow reader: every piece is in flight at once.
                    match s.read(&mut buf) {
                        Ok(0) => return Ok(reply),
                        Ok(n) => {
                            reply.extend_from_slice(&buf[..n]);
                            progress[i].fetch_add(n as u64, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            })
        })
        .collect();
    // When the first piece is done, every other has moved a good part.
    let whole = (2 * PIECE) as u64;
    assert!(wait_until(WAIT, || progress
        .iter()
        .any(|p| p.load(Ordering::SeqCst) >= whole)));
    let at_first: Vec<u64> = progress.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    for (i, r) in readers.into_iter().enumerate() {
        let reply = r.join().expect("reader").expect("a reply");
        let text = String::from_utf8_lossy(&reply);
        let start = text.find("\"data\":\"").expect("data") + 8;
        let hex = &reply[start..start + 2 * PIECE];
        let got = faster_hex::hex_string(&bytes[i * PIECE..(i + 1) * PIECE]);
        assert!(hex == got.as_bytes(), "piece {i} is not the file's bytes");
    }
    let peak = rss.stop();
    eprintln!(
        "progress when the first piece ended: {at_first:?}; holder RssAnon {base} -> {peak} KiB"
    );
    assert!(
        at_first.iter().all(|&n| n >= whole / 4),
        "a piece waited for the others: {at_first:?}"
    );
    assert!(
        peak < base + 16 * 1024,
        "holder RssAnon {base} -> {peak} KiB"
    );
}
