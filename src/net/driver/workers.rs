//! Helper threads (the worker and the metadata writer) and what they send back.

use super::{now_unix, Driver};
use crate::cli::escape;
use crate::core::Dest;
use crate::core::{Command, ReverifyOutcome, StampUpdate};
use crate::ids::{FileId, TransferId};
use crate::net::conn::KeptPrefix;
use crate::net::file_writer::Prefix;
use crate::protocol::FileRecord;
use crate::storage::serving::{self, FileStamp};
use crate::storage::{self, metadata, FileHasher, PartialFile, StoredEntry};
use log::{debug, info, warn};
use mio::Waker;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often a metadata write that failed is tried again.
pub(super) const METADATA_RETRY: Duration = Duration::from_secs(5);

/// A job for the worker thread (disk work kept off the loop).
pub(super) type Job = Box<dyn FnOnce() -> WorkerMsg + Send>;

/// Results from helper threads.
pub(super) enum WorkerMsg {
    Imported(Result<StoredEntry, storage::ImportError>),
    /// A `push <dir>`: each regular file directly in it, imported, and how
    /// many entries were skipped.
    ImportedDir {
        dir: PathBuf,
        results: Vec<Result<StoredEntry, storage::ImportError>>,
        skipped: usize,
    },
    Copied(storage::ExportOutcome),
    /// A held file found changed, hashed again.
    Reverified {
        file_id: FileId,
        name: String,
        result: io::Result<(bool, FileStamp)>,
    },
    /// A `get` with a destination, its destination checked before the
    /// download starts.
    DestChecked(Command, Result<(), storage::Refusal>),
    /// Temp files dropped (unlinked) off the loop.
    Discarded,
    /// A download from several holders: its temp file hashed (and its
    /// length), to check against the id.
    PiecesHashed {
        transfer: TransferId,
        attempt: u64,
        record: FileRecord,
        result: io::Result<(FileHasher, u64)>,
    },
    /// A download to resume: its kept temp file opened and hashed.
    PrefixHashed {
        transfer: TransferId,
        result: io::Result<(PartialFile, FileHasher, u64)>,
    },
}

/// Opens the temp file `name` kept in `dir` and hashes its bytes (the
/// prefix a resumed download continues), cut to its first `valid` bytes
/// first when only those are the file's.
fn hash_prefix(
    dir: &Path,
    name: &str,
    valid: Option<u64>,
) -> io::Result<(PartialFile, FileHasher, u64)> {
    let mut partial = PartialFile::reopen(dir, name)?;
    if let Some(valid) = valid {
        if partial.file().metadata()?.len() > valid {
            partial.file().set_len(valid)?;
        }
    }
    let (hasher, len) = hash_file(&mut partial)?;
    Ok((partial, hasher, len))
}

/// Hashes a temp file from its start: its hash and its length.
pub(super) fn hash_file(partial: &mut PartialFile) -> io::Result<(FileHasher, u64)> {
    use std::io::Read;
    let mut hasher = FileHasher::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match partial.file().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hasher, len))
}

/// The worker thread: runs jobs in order, wakes the loop after each.
pub(super) fn start_worker(waker: Arc<Waker>) -> io::Result<(Sender<Job>, Receiver<WorkerMsg>)> {
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (res_tx, res_rx) = mpsc::channel();
    thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            for job in job_rx {
                if res_tx.send(job()).is_err() {
                    break;
                }
                let _ = waker.wake();
            }
        })?;
    Ok((job_tx, res_rx))
}

/// Work for the metadata thread, done in order.
pub(super) enum MetaJob {
    /// Write this serialized catalog atomically.
    Write(Vec<u8>),
    /// Unlink a stored file. Queued right after the catalog that no longer
    /// lists it, so a crash can never leave an entry held whose file is gone.
    Remove(PathBuf),
}

/// The metadata writer: takes serialized catalogs and writes each one
/// atomically (temp file, fsync, rename, directory fsync). Consecutive
/// catalogs are coalesced (only the newest is written); a removal is never
/// moved before the catalog queued ahead of it.
pub(super) fn start_metadata_writer(
    dir: PathBuf,
) -> io::Result<(Sender<MetaJob>, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<MetaJob>();
    let writer = MetaWriter {
        dir,
        failed: None,
        failures: 0,
        removals: Vec::new(),
    };
    let handle = thread::Builder::new()
        .name("metadata".into())
        .spawn(move || writer.run(rx))?;
    Ok((tx, handle))
}

/// The metadata thread's state.
struct MetaWriter {
    dir: PathBuf,
    /// A catalog whose write failed (ENOSPC, EACCES): kept and tried again
    /// every [`METADATA_RETRY`] until one succeeds or a newer catalog
    /// replaces it.
    failed: Option<Vec<u8>>,
    /// Failed attempts in a row (one warn line, then debug lines).
    failures: u32,
    /// Removals waiting while the catalog that no longer lists their file
    /// is not on disk: a file is unlinked only after the catalog saying so
    /// was written.
    removals: Vec<PathBuf>,
}

