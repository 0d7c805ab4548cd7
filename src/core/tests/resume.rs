//! Resuming a download after a cut: which source continues the kept
//! prefix, and what it is asked for.

use super::*;

/// A 1000-byte file `f` (the catalog's size, so progress has a total).
fn big(id: &str) -> FileRecord {
    FileRecord {
        file_size: FileSize::Bytes(1000),
        ..record(id, "owner")
    }
}

/// A peer that knows `f`, held by each of `holders` (peer id, port, serves
/// ranges), seen in that order (the last one most recently), and has begun
/// `get f`: the transfer and its first fetch (source, attempt, offset).
fn fetching(holders: &[(&str, u16, bool)]) -> (Peer, TransferId, (PeerId, u64, u64)) {
    let mut p = peer();
    p.start(Time(0));
    for (i, (who, port, ranges)) in holders.iter().enumerate() {
        p.on_message(
            Time(100 + i as u64),
            Message::GossipReply {
                host: "127.0.0.1".into(),
                port: *port,
                peer_id: (*who).into(),
                files: vec![big("f")],
                ranges: *ranges,
            },
        );
    }
    p.take_effects();
    p.on_command(
        Time(1_000),
        Command::Get {
            file: "f".into(),
            dest: None,
            force: false,
        },
    );
    let effects = p.take_effects();
    let (t, first) = next_fetch(&effects).expect("a fetch starts");
    (p, t, first)
}

/// The fetch in `effects`: its transfer, and its source, attempt and
/// offset.
fn next_fetch(effects: &[Effect]) -> Option<(TransferId, (PeerId, u64, u64))> {
    effects.iter().find_map(|e| match e {
        Effect::Fetch {
            transfer,
            attempt,
            from,
            resume_from,
            ..
        } => Some((*transfer, (from.clone(), *attempt, *resume_from))),
        _ => None,
    })
}

/// A started peer whose catalog (as loaded at start) lists `f`, held by
/// `holders` (none of them tracked yet).
fn knowing_f(holders: &[&str]) -> Peer {
    let mut p = peer();
    p.load_entry(crate::core::catalog::Entry {
        record: big("f"),
        holders: holders.iter().map(|h| (*h).into()).collect(),
        local: None,
    });
    p.start(Time(0));
    p
}

/// `q`, which serves ranges, says it holds `f`.
fn q_holding_f() -> Message {
    Message::GossipReply {
        host: "127.0.0.1".into(),
        port: 9001,
        peer_id: "q".into(),
        files: vec![big("f")],
        ranges: true,
    }
}

fn cut(at: u64) -> FetchResult {
    FetchResult::Cut {
        why: SourceFailure::Closed { at },
        kept: at,
    }
}

#[test]
fn a_cut_is_continued_by_the_next_source_that_serves_ranges() {
    // Seen last, `z` is tried first; `q` serves ranges, `py` does not.
    let (mut p, t, (first, attempt, from)) =
        fetching(&[("q", 9001, true), ("py", 9002, false), ("z", 9003, true)]);
    assert_eq!(
        (first.0.as_str(), from),
        ("z", 0),
        "a new download asks for it all"
    );
    p.on_fetch_result(Time(2_000), t, attempt, cut(600));
    let effects = p.take_effects();
    let (_, (second, attempt, from)) = next_fetch(&effects).expect("the next source is tried");
    // `py` was seen more recently than `q`, but `q` can send just the rest.
    assert_eq!((second.0.as_str(), from), ("q", 600));
    let lines = printed(&effects);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("resuming f.txt (1000 B) at 600 B from q")),
        "{lines:?}"
    );
    // The progress counts the kept bytes; the rate only this source's.
    let view = p.view(Time(2_000));
    assert_eq!(view.transfers[0].bytes_done, 600);
    p.on_fetch_progress(t, attempt, 800);
    let view = p.view(Time(4_000));
    assert_eq!(view.transfers[0].bytes_done, 800);
    assert_eq!(view.transfers[0].rate_bytes_per_sec, 100, "200 B in 2 s");
    p.on_fetch_result(
        Time(4_000),
        t,
        attempt,
        FetchResult::Saved {
            local_name: "f.txt".into(),
            len: 1000,
            verified: true,
        },
    );
    assert!(p.downloads().is_empty());
    assert!(p.local_copy(&"f".into()).is_some());
    // Its figures are those of the bytes this source sent.
    let lines = printed(&p.take_effects());
    assert!(
        lines.iter().any(|l| l
            .starts_with("get: saved f.txt, 1000 B: 600 B kept, the rest in 2.0 s (")
            && l.ends_with("from q")),
        "{lines:?}"
    );
}

