//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the JSON shapes' `ToSchema` derives. Types owned by `protocol` (which must not
//! depend on utoipa) are described by the mirror shapes in [`schema`]; a test checks that the
//! document lists exactly the router's routes, with their scopes.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::control::{Check, DrainStatus, NodeInfo, PeerEntry};

/// The document's root.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orgmesh node API",
        description = "The local REST + SSE API of one orgmesh node. Errors are application/problem+json. \
                       Send `Authorization: Bearer <token>`; each operation lists the scope it needs \
                       (admin implies submit and read). /healthz and /readyz are open."
    ),
    paths(
        crate::dashboard::index,
        crate::dashboard::asset,
        crate::node::healthz,
        crate::node::readyz,
        crate::metrics::metrics,
        openapi_json,
        crate::node::node,
        crate::node::peers,
        crate::node::drain,
        crate::tasks::list,
        crate::tasks::submit,
        crate::tasks::get,
        crate::tasks::cancel,
        crate::logs::logs,
        crate::events::events,
    ),
    components(schemas(
        NodeInfo,
        PeerEntry,
        Check,
        DrainStatus,
        schema::Capacity,
        schema::TaskSpec,
        schema::Resources,
        schema::Constraints,
        schema::Task,
        schema::TaskOrigin,
        schema::TaskPlacement,
        schema::AttemptRecord,
        schema::TaskList,
        schema::PeerList,
        schema::Accepted,
        schema::CancelAccepted,
        schema::Problem,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "node", description = "This node: health, readiness, identity, peers, drain"),
        (name = "tasks", description = "Submit, read, cancel tasks and read their logs"),
        (name = "events", description = "The event stream"),
        (name = "meta", description = "Metrics and this document"),
    )
)]
pub(crate) struct ApiDoc;

/// Declares the `bearer` security scheme the operations refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(("bearer" = ["read"])),
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// Shapes of the JSON bodies whose Rust types live in `protocol` or are built with `json!`.
#[allow(dead_code)]
pub(crate) mod schema {
    use std::collections::BTreeMap;

    use utoipa::ToSchema;

    /// What a node has and has left.
    #[derive(ToSchema)]
    pub(crate) struct Capacity {
        cpu_millis: u32,
        cpu_millis_free: u32,
        memory_mb: u64,
        memory_mb_free: u64,
        gpus: u32,
        gpus_free: u32,
        slots: u32,
        free_slots: u32,
        running_tasks: u32,
    }

    /// Resources reserved for a task.
    #[derive(ToSchema)]
    pub(crate) struct Resources {
        #[schema(default = 100)]
        cpu_millis: u32,
        #[schema(default = 64)]
        memory_mb: u64,
        #[schema(default = 0)]
        gpus: u32,
    }

    /// Where a task may run.
    #[derive(ToSchema)]
    pub(crate) struct Constraints {
        /// Orgs whose nodes may run it; empty means any.
        orgs: Vec<String>,
        /// Labels the node must carry.
        node_labels: BTreeMap<String, String>,
    }

    /// A task as submitted; only `command` is required.
    #[derive(ToSchema)]
    pub(crate) struct TaskSpec {
        /// Program and arguments, run directly.
        #[schema(example = json!(["sh", "-c", "echo hello"]))]
        command: Vec<String>,
        env: Option<BTreeMap<String, String>>,
        resources: Option<Resources>,
        constraints: Option<Constraints>,
        #[schema(default = 3600)]
        timeout_s: Option<u64>,
        #[schema(default = 3)]
        max_attempts: Option<u32>,
        #[schema(default = 600)]
        queue_timeout_s: Option<u64>,
        #[schema(default = 0)]
        priority: Option<i32>,
    }

    /// The node that owns a task.
    #[derive(ToSchema)]
    pub(crate) struct TaskOrigin {
        peer_id: String,
        org: String,
    }

    /// Where an attempt runs.
    #[derive(ToSchema)]
    pub(crate) struct TaskPlacement {
        peer_id: String,
        org: String,
        name: String,
    }

    /// One attempt of a task.
    #[derive(ToSchema)]
    pub(crate) struct AttemptRecord {
        attempt: u32,
        placement: TaskPlacement,
        #[schema(format = DateTime)]
        placed_at: String,
        #[schema(format = DateTime)]
        ended_at: Option<String>,
        outcome: Option<String>,
    }

    /// A task.
    #[derive(ToSchema)]
    pub(crate) struct Task {
        id: String,
        /// pending, placing, placed, running, unreachable, succeeded, failed, cancelled
        status: String,
        spec: TaskSpec,
        origin: TaskOrigin,
        placement: Option<TaskPlacement>,
        attempt: u32,
        exit_code: Option<i32>,
        error: Option<String>,
        #[schema(format = DateTime)]
        created_at: String,
        #[schema(format = DateTime)]
        updated_at: String,
        history: Vec<AttemptRecord>,
    }

    /// A page of tasks, newest first.
    #[derive(ToSchema)]
    pub(crate) struct TaskList {
        items: Vec<Task>,
        next_cursor: Option<String>,
    }

    /// The peers this node knows.
    #[derive(ToSchema)]
    pub(crate) struct PeerList {
        items: Vec<crate::control::PeerEntry>,
    }

    /// A submit's answer.
    #[derive(ToSchema)]
    pub(crate) struct Accepted {
        id: String,
        status: String,
    }

    /// A cancel's answer.
    #[derive(ToSchema)]
    pub(crate) struct CancelAccepted {
        id: String,
        status: Option<String>,
        cancel_requested: bool,
    }

    /// RFC 9457 problem details (`application/problem+json`).
    #[derive(ToSchema, serde::Serialize)]
    pub(crate) struct Problem {
        #[serde(rename = "type")]
        kind: String,
        title: String,
        status: u16,
        detail: String,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::routes::ROUTES;

    /// (method, path) → the scopes its security requirement names (empty when open).
    fn documented() -> BTreeSet<(String, String, Vec<String>)> {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if !["get", "post", "put", "patch", "delete", "head", "options"].contains(&method.as_str()) {
                    continue;
                }
                let scopes: Vec<String> = op["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|req| req["bearer"].as_array())
                    .flatten()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect();
                out.insert((method.to_uppercase(), path.clone(), scopes));
            }
        }
        out
    }

    #[test]
    fn the_document_lists_exactly_the_routes_with_their_scopes() {
        let routes: BTreeSet<(String, String, Vec<String>)> = ROUTES
            .iter()
            .map(|r| {
                let scopes = r.scope.map(|s| vec![s.as_str().to_string()]).unwrap_or_default();
                (r.method.to_string(), r.path.to_string(), scopes)
            })
            .collect();
        let doc = documented();
        let missing: Vec<_> = routes.difference(&doc).collect();
        let extra: Vec<_> = doc.difference(&routes).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "routes not documented (or with another scope): {missing:?}\ndocumented but not routed: {extra:?}"
        );
    }

    #[test]
    fn the_document_declares_the_bearer_scheme() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    }
}
