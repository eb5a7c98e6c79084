//! The one list of the API's routes: method, path, the scope a caller needs, and the handler.
//! The router is built from it, the auth layer reads scopes from it, and a test holds the
//! OpenAPI document to it (same paths and methods, same scopes), so none of the three can drift
//! from the others. Adding an endpoint means adding a line here and a `#[utoipa::path]`.

use axum::http::Method;
use axum::routing::{MethodRouter, get, post};

use crate::caller::Scope;
use crate::state::ApiState;
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

const OPEN: Option<Scope> = None;
const READ: Option<Scope> = Some(Scope::Read);
const SUBMIT: Option<Scope> = Some(Scope::Submit);
const ADMIN: Option<Scope> = Some(Scope::Admin);

const fn at_get(path: &'static str, scope: Option<Scope>, handler: fn() -> MethodRouter<ApiState>) -> Route {
    Route { method: Method::GET, path, scope, handler }
}

const fn at_post(path: &'static str, scope: Option<Scope>, handler: fn() -> MethodRouter<ApiState>) -> Route {
    Route { method: Method::POST, path, scope, handler }
}

/// Every route this build serves.
pub(crate) static ROUTES: &[Route] = &[
    // The dashboard's page and assets hold no data (everything comes from the API with the
    // user's token), and must load before a token can be asked for.
    at_get("/", OPEN, || get(dashboard::index)),
    at_get("/assets/{file}", OPEN, || get(dashboard::asset)),
    at_get("/healthz", OPEN, || get(node::healthz)),
    at_get("/readyz", OPEN, || get(node::readyz)),
    at_get("/metrics", READ, || get(metrics::metrics)),
    at_get("/openapi.json", READ, || get(openapi::openapi_json)),
    at_get("/v1/node", READ, || get(node::node)),
    at_get("/v1/peers", READ, || get(node::peers)),
    at_post("/v1/drain", ADMIN, || post(node::drain)),
    at_get("/v1/tasks", READ, || get(tasks::list)),
    at_post("/v1/tasks", SUBMIT, || post(tasks::submit)),
    at_get("/v1/tasks/{id}", READ, || get(tasks::get)),
    at_post("/v1/tasks/{id}/cancel", SUBMIT, || post(tasks::cancel)),
    at_get("/v1/tasks/{id}/logs", READ, || get(logs::logs)),
    at_get("/v1/events", READ, || get(events::events)),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::openapi::document;

    /// (method, path) → the scopes its security requirement names (empty when open).
    fn documented() -> BTreeSet<(String, String, Vec<String>)> {
        let doc = document();
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
}
