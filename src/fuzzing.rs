//! Invariant checks for fuzzing every parser, shared by the proptest suite
//! (`tests/fuzz_corpus.rs`) and the coverage-guided targets (`fuzz/`), so
//! both run exactly the same assertions.
//!
//! Each `check_*` function takes arbitrary input, runs one parser on it and
//! panics (with a message naming the invariant) if an invariant does not
//! hold. They assert properties, not just "no panic":
//!
//! - [`check_message_decoder`]: the incremental decoder gives the same
//!   result whatever the split points (derived from the input itself), ends
//!   the message at the top-level closing brace whatever follows, agrees
//!   with `serde_json` on what it accepts, keeps its memory bounded while
//!   bytes stream in, and any message it yields re-emits (strictly) and
//!   parses back to the same message;
//! - [`check_file_data_decoder`]: a FILE_DATA built from the input (hand
//!   assembled in any field order and whitespace, or written by the
//!   streaming encoder) decodes to exactly the payload in bounded pieces
//!   and bounded memory, at any split; arbitrary bytes inside `data` decode
//!   exactly when they are valid hex;
//! - [`check_http`]: `parse_request` never panics, re-parsing a longer
//!   buffer never changes a decided outcome, every response (errors and
//!   rendered routes) is well-formed HTTP/1.1 with a correct
//!   `Content-Length`, and network strings never change the page's markup;
//! - [`check_sanitizer`]: a sanitised name is one normal path component that
//!   stays inside the storage folder, not reserved, idempotent, and a name
//!   that is already safe is kept;
//! - [`check_metadata`]: the loader never panics; what it loads is sorted,
//!   unique and safe, and `to_json` -> `parse` gives back the same entries
//!   with no warning.
//!
//! Allocation bounds are measured by [`MeteredAlloc`], a global allocator
//! that counts per thread. A binary that wants them checked installs it
//! (`#[global_allocator]`); without it those assertions are skipped
//! ([`meter_installed`] tells which).

use crate::core::view::{
    Direction, EventKind, EventView, FileView, PeerView, StateView, TransferView,
};
use crate::http::{parse_request, render, ParseOutcome, Route, MAX_REQUEST};
use crate::protocol::decoder::{
    DataField, DataSink, DecodeError, Decoded, DecoderLimits, Feed, MessageDecoder, DATA_BUFFER_LEN,
};
use crate::protocol::encoder::{FileDataEncoder, FileSource, WriteProgress};
use crate::protocol::{FileRecord, FileSize, Message, Timestamp, MAX_JSON_DEPTH};
use crate::storage::metadata::{parse_with_warnings, to_json};
use crate::storage::names::{is_safe_local_name, sanitize_file_name, MAX_NAME_BYTES};
use serde_json::{Map, Value};
use std::io;
use std::path::{Component, Path};

pub use meter::{meter_installed, Meter, MeteredAlloc};

/// The decoder limits the checks use: an envelope that holds a GOSSIP_REPLY
/// with 50 files, the protocol's depth limit.
pub const FUZZ_LIMITS: DecoderLimits = DecoderLimits {
    max_envelope: 64 * 1024,
    max_data: 64 * 1024,
    max_depth: MAX_JSON_DEPTH,
};

/// Tight limits, under which fuzz-sized inputs reach every cap.
pub const TIGHT_LIMITS: DecoderLimits = DecoderLimits {
    max_envelope: 256,
    max_data: 16,
    max_depth: 8,
};

/// Slack allowed on top of the decoder's own buffers while it is fed
/// (allocator rounding, a `String` for an error message).
const ALLOC_SLACK: usize = 4096;

/// The most memory the decoder may hold while bytes stream in: the data
/// buffer plus the capped envelope, plus slack.
pub fn feed_memory_bound(limits: &DecoderLimits) -> usize {
    DATA_BUFFER_LEN + limits.max_envelope + ALLOC_SLACK
}

/// Per-thread allocation metering.
mod meter {
    #![allow(unsafe_code)]

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
        static LARGEST: Cell<usize> = const { Cell::new(0) };
        static TOTAL: Cell<usize> = const { Cell::new(0) };
    }

    fn on_alloc(size: usize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get().wrapping_add(size as isize);
            live.set(now);
            let _ = PEAK.try_with(|peak| {
                if now > peak.get() {
                    peak.set(now);
                }
            });
        });
        let _ = LARGEST.try_with(|l| {
            if size > l.get() {
                l.set(size);
            }
        });
        let _ = TOTAL.try_with(|t| t.set(t.get().wrapping_add(1)));
    }

    fn on_free(size: usize) {
        let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(size as isize)));
    }

    /// A global allocator (the system's) that counts, per thread, the bytes
    /// live, their peak and the largest single request. Install it with
    /// `#[global_allocator] static A: MeteredAlloc = MeteredAlloc;` in a test
    /// or fuzz binary; then [`Meter`] measures a stretch of code.
    pub struct MeteredAlloc;

    // SAFETY: every call is forwarded unchanged to `System`; the counters
    // are plain thread-local cells that never allocate.
    unsafe impl GlobalAlloc for MeteredAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded with the caller's guarantees.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                on_alloc(layout.size());
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded with the caller's guarantees.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                on_alloc(layout.size());
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) };
            on_free(layout.size());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded with the caller's guarantees.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                // Counted as a new block then the old one freed: the peak
                // is an upper bound of what a copying realloc needs.
                on_alloc(new_size);
                on_free(layout.size());
            }
            p
        }
    }

    /// Measures the allocations of the current thread from [`Meter::start`]
    /// on.
    pub struct Meter {
        base: isize,
    }

    impl Meter {
        /// Starts measuring: the peak and the largest request are reset.
        pub fn start() -> Meter {
            let base = LIVE.with(Cell::get);
            PEAK.with(|p| p.set(base));
            LARGEST.with(|l| l.set(0));
            Meter { base }
        }

        /// The most bytes live at once since the start, above what was live
        /// at the start.
        pub fn peak(&self) -> usize {
            PEAK.with(Cell::get).saturating_sub(self.base).max(0) as usize
        }

        /// The largest single allocation since the start.
        pub fn largest(&self) -> usize {
            LARGEST.with(Cell::get)
        }
    }

    /// Whether [`MeteredAlloc`] is this binary's global allocator (else the
    /// allocation bounds cannot be checked and are skipped).
    pub fn meter_installed() -> bool {
        let before = TOTAL.with(Cell::get);
        let probe = std::hint::black_box(vec![0u8; 64]);
        drop(probe);
        TOTAL.with(Cell::get) != before
    }
}

