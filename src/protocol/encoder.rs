//! Streaming FILE_DATA writer.
//!
//! Interface contract: `FileDataEncoder::new(record, source)`; the driver
//! calls `write_to(socket)` on every writable event until it returns
//! `WriteProgress::Done`. The whole message never exists in memory: the
//! envelope, then the hex of one chunk at a time, then `"}` and `\n`.
//!
//! One buffer is allocated per encoder, sized for the envelope plus the hex
//! of one chunk plus the tail, so a small file goes out in a single write.
//! For a mapped file, the pages of each chunk are dropped once its hex is
//! sent, which keeps resident memory flat however large the file is.

use crate::ids::FileId;
use crate::protocol::{ByteRange, FileRecord};
use serde_json::Value;
use std::io::{self, Write};

/// File bytes hex-encoded at a time (512 KiB of hex).
pub const CHUNK_LEN: usize = 256 * 1024;

/// How far past the chunk being encoded the kernel is asked to read ahead.
const READ_AHEAD: usize = 4 * CHUNK_LEN;

/// What follows the hex: the end of the string, of the object, and a newline.
const TAIL: &[u8] = b"\"}\n";

/// The bytes to send.
pub enum FileSource {
    /// A memory-mapped file the caller guarantees won't shrink (benches).
    Mapped(memmap2::Mmap),
    /// A memory-mapped file under a lease that warns us before anyone may
    /// change it: the driver drops the encoder (and with it the map, then
    /// the lease, both owned by one value) as soon as
    /// [`LeasedMap::breaking`] says so.
    Leased(Box<dyn LeasedMap>),
    /// A file read chunk by chunk, checked before the message is closed.
    Read(Box<dyn ChunkReader>),
    /// Bytes in memory (tests, benches, empty files).
    Memory(Vec<u8>),
}

/// A mapped file and what keeps it from changing while mapped, owned
/// together so that dropping it always unmaps before letting a writer in.
pub trait LeasedMap: Send {
    /// The mapping.
    fn map(&self) -> &memmap2::Mmap;
    /// Someone is waiting to change the file: drop this now.
    fn breaking(&self) -> bool;
}

/// A file read in order, one chunk at a time, for files that no lease
/// guards: what it read is checked before the message may end.
pub trait ChunkReader: Send {
    /// The length to send, fixed when the file was opened.
    fn file_len(&self) -> u64;
    /// Fills `buf` with the bytes at `offset` (called in order, each offset
    /// following the last). An error (the file shrank) ends the message
    /// unfinished.
    fn read_chunk(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Every byte was read: an error (they no longer hash to the id) keeps
    /// the message from being closed, so no reader takes it as complete.
    fn finish(&mut self) -> io::Result<()>;
}

/// An error that ended a FILE_DATA because the file being sent changed
/// (shrank, or its bytes no longer match the id), as opposed to a socket
/// error. Tells the driver to have the file checked again.
#[derive(Debug)]
pub struct SourceChanged(pub String);

impl std::fmt::Display for SourceChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the file changed while being sent: {}", self.0)
    }
}

impl std::error::Error for SourceChanged {}

/// Whether `e` (from [`FileDataEncoder::write_to`]) means the file changed.
pub fn is_source_changed(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<SourceChanged>().is_some())
}

fn source_changed(e: io::Error) -> io::Error {
    io::Error::other(SourceChanged(e.to_string()))
}

impl FileSource {
    /// The file's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            FileSource::Mapped(m) => m.len(),
            FileSource::Leased(l) => l.map().len(),
            FileSource::Read(r) => usize::try_from(r.file_len()).unwrap_or(usize::MAX),
            FileSource::Memory(v) => v.len(),
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn map(&self) -> Option<&memmap2::Mmap> {
        match self {
            FileSource::Mapped(m) => Some(m),
            FileSource::Leased(l) => Some(l.map()),
            _ => None,
        }
    }
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
    source: FileSource,
    /// The id the bytes are sent under.
    file_id: FileId,
    /// Where a [`FileSource::Read`] chunk is read to (empty otherwise).
    scratch: Vec<u8>,
    /// Envelope (first chunk only) + hex of the current chunk + tail (last
    /// chunk only). Allocated once; freed when the message is done.
    buf: Vec<u8>,
    /// Valid bytes in `buf`.
    end: usize,
    /// Bytes of `buf` already written.
    pos: usize,
    /// Where the current chunk's hex starts in `buf`.
    hex_start: usize,
    /// File offset and length of the chunk in `buf`.
    chunk_start: usize,
    chunk_len: usize,
    /// File offset of the next chunk to load.
    next_off: usize,
    /// The first chunk has been loaded (behind the envelope).
    started: bool,
    /// `buf` holds a chunk not yet fully written.
    loaded: bool,
    /// The chunk in `buf` is the last one (the tail follows its hex).
    last: bool,
    done: bool,
    /// The kernel was asked to read the mapping ahead up to here.
    advised_to: usize,
    /// Bytes of the message handed to the writer so far (for `/metrics`).
    written: u64,
    /// File offsets `[start, stop)` sent: the whole file, or the range.
    start: usize,
    stop: usize,
}

