//! Download planning: which source to try next, what failed and why, and
//! who is waiting for the result.
//!
//! Sans-IO: a download asks the driver to fetch from one source at a time
//! (an attempt number guards against stale results), and moves on when told
//! the attempt failed.

use crate::core::time::Time;
use crate::ids::{FileId, PeerId, TransferId};
use crate::protocol::decoder::DataField;
use crate::protocol::{FileRecord, FileSize, Message, ParseError, Timestamp};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Most downloads running at once; more are queued.
pub const MAX_ACTIVE_DOWNLOADS: usize = 8;

/// Auto-fetch runs at most this many downloads at a time.
pub const AUTO_FETCH_PARALLEL: usize = 2;

/// Where the menu's `get` copies a file once it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    /// The path the user typed.
    pub path: PathBuf,
    /// The user said `--force`: an existing regular file may be replaced.
    pub force: bool,
}

/// Who asked for a download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The menu's `get`, with an optional destination to copy to.
    Menu(Option<Dest>),
    /// Start-up auto-fetch.
    Auto,
}

/// One download.
#[derive(Debug)]
pub struct Download {
    /// Its id.
    pub id: TransferId,
    /// The file.
    pub record: FileRecord,
    /// Sources not tried yet, best first.
    pub remaining: VecDeque<PeerId>,
    /// The source being tried, its attempt number and when it started.
    pub current: Option<(PeerId, u64, Time)>,
    /// Each failed source and why.
    pub failures: Vec<(PeerId, super::SourceFailure)>,
    /// How many of `failures` the menu or log has said.
    pub failures_said: usize,
    /// Who is waiting.
    pub origins: Vec<Origin>,
    /// Bytes of the file we have: the kept prefix and what the current
    /// source sent after it.
    pub bytes_done: u64,
    /// Bytes the driver kept from sources that were cut (the file's first
    /// bytes, and their hash): the next source that serves ranges sends
    /// only the rest.
    pub kept: u64,
    /// Where the current attempt started in the file (its ranged request's
    /// offset; 0 for the whole file).
    pub current_from: u64,
    /// Whether the driver holds a complete copy that failed verification:
    /// who sent it and how long that attempt took (its save's figures).
    pub unverified_fallback: Option<(PeerId, Duration)>,
    /// How long the attempt whose bytes are being kept took, once the
    /// unverified fallback is being stored (the time since is not transfer).
    pub kept_took: Option<Duration>,
    /// Whether it is waiting for a free slot.
    pub queued: bool,
    /// Resumed from the last run: since when it waits for a holder to be
    /// known (none are right after a start).
    pub waiting_since: Option<Time>,
    /// Resumed from the last run, its kept bytes not hashed again yet: it
    /// waits (and holds the file, so nothing else starts it).
    pub prefix_unchecked: bool,
    /// Resumed from the last run (not part of this run's auto-fetch batch).
    pub resumed: bool,
    /// Fetched from several holders at once (see [`super::swarm`]).
    pub swarm: Option<SwarmRun>,
}

/// A download's pieces in flight from several holders, and its whole-file
/// check.
#[derive(Debug)]
pub struct SwarmRun {
    /// The piece planner.
    pub plan: super::swarm::Swarm,
    /// The attempt number of the whole-file check in progress.
    pub verify: Option<u64>,
    /// When the swarm began (for the saved line's figures).
    pub started: Time,
}

impl Download {
    /// Whether this download was started by auto-fetch only.
    pub fn is_auto(&self) -> bool {
        self.origins.iter().all(|o| *o == Origin::Auto)
    }

    /// Whether `n` bytes can be the start of the file: no more than its
    /// advertised size allows.
    pub fn can_be_prefix(&self, n: u64) -> bool {
        size_upper_bound(&self.record.file_size).is_none_or(|max| n <= max)
    }

