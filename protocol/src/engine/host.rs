//! The host side of a task's life: attempts this node runs for an origin (possibly itself).
//! Starts an attempt on an accepted commit; reports to the origin strictly in order: `Started`,
//! `Log` chunks read from the spool at the offset the origin needs when each is sent (so one
//! chunk per attempt is in memory, whatever the origin's speed), `Finished`; one request in
//! flight at a time, retried with back-off until the origin acknowledges. Renews the leases of
//! the attempts it holds. Between the last `Log` and `Finished` it hands the origin its signed
//! result receipt (`/orgmesh/receipt/1`); an origin that never answers it (one that predates
//! receipts) gets `Finished` after a few tries without one. An origin that answers `Stale` or
//! `Unknown`, or lists an attempt to stop, gets the attempt stopped. Each attempt is persisted when it starts and when it ends, so
//! a result outlives a crash and an attempt the crash killed is reported lost, never forgotten.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;

use super::{Engine, Exit, Now, Output, Request, Sent, Write};
use crate::ids::{Attempt, PeerId, TaskId};
use crate::receipt::{MAX_SIGNED_LEN, Receipt, SignedReceipt, Usage};
use crate::time::Time;
use crate::wire::limits;
use crate::wire::place::CommitRequest;
use crate::wire::receipt::{ReceiptRequest, ReceiptResponse};
use crate::wire::task::{Outcome, TaskRequest, TaskResponse};

/// What the store keeps of an attempt this node hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: Attempt,
    /// The node that placed it, which gets the reports.
    pub origin: PeerId,
    /// The process group of the attempt's process, so a restarted node can stop an orphan.
    pub pgid: Option<i32>,
    /// How the attempt ended, once it has.
    pub outcome: Option<Outcome>,
    /// Bytes of the attempt's output the origin had acknowledged.
    pub acked: u64,
    /// What the attempt's receipt states beyond its outcome, once it ended.
    pub evidence: Option<Evidence>,
}

/// What a host measured of an ended attempt, kept until its receipt is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    /// SHA-256 of its whole output.
    pub output_sha256: [u8; 32],
    /// How many bytes that digest covers.
    pub output_len: u64,
    /// What it used.
    pub usage: Usage,
    /// When it ended, unix milliseconds.
    pub finished_at_ms: u64,
}

/// How many times a receipt is sent without an answer before `Finished` goes without it: an
/// origin that predates receipts refuses the protocol, and must not wait long for its result.
const RECEIPT_TRIES: u8 = 3;

/// Where an attempt's receipt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReceiptState {
    /// Still to be sent (if there is evidence for one).
    Due,
    /// Answered, or given up on: `Finished` is next.
    Settled,
}

/// Which report a task-protocol request carried (to interpret its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReportKind {
    Started,
    Log { len: usize },
    Finished,
}

/// A receipt to sign and send.
struct ReceiptDue {
    outcome: Outcome,
    evidence: Evidence,
}

/// What a report's answer leaves the host to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answered {
    /// Send the next report.
    Next,
    /// Nothing until the retry time (or the next event).
    Wait,
    /// The origin has the result: forget the attempt.
    Delivered,
    /// The origin no longer wants the attempt.
    Abandon,
}

/// One attempt running (or still reporting) here.
#[derive(Debug)]
pub(super) struct Run {
    origin: PeerId,
    /// The process started; `Started` must be reported.
    started: bool,
    started_acked: bool,
    /// Bytes of output the origin has: the next `Log` starts here.
    pub(super) acked: u64,
    /// Bytes in the spool (as far as the executor said, or the whole output once it ended).
    pub(super) total: u64,
    /// The spool could not be read: what is not delivered yet never will be.
    unreadable: bool,
    /// Set when the process ended.
    outcome: Option<Outcome>,
    /// The process ended (resources freed).
    pub(super) exited: bool,
    /// A report (or the read of its chunk) is under way.
    in_flight: bool,
    pub(super) retry_at: Option<Time>,
    pub(super) backoff: Duration,
    /// The origin no longer wants this attempt: stop it and report nothing more.
    pub(super) abandoned: bool,
    /// This node is stopping and gave the attempt back: it ends as `lost`, to be placed again.
    pub(super) handed_back: bool,
    pgid: Option<i32>,
    evidence: Option<Evidence>,
    receipt: ReceiptState,
    receipt_tries: u8,
}

