//! Downloads resumed at start: a download in flight at the last exit (or
//! crash) whose temp file is still there comes back with its bytes kept,
//! waits for a holder to be known (none is right after a start), and goes
//! on like any download, from the offset it reached when a holder serves
//! ranges.

use super::downloads::{Dest, Download, Origin};
use super::{Peer, Time, Timer};
use crate::ids::TransferId;
use crate::protocol::FileRecord;
use log::info;
use std::collections::VecDeque;
use std::time::Duration;

/// How often waiting resumed downloads look for a holder.
const RESUME_RETRY: Duration = Duration::from_secs(1);

impl Peer {
    /// A download of `record` was in flight at the last exit and the driver
    /// kept its first `kept` bytes: it is resumed (the id to keep them
    /// under), unless the file is held or being fetched already, or no
    /// longer in the catalog (then the driver drops them). `by_user`: a
    /// `get` asked for it (with `dest`), else auto-fetch did.
    pub fn resume_download(
        &mut self,
        now: Time,
        record: FileRecord,
        by_user: bool,
        dest: Option<Dest>,
        kept: u64,
    ) -> Option<TransferId> {
        let file = &record.file_id;
        if self.local_copy(file).is_some()
            || self.downloads.by_file(file).is_some()
            || self.catalog.get(file).is_none()
        {
            return None;
        }
        // More bytes than the file can have: not a prefix of it (the driver
        // drops them at the first attempt, which starts over).
        let kept = match super::downloads::size_upper_bound(&record.file_size) {
            Some(max) if kept > max => 0,
            _ => kept,
        };
        let id = self.downloads.next_id();
        let origin = if by_user {
            Origin::Menu(dest)
        } else {
            Origin::Auto
        };
        let line = format!(
            "resuming {} ({}): {} kept from the last run; waiting for its holders",
            record.file_name,
            record.file_size,
            crate::units::bytes(kept)
        );
        if by_user {
            self.print(format!("get: {line}"));
        } else {
            info!("auto-fetch: {line}");
        }
        self.downloads.insert(Download {
            id,
            record,
            remaining: VecDeque::new(),
            current: None,
            failures: Vec::new(),
            origins: vec![origin],
            bytes_done: kept,
            kept,
            current_from: 0,
            unverified_fallback: None,
            kept_took: None,
            queued: true,
            waiting_since: Some(now),
        });
        self.schedule(now.plus(RESUME_RETRY), Timer::ResumeWaiting);
        Some(id)
    }

    /// Starts the resumed downloads whose holders are known now; those
    /// still without one after the peer timeout fail (the driver drops
    /// their bytes), the others look again soon.
    pub(super) fn start_resumed(&mut self, now: Time) {
        let waiting: Vec<(TransferId, Time)> = self
            .downloads
            .iter()
            .filter_map(|d| Some((d.id, d.waiting_since?)))
            .collect();
        let mut still = false;
        for (id, since) in waiting {
            let Some(file) = self.downloads.get(id).map(|d| d.record.file_id.clone()) else {
                continue;
            };
            let sources = self.sources(&file);
            let given_up = now.since(since) >= self.cfg.peer_timeout;
            if sources.is_empty() && !given_up {
                still = true;
                continue;
            }
            if let Some(d) = self.downloads.get_mut(id) {
                d.waiting_since = None;
                d.remaining = VecDeque::from(sources);
                super::fetching::ranged_first(&self.members, &mut d.remaining);
            }
        }
        self.pump_queue(now);
        if still {
            self.schedule(now.plus(RESUME_RETRY), Timer::ResumeWaiting);
        }
    }
}
