//! Downloads resumed at start: a download in flight at the last exit (or
//! crash) whose temp file is still there comes back at load, before its
//! bytes are hashed again (so nothing else starts the same file meanwhile);
//! once they are, it waits for a holder to be known (none is right after a
//! start) and goes on like any download, from the offset it reached when
//! a holder serves ranges.

use super::downloads::{Download, Origin};
use super::{Peer, Time, Timer};
use crate::ids::TransferId;
use crate::protocol::FileRecord;
use log::info;
use std::collections::VecDeque;
use std::time::Duration;

/// How often waiting resumed downloads look for a holder.
const RESUME_RETRY: Duration = Duration::from_secs(1);

impl Peer {
    /// A download of `record` was in flight at the last exit and its temp
    /// file holds `len` bytes, to be hashed again: it is resumed (the id its
    /// bytes are kept under), unless the file is held or being fetched
    /// already, no longer in the catalog, or only auto-fetch wanted it and
    /// auto-fetch is off now (then the driver drops them). `by_user`: a
    /// `get` asked for it, else auto-fetch did.
    pub fn resume_download(
        &mut self,
        now: Time,
        record: FileRecord,
        by_user: bool,
        len: u64,
    ) -> Option<TransferId> {
        let file = &record.file_id;
        if self.local_copy(file).is_some()
            || self.downloads.by_file(file).is_some()
            || self.catalog.get(file).is_none()
            || (!by_user && self.cfg.auto_fetch == 0)
        {
            return None;
        }
        let id = self.downloads.next_id();
        let origin = if by_user {
            Origin::Menu(None)
        } else {
            Origin::Auto
        };
        let line = format!(
            "resuming {} ({}): {} kept from the last run; waiting for its holders",
            record.file_name,
            record.file_size,
            crate::units::bytes(len)
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
            failures_said: 0,
            origins: vec![origin],
            bytes_done: len,
            kept: len,
            current_from: 0,
            unverified_fallback: None,
            kept_took: None,
            queued: true,
            waiting_since: Some(now),
            prefix_unchecked: true,
            resumed: true,
            swarm: None,
        });
        Some(id)
    }

    /// The driver hashed the bytes download `id` kept: `Some(len)`, they
    /// are its prefix; `None`, they could not be read (it starts over).
    /// Bytes beyond what the file can hold are no prefix of it either.
    pub fn on_prefix_hashed(&mut self, now: Time, id: TransferId, len: Option<u64>) {
        let Some(d) = self.downloads.get_mut(id) else {
            return;
        };
        let kept = len.filter(|&n| d.can_be_prefix(n)).unwrap_or(0);
        d.kept = kept;
        d.bytes_done = kept;
        d.prefix_unchecked = false;
        // The wait for a holder starts now (a large prefix takes a while).
        d.waiting_since = Some(now);
        self.arm_resume_timer(now);
    }

    fn arm_resume_timer(&mut self, now: Time) {
        if !self.resume_timer_armed {
            self.resume_timer_armed = true;
            self.schedule(now.plus(RESUME_RETRY), Timer::ResumeWaiting);
        }
    }

    /// Starts the resumed downloads whose holders are known now; those
    /// still without one after the peer timeout fail (the driver drops
    /// their bytes), the others look again soon.
    pub(super) fn start_resumed(&mut self, now: Time) {
        self.resume_timer_armed = false;
        let waiting: Vec<(TransferId, Time)> = self
            .downloads
            .iter()
            .filter(|d| !d.prefix_unchecked)
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
            self.arm_resume_timer(now);
        }
    }
}
