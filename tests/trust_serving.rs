//! A served file that changes on disk never harms the peer: it stays up,
//! no client gets a complete FILE_DATA whose bytes don't hash to its id,
//! and the changed file is checked again (kept or no longer shared, with
//! one warn line). Each serving test runs on both paths: a file mapped
//! under a read lease (the normal one) and a file read and checked as it
//! is sent (`PEERSHARE_TEST_NO_LEASES=1`, as for a file that can't be
//! leased). Real processes on 127.0.0.1.
mod support;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::files::*;
use support::*;

const T: Duration = Duration::from_secs(20);
const MIB: u64 = 1024 * 1024;
const NO_LEASES: &str = "PEERSHARE_TEST_NO_LEASES";

/// A peer serving the files in `dir`, on the lease path or the read path.
fn server(dir: &Path, leases: bool) -> PeerProc {
    PeerBuilder::new("server")
        .storage(dir)
        // A slow client must not be dropped as idle while we truncate.
        .args(&["--idle-timeout", "60"])
        .env(NO_LEASES, if leases { "0" } else { "1" })
        .spawn()
}

/// The id of the held file named `name`, once the peer lists it.
fn held_id(p: &PeerProc, name: &str) -> String {
    let mut id = None;
    wait_until(T, || {
        id = p
            .files()
            .into_iter()
            .find(|f| f["file_name"] == name && f["local"] == true)
            .and_then(|f| f["file_id"].as_str().map(String::from));
        id.is_some()
    });
    id.unwrap_or_else(|| panic!("{name} never listed as held: {}", p.log()))
}

fn get_file(port: u16, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let req = format!("{{\"type\": \"GET_FILE\", \"file_id\": \"{id}\"}}\n");
    s.write_all(req.as_bytes()).expect("send GET_FILE");
    s
}

/// Reads `n` bytes (bounded by [`T`]).
fn read_some(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let deadline = Instant::now() + T;
    let mut got = Vec::with_capacity(n);
    let mut buf = vec![0u8; 64 * 1024];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while got.len() < n && Instant::now() < deadline {
        let want = (n - got.len()).min(buf.len());
        match s.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(_) => {}
        }
    }
    got
}

/// The protocol's not-found reply: a FILE_DATA with a null id.
fn is_not_found(v: &serde_json::Value) -> bool {
    v["type"] == "FILE_DATA" && v["file_id"].is_null()
}

/// Whether the log has a WARN line naming `name`.
fn warned_about(p: &PeerProc, name: &str) -> bool {
    p.log()
        .lines()
        .any(|l| l.contains("WARN") && l.contains(name))
}

fn truncation_mid_transfer_leaves_the_peer_up_and_the_reply_unfinished(leases: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.bin");
    // 96 MiB, sparse apart from a header: quick to make and to hash.
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(96 * MIB).unwrap();
    f.write_all_at(b"the head of a large file", 0).unwrap();
    drop(f);
    let mut p = server(&dir, leases);
    let id = held_id(&p, "big.bin");

    let mut client = get_file(p.p2p_port, &id);
    // The serve is under way: its envelope and the first hex arrived.
    let mut seen = ObjectEnd::default();
    let head = read_some(&mut client, 256 * 1024);
    assert!(
        head.starts_with(b"{\"type\":\"FILE_DATA\""),
        "no FILE_DATA started: {}",
        String::from_utf8_lossy(&head[..head.len().min(200)])
    );
    assert_eq!(seen.feed(&head), None);

    // A user truncates it (with a lease held, the kernel holds this open
    // back until the peer has let go of the file).
    let done = Arc::new(AtomicBool::new(false));
    let truncated = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || {
            let r = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(5));
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    // Bounded well below the kernel's 45 s lease-break time.
    assert!(
        wait_until(Duration::from_secs(10), || done.load(Ordering::SeqCst)),
        "the truncation waited on the peer for over 10 s"
    );
    truncated.join().unwrap().expect("truncate");

    // The client reads the rest slowly: the object never closes.
    let stop = AtomicBool::new(false);
    let mut complete = None;
    let deadline = Instant::now() + T;
    let mut eof = false;
    while Instant::now() < deadline && complete.is_none() {
        let chunk = read_some(&mut client, 4 * 1024 * 1024);
        if chunk.is_empty() {
            let rest = read_until_eof(&mut client, Duration::from_millis(500), &stop);
            complete = seen.feed(&rest.bytes);
            eof = rest.eof;
            if eof {
                break;
            }
            continue;
        }
        complete = seen.feed(&chunk);
    }
    assert!(
        complete.is_none(),
        "the client got a complete FILE_DATA of a file that changed"
    );
    assert!(eof, "the peer never ended the unfinished reply");

    assert!(p.alive(), "the peer died: {:?}", p.child.try_wait());
    assert!(p.state().is_some(), "the peer's page stopped answering");
    // The path under test was the one taken.
    let how = if leases {
        "is being changed on disk"
    } else {
        "stopped sending"
    };
    assert!(p.log().contains(how), "{how:?} not in the log: {}", p.log());
    // Checked again: five bytes don't hash to the id, so it is no longer
    // held, with a warn line naming it; the user's file is left as it is.
    assert!(
        wait_until(T, || warned_about(&p, "big.bin")),
        "no warn line names the changed file: {}",
        p.log()
    );
    assert!(
        wait_until(T, || p.file(&id).is_none_or(|f| f["local"] == false)),
        "the changed file is still listed as held"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 5);
    // A later GET_FILE is answered not-found.
    let mut again = get_file(p.p2p_port, &id);
    let reply = read_object(&mut again, T).expect("a reply");
    assert!(is_not_found(&reply), "{reply}");
    assert!(p.alive());
}

