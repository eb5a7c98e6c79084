//! The origin enforces time (issue "Safe to host another org's work"): an attempt still
//! unfinished at `timeout_s` plus the origin's grace is given up by the origin, whatever the host
//! says, and the host is told to cancel it.
//!
//! Real `orgmesh` processes on 127.0.0.1. globex runs the task but is slow to stop it: the task
//! ignores SIGTERM and globex waits 60 s before SIGKILL, so globex alone would report nothing for
//! a minute while renewing its lease all along. acme (grace 2 s) does not wait for it. The task
//! runs in globex's sandbox, as shipped.

use std::time::Duration;

use orgmesh_tests::{origin_and_host, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_timeout_and_grace_is_given_up_by_the_origin() -> anyhow::Result<()> {
    let (acme, globex) =
        origin_and_host(&[("ORGMESH_OVERDUE_GRACE_S", "2")], &[("ORGMESH_KILL_GRACE_S", "60")]).await?;

    let spec = json!({
        "command": ["sh", "-c", "trap '' TERM; echo started; while :; do sleep 1; done"],
        "constraints": {"orgs": ["globex"]},
        "timeout_s": 2,
        "max_attempts": 1,
    });
    let id = acme.submit(&spec).await?;
    // globex alone would end it only after its 60 s kill grace: ending within 40 s is the origin's.
    let task = acme.wait_terminal(&id, Duration::from_secs(40)).await?;
    assert_eq!(task["status"], "failed", "{task}");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out at the origin"), "error does not say the origin gave up: {task}");
    assert!(error.contains("timeout_s + 2 s"), "error does not name the grace: {task}");
    let (_, node) = acme.get("/v1/node").await?;
    assert_eq!(node["counters"]["attempts_overdue"], 1, "{}", node["counters"]);

    // The host was told to cancel (the attempt ends once globex's own kill grace runs out).
    wait_for("globex to be told to cancel", Duration::from_secs(10), async || {
        globex.log_tail().contains("the origin cancels this attempt").then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; globex log:\n{}", globex.log_tail()))?;
    let (_, again) = acme.get(&format!("/v1/tasks/{id}")).await?;
    assert_eq!(again["status"], "failed", "a late report from the host changed the outcome: {again}");
    Ok(())
}
