//! Cheap upper bounds on how many bytes a view renders to, as HTML or as
//! JSON (one pass over each string, counting what each byte escapes to), so a page is cut to fit [`MAX_RESPONSE`] before anything is
//! rendered (or even copied out of the catalog): rendering first and
//! cutting after would build a response of tens of MiB from a page of
//! maximal, escape-heavy entries.

use super::page::{CSS, SCRIPT};
use super::MAX_RESPONSE;
use crate::core::view::{FileView, StateView};
use serde_json::Value;

/// Bytes `b` takes once escaped, the larger of HTML's and JSON's: `"`
/// becomes `&quot;`, a control character `\u001f` (6 for 1).
const fn escaped(b: u8) -> usize {
    match b {
        b'"' | 0..=0x1f => 6,
        b'&' | b'\'' => 5,
        b'<' | b'>' => 4,
        b'\\' => 2,
        _ => 1,
    }
}

/// Bytes `s` takes at most once escaped (one pass, no allocation).
fn escaped_len(s: &str) -> usize {
    s.bytes().map(escaped).sum()
}

/// Markup, field names and figures of one row or object beyond its
/// strings (tags, classes, a short id's `…`, a date title, numbers).
const ROW_MARKUP: usize = 1024;

/// Markup around each holder of a file (`", "` in HTML, `"",` in JSON).
const HOLDER_MARKUP: usize = 8;

/// The response head, the page's skeleton, headings and pager, beyond the
/// inline style and script and the strings counted.
const SKELETON: usize = 8 * 1024;

/// Bytes `v` takes as text at most, escaped: a string's, a number's digits.
fn value_len(v: &Value) -> usize {
    match v {
        Value::String(s) => escaped_len(s),
        Value::Null | Value::Bool(_) => 5,
        other => other.to_string().len(),
    }
}

/// At most how many bytes `file` adds to a response, either route (its id
/// appears twice on the page: title and short form; its timestamp as text
/// and as a date).
pub fn file_bound(file: &FileView) -> usize {
    let strings = 2 * escaped_len(&file.file_id)
        + escaped_len(&file.file_name)
        + escaped_len(&file.file_owner)
        + value_len(&file.file_size)
        + 2 * value_len(&file.file_timestamp);
    strings
        + file
            .peers_with_file
            .iter()
            .map(|h| holder_bound(h))
            .sum::<usize>()
        + ROW_MARKUP
}

fn holder_bound(holder: &str) -> usize {
    escaped_len(holder) + HOLDER_MARKUP
}

/// At most how many bytes the response for `state` takes, either route,
/// without its files (which [`file_bound`] counts).
pub fn base_bound(state: &StateView) -> usize {
    // The peer id and host appear in the title, the heading and the summary.
    let own = 3 * (escaped_len(&state.peer_id) + escaped_len(&state.host));
    let peers: usize = state
        .peers
        .iter()
        .map(|p| escaped_len(&p.peer_id) + escaped_len(&p.host) + ROW_MARKUP)
        .sum();
    let transfers: usize = state
        .transfers
        .iter()
        .map(|t| {
            2 * escaped_len(&t.file_id)
                + escaped_len(&t.file_name)
                + escaped_len(&t.source)
                + escaped_len(&t.peer)
                + ROW_MARKUP
        })
        .sum();
    let events: usize = state
        .events
        .iter()
        .map(|e| escaped_len(&e.text) + ROW_MARKUP)
        .sum();
    PAGE_RESERVE + own + peers + transfers + events
}

/// What [`base_bound`] leaves of [`MAX_RESPONSE`] for the files at most
/// before the rest is known: the inline style and script and the skeleton
/// (tracked peers and transfers are counted when the page is cut again).
pub const PAGE_RESERVE: usize = CSS.len() + SCRIPT.len() + SKELETON;

/// Counts the files of a page against what is left of [`MAX_RESPONSE`]
/// once the rest of the response is counted: [`FileBudget::fits`] is what
/// the core asks while it copies a page out of the catalog.
#[derive(Debug)]
pub struct FileBudget {
    left: usize,
}

impl FileBudget {
    /// The room left for files, given at most `base` bytes of the rest.
    pub fn new(base: usize) -> Self {
        FileBudget {
            left: MAX_RESPONSE.saturating_sub(base),
        }
    }

    /// Whether `file` still fits; if so, its room is taken.
    pub fn fits(&mut self, file: &FileView) -> bool {
        match self.left.checked_sub(file_bound(file)) {
            Some(left) => {
                self.left = left;
                true
            }
            None => {
                self.left = 0;
                false
            }
        }
    }
}

