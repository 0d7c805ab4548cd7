//! Incremental decoder for one top-level JSON message.
//!
//! Interface contract (do not change the public signatures without telling
//! the integrator):
//! - `MessageDecoder::new(limits)`; `feed(input, sink)` as bytes arrive;
//!   returns `Feed::Done { consumed }` at the closing brace of the top-level
//!   object (bytes after it are the caller's to ignore);
//! - a top-level `"data"` string is hex-decoded chunk by chunk into `sink`,
//!   never buffered whole; every other field is collected (capped) and
//!   returned by `finish()` as a JSON object.
//!
//! How it works: a small byte-at-a-time scanner walks the envelope (every
//! top-level member but `data`), tracking strings, escapes and nesting depth
//! without recursion, and copies the members as JSON text into a capped
//! buffer; `finish()` hands that text to `serde_json`. When the scanner meets
//! the top-level key `data` followed by a string, it switches to a bulk path:
//! validate each input with `faster_hex` (an input that is all hex is then
//! decoded without a second check; only one that is not is searched for the
//! closing quote with a vectorisable search), then decode whole runs of hex
//! with `faster_hex` into a fixed 256 KiB buffer that is handed to the sink
//! whenever it fills and at the end of the string.

use serde_json::{Map, Value};
use std::fmt;
use std::io;

/// Size of the buffer decoded `data` bytes are collected in before they are
/// handed to the sink. Allocated only when a `data` string starts.
pub const DATA_BUFFER_LEN: usize = 256 * 1024;

/// Limits enforced while decoding, before anything is parsed.
#[derive(Clone, Copy, Debug)]
pub struct DecoderLimits {
    /// Bytes of the object excluding the `data` string.
    pub max_envelope: usize,
    /// Decoded bytes of `data`.
    pub max_data: u64,
    /// Nesting depth of arrays/objects.
    pub max_depth: usize,
}

impl Default for DecoderLimits {
    /// The protocol's limits: [`MAX_MESSAGE_LEN`](crate::protocol::MAX_MESSAGE_LEN)
    /// for the envelope, [`DEFAULT_MAX_FILE_SIZE`](crate::protocol::DEFAULT_MAX_FILE_SIZE)
    /// for `data` and [`MAX_JSON_DEPTH`](crate::protocol::MAX_JSON_DEPTH).
    fn default() -> Self {
        DecoderLimits {
            max_envelope: crate::protocol::MAX_MESSAGE_LEN,
            max_data: crate::protocol::DEFAULT_MAX_FILE_SIZE,
            max_depth: crate::protocol::MAX_JSON_DEPTH,
        }
    }
}

