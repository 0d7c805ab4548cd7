//! The user's machine is sacred: one peer per storage folder, timers and
//! counts in range, and names from the network that can't drive the
//! terminal or forge log lines. Real processes on 127.0.0.1.
mod support;

use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn a_second_peer_on_a_folder_in_use_exits_1_naming_the_folder_and_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shared-storage");
    let mut first = PeerBuilder::new("first").storage(&dir).spawn();
    assert!(
        wait_until(T, || first.state().is_some()),
        "first peer never served its page"
    );
    let dir_text = dir.display().to_string();
    let second = run_binary(
        &[
            "second",
            "127.0.0.1",
            "0",
            "0",
            "--storage-dir",
            &dir_text,
            "--no-well-known",
        ],
        T,
    );
    assert_eq!(second.status.and_then(|s| s.code()), Some(1), "{second:?}");
    let line = second
        .stderr
        .lines()
        .find(|l| l.contains(&dir_text))
        .unwrap_or_else(|| panic!("no line names the folder: {second:?}"));
    assert!(line.contains("in use"), "{line}");
    assert!(line.contains(&format!("pid {}", first.pid())), "{line}");
    assert!(line.contains("peer first"), "{line}");
    assert!(first.alive(), "the first peer must keep running");

    // kill -9: the kernel releases the lock, the folder is usable at once.
    first.kill();
    let mut again = PeerBuilder::new("again").storage(&dir).spawn();
    assert!(
        wait_until(T, || again.state().is_some()),
        "a peer could not start on the folder after the holder died: {}",
        again.log()
    );
    assert!(again.alive());
}

#[test]
fn timers_and_counts_out_of_range_exit_2_with_the_range() {
    for bad in [
        &["--gossip-interval", "1e-9"][..],
        &["--peer-timeout", "0.01"],
        &["--idle-timeout", "100000"],
        &["--auto-fetch", "100000"],
        &["--max-file-size", "0"],
        &["--gossip-interval", "30", "--peer-timeout", "5"],
    ] {
        let mut args = vec!["p", "127.0.0.1", "0", "0", "--no-well-known"];
        args.extend_from_slice(bad);
        let run = run_binary(&args, T);
        assert_eq!(
            run.status.and_then(|s| s.code()),
            Some(2),
            "{bad:?}: {run:?}"
        );
        let err = run.stderr.to_lowercase();
        assert!(
            err.contains("range") || err.contains("must be at least") || err.contains(" in "),
            "{bad:?}: the refusal must say the range: {}",
            run.stderr
        );
    }
}

#[test]
fn control_characters_from_the_network_never_reach_the_terminal_or_the_log_raw() {
    let mut p = PeerBuilder::new("victim").spawn();
    let fake = FakePeer::start();
    let evil_name = "clear\u{1b}[2J\u{1b}]0;pwned\u{07}\nFORGED [ERROR] line\r.txt";
    let evil_peer = "mallory\u{1b}[31m";
    let id = "ab".repeat(32);
    let reply = serde_json::json!({
        "type": "GOSSIP_REPLY",
        "host": "127.0.0.1",
        "port": fake.port,
        "peerId": evil_peer,
        "files": [{
            "file_name": evil_name,
            "file_size": 5,
            "file_id": id,
            "file_owner": evil_peer,
            "file_timestamp": 1_700_000_000u64,
        }],
    });
    send_raw(p.p2p_port, reply.to_string().as_bytes()).unwrap();
    assert!(
        wait_until(T, || p.file(&id).is_some()),
        "the file never reached the catalog: {}",
        p.log()
    );
    let before = p.lines().len();
    p.send_line("list");
    p.send_line("peers");
    p.send_line(&format!("get {}", &id[..8]));
    assert!(
        p.wait_line(before, "FORGED", T).is_some(),
        "list never showed the file"
    );
    // Let the get's failure line (names the file) come out too.
    std::thread::sleep(Duration::from_millis(1500));
    let out = p.lines()[before..].join("\n");
    let log = p.log();
    for (what, text) in [("stdout", &out), ("log", &log)] {
        assert!(!text.contains('\u{1b}'), "raw ESC in {what}:\n{text}");
        assert!(!text.contains('\u{07}'), "raw BEL in {what}:\n{text}");
        assert!(!text.contains('\r'), "raw CR in {what}:\n{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("FORGED")),
            "a network newline started a line in {what}:\n{text}"
        );
    }
    assert!(
        out.contains("\\x1b[2J"),
        "the escape is shown visibly:\n{out}"
    );
    assert!(
        log.contains("\\x1b"),
        "the log shows the escape visibly:\n{log}"
    );
}

#[test]
fn a_failed_metadata_write_is_retried_and_the_exit_line_never_claims_a_save_that_failed() {
    let mut p = PeerBuilder::new("disk").spawn();
    assert!(wait_until(T, || p.state().is_some()), "page never answered");
    // A directory where metadata.json belongs makes every rename onto it fail.
    let meta = p.dir.join("metadata.json");
    let _ = std::fs::remove_file(&meta);
    std::fs::create_dir_all(meta.join("blocker")).unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("new.txt");
    std::fs::write(&file, b"something to save").unwrap();
    p.send_line(&format!("push {}", file.display()));
    assert!(
        wait_until(T, || p.log().contains("cannot write")
            && p.log().contains("retrying")),
        "the failed write was not reported at warn:\n{}",
        p.log()
    );
    // The disk recovers: the write goes through without any new change.
    std::fs::remove_dir_all(&meta).unwrap();
    assert!(
        wait_until(T, || p.log().contains("written again")),
        "the failed write was not retried:\n{}",
        p.log()
    );
    assert!(std::fs::read_to_string(&meta).unwrap().contains("new.txt"));

    // A delete while the write fails: the file stays until the catalog that
    // no longer lists it is on disk.
    std::fs::remove_file(&meta).unwrap();
    std::fs::create_dir_all(meta.join("blocker")).unwrap();
    let id = p
        .files()
        .iter()
        .find(|f| f["file_name"] == "new.txt")
        .and_then(|f| f["file_id"].as_str().map(str::to_string))
        .expect("new.txt listed");
    let skip = p.lines().len();
    p.send_line(&format!("delete {id}"));
    assert!(
        p.wait_line(skip, "delete", T).is_some(),
        "no delete line:\n{}",
        p.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        p.dir.join("new.txt").exists(),
        "the file was unlinked before its catalog was written"
    );
    std::fs::remove_dir_all(&meta).unwrap();
    assert!(
        wait_until(T, || !p.dir.join("new.txt").exists()),
        "the file was not removed once the catalog was written:\n{}",
        p.log()
    );
    assert!(!std::fs::read_to_string(&meta).unwrap().contains("new.txt"));

    // Blocked again at exit: the last line says it was not saved.
    std::fs::remove_file(&meta).unwrap();
    std::fs::create_dir_all(meta.join("blocker")).unwrap();
    std::fs::write(p.dir.join(".partial-left-by-a-transfer"), b"x").unwrap();
    p.send_line("exit");
    assert!(p.wait_exit(T).is_some(), "no exit");
    let log = p.log();
    assert!(log.contains("metadata NOT saved"), "{log}");
    assert!(!log.contains("metadata saved; bye"), "{log}");
    assert!(
        !p.dir.join(".partial-left-by-a-transfer").exists(),
        "a temp file outlived a clean exit"
    );
}
