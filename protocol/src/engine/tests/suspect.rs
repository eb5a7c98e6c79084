//! Hosts that never finish: an origin gives their attempt up at `timeout_s` plus the grace,
//! places it elsewhere, and holds the host suspect (asked last, chosen only when nobody else
//! offers) until `placement.suspect_for` passes. Driven through the engine harness's virtual time.
//!
//! Test-only: never reads a clock; every failing assertion names the seed.

use super::*;
use crate::placement::{DEFAULT_SUSPECT_FOR, MAX_SUSPECTS};

const TIMEOUT_S: u64 = 10;

fn spec_with_timeout() -> TaskSpec {
    let mut spec = spec_for(&["hosts"]);
    spec.timeout_s = TIMEOUT_S;
    spec.max_attempts = 3;
    spec
}

/// Origin 0 (no slots) and two hosts of org "hosts"; both hosts muted until the first attempt
/// of a task lands on one of them, which stays muted: the rogue. Returns the task and the rogue.
fn rogue_takes_a_task(w: &mut World) -> (TaskId, usize) {
    w.settle();
    w.muted.extend([1, 2]);
    let id = w.submit(ORIGIN, spec_with_timeout(), vec![Behaviour::new(1_000, 100)]);
    let placed = w.run_until(30_000, |w| w.placed(ORIGIN, id, Attempt(1)).is_some());
    assert!(placed, "seed {}: attempt 1 was never placed", w.seed);
    let rogue = w.placed(ORIGIN, id, Attempt(1)).unwrap_or(1);
    w.muted.remove(&(3 - rogue));
    (id, rogue)
}

/// Submits a short task and runs until its first attempt is placed; returns where.
fn place_one(w: &mut World) -> (TaskId, Option<usize>) {
    let id = w.submit(ORIGIN, spec_with_timeout(), vec![Behaviour::new(200, 10)]);
    w.run_until(30_000, |w| w.placed(ORIGIN, id, Attempt(1)).is_some());
    (id, w.placed(ORIGIN, id, Attempt(1)))
}

/// The done-criterion at engine level: the task a never-finishing host took moves to the other
/// host by `timeout_s` plus the grace (plus the re-placement back-off), succeeds there, and the
/// origin's next tasks do not go to the rogue.
#[test]
fn a_host_that_renews_but_never_finishes_loses_the_task_and_the_next_ones() {
    let mut w = World::new(SEED, &[("acme", 0), ("hosts", 2), ("hosts", 2)]);
    let (id, rogue) = rogue_takes_a_task(&mut w);
    let honest = 3 - rogue;
    let placed_at = w.placed_at(ORIGIN, id, Attempt(1)).unwrap_or_default();
    assert_eq!(w.finish(ORIGIN, id, 120_000), TaskStatus::Succeeded, "seed {}", w.seed);
    assert_eq!(w.placed(ORIGIN, id, Attempt(2)), Some(honest), "seed {}: re-placed on the rogue", w.seed);
    let moved_at = w.placed_at(ORIGIN, id, Attempt(2)).unwrap_or(u64::MAX);
    let grace = LeaseConfig::default().overdue_grace.as_millis() as u64;
    let bound = TIMEOUT_S * 1000 + grace + LifeConfig::default().replace_backoff_max.as_millis() as u64;
    assert!(
        moved_at - placed_at <= bound,
        "seed {}: moved {} ms after placement, bound {bound}",
        w.seed,
        moved_at - placed_at
    );
    // The rogue renewed all along: it was not silent, it just never finished.
    let renewals = w.nodes[rogue].sent.iter().filter(|(_, s)| s.starts_with("task.renew")).count();
    assert!(renewals > 0, "seed {}: the rogue never renewed", w.seed);
    let c = w.counters(ORIGIN);
    assert_eq!((c.attempts_overdue, c.hosts_suspected), (1, 1), "seed {}: {c:?}", w.seed);
    let now = w.local_now(ORIGIN).time;
    assert!(w.engine(ORIGIN).negotiator().is_suspect(&w.nodes[rogue].id, now));
    assert!(!w.engine(ORIGIN).negotiator().is_suspect(&w.nodes[honest].id, now));
    // Both hosts have room and both offer; the suspect one never wins.
    for _ in 0..6 {
        let (next, on) = place_one(&mut w);
        assert_eq!(on, Some(honest), "seed {}: a later task went to the suspect host", w.seed);
        assert_eq!(w.finish(ORIGIN, next, 30_000), TaskStatus::Succeeded);
    }
}

/// Suspicion is a last resort, not a ban: with the honest host full, a suspect host still gets
/// work (a small mesh keeps working), and once `suspect_for` passed it is forgiven and chosen
/// like any other.
#[test]
fn a_suspect_host_is_a_last_resort_and_is_forgiven_after_suspect_for() {
    let mut w = World::new(SEED, &[("acme", 0), ("hosts", 2), ("hosts", 2)]);
    let (id, rogue) = rogue_takes_a_task(&mut w);
    let honest = 3 - rogue;
    assert_eq!(w.finish(ORIGIN, id, 120_000), TaskStatus::Succeeded);
    w.muted.remove(&rogue);
    // Fill the honest host with two long tasks; the third has only the suspect left.
    let mut long = Vec::new();
    for _ in 0..2 {
        let id = w.submit(ORIGIN, spec_with_timeout(), vec![Behaviour::new(8_000, 10)]);
        w.run_until(30_000, |w| w.placed(ORIGIN, id, Attempt(1)).is_some());
        long.push(id);
    }
    let on: Vec<_> = long.iter().map(|id| w.placed(ORIGIN, *id, Attempt(1))).collect();
    assert_eq!(on, [Some(honest), Some(honest)], "seed {}", w.seed);
    let (last, on) = place_one(&mut w);
    assert_eq!(on, Some(rogue), "seed {}: with the honest host full the suspect must still serve", w.seed);
    assert_eq!(w.finish(ORIGIN, last, 30_000), TaskStatus::Succeeded);
    // Forgiven: after suspect_for, the former suspect wins placements again (its offers and the
    // honest host's are drawn alike).
    w.run_for(DEFAULT_SUSPECT_FOR.as_millis() as u64 + 1_000);
    let now = w.local_now(ORIGIN).time;
    assert!(!w.engine(ORIGIN).negotiator().is_suspect(&w.nodes[rogue].id, now), "seed {}", w.seed);
    let mut on_rogue = 0;
    for _ in 0..8 {
        let (next, on) = place_one(&mut w);
        on_rogue += usize::from(on == Some(rogue));
        assert_eq!(w.finish(ORIGIN, next, 30_000), TaskStatus::Succeeded);
    }
    assert!(on_rogue > 0, "seed {}: the forgiven host got none of 8 placements", w.seed);
}

