//! Start-up reconciliation of the catalog with the folder: the metadata
//! file read within the catalog's budget, held copies checked against the
//! folder (missing, changed since verified), and files found in the folder
//! either claimed by an entry (committed just before a crash) or adopted as
//! new files of ours. Blocking; run before the loop starts. The caller logs
//! the typed [`Note`]s and hands the entries to the core.

use crate::core::catalog::{
    holder_cost, record_cost, Entry, LocalCopy, ENTRY_OVERHEAD, MAX_CATALOG_BYTES, MAX_FILES,
};
use crate::ids::{FileId, PeerId};
use crate::protocol::FileRecord;
use crate::storage::metadata::StoredResume;
use crate::storage::serving::FileStamp;
use crate::storage::{
    hash_file, metadata, remove_partials_except, sanitize_file_name, scan_folder, Stamps,
    StoredEntry,
};
use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What [`reconcile`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The catalog's entries: those of the metadata, then the files found.
    pub entries: Vec<Entry>,
    /// Metadata entries not read (past the catalog's caps).
    pub not_read: usize,
    /// Stamps of the held files, by local name.
    pub stamps: Stamps,
    /// Held files that changed since they were last verified.
    pub changed: Vec<FileId>,
    /// Downloads in flight at the last exit whose temp file is still
    /// there: kept (every other temp file is removed), to resume.
    pub resumes: Vec<(FileRecord, StoredResume)>,
    /// What happened, in order, for the log.
    pub notes: Vec<Note>,
}

/// One thing worth a log line while reconciling.
#[derive(Debug)]
pub enum Note {
    /// Temp files of an earlier run removed.
    PartialsRemoved(usize),
    /// The folder's temp files could not be listed or removed.
    PartialsNotCleaned(PathBuf, io::Error),
    /// A problem in the metadata file (already worded by its loader).
    Metadata(String),
    /// An entry recorded as held whose file is gone: no longer held.
    Missing {
        /// The file's network name.
        file_name: String,
        /// Its id.
        file_id: FileId,
        /// The name it had in the folder.
        local_name: String,
    },
    /// A file found in the folder is an entry's copy, committed just
    /// before the last exit: that entry is held.
    Claimed {
        /// Its name in the folder.
        local_name: String,
        /// The entry's network name.
        file_name: String,
        /// The entry's id.
        file_id: FileId,
    },
    /// Files found in the folder adopted as new files of ours.
    Added(PathBuf, usize),
    /// The folder could not be scanned.
    ScanFailed(PathBuf, io::Error),
}

impl Note {
    /// Whether the note reports a problem (a warn line) rather than news.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Note::PartialsNotCleaned(..)
                | Note::Metadata(_)
                | Note::Missing { .. }
                | Note::ScanFailed(..)
        )
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::PartialsRemoved(n) => write!(f, "removed {n} partial files left by an earlier run"),
            Note::PartialsNotCleaned(dir, e) => {
                write!(f, "cannot clean partial files in {}: {e}", dir.display())
            }
            Note::Metadata(w) => f.write_str(w),
            Note::Missing {
                file_name,
                file_id,
                local_name,
            } => write!(
                f,
                "{file_name} ({file_id}) is recorded as held but {local_name} is missing from the folder"
            ),
            Note::Claimed {
                local_name,
                file_name,
                file_id,
            } => write!(
                f,
                "{local_name} is {file_name} ({file_id}), committed just before the last exit"
            ),
            Note::Added(dir, n) => write!(f, "added {n} files found in {}", dir.display()),
            Note::ScanFailed(dir, e) => write!(f, "cannot scan {}: {e}", dir.display()),
        }
    }
}

/// What a stored entry costs the catalog (its byte budget's unit).
fn entry_cost(e: &StoredEntry) -> usize {
    ENTRY_OVERHEAD
        + record_cost(&e.record)
        + e.peers_with_file.iter().map(holder_cost).sum::<usize>()
}

/// Reads no more than the catalog could take: entries we don't hold past
/// its byte budget are skipped while reading (the catalog applies the
/// exact caps when they are inserted).
fn load_budget() -> metadata::Keep<'static> {
    metadata::Keep {
        held: MAX_FILES,
        others: MAX_FILES,
        bytes: MAX_CATALOG_BYTES,
        cost: &entry_cost,
    }
}

