//! The connection slab: accepting, adding, evicting, closing, deadlines.

use super::dial::RESOLVE_CACHE_MAX;
use super::{Driver, Due, CONN_BASE};
use crate::core::{SourceFailure, Time, UploadEnd};
use crate::http;
use crate::net::conn::{CloseReason, Conn, PartialSink, Payload, Role, WriteKind};
use crate::net::http_out;
use crate::net::sockopt;
use crate::protocol::decoder::MessageDecoder;
use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::io;
use std::net::Shutdown;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a closing connection may take to send its FIN.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection past its deadline is closed (none for a drain: its
/// peer simply never sent its FIN).
fn idle_reason(role: &Role) -> Option<&'static str> {
    Some(match role {
        Role::Connecting(_) => "connect timed out",
        Role::Drain => return None,
        Role::Http { .. } => "HTTP request timed out",
        Role::Write {
            kind: WriteKind::Http,
            ..
        } => "HTTP client too slow to read its response",
        Role::Read { .. } => "no complete message within the idle timeout",
        _ => "no progress within the idle timeout",
    })
}

/// How a download's source failed when its connection's deadline came:
/// nothing of the reply yet, or silent after some of it.
fn due_failure(role: &Role) -> Option<SourceFailure> {
    match role {
        Role::Fetch(f) => Some(match f.decoder.data_len() {
            0 => SourceFailure::Timeout,
            _ => SourceFailure::Stalled { at: f.file_bytes() },
        }),
        Role::Connecting(inner) if matches!(**inner, Role::Fetch(_)) => {
            Some(SourceFailure::Connect("connect timed out".into()))
        }
        _ => None,
    }
}

/// EMFILE or ENFILE: no descriptor left for a new socket.
pub(super) fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

impl Driver {
    /// A connection's deadline came: past it (after one last step, for
    /// bytes a long step elsewhere kept us from reading) it is closed,
    /// otherwise the wheel is asked again for its new deadline.
    pub(super) fn on_conn_due(&mut self, key: usize, gen: u64) {
        let now = self.now();
        let Some(c) = self.conns.get(key).filter(|c| c.gen == gen) else {
            return;
        };
        if now >= self.deadline(c) && !matches!(c.role, Role::Connecting(_)) {
            self.step(key, gen);
        }
        let now = self.now();
        let Some(c) = self.conns.get(key).filter(|c| c.gen == gen) else {
            return;
        };
        let deadline = self.deadline(c);
        if now >= deadline {
            match due_failure(&c.role) {
                Some(failure) => self.close_failed(key, failure),
                None => {
                    let why = idle_reason(&c.role).map(CloseReason::TimedOut);
                    self.close(key, why);
                }
            }
        } else {
            self.wheel.schedule(deadline, Due::Conn { key, gen });
        }
    }

    /// When `c` is closed unless it makes progress, by its role.
    pub(super) fn deadline(&self, c: &Conn) -> Time {
        let s = &self.settings;
        match &c.role {
            Role::Read { .. } => c.last_active.plus(crate::protocol::MESSAGE_IDLE_TIMEOUT),
            Role::Http { .. } => c.opened.plus(http::REQUEST_TIMEOUT),
            Role::Connecting(_) => c.phase_started.plus(s.connect_timeout),
            Role::Write {
                kind: WriteKind::Http,
                ..
            } => c
                .phase_started
                .plus(http::SEND_TIMEOUT)
                .min(c.last_active.plus(http::STALL_TIMEOUT)),
            Role::Write { .. } | Role::Fetch(_) => c.last_active.plus(s.idle_timeout),
            Role::Drain => c.phase_started.plus(DRAIN_TIMEOUT),
        }
    }

    /// Puts a socket in the slab under a fresh generation, registered and
    /// with its deadline on the wheel; None if it could not be registered.
    pub(super) fn add_conn(
        &mut self,
        stream: TcpStream,
        role: Role,
        inbound: bool,
        interest: Interest,
    ) -> Option<usize> {
        let now = self.now();
        self.next_gen += 1;
        let gen = self.next_gen;
        let conn = Conn {
            stream,
            gen,
            role,
            opened: now,
            last_active: now,
            phase_started: now,
            inbound,
            target: None,
            remote_ip: None,
            push: None,
            upload: None,
        };
        let deadline = self.deadline(&conn);
        let key = self.conns.insert(conn);
        if let Err(e) = self.poll.registry().register(
            &mut self.conns[key].stream,
            Token(CONN_BASE + key),
            interest,
        ) {
            warn!("cannot register connection: {e}");
            self.conns.remove(key);
            return None;
        }
        self.wheel.schedule(deadline, Due::Conn { key, gen });
        Some(key)
    }

    /// Makes room at the cap by closing the longest-idle inbound
    /// connection that is not moving a file; false if none can be closed.
    pub(super) fn make_room(&mut self) -> bool {
        if self.conns.len() < self.max_conns {
            return true;
        }
        let now = self.now();
        // Only when every inbound connection moves a file fast does one of
        // them give way: the cap can always be made room under.
        self.evict_longest_idle(|c| !moving_a_file(c, now)) || self.evict_longest_idle(|_| true)
    }

