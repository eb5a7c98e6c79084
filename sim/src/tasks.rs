//! A task's life after placement, as the node lives it: the origin's durable task table
//! (placing, fencing of reports by attempt and host, leases from `protocol::lifecycle`, placing
//! again after a lost attempt) and the host's executor (runs an attempt for its duration, reports
//! `Started` and `Finished` until acknowledged, renews its leases, and after a crash reports the
//! attempts the crash killed as lost, as the node's store lets it).
//!
//! It mirrors `node/src/actor/{origin,host}.rs` over the same protocol machines (`Leases`,
//! `backoff`) and the same `wire::task` messages; what the node does with processes, logs and
//! redb, this does with a duration and two maps. It must not decide anything the node would
//! decide differently: a change there is a change here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use orgmesh_protocol::lifecycle::{self, LeaseConfig, LeaseEvent, Leases};
use orgmesh_protocol::wire::limits;
use orgmesh_protocol::wire::task::{Outcome, TaskRequest, TaskResponse};
use orgmesh_protocol::{Attempt, PeerId, TaskId, TaskSpec, Time};
use rand::Rng;

/// How soon a task that found no free capacity tries again (as the node does).
pub const PENDING_RETRY: Duration = Duration::from_millis(250);
/// At most this many waiting tasks start a negotiation per pass (as the node does).
pub const RETRY_BATCH: usize = 32;
/// First retry delay of an unanswered report; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Back-off before placing a task again after its attempt was lost (as the node does).
const REPLACE_BACKOFF: Duration = Duration::from_millis(500);
const REPLACE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where a task stands at its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for capacity.
    Pending,
    /// A negotiation is running.
    Placing,
    /// Committed to a host.
    Placed,
    /// Its host said it started.
    Running,
    /// Its host stopped renewing the lease (or was declared dead); the attempt is kept until the
    /// spec's `replace_after_s` runs out.
    Unreachable,
    /// Ended well.
    Succeeded,
    /// Ended badly, with why.
    Failed(String),
}

impl Status {
    /// Whether the task has ended.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed(_))
    }
}

/// One task, as its origin stores it.
#[derive(Clone, Debug)]
pub struct OriginTask {
    /// Index of the arrival in the workload.
    pub arrival: usize,
    /// The spec.
    pub spec: TaskSpec,
    /// Where it stands.
    pub status: Status,
    /// The current attempt (0 before the first negotiation).
    pub attempt: Attempt,
    /// The host the current attempt's commit went to.
    pub committing: Option<PeerId>,
    /// A commit for the current attempt went out: the next negotiation needs a new attempt.
    pub commit_sent: bool,
    /// The host running the current attempt.
    pub placement: Option<PeerId>,
    /// The host said it started the current attempt.
    pub started: bool,
    /// Attempts placed so far.
    pub placed_attempts: u32,
    /// When to try placing again (origin's clock).
    pub next_try: Time,
    /// Wall-clock deadline of `queue_timeout_s`, unix ms on the origin's clock.
    pub queue_deadline_ms: u64,
}

/// A report the origin accepted as a task's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Result {
    /// The task.
    pub task: TaskId,
    /// The attempt whose result it is.
    pub attempt: Attempt,
}

/// A waiting task's place in the queue: highest priority first, then oldest (ids grow with time).
fn queue_key(id: TaskId, t: &OriginTask) -> (Reverse<i32>, TaskId) {
    (Reverse(t.spec.priority), id)
}

/// The origin side: durable (it survives a crash of its node, as the store does), but for its
/// leases, which live in memory as the node's do and are granted afresh by `recover`.
#[derive(Debug)]
pub struct Origin {
    /// Tasks submitted here, ended ones included.
    pub tasks: BTreeMap<TaskId, OriginTask>,
    /// Tasks waiting for a placement, in the order the node's index keeps them: highest
    /// priority first, then oldest (see [`queue_key`]).
    pub waiting: BTreeSet<(Reverse<i32>, TaskId)>,
    /// Reports refused by fencing.
    pub stale_reports: u64,
    /// Slots freed by attempts that ended since the driver last looked: each starts a waiting
    /// task at once (as the node does), not at the next retry pass.
    pub freed_slots: usize,
    /// Attempts given up (lease expired, or reported lost) and placed again or failed.
    pub attempts_lost: u64,
    /// Of those, given up because their lease ran out.
    pub attempts_expired: u64,
    /// Leases of placed attempts.
    pub leases: Leases,
}