#[test]
fn a_source_without_ranges_starts_over_and_the_prefix_is_dropped() {
    let (mut p, t, (first, attempt, _)) = fetching(&[("py", 9002, false), ("z", 9003, true)]);
    assert_eq!(first.0, "z");
    p.on_fetch_result(Time(2_000), t, attempt, cut(600));
    let (_, (second, attempt, from)) =
        next_fetch(&p.take_effects()).expect("the Python peer is tried");
    assert_eq!(
        (second.0.as_str(), from),
        ("py", 0),
        "it can only send it all"
    );
    assert_eq!(p.view(Time(2_000)).transfers[0].bytes_done, 0);
    // Cut again: its bytes are kept, but no source is left to continue them.
    p.on_fetch_result(Time(3_000), t, attempt, cut(100));
    let lines = printed(&p.take_effects());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("get: no source left for f.txt")),
        "{lines:?}"
    );
    // Whatever ended it, the driver drops what it kept.
    assert!(p.downloads().is_empty());
}

#[test]
fn a_failure_that_keeps_nothing_drops_the_prefix() {
    let (mut p, t, (_, attempt, _)) =
        fetching(&[("q", 9001, true), ("r", 9002, true), ("z", 9003, true)]);
    p.on_fetch_result(Time(2_000), t, attempt, cut(600));
    let (_, (_, attempt, from)) = next_fetch(&p.take_effects()).expect("next");
    assert_eq!(from, 600);
    // The disk failed: the driver kept nothing; the next source starts at 0.
    p.on_fetch_result(
        Time(3_000),
        t,
        attempt,
        FetchResult::Failed(SourceFailure::Disk("full".into())),
    );
    let (_, (_, _, from)) = next_fetch(&p.take_effects()).expect("next");
    assert_eq!(from, 0);
}

#[test]
fn a_resumed_copy_that_does_not_verify_is_the_fallback_and_the_next_starts_over() {
    let (mut p, t, (_, attempt, _)) =
        fetching(&[("q", 9001, true), ("r", 9002, true), ("z", 9003, true)]);
    p.on_fetch_result(Time(2_000), t, attempt, cut(600));
    let (_, (_, attempt, _)) = next_fetch(&p.take_effects()).expect("next");
    p.on_fetch_result(
        Time(3_000),
        t,
        attempt,
        FetchResult::Unverified { len: 1000 },
    );
    let (_, (_, _, from)) = next_fetch(&p.take_effects()).expect("next");
    assert_eq!(from, 0, "which bytes were bad is unknown: all of it again");
}

#[test]
fn a_holder_learnt_during_the_download_is_tried_when_the_others_failed() {
    let (mut p, t, (first, attempt, _)) = fetching(&[("z", 9003, true)]);
    assert_eq!(first.0, "z");
    // A new holder appears while `z` sends.
    p.on_message(
        Time(1_500),
        Message::GossipReply {
            host: "127.0.0.1".into(),
            port: 9004,
            peer_id: "late".into(),
            files: vec![big("f")],
            ranges: true,
        },
    );
    p.take_effects();
    p.on_fetch_result(Time(2_000), t, attempt, cut(400));
    let (_, (next, attempt, from)) = next_fetch(&p.take_effects()).expect("the new holder");
    assert_eq!((next.0.as_str(), from), ("late", 400));
    // Each holder is tried once: with both failed, the download ends.
    p.on_fetch_result(Time(3_000), t, attempt, cut(500));
    let lines = printed(&p.take_effects());
    assert!(
        lines.iter().any(|l| l.starts_with(
            "get: no source left for f.txt: z closed mid-transfer at 400 B, late closed"
        )),
        "{lines:?}"
    );
}

#[test]
fn a_download_resumed_at_start_waits_for_a_holder_then_continues_its_bytes() {
    let mut p = knowing_f(&["q"]);
    p.take_effects();
    let t = p
        .resume_download(Time(10), big("f"), true, 300)
        .expect("resumed");
    p.on_prefix_hashed(Time(20), t, Some(300));
    let effects = p.take_effects();
    assert!(
        printed(&effects)
            .iter()
            .any(|l| l == "get: resuming f.txt (1000 B): 300 B kept from the last run; waiting for its holders"),
        "{effects:?}"
    );
    assert!(next_fetch(&effects).is_none(), "no holder is known yet");
    // The same file again (a second record, auto-fetch): not twice.
    assert_eq!(p.resume_download(Time(10), big("f"), false, 300), None);
    p.on_message(Time(500), q_holding_f());
    p.on_timer(Time(1_010), Timer::ResumeWaiting);
    let (tt, (src, _, from)) = next_fetch(&p.take_effects()).expect("it starts");
    assert_eq!((tt, src.0.as_str(), from), (t, "q", 300));
}

