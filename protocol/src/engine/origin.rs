//! The origin side of a task's life: tasks submitted at this node, from placement through the
//! host's reports to a terminal status. Every change goes out as a `Write::Task`; a host's report
//! is answered only once what it reported is durable. Fencing lives here: only the current
//! attempt, on the host it was committed to, may report or renew its lease; a lost attempt (lease
//! given up, overdue, host restarted) is placed again after a back-off, up to `max_attempts`.

use std::cmp::Reverse;
use std::time::Duration;

use rand::Rng;

use super::{AfterWrite, Archive, Engine, Event, Lookup, Now, RecoveredTask, ReplyTo, Request, Sent, Write};
use crate::ids::{Attempt, PeerId, TaskId};
use crate::lifecycle::{self, LeaseEvent, LeaseTerms};
use crate::placement::PlacementEvent;
use crate::task::{AttemptRecord, Task, TaskPlacement, TaskStatus};
use crate::time::{Time, Timestamp};
use crate::wire::task::{Outcome, TaskRequest, TaskResponse};

/// Archive (store) lookups one `Renew` may cost on the event loop.
pub(super) const MAX_ARCHIVE_LOOKUPS: usize = 64;

/// A task owned by this node that has not ended.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) task: Task,
    /// The host the current attempt's commit went to (known before the commit's answer).
    committing: Option<PeerId>,
    /// A commit for the current attempt went out: the next negotiation needs a new attempt number.
    commit_sent: bool,
    pub(super) next_try: Time,
    /// When waiting runs past the spec's `queue_timeout_s`.
    pub(super) queue_deadline: Time,
    /// The current attempt's host reported `Started`.
    started: bool,
    /// When the current attempt was placed (its commit accepted), on this node's clock.
    placed_at: Option<Time>,
    /// Where the current attempt's output begins in the task's log.
    log_base: u64,
    /// Bytes in the task's log that are durable.
    pub(super) log_len: u64,
    cancel_requested: bool,
    cancel_sent_at: Option<Time>,
    /// The `(next_try, queue_deadline)` this task is filed under in the engine's timer indexes,
    /// while it waits.
    filed: Option<(Time, Time)>,
    /// Found waiting in the store at start: placed against a view still filling up.
    recovered: bool,
    /// Hosts an earlier attempt of this task ran past its time on (overdue, or renewed without
    /// starting): never asked again for it. At most `MAX_AVOIDED`, oldest dropped.
    avoid: Vec<PeerId>,
    /// The digest of the current attempt's output as received, while it is known from its
    /// first byte (not after a restart of this node mid-attempt).
    pub(super) digest: Option<super::receipts::OutputDigest>,
    /// The current attempt's receipt, checked, waiting for its `Finished`.
    pub(super) receipt: Option<crate::receipt::StoredReceipt>,
}

/// The most hosts one task avoids: enough for every attempt a spec may ask for to have failed
/// somewhere else, small enough to scan per candidate.
const MAX_AVOIDED: usize = 16;

/// When a task queued at `queued_at` (wall clock) runs out of `queue_timeout_s`, on the
/// monotonic clock.
fn queue_deadline(queued_at: Timestamp, timeout_s: u64, now: Now) -> Time {
    let deadline_ms = queued_at.0.saturating_add(timeout_s.saturating_mul(1000));
    now.time + Duration::from_millis(deadline_ms.saturating_sub(now.wall.0))
}

impl Active {
    fn new(task: Task, log_len: u64, queued_at: Timestamp, now: Now) -> Self {
        let log_base = task.history.last().filter(|h| h.attempt == task.attempt).map_or(0, |h| h.log_start);
        Self {
            queue_deadline: queue_deadline(queued_at, task.spec.queue_timeout_s, now),
            task,
            committing: None,
            commit_sent: false,
            next_try: Time::ZERO,
            started: false,
            placed_at: None,
            log_base,
            log_len,
            cancel_requested: false,
            cancel_sent_at: None,
            filed: None,
            recovered: false,
            avoid: Vec::new(),
            digest: None,
            receipt: None,
        }
    }

