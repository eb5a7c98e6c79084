//! `NodeHandle`: the cloneable front door of a running node, implementing the API's `Control`.
//! Submissions are committed to the store here (so a 202 means durable) and then handed to the
//! event loop; everything else is a command with a oneshot reply. Every mutating call records its
//! caller as the `actor` of its event. Holds no state of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orgmesh_api::{
    BoxFuture, CancelError, Check, Control, ControlError, DrainStatus, NodeInfo, PeerEntry, SubmitError,
    Submitted,
};
use orgmesh_protocol::task::TaskOrigin;
use orgmesh_protocol::{Task, TaskId, TaskSpec, TaskStatus};
use orgmesh_store::{CreateOutcome, Idempotency, Store};
use tokio::sync::{mpsc, oneshot};

use crate::actor::{Command, StopReport};
use crate::metrics::Metrics;
use crate::wall_clock;

/// A handle to a running node's event loop.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    store: Store,
    origin: TaskOrigin,
    /// Set once a graceful stop began: submissions are refused from then on.
    stopping: Arc<AtomicBool>,
    metrics: Option<Metrics>,
}

impl NodeHandle {
    /// A handle sending to `commands`.
    pub fn new(commands: mpsc::Sender<Command>, store: Store, origin: TaskOrigin) -> Self {
        Self { commands, store, origin, stopping: Arc::new(AtomicBool::new(false)), metrics: None }
    }

    /// Stops gracefully (see `Command::Stop`): refuses new submissions at once, lets running
    /// attempts finish for up to `grace`, hands back the rest. Returns when the node may exit.
    pub async fn stop(&self, grace: Duration) -> StopReport {
        self.stopping.store(true, Ordering::SeqCst);
        self.ask(|reply| Command::Stop { grace, reply }).await.unwrap_or_default()
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
        actor: String,
        spec: TaskSpec,
        idempotency: Option<Idempotency>,
    ) -> BoxFuture<'_, Result<Submitted, SubmitError>> {
        Box::pin(async move {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(SubmitError::Unavailable("the node is stopping; submit to another node".into()));
            }
            spec.validate().map_err(|e| SubmitError::Invalid(e.to_string()))?;
            let now = wall_clock();
            let id = TaskId::new(now.0, rand::random::<u128>());
            let task = Task::new(id, spec, self.origin.clone(), now);
            let data = crate::events::task_created_data(&task, &actor);
            // The write and the hand-over to the loop run on their own task: if the caller goes
            // away (an HTTP client that timed out drops this future), a task that became durable
            // must still reach the loop, or it would sit `pending` until the next restart while a
            // retry with the same idempotency key is told it exists.
            let (store, commands) = (self.store.clone(), self.commands.clone());
            let created = tokio::spawn(async move {
                let outcome = store.create_task(task.clone(), idempotency, data).await;
                if let Ok(CreateOutcome::Created) = outcome {
                    // Durable now. If the loop is gone, recovery at the next start places it.
                    let _ = commands.send(Command::TaskCreated(Box::new(task))).await;
                }
                outcome
            });
            match created.await {
                Ok(Ok(CreateOutcome::Created)) => {
                    Ok(Submitted { id, status: TaskStatus::Pending, existing: false })
                }
                Ok(Ok(CreateOutcome::Existing(t))) => {
                    Ok(Submitted { id: t.id, status: t.status, existing: true })
                }
                Ok(Ok(CreateOutcome::Conflict { existing })) => Err(SubmitError::Conflict(existing)),
                Ok(Err(e)) => Err(SubmitError::Unavailable(format!("task not stored: {e}"))),
                Err(e) => Err(SubmitError::Unavailable(format!("task not stored: {e}"))),
            }
        })
    }

    fn cancel(&self, actor: String, id: TaskId) -> BoxFuture<'_, Result<(), CancelError>> {
        Box::pin(async move {
            self.ask(|reply| Command::Cancel { id, reply })
                .await
                .unwrap_or_else(|| Err(CancelError::Unavailable(ControlError::ShuttingDown.to_string())))?;
            // The cancel is under way; record who asked before answering.
            self.store
                .append_events(vec![crate::events::cancel_requested(id, &actor)])
                .await
                .map_err(|e| CancelError::Unavailable(format!("cancel not recorded: {e}")))
        })
    }

    fn drain(&self, actor: String) -> BoxFuture<'_, Result<DrainStatus, ControlError>> {
        Box::pin(async move {
            let status =
                self.ask(|reply| Command::Drain { reply }).await.ok_or(ControlError::ShuttingDown)?;
            self.store
                .append_events(vec![crate::events::draining(&actor, status.running)])
                .await
                .map_err(|source| ControlError::NotRecorded { action: "drain", source })?;
            Ok(status)
        })
    }

    fn metrics(&self) -> BoxFuture<'_, Result<String, ControlError>> {
        Box::pin(async move {
            let metrics = self.metrics.as_ref().ok_or(ControlError::NoMetrics)?;
            let peers = self.ask(|reply| Command::Peers { reply }).await.ok_or(ControlError::ShuttingDown)?;
            let states: Vec<_> = peers.iter().map(|p| p.state).collect();
            metrics.render(&self.store, &states).map_err(ControlError::Unavailable)
        })
    }

    fn node(&self) -> BoxFuture<'_, Result<NodeInfo, ControlError>> {
        Box::pin(
            async move { self.ask(|reply| Command::Node { reply }).await.ok_or(ControlError::ShuttingDown) },
        )
    }

    fn peers(&self) -> BoxFuture<'_, Result<Vec<PeerEntry>, ControlError>> {
        Box::pin(
            async move { self.ask(|reply| Command::Peers { reply }).await.ok_or(ControlError::ShuttingDown) },
        )
    }

    fn readiness(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async move {
            self.ask(|reply| Command::Readiness { reply }).await.unwrap_or_else(|| {
                vec![Check {
                    name: "event_loop".into(),
                    ok: false,
                    detail: ControlError::ShuttingDown.to_string(),
                }]
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use orgmesh_protocol::{Org, PeerId};

    use super::*;

    /// Regression (found by the chaos test): a client that gave up on `POST /v1/tasks` made the
    /// server drop the submit future after the task was stored but before the loop heard of it,
    /// so the task stayed `pending` forever while a retry with the same key was told it exists.
    #[tokio::test]
    async fn a_submission_whose_caller_went_away_still_reaches_the_loop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("orgmesh.redb")).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let origin =
            TaskOrigin { peer_id: PeerId::new("12D3KooWorigin").unwrap(), org: Org::new("acme").unwrap() };
        let handle = NodeHandle::new(tx, store.clone(), origin);
        let spec = TaskSpec::new(vec!["true".into()]);
        {
            let mut submit = handle.submit("test".into(), spec, None);
            // Polled once (the write is under way), then dropped, as a disconnected client's is.
            let waker = futures::task::noop_waker();
            let _ = submit.as_mut().poll(&mut std::task::Context::from_waker(&waker));
        }
        let command = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
        let Ok(Some(Command::TaskCreated(task))) = command else {
            panic!("the loop never heard of the task")
        };
        assert_eq!(store.task(task.id).unwrap().map(|t| t.id), Some(task.id));
    }
}
