//! Rendered responses, shared: a hundred clients asking for the page in
//! the same instant cost one render and one copy of the bytes, which every
//! connection writes from. A response is served again for at most
//! [`CACHE_FOR`], and never once the core's state generation moved on (a
//! file saved shows at the next reload); at most [`MAX_RENDERS_PER_SEC`]
//! are rendered a second, however many distinct pages are asked for.

use super::request::Route;
use super::MAX_PAGE_FILES;
use crate::core::view::{FilePage, FileQuery};
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

/// The most responses rendered in one second; past it a request whose
/// answer is not cached is turned away (503, `Retry-After: 1`). Pages are
/// distinct keys, so without it a client walking `offset=1, 2, 3…` would
/// cost a full render each, on the loop.
pub const MAX_RENDERS_PER_SEC: u32 = 20;

/// The `limit`s a page may have: one asked for is raised to the next, so
/// `limit=1…500` are six keys, not five hundred.
pub const PAGE_LIMITS: [usize; 6] = [10, 20, 50, 100, 200, MAX_PAGE_FILES];

/// The page answered for `page` when the catalog holds `files_total`
/// files: its `limit` raised to one of [`PAGE_LIMITS`], an `offset` past
/// the end moved to the end (every such page is the same empty page).
/// Offsets within the catalog are kept as asked: a page cut short to fit
/// [`super::MAX_RESPONSE`] links to the next one at any offset.
pub fn normalise(page: FilePage, files_total: usize) -> FilePage {
    let limit = PAGE_LIMITS
        .iter()
        .copied()
        .find(|&l| l >= page.limit)
        .unwrap_or(MAX_PAGE_FILES);
    FilePage {
        offset: page.offset.min(files_total),
        limit,
    }
}

/// What a response is cached by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The route.
    pub route: Route,
    /// The page of files, [`normalise`]d.
    pub page: FilePage,
    /// The search and sort.
    pub query: FileQuery,
    /// The core's state generation it was rendered at: a response from
    /// another is stale whatever its age (a file saved, a peer gone).
    pub generation: u64,
}

#[derive(Debug)]
struct Entry {
    key: Key,
    at: Time,
    rendered: Rendered,
}

/// The responses rendered in the last [`CACHE_FOR`], by [`Key`].
#[derive(Debug, Default)]
pub struct ResponseCache {
    entries: Vec<Entry>,
    renders: u64,
    /// Start of the current second of the render budget, and renders in it.
    window: Option<Time>,
    in_window: u32,
}

