//! Real peershare processes on real sockets under faults (127.0.0.1 only,
//! made in userspace): a chaos proxy between a downloader and a holder,
//! kernel socket buffers shrunk to 4 KiB under a 64 MiB transfer, and a
//! fake peer that behaves like the network's buggy Python peers.
//!
//! The downloader reaches the holder twice: directly, and through the proxy
//! under a second identity (`via-proxy`, advertised by a GOSSIP_REPLY whose
//! port is the proxy's). That identity was seen last, so it is tried first.
mod support;

use serde_json::Value;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::chaos::*;
use support::*;

/// The harness's transfer timeouts (`--connect-timeout 1 --idle-timeout 2`).
const CONNECT: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(2);
/// The longest one source may take to fail.
const PER_SOURCE: Duration = Duration::from_secs(CONNECT.as_secs() + IDLE.as_secs());
/// Slack for process scheduling on a loaded machine (debug build).
const MARGIN: Duration = Duration::from_secs(2);

const ALIAS: &str = "via-proxy";

fn holders(file: &Value) -> Vec<String> {
    file["peers_with_file"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(String::from))
        .collect()
}

/// A holder with one file and a downloader that tracks it (and holds a
/// file of its own, to serve while it downloads).
struct Net {
    holder: PeerProc,
    down: PeerProc,
    name: String,
    bytes: Vec<u8>,
    record: Value,
    id: String,
    own: Vec<u8>,
    own_id: String,
}

fn holder_and_downloader(tag: &str, bytes: Vec<u8>) -> Net {
    let name = format!("{tag}.bin");
    let holder = PeerBuilder::new(&format!("holder-{tag}"))
        .args(&QUIET)
        .file(&name, &bytes)
        .spawn();
    let own = pseudo_random_bytes(48 * 1024, 7);
    let down = PeerBuilder::new(&format!("down-{tag}"))
        .args(&QUIET)
        .well_known(holder.p2p_port)
        .file("own.bin", &own)
        .spawn();
    let record = holder
        .files()
        .into_iter()
        .find(|f| f["file_name"] == name.as_str())
        .expect("the holder lists its file");
    let id = record["file_id"].as_str().unwrap().to_string();
    assert!(
        wait_until(WAIT, || down
            .file(&id)
            .is_some_and(|f| holders(&f).contains(&holder.id))),
        "downloader never saw the holder's file: {:?}",
        down.state()
    );
    let own_id = down
        .files()
        .into_iter()
        .find(|f| f["file_name"] == "own.bin")
        .and_then(|f| f["file_id"].as_str().map(String::from))
        .expect("own file listed");
    Net {
        holder,
        down,
        name,
        bytes,
        record,
        id,
        own,
        own_id,
    }
}

/// Tells `down` that `alias` at 127.0.0.1:`port` holds `record`, and waits
/// until it lists `alias` as a holder.
fn advertise(down: &PeerProc, alias: &str, port: u16, record: &Value) {
    let file = serde_json::json!({
        "file_name": record["file_name"], "file_size": record["file_size"],
        "file_id": record["file_id"], "file_owner": record["file_owner"],
        "file_timestamp": record["file_timestamp"],
    });
    // The proxy fronts a peershare peer: it serves ranges, as the holder
    // says of itself (so the alias, seen last, is tried first).
    let reply = serde_json::json!({
        "type": "GOSSIP_REPLY", "host": "127.0.0.1", "port": port, "peerId": alias,
        "files": [file], "ranges": 1,
    });
    send_raw(down.p2p_port, reply.to_string().as_bytes()).expect("send GOSSIP_REPLY");
    let id = record["file_id"].as_str().unwrap();
    assert!(
        wait_until(WAIT, || down
            .file(id)
            .is_some_and(|f| holders(&f).iter().any(|h| h == alias))),
        "{alias} not listed as a holder: {:?}",
        down.state()
    );
}

/// A `get` typed at the menu.
struct Get {
    skip: usize,
    started: Instant,
}

/// How it ended.
#[derive(Debug)]
struct Got {
    line: String,
    elapsed: Duration,
    /// The peers it fetched from, in order.
    sources: Vec<String>,
}

fn start_get(down: &mut PeerProc, id: &str) -> Get {
    let skip = down.lines().len();
    down.send_line(&format!("get {id}"));
    Get {
        skip,
        started: Instant::now(),
    }
}

