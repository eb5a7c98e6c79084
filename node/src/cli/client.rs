//! A small HTTP client for the local node's REST API, used by the CLI: JSON calls, problem+json
//! errors turned into readable messages, and an SSE reader for followed logs and events.

use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;

/// Why a CLI call failed; each maps to an exit code scripts can rely on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node is not running or not reachable (exit 3).
    #[error(
        "cannot reach the orgmesh node at {url} ({reason}).\n\
         Is a node running there? Start one with `orgmesh up --config DIR/orgmesh.toml` (after \
         `orgmesh init --dir DIR --org ORG`), or a local mesh with `orgmesh demo`.\n\
         To talk to a node elsewhere, pass --api URL or set ORGMESH_API."
    )]
    Unreachable {
        /// The API base URL.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The node answered with an error (exit 4 for 404, else 1).
    #[error("{title} ({status}): {detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Problem title.
        title: String,
        /// Problem detail.
        detail: String,
    },
    /// The node wants a (valid) token: 401 (exit 5).
    #[error(
        "the node refused the request (401 Unauthorized): {detail}\nPass a token with --token, --token-file or ORGMESH_TOKEN(_FILE); \
         the node's operator creates one with `orgmesh token create --name NAME --scope read`."
    )]
    Unauthorized {
        /// The node's explanation.
        detail: String,
    },
    /// The token is valid but lacks the scope: 403 (exit 6).
    #[error(
        "the token may not do this (403 Forbidden): {detail}\nAsk the node's operator for a token with the needed scope \
         (read for reads, submit for submit and cancel, admin for drain)."
    )]
    Forbidden {
        /// The node's explanation.
        detail: String,
    },
    /// The answer was not what the CLI expected (exit 1).
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Unreachable { .. } => 3,
            ClientError::Api { status: 404, .. } => 4,
            ClientError::Unauthorized { .. } => 5,
            ClientError::Forbidden { .. } => 6,
            _ => 1,
        }
    }
}

/// The innermost error of a chain: "Connection refused (os error 111)" tells more than
/// reqwest's "error sending request for url (...)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The API client.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7070`), sending `token` (if any)
    /// as `Authorization: Bearer` on every request.
    pub fn new(base: &str, token: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty())
            && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers)
            .build()
            .unwrap_or_default();
        Self { base: base.trim_end_matches('/').to_string(), http }
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable { url: self.base.clone(), reason: root_cause(&e) }
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        let status = resp.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let detail = body["detail"].as_str().unwrap_or("").to_string();
        match status.as_u16() {
            401 => return Err(ClientError::Unauthorized { detail }),
            403 => return Err(ClientError::Forbidden { detail }),
            _ => {}
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            title: body["title"].as_str().unwrap_or(status.canonical_reason().unwrap_or("error")).to_string(),
            detail: body["detail"].as_str().unwrap_or("").to_string(),
        })
    }

    /// `GET path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp =
            self.http.get(format!("{}{path}", self.base)).send().await.map_err(|e| self.unreachable(e))?;
        let resp = self.check(resp).await?;
        resp.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET path` as text.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp =
            self.http.get(format!("{}{path}", self.base)).send().await.map_err(|e| self.unreachable(e))?;
        let resp = self.check(resp).await?;
        resp.text().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST path` with a JSON body (and extra headers), answer as JSON.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let resp = self.check(resp).await?;
        resp.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Follows an SSE endpoint, calling `on_event(event, id, data)` for each event until it
    /// returns `false` or the stream ends. Reconnects with `Last-Event-ID` if the stream drops.
    pub async fn follow_sse(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, Option<&str>, &str) -> bool,
    ) -> Result<(), ClientError> {
        let mut last_id: Option<String> = None;
        let mut failures = 0;
        loop {
            let mut req = self.http.get(format!("{}{path}", self.base)).header("Accept", "text/event-stream");
            if let Some(id) = &last_id {
                req = req.header("Last-Event-ID", id.clone());
            }
            let resp = match req.send().await {
                Ok(resp) => self.check(resp).await?,
                Err(e) if failures < 30 && last_id.is_some() => {
                    failures += 1;
                    tracing::debug!(error = %e, "event stream dropped; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(self.unreachable(e)),
            };
            failures = 0;
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            let (mut event, mut id, mut data): (String, Option<String>, Vec<String>) =
                (String::new(), None, Vec::new());
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else { break };
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let line =
                        String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r').to_string();
                    if line.is_empty() {
                        if !data.is_empty() || !event.is_empty() {
                            if let Some(i) = &id {
                                last_id = Some(i.clone());
                            }
                            let name = if event.is_empty() { "message" } else { event.as_str() };
                            if !on_event(name, id.as_deref(), &data.join("\n")) {
                                return Ok(());
                            }
                        }
                        event.clear();
                        data.clear();
                        id = None;
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event = value.to_string(),
                        "data" => data.push(value.to_string()),
                        "id" => id = Some(value.to_string()),
                        _ => {}
                    }
                }
            }
            // The stream ended without the caller stopping: reconnect and resume.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
