//! Ticking the progress line from the timer wheel while transfers run: the
//! text comes from `cli::progress` (a pure renderer), the driver writes it.

use super::{Driver, Due};
use crate::cli::progress::{self, PLAIN_PERIOD, TTY_PERIOD};
use crate::core::Time;
use std::time::Duration;

/// How often the wheel ticks the renderer for plain lines (each transfer's
/// line still comes every `PLAIN_PERIOD`).
const PLAIN_TICK: Duration = Duration::from_secs(1);

impl Driver {
    /// A transfer began: make sure the progress line ticks.
    pub(super) fn arm_progress(&mut self) {
        if !self.progress_armed {
            self.progress_armed = true;
            let at = self.now().plus(self.progress_period());
            self.wheel.schedule(at, Due::Progress);
        }
    }

    fn progress_period(&self) -> Duration {
        if self.progress.is_tty() {
            TTY_PERIOD
        } else {
            PLAIN_TICK.min(PLAIN_PERIOD)
        }
    }

    /// Draws what is due, and ticks again while anything is in flight.
    pub(super) fn tick_progress(&mut self, now: Time) {
        self.progress_armed = false;
        let transfers = self.core.progress_transfers(now);
        if let Some(draw) = self.progress.tick(now, &transfers) {
            progress::write(&draw);
        }
        if !transfers.is_empty() {
            self.arm_progress();
        }
    }
}
