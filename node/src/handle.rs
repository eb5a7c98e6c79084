//! `NodeHandle`: the cloneable front door of a running node, implementing the API's `Control`.
//! Submissions are committed to the store here (so a 202 means durable) and then handed to the
//! event loop; everything else is a command with a oneshot reply. Calls made on behalf of an API
//! caller (`*_as`) record the caller as the `actor` of their event. Holds no state of its own.

use orgmesh_api::{
    BoxFuture, CancelError, Check, Control, DrainStatus, NodeInfo, PeerEntry, SubmitError, Submitted,
};
use orgmesh_protocol::task::TaskOrigin;
use orgmesh_protocol::{Task, TaskId, TaskSpec, TaskStatus};
use orgmesh_store::{CreateOutcome, Idempotency, Store};
use tokio::sync::{mpsc, oneshot};

use crate::actor::Command;
use crate::metrics::Metrics;
use crate::wall_clock;

/// A handle to a running node's event loop.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    store: Store,
    origin: TaskOrigin,
    metrics: Option<Metrics>,
}

/// The actor of calls made without an API caller (the `Control` methods without `_as`).
const LOCAL_ACTOR: &str = "local";

const GONE: &str = "the node is shutting down";

impl NodeHandle {
    /// A handle sending to `commands`.
    pub fn new(commands: mpsc::Sender<Command>, store: Store, origin: TaskOrigin) -> Self {
        Self { commands, store, origin, metrics: None }
    }

    /// Serves `metrics` at `GET /metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

impl Control for NodeHandle {
    fn submit(
        &self,
        spec: TaskSpec,
        idempotency: Option<Idempotency>,
    ) -> BoxFuture<'_, Result<Submitted, SubmitError>> {
        self.submit_as(LOCAL_ACTOR.into(), spec, idempotency)
    }

    fn submit_as(
        &self,
        actor: String,
        spec: TaskSpec,
        idempotency: Option<Idempotency>,
    ) -> BoxFuture<'_, Result<Submitted, SubmitError>> {
        Box::pin(async move {
            spec.validate().map_err(|e| SubmitError::Invalid(e.to_string()))?;
            let now = wall_clock();
            let id = TaskId::new(now.0, rand::random::<u128>());
            let task = Task::new(id, spec, self.origin.clone(), now);
            let data = crate::events::task_created_data(&task, &actor);
            match self.store.create_task(task.clone(), idempotency, data).await {
                Ok(CreateOutcome::Created) => {
                    // Durable now. If the loop is gone, recovery at the next start places it.
                    let _ = self.commands.send(Command::TaskCreated(Box::new(task))).await;
                    Ok(Submitted { id, status: TaskStatus::Pending, existing: false })
                }
                Ok(CreateOutcome::Existing(t)) => {
                    Ok(Submitted { id: t.id, status: t.status, existing: true })
                }
                Ok(CreateOutcome::Conflict { existing }) => Err(SubmitError::Conflict(existing)),
                Err(e) => Err(SubmitError::Unavailable(format!("task not stored: {e}"))),
            }
        })
    }

    fn cancel(&self, id: TaskId) -> BoxFuture<'_, Result<(), CancelError>> {
        self.cancel_as(LOCAL_ACTOR.into(), id)
    }

    fn cancel_as(&self, actor: String, id: TaskId) -> BoxFuture<'_, Result<(), CancelError>> {
        Box::pin(async move {
            self.ask(|reply| Command::Cancel { id, reply })
                .await
                .unwrap_or_else(|| Err(CancelError::Unavailable(GONE.into())))?;
            // The cancel is under way; record who asked before answering.
            self.store
                .append_events(vec![crate::events::cancel_requested(id, &actor)])
                .await
                .map_err(|e| CancelError::Unavailable(format!("cancel not recorded: {e}")))
        })
    }

    fn drain(&self) -> BoxFuture<'_, Result<DrainStatus, String>> {
        self.drain_as(LOCAL_ACTOR.into())
    }

    fn drain_as(&self, actor: String) -> BoxFuture<'_, Result<DrainStatus, String>> {
        Box::pin(async move {
            let status = self.ask(|reply| Command::Drain { reply }).await.ok_or_else(|| GONE.to_string())?;
            self.store
                .append_events(vec![crate::events::draining(&actor, status.running)])
                .await
                .map_err(|e| format!("drain not recorded: {e}"))?;
            Ok(status)
        })
    }

    fn metrics(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let metrics = self.metrics.as_ref().ok_or("this node serves no metrics")?;
            let peers = self.ask(|reply| Command::Peers { reply }).await.ok_or_else(|| GONE.to_string())?;
            let states: Vec<_> = peers.iter().map(|p| p.state).collect();
            metrics.render(&self.store, &states)
        })
    }

    fn node(&self) -> BoxFuture<'_, Result<NodeInfo, String>> {
        Box::pin(
            async move { self.ask(|reply| Command::Node { reply }).await.ok_or_else(|| GONE.to_string()) },
        )
    }

    fn peers(&self) -> BoxFuture<'_, Result<Vec<PeerEntry>, String>> {
        Box::pin(
            async move { self.ask(|reply| Command::Peers { reply }).await.ok_or_else(|| GONE.to_string()) },
        )
    }

    fn readiness(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            self.ask(|reply| Command::Readiness { reply })
                .await
                .unwrap_or_else(|| vec![Check { name: "event_loop".into(), ok: false, detail: GONE.into() }])
        })
    }
}
