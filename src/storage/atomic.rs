//! Crash-safe writes into the storage folder.
//!
//! Owns the temp-file discipline: every file is written as
//! `.partial-<random hex>` in the destination folder, fsynced, renamed over
//! its final name and the folder fsynced, so a crash leaves either the old
//! file or the new one, never a torn one. Leftover temp files from a crash
//! are removed at start by [`remove_partials`].

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

/// Prefix of temp files in the storage folder; names starting with it are
/// reserved (see `names::sanitize_file_name`).
pub const PARTIAL_PREFIX: &str = ".partial-";

/// How many random names [`PartialFile::create`] tries before giving up.
const CREATE_TRIES: u32 = 16;

/// Flushes a directory's entries (a rename or create in it) to disk.
///
/// File systems that cannot fsync a directory (`EINVAL`) are accepted
/// silently: there is nothing more we could do.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    let handle = File::open(dir)?;
    match handle.sync_all() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// A temp file `.partial-<random hex>` in a folder, renamed to its final
/// name by [`PartialFile::commit`]. Dropped without a commit, it removes
/// itself.
#[derive(Debug)]
pub struct PartialFile {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    committed: bool,
    /// An alias's share of its owner's count of open aliases (see
    /// [`PartialFile::alias`]): held, never read; dropped with the handle.
    _alias_of: Option<std::sync::Arc<()>>,
}

impl PartialFile {
    /// Creates a new, empty temp file in `dir` (which must exist).
    pub fn create(dir: &Path) -> io::Result<PartialFile> {
        let mut last_err = None;
        for _ in 0..CREATE_TRIES {
            let name = format!(
                "{PARTIAL_PREFIX}{}",
                faster_hex::hex_string(&rand::random::<[u8; 8]>())
            );
            let path = dir.join(name);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(PartialFile {
                        file,
                        path,
                        dir: dir.to_path_buf(),
                        committed: false,
                        _alias_of: None,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("could not create a temp file")))
    }

    /// Opens the temp file `name` an earlier run kept in `dir` for a
    /// download to resume: a `.partial-` name, a regular file (never
    /// through a symlink, a FIFO or a device).
    pub fn reopen(dir: &Path, name: &str) -> io::Result<PartialFile> {
        use std::os::unix::fs::OpenOptionsExt;
        if !name.starts_with(PARTIAL_PREFIX) || name.contains('/') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a temp file name: {name:?}"),
            ));
        }
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)?;
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        // A hard link would have us write into a file outside the folder.
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is not a regular file with one name"),
            ));
        }
        Ok(PartialFile {
            file,
            path,
            dir: dir.to_path_buf(),
            committed: false,
            _alias_of: None,
        })
    }

    /// A second handle on the same temp file (its own open file, so its
    /// flags are its own) that never removes it: each piece of a download
    /// from several holders is written through one, while the download's
    /// own handle owns the file. `live` counts the aliases still open
    /// (its strong count, less the caller's own): a cancelled piece's
    /// writer thread may still hold one for a moment.
    pub fn alias(&self, live: &std::sync::Arc<()>) -> io::Result<PartialFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)?;
        Ok(PartialFile {
            file,
            path: self.path.clone(),
            dir: self.dir.clone(),
            committed: true,
            _alias_of: Some(live.clone()),
        })
    }

    /// The temp file's name in its folder.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Keeps the temp file when this handle is dropped (a download in
    /// flight at exit, resumed at the next start); its bytes are fsynced.
    pub fn keep_for_resume(mut self) -> io::Result<()> {
        self.committed = true;
        self.file.sync_all()
    }

    /// The open temp file, for writing (and reading back).
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Where the temp file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fsyncs the file, renames it to `dir/final_name` (replacing any file
    /// of that name) and fsyncs the folder. `final_name` must be a single
    /// normal path component. Returns the final path.
    pub fn commit(self, final_name: &str) -> io::Result<PathBuf> {
        self.commit_os(OsStr::new(final_name))
    }

    /// Checks that `final_name` is one plain component, makes the bytes
    /// durable, and returns the final path (shared by both commits).
    fn durable_target(&mut self, final_name: &OsStr) -> io::Result<PathBuf> {
        let mut components = Path::new(final_name).components();
        if !matches!(
            (components.next(), components.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a plain file name: {final_name:?}"),
            ));
        }
        self.file.flush()?;
        self.file.sync_all()?;
        Ok(self.dir.join(final_name))
    }

    /// [`PartialFile::commit`] for a name that may not be UTF-8.
    pub(crate) fn commit_os(mut self, final_name: &OsStr) -> io::Result<PathBuf> {
        let target = self.durable_target(final_name)?;
        fs::rename(&self.path, &target)?;
        self.committed = true;
        fsync_dir(&self.dir)?;
        Ok(target)
    }
}

impl PartialFile {
    /// Gives the temp file a final name that no file has yet: fsync, hard
    /// link to `dir/final_name` (which fails with `AlreadyExists` instead of
    /// replacing), unlink the temp name, fsync the folder. Two writers that
    /// picked the same free name (a download on the loop and a `push` on the
    /// worker) can then never overwrite each other's file. On
    /// `AlreadyExists` the temp file is kept, so the caller can try another
    /// name.
    pub fn commit_new(&mut self, final_name: &str) -> io::Result<PathBuf> {
        let target = self.durable_target(OsStr::new(final_name))?;
        match rename_noreplace(&self.path, &target) {
            Ok(()) => self.committed = true,
            // The file system can't rename without replacing (or the kernel
            // predates renameat2): a hard link can't replace either.
            Err(e) if is_unsupported(&e) => {
                fs::hard_link(&self.path, &target)?;
                self.committed = true;
                // A crash before this unlink leaves a `.partial-*` that the
                // next start removes; the file is complete under its name.
                if let Err(e) = fs::remove_file(&self.path) {
                    log::debug!("could not remove temp name {}: {e}", self.path.display());
                }
            }
            Err(e) => return Err(e),
        }
        fsync_dir(&self.dir)?;
        Ok(target)
    }

