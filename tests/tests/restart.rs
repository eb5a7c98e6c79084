//! A restarted node finds the mesh again from the peers it remembered in its store, even when its
//! only bootstrap peer is gone for good.

use std::time::Duration;

use orgmesh_tests::{three_orgs, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_redials_remembered_peers() -> anyhow::Result<()> {
    let (mut acme, mut globex, initech, _) = three_orgs(Duration::from_secs(10)).await?;
    // acme was everyone's bootstrap; it leaves for good.
    acme.kill();
    globex.kill();
    globex.up().await?;
    wait_for(
        "restarted globex to find initech without its bootstrap peer",
        Duration::from_secs(15),
        async || globex.alive_orgs().await.contains(&"initech".to_string()).then_some(()),
    )
    .await?;
    let (_, peers) = globex.get("/v1/peers").await?;
    let initech_entry =
        peers["items"].as_array().and_then(|items| items.iter().find(|p| p["org"] == "initech")).cloned();
    let sources = initech_entry.map(|p| p["sources"].clone()).unwrap_or_default();
    assert!(sources.to_string().contains("remembered"), "initech found through: {sources}");
    drop(initech);
    Ok(())
}

/// Regression: a task the origin crashed on while it was `placing` was recovered into memory but
/// never placed again (retries only looked at `pending` tasks), so it hung forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_caught_mid_placement_by_a_crash_is_placed_after_restart() -> anyhow::Result<()> {
    use orgmesh_protocol::task::TaskOrigin;
    use orgmesh_protocol::{Attempt, Org, PeerId, Task, TaskId, TaskSpec, TaskStatus, Timestamp};

    let mut acme = orgmesh_tests::Node::init("acme", &orgmesh_tests::NodeOptions::default())?;
    let id = {
        // Exactly what a crash between the `placing` write and the commit leaves in the store.
        let store = orgmesh_store::Store::open(&acme.dir.join("orgmesh.redb"))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
        let origin = TaskOrigin { peer_id: PeerId::new(acme.peer_id.clone())?, org: Org::new("acme")? };
        let spec = TaskSpec::new(vec!["echo".into(), "recovered".into()]);
        let mut task = Task::new(TaskId::new(now, 7), spec, origin, Timestamp(now));
        task.status = TaskStatus::Placing;
        task.attempt = Attempt(1);
        store.create_task(task.clone(), None, "{}".into()).await?;
        task.id
    };
    acme.up().await?;
    let task = acme.wait_terminal(&id.to_string(), Duration::from_secs(15)).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert!(task["attempt"].as_u64() > Some(1), "a commit may have gone out: a fresh attempt number");
    let (_, _, logs) = acme.get_text(&format!("/v1/tasks/{id}/logs")).await?;
    assert_eq!(logs, "recovered\n");
    Ok(())
}
