//! The host side: attempts this node runs for an origin (possibly itself). Starts the executor on
//! an accepted commit, buffers the attempt's output, and reports to the origin strictly in order:
//! `Started`, `Log` chunks, `Finished`, one request in flight at a time, retried until the origin
//! acknowledges. An origin that answers `Stale` or `Unknown` gets the attempt stopped.

use std::time::Duration;

use orgmesh_protocol::wire::limits;
use orgmesh_protocol::wire::place::CommitRequest;
use orgmesh_protocol::wire::task::{Outcome, TaskRequest, TaskResponse};
use orgmesh_protocol::{Attempt, PeerId, TaskId, Time};
use tokio_util::sync::CancellationToken;

use super::{EventLoop, ReportKind, TaskOut};
use crate::executor::{self, ExecEvent, ExecRequest};

/// First retry delay of a report the origin did not answer; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One attempt running (or still reporting) here.
#[derive(Debug)]
pub(crate) struct Run {
    origin: PeerId,
    pub(crate) cancel: CancellationToken,
    /// The process started; `Started` must be reported.
    started: bool,
    started_acked: bool,
    /// Output not yet acknowledged by the origin, starting at byte `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    total: u64,
    /// Set when the process ended.
    outcome: Option<Outcome>,
    /// The process ended (resources freed).
    exited: bool,
    in_flight: bool,
    retry_at: Option<Time>,
    backoff: Duration,
    /// The origin no longer wants this attempt: stop it and report nothing more.
    abandoned: bool,
}

impl EventLoop {
    /// A commit was accepted: run the attempt.
    pub(super) fn start_run(&mut self, origin: PeerId, commit: CommitRequest, _now: Time) {
        let key = (commit.task, commit.attempt);
        if self.runs.contains_key(&key) {
            return; // a repeated commit of an attempt already running
        }
        let cancel = CancellationToken::new();
        tracing::info!(task = %commit.task, attempt = %commit.attempt, origin = %origin.short(), "running task");
        executor::spawn(
            ExecRequest {
                task: commit.task,
                attempt: commit.attempt,
                spec: commit.spec,
                work_root: self.facts.work_root.clone(),
                kill_grace: self.facts.kill_grace,
            },
            self.exec_tx.clone(),
            cancel.clone(),
        );
        self.runs.insert(
            key,
            Run {
                origin,
                cancel,
                started: false,
                started_acked: false,
                buf: Vec::new(),
                buf_start: 0,
                total: 0,
                outcome: None,
                exited: false,
                in_flight: false,
                retry_at: None,
                backoff: FIRST_BACKOFF,
                abandoned: false,
            },
        );
    }

    pub(super) fn handle_exec_event(&mut self, event: ExecEvent) {
        let now = self.now();
        let key = match &event {
            ExecEvent::Started { task, attempt }
            | ExecEvent::Output { task, attempt, .. }
            | ExecEvent::Exited { task, attempt, .. } => (*task, *attempt),
        };
        let Some(run) = self.runs.get_mut(&key) else { return };
        match event {
            ExecEvent::Started { .. } => run.started = true,
            ExecEvent::Output { data, .. } => {
                run.total += data.len() as u64;
                run.buf.extend_from_slice(&data);
            }
            ExecEvent::Exited { info, .. } => {
                run.exited = true;
                run.outcome = Some(Outcome {
                    exit_code: info.exit_code,
                    error: info.error,
                    cancelled: info.cancelled,
                    log_len: run.total,
                });
                // Started must precede Finished even if the process never started.
                run.started = true;
                self.host.finished(key.0, key.1);
                if self.runs.get(&key).is_some_and(|r| r.abandoned) {
                    self.runs.remove(&key);
                }
                // A slot freed here may unblock this node's own pending tasks.
                self.wake_waiting = true;
            }
        }
        self.pump_run(key, now);
    }

    pub(super) fn pump_all_runs(&mut self, now: Time) {
        let keys: Vec<_> = self.runs.keys().copied().collect();
        for key in keys {
            self.pump_run(key, now);
        }
    }

    /// Sends the next report of an attempt if none is in flight.
    fn pump_run(&mut self, key: (TaskId, Attempt), now: Time) {
        let Some(run) = self.runs.get_mut(&key) else { return };
        if run.in_flight || run.abandoned || run.retry_at.is_some_and(|t| t > now) {
            return;
        }
        let (task, attempt) = key;
        let (request, kind) = if run.started && !run.started_acked {
            (TaskRequest::Started { task, attempt }, ReportKind::Started)
        } else if !run.buf.is_empty() {
            let len = run.buf.len().min(limits::LOG_CHUNK);
            let data = run.buf[..len].to_vec();
            (TaskRequest::Log { task, attempt, offset: run.buf_start, data }, ReportKind::Log { len })
        } else if let Some(outcome) = &run.outcome {
            (TaskRequest::Finished { task, attempt, outcome: outcome.clone() }, ReportKind::Finished)
        } else {
            return;
        };
        run.in_flight = true;
        let origin = run.origin.clone();
        self.send_task_request(&origin, request, TaskOut::Report(task, attempt, kind), now);
    }

    /// The origin's answer to a report (`None`: no answer, retry later).
    pub(super) fn handle_report_answer(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        kind: ReportKind,
        response: Option<TaskResponse>,
        now: Time,
    ) {
        let key = (task, attempt);
        let Some(run) = self.runs.get_mut(&key) else { return };
        run.in_flight = false;
        match response {
            Some(TaskResponse::Ack) => {
                run.retry_at = None;
                run.backoff = FIRST_BACKOFF;
                match kind {
                    ReportKind::Started => run.started_acked = true,
                    ReportKind::Log { len } => {
                        let len = len.min(run.buf.len());
                        run.buf.drain(..len);
                        run.buf_start += len as u64;
                    }
                    ReportKind::Finished => {
                        self.runs.remove(&key);
                        return;
                    }
                }
            }
            Some(TaskResponse::LogGap { have }) => {
                if have >= run.buf_start {
                    let skip = usize::try_from(have - run.buf_start).unwrap_or(usize::MAX).min(run.buf.len());
                    run.buf.drain(..skip);
                    run.buf_start += skip as u64;
                } else {
                    // The origin lost bytes this host no longer holds; report what it has so the
                    // result is not held hostage by output that cannot be resent.
                    tracing::warn!(task = %task, have, buffered_from = run.buf_start, "origin lost log bytes");
                    if let Some(o) = run.outcome.as_mut() {
                        o.log_len = have;
                    }
                    run.buf.clear();
                    run.buf_start = have;
                }
            }
            Some(TaskResponse::Stale { .. } | TaskResponse::Unknown) => {
                tracing::info!(task = %task, %attempt, "origin no longer wants this attempt; stopping it");
                run.abandoned = true;
                run.cancel.cancel();
                if run.exited {
                    self.runs.remove(&key);
                }
                return;
            }
            None => {
                run.retry_at = Some(now + run.backoff);
                run.backoff = (run.backoff * 2).min(MAX_BACKOFF);
                return;
            }
        }
        self.pump_run(key, now);
    }

    /// An origin asks to stop an attempt it placed here.
    pub(super) fn host_cancel(&mut self, from: &PeerId, task: TaskId, attempt: Attempt) -> TaskResponse {
        match self.runs.get(&(task, attempt)) {
            Some(run) if &run.origin == from && !run.exited => {
                run.cancel.cancel();
                TaskResponse::Ack
            }
            // Ended already: its `Finished` report tells the origin how.
            Some(run) if &run.origin == from => TaskResponse::Ack,
            _ => TaskResponse::Unknown,
        }
    }
}
