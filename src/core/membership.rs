//! Who we track: peers by peerId, their address, when we last heard from
//! them, and the per-peer flood limits.
//!
//! Bounded: at `MAX_PEERS`, a new peer evicts the one silent the longest,
//! taken first from the peers that never answered one of our GOSSIPs.
//!
//! Also which peers have *answered* us at the address they claim (see
//! [`PeerState::answered`]), remembered past expiry for at most
//! `MAX_PEERS` peerIds: a GOSSIP names any host:port, so a peer that never
//! answered gets at most one of the messages nobody asked for (a round's
//! direct GOSSIP, a retransmission, a catch-up).

use crate::core::time::Time;
use crate::ids::{PeerAddr, PeerId};
use rand::seq::SliceRandom;
use rand::RngCore;
use std::collections::{BTreeMap, HashMap};

/// Most peers tracked at once. A flood of invented peerIds evicts the
/// longest-silent entries, never grows the table.
pub const MAX_PEERS: usize = 1024;

/// Longest peerId accepted; longer ones are refused (bounds the table).
pub const MAX_PEER_ID_LEN: usize = 256;

/// One tracked peer.
#[derive(Clone, Debug)]
pub struct PeerState {
    /// Where it listens, as it last advertised.
    pub addr: PeerAddr,
    /// When we last heard from it.
    pub last_seen: Time,
    /// When we last answered one of its GOSSIPs.
    pub last_replied: Option<Time>,
    /// When we last forwarded one of its GOSSIPs.
    pub last_forwarded: Option<Time>,
    /// When we started tracking it (this time: an expiry starts over).
    pub tracked_since: Time,
    /// When its last GOSSIP_REPLY (the files it holds) reached us.
    pub last_files: Option<Time>,
    /// When its last ANNOUNCE (`from` = it) reached us.
    pub last_announced: Option<Time>,
    /// It sent us a GOSSIP_REPLY while tracked at `addr`, now or before it
    /// last expired: the address really leads to it. A GOSSIP's host:port
    /// is only a claim (anyone can name someone else's), so retransmissions
    /// and catch-ups, which nobody asked for, go only to answered peers;
    /// the GOSSIP_REPLY to the GOSSIP itself is the one message an
    /// unanswered claim gets. Cleared when the peer moves to an address it
    /// never answered from.
    pub answered: bool,
    /// When our GOSSIP last went straight to it (a round's target, a
    /// forward, a retransmission or a catch-up) since it was tracked at
    /// `addr`.
    pub asked: Option<Time>,
    /// It serves byte ranges: its last GOSSIP_REPLY said so, or a GOSSIP
    /// naming it did since.
    pub ranges: bool,
}

impl PeerState {
    /// Whether an unsolicited GOSSIP of ours may go straight to it now:
    /// always once it answered at this address; else once per `again`
    /// (longer than a peer stays tracked without a new GOSSIP). An
    /// invented peerId naming someone else's host:port then costs that
    /// address our GOSSIP_REPLY and one GOSSIP (it expires before `again`
    /// unless GOSSIPed again), not one per retransmission pass and round
    /// for as long as it stays tracked; a real peer whose replies were all
    /// lost is asked again, so it can't stay unanswered by everyone (a
    /// peer down through everyone's start window would otherwise never be
    /// asked again, and its files never spread).
    pub fn may_be_asked(&self, now: Time, again: std::time::Duration) -> bool {
        self.answered || self.asked.is_none_or(|t| now.since(t) >= again)
    }
}

/// What `track` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// A peer we didn't know.
    New,
    /// Known, same address.
    Refreshed,
    /// Known peerId at a new host:port.
    Moved,
}