impl MetaWriter {
    /// Works until the loop drops its sender.
    fn run(mut self, rx: Receiver<MetaJob>) {
        while let Some(job) = self.next_job(&rx) {
            match job {
                MetaJob::Write(bytes) => self.write_newest(bytes, &rx),
                MetaJob::Remove(path) if self.failed.is_some() => self.removals.push(path),
                MetaJob::Remove(path) => remove(&path),
            }
        }
    }

    /// The next job; while a write has failed, its retry when none comes
    /// within [`METADATA_RETRY`]. None once the loop is gone.
    fn next_job(&mut self, rx: &Receiver<MetaJob>) -> Option<MetaJob> {
        if self.failed.is_none() {
            return rx.recv().ok();
        }
        match rx.recv_timeout(METADATA_RETRY) {
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => self.failed.take().map(MetaJob::Write),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Writes the newest catalog queued (`bytes` or a later one); the
    /// removals queued behind it wait for it.
    fn write_newest(&mut self, mut bytes: Vec<u8>, rx: &Receiver<MetaJob>) {
        while let Ok(queued) = rx.try_recv() {
            match queued {
                MetaJob::Write(newer) => bytes = newer,
                MetaJob::Remove(path) => self.removals.push(path),
            }
        }
        self.failed = None;
        self.write(bytes);
        if self.failed.is_none() {
            self.removals.drain(..).for_each(|p| remove(&p));
        }
    }

    /// Writes one catalog; a failure is kept for a retry.
    fn write(&mut self, bytes: Vec<u8>) {
        let path = self.dir.join(metadata::METADATA_FILE);
        match storage::write_atomic(&self.dir, metadata::METADATA_FILE, &bytes) {
            Ok(()) => {
                if self.failures > 0 {
                    info!(
                        "{} written again after {} failed attempts",
                        path.display(),
                        self.failures
                    );
                }
                self.failures = 0;
            }
            Err(e) => {
                if self.failures == 0 {
                    warn!(
                        "cannot write {}: {e}; retrying every {} s",
                        path.display(),
                        METADATA_RETRY.as_secs()
                    );
                } else {
                    debug!("metadata write still failing: {e}");
                }
                self.failures += 1;
                self.failed = Some(bytes);
            }
        }
    }
}

/// Unlinks a stored file the catalog no longer lists.
fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => info!("removed {}", path.display()),
        Err(e) => warn!("cannot remove {}: {e}", path.display()),
    }
}

impl Driver {
    /// A helper thread woke the loop: parked connections get another
    /// step, finished writers' files are stored, lookups and jobs done are
    /// taken in.
    pub(super) fn on_wake(&mut self) {
        // A file writer made room (or a wake for something else: a parked
        // connection without room parks again).
        self.ready.extend(self.parked.drain(..));
        // Or a writer ended: its FILE_DATA can be checked and stored.
        self.settle_finished();
        for r in self.resolver.drain() {
            self.on_resolved(r);
        }
        while let Ok(msg) = self.worker_rx.try_recv() {
            self.on_worker_msg(msg);
        }
    }

