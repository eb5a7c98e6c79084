//! The byzantine scenarios at CI size (`sim/scenarios/ci-byzantine.toml`: 60 nodes, 10% hostile), one
//! test per attack, each against the baseline of the same scenario and seed with the attackers
//! behaving. Each checks that the attack was made (so a test cannot pass because nothing
//! attacked), then issue 17's criteria: no honest task lost, no honest node falsely declared dead,
//! and no gross regression of honest placement wait (the 1.2× figure is measured at 1,000 nodes in
//! docs/simulation.md; here, where a wait is a few milliseconds, the check is a factor of 3 on the
//! mean wait for the attempt that finished). A failure prints both reports.

use std::path::Path;
use std::sync::OnceLock;

use orgmesh_sim::Report;
use orgmesh_sim::report::ByzantineReport;
use orgmesh_sim::scenario::{Attack, Scenario};

const SEED: u64 = 1;
/// Gross regression bound on the honest mean wait, attack over baseline.
const WAIT_RATIO_MAX: f64 = 3.0;

fn base() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/ci-byzantine.toml");
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e:#}"))
}

fn run(s: Scenario) -> Report {
    orgmesh_sim::run(s, SEED, None, false).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The baseline, run once for every test: every attack shares it.
fn baseline() -> &'static Report {
    static BASELINE: OnceLock<Report> = OnceLock::new();
    BASELINE.get_or_init(|| run(base().honest_baseline()))
}

/// Runs the attack; checks the baseline is clean and the run's own invariants.
fn attack(a: Attack) -> (Report, ByzantineReport, ByzantineReport) {
    let mut s = base();
    s.byzantine.attack = Some(a);
    let baseline = baseline();
    let report = run(s);
    let b = baseline.byzantine.clone().unwrap_or_else(|| panic!("no byzantine section:\n{baseline}"));
    let r = report.byzantine.clone().unwrap_or_else(|| panic!("no byzantine section:\n{report}"));
    assert!(baseline.ok() && b.honest_lost == 0 && b.false_dead == 0, "baseline not clean:\n{baseline}");
    assert_eq!(r.attack, Some(a), "{report}");
    assert_eq!((r.attackers, r.honest_tasks), (b.attackers, b.honest_tasks), "same nodes, same tasks");
    assert!(r.honest_tasks > 200, "{report}");
    assert!(report.ok(), "{report}");
    (report, r, b)
}

/// Issue 17's criteria for one attack.
fn holds(report: &Report, r: &ByzantineReport, b: &ByzantineReport) {
    assert_eq!(r.honest_lost, 0, "honest tasks lost:\n{report}");
    assert_eq!(r.false_dead, 0, "honest nodes falsely declared dead:\n{report}");
    let ratio = r.useful_wait_ms.mean / b.useful_wait_ms.mean.max(1e-3);
    assert!(
        ratio < WAIT_RATIO_MAX,
        "honest wait mean {:.1} ms against {:.1} ms without the attack ({ratio:.1}×):\n{report}",
        r.useful_wait_ms.mean,
        b.useful_wait_ms.mean
    );
}

#[test]
fn forged_heartbeats_are_dropped_and_kill_nobody() {
    let (report, r, b) = attack(Attack::ForgeHeartbeats);
    assert!(r.forged_sent > 1000 && r.forged_dropped > 1000, "{report}");
    holds(&report, &r, &b);
}

#[test]
fn foreign_stop_and_cancel_lists_stop_nothing() {
    let (report, r, b) = attack(Attack::ForeignLeases);
    assert!(r.foreign_sent > 50 && r.foreign_dropped > 50, "{report}");
    holds(&report, &r, &b);
}

// Fails on main (88a45af): honest tasks captured by attackers wait timeout_s + 30 s before they
// are placed again (mean wait ×>100, p99 completion 111 s against 27 s). Un-ignore when origins
// stop choosing hosts whose attempts never finish (issue 17, engine slice).
#[test]
#[ignore = "attack succeeds on main: captured tasks wait timeout_s + grace (docs/simulation.md, Byzantine)"]
fn hosts_that_bid_high_and_never_finish_lose_their_tasks() {
    let (report, r, b) = attack(Attack::BidHighNeverFinish);
    assert!(r.offers_inflated > 20 && r.placed_on_attackers > 5, "{report}");
    assert!(r.attempts_overdue > 5, "captured tasks must be given up past timeout_s:\n{report}");
    holds(&report, &r, &b);
}

/// What already holds against `bid_high_never_finish` on main: nothing is lost, nobody dies, and
/// every captured task is given up and finished elsewhere.
#[test]
fn captured_tasks_are_given_up_past_their_timeout_and_still_succeed() {
    let (report, r, _) = attack(Attack::BidHighNeverFinish);
    assert!(r.offers_inflated > 20 && r.placed_on_attackers > 5, "{report}");
    assert!(r.attempts_overdue >= r.placed_on_attackers, "{report}");
    assert_eq!((r.honest_lost, r.false_dead), (0, 0), "{report}");
}

// Fails on main (88a45af): 6 attackers at 100 bids/s keep hosts' capacity reserved for made-up
// tasks, and honest mean wait grows ×16 (20 ms to 322 ms, p99 1.0 s to 2.1 s). Un-ignore when
// reservations are capped per origin by cost over time, not only at slots/2.
#[test]
#[ignore = "attack succeeds on main: flooded reservations slow honest placement (docs/simulation.md, Byzantine)"]
fn a_bid_flood_does_not_slow_honest_placement() {
    let (report, r, b) = attack(Attack::FloodBids);
    assert!(r.bids_flooded > 10_000, "{report}");
    holds(&report, &r, &b);
}

/// What already holds against `flood_bids` on main: nothing is lost, nobody dies.
#[test]
fn a_bid_flood_loses_nothing() {
    let (report, r, _) = attack(Attack::FloodBids);
    assert!(r.bids_flooded > 10_000, "{report}");
    assert_eq!((r.honest_lost, r.false_dead), (0, 0), "{report}");
}

// Fails on main (88a45af): 1,440 minted identities (6 attackers, 1 push of 8 a second) make 96%
// of every honest node's gossip targets dead ends; heartbeats stop spreading and honest nodes
// are declared dead by the thousands; origins bid to minted hosts and wait 2 s. Un-ignore when
// membership bounds new identities per introducer.
#[test]
#[ignore = "attack succeeds on main: minted identities starve gossip, false deaths (docs/simulation.md, Byzantine)"]
fn minted_identities_kill_nobody() {
    let (report, r, b) = attack(Attack::MintIdentities);
    assert!(r.identities_minted > 1000, "{report}");
    holds(&report, &r, &b);
}

/// What already holds against `mint_identities` on main: no honest task is lost.
#[test]
fn minted_identities_lose_no_task() {
    let (report, r, _) = attack(Attack::MintIdentities);
    assert!(r.identities_minted > 1000, "{report}");
    assert_eq!(r.honest_lost, 0, "{report}");
}
