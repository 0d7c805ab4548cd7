//! The binary starts, prints where it listens, and stops cleanly.
mod support;
use support::*;

#[test]
fn peer_prints_its_addresses_and_answers_the_stats_page() {
    let p = PeerBuilder::new("solo").spawn();
    assert!(p.p2p_port > 0 && p.http_port > 0);
    let state = p.state().expect("stats API answers");
    assert_eq!(state["peer_id"], "solo");
    assert_eq!(state["port"], p.p2p_port);
}