fn finish_get(down: &PeerProc, g: Get, timeout: Duration) -> Got {
    let mut end = None;
    let mut elapsed = Duration::ZERO;
    wait_until(timeout, || {
        end = down
            .lines()
            .into_iter()
            .skip(g.skip)
            .find(|l| l.starts_with("get: saved") || l.starts_with("get: no source left"));
        elapsed = g.started.elapsed();
        end.is_some()
    });
    let line = end.unwrap_or_else(|| {
        panic!(
            "get did not end within {timeout:?}; stdout: {:?}\nlog tail:\n{}",
            &down.lines()[g.skip..],
            tail(&down.log())
        )
    });
    let sources = down
        .lines()
        .into_iter()
        .skip(g.skip)
        .filter(|l| l.starts_with("get: fetching") || l.starts_with("get: resuming"))
        .filter_map(|l| l.rsplit_once(" from ").map(|(_, p)| p.to_string()))
        .collect();
    Got {
        line,
        elapsed,
        sources,
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The file `down` saved, by the name the saved line gives.
fn saved_bytes(down: &PeerProc, name: &str) -> Vec<u8> {
    std::fs::read(down.dir.join(name)).unwrap_or_default()
}

/// No temp file is left in the storage folder (the metadata writer's own
/// temp file comes and goes: wait for it).
fn no_partials(p: &PeerProc) -> bool {
    wait_until(Duration::from_secs(2), || {
        std::fs::read_dir(&p.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .all(|e| !e.file_name().to_string_lossy().starts_with(".partial-"))
            })
            .unwrap_or(false)
    })
}

/// How long the stats page takes to answer (None: it didn't, within 2 s).
fn page_latency(p: &PeerProc) -> Option<Duration> {
    let t = Instant::now();
    let body = http_get(p.http_port, "/")?;
    let took = t.elapsed();
    String::from_utf8_lossy(&body)
        .contains(&format!("Peer Stats for {}", p.id))
        .then_some(took)
}

/// GET_FILE for a file `p` holds, on a fresh connection; the time it took.
fn serves_file(p: &PeerProc, id: &str, bytes: &[u8]) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", p.p2p_port)).expect("connect");
    s.write_all(
        serde_json::json!({"type": "GET_FILE", "file_id": id})
            .to_string()
            .as_bytes(),
    )
    .expect("send GET_FILE");
    let reply = read_object(&mut s, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{} did not serve {id} within 2 s", p.id));
    assert_eq!(reply["file_id"], id);
    assert_eq!(
        reply["data"].as_str().map(|h| h.len()),
        Some(2 * bytes.len())
    );
    assert_eq!(
        reply["data"].as_str(),
        Some(faster_hex::hex_string(bytes).as_str())
    );
    t.elapsed()
}

// ---- through the chaos proxy ------------------------------------------------

/// A downloader, a holder, and a proxy in front of the holder advertised
/// to the downloader as [`ALIAS`].
fn proxied(tag: &str, mode: Mode, len: usize) -> (Net, ChaosProxy) {
    let net = holder_and_downloader(tag, pseudo_random_bytes(len, len as u64));
    let proxy = ChaosProxy::start(net.holder.p2p_port, mode);
    advertise(&net.down, ALIAS, proxy.port, &net.record);
    (net, proxy)
}

/// A mode that only slows things down: the get succeeds through the proxy.
fn benign(tag: &str, mode: Mode, len: usize) -> Got {
    let (mut net, proxy) = proxied(tag, mode, len);
    let g = start_get(&mut net.down, &net.id);
    let got = finish_get(&net.down, g, WAIT);
    println!("{mode:?}: {got:?}");
    assert!(
        got.line.starts_with(&format!("get: saved {}", net.name)) && got.line.ends_with(ALIAS),
        "{got:?}\nlog:\n{}",
        tail(&net.down.log())
    );
    assert!(!got.line.contains("UNVERIFIED"), "{}", got.line);
    assert_eq!(got.sources, vec![ALIAS.to_string()]);
    assert!(got.elapsed < 2 * PER_SOURCE + MARGIN, "{got:?}");
    assert!(
        saved_bytes(&net.down, &net.name) == net.bytes,
        "bytes differ"
    );
    // (The relay counts a write once it returns: allow it a moment.)
    assert!(
        wait_until(Duration::from_secs(1), || proxy.down_bytes()
            > 2 * len as u64),
        "only {} bytes went through the proxy",
        proxy.down_bytes()
    );
    assert_eq!(proxy.faulted(), 0);
    got
}

/// A mode that breaks the transfer: the get falls back to the holder
/// itself, within the time two sources may take; `reason` is what the
/// downloader logs for the proxied source (its log names [`ALIAS`] with
/// the proxy's address).
fn falls_back(tag: &str, mode: Mode, len: usize, reason: &str) -> Got {
    let (mut net, proxy) = proxied(tag, mode, len);
    let reason = reason.replace(ALIAS, &format!("{ALIAS} (127.0.0.1:{})", proxy.port));
    let g = start_get(&mut net.down, &net.id);
    let bound = 2 * PER_SOURCE + MARGIN;
    let got = finish_get(&net.down, g, bound + WAIT);
    println!("{mode:?}: {got:?}");
    assert!(
        got.line.starts_with(&format!("get: saved {}", net.name))
            && got.line.ends_with(&format!("from {}", net.holder.id)),
        "{got:?}\nlog:\n{}",
        tail(&net.down.log())
    );
    assert!(!got.line.contains("UNVERIFIED"), "{}", got.line);
    assert_eq!(got.sources, vec![ALIAS.to_string(), net.holder.id.clone()]);
    assert!(
        got.elapsed < bound,
        "took {:?} (bound {bound:?})",
        got.elapsed
    );
    if !matches!(mode, Mode::Delay(_)) {
        assert!(proxy.faulted() >= 1, "the fault never fired");
    }
    let log = net.down.log();
    assert!(
        log.contains(&reason),
        "no {reason:?} in the log:\n{}",
        tail(&log)
    );
    assert!(
        saved_bytes(&net.down, &net.name) == net.bytes,
        "bytes differ"
    );
    // The downloader let go of the broken connection, and left no temp file.
    assert!(
        proxy.wait_idle(IDLE + MARGIN),
        "{} relays left",
        proxy.active()
    );
    assert!(no_partials(&net.down));
    assert!(net.down.alive());
    got
}

#[test]
fn delay_below_the_idle_timeout_still_delivers_through_the_proxy() {
    let d = Duration::from_millis(400);
    let got = benign("delay", Mode::Delay(d), 256 * 1024);
    assert!(got.elapsed >= d, "{got:?}");
}

#[test]
fn a_bandwidth_cap_still_delivers_through_the_proxy() {
    let (len, bps) = (128 * 1024, 256 * 1024);
    let got = benign("bandwidth", Mode::Bandwidth(bps), len);
    // The hex is twice the file: about a second at the cap.
    let floor = Duration::from_secs_f64(0.9 * (2 * len) as f64 / bps as f64);
    assert!(got.elapsed >= floor, "{got:?}: faster than the cap");
}

#[test]
fn one_byte_writes_still_deliver_through_the_proxy() {
    benign("onebyte", Mode::OneByteWrites, 24 * 1024);
}

#[test]
fn delay_past_the_idle_timeout_falls_back_to_the_holder() {
    let got = falls_back(
        "longdelay",
        Mode::Delay(IDLE + Duration::from_millis(800)),
        64 * 1024,
        "via-proxy failed: timed out before the first byte",
    );
    assert!(got.elapsed >= IDLE, "{got:?}");
}

#[test]
fn reset_mid_file_data_falls_back_to_the_holder() {
    falls_back(
        "reset",
        Mode::ResetAfter(100_000),
        256 * 1024,
        "via-proxy failed: closed mid-transfer at ",
    );
}

#[test]
fn clean_close_mid_file_data_falls_back_to_the_holder() {
    falls_back(
        "close",
        Mode::CloseAfter(100_000),
        256 * 1024,
        "via-proxy failed: closed mid-transfer at ",
    );
}

#[test]
fn close_inside_the_envelope_falls_back_to_the_holder() {
    falls_back(
        "closehead",
        Mode::CloseAfter(40),
        64 * 1024,
        "via-proxy failed: closed the connection before sending any data",
    );
}

#[test]
fn a_corrupted_hex_digit_falls_back_to_the_holder() {
    falls_back(
        "corrupt",
        Mode::CorruptByte(200_000),
        256 * 1024,
        "from via-proxy: 262144 bytes that don't match the id",
    );
}

#[test]
fn a_stall_fails_at_the_idle_timeout_while_the_peer_keeps_serving() {
    let (mut net, proxy) = proxied("stall", Mode::StallAfter(100_000), 1024 * 1024);
    let g = start_get(&mut net.down, &net.id);
    assert!(
        proxy.wait_faulted(1, Duration::from_secs(5)),
        "the proxy never stalled; log:\n{}",
        tail(&net.down.log())
    );
    let stalled = Instant::now();
    // Pending: the stats page lists the stuck transfer...
    let state = net.down.state().expect("state while stalled");
    let t = &state["transfers"][0];
    assert_eq!(t["source"], ALIAS, "{state}");
    assert_eq!(t["file_id"], net.id.as_str());
    // ...the page answers fast, and another peer is served meanwhile.
    let page = page_latency(&net.down).expect("stats page while stalled");
    assert!(page < Duration::from_secs(1), "page took {page:?}");
    let served = serves_file(&net.down, &net.own_id, &net.own);
    assert!(served < Duration::from_secs(1), "GET_FILE took {served:?}");
    assert!(
        stalled.elapsed() < IDLE,
        "checks ran past the stall ({:?})",
        stalled.elapsed()
    );

    let got = finish_get(&net.down, g, 2 * PER_SOURCE + MARGIN + WAIT);
    let since_stall = stalled.elapsed();
    println!("StallAfter: {got:?}; page {page:?}, GET_FILE {served:?}");
    assert!(
        got.line.ends_with(&format!("from {}", net.holder.id)),
        "{got:?}\nlog:\n{}",
        tail(&net.down.log())
    );
    assert_eq!(got.sources, vec![ALIAS.to_string(), net.holder.id.clone()]);
    assert!(saved_bytes(&net.down, &net.name) == net.bytes);
    // It waited for the idle timeout (no earlier), and not much longer.
    assert!(
        got.elapsed >= IDLE && got.elapsed < 2 * PER_SOURCE + MARGIN,
        "{got:?}"
    );
    assert!(
        since_stall < IDLE + MARGIN,
        "{since_stall:?} after the stall"
    );
    assert!(net.down.log().contains(&format!(
        "{ALIAS} (127.0.0.1:{}) failed: went silent at ",
        proxy.port
    )));
    assert!(
        proxy.wait_idle(MARGIN),
        "the stalled connection is still open"
    );
    assert!(no_partials(&net.down));
}

// ---- shrunk kernel buffers, 64 MiB ----------------------------------------------

const BIG: usize = 64 * 1024 * 1024;

#[test]
fn a_64_mib_file_to_a_reader_with_a_4_kib_receive_buffer() {
    let bytes = Arc::new(pseudo_random_bytes(BIG, 0xB16));
    let small = b"a small file served meanwhile\n".to_vec();
    let server = PeerBuilder::new("big-server")
        .file("big.bin", &bytes)
        .file("small.txt", &small)
        .spawn();
    let files = server.files();
    let find = |name: &str| {
        files
            .iter()
            .find(|f| f["file_name"] == name)
            .cloned()
            .expect("listed")
    };
    let (big, small_rec) = (find("big.bin"), find("small.txt"));
    let id = big["file_id"].as_str().unwrap().to_string();
    let ts = big["file_timestamp"].to_string();

    let mut client = connect_with_rcvbuf(server.p2p_port, 4096).expect("connect");
    let effective = rcvbuf(&client);
    assert!(effective <= 16 * 1024, "SO_RCVBUF is {effective}");
    client
        .write_all(
            serde_json::json!({"type": "GET_FILE", "file_id": id})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let (bytes, progress, ts) = (bytes.clone(), progress.clone(), ts.clone());
        thread::spawn(move || {
            let slowly = SlowRead {
                read_len: 3000,
                pause_every: 1024 * 1024,
                pause: Duration::from_millis(2),
                timeout: Duration::from_secs(80),
            };
            read_file_data(&mut client, &bytes, &ts, slowly, &progress)
        })
    };
    // While it trickles: the page and another GET_FILE answer fast.
    let (mut slowest_page, mut slowest_get, mut samples) = (Duration::ZERO, Duration::ZERO, 0);
    let small_id = small_rec["file_id"].as_str().unwrap().to_string();
    while !reader.is_finished() {
        thread::sleep(Duration::from_millis(250));
        let done = progress.load(Ordering::SeqCst);
        if done == 0 || done >= BIG as u64 {
            continue;
        }
        slowest_page = slowest_page.max(page_latency(&server).expect("page during transfer"));
        slowest_get = slowest_get.max(serves_file(&server, &small_id, &small));
        samples += 1;
    }
    let got = reader.join().unwrap().expect("FILE_DATA read");
    println!(
        "rcvbuf {effective} B: {} bytes in {:?} over {} reads; {samples} samples, slowest page {slowest_page:?}, slowest GET_FILE {slowest_get:?}",
        got.len, got.elapsed, got.reads
    );
    assert_eq!(got.len, BIG as u64);
    assert_eq!(got.first_mismatch, None);
    assert_eq!(got.file_id, id, "SHA-256 of the bytes + timestamp");
    assert_eq!(got.header["file_id"], id.as_str());
    assert_eq!(got.header["file_size"], BIG as u64);
    assert!(got.closed_after, "the server did not close after FILE_DATA");
    assert!(samples >= 3, "only {samples} samples during the transfer");
    assert!(slowest_page < Duration::from_secs(1), "{slowest_page:?}");
    assert!(slowest_get < Duration::from_secs(1), "{slowest_get:?}");
    assert!(
        got.reads > (2 * BIG / 3000) as u64 / 2,
        "reads were not small"
    );
}

#[test]
fn a_64_mib_file_from_a_server_with_a_4_kib_send_buffer() {
    let bytes = Arc::new(pseudo_random_bytes(BIG, 0x5E4D));
    let ts = "1750000000";
    let id = file_id(&bytes, ts);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut down = PeerBuilder::new("big-getter")
        .args(&QUIET)
        .args(&["--idle-timeout", "30"])
        .spawn();
    let server = {
        let (bytes, id) = (bytes.clone(), id.clone());
        thread::spawn(move || -> Result<(WriteStats, usize), String> {
            let mut conn = accept_within(&listener, WAIT)?;
            set_sndbuf(&conn, 4096).map_err(|e| e.to_string())?;
            let effective = sndbuf(&conn);
            let req = read_object(&mut conn, Duration::from_secs(5)).ok_or("no request")?;
            if req["type"] != "GET_FILE" || req["file_id"] != id.as_str() {
                return Err(format!("unexpected request {req}"));
            }
            let head = format!(
                r#"{{"type":"FILE_DATA","file_id":"{id}","file_name":"big-in.bin","file_owner":"slow-server","file_timestamp":{ts},"file_size":{BIG},"data":""#
            );
            let st = write_file_data(
                &mut conn,
                head.as_bytes(),
                &bytes,
                3000,
                Duration::from_secs(30),
            )
            .map_err(|e| format!("write: {e}"))?;
            let _ = conn.shutdown(std::net::Shutdown::Write);
            Ok((st, effective))
        })
    };
    let record = serde_json::json!({
        "file_name": "big-in.bin", "file_size": BIG, "file_id": id,
        "file_owner": "slow-server", "file_timestamp": 1750000000u64,
    });
    advertise(&down, "slow-server", port, &record);
    let g = start_get(&mut down, &id);
    let probes = probe_page_until_the_get_ends(&down, &g, Duration::from_secs(80));
    let (st, effective) = server
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("server: {e}; log:\n{}", tail(&down.log())));
    let got = finish_get(&down, g, Duration::from_secs(60));
    println!(
        "sndbuf {effective} B: {st:?}; {got:?}; pages: {}",
        probes.summary()
    );
    assert!(effective <= 16 * 1024, "SO_SNDBUF is {effective}");
    assert!(
        got.line.starts_with("get: saved big-in.bin, 64.0 MiB")
            && got.line.ends_with("from slow-server"),
        "{got:?}\nlog:\n{}",
        tail(&down.log())
    );
    assert!(!got.line.contains("UNVERIFIED"));
    assert!(st.partial_writes > 0 && st.would_blocks > 0, "{st:?}");
    let saved = saved_bytes(&down, "big-in.bin");
    assert_eq!(saved.len(), BIG);
    assert!(saved == *bytes, "bytes differ");
    assert!(no_partials(&down));
    // The page answers once the transfer is done, whatever the build.
    assert!(page_latency(&down).is_some_and(|t| t < Duration::from_secs(1)));
    // Steps yield after 5 ms whatever they moved, so even a debug build
    // answers within 1 s while it reads a FILE_DATA at full speed.
    assert!(
        probes.all_within(Duration::from_secs(1)),
        "{}",
        probes.summary()
    );
}

