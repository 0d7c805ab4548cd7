//! The range extension's advertisement: who says it serves ranges, what
//! we say, and what we forward.

use super::*;

fn ranged(msg: Message) -> Message {
    match msg {
        Message::Gossip {
            host,
            port,
            id,
            peer_id,
            ..
        } => Message::Gossip {
            host,
            port,
            id,
            peer_id,
            ranges: true,
        },
        Message::GossipReply {
            host,
            port,
            peer_id,
            files,
            ..
        } => Message::GossipReply {
            host,
            port,
            peer_id,
            files,
            ranges: true,
        },
        other => other,
    }
}

fn shows_ranges(p: &Peer, who: &str) -> Option<bool> {
    p.view(Time(0))
        .peers
        .iter()
        .find(|v| v.peer_id == who)
        .map(|v| v.ranges)
}

#[test]
fn a_peer_is_ranged_from_a_gossip_saying_so_until_its_own_reply_says_otherwise() {
    let mut p = peer();
    p.on_message(Time(0), ranged(gossip_from("rust", 9101, "g1")));
    p.on_message(Time(0), reply_from("python", 9102));
    assert_eq!(shows_ranges(&p, "rust"), Some(true));
    assert_eq!(shows_ranges(&p, "python"), Some(false));
    // An R-style peer re-mints the GOSSIPs it forwards, without the key:
    // that says nothing about the peer named.
    p.on_message(Time(0), gossip_from("rust", 9101, "g2"));
    assert_eq!(shows_ranges(&p, "rust"), Some(true));
    // Its own reply without the flag does (a Python peer took the peerId).
    p.on_message(Time(0), reply_from("rust", 9101));
    assert_eq!(shows_ranges(&p, "rust"), Some(false));
    p.on_message(Time(0), ranged(reply_from("rust", 9101)));
    assert_eq!(shows_ranges(&p, "rust"), Some(true));
}

#[test]
fn our_gossip_and_reply_advertise_ranges_and_forwards_keep_the_originators_flag() {
    let mut p = peer();
    for port in 9201..9205 {
        p.on_message(Time(0), reply_from(&format!("t{port}"), port));
    }
    p.take_effects();
    p.on_message(Time(0), gossip_from("python", 9300, "g-python"));
    p.on_message(Time(0), ranged(gossip_from("rust", 9301, "g-rust")));
    let mut replies = 0;
    let mut forwards = 0;
    for e in p.take_effects() {
        let Effect::Send { msg, .. } = e else {
            continue;
        };
        match msg {
            Message::GossipReply { ranges, .. } => {
                assert!(ranges, "our reply advertises ranges");
                replies += 1;
            }
            Message::Gossip { id, ranges, .. } => {
                assert_eq!(ranges, id == "g-rust", "forward of {id}");
                forwards += 1;
            }
            _ => {}
        }
    }
    assert_eq!(replies, 2);
    assert!(forwards >= 2, "both GOSSIPs forwarded ({forwards})");
}