    /// Whether `from` may report for `attempt`.
    pub(super) fn fenced_ok(&self, from: &PeerId, attempt: Attempt) -> bool {
        attempt == self.task.attempt
            && (self.task.placement.as_ref().is_some_and(|p| &p.peer_id == from)
                || self.committing.as_ref() == Some(from))
    }

    /// The host a cancel goes to.
    fn cancel_host(&self) -> Option<PeerId> {
        self.task.placement.as_ref().map(|p| p.peer_id.clone()).or_else(|| self.committing.clone())
    }

    /// When a requested cancel is (re)sent, if it can be.
    pub(super) fn cancel_due(&self, every: Duration) -> Option<Time> {
        if !self.cancel_requested || self.cancel_host().is_none() {
            return None;
        }
        Some(self.cancel_sent_at.map_or(Time::ZERO, |t| t + every))
    }
}

impl<R: Rng> Engine<R> {
    /// Takes over the unfinished tasks found in the store after a restart.
    pub(super) fn recover_tasks(&mut self, tasks: Vec<RecoveredTask>, now: Now) {
        let count = tasks.len();
        for RecoveredTask { task, log_len } in tasks {
            let queued_at = task.updated_at;
            let mut active = Active::new(task, log_len, queued_at, now);
            match active.task.status {
                // A negotiation died with the process; a commit may have gone out, so the next
                // negotiation uses a fresh attempt number.
                TaskStatus::Pending | TaskStatus::Placing => {
                    active.commit_sent = active.task.attempt.0 > 0;
                    active.recovered = true;
                }
                // The host keeps running and re-sends its reports; it gets a fresh lease to renew.
                _ => {
                    active.started = active.task.status == TaskStatus::Running;
                    if let Some(p) = &active.task.placement {
                        let terms = LeaseTerms::of(&active.task.spec);
                        self.leases.grant(
                            active.task.id,
                            active.task.attempt,
                            p.peer_id.clone(),
                            terms,
                            now.time,
                        );
                    }
                }
            }
            let id = active.task.id;
            self.active.insert(id, active);
            self.file(id);
        }
        if count > 0 {
            tracing::info!(tasks = count, "recovered unfinished tasks");
        }
    }

    /// Writes the task's new state (with an event if its status changed).
    fn save(&mut self, id: TaskId, old_status: TaskStatus, now: Now) -> Option<Write> {
        let active = self.active.get_mut(&id)?;
        active.task.updated_at = now.wall;
        let status = active.task.status;
        let task = Box::new(active.task.clone());
        // The only place a task's status is written, so the waiting index cannot drift from it.
        self.file(id);
        // An attempt that held a slot ended: that slot can take the next waiting task now.
        let held = |s: TaskStatus| matches!(s, TaskStatus::Placed | TaskStatus::Running);
        if held(old_status) && !held(status) && status != TaskStatus::Unreachable {
            self.freed_slots += 1;
        }
        if status.is_terminal() {
            self.active.remove(&id);
            self.cancelling.remove(&id);
            self.leases.release(id);
        }
        Some(Write::Task { task, status_changed: status != old_status })
    }

    /// Changes a task and writes it.
    fn update(&mut self, id: TaskId, now: Now, change: impl FnOnce(&mut Task)) {
        if let Some(write) = self.change(id, now, change) {
            self.persist(write);
        }
    }

    /// Changes a task and returns its write, for the caller to wait on.
    fn change(&mut self, id: TaskId, now: Now, change: impl FnOnce(&mut Task)) -> Option<Write> {
        let active = self.active.get_mut(&id)?;
        let old = active.task.status;
        change(&mut active.task);
        self.save(id, old, now)
    }

