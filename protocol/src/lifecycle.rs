//! Leases on placed attempts, kept by the task's origin: the executing node renews each attempt it
//! holds; without renewals the task turns `unreachable`, and after the spec's `replace_after_s` the
//! attempt is given up and the task placed again. An attempt still held at `timeout_s` plus a
//! grace is given up too, whatever its host says (renewals included): the origin enforces time.
//! Also the back-off between attempts. Sans-IO: never reads a clock or draws unseeded randomness.
//!
//! Calling contract: `grant` when a commit is accepted, `renew` for every renewal or report from
//! the holder, `host_dead` when the failure detector gives up on a node, `release` when the attempt
//! ends or is superseded; call `handle_timeout(now)` once `now >= poll_timeout()`, then drain
//! `poll_event()`.
//!
//! Disconnected is not dead: a missed renewal or a `dead` verdict only starts the `replace_after`
//! clock; a renewal before it runs out puts the attempt back as it was. And a stalled origin (its
//! own timers ran late: paused, starved) does not blame the hosts for the renewals it could not
//! read: every clock is pushed back by the stall (Lifeguard's local-health idea).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::Rng;

use crate::ids::{Attempt, PeerId, TaskId};
use crate::time::Time;

/// Timing of leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How often a host renews the attempts it holds.
    pub renew_every: Duration,
    /// A lease not renewed for this long turns its task `unreachable`.
    pub ttl: Duration,
    /// A gap this long between two calls means this node itself stalled (paused, starved): the
    /// gap is forgiven rather than charged to the hosts.
    pub stall_after: Duration,
    /// How long past its `timeout_s` an attempt may stay unfinished before the origin gives it up.
    /// The host kills at `timeout_s` and then still has to deliver the rest of the log and the
    /// result; this covers that, so an honest host is never overtaken.
    pub overdue_grace: Duration,
    /// How long after its placement an attempt may go on renewing without its host reporting
    /// `Started` before the origin gives it up (zero: never). An honest host reports `Started`
    /// as soon as the process is spawned; one that holds work and renews without starting it
    /// would otherwise keep the task until `timeout_s` (an hour by default).
    pub start_within: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            renew_every: Duration::from_secs(1),
            ttl: Duration::from_secs(5),
            // Half the ttl: a gap that long would have cost the hosts half their lease.
            stall_after: Duration::from_millis(2500),
            overdue_grace: DEFAULT_OVERDUE_GRACE,
            start_within: DEFAULT_START_WITHIN,
        }
    }
}

/// The default of [`LeaseConfig::start_within`].
pub const DEFAULT_START_WITHIN: Duration = Duration::from_secs(120);

/// The default of [`LeaseConfig::overdue_grace`].
pub const DEFAULT_OVERDUE_GRACE: Duration = Duration::from_secs(30);

/// What a lease holds its host to, from the task's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    /// How long the attempt may stay unreachable before it is placed again (`replace_after_s`).
    pub replace_after: Duration,
    /// How long the attempt may run (`timeout_s`); the origin adds its grace.
    pub time_limit: Duration,
}

impl LeaseTerms {
    /// The terms a task's spec sets.
    pub fn of(spec: &crate::task::TaskSpec) -> Self {
        Self {
            replace_after: Duration::from_secs(spec.replace_after_s),
            time_limit: Duration::from_secs(spec.timeout_s),
        }
    }
}

/// What the origin must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// No renewal for `ttl`, or the holder was declared dead: the task shows `unreachable`.
    Unreachable {
        /// The task.
        task: TaskId,
        /// Its current attempt.
        attempt: Attempt,
    },
    /// A renewal arrived for an unreachable attempt: it simply continues.
    Reachable {
        /// The task.
        task: TaskId,
        /// Its current attempt.
        attempt: Attempt,
    },
    /// Unreachable for the task's `replace_after`: the attempt is given up (the lease is gone)
    /// and the task must be placed again.
    Expired {
        /// The task.
        task: TaskId,
        /// The attempt given up.
        attempt: Attempt,
        /// The node that held it.
        host: PeerId,
    },
    /// Still held at `timeout_s` plus the grace: the attempt is given up (the lease is gone),
    /// its host is told to cancel it, and the task is placed again or fails.
    Overdue {
        /// The task.
        task: TaskId,
        /// The attempt given up.
        attempt: Attempt,
        /// The node that held it.
        host: PeerId,
    },
}

