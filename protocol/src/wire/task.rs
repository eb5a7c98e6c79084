//! `/orgmesh/task/1`: a host tells a task's origin that an attempt started, streams its logs,
//! renews the attempts' leases and reports their results; the origin cancels. Every message names
//! its attempt, and the origin fences: a message from an attempt other than the current one is
//! answered `Stale` (or listed in `Leases::stop`) and ignored.

use serde::{Deserialize, Serialize};

use crate::ids::{Attempt, TaskId};

/// How an attempt ended, as its host saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The exit code, if the process exited by itself.
    pub exit_code: Option<i32>,
    /// What went wrong, if anything did (timeout, signal, failed to start, cancelled).
    pub error: Option<String>,
    /// Whether the attempt ended because it was cancelled.
    pub cancelled: bool,
    /// Bytes of output in all; the origin holds the result until it has them all.
    pub log_len: u64,
    /// The attempt was lost through no fault of the task (its host restarted or handed it back
    /// while stopping): the origin places the task again while attempts remain.
    pub lost: bool,
}

impl Outcome {
    /// Whether the attempt succeeded (exit code 0, not cancelled).
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.cancelled && !self.lost && self.error.is_none()
    }

    /// The outcome of an attempt its host lost (restart, hand-back at shutdown).
    pub fn lost(why: impl Into<String>, log_len: u64) -> Self {
        Self { exit_code: None, error: Some(why.into()), cancelled: false, lost: true, log_len }
    }
}

/// A request on the task protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskRequest {
    /// Host → origin: the attempt's process started.
    Started {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
    },
    /// Host → origin: output bytes `[offset, offset + data.len())`, stdout and stderr interleaved.
    Log {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// Byte offset of `data` in the attempt's output.
        offset: u64,
        /// The bytes, at most `limits::LOG_CHUNK`.
        data: Vec<u8>,
    },
    /// Host → origin: the attempt ended.
    Finished {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// How.
        outcome: Outcome,
    },
    /// Origin → host: stop the attempt.
    Cancel {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
    },
    /// Host → origin: these attempts are still held here (running, or finished with a result
    /// not yet delivered); renew their leases. Answered with [`TaskResponse::Leases`].
    Renew {
        /// At most `limits::MAX_RENEW` attempts.
        attempts: Vec<(TaskId, Attempt)>,
    },
}

impl TaskRequest {
    /// The task and attempt this message is about (`None` for a `Renew`, which names many).
    pub fn attempt(&self) -> Option<(TaskId, Attempt)> {
        match self {
            TaskRequest::Started { task, attempt }
            | TaskRequest::Log { task, attempt, .. }
            | TaskRequest::Finished { task, attempt, .. }
            | TaskRequest::Cancel { task, attempt } => Some((*task, *attempt)),
            TaskRequest::Renew { .. } => None,
        }
    }
}

/// The answer to a [`TaskRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskResponse {
    /// Taken, and durable where that matters (results and logs are stored before this is sent).
    Ack,
    /// The message's attempt is not the current one: the host must stop that attempt.
    Stale {
        /// The current attempt.
        current: Attempt,
    },
    /// The receiver has no such task (or, for `Cancel`, no such running attempt).
    Unknown,
    /// A log chunk or result arrived before earlier output: resend from `have`.
    LogGap {
        /// Bytes the origin holds.
        have: u64,
    },
    /// The answer to a `Renew`: every listed attempt not named here was renewed.
    Leases {
        /// Attempts the origin no longer wants (superseded, ended, unknown): stop them and drop
        /// their reports.
        stop: Vec<(TaskId, Attempt)>,
        /// Attempts to cancel: stop them and report `Finished { cancelled }`. Carries a cancel
        /// through a partition: it takes effect at the first renewal after the heal.
        cancel: Vec<(TaskId, Attempt)>,
    },
}
