//! The storage folder's `metadata.json`: the catalog as it survives restarts.
//!
//! Owns the file's format and its tolerant reading. We write an object keyed
//! by file id, each value the five record fields plus `peers_with_file`,
//! `has_copy` (`"yes"`/`"no"`, as the Python H peers write), `local_name`
//! and `verified`. We read that and the Python peers' variants (`peers`,
//! `hasCopy`, booleans, missing fields). A bad entry is skipped; a file that
//! is not a JSON object at all is moved aside (`metadata.json.corrupt-<t>`)
//! and the peer starts with an empty catalog. Writes are atomic.

use crate::ids::{FileId, PeerId};
use crate::protocol::message::FileRecord;
use crate::storage::atomic::write_atomic;
use crate::storage::names::{is_safe_local_name, sanitize_file_name};
use crate::storage::serving::FileStamp;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

/// Name of the metadata file in the storage folder (reserved: no stored file
/// may be named `metadata.json*`).
pub const METADATA_FILE: &str = "metadata.json";

/// One file of the catalog as stored on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEntry {
    /// The file's five network fields.
    pub record: FileRecord,
    /// Peers known to hold a copy.
    pub peers_with_file: Vec<PeerId>,
    /// Whether this peer holds a copy in its storage folder.
    pub has_copy: bool,
    /// The copy's name in the storage folder (one safe path component;
    /// may differ from `record.file_name`, e.g. `x (2).txt`).
    pub local_name: Option<String>,
    /// Whether the copy's bytes hashed to `file_id` (false for a download
    /// kept although its id verifies under no known formula).
    pub verified: bool,
    /// Size, times and inode of the copy when it was last verified (None:
    /// not known, e.g. written by an older peer); a copy found otherwise is
    /// hashed again before it is served.
    pub local_stamp: Option<FileStamp>,
    /// Our download of it was in flight when this was written: resumed at
    /// the next start from the temp file named here.
    pub resume: Option<StoredResume>,
}

/// A download in flight when the metadata was written, to resume at the
/// next start (`"resume"` in its entry; the Python peers ignore it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResume {
    /// The temp file holding its first bytes (a `.partial-` name in the
    /// storage folder).
    pub partial: String,
    /// The menu's `get` asked for it (else only start-up auto-fetch did).
    /// A `get`'s destination is not kept: a path read back from a file
    /// others may write must never choose where we write.
    pub by_user: bool,
    /// Only the first `valid` bytes of the temp file are the file's (a
    /// download from several holders: its pieces past them may be
    /// missing); `None`: all of them.
    pub valid: Option<u64>,
}

impl StoredResume {
    /// Its JSON object.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("partial".into(), Value::String(self.partial.clone()));
        obj.insert(
            "requested_by".into(),
            Value::String(if self.by_user { "get" } else { "auto" }.into()),
        );
        if let Some(n) = self.valid {
            obj.insert("valid".into(), Value::from(n));
        }
        Value::Object(obj)
    }

    /// Reads one back; `None` for anything but a safe temp file name.
    pub fn from_value(v: &Value) -> Option<StoredResume> {
        let partial = v.get("partial")?.as_str()?;
        // A temp file's name: reserved for us, one plain component.
        let plain = !partial.contains(['/', '\\', '\0'])
            && partial.len() <= 255
            && !matches!(partial, "." | "..");
        if !partial.starts_with(crate::storage::PARTIAL_PREFIX) || !plain {
            return None;
        }
        // Present, it must be a byte count: a file of holes is no prefix.
        let valid = match v.get("valid") {
            None => None,
            Some(n) => Some(n.as_u64()?),
        };
        Some(StoredResume {
            partial: partial.to_string(),
            by_user: v.get("requested_by").and_then(Value::as_str) == Some("get"),
            valid,
        })
    }
}

