//! A task's life after placement, as the simulator models it: the origin's durable task table
//! (placing, fencing of reports by attempt and host, re-placement when a host is declared dead)
//! and the host's executor (runs an attempt for its duration, then reports `Started` and
//! `Finished` to the origin, retrying with back-off until acknowledged).
//!
//! **A stand-in.** This mirrors what `node/src/actor/{origin,host}.rs` do today and will be
//! replaced by `protocol::lifecycle` (task leases, attempts, re-placement) once that lands. The
//! world calls it only through [`Origin`] and [`Executor`]; swapping it means re-implementing
//! those two types over the lifecycle machines, nothing else. Reports do travel as real
//! `wire::task` bytes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use orgmesh_protocol::wire::task::{Outcome, TaskRequest, TaskResponse};
use orgmesh_protocol::{Attempt, PeerId, TaskId, TaskSpec, Time};

/// How soon a task that found no free capacity tries again (as the node does).
pub const PENDING_RETRY: Duration = Duration::from_millis(250);
/// At most this many waiting tasks start a negotiation per pass (as the node does).
pub const RETRY_BATCH: usize = 32;
/// First retry delay of an unanswered report; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

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
    /// The host's generation when the attempt was placed: a later one means the attempt died.
    pub placed_generation: Option<u64>,
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