#[test]
fn a_resumed_download_without_a_holder_gives_up_after_the_peer_timeout() {
    let mut p = knowing_f(&[]);
    let t = p
        .resume_download(Time(0), big("f"), true, 300)
        .expect("resumed");
    p.on_prefix_hashed(Time(0), t, Some(300));
    p.on_timer(Time(1_000), Timer::ResumeWaiting);
    assert!(p.downloads().len() == 1, "still waiting");
    let later = Time(1_000 + p.cfg.peer_timeout.as_millis() as u64);
    p.on_timer(later, Timer::ResumeWaiting);
    let effects = p.take_effects();
    assert!(p.downloads().is_empty());
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::DiscardUnverified { .. })),
        "its kept bytes are dropped"
    );
    assert!(
        printed(&effects)
            .iter()
            .any(|l| l.starts_with("get: no source left for f.txt")),
        "{effects:?}"
    );
}

#[test]
fn kept_bytes_beyond_the_files_size_are_not_resumed_from() {
    let mut p = knowing_f(&[]);
    let t = p
        .resume_download(Time(0), big("f"), true, 5_000)
        .expect("still fetched");
    p.on_prefix_hashed(Time(0), t, Some(5_000));
    p.on_message(Time(500), q_holding_f());
    p.on_timer(Time(1_000), Timer::ResumeWaiting);
    let (_, (_, _, from)) = next_fetch(&p.take_effects()).expect("it starts");
    assert_eq!(from, 0, "5000 B can't be a prefix of a 1000 B file");
}

#[test]
fn a_cut_that_kept_more_than_the_file_is_started_over() {
    let (mut p, t, (_, attempt, _)) = fetching(&[("q", 9001, true), ("z", 9003, true)]);
    p.on_fetch_result(Time(2_000), t, attempt, cut(1_500));
    let (_, (_, _, from)) = next_fetch(&p.take_effects()).expect("next");
    assert_eq!(from, 0, "1500 B kept of a 1000 B file are no prefix of it");
}

#[test]
fn a_resumed_download_waits_for_its_bytes_to_be_hashed_and_holds_the_file_meanwhile() {
    let mut p = knowing_f(&[]);
    let t = p
        .resume_download(Time(0), big("f"), true, 300)
        .expect("resumed");
    p.on_message(Time(500), q_holding_f());
    // A `get` of the same file joins it instead of starting another.
    p.on_command(
        Time(600),
        Command::Get {
            file: "f".into(),
            dest: None,
            force: false,
        },
    );
    p.on_timer(Time(1_000), Timer::ResumeWaiting);
    assert!(
        next_fetch(&p.take_effects()).is_none(),
        "not before its bytes are hashed"
    );
    assert_eq!(p.downloads().len(), 1);
    // The bytes could not be read: it starts over, at once.
    p.on_prefix_hashed(Time(2_000), t, None);
    p.on_timer(Time(3_000), Timer::ResumeWaiting);
    let (tt, (_, _, from)) = next_fetch(&p.take_effects()).expect("it starts");
    assert_eq!((tt, from), (t, 0));
}

#[test]
fn bytes_sent_before_a_bad_reply_are_dropped_but_a_refusal_keeps_the_prefix() {
    let (mut p, t, (_, attempt, _)) = fetching(&[
        ("p", 9000, true),
        ("q", 9001, true),
        ("r", 9002, true),
        ("z", 9003, true),
    ]);
    // Cut by a broken transfer: kept.
    p.on_fetch_result(Time(2_000), t, attempt, cut(600));
    let (_, (_, attempt, from)) = next_fetch(&p.take_effects()).expect("next");
    assert_eq!(from, 600);
    // This one refused before adding a byte (a range from elsewhere): kept.
    let refused = FetchResult::Cut {
        why: SourceFailure::Malformed("the reply starts at byte 1".into()),
        kept: 600,
    };
    p.on_fetch_result(Time(3_000), t, attempt, refused);
    let (_, (_, attempt, from)) = next_fetch(&p.take_effects()).expect("next");
    assert_eq!(from, 600);
    // This one wrote bytes, then its reply went bad: all of it is suspect.
    let bad = FetchResult::Cut {
        why: SourceFailure::Malformed("data is not hex".into()),
        kept: 800,
    };
    p.on_fetch_result(Time(4_000), t, attempt, bad);
    let (_, (_, _, from)) = next_fetch(&p.take_effects()).expect("next");
    assert_eq!(from, 0);
}

#[test]
fn a_resumed_copy_that_does_not_verify_has_its_last_source_asked_for_all_of_it() {
    // Two holders only: the one that sent the end is asked again, whole.
    let (mut p, t, (first, attempt, _)) = fetching(&[("q", 9001, true), ("z", 9003, true)]);
    p.on_fetch_result(Time(2_000), t, attempt, cut(600));
    let (_, (second, attempt, from)) = next_fetch(&p.take_effects()).expect("next");
    assert_ne!(first, second);
    assert_eq!(from, 600);
    p.on_fetch_result(
        Time(3_000),
        t,
        attempt,
        FetchResult::Unverified { len: 1000 },
    );
    let (_, (again, _, from)) = next_fetch(&p.take_effects()).expect("asked again");
    assert_eq!((again, from), (second, 0));
}
