//! Files moving between real peershare processes and fake peers written
//! here: push, get with fallback, hostile names, delete, a large file,
//! auto-fetch beside the menu, a crash mid-download, Python-style framing and
//! unverifiable ids. Every test checks bytes on disk, not just printed lines.
mod support;

use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::files::*;
use support::*;

/// Bound for a download that should take a few seconds at most.
const GET_WAIT: Duration = Duration::from_secs(20);

/// Waits (after stdout line `skip`) for the end of a `get` of `name`:
/// `Ok(saved line)` or `Err(failed line)`. Panics if neither comes in time.
fn get_outcome(p: &PeerProc, skip: usize, name: &str, timeout: Duration) -> Result<String, String> {
    let saved = format!("get: saved {name},");
    let failed = format!("get: no source left for {name}:");
    let mut found = None;
    wait_until(timeout, || {
        found = p
            .lines()
            .into_iter()
            .skip(skip)
            .find(|l| l.starts_with(&saved) || l.starts_with(&failed));
        found.is_some()
    });
    match found {
        Some(l) if l.starts_with(&saved) => Ok(l),
        Some(l) => Err(l),
        None => panic!("no end of `get {name}` within {timeout:?}\n{}", log_tail(p)),
    }
}

/// Waits until `p`'s catalog has the file `id` with every peer of `holders`
/// in its peers_with_file; returns the entry.
fn wait_known(p: &PeerProc, id: &str, holders: &[&str]) -> Value {
    let mut entry = None;
    let ok = wait_until(WAIT, || {
        entry = p.file_with_id(id).filter(|e| {
            let list = e["peers_with_file"].as_array().cloned().unwrap_or_default();
            holders.iter().all(|h| list.iter().any(|x| x == h))
        });
        entry.is_some()
    });
    assert!(
        ok,
        "{} never learned {id} from {holders:?}\n{}",
        p.id,
        log_tail(p)
    );
    entry.unwrap()
}

/// Waits until `p`'s catalog has a file named `name`; returns the entry.
fn wait_named(p: &PeerProc, name: &str) -> Value {
    let mut entry = None;
    let ok = wait_until(WAIT, || {
        entry = p.file_named(name);
        entry.is_some()
    });
    assert!(ok, "{} never listed {name}\n{}", p.id, log_tail(p));
    entry.unwrap()
}

/// The five record fields of a catalog entry from `/api/state`.
fn record_of(entry: &Value) -> Value {
    json!({
        "file_name": entry["file_name"],
        "file_size": entry["file_size"],
        "file_id": entry["file_id"],
        "file_owner": entry["file_owner"],
        "file_timestamp": entry["file_timestamp"],
    })
}

fn id_of(entry: &Value) -> String {
    entry["file_id"].as_str().expect("file_id").to_string()
}

/// Waits until no `.partial-*` temp file is left in `p`'s folder. The
/// metadata writer uses one briefly on every save, so this waits for it to
/// go rather than looking once; a leaked download temp file never goes.
fn assert_no_temp_files_remain(p: &PeerProc) {
    assert!(
        wait_until(WAIT, || partial_files(&p.dir).is_empty()),
        "temp files left in {}: {:?}",
        p.dir.display(),
        partial_files(&p.dir)
    );
}

/// Lets the peer's millisecond clock move past everything it has processed
/// so far. Sources are tried most-recently-seen first, with `last_seen` in
/// whole milliseconds and ties broken by peerId; two GOSSIP_REPLYs handled in
/// the same millisecond would tie. Called after the earlier reply is known to
/// be processed, so the next one is strictly more recent: this guarantees an
/// ordering, it does not wait for anything to happen.
fn next_millisecond() {
    std::thread::sleep(Duration::from_millis(3));
}

/// A folder with a storage folder inside (returned), kept by the caller.
fn storage_in(tmp: &tempfile::TempDir) -> PathBuf {
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).expect("mkdir storage");
    dir
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---- 1. push, then get from a holder ---------------------------------------

#[test]
fn push_on_a_then_get_on_c_from_b_is_byte_identical() {
    let mut a = PeerBuilder::new("alpha").spawn();
    let b = PeerBuilder::new("bravo").well_known(a.p2p_port).spawn();
    let c = PeerBuilder::new("charlie").well_known(a.p2p_port).spawn();
    assert!(
        wait_until(WAIT, || {
            let ids = a.peer_ids();
            ids.iter().any(|i| i == "bravo") && ids.iter().any(|i| i == "charlie")
        }),
        "alpha does not track bravo and charlie\n{}",
        log_tail(&a)
    );

    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("photo.bin");
    let content = pattern(rand::random::<u64>(), 1024 * 1024);
    std::fs::write(&path, &content).unwrap();
    a.send_line(&format!("push {}", path.display()));
    let push = a
        .wait_line(0, "push: stored", GET_WAIT)
        .unwrap_or_else(|| panic!("no push line\n{}", log_tail(&a)));
    let entry = wait_named(&a, "photo.bin");
    let id = id_of(&entry);
    assert_eq!(entry["file_owner"], "alpha");
    assert_eq!(entry["file_size"], content.len());
    assert_eq!(id, file_id(&content, &entry["file_timestamp"].to_string()));
    assert!(push.contains(&id), "{push}");
    assert!(push.contains("announced to 2 peers"), "{push}");

    // A sent it to one random peer: that one is the second holder, the
    // other one fetches it with `get` (the "C" of the test's name).
    let target = push
        .split("sent to ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("push line names no target: {push}"))
        .to_string();
    let (holder, mut getter) = match target.as_str() {
        "bravo" => (b, c),
        "charlie" => (c, b),
        other => panic!("pushed to unknown peer {other:?}: {push}"),
    };
    assert!(
        wait_until(WAIT, || holder
            .file_with_id(&id)
            .is_some_and(|e| e["local"] == true)),
        "{} never stored the pushed file\n{}",
        holder.id,
        log_tail(&holder)
    );
    assert_eq!(read(&holder.dir.join("photo.bin")), content);

    wait_known(&getter, &id, &["alpha"]);
    let skip = getter.line_count();
    getter.send_line(&format!("get {}", &id[..12]));
    let saved = get_outcome(&getter, skip, "photo.bin", GET_WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(&getter)));
    assert!(
        saved.ends_with(" from alpha") || saved.ends_with(&format!(" from {}", holder.id)),
        "{saved}"
    );
    assert!(!saved.contains("UNVERIFIED"), "{saved}");
    assert_eq!(read(&getter.dir.join("photo.bin")), content);
    assert_eq!(read(&a.dir.join("photo.bin")), content);
    assert_no_temp_files_remain(&getter);
    let e = getter.file_with_id(&id).expect("entry after get");
    assert_eq!(
        (e["local"].clone(), e["verified"].clone()),
        (json!(true), json!(true))
    );
}

