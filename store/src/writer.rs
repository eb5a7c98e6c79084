//! The single writer thread: takes queued writes in submission order, applies as many as are
//! waiting in one redb write transaction (group commit), commits durably, then broadcasts what
//! changed and answers every write.
//!
//! It must never answer `Ok` before the commit that holds the write returned, never broadcast a
//! change that was not committed, and never let one write's failure half-apply: a write either
//! lands whole in a committed transaction or is answered with an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use orgmesh_protocol::engine::new_log_bytes;
use orgmesh_protocol::{PeerId, SignedRecord, Task, TaskId, TaskStatus, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use tokio::sync::{broadcast, oneshot};

use crate::schema::{
    self, COUNTS, EVENTS, IDEMPOTENCY, INFO, LOG_LEN, LOGS, MAX_LOG_CHUNK, PEERS, RUNS, SCHEMA_KEY,
    SCHEMA_VERSION, TASK_STATUS, TASKS, db_err,
};
use crate::{
    AppendError, CreateOutcome, HostedRun, Idempotency, NewEvent, Notification, StoreError, StoredEvent,
};

/// Most writes applied in one transaction; bounds the latency one commit adds to the first write.
const MAX_BATCH_OPS: usize = 1024;
/// Roughly the most payload bytes applied in one transaction, for the same reason.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// One write as submitted by a `Store` method.
#[derive(Debug)]
pub(crate) enum Request {
    CreateTask { task: Box<Task>, idempotency: Option<Idempotency>, event_data: String },
    PutTask { task: Box<Task>, events: Vec<NewEvent> },
    AppendEvents(Vec<NewEvent>),
    AppendLog { task: TaskId, offset: u64, data: Vec<u8> },
    PutPeer(Box<SignedRecord>),
    RemovePeer(PeerId),
    PutRun(Box<HostedRun>),
    RemoveRun(TaskId, orgmesh_protocol::Attempt),
}

/// Where a write's answer goes; the variant matches the request's kind.
#[derive(Debug)]
pub(crate) enum Reply {
    Create(oneshot::Sender<Result<CreateOutcome, StoreError>>),
    Unit(oneshot::Sender<Result<(), StoreError>>),
    Log(oneshot::Sender<Result<Result<u64, AppendError>, StoreError>>),
}

/// What a write did, before its transaction committed.
enum Outcome {
    Create(CreateOutcome),
    Unit,
    Log(Result<u64, AppendError>),
}

impl Reply {
    fn resolve(self, outcome: Outcome) {
        // A send fails only when the caller dropped its `Pending`, which it may: ignore.
        match (self, outcome) {
            (Reply::Create(tx), Outcome::Create(o)) => drop(tx.send(Ok(o))),
            (Reply::Unit(tx), Outcome::Unit) => drop(tx.send(Ok(()))),
            (Reply::Log(tx), Outcome::Log(r)) => drop(tx.send(Ok(r))),
            (reply, _) => {
                reply.fail(StoreError::Io("internal error: answer does not match the request".into()))
            }
        }
    }

    fn fail(self, e: StoreError) {
        match self {
            Reply::Create(tx) => drop(tx.send(Err(e))),
            Reply::Unit(tx) => drop(tx.send(Err(e))),
            Reply::Log(tx) => drop(tx.send(Err(e))),
        }
    }
}

/// A queued write and where its answer goes.
#[derive(Debug)]
pub(crate) struct Op {
    pub(crate) req: Request,
    pub(crate) reply: Reply,
}

impl Op {
    /// Approximate payload size, to cap a batch's bytes.
    fn weight(&self) -> usize {
        let sum = |evs: &[NewEvent]| evs.iter().map(|e| e.kind.len() + e.data.len()).sum::<usize>();
        match &self.req {
            Request::CreateTask { event_data, .. } => 1024 + event_data.len(),
            Request::PutTask { events, .. } => 1024 + sum(events),
            Request::AppendEvents(evs) => sum(evs),
            Request::AppendLog { data, .. } => data.len(),
            Request::PutPeer(_) => 1024,
            Request::RemovePeer(_) => 64,
            Request::PutRun(run) => 1024 + run.legacy_output.len(),
            Request::RemoveRun(..) => 64,
        }
    }
}

/// Called with each committed batch's duration (begin to commit, retries included).
pub(crate) type CommitObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

/// Counters of the writer's work, shared with `Store::writer_stats`.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) commits: AtomicU64,
    pub(crate) ops: AtomicU64,
    pub(crate) largest_batch: AtomicU64,
    /// Set once by `Store::observe_commits`; read by the writer after each commit.
    pub(crate) observer: std::sync::OnceLock<CommitObserver>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("commits", &self.commits)
            .field("ops", &self.ops)
            .field("largest_batch", &self.largest_batch)
            .field("observer", &self.observer.get().is_some())
            .finish()
    }
}

