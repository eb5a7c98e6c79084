//! Leases on placed attempts, kept by the task's origin: the executing node renews each attempt it
//! holds; without renewals the task turns `unreachable`, and after the spec's `replace_after_s` the
//! attempt is given up and the task placed again. Also the back-off between attempts. Sans-IO:
//! never reads a clock or draws unseeded randomness.
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
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            renew_every: Duration::from_secs(1),
            ttl: Duration::from_secs(5),
            stall_after: Duration::from_millis(1500),
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
}

#[derive(Debug, Clone)]
struct Lease {
    attempt: Attempt,
    host: PeerId,
    renewed: Time,
    unreachable_since: Option<Time>,
    replace_after: Duration,
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
    /// Every lease's next deadline, so the earliest is found without a scan.
    deadlines: BTreeSet<(Time, TaskId)>,
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
    pub fn grant(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        host: PeerId,
        replace_after: Duration,
        now: Time,
    ) {
        self.observe(now);
        self.release(task);
        let lease = Lease { attempt, host, renewed: now, unreachable_since: None, replace_after };
        self.deadlines.insert((lease.deadline(self.config.ttl), task));
        self.leases.insert(task, lease);
    }

    /// Lets go of `task`'s lease (ended, superseded, given up). No event follows.
    pub fn release(&mut self, task: TaskId) {
        if let Some(lease) = self.leases.remove(&task) {
            self.deadlines.remove(&(lease.deadline(self.config.ttl), task));
        }
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

    /// Moves every lease whose deadline passed: renewal overdue → unreachable, unreachable for
    /// `replace_after` → expired (and released).
    pub fn handle_timeout(&mut self, now: Time) {
        self.observe(now);
        let ttl = self.config.ttl;
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
                    self.leases.remove(&task);
                    self.events.push_back(LeaseEvent::Expired { task, attempt, host });
                }
            }
        }
    }

    /// The earliest deadline, if any lease is held.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deadlines.first().map(|(at, _)| *at)
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
        self.deadlines.clear();
        for (task, lease) in &mut self.leases {
            lease.renewed = lease.renewed + gap;
            if let Some(since) = lease.unreachable_since.as_mut() {
                *since = *since + gap;
            }
            self.deadlines.insert((lease.deadline(ttl), *task));
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

    const REPLACE: Duration = Duration::from_secs(30);

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
