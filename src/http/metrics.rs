//! `/metrics`: the peer's counters and gauges in the Prometheus text
//! exposition format (version 0.0.4), rendered from a [`Snapshot`] the
//! driver fills at render time (at most once per cache interval, like
//! `/api/state`).
//!
//! Written here rather than with `prometheus-client`: our counters are
//! plain `u64` fields owned by the sans-IO core and the driver, and that
//! crate's registry wants atomic metrics registered once (or a custom
//! collector) — more code than the format itself, which is a few
//! `HELP`/`TYPE` lines and samples whose label values come from fixed sets
//! (the version string, the only free one, is escaped). A test parses the
//! output with a real Prometheus parser (`tests/see_metrics.rs`).

use crate::core::counters::{Counters, GossipLimit, FAILURE_LABELS};
use crate::net::counters::{NetCounters, NetLimit, MESSAGE_TYPES};
use std::fmt::Write;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Open connections, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connections {
    /// Peer connections that came to our P2P port.
    pub peer_in: usize,
    /// Peer connections we opened (messages, pushes, downloads).
    pub peer_out: usize,
    /// Connections to the HTTP port.
    pub http: usize,
    /// Connections whose work is done, waiting for the other side's FIN.
    pub closing: usize,
}

/// Everything `/metrics` shows, read when it is rendered.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    /// The core's decisions, counted.
    pub core: &'a Counters,
    /// The driver's I/O, counted.
    pub net: &'a NetCounters,
    /// Pushed files refused by the push quota since start.
    pub push_refused: u64,
    /// Peers tracked now.
    pub peers_tracked: usize,
    /// Files in the catalog.
    pub files_known: usize,
    /// Files we hold a copy of.
    pub files_held: usize,
    /// Open connections.
    pub connections: Connections,
    /// Bytes held by unfinished inbound messages (the inbound budget in use).
    pub inbound_buffered: usize,
    /// The process's resident memory, when `/proc/self/statm` could be read.
    pub rss_bytes: Option<u64>,
}

/// One metric family being written: its HELP and TYPE lines first.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// A label value as the format wants it: backslash, double quote and
/// newline escaped.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The body of `/metrics`. Its size is bounded: every label comes from a
/// fixed set, so the series are the same few dozen whatever happens.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let (core, net) = (s.core, s.net);

    let o = &mut out;
    family(
        o,
        "peershare_build_info",
        "gauge",
        "The peershare version running (always 1).",
    )
    .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1);

    let mut f = family(
        o,
        "peershare_peer_bytes_total",
        "counter",
        "Bytes read (in) and written (out) on peer connections; HTTP not included.",
    );
    f.sample(&[("direction", "in")], net.bytes_in);
    f.sample(&[("direction", "out")], net.bytes_out);

    let mut f = family(
        o,
        "peershare_file_data_bytes_total",
        "counter",
        "File bytes carried by FILE_DATA: stored from downloads (down), sent to peers, a range as its length (up).",
    );
    f.sample(&[("direction", "down")], core.downloaded_bytes);
    f.sample(&[("direction", "up")], net.file_bytes_served);

    let mut f = family(o, "peershare_transfers_started_total", "counter",
        "Transfers started: download attempts, one per source tried (down); GET_FILE answered with a file, pushes (up).");
    f.sample(&[("direction", "down")], core.downloads_started);
    f.sample(&[("direction", "up")], net.uploads_started);

    let mut f = family(
        o,
        "peershare_transfers_succeeded_total",
        "counter",
        "Transfers ended well: a verified copy stored (down), a FILE_DATA written whole (up).",
    );
    f.sample(&[("direction", "down")], core.downloads_succeeded);
    f.sample(&[("direction", "up")], net.uploads_succeeded);

    let mut f = family(
        o,
        "peershare_transfers_failed_total",
        "counter",
        "Transfers that failed, by direction and reason.",
    );
    for (direction, failed) in [
        ("down", &core.downloads_failed),
        ("up", &net.uploads_failed),
    ] {
        for reason in FAILURE_LABELS {
            let n = failed.get(reason).copied().unwrap_or(0);
            f.sample(&[("direction", direction), ("reason", reason)], n);
        }
    }

    let mut f = family(
        o,
        "peershare_resumed_bytes_total",
        "counter",
        "File bytes not fetched again: a download resumed from the bytes it kept after a cut or a restart.",
    );
    f.sample(&[], core.resumed_bytes);

    let mut f = family(
        o,
        "peershare_messages_total",
        "counter",
        "Peer messages received whole (in) and set out to send (out), by type.",
    );
    for (direction, count) in [("in", 0), ("out", 1)] {
        for (i, kind) in MESSAGE_TYPES.iter().enumerate() {
            let n = if count == 0 {
                net.messages_in(i)
            } else {
                net.messages_out(i)
            };
            f.sample(&[("direction", direction), ("type", kind)], n);
        }
    }

    let mut f = family(
        o,
        "peershare_dropped_total",
        "counter",
        "GOSSIPs left unanswered, dials, pushes and inbound connections turned away, by limit.",
    );
    for limit in GossipLimit::ALL {
        f.sample(&[("limit", limit.label())], core.gossip_dropped(limit));
    }
    for limit in NetLimit::ALL {
        f.sample(&[("limit", limit.label())], net.dropped(limit));
    }
    f.sample(&[("limit", "push_quota")], s.push_refused);

    family(o, "peershare_peers_tracked", "gauge", "Peers tracked now.")
        .sample(&[], s.peers_tracked as u64);
    family(o, "peershare_files_known", "gauge", "Files in the catalog.")
        .sample(&[], s.files_known as u64);
    family(
        o,
        "peershare_files_held",
        "gauge",
        "Files we hold a copy of.",
    )
    .sample(&[], s.files_held as u64);

    let c = s.connections;
    let mut f = family(
        o,
        "peershare_connections",
        "gauge",
        "Open connections, by kind.",
    );
    f.sample(&[("kind", "peer_in")], c.peer_in as u64);
    f.sample(&[("kind", "peer_out")], c.peer_out as u64);
    f.sample(&[("kind", "http")], c.http as u64);
    f.sample(&[("kind", "closing")], c.closing as u64);

    family(
        o,
        "peershare_inbound_buffered_bytes",
        "gauge",
        "Bytes held by unfinished inbound messages (the inbound budget in use).",
    )
    .sample(&[], s.inbound_buffered as u64);
    if let Some(rss) = s.rss_bytes {
        family(
            o,
            "peershare_resident_memory_bytes",
            "gauge",
            "Resident memory of the process.",
        )
        .sample(&[], rss);
    }
    out
}