/// Cuts `state`'s files to those that fit [`MAX_RESPONSE`] with the rest
/// of the response (the first is always kept); a cut page's `limit` says
/// how many it holds. A first file too large alone (256 holders of 1 KiB
/// ids) lists only the holders that fit.
pub fn cut_to_fit(state: &mut StateView) {
    let base = base_bound(state);
    if let Some(first) = state.files.first_mut() {
        let mut over = (base + file_bound(first)).saturating_sub(MAX_RESPONSE);
        while over > 0 {
            let Some(h) = first.peers_with_file.pop() else {
                break;
            };
            over = over.saturating_sub(holder_bound(&h));
        }
    }
    let mut budget = FileBudget::new(base);
    let keep = state
        .files
        .iter()
        .enumerate()
        .take_while(|(i, f)| budget.fits(f) || *i == 0)
        .count();
    if keep < state.files.len() {
        state.files.truncate(keep);
        state.limit = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::view::{PeerView, TransferView};
    use crate::http::test_support::sample_state;
    use crate::http::{render, render_bounded, Route};
    use serde_json::json;

    /// `n` bytes that each grow 5 or 6 times when escaped (as HTML or JSON).
    fn nasty(n: usize) -> String {
        "\"\u{1}'".repeat(n / 3)
    }

    /// A file with every string at the protocol's caps, all escape-heavy.
    fn maximal_file(i: usize) -> FileView {
        FileView {
            file_id: format!("{i:04}{}", nasty(1020)),
            file_name: nasty(16 * 1024),
            file_owner: nasty(1024),
            file_size: json!(1536),
            file_timestamp: Value::String(nasty(1024)),
            local: false,
            verified: true,
            peers_with_file: (0..256).map(|h| format!("{h:03}{}", nasty(1020))).collect(),
        }
    }

    fn bound(state: &StateView) -> usize {
        base_bound(state) + state.files.iter().map(file_bound).sum::<usize>()
    }

    #[test]
    fn the_bound_is_never_below_what_either_route_renders() {
        let mut heavy = sample_state();
        heavy.peer_id = nasty(256);
        heavy.host = nasty(255);
        heavy.peers = vec![
            PeerView {
                peer_id: nasty(256),
                host: nasty(255),
                port: 65535,
                last_seen_secs_ago: u64::MAX,
                ranges: true,
            };
            3
        ];
        heavy.files = (0..3).map(maximal_file).collect();
        heavy.files[1].file_size = json!(1.7906866073608398);
        heavy.files[2].file_timestamp = json!(1744169352.5);
        heavy.transfers = vec![TransferView {
            id: u64::MAX,
            direction: crate::core::view::Direction::Up,
            state: crate::core::view::TransferState::Moving,
            peer: nasty(256),
            file_id: nasty(1024),
            file_name: nasty(16 * 1024),
            source: nasty(256),
            bytes_done: u64::MAX,
            bytes_total: Some(u64::MAX),
            rate_bytes_per_sec: u64::MAX,
            sources: Vec::new(),
            eta_secs: Some(u64::MAX),
            started_unix: u64::MAX,
        }];
        heavy.events = vec![
            crate::core::view::EventView {
                at_unix: u64::MAX,
                kind: crate::core::view::EventKind::UploadFailed,
                text: nasty(1024),
            };
            100
        ];
        for state in [sample_state(), heavy] {
            for route in [Route::Page, Route::ApiState] {
                let len = render(route, false, &state).len();
                assert!(len <= bound(&state), "{route:?}: {len} > {}", bound(&state));
            }
        }
    }

    #[test]
    fn a_page_of_maximal_escape_heavy_files_is_cut_before_rendering_and_stays_under_the_cap() {
        let mut state = sample_state();
        state.files = (0..100).map(maximal_file).collect();
        state.files_total = 100;
        state.limit = 100;
        let metered = crate::fuzzing::meter_installed();
        for route in [Route::Page, Route::ApiState] {
            let meter = crate::fuzzing::Meter::start();
            let resp = render_bounded(route, state.clone());
            let largest = meter.largest();
            // The peak again without the cut's frees, which come first.
            let mut fitted = state.clone();
            cut_to_fit(&mut fitted);
            let meter = crate::fuzzing::Meter::start();
            let again = render_bounded(route, fitted);
            let peak = meter.peak();
            assert_eq!(again, resp);
            eprintln!(
                "{route:?}: {} bytes, largest allocation {} KiB, peak {} KiB while rendering",
                resp.len(),
                largest / 1024,
                peak / 1024
            );
            assert!(
                resp.len() <= MAX_RESPONSE,
                "{route:?}: {} bytes",
                resp.len()
            );
            if metered {
                // The body and the response it is copied into, each grown
                // by doubling: a few MiB, never the page's tens of MiB.
                assert!(
                    largest <= 2 * MAX_RESPONSE,
                    "{route:?}: {largest} bytes at once"
                );
                assert!(peak <= 4 * MAX_RESPONSE, "{route:?}: peak {peak} bytes");
            } else {
                eprintln!("allocation meter not installed: peak not checked");
            }
            let body = &resp[resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
            if route == Route::ApiState {
                let json: Value = serde_json::from_slice(body).expect("JSON");
                let shown = json["files"].as_array().expect("files").len();
                assert!((1..100).contains(&shown), "{shown} files");
                assert_eq!(json["limit"], shown);
                assert_eq!(json["files_total"], 100);
            }
        }
    }

    #[test]
    fn the_core_copies_no_more_files_than_fit() {
        let file = maximal_file(0);
        let per_file = file_bound(&file);
        let mut budget = FileBudget::new(PAGE_RESERVE);
        let fitting = (0..100).take_while(|_| budget.fits(&file)).count();
        assert_eq!(fitting, (MAX_RESPONSE - PAGE_RESERVE) / per_file);
        assert!(fitting * per_file <= MAX_RESPONSE);
        // Once refused, nothing more fits (a later small file would be
        // out of order).
        assert!(!budget.fits(&sample_state().files[0]));
    }
}