#[test]
fn a_file_truncated_while_served_under_a_lease_ends_the_transfer_and_not_the_peer() {
    truncation_mid_transfer_leaves_the_peer_up_and_the_reply_unfinished(true);
}

#[test]
fn a_file_truncated_while_read_for_serving_ends_the_transfer_and_not_the_peer() {
    truncation_mid_transfer_leaves_the_peer_up_and_the_reply_unfinished(false);
}

fn overwrite_between_serves_is_never_served_under_the_old_id(leases: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = pattern(1, 300_000);
    std::fs::write(dir.join("doc.txt"), &bytes).unwrap();
    let mut p = server(&dir, leases);
    let id = held_id(&p, "doc.txt");

    let mut first = get_file(p.p2p_port, &id);
    let reply = read_object(&mut first, T).expect("the first serve");
    assert_eq!(reply["type"], "FILE_DATA");
    assert_eq!(reply["data"].as_str().map(str::len), Some(2 * bytes.len()));

    // Other bytes of the same size, written in place.
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("doc.txt"))
        .unwrap();
    f.write_all_at(&pattern(2, bytes.len()), 0).unwrap();
    drop(f);

    let mut second = get_file(p.p2p_port, &id);
    // Found changed at the serve (its stamp): answered not-found.
    let reply = read_object(&mut second, T).expect("a reply");
    assert!(
        is_not_found(&reply),
        "served after a change: {}",
        reply["file_id"]
    );
    assert!(
        wait_until(T, || warned_about(&p, "doc.txt")),
        "no warn line names the changed file: {}",
        p.log()
    );
    assert!(
        wait_until(T, || p.file(&id).is_none_or(|f| f["local"] == false)),
        "the changed file is still listed as held"
    );
    assert!(p.alive());
}

#[test]
fn a_file_overwritten_in_place_between_serves_is_not_served_under_its_id_with_leases() {
    overwrite_between_serves_is_never_served_under_the_old_id(true);
}

#[test]
fn a_file_overwritten_in_place_between_serves_is_not_served_under_its_id_without_leases() {
    overwrite_between_serves_is_never_served_under_the_old_id(false);
}

#[test]
fn files_changed_while_the_peer_was_down_are_checked_again_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let changed = pattern(3, 200_000);
    let touched = pattern(4, 200_000);
    std::fs::write(dir.join("changed.txt"), &changed).unwrap();
    std::fs::write(dir.join("touched.txt"), &touched).unwrap();
    let mut p = PeerBuilder::new("restarts").storage(&dir).spawn();
    let changed_id = held_id(&p, "changed.txt");
    let touched_id = held_id(&p, "touched.txt");
    let before = p.lines().len();
    p.send_line("exit");
    assert!(
        p.wait_exit(T).is_some_and(|s| s.success()),
        "the peer did not exit cleanly: {:?}",
        p.lines()[before..].to_vec()
    );

    // Down: one file gets other bytes of its size, the other only a new
    // modification time.
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("changed.txt"))
        .unwrap();
    f.write_all_at(&pattern(5, changed.len()), 0).unwrap();
    drop(f);
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("touched.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    drop(f);

    let mut p = PeerBuilder::new("restarts").storage(&dir).spawn();
    assert!(
        wait_until(T, || warned_about(&p, "changed.txt")),
        "no warn line names the file changed while down: {}",
        p.log()
    );
    assert!(
        wait_until(T, || p
            .file(&changed_id)
            .is_none_or(|f| f["local"] == false)),
        "the changed file is still held"
    );
    assert!(
        wait_until(T, || p.log().contains("touched.txt")
            && p.log().contains("still matches")),
        "the touched file was not checked again: {}",
        p.log()
    );
    assert_eq!(
        p.file(&touched_id).map(|f| f["local"].clone()),
        Some(true.into())
    );
    assert!(!warned_about(&p, "touched.txt"), "{}", p.log());
    // It is served again, whole.
    let mut s = get_file(p.p2p_port, &touched_id);
    let reply = read_object(&mut s, T).expect("a reply");
    assert_eq!(reply["file_id"], touched_id.as_str());
    // The user's files are left as they are.
    assert_eq!(
        std::fs::metadata(dir.join("changed.txt")).unwrap().len(),
        changed.len() as u64
    );
    assert!(p.alive());
}
