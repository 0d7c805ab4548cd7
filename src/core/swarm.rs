//! Fetching one file from several holders at once: the piece planner.
//!
//! Sans-IO. A [`Swarm`] splits a file of known size into pieces and hands
//! out ranged requests, a few in flight per source; a source asks for its
//! next piece when one ends, so faster sources carry more of the file. When
//! no piece is left unasked, an idle source duplicates the oldest piece in
//! flight elsewhere (the endgame): the first copy wins, the other is
//! cancelled.
//!
//! Integrity: each piece's SHA-256 is recorded with its source, and the
//! whole-file check against the id stays the authority. When it fails, the
//! swarm audits: one piece of each source is fetched again from another
//! source and the digests compared (a third source breaks a tie; with no
//! third, the download goes back to one holder at a time, whole, where the
//! id itself settles it: nobody is excluded on one word against another). A source
//! caught sending other bytes is excluded and every piece it sent is fetched
//! again from the others. If that round finds nobody, every piece not yet
//! confirmed by two sources is audited. The cost: one piece per source, the
//! excluded source's share again, and a hash of the file per check; a
//! single bad piece at worst costs one more copy of the file.

use super::failure::SourceFailure;
use super::time::Time;
use crate::ids::PeerId;
use std::collections::BTreeMap;
use std::time::Duration;

/// The smallest piece; pieces are whole multiples of it (aligned for
/// direct I/O).
pub const PIECE_UNIT: u64 = 1024 * 1024;

/// The largest piece: the most a source resends when it fails mid-piece.
pub const MAX_PIECE: u64 = 8 * PIECE_UNIT;

/// Pieces in flight per source: the next request overlaps the current
/// one's last bytes, so a source's link never idles between pieces.
pub const IN_FLIGHT_PER_SOURCE: usize = 2;

/// Pieces each source should get at least, when the file allows (so the
/// faster ones can take more).
const PIECES_PER_SOURCE: u64 = 8;

/// Failures in a row after which a source is dropped from the swarm.
const MAX_FAILURES_IN_ROW: u32 = 2;

/// Copies of one piece in flight at once in the endgame.
const ENDGAME_COPIES: usize = 2;

/// Copies of one piece in flight at most, when those in flight crawl.
const MAX_COPIES: usize = 4;

/// The smallest file fetched from several holders (below it, one source
/// is as fast as several).
pub const MIN_SWARM_SIZE: u64 = 8 * PIECE_UNIT;

/// Most pieces of one file: the largest file fetched from several holders
/// is this many [`MAX_PIECE`]s (64 GiB); a larger one comes from one holder
/// at a time (the plan's memory is bounded by it, whatever size a peer
/// claims).
pub const MAX_PIECES: u64 = 8192;

/// Most holders asked at once for one file (more join as others drop).
pub const MAX_SOURCES: usize = 8;

/// Most pieces in flight for one file, all holders together (each is a
/// connection and a writer thread).
pub const MAX_IN_FLIGHT: usize = 8;

/// Most pieces in flight for all downloads together: under the driver's
/// writer threads (16), leaving room for pushes and whole-file downloads.
pub const MAX_IN_FLIGHT_TOTAL: usize = 12;

/// The piece length for a file of `size` bytes and `sources` holders: at
/// least [`PIECES_PER_SOURCE`] pieces each, in whole [`PIECE_UNIT`]s, at
/// most [`MAX_PIECE`].
pub fn piece_len_for(size: u64, sources: usize) -> u64 {
    let want = size / (sources.max(1) as u64 * PIECES_PER_SOURCE);
    want.div_ceil(PIECE_UNIT)
        .clamp(1, MAX_PIECE / PIECE_UNIT)
        .saturating_mul(PIECE_UNIT)
}

/// A piece's SHA-256, as the driver hashed its bytes on the way in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PieceDigest(pub [u8; 32]);

/// One ranged request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceRequest {
    /// The attempt number the result will carry.
    pub attempt: u64,
    /// The source.
    pub peer: PeerId,
    /// The piece's first byte.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

/// Where a source stands in the swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// Given pieces.
    Active,
    /// Failed [`MAX_FAILURES_IN_ROW`] times in a row (the last reason).
    Dropped(SourceFailure),
    /// Sent bytes that other sources contradict.
    Excluded,
}

impl SourceState {
    /// A word for the page and the API.
    pub fn label(&self) -> &'static str {
        match self {
            SourceState::Active => "active",
            SourceState::Dropped(_) => "dropped",
            SourceState::Excluded => "excluded",
        }
    }
}

/// One source's part in the download, for the menu, the page and the API.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceShare {
    /// The source.
    pub peer: PeerId,
    /// Bytes of pieces it completed.
    pub bytes: u64,
    /// Its rate over the time it had pieces in flight, bytes per second.
    pub rate: u64,
    /// Pieces in flight from it now.
    pub in_flight: usize,
    /// Where it stands.
    pub state: SourceState,
}

#[derive(Debug)]
struct Source {
    peer: PeerId,
    state: SourceState,
    in_flight: usize,
    bytes: u64,
    failures_in_row: u32,
    /// Time with at least one piece in flight, and since when the current
    /// stretch runs.
    busy: Duration,
    busy_since: Option<Time>,
}

