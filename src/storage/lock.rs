//! One peer per storage folder: a lock file held with `flock` for the
//! peer's whole life. The kernel releases it when the process ends, however
//! it ends, so a crash never leaves the folder locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the storage folder.
pub const LOCK_FILE: &str = ".peershare.lock";

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

/// Why the folder could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another running peer holds it; the text is what that peer wrote.
    InUse {
        /// The folder.
        dir: PathBuf,
        /// `pid <n> peer <id>` as the holder wrote it (escaped for display).
        holder: String,
    },
    /// The lock file can't be opened or locked.
    Io {
        /// The folder.
        dir: PathBuf,
        /// The system's error.
        error: std::io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::InUse { dir, holder } => write!(
                f,
                "storage folder {} is in use by another running peershare ({holder})",
                dir.display()
            ),
            LockError::Io { dir, error } => {
                write!(f, "cannot lock storage folder {}: {error}", dir.display())
            }
        }
    }
}

impl std::error::Error for LockError {}

impl FolderLock {
    /// Takes the folder's lock without waiting and records who holds it.
    pub fn acquire(dir: &Path, peer_id: &str) -> Result<FolderLock, LockError> {
        let io = |error| LockError::Io {
            dir: dir.to_path_buf(),
            error,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = (&file).take(256).read_to_string(&mut text);
                let holder = crate::cli::escape::escape(text.trim()).into_owned();
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Best effort: the lock itself is what counts, the text only names it.
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "pid {} peer {}", std::process::id(), peer_id);
        Ok(FolderLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_folder_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = FolderLock::acquire(dir.path(), "alice").unwrap();
        let err = FolderLock::acquire(dir.path(), "bob").unwrap_err();
        let line = err.to_string();
        assert!(line.contains("in use"), "{line}");
        assert!(line.contains("peer alice"), "{line}");
        assert!(
            line.contains(&format!("pid {}", std::process::id())),
            "{line}"
        );
        drop(first);
        FolderLock::acquire(dir.path(), "bob").unwrap();
    }
}
