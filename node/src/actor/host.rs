//! The host side: attempts this node runs for an origin (possibly itself). Starts the executor on
//! an accepted commit, which spools the attempt's output to disk; reports to the origin strictly
//! in order: `Started`, `Log` chunks read from the spool at the offset the origin needs when each
//! is sent (so one chunk per attempt is in memory, whatever the origin's speed), `Finished`; one
//! request in flight at a time, retried until the origin acknowledges. Removes the spool once the
//! origin has the result or no longer wants it. Renews the leases of the attempts it holds. An origin that answers `Stale` or
//! `Unknown`, or lists an attempt to stop, gets the attempt stopped. Each attempt is recorded in
//! the store when it starts and when it ends, so a result outlives a crash of this node and an
//! attempt the crash killed is reported lost instead of being silently forgotten.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use orgmesh_protocol::wire::limits;
use orgmesh_protocol::wire::place::CommitRequest;
use orgmesh_protocol::wire::task::{Outcome, TaskRequest, TaskResponse};
use orgmesh_protocol::{Attempt, PeerId, TaskId, Time};
use orgmesh_store::HostedRun;
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
    /// The attempt's output file.
    spool: PathBuf,
    /// It, open for reading once there is something to read.
    reader: Option<std::fs::File>,
    /// Bytes of output the origin has: the next `Log` starts here.
    acked: u64,
    /// Bytes in the spool (as far as the executor said, or the whole output once it ended).
    total: u64,
    /// The spool could not be read: what is not delivered yet never will be.
    unreadable: bool,
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

/// What a report's answer leaves the host to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    /// Send the next report.
    Next,
    /// Nothing until the retry time (or the next event).
    Wait,
    /// The origin has the result: forget the attempt.
    Delivered,
    /// The origin no longer wants the attempt.
    Abandon,
}

impl Run {
    fn new(origin: PeerId, cancel: CancellationToken, spool: PathBuf) -> Self {
        Self {
            origin,
            cancel,
            started: false,
            started_acked: false,
            spool,
            reader: None,
            acked: 0,
            total: 0,
            unreadable: false,
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
            legacy_output: Vec::new(),
            acked: self.acked,
        }
    }

    /// An attempt an earlier run of this node recorded, taken over after a restart: it has ended
    /// (its process is gone either way), and its result and the output the origin had not
    /// acknowledged (in its spool) are still owed, `Started` first. `outcome` stays `None` for
    /// one that had not ended when the node stopped: the caller reports it lost.
    fn recovered(stored: HostedRun, spool: PathBuf) -> Self {
        let mut run = Run::new(stored.origin, CancellationToken::new(), spool);
        run.exited = true;
        run.started = true;
        run.pgid = stored.pgid;
        run.acked = stored.acked;
        let kept_in_record = stored.acked.saturating_add(stored.legacy_output.len() as u64);
        run.total = stored.outcome.as_ref().map_or(0, |o| o.log_len).max(kept_in_record);
        if !stored.legacy_output.is_empty() && stored.outcome.is_some() {
            // Written before the spool existed: its undelivered bytes move into one.
            if let Err(e) = crate::spool::write_at(&run.spool, stored.acked, &stored.legacy_output) {
                tracing::warn!(task = %stored.task, error = %e, "cannot move a stored attempt's output to its spool");
            }
        }
        run.outcome = stored.outcome;
        run
    }

    /// The next report to send (`None`: nothing to report now), in the protocol's order:
    /// `Started`, then the output from where the origin has it, then `Finished`.
    fn next_report(&mut self, task: TaskId, attempt: Attempt) -> Option<(TaskRequest, ReportKind)> {
        if self.started && !self.started_acked {
            return Some((TaskRequest::Started { task, attempt }, ReportKind::Started));
        }
        if !self.started_acked {
            return None;
        }
        let data = self.next_chunk(task);
        if !data.is_empty() {
            let len = data.len();
            return Some((
                TaskRequest::Log { task, attempt, offset: self.acked, data },
                ReportKind::Log { len },
            ));
        }
        let outcome = self.outcome.clone()?;
        Some((TaskRequest::Finished { task, attempt, outcome }, ReportKind::Finished))
    }

