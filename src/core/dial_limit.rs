//! Per-destination dial limits: how often we may open a connection to one
//! host:port for a message nobody can make us send more slowly otherwise.
//!
//! Every GOSSIP names a host:port of its sender's choosing, and what we
//! send in answer (GOSSIP_REPLY, forwards, rounds, ANNOUNCEs to every
//! tracked peer) goes there. So however many invented peerIds name one
//! address, we dial it at most [`DIALS_PER_SEC`] times a second (bursts of
//! [`DIAL_BURST`]); after a failed connect we wait before dialling it again
//! ([`BACKOFF_FIRST`] doubling to [`BACKOFF_MAX`], reset by a connect that
//! works). Sans-IO: time is passed in; the driver asks before it dials and
//! reports how each connect ended. Memory is bounded: at most
//! [`MAX_DESTINATIONS`] addresses are remembered, idle ones forgotten first.

use crate::core::gossip::Budget;
use crate::core::time::Time;
use crate::ids::PeerAddr;
use std::collections::HashMap;
use std::time::Duration;

/// Connections per second to one host:port, sustained, with the network's
/// 30 s gossip interval: about four times what a real peer needs (a round,
/// five retransmissions, our replies and the forwards it gets come to
/// about 15 messages an interval). Shorter intervals (tests) scale it up
/// (see [`DialLimiter::for_interval`]).
pub const DIALS_PER_SEC: u32 = 2;
/// Connections to one host:port allowed at once before the rate applies
/// (a round, a reply and a few ANNOUNCEs after downloads can coincide).
pub const DIAL_BURST: u32 = 8;
/// Dials per gossip interval to one destination that the rate allows
/// ([`DIALS_PER_SEC`] at 30 s).
const DIALS_PER_INTERVAL: u64 = 60;
/// Wait after a first failed connect.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest wait after repeated failed connects.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Most destinations remembered.
pub const MAX_DESTINATIONS: usize = 4096;
/// A destination not dialled for this long is forgotten first (its budget
/// is full again by then, and any backoff is over: longer than
/// [`BACKOFF_MAX`]).
pub const IDLE_FORGET: Duration = Duration::from_secs(120);

/// Whether a dial may go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Dial.
    Allowed,
    /// Over the destination's rate: drop the message.
    OverRate,
    /// A connect to it failed recently: drop the message until `until`.
    BackingOff {
        /// When dialling it is allowed again.
        until: Time,
    },
}

#[derive(Debug)]
struct Dest {
    budget: Budget,
    failures: u32,
    retry_at: Option<Time>,
    last_used: Time,
}

/// The limiter: one small record per recently dialled host:port.
#[derive(Debug)]
pub struct DialLimiter {
    dests: HashMap<PeerAddr, Dest>,
    per_sec: u32,
    burst: u32,
    backoff_first: Duration,
    backoff_max: Duration,
    /// Messages dropped for a destination's rate.
    pub dropped_rate: u64,
    /// Messages dropped while a destination was backing off.
    pub dropped_backoff: u64,
}

impl Default for DialLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl DialLimiter {
    /// No destination remembered; [`DIALS_PER_SEC`] and [`DIAL_BURST`].
    pub fn new() -> Self {
        Self {
            dests: HashMap::new(),
            per_sec: DIALS_PER_SEC,
            burst: DIAL_BURST,
            backoff_first: BACKOFF_FIRST,
            backoff_max: BACKOFF_MAX,
            dropped_rate: 0,
            dropped_backoff: 0,
        }
    }