/// Accepts one connection (blocking again), or fails after `within`.
fn accept_within(listener: &TcpListener, within: Duration) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + within;
    loop {
        match listener.accept() {
            Ok((c, _)) => {
                c.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(c);
            }
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(format!("nobody connected: {e}")),
        }
    }
}

/// Stats page probes: when each started (since the get) and how it went.
struct Probes(Vec<(Duration, Result<Duration, String>)>);

impl Probes {
    fn all_within(&self, bound: Duration) -> bool {
        self.0.len() >= 3
            && self
                .0
                .iter()
                .all(|(_, r)| r.as_ref().is_ok_and(|t| *t < bound))
    }
    fn summary(&self) -> String {
        let slowest = self
            .0
            .iter()
            .filter_map(|(at, r)| r.as_ref().ok().map(|t| (t, at)))
            .max();
        let failed: Vec<String> = self
            .0
            .iter()
            .filter_map(|(at, r)| r.as_ref().err().map(|e| format!("at {at:?}: {e}")))
            .collect();
        format!(
            "{} probes, slowest answered {slowest:?}, unanswered {failed:?}",
            self.0.len()
        )
    }
}

/// Probes the stats page every 100 ms (each probe waits up to 30 s) until
/// the get ends.
fn probe_page_until_the_get_ends(down: &PeerProc, g: &Get, limit: Duration) -> Probes {
    let ended = |l: &String| l.starts_with("get: saved") || l.starts_with("get: no source left");
    let mut probes = Vec::new();
    while !down.lines().iter().skip(g.skip).any(ended) && g.started.elapsed() < limit {
        thread::sleep(Duration::from_millis(20));
        let at = g.started.elapsed();
        probes.push((at, http_probe(down.http_port, "/", Duration::from_secs(30))));
    }
    Probes(probes)
}

