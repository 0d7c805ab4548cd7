//! One bounded I/O step of a connection and what its outcome leads to.

use super::receive::Finishing;
use super::Driver;
use crate::core::push_quota::{PushQuota, PushTicket};
use crate::core::{FetchResult, Peer, SourceFailure, Time};
use crate::http;
use crate::net::conn::{
    connect_status, feed, read_loop, write_payload, CloseReason, FetchConn, Outcome, Payload, Role,
    WriteKind,
};
use crate::net::conn::{Conn, PartialSink};
use crate::net::counters::{io_mark, NetLimit};
use crate::net::push_gate::PushGate;
use crate::net::trim;
use crate::protocol::decoder::MessageDecoder;
use crate::protocol::encoder::{self};
use log::{debug, info};
use mio::net::TcpStream;
use mio::Interest;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

/// Memory all unfinished inbound messages may hold together. Each message
/// is capped at `MAX_MESSAGE_LEN`; without a total, a thousand connections
/// each sending a 16 MiB message that never ends would hold 16 GiB. Over
/// it, the connection holding the most is closed.
pub const INBOUND_BUFFER_BUDGET: usize = 32 * 1024 * 1024;

/// Only a step that leaves a connection holding this much checks the total.
pub(super) const BUDGET_CHECK_FLOOR: usize = 64 * 1024;

/// Why a reply's decoding failed, as the core reports it.
pub(super) fn decode_failure(e: &crate::protocol::decoder::DecodeError) -> SourceFailure {
    use crate::protocol::decoder::DecodeError as E;
    match e {
        E::TooLarge => SourceFailure::TooLarge,
        E::TooDeep => SourceFailure::Malformed("nested too deeply".into()),
        E::Malformed(m) => SourceFailure::Malformed(m.to_string()),
        E::BadHex => {
            SourceFailure::Malformed("data is not hex (corrupt, or base64 from an old peer)".into())
        }
        E::Sink(io) => SourceFailure::Disk(format!("cannot write the file: {io}")),
    }
}

/// What a connection's step uses of the driver besides the connection.
struct StepCtx<'a> {
    read_buf: &'a mut [u8],
    core: &'a mut Peer,
    push_quota: &'a mut PushQuota,
    now: Time,
}

/// One step's outcome, and whether bytes moved (the idle clock restarts).
struct Stepped {
    outcome: Outcome,
    active: bool,
}

/// A full writer queue: the connection gets no more bytes until the
/// writer wakes the loop (a readable event does not lift a park).
fn writer_full(role: &Role) -> bool {
    match role {
        Role::Read { sink, .. } => sink.must_wait(),
        Role::Fetch(f) => f.sink.must_wait(),
        _ => false,
    }
}

/// Runs the I/O of `c`'s role for one bounded step.
fn step_conn(c: &mut Conn, ctx: &mut StepCtx<'_>) -> Stepped {
    let Conn {
        stream,
        role,
        remote_ip,
        push,
        ..
    } = c;
    match role {
        Role::Read {
            decoder,
            sink,
            received,
        } => {
            // Only inbound connections read a Role::Read; the fallback is
            // never used.
            let from = remote_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let read = MessageRead {
                decoder,
                sink,
                received,
                from,
                ticket: push,
            };
            read_message(stream, read, ctx)
        }
        Role::Http { buf } => read_http_head(stream, buf, ctx.read_buf),
        Role::Connecting(_) => Stepped {
            outcome: match connect_status(stream) {
                Ok(true) => Outcome::Connected,
                Ok(false) => Outcome::Blocked,
                Err(e) => Outcome::Close(Some(CloseReason::ConnectFailed(e))),
            },
            active: false,
        },
        Role::Write { payload, .. } => write_step(stream, payload, ctx.core),
        Role::Fetch(f) => fetch_step(stream, f, ctx),
        Role::Drain => Stepped {
            outcome: read_loop(stream, ctx.read_buf, |_| None, || Outcome::Close(None)),
            active: false,
        },
    }
}

