//! Terminal-safe text. Every string that came from the network or the disk
//! goes through [`escape`] before it reaches stdout or the log, so a peer
//! can't clear the user's screen, retitle the terminal or forge log lines:
//! one message stays one line.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

/// Is `c` a character a terminal could act on, one that breaks a line, or
/// an invisible one that reorders or hides text?
fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL and C1 (U+0080..=U+009F, e.g. the one-byte CSI, NEL)
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
                | '\u{2066}'..='\u{2069}' // bidi isolates
                | '\u{200E}' | '\u{200F}' | '\u{061C}' // bidi marks
                | '\u{2028}' | '\u{2029}' // line and paragraph separators
                | '\u{FEFF}' // zero-width no-break space
                | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
        )
}

/// `s` with control characters shown as escapes (`\n`, `\r`, `\t`, `\\x1b`,
/// `\u{9b}`); borrowed when there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Prints one menu line, escaped: the menu's only way to stdout for text
/// that may hold strings from the network.
pub fn say(line: &str) {
    super::console::leave_prompt_row();
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", escape(line));
}

/// A log sink that escapes each formatted record. The logger writes a
/// record's text and then its closing newline as a separate write; that lone
/// `"\n"` passes, every other control character is escaped.
pub struct EscapingWriter<W: Write> {
    inner: W,
    /// The log shares the terminal with the menu: it starts below the
    /// prompt's row.
    on_terminal: bool,
}

impl<W: Write> EscapingWriter<W> {
    /// Wraps `inner` (a file: the progress line is left alone).
    pub fn new(inner: W) -> Self {
        EscapingWriter {
            inner,
            on_terminal: false,
        }
    }

    /// Wraps `inner`, the terminal the menu is on too: each record starts
    /// below the prompt's row, so what the user typed stays in view (the
    /// prompt comes again after it).
    pub fn on_terminal(inner: W) -> Self {
        EscapingWriter {
            inner,
            on_terminal: true,
        }
    }
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf == b"\n" {
            self.inner.write_all(buf)?;
        } else {
            // A log line never lands after the prompt and what the user
            // typed there.
            if self.on_terminal {
                super::console::leave_prompt_row();
            }
            let text = String::from_utf8_lossy(buf);
            self.inner.write_all(escape(&text).as_bytes())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(escape("plain name.txt"), "plain name.txt");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("\x1b[2J\x07"), "\\x1b[2J\\x07");
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape("\x7f\u{9b}"), "\\x7f\\u{9b}");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(
            escape("a\u{2028}b\u{2029}c\u{200f}d\u{85}e"),
            "a\\u{2028}b\\u{2029}c\\u{200f}d\\u{85}e"
        );
        assert_eq!(
            escape("Starscourge Radahn ünïcode"),
            "Starscourge Radahn ünïcode"
        );
    }

    #[test]
    fn a_logged_record_stays_one_line() {
        let mut w = EscapingWriter::new(Vec::new());
        let name = "x\n2026-12-05T00:00:00Z [ERROR] forged";
        // What simplelog does: the record's text, then its newline alone.
        write!(w, "[INFO] got {name} \x1b]0;title\x07").unwrap();
        writeln!(w).unwrap();
        let out = String::from_utf8(w.inner).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.ends_with('\n'));
        assert!(out.contains("x\\n2026") && out.contains("\\x1b]0;title\\x07"));
    }
}
