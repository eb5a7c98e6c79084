//! orgmesh's durable state, in one redb file: tasks (with a status index), the per-node event log
//! (monotonic sequence numbers), task output logs, known peers, idempotency keys, and small metadata.
//!
//! Reads are MVCC read transactions from any thread. Every write goes through one writer thread
//! that groups whatever is queued into one transaction (group commit), so many small durable
//! writes cost one fsync. A write's future resolves only after its transaction committed: callers
//! that promise durability (a 202, an ack to a peer) await it; others may drop it, and writes
//! still apply in submission order. After each commit the writer broadcasts [`Notification`]s.
//!
//! This crate never decides task lifecycles; it stores what the node decided.
//!
//! # Durability and failure semantics
//! - A [`Pending`] resolves `Ok` only after the redb transaction holding its write committed
//!   with `Durability::Immediate` (the fsync returned). A crash, power loss included, loses no
//!   write that resolved `Ok`; writes not yet resolved may be lost, and if one of them survives,
//!   every write submitted before it through the same handle survived too (writes apply in
//!   submission order, and one batch commits all or nothing).
//! - Each write is atomic: a task record, its status index entry, the status counts and its
//!   events land together or not at all.
//! - A logical refusal ([`CreateOutcome::Conflict`], [`AppendError::Gap`]) concerns only that
//!   write; the others in its batch commit. A write that fails on its own (a corrupt value in
//!   its way, a value too large) is answered with its error and the rest of its batch is
//!   retried without it. If the commit itself fails, every write in the batch gets
//!   [`StoreError::Io`] and none of it is visible; after an I/O error redb may refuse further
//!   writes, and the node should restart.
//! - Notifications are sent after the commit and before the writes are answered, so a receiver
//!   subscribed before a write sees its notification by the time the write resolves.
//! - Dropping the last [`Store`] clone closes the write queue, waits for the writer to commit
//!   what was queued, and closes the file: the same path can be reopened right after.
//!
//! # Layout
//! - `schema`: every table, with its key and value encodings.
//! - `writer`: the batching writer thread (group commit, ordering, notifications).
//! - `read`: read queries over MVCC snapshots.
//! - this file: the public types, [`Store`] and its read-only view [`StoreReader`], whose
//!   methods are thin wrappers.
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use orgmesh_store::{NewEvent, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(&dir.path().join("orgmesh.redb"))?;
//! let event = NewEvent { kind: "node.started".into(), data: "{}".into() };
//! store.append_events(vec![event]).await?; // durable once this resolves
//! assert_eq!(store.last_seq()?, 1);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod read;
mod schema;
mod writer;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use orgmesh_protocol::{Attempt, PeerId, SignedRecord, Task, TaskId, TaskStatus, Timestamp};
use redb::Database;
use tokio::sync::{broadcast, oneshot};

use crate::writer::{Op, Reply, Request};

/// Capacity of the notification channel; a receiver further behind than this lags.
const NOTIFY_CAPACITY: usize = 4096;
/// redb's page cache. Its default (1 GiB) is more than a node should hold for bookkeeping; the
/// hot data (recent tasks, the event log's tail) fits comfortably in this.
const CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Errors from the store. Messages are for people; no redb types leak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open store at {path}: {reason}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A read or write failed in redb or the file system.
    #[error("store I/O failed: {0}")]
    Io(String),
    /// A stored value did not decode (corruption or an incompatible version).
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    /// The writer thread is gone (the store is shutting down).
    #[error("store is closed")]
    Closed,
}

/// An event to append to the event log. `data` is JSON text, chosen by the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// `task.created`, `peer.dead`, ...
    pub kind: String,
    /// JSON text.
    pub data: String,
}

/// An event as stored, with its sequence number (1, 2, 3, ... with no gaps).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// Position in the node's event log.
    pub seq: u64,
    /// Event name.
    pub kind: String,
    /// When it was appended.
    pub at: Timestamp,
    /// JSON text.
    pub data: String,
}

/// Host side: an attempt this node runs for an origin, kept so that a restart knows what it was
/// doing. Written when the attempt starts and again when it ends (with its result and how much of
/// its output the origin had acknowledged), removed once the origin has the result. The output
/// itself is in the attempt's spool file, which the node finds from `task` and `attempt`.
///
/// Encoded by position (postcard): the fields keep the order and types of the records written
/// before the spool existed, so those still decode (`legacy_output` holding their bytes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostedRun {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: Attempt,
    /// The node that placed it, which gets the reports.
    pub origin: PeerId,
    /// The process group of the attempt's process, so a restarted node can stop an orphan.
    pub pgid: Option<i32>,
    /// How the attempt ended, once it has.
    pub outcome: Option<RunOutcome>,
    /// Output kept in the record itself: only records written before the spool existed have
    /// any (the bytes from `acked` on, not yet acknowledged then). Written empty.
    pub legacy_output: Vec<u8>,
    /// Bytes of the attempt's output the origin had acknowledged when this was written.
    pub acked: u64,
    /// What the attempt's result receipt states beyond its outcome, once it ended (none in
    /// records written before receipts, which decode all the same).
    pub evidence: Option<RunEvidence>,
}

