//! The API's security and observability, through real `orgmesh` processes (issue 6): bearer
//! tokens and scopes, the loopback rule, rate limits, actors in the event log, the CLI's token
//! handling, HTTPS from PEM files and from tailscaled, and `/metrics` during a three-org run.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use orgmesh_tests::{Node, NodeOptions, binary, three_orgs, wait_for};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `orgmesh token create --json` for `name` with `scopes`: (token, `[[api.tokens]]` entry).
fn create_token(name: &str, scopes: &[&str]) -> anyhow::Result<(String, String)> {
    let mut cmd = Command::new(binary());
    cmd.args(["--json", "token", "create", "--name", name]);
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("token create failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["token"].as_str().context("token")?.to_string(), v["toml"].as_str().context("toml")?.to_string()))
}

/// One request with an optional token: status, headers, JSON body (Null if not JSON).
async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Value)> {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Ok((status, headers, resp.json().await.unwrap_or(Value::Null)))
}

fn ctype(headers: &reqwest::header::HeaderMap) -> &str {
    headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The events of `kind` in the node's log, read with `token`.
async fn events(node: &Node, token: &str, kind: &str) -> anyhow::Result<Vec<Value>> {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/events?since=0&kinds={kind}", node.api))
        .bearer_auth(token)
        .send()
        .await?;
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    // The stream stays open: read what the catch-up sends, then stop.
    let end = tokio::time::Instant::now() + Duration::from_millis(1500);
    use futures::StreamExt;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(end, stream.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            out.push(serde_json::from_str(data)?);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_actors_and_the_cli() -> anyhow::Result<()> {
    let (reader, reader_toml) = create_token("reader", &["read"])?;
    let (ci, ci_toml) = create_token("ci", &["submit", "read"])?;
    let (ops, ops_toml) = create_token("ops", &["admin"])?;
    assert_ne!(reader, ci);
    let opts = NodeOptions {
        api_toml: "open_on_loopback = false".into(),
        extra_toml: format!("{reader_toml}\n{ci_toml}\n{ops_toml}"),
        token: Some(ops.clone()),
        ..NodeOptions::default()
    };
    let mut node = Node::init("acme", &opts)?;
    // `--config` appends a fourth token to the file the node reads at start.
    let out = Command::new(binary())
        .args(["token", "create", "--name", "late", "--scope", "read", "--config"])
        .arg(node.dir.join("orgmesh.toml"))
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let late = String::from_utf8(out.stdout)?.trim().to_string();
    assert!(String::from_utf8_lossy(&out.stderr).contains("[[api.tokens]]"));
    node.up().await?;
    let api = node.api.clone();

    // Open: liveness, readiness, and the dashboard's page and assets (no data in them).
    for path in ["/healthz", "/readyz", "/", "/assets/app.js"] {
        let (status, _, _) = call(reqwest::Method::GET, &format!("{api}{path}"), None, None).await?;
        assert_eq!(status, 200, "{path} is open");
    }
    // No token, or a bad one: 401 problem+json with the Bearer challenge.
    for token in [None, Some("om_not-a-real-token")] {
        for path in ["/v1/node", "/v1/tasks", "/metrics", "/openapi.json", "/nope"] {
            let (status, headers, body) =
                call(reqwest::Method::GET, &format!("{api}{path}"), token, None).await?;
            assert_eq!(status, 401, "{path} with {token:?}");
            assert_eq!(ctype(&headers), "application/problem+json");
            assert!(headers["www-authenticate"].to_str()?.starts_with("Bearer"), "{headers:?}");
            assert_eq!(body["status"], 401);
        }
    }
    // A read token reads but may not submit (403 problem+json naming the scope).
    let (status, _, body) =
        call(reqwest::Method::GET, &format!("{api}/v1/node"), Some(&reader), None).await?;
    assert_eq!((status, body["org"].as_str()), (200, Some("acme")));
    let (status, _, _) = call(reqwest::Method::GET, &format!("{api}/v1/node"), Some(&late), None).await?;
    assert_eq!(status, 200, "the token appended with --config works");
    let spec = json!({"command": ["sleep", "30"]});
    let (status, headers, body) =
        call(reqwest::Method::POST, &format!("{api}/v1/tasks"), Some(&reader), Some(&spec)).await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(ctype(&headers), "application/problem+json");
    assert_eq!(body["required_scope"], "submit");

    // A submit token submits and cancels; the events name it as the actor.
    let (status, _, body) =
        call(reqwest::Method::POST, &format!("{api}/v1/tasks"), Some(&ci), Some(&spec)).await?;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().context("id")?.to_string();
    let (status, _, _) =
        call(reqwest::Method::POST, &format!("{api}/v1/tasks/{id}/cancel"), Some(&ci), Some(&json!({})))
            .await?;
    assert_eq!(status, 202);
    // Drain needs admin.
    let (status, _, _) =
        call(reqwest::Method::POST, &format!("{api}/v1/drain"), Some(&ci), Some(&json!({}))).await?;
    assert_eq!(status, 403);
    let (status, _, body) =
        call(reqwest::Method::POST, &format!("{api}/v1/drain"), Some(&ops), Some(&json!({}))).await?;
    assert_eq!((status, body["draining"].as_bool()), (200, Some(true)));

    let created = events(&node, &reader, "task.created").await?;
    assert_eq!(
        created.iter().find(|e| e["id"] == id.as_str()).map(|e| e["actor"].clone()),
        Some(json!("ci"))
    );
    let cancel = events(&node, &reader, "task.cancel_requested").await?;
    assert_eq!(cancel, vec![json!({"id": id, "actor": "ci"})]);
    let drained = events(&node, &reader, "node.draining").await?;
    assert_eq!(drained.len(), 1);
    assert_eq!(drained[0]["actor"], "ops");

    // The CLI: no token exits 5, a token without the scope 6, the right one (from the env) 0.
    let cli = |token: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(binary());
        cmd.args(["--api", &api]).args(args).env_remove("ORGMESH_TOKEN").env_remove("ORGMESH_TOKEN_FILE");
        if let Some(t) = token {
            cmd.env("ORGMESH_TOKEN", t);
        }
        cmd.output()
    };
    let out = cli(None, &["tasks"])?;
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"), "the message says what to do");
    let out = cli(Some(&reader), &["cancel", &id])?;
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(Some(&reader), &["--json", "tasks"])?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout)?;
    assert!(listed["items"].as_array().is_some_and(|items| items.iter().any(|t| t["id"] == id.as_str())));
    let out = Command::new(binary()).args(["--api", &api, "--token", &ci, "task", &id]).output()?;
    assert_eq!(out.status.code(), Some(0), "--token works like the variable");

    // A token from a file, as a mounted Secret gives it (trailing newline and all): the flag, the
    // variable, and the file beating a stale ORGMESH_TOKEN rather than clashing with it.
    let dir = tempfile::tempdir()?;
    let ci_file = dir.path().join("ci-token");
    std::fs::write(&ci_file, format!("{ci}\n"))?;
    let ci_file = ci_file.display().to_string();
    let out = cli(None, &["--token-file", &ci_file, "task", &id])?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(Some("om_stale"), &["--token-file", &ci_file, "task", &id])?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(binary())
        .args(["--api", &api, "task", &id])
        .env_remove("ORGMESH_TOKEN")
        .env("ORGMESH_TOKEN_FILE", &ci_file)
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // A file with the wrong token is refused by the node, one that is empty by the CLI itself.
    let reader_file = dir.path().join("reader-token");
    std::fs::write(&reader_file, &reader)?;
    let out = cli(None, &["--token-file", &reader_file.display().to_string(), "cancel", &id])?;
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&reader_file, "")?;
    let out = cli(None, &["--token-file", &reader_file.display().to_string(), "tasks"])?;
    assert_eq!(out.status.code(), Some(2), "an empty file is not a tokenless request");
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_is_429_with_retry_after() -> anyhow::Result<()> {
    let (ci, ci_toml) = create_token("ci", &["read"])?;
    let opts = NodeOptions {
        api_toml: "rate_per_s = 1\nburst = 3".into(),
        extra_toml: ci_toml,
        ..NodeOptions::default()
    };
    let node = Node::start("acme", &opts).await?;
    let url = format!("{}/v1/node", node.api);
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let (status, headers, body) = call(reqwest::Method::GET, &url, Some(&ci), None).await?;
        statuses.push(status);
        if status == 429 {
            limited = Some((headers, body));
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "the burst passes: {statuses:?}");
    assert!(statuses[3..].contains(&429), "then the limit holds: {statuses:?}");
    let (headers, body) = limited.context("a 429")?;
    assert_eq!(ctype(&headers), "application/problem+json");
    let retry: u64 = headers["retry-after"].to_str()?.parse()?;
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(body["status"], 429);
    // Tokenless loopback callers have their own bucket (per IP), and health is never limited.
    let (status, _, _) = call(reqwest::Method::GET, &url, None, None).await?;
    assert_eq!(status, 200);
    for _ in 0..10 {
        let (status, _, _) = call(reqwest::Method::GET, &format!("{}/healthz", node.api), None, None).await?;
        assert_eq!(status, 200);
    }
    // After the advertised wait, the token works again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, _, _) = call(reqwest::Method::GET, &url, Some(&ci), None).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_api_without_tokens_refuses_to_start() -> anyhow::Result<()> {
    let opts =
        NodeOptions { api_toml: "addr = \"0.0.0.0:0\"".into(), no_tokens: true, ..NodeOptions::default() };
    let mut node = Node::init("acme", &opts)?;
    node.spawn_up()?;
    let status = wait_for("the node to exit", Duration::from_secs(20), async || node.exited()).await?;
    assert!(!status.success());
    let log = node.log_tail();
    assert!(log.contains("not a loopback address") && log.contains("orgmesh token create"), "{log}");
    Ok(())
}

/// A self-signed certificate for `names`: (cert PEM, key PEM, cert DER).
fn self_signed(names: &[&str]) -> anyhow::Result<(String, String, Vec<u8>)> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names)?;
    Ok((cert.cert.pem(), cert.key_pair.serialize_pem(), cert.cert.der().to_vec()))
}

