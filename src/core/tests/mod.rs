//! Unit tests of the peer as a whole, driven through its public events.

use super::*;
use crate::protocol::{FileSize, Timestamp};
use rand::SeedableRng;

fn peer() -> Peer {
    Peer::new(
        Config {
            peer_id: "me".into(),
            addr: PeerAddr::new("127.0.0.1", 9000),
            well_known: vec![PeerAddr::new("127.0.0.1", 9999)],
            gossip_interval: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(60),
            auto_fetch: 0,
            share_unverified: false,
        },
        SmallRng::seed_from_u64(7),
    )
}

fn record(id: &str, owner: &str) -> FileRecord {
    FileRecord {
        file_name: format!("{id}.txt"),
        file_size: FileSize::Bytes(3),
        file_id: id.into(),
        file_owner: owner.into(),
        file_timestamp: Timestamp::from_secs(1),
    }
}

#[test]
fn first_gossip_goes_to_the_well_known_peers() {
    let mut p = peer();
    p.start(Time(0));
    let sends: Vec<_> = p
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send {
                to,
                msg: Message::Gossip { .. },
            } => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(sends, vec![PeerAddr::new("127.0.0.1", 9999)]);
}

#[test]
fn holders_loaded_from_disk_that_never_speak_are_dropped_after_the_timeout() {
    let mut p = peer();
    p.load_entry(Entry {
        record: record("f", "ghost"),
        holders: [PeerId::from("ghost")].into_iter().collect(),
        local: None,
    });
    p.start(Time(0));
    p.on_timer(Time(10_000), Timer::Sweep);
    assert!(p.catalog().get(&"f".into()).is_some());
    p.on_timer(Time(61_000), Timer::Sweep);
    assert!(p.catalog().get(&"f".into()).is_none());
}

#[test]
fn own_gossip_echoed_back_is_ignored() {
    let mut p = peer();
    p.on_message(
        Time(0),
        Message::Gossip {
            host: "127.0.0.1".into(),
            port: 9000,
            id: "x".into(),
            peer_id: "me".into(),
        },
    );
    assert!(p.members().is_empty());
    assert!(p.take_effects().is_empty());
}

#[test]
fn delete_from_a_non_owner_changes_nothing() {
    let mut p = peer();
    p.on_message(
        Time(0),
        Message::GossipReply {
            host: "127.0.0.1".into(),
            port: 9001,
            peer_id: "owner".into(),
            files: vec![record("f", "owner")],
        },
    );
    p.on_message(
        Time(1),
        Message::Delete {
            from: "mallory".into(),
            file_id: "f".into(),
        },
    );
    assert!(p.catalog().get(&"f".into()).is_some());
    p.on_message(
        Time(2),
        Message::Delete {
            from: "owner".into(),
            file_id: "f".into(),
        },
    );
    assert!(p.catalog().get(&"f".into()).is_none());
}

fn reply_from(peer: &str, port: u16) -> Message {
    Message::GossipReply {
        host: "127.0.0.1".into(),
        port,
        peer_id: peer.into(),
        files: vec![],
    }
}

fn gossip_from(peer: &str, port: u16, id: &str) -> Message {
    Message::Gossip {
        host: "127.0.0.1".into(),
        port,
        id: id.into(),
        peer_id: peer.into(),
    }
}

