//! Gossip dedupe: which GOSSIP ids we have seen, with a fixed bound.
//!
//! Owns only the seen-set; who to reply to and forward to is decided in
//! `core::Peer`, with per-peer flood limits kept in the membership table.

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
    order: VecDeque<Arc<str>>,
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

    /// Records `id`; returns `false` if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        let id: Arc<str> = Arc::from(id);
        self.set.insert(Arc::clone(&id));
        self.order.push_back(id);
        true
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
            assert!(c.insert(id));
        }
        assert_eq!(c.len(), 3);
        assert!(!c.contains("a"));
        assert!(c.contains("d"));
        assert!(!c.insert("d"));
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
