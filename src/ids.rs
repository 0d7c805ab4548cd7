//! Typed identifiers that cross module boundaries.
//!
//! Peers and files are named by free strings on the network; wrapping them
//! keeps a peer id from being passed where a file id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A peer's self-chosen name (`peerId` on the wire). Opaque: may hold spaces,
/// `!`, or even look like a file id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(pub String);

/// A file's id: normally `sha256(bytes + str(timestamp))` in lowercase hex,
/// but treated as an opaque string because some ids on the network verify
/// under no known formula.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileId(pub String);

/// One download (or push) in flight, unique within one peer's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransferId(pub u64);

macro_rules! string_id {
    ($t:ty) => {
        impl $t {
            /// The id as the string the network uses.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
        impl From<String> for $t {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}
string_id!(PeerId);
string_id!(FileId);

impl FileId {
    /// The first 12 characters, for aligned tables. Never splits a UTF-8
    /// character (ids from the network are opaque strings).
    pub fn short(&self) -> &str {
        match self.0.char_indices().nth(12) {
            Some((i, _)) => &self.0[..i],
            None => &self.0,
        }
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A host and P2P port as a peer advertised them: `host` is a name or an
/// IPv4 literal and is resolved off the event loop.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerAddr {
    /// Host name or IP literal, as advertised.
    pub host: String,
    /// The peer's P2P (TCP) port.
    pub port: u16,
}

impl PeerAddr {
    /// Builds an address from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}
