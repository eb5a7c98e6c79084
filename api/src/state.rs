//! [`ApiState`]: what every handler and middleware gets (the store to read, the node to ask,
//! the access policy and the limits), and how the node builds it. A module of its own so that
//! handlers and middleware depend on it and the crate root only wires: the root must not own a
//! type its modules use, or every module would lean on every other through it.

use std::sync::Arc;

use axum::http::HeaderValue;
use orgmesh_store::StoreReader;

use crate::auth::Security;
use crate::control::Control;
use crate::fanout;

/// Largest accepted submit body unless configured otherwise.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    /// The node's store, for reads and subscriptions: a read-only handle, so nothing in the
    /// API can write behind the node's back.
    pub store: StoreReader,
    /// The node, for commands.
    pub control: Arc<dyn Control>,
    /// Who may call what.
    pub(crate) security: Arc<Security>,
    /// Largest request body.
    pub(crate) max_body_bytes: usize,
    /// Browser origins allowed by CORS; empty: none.
    pub(crate) cors_origins: Vec<HeaderValue>,
    /// Encoded events for `/v1/events` clients.
    pub(crate) events: fanout::Fanout,
}

impl ApiState {
    /// State over `store` (reads) and `control` (commands), open to every caller (see
    /// [`Security::open`]) until [`with_security`](Self::with_security) sets a policy.
    /// `store` may be a [`Store`](orgmesh_store::Store), taken as its reader.
    pub fn new(store: impl Into<StoreReader>, control: Arc<dyn Control>) -> Self {
        Self {
            store: store.into(),
            control,
            security: Arc::new(Security::open()),
            max_body_bytes: MAX_BODY_BYTES,
            cors_origins: Vec::new(),
            events: fanout::Fanout::default(),
        }
    }

    /// Sets who may call what.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = Arc::new(security);
        self
    }

    /// Sets the largest accepted request body (default [`MAX_BODY_BYTES`]).
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Allows browsers on these origins (`https://dash.example.com`) to call the API (CORS).
    /// Fails on an origin that is not a valid header value.
    pub fn with_cors_origins(mut self, origins: &[String]) -> Result<Self, String> {
        self.cors_origins = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .map_err(|_| format!("invalid CORS origin {o:?}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(self)
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}