/// Why a metadata file could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// Not valid JSON (or not UTF-8).
    Json(String),
    /// Valid JSON whose top level is not an object.
    NotAnObject,
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::Json(e) => write!(f, "metadata is not valid JSON: {e}"),
            MetadataError::NotAnObject => f.write_str("metadata is not a JSON object"),
        }
    }
}

impl std::error::Error for MetadataError {}

/// What [`load`] found: the entries, and messages for the user (a corrupt
/// file moved aside, skipped entries). `load` does not log them itself.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// The entries read (empty if the file was missing or corrupt).
    pub entries: Vec<StoredEntry>,
    /// Human-readable warnings, one per problem (at most about 100).
    pub warnings: Vec<String>,
    /// Valid entries not kept (past the limits given to [`load`]).
    pub dropped: usize,
}

/// The metadata file's bytes for `entries`: a pretty-printed JSON object
/// keyed by file id, in file-id order. If two entries share an id, the
/// last one wins.
pub fn to_json(entries: &[StoredEntry]) -> Vec<u8> {
    let mut sorted: Vec<&StoredEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.record.file_id.cmp(&b.record.file_id));
    let mut top = Map::new();
    for entry in sorted {
        let mut obj = Map::new();
        entry.record.write_fields(&mut obj);
        obj.insert(
            "peers_with_file".into(),
            Value::Array(
                entry
                    .peers_with_file
                    .iter()
                    .map(|p| Value::String(p.0.clone()))
                    .collect(),
            ),
        );
        obj.insert(
            "has_copy".into(),
            Value::String(if entry.has_copy { "yes" } else { "no" }.into()),
        );
        if let Some(name) = &entry.local_name {
            obj.insert("local_name".into(), Value::String(name.clone()));
        }
        obj.insert("verified".into(), Value::Bool(entry.verified));
        if let Some(stamp) = &entry.local_stamp {
            obj.insert("local_stamp".into(), stamp.to_value());
        }
        if let Some(resume) = &entry.resume {
            obj.insert("resume".into(), resume.to_value());
        }
        top.insert(entry.record.file_id.0.clone(), Value::Object(obj));
    }
    // Four-space indent, like the Python peers' `json.dump(..., indent=4)`.
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a Value into a Vec cannot fail (string keys only).
    if Value::Object(top).serialize(&mut ser).is_err() {
        log::error!("could not serialize the metadata");
    }
    out.push(b'\n');
    out
}

/// One catalog entry as [`write_json`] stores it, borrowed from the
/// catalog (so a save copies no string).
pub struct EntryRef<'a, H> {
    /// The file's five network fields.
    pub record: &'a FileRecord,
    /// Peers known to hold a copy.
    pub peers_with_file: H,
    /// Whether this peer holds a copy.
    pub has_copy: bool,
    /// The copy's name in the storage folder.
    pub local_name: Option<&'a str>,
    /// What the copy looked like on disk when last verified.
    pub local_stamp: Option<&'a FileStamp>,
    /// Whether the copy's bytes hashed to `file_id`.
    pub verified: bool,
    /// Our download of it in flight, to resume at the next start.
    pub resume: Option<StoredResume>,
}

impl<'a, H> Serialize for EntryRef<'a, H>
where
    H: IntoIterator<Item = &'a PeerId> + Copy,
{
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Holders<H>(H);
        impl<'a, H: IntoIterator<Item = &'a PeerId> + Copy> Serialize for Holders<H> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.collect_seq(self.0.into_iter().map(|p| p.0.as_str()))
            }
        }
        let r = self.record;
        // Keys in sorted order: the bytes are exactly those of `to_json`.
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("file_id", r.file_id.0.as_str())?;
        m.serialize_entry("file_name", r.file_name.as_str())?;
        m.serialize_entry("file_owner", r.file_owner.0.as_str())?;
        m.serialize_entry("file_size", &r.file_size.to_value())?;
        m.serialize_entry("file_timestamp", &r.file_timestamp.to_value())?;
        m.serialize_entry("has_copy", if self.has_copy { "yes" } else { "no" })?;
        if let Some(name) = self.local_name {
            m.serialize_entry("local_name", name)?;
        }
        if let Some(stamp) = self.local_stamp {
            m.serialize_entry("local_stamp", &stamp.to_value())?;
        }
        m.serialize_entry("peers_with_file", &Holders(self.peers_with_file))?;
        if let Some(resume) = &self.resume {
            m.serialize_entry("resume", &resume.to_value())?;
        }
        m.serialize_entry("verified", &self.verified)?;
        m.end()
    }
}

