//! Uploads in flight (GET_FILE replies we serve, pushes we send), as the
//! driver reports them, so `transfers`, the page and `/api/state` show
//! both directions. Bounded: past [`MAX_UPLOADS`] an upload still runs but
//! is not listed.

use super::view::{Direction, EventKind, TransferView};
use super::{Peer, Time};
use crate::ids::FileId;
use std::collections::BTreeMap;

/// Uploads listed at most (the driver's own stream cap is lower; this bounds
/// the registry whatever the driver does).
pub const MAX_UPLOADS: usize = 256;

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

/// One upload in flight.
#[derive(Clone, Debug)]
struct Upload {
    file_id: FileId,
    file_name: String,
    peer: String,
    total: u64,
    done: u64,
    started: Time,
    /// A push we send (false: a GET_FILE we answer).
    push: bool,
}

/// The registry.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    next: u64,
    live: BTreeMap<UploadId, Upload>,
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
        if self.uploads.live.len() >= MAX_UPLOADS {
            return None;
        }
        self.uploads.next += 1;
        let id = UploadId(self.uploads.next);
        let file_name = self
            .catalog
            .get(file)
            .map_or_else(|| file.0.clone(), |e| e.record.file_name.clone());
        let peer = self.name_addr(peer);
        self.uploads.live.insert(
            id,
            Upload {
                file_id: file.clone(),
                file_name,
                peer,
                total,
                done: 0,
                started: now,
                push,
            },
        );
        Some(id)
    }

    /// Data bytes written so far by upload `id`.
    pub fn on_upload_progress(&mut self, id: UploadId, done: u64) {
        if let Some(u) = self.uploads.live.get_mut(&id) {
            u.done = done;
        }
    }

    /// Upload `id` ended: it leaves the registry, one event says how.
    pub fn on_upload_ended(&mut self, now: Time, id: UploadId, end: UploadEnd) {
        let Some(u) = self.uploads.live.remove(&id) else {
            return;
        };
        let what = if u.push { "push of" } else { "upload of" };
        match end {
            UploadEnd::Done => self.event(
                now,
                EventKind::UploadDone,
                format!(
                    "{what} {} to {} done ({})",
                    u.file_name,
                    u.peer,
                    crate::units::bytes(u.total)
                ),
            ),
            UploadEnd::Failed(why) => self.event(
                now,
                EventKind::UploadFailed,
                format!(
                    "{what} {} to {} stopped at {}: {why}",
                    u.file_name,
                    u.peer,
                    crate::units::bytes(u.done)
                ),
            ),
        }
    }

    /// Whether upload `id` is a push we send.
    pub(crate) fn is_push_upload(&self, id: u64) -> bool {
        self.uploads.live.get(&UploadId(id)).is_some_and(|u| u.push)
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

    /// Uploads in flight as the view lists them.
    pub(crate) fn upload_views(&self, now: Time) -> Vec<TransferView> {
        self.uploads
            .live
            .iter()
            .map(|(id, u)| {
                let rate = mean_rate(u.done, now.since(u.started));
                TransferView {
                    id: id.0,
                    direction: Direction::Up,
                    peer: u.peer.clone(),
                    eta_secs: eta(u.done, Some(u.total), rate),
                    started_unix: self.events.unix(u.started),
                    file_id: u.file_id.0.clone(),
                    file_name: u.file_name.clone(),
                    source: String::new(),
                    bytes_done: u.done,
                    bytes_total: Some(u.total),
                    rate_bytes_per_sec: rate,
                }
            })
            .collect()
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
    fn an_eta_needs_a_size_and_a_rate() {
        assert_eq!(eta(50, Some(100), 10), Some(5));
        assert_eq!(eta(50, Some(101), 10), Some(6));
        assert_eq!(eta(50, None, 10), None);
        assert_eq!(eta(50, Some(100), 0), None);
    }
}
