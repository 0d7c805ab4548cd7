//! The catalog: every file we know of, who holds it, and our local copy.
//!
//! Bounded by `MAX_FILES`. Owns no disk: a local copy is just the name the
//! driver stored it under.

use crate::ids::{FileId, PeerId};
use crate::protocol::FileRecord;
use std::collections::{BTreeMap, BTreeSet};

/// Most catalog entries. Past it, files from the network are ignored (our
/// own and downloaded files are always recorded).
pub const MAX_FILES: usize = 20_000;

/// Most holders remembered per file.
pub const MAX_HOLDERS: usize = 256;

/// Our copy of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCopy {
    /// Its name inside the storage folder (sanitised, unique).
    pub name: String,
    /// Whether its bytes verify against the file id.
    pub verified: bool,
}

/// One file.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The file's record as last merged.
    pub record: FileRecord,
    /// Other peers known to hold it.
    pub holders: BTreeSet<PeerId>,
    /// Our copy, if we hold one.
    pub local: Option<LocalCopy>,
}

/// How a menu argument matched file ids.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Exactly one file.
    Found(FileId),
    /// No file id starts with it.
    None,
    /// Several do.
    Ambiguous(usize),
}

/// All known files, keyed by id (sorted, so iteration is deterministic).
#[derive(Debug, Default)]
pub struct Catalog {
    files: BTreeMap<FileId, Entry>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// One entry.
    pub fn get(&self, id: &FileId) -> Option<&Entry> {
        self.files.get(id)
    }

