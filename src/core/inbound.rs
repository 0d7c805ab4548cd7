//! Messages from other peers: GOSSIP (fresh or repeated), GOSSIP_REPLY,
//! ANNOUNCE and DELETE, and the tracking of the peers that send them.
//! Bytes (GET_FILE, FILE_DATA) are the driver's.

use super::counters::GossipLimit;
use super::fetching::DownloadEnd;
use super::gossip::MAX_GOSSIP_ID_LEN;
use super::membership::{Tracked, MAX_PEER_ID_LEN};
use super::view::EventKind;
use super::{Effect, Peer, Time, Timer, GOSSIP_FANOUT, REPLY_MIN_INTERVAL, REPLY_REORDER_WINDOW};
use crate::ids::{FileId, PeerAddr, PeerId};
use crate::protocol::{FileRecord, Message};
use log::{debug, info, warn};
use std::time::Duration;

impl Peer {
    /// Tracks a peer that told us where it listens; logs joins and moves.
    pub(super) fn track(&mut self, now: Time, id: &PeerId, host: &str, port: u16) -> Tracked {
        let (what, evicted) = self.members.track(now, id, PeerAddr::new(host, port));
        match &what {
            Tracked::New => {
                let text = format!("peer {id} ({host}:{port}) joined");
                info!("{text}");
                self.event(now, EventKind::PeerJoined, text);
            }
            Tracked::Moved => info!("peer {id} ({host}:{port}) moved to this address"),
            Tracked::Refreshed => {}
        }
        if let Some((old, addr)) = evicted {
            info!("peer {old} ({addr}) dropped to make room (peer table full)");
            self.catalog.forget_holder(&old);
        }
        what
    }