/// Reconciles the folder `dir` of peer `me` with its metadata at
/// `now_unix`: reads the metadata, removes temp files of an earlier run
/// (but those of downloads to resume), and adds the files found in the
/// folder.
pub fn reconcile(dir: &Path, me: &PeerId, now_unix: u64) -> Loaded {
    let mut r = Loaded {
        entries: Vec::new(),
        not_read: 0,
        stamps: Stamps::new(),
        changed: Vec::new(),
        resumes: Vec::new(),
        notes: Vec::new(),
    };
    let loaded = metadata::load(dir, now_unix, &load_budget());
    r.notes
        .extend(loaded.warnings.into_iter().map(Note::Metadata));
    r.not_read = loaded.dropped;
    let mut known = HashSet::new();
    for mut s in loaded.entries {
        if let Some(resume) = s.resume.take().filter(|_| !s.has_copy) {
            r.resumes.push((s.record.clone(), resume));
        }
        r.take_stored(dir, me, s, &mut known);
    }
    // Only regular files with one name are resumed (never through a
    // symlink or a hard link); a temp file two entries claim is neither's.
    let mut claims: std::collections::HashMap<String, usize> = Default::default();
    for (_, res) in &r.resumes {
        *claims.entry(res.partial.clone()).or_default() += 1;
    }
    r.resumes.retain(|(_, res)| {
        use std::os::unix::fs::MetadataExt;
        let regular = std::fs::symlink_metadata(dir.join(&res.partial))
            .is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1 && m.len() > 0);
        regular && claims.get(&res.partial) == Some(&1)
    });
    let keep: Vec<&str> = r
        .resumes
        .iter()
        .map(|(_, res)| res.partial.as_str())
        .collect();
    match remove_partials_except(dir, &keep) {
        Ok(0) => {}
        Ok(n) => r.notes.push(Note::PartialsRemoved(n)),
        Err(e) => r.notes.push(Note::PartialsNotCleaned(dir.to_path_buf(), e)),
    }
    match scan_folder(dir, &known, me) {
        Ok(found) => r.take_found(dir, found),
        Err(e) => r.notes.push(Note::ScanFailed(dir.to_path_buf(), e)),
    }
    r
}

impl Loaded {
    /// A metadata entry: held only if its copy is still in the folder;
    /// a copy that changed since it was verified is listed in `changed`.
    fn take_stored(
        &mut self,
        dir: &Path,
        me: &PeerId,
        s: StoredEntry,
        known: &mut HashSet<String>,
    ) {
        let local = match (&s.local_name, s.has_copy) {
            (Some(name), true) if dir.join(name).is_file() => {
                known.insert(name.clone());
                // Unknown (older metadata): none kept, so the first serve
                // has its bytes hashed once instead of trusting them.
                if let (Ok(now), Some(was)) = (FileStamp::read(&dir.join(name)), s.local_stamp) {
                    if was != now {
                        self.changed.push(s.record.file_id.clone());
                    }
                    self.stamps.record(name.clone(), was);
                }
                Some(LocalCopy {
                    name: name.clone(),
                    verified: s.verified,
                })
            }
            (Some(name), true) => {
                self.notes.push(Note::Missing {
                    file_name: s.record.file_name.clone(),
                    file_id: s.record.file_id.clone(),
                    local_name: name.clone(),
                });
                None
            }
            _ => None,
        };
        let holders = s.peers_with_file.into_iter().filter(|p| p != me).collect();
        self.entries.push(Entry {
            record: s.record,
            holders,
            local,
        });
    }

