//! The origin side of a task's life: tasks submitted at this node, from placement through the
//! host's reports to a terminal status. Every change is written to the store with its event; a
//! host's report is answered only once what it reported is durable. Fencing lives here: only the
//! current attempt, on the host it was committed to, may report.

use std::time::Duration;

use orgmesh_api::CancelError;
use orgmesh_protocol::placement::PlacementEvent;
use orgmesh_protocol::task::{AttemptRecord, TaskPlacement};
use orgmesh_protocol::wire::task::{Outcome, TaskRequest, TaskResponse};
use orgmesh_protocol::{Attempt, NodeRecord, PeerId, Task, TaskId, TaskStatus, Time};
use orgmesh_store::{AppendError, Pending};

use super::{Completion, EventLoop, Reply, TaskOut};
use crate::wall_clock;

/// How soon a task that found no free capacity tries again.
const PENDING_RETRY: Duration = Duration::from_millis(250);
/// How often a cancel is re-sent to a host that has not confirmed it.
const CANCEL_RETRY: Duration = Duration::from_secs(2);
/// At most this many pending tasks start a negotiation per retry pass.
const RETRY_BATCH: usize = 32;

/// A task owned by this node that has not ended.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) task: Task,
    /// The host the current attempt's commit went to (known before the commit's answer).
    committing: Option<PeerId>,
    /// A commit for the current attempt went out: the next negotiation needs a new attempt number.
    commit_sent: bool,
    next_try: Time,
    cancel_requested: bool,
    cancel_sent_at: Option<Time>,
}

