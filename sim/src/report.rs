//! The report of one run: what converged how fast, what the mesh cost, how placement compares
//! with an omniscient scheduler, and whether any invariant broke. The JSON form holds only
//! simulated quantities, so the same scenario and seed always give the same bytes.

use std::fmt;

use serde::Serialize;

use crate::scenario::Scenario;
use crate::stats::Stats;

/// An invariant that broke, with where to replay it from.
#[derive(Clone, Debug, Serialize, PartialEq)]
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
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
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
#[derive(Clone, Debug, Serialize, PartialEq)]
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
#[derive(Clone, Debug, Serialize, PartialEq)]
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
#[derive(Clone, Debug, Serialize, PartialEq)]
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
#[derive(Clone, Debug, Serialize, PartialEq)]
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
    /// Wall-clock seconds the run took: printed, never in the JSON (it differs between runs).
    #[serde(skip)]
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
