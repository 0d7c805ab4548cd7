//! The loop itself: the `Driver` struct, `run_loop` and its dispatch,
//! the timer wheel's `Due`s, and the core's effects applied. The driver
//! executes; what to do is decided by the core (`crate::core`) or, for the
//! folder, by `crate::storage`.
//!
//! By concern: `startup` (run, bind, loading), `dial` (outbound), `conns`
//! (the slab), `step` (one I/O step), `serve` (GET_FILE and held files),
//! `receive` (inbound messages, received files), `workers` (helper
//! threads), `input` (the menu on stdin), `shutdown` (the exit).

mod actions;
mod conns;
mod dial;
mod input;
mod pieces;
mod progress;
mod receive;
mod serve;
mod shutdown;
mod startup;
mod step;
mod uploads;
mod workers;

pub use startup::run;
pub use step::INBOUND_BUFFER_BUDGET;

use self::dial::Pending;
use self::receive::Finishing;
use self::workers::{Job, MetaJob, WorkerMsg};
use crate::cli::escape;
use crate::core::dial_limit::DialLimiter;
use crate::core::downloads::{size_upper_bound, Origin};
use crate::core::push_quota::PushQuota;
use crate::core::{Effect, Peer, Time, Timer};
use crate::http;
use crate::ids::{FileId, PeerAddr, TransferId};
use crate::net::conn::{Conn, KeptPrefix};
use crate::net::resolver::Resolver;
use crate::net::stdin::LineReader;
use crate::net::timer::TimerWheel;
use crate::net::trim;
use crate::protocol::decoder::DecoderLimits;
use crate::protocol::{FileSize, MAX_JSON_DEPTH, MAX_MESSAGE_LEN};
use crate::storage::{self, metadata, PartialFile};
use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Poll, Token, Waker};
use slab::Slab;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
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
/// connection evicts the longest-idle inbound one, sparing files moving
/// fast while any other can go. Lowered at start if the
/// open-file limit can't hold it (see [`crate::net::limits`]).
pub const MAX_CONNECTIONS: usize = 1024;

/// Metadata is written at most this often; bursts are coalesced.
pub const PERSIST_MIN_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Time to draw the progress line (see `cli::progress`).
    Progress,
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
    /// Bytes, messages, uploads and refusals, counted for `/metrics`.
    net: crate::net::counters::NetCounters,
    /// The token the page's actions must carry (`storage::token`).
    http_token: String,
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
    /// The prefix each download kept from a source that was cut, until its
    /// next attempt continues it (at most one per download).
    resumable: HashMap<TransferId, KeptPrefix>,
    /// The temp file holding each download's bytes (its current attempt's,
    /// or its kept prefix), named in the metadata so a restart resumes it.
    temps: HashMap<TransferId, String>,
    /// The temp file of each download from several holders, its pieces
    /// written at their offsets (through aliases; this handle owns it).
    piece_files: HashMap<TransferId, pieces::PieceFile>,
    /// Unsolicited pushes admitted lately, by source address.
    push_quota: PushQuota,
    /// A `Due::Trim` is scheduled.
    trim_armed: bool,
    /// The catalog's cost at the last save (a large drop arms a trim).
    saved_catalog_bytes: usize,
    stdin: Option<LineReader>,
    exit: bool,
    /// `exit` was typed while transfers ran: the next one (or EOF) exits.
    exit_asked: bool,
    /// The progress line of the `get`s and `push`es in flight.
    progress: crate::cli::progress::Progress,
    /// A `Due::Progress` is scheduled.
    progress_armed: bool,
    /// What each held file looked like when last verified, by local name
    /// (see [`FileStamp`]); one per held file at most.
    stamps: storage::Stamps,
    /// SIGIO, raised when a read lease of a file being served is broken.
    lease_signals: Option<signal_hook_mio::v1_0::Signals>,
    /// When a SIGTERM/SIGINT asked us to exit: the exit then fits in
    /// `exit_guard::SIGNAL_EXIT_LIMIT` (see `shutdown`).
    signalled: Option<Instant>,
}

