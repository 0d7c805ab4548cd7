//! Files entering and leaving the storage folder outside the network.
//!
//! Owns two paths: [`scan_folder`] adopts files found in the folder at
//! start (as the other peers do: owned by us, timestamp = whole-second
//! mtime); [`import_file`] copies a user's file in for the menu's
//! `push <path>`, hashing it in the same pass, streamed in 1 MiB pieces and
//! written through a temp file. Copies out are `export`'s.

use crate::ids::PeerId;
use crate::protocol::message::{FileRecord, FileSize, Timestamp};
use crate::storage::atomic::{PartialFile, PARTIAL_PREFIX};
use crate::storage::hashing::{hash_file, FileHasher, READ_BUF_LEN};
use crate::storage::metadata::{StoredEntry, METADATA_FILE};
use crate::storage::names::{is_safe_local_name, sanitize_file_name};
use crate::storage::serving::FileStamp;
use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Finds the files in `dir` that the catalog doesn't know yet and makes
/// entries for them.
///
/// Considered: regular files (not folders, not symlinks), except the
/// metadata file and its copies (`metadata.json*`), temp files
/// (`.partial-*`) and names in `known_local_names`. Each becomes an entry
/// owned by `owner`, held (`has_copy`), verified, with `local_name` = its
/// name, `file_name` = its name, timestamp = its mtime in whole seconds,
/// size = its length and id = `sha256(bytes + str(secs))`;
/// `peers_with_file` is left empty. A name that isn't valid UTF-8 (or isn't a
/// safe single component, e.g. holds `\`), or a file that can't be read, is
/// skipped with a warning. Entries come out sorted by name.
pub fn scan_folder(
    dir: &Path,
    known_local_names: &HashSet<String>,
    owner: &PeerId,
) -> io::Result<Vec<StoredEntry>> {
    let mut entries = Vec::new();
    for dir_entry in fs::read_dir(dir)? {
        let dir_entry = match dir_entry {
            Ok(e) => e,
            Err(e) => {
                log::warn!("scan of {}: {e}", dir.display());
                continue;
            }
        };
        let path = dir_entry.path();
        let name = match dir_entry.file_name().into_string() {
            Ok(name) => name,
            Err(raw) => {
                log::warn!("scan: skipping {raw:?}: the name is not valid UTF-8");
                continue;
            }
        };
        if name.starts_with(METADATA_FILE)
            || name.starts_with(PARTIAL_PREFIX)
            || name == crate::storage::lock::LOCK_FILE
            || name == crate::storage::token::TOKEN_FILE
            || known_local_names.contains(&name)
        {
            continue;
        }
        // DirEntry::file_type does not follow symlinks.
        match dir_entry.file_type() {
            Ok(t) if t.is_file() => {}
            Ok(_) => continue,
            Err(e) => {
                log::warn!("scan: skipping {}: {e}", path.display());
                continue;
            }
        }
        if !is_safe_local_name(&name) {
            log::warn!("scan: skipping {name:?}: not usable as a stored file name");
            continue;
        }
        match adopt(&path, &name, owner) {
            Ok(entry) => entries.push(entry),
            Err(e) => log::warn!("scan: skipping {}: {e}", path.display()),
        }
    }
    entries.sort_by(|a, b| a.local_name.cmp(&b.local_name));
    Ok(entries)
}

/// The entry for one file found in the folder.
fn adopt(path: &Path, name: &str, owner: &PeerId) -> io::Result<StoredEntry> {
    let meta = fs::symlink_metadata(path)?;
    // Taken before hashing: a change while we hash shows at the first serve.
    let stamp = FileStamp::of(&meta);
    let modified = meta.modified()?;
    let secs = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (file_id, len) = hash_file(path, &secs.to_string())?;
    Ok(StoredEntry {
        record: FileRecord {
            file_name: name.to_string(),
            file_size: FileSize::Bytes(len),
            file_id,
            file_owner: owner.clone(),
            file_timestamp: Timestamp::from_secs(secs),
        },
        peers_with_file: Vec::new(),
        has_copy: true,
        local_name: Some(name.to_string()),
        verified: true,
        local_stamp: Some(stamp),
        resume: None,
    })
}

/// Why `push <path>` could not store a file. Its Display is the message for
/// the user.
#[derive(Debug)]
pub enum ImportError {
    /// Nothing at that path.
    NotFound(PathBuf),
    /// The path is a folder.
    IsDirectory(PathBuf),
    /// The path is something other than a regular file (a device, a FIFO...).
    NotAFile(PathBuf),
    /// The file exists but could not be read.
    Unreadable(PathBuf, io::Error),
    /// Writing the copy into the storage folder failed.
    Store(PathBuf, io::Error),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::NotFound(p) => write!(f, "push: no such file: {}", p.display()),
            ImportError::IsDirectory(p) => write!(f, "push: {} is a directory", p.display()),
            ImportError::NotAFile(p) => {
                write!(f, "push: {} is not a regular file", p.display())
            }
            ImportError::Unreadable(p, e) => write!(f, "push: cannot read {}: {e}", p.display()),
            ImportError::Store(p, e) => {
                write!(f, "push: could not store {}: {e}", p.display())
            }
        }
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImportError::Unreadable(_, e) | ImportError::Store(_, e) => Some(e),
            _ => None,
        }
    }
}