/// The parts of an inbound connection that a message being read uses.
struct MessageRead<'a> {
    decoder: &'a mut MessageDecoder,
    sink: &'a mut PartialSink,
    received: &'a mut u64,
    /// The sender (a push's source, for the push quota).
    from: IpAddr,
    ticket: &'a mut Option<PushTicket>,
}

/// Reads an inbound message into its decoder; a push's data passes the
/// push quota before it reaches the disk.
fn read_message(stream: &mut TcpStream, m: MessageRead<'_>, ctx: &mut StepCtx<'_>) -> Stepped {
    let mut active = false;
    let (quota, now) = (&mut *ctx.push_quota, ctx.now);
    let MessageRead {
        decoder,
        sink,
        received,
        from,
        ticket,
    } = m;
    let outcome = read_loop(
        stream,
        ctx.read_buf,
        |bytes| {
            active = true;
            *received += bytes.len() as u64;
            let mut gate = PushGate {
                sink: &mut *sink,
                quota: &mut *quota,
                from,
                ticket: &mut *ticket,
                now,
            };
            match feed(decoder, &mut gate, bytes) {
                Ok(false) if sink.must_wait() => Some(Outcome::Parked),
                Ok(false) => None,
                Ok(true) => Some(Outcome::Written),
                Err(e) => Some(Outcome::Close(Some(CloseReason::BadMessage(e.to_string())))),
            }
        },
        || Outcome::Close(Some(CloseReason::Incomplete)),
    );
    Stepped { outcome, active }
}

