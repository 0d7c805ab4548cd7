//! The stdin menu: parsing a line into a command, and the tables it prints.
//!
//! Read-only commands are answered from a [`StateView`]; commands that change
//! state become [`core::Command`]s.

use crate::core::view::{Direction, StateView};
use crate::core::Command;
use crate::protocol::message::human_bytes;
use crate::units;
use std::path::PathBuf;

/// Longest menu line accepted.
pub const MAX_LINE: usize = 4096;

/// The one-screen help.
pub const HELP: &str = "commands:
  list                     the catalog: files known on the network
  peers                    tracked peers and when each was last heard from
  transfers                downloads and uploads in flight: peer, %, rate, time left
  get <file_id> [dest] [--force]
                           download a file (a unique prefix of the id is enough)
                           and copy it to dest: a folder gets a free name in it
                           (name (2).ext), an existing file is kept unless you
                           add --force; devices, FIFOs, symlinks and the storage
                           folder are never written to
  push <path>              publish a local file as yours; a folder: each regular
                           file directly in it
  delete <file_id>         delete a file you own, everywhere
  help                     this text
  exit                     save and quit (asks again while transfers run)";

/// What a menu line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum MenuCommand {
    /// Print the catalog.
    List,
    /// Print tracked peers.
    Peers,
    /// Print downloads in progress.
    Transfers,
    /// Print help.
    Help,
    /// Save and quit.
    Exit,
    /// A state-changing command for the core.
    Core(Command),
    /// A blank line.
    Nothing,
    /// A line we can't use, with a one-line hint.
    Invalid(String),
}

/// Parses one line of the menu.
pub fn parse(line: &str) -> MenuCommand {
    let line = line.trim();
    let (verb, rest) = match line.split_once(char::is_whitespace) {
        Some((v, r)) => (v, r.trim()),
        None => (line, ""),
    };
    let arg_hint = |usage: &str| MenuCommand::Invalid(format!("usage: {usage}"));
    match verb.to_ascii_lowercase().as_str() {
        "" => MenuCommand::Nothing,
        "list" | "ls" if rest.is_empty() => MenuCommand::List,
        "peers" if rest.is_empty() => MenuCommand::Peers,
        "transfers" if rest.is_empty() => MenuCommand::Transfers,
        "help" | "?" => MenuCommand::Help,
        "exit" | "quit" if rest.is_empty() => MenuCommand::Exit,
        "get" => parse_get(rest),
        "push" if !rest.is_empty() => MenuCommand::Core(Command::Push {
            path: PathBuf::from(rest),
        }),
        "push" => arg_hint("push <path>"),
        "delete" | "rm" if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            MenuCommand::Core(Command::Delete {
                file: rest.to_string(),
            })
        }
        "delete" | "rm" => arg_hint("delete <file_id>"),
        "list" | "peers" | "transfers" | "exit" => {
            MenuCommand::Invalid(format!("`{verb}` takes no arguments"))
        }
        _ => MenuCommand::Invalid(format!(
            "unknown command {verb:?}; type `help` for the list"
        )),
    }
}

/// Parses what follows `get`: the id, then an optional destination, with
/// `--force` accepted before or after it.
fn parse_get(rest: &str) -> MenuCommand {
    const USAGE: &str = "usage: get <file_id> [dest] [--force]";
    let (id, mut tail) = match rest.split_once(char::is_whitespace) {
        Some((id, tail)) => (id, tail.trim()),
        None => (rest, ""),
    };
    if id.is_empty() || id == FORCE {
        return MenuCommand::Invalid(USAGE.into());
    }
    let mut force = false;
    loop {
        if let Some(t) = tail
            .strip_prefix(FORCE)
            .filter(|t| t.is_empty() || t.starts_with(char::is_whitespace))
        {
            tail = t.trim();
        } else if let Some(t) = tail
            .strip_suffix(FORCE)
            .filter(|t| t.is_empty() || t.ends_with(char::is_whitespace))
        {
            tail = t.trim();
        } else {
            break;
        }
        force = true;
    }
    if force && tail.is_empty() {
        return MenuCommand::Invalid(format!("{USAGE} (--force needs a dest to replace)"));
    }
    MenuCommand::Core(Command::Get {
        file: id.to_string(),
        dest: (!tail.is_empty()).then(|| PathBuf::from(tail)),
        force,
    })
}

