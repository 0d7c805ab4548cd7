//! The loop itself: setup, dispatch, effects, shutdown.

use crate::cli::args::Args;
use crate::cli::escape;
use crate::cli::menu::{self, MenuCommand};
use crate::core::catalog::{Entry, LocalCopy};
use crate::core::dial_limit::{DialLimiter, Verdict};
use crate::core::downloads::{judge_reply, size_upper_bound};
use crate::core::push_quota::{PushQuota, PushTicket};
use crate::core::{
    Command, Config, Effect, FetchResult, Peer, ReverifyOutcome, StampUpdate, Time, Timer,
};
use crate::http;
use crate::ids::{FileId, PeerAddr, PeerId, TransferId};
use crate::net::conn::{
    connect_status, feed, read_loop, write_payload, Conn, FetchConn, Outcome, PartialSink, Payload,
    Role, WriteKind, READ_BUF_LEN,
};
use crate::net::http_out;
use crate::net::push_gate::PushGate;
use crate::net::resolver::Resolver;
use crate::net::sockopt;
use crate::net::stdin::{self, LineReader};
use crate::net::timer::TimerWheel;
use crate::net::trim;
use crate::protocol::decoder::{DataField, Decoded, DecoderLimits, MessageDecoder};
use crate::protocol::encoder::{self, FileDataEncoder, FileSource};
use crate::protocol::{FileRecord, FileSize, Message, MAX_JSON_DEPTH, MAX_MESSAGE_LEN};
use crate::storage::serving::{self, FileStamp, Opened};
use crate::storage::{self, metadata, PartialFile, StoredEntry};
use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use slab::Slab;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const P2P_LISTENER: Token = Token(0);
const HTTP_LISTENER: Token = Token(1);
const STDIN: Token = Token(2);
const WAKER: Token = Token(3);
const SIGNALS: Token = Token(4);
/// SIGIO: a read lease on a file we serve is being broken.
const LEASES: Token = Token(5);
const CONN_BASE: usize = 16;

/// Most open connections (P2P and HTTP, both ways). At the cap a new inbound
/// connection evicts the longest-idle inbound one. Lowered at start if the
/// open-file limit can't hold it (see [`crate::net::limits`]).
pub const MAX_CONNECTIONS: usize = 1024;

/// Most FILE_DATA streams (replies to GET_FILE and our pushes) at once.
/// Each holds a chunk of hex (512 KiB) until its reader takes it; without a
/// cap, a thousand clients that ask for a large file and read nothing would
/// hold 512 MiB (measured: 400 such clients, 205 MiB). Past it a GET_FILE
/// connection is closed unanswered, which the network's clients (ours
/// included) treat as a failed source.
pub const MAX_FILE_STREAMS: usize = 32;

/// Memory all unfinished inbound messages may hold together. Each message
/// is capped at `MAX_MESSAGE_LEN`; without a total, a thousand connections
/// each sending a 16 MiB message that never ends would hold 16 GiB. Over
/// it, the connection holding the most is closed.
pub const INBOUND_BUFFER_BUDGET: usize = 32 * 1024 * 1024;

/// Only a step that leaves a connection holding this much checks the total.
const BUDGET_CHECK_FLOOR: usize = 64 * 1024;

/// Metadata is written at most this often; bursts are coalesced.
pub const PERSIST_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How often a metadata write that failed is tried again.
const METADATA_RETRY: Duration = Duration::from_secs(5);

/// How long a closing connection may take to send its FIN.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolved host names are reused for this long.
const RESOLVE_TTL: Duration = Duration::from_secs(60);
/// A failed lookup is remembered only this long, so the next round retries.
const RESOLVE_FAILURE_TTL: Duration = Duration::from_secs(1);
const RESOLVE_CACHE_MAX: usize = 256;

/// Why the peer could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Deadlines the wheel holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    Core(Timer),
    Conn {
        key: usize,
        gen: u64,
    },
    Persist,
    /// Time to give up on FILE_DATAs whose writer has not finished.
    Finishing,
    /// Time to give freed memory back (see `net::trim`).
    Trim,
}

/// Longest a received FILE_DATA may wait for its writer thread to write
/// and fsync its last bytes before the attempt fails (a disk that hangs).
/// What is left by then is bounded whatever the file's size: at most the
/// writer's queue (1.5 MiB), three direct-I/O blocks, and two steps of
/// buffered writeback (16 MiB; the writer waits for older writeback as it
/// goes), so only a disk slower than about 0.3 MB/s runs into it.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the exit waits for received files still being written.
const EXIT_DRAIN: Duration = Duration::from_secs(5);

/// [`EXIT_DRAIN`] when a signal asked us to exit (the whole exit must fit
/// in `exit_guard::SIGNAL_EXIT_LIMIT`).
const SIGNAL_EXIT_DRAIN: Duration = Duration::from_millis(800);

/// How long after [`SIGNAL_EXIT_DRAIN`] an exit by signal waits for a
/// metadata write already at work before giving up its final write.
const SIGNAL_EXIT_WRITER: Duration = Duration::from_millis(300);

/// A FILE_DATA whose every byte arrived while its writer thread still
/// writes (and fsyncs) the last of them. It is checked and stored when the
/// thread wakes the loop, so the loop never waits for the disk.
enum Finishing {
    /// One of our downloads.
    Fetch {
        transfer: TransferId,
        attempt: u64,
        record: FileRecord,
        source: String,
        decoded: Decoded,
        sink: PartialSink,
    },
    /// An unsolicited FILE_DATA.
    Push {
        header: crate::protocol::FileDataHeader,
        data: DataField,
        sink: PartialSink,
    },
}

impl Finishing {
    fn sink(&self) -> &PartialSink {
        match self {
            Finishing::Fetch { sink, .. } | Finishing::Push { sink, .. } => sink,
        }
    }
}

/// A job for the worker thread (disk work kept off the loop).
type Job = Box<dyn FnOnce() -> WorkerMsg + Send>;

/// Results from helper threads.
enum WorkerMsg {
    Imported(Result<StoredEntry, String>),
    Copied(storage::ExportOutcome),
    /// A held file found changed, hashed again.
    Reverified {
        file_id: FileId,
        name: String,
        result: io::Result<(bool, FileStamp)>,
    },
    /// A `get` with a destination, its destination checked before the
    /// download starts.
    DestChecked(Command, Result<(), storage::Refusal>),
}

/// An outbound connection waiting for its address.
struct Pending {
    addr: PeerAddr,
    role: Role,
}

/// Settings of the driver that the core doesn't need.
struct Settings {
    dir: PathBuf,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_file_size: u64,
}

struct Driver {
    poll: Poll,
    start: Instant,
    core: Peer,
    settings: Settings,
    conns: Slab<Conn>,
    max_conns: usize,
    next_gen: u64,
    wheel: TimerWheel<Due>,
    ready: VecDeque<(usize, u64)>,
    /// Connections waiting for room in their file writer's queue; stepped
    /// again when a writer wakes the loop.
    parked: Vec<(usize, u64)>,
    /// Received FILE_DATAs waiting for their writer thread, since when.
    finishing: Vec<(Time, Finishing)>,
    /// Wakes the loop from helper threads (file writers get a clone).
    waker: Arc<Waker>,
    read_buf: Vec<u8>,
    p2p: Option<TcpListener>,
    /// The system's TCP congestion control, given back to connections from
    /// other hosts when the P2P listener was set unpaced (see `sockopt`).
    /// Read once at start: a later sysctl change applies after a restart.
    system_congestion: Option<String>,
    /// The address the P2P listener is bound to (tells which peers are on
    /// this host), read once at start.
    p2p_ip: Option<std::net::IpAddr>,
    http: Option<TcpListener>,
    /// Stats page responses rendered in the last moment, shared.
    http_cache: http::ResponseCache,
    resolver: Resolver,
    resolve_cache: HashMap<String, (Result<SocketAddr, String>, Time)>,
    unresolvable_logged: HashSet<String>,
    unreachable_logged: HashSet<PeerAddr>,
    /// How often each host:port may be dialled for a message (see
    /// `core::dial_limit`): a GOSSIP names any address, so without it we
    /// would be a reflector.
    dials: DialLimiter,
    /// When a flood has subsided enough to give freed heap back.
    trim: crate::net::trim::TrimMark,
    /// Connections waiting for a host's address, by host: one lookup in
    /// flight per host, however many sends wait on it (a lone peer knocks
    /// on the well-known hosts several times a round; with a hanging DNS,
    /// one lookup each would fill the resolver's queue and fail every send
    /// to a peer given by name).
    pending: HashMap<String, Vec<Pending>>,
    /// Entries of `pending`, all hosts together (at most `MAX_PENDING`).
    pending_count: usize,
    worker_tx: Sender<Job>,
    worker_rx: Receiver<WorkerMsg>,
    meta_tx: Option<Sender<MetaJob>>,
    meta_thread: Option<thread::JoinHandle<()>>,
    persist_armed: bool,
    last_persist: Option<Time>,
    unverified: HashMap<TransferId, (PartialFile, u64)>,
    /// Unsolicited pushes admitted lately, by source address.
    push_quota: PushQuota,
    /// A `Due::Trim` is scheduled.
    trim_armed: bool,
    /// The catalog's cost at the last save (a large drop arms a trim).
    saved_catalog_bytes: usize,
    stdin: Option<LineReader>,
    exit: bool,
    /// What each held file looked like when last verified, by local name
    /// (see [`FileStamp`]); one per held file at most.
    stamps: HashMap<String, FileStamp>,
    /// SIGIO, raised when a read lease of a file being served is broken.
    lease_signals: Option<signal_hook_mio::v1_0::Signals>,
    /// When a SIGTERM/SIGINT asked us to exit: the exit then fits in
    /// `exit_guard::SIGNAL_EXIT_LIMIT` (see `shutdown`).
    signalled: Option<Instant>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bind(host: &str, port: u16, what: &str) -> Result<TcpListener, StartError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| StartError(format!("cannot resolve {what} address {host}:{port}: {e}")))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| StartError(format!("no address for {what} host {host}")))?;
    let std = std::net::TcpListener::bind(addr)
        .map_err(|e| StartError(format!("cannot listen for {what} on {addr}: {e}")))?;
    // std listens with a backlog of 128: a flood of one-message
    // connections overflows it, and a dropped SYN costs its sender a 1 s
    // retry. Listening again only raises the backlog (capped by somaxconn).
    if let Err(e) = socket2::SockRef::from(&std).listen(LISTEN_BACKLOG) {
        warn!("cannot raise the {what} backlog: {e}");
    }
    std.set_nonblocking(true)
        .map_err(|e| StartError(format!("cannot listen for {what} on {addr}: {e}")))?;
    Ok(TcpListener::from_std(std))
}

