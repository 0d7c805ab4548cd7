//! The stats page and its JSON API under a full catalog (18 000 files with
//! long names, loaded from a metadata.json written before start): clients
//! that ask for the page and never read can't grow the peer's memory or
//! stall its loop, and the file list comes in pages. Real processes on
//! 127.0.0.1; each test prints its figures (`trust_http: ...`).
mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::procfs::*;
use support::*;

/// Files in the catalog: the count cap, with names that fit the catalog's
/// byte budget too.
const FULL: usize = 20_000;

/// Where the last page of 100 files starts.
const LAST_PAGE: usize = FULL - 100;

/// The stated bound on the peer's anonymous memory (a debug build).
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// How fast the peer must answer a GOSSIP and serve its page.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// A long file name that sorts by `i` (20 000 of them fit the catalog's
/// byte budget).
fn long_name(i: usize) -> String {
    format!(
        "catalog-{i:05}-{}.bin",
        "a-rather-long-file-name-".repeat(3)
    )
}

/// A peer whose catalog is full. Holders loaded from the metadata file are
/// kept for one peer timeout, so it is long here.
fn full_peer() -> (PeerProc, tempfile::TempDir) {
    full_peer_with(PeerBuilder::new("victim"))
}

/// [`full_peer`] from a builder.
fn full_peer_with(builder: PeerBuilder) -> (PeerProc, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("storage");
    // Each file held by two other peers.
    support::files::write_catalog(
        &dir,
        FULL,
        long_name,
        "owner-of-many-files",
        &["holder-one", "holder-two"],
    );
    let peer = builder
        .storage(&dir)
        .args(&["--peer-timeout", "600"])
        .spawn();
    (peer, tmp)
}

/// A GET read to its end within `within`: (status line, body, time taken).
fn timed_get(port: u16, path: &str, within: Duration) -> Option<(String, Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    s.set_write_timeout(Some(within)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if started.elapsed() > within {
            return None;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == b'\r')?]).into();
    Some((status, buf[split + 4..].to_vec(), started.elapsed()))
}

/// `/api/state` with a query, parsed.
fn api(port: u16, query: &str) -> Value {
    let (status, body, _) = timed_get(port, &format!("/api/state{query}"), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("/api/state{query} did not answer"));
    assert_eq!(status, "HTTP/1.1 200 OK", "/api/state{query}");
    serde_json::from_slice(&body).expect("/api/state is JSON")
}

/// Whether the peer closed `s` (its reply, if any, is read and dropped).
fn closed(mut s: &TcpStream) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

