//! The report of one run: what converged how fast, what the mesh cost, how placement compares
//! with an omniscient scheduler, and whether any invariant broke. The JSON form holds only
//! simulated quantities, so the same scenario and seed always give the same bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::stats::Stats;

/// An invariant that broke, with where to replay it from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Violation {
    /// Which invariant.
    pub kind: String,
    /// The index of the event that broke it (`--until-event` stops just before it).
    pub event: u64,
    /// When, simulated seconds.
    pub time_s: f64,
    /// At which node.
    pub node: Option<usize>,
    /// What happened.
    pub detail: String,
}

/// Distribution summary, in the unit its field names.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Dist {
    /// Samples.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Dist {
    fn of(values: &[u64], scale: f64) -> Dist {
        if values.is_empty() {
            return Dist::default();
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 * scale;
        Dist {
            count: v.len(),
            mean: v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 * scale,
            p50: q(0.5),
            p99: q(0.99),
            max: v[v.len() - 1] as f64 * scale,
        }
    }
}

/// Membership figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MembershipReport {
    /// From start until every observer held every node's current record as alive.
    pub startup_convergence_s: Option<f64>,
    /// The same in gossip rounds.
    pub startup_rounds: Option<f64>,
    /// log2 of the mesh size, for comparison.
    pub log2_n: f64,
    /// Restart until every observer holds the new generation as alive, seconds.
    pub join_convergence_s: Dist,
    /// Crash until every observer holds the node dead, seconds.
    pub crash_detection_s: Dist,
    /// Crashed nodes that restarted before the mesh declared them dead.
    pub crashes_restarted_before_detection: u64,
    /// Heal until every observer holds every live node alive in its current generation, seconds.
    pub heal_convergence_s: Dist,
    /// Share of (observer, live node) pairs holding the node's current record version, sampled
    /// every 5 s after start-up: how fresh gossiped capacity is.
    pub capacity_fresh_fraction: f64,
    /// `suspect` verdicts about a process that was up: the node was up and the observer held
    /// its current generation (a verdict on the generation before a restart is not false).
    pub false_suspect: u64,
    /// `dead` verdicts about a process that was up, in the same sense.
    pub false_dead: u64,
    /// `dead` verdicts about the rest.
    pub true_dead: u64,
    /// Records refused (signature, trust).
    pub rejected_records: u64,
}

/// Traffic figures, per node and simulated second.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrafficReport {
    /// All protocols.
    pub msgs_per_node_s: f64,
    /// All protocols.
    pub bytes_per_node_s: f64,
    /// Gossip only.
    pub gossip_msgs_per_node_s: f64,
    /// Gossip only.
    pub gossip_bytes_per_node_s: f64,
    /// Placement only.
    pub place_bytes_per_node_s: f64,
    /// Task reports only.
    pub task_bytes_per_node_s: f64,
    /// Mean digest entries per `Syn`.
    pub digest_entries_mean: f64,
    /// Largest digest.
    pub digest_entries_max: u64,
    /// Signed records received per node and second once arrivals start (after warm-up).
    pub records_per_node_s_under_load: f64,
    /// Of those, newer than the receiver's copy (the rest arrived twice).
    pub records_newer_per_node_s_under_load: f64,
    /// Messages over their wire limit (not sent).
    pub oversized: u64,
    /// Messages that failed to decode.
    pub malformed: u64,
}

