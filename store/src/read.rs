//! Read queries: each runs in its own MVCC read transaction, from any thread, and sees exactly
//! the last committed state.
//!
//! Never write here and never scan a whole table where an index or a range answers the question:
//! listings must stay fast with a million tasks.

use std::ops::Bound;

use orgmesh_protocol::{SignedRecord, Task, TaskId, TaskStatus};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};

use crate::schema::{self, COUNTS, EVENTS, LOG_LEN, LOGS, PEERS, RUNS, TASK_STATUS, TASKS, db_err};
use crate::{HostedRun, StatusCounts, StoreError, StoredEvent};

fn begin(db: &Database) -> Result<ReadTransaction, StoreError> {
    db.begin_read().map_err(db_err)
}

pub(crate) fn task(db: &Database, id: TaskId) -> Result<Option<Task>, StoreError> {
    let table = begin(db)?.open_table(TASKS).map_err(db_err)?;
    match table.get(id.as_u128()).map_err(db_err)? {
        Some(v) => Ok(Some(schema::decode_task(v.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn list_tasks(
    db: &Database,
    status: Option<TaskStatus>,
    limit: usize,
    before: Option<TaskId>,
) -> Result<Vec<Task>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let txn = begin(db)?;
    let tasks = txn.open_table(TASKS).map_err(db_err)?;
    let upper = before.map(TaskId::as_u128);
    let mut out = Vec::with_capacity(limit.min(1024));
    match status {
        None => {
            let end = upper.map_or(Bound::Unbounded, Bound::Excluded);
            for entry in tasks.range::<u128>((Bound::Unbounded, end)).map_err(db_err)?.rev().take(limit) {
                let (_, v) = entry.map_err(db_err)?;
                out.push(schema::decode_task(v.value())?);
            }
        }
        Some(status) => {
            let index = txn.open_table(TASK_STATUS).map_err(db_err)?;
            let code = status.code();
            let start = Bound::Included((code, 0u128));
            let end = upper.map_or(Bound::Included((code, u128::MAX)), |b| Bound::Excluded((code, b)));
            for entry in index.range::<(u8, u128)>((start, end)).map_err(db_err)?.rev().take(limit) {
                let (k, _) = entry.map_err(db_err)?;
                out.push(indexed_task(&tasks, k.value().1)?);
            }
        }
    }
    Ok(out)
}

pub(crate) fn unfinished_tasks(db: &Database) -> Result<Vec<Task>, StoreError> {
    let txn = begin(db)?;
    let tasks = txn.open_table(TASKS).map_err(db_err)?;
    let index = txn.open_table(TASK_STATUS).map_err(db_err)?;
    let mut ids = Vec::new();
    for status in TaskStatus::ALL.into_iter().filter(|s| !s.is_terminal()) {
        let code = status.code();
        for entry in index.range((code, 0u128)..=(code, u128::MAX)).map_err(db_err)? {
            ids.push(entry.map_err(db_err)?.0.value().1);
        }
    }
    // Each status's ids come out sorted; merging them by id gives oldest first overall.
    ids.sort_unstable();
    ids.into_iter().map(|id| indexed_task(&tasks, id)).collect()
}

/// The task an index entry points at; a dangling entry means the index is broken.
fn indexed_task(tasks: &impl ReadableTable<u128, &'static [u8]>, id: u128) -> Result<Task, StoreError> {
    match tasks.get(id).map_err(db_err)? {
        Some(v) => schema::decode_task(v.value()),
        None => {
            Err(StoreError::Corrupt(format!("status index names missing task {}", TaskId::from_u128(id))))
        }
    }
}

pub(crate) fn status_counts(db: &Database) -> Result<StatusCounts, StoreError> {
    let counts = begin(db)?.open_table(COUNTS).map_err(db_err)?;
    let mut out = StatusCounts::new();
    for status in TaskStatus::ALL {
        let n = counts.get(status.code()).map_err(db_err)?.map_or(0, |v| v.value());
        out.insert(status, n);
    }
    Ok(out)
}

pub(crate) fn read_log(db: &Database, task: TaskId, offset: u64, max: usize) -> Result<Vec<u8>, StoreError> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let id = task.as_u128();
    let logs = begin(db)?.open_table(LOGS).map_err(db_err)?;
    // The chunk holding `offset` may start before it: find the last chunk starting at or before
    // `offset`, then read forward from there.
    let first = match logs.range((id, 0)..=(id, offset)).map_err(db_err)?.next_back() {
        Some(entry) => entry.map_err(db_err)?.0.value().1,
        None => offset,
    };
    let end = offset.saturating_add(u64::try_from(max).unwrap_or(u64::MAX));
    let mut out = Vec::new();
    let mut expect = first;
    for entry in logs.range((id, first)..=(id, u64::MAX)).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let start = k.value().1;
        if start >= end {
            break;
        }
        if start != expect {
            return Err(StoreError::Corrupt(format!("log of {task} has a hole at byte {expect}")));
        }
        let chunk = v.value();
        let chunk_end = start + chunk.len() as u64;
        expect = chunk_end;
        if chunk_end <= offset {
            continue;
        }
        // Both bounds lie within the chunk, so the casts cannot truncate.
        let from = offset.saturating_sub(start) as usize;
        let to = (end.min(chunk_end) - start) as usize;
        out.extend_from_slice(&chunk[from..to]);
    }
    Ok(out)
}

pub(crate) fn log_len(db: &Database, task: TaskId) -> Result<u64, StoreError> {
    let table = begin(db)?.open_table(LOG_LEN).map_err(db_err)?;
    Ok(table.get(task.as_u128()).map_err(db_err)?.map_or(0, |v| v.value()))
}

pub(crate) fn events_after(db: &Database, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
    let table = begin(db)?.open_table(EVENTS).map_err(db_err)?;
    let mut out = Vec::new();
    for entry in table.range::<u64>((Bound::Excluded(after), Bound::Unbounded)).map_err(db_err)?.take(limit) {
        let (_, v) = entry.map_err(db_err)?;
        out.push(schema::decode("event", v.value())?);
    }
    Ok(out)
}

pub(crate) fn last_seq(db: &Database) -> Result<u64, StoreError> {
    let table = begin(db)?.open_table(EVENTS).map_err(db_err)?;
    Ok(table.last().map_err(db_err)?.map_or(0, |(k, _)| k.value()))
}

pub(crate) fn peers(db: &Database) -> Result<Vec<SignedRecord>, StoreError> {
    let table = begin(db)?.open_table(PEERS).map_err(db_err)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(db_err)? {
        let (_, v) = entry.map_err(db_err)?;
        out.push(schema::decode("peer record", v.value())?);
    }
    Ok(out)
}

pub(crate) fn runs(db: &Database) -> Result<Vec<HostedRun>, StoreError> {
    let table = begin(db)?.open_table(RUNS).map_err(db_err)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(db_err)? {
        let (_, v) = entry.map_err(db_err)?;
        out.push(schema::decode_run(v.value())?);
    }
    Ok(out)
}
