//! Transfers the network drives, as the driver reports them: uploads
//! (GET_FILE replies we serve, pushes we send) and pushes we receive (an
//! unsolicited FILE_DATA), so `transfers`, the page and `/api/state` show
//! both directions. Our own downloads live in `downloads`. Bounded: past
//! [`MAX_UPLOADS`] a transfer still runs but is not listed.

use super::view::{Direction, EventKind, TransferView};
use super::{Peer, Time};
use crate::ids::FileId;
use log::debug;
use std::collections::BTreeMap;

/// Uploads listed at most (the driver's own stream cap is lower; this bounds
/// the registry whatever the driver does).
pub const MAX_UPLOADS: usize = 256;

/// `push_in_failed` events at most per [`PUSH_IN_FAILED_WINDOW`]: a sender
/// can cut pushes short (or have them refused by the quota) as fast as it
/// connects, and the events ring would hold nothing else.
pub const PUSH_IN_FAILED_EVENTS: u32 = 10;
/// The window of [`PUSH_IN_FAILED_EVENTS`].
pub const PUSH_IN_FAILED_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// An upload's number in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UploadId(pub u64);

/// How an upload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadEnd {
    /// Every byte was written.
    Done,
    /// It stopped early (the driver's sentence: the peer closed, the file
    /// changed on disk...).
    Failed(String),
}

/// Which of the network's transfers an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UploadKind {
    /// A GET_FILE reply we serve.
    Serve,
    /// A push we send.
    PushOut,
    /// A push we receive: its file is named only once its header is read.
    PushIn,
}

/// One transfer in flight.
#[derive(Clone, Debug)]
struct Upload {
    /// Empty for a push we receive (the driver sees its bytes, not yet its
    /// header).
    file_id: FileId,
    file_name: String,
    peer: String,
    /// Unknown for a push we receive until it ends.
    total: Option<u64>,
    done: u64,
    started: Time,
    kind: UploadKind,
}

/// What a push we receive is called until its header is read.
const PUSH_IN_NAME: &str = "(pushed file)";

/// The registry.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    next: u64,
    live: BTreeMap<UploadId, Upload>,
    /// When the current window of `push_in_failed` events began, and how
    /// many it holds.
    failed_window: Option<(Time, u32)>,
}

impl Peer {
    /// The driver began streaming `file` (`total` data bytes) to `peer`
    /// (its address as the driver knows it), as a reply to GET_FILE or as
    /// a push we send. None when the registry is full: the upload runs
    /// unlisted.
    pub fn on_upload_started(
        &mut self,
        now: Time,
        peer: &str,
        file: &FileId,
        total: u64,
        push: bool,
    ) -> Option<UploadId> {
        let file_name = self
            .catalog
            .get(file)
            .map_or_else(|| file.0.clone(), |e| e.record.file_name.clone());
        let kind = if push {
            UploadKind::PushOut
        } else {
            UploadKind::Serve
        };
        self.register_upload(Upload {
            file_id: file.clone(),
            file_name,
            peer: self.name_addr(peer),
            total: Some(total),
            done: 0,
            started: now,
            kind,
        })
    }

    /// The driver began receiving an unsolicited FILE_DATA's bytes from
    /// `from` ("host:port" of the connection): listed as a download from
    /// that address (the sender's peer id is not in a FILE_DATA). None when
    /// the registry is full: the push runs unlisted.
    pub fn on_push_in_started(&mut self, now: Time, from: &str) -> Option<UploadId> {
        self.register_upload(Upload {
            file_id: FileId(String::new()),
            file_name: PUSH_IN_NAME.to_string(),
            peer: self.name_addr(from),
            total: None,
            done: 0,
            started: now,
            kind: UploadKind::PushIn,
        })
    }

    /// A push we receive (`id`) arrived whole as `file_name` (`total`
    /// bytes): it leaves the registry with an event. Whether it is stored
    /// is said apart (`saved`, or `refused`).
    pub fn on_push_in_received(&mut self, now: Time, id: UploadId, file_name: &str, total: u64) {
        if let Some(u) = self.uploads.live.get_mut(&id) {
            u.file_name = file_name.to_string();
            u.total = Some(total);
            u.done = total;
        }
        self.on_upload_ended(now, id, UploadEnd::Done);
    }

    fn register_upload(&mut self, upload: Upload) -> Option<UploadId> {
        if self.uploads.live.len() >= MAX_UPLOADS {
            return None;
        }
        self.uploads.next += 1;
        let id = UploadId(self.uploads.next);
        self.uploads.live.insert(id, upload);
        Some(id)
    }

    /// Data bytes moved so far by transfer `id` (sent, or received for a
    /// push we receive).
    pub fn on_upload_progress(&mut self, id: UploadId, done: u64) {
        if let Some(u) = self.uploads.live.get_mut(&id) {
            u.done = done;
        }
    }

