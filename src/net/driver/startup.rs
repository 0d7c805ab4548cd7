//! Start-up: the folder, the catalog, the listeners and the poll sources.

use super::workers::{start_metadata_writer, start_worker};
use super::{
    now_unix, Driver, Settings, StartError, HTTP_LISTENER, LEASES, MAX_CONNECTIONS, P2P_LISTENER,
    SIGNALS, STDIN, WAKER,
};
use crate::cli::args::Args;
use crate::core::catalog::Entry;
use crate::core::dial_limit::DialLimiter;
use crate::core::push_quota::PushQuota;
use crate::core::{Config, Peer};
use crate::http;
use crate::ids::{PeerAddr, PeerId};
use crate::net::conn::READ_BUF_LEN;
use crate::net::resolver::Resolver;
use crate::net::sockopt;
use crate::net::stdin::{self, LineReader};
use crate::net::timer::TimerWheel;
use crate::net::trim;
use crate::protocol::FileRecord;
use crate::storage::reconcile::{reconcile, Loaded};
use crate::storage::{self, metadata};
use log::{info, warn};
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Waker};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use slab::Slab;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A non-blocking listener on `host:port` (IPv4 first), with a larger
/// backlog.
pub(super) fn bind(host: &str, port: u16, what: &str) -> Result<TcpListener, StartError> {
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
pub(super) const LISTEN_BACKLOG: i32 = 1024;

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
    let _folder_lock = open_folder(&dir, &args.peer_id)?;
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
    let listeners = Listeners {
        p2p,
        http,
        system_congestion,
        p2p_ip,
    };

    let advertised_port = args.advertised_port(p2p_addr.port());
    let (core, stamps, n_files, resumes) = load_core(&args, &dir, advertised_port);
    let mut driver = Driver::new(&args, dir, fd_limit, core, stamps, listeners)?;
    driver.register_sources()?;
    for (record, resume) in resumes {
        driver.resume_kept(record, resume);
    }
    // stdin is non-blocking now, and on a terminal so is stdout (one open
    // file): these lines go out like the menu's, never panicking on EAGAIN.
    let say = crate::cli::escape::say;
    say(&crate::cli::banner::start_line(
        &args,
        p2p_addr,
        http_addr,
        n_files,
        &driver.settings.dir,
    ));
    // Without a token the page still shows everything; only its actions
    // are refused (an empty token never matches).
    match storage::token::load_or_create(&driver.settings.dir) {
        Ok(token) => {
            say(&crate::cli::banner::page_line(http_addr, &token));
            driver.http_token = token;
        }
        Err(e) => say(&format!(
            "page actions are off: cannot store {} in {}: {e}",
            storage::token::TOKEN_FILE,
            driver.settings.dir.display()
        )),
    }
    if driver.stdin.is_some() {
        say("type `help` for commands");
    }
    driver.run_loop();
    driver.shutdown();
    Ok(())
}

/// Creates the storage folder and takes its lock, held until the peer
/// exits: a second peer on it would delete the first one's downloads in
/// progress and race it on metadata.json. Nothing touches the folder
/// before.
fn open_folder(dir: &Path, peer_id: &str) -> Result<storage::lock::FolderLock, StartError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StartError(format!(
            "cannot create storage folder {}: {e}",
            dir.display()
        ))
    })?;
    storage::lock::FolderLock::acquire(dir, peer_id).map_err(|e| StartError(e.to_string()))
}

/// The bound listeners and what was read of them once at start.
struct Listeners {
    p2p: TcpListener,
    http: TcpListener,
    /// See `Driver::system_congestion`.
    system_congestion: Option<String>,
    p2p_ip: Option<IpAddr>,
}

/// What [`load_core`] gives: the core, the held files' stamps, how many
/// files were loaded, and the downloads to resume.
type LoadedCore = (
    Peer,
    storage::Stamps,
    usize,
    Vec<(FileRecord, metadata::StoredResume)>,
);