// ---------------------------------------------------------------------------
// Input-derived choices

/// A small deterministic generator seeded from the input, so that a crash
/// reproduces from the input bytes alone.
struct Choices(u64);

impl Choices {
    fn from_bytes(data: &[u8]) -> Choices {
        // FNV-1a.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Choices(h | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `1..=max`.
    fn piece(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }
}

/// Ascending cut points covering `len` bytes with pieces of 1..=`max` bytes.
fn random_cuts(choices: &mut Choices, len: usize, max: usize) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut at = 0;
    loop {
        at += choices.piece(max);
        if at >= len {
            return cuts;
        }
        cuts.push(at);
    }
}

// ---------------------------------------------------------------------------
// The message decoder

/// What decoding some bytes came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A complete message: the fields and data, the data bytes, and how many
    /// bytes of the input it took.
    Done(Decoded, Vec<u8>, usize),
    /// The input ended before the message did.
    Incomplete,
    /// Refused.
    Error(ErrorKind),
}

/// A [`DecodeError`] without its payload, for comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    TooLarge,
    TooDeep,
    Malformed,
    BadHex,
    Sink,
}

impl ErrorKind {
    fn of(e: &DecodeError) -> ErrorKind {
        match e {
            DecodeError::TooLarge => ErrorKind::TooLarge,
            DecodeError::TooDeep => ErrorKind::TooDeep,
            DecodeError::Malformed(_) => ErrorKind::Malformed,
            DecodeError::BadHex => ErrorKind::BadHex,
            DecodeError::Sink(_) => ErrorKind::Sink,
        }
    }

    /// Whether two refusals count as the same. An invalid `data` string
    /// that is also over `max_data` may be caught by either check first,
    /// depending on how much of it one feed holds: both refuse the data.
    fn same(self, other: ErrorKind) -> bool {
        use ErrorKind::{BadHex, TooLarge};
        self == other || matches!((self, other), (TooLarge, BadHex) | (BadHex, TooLarge))
    }
}

/// A sink that checks the decoded bytes against what they must be (when
/// known), without allocating (so it does not disturb the allocation
/// meter), and that every piece handed over is non-empty and at most one
/// data buffer long.
struct ExpectSink<'a> {
    expected: Option<&'a [u8]>,
    at: usize,
}

impl DataSink for ExpectSink<'_> {
    fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
        assert!(!bytes.is_empty(), "the decoder handed an empty piece");
        assert!(
            bytes.len() <= DATA_BUFFER_LEN,
            "a data piece of {} bytes is larger than the data buffer",
            bytes.len()
        );
        let end = self.at + bytes.len();
        if let Some(expected) = self.expected {
            assert!(
                end <= expected.len() && expected[self.at..end] == *bytes,
                "decoded data differs from the expected bytes at offset {}",
                self.at
            );
        }
        self.at = end;
        Ok(())
    }
}

/// Feeds `bytes` cut at `cuts` (ascending) into a new decoder. With
/// `expect`, the data goes to an [`ExpectSink`] that checks it against
/// `Some(bytes)` (or only checks piece sizes for `None`), and the returned
/// data is empty; without it, into a `Vec`. Checks the `consumed` contract.
fn decode_with_cuts(
    bytes: &[u8],
    cuts: &[usize],
    limits: DecoderLimits,
    expect: Option<Option<&[u8]>>,
) -> Outcome {
    let mut decoder = MessageDecoder::new(limits);
    let mut collected = Vec::new();
    let mut checker = expect.map(|expected| ExpectSink { expected, at: 0 });
    let mut offset = 0;
    for end in cuts.iter().copied().chain(std::iter::once(bytes.len())) {
        if end < offset || end > bytes.len() {
            continue;
        }
        let piece = &bytes[offset..end];
        let sink: &mut dyn DataSink = match checker.as_mut() {
            Some(c) => c,
            None => &mut collected,
        };
        match decoder.feed(piece, sink) {
            Err(e) => return Outcome::Error(ErrorKind::of(&e)),
            Ok(Feed::NeedMore) => {
                assert!(!decoder.is_done(), "NeedMore from a finished decoder");
            }
            Ok(Feed::Done { consumed }) => {
                assert!(consumed <= piece.len(), "consumed past the input");
                assert!(consumed > 0, "Done without consuming the closing brace");
                assert_eq!(
                    piece[consumed - 1],
                    b'}',
                    "a message must end at a closing brace"
                );
                assert!(decoder.is_done());
                // More input after the end changes nothing.
                assert_eq!(
                    decoder.feed(b"{}", &mut Vec::new()).ok(),
                    Some(Feed::Done { consumed: 0 })
                );
                if let Some(ExpectSink {
                    expected: Some(expected),
                    at,
                }) = &checker
                {
                    assert_eq!(*at, expected.len(), "decoded data is short");
                }
                return match decoder.finish() {
                    Ok(decoded) => Outcome::Done(decoded, collected, offset + consumed),
                    Err(e) => Outcome::Error(ErrorKind::of(&e)),
                };
            }
        }
        offset = end;
    }
    assert!(!decoder.is_done());
    Outcome::Incomplete
}

