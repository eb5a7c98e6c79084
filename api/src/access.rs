//! The access middleware in front of every handler: authenticates the request against the
//! [`Security`](crate::auth::Security) policy, applies the rate limit, checks the scope the
//! route table asks for, and hands the [`Caller`] to the handler. A missing or unknown token
//! answers 401 with `WWW-Authenticate: Bearer`; a known token without the scope answers 403.
//!
//! This module must never log or echo a presented token.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::AuthError;
use crate::caller::{Caller, Scope, grants};
use crate::problem::Problem;
use crate::routes;
use crate::state::ApiState;

/// 401 with the challenge that tells clients what to send.
fn unauthorized(e: AuthError) -> Response {
    let mut resp = Problem::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
    let challenge = match e {
        AuthError::Missing => "Bearer realm=\"orgmesh\"",
        _ => "Bearer realm=\"orgmesh\", error=\"invalid_token\"",
    };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    resp
}

/// Middleware: authenticates, checks the route's scope, applies the rate limit, and hands the
/// [`Caller`] to the handler as an extension.
pub(crate) async fn layer(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let security = &state.security;
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    // Unknown paths need `read` too, so probing the API without a token learns nothing.
    let needed = match &path {
        Some(path) => routes::scope_of(req.method(), path),
        None => Some(Scope::Read),
    };
    let Some(needed) = needed else {
        // Open routes (liveness, readiness): no token, no rate limit.
        return next.run(req).await;
    };
    let caller = match security.authenticate(req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        Ok(caller) => caller,
        Err(e) => return unauthorized(e),
    };
    if let Some(limiter) = security.limiter() {
        // Tokens are limited by name; tokenless callers by client IP.
        let key = if caller.actor == Caller::ANONYMOUS_LOOPBACK {
            let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
            format!("ip:{}", ip.unwrap_or_else(|| "unknown".into()))
        } else {
            format!("token:{}", caller.actor)
        };
        if let Err(wait) = limiter.check(&key, std::time::Instant::now()) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let secs = secs.max(1);
            let mut resp = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("rate limit exceeded for {}; retry in {secs} s", caller.actor),
            )
            .into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return resp;
        }
    }
    if !grants(&caller.scopes, needed) {
        let held: Vec<&str> = caller.scopes.iter().map(|s| s.as_str()).collect();
        return Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has scopes [{}]; {} {} needs {needed}",
                caller.actor,
                held.join(", "),
                req.method(),
                path.as_deref().unwrap_or("this path")
            ),
        )
        .with("required_scope", serde_json::json!(needed.as_str()))
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}
