//! The exit: received files land, then the final catalog is written.

use super::receive::Finishing;
use super::{catalog_json, Driver};
use crate::net::conn::{FetchConn, Role};
use crate::protocol::decoder::DataSink;
use crate::storage::{self, metadata};
use log::{error, info, warn};
use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest the exit waits for received files still being written.
pub(super) const EXIT_DRAIN: Duration = Duration::from_secs(5);

/// [`EXIT_DRAIN`] when a signal asked us to exit (the whole exit must fit
/// in `exit_guard::SIGNAL_EXIT_LIMIT`).
pub(super) const SIGNAL_EXIT_DRAIN: Duration = Duration::from_millis(800);

/// How long after [`SIGNAL_EXIT_DRAIN`] an exit by signal waits for a
/// metadata write already at work before giving up its final write.
pub(super) const SIGNAL_EXIT_WRITER: Duration = Duration::from_millis(300);

impl Driver {
    /// Stops accepting, lets received files land, then writes the final
    /// catalog synchronously.
    pub(super) fn shutdown(&mut self) {
        // The terminal scrolls whole again; nothing more is drawn.
        crate::cli::console::stop_prompting();
        crate::cli::console::release_status_row();
        self.p2p = None;
        self.http = None;
        // After a signal the whole exit fits in SIGNAL_EXIT_LIMIT (the
        // watchdog in `exit_guard` ends the process then anyway): received
        // files get SIGNAL_EXIT_DRAIN, an earlier metadata write still at
        // work SIGNAL_EXIT_WRITER more, and the final write what is left.
        let drain_until = match self.signalled {
            Some(t) => t + SIGNAL_EXIT_DRAIN,
            None => Instant::now() + EXIT_DRAIN,
        };
        self.drain_finishing(drain_until);
        self.keep_downloads_for_resume(drain_until);
        if self.end_metadata_writer() {
            self.save_final_catalog();
        } else {
            // Writing now would race it on metadata.json (an older catalog
            // could land last); its own write keeps the file whole.
            error!("metadata NOT saved on exit: an earlier write is still at work; bye");
        }
    }

    /// Ends the metadata writer once its queue is written: false if, after
    /// a signal, it is still at work when its share of the exit is over.
    fn end_metadata_writer(&mut self) -> bool {
        drop(self.meta_tx.take());
        let Some(t) = self.meta_thread.take() else {
            return true;
        };
        match self.signalled {
            None => {
                let _ = t.join();
                true
            }
            Some(at) => {
                let until = at + SIGNAL_EXIT_DRAIN + SIGNAL_EXIT_WRITER;
                while !t.is_finished() && Instant::now() < until {
                    thread::sleep(Duration::from_millis(5));
                }
                t.is_finished()
            }
        }
    }

    /// Writes the catalog atomically and removes every temp file left but
    /// those of the downloads it names for resuming.
    fn save_final_catalog(&mut self) {
        let bytes = catalog_json(&self.core, &self.stamps, &self.temps);
        let saved = storage::write_atomic(&self.settings.dir, metadata::METADATA_FILE, &bytes);
        let keep: Vec<&str> = match saved {
            Ok(()) => self.temps.values().map(String::as_str).collect(),
            // Not named anywhere: nothing would resume them.
            Err(_) => Vec::new(),
        };
        if let Err(e) = storage::remove_partials_except(&self.settings.dir, &keep) {
            warn!("cannot remove temp files on exit: {e}");
        }
        match saved {
            Ok(()) => info!("metadata saved; bye"),
            Err(e) => error!(
                "metadata NOT saved on exit ({e}): {} keeps its previous contents; bye",
                self.settings.dir.join(metadata::METADATA_FILE).display()
            ),
        }
    }

