//! The push quota at the socket: a [`DataSink`] in front of an inbound
//! connection's sink that asks [`PushQuota`] before a pushed FILE_DATA's
//! bytes go to the disk. A refusal is an I/O error to the decoder, so the
//! connection closes and the temp file (if any) is removed; a push refused
//! at its first byte never creates one.

use crate::core::push_quota::{PushQuota, PushTicket};
use crate::core::Time;
use crate::net::conn::PartialSink;
use crate::protocol::decoder::DataSink;
use std::io;
use std::net::IpAddr;

/// One connection's sink, gated by the quota for one step.
pub struct PushGate<'a> {
    /// Where admitted bytes go.
    pub sink: &'a mut PartialSink,
    /// The quota asked.
    pub quota: &'a mut PushQuota,
    /// The connection's remote address (the push's source).
    pub from: IpAddr,
    /// The push's ticket, taken at its first byte.
    pub ticket: &'a mut Option<PushTicket>,
    /// The step's time.
    pub now: Time,
}

impl PushGate<'_> {
    fn allow(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let ticket = match *self.ticket {
            Some(t) => t,
            None => {
                let t = self.quota.admit(self.now, self.from).map_err(refused)?;
                *self.ticket = Some(t);
                t
            }
        };
        self.quota
            .add_bytes(self.now, ticket, n as u64)
            .map_err(refused)
    }
}

fn refused(why: crate::core::push_quota::Refusal) -> io::Error {
    io::Error::other(format!("over the push quota: {why}"))
}

impl DataSink for PushGate<'_> {
    fn write_data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.allow(bytes.len())?;
        self.sink.write_data(bytes)
    }

    fn end_data(&mut self) -> io::Result<()> {
        self.sink.end_data()
    }

    fn write_buffer(&mut self, buf: Vec<u8>) -> io::Result<Vec<u8>> {
        self.allow(buf.len())?;
        self.sink.write_buffer(buf)
    }
}
