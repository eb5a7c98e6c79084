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

// Known failure (issue 17 still open). Origins now suspect a host once one of their attempts on
// it goes overdue, but each origin learns on its own and every capture still costs its task
// timeout_s + grace: 20 of 313 honest tasks captured, mean wait to the useful attempt 6.2 s
// against 22 ms (the wait to first placement is unchanged). Needs a cheaper way to tell a
// silent host from a slow task than the time limit.
#[test]
#[ignore = "known failure: each capture costs timeout_s + grace (docs/simulation.md, Byzantine)"]
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

// Known failure (issue 17 still open): 6 attackers at 100 bids/s, each under its fair share,
// together keep hosts' capacity reserved for made-up tasks, and honest waits grow. Needs
// reservations capped per origin by what it let expire unused, not only at half the host.
#[test]
#[ignore = "known failure: flooded reservations slow honest placement (docs/simulation.md, Byzantine)"]
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

// Known failure (issue 17 still open): minted identities that each attacker introduces within
// its budget still become most of an honest node's gossip targets, dead ends all; heartbeats
// stop spreading and honest nodes are falsely judged dead (3,087 state changes at 60 nodes).
// The multi-process twin is tests/tests/byzantine_identities.rs's ignored test.
#[test]
#[ignore = "known failure: minted identities dilute gossip, false deaths (docs/simulation.md, Byzantine)"]
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