/// Task figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskReport {
    /// Offered load (scenario).
    pub load: f64,
    /// Submitted.
    pub submitted: u64,
    /// With an accepted result (`Event::ResultAccepted`: a host's `Finished`, whatever its
    /// outcome).
    pub finished: u64,
    /// `succeeded` in the origins' stores.
    pub succeeded: u64,
    /// `failed` in the origins' stores (unplaceable, queue timeout, out of attempts).
    pub failed: u64,
    /// `cancelled` in the origins' stores.
    pub cancelled: u64,
    /// Cancels the workload asked of an origin that was up.
    pub cancels_requested: u64,
    /// Of those, taken by the engine (the task had not ended yet).
    pub cancels_accepted: u64,
    /// Cancels asked of an origin that was down (refused, as its API would be).
    pub cancels_refused: u64,
    /// Log bytes of ended tasks checked against what their last attempt printed.
    pub log_bytes_checked: u64,
    /// Not ended at the end of the run (includes `stranded`).
    pub never_finished: u64,
    /// Not ended because their origin is down at the end.
    pub stranded_at_down_origin: u64,
    /// Not ended, placed on a host that is down or no longer holds the attempt, while the
    /// origin still holds its lease: the lease runs out and the task is placed again. Not lost.
    pub awaiting_detection: u64,
    /// Attempts given up (lease expired after `replace_after_s`, or reported lost by a
    /// restarted host) and placed again or failed.
    pub attempts_lost: u64,
    /// Of those, given up because the lease ran out: the host stayed away for
    /// `replace_after_s` (it never came back, or not in time).
    pub attempts_expired: u64,
    /// Of those, given up because they ran past `timeout_s` plus the grace.
    pub attempts_overdue: u64,
    /// Lost: nobody will ever end them (must be 0).
    pub lost: u64,
    /// Reports refused by fencing.
    pub stale_reports: u64,
    /// Submissions while no node was up.
    pub submissions_refused: u64,
    /// Start of a negotiation until its commit was accepted, ms.
    pub placement_latency_ms: Dist,
    /// Submit until the first attempt started, ms.
    pub wait_ms: Dist,
    /// The same for the omniscient scheduler on the same arrivals, ms.
    pub omniscient_wait_ms: Dist,
    /// Mean wait over the omniscient mean wait; `None` when the omniscient never waited (any
    /// ratio to zero would be a made-up number, and 0 would read as perfect).
    pub wait_ratio: Option<f64>,
    /// Mean (wait + run time) over the omniscient's.
    pub response_ratio: f64,
    /// CPU used over CPU offered, in the arrival window.
    pub utilization: f64,
    /// The same for the omniscient scheduler.
    pub omniscient_utilization: f64,
}

/// One run's report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Events processed.
    pub events: u64,
    /// Membership.
    pub membership: MembershipReport,
    /// Traffic.
    pub traffic: TrafficReport,
    /// Tasks.
    pub tasks: TaskReport,
    /// Faults injected: crashes, restarts, partitions, pauses.
    pub faults: [u64; 4],
    /// Broken invariants (empty in a good run).
    pub violations: Vec<Violation>,
    /// What the attackers achieved, in a `[byzantine]` run or its honest baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byzantine: Option<ByzantineReport>,
    /// Wall-clock seconds the run took: printed, never in the JSON (it differs between runs).
    #[serde(skip, default)]
    pub wall_seconds: f64,
}

pub(crate) struct Inputs<'a> {
    pub(crate) scenario: &'a Scenario,
    pub(crate) seed: u64,
    pub(crate) events: u64,
    pub(crate) sim_seconds: f64,
    pub(crate) wall: std::time::Duration,
    pub(crate) stats: &'a Stats,
    pub(crate) submitted: u64,
    pub(crate) finished: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    pub(crate) cancels: crate::world::Cancels,
    pub(crate) log_bytes_checked: u64,
    pub(crate) never_finished: u64,
    pub(crate) stranded: u64,
    pub(crate) awaiting_detection: u64,
    pub(crate) counters: orgmesh_protocol::engine::EngineCounters,
    pub(crate) lost: u64,
    pub(crate) waits: Vec<u64>,
    pub(crate) omni_waits: Vec<u64>,
    pub(crate) response_ratio: f64,
    pub(crate) utilization: f64,
    pub(crate) omni_utilization: f64,
    pub(crate) violations: Vec<Violation>,
    pub(crate) byzantine: Option<ByzantineReport>,
}

/// An honest node an honest observer declared dead while it was up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FalseDeath {
    /// Who judged.
    pub observer: usize,
    /// Whom.
    pub victim: usize,
    /// When, simulated seconds.
    pub time_s: f64,
}