/// The metadata file's bytes for `entries`, which must come in file-id
/// order with no id twice (a catalog's order). The same bytes as
/// [`to_json`], written straight from borrowed entries: a save of a large
/// catalog needs only its output, not a copy and a JSON tree of it.
pub fn write_json<'a, H, I>(entries: I) -> Vec<u8>
where
    H: IntoIterator<Item = &'a PeerId> + Copy,
    I: Iterator<Item = EntryRef<'a, H>>,
{
    use serde::ser::SerializeMap;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    let written = (|| {
        let mut top = serde::Serializer::serialize_map(&mut ser, None)?;
        for e in entries {
            top.serialize_entry(e.record.file_id.0.as_str(), &e)?;
        }
        top.end()
    })();
    // Writing strings into a Vec cannot fail.
    if written.is_err() {
        log::error!("could not serialize the metadata");
    }
    out.push(b'\n');
    out
}

/// Reads a metadata file tolerantly (ours or a Python peer's). A malformed
/// entry is skipped with a `log::warn`; only a file that is not a JSON
/// object is an error. Entries come out in file-id order.
pub fn parse(bytes: &[u8]) -> Result<Vec<StoredEntry>, MetadataError> {
    let (entries, warnings) = parse_with_warnings(bytes)?;
    for w in &warnings {
        log::warn!("{w}");
    }
    Ok(entries)
}

/// [`parse`], returning the skipped entries' warnings instead of logging
/// them.
pub fn parse_with_warnings(bytes: &[u8]) -> Result<(Vec<StoredEntry>, Vec<String>), MetadataError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (entries, warnings, _) = read_entries(&mut de, &Keep::all())?;
    Ok((entries, warnings))
}

/// Which entries a read keeps: files we hold up to `held`, others while
/// their `cost` together stays within `bytes` and their number within
/// `others`. A file too large for the catalog is never held in memory
/// whole: only the entries kept are.
pub struct Keep<'a> {
    /// Most entries with a copy in the folder.
    pub held: usize,
    /// Most other entries.
    pub others: usize,
    /// Most bytes of other entries, as `cost` counts them.
    pub bytes: usize,
    /// What an entry costs.
    pub cost: &'a dyn Fn(&StoredEntry) -> usize,
}

impl Keep<'_> {
    /// Keeps everything.
    pub fn all() -> Keep<'static> {
        Keep {
            held: usize::MAX,
            others: usize::MAX,
            bytes: usize::MAX,
            cost: &|_| 0,
        }
    }
}

/// Most warnings one read returns (one line each); past it, one line says
/// how many more entries were skipped or repaired.
const MAX_WARNINGS: usize = 100;

