//! Runs one attempt of a task as a child process: its own working directory, a cleared
//! environment plus the spec's `env`, stdout and stderr captured (interleaved as they arrive),
//! `timeout_s` enforced, cancellation honoured. The whole process group is signalled, so nothing
//! the command spawned outlives it. Never decides anything about placement or results.
//!
//! The `noop` kind (config `executor.kind = "noop"`, like other orchestrators' mock drivers) runs
//! nothing: every attempt starts and succeeds at once with no output, so benchmarks and
//! simulations measure orchestration rather than process spawning. Never the default.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use orgmesh_protocol::{Attempt, TaskId, TaskSpec};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The `PATH` a task gets unless its spec sets one: enough to find `sh` and the usual tools.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest chunk of output sent as one event.
const CHUNK: usize = 64 * 1024;

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
    let Some((program, args)) = req.spec.command.split_first() else {
        return failed("empty command".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", &dir)
        .env("ORGMESH_TASK_ID", req.task.to_string())
        .env("ORGMESH_ATTEMPT", req.attempt.0.to_string())
        .envs(&req.spec.env)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // One pipe for stdout and stderr, like `2>&1`: the output keeps the order it was written in.
    let reader = match std::io::pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w))) {
        Ok((reader, err_writer, out_writer)) => {
            cmd.stdout(out_writer).stderr(err_writer);
            reader
        }
        Err(e) => return failed(format!("cannot create output pipe: {e}")),
    };
    let spawned = cmd.spawn();
    // Our copies of the write end must go, or the reader never sees end-of-file.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return failed(format!("failed to start {program:?}: {e}"));
        }
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let _ = events.send(ExecEvent::Started { task: req.task, attempt: req.attempt, pgid }).await;

    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);
    let reader = tokio::task::spawn_blocking(move || pump(reader, out_tx));
    let forward = {
        let events = events.clone();
        let (task, attempt) = (req.task, req.attempt);
        tokio::spawn(async move {
            while let Some(data) = out_rx.recv().await {
                if events.send(ExecEvent::Output { task, attempt, data }).await.is_err() {
                    break;
                }
            }
        })
    };

    let timeout = Duration::from_secs(req.spec.timeout_s);
    let info = tokio::select! {
        status = child.wait() => exit_info(status),
        _ = tokio::time::sleep(timeout) => {
            stop(&mut child, pgid, req.kill_grace).await;
            ExitInfo { exit_code: None, error: Some(format!("timed out after {} s", req.spec.timeout_s)), cancelled: false }
        }
        _ = cancel.cancelled() => {
            stop(&mut child, pgid, req.kill_grace).await;
            ExitInfo { exit_code: None, error: Some("cancelled".into()), cancelled: true }
        }
    };
    // Whatever the command left running in its group would hold the pipes open forever.
    signal_group(pgid, libc::SIGKILL);
    let _ = reader.await;
    let _ = forward.await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    info
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

/// SIGTERM to the group, then SIGKILL after the grace period.
async fn stop(child: &mut Child, pgid: Option<i32>, grace: Duration) {
    signal_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pgid, libc::SIGKILL);
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
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let req = ExecRequest {
            kind,
            task: TaskId::new(1, 1),
            attempt: Attempt(1),
            spec,
            work_root: dir.path().to_path_buf(),
            kill_grace: Duration::from_millis(200),
        };
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
                ExecEvent::Output { data, .. } => out.extend(data),
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
}
