//! Hostile black-box tests of the page's actions, the token file, `/metrics`,
//! `/api/state`'s search and the listening options, written from docs/API.md
//! and the README only: what a trusted local web tool guarantees (Jupyter's
//! token, Syncthing's GUI), tried as an attacker on the same machine or a
//! web page in the user's browser would. Real processes on 127.0.0.1 only;
//! every wait is bounded. A test that found a bug is `#[ignore = "BUG: …"]`.
mod support;

use prometheus_parse::{LineInfo, Scrape};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::procfs::rss_anon_kib;
use support::*;

/// The documented bound on a request (head and body) before it is closed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// A raw HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` as is and reads the answer to EOF within `within`.
fn raw(port: u16, request: &[u8], within: Duration) -> Option<Answer> {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_write_timeout(Some(within)).ok()?;
    // The peer may answer (and close) before reading a large body: a write
    // error then is not the test's failure, the answer is what counts.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A reset after the answer arrived (we left unread bytes).
            Err(_) if !buf.is_empty() => break,
            Err(_) => return None,
        }
    }
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    Some(Answer {
        status,
        head,
        body: buf[split + 4..].to_vec(),
    })
}

/// A POST of `body` to `path` with these extra header lines (each ending
/// in `\r\n`) and a right `Content-Length`.
fn post(port: u16, path: &str, headers: &str, body: &str) -> Answer {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(port, req.as_bytes(), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no answer to POST {path} with {headers:?}"))
}

/// The right token and Origin for `port`, as header lines.
fn good(port: u16, token: &str) -> String {
    format!("X-Peershare-Token: {token}\r\nOrigin: http://127.0.0.1:{port}\r\n")
}

/// `{"file_id": id}` as JSON text.
fn id_body(id: &str) -> String {
    json!({ "file_id": id }).to_string()
}

/// The page's token as printed at start (`page: …/#token=…`).
fn printed_token(p: &PeerProc) -> String {
    let line = p
        .wait_line(0, "#token=", WAIT)
        .unwrap_or_else(|| panic!("no page line\n{}", log_tail(p)));
    token_in(&line).unwrap_or_else(|| panic!("no token in {line:?}"))
}

/// The 32 hex digits after `#token=` in `text`.
fn token_in(text: &str) -> Option<String> {
    let at = text.find("#token=")? + "#token=".len();
    let t: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    (t.len() == 32).then_some(t)
}

/// A peer owning one file (`mine.txt`); its token and the file's id.
fn owner_peer(id: &str) -> (PeerProc, String, String) {
    owner_peer_with(PeerBuilder::new(id))
}

/// [`owner_peer`] from a builder.
fn owner_peer_with(builder: PeerBuilder) -> (PeerProc, String, String) {
    let p = builder
        .args(&QUIET)
        .file("mine.txt", b"my own bytes")
        .spawn();
    let token = printed_token(&p);
    let mut file = None;
    assert!(
        wait_until(WAIT, || {
            file = p.file_named("mine.txt");
            file.is_some()
        }),
        "mine.txt never listed\n{}",
        log_tail(&p)
    );
    let fid = file.unwrap()["file_id"].as_str().unwrap().to_owned();
    (p, token, fid)
}

/// Whether `p` still lists and holds `fid`.
fn still_held(p: &PeerProc, fid: &str) -> bool {
    p.file(fid).is_some_and(|f| f["local"] == true)
}

/// Tells `p`, from the fake peer `from` (id `mallory`), that it holds these
/// file records; waits until the first is listed.
fn announce_files(p: &PeerProc, from: &FakePeer, files: &[Value]) {
    let reply = json!({
        "type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": from.port,
        "peerId": "mallory", "files": files,
    });
    send_raw(p.p2p_port, reply.to_string().as_bytes()).expect("send GOSSIP_REPLY");
    let first = files[0]["file_id"].as_str().unwrap().to_owned();
    assert!(
        wait_until(WAIT, || p.file(&first).is_some()),
        "announced files never listed\n{}",
        log_tail(p)
    );
}

/// A file record owned by `mallory` with a made-up id.
fn record(id: &str, name: &str) -> Value {
    json!({"file_name": name, "file_size": 10, "file_id": id,
           "file_owner": "mallory", "file_timestamp": 1_700_000_000})
}

// ---- actions -------------------------------------------------------------

#[test]
fn actions_with_a_missing_wrong_or_misplaced_token_are_refused_and_delete_nothing() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let origin = format!("Origin: http://127.0.0.1:{port}\r\n");
    // One hex digit off, same length.
    let mut off: Vec<char> = token.chars().collect();
    off[17] = if off[17] == '0' { '1' } else { '0' };
    let off: String = off.into_iter().collect();
    let cases = [
        ("no token", origin.clone(), "/api/delete".to_owned()),
        (
            "a wrong token",
            format!("{origin}X-Peershare-Token: {}\r\n", "f".repeat(32)),
            "/api/delete".to_owned(),
        ),
        (
            "one digit off",
            format!("{origin}X-Peershare-Token: {off}\r\n"),
            "/api/delete".to_owned(),
        ),
        (
            "a prefix of the token",
            format!("{origin}X-Peershare-Token: {}\r\n", &token[..31]),
            "/api/delete".to_owned(),
        ),
        (
            "the token twice",
            format!("{origin}X-Peershare-Token: {token}{token}\r\n"),
            "/api/delete".to_owned(),
        ),
        (
            "the token in the query",
            origin.clone(),
            format!("/api/delete?token={token}"),
        ),
        (
            "the token in a cookie",
            format!("{origin}Cookie: token={token}; X-Peershare-Token={token}\r\n"),
            "/api/delete".to_owned(),
        ),
        (
            "the token as a bearer",
            format!("{origin}Authorization: Bearer {token}\r\n"),
            "/api/delete".to_owned(),
        ),
    ];
    for (what, headers, path) in cases {
        let a = post(port, &path, &headers, &id_body(&fid));
        assert_eq!(a.status, 403, "{what}: {a:?}");
        let v: Value = serde_json::from_slice(&a.body)
            .unwrap_or_else(|e| panic!("{what}: body not JSON ({e}): {a:?}"));
        assert_eq!(v["ok"], false, "{what}: {v}");
        assert!(!a.body_text().contains(&token), "{what}: token echoed");
    }
    assert!(still_held(&p, &fid), "a refused delete deleted the file");
    // The same delete with the right header runs: the refusals above were
    // the token's doing, not a broken request.
    let a = post(port, "/api/delete", &good(port, &token), &id_body(&fid));
    assert_eq!(a.status, 200, "{a:?}\n{}", log_tail(&p));
    assert!(wait_until(WAIT, || p.file(&fid).is_none()));
}

