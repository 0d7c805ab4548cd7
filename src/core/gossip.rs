//! Gossip dedupe: which GOSSIP ids we have seen, with a fixed bound; and
//! the token bucket behind the all-peers limits on answers and forwards.
//!
//! Who to reply to and forward to is decided in `core::Peer`, with per-peer
//! flood limits kept in the membership table.

use crate::core::time::Time;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// How many GOSSIP ids are remembered. At one gossip per peer per 30 s this
/// covers thousands of peers for several rounds; a flood of fresh ids only
/// evicts old ones, so memory stays `SEEN_CAPACITY * MAX_GOSSIP_ID_LEN`.
pub const SEEN_CAPACITY: usize = 8192;

/// Longer GOSSIP ids (a uuid4 is 36) are refused, which bounds the cache.
pub const MAX_GOSSIP_ID_LEN: usize = 128;

/// A bounded set of seen ids; the oldest is evicted first.
#[derive(Debug)]
pub struct SeenCache {
    // One allocation per id, shared by the set and the eviction order
    // (every GOSSIP a peer receives goes through `insert`).
    set: HashSet<Arc<str>>,
    /// Each id with when it was first seen, oldest first.
    order: VecDeque<(Arc<str>, Time)>,
    capacity: usize,
}

impl SeenCache {
    /// An empty cache holding at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`, first seen at `now`; returns `false` if it was
    /// already there.
    pub fn insert(&mut self, now: Time, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some((old, _)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        let id: Arc<str> = Arc::from(id);
        self.set.insert(Arc::clone(&id));
        self.order.push_back((id, now));
        true
    }

    /// Forgets the ids first seen more than `age` before `now`, and gives
    /// back the spare room once the cache is mostly empty: after a flood
    /// of fresh ids, its memory (about 100 bytes an id, 8192 at most) is
    /// not held forever. `age` must outlast every repeat of an id (a
    /// round's retransmissions and catch-ups, late copies of a flood), or
    /// a forgotten id would be forwarded again.
    pub fn expire(&mut self, now: Time, age: std::time::Duration) {
        while let Some((id, at)) = self.order.front() {
            if now.since(*at) <= age {
                break;
            }
            self.set.remove(id);
            self.order.pop_front();
        }
        if self.set.capacity() > 4 * self.set.len().max(64) {
            self.set.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }

    /// Whether `id` was seen (and not yet evicted).
    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A fresh uuid4 string from the caller's RNG (deterministic under a seed).
pub fn uuid4(rng: &mut impl rand::RngCore) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn oldest_id_is_evicted_first_and_size_stays_bounded() {
        let mut c = SeenCache::new(3);
        for id in ["a", "b", "c", "d"] {
            assert!(c.insert(Time(0), id));
        }
        assert_eq!(c.len(), 3);
        assert!(!c.contains("a"));
        assert!(c.contains("d"));
        assert!(!c.insert(Time(0), "d"));
    }

    #[test]
    fn ids_older_than_the_age_are_forgotten_and_younger_ones_kept() {
        let mut c = SeenCache::new(10_000);
        for i in 0..5_000u64 {
            c.insert(Time(i), &format!("flood{i}"));
        }
        c.insert(Time(100_000), "recent");
        c.expire(Time(120_000), std::time::Duration::from_secs(60));
        assert_eq!(c.len(), 1);
        assert!(c.contains("recent"));
        assert!(!c.contains("flood4999"));
        assert!(c.insert(Time(120_000), "flood0"), "forgotten, so new again");
    }

    #[test]
    fn uuid4_has_the_right_shape() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let u = uuid4(&mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid4(&mut rng));
    }
}

/// A token bucket over simulated or real time (milliseconds, passed in):
/// `burst` tokens at most, refilled at `per_sec`.
#[derive(Clone, Debug)]
pub struct Budget {
    per_sec: u32,
    burst: u32,
    /// Tokens in thousandths, so a refill of a few ms is not lost.
    milli: u64,
    last: Time,
}

impl Budget {
    /// A full bucket.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec,
            burst,
            milli: u64::from(burst) * 1000,
            last: Time(0),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Time) -> bool {
        let elapsed = now.0.saturating_sub(self.last.0);
        self.last = self.last.max(now);
        let cap = u64::from(self.burst) * 1000;
        self.milli = (self.milli + elapsed * u64::from(self.per_sec)).min(cap);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn a_budget_allows_its_burst_then_its_rate() {
        let mut b = Budget::new(10, 5);
        let now = Time(1_000);
        assert_eq!((0..100).filter(|_| b.take(now)).count(), 5);
        // 10 a second: one every 100 ms.
        assert!(!b.take(Time(1_050)));
        assert!(b.take(Time(1_100)));
        let later = Time(60_000);
        assert_eq!(
            (0..100).filter(|_| b.take(later)).count(),
            5,
            "capped at the burst"
        );
        // Time going backwards (never, but) refills nothing.
        assert!(!b.take(Time(10)));
    }
}
