//! A read-only snapshot of the peer's state, for the stats page, its JSON
//! API and the menu. Built by the core on demand; nothing here is live.

use super::catalog::Entry;
use super::uploads::{eta, mean_rate};
use super::{Peer, Time};
use crate::ids::FileId;
use crate::protocol::FileSize;
use serde::Serialize;

/// Everything the stats page shows. Serialized as `/api/state`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StateView {
    /// This peer's id.
    pub peer_id: String,
    /// Host it advertises.
    pub host: String,
    /// Its P2P port.
    pub port: u16,
    /// Tracked peers, sorted by peer id.
    pub peers: Vec<PeerView>,
    /// One page of the catalog, sorted by file name then id: the files
    /// from `offset` on, at most `limit` of them.
    pub files: Vec<FileView>,
    /// Files in the whole catalog.
    pub files_total: usize,
    /// Position of `files[0]` in the whole sorted catalog.
    pub offset: usize,
    /// The most files this page holds.
    pub limit: usize,
    /// Files the search `q` matches (the whole catalog without one): the
    /// pager's total.
    pub files_matching: usize,
    /// Transfers in flight: downloads, then uploads.
    pub transfers: Vec<TransferView>,
    /// What happened lately (joins, drops, saves, failures, refusals),
    /// newest last, at most [`super::events::EVENTS_MAX`].
    pub events: Vec<EventView>,
    /// The server's clock when the view was rendered, seconds since the
    /// Unix epoch (the page shows ages and local times from it).
    pub unix_now: u64,
}

/// Which way a transfer's bytes go.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To us (a download, or a push we receive).
    Down,
    /// From us (a GET_FILE we answer, a push we send).
    Up,
}

/// Whether a transfer's bytes are moving.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// Bytes are moving (or about to, the connection being opened).
    Moving,
    /// Waiting for a free download slot.
    Queued,
    /// Waiting for a holder to be known, or between two sources.
    Waiting,
}

/// One thing that happened, as the events panel shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EventView {
    /// When, seconds since the Unix epoch.
    pub at_unix: u64,
    /// What kind of thing.
    pub kind: EventKind,
    /// One plain sentence (names come from the network: escape before
    /// showing).
    pub text: String,
}

/// The kinds of [`EventView`].
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A peer was tracked for the first time.
    PeerJoined,
    /// A peer was dropped after its silence.
    PeerDropped,
    /// A download or a push was stored.
    Saved,
    /// One source of a download failed (another may be tried).
    SourceFailed,
    /// A download ended with no source left.
    DownloadFailed,
    /// Something was refused (an unverified push, a quota).
    Refused,
    /// A file was deleted (by its owner, or by us).
    Deleted,
    /// We published a file.
    Pushed,
    /// An upload ended whole.
    UploadDone,
    /// An upload ended early.
    UploadFailed,
    /// A push we receive arrived whole.
    PushInDone,
    /// A push we receive stopped early (the sender closed, a quota).
    PushInFailed,
}

/// How the files of a view are chosen and ordered: a search and a sort.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileQuery {
    /// Case-insensitive text to find in the name, id or owner (empty: all).
    pub q: String,
    /// What to sort by.
    pub sort: SortKey,
    /// Which way.
    pub order: SortOrder,
}

/// What files are sorted by; ties go by name, then id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortKey {
    /// File name.
    #[default]
    Name,
    /// Size in bytes (sizes the peer gave as a non-integer sort by value).
    Size,
    /// Timestamp (text timestamps sort first).
    Time,
    /// Owner's peer id.
    Owner,
}

/// Ascending or descending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Smallest first.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

/// Whether `hay` contains `needle`, ignoring case. An ASCII needle (the
/// usual search) is matched without allocating, as the search looks at
/// every file of the catalog; any other is compared in lower case.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    if !needle.is_ascii() {
        return hay.to_lowercase().contains(&needle.to_lowercase());
    }
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Whether a catalog entry matches the search `q`.
fn matches(id: &FileId, e: &Entry, q: &str) -> bool {
    contains_ignore_case(&e.record.file_name, q)
        || contains_ignore_case(&id.0, q)
        || contains_ignore_case(&e.record.file_owner.0, q)
}