    /// Transfer `id` ended: it leaves the registry, one event says how.
    pub fn on_upload_ended(&mut self, now: Time, id: UploadId, end: UploadEnd) {
        let Some(u) = self.uploads.live.remove(&id) else {
            return;
        };
        let size = crate::units::bytes(u.total.unwrap_or(u.done));
        let at = crate::units::bytes(u.done);
        let (kind, text) = match (u.kind, end) {
            (UploadKind::PushIn, UploadEnd::Done) => (
                EventKind::PushInDone,
                format!("push of {} from {} received ({size})", u.file_name, u.peer),
            ),
            (UploadKind::PushIn, UploadEnd::Failed(why)) => {
                let text = format!("push from {} stopped at {at}: {why}", u.peer);
                if !self.uploads.may_say_push_in_failed(now) {
                    debug!("{text} (not an event: too many lately)");
                    return;
                }
                (EventKind::PushInFailed, text)
            }
            (out, UploadEnd::Done) => (
                EventKind::UploadDone,
                format!("{} {} to {} done ({size})", what(out), u.file_name, u.peer),
            ),
            (out, UploadEnd::Failed(why)) => (
                EventKind::UploadFailed,
                format!(
                    "{} {} to {} stopped at {at}: {why}",
                    what(out),
                    u.file_name,
                    u.peer
                ),
            ),
        };
        self.event(now, kind, text);
    }

    /// Uploads in flight now.
    pub fn uploads_len(&self) -> usize {
        self.uploads.live.len()
    }

    /// "peer_id (host:port)" for the tracked peer at `addr` ("host:port"),
    /// or at its host when exactly one tracked peer is there (an inbound
    /// connection comes from an ephemeral port); else `addr` as it is.
    pub fn name_addr(&self, addr: &str) -> String {
        let all = self.members.all();
        if let Some((id, _)) = all.iter().find(|(_, p)| p.addr.to_string() == addr) {
            return format!("{id} ({addr})");
        }
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let mut at_host = all.iter().filter(|(_, p)| p.addr.host == host);
        match (at_host.next(), at_host.next()) {
            (Some((id, p)), None) => format!("{id} ({})", p.addr),
            _ => addr.to_string(),
        }
    }

    /// "peer_id (host:port)" for the tracked peer listening at `addr`
    /// exactly, else `addr`: how logs name an address we dial (its port is
    /// a listening port, so unlike [`Peer::name_addr`] the host alone never
    /// names a peer). O(1): it runs for every debug line of a flood.
    pub fn name_listener(&self, addr: &crate::ids::PeerAddr) -> String {
        match self.members.id_at(addr) {
            Some(id) => format!("{id} ({addr})"),
            None => addr.to_string(),
        }
    }

    /// Every transfer of the registry as the view lists them.
    pub(crate) fn upload_views(&self, now: Time) -> Vec<TransferView> {
        self.views_where(now, |_| true)
    }

    /// The pushes we send, for the progress line (which shows what the
    /// user started: not what we serve, nor pushes we receive).
    pub(crate) fn push_out_views(&self, now: Time) -> Vec<TransferView> {
        self.views_where(now, |kind| kind == UploadKind::PushOut)
    }

    fn views_where(&self, now: Time, keep: fn(UploadKind) -> bool) -> Vec<TransferView> {
        self.uploads
            .live
            .iter()
            .filter(|(_, u)| keep(u.kind))
            .map(|(id, u)| {
                let rate = mean_rate(u.done, now.since(u.started));
                // A push we receive reads as a download from its sender.
                let (direction, source) = match u.kind {
                    UploadKind::PushIn => (Direction::Down, u.peer.clone()),
                    UploadKind::Serve | UploadKind::PushOut => (Direction::Up, String::new()),
                };
                TransferView {
                    id: id.0,
                    direction,
                    state: super::view::TransferState::Moving,
                    peer: u.peer.clone(),
                    eta_secs: eta(u.done, u.total, rate),
                    started_unix: self.events.unix(u.started),
                    file_id: u.file_id.0.clone(),
                    file_name: u.file_name.clone(),
                    source,
                    bytes_done: u.done,
                    bytes_total: u.total,
                    rate_bytes_per_sec: rate,
                    sources: Vec::new(),
                }
            })
            .collect()
    }
}

impl Uploads {
    /// Whether one more `push_in_failed` event fits the current window.
    fn may_say_push_in_failed(&mut self, now: Time) -> bool {
        let (start, said) = match self.failed_window {
            Some((start, said)) if now.since(start) < PUSH_IN_FAILED_WINDOW => (start, said),
            _ => (now, 0),
        };
        let fits = said < PUSH_IN_FAILED_EVENTS;
        self.failed_window = Some((start, said + u32::from(fits)));
        fits
    }
}

/// "upload of" or "push of", for an event's sentence.
fn what(kind: UploadKind) -> &'static str {
    match kind {
        UploadKind::PushOut | UploadKind::PushIn => "push of",
        UploadKind::Serve => "upload of",
    }
}

/// Bytes per second over `took`; 0 before any time passed.
pub(crate) fn mean_rate(bytes: u64, took: std::time::Duration) -> u64 {
    let secs = took.as_secs_f64();
    if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    }
}

