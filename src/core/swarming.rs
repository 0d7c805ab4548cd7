//! A download from several holders at once: when it starts, what each
//! piece's result does, and when it falls back to one holder at a time.
//! The planning itself is [`super::swarm::Swarm`]'s.

use super::downloads::{save_figures, SwarmRun};
use super::swarm::{
    AfterMismatch, PieceOutcome, SourceState, Swarm, MAX_IN_FLIGHT_TOTAL, MAX_PIECE, MAX_PIECES,
    MIN_SWARM_SIZE,
};
use super::view::EventKind;
use super::{Effect, FetchResult, Peer, SourceFailure, Time};
use crate::ids::{PeerId, TransferId};
use crate::protocol::message::human_bytes;
use crate::protocol::FileSize;
use log::debug;
use std::time::Duration;

/// How often the downloads from several holders are looked at again
/// between results.
const SWARM_TICK: Duration = Duration::from_secs(1);

impl Peer {
    /// Starts download `id` from several holders at once if it can: an
    /// exact size of at least [`MIN_SWARM_SIZE`], no bytes kept, no source
    /// tried yet, and two holders or more that serve ranges (holders that
    /// don't stay in its queue, for a fallback). Whether it did.
    pub(super) fn try_start_swarm(&mut self, now: Time, id: TransferId) -> bool {
        let Some(d) = self.downloads.get_mut(id) else {
            return false;
        };
        let FileSize::Bytes(size) = d.record.file_size else {
            return false;
        };
        if !(MIN_SWARM_SIZE..=MAX_PIECE * MAX_PIECES).contains(&size)
            || d.kept > 0
            || d.swarm.is_some()
            || d.prefix_unchecked
            || !d.failures.is_empty()
            || d.unverified_fallback.is_some()
        {
            return false;
        }
        let ranged: Vec<PeerId> = d
            .remaining
            .iter()
            .filter(|p| self.members.get(p).is_some_and(|m| m.ranges))
            .cloned()
            .collect();
        if ranged.len() < 2 {
            return false;
        }
        d.remaining.retain(|p| !ranged.contains(p));
        let plan = Swarm::new(size, ranged);
        let line = format!(
            "fetching {} ({}) from {} holders at once, in {} pieces of {}",
            d.record.file_name,
            d.record.file_size,
            plan.active_sources(),
            plan.piece_count(),
            human_bytes(plan.piece_len()),
        );
        let auto = d.is_auto();
        d.swarm = Some(SwarmRun {
            plan,
            verify: None,
            started: now,
        });
        self.tell(auto, &line);
        self.counters.downloads_started += 1;
        self.pump_swarm(now, id);
        true
    }

    /// Sends the requests the plan wants now, starts the whole-file check
    /// once every piece is in, or falls back when no source is left.
    pub(super) fn pump_swarm(&mut self, now: Time, id: TransferId) {
        let Some(d) = self.downloads.get_mut(id) else {
            return;
        };
        let Some(mut run) = d.swarm.take() else {
            return;
        };
        let record = d.record.clone();
        // Holders learnt since it began join in.
        for p in self.sources(&record.file_id) {
            if self.members.get(&p).is_some_and(|m| m.ranges) {
                run.plan.add_source(p);
            }
        }
        loop {
            // Pieces the other downloads have in flight count too, and each
            // download gets at most its share of them all (at least one).
            let (others, swarms) = self
                .downloads
                .iter()
                .filter_map(|d| d.swarm.as_ref())
                .fold((0, 1), |(n, k), r| (n + r.plan.in_flight(), k + 1));
            let share = (MAX_IN_FLIGHT_TOTAL / swarms).max(1);
            let budget = MAX_IN_FLIGHT_TOTAL
                .saturating_sub(others + run.plan.in_flight())
                .min(share.saturating_sub(run.plan.in_flight()));
            let downloads = &mut self.downloads;
            let requests = run.plan.requests(now, budget, || downloads.next_attempt());
            if requests.is_empty() {
                break;
            }
            for r in requests {
                let Some(addr) = self.members.get(&r.peer).map(|m| m.addr.clone()) else {
                    run.plan
                        .on_piece_failed(now, r.attempt, &SourceFailure::Untracked);
                    continue;
                };
                self.effects.push(Effect::FetchPiece {
                    transfer: id,
                    attempt: r.attempt,
                    from: r.peer,
                    to: addr,
                    record: record.clone(),
                    offset: r.offset,
                    len: r.len,
                });
            }
        }
        if run.plan.wants_verify() {
            let attempt = self.downloads.next_attempt();
            run.plan.verifying();
            run.verify = Some(attempt);
            self.effects.push(Effect::VerifyPieces {
                transfer: id,
                attempt,
                record,
            });
        }
        let stuck = run.plan.is_stuck();
        let bytes = run.plan.bytes_done();
        if let Some(d) = self.downloads.get_mut(id) {
            d.bytes_done = bytes;
            d.swarm = Some(run);
        }
        self.arm_swarm_tick(now);
        if stuck {
            self.swarm_falls_back(now, id, "no holder is left to send its pieces");
        }
    }