/// (destination port, message kind, GOSSIP id) of every send.
fn sends(effects: &[Effect]) -> Vec<(u16, &'static str, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, msg } => Some((
                to.port,
                msg.kind(),
                match msg {
                    Message::Gossip { id, .. } => id.clone(),
                    _ => String::new(),
                },
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_flood_of_invented_peer_ids_gets_a_bounded_number_of_answers_and_forwards() {
    let mut p = peer();
    p.start(Time(0));
    // Real peers to forward to.
    for i in 0..5u16 {
        p.on_message(
            Time(10),
            gossip_from(&format!("real{i}"), 9100 + i, &format!("r{i}")),
        );
    }
    p.take_effects();
    // 5 000 GOSSIPs within one second, each from a new peerId.
    for i in 0..5_000u32 {
        let at = Time(1_000 + u64::from(i) / 5);
        p.on_message(
            at,
            gossip_from(&format!("fake{i}"), 20_000, &format!("f{i}")),
        );
    }
    let sent = sends(&p.take_effects());
    let replies = sent.iter().filter(|s| s.1 == "GOSSIP_REPLY").count();
    let forwards = sent.iter().filter(|s| s.1 == "GOSSIP").count();
    let most = |burst: u32, rate: u32| (burst + rate) as usize;
    assert!(
        replies <= most(REPLY_BURST, REPLIES_PER_SEC),
        "{replies} replies"
    );
    assert!(replies >= REPLY_BURST as usize, "{replies} replies");
    assert!(
        forwards <= GOSSIP_FANOUT * most(FORWARD_BURST, FORWARDS_PER_SEC),
        "{forwards} forwards"
    );
    // Once the flood stops the budget refills: a real peer is answered.
    p.on_message(Time(10_000), gossip_from("real0", 9100, "r-late"));
    let sent = sends(&p.take_effects());
    assert!(
        sent.iter().any(|s| s.0 == 9100 && s.1 == "GOSSIP_REPLY"),
        "{sent:?}"
    );
}

#[test]
fn a_flood_of_invented_peer_ids_does_not_evict_the_real_peers_or_their_files() {
    let mut p = peer();
    p.start(Time(0));
    // Five real peers answered our GOSSIP; each holds a file.
    for i in 0..5u16 {
        let id = format!("real{i}");
        p.on_message(
            Time(10),
            Message::GossipReply {
                host: "127.0.0.1".into(),
                port: 9100 + i,
                peer_id: id.as_str().into(),
                files: vec![record(&format!("file{i}"), &id)],
            },
        );
    }
    // 5 000 GOSSIPs within a few seconds, each from a new peerId: the
    // table (1 024) fills and overflows four times.
    for i in 0..5_000u32 {
        let at = Time(1_000 + u64::from(i));
        p.on_message(
            at,
            gossip_from(&format!("fake{i}"), 20_000, &format!("f{i}")),
        );
    }
    p.take_effects();
    assert_eq!(p.members().len(), membership::MAX_PEERS);
    for i in 0..5u16 {
        let id = PeerId(format!("real{i}"));
        assert!(p.members().contains(&id), "{id} evicted");
        let e = p.catalog().get(&format!("file{i}").as_str().into());
        assert!(
            e.is_some_and(|e| e.holders.contains(&id)),
            "{id} no longer a holder of its file"
        );
    }
}

/// When the catch-ups in `effects` are scheduled.
fn catch_ups(effects: &[Effect]) -> Vec<Time> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Schedule {
                at,
                timer: Timer::CatchUp,
            } => Some(*at),
            _ => None,
        })
        .collect()
}

#[test]
fn a_peer_found_again_by_its_gossip_gets_our_rounds_gossip_again_unless_it_sent_its_files() {
    let mut p = peer();
    p.start(Time(0));
    // q and r answered us once, then went silent and expired (a
    // partition); our round at 90 s went out meanwhile.
    p.on_message(Time(100), reply_from("q", 9001));
    p.on_message(Time(100), reply_from("r", 9002));
    p.on_timer(Time(70_000), Timer::Sweep);
    assert!(p.members().is_empty());
    p.take_effects();
    p.on_timer(Time(90_000), Timer::Gossip);
    let round_id = sends(&p.take_effects())[0].2.clone();
    p.on_message(Time(91_000), gossip_from("q", 9001, "g-q"));
    p.on_message(Time(91_100), gossip_from("r", 9002, "g-r"));
    let at = catch_ups(&p.take_effects());
    assert_eq!(at, vec![Time(93_000)], "one catch-up, batched");
    // r's files arrive meanwhile: only q is asked again, with the
    // round's own id (no new id to flood the network with).
    p.on_message(Time(91_200), reply_from("r", 9002));
    p.take_effects();
    p.on_timer(Time(93_000), Timer::CatchUp);
    assert_eq!(sends(&p.take_effects()), vec![(9001, "GOSSIP", round_id)]);
    // The next catch-up waits half a gossip interval.
    p.on_message(Time(94_000), gossip_from("s", 9003, "g-s"));
    assert_eq!(catch_ups(&p.take_effects()), vec![Time(108_000)]);
}

