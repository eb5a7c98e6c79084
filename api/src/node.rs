//! The node's own views: liveness (`/healthz`), readiness (`/readyz`), `/v1/node`, `/v1/peers`,
//! and `POST /v1/drain`. Liveness must never depend on the store or
//! the node's event loop: it answers as long as the process serves HTTP.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::caller::Caller;
use crate::problem::Problem;
use crate::schema::{Check, DrainStatus, NodeInfo};
use crate::state::ApiState;

/// `GET /healthz`: 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "node", security(()),
    responses((status = 200, description = "The process serves", body = Object, example = json!({"status": "ok"}))))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the store's check plus the node's; 200 when all pass, else 503 problem+json with
/// the checks as an extension member.
#[utoipa::path(get, path = "/readyz", tag = "node", security(()), responses(
    (status = 200, description = "Every check passes", body = Object),
    (status = 503, description = "A check fails; `checks` lists them", body = crate::schema::Problem, content_type = "application/problem+json"),
))]
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
#[utoipa::path(get, path = "/v1/node", tag = "node", security(("bearer" = ["read"])),
    responses((status = 200, description = "This node", body = NodeInfo)))]
pub(crate) async fn node(State(state): State<ApiState>) -> Result<Json<NodeInfo>, Problem> {
    Ok(Json(state.control.node().await?))
}

/// `GET /v1/peers`: `{items: [...]}`, this node excluded (the node's `peers()` already does).
#[utoipa::path(get, path = "/v1/peers", tag = "node", security(("bearer" = ["read"])),
    responses((status = 200, description = "Every peer this node knows", body = crate::schema::PeerList)))]
pub(crate) async fn peers(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, Problem> {
    let items = state.control.peers().await?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/drain`: stop taking new work; answers what still runs. Recorded with its actor.
#[utoipa::path(post, path = "/v1/drain", tag = "node", security(("bearer" = ["admin"])),
    responses((status = 200, description = "Draining", body = DrainStatus)))]
pub(crate) async fn drain(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<DrainStatus>, Problem> {
    Ok(Json(state.control.drain(caller.actor).await?))
}