/// `GET path` over HTTPS to the node's API, trusting only `root_der`, with SNI `server_name`.
async fn https_get(
    api: &str,
    server_name: &str,
    root_der: &[u8],
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let addr = api.strip_prefix("https://").context("an https API")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(root_der.to_vec()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector.connect(ServerName::try_from(server_name.to_string())?, tcp).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n{auth}\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    // A peer closing without close_notify is still a complete HTTP/1.1 answer with `close`.
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1).context("a status line")?.parse()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_from_pem_files() -> anyhow::Result<()> {
    let (cert_pem, key_pem, der) = self_signed(&["localhost", "127.0.0.1"])?;
    let (reader, reader_toml) = create_token("reader", &["read"])?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("cert.pem"), &cert_pem)?;
    std::fs::write(dir.path().join("key.pem"), &key_pem)?;
    let opts = NodeOptions {
        api_toml: format!(
            "tls_cert = {:?}\ntls_key = {:?}",
            dir.path().join("cert.pem"),
            dir.path().join("key.pem")
        ),
        extra_toml: reader_toml,
        https: true,
        ..NodeOptions::default()
    };
    let node = Node::start("acme", &opts).await?;
    let (status, body) = https_get(&node.api, "localhost", &der, "/healthz", None).await?;
    assert_eq!((status, body.contains("\"ok\"")), (200, true), "{body}");
    let (status, body) = https_get(&node.api, "localhost", &der, "/v1/node", Some(&reader)).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"org\":\"acme\""), "{body}");
    // A client that does not trust the certificate cannot talk to it at all.
    let (_, _, other) = self_signed(&["localhost"])?;
    assert!(https_get(&node.api, "localhost", &other, "/healthz", None).await.is_err());
    // Nor can plain HTTP.
    let plain = node.api.replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_certificate_from_tailscaled() -> anyhow::Result<()> {
    use orgmesh_discovery::fixtures::tailscale::{FakeNode, LocalApiFixture};
    let dir = tempfile::tempdir()?;
    let me = FakeNode::numbered("acme", 1).with_tag("tag:orgmesh");
    let fx = LocalApiFixture::start(dir.path().join("tailscaled.sock"), me).await?;
    let domain = format!("acme.{}", fx.tailnet().magic_dns_suffix());
    let (cert_pem, key_pem, der) = self_signed(&[&domain])?;
    fx.set_cert(&domain, format!("{cert_pem}{key_pem}"));
    let opts = NodeOptions {
        api_toml: "tls = \"tailscale\"".into(),
        extra_toml: format!("[discovery.tailscale]\nsocket = {:?}\n", fx.socket()),
        https: true,
        ..NodeOptions::default()
    };
    let node = Node::start("acme", &opts).await?;
    let (status, body) = https_get(&node.api, &domain, &der, "/v1/node", None).await?;
    assert_eq!(status, 200, "open on loopback, over HTTPS: {body}");
    assert!(node.log_tail().contains(&domain), "the node says which certificate it got");
    Ok(())
}

