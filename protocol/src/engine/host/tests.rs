//! The host's reporter against an origin written by hand: one real [`Engine`] that took over an
//! ended attempt from its store, a spool that is a byte vector (whole, cut short, or unreadable),
//! and an origin that answers each report honestly by the store's append rule or lies on
//! purpose. Virtual time only ever jumps to the engine's own `poll_timeout()`, so a report sent
//! before its backoff passed shows as sent too early, and one never sent shows as a host that
//! went quiet.
//!
//! Test-only: it must never read a clock or draw unseeded randomness, and no test may pass
//! without the reports it names having been sent and answered.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::RunRecord;
use crate::engine::{Engine, Persisted};
use crate::engine::{
    EngineParts, Input, LifeConfig, NoArchive, Now, Output, Request, RequestId, Response, Write,
};
use crate::ids::{Attempt, Org, PeerId, TaskId};
use crate::lifecycle::LeaseConfig;
use crate::membership::{Membership, MembershipConfig};
use crate::placement::{DEFAULT_RESERVATION_TTL, Host, HostConfig, Negotiator, PlacementConfig};
use crate::record::{AcceptPolicy, InsecureTestKeyring, NodeRecord, RecordVersion};
use crate::time::{Time, Timestamp};
use crate::wire::limits::LOG_CHUNK;
use crate::wire::task::{Outcome, TaskRequest, TaskResponse};

/// Where the host's monotonic clock starts.
const START: u64 = 1_000;
/// Unix ms at `START`.
const WALL: u64 = 1_700_000_000_000;
/// More `handle_timeout` calls than this at one instant is a host spinning.
const MAX_TIMEOUTS_AT_ONCE: u32 = 100;
/// More reports than this for one small output is a host looping.
const MAX_REPORTS: usize = 100;
const ATTEMPT: Attempt = Attempt(2);

fn task() -> TaskId {
    TaskId::new(1, 42)
}

fn origin_id() -> PeerId {
    PeerId::new("12D3KooWorigin").expect("base58 test id")
}

fn host_id() -> PeerId {
    PeerId::new("12D3KooWhost").expect("base58 test id")
}

/// Recognisable bytes: a misplaced or doubled chunk shows as a mismatch.
fn output(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// What the store kept of an attempt that ended (exit 0) with `log_len` bytes of output, of
/// which the origin had acknowledged `acked` before this node stopped.
fn ended(acked: u64, log_len: u64) -> RunRecord {
    RunRecord {
        task: task(),
        attempt: ATTEMPT,
        origin: origin_id(),
        pgid: Some(4242),
        outcome: Some(Outcome { exit_code: Some(0), error: None, cancelled: false, lost: false, log_len }),
        acked,
        evidence: None,
    }
}

/// How the spool fails past its readable part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The read fails (`None`): the file is gone or the disk errs.
    Unreadable,
    /// The read finds nothing (an empty chunk): the file is shorter than the executor said.
    Short,
}

/// The attempt's spool as the driver would read it.
#[derive(Debug)]
struct Spool {
    data: Vec<u8>,
    /// Bytes a read can return; past them, `failure`.
    readable: usize,
    failure: Failure,
}

impl Spool {
    fn whole(data: Vec<u8>) -> Self {
        Self { readable: data.len(), data, failure: Failure::Unreadable }
    }

    fn read(&self, offset: u64, max: usize) -> Option<Vec<u8>> {
        let start = usize::try_from(offset).ok()?;
        if start >= self.readable {
            return match self.failure {
                Failure::Unreadable => None,
                Failure::Short => Some(Vec::new()),
            };
        }
        let end = start.saturating_add(max).min(self.readable);
        Some(self.data[start..end].to_vec())
    }
}

/// An origin keeping the attempt's log by the store's append rule (a chunk past its end is a
/// gap, bytes it has are skipped) and answering `Finished` with a gap while its log is shorter
/// than the result says, as the engine's origin does.
#[derive(Debug, Default)]
struct Origin {
    log: Vec<u8>,
}