#[test]
fn the_token_header_name_is_matched_case_insensitively() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    for name in [
        "x-peershare-token",
        "X-PEERSHARE-TOKEN",
        "x-PeerShare-tOKEN",
    ] {
        let headers = format!("{name}: {token}\r\nOrigin: http://127.0.0.1:{port}\r\n");
        let a = post(port, "/api/get", &headers, &id_body(&fid));
        assert_eq!(a.status, 200, "header {name}: {a:?}\n{}", log_tail(&p));
    }
}

#[test]
fn origins_that_are_not_exactly_the_pages_own_are_refused() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let other_port = port.wrapping_add(1).max(1);
    let origins = [
        "null".to_owned(),
        format!("http://127.0.0.1:{other_port}"),
        format!("https://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}.evil.example"),
        format!("http://127.0.0.1:{port}@evil.example"),
        "http://127.0.0.1".to_owned(),
        String::new(),
    ];
    for o in &origins {
        let headers = format!("X-Peershare-Token: {token}\r\nOrigin: {o}\r\n");
        let a = post(port, "/api/delete", &headers, &id_body(&fid));
        assert_eq!(a.status, 403, "Origin {o:?}: {a:?}");
    }
    // Two Origin headers, the second one the page's own: still refused.
    let headers = format!(
        "X-Peershare-Token: {token}\r\nOrigin: http://evil.example\r\nOrigin: http://127.0.0.1:{port}\r\n"
    );
    let a = post(port, "/api/delete", &headers, &id_body(&fid));
    assert_eq!(a.status, 403, "two Origins: {a:?}");
    assert!(still_held(&p, &fid), "a refused delete deleted the file");
}

#[test]
fn a_post_without_a_host_header_cannot_match_any_origin() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let body = id_body(&fid);
    let req = format!(
        "POST /api/delete HTTP/1.1\r\nOrigin: http://127.0.0.1:{port}\r\nX-Peershare-Token: {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let a = raw(port, req.as_bytes(), Duration::from_secs(5)).expect("answer");
    assert!([400, 403].contains(&a.status), "{a:?}");
    assert!(still_held(&p, &fid), "the delete ran");
}

#[test]
fn two_host_headers_are_refused() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let body = id_body(&fid);
    for hosts in [
        format!("Host: evil.example\r\nHost: 127.0.0.1:{port}\r\n"),
        format!("Host: 127.0.0.1:{port}\r\nHost: evil.example\r\n"),
    ] {
        let req = format!(
            "POST /api/delete HTTP/1.1\r\n{hosts}Origin: http://evil.example\r\nX-Peershare-Token: {token}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let a = raw(port, req.as_bytes(), Duration::from_secs(5)).expect("answer");
        assert!([400, 403].contains(&a.status), "{hosts:?}: {a:?}");
        assert!(still_held(&p, &fid), "{hosts:?}: the delete ran");
    }
}

#[test]
fn an_empty_host_is_refused_rather_than_matched_by_an_empty_origin() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let body = id_body(&fid);
    let req = format!(
        "POST /api/delete HTTP/1.1\r\nHost: \r\nOrigin: http://\r\nX-Peershare-Token: {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let a = raw(port, req.as_bytes(), Duration::from_secs(5)).expect("answer");
    assert!([400, 403].contains(&a.status), "{a:?}");
    assert!(still_held(&p, &fid), "the delete ran");
}

#[test]
fn no_read_hands_out_the_token_even_under_a_rebound_host_name() {
    // DNS rebinding: a page at evil.example whose name now resolves to
    // 127.0.0.1 reads the port with `Host: evil.example:PORT`. Reads are
    // open by design, so the one thing they must never carry is the token.
    let (p, token, _fid) = owner_peer("alice");
    let port = p.http_port;
    for path in ["/", "/index.html", "/api/state", "/metrics"] {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n\r\n"
        );
        let a = raw(port, req.as_bytes(), Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no answer to {path}"));
        let all = format!("{}{}", a.head, a.body_text());
        assert!(!all.contains(&token), "{path} carries the token");
        assert!(
            !a.head
                .to_ascii_lowercase()
                .contains("access-control-allow-origin"),
            "{path} allows a foreign origin to read: {}",
            a.head
        );
    }
}

