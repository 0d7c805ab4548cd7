//! One connection of the loop and the I/O steps it can take.
//!
//! A connection has a role (reading a message, writing a reply, fetching a
//! file, serving HTTP...) and each step reads or writes until the socket
//! would block or the step's byte budget is used, so one fast transfer can't
//! starve the others. Steps return an [`Outcome`] that the driver acts on;
//! no protocol decision is made here.

use crate::core::Time;
use crate::ids::TransferId;
use crate::net::file_writer::{Prefix, Started, Writer};
use crate::protocol::decoder::{DataSink, DecodeError, Feed, MessageDecoder};
use crate::protocol::encoder::{FileDataEncoder, WriteProgress};
use crate::protocol::FileRecord;
use crate::storage::{FileHasher, PartialFile};
use mio::net::TcpStream;
use mio::Waker;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Bytes one step may move before yielding to other connections.
pub const STEP_BUDGET: usize = 8 * 1024 * 1024;

/// Time one step may take before yielding, whatever it moved: on a slow
/// host (or a debug build) 8 MiB of hex can take seconds to decode and
/// hash, and nobody else may wait that long.
pub const STEP_TIME: std::time::Duration = std::time::Duration::from_millis(5);

/// Where the decoded bytes of a FILE_DATA go: a temp file in the storage
/// folder (created when the first byte arrives), hashed on the way.
///
/// Hashing and writing run on a [`Writer`] thread started with the temp
/// file, so the loop goes on reading and decoding the socket meanwhile: the
/// decoder's full buffers are queued to it as they are (see
/// [`crate::net::file_writer`] for the flow control and the direct I/O).
/// When the `data` string ends
/// ([`DataSink::end_data`]) the thread is told so and finishes on its own
/// (the rest of its queue, then fsync); the driver waits for its wake
/// ([`PartialSink::must_wait_for_writer`]) without blocking, then
/// [`PartialSink::settle`]s the sink, after which `partial`, `hasher` and
/// `len` are final. Without a thread (it could not be started) the work is
/// done inline.
///
/// A resumed download's sink starts with the kept temp file
/// ([`PartialSink::resuming`]): new bytes go after its prefix and continue
/// its hash, and `len` counts the whole file.
pub struct PartialSink {
    /// Where the temp file goes.
    dir: Box<std::path::Path>,
    /// The temp file, once data started (while the writer thread has it:
    /// `None` until `settle`).
    pub partial: Option<PartialFile>,
    /// SHA-256 of the bytes so far (final after `settle`).
    pub hasher: FileHasher,
    /// Bytes written.
    pub len: u64,
    /// Boxed: the sink lives in every connection's role.
    writer: Option<Box<Writer>>,
    /// Given to the writer thread, to wake the loop when there is room.
    waker: Option<Arc<Waker>>,
    /// The writer may use direct I/O (and its block buffers).
    direct: bool,
    /// A writer thread was started (or refused, and the work is inline).
    started: bool,
    /// A resumed download: the offset its ranged GET_FILE asked for (its
    /// kept prefix's length, never 0); 0 for a new file.
    resumed_at: u64,
    /// Leading data bytes to drop: the prefix we have, when a source
    /// answered a ranged request with the whole file.
    skip: u64,
    /// One of our downloads: the file id its reply must name before any
    /// byte is written (a reply cut mid-data leaves bytes we may keep).
    expect: Option<Box<str>>,
    /// The reply's range fields came before its data (how its bytes were
    /// written: as a range, or as the whole file).
    range_before_data: bool,
    /// A resumed download got the whole file: its data starts at byte 0.
    whole_answer: bool,
    /// A piece of a download from several holders: its reply must be the
    /// range asked for (a whole-file answer is refused, not skipped).
    piece: bool,
}

/// The bytes a download kept from a source that was cut: the temp file
/// with its first `prefix.len` bytes, and their hash.
pub struct KeptPrefix {
    /// The temp file.
    pub partial: PartialFile,
    /// What it holds.
    pub prefix: Prefix,
}

/// Socket reads of 1 MiB keep large transfers fast (the driver's shared
/// read buffer).
pub const READ_BUF_LEN: usize = 1024 * 1024;

