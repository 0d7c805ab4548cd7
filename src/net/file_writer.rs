//! The threads that hash and write a download's decoded bytes, off the loop.
//!
//! The loop decodes a FILE_DATA's hex into buffers of
//! [`DATA_BUFFER_LEN`] and hands each to a [`Writer`] by value; its thread
//! hashes the bytes and writes them to the temp file. Two things keep that
//! from costing the loop:
//!
//! - **Flow control, not a blocking queue.** At most [`WRITER_DEPTH`]
//!   buffers are in flight (one more when a cut download hands over the
//!   decoder's last, partly filled one). The loop reads a connection only while one more
//!   read's worth fits ([`Writer::has_room`]); otherwise it parks the
//!   connection ([`Writer::park`]) and the thread wakes the loop when it has
//!   written one. A slow disk slows the socket (TCP flow control), never
//!   the loop.
//! - **Direct I/O for large files.** A buffered `write()` into ext4's page
//!   cache costs about 3 CPU-seconds per GiB here (page allocation, memcg
//!   accounting, delayed allocation), more than hashing and decoding
//!   together; with `O_DIRECT` the device copies the bytes itself. Once a
//!   download passes its first [`STAGE_LEN`] the file switches to
//!   `O_DIRECT`: the bytes are staged in aligned blocks of that size and a
//!   second thread writes them while the first hashes the next, so the
//!   hash and the device overlap. The first block, file systems that refuse `O_DIRECT` or live
//!   in memory (tmpfs: there it is only a slower copy), unsolicited pushes,
//!   and the unaligned tail of every file are written through the page
//!   cache as before (with at most two steps of writeback pending, see
//!   `start_writeback`). Either way the thread fsyncs the file before it
//!   ends, so the loop's commit (a rename) never waits for the data.

use crate::net::conn::READ_BUF_LEN;
use crate::protocol::decoder::DATA_BUFFER_LEN;
use crate::storage::{FileHasher, PartialFile};
use mio::Waker;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread;

/// Most buffers one read can hand to a writer: the full buffers its hex
/// decodes to, plus the partial one that ends the data.
pub const MAX_SENDS_PER_READ: usize = READ_BUF_LEN / 2 / DATA_BUFFER_LEN + 1;

/// Buffers queued to (or being written by) a writer thread at most. The
/// loop reads a connection only while one more read's worth fits, so it
/// never waits on the channel.
pub const WRITER_DEPTH: usize = 2 * MAX_SENDS_PER_READ;

/// Most writers at once (downloads are capped at 8, but every inbound push
/// has a sink too); past it a sink writes inline. Each has up to two
/// threads.
pub const MAX_WRITERS: usize = 16;

/// Size of a direct-I/O block, and the least a file must have for direct
/// I/O to be tried.
pub const STAGE_LEN: usize = 1024 * 1024;

/// Alignment of direct-I/O memory, offsets and lengths: the largest logical
/// block size of common devices.
const DIRECT_ALIGN: usize = 4096;

/// Bytes written through the page cache between two calls that start their
/// writeback, so the final fsync has little left to do.
#[cfg(target_os = "linux")]
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

