//! The six messages of the network, parsed tolerantly and emitted strictly.
//!
//! Every quirk of PROTOCOL.md is accepted here (string ports, float and string
//! timestamps, MB-float sizes, A-style `peers` inside file records), so the
//! rest of the program sees one clean shape.

use crate::ids::{FileId, PeerId};
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;
use std::fmt;

/// Why a message was dropped. None of these affect the peer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The bytes are not one JSON object.
    NotJson(String),
    /// The object has no string `type`, or one we don't know.
    UnknownType(String),
    /// A required field is missing or has a type we can't use.
    BadField(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotJson(e) => write!(f, "not a JSON object: {e}"),
            ParseError::UnknownType(t) => write!(f, "unknown message type {t:?}"),
            ParseError::BadField(name) => write!(f, "missing or malformed field `{name}`"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A file's timestamp as it travels: a JSON number kept as its exact text
/// (the file id hashes that text), or, rarely, a string.
#[derive(Clone, Debug, PartialEq)]
pub enum Timestamp {
    /// A JSON number; `serde_json`'s `arbitrary_precision` keeps its text.
    Number(Number),
    /// A string such as `"Sun Jun 15 21:36:41 2025"`: shown, never compared.
    Text(String),
}

impl Timestamp {
    /// An integer timestamp (what peershare emits).
    pub fn from_secs(secs: u64) -> Self {
        Timestamp::Number(Number::from(secs))
    }

    /// The numeric value in seconds, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Timestamp::Number(n) => n.as_f64(),
            Timestamp::Text(_) => None,
        }
    }

    /// Whether `self` should replace `old` in the catalog: only a number
    /// replaces, and only a strictly newer one (or any number replaces text).
    pub fn is_newer_than(&self, old: &Timestamp) -> bool {
        match (self.as_f64(), old.as_f64()) {
            (Some(new), Some(old)) => new.partial_cmp(&old) == Some(Ordering::Greater),
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The texts under which a file id may have been hashed: the JSON text as
    /// it arrived and, for a whole-number float such as `1744169352.0`, also
    /// `1744169352` (one peer style re-stores ints as floats after hashing).
    pub fn hash_forms(&self) -> Vec<String> {
        match self {
            Timestamp::Text(s) => vec![s.clone()],
            Timestamp::Number(n) => {
                let text = n.to_string();
                let mut forms = vec![text.clone()];
                if let Some(int_part) = text.strip_suffix(".0") {
                    if !int_part.is_empty()
                        && int_part.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                    {
                        forms.push(int_part.to_string());
                    }
                }
                forms
            }
        }
    }

    /// The value as JSON (numbers keep their exact text).
    pub fn to_value(&self) -> Value {
        match self {
            Timestamp::Number(n) => Value::Number(n.clone()),
            Timestamp::Text(s) => Value::String(s.clone()),
        }
    }

    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Number(n) => Some(Timestamp::Number(n.clone())),
            Value::String(s) => Some(Timestamp::Text(s.clone())),
            _ => None,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timestamp::Number(n) => write!(f, "{n}"),
            Timestamp::Text(s) => f.write_str(s),
        }
    }
}

/// A file's size as a peer reported it: integer bytes (what peershare emits
/// and the operators' peers send), or anything else numeric (MB floats,
/// nonsense like `123.0`), kept only for display. Never trusted for
/// allocation: the decoded data's length is the truth.
#[derive(Clone, Debug, PartialEq)]
pub enum FileSize {
    /// Integer bytes.
    Bytes(u64),
    /// Any other number, kept as its exact JSON text.
    Reported(Number),
}

impl FileSize {
    /// Size in bytes when the peer reported integer bytes.
    pub fn bytes(&self) -> Option<u64> {
        match self {
            FileSize::Bytes(b) => Some(*b),
            FileSize::Reported(_) => None,
        }
    }

