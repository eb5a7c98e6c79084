//! `NodeHandle`: the cloneable front door of a running node, implementing the API's `Control`.
//! Submissions are committed to the store here (so a 202 means durable) and then handed to the
//! event loop; everything else is a command with a oneshot reply. Holds no state of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orgmesh_api::{
    BoxFuture, CancelError, Check, Control, DrainStatus, NodeInfo, PeerEntry, SubmitError, Submitted,
};
use orgmesh_protocol::task::TaskOrigin;
use orgmesh_protocol::{Task, TaskId, TaskSpec, TaskStatus};
use orgmesh_store::{CreateOutcome, Idempotency, Store};
use tokio::sync::{mpsc, oneshot};

use crate::actor::{Command, StopReport};
use crate::wall_clock;

/// A handle to a running node's event loop.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    store: Store,
    origin: TaskOrigin,
    /// Set once a graceful stop began: submissions are refused from then on.
    stopping: Arc<AtomicBool>,
}

const GONE: &str = "the node is shutting down";

impl NodeHandle {
    /// A handle sending to `commands`.
    pub fn new(commands: mpsc::Sender<Command>, store: Store, origin: TaskOrigin) -> Self {
        Self { commands, store, origin, stopping: Arc::new(AtomicBool::new(false)) }
    }

    /// Stops gracefully (see `Command::Stop`): refuses new submissions at once, lets running
    /// attempts finish for up to `grace`, hands back the rest. Returns when the node may exit.
    pub async fn stop(&self, grace: Duration) -> StopReport {
        self.stopping.store(true, Ordering::SeqCst);
        self.ask(|reply| Command::Stop { grace, reply }).await.unwrap_or_default()
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
        Box::pin(async move {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(SubmitError::Unavailable("the node is stopping; submit to another node".into()));
            }
            spec.validate().map_err(|e| SubmitError::Invalid(e.to_string()))?;
            let now = wall_clock();
            let id = TaskId::new(now.0, rand::random::<u128>());
            let task = Task::new(id, spec, self.origin.clone(), now);
            let data = crate::events::task_event_data(&task);
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
        Box::pin(async move {
            self.ask(|reply| Command::Cancel { id, reply })
                .await
                .unwrap_or_else(|| Err(CancelError::Unavailable(GONE.into())))
        })
    }

    fn drain(&self) -> BoxFuture<'_, Result<DrainStatus, String>> {
        Box::pin(
            async move { self.ask(|reply| Command::Drain { reply }).await.ok_or_else(|| GONE.to_string()) },
        )
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