/// Pending connections the kernel queues for each listener.
const LISTEN_BACKLOG: i32 = 1024;

/// What [`load_catalog`] found.
struct Loaded {
    entries: Vec<Entry>,
    /// Metadata entries not read (past the catalog's caps).
    not_read: usize,
    /// Stamps of the held files, by local name.
    stamps: HashMap<String, FileStamp>,
    /// Held files that changed since they were last verified.
    changed: Vec<FileId>,
}

/// Loads the catalog: the metadata file, then files found in the folder.
/// Also says how many entries of the metadata were not read (past the
/// catalog's caps).
fn load_catalog(dir: &Path, me: &PeerId) -> Loaded {
    match storage::remove_partials(dir) {
        Ok(0) => {}
        Ok(n) => info!("removed {n} partial files left by an earlier run"),
        Err(e) => warn!("cannot clean partial files in {}: {e}", dir.display()),
    }
    use crate::core::catalog::{holder_cost, record_cost, ENTRY_OVERHEAD, MAX_FILES};
    // Read no more than the catalog could take: entries we don't hold past
    // its byte budget are skipped while reading (the catalog applies the
    // exact caps when they are inserted).
    let cost = |e: &StoredEntry| {
        ENTRY_OVERHEAD
            + record_cost(&e.record)
            + e.peers_with_file.iter().map(holder_cost).sum::<usize>()
    };
    let keep = metadata::Keep {
        held: MAX_FILES,
        others: MAX_FILES,
        bytes: crate::core::catalog::MAX_CATALOG_BYTES,
        cost: &cost,
    };
    let loaded = metadata::load(dir, now_unix(), &keep);
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let mut entries = Vec::new();
    let mut known = HashSet::new();
    let mut stamps = HashMap::new();
    let mut changed = Vec::new();
    for s in loaded.entries {
        let local = match (&s.local_name, s.has_copy) {
            (Some(name), true) if dir.join(name).is_file() => {
                known.insert(name.clone());
                // Unknown (older metadata): none kept, so the first serve
                // has its bytes hashed once instead of trusting them.
                if let (Ok(now), Some(was)) = (FileStamp::read(&dir.join(name)), s.local_stamp) {
                    if was != now {
                        changed.push(s.record.file_id.clone());
                    }
                    stamps.insert(name.clone(), was);
                }
                Some(LocalCopy {
                    name: name.clone(),
                    verified: s.verified,
                })
            }
            (Some(name), true) => {
                warn!(
                    "{} ({}) is recorded as held but {name} is missing from the folder",
                    s.record.file_name, s.record.file_id
                );
                None
            }
            _ => None,
        };
        let holders = s.peers_with_file.into_iter().filter(|p| p != me).collect();
        entries.push(Entry {
            record: s.record,
            holders,
            local,
        });
    }
    match storage::scan_folder(dir, &known, me) {
        Ok(found) => {
            let mut added = 0;
            for s in found {
                let Some(name) = s.local_name.clone() else {
                    continue;
                };
                if let Some((e, stamp)) = claimed_by_catalog(dir, &name, &mut entries) {
                    if let Some(stamp) = stamp {
                        stamps.insert(name.clone(), stamp);
                    }
                    info!(
                        "{name} is {} ({}), committed just before the last exit",
                        e.record.file_name, e.record.file_id
                    );
                    continue;
                }
                added += 1;
                if let Some(stamp) = s.local_stamp {
                    stamps.insert(name.clone(), stamp);
                }
                entries.push(Entry {
                    record: s.record,
                    holders: Default::default(),
                    local: Some(LocalCopy {
                        name,
                        verified: true,
                    }),
                });
            }
            if added > 0 {
                info!("added {added} files found in {}", dir.display());
            }
        }
        Err(e) => warn!("cannot scan {}: {e}", dir.display()),
    }
    Loaded {
        entries,
        stamps,
        changed,
        not_read: loaded.dropped,
    }
}

/// A file found in the folder that the catalog doesn't list as held may be
/// a download or push committed just before a crash, before the metadata
/// caught up. If an entry we don't hold has that name (or its `x (2).txt`
/// form) and the bytes verify against its id, it is that file: mark it held
/// instead of adopting it as a new file of ours. Returns it with the stamp
/// taken before hashing (so a change during the hash shows at the first
/// serve); without one, the first serve hashes it again.
fn claimed_by_catalog<'a>(
    dir: &Path,
    name: &str,
    entries: &'a mut [Entry],
) -> Option<(&'a Entry, Option<FileStamp>)> {
    let path = dir.join(name);
    let stamp = FileStamp::read(&path).ok();
    let pos = entries.iter().position(|e| {
        e.local.is_none()
            && same_or_suffixed(name, &storage::sanitize_file_name(&e.record.file_name))
            && e.record.file_timestamp.hash_forms().iter().any(|ts| {
                storage::hash_file(&path, ts)
                    .is_ok_and(|(id, _)| id.0.eq_ignore_ascii_case(&e.record.file_id.0))
            })
    })?;
    let e = &mut entries[pos];
    e.local = Some(LocalCopy {
        name: name.to_string(),
        verified: true,
    });
    Some((e, stamp))
}

/// `found` is `wanted`, or the `stem (N).ext` name `unique_name` gives it.
fn same_or_suffixed(found: &str, wanted: &str) -> bool {
    if found == wanted {
        return true;
    }
    let (stem, ext) = match wanted.rfind('.') {
        Some(i) if i > 0 => (&wanted[..i], &wanted[i..]),
        _ => (wanted, ""),
    };
    found
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix(" ("))
        .and_then(|r| r.strip_suffix(ext))
        .and_then(|r| r.strip_suffix(')'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The catalog as metadata.json bytes, written from borrowed entries (no
/// copy of a catalog that may be 16 MiB), with each held file's stamp.
fn catalog_json(core: &Peer, stamps: &HashMap<String, FileStamp>) -> Vec<u8> {
    metadata::write_json(core.catalog().iter().map(|(_, e)| metadata::EntryRef {
        record: &e.record,
        peers_with_file: &e.holders,
        has_copy: e.local.is_some(),
        local_name: e.local.as_ref().map(|l| l.name.as_str()),
        local_stamp: e.local.as_ref().and_then(|l| stamps.get(&l.name)),
        verified: e.local.as_ref().is_none_or(|l| l.verified),
    }))
}

/// Runs the peer until `exit`, EOF-less shutdown by signal, or a fatal
/// setup error (returned; `main` turns it into exit status 1).
pub fn run(args: Args) -> Result<(), StartError> {
    trim::fix_mmap_threshold();
    let fd_limit = match crate::net::limits::raise_fd_limit() {
        Ok(n) => n,
        Err(e) => {
            warn!("cannot read the open-file limit ({e}); assuming 1024");
            1024
        }
    };
    let dir = args.storage_dir();
    std::fs::create_dir_all(&dir).map_err(|e| {
        StartError(format!(
            "cannot create storage folder {}: {e}",
            dir.display()
        ))
    })?;
    // Before anything touches the folder: a second peer on it would delete
    // the first one's downloads in progress and race it on metadata.json.
    let _folder_lock = storage::lock::FolderLock::acquire(&dir, &args.peer_id)
        .map_err(|e| StartError(e.to_string()))?;
    // `--bind` moves only the listener; GOSSIP advertises <host> <p2p_port>.
    let (p2p_host, p2p_port) = args.p2p_listen();
    let p2p = bind(&p2p_host, p2p_port, "the peer server")?;
    let system_congestion = sockopt::unpaced_listener(&p2p);
    let p2p_ip = p2p.local_addr().ok().map(|a| a.ip());
    let http = bind(&args.http_host, args.http_port, "the stats page")?;
    let p2p_addr = p2p
        .local_addr()
        .map_err(|e| StartError(format!("peer server: {e}")))?;
    let http_addr = http
        .local_addr()
        .map_err(|e| StartError(format!("stats page: {e}")))?;

    let me = PeerId(args.peer_id.clone());
    let Loaded {
        entries,
        stamps,
        changed,
        not_read,
    } = load_catalog(&dir, &me);
    let cfg = Config {
        peer_id: me,
        addr: PeerAddr::new(args.host.clone(), args.advertised_port(p2p_addr.port())),
        well_known: args
            .well_known()
            .into_iter()
            .map(|(h, p)| PeerAddr::new(h, p))
            .collect(),
        gossip_interval: args.gossip_interval,
        peer_timeout: args.peer_timeout,
        auto_fetch: args.auto_fetch,
        share_unverified: args.share_unverified,
    };
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id())
    });
    let mut core = Peer::new(cfg, SmallRng::seed_from_u64(seed));
    // Held files first, so a metadata.json past the catalog's cap never
    // costs us a file we hold.
    let mut entries = entries;
    entries.sort_by_key(|e| e.local.is_none());
    let mut n_files = 0;
    let mut dropped = not_read;
    for e in entries {
        if core.load_entry(e) {
            n_files += 1;
        } else {
            dropped += 1;
        }
    }
    // Reading a large metadata file freed much more than it kept.
    trim::give_back();
    if dropped > 0 {
        warn!(
            "metadata lists more files than the catalog holds ({} files, {} MiB): {dropped} not loaded",
            crate::core::catalog::MAX_FILES,
            crate::core::catalog::MAX_CATALOG_BYTES >> 20
        );
    }
    // Changed while we were down: hashed again before they are served.
    for id in &changed {
        core.on_local_changed(id);
    }

    let poll = Poll::new().map_err(|e| StartError(format!("cannot create poll: {e}")))?;
    let waker = Arc::new(
        Waker::new(poll.registry(), WAKER)
            .map_err(|e| StartError(format!("cannot create waker: {e}")))?,
    );
    let resolver = Resolver::start(waker.clone())
        .map_err(|e| StartError(format!("cannot start resolver: {e}")))?;
    let (worker_tx, worker_rx) =
        start_worker(waker.clone()).map_err(|e| StartError(format!("cannot start worker: {e}")))?;
    let (meta_tx, meta_thread) = start_metadata_writer(dir.clone())
        .map_err(|e| StartError(format!("cannot start metadata writer: {e}")))?;

    let mut driver = Driver {
        poll,
        start: Instant::now(),
        core,
        settings: Settings {
            dir,
            connect_timeout: args.connect_timeout,
            idle_timeout: args.idle_timeout,
            max_file_size: args.max_file_size,
        },
        conns: Slab::new(),
        max_conns: crate::net::limits::connection_cap(fd_limit, MAX_CONNECTIONS),
        next_gen: 0,
        wheel: TimerWheel::new(),
        ready: VecDeque::new(),
        parked: Vec::new(),
        finishing: Vec::new(),
        waker: waker.clone(),
        read_buf: vec![0u8; READ_BUF_LEN],
        p2p: Some(p2p),
        system_congestion,
        p2p_ip,
        http: Some(http),
        http_cache: http::ResponseCache::new(),
        resolver,
        resolve_cache: HashMap::new(),
        unresolvable_logged: HashSet::new(),
        unreachable_logged: HashSet::new(),
        dials: DialLimiter::for_interval(args.gossip_interval),
        trim: Default::default(),
        pending: HashMap::new(),
        pending_count: 0,
        worker_tx,
        worker_rx,
        meta_tx: Some(meta_tx),
        meta_thread: Some(meta_thread),
        persist_armed: false,
        last_persist: None,
        unverified: HashMap::new(),
        push_quota: PushQuota::new(),
        trim_armed: false,
        saved_catalog_bytes: 0,
        stdin: None,
        exit: false,
        stamps,
        lease_signals: None,
        signalled: None,
    };
    driver.register_sources()?;
    println!(
        "{}",
        crate::cli::banner::start_line(&args, p2p_addr, http_addr, n_files, &driver.settings.dir)
    );
    if driver.stdin.is_some() {
        println!("type `help` for commands");
    }
    driver.run_loop();
    driver.shutdown();
    Ok(())
}

