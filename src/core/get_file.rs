//! The answer to a GET_FILE: serve our copy, say not-found, or refuse
//! because too many FILE_DATAs are streaming. The driver only opens the
//! file and streams it; what to answer is decided here.

use super::catalog::LocalCopy;
use super::Peer;
use crate::ids::FileId;
use crate::protocol::{ByteRange, FileRecord};

/// Most FILE_DATA streams (replies to GET_FILE and our pushes) at once.
/// Each holds a chunk of hex (512 KiB) until its reader takes it; without a
/// cap, a thousand clients that ask for a large file and read nothing would
/// hold 512 MiB (measured: 400 such clients, 205 MiB). Past it a GET_FILE
/// connection is closed unanswered, which the network's clients (ours
/// included) treat as a failed source.
pub const MAX_FILE_STREAMS: usize = 32;

/// What to do with a GET_FILE.
#[derive(Clone, Debug, PartialEq)]
pub enum GetFileAnswer {
    /// Open our copy and send it (the driver replies not-found if the copy
    /// can't be opened or no longer looks as it did when verified).
    Serve {
        /// The file's record, sent in the FILE_DATA header.
        record: FileRecord,
        /// Our copy in the folder.
        local: LocalCopy,
        /// Only these bytes (clamped to the file as opened), with the range
        /// fields in the reply; `None`: the whole file, as today. Ranges
        /// take the same stream slots as whole files.
        range: Option<ByteRange>,
    },
    /// No copy we may spread: reply with the not-found FILE_DATA.
    NotHeld,
    /// Already `streams` FILE_DATAs in flight: close the connection
    /// unanswered (the asker tries another source).
    Busy {
        /// FILE_DATA streams in flight when asked.
        streams: usize,
    },
}

impl Peer {
    /// How to answer a GET_FILE for `file_id` while `streams` FILE_DATAs
    /// are being sent. The cap comes first: a refused request costs no
    /// catalog look-up and opens nothing.
    pub fn answer_get_file(&self, file_id: &FileId, streams: usize) -> GetFileAnswer {
        self.answer_ranged_get_file(file_id, None, streams)
    }

    /// How to answer a GET_FILE that may carry a byte range. The range
    /// changes only which bytes go out: who may be served, and the cap,
    /// are those of a whole-file request (a range is one more stream).
    pub fn answer_ranged_get_file(
        &self,
        file_id: &FileId,
        range: Option<ByteRange>,
        streams: usize,
    ) -> GetFileAnswer {
        if streams >= MAX_FILE_STREAMS {
            return GetFileAnswer::Busy { streams };
        }
        match self.servable_copy(file_id) {
            Some((record, local)) => GetFileAnswer::Serve {
                record: record.clone(),
                local: local.clone(),
                range,
            },
            None => GetFileAnswer::NotHeld,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::catalog::Entry;
    use crate::core::Config;
    use crate::ids::PeerAddr;
    use crate::protocol::message::{FileSize, Timestamp};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::time::Duration;

    fn peer(share_unverified: bool) -> Peer {
        Peer::new(
            Config {
                peer_id: "me".into(),
                addr: PeerAddr::new("127.0.0.1", 9000),
                well_known: vec![],
                gossip_interval: Duration::from_secs(30),
                peer_timeout: Duration::from_secs(60),
                auto_fetch: 0,
                share_unverified,
            },
            SmallRng::seed_from_u64(1),
        )
    }

    fn record(i: u8) -> FileRecord {
        FileRecord {
            file_name: format!("f{i}.txt"),
            file_size: FileSize::Bytes(3),
            file_id: FileId(format!("{i:064x}")),
            file_owner: "me".into(),
            file_timestamp: Timestamp::from_secs(1),
        }
    }

    fn holding(p: &mut Peer, r: &FileRecord, verified: bool) -> LocalCopy {
        let local = LocalCopy {
            name: r.file_name.clone(),
            verified,
        };
        assert!(p.load_entry(Entry {
            record: r.clone(),
            holders: Default::default(),
            local: Some(local.clone()),
        }));
        local
    }

    #[test]
    fn a_held_verified_file_is_served_with_its_record_and_copy() {
        let mut p = peer(false);
        let r = record(1);
        let local = holding(&mut p, &r, true);
        assert_eq!(
            p.answer_get_file(&r.file_id, 0),
            GetFileAnswer::Serve {
                record: r,
                local,
                range: None
            }
        );
    }

    #[test]
    fn a_file_we_do_not_hold_is_not_found() {
        let p = peer(false);
        assert_eq!(
            p.answer_get_file(&record(2).file_id, 0),
            GetFileAnswer::NotHeld
        );
    }

    #[test]
    fn an_unverified_copy_is_not_found_unless_sharing_unverified() {
        let mut strict = peer(false);
        let r = record(3);
        holding(&mut strict, &r, false);
        assert_eq!(
            strict.answer_get_file(&r.file_id, 0),
            GetFileAnswer::NotHeld
        );
        let mut lax = peer(true);
        let local = holding(&mut lax, &r, false);
        assert_eq!(
            lax.answer_get_file(&r.file_id, 0),
            GetFileAnswer::Serve {
                record: r,
                local,
                range: None
            }
        );
    }

    #[test]
    fn at_the_stream_cap_even_a_held_file_is_refused() {
        let mut p = peer(false);
        let r = record(4);
        let local = holding(&mut p, &r, true);
        assert_eq!(
            p.answer_get_file(&r.file_id, MAX_FILE_STREAMS - 1),
            GetFileAnswer::Serve {
                record: r.clone(),
                local,
                range: None
            }
        );
        assert_eq!(
            p.answer_get_file(&r.file_id, MAX_FILE_STREAMS),
            GetFileAnswer::Busy {
                streams: MAX_FILE_STREAMS
            }
        );
        assert_eq!(
            p.answer_get_file(&record(5).file_id, MAX_FILE_STREAMS + 3),
            GetFileAnswer::Busy {
                streams: MAX_FILE_STREAMS + 3
            }
        );
    }

    #[test]
    fn a_ranged_request_for_a_held_file_is_served_with_its_range() {
        let mut p = peer(false);
        let r = record(6);
        let local = holding(&mut p, &r, true);
        let range = Some(ByteRange {
            offset: 2,
            length: Some(1),
        });
        assert_eq!(
            p.answer_ranged_get_file(&r.file_id, range, 0),
            GetFileAnswer::Serve {
                record: r,
                local,
                range
            }
        );
    }

    #[test]
    fn a_ranged_request_obeys_the_same_rules_as_a_whole_file_one() {
        let mut strict = peer(false);
        let r = record(7);
        holding(&mut strict, &r, false);
        let range = Some(ByteRange {
            offset: 0,
            length: None,
        });
        assert_eq!(
            strict.answer_ranged_get_file(&r.file_id, range, 0),
            GetFileAnswer::NotHeld
        );
        let mut held = peer(false);
        holding(&mut held, &r, true);
        assert_eq!(
            held.answer_ranged_get_file(&r.file_id, range, MAX_FILE_STREAMS),
            GetFileAnswer::Busy {
                streams: MAX_FILE_STREAMS
            }
        );
    }
}
