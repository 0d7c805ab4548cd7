//! Received FILE_DATAs (downloads and pushes): checked, committed, handed to the core.

use super::{Driver, Due};
use crate::core::downloads::{id_overrules_size, judge_piece, judge_reply, verifying_timestamps};
use crate::core::push_quota::PushTicket;
use crate::core::swarm::PieceDigest;
use crate::core::{FetchResult, SourceFailure, Time, UploadEnd};
use crate::ids::TransferId;
use crate::net::conn::{FetchConn, PartialSink, Role};
use crate::protocol::decoder::{DataField, DataSink, Decoded};
use crate::protocol::{FileRecord, FileSize, Message};
use crate::storage::{self, PartialFile};
use log::{debug, info, warn};
use std::net::IpAddr;
use std::time::Duration;

/// Longest a received FILE_DATA may wait for its writer thread to write
/// and fsync its last bytes before the attempt fails (a disk that hangs).
/// What is left by then is bounded whatever the file's size: at most the
/// writer's queue (1.5 MiB), three direct-I/O blocks, and two steps of
/// buffered writeback (16 MiB; the writer waits for older writeback as it
/// goes), so only a disk slower than about 0.3 MB/s runs into it.
pub(super) const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// A FILE_DATA whose every byte arrived while its writer thread still
/// writes (and fsyncs) the last of them. It is checked and stored when the
/// thread wakes the loop, so the loop never waits for the disk.
pub(super) enum Finishing {
    /// One of our downloads.
    Fetch {
        transfer: TransferId,
        attempt: u64,
        record: FileRecord,
        source: String,
        /// The offset its request asked from.
        from: u64,
        /// A piece's length (`from` is its offset).
        piece: Option<u64>,
        decoded: Decoded,
        sink: PartialSink,
    },
    /// One of our downloads whose source failed after data began: the
    /// bytes written are kept for the next source once the writer is done.
    Cut {
        transfer: TransferId,
        attempt: u64,
        source: String,
        why: SourceFailure,
        sink: PartialSink,
    },
    /// An unsolicited FILE_DATA.
    Push {
        /// The sender as logs name it ("peer_id (host:port)" or the address).
        from: String,
        header: crate::protocol::FileDataHeader,
        data: DataField,
        sink: PartialSink,
    },
}

impl Finishing {
    pub(super) fn sink(&self) -> &PartialSink {
        match self {
            Finishing::Fetch { sink, .. }
            | Finishing::Cut { sink, .. }
            | Finishing::Push { sink, .. } => sink,
        }
    }
}

impl Driver {
    /// Checks and stores the received FILE_DATAs whose writer has ended;
    /// the others wait on (asked again to wake the loop when they end).
    pub(super) fn settle_finished(&mut self) {
        for (since, f) in std::mem::take(&mut self.finishing) {
            if f.sink().must_wait_for_writer() {
                self.finishing.push((since, f));
            } else {
                self.finish_received(f);
                self.apply_effects();
            }
        }
    }

    /// A FILE_DATA was received whole: if its writer thread still writes,
    /// it waits (woken by the thread, bounded by [`FINISH_TIMEOUT`]);
    /// otherwise it is checked and stored now.
    pub(super) fn finish_received(&mut self, f: Finishing) {
        if f.sink().must_wait_for_writer() {
            let now = self.now();
            if self.finishing.is_empty() {
                self.wheel
                    .schedule(now.plus(FINISH_TIMEOUT), Due::Finishing);
            }
            self.finishing.push((now, f));
            return;
        }
        match f {
            Finishing::Fetch {
                transfer,
                attempt,
                record,
                source,
                from,
                piece,
                decoded,
                mut sink,
            } => {
                if !self.core.is_current(transfer, attempt) {
                    debug!("{transfer} from {source} ended meanwhile; bytes discarded");
                    return;
                }
                let result = match (sink.settle(), piece) {
                    (Ok(()), Some(len)) => {
                        let (result, ts) = check_piece(&record, decoded, (from, len), sink);
                        self.note_piece_timestamp(transfer, ts);
                        result
                    }
                    (Ok(()), None) => self.check_fetched(transfer, &record, (decoded, from), sink),
                    (Err(e), _) => FetchResult::Failed(SourceFailure::Disk(format!(
                        "cannot write the file: {e}"
                    ))),
                };
                self.report_fetch(transfer, attempt, &source, result);
            }
            Finishing::Cut {
                transfer,
                attempt,
                source,
                why,
                sink,
            } => {
                if !self.core.is_current(transfer, attempt) {
                    debug!("{transfer} from {source} ended meanwhile; bytes discarded");
                    return;
                }
                let result = self.keep_prefix(transfer, why, sink);
                self.report_fetch(transfer, attempt, &source, result);
            }
            Finishing::Push {
                from,
                header,
                data,
                mut sink,
            } => match sink.settle() {
                Ok(()) => self.on_pushed(&from, header, data, sink),
                Err(e) => warn!("cannot store the file {from} pushed: {e}"),
            },
        }
    }