impl Source {
    fn rate(&self, now: Time) -> u64 {
        let busy = self.busy + self.busy_since.map_or(Duration::ZERO, |s| now.since(s));
        let ms = busy.as_millis().max(1) as u64;
        self.bytes.saturating_mul(1000) / ms
    }
}

/// What a piece still needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Need {
    /// Bytes, from any source but these.
    Fetch { avoid: Vec<usize> },
    /// A second opinion: its bytes again from a source other than `by`,
    /// compared with `digest` (which the file holds now).
    Audit { by: usize, digest: PieceDigest },
    /// A third opinion after `a` and `b` disagreed (the file holds `b`'s).
    TieBreak {
        a: (usize, PieceDigest),
        b: (usize, PieceDigest),
    },
}

impl Need {
    fn avoids(&self, source: usize) -> bool {
        match self {
            Need::Fetch { avoid } => avoid.contains(&source),
            Need::Audit { by, .. } => *by == source,
            Need::TieBreak { a, b } => a.0 == source || b.0 == source,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PieceState {
    Wanted(Need),
    Done {
        by: usize,
        digest: PieceDigest,
        /// Two sources agreed on it.
        confirmed: bool,
    },
}

#[derive(Debug)]
struct Attempt {
    piece: usize,
    source: usize,
    /// Bytes of the piece received so far.
    progress: u64,
    /// When it was asked for.
    started: Time,
}

/// Where the swarm stands as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Fetching (or auditing) pieces.
    Fetching,
    /// Every piece is in: the whole file is being checked.
    Verifying,
    /// The file verified.
    Verified,
}

/// What follows a failed whole-file check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterMismatch {
    /// Pieces are being audited: go on pumping.
    Auditing {
        /// How many pieces are fetched again.
        pieces: usize,
    },
    /// Nothing left to audit (or no second source to ask): give up on the
    /// swarm.
    GiveUp,
}

/// What a finished piece did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PieceOutcome {
    /// Attempts of the same piece elsewhere, no longer needed (cancel them).
    pub cancel: Vec<u64>,
    /// Sources excluded because of it.
    pub excluded: Vec<PeerId>,
}

/// One file fetched from several sources at once.
#[derive(Debug)]
pub struct Swarm {
    size: u64,
    piece_len: u64,
    pieces: Vec<PieceState>,
    sources: Vec<Source>,
    attempts: BTreeMap<u64, Attempt>,
    phase: Phase,
    /// Audit rounds begun (sampling first, then everything unconfirmed).
    audit_rounds: u32,
    /// Bytes of the pieces done (kept up to date by `recount_done`).
    done_bytes: u64,
    /// Pieces another copy may have written over after the kept one came
    /// (a cancelled endgame copy, a failed attempt whose writer was still
    /// flushing): audited first when the file does not verify.
    raced: std::collections::BTreeSet<usize>,
    /// Two sources disagree on a piece and no third can say who is right:
    /// the swarm hands the download back (one holder at a time, whole,
    /// where the id settles it).
    undecidable: bool,
}

impl Swarm {
    /// A swarm for `size` bytes from `peers` (at least one).
    pub fn new(size: u64, peers: Vec<PeerId>) -> Swarm {
        // Never more than MAX_PIECES pieces, whatever size is claimed.
        let piece_len = piece_len_for(size, peers.len().min(MAX_SOURCES))
            .max(size.div_ceil(MAX_PIECES).next_multiple_of(PIECE_UNIT));
        let count = usize::try_from(size.div_ceil(piece_len)).unwrap_or(0);
        let mut swarm = Swarm {
            size,
            piece_len,
            pieces: vec![PieceState::Wanted(Need::Fetch { avoid: Vec::new() }); count],
            sources: Vec::new(),
            attempts: BTreeMap::new(),
            phase: Phase::Fetching,
            audit_rounds: 0,
            done_bytes: 0,
            raced: std::collections::BTreeSet::new(),
            undecidable: false,
        };
        for p in peers {
            swarm.add_source(p);
        }
        swarm
    }