    pub(super) fn start_task(&mut self, task: Task, now: Now) {
        let id = task.id;
        let queued_at = task.created_at;
        self.active.insert(id, Active::new(task, 0, queued_at, now));
        self.place(id, now);
    }

    /// Starts a negotiation for a task that is pending or being (re)placed.
    fn place(&mut self, id: TaskId, now: Now) {
        let pending_retry = self.life.pending_retry;
        let Some(active) = self.active.get_mut(&id) else { return };
        let is_new = active.task.attempt.0 == 0;
        if is_new || active.commit_sent {
            active.task.attempt = active.task.attempt.next();
            active.commit_sent = false;
            active.committing = None;
        }
        active.next_try = now.time + pending_retry;
        let (attempt, spec, avoid) = (active.task.attempt, active.task.spec.clone(), active.avoid.clone());
        // A retry of a pending task stays `pending` until it is placed: no event churn.
        if is_new {
            self.update(id, now, |t| t.status = TaskStatus::Placing);
        } else {
            self.file(id);
        }
        self.event(Event::Placing { task: id, attempt });
        let mut local = self.membership.local().clone();
        local.capacity = self.host.capacity();
        let candidates = self.membership.alive_records().chain(std::iter::once(&local));
        self.negotiator.place_avoiding(id, attempt, &spec, candidates, &avoid, now.time);
    }

    pub(super) fn note_commit(&mut self, task: TaskId, attempt: Attempt, to: &PeerId) {
        if let Some(active) = self.active.get_mut(&task).filter(|a| a.task.attempt == attempt) {
            active.committing = Some(to.clone());
            active.commit_sent = true;
            // This attempt's output goes after everything earlier attempts left in the log.
            active.log_base = active.log_len;
            active.digest = Some(super::receipts::OutputDigest::default());
            active.receipt = None;
        }
    }

    pub(super) fn on_placement_event(&mut self, event: PlacementEvent, now: Now) {
        match event {
            PlacementEvent::Placed { task, attempt, host } => {
                let Some(active) = self.active.get_mut(&task).filter(|a| a.task.attempt == attempt) else {
                    return;
                };
                active.placed_at = Some(now.time);
                let cancel = active.cancel_requested;
                let log_start = active.log_base;
                let terms = LeaseTerms::of(&active.task.spec);
                self.leases.grant(task, attempt, host.peer.clone(), terms, now.time);
                self.event(Event::Placed { task, attempt, host: host.peer.clone() });
                let placement = super::placement_of(host);
                self.update(task, now, |t| {
                    if !t.history.iter().any(|h| h.attempt == attempt) {
                        t.history.push(AttemptRecord {
                            attempt,
                            placement: placement.clone(),
                            placed_at: now.wall,
                            ended_at: None,
                            outcome: None,
                            log_start,
                        });
                    }
                    t.placement = Some(placement);
                    // The host's `Started` may have overtaken the commit's answer.
                    if matches!(t.status, TaskStatus::Pending | TaskStatus::Placing) {
                        t.status = TaskStatus::Placed;
                    }
                });
                if cancel {
                    self.send_cancel(task, now);
                }
            }
            // A view younger than the warm-up has not heard from everyone yet: for a task that was
            // waiting when this node restarted, "nobody known can run it" is not "nobody can".
            PlacementEvent::Unplaceable { task, attempt, reason }
                if now.time < self.started + self.life.view_warmup
                    && self.active.get(&task).is_some_and(|a| a.recovered) =>
            {
                self.on_placement_event(PlacementEvent::Waiting { task, attempt, reason }, now);
            }
            PlacementEvent::Unplaceable { task, attempt, reason } => {
                if self.active.get(&task).is_some_and(|a| a.task.attempt == attempt) {
                    tracing::info!(task = %task, %reason, "task cannot be placed");
                    self.update(task, now, |t| {
                        t.status = TaskStatus::Failed;
                        t.error = Some(reason);
                    });
                }
            }
            PlacementEvent::Waiting { task, attempt, reason } => {
                let pending_retry = self.life.pending_retry;
                if let Some(active) = self.active.get_mut(&task).filter(|a| a.task.attempt == attempt) {
                    active.next_try = now.time + pending_retry;
                    if active.task.status != TaskStatus::Pending {
                        tracing::debug!(task = %task, %reason, "task waits for capacity");
                        self.update(task, now, |t| t.status = TaskStatus::Pending);
                    } else {
                        self.file(task);
                    }
                }
            }
        }
    }

