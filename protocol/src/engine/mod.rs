//! One node's whole protocol, sans-IO: membership, the placement negotiator, the capacity ledger,
//! the origin's task table with its leases, and the host's reporter, behind one input type, one
//! output type and one earliest deadline (after quinn-proto's `Connection`, iroh-gossip's
//! `State`). The node drives it over libp2p, redb and child processes; the simulator over a
//! virtual network and durations. It never reads a clock, does I/O or draws unseeded randomness.
//!
//! Calling contract: feed every event with [`Engine::handle`], call [`Engine::handle_timeout`]
//! once `now >= poll_timeout()`, and after either drain [`Engine::poll_output`] until `None`,
//! carrying out each [`Output`]. Requests this node sends to itself never leave the engine.
//!
//! A task's path through it is a straight line: `Submitted` → negotiation (`Send` bids and a
//! commit) → the host's `Start` → the host's reports (`Started`, `ReadLog` → `Log`, `Finished`)
//! → the origin's `Persist` of each, answered once durable → terminal status.

mod host;
mod log_append;
mod origin;
pub mod output_cap;
mod receipts;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bounds;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::Rng;

use crate::ids::{Attempt, PeerId, TaskId};
use crate::lifecycle::{LeaseConfig, Leases};
use crate::membership::{Membership, MembershipEvent, MembershipOutput, PeerState};
use crate::placement::{Host, Negotiator, NegotiatorOutput, PlacedOn};
use crate::receipt::Usage;
use crate::record::{Keyring, SignedRecord};
use crate::task::{Task, TaskSpec};
use crate::time::{Time, Timestamp};
use crate::wire::gossip::{GossipRequest, GossipResponse};
use crate::wire::place::{BidResponse, CommitResponse, DeclineReason, PlaceRequest, PlaceResponse};
use crate::wire::receipt::{ReceiptRequest, ReceiptResponse};
use crate::wire::task::{Outcome, TaskRequest, TaskResponse};

pub use host::{Evidence, RunRecord};
use host::{ReportKind, Run};
pub use log_append::new_log_bytes;
use origin::Active;

/// The two clocks an input happens at: the monotonic one every deadline is on, and the wall
/// clock task records are stamped with (and queue timeouts, which survive restarts, run on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds.
    pub time: Time,
    /// Unix milliseconds.
    pub wall: Timestamp,
}

/// Identifies a request this engine sent, so its answer (or failure) finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Identifies a request a peer sent this engine; the driver keeps the stream it must answer on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyId(pub u64);

/// Identifies a write whose durability the engine waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId(pub u64);

/// A request on one of the four protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `/orgmesh/gossip/1`.
    Gossip(GossipRequest),
    /// `/orgmesh/place/1`.
    Place(PlaceRequest),
    /// `/orgmesh/task/1`.
    Task(TaskRequest),
    /// `/orgmesh/receipt/1`.
    Receipt(ReceiptRequest),
}

/// An answer on one of the four protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `/orgmesh/gossip/1`.
    Gossip(GossipResponse),
    /// `/orgmesh/place/1`.
    Place(PlaceResponse),
    /// `/orgmesh/task/1`.
    Task(TaskResponse),
    /// `/orgmesh/receipt/1`.
    Receipt(ReceiptResponse),
}

/// What the driver persists for the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A task of this node's, as it now is; with its `task.<status>` event if its status changed.
    Task {
        /// The record.
        task: Box<Task>,
        /// Whether the status changed (an event goes with the write).
        status_changed: bool,
    },
    /// Bytes of a task's log, `at` bytes into it. Durable: [`Persisted::Log`] or
    /// [`Persisted::LogGap`].
    Log {
        /// The task.
        task: TaskId,
        /// Where the bytes go in its log.
        at: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// An attempt this node hosts, as it now is.
    Run(RunRecord),
    /// An attempt this node hosted owes its origin nothing more.
    RemoveRun {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
    },
    /// A peer's signed record, remembered to redial after a restart (once per generation).
    Peer(Box<SignedRecord>),
    /// A peer the membership table dropped to stay bounded: not to be redialled after a
    /// restart, so the remembered peers stay within the table's cap.
    ForgetPeer(PeerId),
}

/// How a write the engine waits for went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persisted {
    /// Committed.
    Done,
    /// A log write committed; the task's log is now `len` bytes long.
    Log {
        /// The log's length.
        len: u64,
    },
    /// A log write was refused: it would leave a hole after the `have` bytes the log holds.
    LogGap {
        /// The log's length.
        have: u64,
    },
    /// The write failed; nothing is answered, so the peer retries.
    Failed,
}