#[test]
fn a_peer_that_never_answered_is_sent_at_most_one_gossip_besides_our_reply() {
    let mut p = peer();
    // Enough answered peers for every round's targets (a peer asked
    // once is a round's target only when too few others are left).
    round_with_peers(&mut p, 4);
    // Past the start window (see `asks_unanswered`): a round at 100 s.
    replies_from(&mut p, Time(99_000), 0..4);
    p.on_timer(Time(100_000), Timer::Gossip);
    p.take_effects();
    // An invented peerId naming someone else's address, and one that
    // answered before but now claims a new address.
    p.on_message(Time(100_100), gossip_from("victim-claim", 7777, "g-v"));
    p.on_message(Time(100_200), gossip_from("q0", 7778, "g-q0"));
    let effects = p.take_effects();
    // Each GOSSIP gets its one reply, to the claimed address.
    let replies: Vec<u16> = sends(&effects)
        .into_iter()
        .filter(|s| s.1 == "GOSSIP_REPLY")
        .map(|s| s.0)
        .collect();
    assert_eq!(replies, vec![7777, 7778]);
    // A catch-up, every retransmission pass and the next round.
    p.on_timer(Time(102_200), Timer::CatchUp);
    for pass in 1..=RETRANSMIT_PASSES {
        let at = Time(100_000 + 5_000 * u64::from(pass));
        fire_retransmit(&mut p, at, Time(100_000), pass);
    }
    let passes = sends(&p.take_effects());
    p.on_timer(Time(130_000), Timer::Gossip);
    // Everything since the two GOSSIPs came (forwards included).
    let all: Vec<_> = sends(&effects)
        .iter()
        .chain(&passes)
        .chain(&sends(&p.take_effects()))
        .cloned()
        .collect();
    for port in [7777, 7778] {
        let n = all
            .iter()
            .filter(|s| s.0 == port && s.1 == "GOSSIP")
            .count();
        assert!(n <= 1, "{port} sent {n} GOSSIPs: {all:?}");
    }
    // q1..q3 answered at their addresses and missed this round's
    // reply: they still get every pass.
    for port in 9101..=9103 {
        assert_eq!(passes.iter().filter(|s| s.0 == port).count(), 5);
    }
}

#[test]
fn in_the_start_window_a_peer_that_never_answered_gets_every_retransmission() {
    let mut p = peer();
    round_with_peers(&mut p, 4);
    // A restart forgot who answered: q9 found by its GOSSIP at 30.1 s.
    p.on_message(Time(30_100), gossip_from("q9", 9109, "g9"));
    p.take_effects();
    for pass in 1..=RETRANSMIT_PASSES {
        let at = Time(30_000 + 5_000 * u64::from(pass));
        fire_retransmit(&mut p, at, Time(30_000), pass);
    }
    let passes = sends(&p.take_effects());
    assert_eq!(passes.iter().filter(|s| s.0 == 9109).count(), 5);
}