    /// Every second while a download from several holders runs: each is
    /// pumped (a piece crawling on a slow holder is copied by an idle one,
    /// which no result would otherwise trigger).
    pub(super) fn on_swarm_tick(&mut self, now: Time) {
        self.swarm_tick_armed = false;
        let ids: Vec<TransferId> = self
            .downloads
            .iter()
            .filter(|d| d.swarm.is_some())
            .map(|d| d.id)
            .collect();
        for id in &ids {
            self.pump_swarm(now, *id);
        }
        self.arm_swarm_tick(now);
    }

    /// Schedules a [`super::Timer::SwarmTick`] if a download from several
    /// holders runs and none is scheduled.
    fn arm_swarm_tick(&mut self, now: Time) {
        let running = self.downloads.iter().any(|d| d.swarm.is_some());
        if running && !self.swarm_tick_armed {
            self.swarm_tick_armed = true;
            self.schedule(now.plus(SWARM_TICK), super::Timer::SwarmTick);
        }
    }

    /// Whether `attempt` is one of download `d`'s pieces or its check.
    pub(super) fn swarm_owns(run: &SwarmRun, attempt: u64) -> bool {
        run.verify == Some(attempt) || run.plan.owns(attempt)
    }

    /// Progress of a piece: `file_bytes`, as the driver counts a ranged
    /// attempt, is its offset plus the bytes received.
    pub(super) fn on_swarm_progress(
        &mut self,
        transfer: TransferId,
        attempt: u64,
        file_bytes: u64,
    ) {
        if let Some(d) = self.downloads.get_mut(transfer) {
            if let Some(run) = d.swarm.as_mut() {
                run.plan.on_progress_at(attempt, file_bytes);
                d.bytes_done = run.plan.bytes_done();
            }
        }
    }

    /// A result for download `transfer`, which fetches from several
    /// holders: a piece, or the whole-file check.
    pub(super) fn on_swarm_result(
        &mut self,
        now: Time,
        transfer: TransferId,
        attempt: u64,
        result: FetchResult,
    ) {
        let Some(d) = self.downloads.get_mut(transfer) else {
            return;
        };
        let Some(run) = d.swarm.as_mut() else {
            return;
        };
        if run.verify == Some(attempt) {
            run.verify = None;
            self.on_swarm_checked(now, transfer, result);
            return;
        }
        let Some(peer) = run.plan.source_of(attempt) else {
            debug!("stale result for {transfer} attempt {attempt}");
            return;
        };
        let name = d.record.file_name.clone();
        match result {
            FetchResult::Piece { digest } => {
                let outcome = run.plan.on_piece_done(now, attempt, digest);
                self.swarm_outcome(now, transfer, outcome);
            }
            FetchResult::Failed(why) | FetchResult::Cut { why, .. } => {
                let dropped = run.plan.on_piece_failed(now, attempt, &why);
                self.counters.download_failed(&why);
                let text = format!("{} {why} (a piece of {name})", self.name_peer(&peer));
                debug!("{transfer}: {text}");
                if dropped {
                    if let Some(d) = self.downloads.get_mut(transfer) {
                        d.failures.push((peer, why));
                    }
                    self.event(now, EventKind::SourceFailed, text);
                }
            }
            FetchResult::Saved { .. } | FetchResult::Unverified { .. } => {
                // The driver reports pieces as pieces: this is a bug, and
                // the piece is asked again.
                let why = SourceFailure::Malformed("a piece came back as a whole file".into());
                run.plan.on_piece_failed(now, attempt, &why);
            }
        }
        self.pump_swarm(now, transfer);
        // A piece slot freed here may be another download's to use.
        self.pump_other_swarms(now, transfer);
    }

    /// Pumps every download from several holders but `except` (the pieces
    /// in flight for all of them together are capped).
    pub(super) fn pump_other_swarms(&mut self, now: Time, except: TransferId) {
        let others: Vec<TransferId> = self
            .downloads
            .iter()
            .filter(|d| d.id != except && d.swarm.is_some())
            .map(|d| d.id)
            .collect();
        for id in others {
            self.pump_swarm(now, id);
        }
    }