impl Origin {
    fn answer(&mut self, request: &TaskRequest) -> TaskResponse {
        let have = self.log.len() as u64;
        match request {
            TaskRequest::Log { offset, .. } if *offset > have => TaskResponse::LogGap { have },
            TaskRequest::Log { offset, data, .. } => {
                let skip = usize::try_from(have - offset).unwrap_or(usize::MAX).min(data.len());
                self.log.extend_from_slice(&data[skip..]);
                TaskResponse::Ack
            }
            TaskRequest::Finished { outcome, .. } if have < outcome.log_len => TaskResponse::LogGap { have },
            _ => TaskResponse::Ack,
        }
    }
}

/// A report the host sent: what, when, and (once answered) the answer and when it came.
#[derive(Debug, Clone)]
struct Report {
    request: TaskRequest,
    sent_at: u64,
    answer: Option<(TaskResponse, u64)>,
}

/// A host engine (org globex, two slots) restarted with `records` in its store.
fn host_engine(records: Vec<RunRecord>) -> Engine<ChaCha8Rng> {
    let now = Now { time: Time(START), wall: Timestamp(WALL) };
    let org = Org::new("globex").expect("test org");
    let host = Host::new(
        HostConfig {
            cpu_millis: 4000,
            memory_mb: 4096,
            gpus: 0,
            slots: 2,
            reservation_ttl: DEFAULT_RESERVATION_TTL,
        },
        org.clone(),
        BTreeMap::new(),
        AcceptPolicy::AnyOrg,
    );
    let local = NodeRecord {
        peer_id: host_id(),
        org: org.clone(),
        name: "host".into(),
        addrs: vec!["/ip4/10.0.0.2/tcp/4001".into()],
        labels: BTreeMap::new(),
        capacity: host.capacity(),
        accepts: AcceptPolicy::AnyOrg,
        draining: false,
        isolation: Default::default(),
        software: "host-tests".into(),
        version: RecordVersion { generation: WALL, version: 1 },
    };
    let keyring = Box::new(InsecureTestKeyring::new(host_id()));
    let rng = |purpose: u64| ChaCha8Rng::seed_from_u64(0x4057_0000 + purpose);
    let parts = EngineParts {
        membership: Membership::new(local, keyring, MembershipConfig::default(), rng(1), now.time),
        negotiator: Negotiator::new(host_id(), org, PlacementConfig::default(), rng(2)),
        host,
        leases: LeaseConfig::default(),
        life: LifeConfig::default(),
        rng: rng(3),
        keyring: Box::new(InsecureTestKeyring::new(host_id())),
    };
    Engine::new(parts, Vec::new(), records, now)
}

/// One host engine and everything around it but the origin, which the test plays.
struct Rig {
    engine: Engine<ChaCha8Rng>,
    now: u64,
    spool: Spool,
    /// The output's length the host may read up to (the result's `log_len` at recovery).
    output_len: u64,
    /// The report waiting for the test's answer.
    waiting: Option<(RequestId, usize)>,
    reports: Vec<Report>,
    /// Every `ReadLog`, as (offset, max).
    reads: Vec<(u64, usize)>,
    renewals: usize,
    removed: bool,
    forgotten: bool,
    timeouts_at: (u64, u32),
}

impl Rig {
    /// A host restarted with `record` in its store and `spool` on its disk.
    fn recovered(record: RunRecord, spool: Spool) -> Self {
        let output_len = record.outcome.as_ref().map_or(0, |o| o.log_len);
        let engine = host_engine(vec![record]);
        let mut rig = Self {
            engine,
            now: START,
            spool,
            output_len,
            waiting: None,
            reports: Vec::new(),
            reads: Vec::new(),
            renewals: 0,
            removed: false,
            forgotten: false,
            timeouts_at: (START, 0),
        };
        rig.drain();
        rig
    }

    fn at(&self) -> Now {
        Now { time: Time(self.now), wall: Timestamp(WALL + self.now - START) }
    }

    fn feed(&mut self, input: Input) {
        let now = self.at();
        self.engine.handle(input, now, &NoArchive);
    }