    /// Adds a holder learnt during the download (no-op if known, or when
    /// [`MAX_SOURCES`] are active).
    pub fn add_source(&mut self, peer: PeerId) {
        if self.sources.iter().any(|s| s.peer == peer) || self.active_sources() >= MAX_SOURCES {
            return;
        }
        self.sources.push(Source {
            peer,
            state: SourceState::Active,
            in_flight: 0,
            bytes: 0,
            failures_in_row: 0,
            busy: Duration::ZERO,
            busy_since: None,
        });
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The piece length.
    pub fn piece_len(&self) -> u64 {
        self.piece_len
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }

    fn piece_range(&self, piece: usize) -> (u64, u64) {
        let offset = piece as u64 * self.piece_len;
        (offset, self.piece_len.min(self.size - offset))
    }

    /// Bytes from the file's start that are in (the pieces done from
    /// offset 0 on, up to the first missing one): what a restart may keep.
    /// After a failed whole-file check only pieces two holders agreed on
    /// count, and never a piece another copy may have written over.
    pub fn done_prefix(&self) -> u64 {
        let checked = self.audit_rounds > 0;
        let done = self
            .pieces
            .iter()
            .enumerate()
            .take_while(|(i, p)| match p {
                PieceState::Done { confirmed, .. } => {
                    (!checked || *confirmed) && !self.raced.contains(i)
                }
                PieceState::Wanted(_) => false,
            })
            .count();
        (done as u64 * self.piece_len).min(self.size)
    }

    /// Pieces in flight now.
    pub fn in_flight(&self) -> usize {
        self.attempts.len()
    }

    /// Whether `attempt` is one of this swarm's pieces in flight.
    pub fn owns(&self, attempt: u64) -> bool {
        self.attempts.contains_key(&attempt)
    }

    /// Sources still given pieces.
    pub fn active_sources(&self) -> usize {
        self.sources
            .iter()
            .filter(|s| s.state == SourceState::Active)
            .count()
    }

    /// Every source that is not excluded (dropped ones may still serve the
    /// file whole later), in the order they were added.
    pub fn usable_peers(&self) -> Vec<PeerId> {
        self.sources
            .iter()
            .filter(|s| s.state != SourceState::Excluded)
            .map(|s| s.peer.clone())
            .collect()
    }

    /// The sources caught sending bytes others contradict.
    pub fn excluded_peers(&self) -> Vec<PeerId> {
        self.sources
            .iter()
            .filter(|s| s.state == SourceState::Excluded)
            .map(|s| s.peer.clone())
            .collect()
    }

    /// Bytes of the file we have: pieces done and, for those in flight,
    /// the most any copy has received. Asked at every step of a piece's
    /// connection: the pieces done are counted when they change, not here.
    pub fn bytes_done(&self) -> u64 {
        let mut partial: Vec<(usize, u64)> = Vec::with_capacity(self.attempts.len());
        for a in self.attempts.values() {
            if !matches!(self.pieces[a.piece], PieceState::Wanted(_)) {
                continue;
            }
            match partial.iter_mut().find(|(p, _)| *p == a.piece) {
                Some((_, most)) => *most = (*most).max(a.progress),
                None => partial.push((a.piece, a.progress)),
            }
        }
        self.done_bytes + partial.iter().map(|(_, n)| n).sum::<u64>()
    }

    /// Counts the bytes of the pieces done again (after pieces changed).
    fn recount_done(&mut self) {
        self.done_bytes = (0..self.pieces.len())
            .filter(|&i| matches!(self.pieces[i], PieceState::Done { .. }))
            .map(|i| self.piece_range(i).1)
            .sum();
    }

    /// Each source's share.
    pub fn shares(&self, now: Time) -> Vec<SourceShare> {
        self.sources
            .iter()
            .map(|s| SourceShare {
                peer: s.peer.clone(),
                bytes: s.bytes,
                rate: s.rate(now),
                in_flight: s.in_flight,
                state: s.state.clone(),
            })
            .collect()
    }

    /// Whether every piece is in and the whole file should be checked now
    /// (then call [`Swarm::verifying`]).
    pub fn wants_verify(&self) -> bool {
        self.phase == Phase::Fetching
            && self.attempts.is_empty()
            && self
                .pieces
                .iter()
                .all(|p| matches!(p, PieceState::Done { .. }))
    }

    /// The whole-file check has started.
    pub fn verifying(&mut self) {
        self.phase = Phase::Verifying;
    }

    /// Whether the swarm can't go on: pieces are wanted and no active
    /// source may send any of them (and nothing is in flight).
    pub fn is_stuck(&self) -> bool {
        if self.phase != Phase::Fetching || !self.attempts.is_empty() {
            return false;
        }
        self.undecidable
            || self.pieces.iter().any(|p| match p {
                PieceState::Wanted(need) => !self.answerable(need),
                PieceState::Done { .. } => false,
            })
    }

    /// Whether an active source may answer `need`.
    fn answerable(&self, need: &Need) -> bool {
        self.sources
            .iter()
            .enumerate()
            .any(|(i, s)| s.state == SourceState::Active && !need.avoids(i))
    }

    /// Opinions nobody is left to give: an audit with no other active
    /// source keeps the copy the file holds; a tie nobody can break makes
    /// the swarm undecidable.
    fn settle_unanswerable(&mut self) {
        for i in 0..self.pieces.len() {
            let PieceState::Wanted(need) = &self.pieces[i] else {
                continue;
            };
            if self.answerable(need) {
                continue;
            }
            match need.clone() {
                Need::Audit { by, digest } => {
                    self.pieces[i] = PieceState::Done {
                        by,
                        digest,
                        confirmed: false,
                    }
                }
                Need::TieBreak { .. } => self.undecidable = true,
                Need::Fetch { .. } => {}
            }
        }
        self.recount_done();
    }

    /// The requests to send now: every active source is given pieces up to
    /// [`IN_FLIGHT_PER_SOURCE`], lowest offsets first; with none left
    /// unasked, the endgame duplicates pieces in flight elsewhere.
    /// At most `budget` more are asked (the pieces all downloads may have
    /// in flight); `next_attempt` numbers each request.
    pub fn requests(
        &mut self,
        now: Time,
        budget: usize,
        mut next_attempt: impl FnMut() -> u64,
    ) -> Vec<PieceRequest> {
        let mut out = Vec::new();
        if self.phase != Phase::Fetching {
            return out;
        }
        self.settle_unanswerable();
        if self.undecidable {
            return out;
        }
        loop {
            let mut gave = false;
            // One piece per source per pass, so a pass shares pieces out
            // evenly instead of filling the first source.
            for s in 0..self.sources.len() {
                if self.attempts.len() >= MAX_IN_FLIGHT || out.len() >= budget {
                    return out;
                }
                if self.sources[s].state != SourceState::Active
                    || self.sources[s].in_flight >= IN_FLIGHT_PER_SOURCE
                {
                    continue;
                }
                let Some(piece) = self.pick(s, now) else {
                    continue;
                };
                let attempt = next_attempt();
                self.start(now, attempt, piece, s);
                let (offset, len) = self.piece_range(piece);
                out.push(PieceRequest {
                    attempt,
                    peer: self.sources[s].peer.clone(),
                    offset,
                    len,
                });
                gave = true;
            }
            if !gave {
                return out;
            }
        }
    }

    /// The piece source `s` should fetch next, if any.
    fn pick(&self, s: usize, now: Time) -> Option<usize> {
        let in_flight = |piece: usize| self.attempts.values().filter(move |a| a.piece == piece);
        // A wanted piece nobody fetches yet, lowest offset first.
        let fresh = self.pieces.iter().enumerate().find(|(i, p)| match p {
            PieceState::Wanted(need) => !need.avoids(s) && in_flight(*i).next().is_none(),
            PieceState::Done { .. } => false,
        });
        if let Some((i, _)) = fresh {
            return Some(i);
        }
        // Endgame, for a source with nothing in flight: the oldest piece in
        // flight elsewhere that a fresh copy here would finish first
        // (fetches only; an audit's second copy would decide nothing new).
        if self.sources[s].in_flight > 0 {
            return None;
        }
        // Past ENDGAME_COPIES only when every copy in flight crawls (two
        // slow holders must not hold a piece between them).
        self.attempts
            .values()
            .filter(|a| {
                matches!(&self.pieces[a.piece], PieceState::Wanted(Need::Fetch { avoid }) if !avoid.contains(&s))
                    && self.worth_copying(a, s, now)
                    && in_flight(a.piece).all(|b| b.source != s)
                    && (in_flight(a.piece).count() < ENDGAME_COPIES
                        || (in_flight(a.piece).count() < MAX_COPIES
                            && in_flight(a.piece).all(|b| self.crawls(b, s, now))))
            })
            .map(|a| a.piece)
            .next()
    }

    /// Whether source `s` should copy the piece of attempt `a`: it is not
    /// half in yet, or at its pace so far it would end after a fresh copy
    /// at `s`'s measured rate (a holder crawling past half is overtaken).
    fn worth_copying(&self, a: &Attempt, s: usize, now: Time) -> bool {
        let len = self.piece_range(a.piece).1;
        a.progress < len / 2 || self.crawls(a, s, now)
    }

    /// Whether attempt `a`, at its pace so far, would end after a fresh
    /// copy at source `s` (at its measured rate, or, with none yet, the
    /// best any source has shown).
    fn crawls(&self, a: &Attempt, s: usize, now: Time) -> bool {
        let len = self.piece_range(a.piece).1;
        let elapsed = now.since(a.started).as_millis() as u64;
        let here = match self.sources[s].rate(now) {
            0 => self.sources.iter().map(|x| x.rate(now)).max().unwrap_or(0),
            r => r,
        };
        if elapsed < 1000 || here == 0 {
            return false;
        }
        // In milliseconds: what is left there, against all of it here.
        let there = a.progress.saturating_mul(1000) / elapsed.max(1);
        let left_there = (len - a.progress).saturating_mul(1000) / there.max(1);
        let fresh_here = len.saturating_mul(1000) / here;
        left_there > fresh_here
    }

    fn start(&mut self, now: Time, attempt: u64, piece: usize, s: usize) {
        let src = &mut self.sources[s];
        if src.in_flight == 0 {
            src.busy_since = Some(now);
        }
        src.in_flight += 1;
        self.attempts.insert(
            attempt,
            Attempt {
                piece,
                source: s,
                progress: 0,
                started: now,
            },
        );
    }

    /// Ends attempt bookkeeping; the attempt's piece and source.
    fn end(&mut self, now: Time, attempt: u64) -> Option<(usize, usize)> {
        let a = self.attempts.remove(&attempt)?;
        let src = &mut self.sources[a.source];
        src.in_flight = src.in_flight.saturating_sub(1);
        if src.in_flight == 0 {
            if let Some(since) = src.busy_since.take() {
                src.busy += now.since(since);
            }
        }
        Some((a.piece, a.source))
    }

    /// Piece attempt `attempt` has the file's bytes up to `file_bytes`
    /// (its offset plus what it received).
    pub fn on_progress_at(&mut self, attempt: u64, file_bytes: u64) {
        let Some(piece) = self.attempts.get(&attempt).map(|a| a.piece) else {
            return;
        };
        let (offset, len) = self.piece_range(piece);
        if let Some(a) = self.attempts.get_mut(&attempt) {
            a.progress = file_bytes.saturating_sub(offset).min(len);
        }
    }

    /// The source of piece attempt `attempt`, while it runs.
    pub fn source_of(&self, attempt: u64) -> Option<PeerId> {
        let a = self.attempts.get(&attempt)?;
        Some(self.sources[a.source].peer.clone())
    }

    /// The piece of `attempt` arrived whole, its bytes hashing to `digest`.
    pub fn on_piece_done(&mut self, now: Time, attempt: u64, digest: PieceDigest) -> PieceOutcome {
        let mut out = PieceOutcome::default();
        let Some((piece, s)) = self.end(now, attempt) else {
            return out;
        };
        let len = self.piece_range(piece).1;
        let src = &mut self.sources[s];
        src.failures_in_row = 0;
        src.bytes += len;
        let state = std::mem::replace(
            &mut self.pieces[piece],
            PieceState::Wanted(Need::Fetch { avoid: Vec::new() }),
        );
        self.pieces[piece] = match state {
            // A copy came already (the endgame's other copy lost the race).
            done @ PieceState::Done { .. } => done,
            PieceState::Wanted(Need::Fetch { .. }) => PieceState::Done {
                by: s,
                digest,
                confirmed: false,
            },
            PieceState::Wanted(Need::Audit { digest: first, .. }) if first == digest => {
                PieceState::Done {
                    by: s,
                    digest,
                    confirmed: true,
                }
            }
            PieceState::Wanted(Need::Audit { by, digest: first }) => {
                if self.tie_breaker(&[by, s]).is_none() {
                    // No third opinion: nobody is excluded on one word
                    // against another.
                    self.undecidable = true;
                }
                PieceState::Wanted(Need::TieBreak {
                    a: (by, first),
                    b: (s, digest),
                })
            }
            PieceState::Wanted(Need::TieBreak { a, b }) => {
                // Two of three agree: the third is out-voted. Three
                // different answers out-vote nobody.
                if digest == a.1 {
                    self.exclude(now, b.0, &mut out);
                } else if digest == b.1 {
                    self.exclude(now, a.0, &mut out);
                } else {
                    self.undecidable = true;
                }
                PieceState::Done {
                    by: s,
                    digest,
                    confirmed: digest == a.1 || digest == b.1,
                }
            }
        };
        // Other copies of this piece (the endgame's) are not needed now.
        if matches!(self.pieces[piece], PieceState::Done { .. }) {
            let others: Vec<u64> = self
                .attempts
                .iter()
                .filter(|(_, a)| a.piece == piece)
                .map(|(k, _)| *k)
                .collect();
            for k in others {
                self.end(now, k);
                out.cancel.push(k);
                self.raced.insert(piece);
            }
        }
        // Exclusions above may have made pieces wanted again too.
        self.recount_done();
        out
    }

    /// An active source other than `these` that could break a tie.
    fn tie_breaker(&self, these: &[usize]) -> Option<usize> {
        (0..self.sources.len())
            .find(|i| self.sources[*i].state == SourceState::Active && !these.contains(i))
    }

    /// Source `s` sent bytes others contradict: it gets no more pieces, its
    /// attempts are cancelled, and every piece it sent that no second
    /// source confirmed is fetched again from the others.
    fn exclude(&mut self, now: Time, s: usize, out: &mut PieceOutcome) {
        if self.sources[s].state == SourceState::Excluded {
            return;
        }
        self.sources[s].state = SourceState::Excluded;
        out.excluded.push(self.sources[s].peer.clone());
        let theirs: Vec<u64> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.source == s)
            .map(|(k, _)| *k)
            .collect();
        for k in theirs {
            self.end(now, k);
            out.cancel.push(k);
        }
        for p in self.pieces.iter_mut() {
            match p {
                PieceState::Done {
                    by,
                    confirmed: false,
                    ..
                } if *by == s => *p = PieceState::Wanted(Need::Fetch { avoid: vec![s] }),
                // Its copy needs no second opinion: it is fetched again.
                PieceState::Wanted(Need::Audit { by, .. }) if *by == s => {
                    *p = PieceState::Wanted(Need::Fetch { avoid: vec![s] })
                }
                PieceState::Wanted(Need::Fetch { avoid }) if !avoid.contains(&s) => avoid.push(s),
                _ => {}
            }
        }
    }