impl PartialSink {
    /// A sink that will create its temp file in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir: dir.into_boxed_path(),
            partial: None,
            hasher: FileHasher::new(),
            len: 0,
            writer: None,
            waker: None,
            direct: false,
            started: false,
            resumed_at: 0,
            skip: 0,
            expect: None,
            range_before_data: false,
            whole_answer: false,
            piece: false,
        }
    }

    /// A sink for one piece of a download from several holders: its bytes
    /// go at `offset` in the download's temp file (through `alias`, a
    /// handle that never removes it), hashed alone (the piece's digest).
    pub fn piece(
        dir: PathBuf,
        waker: Arc<Waker>,
        mut alias: PartialFile,
        offset: u64,
    ) -> io::Result<Self> {
        // Inline writes (no thread free) go through the file's cursor.
        io::Seek::seek(alias.file(), io::SeekFrom::Start(offset))?;
        Ok(Self {
            partial: Some(alias),
            len: offset,
            resumed_at: offset,
            piece: true,
            ..Self::for_download(dir, waker)
        })
    }

    /// A sink for a download writing into `partial`, a new temp file made
    /// beforehand (so its name is known, and recorded, from the start).
    pub fn for_download_into(dir: PathBuf, waker: Arc<Waker>, partial: PartialFile) -> Self {
        Self {
            partial: Some(partial),
            ..Self::for_download(dir, waker)
        }
    }

    /// A sink that continues a download after its kept prefix: the ranged
    /// reply's bytes are appended and hashed after it.
    pub fn resuming(dir: PathBuf, waker: Arc<Waker>, kept: KeptPrefix) -> io::Result<Self> {
        let KeptPrefix {
            mut partial,
            prefix,
        } = kept;
        // Inline writes (no thread free) go through the file's cursor.
        io::Seek::seek(partial.file(), io::SeekFrom::Start(prefix.len))?;
        Ok(Self {
            partial: Some(partial),
            hasher: prefix.hasher,
            len: prefix.len,
            resumed_at: prefix.len,
            ..Self::for_download(dir, waker)
        })
    }

    /// The same sink, for a reply that must name file `id` before its data.
    pub fn expecting(mut self, id: &str) -> Self {
        self.expect = Some(id.into());
        self
    }

    /// Where in the file the reply's data starts: the offset asked for,
    /// or 0 when a whole-file answer came instead.
    pub fn data_starts_at(&self) -> u64 {
        if self.whole_answer {
            0
        } else {
            self.resumed_at
        }
    }

    /// Whether the reply's range fields came before its data (its bytes
    /// were written as that range).
    pub fn range_before_data(&self) -> bool {
        self.range_before_data
    }

    /// The offset a resumed download's request asked from (its kept
    /// prefix's length); `None` for a new file.
    pub fn resumed_at(&self) -> Option<u64> {
        (self.resumed_at > 0).then_some(self.resumed_at)
    }

    /// After [`settle`](PartialSink::settle): the temp file and what it
    /// holds, to resume from; `None` when no byte was written.
    pub fn into_kept(mut self) -> Option<KeptPrefix> {
        let partial = self.partial.take().filter(|_| self.len > 0)?;
        Some(KeptPrefix {
            partial,
            prefix: Prefix {
                hasher: self.hasher.clone(),
                len: self.len,
            },
        })
    }

    /// The same, with a waker the writer thread calls when a connection
    /// parked by [`park`](PartialSink::park) may read again (an inbound
    /// push: written through the page cache).
    pub fn with_waker(dir: PathBuf, waker: Arc<Waker>) -> Self {
        Self {
            waker: Some(waker),
            ..Self::new(dir)
        }
    }

    /// A sink for one of our own downloads: like
    /// [`with_waker`](PartialSink::with_waker), and a large file is
    /// written with direct I/O (see [`crate::net::file_writer`]).
    pub fn for_download(dir: PathBuf, waker: Arc<Waker>) -> Self {
        Self {
            direct: true,
            ..Self::with_waker(dir, waker)
        }
    }

    /// Whether the connection may read once more without the writer's
    /// queue overflowing.
    pub fn has_room(&self) -> bool {
        self.writer.as_ref().is_none_or(|w| w.has_room())
    }

    /// Whether the connection must wait for its writer before reading
    /// again: no room now, and a wake is asked for (see [`park`]).
    ///
    /// [`park`]: PartialSink::park
    pub fn must_wait(&self) -> bool {
        !self.has_room() && self.park()
    }

    /// Asks the writer thread to wake the loop once there is room; false
    /// if there is room already (then read on). Asked before the check
    /// again, so a buffer finished in between is not missed.
    pub fn park(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| w.park())
    }

    /// After the data ended: whether the writer thread is still writing
    /// (it wakes the loop when done; ask again after every wake). False
    /// when there is no thread or it has ended.
    pub fn must_wait_for_writer(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| w.wait_for_end())
    }

    /// After the data ended and the writer ended: takes back the file and
    /// the hash, or the error that stopped the writer (a full disk).
    pub fn settle(&mut self) -> io::Result<()> {
        self.join_writer()
    }

    /// Waits for the writer thread, if any, and takes back the file and
    /// the hash.
    fn join_writer(&mut self) -> io::Result<()> {
        if let Some(w) = self.writer.take() {
            let (partial, hasher) = w.finish()?;
            self.partial = Some(partial);
            self.hasher = hasher;
        }
        Ok(())
    }
}