fn assert_same_outcome(whole: &Outcome, split: &Outcome, what: &str) {
    match (whole, split) {
        (Outcome::Incomplete, Outcome::Incomplete) => {}
        (Outcome::Error(a), Outcome::Error(b)) => {
            assert!(a.same(*b), "{what}: error {a:?} whole but {b:?} split");
        }
        (Outcome::Done(d1, _, c1), Outcome::Done(d2, _, c2)) => {
            assert_eq!(d1, d2, "{what}: a different message when split");
            assert_eq!(c1, c2, "{what}: the message ends elsewhere when split");
        }
        (a, b) => panic!("{what}: whole gives {a:?}, split gives {b:?}"),
    }
}

/// Depth of a JSON value (a scalar is 0, `{}` or `[]` is 1).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Decodes `data` whole and cut in many ways (every single cut only when
/// `exhaustive`), checks that every way gives the same outcome within the
/// memory bounds, and returns the outcome.
fn check_splits(data: &[u8], limits: DecoderLimits, exhaustive: bool) -> Outcome {
    let whole = decode_with_cuts(data, &[], limits, None);

    // The same message whatever the split.
    let expected_data: Option<&[u8]> = match &whole {
        Outcome::Done(_, bytes, _) => Some(bytes),
        _ => None,
    };
    let mut choices = Choices::from_bytes(data);
    let mut splits: Vec<(&str, Vec<usize>)> = vec![
        ("bytewise", (1..data.len()).collect()),
        (
            "structural",
            data.iter()
                .enumerate()
                .filter(|(_, b)| b"{}[]\":,\\".contains(b))
                .flat_map(|(i, _)| [i, i + 1])
                .collect(),
        ),
    ];
    for max in [2, 7, 64, 1024] {
        splits.push(("random", random_cuts(&mut choices, data.len(), max)));
    }
    if exhaustive && data.len() <= 64 {
        for cut in 0..=data.len() {
            splits.push(("single cut", vec![cut]));
        }
    }
    let meter_on = meter_installed();
    for (what, cuts) in &splits {
        let meter = Meter::start();
        let split = decode_with_cuts(data, cuts, limits, Some(expected_data));
        if meter_on {
            // Includes `finish`, which parses at most the capped envelope.
            let bound = feed_memory_bound(&limits) + 64 * limits.max_envelope;
            assert!(
                meter.peak() <= bound,
                "{what}: decoding held {} bytes (bound {bound})",
                meter.peak()
            );
        }
        assert_same_outcome(&whole, &split, what);
    }

    // Bounded memory while the bytes stream in (before `finish`).
    if meter_on {
        let mut decoder = MessageDecoder::new(limits);
        let mut sink = ExpectSink {
            expected: expected_data,
            at: 0,
        };
        let meter = Meter::start();
        for piece in data.chunks(97) {
            match decoder.feed(piece, &mut sink) {
                Ok(Feed::NeedMore) => {}
                _ => break,
            }
        }
        assert!(
            meter.peak() <= feed_memory_bound(&limits),
            "the decoder held {} bytes while fed (bound {})",
            meter.peak(),
            feed_memory_bound(&limits)
        );
        assert!(
            meter.largest() <= DATA_BUFFER_LEN.max(limits.max_envelope),
            "a single allocation of {} bytes while fed",
            meter.largest()
        );
        drop(decoder);
    }

    whole
}

/// Checks the incremental message decoder on arbitrary bytes.
///
/// - The input decoded whole, byte by byte, cut at every `{}[]":,\\`
///   (before and after), cut at pseudo-random points seeded from the input,
///   and (for inputs up to 64 bytes) cut once at every position, gives the
///   same message, the same end offset and the same data, or the same
///   refusal; under [`FUZZ_LIMITS`] and again under [`TIGHT_LIMITS`].
/// - A message ends at its top-level closing brace: decoding just the bytes
///   up to it gives the same message.
/// - Agreement with `serde_json`: an accepted message is the first JSON
///   value of the input, an object, ending at the same offset, whose members
///   other than `data` are the decoded fields and whose `data` is the hex of
///   the decoded bytes (or null); conversely a first value that is an object
///   without `data`, within the limits, is accepted with those fields.
/// - While bytes stream in, the decoder holds at most the data buffer plus
///   the capped envelope ([`feed_memory_bound`]), and no single allocation
///   is larger than either; with `finish`, at most 64 times the envelope
///   cap more.
/// - A message [`Message::from_object`] accepts, re-emitted with
///   [`Message::to_bytes`], decodes and parses back to the same message.
pub fn check_message_decoder(data: &[u8]) {
    let limits = FUZZ_LIMITS;
    let whole = check_splits(data, limits, true);
    // Again with tight limits, so that every cap is reached.
    check_splits(data, TIGHT_LIMITS, false);

    let Outcome::Done(decoded, bytes, consumed) = &whole else {
        check_serde_converse(data, &whole, &limits);
        return;
    };

    // Bytes after the closing brace do not matter.
    assert_eq!(
        &decode_with_cuts(&data[..*consumed], &[], limits, None),
        &whole,
        "the message depends on bytes after its closing brace"
    );

    // Agreement with serde_json.
    let mut stream = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let first = stream.next();
    let Some(Ok(Value::Object(mut object))) = first else {
        panic!("the decoder accepted what serde_json does not: {first:?}");
    };
    assert_eq!(
        stream.byte_offset(),
        *consumed,
        "the decoder and serde_json end the object at different offsets"
    );
    if !decoded.fields.contains_key("data") {
        match (object.remove("data"), decoded.data) {
            (None, DataField::Absent) => {}
            (Some(Value::Null), DataField::Null) => {}
            (Some(Value::String(hex)), DataField::Bytes { len }) => {
                assert_eq!(len, bytes.len() as u64);
                assert!(
                    hex.eq_ignore_ascii_case(&faster_hex::hex_string(bytes)),
                    "data is not the hex of the decoded bytes"
                );
            }
            (v, d) => panic!("data is {v:?} for serde_json but {d:?} for the decoder"),
        }
        assert_eq!(object, decoded.fields, "fields differ from serde_json's");
    }

    check_reemission(&decoded.fields);
}

