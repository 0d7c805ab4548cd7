//! Reporting the network's transfers to the core: a FILE_DATA streamed to a
//! peer (a GET_FILE reply, a push we send) is registered when its
//! connection takes the role, a push we receive once its first data bytes
//! are decoded; their bytes are reported after each step, and
//! their end once.

use super::conns::conn_addr;
use super::Driver;
use crate::core::UploadEnd;
use crate::net::conn::{Payload, Role, WriteKind};
use crate::protocol::FileDataHeader;

impl Driver {
    /// Connection `key` just took its role: a file stream is registered
    /// with the core as an upload (to the address dialled, or the remote
    /// address of an inbound connection).
    pub(super) fn upload_started(&mut self, key: usize) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Role::Write {
            payload: Payload::File(enc),
            kind,
        } = &c.role
        else {
            return;
        };
        if c.upload.is_some() {
            return;
        }
        let peer = conn_addr(c);
        let push = *kind == WriteKind::Push;
        c.upload = self
            .core
            .on_upload_started(now, &peer, enc.file_id(), enc.file_len(), push);
        if push {
            self.arm_progress();
        }
    }

    /// Tells the core how far the transfer on connection `key` got; an
    /// inbound message whose `data` has started (only a FILE_DATA has one)
    /// is a push we receive, registered at its first report. Its first
    /// bytes may still be in the decoder's buffer, before the push quota
    /// is asked: a push refused there is listed, then ends as failed.
    pub(super) fn upload_progress(&mut self, key: usize) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let done = match &c.role {
            Role::Write {
                payload: Payload::File(enc),
                ..
            } => enc.file_bytes_sent(),
            Role::Read { decoder, .. } if decoder.data_len() > 0 => {
                if c.upload.is_none() {
                    c.upload = self.core.on_push_in_started(now, &conn_addr(c));
                }
                decoder.data_len()
            }
            _ => return,
        };
        if let Some(id) = c.upload {
            self.core.on_upload_progress(id, done);
        }
    }

    /// The push we receive on connection `key` (if listed) arrived whole as
    /// `header` says, `len` data bytes.
    pub(super) fn push_in_received(&mut self, key: usize, header: &FileDataHeader, len: u64) {
        let now = self.now();
        if let Some(id) = self.conns.get_mut(key).and_then(|c| c.upload.take()) {
            let name = header.file_name.as_deref().unwrap_or("(unnamed file)");
            self.core.on_push_in_received(now, id, name, len);
        }
    }

    /// The upload on connection `key` (if any) ended so; it is reported
    /// once (the connection forgets it).
    pub(super) fn upload_ended(&mut self, key: usize, end: UploadEnd) {
        let now = self.now();
        if let Some(id) = self.conns.get_mut(key).and_then(|c| c.upload.take()) {
            self.core.on_upload_ended(now, id, end);
        }
    }
}
