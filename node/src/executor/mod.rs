//! Runs one attempt of a task as a child process: its own working directory, a cleared
//! environment plus the spec's `env`, stdout and stderr captured (interleaved as they arrive),
//! `timeout_s` enforced, cancellation honoured. With a [`Sandbox`] (the default wherever the host
//! can build one) the attempt runs confined in it and every process it started is found through
//! its cgroup; without one, its process group is signalled. Output goes to the attempt's spool
//! file ([`crate::spool`]) as it is read, capped per attempt (the spool then ends with
//! [`crate::output_cap::marker`]); the event loop only learns how long the spool is, and reads it
//! at the pace of its origin. So the pipe is drained at the disk's pace, whoever listens, and a
//! task's output never sits in this process's memory. A signal death is reported as the exit
//! code a shell gives (128 + N), sandboxed or not. Never decides anything about placement or
//! results.
//!
//! The `noop` kind (config `executor.kind = "noop"`, like other orchestrators' mock drivers) runs
//! nothing: every attempt starts and succeeds at once with no output, so benchmarks and
//! simulations measure orchestration rather than process spawning. Never the default.
//!
//! Layout: this file holds the request, the events and the run of one attempt from start to
//! end; `process` the signals, the exit status and the teardown; `output` the copy of the pipe
//! into the spool.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use orgmesh_protocol::receipt::Usage;
use orgmesh_protocol::{Attempt, TaskId, TaskSpec};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::sandbox::cgroup::Limits;
use crate::sandbox::{Confined, Sandbox};

mod output;
mod process;
#[cfg(test)]
mod tests;

use output::{pump, report_progress};
pub use process::kill_orphan;
use process::{exit_info, finish, kill_rest, stop};

/// The `PATH` a task gets unless its spec sets one: enough to find `sh` and the usual tools.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    /// The attempt's spool file, created here (it must not exist yet); the caller reads and
    /// removes it.
    pub spool: PathBuf,
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

/// What the host's receipt states of an attempt beyond its exit: the digest of its spool and
/// what it used (`None` where unknown: CPU and memory come from a sandboxed attempt's cgroup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measured {
    /// SHA-256 of the spool's bytes, cut marker included.
    pub output_sha256: Option<[u8; 32]>,
    /// Wall time, CPU time, peak memory.
    pub usage: Usage,
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
    /// The spool grew: its first `len` bytes are written and may be read. Lengths only grow;
    /// several writes may be reported as one.
    Spooled {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// Bytes in the spool.
        len: u64,
    },
    /// The process ended; no more output follows.
    Exited {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: Attempt,
        /// How.
        info: ExitInfo,
        /// The spool's final length: all of the attempt's output (0 if it has no spool).
        output_len: u64,
        /// Its digest and usage.
        measured: Measured,
    },
}

/// Starts the attempt in the background; events arrive on `events`; `cancel` stops it.
pub fn spawn(req: ExecRequest, events: mpsc::Sender<ExecEvent>, cancel: CancellationToken) {
    tokio::spawn(async move {
        let (task, attempt) = (req.task, req.attempt);
        let started = std::time::Instant::now();
        let mut measured = Measured::default();
        if req.kind == ExecutorKind::Noop {
            let _ = events.send(ExecEvent::Started { task, attempt, pgid: None }).await;
            let info = ExitInfo { exit_code: Some(0), error: None, cancelled: false };
            measured.output_sha256 = Some(empty_digest());
            let _ = events.send(ExecEvent::Exited { task, attempt, info, output_len: 0, measured }).await;
            return;
        }
        let (info, output_len) = match crate::spool::create(&req.spool) {
            Ok(spool) => run(req, spool, &events, cancel, &mut measured).await,
            Err(e) => {
                let error = format!("cannot create the output spool {}: {e}", req.spool.display());
                (ExitInfo { exit_code: None, error: Some(error), cancelled: false }, 0)
            }
        };
        // An attempt that failed before any output has an empty output, which has a digest too.
        if output_len == 0 && measured.output_sha256.is_none() {
            measured.output_sha256 = Some(empty_digest());
        }
        measured.usage.wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let _ = events.send(ExecEvent::Exited { task, attempt, info, output_len, measured }).await;
    });
}

fn empty_digest() -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b"").into()
}

/// Runs the attempt, its output into `spool`; returns how it ended and how long its spool is,
/// and fills in the spool's digest and what the attempt used as far as it can tell.
async fn run(
    req: ExecRequest,
    spool: std::fs::File,
    events: &mpsc::Sender<ExecEvent>,
    cancel: CancellationToken,
    measured: &mut Measured,
) -> (ExitInfo, u64) {
    let failed = |error: String| (ExitInfo { exit_code: None, error: Some(error), cancelled: false }, 0);
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
        Err(e) => {
            let (info, len) = failed(format!("cannot create output pipe: {e}"));
            return (finish(info, confined, &dir).await, len);
        }
    };
    let spawned = cmd.spawn();
    // Our copies of the write end must go, or the reader never sees end-of-file.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let program = &req.spec.command[0];
            let (info, len) = failed(format!("failed to start {program:?}: {e}"));
            return (finish(info, confined, &dir).await, len);
        }
    };
    // Network `outbound`: the task waits inside bubblewrap until its network is up.
    let confined = match confined {
        Some(mut confined) => {
            match tokio::task::spawn_blocking(move || {
                let started = confined.start_network();
                (confined, started)
            })
            .await
            {
                Ok((confined, Ok(()))) => Some(confined),
                Ok((confined, Err(e))) => {
                    stop(&mut child, None, Some(&confined), req.kill_grace).await;
                    let confined = kill_rest(None, Some(confined)).await;
                    let (info, len) = failed(format!("cannot set up the sandbox: {e}"));
                    return (finish(info, confined, &dir).await, len);
                }
                // The sandbox was dropped, and so torn down, with the panicking closure.
                Err(e) => {
                    let _ = child.kill().await;
                    let (info, len) = failed(format!("cannot set up the sandbox: {e}"));
                    return (finish(info, None, &dir).await, len);
                }
            }
        }
        None => None,
    };
    // A sandboxed attempt is found through its cgroup, after a crash too; a process group id
    // would only name bubblewrap.
    let pgid = if confined.is_some() { None } else { child.id().and_then(|id| i32::try_from(id).ok()) };
    let _ = events.send(ExecEvent::Started { task: req.task, attempt: req.attempt, pgid }).await;

    // The pipe is copied into the spool on the blocking pool; the lengths it reaches go out
    // through a watch, so a busy event loop coalesces them instead of slowing the copy down.
    let (progress, progress_rx) = watch::channel(0u64);
    let writer = crate::spool::SpoolWriter::new(spool, req.output_cap);
    let reader = tokio::task::spawn_blocking(move || pump(reader, writer, &progress));
    let forward = tokio::spawn(report_progress(progress_rx, events.clone(), (req.task, req.attempt)));

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
    if let Some(cgroup) = confined.as_ref().and_then(Confined::cgroup) {
        measured.usage.cpu_ms = cgroup.cpu_ms();
        measured.usage.peak_memory_bytes = cgroup.peak_memory();
    }
    // A copy that panicked leaves the length and digest unknown: no receipt, rather than a false one.
    let (output_len, digest) = match reader.await {
        Ok((len, digest)) => (len, Some(digest)),
        Err(_) => (0, None),
    };
    measured.output_sha256 = digest;
    let _ = forward.await;
    (finish(info, confined, &dir).await, output_len)
}