/// The converse of the serde_json agreement, for an input the decoder did
/// not accept: if its first JSON value is an object without `data`, within
/// the limits, the decoder must have accepted it.
fn check_serde_converse(data: &[u8], whole: &Outcome, limits: &DecoderLimits) {
    let mut stream = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    if let Some(Ok(Value::Object(object))) = stream.next() {
        let end = stream.byte_offset();
        if !object.contains_key("data")
            && end <= limits.max_envelope
            && depth(&Value::Object(object.clone())) <= limits.max_depth
        {
            panic!("serde_json reads an object of {end} bytes the decoder refused: {whole:?}");
        }
    }
}

/// Normalises a message for the round trip: a FILE_DATA without a size is
/// sent with size 0.
fn normalized(m: Message) -> Message {
    match m {
        Message::FileData(mut h) => {
            if h.file_size.is_none() {
                h.file_size = Some(FileSize::Bytes(0));
            }
            Message::FileData(h)
        }
        other => other,
    }
}

/// Whatever [`Message::from_object`] makes of `fields`, what we would send
/// for it must read back as the same message (strict in what we send).
fn check_reemission(fields: &Map<String, Value>) {
    let Ok(message) = Message::from_object(fields) else {
        return;
    };
    let wire = message.to_bytes();
    let Outcome::Done(again, _, consumed) =
        decode_with_cuts(&wire, &[], DecoderLimits::default(), None)
    else {
        panic!("our own message does not decode: {wire:?}");
    };
    assert_eq!(consumed, wire.len(), "our own message has trailing bytes");
    let reparsed = Message::from_object(&again.fields)
        .unwrap_or_else(|e| panic!("our own {} does not parse: {e}", message.kind()));
    assert_eq!(
        normalized(reparsed),
        normalized(message.clone()),
        "a message does not survive re-emission"
    );
    assert_eq!(
        Message::parse(&wire).map(normalized),
        Ok(normalized(message)),
        "Message::parse disagrees with the decoder on our own message"
    );
}

// ---------------------------------------------------------------------------
// FILE_DATA

