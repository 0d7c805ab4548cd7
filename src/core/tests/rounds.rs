//! Our gossip rounds, retransmissions, catch-ups and the sweep.

use super::*;

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
fn a_silent_peer_dropped_is_named_by_its_id_and_address() {
    let mut p = peer();
    p.start(Time(0));
    p.on_message(Time(100), reply_from("q", 9001));
    let lines = logged(|| p.on_timer(Time(70_000), Timer::Sweep));
    let dropped: Vec<&String> = lines.iter().filter(|l| l.contains("dropped")).collect();
    assert_eq!(
        dropped,
        vec!["INFO peer q (127.0.0.1:9001) dropped: silent for more than 60.0 s"],
        "{lines:?}"
    );
    let v = p.view(Time(70_000));
    let event = v.events.last().expect("an event");
    assert_eq!(event.kind, crate::core::view::EventKind::PeerDropped);
    assert_eq!(
        event.text,
        "peer q (127.0.0.1:9001) dropped: silent for more than 60.0 s"
    );
}
