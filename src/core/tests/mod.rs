//! Unit tests of the peer as a whole, driven through its public events,
//! grouped by concern; the helpers they share are here.

use super::*;
use crate::protocol::{FileSize, Timestamp};
use rand::SeedableRng;

mod fetching;
mod inbound;
mod ranges;
mod resume;
mod rounds;
mod swarming;

fn peer() -> Peer {
    let cfg = Config {
        well_known: vec![PeerAddr::new("127.0.0.1", 9999)],
        ..Config::for_tests("me", PeerAddr::new("127.0.0.1", 9000))
    };
    Peer::for_tests(cfg, 7)
}

fn record(id: &str, owner: &str) -> FileRecord {
    FileRecord {
        file_name: format!("{id}.txt"),
        file_size: FileSize::Bytes(3),
        file_id: id.into(),
        file_owner: owner.into(),
        file_timestamp: Timestamp::from_secs(1),
    }
}

fn reply_from(peer: &str, port: u16) -> Message {
    Message::GossipReply {
        host: "127.0.0.1".into(),
        port,
        peer_id: peer.into(),
        files: vec![],
        ranges: false,
    }
}

fn gossip_from(peer: &str, port: u16, id: &str) -> Message {
    Message::Gossip {
        host: "127.0.0.1".into(),
        port,
        id: id.into(),
        peer_id: peer.into(),
        ranges: false,
    }
}

/// (destination port, message kind, GOSSIP id) of every send.
fn sends(effects: &[Effect]) -> Vec<(u16, &'static str, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, msg } => Some((
                to.port,
                msg.kind(),
                match msg {
                    Message::Gossip { id, .. } => id.clone(),
                    _ => String::new(),
                },
            )),
            _ => None,
        })
        .collect()
}

/// When the catch-ups in `effects` are scheduled.
fn catch_ups(effects: &[Effect]) -> Vec<Time> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Schedule {
                at,
                timer: Timer::CatchUp,
            } => Some(*at),
            _ => None,
        })
        .collect()
}

fn printed(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Print(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

/// The log lines (level and text) the core wrote on this thread while `f`
/// ran: a process-wide logger that keeps records only for threads that
/// asked, so tests running in parallel don't see each other's lines.
fn logged(f: impl FnOnce()) -> Vec<String> {
    use std::cell::RefCell;
    use std::sync::Once;

    /// Lines kept per capture at most (a test logs a handful).
    const MAX_LINES: usize = 1_000;

    thread_local! {
        static LINES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    }
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            LINES.with(|l| {
                if let Some(lines) = l.borrow_mut().as_mut() {
                    if lines.len() < MAX_LINES {
                        lines.push(format!("{} {}", record.level(), record.args()));
                    }
                }
            });
        }
        fn flush(&self) {}
    }
    static CAPTURE: Capture = Capture;
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&CAPTURE).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    });
    LINES.with(|l| *l.borrow_mut() = Some(Vec::new()));
    f();
    LINES.with(|l| l.borrow_mut().take().unwrap_or_default())
}