    /// Carries out every output, answering what is not the origin's to answer.
    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Send { to, id, request } => {
                    assert_eq!(to, origin_id(), "the host talks to nobody but the origin: {request:?}");
                    match request {
                        Request::Task(TaskRequest::Renew { attempts }) => {
                            assert_eq!(attempts, vec![(task(), ATTEMPT)]);
                            self.renewals += 1;
                            let leases = TaskResponse::Leases { stop: Vec::new(), cancel: Vec::new() };
                            self.feed(Input::Response { id, response: Response::Task(leases) });
                        }
                        Request::Task(request) => {
                            assert!(
                                self.waiting.is_none(),
                                "a second report in flight: {request:?} while {:?} waits",
                                self.waiting.map(|(_, i)| &self.reports[i].request)
                            );
                            self.waiting = Some((id, self.reports.len()));
                            self.reports.push(Report { request, sent_at: self.now, answer: None });
                        }
                        other => panic!("unexpected request to the origin: {other:?}"),
                    }
                }
                Output::ReadLog { task: t, attempt, offset, max } => {
                    assert_eq!((t, attempt), (task(), ATTEMPT));
                    assert!(max <= LOG_CHUNK, "a read of {max} bytes, over the chunk size");
                    assert!(
                        offset.saturating_add(max as u64) <= self.output_len,
                        "read past the output's end: {offset}+{max} > {}",
                        self.output_len
                    );
                    self.reads.push((offset, max));
                    let data = self.spool.read(offset, max);
                    self.feed(Input::LogRead { task: t, attempt, offset, data });
                }
                Output::Persist { id, write } => {
                    if let Write::RemoveRun { task: t, attempt } = &write {
                        assert_eq!((*t, *attempt), (task(), ATTEMPT));
                        self.removed = true;
                    }
                    if let Some(id) = id {
                        self.feed(Input::Persisted { id, result: Persisted::Done });
                    }
                }
                Output::ForgetAttempt { task: t, attempt } => {
                    assert_eq!((t, attempt), (task(), ATTEMPT));
                    self.forgotten = true;
                }
                Output::Event(_) => {}
                Output::Respond { reply, .. } => panic!("nothing asked the host anything: {reply:?}"),
                Output::StartAttempt { task, attempt, .. } => {
                    panic!("no commit came: started {task} {attempt}")
                }
                Output::StopAttempt { task, attempt } => {
                    panic!("the attempt ended already: stop {task} {attempt}")
                }
            }
        }
    }

    /// Moves time to the host's deadlines, one at a time, until it sends a report; returns it.
    fn next_report(&mut self) -> TaskRequest {
        for _ in 0..10_000 {
            if let Some((_, i)) = self.waiting {
                return self.reports[i].request.clone();
            }
            let deadline = self.engine.poll_timeout().expect("the host went quiet with a report owed");
            self.now = self.now.max(deadline.0);
            if self.timeouts_at.0 == self.now {
                self.timeouts_at.1 += 1;
                assert!(self.timeouts_at.1 <= MAX_TIMEOUTS_AT_ONCE, "the host spins at {}", self.now);
            } else {
                self.timeouts_at = (self.now, 1);
            }
            let now = self.at();
            self.engine.handle_timeout(now, &NoArchive);
            self.drain();
        }
        panic!("no report in 10,000 deadlines");
    }

    /// Answers the report in flight, now.
    fn answer(&mut self, response: TaskResponse) {
        let (id, i) = self.waiting.take().expect("a report to answer");
        self.reports[i].answer = Some((response.clone(), self.now));
        self.feed(Input::Response { id, response: Response::Task(response) });
        self.drain();
    }

    /// Plays `origin` until it acknowledges a `Finished`; returns the outcome it accepted.
    fn deliver(&mut self, origin: &mut Origin) -> Outcome {
        for _ in 0..MAX_REPORTS {
            let request = self.next_report();
            let response = origin.answer(&request);
            let done = matches!(request, TaskRequest::Finished { .. }) && response == TaskResponse::Ack;
            self.answer(response);
            if let (true, TaskRequest::Finished { outcome, .. }) = (done, request) {
                assert!(self.removed && self.forgotten, "delivered, yet the host still holds the attempt");
                assert_eq!(self.engine.held_attempts(), 0);
                assert!(self.engine.poll_output().is_none());
                return outcome;
            }
        }
        panic!("not delivered after {MAX_REPORTS} reports: {:?}", self.summary());
    }

    /// The report after the one at `i`, and how long after `i`'s answer it was sent.
    fn wait_after(&self, i: usize) -> u64 {
        let (_, answered) = self.reports[i].answer.clone().expect("answered");
        self.reports[i + 1].sent_at - answered
    }

    /// The `Log` reports, as (offset, length).
    fn logs(&self) -> Vec<(u64, usize)> {
        self.reports
            .iter()
            .filter_map(|r| match &r.request {
                TaskRequest::Log { offset, data, .. } => Some((*offset, data.len())),
                _ => None,
            })
            .collect()
    }

    fn summary(&self) -> Vec<String> {
        self.reports
            .iter()
            .map(|r| {
                let what = match &r.request {
                    TaskRequest::Log { offset, data, .. } => format!("Log {offset}+{}", data.len()),
                    TaskRequest::Finished { outcome, .. } => format!("Finished {}", outcome.log_len),
                    other => format!("{other:?}"),
                };
                format!("@{} {what} -> {:?}", r.sent_at, r.answer)
            })
            .collect()
    }
}

