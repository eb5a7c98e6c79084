//! Test support: a real store on a temp dir, a `FakeControl` that writes through it the way the
//! node does, a `oneshot` caller for plain requests, and a raw TCP SSE reader that sees the exact
//! bytes on the wire. Never used outside tests; panics freely.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use orgmesh_api::{
    ApiState, BoxFuture, CancelError, Check, Control, ControlError, DrainStatus, NodeInfo, PeerEntry,
    SubmitError, Submitted,
};
use orgmesh_protocol::task::TaskOrigin;
use orgmesh_protocol::{Capacity, Org, PeerId, Task, TaskId, TaskSpec, TaskStatus, Timestamp};
use orgmesh_store::{CreateOutcome, Idempotency, NewEvent, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

pub fn origin() -> TaskOrigin {
    TaskOrigin { peer_id: PeerId::new("12D3KooWtest").unwrap(), org: Org::new("acme").unwrap() }
}

/// Stands in for the node: submit and cancel write to the store as the node would.
pub struct FakeControl {
    pub store: Store,
    next: AtomicU64,
    pub checks: Mutex<Vec<Check>>,
}

impl FakeControl {
    pub fn new(store: Store) -> Self {
        let checks = vec![Check { name: "p2p".into(), ok: true, detail: "listening".into() }];
        Self { store, next: AtomicU64::new(1), checks: Mutex::new(checks) }
    }
}

impl Control for FakeControl {
    fn submit(
        &self,
        _actor: String,
        spec: TaskSpec,
        idem: Option<Idempotency>,
    ) -> BoxFuture<'_, Result<Submitted, SubmitError>> {
        Box::pin(async move {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            // Increasing times, so ids sort in submission order like the real ones.
            let id = TaskId::new(1_700_000_000_000 + n, u128::from(n));
            let task = Task::new(id, spec, origin(), Timestamp(1_700_000_000_000 + n));
            let data = serde_json::json!({ "id": id }).to_string();
            match self.store.create_task(task, idem, data).await {
                Ok(CreateOutcome::Created) => {
                    Ok(Submitted { id, status: TaskStatus::Pending, existing: false })
                }
                Ok(CreateOutcome::Existing(t)) => {
                    Ok(Submitted { id: t.id, status: t.status, existing: true })
                }
                Ok(CreateOutcome::Conflict { existing }) => Err(SubmitError::Conflict(existing)),
                Err(e) => Err(SubmitError::Unavailable(e.to_string())),
            }
        })
    }

    fn cancel(&self, _actor: String, id: TaskId) -> BoxFuture<'_, Result<(), CancelError>> {
        Box::pin(async move {
            let task = self.store.task(id).map_err(|e| CancelError::Unavailable(e.to_string()))?;
            let task = task.ok_or(CancelError::NotFound(id))?;
            if task.status.is_terminal() {
                return Err(CancelError::AlreadyEnded { id, status: task.status });
            }
            set_status(&self.store, task, TaskStatus::Cancelled).await;
            Ok(())
        })
    }

    fn drain(&self, _actor: String) -> BoxFuture<'_, Result<DrainStatus, ControlError>> {
        Box::pin(async { Ok(DrainStatus { draining: true, running: 0 }) })
    }

    fn node(&self) -> BoxFuture<'_, Result<NodeInfo, ControlError>> {
        Box::pin(async {
            Ok(NodeInfo {
                peer_id: origin().peer_id,
                org: origin().org,
                name: "acme".into(),
                version: "0.1.0".into(),
                listen_addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
                labels: BTreeMap::new(),
                capacity: Capacity::default(),
                started_at: Timestamp(1_700_000_000_000),
                draining: false,
                isolation: orgmesh_protocol::Isolation::Sandbox,
                counters: Default::default(),
            })
        })
    }

    fn peers(&self) -> BoxFuture<'_, Result<Vec<PeerEntry>, ControlError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn readiness(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async { self.checks.lock().unwrap().clone() })
    }
}

/// Writes `task` with `status` and its `task.<status>` event, as the node does.
pub async fn set_status(store: &Store, mut task: Task, status: TaskStatus) {
    task.status = status;
    let event =
        NewEvent { kind: format!("task.{status}"), data: serde_json::json!({ "id": task.id }).to_string() };
    store.put_task(task, vec![event]).await.unwrap();
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub control: Arc<FakeControl>,
    pub router: axum::Router,
}