#[test]
fn a_peer_moving_back_to_the_address_it_answered_from_is_answered_again() {
    let mut p = peer();
    p.start(Time(0));
    p.on_message(Time(100), reply_from("q", 9001));
    p.on_message(Time(200), gossip_from("q", 7777, "g1"));
    assert_eq!(
        p.members().get(&"q".into()).map(|s| s.answered),
        Some(false)
    );
    p.on_message(Time(300), gossip_from("q", 9001, "g2"));
    assert_eq!(p.members().get(&"q".into()).map(|s| s.answered), Some(true));
}

#[test]
fn a_repeated_gossip_id_is_answered_once_per_limit_and_never_forwarded() {
    let mut p = peer();
    p.start(Time(0));
    for k in 0..5u16 {
        p.on_message(Time(1), reply_from(&format!("r{k}"), 9100 + k));
    }
    p.take_effects();
    // The fresh id: answered and forwarded.
    p.on_message(Time(10_000), gossip_from("q", 9001, "g"));
    let first = sends(&p.take_effects());
    assert!(first.contains(&(9001, "GOSSIP_REPLY", String::new())));
    assert!(first.iter().any(|s| s.1 == "GOSSIP" && s.2 == "g"));
    // Copies of the same flood, within the repeat limit: ignored.
    p.on_message(Time(10_200), gossip_from("q", 9001, "g"));
    p.on_message(Time(12_900), gossip_from("q", 9001, "g"));
    assert_eq!(sends(&p.take_effects()), vec![]);
    // A retransmission later: answered, not forwarded.
    p.on_message(Time(13_000), gossip_from("q", 9001, "g"));
    assert_eq!(
        sends(&p.take_effects()),
        vec![(9001, "GOSSIP_REPLY", String::new())]
    );
    p.on_message(Time(14_000), gossip_from("q", 9001, "g"));
    assert_eq!(sends(&p.take_effects()), vec![]);
    // From a new address: tracked there and answered there.
    p.on_message(Time(16_000), gossip_from("q", 9050, "g"));
    assert_eq!(
        sends(&p.take_effects()),
        vec![(9050, "GOSSIP_REPLY", String::new())]
    );
    assert_eq!(
        p.members().get(&"q".into()).map(|s| s.addr.port),
        Some(9050)
    );
    assert_eq!(
        p.members().get(&"q".into()).map(|s| s.last_seen),
        Some(Time(16_000))
    );
    // One claiming to be us is ignored, repeat or not.
    p.on_message(Time(20_000), gossip_from("me", 9000, "g"));
    assert!(p.take_effects().is_empty());
}

#[test]
fn a_repeat_from_an_untracked_peer_tracks_it_and_asks_for_a_catch_up() {
    let mut p = peer();
    p.start(Time(0));
    p.on_message(Time(1_000), gossip_from("q", 9001, "g"));
    p.on_timer(Time(3_000), Timer::CatchUp);
    // q expires; its GOSSIP comes again (retransmitted).
    p.on_timer(Time(70_000), Timer::Sweep);
    assert!(p.members().is_empty());
    p.take_effects();
    p.on_message(Time(71_000), gossip_from("q", 9001, "g"));
    let effects = p.take_effects();
    assert!(p.members().contains(&"q".into()));
    assert_eq!(sends(&effects), vec![(9001, "GOSSIP_REPLY", String::new())]);
    assert_eq!(catch_ups(&effects).len(), 1);
}

/// When the retransmissions in `effects` are scheduled.
fn retransmits(effects: &[Effect]) -> Vec<(Time, Time, u8)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Schedule {
                at,
                timer: Timer::Retransmit { round, pass },
            } => Some((*at, *round, *pass)),
            _ => None,
        })
        .collect()
}

/// GOSSIP_REPLYs from q{k} (port 9100 + k) for every k in `ks`, at `at`.
fn replies_from(p: &mut Peer, at: Time, ks: impl IntoIterator<Item = u16>) {
    for k in ks {
        p.on_message(at, reply_from(&format!("q{k}"), 9100 + k));
    }
}