/// Streams the top-level object entry by entry (one entry's JSON tree at a
/// time), keeping what `keep` allows. Returns the entries in file-id order,
/// the warnings and how many valid entries were not kept.
fn read_entries<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    keep: &Keep<'_>,
) -> Result<(Vec<StoredEntry>, Vec<String>, usize), MetadataError> {
    use serde::de::{Deserializer as _, MapAccess, Visitor};
    struct Top<'k, 'c> {
        keep: &'k Keep<'c>,
    }
    type Read = (Vec<StoredEntry>, Vec<String>, usize);
    impl<'de> Visitor<'de> for Top<'_, '_> {
        type Value = Read;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read, A::Error> {
            let (mut entries, mut warnings, mut dropped) = (Vec::new(), Vec::new(), 0usize);
            let (mut held, mut others, mut bytes) = (0usize, 0usize, 0usize);
            let mut unsaid = 0usize;
            let mut warn = |w: String, warnings: &mut Vec<String>| {
                if warnings.len() < MAX_WARNINGS {
                    warnings.push(w);
                } else {
                    unsaid += 1;
                }
            };
            while let Some((key, value)) = map.next_entry::<String, Value>()? {
                match parse_entry(&key, &value) {
                    Ok((entry, notes)) => {
                        for n in notes {
                            warn(n, &mut warnings);
                        }
                        let kept = if entry.has_copy {
                            held += 1;
                            held <= self.keep.held
                        } else {
                            let cost = (self.keep.cost)(&entry);
                            others += 1;
                            bytes = bytes.saturating_add(cost);
                            others <= self.keep.others && bytes <= self.keep.bytes
                        };
                        if kept {
                            entries.push(entry);
                        } else {
                            dropped += 1;
                        }
                    }
                    Err(why) => warn(
                        format!("metadata: skipping entry {key:?}: {why}"),
                        &mut warnings,
                    ),
                }
            }
            if unsaid > 0 {
                warnings.push(format!(
                    "metadata: {unsaid} more entries skipped or repaired"
                ));
            }
            Ok((entries, warnings, dropped))
        }
    }
    let read = de.deserialize_any(Top { keep }).and_then(|r| {
        de.end()?;
        Ok(r)
    });
    let (mut entries, mut warnings, dropped) = read.map_err(|e| match e.classify() {
        // Our visitor accepts any object: a data error is another top level.
        serde_json::error::Category::Data => MetadataError::NotAnObject,
        _ => MetadataError::Json(e.to_string()),
    })?;
    entries.sort_by(|a, b| a.record.file_id.cmp(&b.record.file_id));
    let mut seen = HashSet::new();
    entries.retain(|e| {
        let fresh = seen.insert(e.record.file_id.clone());
        if !fresh {
            warnings.push(format!(
                "metadata: skipping a second entry for file id {}",
                e.record.file_id
            ));
        }
        fresh
    });
    Ok((entries, warnings, dropped))
}

/// One entry: the record, the extra fields, and notes about repairs.
fn parse_entry(key: &str, value: &Value) -> Result<(StoredEntry, Vec<String>), String> {
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    let record = if matches!(obj.get("file_id"), Some(Value::String(_))) {
        FileRecord::from_object(obj)
    } else {
        let mut with_id = obj.clone();
        with_id.insert("file_id".into(), Value::String(key.to_string()));
        FileRecord::from_object(&with_id)
    }
    .map_err(|e| e.to_string())?;

    let peers_value = match obj.get("peers_with_file") {
        Some(v @ Value::Array(_)) => Some(v),
        _ => obj.get("peers"),
    };
    // The catalog keeps at most MAX_HOLDERS holders a file: the rest are
    // not even read (a list of 100 000 would cost a quadratic dedupe).
    let mut peers_with_file: Vec<PeerId> = Vec::new();
    if let Some(Value::Array(items)) = peers_value {
        for item in items {
            if peers_with_file.len() >= crate::core::catalog::MAX_HOLDERS {
                break;
            }
            if let Value::String(p) = item {
                if !peers_with_file.iter().any(|q| q.0 == *p) {
                    peers_with_file.push(PeerId(p.clone()));
                }
            }
        }
    }

    let has_copy = obj
        .get("has_copy")
        .or_else(|| obj.get("hasCopy"))
        .and_then(yes_no)
        .unwrap_or(false);
    let verified = obj.get("verified").and_then(yes_no).unwrap_or(true);

    let mut notes = Vec::new();
    let local_name = match obj.get("local_name") {
        Some(Value::String(name)) if is_safe_local_name(name) => Some(name.clone()),
        Some(Value::String(name)) => {
            let safe = sanitize_file_name(name);
            notes.push(format!(
                "metadata: entry {}: unsafe local name {name:?} replaced by {safe:?}",
                record.file_id
            ));
            Some(safe)
        }
        _ if has_copy => Some(sanitize_file_name(&record.file_name)),
        _ => None,
    };

    Ok((
        StoredEntry {
            record,
            peers_with_file,
            has_copy,
            local_name,
            verified,
            local_stamp: obj.get("local_stamp").and_then(FileStamp::from_value),
            resume: obj.get("resume").and_then(StoredResume::from_value),
        },
        notes,
    ))
}

