//! The stats page's action token: 128 random bits, hex, in `http-token`
//! in the storage folder (mode 0600, written atomically), made at the
//! first start and reused after, so a page left open keeps working across
//! restarts. Only someone who can read the folder (or was shown the
//! address printed at start) can act from the page.

use super::atomic::PartialFile;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The token's file name in the storage folder (never shared: see
/// `names::is_reserved` and the folder scan).
pub const TOKEN_FILE: &str = "http-token";

/// Hex digits in a token (128 bits).
const TOKEN_HEX_LEN: usize = 32;

/// The folder's token: the one stored, or a new one stored now. A stored
/// file that is not a regular file, is readable by others, or does not
/// hold a token is replaced (it is ours: nobody else names that file).
pub fn load_or_create(dir: &Path) -> io::Result<String> {
    if let Some(token) = read_existing(dir)? {
        return Ok(token);
    }
    let token = new_token();
    let mut partial = PartialFile::create(dir)?;
    partial
        .file()
        .set_permissions(fs::Permissions::from_mode(0o600))?;
    partial.file().write_all(format!("{token}\n").as_bytes())?;
    partial.commit(TOKEN_FILE)?;
    Ok(token)
}

/// The stored token if the file is a private regular file holding one.
fn read_existing(dir: &Path) -> io::Result<Option<String>> {
    let path = dir.join(TOKEN_FILE);
    // O_NOFOLLOW: a symlink planted in its place is never read through.
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            log::warn!("{} is a symlink; making a new token", path.display());
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "{} is not a private regular file; making a new token",
            path.display()
        );
        return Ok(None);
    }
    let mut text = String::new();
    file.take(64).read_to_string(&mut text).ok();
    let token = text.trim();
    if token.len() == TOKEN_HEX_LEN && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Some(token.to_ascii_lowercase()))
    } else {
        log::warn!("{} holds no token; making a new one", path.display());
        Ok(None)
    }
}

/// 128 bits from the operating system's generator, as hex.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    faster_hex::hex_string(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_create(dir.path()).expect("token");
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = fs::metadata(dir.path().join(TOKEN_FILE))
            .expect("stored")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).expect("again"), first);
        let other = tempfile::tempdir().expect("temp dir");
        assert_ne!(load_or_create(other.path()).expect("token"), first);
    }

    #[test]
    fn a_symlink_or_a_readable_or_garbled_token_file_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("elsewhere");
        fs::write(&target, "00112233445566778899aabbccddeeff").expect("write");
        std::os::unix::fs::symlink(&target, dir.path().join(TOKEN_FILE)).expect("symlink");
        let token = load_or_create(dir.path()).expect("token");
        assert_ne!(token, "00112233445566778899aabbccddeeff");
        assert_eq!(
            fs::read_to_string(&target).expect("target"),
            "00112233445566778899aabbccddeeff",
            "the symlink's target is untouched"
        );
        let path = dir.path().join(TOKEN_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_ne!(load_or_create(dir.path()).expect("token"), token);
        fs::write(&path, "not a token").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let fresh = load_or_create(dir.path()).expect("token");
        assert_eq!(fresh.len(), 32);
    }
}
