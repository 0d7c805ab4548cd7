//! Streaming FILE_DATA writer (HELPER A fills this in).
//!
//! Interface contract: `FileDataEncoder::new(record, source)`; the driver
//! calls `write_to(socket)` on every writable event until it returns
//! `WriteProgress::Done`. The whole message never exists in memory: the
//! envelope, then the hex of one chunk at a time, then `"}` and `\n`.

use crate::protocol::FileRecord;
use std::io::{self, Write};

/// The bytes to send.
pub enum FileSource {
    /// A memory-mapped file (the normal case).
    Mapped(memmap2::Mmap),
    /// Bytes in memory (tests, benches, empty files).
    Memory(Vec<u8>),
}

/// Result of one `write_to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteProgress {
    /// The socket would block; call again when writable.
    Blocked,
    /// Every byte of the message is written.
    Done,
}

/// Writes one FILE_DATA message, chunk by chunk.
pub struct FileDataEncoder {
    _source: FileSource,
}

impl FileDataEncoder {
    /// Prepares a FILE_DATA for `record` with the bytes of `source`.
    pub fn new(_record: &FileRecord, source: FileSource) -> Self {
        Self { _source: source }
    }
    /// Writes as much as `w` accepts.
    pub fn write_to<W: Write>(&mut self, _w: &mut W) -> io::Result<WriteProgress> {
        Ok(WriteProgress::Done)
    }
    /// File bytes (not hex) already handed to the socket.
    pub fn file_bytes_sent(&self) -> u64 {
        0
    }
}