/// What a hosted attempt's receipt needs that its outcome lacks: kept with the run so a
/// restarted host still sends it. The store's own type, like [`RunOutcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunEvidence {
    /// SHA-256 of the attempt's whole output.
    pub output_sha256: [u8; 32],
    /// Bytes that digest covers.
    pub output_len: u64,
    /// Wall-clock milliseconds it ran.
    pub wall_ms: u64,
    /// CPU milliseconds, if measured.
    pub cpu_ms: Option<u64>,
    /// Peak memory bytes, if measured.
    pub peak_memory_bytes: Option<u64>,
    /// When it ended, unix ms.
    pub finished_at_ms: u64,
}

impl From<orgmesh_protocol::engine::Evidence> for RunEvidence {
    fn from(e: orgmesh_protocol::engine::Evidence) -> Self {
        Self {
            output_sha256: e.output_sha256,
            output_len: e.output_len,
            wall_ms: e.usage.wall_ms,
            cpu_ms: e.usage.cpu_ms,
            peak_memory_bytes: e.usage.peak_memory_bytes,
            finished_at_ms: e.finished_at_ms,
        }
    }
}

impl From<RunEvidence> for orgmesh_protocol::engine::Evidence {
    fn from(e: RunEvidence) -> Self {
        Self {
            output_sha256: e.output_sha256,
            output_len: e.output_len,
            usage: orgmesh_protocol::receipt::Usage {
                wall_ms: e.wall_ms,
                cpu_ms: e.cpu_ms,
                peak_memory_bytes: e.peak_memory_bytes,
            },
            finished_at_ms: e.finished_at_ms,
        }
    }
}

/// How a hosted attempt ended, as the store keeps it. The store's own type, not the wire's
/// (`wire::task::Outcome`), so a change to the protocol never changes what is on disk unnoticed;
/// same fields in the same order as the records written when they were one type, so those decode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunOutcome {
    /// The exit code, if it exited by itself.
    pub exit_code: Option<i32>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Whether it was cancelled.
    pub cancelled: bool,
    /// How long its output is.
    pub log_len: u64,
    /// Whether its host lost it (restarted, handed it back).
    pub lost: bool,
}

impl From<orgmesh_protocol::wire::task::Outcome> for RunOutcome {
    fn from(o: orgmesh_protocol::wire::task::Outcome) -> Self {
        Self {
            exit_code: o.exit_code,
            error: o.error,
            cancelled: o.cancelled,
            log_len: o.log_len,
            lost: o.lost,
        }
    }
}

impl From<RunOutcome> for orgmesh_protocol::wire::task::Outcome {
    fn from(o: RunOutcome) -> Self {
        Self {
            exit_code: o.exit_code,
            error: o.error,
            cancelled: o.cancelled,
            log_len: o.log_len,
            lost: o.lost,
        }
    }
}

/// An idempotency key and the hash of the request body it was first used with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// SHA-256 of the canonical request body.
    pub body_hash: [u8; 32],
}

/// What `create_task` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored, with its `task.created` event.
    Created,
    /// The idempotency key was used before with the same body: this is that task (nothing stored).
    Existing(Box<Task>),
    /// The idempotency key was used before with a different body (nothing stored).
    Conflict {
        /// The task the key belongs to.
        existing: TaskId,
    },
}

