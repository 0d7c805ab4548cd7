//! A hashed timer wheel: every deadline of the loop lives here, and the
//! poll timeout is its next deadline.
//!
//! Slots of `TICK` each; a deadline goes in slot `(deadline / TICK) % SLOTS`
//! and fires when the wheel's hand passes it. Deadlines further than one turn
//! away wait in their slot for later turns. Entries live in a slab, so a
//! timer can be cancelled by key.

use crate::core::Time;
use slab::Slab;

/// Wheel resolution in milliseconds: deadlines fire at most this late.
pub const TICK_MS: u64 = 5;
/// Slots in one turn (one turn = `SLOTS * TICK_MS` = 2.56 s).
pub const SLOTS: usize = 512;

/// Key of a scheduled timer, for cancelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey(usize);

struct Entry<T> {
    at: Time,
    item: T,
}

/// The wheel, generic over what a timer carries.
pub struct TimerWheel<T> {
    slots: Vec<Vec<usize>>,
    entries: Slab<Entry<T>>,
    /// The last tick processed. Its slot is visited again by the next
    /// `poll`, so a deadline scheduled in the past still fires.
    hand: u64,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose hand starts at time zero.
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            entries: Slab::new(),
            hand: 0,
        }
    }

    fn tick_of(t: Time) -> u64 {
        t.0 / TICK_MS
    }

    /// Schedules `item` at `at` (a deadline already past fires on the next
    /// `poll`).
    pub fn schedule(&mut self, at: Time, item: T) -> TimerKey {
        let tick = Self::tick_of(at).max(self.hand);
        let key = self.entries.insert(Entry { at, item });
        self.slots[(tick % SLOTS as u64) as usize].push(key);
        TimerKey(key)
    }

    /// Cancels a timer; returns its item if it was still pending.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let entry = self.entries.try_remove(key.0)?;
        let tick = Self::tick_of(entry.at).max(self.hand);
        let slot = &mut self.slots[(tick % SLOTS as u64) as usize];
        if let Some(pos) = slot.iter().position(|k| *k == key.0) {
            slot.swap_remove(pos);
        } else {
            // The entry may sit in another slot if it was scheduled in the
            // past relative to a later hand; search all (rare).
            for s in &mut self.slots {
                if let Some(pos) = s.iter().position(|k| *k == key.0) {
                    s.swap_remove(pos);
                    break;
                }
            }
        }
        Some(entry.item)
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest pending deadline. Scans the slots of the next turn and
    /// falls back to all entries only when nothing is due within it.
    pub fn next_deadline(&self) -> Option<Time> {
        if self.entries.is_empty() {
            return None;
        }
        let turn_end = (self.hand + SLOTS as u64) * TICK_MS;
        for i in 0..SLOTS as u64 {
            let slot = &self.slots[((self.hand + i) % SLOTS as u64) as usize];
            let due = slot
                .iter()
                .filter_map(|k| self.entries.get(*k))
                .map(|e| e.at)
                .filter(|at| at.0 < turn_end)
                .min();
            if due.is_some() {
                return due;
            }
        }
        self.entries.iter().map(|(_, e)| e.at).min()
    }

    /// Removes and returns every timer due at or before `now`, earliest
    /// first.
    pub fn poll(&mut self, now: Time) -> Vec<T> {
        let now_tick = Self::tick_of(now);
        let mut due: Vec<(Time, usize)> = Vec::new();
        if now_tick >= self.hand {
            // Visit each slot the hand passes (its current one included), at
            // most one full turn.
            let steps = (now_tick - self.hand + 1).min(SLOTS as u64);
            for i in 0..steps {
                let idx = ((self.hand + i) % SLOTS as u64) as usize;
                let entries = &self.entries;
                let slot = &mut self.slots[idx];
                slot.retain(|k| match entries.get(*k) {
                    Some(e) if e.at <= now => {
                        due.push((e.at, *k));
                        false
                    }
                    Some(_) => true,
                    None => false,
                });
            }
            self.hand = now_tick;
        }
        due.sort();
        due.into_iter()
            .filter_map(|(_, k)| self.entries.try_remove(k).map(|e| e.item))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_and_not_early() {
        let mut w = TimerWheel::new();
        w.schedule(Time(100), "b");
        w.schedule(Time(50), "a");
        w.schedule(Time(10_000), "far");
        assert_eq!(w.next_deadline(), Some(Time(50)));
        assert!(w.poll(Time(49)).is_empty());
        assert_eq!(w.poll(Time(100)), vec!["a", "b"]);
        assert_eq!(w.next_deadline(), Some(Time(10_000)));
        assert!(w.poll(Time(5_000)).is_empty());
        assert_eq!(w.poll(Time(10_000)), vec!["far"]);
        assert!(w.is_empty());
    }

    #[test]
    fn cancelled_timers_never_fire() {
        let mut w = TimerWheel::new();
        let k = w.schedule(Time(20), 1);
        w.schedule(Time(30), 2);
        assert_eq!(w.cancel(k), Some(1));
        assert_eq!(w.cancel(k), None);
        assert_eq!(w.poll(Time(40)), vec![2]);
    }

    #[test]
    fn deadlines_in_the_past_fire_on_the_next_poll() {
        let mut w = TimerWheel::new();
        w.poll(Time(1_000));
        w.schedule(Time(3), "late");
        assert_eq!(w.next_deadline(), Some(Time(3)));
        assert_eq!(w.poll(Time(1_001)), vec!["late"]);
    }

    #[test]
    fn many_turns_later_everything_due_fires() {
        let mut w = TimerWheel::new();
        for i in 0..2000u64 {
            w.schedule(Time(i * 7), i);
        }
        let fired = w.poll(Time(1_000_000));
        assert_eq!(fired.len(), 2000);
        assert!(fired.windows(2).all(|p| p[0] < p[1]));
    }
}
