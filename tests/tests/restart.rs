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
