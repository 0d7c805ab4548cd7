//! A deterministic simulated network: N [`Peer`]s in one process.
//!
//! The simulator is the driver every `Peer` expects, with the sockets, the
//! clock and the disk replaced by an event queue in virtual time:
//!
//! - `Effect::Send` becomes a delivery to the peer listening at the target
//!   address after a random latency, unless the message is lost (`loss`),
//!   the two peers are partitioned, or the address is nobody's;
//! - `Effect::Schedule` becomes a timer event for the peer's current
//!   incarnation (a crash silences the timers of the crashed incarnation);
//! - `Effect::Fetch` reaches the source after a latency; a live, reachable
//!   source holding the file answers with its bytes (verified unless the
//!   source was marked corrupt with [`Sim::set_corrupt`]) after a latency
//!   plus the transfer time at `bandwidth`, and fails if the source crashes
//!   or is cut off before the end; a dead or unreachable source makes the
//!   attempt fail after the simulated connect timeout;
//! - `Effect::PushFile`, `Effect::Import` and `Effect::KeepUnverified` are
//!   answered the way the real driver would; `Persist`, `Print`,
//!   `RemoveLocal` and `CopyOut` are recorded per peer.
//!
//! Peer `i` is `p{i}` at `sim-{i}:{9000+i}` (names only: nothing is opened
//! or resolved). Peer 0 is every peer's well-known peer (peers `0..well_known` with [`SimConfig::well_known`]). One seeded RNG
//! drives latency and loss, and each peer gets its own seeded RNG, so a
//! seed fully determines a run: [`Sim::log`] of two runs with the same seed
//! and the same calls is identical.

use super::catalog::{Entry, LocalCopy, MAX_FILES, MAX_HOLDERS};
use super::gossip::SEEN_CAPACITY;
use super::membership::MAX_PEERS;
use super::swarm::PieceDigest;
use super::view::StateView;
use super::{
    Command, Config, Effect, FetchResult, GetFileAnswer, Imported, Peer, SourceFailure, Time, Timer,
};
use crate::ids::{FileId, PeerAddr, PeerId, TransferId};
use crate::protocol::{FileRecord, FileSize, Message, Timestamp};
use crate::storage::ImportError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// Appends a line to the event log, formatting it only if the log is kept.
macro_rules! note {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.cfg.record {
            let line = format!($($arg)*);
            $sim.note(line);
        }
    };
}

/// Peer `i` listens on port `SIM_PORT_BASE + i`.
pub const SIM_PORT_BASE: u16 = 9000;

/// Simulated file timestamps are whole seconds from this origin plus the
/// virtual time.
pub const SIM_EPOCH_SECS: u64 = 1_750_000_000;

/// The peerId of simulated peer `i`: `p{i}`.
pub fn peer_id(i: usize) -> PeerId {
    PeerId(format!("p{i}"))
}

/// The address of simulated peer `i`: `sim-{i}:{9000+i}`.
pub fn addr(i: usize) -> PeerAddr {
    let port = u16::try_from(i)
        .ok()
        .and_then(|i| SIM_PORT_BASE.checked_add(i))
        .expect("too many simulated peers for the port range");
    PeerAddr::new(format!("sim-{i}"), port)
}

/// How the simulated network behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of peers created by [`Sim::new`] (more with [`Sim::add_peer`]).
    pub peers: usize,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// One-way latency of a message, uniform in this inclusive range (ms).
    pub latency_ms: (u64, u64),
    /// Probability that a message (`Effect::Send`) is lost. Transfers
    /// (fetch, push) are not subject to loss, only to crashes and partitions.
    pub loss: f64,
    /// Every peer's gossip interval.
    pub gossip_interval: Duration,
    /// Every peer's silence timeout.
    pub peer_timeout: Duration,
    /// Files each peer fetches in the background at start.
    pub auto_fetch: usize,
    /// How long a fetch from a dead or unreachable source takes to fail.
    pub connect_timeout: Duration,
    /// Transfer rate of fetches and pushes, bytes per second.
    pub bandwidth: u64,
    /// Probability that a message that is not lost is delivered twice (the
    /// copy with its own latency, so it may arrive first).
    pub dup: f64,
    /// Per fetch attempt from a live source holding the file: probability
    /// that the source stops sending part-way (the attempt fails after
    /// `idle_timeout` of silence).
    pub stall: f64,
    /// Per fetch attempt: probability that the connection is reset after a
    /// random number of bytes (`Failed("connection reset")`).
    pub reset: f64,
    /// Per fetch attempt: probability that the bytes arrive complete but
    /// corrupt (`Unverified`).
    pub corrupt: f64,
    /// Silence after which a stalled transfer is abandoned.
    pub idle_timeout: Duration,
    /// How many well-known (bootstrap) peers every peer is given: peers
    /// `0..well_known` (the real network has four).
    pub well_known: usize,
    /// Whether to keep the event log and every sent message ([`Sim::log`],
    /// [`Sim::sent`]). Long sweeps turn it off; checks work either way.
    pub record: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            peers: 10,
            seed: 1,
            latency_ms: (1, 200),
            loss: 0.0,
            gossip_interval: Duration::from_secs(1),
            peer_timeout: Duration::from_secs(4),
            auto_fetch: 0,
            connect_timeout: Duration::from_secs(1),
            bandwidth: 10_000_000,
            dup: 0.0,
            stall: 0.0,
            reset: 0.0,
            corrupt: 0.0,
            idle_timeout: Duration::from_secs(2),
            record: true,
            well_known: 1,
        }
    }
}

/// Network-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// `Effect::Send`s emitted by all peers.
    pub sent: u64,
    /// Messages handed to a running peer.
    pub delivered: u64,
    /// Messages lost to `loss`.
    pub dropped_loss: u64,
    /// Messages dropped by a partition.
    pub dropped_partition: u64,
    /// Messages that arrived at a peer that was not running.
    pub dropped_down: u64,
    /// Messages to an address no simulated peer listens on.
    pub unroutable: u64,
    /// Fetch attempts started.
    pub fetches: u64,
    /// Fetch attempts that failed.
    pub fetches_failed: u64,
    /// Pushes started.
    pub pushes: u64,
    /// Messages delivered twice (`dup`).
    pub duplicated: u64,
    /// Fetch attempts given a fault (stall, reset, corrupt).
    pub transfer_faults: u64,
    /// File bytes sources sent, to the end or to where a fault cut them
    /// (a resumed attempt asks only for what its download lacks).
    pub fetched_bytes: u64,
    /// Resumed attempts that continued bytes a corrupt source had sent.
    pub tainted_resumes: u64,
    /// Events processed.
    pub events: u64,
}

/// One message a peer sent (whether or not it arrived).
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// When.
    pub at: Time,
    /// To which address.
    pub to: PeerAddr,
    /// The message.
    pub msg: Message,
}

