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
//! or resolved). Peer 0 is every peer's well-known peer. One seeded RNG
//! drives latency and loss, and each peer gets its own seeded RNG, so a
//! seed fully determines a run: [`Sim::log`] of two runs with the same seed
//! and the same calls is identical.

use super::catalog::{Entry, LocalCopy};
use super::view::StateView;
use super::{Command, Config, Effect, FetchResult, Peer, Time, Timer};
use crate::ids::{FileId, PeerAddr, PeerId, TransferId};
use crate::protocol::{FileRecord, FileSize, Message, Timestamp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::PathBuf;
use std::time::Duration;

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
    /// the core says `KeepUnverified`: transfer -> (local name, length).
    kept: BTreeMap<TransferId, (String, u64)>,
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
    FetchArrive {
        peer: usize,
        incarnation: u64,
        transfer: TransferId,
        attempt: u64,
        source: usize,
        record: FileRecord,
        started: Time,
    },
    FetchDone {
        peer: usize,
        incarnation: u64,
        transfer: TransferId,
        attempt: u64,
        name: String,
        result: FetchResult,
        /// The source and its incarnation, while bytes are streaming: if it
        /// crashes or is cut off before the end, the attempt fails.
        source: Option<(usize, u64)>,
    },
    PushArrive {
        to: usize,
        from: usize,
        record: FileRecord,
        verified: bool,
    },
    Imported {
        peer: usize,
        incarnation: u64,
        result: Result<(FileRecord, String), String>,
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
        };
        for _ in 0..sim.cfg.peers {
            sim.add_peer(sim.cfg.auto_fetch);
        }
        sim
    }

    fn peer_config(&self, i: usize, auto_fetch: usize) -> Config {
        Config {
            peer_id: peer_id(i),
            addr: addr(i),
            well_known: vec![addr(0)],
            gossip_interval: self.cfg.gossip_interval,
            peer_timeout: self.cfg.peer_timeout,
            auto_fetch,
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
    /// call into the peer), across restarts.
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

    fn note(&mut self, line: String) {
        self.log.push(format!("{:>8} {line}", self.now.0));
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
        self.note(format!("p{i} start"));
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
        self.note(format!("p{i} crash"));
    }

    /// Restarts crashed peer `i` as a new `Peer` that reloads the catalog
    /// entries of the files it holds (as from its metadata file, holders
    /// cleared), and starts it now.
    pub fn restart(&mut self, i: usize) {
        assert_eq!(
            self.nodes[i].state,
            NodeState::Crashed,
            "restart: peer {i} is not crashed"
        );
        let incarnation = self.nodes[i].incarnation;
        let cfg = self.nodes[i].peer.config().clone();
        let mut peer = Peer::new(cfg, self.peer_rng(i, incarnation));
        for (_, e) in self.nodes[i].peer.catalog().iter() {
            if e.local.is_some() {
                peer.load_entry(Entry {
                    record: e.record.clone(),
                    holders: BTreeSet::new(),
                    local: e.local.clone(),
                });
            }
        }
        let n = &mut self.nodes[i];
        n.peer = peer;
        n.state = NodeState::Idle;
        self.start(i);
    }

    /// Cuts every link between a peer of `a` and a peer of `b` (both ways)
    /// until [`Sim::heal`]. Messages already in flight still arrive.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        self.note(format!("partition {a:?} | {b:?}"));
        self.cuts
            .push((a.iter().copied().collect(), b.iter().copied().collect()));
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.note("heal".into());
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
        self.note(format!("p{i} command {cmd:?}"));
        let now = self.now;
        self.nodes[i].peer.on_command(now, cmd);
        self.flush(i);
    }

    /// Hands `msg` to peer `i` now, as if it had just arrived (from anyone:
    /// the sender is whoever the message names).
    pub fn deliver(&mut self, i: usize, msg: Message) {
        self.running_or_panic(i, "deliver");
        self.stats.delivered += 1;
        self.note(format!("p{i} <- {} (injected)", describe(&msg)));
        let now = self.now;
        self.nodes[i].peer.on_message(now, msg);
        self.flush(i);
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
        match self.nodes[i].state {
            NodeState::Idle => self.nodes[i].peer.load_entry(Entry {
                record,
                holders: BTreeSet::new(),
                local: Some(LocalCopy {
                    name: name.to_string(),
                    verified: true,
                }),
            }),
            NodeState::Running => {
                self.note(format!("p{i} imported {name}"));
                self.nodes[i]
                    .peer
                    .on_imported(Ok((record, name.to_string())));
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

    fn dispatch(&mut self, ev: Event) {
        let now = self.now;
        match ev {
            Event::Deliver { to, from, msg } => {
                let who = from.map_or("injected".to_string(), |f| format!("from p{f}"));
                if !self.is_running(to) {
                    self.stats.dropped_down += 1;
                    self.note(format!("p{to} x {} {who} (down)", describe(&msg)));
                    return;
                }
                self.stats.delivered += 1;
                self.note(format!("p{to} <- {} {who}", describe(&msg)));
                self.nodes[to].peer.on_message(now, msg);
                self.flush(to);
            }
            Event::Timer {
                peer,
                incarnation,
                timer,
            } => {
                if !self.current(peer, incarnation) {
                    return;
                }
                self.note(format!("p{peer} timer {timer:?}"));
                self.nodes[peer].peer.on_timer(now, timer);
                self.flush(peer);
            }
            Event::FetchArrive {
                peer,
                incarnation,
                transfer,
                attempt,
                source,
                record,
                started,
            } => {
                let name = record.file_name.clone();
                if !self.reachable(peer, source) {
                    let at = started.plus(self.cfg.connect_timeout);
                    self.push(
                        at,
                        Event::FetchDone {
                            peer,
                            incarnation,
                            transfer,
                            attempt,
                            name,
                            result: FetchResult::Failed("connect failed".into()),
                            source: None,
                        },
                    );
                    return;
                }
                let back = self.latency();
                let src = &self.nodes[source];
                let streaming = Some((source, src.incarnation));
                let (result, at, source) = if src.peer.local_copy(&record.file_id).is_some() {
                    let len = self
                        .sizes
                        .get(&record.file_id)
                        .copied()
                        .or(record.file_size.bytes())
                        .unwrap_or(0);
                    let result = if src.corrupt {
                        FetchResult::Unverified { len }
                    } else {
                        FetchResult::Saved {
                            local_name: name.clone(),
                            len,
                            verified: true,
                        }
                    };
                    (result, now.plus(back + self.transfer_time(len)), streaming)
                } else {
                    (
                        FetchResult::Failed("the peer does not have the file".into()),
                        now.plus(back),
                        None,
                    )
                };
                self.push(
                    at,
                    Event::FetchDone {
                        peer,
                        incarnation,
                        transfer,
                        attempt,
                        name,
                        result,
                        source,
                    },
                );
            }
            Event::FetchDone {
                peer,
                incarnation,
                transfer,
                attempt,
                name,
                mut result,
                source,
            } => {
                if !self.current(peer, incarnation) {
                    return;
                }
                if let Some((src, inc)) = source {
                    if !self.current(src, inc) || self.cut(peer, src) {
                        result = FetchResult::Failed("connection reset".into());
                    }
                }
                match &result {
                    FetchResult::Unverified { len } => {
                        self.nodes[peer].kept.insert(transfer, (name, *len));
                    }
                    FetchResult::Failed(_) => self.stats.fetches_failed += 1,
                    FetchResult::Saved { .. } => {}
                }
                self.note(format!("p{peer} fetch {transfer} #{attempt}: {result:?}"));
                self.nodes[peer]
                    .peer
                    .on_fetch_result(now, transfer, attempt, result);
                self.flush(peer);
            }
            Event::PushArrive {
                to,
                from,
                record,
                verified,
            } => {
                if !self.is_running(to) {
                    self.note(format!(
                        "p{to} x push {} from p{from} (down)",
                        record.file_name
                    ));
                    return;
                }
                self.note(format!("p{to} <- push {} from p{from}", record.file_name));
                let name = record.file_name.clone();
                self.nodes[to].peer.on_file_received(record, name, verified);
                self.flush(to);
            }
            Event::Imported {
                peer,
                incarnation,
                result,
            } => {
                if !self.current(peer, incarnation) {
                    return;
                }
                self.note(format!(
                    "p{peer} imported {:?}",
                    result.as_ref().map(|r| &r.1)
                ));
                self.nodes[peer].peer.on_imported(result);
                self.flush(peer);
            }
        }
    }

    fn current(&self, i: usize, incarnation: u64) -> bool {
        let n = &self.nodes[i];
        n.state == NodeState::Running && n.incarnation == incarnation
    }

    /// Carries out every effect peer `i` queued.
    fn flush(&mut self, i: usize) {
        let effects = self.nodes[i].peer.take_effects();
        let me = peer_id(i);
        let now = self.now;
        let incarnation = self.nodes[i].incarnation;
        // GOSSIP id -> (origin, sends) for this call's forward round.
        let mut forwarded: BTreeMap<String, (PeerId, usize)> = BTreeMap::new();
        for effect in effects {
            match effect {
                Effect::Send { to, msg } => {
                    self.stats.sent += 1;
                    if let Message::Gossip { id, peer_id, .. } = &msg {
                        if *peer_id != me {
                            forwarded
                                .entry(id.clone())
                                .or_insert_with(|| (peer_id.clone(), 0))
                                .1 += 1;
                        }
                    }
                    self.nodes[i].sent.push(Sent {
                        at: now,
                        to: to.clone(),
                        msg: msg.clone(),
                    });
                    let Some(&j) = self.by_addr.get(&to) else {
                        self.stats.unroutable += 1;
                        continue;
                    };
                    if self.cut(i, j) {
                        self.stats.dropped_partition += 1;
                        continue;
                    }
                    if self.rng.gen::<f64>() < self.cfg.loss {
                        self.stats.dropped_loss += 1;
                        self.note(format!("p{i} -> p{j} {} lost", describe(&msg)));
                        continue;
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
                } => {
                    self.stats.fetches += 1;
                    match self.by_addr.get(&to).copied() {
                        Some(source) => {
                            let at = now.plus(self.latency());
                            self.push(
                                at,
                                Event::FetchArrive {
                                    peer: i,
                                    incarnation,
                                    transfer,
                                    attempt,
                                    source,
                                    record,
                                    started: now,
                                },
                            );
                        }
                        None => {
                            let at = now.plus(self.cfg.connect_timeout);
                            self.push(
                                at,
                                Event::FetchDone {
                                    peer: i,
                                    incarnation,
                                    transfer,
                                    attempt,
                                    name: record.file_name,
                                    result: FetchResult::Failed("connect failed".into()),
                                    source: None,
                                },
                            );
                        }
                    }
                }
                Effect::KeepUnverified { transfer, attempt } => {
                    let (name, result) = match self.nodes[i].kept.remove(&transfer) {
                        Some((name, len)) => (
                            name.clone(),
                            FetchResult::Saved {
                                local_name: name,
                                len,
                                verified: false,
                            },
                        ),
                        None => (
                            String::new(),
                            FetchResult::Failed("no unverified copy was kept".into()),
                        ),
                    };
                    self.push(
                        now,
                        Event::FetchDone {
                            peer: i,
                            incarnation,
                            transfer,
                            attempt,
                            name,
                            result,
                            source: None,
                        },
                    );
                }
                Effect::PushFile { to, file_id } => {
                    self.stats.pushes += 1;
                    let Some(record) = self.nodes[i]
                        .peer
                        .local_copy(&file_id)
                        .map(|(r, _)| r.clone())
                    else {
                        continue;
                    };
                    let Some(&j) = self.by_addr.get(&to) else {
                        continue;
                    };
                    if !self.reachable(i, j) {
                        continue;
                    }
                    let len = self.sizes.get(&file_id).copied().unwrap_or(0);
                    let at = now.plus(self.latency() + self.transfer_time(len));
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
                Effect::Import { path } => {
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
                            Ok((record, name))
                        }
                        None => Err(format!(
                            "push: cannot read {}: no such file",
                            path.display()
                        )),
                    };
                    self.push(
                        now,
                        Event::Imported {
                            peer: i,
                            incarnation,
                            result,
                        },
                    );
                }
                Effect::Persist => self.nodes[i].actions.push("persist".into()),
                Effect::RemoveLocal { name } => {
                    self.nodes[i].actions.push(format!("remove-local {name}"))
                }
                Effect::CopyOut { name, dest } => self.nodes[i]
                    .actions
                    .push(format!("copy-out {name} -> {}", dest.display())),
                Effect::Print(line) => {
                    self.note(format!("p{i} print {line}"));
                    self.nodes[i].prints.push(line);
                }
            }
        }
        for (gossip_id, (origin, sends)) in forwarded {
            self.nodes[i].forwards.push(Forward {
                at: now,
                gossip_id,
                origin,
                sends,
            });
        }
    }
}
