//! Parsing an HTTP request head and routing it.

use super::action::{self, ActionRequest, BodyOutcome};
use super::response::{error_response, error_response_for, post_only};
use super::{DEFAULT_PAGE_FILES, MAX_PAGE_FILES, MAX_REQUEST_HEAD};
use crate::core::view::{FilePage, FileQuery, SortKey, SortOrder};

/// The longest search accepted, in bytes; a longer `q` is cut.
pub const MAX_QUERY_TEXT: usize = 256;

/// The most request headers accepted; more is answered with 431.
const MAX_HEADERS: usize = 32;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The stats page (`/` or `/index.html`).
    Page,
    /// The state as JSON (`/api/state`).
    ApiState,
    /// Counters and gauges in the Prometheus text format (`/metrics`).
    Metrics,
}

impl Route {
    /// The path it answers, for logs.
    pub fn path(self) -> &'static str {
        match self {
            Route::Page => "/",
            Route::ApiState => "/api/state",
            Route::Metrics => "/metrics",
        }
    }
}

/// The result of looking at the bytes received so far on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseOutcome {
    /// The request head is not complete yet: read more.
    Incomplete,
    /// A valid request: answer it with [`render`](super::render).
    Ready {
        /// The page asked for.
        route: Route,
        /// `true` for HEAD: send the headers only.
        head_only: bool,
        /// The files asked for (`?offset=N&limit=M`), within
        /// [`MAX_PAGE_FILES`].
        page: FilePage,
        /// The search and sort asked for (`?q=&sort=&order=`).
        query: FileQuery,
    },
    /// A complete action (`POST /api/get`, `POST /api/delete`), not yet
    /// authorized: see [`super::authorize`].
    Action(ActionRequest),
    /// The request cannot be served: write these bytes (a complete
    /// response) and close.
    Respond(Vec<u8>),
}