    /// The limits for a network whose gossip interval is `interval`: the
    /// defaults at 30 s and longer, proportionally more dials and shorter
    /// backoffs for shorter ones (the rounds and retransmissions come that
    /// much faster; a backoff stays under two intervals, half of one at
    /// first).
    pub fn for_interval(interval: Duration) -> Self {
        let ms = interval.as_millis().max(1) as u64;
        let per_sec = (DIALS_PER_INTERVAL * 1000).div_ceil(ms);
        let per_sec = per_sec.clamp(u64::from(DIALS_PER_SEC), 10_000) as u32;
        Self {
            per_sec,
            burst: DIAL_BURST.max(per_sec.saturating_mul(4)),
            backoff_first: BACKOFF_FIRST.min(interval / 2),
            backoff_max: BACKOFF_MAX.min(interval * 2),
            ..Self::new()
        }
    }

    /// Dials a second allowed to one destination, and the burst.
    pub fn limits(&self) -> (u32, u32) {
        (self.per_sec, self.burst)
    }

    /// Destinations remembered now.
    pub fn len(&self) -> usize {
        self.dests.len()
    }

    /// Whether no destination is remembered.
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// Asks to dial `to` now; an allowed dial uses one of its tokens.
    pub fn check(&mut self, now: Time, to: &PeerAddr) -> Verdict {
        if !self.dests.contains_key(to) {
            self.make_room(now);
            self.dests.insert(
                to.clone(),
                Dest {
                    budget: Budget::new(self.per_sec, self.burst),
                    failures: 0,
                    retry_at: None,
                    last_used: now,
                },
            );
        }
        let Some(d) = self.dests.get_mut(to) else {
            return Verdict::Allowed;
        };
        d.last_used = d.last_used.max(now);
        if let Some(until) = d.retry_at.filter(|t| now < *t) {
            self.dropped_backoff += 1;
            return Verdict::BackingOff { until };
        }
        if d.budget.take(now) {
            Verdict::Allowed
        } else {
            self.dropped_rate += 1;
            Verdict::OverRate
        }
    }

    /// A connect to `to` failed (refused, unreachable, timed out): back off,
    /// twice as long as last time, up to [`BACKOFF_MAX`].
    pub fn connect_failed(&mut self, now: Time, to: &PeerAddr) {
        let (first, max) = (self.backoff_first, self.backoff_max);
        let Some(d) = self.dests.get_mut(to) else {
            return;
        };
        d.failures = d.failures.saturating_add(1);
        let doublings = (d.failures - 1).min(16);
        let wait = first.saturating_mul(1u32 << doublings).min(max);
        d.retry_at = Some(now.plus(wait));
    }

    /// A connect to `to` worked: no backoff any more.
    pub fn connected(&mut self, to: &PeerAddr) {
        if let Some(d) = self.dests.get_mut(to) {
            d.failures = 0;
            d.retry_at = None;
        }
    }

    /// At the bound: forgets every destination idle for [`IDLE_FORGET`]
    /// (one walk frees many slots), else the least recently dialled one.
    fn make_room(&mut self, now: Time) {
        if self.dests.len() < MAX_DESTINATIONS {
            return;
        }
        self.dests
            .retain(|_, d| now.since(d.last_used) < IDLE_FORGET);
        if self.dests.len() < MAX_DESTINATIONS {
            return;
        }
        let oldest = self
            .dests
            .iter()
            .min_by_key(|(_, d)| d.last_used)
            .map(|(a, _)| a.clone());
        if let Some(a) = oldest {
            self.dests.remove(&a);
        }
    }