/// A source that answers one GET_FILE with `len` zero bytes (hex `00...`),
/// written from memory in 1 MiB writes, much faster than peershare reads.
struct FastSource {
    port: u16,
    id: String,
    zeros: Vec<u8>,
    /// Hex bytes written, or where it failed.
    thread: thread::JoinHandle<Result<u64, String>>,
}

fn fast_source(name: &str, len: usize) -> FastSource {
    let zeros = vec![0u8; len];
    let ts = "1750000000";
    let id = file_id(&zeros, ts);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let head = format!(
        r#"{{"type":"FILE_DATA","file_id":"{id}","file_name":"{name}","file_owner":"fast-server","file_timestamp":{ts},"file_size":{len},"data":""#
    );
    let thread = thread::spawn(move || -> Result<u64, String> {
        let mut conn = accept_within(&listener, WAIT)?;
        conn.set_write_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        read_object(&mut conn, Duration::from_secs(5)).ok_or("no request")?;
        conn.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        let hex = vec![b'0'; 1024 * 1024];
        let mut sent = 0u64;
        for _ in 0..(2 * len / hex.len()) {
            conn.write_all(&hex)
                .map_err(|e| format!("write failed after {sent} bytes of hex: {e}"))?;
            sent += hex.len() as u64;
        }
        conn.write_all(b"\"}").map_err(|e| e.to_string())?;
        Ok(sent)
    });
    FastSource {
        port,
        id,
        zeros,
        thread,
    }
}

