//! `get <id> DEST` never destroys anything, and a holder whose reply has
//! the wrong number of bytes is not believed. Real processes on 127.0.0.1:
//! a holder with the file, a downloader driven through its menu (stdin),
//! and fake holders written here.
mod support;

use serde_json::{json, Value};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::files::*;
use support::*;

/// Bound for a download that should take a few seconds at most.
const GET_WAIT: Duration = Duration::from_secs(20);

/// A holder with `name` = `content` in its folder, and a downloader that
/// knows the file; returns both and the file's id.
fn holder_and_downloader(name: &str, content: &[u8]) -> (PeerProc, PeerProc, String) {
    let holder = PeerBuilder::new("holder")
        .file(name, content)
        .args(&QUIET)
        .spawn();
    let down = PeerBuilder::new("downloader")
        .well_known(holder.p2p_port)
        .args(&QUIET)
        .spawn();
    let mut id = None;
    let known = wait_until(WAIT, || {
        id = down
            .file_named(name)
            .and_then(|e| e["file_id"].as_str().map(String::from));
        id.is_some()
    });
    assert!(
        known,
        "the downloader never learned {name}\n{}",
        log_tail(&down)
    );
    (holder, down, id.unwrap_or_default())
}

/// Types `line` and returns the menu lines it printed: everything after it
/// up to the answer to a marker command typed next (`get zz-marker`, an
/// unknown id), so "exactly one line" can be checked without sleeping.
fn menu_lines_of(p: &mut PeerProc, line: &str) -> Vec<String> {
    let skip = p.line_count();
    p.send_line(line);
    // The destination is checked off the loop; wait for its answer before
    // the marker, which the loop answers at once.
    let answered = wait_until(GET_WAIT, || {
        p.lines().iter().skip(skip).any(|l| l.starts_with("get: "))
    });
    assert!(answered, "no answer to {line:?}\n{}", log_tail(p));
    p.send_line("get zz-marker");
    let marker = "no known file has an id starting with \"zz-marker\"";
    let mut out = Vec::new();
    let ok = wait_until(GET_WAIT, || {
        let lines: Vec<String> = p.lines().into_iter().skip(skip).collect();
        match lines.iter().position(|l| l.contains(marker)) {
            Some(end) => {
                out = lines[..end].to_vec();
                true
            }
            None => false,
        }
    });
    assert!(ok, "no marker line after {line:?}\n{}", log_tail(p));
    out
}

/// Asserts that `line` printed exactly one line, a refusal containing
/// `needle`, and started no download.
fn refused(p: &mut PeerProc, line: &str, needle: &str) -> String {
    let lines = menu_lines_of(p, line);
    assert_eq!(lines.len(), 1, "{line:?} must print one line: {lines:?}");
    assert!(lines[0].starts_with("get: "), "{lines:?}");
    assert!(lines[0].contains(needle), "{line:?}: {lines:?}");
    lines[0].clone()
}

