//! Downloads: `get`, sources, saves, pushes during a download.

use super::*;
use crate::core::view::EventKind;

#[test]
fn get_of_an_unknown_id_says_so() {
    let mut p = peer();
    p.on_command(
        Time(0),
        Command::Get {
            file: "zz".into(),
            dest: None,
            force: false,
        },
    );
    let effects = p.take_effects();
    assert!(matches!(&effects[..], [Effect::Print(l)] if l.contains("no known file")));
}

/// A peer that knows file `f` (3 bytes) held by `q` and `r`, and has
/// begun `get f`: returns the first attempt's number and its source.
fn fetching_f(dest: Option<&str>) -> (Peer, TransferId, u64, PeerId) {
    let mut p = peer();
    p.start(Time(0));
    for (who, port) in [("q", 9001), ("r", 9002)] {
        p.on_message(
            Time(100),
            Message::GossipReply {
                host: "127.0.0.1".into(),
                port,
                peer_id: who.into(),
                files: vec![record("f", "owner")],
                ranges: false,
            },
        );
    }
    p.take_effects();
    p.on_command(
        Time(1_000),
        Command::Get {
            file: "f".into(),
            dest: dest.map(PathBuf::from),
            force: false,
        },
    );
    let fetch = p.take_effects().into_iter().find_map(|e| match e {
        Effect::Fetch {
            transfer,
            attempt,
            from,
            ..
        } => Some((transfer, attempt, from)),
        _ => None,
    });
    let (t, a, from) = fetch.expect("a fetch starts");
    (p, t, a, from)
}

#[test]
fn a_verified_push_during_a_download_ends_it_with_one_copy() {
    let (mut p, t, attempt, _) = fetching_f(Some("/tmp/out.txt"));
    assert!(
        !p.wants_push(&"f".into(), false),
        "an unverified push waits"
    );
    assert!(p.wants_push(&"f".into(), true));
    p.on_file_received(
        Time(1_500),
        "127.0.0.1:5000",
        record("f", "owner"),
        "f.txt".into(),
        true,
    );
    let effects = p.take_effects();
    let lines = printed(&effects);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("get: saved f.txt, 3 B: a peer pushed it whole")),
        "{lines:?}"
    );
    assert!(effects.iter().any(|e| matches!(e,
        Effect::CopyOut { name, dest, .. } if name == "f.txt" && dest.path == std::path::Path::new("/tmp/out.txt"))));
    assert!(p.downloads().is_empty());
    assert!(
        !p.is_current(t, attempt),
        "the download's bytes are discarded"
    );
    // The download's own result, if it still comes, changes nothing.
    p.on_fetch_result(
        Time(2_000),
        t,
        attempt,
        FetchResult::Saved {
            local_name: "f (2).txt".into(),
            len: 3,
            verified: true,
        },
    );
    assert!(p.take_effects().is_empty());
    assert_eq!(
        p.local_copy(&"f".into()).map(|(_, l)| l.name.as_str()),
        Some("f.txt")
    );
    // And a second push of a held file is not stored.
    assert!(!p.wants_push(&"f".into(), true));
}

#[test]
fn a_save_reports_the_time_of_its_own_attempt() {
    let (mut p, t, attempt, _) = fetching_f(None);
    p.on_fetch_result(
        Time(1_250),
        t,
        attempt,
        FetchResult::Saved {
            local_name: "f.txt".into(),
            len: 3,
            verified: true,
        },
    );
    let lines = printed(&p.take_effects());
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" in 250 ms (12 B/s) from ")),
        "{lines:?}"
    );
}

/// The first source of download `t` sends bytes that don't match, 400 ms
/// in; returns the attempt on the next source.
fn unverified_then_next(p: &mut Peer, t: TransferId, first: u64) -> u64 {
    p.on_fetch_result(Time(1_400), t, first, FetchResult::Unverified { len: 3 });
    p.take_effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::Fetch { attempt, .. } => Some(attempt),
            _ => None,
        })
        .expect("the next source is tried")
}

#[test]
fn a_kept_unverified_copy_reports_the_time_of_the_attempt_that_sent_it() {
    let (mut p, t, first, _) = fetching_f(None);
    // The first source sends bytes that don't match, in 400 ms...
    let second = unverified_then_next(&mut p, t, first);
    // ...the second fails after 5 s; the first's copy is kept.
    p.on_fetch_result(
        Time(6_400),
        t,
        second,
        FetchResult::Failed(SourceFailure::Stalled { at: 1 }),
    );
    let keep = p.take_effects().into_iter().find_map(|e| match e {
        Effect::KeepUnverified { attempt, .. } => Some(attempt),
        _ => None,
    });
    p.on_fetch_result(
        Time(6_400),
        t,
        keep.expect("the unverified copy is kept"),
        FetchResult::Saved {
            local_name: "f.txt".into(),
            len: 3,
            verified: false,
        },
    );
    let lines = printed(&p.take_effects());
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" in 400 ms (7 B/s) from ") && l.contains("UNVERIFIED")),
        "{lines:?}"
    );
}

#[test]
fn a_download_ended_by_a_verifying_source_drops_the_unverified_copy_held_for_it() {
    let (mut p, t, first, _) = fetching_f(None);
    let second = unverified_then_next(&mut p, t, first);
    p.on_fetch_result(
        Time(2_000),
        t,
        second,
        FetchResult::Saved {
            local_name: "f.txt".into(),
            len: 3,
            verified: true,
        },
    );
    let effects = p.take_effects();
    assert!(
        effects.contains(&Effect::DiscardUnverified { transfer: t }),
        "{effects:?}"
    );
}

