//! The origin side of a task's life: tasks submitted at this node, from placement through the
//! host's reports to a terminal status. Every change is written to the store with its event; a
//! host's report is answered only once what it reported is durable. Fencing lives here: only the
//! current attempt, on the host it was committed to, may report or renew its lease; a lost attempt
//! (lease given up, host restarted) is placed again after a back-off, up to `max_attempts`.

use std::cmp::Reverse;
use std::time::Duration;

use orgmesh_api::CancelError;
use orgmesh_protocol::lifecycle::{self, LeaseEvent, LeaseTerms};
use orgmesh_protocol::placement::PlacementEvent;
use orgmesh_protocol::task::{AttemptRecord, TaskPlacement};
use orgmesh_protocol::wire::task::{Outcome, TaskRequest, TaskResponse};
use orgmesh_protocol::{Attempt, PeerId, Task, TaskId, TaskStatus, Time, Timestamp};
use orgmesh_store::{AppendError, Pending};

use super::{Completion, EventLoop, Reply, TaskOut};
use crate::wall_clock;

/// How soon a task that found no free capacity tries again.
const PENDING_RETRY: Duration = Duration::from_millis(250);
/// How often a cancel is re-sent to a host that has not confirmed it.
const CANCEL_RETRY: Duration = Duration::from_secs(2);
/// At most this many pending tasks start a negotiation per retry pass.
const RETRY_BATCH: usize = 32;
/// Back-off before placing a task again after a lost attempt: doubles per attempt up to the max.
const REPLACE_BACKOFF: Duration = Duration::from_millis(500);
const REPLACE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A task owned by this node that has not ended.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) task: Task,
    /// The host the current attempt's commit went to (known before the commit's answer).
    committing: Option<PeerId>,
    /// A commit for the current attempt went out: the next negotiation needs a new attempt number.
    commit_sent: bool,
    next_try: Time,
    /// Since when the task waits for a placement (its queue timeout runs from here).
    queued_at: Timestamp,
    /// The current attempt's host reported `Started`.
    started: bool,
    /// Where the current attempt's output begins in the task's log.
    log_base: u64,
    cancel_requested: bool,
    cancel_sent_at: Option<Time>,
}

impl Active {
    fn new(task: Task) -> Self {
        let log_base = task.history.last().filter(|h| h.attempt == task.attempt).map_or(0, |h| h.log_start);
        Self {
            queued_at: task.created_at,
            task,
            committing: None,
            commit_sent: false,
            next_try: Time::ZERO,
            started: false,
            log_base,
            cancel_requested: false,
            cancel_sent_at: None,
        }
    }

    /// Whether `from` may report for `attempt`.
    fn fenced_ok(&self, from: &PeerId, attempt: Attempt) -> bool {
        attempt == self.task.attempt
            && (self.task.placement.as_ref().is_some_and(|p| &p.peer_id == from)
                || self.committing.as_ref() == Some(from))
    }
}

impl EventLoop {
    /// Takes over the unfinished tasks found in the store after a restart.
    pub(super) fn recover(&mut self, tasks: Vec<Task>, now: Time) {
        for task in tasks {
            let mut active = Active::new(task);
            match active.task.status {
                // A negotiation died with the process; a commit may have gone out, so the next
                // negotiation uses a fresh attempt number.
                TaskStatus::Pending | TaskStatus::Placing => {
                    active.commit_sent = active.task.attempt.0 > 0;
                    active.queued_at = active.task.updated_at;
                    self.waiting.insert((Reverse(active.task.spec.priority), active.task.id));
                }
                // The host keeps running and re-sends its reports; it gets a fresh lease to renew.
                _ => {
                    active.started = active.task.status == TaskStatus::Running;
                    if let Some(p) = &active.task.placement {
                        let terms = LeaseTerms::of(&active.task.spec);
                        self.leases.grant(active.task.id, active.task.attempt, p.peer_id.clone(), terms, now);
                    }
                }
            }
            self.active.insert(active.task.id, active);
        }
        if !self.active.is_empty() {
            tracing::info!(tasks = self.active.len(), "recovered unfinished tasks");
        }
    }