    /// The value as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            FileSize::Bytes(b) => Value::Number(Number::from(*b)),
            FileSize::Reported(n) => Value::Number(n.clone()),
        }
    }

    fn from_value(v: &Value) -> Self {
        match v {
            Value::Number(n) => match n.as_u64() {
                Some(b) => FileSize::Bytes(b),
                None => FileSize::Reported(n.clone()),
            },
            // A string, null or missing size is shown as 0 reported: the
            // size is display-only, so a bad one must not drop the record.
            // It is `0.0`, not `0`: re-sent, an integer 0 would read back
            // as `Bytes(0)`, a size nobody reported.
            _ => FileSize::Reported(Number::from_f64(0.0).unwrap_or_else(|| Number::from(0u8))),
        }
    }
}

impl fmt::Display for FileSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileSize::Bytes(b) => f.write_str(&human_bytes(*b)),
            // Floats on the network are megabytes by convention.
            FileSize::Reported(n) => write!(f, "{n} MB?"),
        }
    }
}

/// `1536` -> `"1.5 KiB"`; exact bytes below 1 KiB.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The five fields that describe a file everywhere: in `files`, ANNOUNCE and
/// the metadata file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileRecord {
    /// Display name; never a path on disk (see `storage::names`).
    pub file_name: String,
    /// Reported size.
    pub file_size: FileSize,
    /// The file's id.
    pub file_id: FileId,
    /// The owner's peerId (the only peer whose DELETE counts).
    pub file_owner: PeerId,
    /// When the owner created it.
    pub file_timestamp: Timestamp,
}

impl FileRecord {
    /// Reads a record from a JSON object, ignoring unknown keys (A-style
    /// `peers`, `has_copy`, ...). `file_size` and `file_timestamp` are
    /// lenient; name, id and owner must be strings.
    pub fn from_object(obj: &Map<String, Value>) -> Result<Self, ParseError> {
        Ok(FileRecord {
            file_name: str_field(obj, "file_name")?,
            file_size: FileSize::from_value(obj.get("file_size").unwrap_or(&Value::Null)),
            file_id: FileId(str_field(obj, "file_id")?),
            file_owner: PeerId(str_field(obj, "file_owner")?),
            file_timestamp: obj
                .get("file_timestamp")
                .and_then(Timestamp::from_value)
                .ok_or(ParseError::BadField("file_timestamp"))?,
        })
    }

    /// Writes the five fields into `obj` (field order as the network's
    /// well-known peers send them).
    pub fn write_fields(&self, obj: &mut Map<String, Value>) {
        obj.insert("file_name".into(), Value::String(self.file_name.clone()));
        obj.insert("file_size".into(), self.file_size.to_value());
        obj.insert("file_id".into(), Value::String(self.file_id.0.clone()));
        obj.insert(
            "file_owner".into(),
            Value::String(self.file_owner.0.clone()),
        );
        obj.insert("file_timestamp".into(), self.file_timestamp.to_value());
    }

    /// The record as a JSON object.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        self.write_fields(&mut obj);
        Value::Object(obj)
    }
}

/// A byte range of a file: the range extension (docs/PROTOCOL.md, "Range
/// extension"). In a GET_FILE, `length: None` means "to the end"; in a
/// FILE_DATA it is always set: the bytes actually sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Bytes from `offset`; `None` = to the end of the file.
    pub length: Option<u64>,
}

impl ByteRange {
    /// The range `[start, end)` within a file of `size` bytes: an offset
    /// past the end gives the empty range at the end, a length past the
    /// end stops at it.
    pub fn clamp(&self, size: u64) -> (u64, u64) {
        let start = self.offset.min(size);
        let end = match self.length {
            Some(len) => start.saturating_add(len).min(size),
            None => size,
        };
        (start, end)
    }

    /// Reads the optional `offset` and `length` of a message. Neither key:
    /// no range. A key holding anything but a non-negative integer makes
    /// the whole request whole-file (`None`): a peer that can't say which
    /// bytes it wants gets what a Python peer would send, and the answer
    /// carries no range fields, so it can tell.
    pub fn from_members(obj: &Map<String, Value>) -> Option<ByteRange> {
        let offset = obj.get("offset");
        let length = obj.get("length");
        if offset.is_none() && length.is_none() {
            return None;
        }
        let int = |v: Option<&Value>| match v {
            None => Some(None),
            Some(Value::Number(n)) => n.as_u64().map(Some),
            Some(_) => None,
        };
        Some(ByteRange {
            offset: int(offset)?.unwrap_or(0),
            length: int(length)?,
        })
    }