/// One forward round: a peer sent someone else's GOSSIP on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// When.
    pub at: Time,
    /// The GOSSIP id.
    pub gossip_id: String,
    /// The GOSSIP's `peerId` (its origin).
    pub origin: PeerId,
    /// How many peers it went to in this round.
    pub sends: usize,
}

/// Whether a simulated peer is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Created, not started yet.
    Idle,
    /// Running.
    Running,
    /// Crashed: receives nothing, its timers are void.
    Crashed,
}

struct Node {
    peer: Peer,
    state: NodeState,
    incarnation: u64,
    corrupt: bool,
    prints: Vec<String>,
    actions: Vec<String>,
    sent: Vec<Sent>,
    forwards: Vec<Forward>,
    /// Complete copies that failed verification, held "by the driver" until
    /// the core says `KeepUnverified`: transfer -> (file, local name, length).
    kept: BTreeMap<TransferId, (FileId, String, u64)>,
    /// Downloads whose kept bytes include some a corrupt source sent before
    /// it was cut: a copy they complete does not verify.
    tainted: BTreeSet<TransferId>,
    /// Downloads from several holders: each piece written (by offset) and
    /// whether the last copy written there is the file's bytes.
    pieces: BTreeMap<TransferId, BTreeMap<u64, bool>>,
    /// Its uplink, bytes per second, when slower than the network's.
    bandwidth: Option<u64>,
    /// When its uplink is free again: pieces it sends share it, one after
    /// the other.
    uplink_free: Time,
    /// The metadata file: the entries of the files held at the last
    /// `Effect::Persist` (or at start). A restart reloads these.
    snapshot: Vec<Entry>,
    /// The storage folder: what bytes the driver stored for each file.
    disk: BTreeMap<FileId, DiskFile>,
    /// GOSSIP ids this incarnation forwarded.
    forwarded_ids: HashSet<String>,
}

/// A file in a simulated storage folder: its bytes are modelled as the file
/// they belong to, their length, and whether they are intact.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DiskFile {
    name: String,
    len: u64,
    intact: bool,
}

/// Why a peer is being called (to tell a legitimate removal of a local
/// copy from one that is not).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cause {
    Other,
    /// A DELETE of this file from its owner arrived.
    OwnerDelete(FileId),
    /// The peer's own `delete` command.
    DeleteCommand,
}

/// A fetch's GET_FILE reaches its source.
struct FetchArrive {
    peer: usize,
    incarnation: u64,
    transfer: TransferId,
    attempt: u64,
    source: usize,
    record: FileRecord,
    started: Time,
    /// The offset asked from (a resumed download's kept prefix).
    from: u64,
    /// A piece of a download from several holders: its length.
    piece: Option<u64>,
}

/// A fetch attempt's result reaches the fetching peer.
struct FetchDone {
    peer: usize,
    incarnation: u64,
    transfer: TransferId,
    attempt: u64,
    name: String,
    file: FileId,
    result: FetchResult,
    /// The source and its incarnation, while bytes are streaming: if it
    /// crashes or is cut off before the end, the attempt fails.
    source: Option<(usize, u64)>,
    /// The offset asked from: a failed attempt keeps at least these bytes
    /// (the driver keeps a resumed download's prefix whatever fails).
    from: u64,
    /// A piece: its offset and whether its bytes are the file's.
    piece: Option<(u64, bool)>,
}

enum Event {
    Deliver {
        to: usize,
        from: Option<usize>,
        msg: Message,
    },
    Timer {
        peer: usize,
        incarnation: u64,
        timer: Timer,
    },
    FetchArrive(FetchArrive),
    FetchDone(FetchDone),
    PushArrive {
        to: usize,
        from: usize,
        record: FileRecord,
        verified: bool,
    },
    Imported {
        peer: usize,
        incarnation: u64,
        result: Result<Imported, ImportError>,
    },
}

struct Queued {
    at: Time,
    seq: u64,
    ev: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A short, deterministic description of a message for the event log.
fn describe(msg: &Message) -> String {
    match msg {
        Message::Gossip { id, peer_id, .. } => format!("GOSSIP {peer_id} {id}"),
        Message::GossipReply { peer_id, files, .. } => {
            format!("GOSSIP_REPLY {peer_id} files={}", files.len())
        }
        Message::Announce { from, file } => format!("ANNOUNCE {from} {}", file.file_id.short()),
        Message::Delete { from, file_id } => format!("DELETE {from} {}", file_id.short()),
        other => other.kind().to_string(),
    }
}

/// The simulated network and its peers.
pub struct Sim {
    cfg: SimConfig,
    now: Time,
    seq: u64,
    rng: SmallRng,
    queue: BinaryHeap<Reverse<Queued>>,
    nodes: Vec<Node>,
    by_addr: BTreeMap<PeerAddr, usize>,
    cuts: Vec<(BTreeSet<usize>, BTreeSet<usize>)>,
    sizes: BTreeMap<FileId, u64>,
    user_files: BTreeMap<PathBuf, u64>,
    log: Vec<String>,
    stats: SimStats,
    files_made: u64,
    owners: BTreeMap<FileId, PeerId>,
    cause: Cause,
    violations: Vec<String>,
}

/// How a failed attempt ends when `kept` bytes were written (the driver
/// keeps them for the next source): a cut, or, with none, a failure.
/// The digest the simulator gives the piece of `file` at `offset`: the
/// file's own, or (`corrupt_by`) one only that corrupt source sends.
fn sim_piece_digest(file: &FileId, offset: u64, corrupt_by: Option<usize>) -> PieceDigest {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (file, offset, corrupt_by).hash(&mut h);
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&h.finish().to_le_bytes());
    PieceDigest(d)
}

fn kept(why: SourceFailure, kept: u64) -> FetchResult {
    if kept > 0 {
        FetchResult::Cut { why, kept }
    } else {
        FetchResult::Failed(why)
    }
}

impl Sim {
    /// A network of `cfg.peers` peers, none started, at time zero.
    pub fn new(cfg: SimConfig) -> Self {
        assert!(
            cfg.latency_ms.0 <= cfg.latency_ms.1,
            "latency range is empty"
        );
        let mut sim = Self {
            rng: SmallRng::seed_from_u64(cfg.seed),
            cfg,
            now: Time::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            cuts: Vec::new(),
            sizes: BTreeMap::new(),
            user_files: BTreeMap::new(),
            log: Vec::new(),
            stats: SimStats::default(),
            files_made: 0,
            owners: BTreeMap::new(),
            cause: Cause::Other,
            violations: Vec::new(),
        };
        for _ in 0..sim.cfg.peers {
            sim.add_peer(sim.cfg.auto_fetch);
        }
        sim
    }

    fn peer_config(&self, i: usize, auto_fetch: usize) -> Config {
        Config {
            well_known: (0..self.cfg.well_known.max(1)).map(addr).collect(),
            gossip_interval: self.cfg.gossip_interval,
            peer_timeout: self.cfg.peer_timeout,
            auto_fetch,
            ..Config::for_tests(peer_id(i), addr(i))
        }
    }

