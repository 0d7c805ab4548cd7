//! What the core decided, counted: GOSSIPs left unanswered by a limit and
//! download attempts by outcome. Plain `u64`s the core bumps where it
//! decides; `/metrics` reads them through [`Peer::counters`](super::Peer::counters).
//! Bytes, messages and connections are the driver's (`net::counters`).

use std::collections::BTreeMap;

/// Why a GOSSIP got no GOSSIP_REPLY: the label of
/// `peershare_dropped_total{limit=...}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GossipLimit {
    /// Its id or peerId is longer than we accept.
    Oversized,
    /// Its id was seen already (a flood's copies, our own forwards).
    RepeatedId,
    /// Its sender was answered less than `REPLY_MIN_INTERVAL` ago.
    PeerInterval,
    /// The all-peers reply budget was spent (a flood inventing peerIds).
    ReplyBudget,
}

impl GossipLimit {
    /// Every limit, in the order `/metrics` lists them.
    pub const ALL: [GossipLimit; 4] = [
        GossipLimit::Oversized,
        GossipLimit::RepeatedId,
        GossipLimit::PeerInterval,
        GossipLimit::ReplyBudget,
    ];

    /// The `limit` label.
    pub fn label(self) -> &'static str {
        match self {
            GossipLimit::Oversized => "oversized",
            GossipLimit::RepeatedId => "repeated_id",
            GossipLimit::PeerInterval => "peer_interval",
            GossipLimit::ReplyBudget => "reply_budget",
        }
    }
}

/// The core's counters since start. Read-only outside the core.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// GOSSIPs left unanswered, by limit (indexed as [`GossipLimit::ALL`]).
    gossip_dropped: [u64; 4],
    /// Download attempts started: one per source tried.
    pub downloads_started: u64,
    /// Download attempts that stored a verified copy (an unverified copy
    /// kept at the end was counted as its source's `mismatch`).
    pub downloads_succeeded: u64,
    /// Download attempts that failed, by reason label (a fixed set:
    /// [`FAILURE_LABELS`], from `SourceFailure::label`).
    pub downloads_failed: BTreeMap<&'static str, u64>,
    /// FILE_DATA payload bytes of the downloads stored.
    pub downloaded_bytes: u64,
    /// File bytes not asked for again because a download resumed from the
    /// bytes it kept (a cut, or a restart).
    pub resumed_bytes: u64,
}

impl Counters {
    /// GOSSIPs left unanswered by `limit`.
    pub fn gossip_dropped(&self, limit: GossipLimit) -> u64 {
        self.gossip_dropped[limit as usize]
    }

    pub(super) fn drop_gossip(&mut self, limit: GossipLimit) {
        self.gossip_dropped[limit as usize] += 1;
    }

    pub(super) fn download_failed(&mut self, why: &super::SourceFailure) {
        *self.downloads_failed.entry(why.label()).or_default() += 1;
    }
}

/// The reasons a source can fail for, as `reason` labels.
pub const FAILURE_LABELS: [&str; 11] = [
    "connect",
    "not_found",
    "timeout",
    "stalled",
    "closed",
    "wrong_size",
    "mismatch",
    "too_large",
    "malformed",
    "disk",
    "untracked",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_gossip_is_counted_by_its_limit_only() {
        let mut c = Counters::default();
        c.drop_gossip(GossipLimit::RepeatedId);
        c.drop_gossip(GossipLimit::RepeatedId);
        c.drop_gossip(GossipLimit::ReplyBudget);
        assert_eq!(c.gossip_dropped(GossipLimit::RepeatedId), 2);
        assert_eq!(c.gossip_dropped(GossipLimit::ReplyBudget), 1);
        assert_eq!(c.gossip_dropped(GossipLimit::Oversized), 0);
    }
}