/// What the attack achieved. "Honest" tasks are those submitted at honest origins; the workload
/// has no cancels in these scenarios, so an honest task that did not succeed is lost.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ByzantineReport {
    /// The attack (`None`: the baseline, the same nodes behaving).
    pub attack: Option<crate::scenario::Attack>,
    /// Hostile nodes.
    pub attackers: u64,
    /// Tasks submitted at honest origins.
    pub honest_tasks: u64,
    /// Of those, not succeeded by the end (failed, cancelled or never ended).
    pub honest_lost: u64,
    /// Of the lost, never ended.
    pub honest_never_ended: u64,
    /// The first lost tasks, with their status.
    pub lost_tasks: Vec<String>,
    /// `dead` verdicts by honest observers about honest processes that were up.
    pub false_dead: u64,
    /// `suspect` verdicts, in the same sense.
    pub false_suspect: u64,
    /// The first false deaths, with observer and time.
    pub false_deaths: Vec<FalseDeath>,
    /// Honest tasks: submission to the first attempt's start, ms.
    pub wait_ms: Dist,
    /// Honest tasks: submission to the start of the attempt whose result was accepted, ms (a
    /// task captured by a host that never finishes waits for the one that did).
    pub useful_wait_ms: Dist,
    /// Honest tasks: submission to the accepted result, ms.
    pub completion_ms: Dist,
    /// Honest tasks with an attempt started on an attacker.
    pub placed_on_attackers: u64,
    /// Stops an attacker ignored because the origin still counted on the attempt.
    pub stops_ignored: u64,
    /// Forged heartbeat entries the attackers sent.
    pub forged_sent: u64,
    /// Offers the attackers sent with the highest score.
    pub offers_inflated: u64,
    /// Bid requests for made-up tasks the attackers sent.
    pub bids_flooded: u64,
    /// Identities the attackers minted and pushed.
    pub identities_minted: u64,
    /// Other origins' attempts the attackers named in lease answers.
    pub foreign_sent: u64,
    /// Honest engines' `forged_heartbeats`: heartbeat claims dropped as made up.
    pub forged_dropped: u64,
    /// Honest engines' `foreign_entries`: lease-answer entries about other origins dropped.
    pub foreign_dropped: u64,
    /// Honest origins' attempts given up past `timeout_s` plus the grace.
    pub attempts_overdue: u64,
    /// Honest origins' attempts given up when their lease ran out.
    pub attempts_expired: u64,
    /// Peers known at the end, largest over the honest nodes.
    pub peers_known_max: u64,
    /// The mean.
    pub peers_known_mean: f64,
}

pub(crate) struct ByzantineInputs {
    pub(crate) attack: Option<crate::scenario::Attack>,
    pub(crate) attackers: u64,
    pub(crate) honest_tasks: u64,
    pub(crate) lost: u64,
    pub(crate) never_terminal: u64,
    pub(crate) lost_tasks: Vec<String>,
    pub(crate) false_dead: u64,
    pub(crate) false_suspect: u64,
    pub(crate) false_deaths: Vec<FalseDeath>,
    pub(crate) waits: Vec<u64>,
    pub(crate) useful_waits: Vec<u64>,
    pub(crate) completions: Vec<u64>,
    pub(crate) placed_on_attackers: u64,
    pub(crate) stops_ignored: u64,
    pub(crate) forged_sent: u64,
    pub(crate) offers_inflated: u64,
    pub(crate) bids_flooded: u64,
    pub(crate) identities_minted: u64,
    pub(crate) foreign_sent: u64,
    pub(crate) counters: orgmesh_protocol::engine::EngineCounters,
    pub(crate) peers_known_max: u64,
    pub(crate) peers_known_mean: f64,
}

impl ByzantineReport {
    pub(crate) fn build(i: ByzantineInputs) -> Self {
        let dist = |v: &[u64]| {
            let mut d = Dist::of(v, 1e-3);
            d.mean = round(d.mean);
            d.p50 = round(d.p50);
            d.p99 = round(d.p99);
            d.max = round(d.max);
            d
        };
        ByzantineReport {
            attack: i.attack,
            attackers: i.attackers,
            honest_tasks: i.honest_tasks,
            honest_lost: i.lost,
            honest_never_ended: i.never_terminal,
            lost_tasks: i.lost_tasks,
            false_dead: i.false_dead,
            false_suspect: i.false_suspect,
            false_deaths: i.false_deaths,
            wait_ms: dist(&i.waits),
            useful_wait_ms: dist(&i.useful_waits),
            completion_ms: dist(&i.completions),
            placed_on_attackers: i.placed_on_attackers,
            stops_ignored: i.stops_ignored,
            forged_sent: i.forged_sent,
            offers_inflated: i.offers_inflated,
            bids_flooded: i.bids_flooded,
            identities_minted: i.identities_minted,
            foreign_sent: i.foreign_sent,
            forged_dropped: i.counters.forged_heartbeats,
            foreign_dropped: i.counters.foreign_entries,
            attempts_overdue: i.counters.attempts_overdue,
            attempts_expired: i.counters.attempts_expired,
            peers_known_max: i.peers_known_max,
            peers_known_mean: round(i.peers_known_mean),
        }
    }