impl FastSource {
    fn record(&self, name: &str) -> Value {
        serde_json::json!({
            "file_name": name, "file_size": self.zeros.len(), "file_id": self.id,
            "file_owner": "fast-server", "file_timestamp": 1750000000u64,
        })
    }
}

/// An idle timeout shorter than one full read step (8 MiB of hex) takes in
/// a debug build (0.2-0.3 s on an idle machine, seconds under load), yet
/// far longer than any gap in a stream written from memory. A release
/// build's steps take tens of milliseconds: too short to show the bug.
const SHORTER_THAN_A_STEP: &str = "0.15";

/// A source that streams without a pause must not be failed as idle, however
/// long the peer takes to process what it sent.
#[test]
fn a_read_step_longer_than_the_idle_timeout_does_not_fail_a_streaming_source() {
    let src = fast_source("zeros.bin", 32 * 1024 * 1024);
    let mut down = PeerBuilder::new("step-getter")
        .args(&QUIET)
        .args(&["--idle-timeout", SHORTER_THAN_A_STEP])
        .spawn();
    advertise(&down, "fast-server", src.port, &src.record("zeros.bin"));
    let g = start_get(&mut down, &src.id);
    let got = finish_get(&down, g, Duration::from_secs(60));
    let sender = src.thread.join().unwrap();
    let log = down.log();
    let failures: Vec<&str> = log.lines().filter(|l| l.contains(" failed: ")).collect();
    println!("idle {SHORTER_THAN_A_STEP} s: {got:?}; {failures:?}; sender: {sender:?}");
    assert!(
        got.line.starts_with("get: saved zeros.bin") && got.line.ends_with("from fast-server"),
        "{got:?}; {failures:?}; the sender, writing without a pause: {sender:?}"
    );
    assert_eq!(saved_bytes(&down, "zeros.bin"), src.zeros);
}