impl Default for Origin {
    fn default() -> Self {
        Self {
            tasks: BTreeMap::new(),
            waiting: BTreeSet::new(),
            stale_reports: 0,
            freed_slots: 0,
            attempts_lost: 0,
            attempts_expired: 0,
            leases: Leases::new(LeaseConfig::default()),
        }
    }
}

impl Origin {
    /// A new task, waiting to be placed.
    pub fn submit(&mut self, id: TaskId, arrival: usize, spec: TaskSpec, queue_deadline_ms: u64) {
        let task = OriginTask {
            arrival,
            spec,
            status: Status::Pending,
            attempt: Attempt(0),
            committing: None,
            commit_sent: false,
            placement: None,
            started: false,
            placed_attempts: 0,
            next_try: Time::ZERO,
            queue_deadline_ms,
        };
        self.waiting.insert(queue_key(id, &task));
        self.tasks.insert(id, task);
    }

    /// After a restart: negotiations died with the process; tasks caught placing wait again,
    /// with a new attempt number if a commit may have gone out. Placed attempts get fresh leases
    /// to renew (as the node's `recover` grants them); attempts this node ran for itself are
    /// reported lost by its own executor.
    pub fn recover(&mut self, now: Time) {
        self.leases = Leases::new(self.leases.config());
        for (id, t) in &mut self.tasks {
            match t.status {
                Status::Pending | Status::Placing => {
                    t.commit_sent = t.attempt.0 > 0;
                    t.status = Status::Pending;
                    t.next_try = Time::ZERO;
                    self.waiting.insert(queue_key(*id, t));
                }
                Status::Placed | Status::Running | Status::Unreachable => {
                    if let Some(host) = &t.placement {
                        self.leases.grant(
                            *id,
                            t.attempt,
                            host.clone(),
                            lifecycle::LeaseTerms::of(&t.spec),
                            now,
                        );
                    }
                }
                Status::Succeeded | Status::Failed(_) => {}
            }
        }
    }

    /// Starts a negotiation: the attempt to place and the spec, or `None` if the task ended.
    pub fn begin_placement(&mut self, id: TaskId, now: Time) -> Option<(Attempt, TaskSpec)> {
        let t = self.tasks.get_mut(&id)?;
        if t.status.is_terminal() {
            return None;
        }
        if t.attempt.0 == 0 || t.commit_sent {
            t.attempt = t.attempt.next();
            t.commit_sent = false;
            t.committing = None;
        }
        t.next_try = now + PENDING_RETRY;
        t.status = Status::Placing;
        self.waiting.remove(&queue_key(id, t));
        Some((t.attempt, t.spec.clone()))
    }

    /// A commit for `attempt` goes to `to`.
    pub fn note_commit(&mut self, id: TaskId, attempt: Attempt, to: &PeerId) {
        if let Some(t) = self.tasks.get_mut(&id).filter(|t| t.attempt == attempt) {
            t.committing = Some(to.clone());
            t.commit_sent = true;
        }
    }

    /// The negotiation placed `attempt` on `host`: it holds the lease from `now`.
    pub fn placed(&mut self, id: TaskId, attempt: Attempt, host: &PeerId, now: Time) -> bool {
        let Some(t) = self.tasks.get_mut(&id).filter(|t| t.attempt == attempt) else { return false };
        if t.status.is_terminal() {
            return false;
        }
        t.placement = Some(host.clone());
        t.started = false;
        t.placed_attempts += 1;
        self.leases.grant(id, attempt, host.clone(), lifecycle::LeaseTerms::of(&t.spec), now);
        if matches!(t.status, Status::Pending | Status::Placing) {
            t.status = Status::Placed;
        }
        true
    }

    /// The negotiation found no capacity: wait and retry.
    pub fn waiting(&mut self, id: TaskId, attempt: Attempt, now: Time) {
        if let Some(t) = self.tasks.get_mut(&id).filter(|t| t.attempt == attempt && !t.status.is_terminal()) {
            t.next_try = now + PENDING_RETRY;
            t.status = Status::Pending;
            self.waiting.insert(queue_key(id, t));
        }
    }