/// How an attempt's process ended, as the executor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, if it exited by itself.
    pub exit_code: Option<i32>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Whether it was stopped by a cancel.
    pub cancelled: bool,
    /// SHA-256 of all of its spooled output (the bytes the origin gets, cut marker included), if
    /// the executor computed it: without it the host signs no receipt.
    pub output_sha256: Option<[u8; 32]>,
    /// What it used, as far as the executor could measure.
    pub usage: Usage,
}

impl Exit {
    /// An exit with no digest and no usage (no receipt follows).
    pub fn plain(exit_code: Option<i32>, error: Option<String>, cancelled: bool) -> Self {
        Self { exit_code, error, cancelled, output_sha256: None, usage: Usage::default() }
    }
}

/// Everything that happens to the engine.
#[derive(Debug, Clone)]
pub enum Input {
    /// A peer's request; answer it with [`Output::Respond`] for `reply`.
    Request {
        /// The peer (authenticated by the transport).
        from: PeerId,
        /// What it asks.
        request: Request,
        /// Where the answer goes.
        reply: ReplyId,
    },
    /// The answer to a request this engine sent.
    Response {
        /// Which request.
        id: RequestId,
        /// The answer.
        response: Response,
    },
    /// A request this engine sent failed (no connection, timeout, stream error).
    RequestFailed {
        /// Which request.
        id: RequestId,
    },
    /// A write the engine waits for is done.
    Persisted {
        /// Which write.
        id: WriteId,
        /// How it went.
        result: Persisted,
    },
    /// A task accepted through the API is durable: place it.
    Submitted(Box<Task>),
    /// The answer to [`Output::ReadLog`]: bytes of the attempt's spooled output from `offset`
    /// (`None`: the spool cannot be read; empty: it is shorter than the executor said).
    LogRead {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// Where the bytes start.
        offset: u64,
        /// The bytes.
        data: Option<Vec<u8>>,
    },
    /// The executor started an attempt's process.
    AttemptStarted {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// Its process group, so a restarted node can stop an orphan.
        pgid: Option<i32>,
    },
    /// The attempt's spooled output is `len` bytes long now.
    AttemptOutput {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// Bytes spooled.
        len: u64,
    },
    /// The attempt's process ended; `output_len` is all of its output.
    AttemptExited {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// How it ended.
        exit: Exit,
        /// Its output's length.
        output_len: u64,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `request` to `to`; feed its answer back as [`Input::Response`] or [`Input::RequestFailed`].
    Send {
        /// The peer (never this node).
        to: PeerId,
        /// Which request, for the answer.
        id: RequestId,
        /// The request.
        request: Request,
    },
    /// Answer a peer's request; `None` drops the stream unanswered (the peer retries).
    Respond {
        /// Which request.
        reply: ReplyId,
        /// The answer.
        response: Option<Response>,
    },
    /// Persist `write`, in order with every other write; with an `id`, report when it is durable
    /// with [`Input::Persisted`].
    Persist {
        /// Set when the engine waits for the write.
        id: Option<WriteId>,
        /// The write.
        write: Write,
    },
    /// Run an attempt this node accepted, spooling its output; report with the `Attempt*` inputs.
    StartAttempt {
        /// The node it runs for.
        origin: PeerId,
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// What to run.
        spec: Box<TaskSpec>,
    },
    /// Stop an attempt's process (SIGTERM, then SIGKILL after the grace); it still reports
    /// `AttemptExited`.
    StopAttempt {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
    },
    /// Read up to `max` bytes of an attempt's spooled output from `offset`; answer with
    /// [`Input::LogRead`].
    ReadLog {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// From where.
        offset: u64,
        /// At most this many bytes.
        max: usize,
    },
    /// The attempt owes its origin nothing more: its spool may go.
    ForgetAttempt {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
    },
    /// Something the driver may show, log or count.
    Event(Event),
}

/// What happened, for the driver's events, logs and checkers.
#[derive(Debug, Clone, PartialEq)]
// Events are moved once, out of a queue drained at once (as `MembershipOutput`).
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// Membership changed (a peer joined, changed, was judged, or sent a record we dropped).
    Membership(MembershipEvent),
    /// A candidate declined a bid for good (not busy: policy, constraints, size).
    Declined {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// The candidate.
        peer: PeerId,
        /// Why.
        reason: DeclineReason,
    },
    /// A negotiation for `task` started.
    Placing {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
    },
    /// `task`'s `attempt` was placed on `host`.
    Placed {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// Where.
        host: PeerId,
    },
    /// The origin accepted `attempt`'s result as `task`'s: at most one attempt per task, ever.
    ResultAccepted {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
    },
}