fn backoff(life: &LifeConfig, nth_wait: u32) -> u64 {
    let ms = life.report_backoff.as_millis().saturating_mul(1 << nth_wait.min(20));
    u64::try_from(ms.min(life.report_backoff_max.as_millis())).unwrap_or(u64::MAX)
}

#[test]
fn a_restarted_host_delivers_an_ended_attempts_output_from_its_spool() {
    let out = output(600_000);
    // The origin had acknowledged the first 100,000 bytes before this node stopped.
    let mut rig = Rig::recovered(ended(100_000, 600_000), Spool::whole(out.clone()));
    let mut origin = Origin { log: out[..100_000].to_vec() };
    let outcome = rig.deliver(&mut origin);
    let seen = rig.summary();
    assert!(matches!(rig.reports[0].request, TaskRequest::Started { .. }), "Started again first: {seen:?}");
    let second = 100_000 + LOG_CHUNK as u64;
    assert_eq!(rig.logs(), vec![(100_000, LOG_CHUNK), (second, 500_000 - LOG_CHUNK)], "{seen:?}");
    assert_eq!(rig.reads, vec![(100_000, LOG_CHUNK), (second, 500_000 - LOG_CHUNK)]);
    assert!(origin.log == out, "the origin has the whole output, once");
    assert_eq!((outcome.exit_code, outcome.log_len), (Some(0), 600_000));
    // Nothing was answered with a gap: nothing waited.
    assert!(rig.reports.iter().all(|r| r.sent_at == START), "{seen:?}");
}

#[test]
fn a_restarted_host_resends_from_where_the_origin_lost_its_log_after_a_backoff() {
    let out = output(600_000);
    let life = LifeConfig::default();
    // Another restart, and the origin lost what it had past 50,000 bytes (it had acknowledged
    // 100,000): the output is resent from there, after a backoff, out of the same spool.
    let mut rig = Rig::recovered(ended(100_000, 600_000), Spool::whole(out.clone()));
    let mut origin = Origin { log: out[..50_000].to_vec() };

    assert!(matches!(rig.next_report(), TaskRequest::Started { .. }));
    rig.answer(TaskResponse::Ack);
    let TaskRequest::Log { offset: 100_000, .. } = rig.next_report() else { panic!("{:?}", rig.summary()) };
    let gap_at = rig.now;
    rig.answer(TaskResponse::LogGap { have: 50_000 });
    assert_eq!(rig.reports[1].answer.as_ref().map(|a| &a.0), Some(&TaskResponse::LogGap { have: 50_000 }));
    // Not at once: no report is in flight, and the resend waits for the backoff.
    assert!(rig.waiting.is_none(), "a gap followed at once: {:?}", rig.summary());
    let run = rig.engine.runs.get(&(task(), ATTEMPT)).expect("still held");
    assert_eq!(run.retry_at, Some(Time(gap_at + backoff(&life, 0))));

    let outcome = rig.deliver(&mut origin);
    let seen = rig.summary();
    assert_eq!(rig.wait_after(1), backoff(&life, 0), "resent exactly when the backoff passed: {seen:?}");
    let chunk = LOG_CHUNK as u64;
    assert_eq!(
        rig.logs(),
        vec![
            (100_000, LOG_CHUNK),
            (50_000, LOG_CHUNK),
            (50_000 + chunk, LOG_CHUNK),
            (50_000 + 2 * chunk, 550_000 - 2 * LOG_CHUNK)
        ],
        "{seen:?}"
    );
    assert!(origin.log == out, "the origin has the whole output, once");
    assert_eq!((outcome.exit_code, outcome.log_len), (Some(0), 600_000));
    // An `Ack` resets the backoff: the chunks after the resend went at once.
    assert!(rig.reports[2..].iter().all(|r| r.sent_at == rig.reports[2].sent_at), "{seen:?}");
}