#[test]
fn a_foreign_host_header_is_refused_as_a_dns_rebinding_defence() {
    // Syncthing and Jupyter refuse a Host that is not theirs: with it, a
    // site whose name was rebound to 127.0.0.1 reads the catalog and the
    // peers, and acts with a token it learnt.
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let req = format!("GET /api/state HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n");
    let a = raw(port, req.as_bytes(), Duration::from_secs(5)).expect("answer");
    assert_ne!(a.status, 200, "a read under Host evil.example: {}", a.head);
    let req = format!(
        "POST /api/delete HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\nX-Peershare-Token: {token}\r\nContent-Length: {}\r\n\r\n{}",
        id_body(&fid).len(),
        id_body(&fid)
    );
    let a = raw(port, req.as_bytes(), Duration::from_secs(5)).expect("answer");
    assert_eq!(a.status, 403, "an action under Host evil.example: {a:?}");
}

#[test]
fn a_get_or_other_method_on_an_action_path_acts_on_nothing() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    for method in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"] {
        let req = format!(
            "{method} /api/delete?file_id={fid} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Peershare-Token: {token}\r\nOrigin: http://127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
        );
        let a = raw(port, req.as_bytes(), Duration::from_secs(5)).expect("answer");
        // "Anything else is 404; another method is 405": either refuses.
        assert!([404, 405].contains(&a.status), "{method}: {}", a.head);
    }
    assert!(still_held(&p, &fid), "a non-POST deleted the file");
}

#[test]
fn a_wrong_method_on_an_action_path_is_405_naming_post() {
    let p = PeerBuilder::new("alice").args(&QUIET).spawn();
    let port = p.http_port;
    for method in ["GET", "PUT", "OPTIONS"] {
        let req = format!(
            "{method} /api/get HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
        );
        let a = raw(port, req.as_bytes(), Duration::from_secs(5)).expect("answer");
        assert_eq!(a.status, 405, "{method}: {}", a.head);
        let allow = a
            .head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("allow:"))
            .unwrap_or_default()
            .to_owned();
        assert!(allow.contains("POST"), "{method}: {allow:?}");
    }
}

#[test]
fn a_body_shorter_than_its_content_length_is_closed_within_the_documented_five_seconds() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /api/delete HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}Content-Length: 500\r\n\r\n{{\"file_id\": \"{fid}\"}}",
        good(port, &token)
    )
    .unwrap();
    s.set_read_timeout(Some(REQUEST_DEADLINE + Duration::from_secs(3)))
        .unwrap();
    let mut buf = Vec::new();
    let r = s.read_to_end(&mut buf);
    let took = started.elapsed();
    println!("attack_see: a stalled body closed after {took:?}");
    assert!(r.is_ok(), "not closed within {took:?}: {r:?}");
    assert!(
        took <= REQUEST_DEADLINE + Duration::from_millis(1500),
        "closed after {took:?}"
    );
    assert!(still_held(&p, &fid), "a truncated body ran the delete");
}

#[test]
fn a_request_trickled_a_byte_at_a_time_is_closed_within_five_seconds() {
    let p = PeerBuilder::new("alice").args(&QUIET).spawn();
    let port = p.http_port;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let req = format!(
        "POST /api/get HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Padding: {}",
        "z".repeat(200)
    );
    let started = Instant::now();
    let mut closed_after = None;
    for b in req.bytes() {
        if s.write_all(&[b]).is_err() || started.elapsed() > Duration::from_secs(9) {
            closed_after = Some(started.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(300));
        // A closed socket shows as EOF (or a reset) on a non-blocking peek.
        s.set_nonblocking(true).unwrap();
        let mut one = [0u8; 1];
        let gone = match s.peek(&mut one) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        s.set_nonblocking(false).unwrap();
        if gone {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    println!("attack_see: a trickled request closed after {closed_after:?}");
    let took = closed_after.expect("the trickle was never cut");
    assert!(
        took <= REQUEST_DEADLINE + Duration::from_millis(1500),
        "{took:?}"
    );
}

#[test]
fn three_hundred_stalled_posts_leave_the_page_and_gossip_answering() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    raise_fd_limit(2048);
    let stalled: Vec<TcpStream> = (0..300)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            let _ = write!(
                s,
                "POST /api/delete HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}Content-Length: 4000\r\n\r\n{{",
                good(port, &token)
            );
            Some(s)
        })
        .collect();
    let t = Instant::now();
    let state = support::chaos::http_probe(port, "/api/state", Duration::from_secs(3));
    let mallory = FakePeer::start();
    let g = Instant::now();
    send_raw(p.p2p_port, &gossip("mallory", mallory.port, "stalled-1")).unwrap();
    let replied = mallory
        .wait_for("GOSSIP_REPLY", Duration::from_secs(3))
        .is_some();
    println!(
        "attack_see: with {} stalled POSTs: /api/state {state:?} ({:?} with the probe), GOSSIP_REPLY {replied} in {:?}",
        stalled.len(),
        t.elapsed(),
        g.elapsed()
    );
    assert!(
        replied && g.elapsed() <= Duration::from_secs(1),
        "GOSSIP not answered within 1 s"
    );
    // The page may shed load with a 503, but must answer quickly.
    assert!(
        state.is_ok() || state.as_ref().is_err_and(|e| e.contains("503")),
        "/api/state: {state:?}"
    );
    drop(stalled);
    assert!(still_held(&p, &fid), "a stalled body ran the delete");
}