/// The order `query` asks for between two catalog entries.
fn compare(query: &FileQuery, a: &(&FileId, &Entry), b: &(&FileId, &Entry)) -> std::cmp::Ordering {
    let size = |e: &Entry| match &e.record.file_size {
        FileSize::Bytes(b) => *b as f64,
        FileSize::Reported(n) => n.as_f64().unwrap_or(f64::NEG_INFINITY),
    };
    let time = |e: &Entry| {
        e.record
            .file_timestamp
            .as_f64()
            .unwrap_or(f64::NEG_INFINITY)
    };
    let by_key = match query.sort {
        SortKey::Name => std::cmp::Ordering::Equal,
        SortKey::Size => size(a.1).total_cmp(&size(b.1)),
        SortKey::Time => time(a.1).total_cmp(&time(b.1)),
        SortKey::Owner => a.1.record.file_owner.0.cmp(&b.1.record.file_owner.0),
    };
    let ord = by_key.then_with(|| (&a.1.record.file_name, a.0).cmp(&(&b.1.record.file_name, b.0)));
    match query.order {
        SortOrder::Asc => ord,
        SortOrder::Desc => ord.reverse(),
    }
}

/// Which files of the sorted catalog a view holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FilePage {
    /// Files skipped from the start.
    pub offset: usize,
    /// The most files to include.
    pub limit: usize,
}

impl FilePage {
    /// The whole catalog (the menu's list).
    pub const ALL: FilePage = FilePage {
        offset: 0,
        limit: usize::MAX,
    };
    /// No file (a view for its peers, transfers and events).
    pub const NONE: FilePage = FilePage {
        offset: 0,
        limit: 0,
    };
}

/// The items of `page` in the order `cmp` gives `items`, without sorting
/// the rest: selecting a page of 100 out of 20 000 costs two linear
/// partitions and a sort of the 100.
pub fn select_page<T>(
    mut items: Vec<T>,
    page: FilePage,
    mut cmp: impl FnMut(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    let start = page.offset.min(items.len());
    if start > 0 && start < items.len() {
        items.select_nth_unstable_by(start, &mut cmp);
    }
    let mut rest = items.split_off(start);
    let n = page.limit.min(rest.len());
    if n < rest.len() {
        rest.select_nth_unstable_by(n, &mut cmp);
        rest.truncate(n);
    }
    rest.sort_by(cmp);
    rest
}

/// One tracked peer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PeerView {
    /// Its peerId (from the network: escape before showing).
    pub peer_id: String,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
    /// Whole seconds since we last heard from it.
    pub last_seen_secs_ago: u64,
    /// It serves byte ranges (as its gossip advertises).
    pub ranges: bool,
}

/// One catalog entry.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FileView {
    /// Full file id.
    pub file_id: String,
    /// Name as reported.
    pub file_name: String,
    /// Owner's peerId.
    pub file_owner: String,
    /// Size as reported (integer bytes, or the peer's float as-is).
    pub file_size: serde_json::Value,
    /// Timestamp as reported (number or string).
    pub file_timestamp: serde_json::Value,
    /// Whether we hold a copy.
    pub local: bool,
    /// Whether our copy's bytes match its id (`true` when we don't hold it).
    pub verified: bool,
    /// Peers known to hold it.
    pub peers_with_file: Vec<String>,
}

/// One transfer in flight, either way.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TransferView {
    /// Transfer number (downloads and uploads are numbered apart).
    pub id: u64,
    /// Which way the bytes go.
    pub direction: Direction,
    /// Whether its bytes are moving.
    pub state: TransferState,
    /// The other side: "peer_id (host:port)" when known, else "host:port".
    pub peer: String,
    /// Seconds left at the current rate; None when the size or the rate is
    /// unknown.
    pub eta_secs: Option<u64>,
    /// When it started (this source, for a download), seconds since the
    /// Unix epoch.
    pub started_unix: u64,
    /// File being fetched.
    pub file_id: String,
    /// Its name.
    pub file_name: String,
    /// Peer we are fetching from now (for downloads; kept for
    /// compatibility, `peer` says the same with its address).
    pub source: String,
    /// File bytes we have so far (a download's kept prefix included) or
    /// have sent.
    pub bytes_done: u64,
    /// Expected size in bytes, when the peer reported integer bytes.
    pub bytes_total: Option<u64>,
    /// Average rate from this source, bytes per second.
    pub rate_bytes_per_sec: u64,
    /// A download from several holders at once: each one's share (empty
    /// otherwise).
    pub sources: Vec<SourceView>,
}

