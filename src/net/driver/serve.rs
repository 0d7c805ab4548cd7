//! Serving held files: opening them, stamps, and read leases being broken.

use super::Driver;
use crate::core::catalog::LocalCopy;
use crate::core::GetFileAnswer;
use crate::core::Time;
use crate::ids::{FileId, PeerAddr};
use crate::net::conn::{CloseReason, Payload, Role, WriteKind};
use crate::protocol::encoder::{FileDataEncoder, FileSource};
use crate::protocol::{ByteRange, FileRecord, Message};
use crate::storage::serving::{self, Opened};
use log::{debug, info, warn};
use mio::Interest;
use std::fmt;
use std::io;

/// The file a role streams, if it is mapped under a lease being broken.
pub(super) fn breaking_file(role: &Role) -> Option<FileId> {
    match role {
        Role::Write {
            payload: Payload::File(enc),
            ..
        } if enc.lease_breaking() => Some(enc.file_id().clone()),
        Role::Connecting(inner) => breaking_file(inner),
        _ => None,
    }
}

/// Why a held file is not served.
#[derive(Debug)]
pub(super) enum OpenError {
    /// We hold no servable copy.
    NotHeld,
    /// It changed on disk since it was verified (being checked again).
    Changed,
    /// It could not be opened or mapped.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotHeld => f.write_str("not held"),
            OpenError::Changed => f.write_str("changed on disk; being checked again"),
            OpenError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Where the bytes of an opened copy of `len` bytes come from: its mapping
/// under a lease, or reads checked against the id as they are sent.
fn file_source(
    record: &FileRecord,
    verified: bool,
    opened: Opened,
    len: u64,
) -> Result<FileSource, OpenError> {
    let file_id = &record.file_id;
    Ok(match opened {
        _ if len == 0 => FileSource::Memory(Vec::new()),
        Opened::Leased(lease) => FileSource::Leased(Box::new(
            serving::LeasedFile::map(lease).map_err(OpenError::Io)?,
        )),
        // An unverified copy never hashes to its id: served (by the
        // user's choice) without the hash gate.
        Opened::Unleased(file, why) if !verified => {
            debug!("{file_id}: no read lease ({why}); unverified copy, read as it is sent");
            FileSource::Read(Box::new(serving::CheckedReader::unverified(file, len)))
        }
        Opened::Unleased(file, why) => {
            debug!("{file_id}: no read lease ({why}); read and checked as it is sent");
            FileSource::Read(Box::new(serving::CheckedReader::new(
                file,
                len,
                record.file_id.clone(),
                record.file_timestamp.clone(),
            )))
        }
    })
}

impl Driver {
    /// Connections streaming a FILE_DATA now.
    pub(super) fn file_streams(&self) -> usize {
        self.conns
            .iter()
            .filter(|(_, c)| {
                matches!(
                    c.role,
                    Role::Write {
                        payload: Payload::File(_),
                        ..
                    }
                )
            })
            .count()
    }

    /// Answers a GET_FILE read on connection `key` as the core decides:
    /// our copy, the not-found FILE_DATA, or (too many streams) a close
    /// without a reply.
    pub(super) fn answer_get_file(
        &mut self,
        key: usize,
        file_id: FileId,
        range: Option<ByteRange>,
    ) {
        let streams = self.file_streams();
        // Who asked, for the log lines: "peer_id (host:port)" when the
        // address is a tracked peer's, else the address.
        let asker = self
            .conns
            .get(key)
            .map_or_else(|| "a peer".to_string(), |c| self.conn_name(c));
        let opened = match self.core.answer_ranged_get_file(&file_id, range, streams) {
            GetFileAnswer::Busy { streams } => {
                info!(
                    "GET_FILE {file_id} from {asker}: already sending {streams} files; closing unanswered"
                );
                self.close(key, None);
                return;
            }
            GetFileAnswer::NotHeld => Err(OpenError::NotHeld),
            GetFileAnswer::Serve {
                record,
                local,
                range,
            } => self.open_copy(&record, &local, range),
        };
        self.net.message_out("FILE_DATA");
        let payload = match opened {
            Ok(enc) => {
                self.net.uploads_started += 1;
                match range {
                    Some(r) => info!(
                        "serving {file_id} to {asker} from byte {} (range)",
                        r.offset
                    ),
                    None => info!("serving {file_id} to {asker}"),
                }
                Payload::File(Box::new(enc))
            }
            Err(e) => {
                debug!("GET_FILE {file_id} from {asker}: {e}; replying not found");
                let mut bytes = Message::file_not_found().to_bytes();
                bytes.push(b'\n');
                Payload::bytes(bytes)
            }
        };
        let role = Role::Write {
            payload,
            kind: WriteKind::FileReply,
        };
        self.set_role(key, role, Interest::READABLE | Interest::WRITABLE);
    }

