//! The sans-IO peer: membership, gossip, the catalog and download planning.
//!
//! [`Peer`] takes events (a decoded message, a timer, a menu command, a
//! transfer's outcome) with the current time, and queues [`Effect`]s (send
//! this to host:port, fetch from that peer, schedule a timer, persist, print)
//! that the driver drains with [`Peer::take_effects`]. It owns no socket, no
//! clock and no file; randomness comes from the seeded RNG it is given. That
//! is what lets `sim` run dozens of peers in one process, deterministically.

pub mod catalog;
mod changed;
pub mod dial_limit;
pub mod downloads;
mod get_file;
pub mod gossip;
pub mod membership;
pub mod push_quota;
#[cfg(feature = "testkit")]
pub mod sim;
pub mod time;
pub mod view;

use crate::ids::{FileId, PeerAddr, PeerId, TransferId};
use crate::protocol::message::human_bytes;
use crate::protocol::{FileRecord, FileSize, Message};
use catalog::{Catalog, Entry, LocalCopy, Lookup};
pub use changed::{ReverifyOutcome, StampUpdate};
pub use downloads::Dest;
use downloads::{save_figures, Download, Downloads, Origin};
pub use get_file::{GetFileAnswer, MAX_FILE_STREAMS};
use gossip::{Budget, SeenCache, MAX_GOSSIP_ID_LEN, SEEN_CAPACITY};
use log::{debug, info, warn};
use membership::{Membership, Tracked, MAX_PEER_ID_LEN};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;
pub use time::Time;
use view::{select_page, FilePage, FileView, PeerView, StateView, TransferView};

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
    Failed(String),
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
    },
    /// No verifying copy came from any source: store the kept unverified
    /// copy and report it as `Saved { verified: false }` for `attempt`.
    KeepUnverified {
        /// The download.
        transfer: TransferId,
        /// The attempt the result must carry.
        attempt: u64,
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

struct AutoBatch {
    pending: usize,
    saved: Vec<String>,
    failed: Vec<String>,
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
}

/// How a download ended, said once: the menu shows it after `get: `, the
/// log after `auto-fetch: `.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DownloadEnd {
    /// Stored (verified or not: the text says).
    Saved(String),
    /// Given up, with the reasons.
    Failed(String),
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
            started_at: None,
            last_round: None,
            round_gossip: None,
            catch_up_pending: false,
            last_catch_up: None,
            rechecking: Default::default(),
            recheck_later: Default::default(),
        }
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
        }
    }

    /// Whether peers that never answered us may be asked again and again
    /// (retransmissions, catch-ups, round targets), not only once (see
    /// `PeerState::may_be_asked`): only in the first
    /// `START_WINDOW_INTERVALS` after our start. A restart forgets who
    /// answered; without this, a restarted peer whose first replies were
    /// lost waited on floods alone for them (measured on
    /// tests/sim_faults.rs: 9 of 60 seeds left a file unknown 3 intervals
    /// after the last heal). An attacker can't choose when we start.
    fn asks_unanswered(&self, now: Time) -> bool {
        self.started_at
            .is_some_and(|t| now.since(t) < self.cfg.gossip_interval * START_WINDOW_INTERVALS)
    }

    /// How long after asking a peer that never answered we may ask it
    /// again: longer than a peer stays tracked without a new GOSSIP (peer
    /// timeout, then the sweep), so an invented peerId GOSSIPed once is
    /// asked once.
    fn ask_again(&self) -> Duration {
        self.cfg.peer_timeout + self.cfg.gossip_interval
    }

    fn retransmit_delay(&self) -> Duration {
        (self.cfg.gossip_interval / 6).min(RETRANSMIT_DELAY)
    }

    fn repeat_reply_min_interval(&self) -> Duration {
        (self.cfg.gossip_interval / 10).min(REPEAT_REPLY_MIN_INTERVAL)
    }

    /// Sends `msg` (our round's GOSSIP) straight to at most `max` peers of
    /// `targets`, a random subset when there are more.
    fn resend_round(
        &mut self,
        now: Time,
        msg: &Message,
        mut targets: Vec<(PeerId, PeerAddr)>,
        max: usize,
    ) {
        let k = max.min(targets.len());
        targets.partial_shuffle(&mut self.rng, k);
        targets.truncate(k);
        for (id, to) in targets {
            self.members.mark_asked(now, &id);
            self.effects.push(Effect::Send {
                to,
                msg: msg.clone(),
            });
        }
    }

    /// Retransmission of the round that began at `round`: its GOSSIP (the
    /// same id) again, straight to every tracked peer whose GOSSIP_REPLY has
    /// not reached us since the round began, at most
    /// `RETRANSMIT_MAX_TARGETS` of them (a random subset). That covers a
    /// lost reply and a flood that missed the peer: one that has seen the id
    /// answers the repeat (see `on_gossip`), one that has not answers and
    /// forwards it as any fresh id. Without it such a peer's files (and its
    /// liveness, with a peer timeout of only two intervals) waited for our
    /// next round. While we track no one it goes to the well-known peers
    /// instead. A stale timer (a later round has begun, or the peer
    /// restarted) does nothing. A peer that never answered us at its
    /// address gets it only if it was never asked (`PeerState::may_be_asked`):
    /// an invented peerId naming someone else's host:port would otherwise
    /// have that address dialled five times a round for as long as it stays
    /// tracked (a reflector).
    fn retransmit(&mut self, now: Time, round: Time, pass: u8) {
        if self.last_round != Some(round) {
            return;
        }
        let Some(msg) = self.round_gossip.clone() else {
            return;
        };
        let any = self.asks_unanswered(now);
        let again = self.ask_again();
        let targets: Vec<(PeerId, PeerAddr)> = self
            .members
            .all()
            .into_iter()
            .filter(|(_, p)| {
                (any || p.may_be_asked(now, again)) && p.last_files.is_none_or(|f| f <= round)
            })
            .map(|(id, p)| (id.clone(), p.addr.clone()))
            .collect();
        // Fix (found by the simulator): a peer that a partition had cut off
        // from everyone tracks no one after the heal, and its round goes
        // only to the well-known peers; with those few GOSSIPs lost it
        // stayed alone for a whole interval (the slowest of 200 seeds took
        // 3.02 intervals to converge, 0.9 of them so). While we track no one
        // the passes knock on the well-known peers again.
        if self.members.is_empty() {
            let knock = self.well_known_targets(&[]);
            debug!(
                "retransmission {pass}: round gossip to {} well-known peers (we track no one)",
                knock.len()
            );
            for to in knock {
                self.effects.push(Effect::Send {
                    to,
                    msg: msg.clone(),
                });
            }
        }
        if !targets.is_empty() {
            debug!(
                "retransmission {pass}: round gossip to {} of {} peers",
                targets.len().min(RETRANSMIT_MAX_TARGETS),
                targets.len()
            );
            self.resend_round(now, &msg, targets, RETRANSMIT_MAX_TARGETS);
        }
        if pass < RETRANSMIT_PASSES {
            let at = now.plus(self.retransmit_delay());
            self.schedule(
                at,
                Timer::Retransmit {
                    round,
                    pass: pass + 1,
                },
            );
        }
    }

    /// A GOSSIP made us track a peer we did not track: we know where it is
    /// but not what it holds, which we learn only from its GOSSIP_REPLY to
    /// one of our GOSSIPs. Asks for a catch-up soon (at most two per gossip
    /// interval) instead of waiting for our next round's flood to reach
    /// it.
    fn want_catch_up(&mut self, now: Time) {
        if self.started_at.is_none() || self.catch_up_pending {
            return;
        }
        // A short wait batches the discoveries of one heal (they come with
        // one flood) and lets the replies to our own round arrive first.
        let batch = (self.cfg.gossip_interval / 10).min(Duration::from_secs(2));
        let mut at = now.plus(batch);
        if let Some(t) = self.last_catch_up {
            at = at.max(t.plus(self.cfg.gossip_interval / 2));
        }
        self.catch_up_pending = true;
        self.schedule(at, Timer::CatchUp);
    }

    /// Our last round's GOSSIP, again, straight to the peers tracked for at
    /// most two gossip intervals that have not sent us their files (at
    /// most `CATCH_UP_MAX_TARGETS`). A peer that was cut off when the round
    /// went out has not seen its id: it replies with its files and
    /// forwards it, completing the round's flood on its side of a healed
    /// partition; one of ours that has seen it only replies (see
    /// `on_repeated_gossip`), a Python one ignores it. The retransmission
    /// passes after each round (`retransmit`) do the same for every peer
    /// whose reply is missing; the catch-up is for peers found between
    /// rounds, which would otherwise wait for the next one. The same id, not a
    /// fresh one: a fresh id would flood the whole network again through
    /// peers that forward every new id (the Python ones), and through ours
    /// it would use up the once per ¾ interval forward of our GOSSIPs, so
    /// the next round's flood would stop at its first hop (measured: some
    /// peers then never got our GOSSIP and never sent their files).
    /// A peer that never answered us at its address gets it only if it was
    /// never asked (`PeerState::may_be_asked`): its address is only its
    /// GOSSIP's claim.
    fn catch_up(&mut self, now: Time) {
        self.catch_up_pending = false;
        let Some(msg) = self.round_gossip.clone() else {
            return;
        };
        let window = self.cfg.gossip_interval * 2;
        let any = self.asks_unanswered(now);
        let again = self.ask_again();
        let targets: Vec<(PeerId, PeerAddr)> = self
            .members
            .all()
            .into_iter()
            .filter(|(_, p)| {
                (any || p.may_be_asked(now, again))
                    && p.last_files.is_none()
                    && now.since(p.tracked_since) <= window
            })
            .map(|(id, p)| (id.clone(), p.addr.clone()))
            .collect();
        if targets.is_empty() {
            return;
        }
        self.last_catch_up = Some(now);
        debug!(
            "catch-up gossip to {} peers",
            targets.len().min(CATCH_UP_MAX_TARGETS)
        );
        self.resend_round(now, &msg, targets, CATCH_UP_MAX_TARGETS);
    }

    /// Our GOSSIP_REPLY: where we listen and the files we hold.
    fn own_reply(&self) -> Message {
        Message::GossipReply {
            host: self.cfg.addr.host.clone(),
            port: self.cfg.addr.port,
            peer_id: self.cfg.peer_id.clone(),
            files: self.catalog.local_records(self.cfg.share_unverified),
        }
    }

    /// A GOSSIP of ours with a fresh id (remembered, so echoes are ignored).
    fn own_gossip(&mut self, now: Time) -> Message {
        let id = gossip::uuid4(&mut self.rng);
        self.seen.insert(now, &id);
        Message::Gossip {
            host: self.cfg.addr.host.clone(),
            port: self.cfg.addr.port,
            id,
            peer_id: self.cfg.peer_id.clone(),
        }
    }

    /// The well-known peers, other than us, at whose address we track no
    /// one.
    fn untracked_well_known(&self) -> Vec<PeerAddr> {
        let own = &self.cfg.addr;
        let tracked: Vec<&PeerAddr> = self
            .members
            .all()
            .into_iter()
            .map(|(_, p)| &p.addr)
            .collect();
        self.cfg
            .well_known
            .iter()
            .filter(|a| *a != own && !tracked.contains(a))
            .cloned()
            .collect()
    }

    /// The well-known peers a round's GOSSIP goes to besides `chosen`: all
    /// of them while we track no one (that is how we join), else one we do
    /// not track, at random.
    fn well_known_targets(&mut self, chosen: &[PeerAddr]) -> Vec<PeerAddr> {
        let mut wk = self.untracked_well_known();
        wk.retain(|a| !chosen.contains(a));
        if self.members.is_empty() {
            wk
        } else {
            wk.choose(&mut self.rng).cloned().into_iter().collect()
        }
    }

    fn gossip_round(&mut self, now: Time) {
        let msg = self.own_gossip(now);
        self.round_gossip = Some(msg.clone());
        let previous = self.last_round.replace(now);
        let mut targets: Vec<PeerAddr> = if self.members.is_empty() {
            Vec::new()
        } else {
            // The round's direct targets are taken first from the peers we
            // have not heard from for a gossip interval (one more silent
            // interval and the peer timeout, 2 intervals on the network,
            // drops them: at 10 % loss that happened to about one pair in
            // 5 000 per round), then from those whose GOSSIP_REPLY to our
            // previous round never came (lost, or our flood missed them). A
            // direct GOSSIP reaches them with one loss instead of a chain of
            // them, and its reply refreshes both their liveness and their
            // files. The flood from there on is as random as before.
            let silent = self.cfg.gossip_interval;
            let any = self.asks_unanswered(now);
            let again = self.ask_again();
            let rank = |p: &membership::PeerState| {
                if !any && !p.may_be_asked(now, again) {
                    // Never answered, asked once already: last (see
                    // `PeerState::may_be_asked`; a flood of invented
                    // peerIds would otherwise take every round's targets).
                    4
                } else if now.since(p.last_seen) >= silent {
                    0
                } else if p.last_files.is_none() {
                    1
                } else if previous.is_some_and(|t| p.last_files.is_none_or(|f| f < t)) {
                    2
                } else {
                    3
                }
            };
            let chosen = self
                .members
                .random_peers_ranked(&mut self.rng, GOSSIP_FANOUT, rank);
            for (id, _) in &chosen {
                self.members.mark_asked(now, id);
            }
            chosen.into_iter().map(|(_, a)| a).collect()
        };
        // Fix (found by the simulator): a partition longer than the peer
        // timeout left two groups that had each dropped the other, and
        // since the well-known peers were gossiped to only while we track
        // no one, the groups never met again after the partition healed.
        // A well-known peer we do not track also gets this round's GOSSIP
        // (one per round, at most one extra message), so every group keeps
        // knocking on the bootstrap peers and re-merges once they answer.
        let extra = self.well_known_targets(&targets);
        targets.extend(extra);
        debug!("gossip round to {} peers", targets.len());
        for to in targets {
            self.effects.push(Effect::Send {
                to,
                msg: msg.clone(),
            });
        }
        let next = now.plus(self.cfg.gossip_interval);
        self.schedule(next, Timer::Gossip);
        if RETRANSMIT_PASSES > 0 {
            let at = now.plus(self.retransmit_delay());
            self.schedule(
                at,
                Timer::Retransmit {
                    round: now,
                    pass: 1,
                },
            );
        }
    }

    fn sweep(&mut self, now: Time) {
        // Seen ids are kept for SEEN_ID_INTERVALS gossip intervals, well past
        // a round's last retransmission and catch-up (see `SeenCache::expire`).
        self.seen
            .expire(now, self.cfg.gossip_interval * SEEN_ID_INTERVALS);
        let dead = self.members.expire(now, self.cfg.peer_timeout);
        for p in &dead {
            info!(
                "peer {p} dropped: silent for more than {:.1} s",
                self.cfg.peer_timeout.as_secs_f64()
            );
        }
        // Drop every holder we do not track, not only the peers that just
        // expired (found by the simulator): a holder named by an ANNOUNCE
        // from a peer we never tracked (H-style `from` = owner, a restarted
        // peer, an invented name) would otherwise stay in peers_with_file
        // forever, and 256 of them would fill a file's holder set. Holders
        // loaded from the metadata file get one peer timeout after start to
        // show up again.
        let settled = self
            .started_at
            .is_some_and(|t| now.since(t) > self.cfg.peer_timeout);
        let members = &self.members;
        let forgot = settled && self.catalog.retain_holders(|p| members.contains(p));
        if forgot || !dead.is_empty() {
            self.effects.push(Effect::Persist);
        }
    }

    /// Tracks a peer that told us where it listens; logs joins and moves.
    fn track(&mut self, now: Time, id: &PeerId, host: &str, port: u16) -> Tracked {
        let (what, evicted) = self.members.track(now, id, PeerAddr::new(host, port));
        match &what {
            Tracked::New => info!("peer {id} joined at {host}:{port}"),
            Tracked::Moved => info!("peer {id} moved to {host}:{port}"),
            Tracked::Refreshed => {}
        }
        if let Some(old) = evicted {
            info!("peer {old} dropped to make room (peer table full)");
            self.catalog.forget_holder(&old);
        }
        what
    }

    fn valid_peer_id(&self, id: &PeerId) -> bool {
        !id.0.is_empty() && id.0.len() <= MAX_PEER_ID_LEN
    }

    /// A message arrived (its sender is named inside it, not by the socket).
    pub fn on_message(&mut self, now: Time, msg: Message) {
        match msg {
            Message::Gossip {
                host,
                port,
                id,
                peer_id,
            } => self.on_gossip(now, host, port, id, peer_id),
            Message::GossipReply {
                host,
                port,
                peer_id,
                files,
            } => {
                if peer_id == *self.me() || !self.valid_peer_id(&peer_id) {
                    return;
                }
                self.track(now, &peer_id, &host, port);
                let mut announced_just_now = false;
                if let Some(p) = self.members.record_reply(now, &peer_id) {
                    announced_just_now = p
                        .last_announced
                        .is_some_and(|t| now.since(t) < REPLY_REORDER_WINDOW);
                }
                // Fix (found by the simulator once replies became more
                // frequent): a GOSSIP_REPLY sent just before the peer
                // finished a download, overtaken by that download's
                // ANNOUNCE, removed the peer from the file's holders again
                // until its next reply. Shortly after an ANNOUNCE from the
                // peer a reply only adds; the next one removes as usual.
                let changed = if announced_just_now {
                    let mut changed = false;
                    for r in &files {
                        changed |= self.catalog.merge(r, Some(&peer_id));
                    }
                    changed
                } else {
                    self.catalog.set_holdings(&peer_id, &files)
                };
                if changed {
                    self.effects.push(Effect::Persist);
                }
                if self.cfg.auto_fetch > 0 && !self.auto_fetch_started && !self.auto_fetch_early {
                    // Let the other replies of this round arrive first.
                    self.auto_fetch_early = true;
                    let at = now.plus((self.cfg.gossip_interval / 10).min(Duration::from_secs(2)));
                    self.schedule(at, Timer::AutoFetch);
                }
            }
            Message::Announce { from, file } => {
                if let Some(p) = self.members.get_mut(&from) {
                    p.last_seen = now;
                    p.last_announced = Some(now);
                }
                if from == *self.me() {
                    return;
                }
                if self.catalog.merge(&file, Some(&from)) {
                    debug!("{from} announced {}", file.file_name);
                    self.effects.push(Effect::Persist);
                }
            }
            Message::Delete { from, file_id } => self.on_delete(now, from, file_id),
            Message::GetFile { .. } | Message::FileData(_) => {
                // Served and received by the driver (they carry bytes).
                debug!("core ignores {}", msg.kind());
            }
        }
    }

    fn on_gossip(&mut self, now: Time, host: String, port: u16, id: String, peer_id: PeerId) {
        if id.len() > MAX_GOSSIP_ID_LEN || !self.valid_peer_id(&peer_id) {
            debug!("GOSSIP with oversized id or peerId dropped");
            return;
        }
        let fresh = self.seen.insert(now, &id);
        if peer_id == *self.me() {
            return;
        }
        if !fresh {
            self.on_repeated_gossip(now, &host, port, &peer_id);
            return;
        }
        if self.track(now, &peer_id, &host, port) == Tracked::New {
            self.want_catch_up(now);
        }
        let forward_window = self.cfg.gossip_interval.mul_f64(0.75);
        let (reply_budget, forward_budget) = (&mut self.reply_budget, &mut self.forward_budget);
        let (reply, forward) = match self.members.get_mut(&peer_id) {
            Some(p) => {
                let reply = p
                    .last_replied
                    .is_none_or(|t| now.since(t) >= REPLY_MIN_INTERVAL)
                    && reply_budget.take(now);
                let forward = p
                    .last_forwarded
                    .is_none_or(|t| now.since(t) >= forward_window)
                    && forward_budget.take(now);
                if reply {
                    p.last_replied = Some(now);
                }
                if forward {
                    p.last_forwarded = Some(now);
                }
                (reply, forward)
            }
            None => (false, false),
        };
        if reply {
            let reply_msg = self.own_reply();
            self.effects.push(Effect::Send {
                to: PeerAddr::new(host.clone(), port),
                msg: reply_msg,
            });
        }
        if forward {
            let msg = Message::Gossip {
                host,
                port,
                id,
                peer_id: peer_id.clone(),
            };
            // A peer that never answered gets a forward only if it may be
            // asked (see `PeerState::may_be_asked`), and that uses its one
            // ask: otherwise, in a small network, a few invented peerIds
            // got most forwards and their address one per GOSSIP we saw.
            let any = self.asks_unanswered(now);
            let again = self.ask_again();
            let chosen =
                self.members
                    .random_peers(&mut self.rng, GOSSIP_FANOUT, &[&peer_id], |p| {
                        any || p.may_be_asked(now, again)
                    });
            for (id, _) in &chosen {
                self.members.mark_asked(now, id);
            }
            for (_, to) in chosen {
                self.effects.push(Effect::Send {
                    to,
                    msg: msg.clone(),
                });
            }
        }
    }

    /// A GOSSIP whose id we have seen. PROTOCOL.md's GOSSIP row says to
    /// forward a GOSSIP once, remembering seen ids and ignoring repeats;
    /// what that rule prevents is a flood that never ends, and a repeat is
    /// still never forwarded here (forwarding happens once, on the fresh
    /// id). We only track its origin (it is alive, perhaps at a new
    /// address) and send it our GOSSIP_REPLY again, at most once per
    /// `repeat_reply_min_interval` per peerId: a GOSSIP_REPLY is idempotent
    /// (it states what we hold; merging it twice changes nothing), so the
    /// origin gets its files and its liveness refreshed after a lost reply.
    /// Directed repeats come from our own peers' retransmissions and
    /// catch-ups; the Python peers never send them (each sends or forwards
    /// a given id once; R-style ones mint a fresh id even to forward), and
    /// the copies of one flood arrive within about a second of each other,
    /// inside the limit, so they stay unanswered.
    fn on_repeated_gossip(&mut self, now: Time, host: &str, port: u16, peer_id: &PeerId) {
        if self.track(now, peer_id, host, port) == Tracked::New {
            self.want_catch_up(now);
        }
        let min = self.repeat_reply_min_interval();
        let budget = &mut self.reply_budget;
        let reply = match self.members.get_mut(peer_id) {
            Some(p) if p.last_replied.is_none_or(|t| now.since(t) >= min) && budget.take(now) => {
                p.last_replied = Some(now);
                true
            }
            _ => false,
        };
        if reply {
            let msg = self.own_reply();
            self.effects.push(Effect::Send {
                to: PeerAddr::new(host, port),
                msg,
            });
        }
    }

    fn on_delete(&mut self, now: Time, from: PeerId, file_id: FileId) {
        if from == *self.me() {
            // We never send ourselves a DELETE: one claiming our id is forged,
            // and honouring it would let anyone delete the files we own.
            warn!("DELETE of {file_id} claiming to come from us ignored (forged)");
            return;
        }
        self.members.touch(now, &from);
        // Fix (found by the simulator): a download of the file still in
        // flight used to complete after the owner's DELETE, re-create the
        // entry and ANNOUNCE it, resurrecting the file on every peer. The
        // owner's DELETE wins: the download ends (its late result is then
        // ignored as stale). The entry may already be gone (the owner's
        // GOSSIP_REPLY without the file can arrive first), so the download's
        // record also tells who the owner is.
        let download = self.downloads.by_file(&file_id);
        let record = match self.catalog.get(&file_id) {
            Some(e) => &e.record,
            None => match download.and_then(|t| self.downloads.get(t)) {
                Some(d) => &d.record,
                None => {
                    debug!("DELETE of unknown file {file_id} from {from}");
                    return;
                }
            },
        };
        if record.file_owner != from {
            warn!(
                "DELETE of {} ({}) from {from} ignored: the owner is {}",
                record.file_name, file_id, record.file_owner
            );
            return;
        }
        if let Some(e) = self.catalog.remove(&file_id) {
            info!(
                "file {} ({file_id}) deleted by its owner {from}",
                e.record.file_name
            );
            if let Some(local) = e.local {
                self.effects.push(Effect::RemoveLocal { name: local.name });
            }
            self.effects.push(Effect::Persist);
        }
        if let Some(d) = download.and_then(|t| self.downloads.remove(t)) {
            let line = format!(
                "stopped fetching {}: deleted by its owner {from}",
                d.record.file_name
            );
            self.finish(now, d, DownloadEnd::Failed(line));
        }
    }

    /// A menu command.
    pub fn on_command(&mut self, now: Time, cmd: Command) {
        match cmd {
            Command::Get { file, dest, force } => {
                self.cmd_get(now, &file, dest.map(|path| Dest { path, force }))
            }
            Command::Push { path } => self.effects.push(Effect::Import { path }),
            Command::Delete { file } => self.cmd_delete(&file),
        }
    }

    fn resolve(&mut self, verb: &str, prefix: &str) -> Option<FileId> {
        match self.catalog.lookup(prefix) {
            Lookup::Found(id) => Some(id),
            Lookup::None => {
                self.print(format!(
                    "{verb}: no known file has an id starting with {prefix:?} (see `list`)"
                ));
                None
            }
            Lookup::Ambiguous(n) => {
                self.print(format!(
                    "{verb}: {prefix:?} matches {n} files; type more of the id"
                ));
                None
            }
        }
    }

    fn cmd_get(&mut self, now: Time, prefix: &str, dest: Option<Dest>) {
        let Some(id) = self.resolve("get", prefix) else {
            return;
        };
        if let Some((rec, local)) = self.local_copy(&id) {
            let (record, local_name) = (rec.clone(), local.name.clone());
            let name = record.file_name.clone();
            match dest {
                Some(dest) => {
                    self.print(format!(
                        "get: already have {name}; copying it to {}",
                        dest.path.display()
                    ));
                    self.effects.push(Effect::CopyOut {
                        name: local_name,
                        record,
                        dest,
                    });
                }
                None => self.print(format!("get: already have {name} (stored as {local_name})")),
            }
            return;
        }
        if let Some(t) = self.downloads.by_file(&id) {
            if let Some(d) = self.downloads.get_mut(t) {
                d.origins.push(Origin::Menu(dest));
                let name = d.record.file_name.clone();
                self.print(format!(
                    "get: {name} is already being fetched; joined that download"
                ));
            }
            return;
        }
        self.start_download(now, id, Origin::Menu(dest));
    }

    /// Holders of `file` that we can reach, most recently seen first.
    fn sources(&self, file: &FileId) -> Vec<PeerId> {
        let Some(e) = self.catalog.get(file) else {
            return Vec::new();
        };
        let mut v: Vec<(&PeerId, Time)> = e
            .holders
            .iter()
            .filter_map(|p| self.members.get(p).map(|s| (p, s.last_seen)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.into_iter().map(|(p, _)| p.clone()).collect()
    }

    fn start_download(&mut self, now: Time, file: FileId, origin: Origin) {
        let Some(entry) = self.catalog.get(&file) else {
            return;
        };
        let record = entry.record.clone();
        let sources = self.sources(&file);
        if sources.is_empty() {
            if let Origin::Menu(_) = origin {
                let holders: Vec<String> = entry.holders.iter().map(|p| p.0.clone()).collect();
                self.print(format!(
                    "get: no reachable peer holds {} (known holders: {})",
                    record.file_name,
                    if holders.is_empty() {
                        "none".into()
                    } else {
                        holders.join(", ")
                    }
                ));
            }
            return;
        }
        let id = self.downloads.next_id();
        self.downloads.insert(Download {
            id,
            record,
            remaining: VecDeque::from(sources),
            current: None,
            failures: Vec::new(),
            origins: vec![origin],
            bytes_done: 0,
            unverified_fallback: None,
            kept_took: None,
            queued: true,
        });
        self.pump_queue(now);
    }

    fn pump_queue(&mut self, now: Time) {
        while let Some(id) = self.downloads.next_queued() {
            if let Some(d) = self.downloads.get_mut(id) {
                d.queued = false;
            }
            self.try_next_source(now, id);
        }
    }

    fn try_next_source(&mut self, now: Time, id: TransferId) {
        loop {
            let Some(d) = self.downloads.get_mut(id) else {
                return;
            };
            let Some(peer) = d.remaining.pop_front() else {
                break;
            };
            let Some(addr) = self.members.get(&peer).map(|p| p.addr.clone()) else {
                if let Some(d) = self.downloads.get_mut(id) {
                    d.failures.push((peer, "no longer tracked".into()));
                }
                continue;
            };
            let attempt = self.downloads.next_attempt();
            let Some(d) = self.downloads.get_mut(id) else {
                return;
            };
            d.current = Some((peer.clone(), attempt, now));
            d.bytes_done = 0;
            let record = d.record.clone();
            let auto = d.is_auto();
            let what = format!(
                "fetching {} ({}) from {peer}",
                record.file_name, record.file_size
            );
            if auto {
                info!("auto-fetch: {what}");
            } else {
                self.print(format!("get: {what}"));
            }
            self.effects.push(Effect::Fetch {
                transfer: id,
                attempt,
                from: peer,
                to: addr,
                record,
            });
            return;
        }
        // No source left.
        let Some(d) = self.downloads.get_mut(id) else {
            return;
        };
        if let Some((peer, took)) = d.unverified_fallback.take() {
            let attempt = self.downloads.next_attempt();
            if let Some(d) = self.downloads.get_mut(id) {
                d.current = Some((peer, attempt, now));
                d.kept_took = Some(took);
            }
            self.effects.push(Effect::KeepUnverified {
                transfer: id,
                attempt,
            });
            return;
        }
        if let Some(d) = self.downloads.remove(id) {
            let line = format!(
                "failed to fetch {}: {}",
                d.record.file_name,
                d.failure_summary()
            );
            self.finish(now, d, DownloadEnd::Failed(line));
        }
    }

    fn finish(&mut self, now: Time, d: Download, outcome: DownloadEnd) {
        for origin in &d.origins {
            match (origin, &outcome) {
                (Origin::Menu(_), DownloadEnd::Saved(what) | DownloadEnd::Failed(what)) => {
                    self.print(format!("get: {what}"))
                }
                (Origin::Auto, DownloadEnd::Saved(what)) => info!("auto-fetch: {what}"),
                (Origin::Auto, DownloadEnd::Failed(what)) => warn!("auto-fetch: {what}"),
            }
        }
        if d.origins.contains(&Origin::Auto) {
            if let Some(b) = self.auto_batch.as_mut() {
                b.pending = b.pending.saturating_sub(1);
                match &outcome {
                    DownloadEnd::Saved(_) => b.saved.push(d.record.file_name.clone()),
                    DownloadEnd::Failed(_) => b.failed.push(d.record.file_name.clone()),
                }
                if b.pending == 0 {
                    let line = format!(
                        "auto-fetch: done, fetched {} of {} files{}{}",
                        b.saved.len(),
                        b.saved.len() + b.failed.len(),
                        if b.saved.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", b.saved.join(", "))
                        },
                        if b.failed.is_empty() {
                            String::new()
                        } else {
                            format!("; failed: {}", b.failed.join(", "))
                        },
                    );
                    self.auto_batch = None;
                    self.print(line);
                }
            }
        }
        self.pump_queue(now);
    }

    /// Whether `attempt` is the one `transfer` is waiting for. The driver
    /// asks before storing a download: a download ended meanwhile (by its
    /// owner's DELETE, say) must leave no file behind.
    pub fn is_current(&self, transfer: TransferId, attempt: u64) -> bool {
        self.downloads
            .get(transfer)
            .and_then(|d| d.current.as_ref())
            .is_some_and(|c| c.1 == attempt)
    }

    /// Progress of a running attempt (for `transfers` and the stats page).
    pub fn on_fetch_progress(&mut self, transfer: TransferId, attempt: u64, bytes_done: u64) {
        if let Some(d) = self.downloads.get_mut(transfer) {
            if d.current.as_ref().map(|c| c.1) == Some(attempt) {
                d.bytes_done = bytes_done;
            }
        }
    }

    /// An attempt ended. Results for stale attempts are ignored.
    pub fn on_fetch_result(
        &mut self,
        now: Time,
        transfer: TransferId,
        attempt: u64,
        result: FetchResult,
    ) {
        let Some(d) = self.downloads.get_mut(transfer) else {
            return;
        };
        let Some((peer, _, started)) = d.current.clone().filter(|c| c.1 == attempt) else {
            debug!("stale result for {transfer} attempt {attempt}");
            return;
        };
        d.current = None;
        match result {
            FetchResult::Failed(why) => {
                debug!("{transfer}: {peer} failed: {why}");
                d.failures.push((peer, why));
                self.try_next_source(now, transfer);
            }
            FetchResult::Unverified { .. } => {
                d.failures
                    .push((peer.clone(), "bytes do not match the file id".into()));
                d.unverified_fallback = Some((peer, now.since(started)));
                self.try_next_source(now, transfer);
            }
            FetchResult::Saved {
                local_name,
                len,
                verified,
            } => {
                let Some(d) = self.downloads.remove(transfer) else {
                    return;
                };
                // The attempt whose bytes are kept: this one, or the
                // unverified fallback's (not the time spent on others).
                let took = d.kept_took.unwrap_or_else(|| now.since(started));
                let mut line = format!(
                    "saved {}, {} {} from {peer}",
                    d.record.file_name,
                    human_bytes(len),
                    save_figures(len, took),
                );
                if !verified {
                    line.push_str(" -- UNVERIFIED: no source sent bytes matching the file id");
                    warn!(
                        "kept unverified copy of {} ({})",
                        d.record.file_name, d.record.file_id
                    );
                }
                self.catalog.set_local(
                    d.record.clone(),
                    LocalCopy {
                        name: local_name.clone(),
                        verified,
                    },
                );
                self.effects.push(Effect::Persist);
                self.announce(&d.record);
                self.copy_out_for(&d, &local_name);
                self.finish(now, d, DownloadEnd::Saved(line));
            }
        }
    }

    fn announce(&mut self, record: &FileRecord) {
        let verified = self
            .local_copy(&record.file_id)
            .is_none_or(|(_, l)| l.verified);
        if !verified && !self.cfg.share_unverified {
            info!(
                "not announcing {} ({}): our copy does not match its id",
                record.file_name, record.file_id
            );
            return;
        }
        let msg = Message::Announce {
            from: self.cfg.peer_id.clone(),
            file: record.clone(),
        };
        for (_, p) in self.members.all() {
            self.effects.push(Effect::Send {
                to: p.addr.clone(),
                msg: msg.clone(),
            });
        }
    }

    /// Whether a pushed copy of `file` (its bytes `verified` against the id
    /// or not) is to be stored. One copy per file: not when we hold one,
    /// nor, unverified, while our own download of it runs (a verified push
    /// then ends that download: see [`Peer::on_file_received`]).
    pub fn wants_push(&self, file: &FileId, verified: bool) -> bool {
        self.local_copy(file).is_none() && (verified || self.downloads.by_file(file).is_none())
    }

    /// A peer pushed us a file (unsolicited FILE_DATA) and the driver
    /// stored it under `local_name` (after [`Peer::wants_push`] said so).
    /// A download of the same file still running ends with this copy: its
    /// bytes, arriving later, are discarded (its attempt is no longer
    /// current), so the folder holds one copy.
    pub fn on_file_received(
        &mut self,
        now: Time,
        record: FileRecord,
        local_name: String,
        verified: bool,
    ) {
        info!(
            "received pushed file {} ({}){}",
            record.file_name,
            record.file_id,
            if verified { "" } else { ", UNVERIFIED" }
        );
        self.catalog.set_local(
            record.clone(),
            LocalCopy {
                name: local_name.clone(),
                verified,
            },
        );
        self.effects.push(Effect::Persist);
        self.announce(&record);
        let download = self.downloads.by_file(&record.file_id);
        let Some(d) = download.and_then(|t| self.downloads.remove(t)) else {
            return;
        };
        // The push's transfer was not timed by us: no figures are claimed.
        let line = format!(
            "saved {}, {}: a peer pushed it whole while we were fetching it",
            d.record.file_name, record.file_size
        );
        self.copy_out_for(&d, &local_name);
        self.finish(now, d, DownloadEnd::Saved(line));
    }

    /// Copies our new copy to every destination the download's `get`s named.
    fn copy_out_for(&mut self, d: &Download, local_name: &str) {
        for o in &d.origins {
            if let Origin::Menu(Some(dest)) = o {
                self.effects.push(Effect::CopyOut {
                    name: local_name.to_string(),
                    record: d.record.clone(),
                    dest: dest.clone(),
                });
            }
        }
    }

    /// A `push` finished copying into storage (or failed with a message).
    pub fn on_imported(&mut self, result: Result<(FileRecord, String), String>) {
        let (record, local_name) = match result {
            Ok(ok) => ok,
            Err(msg) => {
                self.print(msg);
                return;
            }
        };
        info!(
            "file {} ({}) added by push",
            record.file_name, record.file_id
        );
        self.catalog.set_local(
            record.clone(),
            LocalCopy {
                name: local_name,
                verified: true,
            },
        );
        self.effects.push(Effect::Persist);
        let target = self
            .members
            .random_peers(&mut self.rng, 1, &[], |_| true)
            .pop();
        let sent = match target {
            Some((peer, to)) => {
                self.effects.push(Effect::PushFile {
                    to,
                    file_id: record.file_id.clone(),
                });
                format!("sent to {peer}")
            }
            None => "no peer to send it to yet".into(),
        };
        self.announce(&record);
        self.print(format!(
            "push: stored {} ({}) as {}; {sent}; announced to {} peers",
            record.file_name,
            record.file_size,
            record.file_id,
            self.members.len()
        ));
    }

    fn cmd_delete(&mut self, prefix: &str) {
        let Some(id) = self.resolve("delete", prefix) else {
            return;
        };
        let Some(entry) = self.catalog.get(&id) else {
            return;
        };
        if entry.record.file_owner != *self.me() {
            let line = format!(
                "delete: {} is owned by {}; only its owner can delete it",
                entry.record.file_name, entry.record.file_owner
            );
            self.print(line);
            return;
        }
        let Some(entry) = self.catalog.remove(&id) else {
            return;
        };
        if let Some(local) = entry.local {
            self.effects.push(Effect::RemoveLocal { name: local.name });
        }
        let msg = Message::Delete {
            from: self.cfg.peer_id.clone(),
            file_id: id.clone(),
        };
        let peers: Vec<PeerAddr> = self
            .members
            .all()
            .into_iter()
            .map(|(_, p)| p.addr.clone())
            .collect();
        let n = peers.len();
        for to in peers {
            self.effects.push(Effect::Send {
                to,
                msg: msg.clone(),
            });
        }
        self.effects.push(Effect::Persist);
        info!("file {} ({id}) deleted", entry.record.file_name);
        self.print(format!(
            "delete: deleted {}; told {n} peers",
            entry.record.file_name
        ));
    }

    fn auto_fetch(&mut self, now: Time) {
        if self.auto_fetch_started || self.cfg.auto_fetch == 0 {
            return;
        }
        self.auto_fetch_started = true;
        let mut candidates: Vec<FileId> = self
            .catalog
            .iter()
            .filter(|(id, e)| e.local.is_none() && self.downloads.by_file(id).is_none())
            .map(|(id, _)| id.clone())
            .filter(|id| !self.sources(id).is_empty())
            .collect();
        candidates.shuffle(&mut self.rng);
        candidates.truncate(self.cfg.auto_fetch);
        if candidates.is_empty() {
            info!("auto-fetch: no file held elsewhere to fetch");
            return;
        }
        info!(
            "auto-fetch: fetching {} files in the background",
            candidates.len()
        );
        self.auto_batch = Some(AutoBatch {
            pending: candidates.len(),
            saved: Vec::new(),
            failed: Vec::new(),
        });
        for id in candidates {
            self.start_download(now, id, Origin::Auto);
        }
    }

    /// A snapshot for the menu: every file.
    pub fn view(&self, now: Time) -> StateView {
        self.view_page(now, FilePage::ALL)
    }

    /// A snapshot for the stats page and its API: peers and transfers, and
    /// one page of files (only the page's entries are copied).
    pub fn view_page(&self, now: Time, page: FilePage) -> StateView {
        self.view_page_within(now, page, |_| true)
    }

    /// Changes whenever what a view shows changes beyond figures that
    /// merely tick (last seen, bytes done): files, holders, our copies,
    /// tracked peers, downloads started or ended. A view rendered at the
    /// same generation is the same apart from those figures.
    pub fn generation(&self) -> u64 {
        self.catalog.changes() + self.members.changes() + self.downloads.changes()
    }

    /// [`Peer::view_page`], holding the page's files only while `fits`
    /// says so (it sees each in turn; the first is always kept, and the
    /// page's `limit` then says how many it holds): a page of maximal
    /// entries is cut before it is copied.
    pub fn view_page_within(
        &self,
        now: Time,
        mut page: FilePage,
        mut fits: impl FnMut(&FileView) -> bool,
    ) -> StateView {
        let peers = self
            .members
            .all()
            .into_iter()
            .map(|(id, p)| PeerView {
                peer_id: id.0.clone(),
                host: p.addr.host.clone(),
                port: p.addr.port,
                last_seen_secs_ago: now.since(p.last_seen).as_secs(),
            })
            .collect();
        let by_name = |a: &(&FileId, &Entry), b: &(&FileId, &Entry)| {
            (&a.1.record.file_name, a.0).cmp(&(&b.1.record.file_name, b.0))
        };
        let files: Vec<FileView> = select_page(self.catalog.iter().collect(), page, by_name)
            .into_iter()
            .map(|(id, e)| FileView {
                file_id: id.0.clone(),
                file_name: e.record.file_name.clone(),
                file_owner: e.record.file_owner.0.clone(),
                file_size: e.record.file_size.to_value(),
                file_timestamp: e.record.file_timestamp.to_value(),
                local: e.local.is_some(),
                verified: e.local.as_ref().is_none_or(|l| l.verified),
                peers_with_file: e.holders.iter().map(|p| p.0.clone()).collect(),
            })
            .enumerate()
            .take_while(|(i, f)| fits(f) || *i == 0)
            .map(|(_, f)| f)
            .collect();
        if files.len()
            < page
                .limit
                .min(self.catalog.len().saturating_sub(page.offset))
        {
            page.limit = files.len().max(1);
        }
        let transfers = self
            .downloads
            .iter()
            .map(|d| {
                let (source, rate) = match &d.current {
                    Some((p, _, started)) => {
                        let secs = now.since(*started).as_secs_f64();
                        let rate = if secs > 0.0 {
                            (d.bytes_done as f64 / secs) as u64
                        } else {
                            0
                        };
                        (p.0.clone(), rate)
                    }
                    None => (if d.queued { "(queued)" } else { "-" }.to_string(), 0),
                };
                TransferView {
                    id: d.id.0,
                    file_id: d.record.file_id.0.clone(),
                    file_name: d.record.file_name.clone(),
                    source,
                    bytes_done: d.bytes_done,
                    bytes_total: match d.record.file_size {
                        FileSize::Bytes(b) => Some(b),
                        FileSize::Reported(_) => None,
                    },
                    rate_bytes_per_sec: rate,
                }
            })
            .collect();
        StateView {
            peer_id: self.cfg.peer_id.0.clone(),
            host: self.cfg.addr.host.clone(),
            port: self.cfg.addr.port,
            peers,
            files,
            files_total: self.catalog.len(),
            offset: page.offset,
            limit: page.limit,
            transfers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Timestamp;
    use rand::SeedableRng;

    fn peer() -> Peer {
        Peer::new(
            Config {
                peer_id: "me".into(),
                addr: PeerAddr::new("127.0.0.1", 9000),
                well_known: vec![PeerAddr::new("127.0.0.1", 9999)],
                gossip_interval: Duration::from_secs(30),
                peer_timeout: Duration::from_secs(60),
                auto_fetch: 0,
                share_unverified: false,
            },
            SmallRng::seed_from_u64(7),
        )
    }

    fn record(id: &str, owner: &str) -> FileRecord {
        FileRecord {
            file_name: format!("{id}.txt"),
            file_size: FileSize::Bytes(3),
            file_id: id.into(),
            file_owner: owner.into(),
            file_timestamp: Timestamp::from_secs(1),
        }
    }

    #[test]
    fn first_gossip_goes_to_the_well_known_peers() {
        let mut p = peer();
        p.start(Time(0));
        let sends: Vec<_> = p
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Send {
                    to,
                    msg: Message::Gossip { .. },
                } => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(sends, vec![PeerAddr::new("127.0.0.1", 9999)]);
    }

    #[test]
    fn holders_loaded_from_disk_that_never_speak_are_dropped_after_the_timeout() {
        let mut p = peer();
        p.load_entry(Entry {
            record: record("f", "ghost"),
            holders: [PeerId::from("ghost")].into_iter().collect(),
            local: None,
        });
        p.start(Time(0));
        p.on_timer(Time(10_000), Timer::Sweep);
        assert!(p.catalog().get(&"f".into()).is_some());
        p.on_timer(Time(61_000), Timer::Sweep);
        assert!(p.catalog().get(&"f".into()).is_none());
    }

    #[test]
    fn own_gossip_echoed_back_is_ignored() {
        let mut p = peer();
        p.on_message(
            Time(0),
            Message::Gossip {
                host: "127.0.0.1".into(),
                port: 9000,
                id: "x".into(),
                peer_id: "me".into(),
            },
        );
        assert!(p.members().is_empty());
        assert!(p.take_effects().is_empty());
    }

    #[test]
    fn delete_from_a_non_owner_changes_nothing() {
        let mut p = peer();
        p.on_message(
            Time(0),
            Message::GossipReply {
                host: "127.0.0.1".into(),
                port: 9001,
                peer_id: "owner".into(),
                files: vec![record("f", "owner")],
            },
        );
        p.on_message(
            Time(1),
            Message::Delete {
                from: "mallory".into(),
                file_id: "f".into(),
            },
        );
        assert!(p.catalog().get(&"f".into()).is_some());
        p.on_message(
            Time(2),
            Message::Delete {
                from: "owner".into(),
                file_id: "f".into(),
            },
        );
        assert!(p.catalog().get(&"f".into()).is_none());
    }

    fn reply_from(peer: &str, port: u16) -> Message {
        Message::GossipReply {
            host: "127.0.0.1".into(),
            port,
            peer_id: peer.into(),
            files: vec![],
        }
    }

    fn gossip_from(peer: &str, port: u16, id: &str) -> Message {
        Message::Gossip {
            host: "127.0.0.1".into(),
            port,
            id: id.into(),
            peer_id: peer.into(),
        }
    }

    /// (destination port, message kind, GOSSIP id) of every send.
    fn sends(effects: &[Effect]) -> Vec<(u16, &'static str, String)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { to, msg } => Some((
                    to.port,
                    msg.kind(),
                    match msg {
                        Message::Gossip { id, .. } => id.clone(),
                        _ => String::new(),
                    },
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_flood_of_invented_peer_ids_gets_a_bounded_number_of_answers_and_forwards() {
        let mut p = peer();
        p.start(Time(0));
        // Real peers to forward to.
        for i in 0..5u16 {
            p.on_message(
                Time(10),
                gossip_from(&format!("real{i}"), 9100 + i, &format!("r{i}")),
            );
        }
        p.take_effects();
        // 5 000 GOSSIPs within one second, each from a new peerId.
        for i in 0..5_000u32 {
            let at = Time(1_000 + u64::from(i) / 5);
            p.on_message(
                at,
                gossip_from(&format!("fake{i}"), 20_000, &format!("f{i}")),
            );
        }
        let sent = sends(&p.take_effects());
        let replies = sent.iter().filter(|s| s.1 == "GOSSIP_REPLY").count();
        let forwards = sent.iter().filter(|s| s.1 == "GOSSIP").count();
        let most = |burst: u32, rate: u32| (burst + rate) as usize;
        assert!(
            replies <= most(REPLY_BURST, REPLIES_PER_SEC),
            "{replies} replies"
        );
        assert!(replies >= REPLY_BURST as usize, "{replies} replies");
        assert!(
            forwards <= GOSSIP_FANOUT * most(FORWARD_BURST, FORWARDS_PER_SEC),
            "{forwards} forwards"
        );
        // Once the flood stops the budget refills: a real peer is answered.
        p.on_message(Time(10_000), gossip_from("real0", 9100, "r-late"));
        let sent = sends(&p.take_effects());
        assert!(
            sent.iter().any(|s| s.0 == 9100 && s.1 == "GOSSIP_REPLY"),
            "{sent:?}"
        );
    }

    #[test]
    fn a_flood_of_invented_peer_ids_does_not_evict_the_real_peers_or_their_files() {
        let mut p = peer();
        p.start(Time(0));
        // Five real peers answered our GOSSIP; each holds a file.
        for i in 0..5u16 {
            let id = format!("real{i}");
            p.on_message(
                Time(10),
                Message::GossipReply {
                    host: "127.0.0.1".into(),
                    port: 9100 + i,
                    peer_id: id.as_str().into(),
                    files: vec![record(&format!("file{i}"), &id)],
                },
            );
        }
        // 5 000 GOSSIPs within a few seconds, each from a new peerId: the
        // table (1 024) fills and overflows four times.
        for i in 0..5_000u32 {
            let at = Time(1_000 + u64::from(i));
            p.on_message(
                at,
                gossip_from(&format!("fake{i}"), 20_000, &format!("f{i}")),
            );
        }
        p.take_effects();
        assert_eq!(p.members().len(), membership::MAX_PEERS);
        for i in 0..5u16 {
            let id = PeerId(format!("real{i}"));
            assert!(p.members().contains(&id), "{id} evicted");
            let e = p.catalog().get(&format!("file{i}").as_str().into());
            assert!(
                e.is_some_and(|e| e.holders.contains(&id)),
                "{id} no longer a holder of its file"
            );
        }
    }

    /// When the catch-ups in `effects` are scheduled.
    fn catch_ups(effects: &[Effect]) -> Vec<Time> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Schedule {
                    at,
                    timer: Timer::CatchUp,
                } => Some(*at),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_peer_found_again_by_its_gossip_gets_our_rounds_gossip_again_unless_it_sent_its_files() {
        let mut p = peer();
        p.start(Time(0));
        // q and r answered us once, then went silent and expired (a
        // partition); our round at 90 s went out meanwhile.
        p.on_message(Time(100), reply_from("q", 9001));
        p.on_message(Time(100), reply_from("r", 9002));
        p.on_timer(Time(70_000), Timer::Sweep);
        assert!(p.members().is_empty());
        p.take_effects();
        p.on_timer(Time(90_000), Timer::Gossip);
        let round_id = sends(&p.take_effects())[0].2.clone();
        p.on_message(Time(91_000), gossip_from("q", 9001, "g-q"));
        p.on_message(Time(91_100), gossip_from("r", 9002, "g-r"));
        let at = catch_ups(&p.take_effects());
        assert_eq!(at, vec![Time(93_000)], "one catch-up, batched");
        // r's files arrive meanwhile: only q is asked again, with the
        // round's own id (no new id to flood the network with).
        p.on_message(Time(91_200), reply_from("r", 9002));
        p.take_effects();
        p.on_timer(Time(93_000), Timer::CatchUp);
        assert_eq!(sends(&p.take_effects()), vec![(9001, "GOSSIP", round_id)]);
        // The next catch-up waits half a gossip interval.
        p.on_message(Time(94_000), gossip_from("s", 9003, "g-s"));
        assert_eq!(catch_ups(&p.take_effects()), vec![Time(108_000)]);
    }

    #[test]
    fn a_peer_that_never_answered_is_sent_at_most_one_gossip_besides_our_reply() {
        let mut p = peer();
        // Enough answered peers for every round's targets (a peer asked
        // once is a round's target only when too few others are left).
        round_with_peers(&mut p, 4);
        // Past the start window (see `asks_unanswered`): a round at 100 s.
        replies_from(&mut p, Time(99_000), 0..4);
        p.on_timer(Time(100_000), Timer::Gossip);
        p.take_effects();
        // An invented peerId naming someone else's address, and one that
        // answered before but now claims a new address.
        p.on_message(Time(100_100), gossip_from("victim-claim", 7777, "g-v"));
        p.on_message(Time(100_200), gossip_from("q0", 7778, "g-q0"));
        let effects = p.take_effects();
        // Each GOSSIP gets its one reply, to the claimed address.
        let replies: Vec<u16> = sends(&effects)
            .into_iter()
            .filter(|s| s.1 == "GOSSIP_REPLY")
            .map(|s| s.0)
            .collect();
        assert_eq!(replies, vec![7777, 7778]);
        // A catch-up, every retransmission pass and the next round.
        p.on_timer(Time(102_200), Timer::CatchUp);
        for pass in 1..=RETRANSMIT_PASSES {
            let at = Time(100_000 + 5_000 * u64::from(pass));
            fire_retransmit(&mut p, at, Time(100_000), pass);
        }
        let passes = sends(&p.take_effects());
        p.on_timer(Time(130_000), Timer::Gossip);
        // Everything since the two GOSSIPs came (forwards included).
        let all: Vec<_> = sends(&effects)
            .iter()
            .chain(&passes)
            .chain(&sends(&p.take_effects()))
            .cloned()
            .collect();
        for port in [7777, 7778] {
            let n = all
                .iter()
                .filter(|s| s.0 == port && s.1 == "GOSSIP")
                .count();
            assert!(n <= 1, "{port} sent {n} GOSSIPs: {all:?}");
        }
        // q1..q3 answered at their addresses and missed this round's
        // reply: they still get every pass.
        for port in 9101..=9103 {
            assert_eq!(passes.iter().filter(|s| s.0 == port).count(), 5);
        }
    }

    #[test]
    fn in_the_start_window_a_peer_that_never_answered_gets_every_retransmission() {
        let mut p = peer();
        round_with_peers(&mut p, 4);
        // A restart forgot who answered: q9 found by its GOSSIP at 30.1 s.
        p.on_message(Time(30_100), gossip_from("q9", 9109, "g9"));
        p.take_effects();
        for pass in 1..=RETRANSMIT_PASSES {
            let at = Time(30_000 + 5_000 * u64::from(pass));
            fire_retransmit(&mut p, at, Time(30_000), pass);
        }
        let passes = sends(&p.take_effects());
        assert_eq!(passes.iter().filter(|s| s.0 == 9109).count(), 5);
    }

    #[test]
    fn a_peer_moving_back_to_the_address_it_answered_from_is_answered_again() {
        let mut p = peer();
        p.start(Time(0));
        p.on_message(Time(100), reply_from("q", 9001));
        p.on_message(Time(200), gossip_from("q", 7777, "g1"));
        assert_eq!(
            p.members().get(&"q".into()).map(|s| s.answered),
            Some(false)
        );
        p.on_message(Time(300), gossip_from("q", 9001, "g2"));
        assert_eq!(p.members().get(&"q".into()).map(|s| s.answered), Some(true));
    }

    #[test]
    fn a_repeated_gossip_id_is_answered_once_per_limit_and_never_forwarded() {
        let mut p = peer();
        p.start(Time(0));
        for k in 0..5u16 {
            p.on_message(Time(1), reply_from(&format!("r{k}"), 9100 + k));
        }
        p.take_effects();
        // The fresh id: answered and forwarded.
        p.on_message(Time(10_000), gossip_from("q", 9001, "g"));
        let first = sends(&p.take_effects());
        assert!(first.contains(&(9001, "GOSSIP_REPLY", String::new())));
        assert!(first.iter().any(|s| s.1 == "GOSSIP" && s.2 == "g"));
        // Copies of the same flood, within the repeat limit: ignored.
        p.on_message(Time(10_200), gossip_from("q", 9001, "g"));
        p.on_message(Time(12_900), gossip_from("q", 9001, "g"));
        assert_eq!(sends(&p.take_effects()), vec![]);
        // A retransmission later: answered, not forwarded.
        p.on_message(Time(13_000), gossip_from("q", 9001, "g"));
        assert_eq!(
            sends(&p.take_effects()),
            vec![(9001, "GOSSIP_REPLY", String::new())]
        );
        p.on_message(Time(14_000), gossip_from("q", 9001, "g"));
        assert_eq!(sends(&p.take_effects()), vec![]);
        // From a new address: tracked there and answered there.
        p.on_message(Time(16_000), gossip_from("q", 9050, "g"));
        assert_eq!(
            sends(&p.take_effects()),
            vec![(9050, "GOSSIP_REPLY", String::new())]
        );
        assert_eq!(
            p.members().get(&"q".into()).map(|s| s.addr.port),
            Some(9050)
        );
        assert_eq!(
            p.members().get(&"q".into()).map(|s| s.last_seen),
            Some(Time(16_000))
        );
        // One claiming to be us is ignored, repeat or not.
        p.on_message(Time(20_000), gossip_from("me", 9000, "g"));
        assert!(p.take_effects().is_empty());
    }

    #[test]
    fn a_repeat_from_an_untracked_peer_tracks_it_and_asks_for_a_catch_up() {
        let mut p = peer();
        p.start(Time(0));
        p.on_message(Time(1_000), gossip_from("q", 9001, "g"));
        p.on_timer(Time(3_000), Timer::CatchUp);
        // q expires; its GOSSIP comes again (retransmitted).
        p.on_timer(Time(70_000), Timer::Sweep);
        assert!(p.members().is_empty());
        p.take_effects();
        p.on_message(Time(71_000), gossip_from("q", 9001, "g"));
        let effects = p.take_effects();
        assert!(p.members().contains(&"q".into()));
        assert_eq!(sends(&effects), vec![(9001, "GOSSIP_REPLY", String::new())]);
        assert_eq!(catch_ups(&effects).len(), 1);
    }

    /// When the retransmissions in `effects` are scheduled.
    fn retransmits(effects: &[Effect]) -> Vec<(Time, Time, u8)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Schedule {
                    at,
                    timer: Timer::Retransmit { round, pass },
                } => Some((*at, *round, *pass)),
                _ => None,
            })
            .collect()
    }

    /// GOSSIP_REPLYs from q{k} (port 9100 + k) for every k in `ks`, at `at`.
    fn replies_from(p: &mut Peer, at: Time, ks: impl IntoIterator<Item = u16>) {
        for k in ks {
            p.on_message(at, reply_from(&format!("q{k}"), 9100 + k));
        }
    }

    /// Fires retransmission pass `pass` of the round that began at `round`.
    fn fire_retransmit(p: &mut Peer, at: Time, round: Time, pass: u8) {
        p.on_timer(at, Timer::Retransmit { round, pass });
    }

    /// A started peer tracking q0..q{n-1} (ports 9100..), whose round at
    /// 30 s went out; returns the round's GOSSIP id.
    fn round_with_peers(p: &mut Peer, n: u16) -> String {
        p.start(Time(0));
        replies_from(p, Time(1), 0..n);
        p.take_effects();
        p.on_timer(Time(30_000), Timer::Gossip);
        let effects = p.take_effects();
        assert_eq!(
            retransmits(&effects),
            vec![(Time(35_000), Time(30_000), 1)],
            "the round schedules its first pass"
        );
        sends(&effects)[0].2.clone()
    }

    #[test]
    fn the_retransmission_goes_only_to_peers_whose_reply_is_missing_and_is_capped() {
        let mut p = peer();
        let round_id = round_with_peers(&mut p, 50);
        // q0..q9 answer the round; the 40 others do not.
        replies_from(&mut p, Time(30_500), 0..10u16);
        p.take_effects();
        fire_retransmit(&mut p, Time(35_000), Time(30_000), 1);
        let effects = p.take_effects();
        let to = sends(&effects);
        assert_eq!(to.len(), RETRANSMIT_MAX_TARGETS);
        for (port, kind, id) in &to {
            assert_eq!((*kind, id), ("GOSSIP", &round_id));
            assert!(*port >= 9110, "q{} answered already", port - 9100);
        }
        let distinct: std::collections::BTreeSet<u16> = to.iter().map(|s| s.0).collect();
        assert_eq!(distinct.len(), to.len());
        assert_eq!(retransmits(&effects), vec![(Time(40_000), Time(30_000), 2)]);
        // All but q42 answer; the last pass goes to q42 alone and schedules
        // no further pass.
        replies_from(&mut p, Time(36_000), (10..50u16).filter(|k| *k != 42));
        p.take_effects();
        fire_retransmit(&mut p, Time(40_000), Time(30_000), RETRANSMIT_PASSES);
        let effects = p.take_effects();
        assert_eq!(sends(&effects), vec![(9142, "GOSSIP", round_id)]);
        assert!(retransmits(&effects).is_empty());
    }

    #[test]
    fn a_peer_tracking_no_one_knocks_on_the_well_known_peers_at_every_pass() {
        let mut p = peer();
        p.start(Time(0));
        let effects = p.take_effects();
        assert_eq!(sends(&effects).len(), 1, "the round to the well-known peer");
        let round_id = sends(&effects)[0].2.clone();
        // Its GOSSIP was lost: no reply. Every pass sends it again (the same
        // id), to the well-known peer only.
        let round = Time(0);
        let delay = RETRANSMIT_DELAY.as_millis() as u64;
        for pass in 1..=RETRANSMIT_PASSES {
            fire_retransmit(&mut p, Time(delay * pass as u64), round, pass);
            let effects = p.take_effects();
            assert_eq!(
                sends(&effects),
                vec![(9999, "GOSSIP", round_id.clone())],
                "pass {pass}"
            );
        }
        // Once we track anyone, even a peer that is not well-known, the
        // passes stop knocking (the round itself still tries one untracked
        // well-known peer, see `gossip_round`).
        let mut q = peer();
        q.start(Time(0));
        q.take_effects();
        replies_from(&mut q, Time(100), [0]);
        q.take_effects();
        fire_retransmit(&mut q, Time(delay), round, 1);
        assert_eq!(sends(&q.take_effects()), vec![]);
    }

    #[test]
    fn no_retransmission_when_every_reply_came() {
        let mut p = peer();
        round_with_peers(&mut p, 10);
        replies_from(&mut p, Time(30_300), 0..10u16);
        p.take_effects();
        fire_retransmit(&mut p, Time(35_000), Time(30_000), 1);
        assert_eq!(sends(&p.take_effects()), vec![]);
    }

    #[test]
    fn a_stale_retransmission_timer_does_nothing() {
        let mut p = peer();
        round_with_peers(&mut p, 10);
        // The next round began: the last one's timers are stale.
        p.on_timer(Time(60_000), Timer::Gossip);
        p.take_effects();
        for pass in 1..=RETRANSMIT_PASSES {
            fire_retransmit(&mut p, Time(60_100), Time(30_000), pass);
            assert!(p.take_effects().is_empty(), "pass {pass}");
        }
        // Before any round (a timer from before a restart): nothing either.
        let mut fresh = peer();
        fire_retransmit(&mut fresh, Time(5_000), Time(0), 1);
        assert!(fresh.take_effects().is_empty());
    }

    #[test]
    fn a_reply_overtaken_by_an_announce_does_not_undo_it() {
        let mut p = peer();
        p.start(Time(0));
        p.on_message(Time(100), reply_from("q", 9001));
        p.on_message(
            Time(5_000),
            Message::Announce {
                from: "q".into(),
                file: record("f", "owner"),
            },
        );
        // q's reply, sent before its download ended, arrives after the
        // ANNOUNCE: q still holds f.
        p.on_message(Time(5_150), reply_from("q", 9001));
        let holders = |p: &Peer| p.catalog().get(&"f".into()).map(|e| e.holders.len());
        assert_eq!(holders(&p), Some(1));
        // A later reply without f means q no longer holds it.
        p.on_message(Time(8_000), reply_from("q", 9001));
        assert_eq!(holders(&p), None);
    }

    #[test]
    fn the_round_goes_first_to_a_peer_silent_for_a_gossip_interval() {
        for seed in 0..20 {
            let mut p = peer();
            p.rng = SmallRng::seed_from_u64(seed);
            p.start(Time(0));
            replies_from(&mut p, Time(1), 0..10u16);
            // All but q7 are heard from again.
            replies_from(&mut p, Time(25_000), (0..10u16).filter(|k| *k != 7));
            p.take_effects();
            p.on_timer(Time(31_000), Timer::Gossip);
            // (The untracked well-known peer gets the round too.)
            let to: Vec<u16> = sends(&p.take_effects())
                .iter()
                .map(|s| s.0)
                .filter(|port| *port != 9999)
                .collect();
            assert_eq!(to.len(), GOSSIP_FANOUT);
            assert!(to.contains(&9107), "seed {seed}: {to:?}");
        }
    }

    #[test]
    fn get_of_an_unknown_id_says_so() {
        let mut p = peer();
        p.on_command(
            Time(0),
            Command::Get {
                file: "zz".into(),
                dest: None,
                force: false,
            },
        );
        let effects = p.take_effects();
        assert!(matches!(&effects[..], [Effect::Print(l)] if l.contains("no known file")));
    }

    /// A peer that knows file `f` (3 bytes) held by `q` and `r`, and has
    /// begun `get f`: returns the first attempt's number and its source.
    fn fetching_f(dest: Option<&str>) -> (Peer, TransferId, u64, PeerId) {
        let mut p = peer();
        p.start(Time(0));
        for (who, port) in [("q", 9001), ("r", 9002)] {
            p.on_message(
                Time(100),
                Message::GossipReply {
                    host: "127.0.0.1".into(),
                    port,
                    peer_id: who.into(),
                    files: vec![record("f", "owner")],
                },
            );
        }
        p.take_effects();
        p.on_command(
            Time(1_000),
            Command::Get {
                file: "f".into(),
                dest: dest.map(PathBuf::from),
                force: false,
            },
        );
        let fetch = p.take_effects().into_iter().find_map(|e| match e {
            Effect::Fetch {
                transfer,
                attempt,
                from,
                ..
            } => Some((transfer, attempt, from)),
            _ => None,
        });
        let (t, a, from) = fetch.expect("a fetch starts");
        (p, t, a, from)
    }

    fn printed(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Print(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_verified_push_during_a_download_ends_it_with_one_copy() {
        let (mut p, t, attempt, _) = fetching_f(Some("/tmp/out.txt"));
        assert!(
            !p.wants_push(&"f".into(), false),
            "an unverified push waits"
        );
        assert!(p.wants_push(&"f".into(), true));
        p.on_file_received(Time(1_500), record("f", "owner"), "f.txt".into(), true);
        let effects = p.take_effects();
        let lines = printed(&effects);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("get: saved f.txt, 3 B: a peer pushed it whole")),
            "{lines:?}"
        );
        assert!(effects.iter().any(|e| matches!(e,
            Effect::CopyOut { name, dest, .. } if name == "f.txt" && dest.path == std::path::Path::new("/tmp/out.txt"))));
        assert!(p.downloads().is_empty());
        assert!(
            !p.is_current(t, attempt),
            "the download's bytes are discarded"
        );
        // The download's own result, if it still comes, changes nothing.
        p.on_fetch_result(
            Time(2_000),
            t,
            attempt,
            FetchResult::Saved {
                local_name: "f (2).txt".into(),
                len: 3,
                verified: true,
            },
        );
        assert!(p.take_effects().is_empty());
        assert_eq!(
            p.local_copy(&"f".into()).map(|(_, l)| l.name.as_str()),
            Some("f.txt")
        );
        // And a second push of a held file is not stored.
        assert!(!p.wants_push(&"f".into(), true));
    }

    #[test]
    fn a_save_reports_the_time_of_its_own_attempt() {
        let (mut p, t, attempt, _) = fetching_f(None);
        p.on_fetch_result(
            Time(1_250),
            t,
            attempt,
            FetchResult::Saved {
                local_name: "f.txt".into(),
                len: 3,
                verified: true,
            },
        );
        let lines = printed(&p.take_effects());
        assert!(
            lines
                .iter()
                .any(|l| l.contains(" in 250 ms (0.0 MB/s) from ")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_kept_unverified_copy_reports_the_time_of_the_attempt_that_sent_it() {
        let (mut p, t, first, _) = fetching_f(None);
        // The first source sends bytes that don't match, in 400 ms...
        p.on_fetch_result(Time(1_400), t, first, FetchResult::Unverified { len: 3 });
        let second = p.take_effects().into_iter().find_map(|e| match e {
            Effect::Fetch { attempt, .. } => Some(attempt),
            _ => None,
        });
        // ...the second fails after 5 s; the first's copy is kept.
        p.on_fetch_result(
            Time(6_400),
            t,
            second.expect("second source tried"),
            FetchResult::Failed("no progress".into()),
        );
        let keep = p.take_effects().into_iter().find_map(|e| match e {
            Effect::KeepUnverified { attempt, .. } => Some(attempt),
            _ => None,
        });
        p.on_fetch_result(
            Time(6_400),
            t,
            keep.expect("the unverified copy is kept"),
            FetchResult::Saved {
                local_name: "f.txt".into(),
                len: 3,
                verified: false,
            },
        );
        let lines = printed(&p.take_effects());
        assert!(
            lines
                .iter()
                .any(|l| l.contains(" in 400 ms (0.0 MB/s) from ") && l.contains("UNVERIFIED")),
            "{lines:?}"
        );
    }
}
