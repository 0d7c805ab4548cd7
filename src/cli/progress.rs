//! The live progress line of the `get`s and `push`es in flight.
//!
//! On a terminal one combined line is redrawn in place at most
//! [`TTY_PERIOD`] apart, on the terminal's last row (see
//! [`super::console`]: never on the row the user types on); otherwise each
//! transfer gets a plain line every [`PLAIN_PERIOD`]. [`Progress::tick`] is
//! a pure function of the transfers and the times of the last renders: it
//! returns what to draw, [`write`] draws it.

use super::console;
use super::escape::escape;
use crate::core::view::{Direction, TransferState, TransferView};
use crate::core::Time;
use crate::units;
use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

/// Redraws of the terminal line are at least this far apart.
pub const TTY_PERIOD: Duration = Duration::from_millis(250);
/// Each transfer's plain progress line is this far apart (not a terminal).
pub const PLAIN_PERIOD: Duration = Duration::from_secs(5);
/// The terminal line is cut to this many characters, so it never wraps on
/// an 80-column terminal (the status row is cut again to the terminal's
/// own width: a wrapped line would scroll the screen).
pub const TTY_WIDTH: usize = 79;
/// Plain lines remembered at most (one per transfer in flight).
const PLAIN_MAX: usize = 1024;

/// What a tick asks to be drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Draw {
    /// A terminal: the status row's new text (escaped, one line; empty:
    /// clear the row).
    Status(String),
    /// Not a terminal: whole lines, each ending in a newline.
    Lines(String),
}

/// The renderer's memory: how it writes and when it last did.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    /// When the terminal line was last drawn, and whether one is up.
    last_draw: Option<Time>,
    drawn: bool,
    /// When each transfer's plain line was last printed (or first seen).
    plain: HashMap<(Direction, u64), Time>,
}

impl Progress {
    /// A renderer for a terminal's status row (`tty`) or for plain lines.
    pub fn new(tty: bool) -> Self {
        Progress {
            tty,
            last_draw: None,
            drawn: false,
            plain: HashMap::new(),
        }
    }

    /// Whether it redraws in place.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// What to draw at `now` for `transfers` (the `get`s and `push`es in
    /// flight): None when nothing is due.
    pub fn tick(&mut self, now: Time, transfers: &[TransferView]) -> Option<Draw> {
        let live: Vec<&TransferView> = transfers.iter().filter(|t| shown(t)).collect();
        if self.tty {
            self.tick_tty(now, &live)
        } else {
            self.tick_plain(now, &live)
        }
    }

    fn tick_tty(&mut self, now: Time, live: &[&TransferView]) -> Option<Draw> {
        if live.is_empty() {
            let was = std::mem::replace(&mut self.drawn, false);
            return was.then(|| Draw::Status(String::new()));
        }
        if self
            .last_draw
            .is_some_and(|t| self.drawn && now.since(t) < TTY_PERIOD)
        {
            return None;
        }
        self.last_draw = Some(now);
        self.drawn = true;
        let line = match live {
            [one] => long_line(one),
            several => several
                .iter()
                .map(|t| short_line(t))
                .collect::<Vec<_>>()
                .join(" | "),
        };
        Some(Draw::Status(line.chars().take(TTY_WIDTH).collect()))
    }

    fn tick_plain(&mut self, now: Time, live: &[&TransferView]) -> Option<Draw> {
        self.plain
            .retain(|k, _| live.iter().any(|t| (t.direction, t.id) == *k));
        let mut out = String::new();
        for t in live {
            let key = (t.direction, t.id);
            match self.plain.get(&key) {
                // First seen: its start was announced; the first plain line
                // comes one period later.
                None if self.plain.len() < PLAIN_MAX => {
                    self.plain.insert(key, now);
                }
                Some(at) if now.since(*at) >= PLAIN_PERIOD => {
                    self.plain.insert(key, now);
                    out.push_str(&long_line(t));
                    out.push('\n');
                }
                _ => {}
            }
        }
        (!out.is_empty()).then_some(Draw::Lines(out))
    }
}

/// A transfer worth a progress line: its bytes are moving.
fn shown(t: &TransferView) -> bool {
    t.state == TransferState::Moving
}

/// `45%` when the size is known.
fn percent(t: &TransferView) -> Option<u64> {
    let total = t.bytes_total?;
    Some(if total == 0 {
        100
    } else {
        (u128::from(t.bytes_done.min(total)) * 100 / u128::from(total)) as u64
    })
}

/// "get: big.iso 45% 450.0 MiB of 1000.0 MiB at 80.2 MiB/s, 7s left, from
/// carol" (names escaped: they come from the network).
pub fn long_line(t: &TransferView) -> String {
    let (verb, side) = match t.direction {
        Direction::Down => ("get", format!("from {}", t.source)),
        Direction::Up => ("push", format!("to {}", t.peer)),
    };
    let mut s = format!("{verb}: {}", t.file_name);
    if let Some(p) = percent(t) {
        s.push_str(&format!(" {p}%"));
    }
    s.push_str(&format!(" {}", units::bytes(t.bytes_done)));
    if let Some(total) = t.bytes_total {
        s.push_str(&format!(" of {}", units::bytes(total)));
    }
    s.push_str(&format!(" at {}", units::rate(t.rate_bytes_per_sec)));
    if let Some(eta) = t.eta_secs {
        s.push_str(&format!(", {} left", units::eta(eta)));
    }
    s.push_str(&format!(", {side}"));
    escape(&s).into_owned()
}