#[test]
fn a_lying_origin_can_neither_spin_the_host_nor_make_it_read_past_its_output() {
    let out = output(1_000);
    let life = LifeConfig::default();
    let mut rig = Rig::recovered(ended(0, 1_000), Spool::whole(out.clone()));
    assert!(matches!(rig.next_report(), TaskRequest::Started { .. }));
    rig.answer(TaskResponse::Ack);

    let mut waits = Vec::new();
    for round in 0..20u32 {
        let request = rig.next_report();
        let i = rig.reports.len() - 1;
        if i > 1 {
            waits.push(rig.wait_after(i - 1));
        }
        let here = match &request {
            TaskRequest::Log { offset, data, .. } => {
                let start = usize::try_from(*offset).expect("small offset");
                assert!(data.as_slice() == &out[start..start + data.len()], "a chunk not from the spool");
                *offset
            }
            TaskRequest::Finished { outcome, .. } => {
                assert_eq!(outcome.log_len, 1_000, "the result still claims the whole output");
                outcome.log_len
            }
            other => panic!("round {round}: {other:?}"),
        };
        let have = match round % 3 {
            // Past the end: the host has sent all there is and says so, at the backoff's pace.
            0 => u64::MAX,
            // Back to the start, again and again.
            1 => 0,
            // The same place it was.
            _ => here,
        };
        rig.answer(TaskResponse::LogGap { have });
        assert!(rig.waiting.is_none(), "round {round}: a gap followed at once: {:?}", rig.summary());
        let run = rig.engine.runs.get(&(task(), ATTEMPT)).expect("still held");
        assert!(
            run.acked <= run.total && run.total == 1_000,
            "round {round}: the gap moved the host outside its output: {}/{}",
            run.acked,
            run.total
        );
    }
    let seen = rig.summary();
    let expected: Vec<u64> = (0..19).map(|n| backoff(&life, n)).collect();
    assert_eq!(waits, expected, "each gap waits out a doubling backoff: {seen:?}");
    assert_eq!(waits.last().copied(), Some(life.report_backoff_max.as_millis() as u64));
    let run = rig.engine.runs.get(&(task(), ATTEMPT)).expect("still held");
    assert_eq!(run.backoff, life.report_backoff_max);
    assert!(rig.reads.len() >= 10, "the output was read again and again: {:?}", rig.reads);
    // The host's waits did not let its lease lapse: an ended attempt whose result is owed is
    // renewed every `renew_every` (1 s) all along.
    let elapsed = rig.now - START;
    assert!(
        elapsed >= 100_000 && rig.renewals as u64 > elapsed / 1_000,
        "{} renewals in {elapsed} ms",
        rig.renewals
    );
    // Every read stayed inside the output (checked on each `ReadLog` in `drain`), and so did
    // every `Log` the host sent.
    assert!(rig.logs().iter().all(|(o, l)| o + *l as u64 <= 1_000), "{seen:?}");

    // A gap ahead of what was acknowledged is followed from there (after the wait). Round 19
    // answered 0, so the report in flight is the chunk at 0.
    let TaskRequest::Log { offset: 0, .. } = rig.next_report() else { panic!("{seen:?}") };
    rig.answer(TaskResponse::LogGap { have: 600 });
    let TaskRequest::Log { offset: 600, data, .. } = rig.next_report() else {
        panic!("the next chunk starts at the gap: {:?}", rig.summary())
    };
    assert_eq!(rig.reads.last(), Some(&(600, 400)));
    assert!(data.as_slice() == &out[600..]);
    let i = rig.reports.len() - 1;
    assert_eq!(rig.wait_after(i - 1), life.report_backoff_max.as_millis() as u64);
    // And once the origin tells the truth, the result goes through.
    let mut origin = Origin { log: out[..600].to_vec() };
    let response = origin.answer(&rig.reports[i].request);
    assert_eq!(response, TaskResponse::Ack);
    rig.answer(response);
    // That `Ack` reset the backoff: a gap now waits the first backoff again, not the longest.
    let TaskRequest::Finished { .. } = rig.next_report() else { panic!("{:?}", rig.summary()) };
    rig.answer(TaskResponse::LogGap { have: 1_000 });
    let outcome = rig.deliver(&mut origin);
    let i = rig.reports.len() - 1;
    assert_eq!(rig.wait_after(i - 1), backoff(&life, 0), "{:?}", rig.summary());
    assert_eq!(outcome.log_len, 1_000);
    assert!(origin.log == out);
}