impl ResponseCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The response for `key`: the one rendered within [`CACHE_FOR`]
    /// before `now`, or a new one from `render`; None when the render
    /// budget ([`MAX_RENDERS_PER_SEC`]) is spent.
    pub fn get(
        &mut self,
        now: Time,
        key: Key,
        render: impl FnOnce() -> Vec<u8>,
    ) -> Option<Rendered> {
        if let Some(rendered) = self.peek(now, &key) {
            return Some(rendered);
        }
        if self
            .window
            .is_none_or(|start| now.since(start).as_secs() >= 1)
        {
            self.window = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= MAX_RENDERS_PER_SEC {
            return None;
        }
        self.in_window += 1;
        let rendered = Rendered::new(render());
        self.renders += 1;
        if self.entries.len() >= MAX_CACHED {
            self.entries.remove(0);
        }
        self.entries.push(Entry {
            key,
            at: now,
            rendered: rendered.clone(),
        });
        Some(rendered)
    }

    /// The response for `key` rendered within [`CACHE_FOR`] before `now`,
    /// if any (nothing is rendered; expired responses are let go).
    pub fn peek(&mut self, now: Time, key: &Key) -> Option<Rendered> {
        self.evict(now);
        self.entries
            .iter()
            .find(|e| e.key == *key)
            .map(|e| e.rendered.clone())
    }

    /// Lets go of the responses older than [`CACHE_FOR`] and of those
    /// rendered at an older generation than any newer entry's (the driver
    /// calls it from its timers too, so a burst's responses don't stay
    /// until the next request).
    pub fn evict(&mut self, now: Time) {
        let newest = self.entries.iter().map(|e| e.key.generation).max();
        self.entries
            .retain(|e| now.since(e.at) < CACHE_FOR && Some(e.key.generation) == newest);
    }

    /// Responses rendered so far (for tests and logs).
    pub fn renders(&self) -> u64 {
        self.renders
    }

    /// Responses held (for tests).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no response is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P0: FilePage = FilePage {
        offset: 0,
        limit: 100,
    };

    fn key(route: Route, page: FilePage) -> Key {
        Key {
            route,
            page,
            query: FileQuery::default(),
            generation: 0,
        }
    }

    fn response(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn get(cache: &mut ResponseCache, at: u64, key: Key, body: &str) -> Rendered {
        cache
            .get(Time(at), key, || response(body))
            .expect("within the render budget")
    }

    #[test]
    fn a_hundred_requests_within_the_window_cost_one_render_and_share_the_bytes() {
        let mut cache = ResponseCache::new();
        let page = key(Route::Page, P0);
        let first = get(&mut cache, 1000, page.clone(), "page");
        for i in 0..100 {
            let again = get(&mut cache, 1000 + i, page.clone(), "other");
            assert!(Arc::ptr_eq(&again.bytes, &first.bytes));
        }
        assert_eq!(cache.renders(), 1);
        let peeked = cache.peek(Time(1100), &page).expect("cached");
        assert!(Arc::ptr_eq(&peeked.bytes, &first.bytes));
        assert!(cache.peek(Time(1100), &key(Route::ApiState, P0)).is_none());
        assert_eq!(first.len_for(false), first.bytes.len());
        assert_eq!(&first.bytes[first.len_for(true)..], b"page");
    }

    #[test]
    fn routes_and_pages_are_cached_apart_and_expire() {
        let mut cache = ResponseCache::new();
        let page = get(&mut cache, 0, key(Route::Page, P0), "page");
        let api = get(&mut cache, 0, key(Route::ApiState, P0), "api");
        let later = FilePage { offset: 100, ..P0 };
        let next = get(&mut cache, 0, key(Route::Page, later), "next");
        assert_eq!(cache.renders(), 3);
        assert!(!Arc::ptr_eq(&page.bytes, &api.bytes));
        assert!(!Arc::ptr_eq(&page.bytes, &next.bytes));
        let window = CACHE_FOR.as_millis() as u64;
        let fresh = get(&mut cache, window, key(Route::Page, P0), "new");
        assert_eq!(&fresh.bytes[fresh.head_len..], b"new");
        assert_eq!(cache.renders(), 4);
    }

    #[test]
    fn a_response_rendered_before_the_state_changed_is_never_served_after() {
        let mut cache = ResponseCache::new();
        let before = key(Route::ApiState, P0);
        get(&mut cache, 0, before.clone(), "not yet held");
        let after = Key {
            generation: 1,
            ..before.clone()
        };
        // Within the window, but a file was saved meanwhile.
        let fresh = get(&mut cache, 10, after, "held");
        assert_eq!(&fresh.bytes[fresh.head_len..], b"held");
        assert_eq!(cache.renders(), 2);
        // The older response is let go at once.
        assert!(cache.peek(Time(11), &before).is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_thousand_distinct_offsets_cost_a_bounded_number_of_renders() {
        // Past the end of a small catalog, every offset is the same page.
        let mut cache = ResponseCache::new();
        for offset in 20_001..21_001 {
            let page = normalise(FilePage { offset, limit: 7 }, 50);
            cache.get(Time(0), key(Route::ApiState, page), || response("empty"));
        }
        assert_eq!(cache.renders(), 1);

        // Within a large one they are distinct pages: the render budget
        // bounds what a client walking them costs, a second at a time.
        let mut cache = ResponseCache::new();
        let mut refused = 0;
        for offset in 0..1000u64 {
            let page = normalise(
                FilePage {
                    offset: offset as usize,
                    limit: 100,
                },
                20_000,
            );
            // All within two seconds.
            let at = Time(offset * 2);
            if cache
                .get(at, key(Route::ApiState, page), || response("page"))
                .is_none()
            {
                refused += 1;
            }
        }
        assert!(
            cache.renders() <= 2 * u64::from(MAX_RENDERS_PER_SEC),
            "{} renders",
            cache.renders()
        );
        assert_eq!(cache.renders() + refused, 1000);
        // Past the budget, a cached page is still served; a new one is not.
        let mut cache = ResponseCache::new();
        let page = |offset| key(Route::ApiState, FilePage { offset, ..P0 });
        for offset in 0..MAX_RENDERS_PER_SEC as usize {
            get(&mut cache, 0, page(offset), "page");
        }
        let last = MAX_RENDERS_PER_SEC as usize - 1;
        assert!(cache.get(Time(1), page(last), || response("x")).is_some());
        assert!(cache
            .get(Time(1), page(last + 1), || response("x"))
            .is_none());
        assert!(cache
            .get(Time(1000), page(last + 1), || response("x"))
            .is_some());
    }

    #[test]
    fn pages_are_normalised_to_few_limits_and_one_page_past_the_end() {
        let norm = |offset, limit| {
            let p = normalise(FilePage { offset, limit }, 300);
            (p.offset, p.limit)
        };
        assert_eq!(norm(0, 1), (0, 10));
        assert_eq!(norm(0, 100), (0, 100));
        assert_eq!(norm(37, 101), (37, 200));
        assert_eq!(norm(5, MAX_PAGE_FILES), (5, MAX_PAGE_FILES));
        assert_eq!(norm(5, usize::MAX), (5, MAX_PAGE_FILES));
        assert_eq!(norm(301, 10), (300, 10));
        assert_eq!(norm(usize::MAX, 10), (300, 10));
    }

    #[test]
    fn expired_responses_are_let_go_without_a_new_render() {
        let mut cache = ResponseCache::new();
        for offset in 0..MAX_CACHED {
            get(
                &mut cache,
                0,
                key(Route::ApiState, FilePage { offset, ..P0 }),
                "x",
            );
        }
        assert_eq!(cache.len(), MAX_CACHED);
        let window = CACHE_FOR.as_millis() as u64;
        cache.evict(Time(window - 1));
        assert_eq!(cache.len(), MAX_CACHED);
        cache.evict(Time(window));
        assert!(cache.is_empty());
        // peek lets them go too.
        get(&mut cache, 0, key(Route::Page, P0), "page");
        assert!(cache
            .peek(Time(window), &key(Route::ApiState, P0))
            .is_none());
        assert!(cache.is_empty());
        assert_eq!(cache.renders(), MAX_CACHED as u64 + 1);
    }

    #[test]
    fn the_cache_keeps_at_most_its_cap() {
        let mut cache = ResponseCache::new();
        for offset in 0..MAX_RENDERS_PER_SEC as usize {
            get(
                &mut cache,
                0,
                key(Route::ApiState, FilePage { offset, ..P0 }),
                "x",
            );
        }
        assert_eq!(cache.len(), MAX_CACHED);
    }
}