impl FileDataEncoder {
    /// Prepares a FILE_DATA for `record` with the bytes of `source`.
    /// `file_size` is the source's length in bytes, whatever the record says.
    pub fn new(record: &FileRecord, source: FileSource) -> Self {
        Self::with_range(record, source, None)
    }

    /// Prepares a FILE_DATA with only the bytes of `range` (clamped to the
    /// source: an offset past the end sends no bytes), announced by the
    /// `offset` and `length` fields; `file_size` stays the whole file's.
    ///
    /// A [`FileSource::Read`] (a copy no lease guards) ignores the range
    /// and sends the whole file without range fields: its bytes are proven
    /// only by hashing all of them before the closing bytes go out, which a
    /// range can't do, and a client must handle a whole-file answer anyway
    /// (that is what a Python peer sends).
    pub fn with_range(record: &FileRecord, source: FileSource, range: Option<ByteRange>) -> Self {
        let total = source.len();
        let range = match source {
            FileSource::Read(_) => None,
            _ => range,
        };
        let (start, stop) = match range {
            Some(r) => {
                let (a, b) = r.clamp(total as u64);
                // Both are at most `total`, a usize.
                (
                    usize::try_from(a).unwrap_or(total),
                    usize::try_from(b).unwrap_or(total),
                )
            }
            None => (0, total),
        };
        let sent = range.map(|_| ByteRange {
            offset: start as u64,
            length: Some((stop - start) as u64),
        });
        let head = envelope_head(record, total as u64, sent);
        let first = (stop - start).min(CHUNK_LEN);
        let mut buf = vec![0u8; head.len() + 2 * first + TAIL.len()];
        buf[..head.len()].copy_from_slice(&head);
        if let Some(m) = source.map() {
            // Only a hint: failure changes nothing but speed.
            let _ = m.advise(memmap2::Advice::Sequential);
        }
        let scratch = match &source {
            FileSource::Read(_) => vec![0u8; first],
            _ => Vec::new(),
        };
        Self {
            source,
            file_id: record.file_id.clone(),
            scratch,
            buf,
            end: head.len(),
            pos: 0,
            hex_start: head.len(),
            chunk_start: start,
            chunk_len: 0,
            next_off: start,
            started: false,
            loaded: false,
            last: false,
            done: false,
            advised_to: start,
            written: 0,
            start,
            stop,
        }
    }

