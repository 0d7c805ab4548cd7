//! What the peer writes to a terminal on stdout: the menu's prompt, the
//! status row of the progress line, and the rule that nothing we print
//! erases what the user is typing.
//!
//! The terminal stays in canonical mode (the kernel echoes and edits the
//! line; we never see a line before Enter), so the text typed after the
//! prompt is unknown to us and can't be redrawn. Hence:
//! - the progress line lives on the terminal's last row, kept out of the
//!   scrolling region (as apt's progress bar does). Each redraw is one
//!   write that saves the cursor, draws that row, and restores the cursor:
//!   it never touches the row the user types on, and it holds no newline
//!   or tab, so the kernel writes it in one piece and an echoed keystroke
//!   can't land between its save and restore;
//! - other output never goes back over the prompt's row: when the prompt
//!   may have typed text after it, the output starts on a new row, and the
//!   prompt comes again after it.
//!
//! Without a terminal nothing here writes: plain lines, no prompt and no
//! escape sequences, for scripts that read stdout.
//!
//! Locks: the console's state, then stdout's, never the other way round.

#![allow(unsafe_code)]

use std::io::{self, IsTerminal, Write};
use std::sync::{Mutex, MutexGuard};

/// The menu's prompt (on a terminal only).
pub const PROMPT: &str = "peershare> ";

/// Fewest rows for a status row: one for it, the rest to type and scroll in.
const MIN_ROWS: u16 = 3;

/// Save the cursor (position and attributes), DEC style: xterm, VTE,
/// the Linux console, tmux and screen all know it.
const SAVE: &str = "\x1b7";
/// Restore the cursor saved by [`SAVE`].
const RESTORE: &str = "\x1b8";

/// The terminal's size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// What the console remembers of the terminal.
#[derive(Debug, Default)]
struct State {
    /// The menu prompts (stdin and stdout are both the terminal).
    prompting: bool,
    /// The prompt is the last thing on its row: the user may be typing
    /// after it, so other output starts on a new row.
    prompt_up: bool,
    /// The size the status row was reserved for (None: not reserved).
    reserved: Option<Size>,
}

static STATE: Mutex<State> = Mutex::new(State {
    prompting: false,
    prompt_up: false,
    reserved: None,
});