/// One holder's part in a download from several holders at once.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SourceView {
    /// "peer_id (host:port)" when tracked, else its id.
    pub peer: String,
    /// Bytes of the pieces it sent that we kept.
    pub bytes: u64,
    /// Its rate while it had pieces in flight, bytes per second.
    pub rate_bytes_per_sec: u64,
    /// Pieces in flight from it now.
    pub in_flight: usize,
    /// `active`, `dropped` (it failed) or `excluded` (it sent bad bytes).
    pub state: &'static str,
}

impl Peer {
    /// A snapshot for the menu: every file.
    pub fn view(&self, now: Time) -> StateView {
        self.view_page(now, FilePage::ALL)
    }

    /// A snapshot for the stats page and its API: peers and transfers, and
    /// one page of files (only the page's entries are copied).
    pub fn view_page(&self, now: Time, page: FilePage) -> StateView {
        self.view_page_within(now, page, |_| true)
    }

    /// Changes whenever what a view shows changes beyond figures that
    /// merely tick (last seen, bytes done): files, holders, our copies,
    /// tracked peers, downloads started or ended. A view rendered at the
    /// same generation is the same apart from those figures.
    pub fn generation(&self) -> u64 {
        self.catalog.changes() + self.members.changes() + self.downloads.changes()
    }

    /// [`Peer::view_page`], holding the page's files only while `fits`
    /// says so (it sees each in turn; the first is always kept, and the
    /// page's `limit` then says how many it holds): a page of maximal
    /// entries is cut before it is copied.
    pub fn view_page_within(
        &self,
        now: Time,
        page: FilePage,
        fits: impl FnMut(&FileView) -> bool,
    ) -> StateView {
        self.view_query_within(now, page, &FileQuery::default(), fits)
    }

    /// [`Peer::view_page_within`] for the files `query` finds, in its
    /// order: the catalog is filtered and paged by reference (O(n) plus a
    /// sort of the page), and only the page's entries are copied.
    pub fn view_query_within(
        &self,
        now: Time,
        mut page: FilePage,
        query: &FileQuery,
        mut fits: impl FnMut(&FileView) -> bool,
    ) -> StateView {
        let found: Vec<(&FileId, &Entry)> = if query.q.is_empty() {
            self.catalog.iter().collect()
        } else {
            self.catalog
                .iter()
                .filter(|(id, e)| matches(id, e, &query.q))
                .collect()
        };
        let files_matching = found.len();
        let files: Vec<FileView> = select_page(found, page, |a, b| compare(query, a, b))
            .into_iter()
            .map(|(id, e)| FileView {
                file_id: id.0.clone(),
                file_name: e.record.file_name.clone(),
                file_owner: e.record.file_owner.0.clone(),
                file_size: e.record.file_size.to_value(),
                file_timestamp: e.record.file_timestamp.to_value(),
                local: e.local.is_some(),
                verified: e.local.as_ref().is_none_or(|l| l.verified),
                peers_with_file: e.holders.iter().map(|p| p.0.clone()).collect(),
            })
            .enumerate()
            .take_while(|(i, f)| fits(f) || *i == 0)
            .map(|(_, f)| f)
            .collect();
        if files.len() < page.limit.min(files_matching.saturating_sub(page.offset)) {
            page.limit = files.len().max(1);
        }
        StateView {
            peer_id: self.cfg.peer_id.0.clone(),
            host: self.cfg.addr.host.clone(),
            port: self.cfg.addr.port,
            peers: self.peer_views(now),
            files,
            files_total: self.catalog.len(),
            offset: page.offset,
            limit: page.limit,
            files_matching,
            transfers: self.transfer_views(now),
            events: self.events.to_vec(),
            unix_now: self.events.unix(now),
        }
    }

    /// Every tracked peer, as the view shows it.
    fn peer_views(&self, now: Time) -> Vec<PeerView> {
        self.members
            .all()
            .into_iter()
            .map(|(id, p)| PeerView {
                peer_id: id.0.clone(),
                host: p.addr.host.clone(),
                port: p.addr.port,
                last_seen_secs_ago: now.since(p.last_seen).as_secs(),
                ranges: p.ranges,
            })
            .collect()
    }

    /// What the progress line shows: the downloads in flight and the pushes
    /// we send (not the GET_FILE replies we serve, nor pushes we receive).
    pub fn progress_transfers(&self, now: Time) -> Vec<TransferView> {
        let mut v = self.download_views(now);
        v.extend(self.push_out_views(now));
        v
    }

