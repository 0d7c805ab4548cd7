//! The page's actions: `POST /api/get` and `POST /api/delete` with a JSON
//! body `{"file_id": "..."}`. Parsing the request and checking who may act
//! (the token and the `Origin`) are here, sans-IO; the driver runs the
//! same core command as the menu and answers with [`action_response`].

use super::response::json_response;
use serde::Deserialize;

/// The largest action body accepted, in bytes.
pub const MAX_BODY: usize = 4 * 1024;

/// The header that carries the token.
pub const TOKEN_HEADER: &str = "x-peershare-token";

/// What an action asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionKind {
    /// Download the file (the menu's `get <id>`).
    Get,
    /// Delete a file we own, everywhere (the menu's `delete <id>`).
    Delete,
}

/// A complete, well-formed action request, not yet authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRequest {
    /// Which action.
    pub kind: ActionKind,
    /// The file it names (id or unique prefix, as the menu takes).
    pub file_id: String,
    /// The `X-Peershare-Token` header, if sent.
    pub token: Option<String>,
    /// The `Origin` header, if sent.
    pub origin: Option<String>,
    /// The `Host` header, if sent.
    pub host: Option<String>,
}

/// Why an action is refused before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or not ours.
    BadToken,
    /// `Origin` is present and is not `http://<Host>`.
    BadOrigin,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::BadToken => "no token, or a wrong one",
            Refusal::BadOrigin => "its Origin is not this page's",
        })
    }
}

/// Checks an action's token (in constant time) and its `Origin` (when
/// present it must be `http://<Host>`, so another site's script cannot
/// act even if it learnt the token).
pub fn authorize(req: &ActionRequest, token: &str) -> Result<(), Refusal> {
    let sent = req.token.as_deref().unwrap_or("");
    if !constant_time_eq(sent.as_bytes(), token.as_bytes()) || token.is_empty() {
        return Err(Refusal::BadToken);
    }
    if let Some(origin) = &req.origin {
        let expected = req.host.as_deref().map(|h| format!("http://{h}"));
        if expected.as_deref() != Some(origin.as_str()) {
            return Err(Refusal::BadOrigin);
        }
    }
    Ok(())
}

/// The 403 answering a refused action.
pub fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let error = match refusal {
        Refusal::BadToken => "missing or wrong token: open the page at the address the peer printed at start (with #token=...)",
        Refusal::BadOrigin => "the Origin header does not match the Host header",
    };
    action_error(403, "Forbidden", error)
}

/// Equality whose time depends only on the lengths, not on where the
/// bytes first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `{"ok":true,"message":...}`, 200.
pub fn action_response(message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "ok": true, "message": message });
    json_response(200, "OK", &body)
}

/// `{"ok":false,"error":...}` with `status`.
pub fn action_error(status: u16, reason: &str, error: &str) -> Vec<u8> {
    let body = serde_json::json!({ "ok": false, "error": error });
    json_response(status, reason, &body)
}

/// The body's only field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    file_id: String,
}

/// The action for a POST to `path`, if it is one.
pub(super) fn kind_of(path: &str) -> Option<ActionKind> {
    match path {
        "/api/get" => Some(ActionKind::Get),
        "/api/delete" => Some(ActionKind::Delete),
        _ => None,
    }
}

/// What a POST's head and the bytes after it make of an action.
pub(super) enum BodyOutcome {
    /// Read more.
    Incomplete,
    /// Answer this and close.
    Respond(Vec<u8>),
    /// A well-formed request.
    Ready(ActionRequest),
}

/// The action from a POST whose head is complete: `headers` are its
/// headers, `rest` what arrived after the head.
pub(super) fn parse_action(
    kind: ActionKind,
    headers: &[httparse::Header<'_>],
    rest: &[u8],
) -> BodyOutcome {
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|v| v.trim().to_owned())
    };
    if header("transfer-encoding").is_some() {
        return BodyOutcome::Respond(action_error(
            411,
            "Length Required",
            "send the body with Content-Length, not chunked",
        ));
    }
    let Some(length) = header("content-length") else {
        return BodyOutcome::Respond(action_error(
            411,
            "Length Required",
            "Content-Length is required",
        ));
    };
    // Digits only (RFC 9110): `+78` or ` 7` read otherwise by a proxy in
    // front would let the two disagree on where the request ends.
    let digits = !length.is_empty() && length.bytes().all(|b| b.is_ascii_digit());
    let length = match length.parse::<usize>() {
        Ok(n) if digits && n <= MAX_BODY => n,
        Ok(_) if !digits => {
            return BodyOutcome::Respond(action_error(
                400,
                "Bad Request",
                "Content-Length is not a number",
            ))
        }
        Ok(_) => {
            return BodyOutcome::Respond(action_error(
                413,
                "Content Too Large",
                "the body is larger than 4 KiB",
            ))
        }
        Err(_) => {
            return BodyOutcome::Respond(action_error(
                400,
                "Bad Request",
                "Content-Length is not a number",
            ))
        }
    };
    if rest.len() < length {
        return BodyOutcome::Incomplete;
    }
    let file_id = match serde_json::from_slice::<Body>(&rest[..length]) {
        Ok(b) if !b.file_id.is_empty() && b.file_id.len() <= 128 => b.file_id,
        _ => {
            return BodyOutcome::Respond(action_error(
                400,
                "Bad Request",
                r#"the body must be {"file_id": "<id>"}"#,
            ))
        }
    };
    BodyOutcome::Ready(ActionRequest {
        kind,
        file_id,
        token: header(TOKEN_HEADER),
        origin: header("origin"),
        host: header("host"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: Option<&str>, origin: Option<&str>) -> ActionRequest {
        ActionRequest {
            kind: ActionKind::Get,
            file_id: "ab".into(),
            token: token.map(Into::into),
            origin: origin.map(Into::into),
            host: Some("127.0.0.1:8001".into()),
        }
    }

    #[test]
    fn only_the_right_token_from_the_pages_own_origin_may_act() {
        let t = "00112233445566778899aabbccddeeff";
        assert_eq!(authorize(&request(Some(t), None), t), Ok(()));
        assert_eq!(
            authorize(&request(Some(t), Some("http://127.0.0.1:8001")), t),
            Ok(())
        );
        assert_eq!(authorize(&request(None, None), t), Err(Refusal::BadToken));
        assert_eq!(
            authorize(&request(Some("00112233445566778899aabbccddeefe"), None), t),
            Err(Refusal::BadToken)
        );
        assert_eq!(
            authorize(&request(Some(""), None), ""),
            Err(Refusal::BadToken),
            "an empty token never matches"
        );
        for origin in ["http://evil.example", "https://127.0.0.1:8001", "null"] {
            assert_eq!(
                authorize(&request(Some(t), Some(origin)), t),
                Err(Refusal::BadOrigin),
                "{origin}"
            );
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