/// Checks the streaming FILE_DATA decoder.
///
/// The input's first two bytes choose a variant, the rest is the payload:
/// - a FILE_DATA holding the payload, either written by
///   [`FileDataEncoder`] into a writer that takes input-chosen amounts, or
///   hand-assembled like the Python peers send it (`data` in any position,
///   upper-case hex, whitespace, float or string timestamps, an A-style
///   trailing newline and junk after the object), or the not-found reply;
///   decoded at input-derived split points, it must give exactly the payload
///   (checked piece by piece), the header fields and a FILE_DATA message,
///   with the decoder holding at most [`feed_memory_bound`];
/// - the payload as the raw contents of the `data` string: it must decode
///   exactly when it is even-length hex (any case), to those bytes, and be
///   refused as `BadHex` (or `TooLarge`) otherwise, at every split.
pub fn check_file_data_decoder(data: &[u8]) {
    let (ctl, payload) = match data {
        [a, b, rest @ ..] => ([*a, *b], rest),
        [a] => ([*a, 0], &[][..]),
        [] => ([0, 0], &[][..]),
    };
    let mut choices = Choices::from_bytes(data);
    let variant = ctl[0];
    let limits = DecoderLimits {
        max_data: if ctl[1] & 0x80 != 0 {
            u64::from(ctl[1] & 0x3f)
        } else {
            FUZZ_LIMITS.max_data
        },
        ..FUZZ_LIMITS
    };

    let timestamp = match (variant >> 5) & 3 {
        0 => Timestamp::from_secs(1_744_169_352),
        1 => Timestamp::Number(serde_json::Number::from_f64(1_743_970_142.614_045_9).unwrap()),
        2 => Timestamp::Text("Sun Jun 15 21:36:41 2025".into()),
        _ => Timestamp::Number(serde_json::from_str("1744169352.0").unwrap()),
    };
    let record = FileRecord {
        file_name: "dir/EldenRing \"quoted\" {x}.txt".into(),
        file_size: FileSize::Bytes(payload.len() as u64),
        file_id: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        file_owner: "Starscourge Radahn!".into(),
        file_timestamp: timestamp,
    };
    let not_found = variant & 0x80 != 0 && variant & 0x10 != 0;

    // The message, and where it ends (what may follow is not part of it).
    let (wire, message_end) = if not_found {
        let wire = Message::file_not_found().to_bytes();
        let end = wire.len();
        (wire, end)
    } else if variant & 0x80 != 0 {
        let wire = encode_file_data(&record, payload, &mut choices);
        let end = wire.len() - 1;
        (wire, end)
    } else {
        assemble_file_data(&record, payload, variant)
    };
    let expected_fields = {
        let mut m = Map::new();
        if not_found {
            let Value::Object(v) = Message::file_not_found().to_value() else {
                unreachable!()
            };
            m = v;
            m.remove("data");
        } else {
            m.insert("type".into(), Value::String("FILE_DATA".into()));
            record.write_fields(&mut m);
        }
        m
    };
    let payload_fits = payload.len() as u64 <= limits.max_data;
    let expected_payload: &[u8] = if not_found { &[] } else { payload };

    let splits = [
        vec![],
        random_cuts(&mut choices, wire.len(), 3),
        random_cuts(&mut choices, wire.len(), 200),
        if wire.len() <= 1024 {
            (1..wire.len()).collect()
        } else {
            random_cuts(&mut choices, wire.len(), 64)
        },
    ];
    let meter_on = meter_installed();
    for cuts in &splits {
        let meter = Meter::start();
        let outcome = decode_with_cuts(&wire, cuts, limits, Some(Some(expected_payload)));
        if meter_on {
            let bound = feed_memory_bound(&limits) + 64 * wire.len().min(limits.max_envelope);
            assert!(
                meter.peak() <= bound,
                "FILE_DATA decoding held {} bytes (bound {bound})",
                meter.peak()
            );
        }
        match outcome {
            Outcome::Done(decoded, _, consumed) => {
                assert!(payload_fits || not_found, "data over max_data was accepted");
                assert_eq!(consumed, message_end, "FILE_DATA ends elsewhere");
                assert_eq!(decoded.fields, expected_fields);
                let expected_data = if not_found {
                    DataField::Null
                } else {
                    DataField::Bytes {
                        len: payload.len() as u64,
                    }
                };
                assert_eq!(decoded.data, expected_data);
                let Ok(Message::FileData(header)) = Message::from_object(&decoded.fields) else {
                    panic!("a FILE_DATA does not parse as one");
                };
                if not_found {
                    assert!(header.file_id.is_none() && header.to_record().is_none());
                } else {
                    assert_eq!(header.to_record().as_ref(), Some(&record));
                }
            }
            Outcome::Error(ErrorKind::TooLarge) if !payload_fits && !not_found => {}
            other => panic!("FILE_DATA of {} bytes: {other:?}", payload.len()),
        }
    }

    check_raw_hex(payload, limits, &mut choices);
}

/// Writes a FILE_DATA with the streaming encoder into a writer that takes
/// input-chosen amounts per call (and sometimes would block).
fn encode_file_data(record: &FileRecord, payload: &[u8], choices: &mut Choices) -> Vec<u8> {
    struct Flaky<'a> {
        out: Vec<u8>,
        choices: &'a mut Choices,
    }
    impl io::Write for Flaky<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self.choices.next() % 8 {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                1 => Err(io::ErrorKind::Interrupted.into()),
                _ => {
                    let n = buf.len().min(self.choices.piece(300));
                    self.out.extend_from_slice(&buf[..n]);
                    Ok(n)
                }
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut encoder = FileDataEncoder::new(record, FileSource::Memory(payload.to_vec()));
    assert_eq!(encoder.file_len(), payload.len() as u64);
    let mut w = Flaky {
        out: Vec::new(),
        choices,
    };
    let mut last_sent = 0;
    loop {
        let progress = encoder.write_to(&mut w).expect("writing to memory fails");
        let sent = encoder.file_bytes_sent();
        assert!(sent >= last_sent && sent <= payload.len() as u64);
        last_sent = sent;
        if progress == WriteProgress::Done {
            break;
        }
    }
    assert!(encoder.is_done());
    assert_eq!(encoder.file_bytes_sent(), payload.len() as u64);
    assert_eq!(w.out.last(), Some(&b'\n'), "FILE_DATA ends with a newline");
    w.out
}

