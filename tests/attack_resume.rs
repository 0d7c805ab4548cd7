//! Hostile tests of resuming a cut download (issue 14, "Resume"), with real
//! processes on 127.0.0.1: holders that answer a resumed request with the
//! wrong range, lying fields, too many or wrong bytes; a local user who
//! tampers with the metadata's `resume` record or the temp file it names;
//! kill -9 of the downloader twice at random moments; and the owner's
//! DELETE (or the user's `delete`) of a file whose resumed download waits
//! or runs. Whatever comes, the peer must never store bytes that don't
//! verify as verified, never touch a file outside its temp files, and
//! leave no temp file behind. The tests marked `BUG` fail today; each says
//! where the cause lies.
mod support;

use serde_json::{json, Value};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::files::*;
use support::*;

/// The file these tests move: a cut at half falls well inside the data
/// (past the writer's first direct-I/O block), and a transfer takes
/// milliseconds.
const LEN: usize = 2 << 20;

/// The fixed timestamp of every file here.
const TS: u64 = 1_744_169_352;

/// What a hostile holder sends for a resumed request, built from the file's
/// record, its bytes and the offset the request asked from.
type HostileReply = fn(&Value, &[u8], u64) -> Vec<u8>;

/// How the fake holders of one test answer the n-th GET_FILE they receive
/// between them (the last one repeats), so the script does not depend on
/// which holder the downloader tries first.
#[derive(Clone, Copy)]
enum Turn {
    /// The whole-file form, cut after half its data (the connection drops).
    CutHalf,
    /// The same, with every byte of the half sent flipped: a holder that
    /// sends bad bytes, then vanishes.
    CorruptCutHalf,
    /// What the hostile reply builds.
    Hostile(HostileReply),
    /// An honest peershare holder: the range asked for, or the whole file.
    Honest,
    /// The same, at about this many data bytes a second.
    HonestSlowly(usize),
}

/// The GET_FILEs the fakes of one test answered, in order, and the script.
struct Script {
    turns: Vec<Turn>,
    /// The holder and the `offset` (`None`: none, or not a number) of each
    /// request answered, in the order they came.
    asked: Mutex<Vec<(String, Option<u64>)>>,
}

impl Script {
    fn new(turns: Vec<Turn>) -> Arc<Script> {
        Arc::new(Script {
            turns,
            asked: Mutex::new(Vec::new()),
        })
    }

    /// The offsets asked so far, in order.
    fn asked(&self) -> Vec<Option<u64>> {
        self.asked.lock().unwrap().iter().map(|a| a.1).collect()
    }

    /// The holders asked so far, in order.
    fn holders_asked(&self) -> Vec<String> {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.0.clone())
            .collect()
    }

    /// Answers one GET_FILE `req` to holder `who` on `conn` by the script.
    fn answer(
        &self,
        who: &str,
        (record, bytes): (&Value, &[u8]),
        req: &Value,
        conn: TcpStream,
        stop: &AtomicBool,
    ) {
        let offset = req.get("offset").and_then(Value::as_u64);
        let turn = {
            let mut asked = self.asked.lock().unwrap();
            asked.push((who.to_string(), offset));
            self.turns[(asked.len() - 1).min(self.turns.len() - 1)]
        };
        let from = offset.unwrap_or(0);
        match turn {
            Turn::CutHalf => send_half_then_cut(conn, &file_data(record, bytes), bytes.len()),
            Turn::CorruptCutHalf => {
                let bad: Vec<u8> = bytes.iter().map(|b| !b).collect();
                send_half_then_cut(conn, &file_data(record, &bad), bytes.len());
            }
            Turn::Hostile(build) => reply_and_close(conn, &build(record, bytes, from)),
            Turn::Honest => reply_and_close(conn, &honest_reply(record, bytes, from)),
            Turn::HonestSlowly(rate) => {
                send_slowly(conn, &honest_reply(record, bytes, from), rate, stop)
            }
        }
    }
}

/// An honest answer to a request from `from`: the rest as a range, or the
/// whole file.
fn honest_reply(record: &Value, bytes: &[u8], from: u64) -> Vec<u8> {
    if from > 0 {
        ranged_file_data(record, bytes, from as usize)
    } else {
        file_data(record, bytes)
    }
}

