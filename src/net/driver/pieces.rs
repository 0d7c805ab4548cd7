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
use crate::protocol::decoder::MessageDecoder;
use crate::protocol::{ByteRange, FileRecord, Message};
use crate::storage::{FileHasher, PartialFile};
use log::debug;
use std::io::{self, Read};

/// One piece to fetch.
pub(super) struct Piece {
    pub(super) transfer: TransferId,
    pub(super) attempt: u64,
    pub(super) offset: u64,
    pub(super) len: u64,
}

/// Hashes the temp file of a download from several holders from its
/// start: its hash and its length.
pub(super) fn hash_file(mut file: PartialFile) -> io::Result<(FileHasher, u64)> {
    let mut hasher = FileHasher::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.file().read(&mut buf) {
            Ok(0) => return Ok((hasher, len)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
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
        let role = Role::Fetch(Box::new(FetchConn {
            transfer,
            attempt,
            request: Message::GetFile {
                file_id: record.file_id.clone(),
                range: Some(ByteRange {
                    offset,
                    length: Some(len),
                }),
            }
            .to_bytes(),
            record,
            source: format!("{source} ({to})"),
            from: offset,
            request_pos: 0,
            decoder: MessageDecoder::new(limits),
            sink,
            received: 0,
            piece: Some(len),
        }));
        self.connect_to(to, role);
    }

    /// A sink writing at `offset` in download `transfer`'s temp file (made
    /// at its first piece).
    fn piece_sink(&mut self, transfer: TransferId, offset: u64) -> io::Result<PartialSink> {
        let file = match self.piece_files.entry(transfer) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(PartialFile::create(&self.settings.dir)?)
            }
        };
        let alias = file.alias()?;
        PartialSink::piece(self.settings.dir.clone(), self.waker.clone(), alias, offset)
    }

    /// Every piece of download `transfer` is in: its temp file is hashed on
    /// the worker, then checked against the id.
    pub(super) fn verify_pieces(&mut self, transfer: TransferId, attempt: u64, record: FileRecord) {
        let alias = self.piece_files.get(&transfer).map(PartialFile::alias);
        let alias = match alias {
            Some(Ok(alias)) => alias,
            Some(Err(e)) => {
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
                result: hash_file(alias),
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
                let verified = exact
                    && verifying_timestamps(&record, None)
                        .any(|ts| hasher.clone().matches(&record.file_id, ts));
                match self.piece_files.remove(&transfer) {
                    Some(file) if verified => self.commit(file, &record.file_name, len, true),
                    Some(file) => {
                        self.piece_files.insert(transfer, file);
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
    }
}
