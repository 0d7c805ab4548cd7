//! The sans-IO peer: membership, gossip, the catalog and download planning.
//!
//! [`Peer`] takes events (a decoded message, a timer, a menu command, a
//! transfer's outcome) with the current time, and queues [`Effect`]s (send
//! this to host:port, fetch from that peer, schedule a timer, persist, print)
//! that the driver drains with [`Peer::take_effects`]. It owns no socket, no
//! clock and no file; randomness comes from the seeded RNG it is given. That
//! is what lets `sim` run dozens of peers in one process, deterministically.
//!
//! This file holds the types and the dispatch; `Peer`'s behaviour is in
//! one file per concern: `rounds` (our gossip), `inbound` (their
//! messages), `commands` (the menu), `fetching` (downloads, pushes,
//! imports), `changed` (copies changed on disk), `view` (snapshots).

pub mod catalog;
mod changed;
mod commands;
pub mod counters;
pub mod dial_limit;
pub mod downloads;
mod events;
mod failure;
mod fetching;
mod get_file;
pub mod gossip;
mod inbound;
pub mod membership;
pub mod push_quota;
mod resume;
mod rounds;
#[cfg(feature = "testkit")]
pub mod sim;
pub mod swarm;
mod swarming;
#[cfg(test)]
mod tests;
pub mod time;
mod uploads;
pub mod view;

use crate::ids::{FileId, PeerAddr, PeerId, TransferId};
use crate::protocol::{FileRecord, Message};
use catalog::{Catalog, Entry, LocalCopy};
pub use changed::{ReverifyOutcome, StampUpdate};
pub use downloads::Dest;
use downloads::Downloads;
pub use failure::SourceFailure;
use fetching::AutoBatch;
pub use fetching::Imported;
pub use get_file::{GetFileAnswer, MAX_FILE_STREAMS};
use gossip::{Budget, SeenCache, SEEN_CAPACITY};
use membership::Membership;
use rand::rngs::SmallRng;
use std::path::PathBuf;
use std::time::Duration;
pub use time::Time;
pub use uploads::{UploadEnd, UploadId, MAX_UPLOADS};

/// How many peers each gossip round and each forward goes to.
pub const GOSSIP_FANOUT: usize = 3;

/// A given peerId's GOSSIPs are answered at most this often (R-style peers
/// flood hundreds a second with fresh ids).
pub const REPLY_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// GOSSIP_REPLYs we send per second at most, all peers together, and the
/// burst allowed. The per-peerId limits don't bound a flood that invents a
/// new peerId for every GOSSIP: each would get our reply (our whole file
/// list, to any host:port it names: an amplifier) and a forward to three
/// peers. 64 a second is twice what a full table of 1024 peers needs at one
/// round each per 30 s, with retransmissions.
pub const REPLIES_PER_SEC: u32 = 64;
/// See [`REPLIES_PER_SEC`].
pub const REPLY_BURST: u32 = 256;
/// GOSSIPs we forward per second at most (each to three peers), all peers
/// together, and the burst allowed (see [`REPLIES_PER_SEC`]).
pub const FORWARDS_PER_SEC: u32 = 64;
/// See [`FORWARDS_PER_SEC`].
pub const FORWARD_BURST: u32 = 256;

/// The sweep for silent peers runs at least this often.
pub const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(10);

/// Most peers one catch-up GOSSIP goes to directly (see `Timer::CatchUp`).
pub const CATCH_UP_MAX_TARGETS: usize = 16;

/// A repeated GOSSIP id (one we have seen) from a given peerId is answered
/// at most this often (at most a tenth of the gossip interval, so
/// compressed timers keep the same proportions). The copies of one flood
/// reach a peer within about a second of each other, so they mostly stay
/// unanswered; a retransmission (`Timer::Retransmit`) comes later and is
/// answered.
pub const REPEAT_REPLY_MIN_INTERVAL: Duration = Duration::from_secs(3);