/// `"yes"`/`"no"` (any case, also `"true"`/`"false"`) or a boolean.
fn yes_no(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "y" | "true" => Some(true),
            "no" | "n" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Reads `dir/metadata.json`. A missing file gives an empty catalog with no
/// warning. An unreadable or corrupt one is renamed to
/// `metadata.json.corrupt-<now_unix>` (so it is kept for inspection and
/// not overwritten by the next save), with a warning saying so, and the
/// catalog starts empty. Never fails and never panics.
///
/// Read as a stream, keeping only what `keep` allows, so a file far larger
/// than the catalog never sits in memory whole (`dropped` counts the rest).
pub fn load(dir: &Path, now_unix: u64, keep: &Keep<'_>) -> LoadOutcome {
    let path = dir.join(METADATA_FILE);
    let problem = match fs::File::open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return LoadOutcome::default(),
        Err(e) => format!("cannot read {}: {e}", path.display()),
        Ok(file) => {
            let reader = io::BufReader::with_capacity(64 * 1024, file);
            let mut de = serde_json::Deserializer::from_reader(reader);
            match read_entries(&mut de, keep) {
                Ok((entries, warnings, dropped)) => {
                    return LoadOutcome {
                        entries,
                        warnings,
                        dropped,
                    }
                }
                Err(e) => format!("{} is corrupt ({e})", path.display()),
            }
        }
    };
    let warning = match move_aside(dir, now_unix) {
        Ok(name) => format!("{problem}; moved it to {name}, starting with an empty catalog"),
        Err(e) => {
            format!("{problem}; could not move it aside ({e}), starting with an empty catalog")
        }
    };
    LoadOutcome {
        entries: Vec::new(),
        warnings: vec![warning],
        dropped: 0,
    }
}

/// Renames the metadata file to a free `metadata.json.corrupt-<now>[-n]`.
fn move_aside(dir: &Path, now_unix: u64) -> io::Result<String> {
    let from = dir.join(METADATA_FILE);
    let base = format!("{METADATA_FILE}.corrupt-{now_unix}");
    let mut name = base.clone();
    let mut n = 1u32;
    while fs::symlink_metadata(dir.join(&name)).is_ok() {
        n += 1;
        if n > 1000 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "too many corrupt metadata copies",
            ));
        }
        name = format!("{base}-{n}");
    }
    fs::rename(from, dir.join(&name))?;
    Ok(name)
}

/// Writes `dir/metadata.json` atomically (temp file, fsync, rename).
pub fn save(dir: &Path, entries: &[StoredEntry]) -> io::Result<()> {
    write_atomic(dir, METADATA_FILE, &to_json(entries))
}

