//! Downloads from several holders at once, as the core runs them: when a
//! download goes to several holders, the pieces it asks for, its check,
//! the audit after a mismatch, the fallback, and the pieces all downloads
//! share.

use super::*;
use crate::core::swarm::{PieceDigest, MAX_IN_FLIGHT, MAX_IN_FLIGHT_TOTAL};

const MIB: u64 = 1024 * 1024;

/// A file `id` of `len` bytes.
fn sized(id: &str, len: u64) -> FileRecord {
    FileRecord {
        file_size: FileSize::Bytes(len),
        ..record(id, "owner")
    }
}

/// A started peer that learnt `files` from each of `holders` (peer id,
/// port, serves ranges).
fn knowing(files: &[FileRecord], holders: &[(&str, u16, bool)]) -> Peer {
    let mut p = peer();
    p.start(Time(0));
    for (i, (who, port, ranges)) in holders.iter().enumerate() {
        p.on_message(
            Time(100 + i as u64),
            Message::GossipReply {
                host: "127.0.0.1".into(),
                port: *port,
                peer_id: (*who).into(),
                files: files.to_vec(),
                ranges: *ranges,
            },
        );
    }
    p.take_effects();
    p
}

fn get(p: &mut Peer, now: Time, id: &str) -> Vec<Effect> {
    p.on_command(
        now,
        Command::Get {
            file: id.into(),
            dest: None,
            force: false,
        },
    );
    p.take_effects()
}

/// The pieces asked for in `effects`: (transfer, attempt, source, offset,
/// length).
fn pieces(effects: &[Effect]) -> Vec<(TransferId, u64, String, u64, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::FetchPiece {
                transfer,
                attempt,
                from,
                offset,
                len,
                ..
            } => Some((*transfer, *attempt, from.0.clone(), *offset, *len)),
            _ => None,
        })
        .collect()
}

fn digest(offset: u64) -> FetchResult {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&offset.to_le_bytes());
    FetchResult::Piece {
        digest: PieceDigest(d),
    }
}

/// Answers every piece asked for in `effects` (and those asked next) until
/// the file's check is asked for: its transfer and attempt.
fn answer_all(p: &mut Peer, mut effects: Vec<Effect>) -> (TransferId, u64) {
    for _ in 0..10_000 {
        if let Some((t, a)) = effects.iter().find_map(|e| match e {
            Effect::VerifyPieces {
                transfer, attempt, ..
            } => Some((*transfer, *attempt)),
            _ => None,
        }) {
            return (t, a);
        }
        let asked = pieces(&effects);
        assert!(!asked.is_empty(), "no piece and no check: {effects:?}");
        effects.clear();
        for (t, a, _, offset, _) in asked {
            if p.is_current(t, a) {
                p.on_fetch_result(Time(2_000), t, a, digest(offset));
                effects.extend(p.take_effects());
            }
        }
    }
    panic!("never checked");
}

/// A 16 MiB file fetched from two ranged holders, every piece in: the
/// peer, the transfer, and the attempt its check must answer.
fn all_pieces_in() -> (Peer, TransferId, u64) {
    let mut p = knowing(
        &[sized("f", 16 * MIB)],
        &[("a", 9002, true), ("b", 9003, true)],
    );
    let effects = get(&mut p, Time(1_000), "f");
    let (t, check) = answer_all(&mut p, effects);
    (p, t, check)
}

#[test]
fn two_ranged_holders_get_the_pieces_and_a_python_holder_none() {
    let f = sized("f", 16 * MIB);
    let mut p = knowing(
        &[f],
        &[("py", 9001, false), ("a", 9002, true), ("b", 9003, true)],
    );
    let effects = get(&mut p, Time(1_000), "f");
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Fetch { .. })),
        "no whole-file fetch"
    );
    let asked = pieces(&effects);
    assert_eq!(asked.len(), 4, "two in flight per holder: {asked:?}");
    assert!(asked
        .iter()
        .all(|(_, _, who, _, len)| who != "py" && *len == MIB));
    let lines = printed(&effects).join("\n");
    assert!(
        lines.contains("from 2 holders at once, in 16 pieces of 1.0 MiB"),
        "{lines}"
    );
    // The view shows both holders' shares.
    let view = p.view(Time(1_500));
    let t = &view.transfers[0];
    assert_eq!(t.peer, "2 holders at once");
    assert_eq!(t.sources.len(), 2);
    assert!(t
        .sources
        .iter()
        .all(|s| s.state == "active" && s.in_flight == 2));
}

#[test]
fn one_ranged_holder_or_a_small_file_is_fetched_whole_as_before() {
    let mut p = knowing(
        &[sized("f", 16 * MIB)],
        &[("py", 9001, false), ("a", 9002, true)],
    );
    let effects = get(&mut p, Time(1_000), "f");
    assert!(pieces(&effects).is_empty());
    assert!(effects.iter().any(|e| matches!(e, Effect::Fetch { .. })));
    let mut p = knowing(
        &[sized("g", 4 * MIB)],
        &[("a", 9002, true), ("b", 9003, true)],
    );
    let effects = get(&mut p, Time(1_000), "g");
    assert!(
        pieces(&effects).is_empty(),
        "under 8 MiB: one holder at a time"
    );
}

