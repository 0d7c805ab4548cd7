//! Copies out of the storage folder to a place the user named (`get <id>
//! DEST`), without ever destroying anything.
//!
//! Owns the rules for DEST:
//! - DEST an existing folder (or a symlink to one): the copy goes in it
//!   under a safe name made from the network's name that never starts with
//!   `.`; a name already taken gets a free one (`name (2).ext`), as browsers
//!   do. Nothing in the folder is ever replaced.
//! - DEST an existing regular file: refused unless the user said `--force`;
//!   with it, the file is replaced whole (temp file, rename), after a last
//!   `lstat` that it is still a regular file.
//! - DEST anything else that exists (device, FIFO, socket, symlink to a
//!   non-folder): always refused, never opened, never followed.
//! - DEST in the storage folder (its folder, once symlinks are resolved, is
//!   the storage folder or inside it): always refused.
//! - A new file is linked into place without replacing (`renameat2` with
//!   `RENAME_NOREPLACE`, or `link` + `unlink`), so a file that appears at
//!   DEST meanwhile is kept.
//!
//! [`check_dest`] applies the rules before a download starts; [`export`]
//! applies them again when copying, so a DEST changed meanwhile is caught.
//! All of it blocking: the caller runs it off the event loop.

use crate::storage::atomic::PartialFile;
use crate::storage::names::{sanitize_file_name, MAX_NAME_BYTES};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// What DEST is, when it is something we never write to or through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// A FIFO (named pipe).
    Fifo,
    /// A character device (`/dev/null`, a terminal).
    CharDevice,
    /// A block device (a disk).
    BlockDevice,
    /// A Unix socket.
    Socket,
    /// A symbolic link to something that is not a folder (or to nothing).
    Symlink,
    /// Anything else that is not a regular file.
    Other,
}

impl fmt::Display for Special {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Special::Fifo => "a FIFO",
            Special::CharDevice => "a character device",
            Special::BlockDevice => "a block device",
            Special::Socket => "a socket",
            Special::Symlink => "a symbolic link",
            Special::Other => "not a regular file",
        })
    }
}

/// Why a copy to DEST is not made. Its Display is the menu line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A regular file is there and the user did not say `--force`.
    Exists(PathBuf),
    /// Something we never replace nor write through is there.
    Special(PathBuf, Special),
    /// DEST is in the storage folder.
    InStorage(PathBuf),
    /// DEST's folder does not exist (or is not a folder).
    NoFolder(PathBuf),
    /// DEST names no file (`..`, `/`, a path ending in `/` that is not a
    /// folder).
    NoName(PathBuf),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Exists(p) => {
                write!(f, "get: {} exists; add --force to replace it", p.display())
            }
            Refusal::Special(p, what) => write!(
                f,
                "get: {} is {what}; refusing to replace it or write through it",
                p.display()
            ),
            Refusal::InStorage(p) => write!(
                f,
                "get: {} is in the storage folder; choose a destination outside it",
                p.display()
            ),
            Refusal::NoFolder(p) => write!(f, "get: the folder {} does not exist", p.display()),
            Refusal::NoName(p) => write!(f, "get: {} does not name a file", p.display()),
        }
    }
}

/// How a copy out ended. Its Display is the menu line.
#[derive(Debug)]
pub enum ExportOutcome {
    /// A new file was created.
    Copied {
        /// The file's name on the network.
        file_name: String,
        /// Where the copy is.
        to: PathBuf,
    },
    /// An existing regular file was replaced (the user said `--force`).
    Replaced {
        /// The file's name on the network.
        file_name: String,
        /// The replaced file.
        to: PathBuf,
    },
    /// Nothing was written.
    Refused(Refusal),
    /// Reading, writing or linking failed; nothing is left at DEST.
    Failed {
        /// The file's name on the network.
        file_name: String,
        /// DEST as given.
        dest: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
}

impl fmt::Display for ExportOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportOutcome::Copied { file_name, to } => {
                write!(f, "get: copied {file_name} to {}", to.display())
            }
            ExportOutcome::Replaced { file_name, to } => {
                write!(f, "get: replaced {} with {file_name}", to.display())
            }
            ExportOutcome::Refused(r) => r.fmt(f),
            ExportOutcome::Failed {
                file_name,
                dest,
                error,
            } => write!(
                f,
                "get: cannot copy {file_name} to {}: {error}",
                dest.display()
            ),
        }
    }
}

