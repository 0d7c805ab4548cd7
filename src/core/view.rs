//! A read-only snapshot of the peer's state, for the stats page, its JSON
//! API and the menu. Built by the core on demand; nothing here is live.

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
    /// Downloads in flight.
    pub transfers: Vec<TransferView>,
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

/// One download in flight.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TransferView {
    /// Transfer number.
    pub id: u64,
    /// File being fetched.
    pub file_id: String,
    /// Its name.
    pub file_name: String,
    /// Peer we are fetching from now.
    pub source: String,
    /// File bytes received so far from this source.
    pub bytes_done: u64,
    /// Expected size in bytes, when the peer reported integer bytes.
    pub bytes_total: Option<u64>,
    /// Average rate from this source, bytes per second.
    pub rate_bytes_per_sec: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