/// Writes `msg` (a whole-file FILE_DATA of `len` data bytes) up to half its
/// data, then drops the connection.
fn send_half_then_cut(mut conn: TcpStream, msg: &[u8], len: usize) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    // The data's hex ends two bytes (`"}`) before the message does.
    let data_at = msg.len() - 2 * len - 2;
    let _ = conn.write_all(&msg[..data_at + len]);
    let _ = conn.shutdown(Shutdown::Both);
}

/// Writes `msg` at about `rate` data bytes a second (hex: twice as many
/// message bytes), until done, a write fails (the reader died) or the fake
/// stops.
fn send_slowly(mut conn: TcpStream, msg: &[u8], rate: usize, stop: &AtomicBool) {
    const TICK: Duration = Duration::from_millis(20);
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let per_tick = (2 * rate / 50).max(1);
    for chunk in msg.chunks(per_tick) {
        if stop.load(Ordering::SeqCst) || conn.write_all(chunk).is_err() {
            return;
        }
        std::thread::sleep(TICK);
    }
    let _ = conn.shutdown(Shutdown::Write);
    let _ = hold_silent(conn, stop, Duration::from_secs(5));
}

/// A fake peershare holder (`"ranges": 1`) of `record` that answers by the
/// shared `script`.
fn holder(id: &str, record: &Value, bytes: &Arc<Vec<u8>>, script: &Arc<Script>) -> FakeHolder {
    let (rec, data, script) = (record.clone(), bytes.clone(), script.clone());
    let who = id.to_string();
    FakeHolder::start(
        id,
        vec![record.clone()],
        FakeStyle {
            ranges: true,
            ..FakeStyle::default()
        },
        move |req, conn, stop| script.answer(&who, (&rec, &data), req, conn, stop),
    )
}

/// The id of a file record.
fn id_of(record: &Value) -> String {
    record["file_id"].as_str().unwrap_or_default().to_string()
}

/// Has `down` learn `fakes` as holders (their GOSSIP_REPLYs) of `record`.
fn learn(down: &PeerProc, fakes: &[&FakeHolder], record: &Value) {
    let id = id_of(record);
    for f in fakes {
        f.send_gossip_reply(down.p2p_port).unwrap();
    }
    let known = wait_until(WAIT, || {
        down.file_with_id(&id)
            .is_some_and(|f| f["peers_with_file"].as_array().map_or(0, Vec::len) >= fakes.len())
    });
    assert!(known, "the fakes' file was not taken\n{}", log_tail(down));
}

/// Waits until the download of `record` ended: stored (the catalog entry,
/// `local`), or failed for want of sources (None).
fn wait_ended(down: &PeerProc, record: &Value) -> Option<Value> {
    let id = id_of(record);
    let failed = format!(
        "no source left for {}",
        record["file_name"].as_str().unwrap_or("")
    );
    let mut entry = None;
    let ended = wait_until(WAIT, || {
        entry = down.file_with_id(&id).filter(|f| f["local"] == true);
        entry.is_some() || down.lines().iter().any(|l| l.contains(&failed))
    });
    assert!(ended, "the download never ended\n{}", log_tail(down));
    entry
}

/// The download of `record` ended stored, verified, with exactly its bytes
/// under its name, and no temp file or other data file left in the folder.
fn assert_stored_verified(down: &PeerProc, record: &Value, bytes: &[u8]) {
    let Some(entry) = wait_ended(down, record) else {
        panic!("the download failed\n{}", log_tail(down));
    };
    assert_eq!(
        entry["verified"],
        true,
        "stored, but not verified: {entry}\n{}",
        log_tail(down)
    );
    let name = record["file_name"].as_str().unwrap();
    let stored = std::fs::read(down.dir.join(name)).unwrap_or_default();
    assert!(stored == bytes, "the stored {name} is not the file");
    assert_no_temp_file_left(&down.dir);
}

/// No temp file is left in `dir` for good (the metadata writer's own temp
/// file lives a moment while it writes, so this waits, bounded).
fn assert_no_temp_file_left(dir: &Path) {
    let none = wait_until(WAIT, || partial_files(dir).is_empty());
    assert!(none, "temp files left: {:?}", partial_files(dir));
}

