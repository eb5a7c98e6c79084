//! The API's only way to ask the node to do something: the `Control` trait, implemented by the
//! node's cloneable handle (commands over a channel to its event loop). Reads that need no
//! decision go straight to the store instead. The JSON shapes of its views live in `schema`,
//! which the OpenAPI document reads too. This module must never build an HTTP answer: handlers
//! turn its errors into problems (`problem` says which status each one answers).

use std::future::Future;
use std::pin::Pin;

use orgmesh_protocol::{TaskId, TaskSpec, TaskStatus};
use orgmesh_store::{Idempotency, StoreError};
use serde::{Deserialize, Serialize};

use crate::schema::{Check, DrainStatus, NodeInfo, PeerEntry};

/// A boxed future, so `Control` can be used as `dyn Control`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The answer of a successful submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The task.
    pub id: TaskId,
    /// Its status now.
    pub status: TaskStatus,
    /// Whether this was an earlier submission with the same idempotency key and body.
    pub existing: bool,
}

/// Why a submit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The spec is invalid (422).
    #[error("{0}")]
    Invalid(String),
    /// The idempotency key was used with another body (409).
    #[error("idempotency key already used for task {0} with a different body")]
    Conflict(TaskId),
    /// The node is draining or shutting down (503).
    #[error("{0}")]
    Unavailable(String),
}

/// Why a cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// No such task at this node (404).
    #[error("no task {0} at this node")]
    NotFound(TaskId),
    /// The task already ended (409).
    #[error("task {id} already ended: {status}")]
    AlreadyEnded {
        /// The task.
        id: TaskId,
        /// Its terminal status.
        status: TaskStatus,
    },
    /// The node is shutting down (503).
    #[error("{0}")]
    Unavailable(String),
}

/// Why the node could not carry out a command or build a view (`drain`, `node`, `peers`,
/// `metrics`). Each variant's status is set in one place, `problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The node's event loop is gone: the node is shutting down (503).
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The action was taken but its event could not be recorded (503 if the store closed,
    /// else 500, as for any store fault).
    #[error("{action} not recorded: {source}")]
    NotRecorded {
        /// What was not recorded (`drain`).
        action: &'static str,
        /// The store's error.
        source: StoreError,
    },
    /// This node serves no metrics (503).
    #[error("this node serves no metrics")]
    NoMetrics,
    /// The node could not build the answer (a read or an encoding failed); retrying may work
    /// (503).
    #[error("{0}")]
    Unavailable(String),
}

/// The node as the API sees it. Implemented by the node's handle; tests may implement it too.
pub trait Control: Send + Sync + 'static {
    /// Validated spec in, durable task out: resolves only after the task is committed to the store.
    /// `actor` (a token's name, or `anonymous@loopback`) is recorded with its `task.created` event.
    fn submit(
        &self,
        actor: String,
        spec: TaskSpec,
        idempotency: Option<Idempotency>,
    ) -> BoxFuture<'_, Result<Submitted, SubmitError>>;
    /// Cancels a task wherever it runs, recording `actor` in an event.
    fn cancel(&self, actor: String, id: TaskId) -> BoxFuture<'_, Result<(), CancelError>>;
    /// Starts draining (no new placements here) and reports what still runs; records `actor`.
    fn drain(&self, actor: String) -> BoxFuture<'_, Result<DrainStatus, ControlError>>;
    /// This node.
    fn node(&self) -> BoxFuture<'_, Result<NodeInfo, ControlError>>;
    /// Every peer this node knows.
    fn peers(&self) -> BoxFuture<'_, Result<Vec<PeerEntry>, ControlError>>;
    /// Readiness checks other than the store's (p2p listener, discovery sources).
    fn readiness(&self) -> BoxFuture<'_, Vec<Check>>;

    /// The node's metrics in the OpenMetrics text format (`GET /metrics`); by default none.
    fn metrics(&self) -> BoxFuture<'_, Result<String, ControlError>> {
        Box::pin(async { Err(ControlError::NoMetrics) })
    }
}