fn start_worker(waker: Arc<Waker>) -> io::Result<(Sender<Job>, Receiver<WorkerMsg>)> {
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (res_tx, res_rx) = mpsc::channel();
    thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            for job in job_rx {
                if res_tx.send(job()).is_err() {
                    break;
                }
                let _ = waker.wake();
            }
        })?;
    Ok((job_tx, res_rx))
}

/// Work for the metadata thread, done in order.
enum MetaJob {
    /// Write this serialized catalog atomically.
    Write(Vec<u8>),
    /// Unlink a stored file. Queued right after the catalog that no longer
    /// lists it, so a crash can never leave an entry held whose file is gone.
    Remove(PathBuf),
}

/// The metadata writer: takes serialized catalogs and writes each one
/// atomically (temp file, fsync, rename, directory fsync). Consecutive
/// catalogs are coalesced (only the newest is written); a removal is never
/// moved before the catalog queued ahead of it.
fn start_metadata_writer(dir: PathBuf) -> io::Result<(Sender<MetaJob>, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<MetaJob>();
    let handle = thread::Builder::new()
        .name("metadata".into())
        .spawn(move || {
            // A failed write (ENOSPC, EACCES) is kept and tried again every
            // few seconds until one succeeds or a newer catalog replaces it.
            let mut failed: Option<Vec<u8>> = None;
            let mut failures = 0u32;
            let mut write =
                |bytes: Vec<u8>, failed: &mut Option<Vec<u8>>| match storage::write_atomic(
                    &dir,
                    metadata::METADATA_FILE,
                    &bytes,
                ) {
                    Ok(()) => {
                        if failures > 0 {
                            info!(
                                "{} written again after {failures} failed attempts",
                                dir.join(metadata::METADATA_FILE).display()
                            );
                        }
                        failures = 0;
                    }
                    Err(e) => {
                        if failures == 0 {
                            warn!(
                                "cannot write {}: {e}; retrying every {} s",
                                dir.join(metadata::METADATA_FILE).display(),
                                METADATA_RETRY.as_secs()
                            );
                        } else {
                            debug!("metadata write still failing: {e}");
                        }
                        failures += 1;
                        *failed = Some(bytes);
                    }
                };
            // A removal waits while the catalog that no longer lists the file
            // is not on disk: the file is unlinked only after the catalog
            // saying so was written.
            let mut removals: Vec<PathBuf> = Vec::new();
            let remove = |path: &PathBuf| match std::fs::remove_file(path) {
                Ok(()) => info!("removed {}", path.display()),
                Err(e) => warn!("cannot remove {}: {e}", path.display()),
            };
            loop {
                let job = match &failed {
                    None => rx.recv().ok(),
                    Some(_) => match rx.recv_timeout(METADATA_RETRY) {
                        Ok(job) => Some(job),
                        Err(mpsc::RecvTimeoutError::Timeout) => failed.take().map(MetaJob::Write),
                        Err(mpsc::RecvTimeoutError::Disconnected) => None,
                    },
                };
                let Some(job) = job else { break };
                match job {
                    MetaJob::Write(mut bytes) => {
                        // Only the newest catalog matters; removals queued
                        // behind it wait for it.
                        while let Ok(queued) = rx.try_recv() {
                            match queued {
                                MetaJob::Write(newer) => bytes = newer,
                                MetaJob::Remove(path) => removals.push(path),
                            }
                        }
                        failed = None;
                        write(bytes, &mut failed);
                        if failed.is_none() {
                            removals.drain(..).for_each(|p| remove(&p));
                        }
                    }
                    MetaJob::Remove(path) if failed.is_some() => removals.push(path),
                    MetaJob::Remove(path) => remove(&path),
                }
            }
        })?;
    Ok((tx, handle))
}

