//! The node's own views: liveness (`/healthz`), readiness (`/readyz`), `/v1/node`, `/v1/peers`,
//! `POST /v1/drain`, and the placeholder page at `/`. Liveness must never depend on the store or
//! the node's event loop: it answers as long as the process serves HTTP.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
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

/// `GET /`: until the dashboard ships, a page that says so and links the API.
pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>orgmesh</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;line-height:1.5}code{background:#eee;padding:0 .2em}</style>
</head>
<body>
<h1>orgmesh</h1>
<p>The dashboard comes in a later release. Meanwhile, this node's API:</p>
<ul>
<li><a href="/healthz"><code>GET /healthz</code></a> liveness</li>
<li><a href="/readyz"><code>GET /readyz</code></a> readiness checks</li>
<li><a href="/v1/node"><code>GET /v1/node</code></a> this node</li>
<li><a href="/v1/peers"><code>GET /v1/peers</code></a> known peers</li>
<li><a href="/v1/tasks"><code>GET /v1/tasks</code></a> tasks, newest first (<code>?status=</code>, <code>?limit=</code>, <code>?cursor=</code>)</li>
<li><code>POST /v1/tasks</code> submit a task spec</li>
<li><code>GET /v1/tasks/{id}</code>, <code>POST /v1/tasks/{id}/cancel</code>, <code>GET /v1/tasks/{id}/logs</code> (<code>?follow=true</code> for SSE)</li>
<li><a href="/v1/events?since=0"><code>GET /v1/events</code></a> the event stream (SSE)</li>
</ul>
</body>
</html>
"#;