#[derive(Debug, Clone)]
struct Lease {
    attempt: Attempt,
    host: PeerId,
    renewed: Time,
    unreachable_since: Option<Time>,
    replace_after: Duration,
    /// When the attempt is overdue, however its renewals go.
    overdue_at: Time,
}

impl Lease {
    fn deadline(&self, ttl: Duration) -> Time {
        match self.unreachable_since {
            None => self.renewed + ttl,
            Some(since) => since + self.replace_after,
        }
    }
}

/// The origin's table of leases, one per task with a placed attempt.
#[derive(Debug, Clone)]
pub struct Leases {
    config: LeaseConfig,
    leases: BTreeMap<TaskId, Lease>,
    /// Every lease's next renewal deadline, so the earliest is found without a scan.
    deadlines: BTreeSet<(Time, TaskId)>,
    /// Every lease's `overdue_at`.
    overdue: BTreeSet<(Time, TaskId)>,
    events: VecDeque<LeaseEvent>,
    last_seen: Option<Time>,
    stalls: u64,
}

impl Leases {
    /// An empty table.
    pub fn new(config: LeaseConfig) -> Self {
        Self {
            config,
            leases: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            overdue: BTreeSet::new(),
            events: VecDeque::new(),
            last_seen: None,
            stalls: 0,
        }
    }

    /// The timing in force.
    pub fn config(&self) -> LeaseConfig {
        self.config
    }

    /// How many stalls of this node were forgiven so far.
    pub fn stalls(&self) -> u64 {
        self.stalls
    }

    /// How many leases are held.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The attempt and holder of `task`'s lease.
    pub fn holder(&self, task: TaskId) -> Option<(Attempt, &PeerId)> {
        self.leases.get(&task).map(|l| (l.attempt, &l.host))
    }

    /// Whether `task`'s attempt is currently unreachable.
    pub fn is_unreachable(&self, task: TaskId) -> bool {
        self.leases.get(&task).is_some_and(|l| l.unreachable_since.is_some())
    }

    /// `host` accepted `attempt` of `task`: it holds the lease from `now`, replacing any older one.
    pub fn grant(&mut self, task: TaskId, attempt: Attempt, host: PeerId, terms: LeaseTerms, now: Time) {
        self.observe(now);
        self.release(task);
        let overdue_at = now + terms.time_limit.saturating_add(self.config.overdue_grace);
        let lease = Lease {
            attempt,
            host,
            renewed: now,
            unreachable_since: None,
            replace_after: terms.replace_after,
            overdue_at,
        };
        self.deadlines.insert((lease.deadline(self.config.ttl), task));
        self.overdue.insert((overdue_at, task));
        self.leases.insert(task, lease);
    }

    /// Lets go of `task`'s lease (ended, superseded, given up). No event follows.
    pub fn release(&mut self, task: TaskId) {
        if let Some(lease) = self.leases.remove(&task) {
            self.forget_deadlines(task, &lease);
        }
    }

    fn forget_deadlines(&mut self, task: TaskId, lease: &Lease) {
        self.deadlines.remove(&(lease.deadline(self.config.ttl), task));
        self.overdue.remove(&(lease.overdue_at, task));
    }

    /// `from` renews `attempt` of `task` (a renewal, or any report from the attempt). Returns
    /// whether `from` holds that lease; `false` means the attempt is not wanted here any more.
    pub fn renew(&mut self, from: &PeerId, task: TaskId, attempt: Attempt, now: Time) -> bool {
        self.observe(now);
        let ttl = self.config.ttl;
        let Some(lease) = self.leases.get_mut(&task) else { return false };
        if lease.attempt != attempt || &lease.host != from {
            return false;
        }
        self.deadlines.remove(&(lease.deadline(ttl), task));
        lease.renewed = now;
        if lease.unreachable_since.take().is_some() {
            self.events.push_back(LeaseEvent::Reachable { task, attempt });
        }
        self.deadlines.insert((lease.deadline(ttl), task));
        true
    }