    /// What a finished piece did: copies elsewhere cancelled, sources
    /// caught sending other bytes excluded (and said).
    fn swarm_outcome(&mut self, now: Time, transfer: TransferId, outcome: PieceOutcome) {
        for attempt in outcome.cancel {
            self.effects.push(Effect::CancelFetch { transfer, attempt });
        }
        for peer in outcome.excluded {
            let Some(d) = self.downloads.get_mut(transfer) else {
                return;
            };
            d.failures.push((peer.clone(), SourceFailure::Mismatch));
            let (name, auto) = (d.record.file_name.clone(), d.is_auto());
            self.counters.download_failed(&SourceFailure::Mismatch);
            let line = format!(
                "{} sent pieces of {name} that other holders contradict; excluded, its pieces fetched again from the others",
                self.name_peer(&peer)
            );
            self.tell(auto, &line);
            self.event(now, EventKind::SourceFailed, line);
        }
    }

    /// The whole-file check of a download from several holders ended.
    fn on_swarm_checked(&mut self, now: Time, transfer: TransferId, result: FetchResult) {
        match result {
            FetchResult::Saved {
                local_name,
                len,
                verified: true,
            } => {
                let Some(mut d) = self.downloads.remove(transfer) else {
                    return;
                };
                let Some(mut run) = d.swarm.take() else {
                    return;
                };
                run.plan.on_verified();
                self.counters.downloads_succeeded += 1;
                self.counters.downloaded_bytes += len;
                let all = run.plan.shares(now);
                let shares: Vec<String> = all
                    .iter()
                    .filter(|s| s.bytes > 0 && s.state != SourceState::Excluded)
                    .map(|s| format!("{} {}", s.peer, human_bytes(s.bytes)))
                    .collect();
                let excluded: Vec<String> = all
                    .iter()
                    .filter(|s| s.state == SourceState::Excluded)
                    .map(|s| s.peer.0.clone())
                    .collect();
                let mut line = format!(
                    "saved {}, {} {} from {} holders ({})",
                    d.record.file_name,
                    human_bytes(len),
                    save_figures(len, now.since(run.started)),
                    shares.len(),
                    shares.join(", ")
                );
                if !excluded.is_empty() {
                    line.push_str(&format!("; excluded: {}", excluded.join(", ")));
                }
                self.record_saved(now, d, local_name, true, line);
            }
            FetchResult::Unverified { .. } | FetchResult::Saved { .. } => {
                let Some(d) = self.downloads.get_mut(transfer) else {
                    return;
                };
                let (name, auto) = (d.record.file_name.clone(), d.is_auto());
                let Some(run) = d.swarm.as_mut() else {
                    return;
                };
                match run.plan.on_mismatch() {
                    AfterMismatch::Auditing { pieces } => {
                        let line = format!(
                            "the copy of {name} from {} holders doesn't match its id; checking {pieces} of its pieces against other holders",
                            run.plan.usable_peers().len()
                        );
                        self.tell(auto, &line);
                        self.event(now, EventKind::SourceFailed, line);
                        self.pump_swarm(now, transfer);
                    }
                    AfterMismatch::GiveUp => self.swarm_falls_back(
                        now,
                        transfer,
                        "its pieces from several holders don't make a copy that matches its id",
                    ),
                }
            }
            FetchResult::Failed(why) | FetchResult::Cut { why, .. } => {
                let text = format!("cannot check the copy: {why}");
                self.swarm_falls_back(now, transfer, &text);
            }
            FetchResult::Piece { .. } => {
                self.swarm_falls_back(now, transfer, "its check came back as a piece");
            }
        }
    }

    /// The swarm can't finish (`why`): the download goes on from one holder
    /// at a time, whole, from the sources not caught sending bad bytes
    /// (its pieces are dropped with the temp file).
    fn swarm_falls_back(&mut self, now: Time, id: TransferId, why: &str) {
        let Some(d) = self.downloads.get_mut(id) else {
            return;
        };
        let Some(run) = d.swarm.take() else {
            return;
        };
        // Holders never caught first, then the others, then those the audit
        // excluded: a vote can be wrong (two liars agreeing), the id can't.
        let mut queue: Vec<PeerId> = run.plan.usable_peers();
        queue.extend(d.remaining.drain(..));
        queue.extend(run.plan.excluded_peers());
        let mut seen = std::collections::HashSet::new();
        queue.retain(|p| seen.insert(p.clone()));
        d.remaining = queue.into();
        d.bytes_done = 0;
        // The failures said already stay said.
        d.failures_said = d.failures.len();
        let line = format!(
            "{}: {why}; fetching it from one holder at a time",
            d.record.file_name
        );
        let auto = d.is_auto();
        self.tell(auto, &line);
        self.event(now, EventKind::SourceFailed, line);
        self.try_next_source(now, id);
    }
}