/// The script every hostile-answer test runs: the first holder is cut
/// half-way, the second answers the resumed request with `hostile`, the
/// third is honest. The download must end verified (from the honest one),
/// with the hostile reply's refusal said on the menu.
fn a_hostile_answer_to_the_resumed_request_is_survived(
    what: &str,
    hostile: HostileReply,
) -> Vec<Option<u64>> {
    let bytes = Arc::new(pattern(what.len() as u64 * 31, LEN));
    let record = file_record(&format!("{what}.bin"), &bytes, "owner", TS);
    let script = Script::new(vec![Turn::CutHalf, Turn::Hostile(hostile), Turn::Honest]);
    let fakes = [
        holder("holderA", &record, &bytes, &script),
        holder("holderB", &record, &bytes, &script),
        holder("holderC", &record, &bytes, &script),
    ];
    let mut down = PeerBuilder::new("down").args(&QUIET).spawn();
    learn(&down, &fakes.iter().collect::<Vec<_>>(), &record);
    down.send_line(&format!("get {}", id_of(&record)));
    assert_stored_verified(&down, &record, &bytes);
    let asked = script.asked();
    assert!(
        asked.len() >= 2 && asked[1].is_some_and(|o| o > 0),
        "{what}: the second holder was not asked for the rest: {asked:?}"
    );
    let kept = asked[1].unwrap_or(0);
    // The menu names the holder whose answer was refused, and tries on.
    let hostile_holder = &script.holders_asked()[1];
    let lines = down.lines().join("\n");
    assert!(
        lines.lines().any(|l| l.starts_with("get: ")
            && l.contains(&format!("{hostile_holder} "))
            && (l.contains("trying") || l.contains("asking"))),
        "{what}: no refusal of {hostile_holder} on the menu\n{lines}"
    );
    assert_eq!(
        data_files(&down.dir),
        vec![format!("{what}.bin")],
        "{what}: only the file is stored"
    );
    eprintln!("{what}: asked {asked:?} ({kept} B kept at the cut)");
    asked
}

/// `record` with `fields` added (or replaced) and the hex of `data` last.
fn reply_with(record: &Value, fields: Value, data: &[u8]) -> Vec<u8> {
    let mut head = record.clone();
    if let (Some(h), Some(f)) = (head.as_object_mut(), fields.as_object()) {
        for (k, v) in f {
            h.insert(k.clone(), v.clone());
        }
    }
    file_data(&head, data)
}

#[test]
fn a_range_that_starts_before_the_offset_asked_is_refused() {
    // Overlapping bytes, true to their own offset: accepted, they would be
    // written twice.
    a_hostile_answer_to_the_resumed_request_is_survived("early", |rec, bytes, from| {
        let at = from.saturating_sub(4096) as usize;
        ranged_file_data(rec, bytes, at)
    });
}

#[test]
fn a_not_found_answer_to_the_resumed_request_keeps_the_bytes_for_the_next_holder() {
    let asked =
        a_hostile_answer_to_the_resumed_request_is_survived("notfound", |_, _, _| file_not_found());
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert_eq!(
        asked[2], asked[1],
        "the next holder continues the same bytes"
    );
}

#[test]
fn a_whole_file_answer_shorter_than_the_bytes_kept_keeps_them_for_the_next_holder() {
    // No range fields (a whole-file answer), and fewer bytes than we hold:
    // nothing to add, and nothing of ours may be lost.
    let asked =
        a_hostile_answer_to_the_resumed_request_is_survived("shortwhole", |rec, bytes, _| {
            file_data(rec, &bytes[..4096])
        });
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert_eq!(
        asked[2], asked[1],
        "the next holder continues the same bytes"
    );
}

#[test]
fn range_fields_sent_after_the_data_are_refused() {
    // The data streams before `offset` is read: taken for a whole-file
    // answer, its first bytes would be skipped as ours.
    a_hostile_answer_to_the_resumed_request_is_survived("fieldslast", |rec, bytes, from| {
        let rest = &bytes[from as usize..];
        let mut msg = file_data(rec, rest);
        msg.truncate(msg.len() - 1); // the closing brace
        msg.extend_from_slice(format!(",\"offset\":{from},\"length\":{}}}", rest.len()).as_bytes());
        msg
    });
}

#[test]
fn a_range_past_the_end_of_the_file_is_refused() {
    a_hostile_answer_to_the_resumed_request_is_survived("pastend", |rec, bytes, _| {
        reply_with(rec, json!({"offset": bytes.len() + 10, "length": 0}), b"")
    });
}

#[test]
fn an_offset_given_as_a_string_is_refused() {
    a_hostile_answer_to_the_resumed_request_is_survived("stringoffset", |rec, bytes, from| {
        let rest = &bytes[from as usize..];
        reply_with(
            rec,
            json!({"offset": from.to_string(), "length": rest.len()}),
            rest,
        )
    });
}

