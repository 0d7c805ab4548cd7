//! The whole life of a download, and of the copies that reach us otherwise
//! (a push, an import).
//!
//! When is a download done? `cmd_get` and `auto_fetch` start one through
//! `start_download`; `pump_queue` hands it to `try_next_source`, which asks
//! the driver to fetch from one holder at a time. It is done when
//! `on_fetch_result` gets `Saved` for its current attempt, when
//! `try_next_source` runs out of sources (after keeping an unverified copy
//! through `Effect::KeepUnverified` if one came), when a verified push of
//! the same file arrives (`on_file_received`), or when the owner's DELETE
//! stops it (`inbound`). Each of these removes it from `Downloads` and calls
//! `finish` exactly once, which tells every `get` that asked for it.

use super::catalog::LocalCopy;
use super::downloads::{save_figures, Dest, Download, Origin};
use super::membership::Membership;
use super::view::EventKind;
use super::{Effect, FetchResult, Peer, SourceFailure, Time};
use crate::ids::{FileId, PeerAddr, PeerId, TransferId};
use crate::protocol::message::human_bytes;
use crate::protocol::{FileRecord, Message};
use crate::storage::ImportError;
use log::{debug, info, warn};
use rand::seq::SliceRandom;
use std::collections::VecDeque;

/// A user's file copied into the storage folder by `push` (see
/// `storage::import_file`), as [`Peer::on_imported`] takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// The new file, owned by us.
    pub record: FileRecord,
    /// Its name in the storage folder.
    pub local_name: String,
}

/// The copy a download ended with, as its last attempt reported it.
struct Kept {
    local_name: String,
    len: u64,
    verified: bool,
    /// How long the attempt whose bytes are kept took.
    took: std::time::Duration,
    /// Who sent them.
    peer: PeerId,
}

/// The batch of background downloads started at start-up, summed up in one
/// line once all have ended.
pub(super) struct AutoBatch {
    pub(super) pending: usize,
    pub(super) saved: Vec<String>,
    pub(super) failed: Vec<String>,
}

/// How a download ended, said once: the menu shows it after `get: `, the
/// log after `auto-fetch: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DownloadEnd {
    /// Stored (verified or not: the text says).
    Saved(String),
    /// Given up, with the reasons.
    Failed(String),
}

/// Puts the holders that serve ranges first (they continue a kept prefix
/// instead of starting over), keeping the order within each group.
pub(super) fn ranged_first(members: &Membership, queue: &mut VecDeque<PeerId>) {
    queue
        .make_contiguous()
        .sort_by_key(|p| !members.get(p).is_some_and(|m| m.ranges));
}

impl Peer {
    pub(super) fn cmd_get(&mut self, now: Time, prefix: &str, dest: Option<Dest>) {
        let Some(id) = self.resolve("get", prefix) else {
            return;
        };
        if let Some((rec, local)) = self.local_copy(&id) {
            let (record, local_name) = (rec.clone(), local.name.clone());
            let name = record.file_name.clone();
            match dest {
                Some(dest) => {
                    self.print(format!(
                        "get: already have {name}; copying it to {}",
                        dest.path.display()
                    ));
                    self.effects.push(Effect::CopyOut {
                        name: local_name,
                        record,
                        dest,
                    });
                }
                None => self.print(format!("get: already have {name} (stored as {local_name})")),
            }
            return;
        }
        if let Some(t) = self.downloads.by_file(&id) {
            if let Some(d) = self.downloads.get_mut(t) {
                d.origins.push(Origin::Menu(dest));
                let name = d.record.file_name.clone();
                self.print(format!(
                    "get: {name} is already being fetched; joined that download"
                ));
            }
            return;
        }
        self.start_download(now, id, Origin::Menu(dest));
    }