#[test]
fn content_length_tricks_and_chunked_bodies_are_refused_and_run_nothing() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let body = id_body(&fid);
    let head = |extra: &str| {
        format!(
            "POST /api/delete HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}{extra}\r\n",
            good(port, &token)
        )
    };
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            "Content-Length -1",
            head("Content-Length: -1\r\n") + &body,
            &[400],
        ),
        (
            "Content-Length beyond u64",
            head("Content-Length: 99999999999999999999999\r\n") + &body,
            &[400, 413],
        ),
        (
            "two different Content-Lengths",
            head(&format!(
                "Content-Length: 2\r\nContent-Length: {}\r\n",
                body.len()
            )) + &body,
            &[400],
        ),
        (
            "Content-Length list",
            head(&format!("Content-Length: {0}, {0}\r\n", body.len())) + &body,
            &[400],
        ),
        (
            "chunked",
            head("Transfer-Encoding: chunked\r\n") + &chunked,
            &[411, 400],
        ),
        (
            "chunked and a Content-Length",
            head(&format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                chunked.len()
            )) + &chunked,
            &[411, 400],
        ),
        ("no Content-Length", head("") + &body, &[411]),
    ];
    for (what, req, want) in cases {
        let a = raw(port, req.as_bytes(), Duration::from_secs(8))
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert!(want.contains(&a.status), "{what}: {a:?}");
        assert!(still_held(&p, &fid), "{what} ran the delete");
    }
}

#[test]
fn a_signed_content_length_is_refused() {
    // A proxy in front (documented) and the peer must agree on framing; a
    // length that only one of them reads is how requests get smuggled.
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let body = id_body(&fid);
    let req = format!(
        "POST /api/delete HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}Content-Length: +{}\r\n\r\n{body}",
        good(port, &token),
        body.len()
    );
    let a = raw(port, req.as_bytes(), Duration::from_secs(5)).expect("answer");
    assert_eq!(a.status, 400, "{a:?}");
    assert!(still_held(&p, &fid), "the delete ran");
}

#[test]
fn a_body_one_byte_over_four_kib_is_413_and_one_of_four_kib_is_read() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    // Valid JSON padded to an exact length with spaces after the object.
    let padded = |len: usize| {
        let b = id_body(&fid);
        format!("{b}{}", " ".repeat(len - b.len()))
    };
    let a = post(port, "/api/get", &good(port, &token), &padded(4097));
    assert_eq!(a.status, 413, "{a:?}");
    let a = post(port, "/api/get", &good(port, &token), &padded(4096));
    assert_eq!(a.status, 200, "a 4 KiB body: {a:?}");
    // A huge body announced up front is refused without being read.
    let started = Instant::now();
    let req = format!(
        "POST /api/get HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}Content-Length: 1073741824\r\n\r\n",
        good(port, &token)
    );
    let a = raw(port, req.as_bytes(), Duration::from_secs(5)).expect("answer");
    assert_eq!(a.status, 413, "{a:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_ten_thousand_char_id_an_empty_id_or_an_ambiguous_prefix_acts_on_nothing() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let mallory = FakePeer::start();
    announce_files(
        &p,
        &mallory,
        &[
            record(&format!("abc1{}", "0".repeat(60)), "one"),
            record(&format!("abc2{}", "0".repeat(60)), "two"),
        ],
    );
    let long = "a".repeat(10_000);
    for (what, id, want) in [
        ("a 10 000-char id", long.as_str(), &[400u16, 404, 413][..]),
        ("an empty id", "", &[400, 404][..]),
        ("an ambiguous prefix", "abc", &[404, 409][..]),
    ] {
        for path in ["/api/get", "/api/delete"] {
            let a = post(port, path, &good(port, &token), &id_body(id));
            assert!(want.contains(&a.status), "{what} {path}: {a:?}");
            assert!(a.body.len() < 2048, "{what}: a {} B answer", a.body.len());
        }
    }
    thread::sleep(Duration::from_millis(500));
    assert!(
        mallory.of_type("GET_FILE").is_empty(),
        "an ambiguous get fetched something"
    );
    assert!(still_held(&p, &fid));
    assert_eq!(p.files().len(), 3, "a file went missing");
    let mut p = p;
    assert!(p.alive());
}

#[test]
fn deleting_a_file_we_do_not_own_is_409_and_tells_no_one() {
    let (p, token, _fid) = owner_peer("alice");
    let port = p.http_port;
    let mallory = FakePeer::start();
    let theirs = format!("beef{}", "1".repeat(60));
    announce_files(&p, &mallory, &[record(&theirs, "theirs.txt")]);
    mallory.clear();
    let a = post(port, "/api/delete", &good(port, &token), &id_body(&theirs));
    assert_eq!(a.status, 409, "{a:?}");
    let v: Value = serde_json::from_slice(&a.body).expect("JSON");
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    thread::sleep(Duration::from_millis(500));
    assert!(mallory.of_type("DELETE").is_empty(), "a DELETE was sent");
    assert!(p.file(&theirs).is_some(), "the entry was dropped");
}