/// The core, built from the arguments and loaded with the catalog the
/// folder and its metadata agree on; with the held files' stamps, how many
/// files were loaded and the downloads to resume.
fn load_core(args: &Args, dir: &Path, p2p_port: u16) -> LoadedCore {
    let me = PeerId(args.peer_id.clone());
    let Loaded {
        entries,
        stamps,
        changed,
        not_read,
        resumes,
        notes,
    } = reconcile(dir, &me, now_unix());
    for note in &notes {
        if note.is_warning() {
            warn!("{note}");
        } else {
            info!("{note}");
        }
    }
    let mut core = Peer::new(
        core_config(args, me, p2p_port),
        SmallRng::seed_from_u64(seed(args)),
    );
    let n_files = load_entries(&mut core, entries, not_read);
    // Changed while we were down: hashed again before they are served.
    for id in &changed {
        core.on_local_changed(id);
    }
    (core, stamps, n_files, resumes)
}

/// The core's settings from the arguments.
fn core_config(args: &Args, me: PeerId, p2p_port: u16) -> Config {
    Config {
        peer_id: me,
        addr: PeerAddr::new(args.host.clone(), p2p_port),
        well_known: args
            .well_known()
            .into_iter()
            .map(|(h, p)| PeerAddr::new(h, p))
            .collect(),
        gossip_interval: args.gossip_interval,
        peer_timeout: args.peer_timeout,
        auto_fetch: args.auto_fetch,
        share_unverified: args.share_unverified,
    }
}

/// `--seed`, or one that differs from run to run.
fn seed(args: &Args) -> u64 {
    args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id())
    })
}

/// Loads the entries into the catalog, held files first, so a
/// metadata.json past the catalog's cap never costs us a file we hold;
/// returns how many were loaded.
fn load_entries(core: &mut Peer, mut entries: Vec<Entry>, not_read: usize) -> usize {
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
    n_files
}

impl Driver {
    /// The driver around `core`, with its helper threads started.
    fn new(
        args: &Args,
        dir: PathBuf,
        fd_limit: u64,
        mut core: Peer,
        stamps: storage::Stamps,
        listeners: Listeners,
    ) -> Result<Driver, StartError> {
        let poll = Poll::new().map_err(|e| StartError(format!("cannot create poll: {e}")))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| StartError(format!("cannot create waker: {e}")))?,
        );
        let resolver = Resolver::start(waker.clone())
            .map_err(|e| StartError(format!("cannot start resolver: {e}")))?;
        let (worker_tx, worker_rx) = start_worker(waker.clone())
            .map_err(|e| StartError(format!("cannot start worker: {e}")))?;
        let (meta_tx, meta_thread) = start_metadata_writer(dir.clone())
            .map_err(|e| StartError(format!("cannot start metadata writer: {e}")))?;
        // The loop's clock starts now: events carry wall-clock times.
        core.set_unix_at_zero(super::now_unix());
        Ok(Driver {
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
            waker,
            read_buf: vec![0u8; READ_BUF_LEN],
            p2p: Some(listeners.p2p),
            system_congestion: listeners.system_congestion,
            p2p_ip: listeners.p2p_ip,
            http: Some(listeners.http),
            http_cache: http::ResponseCache::new(),
            net: Default::default(),
            http_token: String::new(),
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
            resumable: HashMap::new(),
            temps: HashMap::new(),
            piece_files: HashMap::new(),
            push_quota: PushQuota::new(),
            trim_armed: false,
            saved_catalog_bytes: 0,
            stdin: None,
            exit: false,
            exit_asked: false,
            progress: crate::cli::progress::Progress::new(crate::cli::console::has_status_row()),
            progress_armed: false,
            stamps,
            lease_signals: None,
            signalled: None,
        })
    }
}

impl Driver {
    /// Registers the listeners, the signals and stdin (if it can be polled)
    /// with the poll.
    pub(super) fn register_sources(&mut self) -> Result<(), StartError> {
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
                    crate::cli::console::start_prompting();
                    // Input typed before we registered is read right away.
                    self.read_stdin();
                }
            }
            Err(e) => info!("stdin is not a terminal or pipe ({e}); running without a menu"),
        }
        Ok(())
    }
}