    /// One phrase per failed source and why: "alice timed out before the
    /// first byte, bob sent bytes that don't match the id".
    pub fn failure_summary(&self) -> String {
        if self.failures.is_empty() {
            return "no reachable source".into();
        }
        self.failures
            .iter()
            .map(|(p, why)| format!("{p} {why}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The figures of a save of `len` bytes whose transfer took `took`:
/// `in 1.2 s (3.4 MiB/s)`, `in 35 ms (2.9 MiB/s)`; below a millisecond
/// (one tick of the core's clock) no rate is claimed: `in under 1 ms`.
pub fn save_figures(len: u64, took: Duration) -> String {
    let rate = |secs: f64| crate::units::rate((len as f64 / secs) as u64);
    if took < Duration::from_millis(1) {
        "in under 1 ms".into()
    } else if took < Duration::from_secs(1) {
        let secs = took.as_secs_f64();
        format!("in {} ms ({})", took.as_millis(), rate(secs))
    } else {
        let secs = took.as_secs_f64();
        format!("in {secs:.1} s ({})", rate(secs))
    }
}

/// Why a source's reply to GET_FILE was refused. Its Display is the reason
/// shown to the user (after the source's name); none of these changes what
/// we hold: the source is given up and the next one tried.
#[derive(Clone, Debug, PartialEq)]
pub enum BadReply {
    /// Another message kind came back.
    NotFileData(&'static str),
    /// The reply's header did not parse.
    Malformed(ParseError),
    /// The source says it does not have the file.
    NotFound,
    /// The reply names another file id.
    OtherFile(FileId),
    /// The reply carries no data.
    NoData,
    /// `sent` bytes, when the catalog says exactly `advertised`.
    WrongSize {
        /// Bytes in the reply.
        sent: u64,
        /// Bytes the catalog gives.
        advertised: u64,
    },
    /// The reply is a range starting at `got`, not at the `asked` offset.
    WrongRange {
        /// The offset asked for.
        asked: u64,
        /// The reply's offset.
        got: u64,
    },
    /// A piece was asked for and the reply is not that range (a whole
    /// file, or another length).
    NotThePiece {
        /// The piece's offset and length.
        asked: (u64, u64),
        /// The reply's range, if it has one, and its data bytes.
        got: (Option<u64>, u64),
    },
    /// `sent` bytes, beyond any rounding of the size a peer reported.
    BeyondRounding {
        /// Bytes in the reply.
        sent: u64,
        /// The size as reported.
        advertised: FileSize,
    },
}

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadReply::NotFileData(kind) => write!(f, "replied {kind} instead of FILE_DATA"),
            BadReply::Malformed(e) => write!(f, "malformed reply: {e}"),
            BadReply::NotFound => write!(f, "does not have the file (not-found reply)"),
            BadReply::OtherFile(id) => write!(f, "sent a different file ({id})"),
            BadReply::NoData => write!(f, "reply has no data"),
            BadReply::WrongSize { sent, advertised } => {
                write!(f, "sent {sent} bytes, not the advertised {advertised}")
            }
            BadReply::WrongRange { asked, got } => {
                write!(
                    f,
                    "sent bytes from {got} on, not from the {asked} asked for"
                )
            }
            BadReply::NotThePiece { asked, got } => match got.0 {
                Some(offset) => write!(
                    f,
                    "sent {} bytes from {offset}, not the {} from {} asked for",
                    got.1, asked.1, asked.0
                ),
                None => write!(
                    f,
                    "sent the whole file ({} bytes), not the {} from {} asked for",
                    got.1, asked.1, asked.0
                ),
            },
            BadReply::BeyondRounding { sent, advertised } => write!(
                f,
                "sent {sent} bytes, beyond the rounding of the advertised {advertised}"
            ),
        }
    }
}

/// The timestamps a download's bytes are hashed with to verify them against
/// the id: the catalog's, then the reply's own (a peer may have written it
/// another way); each in every spelling `FileHasher::matches` tries. A
/// download verifies if any of them gives the id.
pub fn verifying_timestamps<'a>(
    record: &'a FileRecord,
    reply_ts: Option<&'a Timestamp>,
) -> impl Iterator<Item = &'a Timestamp> {
    std::iter::once(&record.file_timestamp).chain(reply_ts)
}