#[test]
fn a_negative_offset_is_refused() {
    a_hostile_answer_to_the_resumed_request_is_survived("negative", |rec, bytes, from| {
        let rest = &bytes[from as usize..];
        reply_with(rec, json!({"offset": -1, "length": rest.len()}), rest)
    });
}

#[test]
fn a_float_offset_is_refused() {
    a_hostile_answer_to_the_resumed_request_is_survived("floatoffset", |rec, bytes, from| {
        let rest = &bytes[from as usize..];
        reply_with(
            rec,
            json!({"offset": from as f64 + 0.5, "length": rest.len()}),
            rest,
        )
    });
}

#[test]
fn a_range_whose_length_lies_about_short_data_is_refused() {
    // `length` claims the rest; only half of it comes.
    a_hostile_answer_to_the_resumed_request_is_survived("shortdata", |rec, bytes, from| {
        let rest = &bytes[from as usize..];
        let half = &rest[..rest.len() / 2];
        reply_with(rec, json!({"offset": from, "length": rest.len()}), half)
    });
}

#[test]
fn a_range_with_more_bytes_than_the_file_has_left_is_refused() {
    a_hostile_answer_to_the_resumed_request_is_survived("toolong", |rec, bytes, from| {
        let mut data = bytes[from as usize..].to_vec();
        data.extend_from_slice(&pattern(9, 64 * 1024));
        reply_with(rec, json!({"offset": from, "length": data.len()}), &data)
    });
}

#[test]
fn a_range_whose_bytes_do_not_match_is_never_stored_as_verified() {
    a_hostile_answer_to_the_resumed_request_is_survived("corruptrest", |rec, bytes, from| {
        let bad: Vec<u8> = bytes[from as usize..].iter().map(|b| b ^ 0x5a).collect();
        reply_with(rec, json!({"offset": from, "length": bad.len()}), &bad)
    });
}

#[test]
fn a_range_with_more_bytes_than_the_whole_file_is_survived() {
    // More data than the file has at all: the decoder stops it at the
    // advertised size, after the prefix.
    a_hostile_answer_to_the_resumed_request_is_survived("waytoolong", |rec, bytes, from| {
        let mut data = bytes[from as usize..].to_vec();
        data.extend_from_slice(&pattern(10, bytes.len()));
        reply_with(rec, json!({"offset": from, "length": data.len()}), &data)
    });
}

#[test]
fn bad_bytes_before_a_cut_do_not_stop_an_honest_holder_from_completing_the_file() {
    let bytes = Arc::new(pattern(81, LEN));
    let record = file_record("poisoned.bin", &bytes, "owner", TS);
    let script = Script::new(vec![Turn::CorruptCutHalf, Turn::Honest]);
    let fakes = [
        holder("poisoner", &record, &bytes, &script),
        holder("honest", &record, &bytes, &script),
    ];
    let mut down = PeerBuilder::new("down").args(&QUIET).spawn();
    learn(&down, &fakes.iter().collect::<Vec<_>>(), &record);
    down.send_line(&format!("get {}", id_of(&record)));
    assert_stored_verified(&down, &record, &bytes);
}

// ---- a local user tampering with the folder ------------------------------

/// A catalog entry as metadata.json holds it: the file, not held, with its
/// holders, and a `resume` record naming `partial` when given.
fn stored_entry(record: &Value, holders: &[&str], partial: Option<&str>) -> Value {
    let mut e = record.clone();
    e["peers_with_file"] = json!(holders);
    e["has_copy"] = json!("no");
    if let Some(p) = partial {
        e["resume"] = json!({"partial": p, "requested_by": "get"});
    }
    e
}

/// Writes a metadata.json of `entries` into `dir` (created).
fn write_metadata(dir: &Path, entries: &[Value]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut top = serde_json::Map::new();
    for e in entries {
        top.insert(id_of(e), e.clone());
    }
    std::fs::write(dir.join("metadata.json"), Value::Object(top).to_string()).unwrap();
}

