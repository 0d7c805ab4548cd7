//! What the driver did, counted: bytes and messages on peer connections,
//! uploads (GET_FILE replies and pushes carrying a file) by outcome, and
//! what the driver's limits turned away (the push quota counts its own
//! refusals). Plain `u64`s bumped on the loop,
//! read when `/metrics` is rendered. Decisions (gossip limits, downloads)
//! are counted by the core (`core::counters`).

use crate::net::conn::{CloseReason, Payload, Role, WriteKind};
use std::collections::BTreeMap;

/// The `type` labels of messages in and out; anything that is not one of
/// the first six (undecodable, unknown type, missing fields) is `malformed`.
pub const MESSAGE_TYPES: [&str; 7] = [
    "GOSSIP",
    "GOSSIP_REPLY",
    "GET_FILE",
    "FILE_DATA",
    "ANNOUNCE",
    "DELETE",
    "malformed",
];

/// The driver's limits, as `limit` labels of `peershare_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetLimit {
    /// A message or push not sent: its destination is over its dial rate
    /// or backing off after a failed connect (`core::dial_limit`).
    DialLimit,
    /// An inbound connection closed: unfinished messages held more than
    /// the inbound budget.
    InboundBudget,
}

impl NetLimit {
    /// Every limit, in the order `/metrics` lists them.
    pub const ALL: [NetLimit; 2] = [NetLimit::DialLimit, NetLimit::InboundBudget];

    /// The `limit` label.
    pub fn label(self) -> &'static str {
        match self {
            NetLimit::DialLimit => "dial_limit",
            NetLimit::InboundBudget => "inbound_budget",
        }
    }
}

/// The driver's counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Bytes read on peer connections (not HTTP).
    pub bytes_in: u64,
    /// Bytes written on peer connections (not HTTP).
    pub bytes_out: u64,
    /// File bytes of the FILE_DATAs sent whole (replies and pushes).
    pub file_bytes_served: u64,
    /// Messages received whole, by [`MESSAGE_TYPES`] index.
    messages_in: [u64; 7],
    /// Messages set out to send (counted at the dial), by type.
    messages_out: [u64; 7],
    /// Uploads started: a GET_FILE answered with our copy, a push opened.
    pub uploads_started: u64,
    /// Uploads whose FILE_DATA was written whole.
    pub uploads_succeeded: u64,
    /// Uploads ended early, by reason label.
    pub uploads_failed: BTreeMap<&'static str, u64>,
    /// What the driver's limits turned away, by [`NetLimit::ALL`] index.
    dropped: [u64; 2],
}

fn type_index(kind: &str) -> usize {
    MESSAGE_TYPES[..6]
        .iter()
        .position(|t| *t == kind)
        .unwrap_or(6)
}

impl NetCounters {
    /// A message of type `kind` (`Message::kind`, or `"malformed"`) arrived.
    pub fn message_in(&mut self, kind: &str) {
        self.messages_in[type_index(kind)] += 1;
    }

    /// A message of type `kind` is being sent.
    pub fn message_out(&mut self, kind: &str) {
        self.messages_out[type_index(kind)] += 1;
    }

    /// Messages of `MESSAGE_TYPES[i]` received.
    pub fn messages_in(&self, i: usize) -> u64 {
        self.messages_in[i]
    }

    /// Messages of `MESSAGE_TYPES[i]` sent.
    pub fn messages_out(&self, i: usize) -> u64 {
        self.messages_out[i]
    }

    /// A limit turned something away.
    pub fn dropped_by(&mut self, limit: NetLimit) {
        self.dropped[limit as usize] += 1;
    }

    /// What `limit` turned away.
    pub fn dropped(&self, limit: NetLimit) -> u64 {
        self.dropped[limit as usize]
    }

    /// Counts the bytes a step moved on a peer connection: `before` and
    /// the role after it, as [`io_mark`]s.
    pub fn stepped(&mut self, before: (u64, u64), after: (u64, u64)) {
        self.bytes_in += after.0.saturating_sub(before.0);
        self.bytes_out += after.1.saturating_sub(before.1);
    }

    /// A role finished its work (`Outcome::Written`): an upload succeeded.
    pub fn written(&mut self, role: &Role) {
        if let Some(len) = upload_len(role) {
            self.uploads_succeeded += 1;
            self.file_bytes_served += len;
        }
    }

    /// A connection is closed with `role` (`why`: the reason, none for a
    /// quiet close): an upload in it failed.
    pub fn closed(&mut self, role: &Role, why: Option<&CloseReason>) {
        let role = match role {
            Role::Connecting(inner) => inner,
            other => other,
        };
        if upload_len(role).is_some() {
            let label = why.map_or("closed", CloseReason::upload_label);
            *self.uploads_failed.entry(label).or_default() += 1;
        }
    }
}

/// The file length of an upload's role (a FILE_DATA carrying our copy).
fn upload_len(role: &Role) -> Option<u64> {
    match role {
        Role::Write {
            payload: Payload::File(enc),
            kind: WriteKind::FileReply | WriteKind::Push,
        } => Some(enc.file_len()),
        _ => None,
    }
}

/// Bytes a peer connection's role has read and written so far (zero for
/// HTTP and the rest): a step's traffic is the difference across it.
pub fn io_mark(role: &Role) -> (u64, u64) {
    match role {
        Role::Read { received, .. } => (*received, 0),
        Role::Fetch(f) => (f.received, f.request_pos as u64),
        Role::Write {
            payload: Payload::File(enc),
            ..
        } => (0, enc.bytes_written()),
        Role::Write { payload, kind } if *kind != WriteKind::Http => (0, payload.written() as u64),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_message_types_count_as_malformed() {
        let mut c = NetCounters::default();
        c.message_in("GOSSIP");
        c.message_in("NOT_A_TYPE");
        c.message_in("malformed");
        c.message_out("FILE_DATA");
        assert_eq!(c.messages_in(0), 1);
        assert_eq!(c.messages_in(6), 2);
        assert_eq!(c.messages_out(3), 1);
        assert_eq!(c.messages_out(0), 0);
    }

    #[test]
    fn a_step_adds_only_the_bytes_it_moved() {
        let mut c = NetCounters::default();
        c.stepped((100, 0), (250, 0));
        c.stepped((0, 10), (0, 50));
        assert_eq!((c.bytes_in, c.bytes_out), (150, 40));
    }

    #[test]
    fn a_plain_message_written_is_not_an_upload() {
        let mut c = NetCounters::default();
        let role = Role::Write {
            payload: Payload::bytes(b"{}".to_vec()),
            kind: WriteKind::Send,
        };
        c.written(&role);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        c.closed(
            &role,
            Some(&CloseReason::WriteFailed {
                error: reset,
                source_changed: false,
            }),
        );
        assert_eq!(c.uploads_succeeded + c.uploads_failed.len() as u64, 0);
    }

    #[test]
    fn an_upload_ends_labelled_by_how_it_closed() {
        let changed = CloseReason::WriteFailed {
            error: std::io::Error::other("shrank"),
            source_changed: true,
        };
        assert_eq!(changed.upload_label(), "disk");
        assert_eq!(CloseReason::FileChanged.upload_label(), "disk");
        assert_eq!(
            CloseReason::TimedOut("no progress").upload_label(),
            "stalled"
        );
        let reset = CloseReason::WriteFailed {
            error: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            source_changed: false,
        };
        assert_eq!(reset.upload_label(), "closed");
        for label in ["disk", "stalled", "closed"] {
            assert!(crate::core::counters::FAILURE_LABELS.contains(&label));
        }
    }
}
