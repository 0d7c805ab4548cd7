//! One connection of the loop and the I/O steps it can take.
//!
//! A connection has a role (reading a message, writing a reply, fetching a
//! file, serving HTTP...) and each step reads or writes until the socket
//! would block or the step's byte budget is used, so one fast transfer can't
//! starve the others. Steps return an [`Outcome`] that the driver acts on;
//! no protocol decision is made here.

use crate::core::Time;
use crate::ids::TransferId;
use crate::protocol::decoder::{DataSink, DecodeError, Decoded, Feed, MessageDecoder};
use crate::protocol::encoder::{FileDataEncoder, WriteProgress};
use crate::protocol::FileRecord;
use crate::storage::{FileHasher, PartialFile};
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

/// Bytes one step may move before yielding to other connections.
pub const STEP_BUDGET: usize = 8 * 1024 * 1024;

/// Time one step may take before yielding, whatever it moved: on a slow
/// host (or a debug build) 8 MiB of hex can take seconds to decode and
/// hash, and nobody else may wait that long.
pub const STEP_TIME: std::time::Duration = std::time::Duration::from_millis(5);

/// Where the decoded bytes of a FILE_DATA go: a temp file in the storage
/// folder (created when the first byte arrives), hashed on the way.
pub struct PartialSink {
    dir: PathBuf,
    /// The temp file, once data started.
    pub partial: Option<PartialFile>,
    /// SHA-256 of the bytes so far.
    pub hasher: FileHasher,
    /// Bytes written.
    pub len: u64,
}

impl PartialSink {
    /// A sink that will create its temp file in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            partial: None,
            hasher: FileHasher::new(),
            len: 0,
        }
    }
}

impl DataSink for PartialSink {
    fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.partial.is_none() {
            self.partial = Some(PartialFile::create(&self.dir)?);
        }
        if let Some(p) = self.partial.as_mut() {
            p.file().write_all(bytes)?;
        }
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
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
}

impl Payload {
    /// A small message.
    pub fn bytes(buf: Vec<u8>) -> Self {
        Payload::Bytes { buf, pos: 0 }
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
    /// The source's peerId (for logs).
    pub source: String,
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
}

/// What a connection does.
pub enum Role {
    /// Inbound P2P: reading one message.
    Read {
        /// Decoder (boxed: it is the largest state of any role).
        decoder: Box<MessageDecoder>,
        /// Where pushed data goes.
        sink: PartialSink,
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
}

/// What the driver should do after a step.
pub enum Outcome {
    /// Wait for the next readiness event.
    Blocked,
    /// The budget is used; step again soon.
    Yield,
    /// Close it (done, or failed: the reason for logs).
    Close(Option<String>),
    /// An inbound message is complete.
    Message(Decoded, PartialSink),
    /// An HTTP request head is complete.
    HttpHead,
    /// The outbound connect finished.
    Connected,
    /// Everything is written.
    Written,
    /// The fetched FILE_DATA is complete.
    Fetched(Decoded),
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
        Payload::Bytes { buf, pos } => {
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
        Payload::File(enc) => match enc.write_to(&mut w)? {
            WriteProgress::Done => Ok(Outcome::Written),
            WriteProgress::Blocked if w.hit => Ok(Outcome::Yield),
            WriteProgress::Blocked => Ok(Outcome::Blocked),
        },
    }
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
            Err(e) => return Outcome::Close(Some(format!("read failed: {e}"))),
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