/// Fires retransmission pass `pass` of the round that began at `round`.
fn fire_retransmit(p: &mut Peer, at: Time, round: Time, pass: u8) {
    p.on_timer(at, Timer::Retransmit { round, pass });
}

/// A started peer tracking q0..q{n-1} (ports 9100..), whose round at
/// 30 s went out; returns the round's GOSSIP id.
fn round_with_peers(p: &mut Peer, n: u16) -> String {
    p.start(Time(0));
    replies_from(p, Time(1), 0..n);
    p.take_effects();
    p.on_timer(Time(30_000), Timer::Gossip);
    let effects = p.take_effects();
    assert_eq!(
        retransmits(&effects),
        vec![(Time(35_000), Time(30_000), 1)],
        "the round schedules its first pass"
    );
    sends(&effects)[0].2.clone()
}

#[test]
fn the_retransmission_goes_only_to_peers_whose_reply_is_missing_and_is_capped() {
    let mut p = peer();
    let round_id = round_with_peers(&mut p, 50);
    // q0..q9 answer the round; the 40 others do not.
    replies_from(&mut p, Time(30_500), 0..10u16);
    p.take_effects();
    fire_retransmit(&mut p, Time(35_000), Time(30_000), 1);
    let effects = p.take_effects();
    let to = sends(&effects);
    assert_eq!(to.len(), RETRANSMIT_MAX_TARGETS);
    for (port, kind, id) in &to {
        assert_eq!((*kind, id), ("GOSSIP", &round_id));
        assert!(*port >= 9110, "q{} answered already", port - 9100);
    }
    let distinct: std::collections::BTreeSet<u16> = to.iter().map(|s| s.0).collect();
    assert_eq!(distinct.len(), to.len());
    assert_eq!(retransmits(&effects), vec![(Time(40_000), Time(30_000), 2)]);
    // All but q42 answer; the last pass goes to q42 alone and schedules
    // no further pass.
    replies_from(&mut p, Time(36_000), (10..50u16).filter(|k| *k != 42));
    p.take_effects();
    fire_retransmit(&mut p, Time(40_000), Time(30_000), RETRANSMIT_PASSES);
    let effects = p.take_effects();
    assert_eq!(sends(&effects), vec![(9142, "GOSSIP", round_id)]);
    assert!(retransmits(&effects).is_empty());
}

#[test]
fn a_peer_tracking_no_one_knocks_on_the_well_known_peers_at_every_pass() {
    let mut p = peer();
    p.start(Time(0));
    let effects = p.take_effects();
    assert_eq!(sends(&effects).len(), 1, "the round to the well-known peer");
    let round_id = sends(&effects)[0].2.clone();
    // Its GOSSIP was lost: no reply. Every pass sends it again (the same
    // id), to the well-known peer only.
    let round = Time(0);
    let delay = RETRANSMIT_DELAY.as_millis() as u64;
    for pass in 1..=RETRANSMIT_PASSES {
        fire_retransmit(&mut p, Time(delay * pass as u64), round, pass);
        let effects = p.take_effects();
        assert_eq!(
            sends(&effects),
            vec![(9999, "GOSSIP", round_id.clone())],
            "pass {pass}"
        );
    }
    // Once we track anyone, even a peer that is not well-known, the
    // passes stop knocking (the round itself still tries one untracked
    // well-known peer, see `gossip_round`).
    let mut q = peer();
    q.start(Time(0));
    q.take_effects();
    replies_from(&mut q, Time(100), [0]);
    q.take_effects();
    fire_retransmit(&mut q, Time(delay), round, 1);
    assert_eq!(sends(&q.take_effects()), vec![]);
}

#[test]
fn no_retransmission_when_every_reply_came() {
    let mut p = peer();
    round_with_peers(&mut p, 10);
    replies_from(&mut p, Time(30_300), 0..10u16);
    p.take_effects();
    fire_retransmit(&mut p, Time(35_000), Time(30_000), 1);
    assert_eq!(sends(&p.take_effects()), vec![]);
}

