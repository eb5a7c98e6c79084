//! Unit tests of the executor: real child processes, sandboxed and not, timeouts, cancels,
//! signal deaths, the output cap. Never leaves a process or a cgroup behind.

use super::*;

async fn run_to_end(spec: TaskSpec, cancel_after: Option<Duration>) -> (Vec<u8>, ExitInfo) {
    run_kind(ExecutorKind::Process, spec, cancel_after).await
}

async fn run_kind(kind: ExecutorKind, spec: TaskSpec, cancel_after: Option<Duration>) -> (Vec<u8>, ExitInfo) {
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
    let mut req = request(ExecutorKind::Process, sh(&format!("head -c {total} /dev/zero; echo end")), None);
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
    let (_, info) = run_request(request(ExecutorKind::Process, spec, Some(Arc::clone(&sandbox))), None).await;
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
    assert!(started.elapsed() < Duration::from_secs(15), "the trap ended the task, not the grace's SIGKILL");
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
        // Watches for as long as the attempt runs (a fixed deadline could end before a slow
        // setup on a loaded machine even started slirp4netns), collecting every one seen.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watching = Arc::clone(&done);
        let watch = tokio::task::spawn_blocking(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !watching.load(std::sync::atomic::Ordering::SeqCst) {
                seen.extend(slirp4netns_of(&node));
                std::thread::sleep(Duration::from_millis(20));
            }
            (seen, node)
        });
        let (out, info) = run_request(req, cancel.then_some(Duration::from_secs(2))).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let (seen, node) = watch.await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("tap0"), "the task ran with its network up: {text}");
        // slirp4netns forks a short-lived child to open the tap device inside the namespace, so
        // an early scan may catch two; what matters is that it ran, in the attempt's cgroup, and
        // that none of them outlives the attempt.
        assert!(!seen.is_empty(), "slirp4netns ran in the attempt's cgroup");
        assert!(seen.len() <= 2, "one slirp4netns (and its setup child) per attempt: {seen:?}");
        assert_eq!(info.cancelled, cancel, "{info:?}");
        for pid in seen {
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "slirp4netns {pid} outlived it");
        }
        assert!(slirp4netns_of(&node).is_empty());
        assert!(sandbox.running_attempts().is_empty(), "an attempt's cgroup outlived it");
    }
}