/// A FILE_DATA as the Python peers write it: field order, whitespace and
/// hex case chosen by `variant`, followed by a newline and junk. Returns
/// the bytes and the length of the message in them.
fn assemble_file_data(record: &FileRecord, payload: &[u8], variant: u8) -> (Vec<u8>, usize) {
    let mut hex = faster_hex::hex_string(payload);
    if variant & 1 != 0 {
        hex.make_ascii_uppercase();
    }
    let mut fields = Map::new();
    record.write_fields(&mut fields);
    let mut members: Vec<String> = vec![r#""type": "FILE_DATA""#.into()];
    for (k, v) in &fields {
        members.push(format!("{}: {v}", Value::String(k.clone())));
    }
    let pos = usize::from((variant >> 1) & 7).min(members.len());
    members.insert(pos, format!("\"data\" : \"{hex}\""));
    let (open, sep, close) = if variant & 0x10 != 0 {
        (" \n\t{\r\n  ", " ,\n  ", "\n}")
    } else {
        ("{", ", ", "}")
    };
    let mut out = format!("{open}{}{close}", members.join(sep)).into_bytes();
    let end = out.len();
    // A-style newline, then bytes that are not part of the message.
    out.extend_from_slice(b"\n{\"type\":\"junk\"");
    (out, end)
}

/// The payload as the raw text of a `data` string (up to its first quote).
fn check_raw_hex(payload: &[u8], limits: DecoderLimits, choices: &mut Choices) {
    let text = match payload.iter().position(|&b| b == b'"') {
        Some(p) => &payload[..p],
        None => payload,
    };
    let mut wire = br#"{"type":"FILE_DATA","file_id":"x","data":""#.to_vec();
    wire.extend_from_slice(text);
    wire.extend_from_slice(br#"","file_size":1}"#);
    let valid = text.len() % 2 == 0 && text.iter().all(u8::is_ascii_hexdigit);
    let expected = if valid {
        let mut out = vec![0; text.len() / 2];
        faster_hex::hex_decode(text, &mut out).expect("valid hex");
        Some(out)
    } else {
        None
    };
    let fits = (text.len() / 2) as u64 <= limits.max_data;
    let splits = [
        vec![],
        random_cuts(choices, wire.len(), 5),
        if wire.len() <= 1024 {
            (1..wire.len()).collect()
        } else {
            random_cuts(choices, wire.len(), 64)
        },
    ];
    for cuts in &splits {
        let outcome = decode_with_cuts(&wire, cuts, limits, Some(expected.as_deref()));
        match (&expected, outcome) {
            (Some(bytes), Outcome::Done(decoded, _, _)) if fits => {
                assert_eq!(
                    decoded.data,
                    DataField::Bytes {
                        len: bytes.len() as u64
                    }
                );
            }
            (Some(_), Outcome::Error(ErrorKind::TooLarge)) if !fits => {}
            (None, Outcome::Error(ErrorKind::BadHex)) => {}
            (None, Outcome::Error(ErrorKind::TooLarge)) if !fits => {}
            (e, o) => panic!(
                "data {:?}: expected {}, got {o:?}",
                String::from_utf8_lossy(text),
                if e.is_some() { "bytes" } else { "BadHex" }
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP

/// A response split into its status code, headers and body, after checking
/// that it is well-formed HTTP/1.1: a status line, header lines of token
/// names and printable values, `\r\n\r\n`, the headers every response
/// carries, and a `Content-Length` equal to the body's length (or, when
/// `head_only`, no body at all).
fn well_formed_response(resp: &[u8], head_only: bool) -> (u16, Vec<(String, String)>, usize) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("response has no end of head: {resp:?}"));
    let head = &resp[..end + 4];
    let body = &resp[end + 4..];
    for (i, &b) in head.iter().enumerate() {
        let ok = match b {
            b'\r' => head.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && head[i - 1] == b'\r',
            _ => b == b' ' || b.is_ascii_graphic(),
        };
        assert!(ok, "byte {b:#04x} at {i} in a response head");
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(resp) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, end + 4),
        other => panic!("httparse cannot read our response head: {other:?}"),
    }
    assert_eq!(parsed.version, Some(1), "not HTTP/1.1");
    let code = parsed.code.expect("status code");
    assert!((100..=999).contains(&code));
    assert!(resp.starts_with(format!("HTTP/1.1 {code} ").as_bytes()));
    assert!(!parsed.reason.unwrap_or("").trim().is_empty(), "no reason");
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8(h.value.to_vec()).expect("ASCII header value"),
            )
        })
        .collect();
    let find = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let lengths = find("Content-Length");
    assert_eq!(lengths.len(), 1, "Content-Length headers: {lengths:?}");
    let length: usize = lengths[0].parse().expect("numeric Content-Length");
    if head_only {
        assert!(body.is_empty(), "a HEAD response has a body");
    } else {
        assert_eq!(length, body.len(), "Content-Length differs from the body");
    }
    assert_eq!(find("Connection"), ["close"]);
    assert_eq!(find("Content-Type").len(), 1);
    assert_eq!(find("Content-Security-Policy").len(), 1);
    assert_eq!(find("X-Content-Type-Options"), ["nosniff"]);
    (code, headers, length)
}

/// A state built from the input's text, one line (up to 48 characters) per
/// string, so that network strings reach every place the page shows one.
fn state_from(data: &[u8]) -> StateView {
    let text = String::from_utf8_lossy(data);
    // At most 48 characters a string keeps the rendering cheap.
    let mut lines = text
        .split('\n')
        .map(|line| line.chars().take(48).collect::<String>())
        .cycle();
    let mut next = || lines.next().unwrap_or_default();
    let value = |s: String| match serde_json::from_str::<Value>(&s) {
        Ok(v) if !v.is_string() => v,
        _ => Value::String(s),
    };
    let n = data.len().min(150) / 50;
    let mut state = StateView {
        peer_id: next(),
        host: next(),
        port: data.len() as u16,
        peers: Vec::new(),
        files: Vec::new(),
        files_total: n,
        offset: 0,
        limit: 100,
        files_matching: n,
        transfers: Vec::new(),
        events: Vec::new(),
        unix_now: 1_744_169_352,
    };
    for i in 0..n {
        state.peers.push(PeerView {
            peer_id: next(),
            host: next(),
            port: i as u16,
            last_seen_secs_ago: i as u64 * 7,
            ranges: i % 2 == 0,
        });
        state.files.push(FileView {
            file_id: next(),
            file_name: next(),
            file_owner: next(),
            file_size: value(next()),
            file_timestamp: value(next()),
            local: i % 2 == 0,
            verified: i % 3 == 0,
            peers_with_file: (0..i).map(|_| next()).collect(),
        });
        let source = next();
        state.transfers.push(TransferView {
            id: i as u64,
            direction: if i % 2 == 0 {
                Direction::Down
            } else {
                Direction::Up
            },
            state: crate::core::view::TransferState::Moving,
            peer: source.clone(),
            file_id: next(),
            file_name: next(),
            source,
            bytes_done: i as u64 * 1000,
            bytes_total: (i % 2 == 0).then_some(i as u64 * 3000),
            rate_bytes_per_sec: 1536,
            sources: Vec::new(),
            eta_secs: (i % 2 == 0).then_some(i as u64),
            started_unix: 1_744_169_352,
        });
        state.events.push(EventView {
            at_unix: 1_744_169_352,
            kind: EventKind::Refused,
            text: next(),
        });
    }
    state
}

