//! Every redb table of the store, with its key and value encodings, in one place; plus the
//! conversions between stored bytes and typed values.
//!
//! Nothing here opens a transaction or decides anything: it names tables and decodes bytes. Never
//! panic on bytes read from disk here: a value that does not decode is `StoreError::Corrupt`.

use redb::TableDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// The layout version this code writes. Stored in [`INFO`] under [`SCHEMA_KEY`]; a file with
/// another version is refused at open rather than misread.
pub(crate) const SCHEMA_VERSION: u64 = 2;

/// Key of the layout version in [`INFO`].
pub(crate) const SCHEMA_KEY: &str = "schema";

/// Facts about the file itself (the layout version).
pub(crate) const INFO: TableDefinition<'static, &str, u64> = TableDefinition::new("info");

/// `TaskId` (raw u128, so keys sort by creation time) → `postcard(Task)`.
pub(crate) const TASKS: TableDefinition<'static, u128, &[u8]> = TableDefinition::new("tasks");

/// `(TaskStatus::code(), TaskId)` → nothing. One entry per task, under its current status: a
/// reverse range scan within one code lists that status newest first without touching others.
pub(crate) const TASK_STATUS: TableDefinition<'static, (u8, u128), ()> = TableDefinition::new("task_status");

/// `TaskStatus::code()` → number of tasks in that status, kept in the same transaction as
/// [`TASK_STATUS`] so counting never scans.
pub(crate) const COUNTS: TableDefinition<'static, u8, u64> = TableDefinition::new("counts");

/// Event sequence number (1, 2, 3, ... with no gaps) → `postcard(StoredEvent)`. The last key is
/// the last sequence number; nothing else records it.
pub(crate) const EVENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("events");

/// `(TaskId, byte offset of the chunk's first byte)` → the chunk. Chunks of one task are
/// contiguous: each starts where the previous one ends.
pub(crate) const LOGS: TableDefinition<'static, (u128, u64), &[u8]> = TableDefinition::new("logs");

/// `TaskId` → length in bytes of its log (the end of its last chunk).
pub(crate) const LOG_LEN: TableDefinition<'static, u128, u64> = TableDefinition::new("log_len");

/// Peer id (base58 text) → `postcard(SignedRecord)`.
pub(crate) const PEERS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("peers");

/// Idempotency key → (SHA-256 of the first request body, raw `TaskId` it created).
pub(crate) const IDEMPOTENCY: TableDefinition<'static, &str, ([u8; 32], u128)> =
    TableDefinition::new("idempotency");

/// Host side: `(TaskId, Attempt)` → `postcard(HostedRun)`, one entry per attempt this node runs
/// (or ran, while its result is not yet delivered to the origin).
pub(crate) const RUNS: TableDefinition<'static, (u128, u32), &[u8]> = TableDefinition::new("runs");

/// Largest log chunk stored under one key. Bigger appends are split, so reading a few bytes at
/// an arbitrary offset never loads a huge value.
pub(crate) const MAX_LOG_CHUNK: usize = 64 * 1024;

/// Encodes a value for storage. Failing here means a type cannot be represented, not bad data.
pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|e| StoreError::Io(format!("cannot encode {what}: {e}")))
}

/// Decodes a stored value; anything that does not decode is corruption.
pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A stored task. Records written before tasks carried a receipt lack its field (the last one);
/// postcard encodes by position, so they decode as the layout they were written in, receipt
/// `None`. Tried second, as the rarer case: a current record never decodes as an old one, which
/// would leave bytes over, nor an old one as current, which ends a field early.
pub(crate) fn decode_task(bytes: &[u8]) -> Result<orgmesh_protocol::Task, StoreError> {
    match postcard::from_bytes::<orgmesh_protocol::Task>(bytes) {
        Ok(task) => Ok(task),
        Err(current) => match postcard::take_from_bytes::<TaskBeforeReceipts>(bytes) {
            Ok((old, [])) => Ok(old.into()),
            _ => Err(StoreError::Corrupt(format!("task: {current}"))),
        },
    }
}

/// A hosted run; one written before runs kept receipt evidence decodes with `evidence: None`.
pub(crate) fn decode_run(bytes: &[u8]) -> Result<crate::HostedRun, StoreError> {
    match postcard::from_bytes::<crate::HostedRun>(bytes) {
        Ok(run) => Ok(run),
        Err(current) => match postcard::take_from_bytes::<RunBeforeReceipts>(bytes) {
            Ok((old, [])) => Ok(old.into()),
            _ => Err(StoreError::Corrupt(format!("hosted run: {current}"))),
        },
    }
}

/// `Task` as written before it had `receipt`: same fields, same order.
#[derive(serde::Deserialize)]
struct TaskBeforeReceipts {
    id: orgmesh_protocol::TaskId,
    status: orgmesh_protocol::TaskStatus,
    spec: orgmesh_protocol::TaskSpec,
    origin: orgmesh_protocol::task::TaskOrigin,
    placement: Option<orgmesh_protocol::task::TaskPlacement>,
    attempt: orgmesh_protocol::Attempt,
    exit_code: Option<i32>,
    error: Option<String>,
    created_at: orgmesh_protocol::Timestamp,
    updated_at: orgmesh_protocol::Timestamp,
    history: Vec<orgmesh_protocol::task::AttemptRecord>,
}

impl From<TaskBeforeReceipts> for orgmesh_protocol::Task {
    fn from(o: TaskBeforeReceipts) -> Self {
        Self {
            id: o.id,
            status: o.status,
            spec: o.spec,
            origin: o.origin,
            placement: o.placement,
            attempt: o.attempt,
            exit_code: o.exit_code,
            error: o.error,
            created_at: o.created_at,
            updated_at: o.updated_at,
            history: o.history,
            receipt: None,
        }
    }
}

/// `HostedRun` as written before it had `evidence`.
#[derive(serde::Deserialize)]
struct RunBeforeReceipts {
    task: orgmesh_protocol::TaskId,
    attempt: orgmesh_protocol::Attempt,
    origin: orgmesh_protocol::PeerId,
    pgid: Option<i32>,
    outcome: Option<crate::RunOutcome>,
    legacy_output: Vec<u8>,
    acked: u64,
}

impl From<RunBeforeReceipts> for crate::HostedRun {
    fn from(o: RunBeforeReceipts) -> Self {
        Self {
            task: o.task,
            attempt: o.attempt,
            origin: o.origin,
            pgid: o.pgid,
            outcome: o.outcome,
            legacy_output: o.legacy_output,
            acked: o.acked,
            evidence: None,
        }
    }
}

/// Maps any redb error to ours: corruption stays corruption, everything else is I/O. Keeps redb
/// types out of the public API.
pub(crate) fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(why) => StoreError::Corrupt(why),
        other => StoreError::Io(other.to_string()),
    }
}