impl Run {
    fn new(origin: PeerId, backoff: Duration) -> Self {
        Self {
            origin,
            started: false,
            started_acked: false,
            acked: 0,
            total: 0,
            unreadable: false,
            outcome: None,
            exited: false,
            in_flight: false,
            retry_at: None,
            backoff,
            abandoned: false,
            handed_back: false,
            pgid: None,
            evidence: None,
            receipt: ReceiptState::Due,
            receipt_tries: 0,
        }
    }

    fn record(&self, task: TaskId, attempt: Attempt) -> RunRecord {
        RunRecord {
            task,
            attempt,
            origin: self.origin.clone(),
            pgid: self.pgid,
            outcome: self.outcome.clone(),
            acked: self.acked,
            evidence: self.evidence,
        }
    }

    /// The receipt to send before `Finished`, if one is due: only for an attempt that really
    /// ended here (not lost) whose whole output, the one the digest covers, was delivered.
    fn receipt_due(&self, outcome: &Outcome) -> Option<ReceiptDue> {
        let evidence = self.evidence?;
        let whole = !self.unreadable && evidence.output_len == outcome.log_len;
        (self.receipt == ReceiptState::Due && !outcome.lost && whole)
            .then(|| ReceiptDue { outcome: outcome.clone(), evidence })
    }

    /// Whether the run waits for its retry time (and so has a deadline).
    pub(super) fn waits(&self) -> bool {
        !self.in_flight && !self.abandoned
    }

    /// Takes the origin's answer to the report `kind` (`None`: no answer).
    pub(super) fn on_answer(
        &mut self,
        task: TaskId,
        kind: ReportKind,
        response: Option<TaskResponse>,
        now: Time,
        first_backoff: Duration,
        max_backoff: Duration,
    ) -> Answered {
        self.in_flight = false;
        match response {
            Some(TaskResponse::Ack) => {
                self.retry_at = None;
                self.backoff = first_backoff;
                match kind {
                    ReportKind::Started => self.started_acked = true,
                    ReportKind::Log { len } => {
                        self.acked = self.acked.saturating_add(len as u64).min(self.total)
                    }
                    ReportKind::Finished => return Answered::Delivered,
                }
                Answered::Next
            }
            Some(TaskResponse::LogGap { have }) => {
                // The whole output is in the spool: the next chunk starts where the origin's log
                // ends, behind or ahead of what it acknowledged. An origin that keeps its log
                // answers a gap only when it lost bytes it had acknowledged: rare, so the resend
                // waits for the backoff, which only an `Ack` resets. An origin answering `LogGap`
                // over and over (behind, at or past the end) then paces this host instead of
                // spinning it.
                tracing::warn!(task = %task, have, acked = self.acked, spooled = self.total,
                    "origin lacks log bytes; resending from the spool after a backoff");
                self.acked = have.min(self.total);
                self.retry_later(now, max_backoff)
            }
            Some(TaskResponse::Stale { .. } | TaskResponse::Unknown) => Answered::Abandon,
            // Not an answer to a report: treated as no answer, backing off like one, so an
            // origin answering this over and over cannot hold the host at one fixed pace.
            Some(TaskResponse::Leases { .. }) | None => self.retry_later(now, max_backoff),
        }
    }

    fn retry_later(&mut self, now: Time, max_backoff: Duration) -> Answered {
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(max_backoff);
        Answered::Wait
    }

