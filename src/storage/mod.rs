//! The storage folder (`storage_<peer_id>/`): the files this peer holds and
//! its `metadata.json`.
//!
//! Owns everything that touches that folder, all of it blocking (the caller
//! runs it off the event loop):
//! - [`names`]: names from the network are never paths; free local names;
//! - [`atomic`]: temp files (`.partial-*`), atomic renames, fsyncs, crash
//!   leftovers;
//! - [`hashing`]: file ids (`sha256(bytes + str(timestamp))`), streamed;
//! - [`metadata`]: the metadata file, written atomically and read
//!   tolerantly (ours and the Python peers' formats);
//! - [`lock`]: one running peer per folder (`flock`);
//! - [`serving`]: opening a held file to serve it (read leases, checked
//!   reads, stamps that tell a changed file);
//! - [`stamps`]: the stamp of each held file when last verified;
//! - [`scan`]: files found in the folder at start and `push <path>` imports;
//! - [`reconcile`]: the catalog and the folder made to agree at start;
//! - [`export`]: `get <id> DEST` copies out, which never destroy anything.
//!
//! Nothing here panics on what it reads from disk.

pub mod atomic;
pub mod export;
pub mod hashing;
pub mod lock;
pub mod metadata;
pub mod names;
pub mod reconcile;
pub mod scan;
pub mod serving;
pub mod stamps;
pub mod token;
pub mod user_dir;

pub use atomic::{
    fsync_dir, remove_partials, remove_partials_except, write_atomic, PartialFile, PARTIAL_PREFIX,
};
pub use export::{check_dest, export, export_name, ExportOutcome, Refusal};
pub use hashing::{file_id_for, hash_file, FileHasher};
pub use metadata::{LoadOutcome, MetadataError, StoredEntry, METADATA_FILE};
pub use names::{sanitize_file_name, unique_name};
pub use scan::{import_file, scan_folder, ImportError};
pub use stamps::Stamps;

/// The sorted names of the entries in `dir` (tests check what a folder holds).
#[cfg(test)]
pub(crate) fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