/// The word that lets `get` replace an existing regular file.
const FORCE: &str = "--force";

/// Renders rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// Terminal-safe text: control characters from the network are replaced so
/// a peer can't move the user's cursor or clear the screen.
pub fn printable(s: &str) -> String {
    super::escape::escape(s).into_owned()
}

fn size_text(v: &serde_json::Value) -> String {
    match v.as_u64() {
        Some(b) => human_bytes(b),
        None => format!("{v} MB?"),
    }
}

/// A timestamp as a local date-time (`2026-12-06 10:15`); one that is not
/// a number of seconds in range is shown as it came.
fn time_text(v: &serde_json::Value) -> String {
    let local = v
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e13)
        .and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0))
        .map(|t| t.with_timezone(&chrono::Local));
    match local {
        Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        None => json_text(v),
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => printable(s),
        other => other.to_string(),
    }
}

/// The `list` table.
pub fn render_list(view: &StateView) -> String {
    if view.files.is_empty() {
        return "no files known yet".into();
    }
    let rows: Vec<Vec<String>> = view
        .files
        .iter()
        .map(|f| {
            let short: String = f.file_id.chars().take(12).collect();
            vec![
                printable(&short),
                printable(&f.file_name),
                printable(&f.file_owner),
                size_text(&f.file_size),
                time_text(&f.file_timestamp),
                match (f.local, f.verified) {
                    (true, true) => "yes".into(),
                    (true, false) => "yes (UNVERIFIED)".into(),
                    (false, _) => "no".into(),
                },
                printable(&f.peers_with_file.join(", ")),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "OWNER",
            "SIZE",
            "TIME",
            "LOCAL",
            "PEERS WITH FILE",
        ],
        &rows,
    )
}

/// The `peers` table.
pub fn render_peers(view: &StateView) -> String {
    if view.peers.is_empty() {
        return "no peers tracked yet".into();
    }
    let rows: Vec<Vec<String>> = view
        .peers
        .iter()
        .map(|p| {
            vec![
                printable(&p.peer_id),
                printable(&format!("{}:{}", p.host, p.port)),
                format!("{}s ago", p.last_seen_secs_ago),
            ]
        })
        .collect();
    table(&["PEER", "ADDRESS", "LAST SEEN"], &rows)
}

/// The `transfers` table: downloads and uploads, with direction, peer,
/// progress, rate and time left.
pub fn render_transfers(view: &StateView) -> String {
    if view.transfers.is_empty() {
        return "no transfers in progress".into();
    }
    let rows: Vec<Vec<String>> = view
        .transfers
        .iter()
        .map(|t| {
            vec![
                match t.direction {
                    Direction::Down => "down".into(),
                    Direction::Up => "up".into(),
                },
                printable(&t.file_name),
                printable(&t.peer),
                match t.bytes_total {
                    Some(total) if total > 0 => format!(
                        "{}%",
                        u128::from(t.bytes_done.min(total)) * 100 / u128::from(total)
                    ),
                    Some(_) => "100%".into(),
                    None => "?".into(),
                },
                match t.bytes_total {
                    Some(total) => {
                        format!("{} of {}", units::bytes(t.bytes_done), units::bytes(total))
                    }
                    None => units::bytes(t.bytes_done),
                },
                units::rate(t.rate_bytes_per_sec),
                t.eta_secs.map_or_else(|| "-".into(), units::eta),
            ]
        })
        .collect();
    let mut out = table(&["DIR", "FILE", "PEER", "%", "DONE", "RATE", "LEFT"], &rows);
    // A download from several holders: each one's share under the table.
    for t in view.transfers.iter().filter(|t| !t.sources.is_empty()) {
        out.push_str(&format!(
            "\n{}, from {}:",
            printable(&t.file_name),
            printable(&t.peer)
        ));
        for s in &t.sources {
            out.push_str(&format!(
                "\n  {}  {} at {}  {} in flight  {}",
                printable(&s.peer),
                units::bytes(s.bytes),
                units::rate(s.rate_bytes_per_sec),
                s.in_flight,
                s.state
            ));
        }
    }
    out
}

/// What `exit` would lose: "2 transfers in flight (big.iso 45% from
/// carol, up: a.txt to bob); type exit again to quit", or None when nothing
/// is in flight.
pub fn exit_warning(view: &StateView) -> Option<String> {
    if view.transfers.is_empty() {
        return None;
    }
    let n = view.transfers.len();
    let each: Vec<String> = view
        .transfers
        .iter()
        .take(5)
        .map(|t| {
            let pct = t
                .bytes_total
                .filter(|total| *total > 0)
                .map(|total| {
                    format!(
                        " {}%",
                        u128::from(t.bytes_done.min(total)) * 100 / u128::from(total)
                    )
                })
                .unwrap_or_default();
            match t.direction {
                Direction::Down => format!("{}{pct} from {}", t.file_name, t.source),
                Direction::Up => format!("up: {}{pct} to {}", t.file_name, t.peer),
            }
        })
        .collect();
    let more = if n > 5 {
        format!(", {} more", n - 5)
    } else {
        String::new()
    };
    Some(format!(
        "{n} transfer{} in flight ({}{more}); type exit again to quit",
        if n == 1 { "" } else { "s" },
        each.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::view::TransferView;

    #[test]
    fn commands_parse_and_bad_ones_get_a_hint() {
        assert_eq!(parse("list"), MenuCommand::List);
        assert_eq!(parse("  peers "), MenuCommand::Peers);
        assert_eq!(parse(""), MenuCommand::Nothing);
        assert_eq!(
            parse("get abc /tmp/x y"),
            MenuCommand::Core(Command::Get {
                file: "abc".into(),
                dest: Some("/tmp/x y".into()),
                force: false,
            })
        );
        assert_eq!(
            parse("get abc"),
            MenuCommand::Core(Command::Get {
                file: "abc".into(),
                dest: None,
                force: false,
            })
        );
        assert!(matches!(parse("get"), MenuCommand::Invalid(_)));
        assert!(matches!(parse("push"), MenuCommand::Invalid(_)));
        assert!(matches!(parse("frobnicate"), MenuCommand::Invalid(_)));
        assert!(matches!(parse("list extra"), MenuCommand::Invalid(_)));
        assert_eq!(
            parse("push my file.txt"),
            MenuCommand::Core(Command::Push {
                path: "my file.txt".into()
            })
        );
    }

    #[test]
    fn get_takes_force_before_or_after_the_destination() {
        let forced = |dest: &str| {
            MenuCommand::Core(Command::Get {
                file: "ab12".into(),
                dest: Some(dest.into()),
                force: true,
            })
        };
        assert_eq!(parse("get ab12 out.bin --force"), forced("out.bin"));
        assert_eq!(parse("get ab12 --force out.bin"), forced("out.bin"));
        assert_eq!(
            parse("get ab12  --force  my file.bin "),
            forced("my file.bin")
        );
        assert_eq!(parse("get ab12 --force x --force"), forced("x"));
        // Part of a name, not the word: kept.
        assert_eq!(
            parse("get ab12 out--force"),
            MenuCommand::Core(Command::Get {
                file: "ab12".into(),
                dest: Some("out--force".into()),
                force: false,
            })
        );
        assert!(
            matches!(parse("get ab12 --force"), MenuCommand::Invalid(l) if l.contains("needs a dest"))
        );
        assert!(matches!(parse("get --force"), MenuCommand::Invalid(_)));
        assert!(HELP.contains("--force"));
    }

    fn state() -> StateView {
        StateView {
            peer_id: "me".into(),
            host: "127.0.0.1".into(),
            port: 9000,
            peers: vec![],
            files: vec![],
            files_total: 0,
            offset: 0,
            limit: 100,
            files_matching: 0,
            transfers: vec![],
            events: vec![],
            unix_now: 0,
        }
    }

    fn transfer(direction: Direction, name: &str, done: u64) -> TransferView {
        TransferView {
            id: 1,
            direction,
            state: crate::core::view::TransferState::Moving,
            peer: "bob (127.0.0.1:9002)".into(),
            eta_secs: Some(7),
            started_unix: 0,
            file_id: "ab".repeat(32),
            file_name: name.into(),
            source: "carol".into(),
            bytes_done: done,
            bytes_total: Some(100),
            rate_bytes_per_sec: 1024,
            sources: Vec::new(),
        }
    }

    #[test]
    fn exit_with_transfers_in_flight_says_what_would_be_lost() {
        let mut view = state();
        assert_eq!(exit_warning(&view), None, "nothing in flight: exit at once");
        view.transfers = vec![
            transfer(Direction::Down, "big.iso", 45),
            transfer(Direction::Up, "a.txt", 10),
        ];
        assert_eq!(
            exit_warning(&view).as_deref(),
            Some(
                "2 transfers in flight (big.iso 45% from carol, up: a.txt 10% to bob (127.0.0.1:9002)); type exit again to quit"
            )
        );
    }

    #[test]
    fn a_download_from_several_holders_lists_each_ones_share() {
        let mut view = state();
        let mut t = transfer(Direction::Down, "big.iso", 45);
        t.peer = "2 holders at once".into();
        let share = |peer: &str, bytes, state| crate::core::view::SourceView {
            peer: peer.into(),
            bytes,
            rate_bytes_per_sec: 2048,
            in_flight: 1,
            state,
        };
        t.sources = vec![
            share("carol (127.0.0.1:9003)", 4096, "active"),
            share("eve\u{1b}[2J (127.0.0.1:9004)", 0, "excluded"),
        ];
        view.transfers = vec![t];
        let out = render_transfers(&view);
        assert!(out.contains("big.iso, from 2 holders at once:"), "{out}");
        assert!(
            out.contains("carol (127.0.0.1:9003)  4.0 KiB at 2.0 KiB/s  1 in flight  active"),
            "{out}"
        );
        assert!(out.contains("excluded"), "{out}");
        assert!(!out.contains('\u{1b}'), "network names are escaped: {out}");
    }

    #[test]
    fn the_transfers_table_shows_both_directions() {
        let mut view = state();
        view.transfers = vec![
            transfer(Direction::Down, "big.iso", 45),
            transfer(Direction::Up, "a.txt", 10),
        ];
        let t = render_transfers(&view);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("DIR"), "{t}");
        assert!(
            lines[1].starts_with("down  big.iso") && lines[1].contains("45%"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("up") && lines[2].contains("bob (127.0.0.1:9002)"),
            "{t}"
        );
        assert!(
            lines[1].contains("1.0 KiB/s") && lines[1].ends_with("7s"),
            "{t}"
        );
    }

    #[test]
    fn list_shows_numeric_timestamps_as_local_date_times() {
        let shown = time_text(&serde_json::json!(1_744_169_352));
        assert_eq!(shown.len(), "2025-04-09 03:29".len(), "{shown}");
        assert!(shown.starts_with("2025-04-"), "{shown}");
        assert_eq!(time_text(&serde_json::json!("yesterday")), "yesterday");
        assert_eq!(time_text(&serde_json::json!(-5)), "-5");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y");
    }

    #[test]
    fn control_characters_from_the_network_are_not_printed() {
        assert_eq!(printable("a\x1b[2Jb"), "a\\x1b[2Jb");
    }
}