    /// Writes as much as `w` accepts.
    ///
    /// Returns `Blocked` when `w` reports `WouldBlock` (call again when
    /// writable; the position is kept, even mid-chunk), `Done` when the whole
    /// message is written. `Interrupted` is retried; a write of 0 bytes is a
    /// `WriteZero` error; other errors are returned as they are.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<WriteProgress> {
        loop {
            if self.done {
                return Ok(WriteProgress::Done);
            }
            if !self.loaded {
                self.load_next()?;
            }
            while self.pos < self.end {
                match w.write(&self.buf[self.pos..self.end]) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "peer accepted no bytes",
                        ))
                    }
                    Ok(n) => {
                        self.pos = (self.pos + n).min(self.end);
                        self.written += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(WriteProgress::Blocked)
                    }
                    Err(e) => return Err(e),
                }
            }
            self.chunk_sent();
        }
    }

    /// Bytes of the message (JSON and hex) handed to the writer so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// File bytes (not hex) already handed to the socket, counted from
    /// the start of the range sent.
    pub fn file_bytes_sent(&self) -> u64 {
        if self.done {
            return self.file_len();
        }
        if !self.loaded {
            return (self.next_off - self.start) as u64;
        }
        let hex_sent = self
            .pos
            .saturating_sub(self.hex_start)
            .min(2 * self.chunk_len);
        (self.chunk_start - self.start + hex_sent / 2) as u64
    }

    /// Bytes of the file being sent: its length, or the range's.
    pub fn file_len(&self) -> u64 {
        (self.stop - self.start) as u64
    }

    /// Whether every byte of the message has been written.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The id the bytes are sent under.
    pub fn file_id(&self) -> &FileId {
        &self.file_id
    }

    /// Whether the file is mapped under a lease that is being broken (the
    /// encoder must be dropped now, before the file can change).
    pub fn lease_breaking(&self) -> bool {
        match &self.source {
            FileSource::Leased(l) => l.breaking(),
            _ => false,
        }
    }

    /// Fills `buf` with the hex of the next chunk (after the envelope, for
    /// the first) and the tail if it is the last.
    fn load_next(&mut self) -> io::Result<()> {
        // Where this message's bytes end (the file's end, or the range's).
        let total = self.stop;
        // The first chunk follows the envelope already in `buf`.
        let hex_start = if self.started { 0 } else { self.end };
        let start = self.next_off;
        let stop = (start + CHUNK_LEN).min(total);
        let len = stop - start;
        let hex_end = hex_start + 2 * len;
        let last = stop == total;
        let needed = hex_end + if last { TAIL.len() } else { 0 };
        if needed > self.buf.len() {
            return Err(io::Error::other("FILE_DATA buffer too small"));
        }
        if let Some(m) = self.source.map() {
            // Start reading the chunks after this one from disk now, so the
            // encode below (on the loop) finds them in memory rather than
            // waiting on a page fault: a file just downloaded with direct
            // I/O, or long unread, is not in the page cache.
            // Only what no earlier call asked for.
            let from = stop.max(self.advised_to);
            let to = (stop + READ_AHEAD).min(total);
            if to > from {
                let _ = m.advise_range(memmap2::Advice::WillNeed, from, to - from);
                self.advised_to = to;
            }
        }
        let bytes: &[u8] = match &mut self.source {
            FileSource::Mapped(m) => &m[start..stop],
            FileSource::Leased(l) => &l.map()[start..stop],
            FileSource::Memory(v) => &v[start..stop],
            FileSource::Read(r) => {
                let chunk = &mut self.scratch[..len];
                r.read_chunk(start as u64, chunk).map_err(source_changed)?;
                if last {
                    // The closing bytes go into `buf` only if this passes.
                    r.finish().map_err(source_changed)?;
                }
                chunk
            }
        };
        if len > 0 {
            faster_hex::hex_encode(bytes, &mut self.buf[hex_start..hex_end])
                .map_err(|e| io::Error::other(format!("hex encoding failed: {e:?}")))?;
        }
        let mut end = hex_end;
        if last {
            self.buf[end..end + TAIL.len()].copy_from_slice(TAIL);
            end += TAIL.len();
        }
        self.end = end;
        self.pos = 0;
        self.hex_start = hex_start;
        self.chunk_start = start;
        self.chunk_len = len;
        self.next_off = stop;
        self.started = true;
        self.loaded = true;
        self.last = last;
        Ok(())
    }

    /// The whole buffer is written: release the chunk's pages and move on.
    fn chunk_sent(&mut self) {
        if let Some(m) = self.source.map() {
            if self.chunk_len > 0 {
                drop_pages(m, self.chunk_start, self.chunk_len);
            }
        }
        self.loaded = false;
        if self.last {
            self.done = true;
            self.buf = Vec::new();
            self.scratch = Vec::new();
            self.end = 0;
            self.pos = 0;
        }
    }
}

