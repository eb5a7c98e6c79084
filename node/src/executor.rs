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

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use orgmesh_protocol::{Attempt, TaskId, TaskSpec};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::sandbox::cgroup::Limits;
use crate::sandbox::{Confined, Sandbox};

/// The `PATH` a task gets unless its spec sets one: enough to find `sh` and the usual tools.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest read from the task's pipe.
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
    },
}

/// Starts the attempt in the background; events arrive on `events`; `cancel` stops it.
pub fn spawn(req: ExecRequest, events: mpsc::Sender<ExecEvent>, cancel: CancellationToken) {
    tokio::spawn(async move {
        let (task, attempt) = (req.task, req.attempt);
        if req.kind == ExecutorKind::Noop {
            let _ = events.send(ExecEvent::Started { task, attempt, pgid: None }).await;
            let info = ExitInfo { exit_code: Some(0), error: None, cancelled: false };
            let _ = events.send(ExecEvent::Exited { task, attempt, info, output_len: 0 }).await;
            return;
        }
        let (info, output_len) = match crate::spool::create(&req.spool) {
            Ok(spool) => run(req, spool, &events, cancel).await,
            Err(e) => {
                let error = format!("cannot create the output spool {}: {e}", req.spool.display());
                (ExitInfo { exit_code: None, error: Some(error), cancelled: false }, 0)
            }
        };
        let _ = events.send(ExecEvent::Exited { task, attempt, info, output_len }).await;
    });
}