impl Driver {
    fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    fn register_sources(&mut self) -> Result<(), StartError> {
        let reg = self.poll.registry();
        if let Some(l) = self.p2p.as_mut() {
            reg.register(l, P2P_LISTENER, Interest::READABLE)
                .map_err(|e| StartError(format!("poll: {e}")))?;
        }
        if let Some(l) = self.http.as_mut() {
            reg.register(l, HTTP_LISTENER, Interest::READABLE)
                .map_err(|e| StartError(format!("poll: {e}")))?;
        }
        crate::net::exit_guard::install().map_err(|e| StartError(format!("signals: {e}")))?;
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .map_err(|e| StartError(format!("signals: {e}")))?;
        reg.register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| StartError(format!("poll: {e}")))?;
        // Keep the signal source alive for the life of the process; the
        // loop only needs its readiness.
        std::mem::forget(signals);
        // SIGIO's default action ends the process: its handler must be in
        // place before the first lease is taken.
        let mut lease_signals = signal_hook_mio::v1_0::Signals::new([signal_hook::consts::SIGIO])
            .map_err(|e| StartError(format!("signals: {e}")))?;
        reg.register(&mut lease_signals, LEASES, Interest::READABLE)
            .map_err(|e| StartError(format!("poll: {e}")))?;
        self.lease_signals = Some(lease_signals);
        // stdin: epoll refuses regular files and /dev/null (EPERM); then the
        // peer runs without a menu.
        match reg.register(&mut SourceFd(&stdin::STDIN_FD), STDIN, Interest::READABLE) {
            Ok(()) => {
                if let Err(e) = stdin::set_nonblocking() {
                    warn!("stdin can't be made non-blocking ({e}); running without a menu");
                    let _ = reg.deregister(&mut SourceFd(&stdin::STDIN_FD));
                } else {
                    self.stdin = Some(LineReader::default());
                    // Input typed before we registered is read right away.
                    self.read_stdin();
                }
            }
            Err(e) => info!("stdin is not a terminal or pipe ({e}); running without a menu"),
        }
        Ok(())
    }

    fn run_loop(&mut self) {
        let now = self.now();
        self.core.start(now);
        self.apply_effects();
        let mut events = Events::with_capacity(1024);
        while !self.exit {
            let timeout = if !self.ready.is_empty() {
                Some(Duration::ZERO)
            } else {
                let now = self.now();
                self.wheel
                    .next_deadline()
                    .map(|d| Duration::from_millis(d.0.saturating_sub(now.0) + 1))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("poll failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in events.iter() {
                match event.token() {
                    P2P_LISTENER => self.accept(false),
                    HTTP_LISTENER => self.accept(true),
                    STDIN => self.read_stdin(),
                    WAKER => self.on_wake(),
                    SIGNALS => {
                        info!("signal received; saving and exiting");
                        self.exit = true;
                        self.signalled.get_or_insert_with(Instant::now);
                    }
                    LEASES => self.on_lease_signal(),
                    Token(t) if t >= CONN_BASE => {
                        let key = t - CONN_BASE;
                        if let Some(gen) = self.conns.get(key).map(|c| c.gen) {
                            self.step(key, gen);
                        }
                    }
                    _ => {} // sporadic events happen
                }
                self.apply_effects();
            }
            let ready: Vec<(usize, u64)> = self.ready.drain(..).collect();
            for (key, gen) in ready {
                self.step(key, gen);
                self.apply_effects();
            }
            let now = self.now();
            for due in self.wheel.poll(now) {
                self.on_due(due);
                self.apply_effects();
            }
        }
    }

    fn shutdown(&mut self) {
        // Stop accepting, let received files land, then write the final
        // catalog synchronously.
        self.p2p = None;
        self.http = None;
        // After a signal the whole exit fits in SIGNAL_EXIT_LIMIT (the
        // watchdog in `exit_guard` ends the process then anyway): received
        // files get SIGNAL_EXIT_DRAIN, an earlier metadata write still at
        // work SIGNAL_EXIT_WRITER more, and the final write what is left.
        let drain_until = match self.signalled {
            Some(t) => t + SIGNAL_EXIT_DRAIN,
            None => Instant::now() + EXIT_DRAIN,
        };
        self.drain_finishing(drain_until);
        drop(self.meta_tx.take());
        if let Some(t) = self.meta_thread.take() {
            match self.signalled {
                None => {
                    let _ = t.join();
                }
                Some(at) => {
                    let until = at + SIGNAL_EXIT_DRAIN + SIGNAL_EXIT_WRITER;
                    while !t.is_finished() && Instant::now() < until {
                        thread::sleep(Duration::from_millis(5));
                    }
                    if !t.is_finished() {
                        // Writing now would race it on metadata.json (an
                        // older catalog could land last); its own write
                        // keeps the file whole.
                        error!(
                            "metadata NOT saved on exit: an earlier write is still at work; bye"
                        );
                        return;
                    }
                }
            }
        }
        let bytes = catalog_json(&self.core, &self.stamps);
        let saved = storage::write_atomic(&self.settings.dir, metadata::METADATA_FILE, &bytes);
        // No temp file outlives a clean exit, whatever was still running.
        if let Err(e) = storage::remove_partials(&self.settings.dir) {
            warn!("cannot remove temp files on exit: {e}");
        }
        match saved {
            Ok(()) => info!("metadata saved; bye"),
            Err(e) => error!(
                "metadata NOT saved on exit ({e}): {} keeps its previous contents; bye",
                self.settings.dir.join(metadata::METADATA_FILE).display()
            ),
        }
    }

    /// Checks and stores the received FILE_DATAs whose writer has ended;
    /// the others wait on (asked again to wake the loop when they end).
    fn settle_finished(&mut self) {
        for (since, f) in std::mem::take(&mut self.finishing) {
            if f.sink().must_wait_for_writer() {
                self.finishing.push((since, f));
            } else {
                self.finish_received(f);
                self.apply_effects();
            }
        }
    }

    /// At exit: received FILE_DATAs whose writer is still at work (every
    /// byte arrived; only the disk is behind) get until `deadline` ([`EXIT_DRAIN`],
    /// [`SIGNAL_EXIT_DRAIN`] after a signal) to
    /// land, so they are stored and in the saved catalog. Past it they are
    /// dropped (their temp files are removed now or at the next start).
    fn drain_finishing(&mut self, deadline: Instant) {
        while !self.finishing.is_empty() {
            self.settle_finished();
            if Instant::now() >= deadline {
                if !self.finishing.is_empty() {
                    warn!(
                        "{} received files still being written at exit; dropped",
                        self.finishing.len()
                    );
                }
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    // ---- timers -------------------------------------------------------

    fn on_due(&mut self, due: Due) {
        let now = self.now();
        // Shared responses are let go once stale, not at the next request.
        self.http_cache.evict(now);
        match due {
            Due::Core(t) => {
                self.core.on_timer(now, t);
                if t == Timer::Sweep {
                    self.dials.sweep(now);
                    let size = self.core.members().len() + self.core.seen_len() + self.dials.len();
                    if self.trim.shrunk(size) {
                        debug!(
                            "flood over ({size} peers and destinations left): trimming the heap"
                        );
                        // The slab keeps the capacity of its busiest moment.
                        self.conns.shrink_to_fit();
                        crate::net::trim::give_back();
                    }
                }
            }
            Due::Persist => {
                self.persist_armed = false;
                self.persist_now();
            }
            Due::Finishing => self.expire_finishing(now),
            Due::Trim => {
                self.trim_armed = false;
                trim::give_back();
            }
            Due::Conn { key, gen } => {
                let Some(c) = self.conns.get(key).filter(|c| c.gen == gen) else {
                    return;
                };
                if now >= self.deadline(c) && !matches!(c.role, Role::Connecting(_)) {
                    // Bytes may be waiting that a long step elsewhere kept us
                    // from reading: give the connection one step before
                    // calling it idle.
                    self.step(key, gen);
                }
                let now = self.now();
                let Some(c) = self.conns.get(key).filter(|c| c.gen == gen) else {
                    return;
                };
                let deadline = self.deadline(c);
                if now >= deadline {
                    let why = match &c.role {
                        Role::Connecting(_) => "connect timed out",
                        Role::Drain => "",
                        Role::Http { .. } => "HTTP request timed out",
                        Role::Write {
                            kind: WriteKind::Http,
                            ..
                        } => "HTTP client too slow to read its response",
                        Role::Read { .. } => "no complete message within the idle timeout",
                        _ => "no progress within the idle timeout",
                    };
                    let why = (!why.is_empty()).then(|| why.to_string());
                    self.close(key, why);
                } else {
                    self.wheel.schedule(deadline, Due::Conn { key, gen });
                }
            }
        }
    }

    fn deadline(&self, c: &Conn) -> Time {
        let s = &self.settings;
        match &c.role {
            Role::Read { .. } => c.last_active.plus(crate::protocol::MESSAGE_IDLE_TIMEOUT),
            Role::Http { .. } => c.opened.plus(http::REQUEST_TIMEOUT),
            Role::Connecting(_) => c.phase_started.plus(s.connect_timeout),
            Role::Write {
                kind: WriteKind::Http,
                ..
            } => c
                .phase_started
                .plus(http::SEND_TIMEOUT)
                .min(c.last_active.plus(http::STALL_TIMEOUT)),
            Role::Write { .. } | Role::Fetch(_) => c.last_active.plus(s.idle_timeout),
            Role::Drain => c.phase_started.plus(DRAIN_TIMEOUT),
        }
    }

    fn persist_now(&mut self) {
        self.last_persist = Some(self.now());
        let bytes = catalog_json(&self.core, &self.stamps);
        let catalog_bytes = self.core.catalog().bytes();
        let dropped = self.saved_catalog_bytes.saturating_sub(catalog_bytes);
        self.saved_catalog_bytes = catalog_bytes;
        if bytes.len() >= trim::TRIM_AFTER_BYTES || dropped >= trim::TRIM_AFTER_BYTES {
            self.arm_trim();
        }
        if let Some(tx) = &self.meta_tx {
            let _ = tx.send(MetaJob::Write(bytes));
        }
    }

    /// Schedules a [`trim::give_back`] soon, unless one is.
    fn arm_trim(&mut self) {
        if !self.trim_armed {
            self.trim_armed = true;
            let at = self.now().plus(trim::TRIM_DELAY);
            self.wheel.schedule(at, Due::Trim);
        }
    }

    // ---- effects ------------------------------------------------------

    fn apply_effects(&mut self) {
        loop {
            let effects = self.core.take_effects();
            if effects.is_empty() {
                return;
            }
            for e in effects {
                self.apply(e);
            }
        }
    }

    fn apply(&mut self, effect: Effect) {
        let now = self.now();
        match effect {
            Effect::Send { to, msg } => {
                if !self.may_dial(now, &to, msg.kind()) {
                    return;
                }
                debug!("send {} to {to}", msg.kind());
                let role = Role::Write {
                    payload: Payload::bytes(msg.to_bytes()),
                    kind: WriteKind::Send,
                };
                self.connect_to(to, role);
            }
            Effect::PushFile { to, file_id } if !self.may_dial(now, &to, "FILE_DATA push") => {
                debug!("push of {file_id} to {to} not sent");
            }
            Effect::PushFile { to, file_id } => match self.open_file(&file_id) {
                Ok(enc) => {
                    let role = Role::Write {
                        payload: Payload::File(Box::new(enc)),
                        kind: WriteKind::Push,
                    };
                    self.connect_to(to, role);
                }
                Err(e) => warn!("cannot push {file_id}: {e}"),
            },
            Effect::Reverify { record, name } => {
                let path = self.settings.dir.join(&name);
                let _ = self.worker_tx.send(Box::new(move || {
                    let result = serving::reverify(&path, &record.file_id, &record.file_timestamp);
                    WorkerMsg::Reverified {
                        file_id: record.file_id,
                        name,
                        result,
                    }
                }));
            }
            Effect::Fetch {
                transfer,
                attempt,
                from,
                to,
                record,
            } => {
                let limits = self.fetch_limits(&record.file_size);
                let role = Role::Fetch(Box::new(FetchConn {
                    transfer,
                    attempt,
                    request: Message::GetFile {
                        file_id: record.file_id.clone(),
                    }
                    .to_bytes(),
                    record,
                    source: from.0,
                    request_pos: 0,
                    decoder: MessageDecoder::new(limits),
                    sink: PartialSink::for_download(self.settings.dir.clone(), self.waker.clone()),
                    received: 0,
                }));
                self.connect_to(to, role);
            }
            Effect::KeepUnverified { transfer, attempt } => {
                let result = match self.unverified.remove(&transfer) {
                    Some((partial, len)) => {
                        let record = self
                            .core
                            .downloads()
                            .get(transfer)
                            .map(|d| d.record.clone());
                        match record {
                            Some(r) => self.commit(partial, &r.file_name, len, false),
                            None => FetchResult::Failed("download vanished".into()),
                        }
                    }
                    None => FetchResult::Failed("the unverified copy was lost".into()),
                };
                self.core.on_fetch_result(now, transfer, attempt, result);
            }
            Effect::Schedule { at, timer } => {
                self.wheel.schedule(at, Due::Core(timer));
            }
            Effect::Persist => {
                if !self.persist_armed {
                    self.persist_armed = true;
                    let at = match self.last_persist {
                        Some(t) => t.plus(PERSIST_MIN_INTERVAL).max(now),
                        None => now,
                    };
                    self.wheel.schedule(at, Due::Persist);
                }
            }
            Effect::RemoveLocal { name } => {
                self.stamps.remove(&name);
                // The catalog no longer lists the file: write that first, and
                // unlink only after it is on disk (same thread, in order).
                self.persist_now();
                let path = self.settings.dir.join(&name);
                if let Some(tx) = &self.meta_tx {
                    let _ = tx.send(MetaJob::Remove(path));
                }
            }
            Effect::CopyOut { name, record, dest } => {
                let src = self.settings.dir.join(&name);
                let storage_dir = self.settings.dir.clone();
                let in_folder = storage::export_name(&record.file_name, &record.file_id.0);
                let _ = self.worker_tx.send(Box::new(move || {
                    WorkerMsg::Copied(storage::export(
                        &src,
                        &storage_dir,
                        &dest.path,
                        &record.file_name,
                        &in_folder,
                        dest.force,
                    ))
                }));
            }
            Effect::Import { path } => {
                let dir = self.settings.dir.clone();
                let owner = self.core.config().peer_id.clone();
                let _ = self.worker_tx.send(Box::new(move || {
                    WorkerMsg::Imported(
                        storage::import_file(&path, &dir, &owner, now_unix())
                            .map_err(|e| e.to_string()),
                    )
                }));
            }
            Effect::Print(line) => escape::say(&line),
        }
    }

    /// Whether a message of `kind` may be sent to `to` now (the
    /// destination's dial limit); a refused one is dropped with a debug line.
    fn may_dial(&mut self, now: Time, to: &PeerAddr, kind: &str) -> bool {
        match self.dials.check(now, to) {
            Verdict::Allowed => true,
            Verdict::OverRate => {
                debug!("{kind} to {to} dropped: over its dial limit");
                false
            }
            Verdict::BackingOff { until } => {
                debug!(
                    "{kind} to {to} dropped: backing off after a failed connect for {} ms",
                    until.0.saturating_sub(now.0)
                );
                false
            }
        }
    }

    fn limits(&self) -> DecoderLimits {
        DecoderLimits {
            max_envelope: MAX_MESSAGE_LEN,
            max_data: self.settings.max_file_size,
            max_depth: MAX_JSON_DEPTH,
        }
    }

    /// A download reads no more bytes than its advertised size allows (a
    /// holder that sends more is cut off there, not at --max-file-size).
    fn fetch_limits(&self, advertised: &FileSize) -> DecoderLimits {
        let mut limits = self.limits();
        if let Some(bound) = size_upper_bound(advertised) {
            limits.max_data = limits.max_data.min(bound);
        }
        limits
    }

    /// Connections streaming a FILE_DATA now.
    fn file_streams(&self) -> usize {
        self.conns
            .iter()
            .filter(|(_, c)| {
                matches!(
                    c.role,
                    Role::Write {
                        payload: Payload::File(_),
                        ..
                    }
                )
            })
            .count()
    }

    /// Opens a held file to serve it: under a read lease and mapped, or
    /// (no lease to be had) read and checked as it goes. A copy that no
    /// longer looks as it did when verified is not served; the core is told.
    fn open_file(&mut self, file_id: &FileId) -> Result<FileDataEncoder, OpenError> {
        let Some((record, local)) = self.core.servable_copy(file_id) else {
            return Err(OpenError::NotHeld);
        };
        let (record, name, verified) = (record.clone(), local.name.clone(), local.verified);
        let path = self.settings.dir.join(&name);
        let (opened, stamp) = match serving::open_for_serving(&path, serving::leases_enabled()) {
            Ok(ok) => ok,
            Err(e) if serving::is_gone(&e) => {
                // Gone, or no longer a regular file: the user changed it.
                self.core.on_local_changed(file_id);
                return Err(OpenError::Io(e));
            }
            Err(e) => {
                // A passing failure (EMFILE in a flood, EIO...): not-found
                // for this request only; the copy stays held.
                debug!("cannot open {name} to serve it: {e}");
                return Err(OpenError::Io(e));
            }
        };
        match self.stamps.get(&name) {
            Some(was) if *was != stamp => {
                self.core.on_local_changed(file_id);
                return Err(OpenError::Changed);
            }
            Some(_) => {}
            // Never stamped (taken back at start, or older metadata): its
            // bytes are hashed once before they are served.
            None => {
                self.core.on_local_unstamped(file_id);
                return Err(OpenError::Changed);
            }
        }
        let source = match opened {
            _ if stamp.len == 0 => FileSource::Memory(Vec::new()),
            Opened::Leased(lease) => FileSource::Leased(Box::new(
                serving::LeasedFile::map(lease).map_err(OpenError::Io)?,
            )),
            // An unverified copy never hashes to its id: served (by the
            // user's choice) without the hash gate.
            Opened::Unleased(file, why) if !verified => {
                debug!("{file_id}: no read lease ({why}); unverified copy, read as it is sent");
                FileSource::Read(Box::new(serving::CheckedReader::unverified(
                    file, stamp.len,
                )))
            }
            Opened::Unleased(file, why) => {
                debug!("{file_id}: no read lease ({why}); read and checked as it is sent");
                FileSource::Read(Box::new(serving::CheckedReader::new(
                    file,
                    stamp.len,
                    record.file_id.clone(),
                    record.file_timestamp.clone(),
                )))
            }
        };
        Ok(FileDataEncoder::new(&record, source))
    }

    /// SIGIO: a writer waits on a file we serve under a lease. Those
    /// transfers end now, unfinished (their clients fall back to another
    /// source), dropping the map and then the lease, which lets the writer
    /// in; the files are checked again.
    fn on_lease_signal(&mut self) {
        if let Some(s) = self.lease_signals.as_mut() {
            // Only the readiness matters; drain what was raised.
            for _ in s.pending() {}
        }
        // A push still connecting holds its file too.
        let broken: Vec<(usize, FileId)> = self
            .conns
            .iter()
            .filter_map(|(k, c)| Some((k, breaking_file(&c.role)?)))
            .collect();
        // And so does one waiting for its host's address: dropped as failed.
        let mut waiting_broken = Vec::new();
        for waiting in self.pending.values_mut() {
            let before = waiting.len();
            waiting.retain(|p| match breaking_file(&p.role) {
                Some(id) => {
                    waiting_broken.push(id);
                    false
                }
                None => true,
            });
            self.pending_count -= before - waiting.len();
        }
        for file_id in waiting_broken {
            info!("{file_id} is being changed on disk; its push waiting to connect is dropped");
            self.core.on_local_changed(&file_id);
        }
        for (key, file_id) in broken {
            info!("{file_id} is being changed on disk; its transfer in progress is ended");
            self.close(key, Some("the file is being changed on disk".into()));
            self.core.on_local_changed(&file_id);
        }
    }

    /// Records what a held file looks like now that it was verified.
    fn stamp(&mut self, name: &str) {
        match FileStamp::read(&self.settings.dir.join(name)) {
            Ok(stamp) => {
                self.stamps.insert(name.to_string(), stamp);
            }
            Err(e) => debug!("cannot stat {name}: {e}"),
        }
    }

    // ---- helper threads -------------------------------------------------

    fn on_wake(&mut self) {
        // A file writer made room (or a wake for something else: a parked
        // connection without room parks again).
        self.ready.extend(self.parked.drain(..));
        // Or a writer ended: its FILE_DATA can be checked and stored.
        self.settle_finished();
        for r in self.resolver.drain() {
            let now = self.now();
            if let Err(e) = &r.result {
                if self.unresolvable_logged.len() < RESOLVE_CACHE_MAX
                    && self.unresolvable_logged.insert(r.host.clone())
                {
                    info!("cannot resolve {}: {e} (will retry)", r.host);
                }
            }
            if self.resolve_cache.len() >= RESOLVE_CACHE_MAX {
                self.resolve_cache.clear();
            }
            self.resolve_cache
                .insert(r.host.clone(), (r.result.clone(), now));
            let waiting = self.pending.remove(&r.host).unwrap_or_default();
            self.pending_count -= waiting.len();
            for p in waiting {
                match &r.result {
                    Ok(sa) => {
                        self.open_outbound(SocketAddr::new(sa.ip(), p.addr.port), p.addr, p.role)
                    }
                    Err(e) => {
                        self.outbound_failed(p.role, format!("cannot resolve {}: {e}", p.addr.host))
                    }
                }
            }
        }
        while let Ok(msg) = self.worker_rx.try_recv() {
            match msg {
                WorkerMsg::Imported(r) => self.core.on_imported(r.map(|s| {
                    let name = s.local_name.clone().unwrap_or_default();
                    if let Some(stamp) = s.local_stamp {
                        self.stamps.insert(name.clone(), stamp);
                    }
                    (s.record, name)
                })),
                WorkerMsg::Copied(outcome) => escape::say(&outcome.to_string()),
                WorkerMsg::DestChecked(cmd, Ok(())) => self.core.on_command(self.now(), cmd),
                WorkerMsg::DestChecked(_, Err(refusal)) => escape::say(&refusal.to_string()),
                WorkerMsg::Reverified {
                    file_id,
                    name,
                    result,
                } => {
                    let (outcome, stamp) = match result {
                        Ok((true, stamp)) => (ReverifyOutcome::Matches, Some(stamp)),
                        Ok((false, stamp)) => (ReverifyOutcome::Differs, Some(stamp)),
                        Err(e) if serving::is_gone(&e) => (ReverifyOutcome::Gone, None),
                        Err(e) => (ReverifyOutcome::Unreadable(e.kind()), None),
                    };
                    let now = self.now();
                    // The core says whether the result applies (not stale).
                    match self.core.on_reverified(now, &file_id, &name, outcome) {
                        StampUpdate::Unchanged => {}
                        StampUpdate::Record => {
                            if let Some(stamp) = stamp {
                                self.stamps.insert(name, stamp);
                            }
                        }
                        StampUpdate::Forget => {
                            self.stamps.remove(&name);
                        }
                    }
                }
            }
        }
    }

    fn read_stdin(&mut self) {
        let Some(reader) = self.stdin.as_mut() else {
            return;
        };
        let got = reader.drain(io::stdin().lock(), menu::MAX_LINE);
        if got.too_long > 0 {
            println!("line too long (over {} bytes); ignored", menu::MAX_LINE);
        }
        for line in got.lines {
            self.on_menu_line(&line);
            if self.exit {
                return;
            }
        }
        if got.eof {
            info!("stdin closed; running without a menu");
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&stdin::STDIN_FD));
            self.stdin = None;
        }
    }

    fn on_menu_line(&mut self, line: &str) {
        let now = self.now();
        match menu::parse(line) {
            MenuCommand::List => println!("{}", menu::render_list(&self.core.view(now))),
            MenuCommand::Peers => println!("{}", menu::render_peers(&self.core.view(now))),
            MenuCommand::Transfers => {
                println!("{}", menu::render_transfers(&self.core.view(now)))
            }
            MenuCommand::Help => println!("{}", menu::HELP),
            MenuCommand::Exit => {
                println!("saving and exiting");
                self.exit = true;
            }
            // A destination is checked first (off the loop: it may be on a
            // slow disk), so a refusal comes before any download.
            MenuCommand::Core(Command::Get {
                file,
                dest: Some(dest),
                force,
            }) => {
                let storage_dir = self.settings.dir.clone();
                let _ = self.worker_tx.send(Box::new(move || {
                    let checked = storage::check_dest(&dest, &storage_dir, force);
                    let cmd = Command::Get {
                        file,
                        dest: Some(dest),
                        force,
                    };
                    WorkerMsg::DestChecked(cmd, checked)
                }));
            }
            MenuCommand::Core(cmd) => self.core.on_command(now, cmd),
            MenuCommand::Nothing => {}
            MenuCommand::Invalid(hint) => escape::say(&hint),
        }
        self.apply_effects();
    }

    // ---- connections ----------------------------------------------------

    fn add_conn(
        &mut self,
        stream: TcpStream,
        role: Role,
        inbound: bool,
        interest: Interest,
    ) -> Option<usize> {
        let now = self.now();
        self.next_gen += 1;
        let gen = self.next_gen;
        let conn = Conn {
            stream,
            gen,
            role,
            opened: now,
            last_active: now,
            phase_started: now,
            inbound,
            target: None,
            remote_ip: None,
            push: None,
        };
        let deadline = self.deadline(&conn);
        let key = self.conns.insert(conn);
        if let Err(e) = self.poll.registry().register(
            &mut self.conns[key].stream,
            Token(CONN_BASE + key),
            interest,
        ) {
            warn!("cannot register connection: {e}");
            self.conns.remove(key);
            return None;
        }
        self.wheel.schedule(deadline, Due::Conn { key, gen });
        Some(key)
    }

    /// Makes room at the cap by closing the longest-idle inbound
    /// connection; false if none can be closed.
    fn make_room(&mut self) -> bool {
        if self.conns.len() < self.max_conns {
            return true;
        }
        self.evict_longest_idle()
    }

    /// Closes the longest-idle inbound connection; false if there is none.
    fn evict_longest_idle(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| c.inbound)
            .min_by_key(|(_, c)| c.last_active)
            .map(|(k, _)| k);
        match victim {
            Some(k) => {
                debug!("connection cap reached; closing the longest-idle connection");
                self.close(k, None);
                true
            }
            None => false,
        }
    }

    fn accept(&mut self, is_http: bool) {
        loop {
            let listener = if is_http {
                self.http.as_ref()
            } else {
                self.p2p.as_ref()
            };
            let Some(listener) = listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, from)) => {
                    if !self.make_room() {
                        debug!("connection from {from} refused: at the cap");
                        continue;
                    }
                    if let (false, Some(system), Ok(local)) =
                        (is_http, &self.system_congestion, stream.local_addr())
                    {
                        // It may carry a FILE_DATA we send (see `sockopt`).
                        sockopt::accepted(&stream, local.ip(), from.ip(), system);
                    }
                    if is_http {
                        http_out::send_buffer_for_tests(&stream);
                    }
                    let role = if is_http {
                        Role::Http { buf: Vec::new() }
                    } else {
                        Role::Read {
                            decoder: Box::new(MessageDecoder::new(self.limits())),
                            sink: PartialSink::with_waker(
                                self.settings.dir.clone(),
                                self.waker.clone(),
                            ),
                            received: 0,
                        }
                    };
                    if let Some(key) = self.add_conn(stream, role, true, Interest::READABLE) {
                        self.conns[key].remote_ip = Some(from.ip());
                        // Data may already be waiting.
                        let gen = self.conns[key].gen;
                        self.ready.push_back((key, gen));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_out_of_fds(&e) => {
                    // Out of descriptors below our own cap (another part of
                    // the process holds more than reserved): free one and
                    // retry, rather than leave the backlog to starve.
                    if !self.evict_longest_idle() {
                        warn!("accept failed: {e}");
                        return;
                    }
                }
                Err(e) => {
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Opens a connection to a peer's advertised host:port, resolving names
    /// off the loop.
    fn connect_to(&mut self, to: PeerAddr, role: Role) {
        if let Ok(ip) = to.host.parse::<IpAddr>() {
            self.open_outbound(SocketAddr::new(ip, to.port), to, role);
            return;
        }
        let now = self.now();
        if let Some((res, at)) = self.resolve_cache.get(&to.host) {
            let ttl = if res.is_ok() {
                RESOLVE_TTL
            } else {
                RESOLVE_FAILURE_TTL
            };
            if now.since(*at) < ttl {
                match res.clone() {
                    Ok(sa) => self.open_outbound(SocketAddr::new(sa.ip(), to.port), to, role),
                    Err(e) => {
                        let why = format!("cannot resolve {}: {e}", to.host);
                        self.outbound_failed(role, why)
                    }
                }
                return;
            }
        }
        if self.pending_count >= crate::net::resolver::MAX_PENDING {
            self.outbound_failed(role, "too many names waiting to be resolved".into());
            return;
        }
        if let Some(waiting) = self.pending.get_mut(&to.host) {
            // A lookup of this host is in flight: wait for its answer.
            waiting.push(Pending { addr: to, role });
            self.pending_count += 1;
            return;
        }
        if !self.resolver.request(&to.host, to.port) {
            self.outbound_failed(role, "too many names waiting to be resolved".into());
            return;
        }
        self.pending
            .insert(to.host.clone(), vec![Pending { addr: to, role }]);
        self.pending_count += 1;
    }

    fn open_outbound(&mut self, sa: SocketAddr, to: PeerAddr, role: Role) {
        if self.conns.len() >= self.max_conns && !self.make_room() {
            self.outbound_failed(role, "too many open connections".into());
            return;
        }
        let (local, unpaced) = (self.p2p_ip, self.system_congestion.is_some());
        let mut connected = sockopt::connect(sa, local, unpaced);
        if matches!(&connected, Err(e) if is_out_of_fds(e)) && self.evict_longest_idle() {
            connected = sockopt::connect(sa, local, unpaced);
        }
        match connected {
            Ok(stream) => {
                let role = Role::Connecting(Box::new(role));
                match self.add_conn(stream, role, false, Interest::READABLE | Interest::WRITABLE) {
                    Some(key) => self.conns[key].target = Some(to),
                    None => debug!("cannot register connection to {to}"),
                }
            }
            Err(e) => {
                let now = self.now();
                self.dials.connect_failed(now, &to);
                self.outbound_failed(role, format!("cannot connect to {to}: {e}"))
            }
        }
    }

    fn outbound_failed(&mut self, role: Role, why: String) {
        match role {
            Role::Fetch(f) => {
                let now = self.now();
                self.core
                    .on_fetch_result(now, f.transfer, f.attempt, FetchResult::Failed(why));
            }
            Role::Connecting(inner) => self.outbound_failed(*inner, why),
            _ => debug!("{why}"),
        }
    }

    fn close(&mut self, key: usize, why: Option<String>) {
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        if let (Role::Connecting(_), Some(to), Some(why)) = (&c.role, &c.target, &why) {
            let now = self.now();
            self.dials.connect_failed(now, to);
            // A peer we can't reach (a well-known host that is down, say) is
            // worth one info line, not one per gossip round.
            if self.unreachable_logged.len() < RESOLVE_CACHE_MAX
                && self.unreachable_logged.insert(to.clone())
            {
                info!("cannot reach {to}: {why} (will retry)");
            }
        }
        match c.role {
            Role::Fetch(_) | Role::Connecting(_) => {
                let why = why.unwrap_or_else(|| "connection closed".into());
                self.outbound_failed(c.role, why);
            }
            _ => {
                if let Some(why) = why {
                    debug!("connection closed: {why}");
                }
            }
        }
    }

    /// Our side is finished: send FIN and wait for the peer's, so unread
    /// input never turns the close into a reset that loses the reply's tail.
    fn finish_conn(&mut self, key: usize) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let _ = c.stream.shutdown(Shutdown::Write);
        c.role = Role::Drain;
        c.phase_started = now;
        let gen = c.gen;
        let _ = self.poll.registry().reregister(
            &mut c.stream,
            Token(CONN_BASE + key),
            Interest::READABLE,
        );
        let deadline = now.plus(DRAIN_TIMEOUT);
        self.wheel.schedule(deadline, Due::Conn { key, gen });
        self.ready.push_back((key, gen));
    }

    fn set_role(&mut self, key: usize, role: Role, interest: Interest) {
        let now = self.now();
        if let Some(c) = self.conns.get_mut(key) {
            c.role = role;
            c.phase_started = now;
            c.last_active = now;
            let gen = c.gen;
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut c.stream, Token(CONN_BASE + key), interest);
            self.ready.push_back((key, gen));
        }
    }

    /// Runs one I/O step of a connection and acts on its outcome.
    fn step(&mut self, key: usize, gen: u64) {
        let now = self.now();
        let Driver {
            conns,
            read_buf,
            core,
            start,
            push_quota,
            ..
        } = self;
        let Some(c) = conns.get_mut(key).filter(|c| c.gen == gen) else {
            return;
        };
        let mut active = false;
        // A readable event does not lift a park: a full writer queue
        // gets no more bytes until the writer wakes the loop.
        let writer_full = match &c.role {
            Role::Read { sink, .. } => sink.must_wait(),
            Role::Fetch(f) => f.sink.must_wait(),
            _ => false,
        };
        if writer_full {
            return self.after_step(key, gen, Outcome::Parked);
        }
        let written_before = match &c.role {
            Role::Write { payload, .. } => payload.written(),
            _ => 0,
        };
        // Only inbound connections read a Role::Read; the fallback is never
        // used.
        let remote_ip = c
            .remote_ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let outcome = match &mut c.role {
            Role::Read {
                decoder,
                sink,
                received,
            } => read_loop(
                &mut c.stream,
                read_buf,
                |bytes| {
                    active = true;
                    *received += bytes.len() as u64;
                    let mut gate = PushGate {
                        sink: &mut *sink,
                        quota: &mut *push_quota,
                        from: remote_ip,
                        ticket: &mut c.push,
                        now,
                    };
                    match feed(decoder, &mut gate, bytes) {
                        Ok(false) if sink.must_wait() => Some(Outcome::Parked),
                        Ok(false) => None,
                        Ok(true) => Some(Outcome::Written),
                        Err(e) => Some(Outcome::Close(Some(format!("bad message: {e}")))),
                    }
                },
                || Outcome::Close(Some("closed before a complete message".into())),
            ),
            Role::Http { buf } => read_loop(
                &mut c.stream,
                read_buf,
                |bytes| {
                    active = true;
                    let room = (http::MAX_REQUEST_HEAD + 1).saturating_sub(buf.len());
                    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    match http::parse_request(buf) {
                        http::ParseOutcome::Incomplete => None,
                        _ => Some(Outcome::HttpHead),
                    }
                },
                || Outcome::Close(Some("HTTP client closed early".into())),
            ),
            Role::Connecting(_) => match connect_status(&c.stream) {
                Ok(true) => Outcome::Connected,
                Ok(false) => Outcome::Blocked,
                Err(e) => Outcome::Close(Some(format!("cannot connect: {e}"))),
            },
            Role::Write { payload, kind } => match write_payload(&mut c.stream, payload) {
                Ok(o) => {
                    // An HTTP response is active only while it moves, so a
                    // client that stopped reading meets STALL_TIMEOUT.
                    active = *kind != WriteKind::Http || payload.written() != written_before;
                    o
                }
                Err(e) => {
                    // The file shrank or no longer hashes to its id: the
                    // message was left unfinished; have the file checked.
                    if let (true, Payload::File(enc)) = (encoder::is_source_changed(&e), &*payload)
                    {
                        info!("stopped sending {}: {e}", enc.file_id());
                        core.on_local_changed(enc.file_id());
                    }
                    Outcome::Close(Some(format!("write failed: {e}")))
                }
            },
            Role::Fetch(f) => {
                if f.request_pos < f.request.len() {
                    let mut p = Payload::Bytes {
                        buf: std::mem::take(&mut f.request),
                        pos: f.request_pos,
                    };
                    let r = write_payload(&mut c.stream, &mut p);
                    if let Payload::Bytes { buf, pos } = p {
                        f.request = buf;
                        f.request_pos = pos;
                    }
                    match r {
                        Ok(Outcome::Written) => {}
                        Ok(o) => {
                            if let Some(c) = conns.get_mut(key) {
                                c.last_active = now;
                            }
                            return self.after_step(key, gen, o);
                        }
                        Err(e) => {
                            let o = Outcome::Close(Some(format!("cannot send GET_FILE: {e}")));
                            return self.after_step(key, gen, o);
                        }
                    }
                }
                let o = read_loop(
                    &mut c.stream,
                    read_buf,
                    |bytes| {
                        active = true;
                        f.received += bytes.len() as u64;
                        match feed(&mut f.decoder, &mut f.sink, bytes) {
                            Ok(false) if f.sink.must_wait() => Some(Outcome::Parked),
                            Ok(false) => None,
                            Ok(true) => Some(Outcome::Written),
                            Err(e) => Some(Outcome::Close(Some(describe_decode_error(&e)))),
                        }
                    },
                    || Outcome::Close(Some("the source closed the connection mid-transfer".into())),
                );
                core.on_fetch_progress(f.transfer, f.attempt, f.decoder.data_len());
                o
            }
            Role::Drain => read_loop(&mut c.stream, read_buf, |_| None, || Outcome::Close(None)),
        };
        let buffered = match &c.role {
            Role::Read { decoder, .. } => decoder.buffered(),
            _ => 0,
        };
        if active {
            // The step itself may take long (up to a whole budget of bytes on
            // a slow disk): activity counts from its end, not its start.
            c.last_active = Time(start.elapsed().as_millis() as u64);
        }
        if buffered >= BUDGET_CHECK_FLOOR && matches!(outcome, Outcome::Blocked | Outcome::Yield) {
            self.enforce_inbound_budget();
        }
        self.log_push_refusals(now);
        self.after_step(key, gen, outcome);
    }

    /// Closes the inbound connections holding the most unfinished message
    /// bytes until all of them together fit in [`INBOUND_BUFFER_BUDGET`].
    fn enforce_inbound_budget(&mut self) {
        loop {
            let mut total = 0usize;
            let mut largest: Option<(usize, usize)> = None;
            for (k, c) in self.conns.iter() {
                if let Role::Read { decoder, .. } = &c.role {
                    let b = decoder.buffered();
                    total += b;
                    if largest.is_none_or(|(_, most)| b > most) {
                        largest = Some((k, b));
                    }
                }
            }
            match largest {
                Some((k, b)) if total > INBOUND_BUFFER_BUDGET => {
                    debug!("inbound messages hold {total} bytes; closing one holding {b}");
                    self.close(k, Some("over the inbound memory budget".into()));
                }
                _ => return,
            }
        }
    }

    fn after_step(&mut self, key: usize, gen: u64, outcome: Outcome) {
        match outcome {
            Outcome::Blocked => {}
            Outcome::Yield => self.ready.push_back((key, gen)),
            Outcome::Parked => {
                if !self.parked.contains(&(key, gen)) {
                    self.parked.push((key, gen));
                }
            }
            Outcome::Close(why) => self.close(key, why),
            Outcome::Connected => {
                let Some(c) = self.conns.get_mut(key) else {
                    return;
                };
                let role = std::mem::replace(&mut c.role, Role::Drain);
                let Role::Connecting(next) = role else {
                    c.role = role;
                    return;
                };
                if let Some(to) = c.target.clone() {
                    self.unreachable_logged.remove(&to);
                    self.dials.connected(&to);
                }
                let interest = Interest::READABLE | Interest::WRITABLE;
                self.set_role(key, *next, interest);
            }
            Outcome::Written => self.on_written(key),
            Outcome::HttpHead => self.on_http_head(key),
        }
    }

    /// A role's work is complete: a write finished, or a read got its whole
    /// message.
    fn on_written(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let origin = (
            c.remote_ip
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            c.push,
        );
        let role = std::mem::replace(&mut c.role, Role::Drain);
        match role {
            Role::Write { kind, .. } => {
                debug!("{kind:?} written");
                match kind {
                    // We are the client: nothing to wait for.
                    WriteKind::Send | WriteKind::Push => self.close(key, None),
                    WriteKind::FileReply | WriteKind::Http => self.finish_conn(key),
                }
            }
            Role::Read {
                decoder,
                sink,
                received,
            } => match decoder.finish() {
                Ok(decoded) => {
                    if received >= trim::TRIM_AFTER_BYTES as u64 {
                        self.arm_trim();
                    }
                    self.on_inbound_message(key, decoded, sink, origin)
                }
                Err(e) => self.close(key, Some(format!("bad message: {e}"))),
            },
            Role::Fetch(f) => {
                let FetchConn {
                    transfer,
                    attempt,
                    record,
                    decoder,
                    sink,
                    source,
                    ..
                } = *f;
                // The client stops at the closing brace and closes.
                self.close(key, None);
                if !self.core.is_current(transfer, attempt) {
                    // Dropping the sink removes its temp file.
                    debug!("{transfer} from {source} ended meanwhile; bytes discarded");
                    return;
                }
                match decoder.finish() {
                    Ok(decoded) => self.finish_received(Finishing::Fetch {
                        transfer,
                        attempt,
                        record,
                        source,
                        decoded,
                        sink,
                    }),
                    Err(e) => {
                        let result = FetchResult::Failed(describe_decode_error(&e));
                        self.report_fetch(transfer, attempt, &source, result);
                    }
                }
            }
            other => {
                if let Some(c) = self.conns.get_mut(key) {
                    c.role = other;
                }
            }
        }
    }

    /// A FILE_DATA was received whole: if its writer thread still writes,
    /// it waits (woken by the thread, bounded by [`FINISH_TIMEOUT`]);
    /// otherwise it is checked and stored now.
    fn finish_received(&mut self, f: Finishing) {
        if f.sink().must_wait_for_writer() {
            let now = self.now();
            if self.finishing.is_empty() {
                self.wheel
                    .schedule(now.plus(FINISH_TIMEOUT), Due::Finishing);
            }
            self.finishing.push((now, f));
            return;
        }
        match f {
            Finishing::Fetch {
                transfer,
                attempt,
                record,
                source,
                decoded,
                mut sink,
            } => {
                if !self.core.is_current(transfer, attempt) {
                    debug!("{transfer} from {source} ended meanwhile; bytes discarded");
                    return;
                }
                let result = match sink.settle() {
                    Ok(()) => self.check_fetched(transfer, &record, decoded, sink),
                    Err(e) => FetchResult::Failed(format!("cannot write the file: {e}")),
                };
                self.report_fetch(transfer, attempt, &source, result);
            }
            Finishing::Push {
                header,
                data,
                mut sink,
            } => match sink.settle() {
                Ok(()) => self.on_pushed(header, data, sink),
                Err(e) => warn!("cannot store pushed file: {e}"),
            },
        }
    }

    fn report_fetch(&mut self, transfer: TransferId, attempt: u64, source: &str, r: FetchResult) {
        debug!("{transfer} from {source}: {r:?}");
        let now = self.now();
        self.core.on_fetch_result(now, transfer, attempt, r);
    }

    /// Fails the FILE_DATAs whose writer has not finished within
    /// [`FINISH_TIMEOUT`] (their threads end on their own and remove their
    /// temp files) and looks again when the next one is due.
    fn expire_finishing(&mut self, now: Time) {
        let mut next: Option<Time> = None;
        for (since, f) in std::mem::take(&mut self.finishing) {
            let due = since.plus(FINISH_TIMEOUT);
            if now < due {
                next = Some(next.map_or(due, |n| n.min(due)));
                self.finishing.push((since, f));
                continue;
            }
            let why = format!(
                "the disk did not finish writing the file within {} s",
                FINISH_TIMEOUT.as_secs()
            );
            match f {
                Finishing::Fetch {
                    transfer,
                    attempt,
                    source,
                    ..
                } => {
                    if self.core.is_current(transfer, attempt) {
                        self.report_fetch(transfer, attempt, &source, FetchResult::Failed(why));
                    } else {
                        debug!("{transfer} from {source} ended meanwhile; {why}");
                    }
                }
                Finishing::Push { header, .. } => {
                    warn!("pushed file {:?} not stored: {why}", header.file_name)
                }
            }
        }
        if let Some(at) = next {
            self.wheel.schedule(at, Due::Finishing);
        }
    }

    /// A whole message arrived on an inbound connection from `push.0`
    /// (`push.1`: its push quota ticket, if its data started).
    fn on_inbound_message(
        &mut self,
        key: usize,
        decoded: Decoded,
        sink: PartialSink,
        push: (IpAddr, Option<PushTicket>),
    ) {
        let Decoded { fields, data } = decoded;
        let parsed = Message::from_object(&fields);
        // A large GOSSIP_REPLY's JSON tree is no longer needed: free it
        // before the core merges the records.
        drop(fields);
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => {
                debug!("message dropped: {e}");
                self.finish_conn(key);
                return;
            }
        };
        debug!("received {}", msg.kind());
        match msg {
            Message::GetFile { file_id } => {
                let streams = self.file_streams();
                if streams >= MAX_FILE_STREAMS {
                    info!(
                        "GET_FILE {file_id}: already sending {streams} files; closing unanswered"
                    );
                    self.close(key, None);
                    return;
                }
                let payload = match self.open_file(&file_id) {
                    Ok(enc) => {
                        info!("serving {file_id}");
                        Payload::File(Box::new(enc))
                    }
                    Err(e) => {
                        debug!("GET_FILE {file_id}: {e}; replying not found");
                        let mut bytes = Message::file_not_found().to_bytes();
                        bytes.push(b'\n');
                        Payload::bytes(bytes)
                    }
                };
                let role = Role::Write {
                    payload,
                    kind: WriteKind::FileReply,
                };
                self.set_role(key, role, Interest::READABLE | Interest::WRITABLE);
            }
            Message::FileData(header) => {
                self.finish_conn(key);
                // A push without data bytes (an empty file) was not counted
                // at its first byte: it counts now.
                let (from, ticket) = push;
                if ticket.is_none() && self.push_quota.admit(self.now(), from).is_err() {
                    self.log_push_refusals(self.now());
                    return;
                }
                self.finish_received(Finishing::Push { header, data, sink });
            }
            other => {
                self.finish_conn(key);
                let now = self.now();
                self.core.on_message(now, other);
                // A download ended by the message (its owner's DELETE) may
                // have left an unverified copy waiting: drop its temp file.
                let core = &self.core;
                self.unverified
                    .retain(|t, _| core.downloads().get(*t).is_some());
            }
        }
    }

    /// One line for the pushes refused lately (at most one a minute).
    fn log_push_refusals(&mut self, now: Time) {
        if let Some((n, why)) = self.push_quota.refusals_to_log(now) {
            info!("refused {n} pushed file(s): over the push quota ({why}); the sender's connection was closed");
        }
    }

    /// An unsolicited FILE_DATA, its sink settled: stored like a download
    /// (limits, safe name, integrity) and handed to the core.
    fn on_pushed(
        &mut self,
        header: crate::protocol::FileDataHeader,
        data: DataField,
        sink: PartialSink,
    ) {
        let Some(mut record) = header.to_record() else {
            debug!("pushed FILE_DATA without a complete header dropped");
            return;
        };
        let (DataField::Bytes { len }, Some(partial)) = (data, sink.partial) else {
            if let DataField::Bytes { len: 0 } = data {
                // An empty file: no temp file was created.
                match PartialFile::create(&self.settings.dir) {
                    Ok(p) => {
                        let verified = sink.hasher.matches(&record.file_id, &record.file_timestamp);
                        self.store_pushed(record, p, 0, verified);
                    }
                    Err(e) => warn!("cannot store pushed file: {e}"),
                }
            } else {
                debug!("pushed FILE_DATA without data dropped");
            }
            return;
        };
        record.file_size = FileSize::Bytes(len);
        let verified = sink.hasher.matches(&record.file_id, &record.file_timestamp);
        self.store_pushed(record, partial, len, verified);
    }

    fn store_pushed(&mut self, record: FileRecord, partial: PartialFile, len: u64, verified: bool) {
        if !self.core.wants_push(&record.file_id, verified) {
            // Dropping the temp file: one copy per file.
            debug!("pushed {} already held or being fetched", record.file_id);
            return;
        }
        if !verified {
            warn!(
                "pushed file {} ({}) does not match its id; kept as UNVERIFIED",
                record.file_name, record.file_id
            );
        }
        match self.commit(partial, &record.file_name, len, verified) {
            FetchResult::Saved { local_name, .. } => {
                let now = self.now();
                self.core
                    .on_file_received(now, record, local_name, verified);
                // A download it ended may have kept an unverified copy.
                let core = &self.core;
                self.unverified
                    .retain(|t, _| core.downloads().get(*t).is_some());
                self.close_superseded_fetches();
            }
            other => warn!("cannot store pushed file {}: {other:?}", record.file_name),
        }
    }

    /// Closes the fetches whose attempt the core no longer wants (a push
    /// ended their download): their bytes would be discarded anyway, and a
    /// large file would be pulled to the disk a second time.
    fn close_superseded_fetches(&mut self) {
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter_map(|(key, c)| match &c.role {
                Role::Fetch(f) if !self.core.is_current(f.transfer, f.attempt) => Some(key),
                _ => None,
            })
            .collect();
        for key in stale {
            debug!("closing a fetch whose download ended meanwhile");
            self.close(key, None);
        }
    }

    /// Checks a complete FILE_DATA against the file we asked for.
    fn check_fetched(
        &mut self,
        transfer: TransferId,
        record: &FileRecord,
        decoded: Decoded,
        sink: PartialSink,
    ) -> FetchResult {
        let reply = Message::from_object(&decoded.fields);
        let (len, reply_ts) = match judge_reply(record, reply, decoded.data) {
            Ok(ok) => ok,
            Err(why) => return FetchResult::Failed(why),
        };
        let verified = sink
            .hasher
            .clone()
            .matches(&record.file_id, &record.file_timestamp)
            || reply_ts
                .as_ref()
                .is_some_and(|ts| sink.hasher.clone().matches(&record.file_id, ts));
        let partial = match sink.partial {
            Some(p) => p,
            None => match PartialFile::create(&self.settings.dir) {
                Ok(p) => p,
                Err(e) => return FetchResult::Failed(format!("cannot create file: {e}")),
            },
        };
        if verified {
            self.unverified.remove(&transfer);
            self.commit(partial, &record.file_name, len, true)
        } else {
            // Kept until the core decides no other source verifies.
            self.unverified.insert(transfer, (partial, len));
            FetchResult::Unverified { len }
        }
    }

    /// Moves a complete temp file to a safe, unique final name.
    fn commit(
        &mut self,
        partial: PartialFile,
        wanted: &str,
        len: u64,
        verified: bool,
    ) -> FetchResult {
        match partial.commit_unique(&storage::sanitize_file_name(wanted)) {
            Ok(name) => {
                self.stamp(&name);
                FetchResult::Saved {
                    local_name: name,
                    len,
                    verified,
                }
            }
            Err(e) => FetchResult::Failed(format!("cannot store the file: {e}")),
        }
    }

    fn on_http_head(&mut self, key: usize) {
        let now = self.now();
        let Some(c) = self.conns.get(key) else {
            return;
        };
        let Role::Http { buf } = &c.role else {
            return;
        };
        let core = &self.core;
        let payload = match http::parse_request(buf) {
            http::ParseOutcome::Ready {
                route,
                head_only,
                page,
            } => http_out::respond(
                &mut self.http_cache,
                &self.conns,
                now,
                route,
                head_only,
                page,
                core,
            ),
            http::ParseOutcome::Respond(bytes) => Payload::bytes(bytes),
            http::ParseOutcome::Incomplete => return,
        };
        let role = Role::Write {
            payload,
            kind: WriteKind::Http,
        };
        self.set_role(key, role, Interest::READABLE | Interest::WRITABLE);
    }
}