    /// The attack's name, "none (baseline)" for the baseline.
    pub fn attack_name(&self) -> &'static str {
        self.attack.map_or("none (baseline)", crate::scenario::Attack::name)
    }

    /// What the attackers sent, in one phrase.
    pub fn attempted(&self) -> String {
        use crate::scenario::Attack;
        match self.attack {
            None => "nothing".into(),
            Some(Attack::ForgeHeartbeats) => format!("{} forged heartbeat entries", self.forged_sent),
            Some(Attack::BidHighNeverFinish) => {
                format!(
                    "{} offers at the top score, {} stops ignored",
                    self.offers_inflated, self.stops_ignored
                )
            }
            Some(Attack::FloodBids) => format!("{} bids for made-up tasks", self.bids_flooded),
            Some(Attack::MintIdentities) => format!("{} minted identities", self.identities_minted),
            Some(Attack::ForeignLeases) => format!("{} foreign stop/cancel entries", self.foreign_sent),
        }
    }

    /// What the attack achieved against the honest nodes, in one phrase.
    pub fn achieved(&self) -> String {
        use crate::scenario::Attack;
        let mut parts = vec![
            format!("{} honest tasks lost", self.honest_lost),
            format!("{} false deaths", self.false_dead),
        ];
        match self.attack {
            Some(Attack::ForgeHeartbeats) => parts.push(format!(
                "{} forged claims dropped, {} false suspicions",
                self.forged_dropped, self.false_suspect
            )),
            Some(Attack::BidHighNeverFinish) => parts.push(format!(
                "{} honest tasks placed on attackers, {} attempts overdue and placed again",
                self.placed_on_attackers, self.attempts_overdue
            )),
            Some(Attack::MintIdentities) => parts.push(format!(
                "honest nodes know {:.0} peers on average (max {})",
                self.peers_known_mean, self.peers_known_max
            )),
            Some(Attack::ForeignLeases) => {
                parts.push(format!("{} foreign entries dropped", self.foreign_dropped))
            }
            Some(Attack::FloodBids) | None => {}
        }
        parts.join("; ")
    }
}

fn round(x: f64) -> f64 {
    // Six significant decimals keep the JSON short and stable.
    (x * 1e6).round() / 1e6
}