    /// Takes in what the worker thread finished.
    fn on_worker_msg(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Imported(r) => {
                let now = self.now();
                let r = r.map(|s| self.stamped(s));
                self.core.on_imported(now, r)
            }
            WorkerMsg::ImportedDir {
                dir,
                results,
                skipped,
            } => {
                let now = self.now();
                let results = results
                    .into_iter()
                    .map(|r| r.map(|s| self.stamped(s)))
                    .collect();
                self.core.on_imported_dir(now, &dir, results, skipped)
            }
            WorkerMsg::Copied(outcome) => escape::say(&outcome.to_string()),
            WorkerMsg::Discarded => {}
            WorkerMsg::DestChecked(cmd, Ok(())) => self.core.on_command(self.now(), cmd),
            WorkerMsg::DestChecked(_, Err(refusal)) => escape::say(&refusal.to_string()),
            WorkerMsg::Reverified {
                file_id,
                name,
                result,
            } => self.on_reverified(file_id, name, result),
            WorkerMsg::PrefixHashed { transfer, result } => self.on_prefix_hashed(transfer, result),
            WorkerMsg::PiecesHashed {
                transfer,
                attempt,
                record,
                result,
            } => self.on_pieces_hashed(transfer, attempt, record, result),
        }
    }

    /// Removes temp files a download no longer needs on the worker: a
    /// large file's unlink can take a while, and the loop never waits.
    pub(super) fn discard(&self, files: Vec<PartialFile>) {
        if files.is_empty() {
            return;
        }
        // Should the worker be gone, the files go here, when the job drops.
        let _ = self.worker_tx.send(Box::new(move || {
            drop(files);
            WorkerMsg::Discarded
        }));
    }

    /// A download in flight at the last exit: the core takes it back at
    /// once (so nothing else starts the same file), and the temp file it
    /// kept is hashed off the loop; one the core does not want is removed.
    pub(super) fn resume_kept(&mut self, record: FileRecord, resume: metadata::StoredResume) {
        let path = self.settings.dir.join(&resume.partial);
        let len = std::fs::symlink_metadata(&path).map_or(0, |m| m.len());
        // A download from several holders kept only its first pieces.
        let len = resume.valid.map_or(len, |valid| len.min(valid));
        let now = self.now();
        let Some(transfer) = self.core.resume_download(now, record, resume.by_user, len) else {
            // Only a `.partial-` regular file of ours (checked at load).
            if let Err(e) = std::fs::remove_file(&path) {
                debug!("cannot remove {}: {e}", path.display());
            }
            return;
        };
        self.temps.insert(transfer, resume.partial.clone());
        let dir = self.settings.dir.clone();
        let _ = self
            .worker_tx
            .send(Box::new(move || WorkerMsg::PrefixHashed {
                transfer,
                result: hash_prefix(&dir, &resume.partial, resume.valid),
            }));
    }

    /// A kept temp file is hashed: its download goes on from its bytes, or
    /// from the start if they could not be read. Dropped (and removed) if
    /// the download ended meanwhile.
    fn on_prefix_hashed(
        &mut self,
        transfer: TransferId,
        result: io::Result<(PartialFile, FileHasher, u64)>,
    ) {
        let now = self.now();
        if self.core.downloads().get(transfer).is_none() {
            // Ended meanwhile (its file deleted, say): its bytes go.
            if let Ok((partial, ..)) = result {
                self.discard(vec![partial]);
            }
            return;
        }
        match result {
            Ok((partial, hasher, len)) => {
                self.core.on_prefix_hashed(now, transfer, Some(len));
                let prefix = Prefix { hasher, len };
                self.resumable
                    .insert(transfer, KeptPrefix { partial, prefix });
            }
            Err(e) => {
                warn!(
                    "{transfer}: its kept bytes cannot be read ({e}); fetching it from the start"
                );
                self.temps.remove(&transfer);
                self.core.on_prefix_hashed(now, transfer, None);
            }
        }
    }

    /// A changed file hashed again: the core says whether the result
    /// applies (not stale) and what becomes of its stamp.
    fn on_reverified(
        &mut self,
        file_id: FileId,
        name: String,
        result: io::Result<(bool, FileStamp)>,
    ) {
        let (outcome, stamp) = match result {
            Ok((true, stamp)) => (ReverifyOutcome::Matches, Some(stamp)),
            Ok((false, stamp)) => (ReverifyOutcome::Differs, Some(stamp)),
            Err(e) if serving::is_gone(&e) => (ReverifyOutcome::Gone, None),
            Err(e) => (ReverifyOutcome::Unreadable(e.kind()), None),
        };
        let now = self.now();
        match self.core.on_reverified(now, &file_id, &name, outcome) {
            StampUpdate::Unchanged => {}
            StampUpdate::Record => {
                if let Some(stamp) = stamp {
                    self.stamps.record(name, stamp);
                }
            }
            StampUpdate::Forget => self.stamps.forget(&name),
        }
    }

    /// Hashes a held file again off the loop ([`crate::core::Effect::Reverify`]).
    pub(super) fn reverify(&mut self, record: FileRecord, name: String) {
        let path = self.settings.dir.join(&name);
        let _ = self.worker_tx.send(Box::new(move || {
            let result = serving::reverify(&path, &record.file_id, &record.file_timestamp);
            WorkerMsg::Reverified {
                file_id: record.file_id,
                name,
                result,
            }
        }));
    }

    /// Copies a held file out to the user's destination off the loop.
    pub(super) fn copy_out(&mut self, name: String, record: FileRecord, dest: Dest) {
        let src = self.settings.dir.join(&name);
        let storage_dir = self.settings.dir.clone();
        let in_folder = storage::export_name(&record.file_name, &record.file_id.0);
        let _ = self.worker_tx.send(Box::new(move || {
            WorkerMsg::Copied(storage::export(
                &src,
                &storage_dir,
                &dest.path,
                &record.file_name,
                &in_folder,
                dest.force,
            ))
        }));
    }

    /// Imports a file the user named (`push <path>`) off the loop.
    /// A file copied into storage by `push`: its stamp recorded, as the
    /// core takes it.
    fn stamped(&mut self, s: StoredEntry) -> crate::core::Imported {
        let name = s.local_name.clone().unwrap_or_default();
        if let Some(stamp) = s.local_stamp {
            self.stamps.record(name.clone(), stamp);
        }
        crate::core::Imported {
            record: s.record,
            local_name: name,
        }
    }

    pub(super) fn import(&mut self, path: PathBuf) {
        let dir = self.settings.dir.clone();
        let owner = self.core.config().peer_id.clone();
        let _ = self.worker_tx.send(Box::new(move || {
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                return WorkerMsg::Imported(storage::import_file(&path, &dir, &owner, now_unix()));
            }
            match storage::user_dir::regular_files_in(&path) {
                Ok((files, skipped)) => WorkerMsg::ImportedDir {
                    results: files
                        .iter()
                        .map(|f| storage::import_file(f, &dir, &owner, now_unix()))
                        .collect(),
                    dir: path,
                    skipped,
                },
                Err(e) => WorkerMsg::Imported(Err(storage::ImportError::Unreadable(path, e))),
            }
        }));
    }
}