    /// Writes `offset` (and `length` when set) into `obj`.
    fn write_fields(&self, obj: &mut Map<String, Value>) {
        obj.insert("offset".into(), Value::Number(self.offset.into()));
        if let Some(len) = self.length {
            obj.insert("length".into(), Value::Number(len.into()));
        }
    }
}

/// Whether a GOSSIP or GOSSIP_REPLY advertises the range extension
/// (`"ranges": 1`, or `true`): anything else, or no key, is no.
fn ranges_flag(obj: &Map<String, Value>) -> bool {
    match obj.get("ranges") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        _ => false,
    }
}

/// The fields of a FILE_DATA other than `data` (which is streamed, never
/// held). All `None` in the not-found reply.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FileDataHeader {
    /// `null` means "not found".
    pub file_id: Option<FileId>,
    /// Name as sent.
    pub file_name: Option<String>,
    /// Owner as sent.
    pub file_owner: Option<PeerId>,
    /// Timestamp as sent (its text verifies the id).
    pub file_timestamp: Option<Timestamp>,
    /// Size as sent (display only).
    pub file_size: Option<FileSize>,
    /// The range the data covers, when the sender answered a ranged
    /// GET_FILE with one (a sender that serves ranges); `None`: the whole
    /// file.
    pub range: Option<ByteRange>,
}

impl FileDataHeader {
    /// A complete record, if every field is present (a usable push or reply).
    pub fn to_record(&self) -> Option<FileRecord> {
        Some(FileRecord {
            file_name: self.file_name.clone()?,
            file_size: self.file_size.clone().unwrap_or(FileSize::Bytes(0)),
            file_id: self.file_id.clone()?,
            file_owner: self.file_owner.clone()?,
            file_timestamp: self.file_timestamp.clone()?,
        })
    }
}

/// One message of the network. FILE_DATA carries only its header: the bytes
/// of `data` go through the streaming decoder into a file.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// "I am here": reply to host:port, forward once.
    Gossip {
        /// Where the sender listens.
        host: String,
        /// Its P2P port.
        port: u16,
        /// Unique id of this gossip (uuid4), for dedupe.
        id: String,
        /// The sender.
        peer_id: PeerId,
        /// The sender serves byte ranges (`"ranges": 1`; Python peers send
        /// no such key). Forwarded as it came.
        ranges: bool,
    },
    /// Answer to GOSSIP, on a new connection: who I am and what I hold.
    GossipReply {
        /// Where the sender listens.
        host: String,
        /// Its P2P port.
        port: u16,
        /// The sender.
        peer_id: PeerId,
        /// Files the sender holds (records that fail to parse are skipped).
        files: Vec<FileRecord>,
        /// The sender serves byte ranges.
        ranges: bool,
    },
    /// Ask for a file; answered with FILE_DATA on the same connection.
    GetFile {
        /// The file wanted.
        file_id: FileId,
        /// Only these bytes (a peershare server honours it; Python servers
        /// ignore it and send the whole file).
        range: Option<ByteRange>,
    },
    /// A file's contents (reply to GET_FILE, or an unsolicited push).
    FileData(FileDataHeader),
    /// `from` now holds this file.
    Announce {
        /// The peer that holds it.
        from: PeerId,
        /// The file.
        file: FileRecord,
    },
    /// The owner deleted the file (honoured only when `from` is the owner).
    Delete {
        /// Self-declared sender.
        from: PeerId,
        /// The file.
        file_id: FileId,
    },
}

/// Longest file name accepted from the network (a stored name is cut to
/// 255 bytes anyway; the record keeps what was sent).
pub const MAX_NAME_FIELD: usize = 16 * 1024;

/// Longest other string field (peer ids, hosts, file ids, owners). Together
/// with the table bounds this bounds what a peer can make us remember.
pub const MAX_STRING_FIELD: usize = 1024;