/// Judges a complete reply to GET_FILE against the file we asked for, from
/// byte `asked_from` on (0: the whole file). `Ok` gives the length of the
/// file it completes (a range's offset plus its bytes; a whole-file answer
/// to a ranged request, from a peer that ignores ranges, is the whole
/// file) and the reply's own timestamp (the id is verified under the
/// catalog's timestamp and this one); `Err` is why this source failed.
/// The bytes themselves are the driver's: it hashes them on the way in.
pub fn judge_reply(
    requested: &FileRecord,
    reply: Result<Message, ParseError>,
    data: DataField,
    asked_from: u64,
) -> Result<(u64, Option<Timestamp>), BadReply> {
    let (header, sent) = file_data_for(requested, reply, data)?;
    let len = match header.range {
        Some(r) if r.offset != asked_from => {
            return Err(BadReply::WrongRange {
                asked: asked_from,
                got: r.offset,
            })
        }
        Some(r) => r.offset.saturating_add(sent),
        None => sent,
    };
    if !size_matches(&requested.file_size, len) {
        return Err(match requested.file_size {
            FileSize::Bytes(n) => BadReply::WrongSize {
                sent: len,
                advertised: n,
            },
            ref reported => BadReply::BeyondRounding {
                sent: len,
                advertised: reported.clone(),
            },
        });
    }
    Ok((len, header.file_timestamp))
}

/// Whether a complete reply refused as `bad` is taken all the same: a
/// whole file (not a `ranged` reply) of another size than claimed whose
/// bytes match the id (`matches_id`, asked only then). The id is the
/// authority; a size is only a claim (a peer that heard another first, or
/// lied, can't make the true file unfetchable).
pub fn id_overrules_size(bad: &BadReply, ranged: bool, matches_id: impl FnOnce() -> bool) -> bool {
    matches!(bad, BadReply::WrongSize { .. }) && !ranged && matches_id()
}

/// A reply's FILE_DATA header and its data bytes, if it is a FILE_DATA
/// with data for the file asked for.
fn file_data_for(
    requested: &FileRecord,
    reply: Result<Message, ParseError>,
    data: DataField,
) -> Result<(crate::protocol::FileDataHeader, u64), BadReply> {
    let header = match reply {
        Ok(Message::FileData(h)) => h,
        Ok(other) => return Err(BadReply::NotFileData(other.kind())),
        Err(e) => return Err(BadReply::Malformed(e)),
    };
    let Some(id) = header.file_id.as_ref() else {
        return Err(BadReply::NotFound);
    };
    if !id.0.eq_ignore_ascii_case(&requested.file_id.0) {
        return Err(BadReply::OtherFile(id.clone()));
    }
    let sent = match data {
        DataField::Bytes { len } => len,
        DataField::Null | DataField::Absent => return Err(BadReply::NoData),
    };
    Ok((header, sent))
}

/// Judges a complete reply to a piece's GET_FILE (`piece`: its offset and
/// length): a FILE_DATA for the file, carrying exactly that range.
pub fn judge_piece(
    requested: &FileRecord,
    reply: Result<Message, ParseError>,
    data: DataField,
    piece: (u64, u64),
) -> Result<(), BadReply> {
    let (header, sent) = file_data_for(requested, reply, data)?;
    let offset = header.range.map(|r| r.offset);
    if offset != Some(piece.0) || sent != piece.1 {
        return Err(BadReply::NotThePiece {
            asked: piece,
            got: (offset, sent),
        });
    }
    Ok(())
}

/// Megabytes a float size may be counted in (Python peers divide by one
/// or the other).
const MB_UNITS: [f64; 2] = [1e6, 1_048_576.0];

