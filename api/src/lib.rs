//! orgmesh's local REST + SSE API (see INTERFACE.md): task submission and reads, logs (plain and
//! followed as SSE), the event stream with resume, node and peer views, health and readiness.
//! Errors are `application/problem+json`. Reads go to the store; everything that needs a decision
//! goes through [`Control`]. Binds 127.0.0.1 unless configured otherwise.
//!
//! Layout:
//! - [`control`](Control): the trait the node implements, and the JSON shapes of its views.
//! - `problem`: the problem+json error type every handler returns, and the 404/405 fallbacks.
//! - `tasks`: submit (idempotency keys), list (cursor), one task (ETag), cancel.
//! - `logs`: task output, plain or followed as SSE with byte-offset ids.
//! - `events`: the event log as SSE with exact resume.
//! - `node`: health, readiness, node, peers, drain.
//! - `dashboard`: the web dashboard at `/` (embedded HTML, CSS and JS under a strict CSP).
//! - `shutdown`: the signal [`serve`] hands to SSE streams so they end at shutdown.
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

mod control;
mod dashboard;
mod events;
mod logs;
mod node;
mod problem;
mod shutdown;
mod tasks;

pub use control::{
    BoxFuture, CancelError, Check, Control, DrainStatus, NodeInfo, PeerEntry, SubmitError, Submitted,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use orgmesh_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::shutdown::Shutdown;

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    /// The node's store, for reads and subscriptions.
    pub store: Store,
    /// The node, for commands.
    pub control: Arc<dyn Control>,
}

impl ApiState {
    /// State over `store` (reads) and `control` (commands).
    pub fn new(store: Store, control: Arc<dyn Control>) -> Self {
        Self { store, control }
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// The full router: every INTERFACE.md endpoint this build serves.
///
/// Unknown paths answer 404 and known paths with another method 405, both as problem+json.
pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .route("/healthz", get(node::healthz))
        .route("/readyz", get(node::readyz))
        .route("/v1/node", get(node::node))
        .route("/v1/peers", get(node::peers))
        .route("/v1/drain", post(node::drain))
        .route(
            "/v1/tasks",
            get(tasks::list).post(tasks::submit).layer(DefaultBodyLimit::max(tasks::MAX_BODY_BYTES)),
        )
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{id}/logs", get(logs::logs))
        .route("/v1/events", get(events::events))
        .fallback(problem::not_found_fallback)
        .method_not_allowed_fallback(problem::method_not_allowed_fallback)
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves; open SSE streams end too.
///
/// When `shutdown` resolves the listener stops accepting, every SSE stream ends, and the call
/// returns once the requests in flight are answered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = CancellationToken::new();
    let router = router.layer(axum::Extension(Shutdown::new(token.clone())));
    let signal = async move {
        shutdown.await;
        tracing::info!("api: shutting down");
        token.cancel();
    };
    axum::serve(listener, router).with_graceful_shutdown(signal).await
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
