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
//! (every response says `Connection: close`).

use std::time::Duration;

mod format;
mod page;
mod request;
mod response;
#[cfg(test)]
mod test_support;

pub use page::escape_html;
pub use request::{parse_request, ParseOutcome, Route};
pub use response::{error_response, render};

/// The largest request head accepted, in bytes. A request whose head is
/// not complete within this many bytes is answered with 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long the event loop waits for a complete request head before it
/// closes the connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