/// A file outside the storage folder, for the tests to check untouched.
fn outside_file(tmp: &Path, bytes: &[u8]) -> PathBuf {
    let path = tmp.join("outside.txt");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Starts a peer on `dir` that knows `fake` (its well-known host), waits
/// for `record` to be stored and checks it verified; the peer.
fn start_and_fetch(dir: &Path, fake: &FakeHolder, record: &Value, bytes: &[u8]) -> PeerProc {
    let started = Instant::now();
    let mut down = PeerBuilder::new("down")
        .storage(dir)
        .well_known(fake.port)
        .args(&QUIET)
        .spawn();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the start took {:?}",
        started.elapsed()
    );
    let id = id_of(record);
    let known = wait_until(WAIT, || {
        down.file_with_id(&id).is_some_and(|f| {
            f["peers_with_file"]
                .as_array()
                .is_some_and(|h| !h.is_empty())
        })
    });
    assert!(known, "the holder was not learnt\n{}", log_tail(&down));
    // Asking again is harmless if a resumed download runs already.
    down.send_line(&format!("get {id}"));
    assert_stored_verified(&down, record, bytes);
    down
}

#[test]
fn resume_records_naming_paths_outside_the_temp_files_touch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let outside_bytes = pattern(90, 4096);
    let outside = outside_file(tmp.path(), &outside_bytes);
    let held_bytes = pattern(91, 8192);
    std::fs::write(dir.join("held.bin"), &held_bytes).unwrap();
    let bytes = Arc::new(pattern(92, LEN));
    let record = file_record("wanted.bin", &bytes, "owner", TS);
    let script = Script::new(vec![Turn::Honest]);
    let fake = holder("holder", &record, &bytes, &script);
    // Three more files the peer may fetch, each naming a path that is not a
    // temp file of ours.
    let decoys: Vec<(Value, Arc<Vec<u8>>)> = (0..3)
        .map(|i| {
            let b = Arc::new(pattern(93 + i, 1000));
            (file_record(&format!("decoy{i}.bin"), &b, "owner", TS), b)
        })
        .collect();
    let targets = ["../outside.txt", "metadata.json", "held.bin"];
    let mut entries = vec![stored_entry(&record, &["holder"], None)];
    for ((rec, _), target) in decoys.iter().zip(targets) {
        entries.push(stored_entry(rec, &["holder"], Some(target)));
    }
    write_metadata(&dir, &entries);
    let meta_before = std::fs::read(dir.join("metadata.json")).unwrap();
    let down = start_and_fetch(&dir, &fake, &record, &bytes);
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        outside_bytes,
        "outside changed"
    );
    assert_eq!(std::fs::read(dir.join("held.bin")).unwrap(), held_bytes);
    let held = down.file_named("held.bin").expect("held.bin still listed");
    assert_eq!(held["local"], true, "{held}");
    // The metadata is rewritten as the peer's own once the file is stored
    // (never opened as a temp file): it still parses, and names none of
    // the targets.
    let mut meta = Value::Null;
    let rewritten = wait_until(WAIT, || {
        let now = std::fs::read(dir.join("metadata.json")).unwrap_or_default();
        now != meta_before
            && serde_json::from_slice::<Value>(&now).is_ok_and(|m| {
                meta = m;
                true
            })
    });
    assert!(
        rewritten,
        "metadata.json not rewritten\n{}",
        log_tail(&down)
    );
    let text = meta.to_string();
    for target in targets {
        assert!(
            !text.contains(&format!("\"partial\":\"{target}\"")),
            "still named: {target}"
        );
    }
    assert_eq!(
        script.asked().iter().filter(|o| o.is_some()).count(),
        0,
        "nothing was resumed: {:?}",
        script.asked()
    );
}

#[test]
fn a_temp_file_that_is_a_symlink_out_of_the_folder_is_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = Arc::new(pattern(94, LEN));
    // The outside file holds the file's first half: followed, it would look
    // like a good prefix, and the rest would be written into it.
    let outside = outside_file(tmp.path(), &bytes[..LEN / 2]);
    std::os::unix::fs::symlink(&outside, dir.join(".partial-link")).unwrap();
    let record = file_record("linked.bin", &bytes, "owner", TS);
    write_metadata(
        &dir,
        &[stored_entry(&record, &["holder"], Some(".partial-link"))],
    );
    let script = Script::new(vec![Turn::Honest]);
    let fake = holder("holder", &record, &bytes, &script);
    let _down = start_and_fetch(&dir, &fake, &record, &bytes);
    let now = std::fs::read(&outside).unwrap();
    assert!(
        now == bytes[..LEN / 2],
        "the file outside was written: {} B, was {} B",
        now.len(),
        LEN / 2
    );
    assert_eq!(script.asked(), vec![None], "fetched whole, not resumed");
}

