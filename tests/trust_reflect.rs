//! peershare is not a reflector, gives back what a flood took, and ends on
//! SIGTERM within 2 s even under a flood. Real processes on 127.0.0.1.
//!
//! The reflection tests run a small network and an attacker that injects
//! GOSSIPs with fresh ids and fresh peerIds whose host:port names a victim
//! (a listener in the test counting the connections it accepts), then
//! count what the network sent the victim until the invented peers have
//! expired. Each prints its figure (`reflect: ...`).
mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::procfs::*;
use support::*;

/// Timers of the network under test: rounds every second, invented peers
/// dropped 3 s after their GOSSIP (the sweep runs every 0.75 s).
const TIMERS: [&str; 4] = ["--gossip-interval", "1", "--peer-timeout", "3"];

/// Three gossip intervals and a half: past a peer's start window.
const START_WINDOW: Duration = Duration::from_millis(3500);

/// How long after the last injected GOSSIP the victim is watched: past the
/// peer timeout and a sweep, so every retransmission, catch-up and round
/// that could name an invented peer has had its chance.
const WATCH: Duration = Duration::from_secs(5);

/// A listener that accepts everything, counts the connections, and records
/// the type of the one message each carries.
struct Victim {
    port: u16,
    accepted: Arc<AtomicU64>,
    kinds: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
}

