//! The range extension with real processes on 127.0.0.1: a ranged GET_FILE
//! (sent here over a raw socket) gets exactly its slice with the range
//! fields; Python-style fakes that receive our GOSSIP with `"ranges": 1`
//! answer as before and still serve us whole files; `/api/state` tells
//! peershare peers (ranges) from Python fakes (none).
mod support;

use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::files::*;
use support::*;

/// Sends `request` to 127.0.0.1:`port` and reads the one reply object.
fn ask(port: u16, request: &Value) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    std::io::Write::write_all(&mut s, request.to_string().as_bytes()).ok()?;
    read_object(&mut s, Duration::from_secs(10))
}

/// A holder of `name` = `bytes` and the file's id, once it serves it (a
/// file found at start is hashed before it is served).
fn serving_holder(name: &str, bytes: &[u8]) -> (PeerProc, String) {
    let holder = PeerBuilder::new("holder")
        .file(name, bytes)
        .args(&QUIET)
        .spawn();
    let mut id = String::new();
    let served = wait_until(WAIT, || {
        let Some(f) = holder.file_named(name) else {
            return false;
        };
        id = f["file_id"].as_str().unwrap_or_default().to_string();
        ask(holder.p2p_port, &json!({"type": "GET_FILE", "file_id": id}))
            .is_some_and(|r| r["file_id"] == id.as_str())
    });
    assert!(
        served,
        "the holder never served {name}\n{}",
        log_tail(&holder)
    );
    (holder, id)
}

/// The bytes of a reply's `data` (lowercase hex).
fn data_of(reply: &Value) -> Vec<u8> {
    let hex = reply["data"].as_str().expect("data is a string");
    let mut out = vec![0u8; hex.len() / 2];
    faster_hex::hex_decode(hex.as_bytes(), &mut out).expect("data is hex");
    out
}

#[test]
fn a_ranged_get_file_returns_exactly_the_slice_with_the_range_fields() {
    let bytes = pattern(14, 5000);
    let (holder, id) = serving_holder("slice.bin", &bytes);
    let ranged = |range: Value| {
        let mut req = json!({"type": "GET_FILE", "file_id": id});
        for (k, v) in range.as_object().unwrap() {
            req[k] = v.clone();
        }
        ask(holder.p2p_port, &req).expect("a reply to a ranged GET_FILE")
    };
    let probe = ranged(json!({"offset": 1, "length": 1}));
    if probe.get("offset").is_none() && holder.log().contains("no read lease") {
        eprintln!("SKIPPED: the kernel grants no read lease here, so ranges are not served");
        return;
    }
    for (offset, length, start, end) in [
        (1000, 2345, 1000, 3345),
        (0, 1, 0, 1),
        (4990, 100, 4990, 5000),
        (5000, 10, 5000, 5000),
        (9999, 10, 5000, 5000),
    ] {
        let reply = ranged(json!({"offset": offset, "length": length}));
        assert_eq!(reply["file_id"], id.as_str());
        // The whole file's size, so any client can tell what it got.
        assert_eq!(reply["file_size"], 5000);
        assert_eq!(reply["offset"], start, "offset {offset}");
        assert_eq!(reply["length"], end - start, "offset {offset}");
        assert!(data_of(&reply) == bytes[start..end], "offset {offset}");
    }
    // No length: to the end.
    let reply = ranged(json!({"offset": 4000}));
    assert_eq!(
        (reply["offset"].clone(), reply["length"].clone()),
        (json!(4000), json!(1000))
    );
    assert!(data_of(&reply) == bytes[4000..]);
    // A range nobody can serve is no range: the whole file, no range fields.
    for bad in [
        json!({"offset": -1}),
        json!({"offset": "7"}),
        json!({"length": 1.5}),
    ] {
        let reply = ranged(bad.clone());
        assert!(
            reply.get("offset").is_none() && reply.get("length").is_none(),
            "{bad}"
        );
        assert!(data_of(&reply) == bytes, "{bad}");
    }
    // And a plain GET_FILE is answered as it always was.
    let whole = ask(holder.p2p_port, &json!({"type": "GET_FILE", "file_id": id})).unwrap();
    assert!(whole.get("offset").is_none() && whole.get("length").is_none());
    assert!(data_of(&whole) == bytes);
}

