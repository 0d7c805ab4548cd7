//! Download planning: which source to try next, what failed and why, and
//! who is waiting for the result.
//!
//! Sans-IO: a download asks the driver to fetch from one source at a time
//! (an attempt number guards against stale results), and moves on when told
//! the attempt failed.

use crate::core::time::Time;
use crate::ids::{FileId, PeerId, TransferId};
use crate::protocol::decoder::DataField;
use crate::protocol::{FileRecord, Message, ParseError, Timestamp};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

/// Most downloads running at once; more are queued.
pub const MAX_ACTIVE_DOWNLOADS: usize = 8;

/// Auto-fetch runs at most this many downloads at a time.
pub const AUTO_FETCH_PARALLEL: usize = 2;

/// Where the menu's `get` copies a file once it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    /// The path the user typed.
    pub path: PathBuf,
    /// The user said `--force`: an existing regular file may be replaced.
    pub force: bool,
}

/// Who asked for a download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The menu's `get`, with an optional destination to copy to.
    Menu(Option<Dest>),
    /// Start-up auto-fetch.
    Auto,
}

/// One download.
#[derive(Debug)]
pub struct Download {
    /// Its id.
    pub id: TransferId,
    /// The file.
    pub record: FileRecord,
    /// Sources not tried yet, best first.
    pub remaining: VecDeque<PeerId>,
    /// The source being tried, its attempt number and when it started.
    pub current: Option<(PeerId, u64, Time)>,
    /// Each failed source and why.
    pub failures: Vec<(PeerId, String)>,
    /// Who is waiting.
    pub origins: Vec<Origin>,
    /// Bytes received from the current source.
    pub bytes_done: u64,
    /// Whether the driver holds a complete copy that failed verification.
    pub unverified_fallback: Option<PeerId>,
    /// Whether it is waiting for a free slot.
    pub queued: bool,
}

impl Download {
    /// Whether this download was started by auto-fetch only.
    pub fn is_auto(&self) -> bool {
        self.origins.iter().all(|o| *o == Origin::Auto)
    }

    /// One line listing every failed source and why.
    pub fn failure_summary(&self) -> String {
        if self.failures.is_empty() {
            return "no reachable source".into();
        }
        self.failures
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Judges a complete reply to GET_FILE against the file we asked for.
/// `Ok` gives the length of the data and the reply's own timestamp (the id
/// is verified under the catalog's timestamp and this one); `Err` is why
/// this source failed, as shown to the user. The bytes themselves are the
/// driver's: it hashes them on the way in.
pub fn judge_reply(
    requested: &FileRecord,
    reply: Result<Message, ParseError>,
    data: DataField,
) -> Result<(u64, Option<Timestamp>), String> {
    let header = match reply {
        Ok(Message::FileData(h)) => h,
        Ok(other) => return Err(format!("replied {} instead of FILE_DATA", other.kind())),
        Err(e) => return Err(format!("malformed reply: {e}")),
    };
    let Some(id) = header.file_id.as_ref() else {
        return Err("does not have the file (not-found reply)".into());
    };
    if !id.0.eq_ignore_ascii_case(&requested.file_id.0) {
        return Err(format!("sent a different file ({id})"));
    }
    match data {
        DataField::Bytes { len } => Ok((len, header.file_timestamp)),
        DataField::Null | DataField::Absent => Err("reply has no data".into()),
    }
}

/// Every download in flight, keyed by id.
#[derive(Debug, Default)]
pub struct Downloads {
    active: BTreeMap<TransferId, Download>,
    next_id: u64,
    next_attempt: u64,
}

impl Downloads {
    /// No downloads.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh transfer id.
    pub fn next_id(&mut self) -> TransferId {
        self.next_id += 1;
        TransferId(self.next_id)
    }

    /// A fresh attempt number (never reused, so stale results are ignored).
    pub fn next_attempt(&mut self) -> u64 {
        self.next_attempt += 1;
        self.next_attempt
    }

    /// The download of `file`, if any.
    pub fn by_file(&self, file: &FileId) -> Option<TransferId> {
        self.active
            .values()
            .find(|d| &d.record.file_id == file)
            .map(|d| d.id)
    }

    /// Adds a download.
    pub fn insert(&mut self, d: Download) {
        self.active.insert(d.id, d);
    }

    /// One download.
    pub fn get(&self, id: TransferId) -> Option<&Download> {
        self.active.get(&id)
    }

    /// One download, mutable.
    pub fn get_mut(&mut self, id: TransferId) -> Option<&mut Download> {
        self.active.get_mut(&id)
    }

    /// Ends a download.
    pub fn remove(&mut self, id: TransferId) -> Option<Download> {
        self.active.remove(&id)
    }

    /// Every download, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Download> {
        self.active.values()
    }

    /// Downloads currently fetching (not queued).
    pub fn running(&self) -> usize {
        self.active.values().filter(|d| !d.queued).count()
    }

    /// Auto-fetch downloads currently fetching.
    pub fn running_auto(&self) -> usize {
        self.active
            .values()
            .filter(|d| !d.queued && d.is_auto())
            .count()
    }

    /// The oldest queued download that may start now, given the caps.
    pub fn next_queued(&self) -> Option<TransferId> {
        if self.running() >= MAX_ACTIVE_DOWNLOADS {
            return None;
        }
        let auto_room = self.running_auto() < AUTO_FETCH_PARALLEL;
        self.active
            .values()
            .find(|d| d.queued && (auto_room || !d.is_auto()))
            .map(|d| d.id)
    }

    /// Number of downloads, running or queued.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FileDataHeader, FileSize};

    fn wanted() -> FileRecord {
        FileRecord {
            file_name: "x".into(),
            file_size: FileSize::Bytes(3),
            file_id: "abc".into(),
            file_owner: "o".into(),
            file_timestamp: Timestamp::from_secs(1),
        }
    }

    fn reply(id: Option<&str>) -> Result<Message, ParseError> {
        Ok(Message::FileData(FileDataHeader {
            file_id: id.map(Into::into),
            file_timestamp: Some(Timestamp::from_secs(2)),
            ..FileDataHeader::default()
        }))
    }

    #[test]
    fn replies_are_judged_against_the_file_asked_for() {
        let bytes = DataField::Bytes { len: 3 };
        assert_eq!(
            judge_reply(&wanted(), reply(Some("ABC")), bytes),
            Ok((3, Some(Timestamp::from_secs(2))))
        );
        assert!(judge_reply(&wanted(), reply(None), bytes)
            .unwrap_err()
            .contains("not-found"));
        assert!(judge_reply(&wanted(), reply(Some("zzz")), bytes)
            .unwrap_err()
            .contains("different file"));
        assert!(judge_reply(&wanted(), reply(Some("abc")), DataField::Null)
            .unwrap_err()
            .contains("no data"));
        let other = Ok(Message::GetFile {
            file_id: "abc".into(),
        });
        assert!(judge_reply(&wanted(), other, bytes)
            .unwrap_err()
            .contains("instead of FILE_DATA"));
    }
}