/// A GOSSIP_REPLY arriving this soon after an ANNOUNCE from the same peer
/// may have been sent before it (each message takes its own connection and
/// latency): it only adds holdings, it does not remove any (see
/// the GOSSIP_REPLY arm of `Peer::on_message`).
pub const REPLY_REORDER_WINDOW: Duration = Duration::from_secs(2);

/// Most peers one retransmission pass sends our round's GOSSIP to.
pub const RETRANSMIT_MAX_TARGETS: usize = 32;

/// Retransmission passes after each gossip round (see `Timer::Retransmit`):
/// through the whole interval, so a peer first tracked late in a round
/// whose first reply is lost does not wait for the next round (with three
/// passes, to 15 s, the one seed of 1 000 over 3 intervals in
/// tests/sim_faults.rs was such a pair).
pub const RETRANSMIT_PASSES: u8 = 5;

/// The longest wait from a round to its first retransmission pass, and
/// between passes (at most a sixth of the gossip interval).
pub const RETRANSMIT_DELAY: Duration = Duration::from_secs(5);

/// For this many gossip intervals after our start, peers that never
/// answered us get retransmissions and catch-ups as answered ones do (see
/// `Peer::asks_unanswered`).
pub const START_WINDOW_INTERVALS: u32 = 3;

/// Gossip intervals a seen GOSSIP id is remembered (besides the cache's
/// bound): a round's id comes back for about one interval at most.
pub const SEEN_ID_INTERVALS: u32 = 4;

/// How the peer is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our peerId.
    pub peer_id: PeerId,
    /// Where we listen (advertised in GOSSIP).
    pub addr: PeerAddr,
    /// Bootstrap peers, gossiped to while we track no one.
    pub well_known: Vec<PeerAddr>,
    /// Time between gossip rounds (30 s on the network).
    pub gossip_interval: Duration,
    /// Silence after which a peer is dropped (60 s on the network).
    pub peer_timeout: Duration,
    /// Files to fetch in the background at start (0: none).
    pub auto_fetch: usize,
    /// Serve, list and announce copies that verify under no timestamp
    /// spelling (off: they stay with the user who asked for them).
    pub share_unverified: bool,
}

#[cfg(any(test, feature = "testkit"))]
impl Config {
    /// The one configuration tests start from: `peer_id` listening at
    /// `addr`, the network's timers (30 s gossip, 60 s peer timeout), no
    /// well-known peer, no auto-fetch, unverified copies kept to ourselves.
    /// A test changes what it needs: `Config { field, ..Config::for_tests(..) }`.
    pub fn for_tests(peer_id: impl Into<PeerId>, addr: PeerAddr) -> Config {
        Config {
            peer_id: peer_id.into(),
            addr,
            well_known: Vec::new(),
            gossip_interval: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(60),
            auto_fetch: 0,
            share_unverified: false,
        }
    }
}

/// Timers the core asks for. They carry no state to cancel: a timer that
/// fires when it no longer matters is a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Time for a gossip round.
    Gossip,
    /// Time to drop silent peers.
    Sweep,
    /// Time to start the start-up auto-fetch.
    AutoFetch,
    /// Time for a catch-up GOSSIP to peers we began tracking recently whose
    /// files we have not had yet (after a heal, a restart, an expiry).
    CatchUp,
    /// Time to send the GOSSIP of the round that began at `round` again,
    /// directly, to the tracked peers whose GOSSIP_REPLY to it has not come,
    /// or to the well-known peers while we track no one (pass `pass` of
    /// `RETRANSMIT_PASSES`). Stale, a no-op, once a later round has begun.
    Retransmit {
        /// When the round began (identifies it).
        round: Time,
        /// Which pass this is, from 1.
        pass: u8,
    },
    /// Time to hash again the changed copies that could not be read.
    Recheck,
    /// Time to start the downloads resumed from the last run whose holders
    /// are known now (and to give up those still without one).
    ResumeWaiting,
    /// Time to look again at the downloads from several holders: a piece
    /// crawling on a slow holder is copied by an idle one.
    SwarmTick,
}