    /// Hands a download attempt's result to the core.
    pub(super) fn report_fetch(
        &mut self,
        transfer: TransferId,
        attempt: u64,
        source: &str,
        r: FetchResult,
    ) {
        match &r {
            FetchResult::Saved { local_name, .. } => {
                debug!("{transfer} from {source}: stored as {local_name}")
            }
            FetchResult::Unverified { len } => {
                debug!("{transfer} from {source}: {len} bytes that don't match the id")
            }
            FetchResult::Failed(why) => debug!("{transfer} from {source}: {why}"),
            FetchResult::Cut { why, kept } => {
                debug!("{transfer} from {source}: {why}; kept its first {kept} bytes")
            }
            FetchResult::Piece { .. } => debug!("{transfer} from {source}: a piece"),
        }
        let now = self.now();
        self.core.on_fetch_result(now, transfer, attempt, r);
    }

    /// Fails the FILE_DATAs whose writer has not finished within
    /// [`FINISH_TIMEOUT`] (their threads end on their own and remove their
    /// temp files) and looks again when the next one is due.
    pub(super) fn expire_finishing(&mut self, now: Time) {
        let mut next: Option<Time> = None;
        for (since, f) in std::mem::take(&mut self.finishing) {
            let due = since.plus(FINISH_TIMEOUT);
            if now < due {
                next = Some(next.map_or(due, |n| n.min(due)));
                self.finishing.push((since, f));
                continue;
            }
            let why = SourceFailure::Disk(format!(
                "the disk did not finish writing the file within {} s",
                FINISH_TIMEOUT.as_secs()
            ));
            match f {
                Finishing::Fetch {
                    transfer,
                    attempt,
                    source,
                    ..
                }
                | Finishing::Cut {
                    transfer,
                    attempt,
                    source,
                    ..
                } => {
                    if self.core.is_current(transfer, attempt) {
                        self.report_fetch(transfer, attempt, &source, FetchResult::Failed(why));
                    } else {
                        debug!("{transfer} from {source} ended meanwhile; {why}");
                    }
                }
                Finishing::Push { from, header, .. } => warn!(
                    "file {} pushed by {from} not stored: {why}",
                    header.file_name.as_deref().unwrap_or("(unnamed)")
                ),
            }
        }
        if let Some(at) = next {
            self.wheel.schedule(at, Due::Finishing);
        }
    }