    /// Files a task in the waiting indexes as it now stands (or takes it out): the queue in
    /// placement order, and its retry time and queue deadline, so the earliest is found without
    /// a scan.
    pub(super) fn file(&mut self, id: TaskId) {
        let Some(a) = self.active.get_mut(&id) else { return };
        if let Some((retry, deadline)) = a.filed.take() {
            self.retries.remove(&(retry, id));
            self.queue_deadlines.remove(&(deadline, id));
        }
        let key = (Reverse(a.task.spec.priority), id);
        if matches!(a.task.status, TaskStatus::Pending | TaskStatus::Placing) {
            self.waiting.insert(key);
            a.filed = Some((a.next_try, a.queue_deadline));
            self.retries.insert((a.next_try, id));
            self.queue_deadlines.insert((a.queue_deadline, id));
        } else {
            self.waiting.remove(&key);
        }
    }

    /// The earliest retry or queue deadline of a waiting task not being placed right now.
    pub(super) fn next_waiting_deadline(&self) -> Option<Time> {
        let first = |index: &std::collections::BTreeSet<(Time, TaskId)>| {
            index.iter().find(|(_, id)| !self.negotiator.is_placing(*id)).map(|(at, _)| *at)
        };
        [first(&self.retries), first(&self.queue_deadlines)].into_iter().flatten().min()
    }

    /// Retries waiting tasks whose retry is due (at most a batch, in queue order: highest
    /// priority first, then oldest) and fails those past their queue timeout. Reads only the
    /// due part of the timer indexes.
    pub(super) fn retry_pending(&mut self, now: Now) {
        let expired: Vec<TaskId> = self
            .queue_deadlines
            .iter()
            .take_while(|(at, _)| *at <= now.time)
            .map(|(_, id)| *id)
            .filter(|id| !self.negotiator.is_placing(*id))
            .collect();
        for id in expired {
            self.update(id, now, |t| {
                t.status = TaskStatus::Failed;
                t.error = Some(format!(
                    "no node had free capacity within queue_timeout_s={}",
                    t.spec.queue_timeout_s
                ));
            });
        }
        let mut due: Vec<(Reverse<i32>, TaskId)> = self
            .retries
            .iter()
            .take_while(|(at, _)| *at <= now.time)
            .map(|(_, id)| *id)
            .filter(|id| !self.negotiator.is_placing(*id))
            .filter_map(|id| self.active.get(&id).map(|a| (Reverse(a.task.spec.priority), id)))
            .collect();
        due.sort_unstable();
        due.truncate(self.life.retry_batch);
        for (_, id) in due {
            self.place(id, now);
        }
    }

    /// Starts as many waiting tasks as slots were freed, in queue order, whether or not their
    /// retry is due: a finished attempt is the surest sign of room. Walks the queue only as far
    /// as it takes, so a long backlog costs nothing here.
    pub(super) fn start_in_freed_slots(&mut self, now: Now) {
        let freed = std::mem::take(&mut self.freed_slots);
        let next: Vec<TaskId> = self
            .waiting
            .iter()
            .map(|(_, id)| *id)
            .filter(|id| !self.negotiator.is_placing(*id))
            .take(freed)
            .collect();
        for id in next {
            self.place(id, now);
        }
    }

