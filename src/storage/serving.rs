//! Opening a held file to serve it, so that a file changed on disk never
//! harms the peer nor reaches a client under an id it doesn't hash to.
//!
//! Owns the mechanism (the core decides what a change means):
//! - [`FileStamp`]: size, times and inode of a held file, taken when it was
//!   last verified, compared at start-up and at each serve;
//! - [`open_for_serving`]: opens the file and takes a read lease
//!   (`F_SETLEASE`, Linux): no one may then open it for writing or
//!   truncate it without the kernel first telling us (SIGIO) and holding
//!   the writer back until we let go. Only a leased file on a local
//!   filesystem is mapped ([`LeasedFile`], owning the map and the lease);
//!   the driver drops it when [`LeasedMap::breaking`] says a writer waits;
//! - [`CheckedReader`]: a file that can't be leased (open for writing
//!   elsewhere, a filesystem without leases, or a network or FUSE one whose
//!   leases only see local writers) is read with `pread` and
//!   hashed as it goes: a shrink is a short read, and bytes that no longer
//!   hash to the id keep the message from being closed;
//! - [`reverify`]: hashing a changed file again, off the loop.

use crate::ids::FileId;
use crate::protocol::encoder::{ChunkReader, LeasedMap};
use crate::protocol::message::Timestamp;
use crate::storage::hashing::{hash_reader, FileHasher};
use serde_json::{Map, Value};
use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

/// What tells a held file's bytes apart from what they were when last
/// verified, without reading them: a write changes the times (the change
/// time can't be set back by the user), a copy-over-by-rename the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    /// Length in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Device.
    pub dev: u64,
}

impl FileStamp {
    /// The stamp of a file's metadata (as from `fstat`).
    pub fn of(meta: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Self {
            len: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// The stamp of the file at `path` (not following a symlink).
    pub fn read(path: &Path) -> io::Result<Self> {
        std::fs::symlink_metadata(path).map(|m| Self::of(&m))
    }

    /// As stored in `metadata.json` (numbers as decimal text, which no
    /// JSON reader rounds).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("size".into(), Value::String(self.len.to_string()));
        m.insert("mtime_ns".into(), Value::String(self.mtime_ns.to_string()));
        m.insert("ctime_ns".into(), Value::String(self.ctime_ns.to_string()));
        m.insert("inode".into(), Value::String(self.ino.to_string()));
        m.insert("device".into(), Value::String(self.dev.to_string()));
        Value::Object(m)
    }

    /// Reads [`FileStamp::to_value`]'s form; None for anything else.
    pub fn from_value(v: &Value) -> Option<Self> {
        let Value::Object(m) = v else {
            return None;
        };
        let field = |k: &str| match m.get(k) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        Some(Self {
            len: field("size")?.parse().ok()?,
            mtime_ns: field("mtime_ns")?.parse().ok()?,
            ctime_ns: field("ctime_ns")?.parse().ok()?,
            ino: field("inode")?.parse().ok()?,
            dev: field("device")?.parse().ok()?,
        })
    }
}

/// Whether serving may take read leases. Fault injection for the
/// integration tests (debug builds only, so never in a release binary):
/// `PEERSHARE_TEST_NO_LEASES=1` serves every file through [`CheckedReader`].
pub fn leases_enabled() -> bool {
    #[cfg(debug_assertions)]
    if std::env::var_os("PEERSHARE_TEST_NO_LEASES").is_some_and(|v| v == "1") {
        return false;
    }
    true
}

/// A held file opened for serving.
pub enum Opened {
    /// Under a read lease: safe to map.
    Leased(ReadLease),
    /// No lease could be taken (why): read it with [`CheckedReader`].
    Unleased(File, io::Error),
}

impl Opened {
    /// The open file.
    pub fn file(&self) -> &File {
        match self {
            Opened::Leased(l) => &l.file,
            Opened::Unleased(f, _) => f,
        }
    }
}

/// Opens `path` read-only for serving, with a read lease if `lease`, and
/// returns it with its stamp taken after the lease (so a write before the
/// lease shows in the stamp, and none can come after it unannounced).
/// Refuses anything but a regular file (a symlink, FIFO or device put in
/// the folder is never read through).
pub fn open_for_serving(path: &Path, lease: bool) -> io::Result<(Opened, FileStamp)> {
    let file = open_regular(path)?;
    let opened = if lease && !is_local_fs(&file) {
        Opened::Unleased(
            file,
            io::Error::other("a network or FUSE filesystem (its leases see only local writers)"),
        )
    } else if lease {
        match ReadLease::take(file) {
            Ok(l) => Opened::Leased(l),
            Err((f, e)) => Opened::Unleased(f, e),
        }
    } else {
        Opened::Unleased(file, io::Error::other("leases are disabled"))
    };
    let stamp = FileStamp::of(&opened.file().metadata()?);
    Ok((opened, stamp))
}

/// Whether an error opening or reading a held file means the file itself
/// changed (gone, a symlink put in its place, no longer a regular file),
/// rather than a passing failure of ours (EMFILE, ENFILE, ENOMEM, EIO...),
/// which says nothing about its bytes.
pub fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || e.raw_os_error() == Some(libc::ELOOP)
        || e.raw_os_error() == Some(libc::ENOTDIR)
        || e.get_ref().is_some_and(|r| r.is::<NotRegular>())
}