    /// Writes the task's new state (and an event if its status changed).
    fn save(&mut self, id: TaskId, old_status: TaskStatus) -> Option<Pending<()>> {
        let active = self.active.get_mut(&id)?;
        active.task.updated_at = wall_clock();
        let events = if active.task.status != old_status {
            vec![crate::events::task_event(&active.task)]
        } else {
            Vec::new()
        };
        // The only place a task's status is written, so the waiting index cannot drift from it.
        let key = (Reverse(active.task.spec.priority), id);
        if matches!(active.task.status, TaskStatus::Pending | TaskStatus::Placing) {
            self.waiting.insert(key);
        } else {
            self.waiting.remove(&key);
        }
        // An attempt that held a slot ended: that slot can take the next waiting task now.
        let held = |s: TaskStatus| matches!(s, TaskStatus::Placed | TaskStatus::Running);
        if held(old_status) && !held(active.task.status) && active.task.status != TaskStatus::Unreachable {
            self.freed_slots += 1;
        }
        let task = active.task.clone();
        if task.status.is_terminal() {
            self.active.remove(&id);
            self.leases.release(id);
        }
        Some(self.store.put_task(task, events))
    }

    /// Changes a task and writes it; the write completes in the background, in order.
    fn update(&mut self, id: TaskId, change: impl FnOnce(&mut Task)) -> Option<Pending<()>> {
        let active = self.active.get_mut(&id)?;
        let old = active.task.status;
        change(&mut active.task);
        self.save(id, old)
    }

    pub(super) fn start_task(&mut self, task: Task, now: Time) {
        let id = task.id;
        self.active.insert(id, Active::new(task));
        self.place(id, now);
    }

    /// Starts a negotiation for a task that is pending or being (re)placed.
    fn place(&mut self, id: TaskId, now: Time) {
        let Some(active) = self.active.get_mut(&id) else { return };
        let is_new = active.task.attempt.0 == 0;
        if is_new || active.commit_sent {
            active.task.attempt = active.task.attempt.next();
            active.commit_sent = false;
            active.committing = None;
        }
        active.next_try = now + PENDING_RETRY;
        let (attempt, spec) = (active.task.attempt, active.task.spec.clone());
        // A retry of a pending task stays `pending` until it is placed: no event churn.
        if is_new {
            drop(self.update(id, |t| t.status = TaskStatus::Placing));
        }
        let mut local = self.membership.local().clone();
        local.capacity = self.host.capacity();
        let candidates = self.membership.alive_records().chain(std::iter::once(&local));
        self.negotiator.place(id, attempt, &spec, candidates, now);
    }

    pub(super) fn note_commit(&mut self, task: TaskId, attempt: Attempt, to: &PeerId) {
        let log_len = self.store.log_len(task).unwrap_or(0);
        if let Some(active) = self.active.get_mut(&task).filter(|a| a.task.attempt == attempt) {
            active.committing = Some(to.clone());
            active.commit_sent = true;
            // This attempt's output goes after everything earlier attempts left in the log.
            active.log_base = log_len;
        }
    }