/// What the engine needs to know about tasks that ended here (they leave its table; the store
/// keeps them), to answer a late report or renewal.
pub trait Archive {
    /// The task as it ended, if this node owns it.
    fn ended(&self, task: TaskId) -> Lookup;
}

/// An ended task, as [`Archive::ended`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// It ended with `attempt`, which ran on `host`.
    Ended {
        /// Its last attempt.
        attempt: Attempt,
        /// Where that ran.
        host: Option<PeerId>,
    },
    /// Not a task of this node.
    Unknown,
    /// The store cannot answer now: no answer, so the peer retries.
    Unavailable,
}

/// An archive that knows nothing (a node with no ended tasks; tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoArchive;

impl Archive for NoArchive {
    fn ended(&self, _task: TaskId) -> Lookup {
        Lookup::Unknown
    }
}

/// Timing of the task's life after placement that is not the leases' or the negotiator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifeConfig {
    /// How soon a task that found no free capacity tries again.
    pub pending_retry: Duration,
    /// At most this many waiting tasks start a negotiation per pass.
    pub retry_batch: usize,
    /// How often a cancel is re-sent to a host that has not confirmed it.
    pub cancel_retry: Duration,
    /// Back-off before placing a task again after a lost attempt (doubles per attempt, jittered).
    pub replace_backoff: Duration,
    /// ... up to this.
    pub replace_backoff_max: Duration,
    /// First retry delay of a report the origin did not answer; doubles up to the max.
    pub report_backoff: Duration,
    /// ... up to this.
    pub report_backoff_max: Duration,
    /// Most output bytes the origin stores of one task (then the marker).
    pub output_cap: u64,
    /// For this long after start, a task found waiting in the store that no known node can run
    /// waits instead of failing: the view is still filling up.
    pub view_warmup: Duration,
}

impl Default for LifeConfig {
    fn default() -> Self {
        Self {
            pending_retry: Duration::from_millis(250),
            retry_batch: 32,
            cancel_retry: Duration::from_secs(2),
            replace_backoff: Duration::from_millis(500),
            replace_backoff_max: Duration::from_secs(30),
            report_backoff: Duration::from_millis(500),
            report_backoff_max: Duration::from_secs(10),
            output_cap: output_cap::DEFAULT_OUTPUT_CAP_MB * 1024 * 1024,
            // Past the failure detector's default `dead_after` (6 s): by then every peer that is
            // up has been heard from, or judged.
            view_warmup: Duration::from_secs(10),
        }
    }
}

/// Counters of what the engine refused or gave up, for `GET /v1/node` and the simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Reports and renewals refused by fencing.
    pub stale_reports: u64,
    /// Attempts given up (lease expired, overdue, reported lost) and placed again or failed.
    pub attempts_lost: u64,
    /// Of those, given up because their lease ran out.
    pub attempts_expired: u64,
    /// Of those, given up because they ran past `timeout_s` plus the grace.
    pub attempts_overdue: u64,
    /// Of those, given up because their host renewed them past `start_within` without
    /// reporting `Started`.
    pub attempts_unstarted: u64,
    /// Entries of a peer's answer about attempts that are not that peer's (another origin's
    /// attempts in a stop or cancel list): dropped.
    pub foreign_entries: u64,
    /// Heartbeat claims dropped as made up: ahead of what their owner could have counted.
    pub forged_heartbeats: u64,
    /// Times a host became suspect to this origin (an attempt it held went overdue, was renewed
    /// without starting, or its lease expired): it is asked last and chosen only when no other host offers, for
    /// `placement.suspect_for_s`.
    pub hosts_suspected: u64,
    /// New gossip records refused: the membership table was full of members worth as much.
    pub members_refused: u64,
    /// Members dropped from a full table for a newcomer worth more.
    pub members_evicted: u64,
    /// Ended attempts named in lease renewals past the per-message bound of store lookups:
    /// told to stop without the lookup (a host naming many ended attempts at once).
    pub unlooked_renewals: u64,
    /// New gossip records refused: their sender had introduced its budget of new identities.
    pub introductions_refused: u64,
    /// Result receipts refused: bad signature, not the attempt's host, digest or length unlike
    /// the output received, or unlike the result reported. Dropped, never fatal.
    pub bad_receipts: u64,
}

