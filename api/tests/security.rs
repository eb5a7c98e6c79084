//! The API's access policy through the real router: the loopback rule, 401/403/429 as
//! problem+json with their headers, open health checks, actors handed to the node, CORS, and the
//! body limit. Requests go through `oneshot`, as from a client on the listener's address.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use orgmesh_api::auth::hash_token;
use orgmesh_api::{
    ApiState, BoxFuture, CancelError, Check, Control, ControlError, DrainStatus, NodeInfo, PeerEntry,
    RateLimiter, Scope, Security, SubmitError, Submitted, TokenEntry,
};
use orgmesh_protocol::{TaskId, TaskSpec};
use orgmesh_store::Idempotency;
use support::*;

/// Records the actor of every call the API makes on someone's behalf.
struct Recorder {
    inner: FakeControl,
    actors: Mutex<Vec<(String, String)>>,
}

impl Control for Recorder {
    fn submit(
        &self,
        actor: String,
        spec: TaskSpec,
        idem: Option<Idempotency>,
    ) -> BoxFuture<'_, Result<Submitted, SubmitError>> {
        self.actors.lock().unwrap().push(("submit".into(), actor.clone()));
        self.inner.submit(actor, spec, idem)
    }
    fn cancel(&self, actor: String, id: TaskId) -> BoxFuture<'_, Result<(), CancelError>> {
        self.actors.lock().unwrap().push(("cancel".into(), actor.clone()));
        self.inner.cancel(actor, id)
    }
    fn drain(&self, actor: String) -> BoxFuture<'_, Result<DrainStatus, ControlError>> {
        self.actors.lock().unwrap().push(("drain".into(), actor.clone()));
        self.inner.drain(actor)
    }
    fn node(&self) -> BoxFuture<'_, Result<NodeInfo, ControlError>> {
        self.inner.node()
    }
    fn peers(&self) -> BoxFuture<'_, Result<Vec<PeerEntry>, ControlError>> {
        self.inner.peers()
    }
    fn readiness(&self) -> BoxFuture<'_, Vec<Check>> {
        self.inner.readiness()
    }
    fn metrics(&self) -> BoxFuture<'_, Result<String, ControlError>> {
        Box::pin(async { Ok("# EOF\n".to_string()) })
    }
}

fn tokens() -> Vec<TokenEntry> {
    let entry = |name: &str, token: &str, scopes: &[Scope]| TokenEntry {
        name: name.into(),
        scopes: scopes.to_vec(),
        sha256: hash_token(token),
    };
    vec![
        entry("reader", "t-read", &[Scope::Read]),
        entry("ci", "t-submit", &[Scope::Submit]),
        entry("ops", "t-admin", &[Scope::Admin]),
    ]
}

struct Setup {
    router: axum::Router,
    control: Arc<Recorder>,
    _h: Harness,
}