/// The origin side: durable (it survives a crash of its node, as the store does).
#[derive(Debug, Default)]
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
            placed_generation: None,
            placed_attempts: 0,
            next_try: Time::ZERO,
            queue_deadline_ms,
        };
        self.waiting.insert(queue_key(id, &task));
        self.tasks.insert(id, task);
    }

    /// After a restart: negotiations died with the process; tasks caught placing wait again,
    /// with a new attempt number if a commit may have gone out. Attempts this node ran for
    /// itself died with its previous process: those tasks are placed again too.
    pub fn recover(&mut self, me: &PeerId) {
        let own: Vec<TaskId> = self.host_lost(me);
        for id in own {
            if let Some(t) = self.tasks.get_mut(&id) {
                t.status = Status::Pending;
            }
        }
        for (id, t) in &mut self.tasks {
            if matches!(t.status, Status::Pending | Status::Placing) {
                t.commit_sent = t.attempt.0 > 0;
                t.status = Status::Pending;
                t.next_try = Time::ZERO;
                self.waiting.insert(queue_key(*id, t));
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

    /// The negotiation placed `attempt` on `host`, whose record's generation was `generation`.
    pub fn placed(&mut self, id: TaskId, attempt: Attempt, host: &PeerId, generation: Option<u64>) -> bool {
        let Some(t) = self.tasks.get_mut(&id).filter(|t| t.attempt == attempt) else { return false };
        if t.status.is_terminal() {
            return false;
        }
        t.placement = Some(host.clone());
        t.placed_generation = generation;
        t.placed_attempts += 1;
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

    /// A host was declared dead: its attempts are lost. Returns the tasks to place again.
    pub fn host_lost(&mut self, peer: &PeerId) -> Vec<TaskId> {
        let mut again = Vec::new();
        for (id, t) in &mut self.tasks {
            if !matches!(t.status, Status::Placed | Status::Running) || t.placement.as_ref() != Some(peer) {
                continue;
            }
            t.commit_sent = true;
            t.committing = None;
            t.placement = None;
            if t.placed_attempts >= t.spec.max_attempts {
                t.status = Status::Failed(format!("host died; gave up after {} attempts", t.placed_attempts));
            } else {
                t.status = Status::Placing;
                again.push(*id);
            }
        }
        again
    }

    /// A host was seen with a record of `generation`: attempts placed on an earlier generation
    /// died with that process, even if this node never saw it declared dead (say this node
    /// restarted too, and learned the host's new generation first). Returns the tasks to place
    /// again.
    pub fn host_restarted(&mut self, peer: &PeerId, generation: u64) -> Vec<TaskId> {
        let stale = self.tasks.values().any(|t| {
            matches!(t.status, Status::Placed | Status::Running)
                && t.placement.as_ref() == Some(peer)
                && t.placed_generation.is_some_and(|g| g < generation)
        });
        if stale { self.host_lost_before(peer, generation) } else { Vec::new() }
    }

    fn host_lost_before(&mut self, peer: &PeerId, generation: u64) -> Vec<TaskId> {
        let mut again = Vec::new();
        for (id, t) in &mut self.tasks {
            let on_old = matches!(t.status, Status::Placed | Status::Running)
                && t.placement.as_ref() == Some(peer)
                && t.placed_generation.is_some_and(|g| g < generation);
            if !on_old {
                continue;
            }
            t.commit_sent = true;
            t.committing = None;
            t.placement = None;
            if t.placed_attempts >= t.spec.max_attempts {
                t.status =
                    Status::Failed(format!("host restarted; gave up after {} attempts", t.placed_attempts));
            } else {
                t.status = Status::Placing;
                again.push(*id);
            }
        }
        again
    }

    /// A host's report, fenced: only the current attempt, from the host it was committed to.
    /// Returns the answer and, for an accepted `Finished`, the result.
    pub fn on_report(&mut self, from: &PeerId, report: &TaskRequest) -> (TaskResponse, Option<Result>) {
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
        match report {
            TaskRequest::Started { .. } => {
                if t.placement.is_none() {
                    t.placement = t.committing.clone();
                }
                t.status = Status::Running;
                (TaskResponse::Ack, None)
            }
            TaskRequest::Finished { outcome, .. } => {
                if matches!(t.status, Status::Placed | Status::Running) {
                    self.freed_slots += 1;
                }
                t.status = if outcome.succeeded() {
                    Status::Succeeded
                } else {
                    Status::Failed(outcome.error.clone().unwrap_or_default())
                };
                self.waiting.remove(&queue_key(id, t));
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
    /// The process ended; `Finished` is due.
    pub ended: bool,
    in_flight: bool,
    retry_at: Option<Time>,
    backoff: Duration,
}

/// The host side: in memory only, so a crash loses it, as the node's does today.
#[derive(Debug, Default)]
pub struct Executor {
    /// Attempts running or reporting here.
    pub runs: BTreeMap<(TaskId, Attempt), Run>,
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
            ended: false,
            in_flight: false,
            retry_at: None,
            backoff: FIRST_BACKOFF,
        };
        self.runs.insert((task, attempt), run);
        true
    }

    /// The attempt's process ended.
    pub fn ended(&mut self, task: TaskId, attempt: Attempt) {
        if let Some(r) = self.runs.get_mut(&(task, attempt)) {
            r.ended = true;
        }
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
            } else if r.ended {
                let outcome =
                    Outcome { exit_code: Some(0), error: None, cancelled: false, lost: false, log_len: 0 };
                TaskRequest::Finished { task, attempt, outcome }
            } else {
                continue;
            };
            r.in_flight = true;
            out.push((r.origin.clone(), request));
        }
        out
    }

    /// The origin's answer to a report (`None`: no answer; retry later).
    pub fn on_answer(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        finished: bool,
        answer: Option<TaskResponse>,
        now: Time,
    ) {
        let key = (task, attempt);
        let Some(r) = self.runs.get_mut(&key) else { return };
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
            }
            // The origin no longer wants this attempt: stop reporting it. (Its slot is freed when
            // the process ends, as in the node.)
            Some(TaskResponse::Stale { .. } | TaskResponse::Unknown | TaskResponse::Leases { .. }) => {
                if r.ended {
                    self.runs.remove(&key);
                } else {
                    r.started_acked = true;
                    r.retry_at = Some(Time(u64::MAX));
                }
            }
            Some(TaskResponse::LogGap { .. }) | None => {
                r.retry_at = Some(now + r.backoff);
                r.backoff = (r.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// The earliest report retry.
    pub fn next_retry(&self) -> Option<Time> {
        self.runs
            .values()
            .filter(|r| !r.in_flight)
            .filter_map(|r| r.retry_at)
            .filter(|t| t.0 != u64::MAX)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }

    #[test]
    fn reports_are_fenced_by_attempt_and_host() {
        let (h1, h2) = (peer("12D3KooWhostA"), peer("12D3KooWhostB"));
        let id = TaskId::new(1, 1);
        let mut o = Origin::default();
        o.submit(id, 0, TaskSpec::new(vec!["x".into()]), u64::MAX);
        let (a1, _) = o.begin_placement(id, Time(0)).unwrap();
        o.note_commit(id, a1, &h1);
        assert!(o.placed(id, a1, &h1, Some(1)));
        // The host dies; attempt 2 goes to h2.
        assert_eq!(o.host_lost(&h1), vec![id]);
        let (a2, _) = o.begin_placement(id, Time(1)).unwrap();
        assert_eq!(a2, Attempt(2));
        o.note_commit(id, a2, &h2);
        o.placed(id, a2, &h2, Some(1));
        assert!(o.host_restarted(&h2, 1).is_empty(), "same generation: still running");
        let ok = Outcome { exit_code: Some(0), error: None, cancelled: false, lost: false, log_len: 0 };
        let late = TaskRequest::Finished { task: id, attempt: a1, outcome: ok.clone() };
        assert_eq!(o.on_report(&h1, &late), (TaskResponse::Stale { current: a2 }, None));
        let wrong_host = TaskRequest::Finished { task: id, attempt: a2, outcome: ok.clone() };
        assert!(matches!(o.on_report(&h1, &wrong_host), (TaskResponse::Stale { .. }, None)));
        assert_eq!(
            o.on_report(&h2, &wrong_host),
            (TaskResponse::Ack, Some(Result { task: id, attempt: a2 }))
        );
        assert_eq!(o.on_report(&h2, &wrong_host), (TaskResponse::Ack, None), "a resend is no second result");
        assert_eq!(o.stale_reports, 2);
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
        assert!(o.placed(running, a, &host, Some(1)));
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
        assert_eq!(o.on_report(&host, &finished).0, TaskResponse::Ack);
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