/// Waits (after stdout line `skip`) for a line starting with `prefix`.
fn wait_prefix(p: &PeerProc, skip: usize, prefix: &str) -> String {
    p.wait_line(skip, prefix, GET_WAIT)
        .filter(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line\n{}", log_tail(p)))
}

/// The files in `p`'s storage folder, without the metadata, temp and lock
/// files.
fn stored_files(p: &PeerProc) -> Vec<String> {
    data_files(&p.dir)
        .into_iter()
        .filter(|n| n != ".peershare.lock")
        .collect()
}

fn mkfifo(path: &Path) -> bool {
    std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes a character device node like /dev/null (1, 3) at `path`, in the
/// test's own folder. Needs root (CAP_MKNOD).
#[allow(unsafe_code)]
fn mknod_null(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let dev = libc::makedev(1, 3);
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

#[test]
fn get_never_replaces_a_fifo_a_device_a_symlink_or_anything_in_the_storage_folder() {
    let content = pattern(11, 4096);
    let (_holder, mut d, id) = holder_and_downloader("notes.txt", &content);
    let out = tempfile::tempdir().unwrap();
    let short = &id[..12];

    // A FIFO: never opened (that would hang the copy), never replaced.
    let fifo = out.path().join("pipe");
    assert!(mkfifo(&fifo), "mkfifo failed");
    for force in ["", " --force"] {
        let line = refused(
            &mut d,
            &format!("get {short} {}{force}", fifo.display()),
            "is a FIFO",
        );
        assert!(line.contains(&fifo.display().to_string()), "{line}");
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // A character device node (1, 3), made by the test in its own folder.
    let dev = out.path().join("null-node");
    match mknod_null(&dev) {
        Ok(()) => {
            for force in ["", " --force"] {
                refused(
                    &mut d,
                    &format!("get {short} {}{force}", dev.display()),
                    "is a character device",
                );
            }
            assert!(std::fs::symlink_metadata(&dev)
                .unwrap()
                .file_type()
                .is_char_device());
        }
        Err(e) => println!(
            "SKIPPED the character-device case: mknod needs root (CAP_MKNOD) and failed here: {e}"
        ),
    }

    // A symlink to a user file: not followed, not replaced.
    let precious = out.path().join("precious.txt");
    std::fs::write(&precious, b"keep me").unwrap();
    let link = out.path().join("link.txt");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    for force in ["", " --force"] {
        refused(
            &mut d,
            &format!("get {short} --force{force} {}", link.display()),
            "is a symbolic link",
        );
    }
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // The storage folder: the folder itself, a new name in it, a stored
    // file even with --force, and the folder reached through a symlink.
    let storage = d.dir.clone();
    let via = out.path().join("to-storage");
    std::os::unix::fs::symlink(&storage, &via).unwrap();
    let before = stored_files(&d);
    for dest in [
        storage.display().to_string(),
        storage.join("new.txt").display().to_string(),
        format!("{} --force", storage.join("metadata.json").display()),
        via.display().to_string(),
        via.join("x.txt").display().to_string(),
    ] {
        refused(&mut d, &format!("get {short} {dest}"), "storage folder");
    }
    assert_eq!(stored_files(&d), before);
    assert!(
        d.lines().iter().all(|l| !l.contains("get: fetching")),
        "a refused get started a download\n{}",
        log_tail(&d)
    );
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".partial-")),
        "{names:?}"
    );
}

#[test]
fn an_existing_file_is_kept_byte_for_byte_unless_force_replaces_it() {
    let content = pattern(12, 200 * 1024);
    let (_holder, mut d, id) = holder_and_downloader("data.bin", &content);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("mine.bin");
    let theirs = b"the user's own bytes\n".to_vec();
    std::fs::write(&dest, &theirs).unwrap();

    let line = refused(
        &mut d,
        &format!("get {} {}", &id[..12], dest.display()),
        "exists; add --force to replace it",
    );
    assert_eq!(
        line,
        format!("get: {} exists; add --force to replace it", dest.display())
    );
    assert_eq!(std::fs::read(&dest).unwrap(), theirs);

    let skip = d.line_count();
    d.send_line(&format!("get {} --force {}", &id[..12], dest.display()));
    let saved = wait_prefix(&d, skip, "get: saved data.bin,");
    assert!(saved.ends_with(" from holder"), "{saved}");
    let replaced = wait_prefix(&d, skip, "get: replaced ");
    assert!(replaced.ends_with(" with data.bin"), "{replaced}");
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["mine.bin"], "no temp file, no second copy");
}

#[test]
fn a_folder_dest_gets_a_visible_free_name_and_keeps_what_is_there() {
    let content = pattern(13, 10 * 1024);
    let (_holder, mut d, id) = holder_and_downloader(".profile", &content);
    let out = tempfile::tempdir().unwrap();

    // The network's name starts with '.': it lands visible, as `profile`.
    let skip = d.line_count();
    d.send_line(&format!("get {} {}", &id[..12], out.path().display()));
    wait_prefix(&d, skip, "get: saved .profile,");
    let copied = wait_prefix(&d, skip, "get: copied .profile to ");
    let first = out.path().join("profile");
    assert!(copied.ends_with(&first.display().to_string()), "{copied}");
    assert_eq!(std::fs::read(&first).unwrap(), content);

    // Again: `profile` is taken, so `profile (2)`; the first is kept.
    std::fs::write(&first, b"edited by the user").unwrap();
    let skip = d.line_count();
    d.send_line(&format!("get {} {}", &id[..12], out.path().display()));
    wait_prefix(&d, skip, "get: already have .profile; copying it to ");
    let copied = wait_prefix(&d, skip, "get: copied .profile to ");
    assert!(copied.ends_with("profile (2)"), "{copied}");
    assert_eq!(std::fs::read(&first).unwrap(), b"edited by the user");
    assert_eq!(
        std::fs::read(out.path().join("profile (2)")).unwrap(),
        content
    );
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["profile", "profile (2)"], "no hidden file");
}

#[test]
fn a_name_collision_in_a_folder_gives_name_2_ext() {
    let content = pattern(14, 8 * 1024);
    let (_holder, mut d, id) = holder_and_downloader("report.pdf", &content);
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("report.pdf"), b"older report").unwrap();
    let skip = d.line_count();
    d.send_line(&format!(
        "get {} {} --force",
        &id[..12],
        out.path().display()
    ));
    wait_prefix(&d, skip, "get: saved report.pdf,");
    let copied = wait_prefix(&d, skip, "get: copied report.pdf to ");
    assert!(copied.ends_with("report (2).pdf"), "{copied}");
    assert_eq!(
        std::fs::read(out.path().join("report.pdf")).unwrap(),
        b"older report",
        "--force never replaces inside a folder DEST"
    );
    assert_eq!(
        std::fs::read(out.path().join("report (2).pdf")).unwrap(),
        content
    );
}

