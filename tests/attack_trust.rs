//! Hostile black-box tests of issue 11 ("trustworthy on the user's own
//! machine and on the network"), written from the issue alone: real peer
//! processes on 127.0.0.1, fake holders written here, FIFOs and symlinks
//! made in the test's own temp folders. Tests marked `#[ignore = "BUG: …"]`
//! reproduce a defect still present.
mod support;

use serde_json::{json, Value};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::files::{data_files, partial_files, pattern, sha256_hex};
use support::procfs::{request, NetFile, Pace};
use support::*;

/// Bound for a download or a menu answer.
const T: Duration = Duration::from_secs(20);

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {} failed", path.display());
}

/// A fake holder ("holder-fake") serving `files` at `pace`, made known to
/// `p` by a GOSSIP_REPLY; waits until `p` lists every file.
fn fake_holder_for(p: &PeerProc, files: &[NetFile], pace: Pace) -> support::procfs::FileServer {
    let server = support::procfs::FileServer::start(pace);
    for f in files {
        server.add(f.clone());
    }
    let records: Vec<Value> = files.iter().map(|f| f.record()).collect();
    let reply = json!({"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": server.port,
        "peerId": "holder-fake", "files": records});
    send_raw(p.p2p_port, reply.to_string().as_bytes()).unwrap();
    for f in files {
        assert!(
            wait_until(T, || p.file_with_id(&f.id).is_some()),
            "{} never learned {:?}\n{}",
            p.id,
            f.name,
            log_tail(p)
        );
    }
    server
}

/// Lines printed after stdout line `skip` that start with "get: ".
fn get_lines(p: &PeerProc, skip: usize) -> Vec<String> {
    p.lines()
        .into_iter()
        .skip(skip)
        .filter(|l| l.starts_with("get: "))
        .collect()
}

/// Whether `p` answers a GOSSIP with a GOSSIP_REPLY within `within`.
fn answers_gossip(p: &PeerProc, within: Duration) -> bool {
    let fake = FakePeer::start();
    let id = format!("probe-{:032x}", rand::random::<u128>());
    let who = format!("prober-{:08x}", rand::random::<u32>());
    send_raw(p.p2p_port, &gossip(&who, fake.port, &id)).unwrap();
    fake.wait_for("GOSSIP_REPLY", within).is_some()
}

/// A GET_FILE for `id` to `port`: the reply, or None on timeout/close.
fn get_file(port: u16, id: &str, within: Duration) -> Option<Value> {
    let msg = json!({"type": "GET_FILE", "file_id": id}).to_string();
    request(port, msg.as_bytes(), within)
}

fn is_not_found(v: &Value) -> bool {
    v["file_id"].is_null() && v["data"].is_null()
}

// ---- get DEST swapped during the download ---------------------------------

#[derive(Clone, Copy, Debug)]
enum Swap {
    /// DEST becomes a symlink to a user file.
    Symlink,
    /// DEST becomes a FIFO (with a reader waiting on it).
    Fifo,
}

/// `get <id> DEST` of a slowly served file; while the download runs the
/// test turns DEST into `swap`. Returns the peer, the out folder and
/// whatever came through the FIFO / the user file afterwards.
fn swap_dest_during_download(swap: Swap, force: bool) {
    let bytes = pattern(41, 128 * 1024);
    let file = NetFile::new("slow.bin", "owner", 1_700_000_000, bytes);
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    // 128 KiB as 256 KiB of hex, 16 KiB every 150 ms: about 2.4 s.
    let _holder = fake_holder_for(
        &d,
        std::slice::from_ref(&file),
        Pace {
            chunk: 16 * 1024,
            pause: Duration::from_millis(150),
        },
    );
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("dest.bin");
    let precious = out.path().join("precious.txt");
    std::fs::write(&precious, b"the user's own bytes").unwrap();
    if force {
        std::fs::write(&dest, b"old dest").unwrap();
    }
    let skip = d.line_count();
    let flag = if force { " --force" } else { "" };
    d.send_line(&format!("get {}{flag} {}", &file.id[..12], dest.display()));
    assert!(
        d.wait_line(skip, "get: fetching", T).is_some(),
        "no download started\n{}",
        log_tail(&d)
    );
    let _ = std::fs::remove_file(&dest);
    let mut reader = None;
    match swap {
        Swap::Symlink => std::os::unix::fs::symlink(&precious, &dest).unwrap(),
        Swap::Fifo => {
            mkfifo(&dest);
            // A reader, so a writer that opens the FIFO does not block
            // and its bytes can be seen.
            reader = Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&dest)
                    .unwrap(),
            );
        }
    }
    // The download ends (saved), then the copy to DEST is done or refused.
    assert!(
        d.wait_line(skip, "get: saved slow.bin", T).is_some(),
        "the download never ended\n{}",
        log_tail(&d)
    );
    let ended = wait_until(Duration::from_secs(10), || {
        get_lines(&d, skip)
            .iter()
            .any(|l| !l.starts_with("get: fetching") && !l.starts_with("get: saved"))
    });
    assert!(
        answers_gossip(&d, Duration::from_secs(1)),
        "the loop is stuck after the swap\n{}",
        log_tail(&d)
    );
    let lines = get_lines(&d, skip);
    assert_eq!(
        std::fs::read(&precious).unwrap(),
        b"the user's own bytes",
        "{swap:?}: the download was written through the symlink into the user's file: {lines:?}"
    );
    let kind = std::fs::symlink_metadata(&dest).unwrap().file_type();
    match swap {
        Swap::Symlink => assert!(
            kind.is_symlink(),
            "the symlink DEST was replaced: {lines:?}"
        ),
        Swap::Fifo => {
            assert!(kind.is_fifo(), "the FIFO DEST was replaced: {lines:?}");
            let mut got = Vec::new();
            let _ = reader.as_mut().unwrap().read_to_end(&mut got);
            assert!(
                got.is_empty(),
                "{} bytes were written into the FIFO: {lines:?}",
                got.len()
            );
        }
    }
    assert!(
        ended,
        "no line says what happened to DEST: {lines:?}\n{}",
        log_tail(&d)
    );
    assert!(d.alive());
}

#[test]
fn a_dest_turned_into_a_symlink_during_the_download_is_never_written_through() {
    swap_dest_during_download(Swap::Symlink, false);
}

#[test]
fn a_forced_dest_turned_into_a_symlink_during_the_download_is_never_written_through() {
    swap_dest_during_download(Swap::Symlink, true);
}

#[test]
fn a_dest_turned_into_a_fifo_during_the_download_is_never_written_and_never_hangs() {
    swap_dest_during_download(Swap::Fifo, false);
}

// ---- get DEST spellings ---------------------------------------------------

#[test]
fn a_dest_with_a_trailing_slash_never_becomes_a_file_of_that_name() {
    let bytes = pattern(42, 4096);
    let file = NetFile::new("plain.txt", "owner", 1_700_000_000, bytes.clone());
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    let _h = fake_holder_for(&d, std::slice::from_ref(&file), Pace::FULL);
    let out = tempfile::tempdir().unwrap();
    let missing = out.path().join("newdir");
    let skip = d.line_count();
    d.send_line(&format!("get {} {}/", &file.id[..12], missing.display()));
    let answered = wait_until(T, || {
        get_lines(&d, skip)
            .iter()
            .any(|l| !l.starts_with("get: fetching") && !l.starts_with("get: saved"))
    });
    assert!(answered, "no answer\n{}", log_tail(&d));
    thread::sleep(Duration::from_millis(500));
    // Either a folder `newdir` holding plain.txt, or a refusal; never a
    // regular file named `newdir` (the user said it is a folder).
    if let Ok(meta) = std::fs::symlink_metadata(&missing) {
        assert!(
            meta.is_dir(),
            "`{}/` became a regular file: {:?}",
            missing.display(),
            get_lines(&d, skip)
        );
    }
}