impl PartialSink {
    /// Starts the writer thread at the first data byte (with the kept
    /// file, when resumed); without a free thread the work is inline.
    fn start_writer(&mut self) -> io::Result<()> {
        self.started = true;
        let partial = match self.partial.take() {
            Some(p) => p,
            None => PartialFile::create(&self.dir)?,
        };
        let prefix = Prefix {
            hasher: self.hasher.clone(),
            len: self.len,
        };
        match Writer::start(partial, self.waker.clone(), self.direct, prefix) {
            Started::Running(w) => self.writer = Some(Box::new(w)),
            Started::Busy(partial) => self.partial = Some(partial),
            Started::Failed(e) if self.len > 0 || self.piece => {
                // The kept prefix went with the thread: this attempt fails.
                return Err(io::Error::other(format!(
                    "cannot start a file writer thread ({e})"
                )));
            }
            Started::Failed(e) => {
                // That temp file went with the thread: make another.
                log::warn!("cannot start a file writer thread ({e}); writing inline");
                self.partial = Some(PartialFile::create(&self.dir)?);
            }
        }
        Ok(())
    }

    /// `bytes` without what is left to skip of a whole-file answer's
    /// prefix (bytes we hold already).
    fn skip_prefix<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let n = usize::try_from(self.skip).map_or(bytes.len(), |s| s.min(bytes.len()));
        self.skip -= n as u64;
        &bytes[n..]
    }
}

impl DataSink for PartialSink {
    fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
        let bytes = self.skip_prefix(bytes);
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.started {
            self.start_writer()?;
        }
        if let Some(w) = self.writer.as_mut() {
            if !w.send(bytes) {
                // The thread stopped: its error says why.
                self.join_writer()?;
                return Err(io::Error::other("the file writer stopped early"));
            }
        } else if let Some(p) = self.partial.as_mut() {
            p.file().write_all(bytes)?;
            self.hasher.update(bytes);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The decoder's full buffer goes to the writer thread as it is, and a
    /// buffer the thread is done with comes back: no copy on the loop.
    fn write_buffer(&mut self, buf: Vec<u8>) -> io::Result<Vec<u8>> {
        let len = buf.len() as u64;
        let Some(w) = self.writer.as_mut().filter(|_| self.skip == 0) else {
            // Inline, or the first bytes, which start the writer.
            self.write_data(&buf)?;
            return Ok(buf);
        };
        if !w.send_owned(buf) {
            self.join_writer()?;
            return Err(io::Error::other("the file writer stopped early"));
        }
        let next = w.recycled();
        self.len += len;
        Ok(next)
    }

    fn wants_header(&self) -> bool {
        self.expect.is_some() || self.resumed_at > 0
    }

    /// Before a byte is written, a download's reply must name its file and
    /// be the range asked for (from `resumed_at`, 0 for a new file), or the
    /// whole file (a peer that ignores ranges), whose prefix we skip.
    fn begin_data(
        &mut self,
        header: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        if let Some(want) = &self.expect {
            let id = header.get("file_id").and_then(serde_json::Value::as_str);
            if !id.is_some_and(|id| id.eq_ignore_ascii_case(want)) {
                return Err("the reply names another file".into());
            }
        }
        let asked = self.resumed_at;
        let range = crate::protocol::ByteRange::from_members(header);
        self.range_before_data = range.is_some();
        match range {
            None if header.contains_key("offset") || header.contains_key("length") => {
                Err("the reply's range is not in byte counts".into())
            }
            None if self.piece => {
                Err("the reply is the whole file, not the piece asked for".into())
            }
            None => {
                self.skip = asked;
                self.whole_answer = asked > 0;
                Ok(())
            }
            Some(r) if r.offset == asked => Ok(()),
            Some(r) => Err(format!(
                "the reply starts at byte {}, not the {asked} asked for",
                r.offset
            )),
        }
    }

    /// The writer thread is told that the data ended and finishes on its
    /// own (see [`PartialSink::must_wait_for_writer`]): the loop never
    /// waits for the disk here.
    fn end_data(&mut self) -> io::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.close();
        }
        Ok(())
    }
}

/// What to write.
pub enum Payload {
    /// A small message already encoded.
    Bytes {
        /// The bytes.
        buf: Vec<u8>,
        /// How many are written.
        pos: usize,
    },
    /// A FILE_DATA streamed from a file.
    File(Box<FileDataEncoder>),
    /// An HTTP response shared with other connections: its first `end`
    /// bytes (a HEAD request gets only the head).
    Shared {
        /// The whole response, as rendered once.
        buf: Arc<[u8]>,
        /// How many of them this connection sends.
        end: usize,
        /// How many are written.
        pos: usize,
    },
}

