//! Policy for a held file that changed on disk (found by the storage
//! layer at start-up or at a serve, or by a serve that could not finish):
//! it is not served until hashed again, then kept if its bytes still match
//! its id, otherwise dropped from what we hold, with one warn line. The
//! file itself is left as the user made it: it is theirs now.

use super::{Effect, Peer};
use crate::ids::FileId;
use log::{info, warn};

impl Peer {
    /// Our copy of `file` was found changed on disk: stop serving it and
    /// ask for it to be hashed again ([`Effect::Reverify`]). A copy being
    /// checked already, or one we don't hold, is left alone.
    pub fn on_local_changed(&mut self, file: &FileId) {
        let Some((record, local)) = self.local_copy(file) else {
            return;
        };
        let (record, name) = (record.clone(), local.name.clone());
        if !self.rechecking.insert(file.clone()) {
            return;
        }
        info!(
            "{name} ({}) changed on disk; not served until its bytes are checked again",
            record.file_id
        );
        self.effects.push(Effect::Reverify { record, name });
    }

    /// The copy `name` of `file`, found changed, was hashed again: kept and
    /// served again if `matches`, otherwise no longer held (not served, not
    /// listed in our GOSSIP_REPLY). A result for a copy that was replaced
    /// meanwhile (deleted, downloaded again under another name) is ignored.
    pub fn on_reverified(&mut self, file: &FileId, name: &str, matches: bool) {
        self.rechecking.remove(file);
        let Some((record, local)) = self.local_copy(file) else {
            return;
        };
        if local.name != name {
            return;
        }
        if matches {
            info!(
                "{name} ({}) still matches its id after changing on disk; served again",
                record.file_id
            );
            // So its new stamp is saved and it isn't hashed again at start.
            self.effects.push(Effect::Persist);
            return;
        }
        warn!(
            "{name} ({}) changed on disk and no longer matches its id: no longer shared \
             (the file is left as it is)",
            record.file_id
        );
        self.catalog.clear_local(file);
        self.effects.push(Effect::Persist);
    }

    /// Whether our copy of `file` waits to be hashed again.
    pub fn is_rechecking(&self, file: &FileId) -> bool {
        self.rechecking.contains(file)
    }
}

#[cfg(test)]
mod tests {
    use super::super::catalog::LocalCopy;
    use super::super::{Config, Peer};
    use super::*;
    use crate::ids::PeerAddr;
    use crate::protocol::{FileRecord, FileSize, Timestamp};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::time::Duration;

    fn holding(id: &str) -> Peer {
        let mut p = Peer::new(
            Config {
                peer_id: "me".into(),
                addr: PeerAddr::new("127.0.0.1", 9000),
                well_known: vec![],
                gossip_interval: Duration::from_secs(30),
                peer_timeout: Duration::from_secs(60),
                auto_fetch: 0,
                share_unverified: true,
            },
            SmallRng::seed_from_u64(1),
        );
        let record = FileRecord {
            file_name: "a.txt".into(),
            file_size: FileSize::Bytes(3),
            file_id: id.into(),
            file_owner: "me".into(),
            file_timestamp: Timestamp::from_secs(1),
        };
        p.catalog.set_local(
            record,
            LocalCopy {
                name: "a.txt".into(),
                verified: true,
            },
        );
        p
    }

    fn reverifies(p: &mut Peer) -> usize {
        p.take_effects()
            .iter()
            .filter(|e| matches!(e, Effect::Reverify { .. }))
            .count()
    }

    #[test]
    fn a_changed_copy_is_not_served_until_checked_and_asked_for_once() {
        let mut p = holding("aa");
        let id = FileId::from("aa");
        p.on_local_changed(&id);
        p.on_local_changed(&id);
        assert_eq!(reverifies(&mut p), 1);
        assert!(p.servable_copy(&id).is_none());
        assert!(p.local_copy(&id).is_some());
    }

    #[test]
    fn a_changed_copy_that_still_matches_is_served_again() {
        let mut p = holding("aa");
        let id = FileId::from("aa");
        p.on_local_changed(&id);
        p.on_reverified(&id, "a.txt", true);
        assert!(p.servable_copy(&id).is_some());
        assert!(!p.is_rechecking(&id));
    }

    #[test]
    fn a_changed_copy_that_no_longer_matches_is_dropped_from_what_we_hold() {
        let mut p = holding("aa");
        let id = FileId::from("aa");
        p.on_local_changed(&id);
        p.take_effects();
        p.on_reverified(&id, "a.txt", false);
        assert!(p.local_copy(&id).is_none());
        assert!(p.catalog.local_records(true).is_empty());
        let effects = p.take_effects();
        assert!(effects.iter().any(|e| matches!(e, Effect::Persist)));
        // The user's file is never deleted for it.
        assert!(!effects
            .iter()
            .any(|e| matches!(e, Effect::RemoveLocal { .. })));
    }

    #[test]
    fn a_result_for_a_copy_replaced_meanwhile_is_ignored() {
        let mut p = holding("aa");
        let id = FileId::from("aa");
        p.on_local_changed(&id);
        p.on_reverified(&id, "other.txt", false);
        assert!(p.local_copy(&id).is_some());
    }
}
