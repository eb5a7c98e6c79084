//! The browser-origin guard: protection from web pages in the admin's own browser. A
//! cross-site page may not make the browser submit, cancel or drain (CSRF), and a page that
//! rebinds its DNS name to 127.0.0.1 may not use the tokenless loopback access over plain HTTP
//! (over TLS the certificate stops it). Non-browser clients (curl, the CLI) are never affected.
//! "Origin" here is a browser's `Origin` header and "Host" the HTTP header, never an org's node
//! roles. It must never let a request through that the rules below refuse.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;
use crate::server::OverTls;
use crate::state::ApiState;

/// Middleware: refuses a browser's cross-origin state-changing request unless its origin is in
/// the CORS allow list (the rule of Go's `http.CrossOriginProtection`), and a tokenless plain-HTTP
/// request whose `Host` is not a loopback name.
pub(crate) async fn guard(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && let Some(origin) = cross_origin(headers)
        && !state.cors_origins.iter().any(|allowed| allowed.as_bytes() == origin.as_bytes())
    {
        return Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "cross-origin {} from {origin} refused; add the origin to api.cors_origins to allow it",
                req.method()
            ),
        )
        .into_response();
    }
    if state.security.anonymous_allowed()
        && !headers.contains_key(header::AUTHORIZATION)
        && req.extensions().get::<OverTls>().is_none()
        && let Some(authority) = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(req.uri().host())
        && !is_loopback_authority(authority)
    {
        return Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "tokenless access is for clients that address this node as localhost or a loopback \
                 IP, not as {authority:?}; send a bearer token"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// The request's origin if a browser says it comes from another site: `Sec-Fetch-Site` when the
/// browser sends it, else an `Origin` whose host differs from `Host`. `None` for same-origin
/// requests, and for clients that are not browsers (they send neither header).
fn cross_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("null").to_string();
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            // `none`: typed by the user (a bookmark, the address bar), not sent by a page.
            b"same-origin" | b"none" => None,
            _ => Some(origin),
        };
    }
    let sent = headers.get(header::ORIGIN)?.to_str().ok()?;
    let authority = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin_authority = sent.split_once("://").map_or(sent, |(_, rest)| rest);
    (!origin_authority.eq_ignore_ascii_case(authority)).then(|| sent.to_string())
}

/// Whether an HTTP `Host` value (an authority: name and optional port) names this machine:
/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_authority(authority: &str) -> bool {
    let name = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(addr, _)| addr),
        None => authority.rsplit_once(':').map_or(authority, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn browsers_say_when_a_request_is_cross_site() {
        assert_eq!(cross_origin(&headers(&[])), None, "curl and the CLI send neither header");
        assert_eq!(cross_origin(&headers(&[("sec-fetch-site", "same-origin")])), None);
        assert_eq!(cross_origin(&headers(&[("sec-fetch-site", "none")])), None);
        assert_eq!(
            cross_origin(&headers(&[("sec-fetch-site", "cross-site"), ("origin", "https://evil.example")])),
            Some("https://evil.example".into())
        );
        assert_eq!(cross_origin(&headers(&[("sec-fetch-site", "same-site")])), Some("null".into()));
        // Older browsers: Origin only.
        assert_eq!(
            cross_origin(&headers(&[("origin", "http://127.0.0.1:7070"), ("host", "127.0.0.1:7070")])),
            None
        );
        assert_eq!(
            cross_origin(&headers(&[("origin", "http://evil.example"), ("host", "127.0.0.1:7070")])),
            Some("http://evil.example".into())
        );
    }

    #[test]
    fn loopback_authorities() {
        for ok in [
            "localhost",
            "localhost:7070",
            "LOCALHOST.",
            "dash.localhost:1",
            "127.0.0.1:7070",
            "127.1.2.3",
            "[::1]:7070",
            "[::1]",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7070",
            "127.0.0.1.evil.example",
            "10.0.0.1:7070",
            "[fd00::1]:1",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }
}