    /// The attempt failed (`why`): its piece is wanted again, and a source
    /// failing [`MAX_FAILURES_IN_ROW`] times in a row is dropped. Whether
    /// the source was dropped now.
    pub fn on_piece_failed(&mut self, now: Time, attempt: u64, why: &SourceFailure) -> bool {
        let Some((piece, s)) = self.end(now, attempt) else {
            return false;
        };
        self.raced.insert(piece);
        let src = &mut self.sources[s];
        src.failures_in_row += 1;
        // A source that does not hold the file won't next time either, nor
        // will a piece past our size limit fit from another.
        let hopeless = matches!(
            why,
            SourceFailure::NotFound | SourceFailure::Untracked | SourceFailure::TooLarge
        );
        if src.state == SourceState::Active
            && (hopeless || src.failures_in_row >= MAX_FAILURES_IN_ROW)
        {
            src.state = SourceState::Dropped(why.clone());
            return true;
        }
        false
    }

    /// A source is no longer reachable (dropped from membership): no more
    /// pieces for it; its attempts run on until they end.
    pub fn drop_source(&mut self, peer: &PeerId) {
        if let Some(s) = self.sources.iter_mut().find(|s| &s.peer == peer) {
            if s.state == SourceState::Active {
                s.state = SourceState::Dropped(SourceFailure::Untracked);
            }
        }
    }