/// The machines an engine is made of, built by the driver from its config.
pub struct EngineParts<R: Rng> {
    /// Gossip and failure detection; its local record is this node's.
    pub membership: Membership<R>,
    /// The origin's negotiator.
    pub negotiator: Negotiator<R>,
    /// The capacity ledger.
    pub host: Host,
    /// Lease timing.
    pub leases: LeaseConfig,
    /// The rest of the timing.
    pub life: LifeConfig,
    /// Jitter for back-offs.
    pub rng: R,
    /// Signs this node's result receipts and verifies its hosts' (the same key as membership's).
    pub keyring: Box<dyn Keyring>,
}

impl<R: Rng> std::fmt::Debug for EngineParts<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineParts")
            .field("leases", &self.leases)
            .field("life", &self.life)
            .finish_non_exhaustive()
    }
}

/// A task found unfinished in the store at start, with its log's length.
#[derive(Debug, Clone)]
pub struct RecoveredTask {
    /// The task.
    pub task: Task,
    /// Bytes in its log.
    pub log_len: u64,
}

/// Where the answer to a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyTo {
    /// To a peer, through the driver.
    Remote(ReplyId),
    /// To this engine's own request (a node placing on itself, reporting to itself).
    Local(RequestId),
}

/// What a request this engine sent was for, to route its answer.
#[derive(Debug, Clone)]
enum Sent {
    Gossip(PeerId),
    Bid(PeerId, TaskId, Attempt),
    Commit(PeerId, TaskId, Attempt),
    Release,
    Report(TaskId, Attempt, ReportKind),
    Cancel(TaskId),
    /// A cancel of an attempt the origin gave up on: whatever the answer, the task moved on.
    GiveUp,
    /// A lease renewal sent to this origin.
    Renew(PeerId),
    /// A result receipt sent to the attempt's origin.
    Receipt(TaskId, Attempt),
}

/// What waits for a write to be durable.
#[derive(Debug, Clone, Copy)]
enum AfterWrite {
    /// Answer the report with `Ack` once durable.
    Ack(ReplyTo),
    /// Answer a log chunk: `Ack`, or `LogGap` relative to the attempt's first byte.
    Log { reply: ReplyTo, task: TaskId, log_base: u64 },
}

/// Work the engine gave itself, handled in order after the current input.
#[derive(Debug)]
enum Internal {
    Request { request: Request, reply: ReplyTo },
    Response { id: RequestId, response: Option<Response> },
}

/// One node's protocol engine.
pub struct Engine<R: Rng> {
    local: PeerId,
    membership: Membership<R>,
    negotiator: Negotiator<R>,
    host: Host,
    leases: Leases,
    life: LifeConfig,
    rng: R,
    outputs: VecDeque<Output>,
    inbox: VecDeque<Internal>,
    next_id: u64,
    sent: BTreeMap<RequestId, Sent>,
    writes: BTreeMap<WriteId, AfterWrite>,
    /// Origin side: this node's tasks that have not ended.
    active: BTreeMap<TaskId, Active>,
    /// Origin side: tasks waiting for a placement, highest priority first, then oldest.
    waiting: BTreeSet<(std::cmp::Reverse<i32>, TaskId)>,
    /// The waiting tasks by retry time, and by queue deadline.
    retries: BTreeSet<(Time, TaskId)>,
    queue_deadlines: BTreeSet<(Time, TaskId)>,
    /// Tasks with a cancel requested (until they end).
    cancelling: BTreeSet<TaskId>,
    /// Capacity may have freed somewhere: retry waiting tasks whose retry is due.
    wake_waiting: bool,
    /// Slots this node's tasks freed: each starts a waiting task at once.
    freed_slots: usize,
    /// Host side: attempts running or reporting here.
    runs: BTreeMap<(TaskId, Attempt), Run>,
    next_renewal: Time,
    /// When this engine started (its view was empty).
    started: Time,
    /// The generation of each peer's record last persisted.
    remembered: BTreeMap<PeerId, u64>,
    counters: EngineCounters,
    keyring: Box<dyn Keyring>,
}

impl<R: Rng> std::fmt::Debug for Engine<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("local", &self.local)
            .field("active", &self.active.len())
            .field("runs", &self.runs.len())
            .finish_non_exhaustive()
    }
}

