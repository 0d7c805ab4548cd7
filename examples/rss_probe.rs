//! Memory and speed of one real transfer between two release `peershare`
//! processes on 127.0.0.1.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example rss_probe [-- SIZE_MIB...]   # default: 256 1024
//! cargo run --release --example rss_probe -- stages   # per-stage CPU cost
//! ```
//!
//! For each size: a serving peer holding a random file of that size (put in
//! its storage folder before it starts, so its folder scan adds it) and a
//! downloader bootstrapping from it. Once the downloader knows the file, it
//! is sent `get <file_id>` and timed until its `get: saved` line, while a
//! thread samples `RssAnon` and `RssFile` of both processes from
//! `/proc/<pid>/status` every 20 ms. Printed: each peak (and the idle value
//! before the transfer), the transfer time and rate, and the CPU time each
//! process used during the transfer.
//!
//! The binary is `PEERSHARE_BIN`, else `$CARGO_TARGET_DIR/release/peershare`,
//! else `target/release/peershare`. Storage folders are temp folders under
//! `$TMPDIR` (default `/tmp`), removed at the end; every process is killed.

#[path = "../benches/support/peers.rs"]
mod peers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// `field` of `/proc/<pid>/status` in KiB (0 if unreadable).
fn status_kib(pid: u32, field: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time in a `/proc/.../stat` file, in seconds, and the
/// name in it.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    // Fields after the `(comm)`, which may hold spaces.
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((comm, ticks as f64 / hz))
}

/// User + system CPU time of a process (all its threads), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/stat")).map_or(0.0, |(_, s)| s)
}

/// CPU seconds of each live thread of a process, by thread id.
fn thread_cpus(pid: u32) -> HashMap<u32, (String, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        Some((tid, stat_cpu(&format!("/proc/{pid}/task/{tid}/stat"))?))
    })
    .collect()
}