#[test]
fn every_piece_in_is_checked_and_a_match_is_saved_with_each_holders_share() {
    let (mut p, t, check) = all_pieces_in();
    p.on_fetch_result(
        Time(3_000),
        t,
        check,
        FetchResult::Saved {
            local_name: "f.txt".into(),
            len: 16 * MIB,
            verified: true,
        },
    );
    let effects = p.take_effects();
    let lines = printed(&effects).join("\n");
    assert!(lines.contains("saved f.txt, 16.0 MiB"), "{lines}");
    assert!(lines.contains("from 2 holders ("), "{lines}");
    assert!(
        lines.contains("a 8.0 MiB") && lines.contains("b 8.0 MiB"),
        "each holder's share: {lines}"
    );
    assert!(effects.iter().any(|e| matches!(e, Effect::Persist)));
    assert!(p.downloads().is_empty());
}

#[test]
fn a_mismatch_audits_pieces_and_without_a_majority_goes_on_whole() {
    let (mut p, t, check) = all_pieces_in();
    p.on_fetch_result(
        Time(3_000),
        t,
        check,
        FetchResult::Unverified { len: 16 * MIB },
    );
    let effects = p.take_effects();
    let lines = printed(&effects).join("\n");
    assert!(lines.contains("doesn't match its id; checking"), "{lines}");
    let audits = pieces(&effects);
    assert!(
        audits.len() >= 2,
        "one piece of each holder at least: {audits:?}"
    );
    // Each audit goes to the holder that did not send the piece; they
    // disagree, and with two holders nobody can be out-voted.
    let mut effects = Vec::new();
    for (t, a, _, offset, _) in audits {
        p.on_fetch_result(Time(4_000), t, a, digest(offset + 1));
        effects.extend(p.take_effects());
    }
    let lines = printed(&effects).join("\n");
    assert!(
        lines.contains("fetching it from one holder at a time"),
        "{lines}"
    );
    assert!(effects.iter().any(|e| matches!(e, Effect::Fetch { .. })));
}

#[test]
fn holders_that_do_not_have_the_file_hand_it_back_to_one_at_a_time() {
    let mut p = knowing(
        &[sized("f", 16 * MIB)],
        &[("py", 9001, false), ("a", 9002, true), ("b", 9003, true)],
    );
    let mut effects = get(&mut p, Time(1_000), "f");
    for _ in 0..4 {
        let asked = pieces(&effects);
        if asked.is_empty() {
            break;
        }
        effects.clear();
        for (t, a, _, _, _) in asked {
            p.on_fetch_result(
                Time(2_000),
                t,
                a,
                FetchResult::Failed(SourceFailure::NotFound),
            );
            effects.extend(p.take_effects());
        }
    }
    let whole: Vec<&PeerId> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Fetch { from, .. } => Some(from),
            _ => None,
        })
        .collect();
    assert_eq!(whole.len(), 1, "{effects:?}");
    let lines = printed(&effects).join("\n");
    assert!(
        lines.contains("no holder is left to send its pieces"),
        "{lines}"
    );
}

#[test]
fn two_downloads_from_several_holders_share_the_pieces_in_flight() {
    let files = [sized("f", 256 * MIB), sized("g", 256 * MIB)];
    let holders = [
        ("a", 9002, true),
        ("b", 9003, true),
        ("c", 9004, true),
        ("d", 9005, true),
    ];
    let mut p = knowing(&files, &holders);
    let first = pieces(&get(&mut p, Time(1_000), "f"));
    assert_eq!(first.len(), MAX_IN_FLIGHT);
    let second = pieces(&get(&mut p, Time(1_000), "g"));
    assert_eq!(
        second.len(),
        MAX_IN_FLIGHT_TOTAL - MAX_IN_FLIGHT,
        "the rest of the slots"
    );
    // Two pieces of the first download end: its share is now half the
    // slots, so the freed ones go to the second.
    let mut next = Vec::new();
    for (t, a, _, offset, _) in first.iter().take(2) {
        p.on_fetch_result(Time(2_000), *t, *a, digest(*offset));
        next.extend(pieces(&p.take_effects()));
    }
    let (tf, tg) = (first[0].0, second[0].0);
    assert!(next.iter().all(|n| n.0 == tg), "{next:?}");
    let in_flight = |t: TransferId| {
        p.downloads()
            .get(t)
            .and_then(|d| d.swarm.as_ref())
            .map_or(0, |r| r.plan.in_flight())
    };
    assert_eq!(in_flight(tf) + in_flight(tg), MAX_IN_FLIGHT_TOTAL);
    assert_eq!(in_flight(tf), MAX_IN_FLIGHT_TOTAL / 2);
}