// ---- replies with the wrong number of bytes ------------------------------

/// A downloader that knows `content` as `name` from an honest real holder
/// ("good") and, seen more recently (so tried first), from a fake holder
/// ("liar") that answers GET_FILE with a FILE_DATA of the right id and
/// `liar_bytes` as data. Returns the `get` outcome line and the downloader.
fn get_with_a_liar(name: &str, content: &[u8], liar_bytes: Vec<u8>) -> (String, PeerProc) {
    let gtmp = tempfile::tempdir().unwrap();
    let gdir = gtmp.path().join("storage");
    std::fs::create_dir_all(&gdir).unwrap();
    std::fs::write(gdir.join(name), content).unwrap();
    let good = PeerBuilder::new("good").storage(&gdir).args(&QUIET).spawn();
    let mut d = PeerBuilder::new("downloader")
        .well_known(good.p2p_port)
        .args(&QUIET)
        .spawn();
    let mut entry = None;
    assert!(
        wait_until(WAIT, || {
            entry = d.file_named(name);
            entry.is_some()
        }),
        "never learned {name}\n{}",
        log_tail(&d)
    );
    let entry = entry.unwrap_or_default();
    let record = json!({
        "file_name": entry["file_name"], "file_size": entry["file_size"],
        "file_id": entry["file_id"], "file_owner": entry["file_owner"],
        "file_timestamp": entry["file_timestamp"],
    });
    let id = entry["file_id"].as_str().unwrap_or_default().to_string();
    // Sources are tried most recently seen first (whole milliseconds).
    std::thread::sleep(Duration::from_millis(3));
    let rec = record.clone();
    let liar = FakeHolder::start(
        "liar",
        vec![record],
        FakeStyle::default(),
        move |_req, conn, _stop| reply_and_close(conn, &file_data(&rec, &liar_bytes)),
    );
    liar.send_gossip_reply(d.p2p_port).unwrap();
    assert!(
        wait_until(WAIT, || d.file_with_id(&id).is_some_and(|e| {
            let holders = e["peers_with_file"].as_array().cloned().unwrap_or_default();
            holders.iter().any(|h| h == "liar") && holders.iter().any(|h| h == "good")
        })),
        "never learned the liar holds {name}\n{}",
        log_tail(&d)
    );
    let skip = d.line_count();
    d.send_line(&format!("get {}", &id[..12]));
    let end = wait_until(GET_WAIT, || {
        d.lines()
            .iter()
            .skip(skip)
            .any(|l| l.starts_with("get: saved") || l.starts_with("get: no source left"))
    });
    assert!(end, "no end of the get\n{}", log_tail(&d));
    let line = d
        .lines()
        .into_iter()
        .skip(skip)
        .find(|l| l.starts_with("get: saved") || l.starts_with("get: no source left"))
        .unwrap_or_default();
    let lines: Vec<String> = d.lines().into_iter().skip(skip).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("get: fetching {name}")) && l.ends_with("from liar")),
        "the liar was not tried first: {lines:?}"
    );
    drop(good);
    (line, d)
}

#[test]
fn a_holder_sending_more_bytes_than_advertised_is_cut_off_and_the_download_falls_back() {
    let content = pattern(21, 300 * 1024);
    let mut more = content.clone();
    more.extend_from_slice(&pattern(22, 1024 * 1024));
    let (line, d) = get_with_a_liar("more.bin", &content, more);
    assert!(
        line.starts_with("get: saved more.bin, 300.0 KiB ") && line.ends_with(" from good"),
        "{line}\n{}",
        log_tail(&d)
    );
    assert!(!line.contains("UNVERIFIED"), "{line}");
    assert_eq!(std::fs::read(d.dir.join("more.bin")).unwrap(), content);
    assert_eq!(stored_files(&d), vec!["more.bin"], "one copy");
    assert!(
        d.lines()
            .iter()
            .any(|l| l.starts_with("get: liar (127.0.0.1:")
                && l.contains(" sent more bytes than allowed ")
                && l.contains("; trying good (")),
        "the liar's failure is not said\n{}",
        log_tail(&d)
    );
}

#[test]
fn a_holder_sending_fewer_bytes_than_advertised_fails_and_the_download_falls_back() {
    let content = pattern(23, 300 * 1024);
    let short = content[..content.len() - 1].to_vec();
    let (line, d) = get_with_a_liar("less.bin", &content, short);
    assert!(
        line.starts_with("get: saved less.bin, 300.0 KiB ") && line.ends_with(" from good"),
        "{line}\n{}",
        log_tail(&d)
    );
    assert_eq!(std::fs::read(d.dir.join("less.bin")).unwrap(), content);
    assert_eq!(stored_files(&d), vec!["less.bin"], "one copy");
    assert!(
        d.lines()
            .iter()
            .any(|l| l.starts_with("get: liar (127.0.0.1:")
                && l.contains(" sent 307199 bytes, not the advertised 307200; trying good (")),
        "the liar's failure is not said\n{}",
        log_tail(&d)
    );
}

