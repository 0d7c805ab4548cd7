//! A sample [`StateView`] shared by the module's tests.

use crate::core::view::{
    Direction, EventKind, EventView, FileView, PeerView, StateView, TransferView,
};
use serde_json::json;

/// A small state with one peer, one local unverified file and one transfer.
pub(crate) fn sample_state() -> StateView {
    StateView {
        peer_id: "nanday".into(),
        host: "127.0.0.1".into(),
        port: 8001,
        peers: vec![PeerView {
            peer_id: "Silicon".into(),
            host: "silicon.cs.umanitoba.ca".into(),
            port: 8999,
            last_seen_secs_ago: 7,
            ranges: true,
        }],
        files: vec![FileView {
            file_id: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            file_name: "EldenRing.txt".into(),
            file_owner: "Silicon".into(),
            file_size: json!(1536),
            file_timestamp: json!(1744169352),
            local: true,
            verified: false,
            peers_with_file: vec!["Silicon".into(), "nanday".into()],
        }],
        files_total: 1,
        offset: 0,
        limit: 100,
        files_matching: 1,
        transfers: vec![TransferView {
            id: 1,
            direction: Direction::Down,
            state: crate::core::view::TransferState::Moving,
            peer: "Silicon (silicon.cs.umanitoba.ca:8999)".into(),
            file_id: "abc".into(),
            file_name: "big.bin".into(),
            source: "Silicon".into(),
            bytes_done: 768,
            bytes_total: Some(1024),
            rate_bytes_per_sec: 1536,
            sources: Vec::new(),
            eta_secs: Some(1),
            started_unix: 1_744_169_350,
        }],
        events: vec![EventView {
            at_unix: 1_744_169_351,
            kind: EventKind::PeerJoined,
            text: "Silicon (silicon.cs.umanitoba.ca:8999) joined".into(),
        }],
        unix_now: 1_744_169_352,
    }
}

/// Counts this test binary's allocations per thread, so a test can measure
/// the peak of a render ([`crate::fuzzing::Meter`]).
#[cfg(feature = "testkit")]
#[global_allocator]
static ALLOC: crate::fuzzing::MeteredAlloc = crate::fuzzing::MeteredAlloc;