/// Menu commands that change state (read-only ones are served from
/// [`Peer::view`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Download a file (id or unique prefix), optionally copying it to `dest`.
    Get {
        /// File id or prefix.
        file: String,
        /// Where to copy it when done.
        dest: Option<PathBuf>,
        /// The user said `--force`: `dest` may replace an existing regular
        /// file (never anything else; see `storage::export`).
        force: bool,
    },
    /// Publish a local file as ours.
    Push {
        /// The file to publish.
        path: PathBuf,
    },
    /// Delete a file we own, everywhere.
    Delete {
        /// File id or prefix.
        file: String,
    },
}

/// How one attempt at one source ended (reported by the driver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchResult {
    /// The file is stored under `local_name` (verified, or the kept
    /// unverified fallback).
    Saved {
        /// Name in the storage folder.
        local_name: String,
        /// Bytes.
        len: u64,
        /// Whether the bytes match the id.
        verified: bool,
    },
    /// A complete copy arrived but does not verify; the driver keeps it as
    /// a fallback until told [`Effect::KeepUnverified`] or a later source
    /// succeeds.
    Unverified {
        /// Bytes.
        len: u64,
    },
    /// This source failed; the reason is shown to the user.
    Failed(SourceFailure),
    /// This source failed after sending part of the file: the driver keeps
    /// the first `kept` bytes (and their hash), so a source that serves
    /// ranges can send just the rest.
    Cut {
        /// Why it failed.
        why: SourceFailure,
        /// Bytes kept from the start of the file.
        kept: u64,
    },
    /// One piece of a download from several holders arrived whole, its
    /// range as asked, written at its offset.
    Piece {
        /// The SHA-256 of its bytes.
        digest: swarm::PieceDigest,
    },
}

/// What the core asks the driver to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send one message on a new connection.
    Send {
        /// Destination.
        to: PeerAddr,
        /// The message.
        msg: Message,
    },
    /// Push a file we hold to a peer (unsolicited FILE_DATA, streamed).
    PushFile {
        /// Destination.
        to: PeerAddr,
        /// The file.
        file_id: FileId,
    },
    /// Fetch a file from one source (GET_FILE, read FILE_DATA).
    Fetch {
        /// The download.
        transfer: TransferId,
        /// The attempt; results for other attempts are ignored.
        attempt: u64,
        /// The source.
        from: PeerId,
        /// Its address.
        to: PeerAddr,
        /// The file as the catalog knows it.
        record: FileRecord,
        /// Ask for the bytes from this offset on (a ranged GET_FILE,
        /// continuing the prefix the driver kept); 0 asks for the whole
        /// file, and any kept prefix is discarded.
        resume_from: u64,
    },
    /// Fetch one piece of a file (a ranged GET_FILE with `offset` and
    /// `length`), written at its offset in the download's one temp file.
    FetchPiece {
        /// The download.
        transfer: TransferId,
        /// The attempt; results for other attempts are ignored.
        attempt: u64,
        /// The source.
        from: PeerId,
        /// Its address.
        to: PeerAddr,
        /// The file as the catalog knows it (its size is exact).
        record: FileRecord,
        /// The piece's first byte.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// Every piece is in: hash the download's temp file against the id and
    /// report `Saved` (stored) or `Unverified` (kept for the audit) for
    /// `attempt`.
    VerifyPieces {
        /// The download.
        transfer: TransferId,
        /// The attempt the result must carry.
        attempt: u64,
        /// The file.
        record: FileRecord,
    },
    /// A piece attempt is no longer wanted (another copy came, or its
    /// source was excluded): close its connection.
    CancelFetch {
        /// The download.
        transfer: TransferId,
        /// The attempt.
        attempt: u64,
    },
    /// No verifying copy came from any source: store the kept unverified
    /// copy and report it as `Saved { verified: false }` for `attempt`.
    KeepUnverified {
        /// The download.
        transfer: TransferId,
        /// The attempt the result must carry.
        attempt: u64,
    },
    /// The download ended: an unverified copy still held for it (a later
    /// source verified, or a push or a DELETE ended it) is dropped.
    DiscardUnverified {
        /// The download.
        transfer: TransferId,
    },
    /// Call [`Peer::on_timer`] with `timer` at `at`.
    Schedule {
        /// When.
        at: Time,
        /// Which.
        timer: Timer,
    },
    /// The catalog changed: write the metadata file (the driver coalesces).
    Persist,
    /// Delete our copy from the storage folder.
    RemoveLocal {
        /// Its name in the folder.
        name: String,
    },
    /// Copy a stored file to a user's destination (`storage::export`'s
    /// rules: nothing is ever destroyed) and print how it went.
    CopyOut {
        /// Its name in the folder.
        name: String,
        /// The file as the catalog knows it (its network name and id give
        /// the name used when `dest` is a folder).
        record: FileRecord,
        /// Where to, and whether an existing regular file may be replaced.
        dest: Dest,
    },
    /// Hash and copy a user's file into storage, then call
    /// [`Peer::on_imported`].
    Import {
        /// The user's file.
        path: PathBuf,
    },
    /// Our copy changed on disk (or was never stamped): hash it again (off
    /// the loop) and call [`Peer::on_reverified`] with what was found.
    Reverify {
        /// The file.
        record: FileRecord,
        /// Its name in the folder.
        name: String,
    },
    /// Show a line to the user on the menu.
    Print(String),
}

