//! The REST contract against a real process: 422 problem+json for invalid specs, idempotency,
//! the event stream's order and exact resume, cancellation.

use std::time::Duration;

use orgmesh_tests::{Node, NodeOptions, wait_for};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_and_idempotency() -> anyhow::Result<()> {
    let acme = Node::start("acme", &NodeOptions::default()).await?;
    for bad in [
        json!({"command": "not-a-list"}),
        json!({"command": []}),
        json!({"command": ["x"], "timeout_s": 0}),
        json!({"command": ["x"], "comand": 1}),
    ] {
        let (status, ctype, body) = acme.post("/v1/tasks", &bad, &[]).await?;
        assert_eq!(status, 422, "{bad} gave {body}");
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(body["status"], 422);
        assert!(!body["detail"].as_str().unwrap_or_default().is_empty(), "{body}");
    }
    let key = [("Idempotency-Key", "key-1")];
    let (s1, _, b1) = acme.post("/v1/tasks", &json!({"command": ["true"]}), &key).await?;
    let (s2, _, b2) = acme.post("/v1/tasks", &json!({"command": ["true"]}), &key).await?;
    assert_eq!(s1, 202);
    assert!(s2 == 200 || s2 == 202);
    assert_eq!(b1["id"], b2["id"]);
    let (s3, ctype, _) = acme.post("/v1/tasks", &json!({"command": ["false"]}), &key).await?;
    assert_eq!((s3, ctype.as_str()), (409, "application/problem+json"));
    let (_, list) = acme.get("/v1/tasks?limit=10").await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "one task for one key: {list}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_in_order_and_resume_exactly() -> anyhow::Result<()> {
    let acme = Node::start("acme", &NodeOptions::default()).await?;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(acme.submit(&json!({"command": ["sh", "-c", format!("echo {i}")]})).await?);
    }
    for id in &ids {
        acme.wait_terminal(id, Duration::from_secs(20)).await?;
    }
    let all = acme.sse("/v1/events?since=0", None, Duration::from_secs(2), 10_000).await?;
    let seqs: Vec<u64> = all.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "gapless, increasing: {seqs:?}");
    for id in &ids {
        let kinds: Vec<&str> = all
            .iter()
            .filter(|(_, _, data)| {
                serde_json::from_str::<serde_json::Value>(data).is_ok_and(|d| d["id"] == id.as_str())
            })
            .map(|(_, kind, _)| kind.as_str())
            .collect();
        let want = ["task.created", "task.placing", "task.placed", "task.running", "task.succeeded"];
        let positions: Vec<Option<usize>> = want.iter().map(|w| kinds.iter().position(|k| k == w)).collect();
        assert!(positions.iter().all(Option::is_some), "task {id}: {kinds:?}");
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "order for {id}: {kinds:?}");
    }
    // Reconnect in the middle with Last-Event-ID: exactly the rest, nothing skipped or repeated.
    let mid = seqs[seqs.len() / 2];
    let rest = acme.sse("/v1/events", Some(&mid.to_string()), Duration::from_secs(2), 10_000).await?;
    let got: Vec<u64> = rest.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    let want: Vec<u64> = seqs.iter().copied().filter(|s| *s > mid).collect();
    assert_eq!(got, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_remote_host_and_logs_follow() -> anyhow::Result<()> {
    let acme = Node::start("acme", &NodeOptions::default()).await?;
    let globex =
        Node::start("globex", &NodeOptions { bootstrap: vec![acme.multiaddr()], ..Default::default() })
            .await?;
    wait_for("mesh", Duration::from_secs(10), async || (acme.alive_orgs().await == ["globex"]).then_some(()))
        .await?;
    let spec =
        json!({"command": ["sh", "-c", "echo started; sleep 60"], "constraints": {"orgs": ["globex"]}});
    let id = acme.submit(&spec).await?;
    wait_for("running", Duration::from_secs(10), async || {
        (acme.task(&id).await.ok()?["status"] == "running").then_some(())
    })
    .await?;
    // Follow the logs: the first event carries the first line and its end offset as id.
    let events =
        acme.sse(&format!("/v1/tasks/{id}/logs?follow=true"), None, Duration::from_secs(3), 1).await?;
    assert_eq!(events.first().map(|e| (e.0.as_str(), e.2.as_str())), Some(("8", "started\n")), "{events:?}");
    let (status, _, _) = acme.post(&format!("/v1/tasks/{id}/cancel"), &json!({}), &[]).await?;
    assert_eq!(status, 202);
    let task = acme.wait_terminal(&id, Duration::from_secs(15)).await?;
    assert_eq!(task["status"], "cancelled", "{task}");
    let (status, ctype, _) = acme.post(&format!("/v1/tasks/{id}/cancel"), &json!({}), &[]).await?;
    assert_eq!((status, ctype.as_str()), (409, "application/problem+json"));
    drop(globex);
    Ok(())
}