/// While one source streams as fast as it can, the loop still serves
/// others: the stats page answers within 1 s.
#[test]
fn the_stats_page_answers_within_1_s_while_a_fast_source_streams() {
    let src = fast_source("fast.bin", 256 * 1024 * 1024);
    let mut down = PeerBuilder::new("busy-getter")
        .args(&QUIET)
        .args(&["--idle-timeout", "30"])
        .spawn();
    advertise(&down, "fast-server", src.port, &src.record("fast.bin"));
    let g = start_get(&mut down, &src.id);
    let probes = probe_page_until_the_get_ends(&down, &g, Duration::from_secs(60));
    let got = finish_get(&down, g, Duration::from_secs(60));
    let _ = src.thread.join();
    let log = down.log();
    let dropped: Vec<&str> = log.lines().filter(|l| l.contains("HTTP")).collect();
    println!("{got:?}; pages: {}; log: {dropped:?}", probes.summary());
    assert!(got.line.starts_with("get: saved fast.bin"), "{got:?}");
    assert!(
        probes.all_within(Duration::from_secs(1)),
        "{}; {dropped:?}",
        probes.summary()
    );
}

// ---- a fake peer like the buggy Python ones ------------------------------------------

/// A 4 MiB-of-hex cut, then silence on an open socket: failed by the idle
/// timeout, then fetched from the real holder.
#[test]
fn a_python_peer_that_cuts_file_data_at_4_mib_and_stays_silent() {
    let net = holder_and_downloader("cut", pseudo_random_bytes(3 * 1024 * 1024, 3));
    let Net {
        holder,
        mut down,
        name,
        bytes,
        record,
        id,
        ..
    } = net;
    let file = PyFile::new(
        &name,
        &bytes,
        &holder.id,
        &record["file_timestamp"].to_string(),
        "3.0",
    );
    assert_eq!(file.id, id, "same bytes and timestamp, same id");
    let py = PyPeer::start("py-cutter", vec![file], PyServe::CutAt(4 * 1024 * 1024));
    py.gossip_reply_to(down.p2p_port).unwrap();
    assert!(
        wait_until(WAIT, || down
            .file(&id)
            .is_some_and(|f| holders(&f).contains(&"py-cutter".to_string()))),
        "{:?}",
        down.state()
    );
    let g = start_get(&mut down, &id);
    assert!(
        wait_until(WAIT, || py.served() == 1),
        "never asked py-cutter"
    );
    // Everything it sent arrives (2 MiB of file), and then nothing.
    assert!(
        wait_until(Duration::from_secs(5), || down.state().is_some_and(|s| {
            let t = &s["transfers"][0];
            t["source"] == "py-cutter" && t["bytes_done"] == 2 * 1024 * 1024
        })),
        "{:?}",
        down.state()
    );
    let page = page_latency(&down).expect("page while py-cutter is silent");
    assert!(page < Duration::from_secs(1), "{page:?}");
    let got = finish_get(&down, g, 2 * PER_SOURCE + MARGIN + WAIT);
    println!("cut at 4 MiB: {got:?}; page {page:?}");
    assert_eq!(
        got.sources,
        vec!["py-cutter".to_string(), holder.id.clone()]
    );
    assert!(
        got.line.ends_with(&format!("from {}", holder.id)),
        "{got:?}"
    );
    assert!(
        got.elapsed >= IDLE && got.elapsed < 2 * PER_SOURCE + MARGIN,
        "{got:?}"
    );
    let log = down.log();
    assert!(
        log.contains("py-cutter (127.0.0.1:") && log.contains(") failed: went silent at "),
        "{}",
        tail(&log)
    );
    assert!(saved_bytes(&down, &name) == bytes);
    assert!(no_partials(&down));
    // py-cutter never closes; peershare let go of its end.
    assert!(
        py.closed_by_peer() >= 1,
        "peershare still holds py-cutter's connection"
    );
}

