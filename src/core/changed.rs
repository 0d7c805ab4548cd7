//! Policy for a held file that changed on disk (found by the storage
//! layer at start-up or at a serve, or by a serve that could not finish):
//! it is not served until hashed again, then
//! - kept if its bytes still match its id;
//! - an unverified copy (which never matches) is kept unverified, its new
//!   stamp recorded: dropping it would let the start-up scan adopt a
//!   holder's unchecked bytes as our own file;
//! - a verified copy that no longer matches, or one gone or no longer a
//!   regular file, is dropped from what we hold, with one warn line. The
//!   file itself is left as the user made it: it is theirs now (so a later
//!   start-up scan shares it as the user's own file, like any file put in
//!   the folder);
//! - one that could not be read (EMFILE, EIO, ...) says nothing about its
//!   bytes: kept, not served, and hashed again after [`RECHECK_DELAY`].

use super::{Effect, Peer, Time, Timer};
use crate::ids::FileId;
use log::{info, warn};
use std::time::Duration;

/// How long a copy that could not be read waits before it is hashed again.
pub const RECHECK_DELAY: Duration = Duration::from_secs(60);

/// What hashing a changed copy again found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReverifyOutcome {
    /// Its bytes hash to its id.
    Matches,
    /// They don't, or they changed again while being read.
    Differs,
    /// It is gone, a symlink, or no longer a regular file.
    Gone,
    /// It could not be read (why): nothing is known about its bytes.
    Unreadable(std::io::ErrorKind),
}

/// What the driver does with the stamp taken by the reverify, as decided by
/// [`Peer::on_reverified`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampUpdate {
    /// Nothing (a stale result, or one that says nothing about the file).
    Unchanged,
    /// Record it: the copy is kept as it is now.
    Record,
    /// Forget the name's stamp: the copy is no longer held.
    Forget,
}

impl Peer {
    /// Our copy of `file` was found changed on disk: stop serving it and
    /// ask for it to be hashed again ([`Effect::Reverify`]). A copy being
    /// checked already, or one we don't hold, is left alone.
    pub fn on_local_changed(&mut self, file: &FileId) {
        self.recheck_copy(file, "changed on disk");
    }

    /// Our copy of `file` has no stamp (taken back at start-up, or held
    /// since before stamps were kept): its bytes are hashed once before it
    /// is served, rather than trusting whatever is there now.
    pub fn on_local_unstamped(&mut self, file: &FileId) {
        self.recheck_copy(file, "has not been checked since it was taken back");
    }

    fn recheck_copy(&mut self, file: &FileId, why: &str) {
        let Some((record, local)) = self.local_copy(file) else {
            return;
        };
        let (record, name) = (record.clone(), local.name.clone());
        if !self.rechecking.insert(file.clone()) {
            return;
        }
        info!(
            "{name} ({}) {why}; not served until its bytes are checked again",
            record.file_id
        );
        self.effects.push(Effect::Reverify { record, name });
    }

    /// The copy `name` of `file`, found changed, was hashed again; see the
    /// module doc for what each outcome does. A result for a copy that was
    /// replaced meanwhile (deleted, downloaded again under another name) is
    /// ignored. Says what becomes of the stamp the reverify took.
    pub fn on_reverified(
        &mut self,
        now: Time,
        file: &FileId,
        name: &str,
        outcome: ReverifyOutcome,
    ) -> StampUpdate {
        self.rechecking.remove(file);
        let Some((record, local)) = self.local_copy(file) else {
            return StampUpdate::Unchanged;
        };
        if local.name != name {
            return StampUpdate::Unchanged;
        }
        let id = record.file_id.clone();
        match outcome {
            ReverifyOutcome::Matches => {
                info!("{name} ({id}) still matches its id after changing on disk; served again");
            }
            ReverifyOutcome::Differs if !local.verified => {
                info!(
                    "{name} ({id}), an unverified copy, changed on disk; kept unverified \
                     (never shared as our own file)"
                );
            }
            ReverifyOutcome::Differs => {
                warn!(
                    "{name} ({id}) changed on disk and no longer matches its id: no longer \
                     shared (the file is left as it is)"
                );
                self.catalog.clear_local(file);
                self.effects.push(Effect::Persist);
                return StampUpdate::Forget;
            }
            ReverifyOutcome::Gone => {
                warn!("{name} ({id}) is gone or no longer a regular file: no longer shared");
                self.catalog.clear_local(file);
                self.effects.push(Effect::Persist);
                return StampUpdate::Forget;
            }
            ReverifyOutcome::Unreadable(kind) => {
                info!(
                    "cannot read {name} ({id}) to check it again ({kind}); kept, not served, \
                     checked again in {} s",
                    RECHECK_DELAY.as_secs()
                );
                self.rechecking.insert(file.clone());
                if self.recheck_later.is_empty() {
                    self.schedule(now.plus(RECHECK_DELAY), Timer::Recheck);
                }
                self.recheck_later.insert(file.clone());
                return StampUpdate::Unchanged;
            }
        }
        // Kept: its new stamp is saved, so it isn't hashed again at start.
        self.effects.push(Effect::Persist);
        StampUpdate::Record
    }

    /// [`Timer::Recheck`]: hashes again the copies that could not be read.
    pub(super) fn recheck(&mut self) {
        for file in std::mem::take(&mut self.recheck_later) {
            let Some((record, local)) = self.local_copy(&file) else {
                self.rechecking.remove(&file);
                continue;
            };
            if self.rechecking.contains(&file) {
                let (record, name) = (record.clone(), local.name.clone());
                self.effects.push(Effect::Reverify { record, name });
            }
        }
    }

    /// Whether our copy of `file` waits to be hashed again.
    pub fn is_rechecking(&self, file: &FileId) -> bool {
        self.rechecking.contains(file)
    }
}

