//! The host side: attempts this node runs for an origin (possibly itself). Starts the executor on
//! an accepted commit, buffers the attempt's output, and reports to the origin strictly in order:
//! `Started`, `Log` chunks, `Finished`, one request in flight at a time, retried until the origin
//! acknowledges. Renews the leases of the attempts it holds. An origin that answers `Stale` or
//! `Unknown`, or lists an attempt to stop, gets the attempt stopped. Each attempt is recorded in
//! the store when it starts and when it ends, so a result outlives a crash of this node and an
//! attempt the crash killed is reported lost instead of being silently forgotten.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orgmesh_protocol::wire::limits;
use orgmesh_protocol::wire::place::CommitRequest;
use orgmesh_protocol::wire::task::{Outcome, TaskRequest, TaskResponse};
use orgmesh_protocol::{Attempt, PeerId, TaskId, Time};
use orgmesh_store::HostedRun;
use tokio::sync::Semaphore;
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
    /// The executor's read-ahead: every byte leaving `buf` is given back to it.
    window: Arc<Semaphore>,
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
    /// This node is stopping and gave the attempt back: it ends as `lost`, to be placed again.
    handed_back: bool,
    /// The attempt's process group.
    pgid: Option<i32>,
}

impl Run {
    fn new(origin: PeerId, cancel: CancellationToken) -> Self {
        Self {
            origin,
            cancel,
            started: false,
            started_acked: false,
            buf: Vec::new(),
            window: Arc::new(Semaphore::new(0)),
            buf_start: 0,
            total: 0,
            outcome: None,
            exited: false,
            in_flight: false,
            retry_at: None,
            backoff: FIRST_BACKOFF,
            abandoned: false,
            handed_back: false,
            pgid: None,
        }
    }

    /// What the store keeps of this attempt.
    fn record(&self, task: TaskId, attempt: Attempt) -> HostedRun {
        HostedRun {
            task,
            attempt,
            origin: self.origin.clone(),
            pgid: self.pgid,
            outcome: self.outcome.clone(),
            output: if self.outcome.is_some() { self.buf.clone() } else { Vec::new() },
            output_start: self.buf_start,
        }
    }
}

impl EventLoop {
    /// A commit was accepted: run the attempt.
    pub(super) fn start_run(&mut self, origin: PeerId, commit: CommitRequest, _now: Time) {
        let key = (commit.task, commit.attempt);
        if self.runs.contains_key(&key) {
            return; // a repeated commit of an attempt already running
        }
        let cancel = CancellationToken::new();
        let window = Arc::new(Semaphore::new(executor::OUTPUT_WINDOW));
        tracing::info!(task = %commit.task, attempt = %commit.attempt, origin = %origin.short(), "running task");
        executor::spawn(
            ExecRequest {
                task: commit.task,
                attempt: commit.attempt,
                spec: commit.spec,
                work_root: self.facts.work_root.clone(),
                kill_grace: self.facts.kill_grace,
                kind: self.facts.executor,
                sandbox: self.facts.sandbox.clone(),
                output_cap: self.facts.output_cap,
                output_window: Arc::clone(&window),
            },
            self.exec_tx.clone(),
            cancel.clone(),
        );
        let mut run = Run::new(origin, cancel);
        run.window = window;
        drop(self.store.put_run(run.record(key.0, key.1)));
        self.runs.insert(key, run);
    }

    /// Takes over the attempts the store says this node was running or reporting when it last
    /// stopped. One that had not ended died with the node (what is left of it is killed): it is
    /// reported lost, so its origin places it again at once. One that had ended still owes its
    /// origin the result, which is sent again.
    pub(super) fn recover_runs(&mut self, runs: Vec<HostedRun>) {
        for stored in runs {
            let key = (stored.task, stored.attempt);
            let mut run = Run::new(stored.origin, CancellationToken::new());
            run.exited = true;
            run.started = true;
            run.buf_start = stored.output_start;
            run.total = stored.output_start + stored.output.len() as u64;
            run.buf = stored.output;
            run.outcome = Some(match stored.outcome {
                Some(outcome) => outcome,
                None => {
                    let killed = stored.pgid.is_some_and(|pgid| executor::kill_orphan(pgid, key.0, key.1));
                    tracing::warn!(task = %key.0, attempt = %key.1, killed_orphan = killed, "attempt lost in a restart");
                    let lost = Outcome::lost("its executor restarted while it ran", 0);
                    run.buf_start = 0;
                    run.total = 0;
                    drop(
                        self.store
                            .put_run(HostedRun { outcome: Some(lost.clone()), ..run.record(key.0, key.1) }),
                    );
                    lost
                }
            });
            self.runs.insert(key, run);
        }
        if !self.runs.is_empty() {
            tracing::info!(attempts = self.runs.len(), "recovered attempts whose results are owed");
        }
    }