impl Active {
    fn new(task: Task) -> Self {
        Self {
            task,
            committing: None,
            commit_sent: false,
            next_try: Time::ZERO,
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
    pub(super) fn recover(&mut self, tasks: Vec<Task>) {
        for task in tasks {
            let mut active = Active::new(task);
            match active.task.status {
                // A negotiation died with the process; a commit may have gone out, so the next
                // negotiation uses a fresh attempt number.
                TaskStatus::Pending | TaskStatus::Placing => {
                    active.commit_sent = active.task.attempt.0 > 0;
                    self.waiting.insert(active.task.id);
                }
                // The host keeps running and re-sends its reports; wait for them.
                _ => {}
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
        if active.task.status == TaskStatus::Pending {
            self.waiting.insert(id);
        } else {
            self.waiting.remove(&id);
        }
        let task = active.task.clone();
        if task.status.is_terminal() {
            self.active.remove(&id);
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

    fn candidates(&self) -> Vec<NodeRecord> {
        use orgmesh_protocol::membership::PeerState;
        let mut out: Vec<NodeRecord> = self
            .membership
            .peers()
            .into_iter()
            .filter(|p| p.state == PeerState::Alive)
            .map(|p| p.record)
            .collect();
        let mut local = self.membership.local().clone();
        local.capacity = self.host.capacity();
        out.push(local);
        out
    }

    /// Starts a negotiation for a task that is pending or being (re)placed.
    fn place(&mut self, id: TaskId, now: Time) {
        let candidates = self.candidates();
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
        self.negotiator.place(id, attempt, &spec, &candidates, now);
    }

    pub(super) fn note_commit(&mut self, task: TaskId, attempt: Attempt, to: &PeerId) {
        if let Some(active) = self.active.get_mut(&task).filter(|a| a.task.attempt == attempt) {
            active.committing = Some(to.clone());
            active.commit_sent = true;
        }
    }

    pub(super) fn handle_placement_event(&mut self, event: PlacementEvent, now: Time) {
        match event {
            PlacementEvent::Placed { task, attempt, host } => {
                let Some(active) = self.active.get(&task).filter(|a| a.task.attempt == attempt) else {
                    return;
                };
                let cancel = active.cancel_requested;
                let placement = TaskPlacement { peer_id: host.peer.clone(), org: host.org, name: host.name };
                drop(self.update(task, |t| {
                    if !t.history.iter().any(|h| h.attempt == attempt) {
                        t.history.push(AttemptRecord {
                            attempt,
                            placement: placement.clone(),
                            placed_at: wall_clock(),
                            ended_at: None,
                            outcome: None,
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

    /// Retries waiting tasks (highest priority first) and fails those past their queue timeout.
    /// Scans only the waiting index, not every active task.
    pub(super) fn retry_pending(&mut self, now: Time) {
        let wall = wall_clock();
        let mut due: Vec<(i32, TaskId)> = Vec::new();
        let mut expired = Vec::new();
        for id in &self.waiting {
            let Some(a) = self.active.get(id) else { continue };
            if self.negotiator.is_placing(*id) {
                continue;
            }
            let deadline =
                a.task.created_at.0.saturating_add(a.task.spec.queue_timeout_s.saturating_mul(1000));
            if wall.0 >= deadline {
                expired.push(*id);
            } else if a.next_try <= now {
                due.push((a.task.spec.priority, *id));
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
        due.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, id) in due.into_iter().take(RETRY_BATCH) {
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

    /// A host died: its attempts are lost; re-place them while attempts remain.
    pub(super) fn host_lost(&mut self, peer: &PeerId, now: Time) {
        let lost: Vec<TaskId> = self
            .active
            .iter()
            .filter(|(_, a)| {
                matches!(a.task.status, TaskStatus::Placed | TaskStatus::Running | TaskStatus::Unreachable)
                    && a.task.placement.as_ref().is_some_and(|p| &p.peer_id == peer)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let Some(active) = self.active.get_mut(&id) else { continue };
            let cancel = active.cancel_requested;
            active.commit_sent = true;
            active.committing = None;
            let give_up = active.task.history.len() >= active.task.spec.max_attempts as usize;
            tracing::warn!(task = %id, host = %peer.short(), "host died; attempt lost");
            drop(self.update(id, |t| {
                if let Some(h) = t.history.last_mut() {
                    h.ended_at = Some(wall_clock());
                    h.outcome = Some("host died".into());
                }
                t.placement = None;
                if cancel {
                    t.status = TaskStatus::Cancelled;
                    t.error = Some("cancelled (its host died)".into());
                } else if give_up {
                    t.status = TaskStatus::Failed;
                    t.error = Some(format!("host died; gave up after {} attempt(s)", t.history.len()));
                } else {
                    t.status = TaskStatus::Placing;
                }
            }));
            if self.active.contains_key(&id) {
                self.place(id, now);
            }
        }
    }

    /// A host's report about a task this node owns.
    pub(super) fn handle_report(&mut self, from: &PeerId, report: TaskRequest, reply: Reply, now: Time) {
        let id = report.task();
        let attempt = match &report {
            TaskRequest::Started { attempt, .. }
            | TaskRequest::Log { attempt, .. }
            | TaskRequest::Finished { attempt, .. }
            | TaskRequest::Cancel { attempt, .. } => *attempt,
        };
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
        match report {
            TaskRequest::Started { .. } => {
                let committing = active.committing.clone();
                let placement = active.task.placement.clone();
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
                let pending = self.store.append_log(id, offset, data);
                self.completions.push(Box::pin(async move {
                    let response = match pending.await {
                        Ok(Ok(_)) => Some(TaskResponse::Ack),
                        Ok(Err(AppendError::Gap { have, .. })) => Some(TaskResponse::LogGap { have }),
                        Ok(Err(_)) | Err(_) => None,
                    };
                    Completion { reply, response }
                }));
            }
            TaskRequest::Finished { outcome, .. } => self.finish(id, outcome, reply, now),
            TaskRequest::Cancel { .. } => {}
        }
    }

    fn finish(&mut self, id: TaskId, outcome: Outcome, reply: Reply, now: Time) {
        match self.store.log_len(id) {
            Ok(have) if have < outcome.log_len => {
                return self.send_reply(reply, Some(TaskResponse::LogGap { have }), now);
            }
            Ok(_) => {}
            Err(_) => return self.send_reply(reply, None, now),
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
        match pending {
            Some(pending) => self.completions.push(Box::pin(async move {
                let response = pending.await.ok().map(|()| TaskResponse::Ack);
                Completion { reply, response }
            })),
            None => self.send_reply(reply, Some(TaskResponse::Unknown), now),
        }
    }
}