    pub(super) fn valid_peer_id(&self, id: &PeerId) -> bool {
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
                ranges,
            } => {
                let sender = peer_id.clone();
                self.on_gossip(now, host, port, id, peer_id, ranges);
                // Only a yes counts: R-style peers re-mint the GOSSIPs they
                // forward without our key, so a no may not be the sender's.
                if ranges {
                    self.members.note_ranges(&sender, true);
                }
            }
            Message::GossipReply {
                host,
                port,
                peer_id,
                files,
                ranges,
            } => {
                self.on_gossip_reply(now, &host, port, &peer_id, &files);
                // Its own reply, never forwarded: it says both yes and no.
                self.members.note_ranges(&peer_id, ranges);
            }
            Message::Announce { from, file } => self.on_announce(now, &from, &file),
            Message::Delete { from, file_id } => self.on_delete(now, from, file_id),
            Message::GetFile { .. } | Message::FileData(_) => {
                // Served and received by the driver (they carry bytes).
                debug!("core ignores {}", msg.kind());
            }
        }
    }

    /// A GOSSIP_REPLY: its sender is alive at `host:port` and holds
    /// `files` (all of them, unless it announced one just now).
    fn on_gossip_reply(
        &mut self,
        now: Time,
        host: &str,
        port: u16,
        peer_id: &PeerId,
        files: &[FileRecord],
    ) {
        if peer_id == self.me() || !self.valid_peer_id(peer_id) {
            return;
        }
        self.track(now, peer_id, host, port);
        let mut announced_just_now = false;
        if let Some(p) = self.members.record_reply(now, peer_id) {
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
            for r in files {
                changed |= self.catalog.merge(r, Some(peer_id));
            }
            changed
        } else {
            self.catalog.set_holdings(peer_id, files)
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

    /// An ANNOUNCE: `from` now holds `file`.
    fn on_announce(&mut self, now: Time, from: &PeerId, file: &FileRecord) {
        if let Some(p) = self.members.get_mut(from) {
            p.last_seen = now;
            p.last_announced = Some(now);
        }
        if from == self.me() {
            return;
        }
        if self.catalog.merge(file, Some(from)) {
            debug!("{} announced {}", self.name_peer(from), file.file_name);
            self.effects.push(Effect::Persist);
        }
    }

    /// A GOSSIP: a fresh id is answered and forwarded (each at most so
    /// often per peer and within the all-peers budgets); a seen one is
    /// `on_repeated_gossip`'s.
    pub(super) fn on_gossip(
        &mut self,
        now: Time,
        host: String,
        port: u16,
        id: String,
        peer_id: PeerId,
        ranges: bool,
    ) {
        if id.len() > MAX_GOSSIP_ID_LEN || !self.valid_peer_id(&peer_id) {
            debug!("GOSSIP with oversized id or peerId dropped");
            self.counters.drop_gossip(GossipLimit::Oversized);
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
        let (reply, forward) = self.may_reply_and_forward(now, &peer_id);
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
                // Forwarded unchanged: the flag is the originator's.
                ranges,
            };
            self.forward(now, &msg, &peer_id);
        }
    }

    /// Whether a fresh GOSSIP from `peer_id` gets our reply and is
    /// forwarded: each at most so often per peer, and within the
    /// all-peers budgets (taken here, with the per-peer times).
    fn may_reply_and_forward(&mut self, now: Time, peer_id: &PeerId) -> (bool, bool) {
        let forward_window = self.cfg.gossip_interval.mul_f64(0.75);
        let (reply_budget, forward_budget) = (&mut self.reply_budget, &mut self.forward_budget);
        match self.members.get_mut(peer_id) {
            Some(p) => {
                let due = p
                    .last_replied
                    .is_none_or(|t| now.since(t) >= REPLY_MIN_INTERVAL);
                let reply = due && reply_budget.take(now);
                if !reply {
                    let limit = if due {
                        GossipLimit::ReplyBudget
                    } else {
                        GossipLimit::PeerInterval
                    };
                    self.counters.drop_gossip(limit);
                }
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
        }
    }

    /// Forwards `msg`, a fresh GOSSIP from `origin`, to `GOSSIP_FANOUT`
    /// other tracked peers at random.
    fn forward(&mut self, now: Time, msg: &Message, origin: &PeerId) {
        // A peer that never answered gets a forward only if it may be
        // asked (see `PeerState::may_be_asked`), and that uses its one
        // ask: otherwise, in a small network, a few invented peerIds
        // got most forwards and their address one per GOSSIP we saw.
        let any = self.asks_unanswered(now);
        let again = self.ask_again();
        let chosen = self
            .members
            .random_peers(&mut self.rng, GOSSIP_FANOUT, &[origin], |p| {
                any || p.may_be_asked(now, again)
            });
        for (id, _) in &chosen {
            self.members.mark_asked(now, id);
        }
        let targets = chosen.into_iter().map(|(_, to)| to).collect();
        self.send_to_all(targets, msg);
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
    pub(super) fn on_repeated_gossip(
        &mut self,
        now: Time,
        host: &str,
        port: u16,
        peer_id: &PeerId,
    ) {
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
        if !reply {
            self.counters.drop_gossip(GossipLimit::RepeatedId);
        }
        if reply {
            let msg = self.own_reply();
            self.effects.push(Effect::Send {
                to: PeerAddr::new(host, port),
                msg,
            });
        }
    }

    pub(super) fn on_delete(&mut self, now: Time, from: PeerId, file_id: FileId) {
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
                    debug!(
                        "DELETE of unknown file {file_id} from {}",
                        self.name_peer(&from)
                    );
                    return;
                }
            },
        };
        if record.file_owner != from {
            warn!(
                "DELETE of {} ({}) from {} ignored: the owner is {}",
                record.file_name,
                file_id,
                self.name_peer(&from),
                self.name_peer(&record.file_owner)
            );
            return;
        }
        if let Some(e) = self.catalog.remove(&file_id) {
            let line = format!(
                "file {} ({file_id}) deleted by its owner {}",
                e.record.file_name,
                self.name_peer(&from)
            );
            info!("{line}");
            self.event(now, EventKind::Deleted, line);
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
}
