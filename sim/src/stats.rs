//! Counters and convergence trackers filled in while a run goes; the report is computed from
//! them at the end.

use std::collections::BTreeMap;

use orgmesh_protocol::membership::PeerState;

/// Everything measured during a run.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    n: usize,
    /// Per protocol: (messages, bytes).
    pub(crate) traffic: BTreeMap<&'static str, (u64, u64)>,
    /// Messages sent per node.
    pub(crate) sent_per_node: Vec<u64>,
    /// Digest entries per `Syn`: sum, count, max.
    pub(crate) digest: (u64, u64, u64),
    /// From when records are counted (arrivals start): the cold start's N² records would
    /// drown what load costs.
    pub(crate) load_from_us: u64,
    /// Records that changed hands from `load_from_us` on: (received in answers and pushes,
    /// newer than what the receiver held).
    pub(crate) records_under_load: (u64, u64),
    pub(crate) placement_latency_us: Vec<u64>,
    pub(crate) malformed: u64,
    pub(crate) oversized: u64,
    pub(crate) rejected_records: u64,
    pub(crate) submissions_refused: u64,
    /// Verdicts `suspect`/`dead` about processes that were up at the time (see `Report`).
    pub(crate) false_suspect: u64,
    pub(crate) false_dead: u64,
    pub(crate) true_dead: u64,
    pub(crate) crashes: u64,
    pub(crate) restarts: u64,
    pub(crate) pauses: u64,
    pub(crate) partitions: u64,
    // Convergence.
    pub(crate) startup_converged_us: Option<u64>,
    pending_crashes: Vec<(usize, u64)>,
    pub(crate) crash_detect_us: Vec<u64>,
    pub(crate) crash_restarted_first: u64,
    pending_joins: Vec<(usize, u64, u64)>,
    pub(crate) join_us: Vec<u64>,
    heal_at: Option<u64>,
    pub(crate) heal_us: Vec<u64>,
    last_full: u64,
    /// (pairs, pairs holding the current record version) over full checks after start-up.
    pub(crate) freshness: (u64, u64),
}

impl Stats {
    /// For a mesh of `n` nodes whose arrivals start at `load_from_us`.
    pub(crate) fn new(n: usize, load_from_us: u64) -> Self {
        Self { n, sent_per_node: vec![0; n], load_from_us, ..Self::default() }
    }

    pub(crate) fn nodes(&self) -> usize {
        self.n
    }

    pub(crate) fn sent(&mut self, from: usize, kind: &'static str, bytes: usize, _now: u64) {
        let e = self.traffic.entry(kind).or_default();
        e.0 += 1;
        e.1 += bytes as u64;
        self.sent_per_node[from] += 1;
    }

    pub(crate) fn received(&mut self, _to: usize, _kind: &'static str, _now: u64) {}

    pub(crate) fn records_received(&mut self, count: usize, now: u64) {
        if now >= self.load_from_us {
            self.records_under_load.0 += count as u64;
        }
    }

    pub(crate) fn record_applied(&mut self, now: u64) {
        if now >= self.load_from_us {
            self.records_under_load.1 += 1;
        }
    }

    pub(crate) fn digest(&mut self, entries: usize) {
        let e = entries as u64;
        self.digest.0 += e;
        self.digest.1 += 1;
        self.digest.2 = self.digest.2.max(e);
    }

    pub(crate) fn placement_latency(&mut self, us: u64) {
        self.placement_latency_us.push(us);
    }

    pub(crate) fn malformed(&mut self) {
        self.malformed += 1;
    }

    pub(crate) fn oversized(&mut self) {
        self.oversized += 1;
    }

    pub(crate) fn rejected_record(&mut self) {
        self.rejected_records += 1;
    }

    pub(crate) fn submission_refused(&mut self) {
        self.submissions_refused += 1;
    }

    pub(crate) fn state_change(&mut self, to: PeerState, truly_up: bool) {
        match (to, truly_up) {
            (PeerState::Suspect, true) => self.false_suspect += 1,
            (PeerState::Dead, true) => self.false_dead += 1,
            (PeerState::Dead, false) => self.true_dead += 1,
            _ => {}
        }
    }

    pub(crate) fn crashed(&mut self, node: usize, now: u64) {
        self.crashes += 1;
        self.pending_crashes.retain(|(j, _)| *j != node);
        self.pending_crashes.push((node, now));
    }

    pub(crate) fn generation_started(&mut self, node: usize, generation: u64, now: u64) {
        if now > 0 {
            self.restarts += 1;
            self.pending_joins.retain(|(j, _, _)| *j != node);
            self.pending_joins.push((node, generation, now));
        }
    }

    pub(crate) fn paused(&mut self, _node: usize, _now: u64, _us: u64) {
        self.pauses += 1;
    }

    pub(crate) fn partitioned(&mut self, _now: u64, _cut: usize) {
        self.partitions += 1;
        self.heal_at = None;
    }

    pub(crate) fn healed(&mut self, now: u64) {
        self.heal_at = Some(now);
    }

    /// Whether the next sample should compare every observer's whole view: until start-up
    /// converged, while a healed partition has not, and every 5 s otherwise.
    pub(crate) fn needs_full_check(&self, now: u64) -> bool {
        self.startup_converged_us.is_none() || self.heal_at.is_some() || now >= self.last_full + 5_000_000
    }

    pub(crate) fn full_check(&mut self, now: u64, pairs: u64, fresh: u64, alive_ok: u64, generation_ok: u64) {
        self.last_full = now;
        match self.startup_converged_us {
            None if pairs > 0 && fresh == pairs => self.startup_converged_us = Some(now),
            None => {}
            Some(_) => {
                self.freshness.0 += pairs;
                self.freshness.1 += fresh;
            }
        }
        if let Some(at) = self.heal_at
            && alive_ok == pairs
            && generation_ok == pairs
        {
            self.heal_us.push(now - at);
            self.heal_at = None;
        }
    }

    pub(crate) fn check_pending(
        &mut self,
        now: u64,
        up: &[bool],
        dead_seen: impl Fn(usize) -> bool,
        join_seen: impl Fn(usize, u64) -> bool,
    ) {
        let mut restarted = 0;
        let mut detected = Vec::new();
        self.pending_crashes.retain(|&(j, t0)| {
            if up[j] {
                restarted += 1;
                false
            } else if dead_seen(j) {
                detected.push(now - t0);
                false
            } else {
                true
            }
        });
        self.crash_restarted_first += restarted;
        self.crash_detect_us.extend(detected);
        let mut joined = Vec::new();
        self.pending_joins.retain(|&(j, generation, t0)| {
            if !up[j] {
                false
            } else if join_seen(j, generation) {
                joined.push(now - t0);
                false
            } else {
                true
            }
        });
        self.join_us.extend(joined);
    }
}
