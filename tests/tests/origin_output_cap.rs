//! The origin caps what it stores per task (issue "Safe to host another org's work", bounded
//! output): a host whose own cap is larger than the origin's (or that ignores its cap) cannot grow
//! the origin's store past the origin's `executor.output_cap_mb`. The stored log is the first cap
//! bytes and the marker once, and the task still ends as it did at the host.
//!
//! Real `orgmesh` processes on 127.0.0.1: acme (cap 1 MiB) submits, globex (default cap, 64 MiB)
//! runs and streams every byte.

use std::time::Duration;

use orgmesh_tests::origin_and_host;
use serde_json::json;

const ORIGIN_CAP: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_stores_at_most_its_cap_and_the_marker_once() -> anyhow::Result<()> {
    let (acme, _globex) = origin_and_host(&[("ORGMESH_OUTPUT_CAP_MB", "1")], &[]).await?;

    // 3 MiB at globex: under globex's cap, so globex sends it all; acme keeps 1 MiB of it.
    let spec = json!({
        "command": ["sh", "-c", "head -c 3145728 /dev/zero | tr '\\0' x; echo after"],
        "constraints": {"orgs": ["globex"]},
        "timeout_s": 60,
    });
    let id = acme.submit(&spec).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(120)).await?;
    assert_eq!(task["placement"]["org"], "globex", "{task}");
    // The cut is the origin's storage, not the task's result: it ended as it did at globex.
    assert_eq!(task["status"], "succeeded", "{task}");
    let (_, _, log) = acme.get_text(&format!("/v1/tasks/{id}/logs")).await?;
    let marker =
        format!("\n[orgmesh: output cut at {ORIGIN_CAP} bytes, the cap set by executor.output_cap_mb]\n");
    assert_eq!(log.len(), ORIGIN_CAP + marker.len(), "stored log not bounded by the cap");
    assert!(log.ends_with(&marker), "no marker at the end: {:?}", &log[log.len().saturating_sub(200)..]);
    assert!(log[..ORIGIN_CAP].bytes().all(|b| b == b'x'), "the kept part is not the output's start");
    assert_eq!(log.matches("[orgmesh: output cut").count(), 1, "the marker is there once");
    assert!(!log.contains("after"), "bytes past the cap were stored");

    // Small output after that is stored whole.
    let id = acme.submit(&json!({"command": ["echo", "small"], "constraints": {"orgs": ["globex"]}})).await?;
    let task = acme.wait_terminal(&id, Duration::from_secs(60)).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    let (_, _, log) = acme.get_text(&format!("/v1/tasks/{id}/logs")).await?;
    assert_eq!(log, "small\n");
    Ok(())
}
