//! Safe file names in the storage folder.
//!
//! Owns the rule that a name from the network (or from the user) is never a
//! path: [`sanitize_file_name`] turns any string into exactly one normal path
//! component that cannot collide with the folder's reserved names
//! (`metadata.json*`, `.partial-*`), and [`unique_name`] picks a free name in
//! a folder (`stem (2).ext`, `stem (3).ext`, ...).

use crate::storage::atomic::PARTIAL_PREFIX;
use crate::storage::lock::LOCK_FILE;
use crate::storage::metadata::METADATA_FILE;
use std::fs;
use std::io;
use std::path::{Component, Path};

/// Longest file name, in bytes, that the storage folder uses (the common
/// limit of Linux file systems).
pub const MAX_NAME_BYTES: usize = 255;

/// Longest extension kept intact when a long name is shortened.
const MAX_KEPT_EXT_BYTES: usize = 32;

/// How many `stem (n).ext` candidates [`unique_name`] tries before it falls
/// back to a random suffix.
const MAX_NUMBERED_TRIES: u32 = 10_000;

/// How many random-suffix candidates [`unique_name`] tries before it gives
/// up (a folder it can't inspect, or a name the file system refuses).
const MAX_RANDOM_TRIES: u32 = 64;

/// Turns a name from the network into one normal path component.
///
/// - only the last non-empty component is kept (split on `/` and `\`), so
///   `../../x` and `dir/x.txt` become `x` and `x.txt`;
/// - NUL and control characters become `_`;
/// - an empty name becomes `file`, `.` becomes `_`, `..` becomes `__`;
/// - reserved names get a `_` prefix: those starting with `.partial-` (temp
///   files) or `metadata.json` (the metadata file and its `.corrupt-*`
///   copies), e.g. `metadata.json` -> `_metadata.json`, and the folder
///   lock `.peershare.lock` -> `_.peershare.lock`, the page's token
///   `http-token` -> `_http-token`;
/// - the result is at most 255 bytes, cut on a UTF-8 character boundary and
///   keeping a short extension when there is one.
///
/// Names like `.bashrc` are kept. The function is idempotent.
pub fn sanitize_file_name(name: &str) -> String {
    let last = name
        .split(['/', '\\'])
        .rev()
        .find(|part| !part.is_empty())
        .unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let named = match cleaned.as_str() {
        "" => "file".to_string(),
        "." => "_".to_string(),
        ".." => "__".to_string(),
        _ if is_reserved(&cleaned) => format!("_{cleaned}"),
        _ => cleaned,
    };
    shorten(&named, MAX_NAME_BYTES)
}

/// Whether `name` is reserved for the storage folder's own files.
fn is_reserved(name: &str) -> bool {
    // The folder lock is opened for writing at start: a held file of that
    // name (from old metadata) would be truncated by it.
    // The page's token must never be shared, nor replaced by a download.
    name.starts_with(PARTIAL_PREFIX)
        || name.starts_with(METADATA_FILE)
        || name == LOCK_FILE
        || name == super::token::TOKEN_FILE
}

/// Whether `name` can be used as-is as a local file name in the storage
/// folder: one normal path component (no `/`, `\`, NUL), at most 255 bytes,
/// and not a reserved name. Weaker than "unchanged by
/// [`sanitize_file_name`]": control characters are allowed, since a file
/// already on disk may carry them.
pub fn is_safe_local_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.contains(['/', '\\', '\0'])
        && !is_reserved(name)
        && is_one_normal_component(name)
}

fn is_one_normal_component(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    )
}

/// Splits `name` into stem and extension (without the dot). A leading dot
/// (`.bashrc`) is part of the stem, not an extension separator.
fn split_ext(name: &str) -> (&str, Option<&str>) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    }
}

/// The longest prefix of `s` that fits in `max` bytes and ends on a
/// character boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cuts `name` to `max` bytes, keeping a short extension if it has one.
fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    if let (stem, Some(ext)) = split_ext(name) {
        if ext.len() <= MAX_KEPT_EXT_BYTES && ext.len() + 1 < max {
            let stem = truncate_bytes(stem, max - ext.len() - 1);
            if !stem.is_empty() {
                return format!("{stem}.{ext}");
            }
        }
    }
    truncate_bytes(name, max).to_string()
}

