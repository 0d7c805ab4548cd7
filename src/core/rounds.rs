//! Our own gossip: the periodic round, its retransmission passes, the
//! catch-up for peers found between rounds, the well-known peers a round
//! knocks on, and the sweep that drops silent peers. What arrives from
//! others is `inbound`'s.

use super::membership;
use super::{
    gossip, Effect, Peer, Time, Timer, CATCH_UP_MAX_TARGETS, GOSSIP_FANOUT,
    REPEAT_REPLY_MIN_INTERVAL, RETRANSMIT_DELAY, RETRANSMIT_MAX_TARGETS, RETRANSMIT_PASSES,
    SEEN_ID_INTERVALS, START_WINDOW_INTERVALS,
};
use crate::ids::{PeerAddr, PeerId};
use crate::protocol::Message;
use log::{debug, info};
use rand::seq::SliceRandom;
use std::time::Duration;

impl Peer {
    /// Whether peers that never answered us may be asked again and again
    /// (retransmissions, catch-ups, round targets), not only once (see
    /// `PeerState::may_be_asked`): only in the first
    /// `START_WINDOW_INTERVALS` after our start. A restart forgets who
    /// answered; without this, a restarted peer whose first replies were
    /// lost waited on floods alone for them (measured on
    /// tests/sim_faults.rs: 9 of 60 seeds left a file unknown 3 intervals
    /// after the last heal). An attacker can't choose when we start.
    pub(super) fn asks_unanswered(&self, now: Time) -> bool {
        self.started_at
            .is_some_and(|t| now.since(t) < self.cfg.gossip_interval * START_WINDOW_INTERVALS)
    }

    /// How long after asking a peer that never answered we may ask it
    /// again: longer than a peer stays tracked without a new GOSSIP (peer
    /// timeout, then the sweep), so an invented peerId GOSSIPed once is
    /// asked once.
    pub(super) fn ask_again(&self) -> Duration {
        self.cfg.peer_timeout + self.cfg.gossip_interval
    }

    pub(super) fn retransmit_delay(&self) -> Duration {
        (self.cfg.gossip_interval / 6).min(RETRANSMIT_DELAY)
    }

    pub(super) fn repeat_reply_min_interval(&self) -> Duration {
        (self.cfg.gossip_interval / 10).min(REPEAT_REPLY_MIN_INTERVAL)
    }

    /// The tracked peers that `wanted` picks and that may be asked now (see
    /// `PeerState::may_be_asked`; any of them in our start window), in
    /// table order.
    fn askable(
        &self,
        now: Time,
        wanted: impl Fn(&membership::PeerState) -> bool,
    ) -> Vec<(PeerId, PeerAddr)> {
        let any = self.asks_unanswered(now);
        let again = self.ask_again();
        self.members
            .all()
            .into_iter()
            .filter(|(_, p)| (any || p.may_be_asked(now, again)) && wanted(p))
            .map(|(id, p)| (id.clone(), p.addr.clone()))
            .collect()
    }

    /// Sends `msg` to each of `targets` on its own connection.
    pub(super) fn send_to_all(&mut self, targets: Vec<PeerAddr>, msg: &Message) {
        for to in targets {
            self.effects.push(Effect::Send {
                to,
                msg: msg.clone(),
            });
        }
    }

    /// Sends `msg` (our round's GOSSIP) straight to at most `max` peers of
    /// `targets`, a random subset when there are more.
    pub(super) fn resend_round(
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
    pub(super) fn retransmit(&mut self, now: Time, round: Time, pass: u8) {
        if self.last_round != Some(round) {
            return;
        }
        let Some(msg) = self.round_gossip.clone() else {
            return;
        };
        let targets = self.askable(now, |p| p.last_files.is_none_or(|f| f <= round));
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
            self.send_to_all(knock, &msg);
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
            self.schedule_retransmit(now, round, pass + 1);
        }
    }

