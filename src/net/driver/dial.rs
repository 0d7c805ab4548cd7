//! Outbound connections: dial limits, name resolution, connects.

use super::conns::is_out_of_fds;
use super::Driver;
use crate::core::dial_limit::Verdict;
use crate::core::{SourceFailure, Time};
use crate::ids::PeerAddr;
use crate::ids::TransferId;
use crate::net::conn::Role;
use crate::net::conn::{FetchConn, Payload, WriteKind};
use crate::net::counters::NetLimit;
use crate::net::resolver::Resolved;
use crate::net::sockopt;
use crate::protocol::{ByteRange, FileRecord, Message};
use log::{debug, info};
use mio::Interest;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Resolved host names are reused for this long.
pub(super) const RESOLVE_TTL: Duration = Duration::from_secs(60);
/// A failed lookup is remembered only this long, so the next round retries.
pub(super) const RESOLVE_FAILURE_TTL: Duration = Duration::from_secs(1);
pub(super) const RESOLVE_CACHE_MAX: usize = 256;

/// An outbound connection waiting for its address.
pub(super) struct Pending {
    pub(super) addr: PeerAddr,
    pub(super) role: Role,
}

impl Driver {
    /// Whether a message of `kind` may be sent to `to` now (the
    /// destination's dial limit); a refused one is dropped with a debug line.
    pub(super) fn may_dial(&mut self, now: Time, to: &PeerAddr, kind: &str) -> bool {
        let verdict = self.dials.check(now, to);
        if verdict != Verdict::Allowed {
            self.net.dropped_by(NetLimit::DialLimit);
        }
        match verdict {
            Verdict::Allowed => true,
            Verdict::OverRate => {
                debug!(
                    "{kind} to {} dropped: over its dial limit",
                    self.core.name_listener(to)
                );
                false
            }
            Verdict::BackingOff { until } => {
                debug!(
                    "{kind} to {} dropped: backing off after a failed connect for {} ms",
                    self.core.name_listener(to),
                    until.0.saturating_sub(now.0)
                );
                false
            }
        }
    }

    /// Opens a connection to a peer's advertised host:port, resolving names
    /// off the loop.
    pub(super) fn connect_to(&mut self, to: PeerAddr, role: Role) {
        if let Ok(ip) = to.host.parse::<IpAddr>() {
            self.open_outbound(SocketAddr::new(ip, to.port), to, role);
            return;
        }
        let now = self.now();
        if let Some((res, at)) = self.resolve_cache.get(&to.host) {
            let ttl = if res.is_ok() {
                RESOLVE_TTL
            } else {
                RESOLVE_FAILURE_TTL
            };
            if now.since(*at) < ttl {
                match res.clone() {
                    Ok(sa) => self.open_outbound(SocketAddr::new(sa.ip(), to.port), to, role),
                    Err(e) => {
                        let why = format!("cannot resolve {}: {e}", to.host);
                        self.outbound_failed(role, SourceFailure::Connect(why), Some(&to))
                    }
                }
                return;
            }
        }
        if self.pending_count >= crate::net::resolver::MAX_PENDING {
            self.outbound_failed(
                role,
                SourceFailure::Connect("too many names waiting to be resolved".into()),
                Some(&to),
            );
            return;
        }
        if let Some(waiting) = self.pending.get_mut(&to.host) {
            // A lookup of this host is in flight: wait for its answer.
            waiting.push(Pending { addr: to, role });
            self.pending_count += 1;
            return;
        }
        if !self.resolver.request(&to.host, to.port) {
            self.outbound_failed(
                role,
                SourceFailure::Connect("too many names waiting to be resolved".into()),
                Some(&to),
            );
            return;
        }
        self.pending
            .insert(to.host.clone(), vec![Pending { addr: to, role }]);
        self.pending_count += 1;
    }