/// Parses the request head at the start of `buf` (everything received so
/// far on the connection) and routes it.
///
/// Returns [`ParseOutcome::Incomplete`] while the head is incomplete and
/// `buf` is at most [`MAX_REQUEST_HEAD`] bytes long, or while a POST's
/// body (at most [`super::MAX_BODY`]) is incomplete; anything after the
/// head of a GET (a body) is ignored, since every response closes the
/// connection.
pub fn parse_request(buf: &[u8]) -> ParseOutcome {
    // Only the first MAX_REQUEST_HEAD bytes can hold an acceptable head,
    // which also bounds the work done per call.
    let window = &buf[..buf.len().min(MAX_REQUEST_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_HEAD => {
            return ParseOutcome::Respond(error_response(431, "Request Header Fields Too Large"));
        }
        Ok(httparse::Status::Partial) => return ParseOutcome::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return ParseOutcome::Respond(error_response(431, "Request Header Fields Too Large"));
        }
        Err(e) => {
            log::debug!("http: malformed request: {e}");
            return ParseOutcome::Respond(error_response(400, "Bad Request"));
        }
    };
    // A complete parse always sets the method and the path.
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return ParseOutcome::Respond(error_response(400, "Bad Request"));
    };
    // Two Hosts, or an empty one, name no one (RFC 9112: 400); a request
    // without one is HTTP/1.0's.
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return ParseOutcome::Respond(error_response(400, "Bad Request")),
        (Some(h), None) if h.value.trim_ascii().is_empty() => {
            return ParseOutcome::Respond(error_response(400, "Bad Request"))
        }
        _ => {}
    }
    // The actions' paths take POST only, and say so.
    if method != "POST" && action::kind_of(path_of(target)).is_some() {
        return ParseOutcome::Respond(post_only(method == "HEAD"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        "POST" => {
            let Some(kind) = action::kind_of(path_of(target)) else {
                return ParseOutcome::Respond(error_response(405, "Method Not Allowed"));
            };
            return match action::parse_action(kind, req.headers, &buf[head_len..]) {
                BodyOutcome::Incomplete => ParseOutcome::Incomplete,
                BodyOutcome::Respond(bytes) => ParseOutcome::Respond(bytes),
                BodyOutcome::Ready(request) => ParseOutcome::Action(request),
            };
        }
        _ => return ParseOutcome::Respond(error_response(405, "Method Not Allowed")),
    };
    match route(target) {
        Some(route) => ParseOutcome::Ready {
            route,
            head_only,
            page: page(target),
            query: query(target),
        },
        None => ParseOutcome::Respond(error_response_for(404, "Not Found", head_only)),
    }
}

/// Whether the request head at the start of `buf` names this machine's
/// loopback as its Host (`localhost`, `127.x.y.z` or `[::1]`, any port), or
/// names none (HTTP/1.0). A page listening on loopback answers nothing
/// else, so a web site whose name was made to resolve to 127.0.0.1 (DNS
/// rebinding) cannot read it from a browser on this machine.
pub fn host_is_loopback(buf: &[u8]) -> bool {
    let window = &buf[..buf.len().min(MAX_REQUEST_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(window).is_err() {
        return false;
    }
    let Some(host) = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
    else {
        return true;
    };
    let Ok(host) = std::str::from_utf8(host.value) else {
        return false;
    };
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Maps a request target to a route: origin-form (`/path?query`) or
/// absolute-form (`http://host/path?query`); the query is ignored.
fn route(target: &str) -> Option<Route> {
    match path_of(target) {
        "/" | "/index.html" => Some(Route::Page),
        "/api/state" => Some(Route::ApiState),
        "/metrics" => Some(Route::Metrics),
        _ => None,
    }
}

/// The path of a request target: origin-form (`/path?query`) or
/// absolute-form (`http://host/path?query`), without the query.
fn path_of(target: &str) -> &str {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    match strip_scheme(path) {
        // Absolute-form: the path starts at the first '/' after the authority.
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => path,
    }
}

/// The query string of a target (after `?`, before `#`).
fn query_string(target: &str) -> &str {
    target
        .split('#')
        .next()
        .and_then(|t| t.split_once('?'))
        .map_or("", |(_, q)| q)
}

/// The search and sort a target's query asks for: `q` (percent-decoded,
/// `+` a space, cut to [`MAX_QUERY_TEXT`] bytes), `sort` (`name`, `size`,
/// `time`, `owner`) and `order` (`asc`, `desc`); anything else is the
/// default.
fn query(target: &str) -> FileQuery {
    let mut query = FileQuery::default();
    for pair in query_string(target).split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value) {
            ("q", v) => query.q = percent_decode(v),
            ("sort", "name") => query.sort = SortKey::Name,
            ("sort", "size") => query.sort = SortKey::Size,
            ("sort", "time") => query.sort = SortKey::Time,
            ("sort", "owner") => query.sort = SortKey::Owner,
            ("order", "asc") => query.order = SortOrder::Asc,
            ("order", "desc") => query.order = SortOrder::Desc,
            _ => {}
        }
    }
    query
}

/// `application/x-www-form-urlencoded` decoding of one value, lossy for
/// bad UTF-8 and kept whole for a bad escape, at most [`MAX_QUERY_TEXT`]
/// bytes (cut at a character boundary).
fn percent_decode(v: &str) -> String {
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len().min(MAX_QUERY_TEXT));
    let mut i = 0;
    while i < bytes.len() && out.len() < MAX_QUERY_TEXT {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    while text.len() > MAX_QUERY_TEXT {
        text.pop();
    }
    text
}

/// The files a target's query asks for: `offset` (default 0) and `limit`
/// (default [`DEFAULT_PAGE_FILES`], at most [`MAX_PAGE_FILES`], at least
/// 1). Other parameters are ignored, and so is a value that is not a
/// number; a number too large for a `usize` is the largest one.
fn page(target: &str) -> FilePage {
    let query = query_string(target);
    let mut page = FilePage {
        offset: 0,
        limit: DEFAULT_PAGE_FILES,
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            Some(value.parse().unwrap_or(usize::MAX))
        } else {
            None
        };
        match (key, number) {
            ("offset", Some(n)) => page.offset = n,
            ("limit", Some(n)) => page.limit = n.clamp(1, MAX_PAGE_FILES),
            _ => {}
        }
    }
    page
}

/// The part after `http://` or `https://` (case-insensitive), if present.
fn strip_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GET_STATE: &[u8] =
        b"GET /api/state HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n";

    fn status_of(outcome: &ParseOutcome) -> u16 {
        match outcome {
            ParseOutcome::Respond(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                text.get(9..12)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no status in {text:?}"))
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }

    fn ready(route: Route, head_only: bool) -> ParseOutcome {
        ParseOutcome::Ready {
            route,
            head_only,
            page: FilePage {
                offset: 0,
                limit: DEFAULT_PAGE_FILES,
            },
            query: FileQuery::default(),
        }
    }

    fn page_of(target: &str) -> (usize, usize) {
        let req = format!("GET {target} HTTP/1.1\r\n\r\n");
        match parse_request(req.as_bytes()) {
            ParseOutcome::Ready { page, .. } => (page.offset, page.limit),
            other => panic!("{target}: {other:?}"),
        }
    }

    #[test]
    fn the_query_picks_a_page_of_files_within_the_cap() {
        assert_eq!(page_of("/api/state"), (0, DEFAULT_PAGE_FILES));
        assert_eq!(page_of("/api/state?offset=19900&limit=100"), (19_900, 100));
        assert_eq!(page_of("/?limit=7&offset=3&t=1"), (3, 7));
        assert_eq!(page_of("/?limit=100000"), (0, MAX_PAGE_FILES));
        assert_eq!(page_of("/?limit=0"), (0, 1));
        assert_eq!(
            page_of("/api/state?offset=99999999999999999999999"),
            (usize::MAX, DEFAULT_PAGE_FILES)
        );
        for junk in [
            "/?offset=-5",
            "/?offset=1e3",
            "/?offset=",
            "/?offset",
            "/?limit=x&&=",
        ] {
            assert_eq!(page_of(junk), (0, DEFAULT_PAGE_FILES), "{junk}");
        }
        assert_eq!(
            page_of("http://h:1/api/state?offset=5#limit=9"),
            (5, DEFAULT_PAGE_FILES)
        );
    }

    fn query_of(target: &str) -> FileQuery {
        let req = format!("GET {target} HTTP/1.1\r\n\r\n");
        match parse_request(req.as_bytes()) {
            ParseOutcome::Ready { query, .. } => query,
            other => panic!("{target}: {other:?}"),
        }
    }

    #[test]
    fn the_query_asks_for_a_search_and_a_sort_and_junk_is_the_default() {
        let q = query_of("/api/state?q=Holiday+%C3%A9t%C3%A9%2B1&sort=size&order=desc");
        assert_eq!(q.q, "Holiday été+1");
        assert_eq!((q.sort, q.order), (SortKey::Size, SortOrder::Desc));
        let q = query_of("/?sort=time");
        assert_eq!((q.sort, q.order), (SortKey::Time, SortOrder::Asc));
        assert_eq!(query_of("/?sort=owner").sort, SortKey::Owner);
        assert_eq!(
            query_of("/?sort=evil&order=up&q=%zz%"),
            FileQuery {
                q: "%zz%".into(),
                ..FileQuery::default()
            }
        );
        let long = format!("/?q={}", "%C3%A9".repeat(300));
        let q = query_of(&long);
        assert!(q.q.len() <= MAX_QUERY_TEXT && q.q.chars().all(|c| c == 'é'));
    }

    fn post(path: &str, headers: &str, body: &str) -> String {
        format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1:8001\r\n{headers}\r\n{body}")
    }

    #[test]
    fn a_post_waits_for_its_whole_body_then_is_an_action() {
        let body = r#"{"file_id":"abc"}"#;
        let full = post(
            "/api/get",
            &format!(
                "Content-Length: {}\r\nX-Peershare-Token: t\r\nOrigin: http://127.0.0.1:8001\r\n",
                body.len()
            ),
            body,
        );
        assert_eq!(
            parse_request(&full.as_bytes()[..full.len() - 3]),
            ParseOutcome::Incomplete
        );
        let ParseOutcome::Action(a) = parse_request(full.as_bytes()) else {
            panic!("not an action");
        };
        assert_eq!(a.kind, action::ActionKind::Get);
        assert_eq!(a.file_id, "abc");
        assert_eq!(a.token.as_deref(), Some("t"));
        assert_eq!(a.origin.as_deref(), Some("http://127.0.0.1:8001"));
        assert_eq!(a.host.as_deref(), Some("127.0.0.1:8001"));
        let del = post("/api/delete", "Content-Length: 17\r\n", body);
        assert!(
            matches!(parse_request(del.as_bytes()), ParseOutcome::Action(a) if a.kind == action::ActionKind::Delete)
        );
    }

    #[test]
    fn a_post_without_a_length_too_large_or_malformed_is_refused_with_json() {
        let cases = [
            (post("/api/get", "", "{}"), 411),
            (post("/api/get", "Transfer-Encoding: chunked\r\n", ""), 411),
            (post("/api/get", "Content-Length: 4097\r\n", ""), 413),
            (post("/api/get", "Content-Length: x\r\n", ""), 400),
            (post("/api/get", "Content-Length: 2\r\n", "{}"), 400),
            (post("/api/get", "Content-Length: 3\r\n", "abc"), 400),
            (post("/api/state", "Content-Length: 2\r\n", "{}"), 405),
            (post("/", "Content-Length: 2\r\n", "{}"), 405),
        ];
        for (req, status) in cases {
            let out = parse_request(req.as_bytes());
            assert_eq!(status_of(&out), status, "{req}");
            if status != 405 {
                let ParseOutcome::Respond(bytes) = out else {
                    unreachable!()
                };
                assert!(String::from_utf8_lossy(&bytes).contains("\"ok\":false"));
            }
        }
    }

    #[test]
    fn routes_page_and_api() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\n\r\n"),
            ready(Route::Page, false)
        );
        assert_eq!(
            parse_request(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"),
            ready(Route::Page, false)
        );
        assert_eq!(parse_request(GET_STATE), ready(Route::ApiState, false));
        assert_eq!(
            parse_request(b"GET /api/state?t=123 HTTP/1.0\r\n\r\n"),
            ready(Route::ApiState, false)
        );
        assert_eq!(
            parse_request(b"GET /?refresh=1 HTTP/1.1\r\n\r\n"),
            ready(Route::Page, false)
        );
        assert_eq!(
            parse_request(b"GET http://example:8080/api/state HTTP/1.1\r\n\r\n"),
            ready(Route::ApiState, false)
        );
        assert_eq!(
            parse_request(b"GET http://example:8080 HTTP/1.1\r\n\r\n"),
            ready(Route::Page, false)
        );
    }

    #[test]
    fn head_is_head_only() {
        assert_eq!(
            parse_request(b"HEAD / HTTP/1.1\r\n\r\n"),
            ready(Route::Page, true)
        );
        assert_eq!(
            parse_request(b"HEAD /api/state HTTP/1.1\r\n\r\n"),
            ready(Route::ApiState, true)
        );
    }

    #[test]
    fn unknown_path_is_404() {
        let out = parse_request(b"GET /x HTTP/1.1\r\n\r\n");
        assert_eq!(status_of(&out), 404);
        for path in [
            "/api/state/",
            "/api",
            "/index.htm",
            "/favicon.ico",
            "//",
            "/API/STATE",
        ] {
            let req = format!("GET {path} HTTP/1.1\r\n\r\n");
            assert_eq!(status_of(&parse_request(req.as_bytes())), 404, "{path}");
        }
    }

    #[test]
    fn head_404_has_no_body() {
        let ParseOutcome::Respond(bytes) = parse_request(b"HEAD /x HTTP/1.1\r\n\r\n") else {
            panic!("expected a response");
        };
        assert!(bytes.starts_with(b"HTTP/1.1 404 "));
        assert!(bytes.ends_with(b"\r\n\r\n"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("Content-Length: 0\r\n"), "{text}");
    }

    #[test]
    fn other_methods_are_405_with_allow() {
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "get", "CONNECT"] {
            let req = format!("{method} / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
            let out = parse_request(req.as_bytes());
            assert_eq!(status_of(&out), 405, "{method}");
            let ParseOutcome::Respond(bytes) = out else {
                unreachable!()
            };
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        }
    }

    #[test]
    fn garbage_is_400() {
        assert_eq!(
            status_of(&parse_request(b"\x00\x01\x02\xffgarbage\r\n\r\n")),
            400
        );
        assert_eq!(status_of(&parse_request(b"GET / FTP/1.1\r\n\r\n")), 400);
        assert_eq!(
            status_of(&parse_request(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")),
            400
        );
        assert_eq!(
            status_of(&parse_request(
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
            )),
            400
        );
    }

    #[test]
    fn oversized_head_is_431() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        while req.len() < 9 * 1024 {
            req.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        // Not even finished: too long already.
        assert_eq!(status_of(&parse_request(&req)), 431);
        req.extend_from_slice(b"\r\n");
        assert_eq!(status_of(&parse_request(&req)), 431);
        // One long header line, no end in sight.
        let mut long = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        long.resize(9 * 1024, b'a');
        assert_eq!(status_of(&parse_request(&long)), 431);
        // Exactly at the cap and still incomplete: wait for more.
        long.truncate(MAX_REQUEST_HEAD);
        assert_eq!(parse_request(&long), ParseOutcome::Incomplete);
    }

    #[test]
    fn head_filling_the_cap_exactly_is_accepted() {
        let mut req = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        req.resize(MAX_REQUEST_HEAD - 4, b'p');
        req.extend_from_slice(b"\r\n\r\n");
        assert_eq!(req.len(), MAX_REQUEST_HEAD);
        assert_eq!(parse_request(&req), ready(Route::Page, false));
        // A body after it does not matter.
        req.extend_from_slice(b"ignored body");
        assert_eq!(parse_request(&req), ready(Route::Page, false));
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        assert_eq!(status_of(&parse_request(&req)), 431);
    }

    #[test]
    fn partial_head_is_incomplete_at_every_split() {
        for end in 0..GET_STATE.len() {
            assert_eq!(
                parse_request(&GET_STATE[..end]),
                ParseOutcome::Incomplete,
                "split at {end}"
            );
        }
        assert_eq!(parse_request(GET_STATE), ready(Route::ApiState, false));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..10_000)) {
            if let ParseOutcome::Respond(resp) = parse_request(&bytes) {
                prop_assert!(resp.starts_with(b"HTTP/1.1 "));
                prop_assert!(resp.windows(4).any(|w| w == b"\r\n\r\n"));
            }
        }

        #[test]
        fn request_like_bytes_never_panic(
            method in "(GET|HEAD|POST|[A-Z]{0,8})",
            path in "[ -~]{0,40}",
            headers in proptest::collection::vec(("[!-~&&[^:]]{0,12}", "[ -~]{0,30}"), 0..40),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut req = format!("{method} {path} HTTP/1.1\r\n");
            for (name, value) in &headers {
                req.push_str(&format!("{name}: {value}\r\n"));
            }
            req.push_str("\r\n");
            let bytes = req.as_bytes();
            let cut = cut.index(bytes.len() + 1);
            for buf in [bytes, &bytes[..cut]] {
                if let ParseOutcome::Respond(resp) = parse_request(buf) {
                    prop_assert!(resp.starts_with(b"HTTP/1.1 "));
                    prop_assert!(resp.windows(4).any(|w| w == b"\r\n\r\n"));
                }
            }
        }
    }

    #[test]
    fn only_a_loopback_host_or_none_is_this_machine() {
        let with = |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        for ok in [
            "localhost",
            "LOCALHOST:8001",
            "127.0.0.1:8001",
            "127.9.9.9",
            "[::1]:8001",
            "[::1]",
        ] {
            assert!(host_is_loopback(&with(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8001",
            "localhost.evil.example",
            "10.0.0.1:8001",
            "[::2]:1",
            "127.0.0.1:x",
        ] {
            assert!(!host_is_loopback(&with(bad)), "{bad}");
        }
        assert!(host_is_loopback(b"GET / HTTP/1.0\r\n\r\n"));
    }

    #[test]
    fn two_hosts_or_an_empty_one_are_400_and_action_paths_take_post_only() {
        let two = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(status_of(&parse_request(two)), 400);
        assert_eq!(
            status_of(&parse_request(b"GET / HTTP/1.1\r\nHost: \r\n\r\n")),
            400
        );
        let get = parse_request(b"GET /api/get HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(status_of(&get), 405);
        let ParseOutcome::Respond(bytes) = get else {
            panic!("a response")
        };
        assert!(String::from_utf8_lossy(&bytes).contains("Allow: POST\r\n"));
    }
}
