//! Reporting uploads to the core: a FILE_DATA streamed to a peer (a GET_FILE
//! reply, a push we send) is registered when its connection takes the
//! role, its bytes are reported after each step, and its end once.

use super::Driver;
use crate::core::UploadEnd;
use crate::net::conn::{Payload, Role, WriteKind};

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
        let peer = match &c.target {
            Some(to) => to.to_string(),
            None => c
                .stream
                .peer_addr()
                .map_or_else(|_| "an unknown address".into(), |a| a.to_string()),
        };
        let push = *kind == WriteKind::Push;
        c.upload = self
            .core
            .on_upload_started(now, &peer, enc.file_id(), enc.file_len(), push);
        if push {
            self.arm_progress();
        }
    }

    /// Tells the core how far the upload on connection `key` got.
    pub(super) fn upload_progress(&mut self, key: usize) {
        let Some(c) = self.conns.get(key) else {
            return;
        };
        if let (
            Some(id),
            Role::Write {
                payload: Payload::File(enc),
                ..
            },
        ) = (c.upload, &c.role)
        {
            self.core.on_upload_progress(id, enc.file_bytes_sent());
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