pub fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("orgmesh.redb")).unwrap();
    let control = Arc::new(FakeControl::new(store.clone()));
    let router = orgmesh_api::router(ApiState::new(store.clone(), control.clone()));
    Harness { dir, store, control, router }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").map(|v| v.to_str().unwrap()).unwrap_or("")
    }
    /// Asserts a problem+json answer with `status`, returning its body.
    pub fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.content_type(), "application/problem+json");
        let v = self.json();
        assert_eq!(v["status"], status);
        assert!(v["title"].is_string() && v["detail"].is_string() && v["type"].is_string(), "{v}");
        v
    }
}

pub async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, headers, body }
}

pub async fn get(router: &axum::Router, uri: &str) -> Answer {
    call(router, Method::GET, uri, &[], Vec::new()).await
}

pub async fn post_json(router: &axum::Router, uri: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    call(router, Method::POST, uri, &h, body.as_bytes().to_vec()).await
}

/// Submits `{"command":[cmd]}` and returns the new id.
pub async fn submit(router: &axum::Router, cmd: &str) -> TaskId {
    let a = post_json(router, "/v1/tasks", &serde_json::json!({ "command": [cmd] }).to_string(), &[]).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    a.json()["id"].as_str().unwrap().parse().unwrap()
}

/// Serves `router` on a fresh loopback port; the sender stops it.
pub async fn spawn_server(
    router: axum::Router,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        orgmesh_api::serve(listener, router, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (addr, tx, handle)
}

/// One parsed SSE event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// A raw HTTP/1.1 SSE client: reads exact bytes, decodes chunked framing, parses events the way
/// the WHATWG EventSource algorithm does.
pub struct SseClient {
    stream: TcpStream,
    raw: Vec<u8>,
    chunked: bool,
    /// Decoded body bytes not yet parsed into events.
    body: Vec<u8>,
    /// Every decoded body byte so far.
    pub transcript: Vec<u8>,
    pub status: u16,
    pub headers: String,
    eof: bool,
}

impl SseClient {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut c = SseClient {
            stream,
            raw: Vec::new(),
            chunked: false,
            body: Vec::new(),
            transcript: Vec::new(),
            status: 0,
            headers: String::new(),
            eof: false,
        };
        loop {
            if let Some(end) = find(&c.raw, b"\r\n\r\n") {
                let head = String::from_utf8(c.raw[..end].to_vec()).unwrap();
                c.raw.drain(..end + 4);
                c.status = head.split(' ').nth(1).unwrap().parse().unwrap();
                c.chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
                c.headers = head;
                break;
            }
            assert!(c.read_more().await, "connection closed before headers");
        }
        c.decode();
        c
    }

    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        let n = self.stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.raw.extend_from_slice(&buf[..n]);
        true
    }

    /// Moves complete body bytes from `raw` to `body`.
    fn decode(&mut self) {
        if !self.chunked {
            self.transcript.extend_from_slice(&self.raw);
            self.body.append(&mut self.raw);
            return;
        }
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else { return };
            let size_text = std::str::from_utf8(&self.raw[..line_end]).unwrap();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                self.eof = true;
                return;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let data = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.raw.drain(..line_end + 2 + size + 2);
            self.transcript.extend_from_slice(&data);
            self.body.extend_from_slice(&data);
        }
    }

    /// The next event, or `None` when the stream ended. Panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        tokio::time::timeout(timeout, self.next_inner()).await.expect("timed out waiting for an SSE event")
    }

    /// The next event if one comes within `wait`.
    pub async fn try_next(&mut self, wait: Duration) -> Option<SseEvent> {
        tokio::time::timeout(wait, self.next_inner()).await.ok().flatten()
    }

    async fn next_inner(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(ev) = self.parse_one() {
                return Some(ev);
            }
            if self.eof || !self.read_more().await {
                return None;
            }
            self.decode();
        }
    }

    /// Parses one complete event (blank-line terminated) from `body`; skips comment-only blocks.
    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            let end = find(&self.body, b"\n\n")?;
            let block = String::from_utf8(self.body[..end + 1].to_vec()).unwrap();
            self.body.drain(..end + 2);
            let mut ev = SseEvent::default();
            let mut data: Option<String> = None;
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "id" => ev.id = Some(value.to_owned()),
                    "event" => ev.event = Some(value.to_owned()),
                    "data" => {
                        let d = data.get_or_insert_with(String::new);
                        d.push_str(value);
                        d.push('\n');
                    }
                    _ => {}
                }
            }
            if ev.id.is_none() && ev.event.is_none() && data.is_none() {
                continue; // a keep-alive comment
            }
            let mut d = data.unwrap_or_default();
            if d.ends_with('\n') {
                d.pop();
            }
            ev.data = d;
            return Some(ev);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