/// Creates every table, checks the layout version, and returns the next event sequence number.
/// Runs once at open, before the writer starts, so read transactions always find every table.
pub(crate) fn init(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut info = txn.open_table(INFO).map_err(db_err)?;
        let found = info.get(SCHEMA_KEY).map_err(db_err)?.map(|v| v.value());
        match found {
            None => drop(info.insert(SCHEMA_KEY, SCHEMA_VERSION).map_err(db_err)?),
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "file has layout version {other}, this build reads version {SCHEMA_VERSION}"
                )));
            }
        }
        Tables::open(&txn)?;
    }
    txn.commit().map_err(db_err)?;
    let read = db.begin_read().map_err(db_err)?;
    let events = read.open_table(EVENTS).map_err(db_err)?;
    let last = events.last().map_err(db_err)?.map_or(0, |(k, _)| k.value());
    Ok(last + 1)
}

/// Starts the writer thread. It runs until every sender of `ops` is dropped, finishing what is
/// queued first.
pub(crate) fn spawn(
    db: Arc<Database>,
    ops: Receiver<Op>,
    notify: broadcast::Sender<Notification>,
    next_seq: u64,
    stats: Arc<Stats>,
) -> std::io::Result<JoinHandle<()>> {
    let writer = Writer { db, ops, notify, next_seq, stats };
    std::thread::Builder::new().name("orgmesh-store-writer".into()).spawn(move || writer.run())
}

struct Writer {
    db: Arc<Database>,
    ops: Receiver<Op>,
    notify: broadcast::Sender<Notification>,
    /// The sequence number the next event gets; only advanced once its commit succeeded.
    next_seq: u64,
    stats: Arc<Stats>,
}

/// How one attempt at committing a batch ended.
enum Attempt {
    /// Committed; one outcome per write not already failed.
    Committed(Vec<Option<Outcome>>),
    /// Write `i` failed on its own: the transaction was abandoned, the rest must be retried.
    OpFailed(usize, StoreError),
    /// The transaction itself failed (begin or commit): every write in it failed.
    TxnFailed(StoreError),
}

