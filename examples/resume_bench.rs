//! Resume after a cut, measured with release `peershare` processes on
//! 127.0.0.1 behind throttled links (issue 14's "cut at 50 % and resumed
//! from another source").
//!
//! ```text
//! cargo build --release
//! cargo run --release --example resume_bench [-- SIZE_MIB] [--rate MB_PER_S] [--cut-percent P]
//! # default: 1024 MiB at 25 MB/s, cut at 50 %
//! ```
//!
//! Two holders of the same file (the same bytes with the same mtime in
//! both storage folders, so both folder scans give it the same id), each
//! listening on a private port (`--bind 127.0.0.1:0`) and advertising the
//! port of its own proxy (`benches/support/throttle_proxy.rs`): a relay
//! capping each direction at `--rate` MB/s on the wire. The proxies share
//! one cut: the first FILE_DATA either relays is cut (a clean close) after
//! `--cut-percent` of the file's hex digits (default half), i.e. that share
//! of the file. A downloader that knows
//! both holders `get`s the file and is timed until `get: saved`.
//!
//! Printed: the total time; when the cut came and the wait until the next
//! GET_FILE; the offset that GET_FILE asked from (parsed by the proxy);
//! the file bytes each proxy relayed as data (hex digits / 2) and so the
//! bytes sent twice as a % of the file (goal: under 1 %); and the time
//! after the cut against what a whole-file fetch at the same rate would
//! take (twice the file's bytes on the wire, as hex). Many holders at once
//! is not built, so not measured.
//!
//! The binary is found as by `rss_probe` (`PEERSHARE_BIN`, else beside the
//! example in `<target>/release/`). Storage folders are temp folders under
//! `$TMPDIR` (default `/tmp`; the file is written twice there), removed at
//! the end; every process is killed and every proxy thread joined.

#[path = "../benches/support/peers.rs"]
mod peers;
#[path = "../benches/support/throttle_proxy.rs"]
mod throttle_proxy;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use throttle_proxy::{CutPlan, ProxyPort, ThrottleProxy, Traffic};

const MIB: u64 = 1024 * 1024;
const DEFAULT_SIZE_MIB: u64 = 1024;
/// Issue 14's link: 25 MB/s per holder.
const DEFAULT_RATE_MB_PER_S: u64 = 25;
/// The mtime both copies get, so both holders compute the same file id.
const SHARED_MTIME_SECS: u64 = 1_744_169_352;
/// Share of the file that may be sent twice (issue 14: under 1 %).
const GOAL_RESENT_PERCENT: f64 = 1.0;

/// What the command line asks for.
struct Options {
    size_mib: u64,
    rate_mb_per_s: u64,
    /// Where the first transfer is cut, in % of the file (1 to 99).
    cut_percent: u64,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        size_mib: DEFAULT_SIZE_MIB,
        rate_mb_per_s: DEFAULT_RATE_MB_PER_S,
        cut_percent: 50,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let whole = |v: Option<&String>, what: &str| {
            v.and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{what} must be a whole number above 0"))
        };
        match arg.as_str() {
            "--rate" => options.rate_mb_per_s = whole(args.next(), "--rate (MB/s)")?,
            "--cut-percent" => {
                options.cut_percent = whole(args.next(), "--cut-percent")?;
                if options.cut_percent >= 100 {
                    return Err("--cut-percent must be below 100".into());
                }
            }
            _ => options.size_mib = whole(Some(arg), "SIZE_MIB")?,
        }
    }
    Ok(options)
}

/// A holder behind its proxy.
struct Holder {
    /// Dropped before `peer`: the relay ends first, then the process.
    proxy: ThrottleProxy,
    peer: peers::Peer,
}

