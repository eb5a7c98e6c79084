//! Runs one attempt of a task as a child process: its own working directory, a cleared
//! environment plus the spec's `env`, stdout and stderr captured (interleaved as they arrive),
//! `timeout_s` enforced, cancellation honoured. With a [`Sandbox`] (the default wherever the host
//! can build one) the attempt runs confined in it and every process it started is found through
//! its cgroup; without one, its process group is signalled. Output is capped per attempt (the
//! log then ends with [`crate::output_cap::marker`]) and flows under a window the host's reports
//! to the origin open: a task printing faster than its origin takes it is slowed down, never
//! buffered without bound. Never decides anything about placement or results.
//!
//! The `noop` kind (config `executor.kind = "noop"`, like other orchestrators' mock drivers) runs
//! nothing: every attempt starts and succeeds at once with no output, so benchmarks and
//! simulations measure orchestration rather than process spawning. Never the default.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use orgmesh_protocol::{Attempt, TaskId, TaskSpec};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::sandbox::cgroup::Limits;
use crate::sandbox::{Confined, Sandbox};

/// The `PATH` a task gets unless its spec sets one: enough to find `sh` and the usual tools.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest chunk of output sent as one event.
const CHUNK: usize = 64 * 1024;
/// Output of one attempt read but not yet acknowledged by its origin, at most: the window
/// [`ExecRequest::output_window`] starts with.
pub const OUTPUT_WINDOW: usize = 8 << 20;

/// What runs an attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// A child process per attempt.
    #[default]
    Process,
    /// Nothing: every attempt succeeds at once with exit code 0 and no output.
    Noop,
}

impl std::str::FromStr for ExecutorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(Self::Process),
            "noop" => Ok(Self::Noop),
            other => Err(format!("unknown executor kind {other:?} (process or noop)")),
        }
    }
}

/// One attempt to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// What runs it.
    pub kind: ExecutorKind,
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: Attempt,
    /// What to run.
    pub spec: TaskSpec,
    /// Parent of the per-attempt working directories.
    pub work_root: PathBuf,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The sandbox to run it in; `None` runs it as the node's own user (isolation `none`).
    pub sandbox: Option<Arc<Sandbox>>,
    /// Most output bytes kept; the rest is read and dropped, and the log ends with the marker.
    pub output_cap: u64,
    /// Bytes of output that may be read ahead of the origin's acknowledgements: the executor
    /// takes permits before it hands a chunk on, the host gives them back as the origin acks.
    pub output_window: Arc<Semaphore>,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code if it exited by itself.
    pub exit_code: Option<i32>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Whether it was cancelled.
    pub cancelled: bool,
}