    /// Files in the folder that no held entry names: claimed by an entry
    /// they verify against, or adopted as new verified files of ours.
    fn take_found(&mut self, dir: &Path, found: Vec<StoredEntry>) {
        let mut added = 0;
        for s in found {
            let Some(name) = s.local_name.clone() else {
                continue;
            };
            if let Some((e, stamp)) = claimed_by_catalog(dir, &name, &mut self.entries) {
                self.notes.push(Note::Claimed {
                    local_name: name.clone(),
                    file_name: e.record.file_name.clone(),
                    file_id: e.record.file_id.clone(),
                });
                if let Some(stamp) = stamp {
                    self.stamps.record(name, stamp);
                }
                continue;
            }
            added += 1;
            if let Some(stamp) = s.local_stamp {
                self.stamps.record(name.clone(), stamp);
            }
            self.entries.push(Entry {
                record: s.record,
                holders: Default::default(),
                local: Some(LocalCopy {
                    name,
                    verified: true,
                }),
            });
        }
        if added > 0 {
            self.notes.push(Note::Added(dir.to_path_buf(), added));
        }
    }
}

/// A file found in the folder that the catalog doesn't list as held may be
/// a download or push committed just before a crash, before the metadata
/// caught up. If an entry we don't hold has that name (or its `x (2).txt`
/// form) and the bytes verify against its id, it is that file: mark it held
/// instead of adopting it as a new file of ours. Returns it with the stamp
/// taken before hashing (so a change during the hash shows at the first
/// serve); without one, the first serve hashes it again.
fn claimed_by_catalog<'a>(
    dir: &Path,
    name: &str,
    entries: &'a mut [Entry],
) -> Option<(&'a Entry, Option<FileStamp>)> {
    let path = dir.join(name);
    let stamp = FileStamp::read(&path).ok();
    let pos = entries.iter().position(|e| {
        e.local.is_none()
            && same_or_suffixed(name, &sanitize_file_name(&e.record.file_name))
            && e.record.file_timestamp.hash_forms().iter().any(|ts| {
                hash_file(&path, ts)
                    .is_ok_and(|(id, _)| id.0.eq_ignore_ascii_case(&e.record.file_id.0))
            })
    })?;
    let e = &mut entries[pos];
    e.local = Some(LocalCopy {
        name: name.to_string(),
        verified: true,
    });
    Some((e, stamp))
}

