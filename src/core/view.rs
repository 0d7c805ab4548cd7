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
    /// The catalog, sorted by file name then id.
    pub files: Vec<FileView>,
    /// Downloads in flight.
    pub transfers: Vec<TransferView>,
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