#[test]
fn a_burst_of_a_thousand_action_posts_leaves_gossip_answered_within_a_second() {
    let (p, token, fid) = owner_peer("alice");
    let port = p.http_port;
    let done = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (token, fid, done, statuses) =
                (token.clone(), fid.clone(), done.clone(), statuses.clone());
            thread::spawn(move || {
                for i in 0..125 {
                    // Half with a wrong token, half a get of a file held.
                    let headers = if (w + i) % 2 == 0 {
                        good(port, &token)
                    } else {
                        good(port, &"0".repeat(32))
                    };
                    let req = format!(
                        "POST /api/get HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\n\r\n{}",
                        id_body(&fid).len(),
                        id_body(&fid)
                    );
                    let s = raw(port, req.as_bytes(), Duration::from_secs(5)).map(|a| a.status);
                    statuses.lock().unwrap().push(s);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Mid-burst, a GOSSIP must still be answered within a second.
    let mut answers = Vec::new();
    for n in 0..5 {
        wait_until(WAIT, || done.load(Ordering::SeqCst) >= 100 + n * 150);
        // A fresh listener each time: replies to one address are rate-limited.
        let mallory = FakePeer::start();
        let t = Instant::now();
        send_raw(
            p.p2p_port,
            &gossip(&format!("mallory{n}"), mallory.port, &format!("burst-{n}")),
        )
        .expect("send GOSSIP");
        let got = mallory
            .wait_for("GOSSIP_REPLY", Duration::from_secs(5))
            .is_some();
        answers.push((got, t.elapsed(), done.load(Ordering::SeqCst)));
    }
    for w in workers {
        w.join().unwrap();
    }
    let took = started.elapsed();
    let statuses = statuses.lock().unwrap();
    let unanswered = statuses.iter().filter(|s| s.is_none()).count();
    let bad: Vec<_> = statuses
        .iter()
        .flatten()
        .filter(|s| ![200, 403, 503].contains(*s))
        .collect();
    println!(
        "attack_see: 1000 action POSTs in {took:?}, {unanswered} unanswered, GOSSIP answers (ok, time, posts done): {answers:?}"
    );
    for (got, t, at) in &answers {
        assert!(
            *got && *t <= Duration::from_secs(1),
            "GOSSIP answered {got} after {t:?} at {at} posts"
        );
    }
    assert!(bad.is_empty(), "unexpected statuses {bad:?}");
    assert_eq!(unanswered, 0, "POSTs left unanswered");
    let mut p = p;
    assert!(p.alive());
    assert!(still_held(&p, &fid));
}

#[test]
fn an_action_on_an_id_with_terminal_escapes_prints_it_escaped() {
    let (p, token, _fid) = owner_peer("alice");
    let port = p.http_port;
    let mallory = FakePeer::start();
    let evil = "e\u{1b}[2J\u{1b}]0;pwned\u{7}\r\n\u{202e}vil";
    announce_files(&p, &mallory, &[record(evil, "evil\u{1b}[31mname")]);
    let before = p.lines().len();
    for (path, id) in [
        ("/api/get", evil),
        ("/api/delete", evil),
        ("/api/get", "\u{1b}[2Jnope"),
    ] {
        let a = post(port, path, &good(port, &token), &id_body(id));
        assert!(a.status < 500, "{path}: {a:?}");
        let text = a.body_text();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "raw escapes in the answer: {text:?}"
        );
    }
    // Wait for the menu lines the actions print, then look at every byte.
    thread::sleep(Duration::from_millis(800));
    let printed: Vec<String> = p.lines().into_iter().skip(before).collect();
    assert!(!printed.is_empty(), "the actions printed no line");
    for l in &printed {
        assert!(
            !l.chars()
                .any(|c| (c.is_control() && c != '\t') || c == '\u{202e}'),
            "an unescaped control in the menu line {l:?}"
        );
    }
}

// ---- the token file ------------------------------------------------------

/// Starts a peer on `dir` for about 3 s with `stdin` at /dev/null and its
/// log on stderr; what it printed and whether it was still running.
fn start_briefly(dir: &Path) -> Finished {
    let dir = dir.display().to_string();
    run_binary(
        &[
            "tok",
            "127.0.0.1",
            "0",
            "0",
            "--storage-dir",
            &dir,
            "--no-well-known",
            "--auto-fetch",
            "0",
            "--log-level",
            "info",
        ],
        Duration::from_secs(3),
    )
}

/// The checks every hostile token file shares: no panic, and either a
/// running peer with a fresh-looking 32-hex token or an exit with a line
/// that names the token file. The printed token, if any.
fn started_sanely(what: &str, f: &Finished) -> Option<String> {
    let all = format!("{}\n{}", f.stdout, f.stderr);
    assert!(!all.contains("panicked"), "{what}: a panic\n{all}");
    match f.status {
        // Still running after 3 s: it must have come up, not hung.
        None => {
            assert!(
                f.stdout.contains("listening on"),
                "{what}: hung before listening\n{all}"
            );
            let t = token_in(&f.stdout);
            // Actions may be turned off instead, if a line says why.
            assert!(
                t.is_some() || f.stdout.contains("http-token"),
                "{what}: neither a page token nor a line about http-token\n{all}"
            );
            t
        }
        Some(s) => {
            assert!(!s.success(), "{what}: exited 0\n{all}");
            assert!(
                all.contains("http-token"),
                "{what}: exit without a line naming http-token\n{all}"
            );
            None
        }
    }
}

#[test]
fn a_token_file_that_is_a_symlink_outside_is_neither_followed_nor_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let outside = tmp.path().join("outside-secret");
    let planted = "0123456789abcdef0123456789abcdef";
    std::fs::write(&outside, format!("{planted}\n")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("http-token")).unwrap();
    let f = start_briefly(&dir);
    let t = started_sanely("a symlink", &f);
    assert_ne!(t.as_deref(), Some(planted), "the symlink was followed");
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        format!("{planted}\n"),
        "the file outside was written"
    );
    // A dangling link must not be created through either.
    let _ = std::fs::remove_file(dir.join("http-token"));
    let target = tmp.path().join("created-through-link");
    std::os::unix::fs::symlink(&target, dir.join("http-token")).unwrap();
    let f = start_briefly(&dir);
    started_sanely("a dangling symlink", &f);
    assert!(!target.exists(), "a file was created through the link");
}