    /// The failure detector declared `peer` dead: its attempts turn unreachable now (their
    /// `replace_after` clock starts) unless they already were.
    pub fn host_dead(&mut self, peer: &PeerId, now: Time) {
        self.observe(now);
        let ttl = self.config.ttl;
        let held: Vec<TaskId> = self
            .leases
            .iter()
            .filter(|(_, l)| &l.host == peer && l.unreachable_since.is_none())
            .map(|(t, _)| *t)
            .collect();
        for task in held {
            if let Some(lease) = self.leases.get_mut(&task) {
                self.deadlines.remove(&(lease.deadline(ttl), task));
                lease.unreachable_since = Some(now);
                self.events.push_back(LeaseEvent::Unreachable { task, attempt: lease.attempt });
                self.deadlines.insert((lease.deadline(ttl), task));
            }
        }
    }

    /// Moves every lease whose deadline passed: past `timeout_s` plus the grace → overdue (and
    /// released), renewal late → unreachable, unreachable for `replace_after` → expired (and
    /// released).
    pub fn handle_timeout(&mut self, now: Time) {
        self.observe(now);
        let ttl = self.config.ttl;
        while let Some(&(at, task)) = self.overdue.first() {
            if at > now {
                break;
            }
            self.overdue.pop_first();
            let Some(lease) = self.leases.remove(&task) else { continue };
            self.deadlines.remove(&(lease.deadline(ttl), task));
            self.events.push_back(LeaseEvent::Overdue { task, attempt: lease.attempt, host: lease.host });
        }
        while let Some(&(at, task)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(lease) = self.leases.get_mut(&task) else { continue };
            match lease.unreachable_since {
                None => {
                    // Unreachable from the moment the renewal was due, not from when we noticed.
                    lease.unreachable_since = Some(at);
                    self.events.push_back(LeaseEvent::Unreachable { task, attempt: lease.attempt });
                    self.deadlines.insert((lease.deadline(ttl), task));
                }
                Some(_) => {
                    let host = lease.host.clone();
                    let attempt = lease.attempt;
                    let overdue_at = lease.overdue_at;
                    self.leases.remove(&task);
                    self.overdue.remove(&(overdue_at, task));
                    self.events.push_back(LeaseEvent::Expired { task, attempt, host });
                }
            }
        }
    }

