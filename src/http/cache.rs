//! Rendered responses, shared: a hundred clients asking for the page in
//! the same instant cost one render and one copy of the bytes, which every
//! connection writes from (the stats page is at most [`CACHE_FOR`] old).

use super::request::Route;
use crate::core::view::FilePage;
use crate::core::Time;
use std::sync::Arc;
use std::time::Duration;

/// How long a rendered response is served again: the page's figures are
/// whole seconds, and its script asks once a second.
pub const CACHE_FOR: Duration = Duration::from_millis(500);

/// The most responses kept (distinct routes and pages); past it the oldest
/// goes. Each is at most [`super::MAX_RESPONSE`] plus its head.
pub const MAX_CACHED: usize = 8;

/// A complete response shared between connections: all of it for a GET,
/// the first `head_len` bytes for a HEAD.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// Status line, headers and body.
    pub bytes: Arc<[u8]>,
    /// Length of the status line and headers, blank line included.
    pub head_len: usize,
}

impl Rendered {
    /// Wraps a complete response (as [`super::render`] makes with
    /// `head_only` false).
    pub fn new(bytes: Vec<u8>) -> Self {
        let head_len = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(bytes.len(), |i| i + 4);
        Rendered {
            bytes: bytes.into(),
            head_len,
        }
    }

    /// How many of the bytes a request gets.
    pub fn len_for(&self, head_only: bool) -> usize {
        if head_only {
            self.head_len
        } else {
            self.bytes.len()
        }
    }
}

/// The responses rendered in the last [`CACHE_FOR`], by route and page.
#[derive(Debug, Default)]
pub struct ResponseCache {
    entries: Vec<(Route, FilePage, Time, Rendered)>,
    renders: u64,
}

impl ResponseCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The response for `route` and `page`: the one rendered within
    /// [`CACHE_FOR`] before `now`, or a new one from `render`.
    pub fn get(
        &mut self,
        now: Time,
        route: Route,
        page: FilePage,
        render: impl FnOnce() -> Vec<u8>,
    ) -> Rendered {
        self.entries.retain(|e| now.since(e.2) < CACHE_FOR);
        if let Some(e) = self.entries.iter().find(|e| e.0 == route && e.1 == page) {
            return e.3.clone();
        }
        let rendered = Rendered::new(render());
        self.renders += 1;
        if self.entries.len() >= MAX_CACHED {
            self.entries.remove(0);
        }
        self.entries.push((route, page, now, rendered.clone()));
        rendered
    }

    /// The response for `route` and `page` rendered within [`CACHE_FOR`]
    /// before `now`, if any (nothing is rendered).
    pub fn peek(&self, now: Time, route: Route, page: FilePage) -> Option<Rendered> {
        self.entries
            .iter()
            .find(|e| e.0 == route && e.1 == page && now.since(e.2) < CACHE_FOR)
            .map(|e| e.3.clone())
    }

    /// Responses rendered so far (for tests and logs).
    pub fn renders(&self) -> u64 {
        self.renders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P0: FilePage = FilePage {
        offset: 0,
        limit: 100,
    };

    fn response(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn a_hundred_requests_within_the_window_cost_one_render_and_share_the_bytes() {
        let mut cache = ResponseCache::new();
        let first = cache.get(Time(1000), Route::Page, P0, || response("page"));
        for i in 0..100 {
            let again = cache.get(Time(1000 + i), Route::Page, P0, || response("other"));
            assert!(Arc::ptr_eq(&again.bytes, &first.bytes));
        }
        assert_eq!(cache.renders(), 1);
        let peeked = cache.peek(Time(1100), Route::Page, P0).expect("cached");
        assert!(Arc::ptr_eq(&peeked.bytes, &first.bytes));
        assert!(cache.peek(Time(1100), Route::ApiState, P0).is_none());
        assert_eq!(first.len_for(false), first.bytes.len());
        assert_eq!(&first.bytes[first.len_for(true)..], b"page");
    }

    #[test]
    fn routes_and_pages_are_cached_apart_and_expire() {
        let mut cache = ResponseCache::new();
        let page = cache.get(Time(0), Route::Page, P0, || response("page"));
        let api = cache.get(Time(0), Route::ApiState, P0, || response("api"));
        let later = FilePage { offset: 100, ..P0 };
        let next = cache.get(Time(0), Route::Page, later, || response("next"));
        assert_eq!(cache.renders(), 3);
        assert!(!Arc::ptr_eq(&page.bytes, &api.bytes));
        assert!(!Arc::ptr_eq(&page.bytes, &next.bytes));
        let window = CACHE_FOR.as_millis() as u64;
        let fresh = cache.get(Time(window), Route::Page, P0, || response("new"));
        assert_eq!(&fresh.bytes[fresh.head_len..], b"new");
        assert_eq!(cache.renders(), 4);
    }

    #[test]
    fn the_cache_keeps_at_most_its_cap() {
        let mut cache = ResponseCache::new();
        for offset in 0..3 * MAX_CACHED {
            cache.get(Time(0), Route::ApiState, FilePage { offset, ..P0 }, || {
                response("x")
            });
        }
        assert_eq!(cache.entries.len(), MAX_CACHED);
    }
}