    /// Every download in flight, then every upload and push we receive.
    fn transfer_views(&self, now: Time) -> Vec<TransferView> {
        let mut v = self.download_views(now);
        v.extend(self.upload_views(now));
        v
    }

    /// Every download in flight, with its current source's mean rate.
    fn download_views(&self, now: Time) -> Vec<TransferView> {
        self.downloads
            .iter()
            .map(|d| {
                let bytes_total = match d.record.file_size {
                    FileSize::Bytes(b) => Some(b),
                    FileSize::Reported(_) => None,
                };
                let state = match (&d.current, d.queued) {
                    (Some(_), _) => TransferState::Moving,
                    _ if d.swarm.is_some() => TransferState::Moving,
                    _ if d.waiting_since.is_some() || d.prefix_unchecked => TransferState::Waiting,
                    (None, true) => TransferState::Queued,
                    (None, false) => TransferState::Waiting,
                };
                let sources: Vec<SourceView> = d
                    .swarm
                    .iter()
                    .flat_map(|r| r.plan.shares(now))
                    .map(|s| SourceView {
                        peer: self.name_peer(&s.peer),
                        bytes: s.bytes,
                        rate_bytes_per_sec: s.rate,
                        in_flight: s.in_flight,
                        state: s.state.label(),
                    })
                    .collect();
                let (source, peer, rate, started) = match (&d.current, &d.swarm) {
                    (None, Some(run)) => {
                        let active = sources.iter().filter(|s| s.state == "active").count();
                        let rate = mean_rate(d.bytes_done, now.since(run.started));
                        let ids: Vec<String> = run
                            .plan
                            .shares(now)
                            .into_iter()
                            .filter(|s| s.state == super::swarm::SourceState::Active)
                            .map(|s| s.peer.0)
                            .collect();
                        let peer = format!("{active} holders at once");
                        (ids.join(", "), peer, rate, run.started)
                    }
                    _ => match &d.current {
                        Some((p, _, started)) => {
                            // This source's own rate: a kept prefix came before.
                            let sent = d.bytes_done.saturating_sub(d.current_from);
                            let rate = mean_rate(sent, now.since(*started));
                            let peer = self.name_peer(p);
                            (p.0.clone(), peer, rate, *started)
                        }
                        None => {
                            let s = if d.queued { "(queued)" } else { "-" }.to_string();
                            (s.clone(), s, 0, now)
                        }
                    },
                };
                TransferView {
                    id: d.id.0,
                    direction: Direction::Down,
                    state,
                    peer,
                    eta_secs: eta(d.bytes_done, bytes_total, rate),
                    started_unix: self.events.unix(started),
                    file_id: d.record.file_id.0.clone(),
                    file_name: d.record.file_name.clone(),
                    source,
                    bytes_done: d.bytes_done,
                    bytes_total,
                    rate_bytes_per_sec: rate,
                    sources,
                }
            })
            .collect()
    }

    /// "peer_id (host:port)" for a tracked peer, else its id.
    pub(crate) fn name_peer(&self, p: &crate::ids::PeerId) -> String {
        peer_name(&self.members, p)
    }
}

