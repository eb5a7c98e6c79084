//! Three real orgs on 127.0.0.1: they find each other, place thirty tasks across orgs, return
//! logs exactly, and survive a SIGKILL of the origin (issue "A working mesh", points 1, 2, 5).

use std::collections::BTreeMap;
use std::time::Duration;

use orgmesh_tests::{three_orgs, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_orgs_place_thirty_tasks_and_survive_sigkill() -> anyhow::Result<()> {
    // 1. Convergence: each lists the other two alive with capacity within 10 s.
    let (mut acme, globex, initech, converged) = three_orgs(Duration::from_secs(10)).await?;
    println!("converged in {converged:?}");

    // globex knows initech only through gossip (both bootstrapped from acme); running a task there
    // needs a connection it had to dial itself.
    let id = globex
        .submit(&json!({"command": ["echo", "via gossip"], "constraints": {"orgs": ["initech"]}}))
        .await?;
    let task = globex.wait_terminal(&id, Duration::from_secs(20)).await?;
    assert_eq!(
        (task["status"].as_str(), task["placement"]["org"].as_str()),
        (Some("succeeded"), Some("initech"))
    );

    // 2. Thirty tasks at acme: ten pinned to globex, ten to initech, ten free.
    let mut submitted = BTreeMap::new();
    for i in 0..30 {
        let org = [Some("globex"), Some("initech"), None][i % 3];
        // Several lines and stderr, so "exactly what it printed" means something.
        let script = format!("echo task-{i}-$((6*7)); echo line-two >&2; printf 'no newline at end {i}'");
        let mut spec = json!({"command": ["sh", "-c", script]});
        if let Some(org) = org {
            spec["constraints"] = json!({"orgs": [org]});
        }
        let id = acme.submit(&spec).await?;
        submitted.insert(id, (i, org));
    }
    let mut placed_at: BTreeMap<String, usize> = BTreeMap::new();
    for (id, (i, org)) in &submitted {
        let task = acme.wait_terminal(id, Duration::from_secs(60)).await?;
        assert_eq!(task["status"], "succeeded", "task {i}: {task}");
        let porg = task["placement"]["org"].as_str().unwrap_or("none").to_string();
        if let Some(org) = org {
            assert_eq!(porg, *org, "task {i} asked for {org}");
        }
        *placed_at.entry(porg).or_default() += 1;
        let expected = format!("task-{i}-42\nline-two\nno newline at end {i}");
        let (status, ctype, logs) = acme.get_text(&format!("/v1/tasks/{id}/logs")).await?;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/plain"), "{ctype}");
        assert_eq!(logs, expected, "task {i} logs at the origin");
        let (_, _, rest) = acme.get_text(&format!("/v1/tasks/{id}/logs?offset=5")).await?;
        assert_eq!(rest, expected[5..], "?offset=5 of task {i}");
    }
    println!("placed: {placed_at:?}");
    for org in ["globex", "initech"] {
        let n = placed_at.get(org).copied().unwrap_or(0);
        assert!(n >= 10, "{org} ran {n} tasks; the ten pinned to it at least");
    }

    // 5. SIGKILL acme: the others see it dead; restarted, it lists everything and is alive again.
    acme.kill();
    for node in [&globex, &initech] {
        wait_for(&format!("{} to see acme dead", node.org), Duration::from_secs(15), async || {
            (node.peer_state("acme").await.as_deref() == Some("dead")).then_some(())
        })
        .await?;
    }
    acme.up().await?;
    let (_, list) = acme.get("/v1/tasks?limit=100").await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    for (id, (i, _)) in &submitted {
        let task = items.iter().find(|t| t["id"] == id.as_str());
        let task = task.unwrap_or_else(|| panic!("task {i} missing after restart"));
        assert_eq!(task["status"], "succeeded", "task {i} after restart");
        assert!(task["exit_code"] == 0);
        let (_, _, logs) = acme.get_text(&format!("/v1/tasks/{id}/logs")).await?;
        assert!(logs.starts_with(&format!("task-{i}-42\n")), "task {i} logs after restart: {logs:?}");
    }
    for node in [&globex, &initech] {
        wait_for(&format!("{} to see acme alive again", node.org), Duration::from_secs(15), async || {
            (node.peer_state("acme").await.as_deref() == Some("alive")).then_some(())
        })
        .await?;
    }
    wait_for("acme to see both peers again", Duration::from_secs(15), async || {
        (acme.alive_orgs().await == ["globex", "initech"]).then_some(())
    })
    .await?;
    Ok(())
}