    /// At exit: the bytes of every download in flight are kept for the next
    /// start. A running attempt is cut (its writer writes what arrived,
    /// until `deadline`); each kept temp file is fsynced and left in the
    /// folder, named in the final metadata. Downloads with no byte kept
    /// name none.
    fn keep_downloads_for_resume(&mut self, deadline: Instant) {
        // Attempts reading, connecting, or waiting for a name lookup: the
        // last two hold a resumed download's bytes in their sink too.
        let fetching: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| is_fetch(&c.role))
            .map(|(key, _)| key)
            .collect();
        let mut roles: Vec<Role> = fetching
            .into_iter()
            .filter_map(|key| self.conns.try_remove(key).map(|c| c.role))
            .collect();
        for (_, waiting) in self.pending.drain() {
            roles.extend(waiting.into_iter().map(|p| p.role));
        }
        let mut cut = Vec::new();
        for role in roles {
            let role = match role {
                Role::Connecting(inner) => *inner,
                other => other,
            };
            if let Role::Fetch(f) = role {
                // A piece's bytes are no prefix: they go with their file.
                if f.piece.is_some() {
                    continue;
                }
                let FetchConn {
                    transfer,
                    mut decoder,
                    mut sink,
                    ..
                } = *f;
                let _ = decoder.flush_cut_data(&mut sink);
                let _ = sink.end_data();
                cut.push((transfer, sink));
            }
        }
        // A cut whose writer was still at work when the loop stopped.
        for (_, f) in std::mem::take(&mut self.finishing) {
            if let Finishing::Cut { transfer, sink, .. } = f {
                cut.push((transfer, sink));
            }
        }
        while cut.iter().any(|(_, s)| s.must_wait_for_writer()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        for (transfer, mut sink) in cut {
            if sink.must_wait_for_writer() || sink.settle().is_err() {
                continue;
            }
            if let Some(kept) = sink.into_kept() {
                self.resumable.insert(transfer, kept);
            }
        }
        let mut kept_names = HashMap::new();
        // Downloads from several holders keep their temp file once no
        // piece writer holds it; the metadata says how much of it is in.
        let pieces: Vec<_> = self.piece_files.drain().collect();
        while pieces.iter().any(|(_, p)| Arc::strong_count(&p.live) > 1)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        for (transfer, p) in pieces {
            let name = p.file.name();
            if Arc::strong_count(&p.live) > 1 {
                warn!("{name}: a piece was still being written at exit; not kept");
                continue;
            }
            match p.file.keep_for_resume() {
                Ok(()) => {
                    kept_names.insert(transfer, name);
                }
                Err(e) => warn!("cannot keep {name} to resume a download: {e}"),
            }
        }
        for (transfer, kept) in self.resumable.drain() {
            let name = kept.partial.name();
            match kept.partial.keep_for_resume() {
                Ok(()) => {
                    kept_names.insert(transfer, name);
                }
                Err(e) => warn!("cannot keep {name} to resume a download: {e}"),
            }
        }
        if !kept_names.is_empty() {
            info!(
                "{} download(s) in flight kept to resume at the next start",
                kept_names.len()
            );
        }
        self.temps = kept_names;
    }

    /// At exit: received FILE_DATAs whose writer is still at work (every
    /// byte arrived; only the disk is behind) get until `deadline` ([`EXIT_DRAIN`],
    /// [`SIGNAL_EXIT_DRAIN`] after a signal) to
    /// land, so they are stored and in the saved catalog. Past it they are
    /// dropped (their temp files are removed now or at the next start).
    pub(super) fn drain_finishing(&mut self, deadline: Instant) {
        while !self.finishing.is_empty() {
            self.settle_finished();
            if Instant::now() >= deadline {
                if !self.finishing.is_empty() {
                    warn!(
                        "{} received files still being written at exit; dropped",
                        self.finishing.len()
                    );
                }
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether a connection's role is a download attempt (reading, or still
/// connecting).
fn is_fetch(role: &Role) -> bool {
    match role {
        Role::Fetch(_) => true,
        Role::Connecting(inner) => is_fetch(inner),
        _ => false,
    }
}
