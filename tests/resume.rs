//! Resuming a cut download, with real processes on 127.0.0.1: the next
//! holder that serves ranges is asked only for the bytes after the cut
//! (so next to nothing is sent twice), a holder that ignores the range and
//! sends the whole file still completes it, a Python-style holder is asked
//! for the whole file as always, and a real peershare holder serves the
//! rest after a fake holder cut the transfer.
mod support;

use serde_json::Value;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::files::*;
use support::*;

/// The file these tests move: large enough that the cut falls well inside
/// the data, small enough to be quick in a debug build.
const LEN: usize = 4 << 20;

/// What the fake holders of one test did, together.
#[derive(Default)]
struct Served {
    /// GET_FILEs answered so far, across the fakes.
    requests: AtomicUsize,
    /// File bytes the fakes sent (as data, decoded).
    bytes: AtomicU64,
}

/// How a fake holder answers a GET_FILE after the first one (which is
/// always cut half-way through its data).
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// The range asked for, with the range fields (a peershare peer).
    Range,
    /// The whole file whatever was asked (a peer that ignores ranges).
    Whole,
}

/// A GET_FILE handler: the first request across the fakes sharing
/// `served` is cut after half the file; later ones get `answer`.
fn handler(
    record: Value,
    bytes: Arc<Vec<u8>>,
    served: Arc<Served>,
    answer: Answer,
) -> impl Fn(&Value, TcpStream, &AtomicBool) + Send + Sync + 'static {
    move |req, mut conn, stop| {
        let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
        let offset = req["offset"].as_u64().unwrap_or(0) as usize;
        if served.requests.fetch_add(1, Ordering::SeqCst) == 0 {
            // Cut: the header and half the data's hex, then the connection
            // drops. Flush what was sent before closing.
            let msg = file_data(&record, &bytes);
            let data_at = msg.len() - 2 * bytes.len() - 2;
            let half = data_at + bytes.len();
            if conn.write_all(&msg[..half]).is_ok() {
                served
                    .bytes
                    .fetch_add((bytes.len() / 2) as u64, Ordering::SeqCst);
            }
            let _ = conn.shutdown(Shutdown::Both);
            return;
        }
        let (msg, sent) = match answer {
            Answer::Range if offset > 0 => (
                ranged_file_data(&record, &bytes, offset),
                bytes.len().saturating_sub(offset),
            ),
            _ => (file_data(&record, &bytes), bytes.len()),
        };
        served.bytes.fetch_add(sent as u64, Ordering::SeqCst);
        if !stop.load(Ordering::SeqCst) {
            reply_and_close(conn, &msg);
        }
    }
}

/// A fake holder of `record` answering as [`handler`] does.
fn fake(
    id: &str,
    record: &Value,
    bytes: &Arc<Vec<u8>>,
    served: &Arc<Served>,
    ranges: bool,
    answer: Answer,
) -> FakeHolder {
    FakeHolder::start(
        id,
        vec![record.clone()],
        FakeStyle {
            ranges,
            ..FakeStyle::default()
        },
        handler(record.clone(), bytes.clone(), served.clone(), answer),
    )
}

/// Has `down` learn the fakes' files (their GOSSIP_REPLYs), `get` the file
/// and wait for it to be saved; returns the GET_FILEs the fakes received
/// in order, and the peer's output.
fn get_through(down: &mut PeerProc, fakes: &[&FakeHolder], record: &Value) -> Vec<Value> {
    let id = record["file_id"].as_str().unwrap().to_string();
    for f in fakes {
        f.send_gossip_reply(down.p2p_port).unwrap();
    }
    let known = wait_until(WAIT, || {
        down.file_with_id(&id)
            .is_some_and(|f| f["peers_with_file"].as_array().map_or(0, Vec::len) >= fakes.len())
    });
    assert!(known, "the fakes' files were not taken\n{}", log_tail(down));
    down.send_line(&format!("get {id}"));
    let saved = wait_until(WAIT, || {
        down.file_with_id(&id).is_some_and(|f| f["local"] == true)
    });
    assert!(saved, "the download never completed\n{}", log_tail(down));
    let mut asked: Vec<Value> = fakes
        .iter()
        .flat_map(|f| f.received())
        .filter(|m| m["type"] == "GET_FILE")
        .collect();
    asked.sort_by_key(|m| m.get("offset").and_then(Value::as_u64).unwrap_or(0));
    asked
}

/// The saved copy is the file, verified.
fn assert_saved(down: &PeerProc, record: &Value, bytes: &[u8]) {
    let id = record["file_id"].as_str().unwrap();
    let entry = down.file_with_id(id).unwrap();
    assert_eq!(entry["verified"], true, "{entry}");
    let name = record["file_name"].as_str().unwrap();
    assert!(std::fs::read(down.dir.join(name)).unwrap() == bytes);
    assert!(partial_files(&down.dir).is_empty(), "no temp file is left");
}