impl StoredEntry {
    /// The file's id.
    pub fn file_id(&self) -> &FileId {
        &self.record.file_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{FileSize, Timestamp};

    const NETWORK_METADATA: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/network-metadata.json"
    ));

    fn find<'a>(entries: &'a [StoredEntry], id_prefix: &str) -> &'a StoredEntry {
        entries
            .iter()
            .find(|e| e.record.file_id.0.starts_with(id_prefix))
            .unwrap()
    }

    fn entry(id: &str, name: &str, has_copy: bool) -> StoredEntry {
        StoredEntry {
            record: FileRecord {
                file_name: name.into(),
                file_size: FileSize::Bytes(3),
                file_id: id.into(),
                file_owner: "me".into(),
                file_timestamp: Timestamp::from_secs(1_700_000_000),
            },
            peers_with_file: vec!["a".into(), "b b!".into()],
            has_copy,
            local_name: has_copy.then(|| format!("{name}-local")),
            verified: true,
            resume: None,
            local_stamp: None,
        }
    }

    #[test]
    fn network_fixture_loads_every_entry() {
        let (entries, warnings) = parse_with_warnings(NETWORK_METADATA).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(entries.len(), 22);
        // Counted with python3 over the fixture: 4 EldenRing.txt, 3 JTEST.txt.
        let named = |n: &str| entries.iter().filter(|e| e.record.file_name == n).count();
        assert_eq!(named("EldenRing.txt"), 4);
        assert_eq!(named("JTEST.txt"), 3);
        assert_eq!(named("names.txt"), 2);
        assert_eq!(entries.iter().filter(|e| e.has_copy).count(), 9);
        assert!(entries.iter().all(|e| e.verified));

        let testfile = find(&entries, "3af4dd84");
        assert_eq!(testfile.record.file_size.bytes(), None);
        let FileSize::Reported(n) = &testfile.record.file_size else {
            panic!("size should be reported, not bytes")
        };
        assert_eq!(n.to_string(), "2.8e-05");
        assert_eq!(testfile.record.file_owner.0, testfile.record.file_id.0);
        assert_eq!(
            testfile.record.file_timestamp.to_string(),
            "1743970142.6140459"
        );
        assert_eq!(testfile.local_name.as_deref(), Some("testfile.txt"));

        let poster = find(&entries, "602c86cb");
        assert_eq!(poster.record.file_timestamp.to_string(), "1744169352.0");
        assert_eq!(poster.record.file_size.to_value().to_string(), "123.0");
        assert_eq!(poster.peers_with_file, vec![PeerId::from("Sample")]);

        let elden = find(&entries, "1c1c5194");
        assert_eq!(elden.record.file_size, FileSize::Bytes(922));
        assert_eq!(elden.record.file_owner.0, "Starscourge Radahn");
        assert_eq!(elden.peers_with_file.len(), 5);

        let a_hi = find(&entries, "74d2a9b4");
        assert_eq!(
            a_hi.record.file_timestamp,
            Timestamp::Text("Sun Jun 15 21:36:41 2025".into())
        );
        assert_eq!(a_hi.record.file_owner.0, "TEST8!!!");
        assert!(!a_hi.has_copy);
        assert_eq!(a_hi.local_name, None);
    }

    #[test]
    fn fixture_survives_a_round_trip() {
        let entries = parse(NETWORK_METADATA).unwrap();
        let again = parse(&to_json(&entries)).unwrap();
        assert_eq!(again, entries);
        // Odd numbers keep their exact text through our own writer.
        let text = String::from_utf8(to_json(&entries)).unwrap();
        assert!(text.contains("\"file_size\": 2.8e-05"));
        assert!(text.contains("\"file_timestamp\": 1744169352.0"));
        assert!(text.contains("\"file_size\": 1.7906866073608398"));
    }

    #[test]
    fn round_trip_is_identity() {
        let mut unverified = entry("cc", "c", true);
        unverified.verified = false;
        let entries = vec![entry("aa", "a", true), entry("bb", "b", false), unverified];
        let json = to_json(&entries);
        assert_eq!(parse(&json).unwrap(), entries);
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["aa"]["has_copy"], "yes");
        assert_eq!(v["bb"]["has_copy"], "no");
        assert!(v["bb"].get("local_name").is_none());
        assert_eq!(v["cc"]["verified"], false);
        assert_eq!(v["aa"]["file_size"], 3);
    }

    #[test]
    fn output_is_sorted_by_file_id() {
        let entries = vec![entry("zz", "z", false), entry("aa", "a", false)];
        let text = String::from_utf8(to_json(&entries)).unwrap();
        assert!(text.find("\"aa\"").unwrap() < text.find("\"zz\"").unwrap());
        assert_eq!(
            to_json(&entries),
            to_json(&[entries[1].clone(), entries[0].clone()])
        );
    }

    #[test]
    fn a_style_file_loads() {
        let json = br#"{
            "k1": {"file_name": "x.txt", "file_size": 0.0, "file_owner": "A",
                   "file_timestamp": 1744169352.0, "peers": ["A", "B", "A"], "hasCopy": "yes"},
            "k2": {"file_name": "dir/y.txt", "file_size": 5, "file_id": "real-id",
                   "file_owner": "A", "file_timestamp": 1, "peers": [], "hasCopy": true},
            "k3": {"file_name": "z", "file_size": 5, "file_id": "z1",
                   "file_owner": "A", "file_timestamp": 1, "hasCopy": "NO"}
        }"#;
        let entries = parse(json).unwrap();
        assert_eq!(entries.len(), 3);
        let k1 = find(&entries, "k1");
        assert_eq!(
            k1.peers_with_file,
            vec![PeerId::from("A"), PeerId::from("B")]
        );
        assert!(k1.has_copy);
        assert!(k1.verified);
        assert_eq!(k1.local_name.as_deref(), Some("x.txt"));
        let k2 = find(&entries, "real-id");
        assert!(k2.has_copy);
        assert_eq!(k2.local_name.as_deref(), Some("y.txt"));
        let z = find(&entries, "z1");
        assert!(!z.has_copy);
        assert!(z.peers_with_file.is_empty());
    }

    #[test]
    fn malformed_entries_are_skipped_not_fatal() {
        let json = br#"{
            "ok": {"file_name": "x", "file_size": 1, "file_owner": "o", "file_timestamp": 1},
            "num": 5,
            "noname": {"file_size": 1, "file_owner": "o", "file_timestamp": 1},
            "nots": {"file_name": "x", "file_owner": "o", "file_timestamp": null},
            "badlocal": {"file_name": "x", "file_owner": "o", "file_timestamp": 1,
                         "has_copy": "yes", "local_name": "../../etc/passwd", "verified": "no"}
        }"#;
        let (entries, warnings) = parse_with_warnings(json).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        let bad = find(&entries, "badlocal");
        assert_eq!(bad.local_name.as_deref(), Some("passwd"));
        assert!(!bad.verified);
    }

    #[test]
    fn top_level_must_be_an_object() {
        assert_eq!(parse(b"[1, 2]"), Err(MetadataError::NotAnObject));
        assert!(matches!(parse(b"{\"a\": "), Err(MetadataError::Json(_))));
        assert!(matches!(parse(b"\xff\xfe"), Err(MetadataError::Json(_))));
        assert_eq!(parse(b"{}"), Ok(vec![]));
        assert!(!MetadataError::NotAnObject.to_string().is_empty());
    }

    #[test]
    fn load_missing_is_empty_and_silent() {
        let dir = tempfile::tempdir().unwrap();
        let out = load(dir.path(), 5, &Keep::all());
        assert!(out.entries.is_empty());
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn save_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![entry("aa", "a", true), entry("bb", "b", false)];
        save(dir.path(), &entries).unwrap();
        let out = load(dir.path(), 5, &Keep::all());
        assert_eq!(out.entries, entries);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn corrupt_file_is_moved_aside_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METADATA_FILE);
        fs::write(&path, b"{\"truncated\": {").unwrap();
        let out = load(dir.path(), 1_700_000_123, &Keep::all());
        assert!(out.entries.is_empty());
        assert_eq!(out.warnings.len(), 1);
        assert!(out.warnings[0].contains("metadata.json.corrupt-1700000123"));
        assert!(!path.exists());
        assert_eq!(
            fs::read(dir.path().join("metadata.json.corrupt-1700000123")).unwrap(),
            b"{\"truncated\": {"
        );
        // A second corruption in the same second does not overwrite the first.
        fs::write(&path, b"[]").unwrap();
        let out = load(dir.path(), 1_700_000_123, &Keep::all());
        assert!(out.warnings[0].contains("metadata.json.corrupt-1700000123-2"));
        assert!(dir.path().join("metadata.json.corrupt-1700000123").exists());
    }

    #[test]
    fn unreadable_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(METADATA_FILE)).unwrap();
        let out = load(dir.path(), 9, &Keep::all());
        assert!(out.entries.is_empty());
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        assert!(dir.path().join("metadata.json.corrupt-9").is_dir());
    }

    #[test]
    fn written_from_borrowed_entries_the_bytes_are_those_of_to_json() {
        let mut entries = parse(NETWORK_METADATA).unwrap();
        entries.push(StoredEntry {
            record: FileRecord {
                file_name: "quote \" and \u{e9}".into(),
                file_size: FileSize::Bytes(3),
                file_id: FileId("zz".into()),
                file_owner: PeerId("o".into()),
                file_timestamp: Timestamp::Text("Sun Jun 15".into()),
            },
            peers_with_file: vec![PeerId("a".into()), PeerId("b".into())],
            has_copy: true,
            local_name: Some("x (2).txt".into()),
            local_stamp: Some(FileStamp {
                len: 3,
                mtime_ns: 1_750_000_000_123_456_789,
                ctime_ns: 1_750_000_001_000_000_000,
                ino: 42,
                dev: 7,
            }),
            verified: false,
            resume: Some(StoredResume {
                partial: ".partial-00ab".into(),
                by_user: true,
                valid: Some(1 << 20),
            }),
        });
        entries.sort_by(|a, b| a.record.file_id.cmp(&b.record.file_id));
        let borrowed = write_json(entries.iter().map(|e| EntryRef {
            record: &e.record,
            peers_with_file: &e.peers_with_file,
            has_copy: e.has_copy,
            local_name: e.local_name.as_deref(),
            local_stamp: e.local_stamp.as_ref(),
            verified: e.verified,
            resume: e.resume.clone(),
        }));
        assert_eq!(
            String::from_utf8(borrowed).unwrap(),
            String::from_utf8(to_json(&entries)).unwrap()
        );
        // And read back as written.
        let back = parse(&to_json(&entries)).unwrap();
        let zz = back.iter().find(|e| e.record.file_id.0 == "zz").unwrap();
        assert_eq!(
            zz.resume,
            entries
                .iter()
                .find(|e| e.record.file_id.0 == "zz")
                .unwrap()
                .resume
        );
    }

    #[test]
    fn a_resume_record_names_a_temp_file_or_is_ignored() {
        let read = |v: serde_json::Value| StoredResume::from_value(&v);
        let ok = read(serde_json::json!({"partial": ".partial-1f", "requested_by": "auto"}));
        assert_eq!(
            ok,
            Some(StoredResume {
                partial: ".partial-1f".into(),
                by_user: false,
                valid: None,
            })
        );
        let pieces = read(serde_json::json!({"partial": ".partial-1f", "valid": 8}));
        assert_eq!(pieces.and_then(|r| r.valid), Some(8));
        for bad in [
            serde_json::json!(-1),
            serde_json::json!("8"),
            serde_json::json!(1.5),
        ] {
            let r = read(serde_json::json!({"partial": ".partial-1f", "valid": bad}));
            assert_eq!(r, None, "valid: {bad}");
        }
        for bad in ["../.partial-1f", "notes.txt", ".partial-a/b", ""] {
            assert_eq!(read(serde_json::json!({ "partial": bad })), None, "{bad}");
        }
        assert_eq!(read(serde_json::json!({"partial": 7})), None);
    }
}
