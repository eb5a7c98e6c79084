//! Test harness for multi-process tests: builds the `orgmesh` binary once, runs real nodes
//! (`orgmesh init` then `orgmesh up`) with their own data directories on 127.0.0.1, and talks to
//! them through the public REST API. Nodes are killed when dropped. Never reaches into a node's
//! internals: only what users and scripts can do.

pub mod benchstats;
pub mod browser;
pub mod chaos;
pub mod fuzzing;
pub mod netns;
pub mod rogue;
pub mod rogue_host;
pub mod rogue_mint;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The `orgmesh` binary, built on first use (`ORGMESH_BIN` overrides).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("ORGMESH_BIN") {
            return PathBuf::from(bin);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-q", "-p", "orgmesh-node", "--bin", "orgmesh"])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building orgmesh failed");
        let target =
            std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
        target.join("debug").join("orgmesh")
    })
    .clone()
}

/// A free TCP port on 127.0.0.1 (free when asked; tests accept the small race).
/// A port that is free now, taken from below the kernel's ephemeral range and never the same
/// twice in this process. A port the kernel picks (`bind(:0)`) comes from the ephemeral range,
/// which every outgoing connection also draws from: between the pick and the node's own bind,
/// one of the mesh's many dials could take it, and that node then failed to start (seen in the
/// membership bench: 2 of 5 runs with 25 nodes had one node missing).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Picks are this far apart: callers such as `orgmesh demo` use the ports after the one they
    // are given (one per node), and must not run into the next pick.
    const STRIDE: u32 = 16;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run side by side: each starts at its own offset.
    let base = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN / STRIDE {
        let port = LOW + (base + STRIDE * NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let Ok(port) = u16::try_from(port) else { continue };
        // Nodes listen on 0.0.0.0 (p2p) and 127.0.0.1 (API): free on both.
        if TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The admin token every harness node accepts (unless `NodeOptions::token` names another).
pub const HARNESS_TOKEN: &str = "om_orgmesh-test-harness-token";

/// Options for one node.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Peers to bootstrap from.
    pub bootstrap: Vec<String>,
    /// `--label K=V`.
    pub labels: Vec<String>,
    /// `--slots`.
    pub slots: Option<u32>,
    /// `--accept-from`.
    pub accept_from: Vec<String>,
    /// `--mesh-key-file`.
    pub mesh_key_file: Option<PathBuf>,
    /// `--trusted-peer`.
    pub trusted_peers: Vec<String>,
    /// Extra environment for `orgmesh up` (`ORGMESH_*` overrides).
    pub env: Vec<(String, String)>,
    /// The p2p port (default: a free one).
    pub p2p_port: Option<u16>,
    /// The IP the p2p listener binds (default: every interface), e.g. `127.0.0.3` so that several
    /// nodes share one port, as on a tailnet.
    pub listen_ip: Option<String>,
    /// TOML appended to `orgmesh.toml` after `init` (new sections only, or `[[api.tokens]]`).
    pub extra_toml: String,
    /// `key = value` lines for the `[api]` section `init` wrote; each replaces the line of the
    /// same key if there is one (e.g. `open_on_loopback = false`).
    pub api_toml: String,
    /// The API serves HTTPS (set `tls_cert`/`tls_key` or `tls` in `api_toml`): the node's `api`
    /// URL is `https://`, and `up` waits for the port instead of `/healthz`.
    pub https: bool,
    /// Bearer token the harness's own requests send.
    pub token: Option<String>,
    /// Configure no token at all, not even the harness's (for tests of the API's refusals).
    pub no_tokens: bool,
    /// Run `orgmesh up` inside this network namespace (see `netns::Hosts`); the API then listens
    /// on `listen_ip` so the test can reach it.
    pub netns: Option<String>,
}

/// One real `orgmesh` process.
#[derive(Debug)]
pub struct Node {
    /// Its org.
    pub org: String,
    /// Its directory (config, key, data, `node.log`).
    pub dir: PathBuf,
    /// API base URL.
    pub api: String,
    /// p2p port.
    pub p2p_port: u16,
    /// Its peer id.
    pub peer_id: String,
    /// The IP its p2p listener is reached at.
    pub ip: String,
    child: Option<Child>,
    netns: Option<String>,
    env: Vec<(String, String)>,
    http: reqwest::Client,
    _tmp: Option<tempfile::TempDir>,
}

/// Fast failure detection so tests about death and return take seconds, not tens of seconds.
const FAST_GOSSIP: [(&str, &str); 3] = [
    ("ORGMESH_GOSSIP_INTERVAL_MS", "200"),
    ("ORGMESH_SUSPECT_AFTER_MS", "1000"),
    ("ORGMESH_DEAD_AFTER_MS", "2000"),
];

impl Node {
    /// Runs `orgmesh init` for `org` in a fresh temporary directory.
    pub fn init(org: &str, opts: &NodeOptions) -> anyhow::Result<Node> {
        let tmp = tempfile::Builder::new().prefix(&format!("orgmesh-{org}-")).tempdir()?;
        let dir = tmp.path().to_path_buf();
        let (p2p_port, api_port) = (opts.p2p_port.unwrap_or_else(free_port), free_port());
        let api_ip = if opts.netns.is_some() {
            opts.listen_ip.clone().unwrap_or_else(|| "127.0.0.1".into())
        } else {
            "127.0.0.1".into()
        };
        let mut cmd = Command::new(binary());
        cmd.args(["init", "--dir"]).arg(&dir).args(["--org", org, "--name", org]);
        cmd.args(["--p2p-port", &p2p_port.to_string(), "--api-addr", &format!("{api_ip}:{api_port}")]);
        for b in &opts.bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        for l in &opts.labels {
            cmd.args(["--label", l]);
        }
        for o in &opts.accept_from {
            cmd.args(["--accept-from", o]);
        }
        if let Some(s) = opts.slots {
            cmd.args(["--slots", &s.to_string()]);
        }
        // A node reachable beyond loopback must know who may connect, or it refuses to start:
        // the harness's nodes on hosts of their own share one mesh key unless the test says how.
        let beyond_loopback = opts.listen_ip.as_deref().is_some_and(|ip| !ip.starts_with("127."));
        let other_trust = !opts.trusted_peers.is_empty() || opts.extra_toml.contains("[discovery.tailscale]");
        let mesh_key = match &opts.mesh_key_file {
            Some(f) => Some(f.clone()),
            None if beyond_loopback && !other_trust => Some(harness_mesh_key()?),
            None => None,
        };
        if let Some(f) = &mesh_key {
            cmd.arg("--mesh-key-file").arg(f);
        }
        for p in &opts.trusted_peers {
            cmd.args(["--trusted-peer", p]);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("orgmesh init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let peer_id = String::from_utf8(out.stdout)?.trim().to_string();
        let config_path = dir.join("orgmesh.toml");
        let mut config = std::fs::read_to_string(&config_path)?;
        config = with_api_settings(&config, &opts.api_toml);
        if let Some(ip) = &opts.listen_ip {
            // `init` writes loopback, or every interface for a keyed mesh.
            for written in ["/ip4/0.0.0.0/tcp/", "/ip4/127.0.0.1/tcp/"] {
                config =
                    config.replace(&format!("listen = [\"{written}"), &format!("listen = [\"/ip4/{ip}/tcp/"));
            }
        }
        config.push('\n');
        config.push_str(&opts.extra_toml);
        // Every node also knows the harness's own admin token, which its requests (and the chaos
        // clients') send: an API off loopback (a host in a namespace) is closed without a token,
        // and a node there with no token at all refuses to start.
        let token = opts.token.clone().or_else(|| {
            if opts.no_tokens {
                return None;
            }
            let sha256 = orgmesh_api::auth::to_hex(&orgmesh_api::auth::hash_token(HARNESS_TOKEN));
            config.push_str(&format!(
                "\n[[api.tokens]]\nname = \"harness\"\nscopes = [\"admin\"]\nsha256 = \"{sha256}\"\n"
            ));
            Some(HARNESS_TOKEN.to_string())
        });
        std::fs::write(&config_path, config)?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &token {
            headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
        }
        let scheme = if opts.https { "https" } else { "http" };
        Ok(Node {
            ip: opts.listen_ip.clone().unwrap_or_else(|| "127.0.0.1".into()),
            org: org.into(),
            dir,
            api: format!("{scheme}://{api_ip}:{api_port}"),
            p2p_port,
            peer_id,
            child: None,
            env: opts.env.clone(),
            netns: opts.netns.clone(),
            http: reqwest::Client::builder().default_headers(headers).build()?,
            _tmp: Some(tmp),
        })
    }

    /// `orgmesh up`, then waits for `/healthz`.
    pub async fn up(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log"))?;
        let mut cmd = match &self.netns {
            // nsenter, not `ip netns exec` (which remounts /sys and hides the cgroups the task
            // sandbox needs); it execs the binary, so the child's pid is the node's.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.arg("up").arg("--config").arg(self.dir.join("orgmesh.toml"));
        cmd.envs(FAST_GOSSIP).env("ORGMESH_LOG", "info,orgmesh_node=debug,libp2p=warn");
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null());
        self.child = Some(cmd.spawn().context("spawning orgmesh up")?);
        let api = self.api.clone();
        let http = self.http.clone();
        if let Some(addr) = api.strip_prefix("https://") {
            // The harness speaks plain HTTP only: wait for the log line and the port instead.
            let log = self.dir.join("node.log");
            wait_for(&format!("{} HTTPS API", self.org), Duration::from_secs(20), async || {
                let started = std::fs::read_to_string(&log).unwrap_or_default().contains("node started");
                let open = tokio::net::TcpStream::connect(addr).await.is_ok();
                (started && open).then_some(())
            })
            .await
            .with_context(|| format!("node log:\n{}", self.log_tail()))?;
            return Ok(());
        }
        wait_for(&format!("{} /healthz", self.org), Duration::from_secs(20), async || {
            http.get(format!("{api}/healthz")).send().await.ok().filter(|r| r.status().is_success())
        })
        .await
        .with_context(|| format!("node log:\n{}", self.log_tail()))?;
        Ok(())
    }

    /// Whether the process has exited, and its status (for a node expected to refuse to start).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// `orgmesh up` without waiting for the API (for a node expected to refuse to start).
    pub fn spawn_up(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log"))?;
        let mut cmd = Command::new(binary());
        cmd.arg("up").arg("--config").arg(self.dir.join("orgmesh.toml"));
        cmd.envs(FAST_GOSSIP).envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null());
        self.child = Some(cmd.spawn().context("spawning orgmesh up")?);
        Ok(())
    }

    /// Starts a node: init + up.
    pub async fn start(org: &str, opts: &NodeOptions) -> anyhow::Result<Node> {
        let mut node = Node::init(org, opts)?;
        node.up().await?;
        Ok(node)
    }

    /// The multiaddr others bootstrap from.
    pub fn multiaddr(&self) -> String {
        format!("/ip4/{}/tcp/{}/p2p/{}", self.ip, self.p2p_port, self.peer_id)
    }

    /// Sends a signal to the process and waits for it to exit.
    pub fn signal(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                #[allow(unsafe_code)]
                // SAFETY: kill(2) on our own child's pid; no memory is touched.
                unsafe {
                    libc::kill(pid, signal);
                }
            }
            let _ = child.wait();
        }
    }

    /// Sends a signal without waiting for anything (SIGSTOP, SIGCONT, SIGTERM).
    pub fn send_signal(&self, signal: i32) {
        if let Some(pid) = self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok()) {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// SIGTERM, then waits up to `timeout` for the process to exit by itself and returns its exit
    /// code (`None`: killed by a signal). Fails, and kills it, when it does not exit in time.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        self.send_signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else { bail!("{} is not running", self.org) };
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.org);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
    }

    /// The process id while the node runs (with `netns`, nsenter has exec'd the node, so
    /// this is the node itself).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether a process was started and not yet killed through this handle.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends a signal without waiting for the process to exit (SIGSTOP, SIGCONT, ...).
    pub fn signal_only(&self, signal: i32) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// SIGSTOP: the node freezes (its API and p2p connections hang) until `resume`.
    pub fn pause(&self) {
        self.signal_only(libc::SIGSTOP);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal_only(libc::SIGCONT);
    }

    /// The last 3000 bytes of the node's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        text.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect()
    }

    /// `GET path`: status and JSON body (Null when not JSON).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self.http.get(format!("{}{path}", self.api)).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// `GET path` as text, with the response's content type.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<(u16, String, String)> {
        let resp = self.http.get(format!("{}{path}", self.api)).send().await?;
        let status = resp.status().as_u16();
        let ctype =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        Ok((status, ctype, resp.text().await?))
    }

    /// `POST path` with a JSON body and headers: status, content type and JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String, Value)> {
        let mut req = self.http.post(format!("{}{path}", self.api)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let ctype =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        Ok((status, ctype, resp.json().await.unwrap_or(Value::Null)))
    }

    /// Submits a spec; expects 202 and returns the task id.
    pub async fn submit(&self, spec: &Value) -> anyhow::Result<String> {
        let (status, _, body) = self.post("/v1/tasks", spec, &[]).await?;
        if status != 202 {
            bail!("submit gave {status}: {body}");
        }
        Ok(body["id"].as_str().context("no id")?.to_string())
    }

    /// One task's JSON.
    pub async fn task(&self, id: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get(&format!("/v1/tasks/{id}")).await?;
        if status != 200 {
            bail!("GET task {id} gave {status}: {body}");
        }
        Ok(body)
    }

    /// Waits until the task is terminal and returns it.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        wait_for(&format!("task {id} to end"), timeout, async || {
            let t = self.task(id).await.ok()?;
            matches!(t["status"].as_str(), Some("succeeded" | "failed" | "cancelled")).then_some(t)
        })
        .await
    }

    /// Orgs of peers this node lists as `alive` with a capacity.
    pub async fn alive_orgs(&self) -> Vec<String> {
        let Ok((_, peers)) = self.get("/v1/peers").await else { return Vec::new() };
        let mut orgs: Vec<String> = peers["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|p| p["state"] == "alive" && p["capacity"]["slots"].as_u64().unwrap_or(0) > 0)
                    .filter_map(|p| p["org"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        orgs.sort();
        orgs
    }

    /// One of the node's counters (`GET /v1/node` `counters`).
    pub async fn counter(&self, name: &str) -> u64 {
        let Ok((_, node)) = self.get("/v1/node").await else { return 0 };
        node["counters"][name].as_u64().unwrap_or(0)
    }

    /// The discovery sources this node names for the peer of `org`.
    pub async fn sources_of(&self, org: &str) -> Vec<String> {
        let Ok((_, peers)) = self.get("/v1/peers").await else { return Vec::new() };
        peers["items"]
            .as_array()
            .and_then(|items| items.iter().find(|p| p["org"] == org))
            .and_then(|p| p["sources"].as_array())
            .map(|s| s.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    /// The state this node gives the peer of `org`, if listed.
    pub async fn peer_state(&self, org: &str) -> Option<String> {
        let (_, peers) = self.get("/v1/peers").await.ok()?;
        peers["items"]
            .as_array()?
            .iter()
            .find(|p| p["org"] == org)
            .and_then(|p| p["state"].as_str())
            .map(String::from)
    }

    /// Reads SSE events from `path` for at most `duration` (or until `max` events), with an
    /// optional `Last-Event-ID`. Returns `(id, event, data)` triples.
    pub async fn sse(
        &self,
        path: &str,
        last_id: Option<&str>,
        duration: Duration,
        max: usize,
    ) -> anyhow::Result<Vec<(String, String, String)>> {
        use futures::StreamExt;
        let mut req = self.http.get(format!("{}{path}", self.api)).header("Accept", "text/event-stream");
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await?;
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut events = Vec::new();
        let end = tokio::time::Instant::now() + duration;
        let (mut id, mut event, mut data) = (String::new(), String::new(), Vec::<String>::new());
        while events.len() < max {
            let chunk = match tokio::time::timeout_at(end, stream.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                _ => break,
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(pos) = buf.find('\n') {
                let line: String = buf.drain(..=pos).collect();
                let line = line.trim_end_matches('\n');
                if line.is_empty() {
                    if !data.is_empty() || !event.is_empty() {
                        events.push((id.clone(), event.clone(), data.join("\n")));
                    }
                    id.clear();
                    event.clear();
                    data.clear();
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                match field {
                    "id" => id = value,
                    "event" => event = value,
                    "data" => data.push(value),
                    _ => {}
                }
            }
        }
        Ok(events)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() || std::env::var_os("ORGMESH_TEST_LOGS").is_some() {
            eprintln!("--- {} log ---\n{}", self.org, self.log_tail());
        }
    }
}

/// `config` with `settings` (`key = value` lines) in its `[api]` section, replacing lines of the
/// same keys.
fn with_api_settings(config: &str, settings: &str) -> String {
    let lines: Vec<&str> = settings.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return config.to_string();
    }
    let keys: Vec<String> =
        lines.iter().filter_map(|l| l.split_once('=')).map(|(k, _)| format!("{} =", k.trim())).collect();
    let mut out = String::new();
    let mut in_api = false;
    for line in config.lines() {
        if line.starts_with('[') {
            in_api = line.trim() == "[api]";
            out.push_str(line);
            out.push('\n');
            if in_api {
                for l in &lines {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            continue;
        }
        if in_api && keys.iter().any(|k| line.starts_with(k.as_str())) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// One mesh key for every harness node of this test process that listens beyond loopback.
pub fn harness_mesh_key() -> anyhow::Result<PathBuf> {
    // Held while the key is made, so that nodes started at once never get two keys.
    static KEY: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut key = KEY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(key) = key.as_ref() {
        return Ok(key.clone());
    }
    let path = std::env::temp_dir().join(format!("orgmesh-harness-{}.key", std::process::id()));
    if !path.exists() {
        // `orgmesh init --mesh-key-file` creates the key where it is missing.
        let dir = tempfile::tempdir()?;
        let out = Command::new(binary())
            .args(["init", "--dir"])
            .arg(dir.path())
            .args(["--org", "harness", "--mesh-key-file"])
            .arg(&path)
            .output()?;
        if !out.status.success() {
            bail!("creating the harness mesh key: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    *key = Some(path.clone());
    Ok(path)
}

/// Starts acme, then globex and initech bootstrapping from acme, and waits until each lists the
/// other two alive with capacity.
pub async fn three_orgs(timeout: Duration) -> anyhow::Result<(Node, Node, Node, Duration)> {
    let acme = Node::start("acme", &NodeOptions::default()).await?;
    let opts = NodeOptions { bootstrap: vec![acme.multiaddr()], ..NodeOptions::default() };
    let globex = Node::start("globex", &opts).await?;
    let initech = Node::start("initech", &opts).await?;
    let started = Instant::now();
    for (node, want) in
        [(&acme, ["globex", "initech"]), (&globex, ["acme", "initech"]), (&initech, ["acme", "globex"])]
    {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        wait_for(&format!("{} to see {want:?} alive", node.org), timeout, async || {
            (node.alive_orgs().await == want).then_some(())
        })
        .await?;
    }
    Ok((acme, globex, initech, started.elapsed()))
}

/// Starts globex (the host, with `host_env`), then acme (the origin, with `origin_env`)
/// bootstrapping from it, and waits until each sees the other alive. Returns `(acme, globex)`.
pub async fn origin_and_host(
    origin_env: &[(&str, &str)],
    host_env: &[(&str, &str)],
) -> anyhow::Result<(Node, Node)> {
    let env = |vars: &[(&str, &str)]| vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let globex = Node::start("globex", &NodeOptions { env: env(host_env), ..NodeOptions::default() }).await?;
    let opts =
        NodeOptions { bootstrap: vec![globex.multiaddr()], env: env(origin_env), ..NodeOptions::default() };
    let acme = Node::start("acme", &opts).await?;
    for (node, other) in [(&acme, "globex"), (&globex, "acme")] {
        wait_for(&format!("{} to see {other}", node.org), Duration::from_secs(15), async || {
            node.alive_orgs().await.contains(&other.to_string()).then_some(())
        })
        .await?;
    }
    Ok((acme, globex))
}