#[cfg(test)]
mod tests {
    use super::super::catalog::LocalCopy;
    use super::super::{Config, Peer, Time, Timer};
    use super::*;
    use crate::ids::PeerAddr;
    use crate::protocol::{FileRecord, FileSize, Timestamp};

    fn holding(id: &str) -> Peer {
        let cfg = Config {
            share_unverified: true,
            ..Config::for_tests("me", PeerAddr::new("127.0.0.1", 9000))
        };
        let mut p = Peer::for_tests(cfg, 1);
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

    fn t0() -> Time {
        Time::ZERO
    }

    #[test]
    fn a_changed_copy_that_still_matches_is_served_again_with_its_new_stamp() {
        let mut p = holding("aa");
        let id = FileId::from("aa");
        p.on_local_changed(&id);
        let update = p.on_reverified(t0(), &id, "a.txt", ReverifyOutcome::Matches);
        assert_eq!(update, StampUpdate::Record);
        assert!(p.servable_copy(&id).is_some());
        assert!(!p.is_rechecking(&id));
    }

    #[test]
    fn a_changed_copy_that_no_longer_matches_is_dropped_from_what_we_hold() {
        let mut p = holding("aa");
        let id = FileId::from("aa");
        p.on_local_changed(&id);
        p.take_effects();
        let update = p.on_reverified(t0(), &id, "a.txt", ReverifyOutcome::Differs);
        assert_eq!(update, StampUpdate::Forget);
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
    fn a_result_for_a_copy_replaced_meanwhile_is_ignored_and_leaves_the_stamps() {
        let mut p = holding("aa");
        let id = FileId::from("aa");
        p.on_local_changed(&id);
        for outcome in [
            ReverifyOutcome::Matches,
            ReverifyOutcome::Differs,
            ReverifyOutcome::Gone,
        ] {
            let update = p.on_reverified(t0(), &id, "other.txt", outcome);
            assert_eq!(update, StampUpdate::Unchanged);
            assert!(p.local_copy(&id).is_some());
        }
        // Nor for a file no longer held.
        let other = FileId::from("bb");
        let update = p.on_reverified(t0(), &other, "a.txt", ReverifyOutcome::Matches);
        assert_eq!(update, StampUpdate::Unchanged);
    }

    #[test]
    fn a_copy_that_could_not_be_read_is_kept_unserved_and_hashed_again_later() {
        let mut p = holding("aa");
        let id = FileId::from("aa");
        p.on_local_changed(&id);
        p.take_effects();
        let kind = std::io::ErrorKind::Other;
        let update = p.on_reverified(t0(), &id, "a.txt", ReverifyOutcome::Unreadable(kind));
        assert_eq!(update, StampUpdate::Unchanged);
        assert!(p.local_copy(&id).is_some_and(|(_, l)| l.verified));
        assert!(p.servable_copy(&id).is_none());
        let effects = p.take_effects();
        assert!(!effects.iter().any(|e| matches!(e, Effect::Persist)));
        let at = effects.iter().find_map(|e| match e {
            Effect::Schedule {
                at,
                timer: Timer::Recheck,
            } => Some(*at),
            _ => None,
        });
        assert_eq!(at, Some(t0().plus(RECHECK_DELAY)));
        // A serve meanwhile asks for nothing more.
        p.on_local_changed(&id);
        assert_eq!(reverifies(&mut p), 0);
        p.on_timer(t0().plus(RECHECK_DELAY), Timer::Recheck);
        assert_eq!(reverifies(&mut p), 1);
        p.on_reverified(t0(), &id, "a.txt", ReverifyOutcome::Matches);
        assert!(p.servable_copy(&id).is_some());
    }

    /// A peer holding an unverified copy of `id` (as `a.txt`).
    fn holding_unverified(id: &str) -> (Peer, FileId) {
        let mut p = holding(id);
        let id = FileId::from(id);
        let record = p.local_copy(&id).unwrap().0.clone();
        p.catalog.set_local(
            record,
            LocalCopy {
                name: "a.txt".into(),
                verified: false,
            },
        );
        (p, id)
    }

    #[test]
    fn a_changed_unverified_copy_is_kept_unverified_with_its_new_stamp() {
        let (mut p, id) = holding_unverified("aa");
        p.on_local_changed(&id);
        p.take_effects();
        let update = p.on_reverified(t0(), &id, "a.txt", ReverifyOutcome::Differs);
        assert_eq!(update, StampUpdate::Record);
        // Still held (so never adopted as our own at start), still
        // unverified, served again only because this peer shares unverified.
        assert!(p.local_copy(&id).is_some_and(|(_, l)| !l.verified));
        assert!(p.servable_copy(&id).is_some());
        assert!(p
            .take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Persist)));
    }

    #[test]
    fn a_copy_gone_from_the_folder_is_no_longer_held_even_unverified() {
        let (mut p, id) = holding_unverified("aa");
        p.on_local_changed(&id);
        let update = p.on_reverified(t0(), &id, "a.txt", ReverifyOutcome::Gone);
        assert_eq!(update, StampUpdate::Forget);
        assert!(p.local_copy(&id).is_none());
    }

    #[test]
    fn a_copy_never_stamped_is_hashed_once_before_it_is_served() {
        let mut p = holding("aa");
        let id = FileId::from("aa");
        p.on_local_unstamped(&id);
        assert_eq!(reverifies(&mut p), 1);
        assert!(p.servable_copy(&id).is_none());
        let update = p.on_reverified(t0(), &id, "a.txt", ReverifyOutcome::Matches);
        assert_eq!(update, StampUpdate::Record);
        assert!(p.servable_copy(&id).is_some());
    }
}
