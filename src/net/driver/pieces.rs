//! A download from several holders, the driver's side: each piece fetched
//! on its own connection into the download's one temp file, the file hashed
//! off the loop once every piece is in, and pieces no longer wanted closed.
//! Which piece comes from whom is the core's ([`crate::core::swarm`]).

use super::workers::WorkerMsg;
use super::Driver;
use crate::core::downloads::verifying_timestamps;
use crate::core::{FetchResult, SourceFailure};
use crate::ids::{PeerAddr, TransferId};
use crate::net::conn::{FetchConn, PartialSink, Role};
use crate::protocol::{ByteRange, FileRecord, Timestamp};
use crate::storage::{FileHasher, PartialFile};
use log::debug;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest the check of a download's pieces waits for the writer threads
/// of cancelled pieces to let go of the file (they stop at their next
/// buffer; only a hung disk takes longer).
const WRITERS_GONE_TIMEOUT: Duration = Duration::from_secs(60);

/// The temp file of a download from several holders, and the count of its
/// aliases still open (pieces being written).
pub(super) struct PieceFile {
    pub(super) file: PartialFile,
    pub(super) live: Arc<()>,
    /// Timestamps the pieces' replies gave, other than the catalog's (the
    /// file is verified under each, as a whole-file reply's is).
    reply_ts: Vec<Timestamp>,
}

/// Distinct reply timestamps kept per download (a holder could send a new
/// one with every piece; the first few are enough).
const MAX_REPLY_TIMESTAMPS: usize = 4;

/// One piece to fetch.
pub(super) struct Piece {
    pub(super) transfer: TransferId,
    pub(super) attempt: u64,
    pub(super) offset: u64,
    pub(super) len: u64,
}