/// A float size figure as printed: its value and half a unit of its last
/// printed digit (`2.2` -> 0.05, `2.8e-05` -> 5e-7, `123.0` -> 0.05).
/// `None` for a figure that is not a finite number of at least zero.
fn figure(text: &str) -> Option<(f64, f64)> {
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, d)| d.len());
    let decimals = i32::try_from(decimals).ok()?;
    Some((value, 0.5 * 10f64.powi(exp.saturating_sub(decimals))))
}

/// The byte counts a float figure allows in one unit, widened by a hair
/// for the float arithmetic (an unrounded figure like `1.7906866073608398`
/// names one count exactly, give or take its last bit).
fn span(value: f64, half: f64, unit: f64) -> (f64, f64) {
    let (lo, hi) = ((value - half) * unit, (value + half) * unit);
    let slack = hi.abs() * 1e-12 + 1e-6;
    (lo - slack, hi + slack)
}

/// Whether a reply of `len` bytes agrees with the advertised size: integer
/// bytes exactly; a float figure (megabytes, from Python peers) within
/// half a unit of its last printed digit, in MB of 10^6 or 2^20 bytes, or,
/// a whole-number figure, equal to the byte count (`123.0` for 123 bytes).
/// A figure that is not a number of at least zero allows nothing.
pub fn size_matches(advertised: &FileSize, len: u64) -> bool {
    let number = match advertised {
        FileSize::Bytes(n) => return *n == len,
        FileSize::Reported(number) => number,
    };
    let Some((value, half)) = figure(&number.to_string()) else {
        return false;
    };
    let n = len as f64;
    if value.fract() == 0.0 && value == n {
        return true;
    }
    MB_UNITS.iter().any(|&unit| {
        let (lo, hi) = span(value, half, unit);
        lo <= n && n <= hi
    })
}

/// The most bytes a reply may hold for the advertised size (what
/// [`size_matches`] could accept), so a download can stop reading there;
/// `None` when the figure bounds nothing we can count.
pub fn size_upper_bound(advertised: &FileSize) -> Option<u64> {
    let number = match advertised {
        FileSize::Bytes(n) => return Some(*n),
        FileSize::Reported(number) => number,
    };
    let Some((value, half)) = figure(&number.to_string()) else {
        return Some(0);
    };
    let top = MB_UNITS
        .iter()
        .map(|&unit| span(value, half, unit).1)
        .fold(value, f64::max)
        .floor();
    // Beyond u64 (or 2^53, where floats skip integers) the figure bounds
    // nothing the caller's own limits don't already.
    (top < 9.0e15).then_some(top as u64)
}

/// Every download in flight, keyed by id.
#[derive(Debug, Default)]
pub struct Downloads {
    active: BTreeMap<TransferId, Download>,
    next_id: u64,
    next_attempt: u64,
    /// Bumped when a download starts or ends, so a view rendered before
    /// can tell (progress within one is not counted).
    changes: u64,
}

impl Downloads {
    /// No downloads.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh transfer id.
    pub fn next_id(&mut self) -> TransferId {
        self.next_id += 1;
        TransferId(self.next_id)
    }

    /// A fresh attempt number (never reused, so stale results are ignored).
    pub fn next_attempt(&mut self) -> u64 {
        self.next_attempt += 1;
        self.next_attempt
    }

    /// The download of `file`, if any.
    pub fn by_file(&self, file: &FileId) -> Option<TransferId> {
        self.active
            .values()
            .find(|d| &d.record.file_id == file)
            .map(|d| d.id)
    }

    /// Adds a download.
    pub fn insert(&mut self, d: Download) {
        self.changes += 1;
        self.active.insert(d.id, d);
    }

    /// One download.
    pub fn get(&self, id: TransferId) -> Option<&Download> {
        self.active.get(&id)
    }

    /// One download, mutable.
    pub fn get_mut(&mut self, id: TransferId) -> Option<&mut Download> {
        self.active.get_mut(&id)
    }

