//! Incremental decoder for one top-level JSON message (HELPER A fills this in).
//!
//! Interface contract (do not change the public signatures without telling
//! the integrator):
//! - `MessageDecoder::new(limits)`; `feed(input, sink)` as bytes arrive;
//!   returns `Feed::Done { consumed }` at the closing brace of the top-level
//!   object (bytes after it are the caller's to ignore);
//! - a top-level `"data"` string is hex-decoded chunk by chunk into `sink`,
//!   never buffered whole; every other field is collected (capped) and
//!   returned by `finish()` as a JSON object.

use serde_json::{Map, Value};
use std::fmt;
use std::io;

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

/// Where the decoded bytes of `data` go.
pub trait DataSink {
    /// Receives the next decoded bytes of `data`, in order.
    fn write_data(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// A sink that drops data (messages that must not carry any).
pub struct DiscardSink;
impl DataSink for DiscardSink {
    fn write_data(&mut self, _bytes: &[u8]) -> io::Result<()> {
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
        write!(f, "{self:?}")
    }
}
impl std::error::Error for DecodeError {}

/// Incremental decoder state for one message.
pub struct MessageDecoder {
    _limits: DecoderLimits,
}

impl MessageDecoder {
    /// A decoder for one message.
    pub fn new(limits: DecoderLimits) -> Self {
        Self { _limits: limits }
    }
    /// Feeds the next bytes.
    pub fn feed(&mut self, _input: &[u8], _sink: &mut dyn DataSink) -> Result<Feed, DecodeError> {
        Err(DecodeError::Malformed("stub".into()))
    }
    /// The finished message (after `Feed::Done`).
    pub fn finish(self) -> Result<Decoded, DecodeError> {
        Err(DecodeError::Malformed("stub".into()))
    }
    /// Decoded `data` bytes so far (progress display).
    pub fn data_len(&self) -> u64 {
        0
    }
}