#[test]
fn a_cut_transfer_resumes_at_the_next_ranged_holder_and_resends_under_one_percent() {
    let bytes = Arc::new(pattern(71, LEN));
    let record = file_record("cut.bin", &bytes, "owner", 1_744_169_352);
    let served = Arc::new(Served::default());
    let a = fake("rangeA", &record, &bytes, &served, true, Answer::Range);
    let b = fake("rangeB", &record, &bytes, &served, true, Answer::Range);
    let mut down = PeerBuilder::new("down").spawn();
    let asked = get_through(&mut down, &[&a, &b], &record);
    assert_saved(&down, &record, &bytes);
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked[0].get("offset").is_none(),
        "the first asks for it all"
    );
    let offset = asked[1]["offset"]
        .as_u64()
        .expect("the second asks a range");
    assert!(
        offset >= (LEN / 2 - LEN / 100) as u64 && offset <= (LEN / 2) as u64,
        "resumed at {offset}, the cut was at {}",
        LEN / 2
    );
    let sent = served.bytes.load(Ordering::SeqCst);
    let again = sent - LEN as u64;
    assert!(
        again * 100 < LEN as u64,
        "{again} bytes sent twice of {LEN}"
    );
    let lines = down.lines().join("\n");
    assert!(lines.contains("closed mid-transfer at"), "{lines}");
    assert!(lines.contains("resuming cut.bin"), "{lines}");
    eprintln!(
        "cut at {} B, resumed at {offset} B: {again} B sent twice",
        LEN / 2
    );
}

#[test]
fn a_holder_that_answers_a_range_with_the_whole_file_still_completes_it() {
    let bytes = Arc::new(pattern(72, LEN));
    let record = file_record("whole.bin", &bytes, "owner", 1_744_169_352);
    let served = Arc::new(Served::default());
    let a = fake("wholeA", &record, &bytes, &served, true, Answer::Whole);
    let b = fake("wholeB", &record, &bytes, &served, true, Answer::Whole);
    let mut down = PeerBuilder::new("down").spawn();
    let asked = get_through(&mut down, &[&a, &b], &record);
    assert_saved(&down, &record, &bytes);
    assert!(asked.iter().any(|m| m.get("offset").is_some()), "{asked:?}");
}

#[test]
fn after_a_cut_a_python_style_holder_is_asked_for_the_whole_file() {
    let bytes = Arc::new(pattern(73, LEN));
    let record = file_record("py.bin", &bytes, "owner", 1_744_169_352);
    let served = Arc::new(Served::default());
    let a = fake("rangeC", &record, &bytes, &served, true, Answer::Range);
    let py = fake("pyC", &record, &bytes, &served, false, Answer::Whole);
    let mut down = PeerBuilder::new("down").spawn();
    let id = record["file_id"].as_str().unwrap().to_string();
    // The Python holder is learnt first, so the ranged one (seen last) is
    // tried first and cut; the Python one is left.
    py.send_gossip_reply(down.p2p_port).unwrap();
    assert!(wait_until(WAIT, || down.file_with_id(&id).is_some()));
    let asked = get_through(&mut down, &[&a], &record);
    let _ = asked;
    assert_saved(&down, &record, &bytes);
    let to_py: Vec<Value> = py
        .received()
        .into_iter()
        .filter(|m| m["type"] == "GET_FILE")
        .collect();
    assert_eq!(to_py.len(), 1, "{to_py:?}");
    assert!(to_py[0].get("offset").is_none(), "never a range to it");
}