fn setup(addr: &str, open_on_loopback: bool, limiter: Option<RateLimiter>) -> Setup {
    let h = harness();
    let control =
        Arc::new(Recorder { inner: FakeControl::new(h.store.clone()), actors: Mutex::new(Vec::new()) });
    let addr: SocketAddr = addr.parse().unwrap();
    let mut security = Security::new(addr, tokens(), open_on_loopback).unwrap();
    if let Some(l) = limiter {
        security = security.with_rate_limit(l);
    }
    let state = ApiState::new(h.store.clone(), control.clone())
        .with_security(security)
        .with_max_body_bytes(2048)
        .with_cors_origins(&["https://dash.example.com".to_string()])
        .unwrap();
    Setup { router: orgmesh_api::router(state), control, _h: h }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

const SPEC: &str = r#"{"command":["true"]}"#;

#[tokio::test]
async fn closed_api_needs_a_token_with_the_scope() {
    let s = setup("0.0.0.0:7070", true, None);
    // Open routes: liveness, readiness, and the dashboard's page and assets, which hold no data
    // and must load before the page can ask for a token.
    assert_eq!(get(&s.router, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(&s.router, "/readyz").await.status, StatusCode::OK);
    assert_eq!(get(&s.router, "/").await.status, StatusCode::OK);
    assert_eq!(get(&s.router, "/assets/app.js").await.status, StatusCode::OK);
    // 401 without a token, with a bad one, or with another scheme; also for unknown paths.
    for auth in [None, Some("Bearer nope"), Some("Basic dC1yZWFk")] {
        for uri in ["/v1/tasks", "/metrics", "/openapi.json", "/no/such/path"] {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let a = call(&s.router, Method::GET, uri, &headers, Vec::new()).await;
            a.problem(401);
            let challenge = a.headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer realm=\"orgmesh\""), "{challenge}");
            assert_eq!(challenge.contains("invalid_token"), auth.is_some(), "{challenge}");
        }
    }
    // read: reads, but neither submits nor drains.
    let read = bearer("t-read");
    let auth = [("authorization", read.as_str())];
    assert_eq!(call(&s.router, Method::GET, "/v1/tasks", &auth, Vec::new()).await.status, StatusCode::OK);
    assert_eq!(call(&s.router, Method::GET, "/metrics", &auth, Vec::new()).await.status, StatusCode::OK);
    let v = post_json(&s.router, "/v1/tasks", SPEC, &auth).await.problem(403);
    assert_eq!(v["required_scope"], "submit");
    assert!(v["detail"].as_str().unwrap().contains("reader"), "{v}");
    call(&s.router, Method::POST, "/v1/drain", &auth, Vec::new()).await.problem(403);
    // submit: submits and cancels, reads nothing, drains nothing.
    let sub = bearer("t-submit");
    let auth = [("authorization", sub.as_str())];
    let a = post_json(&s.router, "/v1/tasks", SPEC, &auth).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let id = a.json()["id"].as_str().unwrap().to_string();
    let a = call(&s.router, Method::POST, &format!("/v1/tasks/{id}/cancel"), &auth, Vec::new()).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    call(&s.router, Method::GET, "/v1/tasks", &auth, Vec::new()).await.problem(403);
    call(&s.router, Method::POST, "/v1/drain", &auth, Vec::new()).await.problem(403);
    // admin: everything.
    let adm = bearer("t-admin");
    let auth = [("authorization", adm.as_str())];
    assert_eq!(call(&s.router, Method::POST, "/v1/drain", &auth, Vec::new()).await.status, StatusCode::OK);
    assert_eq!(call(&s.router, Method::GET, "/v1/node", &auth, Vec::new()).await.status, StatusCode::OK);
    assert_eq!(post_json(&s.router, "/v1/tasks", SPEC, &auth).await.status, StatusCode::ACCEPTED);

    let actors = s.control.actors.lock().unwrap().clone();
    let want: Vec<(String, String)> =
        [("submit", "ci"), ("cancel", "ci"), ("drain", "ops"), ("submit", "ops")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(actors, want);
}

#[tokio::test]
async fn open_loopback_api_names_tokenless_callers_and_still_checks_tokens() {
    let s = setup("127.0.0.1:7070", true, None);
    assert_eq!(post_json(&s.router, "/v1/tasks", SPEC, &[]).await.status, StatusCode::ACCEPTED);
    // A token, if sent, must be valid and is what gets recorded.
    post_json(&s.router, "/v1/tasks", SPEC, &[("authorization", "Bearer wrong")]).await.problem(401);
    let read = bearer("t-read");
    post_json(&s.router, "/v1/tasks", SPEC, &[("authorization", read.as_str())]).await.problem(403);
    let actors = s.control.actors.lock().unwrap().clone();
    assert_eq!(actors, vec![("submit".to_string(), "anonymous@loopback".to_string())]);

    // The same loopback listener with open_on_loopback = false: closed.
    let closed = setup("127.0.0.1:7070", false, None);
    post_json(&closed.router, "/v1/tasks", SPEC, &[]).await.problem(401);
    assert_eq!(get(&closed.router, "/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_per_token() {
    let s = setup("0.0.0.0:7070", true, Some(RateLimiter::new(1, 2)));
    let read = bearer("t-read");
    let auth = [("authorization", read.as_str())];
    for _ in 0..2 {
        assert_eq!(call(&s.router, Method::GET, "/v1/node", &auth, Vec::new()).await.status, StatusCode::OK);
    }
    let a = call(&s.router, Method::GET, "/v1/node", &auth, Vec::new()).await;
    a.problem(429);
    assert_eq!(a.headers["retry-after"], "1");
    // Another token has its own bucket; health checks are never limited.
    let adm = bearer("t-admin");
    let other = [("authorization", adm.as_str())];
    assert_eq!(call(&s.router, Method::GET, "/v1/node", &other, Vec::new()).await.status, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(get(&s.router, "/healthz").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn cors_preflight_and_body_limit() {
    let s = setup("0.0.0.0:7070", true, None);
    let pre = call(
        &s.router,
        Method::OPTIONS,
        "/v1/tasks",
        &[
            ("origin", "https://dash.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization,content-type"),
        ],
        Vec::new(),
    )
    .await;
    assert!(pre.status.is_success(), "{}", pre.status);
    assert_eq!(pre.headers["access-control-allow-origin"], "https://dash.example.com");
    let methods = pre.headers["access-control-allow-methods"].to_str().unwrap().to_string();
    assert!(methods.contains("POST"), "{methods}");
    // Another origin gets no CORS headers, so the browser blocks it.
    let other = call(
        &s.router,
        Method::OPTIONS,
        "/v1/tasks",
        &[("origin", "https://evil.example.com"), ("access-control-request-method", "POST")],
        Vec::new(),
    )
    .await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));
    // The configured body limit (2 KiB here) answers 413 as problem+json.
    let sub = bearer("t-submit");
    let big = format!(r#"{{"command":["echo","{}"]}}"#, "x".repeat(4096));
    post_json(&s.router, "/v1/tasks", &big, &[("authorization", sub.as_str())]).await.problem(413);
}

/// The browser guard lets a cross-site write through only from a `cors_origins` origin, and
/// never touches a client that sends no browser headers (curl, the CLI).
#[tokio::test]
async fn cross_site_writes_pass_only_from_allowed_origins() {
    let s = setup("127.0.0.1:7070", true, None);
    let sub = bearer("t-submit");
    let browser = |origin: &'static str| {
        [("origin", origin), ("sec-fetch-site", "cross-site"), ("authorization", sub.as_str())]
    };
    let allowed = post_json(&s.router, "/v1/tasks", SPEC, &browser("https://dash.example.com")).await;
    assert_eq!(allowed.status, StatusCode::ACCEPTED, "an allowed origin submits");
    post_json(&s.router, "/v1/tasks", SPEC, &browser("https://evil.example.com")).await.problem(403);
    let plain = post_json(&s.router, "/v1/tasks", SPEC, &[("authorization", sub.as_str())]).await;
    assert_eq!(plain.status, StatusCode::ACCEPTED, "no browser headers: not a browser, not refused");
}