/// `{"type":"FILE_DATA",...,"file_size":N,"data":"` with every value
/// serialized (escaped) by serde_json; the timestamp keeps its exact text.
/// A range adds `"offset"` and `"length"` just before `data`.
fn envelope_head(record: &FileRecord, size: u64, range: Option<ByteRange>) -> Vec<u8> {
    let mut fields = vec![
        ("file_id", Value::String(record.file_id.0.clone())),
        ("file_name", Value::String(record.file_name.clone())),
        ("file_owner", Value::String(record.file_owner.0.clone())),
        ("file_timestamp", record.file_timestamp.to_value()),
        ("file_size", Value::from(size)),
    ];
    if let Some(r) = range {
        fields.push(("offset", Value::from(r.offset)));
        fields.push(("length", Value::from(r.length.unwrap_or(0))));
    }
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"{\"type\":\"FILE_DATA\"");
    for (key, value) in fields {
        head.extend_from_slice(b",\"");
        head.extend_from_slice(key.as_bytes());
        head.extend_from_slice(b"\":");
        // Display of a Value is its compact JSON text.
        head.extend_from_slice(value.to_string().as_bytes());
    }
    head.extend_from_slice(b",\"data\":\"");
    head
}

/// Tells the kernel the pages of `[offset, offset + len)` of the mapping are
/// no longer needed. Errors are ignored: it is only a memory hint.
#[cfg(unix)]
#[allow(unsafe_code)]
fn drop_pages(mmap: &memmap2::Mmap, offset: usize, len: usize) {
    // SAFETY: MADV_DONTNEED is unsafe in memmap2 because it may change what
    // a borrowed mapping reads. This mapping is a read-only shared file
    // mapping (memmap2's `Mmap::map` is MAP_SHARED, so it shows what the
    // file holds) and no slice of this range is borrowed now (its hex was
    // written out). A mapped file can't shrink or change under us: the
    // driver maps only files under a read lease and drops the map before
    // the lease lets a writer in (benches map private temp files), so
    // dropping the pages only makes a later access re-read the same bytes.
    let _ = unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
}

