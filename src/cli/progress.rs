//! The live progress line of the `get`s and `push`es in flight.
//!
//! On a terminal one combined line is redrawn in place (`\r` + `ESC[K`) at
//! most [`TTY_PERIOD`] apart, and wiped before any other menu output (see
//! [`clear_if_drawn`], called by [`super::escape::say`]); otherwise each
//! transfer gets a plain line every [`PLAIN_PERIOD`]. [`Progress::tick`] is
//! a pure function of the transfers and the times of the last renders: it
//! returns the text to write, the caller writes it.

use super::escape::escape;
use crate::core::view::{Direction, TransferView};
use crate::core::Time;
use crate::units;
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Redraws of the terminal line are at least this far apart.
pub const TTY_PERIOD: Duration = Duration::from_millis(250);
/// Each transfer's plain progress line is this far apart (not a terminal).
pub const PLAIN_PERIOD: Duration = Duration::from_secs(5);
/// The terminal line is cut to this many characters, so it never wraps on
/// an 80-column terminal (a wrapped line can't be redrawn with `\r`).
pub const TTY_WIDTH: usize = 79;
/// Plain lines remembered at most (one per transfer in flight).
const PLAIN_MAX: usize = 1024;

/// `\r` then erase to the end of the line.
const WIPE: &str = "\r\x1b[K";

/// Whether a progress line is on the terminal now (shared with `say`).
static DRAWN: AtomicBool = AtomicBool::new(false);

/// Wipes the progress line, if one is drawn, before other output on `out`.
pub fn clear_if_drawn(out: &mut impl Write) {
    if DRAWN.swap(false, Ordering::SeqCst) {
        let _ = out.write_all(WIPE.as_bytes());
        let _ = out.flush();
    }
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
    /// A renderer for a terminal (`tty`) or for plain lines.
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

    /// What to write at `now` for `transfers` (the `get`s and `push`es in
    /// flight): None when nothing is due. On a terminal the text starts
    /// with `\r` + `ESC[K` and has no newline; plain lines end with one.
    pub fn tick(&mut self, now: Time, transfers: &[TransferView]) -> Option<String> {
        let live: Vec<&TransferView> = transfers.iter().filter(|t| shown(t)).collect();
        if self.tty {
            self.tick_tty(now, &live)
        } else {
            self.tick_plain(now, &live)
        }
    }

    /// Some other output wiped the terminal line: redraw it at the next tick.
    pub fn wiped(&mut self) {
        self.drawn = false;
        self.last_draw = None;
    }

    fn tick_tty(&mut self, now: Time, live: &[&TransferView]) -> Option<String> {
        if live.is_empty() {
            let was = std::mem::replace(&mut self.drawn, false);
            return was.then(|| WIPE.to_string());
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
        let cut: String = line.chars().take(TTY_WIDTH).collect();
        Some(format!("{WIPE}{cut}"))
    }

    fn tick_plain(&mut self, now: Time, live: &[&TransferView]) -> Option<String> {
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
        (!out.is_empty()).then_some(out)
    }
}

/// A transfer worth a progress line: moving, with a peer.
fn shown(t: &TransferView) -> bool {
    t.direction == Direction::Up || !(t.source == "-" || t.source == "(queued)")
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

/// Writes what [`Progress::tick`] returned to stdout, recording that a
/// terminal line is up.
pub fn write(text: &str, tty: bool) {
    let mut out = io::stdout().lock();
    if tty {
        DRAWN.store(!text.ends_with(WIPE), Ordering::SeqCst);
    }
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(id: u64, done: u64, total: Option<u64>) -> TransferView {
        TransferView {
            id,
            direction: Direction::Down,
            peer: "carol (127.0.0.1:9001)".into(),
            eta_secs: total.map(|t| (t - done) / 1000),
            started_unix: 0,
            file_id: "ab".repeat(32),
            file_name: "big.iso".into(),
            source: "carol".into(),
            bytes_done: done,
            bytes_total: total,
            rate_bytes_per_sec: 1000,
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
        let line = p.tick(Time(5_000), &v).expect("due after 5 s");
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
        let first = p.tick(Time(0), &v).expect("drawn at once");
        assert!(first.starts_with("\r\x1b[Kget: big.iso 50% "), "{first:?}");
        assert!(!first.contains('\n'));
        assert_eq!(p.tick(Time(249), &v), None);
        assert!(p.tick(Time(250), &v).is_some());
        // Wiped by other output: drawn again at the next tick.
        p.wiped();
        assert!(p.tick(Time(260), &v).is_some());
        // Nothing left in flight: the line is wiped once.
        assert_eq!(p.tick(Time(600), &[]), Some(WIPE.to_string()));
        assert_eq!(p.tick(Time(900), &[]), None);
    }

    #[test]
    fn several_transfers_share_one_line_that_never_wraps() {
        let mut p = Progress::new(true);
        let v: Vec<TransferView> = (0..10).map(|i| down(i, 10, Some(100))).collect();
        let line = p.tick(Time(0), &v).expect("drawn");
        assert!(line.contains(" | "));
        assert!(line.trim_start_matches(WIPE).chars().count() <= TTY_WIDTH);
    }

    #[test]
    fn queued_downloads_get_no_line_and_names_are_escaped() {
        let mut p = Progress::new(true);
        let queued = TransferView {
            source: "(queued)".into(),
            ..down(1, 0, Some(10))
        };
        assert_eq!(p.tick(Time(0), &[queued]), None);
        let evil = TransferView {
            file_name: "a\x1b[2Jb".into(),
            ..down(2, 0, Some(10))
        };
        let line = p.tick(Time(0), &[evil]).expect("drawn");
        assert!(line.contains("a\\x1b[2Jb"), "{line:?}");
    }
}