    /// The whole-file check passed.
    pub fn on_verified(&mut self) {
        self.phase = Phase::Verified;
    }

    /// The whole-file check failed: audit pieces (one per source first,
    /// then every piece no two sources agreed on), or give up.
    pub fn on_mismatch(&mut self) -> AfterMismatch {
        self.phase = Phase::Fetching;
        let round = self.audit_rounds;
        self.audit_rounds += 1;
        if round >= 2 || self.active_sources() < 2 {
            return AfterMismatch::GiveUp;
        }
        let mut audits = Vec::new();
        let mut seen_sources = Vec::new();
        for (i, p) in self.pieces.iter().enumerate() {
            if let PieceState::Done {
                by,
                digest,
                confirmed: false,
            } = p
            {
                if round == 0 && seen_sources.contains(by) && !self.raced.contains(&i) {
                    continue;
                }
                seen_sources.push(*by);
                audits.push((i, *by, *digest));
            }
        }
        if audits.is_empty() {
            return AfterMismatch::GiveUp;
        }
        for (i, by, digest) in &audits {
            self.pieces[*i] = PieceState::Wanted(Need::Audit {
                by: *by,
                digest: *digest,
            });
        }
        self.recount_done();
        AfterMismatch::Auditing {
            pieces: audits.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|i| PeerId(format!("p{i}"))).collect()
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    /// A holder in the tests' model: its speed (bytes per ms), whether it
    /// corrupts what it sends, and the chance each piece fails.
    #[derive(Clone, Copy)]
    struct Link {
        rate: u64,
        corrupt: bool,
        fail: f64,
    }

    const GOOD: Link = Link {
        rate: 1000,
        corrupt: false,
        fail: 0.0,
    };

    /// How a modelled download ended.
    #[derive(Debug, PartialEq)]
    enum End {
        Verified,
        GaveUp,
        Stuck,
    }

    struct Run {
        end: End,
        /// Bytes each source sent that were kept, by index.
        bytes: Vec<u64>,
        excluded: Vec<PeerId>,
        /// Pieces asked for in all.
        requests: usize,
    }

    fn digest_of(offset: u64, corrupt_by: Option<usize>) -> PieceDigest {
        let mut x = [0u8; 32];
        x[..8].copy_from_slice(&offset.to_le_bytes());
        if let Some(s) = corrupt_by {
            x[8] = 1 + s as u8;
        }
        PieceDigest(x)
    }

    /// Runs `swarm` against `links` in virtual time: each request ends
    /// after its bytes at its link's rate (or fails half-way, at the link's
    /// odds); the file is checked when the plan asks.
    fn run(mut swarm: Swarm, links: &[Link], seed: u64) -> Run {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let index = |p: &PeerId| p.0[1..].parse::<usize>().unwrap();
        let mut now = Time(0);
        let mut n = 0u64;
        let mut pending: Vec<(Time, u64, usize, u64, bool)> = Vec::new();
        // The file: for each piece offset, whether its bytes are right.
        let mut file: BTreeMap<u64, bool> = BTreeMap::new();
        let mut requests = 0;
        for _ in 0..100_000 {
            for r in swarm.requests(now, usize::MAX, || {
                n += 1;
                n
            }) {
                requests += 1;
                let link = links[index(&r.peer)];
                let fails = rng.gen_bool(link.fail);
                let ms = (r.len / link.rate.max(1)).max(1) / if fails { 2 } else { 1 };
                pending.push((
                    now.plus(Duration::from_millis(ms)),
                    r.attempt,
                    index(&r.peer),
                    r.offset,
                    fails,
                ));
            }
            if swarm.wants_verify() {
                swarm.verifying();
                if file.values().all(|ok| *ok) && file.len() == swarm.piece_count() {
                    swarm.on_verified();
                    return finish(swarm, now, End::Verified, requests);
                }
                match swarm.on_mismatch() {
                    AfterMismatch::GiveUp => return finish(swarm, now, End::GaveUp, requests),
                    AfterMismatch::Auditing { pieces } => assert!(pieces > 0),
                }
                continue;
            }
            if swarm.is_stuck() {
                return finish(swarm, now, End::Stuck, requests);
            }
            pending.sort_by_key(|p| (p.0, p.1));
            if pending.is_empty() {
                panic!("nothing in flight, nothing to verify, not stuck");
            }
            let (at, attempt, src, offset, fails) = pending.remove(0);
            now = at;
            if fails {
                swarm.on_piece_failed(now, attempt, &SourceFailure::Closed { at: 1 });
                continue;
            }
            let corrupt = links[src].corrupt;
            let out = swarm.on_piece_done(now, attempt, digest_of(offset, corrupt.then_some(src)));
            file.insert(offset, !corrupt);
            pending.retain(|p| !out.cancel.contains(&p.1));
            let counted: u64 = (0..swarm.pieces.len())
                .filter(|&i| matches!(swarm.pieces[i], PieceState::Done { .. }))
                .map(|i| swarm.piece_range(i).1)
                .sum();
            assert_eq!(swarm.done_bytes, counted, "the count of pieces done");
        }
        panic!("the model ran 100000 steps without an end");
    }

    fn finish(swarm: Swarm, now: Time, end: End, requests: usize) -> Run {
        Run {
            end,
            bytes: swarm.shares(now).iter().map(|s| s.bytes).collect(),
            excluded: swarm.excluded_peers(),
            requests,
        }
    }

    #[test]
    fn holders_and_pieces_in_flight_are_bounded_whatever_the_holders() {
        let huge = Swarm::new(u64::MAX / 2, peers(3));
        assert!(huge.piece_count() as u64 <= MAX_PIECES);
        let mut s = Swarm::new(1 << 30, peers(40));
        assert_eq!(s.active_sources(), MAX_SOURCES);
        s.add_source(PeerId("late".into()));
        assert_eq!(s.active_sources(), MAX_SOURCES);
        let reqs = s.requests(Time(0), usize::MAX, counter());
        assert_eq!(reqs.len(), MAX_IN_FLIGHT);
        assert!(s.requests(Time(0), usize::MAX, counter()).is_empty());
    }

    #[test]
    fn faster_sources_carry_more_of_the_file() {
        let links = [
            Link { rate: 4000, ..GOOD },
            Link { rate: 1000, ..GOOD },
            Link { rate: 1000, ..GOOD },
        ];
        let r = run(Swarm::new(96 * MIB, peers(3)), &links, 1);
        assert_eq!(r.end, End::Verified);
        assert!(r.bytes[0] > 2 * r.bytes[1], "{:?}", r.bytes);
        assert!(r.bytes[1] > 0 && r.bytes[2] > 0, "{:?}", r.bytes);
    }

    #[test]
    fn any_piece_size_is_covered_exactly() {
        for size in [
            MIN_SWARM_SIZE,
            8 * MIB + 1,
            37 * MIB - 3,
            1 << 30,
            (1 << 30) + 12345,
        ] {
            for sources in 2..6 {
                let s = Swarm::new(size, peers(sources));
                let covered: u64 = (0..s.piece_count()).map(|i| s.piece_range(i).1).sum();
                assert_eq!(covered, size, "{size} B from {sources}");
                assert_eq!(s.piece_len() % PIECE_UNIT, 0);
                let r = run(s, &vec![GOOD; sources], size);
                assert_eq!(r.end, End::Verified, "{size} B from {sources}");
            }
        }
    }

    #[test]
    fn sources_failing_at_any_moment_still_complete_it_from_the_others() {
        for seed in 0..200 {
            let links = [
                GOOD,
                Link { fail: 0.3, ..GOOD },
                Link {
                    fail: 0.9,
                    rate: 3000,
                    ..GOOD
                },
                Link {
                    fail: 0.5,
                    rate: 200,
                    ..GOOD
                },
            ];
            let r = run(Swarm::new(40 * MIB, peers(4)), &links, seed);
            assert_eq!(r.end, End::Verified, "seed {seed}");
        }
    }

    #[test]
    fn when_every_source_fails_the_swarm_is_stuck_not_spinning() {
        let bad = Link { fail: 1.0, ..GOOD };
        let r = run(Swarm::new(16 * MIB, peers(3)), &[bad; 3], 7);
        assert_eq!(r.end, End::Stuck);
        // Each source is dropped after failing twice in a row.
        assert!(
            r.requests <= 3 * (MAX_FAILURES_IN_ROW as usize + 1),
            "{}",
            r.requests
        );
    }

    #[test]
    fn the_endgame_takes_the_last_piece_from_an_idle_source() {
        // Two sources; the second is 50 times slower: at the end the fast
        // one copies the slow one's pieces and wins.
        let links = [GOOD, Link { rate: 20, ..GOOD }];
        let r = run(Swarm::new(8 * MIB, peers(2)), &links, 3);
        assert_eq!(r.end, End::Verified);
        assert!(r.bytes[0] >= 7 * MIB, "{:?}", r.bytes);
    }

    #[test]
    fn two_crawling_copies_of_a_piece_get_a_third_from_an_idle_fast_holder() {
        let mut s = Swarm::new(2 * MIB, peers(3));
        let mut n = counter();
        // p0 and p1 first (a budget of two), then p2 copies p0's piece.
        let first = s.requests(Time(0), 2, &mut n);
        assert_eq!(first.len(), 2);
        let copy = s.requests(Time(0), usize::MAX, &mut n);
        assert_eq!(copy.len(), 1);
        assert_eq!((copy[0].peer.0.as_str(), copy[0].offset), ("p2", 0));
        // p2 is fast: its copy lands in half a second; p0's is cancelled.
        let out = s.on_piece_done(Time(500), copy[0].attempt, digest_of(0, None));
        assert_eq!(out.cancel, vec![first[0].attempt]);
        // p0, idle, copies p1's piece: two copies of piece 1 now.
        let second = s.requests(Time(500), usize::MAX, &mut n);
        assert_eq!(second.len(), 1);
        assert_eq!((second[0].peer.0.as_str(), second[0].offset), ("p0", MIB));
        // Ten seconds on, both crawl past half.
        s.on_progress_at(first[1].attempt, MIB + MIB * 6 / 10);
        s.on_progress_at(second[0].attempt, MIB + MIB * 6 / 10);
        let third = s.requests(Time(10_500), usize::MAX, &mut n);
        assert_eq!(third.len(), 1, "{third:?}");
        assert_eq!((third[0].peer.0.as_str(), third[0].offset), ("p2", MIB));
        // No fourth from anyone while it runs fast.
        assert!(s.requests(Time(10_600), usize::MAX, &mut n).is_empty());
    }

    #[test]
    fn after_a_failed_check_only_agreed_pieces_count_for_a_restart() {
        let mut s = Swarm::new(8 * MIB, peers(3));
        let mut n = counter();
        while !s.wants_verify() {
            for r in s.requests(Time(0), usize::MAX, &mut n) {
                s.on_piece_done(Time(0), r.attempt, digest_of(r.offset, None));
            }
        }
        // Up to the first piece an endgame copy raced for.
        assert!(s.done_prefix() >= MIB, "{}", s.done_prefix());
        s.verifying();
        assert!(matches!(s.on_mismatch(), AfterMismatch::Auditing { .. }));
        assert_eq!(s.done_prefix(), 0, "nothing agreed on yet");
    }

    #[test]
    fn a_duplicate_in_the_endgame_is_cancelled_when_the_first_copy_lands() {
        let mut s = Swarm::new(8 * MIB, peers(2));
        let mut n = counter();
        let mut reqs = s.requests(Time(0), usize::MAX, &mut n);
        let slow: Vec<u64> = reqs
            .iter()
            .filter(|r| r.peer.0 == "p1")
            .map(|r| r.attempt)
            .collect();
        assert_eq!(slow.len(), IN_FLIGHT_PER_SOURCE);
        // p0 answers everything it is asked; p1 never answers.
        let mut cancelled = Vec::new();
        while let Some(r) = reqs.iter().find(|r| r.peer.0 == "p0").cloned() {
            reqs.retain(|x| x.attempt != r.attempt);
            let out = s.on_piece_done(Time(1), r.attempt, digest_of(r.offset, None));
            reqs.retain(|x| !out.cancel.contains(&x.attempt));
            cancelled.extend(out.cancel);
            reqs.extend(s.requests(Time(1), usize::MAX, &mut n));
        }
        // p0 copied p1's pieces in the endgame; p1's copies were cancelled.
        cancelled.sort();
        assert_eq!(cancelled, slow);
        assert!(reqs.is_empty(), "{reqs:?}");
        assert!(s.wants_verify());
        assert!(s
            .pieces
            .iter()
            .all(|p| matches!(p, PieceState::Done { by: 0, .. })));
    }

    #[test]
    fn a_corrupting_source_is_found_excluded_and_the_file_completes_from_the_others() {
        for bad in 0..3 {
            let mut links = [GOOD; 3];
            links[bad].corrupt = true;
            let r = run(Swarm::new(48 * MIB, peers(3)), &links, bad as u64);
            assert_eq!(r.end, End::Verified, "corrupt p{bad}");
            assert_eq!(r.excluded, vec![PeerId(format!("p{bad}"))]);
        }
    }

    #[test]
    fn with_two_sources_a_disagreement_hands_the_download_back() {
        for bad in 0..2 {
            let mut links = [GOOD; 2];
            links[bad].corrupt = true;
            let r = run(Swarm::new(16 * MIB, peers(2)), &links, 9);
            // No majority with two: the swarm hands the download back (one
            // holder at a time, whole, where the id settles it), and
            // excludes nobody on one word against another.
            assert_eq!(r.end, End::Stuck, "corrupt p{bad}");
            assert!(r.excluded.is_empty());
        }
    }

    #[test]
    fn two_liars_who_disagree_never_get_the_honest_holder_excluded() {
        for seed in 0..20 {
            let mut links = [GOOD; 3];
            links[1].corrupt = true;
            links[2].corrupt = true;
            let r = run(Swarm::new(24 * MIB, peers(3)), &links, seed);
            assert!(!r.excluded.contains(&PeerId("p0".into())), "seed {seed}");
            assert!(
                matches!(r.end, End::Verified | End::Stuck),
                "seed {seed}: {:?}",
                r.end
            );
        }
    }

    #[test]
    fn a_mismatch_nobody_can_explain_gives_up_after_the_full_audit() {
        let mut s = Swarm::new(8 * MIB, peers(3));
        let mut n = counter();
        let mut rounds = 0;
        loop {
            for r in s.requests(Time(0), usize::MAX, &mut n) {
                s.on_piece_done(Time(0), r.attempt, digest_of(r.offset, None));
            }
            if s.wants_verify() {
                s.verifying();
                rounds += 1;
                // Every source agrees, but the file never verifies.
                if s.on_mismatch() == AfterMismatch::GiveUp {
                    break;
                }
            }
            assert!(rounds < 5, "it must give up");
        }
        assert_eq!(rounds, 3, "the check, the sample, the full audit");
        assert!(s.excluded_peers().is_empty());
    }

    #[test]
    fn piece_lengths_follow_the_file_and_the_sources() {
        assert_eq!(piece_len_for(1 << 30, 4), MAX_PIECE);
        assert_eq!(piece_len_for(64 * MIB, 4), 2 * MIB);
        assert_eq!(piece_len_for(5 * MIB, 4), MIB);
        assert_eq!(piece_len_for(0, 0), MIB);
        let s = Swarm::new(10 * MIB + 5, peers(2));
        assert_eq!(s.piece_len(), MIB);
        assert_eq!(s.piece_count(), 11);
        assert_eq!(s.piece_range(10), (10 * MIB, 5));
    }

    #[test]
    fn every_source_gets_pieces_and_the_file_is_covered_once() {
        let mut s = Swarm::new(40 * MIB, peers(4));
        let mut n = counter();
        let reqs = s.requests(Time(0), usize::MAX, &mut n);
        assert_eq!(reqs.len(), 4 * IN_FLIGHT_PER_SOURCE);
        for p in peers(4) {
            assert_eq!(reqs.iter().filter(|r| r.peer == p).count(), 2);
        }
        let mut offsets: Vec<u64> = reqs.iter().map(|r| r.offset).collect();
        offsets.sort();
        offsets.dedup();
        assert_eq!(offsets.len(), reqs.len(), "no piece asked twice");
    }
}