/// Maps an error about `src` to the user's view of it.
fn source_error(src: &Path, e: io::Error) -> ImportError {
    if e.kind() == io::ErrorKind::NotFound {
        ImportError::NotFound(src.to_path_buf())
    } else {
        ImportError::Unreadable(src.to_path_buf(), e)
    }
}

/// Refuses anything but a regular file (checked before opening, so a FIFO
/// is never opened and can't block us).
fn check_regular(src: &Path, meta: &fs::Metadata) -> Result<(), ImportError> {
    if meta.is_dir() {
        Err(ImportError::IsDirectory(src.to_path_buf()))
    } else if !meta.is_file() {
        Err(ImportError::NotAFile(src.to_path_buf()))
    } else {
        Ok(())
    }
}

/// Copies the user's file `src` into the storage folder `dir` as a new file
/// owned by `owner` (the menu's `push <path>`).
///
/// One pass: the bytes are hashed while they are copied, 1 MiB at a time,
/// into a temp file that is committed atomically. The timestamp is
/// `now_secs`, the id `sha256(bytes + str(now_secs))`, `file_name` the
/// sanitized name of `src`, and `local_name` a free name in `dir` for it
/// (`x (2).txt` if `x.txt` is taken). `peers_with_file` is left empty.
pub fn import_file(
    src: &Path,
    dir: &Path,
    owner: &PeerId,
    now_secs: u64,
) -> Result<StoredEntry, ImportError> {
    check_regular(src, &fs::metadata(src).map_err(|e| source_error(src, e))?)?;
    let mut input = File::open(src).map_err(|e| source_error(src, e))?;
    check_regular(src, &input.metadata().map_err(|e| source_error(src, e))?)?;

    let store_err = |e| ImportError::Store(src.to_path_buf(), e);
    let mut partial = PartialFile::create(dir).map_err(store_err)?;
    let mut hasher = FileHasher::new();
    let mut buf = vec![0u8; READ_BUF_LEN];
    let mut len = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImportError::Unreadable(src.to_path_buf(), e)),
        };
        hasher.update(&buf[..n]);
        partial.file().write_all(&buf[..n]).map_err(store_err)?;
        len += n as u64;
    }

    let wanted = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file_name = sanitize_file_name(&wanted);
    let local_name = partial.commit_unique(&file_name).map_err(store_err)?;

    Ok(StoredEntry {
        record: FileRecord {
            file_name,
            file_size: FileSize::Bytes(len),
            file_id: hasher.finish(&now_secs.to_string()),
            file_owner: owner.clone(),
            file_timestamp: Timestamp::from_secs(now_secs),
        },
        peers_with_file: Vec::new(),
        has_copy: true,
        local_stamp: FileStamp::read(&dir.join(&local_name)).ok(),
        local_name: Some(local_name),
        verified: true,
        resume: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::hashing::file_id_for;
    use crate::storage::names_in;
    use std::time::Duration;

    fn set_mtime(path: &Path, secs: u64) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn scan_adopts_only_new_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.txt"), b"hello").unwrap();
        set_mtime(&d.join("a.txt"), 1_700_000_000);
        fs::write(d.join("b.bin"), b"").unwrap();
        set_mtime(&d.join("b.bin"), 1_744_169_352);
        fs::write(d.join("known.txt"), b"k").unwrap();
        fs::write(d.join(METADATA_FILE), b"{}").unwrap();
        fs::write(d.join("metadata.json.corrupt-5"), b"x").unwrap();
        fs::write(d.join(".partial-00ff"), b"x").unwrap();
        // The page's token is never shared.
        fs::write(d.join("http-token"), b"00112233445566778899aabbccddeeff").unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(d.join("a.txt"), d.join("link.txt")).unwrap();

        let known: HashSet<String> = ["known.txt".to_string()].into();
        let owner = PeerId::from("me");
        let entries = scan_folder(d, &known, &owner).unwrap();
        let names: Vec<_> = entries
            .iter()
            .map(|e| e.record.file_name.as_str())
            .collect();
        assert_eq!(names, vec!["a.txt", "b.bin"]);

        let a = &entries[0];
        assert_eq!(
            a.record.file_id.0,
            // python3: hashlib.sha256(b'hello' + b'1700000000').hexdigest()
            "282f617a829202f1d2e4a99f35d3baca58f537f0389ef14e75be4f6fc8b42f2b"
        );
        assert_eq!(a.record.file_timestamp, Timestamp::from_secs(1_700_000_000));
        assert_eq!(a.record.file_size, FileSize::Bytes(5));
        assert_eq!(a.record.file_owner, owner);
        assert_eq!(a.local_name.as_deref(), Some("a.txt"));
        assert!(a.has_copy && a.verified);
        assert!(a.peers_with_file.is_empty());

        let b = &entries[1];
        assert_eq!(b.record.file_id, file_id_for(b"", "1744169352"));
        assert_eq!(b.record.file_size, FileSize::Bytes(0));
    }

    #[cfg(unix)]
    #[test]
    fn scan_skips_non_utf8_names() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(OsStr::from_bytes(b"bad\xff.txt")), b"x").unwrap();
        fs::write(dir.path().join("back\\slash"), b"x").unwrap();
        fs::write(dir.path().join("good"), b"x").unwrap();
        let entries = scan_folder(dir.path(), &HashSet::new(), &"me".into()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].record.file_name, "good");
    }

    #[cfg(unix)]
    #[test]
    fn scan_skips_unreadable_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        fs::write(&locked, b"x").unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        fs::write(dir.path().join("open"), b"x").unwrap();
        let entries = scan_folder(dir.path(), &HashSet::new(), &"me".into()).unwrap();
        if File::open(&locked).is_ok() {
            // Running as root: permissions don't stop us; nothing to test.
            assert_eq!(entries.len(), 2);
        } else {
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].record.file_name, "open");
        }
    }

    #[test]
    fn scan_of_a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scan_folder(&dir.path().join("nope"), &HashSet::new(), &"me".into()).is_err());
    }

    #[test]
    fn import_copies_hashes_and_names_uniquely() {
        let src_dir = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let src = src_dir.path().join("x.txt");
        let data: Vec<u8> = (0..(READ_BUF_LEN + 777)).map(|i| (i % 253) as u8).collect();
        fs::write(&src, &data).unwrap();

        let owner = PeerId::from("me");
        let e = import_file(&src, store.path(), &owner, 1_750_000_000).unwrap();
        assert_eq!(e.record.file_id, file_id_for(&data, "1750000000"));
        assert_eq!(e.record.file_name, "x.txt");
        assert_eq!(e.record.file_size, FileSize::Bytes(data.len() as u64));
        assert_eq!(e.record.file_timestamp, Timestamp::from_secs(1_750_000_000));
        assert_eq!(e.record.file_owner, owner);
        assert_eq!(e.local_name.as_deref(), Some("x.txt"));
        assert!(e.has_copy && e.verified);
        assert_eq!(fs::read(store.path().join("x.txt")).unwrap(), data);

        let again = import_file(&src, store.path(), &owner, 1_750_000_001).unwrap();
        assert_eq!(again.record.file_name, "x.txt");
        assert_eq!(again.local_name.as_deref(), Some("x (2).txt"));
        assert_ne!(again.record.file_id, e.record.file_id);
        assert_eq!(names_in(store.path()), vec!["x (2).txt", "x.txt"]);
    }

    #[test]
    fn import_sanitizes_reserved_names() {
        let src_dir = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let src = src_dir.path().join(METADATA_FILE);
        fs::write(&src, b"{}").unwrap();
        let e = import_file(&src, store.path(), &"me".into(), 1).unwrap();
        assert_eq!(e.local_name.as_deref(), Some("_metadata.json"));
        assert_eq!(names_in(store.path()), vec!["_metadata.json"]);
    }

    #[test]
    fn import_refuses_missing_and_directories() {
        let src_dir = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let missing = src_dir.path().join("nope.txt");
        let err = import_file(&missing, store.path(), &"me".into(), 1).unwrap_err();
        assert!(matches!(err, ImportError::NotFound(_)));
        assert_eq!(
            err.to_string(),
            format!("push: no such file: {}", missing.display())
        );
        let err = import_file(src_dir.path(), store.path(), &"me".into(), 1).unwrap_err();
        assert!(matches!(err, ImportError::IsDirectory(_)));
        assert_eq!(
            err.to_string(),
            format!("push: {} is a directory", src_dir.path().display())
        );
        #[cfg(unix)]
        {
            let err =
                import_file(Path::new("/dev/null"), store.path(), &"me".into(), 1).unwrap_err();
            assert!(matches!(err, ImportError::NotAFile(_)), "{err}");
        }
        assert!(names_in(store.path()).is_empty());
    }

    #[test]
    fn import_into_a_missing_store_is_a_store_error() {
        let src_dir = tempfile::tempdir().unwrap();
        let src = src_dir.path().join("x");
        fs::write(&src, b"x").unwrap();
        let err = import_file(&src, &src_dir.path().join("no-store"), &"me".into(), 1).unwrap_err();
        assert!(matches!(err, ImportError::Store(..)), "{err}");
        assert!(err.to_string().starts_with("push: could not store"));
    }
}