/// `found` is `wanted`, or the `stem (N).ext` name `unique_name` gives it.
fn same_or_suffixed(found: &str, wanted: &str) -> bool {
    if found == wanted {
        return true;
    }
    let (stem, ext) = match wanted.rfind('.') {
        Some(i) if i > 0 => (&wanted[..i], &wanted[i..]),
        _ => (wanted, ""),
    };
    found
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix(" ("))
        .and_then(|r| r.strip_suffix(ext))
        .and_then(|r| r.strip_suffix(')'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{FileRecord, FileSize, Timestamp};
    use crate::storage::{file_id_for, METADATA_FILE, PARTIAL_PREFIX};

    const NOW: u64 = 1_800_000_000;

    fn me() -> PeerId {
        PeerId("me".into())
    }

    fn record(name: &str, bytes: &[u8]) -> FileRecord {
        let ts = Timestamp::from_secs(1_700_000_000);
        FileRecord {
            file_name: name.into(),
            file_size: FileSize::Bytes(bytes.len() as u64),
            file_id: file_id_for(bytes, &ts.hash_forms()[0]),
            file_owner: "other".into(),
            file_timestamp: ts,
        }
    }

    fn stored(record: FileRecord, local_name: Option<&str>) -> StoredEntry {
        StoredEntry {
            record,
            peers_with_file: vec![PeerId("other".into()), me()],
            has_copy: local_name.is_some(),
            local_name: local_name.map(String::from),
            verified: true,
            resume: None,
            local_stamp: None,
        }
    }

    fn write_metadata(dir: &Path, entries: &[StoredEntry]) {
        std::fs::write(dir.join(METADATA_FILE), metadata::to_json(entries)).unwrap();
    }

    #[test]
    fn a_suffixed_name_is_recognised_as_the_same_file() {
        assert!(same_or_suffixed("a.txt", "a.txt"));
        assert!(same_or_suffixed("a (2).txt", "a.txt"));
        assert!(same_or_suffixed("noext (13)", "noext"));
        assert!(!same_or_suffixed("a (x).txt", "a.txt"));
        assert!(!same_or_suffixed("ab.txt", "a.txt"));
        assert!(!same_or_suffixed("a ().txt", "a.txt"));
    }

    #[test]
    fn a_file_committed_just_before_a_crash_is_claimed_by_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let r = record("a.txt", b"hello");
        write_metadata(dir.path(), &[stored(r.clone(), None)]);
        std::fs::write(dir.path().join("a (2).txt"), b"hello").unwrap();
        let loaded = reconcile(dir.path(), &me(), NOW);
        assert_eq!(loaded.entries.len(), 1);
        let e = &loaded.entries[0];
        assert_eq!(e.record.file_id, r.file_id);
        assert_eq!(e.local.as_ref().map(|l| l.name.as_str()), Some("a (2).txt"));
        assert!(!e.holders.contains(&me()), "we are never our own holder");
        assert!(loaded.stamps.get("a (2).txt").is_some());
        assert!(matches!(
            loaded.notes.as_slice(),
            [Note::Claimed { local_name, .. }] if local_name == "a (2).txt"
        ));
    }

    #[test]
    fn a_file_with_other_bytes_is_adopted_as_a_new_file_not_claimed() {
        let dir = tempfile::tempdir().unwrap();
        write_metadata(dir.path(), &[stored(record("a.txt", b"hello"), None)]);
        std::fs::write(dir.path().join("a.txt"), b"other bytes").unwrap();
        let loaded = reconcile(dir.path(), &me(), NOW);
        assert_eq!(loaded.entries.len(), 2);
        assert!(loaded.entries[0].local.is_none());
        let adopted = &loaded.entries[1];
        assert_eq!(adopted.record.file_owner, me());
        assert_eq!(adopted.local.as_ref().map(|l| l.verified), Some(true));
        assert!(matches!(loaded.notes.as_slice(), [Note::Added(_, 1)]));
        assert!(!loaded.notes[0].is_warning());
    }

    #[test]
    fn a_held_file_missing_from_the_folder_is_no_longer_held() {
        let dir = tempfile::tempdir().unwrap();
        write_metadata(dir.path(), &[stored(record("a.txt", b"x"), Some("a.txt"))]);
        let loaded = reconcile(dir.path(), &me(), NOW);
        assert!(loaded.entries[0].local.is_none());
        assert!(loaded.stamps.is_empty());
        match loaded.notes.as_slice() {
            [n @ Note::Missing { local_name, .. }] => {
                assert_eq!(local_name, "a.txt");
                assert!(n.is_warning());
                assert!(n.to_string().contains("missing from the folder"));
            }
            other => panic!("unexpected notes {other:?}"),
        }
    }

    #[test]
    fn a_held_file_changed_since_it_was_verified_is_listed_as_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, b"x").unwrap();
        let r = record("a.txt", b"x");
        let mut s = stored(r.clone(), Some("a.txt"));
        let was = FileStamp::read(&path).unwrap();
        s.local_stamp = Some(FileStamp { len: 99, ..was });
        let mut same = stored(record("b.txt", b"y"), Some("b.txt"));
        std::fs::write(dir.path().join("b.txt"), b"y").unwrap();
        same.local_stamp = FileStamp::read(&dir.path().join("b.txt")).ok();
        write_metadata(dir.path(), &[s, same]);
        let loaded = reconcile(dir.path(), &me(), NOW);
        assert_eq!(loaded.changed, vec![r.file_id]);
        // The stamp kept is the one verified, so the first serve refuses.
        assert_eq!(loaded.stamps.get("a.txt").map(|s| s.len), Some(99));
        assert_eq!(
            loaded.entries.iter().filter(|e| e.local.is_some()).count(),
            2
        );
    }

    #[test]
    fn temp_files_of_an_earlier_run_are_removed_and_said() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join(format!("{PARTIAL_PREFIX}x"));
        std::fs::write(&partial, b"half").unwrap();
        let loaded = reconcile(dir.path(), &me(), NOW);
        assert!(!partial.exists());
        assert!(loaded.entries.is_empty());
        assert!(matches!(
            loaded.notes.as_slice(),
            [Note::PartialsRemoved(1)]
        ));
        assert_eq!(
            loaded.notes[0].to_string(),
            "removed 1 partial files left by an earlier run"
        );
    }
}