/// The error for a path that is not a regular file.
#[derive(Debug)]
struct NotRegular;

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a regular file")
    }
}

impl std::error::Error for NotRegular {}

/// Filesystems whose files may change without breaking a local lease
/// (another machine, or a FUSE daemon, writes them): NFS, SMB/CIFS/SMB2,
/// FUSE, 9p, Ceph, AFS. A mapped file there could shrink under us.
const REMOTE_FS_MAGIC: [u32; 8] = [
    0x6969,      // NFS_SUPER_MAGIC
    0x517B,      // SMB_SUPER_MAGIC
    0xFF53_4D42, // CIFS_MAGIC_NUMBER
    0xFE53_4D42, // SMB2_MAGIC_NUMBER
    0x6573_5546, // FUSE_SUPER_MAGIC
    0x0102_1997, // V9FS_MAGIC
    0x00C3_6400, // CEPH_SUPER_MAGIC
    0x5346_414F, // AFS_SUPER_MAGIC
];

/// Whether a filesystem of type `magic` (`statfs.f_type`) may be mapped
/// under a lease.
fn lease_guards_fs(magic: u32) -> bool {
    !REMOTE_FS_MAGIC.contains(&magic)
}

/// Whether `file` is on a filesystem whose leases guard it (see
/// [`REMOTE_FS_MAGIC`]); false when that can't be told.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn is_local_fs(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs on a descriptor we own, writing into a buffer of the
    // right type; read only when it succeeded.
    let r = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if r != 0 {
        return false;
    }
    // SAFETY: fstatfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The magic numbers fit in 32 bits; f_type's width varies by target.
    #[allow(clippy::unnecessary_cast)]
    lease_guards_fs(st.f_type as u32)
}

#[cfg(not(target_os = "linux"))]
fn is_local_fs(_file: &File) -> bool {
    false
}

/// Opens `path` read-only if it is a regular file.
fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO would block the loop on open; a symlink is refused.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, NotRegular));
    }
    Ok(file)
}

/// A read lease on an open file, released (after the caller's map of it is
/// dropped) when this is dropped.
pub struct ReadLease {
    file: File,
}

impl ReadLease {
    /// Takes a read lease on `file`; gives the file back with the reason
    /// when the kernel refuses (EAGAIN: open for writing somewhere; EACCES:
    /// not our file; EINVAL: a filesystem without leases).
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    pub fn take(file: File) -> Result<Self, (File, io::Error)> {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor we own, with integer arguments only.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
        if r == -1 {
            return Err((file, io::Error::last_os_error()));
        }
        Ok(Self { file })
    }

    /// Leases are Linux-only: elsewhere every file is read and checked.
    #[cfg(not(target_os = "linux"))]
    pub fn take(file: File) -> Result<Self, (File, io::Error)> {
        Err((file, io::ErrorKind::Unsupported.into()))
    }

    /// The leased file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ReadLease {
    /// Whether a writer waits. While a break is pending `F_GETLEASE`
    /// reports the type the lease is being broken to (`F_UNLCK` for a
    /// writer); an error counts as broken.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    pub fn breaking(&self) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor we own, with integer arguments only.
        let r = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETLEASE) };
        r != libc::F_RDLCK
    }

    #[cfg(not(target_os = "linux"))]
    pub fn breaking(&self) -> bool {
        true
    }
}