impl<R: Rng> Engine<R> {
    /// An engine from its machines, taking over what the store kept: this node's unfinished
    /// tasks and the attempts it hosted.
    pub fn new(parts: EngineParts<R>, tasks: Vec<RecoveredTask>, runs: Vec<RunRecord>, now: Now) -> Self {
        let local = parts.membership.local().peer_id.clone();
        let mut engine = Self {
            local,
            membership: parts.membership,
            negotiator: parts.negotiator,
            host: parts.host,
            leases: Leases::new(parts.leases),
            life: parts.life,
            rng: parts.rng,
            outputs: VecDeque::new(),
            inbox: VecDeque::new(),
            next_id: 0,
            sent: BTreeMap::new(),
            writes: BTreeMap::new(),
            active: BTreeMap::new(),
            waiting: BTreeSet::new(),
            retries: BTreeSet::new(),
            queue_deadlines: BTreeSet::new(),
            cancelling: BTreeSet::new(),
            wake_waiting: true,
            freed_slots: 0,
            runs: BTreeMap::new(),
            next_renewal: now.time,
            started: now.time,
            remembered: BTreeMap::new(),
            counters: EngineCounters::default(),
            keyring: parts.keyring,
        };
        engine.recover_tasks(tasks, now);
        engine.recover_runs(runs, now);
        engine
    }

    /// This node's peer id.
    pub fn local(&self) -> &PeerId {
        &self.local
    }

    /// The membership view (read-only).
    pub fn membership(&self) -> &Membership<R> {
        &self.membership
    }

    /// The origin's negotiator (read-only): which hosts it holds as suspect.
    pub fn negotiator(&self) -> &Negotiator<R> {
        &self.negotiator
    }

    /// The capacity ledger (read-only).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The lease timing in force.
    pub fn lease_config(&self) -> LeaseConfig {
        self.leases.config()
    }

    /// What was refused or given up so far.
    pub fn counters(&self) -> EngineCounters {
        let bounds = self.membership.bound_stats();
        EngineCounters {
            forged_heartbeats: self.membership.forged_heartbeats(),
            members_refused: bounds.members_refused,
            members_evicted: bounds.members_evicted,
            introductions_refused: bounds.introductions_refused,
            ..self.counters
        }
    }

    /// The attempt of `task` this node holds a lease for, and its host: while one is held, the
    /// attempt is either reported on or given up when the lease runs out (the simulator's
    /// task-lost checker tells "awaiting detection" from "lost" by it).
    pub fn lease_holder(&self, task: TaskId) -> Option<(Attempt, &PeerId)> {
        self.leases.holder(task)
    }

    /// This node's tasks that have not ended.
    pub fn active_tasks(&self) -> impl Iterator<Item = &Task> {
        self.active.values().map(|a| &a.task)
    }

    /// Attempts held here: running (stopping ones included), or ended with a result not yet
    /// delivered.
    pub fn held_attempts(&self) -> usize {
        self.runs.len()
    }

    /// Gossip with `peer` (a discovery source listed it, or it connected).
    pub fn add_contact(&mut self, peer: PeerId, now: Now, archive: &dyn Archive) {
        self.membership.add_contact(peer, now.time);
        self.drive(now, archive);
    }

    /// Changes this node's own record (addresses, labels).
    pub fn update_local(
        &mut self,
        change: impl FnOnce(&mut crate::record::NodeRecord),
        now: Now,
        archive: &dyn Archive,
    ) {
        self.membership.update_local(change, now.time);
        self.drive(now, archive);
    }

    /// Takes no new work: bids are declined and peers see `draining`.
    pub fn drain(&mut self, now: Now, archive: &dyn Archive) {
        self.host.set_draining(true);
        self.membership.update_local(|r| r.draining = true, now.time);
        self.drive(now, archive);
    }

    /// Stopping: gives back every attempt still running (stopped, and reported lost so its
    /// origin places it elsewhere). Returns how many.
    pub fn hand_back(&mut self) -> usize {
        let mut stop = Vec::new();
        for (key, run) in self.runs.iter_mut().filter(|(_, r)| !r.exited && !r.abandoned) {
            run.handed_back = true;
            stop.push(*key);
        }
        for (task, attempt) in &stop {
            self.outputs.push_back(Output::StopAttempt { task: *task, attempt: *attempt });
        }
        stop.len()
    }