static WRITERS: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_WRITERS`] slots, given back when dropped.
struct WriterSlot;

impl WriterSlot {
    fn take() -> Option<WriterSlot> {
        WRITERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WRITERS).then_some(n + 1)
            })
            .ok()
            .map(|_| WriterSlot)
    }
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        WRITERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The flow control between the loop and a writer thread.
pub(crate) struct Flow {
    /// Buffers sent and not yet written.
    pub(crate) in_flight: AtomicUsize,
    /// The thread has ended (done, failed or cancelled): never wait for it.
    ended: AtomicBool,
    /// The loop parked a connection until there is room: wake it.
    parked: AtomicBool,
    /// Wakes the loop (`None` in tests without one).
    waker: Option<Arc<Waker>>,
}

impl Flow {
    fn wake_if_parked(&self) {
        // SeqCst here and in `park`/`has_room`: "I parked, then looked" on
        // one side and "I made room, then looked" on the other must not both
        // miss each other (a store then a load: acquire/release allows it).
        if self.parked.swap(false, Ordering::SeqCst) {
            if let Some(w) = &self.waker {
                // A failed wake leaves the connection to its idle timeout.
                let _ = w.wake();
            }
        }
    }
}

/// Marks the thread ended however it exits (an error, a panic), so the
/// loop never waits for room that won't come.
struct EndGuard(Arc<Flow>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::SeqCst);
        self.0.wake_if_parked();
    }
}

/// A writer thread and its channels. Dropped before the data ended (a
/// failed message), it tells the thread to drop what is queued and lets it
/// end on its own (the loop does not wait on a disk); the thread's temp
/// file removes itself and its slot is freed when it ends.
pub struct Writer {
    /// Filled buffers, in order.
    full: Option<SyncSender<Vec<u8>>>,
    /// Buffers the thread is done with, for reuse.
    empty: Receiver<Vec<u8>>,
    /// Tells the thread to stop writing.
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) flow: Arc<Flow>,
    handle: Option<thread::JoinHandle<io::Result<(PartialFile, FileHasher)>>>,
}

/// What a temp file holds already when its writer starts: the first
/// `len` bytes of the file (a download resumed after a cut), and their
/// hash, which the new bytes continue.
pub struct Prefix {
    /// The hash of those bytes.
    pub hasher: FileHasher,
    /// How many there are (the offset of the first new byte).
    pub len: u64,
}

/// What [`Writer::start`] made of a temp file.
pub enum Started {
    /// A thread hashes and writes it.
    Running(Writer),
    /// [`MAX_WRITERS`] run already: the file back, to write inline.
    Busy(PartialFile),
    /// The thread could not start (the file is gone with it).
    Failed(io::Error),
}

impl Writer {
    /// Starts a thread that hashes and writes queued buffers into
    /// `partial`, waking the loop through `waker` when a parked
    /// connection may read again. `direct`: a file past [`STAGE_LEN`] may
    /// be written with direct I/O (our own downloads; not unsolicited
    /// pushes, whose block buffers would be memory any peer could make us
    /// hold).
    pub fn start(
        partial: PartialFile,
        waker: Option<Arc<Waker>>,
        direct: bool,
        prefix: Prefix,
    ) -> Started {
        let Some(slot) = WriterSlot::take() else {
            return Started::Busy(partial);
        };
        // The hard bound: `send` would wait only if the gate let more in.
        // One more than reads can fill: the tail a cut message flushes.
        let (full, queued) = mpsc::sync_channel::<Vec<u8>>(WRITER_DEPTH + 1);
        let (done, empty) = mpsc::channel::<Vec<u8>>();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let flow = Arc::new(Flow {
            in_flight: AtomicUsize::new(0),
            ended: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            waker,
        });
        let guard = EndGuard(flow.clone());
        let spawned = thread::Builder::new()
            .name("file-writer".into())
            .spawn(move || {
                // Both freed when the thread ends, whoever waits for it.
                let (guard, _slot) = (guard, slot);
                hash_and_write(partial, queued, done, &stop, &guard.0, direct, prefix)
            });
        match spawned {
            Ok(handle) => Started::Running(Writer {
                full: Some(full),
                empty,
                cancel,
                flow,
                handle: Some(handle),
            }),
            Err(e) => Started::Failed(e),
        }
    }

    /// Queues a copy of `bytes`; false if the thread has stopped.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        let mut buf = self.recycled();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.send_owned(buf)
    }

    /// Queues `buf` itself; false if the thread has stopped.
    pub fn send_owned(&mut self, buf: Vec<u8>) -> bool {
        let Some(full) = self.full.as_ref() else {
            return false;
        };
        self.flow.in_flight.fetch_add(1, Ordering::SeqCst);
        full.send(buf).is_ok()
    }

    /// A buffer the thread is done with, or a new empty one. At most
    /// [`WRITER_DEPTH`] + 3 exist: the queue's (one more for a cut
    /// message's tail), the thread's and the decoder's (a new one is made
    /// only while none is back).
    pub fn recycled(&mut self) -> Vec<u8> {
        self.empty.try_recv().unwrap_or_default()
    }

    /// Whether one more read's worth of buffers fits in the queue.
    pub fn has_room(&self) -> bool {
        self.flow.ended.load(Ordering::SeqCst)
            || self.flow.in_flight.load(Ordering::SeqCst) + MAX_SENDS_PER_READ <= WRITER_DEPTH
    }

    /// Asks the thread to wake the loop once there is room; false if there
    /// is room already. Asked before the check again, so a buffer finished
    /// in between is not missed.
    pub fn park(&self) -> bool {
        self.flow.parked.store(true, Ordering::SeqCst);
        !self.has_room()
    }

    /// No more data: the thread writes what is queued, makes it durable
    /// (fsync) and ends, without the loop waiting for any of it.
    pub fn close(&mut self) {
        drop(self.full.take());
    }

    /// Asks the thread to wake the loop when it has ended; false if it has
    /// ended already (then [`finish`](Writer::finish) does not wait).
    /// Asked before the check again, so an end in between is not missed; a
    /// wake for room clears the request, so ask again after every wake.
    pub fn wait_for_end(&self) -> bool {
        self.flow.parked.store(true, Ordering::SeqCst);
        !self.flow.ended.load(Ordering::SeqCst)
    }

    /// Waits until everything queued is written; the file and its hash.
    pub fn finish(mut self) -> io::Result<(PartialFile, FileHasher)> {
        drop(self.full.take());
        match self.handle.take().map(thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the file writer thread panicked")),
            None => Err(io::Error::other("the file writer was already finished")),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.handle.take().is_some() {
            // Detached: it sees the cancel at its next buffer, or the closed
            // queue, and ends without writing more.
            self.cancel.store(true, Ordering::SeqCst);
            drop(self.full.take());
        }
    }
}

/// The writer thread: hashes each buffer, writes it, gives it back.
fn hash_and_write(
    mut partial: PartialFile,
    queued: Receiver<Vec<u8>>,
    done: Sender<Vec<u8>>,
    stop: &AtomicBool,
    flow: &Flow,
    direct: bool,
    prefix: Prefix,
) -> io::Result<(PartialFile, FileHasher)> {
    let cancelled = || io::Error::other("cancelled");
    let mut hasher = prefix.hasher;
    let mut out = Output::new(Arc::new(partial.file().try_clone()?), direct);
    out.offset = prefix.len;
    out.flushed = prefix.len;
    for buf in queued {
        if stop.load(Ordering::SeqCst) {
            return Err(cancelled());
        }
        hasher.update(&buf);
        out.write(&buf)?;
        // The sink may be gone already; the buffer is then freed.
        let _ = done.send(buf);
        flow.in_flight.fetch_sub(1, Ordering::SeqCst);
        flow.wake_if_parked();
    }
    // The queue closes on `finish` and on a cancel alike.
    if stop.load(Ordering::SeqCst) {
        return Err(cancelled());
    }
    out.finish()?;
    // Durable here, not on the loop: the commit's own fsync then finds
    // nothing left to write (a large buffered push could otherwise hold
    // the loop for as long as the disk takes to write it).
    slow_sync_for_tests();
    partial.file().sync_all()?;
    Ok((partial, hasher))
}

/// Fault injection for the integration tests (debug builds only, so never
/// in a release binary): `PEERSHARE_TEST_SLOW_SYNC_MS` makes every writer
/// thread's final fsync that much slower, as on a slow disk, to show the
/// loop goes on answering meanwhile.
fn slow_sync_for_tests() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("PEERSHARE_TEST_SLOW_SYNC_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
    }
}

/// A block of [`STAGE_LEN`] bytes at a [`DIRECT_ALIGN`]ed address.
struct Stage {
    mem: Vec<u8>,
    start: usize,
}

impl Stage {
    fn new() -> Stage {
        let mem = vec![0u8; STAGE_LEN + DIRECT_ALIGN];
        let start = mem.as_ptr().align_offset(DIRECT_ALIGN);
        Stage { mem, start }
    }

    /// Whether the block is aligned (always, on any real allocator).
    fn aligned(&self) -> bool {
        self.start < DIRECT_ALIGN
    }

    fn bytes(&self) -> &[u8] {
        let start = self.start.min(DIRECT_ALIGN);
        &self.mem[start..start + STAGE_LEN]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let start = self.start.min(DIRECT_ALIGN);
        &mut self.mem[start..start + STAGE_LEN]
    }
}

/// How [`Output`] writes.
enum Mode {
    /// Through the page cache: the first [`STAGE_LEN`] bytes, pushes, and
    /// files where direct I/O was refused.
    Buffered,
    /// Direct I/O: bytes are staged and full blocks go to the block-writer
    /// thread.
    Direct {
        blocks: BlockWriter,
        stage: Stage,
        fill: usize,
    },
}

/// Writes a download's bytes at increasing offsets, directly or buffered.
struct Output {
    file: Arc<File>,
    /// Bytes handed to the file so far (the offset of the next write).
    offset: u64,
    mode: Mode,
    /// Direct I/O may still be tried (once, past the first block).
    may_go_direct: bool,
    /// Offset up to which writeback of buffered bytes has been started.
    flushed: u64,
}

impl Output {
    fn new(file: Arc<File>, direct: bool) -> Output {
        Output {
            file,
            offset: 0,
            mode: Mode::Buffered,
            may_go_direct: direct,
            flushed: 0,
        }
    }

    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.may_go_direct
            && self.offset >= STAGE_LEN as u64
            && self.offset.is_multiple_of(DIRECT_ALIGN as u64)
        {
            self.may_go_direct = false;
            self.go_direct();
        }
        match &mut self.mode {
            Mode::Buffered => {
                self.file.write_all_at(bytes, self.offset)?;
                self.offset += bytes.len() as u64;
                start_writeback(&self.file, &mut self.flushed, self.offset);
            }
            Mode::Direct {
                blocks,
                stage,
                fill,
            } => {
                while !bytes.is_empty() {
                    let n = (STAGE_LEN - *fill).min(bytes.len());
                    stage.bytes_mut()[*fill..*fill + n].copy_from_slice(&bytes[..n]);
                    *fill += n;
                    bytes = &bytes[n..];
                    if *fill == STAGE_LEN {
                        blocks.send(stage, self.offset)?;
                        self.offset += STAGE_LEN as u64;
                        *fill = 0;
                    }
                }
            }
        }
        Ok(())
    }

    /// Switches to direct I/O if everything it needs is there (an aligned
    /// block, the block-writer thread, the file system's consent); else
    /// stays buffered. Only at an aligned offset, with nothing staged.
    fn go_direct(&mut self) {
        if in_memory(&self.file) {
            return;
        }
        let stage = Stage::new();
        if !stage.aligned() {
            return;
        }
        let Ok(blocks) = BlockWriter::start(self.file.clone()) else {
            return;
        };
        if set_direct(&self.file, true) {
            self.mode = Mode::Direct {
                blocks,
                stage,
                fill: 0,
            };
        }
    }

    /// Writes what is staged (through the page cache: any length) after
    /// every direct block has landed.
    fn finish(mut self) -> io::Result<()> {
        if let Mode::Direct {
            blocks,
            stage,
            fill,
        } = std::mem::replace(&mut self.mode, Mode::Buffered)
        {
            blocks.finish()?;
            if !set_direct(&self.file, false) {
                return Err(io::Error::other(
                    "cannot turn direct I/O off for the file's tail",
                ));
            }
            self.file
                .write_all_at(&stage.bytes()[..fill], self.offset)?;
            self.offset += fill as u64;
        }
        Ok(())
    }
}

/// Blocks handed to the block-writer thread and back: one being filled, one
/// queued, one being written.
const STAGES: usize = 3;

/// The thread that writes full blocks with direct I/O, so the device works
/// while the writer thread hashes the next block.
struct BlockWriter {
    blocks: Option<SyncSender<(Stage, u64)>>,
    free: Receiver<Stage>,
    /// Blocks that exist (the caller's included).
    made: usize,
    handle: Option<thread::JoinHandle<io::Result<()>>>,
}

impl BlockWriter {
    fn start(file: Arc<File>) -> io::Result<BlockWriter> {
        let (blocks, queued) = mpsc::sync_channel::<(Stage, u64)>(1);
        let (back, free) = mpsc::channel::<Stage>();
        let handle = thread::Builder::new()
            .name("file-blocks".into())
            .spawn(move || {
                for (stage, offset) in queued {
                    write_block(&file, stage.bytes(), offset)?;
                    // Gone only when the writer is too.
                    let _ = back.send(stage);
                }
                Ok(())
            })?;
        Ok(BlockWriter {
            blocks: Some(blocks),
            free,
            made: 1,
            handle: Some(handle),
        })
    }

    /// Queues the full `stage` for `offset` and puts an empty one in its
    /// place (waiting for one if all [`STAGES`] are in use).
    fn send(&mut self, stage: &mut Stage, offset: u64) -> io::Result<()> {
        let next = match self.free.try_recv() {
            Ok(s) => s,
            Err(_) if self.made < STAGES => {
                self.made += 1;
                Stage::new()
            }
            Err(_) => match self.free.recv() {
                Ok(s) => s,
                Err(_) => return Err(self.failed()),
            },
        };
        let full = std::mem::replace(stage, next);
        let sent = self.blocks.as_ref().map(|b| b.send((full, offset)));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.failed()),
        }
    }

    /// Waits for every queued block.
    fn finish(mut self) -> io::Result<()> {
        drop(self.blocks.take());
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.handle.take().map(thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the block writer thread panicked")),
            None => Ok(()),
        }
    }

    /// The thread stopped early: its error.
    fn failed(&mut self) -> io::Error {
        drop(self.blocks.take());
        match self.join() {
            Err(e) => e,
            Ok(()) => io::Error::other("the block writer stopped early"),
        }
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        drop(self.blocks.take());
        let _ = self.join();
    }
}

/// Writes one block at `offset`; a file system that turns out to refuse
/// this direct write gets it (and all later ones) through the page cache.
fn write_block(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    match file.write_all_at(bytes, offset) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            set_direct(file, false);
            file.write_all_at(bytes, offset)
        }
        other => other,
    }
}

/// Turns `O_DIRECT` on or off for the open file (shared by its clones);
/// whether that worked.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> bool {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with flags it returned.
    #[allow(unsafe_code)]
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let want = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        libc::fcntl(fd, libc::F_SETFL, want) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, _on: bool) -> bool {
    false
}

/// Whether the file lives in memory (tmpfs, ramfs): there direct I/O is
/// only a slower copy into new pages (measured: 2.4 CPU-s per GiB against
/// 0.5 buffered), so it is not used.
#[cfg(target_os = "linux")]
fn in_memory(file: &File) -> bool {
    use std::os::unix::io::AsRawFd;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs fills the struct for a descriptor we own.
    #[allow(unsafe_code)]
    let st = unsafe {
        if libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) != 0 {
            return false;
        }
        st.assume_init()
    };
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
}

#[cfg(not(target_os = "linux"))]
fn in_memory(_file: &File) -> bool {
    false
}

/// Starts the disk writeback of the bytes written since the last call once
/// [`WRITEBACK_STEP`] of them are pending, and waits for the writeback
/// started the time before (Linux; elsewhere a no-op). So at most about two
/// steps of a buffered file are ever waiting for the disk: a disk slower
/// than the network slows this thread, and through the flow control the
/// socket, instead of piling up dirty pages that the final fsync (and the
/// loop's wait for it, see `FINISH_TIMEOUT` in the driver) would then have
/// to write all at once. Only the final fsync makes the file durable.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, flushed: &mut u64, written: u64) {
    use std::os::unix::io::AsRawFd;
    if written - *flushed < WRITEBACK_STEP {
        return;
    }
    let fd = file.as_raw_fd();
    let previous = flushed.saturating_sub(WRITEBACK_STEP);
    // SAFETY: a valid open descriptor and in-file ranges. The first call
    // only starts writeback; the second waits for the range whose
    // writeback the previous call started (errors surface at the fsync).
    #[allow(unsafe_code)]
    unsafe {
        libc::sync_file_range(
            fd,
            *flushed as libc::off64_t,
            (written - *flushed) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
        if *flushed > previous {
            libc::sync_file_range(
                fd,
                previous as libc::off64_t,
                (*flushed - previous) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
        }
    }
    *flushed = written;
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _flushed: &mut u64, _written: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 4093) as u8).collect()
    }

    /// Writes `bytes` through an [`Output`] in random pieces (whole
    /// decoder buffers when `whole`); the file, and whether it went direct.
    fn write_in_pieces(bytes: &[u8], seed: u64, direct: bool, whole: bool) -> (Vec<u8>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut out = Output::new(Arc::new(file), direct);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut rest = bytes;
        let mut went_direct = false;
        while !rest.is_empty() {
            let n = if whole {
                DATA_BUFFER_LEN.min(rest.len())
            } else {
                rng.gen_range(1..=rest.len().min(3 * DATA_BUFFER_LEN))
            };
            out.write(&rest[..n]).unwrap();
            went_direct |= matches!(out.mode, Mode::Direct { .. });
            rest = &rest[n..];
        }
        out.finish().unwrap();
        (std::fs::read(&path).unwrap(), went_direct)
    }

    const SIZES: [usize; 8] = [
        0,
        1,
        STAGE_LEN - 1,
        STAGE_LEN,
        STAGE_LEN + 1,
        STAGE_LEN + DATA_BUFFER_LEN,
        3 * STAGE_LEN + 4097,
        7 * STAGE_LEN,
    ];

    #[test]
    fn every_size_round_trips_whatever_the_pieces_direct_or_not() {
        for direct in [false, true] {
            for whole in [false, true] {
                for (k, len) in SIZES.into_iter().enumerate() {
                    let bytes = pattern(len);
                    let (back, _) = write_in_pieces(&bytes, k as u64, direct, whole);
                    assert!(
                        back == bytes,
                        "{len} bytes (direct {direct}, whole buffers {whole}) came back different"
                    );
                }
            }
        }
    }

    #[test]
    fn large_downloads_use_direct_io_where_the_file_system_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let probe = File::create(dir.path().join("probe")).unwrap();
        let supported = set_direct(&probe, true);
        let bytes = pattern(4 * STAGE_LEN + 123);
        let (back, direct) = write_in_pieces(&bytes, 9, true, true);
        assert!(back == bytes);
        let memory = in_memory(&probe);
        assert_eq!(direct, supported && Stage::new().aligned() && !memory);
        // Never for a sink that may not.
        let (back, direct) = write_in_pieces(&bytes, 9, false, true);
        assert!(back == bytes && !direct);
    }

    #[test]
    fn small_files_never_switch_to_direct_io() {
        let bytes = pattern(STAGE_LEN);
        let (back, direct) = write_in_pieces(&bytes, 3, true, true);
        assert!(back == bytes && !direct);
    }

    #[test]
    fn after_finish_direct_io_is_off_and_the_tail_is_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = Arc::new(File::create(&path).unwrap());
        let mut out = Output::new(file.clone(), true);
        let bytes = pattern(3 * STAGE_LEN + 5);
        for piece in bytes.chunks(DATA_BUFFER_LEN) {
            out.write(piece).unwrap();
        }
        out.finish().unwrap();
        // An unaligned write works again (O_DIRECT would refuse it).
        file.write_all_at(b"xyz", 7).unwrap();
        let mut want = bytes;
        want[7..10].copy_from_slice(b"xyz");
        assert!(std::fs::read(&path).unwrap() == want);
    }
}
