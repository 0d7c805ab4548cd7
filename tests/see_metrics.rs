//! `/metrics` on real peers: the output parses with a real Prometheus
//! parser (`prometheus-parse`), every line of it; a transfer between two
//! peers moves bytes, transfers, messages and files held on both sides; a
//! failed source moves the failed counter with its reason; a flood of one
//! repeated GOSSIP moves the dropped counter; and every metric is
//! documented in docs/API.md.
mod support;

use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;
use support::*;

/// A scrape of `/metrics`, checked line by line and parsed.
struct Metrics {
    text: String,
    scrape: Scrape,
}

impl Metrics {
    /// The value of `name` whose labels include all of `labels`, summed
    /// over the series that match (0 if none does).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }
}

/// Fetches `/metrics` from `p`; None if it doesn't answer within 2 s.
fn scrape(p: &PeerProc) -> Option<Metrics> {
    let mut s = TcpStream::connect(("127.0.0.1", p.http_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8(buf).expect("/metrics is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    for line in body.lines() {
        // The parser skips what it does not understand: every line must be
        // a comment it reads, or a sample.
        let info = LineInfo::parse(line);
        assert!(
            !matches!(info, LineInfo::Ignored | LineInfo::Empty),
            "line not in the exposition format: {line:?}"
        );
    }
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    for s in &scrape.samples {
        assert!(
            matches!(s.value, Value::Counter(_) | Value::Gauge(_)),
            "{} has no TYPE",
            s.metric
        );
    }
    Some(Metrics {
        text: body.to_owned(),
        scrape,
    })
}

/// Scrapes `p` until `cond` holds on the result; the last scrape.
fn scrape_until(p: &PeerProc, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = None;
    let ok = wait_until(WAIT, || {
        last = scrape(p);
        last.as_ref().is_some_and(&cond)
    });
    let last = last.unwrap_or_else(|| panic!("{} never answered /metrics", p.id));
    assert!(ok, "{}: {what}\n{}\n{}", p.id, last.text, log_tail(p));
    last
}

/// Deterministic bytes that are not all alike.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn a_transfer_moves_bytes_transfers_messages_and_files_held_on_both_sides() {
    const LEN: usize = 256 * 1024;
    let holder = PeerBuilder::new("holder")
        .args(&QUIET)
        .file("data.bin", &content(LEN))
        .spawn();
    let mut getter = PeerBuilder::new("getter")
        .args(&QUIET)
        .well_known(holder.p2p_port)
        .spawn();
    let mut entry = None;
    assert!(
        wait_until(WAIT, || {
            entry = getter.file_named("data.bin");
            entry.is_some()
        }),
        "getter never learned data.bin\n{}",
        log_tail(&getter)
    );
    let id = entry.unwrap()["file_id"].as_str().unwrap().to_owned();
    let up0 = scrape(&holder).expect("holder's /metrics");
    let down0 = scrape(&getter).expect("getter's /metrics");
    assert_eq!(up0.get("peershare_files_held", &[]), 1.0);
    assert_eq!(down0.get("peershare_files_held", &[]), 0.0);
    assert_eq!(down0.get("peershare_peers_tracked", &[]), 1.0);
    assert_eq!(
        up0.get(
            "peershare_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    let skip = getter.line_count();
    getter.send_line(&format!("get {}", &id[..12]));
    getter
        .wait_line(skip, "get: saved data.bin", WAIT)
        .unwrap_or_else(|| panic!("no save\n{}", log_tail(&getter)));

    let len = LEN as f64;
    let down = scrape_until(&getter, "the download counted", |m| {
        m.get("peershare_files_held", &[]) == 1.0
    });
    let moved = |m: &Metrics, name: &str, labels: &[(&str, &str)]| {
        m.get(name, labels) - down0.get(name, labels)
    };
    let d = [("direction", "down")];
    assert_eq!(moved(&down, "peershare_transfers_started_total", &d), 1.0);
    assert_eq!(moved(&down, "peershare_transfers_succeeded_total", &d), 1.0);
    assert_eq!(moved(&down, "peershare_transfers_failed_total", &d), 0.0);
    assert_eq!(moved(&down, "peershare_file_data_bytes_total", &d), len);
    // Hex: two bytes on the wire for each byte of the file.
    let bytes_in = moved(&down, "peershare_peer_bytes_total", &[("direction", "in")]);
    assert!(bytes_in >= 2.0 * len, "{bytes_in}");
    let out = [("direction", "out"), ("type", "GET_FILE")];
    assert_eq!(moved(&down, "peershare_messages_total", &out), 1.0);
    let fd_in = [("direction", "in"), ("type", "FILE_DATA")];
    assert_eq!(moved(&down, "peershare_messages_total", &fd_in), 1.0);

    // The holder counts the upload once its FILE_DATA is written whole.
    let u = [("direction", "up")];
    let up = scrape_until(&holder, "the upload counted", |m| {
        m.get("peershare_transfers_succeeded_total", &u) == 1.0
    });
    let moved_up =
        |name: &str, labels: &[(&str, &str)]| up.get(name, labels) - up0.get(name, labels);
    assert_eq!(moved_up("peershare_transfers_started_total", &u), 1.0);
    assert_eq!(moved_up("peershare_file_data_bytes_total", &u), len);
    let bytes_out = moved_up("peershare_peer_bytes_total", &[("direction", "out")]);
    assert!(bytes_out >= 2.0 * len, "{bytes_out}");
    let get_in = [("direction", "in"), ("type", "GET_FILE")];
    assert_eq!(moved_up("peershare_messages_total", &get_in), 1.0);
    let fd_out = [("direction", "out"), ("type", "FILE_DATA")];
    assert_eq!(moved_up("peershare_messages_total", &fd_out), 1.0);
    assert!(up.get("peershare_resident_memory_bytes", &[]) > 1024.0 * 1024.0);
}

/// A holder that answers every GET_FILE with the not-found FILE_DATA;
/// its port. The thread ends with the test process.
fn not_found_holder() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let reply = json!({"type": "FILE_DATA", "file_id": null, "file_name": null,
                "file_owner": null, "file_timestamp": null, "file_size": 0, "data": null});
            let _ = s.write_all(reply.to_string().as_bytes());
        }
    });
    port
}

