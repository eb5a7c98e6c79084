//! The one list of the API's routes: method, path, the scope a caller needs, and the handler.
//! The router is built from it, the auth layer reads scopes from it, and a test holds the
//! OpenAPI document to it (same paths and methods, same scopes), so none of the three can drift
//! from the others. Adding an endpoint means adding a line here and a `#[utoipa::path]`.

use axum::http::Method;
use axum::routing::{MethodRouter, get, post};

use crate::ApiState;
use crate::auth::Scope;
use crate::{dashboard, events, logs, metrics, node, openapi, tasks};

/// One endpoint.
pub(crate) struct Route {
    /// Its method.
    pub(crate) method: Method,
    /// Its path, in axum's (and OpenAPI's) `{param}` syntax.
    pub(crate) path: &'static str,
    /// What a caller needs; `None` is open to anyone (liveness and readiness only).
    pub(crate) scope: Option<Scope>,
    /// The handler.
    pub(crate) handler: fn() -> MethodRouter<ApiState>,
}

/// Every route this build serves.
pub(crate) static ROUTES: &[Route] = &[
    // The dashboard's page and assets hold no data (everything comes from the API with the
    // user's token), and must load before a token can be asked for.
    Route { method: Method::GET, path: "/", scope: None, handler: || get(dashboard::index) },
    Route { method: Method::GET, path: "/assets/{file}", scope: None, handler: || get(dashboard::asset) },
    Route { method: Method::GET, path: "/healthz", scope: None, handler: || get(node::healthz) },
    Route { method: Method::GET, path: "/readyz", scope: None, handler: || get(node::readyz) },
    Route {
        method: Method::GET,
        path: "/metrics",
        scope: Some(Scope::Read),
        handler: || get(metrics::metrics),
    },
    Route {
        method: Method::GET,
        path: "/openapi.json",
        scope: Some(Scope::Read),
        handler: || get(openapi::openapi_json),
    },
    Route { method: Method::GET, path: "/v1/node", scope: Some(Scope::Read), handler: || get(node::node) },
    Route { method: Method::GET, path: "/v1/peers", scope: Some(Scope::Read), handler: || get(node::peers) },
    Route {
        method: Method::POST,
        path: "/v1/drain",
        scope: Some(Scope::Admin),
        handler: || post(node::drain),
    },
    Route { method: Method::GET, path: "/v1/tasks", scope: Some(Scope::Read), handler: || get(tasks::list) },
    Route {
        method: Method::POST,
        path: "/v1/tasks",
        scope: Some(Scope::Submit),
        handler: || post(tasks::submit),
    },
    Route {
        method: Method::GET,
        path: "/v1/tasks/{id}",
        scope: Some(Scope::Read),
        handler: || get(tasks::get),
    },
    Route {
        method: Method::POST,
        path: "/v1/tasks/{id}/cancel",
        scope: Some(Scope::Submit),
        handler: || post(tasks::cancel),
    },
    Route {
        method: Method::GET,
        path: "/v1/tasks/{id}/logs",
        scope: Some(Scope::Read),
        handler: || get(logs::logs),
    },
    Route {
        method: Method::GET,
        path: "/v1/events",
        scope: Some(Scope::Read),
        handler: || get(events::events),
    },
];

/// The scope `method path` needs: `None` when open. A known path with a method it does not
/// serve needs `read`, so a tokenless caller learns nothing from a 405 either.
pub(crate) fn scope_of(method: &Method, path: &str) -> Option<Scope> {
    // HEAD is answered by the GET handler, so it needs what GET needs.
    let method = if method == Method::HEAD { &Method::GET } else { method };
    match ROUTES.iter().find(|r| r.path == path && r.method == *method) {
        Some(route) => route.scope,
        None => Some(Scope::Read),
    }
}