    fn peer_rng(&self, i: usize, incarnation: u64) -> SmallRng {
        // A restarted peer needs a different stream, or its first GOSSIP ids
        // would repeat ones its neighbours have already seen.
        SmallRng::seed_from_u64(self.cfg.seed ^ i as u64 ^ (incarnation << 32))
    }

    /// Adds a peer (not started) with its own auto-fetch setting; returns
    /// its index. Use it to have a peer join a running network.
    pub fn add_peer(&mut self, auto_fetch: usize) -> usize {
        let i = self.nodes.len();
        let peer = Peer::new(self.peer_config(i, auto_fetch), self.peer_rng(i, 0));
        self.by_addr.insert(addr(i), i);
        self.nodes.push(Node {
            peer,
            state: NodeState::Idle,
            incarnation: 0,
            corrupt: false,
            prints: Vec::new(),
            actions: Vec::new(),
            sent: Vec::new(),
            forwards: Vec::new(),
            kept: BTreeMap::new(),
            tainted: BTreeSet::new(),
            pieces: BTreeMap::new(),
            bandwidth: None,
            uplink_free: Time::ZERO,
            snapshot: Vec::new(),
            disk: BTreeMap::new(),
            forwarded_ids: HashSet::new(),
        });
        i
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Number of peers (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The current virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Peer `i`'s state machine.
    pub fn peer(&self, i: usize) -> &Peer {
        &self.nodes[i].peer
    }

    /// Peer `i`'s view now.
    pub fn view(&self, i: usize) -> StateView {
        self.nodes[i].peer.view(self.now)
    }

    /// Whether peer `i` is idle, running or crashed.
    pub fn state(&self, i: usize) -> NodeState {
        self.nodes[i].state
    }

    /// Whether peer `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].state == NodeState::Running
    }

    /// Indices of the running peers.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// Whether running peer `i` has a download of `file` in flight (a
    /// crashed peer has none).
    pub fn downloads_of(&self, i: usize, file: &FileId) -> bool {
        self.is_running(i) && self.nodes[i].peer.downloads().by_file(file).is_some()
    }

    /// Lines peer `i` printed on its menu.
    pub fn prints(&self, i: usize) -> &[String] {
        &self.nodes[i].prints
    }

    /// Peer `i`'s other driver actions: `persist`, `remove-local NAME`,
    /// `copy-out NAME -> DEST`, `import PATH`.
    pub fn actions(&self, i: usize) -> &[String] {
        &self.nodes[i].actions
    }

    /// Every message peer `i` sent, across restarts.
    pub fn sent(&self, i: usize) -> &[Sent] {
        &self.nodes[i].sent
    }

    /// Every forward round of peer `i` (one per forwarded GOSSIP id and
    /// call into the peer), across restarts; kept only with
    /// [`SimConfig::record`].
    pub fn forwards(&self, i: usize) -> &[Forward] {
        &self.nodes[i].forwards
    }

    /// The event log: one line per processed event, in order.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// Network-wide counters.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// The size the simulator gives a file it created.
    pub fn file_size(&self, id: &FileId) -> Option<u64> {
        self.sizes.get(id).copied()
    }

    /// Sets the chances of each later fetch attempt stalling, being reset,
    /// or delivering bytes that don't verify (as in [`SimConfig`]).
    pub fn set_transfer_faults(&mut self, stall: f64, reset: f64, corrupt: f64) {
        self.cfg.stall = stall;
        self.cfg.reset = reset;
        self.cfg.corrupt = corrupt;
    }

    /// Marks peer `i` as a corrupt source: what it serves or pushes does not
    /// verify.
    pub fn set_corrupt(&mut self, i: usize, corrupt: bool) {
        self.nodes[i].corrupt = corrupt;
    }

    fn push(&mut self, at: Time, ev: Event) {
        self.seq += 1;
        let at = at.max(self.now);
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.cfg.latency_ms;
        Duration::from_millis(self.rng.gen_range(lo..=hi))
    }

    fn transfer_time(&self, len: u64) -> Duration {
        let bw = self.cfg.bandwidth.max(1);
        Duration::from_millis(len.saturating_mul(1000) / bw)
    }

    /// Time for peer `source` to send `len` bytes on its own uplink.
    fn send_time(&self, source: usize, len: u64) -> Duration {
        match self.nodes[source].bandwidth {
            Some(bw) => Duration::from_millis(len.saturating_mul(1000) / bw.max(1)),
            None => self.transfer_time(len),
        }
    }

    /// Gives peer `i` an uplink of `bytes_per_sec` (a slow holder).
    pub fn set_uplink(&mut self, i: usize, bytes_per_sec: u64) {
        self.nodes[i].bandwidth = Some(bytes_per_sec);
    }

    fn note(&mut self, line: String) {
        if self.cfg.record {
            self.log.push(format!("{:>8} {line}", self.now.0));
        }
    }

    fn running_or_panic(&self, i: usize, what: &str) {
        assert!(
            self.is_running(i),
            "{what}: peer {i} is {:?}",
            self.nodes[i].state
        );
    }

    /// Starts peer `i` now.
    pub fn start(&mut self, i: usize) {
        assert_eq!(
            self.nodes[i].state,
            NodeState::Idle,
            "start: peer {i} was already started"
        );
        self.nodes[i].state = NodeState::Running;
        self.nodes[i].forwarded_ids.clear();
        self.take_snapshot(i);
        note!(self, "p{i} start");
        let now = self.now;
        self.nodes[i].peer.start(now);
        self.flush(i);
    }

    /// Starts every peer not started yet, in index order.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].state == NodeState::Idle {
                self.start(i);
            }
        }
    }

    /// Runs every event up to and including `until`; the clock ends there.
    pub fn run_until(&mut self, until: Time) {
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > until {
                break;
            }
            let Some(Reverse(q)) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(q.at);
            self.dispatch(q.ev);
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now.plus(d));
    }

    /// Crashes peer `i`: it receives nothing more and its pending timers and
    /// transfers are void. Its state stays readable through [`Sim::peer`].
    pub fn crash(&mut self, i: usize) {
        self.running_or_panic(i, "crash");
        let n = &mut self.nodes[i];
        n.state = NodeState::Crashed;
        n.incarnation += 1;
        n.kept.clear();
        n.tainted.clear();
        note!(self, "p{i} crash");
    }

    /// Restarts crashed peer `i` as a new `Peer` that reloads the catalog
    /// entries of the files it held at its last `Effect::Persist` (as from
    /// its metadata file, holders cleared), and starts it now.
    pub fn restart(&mut self, i: usize) {
        assert_eq!(
            self.nodes[i].state,
            NodeState::Crashed,
            "restart: peer {i} is not crashed"
        );
        let incarnation = self.nodes[i].incarnation;
        let cfg = self.nodes[i].peer.config().clone();
        let mut peer = Peer::new(cfg, self.peer_rng(i, incarnation));
        // From the metadata file as last written, not from the live state:
        // whatever the crashed incarnation did not persist is lost.
        for e in &self.nodes[i].snapshot {
            peer.load_entry(Entry {
                record: e.record.clone(),
                holders: BTreeSet::new(),
                local: e.local.clone(),
            });
        }
        let n = &mut self.nodes[i];
        n.peer = peer;
        n.state = NodeState::Idle;
        self.start(i);
    }

    /// Cuts every link between a peer of `a` and a peer of `b` (both ways)
    /// until [`Sim::heal`]. Messages already in flight still arrive.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        note!(self, "partition {a:?} | {b:?}");
        self.cuts
            .push((a.iter().copied().collect(), b.iter().copied().collect()));
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        note!(self, "heal");
        self.cuts.clear();
    }

    fn cut(&self, i: usize, j: usize) -> bool {
        self.cuts
            .iter()
            .any(|(a, b)| (a.contains(&i) && b.contains(&j)) || (a.contains(&j) && b.contains(&i)))
    }

    /// Whether a connection from `i` to `j` would succeed now.
    pub fn reachable(&self, i: usize, j: usize) -> bool {
        self.is_running(j) && !self.cut(i, j)
    }

    /// Gives peer `i` a menu command now.
    pub fn command(&mut self, i: usize, cmd: Command) {
        self.running_or_panic(i, "command");
        note!(self, "p{i} command {cmd:?}");
        let now = self.now;
        if matches!(cmd, Command::Delete { .. }) {
            self.cause = Cause::DeleteCommand;
        }
        self.nodes[i].peer.on_command(now, cmd);
        self.flush(i);
        self.cause = Cause::Other;
    }

    /// Hands `msg` to peer `i` now, as if it had just arrived (from anyone:
    /// the sender is whoever the message names).
    pub fn deliver(&mut self, i: usize, msg: Message) {
        self.running_or_panic(i, "deliver");
        self.stats.delivered += 1;
        note!(self, "p{i} <- {} (injected)", describe(&msg));
        let now = self.now;
        self.cause = self.cause_of(&msg);
        self.nodes[i].peer.on_message(now, msg);
        self.flush(i);
        self.cause = Cause::Other;
    }

    /// Queues `msg` for peer `i` at `at` (dropped if `i` is not running
    /// then).
    pub fn deliver_at(&mut self, at: Time, i: usize, msg: Message) {
        self.push(
            at,
            Event::Deliver {
                to: i,
                from: None,
                msg,
            },
        );
    }

    fn new_record(&mut self, owner: usize, name: &str, len: u64) -> FileRecord {
        self.files_made += 1;
        let ts = SIM_EPOCH_SECS + self.now.0 / 1000;
        let mut h = Sha256::new();
        h.update(format!("sim-file:{owner}:{name}:{len}:{}", self.files_made));
        h.update(ts.to_string());
        let id = FileId(faster_hex::hex_string(&h.finalize()));
        self.sizes.insert(id.clone(), len);
        self.owners.insert(id.clone(), peer_id(owner));
        FileRecord {
            file_name: name.to_string(),
            file_size: FileSize::Bytes(len),
            file_id: id,
            file_owner: peer_id(owner),
            file_timestamp: Timestamp::from_secs(ts),
        }
    }

    /// Gives peer `i` a file of `len` bytes it holds and owns, stored as
    /// `name`; returns its id. Before start it is loaded like an entry of
    /// the metadata file; on a running peer it goes through
    /// `Peer::on_imported` (as after `push`: sent to one peer, announced).
    pub fn add_local_file(&mut self, i: usize, name: &str, len: u64) -> FileId {
        let record = self.new_record(i, name, len);
        let id = record.file_id.clone();
        self.store(i, &id, name, len, true);
        match self.nodes[i].state {
            NodeState::Idle => {
                self.nodes[i].peer.load_entry(Entry {
                    record,
                    holders: BTreeSet::new(),
                    local: Some(LocalCopy {
                        name: name.to_string(),
                        verified: true,
                    }),
                });
            }
            NodeState::Running => {
                note!(self, "p{i} imported {name}");
                let now = self.now;
                self.nodes[i].peer.on_imported(
                    now,
                    Ok(Imported {
                        record,
                        local_name: name.to_string(),
                    }),
                );
                self.flush(i);
            }
            NodeState::Crashed => panic!("add_local_file: peer {i} is crashed"),
        }
        id
    }

    /// Creates a user file at `path` (outside storage) of `len` bytes, for
    /// `Command::Push`.
    pub fn put_user_file(&mut self, path: impl Into<PathBuf>, len: u64) {
        self.user_files.insert(path.into(), len);
    }

    /// Why a message may remove a local copy: only a DELETE from the owner
    /// the simulator gave the file.
    fn cause_of(&self, msg: &Message) -> Cause {
        match msg {
            Message::Delete { from, file_id } if self.owners.get(file_id) == Some(from) => {
                Cause::OwnerDelete(file_id.clone())
            }
            _ => Cause::Other,
        }
    }

    /// Records that peer `i`'s storage folder now has bytes for `file`.
    fn store(&mut self, i: usize, file: &FileId, name: &str, len: u64, intact: bool) {
        self.nodes[i].disk.insert(
            file.clone(),
            DiskFile {
                name: name.to_string(),
                len,
                intact,
            },
        );
    }

    /// Writes peer `i`'s metadata file: the entries of the files it holds.
    fn take_snapshot(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.snapshot = n
            .peer
            .catalog()
            .iter()
            .filter(|(_, e)| e.local.is_some())
            .map(|(_, e)| e.clone())
            .collect();
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 100 {
            self.violations.push(format!("t={} ms: {what}", self.now.0));
        }
    }

    /// Every safety property, checked now over every running peer (and
    /// every violation recorded while events ran since the start):
    ///
    /// - a file recorded as held has bytes in the peer's storage, of the
    ///   size its catalog entry gives, and intact if recorded as verified;
    /// - no local copy disappears except by its owner's DELETE or the
    ///   owner's own `delete` (checked as each event runs; a copy whose
    ///   bytes are stored but the catalog forgot is reported here);
    /// - members <= MAX_PEERS, catalog <= MAX_FILES, holders per file <=
    ///   MAX_HOLDERS, seen GOSSIP ids <= SEEN_CAPACITY (the three
    ///   whole-table bounds are also checked after every event);
    /// - no peer forwards one GOSSIP id twice in one incarnation (checked
    ///   after every event; a restarted peer starts with an empty seen
    ///   cache, as the real peer does).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut bad: Vec<String> = self.violations.clone();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.state != NodeState::Running {
                continue;
            }
            let p = &n.peer;
            bad.extend(bound_violations(i, p));
            for (id, e) in p.catalog().iter() {
                if e.holders.len() > MAX_HOLDERS {
                    bad.push(format!(
                        "p{i}: {} has {} holders > {MAX_HOLDERS}",
                        id.short(),
                        e.holders.len()
                    ));
                }
                let Some(local) = &e.local else {
                    continue;
                };
                match n.disk.get(id) {
                    None => bad.push(format!(
                        "p{i} records {} as held but has no bytes for it",
                        id.short()
                    )),
                    Some(d) => {
                        if local.verified && !d.intact {
                            bad.push(format!(
                                "p{i} records corrupt bytes of {} as verified",
                                id.short()
                            ));
                        }
                        let size = self.sizes.get(id).copied();
                        if d.intact && size.is_some_and(|s| s != d.len) {
                            bad.push(format!(
                                "p{i} holds {} bytes of {}, its size is {size:?}",
                                d.len,
                                id.short()
                            ));
                        }
                        if e.record.file_size.bytes().is_some_and(|b| Some(b) != size) {
                            bad.push(format!(
                                "p{i}: catalog size of {} differs from the file's",
                                id.short()
                            ));
                        }
                    }
                }
            }
            for id in n.disk.keys() {
                if p.local_copy(id).is_none() {
                    bad.push(format!(
                        "p{i} no longer records its copy of {} (removed without a DELETE)",
                        id.short()
                    ));
                }
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            bad.truncate(20);
            Err(bad.join("\n"))
        }
    }

    fn dispatch(&mut self, ev: Event) {
        self.stats.events += 1;
        let now = self.now;
        match ev {
            Event::Deliver { to, from, msg } => self.message_arrives(now, to, from, msg),
            Event::Timer {
                peer,
                incarnation,
                timer,
            } => {
                if !self.current(peer, incarnation) {
                    return;
                }
                note!(self, "p{peer} timer {timer:?}");
                self.nodes[peer].peer.on_timer(now, timer);
                self.flush(peer);
            }
            Event::FetchArrive(f) => self.fetch_arrive(now, f),
            Event::FetchDone(f) => self.fetch_done(now, f),
            Event::PushArrive {
                to,
                from,
                record,
                verified,
            } => self.push_arrive(to, from, record, verified),
            Event::Imported {
                peer,
                incarnation,
                result,
            } => self.imported(peer, incarnation, result),
        }
    }

    /// A message reaches peer `to` (from peer `from`, or injected).
    fn message_arrives(&mut self, now: Time, to: usize, from: Option<usize>, msg: Message) {
        let who = from.map_or("injected".to_string(), |f| format!("from p{f}"));
        if !self.is_running(to) {
            self.stats.dropped_down += 1;
            note!(self, "p{to} x {} {who} (down)", describe(&msg));
            return;
        }
        self.stats.delivered += 1;
        note!(self, "p{to} <- {} {who}", describe(&msg));
        self.cause = self.cause_of(&msg);
        self.nodes[to].peer.on_message(now, msg);
        self.flush(to);
        self.cause = Cause::Other;
    }

    /// A GET_FILE reaches its source (or fails to connect): its result is
    /// queued for when the last byte (or the fault) would arrive.
    fn fetch_arrive(&mut self, now: Time, f: FetchArrive) {
        let FetchArrive {
            peer,
            incarnation,
            transfer,
            attempt,
            source,
            record,
            started,
            from,
            piece,
        } = f;
        let name = record.file_name.clone();
        if let Some(len) = piece {
            self.piece_arrive(
                peer,
                incarnation,
                (transfer, attempt),
                source,
                record,
                (from, len),
            );
            return;
        }
        let (mut result, at, source) = if self.reachable(peer, source) {
            self.serve(now, source, &record, &name, from)
        } else {
            let at = started.plus(self.cfg.connect_timeout);
            (
                FetchResult::Failed(SourceFailure::Connect("connection refused".into())),
                at,
                None,
            )
        };
        // Bytes kept from a corrupt source spoil the copy this completes;
        // an attempt from byte 0 starts clean.
        if from == 0 {
            self.nodes[peer].tainted.remove(&transfer);
        } else if self.nodes[peer].tainted.contains(&transfer) {
            self.stats.tainted_resumes += 1;
            if let FetchResult::Saved { len, .. } = result {
                result = FetchResult::Unverified { len };
            }
        }
        self.push(
            at,
            Event::FetchDone(FetchDone {
                peer,
                incarnation,
                transfer,
                attempt,
                name,
                file: record.file_id,
                result,
                source,
                from,
                piece: None,
            }),
        );
    }

    /// A piece request reaches its source: the piece, a fault (the
    /// configured stall, reset and corrupt rates) or a refusal arrives
    /// after its time on the source's uplink. A corrupt source's pieces
    /// hash to another digest (each corrupt source its own).
    fn piece_arrive(
        &mut self,
        peer: usize,
        incarnation: u64,
        (transfer, attempt): (TransferId, u64),
        source: usize,
        record: FileRecord,
        (offset, len): (u64, u64),
    ) {
        let now = self.now;
        let back = self.latency();
        let fail = |why| FetchResult::Failed(why);
        let holds = !matches!(
            self.nodes[source].peer.answer_get_file(&record.file_id, 0),
            GetFileAnswer::NotHeld | GetFileAnswer::Busy { .. }
        );
        let (mut result, mut at, mut intact) = if !self.reachable(peer, source) {
            let why = SourceFailure::Connect("connection refused".into());
            (fail(why), now.plus(self.cfg.connect_timeout), false)
        } else if !holds {
            (fail(SourceFailure::NotFound), now.plus(back), false)
        } else {
            let intact = !self.nodes[source].corrupt;
            let digest = sim_piece_digest(&record.file_id, offset, (!intact).then_some(source));
            // Pieces from one holder share its uplink.
            let start = now.plus(back).max(self.nodes[source].uplink_free);
            let at = start.plus(self.send_time(source, len));
            self.nodes[source].uplink_free = at;
            (FetchResult::Piece { digest }, at, intact)
        };
        let mut sent = if matches!(result, FetchResult::Piece { .. }) {
            len
        } else {
            0
        };
        let (stall, reset, corrupt) = (self.cfg.stall, self.cfg.reset, self.cfg.corrupt);
        if sent > 0 && stall + reset + corrupt > 0.0 {
            let r = self.rng.gen::<f64>();
            let k = self.rng.gen_range(0..=len);
            let partial = now.plus(back + self.send_time(source, k));
            if r < stall {
                (result, at, sent) = (
                    fail(SourceFailure::Stalled { at: k }),
                    partial.plus(self.cfg.idle_timeout),
                    k,
                );
            } else if r < stall + reset {
                (result, at, sent) = (fail(SourceFailure::Closed { at: k }), partial, k);
            } else if r < stall + reset + corrupt {
                intact = false;
                let digest = sim_piece_digest(&record.file_id, offset, Some(usize::MAX));
                result = FetchResult::Piece { digest };
            }
            if r < stall + reset + corrupt {
                self.stats.transfer_faults += 1;
            }
        }
        self.stats.fetched_bytes += sent;
        let streaming = matches!(result, FetchResult::Piece { .. })
            .then(|| (source, self.nodes[source].incarnation));
        self.push(
            at,
            Event::FetchDone(FetchDone {
                peer,
                incarnation,
                transfer,
                attempt,
                name: record.file_name,
                file: record.file_id,
                result,
                source: streaming,
                from: offset,
                piece: Some((offset, intact)),
            }),
        );
    }

    /// Peer `i` checks the pieces its download `transfer` wrote: the copy
    /// verifies when every piece is there and the file's.
    fn verify_pieces(&mut self, i: usize, transfer: TransferId, attempt: u64, record: FileRecord) {
        let len = record.file_size.bytes().unwrap_or(0);
        let pieces = self.nodes[i].peer.downloads().get(transfer).and_then(|d| {
            d.swarm
                .as_ref()
                .map(|r| (r.plan.piece_len(), r.plan.piece_count()))
        });
        let written = self.nodes[i].pieces.get(&transfer);
        let whole = match (pieces, written) {
            (Some((plen, count)), Some(w)) => {
                (0..count as u64).all(|k| w.get(&(k * plen)) == Some(&true))
            }
            _ => false,
        };
        let result = if whole {
            FetchResult::Saved {
                local_name: record.file_name.clone(),
                len,
                verified: true,
            }
        } else {
            FetchResult::Unverified { len }
        };
        // Hashing the file takes a while (about 1 GB/s).
        let at = self.now.plus(Duration::from_millis(len / 1_000_000));
        let file = (record.file_name, record.file_id);
        self.local_result(at, i, (transfer, attempt), file, result, 0);
    }

    /// How peer `source` answers a GET_FILE for `record` from byte `from`
    /// (stored as `name` when it arrives): the result, when it arrives, and
    /// the streaming source (whose crash or cut fails it meanwhile). Draws
    /// the configured transfer faults; a cut at byte `k` keeps the first
    /// `k` bytes, as the driver does.
    fn serve(
        &mut self,
        now: Time,
        source: usize,
        record: &FileRecord,
        name: &str,
        from: u64,
    ) -> (FetchResult, Time, Option<(usize, u64)>) {
        let back = self.latency();
        let src = &self.nodes[source];
        let streaming = Some((source, src.incarnation));
        // The binary's answer, with no other stream in flight (the simulator
        // doesn't model the stream cap).
        if let GetFileAnswer::NotHeld | GetFileAnswer::Busy { .. } =
            src.peer.answer_get_file(&record.file_id, 0)
        {
            return (
                FetchResult::Failed(SourceFailure::NotFound),
                now.plus(back),
                None,
            );
        }
        let len = self
            .sizes
            .get(&record.file_id)
            .copied()
            .or(record.file_size.bytes())
            .unwrap_or(0);
        let corrupt_source = src.corrupt;
        let from = from.min(len);
        let mut at = now.plus(back + self.transfer_time(len - from));
        let mut sent = len - from;
        let mut result = if corrupt_source {
            FetchResult::Unverified { len }
        } else {
            FetchResult::Saved {
                local_name: name.to_string(),
                len,
                verified: true,
            }
        };
        let (stall, reset, corrupt) = (self.cfg.stall, self.cfg.reset, self.cfg.corrupt);
        if stall + reset + corrupt > 0.0 {
            let r = self.rng.gen::<f64>();
            let k = self.rng.gen_range(from..=len);
            let partial = now.plus(back + self.transfer_time(k - from));
            if r < stall {
                at = partial.plus(self.cfg.idle_timeout);
                result = kept(SourceFailure::Stalled { at: k }, k);
            } else if r < stall + reset {
                at = partial;
                result = kept(SourceFailure::Closed { at: k }, k);
            } else if r < stall + reset + corrupt {
                result = FetchResult::Unverified { len };
            }
            if r < stall + reset {
                sent = k - from;
            }
            if r < stall + reset + corrupt {
                self.stats.transfer_faults += 1;
            }
        }
        self.stats.fetched_bytes += sent;
        (result, at, streaming)
    }

    /// A fetch attempt's result reaches its peer: stored as the driver
    /// would (only for the current attempt), then told to the core.
    fn fetch_done(&mut self, now: Time, f: FetchDone) {
        let FetchDone {
            peer,
            incarnation,
            transfer,
            attempt,
            name,
            file,
            mut result,
            source,
            from,
            piece,
        } = f;
        if !self.current(peer, incarnation) {
            return;
        }
        // The driver stores a download only for the attempt the
        // core is waiting for.
        let wanted = self.nodes[peer].peer.is_current(transfer, attempt);
        if let Some((src, inc)) = source {
            if !self.current(src, inc) || self.cut(peer, src) {
                result = FetchResult::Failed(SourceFailure::Closed { at: 0 });
            }
        }
        if let (FetchResult::Failed(why), None) = (&result, piece) {
            result = kept(why.clone(), from);
        }
        if let (true, Some((offset, intact)), FetchResult::Piece { .. }) = (wanted, piece, &result)
        {
            self.nodes[peer]
                .pieces
                .entry(transfer)
                .or_default()
                .insert(offset, intact);
        }
        let corrupt_source = source.is_some_and(|(src, _)| self.nodes[src].corrupt);
        if wanted && corrupt_source && matches!(result, FetchResult::Cut { .. }) {
            self.nodes[peer].tainted.insert(transfer);
        }
        match &result {
            FetchResult::Unverified { len } => {
                self.nodes[peer].kept.insert(transfer, (file, name, *len));
            }
            FetchResult::Failed(_) | FetchResult::Cut { .. } => self.stats.fetches_failed += 1,
            FetchResult::Piece { .. } => {}
            FetchResult::Saved {
                local_name,
                len,
                verified,
            } => {
                if wanted {
                    // Verified bytes come only from an intact
                    // transfer; unverified ones are the kept copy.
                    self.store(peer, &file, local_name, *len, *verified);
                }
            }
        }
        note!(self, "p{peer} fetch {transfer} #{attempt}: {result:?}");
        self.nodes[peer]
            .peer
            .on_fetch_result(now, transfer, attempt, result);
        self.flush(peer);
    }

    /// A pushed file reaches peer `to`: stored and told to the core only
    /// if the core's own push policy (`Peer::wants_push`) takes it.
    fn push_arrive(&mut self, to: usize, from: usize, record: FileRecord, verified: bool) {
        if !self.is_running(to) {
            note!(
                self,
                "p{to} x push {} from p{from} (down)",
                record.file_name
            );
            return;
        }
        if !self.nodes[to].peer.wants_push(&record.file_id, verified) {
            note!(
                self,
                "p{to} x push {} from p{from} (one copy)",
                record.file_name
            );
            return;
        }
        note!(self, "p{to} <- push {} from p{from}", record.file_name);
        let name = record.file_name.clone();
        let len = self.sizes.get(&record.file_id).copied().unwrap_or(0);
        self.store(to, &record.file_id, &name, len, verified);
        let now = self.now;
        self.nodes[to]
            .peer
            .on_file_received(now, &format!("p{from}"), record, name, verified);
        self.flush(to);
    }

    /// A `push` import finished on peer `peer`.
    fn imported(&mut self, peer: usize, incarnation: u64, result: Result<Imported, ImportError>) {
        if !self.current(peer, incarnation) {
            return;
        }
        note!(
            self,
            "p{peer} imported {:?}",
            result
                .as_ref()
                .map(|r| &r.local_name)
                .map_err(|e| e.to_string())
        );
        if let Ok(Imported {
            record,
            local_name: name,
        }) = &result
        {
            let len = self.sizes.get(&record.file_id).copied().unwrap_or(0);
            self.store(peer, &record.file_id, name, len, true);
        }
        let now = self.now;
        self.nodes[peer].peer.on_imported(now, result);
        self.flush(peer);
    }

    fn current(&self, i: usize, incarnation: u64) -> bool {
        let n = &self.nodes[i];
        n.state == NodeState::Running && n.incarnation == incarnation
    }

    /// Carries out every effect peer `i` queued.
    fn flush(&mut self, i: usize) {
        let effects = self.nodes[i].peer.take_effects();
        let me = peer_id(i);
        let incarnation = self.nodes[i].incarnation;
        // GOSSIP id -> (origin, sends) for this call's forward round.
        let mut forwarded: BTreeMap<String, (PeerId, usize)> = BTreeMap::new();
        for effect in effects {
            match effect {
                Effect::Send { to, msg } => {
                    if let Message::Gossip { id, peer_id, .. } = &msg {
                        if *peer_id != me {
                            forwarded
                                .entry(id.clone())
                                .or_insert_with(|| (peer_id.clone(), 0))
                                .1 += 1;
                        }
                    }
                    self.send(i, to, msg);
                }
                Effect::Schedule { at, timer } => self.push(
                    at,
                    Event::Timer {
                        peer: i,
                        incarnation,
                        timer,
                    },
                ),
                Effect::Fetch {
                    transfer,
                    attempt,
                    from: _,
                    to,
                    record,
                    resume_from,
                } => self.fetch(i, transfer, attempt, to, record, (resume_from, None)),
                Effect::FetchPiece {
                    transfer,
                    attempt,
                    from: _,
                    to,
                    record,
                    offset,
                    len,
                } => self.fetch(i, transfer, attempt, to, record, (offset, Some(len))),
                Effect::VerifyPieces {
                    transfer,
                    attempt,
                    record,
                } => self.verify_pieces(i, transfer, attempt, record),
                // Its result, should it come, is stale.
                Effect::CancelFetch { .. } => {}
                Effect::KeepUnverified { transfer, attempt } => {
                    self.keep_unverified(i, transfer, attempt)
                }
                Effect::DiscardUnverified { transfer } => {
                    self.nodes[i].kept.remove(&transfer);
                    self.nodes[i].pieces.remove(&transfer);
                }
                Effect::PushFile { to, file_id } => self.push_file(i, to, file_id),
                Effect::Import { path } => self.import(i, path),
                Effect::Persist => {
                    if self.cfg.record {
                        self.nodes[i].actions.push("persist".into());
                    }
                    self.take_snapshot(i);
                }
                Effect::RemoveLocal { name } => self.remove_local(i, name),
                Effect::CopyOut { name, dest, .. } => self.nodes[i]
                    .actions
                    .push(format!("copy-out {name} -> {}", dest.path.display())),
                // Simulated disks never change under a peer.
                Effect::Reverify { .. } => {}
                Effect::Print(line) => {
                    note!(self, "p{i} print {line}");
                    self.nodes[i].prints.push(line);
                }
            }
        }
        for v in bound_violations(i, &self.nodes[i].peer) {
            self.violation(v);
        }
        self.check_forwards(i, forwarded);
    }

    /// Peer `i` sends `msg` to `to`: recorded, then lost, cut off,
    /// duplicated or delivered after a latency.
    fn send(&mut self, i: usize, to: PeerAddr, msg: Message) {
        let now = self.now;
        self.stats.sent += 1;
        if self.cfg.record {
            self.nodes[i].sent.push(Sent {
                at: now,
                to: to.clone(),
                msg: msg.clone(),
            });
        }
        let Some(&j) = self.by_addr.get(&to) else {
            self.stats.unroutable += 1;
            return;
        };
        if self.cut(i, j) {
            self.stats.dropped_partition += 1;
            return;
        }
        if self.rng.gen::<f64>() < self.cfg.loss {
            self.stats.dropped_loss += 1;
            note!(self, "p{i} -> p{j} {} lost", describe(&msg));
            return;
        }
        if self.cfg.dup > 0.0 && self.rng.gen::<f64>() < self.cfg.dup {
            self.stats.duplicated += 1;
            let at = now.plus(self.latency());
            self.push(
                at,
                Event::Deliver {
                    to: j,
                    from: Some(i),
                    msg: msg.clone(),
                },
            );
        }
        let at = now.plus(self.latency());
        self.push(
            at,
            Event::Deliver {
                to: j,
                from: Some(i),
                msg,
            },
        );
    }

    /// Peer `i` fetches `record` from the peer at `to`.
    fn fetch(
        &mut self,
        i: usize,
        transfer: TransferId,
        attempt: u64,
        to: PeerAddr,
        record: FileRecord,
        (from, piece): (u64, Option<u64>),
    ) {
        let now = self.now;
        let incarnation = self.nodes[i].incarnation;
        self.stats.fetches += 1;
        match self.by_addr.get(&to).copied() {
            Some(source) => {
                let at = now.plus(self.latency());
                self.push(
                    at,
                    Event::FetchArrive(FetchArrive {
                        peer: i,
                        incarnation,
                        transfer,
                        attempt,
                        source,
                        record,
                        started: now,
                        from,
                        piece,
                    }),
                );
            }
            None => {
                let at = now.plus(self.cfg.connect_timeout);
                let refused = SourceFailure::Connect("connection refused".into());
                let result = match piece {
                    Some(_) => FetchResult::Failed(refused),
                    None => kept(refused, from),
                };
                let file = (record.file_name, record.file_id);
                self.local_result(at, i, (transfer, attempt), file, result, from);
            }
        }
    }

    /// Peer `i` keeps the unverified copy its download `transfer` got.
    fn keep_unverified(&mut self, i: usize, transfer: TransferId, attempt: u64) {
        let (name, file, result) = match self.nodes[i].kept.remove(&transfer) {
            Some((file, name, len)) => (
                name.clone(),
                file,
                FetchResult::Saved {
                    local_name: name,
                    len,
                    verified: false,
                },
            ),
            None => (
                String::new(),
                FileId(String::new()),
                FetchResult::Failed(SourceFailure::Disk("no unverified copy was kept".into())),
            ),
        };
        self.local_result(self.now, i, (transfer, attempt), (name, file), result, 0);
    }

    /// Queues, for `at`, a result of peer `i`'s download that no source is
    /// streaming (a refused connect, a check, a kept copy): `file` is its
    /// local name and id, `from` the offset the attempt asked from.
    fn local_result(
        &mut self,
        at: Time,
        i: usize,
        (transfer, attempt): (TransferId, u64),
        (name, file): (String, FileId),
        result: FetchResult,
        from: u64,
    ) {
        let incarnation = self.nodes[i].incarnation;
        self.push(
            at,
            Event::FetchDone(FetchDone {
                peer: i,
                incarnation,
                transfer,
                attempt,
                name,
                file,
                result,
                source: None,
                from,
                piece: None,
            }),
        );
    }

    /// Peer `i` pushes its copy of `file_id` to the peer at `to`.
    fn push_file(&mut self, i: usize, to: PeerAddr, file_id: FileId) {
        self.stats.pushes += 1;
        let Some(record) = self.nodes[i]
            .peer
            .local_copy(&file_id)
            .map(|(r, _)| r.clone())
        else {
            return;
        };
        let Some(&j) = self.by_addr.get(&to) else {
            return;
        };
        if !self.reachable(i, j) {
            return;
        }
        let len = self.sizes.get(&file_id).copied().unwrap_or(0);
        let at = self.now.plus(self.latency() + self.transfer_time(len));
        let verified = !self.nodes[i].corrupt;
        self.push(
            at,
            Event::PushArrive {
                to: j,
                from: i,
                record,
                verified,
            },
        );
    }

    /// Peer `i` imports the user's file at `path` (one of `user_files`).
    fn import(&mut self, i: usize, path: PathBuf) {
        self.nodes[i]
            .actions
            .push(format!("import {}", path.display()));
        let result = match self.user_files.get(&path).copied() {
            Some(len) => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "file".into());
                let record = self.new_record(i, &name, len);
                Ok(Imported {
                    record,
                    local_name: name,
                })
            }
            None => Err(ImportError::NotFound(path.clone())),
        };
        let incarnation = self.nodes[i].incarnation;
        self.push(
            self.now,
            Event::Imported {
                peer: i,
                incarnation,
                result,
            },
        );
    }

    /// Peer `i` removes its copy stored as `name`: a violation unless an
    /// owner's DELETE (or our own `delete` of a file we own) caused it.
    fn remove_local(&mut self, i: usize, name: String) {
        let file = self.nodes[i]
            .disk
            .iter()
            .find(|(_, d)| d.name == name)
            .map(|(f, _)| f.clone());
        if let Some(file) = file {
            let allowed = match &self.cause {
                Cause::OwnerDelete(f) => *f == file,
                Cause::DeleteCommand => self.owners.get(&file) == Some(&peer_id(i)),
                Cause::Other => false,
            };
            if !allowed {
                self.violation(format!(
                    "p{i} removed its copy of {} without its owner's DELETE",
                    file.short()
                ));
            }
            self.nodes[i].disk.remove(&file);
        }
        self.nodes[i].actions.push(format!("remove-local {name}"))
    }

    /// Checks (and, recording, lists) the GOSSIPs peer `i` forwarded in
    /// one flush: each id at most once in its life.
    fn check_forwards(&mut self, i: usize, forwarded: BTreeMap<String, (PeerId, usize)>) {
        for (gossip_id, (origin, sends)) in forwarded {
            if !self.nodes[i].forwarded_ids.insert(gossip_id.clone()) {
                self.violation(format!("p{i} forwarded GOSSIP {gossip_id} twice"));
            }
            // The list is for tests that inspect forwards; long sweeps
            // (record off) only need the duplicate check above.
            if self.cfg.record {
                self.nodes[i].forwards.push(Forward {
                    at: self.now,
                    gossip_id,
                    origin,
                    sends,
                });
            }
        }
    }
}