/// The same state with every string replaced by `x` (numbers kept).
fn placeholder(state: &StateView) -> StateView {
    let x = |_: &String| "x".to_owned();
    let v = |v: &Value| match v {
        Value::String(_) => Value::String("x".into()),
        other => other.clone(),
    };
    StateView {
        peer_id: x(&state.peer_id),
        host: x(&state.host),
        port: state.port,
        peers: state
            .peers
            .iter()
            .map(|p| PeerView {
                peer_id: x(&p.peer_id),
                host: x(&p.host),
                ..p.clone()
            })
            .collect(),
        files: state
            .files
            .iter()
            .map(|f| FileView {
                file_id: x(&f.file_id),
                file_name: x(&f.file_name),
                file_owner: x(&f.file_owner),
                file_size: v(&f.file_size),
                file_timestamp: v(&f.file_timestamp),
                peers_with_file: f.peers_with_file.iter().map(x).collect(),
                ..f.clone()
            })
            .collect(),
        transfers: state
            .transfers
            .iter()
            .map(|t| TransferView {
                file_id: x(&t.file_id),
                file_name: x(&t.file_name),
                source: x(&t.source),
                peer: x(&t.peer),
                ..t.clone()
            })
            .collect(),
        files_total: state.files_total,
        offset: state.offset,
        limit: state.limit,
        files_matching: state.files_matching,
        events: state
            .events
            .iter()
            .map(|e| EventView {
                text: x(&e.text),
                ..e.clone()
            })
            .collect(),
        unix_now: state.unix_now,
    }
}

/// How many `<`, `>`, `"` and `'` a page has.
fn markup_counts(page: &[u8]) -> [usize; 4] {
    let mut counts = [0; 4];
    for &b in page {
        match b {
            b'<' => counts[0] += 1,
            b'>' => counts[1] += 1,
            b'"' => counts[2] += 1,
            b'\'' => counts[3] += 1,
            _ => {}
        }
    }
    counts
}

/// Renders `route` for `state` and checks the response, its HEAD twin
/// (with `with_head`) and the body: the page's markup does not depend on
/// the strings in it; the API's JSON reads back as the state.
fn check_rendered(route: Route, state: &StateView, with_head: bool) {
    let full = render(route, false, state);
    let (code, headers, length) = well_formed_response(&full, false);
    assert_eq!(code, 200);
    if with_head {
        let head = render(route, true, state);
        let (head_code, head_headers, head_length) = well_formed_response(&head, true);
        assert_eq!((head_code, &head_headers), (code, &headers));
        assert_eq!(head_length, length, "HEAD announces another length");
        assert_eq!(head.len() + length, full.len());
    }
    let body = &full[full.len() - length..];
    match route {
        Route::Page => {
            std::str::from_utf8(body).expect("the page is UTF-8");
            let plain = render(route, false, &placeholder(state));
            let plain_body = &plain[plain.len() - well_formed_response(&plain, false).2..];
            assert_eq!(
                markup_counts(body),
                markup_counts(plain_body),
                "network strings changed the page's markup"
            );
        }
        Route::ApiState => {
            let json: Value = serde_json::from_slice(body).expect("the API body is JSON");
            assert_eq!(
                json,
                serde_json::to_value(state).expect("state serializes"),
                "the API body does not read back as the state"
            );
        }
        // Rendered from counters, not from a state (see `http::metrics`).
        Route::Metrics => {}
    }
}

