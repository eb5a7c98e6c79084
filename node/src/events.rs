//! The JSON payloads of task events, shared by every place that writes one, so `task.created`
//! and `task.succeeded` carry the same shape; and the events that record who asked for a change
//! through the API (`actor`: a token's name, or `anonymous@loopback`).

use orgmesh_protocol::{Task, TaskId};
use orgmesh_store::NewEvent;

/// The event announcing `task`'s current status (`task.<status>`).
pub(crate) fn task_event(task: &Task) -> NewEvent {
    NewEvent { kind: format!("task.{}", task.status), data: task_event_data(task) }
}

/// `{id, status, attempt, placement, exit_code, error}` as JSON text.
pub(crate) fn task_event_data(task: &Task) -> String {
    task_event_json(task).to_string()
}

fn task_event_json(task: &Task) -> serde_json::Value {
    serde_json::json!({
        "id": task.id,
        "status": task.status,
        "attempt": task.attempt.0,
        "placement": task.placement,
        "exit_code": task.exit_code,
        "error": task.error,
    })
}

/// `task.created`'s data: the task's, plus who submitted it.
pub(crate) fn task_created_data(task: &Task, actor: &str) -> String {
    let mut data = task_event_json(task);
    data["actor"] = serde_json::json!(actor);
    data.to_string()
}

/// `task.cancel_requested`: `actor` asked to cancel task `id` (its `task.cancelled` follows when
/// the cancel lands).
pub(crate) fn cancel_requested(id: TaskId, actor: &str) -> NewEvent {
    NewEvent {
        kind: "task.cancel_requested".into(),
        data: serde_json::json!({ "id": id, "actor": actor }).to_string(),
    }
}

/// `node.draining`: `actor` drained this node; `running` attempts were still running here.
pub(crate) fn draining(actor: &str, running: u32) -> NewEvent {
    NewEvent {
        kind: "node.draining".into(),
        data: serde_json::json!({ "actor": actor, "running": running }).to_string(),
    }
}
