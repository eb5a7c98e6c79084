//! Hostile tasks from one org at another org's node, sandbox on as shipped (issue "Safe to host
//! another org's work", point 1): each attack fails, the host keeps serving, nothing of the attack
//! outlives it, and an honest task in the same mesh still runs with the usual tools.
//!
//! Real `orgmesh` processes on 127.0.0.1; acme submits, globex runs. Needs root, bubblewrap and
//! cgroups (tests/run-all.sh installs bubblewrap): without them globex's `/readyz` says the sandbox
//! cannot be built and the first assertion fails.

use std::time::{Duration, Instant};

use orgmesh_tests::{Node, NodeOptions, origin_and_host, wait_for};
use serde_json::{Value, json};

/// Cap of globex's attempts' work dirs here: small, so filling it is quick.
const WORK_DIR_MAX_MB: u64 = 32;

async fn mesh() -> anyhow::Result<(Node, Node)> {
    origin_and_host(&[], &[("ORGMESH_WORK_DIR_MAX_MB", &WORK_DIR_MAX_MB.to_string())]).await
}

/// Submits `script` at acme to run at globex, waits for its end; returns the task and its log.
async fn run_at_globex(acme: &Node, script: &str, extra: Value) -> anyhow::Result<(Value, String)> {
    let mut spec =
        json!({"command": ["sh", "-c", script], "constraints": {"orgs": ["globex"]}, "timeout_s": 60});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    let id = acme.submit(&spec).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(120)).await?;
    assert_eq!(task["placement"]["org"], "globex", "{task}");
    let (_, _, log) = acme.get_text(&format!("/v1/tasks/{id}/logs")).await?;
    Ok((task, log))
}

/// The host still answers and still runs work.
async fn host_serves(acme: &Node, globex: &Node) -> anyhow::Result<()> {
    let (status, _) = globex.get("/healthz").await?;
    assert_eq!(status, 200, "globex stopped serving:\n{}", globex.log_tail());
    let (task, log) = run_at_globex(acme, "echo still-here", json!({})).await?;
    assert_eq!((task["status"].as_str(), log.as_str()), (Some("succeeded"), "still-here\n"), "{task}");
    Ok(())
}

/// Processes on this host whose command line contains `needle` (the test's own `pgrep`).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

