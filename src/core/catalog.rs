//! The catalog: every file we know of, who holds it, and our local copy.
//!
//! Bounded by `MAX_FILES`, `MAX_HOLDERS` each, and in bytes by
//! [`MAX_CATALOG_BYTES`]: every entry's strings (name, id, owner, timestamp,
//! local name) and its holders' peerIds are counted with a fixed overhead
//! each, and the running total is kept as entries change. Past the budget,
//! files and holders from the network (GOSSIP_REPLY, ANNOUNCE) and from the
//! metadata file are refused; nothing is evicted, and files we hold are
//! always recorded (they are bounded by the folder, not by the network).
//! Owns no disk: a local copy is just the name the driver stored it under.

use crate::ids::{FileId, PeerId};
use crate::protocol::{FileRecord, FileSize, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// Most catalog entries. Past it, files from the network are ignored (our
/// own and downloaded files are always recorded).
pub const MAX_FILES: usize = 20_000;

/// Most holders remembered per file.
pub const MAX_HOLDERS: usize = 256;

/// Most bytes the catalog may cost (see [`entry_cost`]). The process must
/// stay under 64 MiB of anonymous memory under any flood: an idle peer
/// takes ~1.5 MiB, inbound messages being read up to 32 MiB together
/// (`INBOUND_BUFFER_BUDGET`), and writing the metadata briefly needs about
/// as much again as the catalog (its JSON), leaving about 16 MiB for the
/// catalog itself. 16 MiB is ~20 000 files with 64-character ids, short
/// names and a few holders each, or ~800 files with every field as long
/// as the protocol allows.
pub const MAX_CATALOG_BYTES: usize = 16 * 1024 * 1024;

/// What one entry costs beyond its strings: its share of a map node, the
/// `Entry` itself and the allocator's headers of its five strings.
pub const ENTRY_OVERHEAD: usize = 384;

/// What one holder costs beyond its peerId: its share of a set node and
/// the string's header.
pub const HOLDER_OVERHEAD: usize = 64;

/// Bytes a record's strings take (the id twice: it is also the map key).
pub fn record_cost(r: &FileRecord) -> usize {
    let ts = match &r.file_timestamp {
        Timestamp::Number(n) => n.as_str().len(),
        Timestamp::Text(t) => t.len(),
    };
    let size = match &r.file_size {
        FileSize::Reported(n) => n.as_str().len(),
        _ => 0,
    };
    r.file_name.len() + 2 * r.file_id.0.len() + r.file_owner.0.len() + ts + size
}

/// Bytes one holder costs.
pub fn holder_cost(p: &PeerId) -> usize {
    HOLDER_OVERHEAD + p.0.len()
}

/// Bytes one entry costs without its holders.
fn bare_cost(record: &FileRecord, local: Option<&LocalCopy>) -> usize {
    ENTRY_OVERHEAD + record_cost(record) + local.map_or(0, |l| l.name.len())
}

/// Bytes one entry costs, holders included (what the budget counts).
pub fn entry_cost(e: &Entry) -> usize {
    bare_cost(&e.record, e.local.as_ref()) + e.holders.iter().map(holder_cost).sum::<usize>()
}

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
#[derive(Debug)]
pub struct Catalog {
    files: BTreeMap<FileId, Entry>,
    /// What every entry costs together ([`entry_cost`]), kept as they change.
    bytes: usize,
    /// The byte budget ([`MAX_CATALOG_BYTES`]; smaller in tests).
    budget: usize,
    /// Whether the "catalog full" line was written since it last had room.
    full_logged: bool,
    /// Bumped by every change to an entry, its holders or our copy, so a
    /// view rendered before can tell it is out of date.
    changes: u64,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::with_budget(MAX_CATALOG_BYTES)
    }
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty catalog with another byte budget (tests, the simulator).
    pub fn with_budget(budget: usize) -> Self {
        Self {
            files: BTreeMap::new(),
            bytes: 0,
            budget,
            full_logged: false,
            changes: 0,
        }
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

    /// What the entries cost together, in bytes ([`entry_cost`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many times the entries changed (never goes back).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Whether `more` bytes from the network fit in the budget. The first
    /// refusal since the catalog last had room writes one line.
    fn fits(&mut self, more: usize) -> bool {
        if self.bytes.saturating_add(more) <= self.budget {
            return true;
        }
        if !self.full_logged {
            self.full_logged = true;
            log::warn!(
                "catalog full ({} files, {} KiB of names, ids, owners and holders): \
                 files and holders from the network are not recorded until some are forgotten",
                self.files.len(),
                self.bytes / 1024
            );
        }
        false
    }

    /// Whether a new entry from the network is refused by the count cap
    /// (logged like the byte budget).
    fn count_full(&mut self) -> bool {
        if self.files.len() < MAX_FILES {
            return false;
        }
        !self.fits(usize::MAX)
    }

    /// Forgets the "full" line once a quarter of the budget is free again,
    /// so the next time it fills is reported too.
    fn released(&mut self) {
        if self.bytes <= self.budget / 4 * 3 && self.files.len() < MAX_FILES {
            self.full_logged = false;
        }
    }

    /// Merges a record from the network held by `holder` (None: the record
    /// came with no holder). A newer numeric timestamp replaces the record;
    /// a string never replaces a number. Within the count and byte caps: a
    /// new file, a new holder or a longer record that doesn't fit is not
    /// recorded. Returns true if anything changed.
    pub fn merge(&mut self, record: &FileRecord, holder: Option<&PeerId>) -> bool {
        if !self.files.contains_key(&record.file_id) {
            let cost = bare_cost(record, None) + holder.map_or(0, holder_cost);
            if self.count_full() || !self.fits(cost) {
                return false;
            }
            let mut holders = BTreeSet::new();
            if let Some(h) = holder {
                holders.insert(h.clone());
            }
            self.files.insert(
                record.file_id.clone(),
                Entry {
                    record: record.clone(),
                    holders,
                    local: None,
                },
            );
            self.bytes += cost;
            self.changes += 1;
            return true;
        }
        let mut changed = false;
        let newer = self.files.get(&record.file_id).and_then(|e| {
            let newer = record
                .file_timestamp
                .is_newer_than(&e.record.file_timestamp);
            newer.then(|| (record_cost(&e.record), e.record.file_owner.clone()))
        });
        if let Some((old_cost, owner)) = newer {
            // The owner never changes: DELETE is honoured only from it, so a
            // record that could re-assign it would let anyone delete anything.
            let mut replaced = record.clone();
            replaced.file_owner = owner;
            let new_cost = record_cost(&replaced);
            if new_cost <= old_cost || self.fits(new_cost - old_cost) {
                if let Some(e) = self.files.get_mut(&record.file_id) {
                    e.record = replaced;
                    self.bytes = self.bytes + new_cost - old_cost;
                    changed = true;
                }
            }
        }
        if let Some(h) = holder {
            // Looked up before inserting: the clone is needed only for a
            // new holder, and a refresh (the usual case) allocates nothing.
            let wanted = self
                .files
                .get(&record.file_id)
                .is_some_and(|e| e.holders.len() < MAX_HOLDERS && !e.holders.contains(h));
            if wanted && self.fits(holder_cost(h)) {
                if let Some(e) = self.files.get_mut(&record.file_id) {
                    e.holders.insert(h.clone());
                    self.bytes += holder_cost(h);
                    changed = true;
                }
            }
        }
        self.changes += u64::from(changed);
        changed
    }

    /// Makes `holder`'s set of files exactly `held` (a GOSSIP_REPLY lists
    /// everything its sender holds), within the caps of [`Catalog::merge`].
    /// Entries left with no holder and no local copy are removed. Returns
    /// true if anything changed.
    pub fn set_holdings(&mut self, holder: &PeerId, held: &[FileRecord]) -> bool {
        let mut changed = false;
        // A sorted slice, and the holder looked up first: most entries are
        // not this holder's, so most never compare a 64-character id.
        let mut held_ids: Vec<&FileId> = held.iter().map(|r| &r.file_id).collect();
        held_ids.sort_unstable();
        let mut freed = 0;
        for (id, e) in self.files.iter_mut() {
            if e.holders.contains(holder) && held_ids.binary_search(&id).is_err() {
                e.holders.remove(holder);
                freed += holder_cost(holder);
                changed = true;
            }
        }
        self.bytes -= freed;
        self.changes += u64::from(changed);
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
        let mut freed = 0;
        for e in self.files.values_mut() {
            if e.holders.remove(peer) {
                freed += holder_cost(peer);
                changed = true;
            }
        }
        self.bytes -= freed;
        self.changes += u64::from(changed);
        self.prune();
        changed
    }

    /// Keeps only the holders for which `keep` is true; prunes entries
    /// nobody holds any more. Returns true if anything changed.
    pub fn retain_holders(&mut self, mut keep: impl FnMut(&PeerId) -> bool) -> bool {
        let mut changed = false;
        let mut freed = 0;
        for e in self.files.values_mut() {
            e.holders.retain(|p| {
                let kept = keep(p);
                if !kept {
                    freed += holder_cost(p);
                    changed = true;
                }
                kept
            });
        }
        self.bytes -= freed;
        if changed {
            self.changes += 1;
            self.prune();
        }
        changed
    }

    fn prune(&mut self) {
        let mut freed = 0;
        let before = self.files.len();
        self.files.retain(|_, e| {
            let keep = !e.holders.is_empty() || e.local.is_some();
            if !keep {
                freed += entry_cost(e);
            }
            keep
        });
        self.bytes -= freed;
        self.changes += u64::from(self.files.len() != before);
        self.released();
    }

    /// Records that we hold `record` as `local` (download, push, scan):
    /// always, past the caps too (our own files are bounded by the folder).
    pub fn set_local(&mut self, record: FileRecord, local: LocalCopy) {
        let added = local.name.len();
        self.changes += 1;
        match self.files.get_mut(&record.file_id) {
            Some(e) => {
                let old = e.local.as_ref().map_or(0, |l| l.name.len());
                e.local = Some(local);
                self.bytes = self.bytes + added - old;
            }
            None => {
                self.bytes += bare_cost(&record, Some(&local));
                self.files.insert(
                    record.file_id.clone(),
                    Entry {
                        record,
                        holders: BTreeSet::new(),
                        local: Some(local),
                    },
                );
            }
        }
    }

    /// Our verified copy of `id` has `len` bytes: a size in bytes claimed
    /// otherwise is corrected (the id is the authority; a byte count costs
    /// nothing in the byte budget either way).
    pub fn correct_size(&mut self, id: &FileId, len: u64) {
        if let Some(e) = self.files.get_mut(id) {
            if matches!(e.record.file_size, FileSize::Bytes(n) if n != len) {
                e.record.file_size = FileSize::Bytes(len);
                self.changes += 1;
            }
        }
    }

    /// Inserts an entry as loaded from the metadata file, within the same
    /// caps as network input: false (entry dropped) when the catalog is
    /// full in count, or, for a file we don't hold, in bytes. Holders past
    /// [`MAX_HOLDERS`] or past the byte budget are dropped. A file we hold
    /// is always kept (the driver loads those first).
    pub fn insert_entry(&mut self, entry: Entry) -> bool {
        let Entry {
            record,
            holders,
            local,
        } = entry;
        if self.files.len() >= MAX_FILES && !self.files.contains_key(&record.file_id) {
            return false;
        }
        let bare = bare_cost(&record, local.as_ref());
        // A second entry for the same id replaces the first.
        let old = self.files.get(&record.file_id).map_or(0, entry_cost);
        self.bytes -= old;
        if local.is_none() && !self.fits(bare) {
            self.bytes += old;
            return false;
        }
        self.bytes += bare;
        let mut kept = BTreeSet::new();
        for h in holders {
            if kept.len() >= MAX_HOLDERS || !self.fits(holder_cost(&h)) {
                break;
            }
            self.bytes += holder_cost(&h);
            kept.insert(h);
        }
        self.files.insert(
            record.file_id.clone(),
            Entry {
                record,
                holders: kept,
                local,
            },
        );
        self.changes += 1;
        true
    }

    /// Forgets our copy of a file (the entry stays while others hold it).
    pub fn clear_local(&mut self, id: &FileId) -> Option<LocalCopy> {
        let local = self.files.get_mut(id)?.local.take();
        // The name was counted in the entry's cost.
        self.bytes -= local.as_ref().map_or(0, |l| l.name.len());
        self.changes += 1;
        self.prune();
        local
    }

    /// Removes a file entirely; returns it.
    pub fn remove(&mut self, id: &FileId) -> Option<Entry> {
        let e = self.files.remove(id)?;
        self.changes += 1;
        self.bytes -= entry_cost(&e);
        self.released();
        Some(e)
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
        // Case-insensitive: ids are hex, typed in either case. The map is
        // sorted by the exact id, so the prefix is looked up as typed, in
        // lower case and in upper case.
        let mut spellings = vec![
            prefix.to_string(),
            prefix.to_ascii_lowercase(),
            prefix.to_ascii_uppercase(),
        ];
        spellings.dedup();
        let mut matches: Vec<&FileId> = Vec::new();
        for p in &spellings {
            let found = self
                .files
                .range(FileId(p.clone())..)
                .take_while(|(id, _)| id.0.starts_with(p.as_str()))
                .map(|(id, _)| id)
                .take(100);
            for id in found {
                if !matches.contains(&id) {
                    matches.push(id);
                }
            }
        }
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

    #[test]
    fn a_prefix_matches_whatever_the_case_it_is_typed_in() {
        let mut c = Catalog::new();
        for id in ["abc1", "ABD2", "xyz"] {
            c.merge(&rec(id, Timestamp::from_secs(1)), Some(&"p".into()));
        }
        assert_eq!(c.lookup("XY"), Lookup::Found("xyz".into()));
        assert_eq!(c.lookup("ABC"), Lookup::Found("abc1".into()));
        assert_eq!(c.lookup("abd"), Lookup::Found("ABD2".into()));
        assert_eq!(c.lookup("Ab"), Lookup::Ambiguous(2));
    }

    fn max_record(i: usize) -> FileRecord {
        use crate::protocol::message::{MAX_NAME_FIELD, MAX_STRING_FIELD};
        let pad = |p: String, len: usize| format!("{p:x<len$}");
        FileRecord {
            file_name: pad(format!("name{i}-"), MAX_NAME_FIELD),
            file_size: FileSize::Bytes(1),
            file_id: FileId(pad(format!("id{i}-"), MAX_STRING_FIELD)),
            file_owner: PeerId(pad(format!("owner{i}-"), MAX_STRING_FIELD)),
            file_timestamp: Timestamp::Text(pad(format!("ts{i}-"), MAX_STRING_FIELD)),
        }
    }

    fn recount(c: &Catalog) -> usize {
        c.iter().map(|(_, e)| entry_cost(e)).sum()
    }

    #[test]
    fn a_flood_of_maximal_names_owners_and_holders_stays_within_the_budget() {
        let mut c = Catalog::new();
        let holder = |h: usize| PeerId(format!("{h:x<1024}"));
        let mut accepted = 0;
        for i in 0..MAX_FILES {
            if c.merge(&max_record(i), Some(&holder(i))) {
                accepted += 1;
            }
        }
        // Then every holder claims every file.
        let records: Vec<FileRecord> = (0..accepted).map(max_record).collect();
        for h in 0..MAX_HOLDERS {
            let h = holder(1_000_000 + h);
            for r in &records {
                c.merge(r, Some(&h));
            }
        }
        assert!(accepted > 0 && accepted < MAX_FILES);
        assert!(c.bytes() <= MAX_CATALOG_BYTES, "{} bytes", c.bytes());
        assert_eq!(c.bytes(), recount(&c));
    }

    #[test]
    fn our_held_files_are_recorded_past_the_budget_and_never_pushed_out() {
        let mut c = Catalog::with_budget(64 * 1024);
        let mut i = 0;
        while c.merge(&max_record(i), Some(&"p".into())) {
            i += 1;
        }
        c.set_local(
            rec("mine", Timestamp::from_secs(1)),
            LocalCopy {
                name: "mine.txt".into(),
                verified: true,
            },
        );
        assert!(c.get(&"mine".into()).is_some());
        // Floods and forgetting the network's holders leave it alone.
        for j in 0..50 {
            c.merge(&max_record(10_000 + j), Some(&"q".into()));
            c.set_holdings(&PeerId(format!("flooder{j}")), &[max_record(20_000 + j)]);
        }
        c.forget_holder(&"p".into());
        c.forget_holder(&"q".into());
        assert!(c.get(&"mine".into()).is_some_and(|e| e.local.is_some()));
        assert_eq!(c.bytes(), recount(&c));
    }

    #[test]
    fn a_loaded_entry_we_hold_is_kept_and_others_are_refused_past_the_budget() {
        let mut c = Catalog::with_budget(64 * 1024);
        let entry = |i: usize, local: bool| Entry {
            record: max_record(i),
            holders: (0..10).map(|h| PeerId(format!("h{h}"))).collect(),
            local: local.then(|| LocalCopy {
                name: format!("f{i}"),
                verified: true,
            }),
        };
        let mut loaded = 0;
        for i in 0..100 {
            if c.insert_entry(entry(i, false)) {
                loaded += 1;
            }
        }
        assert!(loaded < 100);
        assert!(c.bytes() <= 64 * 1024);
        assert!(c.insert_entry(entry(500, true)));
        assert!(c.get(&max_record(500).file_id).is_some());
        assert_eq!(c.bytes(), recount(&c));
    }

    #[test]
    fn a_longer_record_past_the_budget_keeps_the_old_one() {
        let mut c = Catalog::with_budget(4 * 1024);
        c.merge(&rec("a", Timestamp::from_secs(1)), Some(&"p".into()));
        let mut long = max_record(0);
        long.file_id = "a".into();
        long.file_timestamp = Timestamp::from_secs(2);
        c.merge(&long, None);
        assert_eq!(c.get(&"a".into()).unwrap().record.file_name, "a.txt");
        assert_eq!(c.bytes(), recount(&c));
    }

    mod totals {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Merge(u8, u8, u16, u64),
            Holdings(u8, Vec<u8>),
            Forget(u8),
            Retain(u8),
            Local(u8, u16),
            Load(u8, u8, bool),
            Remove(u8),
            ClearLocal(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..24u8, 0..6u8, 0..3000u16, 0..4u64)
                    .prop_map(|(f, h, n, t)| Op::Merge(f, h, n, t)),
                (0..6u8, proptest::collection::vec(0..24u8, 0..8))
                    .prop_map(|(h, fs)| Op::Holdings(h, fs)),
                (0..6u8).prop_map(Op::Forget),
                (0..6u8).prop_map(Op::Retain),
                (0..24u8, 0..200u16).prop_map(|(f, n)| Op::Local(f, n)),
                (0..24u8, 0..6u8, any::<bool>()).prop_map(|(f, h, l)| Op::Load(f, h, l)),
                (0..24u8).prop_map(Op::Remove),
                (0..24u8).prop_map(Op::ClearLocal),
            ]
        }

        fn record(f: u8, name_len: u16, ts: u64) -> FileRecord {
            FileRecord {
                file_name: "n".repeat(name_len as usize),
                file_size: FileSize::Bytes(1),
                file_id: FileId(format!("file{f}")),
                file_owner: "o".into(),
                file_timestamp: Timestamp::from_secs(ts),
            }
        }

        fn peer(h: u8) -> PeerId {
            PeerId("p".repeat(1 + h as usize * 40))
        }

        proptest! {
            #[test]
            fn the_running_total_matches_the_entries_and_the_network_never_passes_the_budget(
                ops in proptest::collection::vec(op(), 1..80)
            ) {
                let budget = 16 * 1024;
                let mut c = Catalog::with_budget(budget);
                for op in ops {
                    let before = c.bytes();
                    let held: Vec<FileId> = c
                        .iter()
                        .filter(|(_, e)| e.local.is_some())
                        .map(|(id, _)| id.clone())
                        .collect();
                    let from_network = match op {
                        Op::Merge(f, h, n, t) => {
                            c.merge(&record(f, n, t), Some(&peer(h)));
                            true
                        }
                        Op::Holdings(h, fs) => {
                            let rs: Vec<FileRecord> = fs.iter().map(|f| record(*f, 10, 1)).collect();
                            c.set_holdings(&peer(h), &rs);
                            true
                        }
                        Op::Forget(h) => {
                            c.forget_holder(&peer(h));
                            true
                        }
                        Op::Retain(h) => {
                            c.retain_holders(|p| *p != peer(h));
                            true
                        }
                        Op::Local(f, n) => {
                            c.set_local(
                                record(f, n, 1),
                                LocalCopy { name: "l".repeat(n as usize), verified: true },
                            );
                            false
                        }
                        Op::Load(f, h, local) => {
                            c.insert_entry(Entry {
                                record: record(f, 100, 1),
                                holders: (0..h).map(peer).collect(),
                                local: local.then(|| LocalCopy { name: "x".into(), verified: true }),
                            });
                            false
                        }
                        Op::Remove(f) => {
                            c.remove(&FileId(format!("file{f}")));
                            false
                        }
                        Op::ClearLocal(f) => {
                            c.clear_local(&FileId(format!("file{f}")));
                            false
                        }
                    };
                    prop_assert_eq!(c.bytes(), recount(&c));
                    if from_network {
                        // The network never grows the catalog past the budget,
                        // and never removes a file we hold.
                        prop_assert!(c.bytes() <= budget.max(before));
                        for id in &held {
                            prop_assert!(c.get(id).is_some_and(|e| e.local.is_some()));
                        }
                    }
                }
            }
        }
    }
}
