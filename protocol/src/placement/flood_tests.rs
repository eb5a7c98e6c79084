//! Bid floods against one host's ledger: an origin that bids without ever committing holds at
//! most what it can hold alone, gives way to another origin that needs room, cannot hold a
//! reservation for ever by repeating its bid, and cannot grow the ledger past its slots.
//!
//! Test-only; never reads a clock.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ids::{Attempt, Org, PeerId, TaskId};
use crate::placement::{Host, HostConfig};
use crate::record::AcceptPolicy;
use crate::task::{Constraints, Resources};
use crate::time::Time;
use crate::wire::place::{BidRequest, BidResponse, DeclineReason};

const TTL_MS: u64 = 3000;

fn host(slots: u32) -> Host {
    let config = HostConfig {
        cpu_millis: 8000,
        memory_mb: 8192,
        gpus: 0,
        slots,
        reservation_ttl: Duration::from_millis(TTL_MS),
    };
    Host::new(config, Org::new("globex").expect("org"), BTreeMap::new(), AcceptPolicy::AnyOrg)
}

fn peer(s: &str) -> PeerId {
    PeerId::new(s).expect("base58 test id")
}

fn bid(task: u128, memory_mb: u64) -> BidRequest {
    BidRequest {
        task: TaskId::new(1, task),
        attempt: Attempt::FIRST,
        origin_org: Org::new("acme").expect("org"),
        resources: Resources { cpu_millis: 100, memory_mb, gpus: 0 },
        constraints: Constraints::default(),
    }
}

fn is_offer(r: &BidResponse) -> bool {
    matches!(r, BidResponse::Offer { .. })
}

/// 10,000 bids a second for ten seconds from one origin, a fresh task each: the ledger never
/// holds more than its slots, and an honest origin bidding every 100 ms in between (and then
/// releasing, as a negotiation does with an offer it does not take) gets an offer every time.
#[test]
fn an_honest_origin_gets_offers_through_a_flood_of_bids() {
    let mut h = host(8);
    let (rogue, honest) = (peer("12D3KooWrogue"), peer("12D3KooWhonest"));
    let (mut offered, mut busy) = (0u32, 0u32);
    let mut honest_offers = 0;
    for ms in 0..10_000u64 {
        let now = Time(ms);
        for k in 0..10u128 {
            let r = h.handle_bid(&rogue, &bid(u128::from(ms) * 10 + k + 1_000_000, 64), now);
            match r {
                BidResponse::Offer { .. } => offered += 1,
                BidResponse::Decline { reason: DeclineReason::Busy } => busy += 1,
                other => panic!("unexpected answer to the flood: {other:?}"),
            }
            let c = h.capacity();
            assert!(c.free_slots <= c.slots, "the ledger grew past its slots");
        }
        if ms % 100 == 0 {
            let r = h.handle_bid(&honest, &bid(u128::from(ms), 64), now);
            let BidResponse::Offer { reservation, .. } = r else {
                panic!("at {ms} ms the honest origin got {r:?}");
            };
            honest_offers += 1;
            // It placed elsewhere (or committed and finished): either way the slot comes back.
            h.handle_release(&honest, reservation, now);
        }
    }
    assert_eq!(honest_offers, 100);
    assert!(busy > 90_000, "the flood was mostly turned away: {offered} offered, {busy} busy");
}

/// One reservation asking for all the memory counts as more than a fair share: it gives way to
/// another origin's bid, as many small ones would.
#[test]
fn one_reservation_of_everything_gives_way_like_many_small_ones() {
    let mut h = host(8);
    let (rogue, honest) = (peer("12D3KooWrogue"), peer("12D3KooWhonest"));
    assert!(is_offer(&h.handle_bid(&rogue, &bid(1, 8192), Time(0))));
    assert!(is_offer(&h.handle_bid(&honest, &bid(2, 1024), Time(1))), "the hog gives way");
    let again = h.handle_bid(&rogue, &bid(3, 8192), Time(2));
    assert!(
        matches!(again, BidResponse::Decline { reason: DeclineReason::Busy }),
        "and cannot take it back: {again:?}"
    );
}

/// Repeating one bid refreshes its reservation once at most: a rogue repeating it every second
/// loses it after two TTLs, and its offers say how long is left.
#[test]
fn repeating_a_bid_holds_its_reservation_for_two_ttls_at_most() {
    let mut h = host(1);
    let rogue = peer("12D3KooWrogue");
    let mut last_ttl = u32::MAX;
    for s in 0..=5u64 {
        let r = h.handle_bid(&rogue, &bid(1, 64), Time(s * 1000));
        let BidResponse::Offer { ttl_ms, .. } = r else { panic!("repeat {s}: {r:?}") };
        assert!(u64::from(ttl_ms) <= 2 * TTL_MS - s * 1000, "repeat {s} offered {ttl_ms} ms");
        assert!(ttl_ms <= last_ttl);
        last_ttl = ttl_ms;
    }
    // Past two TTLs from the first bid it is gone; a new bid is a new reservation.
    assert_eq!(h.poll_timeout(), Some(Time(2 * TTL_MS)));
    h.handle_timeout(Time(2 * TTL_MS));
    assert_eq!(h.capacity().free_slots, 1, "the held slot was freed");
}
