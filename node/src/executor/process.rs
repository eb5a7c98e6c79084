//! How an attempt's processes are signalled, how their end is read as an exit status, and how
//! an attempt is torn down afterwards (its sandbox released, its work dir removed). Never decides
//! when to stop an attempt: the run in `executor` does.

use std::time::Duration;

use orgmesh_protocol::{Attempt, TaskId};
use tokio::process::Child;

use super::ExitInfo;
use crate::sandbox::Confined;

/// Tears the attempt's sandbox down (off the async threads) and removes its work dir.
pub(super) async fn finish(info: ExitInfo, confined: Option<Confined>, dir: &std::path::Path) -> ExitInfo {
    if let Some(confined) = confined {
        let _ = tokio::task::spawn_blocking(move || confined.release()).await;
    }
    let _ = tokio::fs::remove_dir_all(dir).await;
    info
}

/// Kills every process the attempt left: through its cgroup when sandboxed, else its group.
pub(super) async fn kill_rest(pgid: Option<i32>, confined: Option<Confined>) -> Option<Confined> {
    signal_group(pgid, libc::SIGKILL);
    let confined = confined?;
    tokio::task::spawn_blocking(move || {
        confined.kill_all();
        confined
    })
    .await
    .ok()
}

pub(super) fn exit_info(status: std::io::Result<std::process::ExitStatus>) -> ExitInfo {
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
pub(super) async fn stop(child: &mut Child, pgid: Option<i32>, confined: Option<&Confined>, grace: Duration) {
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