#[cfg(not(unix))]
fn drop_pages(_mmap: &memmap2::Mmap, _offset: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decoder::{DataField, DecoderLimits, Feed, MessageDecoder};
    use crate::protocol::{FileSize, Message, Timestamp};
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, RngCore, SeedableRng};

    /// Accepts a random number of bytes per call; sometimes WouldBlock or
    /// Interrupted instead.
    struct FlakyWriter {
        out: Vec<u8>,
        rng: SmallRng,
        max_per_call: usize,
        blocked: usize,
    }

    impl FlakyWriter {
        fn new(seed: u64, max_per_call: usize) -> Self {
            Self {
                out: Vec::new(),
                rng: SmallRng::seed_from_u64(seed),
                max_per_call,
                blocked: 0,
            }
        }
    }

    impl Write for FlakyWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self.rng.gen_range(0..8) {
                0 => {
                    self.blocked += 1;
                    Err(io::ErrorKind::WouldBlock.into())
                }
                1 => Err(io::ErrorKind::Interrupted.into()),
                _ => {
                    let n = self.rng.gen_range(1..=buf.len().min(self.max_per_call));
                    self.out.extend_from_slice(&buf[..n]);
                    Ok(n)
                }
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn record(name: &str, timestamp: Timestamp) -> FileRecord {
        FileRecord {
            file_name: name.into(),
            // Deliberately wrong: the encoder sends the source's length.
            file_size: FileSize::Bytes(999_999_999),
            file_id: "f00d".into(),
            file_owner: "owner \"!\"".into(),
            file_timestamp: timestamp,
        }
    }

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0; len];
        SmallRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    /// Drives the encoder to completion, checking progress is monotonic.
    fn encode(enc: &mut FileDataEncoder, w: &mut FlakyWriter) {
        let mut last = 0;
        let mut calls = 0;
        loop {
            let progress = enc.write_to(w).unwrap();
            let sent = enc.file_bytes_sent();
            assert!(sent >= last && sent <= enc.file_len());
            // Whatever was reported sent really is on the wire.
            assert!(w.out.len() as u64 >= 2 * sent);
            last = sent;
            calls += 1;
            assert!(calls < 10_000_000);
            if progress == WriteProgress::Done {
                break;
            }
        }
        assert!(enc.is_done());
        assert_eq!(enc.file_bytes_sent(), enc.file_len());
        assert_eq!(enc.write_to(w).unwrap(), WriteProgress::Done);
    }

    /// Decodes `wire` in random pieces; returns the message and the data.
    fn decode(wire: &[u8], seed: u64) -> (Message, Vec<u8>, DataField) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut decoder = MessageDecoder::new(DecoderLimits::default());
        let mut data = Vec::new();
        let mut offset = 0;
        loop {
            assert!(offset < wire.len(), "message did not end");
            let n = rng.gen_range(1..=(wire.len() - offset).min(100_000));
            match decoder.feed(&wire[offset..offset + n], &mut data).unwrap() {
                Feed::NeedMore => offset += n,
                Feed::Done { consumed } => {
                    // Only the newline follows the closing brace.
                    assert_eq!(&wire[offset + consumed..], b"\n");
                    break;
                }
            }
        }
        let decoded = decoder.finish().unwrap();
        let message = Message::from_object(&decoded.fields).unwrap();
        (message, data, decoded.data)
    }

    fn round_trip(len: usize, seed: u64, max_per_call: usize) {
        let bytes = random_bytes(len, seed);
        let rec = record("dir/x \"y\".txt\n", Timestamp::from_secs(1_744_169_352));
        let mut enc = FileDataEncoder::new(&rec, FileSource::Memory(bytes.clone()));
        let mut w = FlakyWriter::new(seed, max_per_call);
        encode(&mut enc, &mut w);
        assert_eq!(w.out.len(), enc_len(&rec, len));
        assert_eq!(enc.bytes_written(), w.out.len() as u64);
        assert!(w.out.ends_with(b"\"}\n"));
        let (message, data, field) = decode(&w.out, seed ^ 0x5555);
        assert!(data == bytes, "data differs for len {len}");
        assert_eq!(field, DataField::Bytes { len: len as u64 });
        let Message::FileData(h) = message else {
            panic!("not FILE_DATA")
        };
        assert_eq!(
            h.to_record(),
            Some(FileRecord {
                file_size: FileSize::Bytes(len as u64),
                ..rec
            })
        );
    }

    fn enc_len(rec: &FileRecord, len: usize) -> usize {
        envelope_head(rec, len as u64, None).len() + 2 * len + TAIL.len()
    }

    #[test]
    fn round_trip_through_a_flaky_writer_at_chunk_boundaries() {
        for (i, len) in [
            0,
            1,
            2,
            CHUNK_LEN - 1,
            CHUNK_LEN,
            CHUNK_LEN + 1,
            2 * CHUNK_LEN,
            3 * 1024 * 1024 + 17,
        ]
        .into_iter()
        .enumerate()
        {
            round_trip(len, i as u64 + 1, 70_000);
        }
    }

    #[test]
    fn round_trip_with_tiny_writes_resumes_mid_chunk() {
        round_trip(CHUNK_LEN + 3, 42, 7);
        round_trip(10, 43, 1);
    }

    #[test]
    fn the_whole_message_is_strict_json_with_the_fields_in_order() {
        let rec = record("a\\b\u{1}é", Timestamp::from_secs(7));
        let mut enc = FileDataEncoder::new(&rec, FileSource::Memory(b"hi\x00\xff".to_vec()));
        let mut w = FlakyWriter::new(1, 1 << 20);
        encode(&mut enc, &mut w);
        let text = String::from_utf8(w.out).unwrap();
        assert_eq!(
            text,
            "{\"type\":\"FILE_DATA\",\"file_id\":\"f00d\",\"file_name\":\"a\\\\b\\u0001é\",\
             \"file_owner\":\"owner \\\"!\\\"\",\"file_timestamp\":7,\"file_size\":4,\
             \"data\":\"686900ff\"}\n"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["file_name"], "a\\b\u{1}é");
    }

    #[test]
    fn timestamps_keep_their_exact_text() {
        for ts in [
            "1744169352.0",
            "1743970142.6140459",
            "\"Sun Jun 15 21:36:41 2025\"",
        ] {
            let value: Value = serde_json::from_str(ts).unwrap();
            let timestamp = match value {
                Value::Number(n) => Timestamp::Number(n),
                Value::String(s) => Timestamp::Text(s),
                _ => unreachable!(),
            };
            let rec = record("n", timestamp.clone());
            let head = String::from_utf8(envelope_head(&rec, 1, None)).unwrap();
            assert!(
                head.contains(&format!("\"file_timestamp\":{ts},")),
                "{head}"
            );
            let mut enc = FileDataEncoder::new(&rec, FileSource::Memory(vec![1]));
            let mut w = FlakyWriter::new(3, 1000);
            encode(&mut enc, &mut w);
            let (Message::FileData(h), _, _) = decode(&w.out, 4) else {
                panic!("not FILE_DATA")
            };
            assert_eq!(h.file_timestamp, Some(timestamp));
        }
    }

    #[test]
    fn a_mapped_file_round_trips() {
        let bytes = random_bytes(3 * CHUNK_LEN + 1000, 9);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        // SAFETY (test): the temp file is private to this test and unchanged.
        #[allow(unsafe_code)]
        let mmap = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let rec = record("m", Timestamp::from_secs(1));
        let mut enc = FileDataEncoder::new(&rec, FileSource::Mapped(mmap));
        let mut w = FlakyWriter::new(5, 200_000);
        encode(&mut enc, &mut w);
        let (_, data, _) = decode(&w.out, 6);
        assert!(data == bytes);
    }

    #[test]
    fn an_empty_mapped_file_round_trips() {
        let file = tempfile::tempfile().unwrap();
        #[allow(unsafe_code)]
        // SAFETY (test): the temp file is private to this test and unchanged.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let rec = record("e", Timestamp::from_secs(1));
        let mut enc = FileDataEncoder::new(&rec, FileSource::Mapped(mmap));
        let mut w = FlakyWriter::new(5, 200_000);
        encode(&mut enc, &mut w);
        let (_, data, field) = decode(&w.out, 6);
        assert!(data.is_empty());
        assert_eq!(field, DataField::Bytes { len: 0 });
    }

    #[test]
    fn a_small_file_goes_out_in_one_write() {
        struct Counting(Vec<u8>, usize);
        impl Write for Counting {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.extend_from_slice(buf);
                self.1 += 1;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let rec = record("s", Timestamp::from_secs(1));
        let mut enc = FileDataEncoder::new(&rec, FileSource::Memory(vec![7; 1000]));
        let mut w = Counting(Vec::new(), 0);
        assert_eq!(enc.write_to(&mut w).unwrap(), WriteProgress::Done);
        assert_eq!(w.1, 1);
        // A large one in one write per chunk.
        let mut enc = FileDataEncoder::new(&rec, FileSource::Memory(vec![7; 4 * CHUNK_LEN]));
        let mut w = Counting(Vec::new(), 0);
        assert_eq!(enc.write_to(&mut w).unwrap(), WriteProgress::Done);
        assert_eq!(w.1, 4);
    }

    #[test]
    fn a_writer_that_accepts_nothing_is_a_write_zero_error_and_others_pass_through() {
        struct Zero;
        impl Write for Zero {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        struct Reset;
        impl Write for Reset {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let rec = record("z", Timestamp::from_secs(1));
        let mut enc = FileDataEncoder::new(&rec, FileSource::Memory(vec![1, 2, 3]));
        let err = enc.write_to(&mut Zero).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        let err = enc.write_to(&mut Reset).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(enc.file_bytes_sent(), 0);
    }

    #[test]
    fn blocked_writes_keep_their_position() {
        /// Accepts `budget` bytes, then blocks until topped up.
        struct Budget(Vec<u8>, usize);
        impl Write for Budget {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.1 == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = buf.len().min(self.1);
                self.1 -= n;
                self.0.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let bytes = random_bytes(2 * CHUNK_LEN + 5, 11);
        let rec = record("b", Timestamp::from_secs(1));
        let head_len = envelope_head(&rec, bytes.len() as u64, None).len();
        let mut enc = FileDataEncoder::new(&rec, FileSource::Memory(bytes.clone()));
        let mut w = Budget(Vec::new(), head_len + 2 * 1000 + 1);
        assert_eq!(enc.write_to(&mut w).unwrap(), WriteProgress::Blocked);
        assert_eq!(enc.file_bytes_sent(), 1000);
        w.1 = 2 * CHUNK_LEN;
        assert_eq!(enc.write_to(&mut w).unwrap(), WriteProgress::Blocked);
        assert_eq!(enc.file_bytes_sent(), CHUNK_LEN as u64 + 1000);
        w.1 = usize::MAX;
        assert_eq!(enc.write_to(&mut w).unwrap(), WriteProgress::Done);
        let (_, data, _) = decode(&w.0, 12);
        assert!(data == bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn encoder_to_decoder_round_trips_random_sizes(
            len in prop_oneof![0usize..2048, 0usize..(3 * CHUNK_LEN)],
            seed in any::<u64>(),
            max_per_call in 1usize..300_000,
        ) {
            round_trip(len, seed, max_per_call.max(len / 64 + 1));
        }
    }

    /// Encodes `range` of `bytes` from `source` and decodes the message:
    /// its header and the data it carried.
    fn ranged(
        bytes: &[u8],
        source: FileSource,
        range: Option<ByteRange>,
        seed: u64,
    ) -> (crate::protocol::FileDataHeader, Vec<u8>) {
        let rec = record("r", Timestamp::from_secs(1));
        let mut enc = FileDataEncoder::with_range(&rec, source, range);
        let mut w = FlakyWriter::new(seed, 100_000);
        encode(&mut enc, &mut w);
        assert_eq!(enc.bytes_written(), w.out.len() as u64);
        let (message, data, _) = decode(&w.out, seed);
        let Message::FileData(header) = message else {
            panic!("not a FILE_DATA: {message:?}")
        };
        // The whole file's size, whatever part of it was sent.
        assert_eq!(header.file_size, Some(FileSize::Bytes(bytes.len() as u64)));
        (header, data)
    }

    #[test]
    fn every_offset_and_length_of_a_small_file_sends_exactly_that_slice() {
        let bytes = random_bytes(3 * 1024 + 5, 21);
        let n = bytes.len() as u64;
        for offset in 0..=n + 2 {
            for length in [
                Some(0),
                Some(1),
                Some(7),
                Some(n / 2),
                Some(n),
                Some(n + 9),
                None,
            ] {
                let range = ByteRange { offset, length };
                let (header, data) = ranged(
                    &bytes,
                    FileSource::Memory(bytes.clone()),
                    Some(range),
                    offset,
                );
                let start = offset.min(n) as usize;
                let end = length.map_or(n, |l| (offset.min(n) + l).min(n)) as usize;
                assert!(data == bytes[start..end], "{range:?}");
                assert_eq!(
                    header.range,
                    Some(ByteRange {
                        offset: start as u64,
                        length: Some((end - start) as u64)
                    })
                );
            }
        }
    }

    #[test]
    fn a_range_across_chunks_of_a_mapped_file_sends_that_slice() {
        let bytes = random_bytes(3 * CHUNK_LEN + 1000, 22);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        let n = bytes.len() as u64;
        let c = CHUNK_LEN as u64;
        for (offset, length) in [(0, n), (c - 1, c + 2), (c, c), (n - 1, 10), (n / 2, n)] {
            // SAFETY (test): the temp file is private to this test and unchanged.
            #[allow(unsafe_code)]
            let mmap = unsafe { memmap2::Mmap::map(&file) }.unwrap();
            let range = ByteRange {
                offset,
                length: Some(length),
            };
            let (header, data) = ranged(&bytes, FileSource::Mapped(mmap), Some(range), offset);
            let end = (offset + length).min(n);
            assert!(data == bytes[offset as usize..end as usize]);
            assert_eq!(header.range.map(|r| r.offset), Some(offset));
            assert_eq!(header.range.and_then(|r| r.length), Some(end - offset));
        }
    }

    #[test]
    fn without_a_range_the_message_has_no_range_fields() {
        let bytes = random_bytes(100, 23);
        let (header, data) = ranged(&bytes, FileSource::Memory(bytes.clone()), None, 1);
        assert_eq!(header.range, None);
        assert!(data == bytes);
    }

    /// A checked reader stand-in: serves `bytes` in order.
    struct InOrder(Vec<u8>);

    impl ChunkReader for InOrder {
        fn file_len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_chunk(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let at = offset as usize;
            buf.copy_from_slice(&self.0[at..at + buf.len()]);
            Ok(())
        }
        fn finish(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_checked_read_ignores_the_range_and_sends_the_whole_file_without_range_fields() {
        let bytes = random_bytes(CHUNK_LEN + 77, 24);
        let range = ByteRange {
            offset: 10,
            length: Some(20),
        };
        let source = FileSource::Read(Box::new(InOrder(bytes.clone())));
        let (header, data) = ranged(&bytes, source, Some(range), 2);
        assert_eq!(header.range, None);
        assert!(data == bytes);
    }
}