impl Victim {
    fn start() -> Victim {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind victim");
        let port = listener.local_addr().expect("victim addr").port();
        let accepted = Arc::new(AtomicU64::new(0));
        let kinds = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, k, st) = (accepted.clone(), kinds.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                let k = k.clone();
                thread::spawn(move || {
                    let kind = read_object(&mut conn, Duration::from_secs(3))
                        .and_then(|v| v["type"].as_str().map(String::from))
                        .unwrap_or_else(|| "(nothing)".into());
                    *k.lock().unwrap().entry(kind).or_default() += 1;
                });
            }
        });
        Victim {
            port,
            accepted,
            kinds,
            stop,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    fn kinds(&self) -> BTreeMap<String, u64> {
        self.kinds.lock().unwrap().clone()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// `n` peers, the first one the others' well-known peer, each tracking
/// all the others.
fn network(n: usize, timers: &[&str]) -> Vec<PeerProc> {
    let first = PeerBuilder::new("r0").args(timers).spawn();
    let port = first.p2p_port;
    let mut peers = vec![first];
    for i in 1..n {
        peers.push(
            PeerBuilder::new(&format!("r{i}"))
                .args(timers)
                .well_known(port)
                .spawn(),
        );
    }
    let last_started = Instant::now();
    for p in &peers {
        let ok = wait_until(WAIT, || p.peer_ids().len() >= n - 1);
        assert!(ok, "{} tracks only {:?}", p.id, p.peer_ids());
    }
    // Past every peer's start window (3 gossip intervals), in which peers
    // that never answered are asked as often as the others.
    thread::sleep(START_WINDOW.saturating_sub(last_started.elapsed()));
    peers
}

fn fresh_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Injects `k` GOSSIPs (fresh ids, fresh peerIds, all naming the victim)
/// into `into`, `every` apart; then watches the victim for [`WATCH`].
fn inject_and_watch(into: &PeerProc, victim: &Victim, k: usize, every: Duration) -> u64 {
    for i in 0..k {
        let msg = gossip(
            &format!("invented-{i}-{}", fresh_id()),
            victim.port,
            &fresh_id(),
        );
        send_raw(into.p2p_port, &msg).expect("inject a GOSSIP");
        if !every.is_zero() {
            thread::sleep(every);
        }
    }
    thread::sleep(WATCH);
    victim.accepted()
}

/// A few GOSSIPs naming the victim, spread out so that no budget binds:
/// each peer that sees one answers it once (its GOSSIP_REPLY), and asks an
/// invented peer at most once more (a first direct GOSSIP, since it has
/// never answered); retransmissions, further catch-ups and rounds never go
/// to it. The network's peers all see every injected GOSSIP (forwarded).
#[test]
fn a_few_injected_gossips_cost_the_named_address_at_most_two_connections_per_peer_each() {
    let peers = network(4, &TIMERS);
    let victim = Victim::start();
    let k = 4;
    let got = inject_and_watch(&peers[0], &victim, k, Duration::from_millis(400));
    let reached = peers.len() as u64;
    let factor = got as f64 / (k as f64 * reached as f64);
    eprintln!(
        "reflect: {k} GOSSIPs naming the victim into a network of {reached}: {got} connections \
         to it ({factor:.2} per peer per GOSSIP) {:?}",
        victim.kinds()
    );
    assert!(
        got >= k as u64,
        "the victim got {got} connections: not even the first peer's replies came"
    );
    if std::env::var("REFLECT_DEBUG").is_ok() {
        for p in &peers {
            std::fs::write(format!("/tmp/reflect_dbg/{}.log", p.id), p.log()).unwrap();
        }
        eprintln!("victim port {}", victim.port);
    }
    assert!(
        got <= 2 * reached * k as u64,
        "{got} connections to the victim for {k} GOSSIPs and {reached} peers: {:?}",
        victim.kinds()
    );
}

/// A burst far past the answer budgets and the per-destination dial limit,
/// on the network's own timers (30 s rounds, where the limit is 2 dials a
/// second and bursts of 8): the victim gets at most the limit's burst plus
/// its rate from each peer, far fewer connections than GOSSIPs injected.
#[test]
fn a_burst_of_injected_gossips_is_capped_by_the_dial_limit() {
    let peers = network(4, &["--gossip-interval", "30", "--peer-timeout", "60"]);
    let victim = Victim::start();
    let k = 400;
    let started = Instant::now();
    let got = inject_and_watch(&peers[0], &victim, k, Duration::ZERO);
    let secs = started.elapsed().as_secs_f64();
    let reached = peers.len() as f64;
    // DIAL_BURST (8) + DIALS_PER_SEC (2) a second, per peer.
    let cap = reached * (8.0 + 2.0 * secs);
    eprintln!(
        "reflect: a burst of {k} GOSSIPs naming the victim: {got} connections in {secs:.1} s \
         from {reached} peers ({:.3} per peer per GOSSIP; cap {cap:.0}) {:?}",
        got as f64 / (k as f64 * reached),
        victim.kinds()
    );
    assert!(got > 0, "the victim got nothing: the test measured nothing");
    assert!(
        (got as f64) <= cap,
        "{got} connections to the victim, over the cap {cap:.0}: {:?}",
        victim.kinds()
    );
    for p in &peers {
        assert!(p.state().is_some(), "{} stopped answering", p.id);
    }
}

/// `threads` threads sending GOSSIPs with fresh ids and peerIds (naming
/// `reply_port`) to `port` until `stop`; how many were sent.
fn flood(
    port: u16,
    reply_port: u16,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<u64>> {
    flood_at_most(port, reply_port, threads, stop, u64::MAX)
}

/// [`flood`], all threads together sending at most `budget` GOSSIPs.
fn flood_at_most(
    port: u16,
    reply_port: u16,
    threads: usize,
    stop: Arc<AtomicBool>,
    budget: u64,
) -> Vec<thread::JoinHandle<u64>> {
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    (0..threads)
        .map(|t| {
            let stop = stop.clone();
            let total = total.clone();
            thread::spawn(move || {
                let mut sent = 0u64;
                while !stop.load(Ordering::SeqCst) && total.fetch_add(1, Ordering::SeqCst) < budget
                {
                    let msg = gossip(
                        &format!("flood-{t}-{}", fresh_id()),
                        reply_port,
                        &fresh_id(),
                    );
                    if send_raw(port, &msg).is_ok() {
                        sent += 1;
                    } else {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                sent
            })
        })
        .collect()
}

/// One flood of `secs` seconds (or `budget` GOSSIPs, if sooner) from 8
/// threads, then the wait until the invented peers have expired and a
/// sweep has run; (GOSSIPs sent, peak RssAnon during the flood, RssAnon
/// after).
fn flood_and_expire(p: &PeerProc, sink: &FakePeer, secs: u64, budget: u64) -> (u64, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = flood_at_most(p.p2p_port, sink.port, 8, stop.clone(), budget);
    let sampler = RssSampler::start(p.pid(), Duration::from_millis(20));
    thread::sleep(Duration::from_secs(secs));
    let during = sampler.stop();
    stop.store(true, Ordering::SeqCst);
    let sent: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let expired = wait_until(Duration::from_secs(15), || {
        p.state()
            .and_then(|s| s["peers"].as_array().map(|a| a.is_empty()))
            .unwrap_or(false)
    });
    assert!(expired, "the invented peers never expired");
    // The seen ids go 4 gossip intervals (4 s) after they came; the sweep
    // after that trims.
    thread::sleep(Duration::from_secs(3));
    (sent, during, rss_anon_kib(p.pid()).expect("RssAnon"))
}

/// A GOSSIP flood fills the peer table (to its cap), the seen ids and the
/// connections' slots; once it ends and the invented peers and ids expire
/// (the heap is then trimmed), the peer's memory stays within 4 MiB of
/// where it was before, and a second flood of as many GOSSIPs adds at most
/// 1 MiB.
/// Not all of it is given back: measured, debug build, floods of 11 000
/// and 15 000 GOSSIPs peak at 2.8 and 3.6 MiB and leave 1.8 and 2.4 MiB
/// resident (0.3 MiB before); the printed figures say where a run stands.
#[test]
fn memory_taken_by_a_gossip_flood_stays_bounded_and_is_reused_by_the_next() {
    if !support::long_run(
        "the gossip-flood memory test",
        "two floods of 4 s, each left to expire",
    ) {
        return;
    }
    let p = PeerBuilder::new("flooded")
        .args(&TIMERS)
        .args(&["--log-level", "info"])
        .spawn();
    let sink = FakePeer::start();
    thread::sleep(Duration::from_millis(500));
    let before = rss_anon_kib(p.pid()).expect("RssAnon");
    let (sent1, during1, after1) = flood_and_expire(&p, &sink, 4, u64::MAX);
    // The same number again: the memory the first left is reused.
    let (sent2, during2, after2) = flood_and_expire(&p, &sink, 8, sent1);
    eprintln!(
        "reflect: memory: RssAnon {before} KiB before; flood of {sent1} GOSSIPs: peak \
         {during1} KiB, {after1} KiB after; second flood of {sent2}: peak {during2} KiB, \
         {after2} KiB after"
    );
    assert!(
        sent1 > 500 && sent2 > 500,
        "{sent1}, {sent2} GOSSIPs: not a flood"
    );
    assert!(
        after1 <= before + 4096 && after2 <= before + 4096,
        "RssAnon {after1} / {after2} KiB after the floods, {before} KiB before"
    );
    assert!(
        after2 <= after1 + 1024,
        "the second flood added {} KiB",
        after2.saturating_sub(after1)
    );
    assert!(p.state().is_some(), "the peer stopped answering");
}

/// SIGTERM while GOSSIPs pour in from four threads: the process is gone
/// within 2 s, with status 0, and metadata.json is whole and lists the
/// file it holds.
#[test]
fn sigterm_under_a_gossip_flood_ends_the_process_within_two_seconds() {
    let mut p = PeerBuilder::new("termed")
        .args(&TIMERS)
        .file("kept.txt", b"keep me")
        .spawn();
    let id = p.files()[0]["file_id"].as_str().unwrap().to_string();
    let sink = FakePeer::start();
    let stop = Arc::new(AtomicBool::new(false));
    let threads = flood(p.p2p_port, sink.port, 4, stop.clone());
    thread::sleep(Duration::from_secs(2));
    let asked = Instant::now();
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(2));
    let took = asked.elapsed();
    stop.store(true, Ordering::SeqCst);
    let sent: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    eprintln!("reflect: SIGTERM under a flood of {sent} GOSSIPs: gone after {took:?}");
    let status = status.unwrap_or_else(|| panic!("still running 2 s after SIGTERM"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        sent > 100,
        "only {sent} GOSSIPs sent: the flood was not one"
    );
    let text = std::fs::read_to_string(p.dir.join("metadata.json")).expect("metadata.json");
    let meta: Value = serde_json::from_str(&text).expect("metadata.json is whole JSON");
    assert_eq!(meta[&id]["file_name"], "kept.txt", "{text}");
}

/// SIGTERM while a received file is still being synced (every fsync made
/// 3 s slow, a debug-build knob): the exit does not wait the 5 s an `exit`
/// typed at the menu gives such files; the process is gone within 2 s,
/// with status 0, metadata.json whole, and no temp file left behind.
#[test]
fn sigterm_while_a_received_file_is_being_synced_still_exits_within_two_seconds() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: needs a debug build of peershare (PEERSHARE_TEST_SLOW_SYNC_MS)");
        return;
    }
    let data: Vec<u8> = (0..2 * 1024 * 1024 + 7u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let holder = PeerBuilder::new("holder")
        .args(&TIMERS)
        .file("slow.bin", &data)
        .spawn();
    let id = holder.files()[0]["file_id"].as_str().unwrap().to_string();
    let mut getter = PeerBuilder::new("getter")
        .args(&TIMERS)
        .well_known(holder.p2p_port)
        .env("PEERSHARE_TEST_SLOW_SYNC_MS", "3000")
        .spawn();
    assert!(
        wait_until(WAIT, || getter.file(&id).is_some()),
        "the getter never learned the file"
    );
    getter.send_line(&format!("get {id}"));
    let all_in = wait_until(WAIT, || {
        getter.state().is_some_and(|s| {
            s["transfers"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["bytes_done"] == data.len() as u64))
        })
    });
    assert!(all_in, "the transfer never showed every byte");
    let asked = Instant::now();
    getter.signal(libc::SIGTERM);
    let status = getter.wait_exit(Duration::from_secs(2));
    let took = asked.elapsed();
    eprintln!("reflect: SIGTERM during a slow sync: gone after {took:?}");
    let status = status.unwrap_or_else(|| panic!("still running 2 s after SIGTERM"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    let text = std::fs::read_to_string(getter.dir.join("metadata.json")).expect("metadata.json");
    let _: Value = serde_json::from_str(&text).expect("metadata.json is whole JSON");
    let temps: Vec<_> = std::fs::read_dir(&getter.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".partial-"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}