/// On the worker: waits until no piece writer holds the file but `reader`
/// (the writer threads of cancelled pieces stop at their next buffer), so
/// the bytes hashed are the bytes stored; then hashes it.
fn hash_when_written(mut reader: PartialFile, live: Arc<()>) -> io::Result<(FileHasher, u64)> {
    let since = Instant::now();
    // Ours (`live`), the driver's and the reader's.
    while Arc::strong_count(&live) > 3 {
        if since.elapsed() > WRITERS_GONE_TIMEOUT {
            return Err(io::Error::other("a piece's writer did not finish"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    super::workers::hash_file(&mut reader)
}

impl Driver {
    /// Opens a connection asking `source` (at `to`) for one piece of the
    /// file, written at its offset in the download's temp file.
    pub(super) fn open_piece_fetch(
        &mut self,
        piece: Piece,
        source: String,
        to: PeerAddr,
        record: FileRecord,
    ) {
        let Piece {
            transfer,
            attempt,
            offset,
            len,
        } = piece;
        // The same bound as a whole-file download's, whatever size the
        // catalog claims.
        if offset.saturating_add(len) > self.settings.max_file_size {
            let name = format!("{source} ({to})");
            self.report_fetch(
                transfer,
                attempt,
                &name,
                FetchResult::Failed(SourceFailure::TooLarge),
            );
            return;
        }
        let sink = match self.piece_sink(transfer, offset) {
            Ok(sink) => sink.expecting(&record.file_id.0),
            Err(e) => {
                let why = SourceFailure::Disk(format!("cannot open the file's pieces: {e}"));
                let name = format!("{source} ({to})");
                self.report_fetch(transfer, attempt, &name, FetchResult::Failed(why));
                return;
            }
        };
        let mut limits = self.fetch_limits(&record.file_size);
        limits.max_data = limits.max_data.min(len);
        self.net.message_out("GET_FILE");
        let range = Some(ByteRange {
            offset,
            length: Some(len),
        });
        let name = format!("{source} ({to})");
        let fetch = FetchConn::new((transfer, attempt), record, name, range, limits, sink);
        let role = Role::Fetch(Box::new(fetch));
        self.connect_to(to, role);
    }

    /// A sink writing at `offset` in download `transfer`'s temp file (made
    /// at its first piece).
    fn piece_sink(&mut self, transfer: TransferId, offset: u64) -> io::Result<PartialSink> {
        // Pieces start over: a prefix kept for the download (an empty one
        // from a restart) is no longer its temp file.
        if !self.piece_files.contains_key(&transfer) {
            if let Some(kept) = self.resumable.remove(&transfer) {
                self.discard(vec![kept.partial]);
            }
        }
        let file = match self.piece_files.entry(transfer) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let file = PartialFile::create(&self.settings.dir)?;
                // Named in the metadata (with the bytes from its start that
                // are in), so a crash or an exit resumes it.
                self.temps.insert(transfer, file.name());
                e.insert(PieceFile {
                    file,
                    live: Arc::new(()),
                    reply_ts: Vec::new(),
                })
            }
        };
        let alias = file.file.alias(&file.live)?;
        let now = self.now();
        self.schedule_persist(now);
        PartialSink::piece(self.settings.dir.clone(), self.waker.clone(), alias, offset)
    }

    /// A piece of `transfer` came with timestamp `ts` in its reply.
    pub(super) fn note_piece_timestamp(&mut self, transfer: TransferId, ts: Option<Timestamp>) {
        let (Some(ts), Some(p)) = (ts, self.piece_files.get_mut(&transfer)) else {
            return;
        };
        if p.reply_ts.len() < MAX_REPLY_TIMESTAMPS && !p.reply_ts.contains(&ts) {
            p.reply_ts.push(ts);
        }
    }

    /// Every piece of download `transfer` is in: its temp file is hashed on
    /// the worker, then checked against the id.
    pub(super) fn verify_pieces(&mut self, transfer: TransferId, attempt: u64, record: FileRecord) {
        let alias = self
            .piece_files
            .get(&transfer)
            .map(|p| (p.file.alias(&p.live), p.live.clone()));
        let (alias, live) = match alias {
            Some((Ok(alias), live)) => (alias, live),
            Some((Err(e), _)) => {
                let why = SourceFailure::Disk(format!("cannot read the file's pieces: {e}"));
                self.report_fetch(transfer, attempt, "its pieces", FetchResult::Failed(why));
                return;
            }
            None => {
                let why = SourceFailure::Disk("the file's pieces are gone".into());
                self.report_fetch(transfer, attempt, "its pieces", FetchResult::Failed(why));
                return;
            }
        };
        let _ = self
            .worker_tx
            .send(Box::new(move || WorkerMsg::PiecesHashed {
                transfer,
                attempt,
                record,
                result: hash_when_written(alias, live),
            }));
    }

    /// The temp file of a download from several holders is hashed: stored
    /// if it matches the id (and has its size), else kept for the core's
    /// audit of its pieces.
    pub(super) fn on_pieces_hashed(
        &mut self,
        transfer: TransferId,
        attempt: u64,
        record: FileRecord,
        result: io::Result<(FileHasher, u64)>,
    ) {
        if !self.core.is_current(transfer, attempt) {
            debug!("{transfer}: its pieces were checked after it ended");
            return;
        }
        let result = match result {
            Ok((hasher, len)) => {
                let exact = record.file_size.bytes() == Some(len);
                let replies = self
                    .piece_files
                    .get(&transfer)
                    .map(|p| p.reply_ts.clone())
                    .unwrap_or_default();
                let verified = exact
                    && verifying_timestamps(&record, None)
                        .chain(replies.iter())
                        .any(|ts| hasher.clone().matches(&record.file_id, ts));
                match self.piece_files.remove(&transfer) {
                    Some(p) if verified => self.commit(p.file, &record.file_name, len, true),
                    Some(p) => {
                        self.piece_files.insert(transfer, p);
                        FetchResult::Unverified { len }
                    }
                    None => FetchResult::Failed(SourceFailure::Disk(
                        "the file's pieces are gone".into(),
                    )),
                }
            }
            Err(e) => FetchResult::Failed(SourceFailure::Disk(format!(
                "cannot read the file's pieces: {e}"
            ))),
        };
        self.report_fetch(transfer, attempt, "its pieces", result);
    }

    /// Closes the connection of piece attempt `attempt` (another copy came,
    /// or its source was excluded); its writer drops what is queued.
    pub(super) fn cancel_fetch(&mut self, transfer: TransferId, attempt: u64) {
        let key = self.conns.iter().find_map(|(key, c)| {
            let role = match &c.role {
                Role::Connecting(inner) => inner.as_ref(),
                other => other,
            };
            match role {
                Role::Fetch(f) if f.transfer == transfer && f.attempt == attempt => Some(key),
                _ => None,
            }
        });
        if let Some(key) = key {
            debug!("{transfer}: closing piece attempt {attempt}, no longer wanted");
            self.close(key, None);
        }
        // Or it still waits for its host's address: it never connects.
        let is_it = |role: &Role| matches!(role, Role::Fetch(f) if f.transfer == transfer && f.attempt == attempt);
        for waiting in self.pending.values_mut() {
            let before = waiting.len();
            waiting.retain(|p| !is_it(&p.role));
            self.pending_count -= before - waiting.len();
        }
    }
}
