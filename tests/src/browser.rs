//! Headless Chromium for browser tests, driven through `chromedriver` with the few W3C WebDriver
//! calls the tests need (navigate, run a script, screenshot), spoken over the harness's own HTTP
//! client rather than a WebDriver crate: nothing new to build, and nothing hidden.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`tests/run-all.sh` installs them).
//! `CHROMIUM_BIN` and `CHROMEDRIVER_BIN` override where they are.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

use crate::{free_port, wait_for};

/// One headless Chromium session. Call [`Browser::quit`] at the end; dropping it kills the
/// driver and the browser it started.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Option<Child>,
    profile: tempfile::TempDir,
}

/// Whether chromedriver is installed where [`Browser::start`] looks.
pub fn available() -> bool {
    Path::new(&driver_bin()).exists()
}

fn driver_bin() -> String {
    std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// `target/test-artifacts/<name>/`, under `CARGO_TARGET_DIR` when set; created.
pub fn artifact_dir(name: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default();
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let dir = target.join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session with a fresh profile
    /// and a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Browser> {
        let port = free_port();
        let profile = tempfile::Builder::new().prefix("orgmesh-chromium-").tempdir()?;
        let mut cmd = Command::new(driver_bin());
        cmd.arg(format!("--port={port}")).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // Its own process group, so that Drop can end the browser with the driver.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .with_context(|| format!("starting {} (apt-get install chromium-driver)", driver_bin()))?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let mut browser = Browser { http, session: String::new(), driver: Some(driver), profile };
        let base = format!("http://127.0.0.1:{port}");
        let http = browser.http.clone();
        wait_for("chromedriver to be ready", Duration::from_secs(20), async || {
            let v: Value = http.get(format!("{base}/status")).send().await.ok()?.json().await.ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await?;
        let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let resp: Value =
            browser.http.post(format!("{base}/session")).json(&caps).send().await?.json().await?;
        let Some(session) = resp["value"]["sessionId"].as_str() else {
            bail!("chromedriver refused a session: {resp}");
        };
        browser.session = format!("{base}/session/{session}");
        Ok(browser)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp: Value = req.send().await?.json().await?;
        if let Some(err) = resp["value"]["error"].as_str() {
            bail!("webdriver {path}: {err}: {}", resp["value"]["message"]);
        }
        Ok(resp["value"].clone())
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await.map(drop)
    }

    /// Runs `script` (a function body: `return ...`) in the page; its return value as JSON.
    pub async fn js(&self, script: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    /// Polls `script` every 100 ms until it returns something other than null/false/empty.
    pub async fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> anyhow::Result<Value> {
        let end = Instant::now() + timeout;
        loop {
            let last = match self.js(script).await {
                Ok(v) if !matches!(&v, Value::Null | Value::Bool(false)) && v != "" => return Ok(v),
                Ok(v) => v,
                Err(e) => Value::String(e.to_string()),
            };
            if Instant::now() > end {
                bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        let png =
            base64::engine::general_purpose::STANDARD.decode(v.as_str().context("screenshot: no data")?)?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Ends the session and stops the driver.
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        if let Some(mut child) = self.driver.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                #[allow(unsafe_code)]
                // SAFETY: kill(2) on the process group of a child we started; no memory is touched.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop_driver();
    }
}