    /// Forgets destinations idle for [`IDLE_FORGET`] (the memory of a flood is given back), and releases the table's
    /// spare capacity once it is mostly empty.
    pub fn sweep(&mut self, now: Time) {
        self.dests
            .retain(|_, d| now.since(d.last_used) < IDLE_FORGET);
        if self.dests.capacity() > 4 * self.dests.len().max(16) {
            self.dests.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> PeerAddr {
        PeerAddr::new("127.0.0.1", port)
    }

    #[test]
    fn one_destination_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let mut l = DialLimiter::new();
        let now = Time(10_000);
        let allowed = (0..100)
            .filter(|_| l.check(now, &addr(1)) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, DIAL_BURST as usize);
        assert_eq!(l.dropped_rate, 100 - u64::from(DIAL_BURST));
        assert_eq!(l.check(now, &addr(2)), Verdict::Allowed);
        // 2 a second: one every 500 ms.
        assert_eq!(l.check(Time(10_400), &addr(1)), Verdict::OverRate);
        assert_eq!(l.check(Time(10_500), &addr(1)), Verdict::Allowed);
        let in_ten_seconds = (0..1_000u64)
            .filter(|i| l.check(Time(20_000 + i * 10), &addr(1)) == Verdict::Allowed)
            .count();
        assert!(
            in_ten_seconds <= DIAL_BURST as usize + 20,
            "{in_ten_seconds}"
        );
    }

    #[test]
    fn short_gossip_intervals_scale_the_rate_up_and_long_ones_keep_the_default() {
        assert_eq!(
            DialLimiter::for_interval(Duration::from_secs(30)).limits(),
            (2, 8)
        );
        assert_eq!(
            DialLimiter::for_interval(Duration::from_secs(300)).limits(),
            (2, 8)
        );
        assert_eq!(
            DialLimiter::for_interval(Duration::from_secs(1)).limits(),
            (60, 240)
        );
        let mut l = DialLimiter::for_interval(Duration::from_millis(500));
        let now = Time(5_000);
        let allowed = (0..1_000)
            .filter(|_| l.check(now, &addr(1)) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 480);
        // Backoffs: half an interval first, two intervals at most.
        let a = addr(2);
        l.check(now, &a);
        for _ in 0..10 {
            l.connect_failed(now, &a);
        }
        assert_eq!(
            l.check(now, &a),
            Verdict::BackingOff {
                until: now.plus(Duration::from_secs(1))
            }
        );
    }

    #[test]
    fn failed_connects_back_off_doubling_to_the_cap_and_a_success_resets_it() {
        let mut l = DialLimiter::new();
        let a = addr(1);
        let mut now = Time(0);
        assert_eq!(l.check(now, &a), Verdict::Allowed);
        let mut waits = Vec::new();
        for _ in 0..9 {
            l.connect_failed(now, &a);
            let Verdict::BackingOff { until } = l.check(now, &a) else {
                panic!("no backoff after a failed connect");
            };
            waits.push(until.0 - now.0);
            assert_eq!(
                l.check(Time(until.0 - 1), &a),
                Verdict::BackingOff { until }
            );
            now = until;
            assert_eq!(l.check(now, &a), Verdict::Allowed);
        }
        assert_eq!(
            waits,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
        l.connected(&a);
        l.connect_failed(now, &a);
        assert_eq!(
            l.check(now, &a),
            Verdict::BackingOff {
                until: now.plus(BACKOFF_FIRST)
            }
        );
        assert!(l.dropped_backoff > 0);
    }

    #[test]
    fn a_flood_of_destinations_stays_under_the_bound_and_is_forgotten_when_idle() {
        let mut l = DialLimiter::new();
        for i in 0..(3 * MAX_DESTINATIONS as u64) {
            let a = PeerAddr::new(format!("h{i}"), 1);
            assert_eq!(l.check(Time(i), &a), Verdict::Allowed);
            assert!(l.len() <= MAX_DESTINATIONS);
        }
        let later = Time(3 * MAX_DESTINATIONS as u64).plus(IDLE_FORGET);
        l.sweep(later);
        assert!(l.is_empty());
    }

    #[test]
    fn a_destination_backing_off_is_kept_until_idle_for_longer_than_any_backoff() {
        let mut l = DialLimiter::new();
        let a = addr(1);
        l.check(Time(0), &a);
        l.connect_failed(Time(0), &a);
        l.sweep(Time(500));
        assert_eq!(l.len(), 1, "kept while it backs off");
        l.sweep(Time(0).plus(IDLE_FORGET));
        assert!(l.is_empty(), "forgotten once idle and its backoff over");
    }
}