#[test]
fn a_failed_source_moves_the_failed_counter_with_its_reason() {
    let mut p = PeerBuilder::new("getter").args(&QUIET).spawn();
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().unwrap().port()
    };
    let empty = not_found_holder();
    let bytes = b"nobody can send this";
    let id = file_id(bytes, "1700000000");
    let record = json!({"file_name": "ghost.txt", "file_size": bytes.len(), "file_id": id,
        "file_owner": "ghost", "file_timestamp": 1700000000});
    for (peer, port) in [("ghost", dead), ("hollow", empty)] {
        let reply = json!({"type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": port,
            "peerId": peer, "files": [record]});
        send_raw(p.p2p_port, reply.to_string().as_bytes()).expect("send GOSSIP_REPLY");
    }
    assert!(
        wait_until(WAIT, || p.file_with_id(&id).is_some_and(|e| {
            e["peers_with_file"]
                .as_array()
                .is_some_and(|h| h.len() == 2)
        })),
        "the two holders were never listed\n{}",
        log_tail(&p)
    );
    let skip = p.line_count();
    p.send_line(&format!("get {}", &id[..12]));
    p.wait_line(skip, "get: no source left for ghost.txt", WAIT)
        .unwrap_or_else(|| panic!("the get did not fail\n{}", log_tail(&p)));
    let failed = |reason| [("direction", "down"), ("reason", reason)];
    let m = scrape_until(&p, "both failures counted", |m| {
        m.get("peershare_transfers_failed_total", &[("direction", "down")]) == 2.0
    });
    assert_eq!(
        m.get("peershare_transfers_failed_total", &failed("connect")),
        1.0
    );
    assert_eq!(
        m.get("peershare_transfers_failed_total", &failed("not_found")),
        1.0
    );
    let d = [("direction", "down")];
    assert_eq!(m.get("peershare_transfers_started_total", &d), 2.0);
    assert_eq!(m.get("peershare_transfers_succeeded_total", &d), 0.0);
}

#[test]
fn a_flood_of_one_repeated_gossip_moves_the_dropped_counter() {
    const COPIES: usize = 60;
    let p = PeerBuilder::new("target").args(&QUIET).spawn();
    let flooder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = flooder.local_addr().unwrap().port();
    let msg = gossip("flooder", port, "2f9c4a57-0000-4000-8000-000000000001");
    for _ in 0..COPIES {
        send_raw(p.p2p_port, &msg).expect("send GOSSIP");
    }
    let gossip_in = [("direction", "in"), ("type", "GOSSIP")];
    let m = scrape_until(&p, "every copy received", |m| {
        m.get("peershare_messages_total", &gossip_in) == COPIES as f64
    });
    // The first is fresh; of the repeats, at most one is answered (once
    // per REPEAT_REPLY_MIN_INTERVAL).
    let repeated = m.get("peershare_dropped_total", &[("limit", "repeated_id")]);
    assert!(
        repeated >= (COPIES - 2) as f64 && repeated <= (COPIES - 1) as f64,
        "{repeated}\n{}",
        m.text
    );
}