/// Reads an HTTP request: its head, and an action's body (kept to
/// `MAX_REQUEST` + 1 bytes).
fn read_http_head(stream: &mut TcpStream, buf: &mut Vec<u8>, read_buf: &mut [u8]) -> Stepped {
    let mut active = false;
    let outcome = read_loop(
        stream,
        read_buf,
        |bytes| {
            active = true;
            // A head and an action's small body; one byte more tells a head
            // that is too long.
            let room = (http::MAX_REQUEST + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
            match http::parse_request(buf) {
                http::ParseOutcome::Incomplete => None,
                _ => Some(Outcome::HttpHead),
            }
        },
        || Outcome::Close(Some(CloseReason::HttpClosedEarly)),
    );
    Stepped { outcome, active }
}

/// Writes what the payload has ready; a file that changed under it is
/// reported to the core.
fn write_step(stream: &mut TcpStream, payload: &mut Payload, core: &mut Peer) -> Stepped {
    let written_before = progress(payload);
    match write_payload(stream, payload) {
        Ok(outcome) => Stepped {
            outcome,
            // Active only while it moves, so a reader that stopped reading
            // meets the idle timeout (STALL_TIMEOUT for an HTTP response).
            active: progress(payload) != written_before,
        },
        Err(e) => {
            // The file shrank or no longer hashes to its id: the message
            // was left unfinished; have the file checked.
            let source_changed = encoder::is_source_changed(&e);
            if let (true, Payload::File(enc)) = (source_changed, &*payload) {
                let to = stream
                    .peer_addr()
                    .map_or_else(|_| "an unknown address".into(), |a| a.to_string());
                info!(
                    "stopped sending {} to {}: {e}",
                    enc.file_id(),
                    core.name_addr(&to)
                );
                core.on_local_changed(enc.file_id());
            }
            Stepped {
                outcome: Outcome::Close(Some(CloseReason::WriteFailed {
                    error: e,
                    source_changed,
                })),
                active: false,
            }
        }
    }
}

/// How far a payload is written: bytes, or a file's bytes sent as hex.
fn progress(payload: &Payload) -> u64 {
    match payload {
        Payload::File(enc) => enc.file_bytes_sent(),
        other => other.written() as u64,
    }
}

/// A download: sends the GET_FILE, then reads the reply into the
/// download's sink and tells the core how far it got.
fn fetch_step(stream: &mut TcpStream, f: &mut FetchConn, ctx: &mut StepCtx<'_>) -> Stepped {
    if f.request_pos < f.request.len() {
        match send_request(stream, f) {
            Ok(Outcome::Written) => {}
            Ok(outcome) => {
                return Stepped {
                    outcome,
                    active: true,
                }
            }
            Err(e) => {
                return Stepped {
                    outcome: Outcome::Close(Some(CloseReason::SendFailed(e))),
                    active: false,
                }
            }
        }
    }
    let mut active = false;
    let outcome = read_loop(
        stream,
        ctx.read_buf,
        |bytes| {
            active = true;
            f.received += bytes.len() as u64;
            match feed(&mut f.decoder, &mut f.sink, bytes) {
                Ok(false) if f.sink.must_wait() => Some(Outcome::Parked),
                Ok(false) => None,
                Ok(true) => Some(Outcome::Written),
                Err(e) => Some(Outcome::Fail(decode_failure(&e))),
            }
        },
        || Outcome::Close(None),
    );
    // An end of file or a read error: the source closed mid-transfer.
    let outcome = match outcome {
        Outcome::Close(_) => Outcome::Fail(SourceFailure::Closed { at: f.file_bytes() }),
        other => other,
    };
    ctx.core
        .on_fetch_progress(f.transfer, f.attempt, f.file_bytes());
    Stepped { outcome, active }
}

/// Writes what is left of a download's GET_FILE.
fn send_request(stream: &mut TcpStream, f: &mut FetchConn) -> io::Result<Outcome> {
    let mut p = Payload::Bytes {
        buf: std::mem::take(&mut f.request),
        pos: f.request_pos,
    };
    let r = write_payload(stream, &mut p);
    if let Payload::Bytes { buf, pos } = p {
        f.request = buf;
        f.request_pos = pos;
    }
    r
}

impl Driver {
    /// Runs one I/O step of a connection and acts on its outcome.
    pub(super) fn step(&mut self, key: usize, gen: u64) {
        let now = self.now();
        let Driver {
            conns,
            read_buf,
            core,
            start,
            push_quota,
            net,
            ..
        } = self;
        let Some(c) = conns.get_mut(key).filter(|c| c.gen == gen) else {
            return;
        };
        if writer_full(&c.role) {
            return self.after_step(key, gen, Outcome::Parked);
        }
        let mut ctx = StepCtx {
            read_buf,
            core,
            push_quota,
            now,
        };
        let before = io_mark(&c.role);
        let Stepped { outcome, active } = step_conn(c, &mut ctx);
        net.stepped(before, io_mark(&c.role));
        if active {
            // The step itself may take long (up to a whole budget of bytes on
            // a slow disk): activity counts from its end, not its start.
            c.last_active = Time(start.elapsed().as_millis() as u64);
        }
        let buffered = match &c.role {
            Role::Read { decoder, .. } => decoder.buffered(),
            _ => 0,
        };
        if buffered >= BUDGET_CHECK_FLOOR && matches!(outcome, Outcome::Blocked | Outcome::Yield) {
            self.enforce_inbound_budget();
        }
        self.log_push_refusals(now);
        self.upload_progress(key);
        self.after_step(key, gen, outcome);
    }

    /// Closes the inbound connections holding the most unfinished message
    /// bytes until all of them together fit in [`INBOUND_BUFFER_BUDGET`].
    pub(super) fn enforce_inbound_budget(&mut self) {
        loop {
            let mut total = 0usize;
            let mut largest: Option<(usize, usize)> = None;
            for (k, c) in self.conns.iter() {
                if let Role::Read { decoder, .. } = &c.role {
                    let b = decoder.buffered();
                    total += b;
                    if largest.is_none_or(|(_, most)| b > most) {
                        largest = Some((k, b));
                    }
                }
            }
            match largest {
                Some((k, b)) if total > INBOUND_BUFFER_BUDGET => {
                    debug!(
                        "inbound messages hold {total} bytes; closing the one from {} holding {b}",
                        self.conns
                            .get(k)
                            .map_or_else(String::new, |c| self.conn_name(c))
                    );
                    self.net.dropped_by(NetLimit::InboundBudget);
                    self.close(k, Some(CloseReason::InboundBudget));
                }
                _ => return,
            }
        }
    }

    /// Acts on a step's outcome.
    pub(super) fn after_step(&mut self, key: usize, gen: u64, outcome: Outcome) {
        match outcome {
            Outcome::Blocked => {}
            Outcome::Yield => self.ready.push_back((key, gen)),
            Outcome::Parked => {
                if !self.parked.contains(&(key, gen)) {
                    self.parked.push((key, gen));
                }
            }
            Outcome::Close(why) => self.close(key, why),
            Outcome::Fail(failure) => self.close_failed(key, failure),
            Outcome::Connected => {
                let Some(c) = self.conns.get_mut(key) else {
                    return;
                };
                let role = std::mem::replace(&mut c.role, Role::Drain);
                let Role::Connecting(next) = role else {
                    c.role = role;
                    return;
                };
                if let Some(to) = c.target.clone() {
                    self.unreachable_logged.remove(&to);
                    self.dials.connected(&to);
                }
                let interest = Interest::READABLE | Interest::WRITABLE;
                self.set_role(key, *next, interest);
            }
            Outcome::Written => self.on_written(key),
            Outcome::HttpHead => self.on_http_head(key),
        }
    }

    /// A role's work is complete: a write finished, or a read got its whole
    /// message. The connection drains while a read message is handled (the
    /// handler gives it its next role or closes it).
    pub(super) fn on_written(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let origin = (
            c.remote_ip
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            c.push,
        );
        let role = std::mem::replace(&mut c.role, Role::Drain);
        self.net.written(&role);
        match role {
            Role::Write { kind, .. } => {
                self.upload_ended(key, crate::core::UploadEnd::Done);
                match kind {
                    // We are the client: nothing to wait for.
                    WriteKind::Send | WriteKind::Push => self.close(key, None),
                    WriteKind::FileReply | WriteKind::Http => self.finish_conn(key),
                }
            }
            Role::Read {
                decoder,
                sink,
                received,
            } => match decoder.finish() {
                Ok(decoded) => {
                    if received >= trim::TRIM_AFTER_BYTES as u64 {
                        self.arm_trim();
                    }
                    self.on_inbound_message(key, decoded, *sink, origin)
                }
                Err(e) => {
                    self.net.message_in("malformed");
                    self.close(key, Some(CloseReason::BadMessage(e.to_string())))
                }
            },
            Role::Fetch(f) => self.on_fetch_read(key, *f),
            other => {
                if let Some(c) = self.conns.get_mut(key) {
                    c.role = other;
                }
            }
        }
    }

    /// A download's reply was read whole: the connection closes, and the
    /// reply is checked and stored once its writer is done.
    fn on_fetch_read(&mut self, key: usize, f: FetchConn) {
        let FetchConn {
            transfer,
            attempt,
            record,
            decoder,
            sink,
            source,
            from,
            piece,
            ..
        } = f;
        // The client stops at the closing brace and closes.
        self.close(key, None);
        if !self.core.is_current(transfer, attempt) {
            // Dropping the sink removes its temp file.
            debug!("{transfer} from {source} ended meanwhile; bytes discarded");
            return;
        }
        let finished = decoder.finish();
        // A reply to our GET_FILE counts as a FILE_DATA whatever it holds.
        self.net.message_in(if finished.is_ok() {
            "FILE_DATA"
        } else {
            "malformed"
        });
        match finished {
            Ok(decoded) => self.finish_received(Finishing::Fetch {
                transfer,
                attempt,
                record,
                source,
                from,
                piece,
                decoded,
                sink,
            }),
            Err(e) => {
                let result = FetchResult::Failed(decode_failure(&e));
                self.report_fetch(transfer, attempt, &source, result);
            }
        }
    }
}