/// Seconds left for `total - done` at `rate`; None when either is unknown.
pub(crate) fn eta(done: u64, total: Option<u64>, rate: u64) -> Option<u64> {
    let total = total?;
    if rate == 0 {
        return None;
    }
    Some(total.saturating_sub(done).div_ceil(rate))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use crate::ids::PeerAddr;

    #[test]
    fn the_registry_lists_at_most_its_cap_and_frees_ended_uploads() {
        let cfg = Config::for_tests("me", PeerAddr::new("127.0.0.1", 9000));
        let mut p = Peer::for_tests(cfg, 1);
        let file = FileId("ab".repeat(32));
        let ids: Vec<Option<UploadId>> = (0..MAX_UPLOADS + 5)
            .map(|_| p.on_upload_started(Time(0), "127.0.0.1:5000", &file, 10, false))
            .collect();
        assert!(ids[..MAX_UPLOADS].iter().all(Option::is_some));
        assert!(ids[MAX_UPLOADS..].iter().all(Option::is_none));
        assert_eq!(p.view(Time(0)).transfers.len(), MAX_UPLOADS);
        if let Some(id) = ids[0] {
            p.on_upload_progress(id, 10);
            p.on_upload_ended(Time(1_000), id, UploadEnd::Done);
        }
        assert_eq!(p.uploads_len(), MAX_UPLOADS - 1);
        let v = p.view(Time(1_000));
        assert_eq!(v.events.last().map(|e| e.kind), Some(EventKind::UploadDone));
        assert!(p
            .on_upload_started(Time(0), "127.0.0.1:5000", &file, 10, true)
            .is_some());
    }

    #[test]
    fn a_push_we_receive_is_a_download_named_by_address_and_off_the_progress_line() {
        let cfg = Config::for_tests("me", PeerAddr::new("127.0.0.1", 9000));
        let mut p = Peer::for_tests(cfg, 1);
        let id = p
            .on_push_in_started(Time(0), "10.0.0.7:40123")
            .expect("room");
        p.on_upload_progress(id, 3_000);
        let v = p.view(Time(1_000));
        let t = &v.transfers[0];
        assert_eq!(t.direction, Direction::Down);
        assert_eq!(t.peer, "10.0.0.7:40123");
        assert_eq!(t.source, "10.0.0.7:40123");
        assert_eq!((t.bytes_done, t.bytes_total), (3_000, None));
        assert_eq!(t.rate_bytes_per_sec, 3_000);
        assert!(p.progress_transfers(Time(1_000)).is_empty());
        p.on_push_in_received(Time(2_000), id, "song.ogg", 4_096);
        let v = p.view(Time(2_000));
        assert!(v.transfers.is_empty());
        let last = v.events.last().expect("an event");
        assert_eq!(last.kind, EventKind::PushInDone);
        assert_eq!(
            last.text,
            "push of song.ogg from 10.0.0.7:40123 received (4.0 KiB)"
        );
    }

    #[test]
    fn a_push_we_receive_that_stops_says_where_and_why() {
        let cfg = Config::for_tests("me", PeerAddr::new("127.0.0.1", 9000));
        let mut p = Peer::for_tests(cfg, 1);
        let id = p
            .on_push_in_started(Time(0), "10.0.0.7:40123")
            .expect("room");
        p.on_upload_progress(id, 2_048);
        p.on_upload_ended(Time(500), id, UploadEnd::Failed("the peer closed".into()));
        let v = p.view(Time(500));
        let last = v.events.last().expect("an event");
        assert_eq!(last.kind, EventKind::PushInFailed);
        assert_eq!(
            last.text,
            "push from 10.0.0.7:40123 stopped at 2.0 KiB: the peer closed"
        );
    }

    #[test]
    fn pushes_we_receive_cut_short_in_a_burst_fill_only_part_of_the_events() {
        let cfg = Config::for_tests("me", PeerAddr::new("127.0.0.1", 9000));
        let mut p = Peer::for_tests(cfg, 1);
        let failed_events = |p: &Peer, now| {
            p.view(now)
                .events
                .iter()
                .filter(|e| e.kind == EventKind::PushInFailed)
                .count()
        };
        for i in 0..25 {
            let id = p.on_push_in_started(Time(i), "10.0.0.9:1").expect("room");
            p.on_upload_ended(Time(i), id, UploadEnd::Failed("cut".into()));
        }
        assert_eq!(failed_events(&p, Time(100)), PUSH_IN_FAILED_EVENTS as usize);
        assert_eq!(p.uploads_len(), 0, "each left the list all the same");
        // A new window: said again.
        let id = p
            .on_push_in_started(Time(61_000), "10.0.0.9:1")
            .expect("room");
        p.on_upload_ended(Time(61_000), id, UploadEnd::Failed("cut".into()));
        assert_eq!(
            failed_events(&p, Time(61_000)),
            PUSH_IN_FAILED_EVENTS as usize + 1
        );
    }

    #[test]
    fn an_eta_needs_a_size_and_a_rate() {
        assert_eq!(eta(50, Some(100), 10), Some(5));
        assert_eq!(eta(50, Some(101), 10), Some(6));
        assert_eq!(eta(50, None, 10), None);
        assert_eq!(eta(50, Some(100), 0), None);
    }
}