/// Minted identities cannot grow the record: at most `MAX_SUSPECTS` hosts are held, and a
/// repeat strike while suspect adds to the strikes, not to the table.
#[test]
fn the_suspect_record_is_bounded_and_strikes_accumulate() {
    let mut n = Negotiator::new(
        PeerId::new("12D3KooWorigin").expect("test id"),
        org("acme"),
        PlacementConfig::default(),
        rng(SEED, 0, 0, 9),
    );
    let now = Time(LOCAL_EPOCH);
    // Base58 ids: the index written in digits that alphabet has.
    let peer = |mut i: usize| {
        const DIGITS: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
        let mut id = String::from("12D3KooWm");
        loop {
            id.push(char::from(DIGITS[i % DIGITS.len()]));
            i /= DIGITS.len();
            if i == 0 {
                break;
            }
        }
        PeerId::new(id).expect("base58 test id")
    };
    for i in 0..MAX_SUSPECTS + 500 {
        n.suspect(&peer(i), now + Duration::from_millis(i as u64));
    }
    assert_eq!(n.suspects_remembered(), MAX_SUSPECTS);
    let late = now + Duration::from_millis((MAX_SUSPECTS + 500) as u64);
    assert!(n.is_suspect(&peer(MAX_SUSPECTS + 499), late), "the newest suspect is kept");
    assert!(!n.is_suspect(&peer(0), late), "the one whose suspicion ends first went");
    assert!(!n.suspect(&peer(MAX_SUSPECTS + 499), late), "already suspect: not a new suspicion");
    assert_eq!(n.strikes(&peer(MAX_SUSPECTS + 499), late), 2);
    assert_eq!(n.suspects_remembered(), MAX_SUSPECTS);
    let forgiven = late + DEFAULT_SUSPECT_FOR;
    assert_eq!(n.strikes(&peer(MAX_SUSPECTS + 499), forgiven), 0);
    assert!(n.suspect(&peer(MAX_SUSPECTS + 499), forgiven), "a strike after forgiveness starts over");
    assert_eq!(n.strikes(&peer(MAX_SUSPECTS + 499), forgiven), 1);
}

/// A host that renews but never even reports `Started` is caught by `start_within`, long before
/// the spec's `timeout_s` (an hour here): the task moves, and the host is suspect.
#[test]
fn a_host_that_renews_without_starting_loses_the_task_within_start_within() {
    let mut w = World::new(SEED, &[("acme", 0), ("hosts", 2), ("hosts", 2)]);
    w.settle();
    w.muted.extend([1, 2]);
    let mut spec = spec_for(&["hosts"]);
    spec.timeout_s = 3600;
    spec.max_attempts = 3;
    let id = w.submit(ORIGIN, spec, vec![Behaviour::new(1_000, 100)]);
    let placed = w.run_until(30_000, |w| w.placed(ORIGIN, id, Attempt(1)).is_some());
    assert!(placed, "seed {}: attempt 1 was never placed", w.seed);
    let rogue = w.placed(ORIGIN, id, Attempt(1)).unwrap_or(1);
    let honest = 3 - rogue;
    w.muted.remove(&honest);
    let placed_at = w.placed_at(ORIGIN, id, Attempt(1)).unwrap_or_default();
    assert_eq!(w.finish(ORIGIN, id, 300_000), TaskStatus::Succeeded, "seed {}", w.seed);
    assert_eq!(w.placed(ORIGIN, id, Attempt(2)), Some(honest), "seed {}", w.seed);
    let moved = w.placed_at(ORIGIN, id, Attempt(2)).unwrap_or(u64::MAX) - placed_at;
    let within = LeaseConfig::default().start_within.as_millis() as u64;
    let backoff = LifeConfig::default().replace_backoff_max.as_millis() as u64;
    assert!(
        moved > within && moved <= within + 2_000 + backoff,
        "seed {}: moved {moved} ms after placement, start_within {within} ms",
        w.seed
    );
    let c = w.counters(ORIGIN);
    assert_eq!((c.attempts_unstarted, c.attempts_overdue, c.hosts_suspected), (1, 0, 1), "{c:?}");
    // The host was told to cancel in the answer to its renewal.
    let cancelled = w.answers(rogue, ORIGIN, |r| matches!(r, TaskRequest::Renew { .. })).into_iter().any(
        |a| matches!(a, Some(TaskResponse::Leases { cancel, .. }) if cancel.contains(&(id, Attempt(1)))),
    );
    assert!(cancelled, "seed {}: the rogue was never told to cancel", w.seed);
}