    /// Every attempt still running (the node is exiting: no process outlives it).
    pub fn stop_all(&mut self) {
        let keys: Vec<_> = self.runs.iter().filter(|(_, r)| !r.exited).map(|(k, _)| *k).collect();
        for (task, attempt) in keys {
            self.outputs.push_back(Output::StopAttempt { task, attempt });
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline of any part of the engine.
    pub fn poll_timeout(&self) -> Option<Time> {
        let waiting = self.next_waiting_deadline();
        let cancels = self
            .cancelling
            .iter()
            .filter_map(|id| self.active.get(id))
            .filter_map(|a| a.cancel_due(self.life.cancel_retry))
            .min();
        let reports = self.runs.values().filter(|r| r.waits()).filter_map(|r| r.retry_at).min();
        let renewal = self.runs.values().any(|r| !r.abandoned).then_some(self.next_renewal);
        [
            self.membership.poll_timeout(),
            self.negotiator.poll_timeout(),
            self.host.poll_timeout(),
            self.leases.poll_timeout(),
            waiting,
            cancels,
            reports,
            renewal,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves every part whose deadline passed.
    pub fn handle_timeout(&mut self, now: Now, archive: &dyn Archive) {
        self.membership.handle_timeout(now.time);
        self.negotiator.handle_timeout(now.time);
        self.host.handle_timeout(now.time);
        self.leases.handle_timeout(now.time);
        self.retry_pending(now);
        self.retry_cancels(now);
        self.pump_due_runs(now);
        if now.time >= self.next_renewal && self.runs.values().any(|r| !r.abandoned) {
            self.next_renewal = now.time + self.leases.config().renew_every;
            self.renew_leases();
        }
        self.drive(now, archive);
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input, now: Now, archive: &dyn Archive) {
        match input {
            Input::Request { from, request, reply } => {
                self.handle_request(&from, request, ReplyTo::Remote(reply), now, archive);
            }
            Input::Response { id, response } => self.handle_response(id, Some(response), now),
            Input::RequestFailed { id } => self.handle_response(id, None, now),
            Input::Persisted { id, result } => self.handle_persisted(id, result),
            Input::Submitted(task) => self.start_task(*task, now),
            Input::LogRead { task, attempt, offset, data } => {
                self.handle_log_read(task, attempt, offset, data, now)
            }
            Input::AttemptStarted { task, attempt, pgid } => self.attempt_started(task, attempt, pgid, now),
            Input::AttemptOutput { task, attempt, len } => self.attempt_output(task, attempt, len, now),
            Input::AttemptExited { task, attempt, exit, output_len } => {
                self.attempt_exited(task, attempt, exit, output_len, now);
            }
        }
        self.drive(now, archive);
    }

    /// Cancels a task of this node. `false`: it is not active here (ended, or never ours).
    pub fn cancel(&mut self, id: TaskId, now: Now, archive: &dyn Archive) -> bool {
        let found = self.cancel_task(id, now);
        self.drive(now, archive);
        found
    }

    fn next_request(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    fn next_write(&mut self) -> WriteId {
        self.next_id += 1;
        WriteId(self.next_id)
    }

    fn persist(&mut self, write: Write) {
        self.outputs.push_back(Output::Persist { id: None, write });
    }

    fn persist_then(&mut self, write: Write, then: AfterWrite) {
        let id = self.next_write();
        self.writes.insert(id, then);
        self.outputs.push_back(Output::Persist { id: Some(id), write });
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Sends `request` to `to`; to this node itself, it is handled here, after the current input.
    fn send(&mut self, to: &PeerId, request: Request, sent: Sent) {
        let id = self.next_request();
        self.sent.insert(id, sent);
        if *to == self.local {
            self.inbox.push_back(Internal::Request { request, reply: ReplyTo::Local(id) });
        } else {
            self.outputs.push_back(Output::Send { to: to.clone(), id, request });
        }
    }

    fn reply(&mut self, reply: ReplyTo, response: Option<Response>) {
        match reply {
            ReplyTo::Remote(reply) => self.outputs.push_back(Output::Respond { reply, response }),
            ReplyTo::Local(id) => self.inbox.push_back(Internal::Response { id, response }),
        }
    }

    fn reply_task(&mut self, reply: ReplyTo, response: Option<TaskResponse>) {
        self.reply(reply, response.map(Response::Task));
    }

    /// Runs every machine until all are quiet: internal requests, waiting tasks woken by freed
    /// capacity, and the machines' outputs.
    fn drive(&mut self, now: Now, archive: &dyn Archive) {
        loop {
            let mut progressed = false;
            while let Some(item) = self.inbox.pop_front() {
                progressed = true;
                match item {
                    Internal::Request { request, reply } => {
                        let local = self.local.clone();
                        self.handle_request(&local, request, reply, now, archive);
                    }
                    Internal::Response { id, response } => self.handle_response(id, response, now),
                }
            }
            if std::mem::take(&mut self.wake_waiting) {
                self.retry_pending(now);
            }
            if self.freed_slots > 0 {
                self.start_in_freed_slots(now);
            }
            self.sync_capacity(now);
            while let Some(out) = self.membership.poll_output() {
                progressed = true;
                self.on_membership_output(out, now);
            }
            while let Some(out) = self.negotiator.poll_output() {
                progressed = true;
                self.on_negotiator_output(out, now);
            }
            while let Some(event) = self.leases.poll_event() {
                progressed = true;
                self.on_lease_event(event, now);
            }
            if !progressed && self.inbox.is_empty() && !self.wake_waiting && self.freed_slots == 0 {
                break;
            }
        }
        self.sync_capacity(now);
    }

    fn sync_capacity(&mut self, now: Now) {
        let capacity = self.host.capacity();
        if self.membership.local().capacity != capacity {
            self.membership.update_local(|r| r.capacity = capacity, now.time);
        }
    }

    fn on_membership_output(&mut self, out: MembershipOutput, now: Now) {
        match out {
            MembershipOutput::Send { to, request } => {
                self.send(&to.clone(), Request::Gossip(request), Sent::Gossip(to));
            }
            MembershipOutput::Event(event) => {
                match &event {
                    MembershipEvent::Joined { record } | MembershipEvent::Updated { record } => {
                        // Remembered for redial after a restart; once per generation.
                        let generation = record.version.generation;
                        if self.remembered.get(&record.peer_id) != Some(&generation)
                            && let Some(signed) = self.membership.signed_record(&record.peer_id)
                        {
                            let write = Write::Peer(Box::new(signed.clone()));
                            self.remembered.insert(record.peer_id.clone(), generation);
                            self.persist(write);
                        }
                        // New capacity somewhere may unblock waiting tasks.
                        self.wake_waiting = true;
                    }
                    MembershipEvent::StateChanged { peer, to, .. } => {
                        if *to == PeerState::Dead {
                            // Its attempts turn unreachable, and are placed again only if it
                            // stays away for their `replace_after_s`: a partition is not a death.
                            self.leases.host_dead(peer, now.time);
                        }
                        if *to == PeerState::Alive {
                            self.wake_waiting = true;
                        }
                    }
                    MembershipEvent::Evicted { peer } => {
                        // Written only if it was remembered: the peers table stays within the cap.
                        if self.remembered.remove(peer).is_some() {
                            self.persist(Write::ForgetPeer(peer.clone()));
                        }
                    }
                    MembershipEvent::Rejected { .. } => {}
                }
                self.event(Event::Membership(event));
            }
        }
    }

    fn on_negotiator_output(&mut self, out: NegotiatorOutput, now: Now) {
        match out {
            NegotiatorOutput::Send { to, task, attempt, request } => {
                let sent = match &request {
                    PlaceRequest::Bid(_) => Sent::Bid(to.clone(), task, attempt),
                    PlaceRequest::Commit(_) => {
                        self.note_commit(task, attempt, &to);
                        Sent::Commit(to.clone(), task, attempt)
                    }
                    PlaceRequest::Release { .. } => Sent::Release,
                };
                self.send(&to, Request::Place(request), sent);
            }
            NegotiatorOutput::Event(event) => self.on_placement_event(event, now),
        }
    }

    /// A request from a peer, or from this node to itself.
    fn handle_request(
        &mut self,
        from: &PeerId,
        request: Request,
        reply: ReplyTo,
        now: Now,
        archive: &dyn Archive,
    ) {
        match request {
            Request::Gossip(request) => {
                let response = self.membership.handle_request(from, request, now.time);
                self.reply(reply, Some(Response::Gossip(response)));
            }
            Request::Place(request) => {
                let response = self.handle_place_request(from, request, now);
                self.reply(reply, Some(Response::Place(response)));
            }
            Request::Task(TaskRequest::Cancel { task, attempt }) => {
                let response = self.host_cancel(from, task, attempt);
                self.reply_task(reply, Some(response));
            }
            Request::Task(TaskRequest::Renew { attempts }) => {
                let response = self.handle_renew(from, attempts, now, archive);
                self.reply_task(reply, response);
            }
            Request::Task(report) => self.handle_report(from, report, reply, now, archive),
            Request::Receipt(ReceiptRequest { receipt }) => {
                let response = self.handle_receipt(from, receipt, archive);
                self.reply(reply, response.map(Response::Receipt));
            }
        }
    }

    /// A candidate's answer to a placement request, local or remote alike.
    fn handle_place_request(&mut self, from: &PeerId, request: PlaceRequest, now: Now) -> PlaceResponse {
        match request {
            PlaceRequest::Bid(bid) => {
                // The bid's origin org is a claim; the sender's signed gossip record is the truth.
                if *from != self.local {
                    let known_org = self.membership.peer(from).map(|p| p.record.org);
                    if known_org.as_ref() != Some(&bid.origin_org) {
                        tracing::info!(peer = %from.short(), claimed = %bid.origin_org, ?known_org,
                            "bid declined: org claim unverified");
                        let reason = match known_org {
                            // Not gossiped yet: a retry after the next round may succeed.
                            None => DeclineReason::Busy,
                            Some(_) => DeclineReason::Policy,
                        };
                        return PlaceResponse::Bid(BidResponse::Decline { reason });
                    }
                }
                PlaceResponse::Bid(self.host.handle_bid(from, &bid, now.time))
            }
            PlaceRequest::Commit(commit) => {
                // The spec comes from a peer: check it as strictly as the API does.
                if let Err(e) = commit.spec.validate() {
                    return PlaceResponse::Commit(CommitResponse::Rejected {
                        reason: format!("invalid spec: {e}"),
                    });
                }
                let response = self.host.handle_commit(from, &commit, now.time);
                if response == CommitResponse::Accepted {
                    self.start_run(from.clone(), commit, now);
                }
                PlaceResponse::Commit(response)
            }
            PlaceRequest::Release { reservation } => {
                self.host.handle_release(from, reservation, now.time);
                PlaceResponse::Released
            }
        }
    }

    /// The answer to a request this engine sent (`None`: it failed).
    fn handle_response(&mut self, id: RequestId, response: Option<Response>, now: Now) {
        let Some(sent) = self.sent.remove(&id) else { return };
        match (sent, response) {
            (Sent::Gossip(to), Some(Response::Gossip(r))) => {
                self.membership.handle_response(&to, r, now.time)
            }
            (Sent::Gossip(to), _) => self.membership.handle_send_failed(&to, now.time),
            (Sent::Bid(from, task, attempt), Some(Response::Place(PlaceResponse::Bid(r)))) => {
                if let BidResponse::Decline { reason } = &r
                    && !reason.is_transient()
                {
                    let reason = reason.clone();
                    self.event(Event::Declined { task, attempt, peer: from.clone(), reason });
                }
                self.negotiator.handle_bid_response(&from, task, attempt, r, now.time);
            }
            (Sent::Commit(from, task, attempt), Some(Response::Place(PlaceResponse::Commit(r)))) => {
                // A host that answers our commits is worth keeping in a full table.
                self.membership.mark_useful(&from);
                self.negotiator.handle_commit_response(&from, task, attempt, r, now.time);
            }
            (Sent::Bid(from, task, attempt) | Sent::Commit(from, task, attempt), other) => {
                if other.is_some() {
                    tracing::warn!(peer = %from.short(), ?other, "placement answer of the wrong kind");
                }
                self.negotiator.handle_request_failed(&from, task, attempt, now.time);
            }
            (Sent::Release | Sent::GiveUp, _) => {}
            (Sent::Report(task, attempt, kind), response) => {
                let response = match response {
                    Some(Response::Task(r)) => Some(r),
                    _ => None,
                };
                self.handle_report_answer(task, attempt, kind, response, now);
            }
            (Sent::Cancel(task), Some(Response::Task(r))) => self.handle_cancel_answer(task, &r, now),
            (Sent::Cancel(_), _) => {}
            (Sent::Renew(origin), Some(Response::Task(r))) => self.handle_leases_answer(&origin, r),
            (Sent::Renew(_), _) => {}
            (Sent::Receipt(task, attempt), response) => {
                let response = match response {
                    Some(Response::Receipt(r)) => Some(r),
                    _ => None,
                };
                self.handle_receipt_answer(task, attempt, response, now);
            }
        }
    }

    fn handle_persisted(&mut self, id: WriteId, result: Persisted) {
        let Some(then) = self.writes.remove(&id) else { return };
        match then {
            AfterWrite::Ack(reply) => {
                let response = (result != Persisted::Failed).then_some(TaskResponse::Ack);
                self.reply_task(reply, response);
            }
            AfterWrite::Log { reply, task, log_base } => {
                let response = match result {
                    Persisted::Log { len } => {
                        if let Some(a) = self.active.get_mut(&task) {
                            a.log_len = a.log_len.max(len);
                        }
                        Some(TaskResponse::Ack)
                    }
                    Persisted::Done => Some(TaskResponse::Ack),
                    Persisted::LogGap { have } => {
                        Some(TaskResponse::LogGap { have: have.saturating_sub(log_base) })
                    }
                    Persisted::Failed => None,
                };
                self.reply_task(reply, response);
            }
        }
    }
}

/// The placement facts of a negotiation's winner, as a task records them.
fn placement_of(host: PlacedOn) -> crate::task::TaskPlacement {
    crate::task::TaskPlacement { peer_id: host.peer, org: host.org, name: host.name }
}

/// An attempt's outcome in the words a task's history keeps.
fn outcome_words(outcome: &Outcome) -> String {
    match (outcome.exit_code, &outcome.error) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(e)) => e.clone(),
        (None, None) => "ended".into(),
    }
}
