//! The network's wire protocol: message types, tolerant parsing, framing and
//! the streaming FILE_DATA codec.
//!
//! Owns bytes <-> messages only; what to do with a message is `core`'s job.
//! Limits are named here and enforced before anything is parsed.

pub mod decoder;
pub mod encoder;
pub mod message;

pub use message::{
    ByteRange, FileDataHeader, FileRecord, FileSize, Message, ParseError, Timestamp,
};

/// Largest message other than FILE_DATA's `data` (a GOSSIP_REPLY with a large
/// catalog still fits; anything bigger is dropped and the connection closed).
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;

/// How deep JSON may nest before a message is refused (protects the parser's
/// stack against `[[[[...` attacks).
pub const MAX_JSON_DEPTH: usize = 64;

/// A connection that sends nothing for this long before its message is
/// complete is dropped.
pub const MESSAGE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Default upper bound on a file a peer may send us (`--max-file-size`).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 4 * 1024 * 1024 * 1024;