/// EMFILE or ENFILE: no descriptor left for a new socket.
fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

fn describe_decode_error(e: &crate::protocol::decoder::DecodeError) -> String {
    use crate::protocol::decoder::DecodeError as E;
    match e {
        E::TooLarge => {
            "the reply holds more bytes than allowed (the advertised size or --max-file-size)"
                .into()
        }
        E::TooDeep => "the reply is nested too deeply".into(),
        E::Malformed(m) => format!("malformed reply: {m}"),
        E::BadHex => "data is not hex (corrupt, or base64 from an old peer)".into(),
        E::Sink(io) => format!("cannot write the file: {io}"),
    }
}

/// The file a role streams, if it is mapped under a lease being broken.
fn breaking_file(role: &Role) -> Option<FileId> {
    match role {
        Role::Write {
            payload: Payload::File(enc),
            ..
        } if enc.lease_breaking() => Some(enc.file_id().clone()),
        Role::Connecting(inner) => breaking_file(inner),
        _ => None,
    }
}

/// Why a held file is not served.
#[derive(Debug)]
enum OpenError {
    /// We hold no servable copy.
    NotHeld,
    /// It changed on disk since it was verified (being checked again).
    Changed,
    /// It could not be opened or mapped.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotHeld => f.write_str("not held"),
            OpenError::Changed => f.write_str("changed on disk; being checked again"),
            OpenError::Io(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suffixed_name_is_recognised_as_the_same_file() {
        assert!(same_or_suffixed("a.txt", "a.txt"));
        assert!(same_or_suffixed("a (2).txt", "a.txt"));
        assert!(same_or_suffixed("noext (13)", "noext"));
        assert!(!same_or_suffixed("a (x).txt", "a.txt"));
        assert!(!same_or_suffixed("ab.txt", "a.txt"));
        assert!(!same_or_suffixed("a ().txt", "a.txt"));
    }
}
