//! A simulated node's durable store: what survives a crash of its process, as redb does for the
//! node. It applies the engine's `Output::Persist` writes (tasks, log bytes, hosted runs, peers),
//! answers the ended-task lookups the engine asks of it (`Archive`), holds the executor's spools,
//! and at a restart hands the engine what it must take over. It must never decide anything about
//! a task: it keeps what it is told, by the same rules as `store/`.

use std::collections::BTreeMap;

use orgmesh_protocol::engine::{Archive, Lookup, Persisted, RecoveredTask, RunRecord, Write, new_log_bytes};
use orgmesh_protocol::{Attempt, PeerId, Task, TaskId};

/// One node's durable state.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// Every task submitted at this node, ended ones included.
    pub(crate) tasks: BTreeMap<TaskId, Task>,
    /// Each task's log: its bytes while the task runs (dropped once it ended and was checked,
    /// see [`Store::drop_log`]), and its length always.
    logs: BTreeMap<TaskId, Log>,
    /// Attempts this node hosts whose result its origin does not have yet.
    pub(crate) runs: BTreeMap<(TaskId, Attempt), RunRecord>,
    /// Bytes each attempt run here spooled: the spool files the executor leaves on disk.
    pub(crate) spools: BTreeMap<(TaskId, Attempt), u64>,
    /// Peer records remembered (counted only: a restarted simulated node dials its bootstrap
    /// contacts, not its remembered peers, and 10,000 nodes remembering 10,000 records each
    /// would not fit in memory).
    pub(crate) peers_remembered: u64,
}

#[derive(Debug, Default)]
struct Log {
    bytes: Vec<u8>,
    len: u64,
}

impl Store {
    /// Applies one write; the answer to give the engine if it waits for it.
    pub(crate) fn apply(&mut self, write: Write) -> Persisted {
        match write {
            Write::Task { task, .. } => {
                self.tasks.insert(task.id, *task);
                Persisted::Done
            }
            Write::Log { task, at, data } => self.append(task, at, &data),
            Write::Run(run) => {
                self.runs.insert((run.task, run.attempt), run);
                Persisted::Done
            }
            Write::RemoveRun { task, attempt } => {
                self.runs.remove(&(task, attempt));
                Persisted::Done
            }
            Write::Peer(_) => {
                self.peers_remembered += 1;
                Persisted::Done
            }
            Write::ForgetPeer(_) => Persisted::Done,
        }
    }

    /// The log rule of `store/`: bytes that would leave a hole are refused with the length held;
    /// bytes already held are skipped (a resend), the rest appended.
    fn append(&mut self, task: TaskId, at: u64, data: &[u8]) -> Persisted {
        let log = self.logs.entry(task).or_default();
        match new_log_bytes(log.len, at, data) {
            Ok(new) => {
                log.bytes.extend_from_slice(new);
                log.len += new.len() as u64;
                Persisted::Log { len: log.len }
            }
            Err(have) => Persisted::LogGap { have },
        }
    }

    /// The bytes of `task`'s log still held.
    pub(crate) fn log(&self, task: TaskId) -> &[u8] {
        self.logs.get(&task).map_or(&[], |l| &l.bytes)
    }

    /// Frees an ended task's log bytes once checked, keeping its length (memory, not behaviour:
    /// nothing writes an ended task's log again).
    pub(crate) fn drop_log(&mut self, task: TaskId) {
        if let Some(log) = self.logs.get_mut(&task) {
            log.bytes = Vec::new();
        }
    }

    /// What a restarted engine takes over: this node's unfinished tasks with their logs'
    /// lengths, and the attempts it hosted.
    pub(crate) fn recovered(&self) -> (Vec<RecoveredTask>, Vec<RunRecord>) {
        let tasks = self
            .tasks
            .values()
            .filter(|t| !t.status.is_terminal())
            .map(|t| RecoveredTask { task: t.clone(), log_len: self.logs.get(&t.id).map_or(0, |l| l.len) })
            .collect();
        (tasks, self.runs.values().cloned().collect())
    }
}

impl Archive for Store {
    fn ended(&self, task: TaskId) -> Lookup {
        match self.tasks.get(&task) {
            Some(t) if t.status.is_terminal() => {
                Lookup::Ended { attempt: t.attempt, host: t.placement.as_ref().map(|p| p.peer_id.clone()) }
            }
            _ => Lookup::Unknown,
        }
    }
}

/// The host a task's current attempt runs on, as its origin's store has it.
pub(crate) fn placed_on(task: &Task) -> Option<&PeerId> {
    task.placement.as_ref().map(|p| &p.peer_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TaskId {
        TaskId::new(1_800_000_000_000, 7)
    }

    fn log(store: &mut Store, at: u64, data: &[u8]) -> Persisted {
        store.apply(Write::Log { task: id(), at, data: data.to_vec() })
    }

    #[test]
    fn log_bytes_past_the_end_are_refused_with_the_length_held() {
        let mut s = Store::default();
        assert_eq!(log(&mut s, 0, b"abc"), Persisted::Log { len: 3 });
        assert_eq!(log(&mut s, 4, b"e"), Persisted::LogGap { have: 3 });
        assert_eq!(log(&mut s, u64::MAX, b"e"), Persisted::LogGap { have: 3 });
        assert_eq!(s.log(id()), b"abc");
    }

    #[test]
    fn log_bytes_already_held_are_skipped_and_the_rest_appended() {
        let mut s = Store::default();
        log(&mut s, 0, b"abcd");
        // A full resend, a resend inside what is held, an overlap, an empty chunk.
        assert_eq!(log(&mut s, 0, b"abcd"), Persisted::Log { len: 4 });
        assert_eq!(log(&mut s, 1, b"b"), Persisted::Log { len: 4 });
        assert_eq!(log(&mut s, 2, b"cdef"), Persisted::Log { len: 6 });
        assert_eq!(log(&mut s, 6, b""), Persisted::Log { len: 6 });
        assert_eq!(s.log(id()), b"abcdef");
    }

    #[test]
    fn a_dropped_log_keeps_its_length_for_recovery() {
        let mut s = Store::default();
        log(&mut s, 0, b"abcd");
        s.drop_log(id());
        assert_eq!(s.log(id()), b"");
        assert_eq!(log(&mut s, 9, b"x"), Persisted::LogGap { have: 4 });
    }

    #[test]
    fn only_ended_tasks_of_this_node_are_in_the_archive() {
        use orgmesh_protocol::task::TaskOrigin;
        use orgmesh_protocol::{Org, TaskSpec, TaskStatus, Timestamp};
        let mut s = Store::default();
        assert_eq!(s.ended(id()), Lookup::Unknown);
        let origin =
            TaskOrigin { peer_id: PeerId::new("12D3KooWsimaaaaa").unwrap(), org: Org::new("acme").unwrap() };
        let mut task = Task::new(id(), TaskSpec::new(vec!["x".into()]), origin, Timestamp(1));
        task.attempt = Attempt(2);
        s.apply(Write::Task { task: Box::new(task.clone()), status_changed: true });
        assert_eq!(s.ended(id()), Lookup::Unknown, "pending is not ended");
        assert_eq!(s.recovered().0.len(), 1);
        task.status = TaskStatus::Cancelled;
        s.apply(Write::Task { task: Box::new(task), status_changed: true });
        assert_eq!(s.ended(id()), Lookup::Ended { attempt: Attempt(2), host: None });
        assert!(s.recovered().0.is_empty());
    }
}