    /// A non-blocking connect to `sa` (at the cap, the longest-idle inbound
    /// connection makes room).
    pub(super) fn open_outbound(&mut self, sa: SocketAddr, to: PeerAddr, role: Role) {
        if self.conns.len() >= self.max_conns && !self.make_room() {
            self.outbound_failed(
                role,
                SourceFailure::Connect("too many open connections here".into()),
                Some(&to),
            );
            return;
        }
        let (local, unpaced) = (self.p2p_ip, self.system_congestion.is_some());
        let mut connected = sockopt::connect(sa, local, unpaced);
        if matches!(&connected, Err(e) if is_out_of_fds(e)) && self.evict_longest_idle(|_| true) {
            connected = sockopt::connect(sa, local, unpaced);
        }
        match connected {
            Ok(stream) => {
                let role = Role::Connecting(Box::new(role));
                match self.add_conn(stream, role, false, Interest::READABLE | Interest::WRITABLE) {
                    Some(key) => self.conns[key].target = Some(to),
                    None => debug!("cannot register connection to {to}"),
                }
            }
            Err(e) => {
                let now = self.now();
                self.dials.connect_failed(now, &to);
                self.outbound_failed(role, SourceFailure::Connect(e.to_string()), Some(&to))
            }
        }
    }

    /// An outbound connection (to `to`) that never carried its role: a
    /// download attempt fails, anything else is a debug line.
    pub(super) fn outbound_failed(
        &mut self,
        role: Role,
        why: SourceFailure,
        to: Option<&PeerAddr>,
    ) {
        match role {
            Role::Fetch(f) => self.fetch_failed(*f, why),
            Role::Connecting(inner) => self.outbound_failed(*inner, why, to),
            _ => debug!(
                "outbound connection to {} failed: {why}",
                to.map_or_else(
                    || "an unknown address".into(),
                    |t| self.core.name_listener(t)
                )
            ),
        }
    }

    /// Sends one message to `to`, within its dial limit.
    pub(super) fn send_message(&mut self, now: Time, to: PeerAddr, msg: Message) {
        if !self.may_dial(now, &to, msg.kind()) {
            return;
        }
        debug!("send {} to {}", msg.kind(), self.core.name_listener(&to));
        self.net.message_out(msg.kind());
        let role = Role::Write {
            payload: Payload::bytes(msg.to_bytes()),
            kind: WriteKind::Send,
        };
        self.connect_to(to, role);
    }

    /// Starts one attempt of a download: a connection to `to` that sends
    /// GET_FILE and reads no more than the advertised size allows.
    pub(super) fn open_fetch(
        &mut self,
        transfer: TransferId,
        attempt: u64,
        source: String,
        to: PeerAddr,
        record: FileRecord,
        resume_from: u64,
    ) {
        let limits = self.fetch_limits(&record.file_size);
        // Pieces from several holders are dropped when it goes on whole.
        if let Some(pieces) = self.piece_files.remove(&transfer) {
            self.discard(vec![pieces.file]);
        }
        let (sink, from) = self.download_sink(transfer, &record.file_id.0, resume_from);
        // The metadata names the download's temp file: a crash resumes it.
        let now = self.now();
        self.schedule_persist(now);
        let range = (from > 0).then_some(ByteRange {
            offset: from,
            length: None,
        });
        self.net.message_out("GET_FILE");
        let name = format!("{source} ({to})");
        let fetch = FetchConn::new((transfer, attempt), record, name, range, limits, sink);
        let role = Role::Fetch(Box::new(fetch));
        self.connect_to(to, role);
    }

    /// A host's lookup is done: remembered a while, and the connections
    /// waiting on it opened (or failed).
    pub(super) fn on_resolved(&mut self, r: Resolved) {
        let now = self.now();
        if let Err(e) = &r.result {
            if self.unresolvable_logged.len() < RESOLVE_CACHE_MAX
                && self.unresolvable_logged.insert(r.host.clone())
            {
                info!("cannot resolve {}: {e} (will retry)", r.host);
            }
        }
        if self.resolve_cache.len() >= RESOLVE_CACHE_MAX {
            self.resolve_cache.clear();
        }
        self.resolve_cache
            .insert(r.host.clone(), (r.result.clone(), now));
        let waiting = self.pending.remove(&r.host).unwrap_or_default();
        self.pending_count -= waiting.len();
        for p in waiting {
            match &r.result {
                Ok(sa) => self.open_outbound(SocketAddr::new(sa.ip(), p.addr.port), p.addr, p.role),
                Err(e) => self.outbound_failed(
                    p.role,
                    SourceFailure::Connect(format!("cannot resolve {}: {e}", p.addr.host)),
                    Some(&p.addr),
                ),
            }
        }
    }
}