#[test]
fn a_temp_file_hard_linked_to_a_file_outside_the_folder_is_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = Arc::new(pattern(95, LEN));
    let outside = outside_file(tmp.path(), &bytes[..LEN / 2]);
    std::fs::hard_link(&outside, dir.join(".partial-hard")).unwrap();
    let record = file_record("hard.bin", &bytes, "owner", TS);
    write_metadata(
        &dir,
        &[stored_entry(&record, &["holder"], Some(".partial-hard"))],
    );
    let script = Script::new(vec![Turn::Honest]);
    let fake = holder("holder", &record, &bytes, &script);
    let _down = start_and_fetch(&dir, &fake, &record, &bytes);
    let now = std::fs::read(&outside).unwrap();
    assert!(
        now == bytes[..LEN / 2],
        "the file outside the folder was written: {} B, was {} B",
        now.len(),
        LEN / 2
    );
}

#[test]
fn a_temp_file_that_is_a_fifo_does_not_hang_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join(".partial-fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
    let bytes = Arc::new(pattern(96, LEN));
    let record = file_record("fifo.bin", &bytes, "owner", TS);
    write_metadata(
        &dir,
        &[stored_entry(&record, &["holder"], Some(".partial-fifo"))],
    );
    let script = Script::new(vec![Turn::Honest]);
    let fake = holder("holder", &record, &bytes, &script);
    // start_and_fetch bounds the start at 10 s and checks the file.
    let _down = start_and_fetch(&dir, &fake, &record, &bytes);
    assert!(!fifo.exists(), "the FIFO named as a temp file is left");
}

#[test]
fn a_directory_named_as_a_temp_file_is_neither_resumed_nor_emptied() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let sub = dir.join(".partial-dir");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("inside.txt"), b"the user's").unwrap();
    let bytes = Arc::new(pattern(97, LEN));
    let record = file_record("dir.bin", &bytes, "owner", TS);
    write_metadata(
        &dir,
        &[stored_entry(&record, &["holder"], Some(".partial-dir"))],
    );
    let script = Script::new(vec![Turn::Honest]);
    let fake = holder("holder", &record, &bytes, &script);
    let started = Instant::now();
    let mut down = PeerBuilder::new("down")
        .storage(&dir)
        .well_known(fake.port)
        .args(&QUIET)
        .spawn();
    assert!(started.elapsed() < Duration::from_secs(10));
    let id = id_of(&record);
    assert!(wait_until(WAIT, || {
        down.file_with_id(&id).is_some_and(|f| {
            f["peers_with_file"]
                .as_array()
                .is_some_and(|h| !h.is_empty())
        })
    }));
    down.send_line(&format!("get {id}"));
    let entry = wait_ended(&down, &record).expect("stored");
    assert_eq!(entry["verified"], true, "{entry}");
    assert_eq!(
        std::fs::read(sub.join("inside.txt")).unwrap(),
        b"the user's"
    );
    assert_eq!(script.asked(), vec![None], "fetched whole, not resumed");
}

#[test]
fn a_temp_file_longer_than_the_file_is_not_resumed_past_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = Arc::new(pattern(98, LEN));
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(&pattern(99, 4096));
    std::fs::write(dir.join(".partial-long"), &longer).unwrap();
    let record = file_record("long.bin", &bytes, "owner", TS);
    write_metadata(
        &dir,
        &[stored_entry(&record, &["holder"], Some(".partial-long"))],
    );
    let script = Script::new(vec![Turn::Honest]);
    let fake = holder("holder", &record, &bytes, &script);
    let _down = start_and_fetch(&dir, &fake, &record, &bytes);
    assert_eq!(script.asked(), vec![None], "fetched whole, not resumed");
}

