//! The recent-events ring: the core's own decisions (a peer joined or
//! dropped, a file saved, a source failed, a refusal, a delete, a push, an
//! upload's end), newest last, bounded, stamped with the wall clock the
//! driver gave at start (the core reads no clock).

use super::view::{EventKind, EventView};
use super::{Peer, Time};
use std::collections::VecDeque;

/// Events kept; older ones are dropped first.
pub const EVENTS_MAX: usize = 100;

/// The ring, and the wall clock at `Time::ZERO`.
#[derive(Debug, Default)]
pub(crate) struct Events {
    ring: VecDeque<EventView>,
    /// Seconds since the Unix epoch at `Time::ZERO` (0 until the driver
    /// says: tests and the simulator run on virtual time).
    unix_at_zero: u64,
}

impl Events {
    /// Seconds since the Unix epoch at `now`.
    pub(crate) fn unix(&self, now: Time) -> u64 {
        self.unix_at_zero.saturating_add(now.0 / 1000)
    }

    /// Records one event, dropping the oldest beyond [`EVENTS_MAX`].
    pub(crate) fn push(&mut self, now: Time, kind: EventKind, text: String) {
        if self.ring.len() >= EVENTS_MAX {
            self.ring.pop_front();
        }
        let at_unix = self.unix(now);
        self.ring.push_back(EventView {
            at_unix,
            kind,
            text,
        });
    }

    /// The events kept, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<EventView> {
        self.ring.iter().cloned().collect()
    }
}

impl Peer {
    /// Tells the core the wall clock at `Time::ZERO`, seconds since the Unix
    /// epoch: events and views carry real times from then on.
    pub fn set_unix_at_zero(&mut self, unix_secs: u64) {
        self.events.unix_at_zero = unix_secs;
    }

    /// The driver refused something on the core's rules (a push over its
    /// quota, an unverified push while we fetch the file): one event.
    pub fn on_refused(&mut self, now: Time, text: impl Into<String>) {
        self.event(now, EventKind::Refused, text);
    }

    /// Records an event at `now`.
    pub(crate) fn event(&mut self, now: Time, kind: EventKind, text: impl Into<String>) {
        self.events.push(now, kind, text.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_hundred_in_order() {
        let mut e = Events {
            unix_at_zero: 1_000,
            ..Events::default()
        };
        for i in 0..250u64 {
            e.push(Time(i * 1000), EventKind::Saved, format!("event {i}"));
        }
        let v = e.to_vec();
        assert_eq!(v.len(), EVENTS_MAX);
        assert_eq!(v[0].text, "event 150");
        assert_eq!(v[EVENTS_MAX - 1].text, "event 249");
        assert_eq!(v[EVENTS_MAX - 1].at_unix, 1_249);
    }
}