    /// The task can never be placed.
    pub fn fail(&mut self, id: TaskId, reason: String) {
        if let Some(t) = self.tasks.get_mut(&id).filter(|t| !t.status.is_terminal()) {
            t.status = Status::Failed(reason);
            self.waiting.remove(&queue_key(id, t));
            self.leases.release(id);
        }
    }

    /// Waiting tasks due for a retry (at most a batch), and those past their queue timeout,
    /// which fail here.
    pub fn due(&mut self, now: Time, wall_ms: u64, placing: impl Fn(TaskId) -> bool) -> Vec<TaskId> {
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (_, id) in &self.waiting {
            let Some(t) = self.tasks.get(id) else { continue };
            if placing(*id) {
                continue;
            }
            if wall_ms >= t.queue_deadline_ms {
                expired.push(*id);
            } else if t.next_try <= now && due.len() < RETRY_BATCH {
                due.push(*id);
            }
        }
        for id in expired {
            self.fail(id, "queue timeout".into());
        }
        due
    }

    /// The waiting tasks that take the slots freed since the last call, in the node's order
    /// (highest priority, then oldest), whether or not their retry is due.
    pub fn take_freed(&mut self, placing: impl Fn(TaskId) -> bool) -> Vec<TaskId> {
        let freed = std::mem::take(&mut self.freed_slots);
        self.waiting.iter().map(|(_, id)| *id).filter(|id| !placing(*id)).take(freed).collect()
    }

    /// The earliest retry of a waiting task.
    pub fn next_retry(&self) -> Option<Time> {
        self.waiting.iter().filter_map(|(_, id)| self.tasks.get(id)).map(|t| t.next_try).min()
    }

    /// The failure detector gave up on `peer`: its attempts turn unreachable and are placed
    /// again only if it stays away for their `replace_after_s` (a partition is not a death).
    pub fn host_dead(&mut self, peer: &PeerId, now: Time) {
        self.leases.host_dead(peer, now);
    }

    /// Acts on what the leases say (after `leases.handle_timeout`, a renewal or a report).
    /// Returns whether a task went back to waiting.
    pub fn pump_leases(&mut self, now: Time, rng: &mut impl Rng) -> bool {
        let mut requeued = false;
        while let Some(event) = self.leases.poll_event() {
            match event {
                LeaseEvent::Unreachable { task, attempt } => {
                    if let Some(t) = self.current(task, attempt)
                        && matches!(t.status, Status::Placed | Status::Running)
                    {
                        t.status = Status::Unreachable;
                    }
                }
                LeaseEvent::Reachable { task, attempt } => {
                    if let Some(t) = self.current(task, attempt).filter(|t| t.status == Status::Unreachable) {
                        t.status = if t.started { Status::Running } else { Status::Placed };
                    }
                }
                LeaseEvent::Expired { task, attempt, .. } => {
                    if self.current(task, attempt).is_some() {
                        self.attempts_expired += 1;
                        requeued |=
                            self.attempt_lost(task, "executor unreachable for replace_after_s", now, rng);
                    }
                }
                LeaseEvent::Overdue { task, attempt, .. } => {
                    if self.current(task, attempt).is_some() {
                        requeued |= self.attempt_lost(task, "timed out at the origin", now, rng);
                    }
                }
            }
        }
        requeued
    }

    fn current(&mut self, task: TaskId, attempt: Attempt) -> Option<&mut OriginTask> {
        self.tasks.get_mut(&task).filter(|t| t.attempt == attempt && !t.status.is_terminal())
    }

    /// The current attempt is gone: place the task again after a back-off while attempts
    /// remain, else fail it. Returns whether it waits again.
    fn attempt_lost(&mut self, id: TaskId, why: &str, now: Time, rng: &mut impl Rng) -> bool {
        self.leases.release(id);
        let Some(t) = self.tasks.get_mut(&id).filter(|t| !t.status.is_terminal()) else { return false };
        self.attempts_lost += 1;
        let delay = lifecycle::backoff(t.attempt, REPLACE_BACKOFF, REPLACE_BACKOFF_MAX, rng);
        t.commit_sent = true;
        t.committing = None;
        t.placement = None;
        t.started = false;
        if t.placed_attempts >= t.spec.max_attempts {
            t.status = Status::Failed(format!("{why}; gave up after {} attempts", t.placed_attempts));
            return false;
        }
        t.status = Status::Pending;
        t.next_try = now + delay;
        self.waiting.insert(queue_key(id, t));
        true
    }