impl Drop for ReadLease {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // Explicit: closing the descriptor alone would keep the lease (and
        // the writer waiting) while any other reference to the open file
        // lives on.
        // SAFETY: fcntl on a descriptor we own, with integer arguments only.
        let _ = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    }

    #[cfg(not(target_os = "linux"))]
    fn drop(&mut self) {}
}

/// A leased file and its mapping, owned together: the map is always
/// dropped before the lease (fields drop in declaration order), so no
/// writer is let in while the file is mapped.
pub struct LeasedFile {
    map: memmap2::Mmap,
    lease: ReadLease,
}

impl LeasedFile {
    /// Maps a leased file for serving.
    #[allow(unsafe_code)]
    pub fn map(lease: ReadLease) -> io::Result<Self> {
        // SAFETY: the file is a regular file on a local filesystem (see
        // `is_local_fs`; network and FUSE ones are never mapped) under our
        // read lease: no one can open it for writing or truncate it until
        // the lease is released, and the kernel tells us (SIGIO) before it
        // lets a writer in; the driver then drops this value, the map
        // before the lease. Remaining limits: an I/O error reading a mapped
        // page (a failing disk) still raises SIGBUS, and a loop stalled
        // past /proc/sys/fs/lease-break-time (45 s) lets the kernel break
        // the lease itself; the loop never waits that long.
        let map = unsafe { memmap2::Mmap::map(&lease.file) }?;
        Ok(Self { map, lease })
    }
}

impl LeasedMap for LeasedFile {
    fn map(&self) -> &memmap2::Mmap {
        &self.map
    }

    fn breaking(&self) -> bool {
        self.lease.breaking()
    }
}

/// A file served with `pread` and checked as it goes (see the module doc).
pub struct CheckedReader {
    file: File,
    len: u64,
    next: u64,
    /// The hash gate: what the bytes must hash to. None for an unverified
    /// copy served by the user's choice (`--share-unverified`), which never
    /// hashes to its id; a shrink still ends it unfinished.
    expect: Option<(FileHasher, FileId, Timestamp)>,
}

impl CheckedReader {
    /// Reads the first `len` bytes of `file` for the file `id`, closing the
    /// message only if they hash to it.
    pub fn new(file: File, len: u64, id: FileId, timestamp: Timestamp) -> Self {
        Self {
            file,
            len,
            next: 0,
            expect: Some((FileHasher::new(), id, timestamp)),
        }
    }

    /// Reads the first `len` bytes of an unverified copy, without the hash
    /// gate (it would always refuse); only for a copy the user chose to
    /// share unverified.
    pub fn unverified(file: File, len: u64) -> Self {
        Self {
            file,
            len,
            next: 0,
            expect: None,
        }
    }
}

impl ChunkReader for CheckedReader {
    fn file_len(&self) -> u64 {
        self.len
    }

    fn read_chunk(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if offset != self.next {
            return Err(io::Error::other("chunks read out of order"));
        }
        // A shrink shows as UnexpectedEof here.
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "the file is shorter than when it was opened")
            } else {
                e
            }
        })?;
        if let Some((hasher, _, _)) = &mut self.expect {
            hasher.update(buf);
        }
        self.next += buf.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let hashes = match &self.expect {
            Some((hasher, id, timestamp)) => hasher.clone().matches(id, timestamp),
            None => true,
        };
        if self.next == self.len && hashes {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the bytes read no longer hash to the file's id",
            ))
        }
    }
}

