//! How long-lived responses (SSE) learn that the server is shutting down. [`crate::serve`] puts a
//! [`Shutdown`] into every request's extensions and cancels it when its shutdown future resolves;
//! streams end at that point, so graceful shutdown is not held open by a follower. Without
//! `serve` (a router driven directly, as in tests) streams simply run until the client leaves.
//! This module must never end a stream by itself: only the injected signal does.

use axum::http::request::Parts;
use tokio_util::sync::CancellationToken;

/// The server's shutdown signal, as seen by one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shutdown(Option<CancellationToken>);

impl Shutdown {
    /// A signal driven by `token`.
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self(Some(token))
    }

    /// Resolves when shutdown starts; never, when there is no signal.
    pub(crate) async fn wait(self) {
        match self.0 {
            Some(token) => token.cancelled_owned().await,
            None => std::future::pending().await,
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Shutdown {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Shutdown>().cloned().unwrap_or_default())
    }
}
