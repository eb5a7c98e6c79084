//! A thin launcher for benchmark nodes. Unlike the test harness it sets no timing overrides: a
//! benchmark node runs the shipped defaults, with only the `noop` executor switched on (and
//! whatever a scenario adds, which it then says in its output).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use orgmesh_tests::free_port;

/// The release `orgmesh` binary: `$ORGMESH_BIN`, else built now with cargo.
pub(crate) fn release_binary() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("ORGMESH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-q", "-p", "orgmesh-node", "--bin", "orgmesh"])
        .current_dir(&root)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building the release orgmesh failed");
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    Ok(target.join("release").join("orgmesh"))
}

/// Raises the soft open-file limit to the hard one; nodes started later inherit it.
pub(crate) fn raise_fd_limit() {
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit on a local, fully initialised struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// One `orgmesh` process and its directory.
#[derive(Debug)]
pub(crate) struct BenchNode {
    pub(crate) org: String,
    pub(crate) api: String,
    pub(crate) p2p_port: u16,
    pub(crate) peer_id: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl BenchNode {
    /// `orgmesh init` in a fresh directory (nothing timed happens here: key generation and config).
    pub(crate) fn init(bin: &Path, org: &str, bootstrap: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix(&format!("orgbench-{org}-")).tempdir()?;
        let (p2p_port, api_port) = (free_port(), free_port());
        let mut cmd = Command::new(bin);
        cmd.args(["init", "--dir"]).arg(dir.path()).args(["--org", org, "--name", org]);
        cmd.args(["--p2p-port", &p2p_port.to_string(), "--api-addr", &format!("127.0.0.1:{api_port}")]);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let out = cmd.output().context("orgmesh init")?;
        if !out.status.success() {
            bail!("orgmesh init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Self {
            org: org.into(),
            api: format!("http://127.0.0.1:{api_port}"),
            p2p_port,
            peer_id: String::from_utf8(out.stdout)?.trim().to_string(),
            dir,
            bin: bin.to_path_buf(),
            env: vec![("ORGMESH_EXECUTOR".into(), "noop".into())],
            child: None,
        })
    }

    /// Adds an `ORGMESH_*` override for the next `spawn` (the scenario says so in its output).
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.into(), value.into()));
    }

    /// The multiaddr others bootstrap from.
    pub(crate) fn multiaddr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.p2p_port, self.peer_id)
    }

    /// The node's directory (config, data, `node.log`).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `orgmesh up`, without waiting for anything.
    pub(crate) fn spawn(&mut self) -> anyhow::Result<()> {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("node.log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("up").arg("--config").arg(self.dir.path().join("orgmesh.toml"));
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null());
        self.child = Some(cmd.spawn().context("spawning orgmesh up")?);
        Ok(())
    }

    /// Polls `path` every 5 ms until it answers 200.
    pub(crate) async fn wait_ok(
        &self,
        http: &reqwest::Client,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(r) = http.get(format!("{}{path}", self.api)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > end {
                bail!("{} {path} not 200 within {timeout:?}; log tail:\n{}", self.org, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `spawn`, then waits for `/healthz`.
    pub(crate) async fn up(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ok(http, "/healthz", Duration::from_secs(30)).await
    }

    /// The process id while running.
    pub(crate) fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// Sends `sig` without waiting.
    pub(crate) fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM and waits for the exit; how long that took.
    pub(crate) async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        self.signal(libc::SIGTERM);
        loop {
            let Some(child) = self.child.as_mut() else { bail!("{} is not running", self.org) };
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                self.kill();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.org);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The last 2000 bytes of `node.log`.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or(&text).to_string()
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("ORGBENCH_LOGS").is_some() {
            eprintln!("--- {} log ---\n{}", self.org, self.log_tail());
        }
    }
}

/// A keep-alive client for talking to nodes (one connection per request in flight, reused).
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(4096).tcp_nodelay(true).build().unwrap_or_default()
}

/// Resident set size of `pid` in bytes (VmRSS).
pub(crate) fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of `pid` in clock ticks.
pub(crate) fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second.
pub(crate) fn ticks_per_s() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// One row of `GET /v1/peers`.
#[derive(Debug, Clone)]
pub(crate) struct PeerRow {
    pub(crate) peer_id: String,
    pub(crate) state: String,
    pub(crate) slots: u64,
}

/// `GET /v1/peers` of the node at `api` (empty on any error).
pub(crate) async fn peers(http: &reqwest::Client, api: &str) -> Vec<PeerRow> {
    let Ok(resp) = http.get(format!("{api}/v1/peers")).send().await else { return Vec::new() };
    let Ok(body) = resp.json::<serde_json::Value>().await else { return Vec::new() };
    body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| PeerRow {
                    peer_id: p["peer_id"].as_str().unwrap_or_default().to_string(),
                    state: p["state"].as_str().unwrap_or_default().to_string(),
                    slots: p["capacity"]["slots"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every node lists every other as `alive` with capacity.
pub(crate) async fn mesh_complete(http: &reqwest::Client, nodes: &[&BenchNode]) -> bool {
    let checks = nodes.iter().map(|n| async move {
        let rows = peers(http, &n.api).await;
        nodes
            .iter()
            .filter(|o| o.peer_id != n.peer_id)
            .all(|o| rows.iter().any(|r| r.peer_id == o.peer_id && r.state == "alive" && r.slots > 0))
    });
    futures::future::join_all(checks).await.into_iter().all(|ok| ok)
}

/// Polls [`mesh_complete`] every `every` until it holds; the time that took.
pub(crate) async fn wait_mesh(
    http: &reqwest::Client,
    nodes: &[&BenchNode],
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if mesh_complete(http, nodes).await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            let mut seen = Vec::new();
            for n in nodes {
                let rows = peers(http, &n.api).await;
                let alive = rows.iter().filter(|r| r.state == "alive" && r.slots > 0).count();
                seen.push(format!("{}:{alive}/{}", n.org, rows.len()));
            }
            bail!(
                "the mesh of {} did not converge within {timeout:?} (alive with capacity/listed: {})",
                nodes.len(),
                seen.join(" ")
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// Milliseconds of a duration, as a float.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