    pub(super) fn handle_exec_event(&mut self, event: ExecEvent) {
        let now = self.now();
        let key = match &event {
            ExecEvent::Started { task, attempt, .. }
            | ExecEvent::Output { task, attempt, .. }
            | ExecEvent::Exited { task, attempt, .. } => (*task, *attempt),
        };
        let Some(run) = self.runs.get_mut(&key) else { return };
        match event {
            ExecEvent::Started { pgid, .. } => {
                run.started = true;
                run.pgid = pgid;
                drop(self.store.put_run(run.record(key.0, key.1)));
            }
            ExecEvent::Output { data, .. } => {
                run.total += data.len() as u64;
                run.buf.extend_from_slice(&data);
            }
            ExecEvent::Exited { info, .. } => {
                run.exited = true;
                run.outcome = Some(if run.handed_back {
                    Outcome::lost("handed back: its executor was stopping", run.total)
                } else {
                    Outcome {
                        exit_code: info.exit_code,
                        error: info.error,
                        cancelled: info.cancelled,
                        lost: false,
                        log_len: run.total,
                    }
                });
                // Started must precede Finished even if the process never started.
                run.started = true;
                let abandoned = run.abandoned;
                // The result is durable before it is reported, so a crash cannot lose it.
                if !abandoned {
                    drop(self.store.put_run(run.record(key.0, key.1)));
                }
                self.host.finished(key.0, key.1);
                if abandoned {
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
                        run.window.add_permits(len);
                        run.buf_start += len as u64;
                    }
                    ReportKind::Finished => {
                        self.runs.remove(&key);
                        drop(self.store.remove_run(task, attempt));
                        return;
                    }
                }
            }
            Some(TaskResponse::LogGap { have }) => {
                if have >= run.buf_start {
                    let skip = usize::try_from(have - run.buf_start).unwrap_or(usize::MAX).min(run.buf.len());
                    run.buf.drain(..skip);
                    run.window.add_permits(skip);
                    run.buf_start += skip as u64;
                } else {
                    // The origin lost bytes this host no longer holds; report what it has so the
                    // result is not held hostage by output that cannot be resent.
                    tracing::warn!(task = %task, have, buffered_from = run.buf_start, "origin lost log bytes");
                    if let Some(o) = run.outcome.as_mut() {
                        o.log_len = have;
                    }
                    run.window.add_permits(run.buf.len());
                    run.buf.clear();
                    run.buf_start = have;
                }
            }
            Some(TaskResponse::Stale { .. } | TaskResponse::Unknown) => {
                self.abandon_run(key);
                return;
            }
            // Not an answer to a report; treated as no answer.
            Some(TaskResponse::Leases { .. }) => {
                run.retry_at = Some(now + run.backoff);
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

    /// The origin no longer wants an attempt (superseded, ended, unknown): stop it, report
    /// nothing more, forget it.
    fn abandon_run(&mut self, key: (TaskId, Attempt)) {
        let Some(run) = self.runs.get_mut(&key) else { return };
        tracing::info!(task = %key.0, attempt = %key.1, "origin no longer wants this attempt; stopping it");
        run.abandoned = true;
        run.cancel.cancel();
        if run.exited {
            self.runs.remove(&key);
        }
        drop(self.store.remove_run(key.0, key.1));
    }

    /// Renews the leases of every attempt held here, one `Renew` per origin (split at the
    /// protocol's limit). Finished attempts whose result is not delivered are held too.
    pub(super) fn renew_leases(&mut self, now: Time) {
        let mut by_origin: BTreeMap<PeerId, Vec<(TaskId, Attempt)>> = BTreeMap::new();
        for (key, run) in &self.runs {
            if !run.abandoned {
                by_origin.entry(run.origin.clone()).or_default().push(*key);
            }
        }
        for (origin, attempts) in by_origin {
            for chunk in attempts.chunks(limits::MAX_RENEW) {
                let request = TaskRequest::Renew { attempts: chunk.to_vec() };
                self.send_task_request(&origin, request, TaskOut::Renew, now);
            }
        }
    }

    /// The origin's answer to a `Renew`.
    pub(super) fn handle_leases_answer(&mut self, response: TaskResponse) {
        let TaskResponse::Leases { stop, cancel } = response else { return };
        for key in stop {
            self.abandon_run(key);
        }
        for key in cancel {
            if let Some(run) = self.runs.get(&key).filter(|r| !r.exited) {
                tracing::info!(task = %key.0, attempt = %key.1, "cancel carried by a lease renewal");
                run.cancel.cancel();
            }
        }
    }

    /// Stopping: gives back every attempt still running (its process is stopped and it is
    /// reported lost, so its origin places it elsewhere). Returns how many were given back.
    pub(super) fn hand_back_runs(&mut self) -> usize {
        let mut n = 0;
        for run in self.runs.values_mut().filter(|r| !r.exited && !r.abandoned) {
            run.handed_back = true;
            run.cancel.cancel();
            n += 1;
        }
        n
    }

    /// An origin asks to stop an attempt it placed here.
    pub(super) fn host_cancel(&mut self, from: &PeerId, task: TaskId, attempt: Attempt) -> TaskResponse {
        match self.runs.get(&(task, attempt)) {
            Some(run) if &run.origin == from && !run.exited => {
                tracing::info!(task = %task, %attempt, "the origin cancels this attempt; stopping it");
                run.cancel.cancel();
                TaskResponse::Ack
            }
            // Ended already: its `Finished` report tells the origin how.
            Some(run) if &run.origin == from => TaskResponse::Ack,
            _ => TaskResponse::Unknown,
        }
    }
}