#[test]
fn dest_dot_and_dotdot_never_put_a_file_outside_or_hidden() {
    let bytes = pattern(43, 2048);
    let file = NetFile::new("dots.txt", "owner", 1_700_000_000, bytes.clone());
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    let _h = fake_holder_for(&d, std::slice::from_ref(&file), Pace::FULL);
    let root = tempfile::tempdir().unwrap();
    let inner = root.path().join("a").join("b");
    std::fs::create_dir_all(&inner).unwrap();
    for dest in [
        format!("{}/.", inner.display()),
        format!("{}/..", inner.display()),
    ] {
        let skip = d.line_count();
        d.send_line(&format!("get {} {dest}", &file.id[..12]));
        let answered = wait_until(T, || {
            get_lines(&d, skip).iter().any(|l| {
                l.starts_with("get: copied")
                    || (l.starts_with("get: ")
                        && !l.contains("saved")
                        && !l.contains("already have")
                        && !l.contains("fetching"))
            })
        });
        assert!(answered, "{dest}: no answer\n{}", log_tail(&d));
    }
    thread::sleep(Duration::from_millis(300));
    // "dir/." is dir, "dir/.." is its parent: the copies land there as
    // dots.txt, never as a hidden file and never as "." or "..".
    assert_eq!(std::fs::read(inner.join("dots.txt")).unwrap(), bytes);
    assert_eq!(
        std::fs::read(root.path().join("a").join("dots.txt")).unwrap(),
        bytes
    );
}

// ---- network names into a folder DEST -------------------------------------

#[test]
fn hostile_network_names_land_visible_and_inside_the_folder_dest() {
    let names = [
        "..",
        ".",
        "",
        "/",
        "../../escape.txt",
        "a/b/../../../up.txt",
        "~",
        "~/.bashrc",
        "-rf",
        ".hidden",
        "...",
        "con",
        " .spaced",
        "trail.",
        "name\u{0}nul",
        "x".repeat(400).as_str(),
        "\u{202e}txt.exe",
        "metadata.json",
        "metadata.json.tmp",
        ".peershare.lock",
        ".partial-0001",
    ]
    .map(String::from);
    let files: Vec<NetFile> = names
        .iter()
        .enumerate()
        .map(|(i, n)| NetFile::new(n, "owner", 1_700_000_000, pattern(100 + i as u64, 64 + i)))
        .collect();
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    let _h = fake_holder_for(&d, &files, Pace::FULL);
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for f in &files {
        let skip = d.line_count();
        d.send_line(&format!("get {} {}", &f.id[..16], out.display()));
        let answered = wait_until(T, || {
            get_lines(&d, skip).iter().any(|l| {
                l.starts_with("get: copied")
                    || l.starts_with("get: no source left")
                    || l.contains("cannot")
            })
        });
        assert!(answered, "{:?}: no end\n{}", f.name, log_tail(&d));
        assert!(d.alive(), "{:?} killed the peer", f.name);
    }
    thread::sleep(Duration::from_millis(300));
    // Nothing beside `out` in the root; nothing hidden, no folder, no
    // "."/".." inside it; every file's bytes landed under some name.
    let beside: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, vec!["out"], "something landed outside the folder");
    let mut landed = Vec::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let ty = e.file_type().unwrap();
        assert!(ty.is_file(), "{name:?} is not a regular file");
        assert!(
            !name.starts_with('.'),
            "hidden file {name:?} in the folder DEST"
        );
        assert!(name.len() <= 255);
        landed.push(std::fs::read(e.path()).unwrap());
    }
    for f in &files {
        assert!(
            landed.iter().any(|b| b == f.bytes.as_ref()),
            "the file named {:?} never landed: {:?}\n{}",
            f.name,
            get_lines(&d, 0),
            log_tail(&d)
        );
    }
    // The storage folder holds only regular files, and its own files
    // (metadata, lock, temp files) are untouched by network names.
    let stored: Vec<String> = std::fs::read_dir(&d.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    println!("stored: {stored:?}");
    assert!(stored
        .iter()
        .all(|n| n != "." && n != ".." && !n.contains('/')));
    assert!(
        wait_until(T, || std::fs::read(d.dir.join("metadata.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(
                |m| m.is_object() && m.as_object().unwrap().len() >= files.len()
            )),
        "metadata.json is not the catalog"
    );
    for n in data_files(&d.dir) {
        assert!(!n.starts_with(".partial-"), "{n:?}");
        assert!(d.dir.join(&n).is_file(), "{n:?}");
    }
}

// ---- content that doesn't match its id ------------------------------------

/// A tracked fake peer: it GOSSIPs to `p` so `p` tracks it and sends it
/// ANNOUNCEs.
fn tracked_listener(p: &PeerProc, who: &str) -> FakePeer {
    let fake = FakePeer::start();
    send_raw(p.p2p_port, &gossip(who, fake.port, &format!("{who}-g1"))).unwrap();
    assert!(
        wait_until(T, || p.peer_ids().iter().any(|x| x == who)),
        "{who} never tracked\n{}",
        log_tail(p)
    );
    fake
}

/// Asserts that `p` never spreads `id`: not served, not in a GOSSIP_REPLY,
/// not announced to `listener`.
fn assert_never_spread(p: &PeerProc, id: &str, listener: &FakePeer, when: &str) {
    let reply = get_file(p.p2p_port, id, Duration::from_secs(5));
    assert!(
        reply.as_ref().is_some_and(is_not_found),
        "{when}: GET_FILE of the unverified copy was answered with {:?}",
        reply.map(|r| {
            let mut r = r;
            r["data"] = json!("…");
            r
        })
    );
    let fake = FakePeer::start();
    let gid = format!("ask-{:032x}", rand::random::<u128>());
    send_raw(p.p2p_port, &gossip("asker", fake.port, &gid)).unwrap();
    let r = fake
        .wait_for("GOSSIP_REPLY", Duration::from_secs(5))
        .expect("no GOSSIP_REPLY");
    let listed = r["files"]
        .as_array()
        .is_some_and(|fs| fs.iter().any(|f| f["file_id"] == id));
    assert!(
        !listed,
        "{when}: our GOSSIP_REPLY lists the unverified copy: {r}"
    );
    let announced = listener
        .of_type("ANNOUNCE")
        .into_iter()
        .any(|m| m["file_id"] == id);
    assert!(!announced, "{when}: the unverified copy was announced");
}

#[test]
fn a_copy_of_the_right_size_with_the_wrong_bytes_is_never_spread_even_after_a_restart() {
    let real = pattern(44, 5000);
    let forged = pattern(45, 5000);
    let mut file = NetFile::new("forged.bin", "owner", 1_700_000_000, real);
    file.bytes = Arc::new(forged.clone());
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("storage");
    let mut d = PeerBuilder::new("downloader")
        .storage(&dir)
        .args(&QUIET)
        .spawn();
    let listener = tracked_listener(&d, "listener");
    let h = fake_holder_for(&d, std::slice::from_ref(&file), Pace::FULL);
    let skip = d.line_count();
    d.send_line(&format!("get {}", &file.id[..12]));
    let saved = d
        .wait_line(skip, "get: saved forged.bin", T)
        .unwrap_or_else(|| panic!("no save\n{}", log_tail(&d)));
    assert!(saved.contains("UNVERIFIED"), "{saved}");
    drop(h);
    thread::sleep(Duration::from_millis(500));
    assert_never_spread(&d, &file.id, &listener, "after the download");
    let e = d.file_with_id(&file.id).unwrap();
    assert_eq!(e["verified"], json!(false), "{e}");

    // Restart on the same folder: still unverified, still never spread.
    d.signal(libc::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    drop(d);
    let mut d = PeerBuilder::new("downloader")
        .storage(&dir)
        .args(&QUIET)
        .spawn();
    let listener = tracked_listener(&d, "listener2");
    thread::sleep(Duration::from_millis(1000));
    assert_never_spread(&d, &file.id, &listener, "after a restart");
    // Whatever id the copy is known by now, no entry we serve holds the
    // forged bytes under the forged id, and no new id for those bytes was
    // minted with us as its owner and announced.
    for ann in listener.of_type("ANNOUNCE") {
        assert_ne!(
            ann["file_name"], "forged.bin",
            "announced after restart: {ann}"
        );
    }
    let skip = d.line_count();
    d.send_line("list");
    let row = d
        .wait_line(skip, "forged.bin", T)
        .unwrap_or_else(|| panic!("list lost the copy\n{}", log_tail(&d)));
    assert!(row.contains("UNVERIFIED"), "after a restart: {row}");
}

#[test]
fn a_push_with_the_wrong_bytes_is_never_spread() {
    let real = pattern(46, 3000);
    let mut file = NetFile::new("pushed-forged.bin", "mallory", 1_700_000_000, real);
    file.bytes = Arc::new(pattern(47, 3000));
    let d = PeerBuilder::new("victim").args(&QUIET).spawn();
    let listener = tracked_listener(&d, "listener");
    let stop = AtomicBool::new(false);
    support::procfs::push_file(d.p2p_port, &file, Pace::FULL, &stop).unwrap();
    assert!(
        wait_until(T, || d.file_with_id(&file.id).is_some()
            || d.log().contains("pushed-forged.bin")),
        "the push left no trace\n{}",
        log_tail(&d)
    );
    thread::sleep(Duration::from_millis(1000));
    assert_never_spread(&d, &file.id, &listener, "after the push");
}

#[test]
fn a_push_larger_than_max_file_size_never_reaches_the_disk() {
    let file = NetFile::new("big.bin", "mallory", 1_700_000_000, pattern(48, 64 * 1024));
    let d = PeerBuilder::new("victim")
        .args(&QUIET)
        .args(&["--max-file-size", "1000"])
        .spawn();
    let listener = tracked_listener(&d, "listener");
    let stop = AtomicBool::new(false);
    let _ = support::procfs::push_file(d.p2p_port, &file, Pace::FULL, &stop);
    thread::sleep(Duration::from_millis(1500));
    assert!(data_files(&d.dir).is_empty(), "{:?}", data_files(&d.dir));
    assert!(partial_files(&d.dir).is_empty());
    assert!(
        d.file_with_id(&file.id)
            .is_none_or(|e| e["local"] != json!(true)),
        "the oversize push is held"
    );
    assert!(listener.of_type("ANNOUNCE").is_empty());
    assert!(answers_gossip(&d, Duration::from_secs(1)));
}

// ---- a served file that changes on disk ------------------------------------

/// A server peer holding `name` = `bytes`; its id for that file.
fn server_with(name: &str, bytes: &[u8]) -> (PeerProc, String) {
    let p = PeerBuilder::new("server")
        .file(name, bytes)
        .args(&QUIET)
        .spawn();
    let mut id = None;
    assert!(wait_until(T, || {
        id = p
            .file_named(name)
            .and_then(|e| e["file_id"].as_str().map(String::from));
        id.is_some()
    }));
    (p, id.unwrap())
}

#[test]
fn a_held_file_replaced_by_a_symlink_to_a_secret_never_serves_the_secret() {
    let bytes = pattern(49, 4096);
    let (p, id) = server_with("shared.txt", &bytes);
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, b"TOP SECRET ssh key material\n").unwrap();
    let path = p.dir.join("shared.txt");
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&secret, &path).unwrap();
    let reply = get_file(p.p2p_port, &id, Duration::from_secs(5));
    let secret_hex = faster_hex::hex_string(b"TOP SECRET ssh key material\n");
    if let Some(r) = &reply {
        assert_ne!(
            r["data"],
            json!(secret_hex),
            "the symlink's target was served"
        );
        if !is_not_found(r) {
            let data = faster_hex::hex_string(&bytes);
            assert_eq!(
                r["data"],
                json!(data),
                "bytes under the id that don't hash to it"
            );
        }
    }
    assert!(answers_gossip(&p, Duration::from_secs(1)));
}

