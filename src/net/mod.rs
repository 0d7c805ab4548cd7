//! The one mio event loop that drives the sans-IO core.
//!
//! Readiness in, events to [`Peer`], effects out as bytes. One thread owns
//! every socket (P2P listener and connections, HTTP listener and
//! connections), stdin, the signal pipe and a waker for helper threads
//! (name resolution, metadata writes, push imports). Every deadline lives in
//! one timer wheel whose next deadline is the poll timeout, so an idle peer
//! uses no CPU. Nothing here blocks on DNS, stdin or a slow peer.

pub mod conn;
pub mod counters;
pub mod driver;
pub mod exit_guard;
pub mod file_writer;
pub mod http_out;
pub mod limits;
pub mod push_gate;
pub mod resolver;
pub mod sockopt;
pub mod stdin;
pub mod timer;
pub mod trim;

pub use driver::{run, StartError};