    /// Ends a download.
    pub fn remove(&mut self, id: TransferId) -> Option<Download> {
        self.changes += 1;
        self.active.remove(&id)
    }

    /// How many times a download started or ended (never goes back).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Every download, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Download> {
        self.active.values()
    }

    /// Downloads currently fetching (not queued).
    pub fn running(&self) -> usize {
        self.active.values().filter(|d| !d.queued).count()
    }

    /// Auto-fetch downloads currently fetching.
    pub fn running_auto(&self) -> usize {
        self.active
            .values()
            .filter(|d| !d.queued && d.is_auto())
            .count()
    }

    /// The oldest queued download that may start now, given the caps.
    pub fn next_queued(&self) -> Option<TransferId> {
        if self.running() >= MAX_ACTIVE_DOWNLOADS {
            return None;
        }
        let auto_room = self.running_auto() < AUTO_FETCH_PARALLEL;
        self.active
            .values()
            .find(|d| d.queued && d.waiting_since.is_none() && (auto_room || !d.is_auto()))
            .map(|d| d.id)
    }

    /// Number of downloads, running or queued.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FileDataHeader, FileSize};

    fn wanted() -> FileRecord {
        FileRecord {
            file_name: "x".into(),
            file_size: FileSize::Bytes(3),
            file_id: "abc".into(),
            file_owner: "o".into(),
            file_timestamp: Timestamp::from_secs(1),
        }
    }

    fn reply(id: Option<&str>) -> Result<Message, ParseError> {
        Ok(Message::FileData(FileDataHeader {
            file_id: id.map(Into::into),
            file_timestamp: Some(Timestamp::from_secs(2)),
            ..FileDataHeader::default()
        }))
    }

    fn reported(text: &str) -> FileSize {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Number(n)) => FileSize::Reported(n),
            other => panic!("not a number: {text} ({other:?})"),
        }
    }

    /// Every count in `lo..=hi` matches and the ones just outside don't.
    fn accepts_exactly(size: &FileSize, lo: u64, hi: u64) {
        for n in lo..=hi {
            assert!(size_matches(size, n), "{size:?} must accept {n}");
        }
        if lo > 0 {
            assert!(
                !size_matches(size, lo - 1),
                "{size:?} must refuse {}",
                lo - 1
            );
        }
        assert!(
            !size_matches(size, hi + 1),
            "{size:?} must refuse {}",
            hi + 1
        );
    }

    #[test]
    fn save_figures_are_true_and_never_claim_a_rate_for_no_time() {
        assert_eq!(save_figures(1000, Duration::ZERO), "in under 1 ms");
        assert_eq!(
            save_figures(1_000_000, Duration::from_millis(250)),
            "in 250 ms (3.8 MiB/s)"
        );
        assert_eq!(
            save_figures(30_000_000, Duration::from_millis(2_500)),
            "in 2.5 s (11.4 MiB/s)"
        );
    }

    #[test]
    fn an_exact_size_allows_exactly_that_many_bytes() {
        let size = FileSize::Bytes(1000);
        assert!(size_matches(&size, 1000));
        assert!(!size_matches(&size, 999), "one byte short");
        assert!(!size_matches(&size, 1001), "one byte long");
        assert!(size_matches(&FileSize::Bytes(0), 0));
        assert!(!size_matches(&FileSize::Bytes(0), 1));
        assert_eq!(size_upper_bound(&size), Some(1000));
    }

    #[test]
    fn a_figure_in_mb_allows_the_rounding_of_its_last_digit() {
        // 2.2: 2.15..=2.25 MB of 10^6 bytes, or of 2^20 bytes.
        let size = reported("2.2");
        assert!(size_matches(&size, 2_150_000));
        assert!(size_matches(&size, 2_200_000));
        assert!(size_matches(&size, 2_306_867)); // 2.2 MiB
        assert!(size_matches(&size, 2_359_296)); // 2.25 MiB, the edge
        assert!(!size_matches(&size, 2_149_999));
        assert!(!size_matches(&size, 2_359_297));
        assert!(!size_matches(&size, 10_000_000));
        assert_eq!(size_upper_bound(&size), Some(2_359_296));
    }

    #[test]
    fn a_zero_figure_allows_small_files_only() {
        let size = reported("0.0");
        accepts_exactly(&size, 0, 52_428); // under 0.05 MiB
        assert_eq!(size_upper_bound(&size), Some(52_428));
    }

    #[test]
    fn an_unrounded_figure_names_its_byte_count() {
        // 1877671 / 2^20, as Python prints it (no count of 10^6-byte MB
        // gives it).
        let size = reported("1.7906866073608398");
        accepts_exactly(&size, 1_877_671, 1_877_671);
        assert_eq!(size_upper_bound(&size), Some(1_877_671));
    }

    #[test]
    fn an_exponent_figure_allows_the_rounding_of_its_mantissa() {
        // 2.8e-05 MB: 27.5..=28.5 bytes (10^6) or 28.8..=29.9 bytes (2^20).
        let size = reported("2.8e-05");
        accepts_exactly(&size, 28, 29);
        assert_eq!(size_upper_bound(&size), Some(29));
        let upper = reported("2.8E-05");
        assert!(size_matches(&upper, 29));
    }

    #[test]
    fn a_whole_number_figure_may_be_the_byte_count() {
        let size = reported("123.0");
        assert!(size_matches(&size, 123));
        assert!(size_matches(&size, 123_000_000)); // 123.0 MB
        assert!(!size_matches(&size, 122));
        assert!(!size_matches(&size, 124));
        assert!(!size_matches(&size, 1_000));
    }

    #[test]
    fn a_negative_figure_allows_nothing() {
        let size = reported("-1.5");
        assert!(!size_matches(&size, 0));
        assert!(!size_matches(&size, 1_500_000));
        assert_eq!(size_upper_bound(&size), Some(0));
    }

    #[test]
    fn a_huge_figure_bounds_nothing() {
        assert_eq!(size_upper_bound(&reported("1e300")), None);
    }

    #[test]
    fn only_a_whole_copy_whose_bytes_match_the_id_overrules_a_size_claim() {
        let size = BadReply::WrongSize {
            sent: 12,
            advertised: 16,
        };
        assert!(id_overrules_size(&size, false, || true));
        assert!(!id_overrules_size(&size, false, || false));
        assert!(
            !id_overrules_size(&size, true, || true),
            "a range is no whole copy"
        );
        let other = BadReply::OtherFile("x".into());
        assert!(
            !id_overrules_size(&other, false, || panic!("not hashed for other refusals")),
            "only a size refusal"
        );
    }

    #[test]
    fn a_reply_of_the_wrong_size_fails_that_source() {
        let long = judge_reply(
            &wanted(),
            reply(Some("abc")),
            DataField::Bytes { len: 4 },
            0,
        );
        let long = long.unwrap_err();
        assert_eq!(
            long,
            BadReply::WrongSize {
                sent: 4,
                advertised: 3
            }
        );
        assert_eq!(long.to_string(), "sent 4 bytes, not the advertised 3");
        let short = judge_reply(
            &wanted(),
            reply(Some("abc")),
            DataField::Bytes { len: 2 },
            0,
        );
        assert_eq!(
            short.unwrap_err().to_string(),
            "sent 2 bytes, not the advertised 3"
        );
        let mut mb = wanted();
        mb.file_size = reported("0.0");
        let far = judge_reply(
            &mb,
            reply(Some("abc")),
            DataField::Bytes { len: 1 << 20 },
            0,
        );
        let far = far.unwrap_err();
        assert!(matches!(
            far,
            BadReply::BeyondRounding {
                sent: 1_048_576,
                ..
            }
        ));
        assert_eq!(
            far.to_string(),
            "sent 1048576 bytes, beyond the rounding of the advertised 0.0 MB?"
        );
        assert!(judge_reply(&mb, reply(Some("abc")), DataField::Bytes { len: 3 }, 0).is_ok());
    }

    #[test]
    fn replies_are_judged_against_the_file_asked_for() {
        let bytes = DataField::Bytes { len: 3 };
        assert_eq!(
            judge_reply(&wanted(), reply(Some("ABC")), bytes, 0),
            Ok((3, Some(Timestamp::from_secs(2))))
        );
        let not_found = judge_reply(&wanted(), reply(None), bytes, 0).unwrap_err();
        assert_eq!(not_found, BadReply::NotFound);
        assert!(not_found.to_string().contains("not-found"));
        let other = judge_reply(&wanted(), reply(Some("zzz")), bytes, 0).unwrap_err();
        assert_eq!(other, BadReply::OtherFile("zzz".into()));
        assert_eq!(other.to_string(), "sent a different file (zzz)");
        let empty = judge_reply(&wanted(), reply(Some("abc")), DataField::Null, 0).unwrap_err();
        assert_eq!(empty, BadReply::NoData);
        assert_eq!(empty.to_string(), "reply has no data");
        let other = Ok(Message::GetFile {
            file_id: "abc".into(),
            range: None,
        });
        let kind = judge_reply(&wanted(), other, bytes, 0).unwrap_err();
        assert_eq!(kind, BadReply::NotFileData("GET_FILE"));
        assert_eq!(kind.to_string(), "replied GET_FILE instead of FILE_DATA");
    }

    #[test]
    fn a_ranged_reply_completes_the_file_from_the_offset_asked_for() {
        let ranged = |offset| {
            Ok(Message::FileData(FileDataHeader {
                file_id: Some("abc".into()),
                range: Some(crate::protocol::ByteRange {
                    offset,
                    length: Some(1),
                }),
                ..FileDataHeader::default()
            }))
        };
        let one = DataField::Bytes { len: 1 };
        // Bytes 2.. of a 3-byte file: the file is complete.
        assert_eq!(judge_reply(&wanted(), ranged(2), one, 2), Ok((3, None)));
        // Another offset than asked: refused, and said so.
        let wrong = judge_reply(&wanted(), ranged(1), one, 2).unwrap_err();
        assert_eq!(wrong, BadReply::WrongRange { asked: 2, got: 1 });
        assert_eq!(
            wrong.to_string(),
            "sent bytes from 1 on, not from the 2 asked for"
        );
        // A range we never asked for is refused too.
        assert!(judge_reply(&wanted(), ranged(2), one, 0).is_err());
        // A peer that ignores ranges answers with the whole file: it is
        // judged as the whole file (the sink skipped the prefix we have).
        let whole = DataField::Bytes { len: 3 };
        assert!(judge_reply(&wanted(), reply(Some("abc")), whole, 2).is_ok());
        // A range that stops short leaves the file short.
        let short = judge_reply(&wanted(), ranged(1), one, 1).unwrap_err();
        assert_eq!(
            short,
            BadReply::WrongSize {
                sent: 2,
                advertised: 3
            }
        );
    }

    #[test]
    fn a_download_is_verified_under_the_catalogs_timestamp_then_the_replys() {
        let mut record = FileRecord {
            file_id: "f".into(),
            file_name: "f.txt".into(),
            file_owner: "o".into(),
            file_timestamp: Timestamp::from_secs(1),
            file_size: FileSize::Bytes(3),
        };
        let reply = Timestamp::from_secs(2);
        let got: Vec<_> = verifying_timestamps(&record, Some(&reply)).collect();
        assert_eq!(
            got,
            vec![&Timestamp::from_secs(1), &Timestamp::from_secs(2)]
        );
        record.file_timestamp = Timestamp::from_secs(3);
        assert_eq!(verifying_timestamps(&record, None).count(), 1);
    }
}