/// Whether the file at `path` still hashes to `id` under `timestamp`, and
/// its stamp as hashed; a file that changed again while being read does
/// not match. Runs off the loop.
pub fn reverify(path: &Path, id: &FileId, timestamp: &Timestamp) -> io::Result<(bool, FileStamp)> {
    let mut file = open_regular(path)?;
    let before = FileStamp::of(&file.metadata()?);
    let (hasher, len) = hash_reader(&mut file)?;
    let after = FileStamp::of(&file.metadata()?);
    let matches = before == after && len == before.len && hasher.matches(id, timestamp);
    Ok((matches, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encoder::{is_source_changed, FileDataEncoder, FileSource, CHUNK_LEN};
    use crate::protocol::{FileRecord, FileSize};
    use crate::storage::hashing::file_id_for;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn record_for(data: &[u8]) -> FileRecord {
        FileRecord {
            file_name: "f.bin".into(),
            file_size: FileSize::Bytes(data.len() as u64),
            file_id: file_id_for(data, "1700000000"),
            file_owner: "me".into(),
            file_timestamp: Timestamp::from_secs(1_700_000_000),
        }
    }

    /// Encodes into a Vec until done or an error.
    fn encode(enc: &mut FileDataEncoder) -> (Vec<u8>, io::Result<()>) {
        let mut out = Vec::new();
        let r = enc.write_to(&mut out).map(|_| ());
        (out, r)
    }

    fn checked(path: &Path, rec: &FileRecord) -> FileDataEncoder {
        let (opened, stamp) = open_for_serving(path, false).unwrap();
        let Opened::Unleased(file, _) = opened else {
            panic!("leased with leases off")
        };
        let reader = CheckedReader::new(
            file,
            stamp.len,
            rec.file_id.clone(),
            rec.file_timestamp.clone(),
        );
        FileDataEncoder::new(rec, FileSource::Read(Box::new(reader)))
    }

    #[test]
    fn a_stamp_round_trips_through_metadata_and_rejects_other_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"abc").unwrap();
        let stamp = FileStamp::read(&path).unwrap();
        assert_eq!(stamp.len, 3);
        assert_eq!(FileStamp::from_value(&stamp.to_value()), Some(stamp));
        assert_eq!(FileStamp::from_value(&Value::Null), None);
        let mut v = stamp.to_value();
        v["size"] = Value::from(3);
        assert_eq!(FileStamp::from_value(&v), None);
    }

    #[test]
    fn a_stamp_tells_an_in_place_write_of_the_same_size_and_a_copy_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"abcdef").unwrap();
        let before = FileStamp::read(&path).unwrap();
        // The change time moves even if the modification time is put back.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"ABC", 0).unwrap();
        f.set_modified(std::fs::metadata(&path).unwrap().modified().unwrap())
            .unwrap();
        drop(f);
        let written = FileStamp::read(&path).unwrap();
        assert_eq!(written.len, before.len);
        assert_ne!(written, before);
        // A copy renamed over the name: another inode.
        let other = dir.path().join("b");
        std::fs::write(&other, b"abcdef").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let renamed = FileStamp::read(&path).unwrap();
        assert_ne!(renamed.ino, written.ino);
    }

    #[test]
    fn only_regular_files_are_opened_and_a_fifo_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_for_serving(&link, true).is_err());
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: mkfifo with a valid NUL-terminated path.
        let made = unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0;
        assert!(made, "mkfifo failed");
        assert!(open_for_serving(&fifo, true).is_err());
        assert!(open_for_serving(dir.path(), true).is_err());
    }

    #[test]
    fn a_quiet_file_is_leased_and_one_open_for_writing_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"abc").unwrap();
        match open_for_serving(&path, true).unwrap() {
            (Opened::Leased(lease), stamp) => {
                assert!(!lease.breaking());
                let mapped = LeasedFile::map(lease).unwrap();
                assert_eq!(mapped.map().len() as u64, stamp.len);
                assert!(!mapped.breaking());
            }
            (Opened::Unleased(_, e), _) => {
                // A filesystem or kernel without leases: the checked path
                // covers it; nothing more to test here.
                eprintln!("skipped: no read lease on {}: {e}", path.display());
                return;
            }
        }
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let (opened, _) = open_for_serving(&path, true).unwrap();
        match opened {
            Opened::Unleased(_, e) => assert_eq!(e.raw_os_error(), Some(libc::EAGAIN)),
            Opened::Leased(_) => panic!("leased a file open for writing"),
        }
        drop(writer);
    }

    #[test]
    fn network_and_fuse_filesystems_are_never_mapped_and_local_ones_may_be() {
        for magic in REMOTE_FS_MAGIC {
            assert!(!lease_guards_fs(magic), "{magic:#x}");
        }
        // ext4, xfs, btrfs, tmpfs.
        for magic in [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994] {
            assert!(lease_guards_fs(magic), "{magic:#x}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        if !is_local_fs(&file) {
            eprintln!(
                "skipped: {} is on a network or FUSE filesystem",
                path.display()
            );
            return;
        }
        // A local file is offered a lease (granted or not by the kernel).
        match open_for_serving(&path, true).unwrap().0 {
            Opened::Leased(_) => {}
            Opened::Unleased(_, e) => assert!(!e.to_string().contains("network"), "{e}"),
        }
    }

    #[test]
    fn an_unchanged_file_read_for_serving_is_sent_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data = bytes(1, 2 * CHUNK_LEN + 77);
        std::fs::write(&path, &data).unwrap();
        let rec = record_for(&data);
        let (out, r) = encode(&mut checked(&path, &rec));
        r.unwrap();
        assert!(out.ends_with(b"\"}\n"));
        let hex_at = out.len() - 3 - 2 * data.len();
        assert_eq!(
            &out[hex_at..out.len() - 3],
            faster_hex::hex_string(&data).as_bytes()
        );
    }

    #[test]
    fn a_file_that_shrinks_while_read_for_serving_ends_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data = bytes(2, 3 * CHUNK_LEN);
        std::fs::write(&path, &data).unwrap();
        let rec = record_for(&data);
        let mut enc = checked(&path, &rec);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(5)
            .unwrap();
        let (out, r) = encode(&mut enc);
        let e = r.unwrap_err();
        assert!(is_source_changed(&e), "{e}");
        assert!(!out.ends_with(b"}\n"));
    }

    #[test]
    fn bytes_changed_while_read_for_serving_are_never_closed_under_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data = bytes(3, CHUNK_LEN + 10);
        std::fs::write(&path, &data).unwrap();
        let rec = record_for(&data);
        let mut enc = checked(&path, &rec);
        // The first chunk goes out; then the last bytes change, same size.
        let mut first = LimitedWriter(Vec::new(), 4096);
        let _ = enc.write_to(&mut first);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"0123456789", CHUNK_LEN as u64).unwrap();
        drop(f);
        let (rest, r) = encode(&mut enc);
        let e = r.unwrap_err();
        assert!(is_source_changed(&e), "{e}");
        assert!(!rest.ends_with(b"}\n"));
        assert!(!first.0.ends_with(b"}\n"));
    }

    /// Takes at most `1` bytes, then blocks.
    struct LimitedWriter(Vec<u8>, usize);

    impl Write for LimitedWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1 - self.0.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_unverified_copy_shared_by_choice_is_sent_whole_without_the_hash_gate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data = bytes(6, CHUNK_LEN + 5);
        std::fs::write(&path, &data).unwrap();
        // Its id is another file's: an unverified copy never hashes to it.
        let rec = record_for(&bytes(7, CHUNK_LEN + 5));
        let (opened, stamp) = open_for_serving(&path, false).unwrap();
        let file = match opened {
            Opened::Unleased(f, _) => f,
            Opened::Leased(_) => panic!("leased with leases off"),
        };
        let reader = CheckedReader::unverified(file, stamp.len);
        let (out, r) = encode(&mut FileDataEncoder::new(
            &rec,
            FileSource::Read(Box::new(reader)),
        ));
        r.unwrap();
        assert!(out.ends_with(b"\"}\n"));
        // The hash gate still refuses it.
        let (_, r) = encode(&mut checked(&path, &rec));
        assert!(is_source_changed(&r.unwrap_err()));
    }

    #[test]
    fn only_a_missing_or_replaced_file_counts_as_gone_not_a_passing_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = |p: &Path| open_for_serving(p, true).err().expect("opened");
        let gone = err(&dir.path().join("none"));
        assert!(is_gone(&gone), "{gone}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("none"), &link).unwrap();
        let e = err(&link);
        assert!(is_gone(&e), "{e}");
        let e = err(dir.path());
        assert!(is_gone(&e), "{e}");
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::EIO,
            libc::EACCES,
        ] {
            assert!(!is_gone(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
    }

    #[test]
    fn reverify_keeps_matching_bytes_and_refuses_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data = bytes(4, 1000);
        std::fs::write(&path, &data).unwrap();
        let rec = record_for(&data);
        let (ok, stamp) = reverify(&path, &rec.file_id, &rec.file_timestamp).unwrap();
        assert!(ok);
        assert_eq!(stamp, FileStamp::read(&path).unwrap());
        std::fs::write(&path, bytes(5, 1000)).unwrap();
        let (ok, _) = reverify(&path, &rec.file_id, &rec.file_timestamp).unwrap();
        assert!(!ok);
        assert!(reverify(&dir.path().join("gone"), &rec.file_id, &rec.file_timestamp).is_err());
    }
}