#[test]
fn two_entries_naming_one_temp_file_both_end_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let a = Arc::new(pattern(100, LEN));
    let b = Arc::new(pattern(101, LEN));
    let rec_a = file_record("one.bin", &a, "owner", TS);
    let rec_b = file_record("two.bin", &b, "owner", TS);
    // The temp file holds the first half of the file whose id sorts last,
    // so the entry read first (ids in order) names bytes that are not its.
    let (owner_rec, owner_bytes, other_rec) = if id_of(&rec_a) > id_of(&rec_b) {
        (&rec_a, &a, &rec_b)
    } else {
        (&rec_b, &b, &rec_a)
    };
    std::fs::write(dir.join(".partial-shared"), &owner_bytes[..LEN / 2]).unwrap();
    write_metadata(
        &dir,
        &[
            stored_entry(owner_rec, &["holder"], Some(".partial-shared")),
            stored_entry(other_rec, &["holder"], Some(".partial-shared")),
        ],
    );
    let script = Script::new(vec![Turn::Honest]);
    let (ra, rb, da, db) = (rec_a.clone(), rec_b.clone(), a.clone(), b.clone());
    let fake = FakeHolder::start(
        "holder",
        vec![rec_a.clone(), rec_b.clone()],
        FakeStyle {
            ranges: true,
            ..FakeStyle::default()
        },
        move |req, conn, stop| {
            if req["file_id"] == ra["file_id"] {
                script.answer("holder", (&ra, &da), req, conn, stop)
            } else if req["file_id"] == rb["file_id"] {
                script.answer("holder", (&rb, &db), req, conn, stop)
            } else {
                reply_and_close(conn, &file_not_found())
            }
        },
    );
    let mut down = PeerBuilder::new("down")
        .storage(&dir)
        .well_known(fake.port)
        .args(&QUIET)
        .spawn();
    let both = [(&rec_a, &a), (&rec_b, &b)];
    assert!(wait_until(WAIT, || both.iter().all(|(r, _)| {
        down.file_with_id(&id_of(r)).is_some_and(|f| {
            f["peers_with_file"]
                .as_array()
                .is_some_and(|h| !h.is_empty())
        })
    })));
    for (r, _) in both {
        down.send_line(&format!("get {}", id_of(r)));
    }
    for (r, b) in both {
        let entry = wait_ended(&down, r).expect("stored");
        assert_eq!(entry["verified"], true, "{entry}\n{}", log_tail(&down));
        let name = r["file_name"].as_str().unwrap();
        assert!(std::fs::read(down.dir.join(name)).unwrap() == **b, "{name}");
    }
    assert_no_temp_file_left(&dir);
}

// ---- the downloader killed, the owner deleting ---------------------------

/// A fraction in [lo, hi) from the clock's nanoseconds (printed, so a
/// failing run's moments can be told).
fn random_fraction(lo: f64, hi: f64) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    lo + (hi - lo) * f64::from(nanos % 1000) / 1000.0
}

#[test]
fn killed_twice_at_random_moments_the_download_still_ends_verified() {
    let bytes = Arc::new(pattern(102, LEN));
    let record = file_record("killed.bin", &bytes, "owner", TS);
    let id = id_of(&record);
    // About 4 s for the whole file, so each kill falls mid-transfer.
    let script = Script::new(vec![Turn::HonestSlowly(512 * 1024)]);
    let fake = holder("holder", &record, &bytes, &script);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let spawn = || {
        PeerBuilder::new("down")
            .storage(&dir)
            .well_known(fake.port)
            .args(&QUIET)
            .spawn()
    };
    let mut down = spawn();
    assert!(
        wait_until(WAIT, || down.file_with_id(&id).is_some()),
        "{}",
        log_tail(&down)
    );
    down.send_line(&format!("get {id}"));
    let mut reached = 0u64;
    for round in 1..=2 {
        // A moment past what the last run reached, once the metadata names
        // the download (so the next start knows to resume it).
        let at = random_fraction(0.05, 0.45) * round as f64;
        let target = ((LEN as f64 * at) as u64).max(reached + 1);
        let running = wait_until(WAIT, || {
            bytes_done(&down, &id) >= target && resume_record(&dir, &id).is_some()
        });
        assert!(
            running,
            "round {round}: never reached {target} B\n{}",
            log_tail(&down)
        );
        reached = bytes_done(&down, &id);
        down.kill();
        eprintln!("round {round}: killed at {reached} B (aimed at {target} B)");
        down = spawn();
    }
    let entry = wait_ended(&down, &record).expect("stored after the second restart");
    assert_eq!(entry["verified"], true, "{entry}\n{}", log_tail(&down));
    assert!(std::fs::read(dir.join("killed.bin")).unwrap() == *bytes);
    assert_no_temp_file_left(&dir);
    let asked = script.asked();
    assert_eq!(asked.len(), 3, "one request a run: {asked:?}");
    assert!(
        asked[1..].iter().all(|o| o.is_some_and(|o| o > 0)),
        "each restart resumed: {asked:?}"
    );
}