    /// Closes the longest-idle inbound connection that `may_close` allows;
    /// false if there is none.
    pub(super) fn evict_longest_idle(&mut self, may_close: impl Fn(&Conn) -> bool) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| c.inbound && may_close(c))
            .min_by_key(|(_, c)| c.last_active)
            .map(|(k, _)| k);
        match victim {
            Some(k) => {
                debug!(
                    "connection cap reached; closing the longest-idle connection, from {}",
                    self.conns
                        .get(k)
                        .map_or_else(String::new, |c| self.conn_name(c))
                );
                self.close(k, None);
                true
            }
            None => false,
        }
    }

    /// Accepts from a listener until it would block (each connection at
    /// the cap evicts the longest-idle inbound one, or is refused).
    pub(super) fn accept(&mut self, is_http: bool) {
        loop {
            let listener = if is_http {
                self.http.as_ref()
            } else {
                self.p2p.as_ref()
            };
            let Some(listener) = listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, from)) if self.make_room() => self.accepted(stream, from, is_http),
                Ok((_, from)) => debug!("connection from {from} refused: at the cap"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_out_of_fds(&e) => {
                    // Out of descriptors below our own cap (another part of
                    // the process holds more than reserved): free one and
                    // retry, rather than leave the backlog to starve.
                    if !self.evict_longest_idle(|_| true) {
                        warn!("accept failed: {e}");
                        return;
                    }
                }
                Err(e) => {
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Takes in an accepted connection: an HTTP request, or a P2P message
    /// read into a fresh decoder. It is stepped at once (data may be
    /// waiting).
    fn accepted(&mut self, stream: TcpStream, from: SocketAddr, is_http: bool) {
        if let (false, Some(system), Ok(local)) =
            (is_http, &self.system_congestion, stream.local_addr())
        {
            // It may carry a FILE_DATA we send (see `sockopt`).
            sockopt::accepted(&stream, local.ip(), from.ip(), system);
        }
        let role = if is_http {
            http_out::send_buffer_for_tests(&stream);
            Role::Http { buf: Vec::new() }
        } else {
            Role::Read {
                decoder: Box::new(MessageDecoder::new(self.limits())),
                sink: Box::new(PartialSink::with_waker(
                    self.settings.dir.clone(),
                    self.waker.clone(),
                )),
                received: 0,
            }
        };
        if let Some(key) = self.add_conn(stream, role, true, Interest::READABLE) {
            self.conns[key].remote_ip = Some(from.ip());
            let gen = self.conns[key].gen;
            self.ready.push_back((key, gen));
        }
    }

    /// Closes a connection now; an outbound one that failed is reported
    /// (dial backoff, the download's next source).
    pub(super) fn close(&mut self, key: usize, why: Option<CloseReason>) {
        self.close_as(key, why, None);
    }

    /// Closes a download's connection whose source failed so.
    pub(super) fn close_failed(&mut self, key: usize, failure: SourceFailure) {
        self.close_as(key, None, Some(failure));
    }

    /// Closes connection `key`; a download's attempt fails with `failure`,
    /// or, none given, with what its role says (closed at its byte count,
    /// or could not connect).
    fn close_as(&mut self, key: usize, why: Option<CloseReason>, failure: Option<SourceFailure>) {
        let stopped = why.as_ref().map_or_else(
            || "the peer closed the connection".into(),
            |w| w.to_string(),
        );
        self.upload_ended(key, UploadEnd::Failed(stopped));
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.net.closed(&c.role, why.as_ref());
        // A download's failure is said in its own words.
        let why = why
            .map(|w| w.to_string())
            .or_else(|| failure.as_ref().map(|f| f.to_string()));
        if let (Role::Connecting(_), Some(to), Some(why)) = (&c.role, &c.target, &why) {
            let now = self.now();
            self.dials.connect_failed(now, to);
            // A peer we can't reach (a well-known host that is down, say) is
            // worth one info line, not one per gossip round.
            if self.unreachable_logged.len() < RESOLVE_CACHE_MAX
                && self.unreachable_logged.insert(to.clone())
            {
                info!(
                    "cannot reach {}: {why} (will retry)",
                    self.core.name_listener(to)
                );
            }
        }
        match c.role {
            Role::Fetch(ref f) => {
                let at = f.file_bytes();
                let failure = failure.unwrap_or(SourceFailure::Closed { at });
                let to = c.target.clone();
                self.outbound_failed(c.role, failure, to.as_ref());
            }
            Role::Connecting(_) => {
                let failure = failure.unwrap_or_else(|| {
                    SourceFailure::Connect(why.unwrap_or_else(|| "connection closed".into()))
                });
                let to = c.target.clone();
                self.outbound_failed(c.role, failure, to.as_ref());
            }
            _ => {
                if let Some(why) = why {
                    debug!("connection with {} closed: {why}", self.conn_name(&c));
                }
            }
        }
    }

    /// Our side is finished: send FIN and wait for the peer's, so unread
    /// input never turns the close into a reset that loses the reply's tail.
    pub(super) fn finish_conn(&mut self, key: usize) {
        let now = self.now();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let _ = c.stream.shutdown(Shutdown::Write);
        c.role = Role::Drain;
        c.phase_started = now;
        let gen = c.gen;
        let _ = self.poll.registry().reregister(
            &mut c.stream,
            Token(CONN_BASE + key),
            Interest::READABLE,
        );
        let deadline = now.plus(DRAIN_TIMEOUT);
        self.wheel.schedule(deadline, Due::Conn { key, gen });
        self.ready.push_back((key, gen));
    }

    /// Gives a connection its next role and steps it soon.
    pub(super) fn set_role(&mut self, key: usize, role: Role, interest: Interest) {
        let now = self.now();
        if let Some(c) = self.conns.get_mut(key) {
            c.role = role;
            c.phase_started = now;
            c.last_active = now;
            let gen = c.gen;
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut c.stream, Token(CONN_BASE + key), interest);
            self.ready.push_back((key, gen));
            // The new role's deadline may come before the one on the wheel
            // (a GET_FILE reply's idle timeout before the read's 10 s).
            let deadline = self.deadline(&self.conns[key]);
            self.wheel.schedule(deadline, Due::Conn { key, gen });
        }
        self.upload_started(key);
    }

    /// An HTTP request arrived whole: a read is answered from the shared
    /// cache, an action runs (see `actions`).
    pub(super) fn on_http_head(&mut self, key: usize) {
        let now = self.now();
        let Some(c) = self.conns.get(key) else {
            return;
        };
        let Role::Http { buf } = &c.role else {
            return;
        };
        let mut outcome = http::parse_request(buf);
        // On loopback, a request naming another host is a browser led here
        // by DNS rebinding: refused before anything is read or done.
        let loopback = self
            .http
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .is_some_and(|a| a.ip().is_loopback());
        if loopback
            && matches!(
                outcome,
                http::ParseOutcome::Ready { .. } | http::ParseOutcome::Action(_)
            )
            && !http::host_is_loopback(buf)
        {
            debug!("http: refused a request whose Host is not this machine");
            outcome = http::ParseOutcome::Respond(http::error_response(403, "Forbidden"));
        }
        let core = &self.core;
        let (net, conns, refused) = (&self.net, &self.conns, self.push_quota.refused_total());
        let payload = match outcome {
            http::ParseOutcome::Ready {
                route,
                head_only,
                page,
                query,
            } => http_out::respond(
                &mut self.http_cache,
                &self.conns,
                now,
                route,
                head_only,
                page,
                query,
                core,
                || http_out::metrics_body(core, net, conns, refused),
            ),
            http::ParseOutcome::Action(request) => {
                Payload::bytes(self.on_http_action(now, &request))
            }
            http::ParseOutcome::Respond(bytes) => Payload::bytes(bytes),
            http::ParseOutcome::Incomplete => return,
        };
        let role = Role::Write {
            payload,
            kind: WriteKind::Http,
        };
        self.set_role(key, role, Interest::READABLE | Interest::WRITABLE);
    }
}