#[test]
fn gossip_from_many_invented_peers_at_one_address_meets_the_dial_limit() {
    const PEERS: usize = 40;
    let p = PeerBuilder::new("target").args(&QUIET).spawn();
    // A listener that accepts nothing: the replies' connects succeed (the
    // backlog), so only the dial rate holds them back, not a backoff.
    let victim = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = victim.local_addr().unwrap().port();
    for i in 0..PEERS {
        let msg = gossip(&format!("invented-{i}"), port, &format!("id-{i}"));
        send_raw(p.p2p_port, &msg).expect("send GOSSIP");
    }
    let m = scrape_until(&p, "every GOSSIP received", |m| {
        m.get(
            "peershare_messages_total",
            &[("direction", "in"), ("type", "GOSSIP")],
        ) == PEERS as f64
    });
    // Each fresh GOSSIP from a new peer asks for a reply (and forwards),
    // all to the one address they name: it gets its burst of dials (8)
    // and then 2 a second; the rest are dropped by the dial limit.
    let out = m.get("peershare_messages_total", &[("direction", "out")]);
    let dropped = m.get("peershare_dropped_total", &[("limit", "dial_limit")]);
    assert!(out < PEERS as f64, "{out} dialled\n{}", m.text);
    assert!(
        dropped + out >= PEERS as f64,
        "{dropped} + {out}\n{}",
        m.text
    );
    assert!(dropped >= (PEERS / 2) as f64, "{dropped}\n{}", m.text);
    drop(victim);
}

#[test]
fn every_metric_in_the_output_is_documented_in_the_api_docs() {
    let p = PeerBuilder::new("documented").args(&QUIET).spawn();
    let m = scrape(&p).expect("/metrics");
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md"))
        .expect("docs/API.md");
    let section = docs
        .split("\n## /metrics")
        .nth(1)
        .expect("docs/API.md has a \"## /metrics\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut names: Vec<&str> = m.scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    names.dedup();
    assert!(names.len() >= 12, "{names:?}");
    for name in &names {
        assert!(
            section.contains(&format!("`{name}`")),
            "{name} is not documented under \"## /metrics\" in docs/API.md"
        );
    }
    // And nothing documented is missing from the output.
    for word in section.split('`').skip(1).step_by(2) {
        if word.starts_with("peershare_") && !word.contains(['{', ' ']) {
            assert!(names.contains(&word), "{word} is documented but not served");
        }
    }
    // Every label value a series can have is documented too.
    for s in &m.scrape.samples {
        for key in ["direction", "reason", "type", "limit", "kind"] {
            if let Some(v) = s.labels.get(key) {
                assert!(
                    section.contains(&format!("`{v}`")),
                    "{key}=\"{v}\" of {} is not documented",
                    s.metric
                );
            }
        }
    }
}

#[test]
fn an_upload_to_a_downloader_that_stops_reading_fails_as_stalled() {
    // Its hex (16 MiB) can't sit in the loopback buffers: the holder's
    // writes stop, and its idle timeout (2 s here) ends the upload.
    const LEN: usize = 8 * 1024 * 1024;
    let holder = PeerBuilder::new("holder")
        .args(&QUIET)
        .file("big.bin", &content(LEN))
        .spawn();
    let mut entry = None;
    assert!(wait_until(WAIT, || {
        entry = holder.file_named("big.bin");
        entry.is_some()
    }));
    let id = entry.unwrap()["file_id"].as_str().unwrap().to_owned();
    let mut reader = TcpStream::connect(("127.0.0.1", holder.p2p_port)).expect("connect");
    let get = json!({"type": "GET_FILE", "file_id": id});
    reader
        .write_all(get.to_string().as_bytes())
        .expect("send GET_FILE");
    let asked = std::time::Instant::now();
    let u = [("direction", "up")];
    let m = scrape_until(&holder, "the upload failed", |m| {
        m.get("peershare_transfers_failed_total", &u) == 1.0
    });
    // Within the idle timeout (2 s) and a margin, not the 10 s a request
    // may take to arrive.
    let took = asked.elapsed();
    println!("a stalled upload ended {took:?} after its GET_FILE (idle timeout 2 s)");
    assert!(took < Duration::from_secs(8), "{took:?}");
    let stalled = [("direction", "up"), ("reason", "stalled")];
    assert_eq!(m.get("peershare_transfers_failed_total", &stalled), 1.0);
    assert_eq!(m.get("peershare_transfers_started_total", &u), 1.0);
    assert_eq!(m.get("peershare_transfers_succeeded_total", &u), 0.0);
    assert_eq!(m.get("peershare_file_data_bytes_total", &u), 0.0);
    let sent = m.get("peershare_peer_bytes_total", &[("direction", "out")]);
    assert!(sent > 0.0 && sent < 2.0 * LEN as f64, "{sent}");
    drop(reader);
}