/// "big.iso 45% 80.2 MiB/s" for the combined terminal line.
fn short_line(t: &TransferView) -> String {
    let name: String = t.file_name.chars().take(24).collect();
    let mut s = name;
    if let Some(p) = percent(t) {
        s.push_str(&format!(" {p}%"));
    }
    s.push_str(&format!(" {}", units::rate(t.rate_bytes_per_sec)));
    escape(&s).into_owned()
}

/// Draws what [`Progress::tick`] returned: the terminal's status row, or
/// plain lines on stdout (below the prompt's row, if one is up).
pub fn write(draw: &Draw) {
    match draw {
        Draw::Status(text) => console::draw_status(text),
        Draw::Lines(lines) => {
            console::leave_prompt_row();
            let mut out = io::stdout().lock();
            let _ = out.write_all(lines.as_bytes());
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(id: u64, done: u64, total: Option<u64>) -> TransferView {
        TransferView {
            id,
            direction: Direction::Down,
            state: crate::core::view::TransferState::Moving,
            peer: "carol (127.0.0.1:9001)".into(),
            eta_secs: total.map(|t| (t - done) / 1000),
            started_unix: 0,
            file_id: "ab".repeat(32),
            file_name: "big.iso".into(),
            source: "carol".into(),
            bytes_done: done,
            bytes_total: total,
            rate_bytes_per_sec: 1000,
            sources: Vec::new(),
        }
    }

    #[test]
    fn a_plain_line_names_file_percent_bytes_rate_eta_and_source() {
        let mib = 1024 * 1024;
        let t = TransferView {
            rate_bytes_per_sec: 84_100_000,
            eta_secs: Some(7),
            ..down(1, 450 * mib, Some(1000 * mib))
        };
        assert_eq!(
            long_line(&t),
            "get: big.iso 45% 450.0 MiB of 1000.0 MiB at 80.2 MiB/s, 7s left, from carol"
        );
        let unknown = down(2, 2048, None);
        assert_eq!(
            long_line(&unknown),
            "get: big.iso 2.0 KiB at 1000 B/s, from carol"
        );
    }

    #[test]
    fn plain_lines_come_every_five_seconds_per_transfer_and_not_at_once() {
        let mut p = Progress::new(false);
        let v = [down(1, 10, Some(100))];
        assert_eq!(p.tick(Time(0), &v), None, "its start was already said");
        assert_eq!(p.tick(Time(4_999), &v), None);
        let Some(Draw::Lines(line)) = p.tick(Time(5_000), &v) else {
            panic!("due after 5 s");
        };
        assert!(line.starts_with("get: big.iso 10% ") && line.ends_with('\n'));
        assert_eq!(p.tick(Time(6_000), &v), None);
        assert!(p.tick(Time(10_000), &v).is_some());
        // An ended transfer is forgotten.
        assert_eq!(p.tick(Time(11_000), &[]), None);
        assert!(p.plain.is_empty());
    }

    #[test]
    fn the_terminal_line_is_redrawn_in_place_at_most_four_times_a_second() {
        let mut p = Progress::new(true);
        let v = [down(1, 50, Some(100))];
        let Some(Draw::Status(first)) = p.tick(Time(0), &v) else {
            panic!("drawn at once");
        };
        assert!(first.starts_with("get: big.iso 50% "), "{first:?}");
        assert!(!first.contains('\n'));
        assert_eq!(p.tick(Time(249), &v), None);
        assert!(p.tick(Time(250), &v).is_some());
        // Nothing left in flight: the row is cleared once.
        assert_eq!(p.tick(Time(600), &[]), Some(Draw::Status(String::new())));
        assert_eq!(p.tick(Time(900), &[]), None);
    }

    #[test]
    fn several_transfers_share_one_line_that_never_wraps() {
        let mut p = Progress::new(true);
        let v: Vec<TransferView> = (0..10).map(|i| down(i, 10, Some(100))).collect();
        let Some(Draw::Status(line)) = p.tick(Time(0), &v) else {
            panic!("drawn");
        };
        assert!(line.contains(" | "));
        assert!(line.chars().count() <= TTY_WIDTH);
    }

    #[test]
    fn queued_downloads_get_no_line_and_names_are_escaped() {
        let mut p = Progress::new(true);
        for state in [TransferState::Queued, TransferState::Waiting] {
            let waiting = TransferView {
                state,
                source: "(queued)".into(),
                ..down(1, 0, Some(10))
            };
            assert_eq!(p.tick(Time(0), &[waiting]), None, "{state:?}");
        }
        let evil = TransferView {
            file_name: "a\x1b[2Jb".into(),
            ..down(2, 0, Some(10))
        };
        let Some(Draw::Status(line)) = p.tick(Time(0), &[evil]) else {
            panic!("drawn");
        };
        assert!(line.contains("a\\x1b[2Jb"), "{line:?}");
    }
}