impl Payload {
    /// A small message.
    pub fn bytes(buf: Vec<u8>) -> Self {
        Payload::Bytes { buf, pos: 0 }
    }

    /// The first `end` bytes of a shared response.
    pub fn shared(buf: Arc<[u8]>, end: usize) -> Self {
        let end = end.min(buf.len());
        Payload::Shared { buf, end, pos: 0 }
    }

    /// Bytes written so far, for the in-memory payloads (a file's
    /// progress is its encoder's).
    pub fn written(&self) -> usize {
        match self {
            Payload::Bytes { pos, .. } | Payload::Shared { pos, .. } => *pos,
            Payload::File(_) => 0,
        }
    }
}

/// Why a connection writes (for logs and timeouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Our reply to GET_FILE.
    FileReply,
    /// A message we send to a peer.
    Send,
    /// A FILE_DATA we push to a peer.
    Push,
    /// An HTTP response.
    Http,
}

/// A download from one source.
pub struct FetchConn {
    /// The download.
    pub transfer: TransferId,
    /// The attempt.
    pub attempt: u64,
    /// The file as the catalog knows it.
    pub record: FileRecord,
    /// The source as logs name it: "peer_id (host:port)".
    pub source: String,
    /// The offset the request asked from (0: the whole file): the bytes
    /// before it are the sink's kept prefix.
    pub from: u64,
    /// GET_FILE bytes and how many are written.
    pub request: Vec<u8>,
    /// Written so far.
    pub request_pos: usize,
    /// The FILE_DATA decoder.
    pub decoder: MessageDecoder,
    /// Where the data goes.
    pub sink: PartialSink,
    /// Bytes received from the socket.
    pub received: u64,
    /// A piece of a download from several holders: its length (`from` is
    /// its offset).
    pub piece: Option<u64>,
}

impl FetchConn {
    /// An attempt asking `source` (as logs name it) for `record`: the whole
    /// file, from an offset (`range` without a length), or one piece (with
    /// one); the reply is decoded within `limits` into `sink`.
    pub fn new(
        (transfer, attempt): (TransferId, u64),
        record: FileRecord,
        source: String,
        range: Option<crate::protocol::ByteRange>,
        limits: crate::protocol::decoder::DecoderLimits,
        sink: PartialSink,
    ) -> Self {
        FetchConn {
            transfer,
            attempt,
            request: crate::protocol::Message::GetFile {
                file_id: record.file_id.clone(),
                range,
            }
            .to_bytes(),
            record,
            source,
            from: range.map_or(0, |r| r.offset),
            request_pos: 0,
            decoder: MessageDecoder::new(limits),
            sink,
            received: 0,
            piece: range.and_then(|r| r.length),
        }
    }

    /// Bytes of the file this attempt has: a kept prefix and what arrived
    /// after it, decoded (a whole-file answer's skipped bytes are not
    /// counted twice).
    pub fn file_bytes(&self) -> u64 {
        self.sink.data_starts_at() + self.decoder.data_len()
    }
}

/// What a connection does.
pub enum Role {
    /// Inbound P2P: reading one message.
    Read {
        /// Decoder (boxed: it is the largest state of any role).
        decoder: Box<MessageDecoder>,
        /// Where pushed data goes (boxed: the hash state is large).
        sink: Box<PartialSink>,
        /// Bytes received.
        received: u64,
    },
    /// Inbound HTTP: reading the request head.
    Http {
        /// Bytes so far (capped).
        buf: Vec<u8>,
    },
    /// Outbound, waiting for the connect to finish.
    Connecting(Box<Role>),
    /// Writing, then closing.
    Write {
        /// What.
        payload: Payload,
        /// Why.
        kind: WriteKind,
    },
    /// Fetching a file.
    Fetch(Box<FetchConn>),
    /// Our side is done: wait for the peer's FIN, discarding what it sends,
    /// so closing never resets a reply still in flight.
    Drain,
}

/// One connection in the slab.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Distinguishes this connection from an earlier one in the same slot.
    pub gen: u64,
    /// What it does.
    pub role: Role,
    /// When it was opened.
    pub opened: Time,
    /// When it last moved a byte.
    pub last_active: Time,
    /// When its role last changed (deadlines of the new phase count from it).
    pub phase_started: Time,
    /// Whether it came from a listener (candidates for eviction at the cap).
    pub inbound: bool,
    /// For outbound connections: the peer address dialled (for logs).
    pub target: Option<crate::ids::PeerAddr>,
    /// For inbound connections: the remote address (a push's source, for
    /// the push quota).
    pub remote_ip: Option<std::net::IpAddr>,
    /// The push quota's ticket once a pushed FILE_DATA's data started.
    pub push: Option<crate::core::push_quota::PushTicket>,
    /// The upload this connection streams, as the core registered it.
    pub upload: Option<crate::core::UploadId>,
}