/// Seconds since the epoch (0 if the clock is before it).
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The catalog as metadata.json bytes, written from borrowed entries (no
/// copy of a catalog that may be 16 MiB), with each held file's stamp and,
/// for each download whose bytes are in a temp file (`temps`), what
/// resumes it at the next start.
fn catalog_json(
    core: &Peer,
    stamps: &storage::Stamps,
    temps: &HashMap<TransferId, String>,
) -> Vec<u8> {
    // A few downloads at most: looked up by file below, not scanned per entry.
    let resumes: HashMap<&FileId, metadata::StoredResume> = core
        .downloads()
        .iter()
        .filter_map(|d| {
            let partial = temps.get(&d.id)?.clone();
            let by_user = d.origins.iter().any(|o| matches!(o, Origin::Menu(_)));
            // Pieces past the first missing one are not kept.
            let valid = d.swarm.as_ref().map(|r| r.plan.done_prefix());
            Some((
                &d.record.file_id,
                metadata::StoredResume {
                    partial,
                    by_user,
                    valid,
                },
            ))
        })
        .collect();
    metadata::write_json(core.catalog().iter().map(|(id, e)| metadata::EntryRef {
        record: &e.record,
        peers_with_file: &e.holders,
        has_copy: e.local.is_some(),
        local_name: e.local.as_ref().map(|l| l.name.as_str()),
        local_stamp: e.local.as_ref().and_then(|l| stamps.get(&l.name)),
        verified: e.local.as_ref().is_none_or(|l| l.verified),
        resume: if e.local.is_none() {
            resumes.get(id).cloned()
        } else {
            None
        },
    }))
}

impl Driver {
    /// The loop's clock: milliseconds since start.
    fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    /// Polls and dispatches until `exit`: readiness events, then the
    /// connections that asked for another step, then the timers due.
    fn run_loop(&mut self) {
        let now = self.now();
        self.core.start(now);
        self.apply_effects();
        let mut events = Events::with_capacity(1024);
        if self.stdin.is_some() {
            crate::cli::console::show_prompt();
        }
        while !self.exit {
            if let Err(e) = self.poll.poll(&mut events, self.poll_timeout()) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("poll failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in events.iter() {
                self.dispatch(event.token());
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
            // After whatever this turn printed, the prompt is the last
            // thing on the screen again.
            if self.stdin.is_some() {
                crate::cli::console::show_prompt();
            }
        }
    }

    /// No wait while connections are ready for another step; otherwise
    /// until the wheel's next deadline (none: until an event).
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.now();
        self.wheel
            .next_deadline()
            .map(|d| Duration::from_millis(d.0.saturating_sub(now.0) + 1))
    }

    /// Hands one readiness event to whatever owns its token.
    fn dispatch(&mut self, token: Token) {
        match token {
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
    }

    // ---- timers -------------------------------------------------------

    /// A deadline on the wheel came.
    fn on_due(&mut self, due: Due) {
        let now = self.now();
        // Shared responses are let go once stale, not at the next request.
        self.http_cache.evict(now);
        match due {
            Due::Core(t) => {
                self.core.on_timer(now, t);
                if t == Timer::Sweep {
                    self.after_sweep(now);
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
            Due::Conn { key, gen } => self.on_conn_due(key, gen),
            Due::Progress => self.tick_progress(now),
        }
    }

    /// The core swept its tables: so do the dial limits, and once a flood
    /// has subsided the heap is given back.
    fn after_sweep(&mut self, now: Time) {
        self.dials.sweep(now);
        let size = self.core.members().len() + self.core.seen_len() + self.dials.len();
        if self.trim.shrunk(size) {
            debug!("flood over ({size} peers and destinations left): trimming the heap");
            // The slab keeps the capacity of its busiest moment.
            self.conns.shrink_to_fit();
            crate::net::trim::give_back();
        }
    }

    /// Hands the catalog to the metadata writer now.
    fn persist_now(&mut self) {
        self.last_persist = Some(self.now());
        let bytes = catalog_json(&self.core, &self.stamps, &self.temps);
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

    /// Applies the core's effects until it queues no more.
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

    /// Carries out one effect of the core.
    fn apply(&mut self, effect: Effect) {
        let now = self.now();
        match effect {
            Effect::Send { to, msg } => self.send_message(now, to, msg),
            Effect::PushFile { to, file_id } => self.push_file(now, to, file_id),
            Effect::Reverify { record, name } => self.reverify(record, name),
            Effect::Fetch {
                transfer,
                attempt,
                from,
                to,
                record,
                resume_from,
            } => {
                self.arm_progress();
                let source = from.0;
                self.open_fetch(transfer, attempt, source, to, record, resume_from)
            }
            // Dropping the temp files' handles removes them (on the worker).
            Effect::DiscardUnverified { transfer } => {
                let unverified = self.unverified.remove(&transfer).map(|(p, _)| p);
                let kept = self.resumable.remove(&transfer).map(|k| k.partial);
                let pieces = self.piece_files.remove(&transfer).map(|p| p.file);
                self.discard(unverified.into_iter().chain(kept).chain(pieces).collect());
                self.temps.remove(&transfer);
                // Pieces still in flight for it are no longer wanted.
                self.close_superseded_fetches();
            }
            Effect::FetchPiece {
                transfer,
                attempt,
                from,
                to,
                record,
                offset,
                len,
            } => {
                self.arm_progress();
                let piece = pieces::Piece {
                    transfer,
                    attempt,
                    offset,
                    len,
                };
                self.open_piece_fetch(piece, from.0, to, record)
            }
            Effect::VerifyPieces {
                transfer,
                attempt,
                record,
            } => self.verify_pieces(transfer, attempt, record),
            Effect::CancelFetch { transfer, attempt } => self.cancel_fetch(transfer, attempt),
            Effect::KeepUnverified { transfer, attempt } => {
                self.keep_unverified(now, transfer, attempt)
            }
            Effect::Schedule { at, timer } => {
                self.wheel.schedule(at, Due::Core(timer));
            }
            Effect::Persist => self.schedule_persist(now),
            Effect::RemoveLocal { name } => self.remove_local(name),
            Effect::CopyOut { name, record, dest } => self.copy_out(name, record, dest),
            Effect::Import { path } => self.import(path),
            Effect::Print(line) => escape::say(&line),
        }
    }

    /// Writes the catalog soon, at most once per [`PERSIST_MIN_INTERVAL`].
    pub(super) fn schedule_persist(&mut self, now: Time) {
        if !self.persist_armed {
            self.persist_armed = true;
            let at = match self.last_persist {
                Some(t) => t.plus(PERSIST_MIN_INTERVAL).max(now),
                None => now,
            };
            self.wheel.schedule(at, Due::Persist);
        }
    }

    /// A held copy is dropped: the catalog that no longer lists it is
    /// written first, and the file unlinked only after it is on disk (same
    /// thread, in order).
    fn remove_local(&mut self, name: String) {
        self.stamps.forget(&name);
        self.persist_now();
        let path = self.settings.dir.join(&name);
        if let Some(tx) = &self.meta_tx {
            let _ = tx.send(MetaJob::Remove(path));
        }
    }

    /// What an inbound message may hold.
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
}
