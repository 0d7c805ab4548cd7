//! peershare: a peer for a gossip-based peer-to-peer file-sharing network.
//!
//! The architecture in folders:
//! - [`protocol`]: bytes <-> messages (tolerant parsing, framing, the
//!   streaming FILE_DATA codec, limits);
//! - [`core`]: the sans-IO peer (membership, gossip, catalog, downloads):
//!   events in, effects out, time passed in;
//! - [`storage`]: the storage folder (scan, metadata file, safe names,
//!   atomic writes);
//! - [`net`]: the one mio event loop that drives the core;
//! - [`http`]: the stats page and its JSON API;
//! - [`cli`]: arguments and the stdin menu.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod core;
#[cfg(feature = "testkit")]
pub mod fuzzing;
pub mod http;
pub mod ids;
pub mod net;
pub mod protocol;
pub mod storage;
pub mod units;
