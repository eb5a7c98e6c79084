//! What the engine takes over from the store at start, and what it reads of the store while it
//! runs: unfinished tasks with their log lengths; the attempts this node hosted (the spools
//! nobody owes are removed, orphans of attempts that died with the node are stopped, and records
//! from before the spool have their output moved into one); and ended tasks, for late reports.
//! Never decides a task's fate: the engine does.

use orgmesh_protocol::engine::{Archive, Lookup, RecoveredTask, RunRecord};
use orgmesh_protocol::wire::task::Outcome;
use orgmesh_protocol::{Task, TaskId};
use orgmesh_store::{HostedRun, StoreReader};

use crate::executor;
use crate::spool::SpoolDir;

/// The store, as the engine reads it: ended tasks.
pub(crate) struct StoreArchive<'a>(pub(crate) &'a StoreReader);

impl Archive for StoreArchive<'_> {
    fn ended(&self, task: TaskId) -> Lookup {
        match self.0.task(task) {
            Ok(Some(t)) => Lookup::Ended { attempt: t.attempt, host: t.placement.map(|p| p.peer_id) },
            Ok(None) => Lookup::Unknown,
            Err(_) => Lookup::Unavailable,
        }
    }
}

/// This node's unfinished tasks, with the length of each one's log.
pub(crate) fn tasks(store: &StoreReader, tasks: Vec<Task>) -> Vec<RecoveredTask> {
    tasks
        .into_iter()
        .map(|task| {
            let log_len = store.log_len(task.id).unwrap_or(0);
            RecoveredTask { task, log_len }
        })
        .collect()
}

/// The attempts the store says this node was running or reporting when it last stopped, made
/// ready for the engine. One that had not ended died with the node: what is left of its process
/// group is killed here (the engine reports it lost). Every spool no result is owed for is what
/// an earlier run left: removed.
pub(crate) fn runs(spool: &SpoolDir, runs: Vec<HostedRun>) -> Vec<RunRecord> {
    let owed: Vec<_> = runs.iter().filter(|r| r.outcome.is_some()).map(|r| (r.task, r.attempt)).collect();
    let reaped = spool.reap(&owed);
    if reaped > 0 {
        tracing::info!(spools = reaped, "removed output spools an earlier run left");
    }
    runs.into_iter()
        .map(|stored| {
            let (task, attempt) = (stored.task, stored.attempt);
            if stored.outcome.is_none() {
                let killed = stored.pgid.is_some_and(|pgid| executor::kill_orphan(pgid, task, attempt));
                tracing::warn!(task = %task, attempt = %attempt, killed_orphan = killed, "attempt died with the node");
            }
            let mut outcome = stored.outcome.map(Outcome::from);
            if !stored.legacy_output.is_empty()
                && let Some(o) = outcome.as_mut()
            {
                // Written before the spool existed: its undelivered bytes move into one.
                let path = spool.path(task, attempt);
                if let Err(e) = crate::spool::write_at(&path, stored.acked, &stored.legacy_output) {
                    tracing::warn!(task = %task, error = %e, "cannot move a stored attempt's output to its spool");
                }
                let kept = stored.acked.saturating_add(stored.legacy_output.len() as u64);
                o.log_len = o.log_len.max(kept);
            }
            RunRecord {
                task,
                attempt,
                origin: stored.origin,
                pgid: stored.pgid,
                outcome,
                acked: stored.acked,
                evidence: stored.evidence.map(Into::into),
            }
        })
        .collect()
}

/// What the store keeps of an attempt the engine hosts.
pub(crate) fn hosted(record: RunRecord) -> HostedRun {
    HostedRun {
        task: record.task,
        attempt: record.attempt,
        origin: record.origin,
        pgid: record.pgid,
        outcome: record.outcome.map(Into::into),
        legacy_output: Vec::new(),
        acked: record.acked,
        evidence: record.evidence.map(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use orgmesh_protocol::{Attempt, PeerId};

    use super::*;

    fn ended(acked: u64, log_len: u64, legacy_output: Vec<u8>) -> HostedRun {
        HostedRun {
            task: TaskId::new(1, 42),
            attempt: Attempt(2),
            origin: PeerId::new("12D3KooWorigin").unwrap(),
            pgid: Some(4242),
            outcome: Some(
                Outcome { exit_code: Some(0), error: None, cancelled: false, lost: false, log_len }.into(),
            ),
            legacy_output,
            acked,
            evidence: None,
        }
    }

    #[test]
    fn a_record_from_before_the_spool_moves_its_output_into_one() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolDir::new(dir.path().join("spool"));
        let out: Vec<u8> = (0..10_000).map(|i| (i % 251) as u8).collect();
        let records = runs(&spool, vec![ended(4_000, 10_000, out[4_000..].to_vec())]);
        let path = spool.path(TaskId::new(1, 42), Attempt(2));
        let spooled = std::fs::read(&path).unwrap();
        assert!(
            spooled[4_000..] == out[4_000..],
            "the undelivered bytes are in the spool, where they belong"
        );
        assert_eq!(records[0].acked, 4_000);
        assert_eq!(records[0].outcome.as_ref().map(|o| o.log_len), Some(10_000));
    }

    #[test]
    fn spools_nobody_is_owed_are_removed_and_owed_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolDir::new(dir.path().join("spool"));
        let owed = ended(0, 10, Vec::new());
        let mut died = ended(0, 0, Vec::new());
        died.task = TaskId::new(1, 43);
        died.outcome = None;
        died.pgid = None;
        let stray = (TaskId::new(1, 44), Attempt(1));
        for (task, attempt) in [(owed.task, owed.attempt), (died.task, died.attempt), stray] {
            std::fs::write(spool.path(task, attempt), b"output").unwrap();
        }
        let records = runs(&spool, vec![owed.clone(), died.clone()]);
        assert_eq!(records.len(), 2);
        assert!(spool.path(owed.task, owed.attempt).exists(), "a result is still owed");
        assert!(!spool.path(died.task, died.attempt).exists(), "reported lost, with no output");
        assert!(!spool.path(stray.0, stray.1).exists(), "left by an earlier run");
    }
}