/// Checks the HTTP request parser, the router and the responses.
///
/// - `parse_request` never panics; it stays `Incomplete` only while the
///   input fits in [`MAX_REQUEST`] (a head and an action's body);
/// - an outcome decided on a prefix of the input (as the event loop
///   re-parses after every read) is the outcome for the whole input;
/// - every `Respond` is a well-formed error response (400, 404, 405, 411,
///   413 or 431, 405 with `Allow`), without a body for a HEAD request;
/// - an `Action` comes only from a POST, with a file id of sane length;
/// - `Ready` comes only from a GET or HEAD, and the routed response is
///   well-formed; the page and the API are also rendered for a state made
///   of the input's text: well-formed, the HEAD twin (of the API, and of
///   the page when it was routed) with the same headers and no body, the
///   page's markup unchanged by the strings (all escaped), the API body
///   reading back as the state.
pub fn check_http(data: &[u8]) {
    let outcome = parse_request(data);
    match &outcome {
        // A head fits in MAX_REQUEST_HEAD; an action's body may follow.
        ParseOutcome::Incomplete => assert!(data.len() <= MAX_REQUEST),
        ParseOutcome::Respond(resp) => {
            let head_only = resp.windows(4).position(|w| w == b"\r\n\r\n") == Some(resp.len() - 4);
            let (code, headers, _) = well_formed_response(resp, head_only);
            assert!(
                [400, 404, 405, 411, 413, 431].contains(&code),
                "unexpected status {code}"
            );
            let allow = headers
                .iter()
                .any(|(n, v)| n == "Allow" && v == "GET, HEAD");
            assert_eq!(allow, code == 405, "Allow on a {code}");
            if head_only {
                // Only a HEAD request gets a bodiless error (404).
                assert_eq!(code, 404);
            }
        }
        ParseOutcome::Ready {
            route, head_only, ..
        } => {
            let start = data
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(data.len());
            let method = if *head_only { "HEAD " } else { "GET " };
            assert!(
                data[start..].starts_with(method.as_bytes()),
                "routed a request that is not {method}"
            );
            let state = state_from(data);
            let resp = render(*route, *head_only, &state);
            well_formed_response(&resp, *head_only);
        }
        ParseOutcome::Action(action) => {
            let start = data
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(data.len());
            assert!(
                data[start..].starts_with(b"POST "),
                "an action that is not a POST"
            );
            assert!(!action.file_id.is_empty() && action.file_id.len() <= 128);
        }
    }

    // Re-parsing more of the same bytes never changes a decided outcome:
    // every prefix of a short input, the prefixes ending at a line feed
    // and random ones.
    let prefixes: Vec<usize> = if data.len() <= 64 {
        (0..data.len()).collect()
    } else {
        let mut choices = Choices::from_bytes(data);
        let line_ends = data
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .take(40);
        (0..16)
            .map(|_| (choices.next() % data.len() as u64) as usize)
            .chain(line_ends)
            .filter(|&end| end < data.len())
            .collect()
    };
    for end in prefixes {
        let early = parse_request(&data[..end]);
        if early != ParseOutcome::Incomplete {
            assert_eq!(early, outcome, "the outcome at {end} bytes changed later");
        }
    }

    let state = state_from(data);
    let page_head = matches!(
        outcome,
        ParseOutcome::Ready {
            route: Route::Page,
            ..
        }
    );
    check_rendered(Route::Page, &state, page_head);
    check_rendered(Route::ApiState, &state, true);
}

// ---------------------------------------------------------------------------
// File names

/// Checks [`sanitize_file_name`]: the result is one normal path component
/// (non-empty, at most 255 bytes, no `/`, `\`, NUL or control character,
/// neither `.` nor `..`), not a reserved name, stays inside the storage
/// folder when joined to it, is idempotent, and a name that is already a
/// safe plain name is kept unchanged.
pub fn check_sanitizer(s: &str) {
    let r = sanitize_file_name(s);
    assert!(!r.is_empty(), "empty name for {s:?}");
    assert!(r.len() <= MAX_NAME_BYTES, "{} bytes for {s:?}", r.len());
    assert!(!r.contains(['/', '\\', '\0']), "{r:?} from {s:?}");
    assert!(!r.chars().any(char::is_control), "{r:?} from {s:?}");
    let mut components = Path::new(&r).components();
    assert!(
        matches!(
            (components.next(), components.next()),
            (Some(Component::Normal(c)), None) if c == std::ffi::OsStr::new(&r)
        ),
        "{r:?} (from {s:?}) is not one normal component"
    );
    assert!(is_safe_local_name(&r), "{r:?} (from {s:?}) is not safe");
    let folder = Path::new("/storage_peer");
    let joined = folder.join(&r);
    assert_eq!(joined.parent(), Some(folder), "{r:?} leaves the folder");
    assert_eq!(
        joined.file_name().and_then(|n| n.to_str()),
        Some(r.as_str())
    );
    assert_eq!(sanitize_file_name(&r), r, "not idempotent on {s:?}");
    if is_safe_local_name(s) && !s.chars().any(char::is_control) {
        assert_eq!(r, s, "a safe name was changed");
    }
}

// ---------------------------------------------------------------------------
// Metadata

/// Checks the metadata loader: `parse` never panics and refuses only what is
/// not a JSON object; what it loads is sorted by file id without
/// duplicates, every local name is safe, every held copy has one; and
/// `to_json` -> `parse` gives back the same entries, without a warning, and
/// the same bytes when written again.
pub fn check_metadata(data: &[u8]) {
    let Ok((entries, _warnings)) = parse_with_warnings(data) else {
        assert!(
            !matches!(serde_json::from_slice::<Value>(data), Ok(Value::Object(_))),
            "a JSON object was refused as metadata"
        );
        return;
    };
    for pair in entries.windows(2) {
        assert!(
            pair[0].record.file_id < pair[1].record.file_id,
            "entries not sorted and unique"
        );
    }
    for e in &entries {
        if let Some(name) = &e.local_name {
            assert!(is_safe_local_name(name), "unsafe local name {name:?}");
        }
        assert!(
            !e.has_copy || e.local_name.is_some(),
            "a copy without a name"
        );
        let mut seen = std::collections::HashSet::new();
        assert!(
            e.peers_with_file.iter().all(|p| seen.insert(p)),
            "duplicate peers"
        );
    }
    let json = to_json(&entries);
    let (again, warnings) = parse_with_warnings(&json).expect("our own metadata parses");
    assert!(warnings.is_empty(), "our own metadata warns: {warnings:?}");
    assert_eq!(again, entries, "metadata does not survive to_json -> parse");
    assert_eq!(to_json(&again), json, "to_json is not stable");
}
