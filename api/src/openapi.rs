//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the JSON shapes' `ToSchema` derives in `schema` (where types owned by
//! `protocol` are described by mirror shapes); a test in `routes` checks that the document lists
//! exactly the router's routes, with their scopes. This module only reads the handlers'
//! attributes: nothing here may be imported by a handler, or the two could not be read apart.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::schema::{self, Check, DrainStatus, NodeInfo, PeerEntry};

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
        schema::Isolation,
        schema::TaskSpec,
        schema::Resources,
        schema::Constraints,
        schema::Task,
        schema::TaskOrigin,
        schema::TaskPlacement,
        schema::AttemptRecord,
        schema::Receipt,
        schema::Usage,
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
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(document).clone())
}

/// The served document: [`ApiDoc`] plus what the attributes cannot say. Every operation lists
/// the errors the layers in front of it can answer (400, 401, 403, 413, 429, 503), and parameters
/// carry the exact rules their parsers apply, so a generated client (or schemathesis) knows what
/// is valid.
pub(crate) fn document() -> serde_json::Value {
    use serde_json::json;
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let problem = |description: &str| {
        json!({"description": description, "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}}})
    };
    // Crockford base32 as `TaskId` parses it: 26 characters, case-insensitive, the first 0-7.
    let task_id = json!({"type": "string", "pattern": "^[0-7][0-9A-TV-Za-tv-z]{25}$"});
    let param_schema = |name: &str, place: &str| -> Option<serde_json::Value> {
        Some(match (name, place) {
            ("id", "path") | ("cursor", "query") => task_id.clone(),
            ("limit", "query") => json!({"type": "integer", "minimum": 1, "maximum": 1000}),
            ("status", "query") => json!({"type": "string", "enum": orgmesh_protocol::TaskStatus::ALL
                .iter().map(|s| s.as_str()).collect::<Vec<_>>()}),
            // A bare `?follow` means true, as do `1` and `yes`.
            ("follow", "query") => {
                json!({"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", ""]})
            }
            ("tail", "query") => json!({"type": "integer", "minimum": 0, "maximum": 10_000}),
            ("offset" | "since", "query") | ("Last-Event-ID", "header") => {
                json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
            }
            ("Idempotency-Key", "header") => json!({"type": "string", "pattern": "^[!-~]{1,255}$"}),
            ("file", "path") => {
                json!({"type": "string", "enum": crate::dashboard::asset_names().collect::<Vec<_>>()})
            }
            _ => return None,
        })
    };
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else { return doc };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            let mut takes_input = op.get("requestBody").is_some();
            for param in op.get_mut("parameters").and_then(|p| p.as_array_mut()).into_iter().flatten() {
                takes_input = true;
                let name = param["name"].as_str().unwrap_or_default().to_string();
                let place = param["in"].as_str().unwrap_or_default().to_string();
                if let Some(schema) = param_schema(&name, &place) {
                    param["schema"] = schema;
                }
            }
            let secured = op.get("security").and_then(|s| s.as_array()).is_some_and(|s| !s.is_empty());
            let has_body = op.get("requestBody").is_some();
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else { continue };
            let mut add = |code: &str, why: &str| {
                responses.entry(code.to_string()).or_insert_with(|| problem(why));
            };
            if takes_input && path != "/assets/{file}" {
                add("400", "A malformed parameter, header or body");
            }
            if secured {
                add("401", "No token, or a token this node does not know");
                add("403", "The token lacks the scope, or a browser's cross-site write");
                add("429", "Over the rate limit; see Retry-After");
            }
            if has_body {
                add("413", "The body is over api.max_body_bytes");
            }
            if method == "post" && secured {
                add("503", "The node is stopping or shutting down");
            }
        }
    }
    // Each server-sent event (the log stream with follow=true, and the event log).
    let sse = json!({"schema": {"type": "object", "properties": {
        "id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}}}});
    for pointer in [
        "/paths/~1v1~1tasks~1{id}~1logs/get/responses/200/content",
        "/paths/~1v1~1events/get/responses/200/content",
    ] {
        if let Some(ok) = doc.pointer_mut(pointer) {
            ok["text/event-stream"] = sse.clone();
        }
    }
    refine_task_spec(&mut doc);
    doc
}

/// The rules `TaskSpec::validate` applies, as JSON Schema, so valid means accepted.
fn refine_task_spec(doc: &mut serde_json::Value) {
    use orgmesh_protocol::task::MAX_TIMEOUT_S;
    use serde_json::json;
    let no_nul = json!({"type": "string", "pattern": "^[^\\u0000]*$"});
    let Some(spec) = doc.pointer_mut("/components/schemas/TaskSpec/properties") else { return };
    spec["command"] = json!({
        "type": "array", "minItems": 1, "items": no_nul,
        "prefixItems": [{"type": "string", "minLength": 1, "pattern": "^[^\\u0000]+$"}],
        "description": "Program and arguments, run directly", "example": ["sh", "-c", "echo hello"],
    });
    spec["env"] = json!({"type": "object", "additionalProperties": no_nul,
        "propertyNames": {"pattern": "^[^=\\u0000]+$"}});
    for (field, min, default) in
        [("timeout_s", 1, 3600), ("queue_timeout_s", 0, 600), ("replace_after_s", 1, 60)]
    {
        spec[field] =
            json!({"type": "integer", "minimum": min, "maximum": MAX_TIMEOUT_S, "default": default});
    }
    spec["max_attempts"] = json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 3});
    spec["priority"] = json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX, "default": 0});
    for field in ["resources", "constraints"] {
        let name = if field == "resources" { "Resources" } else { "Constraints" };
        spec[field] = json!({"$ref": format!("#/components/schemas/{name}")});
    }
    if let Some(r) = doc.pointer_mut("/components/schemas/Resources/properties") {
        for (field, max, default) in
            [("cpu_millis", 1_024_000u64, 100), ("memory_mb", 1 << 30, 64), ("gpus", 1024, 0)]
        {
            r[field] = json!({"type": "integer", "minimum": 0, "maximum": max, "default": default});
        }
    }
    if let Some(c) = doc.pointer_mut("/components/schemas/Constraints/properties") {
        c["orgs"] = json!({"type": "array", "items": {"type": "string", "pattern": "^[a-z0-9_.-]{1,63}$"}});
        c["node_labels"] = json!({"type": "object", "additionalProperties": {"type": "string"},
            "propertyNames": {"minLength": 1}});
    }
    for name in ["TaskSpec", "Resources", "Constraints"] {
        if let Some(schema) =
            doc.pointer_mut(&format!("/components/schemas/{name}")).and_then(|s| s.as_object_mut())
        {
            // The parser refuses unknown fields (a typo must not be silently ignored).
            schema.insert("additionalProperties".into(), json!(false));
            // Every field but `command` has a default.
            if name != "TaskSpec" {
                schema.remove("required");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use orgmesh_protocol::membership::PeerState;
    use orgmesh_protocol::task::{AttemptRecord, TaskOrigin, TaskPlacement};
    use orgmesh_protocol::{Attempt, Capacity, Isolation, Org, PeerId, Task, TaskId, TaskSpec, Timestamp};
    use serde_json::Value;

    use super::*;

    /// The documented properties of the component schema `name`.
    fn documented_fields(doc: &Value, name: &str) -> BTreeSet<String> {
        doc.pointer(&format!("/components/schemas/{name}/properties"))
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("the document has no schema {name} with properties"))
            .keys()
            .cloned()
            .collect()
    }

    /// The mirror shapes are written by hand, so a field added to a protocol type (or removed
    /// from it) would silently be missing from (or linger in) the document: each mirror, and
    /// each view, must name exactly the fields its real type serializes.
    #[test]
    fn every_shape_names_exactly_the_fields_the_real_type_serializes() {
        let peer = PeerId::new("12D3KooWpeer").unwrap();
        let org = Org::new("acme").unwrap();
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({"command": ["true"]})).unwrap();
        let origin = TaskOrigin { peer_id: peer.clone(), org: org.clone() };
        let mut task = Task::new(TaskId::new(1, 1), spec, origin, Timestamp(1));
        let placement = TaskPlacement { peer_id: peer.clone(), org: org.clone(), name: "n".into() };
        task.placement = Some(placement.clone());
        task.history.push(AttemptRecord {
            attempt: Attempt(1),
            placement,
            placed_at: Timestamp(2),
            ended_at: Some(Timestamp(3)),
            outcome: Some("exit 0".into()),
            log_start: 0,
        });
        let receipt = orgmesh_protocol::receipt::Receipt {
            task: task.id,
            attempt: Attempt(1),
            origin: peer.clone(),
            host: peer.clone(),
            exit_code: Some(0),
            error: None,
            cancelled: false,
            log_len: 0,
            output_sha256: [0; 32],
            usage: Default::default(),
            finished_at_ms: 3,
        };
        let signed = orgmesh_protocol::receipt::SignedReceipt { receipt, signature: vec![0; 64] };
        task.receipt = Some(orgmesh_protocol::receipt::StoredReceipt { signed, digest_checked: true });
        let node = NodeInfo {
            peer_id: peer.clone(),
            org: org.clone(),
            name: "n".into(),
            version: "0".into(),
            listen_addrs: vec![],
            labels: Default::default(),
            capacity: Capacity::default(),
            started_at: Timestamp(1),
            draining: false,
            isolation: Isolation::default(),
            counters: Default::default(),
        };
        let entry = PeerEntry {
            peer_id: peer,
            org,
            name: "n".into(),
            state: PeerState::Alive,
            addrs: vec![],
            labels: Default::default(),
            capacity: Capacity::default(),
            last_seen: Timestamp(1),
            draining: false,
            isolation: Isolation::default(),
            sources: vec![],
        };
        let task = serde_json::to_value(&task).unwrap();
        let served = [
            ("Task", &task),
            ("TaskSpec", &task["spec"]),
            ("Resources", &task["spec"]["resources"]),
            ("Constraints", &task["spec"]["constraints"]),
            ("TaskOrigin", &task["origin"]),
            ("TaskPlacement", &task["placement"]),
            ("AttemptRecord", &task["history"][0]),
            ("Receipt", &task["receipt"]),
            ("Usage", &task["receipt"]["usage"]),
            ("Capacity", &serde_json::to_value(Capacity::default()).unwrap()),
            ("NodeInfo", &serde_json::to_value(&node).unwrap()),
            ("PeerEntry", &serde_json::to_value(&entry).unwrap()),
        ];
        let doc = document();
        for (name, value) in served {
            let real: BTreeSet<String> = value
                .as_object()
                .unwrap_or_else(|| panic!("{name} is not an object"))
                .keys()
                .cloned()
                .collect();
            assert_eq!(documented_fields(&doc, name), real, "{name}: documented (left) vs served (right)");
        }
        let isolation: Vec<Value> =
            [Isolation::None, Isolation::Sandbox].iter().map(|i| serde_json::to_value(i).unwrap()).collect();
        assert_eq!(doc["components"]["schemas"]["Isolation"]["enum"], Value::Array(isolation));
    }

    #[test]
    fn the_document_declares_the_bearer_scheme() {
        let doc = document();
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    }
}