    /// Takes the origin's answer to the report `kind` (`None`: no answer).
    fn on_answer(
        &mut self,
        task: TaskId,
        kind: ReportKind,
        response: Option<TaskResponse>,
        now: Time,
    ) -> Answered {
        self.in_flight = false;
        match response {
            Some(TaskResponse::Ack) => {
                self.retry_at = None;
                self.backoff = FIRST_BACKOFF;
                match kind {
                    ReportKind::Started => self.started_acked = true,
                    ReportKind::Log { len } => {
                        self.acked = self.acked.saturating_add(len as u64).min(self.total);
                    }
                    ReportKind::Finished => return Answered::Delivered,
                }
                Answered::Next
            }
            Some(TaskResponse::LogGap { have }) => {
                // The whole output is in the spool: the next chunk starts where the origin's log
                // ends, behind or ahead of what it acknowledged. If the spool cannot be read from
                // there, `next_chunk` ends the output at `have` and the result goes out with that.
                // An origin that keeps its log answers a gap only when it lost bytes it had
                // acknowledged: rare, so the resend waits for the backoff, which only an `Ack`
                // resets. An origin answering `LogGap` over and over (behind, at or past the end)
                // then paces this host instead of spinning it.
                tracing::warn!(task = %task, have, acked = self.acked, spooled = self.total,
                    "origin lacks log bytes; resending from the spool after a backoff");
                self.acked = have.min(self.total);
                self.retry_later(now)
            }
            Some(TaskResponse::Stale { .. } | TaskResponse::Unknown) => Answered::Abandon,
            // Not an answer to a report; treated as no answer.
            Some(TaskResponse::Leases { .. }) => {
                self.retry_at = Some(now + self.backoff);
                Answered::Wait
            }
            None => self.retry_later(now),
        }
    }

    fn retry_later(&mut self, now: Time) -> Answered {
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Answered::Wait
    }

