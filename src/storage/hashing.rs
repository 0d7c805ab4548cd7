//! File ids: `sha256(file_bytes + str(file_timestamp))` in lowercase hex.
//!
//! Owns computing and verifying ids, always streamed: a file is hashed in
//! 1 MiB reads and never held in memory whole. Verification tries every text
//! the timestamp may have been hashed under ([`Timestamp::hash_forms`]).

use crate::ids::FileId;
use crate::protocol::message::Timestamp;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Size of one read when hashing or copying a file.
pub const READ_BUF_LEN: usize = 1024 * 1024;

/// A streaming SHA-256 over a file's bytes; the timestamp text is appended
/// when the id is computed or checked.
#[derive(Clone, Debug, Default)]
pub struct FileHasher {
    inner: Sha256,
}

impl FileHasher {
    /// A hasher that has seen no bytes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
    }

    /// The SHA-256 of the bytes seen so far (a piece's digest).
    pub fn digest(self) -> [u8; 32] {
        self.inner.finalize().into()
    }

    /// The id of the bytes seen so far with `timestamp_text` appended.
    pub fn finish(self, timestamp_text: &str) -> FileId {
        let mut h = self.inner;
        h.update(timestamp_text.as_bytes());
        FileId(faster_hex::hex_string(&h.finalize()))
    }

    /// Whether the bytes seen so far hash to `id` (compared
    /// case-insensitively) under any of the timestamp's hash forms (its text
    /// as it arrived and, for `1744169352.0`, also `1744169352`).
    pub fn matches(self, id: &FileId, ts: &Timestamp) -> bool {
        ts.hash_forms().iter().any(|form| {
            self.clone()
                .finish(form)
                .0
                .eq_ignore_ascii_case(id.as_str())
        })
    }
}

/// The id of `bytes` created at `timestamp_text`: lowercase hex of
/// `sha256(bytes + timestamp_text)`.
pub fn file_id_for(bytes: &[u8], timestamp_text: &str) -> FileId {
    let mut h = FileHasher::new();
    h.update(bytes);
    h.finish(timestamp_text)
}

/// Hashes the file at `path` in 1 MiB reads; returns its id (with
/// `timestamp_text` appended) and its length in bytes.
pub fn hash_file(path: &Path, timestamp_text: &str) -> io::Result<(FileId, u64)> {
    let mut file = File::open(path)?;
    let (hasher, len) = hash_reader(&mut file)?;
    Ok((hasher.finish(timestamp_text), len))
}

/// Feeds everything `reader` yields into a new hasher, in 1 MiB reads.
pub(crate) fn hash_reader(reader: &mut impl Read) -> io::Result<(FileHasher, u64)> {
    let mut hasher = FileHasher::new();
    let mut buf = vec![0u8; READ_BUF_LEN];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `python3 -c "import hashlib; print(hashlib.sha256(b'hello' + b'1700000000').hexdigest())"`
    const HELLO_1700000000: &str =
        "282f617a829202f1d2e4a99f35d3baca58f537f0389ef14e75be4f6fc8b42f2b";

    /// `python3 -c "import hashlib; print(hashlib.sha256(b'abc' + b'1744169352').hexdigest())"`
    const ABC_1744169352: &str = "a8b9a2878dd8efb8a6d1379099315125e247acd4c6d5494c34b53efae70d417e";

    fn ts(json: &str) -> Timestamp {
        match serde_json::from_str::<serde_json::Value>(json).unwrap() {
            serde_json::Value::Number(n) => Timestamp::Number(n),
            serde_json::Value::String(s) => Timestamp::Text(s),
            other => panic!("not a timestamp: {other}"),
        }
    }

    #[test]
    fn known_vector() {
        assert_eq!(file_id_for(b"hello", "1700000000").0, HELLO_1700000000);
        let mut h = FileHasher::new();
        h.update(b"he");
        h.update(b"llo");
        assert!(h.matches(&FileId(HELLO_1700000000.into()), &ts("1700000000")));
    }

    #[test]
    fn matches_is_case_insensitive_and_rejects_wrong_ids() {
        let mut h = FileHasher::new();
        h.update(b"hello");
        let upper = FileId(HELLO_1700000000.to_uppercase());
        assert!(h.clone().matches(&upper, &ts("1700000000")));
        assert!(!h.clone().matches(&upper, &ts("1700000001")));
        assert!(!h.matches(&FileId("nope".into()), &ts("1700000000")));
    }

    #[test]
    fn whole_float_timestamp_matches_int_form() {
        let id = file_id_for(b"abc", "1744169352");
        assert_eq!(id.0, ABC_1744169352);
        let mut h = FileHasher::new();
        h.update(b"abc");
        assert!(h.clone().matches(&id, &ts("1744169352.0")));
        assert!(h.clone().matches(&id, &ts("1744169352")));
        // The float text itself also verifies an id hashed with it.
        let float_id = file_id_for(b"abc", "1744169352.0");
        assert!(h.clone().matches(&float_id, &ts("1744169352.0")));
        assert!(!h.matches(&float_id, &ts("1744169352")));
    }

    #[test]
    fn string_timestamp_hashes_its_text() {
        let text = "Sun Jun 15 21:36:41 2025";
        let id = file_id_for(b"x", text);
        let mut h = FileHasher::new();
        h.update(b"x");
        assert!(h.matches(&id, &Timestamp::Text(text.into())));
    }

    #[test]
    fn hash_file_streams_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let data: Vec<u8> = (0..(READ_BUF_LEN * 2 + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let (id, len) = hash_file(&path, "42").unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(id, file_id_for(&data, "42"));
        assert!(hash_file(&dir.path().join("missing"), "42").is_err());
    }
}