    /// The output cannot be read past what the origin has: it ends there, and the result is
    /// reported with what was delivered rather than held hostage by bytes that cannot be sent.
    /// Once unreadable it ends wherever the origin has it, also when a `LogGap` moved that back:
    /// a result claiming more than the origin can get would loop.
    fn end_output_at_acked(&mut self) {
        self.unreadable = true;
        self.total = self.acked;
        if let Some(o) = self.outcome.as_mut() {
            o.log_len = self.acked;
        }
    }
}

/// What to do next for a run, decided by [`Engine::pump_run`].
enum Next {
    Report(TaskRequest, ReportKind),
    Read { offset: u64, max: usize },
    Receipt(ReceiptDue),
}

impl<R: Rng> Engine<R> {
    /// Takes over the attempts the store says this node was running or reporting when it last
    /// stopped. One that had not ended died with the node (the driver stopped what was left of
    /// it): it is reported lost, so its origin places it again at once. One that had ended still
    /// owes its origin the result, which is sent again, with the output still in its spool.
    pub(super) fn recover_runs(&mut self, runs: Vec<RunRecord>, now: Now) {
        let count = runs.len();
        for stored in runs {
            let key = (stored.task, stored.attempt);
            let mut run = Run::new(stored.origin, self.life.report_backoff);
            run.exited = true;
            run.started = true;
            run.pgid = stored.pgid;
            run.acked = stored.acked;
            run.total = stored.outcome.as_ref().map_or(0, |o| o.log_len).max(stored.acked);
            run.outcome = stored.outcome;
            run.evidence = stored.evidence;
            if run.outcome.is_none() {
                tracing::warn!(task = %key.0, attempt = %key.1, "attempt lost in a restart");
                run.acked = 0;
                run.total = 0;
                run.outcome = Some(Outcome::lost("its executor restarted while it ran", 0));
                run.evidence = None;
                self.persist(Write::Run(run.record(key.0, key.1)));
            }
            self.runs.insert(key, run);
        }
        if count > 0 {
            tracing::info!(attempts = count, "recovered attempts whose results are owed");
            self.next_renewal = now.time;
        }
        let keys: Vec<_> = self.runs.keys().copied().collect();
        for key in keys {
            self.pump_run(key, now);
        }
    }

    /// A commit was accepted: run the attempt.
    pub(super) fn start_run(&mut self, origin: PeerId, commit: CommitRequest, now: Now) {
        let key = (commit.task, commit.attempt);
        if self.runs.contains_key(&key) {
            return; // a repeated commit of an attempt already running
        }
        tracing::info!(task = %commit.task, attempt = %commit.attempt, origin = %origin.short(), "running task");
        if !self.runs.values().any(|r| !r.abandoned) {
            self.next_renewal = now.time + self.leases.config().renew_every;
        }
        let run = Run::new(origin.clone(), self.life.report_backoff);
        self.persist(Write::Run(run.record(key.0, key.1)));
        self.runs.insert(key, run);
        self.outputs.push_back(Output::StartAttempt {
            origin,
            task: commit.task,
            attempt: commit.attempt,
            spec: Box::new(commit.spec),
        });
    }

    pub(super) fn attempt_started(&mut self, task: TaskId, attempt: Attempt, pgid: Option<i32>, now: Now) {
        let key = (task, attempt);
        let Some(run) = self.runs.get_mut(&key) else { return };
        run.started = true;
        run.pgid = pgid;
        let record = run.record(task, attempt);
        if !run.abandoned {
            self.persist(Write::Run(record));
        }
        self.pump_run(key, now);
    }

    /// More output is spooled: stream it to the origin while the process runs, not only once it
    /// ended (a long task's log would otherwise arrive all at its end).
    pub(super) fn attempt_output(&mut self, task: TaskId, attempt: Attempt, len: u64, now: Now) {
        let key = (task, attempt);
        let Some(run) = self.runs.get_mut(&key) else { return };
        if !run.unreadable {
            run.total = run.total.max(len);
        }
        self.pump_run(key, now);
    }