impl Writer {
    fn run(mut self) {
        // Block for the first write, then take whatever else is already queued: writes that
        // arrive during one commit's fsync share the next one.
        while let Ok(first) = self.ops.recv() {
            let mut bytes = first.weight();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
                match self.ops.try_recv() {
                    Ok(op) => {
                        bytes += op.weight();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        tracing::debug!("store writer stopped: every handle was dropped");
    }

    fn commit_batch(&mut self, batch: Vec<Op>) {
        let now = Timestamp(now_ms());
        // Only measured: the observer cannot change what is committed or when it is answered.
        let started = std::time::Instant::now();
        let mut failed: Vec<Option<StoreError>> = vec![None; batch.len()];
        // Each retry drops one failed write, so this ends after at most `batch.len()` retries;
        // retries only happen when a write hits an error of its own, which is rare.
        let outcomes = loop {
            let mut seq = self.next_seq;
            let mut notes = Vec::new();
            match self.attempt(&batch, &failed, &mut seq, now, &mut notes) {
                Attempt::Committed(outcomes) => {
                    self.next_seq = seq;
                    // Broadcast before answering: once a write's `Pending` resolves, every
                    // receiver subscribed earlier already holds its notifications.
                    for note in notes {
                        // No receivers is fine: nobody is listening.
                        let _ = self.notify.send(note);
                    }
                    break outcomes;
                }
                Attempt::OpFailed(i, e) => {
                    tracing::warn!(error = %e, "store write refused; retrying the rest of its batch");
                    failed[i] = Some(e);
                }
                Attempt::TxnFailed(e) => {
                    tracing::error!(error = %e, writes = batch.len(), "store commit failed");
                    let e = match e {
                        StoreError::Io(_) => e,
                        other => StoreError::Io(other.to_string()),
                    };
                    for (op, f) in batch.into_iter().zip(failed) {
                        op.reply.fail(f.unwrap_or_else(|| e.clone()));
                    }
                    return;
                }
            }
        };
        if let Some(observe) = self.stats.observer.get() {
            observe(started.elapsed());
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.ops.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats.largest_batch.fetch_max(batch.len() as u64, Ordering::Relaxed);
        for ((op, f), outcome) in batch.into_iter().zip(failed).zip(outcomes) {
            match (f, outcome) {
                (Some(e), _) => op.reply.fail(e),
                (None, Some(o)) => op.reply.resolve(o),
                (None, None) => op.reply.fail(StoreError::Io("internal error: write was not applied".into())),
            }
        }
    }

    /// Applies every write not yet failed in one transaction and commits it.
    fn attempt(
        &self,
        batch: &[Op],
        failed: &[Option<StoreError>],
        seq: &mut u64,
        now: Timestamp,
        notes: &mut Vec<Notification>,
    ) -> Attempt {
        let txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return Attempt::TxnFailed(db_err(e)),
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut tables = match Tables::open(&txn) {
                Ok(t) => t,
                Err(e) => return Attempt::TxnFailed(e),
            };
            for (i, (op, f)) in batch.iter().zip(failed).enumerate() {
                if f.is_some() {
                    outcomes.push(None);
                    continue;
                }
                match apply(&mut tables, &op.req, seq, now, notes) {
                    Ok(o) => outcomes.push(Some(o)),
                    Err(e) => {
                        // Dropping the transaction aborts it: nothing of this attempt lands.
                        drop(tables);
                        drop(txn);
                        return Attempt::OpFailed(i, e);
                    }
                }
            }
        }
        // `Durability::Immediate` is redb's default: commit returns after the fsync.
        match txn.commit() {
            Ok(()) => Attempt::Committed(outcomes),
            Err(e) => Attempt::TxnFailed(db_err(e)),
        }
    }
}

/// Every table, opened once per transaction.
struct Tables<'txn> {
    tasks: Table<'txn, u128, &'static [u8]>,
    task_status: Table<'txn, (u8, u128), ()>,
    counts: Table<'txn, u8, u64>,
    events: Table<'txn, u64, &'static [u8]>,
    logs: Table<'txn, (u128, u64), &'static [u8]>,
    log_len: Table<'txn, u128, u64>,
    peers: Table<'txn, &'static str, &'static [u8]>,
    idempotency: Table<'txn, &'static str, ([u8; 32], u128)>,
    runs: Table<'txn, (u128, u32), &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            tasks: txn.open_table(TASKS).map_err(db_err)?,
            task_status: txn.open_table(TASK_STATUS).map_err(db_err)?,
            counts: txn.open_table(COUNTS).map_err(db_err)?,
            events: txn.open_table(EVENTS).map_err(db_err)?,
            logs: txn.open_table(LOGS).map_err(db_err)?,
            log_len: txn.open_table(LOG_LEN).map_err(db_err)?,
            peers: txn.open_table(PEERS).map_err(db_err)?,
            idempotency: txn.open_table(IDEMPOTENCY).map_err(db_err)?,
            runs: txn.open_table(RUNS).map_err(db_err)?,
        })
    }
}

/// Applies one write. Logical refusals (an idempotency conflict, a log gap) are checked before
/// anything is written, so they return an outcome with nothing to undo; an `Err` means the
/// transaction must be abandoned because this write may be half-applied.
fn apply(
    t: &mut Tables<'_>,
    req: &Request,
    seq: &mut u64,
    now: Timestamp,
    notes: &mut Vec<Notification>,
) -> Result<Outcome, StoreError> {
    match req {
        Request::CreateTask { task, idempotency, event_data } => {
            if let Some(idem) = idempotency {
                let used = t.idempotency.get(idem.key.as_str()).map_err(db_err)?.map(|v| v.value());
                if let Some((hash, id)) = used {
                    if hash != idem.body_hash {
                        return Ok(Outcome::Create(CreateOutcome::Conflict {
                            existing: TaskId::from_u128(id),
                        }));
                    }
                    let existing = match t.tasks.get(id).map_err(db_err)? {
                        Some(v) => schema::decode_task(v.value())?,
                        None => {
                            return Err(StoreError::Corrupt(format!(
                                "idempotency key {:?} names missing task {}",
                                idem.key,
                                TaskId::from_u128(id)
                            )));
                        }
                    };
                    return Ok(Outcome::Create(CreateOutcome::Existing(Box::new(existing))));
                }
            }
            // An id already stored (vanishingly rare with 80 random bits) is replaced as by
            // `put_task`, so the status index and counts stay right either way.
            write_task(t, task, notes)?;
            if let Some(idem) = idempotency {
                t.idempotency
                    .insert(idem.key.as_str(), (idem.body_hash, task.id.as_u128()))
                    .map_err(db_err)?;
            }
            append_event(t, seq, now, "task.created", event_data, notes)?;
            Ok(Outcome::Create(CreateOutcome::Created))
        }
        Request::PutTask { task, events } => {
            write_task(t, task, notes)?;
            for e in events {
                append_event(t, seq, now, &e.kind, &e.data, notes)?;
            }
            Ok(Outcome::Unit)
        }
        Request::AppendEvents(events) => {
            for e in events {
                append_event(t, seq, now, &e.kind, &e.data, notes)?;
            }
            Ok(Outcome::Unit)
        }
        Request::AppendLog { task, offset, data } => {
            Ok(Outcome::Log(append_log(t, *task, *offset, data, notes)?))
        }
        Request::PutPeer(record) => {
            let bytes = schema::encode("peer record", record.as_ref())?;
            t.peers.insert(record.record.peer_id.as_str(), bytes.as_slice()).map_err(db_err)?;
            Ok(Outcome::Unit)
        }
        Request::RemovePeer(peer) => {
            t.peers.remove(peer.as_str()).map_err(db_err)?;
            Ok(Outcome::Unit)
        }
        Request::PutRun(run) => {
            let bytes = schema::encode("hosted run", run.as_ref())?;
            t.runs.insert((run.task.as_u128(), run.attempt.0), bytes.as_slice()).map_err(db_err)?;
            Ok(Outcome::Unit)
        }
        Request::RemoveRun(task, attempt) => {
            t.runs.remove((task.as_u128(), attempt.0)).map_err(db_err)?;
            Ok(Outcome::Unit)
        }
    }
}