    /// The earliest deadline, if any lease is held.
    pub fn poll_timeout(&self) -> Option<Time> {
        let renewal = self.deadlines.first().map(|(at, _)| *at);
        let overdue = self.overdue.first().map(|(at, _)| *at);
        renewal.into_iter().chain(overdue).min()
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<LeaseEvent> {
        self.events.pop_front()
    }

    /// Notices a stall of this node (a long gap since the last input) and forgives it: every
    /// clock moves forward by the gap, so hosts are not blamed for renewals nobody read.
    fn observe(&mut self, now: Time) {
        let last = self.last_seen.replace(now);
        let Some(last) = last.filter(|&l| now > l) else { return };
        let gap = now.since(last);
        if gap < self.config.stall_after || self.leases.is_empty() {
            return;
        }
        self.stalls += 1;
        let ttl = self.config.ttl;
        // The time limit moves too: a stalled origin has not read the results that may be
        // waiting for it, and must not fail them for its own lateness.
        self.deadlines.clear();
        self.overdue.clear();
        for (task, lease) in &mut self.leases {
            lease.renewed = lease.renewed + gap;
            if let Some(since) = lease.unreachable_since.as_mut() {
                *since = *since + gap;
            }
            lease.overdue_at = lease.overdue_at + gap;
            self.deadlines.insert((lease.deadline(ttl), *task));
            self.overdue.insert((lease.overdue_at, *task));
        }
    }
}

/// The delay before placing a task again after its `attempt` was lost: exponential from `base`,
/// capped at `max`, with "equal jitter" (half fixed, half random) so the tasks of one dead node do
/// not all come back at the same instant.
pub fn backoff(attempt: Attempt, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let doublings = attempt.0.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << doublings).min(max);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(if jitter_ms == 0 { 0 } else { rng.random_range(0..=jitter_ms) })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::new(format!("12D3KooWPeer{n}")).expect("a valid peer id")
    }

    fn at(ms: u64) -> Time {
        Time(ms)
    }

    /// Terms whose time limit never comes up in a test about renewals.
    const REPLACE: LeaseTerms =
        LeaseTerms { replace_after: Duration::from_secs(30), time_limit: Duration::from_secs(3600) };

    fn table() -> Leases {
        Leases::new(LeaseConfig::default())
    }

    /// Drives the table with a renewal every `every` ms from `from` until `until`, calling the
    /// timers in between as the node's tick would (every 250 ms).
    fn run(l: &mut Leases, from: u64, until: u64, renew: Option<(&PeerId, TaskId, Attempt, u64)>) {
        let mut t = from;
        while t <= until {
            if let Some((p, task, attempt, every)) = renew
                && t.is_multiple_of(every)
            {
                l.renew(p, task, attempt, at(t));
            }
            l.handle_timeout(at(t));
            t += 250;
        }
    }

    fn events(l: &mut Leases) -> Vec<LeaseEvent> {
        std::iter::from_fn(|| l.poll_event()).collect()
    }

    #[test]
    fn renewed_lease_never_turns_unreachable() {
        let mut l = table();
        let task = TaskId::new(1, 1);
        l.grant(task, Attempt(1), peer(1), REPLACE, at(0));
        run(&mut l, 0, 60_000, Some((&peer(1), task, Attempt(1), 1000)));
        assert_eq!(events(&mut l), vec![]);
        assert_eq!(l.holder(task).map(|(a, _)| a), Some(Attempt(1)));
    }

    #[test]
    fn silent_holder_goes_unreachable_then_expires_after_replace_after() {
        let mut l = table();
        let task = TaskId::new(1, 1);
        l.grant(task, Attempt(1), peer(1), REPLACE, at(0));
        run(&mut l, 0, 4_750, None);
        assert_eq!(events(&mut l), vec![]);
        l.handle_timeout(at(5_000));
        assert_eq!(events(&mut l), vec![LeaseEvent::Unreachable { task, attempt: Attempt(1) }]);
        assert!(l.is_unreachable(task));
        run(&mut l, 5_000, 34_750, None);
        assert_eq!(events(&mut l), vec![]);
        l.handle_timeout(at(35_000));
        assert_eq!(events(&mut l), vec![LeaseEvent::Expired { task, attempt: Attempt(1), host: peer(1) }]);
        assert!(l.holder(task).is_none());
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn renewal_in_time_makes_it_reachable_and_resets_the_clock() {
        let mut l = table();
        let task = TaskId::new(1, 7);
        l.grant(task, Attempt(2), peer(1), REPLACE, at(0));
        run(&mut l, 0, 20_000, None);
        assert_eq!(events(&mut l), vec![LeaseEvent::Unreachable { task, attempt: Attempt(2) }]);
        assert!(l.renew(&peer(1), task, Attempt(2), at(20_100)));
        assert_eq!(events(&mut l), vec![LeaseEvent::Reachable { task, attempt: Attempt(2) }]);
        // The replace clock is gone: a full ttl of silence again before unreachable.
        run(&mut l, 20_250, 25_000, None);
        assert_eq!(events(&mut l), vec![]);
        run(&mut l, 25_250, 25_250, None);
        assert_eq!(events(&mut l), vec![LeaseEvent::Unreachable { task, attempt: Attempt(2) }]);
    }

    #[test]
    fn fencing_renewals_from_the_wrong_attempt_or_node_are_refused() {
        let mut l = table();
        let task = TaskId::new(1, 3);
        l.grant(task, Attempt(2), peer(1), REPLACE, at(0));
        assert!(!l.renew(&peer(1), task, Attempt(1), at(10)), "older attempt");
        assert!(!l.renew(&peer(2), task, Attempt(2), at(10)), "other node");
        assert!(!l.renew(&peer(1), TaskId::new(1, 4), Attempt(2), at(10)), "unknown task");
        assert!(l.renew(&peer(1), task, Attempt(2), at(10)));
        // Refused renewals did not keep it alive.
        run(&mut l, 250, 5_250, Some((&peer(2), task, Attempt(2), 500)));
        assert!(l.is_unreachable(task));
    }

    #[test]
    fn dead_verdict_starts_the_replace_clock_at_once() {
        let mut l = table();
        l.grant(TaskId::new(1, 1), Attempt(1), peer(1), REPLACE, at(0));
        l.grant(TaskId::new(1, 2), Attempt(1), peer(2), REPLACE, at(0));
        l.host_dead(&peer(1), at(1_000));
        assert_eq!(
            events(&mut l),
            vec![LeaseEvent::Unreachable { task: TaskId::new(1, 1), attempt: Attempt(1) }]
        );
        run(&mut l, 1_000, 31_000, Some((&peer(2), TaskId::new(1, 2), Attempt(1), 1000)));
        assert_eq!(
            events(&mut l),
            vec![LeaseEvent::Expired { task: TaskId::new(1, 1), attempt: Attempt(1), host: peer(1) }]
        );
        assert!(l.holder(TaskId::new(1, 2)).is_some());
    }

    #[test]
    fn a_stall_of_the_origin_is_not_charged_to_the_hosts() {
        let mut l = table();
        let task = TaskId::new(1, 1);
        l.grant(task, Attempt(1), peer(1), REPLACE, at(0));
        run(&mut l, 0, 3_000, Some((&peer(1), task, Attempt(1), 1000)));
        // This node was paused for 8 s: no timer ran, no renewal was read.
        l.handle_timeout(at(11_000));
        assert_eq!(events(&mut l), vec![], "the pause is forgiven");
        assert_eq!(l.stalls(), 1);
        // The host's renewals, queued during the pause, arrive now and keep it alive.
        run(&mut l, 11_000, 20_000, Some((&peer(1), task, Attempt(1), 1000)));
        assert_eq!(events(&mut l), vec![]);
    }

    #[test]
    fn regrant_replaces_the_old_lease() {
        let mut l = table();
        let task = TaskId::new(1, 1);
        l.grant(task, Attempt(1), peer(1), REPLACE, at(0));
        l.grant(task, Attempt(2), peer(2), REPLACE, at(100));
        assert_eq!(l.len(), 1);
        assert!(!l.renew(&peer(1), task, Attempt(1), at(200)));
        assert!(l.renew(&peer(2), task, Attempt(2), at(200)));
        l.release(task);
        assert!(l.is_empty());
        assert_eq!(l.poll_timeout(), None);
    }

    fn ten_seconds() -> LeaseTerms {
        LeaseTerms { replace_after: Duration::from_secs(30), time_limit: Duration::from_secs(10) }
    }

    #[test]
    fn an_attempt_renewed_past_its_time_limit_and_grace_is_overdue_and_released() {
        let mut l = table();
        let task = TaskId::new(1, 1);
        l.grant(task, Attempt(1), peer(1), ten_seconds(), at(1_000));
        let due = 1_000 + 10_000 + DEFAULT_OVERDUE_GRACE.as_millis() as u64;
        // The host renews faithfully all along: renewals do not buy time.
        run(&mut l, 1_000, due - 250, Some((&peer(1), task, Attempt(1), 1000)));
        assert_eq!(events(&mut l), vec![]);
        assert_eq!(l.poll_timeout(), Some(at(due)), "the time limit is the next deadline");
        l.renew(&peer(1), task, Attempt(1), at(due - 1));
        l.handle_timeout(at(due));
        assert_eq!(events(&mut l), vec![LeaseEvent::Overdue { task, attempt: Attempt(1), host: peer(1) }]);
        assert_eq!(l.holder(task), None);
        assert!(!l.renew(&peer(1), task, Attempt(1), at(due + 10)), "an overdue attempt is not renewed");
        assert_eq!(l.poll_timeout(), None, "no deadline is left behind");
        run(&mut l, due, due + 60_000, None);
        assert_eq!(events(&mut l), vec![], "overdue once, and nothing after it");
    }

    #[test]
    fn the_time_limit_is_the_earliest_deadline_when_it_comes_first() {
        let mut l =
            Leases::new(LeaseConfig { overdue_grace: Duration::from_secs(1), ..LeaseConfig::default() });
        let task = TaskId::new(1, 1);
        let terms = LeaseTerms { replace_after: Duration::from_secs(30), time_limit: Duration::from_secs(2) };
        l.grant(task, Attempt(1), peer(1), terms, at(0));
        // ttl is 5 s; the attempt is due at 3 s.
        assert_eq!(l.poll_timeout(), Some(at(3_000)));
        run(&mut l, 0, 2_750, None);
        l.handle_timeout(at(2_999));
        assert_eq!(events(&mut l), vec![]);
        l.handle_timeout(at(3_000));
        assert_eq!(events(&mut l), vec![LeaseEvent::Overdue { task, attempt: Attempt(1), host: peer(1) }]);
    }

    #[test]
    fn an_attempt_released_or_expired_first_is_never_overdue() {
        let mut l = table();
        let (ended, lost) = (TaskId::new(1, 1), TaskId::new(1, 2));
        l.grant(ended, Attempt(1), peer(1), ten_seconds(), at(0));
        l.grant(lost, Attempt(1), peer(2), ten_seconds(), at(0));
        l.release(ended);
        l.host_dead(&peer(2), at(1_000));
        run(&mut l, 0, 120_000, None);
        assert_eq!(
            events(&mut l),
            vec![
                LeaseEvent::Unreachable { task: lost, attempt: Attempt(1) },
                LeaseEvent::Expired { task: lost, attempt: Attempt(1), host: peer(2) },
            ]
        );
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn a_regrant_starts_a_new_time_limit() {
        let mut l = table();
        let task = TaskId::new(1, 1);
        l.grant(task, Attempt(1), peer(1), ten_seconds(), at(0));
        l.grant(task, Attempt(2), peer(2), ten_seconds(), at(20_000));
        let first_due = 10_000 + DEFAULT_OVERDUE_GRACE.as_millis() as u64;
        run(&mut l, 20_000, first_due + 5_000, Some((&peer(2), task, Attempt(2), 1000)));
        assert_eq!(events(&mut l), vec![], "the first attempt's limit went with it");
        run(&mut l, first_due + 5_250, 20_000 + first_due, Some((&peer(2), task, Attempt(2), 1000)));
        assert_eq!(events(&mut l), vec![LeaseEvent::Overdue { task, attempt: Attempt(2), host: peer(2) }]);
    }

    #[test]
    fn a_stall_of_the_origin_moves_the_time_limit_too() {
        let mut l = table();
        let task = TaskId::new(1, 1);
        l.grant(task, Attempt(1), peer(1), ten_seconds(), at(0));
        let due = 10_000 + DEFAULT_OVERDUE_GRACE.as_millis() as u64;
        run(&mut l, 0, 20_000, Some((&peer(1), task, Attempt(1), 1000)));
        // The origin is paused for 30 s: the host's result may be waiting unread.
        l.renew(&peer(1), task, Attempt(1), at(50_000));
        assert_eq!(l.stalls(), 1);
        let moved = due + 30_000;
        run(&mut l, 50_000, moved - 250, Some((&peer(1), task, Attempt(1), 1000)));
        assert_eq!(events(&mut l), vec![], "not overdue for the origin's own lateness");
        assert!(l.holder(task).is_some());
        l.handle_timeout(at(moved));
        assert_eq!(events(&mut l), vec![LeaseEvent::Overdue { task, attempt: Attempt(1), host: peer(1) }]);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_deterministically() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for attempt in 1..=12u32 {
            let full = base.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            let d = backoff(Attempt(attempt), base, max, &mut rng);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (1..=5).map(|a| backoff(Attempt(a), base, max, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }
}