#[test]
fn an_unreadable_spool_ends_the_output_where_the_origin_has_it_even_after_a_gap() {
    let out = output(1_000);
    for failure in [Failure::Unreadable, Failure::Short] {
        // The spool lost its end after 300 bytes (a crash before it reached the disk, or a disk
        // error).
        let spool = Spool { data: out.clone(), readable: 300, failure };
        let mut rig = Rig::recovered(ended(0, 1_000), spool);
        let mut origin = Origin::default();
        let outcome = rig.deliver(&mut origin);
        let seen = rig.summary();
        assert_eq!((outcome.log_len, origin.log.as_slice()), (300, &out[..300]), "{failure:?}: {seen:?}");
        assert_eq!(rig.reads, vec![(0, 1_000), (300, 700)], "{failure:?}: no read after the failed one");
        assert_eq!(rig.reports.len(), 3, "{failure:?}: Started, Log, Finished: {seen:?}");

        // And an origin that then loses bytes and answers the result with a gap gets a result it
        // can complete, not a gap forever: the host cannot read again, so it ends the output
        // where the origin now has it.
        let spool = Spool { data: out.clone(), readable: 300, failure };
        let mut rig = Rig::recovered(ended(0, 1_000), spool);
        let mut origin = Origin::default();
        let finished = loop {
            let request = rig.next_report();
            if let TaskRequest::Finished { outcome, .. } = &request {
                break outcome.log_len;
            }
            let response = origin.answer(&request);
            rig.answer(response);
        };
        assert_eq!(finished, 300, "{failure:?}");
        origin.log.truncate(100);
        rig.answer(TaskResponse::LogGap { have: 100 });
        let outcome = rig.deliver(&mut origin);
        let seen = rig.summary();
        assert_eq!((outcome.log_len, origin.log.as_slice()), (100, &out[..100]), "{failure:?}: {seen:?}");
        assert_eq!(rig.reads.len(), 2, "{failure:?}: nothing read after the failure: {:?}", rig.reads);
        let last = rig.reports.len() - 1;
        assert_eq!(last, 3, "{failure:?}: one more Finished after the gap: {seen:?}");
        assert_eq!(rig.wait_after(last - 1), backoff(&LifeConfig::default(), 0), "{failure:?}: {seen:?}");
    }

    // A spool gone entirely, with the record saying the origin had 200 bytes it now lacks half of.
    let spool = Spool { data: out.clone(), readable: 0, failure: Failure::Unreadable };
    let mut rig = Rig::recovered(ended(200, 1_000), spool);
    let mut origin = Origin { log: out[..100].to_vec() };
    let outcome = rig.deliver(&mut origin);
    let seen = rig.summary();
    assert_eq!((outcome.log_len, origin.log.len()), (100, 100), "{seen:?}");
    assert_eq!(rig.reads, vec![(200, 800)], "{seen:?}");
    assert!(rig.logs().is_empty(), "{seen:?}");
    assert_eq!(rig.reports.len(), 3, "Started, Finished 200 (a gap), Finished 100: {seen:?}");
}