#[test]
fn a_full_catalog_is_served_in_pages_and_the_last_page_holds_the_last_files() {
    let (peer, _tmp) = full_peer();
    let port = peer.http_port;

    let first = api(port, "");
    assert_eq!(first["files_total"], FULL);
    assert_eq!(first["offset"], 0);
    let files = first["files"].as_array().expect("files");
    assert_eq!(files.len(), first["limit"].as_u64().unwrap() as usize);
    assert!(files.len() >= 50 && files.len() < FULL, "{}", files.len());
    assert_eq!(files[0]["file_name"], long_name(0));
    for key in ["peer_id", "host", "port", "peers", "transfers"] {
        assert!(first.get(key).is_some(), "missing {key}");
    }

    let last = api(port, &format!("?offset={LAST_PAGE}&limit=100"));
    assert_eq!(last["files_total"], FULL);
    assert_eq!(last["offset"], LAST_PAGE);
    assert_eq!(last["limit"], 100);
    let names: Vec<&str> = last["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["file_name"].as_str().expect("name"))
        .collect();
    let expected: Vec<String> = (LAST_PAGE..FULL).map(long_name).collect();
    assert_eq!(names, expected);
    let f = &last["files"][99];
    assert_eq!(f["file_id"], format!("{:064x}", FULL - 1));
    assert_eq!(f["peers_with_file"][1], "holder-two");

    // Past the end: an empty page, still with the total.
    let past = api(port, "?offset=25000&limit=10");
    assert_eq!(past["files"].as_array().map(Vec::len), Some(0));
    assert_eq!(past["files_total"], FULL);
    // Asking for more than a page holds gets the most a page holds.
    let big = api(port, "?limit=100000");
    let most = big["limit"].as_u64().expect("limit") as usize;
    assert!(most < FULL && big["files"].as_array().unwrap().len() == most);

    // The page itself: fast, the first files, a link onward, the total.
    let (status, page, took) =
        timed_get(port, "/", ANSWER_WITHIN).expect("the page within a second");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let page = String::from_utf8(page).expect("UTF-8 page");
    assert!(page.contains(&long_name(0)));
    assert!(!page.contains(&long_name(FULL - 1)));
    assert!(
        page.contains(&format!("{FULL} files")),
        "no total on the page"
    );
    assert!(
        page.contains("href=\"/?offset="),
        "no link to the next page"
    );
    eprintln!("trust_http: page with {FULL} files rendered in {took:?}");
    // Without scripts, the links page through the catalog.
    let (_, tail, took) = timed_get(port, &format!("/?offset={LAST_PAGE}"), ANSWER_WITHIN)
        .expect("a later page within a second");
    let tail = String::from_utf8(tail).expect("UTF-8 page");
    assert!(tail.contains(&long_name(FULL - 1)));
    assert!(!tail.contains(&long_name(0)));
    eprintln!("trust_http: page at offset {LAST_PAGE} in {took:?}");
}

#[test]
fn a_hundred_clients_a_second_that_never_read_the_page_cost_no_memory_and_no_stall() {
    raise_fd_limit(8192);
    let (mut peer, _tmp) = full_peer();
    let port = peer.http_port;
    let fake = FakePeer::start();
    let baseline = rss_anon_kib(peer.pid()).expect("RssAnon");
    let rss = RssSampler::start(peer.pid(), Duration::from_millis(10));

    // Six waves of 100 clients, one a second, half asking for the page and
    // half for the API; none reads a byte.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
    let attack = {
        let (stop, clients) = (stop.clone(), clients.clone());
        thread::spawn(move || {
            for _wave in 0..6 {
                for i in 0..100 {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let path = if i % 2 == 0 { "/" } else { "/api/state" };
                    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
                    clients.lock().unwrap().push(s);
                }
                for _ in 0..10 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };

    // Meanwhile: a GOSSIP answered and the page served, each within a
    // second, again and again.
    let started = Instant::now();
    let (mut worst_gossip, mut worst_page) = (Duration::ZERO, Duration::ZERO);
    let mut failures = Vec::new();
    let mut probes = 0;
    while started.elapsed() < Duration::from_secs(7) {
        probes += 1;
        fake.clear();
        let t = Instant::now();
        let id = format!("{:032x}", rand::random::<u128>());
        let who = format!("probe-{probes}");
        send_raw(peer.p2p_port, &gossip(&who, fake.port, &id)).expect("send GOSSIP");
        match fake.wait_for("GOSSIP_REPLY", ANSWER_WITHIN) {
            Some(_) => worst_gossip = worst_gossip.max(t.elapsed()),
            None => failures.push(format!("probe {probes}: no GOSSIP_REPLY within 1 s")),
        }
        match timed_get(port, "/", ANSWER_WITHIN) {
            Some((status, body, took)) if status == "HTTP/1.1 200 OK" => {
                worst_page = worst_page.max(took);
                assert!(String::from_utf8_lossy(&body).contains("Peer Stats for victim"));
            }
            Some((status, _, took)) => failures.push(format!(
                "probe {probes}: page answered {status} in {took:?}"
            )),
            None => failures.push(format!("probe {probes}: no page within 1 s")),
        }
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    let _ = attack.join();
    let peak = rss.stop();
    let clients = std::mem::take(&mut *clients.lock().unwrap());
    eprintln!(
        "trust_http: {} never-reading clients: peak RssAnon {peak} KiB ({:.1} MiB, baseline {baseline} KiB); \
         worst GOSSIP answer {worst_gossip:?}, worst page {worst_page:?} over {probes} probes",
        clients.len(),
        peak as f64 / 1024.0
    );
    // One render per route and half second, however many ask, and one
    // more per route each time the state changes (each probe's GOSSIP
    // brings a new peer and file, which the next answer must show).
    let renders = peer.log().matches("http: rendered").count();
    let windows = started.elapsed().as_millis() as usize / 500 + 1 + probes;
    eprintln!(
        "trust_http: {renders} renders for {} requests",
        clients.len() + probes
    );
    assert!(
        renders <= 2 * windows,
        "{renders} renders in {windows} half seconds and state changes"
    );
    assert!(peer.alive(), "the peer died");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        peak < RSS_BOUND_KIB,
        "peak RssAnon {peak} KiB over {RSS_BOUND_KIB} KiB"
    );

    // Every one of them is closed by the peer in the end.
    for s in &clients {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let all_closed = wait_until(Duration::from_secs(30), || {
        clients.iter().filter(|s| !closed(s)).count() == 0
    });
    let open = clients.iter().filter(|s| !closed(s)).count();
    assert!(all_closed, "{open} of {} clients still open", clients.len());
}

#[test]
fn a_client_that_stops_reading_midway_is_closed_while_others_are_served() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: needs the debug build's PEERSHARE_TEST_HTTP_SNDBUF knob");
        return;
    }
    // A small kernel send buffer on the peer's side (a debug-build knob),
    // as on a slow link: on loopback the kernel would take the whole
    // answer and the peer would hold nothing.
    let (mut peer, _tmp) =
        full_peer_with(PeerBuilder::new("victim").env("PEERSHARE_TEST_HTTP_SNDBUF", "16384"));
    let port = peer.http_port;
    // A small receive window too: the peer holds most of the answer.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&addr.into()).expect("connect");
    let mut slow: TcpStream = socket.into();
    write!(
        slow,
        "GET /api/state?limit=500 HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .expect("request");
    let asked = Instant::now();

    // Others are served meanwhile.
    thread::sleep(Duration::from_millis(500));
    let (status, _, took) = timed_get(port, "/", ANSWER_WITHIN).expect("page while one stalls");
    assert_eq!(status, "HTTP/1.1 200 OK");

    let reason = "HTTP client too slow to read its response";
    assert!(
        wait_until(Duration::from_secs(15), || peer.log().contains(reason)),
        "the stalled client was not closed; connection lines:\n{}",
        peer.log()
            .lines()
            .filter(|l| l.contains("connection") || l.contains("Http"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let closed_after = asked.elapsed();
    // What it can still read is less than the whole answer: the rest was
    // dropped with the connection.
    slow.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = slow.read_to_end(&mut got);
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    eprintln!(
        "trust_http: a stalled reader of a {length}-byte answer closed after {closed_after:?} \
         ({} body bytes delivered); page meanwhile in {took:?}",
        got.len() - head_end
    );
    assert!(got.len() - head_end < length, "the whole answer was sent");
    // Not before the 5 s without progress (STALL_TIMEOUT); at the latest
    // 10 s after the request (SEND_TIMEOUT), which is what closes a client
    // whose kernel still takes a few bytes now and then.
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(12)).contains(&closed_after),
        "closed after {closed_after:?}"
    );
    assert!(peer.alive());
}

#[test]
fn never_reading_clients_of_distinct_pages_meet_the_total_cap_and_get_a_503() {
    const CLIENTS: usize = 90;
    if !cfg!(debug_assertions) {
        eprintln!("skipped: needs the debug build's PEERSHARE_TEST_HTTP_SNDBUF knob");
        return;
    }
    raise_fd_limit(8192);
    // The peer's kernel takes little of each answer (as on slow links), so
    // what the clients don't read stays with the peer, up to its cap.
    let (mut peer, _tmp) =
        full_peer_with(PeerBuilder::new("victim").env("PEERSHARE_TEST_HTTP_SNDBUF", "16384"));
    let port = peer.http_port;
    let fake = FakePeer::start();
    let baseline = rss_anon_kib(peer.pid()).expect("RssAnon");
    let rss = RssSampler::start(peer.pid(), Duration::from_millis(10));

    // 90 distinct pages of 500 files (about 150 KB each, 13 MB in all),
    // none read; in waves a second apart, so the render budget (a few
    // dozen a second) is not what turns them away.
    let wave = peershare::http::MAX_RENDERS_PER_SEC as usize;
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .filter_map(|i| {
            if i > 0 && i % wave == 0 {
                thread::sleep(Duration::from_millis(1100));
            }
            // A small receive window on the client too: loopback's would
            // otherwise take most of each answer off the peer's hands.
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            sock.set_recv_buffer_size(4096).ok()?;
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            sock.connect(&addr.into()).ok()?;
            let mut s: TcpStream = sock.into();
            let offset = i * 220;
            write!(
                s,
                "GET /api/state?offset={offset}&limit=500 HTTP/1.1\r\nHost: localhost\r\n\r\n"
            )
            .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(clients.len(), CLIENTS);

    // The loop answers a GOSSIP meanwhile.
    thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let id = format!("{:032x}", rand::random::<u128>());
    send_raw(peer.p2p_port, &gossip("probe", fake.port, &id)).expect("send GOSSIP");
    assert!(
        fake.wait_for("GOSSIP_REPLY", ANSWER_WITHIN).is_some(),
        "no GOSSIP_REPLY within 1 s"
    );
    let gossip_in = t.elapsed();
    let peak = rss.stop();

    // Each got a 200 (held by the peer) or a 503 (over the cap).
    let mut statuses = Vec::new();
    for mut s in &clients {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut line = [0u8; 12];
        let status = match s.read_exact(&mut line) {
            Ok(()) => String::from_utf8_lossy(&line[9..12]).to_string(),
            Err(e) => format!("{e}"),
        };
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| *s == "200").count();
    let refused = statuses.iter().filter(|s| *s == "503").count();
    eprintln!(
        "trust_http: {CLIENTS} never-read pages of 500 files: {ok} answered, {refused} got 503; \
         peak RssAnon {peak} KiB ({:.1} MiB, baseline {baseline} KiB); GOSSIP answered in {gossip_in:?}",
        peak as f64 / 1024.0
    );
    assert_eq!(ok + refused, CLIENTS, "{statuses:?}");
    assert!(ok >= 10, "{statuses:?}");
    assert!(refused >= 10, "{statuses:?}");
    assert!(
        peak < RSS_BOUND_KIB,
        "peak RssAnon {peak} KiB over {RSS_BOUND_KIB} KiB"
    );
    assert!(peer.alive());
}