#[test]
fn a_python_peers_size_in_mb_still_comes_through() {
    // 300 KiB advertised as 0.3 (MB of 2^20 bytes, rounded to one digit),
    // as the Python peers do; the only holder is a fake serving it.
    let content = pattern(24, 300 * 1024);
    let mut record: Value = file_record("py.bin", &content, "pyowner", 1_750_000_000);
    record["file_size"] = json!(0.3);
    let rec = record.clone();
    let data = content.clone();
    let d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    let mut d = d;
    let py = FakeHolder::start(
        "py",
        vec![record.clone()],
        FakeStyle::default(),
        move |_, c, _| reply_and_close(c, &file_data(&rec, &data)),
    );
    py.send_gossip_reply(d.p2p_port).unwrap();
    let id = record["file_id"].as_str().unwrap_or_default().to_string();
    assert!(
        wait_until(WAIT, || d.file_with_id(&id).is_some()),
        "never learned py.bin\n{}",
        log_tail(&d)
    );
    let skip = d.line_count();
    d.send_line(&format!("get {}", &id[..12]));
    let line = wait_prefix(&d, skip, "get: saved py.bin, 300.0 KiB ");
    assert!(line.ends_with(" from py"), "{line}");
    assert!(!line.contains("UNVERIFIED"), "{line}");
    let stored: PathBuf = d.dir.join("py.bin");
    assert_eq!(std::fs::read(stored).unwrap(), content);
}

#[test]
fn a_push_of_the_file_being_downloaded_ends_as_one_copy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let content = pattern(31, 64 * 1024);
    let record = file_record("twice.bin", &content, "owner", 1_750_000_000);
    let id = record["file_id"].as_str().unwrap_or_default().to_string();
    let mut d = PeerBuilder::new("downloader").args(&QUIET).spawn();
    // A holder that answers GET_FILE only once the test lets it: the push
    // lands while the download is in flight.
    let release = Arc::new(AtomicBool::new(false));
    let (rec, data, go) = (record.clone(), content.clone(), release.clone());
    let slow = FakeHolder::start(
        "slow",
        vec![record.clone()],
        FakeStyle::default(),
        move |_, c, stop| {
            wait_until(GET_WAIT, || {
                go.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst)
            });
            reply_and_close(c, &file_data(&rec, &data));
        },
    );
    slow.send_gossip_reply(d.p2p_port).unwrap();
    assert!(
        wait_until(WAIT, || d.file_with_id(&id).is_some()),
        "never learned twice.bin\n{}",
        log_tail(&d)
    );
    let skip = d.line_count();
    d.send_line(&format!("get {}", &id[..12]));
    wait_prefix(&d, skip, "get: fetching twice.bin");
    assert!(
        slow.wait_message("GET_FILE", GET_WAIT).is_some(),
        "no GET_FILE"
    );

    send_raw(d.p2p_port, &file_data(&record, &content)).unwrap();
    let saved = wait_prefix(&d, skip, "get: saved twice.bin, ");
    assert_eq!(
        saved,
        "get: saved twice.bin, 64.0 KiB: a peer pushed it whole while we were fetching it"
    );
    // The download's own connection is closed at once: its bytes would
    // only be discarded (a large file pulled a second time).
    assert!(
        wait_until(WAIT, || d.log().contains(" whose download ended meanwhile")),
        "the superseded fetch was left running\n{}",
        log_tail(&d)
    );
    release.store(true, Ordering::SeqCst);
    assert!(
        wait_until(WAIT, || partial_files(&d.dir).is_empty()),
        "temp files left: {:?}",
        partial_files(&d.dir)
    );
    assert_eq!(stored_files(&d), vec!["twice.bin"], "one copy");
    assert_eq!(std::fs::read(d.dir.join("twice.bin")).unwrap(), content);
    let ends = d
        .lines()
        .iter()
        .skip(skip)
        .filter(|l| l.starts_with("get: saved") || l.starts_with("get: no source left"))
        .count();
    assert_eq!(ends, 1, "one end for one get\n{}", log_tail(&d));

    // Pushed again once held: not stored a second time.
    send_raw(d.p2p_port, &file_data(&record, &content)).unwrap();
    assert!(
        wait_until(WAIT, || d.log().contains("already held or being fetched")),
        "the second push was not dropped\n{}",
        log_tail(&d)
    );
    assert_eq!(stored_files(&d), vec!["twice.bin"], "still one copy");
}
