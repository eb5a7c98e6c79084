//! The node's own views: liveness (`/healthz`), readiness (`/readyz`), `/v1/node`, `/v1/peers`,
//! and `POST /v1/drain`. Liveness must never depend on the store or
//! the node's event loop: it answers as long as the process serves HTTP.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ApiState;
use crate::control::{Check, DrainStatus, NodeInfo};
use crate::problem::Problem;

/// `GET /healthz`: 200 while the process serves.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the store's check plus the node's; 200 when all pass, else 503 problem+json with
/// the checks as an extension member.
pub(crate) async fn readyz(State(state): State<ApiState>) -> Response {
    let store = match state.store.last_seq() {
        Ok(seq) => Check { name: "store".into(), ok: true, detail: format!("event log at seq {seq}") },
        Err(e) => Check { name: "store".into(), ok: false, detail: e.to_string() },
    };
    let mut checks = vec![store];
    checks.extend(state.control.readiness().await);
    let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect();
    let checks_json = serde_json::to_value(&checks).unwrap_or_default();
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready", "checks": checks_json }))).into_response()
    } else {
        Problem::unavailable(format!("not ready: {}", failing.join(", ")))
            .with("checks", checks_json)
            .into_response()
    }
}

/// `GET /v1/node`.
pub(crate) async fn node(State(state): State<ApiState>) -> Result<Json<NodeInfo>, Problem> {
    state.control.node().await.map(Json).map_err(Problem::unavailable)
}

/// `GET /v1/peers`: `{items: [...]}`, this node excluded (the node's `peers()` already does).
pub(crate) async fn peers(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, Problem> {
    let items = state.control.peers().await.map_err(Problem::unavailable)?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/drain`: stop taking new work; answers what still runs.
pub(crate) async fn drain(State(state): State<ApiState>) -> Result<Json<DrainStatus>, Problem> {
    state.control.drain().await.map(Json).map_err(Problem::unavailable)
}
