//! Placement as users see it: impossible constraints fail at once with a reason; a task that does
//! not fit now waits `pending` and runs when a slot frees; acceptance policy is honoured.

use std::time::{Duration, Instant};

use orgmesh_tests::{Node, NodeOptions, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_constraints_fail_at_once_with_a_reason() -> anyhow::Result<()> {
    let acme =
        Node::start("acme", &NodeOptions { labels: vec!["zone=a".into()], ..Default::default() }).await?;
    let cases = [
        (json!({"orgs": ["no-such-org"]}), "no-such-org"),
        (json!({"node_labels": {"gpu": "yes"}}), "gpu=yes"),
    ];
    for (constraints, needle) in cases {
        let started = Instant::now();
        let id = acme.submit(&json!({"command": ["true"], "constraints": constraints})).await?;
        let task = acme.wait_terminal(&id, Duration::from_secs(5)).await?;
        assert_eq!(task["status"], "failed", "{task}");
        let error = task["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "error {error:?} should name {needle}");
        assert!(started.elapsed() < Duration::from_secs(3), "failing took {:?}", started.elapsed());
    }
    // Too big for any node, even idle.
    let id = acme.submit(&json!({"command": ["true"], "resources": {"gpus": 8}})).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(5)).await?;
    assert_eq!(task["status"], "failed");
    assert!(task["error"].as_str().unwrap_or_default().contains("large enough"), "{task}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waits_pending_until_a_slot_frees() -> anyhow::Result<()> {
    let acme = Node::start("acme", &NodeOptions::default()).await?;
    let opts = NodeOptions { bootstrap: vec![acme.multiaddr()], slots: Some(2), ..Default::default() };
    // Kept alive for the whole test: it is where every task runs.
    let _globex = Node::start("globex", &opts).await?;
    wait_for("acme sees globex", Duration::from_secs(10), async || {
        (acme.alive_orgs().await == ["globex"]).then_some(())
    })
    .await?;
    let on_globex = |cmd: &str| json!({"command": ["sh", "-c", cmd], "constraints": {"orgs": ["globex"]}});
    // Fill both slots; the first finishes well before the second.
    let short = acme.submit(&on_globex("sleep 2")).await?;
    let long = acme.submit(&on_globex("sleep 8")).await?;
    for id in [&short, &long] {
        wait_for("slot filler running", Duration::from_secs(10), async || {
            (acme.task(id).await.ok()?["status"] == "running").then_some(())
        })
        .await?;
    }
    let extra = acme.submit(&on_globex("echo ran")).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let waiting = acme.task(&extra).await?;
    assert_eq!(waiting["status"], "pending", "with every slot full: {waiting}");
    let extra_done = acme.wait_terminal(&extra, Duration::from_secs(20)).await?;
    assert_eq!(extra_done["status"], "succeeded", "{extra_done}");
    // It started after the short task ended and before the long one did.
    let short_done = acme.task(&short).await?;
    let long_now = acme.task(&long).await?;
    assert_eq!(short_done["status"], "succeeded");
    let placed_at = extra_done["history"][0]["placed_at"].as_str().unwrap_or_default().to_string();
    let short_end = short_done["history"][0]["ended_at"].as_str().unwrap_or_default().to_string();
    assert!(
        placed_at >= short_end,
        "extra placed at {placed_at}, before the short task ended at {short_end}"
    );
    assert!(
        long_now["status"] == "running"
            || long_now["updated_at"].as_str() >= extra_done["updated_at"].as_str(),
        "the extra task should finish while the long one still runs"
    );
    let (_, _, logs) = acme.get_text(&format!("/v1/tasks/{extra}/logs")).await?;
    assert_eq!(logs, "ran\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_declines_orgs_outside_its_policy() -> anyhow::Result<()> {
    let acme = Node::start("acme", &NodeOptions::default()).await?;
    // globex runs only initech's work; acme's task must land elsewhere or fail with the reason.
    let opts = NodeOptions {
        bootstrap: vec![acme.multiaddr()],
        accept_from: vec!["initech".into()],
        ..Default::default()
    };
    let globex = Node::start("globex", &opts).await?;
    wait_for("acme sees globex", Duration::from_secs(10), async || {
        (acme.alive_orgs().await == ["globex"]).then_some(())
    })
    .await?;
    let id = acme.submit(&json!({"command": ["true"], "constraints": {"orgs": ["globex"]}})).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(5)).await?;
    assert_eq!(task["status"], "failed");
    assert!(task["error"].as_str().unwrap_or_default().contains("accepts tasks from org acme"), "{task}");
    // Unconstrained work still runs (on acme itself).
    let id = acme.submit(&json!({"command": ["true"]})).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(10)).await?;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["placement"]["org"], "acme");
    drop(globex);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_slot_goes_to_the_highest_priority_waiting_task() -> anyhow::Result<()> {
    let acme = Node::start("acme", &NodeOptions { slots: Some(1), ..Default::default() }).await?;
    let filler = acme.submit(&json!({"command": ["sleep", "2"]})).await?;
    wait_for("the filler runs", Duration::from_secs(10), async || {
        (acme.task(&filler).await.ok()?["status"] == "running").then_some(())
    })
    .await?;
    // Queued behind the filler, oldest first; the last one submitted has the highest priority.
    let mut queued = Vec::new();
    for priority in [0, 0, 10, 5] {
        queued.push(acme.submit(&json!({"command": ["true"], "priority": priority})).await?);
    }
    let mut placed = Vec::new();
    for id in &queued {
        let task = acme.wait_terminal(id, Duration::from_secs(30)).await?;
        assert_eq!(task["status"], "succeeded", "{task}");
        placed.push((task["history"][0]["placed_at"].as_str().unwrap_or_default().to_string(), id.clone()));
    }
    placed.sort();
    let order: Vec<&String> = placed.iter().map(|(_, id)| id).collect();
    let want = vec![&queued[2], &queued[3], &queued[0], &queued[1]];
    assert_eq!(order, want, "placed in priority order, then oldest first");
    Ok(())
}
