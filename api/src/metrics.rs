//! `GET /metrics`: the node's Prometheus metrics, rendered by the node (see
//! [`Control::metrics`](crate::Control::metrics)); this module only serves the text.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;
use crate::state::ApiState;

/// The content type of the OpenMetrics text format, which Prometheus scrapes natively.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "meta", security(("bearer" = ["read"])),
    responses((status = 200, description = "Metrics in the OpenMetrics text format", content_type = "application/openmetrics-text")))]
pub(crate) async fn metrics(State(state): State<ApiState>) -> Result<Response, Problem> {
    let text = state.control.metrics().await?;
    let mut resp = text.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE));
    Ok(resp)
}