    /// Returns `false` if the task is not active here.
    pub(super) fn cancel_task(&mut self, id: TaskId, now: Now) -> bool {
        let Some(active) = self.active.get_mut(&id) else { return false };
        active.cancel_requested = true;
        self.cancelling.insert(id);
        match active.task.status {
            TaskStatus::Pending | TaskStatus::Placing if active.committing.is_none() => {
                self.negotiator.abort(id, now.time);
                self.update(id, now, |t| {
                    t.status = TaskStatus::Cancelled;
                    t.error = Some("cancelled before it was placed".into());
                });
            }
            _ => self.send_cancel(id, now),
        }
        true
    }

    fn send_cancel(&mut self, id: TaskId, now: Now) {
        let Some(active) = self.active.get_mut(&id) else { return };
        let Some(host) = active.cancel_host() else { return };
        active.cancel_sent_at = Some(now.time);
        let attempt = active.task.attempt;
        self.send(&host, Request::Task(TaskRequest::Cancel { task: id, attempt }), Sent::Cancel(id));
    }

    pub(super) fn retry_cancels(&mut self, now: Now) {
        let every = self.life.cancel_retry;
        let due: Vec<TaskId> = self
            .cancelling
            .iter()
            .filter(|id| self.active.get(id).and_then(|a| a.cancel_due(every)).is_some_and(|t| t <= now.time))
            .copied()
            .collect();
        for id in due {
            self.send_cancel(id, now);
        }
    }

    pub(super) fn handle_cancel_answer(&mut self, task: TaskId, response: &TaskResponse, now: Now) {
        // The host either stops the attempt and reports `Finished { cancelled }`, or no longer has
        // it; in the latter case nothing will report, so the cancel takes effect here.
        if *response == TaskResponse::Unknown {
            self.update(task, now, |t| {
                if !t.status.is_terminal() {
                    t.status = TaskStatus::Cancelled;
                    t.error = Some("cancelled".into());
                }
            });
        }
    }

    pub(super) fn on_lease_event(&mut self, event: LeaseEvent, now: Now) {
        match event {
            LeaseEvent::Unreachable { task, attempt } => {
                if self
                    .current(task, attempt)
                    .is_some_and(|a| matches!(a.task.status, TaskStatus::Placed | TaskStatus::Running))
                {
                    tracing::warn!(task = %task, %attempt, "executor unreachable; its attempt is kept for now");
                    self.update(task, now, |t| t.status = TaskStatus::Unreachable);
                }
            }
            LeaseEvent::Reachable { task, attempt } => {
                if let Some(a) =
                    self.current(task, attempt).filter(|a| a.task.status == TaskStatus::Unreachable)
                {
                    let status = if a.started { TaskStatus::Running } else { TaskStatus::Placed };
                    tracing::info!(task = %task, %attempt, "executor reachable again; its attempt continues");
                    self.update(task, now, |t| t.status = status);
                }
            }
            LeaseEvent::Expired { task, attempt, host } => {
                if self.current(task, attempt).is_some() {
                    self.counters.attempts_expired += 1;
                    self.strike(&host, now);
                    let why = format!("executor {} unreachable for replace_after_s", host.short());
                    if let Some(write) = self.attempt_lost(task, &why, now) {
                        self.persist(write);
                    }
                }
            }
            // Whatever the host says, the attempt had its time: it is told to stop (once; its
            // next renewal is refused as well), and the task goes on without it.
            LeaseEvent::Overdue { task, attempt, host } => {
                if self.current(task, attempt).is_some() {
                    let grace = self.leases.config().overdue_grace.as_secs();
                    let why = format!(
                        "timed out at the origin: executor {} did not finish within timeout_s + {grace} s",
                        host.short()
                    );
                    self.counters.attempts_overdue += 1;
                    self.strike(&host, now);
                    self.avoid(task, &host);
                    self.send(&host, Request::Task(TaskRequest::Cancel { task, attempt }), Sent::GiveUp);
                    if let Some(write) = self.attempt_lost(task, &why, now) {
                        self.persist(write);
                    }
                }
            }
        }
    }