    pub(super) fn attempt_exited(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        exit: Exit,
        output_len: u64,
        now: Now,
    ) {
        let key = (task, attempt);
        let Some(run) = self.runs.get_mut(&key) else { return };
        if !run.unreadable {
            run.total = run.total.max(output_len);
        }
        run.exited = true;
        if !run.handed_back {
            run.evidence = exit.output_sha256.map(|output_sha256| Evidence {
                output_sha256,
                output_len,
                usage: exit.usage,
                finished_at_ms: now.wall.0,
            });
        }
        run.outcome = Some(if run.handed_back {
            Outcome::lost("handed back: its executor was stopping", run.total)
        } else {
            Outcome {
                exit_code: exit.exit_code,
                error: exit.error,
                cancelled: exit.cancelled,
                lost: false,
                log_len: run.total,
            }
        });
        // Started must precede Finished even if the process never started.
        run.started = true;
        let abandoned = run.abandoned;
        let record = run.record(task, attempt);
        // The result is durable before it is reported, so a crash cannot lose it.
        if !abandoned {
            self.persist(Write::Run(record));
        }
        self.host.finished(task, attempt);
        if abandoned {
            self.forget_run(key);
        }
        // A slot freed here may unblock this node's own waiting tasks.
        self.wake_waiting = true;
        self.pump_run(key, now);
    }