/// The whole sans-IO state of one peer.
pub struct Peer {
    cfg: Config,
    rng: SmallRng,
    members: Membership,
    seen: SeenCache,
    /// All-peers limit on GOSSIP_REPLYs sent.
    reply_budget: Budget,
    /// All-peers limit on GOSSIPs forwarded.
    forward_budget: Budget,
    catalog: Catalog,
    downloads: Downloads,
    effects: Vec<Effect>,
    auto_fetch_started: bool,
    auto_fetch_early: bool,
    auto_batch: Option<AutoBatch>,
    /// A `Timer::ResumeWaiting` is scheduled.
    resume_timer_armed: bool,
    /// A `Timer::SwarmTick` is scheduled.
    swarm_tick_armed: bool,
    started_at: Option<Time>,
    /// When our last periodic gossip round went out, and its GOSSIP.
    last_round: Option<Time>,
    round_gossip: Option<Message>,
    /// A `Timer::CatchUp` is scheduled.
    catch_up_pending: bool,
    /// When the last catch-up GOSSIP went out (one per gossip interval).
    last_catch_up: Option<Time>,
    /// Local copies found changed on disk, not served until re-hashed.
    rechecking: std::collections::BTreeSet<FileId>,
    /// Of those, the ones that could not be read: hashed again at the next
    /// `Timer::Recheck`.
    recheck_later: std::collections::BTreeSet<FileId>,
    /// What was decided, counted (read by `/metrics`).
    counters: counters::Counters,
    /// Recent events, for the page and `/api/state`.
    events: events::Events,
    /// Uploads in flight, as the driver reports them.
    uploads: uploads::Uploads,
}

