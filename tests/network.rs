//! Several real peers (and fake ones) on 127.0.0.1: membership, catalog
//! exchange, failure detection, hostile input, the menu, signals, exit
//! statuses and the Python peers' odd messages and metadata.
mod support;

use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use support::*;

/// The harness's peer timeout (`--peer-timeout 3`).
const PEER_TIMEOUT: Duration = Duration::from_secs(3);

fn holders(file: &Value) -> Vec<String> {
    file["peers_with_file"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Whether `p` lists exactly `others` as peers and each `(file_id, holder)`
/// with `holder` in its peers_with_file.
fn sees(p: &PeerProc, others: &[&str], files: &[(&str, &str)]) -> bool {
    let Some(state) = p.state() else {
        return false;
    };
    let peers: Vec<String> = state["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["peer_id"].as_str().map(String::from))
        .collect();
    let want: Vec<String> = others.iter().map(|s| s.to_string()).collect();
    if sorted(peers) != sorted(want) {
        return false;
    }
    let listed = state["files"].as_array().cloned().unwrap_or_default();
    files.iter().all(|(id, holder)| {
        listed
            .iter()
            .any(|f| f["file_id"] == *id && holders(f).iter().any(|h| h == holder))
    })
}

/// A alone, B and C bootstrapping from A, each holding one file; returns
/// them with the file ids once every peer sees the two others and their
/// files.
fn three_peers() -> ([PeerProc; 3], [String; 3]) {
    let contents: [&[u8]; 3] = [b"alpha's file\n", b"bravo's file\n", b"charlie's file\n"];
    let a = PeerBuilder::new("alpha").file("a.txt", contents[0]).spawn();
    let b = PeerBuilder::new("bravo")
        .well_known(a.p2p_port)
        .file("b.txt", contents[1])
        .spawn();
    let c = PeerBuilder::new("charlie")
        .well_known(a.p2p_port)
        .file("c.txt", contents[2])
        .spawn();
    let peers = [a, b, c];
    // The folder scan gives each file an id; read it from the holder.
    let ids: Vec<String> = peers
        .iter()
        .zip(["a.txt", "b.txt", "c.txt"])
        .map(|(p, name)| {
            let f = p
                .files()
                .into_iter()
                .find(|f| f["file_name"] == name)
                .unwrap_or_else(|| panic!("{} does not list its own {name}", p.id));
            assert_eq!(f["local"], true, "{name} is local at {}", p.id);
            f["file_id"].as_str().expect("file_id").to_string()
        })
        .collect();
    let ids: [String; 3] = ids.try_into().unwrap();
    for (i, p) in peers.iter().enumerate() {
        let others: Vec<&str> = (0..3)
            .filter(|&j| j != i)
            .map(|j| peers[j].id.as_str())
            .collect();
        let files: Vec<(&str, &str)> = (0..3)
            .filter(|&j| j != i)
            .map(|j| (ids[j].as_str(), peers[j].id.as_str()))
            .collect();
        assert!(
            wait_until(WAIT, || sees(p, &others, &files)),
            "{} should list {others:?} and their files {files:?}; state: {:?}\nlog:\n{}",
            p.id,
            p.state(),
            p.log()
        );
    }
    (peers, ids)
}

#[test]
fn three_peers_see_each_other_in_the_stats_api() {
    let ([a, b, c], ids) = three_peers();
    // The file ids are the network's formula over the bytes and mtime.
    for (p, id) in [&a, &b, &c].iter().zip(&ids) {
        let f = p.file(id).expect("own file listed");
        let ts = f["file_timestamp"].to_string();
        let bytes = std::fs::read(p.dir.join(f["file_name"].as_str().unwrap())).unwrap();
        assert_eq!(&file_id(&bytes, &ts), id, "id of {} at {}", f, p.id);
        assert_eq!(f["file_owner"], p.id.as_str());
        assert_eq!(f["file_size"], bytes.len() as u64);
    }
    // A file seen elsewhere keeps the holder's record and is not local.
    let at_b = b.file(&ids[2]).expect("charlie's file at bravo");
    let at_c = c.file(&ids[2]).expect("charlie's file at charlie");
    for field in ["file_name", "file_owner", "file_size", "file_timestamp"] {
        assert_eq!(at_b[field], at_c[field], "{field}");
    }
    assert_eq!(at_b["local"], false);
    assert_eq!(holders(&at_b), vec!["charlie".to_string()]);
}

#[test]
fn a_killed_peer_disappears_from_the_others() {
    let ([a, b, mut c], ids) = three_peers();
    c.kill();
    let killed = Instant::now();
    // peer_timeout + one sweep period (timeout / 4) + margin.
    let bound = PEER_TIMEOUT + PEER_TIMEOUT / 4 + Duration::from_secs(2);
    let gone = |p: &PeerProc| {
        let Some(state) = p.state() else {
            return false;
        };
        let listed = state["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["peer_id"] == "charlie");
        let held = state["files"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| holders(f).iter().any(|h| h == "charlie"));
        !listed && !held
    };
    for p in [&a, &b] {
        assert!(
            wait_until(bound.saturating_sub(killed.elapsed()), || gone(p)),
            "charlie still at {} {:?} after being killed; state: {:?}",
            p.id,
            killed.elapsed(),
            p.state()
        );
    }
    // Not dropped early: it was silent for at least most of the timeout.
    assert!(
        killed.elapsed() >= PEER_TIMEOUT - Duration::from_millis(600),
        "charlie dropped after only {:?}",
        killed.elapsed()
    );
    // The two live peers still track each other and each other's files.
    assert!(
        sees(&a, &["bravo"], &[(&ids[1], "bravo")]),
        "{:?}",
        a.state()
    );
    assert!(
        sees(&b, &["alpha"], &[(&ids[0], "alpha")]),
        "{:?}",
        b.state()
    );
}

/// Sends a GOSSIP from a fake peer and returns the GOSSIP_REPLY it got.
fn gossip_answered(p: &PeerProc, fake: &FakePeer, fake_id: &str, within: Duration) -> Value {
    fake.clear();
    let id = support::chaos::fresh_gossip_id(rand::thread_rng().gen());
    send_raw(p.p2p_port, &gossip(fake_id, fake.port, &id)).expect("send GOSSIP");
    let reply = fake
        .wait_for("GOSSIP_REPLY", within)
        .unwrap_or_else(|| panic!("no GOSSIP_REPLY within {within:?}; log:\n{}", p.log()));
    assert_eq!(reply["peerId"], p.id.as_str());
    assert_eq!(reply["port"], p.p2p_port);
    reply
}

fn stats_page_answers(p: &PeerProc) {
    let started = Instant::now();
    let body = http_get(p.http_port, "/").expect("stats page answers within 2 s");
    assert!(started.elapsed() < Duration::from_secs(2));
    let html = String::from_utf8_lossy(&body);
    assert!(
        html.contains(&format!("Peer Stats for {}", p.id)),
        "page: {html}"
    );
}

#[test]
fn garbage_half_messages_and_idle_connections_do_not_stop_the_peer() {
    let limit = raise_fd_limit(4096);
    let mut p = PeerBuilder::new("sturdy").spawn();
    let fake = FakePeer::start();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);

    // Random garbage, garbage after an opening brace, and a top-level array.
    for _ in 0..20 {
        let len = rng.gen_range(1..4096);
        let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        send_raw(p.p2p_port, &junk).expect("send garbage");
    }
    send_raw(p.p2p_port, b"{\"type\": \"GOSSIP\", \x00\xff\xfe}}}]]]").expect("send");
    send_raw(p.p2p_port, b"[1, 2, 3]").expect("send");
    send_raw(p.p2p_port, b"}{").expect("send");
    // A half message whose sender never finishes nor closes.
    let mut half = TcpStream::connect(("127.0.0.1", p.p2p_port)).expect("connect");
    half.write_all(br#"{"type": "GOSSIP", "host": "127.0.0.1", "port": "#)
        .expect("write half");
    assert!(p.alive());
    stats_page_answers(&p);
    // (Replies are rate-limited per peerId: each check uses a new one.)
    gossip_answered(&p, &fake, "fake-0", Duration::from_secs(2));

    // Idle connections: as many as the fd limit allows, up to 1000.
    let n = 1000.min(limit.saturating_sub(200) as usize);
    assert!(n >= 500, "fd limit {limit} too low for this test");
    let opened = Instant::now();
    let idle = open_idle(p.p2p_port, n);
    stats_page_answers(&p);
    gossip_answered(&p, &fake, "fake-1", Duration::from_secs(2));
    assert!(p.alive());
    // Below the cap nothing is evicted (the read idle timeout is 10 s).
    assert!(opened.elapsed() < Duration::from_secs(8));
    assert_eq!(count_closed(&idle), 0, "idle connections closed early");

    // Past the 1024 cap the longest-idle inbound connections make room.
    let more = open_idle(p.p2p_port, 100);
    stats_page_answers(&p);
    gossip_answered(&p, &fake, "fake-2", Duration::from_secs(2));
    assert!(opened.elapsed() < Duration::from_secs(8));
    if n == 1000 {
        assert!(
            wait_until(Duration::from_secs(2), || count_closed(&idle) >= 70),
            "only {} of the oldest idle connections were evicted",
            count_closed(&idle)
        );
        assert_eq!(
            count_closed(&more),
            0,
            "the newest connections were evicted"
        );
    }
    assert!(p.alive(), "the peer died");
    drop((idle, more, half));
    stats_page_answers(&p);
}

#[test]
fn at_a_1024_file_limit_idle_connections_still_cannot_starve_the_peer() {
    raise_fd_limit(4096);
    let p = PeerBuilder::new("lowfd").spawn();
    // A machine whose default `ulimit -n` is 1024.
    set_fd_limit(p.pid(), 1024);
    let fake = FakePeer::start();
    let _idle = open_idle(p.p2p_port, 1030);
    stats_page_answers(&p);
    gossip_answered(&p, &fake, "fake-lowfd", Duration::from_secs(2));
}

#[test]
fn list_and_peers_answer_over_a_piped_stdin() {
    let a = PeerBuilder::new("holder")
        .file("menu-file.txt", b"on the menu")
        .spawn();
    let mut b = PeerBuilder::new("asker").well_known(a.p2p_port).spawn();
    let id = a.files()[0]["file_id"].as_str().unwrap().to_string();
    assert!(
        wait_until(WAIT, || sees(&b, &["holder"], &[(&id, "holder")])),
        "{:?}",
        b.state()
    );
    let skip = b.lines().len();
    b.send_line("peers");
    let header = b.wait_line(skip, "PEER", WAIT).expect("peers table header");
    assert!(
        header.starts_with("PEER") && header.contains("ADDRESS") && header.contains("LAST SEEN")
    );
    let row = b.wait_line(skip, "holder", WAIT).expect("peers row");
    assert!(
        row.contains(&format!("127.0.0.1:{}", a.p2p_port)) && row.contains("s ago"),
        "{row}"
    );

    let skip = b.lines().len();
    b.send_line("list");
    let header = b
        .wait_line(skip, "PEERS WITH FILE", WAIT)
        .expect("list header");
    assert!(
        header.starts_with("ID  ") && header.contains("NAME") && header.contains("OWNER"),
        "{header}"
    );
    let row = b.wait_line(skip, "menu-file.txt", WAIT).expect("list row");
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(
        row.contains("holder") && row.contains("11 B") && row.contains(" no "),
        "{row}"
    );

    let skip = b.lines().len();
    b.send_line("help");
    assert!(b.wait_line(skip, "commands:", WAIT).is_some());
    assert!(b.wait_line(skip, "get <file_id>", WAIT).is_some());

    let skip = b.lines().len();
    b.send_line("frobnicate now");
    let hint = b.wait_line(skip, "frobnicate", WAIT).expect("hint");
    assert!(
        hint.contains("unknown command") && hint.contains("help"),
        "{hint}"
    );
    assert!(b.alive());
}

#[test]
fn the_peer_keeps_running_with_stdin_at_eof_and_with_dev_null() {
    let null = PeerBuilder::new("nullin").stdin(StdinMode::Null).spawn();
    let mut eof = PeerBuilder::new("eofin").spawn();
    eof.close_stdin();
    assert!(
        wait_until(WAIT, || eof.log().contains("stdin closed")),
        "EOF not noticed; log:\n{}",
        eof.log()
    );
    // Give an exit-on-EOF bug time to show.
    std::thread::sleep(Duration::from_secs(1));
    let fake = FakePeer::start();
    for mut p in [null, eof] {
        assert!(p.alive(), "{} exited", p.id);
        stats_page_answers(&p);
        gossip_answered(&p, &fake, "fake-stdin", Duration::from_secs(2));
        assert!(p.alive(), "{} exited", p.id);
    }
}

#[test]
fn sigterm_saves_metadata_and_exits_zero() {
    let mut p = PeerBuilder::new("termed")
        .file("kept.txt", b"keep me")
        .spawn();
    let id = p.files()[0]["file_id"].as_str().unwrap().to_string();
    p.signal(libc::SIGTERM);
    let status = p
        .wait_exit(Duration::from_secs(2))
        .expect("exits within 2 s");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let text = std::fs::read_to_string(p.dir.join("metadata.json")).expect("metadata.json");
    let meta: Value = serde_json::from_str(&text).expect("metadata is JSON");
    let obj = meta.as_object().expect("metadata is an object");
    let entry = obj.get(&id).expect("the held file is recorded");
    assert_eq!(entry["file_name"], "kept.txt");
    assert_eq!(entry["has_copy"], "yes");
}

#[test]
fn bad_arguments_exit_2_and_a_busy_port_exits_1_with_a_clear_line() {
    let t = Duration::from_secs(10);
    let missing = run_binary(&["only-an-id"], t);
    assert_eq!(
        missing.status.and_then(|s| s.code()),
        Some(2),
        "{missing:?}"
    );
    assert!(
        missing.stderr.to_lowercase().contains("usage"),
        "{missing:?}"
    );
    let bad_port = run_binary(&["p", "127.0.0.1", "notaport", "0"], t);
    assert_eq!(
        bad_port.status.and_then(|s| s.code()),
        Some(2),
        "{bad_port:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let storage = tmp.path().join("s").display().to_string();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    for (p2p, http) in [(port.as_str(), "0"), ("0", port.as_str())] {
        let run = run_binary(
            &[
                "busy",
                "127.0.0.1",
                p2p,
                http,
                "--storage-dir",
                &storage,
                "--no-well-known",
            ],
            t,
        );
        assert_eq!(run.status.and_then(|s| s.code()), Some(1), "{run:?}");
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&format!("127.0.0.1:{port}")))
            .unwrap_or_else(|| panic!("no line names the port: {run:?}"));
        assert!(line.to_lowercase().contains("in use"), "{line}");
    }
}

#[test]
fn gossip_flood_with_fresh_ids_gets_few_replies() {
    let p = PeerBuilder::new("flooded").spawn();
    let fake = FakePeer::start();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(8);
    let started = Instant::now();
    let mut slowest_page = Duration::ZERO;
    for i in 0..500 {
        send_raw(
            p.p2p_port,
            &gossip(
                "flooder",
                fake.port,
                &support::chaos::fresh_gossip_id(rng.gen()),
            ),
        )
        .expect("send");
        if i % 100 == 50 {
            let t = Instant::now();
            assert!(
                http_get(p.http_port, "/api/state").is_some(),
                "page during flood"
            );
            slowest_page = slowest_page.max(t.elapsed());
        }
        // Spread the 500 over about a second.
        let due = started + Duration::from_millis(2 * (i + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let sent_in = started.elapsed();
    assert!(sent_in < Duration::from_secs(3), "flood took {sent_in:?}");
    // Every GOSSIP was read (the debug log notes each one).
    assert!(
        wait_until(Duration::from_secs(5), || p
            .log()
            .matches("received GOSSIP from ")
            .count()
            >= 500),
        "the peer read only {} GOSSIPs",
        p.log().matches("received GOSSIP from ").count()
    );
    // A negative check needs a window: any late reply has a second to arrive.
    std::thread::sleep(Duration::from_secs(1));
    let replies = fake.of_type("GOSSIP_REPLY").len();
    assert!(replies >= 1, "the flooder got no reply at all");
    assert!(
        replies <= 3,
        "{replies} GOSSIP_REPLYs to one flooding peerId"
    );
    assert!(slowest_page < Duration::from_secs(1), "{slowest_page:?}");
    stats_page_answers(&p);
    assert_eq!(p.peer_ids(), vec!["flooder".to_string()]);
}

#[test]
fn stats_page_escapes_a_script_peer_name() {
    let p = PeerBuilder::new("escaper").spawn();
    let fake = FakePeer::start();
    let evil = "<script>alert(1)</script>";
    let evil_file = "<img src=x onerror=alert(2)>.txt";
    gossip_answered(&p, &fake, evil, Duration::from_secs(2));
    let reply = serde_json::json!({
        "type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": fake.port, "peerId": evil,
        "files": [{"file_name": evil_file, "file_size": 3, "file_id": "ab".repeat(32),
                   "file_owner": evil, "file_timestamp": 1750000000}],
    });
    send_raw(p.p2p_port, reply.to_string().as_bytes()).unwrap();
    assert!(wait_until(WAIT, || p.files().len() == 1), "{:?}", p.state());
    assert_eq!(p.peer_ids(), vec![evil.to_string()]);
    let page = String::from_utf8(http_get(p.http_port, "/").expect("page")).unwrap();
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains(evil), "raw peer name in the page");
    assert!(page.contains("&lt;img src=x onerror=alert(2)&gt;.txt"));
    assert!(!page.contains("<img"), "raw file name in the page");
}

#[test]
fn python_style_messages_are_accepted() {
    let mut p = PeerBuilder::new("tolerant").spawn();
    let fake = FakePeer::start();
    let (id1, id2, id3) = ("3af4".repeat(16), "ce43".repeat(16), "9ae9".repeat(16));
    // As an A-style peer writes it: json.dumps spacing, a string port,
    // MB floats, float timestamps, `peers` in each record, a newline.
    let msg = format!(
        concat!(
            r#"{{"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": "{port}", "peerId": "Apy", "files": ["#,
            r#"{{"file_name": "testfile.txt", "file_size": 2.8e-05, "file_id": "{id1}", "file_owner": "{id1}", "file_timestamp": 1743970142.6140459, "peers": ["Apy", "ghost"]}}, "#,
            r#"{{"file_name": "test.png", "file_size": 1.7906866073608398, "file_id": "{id2}", "file_owner": "patelhs", "file_timestamp": 1744169352.0, "peers": []}}, "#,
            r#"{{"file_name": "A_Hi.txt", "file_size": 0.0, "file_id": "{id3}", "file_owner": "TEST8!!!", "file_timestamp": "Sun Jun 15 21:36:41 2025", "peers": ["ghost"]}}"#,
            "]}}\n"
        ),
        port = fake.port,
        id1 = id1,
        id2 = id2,
        id3 = id3
    );
    send_raw(p.p2p_port, msg.as_bytes()).unwrap();
    assert!(
        wait_until(WAIT, || p.files().len() == 3),
        "{:?}\nlog:\n{}",
        p.state(),
        p.log()
    );
    let state = p.state().unwrap();
    let peer = &state["peers"][0];
    assert_eq!(peer["peer_id"], "Apy");
    assert_eq!(peer["port"], fake.port, "numeric-string port");
    let f1 = p.file(&id1).unwrap();
    assert!(f1["file_size"].is_number());
    assert_eq!(f1["file_size"].as_f64(), Some(2.8e-05));
    assert_eq!(f1["file_size"].to_string(), "2.8e-05");
    assert_eq!(f1["file_timestamp"].to_string(), "1743970142.6140459");
    assert_eq!(f1["file_owner"], id1.as_str());
    assert_eq!(holders(&f1), vec!["Apy".to_string()], "`peers` is ignored");
    let f2 = p.file(&id2).unwrap();
    assert_eq!(f2["file_size"].to_string(), "1.7906866073608398");
    assert_eq!(f2["file_timestamp"].to_string(), "1744169352.0");
    let f3 = p.file(&id3).unwrap();
    assert_eq!(f3["file_size"].to_string(), "0.0");
    assert_eq!(f3["file_timestamp"], "Sun Jun 15 21:36:41 2025");
    assert_eq!(f3["file_owner"], "TEST8!!!");
    for f in [&f1, &f2, &f3] {
        assert_eq!(f["local"], false);
    }
    // And a GOSSIP answered to that string port still works.
    gossip_answered(&p, &fake, "Apy", Duration::from_secs(2));
    assert!(p.alive());
}

#[test]
fn metadata_from_a_python_peer_loads() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/network-metadata.json"
    );
    let original: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let original = original.as_object().unwrap();
    assert_eq!(original.len(), 22);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage_py");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture, dir.join("metadata.json")).unwrap();
    let p = PeerBuilder::new("loader").storage(&dir).spawn();
    // Right away, before any merge could prune unreachable holders.
    let files = p.files();
    assert_eq!(files.len(), 22, "{files:?}");
    assert!(p.lines().iter().any(|l| l.contains("(22 files in")));
    for f in &files {
        let id = f["file_id"].as_str().unwrap();
        let src = &original[id];
        // The files are not on disk: nothing is local, whatever has_copy says.
        assert_eq!(f["local"], false, "{id}");
        for field in ["file_name", "file_owner", "file_size", "file_timestamp"] {
            assert_eq!(
                f[field].to_string(),
                src[field].to_string(),
                "{field} of {id}"
            );
        }
        let want: Vec<String> = src["peers_with_file"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(sorted(holders(f)), sorted(want), "holders of {id}");
    }
    let odd = files
        .iter()
        .find(|f| f["file_timestamp"] == "Sun Jun 15 21:36:41 2025")
        .expect("the string timestamp survives");
    assert_eq!(odd["file_owner"], "TEST8!!!");
    drop(p);

    // A corrupt metadata file is moved aside and the peer starts empty.
    let bad = tmp.path().join("storage_bad");
    std::fs::create_dir_all(&bad).unwrap();
    let junk = b"{\"602c86cb\": {\"file_name\": \"UMAI";
    std::fs::write(bad.join("metadata.json"), junk).unwrap();
    let mut q = PeerBuilder::new("corrupted").storage(&bad).spawn();
    assert!(q.alive());
    assert_eq!(q.files().len(), 0);
    let aside: Vec<_> = std::fs::read_dir(&bad)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("metadata.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "moved-aside copies: {aside:?}");
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), junk);
    stats_page_answers(&q);
}

#[test]
fn an_unreachable_and_an_unresolvable_well_known_host_are_logged_once_and_retried() {
    // A closed port on 127.0.0.1, and a name that can't resolve (.invalid is
    // reserved: no lookup leaves the machine with an answer). The port stays
    // bound, never listening, so a connect is refused and no other test's
    // listener can take it meanwhile.
    let (_closed, port) = refusing_port();
    let p = PeerBuilder::new("lonely")
        .args(&[
            "--well-known",
            &format!("127.0.0.1:{port}"),
            "--well-known",
            "no-such-host.invalid:8999",
            "--gossip-interval",
            "0.2",
        ])
        .spawn();
    // Several rounds go by; each retries both hosts.
    assert!(wait_until(WAIT, || p.log().matches("gossip round").count() >= 5));
    let log = p.log();
    let info = |needle: &str| {
        log.lines()
            .filter(|l| l.contains("[INFO]") && l.contains(needle))
            .count()
    };
    let reach = info(&format!("cannot reach 127.0.0.1:{port}"));
    assert_eq!(reach, 1, "unreachable host logged once:\n{log}");
    assert!(
        info("cannot resolve no-such-host.invalid") <= 1,
        "unresolvable host logged at most once at info:\n{log}"
    );
    // Retried: the debug log shows a failure in several rounds.
    assert!(log.matches("cannot connect: Connection refused").count() >= 3);
    stats_page_answers(&p);
}

/// A port on 127.0.0.1 bound by a socket that never listens: connections to
/// it are refused for as long as the returned descriptor lives.
fn refusing_port() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor owned here; the address
    // structs are fully initialised and their sizes passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        addr.sin_port = 0;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        let named = libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut got_len);
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        (owned, u16::from_be(got.sin_port))
    }
}