    /// Pushes our copy of `file_id` to `to`, within its dial limit.
    pub(super) fn push_file(&mut self, now: Time, to: PeerAddr, file_id: FileId) {
        if !self.may_dial(now, &to, "FILE_DATA push") {
            debug!(
                "push of {file_id} to {} not sent",
                self.core.name_listener(&to)
            );
            return;
        }
        match self.open_for_push(&file_id) {
            Ok(enc) => {
                self.net.message_out("FILE_DATA");
                self.net.uploads_started += 1;
                let role = Role::Write {
                    payload: Payload::File(Box::new(enc)),
                    kind: WriteKind::Push,
                };
                self.connect_to(to, role);
            }
            Err(e) => warn!(
                "cannot push {file_id} to {}: {e}",
                self.core.name_listener(&to)
            ),
        }
    }

    /// Opens our copy of `file_id` to push it, if we may spread it.
    fn open_for_push(&mut self, file_id: &FileId) -> Result<FileDataEncoder, OpenError> {
        let Some((record, local)) = self.core.servable_copy(file_id) else {
            return Err(OpenError::NotHeld);
        };
        let (record, local) = (record.clone(), local.clone());
        self.open_copy(&record, &local, None)
    }

    /// Opens a held copy to serve it: under a read lease and mapped, or
    /// (no lease to be had) read and checked as it goes. A copy that no
    /// longer looks as it did when verified is not served; the core is told.
    fn open_copy(
        &mut self,
        record: &FileRecord,
        local: &LocalCopy,
        range: Option<ByteRange>,
    ) -> Result<FileDataEncoder, OpenError> {
        let file_id = &record.file_id;
        let path = self.settings.dir.join(&local.name);
        let (opened, stamp) = match serving::open_for_serving(&path, serving::leases_enabled()) {
            Ok(ok) => ok,
            Err(e) if serving::is_gone(&e) => {
                // Gone, or no longer a regular file: the user changed it.
                self.core.on_local_changed(file_id);
                return Err(OpenError::Io(e));
            }
            Err(e) => {
                // A passing failure (EMFILE in a flood, EIO...): not-found
                // for this request only; the copy stays held.
                debug!("cannot open {} to serve it: {e}", local.name);
                return Err(OpenError::Io(e));
            }
        };
        match self.stamps.get(&local.name) {
            Some(was) if *was != stamp => {
                self.core.on_local_changed(file_id);
                return Err(OpenError::Changed);
            }
            Some(_) => {}
            // Never stamped (taken back at start, or older metadata): its
            // bytes are hashed once before they are served.
            None => {
                self.core.on_local_unstamped(file_id);
                return Err(OpenError::Changed);
            }
        }
        let source = file_source(record, local.verified, opened, stamp.len)?;
        Ok(FileDataEncoder::with_range(record, source, range))
    }

    /// SIGIO: a writer waits on a file we serve under a lease. Those
    /// transfers end now, unfinished (their clients fall back to another
    /// source), dropping the map and then the lease, which lets the writer
    /// in; the files are checked again.
    pub(super) fn on_lease_signal(&mut self) {
        if let Some(s) = self.lease_signals.as_mut() {
            // Only the readiness matters; drain what was raised.
            for _ in s.pending() {}
        }
        // A push still connecting holds its file too.
        let broken: Vec<(usize, FileId)> = self
            .conns
            .iter()
            .filter_map(|(k, c)| Some((k, breaking_file(&c.role)?)))
            .collect();
        // And so does one waiting for its host's address: dropped as failed.
        let mut waiting_broken = Vec::new();
        for waiting in self.pending.values_mut() {
            let before = waiting.len();
            waiting.retain(|p| match breaking_file(&p.role) {
                Some(id) => {
                    waiting_broken.push(id);
                    false
                }
                None => true,
            });
            self.pending_count -= before - waiting.len();
        }
        for file_id in waiting_broken {
            info!("{file_id} is being changed on disk; its push waiting to connect is dropped");
            self.core.on_local_changed(&file_id);
        }
        for (key, file_id) in broken {
            info!("{file_id} is being changed on disk; its transfer in progress is ended");
            self.close(key, Some(CloseReason::FileChanged));
            self.core.on_local_changed(&file_id);
        }
    }
}
