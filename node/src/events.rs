//! The JSON payloads of task events, shared by every place that writes one, so `task.created`
//! and `task.succeeded` carry the same shape.

use orgmesh_protocol::Task;
use orgmesh_store::NewEvent;

/// The event announcing `task`'s current status (`task.<status>`).
pub(crate) fn task_event(task: &Task) -> NewEvent {
    NewEvent { kind: format!("task.{}", task.status), data: task_event_data(task) }
}

/// `{id, status, attempt, placement, exit_code, error}` as JSON text.
pub(crate) fn task_event_data(task: &Task) -> String {
    serde_json::json!({
        "id": task.id,
        "status": task.status,
        "attempt": task.attempt.0,
        "placement": task.placement,
        "exit_code": task.exit_code,
        "error": task.error,
    })
    .to_string()
}