/// The value of the sample `name` with `labels` (all given pairs must match).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find_map(|s| {
        let matches = s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        match (&s.value, matches) {
            (prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v), true) => Some(*v),
            (prometheus_parse::Value::Untyped(v), true) => Some(*v),
            _ => None,
        }
    })
}

/// The total count of the histogram `name` (its `+Inf` bucket).
fn histogram_count(scrape: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
    scrape.samples.iter().find_map(|s| match &s.value {
        prometheus_parse::Value::Histogram(buckets) if s.metric == name => {
            buckets.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count)
        }
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_during_a_three_org_run() -> anyhow::Result<()> {
    let (acme, globex, initech, _) = three_orgs(Duration::from_secs(15)).await?;
    let mut ids = Vec::new();
    for org in ["acme", "globex", "initech", "globex", "initech", "acme"] {
        ids.push(acme.submit(&json!({"command": ["true"], "constraints": {"orgs": [org]}})).await?);
    }
    for id in &ids {
        let t = acme.wait_terminal(id, Duration::from_secs(30)).await?;
        assert_eq!(t["status"], "succeeded", "{t}");
    }
    let (status, ctype, text) = acme.get_text("/metrics").await?;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;

    let placed = histogram_count(&scrape, "orgmesh_placement_latency_seconds");
    assert!(placed.is_some_and(|n| n >= ids.len() as f64), "placements observed: {placed:?}\n{text}");
    let latency_sum = sample(&scrape, "orgmesh_placement_latency_seconds_sum", &[]);
    assert!(latency_sum.is_some_and(|s| s > 0.0), "{latency_sum:?}");
    let rounds = sample(&scrape, "orgmesh_gossip_rounds_total", &[]);
    assert!(rounds.is_some_and(|n| n > 0.0), "gossip rounds: {rounds:?}");
    for direction in ["sent", "received"] {
        let bytes =
            sample(&scrape, "orgmesh_wire_bytes_total", &[("protocol", "gossip"), ("direction", direction)]);
        assert!(bytes.is_some_and(|n| n > 0.0), "gossip bytes {direction}: {bytes:?}");
    }
    assert_eq!(sample(&scrape, "orgmesh_peers", &[("state", "alive")]), Some(2.0));
    let succeeded = sample(&scrape, "orgmesh_tasks", &[("status", "succeeded")]);
    assert!(succeeded.is_some_and(|n| n >= ids.len() as f64), "{succeeded:?}");
    let commits = histogram_count(&scrape, "orgmesh_store_commit_seconds");
    assert!(commits.is_some_and(|n| n > 0.0), "store commits: {commits:?}");
    let conns = scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("libp2p_swarm_connections"))
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .sum::<f64>();
    assert!(conns > 0.0, "libp2p connection metrics:\n{text}");
    drop((globex, initech));
    Ok(())
}