#[test]
fn a_token_file_that_is_a_fifo_or_a_directory_neither_hangs_nor_crashes_the_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("http-token");
    let rc = Command::new("mkfifo").arg(&fifo).status();
    if !rc.is_ok_and(|s| s.success()) {
        println!("skipped the FIFO case: mkfifo is not available");
    } else {
        let f = start_briefly(&dir);
        started_sanely("a FIFO", &f);
        std::fs::remove_file(&fifo).unwrap();
    }
    std::fs::create_dir(&fifo).unwrap();
    std::fs::write(fifo.join("inside"), b"keep me").unwrap();
    let f = start_briefly(&dir);
    started_sanely("a directory", &f);
    assert_eq!(
        std::fs::read(fifo.join("inside")).unwrap(),
        b"keep me",
        "the directory's content was touched"
    );
}

#[test]
fn empty_huge_or_newline_ended_token_files_give_a_sane_token() {
    use std::os::unix::fs::PermissionsExt;
    let valid = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("1 MB long", vec![b'a'; 1 << 20]),
        ("binary", vec![0xff; 64]),
        ("newline-ended", format!("{valid}\n").into_bytes()),
    ];
    for (what, bytes) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("storage");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("http-token");
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = start_briefly(&dir);
        let t = started_sanely(what, &f);
        if what == "newline-ended" {
            // `echo $TOKEN > http-token` is how a user sets one by hand.
            assert_eq!(
                t.as_deref(),
                Some(valid),
                "{what}: not reused\n{}",
                f.stderr
            );
        } else if let Some(t) = t {
            assert_ne!(t, "a".repeat(32), "{what}: a 1 MB file's prefix used");
        }
    }
}

#[test]
fn a_world_readable_token_file_is_tightened_or_reported() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("http-token");
    std::fs::write(&path, "a1b2c3d4e5f60718293a4b5c6d7e8f90").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = start_briefly(&dir);
    started_sanely("world-readable", &f);
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode() & 0o777)
        .ok();
    let said = format!("{}{}", f.stdout, f.stderr).contains("http-token");
    assert!(
        mode.is_some_and(|m| m & 0o077 == 0) || said,
        "the token stays readable by others ({mode:?}) without a word\n{}",
        f.stderr
    );
}

#[test]
fn a_pushed_or_downloaded_file_named_http_token_never_replaces_the_token() {
    // A folder of our own, kept for the restart at the end.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("storage");
    let (p, token, fid) = owner_peer_with(PeerBuilder::new("alice").storage(&dir));
    let port = p.http_port;
    let path = p.dir.join("http-token");
    let before = std::fs::read(&path).expect("http-token in the storage folder");
    let mallory = FakePeer::start();
    send_raw(p.p2p_port, &gossip("mallory", mallory.port, "push-1")).unwrap();
    assert!(wait_until(WAIT, || p
        .peer_ids()
        .contains(&"mallory".to_owned())));
    let planted = "00112233445566778899aabbccddeeff";
    let names = [
        "http-token",
        "./http-token",
        "../storage/http-token",
        "HTTP-TOKEN",
    ];
    for (n, name) in names.iter().enumerate() {
        let rec = support::files::file_record(
            name,
            planted.as_bytes(),
            "mallory",
            1_700_000_000 + n as u64,
        );
        send_raw(
            p.p2p_port,
            &support::files::file_data(&rec, planted.as_bytes()),
        )
        .unwrap();
    }
    // And a download, started from the page, of a file named http-token.
    let rec =
        support::files::file_record("http-token", planted.as_bytes(), "holder", 1_700_000_100);
    let dl_id = rec["file_id"].as_str().unwrap().to_owned();
    let reply = support::files::file_data(&rec, planted.as_bytes());
    let holder = support::files::FakeHolder::start(
        "holder",
        vec![rec],
        support::files::FakeStyle::default(),
        move |_, conn, _| support::files::reply_and_close(conn, &reply),
    );
    holder.send_gossip_reply(p.p2p_port).unwrap();
    assert!(
        wait_until(WAIT, || p.file(&dl_id).is_some()),
        "{}",
        log_tail(&p)
    );
    let a = post(port, "/api/get", &good(port, &token), &id_body(&dl_id));
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        wait_until(WAIT, || still_held(&p, &dl_id)),
        "the download of http-token never landed\n{}",
        log_tail(&p)
    );
    // Let the pushes land (or be refused) before looking.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "http-token was replaced"
    );
    let planted_headers = good(port, planted);
    let a = post(port, "/api/get", &planted_headers, &id_body(&fid));
    assert_eq!(a.status, 403, "the planted token acts: {a:?}");
    let a = post(port, "/api/get", &good(port, &token), &id_body(&fid));
    assert_eq!(a.status, 200, "the printed token stopped working: {a:?}");
    // After a restart on the same folder, the token is still the first one.
    drop(p);
    let f = start_briefly(&dir);
    assert_eq!(
        token_in(&f.stdout).as_deref(),
        Some(token.as_str()),
        "{}",
        f.stdout
    );
}

// ---- /metrics ------------------------------------------------------------

/// GETs (or HEADs) `path`: the answer, or a panic after 5 s.
fn fetch(port: u16, method: &str, path: &str) -> Answer {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    raw(port, req.as_bytes(), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no answer to {method} {path}"))
}

/// `/metrics`' body checked line by line and parsed.
fn metrics(port: u16, path: &str) -> (String, Scrape) {
    let mut a = fetch(port, "GET", path);
    for _ in 0..8 {
        if a.status != 503 {
            break;
        }
        thread::sleep(Duration::from_millis(300));
        a = fetch(port, "GET", path);
    }
    assert_eq!(a.status, 200, "{path}: {}", a.head);
    let text = String::from_utf8(a.body).expect("/metrics is UTF-8");
    for line in text.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty),
            "line not in the exposition format: {line:?}"
        );
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    (text, scrape)
}

