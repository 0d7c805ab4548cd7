//! Building complete HTTP/1.1 responses: the two routes and errors.

use super::budget::cut_to_fit;
use super::page::render_page;
use super::request::Route;
use crate::core::view::StateView;

/// The page's policy: inline script and style only, fetch to this origin
/// only, nothing else (no images, frames, forms or base URL changes).
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The policy of every other response: nothing at all.
const STRICT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Renders the complete response for a routed request: the stats page or
/// the state as JSON. With `head_only` (a HEAD request) the body is left
/// out but `Content-Length` still gives its length.
pub fn render(route: Route, head_only: bool, state: &StateView) -> Vec<u8> {
    match route {
        Route::Page => {
            let body = render_page(state).into_bytes();
            response(
                200,
                "OK",
                "text/html; charset=utf-8",
                &[("Content-Security-Policy", PAGE_CSP)],
                &body,
                head_only,
            )
        }
        // Rendered from the counters (`metrics_response`), not the state.
        Route::Metrics => error_response_for(500, "Internal Server Error", head_only),
        Route::ApiState => match serde_json::to_vec(state) {
            Ok(body) => response(200, "OK", "application/json", &[], &body, head_only),
            Err(e) => {
                log::error!("http: cannot serialize the state: {e}");
                error_response_for(500, "Internal Server Error", head_only)
            }
        },
    }
}

/// The complete response to `/metrics`, its body rendered by
/// [`super::metrics::render`].
pub fn metrics_response(body: &[u8]) -> Vec<u8> {
    response(200, "OK", super::metrics::CONTENT_TYPE, &[], body, false)
}

/// The complete GET response for a routed request, at most [`super::MAX_RESPONSE`]
/// bytes: a page whose files would make it larger holds fewer (`limit`
/// says how many), cut by an upper bound on each file's escaped size
/// before anything is rendered, so it is rendered once and never larger.
/// A single file larger than that (names and holders at their caps) is
/// still shown.
pub fn render_bounded(route: Route, mut state: StateView) -> Vec<u8> {
    cut_to_fit(&mut state);
    render(route, false, &state)
}

/// A complete error response: `status` and `reason` on the status line and
/// as a small `text/plain` body. A 405 also carries `Allow: GET, HEAD`,
/// a 503 `Retry-After: 1`.
///
/// A `status` outside 100..=999 becomes 500, and `reason` keeps only
/// printable ASCII, so the response is always well-formed.
pub fn error_response(status: u16, reason: &str) -> Vec<u8> {
    error_response_for(status, reason, false)
}

/// A 405 for a path whose only method is POST (the actions).
pub(crate) fn post_only(head_only: bool) -> Vec<u8> {
    let body = b"405 Method Not Allowed\n";
    response(
        405,
        "Method Not Allowed",
        "text/plain; charset=utf-8",
        &[("Allow", "POST")],
        body,
        head_only,
    )
}

/// [`error_response`], without the body when answering a HEAD request.
pub(crate) fn error_response_for(status: u16, reason: &str, head_only: bool) -> Vec<u8> {
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    let reason: String = reason
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect();
    let reason = match reason.trim() {
        "" => "Error",
        trimmed => trimmed,
    };
    let body = format!("{status} {reason}\n");
    let allow: &[(&str, &str)] = match status {
        405 => &[("Allow", "GET, HEAD")],
        // Busy for a moment (output or render budget): ask again shortly.
        503 => &[("Retry-After", "1")],
        _ => &[],
    };
    response(
        status,
        reason,
        "text/plain; charset=utf-8",
        allow,
        body.as_bytes(),
        head_only,
    )
}

/// A JSON response with `status` (used by the actions).
pub(crate) fn json_response(status: u16, reason: &str, body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    response(
        status,
        reason,
        "application/json",
        &[],
        body.as_bytes(),
        false,
    )
}