/// Stores a task record and moves its status index entry and counts from its old status (if
/// any) to its new one.
fn write_task(t: &mut Tables<'_>, task: &Task, notes: &mut Vec<Notification>) -> Result<(), StoreError> {
    let id = task.id.as_u128();
    let bytes = schema::encode("task", task)?;
    let old = t.tasks.insert(id, bytes.as_slice()).map_err(db_err)?.map(|v| schema::decode_task(v.value()));
    let old_statuses = match old {
        None => Vec::new(),
        Some(Ok(old)) => vec![old.status],
        Some(Err(e)) => {
            // The record being replaced does not decode, so its status is unknown: ask the
            // index, which has one cheap key per status to probe. Overwriting heals the record.
            tracing::warn!(task = %task.id, error = %e, "replacing a corrupt task record");
            let mut found = Vec::new();
            for s in TaskStatus::ALL {
                if t.task_status.get((s.code(), id)).map_err(db_err)?.is_some() {
                    found.push(s);
                }
            }
            found
        }
    };
    let new = task.status;
    for old in old_statuses.iter().copied().filter(|&s| s != new) {
        t.task_status.remove((old.code(), id)).map_err(db_err)?;
        add_count(t, old, -1)?;
    }
    if !old_statuses.contains(&new) {
        t.task_status.insert((new.code(), id), ()).map_err(db_err)?;
        add_count(t, new, 1)?;
    }
    notes.push(Notification::Task { task: task.id, status: new });
    Ok(())
}

fn add_count(t: &mut Tables<'_>, status: TaskStatus, delta: i64) -> Result<(), StoreError> {
    let n = t.counts.get(status.code()).map_err(db_err)?.map_or(0, |v| v.value());
    let n = n.saturating_add_signed(delta);
    t.counts.insert(status.code(), n).map_err(db_err)?;
    Ok(())
}

fn append_event(
    t: &mut Tables<'_>,
    seq: &mut u64,
    now: Timestamp,
    kind: &str,
    data: &str,
    notes: &mut Vec<Notification>,
) -> Result<(), StoreError> {
    let event = StoredEvent { seq: *seq, kind: kind.to_owned(), at: now, data: data.to_owned() };
    let bytes = schema::encode("event", &event)?;
    t.events.insert(event.seq, bytes.as_slice()).map_err(db_err)?;
    *seq += 1;
    notes.push(Notification::Event(Arc::new(event)));
    Ok(())
}

fn append_log(
    t: &mut Tables<'_>,
    task: TaskId,
    offset: u64,
    data: &[u8],
    notes: &mut Vec<Notification>,
) -> Result<Result<u64, AppendError>, StoreError> {
    let id = task.as_u128();
    let have = t.log_len.get(id).map_err(db_err)?.map_or(0, |v| v.value());
    let rest = match new_log_bytes(have, offset, data) {
        Ok([]) => return Ok(Ok(have)),
        Ok(rest) => rest,
        Err(have) => return Ok(Err(AppendError::Gap { have, offset })),
    };
    let mut end = have;
    for chunk in rest.chunks(MAX_LOG_CHUNK) {
        t.logs.insert((id, end), chunk).map_err(db_err)?;
        end += chunk.len() as u64;
    }
    t.log_len.insert(id, end).map_err(db_err)?;
    notes.push(Notification::Log { task, len: end });
    Ok(Ok(end))
}

fn now_ms() -> u64 {
    // A clock before 1970 is a broken host; record 0 rather than refuse the write.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