// ---- 2. fallback to the next source ----------------------------------------

#[derive(Clone, Copy)]
enum BadSource {
    /// A holder whose port is closed.
    Dead,
    /// Accepts GET_FILE and never sends a byte.
    Silent,
    /// Sends FILE_DATA whose data is not hex.
    CorruptHex,
    /// Replies with the not-found FILE_DATA.
    NotFound,
}

/// A good real holder and a bad holder seen more recently: `get` tries the bad
/// one first, then completes from the good one within the short timeouts
/// (`--connect-timeout 1 --idle-timeout 2`), and the menu gives the reason
/// and the next source tried.
fn falls_back(bad: BadSource, reason: &str) {
    let content = pattern(rand::random::<u64>(), 300 * 1024);
    let gtmp = tempfile::tempdir().unwrap();
    let gdir = storage_in(&gtmp);
    std::fs::write(gdir.join("report.bin"), &content).unwrap();
    let good = PeerBuilder::new("good").storage(&gdir).args(&QUIET).spawn();
    let mut d = PeerBuilder::new("downloader")
        .well_known(good.p2p_port)
        .args(&QUIET)
        .spawn();
    let entry = wait_named(&d, "report.bin");
    let id = id_of(&entry);
    assert_eq!(id, file_id(&content, &entry["file_timestamp"].to_string()));
    let record = record_of(&entry);
    next_millisecond();

    // The bad holder's GOSSIP_REPLY comes last, so it is the most recently
    // seen holder and is tried first (the good one won't be heard from again:
    // gossip every 30 s).
    let mut fake = None;
    match bad {
        BadSource::Dead => {
            let reply = json!({"type": "GOSSIP_REPLY", "host": "127.0.0.1",
                "port": closed_port(), "peerId": "bad", "files": [record]});
            send_raw(d.p2p_port, reply.to_string().as_bytes()).unwrap();
        }
        _ => {
            let rec = record.clone();
            let data = content.clone();
            let f = FakeHolder::start(
                "bad",
                vec![record.clone()],
                FakeStyle::default(),
                move |_req, conn, stop| match bad {
                    BadSource::Silent => {
                        hold_silent(conn, stop, Duration::from_secs(15));
                    }
                    BadSource::CorruptHex => {
                        let mut msg = file_data(&rec, &data);
                        let at = find(&msg, b"\"data\":\"").expect("data field") + 8;
                        msg[at..at + 4].copy_from_slice(b"zq!~");
                        reply_and_close(conn, &msg);
                    }
                    BadSource::NotFound => reply_and_close(conn, &file_not_found()),
                    BadSource::Dead => unreachable!(),
                },
            );
            f.send_gossip_reply(d.p2p_port).unwrap();
            fake = Some(f);
        }
    }
    wait_known(&d, &id, &["good", "bad"]);

    let skip = d.line_count();
    let started = Instant::now();
    d.send_line(&format!("get {}", &id[..10]));
    let saved = get_outcome(&d, skip, "report.bin", GET_WAIT)
        .unwrap_or_else(|failed| panic!("{failed}\n{}", log_tail(&d)));
    let took = started.elapsed();
    assert!(saved.ends_with(" from good"), "{saved}");
    // connect timeout 1 s + idle timeout 2 s, plus slack for a loaded machine.
    assert!(took < Duration::from_secs(8), "fallback took {took:?}");

    let lines: Vec<String> = d.lines().into_iter().skip(skip).collect();
    let pos = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let tried_bad = pos("get: fetching report.bin (300.0 KiB) from bad");
    let tried_good = pos("get: fetching report.bin (300.0 KiB) from good");
    assert!(
        matches!((tried_bad, tried_good), (Some(x), Some(y)) if x < y),
        "bad source not tried first:\n{}",
        lines.join("\n")
    );
    // A successful get prints no final failure line; the bad source's
    // failure is one menu line naming it, why, and the next source.
    assert!(!lines.iter().any(|l| l.starts_with("get: no source left")));
    let why = lines
        .iter()
        .find(|l| l.starts_with("get: bad (127.0.0.1:"))
        .unwrap_or_else(|| panic!("no failure line for bad\n{}", lines.join("\n")));
    assert!(why.contains(reason), "expected {reason:?} in {why:?}");
    assert!(
        why.contains("; trying good (127.0.0.1:") && why.ends_with(" (2 of 2)"),
        "{why}"
    );

    assert_eq!(read(&d.dir.join("report.bin")), content);
    assert_no_temp_files_remain(&d);
    assert_eq!(d.file_with_id(&id).unwrap()["verified"], true);
    if let Some(f) = &fake {
        assert!(f
            .received()
            .iter()
            .any(|m| m["type"] == "GET_FILE" && m["file_id"] == id.as_str()));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn get_falls_back_when_the_first_source_is_dead() {
    falls_back(BadSource::Dead, "refused");
}

#[test]
fn get_falls_back_when_the_first_source_accepts_and_never_sends() {
    falls_back(BadSource::Silent, "timed out before the first byte");
}

#[test]
fn get_falls_back_when_the_first_source_sends_corrupt_hex() {
    falls_back(BadSource::CorruptHex, "data is not hex");
}

#[test]
fn get_falls_back_when_the_first_source_replies_not_found() {
    falls_back(BadSource::NotFound, " does not have the file;");
}

#[test]
fn get_fails_naming_every_source_and_its_reason_when_none_works() {
    let data = pattern(77, 20_000);
    let record = file_record("lost.bin", &data, "owner", 1_700_000_500);
    let id = record["file_id"].as_str().unwrap().to_string();
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    // Heard from in this order, so tried as nope, mute, gone.
    let gone = json!({"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": closed_port(),
        "peerId": "gone", "files": [record]});
    send_raw(d.p2p_port, gone.to_string().as_bytes()).unwrap();
    wait_known(&d, &id, &["gone"]);
    next_millisecond();
    let mute = FakeHolder::start(
        "mute",
        vec![record.clone()],
        FakeStyle::default(),
        |_, c, stop| {
            hold_silent(c, stop, Duration::from_secs(15));
        },
    );
    mute.send_gossip_reply(d.p2p_port).unwrap();
    wait_known(&d, &id, &["gone", "mute"]);
    next_millisecond();
    let nope = FakeHolder::start("nope", vec![record], FakeStyle::default(), |_, c, _| {
        reply_and_close(c, &file_not_found())
    });
    nope.send_gossip_reply(d.p2p_port).unwrap();
    wait_known(&d, &id, &["gone", "mute", "nope"]);

    let skip = d.line_count();
    let started = Instant::now();
    d.send_line(&format!("get {}", &id[..10]));
    let failed =
        get_outcome(&d, skip, "lost.bin", GET_WAIT).expect_err("no source can serve the file");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    let reasons = failed
        .strip_prefix("get: no source left for lost.bin: ")
        .unwrap_or_else(|| panic!("{failed}"));
    let parts: Vec<&str> = reasons.split(", ").collect();
    assert_eq!(parts.len(), 3, "{failed}");
    assert_eq!(parts[0], "nope does not have the file", "{failed}");
    assert_eq!(parts[1], "mute timed out before the first byte", "{failed}");
    assert!(
        parts[2].starts_with("gone could not be reached (") && parts[2].contains("refused"),
        "{failed}"
    );
    assert!(data_files(&d.dir).is_empty());
    assert_no_temp_files_remain(&d);
    assert_eq!(d.file_with_id(&id).unwrap()["local"], false);
}

// ---- 3. hostile names -------------------------------------------------------

/// Every path under `root`, recursively.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()) {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_names_land_safely_inside_the_storage_folder() {
    let root = tempfile::tempdir().unwrap();
    let storage = root.path().join("a").join("b").join("storage");
    let p = PeerBuilder::new("victim").storage(&storage).spawn();
    let names = ["../../x", "a/b", ".."];
    let mut pushed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let data = pattern(1000 + i as u64, 4096 + i);
        let rec = file_record(name, &data, "mallory", 1_700_000_000 + i as u64);
        // Unsolicited FILE_DATA on a new connection: a push.
        send_raw(p.p2p_port, &file_data(&rec, &data)).unwrap();
        pushed.push((rec["file_id"].as_str().unwrap().to_string(), data));
    }
    assert!(
        wait_until(WAIT, || {
            let files = p.files();
            pushed.iter().all(|(id, _)| {
                files.iter().any(|f| {
                    f["file_id"] == id.as_str() && f["local"] == true && f["verified"] == true
                })
            })
        }),
        "pushed files not all stored\n{}",
        log_tail(&p)
    );

    // Inside the storage folder: exactly three plain files holding the bytes.
    let stored = data_files(&storage);
    assert_eq!(stored.len(), 3, "{stored:?}");
    let mut contents: Vec<Vec<u8>> = stored
        .iter()
        .map(|n| {
            assert!(!n.contains('/') && n != ".." && n != ".", "bad name {n:?}");
            let path = storage.join(n);
            assert!(
                path.symlink_metadata().unwrap().is_file(),
                "{n:?} is not a file"
            );
            read(&path)
        })
        .collect();
    let mut expected: Vec<Vec<u8>> = pushed.iter().map(|(_, d)| d.clone()).collect();
    contents.sort();
    expected.sort();
    assert_eq!(contents, expected);

    // Outside it: nothing was created (`../../x` would be root/a/x, `..`
    // the folder's parent, `a/b` a subfolder).
    let dirs: Vec<PathBuf> = vec![
        root.path().join("a"),
        root.path().join("a/b"),
        storage.clone(),
    ];
    for path in walk(root.path()) {
        let ok = dirs.contains(&path) || path.parent() == Some(storage.as_path());
        assert!(ok, "created outside the storage folder: {}", path.display());
    }
    let parent: Vec<String> = std::fs::read_dir(storage.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(parent, vec!["storage".to_string()]);
}

// ---- 4. delete --------------------------------------------------------------

fn metadata(dir: &Path) -> Option<Value> {
    let bytes = std::fs::read(dir.join("metadata.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[test]
fn delete_by_owner_removes_everywhere_and_by_others_nowhere() {
    let mut a = PeerBuilder::new("alpha").spawn();
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("notes.txt");
    let content = pattern(42, 50_000);
    std::fs::write(&path, &content).unwrap();
    a.send_line(&format!("push {}", path.display()));
    let push = a.wait_line(0, "push: stored", GET_WAIT).expect("push line");
    assert!(push.contains("no peer to send it to yet"), "{push}");
    let id = id_of(&wait_named(&a, "notes.txt"));

    let mut b = PeerBuilder::new("bravo").well_known(a.p2p_port).spawn();
    wait_known(&b, &id, &["alpha"]);
    let skip = b.line_count();
    b.send_line(&format!("get {id}"));
    get_outcome(&b, skip, "notes.txt", GET_WAIT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&b.dir.join("notes.txt")), content);

    // A DELETE from someone who is not the owner changes nothing.
    let fake_delete = json!({"type": "DELETE", "from": "mallory", "file_id": id});
    send_raw(b.p2p_port, fake_delete.to_string().as_bytes()).unwrap();
    assert!(
        wait_until(WAIT, || b
            .log()
            .contains("from mallory ignored: the owner is alpha")),
        "non-owner DELETE not logged\n{}",
        log_tail(&b)
    );
    assert_eq!(read(&b.dir.join("notes.txt")), content);
    let e = b
        .file_with_id(&id)
        .expect("entry kept after a non-owner DELETE");
    assert_eq!(e["local"], true);
    assert_eq!(read(&a.dir.join("notes.txt")), content);

    // The owner's delete removes it here and at B: folders, catalogs,
    // metadata files.
    let skip = a.line_count();
    a.send_line(&format!("delete {}", &id[..8]));
    let line = a.wait_line(skip, "delete:", WAIT).expect("delete line");
    assert!(line.starts_with("delete: deleted notes.txt"), "{line}");
    for p in [&a, &b] {
        let gone = wait_until(WAIT, || {
            data_files(&p.dir).is_empty()
                && p.state().is_some_and(|s| {
                    !s["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|f| f["file_id"] == id.as_str())
                })
                && metadata(&p.dir).is_some_and(|m| m.get(&id).is_none())
        });
        assert!(gone, "{} still has the deleted file\n{}", p.id, log_tail(p));
    }
}

// ---- 5. a large file --------------------------------------------------------

/// Writes `size` bytes of [`pattern`]-style data to `path`; returns their
/// SHA-256, computed while writing.
fn write_big(path: &Path, size: usize) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut g = PatternGen::new(size as u64);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        fill_pattern(&mut g, &mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
    faster_hex::hex_string(&h.finalize())
}

/// A pushes a `size`-byte file, B gets it; B's copy has the same SHA-256.
/// Prints how long each step took (`--nocapture`).
fn round_trip(size: usize) {
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("big.bin");
    let t0 = Instant::now();
    let expected = write_big(&path, size);
    eprintln!(
        "{} MiB: generated and hashed in {:?}",
        size >> 20,
        t0.elapsed()
    );

    // A long idle timeout on both sides: in the debug build under load one
    // 8 MiB read step can outlast the harness's 2 s, which trips the bug
    // pinned by `a_download_busy_for_longer_than_the_idle_timeout_is_not_called_idle`.
    let a = PeerBuilder::new("alpha").args(&["--idle-timeout", "60"]);
    let mut a = a.spawn();
    let t1 = Instant::now();
    a.send_line(&format!("push {}", path.display()));
    let push = a
        .wait_line(0, "push: stored", Duration::from_secs(300))
        .unwrap_or_else(|| panic!("no push line\n{}", log_tail(&a)));
    eprintln!("push (copy + hash) took {:?}", t1.elapsed());
    let id = id_of(&wait_named(&a, "big.bin"));
    assert!(push.contains(&id), "{push}");

    let mut b = PeerBuilder::new("bravo")
        .well_known(a.p2p_port)
        .args(&["--idle-timeout", "60"])
        .spawn();
    wait_known(&b, &id, &["alpha"]);
    let skip = b.line_count();
    let t2 = Instant::now();
    b.send_line(&format!("get {id}"));
    let saved = get_outcome(&b, skip, "big.bin", Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(&b)));
    eprintln!("get took {:?}: {saved}", t2.elapsed());
    assert!(!saved.contains("UNVERIFIED"), "{saved}");
    assert!(saved.ends_with(" from alpha"), "{saved}");
    let t3 = Instant::now();
    let got = b.dir.join("big.bin");
    assert_eq!(std::fs::metadata(&got).unwrap().len(), size as u64);
    assert_eq!(sha256_file(&got), expected);
    assert_no_temp_files_remain(&b);
    eprintln!(
        "hash check took {:?}; total {:?}",
        t3.elapsed(),
        t0.elapsed()
    );
}

/// The size the issue asks for (about 8 s in the test profile, which
/// optimizes hashing and hex).
#[test]
fn a_256_mib_file_round_trips_with_the_same_sha256() {
    round_trip(256 * 1024 * 1024);
}

#[test]
fn a_64_mib_file_round_trips_with_the_same_sha256() {
    round_trip(64 * 1024 * 1024);
}

/// The source streams without pause (its writes never wait long for the
/// downloader to take more), yet the downloader must not call the transfer
/// idle: progress counts from the end of each read step.
#[test]
fn a_download_busy_for_longer_than_the_idle_timeout_is_not_called_idle() {
    let data = pattern(3, 32 * 1024 * 1024);
    let record = file_record("stream.bin", &data, "streamer", 1_700_000_000);
    let id = record["file_id"].as_str().unwrap().to_string();
    let msg = Arc::new(file_data(&record, &data));
    let total = msg.len();
    // Longest wait for the socket to take more, bytes written, completed.
    let stats: Arc<Mutex<Option<(Duration, usize, bool)>>> = Arc::default();
    let seen = stats.clone();
    let fake = FakeHolder::start(
        "streamer",
        vec![record],
        FakeStyle::default(),
        move |_, mut conn, _| {
            use std::io::Write;
            let (mut last, mut longest, mut sent, mut done) =
                (Instant::now(), Duration::ZERO, 0, true);
            for chunk in msg.chunks(64 * 1024) {
                if conn.write_all(chunk).is_err() {
                    done = false;
                    break;
                }
                longest = longest.max(last.elapsed());
                last = Instant::now();
                sent += chunk.len();
            }
            *seen.lock().unwrap() = Some((longest, sent, done));
            reply_and_close(conn, b"");
        },
    );
    let mut d = PeerBuilder::new("downloader")
        .args(&QUIET)
        .args(&["--idle-timeout", "1"])
        .spawn();
    fake.send_gossip_reply(d.p2p_port).unwrap();
    wait_known(&d, &id, &["streamer"]);
    let skip = d.line_count();
    d.send_line(&format!("get {id}"));
    let outcome = get_outcome(&d, skip, "stream.bin", Duration::from_secs(120));
    wait_until(WAIT, || stats.lock().unwrap().is_some());
    let (longest, sent, _) = stats.lock().unwrap().unwrap_or_default();
    if let Err(failed) = outcome {
        panic!(
            "{failed}\nyet the source never waited more than {longest:?} for the \
             downloader to read (idle timeout 1 s); it wrote {sent} of {total} bytes"
        );
    }
    assert_eq!(sha256_file(&d.dir.join("stream.bin")), sha256_hex(&data));
}

/// A holder of `name` (these bytes) and a getter whose every fsync takes
/// `sync_ms` longer, the getter knowing the file; with its id. `None` in a
/// release build, where the slow-fsync knob does not exist.
fn slow_sync_pair(name: &str, data: &[u8], sync_ms: u64) -> Option<(PeerProc, PeerProc, String)> {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: needs a debug build of peershare");
        return None;
    }
    let a = PeerBuilder::new("holder")
        .args(&QUIET)
        .file(name, data)
        .spawn();
    let id = id_of(&wait_named(&a, name));
    let b = PeerBuilder::new("getter")
        .args(&QUIET)
        .well_known(a.p2p_port)
        .env("PEERSHARE_TEST_SLOW_SYNC_MS", &sync_ms.to_string())
        .spawn();
    wait_known(&b, &id, &["holder"]);
    Some((a, b, id))
}

/// The end of a download waits for the disk (the writer thread's last
/// writes and fsync) off the loop: with every fsync made 3 s slow, the
/// downloader's stats page still answers at once until the file is saved,
/// and the file is complete and verified.
#[test]
fn a_slow_disk_at_the_end_of_a_download_never_stalls_the_loop() {
    let data = pattern(21, 3 * 1024 * 1024 + 5);
    let Some((_a, mut b, id)) = slow_sync_pair("slow.bin", &data, 3000) else {
        return;
    };
    let skip = b.line_count();
    let asked = Instant::now();
    b.send_line(&format!("get {id}"));
    let (mut probes, mut slowest) = (0, Duration::ZERO);
    while b.wait_line(skip, "get: saved", Duration::ZERO).is_none() {
        assert!(
            asked.elapsed() < GET_WAIT,
            "no saved line\n{}",
            log_tail(&b)
        );
        let t = Instant::now();
        let page = http_get(b.http_port, "/api/state");
        assert!(
            page.is_some(),
            "the stats page did not answer during the get"
        );
        slowest = slowest.max(t.elapsed());
        probes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "saved after {took:?}: the slow fsync was not in effect"
    );
    assert!(probes >= 10, "only {probes} probes in {took:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "the stats page took {slowest:?} while the file was being synced"
    );
    let saved = get_outcome(&b, skip, "slow.bin", GET_WAIT).unwrap();
    assert!(!saved.contains("UNVERIFIED"), "{saved}");
    assert_eq!(read(&b.dir.join("slow.bin")), data);
    assert_no_temp_files_remain(&b);
}

/// `exit` while a received file is still being synced: the peer waits for
/// it (a few seconds at most), stores it and saves it in the metadata.
#[test]
fn exit_while_a_received_file_is_being_synced_keeps_it() {
    let data = pattern(22, 2 * 1024 * 1024 + 9);
    let Some((_a, mut b, id)) = slow_sync_pair("late.bin", &data, 2000) else {
        return;
    };
    b.send_line(&format!("get {id}"));
    // Every byte is in once the transfer shows the whole size; the fsync
    // then holds the file for 2 s.
    let all_in = wait_until(GET_WAIT, || {
        b.state().is_some_and(|s| {
            s["transfers"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["bytes_done"] == data.len() as u64))
        })
    });
    assert!(
        all_in,
        "the transfer never showed every byte\n{}",
        log_tail(&b)
    );
    assert!(
        b.lines().iter().all(|l| !l.contains("get: saved")),
        "saved before exit: the slow fsync was not in effect"
    );
    // The first `exit` says what is in flight and asks again.
    b.send_line("exit");
    assert!(
        b.wait_line(0, "type exit again to quit", GET_WAIT)
            .is_some(),
        "{}",
        log_tail(&b)
    );
    b.send_line("exit");
    let status = b.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        log_tail(&b)
    );
    assert_eq!(read(&b.dir.join("late.bin")), data);
    assert_no_temp_files_remain(&b);
    let meta = metadata(&b.dir).expect("metadata saved");
    assert!(meta.get(&id).is_some(), "{meta}");
}

