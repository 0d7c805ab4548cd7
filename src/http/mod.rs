//! The stats page and its JSON API, served over a hand-rolled, sans-IO
//! HTTP/1.1 endpoint.
//!
//! This module owns everything between "bytes arrived on an HTTP
//! connection" and "bytes to write back": parsing the request head
//! ([`parse_request`]), choosing the route, rendering the response
//! ([`render`], [`error_response`]), the HTML page itself (server-rendered,
//! with a small inline script that refreshes its tables from
//! `/api/state`), and HTML escaping ([`escape_html`]) of every string that
//! came from the network.
//!
//! It owns no sockets and no clock: the event loop accumulates the
//! request bytes, calls [`parse_request`] after each read, enforces
//! [`REQUEST_TIMEOUT`], writes the response and closes the connection
//! (every response says `Connection: close`). Responses are rendered once
//! and shared ([`ResponseCache`]); the file list comes in pages
//! (`?offset=N&limit=M`), so a response stays small whatever the catalog.

use std::time::Duration;

mod action;
mod budget;
mod cache;
mod format;
pub mod metrics;
mod page;
mod request;
mod response;
#[cfg(test)]
mod test_support;

pub use action::{
    action_error, action_response, authorize, refusal_response, ActionKind, ActionRequest, Refusal,
    MAX_BODY, TOKEN_HEADER,
};
pub use budget::{FileBudget, PAGE_RESERVE};
pub use cache::{
    normalise, Key, Rendered, ResponseCache, CACHE_FOR, MAX_CACHED, MAX_RENDERS_PER_SEC,
    PAGE_LIMITS,
};
pub use page::escape_html;
pub use request::{host_is_loopback, parse_request, ParseOutcome, Route};
pub use response::{error_response, metrics_response, render, render_bounded};

/// The largest request head accepted, in bytes. A request whose head is
/// not complete within this many bytes is answered with 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// The most bytes kept of a request: a head and an action's body.
pub const MAX_REQUEST: usize = MAX_REQUEST_HEAD + MAX_BODY;

/// How long the event loop waits for a complete request (head, and an
/// action's body) before it closes the connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Files on a page (and in an `/api/state` answer) unless `limit` says
/// otherwise.
pub const DEFAULT_PAGE_FILES: usize = 100;

/// The most files a page holds, whatever `limit` asks for.
pub const MAX_PAGE_FILES: usize = 500;

/// The largest response: a page whose files' long strings would make it
/// larger holds fewer files (its `limit` says how many).
pub const MAX_RESPONSE: usize = 1024 * 1024;

/// Response bytes all HTTP connections may hold unsent together (a body
/// shared by many counts once). At it, a new request gets a short 503.
/// Small next to the catalog itself: a full one (20 000 files with long
/// names) already takes about 46 MiB of a debug build's 64 MiB bound.
pub const HTTP_OUTPUT_BUDGET: usize = 8 * 1024 * 1024;

/// A response not sent whole within this long after its request is
/// closed (a client that reads too slowly, or not at all).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A response that makes no progress for this long is closed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