    /// The next chunk of output to send (empty: nothing to send now). A spool that cannot be
    /// read ends the output where the origin has it: the result is then reported with what was
    /// delivered rather than held hostage by bytes that cannot be sent.
    fn next_chunk(&mut self, task: TaskId) -> Vec<u8> {
        if self.acked >= self.total {
            return Vec::new();
        }
        // Once unreadable, the output ends wherever the origin has it, also when a `LogGap`
        // moved that back: a result claiming more than the origin can get would loop.
        if !self.unreadable {
            let want = usize::try_from(self.total - self.acked).unwrap_or(usize::MAX).min(limits::LOG_CHUNK);
            let read = match &self.reader {
                Some(file) => crate::spool::read_chunk(file, self.acked, want),
                None => crate::spool::open(&self.spool)
                    .and_then(|file| crate::spool::read_chunk(self.reader.insert(file), self.acked, want)),
            };
            let error = match read {
                Ok(data) if !data.is_empty() => return data,
                Ok(_) => "it is shorter than written".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(task = %task, acked = self.acked, spooled = self.total, %error,
                "cannot read the attempt's spool; its output ends where the origin has it");
            self.unreadable = true;
        }
        self.total = self.acked;
        if let Some(o) = self.outcome.as_mut() {
            o.log_len = self.acked;
        }
        Vec::new()
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
        let spool = self.facts.spool.path(commit.task, commit.attempt);
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
                spool: spool.clone(),
            },
            self.exec_tx.clone(),
            cancel.clone(),
        );
        let run = Run::new(origin, cancel, spool);
        drop(self.store.put_run(run.record(key.0, key.1)));
        self.runs.insert(key, run);
    }

    /// Takes over the attempts the store says this node was running or reporting when it last
    /// stopped. One that had not ended died with the node (what is left of it is killed): it is
    /// reported lost, so its origin places it again at once. One that had ended still owes its
    /// origin the result, which is sent again, with the output still in its spool. Every other
    /// spool is what an earlier run left: removed.
    pub(super) fn recover_runs(&mut self, runs: Vec<HostedRun>) {
        // An attempt that had not ended is reported lost with no output: its spool goes too.
        let owed: Vec<_> = runs.iter().filter(|r| r.outcome.is_some()).map(|r| (r.task, r.attempt)).collect();
        let reaped = self.facts.spool.reap(&owed);
        if reaped > 0 {
            tracing::info!(spools = reaped, "removed output spools an earlier run left");
        }
        for stored in runs {
            let key = (stored.task, stored.attempt);
            let pgid = stored.pgid;
            let mut run = Run::recovered(stored, self.facts.spool.path(key.0, key.1));
            if run.outcome.is_none() {
                let killed = pgid.is_some_and(|pgid| executor::kill_orphan(pgid, key.0, key.1));
                tracing::warn!(task = %key.0, attempt = %key.1, killed_orphan = killed, "attempt lost in a restart");
                run.acked = 0;
                run.total = 0;
                run.outcome = Some(Outcome::lost("its executor restarted while it ran", 0));
                drop(self.store.put_run(run.record(key.0, key.1)));
            }
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
            | ExecEvent::Spooled { task, attempt, .. }
            | ExecEvent::Exited { task, attempt, .. } => (*task, *attempt),
        };
        let Some(run) = self.runs.get_mut(&key) else { return };
        match event {
            ExecEvent::Started { pgid, .. } => {
                run.started = true;
                run.pgid = pgid;
                drop(self.store.put_run(run.record(key.0, key.1)));
            }
            ExecEvent::Spooled { len, .. } => {
                if !run.unreadable {
                    run.total = run.total.max(len);
                }
            }
            ExecEvent::Exited { info, output_len, .. } => {
                if !run.unreadable {
                    run.total = run.total.max(output_len);
                }
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
                    self.forget_run(key);
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
        let Some((request, kind)) = run.next_report(task, attempt) else { return };
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
        match run.on_answer(task, kind, response, now) {
            Answered::Next => self.pump_run(key, now),
            Answered::Wait => {}
            Answered::Delivered => {
                self.forget_run(key);
                drop(self.store.remove_run(task, attempt));
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
        run.cancel.cancel();
        if run.exited {
            self.forget_run(key);
        }
        drop(self.store.remove_run(key.0, key.1));
    }

    /// Forgets an attempt that owes its origin nothing more, and removes its spool. One still
    /// running keeps writing its (then unlinked) spool until it ends; nothing reads it.
    fn forget_run(&mut self, key: (TaskId, Attempt)) {
        if self.runs.remove(&key).is_some() {
            self.facts.spool.remove(key.0, key.1);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskId {
        TaskId::new(1, 42)
    }
    const ATTEMPT: Attempt = Attempt(2);

    /// An origin keeping the attempt's log by the store's rule (a chunk past its end is a gap,
    /// bytes it has are skipped) and answering `Finished` with a gap while its log is shorter
    /// than the result says, as `origin.rs` does.
    #[derive(Default)]
    struct Origin {
        log: Vec<u8>,
    }

    impl Origin {
        fn answer(&mut self, request: &TaskRequest) -> TaskResponse {
            let have = self.log.len() as u64;
            match request {
                TaskRequest::Log { offset, .. } if *offset > have => TaskResponse::LogGap { have },
                TaskRequest::Log { offset, data, .. } => {
                    let skip = usize::try_from(have - offset).unwrap().min(data.len());
                    self.log.extend_from_slice(&data[skip..]);
                    TaskResponse::Ack
                }
                TaskRequest::Finished { outcome, .. } if have < outcome.log_len => {
                    TaskResponse::LogGap { have }
                }
                _ => TaskResponse::Ack,
            }
        }
    }

    /// Reports `run` to `origin` until it has the result; returns each report's kind and what
    /// its answer left to do, and the outcome delivered.
    fn deliver(run: &mut Run, origin: &mut Origin) -> (Vec<(ReportKind, Answered)>, Outcome) {
        let mut seen = Vec::new();
        for _ in 0..100 {
            let (request, kind) = run.next_report(task(), ATTEMPT).expect("a report is owed");
            let response = origin.answer(&request);
            let answered = run.on_answer(task(), kind, Some(response), Time::ZERO);
            seen.push((kind, answered));
            if answered == Answered::Delivered {
                let TaskRequest::Finished { outcome, .. } = request else {
                    panic!("delivered by {request:?}")
                };
                return (seen, outcome);
            }
        }
        panic!("not delivered after 100 reports: {seen:?}");
    }

    fn output(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn ended(acked: u64, log_len: u64, legacy_output: Vec<u8>) -> HostedRun {
        HostedRun {
            task: task(),
            attempt: ATTEMPT,
            origin: PeerId::new("12D3KooWorigin").unwrap(),
            pgid: Some(4242),
            outcome: Some(Outcome {
                exit_code: Some(0),
                error: None,
                cancelled: false,
                lost: false,
                log_len,
            }),
            legacy_output,
            acked,
        }
    }

    fn logs(seen: &[(ReportKind, Answered)]) -> usize {
        seen.iter().filter(|(k, _)| matches!(k, ReportKind::Log { .. })).count()
    }

    #[test]
    fn a_restarted_host_delivers_an_ended_attempts_output_from_its_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = crate::spool::SpoolDir::new(dir.path().join("spool"));
        let out = output(600_000);
        std::fs::write(spool.path(task(), ATTEMPT), &out).unwrap();
        // The origin had acknowledged the first 100,000 bytes before this node stopped.
        let mut origin = Origin { log: out[..100_000].to_vec() };
        let mut run = Run::recovered(ended(100_000, 600_000, Vec::new()), spool.path(task(), ATTEMPT));
        let (seen, outcome) = deliver(&mut run, &mut origin);
        assert_eq!(seen[0], (ReportKind::Started, Answered::Next), "Started again first: {seen:?}");
        assert_eq!(logs(&seen), 2, "500,000 bytes in chunks of {}: {seen:?}", limits::LOG_CHUNK);
        assert!(origin.log == out, "the origin has the whole output, once");
        assert_eq!((outcome.exit_code, outcome.log_len), (Some(0), 600_000));

        // Another restart, and the origin lost what it had past 50,000 bytes: the output is
        // resent from there, after a backoff, out of the same spool.
        let mut origin = Origin { log: out[..50_000].to_vec() };
        let mut run = Run::recovered(ended(100_000, 600_000, Vec::new()), spool.path(task(), ATTEMPT));
        let (seen, outcome) = deliver(&mut run, &mut origin);
        assert_eq!(seen[1], (ReportKind::Log { len: limits::LOG_CHUNK }, Answered::Wait), "{seen:?}");
        assert!(origin.log == out);
        assert_eq!(outcome.log_len, 600_000);
    }

    #[test]
    fn a_record_from_before_the_spool_moves_its_output_into_one_and_delivers_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = crate::spool::SpoolDir::new(dir.path().join("spool"));
        let out = output(10_000);
        let mut origin = Origin { log: out[..4_000].to_vec() };
        let mut run =
            Run::recovered(ended(4_000, 10_000, out[4_000..].to_vec()), spool.path(task(), ATTEMPT));
        assert!(spool.path(task(), ATTEMPT).exists());
        let (seen, outcome) = deliver(&mut run, &mut origin);
        assert_eq!(logs(&seen), 1);
        assert!(origin.log == out);
        assert_eq!(outcome.log_len, 10_000);
    }

    #[test]
    fn a_lying_origin_can_neither_spin_the_host_nor_make_it_read_past_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let spool = crate::spool::SpoolDir::new(dir.path().join("spool"));
        let out = output(1_000);
        std::fs::write(spool.path(task(), ATTEMPT), &out).unwrap();
        let mut run = Run::recovered(ended(0, 1_000, Vec::new()), spool.path(task(), ATTEMPT));
        let (_, kind) = run.next_report(task(), ATTEMPT).unwrap();
        assert_eq!(run.on_answer(task(), kind, Some(TaskResponse::Ack), Time::ZERO), Answered::Next);
        let gap = |have| Some(TaskResponse::LogGap { have });
        let mut waits = 0;
        for round in 0..20 {
            let (request, kind) = run.next_report(task(), ATTEMPT).unwrap();
            // Past the end: the host has sent all there is and says so, at the backoff's pace.
            let answered = match round % 3 {
                0 => run.on_answer(task(), kind, gap(u64::MAX), Time::ZERO),
                // Back to the start, again and again.
                1 => run.on_answer(task(), kind, gap(0), Time::ZERO),
                // The same place it was.
                _ => run.on_answer(task(), kind, gap(run.acked), Time::ZERO),
            };
            match request {
                TaskRequest::Log { offset, data, .. } => {
                    assert!(
                        offset + data.len() as u64 <= 1_000,
                        "read past the output: {offset}+{}",
                        data.len()
                    );
                    assert!(data == out[offset as usize..offset as usize + data.len()]);
                }
                TaskRequest::Finished { outcome, .. } => assert_eq!(outcome.log_len, 1_000),
                other => panic!("{other:?}"),
            }
            assert!(run.acked <= run.total && run.total == 1_000);
            waits += usize::from(answered == Answered::Wait);
        }
        assert_eq!(waits, 20, "no gap is followed at once");
        assert_eq!(run.backoff, MAX_BACKOFF);
        // A gap ahead of what was acknowledged is followed from there (after the wait).
        run.acked = 0;
        let (_, kind) = run.next_report(task(), ATTEMPT).unwrap();
        assert_eq!(run.on_answer(task(), kind, gap(600), Time::ZERO), Answered::Wait);
        let Some((TaskRequest::Log { offset: 600, data, .. }, _)) = run.next_report(task(), ATTEMPT) else {
            panic!("the next chunk starts at the gap")
        };
        assert_eq!(data.len(), 400);
    }

    #[test]
    fn an_unreadable_spool_ends_the_output_where_the_origin_has_it_even_after_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let spool = crate::spool::SpoolDir::new(dir.path().join("spool"));
        let out = output(1_000);
        // The spool lost its end (a crash before it reached the disk).
        std::fs::write(spool.path(task(), ATTEMPT), &out[..300]).unwrap();
        let mut origin = Origin::default();
        let mut run = Run::recovered(ended(0, 1_000, Vec::new()), spool.path(task(), ATTEMPT));
        let (_, outcome) = deliver(&mut run, &mut origin);
        assert_eq!((outcome.log_len, origin.log.as_slice()), (300, &out[..300]));

        // And an origin that then loses bytes gets a result it can complete, not a gap forever.
        let mut origin = Origin::default();
        let mut run = Run::recovered(ended(0, 1_000, Vec::new()), spool.path(task(), ATTEMPT));
        std::fs::remove_file(spool.path(task(), ATTEMPT)).unwrap();
        origin.log = out[..100].to_vec();
        run.started_acked = true;
        run.acked = 200;
        let (seen, outcome) = deliver(&mut run, &mut origin);
        assert_eq!((outcome.log_len, origin.log.len()), (100, 100), "{seen:?}");
    }
}