#[test]
fn the_owners_delete_of_a_file_whose_resumed_download_waits_removes_its_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = pattern(103, LEN);
    let record = file_record("gone.bin", &bytes, "owner", TS);
    let id = id_of(&record);
    std::fs::write(dir.join(".partial-gone"), &bytes[..LEN / 2]).unwrap();
    write_metadata(
        &dir,
        &[stored_entry(&record, &["holder"], Some(".partial-gone"))],
    );
    // No holder is reachable: the resumed download waits (the peer timeout
    // of QUIET is long).
    let down = PeerBuilder::new("down").args(&QUIET).storage(&dir).spawn();
    let waiting = down.wait_line(0, "resuming gone.bin", WAIT);
    assert!(waiting.is_some(), "not resumed\n{}", log_tail(&down));
    assert!(dir.join(".partial-gone").exists(), "kept while it waits");
    let delete = json!({"type": "DELETE", "from": "owner", "file_id": id});
    send_raw(down.p2p_port, delete.to_string().as_bytes()).unwrap();
    let gone = wait_until(WAIT, || {
        partial_files(&dir).is_empty() && down.file_with_id(&id).is_none()
    });
    assert!(gone, "{:?}\n{}", partial_files(&dir), log_tail(&down));
    let forgotten = wait_until(WAIT, || resume_record(&dir, &id).is_none());
    assert!(forgotten, "the metadata still names the download");
}

#[test]
fn the_users_delete_of_their_own_file_whose_resumed_download_waits_removes_its_temp_file() {
    // The user's own file, whose copy is gone from the folder while its
    // download was in flight: resumed at the start, it waits for a holder.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = pattern(104, LEN);
    let record = file_record("mine.bin", &bytes, "down", TS);
    let id = id_of(&record);
    std::fs::write(dir.join(".partial-mine"), &bytes[..LEN / 2]).unwrap();
    write_metadata(
        &dir,
        &[stored_entry(&record, &["holder"], Some(".partial-mine"))],
    );
    let mut down = PeerBuilder::new("down").args(&QUIET).storage(&dir).spawn();
    let waiting = down.wait_line(0, "resuming mine.bin", WAIT);
    assert!(waiting.is_some(), "not resumed\n{}", log_tail(&down));
    let before = down.line_count();
    down.send_line(&format!("delete {id}"));
    let said = down.wait_line(before, "delete: deleted mine.bin", WAIT);
    assert!(said.is_some(), "{}", log_tail(&down));
    let gone = wait_until(WAIT, || partial_files(&dir).is_empty());
    assert!(gone, "{:?}\n{}", partial_files(&dir), log_tail(&down));
    let forgotten = wait_until(WAIT, || resume_record(&dir, &id).is_none());
    assert!(forgotten, "the metadata still names the download");
}

#[test]
fn a_file_the_user_deleted_is_not_stored_again_by_its_download_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = Arc::new(pattern(105, LEN));
    let record = file_record("mine.bin", &bytes, "down", TS);
    let id = id_of(&record);
    std::fs::write(dir.join(".partial-mine"), &bytes[..LEN / 4]).unwrap();
    write_metadata(
        &dir,
        &[stored_entry(&record, &["holder"], Some(".partial-mine"))],
    );
    // About 3 s for the rest: the delete falls mid-transfer.
    let script = Script::new(vec![Turn::HonestSlowly(512 * 1024)]);
    let fake = holder("holder", &record, &bytes, &script);
    let mut down = PeerBuilder::new("down")
        .args(&QUIET)
        .storage(&dir)
        .well_known(fake.port)
        .spawn();
    let moving = wait_until(WAIT, || bytes_done(&down, &id) > (LEN / 4) as u64);
    assert!(
        moving,
        "the resumed download never moved\n{}",
        log_tail(&down)
    );
    down.send_line(&format!("delete {id}"));
    assert!(down
        .wait_line(0, "delete: deleted mine.bin", WAIT)
        .is_some());
    // Past the time the rest needed, the file is neither listed nor stored.
    let ended = wait_until(WAIT, || {
        down.state().is_some_and(|s| {
            s["transfers"]
                .as_array()
                .is_some_and(|t| !t.iter().any(|t| t["file_id"] == id))
        })
    });
    assert!(ended, "the download never ended\n{}", log_tail(&down));
    assert!(down.file_with_id(&id).is_none(), "{}", log_tail(&down));
    assert!(!dir.join("mine.bin").exists(), "the deleted file is back");
    assert_no_temp_file_left(&dir);
}