#[test]
fn a_held_file_replaced_by_a_fifo_never_blocks_the_peer() {
    let bytes = pattern(50, 4096);
    let (mut p, id) = server_with("shared.txt", &bytes);
    let path = p.dir.join("shared.txt");
    std::fs::remove_file(&path).unwrap();
    mkfifo(&path);
    // The GET_FILE runs in a thread: it may never be answered.
    let port = p.p2p_port;
    let id2 = id.clone();
    let answer = thread::spawn(move || get_file(port, &id2, Duration::from_secs(5)));
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert!(
        answers_gossip(&p, Duration::from_secs(1)),
        "GOSSIP unanswered while a FIFO sits under a held name\n{}",
        log_tail(&p)
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let reply = answer.join().unwrap();
    if let Some(r) = reply {
        assert!(is_not_found(&r), "served something from a FIFO");
    }
    // A second request is answered too (nothing stuck open on the FIFO).
    assert!(
        get_file(p.p2p_port, &id, Duration::from_secs(5)).is_some_and(|r| is_not_found(&r)),
        "a GET_FILE after the FIFO swap is not answered not-found\n{}",
        log_tail(&p)
    );
    assert!(p.alive());
}

#[test]
fn a_held_file_rewritten_in_place_with_its_old_mtime_is_never_served_under_its_id() {
    let bytes = pattern(51, 8192);
    let (p, id) = server_with("same.bin", &bytes);
    // Served once, so any cached stamp is fresh.
    let first = get_file(p.p2p_port, &id, Duration::from_secs(5)).unwrap();
    assert_eq!(first["data"], json!(faster_hex::hex_string(&bytes)));
    let path = p.dir.join("same.bin");
    let meta = std::fs::metadata(&path).unwrap();
    let mtime = meta.modified().unwrap();
    // Same inode, same size, same mtime (as `rsync --inplace -t` or
    // `cp -p` over it would leave it): only the bytes differ.
    let other = pattern(52, 8192);
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&other).unwrap();
        f.sync_all().unwrap();
        f.set_modified(mtime).unwrap();
    }
    let r = get_file(p.p2p_port, &id, Duration::from_secs(5)).expect("no answer");
    assert_ne!(
        r["data"],
        json!(faster_hex::hex_string(&other)),
        "bytes that don't hash to the id were served under it"
    );
}

// ---- terminal-safe output -------------------------------------------------