impl Report {
    pub(crate) fn build(i: Inputs<'_>) -> Report {
        let s = i.stats;
        let n = s.nodes().max(1) as f64;
        let per = |x: u64| round(x as f64 / n / i.sim_seconds.max(1e-9));
        let traffic = |k: &str| s.traffic.get(k).copied().unwrap_or_default();
        let loaded_s = i.sim_seconds - s.load_from_us as f64 / 1e6;
        let per_loaded = |x: u64| if loaded_s > 0.0 { round(x as f64 / n / loaded_s) } else { 0.0 };
        let (all_msgs, all_bytes) = s.traffic.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let interval_s = i.scenario.membership.interval_ms as f64 / 1000.0;
        let wait = Dist::of(&i.waits, 1e-3);
        let omni = Dist::of(&i.omni_waits, 1e-3);
        let mut r = Report {
            scenario: i.scenario.name.clone(),
            seed: i.seed,
            nodes: s.nodes(),
            sim_seconds: round(i.sim_seconds),
            events: i.events,
            membership: MembershipReport {
                startup_convergence_s: s.startup_converged_us.map(|u| round(u as f64 / 1e6)),
                startup_rounds: s.startup_converged_us.map(|u| round(u as f64 / 1e6 / interval_s)),
                log2_n: round((s.nodes().max(1) as f64).log2()),
                join_convergence_s: Dist::of(&s.join_us, 1e-6),
                crash_detection_s: Dist::of(&s.crash_detect_us, 1e-6),
                crashes_restarted_before_detection: s.crash_restarted_first,
                heal_convergence_s: Dist::of(&s.heal_us, 1e-6),
                capacity_fresh_fraction: if s.freshness.0 > 0 {
                    round(s.freshness.1 as f64 / s.freshness.0 as f64)
                } else {
                    0.0
                },
                false_suspect: s.false_suspect,
                false_dead: s.false_dead,
                true_dead: s.true_dead,
                rejected_records: s.rejected_records,
            },
            traffic: TrafficReport {
                msgs_per_node_s: per(all_msgs),
                bytes_per_node_s: per(all_bytes),
                gossip_msgs_per_node_s: per(traffic("gossip").0),
                gossip_bytes_per_node_s: per(traffic("gossip").1),
                place_bytes_per_node_s: per(traffic("place").1),
                task_bytes_per_node_s: per(traffic("task").1),
                digest_entries_mean: if s.digest.1 > 0 {
                    round(s.digest.0 as f64 / s.digest.1 as f64)
                } else {
                    0.0
                },
                digest_entries_max: s.digest.2,
                records_per_node_s_under_load: per_loaded(s.records_under_load.0),
                records_newer_per_node_s_under_load: per_loaded(s.records_under_load.1),
                oversized: s.oversized,
                malformed: s.malformed,
            },
            tasks: TaskReport {
                load: i.scenario.workload.load,
                submitted: i.submitted,
                finished: i.finished,
                succeeded: i.succeeded,
                failed: i.failed,
                cancelled: i.cancelled,
                cancels_requested: i.cancels.requested,
                cancels_accepted: i.cancels.accepted,
                cancels_refused: i.cancels.refused,
                log_bytes_checked: i.log_bytes_checked,
                never_finished: i.never_finished,
                stranded_at_down_origin: i.stranded,
                awaiting_detection: i.awaiting_detection,
                attempts_lost: i.counters.attempts_lost,
                attempts_expired: i.counters.attempts_expired,
                attempts_overdue: i.counters.attempts_overdue,
                lost: i.lost,
                stale_reports: i.counters.stale_reports,
                submissions_refused: s.submissions_refused,
                placement_latency_ms: Dist::of(&s.placement_latency_us, 1e-3),
                wait_ratio: (omni.mean > 0.0).then(|| round(wait.mean / omni.mean)),
                wait_ms: wait,
                omniscient_wait_ms: omni,
                response_ratio: round(i.response_ratio),
                utilization: round(i.utilization),
                omniscient_utilization: round(i.omni_utilization),
            },
            faults: [s.crashes, s.restarts, s.partitions, s.pauses],
            violations: i.violations,
            byzantine: i.byzantine,
            wall_seconds: i.wall.as_secs_f64(),
        };
        for d in [
            &mut r.membership.join_convergence_s,
            &mut r.membership.crash_detection_s,
            &mut r.membership.heal_convergence_s,
            &mut r.tasks.placement_latency_ms,
            &mut r.tasks.wait_ms,
            &mut r.tasks.omniscient_wait_ms,
        ] {
            d.mean = round(d.mean);
            d.p50 = round(d.p50);
            d.p99 = round(d.p99);
            d.max = round(d.max);
        }
        r
    }

    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.tasks.lost == 0
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("never".into(), |x| format!("{x:.2}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.membership;
        let t = &self.traffic;
        let k = &self.tasks;
        writeln!(
            f,
            "scenario {} seed {}: {} nodes, {:.0} simulated s, {} events, {:.1} s wall",
            self.scenario, self.seed, self.nodes, self.sim_seconds, self.events, self.wall_seconds
        )?;
        writeln!(
            f,
            "faults: {} crashes, {} restarts, {} partitions, {} pauses",
            self.faults[0], self.faults[1], self.faults[2], self.faults[3]
        )?;
        writeln!(f, "membership:")?;
        writeln!(
            f,
            "  start-up convergence  {} s = {} rounds (log2 N = {:.1})",
            opt(m.startup_convergence_s),
            opt(m.startup_rounds),
            m.log2_n
        )?;
        writeln!(
            f,
            "  join convergence      n={} p50 {:.2} s p99 {:.2} s max {:.2} s",
            m.join_convergence_s.count,
            m.join_convergence_s.p50,
            m.join_convergence_s.p99,
            m.join_convergence_s.max
        )?;
        writeln!(
            f,
            "  crash -> all see dead n={} p50 {:.2} s p99 {:.2} s max {:.2} s ({} restarted first)",
            m.crash_detection_s.count,
            m.crash_detection_s.p50,
            m.crash_detection_s.p99,
            m.crash_detection_s.max,
            m.crashes_restarted_before_detection
        )?;
        writeln!(
            f,
            "  heal convergence      n={} max {:.2} s",
            m.heal_convergence_s.count, m.heal_convergence_s.max
        )?;
        writeln!(
            f,
            "  capacity fresh        {:.1}% of (observer, node) pairs",
            m.capacity_fresh_fraction * 100.0
        )?;
        writeln!(
            f,
            "  verdicts              false suspect {}, false dead {}, true dead {}",
            m.false_suspect, m.false_dead, m.true_dead
        )?;
        writeln!(
            f,
            "traffic per node per s: {:.1} msgs, {:.0} bytes (gossip {:.1} msgs, {:.0} bytes; place {:.0} B; task {:.0} B)",
            t.msgs_per_node_s,
            t.bytes_per_node_s,
            t.gossip_msgs_per_node_s,
            t.gossip_bytes_per_node_s,
            t.place_bytes_per_node_s,
            t.task_bytes_per_node_s
        )?;
        writeln!(
            f,
            "  digest entries per Syn mean {:.1} max {}; oversized {}, malformed {}",
            t.digest_entries_mean, t.digest_entries_max, t.oversized, t.malformed
        )?;
        writeln!(
            f,
            "  records per node per s under load: {:.1} received, {:.1} newer than held",
            t.records_per_node_s_under_load, t.records_newer_per_node_s_under_load
        )?;
        writeln!(
            f,
            "tasks (load {:.2}): {} submitted, {} finished ({} succeeded, {} cancelled), {} failed, {} never finished ({} at a down origin, {} awaiting their lease), {} LOST, {} stale reports, {} attempts lost and placed again ({} by lease expiry, {} overdue)",
            k.load,
            k.submitted,
            k.finished,
            k.succeeded,
            k.cancelled,
            k.failed,
            k.never_finished,
            k.stranded_at_down_origin,
            k.awaiting_detection,
            k.lost,
            k.stale_reports,
            k.attempts_lost,
            k.attempts_expired,
            k.attempts_overdue
        )?;
        writeln!(
            f,
            "  cancels               {} asked, {} taken, {} refused (origin down); {} log bytes checked",
            k.cancels_requested, k.cancels_accepted, k.cancels_refused, k.log_bytes_checked
        )?;
        writeln!(
            f,
            "  placement latency     p50 {:.1} ms p99 {:.1} ms",
            k.placement_latency_ms.p50, k.placement_latency_ms.p99
        )?;
        writeln!(
            f,
            "  wait                  mean {:.1} ms p50 {:.1} ms p99 {:.1} ms",
            k.wait_ms.mean, k.wait_ms.p50, k.wait_ms.p99
        )?;
        writeln!(
            f,
            "  omniscient wait       mean {:.1} ms p50 {:.1} ms p99 {:.1} ms",
            k.omniscient_wait_ms.mean, k.omniscient_wait_ms.p50, k.omniscient_wait_ms.p99
        )?;
        let wait_ratio =
            k.wait_ratio.map_or("none (the omniscient never waited)".into(), |r| format!("{r:.2}"));
        writeln!(f, "  wait ratio {wait_ratio}, response (wait + run) ratio {:.3}", k.response_ratio)?;
        writeln!(
            f,
            "  utilization {:.1}% (omniscient {:.1}%)",
            k.utilization * 100.0,
            k.omniscient_utilization * 100.0
        )?;
        if let Some(b) = &self.byzantine {
            writeln!(
                f,
                "byzantine: {} by {} attackers: sent {}",
                b.attack_name(),
                b.attackers,
                b.attempted()
            )?;
            writeln!(f, "  achieved              {}", b.achieved())?;
            writeln!(
                f,
                "  honest tasks          {} submitted, {} lost ({} never ended); {} placed on attackers",
                b.honest_tasks, b.honest_lost, b.honest_never_ended, b.placed_on_attackers
            )?;
            writeln!(
                f,
                "  honest wait           p50 {:.1} ms p99 {:.1} ms; to the useful attempt p50 {:.1} ms p99 {:.1} ms",
                b.wait_ms.p50, b.wait_ms.p99, b.useful_wait_ms.p50, b.useful_wait_ms.p99
            )?;
            writeln!(
                f,
                "  honest completion     p50 {:.1} ms p99 {:.1} ms",
                b.completion_ms.p50, b.completion_ms.p99
            )?;
            for d in &b.false_deaths {
                writeln!(
                    f,
                    "  FALSE DEATH           n{} judged n{} dead at t={:.3} s",
                    d.observer, d.victim, d.time_s
                )?;
            }
            for t in &b.lost_tasks {
                writeln!(f, "  LOST                  {t}")?;
            }
        }
        if self.violations.is_empty() {
            writeln!(f, "invariants: OK")?;
        } else {
            writeln!(f, "INVARIANTS BROKEN ({}):", self.violations.len())?;
            for v in &self.violations {
                writeln!(
                    f,
                    "  {} at event #{} (t={:.3} s, node {:?}): {}",
                    v.kind, v.event, v.time_s, v.node, v.detail
                )?;
            }
            writeln!(
                f,
                "replay: orgmesh-sim run <scenario> --seed {} --until-event <event> [--trace]",
                self.seed
            )?;
        }
        Ok(())
    }
}