/// Joins `stem`, `suffix` and `ext` into a name of at most 255 bytes,
/// shortening the stem if needed.
fn with_suffix(stem: &str, suffix: &str, ext: Option<&str>) -> String {
    let ext_len = ext.map_or(0, |e| e.len() + 1);
    let room = MAX_NAME_BYTES.saturating_sub(suffix.len() + ext_len);
    let stem = truncate_bytes(stem, room);
    match ext {
        Some(ext) => format!("{stem}{suffix}.{ext}"),
        None => format!("{stem}{suffix}"),
    }
}

/// Whether `dir/name` is taken (anything there, even a dangling symlink; an
/// error other than "not found" counts as taken).
fn is_taken(dir: &Path, name: &str) -> bool {
    match fs::symlink_metadata(dir.join(name)) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// A free local name for `wanted` in `dir`: the sanitized name if nothing of
/// that name exists in `dir`, else `stem (2).ext`, `stem (3).ext`, ...
/// (always at most 255 bytes and a valid single component). An error when
/// no free name is found within a bounded number of tries (a folder that
/// can't be inspected: each `stat` failing other than "not found").
///
/// The name is free when checked; the caller commits with a rename soon
/// after (two concurrent imports of the same name in one folder could still
/// race).
pub fn unique_name(dir: &Path, wanted: &str) -> io::Result<String> {
    let base = sanitize_file_name(wanted);
    if !is_taken(dir, &base) {
        return Ok(base);
    }
    let (stem, ext) = split_ext(&base);
    for n in 2..=MAX_NUMBERED_TRIES {
        let candidate = with_suffix(stem, &format!(" ({n})"), ext);
        if !is_taken(dir, &candidate) {
            return Ok(candidate);
        }
    }
    // Pathological folder: a random suffix, a bounded number of times.
    for _ in 0..MAX_RANDOM_TRIES {
        let suffix = format!(" ({})", faster_hex::hex_string(&rand::random::<[u8; 8]>()));
        let candidate = with_suffix(stem, &suffix, ext);
        if !is_taken(dir, &candidate) {
            return Ok(candidate);
        }
    }
    // The last check's own error says why (e.g. a folder we may not read).
    let why = fs::symlink_metadata(dir.join(&base)).err().map_or_else(
        || "every name tried is taken".to_string(),
        |e| e.to_string(),
    );
    Err(io::Error::other(format!(
        "no free name for {base} in {}: {why}",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assert_single_component(r: &str) {
        assert!(!r.is_empty());
        assert!(r.len() <= MAX_NAME_BYTES, "{} bytes", r.len());
        let comps: Vec<_> = Path::new(r).components().collect();
        assert_eq!(comps.len(), 1, "{r:?}");
        assert!(matches!(comps[0], Component::Normal(_)), "{r:?}");
        assert!(!r.contains(['/', '\\', '\0']), "{r:?}");
        assert!(!r.chars().any(char::is_control), "{r:?}");
    }

    #[test]
    fn paths_keep_only_the_last_component() {
        assert_eq!(sanitize_file_name("../../x"), "x");
        assert_eq!(sanitize_file_name("a/b"), "b");
        assert_eq!(sanitize_file_name("dir/x.txt"), "x.txt");
        assert_eq!(sanitize_file_name("C:\\Users\\me\\x.txt"), "x.txt");
        assert_eq!(sanitize_file_name("/etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("dir/"), "dir");
    }

    #[test]
    fn dots_and_empty_become_safe_names() {
        assert_eq!(sanitize_file_name(".."), "__");
        assert_eq!(sanitize_file_name("."), "_");
        assert_eq!(sanitize_file_name(""), "file");
        assert_eq!(sanitize_file_name("///"), "file");
        assert_eq!(sanitize_file_name("x/.."), "__");
        for r in ["..", ".", "", "x/..", "///"] {
            assert_single_component(&sanitize_file_name(r));
        }
    }

    #[test]
    fn hidden_names_are_kept_but_reserved_ones_changed() {
        assert_eq!(sanitize_file_name(".bashrc"), ".bashrc");
        assert_eq!(sanitize_file_name(".partial-abc"), "_.partial-abc");
        assert_eq!(sanitize_file_name("metadata.json"), "_metadata.json");
        assert_eq!(
            sanitize_file_name("metadata.json.corrupt-1"),
            "_metadata.json.corrupt-1"
        );
        assert_eq!(sanitize_file_name("x/metadata.json"), "_metadata.json");
        assert_eq!(sanitize_file_name("mymetadata.json"), "mymetadata.json");
    }

    #[test]
    fn control_chars_become_underscores() {
        assert_eq!(sanitize_file_name("a\0b\nc\x7f.txt"), "a_b_c_.txt");
    }

    #[test]
    fn ten_kilobyte_name_is_capped_keeping_extension() {
        let long = format!("{}.txt", "é".repeat(5000));
        let r = sanitize_file_name(&long);
        assert_single_component(&r);
        assert!(r.ends_with(".txt"));
        assert!(r.len() > 250);
        let plain = "x".repeat(10_240);
        let r = sanitize_file_name(&plain);
        assert_eq!(r.len(), MAX_NAME_BYTES);
    }

    #[test]
    fn unique_name_numbers_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(unique_name(dir.path(), "a.txt").unwrap(), "a.txt");
        fs::write(dir.path().join("a.txt"), b"1").unwrap();
        assert_eq!(unique_name(dir.path(), "dir/a.txt").unwrap(), "a (2).txt");
        fs::write(dir.path().join("a (2).txt"), b"2").unwrap();
        assert_eq!(unique_name(dir.path(), "a.txt").unwrap(), "a (3).txt");
        fs::write(dir.path().join(".bashrc"), b"").unwrap();
        assert_eq!(unique_name(dir.path(), ".bashrc").unwrap(), ".bashrc (2)");
        fs::write(dir.path().join("noext"), b"").unwrap();
        assert_eq!(unique_name(dir.path(), "noext").unwrap(), "noext (2)");
    }

    #[test]
    fn unique_name_of_a_long_name_stays_short() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}.bin", "ü".repeat(300));
        let first = unique_name(dir.path(), &long).unwrap();
        fs::write(dir.path().join(&first), b"").unwrap();
        let second = unique_name(dir.path(), &long).unwrap();
        assert_ne!(first, second);
        assert_single_component(&second);
        assert!(second.ends_with(" (2).bin"), "{second}");
    }

    #[test]
    fn safe_local_names() {
        assert!(is_safe_local_name("x.txt"));
        assert!(is_safe_local_name(".bashrc"));
        assert!(!is_safe_local_name("../x"));
        assert!(!is_safe_local_name(".."));
        assert!(!is_safe_local_name("."));
        assert!(!is_safe_local_name(""));
        assert!(!is_safe_local_name("metadata.json"));
        assert!(!is_safe_local_name(".partial-1"));
        assert!(!is_safe_local_name(".peershare.lock"));
        assert_eq!(sanitize_file_name(".peershare.lock"), "_.peershare.lock");
        // The page's token is never replaced by a download named like it.
        assert!(!is_safe_local_name("http-token"));
        assert_eq!(sanitize_file_name("http-token"), "_http-token");
    }

    #[test]
    fn unique_name_gives_up_with_an_error_when_every_check_fails() {
        let dir = tempfile::tempdir().unwrap();
        // A "folder" that is a file: every stat fails with ENOTDIR, so every
        // name looks taken; the search ends instead of looping forever.
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let e = unique_name(&file, "a.txt").unwrap_err();
        assert!(e.to_string().contains("no free name"), "{e}");
    }

    proptest! {
        #[test]
        fn any_string_sanitizes_to_one_normal_component(s in any::<String>()) {
            let r = sanitize_file_name(&s);
            assert_single_component(&r);
            prop_assert!(is_safe_local_name(&r));
            prop_assert_eq!(sanitize_file_name(&r), r.clone());
        }

        #[test]
        fn path_like_strings_sanitize_safely(
            s in "[./\\\\a\u{0}\n é]{0,40}",
            n in 0usize..600,
        ) {
            let long = format!("{}{}", "ab/".repeat(n), s);
            let r = sanitize_file_name(&long);
            assert_single_component(&r);
            prop_assert_eq!(sanitize_file_name(&r), r.clone());
        }
    }
}