/// Runs the attempt, its output into `spool`; returns how it ended and how long its spool is.
async fn run(
    req: ExecRequest,
    spool: std::fs::File,
    events: &mpsc::Sender<ExecEvent>,
    cancel: CancellationToken,
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
    let output_len = reader.await.unwrap_or(0);
    let _ = forward.await;
    (finish(info, confined, &dir).await, output_len)
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

/// Tells the event loop how long the spool has grown, until the copy ends. Lengths written while
/// the loop was busy are reported as one.
async fn report_progress(
    mut progress: watch::Receiver<u64>,
    events: mpsc::Sender<ExecEvent>,
    (task, attempt): (TaskId, Attempt),
) {
    while progress.changed().await.is_ok() {
        let len = *progress.borrow_and_update();
        if events.send(ExecEvent::Spooled { task, attempt, len }).await.is_err() {
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
            // What a shell reports, and what bubblewrap exits with when the sandboxed task dies
            // by a signal: sandboxed or not, `kill -TERM $$` reads as exit code 143.
            (None, Some(sig)) => ExitInfo {
                exit_code: Some(128 + sig),
                error: Some(format!("killed by signal {sig} (exit code {})", 128 + sig)),
                cancelled: false,
            },
            (None, None) => {
                ExitInfo { exit_code: None, error: Some("ended without status".into()), cancelled: false }
            }
        },
        Err(e) => ExitInfo { exit_code: None, error: Some(format!("wait failed: {e}")), cancelled: false },
    }
}

/// SIGTERM to the task's processes, then SIGKILL to every process of the attempt after the grace
/// period. Sandboxed, the SIGTERM goes only to what runs as the attempt's uid: bubblewrap (root,
/// the parent of the attempt's PID namespace) would die of it and take the namespace, and so the
/// task, with it at once; slirp4netns keeps the task's network up while it winds down.
async fn stop(child: &mut Child, pgid: Option<i32>, confined: Option<&Confined>, grace: Duration) {
    signal_group(pgid, libc::SIGTERM);
    if let Some(confined) = confined {
        confined.signal_task(libc::SIGTERM);
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

/// Copies the output pipe into the spool until end-of-file (every writer closed), publishing each
/// length the spool reaches; returns the final one. Past the cap, or once the spool cannot be
/// written, the pipe is still drained, so the task is never blocked on it. Blocking: runs on
/// tokio's blocking pool.
fn pump(
    mut from: std::io::PipeReader,
    mut to: crate::spool::SpoolWriter<std::fs::File>,
    progress: &watch::Sender<u64>,
) -> u64 {
    use std::io::Read;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let before = to.len();
                let len = to.push(&buf[..n]);
                if len != before {
                    progress.send_replace(len);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    to.len()
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
            work_root: dir.clone(),
            kill_grace: Duration::from_millis(200),
            sandbox,
            output_cap: 1 << 20,
            spool: dir.join("spool.log"),
        }
    }

    /// Runs `req` to its end; returns what its spool holds (checked against the lengths reported)
    /// and how it ended.
    async fn run_request(req: ExecRequest, cancel_after: Option<Duration>) -> (Vec<u8>, ExitInfo) {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let spool = req.spool.clone();
        spawn(req, tx, cancel.clone());
        if let Some(after) = cancel_after {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                cancel.cancel();
            });
        }
        let mut reported = 0;
        while let Some(ev) = rx.recv().await {
            match ev {
                ExecEvent::Spooled { len, .. } => {
                    assert!(len > reported, "spooled lengths only grow: {len} after {reported}");
                    reported = len;
                }
                ExecEvent::Exited { info, output_len, .. } => {
                    assert!(output_len >= reported);
                    let out = std::fs::read(&spool).unwrap_or_default();
                    assert_eq!(out.len() as u64, output_len, "the spool is as long as reported");
                    return (out, info);
                }
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

    /// This process's resident memory, in bytes.
    fn rss() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    #[tokio::test]
    async fn output_goes_to_the_spool_whoever_listens_and_not_into_memory() {
        // 100 MB, all of it under the cap, and nobody reads the events while it is printed.
        let total = 100_000_000u64;
        let mut req =
            request(ExecutorKind::Process, sh(&format!("head -c {total} /dev/zero; echo end")), None);
        req.output_cap = 200 << 20;
        let spool = req.spool.clone();
        let before = rss();
        let (tx, mut rx) = mpsc::channel(4);
        spawn(req, tx, CancellationToken::new());
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0) < total + 4 {
            assert!(std::time::Instant::now() < deadline, "the pipe stopped being read");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let grew = rss().saturating_sub(before);
        // A bound, not a measurement: the 100 MB must not be anywhere in memory.
        assert!(grew < 32 << 20, "the process grew by {grew} bytes while spooling 100 MB");
        let mut ended = None;
        while let Some(ev) = rx.recv().await {
            if let ExecEvent::Exited { info, output_len, .. } = ev {
                ended = Some((info, output_len));
            }
        }
        let (info, output_len) = ended.unwrap();
        assert_eq!((info.exit_code, output_len), (Some(0), total + 4));
        let file = crate::spool::open(&spool).unwrap();
        assert_eq!(crate::spool::read_chunk(&file, total, 64).unwrap(), b"end\n");
    }

    #[tokio::test]
    async fn an_existing_spool_is_never_written_through() {
        let req = request(ExecutorKind::Process, sh("echo should not run"), None);
        let target = req.work_root.join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, &req.spool).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        spawn(req, tx, CancellationToken::new());
        let Some(ExecEvent::Exited { info, output_len, .. }) = rx.recv().await else { panic!("no exit") };
        assert!(info.error.unwrap().contains("cannot create the output spool"));
        assert_eq!(output_len, 0);
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[tokio::test]
    async fn a_task_killed_by_a_signal_reports_what_a_shell_would() {
        let (_, info) = run_to_end(sh("kill -TERM $$"), None).await;
        assert_eq!(info.exit_code, Some(143), "{info:?}");
        let (_, info) = run_to_end(sh("kill -KILL $$"), None).await;
        assert_eq!(info.exit_code, Some(137), "{info:?}");
    }

    fn sandbox() -> Arc<Sandbox> {
        sandbox_with(crate::sandbox::NetworkMode::None)
    }

    fn sandbox_with(network: crate::sandbox::NetworkMode) -> Arc<Sandbox> {
        let policy = crate::sandbox::Policy {
            node: format!("exec-test-{}-{}", std::process::id(), rand::random::<u32>()),
            network,
            uid_base: 230_000,
            uid_count: 100,
            pids_max: 64,
            work_dir_max_mb: 16,
            read_only: crate::sandbox::DEFAULT_READ_ONLY.iter().map(PathBuf::from).collect(),
            hidden: Vec::new(),
            bwrap: "/usr/bin/bwrap".into(),
            setpriv: "/usr/bin/setpriv".into(),
            slirp4netns: "/usr/bin/slirp4netns".into(),
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

    #[tokio::test]
    async fn a_sandboxed_task_killed_by_a_signal_reports_what_a_shell_would() {
        let sandbox = sandbox();
        let req = request(ExecutorKind::Process, sh("kill -TERM $$"), Some(Arc::clone(&sandbox)));
        let (_, info) = run_request(req, None).await;
        assert_eq!(info.exit_code, Some(143), "{info:?}");
        let req = request(ExecutorKind::Process, sh("echo x; kill -KILL $$"), Some(sandbox));
        let (out, info) = run_request(req, None).await;
        assert_eq!((out.as_slice(), info.exit_code), (&b"x\n"[..], Some(137)), "{info:?}");
    }

    #[tokio::test]
    async fn a_sandboxed_task_gets_its_grace_to_run_its_term_trap() {
        // Only the task's own processes get SIGTERM: bubblewrap, dying of it, would take the
        // task's PID namespace (and the task) with it before the trap could run.
        let script = "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.1; done";
        let mut req = request(ExecutorKind::Process, sh(script), Some(sandbox()));
        req.kill_grace = Duration::from_secs(20);
        let started = std::time::Instant::now();
        let (out, info) = run_request(req, Some(Duration::from_secs(2))).await;
        assert!(info.cancelled, "{info:?}");
        // (The shell may report its `sleep` "Terminated" in between.)
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("ready\n") && text.ends_with("got TERM\n"), "{text:?}, {info:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the trap ended the task, not the grace's SIGKILL"
        );
    }

    /// The slirp4netns processes whose cgroup belongs to the sandbox of node `node`.
    fn slirp4netns_of(node: &str) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
            .filter(|pid| {
                let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
                read("comm").trim() == "slirp4netns" && read("cgroup").contains(node)
            })
            .collect()
    }

    #[tokio::test]
    async fn an_outbound_task_times_out_or_is_cancelled_and_its_slirp4netns_goes_with_it() {
        for cancel in [false, true] {
            let sandbox = sandbox_with(crate::sandbox::NetworkMode::Outbound);
            let node = sandbox.policy().node.clone();
            let mut spec = sh("cat /proc/net/dev; sleep 300");
            spec.timeout_s = if cancel { 300 } else { 2 };
            let req = request(ExecutorKind::Process, spec, Some(Arc::clone(&sandbox)));
            let watch = tokio::task::spawn_blocking(move || {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let seen = slirp4netns_of(&node);
                    if !seen.is_empty() || std::time::Instant::now() > deadline {
                        return (seen, node);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let (out, info) = run_request(req, cancel.then_some(Duration::from_secs(2))).await;
            let (seen, node) = watch.await.unwrap();
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("tap0"), "the task ran with its network up: {text}");
            assert_eq!(seen.len(), 1, "one slirp4netns in the attempt's cgroup while it ran");
            assert_eq!(info.cancelled, cancel, "{info:?}");
            for pid in seen {
                assert!(
                    !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                    "slirp4netns {pid} outlived it"
                );
            }
            assert!(slirp4netns_of(&node).is_empty());
            assert!(sandbox.running_attempts().is_empty(), "an attempt's cgroup outlived it");
        }
    }
}