/// Every counter sample as `metric{labels}` → value.
fn counters(s: &Scrape) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = s
        .samples
        .iter()
        .filter_map(|x| match x.value {
            prometheus_parse::Value::Counter(v) => {
                let mut labels: Vec<_> = x.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                labels.sort();
                Some((format!("{}{{{}}}", x.metric, labels.join(",")), v))
            }
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn metrics_answer_head_and_query_strings_and_counters_only_grow() {
    let p = PeerBuilder::new("alice").args(&QUIET).spawn();
    let port = p.http_port;
    let head = fetch(port, "HEAD", "/metrics");
    assert_eq!(head.status, 200, "{}", head.head);
    assert!(head.body.is_empty(), "HEAD carried a body");
    assert!(
        head.head.contains("text/plain; version=0.0.4"),
        "{}",
        head.head
    );
    let (_, first) = metrics(port, "/metrics");
    for q in [
        "/metrics?",
        "/metrics?name[]=x",
        "/metrics?%zz&a=%",
        "/metrics#frag",
    ] {
        metrics(port, q);
    }
    // Traffic between the scrapes: GOSSIPs, a junk message, a page read.
    let mallory = FakePeer::start();
    for n in 0..5 {
        let _ = send_raw(
            p.p2p_port,
            &gossip("mallory", mallory.port, &format!("g{n}")),
        );
        let _ = send_raw(p.p2p_port, b"{\"type\": 7}");
    }
    thread::sleep(Duration::from_millis(700));
    let (_, second) = metrics(port, "/metrics");
    let (a, b) = (counters(&first), counters(&second));
    assert!(!a.is_empty(), "no counters at all");
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>(),
        "the set of counter series changed"
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(y >= x, "{name} went from {x} to {y}");
    }
    assert!(
        a.iter().zip(&b).any(|(x, y)| y.1 > x.1),
        "no counter moved with traffic"
    );
}

#[test]
fn peer_ids_with_quotes_and_newlines_never_reach_metrics() {
    let p = PeerBuilder::new("alice").args(&QUIET).spawn();
    let mallory = FakePeer::start();
    let hostile = [
        "q\"uote} 1\nfake_metric 99",
        "back\\slash\nnewline",
        "# TYPE peershare_peers_tracked counter",
    ];
    for (n, id) in hostile.iter().enumerate() {
        send_raw(p.p2p_port, &gossip(id, mallory.port, &format!("h{n}"))).unwrap();
    }
    assert!(
        wait_until(WAIT, || p.peer_ids().len() >= hostile.len()),
        "hostile peers not tracked: {:?}",
        p.peer_ids()
    );
    let (text, scrape) = metrics(p.http_port, "/metrics");
    // Two hundred more peers with long ids: the scrape stays the same size
    // but for digits ("a few KiB whatever the peer has seen").
    for n in 0..200 {
        let id = format!("{n:03}-long-peer-id-{}", "x".repeat(40));
        let _ = send_raw(p.p2p_port, &gossip(&id, mallory.port, &format!("many-{n}")));
    }
    assert!(
        wait_until(WAIT, || p.peer_ids().len() >= 100),
        "{} peers tracked",
        p.peer_ids().len()
    );
    thread::sleep(Duration::from_millis(600));
    let (after, _) = metrics(p.http_port, "/metrics");
    println!(
        "attack_see: /metrics {} B with 3 peers, {} B with {} peers",
        text.len(),
        after.len(),
        p.peer_ids().len()
    );
    assert!(
        after.len() <= text.len() + 512,
        "{} B then {} B",
        text.len(),
        after.len()
    );
    assert!(!after.contains("long-peer-id"));
    for id in hostile {
        for part in id.split('\n') {
            assert!(!text.contains(part), "{part:?} in /metrics");
        }
    }
    assert!(!text.contains("fake_metric"));
    let tracked = scrape
        .samples
        .iter()
        .find(|s| s.metric == "peershare_peers_tracked")
        .expect("peers_tracked");
    assert!(
        matches!(tracked.value, prometheus_parse::Value::Gauge(v) if v >= 3.0),
        "{:?}",
        tracked.value
    );
}

#[test]
fn five_hundred_concurrent_scrapes_stay_within_bounded_memory() {
    let p = PeerBuilder::new("alice").args(&QUIET).spawn();
    let port = p.http_port;
    let pid = p.pid();
    metrics(port, "/metrics");
    let before = rss_anon_kib(pid).expect("RssAnon");
    let sampler = support::procfs::RssSampler::start(pid, Duration::from_millis(10));
    raise_fd_limit(2048);
    // Open 500 connections first, then send every request, then read.
    let mut conns: Vec<TcpStream> = (0..500)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    for s in &mut conns {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    }
    let (mut ok, mut busy, mut other) = (0, 0, 0);
    let started = Instant::now();
    for mut s in conns {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        if buf.starts_with(b"HTTP/1.1 200") {
            ok += 1;
        } else if buf.starts_with(b"HTTP/1.1 503") {
            busy += 1;
        } else {
            other += 1;
        }
    }
    let peak = sampler.peak_kib();
    println!(
        "attack_see: 500 concurrent scrapes in {:?}: {ok} ok, {busy} 503, {other} other; RssAnon {before} KiB before, peak {peak} KiB",
        started.elapsed()
    );
    assert!(ok > 0, "no scrape served");
    assert!(
        peak <= before + 16 * 1024,
        "RssAnon grew to {peak} KiB from {before}"
    );
    let mut p = p;
    assert!(p.alive());
    metrics(port, "/metrics");
}

// ---- /api/state search ---------------------------------------------------

#[test]
fn junk_search_parameters_answer_valid_json_quickly() {
    let p = PeerBuilder::new("alice")
        .args(&QUIET)
        .file("été.txt", b"summer")
        .file("plain.txt", b"plain")
        .spawn();
    let port = p.http_port;
    assert!(wait_until(WAIT, || p.files().len() == 2));
    let q7k = "x".repeat(7 * 1024);
    let queries = [
        format!("q={q7k}"),
        "q=%zz".into(),
        "q=%".into(),
        "q=%e9t%e9".into(),
        "q=%C3%A9t%C3%A9".into(),
        "q=%00%0a%1b".into(),
        "q=\u{00e9}t\u{00e9}".into(),
        "sort=;DROP&order=sideways".into(),
        "sort=size&sort=name&order=desc&order=asc".into(),
        "offset=1000000000000".into(),
        "offset=-1&limit=-1".into(),
        "limit=0".into(),
        "limit=99999999999999999999999".into(),
        "offset=1e3&limit=0x10".into(),
        "&&&==&q".into(),
    ];
    for q in &queries {
        let t = Instant::now();
        let a = fetch(port, "GET", &format!("/api/state?{q}"));
        let took = t.elapsed();
        let shown: String = q.chars().take(40).collect();
        assert!(took < Duration::from_secs(1), "{shown}: {took:?}");
        assert_eq!(a.status, 200, "{shown}: {}", a.head);
        let v: Value =
            serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("{shown}: not JSON ({e})"));
        let limit = v["limit"].as_u64().unwrap_or(0);
        assert!((1..=500).contains(&limit), "{shown}: limit {limit}");
        let files = v["files"].as_array().expect("files").len() as u64;
        assert!(files <= limit, "{shown}: {files} files");
    }
    // The unicode search finds its file.
    for q in ["q=%C3%A9t%C3%A9", "q=%C3%A9T%C3%A9"] {
        let v: Value =
            serde_json::from_slice(&fetch(port, "GET", &format!("/api/state?{q}")).body).unwrap();
        assert_eq!(v["files_matching"], 1, "{q}: {v}");
    }
    // A head over 8 KiB is the documented 431, quickly.
    let a = fetch(
        port,
        "GET",
        &format!("/api/state?q={}", "y".repeat(10 * 1024)),
    );
    assert_eq!(a.status, 431, "{}", a.head);
}