#[test]
fn a_real_peershare_holder_sends_the_rest_after_a_fake_holder_cut_the_transfer() {
    let bytes = Arc::new(pattern(74, LEN));
    let holder = PeerBuilder::new("holder")
        .file("real.bin", &bytes)
        .args(&QUIET)
        .spawn();
    let mut record = Value::Null;
    let listed = wait_until(WAIT, || {
        holder.file_named("real.bin").is_some_and(|f| {
            record = f;
            true
        })
    });
    assert!(listed, "{}", log_tail(&holder));
    // The fake holds the same file (same id and timestamp) and cuts it.
    let record: Value = serde_json::json!({
        "file_name": "real.bin",
        "file_size": LEN,
        "file_id": record["file_id"],
        "file_owner": record["file_owner"],
        "file_timestamp": record["file_timestamp"],
    });
    let served = Arc::new(Served::default());
    let cutter = fake("cutter", &record, &bytes, &served, true, Answer::Range);
    let mut down = PeerBuilder::new("down")
        .well_known(holder.p2p_port)
        .args(&QUIET)
        .spawn();
    let id = record["file_id"].as_str().unwrap().to_string();
    assert!(
        wait_until(WAIT, || down.file_with_id(&id).is_some()),
        "{}",
        log_tail(&down)
    );
    // Seen last, the fake is tried first.
    let asked = get_through(&mut down, &[&cutter], &record);
    assert_eq!(asked.len(), 1, "the fake is asked once: {asked:?}");
    assert_saved(&down, &record, &bytes);
    let lines = down.lines().join("\n");
    let resumed = lines
        .lines()
        .find(|l| l.contains("resuming real.bin"))
        .unwrap_or_else(|| panic!("no resume line:\n{lines}"));
    assert!(resumed.contains("from holder"), "{resumed}");
    // The holder sent only the rest: its counter of file bytes sent.
    let metrics = http_get(holder.http_port, "/metrics").expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    let sent: f64 = metrics
        .lines()
        .find(|l| l.starts_with(r#"peershare_file_data_bytes_total{direction="up"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no file bytes counter:\n{metrics}"));
    assert!(
        sent <= (LEN / 2 + LEN / 100) as f64,
        "the holder sent {sent} B of a {LEN} B file cut at half"
    );
    // The downloader counts what it did not ask for again.
    let metrics = http_get(down.http_port, "/metrics").expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    let resumed: f64 = metrics
        .lines()
        .find(|l| l.starts_with("peershare_resumed_bytes_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no resumed bytes counter:\n{metrics}"));
    assert!(
        resumed >= (LEN / 2 - LEN / 100) as f64 && resumed <= (LEN / 2) as f64,
        "{resumed} B counted as resumed"
    );
}

/// A holder that sends the first request half the file and then stalls
/// (the connection open, silent), and answers later requests' ranges.
fn stalling_holder(id: &str, record: &Value, bytes: &Arc<Vec<u8>>) -> FakeHolder {
    let (record, bytes) = (record.clone(), bytes.clone());
    let first = AtomicBool::new(true);
    FakeHolder::start(
        id,
        vec![record.clone()],
        FakeStyle {
            ranges: true,
            ..FakeStyle::default()
        },
        move |req, mut conn, stop| {
            let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
            if first.swap(false, Ordering::SeqCst) {
                let msg = file_data(&record, &bytes);
                let half = msg.len() - 2 * bytes.len() - 2 + bytes.len();
                if conn.write_all(&msg[..half]).is_ok() {
                    hold_silent(conn, stop, Duration::from_secs(60));
                }
                return;
            }
            let offset = req["offset"].as_u64().unwrap_or(0) as usize;
            let msg = if offset > 0 {
                ranged_file_data(&record, &bytes, offset)
            } else {
                file_data(&record, &bytes)
            };
            reply_and_close(conn, &msg);
        },
    )
}

/// A download stopped half-way by `stop` (a clean exit or kill -9) goes on
/// at the next start from the bytes it kept: the temp file named in the
/// metadata is the only one left, and the holder is asked only for the
/// rest.
fn resumes_after(stop: impl FnOnce(&mut PeerProc), how: &str) {
    let bytes = Arc::new(pattern(75, LEN));
    let record = file_record("later.bin", &bytes, "owner", 1_744_169_352);
    let id = record["file_id"].as_str().unwrap().to_string();
    let holder = stalling_holder("staller", &record, &bytes);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let mut down = PeerBuilder::new("down")
        .storage(&dir)
        .well_known(holder.port)
        .spawn();
    assert!(
        wait_until(WAIT, || down.file_with_id(&id).is_some()),
        "{}",
        log_tail(&down)
    );
    // A temp file from some other, earlier run: removed at the next start.
    std::fs::write(dir.join(".partial-0123456789abcdef"), b"stale").unwrap();
    down.send_line(&format!("get {id}"));
    let half_way = wait_until(WAIT, || {
        bytes_done(&down, &id) >= (LEN / 4) as u64 && resume_record(&dir, &id).is_some()
    });
    assert!(
        half_way,
        "{how}: the download never got going\n{}",
        log_tail(&down)
    );
    stop(&mut down);
    let record_left = resume_record(&dir, &id).expect("the metadata names the download");
    let partial = record_left["partial"].as_str().unwrap().to_string();
    let kept = std::fs::metadata(dir.join(&partial))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(kept > 0, "{how}: its temp file {partial} is gone or empty");
    drop(down);

    let mut again = PeerBuilder::new("down")
        .storage(&dir)
        .well_known(holder.port)
        .spawn();
    let saved = wait_until(WAIT, || {
        again.file_with_id(&id).is_some_and(|f| f["local"] == true)
    });
    assert!(saved, "{how}: not resumed\n{}", log_tail(&again));
    assert_saved(&again, &record, &bytes);
    let asked: Vec<u64> = holder
        .received()
        .iter()
        .filter(|m| m["type"] == "GET_FILE")
        .map(|m| m["offset"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(asked.len(), 2, "{how}: {asked:?}");
    assert_eq!(
        asked[1], kept,
        "{how}: asked from {} with {kept} B kept",
        asked[1]
    );
    let lines = again.lines().join("\n");
    assert!(lines.contains("resuming later.bin"), "{how}: {lines}");
    again.send_line("exit");
    eprintln!("{how}: {kept} B kept, the rest fetched after the restart");
}

#[test]
fn a_download_in_flight_at_a_clean_exit_resumes_at_the_next_start() {
    resumes_after(
        |down| {
            down.signal(libc::SIGTERM);
            assert!(down.wait_exit(WAIT).is_some(), "no exit on SIGTERM");
        },
        "SIGTERM",
    );
}

#[test]
fn a_download_in_flight_at_a_kill_9_resumes_at_the_next_start() {
    resumes_after(PeerProc::kill, "kill -9");
}

/// A storage folder holding `name` = `bytes` with a fixed mtime, so two
/// holders started from two such folders hold the same file id.
fn folder_with(tmp: &std::path::Path, sub: &str, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = tmp.join(sub);
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::File::create(dir.join(name)).unwrap();
    (&f).write_all(bytes).unwrap();
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_744_169_352);
    f.set_modified(when).unwrap();
    dir
}

#[test]
fn a_source_killed_mid_transfer_is_continued_by_another_real_holder() {
    use support::chaos::{ChaosProxy, Mode};
    let bytes = Arc::new(pattern(76, LEN));
    let tmp = tempfile::tempdir().unwrap();
    // The first holder listens privately and advertises a proxy capped at
    // 2 MB/s, so the transfer is still running when it is killed.
    let private = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let private_port = private.local_addr().unwrap().port();
    drop(private);
    let proxy = ChaosProxy::start(private_port, Mode::Bandwidth(2_000_000));
    let mut slow = PeerBuilder::new("slow")
        .storage(&folder_with(tmp.path(), "slow", "shared.bin", &bytes))
        .p2p_port(proxy.port)
        .args(&["--bind", &format!("127.0.0.1:{private_port}")])
        .spawn();
    let mut down = PeerBuilder::new("down").well_known(proxy.port).spawn();
    let id = wait_for_file(&down, "shared.bin");
    down.send_line(&format!("get {id}"));
    assert!(
        wait_until(WAIT, || bytes_done(&down, &id) >= (LEN / 4) as u64),
        "{}",
        log_tail(&down)
    );
    // A second holder of the same file joins, then the first dies.
    let fast = PeerBuilder::new("fast")
        .storage(&folder_with(tmp.path(), "fast", "shared.bin", &bytes))
        .well_known(down.p2p_port)
        .spawn();
    let known = wait_until(WAIT, || {
        down.file_with_id(&id).is_some_and(|f| {
            f["peers_with_file"]
                .as_array()
                .is_some_and(|h| h.iter().any(|p| p == "fast"))
        })
    });
    assert!(
        known,
        "the second holder's file is not known\n{}",
        log_tail(&down)
    );
    let at_kill = bytes_done(&down, &id);
    slow.kill();
    let saved = wait_until(WAIT, || {
        down.file_with_id(&id).is_some_and(|f| f["local"] == true)
    });
    assert!(saved, "not completed after the kill\n{}", log_tail(&down));
    let entry = down.file_with_id(&id).unwrap();
    assert_eq!(entry["verified"], true);
    assert!(std::fs::read(down.dir.join("shared.bin")).unwrap() == *bytes);
    let lines = down.lines().join("\n");
    assert!(lines.contains("resuming shared.bin"), "{lines}");
    // The second holder sent only what the first had not.
    let metrics = http_get(fast.http_port, "/metrics").expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    let sent: u64 = metrics
        .lines()
        .find(|l| l.starts_with(r#"peershare_file_data_bytes_total{direction="up"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(u64::MAX);
    assert!(
        sent <= LEN as u64 - at_kill,
        "the second holder sent {sent} B; {at_kill} B had arrived before the kill"
    );
}

/// Waits until `down` knows a file named `name`; its id.
fn wait_for_file(down: &PeerProc, name: &str) -> String {
    let mut id = String::new();
    let known = wait_until(WAIT, || {
        down.file_named(name).is_some_and(|f| {
            id = f["file_id"].as_str().unwrap_or_default().to_string();
            true
        })
    });
    assert!(known, "{name} is not known\n{}", log_tail(down));
    id
}