/// CPU time each thread used since `base`, summed by thread name (a thread
/// that ended between two samples loses its last 20 ms).
fn by_thread(base: &HashMap<u32, (String, f64)>, last: &HashMap<u32, (String, f64)>) -> String {
    let mut sums: Vec<(String, f64)> = Vec::new();
    for (tid, (comm, cpu)) in last {
        let used = cpu - base.get(tid).map_or(0.0, |b| b.1);
        match sums.iter_mut().find(|(c, _)| c == comm) {
            Some(s) => s.1 += used,
            None => sums.push((comm.clone(), used)),
        }
    }
    sums.retain(|(_, used)| *used >= 0.005);
    sums.sort_by(|a, b| b.1.total_cmp(&a.1));
    sums.iter()
        .map(|(c, u)| format!("{c} {u:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Default)]
struct Peaks {
    anon: u64,
    file: u64,
    /// Last CPU time seen of every thread.
    threads: HashMap<u32, (String, f64)>,
}

fn sample(pid: u32, p: &mut Peaks) {
    p.anon = p.anon.max(status_kib(pid, "RssAnon"));
    p.file = p.file.max(status_kib(pid, "RssFile"));
    p.threads.extend(thread_cpus(pid));
}

/// With `PROBE_PERF_DIR` set, records both processes during the transfer
/// with `perf record -g` into `$PROBE_PERF_DIR/perf-<size>.data`.
fn start_perf(spid: u32, dpid: u32, size_mib: u64) -> Option<std::process::Child> {
    let dir = std::env::var_os("PROBE_PERF_DIR")?;
    let out = std::path::Path::new(&dir).join(format!("perf-{size_mib}.data"));
    let child = std::process::Command::new("perf")
        .args([
            "record",
            "-F",
            "999",
            "-g",
            "-p",
            &format!("{spid},{dpid}"),
            "-o",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    thread::sleep(Duration::from_millis(500));
    Some(child)
}

fn stop_perf(perf: Option<std::process::Child>) {
    if let Some(mut child) = perf {
        // SAFETY: signalling our own child by its pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let _ = child.wait();
    }
}

fn run(size_mib: u64) {
    let root = tempfile::tempdir().expect("temp dir");
    let len = size_mib * MIB;
    let server = peers::Server::start(root.path(), len);
    let mut down = server.downloader(&root.path().join("downloader"));
    let (spid, dpid) = (server.peer.pid(), down.pid());
    // Let start-up work (the server's hashing, first gossip) settle.
    thread::sleep(Duration::from_millis(500));
    let idle = (status_kib(spid, "RssAnon"), status_kib(dpid, "RssAnon"));

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let sampler = thread::spawn(move || {
        let (mut s, mut d) = (Peaks::default(), Peaks::default());
        while !flag.load(Ordering::Relaxed) {
            sample(spid, &mut s);
            sample(dpid, &mut d);
            thread::sleep(Duration::from_millis(20));
        }
        sample(spid, &mut s);
        sample(dpid, &mut d);
        (s, d)
    });
    let perf = start_perf(spid, dpid, size_mib);
    let threads0 = (thread_cpus(spid), thread_cpus(dpid));
    let cpu0 = (cpu_secs(spid), cpu_secs(dpid));
    let elapsed = down.get(&server.file_id);
    let cpu1 = (cpu_secs(spid), cpu_secs(dpid));
    stop_perf(perf);
    stop.store(true, Ordering::Relaxed);
    let (s, d) = sampler.join().expect("sampler");

    let secs = elapsed.as_secs_f64();
    println!(
        "{size_mib} MiB: {secs:.3} s, {:.0} MB/s ({:.3} GB/s) [pids: serving {spid}, downloading {dpid}]",
        len as f64 / secs / 1e6,
        len as f64 / secs / 1e9
    );
    for (who, peak, idle, cpu, base) in [
        ("serving", s, idle.0, cpu1.0 - cpu0.0, threads0.0),
        ("downloading", d, idle.1, cpu1.1 - cpu0.1, threads0.1),
    ] {
        println!(
            "  {who:<11} peak RssAnon {:>7.1} MiB (idle {:.1} MiB), peak RssFile {:>7.1} MiB, \
             CPU {cpu:.2} s ({:.0}% of the transfer: {})",
            peak.anon as f64 / 1024.0,
            idle as f64 / 1024.0,
            peak.file as f64 / 1024.0,
            100.0 * cpu / secs,
            by_thread(&base, &peak.threads)
        );
    }
    drop(down);
    drop(server);
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Wall and CPU seconds of `f` on this thread.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (w, c) = (std::time::Instant::now(), thread_cpu());
    f();
    (w.elapsed().as_secs_f64(), thread_cpu() - c)
}

/// The downloader's per-byte work, one stage at a time on one thread, for
/// 1 GiB: what each costs in CPU time is what a transfer can't go below
/// (the wall time also shows waiting and, on a busy machine, contention).
fn stages() {
    use peershare::protocol::decoder::{DecoderLimits, DiscardSink, MessageDecoder};
    use std::io::Write;
    const PIECE: usize = 256 * 1024;
    let total = 1024 * MIB as usize;
    let mut piece = vec![0u8; PIECE];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut piece);
    let report = |what: &str, (wall, cpu): (f64, f64)| {
        println!(
            "  {what:<44} wall {wall:>6.3} s  CPU {cpu:>6.3} s  ({:>5.2} GB/s of CPU)",
            total as f64 / cpu.max(1e-9) / 1e9
        )
    };
    println!("per 1 GiB of file, one thread (pieces of 256 KiB):");
    report(
        "sha256 (FileHasher)",
        timed(|| {
            let mut h = peershare::storage::FileHasher::new();
            for _ in 0..total / PIECE {
                h.update(&piece);
            }
            std::hint::black_box(h);
        }),
    );
    let hex = faster_hex::hex_string(&piece).into_bytes();
    report(
        "hex encode (faster_hex)",
        timed(|| {
            let mut out = vec![0u8; 2 * PIECE];
            for _ in 0..total / PIECE {
                faster_hex::hex_encode(&piece, &mut out).expect("encode");
            }
            std::hint::black_box(out);
        }),
    );
    report(
        "hex check+decode (MessageDecoder, 512 KiB feeds)",
        timed(|| {
            let mut d = MessageDecoder::new(DecoderLimits::default());
            d.feed(br#"{"data":""#, &mut DiscardSink).expect("feed");
            for _ in 0..total / PIECE {
                d.feed(&hex, &mut DiscardSink).expect("feed");
            }
            std::hint::black_box(d);
        }),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stage-write");
    let mut file = std::fs::File::create(&path).expect("create");
    report(
        "write() into a new file (page cache)",
        timed(|| {
            for _ in 0..total / PIECE {
                file.write_all(&piece).expect("write");
            }
        }),
    );
    report("fsync of it", timed(|| file.sync_all().expect("fsync")));
    drop(file);
    let _ = std::fs::remove_file(&path);
    report(
        "loopback TCP, 2 GiB (writer thread's CPU not counted)",
        timed(|| {
            use std::io::Read;
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let mut tx = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("c");
            let (mut rx, _) = l.accept().expect("accept");
            let w = thread::spawn(move || {
                let buf = vec![b'a'; MIB as usize];
                for _ in 0..2048 {
                    tx.write_all(&buf).expect("write");
                }
            });
            let mut buf = vec![0u8; MIB as usize];
            let mut got = 0;
            while got < 2 * total {
                got += rx.read(&mut buf).expect("read");
            }
            w.join().expect("writer");
        }),
    );
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("stages") {
        stages();
        return;
    }
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are whole MiB"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![256, 1024]
    } else {
        sizes
    };
    println!("binary: {}", peers::peershare_bin().display());
    for size in sizes {
        run(size);
    }
}
