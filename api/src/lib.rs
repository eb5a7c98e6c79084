//! orgmesh's local REST + SSE API (see INTERFACE.md): task submission and reads, logs (plain and
//! followed as SSE), the event stream with resume, node and peer views, health and readiness.
//! Errors are `application/problem+json`. Reads go to the store; everything that needs a decision
//! goes through [`Control`]. Binds 127.0.0.1 unless configured otherwise; see `docs/security.md`
//! for tokens, scopes, TLS, CORS and rate limits.
//!
//! Layout. The modules form a DAG (`tests/module_graph.rs` keeps it so); this file only wires
//! them, and no module uses an item defined here. From the leaves up:
//! - `schema`: every JSON shape the API documents: the node's views, and mirror shapes of
//!   protocol types for the OpenAPI document.
//! - `caller`: [`Caller`] and [`Scope`], who is calling and what they may do.
//! - `problem`: the problem+json error type every handler returns, and the 404/405 fallbacks.
//! - `sse`: what the two SSE streams share (keep-alive, `Last-Event-ID`); `params`: request
//!   parameters several handlers parse (the task id); `shutdown`: the signal [`serve`] hands to
//!   SSE streams so they end at shutdown.
//! - [`control`](Control): the trait the node implements, its answers and errors.
//! - [`auth`]: the access policy: bearer tokens (hashed at rest), the loopback rule.
//!   [`ratelimit`]: the token bucket per caller behind 429.
//! - `state`: [`ApiState`], what every handler gets.
//! - `tasks`: submit (idempotency keys), list (cursor), one task (ETag), cancel.
//! - `logs`: task output, plain or followed as SSE with byte-offset ids.
//! - `events`: the event log as SSE with exact resume (`fanout` encodes each event once).
//! - `node`: health, readiness, node, peers, drain.
//! - `dashboard`: the web dashboard at `/` (embedded HTML, CSS and JS under a strict CSP).
//! - `metrics`: `GET /metrics`, rendered by the node; `openapi`: `GET /openapi.json` (utoipa).
//! - `routes`: the one list of routes with the scope each needs; the router is built from it.
//! - `access`: the middleware that authenticates, rate-limits and checks each route's scope.
//! - `browser_origin`: refuses browsers' cross-site writes, and tokenless requests whose HTTP
//!   `Host` is not a loopback name (DNS rebinding).
//! - [`tls`]: HTTPS with rustls from PEM files (or PEM fetched by the node, e.g. from tailscaled);
//!   `server`: the accept loop (plain or TLS) with header timeout, head size and connection limits.
//!
//! ```no_run
//! # async fn run(store: orgmesh_store::Store, control: std::sync::Arc<dyn orgmesh_api::Control>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! let router = orgmesh_api::router(orgmesh_api::ApiState::new(store, control));
//! orgmesh_api::serve(listener, router, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Nothing here decides a task's fate or writes to the store; a handler that needs either asks
//! the node through [`Control`].
#![warn(missing_docs)]

mod access;
pub mod auth;
mod browser_origin;
mod caller;
mod control;
mod dashboard;
mod events;
mod fanout;
mod logs;
mod metrics;
mod node;
mod openapi;
mod params;
mod problem;
pub mod ratelimit;
mod routes;
mod schema;
mod server;
mod shutdown;
mod sse;
mod state;
mod tasks;
pub mod tls;

pub use auth::{Security, SecurityError, TokenEntry};
pub use caller::{Caller, Scope};
pub use control::{BoxFuture, CancelError, Control, ControlError, SubmitError, Submitted};
pub use metrics::OPENMETRICS_CONTENT_TYPE;
pub use ratelimit::RateLimiter;
pub use schema::{Check, DrainStatus, NodeInfo, PeerEntry};
pub use server::{ConnLimits, serve_with};
pub use state::{ApiState, MAX_BODY_BYTES};
pub use tls::{TlsConfig, TlsError};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

/// The full router: every INTERFACE.md endpoint this build serves.
///
/// Unknown paths answer 404 and known paths with another method 405, both as problem+json.
/// Every request passes, from the outside in: the request span, CORS (which answers preflights
/// itself), then the browser guard (cross-site writes, DNS rebinding), then authentication, rate
/// limit and scope check (see [`auth`]), then the handler.
pub fn router(state: ApiState) -> axum::Router {
    let mut router = axum::Router::new();
    for route in routes::ROUTES {
        router = router.route(route.path, (route.handler)());
    }
    let mut router = router
        .fallback(problem::not_found_fallback)
        .method_not_allowed_fallback(problem::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), access::layer))
        .layer(middleware::from_fn_with_state(state.clone(), browser_origin::guard));
    if !state.cors_origins.is_empty() {
        router = router.layer(cors(&state.cors_origins));
    }
    router.layer(middleware::from_fn(request_span)).with_state(state)
}

/// CORS for the configured origins: the methods and headers this API uses, and the response
/// headers a browser client needs to read.
fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            header::IF_NONE_MATCH,
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
            HeaderName::from_static("x-request-id"),
        ])
}

/// Serves `router` on `listener` over plain HTTP with the default [`ConnLimits`] until `shutdown`
/// resolves; see [`serve_with`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, None, ConnLimits::default(), shutdown).await
}

/// Per-request tracing span and `x-request-id` (the client's, if sane, else a fresh one).
async fn request_span(req: Request, next: Next) -> Response {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = req
        .headers()
        .get("x-request-id")
        .filter(|v| v.len() <= 64 && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(NEXT.fetch_add(1, Ordering::Relaxed)));
    let span = tracing::info_span!(
        "http",
        id = %String::from_utf8_lossy(id.as_bytes()),
        method = %req.method(),
        path = %req.uri().path(),
    );
    async move {
        let started = Instant::now();
        let mut resp = next.run(req).await;
        let status = resp.status().as_u16();
        let ms = started.elapsed().as_millis() as u64;
        if resp.status().is_server_error() {
            tracing::warn!(status, ms, "answered");
        } else {
            tracing::debug!(status, ms, "answered");
        }
        resp.headers_mut().insert("x-request-id", id);
        resp
    }
    .instrument(span)
    .await
}
