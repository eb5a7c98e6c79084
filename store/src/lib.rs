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
#![warn(missing_docs)]

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use orgmesh_protocol::{PeerId, SignedRecord, Task, TaskId, TaskStatus, Timestamp};
use tokio::sync::{broadcast, oneshot};

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

/// A handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    _todo: (),
}

impl Store {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let _ = path;
        todo!()
    }

    /// Stores a new task and its `task.created` event (`data` = `created_event_data`), unless
    /// `idempotency` names a key already used. Atomic with the key check.
    pub fn create_task(
        &self,
        task: Task,
        idempotency: Option<Idempotency>,
        created_event_data: String,
    ) -> Pending<CreateOutcome> {
        let _ = (task, idempotency, created_event_data);
        todo!()
    }

    /// Writes a task record (replacing the previous one, keeping the status index right) and
    /// appends `events`, in one transaction.
    pub fn put_task(&self, task: Task, events: Vec<NewEvent>) -> Pending<()> {
        let _ = (task, events);
        todo!()
    }

    /// Appends events that concern no task record.
    pub fn append_events(&self, events: Vec<NewEvent>) -> Pending<()> {
        let _ = events;
        todo!()
    }

    /// Appends output bytes at `offset` of `task`'s log. Bytes before the current end are
    /// skipped (a resend is harmless); a chunk starting after the end is refused with `Gap`.
    /// Resolves to the log's new length.
    pub fn append_log(&self, task: TaskId, offset: u64, data: Vec<u8>) -> Pending<Result<u64, AppendError>> {
        let _ = (task, offset, data);
        todo!()
    }

    /// Remembers a peer's latest record, so a restarted node can redial it.
    pub fn put_peer(&self, record: SignedRecord) -> Pending<()> {
        let _ = record;
        todo!()
    }

    /// Stores a small metadata value.
    pub fn put_meta(&self, key: &str, value: Vec<u8>) -> Pending<()> {
        let _ = (key, value);
        todo!()
    }

    /// Reads a metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = key;
        todo!()
    }

    /// One task.
    pub fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        let _ = id;
        todo!()
    }

    /// Tasks newest first, optionally of one status, strictly older than `before` if given.
    pub fn list_tasks(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
        before: Option<TaskId>,
    ) -> Result<Vec<Task>, StoreError> {
        let _ = (status, limit, before);
        todo!()
    }

    /// Every task not in a terminal status (for recovery after a restart), oldest first.
    pub fn unfinished_tasks(&self) -> Result<Vec<Task>, StoreError> {
        todo!()
    }

    /// How many tasks there are in each status.
    pub fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        todo!()
    }

    /// Up to `max` bytes of `task`'s log from byte `offset`.
    pub fn read_log(&self, task: TaskId, offset: u64, max: usize) -> Result<Vec<u8>, StoreError> {
        let _ = (task, offset, max);
        todo!()
    }

    /// Length of `task`'s log in bytes.
    pub fn log_len(&self, task: TaskId) -> Result<u64, StoreError> {
        let _ = task;
        todo!()
    }

    /// Up to `limit` events with `seq > after`, in order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let _ = (after, limit);
        todo!()
    }

    /// The sequence number of the newest event (0 if none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        todo!()
    }

    /// Every remembered peer record.
    pub fn peers(&self) -> Result<Vec<SignedRecord>, StoreError> {
        todo!()
    }

    /// Forgets a peer.
    pub fn remove_peer(&self, peer: &PeerId) -> Pending<()> {
        let _ = peer;
        todo!()
    }

    /// Notifications of what each commit changed. Slow receivers lag (and should re-read).
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        todo!()
    }
}