    /// `task` is never placed on `host` again (an attempt of it ran past its time there).
    fn avoid(&mut self, task: TaskId, host: &PeerId) {
        if let Some(a) = self.active.get_mut(&task) {
            if a.avoid.len() >= MAX_AVOIDED {
                a.avoid.remove(0);
            }
            a.avoid.push(host.clone());
        }
    }

    /// `host` held an attempt of ours that never finished: it is suspect for a while (see
    /// `Negotiator::suspect`), counted once per spell of suspicion.
    fn strike(&mut self, host: &PeerId, now: Now) {
        if self.negotiator.suspect(host, now.time) {
            self.counters.hosts_suspected += 1;
            tracing::warn!(host = %host.short(), "host suspected: an attempt it held never finished");
        }
    }

    fn current(&self, task: TaskId, attempt: Attempt) -> Option<&Active> {
        self.active.get(&task).filter(|a| a.task.attempt == attempt)
    }

    /// The current attempt is gone (its lease expired, or its host lost it): place the task again
    /// after a back-off while attempts remain; a cancel asked for meanwhile ends it instead.
    fn attempt_lost(&mut self, id: TaskId, why: &str, now: Now) -> Option<Write> {
        self.leases.release(id);
        let attempt = self.active.get(&id)?.task.attempt;
        let delay = lifecycle::backoff(
            attempt,
            self.life.replace_backoff,
            self.life.replace_backoff_max,
            &mut self.rng,
        );
        let active = self.active.get_mut(&id)?;
        let cancel = active.cancel_requested;
        active.commit_sent = true;
        active.committing = None;
        active.started = false;
        active.placed_at = None;
        active.next_try = now.time + delay;
        active.queue_deadline = queue_deadline(now.wall, active.task.spec.queue_timeout_s, now);
        let give_up = active.task.history.len() >= active.task.spec.max_attempts as usize;
        tracing::warn!(task = %id, attempt = %active.task.attempt, why, retry_in_ms = delay.as_millis() as u64, "attempt lost");
        self.counters.attempts_lost += 1;
        self.change(id, now, |t| {
            if let Some(h) = t.history.last_mut().filter(|h| h.ended_at.is_none()) {
                h.ended_at = Some(now.wall);
                h.outcome = Some(why.to_string());
            }
            t.placement = None;
            if cancel {
                t.status = TaskStatus::Cancelled;
                t.error = Some(format!("cancelled ({why})"));
            } else if give_up {
                t.status = TaskStatus::Failed;
                t.error = Some(format!("{why}; gave up after {} attempt(s)", t.history.len()));
            } else {
                t.status = TaskStatus::Placing;
            }
        })
    }

