//! Issue 4's promises about one task at a time, on real processes: an executor killed or paused
//! under a running task, a graceful stop with and without enough grace, and drain reporting when
//! the node is empty. The chaos tests drive many tasks through random faults; these pin down each
//! rule with a precise expectation.

use std::time::Duration;

use anyhow::Context;
use orgmesh_tests::{Node, NodeOptions, wait_for};
use serde_json::{Value, json};

/// Short leases so that "unreachable" and "replaced" take seconds in a test.
fn lease_env() -> Vec<(String, String)> {
    [("ORGMESH_LEASE_RENEW_MS", "250"), ("ORGMESH_LEASE_TTL_MS", "1000")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn mesh(extra_env: &[(&str, &str)]) -> anyhow::Result<(Node, Node, Node)> {
    let mut env = lease_env();
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let acme = Node::start("acme", &NodeOptions { env: env.clone(), ..NodeOptions::default() }).await?;
    let opts = NodeOptions { bootstrap: vec![acme.multiaddr()], env, ..NodeOptions::default() };
    let globex = Node::start("globex", &opts).await?;
    let initech = Node::start("initech", &opts).await?;
    for (node, want) in
        [(&acme, ["globex", "initech"]), (&globex, ["acme", "initech"]), (&initech, ["acme", "globex"])]
    {
        wait_for(&format!("{} to see {want:?}", node.org), Duration::from_secs(20), async || {
            (node.alive_orgs().await == want).then_some(())
        })
        .await?;
    }
    Ok((acme, globex, initech))
}

/// A task from acme that must run at globex or initech, printing its attempt number.
fn remote_spec(script: &str, replace_after_s: u64) -> Value {
    json!({
        "command": ["sh", "-c", script],
        "constraints": {"orgs": ["globex", "initech"]},
        "replace_after_s": replace_after_s,
        "max_attempts": 3,
    })
}

async fn wait_status(node: &Node, id: &str, status: &str, timeout: Duration) -> anyhow::Result<Value> {
    wait_for(&format!("task {id} to be {status}"), timeout, async || {
        node.task(id).await.ok().filter(|t| t["status"] == status)
    })
    .await
}

/// The output of the attempt whose result counts: the log from its `log_start` on.
async fn result_output(node: &Node, task: &Value) -> anyhow::Result<String> {
    let id = task["id"].as_str().context("id")?;
    let start = task["history"].as_array().and_then(|h| h.last()).and_then(|h| h["log_start"].as_u64());
    let (_, _, text) = node.get_text(&format!("/v1/tasks/{id}/logs?offset={}", start.unwrap_or(0))).await?;
    Ok(text)
}

fn host_of<'a>(task: &Value, globex: &'a mut Node, initech: &'a mut Node) -> &'a mut Node {
    if task["placement"]["org"] == "globex" { globex } else { initech }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_executor_task_is_replaced_and_the_old_attempts_late_report_is_rejected() -> anyhow::Result<()>
{
    let (acme, mut globex, mut initech) = mesh(&[]).await?;
    let id = acme
        .submit(&remote_spec("echo \"start $ORGMESH_ATTEMPT\"; sleep 3; echo \"done $ORGMESH_ATTEMPT\"", 2))
        .await?;
    let running = wait_status(&acme, &id, "running", Duration::from_secs(20)).await?;
    let first_host = running["placement"]["org"].as_str().context("placed")?.to_string();
    host_of(&running, &mut globex, &mut initech).kill();

    let task = acme.wait_terminal(&id, Duration::from_secs(40)).await?;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["attempt"], 2, "{task:#}");
    assert_ne!(task["placement"]["org"], first_host.as_str(), "placed on another node: {task:#}");
    let history = task["history"].as_array().context("history")?;
    assert_eq!(history.len(), 2, "{task:#}");
    let lost = history[0]["outcome"].as_str().unwrap_or("");
    assert!(lost.contains("unreachable"), "first attempt given up as unreachable: {lost}");
    assert_eq!(result_output(&acme, &task).await?, "start 2\ndone 2\n");

    // The old node comes back: its attempt died with it, and its report of that is refused.
    let stale_before = acme.counter("stale_reports").await;
    let old = if first_host == "globex" { &mut globex } else { &mut initech };
    old.up().await?;
    wait_for("the old attempt's report to be rejected", Duration::from_secs(20), async || {
        (acme.counter("stale_reports").await > stale_before).then_some(())
    })
    .await?;
    let after = acme.task(&id).await?;
    assert_eq!((after["status"].clone(), after["attempt"].clone()), (json!("succeeded"), json!(2)));
    // Nothing is left for the old node to deliver.
    wait_for("the old node to let go of the attempt", Duration::from_secs(10), async || {
        let (_, _, drain) = old.post("/v1/drain", &json!({}), &[]).await.ok()?;
        (drain["running"] == 0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_pause_keeps_the_attempt_and_long_pause_replaces_it() -> anyhow::Result<()> {
    let (acme, mut globex, mut initech) = mesh(&[]).await?;

    // Paused for 3 s, less than replace_after_s = 8: unreachable meanwhile, then it continues.
    let id = acme.submit(&remote_spec("sleep 2; echo \"ran $ORGMESH_ATTEMPT\"", 8)).await?;
    let running = wait_status(&acme, &id, "running", Duration::from_secs(20)).await?;
    let host = host_of(&running, &mut globex, &mut initech);
    host.send_signal(libc::SIGSTOP);
    let unreachable = wait_status(&acme, &id, "unreachable", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    host.send_signal(libc::SIGCONT);
    unreachable?;
    let task = acme.wait_terminal(&id, Duration::from_secs(30)).await?;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["attempt"], 1, "not run elsewhere: {task:#}");
    assert_eq!(task["history"].as_array().map(Vec::len), Some(1), "{task:#}");
    assert_eq!(result_output(&acme, &task).await?, "ran 1\n");

    // Paused for 8 s, longer than replace_after_s = 2: placed again; the old attempt finished
    // during the pause and its result, delivered after the pause, is rejected.
    let stale_before = acme.counter("stale_reports").await;
    let id = acme.submit(&remote_spec("echo \"ran $ORGMESH_ATTEMPT\"; sleep 2", 2)).await?;
    let running = wait_status(&acme, &id, "running", Duration::from_secs(20)).await?;
    let first_host = running["placement"]["org"].clone();
    let host = host_of(&running, &mut globex, &mut initech);
    host.send_signal(libc::SIGSTOP);
    let replaced = acme.wait_terminal(&id, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    host.send_signal(libc::SIGCONT);
    let task = replaced?;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["attempt"], 2, "{task:#}");
    assert_ne!(task["placement"]["org"], first_host, "{task:#}");
    assert_eq!(result_output(&acme, &task).await?, "ran 2\n");
    wait_for("the paused attempt's late report to be rejected", Duration::from_secs(20), async || {
        (acme.counter("stale_reports").await > stale_before).then_some(())
    })
    .await?;
    let after = acme.task(&id).await?;
    assert_eq!((after["status"].clone(), after["attempt"].clone()), (json!("succeeded"), json!(2)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_running_work_within_the_grace_and_hands_back_the_rest() -> anyhow::Result<()> {
    let (acme, mut globex, mut initech) = mesh(&[("ORGMESH_STOP_GRACE_S", "4")]).await?;

    // Enough grace: the attempt finishes where it runs, then the node exits 0.
    let id = acme.submit(&remote_spec("sleep 1; echo \"ran $ORGMESH_ATTEMPT\"", 60)).await?;
    let running = wait_status(&acme, &id, "running", Duration::from_secs(20)).await?;
    let host = host_of(&running, &mut globex, &mut initech);
    let code = host.terminate(Duration::from_secs(15)).await?;
    assert_eq!(code, Some(0), "graceful stop exits 0");
    let task = acme.wait_terminal(&id, Duration::from_secs(10)).await?;
    assert_eq!((task["status"].clone(), task["attempt"].clone()), (json!("succeeded"), json!(1)), "{task:#}");
    host.up().await?;

    // Not enough grace: handed back at the end of it and placed elsewhere at once (no lease
    // expiry: replace_after_s is a minute), still exiting 0.
    let id = acme.submit(&remote_spec("echo \"ran $ORGMESH_ATTEMPT\"; sleep 30", 60)).await?;
    let running = wait_status(&acme, &id, "running", Duration::from_secs(20)).await?;
    let first_host = running["placement"]["org"].clone();
    let host = host_of(&running, &mut globex, &mut initech);
    let code = host.terminate(Duration::from_secs(20)).await?;
    assert_eq!(code, Some(0));
    let task = wait_for("the task to be running again elsewhere", Duration::from_secs(20), async || {
        acme.task(&id).await.ok().filter(|t| t["status"] == "running" && t["attempt"] == 2)
    })
    .await?;
    assert_ne!(task["placement"]["org"], first_host, "{task:#}");
    let handed = task["history"][0]["outcome"].as_str().unwrap_or("");
    assert!(handed.contains("handed back"), "{handed}");
    acme.post(&format!("/v1/tasks/{id}/cancel"), &json!({}), &[]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_placements_and_reports_when_empty() -> anyhow::Result<()> {
    let (acme, globex, _initech) = mesh(&[]).await?;
    let spec = json!({"command": ["sleep", "2"], "constraints": {"orgs": ["globex"]}});
    let id = acme.submit(&spec).await?;
    wait_status(&acme, &id, "running", Duration::from_secs(20)).await?;
    let (status, _, drain) = globex.post("/v1/drain", &json!({}), &[]).await?;
    assert_eq!(status, 200, "{drain}");
    assert_eq!((drain["draining"].clone(), drain["running"].clone()), (json!(true), json!(1)));
    // A new task for globex waits: globex takes nothing while draining.
    let waiting = acme.submit(&spec).await?;
    wait_for("drain to report empty", Duration::from_secs(20), async || {
        let (_, _, d) = globex.post("/v1/drain", &json!({}), &[]).await.ok()?;
        (d["running"] == 0).then_some(())
    })
    .await?;
    assert_eq!(acme.task(&id).await?["status"], "succeeded");
    let w = acme.task(&waiting).await?;
    assert_eq!(w["status"], "pending", "{w:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_while_the_executor_is_unreachable_takes_effect_when_it_returns() -> anyhow::Result<()>
{
    let (acme, mut globex, mut initech) = mesh(&[]).await?;
    let id = acme.submit(&remote_spec("echo \"ran $ORGMESH_ATTEMPT\"; sleep 30", 60)).await?;
    let running = wait_status(&acme, &id, "running", Duration::from_secs(20)).await?;
    let host = host_of(&running, &mut globex, &mut initech);
    host.send_signal(libc::SIGSTOP);
    let unreachable = wait_status(&acme, &id, "unreachable", Duration::from_secs(5)).await;
    let cancel = acme.post(&format!("/v1/tasks/{id}/cancel"), &json!({}), &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = acme.task(&id).await;
    host.send_signal(libc::SIGCONT);
    unreachable?;
    assert_eq!(cancel?.0, 202);
    assert_eq!(during?["status"], "unreachable", "nothing can end it while the executor is away");
    let task = acme.wait_terminal(&id, Duration::from_secs(20)).await?;
    assert_eq!(task["status"], "cancelled", "{task:#}");
    assert_eq!(task["attempt"], 1, "cancelled where it ran, not placed again: {task:#}");
    Ok(())
}