    /// Reports of runs whose retry time came.
    pub(super) fn pump_due_runs(&mut self, now: Now) {
        let due: Vec<_> = self
            .runs
            .iter()
            .filter(|(_, r)| r.waits() && r.retry_at.is_some_and(|t| t <= now.time))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.pump_run(key, now);
        }
    }

    /// Sends the next report of an attempt (or reads its next chunk) if none is under way.
    pub(super) fn pump_run(&mut self, key: (TaskId, Attempt), now: Now) {
        let Some(run) = self.runs.get_mut(&key) else { return };
        if run.in_flight || run.abandoned || run.retry_at.is_some_and(|t| t > now.time) {
            return;
        }
        // Its time came: with nothing to send yet (the output is all acknowledged and the process
        // still runs), a retry time left in the past would be a deadline that never moves.
        run.retry_at = None;
        let (task, attempt) = key;
        let next = if run.started && !run.started_acked {
            Next::Report(TaskRequest::Started { task, attempt }, ReportKind::Started)
        } else if !run.started_acked {
            return;
        } else if run.acked < run.total && !run.unreadable {
            let max = usize::try_from(run.total - run.acked).unwrap_or(usize::MAX).min(limits::LOG_CHUNK);
            Next::Read { offset: run.acked, max }
        } else {
            if run.acked < run.total {
                run.end_output_at_acked();
            }
            let Some(outcome) = run.outcome.clone() else { return };
            match run.receipt_due(&outcome) {
                Some(due) => Next::Receipt(due),
                None => Next::Report(TaskRequest::Finished { task, attempt, outcome }, ReportKind::Finished),
            }
        };
        run.in_flight = true;
        let origin = run.origin.clone();
        match next {
            Next::Report(request, kind) => {
                self.send(&origin, Request::Task(request), Sent::Report(task, attempt, kind))
            }
            Next::Read { offset, max } => {
                self.outputs.push_back(Output::ReadLog { task, attempt, offset, max })
            }
            Next::Receipt(due) => self.send_receipt(key, origin, due, now),
        }
    }

    /// Signs the attempt's receipt and sends it to its origin. One too large to send (an
    /// enormous error text) is skipped rather than cut: a cut receipt would state something else.
    fn send_receipt(&mut self, key: (TaskId, Attempt), origin: PeerId, due: ReceiptDue, now: Now) {
        let ReceiptDue { outcome, evidence } = due;
        let receipt = Receipt {
            task: key.0,
            attempt: key.1,
            origin: origin.clone(),
            host: self.local.clone(),
            exit_code: outcome.exit_code,
            error: outcome.error,
            cancelled: outcome.cancelled,
            log_len: outcome.log_len,
            output_sha256: evidence.output_sha256,
            usage: evidence.usage,
            finished_at_ms: evidence.finished_at_ms,
        };
        if receipt.signed_bytes().len() > MAX_SIGNED_LEN {
            tracing::warn!(task = %key.0, attempt = %key.1, "receipt too large to send; reporting without it");
            if let Some(run) = self.runs.get_mut(&key) {
                run.receipt = ReceiptState::Settled;
                run.in_flight = false;
            }
            return self.pump_run(key, now);
        }
        let request = ReceiptRequest { receipt: SignedReceipt::sign(receipt, &*self.keyring) };
        self.send(&origin, Request::Receipt(request), Sent::Receipt(key.0, key.1));
    }

    /// The origin's answer to a receipt (`None`: no answer, or a refused protocol).
    pub(super) fn handle_receipt_answer(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        response: Option<ReceiptResponse>,
        now: Now,
    ) {
        let key = (task, attempt);
        let (first, max) = (self.life.report_backoff, self.life.report_backoff_max);
        let Some(run) = self.runs.get_mut(&key) else { return };
        run.in_flight = false;
        match response {
            Some(ReceiptResponse::Ack) => {
                run.receipt = ReceiptState::Settled;
                run.retry_at = None;
                run.backoff = first;
            }
            Some(ReceiptResponse::Mismatch) => {
                tracing::warn!(task = %task, %attempt, "the origin refused this attempt's receipt");
                run.receipt = ReceiptState::Settled;
            }
            Some(ReceiptResponse::Stale { .. } | ReceiptResponse::Unknown) => return self.abandon_run(key),
            None => {
                run.receipt_tries = run.receipt_tries.saturating_add(1);
                if run.receipt_tries >= RECEIPT_TRIES {
                    tracing::info!(task = %task, %attempt, origin = %run.origin.short(),
                        "the origin takes no receipt; reporting the result without one");
                    run.receipt = ReceiptState::Settled;
                } else {
                    run.retry_later(now.time, max);
                    return;
                }
            }
        }
        self.pump_run(key, now);
    }

    /// The driver read (or could not read) the chunk `pump_run` asked for.
    pub(super) fn handle_log_read(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        offset: u64,
        data: Option<Vec<u8>>,
        now: Now,
    ) {
        let key = (task, attempt);
        let Some(run) = self.runs.get_mut(&key) else { return };
        if !run.in_flight || offset != run.acked || run.abandoned {
            return;
        }
        match data.filter(|d| !d.is_empty()) {
            Some(mut data) => {
                data.truncate(limits::LOG_CHUNK);
                let origin = run.origin.clone();
                let kind = ReportKind::Log { len: data.len() };
                let request = TaskRequest::Log { task, attempt, offset, data };
                self.send(&origin, Request::Task(request), Sent::Report(task, attempt, kind));
            }
            None => {
                tracing::warn!(task = %task, acked = run.acked, spooled = run.total,
                    "cannot read the attempt's spool; its output ends where the origin has it");
                run.end_output_at_acked();
                run.in_flight = false;
                self.pump_run(key, now);
            }
        }
    }

    /// The origin's answer to a report (`None`: no answer, retry later).
    pub(super) fn handle_report_answer(
        &mut self,
        task: TaskId,
        attempt: Attempt,
        kind: ReportKind,
        response: Option<TaskResponse>,
        now: Now,
    ) {
        let key = (task, attempt);
        let (first, max) = (self.life.report_backoff, self.life.report_backoff_max);
        let Some(run) = self.runs.get_mut(&key) else { return };
        match run.on_answer(task, kind, response, now.time, first, max) {
            Answered::Next => self.pump_run(key, now),
            Answered::Wait => {}
            Answered::Delivered => {
                self.forget_run(key);
                self.persist(Write::RemoveRun { task, attempt });
            }
            Answered::Abandon => self.abandon_run(key),
        }
    }

    /// The origin no longer wants an attempt (superseded, ended, unknown): stop it, report
    /// nothing more, forget it.
    fn abandon_run(&mut self, key: (TaskId, Attempt)) {
        let Some(run) = self.runs.get_mut(&key) else { return };
        tracing::info!(task = %key.0, attempt = %key.1, "origin no longer wants this attempt; stopping it");
        run.abandoned = true;
        if run.exited {
            self.forget_run(key);
        } else {
            self.outputs.push_back(Output::StopAttempt { task: key.0, attempt: key.1 });
        }
        self.persist(Write::RemoveRun { task: key.0, attempt: key.1 });
    }

    /// Forgets an attempt that owes its origin nothing more; its spool may go.
    fn forget_run(&mut self, key: (TaskId, Attempt)) {
        if self.runs.remove(&key).is_some() {
            self.outputs.push_back(Output::ForgetAttempt { task: key.0, attempt: key.1 });
        }
    }

    /// Renews the leases of every attempt held here, one `Renew` per origin (split at the
    /// protocol's limit). Ended attempts whose result is not delivered are held too.
    pub(super) fn renew_leases(&mut self) {
        let mut by_origin: BTreeMap<PeerId, Vec<(TaskId, Attempt)>> = BTreeMap::new();
        for (key, run) in &self.runs {
            if !run.abandoned {
                by_origin.entry(run.origin.clone()).or_default().push(*key);
            }
        }
        for (origin, attempts) in by_origin {
            for chunk in attempts.chunks(limits::MAX_RENEW) {
                let request = TaskRequest::Renew { attempts: chunk.to_vec() };
                self.send(&origin, Request::Task(request), Sent::Renew(origin.clone()));
            }
        }
    }

    /// The origin's answer to a `Renew`. It speaks only for its own attempts: an entry naming an
    /// attempt another origin placed here (or none did) is dropped and counted, never obeyed.
    pub(super) fn handle_leases_answer(&mut self, from: &PeerId, response: TaskResponse) {
        let TaskResponse::Leases { stop, cancel } = response else { return };
        let stop_own = self.own_entries(from, stop);
        let cancel_own = self.own_entries(from, cancel);
        for key in stop_own {
            self.abandon_run(key);
        }
        for key in cancel_own {
            if self.runs.get(&key).is_some_and(|r| !r.exited) {
                tracing::info!(task = %key.0, attempt = %key.1, "cancel carried by a lease renewal");
                self.outputs.push_back(Output::StopAttempt { task: key.0, attempt: key.1 });
            }
        }
    }

    /// The entries of `from`'s list that name attempts `from` placed here. Entries naming
    /// another origin's attempts are counted; ones naming nothing held here are only dropped (an
    /// honest answer may cross the attempt's own delivery).
    fn own_entries(&mut self, from: &PeerId, list: Vec<(TaskId, Attempt)>) -> Vec<(TaskId, Attempt)> {
        let mut own = Vec::new();
        for key in list {
            match self.runs.get(&key) {
                Some(run) if &run.origin == from => own.push(key),
                Some(_) => {
                    self.counters.foreign_entries += 1;
                    tracing::info!(from = %from.short(), task = %key.0, attempt = %key.1,
                        "dropped an entry naming another origin's attempt");
                }
                None => {}
            }
        }
        own
    }

    /// An origin asks to stop an attempt it placed here.
    pub(super) fn host_cancel(&mut self, from: &PeerId, task: TaskId, attempt: Attempt) -> TaskResponse {
        match self.runs.get(&(task, attempt)) {
            Some(run) if &run.origin == from && !run.exited => {
                tracing::info!(task = %task, %attempt, "the origin cancels this attempt; stopping it");
                self.outputs.push_back(Output::StopAttempt { task, attempt });
                TaskResponse::Ack
            }
            // Ended already: its `Finished` report tells the origin how.
            Some(run) if &run.origin == from => TaskResponse::Ack,
            _ => TaskResponse::Unknown,
        }
    }
}

#[cfg(test)]
mod tests;