/// What an attempt reports back to the event loop.
#[derive(Debug)]
pub enum ExecEvent {
    /// The process started.
    Started {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// The process group the attempt runs in.
        pgid: Option<i32>,
    },
    /// Output bytes, in order.
    Output {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The process ended; no more output follows.
    Exited {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// How.
        info: ExitInfo,
    },
}

/// Starts the attempt in the background; events arrive on `events`; `cancel` stops it.
pub fn spawn(req: ExecRequest, events: mpsc::Sender<ExecEvent>, cancel: CancellationToken) {
    tokio::spawn(async move {
        let (task, attempt) = (req.task, req.attempt);
        if req.kind == ExecutorKind::Noop {
            let _ = events.send(ExecEvent::Started { task, attempt, pgid: None }).await;
            let info = ExitInfo { exit_code: Some(0), error: None, cancelled: false };
            let _ = events.send(ExecEvent::Exited { task, attempt, info }).await;
            return;
        }
        let info = run(req, &events, cancel).await;
        let _ = events.send(ExecEvent::Exited { task, attempt, info }).await;
    });
}

async fn run(req: ExecRequest, events: &mpsc::Sender<ExecEvent>, cancel: CancellationToken) -> ExitInfo {
    let failed = |error: String| ExitInfo { exit_code: None, error: Some(error), cancelled: false };
    let dir = req.work_root.join(format!("{}-{}", req.task, req.attempt.0));
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        return failed(format!("cannot create working directory {}: {e}", dir.display()));
    }
    // Specs are validated where they enter, but a host never trusts that: no program, no run.
    if req.spec.command.is_empty() {
        return failed("empty command".into());
    }
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), dir.display().to_string()),
        ("ORGMESH_TASK_ID".into(), req.task.to_string()),
        ("ORGMESH_ATTEMPT".into(), req.attempt.0.to_string()),
    ];
    for (k, v) in &req.spec.env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    let (mut cmd, confined) = match &req.sandbox {
        Some(sandbox) => {
            let limits = Limits {
                memory_bytes: req.spec.resources.memory_mb.saturating_mul(1 << 20),
                pids_max: sandbox.policy().pids_max,
                cpu_millis: req.spec.resources.cpu_millis,
            };
            let (sandbox, name, work, command) = (
                Arc::clone(sandbox),
                format!("{}-{}", req.task, req.attempt.0),
                dir.clone(),
                req.spec.command.clone(),
            );
            let prepared =
                tokio::task::spawn_blocking(move || sandbox.prepare(&name, &limits, &work, &command, &env))
                    .await;
            match prepared {
                Ok(Ok(mut confined)) => (Command::from(confined.take_command()), Some(confined)),
                Ok(Err(e)) => {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                    return failed(format!("cannot set up the sandbox: {e}"));
                }
                Err(e) => return failed(format!("cannot set up the sandbox: {e}")),
            }
        }
        None => {
            let mut cmd = Command::new(&req.spec.command[0]);
            cmd.args(&req.spec.command[1..]).current_dir(&dir).env_clear().envs(env).process_group(0);
            (cmd, None)
        }
    };
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    // One pipe for stdout and stderr, like `2>&1`: the output keeps the order it was written in.
    let reader = match std::io::pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w))) {
        Ok((reader, err_writer, out_writer)) => {
            cmd.stdout(out_writer).stderr(err_writer);
            reader
        }
        Err(e) => return finish(failed(format!("cannot create output pipe: {e}")), confined, &dir).await,
    };
    let spawned = cmd.spawn();
    // Our copies of the write end must go, or the reader never sees end-of-file.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let program = &req.spec.command[0];
            return finish(failed(format!("failed to start {program:?}: {e}")), confined, &dir).await;
        }
    };
    // A sandboxed attempt is found through its cgroup, after a crash too; a process group id
    // would only name bubblewrap.
    let pgid = if confined.is_some() { None } else { child.id().and_then(|id| i32::try_from(id).ok()) };
    let _ = events.send(ExecEvent::Started { task: req.task, attempt: req.attempt, pgid }).await;

    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(16);
    let reader = tokio::task::spawn_blocking(move || pump(reader, out_tx));
    let forward = tokio::spawn(forward_output(
        out_rx,
        events.clone(),
        (req.task, req.attempt),
        req.output_cap,
        Arc::clone(&req.output_window),
        cancel.clone(),
    ));

    let timeout = Duration::from_secs(req.spec.timeout_s);
    let mut info = tokio::select! {
        status = child.wait() => exit_info(status),
        _ = tokio::time::sleep(timeout) => {
            stop(&mut child, pgid, confined.as_ref(), req.kill_grace).await;
            ExitInfo { exit_code: None, error: Some(format!("timed out after {} s", req.spec.timeout_s)), cancelled: false }
        }
        _ = cancel.cancelled() => {
            stop(&mut child, pgid, confined.as_ref(), req.kill_grace).await;
            ExitInfo { exit_code: None, error: Some("cancelled".into()), cancelled: true }
        }
    };
    // Whatever the command left running would hold the pipe open forever: all of it goes.
    let confined = kill_rest(pgid, confined).await;
    if confined.as_ref().is_some_and(Confined::oom_killed) && !info.cancelled {
        info.exit_code = None;
        info.error = Some(format!(
            "out of memory: the task went over its limit of {} MiB (resources.memory_mb) and was killed",
            req.spec.resources.memory_mb
        ));
    }
    let _ = reader.await;
    let _ = forward.await;
    finish(info, confined, &dir).await
}

/// Tears the attempt's sandbox down (off the async threads) and removes its work dir.
async fn finish(info: ExitInfo, confined: Option<Confined>, dir: &std::path::Path) -> ExitInfo {
    if let Some(confined) = confined {
        let _ = tokio::task::spawn_blocking(move || confined.release()).await;
    }
    let _ = tokio::fs::remove_dir_all(dir).await;
    info
}