#[test]
fn a_download_ended_by_a_verified_push_drops_the_unverified_copy_held_for_it() {
    let (mut p, t, first, _) = fetching_f(None);
    p.on_fetch_result(Time(1_400), t, first, FetchResult::Unverified { len: 3 });
    p.take_effects();
    p.on_file_received(
        Time(1_500),
        "127.0.0.1:5000",
        record("f", "owner"),
        "f.txt".into(),
        true,
    );
    let effects = p.take_effects();
    assert!(
        effects.contains(&Effect::DiscardUnverified { transfer: t }),
        "{effects:?}"
    );
    assert!(p.downloads().get(t).is_none());
}

#[test]
fn a_refused_import_prints_its_sentence_and_stores_nothing() {
    let mut p = peer();
    let path = PathBuf::from("/no/such/file.txt");
    p.on_imported(Time(0), Err(crate::storage::ImportError::NotFound(path)));
    let effects = p.take_effects();
    assert_eq!(
        printed(&effects),
        vec!["push: no such file: /no/such/file.txt".to_string()]
    );
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(p.catalog().len(), 0);
}

#[test]
fn an_import_is_stored_verified_and_announced_to_every_tracked_peer() {
    let mut p = peer();
    p.on_message(Time(0), reply_from("a", 9001));
    p.take_effects();
    let rec = record("f", "me");
    p.on_imported(
        Time(0),
        Ok(Imported {
            record: rec.clone(),
            local_name: "f (2).txt".into(),
        }),
    );
    let effects = p.take_effects();
    let (_, local) = p.local_copy(&rec.file_id).expect("stored");
    assert_eq!(local.name, "f (2).txt");
    assert!(local.verified);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::PushFile { to, .. } if to.port == 9001)));
    assert_eq!(sends(&effects), vec![(9001, "ANNOUNCE", String::new())]);
    assert_eq!(
        printed(&effects),
        vec!["push: stored f.txt (3 B) as f; sent to a; announced to 1 peers".to_string()]
    );
}

#[test]
fn download_attempts_are_counted_by_outcome_and_reason() {
    let (mut p, t, first, _) = fetching_f(None);
    let second = unverified_then_next(&mut p, t, first);
    let why = SourceFailure::Stalled { at: 0 };
    p.on_fetch_result(Time(6_400), t, second, FetchResult::Failed(why.clone()));
    let keep = p.take_effects().into_iter().find_map(|e| match e {
        Effect::KeepUnverified { attempt, .. } => Some(attempt),
        _ => None,
    });
    let saved = FetchResult::Saved {
        local_name: "f.txt".into(),
        len: 3,
        verified: false,
    };
    p.on_fetch_result(Time(6_400), t, keep.expect("kept"), saved);
    let c = p.counters();
    assert_eq!(c.downloads_started, 2);
    // The copy kept unverified was its source's mismatch, not a success.
    assert_eq!(c.downloads_succeeded, 0);
    assert_eq!(c.downloaded_bytes, 3);
    assert_eq!(c.downloads_failed.get("mismatch"), Some(&1));
    assert_eq!(c.downloads_failed.get("stalled"), Some(&1));
    assert_eq!(c.downloads_failed.values().sum::<u64>(), 2);
}

#[test]
fn a_failed_source_is_said_with_its_reason_and_the_next_one_named() {
    let (mut p, t, first, from) = fetching_f(None);
    let other = if from.0 == "q" { "r" } else { "q" };
    p.on_fetch_result(
        Time(2_000),
        t,
        first,
        FetchResult::Failed(SourceFailure::Closed { at: 2 }),
    );
    let effects = p.take_effects();
    let lines = printed(&effects);
    let want = format!(
        "get: {from} (127.0.0.1:{}) closed mid-transfer at 2 B; trying {other} (127.0.0.1:{}) (2 of 2)",
        if from.0 == "q" { 9001 } else { 9002 },
        if other == "q" { 9001 } else { 9002 },
    );
    assert!(lines.contains(&want), "{lines:?}");
    let second = effects.iter().find_map(|e| match e {
        Effect::Fetch { attempt, .. } => Some(*attempt),
        _ => None,
    });
    p.on_fetch_result(
        Time(3_000),
        t,
        second.expect("the next source is tried"),
        FetchResult::Failed(SourceFailure::Timeout),
    );
    let lines = printed(&p.take_effects());
    let end = format!(
        "get: no source left for f.txt: {from} closed mid-transfer at 2 B, {other} timed out before the first byte"
    );
    assert!(lines.contains(&end), "{lines:?}");
    let kinds: Vec<EventKind> = p.view(Time(3_000)).events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::SourceFailed)
            .count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&EventKind::DownloadFailed));
}

#[test]
fn a_pushed_folder_publishes_each_file_in_one_summary_line() {
    let mut p = peer();
    p.on_message(Time(0), reply_from("a", 9001));
    p.take_effects();
    let results = vec![
        Ok(Imported {
            record: record("f1", "me"),
            local_name: "one.txt".into(),
        }),
        Err(crate::storage::ImportError::NotFound(PathBuf::from(
            "/d/gone.txt",
        ))),
        Ok(Imported {
            record: record("f2", "me"),
            local_name: "two.txt".into(),
        }),
    ];
    p.on_imported_dir(Time(0), std::path::Path::new("/d"), results, 3);
    let effects = p.take_effects();
    let lines = printed(&effects);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0],
        "push: published 2 files from /d (f1.txt, f2.txt); announced to 1 peers; \
         skipped 3 (folders, symlinks and special files); refused 1: no such file: /d/gone.txt"
    );
    assert!(p.local_copy(&"f1".into()).is_some() && p.local_copy(&"f2".into()).is_some());
    let pushes = effects
        .iter()
        .filter(|e| matches!(e, Effect::PushFile { .. }))
        .count();
    assert_eq!(pushes, 2, "each file goes to a peer");
}
