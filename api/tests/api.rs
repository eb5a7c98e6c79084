//! The API against a real store: status codes, problem+json on every error, idempotency, ETags,
//! pagination, logs (plain and followed with resume), the event stream's exact resume, and
//! shutdown ending open streams. Plain requests go through `oneshot`; SSE over real TCP.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use orgmesh_protocol::{TaskId, TaskStatus};
use orgmesh_store::NewEvent;
use serde_json::json;
use support::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn health_and_readiness() {
    let h = harness();
    let a = get(&h.router, "/healthz").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({ "status": "ok" }));

    let a = get(&h.router, "/readyz").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["status"], "ready");
    let names: Vec<&str> =
        v["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["store", "p2p"]);

    h.control.checks.lock().unwrap().push(orgmesh_api::Check {
        name: "discovery:static".into(),
        ok: false,
        detail: "no bootstrap peer reachable".into(),
    });
    let v = get(&h.router, "/readyz").await.problem(503);
    assert!(v["detail"].as_str().unwrap().contains("discovery:static"));
    assert_eq!(v["checks"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn node_peers_drain_and_index() {
    let h = harness();
    let v = get(&h.router, "/v1/node").await.json();
    assert_eq!(v["org"], "acme");
    assert!(v["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(get(&h.router, "/v1/peers").await.json(), json!({ "items": [] }));
    let a = call(&h.router, Method::POST, "/v1/drain", &[], Vec::new()).await;
    assert_eq!(a.json(), json!({ "draining": true, "running": 0 }));
    let a = get(&h.router, "/").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.content_type().starts_with("text/html"));
    assert!(a.text().contains("/assets/app.js"));
    // A node without metrics says so; the OpenAPI document is always there.
    get(&h.router, "/metrics").await.problem(503);
    let doc = get(&h.router, "/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.json()["paths"]["/v1/tasks/{id}/cancel"]["post"].is_object());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let h = harness();
    let v = get(&h.router, "/v2/nothing").await.problem(404);
    assert!(v["detail"].as_str().unwrap().contains("/v2/nothing"));
    let a = call(&h.router, Method::DELETE, "/v1/tasks", &[], Vec::new()).await;
    a.problem(405);
    let allow = a.headers.get("allow").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "allow: {allow:?}");
    call(&h.router, Method::GET, "/v1/drain", &[], Vec::new()).await.problem(405);
    assert!(get(&h.router, "/healthz").await.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn submit_answers_202_with_location_and_refuses_bad_specs() {
    let h = harness();
    let a = post_json(&h.router, "/v1/tasks", r#"{"command":["sh","-c","echo hi"]}"#, &[]).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let v = a.json();
    assert_eq!(v["status"], "pending");
    let id = v["id"].as_str().unwrap();
    assert_eq!(a.headers["location"], format!("/v1/tasks/{id}").as_str());
    assert_eq!(get(&h.router, &format!("/v1/tasks/{id}")).await.json()["spec"]["command"][2], "echo hi");

    // No Content-Type at all is fine (curl -d sends a form type; scripts often send none).
    let a = call(&h.router, Method::POST, "/v1/tasks", &[], br#"{"command":["true"]}"#.to_vec()).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);

    let v = post_json(&h.router, "/v1/tasks", r#"{"command":"not-a-list"}"#, &[]).await.problem(422);
    assert!(v["detail"].as_str().unwrap().contains("invalid type"), "{v}");
    let v = post_json(&h.router, "/v1/tasks", r#"{"command":["x"],"bogus":1}"#, &[]).await.problem(422);
    assert!(v["detail"].as_str().unwrap().contains("bogus"), "{v}");
    post_json(&h.router, "/v1/tasks", r#"{"env":{}}"#, &[]).await.problem(422);
    let v = post_json(&h.router, "/v1/tasks", r#"{"command":[]}"#, &[]).await.problem(422);
    assert!(v["detail"].as_str().unwrap().starts_with("command"), "{v}");
    let v = post_json(&h.router, "/v1/tasks", r#"{"command":["x"],"timeout_s":0}"#, &[]).await.problem(422);
    assert!(v["detail"].as_str().unwrap().starts_with("timeout_s"), "{v}");
    post_json(&h.router, "/v1/tasks", r#"{"command":["x"]"#, &[]).await.problem(400);
    post_json(&h.router, "/v1/tasks", "", &[]).await.problem(400);
    post_json(&h.router, "/v1/tasks", "\u{0}\u{1}garbage", &[]).await.problem(400);

    let huge = format!(r#"{{"command":["{}"]}}"#, "x".repeat(1024 * 1024 + 1));
    post_json(&h.router, "/v1/tasks", &huge, &[]).await.problem(413);

    post_json(&h.router, "/v1/tasks", r#"{"command":["x"]}"#, &[("idempotency-key", "has space")])
        .await
        .problem(400);
    let long = "k".repeat(256);
    post_json(&h.router, "/v1/tasks", r#"{"command":["x"]}"#, &[("idempotency-key", &long)])
        .await
        .problem(400);
}

#[tokio::test]
async fn idempotency_key_replays_and_conflicts() {
    let h = harness();
    let key = [("idempotency-key", "bar-key-1")];
    let a = post_json(&h.router, "/v1/tasks", r#"{"command":["true"]}"#, &key).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let id = a.json()["id"].clone();
    // Same spec, other whitespace and an explicit default: the same request.
    let b =
        post_json(&h.router, "/v1/tasks", "{ \"command\" : [ \"true\" ],\n \"priority\": 0 }", &key).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.text());
    assert_eq!(b.json()["id"], id);
    assert_eq!(b.headers["location"], format!("/v1/tasks/{}", id.as_str().unwrap()).as_str());
    let v = post_json(&h.router, "/v1/tasks", r#"{"command":["false"]}"#, &key).await.problem(409);
    assert!(v["detail"].as_str().unwrap().contains(id.as_str().unwrap()), "{v}");
    // Another key is another task.
    let c = post_json(&h.router, "/v1/tasks", r#"{"command":["true"]}"#, &[("idempotency-key", "k2")]).await;
    assert_eq!(c.status, StatusCode::ACCEPTED);
    assert_ne!(c.json()["id"], id);
    let all = get(&h.router, "/v1/tasks").await.json();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn one_task_with_etag_and_304() {
    let h = harness();
    let id = submit(&h.router, "true").await;
    let path = format!("/v1/tasks/{id}");
    let a = get(&h.router, &path).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type(), "application/json");
    let v = a.json();
    assert_eq!(v["id"], id.to_string());
    assert_eq!(v["status"], "pending");
    assert_eq!(v["placement"], serde_json::Value::Null);
    let etag = a.headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let b = call(&h.router, Method::GET, &path, &[("if-none-match", &etag)], Vec::new()).await;
    assert_eq!(b.status, StatusCode::NOT_MODIFIED);
    assert!(b.body.is_empty());
    assert_eq!(b.headers["etag"], etag.as_str());
    let c = call(&h.router, Method::GET, &path, &[("if-none-match", "\"stale\"")], Vec::new()).await;
    assert_eq!(c.status, StatusCode::OK);

    // A change moves the tag.
    let task = h.store.task(id).unwrap().unwrap();
    set_status(&h.store, task, TaskStatus::Running).await;
    let d = call(&h.router, Method::GET, &path, &[("if-none-match", &etag)], Vec::new()).await;
    assert_eq!(d.status, StatusCode::OK);
    assert_ne!(d.headers["etag"], etag.as_str());

    let unknown = TaskId::new(1, 1);
    let v = get(&h.router, &format!("/v1/tasks/{unknown}")).await.problem(404);
    assert!(v["detail"].as_str().unwrap().contains(&unknown.to_string()));
    get(&h.router, "/v1/tasks/not-an-id").await.problem(400);
    get(&h.router, "/v1/tasks/%FF%FE").await.problem(400);
}

#[tokio::test]
async fn list_pages_newest_first_with_cursor_and_filters() {
    let h = harness();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(submit(&h.router, &format!("cmd{i}")).await);
    }
    let newest_first: Vec<String> = ids.iter().rev().map(|id| id.to_string()).collect();

    let mut seen = Vec::new();
    let mut uri = "/v1/tasks?limit=2".to_owned();
    for _ in 0..10 {
        let v = get(&h.router, &uri).await.json();
        seen.extend(v["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match v["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/tasks?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    // An exact multiple of the page size leaves no empty last page.
    let v = get(&h.router, &format!("/v1/tasks?limit=2&cursor={}", newest_first[2])).await.json();
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert_eq!(v["next_cursor"], serde_json::Value::Null);

    let task = h.store.task(ids[1]).unwrap().unwrap();
    set_status(&h.store, task, TaskStatus::Succeeded).await;
    let v = get(&h.router, "/v1/tasks?status=succeeded").await.json();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["id"], ids[1].to_string());
    assert_eq!(get(&h.router, "/v1/tasks").await.json()["items"].as_array().unwrap().len(), 5);

    for bad in ["status=done", "limit=0", "limit=1001", "limit=-1", "limit=x", "cursor=nope"] {
        get(&h.router, &format!("/v1/tasks?{bad}")).await.problem(400);
    }
    assert_eq!(get(&h.router, "/v1/tasks?limit=1000").await.status, StatusCode::OK);
}

#[tokio::test]
async fn cancel_answers_202_then_409_and_404() {
    let h = harness();
    let id = submit(&h.router, "sleep").await;
    let a = call(&h.router, Method::POST, &format!("/v1/tasks/{id}/cancel"), &[], Vec::new()).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    assert_eq!(a.json()["id"], id.to_string());
    assert_eq!(h.store.task(id).unwrap().unwrap().status, TaskStatus::Cancelled);
    let v =
        call(&h.router, Method::POST, &format!("/v1/tasks/{id}/cancel"), &[], Vec::new()).await.problem(409);
    assert!(v["detail"].as_str().unwrap().contains("cancelled"));
    let unknown = TaskId::new(1, 1);
    call(&h.router, Method::POST, &format!("/v1/tasks/{unknown}/cancel"), &[], Vec::new()).await.problem(404);
    call(&h.router, Method::POST, "/v1/tasks/zzz/cancel", &[], Vec::new()).await.problem(400);
}

#[tokio::test]
async fn plain_logs_from_an_offset() {
    let h = harness();
    let id = submit(&h.router, "echo").await;
    let a = get(&h.router, &format!("/v1/tasks/{id}/logs")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type(), "text/plain; charset=utf-8");
    assert!(a.body.is_empty());

    h.store.append_log(id, 0, b"hello\n".to_vec()).await.unwrap().unwrap();
    h.store.append_log(id, 6, "wörld\n".as_bytes().to_vec()).await.unwrap().unwrap();
    // Larger than one read chunk, to cross the chunking.
    let big = vec![b'z'; 100_000];
    h.store.append_log(id, 13, big.clone()).await.unwrap().unwrap();
    let mut want = b"hello\nw\xc3\xb6rld\n".to_vec();
    want.extend_from_slice(&big);
    assert_eq!(get(&h.router, &format!("/v1/tasks/{id}/logs")).await.body, want);
    assert_eq!(get(&h.router, &format!("/v1/tasks/{id}/logs?offset=6")).await.body, want[6..]);
    assert!(get(&h.router, &format!("/v1/tasks/{id}/logs?offset=999999")).await.body.is_empty());
    get(&h.router, &format!("/v1/tasks/{id}/logs?offset=-1")).await.problem(400);
    get(&h.router, &format!("/v1/tasks/{id}/logs?follow=maybe")).await.problem(400);
    get(&h.router, &format!("/v1/tasks/{}/logs", TaskId::new(1, 1))).await.problem(404);
    get(&h.router, &format!("/v1/tasks/{}/logs?follow=true", TaskId::new(1, 1))).await.problem(404);
}

#[tokio::test]
async fn followed_logs_resume_with_last_event_id_without_loss_or_repeat() {
    let h = harness();
    let id = submit(&h.router, "echo").await;
    let (addr, stop, server) = spawn_server(h.router.clone()).await;
    let path = format!("/v1/tasks/{id}/logs?follow=true");

    h.store.append_log(id, 0, b"line1\nline2\n".to_vec()).await.unwrap().unwrap();
    let mut c = SseClient::open(addr, &path, &[]).await;
    assert_eq!(c.status, 200);
    assert!(c.headers.to_ascii_lowercase().contains("content-type: text/event-stream"), "{}", c.headers);
    let e = c.next(WAIT).await.unwrap();
    assert_eq!(e.event.as_deref(), Some("log"));
    assert_eq!(e.id.as_deref(), Some("12"));
    // The exact wire form: one data field per line, the trailing newline as an empty last field.
    assert_eq!(e.data, "line1\nline2\n");
    let wire = String::from_utf8(c.transcript.clone()).unwrap();
    assert!(wire.contains("data: line1\ndata: line2\ndata: \n\n"), "{wire:?}");

    // A multibyte character split across two appends is never cut in an event.
    let euro = "€".as_bytes();
    h.store.append_log(id, 12, vec![b'a', euro[0]]).await.unwrap().unwrap();
    let e = c.next(WAIT).await.unwrap();
    assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("13"), "a"));
    h.store.append_log(id, 14, vec![euro[1], euro[2], b'\n']).await.unwrap().unwrap();
    let e = c.next(WAIT).await.unwrap();
    assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("17"), "€\n"));
    drop(c);

    // Written while nobody listens; the reconnect picks up right after byte 17.
    h.store.append_log(id, 17, b"after\n".to_vec()).await.unwrap().unwrap();
    let mut c = SseClient::open(addr, &format!("{path}&offset=0"), &[("Last-Event-ID", "17")]).await;
    let e = c.next(WAIT).await.unwrap();
    assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("23"), "after\n"));
    h.store.append_log(id, 23, b"last".to_vec()).await.unwrap().unwrap();
    let e = c.next(WAIT).await.unwrap();
    assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("27"), "last"));
    let task = h.store.task(id).unwrap().unwrap();
    set_status(&h.store, task, TaskStatus::Succeeded).await;
    let e = c.next(WAIT).await.unwrap();
    assert_eq!(e.event.as_deref(), Some("end"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&e.data).unwrap(), json!({ "status": "succeeded" }));
    assert_eq!(c.next(WAIT).await, None, "stream must close after end");

    // Following an ended task from an offset: the rest, then end.
    let mut c = SseClient::open(addr, &format!("{path}&offset=23"), &[]).await;
    let e = c.next(WAIT).await.unwrap();
    assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("27"), "last"));
    assert_eq!(c.next(WAIT).await.unwrap().event.as_deref(), Some("end"));
    assert_eq!(c.next(WAIT).await, None);

    let _ = stop.send(());
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn followed_logs_flush_an_incomplete_tail_and_crlf_when_the_task_ends() {
    let h = harness();
    let id = submit(&h.router, "echo").await;
    let (addr, stop, _server) = spawn_server(h.router.clone()).await;
    h.store.append_log(id, 0, b"a\r\nb\r".to_vec()).await.unwrap().unwrap();
    let mut c = SseClient::open(addr, &format!("/v1/tasks/{id}/logs?follow=true"), &[]).await;
    // The trailing CR waits: its LF may be next.
    let e = c.next(WAIT).await.unwrap();
    assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("4"), "a\nb"));
    h.store.append_log(id, 5, vec![b'\n', 0xE2]).await.unwrap().unwrap();
    let e = c.next(WAIT).await.unwrap();
    assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("6"), "\n"));
    let task = h.store.task(id).unwrap().unwrap();
    set_status(&h.store, task, TaskStatus::Failed).await;
    let e = c.next(WAIT).await.unwrap();
    assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("7"), "\u{FFFD}"));
    let e = c.next(WAIT).await.unwrap();
    assert_eq!(e.event.as_deref(), Some("end"));
    assert!(e.data.contains("failed"));
    let _ = stop.send(());
}

async fn append(store: &orgmesh_store::Store, kinds: &[&str]) {
    let events =
        kinds.iter().map(|k| NewEvent { kind: (*k).to_owned(), data: json!({ "k": k }).to_string() });
    store.append_events(events.collect()).await.unwrap();
}

#[tokio::test]
async fn events_since_and_last_event_id_resume_exactly() {
    let h = harness();
    append(&h.store, &["peer.joined", "task.created", "task.placed", "task.running", "task.succeeded"]).await;
    let (addr, stop, server) = spawn_server(h.router.clone()).await;

    let mut c = SseClient::open(addr, "/v1/events?since=0", &[]).await;
    assert_eq!(c.status, 200);
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(c.next(WAIT).await.unwrap());
    }
    let ids: Vec<&str> = got.iter().map(|e| e.id.as_deref().unwrap()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"]);
    assert_eq!(got[1].event.as_deref(), Some("task.created"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&got[1].data).unwrap(),
        json!({ "k": "task.created" })
    );
    // Live events follow with no gap.
    append(&h.store, &["peer.dead"]).await;
    let e = c.next(WAIT).await.unwrap();
    assert_eq!((e.id.as_deref(), e.event.as_deref()), (Some("6"), Some("peer.dead")));
    drop(c);

    // `since` is exclusive; Last-Event-ID wins over it.
    let mut c = SseClient::open(addr, "/v1/events?since=3", &[]).await;
    assert_eq!(c.next(WAIT).await.unwrap().id.as_deref(), Some("4"));
    let mut c2 = SseClient::open(addr, "/v1/events?since=0", &[("Last-Event-ID", "5")]).await;
    assert_eq!(c2.next(WAIT).await.unwrap().id.as_deref(), Some("6"));
    assert_eq!(c2.try_next(Duration::from_millis(300)).await, None, "nothing after 6 yet");

    // Without either: live only.
    let mut live = SseClient::open(addr, "/v1/events", &[]).await;
    assert_eq!(live.try_next(Duration::from_millis(300)).await, None);
    append(&h.store, &["task.failed"]).await;
    assert_eq!(live.next(WAIT).await.unwrap().id.as_deref(), Some("7"));
    assert_eq!(c.next(WAIT).await.unwrap().id.as_deref(), Some("5"));

    // Kind filter: exact names and prefixes.
    let mut f = SseClient::open(addr, "/v1/events?since=0&kinds=peer.,task.failed", &[]).await;
    let ids: Vec<String> = [f.next(WAIT).await, f.next(WAIT).await, f.next(WAIT).await]
        .into_iter()
        .map(|e| e.unwrap().id.unwrap())
        .collect();
    assert_eq!(ids, ["1", "6", "7"]);

    for bad in ["/v1/events?since=x", "/v1/events?since=-1"] {
        let c = SseClient::open(addr, bad, &[]).await;
        assert_eq!(c.status, 400);
        assert!(c.headers.contains("application/problem+json"));
    }
    let c = SseClient::open(addr, "/v1/events", &[("Last-Event-ID", "abc")]).await;
    assert_eq!(c.status, 400);

    let _ = stop.send(());
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn dashboard_assets_have_types_etags_and_a_strict_csp() {
    let h = harness();
    for (path, ctype) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/theme.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let a = get(&h.router, path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert_eq!(a.content_type(), ctype, "{path}");
        assert_eq!(a.headers["cache-control"], "no-cache", "{path}");
        assert_eq!(a.headers["x-content-type-options"], "nosniff", "{path}");
        let csp = a.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{path}: {csp}");
        let etag = a.headers["etag"].to_str().unwrap().to_owned();
        let again = call(&h.router, Method::GET, path, &[("if-none-match", &etag)], Vec::new()).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.body.is_empty());
        let stale = call(&h.router, Method::GET, path, &[("if-none-match", "\"old\"")], Vec::new()).await;
        assert_eq!(stale.status, StatusCode::OK, "{path}");
    }
    get(&h.router, "/assets/nothing.js").await.problem(404);
    get(&h.router, "/assets/../Cargo.toml").await.problem(404);
}

#[tokio::test]
async fn events_tail_starts_that_many_events_back() {
    let h = harness();
    append(&h.store, &["peer.joined", "task.created", "task.placed", "task.running", "task.succeeded"]).await;
    let (addr, stop, _server) = spawn_server(h.router.clone()).await;
    let mut c = SseClient::open(addr, "/v1/events?tail=2", &[]).await;
    assert_eq!(c.next(WAIT).await.unwrap().id.as_deref(), Some("4"));
    assert_eq!(c.next(WAIT).await.unwrap().id.as_deref(), Some("5"));
    assert_eq!(c.try_next(Duration::from_millis(200)).await, None);
    // More than there are: from the start. Last-Event-ID still wins on a reconnect.
    let mut all = SseClient::open(addr, "/v1/events?tail=100", &[]).await;
    assert_eq!(all.next(WAIT).await.unwrap().id.as_deref(), Some("1"));
    let mut resumed = SseClient::open(addr, "/v1/events?tail=100", &[("Last-Event-ID", "4")]).await;
    assert_eq!(resumed.next(WAIT).await.unwrap().id.as_deref(), Some("5"));
    for bad in ["/v1/events?tail=x", "/v1/events?tail=10001"] {
        assert_eq!(SseClient::open(addr, bad, &[]).await.status, 400, "{bad}");
    }
    let _ = stop.send(());
}

#[tokio::test]
async fn events_survive_a_lagging_subscriber_without_gaps() {
    let h = harness();
    let (addr, stop, _server) = spawn_server(h.router.clone()).await;
    let mut c = SseClient::open(addr, "/v1/events?since=0", &[]).await;
    // More than the store's broadcast capacity in one commit: the subscriber lags and must fall
    // back to reading the log.
    let kinds: Vec<String> = (0..6000).map(|i| format!("test.e{i}")).collect();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    append(&h.store, &kinds).await;
    for want in 1..=6000u64 {
        let e = c.next(WAIT).await.unwrap();
        assert_eq!(e.id, Some(want.to_string()));
    }
    assert_eq!(c.try_next(Duration::from_millis(200)).await, None);
    let _ = stop.send(());
}

/// An idle stream sends an SSE comment every 15 s, only when nothing else was written for that
/// long, and goes on delivering events after it. Time is virtual while the stream is idle; it
/// runs for real while the store's writer thread commits (a paused clock would race ahead of it).
#[tokio::test]
async fn an_idle_event_stream_sends_keep_alive_comments() {
    let h = harness();
    let (addr, stop, _server) = spawn_server(h.router.clone()).await;
    let mut c = SseClient::open(addr, "/v1/events", &[]).await;
    let comments = |c: &SseClient| String::from_utf8_lossy(&c.transcript).matches(":\n\n").count();
    tokio::time::pause();
    assert_eq!(c.try_next(Duration::from_secs(14)).await, None);
    assert_eq!(comments(&c), 0, "nothing before 15 s of silence");
    assert_eq!(c.try_next(Duration::from_secs(2)).await, None);
    assert_eq!(comments(&c), 1, "one comment after 15 s of silence");
    // An event every 10 s: the stream is never silent for 15 s, so no comment.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        tokio::time::resume();
        append(&h.store, &["test.a"]).await;
        assert_eq!(c.next(WAIT).await.unwrap().event.as_deref(), Some("test.a"));
        tokio::time::pause();
    }
    assert_eq!(comments(&c), 1, "no comment while events flow");
    assert_eq!(c.try_next(Duration::from_secs(31)).await, None);
    assert_eq!(comments(&c), 3, "the stream keeps sending them while idle");
    tokio::time::resume();
    let _ = stop.send(());
}

#[tokio::test]
async fn live_events_are_filtered_within_a_commit() {
    let h = harness();
    let (addr, stop, _server) = spawn_server(h.router.clone()).await;
    let mut all = SseClient::open(addr, "/v1/events", &[]).await;
    let mut some = SseClient::open(addr, "/v1/events?kinds=test.b", &[]).await;
    append(&h.store, &["test.a", "test.b", "test.a", "test.b"]).await;
    for want in 1..=4u64 {
        assert_eq!(all.next(WAIT).await.unwrap().id, Some(want.to_string()));
    }
    for want in [2u64, 4] {
        let e = some.next(WAIT).await.unwrap();
        assert_eq!((e.id, e.event.as_deref()), (Some(want.to_string()), Some("test.b")));
    }
    assert_eq!(some.try_next(Duration::from_millis(200)).await, None);
    let _ = stop.send(());
}

#[tokio::test]
async fn events_survive_a_client_slower_than_the_fan_out() {
    let h = harness();
    let (addr, stop, _server) = spawn_server(h.router.clone()).await;
    let mut c = SseClient::open(addr, "/v1/events", &[]).await;
    // The client reads nothing while more events than the fan-out keeps for it are committed, in
    // many commits (so the relay itself keeps up): its frames are dropped and it must catch up
    // from the log, in order, without a gap or a repeat.
    // The frames are large so that they fill the socket buffers, which would otherwise absorb them.
    let pad = "x".repeat(2000);
    for batch in 0..20 {
        let events = (0..1000).map(|i| NewEvent {
            kind: format!("test.e{}", batch * 1000 + i),
            data: json!({ "pad": pad }).to_string(),
        });
        h.store.append_events(events.collect()).await.unwrap();
    }
    for want in 1..=20_000u64 {
        let e = c.next(WAIT).await.unwrap();
        assert_eq!(e.id, Some(want.to_string()));
        assert_eq!(e.event, Some(format!("test.e{}", want - 1)));
    }
    assert_eq!(c.try_next(Duration::from_millis(200)).await, None);
    let _ = stop.send(());
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_serve_returns() {
    let h = harness();
    let id = submit(&h.router, "sleep").await;
    let (addr, stop, server) = spawn_server(h.router.clone()).await;
    let mut events = SseClient::open(addr, "/v1/events?since=0", &[]).await;
    let mut logs = SseClient::open(addr, &format!("/v1/tasks/{id}/logs?follow=true"), &[]).await;
    assert_eq!(events.next(WAIT).await.unwrap().event.as_deref(), Some("task.created"));
    let _ = stop.send(());
    assert_eq!(events.next(WAIT).await, None);
    assert_eq!(logs.next(WAIT).await, None);
    tokio::time::timeout(WAIT, server).await.expect("serve must return after shutdown").unwrap();
}