/// Where the decoded bytes of `data` go.
pub trait DataSink {
    /// Receives the next decoded bytes of `data`, in order.
    fn write_data(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// The `data` string ended: every byte has been passed to
    /// [`write_data`](DataSink::write_data). Called once, before `feed`
    /// returns; a sink that works in the background is told here that no
    /// more bytes come (it must not wait for its work: `feed` runs on the
    /// loop).
    fn end_data(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Receives a full buffer of decoded bytes by value and returns one for
    /// the decoder to fill next (its length and contents don't matter). A
    /// sink that queues the bytes elsewhere keeps `buf` and saves a copy;
    /// by default it is [`write_data`](DataSink::write_data) and `buf`
    /// comes back.
    fn write_buffer(&mut self, buf: Vec<u8>) -> io::Result<Vec<u8>> {
        self.write_data(&buf)?;
        Ok(buf)
    }

    /// Whether the sink wants to see the members before `data` (see
    /// [`begin_data`](DataSink::begin_data)); parsing them costs a copy.
    fn wants_header(&self) -> bool {
        false
    }

    /// The `data` string begins; `header` holds the members that came
    /// before it (a resumed download learns here whether the reply is the
    /// range it asked for). An `Err` refuses the message with that reason.
    fn begin_data(&mut self, _header: &Map<String, Value>) -> Result<(), String> {
        Ok(())
    }
}

/// A sink that drops data (messages that must not carry any).
pub struct DiscardSink;
impl DataSink for DiscardSink {
    fn write_data(&mut self, _bytes: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// Collects `data` in memory (tests, small messages).
impl DataSink for Vec<u8> {
    fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Progress after `feed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// The object is not complete yet: feed more.
    NeedMore,
    /// The object ended; `consumed` bytes of the last input belonged to it.
    Done {
        /// Bytes of the last `feed` input up to and including the closing brace.
        consumed: usize,
    },
}

/// What `data` was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataField {
    /// No `data` key.
    Absent,
    /// `"data": null`.
    Null,
    /// A hex string; `len` decoded bytes went to the sink.
    Bytes {
        /// Decoded length.
        len: u64,
    },
}

/// A complete message.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// Every top-level field except `data`.
    pub fields: Map<String, Value>,
    /// What `data` held.
    pub data: DataField,
}

/// Why a message was refused. The connection should be closed.
#[derive(Debug)]
pub enum DecodeError {
    /// The envelope or data exceeded a limit.
    TooLarge,
    /// Nested deeper than allowed.
    TooDeep,
    /// Not a JSON object / malformed JSON.
    Malformed(String),
    /// `data` is not valid hex (e.g. base64 from old peers).
    BadHex,
    /// The sink failed (disk full...).
    Sink(io::Error),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge => f.write_str("the message is larger than allowed"),
            DecodeError::TooDeep => f.write_str("the message is nested too deeply"),
            DecodeError::Malformed(why) => write!(f, "malformed message: {why}"),
            DecodeError::BadHex => {
                f.write_str("data is not hex (corrupt, or base64 from an old peer)")
            }
            DecodeError::Sink(e) => write!(f, "cannot write the file: {e}"),
        }
    }
}
impl std::error::Error for DecodeError {}

fn malformed(why: &str) -> DecodeError {
    DecodeError::Malformed(why.to_string())
}

/// Where the scanner is inside the top-level object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the opening `{` (leading whitespace allowed).
    Start,
    /// After `{` (`first`: `}` may close an empty object) or after `,`.
    KeyOrEnd { first: bool },
    /// Inside a top-level key; `start` is the index of its `"` in `env`.
    Key { start: usize, escaped: bool },
    /// After a key, before `:`.
    Colon { is_data: bool },
    /// After `:`, before the value.
    Value { is_data: bool },
    /// Inside a (non-`data`) member's value; `nesting` counts open
    /// brackets inside the value.
    InValue {
        nesting: usize,
        in_string: bool,
        escaped: bool,
    },
    /// Inside the `data` hex string.
    DataHex,
    /// Inside the `null` literal of `data`; `matched` letters seen.
    DataNull { matched: u8 },
    /// After the `data` value, before `,` or `}`.
    AfterData,
    /// The closing brace was seen.
    Done,
    /// An error was returned; the decoder is unusable.
    Failed,
}

/// Most items kept from a top-level array (a GOSSIP_REPLY's `files`): as
/// many as the catalog can hold. Items past it are skipped unparsed, so a
/// reply listing 100 000 files costs a list of pointers, not a JSON tree.
pub const MAX_TOP_LEVEL_ITEMS: usize = 20_000;

/// Parses the envelope into its top-level fields. Each field is first
/// borrowed as raw JSON text, so only what is kept becomes a `Value`.
fn parse_envelope(env: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    use serde_json::value::RawValue;
    let bad = |e: serde_json::Error| DecodeError::Malformed(e.to_string());
    let text = std::str::from_utf8(env).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let raw: Value =
        match serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(text) {
            Ok(members) => {
                let mut fields = Map::new();
                for (key, value) in members {
                    let v = if value.get().starts_with('[') {
                        let items: Vec<&RawValue> =
                            serde_json::from_str(value.get()).map_err(bad)?;
                        Value::Array(
                            items
                                .into_iter()
                                .take(MAX_TOP_LEVEL_ITEMS)
                                .map(|item| serde_json::from_str(item.get()))
                                .collect::<Result<_, _>>()
                                .map_err(bad)?,
                        )
                    } else {
                        serde_json::from_str(value.get()).map_err(bad)?
                    };
                    fields.insert(key, v);
                }
                return Ok(fields);
            }
            // Not an object of members (or a duplicate-key oddity): parse it the
            // plain way to report the right error.
            Err(_) => serde_json::from_slice(env).map_err(bad)?,
        };
    match raw {
        Value::Object(fields) => Ok(fields),
        _ => Err(malformed("top-level value is not an object")),
    }
}

/// Where [`MessageDecoder::scan`] goes after one state's handling.
enum Step {
    /// On from this position of the input.
    At(usize),
    /// The message ended; this many bytes of the input were its.
    Done(usize),
}

/// Incremental decoder state for one message.
pub struct MessageDecoder {
    limits: DecoderLimits,
    state: State,
    /// The envelope as JSON text (every member but `data`).
    env: Vec<u8>,
    data: DataField,
    data_len: u64,
    /// Decoded `data` waiting for the sink; empty until `data` starts.
    buf: Vec<u8>,
    /// Valid bytes in `buf`.
    fill: usize,
    /// A hex digit whose partner has not arrived yet.
    pending: Option<u8>,
}

impl MessageDecoder {
    /// A decoder for one message.
    pub fn new(limits: DecoderLimits) -> Self {
        Self {
            limits,
            state: State::Start,
            env: Vec::new(),
            data: DataField::Absent,
            data_len: 0,
            buf: Vec::new(),
            fill: 0,
            pending: None,
        }
    }

    /// Feeds the next bytes.
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn DataSink) -> Result<Feed, DecodeError> {
        match self.state {
            State::Done => return Ok(Feed::Done { consumed: 0 }),
            State::Failed => return Err(malformed("decoder already failed")),
            _ => {}
        }
        let result = self.scan(input, sink);
        if result.is_err() {
            self.state = State::Failed;
            self.env = Vec::new();
            self.buf = Vec::new();
            self.fill = 0;
        }
        result
    }

    /// The finished message (after `Feed::Done`).
    pub fn finish(self) -> Result<Decoded, DecodeError> {
        if self.state != State::Done {
            return Err(malformed("message incomplete"));
        }
        let fields = parse_envelope(&self.env)?;
        let data = match self.data {
            DataField::Bytes { .. } => DataField::Bytes { len: self.data_len },
            other => other,
        };
        Ok(Decoded { fields, data })
    }

    /// Decoded `data` bytes so far (progress display).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Bytes of memory this decoder holds now (its envelope and data
    /// buffers), for budgets across many connections.
    pub fn buffered(&self) -> usize {
        self.env.capacity() + self.buf.capacity()
    }

    /// Whether the closing brace has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn scan(&mut self, input: &[u8], sink: &mut dyn DataSink) -> Result<Feed, DecodeError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            let step = match self.state {
                State::Start => self.at_start(b).map(|()| Step::At(i + 1))?,
                State::KeyOrEnd { first } => self.at_key_or_end(b, first, i)?,
                State::Key { start, escaped } => Step::At(self.in_key(input, i, start, escaped)?),
                State::Colon { is_data } => self.at_colon(b, is_data).map(|()| Step::At(i + 1))?,
                State::Value { is_data: true } => {
                    self.at_data_value(b, sink).map(|()| Step::At(i + 1))?
                }
                State::Value { is_data: false } => {
                    if !is_ws(b) {
                        // Reprocess this byte as the value's first.
                        self.state = State::InValue {
                            nesting: 0,
                            in_string: false,
                            escaped: false,
                        };
                        Step::At(i)
                    } else {
                        Step::At(i + 1)
                    }
                }
                State::InValue {
                    nesting,
                    in_string: true,
                    escaped,
                } => Step::At(self.in_value_string(input, i, nesting, escaped)?),
                State::InValue {
                    nesting,
                    in_string: false,
                    ..
                } => self.in_value(b, i, nesting)?,
                State::DataHex => {
                    let (used, ended) = self.feed_hex(&input[i..], sink)?;
                    if ended {
                        self.state = State::AfterData;
                    }
                    Step::At(i + used)
                }
                State::DataNull { matched } => {
                    self.in_null(b, matched).map(|()| Step::At(i + 1))?
                }
                State::AfterData => self.after_data(b, i)?,
                State::Done => Step::Done(i),
                State::Failed => return Err(malformed("decoder already failed")),
            };
            match step {
                Step::At(next) => i = next,
                Step::Done(consumed) => return Ok(Feed::Done { consumed }),
            }
        }
        Ok(Feed::NeedMore)
    }

    /// Before the message: whitespace, then the top-level `{`.
    fn at_start(&mut self, b: u8) -> Result<(), DecodeError> {
        if is_ws(b) {
            return Ok(());
        }
        if b != b'{' {
            return Err(malformed("top-level value is not an object"));
        }
        if self.limits.max_depth < 1 {
            return Err(DecodeError::TooDeep);
        }
        self.push_env(b"{")?;
        self.state = State::KeyOrEnd { first: true };
        Ok(())
    }

    /// After `{` or `,`: a key's opening quote (or `}` of an empty object).
    fn at_key_or_end(&mut self, b: u8, first: bool, i: usize) -> Result<Step, DecodeError> {
        match b {
            _ if is_ws(b) => {}
            b'"' => {
                let start = self.env.len();
                self.push_env(b"\"")?;
                self.state = State::Key {
                    start,
                    escaped: false,
                };
            }
            b'}' if first => {
                self.push_env(b"}")?;
                self.state = State::Done;
                return Ok(Step::Done(i + 1));
            }
            _ => return Err(malformed("expected a key")),
        }
        Ok(Step::At(i + 1))
    }

    /// Inside a key; `start` is where its quote sits in the envelope (a key
    /// `"data"` is cut out: its value goes to the sink). Returns where to
    /// go on in `input`.
    fn in_key(
        &mut self,
        input: &[u8],
        i: usize,
        start: usize,
        escaped: bool,
    ) -> Result<usize, DecodeError> {
        if escaped {
            self.push_env(&input[i..=i])?;
            self.state = State::Key {
                start,
                escaped: false,
            };
            return Ok(i + 1);
        }
        let rest = &input[i..];
        let Some(p) = self.copy_string_run(rest)? else {
            return Ok(input.len());
        };
        self.push_env(&rest[..p])?;
        if rest[p] == b'\\' {
            self.push_env(b"\\")?;
            self.state = State::Key {
                start,
                escaped: true,
            };
            return Ok(i + p + 1);
        }
        self.push_env(b"\"")?;
        let is_data = self.env.get(start..) == Some(&b"\"data\""[..]);
        if is_data {
            if self.data != DataField::Absent {
                return Err(malformed("duplicate data field"));
            }
            self.env.truncate(start);
        }
        self.state = State::Colon { is_data };
        Ok(i + p + 1)
    }

    /// Inside a string: where its next `"` or `\\` is in `rest`; without
    /// one, all of `rest` goes to the envelope and the string goes on.
    fn copy_string_run(&mut self, rest: &[u8]) -> Result<Option<usize>, DecodeError> {
        match rest.iter().position(|&c| c == b'"' || c == b'\\') {
            Some(p) => Ok(Some(p)),
            None => self.push_env(rest).map(|()| None),
        }
    }

    /// After a key: whitespace, then `:`.
    fn at_colon(&mut self, b: u8, is_data: bool) -> Result<(), DecodeError> {
        if is_ws(b) {
            return Ok(());
        }
        if b != b':' {
            return Err(malformed("expected ':'"));
        }
        if !is_data {
            self.push_env(b":")?;
        }
        self.state = State::Value { is_data };
        Ok(())
    }

    /// The start of `data`'s value: a hex string or `null`.
    fn at_data_value(&mut self, b: u8, sink: &mut dyn DataSink) -> Result<(), DecodeError> {
        match b {
            _ if is_ws(b) => {}
            b'"' => {
                if sink.wants_header() {
                    let header = self.header_so_far()?;
                    sink.begin_data(&header).map_err(DecodeError::Malformed)?;
                }
                self.data = DataField::Bytes { len: 0 };
                if self.buf.is_empty() {
                    self.buf = vec![0; DATA_BUFFER_LEN];
                }
                self.state = State::DataHex;
            }
            b'n' => {
                self.data = DataField::Null;
                self.state = State::DataNull { matched: 1 };
            }
            _ => return Err(DecodeError::BadHex),
        }
        Ok(())
    }

    /// Inside a string within another member's value, copied to the
    /// envelope as it is. Returns where to go on in `input`.
    fn in_value_string(
        &mut self,
        input: &[u8],
        i: usize,
        nesting: usize,
        escaped: bool,
    ) -> Result<usize, DecodeError> {
        if escaped {
            self.push_env(&input[i..=i])?;
            self.state = State::InValue {
                nesting,
                in_string: true,
                escaped: false,
            };
            return Ok(i + 1);
        }
        let rest = &input[i..];
        let Some(p) = self.copy_string_run(rest)? else {
            return Ok(input.len());
        };
        self.push_env(&rest[..=p])?;
        let is_escape = rest[p] == b'\\';
        self.state = State::InValue {
            nesting,
            in_string: is_escape,
            escaped: is_escape,
        };
        Ok(i + p + 1)
    }

    /// One byte of another member's value outside strings: tracks nesting
    /// (within `max_depth`) until the `,` or `}` that ends the member.
    fn in_value(&mut self, b: u8, i: usize, nesting: usize) -> Result<Step, DecodeError> {
        let outside = |nesting| State::InValue {
            nesting,
            in_string: false,
            escaped: false,
        };
        let next = match b {
            b'"' => State::InValue {
                nesting,
                in_string: true,
                escaped: false,
            },
            b'{' | b'[' => {
                // The top-level object is depth 1.
                if nesting + 2 > self.limits.max_depth {
                    return Err(DecodeError::TooDeep);
                }
                outside(nesting + 1)
            }
            b'}' | b']' if nesting > 0 => outside(nesting - 1),
            b'}' => {
                self.push_env(b"}")?;
                self.state = State::Done;
                return Ok(Step::Done(i + 1));
            }
            b']' => return Err(malformed("unbalanced ']'")),
            b',' if nesting == 0 => State::KeyOrEnd { first: false },
            _ => outside(nesting),
        };
        self.push_env(&[b])?;
        self.state = next;
        Ok(Step::At(i + 1))
    }

    /// Inside `null` as `data`'s value.
    fn in_null(&mut self, b: u8, matched: u8) -> Result<(), DecodeError> {
        if b"null".get(usize::from(matched)) != Some(&b) {
            return Err(DecodeError::BadHex);
        }
        self.state = if matched >= 3 {
            State::AfterData
        } else {
            State::DataNull {
                matched: matched + 1,
            }
        };
        Ok(())
    }

    /// After `data`'s value: `,` and more members, or the closing `}`.
    fn after_data(&mut self, b: u8, i: usize) -> Result<Step, DecodeError> {
        match b {
            _ if is_ws(b) => {}
            b',' => {
                // The data member was cut out: keep exactly one separator
                // between the remaining members.
                if !matches!(self.env.last(), Some(b'{' | b',')) {
                    self.push_env(b",")?;
                }
                self.state = State::KeyOrEnd { first: false };
            }
            b'}' => {
                if self.env.last() == Some(&b',') {
                    self.env.pop();
                }
                self.push_env(b"}")?;
                self.state = State::Done;
                return Ok(Step::Done(i + 1));
            }
            _ => return Err(malformed("expected ',' or '}' after data")),
        }
        Ok(Step::At(i + 1))
    }

    /// The members seen before `data`: the envelope so far, closed.
    fn header_so_far(&self) -> Result<Map<String, Value>, DecodeError> {
        let end = self
            .env
            .iter()
            .rposition(|&c| !is_ws(c) && c != b',')
            .map_or(0, |p| p + 1);
        let mut closed = self.env[..end].to_vec();
        closed.push(b'}');
        parse_envelope(&closed)
    }

    /// Appends envelope text, refusing to grow past `max_envelope` (the
    /// allocation itself never exceeds the cap either).
    fn push_env(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let needed = self.env.len() + bytes.len();
        if needed > self.limits.max_envelope {
            return Err(DecodeError::TooLarge);
        }
        if needed > self.env.capacity() {
            let target = needed
                .max(self.env.capacity() * 2)
                .max(256)
                .min(self.limits.max_envelope);
            self.env.reserve_exact(target - self.env.len());
        }
        self.env.extend_from_slice(bytes);
        Ok(())
    }

    /// Consumes hex from the start of `input` up to and including the
    /// closing quote, if present. Returns (bytes used, string ended).
    fn feed_hex(
        &mut self,
        input: &[u8],
        sink: &mut dyn DataSink,
    ) -> Result<(usize, bool), DecodeError> {
        let mut run = input;
        let mut used = 0;
        if let Some(hi) = self.pending.take() {
            match run.split_first() {
                None => {
                    self.pending = Some(hi);
                    return Ok((0, false));
                }
                // An odd number of digits before the quote.
                Some((&b'"', _)) => return Err(DecodeError::BadHex),
                Some((&lo, rest)) => {
                    let mut one = [0u8; 1];
                    faster_hex::hex_decode(&[hi, lo], &mut one).map_err(|_| DecodeError::BadHex)?;
                    self.decoded_bytes(&one, sink)?;
                    run = rest;
                    used = 1;
                }
            }
        }
        // One validating pass decodes every digit up to the first byte that
        // is not one: the closing quote, or bad input. Searching for the
        // quote first would read each buffer twice.
        match self.decode_run(run, sink)? {
            None => {
                if let Some(&c) = run.get(run.len() & !1..).and_then(<[u8]>::first) {
                    self.pending = Some(c);
                }
                Ok((input.len(), false))
            }
            // `stop` is even: every digit before it is decoded.
            Some(stop) if run[stop] == b'"' && stop % 2 == 0 => {
                self.flush(sink)?;
                self.buf = Vec::new();
                sink.end_data().map_err(DecodeError::Sink)?;
                Ok((used + stop + 1, true))
            }
            Some(_) => Err(DecodeError::BadHex),
        }
    }

    /// Decodes `src` into the buffer, flushing as it fills, up to its first
    /// byte that is not a hex digit: `Some(index)` of that byte (the digits
    /// before it are decoded, but for an odd last one), or `None` when the
    /// even-length prefix is all digits and decoded, and a last odd byte, if
    /// any, is a digit left for the caller.
    fn decode_run(
        &mut self,
        mut src: &[u8],
        sink: &mut dyn DataSink,
    ) -> Result<Option<usize>, DecodeError> {
        let mut done = 0;
        while src.len() >= 2 {
            self.make_room(sink)?;
            let room = self.buf.len() - self.fill;
            let allowed = self.limits.max_data.saturating_sub(self.data_len);
            let n = (src.len() / 2)
                .min(room)
                .min(usize::try_from(allowed).unwrap_or(usize::MAX));
            if n == 0 {
                // At the size limit: the string must end here.
                return if is_hex_digit(src[0]) && is_hex_digit(src[1]) {
                    Err(DecodeError::TooLarge)
                } else {
                    Ok(Some(done + usize::from(is_hex_digit(src[0]))))
                };
            }
            let out = &mut self.buf[self.fill..self.fill + n];
            let stop = match faster_hex::hex_decode(&src[..2 * n], out) {
                Ok(_) => None,
                Err(faster_hex::Error::InvalidChar { index, .. }) => Some(index),
                Err(_) => return Err(DecodeError::BadHex),
            };
            if let Some(index) = stop {
                // Nothing was written: decode the digits before it again.
                let whole = index / 2;
                faster_hex::hex_decode(
                    &src[..2 * whole],
                    &mut self.buf[self.fill..self.fill + whole],
                )
                .map_err(|_| DecodeError::BadHex)?;
                self.fill += whole;
                self.data_len += whole as u64;
                return Ok(Some(done + index));
            }
            self.fill += n;
            self.data_len += n as u64;
            done += 2 * n;
            src = &src[2 * n..];
        }
        match src.first() {
            Some(&c) if !is_hex_digit(c) => Ok(Some(done)),
            _ => Ok(None),
        }
    }

    /// Adds already-decoded bytes (the odd nibble pair across feeds).
    fn decoded_bytes(&mut self, bytes: &[u8], sink: &mut dyn DataSink) -> Result<(), DecodeError> {
        for &b in bytes {
            self.make_room(sink)?;
            self.reserve_data(1)?;
            self.buf[self.fill] = b;
            self.fill += 1;
            self.data_len += 1;
        }
        Ok(())
    }

    /// The connection ended inside the data: hands the bytes decoded so
    /// far to the sink, so a download keeps every byte that arrived. A
    /// no-op outside the data (or after an error).
    pub fn flush_cut_data(&mut self, sink: &mut dyn DataSink) -> Result<(), DecodeError> {
        if self.state == State::DataHex {
            self.flush(sink)?;
        }
        Ok(())
    }

    /// Flushes a full buffer and sizes the next one, so there is room.
    fn make_room(&mut self, sink: &mut dyn DataSink) -> Result<(), DecodeError> {
        if self.fill > 0 && self.fill == self.buf.len() {
            self.flush(sink)?;
        }
        if self.buf.len() < DATA_BUFFER_LEN {
            self.buf.resize(DATA_BUFFER_LEN, 0);
        }
        Ok(())
    }

    fn reserve_data(&self, n: usize) -> Result<(), DecodeError> {
        match self.data_len.checked_add(n as u64) {
            Some(total) if total <= self.limits.max_data => Ok(()),
            _ => Err(DecodeError::TooLarge),
        }
    }

    /// Hands the decoded bytes to the sink: a full buffer by value (a sink
    /// that keeps it gives another back, so nothing is copied), a partial
    /// one (the end of the data) as a slice.
    fn flush(&mut self, sink: &mut dyn DataSink) -> Result<(), DecodeError> {
        if self.fill == self.buf.len() && self.fill > 0 {
            let full = std::mem::take(&mut self.buf);
            self.buf = sink.write_buffer(full).map_err(DecodeError::Sink)?;
            // A new buffer is sized on next use, a recycled one is reused
            // as it is (no zeroing).
            self.fill = 0;
        } else if self.fill > 0 {
            sink.write_data(&self.buf[..self.fill])
                .map_err(DecodeError::Sink)?;
            self.fill = 0;
        }
        Ok(())
    }
}

/// Whether `b` is a hex digit (either case, as the decoder accepts).
fn is_hex_digit(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Decodes one complete message held in memory: the fields and the decoded
/// `data` bytes. Bytes after the closing brace are ignored; a message that
/// does not end is `Malformed`.
pub fn decode_all(bytes: &[u8], limits: DecoderLimits) -> Result<(Decoded, Vec<u8>), DecodeError> {
    let mut decoder = MessageDecoder::new(limits);
    let mut data = Vec::new();
    match decoder.feed(bytes, &mut data)? {
        Feed::Done { .. } => Ok((decoder.finish()?, data)),
        Feed::NeedMore => Err(malformed("message incomplete")),
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_decode_error_reads_as_a_sentence_not_as_debug_text() {
        let errors = [
            DecodeError::TooLarge,
            DecodeError::TooDeep,
            DecodeError::Malformed("expected `:`".into()),
            DecodeError::BadHex,
            DecodeError::Sink(io::Error::new(io::ErrorKind::StorageFull, "disk full")),
        ];
        for e in errors {
            let text = e.to_string();
            let debug = format!("{e:?}");
            assert_ne!(text, debug);
            assert!(
                text.chars().next().is_some_and(|c| c.is_lowercase()),
                "{text}"
            );
            assert!(
                !text.contains("TooLarge") && !text.contains("Sink("),
                "{text}"
            );
        }
    }

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn limits() -> DecoderLimits {
        DecoderLimits::default()
    }

    fn small_limits() -> DecoderLimits {
        DecoderLimits {
            max_envelope: 4096,
            max_data: 1 << 20,
            max_depth: 64,
        }
    }

    /// Feeds `bytes` in pieces cut at `cuts` (sorted offsets); returns the
    /// result, the data and how many bytes of the message were consumed.
    fn decode_pieces(
        bytes: &[u8],
        cuts: &[usize],
        limits: DecoderLimits,
    ) -> Result<(Decoded, Vec<u8>, usize), DecodeError> {
        let mut decoder = MessageDecoder::new(limits);
        let mut data = Vec::new();
        let mut offset = 0;
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c <= bytes.len()).collect();
        bounds.push(bytes.len());
        for end in bounds {
            if end < offset {
                continue;
            }
            let piece = &bytes[offset..end];
            if let Feed::Done { consumed } = decoder.feed(piece, &mut data)? {
                assert!(consumed <= piece.len());
                return Ok((decoder.finish()?, data, offset + consumed));
            }
            offset = end;
        }
        Err(DecodeError::Malformed("message incomplete".into()))
    }

    fn decode_bytewise(bytes: &[u8]) -> Result<(Decoded, Vec<u8>, usize), DecodeError> {
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        decode_pieces(bytes, &cuts, limits())
    }

    fn hex(bytes: &[u8]) -> String {
        faster_hex::hex_string(bytes)
    }

    fn file_data(data: &str) -> String {
        format!(
            r#"{{"type":"FILE_DATA","file_id":"abc","file_name":"x.txt","file_owner":"o","file_timestamp":1744169352.0,"file_size":3,"data":{data}}}"#
        )
    }

    fn assert_same(a: &(Decoded, Vec<u8>, usize), b: &(Decoded, Vec<u8>, usize)) {
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        assert_eq!(a.2, b.2);
    }

    #[test]
    fn data_split_at_every_byte_decodes_identically() {
        let payload: Vec<u8> = (0..=255u8).chain(0..77).collect();
        let msg = file_data(&format!("\"{}\"", hex(&payload)));
        let whole = decode_pieces(msg.as_bytes(), &[], limits()).unwrap();
        assert_eq!(whole.1, payload);
        assert_eq!(
            whole.0.data,
            DataField::Bytes {
                len: payload.len() as u64
            }
        );
        for cut in 0..=msg.len() {
            let split = decode_pieces(msg.as_bytes(), &[cut], limits()).unwrap();
            assert_same(&split, &whole);
        }
    }

    #[test]
    fn one_byte_feeds_decode_identically() {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let msg = file_data(&format!("\"{}\"", hex(&payload)));
        let whole = decode_pieces(msg.as_bytes(), &[], limits()).unwrap();
        assert_same(&decode_bytewise(msg.as_bytes()).unwrap(), &whole);
    }

    #[test]
    fn envelope_fields_parse_into_a_file_data_message() {
        let msg = file_data("\"616263\"");
        let (decoded, data) = decode_all(msg.as_bytes(), limits()).unwrap();
        assert_eq!(data, b"abc");
        let crate::protocol::Message::FileData(h) =
            crate::protocol::Message::from_object(&decoded.fields).unwrap()
        else {
            panic!("not FILE_DATA")
        };
        assert_eq!(h.file_id.unwrap().0, "abc");
        assert_eq!(h.file_name.as_deref(), Some("x.txt"));
        assert_eq!(
            h.file_timestamp.unwrap().hash_forms(),
            vec!["1744169352.0", "1744169352"]
        );
        assert!(!decoded.fields.contains_key("data"));
    }

    #[test]
    fn data_may_appear_in_any_position() {
        let expected = json!({"type":"FILE_DATA","file_id":"i","file_size":2});
        for msg in [
            r#"{"data":"abCD","type":"FILE_DATA","file_id":"i","file_size":2}"#,
            r#"{"type":"FILE_DATA","data":"abCD","file_id":"i","file_size":2}"#,
            r#"{"type":"FILE_DATA","file_id":"i","data":"abCD","file_size":2}"#,
            r#"{"type":"FILE_DATA","file_id":"i","file_size":2,"data":"abCD"}"#,
            "{ \"type\" : \"FILE_DATA\" ,\n \"data\" :\t\"abCD\" ,\r\n \"file_id\":\"i\", \"file_size\" : 2 }",
            " \n{\"file_size\":2 , \"type\":\"FILE_DATA\",\"file_id\":\"i\" , \"data\" : \"abCD\" } ",
        ] {
            let (decoded, data) = decode_all(msg.as_bytes(), limits()).unwrap();
            assert_eq!(Value::Object(decoded.fields), expected, "{msg}");
            assert_eq!(data, [0xab, 0xcd], "{msg}");
            assert_eq!(decoded.data, DataField::Bytes { len: 2 });
            // And split at every byte.
            let bytewise = decode_bytewise(msg.as_bytes()).unwrap();
            assert_eq!(bytewise.1, [0xab, 0xcd]);
        }
    }

    #[test]
    fn data_null_absent_and_empty_are_told_apart() {
        let (d, bytes) = decode_all(file_data("null").as_bytes(), limits()).unwrap();
        assert_eq!(d.data, DataField::Null);
        assert!(bytes.is_empty());
        assert_eq!(d.fields.len(), 6);

        let (d, _) = decode_all(br#"{"data" : null , "a":1}"#, limits()).unwrap();
        assert_eq!(d.data, DataField::Null);
        assert_eq!(Value::Object(d.fields), json!({"a":1}));

        let (d, _) = decode_all(br#"{"type":"GET_FILE","file_id":"x"}"#, limits()).unwrap();
        assert_eq!(d.data, DataField::Absent);
        assert_eq!(
            Value::Object(d.fields),
            json!({"type":"GET_FILE","file_id":"x"})
        );

        let (d, bytes) = decode_all(file_data("\"\"").as_bytes(), limits()).unwrap();
        assert_eq!(d.data, DataField::Bytes { len: 0 });
        assert!(bytes.is_empty());

        let (d, _) = decode_all(br#"{"data":null}"#, limits()).unwrap();
        assert_eq!((d.fields.len(), d.data), (0, DataField::Null));
        let (d, _) = decode_all(br#"{}"#, limits()).unwrap();
        assert_eq!((d.fields.len(), d.data), (0, DataField::Absent));
    }

    #[test]
    fn uppercase_and_mixed_case_hex_are_accepted() {
        let (_, data) = decode_all(file_data("\"DEADBEEF\"").as_bytes(), limits()).unwrap();
        assert_eq!(data, [0xde, 0xad, 0xbe, 0xef]);
        let (_, data) = decode_all(file_data("\"DeAdbEeF\"").as_bytes(), limits()).unwrap();
        assert_eq!(data, [0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn odd_length_hex_is_bad_hex_however_it_is_split() {
        let msg = file_data("\"abc\"");
        assert!(matches!(
            decode_all(msg.as_bytes(), limits()),
            Err(DecodeError::BadHex)
        ));
        for cut in 0..msg.len() {
            assert!(matches!(
                decode_pieces(msg.as_bytes(), &[cut], limits()),
                Err(DecodeError::BadHex)
            ));
        }
    }

    #[test]
    fn base64_data_from_old_peers_is_bad_hex() {
        for data in [
            "\"aGVsbG8=\"",
            "\"SGVsbG8gd29ybGQ=\"",
            "\"0g\"",
            "\"00 11\"",
        ] {
            assert!(
                matches!(
                    decode_all(file_data(data).as_bytes(), limits()),
                    Err(DecodeError::BadHex)
                ),
                "{data}"
            );
        }
    }

    #[test]
    fn escapes_or_non_string_data_are_bad_hex() {
        for data in [
            "\"00\\u0030\"",
            "\"00\\\"00\"",
            "\"\\\\\"",
            "5",
            "[\"00\"]",
            "nul",
            "true",
        ] {
            assert!(
                matches!(
                    decode_all(file_data(data).as_bytes(), limits()),
                    Err(DecodeError::BadHex)
                ),
                "{data}"
            );
        }
    }

    #[test]
    fn long_data_is_decoded_in_bounded_pieces() {
        let payload: Vec<u8> = (0..3 * DATA_BUFFER_LEN + 123)
            .map(|i| (i % 253) as u8)
            .collect();
        let msg = file_data(&format!("\"{}\"", hex(&payload)));
        struct Counting(Vec<u8>, usize, usize);
        impl DataSink for Counting {
            fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
                self.0.extend_from_slice(bytes);
                self.1 += 1;
                self.2 = self.2.max(bytes.len());
                Ok(())
            }
        }
        let mut sink = Counting(Vec::new(), 0, 0);
        let mut decoder = MessageDecoder::new(limits());
        for piece in msg.as_bytes().chunks(65_521) {
            let _ = decoder.feed(piece, &mut sink).unwrap();
            assert!(decoder.env.capacity() <= 4096);
        }
        assert!(decoder.is_done());
        assert_eq!(decoder.data_len(), payload.len() as u64);
        let decoded = decoder.finish().unwrap();
        assert_eq!(
            decoded.data,
            DataField::Bytes {
                len: payload.len() as u64
            }
        );
        assert!(sink.0 == payload);
        assert_eq!(sink.1, 4);
        assert_eq!(sink.2, DATA_BUFFER_LEN);
    }

    #[test]
    fn data_over_the_limit_is_too_large() {
        let mut l = small_limits();
        l.max_data = 4;
        assert!(decode_all(file_data("\"00112233\"").as_bytes(), l).is_ok());
        assert!(matches!(
            decode_all(file_data("\"0011223344\"").as_bytes(), l),
            Err(DecodeError::TooLarge)
        ));
        // Also when the fifth byte is an odd nibble pair across feeds.
        let msg = file_data("\"0011223344\"");
        let cut = msg.find("44").unwrap() + 1;
        assert!(matches!(
            decode_pieces(msg.as_bytes(), &[cut], l),
            Err(DecodeError::TooLarge)
        ));
    }

    #[test]
    fn an_object_that_never_ends_needs_more_with_bounded_memory() {
        let l = small_limits();
        let mut decoder = MessageDecoder::new(l);
        let mut sink = DiscardSink;
        assert_eq!(decoder.feed(b"{", &mut sink).unwrap(), Feed::NeedMore);
        let spaces = vec![b' '; 64 * 1024];
        for _ in 0..100 {
            assert_eq!(decoder.feed(&spaces, &mut sink).unwrap(), Feed::NeedMore);
        }
        assert!(decoder.env.capacity() <= l.max_envelope);
        assert!(matches!(decoder.finish(), Err(DecodeError::Malformed(_))));

        // A data string that never ends: bounded by the data buffer, then
        // TooLarge at max_data.
        let mut decoder = MessageDecoder::new(l);
        assert_eq!(
            decoder.feed(b"{\"data\":\"", &mut sink).unwrap(),
            Feed::NeedMore
        );
        let zeros = vec![b'0'; 64 * 1024];
        let mut result = Ok(Feed::NeedMore);
        for _ in 0..100 {
            result = decoder.feed(&zeros, &mut sink);
            if result.is_err() {
                break;
            }
            assert_eq!(decoder.buf.len(), DATA_BUFFER_LEN);
            assert!(decoder.env.capacity() <= l.max_envelope);
        }
        assert!(matches!(result, Err(DecodeError::TooLarge)));
    }

    #[test]
    fn an_envelope_over_the_cap_is_too_large_and_never_outgrows_it() {
        let l = small_limits();
        let mut decoder = MessageDecoder::new(l);
        let mut sink = DiscardSink;
        decoder.feed(b"{\"a\":\"", &mut sink).unwrap();
        let mut result = Ok(Feed::NeedMore);
        for _ in 0..100 {
            result = decoder.feed(&[b'x'; 100], &mut sink);
            if result.is_err() {
                break;
            }
            assert!(decoder.env.capacity() <= l.max_envelope);
        }
        assert!(matches!(result, Err(DecodeError::TooLarge)));
        // Arrays of numbers too, fed one byte at a time.
        let mut decoder = MessageDecoder::new(l);
        decoder.feed(b"{\"a\":[", &mut sink).unwrap();
        let mut result = Ok(Feed::NeedMore);
        for _ in 0..10_000 {
            result = decoder
                .feed(b"1", &mut sink)
                .and_then(|_| decoder.feed(b",", &mut sink));
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(DecodeError::TooLarge)));
        // A message exactly at the cap is fine.
        let body = "y".repeat(l.max_envelope - r#"{"a":""}"#.len());
        let msg = format!(r#"{{"a":"{body}"}}"#);
        assert_eq!(msg.len(), l.max_envelope);
        assert!(decode_all(msg.as_bytes(), l).is_ok());
        let msg = format!(r#"{{"a":"{body}z"}}"#);
        assert!(matches!(
            decode_all(msg.as_bytes(), l),
            Err(DecodeError::TooLarge)
        ));
    }

    #[test]
    fn nesting_ten_thousand_deep_is_too_deep_without_overflowing_the_stack() {
        let mut msg = String::from("{\"a\":");
        msg.push_str(&"[".repeat(10_000));
        assert!(matches!(
            decode_all(msg.as_bytes(), limits()),
            Err(DecodeError::TooDeep)
        ));
        let mut msg = String::from("{\"a\":");
        msg.push_str(&"{\"b\":".repeat(10_000));
        msg.push('1');
        msg.push_str(&"}".repeat(10_001));
        assert!(matches!(
            decode_all(msg.as_bytes(), limits()),
            Err(DecodeError::TooDeep)
        ));
        // Exactly max_depth levels (the top object counts) is accepted.
        let l = limits();
        let inner = l.max_depth - 1;
        let msg = format!("{{\"a\":{}{}}}", "[".repeat(inner), "]".repeat(inner));
        assert!(decode_all(msg.as_bytes(), l).is_ok());
        let msg = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(inner + 1),
            "]".repeat(inner + 1)
        );
        assert!(matches!(
            decode_all(msg.as_bytes(), l),
            Err(DecodeError::TooDeep)
        ));
        // Brackets inside strings don't count.
        let msg = format!("{{\"a\":\"{}\"}}", "[".repeat(10_000));
        assert!(decode_all(msg.as_bytes(), l).is_ok());
    }

    #[test]
    fn done_consumed_points_just_past_the_first_objects_brace() {
        let first = r#"{"type":"GET_FILE","file_id":"a}b"}"#;
        let input = format!("  {first}\n{{\"type\":\"DELETE\"}}");
        let mut decoder = MessageDecoder::new(limits());
        let feed = decoder.feed(input.as_bytes(), &mut DiscardSink).unwrap();
        assert_eq!(
            feed,
            Feed::Done {
                consumed: first.len() + 2
            }
        );
        assert_eq!(
            decoder.feed(b"more", &mut DiscardSink).unwrap(),
            Feed::Done { consumed: 0 }
        );
        let decoded = decoder.finish().unwrap();
        assert_eq!(decoded.fields["file_id"], "a}b");

        for msg in [
            file_data("\"00\""),
            file_data("null"),
            r#"{"data":"00"}"#.into(),
        ] {
            let input = format!("{msg}\n{msg}");
            let (_, _, consumed) = decode_pieces(input.as_bytes(), &[], limits()).unwrap();
            assert_eq!(consumed, msg.len());
            let (_, _, consumed) = decode_bytewise(input.as_bytes()).unwrap();
            assert_eq!(consumed, msg.len());
        }
    }

    #[test]
    fn strings_with_braces_quotes_and_backslashes_do_not_confuse_framing() {
        let value = json!({
            "type": "ANNOUNCE",
            "from": "p}{\"\\",
            "file_name": "a \"quoted\" {name} [x] \\ \\\" end\\",
            "we\"ird}\\": ["]", "[", {"}": "{"}],
            "nested": {"data": "not hex, kept as is"},
            "unicode": "é😀\u{1}",
        });
        let text = serde_json::to_string(&value).unwrap();
        let (decoded, data) = decode_all(text.as_bytes(), limits()).unwrap();
        assert_eq!(Value::Object(decoded.fields), value);
        assert_eq!(decoded.data, DataField::Absent);
        assert!(data.is_empty());
        let bytewise = decode_bytewise(text.as_bytes()).unwrap();
        assert_eq!(Value::Object(bytewise.0.fields), value);
        assert_eq!(bytewise.2, text.len());
    }

    #[test]
    fn an_escaped_key_named_data_is_an_ordinary_field() {
        let (d, _) = decode_all(br#"{"d\u0061ta":"zz","data":"00"}"#, limits()).unwrap();
        assert_eq!(d.fields["data"], "zz");
        assert_eq!(d.data, DataField::Bytes { len: 1 });
    }

    #[test]
    fn top_level_values_that_are_not_objects_are_malformed() {
        for msg in [
            "[1,2]",
            "\"x\"",
            "5",
            "null",
            "true",
            "]",
            "x{}",
            "\u{feff}{}",
        ] {
            assert!(
                matches!(
                    decode_all(msg.as_bytes(), limits()),
                    Err(DecodeError::Malformed(_))
                ),
                "{msg}"
            );
        }
    }

    #[test]
    fn garbage_inside_the_object_is_malformed() {
        for msg in [
            "{a:1}",
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            r#"{"a":}"#,
            r#"{"a":1 2}"#,
            r#"{"a":[1}"#,
            r#"{"a":1]}"#,
            r#"{"data":"00","data":"11"}"#,
            r#"{"data":null,"data":null}"#,
            r#"{"data":null,}"#,
            r#"{"data":"00" "a":1}"#,
            r#"{"data":nullx}"#,
            r#"{"a":"bad escape \x"}"#,
            "{\"a\":\"\u{1}\"}",
        ] {
            assert!(
                matches!(
                    decode_all(msg.as_bytes(), limits()),
                    Err(DecodeError::Malformed(_))
                ),
                "{msg}"
            );
        }
        let mut bad_utf8 = br#"{"a":""#.to_vec();
        bad_utf8.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
        assert!(matches!(
            decode_all(&bad_utf8, limits()),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn incomplete_messages_are_malformed_and_a_failed_decoder_stays_failed() {
        assert!(matches!(
            decode_all(br#"{"a":1"#, limits()),
            Err(DecodeError::Malformed(_))
        ));
        let mut decoder = MessageDecoder::new(limits());
        assert!(decoder.feed(b"[", &mut DiscardSink).is_err());
        assert!(decoder.feed(b"{}", &mut DiscardSink).is_err());
        assert!(decoder.finish().is_err());
    }

    #[test]
    fn a_failing_sink_is_reported() {
        struct Full;
        impl DataSink for Full {
            fn write_data(&mut self, _: &[u8]) -> io::Result<()> {
                Err(io::Error::other("disk full"))
            }
        }
        let mut decoder = MessageDecoder::new(limits());
        let msg = file_data("\"00\"");
        assert!(matches!(
            decoder.feed(msg.as_bytes(), &mut Full),
            Err(DecodeError::Sink(_))
        ));
    }

    #[test]
    fn end_data_comes_once_after_the_last_bytes_and_its_error_is_reported() {
        /// Records the bytes and whether `end_data` came after them.
        struct Ending(Vec<u8>, Vec<usize>, bool);
        impl DataSink for Ending {
            fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
                assert!(self.1.is_empty(), "data after end_data");
                self.0.extend_from_slice(bytes);
                Ok(())
            }
            fn end_data(&mut self) -> io::Result<()> {
                self.1.push(self.0.len());
                if self.2 {
                    Err(io::Error::other("flush failed"))
                } else {
                    Ok(())
                }
            }
        }
        let payload: Vec<u8> = (0..=255).cycle().take(3 * DATA_BUFFER_LEN + 7).collect();
        let msg = file_data(&format!("\"{}\"", hex(&payload)));
        let mut sink = Ending(Vec::new(), Vec::new(), false);
        let mut decoder = MessageDecoder::new(limits());
        for piece in msg.as_bytes().chunks(100_003) {
            let _ = decoder.feed(piece, &mut sink).unwrap();
        }
        assert!(decoder.is_done());
        assert!(sink.0 == payload);
        assert_eq!(sink.1, vec![payload.len()]);
        // An empty string ends too; null and absent data never start.
        for (data, ends) in [("\"\"", 1), ("null", 0)] {
            let mut sink = Ending(Vec::new(), Vec::new(), false);
            decode_into(file_data(data).as_bytes(), &mut sink);
            assert_eq!(sink.1.len(), ends, "{data}");
        }
        let mut sink = Ending(Vec::new(), Vec::new(), false);
        decode_into(br#"{"type":"GOSSIP"}"#, &mut sink);
        assert!(sink.1.is_empty());
        // A failing end is a sink error.
        let mut sink = Ending(Vec::new(), Vec::new(), true);
        let mut decoder = MessageDecoder::new(limits());
        assert!(matches!(
            decoder.feed(file_data("\"0011\"").as_bytes(), &mut sink),
            Err(DecodeError::Sink(_))
        ));
    }

    #[test]
    fn a_bad_digit_anywhere_in_a_long_run_is_bad_hex_however_it_is_fed() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let good = file_data(&format!("\"{}\"", hex(&payload)));
        let start = good.find("\"data\":\"").unwrap() + 8;
        for offset in [0, 1, 31, 32, 100_001, 599_999] {
            for bad in [b'g', b' ', b'"', 0xff] {
                let mut msg = good.clone().into_bytes();
                msg[start + offset] = bad;
                for piece in [7, 4096, 65_536, msg.len()] {
                    let mut decoder = MessageDecoder::new(limits());
                    let mut data = Vec::new();
                    let mut result = Ok(Feed::NeedMore);
                    for chunk in msg.chunks(piece) {
                        result = decoder.feed(chunk, &mut data);
                        if !matches!(result, Ok(Feed::NeedMore)) {
                            break;
                        }
                    }
                    // A quote ends the string early: then what follows is
                    // not `,` or `}`.
                    match bad {
                        b'"' => assert!(
                            matches!(result, Err(DecodeError::Malformed(_) | DecodeError::BadHex)),
                            "offset {offset} piece {piece}"
                        ),
                        _ => assert!(
                            matches!(result, Err(DecodeError::BadHex)),
                            "offset {offset} byte {bad} piece {piece}: {result:?}"
                        ),
                    }
                    // Nothing past the bad digit was handed on.
                    assert!(data.len() <= offset / 2, "offset {offset} piece {piece}");
                    assert!(payload.starts_with(&data));
                }
            }
        }
    }

    fn decode_into(msg: &[u8], sink: &mut dyn DataSink) {
        let mut decoder = MessageDecoder::new(limits());
        assert!(matches!(
            decoder.feed(msg, sink).unwrap(),
            Feed::Done { .. }
        ));
    }

    #[test]
    fn the_closing_quote_ends_the_data_wherever_it_falls_in_a_read() {
        // Lengths around the buffer size, and the quote at every offset of
        // the last read relative to it.
        for len in [
            0,
            1,
            31,
            32,
            33,
            DATA_BUFFER_LEN - 1,
            DATA_BUFFER_LEN,
            DATA_BUFFER_LEN + 1,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let msg = file_data(&format!("\"{}\"", hex(&payload)));
            let quote = msg.rfind('"').unwrap();
            for cut in [quote.saturating_sub(3), quote - 1, quote, quote + 1] {
                let mut decoder = MessageDecoder::new(limits());
                let mut sink = Vec::new();
                let (a, b) = msg.as_bytes().split_at(cut);
                assert!(matches!(
                    decoder.feed(a, &mut sink).unwrap(),
                    Feed::NeedMore
                ));
                assert!(matches!(
                    decoder.feed(b, &mut sink).unwrap(),
                    Feed::Done { .. }
                ));
                assert_eq!(sink, payload, "len {len}, cut {cut}");
            }
        }
    }

    #[test]
    fn data_exactly_at_the_limit_ends_in_the_same_read() {
        let mut l = small_limits();
        l.max_data = 4;
        for tail in ["\"", "\"}", "\"}\n"] {
            let msg = format!("{{\"type\":\"FILE_DATA\",\"data\":\"00112233{tail}");
            let mut decoder = MessageDecoder::new(l);
            let mut sink = Vec::new();
            let fed = decoder.feed(msg.as_bytes(), &mut sink);
            assert!(fed.is_ok(), "{tail:?}: {fed:?}");
            assert_eq!(sink, [0, 0x11, 0x22, 0x33]);
        }
        // One digit past the limit, then the quote: too large or bad hex,
        // never accepted.
        let mut decoder = MessageDecoder::new(l);
        assert!(decoder
            .feed(b"{\"data\":\"001122334\"}", &mut Vec::new())
            .is_err());
    }

    #[test]
    fn full_buffers_are_handed_over_by_value() {
        /// Keeps every full buffer and gives back an empty one.
        #[derive(Default)]
        struct Keeping {
            full: Vec<Vec<u8>>,
            tail: Vec<u8>,
        }
        impl DataSink for Keeping {
            fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
                self.tail.extend_from_slice(bytes);
                Ok(())
            }
            fn write_buffer(&mut self, buf: Vec<u8>) -> io::Result<Vec<u8>> {
                self.full.push(buf);
                Ok(Vec::new())
            }
        }
        let payload: Vec<u8> = (0..2 * DATA_BUFFER_LEN + 5)
            .map(|i| (i % 251) as u8)
            .collect();
        let msg = file_data(&format!("\"{}\"", hex(&payload)));
        let mut sink = Keeping::default();
        let mut decoder = MessageDecoder::new(limits());
        for piece in msg.as_bytes().chunks(100_003) {
            if let Feed::Done { .. } = decoder.feed(piece, &mut sink).unwrap() {
                break;
            }
        }
        assert_eq!(sink.full.len(), 2);
        assert!(sink.full.iter().all(|b| b.len() == DATA_BUFFER_LEN));
        assert_eq!(sink.tail.len(), 5);
        let all: Vec<u8> = sink.full.concat().into_iter().chain(sink.tail).collect();
        assert_eq!(all, payload);
    }

    fn arb_message() -> impl Strategy<Value = (String, Vec<u8>)> {
        (
            proptest::collection::vec(any::<u8>(), 0..600),
            0usize..4,
            any::<bool>(),
            "[a-z \"\\\\{}\\[\\]]{0,12}",
        )
            .prop_map(|(payload, pos, upper, name)| {
                let mut h = hex(&payload);
                if upper {
                    h.make_ascii_uppercase();
                }
                let mut members = vec![
                    r#""type":"FILE_DATA""#.to_string(),
                    format!(r#""file_name":{}"#, Value::String(name)),
                    r#""file_timestamp":1.5e9"#.to_string(),
                ];
                members.insert(pos.min(members.len()), format!(r#""data":"{h}""#));
                (format!(" {{ {} }}\n", members.join(" , ")), payload)
            })
    }

    proptest! {
        #[test]
        fn any_split_of_a_message_decodes_identically(
            (msg, payload) in arb_message(),
            cuts in proptest::collection::vec(0usize..2000, 0..8),
        ) {
            let whole = decode_pieces(msg.as_bytes(), &[], limits()).unwrap();
            prop_assert_eq!(&whole.1, &payload);
            prop_assert_eq!(whole.2, msg.trim_end().len());
            let mut cuts = cuts;
            cuts.sort_unstable();
            let split = decode_pieces(msg.as_bytes(), &cuts, limits()).unwrap();
            prop_assert_eq!(&split.0, &whole.0);
            prop_assert_eq!(&split.1, &whole.1);
            prop_assert_eq!(split.2, whole.2);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cut in 0usize..512,
        ) {
            let _ = decode_all(&bytes, small_limits());
            let _ = decode_pieces(&bytes, &[cut], small_limits());
            let mut prefixed = br#"{"data":"#.to_vec();
            prefixed.extend_from_slice(&bytes);
            let _ = decode_pieces(&prefixed, &[cut], small_limits());
            let mut prefixed = br#"{"a":"#.to_vec();
            prefixed.extend_from_slice(&bytes);
            let _ = decode_pieces(&prefixed, &[cut], small_limits());
        }

        #[test]
        fn json_like_noise_never_panics_and_agrees_across_splits(
            bytes in proptest::collection::vec(
                prop_oneof![
                    Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'),
                    Just(b'\\'), Just(b':'), Just(b','), Just(b' '), Just(b'0'),
                    Just(b'a'), Just(b'd'), Just(b'n'),
                ],
                0..64,
            ),
        ) {
            let mut msg = b"{\"data\":\"00\",".to_vec();
            msg.extend_from_slice(&bytes);
            let whole = decode_pieces(&msg, &[], small_limits());
            let bytewise = decode_pieces(&msg, &(1..msg.len()).collect::<Vec<_>>(), small_limits());
            match (whole, bytewise) {
                (Ok(a), Ok(b)) => { prop_assert_eq!(a.0, b.0); prop_assert_eq!(a.2, b.2); }
                (Err(a), Err(b)) => prop_assert_eq!(
                    std::mem::discriminant(&a), std::mem::discriminant(&b)
                ),
                (a, b) => prop_assert!(false, "whole {:?} vs bytewise {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }
}