/// Starts a holder of `dir`'s files listening on a free private port and
/// advertising a proxy's port, then the proxy in front of it.
fn start_holder(name: &str, dir: &Path, bytes_per_sec: u64, cut: &CutPlan) -> Holder {
    let port = ProxyPort::bind().expect("bind a proxy port on 127.0.0.1");
    let extra: Vec<String> = [
        "--bind",
        "127.0.0.1:0",
        "--gossip-interval",
        "0.2",
        "--auto-fetch",
        "0",
        "--no-well-known",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let peer = peers::Peer::spawn_advertising(name, dir, port.port, &extra);
    let proxy = port
        .relay_to(peer.p2p_port, bytes_per_sec, Some(cut.clone()))
        .expect("start the proxy");
    Holder { proxy, peer }
}

/// Sets `path`'s mtime, which (in whole seconds) is the file's timestamp.
fn set_mtime(path: &Path, secs: u64) {
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open the file to set its mtime");
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .expect("set mtime");
}

/// Seconds from `from` to `to` (0 if `to` came first).
fn secs_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

/// One line of what went through a proxy.
fn describe(name: &str, traffic: &Traffic) -> String {
    let asked: Vec<String> = traffic
        .get_files()
        .iter()
        .map(|g| match g.offset {
            Some(offset) => format!("from byte {offset}"),
            None => "the whole file".into(),
        })
        .collect();
    format!(
        "{name}: {} connections; down {:.1} MB on the wire, {:.1} MB of file data; \
         up {:.1} KB; GET_FILEs: {}",
        traffic.accepted.load(Ordering::SeqCst),
        traffic.down_bytes.load(Ordering::SeqCst) as f64 / 1e6,
        traffic.data_bytes() as f64 / 1e6,
        traffic.up_bytes.load(Ordering::SeqCst) as f64 / 1e3,
        if asked.is_empty() {
            "none".into()
        } else {
            asked.join(", ")
        }
    )
}

fn run(options: &Options) -> Result<(), String> {
    let len = options.size_mib * MIB;
    let bytes_per_sec = options.rate_mb_per_s * 1_000_000;
    let root = tempfile::tempdir().expect("temp dir");
    let file_name = format!("resume-{}.bin", options.size_mib);
    let (dir_a, dir_b) = (root.path().join("holder-a"), root.path().join("holder-b"));
    for dir in [&dir_a, &dir_b] {
        std::fs::create_dir_all(dir).expect("holder dir");
    }
    peers::write_random_file(&dir_a.join(&file_name), len, len);
    std::fs::copy(dir_a.join(&file_name), dir_b.join(&file_name)).expect("copy the file");
    for dir in [&dir_a, &dir_b] {
        set_mtime(&dir.join(&file_name), SHARED_MTIME_SECS);
    }

    // The file is twice its length in hex digits on the wire.
    let cut = CutPlan::once_after(2 * len * options.cut_percent / 100);
    let a = start_holder("holder-a", &dir_a, bytes_per_sec, &cut);
    let b = start_holder("holder-b", &dir_b, bytes_per_sec, &cut);
    let (ids_a, ids_b) = (a.peer.file_ids(), b.peer.file_ids());
    if ids_a.len() != 1 || ids_a != ids_b {
        return Err(format!(
            "the holders should list the same one file: {ids_a:?} and {ids_b:?}"
        ));
    }
    let file_id = ids_a[0].clone();
    let mut down = peers::Peer::spawn(
        "resume-downloader",
        &root.path().join("downloader"),
        &[
            "--well-known".into(),
            format!("127.0.0.1:{},127.0.0.1:{}", a.proxy.port, b.proxy.port),
            "--gossip-interval".into(),
            "0.2".into(),
            "--auto-fetch".into(),
            "0".into(),
        ],
    );
    if !down.wait_holders(&file_id, 2, peers::WAIT) {
        return Err("the downloader never learnt both holders".into());
    }

    // Twice the wire time of the whole file, and a minute, bounds the wait.
    let whole_file_secs = 2.0 * len as f64 / bytes_per_sec as f64;
    let timeout = Duration::from_secs_f64(2.0 * whole_file_secs + 60.0);
    let started = Instant::now();
    let (lines, elapsed) = down.get_lines(&file_id, timeout);
    let finished = started + elapsed;
    for line in &lines {
        println!("  downloader: {line}");
    }
    let saved = lines.last().is_some_and(|l| l.contains("get: saved"));
    let verified = down
        .file_entry(&file_id)
        .is_some_and(|f| f["local"] == true && f["verified"] == true);
    if !saved || !verified {
        return Err(format!(
            "the download did not end saved and verified (saved line: {saved}, verified: {verified})"
        ));
    }

    let (ta, tb) = (a.proxy.traffic(), b.proxy.traffic());
    println!("  {}", describe("holder-a's proxy", ta));
    println!("  {}", describe("holder-b's proxy", tb));
    let (cut_traffic, other) = match (ta.cut(), tb.cut()) {
        (Some(_), None) => (ta, tb),
        (None, Some(_)) => (tb, ta),
        _ => return Err("exactly one proxy should have cut".into()),
    };
    let cut_seen = cut_traffic.cut().ok_or("no cut")?;
    let resumed = other
        .get_files()
        .first()
        .cloned()
        .ok_or("the other holder was never asked")?;
    let resumed_from = resumed.offset.unwrap_or(0);
    let hex_relayed = ta.data_hex.load(Ordering::SeqCst) + tb.data_hex.load(Ordering::SeqCst);
    let data_relayed = hex_relayed / 2;
    let sent_twice = data_relayed.saturating_sub(len);
    let sent_twice_percent = 100.0 * sent_twice as f64 / len as f64;
    let to_cut = secs_between(started, cut_seen.at);
    let after_cut = secs_between(cut_seen.at, finished);
    let mb = |bytes: u64, secs: f64| bytes as f64 / secs.max(1e-9) / 1e6;

    println!(
        "{} MiB through {} MB/s links ({:.1} MB/s of file data as hex): {:.1} s from `get` to `saved`",
        options.size_mib,
        options.rate_mb_per_s,
        options.rate_mb_per_s as f64 / 2.0,
        elapsed.as_secs_f64()
    );
    println!(
        "  cut ({} %) after {:.1} s, at file byte {} ({:.1} MB/s of file data before it)",
        options.cut_percent,
        to_cut,
        cut_seen.hex_relayed / 2,
        mb(cut_seen.hex_relayed / 2, to_cut)
    );
    println!(
        "  next GET_FILE {:.0} ms after the cut, {}",
        secs_between(cut_seen.at, resumed.at) * 1e3,
        match resumed.offset {
            Some(offset) => format!("from byte {offset}"),
            None => "for the whole file".into(),
        }
    );
    println!(
        "  file data relayed: {data_relayed} B for a {len} B file: {sent_twice} B sent twice \
         ({sent_twice_percent:.4} % of the file; goal under {GOAL_RESENT_PERCENT} %: {})",
        if sent_twice_percent < GOAL_RESENT_PERCENT {
            "met"
        } else {
            "missed"
        }
    );
    println!(
        "  after the cut: {after_cut:.1} s to `saved` for {} B ({:.1} MB/s of file data); \
         a whole-file fetch at this rate would take {whole_file_secs:.1} s after the cut \
         (2 x file / rate)",
        len.saturating_sub(resumed_from),
        mb(len.saturating_sub(resumed_from), after_cut),
    );
    drop(down);
    drop(a);
    drop(b);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(why) => {
            eprintln!("usage: resume_bench [SIZE_MIB] [--rate MB_PER_S] [--cut-percent P]: {why}");
            return ExitCode::from(2);
        }
    };
    println!("binary: {}", peers::peershare_bin().display());
    println!(
        "machine: nproc {}, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into())
    );
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("resume_bench failed: {why}");
            ExitCode::FAILURE
        }
    }
}
