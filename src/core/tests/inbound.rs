//! What other peers send: GOSSIP floods and repeats, replies, DELETE.

use super::*;

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
            ranges: false,
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
            ranges: false,
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
                ranges: false,
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
fn gossip_left_unanswered_is_counted_by_the_limit_that_held_it() {
    use crate::core::counters::GossipLimit;
    let mut p = peer();
    p.on_message(Time(0), gossip_from("q", 9001, "id-1"));
    // The same id again, and a fresh one within a second of our reply.
    p.on_message(Time(100), gossip_from("q", 9001, "id-1"));
    p.on_message(Time(200), gossip_from("q", 9001, "id-2"));
    let c = p.counters();
    assert_eq!(c.gossip_dropped(GossipLimit::RepeatedId), 1);
    assert_eq!(c.gossip_dropped(GossipLimit::PeerInterval), 1);
    assert_eq!(c.gossip_dropped(GossipLimit::ReplyBudget), 0);
    let long_id = "x".repeat(10_000);
    p.on_message(Time(300), gossip_from("q", 9001, &long_id));
    assert_eq!(p.counters().gossip_dropped(GossipLimit::Oversized), 1);
}

#[test]
fn a_delete_from_someone_not_the_owner_names_both_with_their_addresses() {
    let mut p = peer();
    p.start(Time(0));
    p.on_message(Time(100), reply_from("q", 9001));
    p.on_message(Time(100), reply_from("owner", 9002));
    p.load_entry(Entry {
        record: record("f", "owner"),
        holders: Default::default(),
        local: None,
    });
    let lines = logged(|| {
        p.on_message(
            Time(200),
            Message::Delete {
                from: "q".into(),
                file_id: "f".into(),
            },
        )
    });
    assert!(
        lines.contains(
            &"WARN DELETE of f.txt (f) from q (127.0.0.1:9001) ignored: the owner is \
              owner (127.0.0.1:9002)"
                .to_string()
        ),
        "{lines:?}"
    );
    // An untracked sender is named by its id: its address is unknown.
    let lines = logged(|| {
        p.on_message(
            Time(300),
            Message::Delete {
                from: "stranger".into(),
                file_id: "f".into(),
            },
        )
    });
    assert!(
        lines.iter().any(|l| l.contains("from stranger ignored")),
        "{lines:?}"
    );
}
