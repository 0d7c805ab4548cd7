//! Answering a routed HTTP request from the loop: the response comes from
//! the shared cache (rendered once for every client in the same instant),
//! and all HTTP connections together hold at most
//! [`http::HTTP_OUTPUT_BUDGET`] bytes unsent; past it a request gets a
//! short 503, unless its answer is one being written already (shared, it
//! costs nothing more). How long a response may take is the driver's deadline
//! ([`http::SEND_TIMEOUT`], [`http::STALL_TIMEOUT`]).

use crate::core::view::{FilePage, FileQuery};
use crate::core::{Peer, Time};
use crate::http::metrics::{self, Connections, Snapshot};
use crate::http::{self, ResponseCache, Route};
use crate::net::conn::{Conn, Payload, Role, WriteKind};
use crate::net::counters::NetCounters;
use slab::Slab;
use std::collections::HashSet;

/// The payload answering a routed request from `core`'s state; the state
/// is copied out and rendered only when the cache has no response for
/// this page at the core's generation. `/metrics` is rendered by
/// `metrics` (see [`metrics_body`]), under the same cache and budgets.
// The request's four parts come straight from `ParseOutcome::Ready`.
#[allow(clippy::too_many_arguments)]
pub fn respond(
    cache: &mut ResponseCache,
    conns: &Slab<Conn>,
    now: Time,
    route: Route,
    head_only: bool,
    page: FilePage,
    query: FileQuery,
    core: &Peer,
    metrics: impl FnOnce() -> String,
) -> Payload {
    // Every `/metrics` request shares one key, whatever its query.
    let (page, query) = match route {
        Route::Metrics => (
            FilePage {
                offset: 0,
                limit: http::DEFAULT_PAGE_FILES,
            },
            FileQuery::default(),
        ),
        _ => (page, query),
    };
    let key = http::Key {
        route,
        page: http::normalise(page, core.catalog().len()),
        query,
        generation: core.generation(),
    };
    let pending = pending_output(conns);
    // A body other connections are writing already costs nothing more.
    if let Some(rendered) = cache.peek(now, &key) {
        if pending.bodies.contains(&(rendered.bytes.as_ptr() as usize)) {
            return share(rendered, head_only);
        }
    }
    if pending.total >= http::HTTP_OUTPUT_BUDGET {
        return over_budget(pending.total);
    }
    let (page, query) = (key.page, key.query.clone());
    let rendered = cache.get(now, key, || {
        if route == Route::Metrics {
            return http::metrics_response(metrics().as_bytes());
        }
        // Files are copied only while they fit the response with room for
        // the page itself; render_bounded cuts again with the real rest.
        let mut budget = http::FileBudget::new(http::PAGE_RESERVE);
        let view = core.view_query_within(now, page, &query, |f| budget.fits(f));
        let bytes = http::render_bounded(route, view);
        log::debug!(
            "http: rendered {} from file {} ({} bytes)",
            route.path(),
            page.offset,
            bytes.len()
        );
        bytes
    });
    let Some(rendered) = rendered else {
        log::debug!("http: render budget spent this second; answering 503");
        return Payload::bytes(http::error_response(503, "Service Unavailable"));
    };
    if pending.total + rendered.bytes.len() > http::HTTP_OUTPUT_BUDGET {
        return over_budget(pending.total);
    }
    share(rendered, head_only)
}

/// The body of `/metrics`: the counters of the core, the driver and the
/// push quota, and gauges read now (connections, buffered bytes, RSS).
pub fn metrics_body(
    core: &Peer,
    net: &NetCounters,
    conns: &Slab<Conn>,
    push_refused: u64,
) -> String {
    let mut connections = Connections::default();
    let mut inbound_buffered = 0;
    for (_, c) in conns.iter() {
        match &c.role {
            Role::Http { .. }
            | Role::Write {
                kind: WriteKind::Http,
                ..
            } => connections.http += 1,
            Role::Drain => connections.closing += 1,
            _ if c.inbound => connections.peer_in += 1,
            _ => connections.peer_out += 1,
        }
        if let Role::Read { decoder, .. } = &c.role {
            inbound_buffered += decoder.buffered();
        }
    }
    let snapshot = Snapshot {
        core: core.counters(),
        net,
        push_refused,
        peers_tracked: core.members().len(),
        files_known: core.catalog().len(),
        files_held: core
            .catalog()
            .iter()
            .filter(|(_, e)| e.local.is_some())
            .count(),
        connections,
        inbound_buffered,
        rss_bytes: metrics::rss_bytes(),
    };
    metrics::render(&snapshot)
}

fn share(rendered: http::Rendered, head_only: bool) -> Payload {
    let end = rendered.len_for(head_only);
    Payload::shared(rendered.bytes, end)
}

/// Fault injection for the integration tests (debug builds only, so never
/// in a release binary): `PEERSHARE_TEST_HTTP_SNDBUF` sets each HTTP
/// connection's kernel send buffer, as on a slow link where the kernel
/// holds little of a response; on loopback it takes about 3 MiB, more than
/// any response, so a stalled reader would never meet the timeouts.
pub fn send_buffer_for_tests(stream: &mio::net::TcpStream) {
    #[cfg(debug_assertions)]
    if let Some(bytes) = std::env::var("PEERSHARE_TEST_HTTP_SNDBUF")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let _ = socket2::SockRef::from(stream).set_send_buffer_size(bytes);
    }
    #[cfg(not(debug_assertions))]
    let _ = stream;
}

fn over_budget(total: usize) -> Payload {
    log::debug!("http: {total} response bytes unsent already; answering 503");
    Payload::bytes(http::error_response(503, "Service Unavailable"))
}

/// What the HTTP connections hold unsent.
struct Pending {
    /// Bytes, each shared body once (all of it: it lives while any
    /// connection still writes it).
    total: usize,
    /// The shared bodies among them, by address.
    bodies: HashSet<usize>,
}

fn pending_output(conns: &Slab<Conn>) -> Pending {
    pending_of(conns.iter().filter_map(|(_, c)| match &c.role {
        Role::Write {
            kind: WriteKind::Http,
            payload,
        } => Some(payload),
        _ => None,
    }))
}

fn pending_of<'a>(payloads: impl Iterator<Item = &'a Payload>) -> Pending {
    let mut pending = Pending {
        total: 0,
        bodies: HashSet::new(),
    };
    for payload in payloads {
        match payload {
            Payload::Shared { buf, .. } => {
                if pending.bodies.insert(buf.as_ptr() as usize) {
                    pending.total += buf.len();
                }
            }
            Payload::Bytes { buf, pos } => pending.total += buf.len().saturating_sub(*pos),
            Payload::File(_) => {}
        }
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_body_shared_by_many_connections_counts_once() {
        let page: Arc<[u8]> = vec![b'p'; 1000].into();
        let api: Arc<[u8]> = vec![b'a'; 300].into();
        let mut payloads: Vec<Payload> = (0..100)
            .map(|i| Payload::shared(page.clone(), if i % 2 == 0 { 1000 } else { 40 }))
            .collect();
        payloads.push(Payload::shared(api.clone(), 300));
        payloads.push(Payload::Bytes {
            buf: vec![0; 200],
            pos: 150,
        });
        let pending = pending_of(payloads.iter());
        assert_eq!(pending.total, 1000 + 300 + 50);
        assert!(pending.bodies.contains(&(page.as_ptr() as usize)));
        assert_eq!(pending.bodies.len(), 2);
    }
}