/// R and A servers never close after FILE_DATA: the client must stop at the
/// closing brace, not wait for EOF or 30 s of silence.
#[test]
fn a_python_peer_that_never_closes_is_read_to_the_closing_brace() {
    let text = b"Hello from a Python peer, 39 bytes!!!!\n";
    assert_eq!(text.len(), 39);
    // str(1744169352.0) is the id's timestamp text.
    let float_ts = PyFile::new("hello39.txt", text, "Silicon", "1744169352.0", "3.9e-05");
    // Hashed over the int, re-stored as a float (one peer style does that).
    let int_form = PyFile::new(
        "int-form.txt",
        b"re-stored as a float",
        "PROF",
        "1744169352.0",
        "2e-05",
    )
    .with_id(&file_id(b"re-stored as a float", "1744169352"));
    let py = PyPeer::start(
        "py-nevercloses",
        vec![float_ts.clone(), int_form.clone()],
        PyServe::Complete,
    );
    let mut down = PeerBuilder::new("brace-reader").args(&QUIET).spawn();
    py.gossip_reply_to(down.p2p_port).unwrap();
    assert!(
        wait_until(WAIT, || down.files().len() == 2),
        "{:?}",
        down.state()
    );
    for (i, f) in [&float_ts, &int_form].into_iter().enumerate() {
        let g = start_get(&mut down, &f.id);
        let got = finish_get(&down, g, Duration::from_secs(5));
        println!("never closes, {} B: {got:?}", f.bytes.len());
        assert!(
            got.line.starts_with(&format!("get: saved {}", f.name))
                && got.line.ends_with("from py-nevercloses"),
            "{got:?}\nlog:\n{}",
            tail(&down.log())
        );
        assert!(!got.line.contains("UNVERIFIED"), "{}", got.line);
        assert!(got.elapsed < Duration::from_millis(500), "{got:?}");
        // Timed in milliseconds: well under a second, not a 30 s wait.
        assert!(
            got.line.contains(" ms (") || got.line.contains(" in under 1 ms "),
            "{}",
            got.line
        );
        assert_eq!(saved_bytes(&down, &f.name), f.bytes);
        assert_eq!(py.served(), i + 1);
        // py-nevercloses holds its end open; peershare closed its own.
        assert!(
            wait_until(Duration::from_secs(1), || py.closed_by_peer() > i),
            "peershare kept the connection open"
        );
        let st = down.file(&f.id).unwrap();
        assert_eq!(st["local"], true);
        assert_eq!(st["verified"], true);
    }
}