/// The resident memory of this process, from `/proc/self/statm` (its
/// second field, in pages); None where it can't be read.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size()))
}

/// The system's page size (4 KiB if it can't be told).
#[allow(unsafe_code)]
fn page_size() -> u64 {
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot<'a>(core: &'a Counters, net: &'a NetCounters) -> Snapshot<'a> {
        Snapshot {
            core,
            net,
            push_refused: 2,
            peers_tracked: 3,
            files_known: 5,
            files_held: 4,
            connections: Connections {
                peer_in: 1,
                peer_out: 2,
                http: 1,
                closing: 0,
            },
            inbound_buffered: 77,
            rss_bytes: Some(4096),
        }
    }

    fn value_of(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let (core, net) = (Counters::default(), NetCounters::default());
        let text = render(&snapshot(&core, &net));
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or("").to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
        assert!(declared.iter().all(|n| n.starts_with("peershare_")));
        let counters = text.lines().filter(|l| l.ends_with(" counter"));
        assert!(counters.into_iter().all(|l| l.contains("_total ")));
    }

    #[test]
    fn the_counters_shown_are_the_ones_counted() {
        let mut net = NetCounters::default();
        net.bytes_in = 1234;
        net.message_in("GOSSIP");
        net.message_in("GOSSIP");
        net.message_out("GET_FILE");
        net.dropped_by(NetLimit::DialLimit);
        net.uploads_failed.insert("stalled", 3);
        let core = Counters::default();
        let text = render(&snapshot(&core, &net));
        assert_eq!(
            value_of(&text, "peershare_peer_bytes_total{direction=\"in\"}"),
            Some(1234)
        );
        assert_eq!(
            value_of(
                &text,
                "peershare_messages_total{direction=\"in\",type=\"GOSSIP\"}"
            ),
            Some(2)
        );
        assert_eq!(
            value_of(
                &text,
                "peershare_messages_total{direction=\"out\",type=\"GET_FILE\"}"
            ),
            Some(1)
        );
        assert_eq!(
            value_of(&text, "peershare_dropped_total{limit=\"dial_limit\"}"),
            Some(1)
        );
        assert_eq!(
            value_of(&text, "peershare_dropped_total{limit=\"push_quota\"}"),
            Some(2)
        );
        assert_eq!(
            value_of(
                &text,
                "peershare_transfers_failed_total{direction=\"up\",reason=\"stalled\"}"
            ),
            Some(3)
        );
        assert_eq!(value_of(&text, "peershare_files_held"), Some(4));
        assert_eq!(
            value_of(&text, "peershare_resident_memory_bytes"),
            Some(4096)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_rendering_stays_small_whatever_was_counted() {
        let mut net = NetCounters::default();
        for _ in 0..10_000 {
            net.message_in("NOT_A_TYPE");
        }
        let core = Counters::default();
        let text = render(&snapshot(&core, &net));
        assert!(text.len() < 16 * 1024, "{} bytes", text.len());
    }

    #[test]
    fn the_resident_memory_of_this_process_is_read() {
        let rss = rss_bytes().expect("/proc/self/statm is readable on Linux");
        assert!(rss > 0);
    }
}
