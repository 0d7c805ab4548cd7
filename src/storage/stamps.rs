//! What each held file looked like when last verified, by local name: the
//! one owner of those [`FileStamp`]s. A copy whose stamp no longer matches
//! is not served before it is hashed again; the stamps are saved in the
//! metadata beside each held entry.

use crate::storage::serving::FileStamp;
use std::collections::HashMap;
use std::io;
use std::path::Path;

/// The stamps of the held files, by local name (one per held file at most:
/// a name is stamped when its copy is verified and forgotten when the copy
/// is removed or found changed).
#[derive(Debug, Default)]
pub struct Stamps {
    by_name: HashMap<String, FileStamp>,
}

impl Stamps {
    /// No stamps.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stamp of `name` when it was last verified, if known.
    pub fn get(&self, name: &str) -> Option<&FileStamp> {
        self.by_name.get(name)
    }

    /// Records `stamp` as what `name` looked like when verified.
    pub fn record(&mut self, name: impl Into<String>, stamp: FileStamp) {
        self.by_name.insert(name.into(), stamp);
    }

    /// Records what `dir/name` looks like now, just after it was verified
    /// (one `stat`). On error nothing is recorded, and the first serve
    /// hashes the copy again.
    pub fn record_current(&mut self, dir: &Path, name: &str) -> io::Result<()> {
        let stamp = FileStamp::read(&dir.join(name))?;
        self.record(name, stamp);
        Ok(())
    }

    /// Forgets `name` (its copy was removed, or no longer verifies).
    pub fn forget(&mut self, name: &str) {
        self.by_name.remove(name);
    }

    /// How many names are stamped.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no name is stamped.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_stamp_is_what_the_file_looks_like_now() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"abc").unwrap();
        let mut stamps = Stamps::new();
        stamps.record_current(dir.path(), "a.txt").unwrap();
        let now = FileStamp::read(&dir.path().join("a.txt")).unwrap();
        assert_eq!(stamps.get("a.txt"), Some(&now));
        assert_eq!(stamps.get("a.txt").map(|s| s.len), Some(3));
        assert_eq!(stamps.len(), 1);
    }

    #[test]
    fn a_missing_file_is_not_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let mut stamps = Stamps::new();
        assert!(stamps.record_current(dir.path(), "gone.txt").is_err());
        assert!(stamps.get("gone.txt").is_none());
        assert!(stamps.is_empty());
    }

    #[test]
    fn a_forgotten_name_has_no_stamp_and_others_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
        std::fs::write(dir.path().join("b.txt"), b"bb").unwrap();
        let mut stamps = Stamps::new();
        stamps.record_current(dir.path(), "a.txt").unwrap();
        stamps.record_current(dir.path(), "b.txt").unwrap();
        stamps.forget("a.txt");
        assert!(stamps.get("a.txt").is_none());
        assert_eq!(stamps.get("b.txt").map(|s| s.len), Some(2));
    }

    #[test]
    fn stamping_a_name_again_replaces_its_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, b"a").unwrap();
        let mut stamps = Stamps::new();
        stamps.record_current(dir.path(), "a.txt").unwrap();
        std::fs::write(&path, b"longer").unwrap();
        stamps.record_current(dir.path(), "a.txt").unwrap();
        assert_eq!(stamps.get("a.txt").map(|s| s.len), Some(6));
        assert_eq!(stamps.len(), 1);
    }
}