/// Whole-table bounds of one peer (cheap: checked after every event).
fn bound_violations(i: usize, p: &Peer) -> Vec<String> {
    let mut bad = Vec::new();
    if p.members().len() > MAX_PEERS {
        bad.push(format!(
            "p{i} tracks {} peers > {MAX_PEERS}",
            p.members().len()
        ));
    }
    if p.catalog().len() > MAX_FILES {
        bad.push(format!(
            "p{i} knows {} files > {MAX_FILES}",
            p.catalog().len()
        ));
    }
    if p.seen_len() > SEEN_CAPACITY {
        bad.push(format!(
            "p{i} remembers {} GOSSIP ids > {SEEN_CAPACITY}",
            p.seen_len()
        ));
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three running peers, p1 holding one file ("a.bin", 1000 bytes).
    fn three_peers_one_file() -> (Sim, FileId) {
        let mut sim = Sim::new(SimConfig {
            peers: 3,
            ..SimConfig::default()
        });
        let f = sim.add_local_file(1, "a.bin", 1000);
        sim.start_all();
        sim.run_for(Duration::from_secs(3));
        (sim, f)
    }

    #[test]
    fn the_checker_sees_corrupt_verified_copies_and_forgotten_ones() {
        let (mut sim, f) = three_peers_one_file();
        assert_eq!(sim.check_invariants(), Ok(()));
        if let Some(d) = sim.nodes[1].disk.get_mut(&f) {
            d.intact = false;
        }
        let err = sim.check_invariants().unwrap_err();
        assert!(err.contains("corrupt bytes"), "{err}");
        if let Some(d) = sim.nodes[1].disk.get_mut(&f) {
            d.intact = true;
        }
        // Bytes on disk the catalog no longer records: a deletion that
        // was not the owner's.
        sim.store(2, &f, "a.bin", 1000, true);
        let err = sim.check_invariants().unwrap_err();
        assert!(err.contains("no longer records"), "{err}");
    }

    #[test]
    fn restart_reloads_the_last_persisted_snapshot_not_the_live_state() {
        let (mut sim, f) = three_peers_one_file();
        // A copy the live state has but no Persist recorded is lost.
        let rec = sim.peer(1).local_copy(&f).map(|(r, _)| r.clone()).unwrap();
        sim.nodes[2].peer.catalog.set_local(
            rec,
            LocalCopy {
                name: "a.bin".into(),
                verified: true,
            },
        );
        sim.crash(2);
        sim.restart(2);
        assert!(sim.peer(2).local_copy(&f).is_none());
        assert!(sim.peer(1).local_copy(&f).is_some());
    }
}