    /// A whole message arrived on an inbound connection from `push.0`
    /// (`push.1`: its push quota ticket, if its data started).
    pub(super) fn on_inbound_message(
        &mut self,
        key: usize,
        decoded: Decoded,
        sink: PartialSink,
        push: (IpAddr, Option<PushTicket>),
    ) {
        let Decoded { fields, data } = decoded;
        let parsed = Message::from_object(&fields);
        // A large GOSSIP_REPLY's JSON tree is no longer needed: free it
        // before the core merges the records.
        drop(fields);
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => {
                self.net.message_in("malformed");
                debug!(
                    "message from {} dropped: {e}",
                    self.sender_name(key, push.0)
                );
                self.upload_ended(key, UploadEnd::Failed(format!("not a valid message: {e}")));
                self.finish_conn(key);
                return;
            }
        };
        debug!(
            "received {} from {}",
            msg.kind(),
            self.sender_name(key, push.0)
        );
        self.net.message_in(msg.kind());
        match msg {
            Message::GetFile { file_id, range } => self.answer_get_file(key, file_id, range),
            Message::FileData(header) => {
                let len = match data {
                    DataField::Bytes { len } => len,
                    DataField::Absent | DataField::Null => 0,
                };
                self.push_in_received(key, &header, len);
                let sender = self.sender_name(key, push.0);
                self.finish_conn(key);
                // A push without data bytes (an empty file) was not counted
                // at its first byte: it counts now.
                let (from, ticket) = push;
                if ticket.is_none() && self.push_quota.admit(self.now(), from).is_err() {
                    self.log_push_refusals(self.now());
                    return;
                }
                self.finish_received(Finishing::Push {
                    from: sender,
                    header,
                    data,
                    sink,
                });
            }
            other => {
                self.finish_conn(key);
                let now = self.now();
                self.core.on_message(now, other);
            }
        }
    }

    /// The sender on inbound connection `key` as logs name it: "peer_id
    /// (host:port)" when its address is a tracked peer's, else the address
    /// (`ip` alone when the connection is gone).
    fn sender_name(&self, key: usize, ip: IpAddr) -> String {
        self.conns
            .get(key)
            .map_or_else(|| ip.to_string(), |c| self.conn_name(c))
    }

    /// One line for the pushes refused lately (at most one a minute).
    pub(super) fn log_push_refusals(&mut self, now: Time) {
        if let Some((n, why)) = self.push_quota.refusals_to_log(now) {
            let line = format!("refused {n} pushed file(s): over the push quota ({why})");
            info!("{line}; the sender's connection was closed");
            self.core.on_refused(now, line);
        }
    }

    /// An unsolicited FILE_DATA from `from` (as logs name it), its sink
    /// settled: stored like a download (limits, safe name, integrity) and
    /// handed to the core.
    pub(super) fn on_pushed(
        &mut self,
        from: &str,
        header: crate::protocol::FileDataHeader,
        data: DataField,
        sink: PartialSink,
    ) {
        let Some(mut record) = header.to_record() else {
            debug!("FILE_DATA pushed by {from} without a complete header dropped");
            return;
        };
        let (DataField::Bytes { len }, Some(partial)) = (data, sink.partial) else {
            if let DataField::Bytes { len: 0 } = data {
                // An empty file: no temp file was created.
                match PartialFile::create(&self.settings.dir) {
                    Ok(p) => {
                        let verified = sink.hasher.matches(&record.file_id, &record.file_timestamp);
                        self.store_pushed(from, record, p, 0, verified);
                    }
                    Err(e) => warn!("cannot store the file {from} pushed: {e}"),
                }
            } else {
                debug!("FILE_DATA pushed by {from} without data dropped");
            }
            return;
        };
        record.file_size = FileSize::Bytes(len);
        let verified = sink.hasher.matches(&record.file_id, &record.file_timestamp);
        self.store_pushed(from, record, partial, len, verified);
    }

    /// Commits a file pushed by `from` if the core wants it (one copy per
    /// file).
    pub(super) fn store_pushed(
        &mut self,
        from: &str,
        record: FileRecord,
        partial: PartialFile,
        len: u64,
        verified: bool,
    ) {
        if !self.core.wants_push(&record.file_id, verified) {
            // Dropping the temp file: one copy per file.
            debug!(
                "{} pushed by {from} already held or being fetched",
                record.file_id
            );
            if !verified {
                let now = self.now();
                let line = format!(
                    "refused a copy of {} ({}) pushed by {from}: its bytes don't match the id",
                    record.file_name, record.file_id
                );
                self.core.on_refused(now, line);
            }
            return;
        }
        if !verified {
            warn!(
                "file {} ({}) pushed by {from} does not match its id; kept as UNVERIFIED",
                record.file_name, record.file_id
            );
        }
        match self.commit(partial, &record.file_name, len, verified) {
            FetchResult::Saved { local_name, .. } => {
                let now = self.now();
                self.core
                    .on_file_received(now, from, record, local_name, verified);
                self.close_superseded_fetches();
            }
            FetchResult::Failed(why) => {
                warn!(
                    "cannot store file {} pushed by {from}: {why}",
                    record.file_name
                )
            }
            FetchResult::Unverified { .. }
            | FetchResult::Cut { .. }
            | FetchResult::Piece { .. } => {}
        }
    }

    /// Closes the fetches whose attempt the core no longer wants (a push
    /// ended their download): their bytes would be discarded anyway, and a
    /// large file would be pulled to the disk a second time.
    pub(super) fn close_superseded_fetches(&mut self) {
        let stale: Vec<(usize, String)> = self
            .conns
            .iter()
            .filter_map(|(key, c)| match &c.role {
                Role::Fetch(f) if !self.core.is_current(f.transfer, f.attempt) => {
                    Some((key, f.source.clone()))
                }
                _ => None,
            })
            .collect();
        for (key, source) in stale {
            debug!("closing a fetch from {source} whose download ended meanwhile");
            self.close(key, None);
        }
    }

    /// The sink for a download's next attempt, and the offset its request
    /// asks from: the prefix the download kept, continued, when the core
    /// resumes from its end; otherwise a new temp file (a kept prefix not
    /// continued is dropped, which removes its file). The temp file's name
    /// is recorded for the metadata, so a restart can resume it.
    pub(super) fn download_sink(
        &mut self,
        transfer: TransferId,
        file: &str,
        resume_from: u64,
    ) -> (PartialSink, u64) {
        let dir = self.settings.dir.clone();
        let kept = match self.resumable.remove(&transfer) {
            Some(k) if resume_from > 0 && k.prefix.len == resume_from => Some(k),
            Some(k) => {
                // Not continued: the next source sends the whole file.
                self.discard(vec![k.partial]);
                None
            }
            None => None,
        };
        if let Some(kept) = kept {
            let name = kept.partial.name();
            match PartialSink::resuming(dir.clone(), self.waker.clone(), kept) {
                Ok(sink) => {
                    self.temps.insert(transfer, name);
                    return (sink.expecting(file), resume_from);
                }
                Err(e) => {
                    warn!("{transfer}: cannot continue its kept bytes ({e}); fetching it whole")
                }
            }
        }
        match PartialFile::create(&dir) {
            Ok(partial) => {
                self.temps.insert(transfer, partial.name());
                let sink = PartialSink::for_download_into(dir, self.waker.clone(), partial);
                (sink.expecting(file), 0)
            }
            Err(e) => {
                // The sink tries again at the first byte (and fails then).
                debug!("{transfer}: cannot create its temp file yet: {e}");
                self.temps.remove(&transfer);
                let sink = PartialSink::for_download(dir, self.waker.clone());
                (sink.expecting(file), 0)
            }
        }
    }

    /// A download's attempt failed. Bytes written are kept for the next
    /// source: the sink is closed, and once its writer has written them the
    /// core hears of the cut ([`FetchResult::Cut`]); with none, or a disk
    /// that failed, the failure is reported now.
    pub(super) fn fetch_failed(&mut self, f: FetchConn, why: SourceFailure) {
        let FetchConn {
            transfer,
            attempt,
            source,
            mut sink,
            mut decoder,
            piece,
            ..
        } = f;
        if !self.core.is_current(transfer, attempt) {
            debug!("{transfer} from {source} ended meanwhile; bytes discarded");
            return;
        }
        if piece.is_some() {
            // A piece is asked again whole: at most one piece is re-sent.
            self.report_fetch(transfer, attempt, &source, FetchResult::Failed(why));
            return;
        }
        // Every byte that arrived is kept, the decoder's last buffer too
        // (the writer's queue has room for it whatever the gate allowed).
        if let Err(e) = decoder.flush_cut_data(&mut sink) {
            debug!("{transfer}: the last bytes from {source} are lost: {e}");
        }
        if sink.len == 0 || matches!(why, SourceFailure::Disk(_)) {
            self.report_fetch(transfer, attempt, &source, FetchResult::Failed(why));
            return;
        }
        // Only tells the writer thread that no more bytes come.
        let _ = sink.end_data();
        self.finish_received(Finishing::Cut {
            transfer,
            attempt,
            source,
            why,
            sink,
        });
    }

    /// A cut attempt's writer is done: its temp file and hash are kept for
    /// the download's next attempt.
    fn keep_prefix(
        &mut self,
        transfer: TransferId,
        why: SourceFailure,
        mut sink: PartialSink,
    ) -> FetchResult {
        if let Err(e) = sink.settle() {
            debug!("{transfer}: the bytes written cannot be kept: {e}");
            return FetchResult::Failed(why);
        }
        match sink.into_kept() {
            Some(kept) => {
                let len = kept.prefix.len;
                self.resumable.insert(transfer, kept);
                FetchResult::Cut { why, kept: len }
            }
            None => FetchResult::Failed(why),
        }
    }

    /// Checks a complete FILE_DATA against the file we asked for (`reply`:
    /// the message, and the offset our request asked from).
    pub(super) fn check_fetched(
        &mut self,
        transfer: TransferId,
        record: &FileRecord,
        reply: (Decoded, u64),
        sink: PartialSink,
    ) -> FetchResult {
        let (decoded, from) = reply;
        let parsed = Message::from_object(&decoded.fields);
        let ranged = matches!(&parsed, Ok(Message::FileData(h)) if h.range.is_some());
        let header_ts = match &parsed {
            Ok(Message::FileData(h)) => h.file_timestamp.clone(),
            _ => None,
        };
        let judged = match judge_reply(record, parsed, decoded.data, from) {
            // Its bytes were written as the whole file: a range named after
            // them can't be trusted to say where they go.
            Ok(_) if ranged && !sink.range_before_data() => Err(SourceFailure::Malformed(
                "its range fields come after its data".into(),
            )),
            // The file on disk is what we verify: it must be all of it.
            Ok((len, _)) if len != sink.len => Err(SourceFailure::Malformed(format!(
                "the reply completes {len} bytes but {} were written",
                sink.len
            ))),
            Ok(ok) => Ok(ok),
            Err(bad)
                if sink.len > 0
                    && id_overrules_size(&bad, ranged, || {
                        verifying_timestamps(record, header_ts.as_ref())
                            .any(|ts| sink.hasher.clone().matches(&record.file_id, ts))
                    }) =>
            {
                Ok((sink.len, header_ts))
            }
            Err(why) => Err(why.into()),
        };
        let (len, reply_ts) = match judged {
            Ok(ok) => ok,
            // The core decides whether what was written is worth keeping.
            Err(why) if sink.len > 0 => return self.keep_prefix(transfer, why, sink),
            Err(why) => return FetchResult::Failed(why),
        };
        let verified = verifying_timestamps(record, reply_ts.as_ref())
            .any(|ts| sink.hasher.clone().matches(&record.file_id, ts));
        let partial = match sink.partial {
            Some(p) => p,
            None => match PartialFile::create(&self.settings.dir) {
                Ok(p) => p,
                Err(e) => {
                    return FetchResult::Failed(SourceFailure::Disk(format!(
                        "cannot create file: {e}"
                    )))
                }
            },
        };
        if verified {
            self.unverified.remove(&transfer);
            self.commit(partial, &record.file_name, len, true)
        } else {
            // Kept until the core decides no other source verifies.
            self.unverified.insert(transfer, (partial, len));
            FetchResult::Unverified { len }
        }
    }

    /// No source verified the download: the unverified copy kept for it is
    /// committed for the user (marked unverified), and the core told.
    pub(super) fn keep_unverified(&mut self, now: Time, transfer: TransferId, attempt: u64) {
        let result = match self.unverified.remove(&transfer) {
            Some((partial, len)) => {
                let record = self
                    .core
                    .downloads()
                    .get(transfer)
                    .map(|d| d.record.clone());
                match record {
                    Some(r) => self.commit(partial, &r.file_name, len, false),
                    None => FetchResult::Failed(SourceFailure::Disk("download vanished".into())),
                }
            }
            None => FetchResult::Failed(SourceFailure::Disk("the unverified copy was lost".into())),
        };
        self.core.on_fetch_result(now, transfer, attempt, result);
    }

    /// Moves a complete temp file to a safe, unique final name.
    pub(super) fn commit(
        &mut self,
        partial: PartialFile,
        wanted: &str,
        len: u64,
        verified: bool,
    ) -> FetchResult {
        match partial.commit_unique(&storage::sanitize_file_name(wanted)) {
            Ok(name) => {
                // Unstamped, the copy is hashed again at its first serve.
                if let Err(e) = self.stamps.record_current(&self.settings.dir, &name) {
                    debug!("cannot stat {name}: {e}");
                }
                FetchResult::Saved {
                    local_name: name,
                    len,
                    verified,
                }
            }
            Err(e) => {
                FetchResult::Failed(SourceFailure::Disk(format!("cannot store the file: {e}")))
            }
        }
    }
}

/// Checks a piece's complete reply (`piece`: its offset and length): the
/// range asked for, written as that range; its digest goes to the core.
/// Also the reply's own timestamp (the file is verified under it too).
fn check_piece(
    record: &FileRecord,
    decoded: Decoded,
    piece: (u64, u64),
    sink: PartialSink,
) -> (FetchResult, Option<crate::protocol::Timestamp>) {
    let parsed = Message::from_object(&decoded.fields);
    let ts = match &parsed {
        Ok(Message::FileData(h)) => h.file_timestamp.clone(),
        _ => None,
    };
    if let Err(why) = judge_piece(record, parsed, decoded.data, piece) {
        return (FetchResult::Failed(why.into()), None);
    }
    if !sink.range_before_data() || sink.len != piece.0.saturating_add(piece.1) {
        let why = SourceFailure::Malformed("its range fields come after its data".into());
        return (FetchResult::Failed(why), None);
    }
    let digest = PieceDigest(sink.hasher.digest());
    (FetchResult::Piece { digest }, ts)
}