    /// Holders of `file` that we can reach, most recently seen first.
    pub(super) fn sources(&self, file: &FileId) -> Vec<PeerId> {
        let Some(e) = self.catalog.get(file) else {
            return Vec::new();
        };
        let mut v: Vec<(&PeerId, Time)> = e
            .holders
            .iter()
            .filter_map(|p| self.members.get(p).map(|s| (p, s.last_seen)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.into_iter().map(|(p, _)| p.clone()).collect()
    }

    pub(super) fn start_download(&mut self, now: Time, file: FileId, origin: Origin) {
        let Some(entry) = self.catalog.get(&file) else {
            return;
        };
        let record = entry.record.clone();
        let sources = self.sources(&file);
        if sources.is_empty() {
            if let Origin::Menu(_) = origin {
                let holders: Vec<String> = entry.holders.iter().map(|p| p.0.clone()).collect();
                self.print(format!(
                    "get: no reachable peer holds {} (known holders: {})",
                    record.file_name,
                    if holders.is_empty() {
                        "none".into()
                    } else {
                        holders.join(", ")
                    }
                ));
            }
            return;
        }
        let id = self.downloads.next_id();
        self.downloads.insert(Download {
            id,
            record,
            remaining: VecDeque::from(sources),
            current: None,
            failures: Vec::new(),
            failures_said: 0,
            origins: vec![origin],
            bytes_done: 0,
            kept: 0,
            current_from: 0,
            unverified_fallback: None,
            kept_took: None,
            queued: true,
            waiting_since: None,
            prefix_unchecked: false,
            resumed: false,
            swarm: None,
        });
        self.pump_queue(now);
    }

    pub(super) fn pump_queue(&mut self, now: Time) {
        while let Some(id) = self.downloads.next_queued() {
            if let Some(d) = self.downloads.get_mut(id) {
                d.queued = false;
            }
            if !self.try_start_swarm(now, id) {
                self.try_next_source(now, id);
            }
        }
    }

    /// Asks the driver to fetch download `id` from its next source still
    /// tracked; with none left, keeps the unverified copy if one came, or
    /// ends the download as failed.
    pub(super) fn try_next_source(&mut self, now: Time, id: TransferId) {
        loop {
            let Some(d) = self.downloads.get_mut(id) else {
                return;
            };
            if d.remaining.is_empty() {
                // Holders learnt since the download began, never tried.
                let file = d.record.file_id.clone();
                let tried: Vec<PeerId> = d.failures.iter().map(|(p, _)| p.clone()).collect();
                let fresh: Vec<PeerId> = self
                    .sources(&file)
                    .into_iter()
                    .filter(|p| !tried.contains(p))
                    .collect();
                let Some(d) = self.downloads.get_mut(id) else {
                    return;
                };
                d.remaining.extend(fresh);
                ranged_first(&self.members, &mut d.remaining);
            }
            let Some(d) = self.downloads.get_mut(id) else {
                return;
            };
            let Some(peer) = d.remaining.pop_front() else {
                break;
            };
            let Some(addr) = self.members.get(&peer).map(|p| p.addr.clone()) else {
                if let Some(d) = self.downloads.get_mut(id) {
                    d.failures.push((peer, SourceFailure::Untracked));
                }
                continue;
            };
            self.fetch_from(now, id, peer, addr);
            return;
        }
        self.out_of_sources(now, id);
    }

    /// Starts a new attempt of download `id` at `peer`, listening at `addr`.
    fn fetch_from(&mut self, now: Time, id: TransferId, peer: PeerId, addr: PeerAddr) {
        let attempt = self.downloads.next_attempt();
        let Some(d) = self.downloads.get_mut(id) else {
            return;
        };
        d.current = Some((peer.clone(), attempt, now));
        // A kept prefix is continued by a source that serves ranges; any
        // other sends the whole file and the prefix is dropped.
        let ranged = self.members.get(&peer).is_some_and(|p| p.ranges);
        let resume_from = if ranged { d.kept } else { 0 };
        d.kept = resume_from;
        d.current_from = resume_from;
        d.bytes_done = resume_from;
        let record = d.record.clone();
        let auto = d.is_auto();
        // The source before this one failed: say why, and which try this is.
        let tried = d.failures.len();
        let total = tried + 1 + d.remaining.len();
        // Said once: a source asked again (whole) is no new failure.
        let last_failure = d
            .failures
            .last()
            .cloned()
            .filter(|_| tried > d.failures_said);
        d.failures_said = tried;
        if let Some((failed, why)) = last_failure {
            let line = format!(
                "{} {why}; trying {} ({} of {total})",
                self.name_peer(&failed),
                self.name_peer(&peer),
                tried + 1
            );
            self.tell(auto, &line);
        }
        let what = if resume_from > 0 {
            format!(
                "resuming {} ({}) at {}",
                record.file_name,
                record.file_size,
                crate::units::bytes(resume_from)
            )
        } else {
            format!("fetching {} ({})", record.file_name, record.file_size)
        };
        // The menu's line names the source as its `saved` line will (by
        // id); the log names it with its address, as every log line does.
        if auto {
            info!("auto-fetch: {what} from {}", self.name_peer(&peer));
        } else {
            self.print(format!("get: {what} from {peer}"));
        }
        self.counters.downloads_started += 1;
        self.effects.push(Effect::Fetch {
            transfer: id,
            attempt,
            from: peer,
            to: addr,
            record,
            resume_from,
        });
    }

    /// Download `id` has no source left: the unverified copy that came is
    /// kept (one more attempt, `Effect::KeepUnverified`), or it failed.
    fn out_of_sources(&mut self, now: Time, id: TransferId) {
        let Some(d) = self.downloads.get_mut(id) else {
            return;
        };
        if let Some((peer, took)) = d.unverified_fallback.take() {
            let attempt = self.downloads.next_attempt();
            if let Some(d) = self.downloads.get_mut(id) {
                d.current = Some((peer, attempt, now));
                d.kept_took = Some(took);
            }
            self.effects.push(Effect::KeepUnverified {
                transfer: id,
                attempt,
            });
            return;
        }
        if let Some(d) = self.downloads.remove(id) {
            let line = format!(
                "no source left for {}: {}",
                d.record.file_name,
                d.failure_summary()
            );
            self.event(now, EventKind::DownloadFailed, line.clone());
            self.finish(now, d, DownloadEnd::Failed(line));
        }
    }

    /// Says `line` to whoever asked for a download: the menu (`get: `), or
    /// only the log for auto-fetch's (`auto-fetch: `).
    pub(super) fn tell(&mut self, auto: bool, line: &str) {
        if auto {
            info!("auto-fetch: {line}");
        } else {
            self.print(format!("get: {line}"));
        }
    }

    pub(super) fn finish(&mut self, now: Time, d: Download, outcome: DownloadEnd) {
        // Whatever ended it, no unverified copy is kept for it any more.
        self.effects
            .push(Effect::DiscardUnverified { transfer: d.id });
        for origin in &d.origins {
            match (origin, &outcome) {
                (Origin::Menu(_), DownloadEnd::Saved(what) | DownloadEnd::Failed(what)) => {
                    self.print(format!("get: {what}"))
                }
                (Origin::Auto, DownloadEnd::Saved(what)) => info!("auto-fetch: {what}"),
                (Origin::Auto, DownloadEnd::Failed(what)) => warn!("auto-fetch: {what}"),
            }
        }
        // A resumed download was never in this run's batch.
        if d.origins.contains(&Origin::Auto) && !d.resumed {
            self.auto_fetch_ended(&d.record.file_name, &outcome);
        }
        self.pump_queue(now);
        // Its pieces in flight, if any, are free for the others.
        self.pump_other_swarms(now, d.id);
    }

    /// One of the start-up auto-fetch's downloads (of `name`) ended; the
    /// last one prints the batch's summary.
    fn auto_fetch_ended(&mut self, name: &str, outcome: &DownloadEnd) {
        let Some(b) = self.auto_batch.as_mut() else {
            return;
        };
        b.pending = b.pending.saturating_sub(1);
        match outcome {
            DownloadEnd::Saved(_) => b.saved.push(name.to_string()),
            DownloadEnd::Failed(_) => b.failed.push(name.to_string()),
        }
        if b.pending > 0 {
            return;
        }
        let line = format!(
            "auto-fetch: done, fetched {} of {} files{}{}",
            b.saved.len(),
            b.saved.len() + b.failed.len(),
            if b.saved.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.saved.join(", "))
            },
            if b.failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", b.failed.join(", "))
            },
        );
        self.auto_batch = None;
        self.print(line);
    }

    /// Whether `attempt` is the one `transfer` is waiting for. The driver
    /// asks before storing a download: a download ended meanwhile (by its
    /// owner's DELETE, say) must leave no file behind.
    pub fn is_current(&self, transfer: TransferId, attempt: u64) -> bool {
        self.downloads.get(transfer).is_some_and(|d| {
            d.current.as_ref().is_some_and(|c| c.1 == attempt)
                || d.swarm
                    .as_ref()
                    .is_some_and(|r| Self::swarm_owns(r, attempt))
        })
    }

    /// Progress of a running attempt (for `transfers` and the stats page).
    /// (`bytes_done`: bytes of the file we have, a kept prefix included.)
    pub fn on_fetch_progress(&mut self, transfer: TransferId, attempt: u64, bytes_done: u64) {
        if let Some(d) = self.downloads.get_mut(transfer) {
            if d.current.as_ref().map(|c| c.1) == Some(attempt) {
                d.bytes_done = bytes_done;
            } else if d.swarm.is_some() {
                self.on_swarm_progress(transfer, attempt, bytes_done);
            }
        }
    }

    /// An attempt ended. Results for stale attempts are ignored.
    pub fn on_fetch_result(
        &mut self,
        now: Time,
        transfer: TransferId,
        attempt: u64,
        result: FetchResult,
    ) {
        let Some(d) = self.downloads.get_mut(transfer) else {
            return;
        };
        if d.swarm.is_some() {
            self.on_swarm_result(now, transfer, attempt, result);
            return;
        }
        let Some((peer, _, started)) = d.current.clone().filter(|c| c.1 == attempt) else {
            debug!("stale result for {transfer} attempt {attempt}");
            return;
        };
        d.current = None;
        let result = match result {
            FetchResult::Piece { .. } => FetchResult::Failed(SourceFailure::Malformed(
                "a piece came for a whole-file request".into(),
            )),
            r => r,
        };
        match result {
            FetchResult::Piece { .. } => {}
            FetchResult::Cut { why, kept } => {
                debug!(
                    "{transfer}: {} failed: {why} (its first {kept} bytes kept)",
                    super::view::peer_name(&self.members, &peer)
                );
                self.counters.download_failed(&why);
                // Bytes after a broken transfer are kept; after a bad reply
                // only those from before this attempt (if it added none).
                // More than the file can have is no prefix of it either.
                let trusted = why.is_transport() || kept == d.current_from;
                let kept = if trusted && d.can_be_prefix(kept) {
                    kept
                } else {
                    0
                };
                d.kept = kept;
                d.bytes_done = kept;
                // Sources that serve ranges go first: they continue the
                // prefix instead of starting over.
                ranged_first(&self.members, &mut d.remaining);
                let name = d.record.file_name.clone();
                d.failures.push((peer.clone(), why.clone()));
                let text = format!("{} {why} (fetching {name})", self.name_peer(&peer));
                self.event(now, EventKind::SourceFailed, text);
                self.try_next_source(now, transfer);
            }
            FetchResult::Failed(why) => {
                d.kept = 0;
                debug!(
                    "{transfer}: {} failed: {why}",
                    super::view::peer_name(&self.members, &peer)
                );
                self.counters.download_failed(&why);
                let name = d.record.file_name.clone();
                d.failures.push((peer.clone(), why.clone()));
                let text = format!("{} {why} (fetching {name})", self.name_peer(&peer));
                self.event(now, EventKind::SourceFailed, text);
                self.try_next_source(now, transfer);
            }
            FetchResult::Unverified { .. } if d.current_from > 0 => {
                // The copy joins bytes from two sources or more: which sent
                // the bad ones can't be told. This one is asked for the
                // whole file (once: that attempt starts at 0), and the
                // joined copy stays the fallback meanwhile.
                d.kept = 0;
                d.unverified_fallback = Some((peer.clone(), now.since(started)));
                d.remaining.push_front(peer.clone());
                let (name, auto) = (d.record.file_name.clone(), d.is_auto());
                let text = format!(
                    "the copy of {name} resumed at {} doesn't match its id; asking {} for all of it",
                    crate::units::bytes(d.current_from),
                    self.name_peer(&peer)
                );
                self.tell(auto, &text);
                self.event(now, EventKind::SourceFailed, text);
                self.try_next_source(now, transfer);
            }
            FetchResult::Unverified { .. } => {
                // The whole copy (prefix included) is the fallback now.
                d.kept = 0;
                self.counters.download_failed(&SourceFailure::Mismatch);
                let name = d.record.file_name.clone();
                d.failures.push((peer.clone(), SourceFailure::Mismatch));
                d.unverified_fallback = Some((peer.clone(), now.since(started)));
                let text = format!(
                    "{} {} (fetching {name})",
                    self.name_peer(&peer),
                    SourceFailure::Mismatch
                );
                self.event(now, EventKind::SourceFailed, text);
                self.try_next_source(now, transfer);
            }
            FetchResult::Saved {
                local_name,
                len,
                verified,
            } => {
                let Some(d) = self.downloads.remove(transfer) else {
                    return;
                };
                // An unverified copy kept was counted as its source's
                // mismatch already.
                self.counters.downloads_succeeded += u64::from(verified);
                self.counters.downloaded_bytes += len;
                if verified {
                    // Counted once the bytes kept proved part of the file.
                    self.counters.resumed_bytes += d.current_from;
                }
                // The attempt whose bytes are kept: this one, or the
                // unverified fallback's (not the time spent on others).
                let took = d.kept_took.unwrap_or_else(|| now.since(started));
                let kept = Kept {
                    local_name,
                    len,
                    verified,
                    took,
                    peer,
                };
                self.saved(now, d, kept);
            }
        }
    }

    /// Download `d` ended with our copy `kept`: recorded, announced,
    /// copied out to the `get`s' destinations, reported.
    fn saved(&mut self, now: Time, mut d: Download, kept: Kept) {
        let Kept {
            local_name,
            len,
            verified,
            took,
            peer,
        } = kept;
        // Bytes that match the id tell its true size, whatever was claimed.
        if verified && d.record.file_size.bytes().is_some_and(|n| n != len) {
            d.record.file_size = crate::protocol::FileSize::Bytes(len);
            self.catalog.correct_size(&d.record.file_id, len);
        }
        // A resumed copy's figures are those of the bytes this source sent.
        let resumed = d.current_from.min(len);
        let mut line = if resumed > 0 && d.kept_took.is_none() {
            format!(
                "saved {}, {}: {} kept, the rest {} from {peer}",
                d.record.file_name,
                human_bytes(len),
                human_bytes(resumed),
                save_figures(len - resumed, took),
            )
        } else {
            format!(
                "saved {}, {} {} from {peer}",
                d.record.file_name,
                human_bytes(len),
                save_figures(len, took),
            )
        };
        if !verified {
            line.push_str(" -- UNVERIFIED: no source sent bytes matching the file id");
            warn!(
                "kept unverified copy of {} ({})",
                d.record.file_name, d.record.file_id
            );
        }
        self.record_saved(now, d, local_name, verified, line);
    }

    /// Download `d` ended with our copy `local_name` (its end said by
    /// `line`): recorded, announced, copied out to the `get`s'
    /// destinations, reported.
    pub(super) fn record_saved(
        &mut self,
        now: Time,
        d: Download,
        local_name: String,
        verified: bool,
        line: String,
    ) {
        self.catalog.set_local(
            d.record.clone(),
            LocalCopy {
                name: local_name.clone(),
                verified,
            },
        );
        self.event(now, EventKind::Saved, line.clone());
        self.effects.push(Effect::Persist);
        self.announce(&d.record);
        self.copy_out_for(&d, &local_name);
        self.finish(now, d, DownloadEnd::Saved(line));
    }

    pub(super) fn announce(&mut self, record: &FileRecord) {
        let verified = self
            .local_copy(&record.file_id)
            .is_none_or(|(_, l)| l.verified);
        if !verified && !self.cfg.share_unverified {
            info!(
                "not announcing {} ({}): our copy does not match its id",
                record.file_name, record.file_id
            );
            return;
        }
        let msg = Message::Announce {
            from: self.cfg.peer_id.clone(),
            file: record.clone(),
        };
        for (_, p) in self.members.all() {
            self.effects.push(Effect::Send {
                to: p.addr.clone(),
                msg: msg.clone(),
            });
        }
    }

    /// Whether a pushed copy of `file` (its bytes `verified` against the id
    /// or not) is to be stored. One copy per file: not when we hold one,
    /// nor, unverified, while our own download of it runs (a verified push
    /// then ends that download: see [`Peer::on_file_received`]).
    pub fn wants_push(&self, file: &FileId, verified: bool) -> bool {
        self.local_copy(file).is_none() && (verified || self.downloads.by_file(file).is_none())
    }

    /// A peer (`from`, as the driver names it: "peer_id (host:port)" or the
    /// address) pushed us a file (unsolicited FILE_DATA) and the driver
    /// stored it under `local_name` (after [`Peer::wants_push`] said so).
    /// A download of the same file still running ends with this copy: its
    /// bytes, arriving later, are discarded (its attempt is no longer
    /// current), so the folder holds one copy.
    pub fn on_file_received(
        &mut self,
        now: Time,
        from: &str,
        record: FileRecord,
        local_name: String,
        verified: bool,
    ) {
        info!(
            "received pushed file {} ({}) from {from}{}",
            record.file_name,
            record.file_id,
            if verified { "" } else { ", UNVERIFIED" }
        );
        self.catalog.set_local(
            record.clone(),
            LocalCopy {
                name: local_name.clone(),
                verified,
            },
        );
        self.event(
            now,
            EventKind::Saved,
            format!(
                "received {} ({}) pushed by a peer{}",
                record.file_name,
                record.file_size,
                if verified { "" } else { ", UNVERIFIED" }
            ),
        );
        self.effects.push(Effect::Persist);
        self.announce(&record);
        let download = self.downloads.by_file(&record.file_id);
        let Some(d) = download.and_then(|t| self.downloads.remove(t)) else {
            return;
        };
        // The push's transfer was not timed by us: no figures are claimed.
        let line = format!(
            "saved {}, {}: a peer pushed it whole while we were fetching it",
            d.record.file_name, record.file_size
        );
        self.copy_out_for(&d, &local_name);
        self.finish(now, d, DownloadEnd::Saved(line));
    }

    /// Copies our new copy to every destination the download's `get`s named.
    pub(super) fn copy_out_for(&mut self, d: &Download, local_name: &str) {
        for o in &d.origins {
            if let Origin::Menu(Some(dest)) = o {
                self.effects.push(Effect::CopyOut {
                    name: local_name.to_string(),
                    record: d.record.clone(),
                    dest: dest.clone(),
                });
            }
        }
    }

    /// A `push` finished copying into storage, or was refused (the
    /// error's sentence is shown as it is).
    pub fn on_imported(&mut self, now: Time, result: Result<Imported, ImportError>) {
        let imported = match result {
            Ok(imported) => imported,
            Err(e) => {
                self.print(e.to_string());
                return;
            }
        };
        let record = imported.record.clone();
        let sent = self.publish(now, imported);
        self.print(format!(
            "push: stored {} ({}) as {}; {sent}; announced to {} peers",
            record.file_name,
            record.file_size,
            record.file_id,
            self.members.len()
        ));
    }

    /// A `push <dir>` copied the regular files directly in `dir` into
    /// storage (`skipped`: the entries that were not regular files): each
    /// is published as `push <file>` would, and one summary line printed.
    pub fn on_imported_dir(
        &mut self,
        now: Time,
        dir: &std::path::Path,
        results: Vec<Result<Imported, ImportError>>,
        skipped: usize,
    ) {
        let (mut names, mut refused) = (Vec::new(), Vec::new());
        for r in results {
            match r {
                Ok(imported) => {
                    names.push(imported.record.file_name.clone());
                    self.publish(now, imported);
                }
                Err(e) => {
                    let why = e.to_string();
                    refused.push(why.trim_start_matches("push: ").to_string());
                }
            }
        }
        let mut line = format!(
            "push: published {} file{} from {}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            dir.display()
        );
        if !names.is_empty() {
            line.push_str(&format!(
                " ({}); announced to {} peers",
                names.join(", "),
                self.members.len()
            ));
        }
        if skipped > 0 {
            line.push_str(&format!(
                "; skipped {skipped} (folders, symlinks and special files)"
            ));
        }
        if !refused.is_empty() {
            line.push_str(&format!(
                "; refused {}: {}",
                refused.len(),
                refused.join("; ")
            ));
        }
        self.print(line);
    }

    /// Records a file the user pushed as ours, sends it to one random peer
    /// and announces it; says where it was sent.
    fn publish(&mut self, now: Time, imported: Imported) -> String {
        let Imported { record, local_name } = imported;
        info!(
            "file {} ({}) added by push",
            record.file_name, record.file_id
        );
        self.catalog.set_local(
            record.clone(),
            LocalCopy {
                name: local_name,
                verified: true,
            },
        );
        self.effects.push(Effect::Persist);
        let target = self
            .members
            .random_peers(&mut self.rng, 1, &[], |_| true)
            .pop();
        let sent = match target {
            Some((peer, to)) => {
                self.effects.push(Effect::PushFile {
                    to,
                    file_id: record.file_id.clone(),
                });
                format!("sent to {peer}")
            }
            None => "no peer to send it to yet".into(),
        };
        self.announce(&record);
        self.event(
            now,
            EventKind::Pushed,
            format!(
                "published {} ({}) as {}",
                record.file_name, record.file_size, record.file_id
            ),
        );
        sent
    }

    pub(super) fn auto_fetch(&mut self, now: Time) {
        if self.auto_fetch_started || self.cfg.auto_fetch == 0 {
            return;
        }
        self.auto_fetch_started = true;
        let mut candidates: Vec<FileId> = self
            .catalog
            .iter()
            .filter(|(id, e)| e.local.is_none() && self.downloads.by_file(id).is_none())
            .map(|(id, _)| id.clone())
            .filter(|id| !self.sources(id).is_empty())
            .collect();
        candidates.shuffle(&mut self.rng);
        candidates.truncate(self.cfg.auto_fetch);
        if candidates.is_empty() {
            info!("auto-fetch: no file held elsewhere to fetch");
            return;
        }
        info!(
            "auto-fetch: fetching {} files in the background",
            candidates.len()
        );
        self.auto_batch = Some(AutoBatch {
            pending: candidates.len(),
            saved: Vec::new(),
            failed: Vec::new(),
        });
        for id in candidates {
            self.start_download(now, id, Origin::Auto);
        }
    }
}