/// 1000 GOSSIPs a second with fresh ids for 2 s: the page stays fast, the
/// flooder gets a reply about once a second, forwards stay rare, memory flat.
#[test]
fn a_python_peer_flooding_gossip_with_fresh_ids() {
    let down = PeerBuilder::new("flood-target").args(&QUIET).spawn();
    let observer = FakePeer::start();
    send_raw(down.p2p_port, &gossip("observer", observer.port, "obs-1")).unwrap();
    assert!(wait_until(WAIT, || down.peer_ids() == vec!["observer".to_string()]));
    let (rss_before, _) = rss_kib(down.pid()).expect("VmRSS");
    let py = PyPeer::start("py-flooder", vec![], PyServe::Complete);
    let flood = py.flood(down.p2p_port, 1000, Duration::from_secs(2));
    let (mut slowest_page, mut max_rss, mut max_anon, mut samples) = (Duration::ZERO, 0, 0, 0);
    while !flood.is_finished() {
        slowest_page = slowest_page.max(page_latency(&down).expect("page during the flood"));
        let (rss, anon) = rss_kib(down.pid()).expect("VmRSS");
        max_rss = max_rss.max(rss);
        max_anon = max_anon.max(anon);
        samples += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let sent = flood.join().unwrap();
    let received = || down.log().matches("received GOSSIP from ").count();
    assert!(
        wait_until(Duration::from_secs(5), || received() as u64 > sent),
        "read {} of {sent} GOSSIPs",
        received()
    );
    // A late reply or forward has a second to show up.
    thread::sleep(Duration::from_secs(1));
    let replies = py.of_type("GOSSIP_REPLY").len();
    let forwarded = observer
        .of_type("GOSSIP")
        .into_iter()
        .filter(|m| m["peerId"] == "py-flooder")
        .count();
    println!(
        "flood: {sent} GOSSIPs; {replies} replies, {forwarded} forwards; RSS {rss_before} -> max {max_rss} KiB (anon {max_anon}); slowest page {slowest_page:?} over {samples} samples"
    );
    assert!(sent >= 1500, "the flood sent only {sent}");
    assert!((1..=4).contains(&replies), "{replies} GOSSIP_REPLYs");
    assert!(forwarded <= 2, "{forwarded} forwards of the flood");
    assert!(slowest_page < Duration::from_secs(1), "{slowest_page:?}");
    assert!(max_rss < 64 * 1024, "VmRSS reached {max_rss} KiB");
    let mut ids = down.peer_ids();
    ids.sort();
    assert_eq!(ids, vec!["observer".to_string(), "py-flooder".to_string()]);
}

/// Float and string timestamps, MB sizes: shown as given, never crashing,
/// and files with them still download and verify. Each size is the one a
/// Python peer prints for its bytes (a reply beyond the figure's rounding
/// fails its source).
#[test]
fn python_style_timestamps_and_sizes_in_gossip_reply_and_announce() {
    let a_bytes = b"float timestamp, 28 bytes!!\n";
    assert_eq!(a_bytes.len(), 28, "2.8e-05 MB");
    let a = PyFile::new(
        "float-ts.txt",
        a_bytes,
        "Apy",
        "1743970142.6140459",
        "2.8e-05",
    );
    // 1877671 / 2^20 prints as 1.7906866073608398.
    let b = PyFile::new(
        "string-ts.txt",
        &vec![b's'; 1_877_671],
        "TEST8!!!",
        "\"Sun Jun 15 21:36:41 2025\"",
        "1.7906866073608398",
    );
    let c = PyFile::new("zero.txt", b"zero MB", "patelhs", "1744169352.0", "0.0");
    let py = PyPeer::start(
        "py-odd",
        vec![a.clone(), b.clone(), c.clone()],
        PyServe::Complete,
    );
    let mut down = PeerBuilder::new("odd-values").args(&QUIET).spawn();
    py.gossip_reply_to(down.p2p_port).unwrap();
    assert!(
        wait_until(WAIT, || down.files().len() == 3),
        "{:?}",
        down.state()
    );

    // An R-style ANNOUNCE of a new file, and of a known one with a string
    // timestamp (which must not replace the number).
    let announcer = PyPeer::start("py-announcer", vec![], PyServe::Complete);
    let d = PyFile::new(
        "nonsense-size.txt",
        b"d",
        "py-announcer",
        "1750000000.25",
        "123.0",
    );
    announcer.announce_to(down.p2p_port, &d).unwrap();
    let a_text = PyFile::new(
        &a.name,
        &a.bytes,
        &a.owner,
        "\"Mon Jun 16 10:00:00 2025\"",
        "2.8e-05",
    )
    .with_id(&a.id);
    announcer.announce_to(down.p2p_port, &a_text).unwrap();
    assert!(
        wait_until(WAIT, || down.files().len() == 4
            && down.file(&a.id).is_some_and(|f| holders(&f).len() == 2)),
        "{:?}",
        down.state()
    );
    for f in [&a, &b, &c, &d] {
        let st = down.file(&f.id).unwrap();
        assert_eq!(st["file_size"].to_string(), f.size, "size of {}", f.name);
        assert_eq!(
            st["file_timestamp"].to_string(),
            f.ts,
            "timestamp of {}",
            f.name
        );
        assert_eq!(st["file_owner"], f.owner.as_str());
    }
    let mut at_a = holders(&down.file(&a.id).unwrap());
    at_a.sort();
    assert_eq!(at_a, vec!["py-announcer".to_string(), "py-odd".to_string()]);
    assert_eq!(
        holders(&down.file(&d.id).unwrap()),
        vec!["py-announcer".to_string()]
    );

    // They download and verify (string timestamp: its text is hashed).
    for f in [&a, &b, &c] {
        let g = start_get(&mut down, &f.id);
        let got = finish_get(&down, g, Duration::from_secs(10));
        assert!(
            got.line.starts_with(&format!("get: saved {}", f.name))
                && got.line.ends_with("from py-odd"),
            "{got:?}\nlog:\n{}",
            tail(&down.log())
        );
        assert!(!got.line.contains("UNVERIFIED"), "{}", got.line);
        assert_eq!(saved_bytes(&down, &f.name), f.bytes);
    }
    assert!(page_latency(&down).is_some_and(|t| t < Duration::from_secs(1)));
    assert!(down.alive());
}