/// The membership table. A `BTreeMap`, so iteration is in peerId order:
/// a seeded RNG then picks the same peers every run without sorting the
/// table first (sorting a cloned table on every forward was most of the
/// simulator's time at 100 peers).
#[derive(Debug, Default)]
pub struct Membership {
    peers: BTreeMap<PeerId, PeerState>,
    /// The tracked peerIds, sorted: random choices pick indices here, so a
    /// forward (the most frequent operation) does not walk the table.
    ids: Vec<PeerId>,
    /// Bumped when a peer is added, moves or is dropped (not when it is
    /// merely heard from), so a view rendered before can tell.
    changes: u64,
    /// Where each peerId last answered us, and when: survives expiry, so
    /// a peer found again after a partition or a restart is known to be
    /// real. At most `MAX_PEERS` entries, the oldest answer forgotten
    /// first.
    answered_at: HashMap<PeerId, (PeerAddr, Time)>,
    /// The peerId last tracked at each address, so a log line can name an
    /// address in O(1) (a flood names thousands). Several ids may claim one
    /// address: the latest wins, and the address goes unnamed once that
    /// one is dropped. At most one entry per tracked peer.
    by_addr: HashMap<PeerAddr, PeerId>,
}

impl Membership {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `id` is alive at `addr` now. Returns what changed, and
    /// the peer evicted to make room (with its address, for the log), if
    /// any.
    pub fn track(
        &mut self,
        now: Time,
        id: &PeerId,
        addr: PeerAddr,
    ) -> (Tracked, Option<(PeerId, PeerAddr)>) {
        let answered_here = self.answered_at.get(id).is_some_and(|(a, _)| *a == addr);
        if let Some(p) = self.peers.get_mut(id) {
            p.last_seen = now;
            if p.addr != addr {
                let old = std::mem::replace(&mut p.addr, addr.clone());
                if self.by_addr.get(&old) == Some(id) {
                    self.by_addr.remove(&old);
                }
                self.by_addr.insert(addr, id.clone());
                self.changes += 1;
                p.answered = answered_here;
                p.asked = None;
                return (Tracked::Moved, None);
            }
            return (Tracked::Refreshed, None);
        }
        let mut evicted = None;
        self.changes += 1;
        if self.peers.len() >= MAX_PEERS {
            if let Some(oldest) = self.eviction_candidate() {
                if let Some(gone) = self.peers.remove(&oldest) {
                    self.unindex(&gone.addr, &oldest);
                    evicted = Some((oldest.clone(), gone.addr));
                }
                self.forget_id(&oldest);
            }
        }
        if let Err(at) = self.ids.binary_search(id) {
            self.ids.insert(at, id.clone());
        }
        self.by_addr.insert(addr.clone(), id.clone());
        self.peers.insert(
            id.clone(),
            PeerState {
                addr,
                last_seen: now,
                last_replied: None,
                last_forwarded: None,
                tracked_since: now,
                last_files: None,
                last_announced: None,
                answered: answered_here,
                asked: None,
                ranges: false,
            },
        );
        (Tracked::New, evicted)
    }

    /// Records that our GOSSIP went straight to `id` (see
    /// [`PeerState::may_be_asked`]).
    pub fn mark_asked(&mut self, now: Time, id: &PeerId) {
        if let Some(p) = self.peers.get_mut(id) {
            p.asked = Some(now);
        }
    }

    /// Records whether `id`, if tracked, serves byte ranges, as its
    /// GOSSIP_REPLY (yes or no: a peerId taken over by a Python peer stops
    /// claiming it) or a GOSSIP naming it (yes only) said.
    pub fn note_ranges(&mut self, id: &PeerId, ranges: bool) {
        if let Some(p) = self.peers.get_mut(id) {
            p.ranges = ranges;
        }
    }

