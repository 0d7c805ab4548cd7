//! The regular files directly in a user's folder (`push <dir>`): no
//! recursion; folders, symlinks and special files are counted, not
//! followed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Files one `push <dir>` takes at most; the rest are counted as skipped.
pub const MAX_DIR_FILES: usize = 256;

/// The regular files directly in `dir`, sorted by name (at most
/// [`MAX_DIR_FILES`]), and how many entries were skipped.
pub fn regular_files_in(dir: &Path) -> io::Result<(Vec<PathBuf>, usize)> {
    let mut files = Vec::new();
    let mut skipped = 0;
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else {
            skipped += 1;
            continue;
        };
        // `file_type` does not follow symlinks: a link is skipped.
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if regular && files.len() < MAX_DIR_FILES {
            files.push(entry.path());
        } else {
            skipped += 1;
        }
    }
    files.sort();
    Ok((files, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_directly_inside_are_taken() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        fs::write(d.join("b.txt"), b"b").expect("write");
        fs::write(d.join("a.txt"), b"a").expect("write");
        fs::create_dir(d.join("sub")).expect("mkdir");
        fs::write(d.join("sub").join("deep.txt"), b"x").expect("write");
        std::os::unix::fs::symlink(d.join("a.txt"), d.join("link.txt")).expect("symlink");
        let (files, skipped) = regular_files_in(d).expect("listed");
        assert_eq!(files, vec![d.join("a.txt"), d.join("b.txt")]);
        assert_eq!(skipped, 2, "the folder and the symlink");
    }
}