/// Kills every process the attempt left: through its cgroup when sandboxed, else its group.
async fn kill_rest(pgid: Option<i32>, confined: Option<Confined>) -> Option<Confined> {
    signal_group(pgid, libc::SIGKILL);
    let confined = confined?;
    tokio::task::spawn_blocking(move || {
        confined.kill_all();
        confined
    })
    .await
    .ok()
}

/// Hands output on as `Output` events: at most `cap` bytes (then the marker once, and whatever
/// follows is read and dropped, so the task is not blocked on a full pipe), each chunk only once
/// the window has room for it.
async fn forward_output(
    mut from: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<ExecEvent>,
    (task, attempt): (TaskId, Attempt),
    cap: u64,
    window: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let mut kept = 0u64;
    let mut cut = false;
    while let Some(mut data) = from.recv().await {
        if cut {
            continue;
        }
        let room = usize::try_from(cap - kept).unwrap_or(usize::MAX);
        if data.len() > room {
            data.truncate(room);
            data.extend(crate::output_cap::marker(cap));
            cut = true;
        }
        kept += data.len().min(room) as u64;
        let Ok(permits) = u32::try_from(data.len()) else { break };
        tokio::select! {
            permit = window.acquire_many(permits) => match permit {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            },
            // Nobody will acknowledge more: the rest is dropped, the pipe still drained.
            _ = cancel.cancelled() => { cut = true; continue; }
        }
        if events.send(ExecEvent::Output { task, attempt, data }).await.is_err() {
            break;
        }
    }
}

fn exit_info(status: std::io::Result<std::process::ExitStatus>) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => ExitInfo {
                exit_code: Some(code),
                error: (code != 0).then(|| format!("exited with code {code}")),
                cancelled: false,
            },
            (None, Some(sig)) => {
                ExitInfo { exit_code: None, error: Some(format!("killed by signal {sig}")), cancelled: false }
            }
            (None, None) => {
                ExitInfo { exit_code: None, error: Some("ended without status".into()), cancelled: false }
            }
        },
        Err(e) => ExitInfo { exit_code: None, error: Some(format!("wait failed: {e}")), cancelled: false },
    }
}

/// SIGTERM to every process of the attempt, then SIGKILL after the grace period.
async fn stop(child: &mut Child, pgid: Option<i32>, confined: Option<&Confined>, grace: Duration) {
    signal_group(pgid, libc::SIGTERM);
    if let Some(confined) = confined {
        confined.signal_all(libc::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
        if let Some(confined) = confined {
            confined.signal_all(libc::SIGKILL);
        }
        let _ = child.wait().await;
    }
}

/// Kills what is left of an attempt after this node crashed under it: the process group `pgid`,
/// if its leader is still the attempt's process (its environment names the task and attempt, so a
/// reused pid is never hit). Returns whether something was killed.
pub fn kill_orphan(pgid: i32, task: TaskId, attempt: Attempt) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pgid}/environ")) else { return false };
    let task_var = format!("ORGMESH_TASK_ID={task}");
    let attempt_var = format!("ORGMESH_ATTEMPT={}", attempt.0);
    let mut vars = environ.split(|b| *b == 0);
    let ours = vars.clone().any(|v| v == task_var.as_bytes()) && vars.any(|v| v == attempt_var.as_bytes());
    if ours {
        signal_group(Some(pgid), libc::SIGKILL);
    }
    ours
}