impl Peer {
    /// A peer with an empty catalog. `rng` is the only source of randomness.
    pub fn new(cfg: Config, rng: SmallRng) -> Self {
        Self {
            cfg,
            rng,
            members: Membership::new(),
            seen: SeenCache::new(SEEN_CAPACITY),
            reply_budget: Budget::new(REPLIES_PER_SEC, REPLY_BURST),
            forward_budget: Budget::new(FORWARDS_PER_SEC, FORWARD_BURST),
            catalog: Catalog::new(),
            downloads: Downloads::new(),
            effects: Vec::new(),
            auto_fetch_started: false,
            auto_fetch_early: false,
            auto_batch: None,
            resume_timer_armed: false,
            swarm_tick_armed: false,
            started_at: None,
            last_round: None,
            round_gossip: None,
            catch_up_pending: false,
            last_catch_up: None,
            rechecking: Default::default(),
            recheck_later: Default::default(),
            counters: Default::default(),
            events: Default::default(),
            uploads: Default::default(),
        }
    }

    /// A peer for unit tests: `cfg`, and an RNG seeded with `seed`.
    #[cfg(test)]
    pub(crate) fn for_tests(cfg: Config, seed: u64) -> Self {
        use rand::SeedableRng;
        Self::new(cfg, SmallRng::seed_from_u64(seed))
    }

    /// Our configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The catalog (read-only).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The membership table (read-only).
    pub fn members(&self) -> &Membership {
        &self.members
    }

    /// GOSSIP ids remembered in the seen cache now.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// What the core decided since start, counted (read-only).
    pub fn counters(&self) -> &counters::Counters {
        &self.counters
    }

    /// Downloads in flight (read-only).
    pub fn downloads(&self) -> &Downloads {
        &self.downloads
    }

    /// Adds an entry loaded from disk before [`Peer::start`].
    pub fn load_entry(&mut self, entry: Entry) -> bool {
        self.catalog.insert_entry(entry)
    }

    /// Drains the effects queued so far, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Our copy of `file`, if we hold one.
    pub fn local_copy(&self, file: &FileId) -> Option<(&FileRecord, &LocalCopy)> {
        let e = self.catalog.get(file)?;
        e.local.as_ref().map(|l| (&e.record, l))
    }

    /// The copy we may send to a peer that asks for `file`: an unverified
    /// copy is never spread unless `share_unverified` says so.
    pub fn servable_copy(&self, file: &FileId) -> Option<(&FileRecord, &LocalCopy)> {
        self.local_copy(file)
            .filter(|(_, l)| l.verified || self.cfg.share_unverified)
            .filter(|_| !self.rechecking.contains(file))
    }

    fn me(&self) -> &PeerId {
        &self.cfg.peer_id
    }

    fn schedule(&mut self, at: Time, timer: Timer) {
        self.effects.push(Effect::Schedule { at, timer });
    }

    fn print(&mut self, line: impl Into<String>) {
        self.effects.push(Effect::Print(line.into()));
    }

    fn sweep_period(&self) -> Duration {
        (self.cfg.peer_timeout / 4)
            .min(MAX_SWEEP_PERIOD)
            .max(Duration::from_millis(50))
    }

    /// Starts the peer: first gossip round now, then the periodic timers.
    pub fn start(&mut self, now: Time) {
        self.started_at = Some(now);
        self.gossip_round(now);
        let sweep = now.plus(self.sweep_period());
        self.schedule(sweep, Timer::Sweep);
        if self.cfg.auto_fetch > 0 {
            let at = now.plus(self.cfg.gossip_interval);
            self.schedule(at, Timer::AutoFetch);
        }
    }

    /// A timer fired.
    pub fn on_timer(&mut self, now: Time, timer: Timer) {
        match timer {
            Timer::Gossip => self.gossip_round(now),
            Timer::Sweep => {
                self.sweep(now);
                let next = now.plus(self.sweep_period());
                self.schedule(next, Timer::Sweep);
            }
            Timer::AutoFetch => self.auto_fetch(now),
            Timer::CatchUp => self.catch_up(now),
            Timer::Retransmit { round, pass } => self.retransmit(now, round, pass),
            Timer::Recheck => self.recheck(),
            Timer::ResumeWaiting => self.start_resumed(now),
            Timer::SwarmTick => self.on_swarm_tick(now),
        }
    }
}