    /// A host renews the leases of the attempts it holds for tasks of this node. Answers which
    /// of them to stop (not the current attempt on that host, or ended) and which to cancel;
    /// `None` when the store cannot tell (the host retries).
    pub(super) fn handle_renew(
        &mut self,
        from: &PeerId,
        attempts: Vec<(TaskId, Attempt)>,
        now: Now,
        archive: &dyn Archive,
    ) -> Option<TaskResponse> {
        let (mut stop, mut cancel, mut unstarted) = (Vec::new(), Vec::new(), Vec::new());
        let start_within = self.leases.config().start_within;
        // The store is read on the event loop: a bounded number of times per message, however
        // many ended attempts a renewal names (up to `MAX_RENEW`). The lookup only tells a
        // renewal that crossed its attempt's `Finished` from a stale claim, for the count; the
        // answer is `stop` either way, so past the bound the rest are stopped uncounted.
        let mut lookups = 0;
        for (task, attempt) in attempts {
            match self.active.get(&task) {
                Some(a) if a.fenced_ok(from, attempt) => {
                    let cancel_requested = a.cancel_requested;
                    // Renewed, but never started: the host holds the work without doing it.
                    let stalled = !start_within.is_zero()
                        && !a.started
                        && a.placed_at.is_some_and(|at| now.time.since(at) > start_within);
                    if stalled {
                        unstarted.push((task, attempt));
                        cancel.push((task, attempt));
                        continue;
                    }
                    self.leases.renew(from, task, attempt, now.time);
                    if cancel_requested {
                        cancel.push((task, attempt));
                    }
                }
                Some(_) => {
                    self.counters.stale_reports += 1;
                    stop.push((task, attempt));
                }
                None if lookups >= MAX_ARCHIVE_LOOKUPS => {
                    self.counters.unlooked_renewals += 1;
                    stop.push((task, attempt));
                }
                None => {
                    lookups += 1;
                    // Ended. A renewal that crossed the attempt's own `Finished` is no stale
                    // claim (it happens in a healthy mesh); anything else is.
                    let ended_here = match archive.ended(task) {
                        Lookup::Ended { attempt: a, host } => a == attempt && host.as_ref() == Some(from),
                        Lookup::Unknown => false,
                        Lookup::Unavailable => return None,
                    };
                    if !ended_here {
                        self.counters.stale_reports += 1;
                    }
                    stop.push((task, attempt));
                }
            }
        }
        if !stop.is_empty() {
            tracing::info!(from = %from.short(), attempts = stop.len(), "told a host to stop attempts it no longer holds");
        }
        for (task, _) in unstarted {
            let why = format!(
                "executor {} renewed its lease for {} s without starting the attempt",
                from.short(),
                start_within.as_secs()
            );
            self.counters.attempts_unstarted += 1;
            self.strike(from, now);
            self.avoid(task, from);
            if let Some(write) = self.attempt_lost(task, &why, now) {
                self.persist(write);
            }
        }
        Some(TaskResponse::Leases { stop, cancel })
    }

    /// A host's report about a task this node owns.
    pub(super) fn handle_report(
        &mut self,
        from: &PeerId,
        report: TaskRequest,
        reply: ReplyTo,
        now: Now,
        archive: &dyn Archive,
    ) {
        let Some((id, attempt)) = report.attempt() else { return };
        let Some(active) = self.active.get(&id) else {
            // Not active: ended already (a resend whose answer was lost) or never ours.
            let response = match archive.ended(id) {
                Lookup::Ended { attempt: a, host } if a == attempt && host.as_ref() == Some(from) => {
                    TaskResponse::Ack
                }
                Lookup::Ended { attempt: current, .. } => TaskResponse::Stale { current },
                Lookup::Unknown => TaskResponse::Unknown,
                Lookup::Unavailable => return self.reply_task(reply, None),
            };
            if matches!(response, TaskResponse::Stale { .. }) {
                self.counters.stale_reports += 1;
            }
            return self.reply_task(reply, Some(response));
        };
        if !active.fenced_ok(from, attempt) {
            self.counters.stale_reports += 1;
            tracing::info!(task = %id, %attempt, from = %from.short(), "stale report rejected");
            let current = active.task.attempt;
            return self.reply_task(reply, Some(TaskResponse::Stale { current }));
        }
        // Any report from the attempt's holder shows it is alive.
        let log_base = active.log_base;
        let committing = active.committing.clone();
        let placed = active.task.placement.is_some();
        self.leases.renew(from, id, attempt, now.time);
        match report {
            TaskRequest::Started { .. } => {
                if let Some(a) = self.active.get_mut(&id) {
                    a.started = true;
                }
                let host = (!placed).then(|| self.membership.peer(from)).flatten();
                self.update(id, now, |t| {
                    // The commit's answer has not arrived yet; the host is the one committed to.
                    if t.placement.is_none()
                        && let (Some(peer), Some(info)) = (committing, host)
                    {
                        t.placement = Some(TaskPlacement {
                            peer_id: peer,
                            org: info.record.org,
                            name: info.record.name,
                        });
                    }
                    if !t.status.is_terminal() {
                        t.status = TaskStatus::Running;
                    }
                });
                self.reply_task(reply, Some(TaskResponse::Ack));
            }
            TaskRequest::Log { offset, data, .. } => {
                // The host counts from its attempt's first byte; the log holds earlier attempts
                // too. Whatever the host sends, this node stores at most its own cap per task, and
                // the marker once.
                let stored = self.active.get(&id).map_or(0, |a| a.log_len);
                // Hashed as received, before the cap: the host's digest covers what it sent.
                let contiguous = self.active.get_mut(&id).is_some_and(|a| a.digest_chunk(offset, &data));
                let capped = super::output_cap::cap_chunk(
                    self.life.output_cap,
                    log_base.saturating_add(offset),
                    data,
                    || stored,
                );
                let Some((at, data)) = capped else {
                    if !contiguous && let Some(a) = self.active.get_mut(&id) {
                        // Acknowledged without being stored or hashed: the digest is lost.
                        a.digest = None;
                    }
                    // Cut already: acknowledged like a stored chunk, so the host goes on.
                    return self.reply_task(reply, Some(TaskResponse::Ack));
                };
                self.persist_then(
                    Write::Log { task: id, at, data },
                    AfterWrite::Log { reply, task: id, log_base },
                );
            }
            TaskRequest::Finished { outcome, .. } => self.finish(id, attempt, outcome, log_base, reply, now),
            TaskRequest::Cancel { .. } | TaskRequest::Renew { .. } => {}
        }
    }