/// What the driver should do after a step.
pub enum Outcome {
    /// Wait for the next readiness event.
    Blocked,
    /// The budget is used; step again soon.
    Yield,
    /// Close it (done or quietly closed: none; failed: why).
    Close(Option<CloseReason>),
    /// Close a download's connection: its source failed so.
    Fail(crate::core::SourceFailure),
    /// An HTTP request head is complete.
    HttpHead,
    /// The outbound connect finished.
    Connected,
    /// Everything is written.
    Written,
    /// The file writer's queue is full: step again when it wakes the loop.
    Parked,
}

/// Why the driver closes a connection early: said in the logs, and what an
/// upload that ends so counts as.
#[derive(Debug)]
pub enum CloseReason {
    /// The outbound connect failed.
    ConnectFailed(std::io::Error),
    /// A read failed.
    ReadFailed(std::io::Error),
    /// A write failed; `source_changed` when it was our file that changed
    /// under it (it shrank, or no longer hashes to its id).
    WriteFailed {
        /// The error.
        error: std::io::Error,
        /// Our file changed while being sent.
        source_changed: bool,
    },
    /// Sending our GET_FILE failed.
    SendFailed(std::io::Error),
    /// The message could not be decoded (the decoder's sentence).
    BadMessage(String),
    /// The peer closed before its message was complete.
    Incomplete,
    /// An HTTP client closed before its request was complete.
    HttpClosedEarly,
    /// Its deadline came (which one, in words).
    TimedOut(&'static str),
    /// Unfinished inbound messages held more than the inbound budget.
    InboundBudget,
    /// The file being sent is being changed on disk.
    FileChanged,
}

impl CloseReason {
    /// The `reason` label of an upload that ended so (see `/metrics`).
    pub fn upload_label(&self) -> &'static str {
        match self {
            CloseReason::WriteFailed {
                source_changed: true,
                ..
            }
            | CloseReason::FileChanged => "disk",
            CloseReason::TimedOut(_) => "stalled",
            _ => "closed",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ConnectFailed(e) => write!(f, "cannot connect: {e}"),
            CloseReason::ReadFailed(e) => write!(f, "read failed: {e}"),
            CloseReason::WriteFailed { error, .. } => write!(f, "write failed: {error}"),
            CloseReason::SendFailed(e) => write!(f, "cannot send GET_FILE: {e}"),
            CloseReason::BadMessage(why) => write!(f, "bad message: {why}"),
            CloseReason::Incomplete => f.write_str("closed before a complete message"),
            CloseReason::HttpClosedEarly => f.write_str("HTTP client closed early"),
            CloseReason::TimedOut(which) => f.write_str(which),
            CloseReason::InboundBudget => f.write_str("over the inbound memory budget"),
            CloseReason::FileChanged => f.write_str("the file is being changed on disk"),
        }
    }
}

/// A writer that reports WouldBlock once `left` bytes are written, so a
/// fast peer yields to the others.
struct Budgeted<'a> {
    inner: &'a mut TcpStream,
    left: usize,
    until: Instant,
    hit: bool,
}

impl Write for Budgeted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // At least one write per step, so a slow encoder still progresses.
        let wrote = self.left < STEP_BUDGET;
        if self.left == 0 || (wrote && Instant::now() >= self.until) {
            self.hit = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.left);
        let written = self.inner.write(&buf[..n])?;
        self.left -= written;
        Ok(written)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes as much of `payload` as the socket and the budget allow.
pub fn write_payload(stream: &mut TcpStream, payload: &mut Payload) -> io::Result<Outcome> {
    let mut w = Budgeted {
        inner: stream,
        left: STEP_BUDGET,
        until: Instant::now() + STEP_TIME,
        hit: false,
    };
    match payload {
        Payload::Bytes { buf, pos } => write_from(&mut w, buf, pos),
        Payload::Shared { buf, end, pos } => write_from(&mut w, &buf[..*end], pos),
        Payload::File(enc) => match enc.write_to(&mut w)? {
            WriteProgress::Done => Ok(Outcome::Written),
            WriteProgress::Blocked if w.hit => Ok(Outcome::Yield),
            WriteProgress::Blocked => Ok(Outcome::Blocked),
        },
    }
}