#[test]
fn a_copy_served_without_a_lease_answers_a_range_with_the_whole_checked_file() {
    // Without a lease the bytes are proven only by hashing all of them
    // before the message closes: the range is not honoured.
    let bytes = pattern(15, 3000);
    let holder = PeerBuilder::new("holder")
        .file("nolease.bin", &bytes)
        .env("PEERSHARE_TEST_NO_LEASES", "1")
        .args(&QUIET)
        .spawn();
    let mut reply = None;
    let served = wait_until(WAIT, || {
        let Some(f) = holder.file_named("nolease.bin") else {
            return false;
        };
        let id = f["file_id"].as_str().unwrap_or_default().to_string();
        let req = json!({"type": "GET_FILE", "file_id": id, "offset": 100, "length": 10});
        reply = ask(holder.p2p_port, &req).filter(|r| r["file_id"] == id.as_str());
        reply.is_some()
    });
    assert!(served, "never served\n{}", log_tail(&holder));
    let reply = reply.unwrap();
    assert!(reply.get("offset").is_none() && reply.get("length").is_none());
    assert!(data_of(&reply) == bytes);
}

/// A Python-style fake (newline-terminated or not) holding `bytes`, whose
/// GET_FILE handler sends the whole file whatever the request says.
fn python_fake(id: &str, bytes: &[u8], newline: bool) -> (FakeHolder, Value) {
    let record = file_record(&format!("{id}.bin"), bytes, id, 1_744_169_352);
    let mut reply = file_data(&record, bytes);
    if newline {
        reply.push(b'\n');
    }
    let fake = FakeHolder::start(
        id,
        vec![record.clone()],
        FakeStyle {
            newline,
            ..FakeStyle::default()
        },
        move |_, conn, _| reply_and_close(conn, &reply),
    );
    (fake, record)
}

#[test]
fn python_style_fakes_answer_our_ranged_gossip_as_before_and_serve_us_whole_files() {
    for newline in [false, true] {
        let bytes = pattern(u64::from(newline) + 40, 70_000);
        let (fake, record) = python_fake(if newline { "pyA" } else { "pyR" }, &bytes, newline);
        let mut down = PeerBuilder::new("down").well_known(fake.port).spawn();
        let gossip = fake
            .wait_message("GOSSIP", WAIT)
            .unwrap_or_else(|| panic!("no GOSSIP reached the fake\n{}", log_tail(&down)));
        assert_eq!(gossip["ranges"], 1, "our GOSSIP advertises ranges");
        let id = record["file_id"].as_str().unwrap().to_string();
        // The fake's GOSSIP_REPLY to it taught the peer the file.
        assert!(
            wait_until(WAIT, || down.file_with_id(&id).is_some()),
            "the fake's reply was not taken\n{}",
            log_tail(&down)
        );
        let started = Instant::now();
        down.send_line(&format!("get {id}"));
        let saved = wait_until(WAIT, || {
            down.file_with_id(&id).is_some_and(|f| f["local"] == true)
        });
        assert!(
            saved,
            "download from {} failed\n{}",
            fake.id,
            log_tail(&down)
        );
        let name = record["file_name"].as_str().unwrap();
        assert!(std::fs::read(down.dir.join(name)).unwrap() == bytes);
        // We never send a Python peer a range.
        let asked: Vec<Value> = fake
            .received()
            .into_iter()
            .filter(|m| m["type"] == "GET_FILE")
            .collect();
        assert!(!asked.is_empty());
        for m in asked {
            assert!(
                m.get("offset").is_none() && m.get("length").is_none(),
                "{m}"
            );
        }
        eprintln!(
            "whole-file download of 70000 B from a {}-style fake: {:?}",
            if newline { "A" } else { "R/H" },
            started.elapsed()
        );
    }
}

#[test]
fn the_peers_table_shows_ranges_for_a_peershare_peer_and_not_for_a_python_fake() {
    let (fake, _) = python_fake("python", b"tiny", false);
    let other = PeerBuilder::new("other").spawn();
    let me = PeerBuilder::new("me").well_known(other.p2p_port).spawn();
    // The fake is tracked through its GOSSIP_REPLY (no `ranges` key).
    fake.send_gossip_reply(me.p2p_port).unwrap();
    let mut shown = (None, None);
    let both = wait_until(WAIT, || {
        let peers = me.state().map(|s| s["peers"].clone()).unwrap_or_default();
        let ranges_of = |id: &str| {
            peers
                .as_array()?
                .iter()
                .find(|p| p["peer_id"] == id)
                .and_then(|p| p["ranges"].as_bool())
        };
        shown = (ranges_of("other"), ranges_of("python"));
        shown.0.is_some() && shown.1.is_some()
    });
    assert!(both, "peers never both shown: {shown:?}\n{}", log_tail(&me));
    assert_eq!(shown, (Some(true), Some(false)));
}