    fn finish(
        &mut self,
        id: TaskId,
        attempt: Attempt,
        outcome: Outcome,
        log_base: u64,
        reply: ReplyTo,
        now: Now,
    ) {
        let Some(active) = self.active.get(&id) else { return };
        let have = active.log_len;
        // A log longer than the cap was cut at it (see `output_cap::cap_chunk`): complete,
        // whatever length the host reports.
        if have <= self.life.output_cap && have < log_base.saturating_add(outcome.log_len) {
            let have = have.saturating_sub(log_base);
            return self.reply_task(reply, Some(TaskResponse::LogGap { have }));
        }
        if outcome.lost {
            // A lost attempt has no result for a receipt to state.
            let _ = self.receipt_for(id, &outcome);
            let why = outcome.error.as_deref().unwrap_or("attempt lost by its host");
            let write = self.attempt_lost(id, why, now);
            return self.ack_when_durable(write, reply);
        }
        let cancel_requested = active.cancel_requested;
        let receipt = self.receipt_for(id, &outcome);
        let write = self.change(id, now, |t| {
            t.receipt = receipt;
            t.exit_code = outcome.exit_code;
            t.status = if outcome.succeeded() {
                TaskStatus::Succeeded
            } else if outcome.cancelled || cancel_requested {
                TaskStatus::Cancelled
            } else {
                TaskStatus::Failed
            };
            t.error = if t.status == TaskStatus::Succeeded { None } else { outcome.error.clone() };
            if let Some(h) = t.history.last_mut() {
                h.ended_at = Some(now.wall);
                h.outcome = Some(super::outcome_words(&outcome));
            }
        });
        if write.is_some() {
            self.event(Event::ResultAccepted { task: id, attempt });
        }
        self.ack_when_durable(write, reply);
    }

    /// Answers `Ack` once `write` committed (`Unknown` when nothing was written).
    fn ack_when_durable(&mut self, write: Option<Write>, reply: ReplyTo) {
        match write {
            Some(write) => self.persist_then(write, AfterWrite::Ack(reply)),
            None => self.reply_task(reply, Some(TaskResponse::Unknown)),
        }
    }
}