/// Why a log append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The chunk starts after the end of what is stored: earlier bytes are missing.
    #[error("log gap: have {have} bytes, chunk starts at {offset}")]
    Gap {
        /// Bytes stored.
        have: u64,
        /// Where the chunk started.
        offset: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What changed, broadcast after each commit.
#[derive(Debug, Clone)]
pub enum Notification {
    /// An event was appended.
    Event(std::sync::Arc<StoredEvent>),
    /// A task's log grew to `len` bytes.
    Log {
        /// The task.
        task: TaskId,
        /// Its log's length now.
        len: u64,
    },
    /// A task record was written with this status.
    Task {
        /// The task.
        task: TaskId,
        /// Its status now.
        status: TaskStatus,
    },
}

/// A write in flight: resolves once committed. Dropping it does not cancel the write.
#[derive(Debug)]
pub struct Pending<T> {
    rx: oneshot::Receiver<Result<T, StoreError>>,
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Counts of tasks by status.
pub type StatusCounts = std::collections::BTreeMap<TaskStatus, u64>;

/// Counters of the writer's work since open, for metrics and to see group commit at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes those transactions held (`ops / commits` is the mean batch size).
    pub ops: u64,
    /// Most writes committed in one transaction.
    pub largest_batch: u64,
}

/// A handle to the store; cheap to clone. Its read queries are those of the read-only view it
/// derefs to ([`StoreReader`]), so the two never drift apart; the methods here write, or read
/// what only the node itself needs.
///
/// Dropping the last clone waits (briefly, on the dropping thread) for the writer to commit what
/// is queued, then closes the file.
#[derive(Clone)]
pub struct Store {
    reader: StoreReader,
}

/// What every clone of a [`Store`] shares. Its drop is the store's shutdown.
struct Shared {
    db: Arc<Database>,
    /// The writer's queue; `None` only while dropping.
    ops: Option<mpsc::Sender<Op>>,
    notify: broadcast::Sender<Notification>,
    stats: Arc<writer::Stats>,
    writer: Option<JoinHandle<()>>,
    /// The file, for messages.
    name: String,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain it and exit; joining it means its handle on
        // the database is gone too, so the file is closed (and unlocked) when this returns.
        self.ops = None;
        let Some(writer) = self.writer.take() else { return };
        if writer.join().is_err() {
            tracing::error!(store = %self.name, "store writer thread panicked");
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.shared().name).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let open_err = |reason: String| StoreError::Open { path: name.clone(), reason };
        let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(path).map_err(|e| {
            open_err(match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "the file is already open (another orgmesh process, or another Store in this one)".into()
                }
                other => other.to_string(),
            })
        })?;
        Store::start(db, name.clone()).map_err(|e| match e {
            StoreError::Open { .. } => e,
            other => open_err(other.to_string()),
        })
    }

    /// Stores a new task and its `task.created` event (`data` = `created_event_data`), unless
    /// `idempotency` names a key already used. Atomic with the key check.
    pub fn create_task(
        &self,
        task: Task,
        idempotency: Option<Idempotency>,
        created_event_data: String,
    ) -> Pending<CreateOutcome> {
        let req = Request::CreateTask { task: Box::new(task), idempotency, event_data: created_event_data };
        self.submit(req, Reply::Create)
    }

    /// Writes a task record (replacing the previous one, keeping the status index right) and
    /// appends `events`, in one transaction.
    pub fn put_task(&self, task: Task, events: Vec<NewEvent>) -> Pending<()> {
        self.submit(Request::PutTask { task: Box::new(task), events }, Reply::Unit)
    }

    /// Appends events that concern no task record.
    pub fn append_events(&self, events: Vec<NewEvent>) -> Pending<()> {
        self.submit(Request::AppendEvents(events), Reply::Unit)
    }

    /// Appends output bytes at `offset` of `task`'s log. Bytes before the current end are
    /// skipped (a resend is harmless); a chunk starting after the end is refused with `Gap`.
    /// Resolves to the log's new length.
    pub fn append_log(&self, task: TaskId, offset: u64, data: Vec<u8>) -> Pending<Result<u64, AppendError>> {
        self.submit(Request::AppendLog { task, offset, data }, Reply::Log)
    }

    /// Remembers a peer's latest record, so a restarted node can redial it.
    pub fn put_peer(&self, record: SignedRecord) -> Pending<()> {
        self.submit(Request::PutPeer(Box::new(record)), Reply::Unit)
    }

    /// Host side: records an attempt this node runs (replacing the previous record of it).
    pub fn put_run(&self, run: HostedRun) -> Pending<()> {
        self.submit(Request::PutRun(Box::new(run)), Reply::Unit)
    }

    /// Host side: forgets an attempt whose result the origin has.
    pub fn remove_run(&self, task: TaskId, attempt: Attempt) -> Pending<()> {
        self.submit(Request::RemoveRun(task, attempt), Reply::Unit)
    }

    /// Host side: every attempt recorded by `put_run` and not removed.
    pub fn runs(&self) -> Result<Vec<HostedRun>, StoreError> {
        read::runs(&self.shared().db)
    }

    /// Every task not in a terminal status (for recovery after a restart), oldest first.
    pub fn unfinished_tasks(&self) -> Result<Vec<Task>, StoreError> {
        read::unfinished_tasks(&self.shared().db)
    }

    /// How many tasks there are in each status.
    pub fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        read::status_counts(&self.shared().db)
    }

    /// Every remembered peer record.
    pub fn peers(&self) -> Result<Vec<SignedRecord>, StoreError> {
        read::peers(&self.shared().db)
    }

    /// Forgets a peer.
    pub fn remove_peer(&self, peer: &PeerId) -> Pending<()> {
        self.submit(Request::RemovePeer(peer.clone()), Reply::Unit)
    }

    /// Calls `observe` with the duration of every group commit from now on (for metrics). Only
    /// the first observer set on a store is kept; returns whether this one was. `observe` runs
    /// on the writer thread after the commit and before the writes are answered, so it must be
    /// quick (a histogram update) and must not touch the store.
    pub fn observe_commits(&self, observe: impl Fn(std::time::Duration) + Send + Sync + 'static) -> bool {
        self.shared().stats.observer.set(Box::new(observe)).is_ok()
    }

    /// Counters of the writer's work since open.
    pub fn writer_stats(&self) -> WriterStats {
        let s = &self.shared().stats;
        WriterStats {
            commits: s.commits.load(Ordering::Relaxed),
            ops: s.ops.load(Ordering::Relaxed),
            largest_batch: s.largest_batch.load(Ordering::Relaxed),
        }
    }
}

