//! docs/API.md and the code held together: every key path of a rendered
//! `/api/state` (with a transfer, an event, a peer and a file in it) is in
//! the doc's field table, every field the table documents exists, and
//! every event kind is documented.

use peershare::core::view::{
    Direction, EventKind, EventView, FileView, PeerView, StateView, TransferView,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md");
    std::fs::read_to_string(path).expect("docs/API.md")
}

/// The first column (in backticks) of the table whose header row starts
/// with `header`.
fn table_keys(doc: &str, header: &str) -> BTreeSet<String> {
    doc.lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let first = l.trim_start_matches('|').split('|').next()?.trim();
            Some(first.strip_prefix('`')?.strip_suffix('`')?.to_owned())
        })
        .collect()
}

/// Every key path in `v`: `a`, `a[]`, `a[].b` (arrays through their first
/// element).
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                key_paths(v, &path, out);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                key_paths(first, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn full_state() -> StateView {
    StateView {
        peer_id: "me".into(),
        host: "127.0.0.1".into(),
        port: 9001,
        peers: vec![PeerView {
            peer_id: "carol".into(),
            host: "127.0.0.1".into(),
            port: 9002,
            last_seen_secs_ago: 3,
            ranges: true,
        }],
        files: vec![FileView {
            file_id: "ab".repeat(32),
            file_name: "a.txt".into(),
            file_owner: "carol".into(),
            file_size: json!(3),
            file_timestamp: json!(1_750_000_000),
            local: false,
            verified: true,
            peers_with_file: vec!["carol".into()],
        }],
        files_total: 1,
        offset: 0,
        limit: 100,
        files_matching: 1,
        transfers: vec![TransferView {
            id: 1,
            direction: Direction::Down,
            state: peershare::core::view::TransferState::Moving,
            peer: "carol (127.0.0.1:9002)".into(),
            file_id: "ab".repeat(32),
            file_name: "a.txt".into(),
            source: "carol".into(),
            bytes_done: 1,
            bytes_total: Some(3),
            rate_bytes_per_sec: 1,
            eta_secs: Some(2),
            started_unix: 1_750_000_000,
            sources: vec![peershare::core::view::SourceView {
                peer: "carol (127.0.0.1:9002)".into(),
                bytes: 1,
                rate_bytes_per_sec: 1,
                in_flight: 1,
                state: "active",
            }],
        }],
        events: vec![EventView {
            at_unix: 1_750_000_001,
            kind: EventKind::PeerJoined,
            text: "carol (127.0.0.1:9002) joined".into(),
        }],
        unix_now: 1_750_000_002,
    }
}

#[test]
fn every_field_of_the_state_is_documented_and_every_documented_field_exists() {
    let rendered = serde_json::to_value(full_state()).expect("serialize");
    let mut paths = BTreeSet::new();
    key_paths(&rendered, "", &mut paths);
    let documented = table_keys(&doc(), "| Field |");
    assert!(
        documented.len() > 20,
        "the field table was not found: {documented:?}"
    );
    let undocumented: Vec<_> = paths.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/API.md: {undocumented:?}"
    );
    let missing: Vec<_> = documented.difference(&paths).collect();
    assert!(
        missing.is_empty(),
        "documented but not in /api/state: {missing:?}"
    );
}

#[test]
fn every_event_kind_and_query_parameter_is_documented() {
    let doc = doc();
    let kinds = table_keys(&doc, "| Kind |");
    let all = [
        EventKind::PeerJoined,
        EventKind::PeerDropped,
        EventKind::Saved,
        EventKind::SourceFailed,
        EventKind::DownloadFailed,
        EventKind::Refused,
        EventKind::Deleted,
        EventKind::Pushed,
        EventKind::UploadDone,
        EventKind::UploadFailed,
        EventKind::PushInDone,
        EventKind::PushInFailed,
    ];
    let names: BTreeSet<String> = all
        .iter()
        .map(|k| {
            serde_json::to_value(k)
                .expect("kind")
                .as_str()
                .expect("a string")
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, names);
    let params = table_keys(&doc, "| Parameter |");
    let want: BTreeSet<String> = ["offset", "limit", "q", "sort", "order"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(params, want);
    for direction in [Direction::Down, Direction::Up] {
        let name = serde_json::to_value(direction).expect("direction");
        let name = name.as_str().expect("a string");
        assert!(doc.contains(&format!("`{name}`")), "direction {name}");
    }
    for route in [
        "`/api/get`",
        "`/api/delete`",
        "X-Peershare-Token",
        "Origin",
        "--http-host",
    ] {
        assert!(doc.contains(route), "{route}");
    }
}