    /// Commits under a free name derived from `wanted` (`x.txt`,
    /// `x (2).txt`, ...), retrying when another writer takes the name
    /// first. Returns the name used.
    pub fn commit_unique(mut self, wanted: &str) -> io::Result<String> {
        let mut last = None;
        for _ in 0..8 {
            let name = crate::storage::unique_name(&self.dir, wanted)?;
            match self.commit_new(&name) {
                Ok(_) => return Ok(name),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free name")))
    }
}

/// Whether a `renameat2(RENAME_NOREPLACE)` failure means "not supported
/// here" (rather than "the name is taken" or a real error).
fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

/// Renames `from` to `to` unless something (anything, even a dangling
/// symlink) is at `to`: then `AlreadyExists`, and both are left as they
/// were. Atomic in the kernel: no window between a check and the rename.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive
    // the call; renameat2 reads them only during the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere: reported unsupported, so the caller links instead.
#[cfg(not(target_os = "linux"))]
fn rename_noreplace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = fs::remove_file(&self.path) {
                log::debug!("could not remove temp file {}: {e}", self.path.display());
            }
        }
    }
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename over
/// the old file, fsync the folder.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut partial = PartialFile::create(dir)?;
    partial.file().write_all(bytes)?;
    partial.commit(name)?;
    Ok(())
}

/// Deletes the temp files (`.partial-*`) a crash left in `dir`; returns how
/// many were removed. A missing folder has none (`Ok(0)`). A temp file that
/// can't be removed is logged and skipped.
pub fn remove_partials(dir: &Path) -> io::Result<usize> {
    remove_partials_except(dir, &[])
}

/// [`remove_partials`], sparing the temp files named in `keep` (downloads
/// to resume).
pub fn remove_partials_except(dir: &Path, keep: &[&str]) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(PARTIAL_PREFIX) || keep.contains(&name.as_ref()) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => continue,
            Ok(_) => {}
            Err(e) => {
                log::warn!("skipping {}: {e}", entry.path().display());
                continue;
            }
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => log::warn!("could not remove {}: {e}", entry.path().display()),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod commit_new_tests {
    use super::*;

    #[test]
    fn commit_new_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.txt"), b"theirs").unwrap();
        let mut p = PartialFile::create(dir.path()).unwrap();
        p.file().write_all(b"ours").unwrap();
        let err = p.commit_new("x.txt").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(dir.path().join("x.txt")).unwrap(), b"theirs");
        let name = p.commit_unique("x.txt").unwrap();
        assert_eq!(name, "x (2).txt");
        assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"ours");
        assert_eq!(
            remove_partials(dir.path()).unwrap(),
            0,
            "temp name unlinked"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::names_in;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn write_atomic_creates_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "m.json", b"one").unwrap();
        assert_eq!(fs::read(dir.path().join("m.json")).unwrap(), b"one");
        write_atomic(dir.path(), "m.json", b"two!").unwrap();
        assert_eq!(fs::read(dir.path().join("m.json")).unwrap(), b"two!");
        assert_eq!(names_in(dir.path()), vec!["m.json"]);
    }

    #[test]
    fn partial_file_commits_under_its_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialFile::create(dir.path()).unwrap();
        let name = p.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(PARTIAL_PREFIX));
        assert_eq!(name.len(), PARTIAL_PREFIX.len() + 16);
        p.file().write_all(b"data").unwrap();
        p.file().seek(SeekFrom::Start(0)).unwrap();
        let mut back = String::new();
        p.file().read_to_string(&mut back).unwrap();
        assert_eq!(back, "data");
        let path = p.commit("x.txt").unwrap();
        assert_eq!(path, dir.path().join("x.txt"));
        assert_eq!(fs::read(&path).unwrap(), b"data");
        assert_eq!(names_in(dir.path()), vec!["x.txt"]);
    }

    #[test]
    fn dropped_partial_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PartialFile::create(dir.path()).unwrap();
        p.file().write_all(b"half").unwrap();
        let path = p.path().to_path_buf();
        assert!(path.exists());
        drop(p);
        assert!(!path.exists());
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn commit_refuses_paths_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/b", "..", ".", ""] {
            let p = PartialFile::create(dir.path()).unwrap();
            assert!(p.commit(bad).is_err(), "{bad:?}");
        }
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn remove_partials_removes_only_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".partial-0011"), b"x").unwrap();
        fs::write(dir.path().join(".partial-ffee"), b"x").unwrap();
        fs::write(dir.path().join("keep.txt"), b"x").unwrap();
        fs::write(dir.path().join("_.partial-1"), b"x").unwrap();
        fs::create_dir(dir.path().join(".partial-dir")).unwrap();
        let kept = PartialFile::create(dir.path()).unwrap();
        std::mem::forget(kept); // as if the process had crashed
        assert_eq!(remove_partials(dir.path()).unwrap(), 3);
        assert_eq!(
            names_in(dir.path()),
            vec![".partial-dir", "_.partial-1", "keep.txt"]
        );
        assert_eq!(remove_partials(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn fsync_dir_works_on_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        fsync_dir(dir.path()).unwrap();
        assert!(fsync_dir(&dir.path().join("missing")).is_err());
    }
}