#[test]
fn c1_controls_bidi_and_separators_never_reach_the_terminal_or_the_log_raw() {
    let mut p = PeerBuilder::new("victim").args(&QUIET).spawn();
    let evil_peer = "peer\u{9b}31m\u{7f}\u{2028}x\u{85}y\u{202e}";
    let evil_name = "n\u{9b}2J\u{9d}0;t\u{7}\u{2029}z\u{202e}gpj\u{2067}\u{200f}.exe\u{0}";
    let id = "cd".repeat(32);
    let fake = FakePeer::start();
    send_raw(p.p2p_port, &gossip(evil_peer, fake.port, "g-1")).unwrap();
    let reply = json!({"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": fake.port,
        "peerId": evil_peer, "files": [{"file_name": evil_name, "file_size": 5,
        "file_id": id, "file_owner": evil_peer, "file_timestamp": 1_700_000_000u64}]});
    send_raw(p.p2p_port, reply.to_string().as_bytes()).unwrap();
    let ann = json!({"type": "ANNOUNCE", "from": "ann\u{1b}c\u{9b}1;1H", "file_name": evil_name,
        "file_size": 5, "file_id": "ef".repeat(32), "file_owner": "o\u{9b}K",
        "file_timestamp": 1_700_000_000u64});
    send_raw(p.p2p_port, ann.to_string().as_bytes()).unwrap();
    assert!(wait_until(T, || p.file(&id).is_some()), "{}", log_tail(&p));
    let skip = p.line_count();
    p.send_line("list");
    p.send_line("peers");
    p.send_line(&format!("get {}", &id[..8]));
    p.send_line("transfers");
    p.send_line(&format!("delete {}", &id[..8]));
    thread::sleep(Duration::from_millis(2500));
    let out = p.lines()[skip..].join("\n");
    let log = p.log();
    let mut found = Vec::new();
    for (what, text) in [("stdout", &out), ("log", &log)] {
        for bad in [
            '\u{9b}', '\u{9d}', '\u{85}', '\u{7f}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{2067}',
            '\u{200f}', '\u{7}', '\u{0}', '\u{1b}',
        ] {
            if let Some(i) = text.find(bad) {
                let ctx: String = text[i.saturating_sub(40)..].chars().take(80).collect();
                found.push(format!("raw U+{:04X} in {what}: …{ctx}…", bad as u32));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_network_name_never_injects_markup_into_the_stats_page() {
    let p = PeerBuilder::new("victim").args(&QUIET).spawn();
    let fake = FakePeer::start();
    let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let id = "ab".repeat(32);
    let reply = json!({"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": fake.port,
        "peerId": evil, "files": [{"file_name": evil, "file_size": 5,
        "file_id": id, "file_owner": evil, "file_timestamp": 1_700_000_000u64}]});
    send_raw(p.p2p_port, reply.to_string().as_bytes()).unwrap();
    assert!(wait_until(T, || p.file(&id).is_some()), "{}", log_tail(&p));
    let page = String::from_utf8_lossy(&http_get(p.http_port, "/").expect("page")).into_owned();
    assert!(
        !page.contains("<script>alert"),
        "raw markup from the network in the page"
    );
    assert!(
        !page.contains("<img src=x"),
        "raw markup from the network in the page"
    );
}

// ---- flags ------------------------------------------------------------------

#[test]
fn weird_flag_values_exit_2_with_a_line() {
    let cases: &[&[&str]] = &[
        &["--gossip-interval", "NaN"],
        &["--gossip-interval", "nan"],
        &["--gossip-interval", "inf"],
        &["--gossip-interval", "-inf"],
        &["--gossip-interval", "-0"],
        &["--gossip-interval", "1e400"],
        &["--gossip-interval", "-1"],
        &["--gossip-interval", ""],
        &["--gossip-interval", "0x10"],
        &["--peer-timeout", "NaN"],
        &["--peer-timeout", "1e400"],
        &["--connect-timeout", "nan"],
        &["--connect-timeout", "inf"],
        &["--idle-timeout", "NaN"],
        &["--idle-timeout", "-0.0"],
        &["--max-file-size", "18446744073709551616"],
        &["--max-file-size", "-1"],
        &["--max-file-size", "1e3"],
        &["--max-file-size", "99999999999999999999999"],
        &["--auto-fetch", "-1"],
        &["--auto-fetch", "4294967296"],
        &["--auto-fetch", "18446744073709551615"],
        &["--seed", "-1"],
        &["--seed", "99999999999999999999999"],
        &["--log-level", "verbose"],
        &["--gossip-interval"],
    ];
    let mut bad = Vec::new();
    for case in cases {
        let mut args = vec!["p", "127.0.0.1", "0", "0", "--no-well-known"];
        args.extend_from_slice(case);
        let run = run_binary(&args, Duration::from_secs(5));
        let code = run.status.and_then(|s| s.code());
        let one_line = run.stderr.trim().lines().count() >= 1 && !run.stderr.contains("panicked");
        if code != Some(2) || !one_line {
            bad.push(format!("{case:?}: exit {code:?}, stderr {:?}", run.stderr));
        }
    }
    for ports in [["70000", "0"], ["0", "-1"], ["0", "65536"], ["1e3", "0"]] {
        let args = ["p", "127.0.0.1", ports[0], ports[1], "--no-well-known"];
        let run = run_binary(&args, Duration::from_secs(5));
        if run.status.and_then(|s| s.code()) != Some(2) {
            bad.push(format!("ports {ports:?}: {:?}", run.status));
        }
    }
    assert!(bad.is_empty(), "accepted or crashed:\n{}", bad.join("\n"));
}

// ---- one peer per folder ----------------------------------------------------

#[test]
fn a_second_peer_on_the_same_folder_spelled_differently_exits_1() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    let link = root.path().join("via-link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let mut first = PeerBuilder::new("first").storage(&dir).spawn();
    let spellings = [
        format!("{}/", dir.display()),
        format!("{}/.", dir.display()),
        format!("{}/./", dir.display()),
        format!("{}/../store", dir.display()),
        link.display().to_string(),
        format!("{}/", link.display()),
    ];
    for s in &spellings {
        let run = run_binary(
            &[
                "second",
                "127.0.0.1",
                "0",
                "0",
                "--no-well-known",
                "--storage-dir",
                s,
            ],
            Duration::from_secs(5),
        );
        assert_eq!(
            run.status.and_then(|st| st.code()),
            Some(1),
            "second peer on {s:?}: {run:?}"
        );
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains(&first.pid().to_string()) && said.contains("first"),
            "the refusal on {s:?} does not name the running peer: {said}"
        );
    }
    assert!(first.alive());
    assert!(answers_gossip(&first, Duration::from_secs(1)));
    assert!(first.lines().iter().all(|l| !l.contains("panicked")));
}

// ---- not a reflector ----------------------------------------------------------

/// A listener on 127.0.0.1 that counts the connections it accepts and the
/// `type` of the message each carries (read to its closing brace, bounded).
struct Victim {
    port: u16,
    accepted: Arc<AtomicUsize>,
    kinds: Arc<std::sync::Mutex<Vec<(Duration, String)>>>,
    stop: Arc<AtomicBool>,
}

impl Victim {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let kinds = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, k, st) = (accepted.clone(), kinds.clone(), stop.clone());
        let t0 = Instant::now();
        thread::spawn(move || {
            for c in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = c else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let k = k.clone();
                thread::spawn(move || {
                    let at = t0.elapsed();
                    // GOSSIPs split into forwards of what was injected and
                    // the peer's own (rounds, retransmissions, catch-ups).
                    let kind = read_object(&mut c, Duration::from_secs(2))
                        .map(|v| match (v["type"].as_str(), v["id"].as_str()) {
                            (Some("GOSSIP"), Some(id)) if id.starts_with("inject-") => {
                                "GOSSIP forwarded".to_string()
                            }
                            (Some("GOSSIP"), _) => "GOSSIP own".to_string(),
                            (Some(t), _) => t.to_string(),
                            _ => "?".into(),
                        })
                        .unwrap_or_else(|| "?".into());
                    k.lock().unwrap().push((at, kind));
                });
            }
        });
        Self {
            port,
            accepted,
            kinds,
            stop,
        }
    }
    /// How many connections carried each message type.
    fn breakdown(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for (_, k) in self.kinds.lock().unwrap().iter() {
            *m.entry(k.clone()).or_insert(0) += 1;
        }
        m
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Injects `n` GOSSIPs (fresh ids, fresh peerIds) naming a victim's
/// host:port into a peer started with `timers`, waits `settle`, and
/// returns the connections the victim got and their breakdown.
fn reflection(timers: &[&str], n: usize, settle: Duration) -> (usize, String) {
    let p = PeerBuilder::new("reflector").args(timers).spawn();
    let victim = Victim::start();
    for i in 0..n {
        let g = gossip(
            &format!("fake-{i}"),
            victim.port,
            &format!("inject-{i}-{:x}", rand::random::<u64>()),
        );
        send_raw(p.p2p_port, &g).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(settle);
    let count = victim.accepted.load(Ordering::SeqCst);
    let what = format!("{:?}", victim.breakdown());
    println!("{timers:?}: {count} connections to the victim for {n} injected GOSSIPs: {what}");
    drop(p);
    (count, what)
}

#[test]
#[ignore = "LIMIT: with 2 s rounds the per-destination dial limit scales up 15x and the first 3 rounds ask unanswered peers as before: 4.9 connections per injected GOSSIP (was 14); the network's 30 s rounds give at most 1 (the next test)"]
fn gossips_naming_a_victim_open_at_most_one_connection_each_to_it() {
    // Short timers: every round, retransmission and catch-up goes out
    // and the invented peers time out within the wait.
    at_most_one_connection_each(&["--gossip-interval", "2", "--peer-timeout", "6"], 12);
}

/// 60 GOSSIPs naming a victim, with these timers, open at most 60
/// connections to it within `wait_secs`.
fn at_most_one_connection_each(timers: &[&str], wait_secs: u64) {
    let n = 60;
    let (count, what) = reflection(timers, n, Duration::from_secs(wait_secs));
    assert!(
        count <= n,
        "{count} connections to the victim for {n} injected GOSSIPs ({:.2} each): {what}",
        count as f64 / n as f64
    );
}

#[test]
fn gossips_naming_a_victim_open_at_most_one_connection_each_to_it_with_default_timers() {
    if !support::long_run(
        "the default-timers reflection test",
        "30 s of real gossip timers",
    ) {
        return;
    }
    at_most_one_connection_each(&["--gossip-interval", "30", "--peer-timeout", "60"], 30);
}

// ---- SIGTERM under a flood --------------------------------------------------

#[test]
fn sigterm_under_a_flood_of_gossip_and_pushes_exits_0_within_2_s_and_leaves_no_partial() {
    let mut p = PeerBuilder::new("flooded").args(&QUIET).spawn();
    let port = p.p2p_port;
    let stop = Arc::new(AtomicBool::new(false));
    let mut floods = Vec::new();
    // Slow, never-ending pushes: each leaves a partial file on disk.
    for i in 0..4u64 {
        let st = stop.clone();
        floods.push(thread::spawn(move || {
            let f = NetFile::new(
                &format!("push{i}.bin"),
                "m",
                1_700_000_000,
                pattern(60 + i, 4 << 20),
            );
            // The flood can fill the connection cap before our first bytes
            // are read, and a connection not yet moving a file may be the
            // one closed to make room: push again until stopped.
            while !st.load(Ordering::SeqCst) {
                let pushed = support::procfs::push_file(
                    port,
                    &f,
                    Pace {
                        chunk: 64 * 1024,
                        pause: Duration::from_millis(20),
                    },
                    &st,
                );
                if pushed.is_err() {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }
    for t in 0..2u64 {
        let st = stop.clone();
        floods.push(thread::spawn(move || {
            let mut i = 0u64;
            while !st.load(Ordering::SeqCst) {
                let g = gossip(&format!("f{t}-{i}"), 9, &format!("fl-{t}-{i}"));
                let _ = send_raw(port, &g);
                i += 1;
            }
        }));
    }
    // Bounded generously: on a loaded machine the flood can keep the pushes'
    // first bytes waiting a while.
    assert!(
        wait_until(Duration::from_secs(30), || !partial_files(&p.dir)
            .is_empty()
            || p.log().contains("push")),
        "the pushes never started\n{}",
        log_tail(&p)
    );
    let t0 = Instant::now();
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(5));
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    for f in floods {
        let _ = f.join();
    }
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", log_tail(&p));
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    assert!(
        partial_files(&p.dir).is_empty(),
        "{:?}",
        partial_files(&p.dir)
    );
    let meta = std::fs::read(p.dir.join("metadata.json")).expect("metadata.json");
    assert!(
        serde_json::from_slice::<Value>(&meta).is_ok(),
        "metadata.json does not parse"
    );
}

// ---- memory: holders flood -----------------------------------------------------

#[test]
#[ignore = "BUG: a one-client flood of 20 000 ANNOUNCEs (18 KB each) still overflows the listen queue now and then (backlog 1024, debug build): 1 of 18 GOSSIPs answered in 1.04 s"]
fn an_announce_flood_from_twenty_thousand_invented_holders_stays_small_and_gossip_is_answered_within_1_s(
) {
    let p = PeerBuilder::new("victim").args(&QUIET).spawn();
    let pid = p.pid();
    let sampler = support::procfs::RssSampler::start(pid, Duration::from_millis(15));
    // ANNOUNCEs from 20 000 invented holders of 50 files, long `from`s.
    let ids: Vec<String> = (0..50)
        .map(|i| sha256_hex(format!("f{i}").as_bytes()))
        .collect();
    let port = p.p2p_port;
    let sender = thread::spawn(move || {
        for h in 0..20_000usize {
            let from = format!("{h:06}{}", "h".repeat(1000));
            let ann = json!({"type": "ANNOUNCE", "from": from, "file_name": "n".repeat(16000),
                "file_size": 1, "file_id": ids[h % 50], "file_owner": "o".repeat(1000),
                "file_timestamp": 1_700_000_000u64});
            let _ = send_raw(port, ann.to_string().as_bytes());
        }
    });
    let overflows_before = listen_overflows();
    let mut slow = Vec::new();
    while !sender.is_finished() {
        let t = Instant::now();
        if !answers_gossip(&p, Duration::from_secs(3)) {
            slow.push(None);
        } else {
            slow.push(Some(t.elapsed()));
        }
        thread::sleep(Duration::from_millis(300));
    }
    sender.join().unwrap();
    let peak = sampler.stop();
    let worst = slow
        .iter()
        .map(|s| s.unwrap_or(Duration::MAX))
        .max()
        .unwrap_or_default();
    let late = slow
        .iter()
        .filter(|s| s.is_none_or(|d| d >= Duration::from_secs(1)))
        .count();
    println!(
        "peak RssAnon {peak} KiB; {} GOSSIP probes, {late} at 1 s or more, worst {worst:?}; \
         listen-queue overflows on this host meanwhile: {}",
        slow.len(),
        listen_overflows().saturating_sub(overflows_before)
    );
    assert!(peak < 64 * 1024, "peak RssAnon {peak} KiB");
    assert!(
        late == 0,
        "{late} of {} GOSSIPs not answered within 1 s during the flood (worst {worst:?})",
        slow.len()
    );
}

/// The host's count of connections dropped because a listen queue was
/// full (TcpExt ListenOverflows), or 0 if unreadable.
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

// ---- more holders and pushers -------------------------------------------------

#[test]
fn a_forged_push_of_an_id_we_hold_never_replaces_the_good_copy() {
    let good = pattern(70, 6000);
    let (p, id) = server_with("held.bin", &good);
    let e = p.file_with_id(&id).unwrap();
    let mut forged = NetFile::new(
        "held.bin",
        e["file_owner"].as_str().unwrap(),
        0,
        pattern(71, 6000),
    );
    forged.id = id.clone();
    forged.ts = e["file_timestamp"].to_string();
    let stop = AtomicBool::new(false);
    let _ = support::procfs::push_file(p.p2p_port, &forged, Pace::FULL, &stop);
    thread::sleep(Duration::from_millis(1000));
    let r = get_file(p.p2p_port, &id, Duration::from_secs(5)).expect("no answer");
    assert_eq!(
        r["data"],
        json!(faster_hex::hex_string(&good)),
        "the held copy is no longer served as it was"
    );
    assert_eq!(std::fs::read(p.dir.join("held.bin")).unwrap(), good);
    assert_eq!(
        data_files(&p.dir),
        vec!["held.bin"],
        "a second copy was stored"
    );
}

#[test]
fn pushes_named_like_the_peers_own_files_never_touch_them() {
    let p = PeerBuilder::new("victim").args(&QUIET).spawn();
    let stop = AtomicBool::new(false);
    let token_before = {
        let path = p.dir.join("http-token");
        assert!(wait_until(T, || path.exists()), "no token file");
        std::fs::read(&path).expect("token")
    };
    let names = [
        "metadata.json",
        ".peershare.lock",
        "metadata.json.tmp",
        ".partial-push",
        "../metadata.json",
        "http-token",
    ];
    for (i, n) in names.iter().enumerate() {
        let f = NetFile::new(
            n,
            "mallory",
            1_700_000_000,
            format!("not json {i} {{").into_bytes(),
        );
        support::procfs::push_file(p.p2p_port, &f, Pace::FULL, &stop).unwrap();
    }
    assert!(
        wait_until(T, || data_files(&p.dir).len() >= names.len()),
        "the pushes were not stored: {:?}\n{}",
        data_files(&p.dir),
        log_tail(&p)
    );
    thread::sleep(Duration::from_millis(500));
    let meta = std::fs::read(p.dir.join("metadata.json")).expect("metadata.json");
    let meta: Value = serde_json::from_slice(&meta).expect("metadata.json is no longer JSON");
    assert!(meta.is_object());
    assert_eq!(
        std::fs::read(p.dir.join("http-token")).expect("token"),
        token_before,
        "the page's token is untouched"
    );
    // The lock is still held: a second peer on the folder exits 1.
    let run = run_binary(
        &[
            "second",
            "127.0.0.1",
            "0",
            "0",
            "--no-well-known",
            "--storage-dir",
            &p.dir.display().to_string(),
        ],
        Duration::from_secs(5),
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(1), "{run:?}");
    assert!(partial_files(&p.dir).is_empty() || wait_until(T, || partial_files(&p.dir).is_empty()));
}

#[test]
fn get_force_onto_a_hard_link_of_a_stored_file_never_changes_the_stored_file() {
    let content = pattern(72, 50_000);
    let file = NetFile::new("linked.bin", "owner", 1_700_000_000, content.clone());
    let keep = pattern(73, 9000);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("storage");
    let mut d = PeerBuilder::new("downloader")
        .storage(&dir)
        .file("mine.txt", &keep)
        .args(&QUIET)
        .spawn();
    let _h = fake_holder_for(&d, std::slice::from_ref(&file), Pace::FULL);
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let link = out.join("hard.bin");
    std::fs::hard_link(dir.join("mine.txt"), &link).unwrap();
    let skip = d.line_count();
    d.send_line(&format!(
        "get {} --force {}",
        &file.id[..12],
        link.display()
    ));
    let ended = wait_until(T, || {
        get_lines(&d, skip)
            .iter()
            .any(|l| !l.starts_with("get: fetching") && !l.starts_with("get: saved"))
    });
    assert!(ended, "no answer\n{}", log_tail(&d));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read(dir.join("mine.txt")).unwrap(),
        keep,
        "the stored file was written through a hard link: {:?}",
        get_lines(&d, skip)
    );
    // The user's own file is still served, as it was (its bytes never
    // changed; a re-check may take a moment).
    let mine = d.file_named("mine.txt").unwrap();
    let mine_id = mine["file_id"].as_str().unwrap().to_string();
    let want = json!(faster_hex::hex_string(&keep));
    let mut last = Value::Null;
    let served = wait_until(Duration::from_secs(5), || {
        last = get_file(d.p2p_port, &mine_id, Duration::from_secs(5)).unwrap_or_default();
        last["data"] == want
    });
    last["data"] = json!("…");
    assert!(
        served,
        "the stored file is no longer served after `get --force` onto a hard link of it: {last}\n{}",
        log_tail(&d)
    );
}

#[test]
fn the_folder_scan_never_opens_a_fifo_nor_adopts_a_symlink_to_a_secret() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("storage");
    std::fs::create_dir(&dir).unwrap();
    mkfifo(&dir.join("pipe"));
    let secret = root.path().join("secret");
    std::fs::write(&secret, b"TOP SECRET").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("link")).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub").join("inner"), b"inner").unwrap();
    std::fs::write(dir.join("real.txt"), b"real").unwrap();
    let p = PeerBuilder::new("scanner")
        .storage(&dir)
        .args(&QUIET)
        .spawn();
    assert!(
        answers_gossip(&p, Duration::from_secs(1)),
        "{}",
        log_tail(&p)
    );
    assert!(
        wait_until(T, || p.file_named("real.txt").is_some()),
        "{}",
        log_tail(&p)
    );
    let names: Vec<String> = p
        .files()
        .iter()
        .filter_map(|f| f["file_name"].as_str().map(String::from))
        .collect();
    for n in ["pipe", "link", "inner", "sub"] {
        assert!(!names.iter().any(|x| x == n), "{n} was adopted: {names:?}");
    }
    // Nothing held serves the secret.
    for f in p.files() {
        let r = get_file(
            p.p2p_port,
            f["file_id"].as_str().unwrap(),
            Duration::from_secs(5),
        );
        assert_ne!(
            r.map(|r| r["data"].clone()),
            Some(json!(faster_hex::hex_string(b"TOP SECRET")))
        );
    }
    assert!(std::fs::symlink_metadata(dir.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(dir.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn absurd_api_paging_parameters_are_answered_and_cost_nothing() {
    let p = PeerBuilder::new("victim").args(&QUIET).spawn();
    for q in [
        "offset=18446744073709551615&limit=18446744073709551615",
        "offset=-1&limit=-1",
        "offset=NaN&limit=1e9",
        "limit=0",
        "offset=99999999999999999999999999",
        "offset=&limit=",
        "offset=1&offset=2&limit=%00",
    ] {
        let path = format!("/api/state?{q}");
        let mut s = TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        use std::io::Write;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(
            buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.1 400"),
            "{q}: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        );
    }
    let mut p = p;
    assert!(p.alive());
    assert!(answers_gossip(&p, Duration::from_secs(1)));
    assert!(support::procfs::rss_anon_kib(p.pid()).unwrap() < 64 * 1024);
}

// ---- a liar rewriting what the catalog says about someone else's file ----------

/// A real holder of `name`, a downloader that knows it, then a liar's
/// ANNOUNCE of the same id with `lie` merged into the record; returns the
/// `get` outcome line at the downloader.
fn get_after_a_lying_announce(name: &str, lie: Value) -> (String, PeerProc) {
    let content = pattern(80, 20_000);
    let good = PeerBuilder::new("good")
        .file(name, &content)
        .args(&QUIET)
        .spawn();
    let mut d = PeerBuilder::new("downloader")
        .well_known(good.p2p_port)
        .args(&QUIET)
        .spawn();
    let mut entry = None;
    assert!(wait_until(T, || {
        entry = d.file_named(name);
        entry.is_some()
    }));
    let entry = entry.unwrap();
    let id = entry["file_id"].as_str().unwrap().to_string();
    let mut ann = json!({"type": "ANNOUNCE", "from": "liar", "file_name": entry["file_name"],
        "file_size": entry["file_size"], "file_id": id, "file_owner": entry["file_owner"],
        "file_timestamp": entry["file_timestamp"]});
    for (k, v) in lie.as_object().unwrap() {
        ann[k] = v.clone();
    }
    send_raw(d.p2p_port, ann.to_string().as_bytes()).unwrap();
    assert!(
        wait_until(T, || d
            .file_with_id(&id)
            .is_some_and(|e| e["peers_with_file"]
                .as_array()
                .is_some_and(|h| h.iter().any(|x| x == "liar")))),
        "the ANNOUNCE was not taken\n{}",
        log_tail(&d)
    );
    let skip = d.line_count();
    d.send_line(&format!("get {}", &id[..12]));
    assert!(
        wait_until(T, || d.lines().iter().skip(skip).any(|l| l
            .starts_with("get: saved")
            || l.starts_with("get: no source left"))),
        "no end of the get\n{}",
        log_tail(&d)
    );
    let line = d
        .lines()
        .into_iter()
        .skip(skip)
        .find(|l| l.starts_with("get: saved") || l.starts_with("get: no source left"))
        .unwrap();
    assert_eq!(
        std::fs::read(d.dir.join(name)).ok(),
        Some(content),
        "{line}\n{}",
        log_tail(&d)
    );
    drop(good);
    (line, d)
}

#[test]
fn a_liars_announce_with_a_bigger_or_smaller_size_never_blocks_the_honest_copy() {
    for size in [json!(1), json!(20_000_000u64)] {
        let (line, d) = get_after_a_lying_announce("sized.bin", json!({"file_size": size}));
        assert!(
            line.starts_with("get: saved sized.bin") && !line.contains("UNVERIFIED"),
            "size {size}: {line}\n{}",
            log_tail(&d)
        );
    }
}

#[test]
fn a_liars_announce_with_another_timestamp_never_makes_the_honest_copy_unverified() {
    let (line, d) =
        get_after_a_lying_announce("stamped.bin", json!({"file_timestamp": 1_234_567_890u64}));
    assert!(
        line.starts_with("get: saved stamped.bin"),
        "{line}\n{}",
        log_tail(&d)
    );
    assert!(
        !line.contains("UNVERIFIED"),
        "the honest copy is unverified: {line}\n{}",
        log_tail(&d)
    );
}

// ---- push of things that are not regular files ----------------------------------

/// Makes a character device node (major, minor) at `path` in the test's own
/// folder; Err when not allowed here (needs CAP_MKNOD).
fn mknod_char(path: &Path, major: u32, minor: u32) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

#[test]
fn push_of_a_fifo_a_device_or_a_folder_is_one_refusal_and_never_hangs_or_fills_the_disk() {
    let mut p = PeerBuilder::new("pusher").args(&QUIET).spawn();
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe");
    mkfifo(&fifo);
    let folder = tmp.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let mut targets = vec![fifo.clone(), folder.clone()];
    // A node like /dev/zero (1, 5), made in our own folder: pushing it
    // would read forever.
    let zero = tmp.path().join("zero-node");
    match mknod_char(&zero, 1, 5) {
        Ok(()) => targets.push(zero.clone()),
        Err(e) => println!("SKIPPED the device case: mknod failed here: {e}"),
    }
    for t in &targets {
        let skip = p.line_count();
        p.send_line(&format!("push {}", t.display()));
        let answered = wait_until(Duration::from_secs(5), || {
            p.lines().iter().skip(skip).any(|l| l.starts_with("push"))
        });
        assert!(
            answers_gossip(&p, Duration::from_secs(1)),
            "push {} froze the loop\n{}",
            t.display(),
            log_tail(&p)
        );
        let lines: Vec<String> = p.lines().into_iter().skip(skip).collect();
        assert!(
            answered,
            "push {}: no answer: {lines:?}\n{}",
            t.display(),
            log_tail(&p)
        );
    }
    thread::sleep(Duration::from_millis(1500));
    let stored: u64 = std::fs::read_dir(&p.dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        stored < 1 << 20,
        "{stored} bytes landed in the storage folder"
    );
    assert!(data_files(&p.dir).is_empty(), "{:?}", data_files(&p.dir));
    let out = p.lines().join("\n");
    assert!(
        !out.contains("pushed "),
        "a non-regular file was pushed:\n{out}"
    );
    assert!(p.alive());
}

// ---- exit while things run ------------------------------------------------------

#[test]
fn exit_during_a_download_and_a_copy_to_dest_leaves_no_temp_file_but_the_one_kept_to_resume() {
    let big = pattern(90, 24 << 20);
    let file = NetFile::new("big.bin", "owner", 1_700_000_000, big.clone());
    let slow = NetFile::new("slow.bin", "owner", 1_700_000_000, pattern(91, 1 << 20));
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    let fast = fake_holder_for(&d, std::slice::from_ref(&file), Pace::FULL);
    let skip = d.line_count();
    d.send_line(&format!("get {}", &file.id[..12]));
    assert!(
        d.wait_line(skip, "get: saved big.bin", T).is_some(),
        "{}",
        log_tail(&d)
    );
    drop(fast);
    let _slow_holder = fake_holder_for(
        &d,
        std::slice::from_ref(&slow),
        Pace {
            chunk: 8 * 1024,
            pause: Duration::from_millis(100),
        },
    );
    let out = tempfile::tempdir().unwrap();
    let skip = d.line_count();
    d.send_line(&format!("get {}", &slow.id[..12]));
    assert!(
        d.wait_line(skip, "get: fetching slow.bin", T).is_some(),
        "{}",
        log_tail(&d)
    );
    thread::sleep(Duration::from_millis(300));
    // A 24 MiB copy to DEST, then exit at once (a transfer is in flight:
    // the first `exit` asks, the second quits).
    d.send_line(&format!("get {} {}", &file.id[..12], out.path().display()));
    d.send_line("exit\nexit");
    let status = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", log_tail(&d));
    // The one download in flight keeps its bytes for the next start: its
    // temp file, named in the metadata, is the only one left.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.dir.join("metadata.json")).unwrap()).unwrap();
    let named: Vec<std::path::PathBuf> = meta
        .as_object()
        .unwrap()
        .values()
        .filter_map(|e| e["resume"]["partial"].as_str())
        .map(|n| d.dir.join(n))
        .collect();
    let mut left = partial_files(&d.dir);
    left.retain(|p| !named.contains(p));
    assert!(left.is_empty(), "temp files no metadata names: {left:?}");
    assert!(named.len() <= 1, "{named:?}");
    let left: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for n in &left {
        assert_eq!(
            n, "big.bin",
            "a temp file outlived the exit in DEST's folder: {left:?}"
        );
        assert_eq!(
            std::fs::read(out.path().join(n)).unwrap().len(),
            big.len(),
            "a partial copy under the final name"
        );
    }
}

#[test]
fn get_to_an_unwritable_or_missing_place_is_one_clear_line() {
    let file = NetFile::new("w.bin", "owner", 1_700_000_000, pattern(92, 3000));
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    let _h = fake_holder_for(&d, std::slice::from_ref(&file), Pace::FULL);
    let tmp = tempfile::tempdir().unwrap();
    let regular = tmp.path().join("regular");
    std::fs::write(&regular, b"x").unwrap();
    for dest in [
        tmp.path().join("no").join("such").join("dir").join("f.bin"),
        regular.join("under-a-file.bin"),
        Path::new("/proc/self/status").to_path_buf(),
    ] {
        let skip = d.line_count();
        d.send_line(&format!("get {} {}", &file.id[..12], dest.display()));
        let ended = wait_until(T, || {
            get_lines(&d, skip).iter().any(|l| {
                !l.starts_with("get: fetching")
                    && !l.starts_with("get: saved")
                    && !l.starts_with("get: already have")
            })
        });
        assert!(ended, "{}: no answer\n{}", dest.display(), log_tail(&d));
        assert!(d.alive());
    }
    assert_eq!(std::fs::read(&regular).unwrap(), b"x");
}

#[test]
fn control_characters_in_every_other_field_never_reach_the_log_raw() {
    let p = PeerBuilder::new("victim").args(&QUIET).spawn();
    let fake = FakePeer::start();
    let evil = "E\u{1b}]0;pwn\u{7}\r\nFORGED [WARN] x\u{9b}2J\u{2028}";
    let held = sha256_hex(b"x");
    let msgs = [
        json!({"type": evil, "x": 1}),
        json!({"type": "GOSSIP", "host": "127.0.0.1", "port": fake.port, "id": evil, "peerId": "ok-peer"}),
        json!({"type": "GOSSIP", "host": "127.0.0.1", "port": format!("{}{evil}", fake.port), "id": "g2", "peerId": "p2"}),
        json!({"type": "DELETE", "from": evil, "file_id": evil}),
        json!({"type": "DELETE", "from": evil, "file_id": held}),
        json!({"type": "GET_FILE", "file_id": evil}),
        json!({"type": "ANNOUNCE", "from": "a", "file_name": "n", "file_size": evil, "file_id": evil,
            "file_owner": "o", "file_timestamp": evil}),
        json!({"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": fake.port, "peerId": evil,
            "files": [{"file_name": evil, "file_size": 1, "file_id": evil, "file_owner": evil,
            "file_timestamp": evil}]}),
    ];
    for m in &msgs {
        let _ = send_raw(p.p2p_port, m.to_string().as_bytes());
    }
    // A pushed file with a hostile name and wrong bytes (logged at warn).
    let mut f = NetFile::new(evil, evil, 1_700_000_000, b"abc".to_vec());
    f.bytes = Arc::new(b"xyz".to_vec());
    let stop = AtomicBool::new(false);
    let _ = support::procfs::push_file(p.p2p_port, &f, Pace::FULL, &stop);
    // HTTP: a request line and a header with raw control bytes.
    for req in [
        b"GET /\x1b]0;pwn\x07\r\nFORGED HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /\x1b[2J HTTP/1.1\r\nHost: \x1b[31m\r\n\r\n".to_vec(),
        b"\x1b[2J\x07\x9b\r\n\r\n".to_vec(),
    ] {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", p.http_port)) {
            use std::io::Write;
            let _ = s.write_all(&req);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
    thread::sleep(Duration::from_millis(1500));
    let log = p.log();
    assert!(log.len() > 200, "the peer logged (almost) nothing: {log}");
    let mut found = Vec::new();
    // (U+2028 is covered by the ignored test above.)
    for bad in ['\u{1b}', '\u{7}', '\r', '\u{9b}'] {
        if let Some(i) = log.find(bad) {
            let ctx: String = log[i.saturating_sub(60)..].chars().take(100).collect();
            found.push(format!("raw U+{:04X}: …{ctx:?}…", bad as u32));
        }
    }
    if log.lines().any(|l| l.starts_with("FORGED")) {
        found.push("a line starts with FORGED".into());
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn a_dest_folder_swapped_for_a_symlink_to_the_storage_folder_during_the_download_is_never_written_into(
) {
    let bytes = pattern(93, 128 * 1024);
    let file = NetFile::new("swap.bin", "owner", 1_700_000_000, bytes);
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    let _holder = fake_holder_for(
        &d,
        std::slice::from_ref(&file),
        Pace {
            chunk: 16 * 1024,
            pause: Duration::from_millis(150),
        },
    );
    let out = tempfile::tempdir().unwrap();
    let sub = out.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    for (dest, what) in [
        (sub.join("new.bin"), "a file path"),
        (sub.clone(), "a folder"),
    ] {
        let before = data_files(&d.dir);
        if sub.is_symlink() {
            std::fs::remove_file(&sub).unwrap();
            std::fs::create_dir(&sub).unwrap();
        }
        // Forget the copy the first round saved, so the second downloads again.
        let _ = std::fs::remove_file(d.dir.join("swap.bin"));
        let skip = d.line_count();
        d.send_line(&format!("get {} {}", &file.id[..12], dest.display()));
        let started = wait_until(T, || {
            get_lines(&d, skip)
                .iter()
                .any(|l| l.starts_with("get: fetching") || l.starts_with("get: already have"))
        });
        assert!(started, "{what}: no download\n{}", log_tail(&d));
        std::fs::remove_dir(&sub).unwrap();
        std::os::unix::fs::symlink(&d.dir, &sub).unwrap();
        let ended = wait_until(T, || {
            get_lines(&d, skip).iter().any(|l| {
                !l.starts_with("get: fetching")
                    && !l.starts_with("get: saved")
                    && !l.starts_with("get: already have")
            })
        });
        thread::sleep(Duration::from_millis(300));
        let after = data_files(&d.dir);
        let extra: Vec<&String> = after
            .iter()
            .filter(|n| !before.contains(n) && *n != "swap.bin")
            .collect();
        assert!(
            extra.is_empty(),
            "{what}: the copy went into the storage folder through the swapped DEST as {extra:?}: {:?}",
            get_lines(&d, skip)
        );
        assert!(
            ended,
            "{what}: no line about DEST: {:?}",
            get_lines(&d, skip)
        );
    }
}

// ---- metadata.json built to hurt ---------------------------------------------------

/// Peak resident memory (VmHWM, KiB) of a peer started on `dir`, and
/// whether it answered a GOSSIP within 1 s once up.
fn start_peak_kib(dir: &Path) -> (u64, bool) {
    let t0 = Instant::now();
    let p = PeerBuilder::new("loader")
        .storage(dir)
        .args(&["--log-level", "info"])
        .args(&QUIET)
        .spawn();
    let up = t0.elapsed();
    let answered = answers_gossip(&p, Duration::from_secs(1));
    let hwm = support::procfs::status_kib(p.pid(), "VmHWM").unwrap_or(0);
    println!("started in {up:?}, VmHWM {hwm} KiB");
    (hwm, answered)
}

/// A metadata.json holding `first` (a raw JSON entry body for id "a1")
/// then an ordinary entry.
fn write_metadata(dir: &Path, first: &str) {
    let ok_id = "f".repeat(64);
    let meta = format!(
        r#"{{"a1":{first},"{ok_id}":{{"file_name":"fine.txt","file_size":1,"file_id":"{ok_id}","file_owner":"x","file_timestamp":1,"peers_with_file":["p"],"has_copy":"no"}}}}"#
    );
    std::fs::write(dir.join("metadata.json"), meta).unwrap();
}

#[test]
#[ignore = "BUG: a metadata.json entry with a 100 MB file_name is buffered whole at load: VmHWM 209 MiB (199 MiB over an empty start), though the field cap is 16 KiB"]
fn a_metadata_json_with_a_100_mb_name_loads_in_bounded_memory() {
    let empty = tempfile::tempdir().unwrap();
    let (base, _) = start_peak_kib(&empty.path().join("s"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir(&dir).unwrap();
    let first = format!(
        r#"{{"file_name":"{}","file_size":1,"file_id":"a1","file_owner":"x","file_timestamp":1,"peers_with_file":[],"has_copy":"no"}}"#,
        "n".repeat(100 << 20)
    );
    write_metadata(&dir, &first);
    drop(first);
    let (hwm, answered) = start_peak_kib(&dir);
    println!("VmHWM {hwm} KiB vs {base} KiB for an empty folder");
    assert!(answered, "GOSSIP unanswered after loading");
    assert!(
        hwm.saturating_sub(base) < 64 * 1024,
        "loading the metadata took {} MiB over an empty start",
        hwm.saturating_sub(base) >> 10
    );
}

#[test]
fn a_metadata_json_entry_with_100000_holders_loads_within_5_s() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir(&dir).unwrap();
    let holders: Vec<String> = (0..100_000).map(|i| format!("\"holder-{i:08}\"")).collect();
    let first = format!(
        r#"{{"file_name":"h","file_size":1,"file_id":"a1","file_owner":"x","file_timestamp":1,"peers_with_file":[{}],"has_copy":"no"}}"#,
        holders.join(",")
    );
    write_metadata(&dir, &first);
    let t0 = Instant::now();
    // spawn() itself gives up after 20 s.
    let p = PeerBuilder::new("loader")
        .storage(&dir)
        .args(&["--log-level", "info"])
        .args(&QUIET)
        .spawn();
    let took = t0.elapsed();
    println!("started in {took:?}");
    assert!(took < Duration::from_secs(5), "start took {took:?}");
    assert!(answers_gossip(&p, Duration::from_secs(1)));
    assert!(
        p.file_named("fine.txt").is_some(),
        "the ordinary entry was lost"
    );
}

#[test]
fn a_gossip_reply_whose_records_carry_huge_holder_lists_never_stalls_the_loop() {
    let p = PeerBuilder::new("victim").args(&QUIET).spawn();
    let fake = FakePeer::start();
    // ~3 MB each: a record with 150 000 names in `peers_with_file` and in
    // A-style `peers` (both to be ignored on the wire).
    let names: Vec<String> = (0..150_000).map(|i| format!("h{i:07}")).collect();
    let mut worst = Duration::ZERO;
    for round in 0..3 {
        let reply = json!({"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": fake.port,
            "peerId": format!("big-{round}"), "files": [{"file_name": "x", "file_size": 1,
            "file_id": sha256_hex(format!("r{round}").as_bytes()), "file_owner": "o",
            "file_timestamp": 1, "peers_with_file": names, "peers": names}]});
        send_raw(p.p2p_port, reply.to_string().as_bytes()).unwrap();
        let t = Instant::now();
        assert!(
            answers_gossip(&p, Duration::from_secs(3)),
            "{}",
            log_tail(&p)
        );
        worst = worst.max(t.elapsed());
    }
    println!("worst GOSSIP round trip after a huge-holder reply: {worst:?}");
    assert!(worst < Duration::from_secs(1), "GOSSIP took {worst:?}");
    let e = p
        .file_with_id(&sha256_hex(b"r0"))
        .expect("the record was dropped");
    let holders = e["peers_with_file"]
        .as_array()
        .map(|h| h.len())
        .unwrap_or(0);
    assert!(holders <= 256, "{holders} holders recorded");
}

#[test]
fn sigterm_during_a_slow_start_ends_the_process_within_2_s_and_keeps_metadata_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir(&dir).unwrap();
    let holders: Vec<String> = (0..100_000).map(|i| format!("\"holder-{i:08}\"")).collect();
    let first = format!(
        r#"{{"file_name":"h","file_size":1,"file_id":"a1","file_owner":"x","file_timestamp":1,"peers_with_file":[{}],"has_copy":"no"}}"#,
        holders.join(",")
    );
    write_metadata(&dir, &first);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_peershare"))
        .args([
            "slow",
            "127.0.0.1",
            "0",
            "0",
            "--no-well-known",
            "--storage-dir",
        ])
        .arg(&dir)
        .args(["--log-file"])
        .arg(tmp.path().join("log"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    // SAFETY: kill(2) on our own, not yet reaped, child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let took = t0.elapsed();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("SIGTERM during the load: {status:?} after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM took {took:?} ({status:?})"
    );
    let meta = std::fs::read(dir.join("metadata.json")).unwrap();
    assert!(
        serde_json::from_slice::<Value>(&meta).is_ok(),
        "metadata.json no longer parses"
    );
}

#[test]
fn the_storage_folder_spelled_any_other_way_is_refused_as_dest() {
    let file = NetFile::new("sp.bin", "owner", 1_700_000_000, pattern(95, 2000));
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    let _h = fake_holder_for(&d, std::slice::from_ref(&file), Pace::FULL);
    let st = d.dir.display().to_string();
    let parent = d.dir.parent().unwrap().display().to_string();
    let spellings = [
        format!("{st}//new.bin"),
        format!("{st}/./new.bin"),
        format!(
            "{parent}/../{}/storage/new.bin",
            d.dir
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        ),
        format!("/proc/self/root{st}/new.bin"),
        format!("/proc/{}/root{st}/new.bin", d.pid()),
        format!("{st}/"),
        format!("/{st}"),
    ];
    for dest in &spellings {
        let before = data_files(&d.dir);
        let skip = d.line_count();
        d.send_line(&format!("get {} {dest}", &file.id[..12]));
        let ended = wait_until(T, || {
            get_lines(&d, skip).iter().any(|l| {
                !l.starts_with("get: fetching")
                    && !l.starts_with("get: saved")
                    && !l.starts_with("get: already have")
            })
        });
        assert!(ended, "{dest}: no answer\n{}", log_tail(&d));
        thread::sleep(Duration::from_millis(200));
        let lines = get_lines(&d, skip);
        let extra: Vec<String> = data_files(&d.dir)
            .into_iter()
            .filter(|n| !before.contains(n) && n != "sp.bin")
            .collect();
        assert!(
            extra.is_empty(),
            "{dest}: wrote {extra:?} into the storage folder: {lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("storage folder")),
            "{dest}: not refused as the storage folder: {lines:?}"
        );
    }
}