/// Where a copy goes, once DEST is judged.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Into this folder (canonical), under a free name.
    IntoFolder(PathBuf),
    /// A new file `name` in `folder` (canonical); nothing there now.
    Create { folder: PathBuf, name: PathBuf },
    /// Replace the regular file `name` in `folder` (canonical).
    Replace { folder: PathBuf, name: PathBuf },
}

/// The name a copy gets in a folder: the network's name made safe
/// (one path component, see [`sanitize_file_name`]) and never hidden:
/// leading dots are dropped; if nothing is left, the file id's first 16
/// characters (as `file-<id>`) stand in.
pub fn export_name(file_name: &str, file_id: &str) -> String {
    let safe = sanitize_file_name(file_name);
    let visible = safe.trim_start_matches('.');
    if !visible.is_empty() && visible != "_" && visible != "__" {
        return visible.to_string();
    }
    let id: String = file_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    let name = if id.is_empty() {
        "file".to_string()
    } else {
        format!("file-{id}")
    };
    // Ids are short: well within the limit, but keep the promise anyway.
    name.chars().take(MAX_NAME_BYTES).collect()
}

/// What is at `path`, without following a final symlink.
fn special_kind(t: fs::FileType) -> Special {
    if t.is_fifo() {
        Special::Fifo
    } else if t.is_char_device() {
        Special::CharDevice
    } else if t.is_block_device() {
        Special::BlockDevice
    } else if t.is_socket() {
        Special::Socket
    } else if t.is_symlink() {
        Special::Symlink
    } else {
        Special::Other
    }
}

/// Whether `folder` (canonical) is the storage folder or inside it.
fn in_storage(folder: &Path, storage: &Path) -> bool {
    match fs::canonicalize(storage) {
        Ok(s) => folder.starts_with(&s),
        // A storage folder we can't resolve: compare as given.
        Err(_) => folder.starts_with(storage),
    }
}

/// A folder, resolved; refused if it is missing or in the storage folder.
fn resolve_folder(folder: &Path, dest: &Path, storage: &Path) -> Result<PathBuf, Refusal> {
    let canonical = match fs::canonicalize(folder) {
        Ok(c) if c.is_dir() => c,
        _ => return Err(Refusal::NoFolder(folder.to_path_buf())),
    };
    if in_storage(&canonical, storage) {
        return Err(Refusal::InStorage(dest.to_path_buf()));
    }
    Ok(canonical)
}

/// Judges DEST: where the copy would go, or why it must not be made.
fn plan(dest: &Path, storage: &Path, force: bool) -> Result<Plan, Refusal> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => Ok(Plan::IntoFolder(resolve_folder(dest, dest, storage)?)),
        // A symlink to a folder is that folder (`~/Downloads` often is
        // one); a symlink to anything else is never followed.
        Ok(meta) if meta.file_type().is_symlink() => match fs::metadata(dest) {
            Ok(target) if target.is_dir() => {
                Ok(Plan::IntoFolder(resolve_folder(dest, dest, storage)?))
            }
            _ => Err(Refusal::Special(dest.to_path_buf(), Special::Symlink)),
        },
        Ok(meta) if meta.is_file() => {
            let (folder, name) = split(dest)?;
            let folder = resolve_folder(&folder, dest, storage)?;
            if !force {
                return Err(Refusal::Exists(dest.to_path_buf()));
            }
            Ok(Plan::Replace { folder, name })
        }
        Ok(meta) => Err(Refusal::Special(
            dest.to_path_buf(),
            special_kind(meta.file_type()),
        )),
        Err(_) => {
            // Nothing there (or nothing we can see): a new file, if its
            // folder exists. `out/` for a missing folder names no file.
            if dest.as_os_str().to_string_lossy().ends_with('/') {
                return Err(Refusal::NoFolder(dest.to_path_buf()));
            }
            let (folder, name) = split(dest)?;
            let folder = resolve_folder(&folder, dest, storage)?;
            Ok(Plan::Create { folder, name })
        }
    }
}

