//! The menu commands that change state (`get`, `push`, `delete`) and the
//! lookup of a file by id prefix they share. Downloads themselves are
//! `fetching`'s.

use super::catalog::Lookup;
use super::downloads::Dest;
use super::{Command, Effect, Peer, Time};
use crate::ids::{FileId, PeerAddr};
use crate::protocol::Message;
use log::info;

impl Peer {
    /// A menu command.
    pub fn on_command(&mut self, now: Time, cmd: Command) {
        match cmd {
            Command::Get { file, dest, force } => {
                self.cmd_get(now, &file, dest.map(|path| Dest { path, force }))
            }
            Command::Push { path } => self.effects.push(Effect::Import { path }),
            Command::Delete { file } => self.cmd_delete(now, &file),
        }
    }

    pub(super) fn resolve(&mut self, verb: &str, prefix: &str) -> Option<FileId> {
        match self.catalog.lookup(prefix) {
            Lookup::Found(id) => Some(id),
            Lookup::None => {
                self.print(format!(
                    "{verb}: no known file has an id starting with {prefix:?} (see `list`)"
                ));
                None
            }
            Lookup::Ambiguous(n) => {
                self.print(format!(
                    "{verb}: {prefix:?} matches {n} files; type more of the id"
                ));
                None
            }
        }
    }

    pub(super) fn cmd_delete(&mut self, now: Time, prefix: &str) {
        let Some(id) = self.resolve("delete", prefix) else {
            return;
        };
        let Some(entry) = self.catalog.get(&id) else {
            return;
        };
        if entry.record.file_owner != *self.me() {
            let line = format!(
                "delete: {} is owned by {}; only its owner can delete it",
                entry.record.file_name, entry.record.file_owner
            );
            self.print(line);
            return;
        }
        let Some(entry) = self.catalog.remove(&id) else {
            return;
        };
        if let Some(local) = entry.local {
            self.effects.push(Effect::RemoveLocal { name: local.name });
        }
        // A download of it (a copy of ours we lost, say) would bring the
        // file back: it ends here, and its bytes go.
        if let Some(d) = self
            .downloads
            .by_file(&id)
            .and_then(|t| self.downloads.remove(t))
        {
            let line = format!("stopped fetching {}: you deleted it", d.record.file_name);
            self.finish(now, d, super::fetching::DownloadEnd::Failed(line));
        }
        let msg = Message::Delete {
            from: self.cfg.peer_id.clone(),
            file_id: id.clone(),
        };
        let peers: Vec<PeerAddr> = self
            .members
            .all()
            .into_iter()
            .map(|(_, p)| p.addr.clone())
            .collect();
        let n = peers.len();
        self.send_to_all(peers, &msg);
        self.effects.push(Effect::Persist);
        info!("file {} ({id}) deleted", entry.record.file_name);
        self.event(
            now,
            super::view::EventKind::Deleted,
            format!("deleted our file {} ({id})", entry.record.file_name),
        );
        self.print(format!(
            "delete: deleted {}; told {n} peers",
            entry.record.file_name
        ));
    }
}