/// "peer_id (host:port)" for a peer tracked in `members`, else its id: how
/// logs, events and views name a peer (for use while another field of the
/// Peer is borrowed).
pub(crate) fn peer_name(members: &super::membership::Membership, p: &crate::ids::PeerId) -> String {
    match members.get(p) {
        Some(m) => format!("{p} ({})", m.addr),
        None => p.0.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::catalog::LocalCopy;
    use super::super::downloads::Download;
    use super::super::{Config, Peer, Time};
    use super::*;
    use crate::ids::{FileId, PeerAddr, PeerId, TransferId};
    use crate::protocol::{FileRecord, FileSize, Timestamp};
    use std::time::Duration;

    fn peer() -> Peer {
        let cfg = Config {
            share_unverified: true,
            ..Config::for_tests("me", PeerAddr::new("127.0.0.1", 9000))
        };
        Peer::for_tests(cfg, 1)
    }

    fn record(i: usize) -> FileRecord {
        FileRecord {
            file_name: format!("f{i:03}.txt"),
            file_size: FileSize::Bytes(3),
            file_id: FileId(format!("{i:064x}")),
            file_owner: "me".into(),
            file_timestamp: Timestamp::from_secs(1),
        }
    }

    fn local() -> LocalCopy {
        LocalCopy {
            name: "f.txt".into(),
            verified: true,
        }
    }

    #[test]
    fn the_generation_changes_with_what_the_view_shows_and_not_with_the_clock() {
        let mut p = peer();
        let mut seen = p.generation();
        let mut changed = |p: &Peer| {
            let now = p.generation();
            let was = std::mem::replace(&mut seen, now);
            now != was
        };
        let (a, at) = (PeerId::from("a"), PeerAddr::new("127.0.0.1", 9001));
        p.members.track(Time(0), &a, at.clone());
        assert!(changed(&p), "a peer tracked");
        p.members.track(Time(1_000), &a, at);
        p.members.touch(Time(2_000), &a);
        assert!(!changed(&p), "a peer heard from again");
        p.members
            .track(Time(3_000), &a, PeerAddr::new("127.0.0.1", 9002));
        assert!(changed(&p), "a peer moved");

        p.catalog.set_local(record(1), local());
        assert!(changed(&p), "a file saved");
        p.catalog.merge(&record(1), Some(&a));
        assert!(changed(&p), "a holder learnt");
        p.catalog.merge(&record(1), Some(&a));
        assert!(!changed(&p), "a holder heard of again");
        p.catalog.clear_local(&record(1).file_id);
        assert!(changed(&p), "our copy dropped");

        let id = TransferId(1);
        p.downloads.insert(Download {
            id,
            record: record(2),
            remaining: Default::default(),
            current: None,
            failures: vec![],
            failures_said: 0,
            origins: vec![],
            bytes_done: 0,
            kept: 0,
            current_from: 0,
            unverified_fallback: None,
            kept_took: None,
            queued: false,
            waiting_since: None,
            prefix_unchecked: false,
            resumed: false,
            swarm: None,
        });
        assert!(changed(&p), "a download started");
        if let Some(d) = p.downloads.get_mut(id) {
            d.bytes_done = 1_000;
        }
        assert!(!changed(&p), "a download progressed");
        p.downloads.remove(id);
        assert!(changed(&p), "a download ended");

        p.members.expire(Time(3_000_000), Duration::from_secs(60));
        assert!(changed(&p), "a peer dropped (and its files with it)");
    }

    #[test]
    fn a_page_is_cut_while_it_is_copied_and_says_how_many_it_holds() {
        let mut p = peer();
        for i in 0..10 {
            p.catalog.set_local(record(i), local());
        }
        let page = FilePage {
            offset: 2,
            limit: 5,
        };
        let mut asked = 0;
        let view = p.view_page_within(Time(0), page, |_| {
            asked += 1;
            asked <= 3
        });
        let names: Vec<&str> = view.files.iter().map(|f| f.file_name.as_str()).collect();
        assert_eq!(names, ["f002.txt", "f003.txt", "f004.txt"]);
        assert_eq!((view.offset, view.limit, view.files_total), (2, 3, 10));
        assert_eq!(asked, 4, "no file is looked at past the first refused");
        // The first file is always shown; a page that isn't cut keeps its limit.
        let one = p.view_page_within(Time(0), page, |_| false);
        assert_eq!((one.files.len(), one.limit), (1, 1));
        let whole = p.view_page_within(Time(0), page, |_| true);
        assert_eq!((whole.files.len(), whole.limit), (5, 5));
        let tail = p.view_page_within(
            Time(0),
            FilePage {
                offset: 8,
                limit: 5,
            },
            |_| true,
        );
        assert_eq!((tail.files.len(), tail.limit), (2, 5));
    }

    #[test]
    fn a_page_holds_exactly_the_items_a_full_sort_puts_there() {
        // A scrambled permutation of 0..1000 (7 is coprime with 1000).
        let items: Vec<u32> = (0..1000u32).map(|i| i * 7 % 1000).collect();
        for (offset, limit) in [
            (0, 10),
            (990, 100),
            (500, 1),
            (999, 5),
            (1000, 3),
            (5000, 3),
        ] {
            let got = select_page(items.clone(), FilePage { offset, limit }, |a, b| a.cmp(b));
            let want: Vec<u32> = (0..1000u32).skip(offset).take(limit).collect();
            assert_eq!(got, want, "offset {offset} limit {limit}");
        }
        let all = select_page(items, FilePage::ALL, |a, b| a.cmp(b));
        assert_eq!(all, (0..1000u32).collect::<Vec<_>>());
    }

    #[test]
    fn the_eta_is_known_only_with_a_size_and_a_rate() {
        assert_eq!(eta(0, Some(1000), 100), Some(10));
        assert_eq!(eta(950, Some(1000), 100), Some(1));
        assert_eq!(eta(2000, Some(1000), 100), Some(0));
        assert_eq!(eta(0, None, 100), None);
        assert_eq!(eta(0, Some(1000), 0), None);
    }

    fn named(i: usize, name: &str, size: u64, time: u64, owner: &str) -> FileRecord {
        FileRecord {
            file_name: name.into(),
            file_size: FileSize::Bytes(size),
            file_id: FileId(format!("{i:064x}")),
            file_owner: owner.into(),
            file_timestamp: Timestamp::from_secs(time),
        }
    }

    fn names(v: &StateView) -> Vec<&str> {
        v.files.iter().map(|f| f.file_name.as_str()).collect()
    }

    #[test]
    fn a_search_finds_by_name_id_or_owner_ignoring_case_and_counts_its_matches() {
        let mut p = peer();
        p.catalog
            .set_local(named(1, "Holiday.JPG", 5, 3, "alice"), local());
        p.catalog
            .set_local(named(2, "notes.txt", 9, 1, "bob"), local());
        p.catalog
            .set_local(named(0xabc, "x.bin", 7, 2, "carol"), local());
        let find = |q: &str| {
            let query = FileQuery {
                q: q.into(),
                ..FileQuery::default()
            };
            p.view_query_within(Time(0), FilePage::ALL, &query, |_| true)
        };
        assert_eq!(names(&find("holiday")), ["Holiday.JPG"]);
        assert_eq!(names(&find("BOB")), ["notes.txt"]);
        assert_eq!(names(&find("0ABC")), ["x.bin"]);
        let none = find("nothing like it");
        assert_eq!(
            (none.files.len(), none.files_matching, none.files_total),
            (0, 0, 3)
        );
        assert_eq!(find("").files_matching, 3);
    }

    #[test]
    fn files_sort_by_each_key_both_ways_with_ties_by_name() {
        let mut p = peer();
        p.catalog.set_local(named(1, "b", 5, 3, "zed"), local());
        p.catalog.set_local(named(2, "a", 9, 1, "amy"), local());
        p.catalog.set_local(named(3, "c", 5, 2, "amy"), local());
        let sorted = |sort, order| {
            let query = FileQuery {
                q: String::new(),
                sort,
                order,
            };
            let v = p.view_query_within(Time(0), FilePage::ALL, &query, |_| true);
            names(&v).concat()
        };
        assert_eq!(sorted(SortKey::Name, SortOrder::Asc), "abc");
        assert_eq!(sorted(SortKey::Name, SortOrder::Desc), "cba");
        assert_eq!(sorted(SortKey::Size, SortOrder::Asc), "bca");
        assert_eq!(sorted(SortKey::Size, SortOrder::Desc), "acb");
        assert_eq!(sorted(SortKey::Time, SortOrder::Asc), "acb");
        assert_eq!(sorted(SortKey::Owner, SortOrder::Asc), "acb");
    }

    #[test]
    fn a_search_among_20000_files_renders_one_page_quickly() {
        let mut p = peer();
        for i in 0..20_000 {
            p.catalog.set_local(
                named(i, &format!("file-{i:05}.dat"), i as u64, 1, "me"),
                local(),
            );
        }
        let query = FileQuery {
            q: "file-1999".into(),
            sort: SortKey::Size,
            order: SortOrder::Desc,
        };
        let page = FilePage {
            offset: 0,
            limit: 100,
        };
        let started = std::time::Instant::now();
        let v = p.view_query_within(Time(0), page, &query, |_| true);
        let searched = started.elapsed();
        let started = std::time::Instant::now();
        let all = p.view_query_within(Time(0), page, &FileQuery::default(), |_| true);
        let paged = started.elapsed();
        eprintln!("20 000 files: search+sort of one page {searched:?}, plain page {paged:?}");
        assert_eq!(v.files_matching, 10, "file-19990 to file-19999");
        assert_eq!(v.files[0].file_name, "file-19999.dat");
        assert_eq!((all.files.len(), all.files_matching), (100, 20_000));
    }
}