fn str_field(obj: &Map<String, Value>, name: &'static str) -> Result<String, ParseError> {
    let max = if name == "file_name" {
        MAX_NAME_FIELD
    } else {
        MAX_STRING_FIELD
    };
    match obj.get(name) {
        Some(Value::String(s)) if s.len() <= max => Ok(s.clone()),
        _ => Err(ParseError::BadField(name)),
    }
}

fn opt_str(obj: &Map<String, Value>, name: &'static str) -> Option<String> {
    str_field(obj, name).ok()
}

/// A port as an int or a numeric string, in 1..=65535.
fn port_field(obj: &Map<String, Value>) -> Result<u16, ParseError> {
    let port = match obj.get("port") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match port {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(ParseError::BadField("port")),
    }
}

/// Adds `"ranges": 1` when set; nothing otherwise, so a message about a
/// peer that doesn't serve ranges is byte for byte what it was before.
fn write_ranges_flag(obj: &mut Map<String, Value>, ranges: bool) {
    if ranges {
        obj.insert("ranges".into(), Value::Number(1u8.into()));
    }
}

impl Message {
    /// Parses one complete JSON message (no FILE_DATA `data` expected; if
    /// present it is ignored).
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ParseError::NotJson(e.to_string()))?;
        match value {
            Value::Object(obj) => Message::from_object(&obj),
            _ => Err(ParseError::NotJson("top level is not an object".into())),
        }
    }

    /// Builds a message from a decoded top-level object (the streaming
    /// decoder hands over every field but `data`).
    pub fn from_object(obj: &Map<String, Value>) -> Result<Message, ParseError> {
        let kind = match obj.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(other) => return Err(ParseError::UnknownType(other.to_string())),
            None => return Err(ParseError::BadField("type")),
        };
        match kind {
            "GOSSIP" => Ok(Message::Gossip {
                host: str_field(obj, "host")?,
                port: port_field(obj)?,
                id: match obj.get("id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => return Err(ParseError::BadField("id")),
                },
                peer_id: PeerId(str_field(obj, "peerId")?),
                ranges: ranges_flag(obj),
            }),
            "GOSSIP_REPLY" => {
                let files = match obj.get("files") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(|item| match item {
                            Value::Object(o) => FileRecord::from_object(o).ok(),
                            _ => None,
                        })
                        .collect(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => return Err(ParseError::BadField("files")),
                };
                Ok(Message::GossipReply {
                    host: str_field(obj, "host")?,
                    port: port_field(obj)?,
                    peer_id: PeerId(str_field(obj, "peerId")?),
                    files,
                    ranges: ranges_flag(obj),
                })
            }
            "GET_FILE" => Ok(Message::GetFile {
                file_id: FileId(str_field(obj, "file_id")?),
                range: ByteRange::from_members(obj),
            }),
            "FILE_DATA" => Ok(Message::FileData(FileDataHeader {
                file_id: opt_str(obj, "file_id").map(FileId),
                file_name: opt_str(obj, "file_name"),
                file_owner: opt_str(obj, "file_owner").map(PeerId),
                file_timestamp: obj.get("file_timestamp").and_then(Timestamp::from_value),
                file_size: obj.get("file_size").map(FileSize::from_value),
                range: ByteRange::from_members(obj),
            })),
            "ANNOUNCE" => Ok(Message::Announce {
                from: PeerId(str_field(obj, "from")?),
                file: FileRecord::from_object(obj)?,
            }),
            "DELETE" => Ok(Message::Delete {
                from: PeerId(str_field(obj, "from")?),
                file_id: FileId(str_field(obj, "file_id")?),
            }),
            other => Err(ParseError::UnknownType(other.to_string())),
        }
    }

    /// Short name of the message type, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Gossip { .. } => "GOSSIP",
            Message::GossipReply { .. } => "GOSSIP_REPLY",
            Message::GetFile { .. } => "GET_FILE",
            Message::FileData(_) => "FILE_DATA",
            Message::Announce { .. } => "ANNOUNCE",
            Message::Delete { .. } => "DELETE",
        }
    }

    /// The message as a JSON object. FILE_DATA gets `data: null`; a real
    /// FILE_DATA with contents is written by `encoder`, streamed.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("type".into(), Value::String(self.kind().into()));
        match self {
            Message::Gossip {
                host,
                port,
                id,
                peer_id,
                ranges,
            } => {
                obj.insert("host".into(), Value::String(host.clone()));
                obj.insert("port".into(), Value::Number((*port).into()));
                obj.insert("id".into(), Value::String(id.clone()));
                obj.insert("peerId".into(), Value::String(peer_id.0.clone()));
                write_ranges_flag(&mut obj, *ranges);
            }
            Message::GossipReply {
                host,
                port,
                peer_id,
                files,
                ranges,
            } => {
                obj.insert("host".into(), Value::String(host.clone()));
                obj.insert("port".into(), Value::Number((*port).into()));
                obj.insert("peerId".into(), Value::String(peer_id.0.clone()));
                obj.insert(
                    "files".into(),
                    Value::Array(files.iter().map(FileRecord::to_value).collect()),
                );
                write_ranges_flag(&mut obj, *ranges);
            }
            Message::GetFile { file_id, range } => {
                obj.insert("file_id".into(), Value::String(file_id.0.clone()));
                if let Some(r) = range {
                    r.write_fields(&mut obj);
                }
            }
            Message::FileData(h) => {
                let s = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
                obj.insert(
                    "file_id".into(),
                    s(&h.file_id.as_ref().map(|f| f.0.clone())),
                );
                obj.insert("file_name".into(), s(&h.file_name));
                obj.insert(
                    "file_owner".into(),
                    s(&h.file_owner.as_ref().map(|p| p.0.clone())),
                );
                obj.insert(
                    "file_timestamp".into(),
                    h.file_timestamp
                        .as_ref()
                        .map(Timestamp::to_value)
                        .unwrap_or(Value::Null),
                );
                obj.insert(
                    "file_size".into(),
                    h.file_size
                        .as_ref()
                        .map(FileSize::to_value)
                        .unwrap_or(Value::Number(0u8.into())),
                );
                if let Some(r) = &h.range {
                    r.write_fields(&mut obj);
                }
                obj.insert("data".into(), Value::Null);
            }
            Message::Announce { from, file } => {
                obj.insert("from".into(), Value::String(from.0.clone()));
                file.write_fields(&mut obj);
            }
            Message::Delete { from, file_id } => {
                obj.insert("from".into(), Value::String(from.0.clone()));
                obj.insert("file_id".into(), Value::String(file_id.0.clone()));
            }
        }
        Value::Object(obj)
    }

    /// The message as wire bytes: one JSON object, no terminator.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a Value cannot fail (string keys only).
        serde_json::to_vec(&self.to_value()).unwrap_or_default()
    }

    /// The not-found reply to GET_FILE: every field null, size 0.
    pub fn file_not_found() -> Message {
        Message::FileData(FileDataHeader {
            file_size: Some(FileSize::Bytes(0)),
            ..FileDataHeader::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_with_string_port_parses() {
        let m = Message::parse(
            br#"{"type":"GOSSIP","host":"hawk.cs.umanitoba.ca","port":"8999","id":"a-b","peerId":"nanday"}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            Message::Gossip {
                host: "hawk.cs.umanitoba.ca".into(),
                port: 8999,
                id: "a-b".into(),
                peer_id: "nanday".into(),
                ranges: false,
            }
        );
    }

    #[test]
    fn gossip_reply_ignores_a_style_peers_and_odd_values() {
        let m = Message::parse(br#"{"type":"GOSSIP_REPLY","host":"127.0.0.1","port":9000,"peerId":"A","files":[
            {"file_name":"x","file_size":2.8e-05,"file_id":"f1","file_owner":"o","file_timestamp":1743970142.6140459,"peers":["A"]},
            {"file_name":"y","file_size":922,"file_id":"f2","file_owner":"o","file_timestamp":"Sun Jun 15 21:36:41 2025"},
            {"broken":true}]}"#).unwrap();
        let Message::GossipReply { files, .. } = m else {
            panic!("wrong type")
        };
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].file_timestamp.to_string(), "1743970142.6140459");
        assert_eq!(files[0].file_size.bytes(), None);
        assert_eq!(files[1].file_size.bytes(), Some(922));
        assert!(matches!(files[1].file_timestamp, Timestamp::Text(_)));
    }

    #[test]
    fn whole_float_timestamp_has_two_hash_forms() {
        let Message::Announce { file, .. } = Message::parse(br#"{"type":"ANNOUNCE","from":"p","file_name":"n","file_size":1,"file_id":"i","file_owner":"o","file_timestamp":1744169352.0}"#).unwrap() else { panic!() };
        assert_eq!(
            file.file_timestamp.hash_forms(),
            vec!["1744169352.0", "1744169352"]
        );
    }

    #[test]
    fn string_timestamp_never_replaces_a_number() {
        let num = Timestamp::from_secs(10);
        let text = Timestamp::Text("Sun".into());
        assert!(!text.is_newer_than(&num));
        assert!(num.is_newer_than(&text));
        assert!(Timestamp::from_secs(11).is_newer_than(&num));
        assert!(!num.is_newer_than(&num));
    }

    #[test]
    fn not_found_reply_has_null_id_and_zero_size() {
        let v: Value = serde_json::from_slice(&Message::file_not_found().to_bytes()).unwrap();
        assert_eq!(v["file_id"], Value::Null);
        assert_eq!(v["data"], Value::Null);
        assert_eq!(v["file_size"], 0);
        assert_eq!(v["type"], "FILE_DATA");
    }

    #[test]
    fn unknown_type_and_missing_fields_are_errors_not_panics() {
        assert!(matches!(
            Message::parse(br#"{"type":"PING"}"#),
            Err(ParseError::UnknownType(_))
        ));
        assert!(matches!(
            Message::parse(br#"{"type":"GOSSIP"}"#),
            Err(ParseError::BadField(_))
        ));
        assert!(matches!(
            Message::parse(br#"[1,2]"#),
            Err(ParseError::NotJson(_))
        ));
        assert!(matches!(
            Message::parse(br#"{"type":7}"#),
            Err(ParseError::UnknownType(_))
        ));
        assert!(
            Message::parse(br#"{"type":"GOSSIP","host":"h","port":0,"id":"x","peerId":"p"}"#)
                .is_err()
        );
    }

    #[test]
    fn messages_round_trip_through_bytes() {
        let msgs = vec![
            Message::Gossip {
                host: "127.0.0.1".into(),
                port: 9001,
                id: "u".into(),
                peer_id: "p1".into(),
                ranges: false,
            },
            Message::GetFile {
                file_id: "abc".into(),
                range: None,
            },
            Message::Delete {
                from: "p1".into(),
                file_id: "abc".into(),
            },
            Message::Announce {
                from: "p".into(),
                file: FileRecord {
                    file_name: "n".into(),
                    file_size: FileSize::Bytes(5),
                    file_id: "i".into(),
                    file_owner: "o".into(),
                    file_timestamp: Timestamp::from_secs(7),
                },
            },
        ];
        for m in msgs {
            assert_eq!(Message::parse(&m.to_bytes()).unwrap(), m);
        }
    }

    fn get_file(json: &[u8]) -> Option<ByteRange> {
        match Message::parse(json).unwrap() {
            Message::GetFile { range, .. } => range,
            other => panic!("not a GET_FILE: {other:?}"),
        }
    }

    #[test]
    fn a_ranged_get_file_round_trips_and_whole_file_bytes_are_unchanged() {
        let ranged = Message::GetFile {
            file_id: "abc".into(),
            range: Some(ByteRange {
                offset: 5,
                length: Some(10),
            }),
        };
        assert_eq!(Message::parse(&ranged.to_bytes()).unwrap(), ranged);
        let to_end = Message::GetFile {
            file_id: "abc".into(),
            range: Some(ByteRange {
                offset: 5,
                length: None,
            }),
        };
        assert_eq!(Message::parse(&to_end.to_bytes()).unwrap(), to_end);
        let whole = Message::GetFile {
            file_id: "abc".into(),
            range: None,
        };
        // What peershare sent before the extension, byte for byte.
        assert_eq!(whole.to_bytes(), br#"{"file_id":"abc","type":"GET_FILE"}"#);
    }

    #[test]
    fn a_malformed_range_makes_the_request_whole_file() {
        for bad in [
            r#""offset":-1"#,
            r#""offset":"5""#,
            r#""offset":1.5"#,
            r#""offset":0,"length":-3"#,
            r#""length":null"#,
            r#""offset":[1]"#,
        ] {
            let json = format!(r#"{{"type":"GET_FILE","file_id":"f",{bad}}}"#);
            assert_eq!(get_file(json.as_bytes()), None, "{bad}");
        }
        assert_eq!(get_file(br#"{"type":"GET_FILE","file_id":"f"}"#), None);
        assert_eq!(
            get_file(br#"{"type":"GET_FILE","file_id":"f","length":4}"#),
            Some(ByteRange {
                offset: 0,
                length: Some(4)
            })
        );
    }

    #[test]
    fn a_range_clamps_to_the_file() {
        let r = |offset, length| ByteRange { offset, length };
        assert_eq!(r(0, None).clamp(10), (0, 10));
        assert_eq!(r(3, Some(4)).clamp(10), (3, 7));
        assert_eq!(r(8, Some(4)).clamp(10), (8, 10));
        assert_eq!(r(10, Some(4)).clamp(10), (10, 10));
        assert_eq!(r(99, None).clamp(10), (10, 10));
        assert_eq!(r(2, Some(u64::MAX)).clamp(10), (2, 10));
    }

    #[test]
    fn file_data_range_fields_round_trip_and_are_absent_when_unset() {
        let header = FileDataHeader {
            file_id: Some("i".into()),
            file_size: Some(FileSize::Bytes(9)),
            range: Some(ByteRange {
                offset: 2,
                length: Some(3),
            }),
            ..FileDataHeader::default()
        };
        let m = Message::FileData(header);
        assert_eq!(Message::parse(&m.to_bytes()).unwrap(), m);
        let v: Value = serde_json::from_slice(&Message::file_not_found().to_bytes()).unwrap();
        assert!(v.get("offset").is_none() && v.get("length").is_none());
    }

    #[test]
    fn the_ranges_flag_is_read_tolerantly_and_sent_only_when_set() {
        let flag = |extra: &str| {
            let json =
                format!(r#"{{"type":"GOSSIP","host":"h","port":1,"id":"x","peerId":"p"{extra}}}"#);
            match Message::parse(json.as_bytes()).unwrap() {
                Message::Gossip { ranges, .. } => ranges,
                other => panic!("{other:?}"),
            }
        };
        assert!(flag(r#","ranges":1"#));
        assert!(flag(r#","ranges":true"#));
        assert!(!flag(""));
        assert!(!flag(r#","ranges":0"#));
        assert!(!flag(r#","ranges":"1""#));
        assert!(!flag(r#","ranges":2"#));
        let mut gossip = Message::Gossip {
            host: "h".into(),
            port: 1,
            id: "x".into(),
            peer_id: "p".into(),
            ranges: false,
        };
        // A Python peer's GOSSIP, forwarded by us, is what it was.
        assert_eq!(
            gossip.to_bytes(),
            br#"{"host":"h","id":"x","peerId":"p","port":1,"type":"GOSSIP"}"#
        );
        if let Message::Gossip { ranges, .. } = &mut gossip {
            *ranges = true;
        }
        assert_eq!(Message::parse(&gossip.to_bytes()).unwrap(), gossip);
        let reply = Message::GossipReply {
            host: "h".into(),
            port: 1,
            peer_id: "p".into(),
            files: vec![],
            ranges: true,
        };
        let v: Value = serde_json::from_slice(&reply.to_bytes()).unwrap();
        assert_eq!(v["ranges"], 1);
        assert_eq!(Message::parse(&reply.to_bytes()).unwrap(), reply);
    }
}