#[allow(unsafe_code)]
fn signal_group(pgid: Option<i32>, signal: i32) {
    if let Some(pgid) = pgid.filter(|p| *p > 1) {
        // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
        // The group was created by `process_group(0)` for this child alone.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Copies the output pipe into chunks until end-of-file (every writer closed). Blocking: runs on
/// tokio's blocking pool.
fn pump(mut from: std::io::PipeReader, to: mpsc::Sender<Vec<u8>>) {
    use std::io::Read;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.blocking_send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_to_end(spec: TaskSpec, cancel_after: Option<Duration>) -> (Vec<u8>, ExitInfo) {
        run_kind(ExecutorKind::Process, spec, cancel_after).await
    }

    async fn run_kind(
        kind: ExecutorKind,
        spec: TaskSpec,
        cancel_after: Option<Duration>,
    ) -> (Vec<u8>, ExitInfo) {
        let req = request(kind, spec, None);
        run_request(req, cancel_after).await
    }

    fn request(kind: ExecutorKind, spec: TaskSpec, sandbox: Option<Arc<Sandbox>>) -> ExecRequest {
        let dir = tempfile::tempdir().unwrap().keep();
        ExecRequest {
            kind,
            task: TaskId::new(1, 1),
            attempt: Attempt(1),
            spec,
            work_root: dir,
            kill_grace: Duration::from_millis(200),
            sandbox,
            output_cap: 1 << 20,
            output_window: Arc::new(Semaphore::new(OUTPUT_WINDOW)),
        }
    }

    async fn run_request(req: ExecRequest, cancel_after: Option<Duration>) -> (Vec<u8>, ExitInfo) {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let window = Arc::clone(&req.output_window);
        spawn(req, tx, cancel.clone());
        if let Some(after) = cancel_after {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                cancel.cancel();
            });
        }
        let mut out = Vec::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                ExecEvent::Output { data, .. } => {
                    // The origin acknowledges at once here.
                    window.add_permits(data.len());
                    out.extend(data)
                }
                ExecEvent::Exited { info, .. } => return (out, info),
                ExecEvent::Started { .. } => {}
            }
        }
        panic!("no exit event");
    }

    fn sh(script: &str) -> TaskSpec {
        TaskSpec::new(vec!["sh".into(), "-c".into(), script.into()])
    }

    #[tokio::test]
    async fn captures_output_env_and_exit_code() {
        let mut spec = sh("echo out; echo err >&2; echo out2; echo \"$GREETING\"; env; exit 3");
        spec.env.insert("GREETING".into(), "hi".into());
        let (out, info) = run_to_end(spec, None).await;
        let text = String::from_utf8(out).unwrap();
        // stdout and stderr share one pipe, so their order is the order they were written in.
        assert!(text.starts_with("out\nerr\nout2\nhi\n"), "{text}");
        // The environment is cleared: only what orgmesh and the spec set (plus what sh adds).
        let allowed =
            ["PATH", "HOME", "ORGMESH_TASK_ID", "ORGMESH_ATTEMPT", "GREETING", "PWD", "SHLVL", "_", "OLDPWD"];
        for line in text.lines().filter(|l| l.contains('=')) {
            let name = line.split('=').next().unwrap();
            assert!(allowed.contains(&name), "leaked variable {name} in {text}");
        }
        assert!(text.contains("ORGMESH_ATTEMPT=1"), "{text}");
        assert_eq!(info.exit_code, Some(3));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let mut spec = sh("sleep 30 & sleep 30");
        spec.timeout_s = 1;
        let started = std::time::Instant::now();
        let (_, info) = run_to_end(spec, None).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(info.exit_code, None);
        assert!(info.error.unwrap().contains("timed out"));
    }

    #[tokio::test]
    async fn cancel_stops_it() {
        let (_, info) = run_to_end(sh("sleep 30"), Some(Duration::from_millis(200))).await;
        assert!(info.cancelled);
    }

    #[tokio::test]
    async fn an_empty_command_fails_instead_of_panicking() {
        let (_, info) = run_to_end(TaskSpec::new(vec![]), None).await;
        assert_eq!(info.error.as_deref(), Some("empty command"));
    }

    #[tokio::test]
    async fn missing_program_fails_clearly() {
        let (_, info) = run_to_end(TaskSpec::new(vec!["/no/such/program".into()]), None).await;
        assert!(info.error.unwrap().contains("failed to start"));
    }

    #[tokio::test]
    async fn noop_runs_nothing_and_succeeds_at_once() {
        // A command that would fail, and write a file, if it ran.
        let marker = tempfile::tempdir().unwrap().path().join("ran");
        let spec = sh(&format!("touch {}; exit 7", marker.display()));
        let (out, info) = run_kind(ExecutorKind::Noop, spec, None).await;
        assert_eq!((out, info), (Vec::new(), ExitInfo { exit_code: Some(0), error: None, cancelled: false }));
        assert!(!marker.exists());
        assert_eq!("noop".parse::<ExecutorKind>(), Ok(ExecutorKind::Noop));
        assert!("docker".parse::<ExecutorKind>().is_err());
    }

    #[tokio::test]
    async fn output_past_the_cap_is_cut_with_the_marker_and_the_task_still_ends() {
        // 5 MB against the 1 MiB cap of `request`.
        let (out, info) = run_to_end(sh("head -c 5000000 /dev/zero; echo done >&2; exit 4"), None).await;
        let marker = crate::output_cap::marker(1 << 20);
        assert_eq!(out.len(), (1 << 20) + marker.len());
        assert!(out.ends_with(&marker));
        assert_eq!(info.exit_code, Some(4), "the task is drained, not blocked, past the cap");
    }

    #[tokio::test]
    async fn output_waits_for_the_window() {
        let mut req = request(ExecutorKind::Process, sh("head -c 3000000 /dev/zero; echo end"), None);
        req.output_window = Arc::new(Semaphore::new(256 * 1024));
        let window = Arc::clone(&req.output_window);
        let (tx, mut rx) = mpsc::channel(16);
        spawn(req, tx, CancellationToken::new());
        let mut got = 0usize;
        // Nobody acknowledges: the executor stops at the window.
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            if let ExecEvent::Output { data, .. } = ev {
                got += data.len();
            }
        }
        assert!(got <= 256 * 1024, "{got} bytes read past the window");
        window.add_permits(1 << 30);
        let mut ended = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                ExecEvent::Output { data, .. } => got += data.len(),
                ExecEvent::Exited { info, .. } => ended = Some(info),
                ExecEvent::Started { .. } => {}
            }
        }
        assert_eq!(got, 1 << 20 | crate::output_cap::marker(1 << 20).len());
        assert_eq!(ended.unwrap().exit_code, Some(0));
    }

    fn sandbox() -> Arc<Sandbox> {
        let policy = crate::sandbox::Policy {
            node: format!("exec-test-{}-{}", std::process::id(), rand::random::<u32>()),
            network: crate::sandbox::NetworkMode::None,
            uid_base: 230_000,
            uid_count: 100,
            pids_max: 64,
            work_dir_max_mb: 16,
            read_only: crate::sandbox::DEFAULT_READ_ONLY.iter().map(PathBuf::from).collect(),
            hidden: Vec::new(),
            bwrap: "/usr/bin/bwrap".into(),
            setpriv: "/usr/bin/setpriv".into(),
        };
        Sandbox::probe(policy).unwrap_or_else(|e| panic!("the sandbox must work on this host: {e}"))
    }

    #[tokio::test]
    async fn a_sandboxed_task_reports_output_and_exit_code_as_before() {
        let mut spec = sh("echo out; echo err >&2; id -u; echo \"$GREETING\"; pwd; exit 3");
        spec.env.insert("GREETING".into(), "hi".into());
        let req = request(ExecutorKind::Process, spec, Some(sandbox()));
        let (out, info) = run_request(req, None).await;
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..2], ["out", "err"], "{text}");
        assert!(lines[2].parse::<u32>().unwrap() >= 230_000, "{text}");
        assert_eq!(lines[3], "hi");
        assert_eq!(info.exit_code, Some(3), "{text}");
    }

    #[tokio::test]
    async fn a_sandboxed_task_over_its_memory_ends_with_an_out_of_memory_error() {
        let mut spec = sh("x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}");
        spec.resources.memory_mb = 32;
        let (_, info) = run_request(request(ExecutorKind::Process, spec, Some(sandbox())), None).await;
        let error = info.error.unwrap_or_default();
        assert!(error.contains("out of memory") && error.contains("32 MiB"), "{error}");
        assert_eq!(info.exit_code, None);
    }

    #[tokio::test]
    async fn a_sandboxed_task_cannot_outlive_its_timeout_with_setsid() {
        let mut spec = sh("setsid sh -c 'sleep 300' </dev/null >/dev/null 2>&1 & setsid sleep 300");
        spec.timeout_s = 1;
        let sandbox = sandbox();
        let started = std::time::Instant::now();
        let (_, info) =
            run_request(request(ExecutorKind::Process, spec, Some(Arc::clone(&sandbox))), None).await;
        assert!(info.error.unwrap().contains("timed out"));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(sandbox.running_attempts().is_empty(), "an attempt's cgroup outlived it");
    }
}