// ---- 6. auto-fetch beside the menu -----------------------------------------

/// A GET_FILE handler serving `files` (id -> (record, bytes)) slowly: the hex
/// goes out in 20 pieces 100 ms apart (about 2 s a file), then the
/// connection is closed.
fn serve_slowly(files: Arc<Vec<(Value, Vec<u8>)>>) -> impl Fn(&Value, TcpStream, &AtomicBool) {
    move |req, mut conn, stop| {
        use std::io::Write;
        let Some((rec, data)) = files.iter().find(|(r, _)| r["file_id"] == req["file_id"]) else {
            reply_and_close(conn, &file_not_found());
            return;
        };
        let msg = file_data(rec, data);
        let piece = msg.len().div_ceil(20);
        for chunk in msg.chunks(piece) {
            if stop.load(Ordering::SeqCst) || conn.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        reply_and_close(conn, b"");
    }
}

#[test]
fn auto_fetch_fetches_while_the_menu_answers_at_once() {
    let files: Vec<(Value, Vec<u8>)> = (0..5)
        .map(|i| {
            let data = pattern(500 + i, 96 * 1024);
            (
                file_record(&format!("f{i}.bin"), &data, "holder", 1_700_000_100 + i),
                data,
            )
        })
        .collect();
    let files = Arc::new(files);
    let records: Vec<Value> = files.iter().map(|(r, _)| r.clone()).collect();
    let a = FakeHolder::start(
        "holder",
        records,
        FakeStyle::default(),
        serve_slowly(files.clone()),
    );

    let mut b = PeerBuilder::new("bravo")
        .well_known(a.port)
        .args(&["--auto-fetch", "3", "--peer-timeout", "60"])
        .spawn();
    assert!(
        wait_until(WAIT, || b
            .state()
            .is_some_and(|s| !s["transfers"].as_array().unwrap().is_empty())),
        "auto-fetch never started\n{}",
        log_tail(&b)
    );
    let skip = b.line_count();
    let asked = Instant::now();
    b.send_line("peers");
    let header = b.wait_line(skip, "LAST SEEN", Duration::from_secs(1));
    let answered = asked.elapsed();
    assert!(
        header.is_some(),
        "`peers` not answered within 1 s\n{}",
        log_tail(&b)
    );
    eprintln!("`peers` answered in {answered:?} during auto-fetch");
    let row = b.wait_line(skip, "holder  127.0.0.1:", Duration::from_secs(1));
    assert!(row.is_some(), "no row for the fake peer\n{}", log_tail(&b));
    let lines = b.lines();
    let header_at = lines.iter().position(|l| l.contains("LAST SEEN")).unwrap();
    assert!(
        !lines[..header_at]
            .iter()
            .any(|l| l.contains("auto-fetch: done")),
        "the fetches were over before `peers` was answered"
    );

    let done = b
        .wait_line(skip, "auto-fetch: done", GET_WAIT)
        .unwrap_or_else(|| panic!("no auto-fetch: done line\n{}", log_tail(&b)));
    assert!(
        done.starts_with("auto-fetch: done, fetched 3 of 3 files"),
        "{done}"
    );
    // A sync point: everything printed before `transfers` answers is in.
    let sync = b.line_count();
    b.send_line("transfers");
    b.wait_line(sync, "no transfers in progress", WAIT)
        .expect("transfers answers");
    let dones = b
        .lines()
        .iter()
        .filter(|l| l.contains("auto-fetch: done"))
        .count();
    assert_eq!(dones, 1);

    let held = data_files(&b.dir);
    assert_eq!(held.len(), 3, "{held:?}");
    for name in &held {
        let (_, data) = files
            .iter()
            .find(|(r, _)| r["file_name"] == name.as_str())
            .unwrap_or_else(|| panic!("unexpected file {name}"));
        assert_eq!(&read(&b.dir.join(name)), data, "{name}");
    }
    let local = b.files().iter().filter(|f| f["local"] == true).count();
    assert_eq!(local, 3);
}

// ---- 7. crash mid-download --------------------------------------------------

#[test]
fn kill_9_during_a_download_leaves_no_partial_under_a_final_name() {
    const SIZE: u64 = 128 * 1024 * 1024;
    let fake_id = sha256_hex(b"a file that is never sent whole");
    let record = json!({"file_name": "huge.iso", "file_size": SIZE, "file_id": fake_id,
        "file_owner": "trickler", "file_timestamp": 1_700_000_000u64});
    let rec = record.clone();
    // Sends the envelope, then 64 KiB of hex every 20 ms, never the end.
    let fake = FakeHolder::start(
        "trickler",
        vec![record],
        FakeStyle::default(),
        move |_, mut conn, stop| {
            use std::io::Write;
            let head = file_data(&rec, b"");
            let head = &head[..head.len() - 2]; // up to `"data":"`
            if conn.write_all(head).is_err() {
                return;
            }
            let hex = vec![b'a'; 64 * 1024];
            let until = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                if conn.write_all(&hex).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        },
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = storage_in(&tmp);
    let mut d = PeerBuilder::new("downloader")
        .storage(&dir)
        .args(&QUIET)
        .spawn();
    fake.send_gossip_reply(d.p2p_port).unwrap();
    wait_known(&d, &fake_id, &["trickler"]);
    d.send_line(&format!("get {}", &fake_id[..10]));
    let mut partial_len = 0;
    assert!(
        wait_until(WAIT, || {
            partial_len = partial_files(&dir)
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0);
            partial_len >= 256 * 1024
        }),
        "the download never wrote a temp file\n{}",
        log_tail(&d)
    );
    d.kill(); // SIGKILL
    assert!(!d.alive());
    assert!(partial_len < SIZE);

    assert!(
        !dir.join("huge.iso").exists(),
        "a partial file under its final name"
    );
    assert_eq!(data_files(&dir), Vec::<String>::new());
    let leftovers = partial_files(&dir);
    assert!(
        !leftovers.is_empty(),
        "expected the crash to leave a temp file"
    );
    if dir.join("metadata.json").exists() {
        let m: Value = serde_json::from_slice(&read(&dir.join("metadata.json")))
            .expect("metadata.json parses after SIGKILL");
        if let Some(e) = m.get(&fake_id) {
            assert_eq!(e["has_copy"], "no", "{e}");
        }
    }
    drop(d);

    let d2 = PeerBuilder::new("downloader")
        .storage(&dir)
        .args(&QUIET)
        .spawn();
    // (The metadata writer's own temp files may come and go meanwhile.)
    let survived: Vec<&PathBuf> = leftovers.iter().filter(|p| p.exists()).collect();
    assert!(
        survived.is_empty(),
        "temp files survived a restart: {survived:?}"
    );
    assert!(
        d2.log().contains("partial files left by an earlier run"),
        "{}",
        log_tail(&d2)
    );
    assert_eq!(data_files(&dir), Vec::<String>::new());
    assert!(d2.files().iter().all(|f| f["local"] == false));
}

// ---- 8. Python-style framing ------------------------------------------------

#[test]
fn a_python_style_fake_peer_exchanges_files_both_ways() {
    // The peershare side holds hello.txt from the start.
    let tmp = tempfile::tempdir().unwrap();
    let dir = storage_in(&tmp);
    let hello = b"hello from peershare\n".repeat(100);
    std::fs::write(dir.join("hello.txt"), &hello).unwrap();
    let mut p = PeerBuilder::new("rusty")
        .storage(&dir)
        .args(&["--peer-timeout", "60"])
        .spawn();

    // The Python side: id hashed with the int text, timestamp re-stored as a
    // float, size in MB with an exponent, an A-style `peers` list inside.
    let py = b"print('hello from python')\n".repeat(3);
    let py_id = file_id(&py, "1744169352");
    let record: Value = serde_json::from_str(&format!(
        r#"{{"file_name": "py.txt", "file_size": 8.1e-05, "file_id": "{py_id}", "file_owner": "pyfake", "file_timestamp": 1744169352.0, "peers": ["pyfake"]}}"#
    ))
    .unwrap();
    let reply = format!(
        r#"{{"type": "FILE_DATA", "file_id": "{py_id}", "file_name": "py.txt", "file_owner": "pyfake", "file_timestamp": 1744169352.0, "file_size": 8.1e-05, "data": "{}"}}"#,
        faster_hex::hex_string(&py)
    );
    // When the client closed after our reply (None: not yet).
    let closed: Arc<Mutex<Option<(bool, Duration)>>> = Arc::default();
    let seen = closed.clone();
    let fake = FakeHolder::start(
        "pyfake",
        vec![record],
        FakeStyle {
            newline: true,
            ..FakeStyle::default()
        },
        move |_, mut conn, stop| {
            use std::io::Write;
            conn.write_all(reply.as_bytes()).unwrap();
            let sent = Instant::now();
            // Like R and A servers: never close; wait for the client to.
            let r = read_until_eof(&mut conn, Duration::from_secs(10), stop);
            *seen.lock().unwrap() = Some((r.eof, sent.elapsed()));
        },
    );

    // GOSSIP in, GOSSIP_REPLY back to the port named inside.
    fake.send_gossip(p.p2p_port).unwrap();
    let reply = fake
        .wait_message("GOSSIP_REPLY", WAIT)
        .unwrap_or_else(|| panic!("no GOSSIP_REPLY\n{}", log_tail(&p)));
    assert_eq!(reply["peerId"], "rusty");
    assert_eq!(reply["port"], p.p2p_port);
    let theirs = reply["files"][0].clone();
    assert_eq!(theirs["file_name"], "hello.txt");
    assert!(theirs["file_timestamp"].is_u64(), "{theirs}");
    assert_eq!(theirs["file_size"], hello.len());
    let hello_id = theirs["file_id"].as_str().unwrap().to_string();

    // peershare gets py.txt: it must stop at the closing brace, verify with
    // the int form of the float timestamp, and close.
    let entry = wait_known(&p, &py_id, &["pyfake"]);
    assert_eq!(entry["file_timestamp"].to_string(), "1744169352.0");
    let skip = p.line_count();
    p.send_line(&format!("get {}", &py_id[..10]));
    let saved = get_outcome(&p, skip, "py.txt", GET_WAIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(saved.ends_with(" from pyfake"), "{saved}");
    assert!(!saved.contains("UNVERIFIED"), "{saved}");
    assert_eq!(read(&dir.join("py.txt")), py);
    assert_eq!(p.file_with_id(&py_id).unwrap()["verified"], true);
    assert!(wait_until(WAIT, || closed.lock().unwrap().is_some()));
    let (eof, after) = closed.lock().unwrap().unwrap();
    assert!(
        eof && after < Duration::from_millis(1500),
        "client closed: {eof}, after {after:?}"
    );

    // The fake gets hello.txt A-style: GET_FILE with a newline, then read
    // until EOF, which peershare must send right after the object.
    let mut s = TcpStream::connect(("127.0.0.1", p.p2p_port)).unwrap();
    let req = format!("{{\"type\": \"GET_FILE\", \"file_id\": \"{hello_id}\"}}\n");
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let asked = Instant::now();
    let r = read_until_eof(&mut s, Duration::from_secs(5), &AtomicBool::new(false));
    assert!(
        r.eof,
        "no EOF after FILE_DATA ({} bytes read)",
        r.bytes.len()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "EOF after {:?}",
        asked.elapsed()
    );
    let end = ObjectEnd::default()
        .feed(&r.bytes)
        .expect("one complete object");
    assert!(
        r.bytes[end..].iter().all(u8::is_ascii_whitespace),
        "bytes after the object"
    );
    let msg: Value = serde_json::from_slice(&r.bytes[..end]).unwrap();
    assert_eq!(msg["type"], "FILE_DATA");
    assert_eq!(msg["file_id"], hello_id.as_str());
    assert_eq!(msg["file_size"], hello.len());
    let ts = msg["file_timestamp"].as_u64().expect("integer timestamp");
    let mut data = vec![0u8; hello.len()];
    faster_hex::hex_decode(msg["data"].as_str().unwrap().as_bytes(), &mut data).unwrap();
    assert_eq!(data, hello);
    assert_eq!(file_id(&data, &ts.to_string()), hello_id);
}

// ---- 9. unverifiable ids ----------------------------------------------------

#[test]
fn an_unverifiable_file_is_kept_and_marked_unverified() {
    let bytes = pattern(9, 10_000);
    let odd_id = sha256_hex(b"made by unknown code");
    let record = json!({"file_name": "odd.bin", "file_size": bytes.len(), "file_id": odd_id,
        "file_owner": "oddball", "file_timestamp": 1_700_000_000.0});
    let (rec, data) = (record.clone(), bytes.clone());
    let fake = FakeHolder::start(
        "oddball",
        vec![record],
        FakeStyle::default(),
        move |_, conn, _| reply_and_close(conn, &file_data(&rec, &data)),
    );
    let mut d = PeerBuilder::new("downloader")
        .args(&["--peer-timeout", "60"])
        .spawn();
    fake.send_gossip_reply(d.p2p_port).unwrap();
    wait_known(&d, &odd_id, &["oddball"]);
    let skip = d.line_count();
    d.send_line(&format!("get {}", &odd_id[..10]));
    let saved = get_outcome(&d, skip, "odd.bin", GET_WAIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        saved.ends_with("-- UNVERIFIED: no source sent bytes matching the file id"),
        "{saved}"
    );
    assert!(saved.contains(" from oddball"), "{saved}");
    assert_eq!(read(&d.dir.join("odd.bin")), bytes);
    let e = d.file_with_id(&odd_id).unwrap();
    assert_eq!(
        (e["local"].clone(), e["verified"].clone()),
        (json!(true), json!(false))
    );
    assert!(
        wait_until(WAIT, || metadata(&d.dir)
            .is_some_and(
                |m| m[&odd_id]["verified"] == false && m[&odd_id]["has_copy"] == "yes"
            )),
        "metadata.json does not record the unverified copy"
    );
    let skip = d.line_count();
    d.send_line("list");
    let row = d.wait_line(skip, "odd.bin", WAIT).expect("list row");
    assert!(row.contains("yes (UNVERIFIED)"), "{row}");
}

#[test]
fn a_push_of_a_missing_path_is_refused_and_of_an_empty_folder_stores_nothing() {
    let mut p = PeerBuilder::new("alpha").spawn();
    let src = tempfile::tempdir().unwrap();
    let missing = src.path().join("nope.bin");
    let folder = src.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let cases = [
        (
            &missing,
            format!("push: no such file: {}", missing.display()),
        ),
        // A folder: each regular file directly in it (none here).
        (
            &folder,
            format!("push: published 0 files from {}", folder.display()),
        ),
    ];
    for (path, want) in &cases {
        let skip = p.lines().len();
        p.send_line(&format!("push {}", path.display()));
        let line = p
            .wait_line(skip, "push:", GET_WAIT)
            .unwrap_or_else(|| panic!("no answer to push {}\n{}", path.display(), log_tail(&p)));
        assert_eq!(&line, want);
    }
    // Still serving the menu, and nothing was stored or listed.
    let skip = p.lines().len();
    p.send_line("peers");
    assert!(
        wait_until(GET_WAIT, || p.lines().len() > skip),
        "the menu stopped answering\n{}",
        log_tail(&p)
    );
    assert!(p.files().is_empty(), "{:?}", p.files());
    let stored: Vec<_> = std::fs::read_dir(&p.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The lock, the metadata file and the page's token are the peer's
        // own; a temp file (`.partial-*`) left behind would count.
        .filter(|n| n != ".peershare.lock" && n != "http-token" && !n.starts_with("metadata.json"))
        .collect();
    assert!(stored.is_empty(), "stored: {stored:?}");
}