    /// Every entry, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = (&FileId, &Entry)> {
        self.files.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Merges a record from the network held by `holder` (None: the record
    /// came with no holder). A newer numeric timestamp replaces the record;
    /// a string never replaces a number. Returns true if anything changed.
    pub fn merge(&mut self, record: &FileRecord, holder: Option<&PeerId>) -> bool {
        if !self.files.contains_key(&record.file_id) {
            if self.files.len() >= MAX_FILES {
                return false;
            }
            self.files.insert(
                record.file_id.clone(),
                Entry {
                    record: record.clone(),
                    holders: BTreeSet::new(),
                    local: None,
                },
            );
            if let (Some(e), Some(h)) = (self.files.get_mut(&record.file_id), holder) {
                e.holders.insert(h.clone());
            }
            return true;
        }
        let Some(e) = self.files.get_mut(&record.file_id) else {
            return false;
        };
        let mut changed = false;
        if record
            .file_timestamp
            .is_newer_than(&e.record.file_timestamp)
        {
            // The owner never changes: DELETE is honoured only from it, so a
            // record that could re-assign it would let anyone delete anything.
            let owner = e.record.file_owner.clone();
            e.record = record.clone();
            e.record.file_owner = owner;
            changed = true;
        }
        if let Some(h) = holder {
            // Looked up before inserting: the clone is needed only for a
            // new holder, and a refresh (the usual case) allocates nothing.
            if e.holders.len() < MAX_HOLDERS && !e.holders.contains(h) {
                e.holders.insert(h.clone());
                changed = true;
            }
        }
        changed
    }

    /// Makes `holder`'s set of files exactly `held` (a GOSSIP_REPLY lists
    /// everything its sender holds). Entries left with no holder and no
    /// local copy are removed. Returns true if anything changed.
    pub fn set_holdings(&mut self, holder: &PeerId, held: &[FileRecord]) -> bool {
        let mut changed = false;
        // A sorted slice, and the holder looked up first: most entries are
        // not this holder's, so most never compare a 64-character id.
        let mut held_ids: Vec<&FileId> = held.iter().map(|r| &r.file_id).collect();
        held_ids.sort_unstable();
        for (id, e) in self.files.iter_mut() {
            if e.holders.contains(holder) && held_ids.binary_search(&id).is_err() {
                e.holders.remove(holder);
                changed = true;
            }
        }
        for r in held {
            changed |= self.merge(r, Some(holder));
        }
        self.prune();
        changed
    }

    /// Removes `peer` from every file's holders (it was dropped); prunes
    /// entries nobody holds any more.
    pub fn forget_holder(&mut self, peer: &PeerId) -> bool {
        let mut changed = false;
        for e in self.files.values_mut() {
            changed |= e.holders.remove(peer);
        }
        self.prune();
        changed
    }

    /// Keeps only the holders for which `keep` is true; prunes entries
    /// nobody holds any more. Returns true if anything changed.
    pub fn retain_holders(&mut self, mut keep: impl FnMut(&PeerId) -> bool) -> bool {
        let mut changed = false;
        for e in self.files.values_mut() {
            let before = e.holders.len();
            e.holders.retain(|p| keep(p));
            changed |= e.holders.len() != before;
        }
        if changed {
            self.prune();
        }
        changed
    }

    fn prune(&mut self) {
        self.files
            .retain(|_, e| !e.holders.is_empty() || e.local.is_some());
    }

    /// Records that we hold `record` as `local` (download, push, scan).
    pub fn set_local(&mut self, record: FileRecord, local: LocalCopy) {
        let e = self
            .files
            .entry(record.file_id.clone())
            .or_insert_with(|| Entry {
                record: record.clone(),
                holders: BTreeSet::new(),
                local: None,
            });
        e.local = Some(local);
    }

    /// Inserts an entry as loaded from the metadata file, within the same
    /// caps as network input: false (entry dropped) when the catalog is full.
    /// Past [`MAX_HOLDERS`] the extra holders are dropped.
    pub fn insert_entry(&mut self, mut entry: Entry) -> bool {
        if self.files.len() >= MAX_FILES && !self.files.contains_key(&entry.record.file_id) {
            return false;
        }
        if entry.holders.len() > MAX_HOLDERS {
            entry.holders = std::mem::take(&mut entry.holders)
                .into_iter()
                .take(MAX_HOLDERS)
                .collect();
        }
        self.files.insert(entry.record.file_id.clone(), entry);
        true
    }

    /// Forgets our copy of a file (the entry stays while others hold it).
    pub fn clear_local(&mut self, id: &FileId) -> Option<LocalCopy> {
        let local = self.files.get_mut(id)?.local.take();
        self.prune();
        local
    }

    /// Removes a file entirely; returns it.
    pub fn remove(&mut self, id: &FileId) -> Option<Entry> {
        self.files.remove(id)
    }

    /// Resolves a full id or a unique prefix of one.
    pub fn lookup(&self, prefix: &str) -> Lookup {
        let prefix = prefix.trim();
        if prefix.is_empty() {
            return Lookup::None;
        }
        let key = FileId(prefix.to_string());
        if self.files.contains_key(&key) {
            return Lookup::Found(key);
        }
        let matches: Vec<&FileId> = self
            .files
            .range(key..)
            .take_while(|(id, _)| id.0.starts_with(prefix))
            .map(|(id, _)| id)
            .take(100)
            .collect();
        match matches.len() {
            0 => Lookup::None,
            1 => Lookup::Found(matches[0].clone()),
            n => Lookup::Ambiguous(n),
        }
    }

    /// Records of the files we hold (what our GOSSIP_REPLY lists); copies
    /// that don't match their id only when `with_unverified`.
    pub fn local_records(&self, with_unverified: bool) -> Vec<FileRecord> {
        self.files
            .values()
            .filter(|e| {
                e.local
                    .as_ref()
                    .is_some_and(|l| l.verified || with_unverified)
            })
            .map(|e| e.record.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_entries_respect_the_file_and_holder_caps() {
        let mut c = Catalog::default();
        let entry = |i: usize, holders: usize| Entry {
            record: FileRecord {
                file_name: format!("f{i}"),
                file_size: crate::protocol::FileSize::Bytes(1),
                file_id: FileId(format!("{i:064x}")),
                file_owner: PeerId::from("o"),
                file_timestamp: crate::protocol::Timestamp::from_secs(1),
            },
            holders: (0..holders).map(|h| PeerId(format!("p{h}"))).collect(),
            local: None,
        };
        assert!(c.insert_entry(entry(0, MAX_HOLDERS * 4)));
        assert_eq!(
            c.get(&FileId(format!("{:064x}", 0))).unwrap().holders.len(),
            MAX_HOLDERS
        );
        for i in 1..MAX_FILES + 500 {
            c.insert_entry(entry(i, 0));
        }
        assert_eq!(c.len(), MAX_FILES);
        assert!(!c.insert_entry(entry(MAX_FILES + 1000, 0)));
    }
    use crate::protocol::{FileSize, Timestamp};

    fn rec(id: &str, ts: Timestamp) -> FileRecord {
        FileRecord {
            file_name: format!("{id}.txt"),
            file_size: FileSize::Bytes(1),
            file_id: id.into(),
            file_owner: "o".into(),
            file_timestamp: ts,
        }
    }

    #[test]
    fn newer_number_replaces_but_string_never_does() {
        let mut c = Catalog::new();
        c.merge(&rec("a", Timestamp::from_secs(10)), Some(&"p".into()));
        c.merge(&rec("a", Timestamp::Text("Sun Jun 15".into())), None);
        assert_eq!(
            c.get(&"a".into()).unwrap().record.file_timestamp,
            Timestamp::from_secs(10)
        );
        let mut newer = rec("a", Timestamp::from_secs(11));
        newer.file_name = "renamed".into();
        c.merge(&newer, None);
        assert_eq!(c.get(&"a".into()).unwrap().record.file_name, "renamed");
    }

    #[test]
    fn a_newer_record_never_changes_the_owner() {
        let mut c = Catalog::new();
        c.merge(&rec("a", Timestamp::from_secs(10)), Some(&"p".into()));
        let mut forged = rec("a", Timestamp::from_secs(99));
        forged.file_owner = "evil".into();
        c.merge(&forged, Some(&"evil".into()));
        assert_eq!(
            c.get(&"a".into()).unwrap().record.file_owner,
            PeerId::from("o")
        );
    }

    #[test]
    fn dropping_the_only_holder_removes_the_entry_but_not_local_files() {
        let mut c = Catalog::new();
        c.merge(&rec("a", Timestamp::from_secs(1)), Some(&"p".into()));
        c.merge(&rec("b", Timestamp::from_secs(1)), Some(&"p".into()));
        c.set_local(
            rec("b", Timestamp::from_secs(1)),
            LocalCopy {
                name: "b".into(),
                verified: true,
            },
        );
        c.forget_holder(&"p".into());
        assert!(c.get(&"a".into()).is_none());
        assert!(c.get(&"b".into()).unwrap().holders.is_empty());
    }

    #[test]
    fn gossip_reply_replaces_a_holders_set() {
        let mut c = Catalog::new();
        let p = PeerId::from("p");
        c.set_holdings(
            &p,
            &[
                rec("a", Timestamp::from_secs(1)),
                rec("b", Timestamp::from_secs(1)),
            ],
        );
        c.set_holdings(&p, &[rec("b", Timestamp::from_secs(1))]);
        assert!(c.get(&"a".into()).is_none());
        assert!(c.get(&"b".into()).unwrap().holders.contains(&p));
    }

    #[test]
    fn lookup_takes_a_unique_prefix() {
        let mut c = Catalog::new();
        for id in ["abc1", "abd2", "xyz"] {
            c.merge(&rec(id, Timestamp::from_secs(1)), Some(&"p".into()));
        }
        assert_eq!(c.lookup("x"), Lookup::Found("xyz".into()));
        assert_eq!(c.lookup("ab"), Lookup::Ambiguous(2));
        assert_eq!(c.lookup("abc"), Lookup::Found("abc1".into()));
        assert_eq!(c.lookup("q"), Lookup::None);
        assert_eq!(c.lookup(""), Lookup::None);
    }
}