/// Status line, the headers every response carries, `extra` headers, and
/// the body unless `head_only`.
fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         Cache-Control: no-store\r\n\
         Connection: close\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !extra
        .iter()
        .any(|(name, _)| *name == "Content-Security-Policy")
    {
        head.push_str(&format!("Content-Security-Policy: {STRICT_CSP}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_support::sample_state;
    use crate::http::{parse_request, ParseOutcome, MAX_RESPONSE};
    use serde_json::Value;

    /// Splits a response into (status line, headers, body).
    fn split(resp: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
        let end = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("no end of head");
        let head = std::str::from_utf8(&resp[..end]).expect("head is not UTF-8");
        let mut lines = head.split("\r\n");
        let status = lines.next().expect("no status line").to_owned();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("bad header line");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        (status, headers, resp[end + 4..].to_vec())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn assert_common_headers(headers: &[(String, String)], body_len: usize) {
        assert_eq!(
            header(headers, "Content-Length"),
            Some(body_len.to_string().as_str())
        );
        assert_eq!(header(headers, "Cache-Control"), Some("no-store"));
        assert_eq!(header(headers, "Connection"), Some("close"));
        assert_eq!(header(headers, "X-Content-Type-Options"), Some("nosniff"));
        assert!(header(headers, "Content-Type").is_some());
    }

    #[test]
    fn page_response() {
        let resp = render(Route::Page, false, &sample_state());
        let (status, headers, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_common_headers(&headers, body.len());
        assert_eq!(
            header(&headers, "Content-Type"),
            Some("text/html; charset=utf-8")
        );
        let csp = header(&headers, "Content-Security-Policy").expect("no CSP");
        assert!(csp.starts_with(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
        ));
        let text = String::from_utf8(body).expect("page is not UTF-8");
        assert!(text.starts_with("<!DOCTYPE html>"));
        assert!(text.contains("Peer Stats for nanday"));
    }

    #[test]
    fn api_state_response_round_trips() {
        let state = sample_state();
        let resp = render(Route::ApiState, false, &state);
        let (status, headers, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_common_headers(&headers, body.len());
        assert_eq!(header(&headers, "Content-Type"), Some("application/json"));
        let json: Value = serde_json::from_slice(&body).expect("body is not JSON");
        for key in ["peer_id", "host", "port", "peers", "files", "transfers"] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["peer_id"], "nanday");
        assert_eq!(json["port"], 8001);
        let peer = &json["peers"][0];
        for key in ["peer_id", "host", "port", "last_seen_secs_ago", "ranges"] {
            assert!(peer.get(key).is_some(), "peer is missing {key}");
        }
        assert_eq!(peer["last_seen_secs_ago"], 7);
        let file = &json["files"][0];
        for key in [
            "file_id",
            "file_name",
            "file_owner",
            "file_size",
            "file_timestamp",
            "local",
            "peers_with_file",
        ] {
            assert!(file.get(key).is_some(), "file is missing {key}");
        }
        assert_eq!(file["peers_with_file"][1], "nanday");
        assert_eq!(json["transfers"][0]["bytes_done"], 768);
    }

    #[test]
    fn api_state_keeps_network_numbers_as_given() {
        let mut state = sample_state();
        state.files[0].file_size = serde_json::from_str("1.7906866073608398").expect("number");
        state.files[0].file_timestamp = serde_json::from_str("1744169352.0").expect("number");
        let resp = render(Route::ApiState, false, &state);
        let text = String::from_utf8_lossy(&resp);
        assert!(text.contains("\"file_size\":1.7906866073608398"));
        assert!(text.contains("\"file_timestamp\":1744169352.0"));
    }

    #[test]
    fn head_has_headers_but_no_body() {
        let state = sample_state();
        for route in [Route::Page, Route::ApiState] {
            let full = render(route, false, &state);
            let head = render(route, true, &state);
            let (_, full_headers, full_body) = split(&full);
            let (status, headers, body) = split(&head);
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert!(body.is_empty(), "{route:?}");
            assert_eq!(headers, full_headers, "{route:?}");
            assert_common_headers(&headers, full_body.len());
            assert_eq!(head.len() + full_body.len(), full.len());
        }
    }

    #[test]
    fn a_page_of_huge_entries_holds_fewer_files_to_stay_under_the_cap() {
        let mut state = sample_state();
        let mut file = state.files[0].clone();
        file.file_name = "n".repeat(100_000);
        state.files = vec![file; 40];
        state.files_total = 40;
        state.limit = 40;
        for route in [Route::Page, Route::ApiState] {
            let resp = render_bounded(route, state.clone());
            assert!(
                resp.len() <= MAX_RESPONSE,
                "{route:?}: {} bytes",
                resp.len()
            );
            let (status, _, body) = split(&resp);
            assert_eq!(status, "HTTP/1.1 200 OK");
            if route == Route::ApiState {
                let json: Value = serde_json::from_slice(&body).expect("JSON");
                let shown = json["files"].as_array().expect("files").len();
                assert!((5..40).contains(&shown), "{shown} files");
                assert_eq!(json["limit"], shown);
                assert_eq!(json["files_total"], 40);
            }
        }
        // Small pages are left alone.
        let small = render_bounded(Route::ApiState, sample_state());
        assert_eq!(small, render(Route::ApiState, false, &sample_state()));
    }

    #[test]
    fn error_responses_are_well_formed() {
        let resp = error_response(404, "Not Found");
        let (status, headers, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert_common_headers(&headers, body.len());
        assert_eq!(
            header(&headers, "Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(body, b"404 Not Found\n");
        assert_eq!(header(&headers, "Allow"), None);

        let (_, headers, _) = split(&error_response(405, "Method Not Allowed"));
        assert_eq!(header(&headers, "Allow"), Some("GET, HEAD"));

        let (status, _, body) = split(&error_response(7, "bad\r\nInjected: yes"));
        assert_eq!(status, "HTTP/1.1 500 badInjected: yes");
        assert_eq!(body, b"500 badInjected: yes\n");
        let (status, _, _) = split(&error_response(400, "\r\n"));
        assert_eq!(status, "HTTP/1.1 400 Error");
    }

    #[test]
    fn routed_requests_render_end_to_end() {
        let state = sample_state();
        let cases: [(&[u8], &str); 3] = [
            (b"GET / HTTP/1.1\r\n\r\n", "text/html; charset=utf-8"),
            (
                b"GET /index.html HTTP/1.1\r\n\r\n",
                "text/html; charset=utf-8",
            ),
            (b"GET /api/state HTTP/1.1\r\n\r\n", "application/json"),
        ];
        for (req, content_type) in cases {
            let ParseOutcome::Ready {
                route, head_only, ..
            } = parse_request(req)
            else {
                panic!("not ready");
            };
            let (status, headers, body) = split(&render(route, head_only, &state));
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert_eq!(header(&headers, "Content-Type"), Some(content_type));
            assert_eq!(
                header(&headers, "Content-Length"),
                Some(body.len().to_string().as_str())
            );
        }
    }
}