/// Writes `buf` from `pos` on, as far as the socket and the budget allow.
fn write_from(w: &mut Budgeted<'_>, buf: &[u8], pos: &mut usize) -> io::Result<Outcome> {
    while *pos < buf.len() {
        match w.write(&buf[*pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(if w.hit {
                    Outcome::Yield
                } else {
                    Outcome::Blocked
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Outcome::Written)
}

/// Reads into `buf` until WouldBlock, EOF or the budget, calling `on_bytes`
/// for each chunk; `on_bytes` returns `Some(outcome)` to stop early.
pub fn read_loop(
    stream: &mut TcpStream,
    buf: &mut [u8],
    mut on_bytes: impl FnMut(&[u8]) -> Option<Outcome>,
    on_eof: impl FnOnce() -> Outcome,
) -> Outcome {
    let mut moved = 0usize;
    let until = Instant::now() + STEP_TIME;
    loop {
        if moved >= STEP_BUDGET || (moved > 0 && Instant::now() >= until) {
            return Outcome::Yield;
        }
        match stream.read(buf) {
            Ok(0) => return on_eof(),
            Ok(n) => {
                moved += n;
                if let Some(out) = on_bytes(&buf[..n]) {
                    return out;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Blocked,
            Err(e) => return Outcome::Close(Some(CloseReason::ReadFailed(e))),
        }
    }
}

/// Feeds bytes to a decoder: `Some(outcome)` when the message ended or
/// failed.
pub fn feed(
    decoder: &mut MessageDecoder,
    sink: &mut dyn DataSink,
    bytes: &[u8],
) -> Result<bool, DecodeError> {
    match decoder.feed(bytes, sink)? {
        Feed::NeedMore => Ok(false),
        Feed::Done { .. } => Ok(true),
    }
}

/// Checks whether a non-blocking connect finished: `Ok(true)` connected,
/// `Ok(false)` still connecting, `Err` failed.
pub fn connect_status(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::file_writer::{MAX_SENDS_PER_READ, WRITER_DEPTH};
    use crate::protocol::decoder::{DecoderLimits, Feed, MessageDecoder, DATA_BUFFER_LEN};
    use crate::storage::file_id_for;
    use crate::storage::names_in;
    use std::sync::atomic::Ordering;
    use std::thread;

    #[test]
    fn the_writer_thread_hashes_and_writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut sink = PartialSink::new(dir.path().to_path_buf());
        // More buffers than the queue holds, of varied sizes.
        for piece in bytes.chunks(40_001) {
            sink.write_data(piece).unwrap();
        }
        assert_eq!(sink.len, bytes.len() as u64);
        sink.end_data().unwrap();
        sink.settle().unwrap();
        let partial = sink
            .partial
            .take()
            .expect("the file is back after end_data");
        assert_eq!(std::fs::read(partial.path()).unwrap(), bytes);
        assert_eq!(sink.hasher.clone().finish("7"), file_id_for(&bytes, "7"));
        let path = partial.path().to_path_buf();
        drop(partial);
        assert!(!path.exists(), "an uncommitted temp file removes itself");
    }

    #[test]
    fn a_full_writer_queue_parks_the_reader_and_its_wake_comes() {
        let dir = tempfile::tempdir().unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(7)).unwrap());
        let mut sink = PartialSink::with_waker(dir.path().to_path_buf(), waker);
        let mut events = mio::Events::with_capacity(8);
        let mut bytes = Vec::new();
        let mut parks = 0;
        let mut buf = Vec::new();
        for round in 0..2_000u32 {
            // What the loop does: read only while there is room...
            if sink.must_wait() {
                parks += 1;
                // ...and wait for the writer's wake, which must come.
                poll.poll(&mut events, Some(std::time::Duration::from_secs(10)))
                    .unwrap();
                assert!(
                    events.iter().any(|e| e.token() == mio::Token(7)),
                    "no wake within 10 s"
                );
                continue;
            }
            for _ in 0..MAX_SENDS_PER_READ {
                buf.clear();
                buf.resize(DATA_BUFFER_LEN, round as u8);
                bytes.extend_from_slice(&buf);
                buf = sink.write_buffer(std::mem::take(&mut buf)).unwrap();
                let w = sink.writer.as_ref().unwrap();
                assert!(w.flow.in_flight.load(Ordering::SeqCst) <= WRITER_DEPTH);
            }
            if parks >= 3 {
                break;
            }
        }
        assert!(parks > 0, "the writer never fell behind");
        sink.end_data().unwrap();
        sink.settle().unwrap();
        let partial = sink.partial.take().unwrap();
        assert_eq!(sink.len, bytes.len() as u64);
        assert_eq!(std::fs::read(partial.path()).unwrap(), bytes);
    }

    #[test]
    fn the_end_of_the_data_never_waits_for_the_writer_and_its_end_wakes_the_loop() {
        let dir = tempfile::tempdir().unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(9)).unwrap());
        let mut sink = PartialSink::for_download(dir.path().to_path_buf(), waker);
        let bytes: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
        for piece in bytes.chunks(DATA_BUFFER_LEN) {
            while sink.must_wait() {
                let mut events = mio::Events::with_capacity(8);
                poll.poll(&mut events, Some(std::time::Duration::from_secs(10)))
                    .unwrap();
            }
            sink.write_data(piece).unwrap();
        }
        // The writer has a queue to write and fsync: `end_data` only tells it.
        sink.end_data().unwrap();
        assert!(sink.partial.is_none(), "end_data joined the writer");
        let mut events = mio::Events::with_capacity(8);
        let t = Instant::now();
        // What the loop does: ask again after every wake until it ended.
        while sink.must_wait_for_writer() {
            assert!(t.elapsed().as_secs() < 20, "the writer never ended");
            poll.poll(&mut events, Some(std::time::Duration::from_secs(10)))
                .unwrap();
            assert!(
                events.iter().any(|e| e.token() == mio::Token(9)),
                "no wake within 10 s"
            );
        }
        sink.settle().unwrap();
        let partial = sink.partial.take().expect("the file is back");
        assert_eq!(std::fs::read(partial.path()).unwrap(), bytes);
        assert_eq!(sink.hasher.clone().finish("1"), file_id_for(&bytes, "1"));
        // No thread: nothing to wait for.
        let mut inline = PartialSink::new(dir.path().to_path_buf());
        assert!(!inline.must_wait_for_writer());
        inline.settle().unwrap();
    }

    #[test]
    fn one_read_hands_the_writer_at_most_max_sends_per_read_buffers() {
        /// Counts hand-overs since `reset`.
        #[derive(Default)]
        struct Counting(usize);
        impl DataSink for Counting {
            fn write_data(&mut self, _: &[u8]) -> io::Result<()> {
                self.0 += 1;
                Ok(())
            }
            fn write_buffer(&mut self, buf: Vec<u8>) -> io::Result<Vec<u8>> {
                self.0 += 1;
                Ok(buf)
            }
        }
        let payload = vec![0xa5u8; 3 * DATA_BUFFER_LEN + 17];
        let msg = format!(
            "{{\"type\":\"FILE_DATA\",\"data\":\"{}\"}}",
            faster_hex::hex_string(&payload)
        );
        let header = msg.find(":\"").unwrap() + 2;
        // First reads of every parity and fill level, then full reads.
        for first in [
            1,
            2,
            3,
            header + 1,
            header + 2 * DATA_BUFFER_LEN - 1,
            READ_BUF_LEN,
        ] {
            let mut decoder = MessageDecoder::new(DecoderLimits::default());
            let mut sink = Counting::default();
            let mut rest = msg.as_bytes();
            let mut most = 0;
            let mut take = first;
            while !rest.is_empty() {
                let (read, next) = rest.split_at(take.min(rest.len()));
                sink.0 = 0;
                decoder.feed(read, &mut sink).unwrap();
                most = most.max(sink.0);
                rest = next;
                take = READ_BUF_LEN;
            }
            assert!(most <= MAX_SENDS_PER_READ, "{most} hand-overs in one read");
        }
    }

    #[test]
    fn a_writer_that_ended_never_leaves_the_reader_parked() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = PartialSink::new(dir.path().to_path_buf());
        sink.write_data(&[1u8; 1000]).unwrap();
        let w = sink.writer.as_ref().unwrap();
        w.flow.in_flight.store(WRITER_DEPTH, Ordering::SeqCst);
        assert!(!sink.has_room());
        w.cancel.store(true, Ordering::Relaxed);
        // Wake the thread with one more buffer: it sees the cancel and ends.
        let _ = sink.write_buffer(vec![2u8; 10]);
        let t = Instant::now();
        while !sink.has_room() {
            assert!(
                t.elapsed().as_secs() < 10,
                "still no room after the writer ended"
            );
            thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!sink.park());
    }

    #[test]
    fn a_sink_dropped_mid_data_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = PartialSink::new(dir.path().to_path_buf());
        for _ in 0..20 {
            sink.write_data(&[5u8; 100_000]).unwrap();
        }
        assert_eq!(names_in(dir.path()).len(), 1);
        drop(sink);
        // The writer thread ends on its own (the loop does not wait for
        // it) and its temp file goes with it.
        let t = Instant::now();
        while !names_in(dir.path()).is_empty() {
            assert!(t.elapsed().as_secs() < 10, "the temp file is still there");
            thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    #[test]
    fn a_decoded_file_data_ends_with_the_file_and_hash_in_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let msg = format!(
            r#"{{"type":"FILE_DATA","file_id":"x","data":"{}"}}"#,
            faster_hex::hex_string(&payload)
        );
        let mut sink = PartialSink::new(dir.path().to_path_buf());
        let mut decoder = MessageDecoder::new(DecoderLimits::default());
        let mut done = false;
        for piece in msg.as_bytes().chunks(65_536) {
            if let Feed::Done { .. } = decoder.feed(piece, &mut sink).unwrap() {
                done = true;
            }
        }
        assert!(done);
        sink.settle().unwrap();
        let partial = sink.partial.take().expect("temp file");
        assert_eq!(std::fs::read(partial.path()).unwrap(), payload);
        assert_eq!(sink.hasher.finish(""), file_id_for(&payload, ""));
        // Without data, nothing is created.
        let empty = tempfile::tempdir().unwrap();
        let mut sink = PartialSink::new(empty.path().to_path_buf());
        let mut decoder = MessageDecoder::new(DecoderLimits::default());
        let msg = br#"{"type":"FILE_DATA","data":""}"#;
        assert!(matches!(
            decoder.feed(msg, &mut sink).unwrap(),
            Feed::Done { .. }
        ));
        assert!(sink.partial.is_none());
        assert!(names_in(empty.path()).is_empty());
    }

    /// Waits (bounded) for a sink's writer thread to end, then settles it.
    fn settled(mut sink: PartialSink) -> PartialSink {
        let start = std::time::Instant::now();
        while sink.must_wait_for_writer() {
            assert!(start.elapsed().as_secs() < 20, "the writer never ended");
            thread::sleep(std::time::Duration::from_millis(2));
        }
        sink.settle().unwrap();
        sink
    }

    /// Feeds `msg` to a new decoder writing into `sink`: done, or the error.
    fn decode_into(sink: &mut PartialSink, msg: &[u8]) -> Result<bool, DecodeError> {
        let mut decoder = MessageDecoder::new(DecoderLimits::default());
        let mut done = false;
        for piece in msg.chunks(65_536) {
            done |= matches!(decoder.feed(piece, sink)?, Feed::Done { .. });
        }
        Ok(done)
    }

    #[test]
    fn a_cut_download_keeps_its_bytes_and_the_resumed_one_completes_file_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(7)).unwrap());
        let payload: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i * 31 + i / 977) as u8)
            .collect();
        let hex = faster_hex::hex_string(&payload);
        // A whole-file reply cut after about 60% of its data.
        let head = r#"{"type":"FILE_DATA","file_id":"x","data":""#;
        let cut_msg = format!("{head}{}", &hex[..3_600_001]);
        let mut first = PartialSink::for_download(dir.path().to_path_buf(), waker.clone());
        assert!(!decode_into(&mut first, cut_msg.as_bytes()).unwrap());
        first.end_data().unwrap();
        let kept = settled(first).into_kept().expect("bytes were written");
        let k = kept.prefix.len;
        assert!(k > 1_000_000 && k <= 1_800_000, "kept {k}");
        assert_eq!(std::fs::metadata(kept.partial.path()).unwrap().len(), k);

        // Each answer a resumed download may get, on a copy of the prefix.
        let copy = |kept: &KeptPrefix| {
            let mut partial = PartialFile::create(dir.path()).unwrap();
            std::io::Write::write_all(partial.file(), &payload[..k as usize]).unwrap();
            let hasher = kept.prefix.hasher.clone();
            KeptPrefix {
                partial,
                prefix: Prefix { hasher, len: k },
            }
        };
        let rest = &hex[2 * k as usize..];
        let ranged = format!(
            r#"{{"type":"FILE_DATA","file_id":"x","offset":{k},"length":{},"data":"{rest}"}}"#,
            payload.len() as u64 - k
        );
        let whole = format!(r#"{{"type":"FILE_DATA","file_id":"x","data":"{hex}"}}"#);
        for (what, msg) in [("the range asked for", ranged), ("the whole file", whole)] {
            let resumed =
                PartialSink::resuming(dir.path().to_path_buf(), waker.clone(), copy(&kept));
            let mut resumed = resumed.unwrap();
            assert_eq!(resumed.resumed_at(), Some(k));
            assert!(decode_into(&mut resumed, msg.as_bytes()).unwrap(), "{what}");
            let mut resumed = settled(resumed);
            assert_eq!(resumed.len, payload.len() as u64, "{what}");
            let partial = resumed.partial.take().expect("the file");
            assert!(std::fs::read(partial.path()).unwrap() == payload, "{what}");
            assert_eq!(
                resumed.hasher.clone().finish("9"),
                file_id_for(&payload, "9")
            );
        }

        // A range from elsewhere is refused before a byte is written.
        let mut resumed =
            PartialSink::resuming(dir.path().to_path_buf(), waker.clone(), kept).unwrap();
        let wrong = format!(r#"{{"type":"FILE_DATA","offset":{},"data":"00"}}"#, k - 1);
        let err = decode_into(&mut resumed, wrong.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains(&format!("not the {k} asked for")),
            "{err}"
        );
        assert_eq!(resumed.len, k);
    }
}
