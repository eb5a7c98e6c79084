//! Request parameters more than one handler parses the same way, so their rules and messages
//! cannot drift apart: today the `{id}` path segment of the task routes. Parsers only: nothing
//! here reads the store or the node.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use orgmesh_protocol::TaskId;

use crate::problem::Problem;

/// Parses the `{id}` path segment: 400 when it cannot be a task id.
pub(crate) fn task_id(path: Result<Path<String>, PathRejection>) -> Result<TaskId, Problem> {
    let Path(text) = path.map_err(|e| Problem::bad_request(e.body_text()))?;
    text.parse::<TaskId>().map_err(|e| Problem::bad_request(e.to_string()))
}