    /// A host renews the leases of the attempts it holds for tasks of this node. Answers which
    /// of them to stop (not the current attempt on that host, or ended).
    pub fn on_renew(&mut self, from: &PeerId, attempts: &[(TaskId, Attempt)], now: Time) -> TaskResponse {
        let mut stop = Vec::new();
        for &(task, attempt) in attempts {
            let t = self.tasks.get(&task);
            let ours = t.is_some_and(|t| {
                t.attempt == attempt
                    && (t.placement.as_ref() == Some(from) || t.committing.as_ref() == Some(from))
            });
            if ours && t.is_some_and(|t| !t.status.is_terminal()) {
                self.leases.renew(from, task, attempt, now);
                continue;
            }
            // A renewal that crossed the attempt's own `Finished` is no stale claim.
            if !ours {
                self.stale_reports += 1;
            }
            stop.push((task, attempt));
        }
        TaskResponse::Leases { stop, cancel: Vec::new() }
    }

    /// A host's report, fenced: only the current attempt, from the host it was committed to.
    /// Returns the answer and, for an accepted `Finished` that is not a lost attempt, the result.
    pub fn on_report(
        &mut self,
        from: &PeerId,
        report: &TaskRequest,
        now: Time,
        rng: &mut impl Rng,
    ) -> (TaskResponse, Option<Result>) {
        if let TaskRequest::Renew { attempts } = report {
            return (self.on_renew(from, attempts, now), None);
        }
        let Some((id, attempt)) = report.attempt() else { return (TaskResponse::Unknown, None) };
        let Some(t) = self.tasks.get_mut(&id) else { return (TaskResponse::Unknown, None) };
        let from_host = t.placement.as_ref() == Some(from) || t.committing.as_ref() == Some(from);
        if attempt != t.attempt || !from_host {
            self.stale_reports += 1;
            return (TaskResponse::Stale { current: t.attempt }, None);
        }
        if t.status.is_terminal() {
            // A resend whose answer was lost.
            return (TaskResponse::Ack, None);
        }
        // Any report from the attempt's holder shows it is alive.
        self.leases.renew(from, id, attempt, now);
        match report {
            TaskRequest::Started { .. } => {
                if t.placement.is_none() {
                    t.placement = t.committing.clone();
                }
                t.started = true;
                if matches!(t.status, Status::Placed | Status::Unreachable) {
                    t.status = Status::Running;
                }
                (TaskResponse::Ack, None)
            }
            TaskRequest::Finished { outcome, .. } => {
                if matches!(t.status, Status::Placed | Status::Running) {
                    self.freed_slots += 1;
                }
                if outcome.lost {
                    let why = outcome.error.clone().unwrap_or_else(|| "attempt lost".into());
                    self.attempt_lost(id, &why, now, rng);
                    return (TaskResponse::Ack, None);
                }
                t.status = if outcome.succeeded() {
                    Status::Succeeded
                } else {
                    Status::Failed(outcome.error.clone().unwrap_or_default())
                };
                self.waiting.remove(&queue_key(id, t));
                self.leases.release(id);
                (TaskResponse::Ack, Some(Result { task: id, attempt }))
            }
            TaskRequest::Log { .. } | TaskRequest::Cancel { .. } | TaskRequest::Renew { .. } => {
                (TaskResponse::Ack, None)
            }
        }
    }
}

/// One attempt running (or still reporting) on a host.
#[derive(Clone, Debug)]
pub struct Run {
    /// Its origin.
    pub origin: PeerId,
    started_acked: bool,
    /// How the process ended; `Finished` is due.
    pub outcome: Option<Outcome>,
    in_flight: bool,
    retry_at: Option<Time>,
    backoff: Duration,
}

/// The host side. Durable, as the node's store keeps its runs: a crash kills the processes, and
/// the restarted executor reports each attempt that had not ended as lost.
#[derive(Debug, Default)]
pub struct Executor {
    /// Attempts running or reporting here.
    pub runs: BTreeMap<(TaskId, Attempt), Run>,
    /// When the leases are renewed next (local clock); `None` until the first run.
    next_renewal: Option<Time>,
}