fn files_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_named(&path, name));
        } else if entry.file_name() == name {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tasks_fail_and_the_host_keeps_serving() -> anyhow::Result<()> {
    let (acme, globex) = mesh().await?;
    let (_, ready) = globex.get("/readyz").await?;
    let sandbox = ready["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "sandbox")).cloned();
    assert_eq!(sandbox.as_ref().map(|c| c["ok"].clone()), Some(json!(true)), "globex's sandbox: {ready}");

    // The key and the store, by absolute path and by walking up from the work dir. Each read
    // that works prints LEAKED; the files exist and are readable to the node.
    let key = files_named(&globex.dir, "identity.key").pop().expect("globex has an identity key");
    let store = files_named(&globex.dir, "orgmesh.redb").pop().expect("globex has a store");
    let data_dir = store.parent().expect("the store has a directory");
    assert!(std::fs::read(&key).is_ok_and(|k| !k.is_empty()));
    let script = format!(
        "cat {key} >/dev/null 2>&1 && echo LEAKED key-abs; cat {store} >/dev/null 2>&1 && echo LEAKED store-abs; \
         ls {data} 2>/dev/null | grep -q redb && echo LEAKED data-listed; \
         for up in .. ../.. ../../.. ../../../..; do cat $up/identity.key $up/orgmesh.redb >/dev/null 2>&1 && echo LEAKED rel-$up; \
         ls $up 2>/dev/null | grep -q -e redb -e identity && echo LEAKED listed-$up; done; \
         cat {config} >/dev/null 2>&1 && echo LEAKED config; echo searched",
        key = key.display(),
        store = store.display(),
        data = data_dir.display(),
        config = globex.dir.join("orgmesh.toml").display(),
    );
    let (task, log) = run_at_globex(&acme, &script, json!({})).await?;
    assert!(log.contains("searched") && !log.contains("LEAKED"), "{log}\n{task}");

    // The host's API on loopback, every way a task could dial it.
    let api_port = globex.api.rsplit(':').next().unwrap_or_default().to_string();
    let script = format!(
        "for host in 127.0.0.1 localhost {p2p_ip}; do bash -c \"echo > /dev/tcp/$host/{api_port}\" 2>/dev/null && echo LEAKED $host; done; echo dialled",
        p2p_ip = globex.ip,
    );
    let (_, log) = run_at_globex(&acme, &script, json!({})).await?;
    assert!(log.contains("dialled") && !log.contains("LEAKED"), "{log}");

    // kill -9 -1 reaches the task's own processes only.
    let (_, log) = run_at_globex(&acme, "kill -9 -1; echo swung", json!({})).await?;
    assert!(log.contains("swung"), "{log}");
    host_serves(&acme, &globex).await?;
    assert!(globex.is_running() && acme.is_running());

    // setsid and a double fork against timeout_s = 3: terminal in time, nothing left running.
    let started = Instant::now();
    let (task, _) = run_at_globex(
        &acme,
        "setsid sleep 3331 & setsid sh -c 'sleep 3332 &' </dev/null >/dev/null 2>&1; sleep 3333",
        json!({"timeout_s": 3}),
    )
    .await?;
    let took = started.elapsed();
    assert_eq!(task["status"], "failed", "{task}");
    assert!(task["error"].as_str().unwrap_or_default().contains("timed out"), "{task}");
    // timeout, the kill grace (5 s) and reporting: far under the 60 s an escape would take.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    wait_for("the escaped sleeps to be gone", Duration::from_secs(5), async || {
        processes_with("sleep 333").is_empty().then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {:?}", processes_with("sleep 333")))?;

    // 3,000 background processes: the pids limit stops them; none outlives the attempt.
    let (task, _) =
        run_at_globex(&acme, "for i in $(seq 3000); do sleep 4444 & done; wait", json!({})).await?;
    assert_eq!(task["status"], "failed", "the fork bomb should hit the limit: {task}");
    wait_for("the background sleeps to be gone", Duration::from_secs(5), async || {
        processes_with("sleep 4444").is_empty().then_some(())
    })
    .await?;
    host_serves(&acme, &globex).await?;

    // 600 MB against memory_mb = 64.
    let (task, _) = run_at_globex(
        &acme,
        "x=$(head -c 600000000 /dev/zero | tr '\\0' a); echo ${#x}",
        json!({"resources": {"memory_mb": 64, "cpu_millis": 1000}}),
    )
    .await?;
    assert_eq!(task["status"], "failed", "{task}");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(error.contains("out of memory") && error.contains("64 MiB"), "{task}");

    // Printing 300 MB: the log is cut at the cap with the marker, and the host's memory stays
    // bounded (its high-water mark far below what was printed).
    // A whole core, so that the test spends its time on the cap rather than on `tr`.
    let (task, log) = run_at_globex(
        &acme,
        "head -c 300000000 /dev/zero | tr '\\0' x; echo after",
        json!({"resources": {"cpu_millis": 1000}}),
    )
    .await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    let cap = 64usize << 20;
    assert!(log.len() <= cap + 200 && log.len() >= cap, "log of {} bytes", log.len());
    assert!(log.ends_with(&format!(
        "\n[orgmesh: output cut at {cap} bytes, the cap set by executor.output_cap_mb]\n"
    )));
    let globex_peak_mb = peak_rss_mb(&globex);
    assert!(globex_peak_mb < 200, "globex grew to {globex_peak_mb} MB");

    // Filling the work dir past its cap.
    let (task, log) = run_at_globex(
        &acme,
        &format!("head -c {} /dev/zero > big || echo FULL; du -m big", (WORK_DIR_MAX_MB + 20) << 20),
        json!({"resources": {"memory_mb": 256}}),
    )
    .await?;
    assert!(log.contains("FULL") && log.contains("No space left"), "{log}\n{task}");
    let written_mb: u64 =
        log.lines().last().and_then(|l| l.split_whitespace().next()?.parse().ok()).unwrap_or(u64::MAX);
    assert!(written_mb <= WORK_DIR_MAX_MB, "{written_mb} MB written");

    // An honest task still runs with the usual tools, and its output and exit code come back.
    let python = std::path::Path::new("/usr/bin/python3").exists();
    let mut script = String::from(
        "echo hello > f; cat f; wc -c < f; printf 'b\\na\\n' | sort | tr '\\n' ' '; echo; ls /usr/bin/env",
    );
    if python {
        script.push_str("; /usr/bin/python3 -c 'print(6 * 7)'");
    }
    script.push_str("; echo to-stderr >&2; exit 3");
    let (task, log) = run_at_globex(&acme, &script, json!({})).await?;
    let mut expected = String::from("hello\n6\na b \n/usr/bin/env\n");
    if python {
        expected.push_str("42\n");
    }
    expected.push_str("to-stderr\n");
    assert_eq!(log, expected);
    assert_eq!((task["status"].as_str(), task["exit_code"].as_i64()), (Some("failed"), Some(3)), "{task}");
    host_serves(&acme, &globex).await?;
    Ok(())
}

/// The node process's peak resident memory, MB (`VmHWM`).
fn peak_rss_mb(node: &Node) -> u64 {
    let Some(pid) = node.pid() else { return u64::MAX };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(u64::MAX, |kb| kb / 1024)
}

/// A host that cannot build its sandbox says why in `/readyz` (and, with isolation `none` chosen
/// explicitly, says that instead and is ready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_its_sandbox_says_why() -> anyhow::Result<()> {
    let mut node = Node::init("globex", &NodeOptions::default())?;
    let config = node.dir.join("orgmesh.toml");
    let text = std::fs::read_to_string(&config)?;
    assert!(text.contains("bwrap = \"/usr/bin/bwrap\""), "init writes the bubblewrap path:\n{text}");
    std::fs::write(&config, text.replace("bwrap = \"/usr/bin/bwrap\"", "bwrap = \"/nonexistent/bwrap\""))?;
    node.up().await?;
    let (status, ready) = node.get("/readyz").await?;
    assert_eq!(status, 503, "{ready}");
    let check = ready["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "sandbox")).cloned();
    let detail = check.as_ref().and_then(|c| c["detail"].as_str()).unwrap_or_default().to_string();
    assert!(detail.contains("bubblewrap not found at /nonexistent/bwrap"), "{ready}");
    assert!(detail.contains("refused"), "{detail}");
    node.terminate(Duration::from_secs(10)).await?;

    let opts =
        NodeOptions { env: vec![("ORGMESH_ISOLATION".into(), "none".into())], ..NodeOptions::default() };
    let node = Node::start("initech", &opts).await?;
    let (status, ready) = node.get("/readyz").await?;
    let check = ready["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "sandbox")).cloned();
    assert_eq!(status, 200, "{ready}");
    assert!(
        check.is_some_and(|c| c["detail"].as_str().unwrap_or_default().contains("isolation none")),
        "{ready}"
    );
    Ok(())
}

/// Isolation is in each node's signed record, a task may require it, and placement (the origin's
/// and the host's own check) respects it; a host whose sandbox cannot be built runs no other
/// org's work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_is_advertised_and_can_be_required() -> anyhow::Result<()> {
    let acme = Node::start("acme", &NodeOptions::default()).await?;
    let plain = NodeOptions {
        bootstrap: vec![acme.multiaddr()],
        env: vec![("ORGMESH_ISOLATION".into(), "none".into())],
        ..NodeOptions::default()
    };
    let globex = Node::start("globex", &plain).await?;
    let mut initech =
        Node::init("initech", &NodeOptions { bootstrap: vec![acme.multiaddr()], ..NodeOptions::default() })?;
    let config = initech.dir.join("orgmesh.toml");
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(&config, text.replace("bwrap = \"/usr/bin/bwrap\"", "bwrap = \"/nonexistent/bwrap\""))?;
    initech.up().await?;
    for node in [&acme, &globex, &initech] {
        wait_for(&format!("{} to see the others", node.org), Duration::from_secs(15), async || {
            (node.alive_orgs().await.len() == 2).then_some(())
        })
        .await?;
    }
    let (_, me) = acme.get("/v1/node").await?;
    assert_eq!(me["isolation"], "sandbox", "{me}");
    let (_, peers) = acme.get("/v1/peers").await?;
    let isolation_of = |org: &str| {
        peers["items"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["org"] == org))
            .map(|p| p["isolation"].clone())
    };
    assert_eq!(isolation_of("globex"), Some(json!("none")), "{peers}");
    assert_eq!(isolation_of("initech"), Some(json!("none")), "its sandbox cannot be built: {peers}");

    // From globex, requiring the sandbox: only acme gives it, ten times out of ten.
    for i in 0..10 {
        let spec =
            json!({"command": ["sh", "-c", format!("echo {i}")], "constraints": {"isolation": "sandbox"}});
        let id = globex.submit(&spec).await?;
        let task = globex.wait_terminal(&id, Duration::from_secs(30)).await?;
        assert_eq!(
            (task["status"].as_str(), task["placement"]["org"].as_str()),
            (Some("succeeded"), Some("acme")),
            "{task}"
        );
    }
    // Nobody in globex's org set offers it: failed at once, saying why.
    let spec =
        json!({"command": ["true"], "constraints": {"isolation": "sandbox", "orgs": ["globex", "initech"]}});
    let started = Instant::now();
    let id = acme.submit(&spec).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(10)).await?;
    assert_eq!(task["status"], "failed", "{task}");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("requires isolation sandbox") && error.contains("no known node offers it"),
        "{task}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // initech cannot build its sandbox: acme's work pinned to it is refused, with the reason.
    let id = acme.submit(&json!({"command": ["true"], "constraints": {"orgs": ["initech"]}})).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(30)).await?;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(task["error"].as_str().unwrap_or_default().contains("cannot build its sandbox"), "{task}");
    // ... and its own org's work still runs there.
    let id =
        initech.submit(&json!({"command": ["echo", "own"], "constraints": {"orgs": ["initech"]}})).await?;
    let task = initech.wait_terminal(&id, Duration::from_secs(30)).await?;
    assert_eq!(task["status"], "succeeded", "{task}");

    // An unknown isolation is a clear 4xx.
    let (status, _, body) = acme
        .post("/v1/tasks", &json!({"command": ["true"], "constraints": {"isolation": "vm"}}), &[])
        .await?;
    assert!((400..500).contains(&status), "{status} {body}");
    Ok(())
}
