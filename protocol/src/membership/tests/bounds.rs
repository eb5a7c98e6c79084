//! Tests of the membership table's bounds: minted identities cannot grow it past its cap, push
//! out members worth more, or churn it faster than each sender's budget allows. Tests only.

use super::*;

/// A minted identity: never a real node, only named by the rogue that relays it.
fn minted(i: usize) -> PeerId {
    let tag: String = format!("{i:06}").bytes().map(|d| char::from(b'a' + (d - b'0'))).collect();
    PeerId::new(format!("12D3KooWmint{tag}")).unwrap()
}

fn push_at(m: &mut Node, from: &PeerId, updates: Vec<GossipUpdate>, at: Time) -> Vec<MembershipOutput> {
    assert_eq!(m.handle_request(from, GossipRequest::Push { updates }, at), GossipResponse::Done);
    drain(m)
}

fn minted_batch(range: std::ops::Range<usize>) -> Vec<GossipUpdate> {
    range.map(|i| update(record(&minted(i), 1), &minted(i), 1)).collect()
}

fn evicted(outputs: &[MembershipOutput]) -> Vec<PeerId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            MembershipOutput::Event(MembershipEvent::Evicted { peer }) => Some(peer.clone()),
            _ => None,
        })
        .collect()
}

fn small(cap: usize) -> MembershipConfig {
    MembershipConfig { max_members: cap, ..MembershipConfig::default() }
}

/// Honest peers that spoke to us themselves, each sending its own record.
fn with_direct_peers(m: &mut Node, n: usize) -> Vec<PeerId> {
    let honest: Vec<PeerId> = (1..=n).map(peer_id).collect();
    for p in &honest {
        push_at(m, p, vec![update(record(p, 1), p, 1)], Time(1));
    }
    honest
}

#[test]
fn minted_identities_from_many_senders_never_grow_the_table_past_its_cap_nor_evict_honest_peers() {
    let cap = 300;
    let mut m = node(&peer_id(0), 1, 1, small(cap));
    let honest = with_direct_peers(&mut m, 10);
    // 20 rogue senders (connections are as cheap to mint as records), 256 records a message.
    let mut all = Vec::new();
    for round in 0..40 {
        let rogue = minted(900_000 + round % 20);
        let at = Time(2 + round as u64);
        all.extend(push_at(&mut m, &rogue, minted_batch(round * 256..(round + 1) * 256), at));
    }
    assert!(m.peers().len() <= cap, "{} members, cap {cap}", m.peers().len());
    for p in &honest {
        assert!(m.peer(p).is_some(), "honest peer {p} was evicted");
    }
    let stats = m.bound_stats();
    assert!(stats.members_refused > 9_000, "{stats:?}");
    assert_eq!(stats.members_evicted, 0, "alive minted members are worth as much as minted newcomers");
    assert!(evicted(&all).is_empty());
}

#[test]
fn dead_relayed_members_make_room_but_the_honest_stay() {
    let cap = 100;
    let mut m = node(&peer_id(0), 1, 1, small(cap));
    let honest = with_direct_peers(&mut m, 5);
    push_at(&mut m, &minted(999_999), minted_batch(0..95), Time(1));
    assert_eq!(m.peers().len(), cap);
    // A minute of silence: every minted member and (without their rounds here) the honest ones
    // are dead by now; the honest were heard directly, so they stay.
    m.handle_timeout(Time(60_000));
    drain(&mut m);
    let outputs = push_at(&mut m, &minted(999_998), minted_batch(1_000..1_050), Time(60_001));
    let gone = evicted(&outputs);
    assert_eq!(gone.len(), 50, "fresh newcomers displace dead relayed members");
    assert!(gone.iter().all(|p| !honest.contains(p)));
    assert!(m.peers().len() <= cap);
    assert_eq!(m.bound_stats().members_evicted, 50);
}

#[test]
fn a_peer_heard_directly_gets_into_a_table_full_of_relayed_identities() {
    let cap = 50;
    let mut m = node(&peer_id(0), 1, 1, small(cap));
    push_at(&mut m, &minted(999_999), minted_batch(0..50), Time(1));
    assert_eq!(m.peers().len(), cap);
    let newcomer = peer_id(77);
    let outputs = push_at(&mut m, &newcomer, vec![update(record(&newcomer, 1), &newcomer, 1)], Time(2));
    assert!(m.peer(&newcomer).is_some(), "a direct newcomer outranks a relayed one");
    assert_eq!(evicted(&outputs).len(), 1);
    assert_eq!(m.peers().len(), cap);
    // The same peer relayed by a stranger instead is refused: nothing in the table is worth less.
    let relayed = peer_id(78);
    push_at(&mut m, &minted(999_999), vec![update(record(&relayed, 1), &relayed, 1)], Time(3));
    assert!(m.peer(&relayed).is_none());
}

#[test]
fn seeds_are_kept_over_anyone() {
    let cap = 20;
    let mut m = node(&peer_id(0), 1, 1, small(cap));
    let seed = peer_id(1);
    m.add_contact(seed.clone(), Time(0));
    // The seed's record arrives relayed, and it then falls silent: still trusted.
    push_at(&mut m, &minted(999_999), vec![update(record(&seed, 1), &seed, 1)], Time(1));
    push_at(&mut m, &minted(999_999), minted_batch(0..19), Time(1));
    m.handle_timeout(Time(60_000));
    drain(&mut m);
    for round in 0..5 {
        let at = Time(60_001 + round);
        let batch = minted_batch(100 + round as usize * 20..120 + round as usize * 20);
        push_at(&mut m, &peer_id(100 + round as usize), batch, at);
    }
    assert!(m.peer(&seed).is_some(), "the seed stays");
    assert!(m.peers().len() <= cap);
}

#[test]
fn one_sender_adds_at_most_its_budget_of_new_identities_a_minute() {
    let cap = 2_000;
    let budget = (cap / 4).max(MAX_UPDATES);
    let mut m = node(&peer_id(0), 1, 1, small(cap));
    let rogue = minted(999_999);
    for round in 0..8 {
        push_at(&mut m, &rogue, minted_batch(round * 256..(round + 1) * 256), Time(1 + round as u64));
    }
    assert_eq!(m.peers().len(), budget);
    assert_eq!(m.bound_stats().introductions_refused, (8 * 256 - budget) as u64);
    // A minute later it may add as many again.
    push_at(&mut m, &rogue, minted_batch(10_000..10_256), Time(61_000));
    assert_eq!(m.peers().len(), budget + 256);
}

#[test]
fn contacts_are_bounded() {
    let mut m = node(&peer_id(0), 1, 1, MembershipConfig::default());
    for i in 0..5_000 {
        m.add_contact(minted(i), Time(0));
    }
    assert!(m.contacts.len() <= MAX_CONTACTS);
}