    /// Records that `id`, tracked, sent us its GOSSIP_REPLY now (its files
    /// and the proof that its address leads to it); returns its state.
    pub fn record_reply(&mut self, now: Time, id: &PeerId) -> Option<&mut PeerState> {
        let p = self.peers.get_mut(id)?;
        p.last_files = Some(now);
        p.answered = true;
        if !self.answered_at.contains_key(id) && self.answered_at.len() >= MAX_PEERS {
            let oldest = self
                .answered_at
                .iter()
                .min_by(|a, b| (a.1).1.cmp(&(b.1).1).then(a.0.cmp(b.0)))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.answered_at.remove(&k);
            }
        }
        self.answered_at.insert(id.clone(), (p.addr.clone(), now));
        self.peers.get_mut(id)
    }

    fn forget_id(&mut self, id: &PeerId) {
        if let Ok(at) = self.ids.binary_search(id) {
            self.ids.remove(at);
        }
    }

    /// The peer a new one replaces when the table is full: the longest
    /// silent of those that never sent us a GOSSIP_REPLY, else the longest
    /// silent of all. A GOSSIP names any peerId and any host:port, so a
    /// flood inventing a new peerId per message (1 000 a second is easy)
    /// would otherwise evict every real peer within a second or two (real
    /// peers speak about once a gossip interval, so they are the longest
    /// silent), and with them every file's holders. A peer that answered
    /// one of our GOSSIPs listens where it says; an invented one never
    /// answers.
    fn eviction_candidate(&self) -> Option<PeerId> {
        let longest_silent = |unproven_only: bool| {
            self.peers
                .iter()
                .filter(|(_, p)| !unproven_only || p.last_files.is_none())
                .min_by(|a, b| a.1.last_seen.cmp(&b.1.last_seen).then(a.0.cmp(b.0)))
                .map(|(id, _)| id.clone())
        };
        longest_silent(true).or_else(|| longest_silent(false))
    }

    /// Refreshes last-seen of a known peer; unknown peers are not added
    /// (we don't know where they listen).
    pub fn touch(&mut self, now: Time, id: &PeerId) -> bool {
        match self.peers.get_mut(id) {
            Some(p) => {
                p.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// The state of one peer.
    pub fn get(&self, id: &PeerId) -> Option<&PeerState> {
        self.peers.get(id)
    }

    /// Mutable state of one peer (flood limits).
    pub fn get_mut(&mut self, id: &PeerId) -> Option<&mut PeerState> {
        self.peers.get_mut(id)
    }

    /// Whether `id` is tracked.
    pub fn contains(&self, id: &PeerId) -> bool {
        self.peers.contains_key(id)
    }

    /// How many times a peer was added, moved or dropped (never goes back).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Number of tracked peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The tracked peer listening at `addr`, if the address index names
    /// one (the latest to claim it).
    pub fn id_at(&self, addr: &PeerAddr) -> Option<&PeerId> {
        self.by_addr
            .get(addr)
            .filter(|id| self.peers.get(*id).is_some_and(|p| p.addr == *addr))
    }

    /// Forgets that `id` was at `addr` (it left), unless a later peer
    /// claimed the address since.
    fn unindex(&mut self, addr: &PeerAddr, id: &PeerId) {
        if self.by_addr.get(addr) == Some(id) {
            self.by_addr.remove(addr);
        }
    }

    /// Drops every peer silent for longer than `timeout`; returns them with
    /// their addresses (for the log).
    pub fn expire(&mut self, now: Time, timeout: std::time::Duration) -> Vec<(PeerId, PeerAddr)> {
        let dead: Vec<(PeerId, PeerAddr)> = self
            .peers
            .iter()
            .filter(|(_, p)| now.since(p.last_seen) > timeout)
            .map(|(id, p)| (id.clone(), p.addr.clone()))
            .collect();
        for (id, addr) in &dead {
            self.peers.remove(id);
            self.unindex(addr, id);
            self.forget_id(id);
        }
        self.changes += u64::from(!dead.is_empty());
        dead
    }

    /// Up to `n` random tracked peers that `eligible` accepts, excluding
    /// `except`. Indices into the sorted ids, so a seeded RNG gives the
    /// same choice every run. Only `n + except.len()` random indices are
    /// drawn (in random order) and checked: the first `n` accepted ids
    /// of a uniformly random order are a uniform choice, and this runs on
    /// every forward; if too few of them pass, the whole table is walked.
    pub fn random_peers(
        &self,
        rng: &mut impl RngCore,
        n: usize,
        except: &[&PeerId],
        eligible: impl Fn(&PeerState) -> bool,
    ) -> Vec<(PeerId, PeerAddr)> {
        let ok = |id: &PeerId| !except.contains(&id) && self.peers.get(id).is_some_and(&eligible);
        let m = (n + except.len()).min(self.ids.len());
        let mut out: Vec<&PeerId> = rand::seq::index::sample(rng, self.ids.len(), m)
            .into_iter()
            .map(|k| &self.ids[k])
            .filter(|id| ok(id))
            .take(n)
            .collect();
        if out.len() < n && m < self.ids.len() {
            let mut rest: Vec<&PeerId> = self
                .ids
                .iter()
                .filter(|id| ok(id) && !out.contains(id))
                .collect();
            let k = (n - out.len()).min(rest.len());
            let (chosen, _) = rest.partial_shuffle(rng, k);
            out.extend(chosen.iter().copied());
        }
        out.into_iter()
            .filter_map(|id| self.peers.get(id).map(|p| (id.clone(), p.addr.clone())))
            .collect()
    }

    /// Like [`Membership::random_peers`], but by rank: peers of rank 0
    /// first (in random order), then rank 1, and so on.
    pub fn random_peers_ranked(
        &self,
        rng: &mut impl RngCore,
        n: usize,
        rank: impl Fn(&PeerState) -> u8,
    ) -> Vec<(PeerId, PeerAddr)> {
        let mut all: Vec<(u8, &PeerId, &PeerState)> =
            self.peers.iter().map(|(id, p)| (rank(p), id, p)).collect();
        // Stable: within a rank the map's order, then shuffled per rank.
        all.sort_by_key(|e| e.0);
        let mut out = Vec::with_capacity(n);
        for group in all.chunk_by_mut(|a, b| a.0 == b.0) {
            if out.len() >= n {
                break;
            }
            let k = (n - out.len()).min(group.len());
            let (chosen, _) = group.partial_shuffle(rng, k);
            out.extend(
                chosen
                    .iter()
                    .map(|(_, id, p)| ((*id).clone(), p.addr.clone())),
            );
        }
        out
    }

    /// Every tracked peer, sorted by id.
    pub fn all(&self) -> Vec<(&PeerId, &PeerState)> {
        self.peers.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_peer_at_new_address_moves() {
        let mut m = Membership::new();
        let id = PeerId::from("p");
        assert_eq!(m.track(Time(0), &id, PeerAddr::new("a", 1)).0, Tracked::New);
        assert_eq!(
            m.track(Time(5), &id, PeerAddr::new("a", 1)).0,
            Tracked::Refreshed
        );
        assert_eq!(
            m.track(Time(9), &id, PeerAddr::new("b", 2)).0,
            Tracked::Moved
        );
        assert_eq!(m.get(&id).map(|p| p.addr.port), Some(2));
    }

    #[test]
    fn an_address_names_the_peer_last_tracked_there_while_it_stays() {
        let mut m = Membership::new();
        let (a, b) = (PeerAddr::new("h", 1), PeerAddr::new("h", 2));
        m.track(Time(0), &"p".into(), a.clone());
        assert_eq!(m.id_at(&a), Some(&PeerId::from("p")));
        // p moves: its old address names no one.
        m.track(Time(1), &"p".into(), b.clone());
        assert_eq!(m.id_at(&a), None);
        assert_eq!(m.id_at(&b), Some(&PeerId::from("p")));
        // q claims the same address: the latest wins; p's expiry leaves it.
        m.track(Time(50_000), &"q".into(), b.clone());
        assert_eq!(m.id_at(&b), Some(&PeerId::from("q")));
        m.expire(Time(61_000), Duration::from_secs(60));
        assert_eq!(m.id_at(&b), Some(&PeerId::from("q")));
        m.expire(Time(200_000), Duration::from_secs(60));
        assert_eq!(m.id_at(&b), None);
        assert!(m.by_addr.is_empty());
    }

    #[test]
    fn silent_peers_expire_and_fresh_ones_stay() {
        let mut m = Membership::new();
        m.track(Time(0), &"old".into(), PeerAddr::new("h", 1));
        m.track(Time(50_000), &"new".into(), PeerAddr::new("h", 2));
        let dead = m.expire(Time(61_000), Duration::from_secs(60));
        assert_eq!(dead, vec![(PeerId::from("old"), PeerAddr::new("h", 1))]);
        assert!(m.contains(&"new".into()));
    }

    #[test]
    fn table_never_grows_past_its_bound() {
        let mut m = Membership::new();
        for i in 0..(MAX_PEERS + 10) {
            m.track(
                Time(i as u64),
                &PeerId(format!("p{i}")),
                PeerAddr::new("h", 1),
            );
        }
        assert_eq!(m.len(), MAX_PEERS);
        assert!(!m.contains(&"p0".into()));
    }

    #[test]
    fn a_flood_of_new_peer_ids_evicts_peers_that_never_answered_first() {
        let mut m = Membership::new();
        // Ten peers that answered one of our GOSSIPs, long ago.
        for i in 0..10 {
            let id = PeerId(format!("real{i}"));
            m.track(Time(0), &id, PeerAddr::new("h", 1));
            if let Some(p) = m.get_mut(&id) {
                p.last_files = Some(Time(0));
            }
        }
        // 5 000 invented peerIds, each heard from after them.
        for i in 0..5_000u64 {
            let id = PeerId(format!("fake{i}"));
            let (_, evicted) = m.track(Time(1 + i), &id, PeerAddr::new("h", 2));
            assert!(
                evicted
                    .as_ref()
                    .is_none_or(|(e, _)| e.0.starts_with("fake")),
                "{evicted:?} evicted"
            );
        }
        assert_eq!(m.len(), MAX_PEERS);
        for i in 0..10 {
            assert!(m.contains(&PeerId(format!("real{i}"))), "real{i} evicted");
        }
        // The newest invented ones stayed: the oldest were replaced.
        assert!(m.contains(&"fake4999".into()));
        assert!(!m.contains(&"fake0".into()));
        // With only proven peers left, the longest silent goes.
        let mut full = Membership::new();
        for i in 0..MAX_PEERS as u64 {
            let id = PeerId(format!("q{i}"));
            full.track(Time(i), &id, PeerAddr::new("h", 1));
            if let Some(p) = full.get_mut(&id) {
                p.last_files = Some(Time(i));
            }
        }
        let (_, evicted) = full.track(Time(5_000), &"late".into(), PeerAddr::new("h", 3));
        assert_eq!(evicted, Some((PeerId::from("q0"), PeerAddr::new("h", 1))));
    }

    #[test]
    fn an_answer_is_remembered_past_expiry_at_that_address_only() {
        let mut m = Membership::new();
        let q = PeerId::from("q");
        m.track(Time(0), &q, PeerAddr::new("h", 1));
        assert_eq!(m.get(&q).map(|p| p.answered), Some(false));
        m.record_reply(Time(10), &q);
        assert_eq!(m.get(&q).map(|p| p.answered), Some(true));
        m.expire(Time(100_000), Duration::from_secs(60));
        assert!(m.is_empty());
        m.track(Time(100_000), &q, PeerAddr::new("h", 1));
        assert_eq!(m.get(&q).map(|p| p.answered), Some(true));
        // A claim of a new address is not proof that it leads to q.
        m.track(Time(100_001), &q, PeerAddr::new("victim", 2));
        assert_eq!(m.get(&q).map(|p| p.answered), Some(false));
        let r = PeerId::from("r");
        m.track(Time(100_002), &r, PeerAddr::new("h", 1));
        assert_eq!(m.get(&r).map(|p| p.answered), Some(false));
    }

    #[test]
    fn remembered_answers_stay_under_their_bound_and_the_oldest_is_forgotten() {
        let mut m = Membership::new();
        for i in 0..(MAX_PEERS as u64 + 50) {
            let id = PeerId(format!("p{i}"));
            m.track(Time(i), &id, PeerAddr::new("h", 1));
            m.record_reply(Time(i), &id);
        }
        assert_eq!(m.answered_at.len(), MAX_PEERS);
        assert!(!m.answered_at.contains_key(&PeerId::from("p0")));
        assert!(m.answered_at.contains_key(&PeerId::from("p1073")));
    }

    #[test]
    fn a_peer_that_never_answered_may_be_asked_once_per_period_and_one_that_did_always() {
        let mut m = Membership::new();
        let q = PeerId::from("q");
        let again = Duration::from_secs(60);
        m.track(Time(0), &q, PeerAddr::new("h", 1));
        let may =
            |m: &Membership, at: u64| m.get(&q).is_some_and(|p| p.may_be_asked(Time(at), again));
        assert!(may(&m, 0));
        m.mark_asked(Time(1_000), &q);
        assert!(!may(&m, 30_000));
        assert!(may(&m, 61_000), "asked again after the period");
        m.record_reply(Time(62_000), &q);
        m.mark_asked(Time(62_000), &q);
        assert!(may(&m, 62_001), "answered: always");
    }
}
