//! RFC 9457 problem details: the one shape every error of this API takes
//! (`application/problem+json`). Handlers return `Result<_, Problem>`; nothing else builds error
//! bodies, and the status each typed error answers is decided here. A problem never echoes more of a request than a short excerpt, and never exposes a
//! store or node internal beyond its message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orgmesh_store::StoreError;
use serde::Serialize;

use crate::control::{CancelError, ControlError, SubmitError};

/// The media type of every error body.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer: status, human detail, and optional extension members.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    status: StatusCode,
    detail: String,
    extensions: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Body<'a> {
    // `about:blank` means "the status code says it all": title is then the status's reason.
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[serde(flatten)]
    extensions: &'a serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem with `status` and a sentence for people.
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self { status, detail: detail.into(), extensions: serde_json::Map::new() }
    }

    /// 400: the request is malformed (syntax, headers, query parameters).
    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404: no such resource.
    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 422: well-formed but meaningless (an invalid task spec).
    pub(crate) fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// 409: conflicts with the resource's state.
    pub(crate) fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// 503: the node cannot answer now (draining, shutting down, not ready).
    pub(crate) fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// Adds an extension member (e.g. `checks` on a failed readiness probe).
    pub(crate) fn with(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }

    /// The status this problem answers with.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        // A closed store means the node is going away: retrying elsewhere or later can work.
        let status = match e {
            StoreError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::warn!(error = %e, "store read failed");
        Problem::new(status, e.to_string())
    }
}

impl From<ControlError> for Problem {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotRecorded { source: StoreError::Closed, .. } => {
                Problem::unavailable(e.to_string())
            }
            ControlError::NotRecorded { ref source, .. } => {
                tracing::warn!(error = %source, "store write failed");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
            ControlError::ShuttingDown | ControlError::NoMetrics | ControlError::Unavailable(_) => {
                Problem::unavailable(e.to_string())
            }
        }
    }
}

impl From<SubmitError> for Problem {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(m) => Problem::unprocessable(m),
            SubmitError::Conflict(_) => Problem::conflict(e.to_string()),
            SubmitError::Unavailable(m) => Problem::unavailable(m),
        }
    }
}

impl From<CancelError> for Problem {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::NotFound(_) => Problem::not_found(e.to_string()),
            CancelError::AlreadyEnded { .. } => Problem::conflict(e.to_string()),
            CancelError::Unavailable(m) => Problem::unavailable(m),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            extensions: &self.extensions,
        };
        // Serializing plain strings and JSON values cannot fail; fall back to a minimal body anyway.
        let bytes = serde_json::to_vec(&body)
            .unwrap_or_else(|_| format!("{{\"status\":{}}}", self.status.as_u16()).into_bytes());
        let mut resp = (self.status, bytes).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        resp
    }
}

/// Router fallback: every unknown path.
pub(crate) async fn not_found_fallback(uri: axum::http::Uri) -> Problem {
    Problem::not_found(format!("no route for {}", excerpt(uri.path())))
}

/// Method fallback: a known path with a method it does not serve. axum keeps the `Allow` header.
pub(crate) async fn method_not_allowed_fallback(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", excerpt(uri.path())),
    )
}

/// At most 100 characters of client-supplied text, so errors stay short.
pub(crate) fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(100).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn problem_body_has_the_rfc_members_and_extensions() {
        let resp =
            Problem::unprocessable("command: bad").with("checks", serde_json::json!([1])).into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Unprocessable Entity");
        assert_eq!(v["status"], 422);
        assert_eq!(v["detail"], "command: bad");
        assert_eq!(v["checks"], serde_json::json!([1]));
    }

    #[test]
    fn control_errors_answer_their_status_with_their_message() {
        let status = |e: ControlError| {
            let p = Problem::from(e.clone());
            (p.status.as_u16(), p.detail == e.to_string())
        };
        assert_eq!(status(ControlError::ShuttingDown), (503, true));
        assert_eq!(status(ControlError::NoMetrics), (503, true));
        assert_eq!(status(ControlError::Unavailable("no".into())), (503, true));
        let not_recorded = |source| ControlError::NotRecorded { action: "drain", source };
        assert_eq!(status(not_recorded(StoreError::Closed)), (503, true));
        assert_eq!(status(not_recorded(StoreError::Io("disk".into()))), (500, true));
        assert_eq!(not_recorded(StoreError::Closed).to_string(), "drain not recorded: store is closed");
        assert_eq!(ControlError::ShuttingDown.to_string(), "the node is shutting down");
    }

    #[test]
    fn submit_and_cancel_errors_keep_their_statuses() {
        let id = orgmesh_protocol::TaskId::new(1, 1);
        let status = |p: Problem| p.status.as_u16();
        assert_eq!(status(SubmitError::Invalid("x".into()).into()), 422);
        assert_eq!(status(SubmitError::Conflict(id).into()), 409);
        assert_eq!(status(SubmitError::Unavailable("x".into()).into()), 503);
        assert_eq!(status(CancelError::NotFound(id).into()), 404);
        let ended = CancelError::AlreadyEnded { id, status: orgmesh_protocol::TaskStatus::Succeeded };
        assert_eq!(status(ended.into()), 409);
        assert_eq!(status(CancelError::Unavailable("x".into()).into()), 503);
    }

    #[test]
    fn excerpt_caps_length_on_char_boundaries() {
        assert_eq!(excerpt("abc"), "abc");
        let long = "é".repeat(300);
        assert_eq!(excerpt(&long).chars().count(), 101);
    }
}