    pub(super) fn handle_placement_event(&mut self, event: PlacementEvent, now: Time) {
        match event {
            PlacementEvent::Placed { task, attempt, host } => {
                let Some(active) = self.active.get(&task).filter(|a| a.task.attempt == attempt) else {
                    return;
                };
                let cancel = active.cancel_requested;
                let log_start = active.log_base;
                let terms = LeaseTerms::of(&active.task.spec);
                self.leases.grant(task, attempt, host.peer.clone(), terms, now);
                let placement = TaskPlacement { peer_id: host.peer.clone(), org: host.org, name: host.name };
                drop(self.update(task, |t| {
                    if !t.history.iter().any(|h| h.attempt == attempt) {
                        t.history.push(AttemptRecord {
                            attempt,
                            placement: placement.clone(),
                            placed_at: wall_clock(),
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
                }));
                if cancel {
                    self.send_cancel(task, now);
                }
            }
            PlacementEvent::Unplaceable { task, attempt, reason } => {
                if self.active.get(&task).is_some_and(|a| a.task.attempt == attempt) {
                    tracing::info!(task = %task, %reason, "task cannot be placed");
                    drop(self.update(task, |t| {
                        t.status = TaskStatus::Failed;
                        t.error = Some(reason);
                    }));
                }
            }
            PlacementEvent::Waiting { task, attempt, reason } => {
                if let Some(active) = self.active.get_mut(&task).filter(|a| a.task.attempt == attempt) {
                    active.next_try = now + PENDING_RETRY;
                    if active.task.status != TaskStatus::Pending {
                        tracing::debug!(task = %task, %reason, "task waits for capacity");
                        drop(self.update(task, |t| t.status = TaskStatus::Pending));
                    }
                }
            }
        }
    }

    /// Retries waiting tasks (in queue order: highest priority first, then oldest) and fails
    /// those past their queue timeout. Scans only the waiting index, not every active task.
    pub(super) fn retry_pending(&mut self, now: Time) {
        let wall = wall_clock();
        let mut due: Vec<TaskId> = Vec::new();
        let mut expired = Vec::new();
        for (_, id) in &self.waiting {
            let Some(a) = self.active.get(id) else { continue };
            if self.negotiator.is_placing(*id) {
                continue;
            }
            let deadline = a.queued_at.0.saturating_add(a.task.spec.queue_timeout_s.saturating_mul(1000));
            if wall.0 >= deadline {
                expired.push(*id);
            } else if a.next_try <= now {
                due.push(*id);
            }
        }
        for id in expired {
            drop(self.update(id, |t| {
                t.status = TaskStatus::Failed;
                t.error = Some(format!(
                    "no node had free capacity within queue_timeout_s={}",
                    t.spec.queue_timeout_s
                ));
            }));
        }
        for id in due.into_iter().take(RETRY_BATCH) {
            self.place(id, now);
        }
    }

    /// Starts as many waiting tasks as slots were freed, in queue order, whether or not their
    /// retry is due: a finished attempt is the surest sign of room, and waiting for the next retry
    /// pass would leave the slot idle (with the noop executor, for nearly all of the pass).
    /// Walks the queue only as far as it takes, so a long backlog costs nothing here.
    pub(super) fn start_in_freed_slots(&mut self, now: Time) {
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

    pub(super) fn cancel_task(&mut self, id: TaskId, now: Time) -> Result<(), CancelError> {
        let Some(active) = self.active.get_mut(&id) else {
            return match self.store.task(id) {
                Ok(Some(t)) => Err(CancelError::AlreadyEnded { id, status: t.status }),
                Ok(None) => Err(CancelError::NotFound(id)),
                Err(e) => Err(CancelError::Unavailable(e.to_string())),
            };
        };
        active.cancel_requested = true;
        match active.task.status {
            TaskStatus::Pending | TaskStatus::Placing if active.committing.is_none() => {
                self.negotiator.abort(id, now);
                drop(self.update(id, |t| {
                    t.status = TaskStatus::Cancelled;
                    t.error = Some("cancelled before it was placed".into());
                }));
            }
            _ => self.send_cancel(id, now),
        }
        Ok(())
    }

    fn send_cancel(&mut self, id: TaskId, now: Time) {
        let Some(active) = self.active.get_mut(&id) else { return };
        let Some(host) =
            active.task.placement.as_ref().map(|p| p.peer_id.clone()).or_else(|| active.committing.clone())
        else {
            return;
        };
        active.cancel_sent_at = Some(now);
        let attempt = active.task.attempt;
        self.send_task_request(&host, TaskRequest::Cancel { task: id, attempt }, TaskOut::Cancel(id), now);
    }

    pub(super) fn retry_cancels(&mut self, now: Time) {
        let due: Vec<TaskId> = self
            .active
            .iter()
            .filter(|(_, a)| a.cancel_requested && a.cancel_sent_at.is_none_or(|t| now >= t + CANCEL_RETRY))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.send_cancel(id, now);
        }
    }

    pub(super) fn handle_cancel_answer(&mut self, task: TaskId, response: &TaskResponse) {
        // The host either stops the attempt and reports `Finished { cancelled }`, or no longer has
        // it; in the latter case nothing will report, so the cancel takes effect here.
        if *response == TaskResponse::Unknown {
            drop(self.update(task, |t| {
                if !t.status.is_terminal() {
                    t.status = TaskStatus::Cancelled;
                    t.error = Some("cancelled".into());
                }
            }));
        }
    }

    /// The failure detector gave up on `peer`: its attempts turn `unreachable` and are placed
    /// again only if it stays away for their `replace_after_s` (a partition is not a death).
    pub(super) fn host_dead(&mut self, peer: &PeerId, now: Time) {
        self.leases.host_dead(peer, now);
    }

    pub(super) fn handle_lease_event(&mut self, event: LeaseEvent, now: Time) {
        match event {
            LeaseEvent::Unreachable { task, attempt } => {
                if self
                    .current(task, attempt)
                    .is_some_and(|a| matches!(a.task.status, TaskStatus::Placed | TaskStatus::Running))
                {
                    tracing::warn!(task = %task, %attempt, "executor unreachable; its attempt is kept for now");
                    drop(self.update(task, |t| t.status = TaskStatus::Unreachable));
                }
            }
            LeaseEvent::Reachable { task, attempt } => {
                if let Some(a) =
                    self.current(task, attempt).filter(|a| a.task.status == TaskStatus::Unreachable)
                {
                    let status = if a.started { TaskStatus::Running } else { TaskStatus::Placed };
                    tracing::info!(task = %task, %attempt, "executor reachable again; its attempt continues");
                    drop(self.update(task, |t| t.status = status));
                }
            }
            LeaseEvent::Expired { task, attempt, host } => {
                if self.current(task, attempt).is_some() {
                    let why = format!("executor {} unreachable for replace_after_s", host.short());
                    drop(self.attempt_lost(task, &why, now));
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
                    self.send_task_request(
                        &host,
                        TaskRequest::Cancel { task, attempt },
                        TaskOut::GiveUp,
                        now,
                    );
                    drop(self.attempt_lost(task, &why, now));
                }
            }
        }
    }

    fn current(&self, task: TaskId, attempt: Attempt) -> Option<&Active> {
        self.active.get(&task).filter(|a| a.task.attempt == attempt)
    }

    /// The current attempt is gone (its lease expired, or its host lost it): place the task again
    /// after a back-off while attempts remain; a cancel asked for meanwhile ends it instead.
    fn attempt_lost(&mut self, id: TaskId, why: &str, now: Time) -> Option<orgmesh_store::Pending<()>> {
        self.leases.release(id);
        let delay = {
            let attempt = self.active.get(&id)?.task.attempt;
            lifecycle::backoff(attempt, REPLACE_BACKOFF, REPLACE_BACKOFF_MAX, &mut self.rng)
        };
        let active = self.active.get_mut(&id)?;
        let cancel = active.cancel_requested;
        active.commit_sent = true;
        active.committing = None;
        active.started = false;
        active.next_try = now + delay;
        active.queued_at = wall_clock();
        let give_up = active.task.history.len() >= active.task.spec.max_attempts as usize;
        tracing::warn!(task = %id, attempt = %active.task.attempt, why, retry_in_ms = delay.as_millis() as u64, "attempt lost");
        self.counters.attempts_lost += 1;
        self.update(id, |t| {
            if let Some(h) = t.history.last_mut().filter(|h| h.ended_at.is_none()) {
                h.ended_at = Some(wall_clock());
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
    /// of them to stop (not the current attempt on that host, or ended) and which to cancel.
    pub(super) fn handle_renew(
        &mut self,
        from: &PeerId,
        attempts: Vec<(TaskId, Attempt)>,
        now: Time,
    ) -> TaskResponse {
        let (mut stop, mut cancel) = (Vec::new(), Vec::new());
        for (task, attempt) in attempts {
            match self.active.get(&task) {
                Some(a) if a.fenced_ok(from, attempt) => {
                    self.leases.renew(from, task, attempt, now);
                    if a.cancel_requested {
                        cancel.push((task, attempt));
                    }
                }
                Some(_) => {
                    self.counters.stale_reports += 1;
                    stop.push((task, attempt));
                }
                None => {
                    // Ended. A renewal that crossed the attempt's own `Finished` is no stale
                    // claim (it happens in a healthy mesh); anything else is.
                    let ended_here = matches!(
                        self.store.task(task),
                        Ok(Some(t)) if t.attempt == attempt && t.placement.as_ref().is_some_and(|p| &p.peer_id == from)
                    );
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
        TaskResponse::Leases { stop, cancel }
    }

    /// A host's report about a task this node owns.
    pub(super) fn handle_report(&mut self, from: &PeerId, report: TaskRequest, reply: Reply, now: Time) {
        let Some((id, attempt)) = report.attempt() else { return };
        let Some(active) = self.active.get(&id) else {
            // Not active: ended already (a resend whose answer was lost) or never ours.
            let response = match self.store.task(id) {
                Ok(Some(t))
                    if t.attempt == attempt && t.placement.as_ref().is_some_and(|p| &p.peer_id == from) =>
                {
                    TaskResponse::Ack
                }
                Ok(Some(t)) => TaskResponse::Stale { current: t.attempt },
                Ok(None) => TaskResponse::Unknown,
                Err(_) => return self.send_reply(reply, None, now),
            };
            if matches!(response, TaskResponse::Stale { .. }) {
                self.counters.stale_reports += 1;
            }
            return self.send_reply(reply, Some(response), now);
        };
        if !active.fenced_ok(from, attempt) {
            self.counters.stale_reports += 1;
            tracing::info!(task = %id, %attempt, from = %from.short(), "stale report rejected");
            let current = active.task.attempt;
            return self.send_reply(reply, Some(TaskResponse::Stale { current }), now);
        }
        // Any report from the attempt's holder shows it is alive.
        self.leases.renew(from, id, attempt, now);
        let log_base = active.log_base;
        match report {
            TaskRequest::Started { .. } => {
                let committing = active.committing.clone();
                let placement = active.task.placement.clone();
                if let Some(a) = self.active.get_mut(&id) {
                    a.started = true;
                }
                let host_name = placement.is_none().then(|| self.membership.peer(from)).flatten();
                drop(self.update(id, |t| {
                    if t.placement.is_none() {
                        // The commit's answer has not arrived yet; the host is the one committed to.
                        if let (Some(peer), Some(info)) = (committing, host_name) {
                            t.placement = Some(TaskPlacement {
                                peer_id: peer,
                                org: info.record.org,
                                name: info.record.name,
                            });
                        }
                    }
                    if !t.status.is_terminal() {
                        t.status = TaskStatus::Running;
                    }
                }));
                self.send_reply(reply, Some(TaskResponse::Ack), now);
            }
            TaskRequest::Log { offset, data, .. } => {
                // The host counts from its attempt's first byte; the log holds earlier attempts too.
                // Whatever the host sends (its own cap may be larger, or it may ignore it), this
                // node stores at most its own cap per task, and the marker once.
                let store = &self.store;
                let stored = || store.log_len(id).unwrap_or(0);
                let capped = crate::output_cap::cap_chunk(
                    self.facts.output_cap,
                    log_base.saturating_add(offset),
                    data,
                    stored,
                );
                let Some((at, data)) = capped else {
                    // Cut already: acknowledged like a stored chunk, so the host goes on.
                    self.completions.push(Box::pin(async move {
                        Completion { reply, response: Some(TaskResponse::Ack) }
                    }));
                    return;
                };
                let pending = self.store.append_log(id, at, data);
                self.completions.push(Box::pin(async move {
                    let response = match pending.await {
                        Ok(Ok(_)) => Some(TaskResponse::Ack),
                        Ok(Err(AppendError::Gap { have, .. })) => {
                            Some(TaskResponse::LogGap { have: have.saturating_sub(log_base) })
                        }
                        Ok(Err(_)) | Err(_) => None,
                    };
                    Completion { reply, response }
                }));
            }
            TaskRequest::Finished { outcome, .. } => self.finish(id, outcome, log_base, reply, now),
            TaskRequest::Cancel { .. } | TaskRequest::Renew { .. } => {}
        }
    }

    fn finish(&mut self, id: TaskId, outcome: Outcome, log_base: u64, reply: Reply, now: Time) {
        match self.store.log_len(id) {
            // A log longer than the cap was cut at it (see `output_cap::cap_chunk`): complete,
            // whatever length the host reports.
            Ok(have) if have <= self.facts.output_cap && have < log_base.saturating_add(outcome.log_len) => {
                let have = have.saturating_sub(log_base);
                return self.send_reply(reply, Some(TaskResponse::LogGap { have }), now);
            }
            Ok(_) => {}
            Err(_) => return self.send_reply(reply, None, now),
        }
        if outcome.lost {
            let why = outcome.error.as_deref().unwrap_or("attempt lost by its host");
            let pending = self.attempt_lost(id, why, now);
            return self.ack_when_durable(pending, reply, now);
        }
        let cancel_requested = self.active.get(&id).is_some_and(|a| a.cancel_requested);
        let pending = self.update(id, |t| {
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
                h.ended_at = Some(wall_clock());
                h.outcome = Some(match (outcome.exit_code, &outcome.error) {
                    (Some(code), _) => format!("exit {code}"),
                    (None, Some(e)) => e.clone(),
                    (None, None) => "ended".into(),
                });
            }
        });
        self.ack_when_durable(pending, reply, now);
    }

    /// Answers `Ack` once `pending` committed (`Unknown` when nothing was written).
    fn ack_when_durable(&mut self, pending: Option<orgmesh_store::Pending<()>>, reply: Reply, now: Time) {
        match pending {
            Some(pending) => self.completions.push(Box::pin(async move {
                let response = pending.await.ok().map(|()| TaskResponse::Ack);
                Completion { reply, response }
            })),
            None => self.send_reply(reply, Some(TaskResponse::Unknown), now),
        }
    }
}