#[test]
fn a_stale_retransmission_timer_does_nothing() {
    let mut p = peer();
    round_with_peers(&mut p, 10);
    // The next round began: the last one's timers are stale.
    p.on_timer(Time(60_000), Timer::Gossip);
    p.take_effects();
    for pass in 1..=RETRANSMIT_PASSES {
        fire_retransmit(&mut p, Time(60_100), Time(30_000), pass);
        assert!(p.take_effects().is_empty(), "pass {pass}");
    }
    // Before any round (a timer from before a restart): nothing either.
    let mut fresh = peer();
    fire_retransmit(&mut fresh, Time(5_000), Time(0), 1);
    assert!(fresh.take_effects().is_empty());
}

#[test]
fn a_reply_overtaken_by_an_announce_does_not_undo_it() {
    let mut p = peer();
    p.start(Time(0));
    p.on_message(Time(100), reply_from("q", 9001));
    p.on_message(
        Time(5_000),
        Message::Announce {
            from: "q".into(),
            file: record("f", "owner"),
        },
    );
    // q's reply, sent before its download ended, arrives after the
    // ANNOUNCE: q still holds f.
    p.on_message(Time(5_150), reply_from("q", 9001));
    let holders = |p: &Peer| p.catalog().get(&"f".into()).map(|e| e.holders.len());
    assert_eq!(holders(&p), Some(1));
    // A later reply without f means q no longer holds it.
    p.on_message(Time(8_000), reply_from("q", 9001));
    assert_eq!(holders(&p), None);
}

#[test]
fn the_round_goes_first_to_a_peer_silent_for_a_gossip_interval() {
    for seed in 0..20 {
        let mut p = peer();
        p.rng = SmallRng::seed_from_u64(seed);
        p.start(Time(0));
        replies_from(&mut p, Time(1), 0..10u16);
        // All but q7 are heard from again.
        replies_from(&mut p, Time(25_000), (0..10u16).filter(|k| *k != 7));
        p.take_effects();
        p.on_timer(Time(31_000), Timer::Gossip);
        // (The untracked well-known peer gets the round too.)
        let to: Vec<u16> = sends(&p.take_effects())
            .iter()
            .map(|s| s.0)
            .filter(|port| *port != 9999)
            .collect();
        assert_eq!(to.len(), GOSSIP_FANOUT);
        assert!(to.contains(&9107), "seed {seed}: {to:?}");
    }
}

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

fn printed(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Print(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_verified_push_during_a_download_ends_it_with_one_copy() {
    let (mut p, t, attempt, _) = fetching_f(Some("/tmp/out.txt"));
    assert!(
        !p.wants_push(&"f".into(), false),
        "an unverified push waits"
    );
    assert!(p.wants_push(&"f".into(), true));
    p.on_file_received(Time(1_500), record("f", "owner"), "f.txt".into(), true);
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
            .any(|l| l.contains(" in 250 ms (0.0 MB/s) from ")),
        "{lines:?}"
    );
}

#[test]
fn a_kept_unverified_copy_reports_the_time_of_the_attempt_that_sent_it() {
    let (mut p, t, first, _) = fetching_f(None);
    // The first source sends bytes that don't match, in 400 ms...
    p.on_fetch_result(Time(1_400), t, first, FetchResult::Unverified { len: 3 });
    let second = p.take_effects().into_iter().find_map(|e| match e {
        Effect::Fetch { attempt, .. } => Some(attempt),
        _ => None,
    });
    // ...the second fails after 5 s; the first's copy is kept.
    p.on_fetch_result(
        Time(6_400),
        t,
        second.expect("second source tried"),
        FetchResult::Failed("no progress".into()),
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
            .any(|l| l.contains(" in 400 ms (0.0 MB/s) from ") && l.contains("UNVERIFIED")),
        "{lines:?}"
    );
}