/// The console's state; a panic elsewhere while it was held leaves
/// nothing half-changed in it worth refusing.
fn state() -> MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The size of the terminal on stdout; None when stdout is not a
/// terminal or reports no size (a fresh pty before anyone set one).
pub fn stdout_size() -> Option<Size> {
    if !io::stdout().is_terminal() {
        return None;
    }
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct passed, which
    // lives on this stack frame for the whole call.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some(Size {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Whether stdout can hold a status row (a terminal of known size, tall
/// enough).
pub fn has_status_row() -> bool {
    stdout_size().is_some_and(|s| s.rows >= MIN_ROWS)
}

/// Turns the prompt on when both stdin and stdout are the terminal (the
/// kernel then echoes what is typed, and Enter leaves the prompt's row).
pub fn start_prompting() {
    if io::stdin().is_terminal() && io::stdout().is_terminal() {
        state().prompting = true;
    }
}

/// Stops prompting (stdin closed: no menu any more).
pub fn stop_prompting() {
    state().prompting = false;
}

/// The user pressed Enter: the terminal's echo left the prompt's row.
pub fn line_entered() {
    state().prompt_up = false;
}

/// Shows the prompt unless it is already the last thing on the screen.
pub fn show_prompt() {
    let mut st = state();
    if st.prompting && !st.prompt_up {
        let mut out = io::stdout().lock();
        let _ = out.write_all(PROMPT.as_bytes());
        let _ = out.flush();
        st.prompt_up = true;
    }
}

/// Before other output on the terminal: leaves the prompt's row (with a
/// newline, so what the user typed there stays in view), if the prompt is
/// up. The prompt is shown again by the loop ([`show_prompt`]). Call it
/// without holding stdout's lock: the console's lock always comes first
/// (the log writes from other threads too).
pub fn leave_prompt_row() {
    let mut st = state();
    if std::mem::take(&mut st.prompt_up) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

/// Draws `text` on the status row (empty: clears it), reserving the row
/// first when the terminal's size is new. Does nothing when the terminal
/// has no usable size.
pub fn draw_status(text: &str) {
    let Some(size) = stdout_size().filter(|s| s.rows >= MIN_ROWS) else {
        return;
    };
    let mut st = state();
    let mut bytes = String::new();
    if st.reserved != Some(size) {
        bytes.push_str(&reserve(size));
        st.reserved = Some(size);
    }
    bytes.push_str(&status_row(size, text));
    let mut out = io::stdout().lock();
    let _ = out.write_all(bytes.as_bytes());
    let _ = out.flush();
}

/// Gives the status row back to the terminal (at the orderly exit): the
/// whole screen scrolls again and the row is cleared. (An exit cut short
/// by the signal watchdog leaves the region set: `reset` clears it.)
pub fn release_status_row() {
    let mut st = state();
    if let Some(size) = st.reserved.take() {
        let mut out = io::stdout().lock();
        let _ = out.write_all(release(size).as_bytes());
        let _ = out.flush();
    }
}

/// Makes the last row a status row: the screen scrolls up one row (so
/// whatever was on the last row, the prompt included, stays in view), the
/// scrolling region becomes every row but the last, and the cursor goes
/// back onto the same text it was on. No newline (`ESC D` scrolls): the
/// kernel writes it in one piece. (A cursor on the top row would stay
/// there while its text scrolls off; the prompt is hardly ever there.)
pub fn reserve(size: Size) -> String {
    format!(
        "{SAVE}\x1b[r\x1b[{rows};1H\x1bD\x1b[1;{last}r{RESTORE}\x1b[1A",
        rows = size.rows,
        last = size.rows - 1
    )
}

/// One redraw of the status row: save the cursor, go to the last row,
/// erase it, write `text` cut to the width (a wrapped line would scroll),
/// restore the cursor. `text` must be printable (escaped) already.
pub fn status_row(size: Size, text: &str) -> String {
    let cut: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(usize::from(size.cols.saturating_sub(1)))
        .collect();
    format!("{SAVE}\x1b[{};1H\x1b[2K{cut}{RESTORE}", size.rows)
}

/// The status row given back: the scrolling region is the whole screen
/// again, the last row erased, the cursor where it was.
pub fn release(size: Size) -> String {
    format!("{SAVE}\x1b[r\x1b[{};1H\x1b[2K{RESTORE}", size.rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: Size = Size { rows: 24, cols: 80 };

    #[test]
    fn a_redraw_touches_only_the_last_row_and_puts_the_cursor_back() {
        let s = status_row(SIZE, "get: big.iso 45%");
        assert_eq!(s, "\x1b7\x1b[24;1H\x1b[2Kget: big.iso 45%\x1b8");
        // No newline, carriage return or tab: the kernel writes it whole.
        assert!(!s.contains(['\n', '\r', '\t']));
    }

    #[test]
    fn the_status_text_is_cut_to_the_width_and_stripped_of_controls() {
        let long = "x".repeat(200);
        let s = status_row(SIZE, &long);
        assert_eq!(s.matches('x').count(), 79);
        let s = status_row(SIZE, "a\rb\nc");
        assert!(s.contains("abc"), "{s:?}");
    }

    #[test]
    fn reserving_scrolls_one_row_and_keeps_the_cursor_on_its_text() {
        let s = reserve(SIZE);
        assert_eq!(s, "\x1b7\x1b[r\x1b[24;1H\x1bD\x1b[1;23r\x1b8\x1b[1A");
        assert!(!s.contains(['\n', '\r', '\t']));
        assert_eq!(release(SIZE), "\x1b7\x1b[r\x1b[24;1H\x1b[2K\x1b8");
    }
}