#[test]
fn an_origin_answering_reports_with_leases_is_backed_off_like_silence() {
    let life = LifeConfig::default();
    let mut rig = Rig::recovered(ended(0, 1_000), Spool::whole(output(1_000)));
    assert!(matches!(rig.next_report(), TaskRequest::Started { .. }));
    let mut waits = Vec::new();
    for round in 0..6u32 {
        // Not an answer to a report, whatever the report was.
        rig.answer(TaskResponse::Leases { stop: Vec::new(), cancel: Vec::new() });
        assert!(rig.waiting.is_none(), "round {round}: resent at once: {:?}", rig.summary());
        let request = rig.next_report();
        assert!(matches!(request, TaskRequest::Started { .. }), "round {round}: {request:?}");
        waits.push(rig.wait_after(rig.reports.len() - 2));
    }
    let expected: Vec<u64> = (0..6).map(|n| backoff(&life, n)).collect();
    assert_eq!(waits, expected, "the pace slows as it would for no answer: {:?}", rig.summary());
}

/// One origin answers a lease renewal with a stop list naming another origin's attempt too:
/// only its own attempt stops; the other's goes on reporting to its origin, and the foreign
/// entry is counted.
#[test]
fn an_origin_cannot_stop_another_origins_attempt() {
    let rogue = PeerId::new("12D3KooWrogue").expect("a valid peer id");
    let theirs = (TaskId::new(2, 77), Attempt(1));
    let mut rogue_run = ended(0, 10);
    rogue_run.task = theirs.0;
    rogue_run.attempt = theirs.1;
    rogue_run.origin = rogue.clone();
    let mut engine = host_engine(vec![ended(0, 10), rogue_run]);
    let ours = (task(), ATTEMPT);
    let mut now = START;
    let (mut removed, mut reported_to_origin) = (Vec::new(), 0);
    for _ in 0..200 {
        while let Some(out) = engine.poll_output() {
            let at = Now { time: Time(now), wall: Timestamp(WALL + now - START) };
            match out {
                Output::Send { to, id, request: Request::Task(TaskRequest::Renew { .. }) } if to == rogue => {
                    let stop = vec![ours, theirs];
                    let forged = TaskResponse::Leases { stop, cancel: vec![ours] };
                    engine.handle(Input::Response { id, response: Response::Task(forged) }, at, &NoArchive);
                }
                Output::Send { to, id, .. } => {
                    reported_to_origin += usize::from(to == origin_id());
                    // Neither origin answers reports: the results stay owed.
                    engine.handle(Input::RequestFailed { id }, at, &NoArchive);
                }
                Output::Persist { write: Write::RemoveRun { task, attempt }, .. } => {
                    removed.push((task, attempt))
                }
                Output::StopAttempt { task, attempt } => panic!("an ended attempt stopped: {task} {attempt}"),
                _ => {}
            }
        }
        let Some(deadline) = engine.poll_timeout() else { break };
        now = now.max(deadline.0);
        let at = Now { time: Time(now), wall: Timestamp(WALL + now - START) };
        engine.handle_timeout(at, &NoArchive);
        if now > START + 20_000 {
            break;
        }
    }
    assert_eq!(removed, vec![theirs], "the rogue stopped its own attempt and nothing else");
    assert!(engine.runs.contains_key(&ours), "the honest origin's attempt is still held");
    assert!(reported_to_origin > 3, "and still reported to its origin ({reported_to_origin} tries)");
    assert_eq!(engine.counters().foreign_entries, 2, "one stop and one cancel named it");
}