    /// A GOSSIP made us track a peer we did not track: we know where it is
    /// but not what it holds, which we learn only from its GOSSIP_REPLY to
    /// one of our GOSSIPs. Asks for a catch-up soon (at most two per gossip
    /// interval) instead of waiting for our next round's flood to reach
    /// it.
    pub(super) fn want_catch_up(&mut self, now: Time) {
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
    pub(super) fn catch_up(&mut self, now: Time) {
        self.catch_up_pending = false;
        let Some(msg) = self.round_gossip.clone() else {
            return;
        };
        let window = self.cfg.gossip_interval * 2;
        let targets = self.askable(now, |p| {
            p.last_files.is_none() && now.since(p.tracked_since) <= window
        });
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
    pub(super) fn own_reply(&self) -> Message {
        Message::GossipReply {
            host: self.cfg.addr.host.clone(),
            port: self.cfg.addr.port,
            peer_id: self.cfg.peer_id.clone(),
            files: self.catalog.local_records(self.cfg.share_unverified),
            ranges: true,
        }
    }

    /// A GOSSIP of ours with a fresh id (remembered, so echoes are ignored).
    pub(super) fn own_gossip(&mut self, now: Time) -> Message {
        let id = gossip::uuid4(&mut self.rng);
        self.seen.insert(now, &id);
        Message::Gossip {
            host: self.cfg.addr.host.clone(),
            port: self.cfg.addr.port,
            id,
            peer_id: self.cfg.peer_id.clone(),
            ranges: true,
        }
    }

    /// The well-known peers, other than us, at whose address we track no
    /// one.
    pub(super) fn untracked_well_known(&self) -> Vec<PeerAddr> {
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
    pub(super) fn well_known_targets(&mut self, chosen: &[PeerAddr]) -> Vec<PeerAddr> {
        let mut wk = self.untracked_well_known();
        wk.retain(|a| !chosen.contains(a));
        if self.members.is_empty() {
            wk
        } else {
            wk.choose(&mut self.rng).cloned().into_iter().collect()
        }
    }

    /// A periodic round: a fresh GOSSIP to `GOSSIP_FANOUT` tracked peers
    /// (see `round_targets`) and a well-known one, then the next round and
    /// the first retransmission pass are scheduled.
    pub(super) fn gossip_round(&mut self, now: Time) {
        let msg = self.own_gossip(now);
        self.round_gossip = Some(msg.clone());
        let previous = self.last_round.replace(now);
        let mut targets = self.round_targets(now, previous);
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
        self.send_to_all(targets, &msg);
        let next = now.plus(self.cfg.gossip_interval);
        self.schedule(next, Timer::Gossip);
        if RETRANSMIT_PASSES > 0 {
            self.schedule_retransmit(now, now, 1);
        }
    }

    /// Schedules pass `pass` of the retransmission of the round that began
    /// at `round`, one retransmission delay from `now`.
    fn schedule_retransmit(&mut self, now: Time, round: Time, pass: u8) {
        let at = now.plus(self.retransmit_delay());
        self.schedule(at, Timer::Retransmit { round, pass });
    }

    /// The tracked peers a round's GOSSIP goes to directly (none while we
    /// track no one), each marked as asked. `previous` is when the round
    /// before began.
    fn round_targets(&mut self, now: Time, previous: Option<Time>) -> Vec<PeerAddr> {
        if self.members.is_empty() {
            return Vec::new();
        }
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
    }

    pub(super) fn sweep(&mut self, now: Time) {
        // Seen ids are kept for SEEN_ID_INTERVALS gossip intervals, well past
        // a round's last retransmission and catch-up (see `SeenCache::expire`).
        self.seen
            .expire(now, self.cfg.gossip_interval * SEEN_ID_INTERVALS);
        let dead = self.members.expire(now, self.cfg.peer_timeout);
        for (p, addr) in &dead {
            let line = format!(
                "peer {p} ({addr}) dropped: silent for more than {:.1} s",
                self.cfg.peer_timeout.as_secs_f64()
            );
            info!("{line}");
            self.event(now, super::view::EventKind::PeerDropped, line);
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
}