/// A file moving on `c` now, and fast (a push we receive, or a file we
/// serve): a burst of new connections (accepted together, each newer than
/// it) must not cut it to make room. One stalled for [`MOVING_WITHIN`], or
/// slower on average than [`MOVING_RATE`] (a trickle meant to hold a slot),
/// may go.
fn moving_a_file(c: &Conn, now: Time) -> bool {
    let moved = match &c.role {
        Role::Read {
            decoder, received, ..
        } if decoder.data_len() > 0 => *received,
        Role::Write {
            payload: Payload::File(enc),
            ..
        } => enc.file_bytes_sent(),
        _ => return false,
    };
    let secs = now.since(c.opened).as_secs().max(1);
    now < c.last_active.plus(MOVING_WITHIN) && moved / secs >= MOVING_RATE
}

/// How recently a file must have moved on a connection for
/// [`moving_a_file`].
const MOVING_WITHIN: Duration = Duration::from_secs(1);

/// The average rate, in bytes a second since the connection opened, below
/// which a moving file is not protected by [`moving_a_file`].
const MOVING_RATE: u64 = 64 * 1024;

/// The other side of connection `c` as "host:port": the address dialled,
/// or the remote address of an inbound connection (for logs and the
/// transfers list; `Peer::name_addr` adds the peer id when known).
pub(super) fn conn_addr(c: &Conn) -> String {
    match &c.target {
        Some(to) => to.to_string(),
        None => c
            .stream
            .peer_addr()
            .map_or_else(|_| "an unknown address".into(), |a| a.to_string()),
    }
}

impl Driver {
    /// The other side of connection `c` as logs name it: "peer_id
    /// (host:port)" when a tracked peer listens at the address dialled,
    /// else the address (an inbound connection comes from an ephemeral
    /// port: its address alone; looking further would cost a scan of the
    /// table per line under a flood).
    pub(super) fn conn_name(&self, c: &Conn) -> String {
        match &c.target {
            Some(to) => self.core.name_listener(to),
            None => conn_addr(c),
        }
    }
}