#[test]
fn a_search_is_case_insensitive_beyond_ascii() {
    let p = PeerBuilder::new("alice")
        .args(&QUIET)
        .file("été.txt", b"summer")
        .spawn();
    assert!(wait_until(WAIT, || p.files().len() == 1));
    let a = fetch(p.http_port, "GET", "/api/state?q=%C3%89T%C3%89");
    let v: Value = serde_json::from_slice(&a.body).expect("JSON");
    assert_eq!(v["files_matching"], 1, "{v}");
}

// ---- listening options and the environment -------------------------------

#[test]
fn unbindable_or_unresolvable_addresses_exit_non_zero_with_one_line() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let bind_busy = format!("127.0.0.1:{busy_port}");
    let cases: [(&str, Vec<&str>); 5] = [
        ("an empty --http-host", vec!["--http-host", ""]),
        (
            "an unresolvable --http-host",
            vec!["--http-host", "no-such-host.invalid"],
        ),
        ("--bind on a port in use", vec!["--bind", &bind_busy]),
        (
            "--bind on an address not ours",
            vec!["--bind", "192.0.2.1:0"],
        ),
        ("--http-host not ours", vec!["--http-host", "192.0.2.1"]),
    ];
    for (what, extra) in cases {
        let mut args = vec![
            "bad",
            "127.0.0.1",
            "0",
            "0",
            "--no-well-known",
            "--auto-fetch",
            "0",
        ];
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s").display().to_string();
        args.extend(["--storage-dir", &dir]);
        args.extend(extra);
        let t = Instant::now();
        let f = run_binary(&args, Duration::from_secs(15));
        let all = format!("{}{}", f.stdout, f.stderr);
        println!(
            "attack_see: {what}: {:?} after {:?}: {}",
            f.status,
            t.elapsed(),
            all.trim()
        );
        let status = f
            .status
            .unwrap_or_else(|| panic!("{what}: still running\n{all}"));
        assert!(!status.success(), "{what}: exit 0\n{all}");
        assert!(!all.contains("panicked"), "{what}: a panic\n{all}");
        let lines = all.lines().filter(|l| !l.trim().is_empty()).count();
        assert!((1..=3).contains(&lines), "{what}: {lines} lines\n{all}");
    }
    drop(busy);
}

#[test]
fn a_garbage_environment_value_exits_2_with_a_line_naming_it() {
    for (key, value) in [
        ("PEERSHARE_GOSSIP_INTERVAL", "abc"),
        ("PEERSHARE_PEER_TIMEOUT", "-5"),
        ("PEERSHARE_MAX_FILE_SIZE", "1e999"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peershare"));
        let mut child = without_option_env(&mut cmd)
            .args([
                "envy",
                "127.0.0.1",
                "0",
                "0",
                "--no-well-known",
                "--storage-dir",
            ])
            .arg(tmp.path().join("s"))
            .env(key, value)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = support::wait_exit(&mut child, Duration::from_secs(10));
        if status.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{key}={value:?}: {all}"
        );
        let name = key
            .trim_start_matches("PEERSHARE_")
            .to_lowercase()
            .replace('_', "-");
        assert!(
            all.contains(key) || all.contains(&name),
            "{key}={value:?}: the line names neither {key} nor --{name}: {all}"
        );
        assert!(!all.contains("panicked"), "{all}");
    }
}