/// DEST's folder (`.` for a bare name) and its last component.
fn split(dest: &Path) -> Result<(PathBuf, PathBuf), Refusal> {
    let name = match dest.components().next_back() {
        Some(std::path::Component::Normal(n)) => PathBuf::from(n),
        _ => return Err(Refusal::NoName(dest.to_path_buf())),
    };
    let folder = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((folder, name))
}

/// Checks DEST before a download starts: `Ok` if a copy could be made
/// there now (with `force` as the user gave it), else the refusal to show.
pub fn check_dest(dest: &Path, storage: &Path, force: bool) -> Result<(), Refusal> {
    plan(dest, storage, force).map(|_| ())
}

/// Copies the stored file `src` to DEST following the module's rules.
/// `file_name` is the file's name on the network (for the menu line);
/// `name_in_folder` is the name used when DEST is a folder (see
/// [`export_name`]).
pub fn export(
    src: &Path,
    storage: &Path,
    dest: &Path,
    file_name: &str,
    name_in_folder: &str,
    force: bool,
) -> ExportOutcome {
    let failed = |error: io::Error| ExportOutcome::Failed {
        file_name: file_name.to_string(),
        dest: dest.to_path_buf(),
        error,
    };
    let plan = match plan(dest, storage, force) {
        Ok(p) => p,
        Err(r) => return ExportOutcome::Refused(r),
    };
    let folder = match &plan {
        Plan::IntoFolder(f) | Plan::Create { folder: f, .. } | Plan::Replace { folder: f, .. } => {
            f.clone()
        }
    };
    let mut partial = match copy_to_temp(src, &folder) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    match plan {
        Plan::IntoFolder(folder) => match partial.commit_unique(name_in_folder) {
            Ok(name) => ExportOutcome::Copied {
                file_name: file_name.to_string(),
                to: folder.join(name),
            },
            Err(e) => failed(e),
        },
        Plan::Create { folder, name } => {
            let Some(name_str) = name.to_str() else {
                return failed(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the name is not valid UTF-8",
                ));
            };
            match partial.commit_new(name_str) {
                Ok(_) => ExportOutcome::Copied {
                    file_name: file_name.to_string(),
                    to: folder.join(name),
                },
                // Something appeared at DEST meanwhile: it is kept.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    ExportOutcome::Refused(Refusal::Exists(dest.to_path_buf()))
                }
                Err(e) => failed(e),
            }
        }
        Plan::Replace { folder, name } => {
            let target = folder.join(&name);
            // Last look, just before the rename: only a regular file is
            // ever replaced (a rename replaces the entry, never writes
            // through it, so a symlink swapped in now is replaced, not
            // followed).
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_file() => {}
                Ok(m) => {
                    return ExportOutcome::Refused(Refusal::Special(
                        dest.to_path_buf(),
                        special_kind(m.file_type()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return failed(e),
            }
            match partial.commit_os(name.as_os_str()) {
                Ok(_) => ExportOutcome::Replaced {
                    file_name: file_name.to_string(),
                    to: target,
                },
                Err(e) => failed(e),
            }
        }
    }
}

/// Copies `src` (which must be a regular file: checked without following
/// links, before opening) into a temp file in `folder`.
fn copy_to_temp(src: &Path, folder: &Path) -> io::Result<PartialFile> {
    if !fs::symlink_metadata(src)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", src.display()),
        ));
    }
    let mut input = File::open(src)?;
    let mut partial = PartialFile::create(folder)?;
    io::copy(&mut input, partial.file())?;
    Ok(partial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::names_in;
    use std::os::unix::fs::symlink;

    struct Setup {
        _tmp: tempfile::TempDir,
        storage: PathBuf,
        out: PathBuf,
        src: PathBuf,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let storage = tmp.path().join("storage");
        let out = tmp.path().join("out");
        fs::create_dir_all(&storage).unwrap();
        fs::create_dir_all(&out).unwrap();
        let src = storage.join("stored.bin");
        fs::write(&src, b"new contents").unwrap();
        Setup {
            _tmp: tmp,
            storage,
            out,
            src,
        }
    }

    fn run(s: &Setup, dest: &Path, force: bool) -> ExportOutcome {
        export(&s.src, &s.storage, dest, "net.bin", "net.bin", force)
    }

    #[test]
    fn a_new_file_is_created_and_the_line_says_where() {
        let s = setup();
        let dest = s.out.join("mine.bin");
        let outcome = run(&s, &dest, false);
        assert!(matches!(outcome, ExportOutcome::Copied { .. }), "{outcome}");
        assert_eq!(fs::read(&dest).unwrap(), b"new contents");
        assert!(outcome.to_string().starts_with("get: copied net.bin to "));
        assert_eq!(names_in(&s.out), vec!["mine.bin"]);
    }

    #[test]
    fn an_existing_file_is_kept_without_force_and_replaced_with_it() {
        let s = setup();
        let dest = s.out.join("mine.bin");
        fs::write(&dest, b"the user's bytes").unwrap();
        let outcome = run(&s, &dest, false);
        assert_eq!(
            outcome.to_string(),
            format!("get: {} exists; add --force to replace it", dest.display())
        );
        assert_eq!(fs::read(&dest).unwrap(), b"the user's bytes");
        assert_eq!(
            check_dest(&dest, &s.storage, false),
            Err(Refusal::Exists(dest.clone()))
        );
        assert_eq!(check_dest(&dest, &s.storage, true), Ok(()));

        let outcome = run(&s, &dest, true);
        assert!(
            matches!(outcome, ExportOutcome::Replaced { .. }),
            "{outcome}"
        );
        assert_eq!(fs::read(&dest).unwrap(), b"new contents");
        assert_eq!(names_in(&s.out), vec!["mine.bin"]);
    }

    #[test]
    fn a_fifo_is_refused_even_with_force_and_never_opened() {
        let s = setup();
        let fifo = s.out.join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !status.is_ok_and(|st| st.success()) {
            eprintln!("skipped: mkfifo is not available here");
            return;
        }
        for force in [false, true] {
            // Opening the FIFO for writing would block this test forever.
            let outcome = run(&s, &fifo, force);
            assert_eq!(
                outcome.to_string(),
                format!(
                    "get: {} is a FIFO; refusing to replace it or write through it",
                    fifo.display()
                )
            );
        }
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(names_in(&s.out), vec!["pipe"]);
    }

    #[test]
    fn dev_null_is_refused_as_a_character_device() {
        let s = setup();
        let outcome = run(&s, Path::new("/dev/null"), true);
        assert!(
            matches!(
                outcome,
                ExportOutcome::Refused(Refusal::Special(_, Special::CharDevice))
            ),
            "{outcome}"
        );
        assert!(fs::symlink_metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[test]
    fn a_symlink_to_a_file_is_never_followed_nor_replaced() {
        let s = setup();
        let target = s.out.join("target.txt");
        fs::write(&target, b"precious").unwrap();
        let link = s.out.join("link.txt");
        symlink(&target, &link).unwrap();
        let dangling = s.out.join("dangling");
        symlink(s.out.join("nothing-here"), &dangling).unwrap();
        for dest in [&link, &dangling] {
            for force in [false, true] {
                let outcome = run(&s, dest, force);
                assert!(
                    matches!(
                        outcome,
                        ExportOutcome::Refused(Refusal::Special(_, Special::Symlink))
                    ),
                    "{outcome}"
                );
            }
        }
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(!s.out.join("nothing-here").exists());
    }

    #[test]
    fn a_symlink_to_a_folder_is_that_folder() {
        let s = setup();
        let link = s.out.join("downloads");
        let real = s.out.join("real");
        fs::create_dir(&real).unwrap();
        symlink(&real, &link).unwrap();
        let outcome = run(&s, &link, false);
        assert!(matches!(outcome, ExportOutcome::Copied { .. }), "{outcome}");
        assert_eq!(fs::read(real.join("net.bin")).unwrap(), b"new contents");
    }

    #[test]
    fn the_storage_folder_is_refused_by_any_path() {
        let s = setup();
        let link = s.out.join("to-storage");
        symlink(&s.storage, &link).unwrap();
        let sub = s.storage.join("sub");
        fs::create_dir(&sub).unwrap();
        let dotted = s.out.join("..").join("storage").join("x.bin");
        for (dest, force) in [
            (s.storage.clone(), false),
            (s.storage.join("stored.bin"), true),
            (s.storage.join("fresh.bin"), false),
            (link.clone(), false),
            (link.join("fresh.bin"), false),
            (sub.clone(), false),
            (dotted, false),
        ] {
            let outcome = run(&s, &dest, force);
            assert!(
                matches!(outcome, ExportOutcome::Refused(Refusal::InStorage(_))),
                "{}: {outcome}",
                dest.display()
            );
            assert!(outcome.to_string().contains("storage folder"));
        }
        assert_eq!(fs::read(&s.src).unwrap(), b"new contents");
        assert_eq!(names_in(&s.storage), vec!["stored.bin", "sub"]);
        assert!(names_in(&sub).is_empty());
    }

    #[test]
    fn a_folder_gets_a_free_visible_name_and_nothing_in_it_is_replaced() {
        let s = setup();
        fs::write(s.out.join("report.pdf"), b"older").unwrap();
        let name = export_name("report.pdf", "abc");
        let outcome = export(&s.src, &s.storage, &s.out, "report.pdf", &name, true);
        assert!(matches!(outcome, ExportOutcome::Copied { .. }), "{outcome}");
        assert_eq!(fs::read(s.out.join("report.pdf")).unwrap(), b"older");
        assert_eq!(
            fs::read(s.out.join("report (2).pdf")).unwrap(),
            b"new contents"
        );

        let hidden = export_name(".bashrc", "abc");
        assert_eq!(hidden, "bashrc");
        export(&s.src, &s.storage, &s.out, ".bashrc", &hidden, false);
        assert_eq!(
            names_in(&s.out),
            vec!["bashrc", "report (2).pdf", "report.pdf"]
        );
    }

    #[test]
    fn export_names_are_never_hidden_nor_paths() {
        assert_eq!(
            export_name("../../.ssh/authorized_keys", "f0"),
            "authorized_keys"
        );
        assert_eq!(export_name("...profile", "f0"), "profile");
        assert_eq!(
            export_name("..", "a1b2c3d4e5f6a7b8c9d0"),
            "file-a1b2c3d4e5f6a7b8"
        );
        assert_eq!(export_name(".", "a1b2"), "file-a1b2");
        assert_eq!(export_name("...", "a1b2"), "file-a1b2");
        assert_eq!(export_name("", "../"), "file");
        assert_eq!(export_name("x.txt", "a1"), "x.txt");
        for n in ["..", ".", "...", ".x", "a/.b", "\n.y"] {
            let e = export_name(n, "id");
            assert!(!e.starts_with('.') && !e.contains('/'), "{n:?} -> {e:?}");
        }
    }

    #[test]
    fn missing_folders_and_nameless_paths_are_refused() {
        let s = setup();
        let missing = s.out.join("no").join("such.bin");
        assert!(matches!(
            run(&s, &missing, false),
            ExportOutcome::Refused(Refusal::NoFolder(_))
        ));
        let slash = PathBuf::from(format!("{}/newdir/", s.out.display()));
        assert!(matches!(
            run(&s, &slash, false),
            ExportOutcome::Refused(Refusal::NoFolder(_))
        ));
        assert!(matches!(
            run(&s, &s.out.join("x").join(".."), false),
            ExportOutcome::Refused(_)
        ));
        assert_eq!(names_in(&s.out), Vec::<String>::new());
    }

    #[test]
    fn a_missing_source_fails_and_leaves_nothing() {
        let s = setup();
        fs::remove_file(&s.src).unwrap();
        let outcome = run(&s, &s.out.join("x.bin"), false);
        assert!(matches!(outcome, ExportOutcome::Failed { .. }), "{outcome}");
        assert!(names_in(&s.out).is_empty());
    }
}