/// A read-only view of a [`Store`]: the queries and subscriptions a reader needs (the API), and
/// no way to write. Cheap to clone. Like a `Store` clone it keeps the store open: the file
/// closes when the last handle of either kind is dropped.
#[derive(Clone)]
pub struct StoreReader {
    shared: Arc<Shared>,
}

impl fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreReader").field("path", &self.shared.name).finish_non_exhaustive()
    }
}

impl Store {
    /// A read-only handle on this store.
    pub fn reader(&self) -> StoreReader {
        self.reader.clone()
    }

    fn shared(&self) -> &Shared {
        &self.reader.shared
    }
}

impl std::ops::Deref for Store {
    type Target = StoreReader;

    fn deref(&self) -> &StoreReader {
        &self.reader
    }
}

impl From<Store> for StoreReader {
    fn from(store: Store) -> Self {
        store.reader
    }
}

impl StoreReader {
    /// One task.
    pub fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        read::task(&self.shared.db, id)
    }

    /// Tasks newest first, optionally of one status, strictly older than `before` if given.
    pub fn list_tasks(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
        before: Option<TaskId>,
    ) -> Result<Vec<Task>, StoreError> {
        read::list_tasks(&self.shared.db, status, limit, before)
    }

    /// Up to `max` bytes of `task`'s log from byte `offset`.
    pub fn read_log(&self, task: TaskId, offset: u64, max: usize) -> Result<Vec<u8>, StoreError> {
        read::read_log(&self.shared.db, task, offset, max)
    }

    /// Length of `task`'s log in bytes.
    pub fn log_len(&self, task: TaskId) -> Result<u64, StoreError> {
        read::log_len(&self.shared.db, task)
    }

    /// Up to `limit` events with `seq > after`, in order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        read::events_after(&self.shared.db, after, limit)
    }

    /// The sequence number of the newest event (0 if none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        read::last_seq(&self.shared.db)
    }

    /// Notifications of what each commit changed. Slow receivers lag (and should re-read).
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.shared.notify.subscribe()
    }
}

impl Store {
    /// Prepares an opened database (tables, layout check, event sequence) and starts the writer.
    fn start(db: Database, name: String) -> Result<Store, StoreError> {
        let next_seq = writer::init(&db)?;
        let db = Arc::new(db);
        let (ops, rx) = mpsc::channel();
        let (notify, _) = broadcast::channel(NOTIFY_CAPACITY);
        let stats = Arc::new(writer::Stats::default());
        let handle = writer::spawn(db.clone(), rx, notify.clone(), next_seq, stats.clone()).map_err(|e| {
            StoreError::Open { path: name.clone(), reason: format!("cannot start writer: {e}") }
        })?;
        let shared = Shared { db, ops: Some(ops), notify, stats, writer: Some(handle), name };
        Ok(Store { reader: StoreReader { shared: Arc::new(shared) } })
    }

    /// Queues a write. If the writer is gone the op (and its reply sender) is dropped, so the
    /// `Pending` resolves to `Closed`.
    fn submit<T>(
        &self,
        req: Request,
        reply: fn(oneshot::Sender<Result<T, StoreError>>) -> Reply,
    ) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        if let Some(ops) = &self.shared().ops {
            let _ = ops.send(Op { req, reply: reply(tx) });
        }
        Pending { rx }
    }
}

/// Test seams: open over any redb backend (in memory, fault injecting), and reach the database
/// directly to plant corruption.
#[cfg(test)]
impl Store {
    fn open_backend(backend: impl redb::StorageBackend) -> Result<Store, StoreError> {
        let db = redb::Builder::new()
            .create_with_backend(backend)
            .map_err(|e| StoreError::Open { path: "<backend>".into(), reason: e.to_string() })?;
        Store::start(db, "<backend>".into())
    }

    fn db(&self) -> &Database {
        &self.shared().db
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod receipt_tests;