impl Executor {
    /// A commit was accepted: the attempt runs. `false` if it already did (a repeated commit).
    pub fn start(&mut self, origin: PeerId, task: TaskId, attempt: Attempt) -> bool {
        if self.runs.contains_key(&(task, attempt)) {
            return false;
        }
        let run = Run {
            origin,
            started_acked: false,
            outcome: None,
            in_flight: false,
            retry_at: None,
            backoff: FIRST_BACKOFF,
        };
        self.runs.insert((task, attempt), run);
        true
    }

    /// The attempt's process ended well.
    pub fn ended(&mut self, task: TaskId, attempt: Attempt) {
        if let Some(r) = self.runs.get_mut(&(task, attempt)).filter(|r| r.outcome.is_none()) {
            r.outcome =
                Some(Outcome { exit_code: Some(0), error: None, cancelled: false, lost: false, log_len: 0 });
        }
    }

    /// The attempts running when the process died, in key order: they died with it.
    pub fn running(&self) -> impl Iterator<Item = (TaskId, Attempt)> + '_ {
        self.runs.iter().filter(|(_, r)| r.outcome.is_none()).map(|(k, _)| *k)
    }

    /// After a restart: what was running died with the process and is reported lost; what had
    /// ended still owes its origin the result. Nothing is in flight any more.
    pub fn recover(&mut self, now: Time) {
        for r in self.runs.values_mut() {
            if r.outcome.is_none() {
                r.outcome = Some(Outcome::lost("its executor restarted while it ran", 0));
            }
            r.started_acked = true;
            r.in_flight = false;
            r.retry_at = None;
            r.backoff = FIRST_BACKOFF;
        }
        self.next_renewal = Some(now);
    }

    /// The next report of every attempt that has one due and none in flight, in key order.
    pub fn due_reports(&mut self, now: Time) -> Vec<(PeerId, TaskRequest)> {
        let mut out = Vec::new();
        for (&(task, attempt), r) in &mut self.runs {
            if r.in_flight || r.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let request = if !r.started_acked {
                TaskRequest::Started { task, attempt }
            } else if let Some(outcome) = &r.outcome {
                TaskRequest::Finished { task, attempt, outcome: outcome.clone() }
            } else {
                continue;
            };
            r.in_flight = true;
            out.push((r.origin.clone(), request));
        }
        out
    }

    /// One `Renew` per origin of the attempts held here, split at the protocol's limit, if a
    /// renewal is due (every `renew_every`, as the node does).
    pub fn due_renewals(&mut self, now: Time, renew_every: Duration) -> Vec<(PeerId, TaskRequest)> {
        if self.runs.is_empty() {
            self.next_renewal = None;
            return Vec::new();
        }
        let due = *self.next_renewal.get_or_insert(now + renew_every);
        if due > now {
            return Vec::new();
        }
        self.next_renewal = Some(now + renew_every);
        let mut by_origin: BTreeMap<&PeerId, Vec<(TaskId, Attempt)>> = BTreeMap::new();
        for (key, run) in &self.runs {
            by_origin.entry(&run.origin).or_default().push(*key);
        }
        let mut out = Vec::new();
        for (origin, attempts) in by_origin {
            for chunk in attempts.chunks(limits::MAX_RENEW) {
                out.push((origin.clone(), TaskRequest::Renew { attempts: chunk.to_vec() }));
            }
        }
        out
    }

    /// The origin's answer to a report (`None`: no answer; retry later). Returns the attempt if
    /// the origin no longer wants it and it was still running: the driver stops it.
    pub fn on_answer(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        finished: bool,
        answer: Option<TaskResponse>,
        now: Time,
    ) -> Option<(TaskId, Attempt)> {
        let key = (task, attempt);
        let r = self.runs.get_mut(&key)?;
        r.in_flight = false;
        match answer {
            Some(TaskResponse::Ack) => {
                r.retry_at = None;
                r.backoff = FIRST_BACKOFF;
                if finished {
                    self.runs.remove(&key);
                } else {
                    r.started_acked = true;
                }
                None
            }
            Some(TaskResponse::Stale { .. } | TaskResponse::Unknown) => self.abandon(key),
            Some(TaskResponse::LogGap { .. } | TaskResponse::Leases { .. }) | None => {
                r.retry_at = Some(now + r.backoff);
                r.backoff = (r.backoff * 2).min(MAX_BACKOFF);
                None
            }
        }
    }

    /// The origin's answer to a `Renew`: the attempts it lists to stop are stopped. Returns
    /// those that were still running.
    pub fn on_leases(&mut self, answer: &TaskResponse) -> Vec<(TaskId, Attempt)> {
        let TaskResponse::Leases { stop, .. } = answer else { return Vec::new() };
        stop.iter().filter_map(|key| self.abandon(*key)).collect()
    }

    /// The origin no longer wants an attempt: stop it, report nothing more, forget it. Returns
    /// it if it was still running (the driver frees its slot).
    fn abandon(&mut self, key: (TaskId, Attempt)) -> Option<(TaskId, Attempt)> {
        let run = self.runs.remove(&key)?;
        run.outcome.is_none().then_some(key)
    }

    /// The earliest report retry or lease renewal.
    pub fn next_retry(&self) -> Option<Time> {
        self.runs.values().filter(|r| !r.in_flight).filter_map(|r| r.retry_at).chain(self.next_renewal).min()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn peer(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    fn ok() -> Outcome {
        Outcome { exit_code: Some(0), error: None, cancelled: false, lost: false, log_len: 0 }
    }

    /// Runs the origin's lease clock from `from` to `to` in steps shorter than a stall, as the
    /// node's timers do; returns whether a task went back to waiting.
    fn advance(o: &mut Origin, from: Time, to: Time) -> bool {
        let mut requeued = false;
        let mut t = from;
        while t < to {
            t = Time((t.0 + 500).min(to.0));
            o.leases.handle_timeout(t);
            requeued |= o.pump_leases(t, &mut rng());
        }
        requeued
    }

    /// Places `id` on `host` as its next attempt at `now`.
    fn place(o: &mut Origin, id: TaskId, host: &PeerId, now: Time) -> Attempt {
        let (a, _) = o.begin_placement(id, now).unwrap();
        o.note_commit(id, a, host);
        assert!(o.placed(id, a, host, now));
        a
    }

    #[test]
    fn reports_are_fenced_by_attempt_and_host() {
        let (h1, h2) = (peer("12D3KooWhostA"), peer("12D3KooWhostB"));
        let id = TaskId::new(1, 1);
        let mut o = Origin::default();
        let mut spec = TaskSpec::new(vec!["x".into()]);
        spec.replace_after_s = 10;
        o.submit(id, 0, spec, u64::MAX);
        let a1 = place(&mut o, id, &h1, Time(0));
        // The host is declared dead: unreachable at once, given up after replace_after_s.
        advance(&mut o, Time(0), Time(1_000));
        o.host_dead(&h1, Time(1_000));
        o.pump_leases(Time(1_000), &mut rng());
        assert_eq!(o.tasks[&id].status, Status::Unreachable);
        assert!(!advance(&mut o, Time(1_000), Time(10_999)), "not before replace_after_s");
        assert!(advance(&mut o, Time(10_999), Time(11_000)), "placed again");
        assert_eq!((o.attempts_lost, o.attempts_expired), (1, 1));
        let a2 = place(&mut o, id, &h2, Time(12_000));
        assert_eq!(a2, Attempt(2));
        let late = TaskRequest::Finished { task: id, attempt: a1, outcome: ok() };
        assert_eq!(
            o.on_report(&h1, &late, Time(12_000), &mut rng()),
            (TaskResponse::Stale { current: a2 }, None)
        );
        let wrong_host = TaskRequest::Finished { task: id, attempt: a2, outcome: ok() };
        assert!(matches!(
            o.on_report(&h1, &wrong_host, Time(12_000), &mut rng()),
            (TaskResponse::Stale { .. }, None)
        ));
        assert_eq!(
            o.on_report(&h2, &wrong_host, Time(12_000), &mut rng()),
            (TaskResponse::Ack, Some(Result { task: id, attempt: a2 }))
        );
        assert_eq!(
            o.on_report(&h2, &wrong_host, Time(12_000), &mut rng()),
            (TaskResponse::Ack, None),
            "a resend is no second result"
        );
        assert_eq!(o.stale_reports, 2);
        assert!(o.leases.is_empty(), "an ended task holds no lease");
    }

    #[test]
    fn a_renewal_keeps_a_lease_and_tells_a_superseded_host_to_stop() {
        let (h1, h2) = (peer("12D3KooWhostA"), peer("12D3KooWhostB"));
        let id = TaskId::new(1, 1);
        let mut o = Origin::default();
        o.submit(id, 0, TaskSpec::new(vec!["x".into()]), u64::MAX);
        let a1 = place(&mut o, id, &h1, Time(0));
        let ttl = o.leases.config().ttl.as_millis() as u64;
        // Renewed in time: never unreachable.
        let mut now = Time(0);
        for _ in 0..3 {
            advance(&mut o, now, Time(now.0 + ttl / 2));
            now = Time(now.0 + ttl / 2);
            assert_eq!(
                o.on_renew(&h1, &[(id, a1)], now),
                TaskResponse::Leases { stop: vec![], cancel: vec![] }
            );
        }
        assert_eq!(o.tasks[&id].status, Status::Placed);
        // Silent past the TTL: unreachable; a renewal brings it back as it was.
        let late = Time(now.0 + ttl);
        advance(&mut o, now, late);
        assert_eq!(o.tasks[&id].status, Status::Unreachable);
        o.on_renew(&h1, &[(id, a1)], late);
        o.pump_leases(late, &mut rng());
        assert_eq!(o.tasks[&id].status, Status::Placed);
        // Another host claiming the attempt is told to stop it, and that counts as stale.
        assert_eq!(
            o.on_renew(&h2, &[(id, a1)], late),
            TaskResponse::Leases { stop: vec![(id, a1)], cancel: vec![] }
        );
        assert_eq!(o.stale_reports, 1);
        // A renewal that crossed the attempt's own result is stopped, but is no stale claim.
        let finished = TaskRequest::Finished { task: id, attempt: a1, outcome: ok() };
        assert!(o.on_report(&h1, &finished, late, &mut rng()).1.is_some());
        assert_eq!(
            o.on_renew(&h1, &[(id, a1)], late),
            TaskResponse::Leases { stop: vec![(id, a1)], cancel: vec![] }
        );
        assert_eq!(o.stale_reports, 1);
    }

    #[test]
    fn an_attempt_reported_lost_is_placed_again_after_a_back_off() {
        let host = peer("12D3KooWhostA");
        let id = TaskId::new(1, 1);
        let mut o = Origin::default();
        o.submit(id, 0, TaskSpec::new(vec!["x".into()]), u64::MAX);
        let a = place(&mut o, id, &host, Time(0));
        let lost = TaskRequest::Finished { task: id, attempt: a, outcome: Outcome::lost("restarted", 0) };
        assert_eq!(o.on_report(&host, &lost, Time(100), &mut rng()), (TaskResponse::Ack, None), "no result");
        let (status, next_try) = (o.tasks[&id].status.clone(), o.tasks[&id].next_try);
        assert_eq!(status, Status::Pending);
        assert!(next_try > Time(100), "after a back-off");
        assert_eq!((o.attempts_lost, o.attempts_expired), (1, 0), "reported, not expired");
        assert!(o.due(Time(100), 0, |_| false).is_empty());
        assert_eq!(o.due(next_try, 0, |_| false), vec![id]);
        assert_eq!(o.begin_placement(id, Time(1_000)).unwrap().0, Attempt(2), "a new attempt number");
    }

    #[test]
    fn a_restarted_executor_reports_what_died_as_lost_and_what_ended_as_it_ended() {
        let origin = peer("12D3KooWorigin");
        let (t1, t2) = (TaskId::new(1, 1), TaskId::new(2, 2));
        let mut e = Executor::default();
        e.start(origin.clone(), t1, Attempt(1));
        e.start(origin.clone(), t2, Attempt(1));
        e.ended(t2, Attempt(1));
        assert_eq!(e.running().collect::<Vec<_>>(), vec![(t1, Attempt(1))]);
        e.recover(Time(0));
        let due = e.due_reports(Time(0));
        let outcome = |t: TaskId| {
            due.iter().find_map(|(_, r)| match r {
                TaskRequest::Finished { task, outcome, .. } if *task == t => Some(outcome.clone()),
                _ => None,
            })
        };
        assert!(outcome(t1).is_some_and(|o| o.lost), "{due:?}");
        assert!(outcome(t2).is_some_and(|o| o.succeeded()), "{due:?}");
    }

    #[test]
    fn an_executor_renews_once_per_interval_per_origin_and_stops_what_it_is_told() {
        let (o1, o2) = (peer("12D3KooWoriginA"), peer("12D3KooWoriginB"));
        let every = Duration::from_secs(1);
        let mut e = Executor::default();
        assert!(e.due_renewals(Time(0), every).is_empty(), "nothing held, nothing renewed");
        for (n, origin) in [(1, &o1), (2, &o1), (3, &o2)] {
            e.start(origin.clone(), TaskId::new(n, u128::from(n)), Attempt(1));
        }
        assert!(e.due_renewals(Time(0), every).is_empty(), "the first renewal is an interval away");
        let renewals = e.due_renewals(Time(1_000), every);
        assert_eq!(renewals.len(), 2, "one per origin: {renewals:?}");
        assert!(e.due_renewals(Time(1_500), every).is_empty());
        assert_eq!(e.next_retry(), Some(Time(2_000)));
        let stop = TaskResponse::Leases { stop: vec![(TaskId::new(1, 1), Attempt(1))], cancel: vec![] };
        assert_eq!(e.on_leases(&stop), vec![(TaskId::new(1, 1), Attempt(1))], "still running: stopped");
        assert_eq!(e.runs.len(), 2);
    }

    #[test]
    fn a_freed_slot_goes_to_the_first_waiting_task_even_before_its_retry_is_due() {
        let host = peer("12D3KooWhostA");
        let mut o = Origin::default();
        let with_priority = |p: i32| {
            let mut spec = TaskSpec::new(vec!["x".into()]);
            spec.priority = p;
            spec
        };
        let (running, low, high) = (TaskId::new(1, 1), TaskId::new(2, 2), TaskId::new(3, 3));
        o.submit(running, 0, with_priority(0), u64::MAX);
        let (a, _) = o.begin_placement(running, Time(0)).unwrap();
        o.note_commit(running, a, &host);
        assert!(o.placed(running, a, &host, Time(0)));
        // Both others tried and found no room: their next retry is 250 ms away.
        for (i, id) in [low, high].into_iter().enumerate() {
            o.submit(id, i + 1, with_priority(if id == high { 5 } else { 0 }), u64::MAX);
            let (attempt, _) = o.begin_placement(id, Time(0)).unwrap();
            o.waiting(id, attempt, Time(0));
        }
        assert!(o.take_freed(|_| false).is_empty(), "no slot freed yet");
        assert!(o.due(Time(1), 0, |_| false).is_empty(), "no retry due yet");
        let ok = Outcome { exit_code: Some(0), error: None, cancelled: false, lost: false, log_len: 0 };
        let finished = TaskRequest::Finished { task: running, attempt: a, outcome: ok };
        assert_eq!(o.on_report(&host, &finished, Time(1), &mut rng()).0, TaskResponse::Ack);
        assert_eq!(o.take_freed(|_| false), vec![high], "the freed slot goes to the highest priority");
        assert!(o.take_freed(|_| false).is_empty(), "one slot freed, one task started");
        assert_eq!(o.due(Time(250), 0, |_| false), vec![high, low], "retries keep the same order");
    }

    #[test]
    fn executor_reports_started_then_finished_and_retries() {
        let origin = peer("12D3KooWorigin");
        let id = TaskId::new(1, 1);
        let mut e = Executor::default();
        assert!(e.start(origin.clone(), id, Attempt(1)));
        assert!(!e.start(origin.clone(), id, Attempt(1)));
        let due = e.due_reports(Time(0));
        assert_eq!(due, vec![(origin.clone(), TaskRequest::Started { task: id, attempt: Attempt(1) })]);
        assert!(e.due_reports(Time(0)).is_empty(), "one in flight at a time");
        e.on_answer(id, Attempt(1), false, None, Time(0));
        assert_eq!(e.next_retry(), Some(Time(500)));
        assert!(e.due_reports(Time(499)).is_empty());
        assert_eq!(e.due_reports(Time(500)).len(), 1);
        e.on_answer(id, Attempt(1), false, Some(TaskResponse::Ack), Time(600));
        assert!(e.due_reports(Time(600)).is_empty(), "nothing until it ends");
        e.ended(id, Attempt(1));
        let due = e.due_reports(Time(700));
        assert!(matches!(due[..], [(_, TaskRequest::Finished { .. })]));
        e.on_answer(id, Attempt(1), true, Some(TaskResponse::Ack), Time(800));
        assert!(e.runs.is_empty());
    }
}
